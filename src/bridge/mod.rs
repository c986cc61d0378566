//! The bridge from stateless (MCP 2026-07-28) clients to session-era stdio
//! backends, on the routed endpoint.
//!
//! Owns what a stateless request means to the pool, and the multi round-trip
//! requests (MRTR) that stand in for server-to-client requests:
//! - **Caller processes.** A stateless request has no session to key on, so it
//!   reaches the process of its *caller* on that server: the API key's name, or
//!   the value of `caller_header` when there are no keys, or one shared
//!   `anonymous` caller. The gateway opens that process with an `initialize` of
//!   its own (the client's `clientInfo`, and the elicitation, sampling and roots
//!   capabilities, which it can relay) and keeps it as an ordinary session with
//!   a random id that is never shown to anyone, so idle timeouts, crash
//!   relaunches and shutdown treat it like any other. Parallel first requests
//!   of one caller open one process.
//! - **Answers.** `server/discover` is answered from the backend's initialize
//!   result; every other request is forwarded byte for byte, and its result
//!   gets `resultType: "complete"` (and `ttlMs: 0`, `cacheScope: "private"` on
//!   cacheable results) spliced in; nothing else in it is touched.
//! - **MRTR.** When the backend sends `elicitation/create`,
//!   `sampling/createMessage` or `roots/list` during a call, the call is
//!   *parked* (still in flight at the backend) and the client gets an
//!   `InputRequiredResult` whose `requestState` is signed and bound to the
//!   caller, the server, the request and an expiry (see `request_state`). The
//!   client's retry hands the `inputResponses` to the waiting backend requests
//!   and picks the call up where it stopped. A parked call can be resumed
//!   once; one not resumed within `input_required_timeout` is dropped (by the
//!   idle sweep) and its backend requests answered with an error.
//! - A client that did not declare the capability a backend request needs gets
//!   -32021 (400) and the backend an error answer; a client that goes away
//!   mid-call has the call cancelled at the backend.
//!
//! It never speaks HTTP (statuses are chosen in `http` from [`Outcome`]),
//! never re-serialises a backend's result, and never logs a `requestState`.

mod listen;
pub mod request_state;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::config::ServerConfig;
use crate::jsonrpc::{self, Kind};
use crate::launcher::Generation;
use crate::outbox::StreamHandle;
use crate::relay::{InitOutcome, Relay, with_id};
use crate::session::Session;
use request_state::{Binding, Signer};

/// The stateless protocol versions the gateway serves.
pub const MODERN_VERSIONS: [&str; 1] = ["2026-07-28"];
/// `_meta` key of a stateless request's protocol version.
pub const VERSION_META: &str = "io.modelcontextprotocol/protocolVersion";
/// `_meta` key of a stateless request's client capabilities.
pub const CAPABILITIES_META: &str = "io.modelcontextprotocol/clientCapabilities";
/// `_meta` key of the log level a stateless request asks for.
pub const LOG_LEVEL_META: &str = "io.modelcontextprotocol/logLevel";
/// `_meta` key of a stateless request's client info.
pub const CLIENT_INFO_META: &str = "io.modelcontextprotocol/clientInfo";
/// The prefix of the `_meta` keys of the 2026-07-28 request envelope.
const ENVELOPE_PREFIX: &str = "io.modelcontextprotocol/";

/// How long the bridge waits for more input requests after one arrives, so
/// that requests a backend sends together go to the client together.
const INPUT_BATCH_WAIT: std::time::Duration = std::time::Duration::from_millis(25);

/// `_meta` key of the server info in a `server/discover` result.
const SERVER_INFO_META: &str = "io.modelcontextprotocol/serverInfo";

/// The session-era version the gateway's own `initialize` asks for.
const BRIDGE_PROTOCOL_VERSION: &str = "2025-11-25";

/// Results that carry caching hints (2026-07-28, caching).
const CACHEABLE: [&str; 6] = [
    "server/discover",
    "tools/list",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
];

/// Backend requests that become input requests, with the client capability each needs.
const INPUT_METHODS: [(&str, &str); 3] = [
    ("elicitation/create", "elicitation"),
    ("sampling/createMessage", "sampling"),
    ("roots/list", "roots"),
];

