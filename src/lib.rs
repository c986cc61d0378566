//! # mcpgate
//!
//! A gateway that lets MCP clients speaking Streamable HTTP reach MCP servers
//! that only speak stdio, with one backend process per client session.
//!
//! ## Layout
//! From the top of the stack to the bottom (docs/ARCHITECTURE.md has the
//! layers as a table, and the `tidy` test holds the imports to it):
//! - [`http`]: the only module that knows HTTP: router, Streamable HTTP rules,
//!   SSE, the operator's endpoints, TLS, OAuth access tokens (the gateway as
//!   a resource server), graceful shutdown.
//! - `bridge`: stateless (2026-07-28) callers on both endpoints: their hidden
//!   sessions, calls, multi round-trip requests and `subscriptions/listen`.
//! - `routed`: the `/mcp/<serverID>` endpoint: one backend per session.
//! - `unified`: the `/mcp` endpoint: merged lists, prefixed names, routing by
//!   name and URI.
//! - `endpoints`: both behind one handle: a session's messages go through the
//!   endpoint that opened it.
//! - `reload`: a reloaded config's servers put in force.
//! - `core`: sessions, the pool, the live server table, admission, ending
//!   sessions, and sending a session's messages to a backend.
//! - `session`, `shared`, [`outbox`]: client sessions and their ids; routing a
//!   shared backend's messages among its sessions; which client stream
//!   carries a backend's own messages.
//! - [`launcher`]: the only module that starts processes: the `(server,
//!   session)` pool, process trees, the JSON-RPC connection over a child's pipes.
//! - `catalog`: list results and names: pages rewritten, names prefixed,
//!   allow-lists, URI templates.
//! - [`config`], [`cli`], `metrics`, `audit`, `systemd`, [`telemetry`]: the
//!   TOML schema and its checks, flags, Prometheus families, the audit log,
//!   `sd_notify`, logging setup.
//! - [`jsonrpc`], `protocol`: peeking at raw messages and splicing them
//!   without re-serialising; MCP's versions, eras, methods and `_meta` keys.
//!
//! ## Invariants
//! - Only `launcher` spawns or signals processes; every backend runs in its own
//!   process group, and every way a connection ends stops the whole group.
//! - Only `http` knows HTTP statuses and headers.
//! - Forwarded messages are never re-serialised: only ids, and the few members
//!   docs/ARCHITECTURE.md lists, are spliced into their bytes; the gateway's own
//!   messages are built by `jsonrpc::build`.
//! - No module imports one above it, and no two modules import each other.
//!
//! Public modules are the ones the binary (`main.rs`) and the fuzz targets use.

pub(crate) mod audit;
pub(crate) mod bridge;
pub(crate) mod catalog;
pub mod cli;
pub mod config;
pub(crate) mod core;
pub(crate) mod endpoints;
pub(crate) mod http;
pub mod jsonrpc;
pub mod launcher;
pub(crate) mod metrics;
pub mod outbox;
pub(crate) mod protocol;
pub(crate) mod reload;
pub(crate) mod routed;
pub(crate) mod session;
pub(crate) mod shared;
pub(crate) mod systemd;
pub mod telemetry;
#[cfg(test)]
mod tidy;
pub(crate) mod unified;

use std::future::Future;
use std::sync::Arc;

use crate::bridge::Bridge;
use crate::config::Config;
use crate::core::Core;

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

/// A server whose command cannot be found now.
#[derive(Debug)]
pub struct MissingCommand {
    pub server: String,
    pub command: String,
    /// The command names a path (it has a `/`), rather than a name looked
    /// for on the backend's `PATH`.
    pub is_path: bool,
    pub error: std::io::Error,
}

/// The servers of `config` whose command cannot be found where their
/// backends will look for it (a name may be installed later; a path that
/// does not exist is a mistake).
pub fn missing_commands(config: &Config) -> Vec<MissingCommand> {
    config
        .servers
        .iter()
        .filter_map(|server| {
            let error = launcher::locate_command(server).err()?;
            Some(MissingCommand {
                server: server.id.clone(),
                command: server.command.clone(),
                is_path: server.command.contains('/'),
                error,
            })
        })
        .collect()
}

/// Logs a warning for each server whose command cannot be found now.
fn warn_of_missing_commands(config: &Config) {
    for missing in missing_commands(config) {
        tracing::warn!(server = %missing.server, command = %missing.command,
            "the server's command cannot be found ({}); its sessions will fail to start until it can",
            missing.error);
    }
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

    warn_of_missing_commands(&config);
    let watch = config.gateway.watch_config;
    // The file, and the JSON server lists it names: a change of any is a reload.
    let watched: Vec<std::path::PathBuf> = std::iter::once(config.source.clone())
        .chain(config.gateway.servers_from.iter().cloned())
        .collect();
    let core = Arc::new(Core::new(config.gateway, config.servers, audit));
    core.keep_spares().await;
    let app = Arc::new(http::App::serving(Arc::clone(&core)));
    let sweeper = tokio::spawn(sweep_forever(Arc::clone(&core), Arc::clone(app.bridge())));
    let reloader = reloads
        .map(|reloads| tokio::spawn(reload_forever(Arc::clone(&core), watched, watch, reloads)));
    notifier.ready(&status);
    let stopping = Arc::clone(&notifier);
    let shutdown = async move {
        shutdown.await;
        stopping.stopping("shutting down: finishing in-flight requests");
    };
    let served = http::serve(listener, tls, app, shutdown).await;
    sweeper.abort();
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    tracing::info!("stopping every backend");
    notifier.status("shutting down: stopping every backend");
    core.shutdown().await;
    tracing::info!("stopped");
    served.map_err(RunError::Serve)
}

/// Every `cleanup_interval`, until the task is dropped: ends idle sessions,
/// refuses backend requests that no client stream came for, and drops
/// stateless calls whose client did not come back with its input.
async fn sweep_forever(core: Arc<Core>, bridge: Arc<Bridge>) {
    let mut tick = tokio::time::interval(core.gateway().cleanup_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let ended = core.end_idle_sessions().await;
        if ended > 0 {
            tracing::info!(ended, "idle sessions ended");
        }
        core.refuse_expired_requests();
        bridge.drop_expired_parked_calls();
    }
}

/// Reloads the configuration whenever asked (or, with `watch`, when one of
/// the `watched` files changes: the config, and the JSON files it takes
/// servers from), until the task is dropped. A file that does not load, or
/// changes `[gateway]`, is refused with a log line; the running
/// configuration stays.
async fn reload_forever(
    core: Arc<Core>,
    watched: Vec<std::path::PathBuf>,
    watch: bool,
    mut reloads: Reloads,
) {
    let source = watched[0].clone();
    let modified = || -> Vec<Option<std::time::SystemTime>> {
        watched
            .iter()
            .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
            .collect()
    };
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
        warn_of_missing_commands(&new);
        for note in &new.notes {
            tracing::warn!("{note}");
        }
        match reload::apply(&core, new).await {
            Ok(done) => tracing::info!(added = ?done.changes.added,
                removed = ?done.changes.removed, changed = ?done.changes.changed,
                sessions_ended = done.sessions_ended, "configuration reloaded"),
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
