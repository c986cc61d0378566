//! Session-era sessions on 2026-07-28 (stateless) backends.
//!
//! Owns what such a session needs from its backend, whichever endpoint it
//! came through: every request carries the session's `_meta` (version,
//! capabilities, `clientInfo` from its `initialize`); the client's
//! `initialize` is answered from the backend's `server/discover`; and the
//! backend's `InputRequiredResult`s become ordinary server-to-client requests
//! on the session's streams, whose answers the gateway collects (they never
//! reach the backend as responses) to retry the request with
//! `inputResponses` and the backend's `requestState`, until the backend
//! completes it. A stateless caller's own session gets such a result as it
//! is. It never speaks HTTP.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{Core, with_id};
use crate::config::ServerConfig;
use crate::jsonrpc::{self, Message, Peek, build};
use crate::launcher::{BackendConn, ConnFailure, ServerMessageSink as _};
use crate::protocol::{Era, Version, meta};
use crate::session::Session;

/// The prefix of the ids of requests the gateway sends clients for a modern
/// backend's input requests (as raw JSON: a string).
const ASKED_ID_PREFIX: &str = "\"mcpgate-input-";

/// How many times one request may come back `input_required` before the
/// gateway gives up on it.
const MAX_INPUT_ROUNDS: usize = 10;

/// An `initialize` answer for a session-era client, made from a 2026-07-28
/// backend's `server/discover` answer (`discover`, already carrying the
/// client's id): the version the client asked for (if the gateway serves it),
/// the backend's capabilities and instructions, and its `serverInfo`.
pub(crate) fn initialize_from_discover(discover: &[u8], initialize: &Peek<'_>) -> Bytes {
    let Some(result) = jsonrpc::peek(discover).ok().and_then(|p| p.result) else {
        return Bytes::copy_from_slice(discover);
    };
    let member = |name| jsonrpc::member(result, name);
    let asked = initialize
        .params
        .and_then(|p| jsonrpc::string_member(p, "protocolVersion"));
    let server_info = member("_meta")
        .and_then(|m| serde_json::from_str::<HashMap<&str, &RawValue>>(m.get()).ok())
        .and_then(|mut m| m.remove(meta::SERVER_INFO));
    build::success(
        initialize.id,
        InitializeResult {
            protocol_version: Version::answer_to_session_client(asked.as_deref()).as_str(),
            capabilities: member("capabilities").unwrap_or_else(|| build::raw("{}")),
            server_info: server_info
                .unwrap_or_else(|| build::raw(r#"{"name":"unknown","version":"unknown"}"#)),
            instructions: member("instructions"),
        },
    )
}

/// An `initialize` result made by the gateway.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InitializeResult<'a> {
    protocol_version: &'static str,
    capabilities: &'a RawValue,
    server_info: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    instructions: Option<&'a RawValue>,
}

/// An input request of a 2026-07-28 backend, as it writes it.
#[derive(Deserialize)]
struct InputRequest {
    method: String,
    params: Option<Box<RawValue>>,
}

/// What a request retried with the client's input carries (in its params).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InputRetry<'a> {
    input_responses: IndexMap<String, Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_state: Option<&'a RawValue>,
}

/// `message` with the session's `_meta` added, when it has no protocol
/// version there yet (a session-era client's request for a 2026-07-28
/// backend); `None` when it already has one.
pub(super) fn with_session_meta(
    session: &Session,
    message: &[u8],
    peek: &Peek<'_>,
) -> Option<Vec<u8>> {
    let has_version = peek
        .params
        .and_then(|p| jsonrpc::member(p, "_meta"))
        .is_some_and(|m| jsonrpc::member(m, meta::PROTOCOL_VERSION).is_some());
    if has_version {
        return None;
    }
    let members = crate::launcher::handshake::modern_meta(&session.init_message);
    Some(jsonrpc::with_meta_members(message, peek, &members))
}

/// A request the gateway asked a session's client: (session id, raw request id).
type AskedKey = (Arc<str>, String);