/// A stateless request, as the HTTP layer checked it.
#[derive(Debug, Clone)]
pub struct StatelessCall {
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

/// Log levels from the least to the most severe (RFC 5424, as MCP names them).
const LOG_LEVELS: [&str; 8] = [
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];

/// True when a `notifications/message` with these params is at or above `wanted`.
fn log_level_admits(wanted: Option<&str>, params: Option<&RawValue>) -> bool {
    let rank = |level: &str| LOG_LEVELS.iter().position(|l| *l == level);
    let Some(wanted) = wanted.and_then(rank) else {
        return false;
    };
    params
        .and_then(|p| jsonrpc::string_member(p, "level"))
        .and_then(|level| rank(&level))
        .is_some_and(|level| level >= wanted)
}

/// What the client gets.
pub enum Outcome {
    /// 200 with this JSON-RPC message.
    Answer(Bytes),
    /// 400 with this JSON-RPC error (a refused `requestState`, a missing capability).
    Refused(Bytes),
    /// `max_sessions` are open.
    Busy,
    /// The backend sent notifications for the request (progress, logs) before
    /// its answer: they come first, then the final message, on an event stream.
    Stream(Bytes, tokio::sync::mpsc::Receiver<Step>),
}

/// What a call in flight yields to its client.
pub enum Step {
    /// A notification the backend sent for the request.
    Note(Bytes),
    /// The end: the final message (an answer, an `InputRequiredResult`, an error).
    Done(Outcome),
}

type Answering = Pin<Box<dyn Future<Output = Bytes> + Send>>;

/// A call in flight at a backend, on its way to an answer.
struct Running {
    relay: Arc<Relay>,
    session: Arc<Session>,
    /// The id the backend's answer will carry (the first request's).
    client_id: String,
    /// The backend speaks the session era (its log notifications are filtered
    /// by the request's `logLevel`, as 2026-07-28 asks).
    bridged: bool,
    handle: Option<StreamHandle>,
    answer: Option<Answering>,
}

impl Running {
    /// Hands the call over (to an answer or to the parked table) so that
    /// dropping `self` no longer cancels it.
    fn take(&mut self) -> (StreamHandle, Answering) {
        (
            self.handle.take().expect("a running call has its stream"),
            self.answer.take().expect("a running call has its answer"),
        )
    }
}

impl Drop for Running {
    /// A client that went away mid-call cancels it (2026-07-28: closing the
    /// response stream is cancellation): the backend gets
    /// `notifications/cancelled` while the request is still known, then the
    /// call is dropped.
    fn drop(&mut self) {
        let (Some(handle), Some(answer)) = (self.handle.take(), self.answer.take()) else {
            return;
        };
        let (relay, session) = (Arc::clone(&self.relay), Arc::clone(&self.session));
        let cancel = format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":{},"reason":"the client closed the request"}}}}"#,
            self.client_id
        );
        tokio::spawn(async move {
            if let Ok(peek) = jsonrpc::peek(cancel.as_bytes()) {
                relay.forward(&session, cancel.as_bytes(), &peek).await;
            }
            drop(answer);
            session.outbox.abandon_request(handle);
        });
    }
}

/// A backend request waiting for the client's input.
struct Waiting {
    /// The key in `inputRequests`/`inputResponses`.
    key: String,
    /// The backend request's raw id.
    id: String,
    /// The backend request without its id: `{"method":..,"params":..}`.
    request: String,
}

/// A call waiting for the client's retry.
struct Parked {
    call: Running,
    waiting: Vec<Waiting>,
    expires: Instant,
}

/// A caller's hidden session on one route (and the answer to its
/// `initialize`), once opened; locked while opening.
type CallerSlot = Arc<tokio::sync::Mutex<Option<(Arc<Session>, Bytes)>>>;

/// The bridge's state.
pub struct Bridge {
    signer: Signer,
    /// The process (as a hidden session) of each (server, caller).
    callers: Mutex<HashMap<(String, String), CallerSlot>>,
    /// The ids of those hidden sessions.
    hidden: Mutex<std::collections::HashSet<Arc<str>>>,
    /// The `subscriptions/listen` hubs, by hidden session.
    hubs: Arc<Mutex<HashMap<Arc<str>, Arc<listen::Hub>>>>,
    /// Calls being driven (in flight and not parked), by hidden session.
    active: Arc<Mutex<HashMap<Arc<str>, usize>>>,
    parked: Mutex<HashMap<String, Parked>>,
    /// Requests the gateway sent a session-era client on a modern backend's
    /// behalf (from its `InputRequiredResult`), by raw id, until answered.
    asked: Mutex<HashMap<String, tokio::sync::oneshot::Sender<Bytes>>>,
    next_asked: std::sync::atomic::AtomicU64,
}

