//! Stateless (MCP 2026-07-28) clients on both endpoints, whatever their
//! backend speaks.
//!
//! Owns what a stateless request means to the pool, and the answers the
//! gateway makes itself:
//! - **Caller processes.** A stateless request has no session to key on, so it
//!   reaches the process of its *caller* on that route: the API key's name, or
//!   the value of `caller_header` when there are no keys, or one shared
//!   `anonymous` caller. The gateway opens it with an `initialize` of its own
//!   (the client's `clientInfo`; the elicitation, sampling and roots
//!   capabilities, which it can relay) as a *hidden session* (a random id
//!   shown to no one; on `/mcp` a unified session), so idle timeouts, crash
//!   relaunches and shutdown treat it like any other. Parallel first requests
//!   of one caller open one.
//! - **Answers for a session-era backend.** `server/discover` is answered from
//!   the initialize result; requests are forwarded without the 2026-07-28
//!   `_meta` envelope, and results get `resultType: "complete"` (and `ttlMs: 0`,
//!   `cacheScope: "private"` when cacheable) spliced in; nothing else in them is
//!   touched. Calls, their streams and multi round-trip requests are `calls`;
//!   `subscriptions/listen` is `listen`; the signed `requestState` is
//!   `request_state`.
//! - **A 2026-07-28 backend** gets the client's requests as they are.
//!
//! (Session-era clients of a 2026-07-28 backend are the core's business,
//! `core::stateless_backend`: both endpoints send through it.) It opens
//! hidden sessions through `endpoints`, never around them. It never speaks
//! HTTP (statuses are chosen in `http` from [`Outcome`]),
//! never re-serialises a backend's result, and never logs a `requestState`.

mod calls;
mod listen;
pub(crate) mod request_state;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::config::ServerConfig;
use crate::core::answers::launch_failed;
use crate::core::{Core, Outcome, with_id};
use crate::endpoints::Endpoints;
use crate::jsonrpc;
use crate::jsonrpc::build;
use crate::protocol::{Era, Version, meta, method};
use crate::session::{Caller, Session};
use calls::Parked;
use request_state::{Binding, Signer};

/// A stateless request, as the HTTP layer checked it.
#[derive(Debug, Clone)]
pub(crate) struct StatelessCall {
    /// The raw JSON-RPC id.
    pub id: String,
    pub method: String,
    /// `params.name` or `params.uri`, for the methods that have one.
    pub name: Option<String>,
    /// The raw `clientCapabilities` object.
    pub capabilities: String,
    /// The raw `clientInfo`, if sent.
    pub client_info: Option<String>,
    pub request_state: Option<String>,
    /// The raw `inputResponses` object, if sent.
    pub input_responses: Option<String>,
    /// The caller named by `caller_header`, when there are no API keys.
    pub named_caller: Option<String>,
    /// The client accepts an event stream as the answer.
    pub accepts_stream: bool,
    /// `_meta["io.modelcontextprotocol/logLevel"]`: the least severe log
    /// messages the client wants for this request; none without it.
    pub log_level: Option<String>,
}

/// A caller's hidden session on one route (and the answer to its
/// `initialize`), once opened; locked while opening.
type CallerSlot = Arc<tokio::sync::Mutex<Option<(Arc<Session>, Bytes)>>>;

/// The bridge: stateless callers' processes and their calls.
pub(crate) struct Bridge {
    core: Arc<Core>,
    /// The endpoints a caller's hidden session is opened on, and that its
    /// later messages go through.
    endpoints: Arc<Endpoints>,
    signer: Signer,
    /// The process (as a hidden session) of each (server, caller).
    callers: Mutex<HashMap<(String, String), CallerSlot>>,
    /// The `subscriptions/listen` hubs, by hidden session.
    hubs: Arc<Mutex<HashMap<Arc<str>, Arc<listen::Hub>>>>,
    /// Calls being driven (in flight and not parked), by hidden session.
    active: Arc<Mutex<HashMap<Arc<str>, usize>>>,
    parked: Mutex<HashMap<String, Parked>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the OS random source works");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// The caller a stateless request is keyed on.
fn caller_of(api_caller: Option<&Arc<str>>, call: &StatelessCall) -> String {
    match (api_caller, &call.named_caller) {
        (Some(key), _) => format!("key:{key}"),
        (None, Some(named)) => format!("header:{named}"),
        (None, None) => "anonymous".to_owned(),
    }
}

/// The gateway's own `initialize` for a caller's process: the client's
/// `clientInfo`, and the capabilities it can relay to a 2026-07-28 client as
/// input requests.
fn bridge_initialize(client_info: Option<&str>) -> Bytes {
    build::initialize(
        build::raw(build::RELAYED_CAPABILITIES),
        build::raw(client_info.unwrap_or(build::GATEWAY_CLIENT_INFO)),
    )
}

/// What a complete 2026-07-28 result says of itself (and, for cacheable
/// methods, of its caching: nothing may be cached, as the session-era backend
/// said nothing about it).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Complete {
    result_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_scope: Option<&'static str>,
}

