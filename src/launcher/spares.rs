//! Warm spares: processes of a server started ahead of any session, for a
//! new session to take instead of waiting for a cold start.
//!
//! Owns, for each server with `warm_spares > 0`, a keeper task that keeps
//! that many spares alive (within the gateway-wide `max_spares`), each started
//! by `process::spawn` like any backend, and readied by the server's `warm`:
//! `started` sends a `ping` (MCP allows one before `initialize`) whose answer
//! says the process is up; `initialized` runs the whole handshake with the
//! gateway's own `initialize`. It replaces a spare that exits on its own,
//! with backoff and the crash-loop breaker; recycles spares older than
//! `spare_max_age`; and hands a spare over when the pool launches a
//! session's process ([`Spares::claim`]). It never decides which session
//! gets a process (the pool asks), never runs a session's handshake, and
//! never speaks HTTP.
//!
//! One rule keeps the counts right: whoever takes a spare out of its
//! keeper's list (a claim, its exit, recycling, a stop) gives back its place
//! under `max_spares`, and nobody else does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

use super::conn::{BackendConn, ConnLabel, ServerMessageSink};
use super::handshake;
use super::pool::Crashes;
use super::process;
use super::stats::ServerStats;
use crate::config::{EraSetting, ServerConfig, Warmth};
use crate::jsonrpc::{self, Kind, Message, build};
use crate::protocol::{Version, method};

/// The session name a spare's logs carry until a session takes it.
const SPARE_LABEL: &str = "(spare)";

/// The first wait after a spare failed to start; it doubles with each
/// failure in a row, up to [`BACKOFF_MAX`].
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How long to wait after `failures` failures in a row.
fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    BACKOFF_FIRST
        .saturating_mul(1 << doublings)
        .min(BACKOFF_MAX)
}

/// A spare handed to the pool for a session.
pub(crate) struct Claimed {
    pub conn: Arc<BackendConn>,
    /// For an `initialized` spare: the backend's answer to the gateway's
    /// `initialize`, to answer the session's with.
    pub init_answer: Option<Bytes>,
}

/// One spare process, from its spawn until it is claimed or gone.
struct Spare {
    conn: Arc<BackendConn>,
    born: Instant,
    /// Set once the process answered its `ping` (`started`) or finished the
    /// handshake (`initialized`).
    ready: AtomicBool,
    /// An `initialized` spare's answer to the gateway's `initialize`.
    init_answer: OnceLock<Bytes>,
}

/// What one spare looks like from outside, for the operator's endpoints.
#[derive(Debug, Clone)]
pub struct SpareInfo {
    pub server: String,
    pub pid: u32,
    pub age: Duration,
    pub ready: bool,
    pub warm: Warmth,
}

/// One server's spares now.
#[derive(Debug, Clone, Default)]
pub struct SpareCounts {
    pub wanted: usize,
    pub ready: usize,
    pub starting: usize,
    pub claims: u64,
    pub misses: u64,
}

/// The spares of one server, and the state of its keeper.
struct Keeper {
    server: Arc<ServerConfig>,
    spares: Mutex<Vec<Arc<Spare>>>,
    wake: Notify,
    stopped: AtomicBool,
    /// Spawns under way (between taking a place and the spare's listing).
    spawning: AtomicUsize,
    claims: AtomicU64,
    misses: AtomicU64,
    started: Instant,
    /// Set once every wanted spare was ready for the first time (logged).
    warmed: AtomicBool,
    failures: Mutex<Failures>,
}

/// Recent failures to start a spare, for the backoff and the breaker.
#[derive(Default)]
struct Failures {
    crashes: Crashes,
    in_a_row: u32,
    not_before: Option<Instant>,
}

