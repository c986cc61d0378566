//! The routed relay: what happens to a client message once HTTP has accepted it.
//!
//! Owns the session-era semantics of `/mcp/<serverID>`: `initialize` creates a
//! session (and, per session or once per shared server, its backend process),
//! requests are forwarded to that session's process and answered (or given a
//! JSON-RPC error that says what went wrong), notifications and client
//! responses are forwarded, and sessions end on DELETE, when idle, and at
//! shutdown. It speaks in raw message bytes and outcomes, never in HTTP
//! statuses or headers (that is `http`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;

use crate::config::{Config, ServerConfig, SessionMode};
use crate::jsonrpc::{self, Peek};
use crate::launcher::{
    BackendConn, ConnFailure, LaunchError, PoolKey, ServerMessageSink, SessionPool,
};
use crate::protocol::{Era, Version, meta, method};
use crate::session::{Endpoint, Outbox, Session, SessionStore, mint_session_id, pool_key};
use crate::shared::SharedRoute;

/// The result of an `initialize`.
pub enum InitOutcome {
    /// A session was created; `response` is the backend's own initialize result.
    Created {
        session: Arc<Session>,
        response: Bytes,
    },
    /// No session: `response` is a JSON-RPC error saying why.
    Failed { response: Bytes },
    /// `max_sessions` are open: try again later.
    Busy,
}

/// First wait before retrying a "not ready" answer; it doubles up to [`READY_BACKOFF_MAX`].
const READY_BACKOFF_START: Duration = Duration::from_millis(50);
const READY_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Sessions, the pool, and the rules between them.
pub struct Relay {
    /// The config as loaded at start. Its `[gateway]` part is in force for
    /// the gateway's whole life; its servers are not after a reload: the live
    /// server table is [`Relay::servers`].
    pub config: Arc<Config>,
    /// The servers in force (replaced by a reload).
    servers: std::sync::RwLock<Arc<Vec<Arc<ServerConfig>>>>,
    pub sessions: SessionStore,
    pub pool: SessionPool,
    /// Sessions open or being initialised, for admission control.
    admitted: Arc<AtomicUsize>,
    /// The routes of the servers in shared mode, by server id (made on first use).
    shared: std::sync::Mutex<HashMap<String, Arc<SharedRoute>>>,
    /// What the backends answered to their latest handshakes (unified endpoint).
    pub(crate) backend_info: crate::unified::BackendInfo,
    /// Stateless callers' processes and their parked calls.
    pub(crate) bridge: crate::bridge::Bridge,
    audit: Option<crate::audit::AuditLog>,
}

impl Relay {
    pub fn new(config: Arc<Config>, audit: Option<crate::audit::AuditLog>) -> Relay {
        let pool = SessionPool::new(config.gateway.stop_grace, config.gateway.max_message_bytes);
        Relay {
            servers: std::sync::RwLock::new(Arc::new(config.servers.clone())),
            config,
            sessions: SessionStore::default(),
            pool,
            admitted: Arc::new(AtomicUsize::new(0)),
            shared: std::sync::Mutex::default(),
            backend_info: crate::unified::BackendInfo::default(),
            bridge: crate::bridge::Bridge::default(),
            audit,
        }
    }

    pub(crate) fn shared_route(&self, server: &ServerConfig) -> Option<Arc<SharedRoute>> {
        if server.session_mode != SessionMode::Shared {
            return None;
        }
        let mut shared = self
            .shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Some(Arc::clone(shared.entry(server.id.clone()).or_default()))
    }

