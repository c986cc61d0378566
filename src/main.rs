//! The `mcpgate` binary: parse the command line, set up logging, load the
//! config, run. Everything else lives in the library.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use mcpgate::cli::{Cli, Command};
use mcpgate::config::Config;
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
            eprintln!("mcpgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    let path = Config::locate(cli.config.as_deref()).map_err(anyhow::Error::msg)?;
    let mut config = Config::load(&path).map_err(anyhow::Error::msg)?;
    if let Some(listen) = cli.listen {
        config.gateway.listen = listen;
    }
    config.check_exposure().map_err(anyhow::Error::msg)?;
    if let Some(Command::Check) = cli.command {
        println!("{}", config.to_redacted_toml().trim_end());
        eprintln!("mcpgate: {} is valid", path.display());
        return Ok(());
    }
    mcpgate::telemetry::init(cli.log_format);
    tracing::info!(config = %path.display(), "config loaded");
    let gateway = &config.gateway;
    if gateway.api_keys.is_empty() && !gateway.listen.ip().is_loopback() {
        tracing::warn!(listen = %gateway.listen,
            "serving a non-loopback address without api_keys (allow_unauthenticated = true): \
             anyone who can reach it can run the configured commands");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        // Handlers are installed before the gateway listens, so a signal that
        // arrives right after start-up is a graceful stop, not a kill.
        let shutdown = shutdown_signal().context("cannot install signal handlers")?;
        mcpgate::run(config, shutdown).await?;
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
