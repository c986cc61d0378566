//! The `mcpgate` binary: parse the command line, set up logging, load the
//! config, run. Everything else lives in the library.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use mcpgate::cli::{Cli, Command};
use mcpgate::config::Config;

fn main() -> ExitCode {
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
    if let Some(Command::Check) = cli.command {
        print!("{}", config.to_redacted_toml());
        eprintln!("mcpgate: {} is valid", path.display());
        return Ok(());
    }
    mcpgate::telemetry::init(cli.log_format);
    tracing::info!(config = %path.display(), "config loaded");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(mcpgate::run(config, shutdown_signal()))?;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