    /// The servers in force, in config order.
    pub fn servers(&self) -> Arc<Vec<Arc<ServerConfig>>> {
        Arc::clone(
            &self
                .servers
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Replaces the servers in force (a reload).
    pub(crate) fn set_servers(&self, servers: Vec<Arc<ServerConfig>>) {
        *self
            .servers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(servers);
    }

    /// The server in force with this id.
    pub fn server(&self, id: &str) -> Option<Arc<ServerConfig>> {
        self.servers().iter().find(|s| s.id == id).cloned()
    }

    /// Takes an admission slot for a new session, or `None` at `max_sessions`.
    /// Until disarmed, dropping it gives the slot back and evicts `keys`.
    pub(crate) fn admit(&self, keys: Vec<PoolKey>) -> Option<PendingSession> {
        let max = self.config.gateway.max_sessions;
        self.admitted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(PendingSession {
            pool: self.pool.clone(),
            keys,
            admitted: Arc::clone(&self.admitted),
            armed: true,
        })
    }

    /// Registers a new session (and joins it to the shared routes it uses).
    pub(crate) fn register(&self, session: &Arc<Session>, pending: PendingSession) {
        session.touch();
        for server in self.servers().iter() {
            let uses = match session.server() {
                Some(own) => own.id == server.id,
                None => true,
            };
            if uses && let Some(route) = self.shared_route(server) {
                route.join(Arc::clone(session));
            }
        }
        self.sessions.insert(Arc::clone(session));
        // The session now holds the slot; `end_session` gives it back.
        pending.disarm();
        tracing::info!(endpoint = session.endpoint_name(), session = %session.id, "session created");
    }

    /// Starts a session on `server` with the client's `initialize` request.
    pub async fn initialize(
        &self,
        server: &Arc<ServerConfig>,
        caller: Option<Arc<str>>,
        message: Bytes,
        peek: &Peek<'_>,
    ) -> InitOutcome {
        let id: Arc<str> = Arc::from(mint_session_id(self.config.gateway.instance_tag.as_deref()));
        let key = pool_key(server, &id);
        // Until the session is registered, giving up (a client that disconnects)
        // releases the slot and stops whatever was started for it alone.
        let own_process = server.session_mode == SessionMode::PerSession;
        let Some(pending) = self.admit(if own_process {
            vec![key.clone()]
        } else {
            vec![]
        }) else {
            tracing::warn!(server = %server.id, "max_sessions reached; initialize refused");
            return InitOutcome::Busy;
        };
        let outbox = Arc::new(Outbox::new(self.config.gateway.sse_replay_events));
        let launched = self
            .pool
            .connection(&key, server, &message, self.routed_sink(server, &outbox))
            .await;
        let launched = match launched {
            Ok(launched) => launched,
            Err(error) => {
                return InitOutcome::Failed {
                    response: launch_error_response(peek.id, server, &error),
                };
            }
        };
        // A shared process was initialised once, by the session that started it;
        // later sessions get that answer with their own id.
        let response = match launched.init_response {
            Some(response) => response,
            None => match launched
                .conn
                .init_result()
                .and_then(|r| with_id(&r, peek.id))
            {
                Some(response) => response,
                None => {
                    return InitOutcome::Failed {
                        response: jsonrpc::error_response(
                            peek.id,
                            jsonrpc::INTERNAL_ERROR,
                            &format!("backend `{}` has no initialize result to share", server.id),
                            None,
                        ),
                    };
                }
            },
        };
        // A 2026-07-28 backend answered `server/discover`; the client asked `initialize`.
        let response = if launched.conn.era() == Era::Stateless {
            crate::bridge::initialize_from_discover(&response, peek)
        } else {
            response
        };
        let protocol_version = jsonrpc::peek(&response)
            .ok()
            .and_then(|p| {
                p.result
                    .and_then(|r| jsonrpc::string_member(r, "protocolVersion"))
            })
            .unwrap_or_else(|| Version::ASSUMED.as_str().to_owned());
        let session = Arc::new(Session::new(
            id,
            Endpoint::Routed(Arc::clone(server)),
            caller,
            server.session_idle_timeout,
            message,
            protocol_version,
            outbox,
        ));
        self.register(&session, pending);
        InitOutcome::Created { session, response }
    }

    /// Where a routed session's backend messages go.
    fn routed_sink(
        &self,
        server: &ServerConfig,
        outbox: &Arc<Outbox>,
    ) -> Arc<dyn ServerMessageSink> {
        match self.shared_route(server) {
            Some(route) => route.clone(),
            None => outbox.clone(),
        }
    }

    /// The live connection of `session` to `server`, started (with the session's
    /// `initialize` replayed) if there is none. Also returns the backend's
    /// initialize answer when this call started it.
    pub(crate) async fn conn_for(
        &self,
        session: &Arc<Session>,
        server: &Arc<ServerConfig>,
    ) -> Result<(Arc<BackendConn>, Option<Bytes>), LaunchError> {
        let sink = match (session.unified(), self.shared_route(server)) {
            (_, Some(route)) => route.clone() as Arc<dyn ServerMessageSink>,
            (Some(_), None) => crate::unified::sink(session, server),
            (None, None) => session.outbox.clone(),
        };
        self.pool
            .connection(
                &session.key_for(server),
                server,
                &session.init_message,
                sink,
            )
            .await
            .map(|launched| (launched.conn, launched.init_response))
    }

    /// Forwards a request and returns the answer: the backend's own, or a JSON-RPC
    /// error naming what failed.
    pub async fn request(&self, session: &Arc<Session>, message: &[u8], peek: &Peek<'_>) -> Bytes {
        use tracing::Instrument as _;
        let _in_flight = session.begin_request();
        let started = Instant::now();
        // At debug level, every event of the request carries these fields.
        let span = tracing::debug_span!("request", endpoint = session.endpoint_name(),
            session = %session.id, method = peek.method.as_deref().unwrap_or_default(),
            id = peek.id.unwrap_or("null"));
        let answer = match &session.endpoint {
            Endpoint::Routed(server) => {
                self.routed_request(session, server, message, peek)
                    .instrument(span)
                    .await
            }
            Endpoint::Unified(_) => {
                self.unified_request(session, message, peek)
                    .instrument(span)
                    .await
            }
        };
        if let Some(audit) = &self.audit {
            audit.record(&crate::audit::Record {
                caller: session.caller.as_deref(),
                session: &session.id,
                endpoint: session.endpoint_name(),
                server: session.server().map(|s| s.id.as_str()),
                request: peek,
                answer: &answer,
                took: started.elapsed(),
            });
        }
        answer
    }

    async fn routed_request(
        &self,
        session: &Arc<Session>,
        server: &Arc<ServerConfig>,
        message: &[u8],
        peek: &Peek<'_>,
    ) -> Bytes {
        let method = peek.method.as_deref().unwrap_or_default();
        let filtered = server.filters_tools();
        if filtered
            && method == "tools/call"
            && let Some(name) = peek.params.and_then(|p| jsonrpc::string_member(p, "name"))
            && !crate::unified::names::allowed(&server.tools, &name)
        {
            return tool_not_allowed(peek.id, server, &name);
        }
        let conn = match self.conn_for(session, server).await {
            Ok((conn, _)) => conn,
            Err(error) => return launch_error_response(peek.id, server, &error),
        };
        match self
            .send_request(session, server, &conn, message, peek)
            .await
        {
            Ok(answer) if filtered && method == "tools/list" => {
                crate::unified::filter_tools(&answer, server)
            }
            Ok(answer) => answer,
            Err(failure) => failure_response(peek.id, server, &failure),
        }
    }

    /// Sends one request of `session` to `server`'s connection: progress tokens
    /// made unique for a shared process, "not ready" answers retried.
    pub(crate) async fn send_request(
        &self,
        session: &Arc<Session>,
        server: &ServerConfig,
        conn: &BackendConn,
        message: &[u8],
        peek: &Peek<'_>,
    ) -> Result<Bytes, ConnFailure> {
        // A 2026-07-28 backend needs `_meta` on every request: a session-era
        // client's requests get the session's.
        if conn.era() == Era::Stateless
            && peek
                .params
                .and_then(|p| jsonrpc::member(p, "_meta"))
                .is_none_or(|m| jsonrpc::member(m, meta::PROTOCOL_VERSION).is_none())
        {
            let meta = crate::launcher::handshake::modern_meta(&session.init_message);
            let with_meta = jsonrpc::with_meta_members(message, peek, &meta);
            let peek = jsonrpc::peek(&with_meta).map_err(|e| {
                ConnFailure::WriteFailed(format!("cannot add _meta to the request: {e}"))
            })?;
            return Box::pin(self.send_request(session, server, conn, &with_meta, &peek)).await;
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
            Some((bytes, p)) => request_when_ready(conn, &session.id, bytes, p, server).await,
            None => request_when_ready(conn, &session.id, message, peek, server).await,
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
            Ok(answer) if conn.era() == Era::Stateless => {
                self.complete_input_required(session, server, conn, message, peek, answer)
                    .await
            }
            other => other,
        }
    }

    /// Forwards a client notification (or a client's answer to a backend request).
    pub async fn forward(&self, session: &Arc<Session>, message: &[u8], peek: &Peek<'_>) {
        let _in_flight = session.begin_request();
        // The gateway sent `notifications/initialized` itself right after the
        // handshake (it must, on every relaunch), so the client's copy is dropped.
        if peek.method.as_deref() == Some(method::INITIALIZED)
            || (peek.kind == jsonrpc::Kind::Response
                && self.take_asked_answer(session, message, peek))
        {
            return;
        }
        match &session.endpoint {
            Endpoint::Routed(server) => {
                let conn = match self.conn_for(session, server).await {
                    Ok((conn, _)) => conn,
                    Err(error) => {
                        tracing::warn!(server = %server.id, session = %session.id, %error,
                            "client message not forwarded: backend unavailable");
                        return;
                    }
                };
                forward_to(session, server, &conn, message, peek).await;
            }
            Endpoint::Unified(_) => self.unified_forward(session, message, peek).await,
        }
    }

    /// Ends a session and stops its backends (a shared backend when its last
    /// session ends). Returns false for an unknown session.
    pub async fn end_session(&self, id: &str, reason: &'static str) -> bool {
        let Some(session) = self.sessions.remove(id) else {
            return false;
        };
        self.forget_stateless_caller(id);
        self.admitted.fetch_sub(1, Ordering::AcqRel);
        session.outbox.close();
        let servers: Vec<Arc<ServerConfig>> = match session.server() {
            Some(server) => vec![Arc::clone(server)],
            None => self.servers().iter().cloned().collect(),
        };
        let stops = servers.into_iter().filter_map(|server| {
            let last = match self.shared_route(&server) {
                Some(route) => route.leave(id) == 0,
                None => true,
            };
            let key = pool_key(&server, &session.id);
            last.then_some(async move { self.pool.evict(&key, reason).await })
        });
        futures_util::future::join_all(stops).await;
        tracing::info!(endpoint = session.endpoint_name(), session = %session.id, reason, "session ended");
        true
    }

    /// Ends every session that has been idle too long.
    pub async fn end_idle_sessions(&self) -> usize {
        let idle = self.sessions.idle();
        let ended = idle.len();
        let stops = idle.iter().map(|s| self.end_session(&s.id, "idle timeout"));
        futures_util::future::join_all(stops).await;
        ended
    }

    /// Ends every open SSE stream (first step of shutdown); sessions stay.
    pub fn close_streams(&self) {
        for session in self.sessions.all() {
            session.outbox.close();
        }
    }

    /// Ends every session and stops every backend (gateway shutdown).
    pub async fn shutdown(&self) {
        for session in self.sessions.drain() {
            session.outbox.close();
        }
        self.pool.shutdown().await;
    }

    /// Runs the idle sweep every `cleanup_interval` until the task is dropped.
    pub async fn sweep_idle_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.config.gateway.cleanup_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let ended = self.end_idle_sessions().await;
            if ended > 0 {
                tracing::info!(ended, "idle sessions ended");
            }
            self.drop_expired_parked_calls();
        }
    }
}

