//! Admission control: at most `max_sessions` sessions open or being
//! initialised at once.
//!
//! Owns the count of admitted sessions and the guard a session holds while it
//! is being initialised ([`PendingSession`]): a session that never gets
//! registered (its client went away, its backend failed) gives its slot back
//! and has the processes started for it alone stopped. It never decides when
//! a registered session ends (that is the core's `end_session`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::launcher::{PoolKey, SessionPool};
use crate::session::is_shared_key;

/// The count of admitted sessions, below a maximum.
pub(super) struct Admission {
    admitted: Arc<AtomicUsize>,
    max: usize,
}

impl Admission {
    pub(super) fn new(max: usize) -> Admission {
        Admission {
            admitted: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// Takes a slot, or `None` when `max` are taken. Until disarmed, dropping
    /// the guard gives the slot back and evicts `keys` from `pool`.
    pub(super) fn admit(&self, pool: SessionPool, keys: Vec<PoolKey>) -> Option<PendingSession> {
        self.admitted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()?;
        Some(PendingSession {
            pool,
            keys,
            admitted: Arc::clone(&self.admitted),
            armed: true,
        })
    }

    /// Gives back the slot of a registered session that ended.
    pub(super) fn release(&self) {
        self.admitted.fetch_sub(1, Ordering::AcqRel);
    }

    /// Slots taken now.
    #[cfg(test)]
    fn taken(&self) -> usize {
        self.admitted.load(Ordering::Acquire)
    }
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
    /// Adds a key to evict if the session is never registered (not a shared
    /// process's: other sessions use it).
    pub(crate) fn also_evict(&mut self, key: PoolKey) {
        if !is_shared_key(&key) && !self.keys.contains(&key) {
            self.keys.push(key);
        }
    }

    /// The session is registered: it holds the slot from now on.
    pub(super) fn disarm(mut self) {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn pool() -> SessionPool {
        SessionPool::new(Duration::from_millis(10), 1 << 20, 0)
    }

    #[test]
    fn slots_run_out_at_the_maximum_and_come_back() {
        let admission = Admission::new(2);
        let first = admission.admit(pool(), vec![]).expect("a first slot");
        let second = admission.admit(pool(), vec![]).expect("a second slot");
        assert!(admission.admit(pool(), vec![]).is_none(), "max is 2");
        // A registered session keeps its slot until it ends.
        second.disarm();
        assert_eq!(admission.taken(), 2);
        // A session that never registers gives its slot back when dropped.
        drop(first);
        assert_eq!(admission.taken(), 1);
        let third = admission.admit(pool(), vec![]).expect("a freed slot");
        third.disarm();
        assert!(admission.admit(pool(), vec![]).is_none());
        admission.release();
        assert_eq!(admission.taken(), 1);
        assert!(admission.admit(pool(), vec![]).is_some());
    }

    #[test]
    fn zero_sessions_admit_none() {
        assert!(Admission::new(0).admit(pool(), vec![]).is_none());
    }

    #[tokio::test]
    async fn an_abandoned_session_asks_its_own_keys_evicted_once_and_never_a_shared_one() {
        let admission = Admission::new(1);
        let mut pending = admission.admit(pool(), vec![]).expect("a slot");
        let key = PoolKey {
            server: Arc::from("s"),
            session: Arc::from("abc"),
        };
        pending.also_evict(key.clone());
        pending.also_evict(key.clone());
        pending.also_evict(PoolKey {
            server: Arc::from("s"),
            session: Arc::from(crate::session::SHARED_POOL_KEY),
        });
        assert_eq!(pending.keys, vec![key], "its own, once; never a shared one");
        drop(pending);
        assert_eq!(admission.taken(), 0);
    }
}