impl Default for Bridge {
    fn default() -> Self {
        Bridge {
            signer: Signer::random(),
            callers: Mutex::default(),
            hidden: Mutex::default(),
            hubs: Arc::default(),
            active: Arc::default(),
            parked: Mutex::default(),
            asked: Mutex::default(),
            next_asked: std::sync::atomic::AtomicU64::new(1),
        }
    }
}

/// Counts a call as active in its session while it lives.
struct Active {
    counts: Arc<Mutex<HashMap<Arc<str>, usize>>>,
    session: Arc<str>,
}

impl Active {
    fn new(counts: &Arc<Mutex<HashMap<Arc<str>, usize>>>, session: &Arc<str>) -> Active {
        *lock(counts).entry(Arc::clone(session)).or_default() += 1;
        Active {
            counts: Arc::clone(counts),
            session: Arc::clone(session),
        }
    }

    /// How many calls of the session are active, this one included.
    fn in_session(&self) -> usize {
        lock(&self.counts).get(&self.session).copied().unwrap_or(0)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts);
        if let Some(n) = counts.get_mut(&self.session) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.session);
            }
        }
    }
}

/// The prefix of the ids of requests the gateway sends clients for a modern
/// backend's input requests (as raw JSON: a string).
const ASKED_ID_PREFIX: &str = "\"mcpgate-input-";

/// How many times one request may come back `input_required` before the
/// gateway gives up on it.
const MAX_INPUT_ROUNDS: usize = 10;

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

/// The gateway's own `initialize` for a caller's process.
fn bridge_initialize(client_info: Option<&str>) -> Bytes {
    let info = client_info.unwrap_or(concat!(
        r#"{"name":"mcpgate","version":""#,
        env!("CARGO_PKG_VERSION"),
        r#""}"#
    ));
    Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","id":0,"method":"initialize","params":{{"protocolVersion":"{BRIDGE_PROTOCOL_VERSION}","capabilities":{{"elicitation":{{"form":{{}},"url":{{}}}},"sampling":{{}},"roots":{{}}}},"clientInfo":{info}}}}}"#
    ))
}

/// `answer` with `members` (`"k":v,...`) added at the start of its result
/// object, unless the result already has `resultType`. Errors pass unchanged.
fn with_result_members(answer: &[u8], members: &str) -> Bytes {
    let Some(result) = jsonrpc::peek(answer).ok().and_then(|p| p.result) else {
        return Bytes::copy_from_slice(answer);
    };
    if !result.get().starts_with('{') || jsonrpc::member(result, "resultType").is_some() {
        return Bytes::copy_from_slice(answer);
    }
    let at = jsonrpc::range_in(answer, result.get()).start + 1;
    let empty = result.get()[1..].trim_start().starts_with('}');
    let mut out = Vec::with_capacity(answer.len() + members.len() + 1);
    out.extend_from_slice(&answer[..at]);
    out.extend_from_slice(members.as_bytes());
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(&answer[at..]);
    Bytes::from(out)
}

/// The members a complete result of `method` gets.
fn complete_members(method: &str) -> &'static str {
    if CACHEABLE.contains(&method) {
        r#""resultType":"complete","ttlMs":0,"cacheScope":"private""#
    } else {
        r#""resultType":"complete""#
    }
}

