//! Sending a session's messages to one backend connection.
//!
//! Owns what happens between an endpoint's decision to send and the
//! connection's pipes: a request for a 2026-07-28 backend gets the session's
//! `_meta`, a shared process's progress tokens are made unique per session,
//! "not ready" answers are retried with backoff until `ready_timeout`, and a
//! 2026-07-28 backend's `InputRequiredResult` to a session-era client is
//! completed (`stateless_backend`); a client's cancellation gets the
//! connection's own request id. It never picks the backend (the endpoints do)
//! and never builds an answer of its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Core;
use crate::config::ServerConfig;
use crate::jsonrpc::{self, Peek};
use crate::launcher::{BackendConn, ConnFailure};
use crate::protocol::{Era, method};
use crate::session::Session;

/// First wait before retrying a "not ready" answer; it doubles up to [`READY_BACKOFF_MAX`].
const READY_BACKOFF_START: Duration = Duration::from_millis(50);
const READY_BACKOFF_MAX: Duration = Duration::from_secs(1);

impl Core {
    /// Sends one request of `session` to `server`'s connection and returns
    /// the backend's answer.
    pub(crate) async fn send(
        &self,
        session: &Arc<Session>,
        server: &ServerConfig,
        conn: &BackendConn,
        message: &[u8],
        peek: &Peek<'_>,
    ) -> Result<Bytes, ConnFailure> {
        if conn.era() == Era::Stateless
            && let Some(with_meta) =
                super::stateless_backend::with_session_meta(session, message, peek)
        {
            let peek = jsonrpc::peek(&with_meta).map_err(|e| {
                ConnFailure::WriteFailed(format!("cannot add _meta to the request: {e}"))
            })?;
            return Box::pin(self.send(session, server, conn, &with_meta, &peek)).await;
        }
        let route = self.shared_route(server);
        let mapped = route.as_ref().and_then(|route| {
            let (token, range) = jsonrpc::request_progress_token(message, peek.params?)?;
            let ours = route.map_progress_token(&session.id, token);
            Some((jsonrpc::splice(message, range, ours.as_bytes()), ours))
        });
        let rewritten = mapped
            .as_ref()
            .and_then(|(bytes, _)| Some((bytes, jsonrpc::peek(bytes).ok()?)));
        let started = Instant::now();
        let answer = match &rewritten {
            Some((bytes, p)) => {
                request_when_ready(conn, &session.id, bytes, p, server, started).await
            }
            None => request_when_ready(conn, &session.id, message, peek, server, started).await,
        };
        crate::metrics::answered(
            conn.server(),
            peek.method.as_deref().unwrap_or_default(),
            started.elapsed(),
        );
        if let (Some(route), Some((_, token))) = (route, &mapped) {
            route.forget_progress_token(token);
        }
        match answer {
            // Boxed: only a 2026-07-28 backend takes this way, and its rounds
            // would otherwise grow every request's future.
            Ok(answer) if conn.era() == Era::Stateless => {
                Box::pin(self.complete_input_required(session, server, conn, message, peek, answer))
                    .await
            }
            other => other,
        }
    }

    /// Forwards a client notification or response of `session` to one
    /// backend connection; a cancellation's request id is mapped to the
    /// connection's own.
    pub(crate) async fn forward_to(
        &self,
        session: &Session,
        server: &ServerConfig,
        conn: &BackendConn,
        message: &[u8],
        peek: &Peek<'_>,
    ) {
        let result = match (peek.method.as_deref(), peek.params) {
            (Some(method::CANCELLED), Some(params)) => {
                match jsonrpc::cancelled_request_id(message, params) {
                    Some((id, range)) => conn.forward_cancel(&session.id, message, id, range).await,
                    None => Ok(()),
                }
            }
            _ => conn.send(message).await,
        };
        if let Err(failure) = result {
            tracing::warn!(server = %server.id, session = %session.id, %failure,
                "client message not forwarded");
        }
    }
}

/// Sends a request, and while the backend answers with an error matching one of
/// the server's `not_ready_patterns`, sends it again with backoff until
/// `ready_timeout` after `started`; then its answer, whatever it is, goes to
/// the client.
async fn request_when_ready(
    conn: &BackendConn,
    owner: &Arc<str>,
    message: &[u8],
    peek: &Peek<'_>,
    server: &ServerConfig,
    started: Instant,
) -> Result<Bytes, ConnFailure> {
    let id_range = peek.id_range.clone().expect("requests have ids");
    let deadline = started + server.ready_timeout;
    let mut backoff = READY_BACKOFF_START;
    loop {
        let answer = conn
            .request(owner, message, id_range.clone(), server.tool_timeout)
            .await?;
        if !answer.is_error || !is_not_ready(&answer.bytes, &server.not_ready_patterns) {
            return Ok(answer.bytes);
        }
        if Instant::now() + backoff > deadline {
            tracing::warn!(server = %server.id, "backend still not ready at ready_timeout; passing its answer on");
            return Ok(answer.bytes);
        }
        tracing::debug!(server = %server.id, ?backoff, "backend not ready yet; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(READY_BACKOFF_MAX);
    }
}

/// True for a JSON-RPC error whose message contains one of `patterns`.
fn is_not_ready(answer: &[u8], patterns: &[String]) -> bool {
    if patterns.is_empty() {
        return false;
    }
    let Some(error) = jsonrpc::peek(answer).ok().and_then(|p| p.error) else {
        return false;
    };
    jsonrpc::string_member(error, "message")
        .is_some_and(|m| patterns.iter().any(|p| m.contains(p.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_errors_whose_message_matches_a_pattern_are_not_ready() {
        let patterns = vec!["warming up".to_owned()];
        let not_ready =
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"index warming up, retry"}}"#;
        let other = br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"no such tool"}}"#;
        let result = br#"{"jsonrpc":"2.0","id":1,"result":{"text":"warming up"}}"#;
        assert!(is_not_ready(not_ready, &patterns));
        assert!(!is_not_ready(other, &patterns));
        assert!(!is_not_ready(result, &patterns));
        assert!(!is_not_ready(not_ready, &[]));
    }
}
