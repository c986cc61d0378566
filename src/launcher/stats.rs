//! What each server's processes have been doing, for `/readyz`, `/health`
//! and the admin table.
//!
//! Owns, per server id: the last spawn (when, whether its handshake worked,
//! the error), spawn and restart counts, the last few errors, and whether the
//! crash-loop breaker is open. The pool records into it; it never decides
//! anything itself and never holds a lock across anything but its own map.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Errors kept per server.
const RECENT_ERRORS: usize = 10;

/// One event, stamped with the wall-clock time (ms since the Unix epoch).
#[derive(Debug, Clone)]
pub struct Stamped {
    pub at_unix_ms: u64,
    pub what: String,
}

/// The last spawn of a server.
#[derive(Debug, Clone)]
pub struct LastSpawn {
    pub at_unix_ms: u64,
    pub ok: bool,
    pub error: Option<String>,
}

/// A server's record.
#[derive(Debug, Clone, Default)]
pub struct ServerRecord {
    pub spawns: u64,
    pub spawn_failures: u64,
    /// Processes started again after a crash.
    pub restarts: u64,
    pub last_spawn: Option<LastSpawn>,
    pub recent_errors: VecDeque<Stamped>,
    /// Until when the crash-loop breaker refuses to start this server's
    /// processes (for some key), if it does.
    crash_loop_until: Option<Instant>,
}

impl ServerRecord {
    /// How long the crash-loop breaker stays open, if it is open now.
    pub fn crash_loop_for(&self) -> Option<Duration> {
        self.crash_loop_until
            .and_then(|until| until.checked_duration_since(Instant::now()))
            .filter(|left| !left.is_zero())
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Every server's record.
#[derive(Default)]
pub struct ServerStats {
    records: Mutex<HashMap<String, ServerRecord>>,
}

impl ServerStats {
    fn with<T>(&self, server: &str, f: impl FnOnce(&mut ServerRecord) -> T) -> T {
        let mut records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        f(records.entry(server.to_owned()).or_default())
    }

    /// A spawn ended its handshake (`error: None`) or failed.
    pub fn spawn(&self, server: &str, relaunch: bool, error: Option<String>) {
        self.with(server, |r| {
            r.spawns += 1;
            if relaunch {
                r.restarts += 1;
            }
            if error.is_some() {
                r.spawn_failures += 1;
            }
            r.last_spawn = Some(LastSpawn {
                at_unix_ms: now_ms(),
                ok: error.is_none(),
                error: error.clone(),
            });
            if let Some(error) = error {
                push(r, format!("spawn failed: {error}"));
            }
        });
    }

    /// Something went wrong with a process of `server`.
    pub fn error(&self, server: &str, what: String) {
        self.with(server, |r| push(r, what));
    }

    /// The crash-loop breaker refuses `server`'s processes for `retry_after`.
    pub fn crash_loop(&self, server: &str, retry_after: Duration) {
        self.with(server, |r| {
            let until = Instant::now() + retry_after;
            r.crash_loop_until = Some(r.crash_loop_until.map_or(until, |u| u.max(until)));
        });
    }

    /// A copy of `server`'s record.
    pub fn record(&self, server: &str) -> ServerRecord {
        self.with(server, |r| r.clone())
    }
}

fn push(record: &mut ServerRecord, what: String) {
    if record.recent_errors.len() == RECENT_ERRORS {
        record.recent_errors.pop_front();
    }
    record.recent_errors.push_back(Stamped {
        at_unix_ms: now_ms(),
        what,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawns_errors_and_the_breaker_are_recorded_per_server() {
        let stats = ServerStats::default();
        stats.spawn("a", false, None);
        stats.spawn("a", true, Some("boom".into()));
        for i in 0..12 {
            stats.error("a", format!("e{i}"));
        }
        stats.crash_loop("a", Duration::from_secs(30));
        let a = stats.record("a");
        assert_eq!((a.spawns, a.spawn_failures, a.restarts), (2, 1, 1));
        assert_eq!(
            a.last_spawn.as_ref().unwrap().error.as_deref(),
            Some("boom")
        );
        assert_eq!(a.recent_errors.len(), RECENT_ERRORS);
        assert_eq!(a.recent_errors.back().unwrap().what, "e11");
        assert!(a.crash_loop_for().is_some());
        assert!(stats.record("b").last_spawn.is_none());
    }
}
