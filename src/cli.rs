//! The command line: flags and subcommands, nothing else.
//!
//! Owns the shape of `mcpgate [--config FILE] [--listen ADDR] [--log-format
//! text|json]` and `mcpgate check --config FILE`. It never loads files or
//! starts anything.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// A Streamable HTTP gateway for stdio MCP servers: one backend process per client session.
#[derive(Debug, Parser)]
#[command(name = "mcpgate", version, about, long_about = None)]
pub struct Cli {
    /// The TOML config file. Without it, ./mcpgate.toml and then /etc/mcpgate/mcpgate.toml are tried.
    #[arg(long, short, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to listen on, overriding `[gateway] listen` (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

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
}
