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
//! - [`systemd`]: `READY=1`, `STOPPING=1` and watchdog pings to systemd (`NOTIFY_SOCKET`).
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

pub mod audit;
pub mod bridge;
pub mod cli;
pub mod config;
pub mod http;
pub mod jsonrpc;
pub mod launcher;
pub mod metrics;
pub mod outbox;
pub(crate) mod protocol;
pub mod relay;
pub mod reload;
pub mod session;
pub mod shared;
pub mod systemd;
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
    Serve(#[source] std::io::Error),
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] http::tls::TlsError),
    #[error("cannot open the audit log {}: {source}", path.display())]
    Audit {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Loads the configuration again for a reload: the same file, the same
/// command-line overrides, the same checks as at start.
pub type LoadConfig = Arc<dyn Fn() -> Result<Config, config::ConfigError> + Send + Sync>;

/// What asks for reloads: a message on `requests` (SIGHUP), and, with
/// `watch_config = true`, a change of the file's modification time.
pub struct Reloads {
    pub requests: tokio::sync::mpsc::Receiver<&'static str>,
    pub load: LoadConfig,
}

/// How often `watch_config` looks at the file.
const WATCH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs the gateway until `shutdown` resolves, then shuts down in order:
/// stop accepting, end streams, finish in-flight requests (bounded by
/// `shutdown_timeout`), stop every backend process tree.
///
/// Under systemd (`NOTIFY_SOCKET` set) it sends `READY=1` once it listens,
/// `STOPPING=1` when `shutdown` resolves, and feeds the watchdog throughout.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    reloads: Option<Reloads>,
) -> Result<(), RunError> {
    let notifier = Arc::new(systemd::Notifier::from_env());
    let _watchdog = notifier.spawn_watchdog();
    let audit = match &config.gateway.audit_log {
        Some(path) => Some(
            audit::AuditLog::open(path, config.gateway.audit_payloads).map_err(|source| {
                RunError::Audit {
                    path: path.clone(),
                    source,
                }
            })?,
        ),
        None => None,
    };
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
    let scheme = if tls.is_some() { "https" } else { "http" };
    let status = format!(
        "serving {} server(s) on {scheme}://{local}",
        config.servers.len()
    );

    let relay = Arc::new(Relay::new(Arc::new(config), audit));
    let sweeper = tokio::spawn(Arc::clone(&relay).sweep_idle_forever());
    let reloader = reloads.map(|reloads| tokio::spawn(reload_forever(Arc::clone(&relay), reloads)));
    notifier.ready(&status);
    let stopping = Arc::clone(&notifier);
    let shutdown = async move {
        shutdown.await;
        stopping.stopping("shutting down: finishing in-flight requests");
    };
    let served = http::serve(listener, tls, Arc::clone(&relay), shutdown).await;
    sweeper.abort();
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    tracing::info!("stopping every backend");
    notifier.status("shutting down: stopping every backend");
    relay.shutdown().await;
    tracing::info!("stopped");
    served.map_err(RunError::Serve)
}

/// Reloads the configuration whenever asked (or, with `watch_config`, when
/// the file changes), until the task is dropped. A file that does not load,
/// or changes `[gateway]`, is refused with a log line; the running
/// configuration stays.
async fn reload_forever(relay: Arc<Relay>, mut reloads: Reloads) {
    let source = relay.config.source.clone();
    let watch = relay.config.gateway.watch_config;
    let modified = || std::fs::metadata(&source).and_then(|m| m.modified()).ok();
    let mut seen = modified();
    let mut tick = tokio::time::interval(WATCH_EVERY);
    loop {
        let why = tokio::select! {
            request = reloads.requests.recv() => match request {
                Some(why) => why,
                None => return,
            },
            _ = tick.tick(), if watch => {
                let now = modified();
                if now == seen {
                    continue;
                }
                seen = now;
                "the config file changed"
            }
        };
        tracing::info!(config = %source.display(), "{why}: reloading the configuration");
        let new = match (reloads.load)() {
            Ok(new) => new,
            Err(error) => {
                tracing::error!("reload refused, the running configuration stays: {error}");
                continue;
            }
        };
        match relay.reload(new).await {
            Ok(done) => tracing::info!(added = ?done.added, removed = ?done.removed,
                changed = ?done.changed, sessions_ended = done.sessions_ended,
                "configuration reloaded"),
            Err(refused) => {
                tracing::error!("reload refused, the running configuration stays: {refused}");
            }
        }
    }
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
