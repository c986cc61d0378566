//! The core every endpoint stands on: the live sessions, the connection pool,
//! the server table in force, admission, and ending sessions.
//!
//! Owns the rules that hold whichever endpoint a session came through: a
//! session is admitted only below `max_sessions`; a session's connection to
//! a server is the pool's connection for its key, started with the session's
//! own `initialize` replayed; every key a session asks for is recorded on the
//! session, and ending the session (DELETE, idle, a reload, the admin API,
//! shutdown) stops exactly those (a shared process when its last session
//! leaves). Sending a request (`send`) adds what a 2026-07-28 backend needs,
//! keeps a shared process's progress tokens apart, and retries "not ready".
//!
//! Its face is narrow on purpose: the endpoints (`routed`, `unified`,
//! `bridge`) and `http` use its methods, never its fields. It never speaks
//! HTTP, and it never decides what a message means to an endpoint (merging
//! lists, prefixing names, stateless calls are the endpoints' business).

mod admission;
pub(crate) mod answers;
mod send;
mod servers;
pub(crate) mod stateless_backend;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use bytes::Bytes;

use crate::audit::{AuditLog, Record};
use crate::config::{GatewayConfig, ServerConfig, SessionMode};
use crate::jsonrpc::{self, Kind, Peek};
use crate::launcher::{
    BackendConn, LaunchError, PoolKey, ServerMessageSink, SessionPool, Spares, stats::ServerRecord,
};
use crate::protocol::method;
use crate::session::{Endpoint, Session, SessionStore, is_shared_key, mint_session_id};
use crate::shared::SharedRoute;

use admission::Admission;
pub(crate) use admission::PendingSession;
use servers::ServerTable;
pub(crate) use servers::{Changes, changes};
use stateless_backend::Asked;

/// What a client message comes to: `http` chooses the status and the shape
/// of the response from this, in one place.
pub(crate) enum Outcome {
    /// A session was created (`initialize`): its id goes to the client with
    /// `answer`, the answer to its `initialize`.
    Created {
        session: Arc<Session>,
        answer: Bytes,
    },
    /// This JSON-RPC message answers the client (a result, or an error the
    /// protocol carries in a normal response).
    Answer(Bytes),
    /// This JSON-RPC error refuses the request itself (a bad `requestState`,
    /// a missing client capability, a header mismatch).
    Refused(Bytes),
    /// `max_sessions` are open: try again later.
    Busy,
    /// The session or caller already has `max_in_flight_per_session` requests
    /// in flight.
    TooMany,
    /// The backend sent notifications for the request before its answer:
    /// this one first, then the rest and the final message, as a stream.
    Stream(Bytes, tokio::sync::mpsc::Receiver<Step>),
}

/// What a request in flight yields to its client after the first message.
pub(crate) enum Step {
    /// A notification the backend sent for the request.
    Note(Bytes),
    /// The end: the final message.
    Done(Outcome),
}

/// The core: sessions, the pool, the server table, admission.
pub(crate) struct Core {
    /// `[gateway]`: in force for the gateway's whole life (a reload that
    /// changes it is refused).
    gateway: GatewayConfig,
    /// The servers in force: read live by everyone; a reload replaces it.
    servers: ServerTable,
    sessions: SessionStore,
    pool: SessionPool,
    admission: Admission,
    /// The routes of the servers in shared mode, by server id (made on first use).
    shared: Mutex<HashMap<String, Arc<SharedRoute>>>,
    /// Requests asked of session-era clients on a 2026-07-28 backend's behalf.
    asked: Asked,
    audit: Option<AuditLog>,
}

impl Core {
    pub(crate) fn new(
        gateway: GatewayConfig,
        servers: Vec<Arc<ServerConfig>>,
        audit: Option<AuditLog>,
    ) -> Core {
        let pool = SessionPool::new(
            gateway.stop_grace,
            gateway.max_message_bytes,
            gateway.max_spares,
        );
        Core {
            admission: Admission::new(gateway.max_sessions),
            gateway,
            servers: ServerTable::new(servers),
            sessions: SessionStore::default(),
            pool,
            shared: Mutex::default(),
            asked: Asked::default(),
            audit,
        }
    }

    /// The `[gateway]` settings.
    pub(crate) fn gateway(&self) -> &GatewayConfig {
        &self.gateway
    }

    /// The servers in force, in config order.
    pub(crate) fn servers(&self) -> Arc<Vec<Arc<ServerConfig>>> {
        self.servers.all()
    }

    /// The server in force with this id.
    pub(crate) fn server(&self, id: &str) -> Option<Arc<ServerConfig>> {
        self.servers.get(id)
    }

    /// The live session with this id.
    pub(crate) fn session(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions.get(id)
    }

    /// Every live session.
    pub(crate) fn sessions(&self) -> Vec<Arc<Session>> {
        self.sessions.all()
    }

