//! The `(server, session)` connection pool.
//!
//! Owns which backend connection serves which key: launching on first need
//! (single-flight per key, never under a lock other keys need), running the
//! handshake (`handshake`) on every fresh process, relaunching after a crash on
//! the next request, and evicting (stopping the whole process tree) on request
//! or at shutdown. It never parses HTTP and never decides *when* a session ends;
//! the session layer tells it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::conn::{BackendConn, ConnFailure, ConnLabel, ServerMessageSink};
use super::handshake::{self, Failed};
use super::process;
use super::spares::{DeclaredOnly, Spares};
use super::stats::ServerStats;
use crate::config::{ServerConfig, format_duration};
use crate::jsonrpc;

/// Which connection: one per backend server and client session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub server: Arc<str>,
    pub session: Arc<str>,
}

/// Why a connection could not be had. Each error knows its own metric label
/// and JSON-RPC code (`metric_label`, `jsonrpc_code`).
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("could not start `{command}`: {error}")]
    Spawn {
        command: String,
        #[source]
        error: std::io::Error,
    },
    #[error("the backend failed during the initialize handshake: {0}")]
    Handshake(#[source] ConnFailure),
    #[error(
        "the backend did not finish starting (spawn and initialize) within the startup_timeout of {}",
        format_duration(*after)
    )]
    StartupTimeout {
        after: Duration,
        stderr_tail: Vec<String>,
    },
    #[error(
        "the backend crashed {crashes} times within {}; it is not restarted for another {} (crash-loop breaker)",
        format_duration(*window),
        tenths_rounded_up(*retry_after)
    )]
    CrashLoop {
        crashes: usize,
        window: Duration,
        retry_after: Duration,
    },
    /// The backend answered `initialize` with a JSON-RPC error (kept as written).
    #[error("the backend refused initialize")]
    Refused(Bytes),
    #[error("the session ended while its backend was starting")]
    Evicted,
}

/// A wait in seconds with one decimal, rounded up ("0.1s" for 30 ms, "9.9s"
/// for 9.85 s): a client told to come back then is never early.
fn tenths_rounded_up(wait: Duration) -> String {
    let tenths = wait.as_millis().div_ceil(100);
    format!("{}.{}s", tenths / 10, tenths % 10)
}

impl LaunchError {
    /// The stderr lines the backend wrote last, where known.
    pub fn stderr_tail(&self) -> &[String] {
        match self {
            LaunchError::Handshake(f) => f.stderr_tail(),
            LaunchError::StartupTimeout { stderr_tail, .. } => stderr_tail,
            _ => &[],
        }
    }

    /// The `kind` of `mcpgate_errors_total` this error counts under. A fixed
    /// phrase per variant: dashboards and alerts match on it.
    pub(crate) fn metric_label(&self) -> &'static str {
        match self {
            LaunchError::Spawn { .. } => "launch_spawn",
            LaunchError::Handshake(_) => "launch_handshake",
            LaunchError::StartupTimeout { .. } => "launch_startup_timeout",
            LaunchError::CrashLoop { .. } => "launch_crash_loop",
            LaunchError::Refused(_) => "launch_refused",
            LaunchError::Evicted => "launch_evicted",
        }
    }

    /// The JSON-RPC error code a client gets when its backend could not be
    /// had: always the gateway's internal error, even after a startup
    /// timeout (the client's own request never reached a backend, so it is
    /// not the request that timed out). A backend's own refusal (`Refused`)
    /// carries the backend's code in its bytes; `core::answers` forwards those.
    pub(crate) fn jsonrpc_code(&self) -> i32 {
        jsonrpc::INTERNAL_ERROR
    }
}

/// A connection ready for requests.
pub struct Launched {
    pub conn: Arc<BackendConn>,
    /// The backend's answer to `initialize` when this call started the process.
    pub init_response: Option<Bytes>,
}

#[derive(Default)]
struct Entry {
    conn: RwLock<Option<Arc<BackendConn>>>,
    /// Processes started for this key after the first.
    restarts: std::sync::atomic::AtomicU32,
    /// Held while launching: the single flight of this key. It guards the
    /// key's crash history.
    launching: Arc<tokio::sync::Mutex<Crashes>>,
}

impl Entry {
    fn live(&self) -> Option<Arc<BackendConn>> {
        let conn = self.conn.read().unwrap_or_else(PoisonError::into_inner);
        conn.as_ref().filter(|c| !c.is_closed()).cloned()
    }

