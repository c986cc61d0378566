//! The writing half of a backend connection: one task per process owns its
//! stdin and writes the lines queued for it, in order.
//!
//! Owns the queue of lines waiting for a backend's stdin and the count of
//! their bytes: a backend that stops reading holds at most `max_waiting`
//! bytes of the gateway's memory, and a line beyond that is refused at once.
//! A line with nothing waiting before it is written at once by its sender,
//! as far as the pipe takes it without blocking; the writer task writes the
//! rest, and everything queued behind it. A request whose caller gave up
//! before its line was begun is skipped. Closing stdin (when the connection
//! stops) takes effect at once, even in the middle of a write the backend
//! does not drain. Nothing here waits for a backend's answer, and nobody
//! waits on a lock while a write blocks.

use std::io::Write as _;
use std::os::fd::AsFd as _;
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
    /// The rest of a line its sender began to write (of request `request`,
    /// if it is one): always written, since the backend has its start.
    Rest {
        request: Option<u64>,
        bytes: Vec<u8>,
    },
}

impl Line {
    fn bytes(&self) -> &[u8] {
        match self {
            Line::Request { bytes, .. } | Line::Other(bytes) | Line::Rest { bytes, .. } => bytes,
        }
    }

    /// What is left of this line once its first `written` bytes are in the pipe.
    fn rest(self, written: usize) -> Line {
        let (request, mut bytes) = match self {
            Line::Request { id, bytes } => (Some(id), bytes),
            Line::Other(bytes) => (None, bytes),
            Line::Rest { request, bytes } => (request, bytes),
        };
        bytes.drain(..written);
        Line::Rest { request, bytes }
    }
}

/// How far a queued line got before [`Stdin::queue`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sent {
    /// All of it is in the pipe.
    Written,
    /// Its start is in the pipe; the writer task writes the rest.
    Begun,
    /// It waits for the writer task.
    Queued,
}

/// Why a line was not queued.
#[derive(Debug)]
pub(super) enum NotQueued {
    /// Stdin is closed (the connection stopped, or a write failed).
    Closed,
    /// The backend is not reading: this many bytes already wait for it.
    Full { waiting: usize },
}

/// A backend's stdin: written at once by a sender while nothing waits, else
/// by a task of its own.
pub(super) struct Stdin {
    queue: Mutex<Option<Open>>,
    /// Bytes queued and not yet written.
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// An open stdin: the writer task's queue, and the pipe for writing at once.
struct Open {
    tx: mpsc::UnboundedSender<Line>,
    /// The pipe again (a duplicate of the writer's descriptor, so
    /// non-blocking like it, and closed on exec): written only while nothing
    /// waits for the writer task, so that lines stay in order.
    direct: Option<std::fs::File>,
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
                let direct = pipe
                    .as_fd()
                    .try_clone_to_owned()
                    .ok()
                    .map(std::fs::File::from);
                let (tx, rx) = mpsc::unbounded_channel();
                let task = tokio::spawn(write_lines(pipe, rx, conn, Arc::clone(&waiting)));
                (Some(Open { tx, direct }), Some(task))
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

    /// Writes `line` at once as far as the pipe takes it without blocking,
    /// when nothing waits before it; queues the rest for the writer task.
    /// Never waits for the backend.
    pub(super) fn queue(&self, mut line: Line) -> Result<Sent, NotQueued> {
        let queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(open) = queue.as_ref() else {
            return Err(NotQueued::Closed);
        };
        let mut sent = Sent::Queued;
        // Every line queued is counted here under this lock and uncounted by
        // the writer once written: none counted means the writer is idle
        // and the pipe is this sender's alone.
        if self.waiting.load(Ordering::SeqCst) == 0
            && let Some(mut direct) = open.direct.as_ref()
        {
            // Would-block and failures alike leave the line to the writer
            // task, which waits for the pipe or reports the failure.
            match direct.write(line.bytes()) {
                Ok(n) if n == line.bytes().len() => return Ok(Sent::Written),
                Ok(n) if n > 0 => {
                    line = line.rest(n);
                    sent = Sent::Begun;
                }
                _ => {}
            }
        }
        let len = line.bytes().len();
        let before = self.waiting.fetch_add(len, Ordering::SeqCst);
        // One line is always let through, whatever its size (the body limit
        // bounds it); the cap is on lines piling up behind it.
        if before > 0 && before + len > self.max_waiting {
            self.waiting.fetch_sub(len, Ordering::SeqCst);
            return Err(NotQueued::Full { waiting: before });
        }
        open.tx.send(line).map(|()| sent).map_err(|_| {
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
        let (request, write) = match &line {
            Line::Request { id, .. } => (
                Some(*id),
                conn.upgrade().is_some_and(|c| c.begin_writing(*id)),
            ),
            Line::Rest { request, .. } => (*request, true),
            Line::Other(_) => (None, true),
        };
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

#[cfg(test)]
mod tests {
    use std::process::Stdio;
    use std::time::Duration;

    use tokio::io::AsyncReadExt;

    use super::*;

    /// A `cat` whose output is read only when the test says so.
    fn cat() -> tokio::process::Child {
        tokio::process::Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("cat starts")
    }

    #[tokio::test]
    async fn lines_written_at_once_and_by_the_writer_reach_the_pipe_whole_and_in_order() {
        let mut child = cat();
        let stdin = Stdin::start(child.stdin.take(), Weak::new(), 64 << 20);
        let mut stdout = child.stdout.take().expect("piped");

        // Nothing waits: a short line goes into the pipe at once.
        let first = b"first\n".to_vec();
        assert_eq!(
            stdin.queue(Line::Other(first.clone())).unwrap(),
            Sent::Written
        );
        assert_eq!(stdin.waiting(), 0);

        // Larger than a pipe holds: its start is written, the writer task
        // writes the rest once `cat` reads; a line behind it waits its turn.
        let big: Vec<u8> = (0..4 << 20)
            .map(|i| b'a' + (i % 26) as u8)
            .chain([b'\n'])
            .collect();
        assert_eq!(stdin.queue(Line::Other(big.clone())).unwrap(), Sent::Begun);
        assert!(stdin.waiting() > 0);
        let last = b"last\n".to_vec();
        assert_eq!(
            stdin.queue(Line::Other(last.clone())).unwrap(),
            Sent::Queued
        );

        let expected: Vec<u8> = [first, big, last].concat();
        let mut read = vec![0; expected.len()];
        tokio::time::timeout(Duration::from_secs(30), stdout.read_exact(&mut read))
            .await
            .expect("cat echoes everything within the deadline")
            .expect("reads");
        assert!(read == expected, "the bytes came back out of order");

        // Once the writer has written everything, the pipe is free again.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while stdin.waiting() > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the writer never finished"
            );
            tokio::task::yield_now().await;
        }
        assert_eq!(
            stdin.queue(Line::Other(b"again\n".to_vec())).unwrap(),
            Sent::Written
        );

        // Closed: every line is refused, and `cat` sees the end of its input
        // (the descriptor kept for writing at once is closed with it).
        stdin.close();
        assert!(matches!(
            stdin.queue(Line::Other(b"x\n".to_vec())),
            Err(NotQueued::Closed)
        ));
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stdout.read_to_end(&mut rest))
            .await
            .expect("cat sees end of file once stdin is closed")
            .expect("reads");
        assert_eq!(rest, b"again\n");
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .expect("cat exits")
            .expect("waits");
        assert!(status.success());
    }
}
