//! Client sessions: ids, what each session remembers, idle tracking, and the
//! outbox that carries a backend's own messages to the client.
//!
//! Owns minting `Mcp-Session-Id` values (128 random bits), the table of live
//! sessions, each session's `initialize` message (replayed to a fresh backend
//! process), its negotiated protocol version, its last activity, its outbox
//! (see `outbox`), the caller it belongs to and which servers that caller
//! may reach ([`Access`]), and the record of the pool keys it holds (so that
//! ending it stops exactly those). It never starts or stops processes (the core asks
//! the pool) and never formats HTTP. It knows no endpoint's internals: the
//! unified endpoint keeps its per-session state behind [`EndpointState`].

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::{ServerConfig, SessionMode};
use crate::launcher::{PoolKey, ServerMessageSink};
pub(crate) use crate::outbox::Outbox;
use crate::protocol::Era;

/// The pool key a session of `server` uses: its own id, or the one key that
/// every session of a shared server uses.
pub(crate) fn pool_key(server: &ServerConfig, session: &Arc<str>) -> PoolKey {
    PoolKey {
        server: Arc::from(server.id.as_str()),
        session: match server.session_mode {
            SessionMode::PerSession => Arc::clone(session),
            SessionMode::Shared => Arc::from(SHARED_POOL_KEY),
        },
    }
}

/// The session part of a shared server's pool key (never a minted id: those are hex).
pub(crate) const SHARED_POOL_KEY: &str = "*shared*";

/// True for the key of a shared server's one process.
pub(crate) fn is_shared_key(key: &PoolKey) -> bool {
    &*key.session == SHARED_POOL_KEY
}

/// Makes a new session id: 128 bits from the OS's secure random source, as 32
/// hex digits, after `<instance_tag>.` when the gateway has an instance tag (so
/// that a load balancer can send every request of the session to the instance
/// that holds its processes).
pub(crate) fn mint_session_id(instance_tag: Option<&str>) -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    let random: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    match instance_tag {
        Some(tag) => format!("{tag}.{random}"),
        None => random,
    }
}

/// True for a well-formed session id header value: visible ASCII, sensibly short.
pub(crate) fn is_plausible_session_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 256 && id.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// What an endpoint that serves many backends keeps with each of its
/// sessions (the unified endpoint: which server serves which URI, which
/// backend request is which), and where each backend's own messages go.
pub(crate) trait EndpointState: Send + Sync + 'static {
    /// Where `server`'s messages to `session` go.
    fn sink(
        self: Arc<Self>,
        session: &Arc<Session>,
        server: &ServerConfig,
    ) -> Arc<dyn ServerMessageSink>;

    /// The state as its concrete type, for the endpoint that made it.
    fn as_any(&self) -> &dyn Any;
}

/// Which endpoint a session belongs to.
pub(crate) enum Endpoint {
    /// `/mcp/<serverID>`: one backend.
    Routed(Arc<ServerConfig>),
    /// `/mcp`: every backend, with the unified endpoint's own state.
    Unified(Arc<dyn EndpointState>),
}

/// Which servers a caller may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Access {
    /// Every server (API-key callers, and every caller without OAuth).
    #[default]
    Every,
    /// The servers whose `oauth_scopes` are all among these (a token's scopes).
    Scopes(Arc<[String]>),
}

impl Access {
    /// True when the caller may reach `server`.
    pub(crate) fn reaches(&self, server: &ServerConfig) -> bool {
        match self {
            Access::Every => true,
            Access::Scopes(have) => server.oauth_scopes.iter().all(|s| have.contains(s)),
        }
    }
}

/// Who a request comes from: the name its sessions are bound to (an API
/// key's name, or an OAuth identity), and which servers it may reach.
#[derive(Debug, Clone, Default)]
pub(crate) struct Caller {
    pub name: Option<Arc<str>>,
    pub access: Access,
}

/// The pool keys a session holds (a routed session's own key among them).
#[derive(Default)]
struct Held {
    keys: Vec<PoolKey>,
}

/// One client session.
pub(crate) struct Session {
    pub id: Arc<str>,
    pub endpoint: Endpoint,
    /// A session idle this long is ended.
    pub idle_timeout: Duration,
    /// The caller (API key name or OAuth identity) that created the session;
    /// only it may use the session.
    pub caller: Option<Arc<str>>,
    /// Which servers the caller may reach, as of its latest request (a
    /// refreshed token may carry other scopes).
    access: RwLock<Access>,
    /// The client's `initialize` request as it sent it, replayed to every new process.
    pub init_message: Bytes,
    /// The version the backend answered in its initialize result.
    pub protocol_version: String,
    pub outbox: Arc<Outbox>,
    /// A routed session's pool key, made once (it is needed on every request).
    routed_key: Option<PoolKey>,
    /// The pool keys this session has asked the pool for: ending the session
    /// stops exactly these.
    held: Mutex<Held>,
    /// Set (before its keys are taken) when the session ends.
    ended: AtomicBool,
    created: Instant,
    /// Milliseconds after `created` of the last client request.
    last_activity_ms: AtomicU64,
    in_flight: AtomicUsize,
    /// Of the requests in flight, those parked while their client is asked
    /// for input: they wait on the client, not the backend, so they do not
    /// keep the session from going idle.
    parked: AtomicUsize,
    requests: AtomicU64,
}