impl Keeper {
    fn list(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Spare>>> {
        self.spares.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, Failures> {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes `spare` out of the list; true if it was there (the caller then
    /// gives back its place).
    fn remove(&self, spare: &Arc<Spare>) -> bool {
        let mut list = self.list();
        let before = list.len();
        list.retain(|s| !Arc::ptr_eq(s, spare));
        list.len() != before
    }

    fn counts(&self) -> SpareCounts {
        let list = self.list();
        let ready = list
            .iter()
            .filter(|s| s.ready.load(Ordering::SeqCst))
            .count();
        SpareCounts {
            wanted: self.server.warm_spares,
            ready,
            starting: list.len() - ready + self.spawning.load(Ordering::SeqCst),
            claims: self.claims.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

/// Where a spare's own messages go before a session takes it: nowhere. A
/// request is refused saying why; a notification is dropped.
struct Unclaimed;

impl ServerMessageSink for Unclaimed {
    fn deliver(&self, message: Message) -> bool {
        if message.kind() == Kind::Request {
            if let Some(refusal) = message.refusal() {
                refusal.refuse(
                    "this process is a warm spare that no session has taken yet: there is no client to ask",
                );
                return true;
            }
            return false;
        }
        true
    }
}

/// The sink of a session on an `initialized` spare: the backend was told the
/// gateway's capabilities, not the client's, so a request for a capability
/// the client did not declare is refused here, saying so.
pub(crate) struct DeclaredOnly {
    inner: Arc<dyn ServerMessageSink>,
    declared: Vec<String>,
}

impl DeclaredOnly {
    /// `inner`, guarded by the capabilities of the client's `initialize`.
    pub(crate) fn new(inner: Arc<dyn ServerMessageSink>, init_message: &[u8]) -> DeclaredOnly {
        let declared = jsonrpc::peek(init_message)
            .ok()
            .and_then(|p| p.params)
            .and_then(|p| jsonrpc::member(p, "capabilities"))
            .and_then(|c| {
                serde_json::from_str::<HashMap<String, serde::de::IgnoredAny>>(c.get()).ok()
            })
            .map(|caps| caps.into_keys().collect())
            .unwrap_or_default();
        DeclaredOnly { inner, declared }
    }
}

impl ServerMessageSink for DeclaredOnly {
    fn deliver(&self, message: Message) -> bool {
        let needs = message.method().and_then(method::capability_needed);
        if message.kind() == Kind::Request
            && let Some(cap) = needs
            && !self.declared.iter().any(|d| d == cap)
            && let Some(refusal) = message.refusal()
        {
            refusal.refuse(&format!(
                "the client did not declare the {cap} capability (this process was initialized ahead \
                 of its session, with the gateway's capabilities: warm = \"initialized\")"
            ));
            return true;
        }
        self.inner.deliver(message)
    }
}

/// The `protocolVersion` a client's `initialize` asks for.
fn requested_version(init_message: &[u8]) -> Option<String> {
    let params = jsonrpc::peek(init_message).ok()?.params?;
    jsonrpc::string_member(params, "protocolVersion")
}

/// Every server's spares. Cloning gives another handle to the same spares.
#[derive(Clone)]
pub struct Spares {
    inner: Arc<Inner>,
}

struct Inner {
    keepers: Mutex<HashMap<String, Arc<Keeper>>>,
    /// Spares alive or being spawned, over every server.
    places_taken: AtomicUsize,
    max_spares: usize,
    stop_grace: Duration,
    max_message_bytes: usize,
    stats: Arc<ServerStats>,
}

impl Spares {
    pub(crate) fn new(
        max_spares: usize,
        stop_grace: Duration,
        max_message_bytes: usize,
        stats: Arc<ServerStats>,
    ) -> Spares {
        Spares {
            inner: Arc::new(Inner {
                keepers: Mutex::new(HashMap::new()),
                places_taken: AtomicUsize::new(0),
                max_spares,
                stop_grace,
                max_message_bytes,
                stats,
            }),
        }
    }

    fn keepers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Keeper>>> {
        self.inner
            .keepers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps spares for exactly `servers`: a keeper starts for each server
    /// that wants spares and has none with its settings; a removed server's,
    /// a changed server's old and a server's that no longer wants any are
    /// stopped with their process trees (awaited).
    pub(crate) async fn keep_for(&self, servers: &[Arc<ServerConfig>]) {
        let (stale, fresh) = {
            let mut keepers = self.keepers();
            let stale: Vec<Arc<Keeper>> = keepers
                .extract_if(|id, keeper| {
                    !servers
                        .iter()
                        .any(|s| s.id == *id && s.warm_spares > 0 && *s == keeper.server)
                })
                .map(|(_, keeper)| keeper)
                .collect();
            let mut fresh = Vec::new();
            for server in servers.iter().filter(|s| s.warm_spares > 0) {
                if !keepers.contains_key(&server.id) {
                    let keeper = Arc::new(Keeper {
                        server: Arc::clone(server),
                        spares: Mutex::default(),
                        wake: Notify::new(),
                        stopped: AtomicBool::new(false),
                        spawning: AtomicUsize::new(0),
                        claims: AtomicU64::new(0),
                        misses: AtomicU64::new(0),
                        started: Instant::now(),
                        warmed: AtomicBool::new(false),
                        failures: Mutex::default(),
                    });
                    keepers.insert(server.id.clone(), Arc::clone(&keeper));
                    fresh.push(keeper);
                }
            }
            (stale, fresh)
        };
        for keeper in fresh {
            tokio::spawn(self.clone().keep(keeper));
        }
        let stops = stale
            .into_iter()
            .map(|k| self.stop_keeper(k, "spare's server changed"));
        futures_util::future::join_all(stops).await;
    }

    /// Stops every keeper and every spare (at shutdown).
    pub(crate) async fn shutdown(&self) {
        let keepers: Vec<Arc<Keeper>> = self.keepers().drain().map(|(_, k)| k).collect();
        let stops = keepers
            .into_iter()
            .map(|k| self.stop_keeper(k, "gateway shutdown"));
        futures_util::future::join_all(stops).await;
    }

    async fn stop_keeper(&self, keeper: Arc<Keeper>, reason: &'static str) {
        let spares: Vec<Arc<Spare>> = {
            let mut list = keeper.list();
            keeper.stopped.store(true, Ordering::SeqCst);
            list.drain(..).collect()
        };
        keeper.wake.notify_one();
        for _ in &spares {
            self.give_back_place();
        }
        let grace = self.inner.stop_grace;
        let stops = spares.iter().map(|s| s.conn.stop(reason, grace));
        futures_util::future::join_all(stops).await;
    }

    /// A spare of `server` for a session whose `initialize` is
    /// `init_message`, if one is there: the oldest ready one, else (for
    /// `started`) one still starting, which is further along than a new
    /// process would be. An `initialized` spare is taken only when the client
    /// asks for the very version the gateway's `initialize` asked for.
    /// `None` (a miss) when the server keeps spares and none fits.
    pub(crate) fn claim(&self, server: &ServerConfig, init_message: &[u8]) -> Option<Claimed> {
        if server.warm_spares == 0 {
            return None;
        }
        let keeper = self.keepers().get(&server.id).cloned()?;
        if *keeper.server != *server {
            return None;
        }
        let taken = {
            let mut list = keeper.list();
            let fits = |s: &Arc<Spare>| {
                !s.conn.is_closed()
                    && match server.warm {
                        Warmth::Started => true,
                        Warmth::Initialized => s.init_answer.get().is_some(),
                    }
            };
            let version_fits = server.warm == Warmth::Started
                || requested_version(init_message).as_deref()
                    == Some(Version::LATEST_SESSION.as_str());
            let pick = version_fits
                .then(|| {
                    list.iter()
                        .position(|s| fits(s) && s.ready.load(Ordering::SeqCst))
                        .or_else(|| list.iter().position(fits))
                })
                .flatten();
            pick.map(|i| list.remove(i))
        };
        let Some(spare) = taken else {
            keeper.misses.fetch_add(1, Ordering::Relaxed);
            crate::metrics::spare_missed(&server.id);
            return None;
        };
        self.give_back_place();
        keeper.claims.fetch_add(1, Ordering::Relaxed);
        crate::metrics::spare_claimed(&server.id);
        keeper.wake.notify_one();
        tracing::debug!(server = %server.id, pid = spare.conn.pid(),
            ready = spare.ready.load(Ordering::SeqCst), "warm spare claimed");
        Some(Claimed {
            conn: Arc::clone(&spare.conn),
            init_answer: spare.init_answer.get().cloned(),
        })
    }

    /// Each server's spares now, by server id.
    pub fn counts(&self) -> HashMap<String, SpareCounts> {
        self.keepers()
            .iter()
            .map(|(id, keeper)| (id.clone(), keeper.counts()))
            .collect()
    }

    /// Every spare now.
    pub fn list(&self) -> Vec<SpareInfo> {
        let keepers: Vec<Arc<Keeper>> = self.keepers().values().cloned().collect();
        keepers
            .iter()
            .flat_map(|keeper| {
                keeper
                    .list()
                    .iter()
                    .map(|s| SpareInfo {
                        server: keeper.server.id.clone(),
                        pid: s.conn.pid(),
                        age: s.born.elapsed(),
                        ready: s.ready.load(Ordering::SeqCst),
                        warm: keeper.server.warm,
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Takes a place under `max_spares`, if one is free.
    fn take_place(&self) -> bool {
        self.inner
            .places_taken
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.inner.max_spares).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives a place back, and tells every keeper (one may have waited for it).
    fn give_back_place(&self) {
        self.inner.places_taken.fetch_sub(1, Ordering::SeqCst);
        for keeper in self.keepers().values() {
            keeper.wake.notify_one();
        }
    }

    /// A keeper's loop: starts spares until the server has as many as it
    /// wants, and recycles old ones, until the keeper is stopped.
    async fn keep(self, keeper: Arc<Keeper>) {
        let server = Arc::clone(&keeper.server);
        loop {
            if keeper.stopped.load(Ordering::SeqCst) {
                return;
            }
            self.recycle_old(&keeper);
            let now = Instant::now();
            let not_before = {
                let mut failures = keeper.failures();
                let breaker = failures.crashes.breaker_open(
                    server.crash_loop_restarts,
                    server.crash_loop_window,
                    now,
                );
                if let Some(wait) = breaker {
                    self.inner.stats.crash_loop(&server.id, wait);
                }
                [failures.not_before, breaker.map(|wait| now + wait)]
                    .into_iter()
                    .flatten()
                    .max()
            };
            let have = keeper.list().len() + keeper.spawning.load(Ordering::SeqCst);
            let may_start = not_before.is_none_or(|t| t <= now);
            if have < server.warm_spares && may_start && self.take_place() {
                keeper.spawning.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(self.clone().start_one(Arc::clone(&keeper)));
                continue;
            }
            // Wait for a claim, an exit, a free place or a stop; or for the
            // backoff to pass, or the oldest spare to need recycling.
            let oldest = keeper.list().iter().map(|s| s.born).min();
            let recycle_at = oldest.map(|born| born + server.spare_max_age);
            let wake_at = [not_before.filter(|_| have < server.warm_spares), recycle_at]
                .into_iter()
                .flatten()
                .min();
            match wake_at {
                Some(at) => {
                    let _ = tokio::time::timeout_at(at.into(), keeper.wake.notified()).await;
                }
                None => keeper.wake.notified().await,
            }
        }
    }

    /// Stops the ready spares older than `spare_max_age`; the loop then
    /// starts their replacements.
    fn recycle_old(&self, keeper: &Keeper) {
        let max_age = keeper.server.spare_max_age;
        let old: Vec<Arc<Spare>> = keeper
            .list()
            .extract_if(.., |s| {
                s.born.elapsed() >= max_age && s.ready.load(Ordering::SeqCst)
            })
            .collect();
        for spare in old {
            self.give_back_place();
            crate::metrics::evicted(&keeper.server.id, "spare recycled");
            let grace = self.inner.stop_grace;
            tokio::spawn(async move { spare.conn.stop("spare recycled", grace).await });
        }
    }

    /// Starts one spare (its place already taken) and readies it.
    async fn start_one(self, keeper: Arc<Keeper>) {
        let server = Arc::clone(&keeper.server);
        let spawned_at = Instant::now();
        let child = match process::spawn(&server) {
            Ok(child) => child,
            Err(error) => {
                self.failed(
                    &keeper,
                    &format!("could not start `{}`: {error}", server.command),
                );
                keeper.spawning.fetch_sub(1, Ordering::SeqCst);
                self.give_back_place();
                return;
            }
        };
        let conn = BackendConn::start(
            child,
            ConnLabel {
                server: Arc::from(server.id.as_str()),
                session: Arc::from(SPARE_LABEL),
            },
            Arc::new(Unclaimed),
            self.inner.max_message_bytes,
            server.max_consecutive_errors,
        );
        let spare = Arc::new(Spare {
            conn: Arc::clone(&conn),
            born: Instant::now(),
            ready: AtomicBool::new(false),
            init_answer: OnceLock::new(),
        });
        // Listed (or found stopped) under the list's lock, which a stop takes
        // too: a spare is never listed after its keeper's list was emptied.
        let listed = {
            let mut list = keeper.list();
            let listed = !keeper.stopped.load(Ordering::SeqCst);
            if listed {
                list.push(Arc::clone(&spare));
            }
            keeper.spawning.fetch_sub(1, Ordering::SeqCst);
            listed
        };
        if !listed {
            self.give_back_place();
            conn.stop("spare's server changed", self.inner.stop_grace)
                .await;
            return;
        }
        tracing::info!(server = %server.id, pid = conn.pid(), warm = server.warm.as_str(),
            "warm spare spawned");
        self.watch_exit(&keeper, &spare);
        let readied = self.ready_up(&server, &conn).await;
        match readied {
            Ok(answer) => {
                if let Some(answer) = answer {
                    let _ = spare.init_answer.set(answer);
                }
                spare.ready.store(true, Ordering::SeqCst);
                // The keeper now has a ready spare to recycle in time.
                keeper.wake.notify_one();
                let took = spawned_at.elapsed();
                // Counted as a spawn (in `/readyz` and `mcpgate_spawns_total`)
                // when a session takes it, as the pool's launch.
                crate::metrics::spare_ready(&server.id, took);
                keeper.failures().in_a_row = 0;
                let counts = keeper.counts();
                if counts.ready >= counts.wanted && !keeper.warmed.swap(true, Ordering::SeqCst) {
                    tracing::info!(server = %server.id, spares = counts.ready,
                        took_ms = u64::try_from(keeper.started.elapsed().as_millis()).unwrap_or(u64::MAX),
                        "warm spares ready");
                }
            }
            Err(why) => {
                // A spare a session took meanwhile is the session's now. The
                // failure is counted before the place is given back, so the
                // keeper's next start already waits for the backoff.
                if keeper.remove(&spare) {
                    self.failed(&keeper, &why);
                    self.give_back_place();
                    conn.stop("spare failed to start", self.inner.stop_grace)
                        .await;
                }
            }
        }
    }

    /// Readies a fresh spare by the server's `warm`; an `initialized` spare's
    /// answer to the gateway's `initialize` is returned.
    async fn ready_up(
        &self,
        server: &ServerConfig,
        conn: &BackendConn,
    ) -> Result<Option<Bytes>, String> {
        let owner: Arc<str> = Arc::from(SPARE_LABEL);
        match server.warm {
            Warmth::Started => handshake::past_start(conn, &owner, server.startup_timeout)
                .await
                .map(|()| None)
                .map_err(|failure| failure.to_string()),
            Warmth::Initialized => {
                let initialize = build::initialize(
                    build::raw(build::RELAYED_CAPABILITIES),
                    build::raw(build::GATEWAY_CLIENT_INFO),
                );
                match handshake::run(
                    conn,
                    &owner,
                    EraSetting::Session,
                    &initialize,
                    server.startup_timeout,
                )
                .await
                {
                    Ok((answer, era)) => {
                        conn.set_init_result(answer.clone(), era);
                        Ok(Some(answer))
                    }
                    Err(failed) => Err(failed.to_string()),
                }
            }
        }
    }

    /// When a spare no session has taken exits, it is taken out of the list,
    /// reaped, and counted as a failure (its replacement waits the backoff).
    fn watch_exit(&self, keeper: &Arc<Keeper>, spare: &Arc<Spare>) {
        let (spares, keeper, spare) = (self.clone(), Arc::clone(keeper), Arc::clone(spare));
        tokio::spawn(async move {
            spare.conn.closed().await;
            if !keeper.remove(&spare) {
                return;
            }
            let server = &keeper.server.id;
            crate::metrics::exited(server, true);
            let last = spare.conn.stderr_tail().pop().unwrap_or_default();
            let why = format!(
                "a warm spare exited on its own (pid {}); stderr: {last}",
                spare.conn.pid()
            );
            // Counted before the place is given back (see `start_one`).
            spares.failed(&keeper, &why);
            spares.give_back_place();
            spare
                .conn
                .stop("spare exited", spares.inner.stop_grace)
                .await;
        });
    }

    /// Counts a spare that failed to start or died: towards the breaker and
    /// the backoff before the next one.
    fn failed(&self, keeper: &Keeper, why: &str) {
        let server = &keeper.server.id;
        let wait = {
            let mut failures = keeper.failures();
            let now = Instant::now();
            failures.crashes.record(now);
            failures.in_a_row += 1;
            let wait = backoff(failures.in_a_row);
            failures.not_before = Some(now + wait);
            wait
        };
        crate::metrics::spare_failed(server);
        self.inner.stats.spawn(server, false, Some(why.to_owned()));
        tracing::warn!(server = %server, next_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            "a warm spare failed: {why}");
        keeper.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_from_a_tenth_of_a_second_up_to_thirty() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(5), Duration::from_millis(1600));
        assert_eq!(backoff(10), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }

    struct Collect(Mutex<Vec<String>>);

    impl ServerMessageSink for Collect {
        fn deliver(&self, message: Message) -> bool {
            self.0
                .lock()
                .unwrap()
                .push(message.method().unwrap_or_default().to_owned());
            true
        }
    }

    fn request(method: &str, refused: &Arc<Mutex<Vec<String>>>) -> Message {
        let bytes = Bytes::from(format!(r#"{{"jsonrpc":"2.0","id":7,"method":"{method}"}}"#));
        let refused = Arc::clone(refused);
        Message::read(bytes)
            .unwrap()
            .with_refusal(jsonrpc::Refusal::new(move |why| {
                refused.lock().unwrap().push(why.to_owned());
            }))
    }

    #[test]
    fn a_session_on_an_initialized_spare_is_asked_only_what_its_client_declared() {
        let inner = Arc::new(Collect(Mutex::default()));
        let init = br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"roots":{}},"clientInfo":{"name":"c","version":"1"}}}"#;
        let gate = DeclaredOnly::new(Arc::clone(&inner) as Arc<dyn ServerMessageSink>, init);
        let refused = Arc::new(Mutex::new(Vec::new()));
        assert!(gate.deliver(request("roots/list", &refused)));
        assert!(gate.deliver(request("sampling/createMessage", &refused)));
        assert!(gate.deliver(request("ping", &refused)));
        assert_eq!(*inner.0.lock().unwrap(), ["roots/list", "ping"]);
        let refused = refused.lock().unwrap();
        assert_eq!(refused.len(), 1);
        assert!(refused[0].contains("sampling capability"), "{refused:?}");
    }

    #[test]
    fn an_unclaimed_spare_refuses_requests_and_drops_notifications() {
        let refused = Arc::new(Mutex::new(Vec::new()));
        assert!(Unclaimed.deliver(request("roots/list", &refused)));
        let note = Message::read(Bytes::from_static(
            br#"{"jsonrpc":"2.0","method":"notifications/message","params":{}}"#,
        ))
        .unwrap();
        assert!(Unclaimed.deliver(note));
        let refused = refused.lock().unwrap();
        assert_eq!(refused.len(), 1);
        assert!(refused[0].contains("warm spare"), "{refused:?}");
    }

    #[test]
    fn the_version_a_client_asks_for_is_read_from_its_initialize() {
        let init = br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{}}}"#;
        assert_eq!(requested_version(init).as_deref(), Some("2025-03-26"));
        assert_eq!(requested_version(b"{}"), None);
    }
}
