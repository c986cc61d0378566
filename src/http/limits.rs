//! What one client, or many, may hold of the gateway: connections, and request
//! bodies in memory.
//!
//! Owns the connection cap (a permit per connection, kept by the connection's
//! task until it ends, TLS handshake included; one connection over the cap gets
//! a fixed `503` written on the raw socket and is closed, within a bounded
//! time), the buffered-body budget (bytes reserved as a body is read, given
//! back when the last reference to the body's bytes is dropped), the cap's
//! clamp to the process's file-descriptor limit, and a log throttle for
//! failures that come in floods. It never looks at what a body says and never
//! touches sessions or backends.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::jsonrpc;

/// Connections being refused (answered 503 and closed) at once; beyond this a
/// connection over the cap is closed without an answer.
const REFUSING_AT_ONCE: usize = 64;

/// How long a refused connection is kept for its 503 to be written and the
/// client's request to be read and thrown away (closing a socket with unread
/// input resets it, and the client would lose the 503).
const REFUSAL_LINGER: Duration = Duration::from_secs(2);

/// How much of a refused connection's request is read before it is closed anyway.
const REFUSAL_READ_AT_MOST: usize = 64 << 10;

/// The share of the soft `RLIMIT_NOFILE` client connections may take; the rest
/// is kept for backends' pipes, the listener, refusals and files.
const CONNECTION_SHARE_OF_FDS: (usize, usize) = (3, 4);

/// Client connections: at most `max_connections` served at once.
pub(super) struct ConnectionCap {
    max: usize,
    open: Arc<Semaphore>,
    refusing: Arc<Semaphore>,
    /// The whole 503 response, written as is.
    refusal: Bytes,
}

impl ConnectionCap {
    /// A cap of `configured` connections, lowered (with a warning) to what
    /// the process's file-descriptor limit can hold.
    pub(super) fn new(configured: usize) -> ConnectionCap {
        let max = match open_files_limit() {
            Some(fds) => {
                let room = fds / CONNECTION_SHARE_OF_FDS.1 * CONNECTION_SHARE_OF_FDS.0;
                if configured > room {
                    tracing::warn!(
                        max_connections = configured,
                        open_files_limit = fds,
                        "max_connections is more than three quarters of the open-files limit \
                         (the rest is kept for backends and files); serving at most {} \
                         connections: raise the limit (ulimit -n, LimitNOFILE=) or lower \
                         max_connections",
                        room.max(1)
                    );
                }
                configured.min(room).max(1)
            }
            None => configured,
        };
        let body = jsonrpc::error_response(
            None,
            jsonrpc::SERVER_ERROR,
            &format!(
                "Service Unavailable: the gateway has max_connections ({max}) connections open; retry later"
            ),
            None,
        );
        let head = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
             retry-after: 5\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        ConnectionCap {
            max,
            open: Arc::new(Semaphore::new(max)),
            refusing: Arc::new(Semaphore::new(REFUSING_AT_ONCE)),
            refusal: Bytes::from([head.as_bytes(), &body].concat()),
        }
    }

    /// The cap in force.
    pub(super) fn max(&self) -> usize {
        self.max
    }

    /// Connections open now.
    pub(super) fn open(&self) -> usize {
        self.max - self.open.available_permits()
    }

    /// A place for one more connection, held until the permit is dropped.
    pub(super) fn admit(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.open).try_acquire_owned().ok()
    }

    /// Refuses a connection over the cap: a plain one gets the 503, its
    /// request read and thrown away, and is closed, all within
    /// [`REFUSAL_LINGER`]; a TLS one (which could not read a plain answer),
    /// or any while [`REFUSING_AT_ONCE`] are being refused, is closed at once.
    pub(super) fn refuse(&self, mut stream: tokio::net::TcpStream, tls: bool) {
        crate::metrics::error("http_503_max_connections");
        if tls {
            return;
        }
        let Ok(permit) = Arc::clone(&self.refusing).try_acquire_owned() else {
            return;
        };
        let refusal = self.refusal.clone();
        tokio::spawn(async move {
            let linger = async {
                stream.write_all(&refusal).await?;
                stream.shutdown().await?;
                let mut buf = [0u8; 4096];
                let mut read = 0;
                while read < REFUSAL_READ_AT_MOST {
                    match stream.read(&mut buf).await? {
                        0 => break,
                        n => read += n,
                    }
                }
                Ok::<(), std::io::Error>(())
            };
            let _ = tokio::time::timeout(REFUSAL_LINGER, linger).await;
            drop(permit);
        });
    }
}

/// The soft limit on open files of this process, from `/proc/self/limits`.
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Request-body bytes held at once, over every request, and their cap.
pub(super) struct BodyBudget {
    held: AtomicU64,
    cap: u64,
}

/// The budget is spent: a body of this size cannot be taken now.
#[derive(Debug)]
pub(super) struct BudgetFull;

impl BodyBudget {
    pub(super) fn new(cap: u64) -> Arc<BodyBudget> {
        Arc::new(BodyBudget {
            held: AtomicU64::new(0),
            cap,
        })
    }

    /// Bytes held now.
    pub(super) fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Reserves `bytes`, or nothing if that would take the total past the cap.
    pub(super) fn reserve(self: &Arc<Self>, bytes: u64) -> Result<Reservation, BudgetFull> {
        let mut reservation = Reservation {
            budget: Arc::clone(self),
            bytes: 0,
        };
        reservation.grow_to(bytes)?;
        Ok(reservation)
    }