    fn take(&self) -> Option<Arc<BackendConn>> {
        self.conn
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn set(&self, conn: Arc<BackendConn>) {
        *self.conn.write().unwrap_or_else(PoisonError::into_inner) = Some(conn);
    }
}

/// When this key's backend crashed recently, for the crash-loop breaker.
#[derive(Default)]
pub(super) struct Crashes(VecDeque<Instant>);

impl Crashes {
    pub(super) fn record(&mut self, now: Instant) {
        self.0.push_back(now);
    }

    /// Forgets crashes older than `window` at `now`. If `limit` or more remain,
    /// returns how long until the oldest of them leaves the window.
    pub(super) fn breaker_open(
        &mut self,
        limit: u32,
        window: Duration,
        now: Instant,
    ) -> Option<Duration> {
        while self
            .0
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            self.0.pop_front();
        }
        let oldest = *self.0.front()?;
        (self.0.len() >= limit as usize).then(|| window.saturating_sub(now.duration_since(oldest)))
    }
}

/// The connection pool. Cloning it gives another handle to the same pool.
#[derive(Clone)]
pub struct SessionPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    entries: Mutex<HashMap<PoolKey, Arc<Entry>>>,
    stats: Arc<ServerStats>,
    /// Processes started ahead, which a launch takes before spawning one.
    spares: Spares,
    stop_grace: Duration,
    max_message_bytes: usize,
}

impl SessionPool {
    /// A pool whose spares (see `spares`) number at most `max_spares`.
    pub fn new(stop_grace: Duration, max_message_bytes: u64, max_spares: usize) -> SessionPool {
        let stats = Arc::new(ServerStats::default());
        let max_message_bytes = usize::try_from(max_message_bytes).unwrap_or(usize::MAX);
        SessionPool {
            inner: Arc::new(PoolInner {
                entries: Mutex::new(HashMap::new()),
                spares: Spares::new(
                    max_spares,
                    stop_grace,
                    max_message_bytes,
                    Arc::clone(&stats),
                ),
                stats,
                stop_grace,
                max_message_bytes,
            }),
        }
    }

