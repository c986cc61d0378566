//! The writing half of a backend connection: one task per process owns its
//! stdin and writes the lines queued for it, in order.
//!
//! Owns the queue of lines waiting for a backend's stdin and the count of
//! their bytes: a backend that stops reading holds at most `max_waiting`
//! bytes of the gateway's memory, and a line beyond that is refused at once.
//! A request whose caller gave up before its line was written is skipped.
//! Closing stdin (when the connection stops) takes effect at once, even in
//! the middle of a write the backend does not drain. Nothing here waits for
//! a backend's answer, and nobody waits on a lock while a write blocks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::io::AsyncWriteExt;
use tokio::process::ChildStdin;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::conn::BackendConn;

/// One line for the backend's stdin (newline included).
pub(super) enum Line {
    /// A request of the connection's id `id`: written only if its caller
    /// still waits for the answer.
    Request { id: u64, bytes: Vec<u8> },
    /// Anything else: notifications, cancellations, answers to the backend.
    Other(Vec<u8>),
}

impl Line {
    fn bytes(&self) -> &[u8] {
        match self {
            Line::Request { bytes, .. } | Line::Other(bytes) => bytes,
        }
    }
}

/// Why a line was not queued.
#[derive(Debug)]
pub(super) enum NotQueued {
    /// Stdin is closed (the connection stopped, or a write failed).
    Closed,
    /// The backend is not reading: this many bytes already wait for it.
    Full { waiting: usize },
}

/// A backend's stdin, written by a task of its own.
pub(super) struct Stdin {
    queue: Mutex<Option<mpsc::UnboundedSender<Line>>>,
    /// Bytes queued and not yet written.
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Stdin {
    /// Starts the writer of `pipe` for `conn`, holding at most `max_waiting`
    /// bytes for it. Without a pipe, every line is refused as closed.
    pub(super) fn start(
        pipe: Option<ChildStdin>,
        conn: Weak<BackendConn>,
        max_waiting: usize,
    ) -> Stdin {
        let waiting = Arc::new(AtomicUsize::new(0));
        let (queue, writer) = match pipe {
            Some(pipe) => {
                let (tx, rx) = mpsc::unbounded_channel();
                let task = tokio::spawn(write_lines(pipe, rx, conn, Arc::clone(&waiting)));
                (Some(tx), Some(task))
            }
            None => (None, None),
        };
        Stdin {
            queue: Mutex::new(queue),
            waiting,
            max_waiting,
            writer: Mutex::new(writer),
        }
    }

    /// Queues `line`; never waits for the backend.
    pub(super) fn queue(&self, line: Line) -> Result<(), NotQueued> {
        let len = line.bytes().len();
        let queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(tx) = queue.as_ref() else {
            return Err(NotQueued::Closed);
        };
        let before = self.waiting.fetch_add(len, Ordering::SeqCst);
        // One line is always let through, whatever its size (the body limit
        // bounds it); the cap is on lines piling up behind it.
        if before > 0 && before + len > self.max_waiting {
            self.waiting.fetch_sub(len, Ordering::SeqCst);
            return Err(NotQueued::Full { waiting: before });
        }
        tx.send(line).map_err(|_| {
            self.waiting.fetch_sub(len, Ordering::SeqCst);
            NotQueued::Closed
        })
    }

    /// Bytes queued and not yet written.
    pub(super) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Closes stdin now: what is queued is dropped, and a write in progress
    /// is abandoned (the backend sees end of file).
    pub(super) fn close(&self) {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(writer) = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            writer.abort();
        }
    }
}

/// The writer task: writes each line in order until the queue closes or a
/// write fails (the connection is then told, and ends).
async fn write_lines(
    mut pipe: ChildStdin,
    mut lines: mpsc::UnboundedReceiver<Line>,
    conn: Weak<BackendConn>,
    waiting: Arc<AtomicUsize>,
) {
    while let Some(line) = lines.recv().await {
        let len = line.bytes().len();
        let request = match &line {
            Line::Request { id, .. } => Some(*id),
            Line::Other(_) => None,
        };
        let write = request.is_none_or(|id| conn.upgrade().is_some_and(|c| c.begin_writing(id)));
        if write {
            let written = async {
                pipe.write_all(line.bytes()).await?;
                pipe.flush().await
            }
            .await;
            if let Err(error) = written {
                waiting.fetch_sub(len, Ordering::SeqCst);
                drop(pipe);
                if let Some(conn) = conn.upgrade() {
                    conn.stdin_failed(&error).await;
                }
                return;
            }
            if let (Some(id), Some(conn)) = (request, conn.upgrade()) {
                conn.written(id);
            }
        }
        waiting.fetch_sub(len, Ordering::SeqCst);
    }
}