    /// The live connections, with their keys and restart counts.
    pub(crate) fn connections(&self) -> Vec<(PoolKey, Arc<BackendConn>, u32)> {
        self.pool.live_all()
    }

    /// The warm spares (their counts and list, for the operator's endpoints).
    pub(crate) fn spares(&self) -> &Spares {
        self.pool.spares()
    }

    /// Starts, replaces or stops warm spares to match the servers in force
    /// (at start and after a reload); the stops are awaited.
    pub(crate) async fn keep_spares(&self) {
        self.pool.spares().keep_for(&self.servers.all()).await;
    }

    /// What `server`'s processes have been doing.
    pub(crate) fn server_record(&self, server: &str) -> ServerRecord {
        self.pool.record(server)
    }

    /// A fresh session id (after the instance tag, if any).
    pub(crate) fn mint_session_id(&self) -> Arc<str> {
        Arc::from(mint_session_id(self.gateway.instance_tag.as_deref()))
    }

    /// The route of a shared server's sessions; `None` for a per-session server.
    pub(crate) fn shared_route(&self, server: &ServerConfig) -> Option<Arc<SharedRoute>> {
        if server.session_mode != SessionMode::Shared {
            return None;
        }
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        Some(Arc::clone(shared.entry(server.id.clone()).or_default()))
    }

    /// Takes an admission slot for a new session, or `None` at
    /// `max_sessions`. Until registered, dropping it gives the slot back and
    /// stops `keys` (the processes started for the session alone).
    pub(crate) fn admit(&self, keys: Vec<PoolKey>) -> Option<PendingSession> {
        self.admission.admit(self.pool.clone(), keys)
    }

    /// Registers a new session: joins it to the shared routes it uses (and
    /// records their keys on it; a routed session holds its own key from
    /// birth), and puts it in the table. `answer` answers its `initialize`.
    pub(crate) fn register(
        &self,
        session: Arc<Session>,
        pending: PendingSession,
        answer: Bytes,
    ) -> Outcome {
        session.touch();
        for server in self.servers().iter() {
            let uses = match session.server() {
                Some(own) => own.id == server.id,
                None => true,
            };
            if uses && let Some(route) = self.shared_route(server) {
                route.join(Arc::clone(&session));
                session.hold(&session.key_for(server));
            }
        }
        self.sessions.insert(Arc::clone(&session));
        // The session now holds the slot; `end_session` gives it back.
        pending.disarm();
        tracing::info!(endpoint = session.endpoint_name(), session = %session.id, "session created");
        Outcome::Created { session, answer }
    }

    /// Where a session's messages from `server`'s backend go.
    fn sink_for(
        &self,
        session: &Arc<Session>,
        server: &ServerConfig,
    ) -> Arc<dyn ServerMessageSink> {
        if let Some(route) = self.shared_route(server) {
            return route;
        }
        match &session.endpoint {
            Endpoint::Unified(state) => Arc::clone(state).sink(session, server),
            Endpoint::Routed(_) => session.outbox.clone(),
        }
    }

    /// The live connection of `session` to `server`, started (with the
    /// session's `initialize` replayed) if there is none, and recorded on the
    /// session. Also returns the backend's initialize answer when this call
    /// started it. A session that has ended starts nothing and keeps nothing.
    pub(crate) async fn conn_for(
        &self,
        session: &Arc<Session>,
        server: &Arc<ServerConfig>,
    ) -> Result<(Arc<BackendConn>, Option<Bytes>), LaunchError> {
        let key = session.key_for(server);
        if !session.hold(&key) {
            return Err(LaunchError::Evicted);
        }
        let launched = self
            .pool
            .connection(
                &key,
                server,
                &session.init_message,
                self.sink_for(session, server),
            )
            .await?;
        // The session may have ended while this was being had, after its end
        // took the keys it held: then nobody else stops this one. (Its end
        // marks it ended before taking the keys, so one of the two sees the
        // other.) A shared process is the other sessions' to keep.
        if session.is_ended() && !is_shared_key(&key) {
            self.pool.evict(&key, "session ended").await;
            return Err(LaunchError::Evicted);
        }
        Ok((launched.conn, launched.init_response))
    }

    /// The connection of a session's process started for it alone before the
    /// session exists (a routed `initialize`): `sink` gets its messages.
    pub(crate) async fn launch_for_new_session(
        &self,
        key: &PoolKey,
        server: &Arc<ServerConfig>,
        init_message: &Bytes,
        sink: Arc<dyn ServerMessageSink>,
    ) -> Result<crate::launcher::Launched, LaunchError> {
        self.pool.connection(key, server, init_message, sink).await
    }

