//! The HTTP side of the gateway: the only code that knows HTTP.
//!
//! Owns the axum router, the listener, and graceful shutdown (stop accepting,
//! end SSE streams, let in-flight requests finish until `shutdown_timeout`).
//! `rules` checks headers, `reply` shapes responses, `endpoint` handles
//! `/mcp/{serverID}` and `/mcp`. It never spawns processes or reads backend output.

mod endpoint;
mod reply;
mod rules;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;

use crate::relay::Relay;

pub use rules::SUPPORTED_VERSIONS;

/// What every handler can reach.
pub struct App {
    pub relay: Arc<Relay>,
}

/// The gateway's routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route(
            "/mcp/{server_id}",
            get(endpoint::get)
                .post(endpoint::post)
                .delete(endpoint::delete),
        )
        .route(
            "/mcp",
            get(endpoint::unified_get)
                .post(endpoint::unified_post)
                .delete(endpoint::unified_delete),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(app)
}

/// Serves on `listener` until `shutdown` resolves, then stops accepting, ends
/// every SSE stream and waits up to `shutdown_timeout` for in-flight requests.
/// Returns once the listener is closed; backends are still running (the caller
/// stops them after this returns).
pub async fn serve(
    listener: tokio::net::TcpListener,
    relay: Arc<Relay>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let timeout = relay.config.gateway.shutdown_timeout;
    let app = Arc::new(App {
        relay: Arc::clone(&relay),
    });
    let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections; ending SSE streams");
        relay.close_streams();
        let _ = draining_tx.send(());
    };
    let server = axum::serve(
        listener,
        router(app).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(signal);
    let server = tokio::spawn(async move { server.await });
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result.unwrap_or_else(|e| Err(std::io::Error::other(e))),
        _ = draining_rx => {}
    }
    match tokio::time::timeout(timeout, &mut server).await {
        Ok(result) => result.unwrap_or_else(|e| Err(std::io::Error::other(e))),
        Err(_) => {
            tracing::warn!(
                ?timeout,
                "in-flight requests still running at shutdown_timeout; closing them"
            );
            server.abort();
            Ok(())
        }
    }
}