/// `answer` with its id replaced by `id` (raw JSON).
pub(crate) fn with_id(answer: &[u8], id: Option<&str>) -> Option<Bytes> {
    let range = jsonrpc::peek(answer).ok()?.id_range?;
    Some(Bytes::from(jsonrpc::splice(
        answer,
        range,
        id.unwrap_or("null").as_bytes(),
    )))
}

/// A session being initialised: dropped before it is registered, it gives
/// back its admission slot and stops the backends started for it alone.
pub(crate) struct PendingSession {
    pool: SessionPool,
    /// Keys to evict (never a shared process's, which other sessions use).
    keys: Vec<PoolKey>,
    admitted: Arc<AtomicUsize>,
    armed: bool,
}

impl PendingSession {
    /// Adds a key to evict if the session is never registered.
    pub(crate) fn also_evict(&mut self, key: PoolKey) {
        self.keys.push(key);
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for PendingSession {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.admitted.fetch_sub(1, Ordering::AcqRel);
        let (pool, keys) = (self.pool.clone(), std::mem::take(&mut self.keys));
        if !keys.is_empty() {
            tokio::spawn(async move {
                for key in keys {
                    pool.evict(&key, "initialize did not complete").await;
                }
            });
        }
    }
}

/// Forwards a client notification or response to one backend connection;
/// a cancellation's request id is mapped to the connection's own.
pub(crate) async fn forward_to(
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

/// The answer to a call of a tool the server's allow-list hides.
pub(crate) fn tool_not_allowed(id: Option<&str>, server: &ServerConfig, name: &str) -> Bytes {
    jsonrpc::error_response(
        id,
        jsonrpc::INVALID_PARAMS,
        &format!("tool `{name}` is not allowed on server `{}`", server.id),
        None,
    )
}

/// Sends a request, and while the backend answers with an error matching one of
/// the server's `not_ready_patterns`, sends it again with backoff until
/// `ready_timeout`; then its answer, whatever it is, goes to the client.
async fn request_when_ready(
    conn: &BackendConn,
    owner: &Arc<str>,
    message: &[u8],
    peek: &Peek<'_>,
    server: &ServerConfig,
) -> Result<Bytes, ConnFailure> {
    let id_range = peek.id_range.clone().expect("requests have ids");
    let deadline = Instant::now() + server.ready_timeout;
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

fn stderr_data(tail: &[String]) -> serde_json::Value {
    json!(tail)
}

/// The JSON-RPC error a client gets when its backend could not be started.
pub(crate) fn launch_error_response(
    id: Option<&str>,
    server: &ServerConfig,
    error: &LaunchError,
) -> Bytes {
    crate::metrics::error(match error {
        LaunchError::Spawn { .. } => "launch_spawn",
        LaunchError::Handshake(_) => "launch_handshake",
        LaunchError::StartupTimeout { .. } => "launch_startup_timeout",
        LaunchError::CrashLoop { .. } => "launch_crash_loop",
        LaunchError::Refused(_) => "launch_refused",
        LaunchError::Evicted => "launch_evicted",
    });
    if let LaunchError::Refused(answer) = error
        && let Some(answer) = with_id(answer, id)
    {
        // The backend's own refusal is the most precise answer there is.
        return answer;
    }
    jsonrpc::error_response(
        id,
        jsonrpc::INTERNAL_ERROR,
        &format!("backend `{}` could not be started: {error}", server.id),
        Some(json!({ "server": server.id, "stderrTail": stderr_data(error.stderr_tail()) })),
    )
}

/// The JSON-RPC error a client gets when its request got no answer.
pub(crate) fn failure_response(
    id: Option<&str>,
    server: &ServerConfig,
    failure: &ConnFailure,
) -> Bytes {
    crate::metrics::error(match failure {
        ConnFailure::Exited { .. } => "backend_exited",
        ConnFailure::StdoutClosed { .. } => "backend_stdout_closed",
        ConnFailure::WriteFailed(_) => "backend_write_failed",
        ConnFailure::Timeout(_) => "backend_timeout",
        ConnFailure::Stopped(_) => "backend_stopped",
        ConnFailure::TooManyErrors(_) => "backend_too_many_errors",
        ConnFailure::MessageTooLarge { .. } => "backend_message_too_large",
    });
    let (code, message) = match failure {
        ConnFailure::Timeout(after) => (
            jsonrpc::REQUEST_TIMEOUT,
            format!(
                "backend `{}` did not answer within the tool_timeout of {}",
                server.id,
                crate::config::format_duration(*after)
            ),
        ),
        other => (
            jsonrpc::INTERNAL_ERROR,
            format!("backend `{}`: {other}", server.id),
        ),
    };
    let mut data = json!({ "server": server.id });
    if let ConnFailure::Exited {
        status,
        stderr_tail,
    } = failure
    {
        data["exitStatus"] = json!(status);
        data["stderrTail"] = stderr_data(stderr_tail);
    }
    jsonrpc::error_response(id, code, &message, Some(data))
}