impl Complete {
    fn of(method_name: &str) -> Complete {
        let cacheable = method::CACHEABLE.contains(&method_name);
        Complete {
            result_type: "complete",
            ttl_ms: cacheable.then_some(0),
            cache_scope: cacheable.then_some("private"),
        }
    }
}

/// `answer` with a complete result's members (see [`Complete`]) added at the
/// start of its result object, unless the result already has `resultType`.
/// Errors pass unchanged.
fn completed(answer: &[u8], method_name: &str) -> Bytes {
    let Some(result) = jsonrpc::peek(answer).ok().and_then(|p| p.result) else {
        return Bytes::copy_from_slice(answer);
    };
    if jsonrpc::member(result, "resultType").is_some() {
        return Bytes::copy_from_slice(answer);
    }
    let members = build::members(&Complete::of(method_name));
    jsonrpc::splice_members(answer, result, &members)
        .map_or_else(|| Bytes::copy_from_slice(answer), Bytes::from)
}

/// A `server/discover` result.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DiscoverResult<'a> {
    #[serde(flatten)]
    complete: Complete,
    supported_versions: [&'static str; 1],
    capabilities: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    instructions: Option<&'a RawValue>,
    #[serde(rename = "_meta", skip_serializing_if = "Option::is_none")]
    meta: Option<BTreeMap<&'static str, &'a RawValue>>,
}

/// `server/discover`, answered from an initialize answer (the backend's, or
/// the unified endpoint's merged one).
fn discover_from_initialize(init: Option<&[u8]>, call: &StatelessCall) -> Outcome {
    let result = init.and_then(|init| jsonrpc::peek(init).ok()?.result);
    let member = |name| result.and_then(|r| jsonrpc::member(r, name));
    Outcome::Answer(build::success(
        Some(&call.id),
        DiscoverResult {
            complete: Complete::of(method::DISCOVER),
            supported_versions: [Version::STATELESS.as_str()],
            capabilities: member("capabilities").unwrap_or_else(|| build::raw("{}")),
            instructions: member("instructions"),
            meta: member("serverInfo").map(|info| BTreeMap::from([(meta::SERVER_INFO, info)])),
        },
    ))
}

/// A final answer as the client gets it: the 2026-07-28 errors that the
/// transport gives an HTTP status of their own get 400, whoever raised them.
fn final_outcome(answer: Bytes) -> Outcome {
    let code = jsonrpc::peek(&answer)
        .ok()
        .and_then(|p| p.error)
        .and_then(|e| jsonrpc::member(e, "code"))
        .and_then(|c| c.get().parse::<i32>().ok());
    match code {
        Some(
            jsonrpc::HEADER_MISMATCH
            | jsonrpc::MISSING_CLIENT_CAPABILITY
            | jsonrpc::UNSUPPORTED_PROTOCOL_VERSION,
        ) => Outcome::Refused(answer),
        _ => Outcome::Answer(answer),
    }
}

fn refused(id: &str, code: i32, message: &str, data: Option<serde_json::Value>) -> Outcome {
    Outcome::Refused(jsonrpc::error_response(Some(id), code, message, data))
}

impl Bridge {
    pub(crate) fn new(core: Arc<Core>, endpoints: Arc<Endpoints>) -> Bridge {
        Bridge {
            core,
            endpoints,
            signer: Signer::random(),
            callers: Mutex::default(),
            hubs: Arc::default(),
            active: Arc::default(),
            parked: Mutex::default(),
        }
    }

