//! Client sessions: ids, what each session remembers, idle tracking, and the
//! outbox that carries a backend's own messages to the client.
//!
//! Owns minting `Mcp-Session-Id` values (128 random bits), the table of live
//! sessions, each session's `initialize` message (replayed to a fresh backend
//! process), its negotiated protocol version, its last activity, and its
//! [`Outbox`]. It never starts or stops processes (it asks the pool) and never
//! formats HTTP.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::config::{ServerConfig, SessionMode};
use crate::jsonrpc::Kind;
use crate::launcher::{PoolKey, ServerMessageSink};

/// Server-initiated messages kept while no client stream is open.
const BACKLOG_MAX: usize = 256;
/// Messages queued on an open stream before it counts as stuck.
const STREAM_QUEUE: usize = 1024;

/// The pool key a session of `server` uses: its own id, or the one key that
/// every session of a shared server uses.
pub fn pool_key(server: &ServerConfig, session: &Arc<str>) -> PoolKey {
    PoolKey {
        server: Arc::from(server.id.as_str()),
        session: match server.session_mode {
            SessionMode::PerSession => Arc::clone(session),
            SessionMode::Shared => Arc::from(SHARED_POOL_KEY),
        },
    }
}

/// The session part of a shared server's pool key (never a minted id: those are hex).
pub const SHARED_POOL_KEY: &str = "*shared*";

/// Makes a new session id: 128 bits from the OS's secure random source, as 32 hex digits.
pub fn mint_session_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// True for a well-formed session id header value: visible ASCII, sensibly short.
pub fn is_plausible_session_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 256 && id.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// Which endpoint a session belongs to.
pub enum Endpoint {
    /// `/mcp/<serverID>`: one backend.
    Routed(Arc<ServerConfig>),
    /// `/mcp`: every backend, with the unified endpoint's own state.
    Unified(crate::unified::UnifiedState),
}