    /// The live connection of `session` to `server`, without starting one.
    pub(crate) fn live_conn(
        &self,
        session: &Session,
        server: &ServerConfig,
    ) -> Option<Arc<BackendConn>> {
        self.pool.live(&session.key_for(server))
    }

    /// Runs `answering`, a request of `session`, with the request marked in
    /// flight, its events in a span, and its audit record written. A
    /// combinator, not an `async fn`: an `async fn` would keep `answering`
    /// twice in its state (the argument and the awaited copy), and every
    /// request's future would carry both.
    pub(crate) fn observe<'a>(
        &'a self,
        session: &'a Arc<Session>,
        peek: &'a Peek<'_>,
        answering: impl Future<Output = Bytes> + 'a,
    ) -> impl Future<Output = Bytes> + 'a {
        use futures_util::FutureExt as _;
        use tracing::Instrument as _;
        let in_flight = session.begin_request();
        // The clock is read only for the audit record.
        let started = self.audit.is_some().then(Instant::now);
        // At debug level, every event of the request carries these fields.
        let span = tracing::debug_span!("request", endpoint = session.endpoint_name(),
            session = %session.id, method = peek.method.as_deref().unwrap_or_default(),
            id = peek.id.unwrap_or("null"));
        answering.instrument(span).map(move |answer| {
            if let (Some(audit), Some(started)) = (&self.audit, started) {
                audit.record(&Record {
                    caller: session.caller.as_deref(),
                    session: &session.id,
                    endpoint: session.endpoint_name(),
                    server: session.server().map(|s| s.id.as_str()),
                    request: peek,
                    answer: &answer,
                    took: started.elapsed(),
                });
            }
            drop(in_flight);
            answer
        })
    }

    /// True when a client notification or response of `session` is for its
    /// backends. The client's `notifications/initialized` is not (the
    /// gateway sent its own right after each handshake, as it must on every
    /// relaunch), nor an answer to a request the gateway asked the client on
    /// a 2026-07-28 backend's behalf (it goes to the request waiting for it).
    pub(crate) fn is_for_backends(
        &self,
        session: &Arc<Session>,
        message: &[u8],
        peek: &Peek<'_>,
    ) -> bool {
        if peek.method.as_deref() == Some(method::INITIALIZED) {
            return false;
        }
        !(peek.kind == Kind::Response && self.asked.take_answer(session, message, peek))
    }

    /// Ends a session and stops the processes it held (a shared one when its
    /// last session leaves). Returns false for an unknown session.
    pub(crate) async fn end_session(&self, id: &str, reason: &'static str) -> bool {
        let Some(session) = self.sessions.remove(id) else {
            return false;
        };
        self.admission.release();
        session.outbox.close();
        let mut stops = Vec::new();
        for key in session.end() {
            // A shared process stops with the last session that shares it.
            let route = is_shared_key(&key)
                .then(|| {
                    let shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
                    shared.get(&*key.server).cloned()
                })
                .flatten();
            if route.is_none_or(|route| route.leave(id) == 0) {
                stops.push(async move { self.pool.evict(&key, reason).await });
            }
        }
        futures_util::future::join_all(stops).await;
        tracing::info!(endpoint = session.endpoint_name(), session = %session.id, reason, "session ended");
        true
    }

    /// Stops a session's process of `server` (a reload removed the server
    /// from a unified session's reach; a shared one stops for every session
    /// that shares it); the session goes on.
    pub(crate) async fn stop_conn(
        &self,
        session: &Session,
        server: &ServerConfig,
        reason: &'static str,
    ) {
        self.pool.evict(&session.key_for(server), reason).await;
    }

    /// Ends every session that has been idle too long.
    pub(crate) async fn end_idle_sessions(&self) -> usize {
        let idle = self.sessions.idle();
        let ended = idle.len();
        let stops = idle.iter().map(|s| self.end_session(&s.id, "idle timeout"));
        futures_util::future::join_all(stops).await;
        ended
    }

    /// Refuses the backend requests that waited in vain for a client stream
    /// (see `outbox`).
    pub(crate) fn refuse_expired_requests(&self) {
        for session in self.sessions.all() {
            session.outbox.refuse_expired_requests();
        }
    }

    /// Ends every open SSE stream (first step of shutdown); sessions stay.
    pub(crate) fn close_streams(&self) {
        for session in self.sessions.all() {
            session.outbox.close();
        }
    }

    /// Ends every session and stops every backend (gateway shutdown).
    pub(crate) async fn shutdown(&self) {
        for session in self.sessions.drain() {
            session.end();
            session.outbox.close();
        }
        self.pool.shutdown().await;
    }

    /// Replaces the servers in force (a reload); returns the table before.
    pub(crate) fn replace_servers(
        &self,
        servers: Vec<Arc<ServerConfig>>,
    ) -> Arc<Vec<Arc<ServerConfig>>> {
        self.servers.replace(servers)
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
