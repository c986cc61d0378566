//! The HTTP side of the gateway: the only code that knows HTTP.
//!
//! Owns the axum router, the listener, and graceful shutdown (stop accepting,
//! end SSE streams, let in-flight requests finish until `shutdown_timeout`).
//! `rules` checks headers, `reply` shapes responses, `endpoint` handles
//! `/mcp/{serverID}` and `/mcp`, `limits` bounds what clients may hold
//! (connections, buffered bodies), `oauth` checks access tokens and serves the
//! protected resource metadata, `ops` serves the operator's JSON and
//! `admin_page` the status page, `hot_path` takes MCP POSTs past the router.
//! It never spawns processes or reads backend
//! output.

mod admin_page;
mod endpoint;
mod hot_path;
mod limits;
mod oauth;
mod ops;
mod reply;
mod rules;
mod stateless;
pub(crate) mod tls;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;

use crate::bridge::Bridge;
use crate::core::Core;
use crate::endpoints::Endpoints;
use crate::routed::Routed;
use crate::unified::Unified;

/// What every handler can reach: the core, the endpoints on it, the cap on
/// connections, the budget of request-body bytes held at once, and the status
/// page's logins.
pub(crate) struct App {
    core: Arc<Core>,
    endpoints: Arc<Endpoints>,
    bridge: Arc<Bridge>,
    connections: limits::ConnectionCap,
    bodies: Arc<limits::BodyBudget>,
    /// The access token checks, with `[gateway.oauth]`.
    oauth: Option<Arc<oauth::Verifier>>,
    /// The status page's logins.
    logins: admin_page::logins::Logins,
}

impl App {
    /// The handlers' state on `core`, with the endpoints and the stateless
    /// bridge over it; with `[gateway.oauth]`, the issuer's keys are fetched
    /// at once (in the background).
    pub(crate) fn serving(core: Arc<Core>) -> App {
        let routed = Arc::new(Routed::new(Arc::clone(&core)));
        let unified = Arc::new(Unified::new(Arc::clone(&core)));
        let endpoints = Arc::new(Endpoints::new(routed, unified));
        let bridge = Arc::new(Bridge::new(Arc::clone(&core), Arc::clone(&endpoints)));
        App::new(core, endpoints, bridge)
    }

    /// The stateless bridge the handlers serve 2026-07-28 callers through.
    pub(crate) fn bridge(&self) -> &Arc<Bridge> {
        &self.bridge
    }

    fn new(core: Arc<Core>, endpoints: Arc<Endpoints>, bridge: Arc<Bridge>) -> App {
        let bodies = limits::BodyBudget::new(core.gateway().max_buffered_body_bytes);
        let connections = limits::ConnectionCap::new(core.gateway().max_connections);
        let oauth = core.gateway().oauth.clone().map(|config| {
            let verifier = Arc::new(oauth::Verifier::new(config));
            verifier.prefetch();
            verifier
        });
        App {
            core,
            endpoints,
            bridge,
            connections,
            bodies,
            oauth,
            logins: admin_page::logins::Logins::default(),
        }
    }
}

/// How often "accept failed" (or a connection refused over `max_connections`)
/// is logged at most while it keeps happening.
const LOG_FLOODS_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// The gateway's routes.
fn router(app: Arc<App>) -> Router {
    Router::new()
        .route(
            "/mcp/{server_id}",
            get(endpoint::get)
                .post(endpoint::post)
                .delete(endpoint::delete)
                .fallback(endpoint::method_not_allowed),
        )
        .route(
            "/mcp",
            get(endpoint::unified_get)
                .post(endpoint::unified_post)
                .delete(endpoint::unified_delete)
                .fallback(endpoint::method_not_allowed),
        )
        .route(oauth::METADATA_PATH, get(oauth::unified_metadata))
        .route(
            &format!("{}/mcp", oauth::METADATA_PATH),
            get(oauth::unified_metadata),
        )
        .route(
            &format!("{}/mcp/{{server_id}}", oauth::METADATA_PATH),
            get(oauth::routed_metadata),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ops::readyz))
        .route("/health", get(ops::health))
        .route("/metrics", get(ops::metrics))
        .route("/admin", get(admin_page::to_page))
        .route("/admin/", get(admin_page::page))
        .route("/admin/page.css", get(admin_page::stylesheet))
        .route("/admin/status.js", get(admin_page::script))
        .route("/admin/login", axum::routing::post(admin_page::login))
        .route("/admin/logout", axum::routing::post(admin_page::logout))
        .route("/admin/sessions", get(ops::admin_sessions))
        .route(
            "/admin/sessions/{id}",
            axum::routing::delete(ops::admin_end_session),
        )
        .with_state(app)
}

/// Serves on `listener` until `shutdown` resolves, then stops accepting, ends
/// every SSE stream and waits up to `shutdown_timeout` for in-flight requests.
/// Returns once the listener is closed; backends are still running (the caller
/// stops them after this returns).
///
/// Connections are served by hyper directly (not `axum::serve`) so that the
/// request-head limits hold: at most `max_header_bytes` of request line and
/// headers (431 beyond), sent within `header_read_timeout` of the connection
/// becoming idle (a slow client cannot hold a connection without sending).
/// At most `max_connections` are served at once (each holds a permit until
/// its task ends, TLS handshake included); one more is answered 503 on the
/// raw socket and closed (`limits::ConnectionCap`). A failing `accept` (out
/// of file descriptors) is retried after a pause and logged at most once per
/// [`LOG_FLOODS_EVERY`], with the count of failures not logged.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let gateway = app.core.gateway().clone();
    let core = Arc::clone(&app.core);
    let service = hot_path::Dispatch::new(Arc::clone(&app), router(Arc::clone(&app))).service();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(gateway.header_read_timeout)
        .max_buf_size(usize::try_from(gateway.max_header_bytes).unwrap_or(usize::MAX))
        .keep_alive(true);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let cap = &app.connections;
    let mut accept_failures = limits::LogThrottle::new(LOG_FLOODS_EVERY);
    let mut over_cap = limits::LogThrottle::new(LOG_FLOODS_EVERY);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    if let Some(unlogged) = accept_failures.admit() {
                        tracing::warn!(error = %e, unlogged,
                            "accept failed (failures since the last such line: {unlogged} more)");
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(permit) = cap.admit() else {
            if let Some(unlogged) = over_cap.admit() {
                tracing::warn!(%peer, max_connections = cap.max(), unlogged,
                    "connection refused: max_connections are open \
                     (refused since the last such line: {unlogged} more)");
            }
            cap.refuse(stream, tls.is_some());
            continue;
        };
        let _ = stream.set_nodelay(true);
        match &tls {
            None => {
                let connection =
                    builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service.clone());
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    drop(permit);
                });
            }
            Some(acceptor) => {
                // The handshake is bounded like a request head: a client that
                // starts one and stops cannot hold the connection.
                let (acceptor, builder, service) =
                    (acceptor.clone(), builder.clone(), service.clone());
                let watcher = graceful.watcher();
                let handshake_timeout = gateway.header_read_timeout;
                tokio::spawn(async move {
                    let _permit = permit;
                    let stream = match tokio::time::timeout(
                        handshake_timeout,
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let connection =
                        builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                    if let Err(e) = watcher.watch(connection).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    tracing::info!("shutting down: no new connections; ending SSE streams");
    core.close_streams();
    let timeout = gateway.shutdown_timeout;
    if tokio::time::timeout(timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?timeout,
            "in-flight requests still running at shutdown_timeout; closing them"
        );
    }
    Ok(())
}