/// Requests the gateway sent session-era clients on a 2026-07-28 backend's
/// behalf (from its `InputRequiredResult`), until answered. Only the session
/// asked may answer.
#[derive(Default)]
pub(super) struct Asked {
    waiting: Mutex<HashMap<AskedKey, tokio::sync::oneshot::Sender<Bytes>>>,
    next: AtomicU64,
}

impl Asked {
    fn waiting(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<AskedKey, tokio::sync::oneshot::Sender<Bytes>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A session-era client's answer to a request the gateway asked it:
    /// handed to the waiting request, not forwarded. False for any other
    /// message.
    pub(super) fn take_answer(
        &self,
        session: &Arc<Session>,
        message: &[u8],
        peek: &Peek<'_>,
    ) -> bool {
        let Some(id) = peek.id.filter(|id| id.starts_with(ASKED_ID_PREFIX)) else {
            return false;
        };
        let key = (Arc::clone(&session.id), id.to_owned());
        if let Some(waiter) = self.waiting().remove(&key) {
            let _ = waiter.send(Bytes::copy_from_slice(message));
        }
        true
    }
}

impl Core {
    /// A modern backend answered a session-era client's request with an
    /// `InputRequiredResult`: its input requests go to the client as ordinary
    /// server-to-client requests (on the request's stream), and the request is
    /// retried with the answers (and the backend's `requestState`) until the
    /// backend completes it. Stateless callers get the result as it is.
    pub(super) async fn complete_input_required(
        &self,
        session: &Arc<Session>,
        server: &ServerConfig,
        conn: &BackendConn,
        message: &[u8],
        peek: &Peek<'_>,
        mut answer: Bytes,
    ) -> Result<Bytes, ConnFailure> {
        if session.client_era() == Era::Stateless {
            return Ok(answer);
        }
        for _ in 0..MAX_INPUT_ROUNDS {
            let Some(result) = jsonrpc::peek(&answer).ok().and_then(|p| p.result) else {
                return Ok(answer);
            };
            if jsonrpc::string_member(result, "resultType").as_deref() != Some("input_required") {
                return Ok(answer);
            }
            let requests: HashMap<String, Box<RawValue>> = jsonrpc::member(result, "inputRequests")
                .and_then(|r| serde_json::from_str(r.get()).ok())
                .unwrap_or_default();
            let mut responses = IndexMap::with_capacity(requests.len());
            for (key, request) in requests {
                let Ok(request) = serde_json::from_str::<InputRequest>(request.get()) else {
                    tracing::debug!(key, "an input request without a method; left out");
                    continue;
                };
                let n = self.asked.next.fetch_add(1, Ordering::Relaxed);
                let id = format!("{ASKED_ID_PREFIX}{n}\"");
                let ask = build::request(build::raw(&id), &request.method, request.params);
                let (tx, rx) = tokio::sync::oneshot::channel();
                let asked = (Arc::clone(&session.id), id.clone());
                self.asked.waiting().insert(asked.clone(), tx);
                let ask = Message::read(ask).expect("the gateway's own request reads");
                session.outbox.deliver(ask);
                let reply = tokio::time::timeout(server.tool_timeout, rx).await;
                self.asked.waiting().remove(&asked);
                let Ok(Ok(reply)) = reply else {
                    return Err(ConnFailure::Timeout(server.tool_timeout));
                };
                let reply_peek = jsonrpc::peek(&reply).ok();
                match reply_peek.as_ref().and_then(|p| p.result) {
                    Some(value) => {
                        responses.insert(key, value.to_owned());
                    }
                    // The client refused: its error is the request's answer.
                    None => {
                        return Ok(with_id(&reply, peek.id).unwrap_or(reply));
                    }
                }
            }
            let members = build::members(&InputRetry {
                input_responses: responses,
                request_state: jsonrpc::member(result, "requestState"),
            });
            let retry = jsonrpc::with_params_members(message, peek, &members);
            let retry_peek = jsonrpc::peek(&retry)
                .map_err(|e| ConnFailure::WriteFailed(format!("cannot build the retry: {e}")))?;
            answer = Box::pin(self.send(session, server, conn, &retry, &retry_peek)).await?;
        }
        Ok(answer)
    }
}