impl Session {
    pub(crate) fn new(
        id: Arc<str>,
        endpoint: Endpoint,
        caller: Caller,
        idle_timeout: Duration,
        init_message: Bytes,
        protocol_version: String,
        outbox: Arc<Outbox>,
    ) -> Session {
        let routed_key = match &endpoint {
            Endpoint::Routed(server) => Some(pool_key(server, &id)),
            Endpoint::Unified(_) => None,
        };
        Session {
            routed_key,
            held: Mutex::default(),
            ended: AtomicBool::new(false),
            id,
            endpoint,
            caller: caller.name,
            access: RwLock::new(caller.access),
            idle_timeout,
            // A copy of its own: the request's buffer (counted against the
            // gateway's buffered-body budget while anything holds it) is
            // freed when the request is done with it, not when the session ends.
            init_message: Bytes::copy_from_slice(&init_message),
            protocol_version,
            outbox,
            created: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            parked: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
        }
    }

    /// The backend of a routed session.
    pub(crate) fn server(&self) -> Option<&Arc<ServerConfig>> {
        match &self.endpoint {
            Endpoint::Routed(server) => Some(server),
            Endpoint::Unified(_) => None,
        }
    }

    /// The state the session's endpoint keeps with it, if it is of type `T`.
    pub(crate) fn endpoint_state<T: 'static>(&self) -> Option<&T> {
        match &self.endpoint {
            Endpoint::Unified(state) => state.as_any().downcast_ref(),
            Endpoint::Routed(_) => None,
        }
    }

    /// Records that the session holds `key`. False once the session has
    /// ended: it must not start anything more. A routed session's own key is
    /// recorded when it is registered, so its requests take no lock here.
    pub(crate) fn hold(&self, key: &PoolKey) -> bool {
        if self.is_ended() {
            return false;
        }
        if self.routed_key.as_ref() == Some(key) {
            return true;
        }
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if !held.keys.contains(key) {
            held.keys.push(key.clone());
        }
        true
    }

    /// True once the session has ended. A connection had for it after that
    /// must be let go of by whoever had it: the session's end may not have
    /// seen its key.
    pub(crate) fn is_ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    /// Marks the session ended and returns the keys it held (once; later
    /// calls return none).
    pub(crate) fn end(&self) -> Vec<PoolKey> {
        if self.ended.swap(true, Ordering::SeqCst) {
            return Vec::new();
        }
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let mut keys = std::mem::take(&mut held.keys);
        if let Some(own) = &self.routed_key
            && !keys.contains(own)
        {
            keys.insert(0, own.clone());
        }
        keys
    }

    /// True when the session's caller may reach `server`.
    pub(crate) fn reaches(&self, server: &ServerConfig) -> bool {
        self.access
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .reaches(server)
    }

    /// Records the access of the caller's latest request.
    pub(crate) fn set_access(&self, access: Access) {
        // Nearly always unchanged: concurrent requests only read.
        if *self.access.read().unwrap_or_else(PoisonError::into_inner) == access {
            return;
        }
        *self.access.write().unwrap_or_else(PoisonError::into_inner) = access;
    }

    /// The era of the client behind the session (its outbox was made for
    /// it): stateless for a session the gateway opened for a 2026-07-28 caller.
    pub(crate) fn client_era(&self) -> Era {
        self.outbox.client_era()
    }

    /// What the logs call this session's endpoint.
    pub(crate) fn endpoint_name(&self) -> &str {
        match &self.endpoint {
            Endpoint::Routed(server) => &server.id,
            Endpoint::Unified(_) => "(unified)",
        }
    }

    /// The pool key of this session's connection to `server`.
    pub(crate) fn key_for(&self, server: &ServerConfig) -> PoolKey {
        match &self.routed_key {
            Some(key) if *key.server == *server.id => key.clone(),
            _ => pool_key(server, &self.id),
        }
    }

    /// How long ago the session was created.
    pub(crate) fn age(&self) -> Duration {
        self.created.elapsed()
    }

    /// Requests and notifications the client sent in this session.
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests of this session now being handled.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests of this session parked while their client is asked for input.
    pub(crate) fn parked(&self) -> usize {
        self.parked.load(Ordering::Relaxed)
    }

    /// Marks one of the session's requests parked until the mark drops.
    pub(crate) fn park_request(self: &Arc<Self>) -> ParkedMark {
        self.parked.fetch_add(1, Ordering::Relaxed);
        ParkedMark(Arc::clone(self))
    }

    /// Records client activity now.
    pub(crate) fn touch(&self) {
        let ms = u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_activity_ms.store(ms, Ordering::Relaxed);
    }

    /// Marks a request in flight until the guard drops; in-flight sessions are never idle.
    pub(crate) fn begin_request(self: &Arc<Self>) -> InFlight {
        self.touch();
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// How long since the client was last active (a live open stream or a
    /// request at work counts as active; a parked one does not).
    pub(crate) fn idle_for(&self) -> Duration {
        let at_work = self
            .in_flight
            .load(Ordering::Relaxed)
            .saturating_sub(self.parked.load(Ordering::Relaxed));
        if at_work > 0 || self.outbox.has_stream() {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed));
        self.created.elapsed().saturating_sub(last)
    }
}