/// One client session.
pub struct Session {
    pub id: Arc<str>,
    pub endpoint: Endpoint,
    /// A session idle this long is ended.
    pub idle_timeout: Duration,
    /// The client's `initialize` request as it sent it, replayed to every new process.
    pub init_message: Bytes,
    /// The version the backend answered in its initialize result.
    pub protocol_version: String,
    pub outbox: Arc<Outbox>,
    created: Instant,
    /// Milliseconds after `created` of the last client request.
    last_activity_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Session {
    pub fn new(
        id: Arc<str>,
        endpoint: Endpoint,
        idle_timeout: Duration,
        init_message: Bytes,
        protocol_version: String,
        outbox: Arc<Outbox>,
    ) -> Session {
        Session {
            id,
            endpoint,
            idle_timeout,
            init_message,
            protocol_version,
            outbox,
            created: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    /// The backend of a routed session.
    pub fn server(&self) -> Option<&Arc<ServerConfig>> {
        match &self.endpoint {
            Endpoint::Routed(server) => Some(server),
            Endpoint::Unified(_) => None,
        }
    }

    /// The unified endpoint's state of a unified session.
    pub fn unified(&self) -> Option<&crate::unified::UnifiedState> {
        match &self.endpoint {
            Endpoint::Unified(state) => Some(state),
            Endpoint::Routed(_) => None,
        }
    }

    /// What the logs call this session's endpoint.
    pub fn endpoint_name(&self) -> &str {
        match &self.endpoint {
            Endpoint::Routed(server) => &server.id,
            Endpoint::Unified(_) => "(unified)",
        }
    }

    /// Requests of this session now being handled.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Records client activity now.
    pub fn touch(&self) {
        let ms = u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_activity_ms.store(ms, Ordering::Relaxed);
    }

    /// Marks a request in flight until the guard drops; in-flight sessions are never idle.
    pub fn begin_request(self: &Arc<Self>) -> InFlight {
        self.touch();
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// How long since the client was last active (a live open stream counts as active).
    pub fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Relaxed) > 0 || self.outbox.has_stream() {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed));
        self.created.elapsed().saturating_sub(last)
    }
}

/// Ends a request's in-flight mark.
pub struct InFlight(Arc<Session>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// Carries a backend's requests and notifications to the session's open GET
/// stream, keeping a bounded backlog of notifications while none is open.
#[derive(Default)]
pub struct Outbox {
    state: Mutex<OutboxState>,
    next_event_id: AtomicU64,
}

#[derive(Default)]
struct OutboxState {
    stream: Option<(u64, mpsc::Sender<Bytes>)>,
    backlog: VecDeque<Bytes>,
    next_stream: u64,
}

/// An attached client stream: receives messages until another stream replaces it.
pub struct StreamHandle {
    pub token: u64,
    pub messages: mpsc::Receiver<Bytes>,
}

impl Outbox {
    fn state(&self) -> std::sync::MutexGuard<'_, OutboxState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The next SSE event id of this session (unique within the session).
    pub fn next_event_id(&self) -> u64 {
        self.next_event_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Attaches a new client stream, replacing (and so ending) any earlier one;
    /// backlogged notifications are delivered on it first.
    pub fn attach(&self) -> StreamHandle {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let mut state = self.state();
        state.next_stream += 1;
        let token = state.next_stream;
        for message in state.backlog.drain(..) {
            let _ = tx.try_send(message);
        }
        state.stream = Some((token, tx));
        StreamHandle {
            token,
            messages: rx,
        }
    }

    /// Detaches the stream `token` if it is still the attached one.
    pub fn detach(&self, token: u64) {
        let mut state = self.state();
        if state.stream.as_ref().is_some_and(|(t, _)| *t == token) {
            state.stream = None;
        }
    }

    /// True while a client stream is attached and its receiver alive.
    pub fn has_stream(&self) -> bool {
        self.state()
            .stream
            .as_ref()
            .is_some_and(|(_, tx)| !tx.is_closed())
    }

    /// Ends the attached stream (session over).
    pub fn close(&self) {
        let mut state = self.state();
        state.stream = None;
        state.backlog.clear();
    }
}

impl ServerMessageSink for Outbox {
    fn deliver(&self, message: Bytes, kind: Kind) -> bool {
        let mut state = self.state();
        if let Some((_, tx)) = &state.stream {
            match tx.try_send(message) {
                Ok(()) => return true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!("client stream is not reading; server message dropped");
                    return false;
                }
                Err(mpsc::error::TrySendError::Closed(m)) => {
                    state.stream = None;
                    return backlog(&mut state, m, kind);
                }
            }
        }
        backlog(&mut state, message, kind)
    }
}

/// Keeps a notification for the next stream; a request cannot wait (the
/// backend gets an error answer instead).
fn backlog(state: &mut OutboxState, message: Bytes, kind: Kind) -> bool {
    if kind == Kind::Request {
        return false;
    }
    if state.backlog.len() == BACKLOG_MAX {
        state.backlog.pop_front();
    }
    state.backlog.push_back(message);
    true
}

/// The table of live sessions.
#[derive(Default)]
pub struct SessionStore {
    sessions: RwLock<HashMap<Arc<str>, Arc<Session>>>,
}

impl SessionStore {
    pub fn insert(&self, session: Arc<Session>) {
        self.write().insert(Arc::clone(&session.id), session);
    }

    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.read().get(id).cloned()
    }

    pub fn remove(&self, id: &str) -> Option<Arc<Session>> {
        self.write().remove(id)
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sessions idle longer than their server's `session_idle_timeout`.
    pub fn idle(&self) -> Vec<Arc<Session>> {
        self.read()
            .values()
            .filter(|s| s.idle_for() >= s.idle_timeout)
            .cloned()
            .collect()
    }

    /// Every live session.
    pub fn all(&self) -> Vec<Arc<Session>> {
        self.read().values().cloned().collect()
    }

    /// Removes and returns every session.
    pub fn drain(&self) -> Vec<Arc<Session>> {
        self.write().drain().map(|(_, s)| s).collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Arc<str>, Arc<Session>>> {
        self.sessions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Arc<str>, Arc<Session>>> {
        self.sessions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_long_random_and_visible_ascii() {
        let a = mint_session_id();
        let b = mint_session_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(is_plausible_session_id(&a));
        assert!(!is_plausible_session_id("has space"));
        assert!(!is_plausible_session_id(""));
        assert!(!is_plausible_session_id(&"x".repeat(300)));
    }

    #[tokio::test]
    async fn outbox_backlogs_notifications_but_refuses_requests_without_a_stream() {
        let outbox = Outbox::default();
        assert!(outbox.deliver(Bytes::from_static(b"n1"), Kind::Notification));
        assert!(!outbox.deliver(Bytes::from_static(b"r1"), Kind::Request));
        let mut stream = outbox.attach();
        assert_eq!(stream.messages.recv().await.unwrap(), "n1");
        assert!(outbox.deliver(Bytes::from_static(b"r2"), Kind::Request));
        assert_eq!(stream.messages.recv().await.unwrap(), "r2");
    }

    #[tokio::test]
    async fn a_new_stream_replaces_the_old_one() {
        let outbox = Outbox::default();
        let mut first = outbox.attach();
        let mut second = outbox.attach();
        assert!(first.messages.recv().await.is_none(), "old stream ends");
        outbox.detach(first.token); // stale detach is ignored
        assert!(outbox.deliver(Bytes::from_static(b"x"), Kind::Notification));
        assert_eq!(second.messages.recv().await.unwrap(), "x");
    }
}