    /// Serves one stateless request on `server`'s routed endpoint, or (`None`)
    /// on the unified endpoint.
    pub(crate) async fn stateless(
        self: &Arc<Self>,
        server: Option<&Arc<ServerConfig>>,
        api_caller: Caller,
        message: Bytes,
        call: StatelessCall,
    ) -> Outcome {
        let caller = caller_of(api_caller.name.as_ref(), &call);
        let access = api_caller.access.clone();
        let (session, init) = match self
            .caller_session(server, &caller, api_caller, &call)
            .await
        {
            Ok(opened) => opened,
            Err(outcome) => return outcome,
        };
        // The caller's latest token says which servers it reaches now.
        session.set_access(access);
        if session.in_flight() >= self.core.gateway().max_in_flight_per_session {
            return Outcome::TooMany;
        }
        // A routed process may have been relaunched since: its current handshake counts.
        let (init, modern_backend) = match server {
            None => (Some(init), false),
            Some(server) => match self.core.conn_for(&session, server).await {
                Ok((conn, _)) => (conn.init_result(), conn.era() == Era::Stateless),
                Err(error) => {
                    return Outcome::Answer(launch_failed(Some(&call.id), server, &error));
                }
            },
        };
        if call.method == method::LISTEN {
            let params = jsonrpc::peek(&message).ok().and_then(|p| p.params);
            return self
                .listen(&session, &call, params, init.as_deref(), modern_backend)
                .await;
        }
        if modern_backend {
            // A 2026-07-28 backend: everything passes through, its own
            // InputRequiredResult and requestState included.
            let running = self.start(&session, message, &call, false);
            return self.run(running, Binding::default(), call).await;
        }
        if call.method == method::DISCOVER {
            return discover_from_initialize(init.as_deref(), &call);
        }
        // A session-era backend gets the request without the 2026-07-28
        // envelope (some refuse it on a session-era connection); the rest of
        // `_meta` (a progress token, say) stays.
        let message = match jsonrpc::peek(&message) {
            Ok(peek) => jsonrpc::without_meta_members(&message, &peek, meta::ENVELOPE_PREFIX)
                .map_or(message.clone(), Bytes::from),
            Err(_) => message,
        };
        let expected = Binding {
            parked: String::new(),
            caller,
            server: server.map_or_else(|| "/mcp".to_owned(), |s| s.id.clone()),
            method: call.method.clone(),
            name: call.name.clone(),
        };
        let (running, unanswered) = match &call.request_state {
            Some(token) => match self.resume(token, &expected, &call).await {
                Ok(resumed) => resumed,
                Err(outcome) => return outcome,
            },
            None => (self.start(&session, message, &call, true), Vec::new()),
        };
        if !unanswered.is_empty() {
            // The client left some input out: the backend is still waiting for it.
            return self.park(running, unanswered, &expected, &call);
        }
        self.run(running, expected, call).await
    }

    /// The hidden session holding `caller`'s process on `server` (or its
    /// unified session, `None`), opened on first use (once, however many first
    /// requests arrive at once), with the answer to its `initialize`.
    async fn caller_session(
        &self,
        server: Option<&Arc<ServerConfig>>,
        caller: &str,
        api_caller: Caller,
        call: &StatelessCall,
    ) -> Result<(Arc<Session>, Bytes), Outcome> {
        let route = server.map_or_else(String::new, |s| s.id.clone());
        let slot = lock(&self.callers)
            .entry((route, caller.to_owned()))
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some((session, init)) = slot.as_ref()
            && self.core.session(&session.id).is_some()
        {
            return Ok((Arc::clone(session), init.clone()));
        }
        let init = bridge_initialize(call.client_info.as_deref());
        let peek = jsonrpc::peek(&init).expect("the bridge's initialize is valid JSON-RPC");
        let outcome = match server {
            Some(server) => {
                self.endpoints
                    .routed()
                    .initialize(server, api_caller, init.clone(), &peek, Era::Stateless)
                    .await
            }
            None => {
                self.endpoints
                    .unified()
                    .initialize(api_caller, init.clone(), &peek, Era::Stateless)
                    .await
            }
        };
        match outcome {
            Outcome::Created {
                session,
                answer: response,
            } => {
                tracing::info!(endpoint = session.endpoint_name(), caller, session = %session.id,
                    "stateless caller's process opened");
                *slot = Some((Arc::clone(&session), response.clone()));
                Ok((session, response))
            }
            Outcome::Answer(response) => Err(Outcome::Answer(
                with_id(&response, Some(&call.id)).unwrap_or(response),
            )),
            other => Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_members_are_spliced_in_without_touching_the_rest() {
        let answer = br#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"x","z":1e400}]}}"#;
        assert_eq!(
            &completed(answer, "tools/list")[..],
            &br#"{"jsonrpc":"2.0","id":7,"result":{"resultType":"complete","ttlMs":0,"cacheScope":"private","tools":[{"name":"x","z":1e400}]}}"#[..]
        );
        let empty = br#"{"jsonrpc":"2.0","id":7,"result":{ }}"#;
        assert_eq!(
            &completed(empty, "tools/call")[..],
            &br#"{"jsonrpc":"2.0","id":7,"result":{"resultType":"complete" }}"#[..]
        );
        let typed = br#"{"jsonrpc":"2.0","id":7,"result":{"resultType":"complete"}}"#;
        assert_eq!(&completed(typed, "tools/call")[..], &typed[..]);
        let error = br#"{"jsonrpc":"2.0","id":7,"error":{"code":1,"message":"m"}}"#;
        assert_eq!(&completed(error, "tools/call")[..], &error[..]);
    }

    #[test]
    fn callers_are_keyed_by_key_then_header_then_anonymous() {
        let mut call = StatelessCall {
            id: "1".into(),
            method: "tools/list".into(),
            name: None,
            capabilities: "{}".into(),
            client_info: None,
            request_state: None,
            input_responses: None,
            named_caller: Some("bob".into()),
            accepts_stream: true,
            log_level: None,
        };
        let key: Arc<str> = Arc::from("ci");
        assert_eq!(caller_of(Some(&key), &call), "key:ci");
        assert_eq!(caller_of(None, &call), "header:bob");
        call.named_caller = None;
        assert_eq!(caller_of(None, &call), "anonymous");
    }
}