/// Ends a request's in-flight mark.
pub(crate) struct InFlight(Arc<Session>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// Ends a request's parked mark (it is resumed, or dropped).
pub(crate) struct ParkedMark(Arc<Session>);

impl Drop for ParkedMark {
    fn drop(&mut self) {
        self.0.parked.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// The table of live sessions.
#[derive(Default)]
pub(crate) struct SessionStore {
    sessions: RwLock<HashMap<Arc<str>, Arc<Session>>>,
}

impl SessionStore {
    pub(crate) fn insert(&self, session: Arc<Session>) {
        self.write().insert(Arc::clone(&session.id), session);
    }

    pub(crate) fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.read().get(id).cloned()
    }

    pub(crate) fn remove(&self, id: &str) -> Option<Arc<Session>> {
        self.write().remove(id)
    }

    /// Sessions idle longer than their server's `session_idle_timeout`.
    pub(crate) fn idle(&self) -> Vec<Arc<Session>> {
        self.read()
            .values()
            .filter(|s| s.idle_for() >= s.idle_timeout)
            .cloned()
            .collect()
    }

    /// Every live session.
    pub(crate) fn all(&self) -> Vec<Arc<Session>> {
        self.read().values().cloned().collect()
    }

    /// Removes and returns every session.
    pub(crate) fn drain(&self) -> Vec<Arc<Session>> {
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

    fn server(id: &str) -> Arc<ServerConfig> {
        let toml = format!("[servers.{id}]\ncommand = \"x\"\n");
        let vars = HashMap::<String, String>::new();
        crate::config::Config::parse(std::path::Path::new("t.toml"), &toml, &vars)
            .expect("a valid config")
            .servers
            .remove(0)
    }

    fn session(endpoint: Endpoint) -> Session {
        Session::new(
            Arc::from("abc"),
            endpoint,
            Caller::default(),
            Duration::from_secs(60),
            Bytes::new(),
            "2025-11-25".to_owned(),
            Arc::new(Outbox::new(8)),
        )
    }

    /// A stand-in for the unified endpoint's state.
    struct NoState;

    impl EndpointState for NoState {
        fn sink(
            self: Arc<Self>,
            session: &Arc<Session>,
            _server: &ServerConfig,
        ) -> Arc<dyn ServerMessageSink> {
            session.outbox.clone()
        }

        fn as_any(&self) -> &dyn Any {
            self
        }
    }

    #[test]
    fn a_routed_session_ends_with_its_own_key_once() {
        let own = server("s");
        let routed = session(Endpoint::Routed(Arc::clone(&own)));
        let key = routed.key_for(&own);
        assert!(routed.hold(&key));
        assert_eq!(routed.end(), vec![key.clone()]);
        assert!(routed.is_ended());
        assert!(!routed.hold(&key), "an ended session takes nothing");
        assert!(routed.end().is_empty(), "its keys are given once");
    }

    #[test]
    fn a_unified_session_ends_with_every_key_it_asked_for_and_no_other() {
        let (a, b, c) = (server("a"), server("b"), server("c"));
        let unified = session(Endpoint::Unified(Arc::new(NoState)));
        assert!(unified.hold(&unified.key_for(&a)));
        assert!(unified.hold(&unified.key_for(&b)));
        assert!(unified.hold(&unified.key_for(&a)));
        let ended = unified.end();
        assert_eq!(ended, vec![unified.key_for(&a), unified.key_for(&b)]);
        assert!(!ended.contains(&unified.key_for(&c)));
        assert!(!unified.hold(&unified.key_for(&c)));
    }

    #[test]
    fn an_instance_tag_prefixes_the_session_id() {
        let id = mint_session_id(Some("gw-1"));
        let (tag, random) = id.split_once('.').unwrap();
        assert_eq!(tag, "gw-1");
        assert_eq!(random.len(), 32);
        assert!(is_plausible_session_id(&id));
    }

    #[test]
    fn session_ids_are_long_random_and_visible_ascii() {
        let a = mint_session_id(None);
        let b = mint_session_id(None);
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(is_plausible_session_id(&a));
        assert!(!is_plausible_session_id("has space"));
        assert!(!is_plausible_session_id(""));
        assert!(!is_plausible_session_id(&"x".repeat(300)));
    }
}
