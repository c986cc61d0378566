//! The `mcpgate` binary: parse the command line, set up logging, load the
//! config, run. Everything else lives in the library.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use mcpgate::cli::{Cli, Command};
use mcpgate::config::{Config, ConfigError};
use mcpgate::launcher::supervisor;

fn main() -> ExitCode {
    // A backend's supervisor is this binary re-executed in a hidden mode: it
    // must start before the command line is parsed or any runtime exists.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == supervisor::MODE_ARG)
    {
        supervisor::main(std::env::args_os().skip(2));
    }
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcpgate: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line: `what failed: why: why`. The
/// library's errors keep their cause as `source()` and also end their own
/// message with its text (a client is shown that message alone), so a
/// cause the line already ends with is not said twice.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.is_empty() {
            line = text;
        } else if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    // Generated from the command line's definition alone: no config needed.
    match cli.command {
        Some(Command::Completions { shell }) => {
            return mcpgate::cli::write_completions(shell, &mut std::io::stdout().lock())
                .context("cannot write the completion script");
        }
        Some(Command::Man) => {
            return mcpgate::cli::write_man(&mut std::io::stdout().lock())
                .context("cannot write the man page");
        }
        Some(Command::Import { file }) => {
            let text = mcpgate::config::read_config_text(&file)?;
            let toml = mcpgate::config::import_as_toml(&file, &text)?;
            print!("{toml}");
            return Ok(());
        }
        _ => {}
    }
    let path = Config::locate(cli.config.as_deref())?;
    let listen = cli.listen;
    // Standard input is read once: a reload parses the same text again.
    let from_stdin = (path == std::path::Path::new(mcpgate::config::STDIN_PATH))
        .then(|| mcpgate::config::read_config_text(&path))
        .transpose()?;
    let load = {
        let path = path.clone();
        move || -> Result<Config, ConfigError> {
            let mut config = match &from_stdin {
                Some(text) => Config::load_text(&path, text)?,
                None => Config::load(&path)?,
            };
            if let Some(listen) = listen {
                config.gateway.listen = listen;
            }
            config.check_exposure()?;
            Ok(config)
        }
    };
    let config = load()?;
    if let Some(Command::Check) = cli.command {
        let missing = mcpgate::missing_commands(&config);
        for m in missing.iter().filter(|m| !m.is_path) {
            eprintln!(
                "mcpgate: warning: server `{}`: `{}` is not found on the PATH its backend gets ({}); its sessions will fail to start until it is installed",
                m.server, m.command, m.error
            );
        }
        let wrong: Vec<_> = missing.iter().filter(|m| m.is_path).collect();
        if !wrong.is_empty() {
            let lines: Vec<String> = wrong
                .iter()
                .map(|m| {
                    format!(
                        "server `{}`: command `{}`: {}",
                        m.server, m.command, m.error
                    )
                })
                .collect();
            anyhow::bail!("{} is not valid: {}", path.display(), lines.join("; "));
        }
        for note in &config.notes {
            eprintln!("mcpgate: warning: {note}");
        }
        println!("{}", config.to_redacted_toml().trim_end());
        eprintln!("mcpgate: {} is valid", path.display());
        return Ok(());
    }
    mcpgate::telemetry::init(cli.log_format);
    tracing::info!(config = %path.display(), "config loaded");
    for risk in config.risks() {
        tracing::warn!("risky setting: {risk}");
    }
    for note in &config.notes {
        tracing::warn!("{note}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.gateway.worker_threads)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        // Handlers are installed before the gateway listens, so a signal that
        // arrives right after start-up is a graceful stop, not a kill.
        let shutdown = shutdown_signal().context("cannot install signal handlers")?;
        let (reload_tx, requests) = tokio::sync::mpsc::channel(4);
        tokio::spawn(reload_on_sighup(reload_tx).context("cannot install signal handlers")?);
        let reloads = mcpgate::Reloads {
            requests,
            load: std::sync::Arc::new(load),
        };
        mcpgate::run(config, shutdown, Some(reloads)).await?;
        anyhow::Ok(())
    })
}

/// Installs SIGTERM and SIGINT handlers now; the future resolves on either.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}

/// Installs a SIGHUP handler now (before the gateway listens: SIGHUP's
/// default action would kill it); each SIGHUP asks for a reload.
fn reload_on_sighup(
    requests: tokio::sync::mpsc::Sender<&'static str>,
) -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    Ok(async move {
        while hup.recv().await.is_some() {
            // A reload already queued covers this one too.
            let _ = requests.try_send("SIGHUP received");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot listen on here: {source}")]
    struct SaysItsSource {
        source: std::io::Error,
    }

    #[test]
    fn a_cause_is_said_once() {
        let io = || std::io::Error::other("address in use");
        let said = anyhow::Error::new(SaysItsSource { source: io() });
        assert_eq!(one_line(&said), "cannot listen on here: address in use");
        let context = anyhow::Error::new(io()).context("cannot write the man page");
        assert_eq!(
            one_line(&context),
            "cannot write the man page: address in use"
        );
    }
}