    /// The warm spares.
    pub fn spares(&self) -> &Spares {
        &self.inner.spares
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<PoolKey, Arc<Entry>>> {
        self.inner
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The live connection for `key`, launching one (and replaying the session's
    /// `initialize` message, `init_message`) if there is none. A key whose
    /// backend crashed `crash_loop_restarts` times within `crash_loop_window`
    /// is not relaunched until the oldest of those crashes leaves the window.
    ///
    /// A launch runs in a task of its own: a caller that gives up (an HTTP
    /// client that disconnects) never leaves a half-started process behind.
    pub async fn connection(
        &self,
        key: &PoolKey,
        server: &Arc<ServerConfig>,
        init_message: &Bytes,
        sink: Arc<dyn ServerMessageSink>,
    ) -> Result<Launched, LaunchError> {
        let entry = {
            let mut entries = self.entries();
            match entries.get(key) {
                Some(entry) => Arc::clone(entry),
                None => Arc::clone(entries.entry(key.clone()).or_default()),
            }
        };
        if let Some(conn) = entry.live() {
            return Ok(Launched {
                conn,
                init_response: None,
            });
        }
        let pool = self.clone();
        let (key, server, init_message) = (key.clone(), Arc::clone(server), init_message.clone());
        tokio::spawn(async move {
            pool.launch_once(&key, &entry, &server, &init_message, sink)
                .await
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// The single flight of one key: launches unless another caller just did.
    async fn launch_once(
        &self,
        key: &PoolKey,
        entry: &Arc<Entry>,
        server: &Arc<ServerConfig>,
        init_message: &[u8],
        sink: Arc<dyn ServerMessageSink>,
    ) -> Result<Launched, LaunchError> {
        let mut crashes = entry.launching.lock().await;
        if let Some(conn) = entry.live() {
            return Ok(Launched {
                conn,
                init_response: None,
            });
        }
        // A previous process of this key that ended on its own was a crash.
        let relaunch = match entry.take() {
            Some(dead) => {
                if dead.crashed() {
                    crashes.record(Instant::now());
                }
                true
            }
            None => false,
        };
        if let Some(retry_after) = crashes.breaker_open(
            server.crash_loop_restarts,
            server.crash_loop_window,
            Instant::now(),
        ) {
            self.inner.stats.crash_loop(&server.id, retry_after);
            crate::metrics::error("crash_loop");
            return Err(LaunchError::CrashLoop {
                crashes: crashes.0.len(),
                window: server.crash_loop_window,
                retry_after,
            });
        }
        let started = Instant::now();
        let launched = self.launch(key, server, init_message, sink).await;
        self.inner.stats.spawn(
            &server.id,
            relaunch,
            launched.as_ref().err().map(ToString::to_string),
        );
        crate::metrics::spawned(&server.id, launched.is_ok(), started.elapsed());
        if relaunch {
            entry
                .restarts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let (conn, init_response) = match launched {
            Ok(launched) => launched,
            Err(error) => {
                // A replayed handshake that dies counts towards the breaker too.
                if relaunch
                    && matches!(
                        error,
                        LaunchError::Handshake(_) | LaunchError::StartupTimeout { .. }
                    )
                {
                    crashes.record(Instant::now());
                }
                return Err(error);
            }
        };
        let still_wanted = self
            .entries()
            .get(key)
            .is_some_and(|current| Arc::ptr_eq(current, entry));
        if !still_wanted {
            conn.stop("session ended during launch", self.inner.stop_grace)
                .await;
            return Err(LaunchError::Evicted);
        }
        entry.set(Arc::clone(&conn));
        Ok(Launched {
            conn,
            init_response: Some(init_response),
        })
    }

    async fn launch(
        &self,
        key: &PoolKey,
        server: &Arc<ServerConfig>,
        init_message: &[u8],
        sink: Arc<dyn ServerMessageSink>,
    ) -> Result<(Arc<BackendConn>, Bytes), LaunchError> {
        if let Some(spare) = self.inner.spares.claim(server, init_message) {
            let conn = spare.conn;
            self.watch_for_exit(&conn, &key.server);
            let Some(answer) = spare.init_answer else {
                // A started spare: the session's own handshake follows.
                conn.adopt(Arc::clone(&key.session), sink);
                tracing::info!(server = %key.server, session = %key.session, pid = conn.pid(),
                    "backend taken from the warm spares");
                return self.handshake(key, server, conn, init_message).await;
            };
            // An initialized spare: the session's `initialize` is answered
            // from the spare's, with the client's id.
            conn.adopt(
                Arc::clone(&key.session),
                Arc::new(DeclaredOnly::new(sink, init_message)),
            );
            tracing::info!(server = %key.server, session = %key.session, pid = conn.pid(),
                "backend taken from the warm spares, initialized ahead");
            let client_id = jsonrpc::peek(init_message)
                .ok()
                .and_then(|p| p.id_range)
                .map_or(&b"null"[..], |range| &init_message[range]);
            let answer = match jsonrpc::peek(&answer).ok().and_then(|p| p.id_range) {
                Some(range) => Bytes::from(jsonrpc::splice(&answer, range, client_id)),
                None => answer,
            };
            return Ok((conn, answer));
        }
        let child = process::spawn(server).map_err(|error| LaunchError::Spawn {
            command: server.command.clone(),
            error,
        })?;
        let label = ConnLabel {
            server: Arc::clone(&key.server),
            session: Arc::clone(&key.session),
        };
        let conn = BackendConn::start(
            child,
            label,
            sink,
            self.inner.max_message_bytes,
            server.max_consecutive_errors,
        );
        tracing::info!(server = %key.server, session = %key.session, pid = conn.pid(), "backend spawned");
        self.watch_for_exit(&conn, &key.server);
        self.handshake(key, server, conn, init_message).await
    }

    /// Runs the handshake of a fresh process for `key`; stops it if that fails.
    async fn handshake(
        &self,
        key: &PoolKey,
        server: &Arc<ServerConfig>,
        conn: Arc<BackendConn>,
        init_message: &[u8],
    ) -> Result<(Arc<BackendConn>, Bytes), LaunchError> {
        let handshake = handshake::run(
            &conn,
            &key.session,
            server.era,
            init_message,
            server.startup_timeout,
        )
        .await;
        let answer = match handshake {
            Ok((answer, era)) => {
                tracing::debug!(server = %key.server, session = %key.session, ?era,
                    "backend handshake done");
                conn.set_init_result(answer.clone(), era);
                answer
            }
            Err(Failed::Transport(ConnFailure::Timeout(after))) => {
                let stderr_tail = conn.stderr_tail();
                conn.stop("startup_timeout", self.inner.stop_grace).await;
                return Err(LaunchError::StartupTimeout { after, stderr_tail });
            }
            Err(Failed::Transport(failure)) => {
                conn.stop("handshake failed", self.inner.stop_grace).await;
                return Err(LaunchError::Handshake(failure));
            }
            Err(Failed::Refused(answer)) => {
                conn.stop("handshake refused", self.inner.stop_grace).await;
                return Err(LaunchError::Refused(answer));
            }
        };
        Ok((conn, answer))
    }

    /// When a backend ends on its own (or is closed for too many errors), its
    /// process group is stopped and reaped at once; the entry stays, so the
    /// session's next request starts a new process.
    fn watch_for_exit(&self, conn: &Arc<BackendConn>, server: &str) {
        let conn = Arc::clone(conn);
        let grace = self.inner.stop_grace;
        let pool = self.clone();
        let server = server.to_owned();
        tokio::spawn(async move {
            conn.closed().await;
            let on_its_own = !conn.stopped_by_request();
            crate::metrics::exited(&server, on_its_own);
            if on_its_own {
                let why = if conn.crashed() {
                    "the backend exited on its own"
                } else {
                    "the backend was closed after too many errors"
                };
                let last = conn.stderr_tail().pop().unwrap_or_default();
                pool.inner.stats.error(
                    &server,
                    format!("{why} (pid {}); stderr: {last}", conn.pid()),
                );
                conn.stop("backend exited or was evicted", grace).await;
            }
        });
    }

    /// What `server`'s processes have been doing.
    pub fn record(&self, server: &str) -> super::stats::ServerRecord {
        self.inner.stats.record(server)
    }

    /// The live connections, with their keys and how often each key's process
    /// was started again.
    pub fn live_all(&self) -> Vec<(PoolKey, Arc<BackendConn>, u32)> {
        self.entries()
            .iter()
            .filter_map(|(key, entry)| {
                let restarts = entry.restarts.load(std::sync::atomic::Ordering::Relaxed);
                entry.live().map(|conn| (key.clone(), conn, restarts))
            })
            .collect()
    }

    /// The live connection of `key`, without starting one.
    pub fn live(&self, key: &PoolKey) -> Option<Arc<BackendConn>> {
        let entry = self.entries().get(key).cloned()?;
        entry.live()
    }

    /// Removes `key` and stops its process tree. Returns false if there was nothing.
    pub async fn evict(&self, key: &PoolKey, reason: &'static str) -> bool {
        let Some(entry) = self.entries().remove(key) else {
            return false;
        };
        if let Some(conn) = entry.take() {
            crate::metrics::evicted(&key.server, reason);
            conn.stop(reason, self.inner.stop_grace).await;
        }
        true
    }

    /// Stops every connection and every spare, all at once.
    pub async fn shutdown(&self) {
        let spares = self.inner.spares.shutdown();
        let entries: Vec<_> = self.entries().drain().collect();
        let grace = self.inner.stop_grace;
        let stops = entries
            .into_iter()
            .filter_map(|(_, entry)| entry.take())
            .map(|conn| async move { conn.stop("gateway shutdown", grace).await });
        futures_util::future::join(spares, futures_util::future::join_all(stops)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    /// One error of each kind (the labels' match will not compile without a
    /// new variant; add it here too).
    fn every_error() -> Vec<LaunchError> {
        vec![
            LaunchError::Spawn {
                command: "nope".into(),
                error: std::io::Error::from(std::io::ErrorKind::NotFound),
            },
            LaunchError::Handshake(ConnFailure::StdoutClosed {
                stderr_tail: vec![],
            }),
            LaunchError::StartupTimeout {
                after: Duration::from_secs(1),
                stderr_tail: vec![],
            },
            LaunchError::CrashLoop {
                crashes: 3,
                window: Duration::from_secs(60),
                retry_after: Duration::from_secs(30),
            },
            LaunchError::Refused(Bytes::from_static(b"{}")),
            LaunchError::Evicted,
        ]
    }

    #[test]
    fn each_launch_error_has_a_label_of_its_own() {
        let labels: Vec<&str> = every_error().iter().map(|e| e.metric_label()).collect();
        assert_eq!(
            labels,
            [
                "launch_spawn",
                "launch_handshake",
                "launch_startup_timeout",
                "launch_crash_loop",
                "launch_refused",
                "launch_evicted",
            ]
        );
        let distinct: std::collections::HashSet<&str> = labels.iter().copied().collect();
        assert_eq!(distinct.len(), labels.len(), "{labels:?}");
    }

    #[test]
    fn the_breakers_wait_is_said_to_a_tenth_of_a_second_rounded_up() {
        assert_eq!(tenths_rounded_up(Duration::from_millis(30)), "0.1s");
        assert_eq!(tenths_rounded_up(Duration::from_millis(9850)), "9.9s");
        assert_eq!(tenths_rounded_up(Duration::from_secs(30)), "30.0s");
        let error = LaunchError::CrashLoop {
            crashes: 3,
            window: Duration::from_secs(60),
            retry_after: Duration::from_millis(30),
        };
        assert!(error.to_string().contains("for another 0.1s"), "{error}");
    }

    #[test]
    fn a_launch_error_is_an_internal_error_even_after_a_timeout() {
        for error in every_error() {
            assert_eq!(error.jsonrpc_code(), jsonrpc::INTERNAL_ERROR, "{error:?}");
        }
        let timed_out = LaunchError::Handshake(ConnFailure::Timeout(Duration::from_secs(1)));
        assert_eq!(timed_out.jsonrpc_code(), jsonrpc::INTERNAL_ERROR);
    }

    #[test]
    fn wrapped_errors_are_kept_as_sources_and_still_said() {
        let spawn = LaunchError::Spawn {
            command: "nope".into(),
            error: std::io::Error::other("no such file"),
        };
        assert_eq!(spawn.to_string(), "could not start `nope`: no such file");
        let source = spawn.source().expect("the io::Error is kept");
        assert!(source.downcast_ref::<std::io::Error>().is_some());

        let handshake = LaunchError::Handshake(ConnFailure::TooManyErrors(3));
        let source = handshake.source().expect("the ConnFailure is kept");
        assert!(matches!(
            source.downcast_ref::<ConnFailure>(),
            Some(ConnFailure::TooManyErrors(3))
        ));
        assert!(handshake.to_string().ends_with(&source.to_string()));
        assert!(LaunchError::Evicted.source().is_none());
    }

    // The crash-loop breaker. Every instant is made from one `t0` and passed
    // in, so the tests never wait and never depend on how fast they run.

    const WINDOW: Duration = Duration::from_secs(60);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Crashes recorded at `t0` plus each offset.
    fn crashed_at(t0: Instant, offsets: &[Duration]) -> Crashes {
        let mut crashes = Crashes::default();
        for offset in offsets {
            crashes.record(t0 + *offset);
        }
        crashes
    }

    #[test]
    fn below_the_limit_the_breaker_stays_closed_and_at_it_says_when_the_oldest_crash_leaves() {
        let t0 = Instant::now();
        let mut crashes = crashed_at(t0, &[secs(0), secs(10)]);
        assert_eq!(crashes.breaker_open(3, WINDOW, t0 + secs(20)), None);

        crashes.record(t0 + secs(20));
        // The oldest crash (t0) leaves the window at t0 + 60s: 35s after t0 + 25s.
        assert_eq!(
            crashes.breaker_open(3, WINDOW, t0 + secs(25)),
            Some(secs(35))
        );
    }

    #[test]
    fn a_crash_older_than_the_window_is_forgotten_so_the_breaker_closes_again() {
        let t0 = Instant::now();
        let mut crashes = crashed_at(t0, &[secs(0), secs(10), secs(20)]);
        assert_eq!(
            crashes.breaker_open(3, WINDOW, t0 + secs(30)),
            Some(secs(30))
        );

        assert_eq!(crashes.breaker_open(3, WINDOW, t0 + secs(61)), None);
        assert_eq!(crashes.0.len(), 2, "only the crash at t0 is forgotten");
        // The two left still count: the oldest of them (t0 + 10s) leaves at t0 + 70s.
        assert_eq!(
            crashes.breaker_open(2, WINDOW, t0 + secs(61)),
            Some(secs(9))
        );
    }

    #[test]
    fn a_crash_exactly_window_old_is_forgotten_so_the_breaker_closes_when_it_said_it_would() {
        // `retry_after` is `window - age`: the client is told to come back when
        // the oldest crash is exactly `window` old. At that instant the crash
        // must already be forgotten, or the breaker would still be open and say
        // "retry after 0s" to the very retry it asked for.
        let t0 = Instant::now();
        let tick = Duration::from_nanos(1);
        let mut crashes = crashed_at(t0, &[Duration::ZERO]);
        let just_before = t0 + WINDOW - tick;
        assert_eq!(crashes.breaker_open(1, WINDOW, just_before), Some(tick));

        assert_eq!(crashes.breaker_open(1, WINDOW, just_before + tick), None);
        assert!(
            crashes.0.is_empty(),
            "the crash exactly `window` old is gone"
        );
    }

    #[test]
    fn with_a_limit_of_one_a_single_crash_opens_the_breaker_for_the_whole_window() {
        // 1 is the smallest limit there is: config refuses
        // `crash_loop_restarts = 0` ("must be at least 1"), so 0 is not tested.
        let t0 = Instant::now();
        let mut crashes = Crashes::default();
        assert_eq!(crashes.breaker_open(1, WINDOW, t0), None, "no crash yet");

        crashes.record(t0);
        assert_eq!(crashes.breaker_open(1, WINDOW, t0), Some(WINDOW));
        assert_eq!(
            crashes.breaker_open(1, WINDOW, t0 + secs(59)),
            Some(secs(1))
        );
    }
}
