//! The first exchange with a fresh backend process, by the server's `era`.
//!
//! Owns what is said before the process serves requests: `initialize`, then
//! `notifications/initialized` and a `ping` whose answer marks the end of the
//! backend's start (session era); `server/discover` (2026-07-28);
//! or, for `era = "auto"`, a `server/discover` probe with a short timeout and,
//! on anything but a discover result that names a 2026-07-28 version,
//! `initialize` on the same process (never keyed on one error code). The
//! session's own `initialize` supplies the capabilities and `clientInfo` the
//! probe declares. It never spawns or stops a process (that is `pool` and
//! `process`).

use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;

use super::conn::{BackendConn, ConnFailure};
use crate::config::EraSetting;
use crate::jsonrpc;
use crate::jsonrpc::build::{self, MetaOnly, RequestMeta};
use crate::protocol::{Era, Version, method};

/// The longest wait for the answer to the `ping` after `initialize`
/// ([`start_barrier`]).
pub(crate) const START_BARRIER_TIMEOUT: Duration = Duration::from_secs(1);

/// How long `era = "auto"` waits for an answer to its `server/discover` probe.
pub const DISCOVER_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum Failed {
    /// The transport failed (exit, timeout, unwritable stdin).
    #[error("the transport failed during the handshake: {0}")]
    Transport(#[source] ConnFailure),
    /// The backend answered with a JSON-RPC error, or without the result asked for.
    #[error("the backend refused the handshake")]
    Refused(Bytes),
}

/// The `_meta` members a 2026-07-28 request of a session with this
/// `initialize` carries: the protocol version, and the session's capabilities
/// and `clientInfo`.
pub fn modern_meta(init_message: &[u8]) -> String {
    build::members(&request_meta(init_message))
}

/// The `_meta` of a 2026-07-28 request of a session with this `initialize`.
fn request_meta(init_message: &[u8]) -> RequestMeta<'_> {
    let params = jsonrpc::peek(init_message).ok().and_then(|p| p.params);
    let member = |name| params.and_then(|p| jsonrpc::member(p, name));
    RequestMeta {
        capabilities: member("capabilities").unwrap_or_else(|| build::raw("{}")),
        client_info: member("clientInfo"),
    }
}

fn discover_request(init_message: &[u8]) -> Bytes {
    build::request(
        build::raw("0"),
        method::DISCOVER,
        Some(MetaOnly {
            meta: request_meta(init_message),
        }),
    )
}

fn id_range(message: &[u8]) -> Range<usize> {
    jsonrpc::peek(message)
        .ok()
        .and_then(|p| p.id_range)
        .expect("handshake requests are valid JSON-RPC requests")
}

/// True for a discover result that names a version the gateway speaks.
fn is_modern_discover(answer: &[u8]) -> bool {
    jsonrpc::peek(answer)
        .ok()
        .and_then(|p| p.result)
        .and_then(|r| jsonrpc::member(r, "supportedVersions"))
        .and_then(|v| serde_json::from_str::<Vec<String>>(v.get()).ok())
        .is_some_and(|versions| versions.iter().any(|v| v == Version::STATELESS.as_str()))
}

/// Runs the handshake of `era` on `conn`; returns the backend's answer (to
/// `initialize` or `server/discover`) and the era it speaks.
pub(crate) async fn run(
    conn: &BackendConn,
    owner: &std::sync::Arc<str>,
    era: EraSetting,
    init_message: &[u8],
    timeout: Duration,
) -> Result<(Bytes, Era), Failed> {
    if era != EraSetting::Session {
        let discover = discover_request(init_message);
        let wait = if era == EraSetting::Auto {
            DISCOVER_PROBE_TIMEOUT.min(timeout)
        } else {
            timeout
        };
        match conn
            .request(owner, &discover, id_range(&discover), wait)
            .await
        {
            Ok(answer) if is_modern_discover(&answer.bytes) => {
                return Ok((answer.bytes, Era::Stateless));
            }
            Ok(answer) if era == EraSetting::Stateless => {
                return Err(Failed::Refused(answer.bytes));
            }
            Err(failure) if era == EraSetting::Stateless => return Err(Failed::Transport(failure)),
            // auto: a refusal, another answer, or silence all mean the session
            // era; a process that is gone means nothing at all.
            Err(failure) if !matches!(failure, ConnFailure::Timeout(_)) => {
                return Err(Failed::Transport(failure));
            }
            _ => {}
        }
    }
    let answer = conn
        .request(owner, init_message, id_range(init_message), timeout)
        .await
        .map_err(Failed::Transport)?
        .bytes;
    if jsonrpc::peek(&answer)
        .map(|p| p.result.is_none())
        .unwrap_or(true)
    {
        return Err(Failed::Refused(answer));
    }
    let initialized = build::notification(method::INITIALIZED, None::<()>);
    conn.send(&initialized).await.map_err(Failed::Transport)?;
    start_barrier(conn, owner, timeout).await?;
    Ok((answer, Era::Session))
}

/// Sends the fresh process a `ping` and waits for its answer (or, for a
/// server that never answers pings, [`START_BARRIER_TIMEOUT`]) before the
/// process serves any request. What the backend asks of its client as it
/// starts, on `notifications/initialized` (most often `roots/list`), it
/// writes before that answer: so such a request reaches the session while no
/// client request is in flight, and is known to belong to none.
async fn start_barrier(
    conn: &BackendConn,
    owner: &std::sync::Arc<str>,
    timeout: Duration,
) -> Result<(), Failed> {
    past_start(conn, owner, START_BARRIER_TIMEOUT.min(timeout))
        .await
        .map_err(Failed::Transport)
}

/// Sends the process a `ping` (which MCP allows at any time, before
/// `initialize` too) and waits up to `wait` for it: any answer, an error
/// included, says the process reads its stdin; silence may be a server that
/// does not answer pings, and it has had its time. Only a process that is
/// gone, or a write that failed, is an error.
pub(crate) async fn past_start(
    conn: &BackendConn,
    owner: &std::sync::Arc<str>,
    wait: Duration,
) -> Result<(), ConnFailure> {
    let ping = build::request(build::raw("0"), method::PING, None::<()>);
    match conn.request(owner, &ping, id_range(&ping), wait).await {
        Ok(_) | Err(ConnFailure::Timeout(_)) => Ok(()),
        Err(failure) => Err(failure),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modern_meta_carries_the_sessions_capabilities_and_client_info() {
        let init = br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"sampling":{}},"clientInfo":{"name":"c","version":"1"}}}"#;
        assert_eq!(
            modern_meta(init),
            r#""io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"sampling":{}},"io.modelcontextprotocol/clientInfo":{"name":"c","version":"1"}"#
        );
        let discover = discover_request(init);
        assert!(jsonrpc::peek(&discover).is_ok());
    }

    #[test]
    fn only_a_discover_result_naming_2026_07_28_means_modern() {
        assert!(is_modern_discover(
            br#"{"jsonrpc":"2.0","id":0,"result":{"supportedVersions":["2026-07-28"]}}"#
        ));
        assert!(!is_modern_discover(
            br#"{"jsonrpc":"2.0","id":0,"result":{"supportedVersions":["2025-11-25"]}}"#
        ));
        assert!(!is_modern_discover(
            br#"{"jsonrpc":"2.0","id":0,"error":{"code":-32601,"message":"no"}}"#
        ));
    }
}
