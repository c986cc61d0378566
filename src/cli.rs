//! The command line: flags and subcommands, nothing else.
//!
//! Owns the shape of `mcpgate [--config FILE] [--listen ADDR] [--log-format
//! text|json]`, `mcpgate check --config FILE`, and the shell completions and
//! man page generated from that same definition (`mcpgate completions SHELL`,
//! `mcpgate man`). It never loads files or starts anything.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
pub use clap_complete::Shell;

/// A Streamable HTTP gateway for stdio MCP servers: one backend process per client session.
#[derive(Debug, Parser)]
#[command(name = "mcpgate", version, about, long_about = None)]
pub struct Cli {
    /// The config file: TOML, or a JSON server list (`mcpServers`, VS Code's `servers`, the
    /// agentic-workflows gateway JSON); `-` reads it from standard input. Without it,
    /// ./mcpgate.toml and then /etc/mcpgate/mcpgate.toml are tried.
    #[arg(long, short, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to listen on, overriding `[gateway] listen` (port 0 picks a free port).
    /// A host name is looked up now (`localhost:3000`).
    #[arg(long, value_name = "ADDR", value_parser = crate::config::parse_listen)]
    pub listen: Option<SocketAddr>,

    /// Log format on stderr. The level comes from RUST_LOG (default: info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the config and print it normalised, with secrets redacted.
    Check,
    /// Print the shell completion script for SHELL.
    ///
    /// For example: `mcpgate completions bash > /usr/share/bash-completion/completions/mcpgate`.
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Print the servers of a JSON config (Claude Desktop's, Claude Code's
    /// `.mcp.json`, Cursor's, Windsurf's, VS Code's `mcp.json`, the agentic
    /// workflows gateway's) as mcpgate TOML, with comments on what was left out.
    ///
    /// For example: `mcpgate import ~/.config/Claude/claude_desktop_config.json >> mcpgate.toml`.
    Import {
        /// The JSON file (`-`: standard input).
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Print the man page (roff).
    ///
    /// For example: `mcpgate man > /usr/local/share/man/man1/mcpgate.1`.
    Man,
}

/// Writes the completion script for `shell`, generated from [`Cli`].
pub fn write_completions(shell: Shell, out: &mut impl Write) -> std::io::Result<()> {
    // Generated into memory first: clap_complete panics on a failed write.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "mcpgate", &mut script);
    out.write_all(&script)
}

/// Writes the man page (roff), generated from [`Cli`].
pub fn write_man(out: &mut impl Write) -> std::io::Result<()> {
    clap_mangen::Man::new(Cli::command()).render(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn check_takes_config_after_the_subcommand() {
        let cli = Cli::parse_from(["mcpgate", "check", "--config", "x.toml"]);
        assert!(matches!(cli.command, Some(Command::Check)));
        assert_eq!(cli.config, Some(PathBuf::from("x.toml")));
    }

    #[test]
    fn listen_takes_a_host_name_or_an_address() {
        let cli = Cli::parse_from(["mcpgate", "--listen", "localhost:3000"]);
        assert!(
            cli.listen
                .is_some_and(|a| a.ip().is_loopback() && a.port() == 3000)
        );
        let cli = Cli::parse_from(["mcpgate", "--listen", "127.0.0.1:0"]);
        assert_eq!(cli.listen.map(|a| a.port()), Some(0));
        assert!(Cli::try_parse_from(["mcpgate", "--listen", "localhost"]).is_err());
    }

    #[test]
    fn completions_take_a_shell_and_man_takes_nothing() {
        let cli = Cli::parse_from(["mcpgate", "completions", "zsh"]);
        assert!(matches!(
            cli.command,
            Some(Command::Completions { shell: Shell::Zsh })
        ));
        assert!(Cli::try_parse_from(["mcpgate", "completions", "tcsh"]).is_err());
        let cli = Cli::parse_from(["mcpgate", "man"]);
        assert!(matches!(cli.command, Some(Command::Man)));
    }
}