/// An `initialize` answer for a session-era client, made from a 2026-07-28
/// backend's `server/discover` answer (`discover`, already carrying the
/// client's id): the version the client asked for (if the gateway serves it),
/// the backend's capabilities and instructions, and its `serverInfo`.
pub(crate) fn initialize_from_discover(discover: &[u8], initialize: &jsonrpc::Peek<'_>) -> Bytes {
    let Some(result) = jsonrpc::peek(discover).ok().and_then(|p| p.result) else {
        return Bytes::copy_from_slice(discover);
    };
    let member = |name| jsonrpc::member(result, name).map(RawValue::get);
    let asked = initialize
        .params
        .and_then(|p| jsonrpc::string_member(p, "protocolVersion"));
    let sessions = crate::http::SUPPORTED_VERSIONS;
    let version = asked
        .filter(|v| sessions.contains(&v.as_str()))
        .unwrap_or_else(|| sessions[sessions.len() - 1].to_owned());
    let server_info = member("_meta")
        .and_then(|m| serde_json::from_str::<HashMap<String, Box<RawValue>>>(m).ok())
        .and_then(|mut m| m.remove(SERVER_INFO_META))
        .map_or_else(
            || r#"{"name":"unknown","version":"unknown"}"#.to_owned(),
            |info| info.get().to_owned(),
        );
    let mut out = format!(
        r#"{{"jsonrpc":"2.0","id":{},"result":{{"protocolVersion":"{version}","capabilities":{},"serverInfo":{server_info}"#,
        initialize.id.unwrap_or("null"),
        member("capabilities").unwrap_or("{}"),
    );
    if let Some(instructions) = member("instructions") {
        out.push_str(r#","instructions":"#);
        out.push_str(instructions);
    }
    out.push_str("}}");
    Bytes::from(out)
}

/// `server/discover`, answered from an initialize answer (the backend's, or
/// the unified endpoint's merged one).
fn discover_from_initialize(init: Option<&[u8]>, call: &StatelessCall) -> Outcome {
    let result = init.and_then(|init| jsonrpc::peek(init).ok()?.result);
    let member = |name| {
        result
            .and_then(|r| jsonrpc::member(r, name))
            .map(RawValue::get)
    };
    let mut out = format!(
        r#"{{"jsonrpc":"2.0","id":{},"result":{{{},"supportedVersions":{},"capabilities":{}"#,
        call.id,
        complete_members("server/discover"),
        serde_json::to_string(&MODERN_VERSIONS).expect("strings serialise"),
        member("capabilities").unwrap_or("{}"),
    );
    if let Some(instructions) = member("instructions") {
        out.push_str(r#","instructions":"#);
        out.push_str(instructions);
    }
    if let Some(info) = member("serverInfo") {
        out.push_str(&format!(r#","_meta":{{"{SERVER_INFO_META}":{info}}}"#));
    }
    out.push_str("}}");
    Outcome::Answer(Bytes::from(out))
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

impl Relay {
    /// Serves one stateless request on `server`'s routed endpoint, or (`None`)
    /// on the unified endpoint.
    pub async fn stateless(
        self: &Arc<Self>,
        server: Option<&Arc<ServerConfig>>,
        api_caller: Option<Arc<str>>,
        message: Bytes,
        call: StatelessCall,
    ) -> Outcome {
        let caller = caller_of(api_caller.as_ref(), &call);
        let (session, init) = match self
            .caller_session(server, &caller, api_caller, &call)
            .await
        {
            Ok(opened) => opened,
            Err(outcome) => return outcome,
        };
        // A routed process may have been relaunched since: its current handshake counts.
        let (init, modern_backend) = match server {
            None => (Some(init), false),
            Some(server) => match self.conn_for(&session, server).await {
                Ok((conn, _)) => (
                    conn.init_result(),
                    conn.generation() == Generation::Stateless,
                ),
                Err(error) => {
                    return Outcome::Answer(crate::relay::launch_error_response(
                        Some(&call.id),
                        server,
                        &error,
                    ));
                }
            },
        };
        if call.method == "subscriptions/listen" {
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
        if call.method == "server/discover" {
            return discover_from_initialize(init.as_deref(), &call);
        }
        // A session-era backend gets the request without the 2026-07-28
        // envelope (some refuse it on a session-era connection); the rest of
        // `_meta` (a progress token, say) stays.
        let message = match jsonrpc::peek(&message) {
            Ok(peek) => jsonrpc::without_meta_members(&message, &peek, ENVELOPE_PREFIX)
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

    /// Drives a call in a task of its own and answers with its first step: the
    /// final message, or (for a client that accepts a stream) the backend's
    /// first notification and then the rest. A client that goes away before
    /// the end cancels the call (its receiver closes; see `Running`).
    async fn run(
        self: &Arc<Self>,
        running: Running,
        expected: Binding,
        call: StatelessCall,
    ) -> Outcome {
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let relay = Arc::clone(self);
        tokio::spawn(async move {
            let outcome = tokio::select! {
                outcome = relay.drive(running, &expected, &call, &tx) => outcome,
                () = tx.closed() => return,
            };
            let _ = tx.send(Step::Done(outcome)).await;
        });
        match rx.recv().await {
            Some(Step::Done(outcome)) => outcome,
            Some(Step::Note(first)) => Outcome::Stream(first, rx),
            None => Outcome::Answer(jsonrpc::error_response(
                None,
                jsonrpc::INTERNAL_ERROR,
                "the call ended without an answer",
                None,
            )),
        }
    }

    /// The hidden session holding `caller`'s process on `server` (or its
    /// unified session, `None`), opened on first use (once, however many first
    /// requests arrive at once), with the answer to its `initialize`.
    async fn caller_session(
        &self,
        server: Option<&Arc<ServerConfig>>,
        caller: &str,
        api_caller: Option<Arc<str>>,
        call: &StatelessCall,
    ) -> Result<(Arc<Session>, Bytes), Outcome> {
        let route = server.map_or_else(String::new, |s| s.id.clone());
        let slot = lock(&self.bridge.callers)
            .entry((route, caller.to_owned()))
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some((session, init)) = slot.as_ref()
            && self.sessions.get(&session.id).is_some()
        {
            return Ok((Arc::clone(session), init.clone()));
        }
        let init = bridge_initialize(call.client_info.as_deref());
        let peek = jsonrpc::peek(&init).expect("the bridge's initialize is valid JSON-RPC");
        let outcome = match server {
            Some(server) => {
                self.initialize(server, api_caller, init.clone(), &peek)
                    .await
            }
            None => {
                self.unified_initialize(api_caller, init.clone(), &peek)
                    .await
            }
        };
        match outcome {
            InitOutcome::Created { session, response } => {
                tracing::info!(endpoint = session.endpoint_name(), caller, session = %session.id,
                    "stateless caller's process opened");
                lock(&self.bridge.hidden).insert(Arc::clone(&session.id));
                *slot = Some((Arc::clone(&session), response.clone()));
                Ok((session, response))
            }
            InitOutcome::Failed { response } => Err(Outcome::Answer(
                with_id(&response, Some(&call.id)).unwrap_or(response),
            )),
            InitOutcome::Busy => Err(Outcome::Busy),
        }
    }

    /// Starts a new call at the backend.
    fn start(
        self: &Arc<Self>,
        session: &Arc<Session>,
        message: Bytes,
        call: &StatelessCall,
        bridged: bool,
    ) -> Running {
        let progress_token = jsonrpc::peek(&message).ok().and_then(|p| {
            jsonrpc::request_progress_token(&message, p.params?).map(|(t, _)| t.to_owned())
        });
        let handle = session.outbox.open_request(progress_token);
        let (relay, in_task) = (Arc::clone(self), Arc::clone(session));
        let answer: Answering = Box::pin(async move {
            match jsonrpc::peek(&message) {
                Ok(peek) => relay.request(&in_task, &message, &peek).await,
                Err(e) => jsonrpc::error_response(None, e.code(), &e.to_string(), None),
            }
        });
        Running {
            relay: Arc::clone(self),
            session: Arc::clone(session),
            client_id: call.id.clone(),
            bridged,
            handle: Some(handle),
            answer: Some(answer),
        }
    }

    /// Picks a parked call back up with the client's input: each waiting
    /// backend request is answered from `inputResponses`; those the client left
    /// out are asked again.
    async fn resume(
        &self,
        token: &str,
        expected: &Binding,
        call: &StatelessCall,
    ) -> Result<(Running, Vec<Waiting>), Outcome> {
        let parked_id = self.bridge.signer.verify(token, expected).map_err(|why| {
            tracing::info!(caller = %expected.caller, server = %expected.server, reason = %why,
                "requestState refused");
            refused(
                &call.id,
                jsonrpc::INVALID_PARAMS,
                &format!("Invalid params: {why}"),
                None,
            )
        })?;
        let Some(parked) = lock(&self.bridge.parked).remove(&parked_id) else {
            return Err(refused(
                &call.id,
                jsonrpc::INVALID_PARAMS,
                "Invalid params: requestState was already used, or its call has ended",
                None,
            ));
        };
        let responses: HashMap<String, Box<RawValue>> = call
            .input_responses
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok())
            .unwrap_or_default();
        let mut left = Vec::new();
        for waiting in parked.waiting {
            match responses.get(&waiting.key) {
                Some(result) => {
                    let answer = format!(
                        r#"{{"jsonrpc":"2.0","id":{},"result":{}}}"#,
                        waiting.id,
                        result.get()
                    );
                    let peek = jsonrpc::peek(answer.as_bytes()).expect("built from valid JSON");
                    let session = Arc::clone(&parked.call.session);
                    self.forward(&session, answer.as_bytes(), &peek).await;
                }
                None => left.push(waiting),
            }
        }
        Ok((parked.call, left))
    }

    /// Runs a call until it is answered or needs the client's input.
    async fn drive(
        &self,
        mut running: Running,
        expected: &Binding,
        call: &StatelessCall,
        notes: &tokio::sync::mpsc::Sender<Step>,
    ) -> Outcome {
        let mut waiting: Vec<Waiting> = Vec::new();
        let active = Active::new(&self.bridge.active, &running.session.id);
        loop {
            let (handle, answer) = (
                running.handle.as_mut().expect("running"),
                running.answer.as_mut().expect("running"),
            );
            let event = tokio::select! {
                biased;
                event = handle.events.recv() => event,
                response = answer => {
                    let (handle, _) = running.take();
                    running.session.outbox.abandon_request(handle);
                    let answer = with_id(&response, Some(&call.id)).unwrap_or(response);
                    return final_outcome(with_result_members(&answer, complete_members(&call.method)));
                }
            };
            let Some(event) = event else { continue };
            let Ok(peek) = jsonrpc::peek(&event.message) else {
                continue;
            };
            if peek.kind != Kind::Request {
                // Progress and logs of this request, for a client that takes a
                // stream (a JSON-only client cannot get them).
                let wanted = !running.bridged
                    || peek.method.as_deref() != Some("notifications/message")
                    || log_level_admits(call.log_level.as_deref(), peek.params);
                if call.accepts_stream && wanted {
                    let _ = notes.send(Step::Note(event.message.clone())).await;
                }
                continue;
            }
            let method = peek.method.as_deref().unwrap_or_default();
            let backend_id = peek.id.unwrap_or("null").to_owned();
            let needs = INPUT_METHODS
                .iter()
                .find(|(m, _)| *m == method)
                .map(|(_, c)| *c);
            if needs.is_some() && active.in_session() > 1 {
                // stdio says nothing of which call a backend request belongs
                // to; with several calls of this caller in flight the gateway
                // does not guess.
                let session = Arc::clone(&running.session);
                self.answer_backend_error(
                    &session,
                    &backend_id,
                    "several calls of this caller are in flight: the gateway cannot tell which one this request belongs to",
                )
                .await;
                continue;
            }
            let declared = needs.is_some_and(|cap| {
                serde_json::from_str::<HashMap<String, serde::de::IgnoredAny>>(&call.capabilities)
                    .is_ok_and(|caps| caps.contains_key(cap))
            });
            match needs {
                Some(_) if declared => {
                    let request = match peek.params {
                        Some(params) => {
                            format!(r#"{{"method":"{method}","params":{}}}"#, params.get())
                        }
                        None => format!(r#"{{"method":"{method}"}}"#),
                    };
                    waiting.push(Waiting {
                        key: format!("input-{}", waiting.len() + 1),
                        id: backend_id,
                        request,
                    });
                    // Requests the backend sends together are asked together.
                    if handle.events.is_empty() {
                        tokio::time::sleep(INPUT_BATCH_WAIT).await;
                        let handle = running.handle.as_mut().expect("running");
                        if handle.events.is_empty() {
                            return self.park(running, waiting, expected, call);
                        }
                    }
                }
                Some(cap) => {
                    let session = Arc::clone(&running.session);
                    self.answer_backend_error(
                        &session,
                        &backend_id,
                        &format!("the client did not declare the {cap} capability"),
                    )
                    .await;
                    // The call goes on without its client.
                    let (handle, answer) = running.take();
                    tokio::spawn(async move {
                        let _ = answer.await;
                        session.outbox.abandon_request(handle);
                    });
                    return refused(
                        &call.id,
                        jsonrpc::MISSING_CLIENT_CAPABILITY,
                        &format!("Missing required client capability: {cap}"),
                        Some(serde_json::json!({ "requiredCapabilities": { cap: {} } })),
                    );
                }
                None if method == "ping" => {
                    let pong = format!(r#"{{"jsonrpc":"2.0","id":{backend_id},"result":{{}}}}"#);
                    let peek = jsonrpc::peek(pong.as_bytes()).expect("built from valid JSON");
                    let session = Arc::clone(&running.session);
                    self.forward(&session, pong.as_bytes(), &peek).await;
                }
                None => {
                    let session = Arc::clone(&running.session);
                    self.answer_backend_error(
                        &session,
                        &backend_id,
                        &format!("{method} cannot reach a 2026-07-28 client"),
                    )
                    .await;
                }
            }
        }
    }

    /// A session-era client's answer to a request the gateway asked it on a
    /// modern backend's behalf: handed to the waiting request, not forwarded.
    /// False for any other message.
    pub(crate) fn take_asked_answer(&self, message: &[u8], peek: &jsonrpc::Peek<'_>) -> bool {
        let Some(id) = peek.id.filter(|id| id.starts_with(ASKED_ID_PREFIX)) else {
            return false;
        };
        if let Some(waiter) = lock(&self.bridge.asked).remove(id) {
            let _ = waiter.send(Bytes::copy_from_slice(message));
        }
        true
    }

    /// A modern backend answered a session-era client's request with an
    /// `InputRequiredResult`: its input requests go to the client as ordinary
    /// server-to-client requests (on the request's stream), and the request is
    /// retried with the answers (and the backend's `requestState`) until the
    /// backend completes it. Stateless callers get the result as it is.
    pub(crate) async fn complete_input_required(
        &self,
        session: &Arc<Session>,
        server: &ServerConfig,
        conn: &crate::launcher::BackendConn,
        message: &[u8],
        peek: &jsonrpc::Peek<'_>,
        mut answer: Bytes,
    ) -> Result<Bytes, crate::launcher::ConnFailure> {
        if lock(&self.bridge.hidden).contains(&session.id) {
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
            let mut responses = Vec::with_capacity(requests.len());
            for (key, request) in requests {
                let (method, params) =
                    match serde_json::from_str::<HashMap<String, Box<RawValue>>>(request.get()) {
                        Ok(mut fields) => (fields.remove("method"), fields.remove("params")),
                        Err(_) => (None, None),
                    };
                let Some(method) = method else { continue };
                let n = self
                    .bridge
                    .next_asked
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let id = format!("{ASKED_ID_PREFIX}{n}\"");
                let ask = match params {
                    Some(params) => format!(
                        r#"{{"jsonrpc":"2.0","id":{id},"method":{},"params":{}}}"#,
                        method.get(),
                        params.get()
                    ),
                    None => format!(r#"{{"jsonrpc":"2.0","id":{id},"method":{}}}"#, method.get()),
                };
                let (tx, rx) = tokio::sync::oneshot::channel();
                lock(&self.bridge.asked).insert(id.clone(), tx);
                use crate::launcher::ServerMessageSink as _;
                session.outbox.deliver(Bytes::from(ask), Kind::Request);
                let reply = tokio::time::timeout(server.tool_timeout, rx).await;
                lock(&self.bridge.asked).remove(&id);
                let Ok(Ok(reply)) = reply else {
                    return Err(crate::launcher::ConnFailure::Timeout(server.tool_timeout));
                };
                let reply_peek = jsonrpc::peek(&reply).ok();
                match reply_peek.as_ref().and_then(|p| p.result) {
                    Some(value) => responses.push(format!(
                        "{}:{}",
                        serde_json::to_string(&key).expect("string"),
                        value.get()
                    )),
                    // The client refused: its error is the request's answer.
                    None => {
                        return Ok(with_id(&reply, peek.id).unwrap_or(reply));
                    }
                }
            }
            let mut members = format!(r#""inputResponses":{{{}}}"#, responses.join(","));
            if let Some(state) = jsonrpc::member(result, "requestState") {
                members.push_str(r#","requestState":"#);
                members.push_str(state.get());
            }
            let retry = jsonrpc::with_params_members(message, peek, &members);
            let retry_peek = jsonrpc::peek(&retry).map_err(|e| {
                crate::launcher::ConnFailure::WriteFailed(format!("cannot build the retry: {e}"))
            })?;
            answer =
                Box::pin(self.send_request(session, server, conn, &retry, &retry_peek)).await?;
        }
        Ok(answer)
    }

    /// Answers a backend's request of `session` with an error.
    async fn answer_backend_error(&self, session: &Arc<Session>, backend_id: &str, message: &str) {
        let error =
            jsonrpc::error_response(Some(backend_id), jsonrpc::METHOD_NOT_FOUND, message, None);
        if let Ok(peek) = jsonrpc::peek(&error) {
            self.forward(session, &error, &peek).await;
        }
    }

    /// Parks a call and answers with an `InputRequiredResult`.
    fn park(
        &self,
        running: Running,
        waiting: Vec<Waiting>,
        expected: &Binding,
        call: &StatelessCall,
    ) -> Outcome {
        let ttl = self.config.gateway.input_required_timeout;
        let parked_id = random_hex(16);
        let token = self.bridge.signer.sign(
            &Binding {
                parked: parked_id.clone(),
                ..expected.clone()
            },
            ttl,
        );
        let requests: Vec<String> = waiting
            .iter()
            .map(|w| {
                format!(
                    "{}:{}",
                    serde_json::to_string(&w.key).expect("string"),
                    w.request
                )
            })
            .collect();
        let answer = format!(
            r#"{{"jsonrpc":"2.0","id":{},"result":{{"resultType":"input_required","inputRequests":{{{}}},"requestState":{}}}}}"#,
            call.id,
            requests.join(","),
            serde_json::to_string(&token).expect("string"),
        );
        lock(&self.bridge.parked).insert(
            parked_id,
            Parked {
                call: running,
                waiting,
                expires: Instant::now() + ttl,
            },
        );
        Outcome::Answer(Bytes::from(answer))
    }

    /// Drops the parked calls whose client did not come back in time: the call
    /// is cancelled at the backend and its waiting requests answered with an error.
    pub(crate) fn drop_expired_parked_calls(&self) {
        let now = Instant::now();
        let expired: Vec<Parked> = {
            let mut parked = lock(&self.bridge.parked);
            let stale: Vec<String> = parked
                .iter()
                .filter(|(_, p)| p.expires <= now)
                .map(|(id, _)| id.clone())
                .collect();
            stale.iter().filter_map(|id| parked.remove(id)).collect()
        };
        for stale in expired {
            let relay = Arc::clone(&stale.call.relay);
            let session = Arc::clone(&stale.call.session);
            let ids: Vec<String> = stale.waiting.iter().map(|w| w.id.clone()).collect();
            tracing::info!(session = %session.id, "a call waiting for its client's input expired");
            // Dropping the call cancels it at the backend (see `Running`).
            drop(stale);
            tokio::spawn(async move {
                for id in ids {
                    relay
                        .answer_backend_error(&session, &id, "the client did not answer in time")
                        .await;
                }
            });
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
            &with_result_members(answer, complete_members("tools/list"))[..],
            &br#"{"jsonrpc":"2.0","id":7,"result":{"resultType":"complete","ttlMs":0,"cacheScope":"private","tools":[{"name":"x","z":1e400}]}}"#[..]
        );
        let empty = br#"{"jsonrpc":"2.0","id":7,"result":{ }}"#;
        assert_eq!(
            &with_result_members(empty, complete_members("tools/call"))[..],
            &br#"{"jsonrpc":"2.0","id":7,"result":{"resultType":"complete" }}"#[..]
        );
        let typed = br#"{"jsonrpc":"2.0","id":7,"result":{"resultType":"complete"}}"#;
        assert_eq!(&with_result_members(typed, "\"x\":1")[..], &typed[..]);
        let error = br#"{"jsonrpc":"2.0","id":7,"error":{"code":1,"message":"m"}}"#;
        assert_eq!(&with_result_members(error, "\"x\":1")[..], &error[..]);
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