    fn take(&self, bytes: u64) -> Result<(), BudgetFull> {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|total| *total <= self.cap)
            })
            .map(|_| ())
            .map_err(|_| BudgetFull)
    }
}

/// Bytes of the budget held for one body; given back when dropped.
pub(super) struct Reservation {
    budget: Arc<BodyBudget>,
    bytes: u64,
}

impl Reservation {
    /// Bytes reserved.
    #[cfg(test)]
    fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Makes the reservation at least `bytes`, if the budget allows.
    pub(super) fn grow_to(&mut self, bytes: u64) -> Result<(), BudgetFull> {
        if bytes > self.bytes {
            self.budget.take(bytes - self.bytes)?;
            self.bytes = bytes;
        }
        Ok(())
    }

    /// The body read into `buffer`, as bytes that hold this reservation until
    /// the last reference to them (or to any slice of them) is dropped.
    pub(super) fn hold(self, buffer: BytesMut) -> Bytes {
        Bytes::from_owner(HeldBody {
            bytes: buffer.freeze(),
            _reservation: self,
        })
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// A body's bytes with the reservation that counts them.
struct HeldBody {
    bytes: Bytes,
    _reservation: Reservation,
}

impl AsRef<[u8]> for HeldBody {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// The deadlines of reading one body: `between` two reads, and `total`.
pub(super) struct BodyDeadline {
    between: Duration,
    total: Duration,
    /// When the whole body's time is up: set at the first read that has to
    /// wait (bytes already here took none of the client's time, and need
    /// no clock).
    end: Option<Instant>,
}

impl BodyDeadline {
    pub(super) fn new(between: Duration, total: Duration) -> BodyDeadline {
        BodyDeadline {
            between,
            total,
            end: None,
        }
    }

    /// The next read of the body, or `None` if it did not come in time.
    pub(super) async fn next<F: Future>(&mut self, read: F) -> Option<F::Output> {
        let mut read = std::pin::pin!(read);
        if let Poll::Ready(output) =
            std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await
        {
            return Some(output);
        }
        let now = Instant::now();
        let end = *self.end.get_or_insert(now + self.total);
        tokio::time::timeout_at((now + self.between).min(end), read)
            .await
            .ok()
    }

    /// True when the whole body's time is up (not only the wait for one read).
    pub(super) fn total_is_up(&self) -> bool {
        self.end.is_some_and(|end| Instant::now() >= end)
    }
}

/// Logs a failure that may come in a flood at most once per `every`, saying
/// how many were not logged in between.
pub(super) struct LogThrottle {
    every: Duration,
    last: Option<Instant>,
    unlogged: u64,
}

impl LogThrottle {
    pub(super) fn new(every: Duration) -> LogThrottle {
        LogThrottle {
            every,
            last: None,
            unlogged: 0,
        }
    }

    /// `Some(failures not logged since the last line)` when this one is to be
    /// logged; `None` when it is only counted.
    pub(super) fn admit(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|last| now - last < self.every) {
            self.unlogged += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_reserved_grown_and_given_back() {
        let budget = BodyBudget::new(100);
        let mut a = budget.reserve(40).unwrap();
        let b = budget.reserve(50).unwrap();
        assert!(budget.reserve(11).is_err());
        assert!(a.grow_to(51).is_err());
        assert_eq!(a.bytes(), 40);
        a.grow_to(50).unwrap();
        assert_eq!(budget.held(), 100);
        drop(b);
        assert_eq!(budget.held(), 50);
        let body = a.hold(BytesMut::from(&b"hello"[..]));
        let slice = body.slice(1..3);
        drop(body);
        assert_eq!(budget.held(), 50, "a slice still holds the body");
        assert_eq!(&slice[..], b"el");
        drop(slice);
        assert_eq!(budget.held(), 0);
        assert!(budget.reserve(101).is_err());
        assert!(budget.reserve(u64::MAX).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn the_throttle_logs_once_per_period_and_counts_the_rest() {
        let mut throttle = LogThrottle::new(Duration::from_secs(5));
        assert_eq!(throttle.admit(), Some(0));
        assert_eq!(throttle.admit(), None);
        assert_eq!(throttle.admit(), None);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(throttle.admit(), Some(2));
        assert_eq!(throttle.admit(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_deadline_bounds_each_read_and_the_whole() {
        let mut deadline = BodyDeadline::new(Duration::from_secs(2), Duration::from_secs(5));
        // Bytes already here take none of the client's time: the whole
        // body's clock starts at the first read that waits.
        assert_eq!(deadline.next(std::future::ready(1)).await, Some(1));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(!deadline.total_is_up());
        let slow = tokio::time::sleep(Duration::from_secs(3));
        assert!(deadline.next(slow).await.is_none());
        assert!(!deadline.total_is_up());
        for _ in 0..2 {
            let quick = tokio::time::sleep(Duration::from_secs(1));
            assert!(deadline.next(quick).await.is_some());
        }
        assert!(!deadline.total_is_up());
        // 4s in: a read of 1.5s is within the 2s between reads, past the 5s.
        let past_the_end = tokio::time::sleep(Duration::from_millis(1500));
        assert!(deadline.next(past_the_end).await.is_none());
        assert!(deadline.total_is_up());
    }

    #[test]
    fn the_open_files_limit_is_read() {
        assert!(open_files_limit().is_some_and(|n| n > 0));
    }
}
