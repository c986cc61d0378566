//! # mcpgate
//!
//! A gateway that lets MCP clients speaking Streamable HTTP reach MCP servers
//! that only speak stdio, with one backend process per client session.
//!
//! ## Layout
//! - [`cli`]: command-line flags.
//! - [`config`]: TOML schema, `${VAR}` expansion, validation into a checked [`config::Config`].
//! - [`http`]: the only module that knows HTTP: router, Streamable HTTP rules, SSE, shutdown.
//! - [`jsonrpc`]: peeks at raw messages (kind, method, id) and splices ids without re-serialising.
//! - [`relay`]: what a client message does (create a session, forward, answer, end).
//! - [`session`]: client sessions, their ids, idle tracking.
//! - [`outbox`]: which client stream carries a backend's own messages; event ids and resumption.
//! - [`shared`]: shared mode: routing one shared backend's messages among its sessions.
//! - [`launcher`]: the only module that starts processes: the `(server, session)` pool,
//!   process trees, and the JSON-RPC connection over a child's pipes.
//! - [`unified`]: the `/mcp` endpoint: merged lists, prefixed names, routing by name and URI.
//!   The only module (with `unified::lists`) that rewrites message contents.
//! - [`telemetry`]: logging setup.
//!
//! ## Invariants
//! - Only `launcher` spawns or signals processes; every backend runs in its own
//!   process group, and every way a connection ends stops the whole group.
//! - Only `http` knows HTTP statuses and headers.
//! - Forwarded messages are never re-serialised: only ids are spliced into the bytes.

#![deny(unsafe_code)]
#![warn(rust_2018_idioms, missing_debug_implementations)]
#![allow(missing_debug_implementations)]

pub mod bridge;
pub mod cli;
pub mod config;
pub mod http;
pub mod jsonrpc;
pub mod launcher;
pub mod outbox;
pub mod relay;
pub mod session;
pub mod shared;
pub mod telemetry;
pub mod unified;

use std::future::Future;
use std::sync::Arc;

use crate::config::Config;
use crate::relay::Relay;

/// Why the gateway could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}

/// Runs the gateway until `shutdown` resolves, then shuts down in order:
/// stop accepting, end streams, finish in-flight requests (bounded by
/// `shutdown_timeout`), stop every backend process tree.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let addr = config.gateway.listen;
    let tls = config
        .gateway
        .tls
        .as_ref()
        .map(http::tls::acceptor)
        .transpose()
        .map_err(RunError::Tls)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Bind { addr, source })?;
    let local = listener.local_addr().map_err(RunError::Serve)?;
    announce(&config, local, tls.is_some());

    let relay = Arc::new(Relay::new(Arc::new(config)));
    let sweeper = tokio::spawn(Arc::clone(&relay).sweep_idle_forever());
    let served = http::serve(listener, tls, Arc::clone(&relay), shutdown).await;
    sweeper.abort();
    tracing::info!("stopping every backend");
    relay.shutdown().await;
    tracing::info!("stopped");
    served.map_err(RunError::Serve)
}

/// Prints where the gateway listens and what it serves, one line per server.
fn announce(config: &Config, local: std::net::SocketAddr, tls: bool) {
    use std::io::Write;
    let scheme = if tls { "https" } else { "http" };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "mcpgate listening on {scheme}://{local}");
    let _ = writeln!(
        out,
        "  {scheme}://{local}/mcp  ->  every server below (unified)"
    );
    for server in &config.servers {
        let _ = writeln!(
            out,
            "  {scheme}://{local}/mcp/{}  ->  {} {}",
            server.id,
            server.command,
            server.args.join(" ")
        );
    }
    let _ = out.flush();
}
