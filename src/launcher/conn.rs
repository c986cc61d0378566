//! One live backend connection: a child process and its three pipes.
//!
//! Owns the JSON-RPC traffic with one stdio backend: writing client messages to
//! its stdin with ids remapped to the connection's own numbers, reading its
//! stdout line by line and routing each line (answers to the waiting request,
//! with the client's original id put back; requests and notifications to the
//! session's [`ServerMessageSink`]), logging its stderr and keeping the last
//! lines, and noticing at once when it exits. Bytes are forwarded as written:
//! only the id is spliced. It never spawns or signals processes itself (that is
//! `process`) and never knows about HTTP.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};
use tokio::process::Child;
use tokio::sync::{oneshot, watch};

use super::process::{self, StopOutcome};
use super::stdin::{Line, NotQueued, Sent, Stdin};
use crate::jsonrpc::{self, Kind, Message, Refusal, build};
use crate::protocol::Era;

/// How many stderr lines a connection keeps for error messages.
const STDERR_TAIL_LINES: usize = 20;
/// Longest stderr line kept (longer ones are cut).
const STDERR_LINE_MAX: usize = 4096;
/// After the child exits, how long its pipes get to deliver what it wrote last.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(250);

/// Where a backend's own requests and notifications go: the owning session.
pub trait ServerMessageSink: Send + Sync {
    /// Takes one server-to-client message (read once, by the connection).
    /// Returns false when it was neither carried to the client nor refused
    /// (for a request, the backend then gets an error answer at once); a
    /// sink may also hold a request and refuse it later, through the
    /// message's [`Refusal`].
    fn deliver(&self, message: Message) -> bool;
}

/// A backend's answer to a request, with the client's id put back.
#[derive(Debug, Clone)]
pub struct Answer {
    pub bytes: Bytes,
    /// True for a JSON-RPC error answer (known from routing it; no second parse).
    pub is_error: bool,
}

/// Names used in logs and errors for one connection.
#[derive(Debug, Clone)]
pub struct ConnLabel {
    pub server: Arc<str>,
    pub session: Arc<str>,
}

/// Why a request to a backend got no answer. Each failure knows its own
/// metric label and JSON-RPC code (`metric_label`, `jsonrpc_code`), so the
/// layers above need not match on it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnFailure {
    #[error("the backend process exited ({status}) while the request was pending")]
    Exited {
        status: String,
        stderr_tail: Vec<String>,
    },
    #[error("the backend closed its stdout")]
    StdoutClosed { stderr_tail: Vec<String> },
    /// Holds the write error's text, not the `io::Error`: a failure is cloned
    /// to every pending request (and `io::Error` is not `Clone`), and the
    /// layers above also build one from a message of their own.
    #[error("writing to the backend's stdin failed: {0}")]
    WriteFailed(String),
    #[error("the backend did not answer within {0:?}")]
    Timeout(Duration),
    /// The request was still waiting for the backend to read its stdin when
    /// its deadline came.
    #[error(
        "the backend did not read the request from its stdin within {after:?} ({waiting} bytes were waiting for it)"
    )]
    StdinNotRead { after: Duration, waiting: usize },
    #[error("the backend is not reading its stdin ({waiting} bytes are already waiting for it)")]
    StdinFull { waiting: usize },
    #[error("the backend connection was closed by the gateway ({0})")]
    Stopped(&'static str),
    #[error("the backend was evicted after {0} transport failures in a row")]
    TooManyErrors(u32),
    #[error("the backend's answer ({len} bytes) exceeds max_message_bytes ({max} bytes)")]
    MessageTooLarge { len: usize, max: usize },
}

impl ConnFailure {
    /// The stderr lines the backend wrote last, where the failure has them.
    pub fn stderr_tail(&self) -> &[String] {
        match self {
            ConnFailure::Exited { stderr_tail, .. } | ConnFailure::StdoutClosed { stderr_tail } => {
                stderr_tail
            }
            _ => &[],
        }
    }

    /// The `kind` of `mcpgate_errors_total` this failure counts under. A
    /// fixed phrase per variant: dashboards and alerts match on it.
    pub(crate) fn metric_label(&self) -> &'static str {
        match self {
            ConnFailure::Exited { .. } => "backend_exited",
            ConnFailure::StdoutClosed { .. } => "backend_stdout_closed",
            ConnFailure::WriteFailed(_) => "backend_write_failed",
            ConnFailure::Timeout(_) => "backend_timeout",
            ConnFailure::StdinNotRead { .. } => "backend_stdin_not_read",
            ConnFailure::StdinFull { .. } => "backend_stdin_full",
            ConnFailure::Stopped(_) => "backend_stopped",
            ConnFailure::TooManyErrors(_) => "backend_too_many_errors",
            ConnFailure::MessageTooLarge { .. } => "backend_message_too_large",
        }
    }

    /// The JSON-RPC error code a client gets for this failure: a timeout has
    /// a code of its own, so a client can tell it from a backend that broke;
    /// every other failure is the gateway's internal error.
    pub(crate) fn jsonrpc_code(&self) -> i32 {
        match self {
            ConnFailure::Timeout(_) | ConnFailure::StdinNotRead { .. } => jsonrpc::REQUEST_TIMEOUT,
            _ => jsonrpc::INTERNAL_ERROR,
        }
    }
}

struct Pending {
    /// The client session that sent the request (several share a process in
    /// shared mode; their ids may be equal).
    owner: Arc<str>,
    /// The id as the client wrote it, put back into the answer.
    client_id: Box<str>,
    reply: oneshot::Sender<Result<Answer, ConnFailure>>,
    /// How far its line got towards the backend's stdin.
    line: LineState,
}

/// How far a request's line got towards the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineState {
    Queued,
    /// Being written (the backend may be slow to read the rest).
    Writing,
    /// All of it is in the pipe.
    Written,
}

#[derive(Default)]
struct Requests {
    pending: HashMap<u64, Pending>,
    /// Error answers with `"id": null` not yet given to a request.
    orphans: Vec<Orphan>,
    /// Set once: the connection is finished and every later request fails with this.
    closed: Option<ConnFailure>,
}

/// An error answer with `"id": null`: the backend could not read a request
/// (a parse error, say), so it could not say which. It belongs to one of the
/// requests written before it came, and that one will get no other answer.
struct Orphan {
    line: Bytes,
    /// Where `null` sits in `line`.
    id_range: Range<usize>,
    /// The requests it may belong to (written, unanswered), sorted.
    candidates: Vec<u64>,
}

impl Requests {
    /// Gives orphan errors to their requests where that is now certain: once
    /// every other candidate got its own answer (or gave up), the one left is
    /// it; `n` orphans with the same `n` candidates take them all. Returns the
    /// requests answered, with their answers (the client's id spliced in).
    fn settle(&mut self) -> Vec<(Pending, Bytes)> {
        let mut settled = Vec::new();
        loop {
            let pending = &self.pending;
            for orphan in &mut self.orphans {
                orphan.candidates.retain(|id| pending.contains_key(id));
            }
            self.orphans.retain(|o| !o.candidates.is_empty());
            let same = |set: &[u64]| self.orphans.iter().filter(|o| o.candidates == set).count();
            let Some(set) = self
                .orphans
                .iter()
                .find(|o| same(&o.candidates) >= o.candidates.len())
                .map(|o| o.candidates.clone())
            else {
                return settled;
            };
            for id in set {
                let at = self
                    .orphans
                    .iter()
                    .position(|o| o.candidates.contains(&id))
                    .expect("a group has an orphan per candidate");
                let orphan = self.orphans.remove(at);
                if let Some(p) = self.pending.remove(&id) {
                    let answer =
                        jsonrpc::splice(&orphan.line, orphan.id_range, p.client_id.as_bytes());
                    settled.push((p, Bytes::from(answer)));
                }
            }
        }
    }
}

/// A running backend process and the routing of its messages.
pub struct BackendConn {
    server: Arc<str>,
    /// The session it serves, in logs (a spare's changes when it is claimed).
    session: std::sync::RwLock<Arc<str>>,
    pid: u32,
    /// Written by a task of its own (`stdin`): nobody waits on a backend
    /// that does not read.
    stdin: OnceLock<Stdin>,
    requests: Mutex<Requests>,
    next_id: AtomicU64,
    stderr_tail: Mutex<VecDeque<String>>,
    exited: watch::Receiver<Option<ExitStatus>>,
    closed: watch::Sender<bool>,
    /// Where the backend's own messages go (a spare's changes when it is claimed).
    sink: std::sync::RwLock<Arc<dyn ServerMessageSink>>,
    /// Transport failures since the last success.
    consecutive_errors: AtomicU32,
    /// Failures in a row that close the connection.
    max_errors: u32,
    init_result: std::sync::OnceLock<Bytes>,
    /// The era the handshake settled on: the session era after `initialize`;
    /// stateless (every request needs `_meta`) after `server/discover`.
    era: std::sync::OnceLock<Era>,
    started: std::time::Instant,
}

impl BackendConn {
    /// Takes over a freshly spawned child: starts the stdout router, the stderr
    /// logger and the exit watcher.
    pub fn start(
        mut child: Child,
        label: ConnLabel,
        sink: Arc<dyn ServerMessageSink>,
        max_message_bytes: usize,
        max_errors: u32,
    ) -> Arc<BackendConn> {
        let pid = child.id().unwrap_or(0);
        let pipe = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .expect("stdout is piped by process::spawn");
        let stderr = child
            .stderr
            .take()
            .expect("stderr is piped by process::spawn");
        let (exited_tx, exited) = watch::channel(None);
        let conn = Arc::new(BackendConn {
            server: label.server,
            session: std::sync::RwLock::new(label.session),
            pid,
            stdin: OnceLock::new(),
            requests: Mutex::new(Requests::default()),
            next_id: AtomicU64::new(1),
            stderr_tail: Mutex::new(VecDeque::with_capacity(STDERR_TAIL_LINES)),
            exited,
            closed: watch::channel(false).0,
            sink: std::sync::RwLock::new(sink),
            consecutive_errors: AtomicU32::new(0),
            max_errors,
            init_result: std::sync::OnceLock::new(),
            era: std::sync::OnceLock::new(),
            started: std::time::Instant::now(),
        });
        let writer = Stdin::start(pipe, Arc::downgrade(&conn), max_message_bytes);
        if conn.stdin.set(writer).is_err() {
            unreachable!("a new connection's stdin is set once");
        }
        let reader = tokio::spawn(Arc::clone(&conn).read_stdout(
            BufReader::with_capacity(64 * 1024, stdout),
            max_message_bytes,
        ));
        let logger = tokio::spawn(Arc::clone(&conn).read_stderr(BufReader::new(stderr)));
        tokio::spawn(Arc::clone(&conn).watch_exit(child, exited_tx, reader, logger));
        conn
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The id of the server this process belongs to.
    pub fn server(&self) -> &Arc<str> {
        &self.server
    }

    /// The session the connection serves, as logs name it.
    pub fn session_label(&self) -> Arc<str> {
        Arc::clone(&self.session.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Hands a warm spare to the session it now serves: its own messages go
    /// to `sink`, and logs name `session`.
    pub(crate) fn adopt(&self, session: Arc<str>, sink: Arc<dyn ServerMessageSink>) {
        *self.session.write().unwrap_or_else(PoisonError::into_inner) = session;
        *self.sink.write().unwrap_or_else(PoisonError::into_inner) = sink;
    }

    /// How long ago the process was started.
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }

    /// Transport failures since the last success.
    pub fn consecutive_errors(&self) -> u32 {
        self.consecutive_errors.load(Ordering::Relaxed)
    }

    /// The backend's answer to the handshake that started it.
    pub fn init_result(&self) -> Option<Bytes> {
        self.init_result.get().cloned()
    }

    /// Records the backend's answer to the handshake (once), and the
    /// era it speaks: its `initialize` or `server/discover` answer.
    pub(crate) fn set_init_result(&self, answer: Bytes, era: Era) {
        let _ = self.init_result.set(answer);
        let _ = self.era.set(era);
    }

    /// The protocol era of the process (the session era until the handshake
    /// says otherwise).
    pub(crate) fn era(&self) -> Era {
        self.era.get().copied().unwrap_or(Era::Session)
    }

    /// True once the connection can serve no more requests.
    pub fn is_closed(&self) -> bool {
        self.lock_requests().closed.is_some()
    }

    /// True when the gateway ended the connection on purpose (`stop`); false
    /// for a crash or an eviction for errors, whose process tree still has to go.
    pub fn stopped_by_request(&self) -> bool {
        matches!(self.lock_requests().closed, Some(ConnFailure::Stopped(_)))
    }

    /// True when the backend ended on its own: it exited or closed its stdout.
    pub fn crashed(&self) -> bool {
        matches!(
            self.lock_requests().closed,
            Some(ConnFailure::Exited { .. } | ConnFailure::StdoutClosed { .. })
        )
    }

    /// Counts a transport failure (timeout, failed write, unparseable output);
    /// the `max_errors`-th in a row closes the connection, and the pool then
    /// stops its process tree.
    fn record_failure(&self, what: &str) {
        let count = self.consecutive_errors.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::debug!(server = %self.server, session = %self.session_label(),
            count, max = self.max_errors, what, "transport failure");
        if count >= self.max_errors && !self.is_closed() {
            tracing::warn!(server = %self.server, session = %self.session_label(),
                pid = self.pid, count, "evicting backend after too many transport failures in a row");
            self.close(ConnFailure::TooManyErrors(count));
        }
    }

    /// A message came through: the failure count starts again.
    fn record_success(&self) {
        self.consecutive_errors.store(0, Ordering::Relaxed);
    }

    /// Resolves when the connection closes (at once if it already has).
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.closed.subscribe();
        async move {
            let _ = rx.wait_for(|closed| *closed).await;
        }
    }

    /// The last lines the backend wrote to stderr.
    pub fn stderr_tail(&self) -> Vec<String> {
        lock(&self.stderr_tail).iter().cloned().collect()
    }

    /// Sends a request of session `owner` and waits for its answer. `id_range`
    /// locates the client's id in `message`; the answer comes back with that id,
    /// every other byte as the backend wrote it.
    pub async fn request(
        &self,
        owner: &Arc<str>,
        message: &[u8],
        id_range: Range<usize>,
        timeout: Duration,
    ) -> Result<Answer, ConnFailure> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let client_id = std::str::from_utf8(&message[id_range.clone()])
            .unwrap_or("null")
            .into();
        let mut line = jsonrpc::splice_with_room(message, id_range, Decimal::of(id).as_bytes(), 1);
        jsonrpc::to_single_line(&mut line);
        line.push(b'\n');

        let (reply, answer) = oneshot::channel();
        {
            let mut requests = self.lock_requests();
            if let Some(failure) = &requests.closed {
                return Err(failure.clone());
            }
            requests.pending.insert(
                id,
                Pending {
                    owner: Arc::clone(owner),
                    client_id,
                    reply,
                    line: LineState::Queued,
                },
            );
        }
        // Whatever happens next (error, timeout, or the caller giving up), the
        // pending entry must not outlive this call.
        let _forget = ForgetOnDrop { conn: self, id };
        // Written at once if the pipe takes it, else queued: the deadline
        // below covers the write too.
        match self.queue(Line::Request { id, bytes: line })? {
            Sent::Written => self.written(id),
            Sent::Begun => {
                self.begin_writing(id);
            }
            Sent::Queued => {}
        }
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(self.failure_or(ConnFailure::Stopped("request dropped"))),
            Err(_) => {
                let line = self.lock_requests().pending.remove(&id).map(|p| p.line);
                self.settle_orphans();
                // A line not yet begun is skipped now that nobody waits for
                // it; one that was begun gets its cancellation after it.
                if matches!(line, Some(LineState::Writing | LineState::Written)) {
                    self.cancel_timed_out(id, timeout);
                }
                if line == Some(LineState::Written) {
                    self.record_failure("request timed out");
                    Err(ConnFailure::Timeout(timeout))
                } else {
                    self.record_failure("stdin not read");
                    Err(ConnFailure::StdinNotRead {
                        after: timeout,
                        waiting: self.stdin().waiting(),
                    })
                }
            }
        }
    }

    /// Writes a notification or a client's response as it is.
    pub async fn send(&self, message: &[u8]) -> Result<(), ConnFailure> {
        if let Some(failure) = &self.lock_requests().closed {
            return Err(failure.clone());
        }
        let mut line = message.to_vec();
        jsonrpc::to_single_line(&mut line);
        line.push(b'\n');
        self.queue(Line::Other(line)).map(|_| ())
    }

    /// Forwards a client's `notifications/cancelled`, rewriting its `requestId`
    /// to the connection's own id. A cancellation of a request that is not in
    /// flight is dropped, as the spec asks.
    pub async fn forward_cancel(
        &self,
        owner: &str,
        message: &[u8],
        request_id: &str,
        request_id_range: Range<usize>,
    ) -> Result<(), ConnFailure> {
        let backend_id = {
            let requests = self.lock_requests();
            requests
                .pending
                .iter()
                .find(|(_, p)| &*p.owner == owner && &*p.client_id == request_id)
                .map(|(id, _)| *id)
        };
        match backend_id {
            Some(id) => {
                self.send(&jsonrpc::splice(
                    message,
                    request_id_range,
                    Decimal::of(id).as_bytes(),
                ))
                .await
            }
            None => {
                tracing::debug!(server = %self.server, session = %self.session_label(),
                    request_id, "dropping cancellation of a request that is not in flight");
                Ok(())
            }
        }
    }

    /// Ends the connection: fails pending requests, closes stdin (at once,
    /// even while a write to a backend that does not read is stuck) and stops
    /// the whole process group (SIGTERM, then SIGKILL after `grace`).
    pub async fn stop(&self, reason: &'static str, grace: Duration) -> StopOutcome {
        self.close(ConnFailure::Stopped(reason));
        self.stdin().close();
        let outcome = process::stop_group(self.pid, self.exited.clone(), grace).await;
        tracing::info!(server = %self.server, session = %self.session_label(), pid = self.pid,
            reason, ?outcome, "backend stopped");
        outcome
    }

    /// Bytes queued for the backend's stdin and not yet written (a backend
    /// that stops reading holds them, up to `max_message_bytes`).
    pub fn stdin_waiting(&self) -> usize {
        self.stdin().waiting()
    }

    fn stdin(&self) -> &Stdin {
        self.stdin.get().expect("set when the connection starts")
    }

    /// Queues a line for the backend's stdin; refuses it when the connection
    /// is closed or the backend has stopped reading.
    fn queue(&self, line: Line) -> Result<Sent, ConnFailure> {
        match self.stdin().queue(line) {
            Ok(sent) => Ok(sent),
            Err(NotQueued::Closed) => {
                Err(self.failure_or(ConnFailure::WriteFailed("stdin is closed".into())))
            }
            Err(NotQueued::Full { waiting }) => {
                self.record_failure("stdin full");
                Err(ConnFailure::StdinFull { waiting })
            }
        }
    }

    /// Called just before request `id`'s line is begun: true (and the
    /// request marked as being written, unless it is already written) if its
    /// caller still waits.
    pub(super) fn begin_writing(&self, id: u64) -> bool {
        match self.lock_requests().pending.get_mut(&id) {
            Some(pending) => {
                if pending.line == LineState::Queued {
                    pending.line = LineState::Writing;
                }
                true
            }
            None => false,
        }
    }

    /// Called once request `id`'s line is all written.
    pub(super) fn written(&self, id: u64) {
        if let Some(pending) = self.lock_requests().pending.get_mut(&id) {
            pending.line = LineState::Written;
        }
    }

    /// Called by the stdin writer when a write failed: the connection ends.
    /// A broken pipe usually means the process is exiting: the exit watcher
    /// gets a moment first, so that the error carries the exit status and
    /// stderr.
    pub(super) async fn stdin_failed(&self, error: &std::io::Error) {
        self.record_failure("write failed");
        let _ = tokio::time::timeout(2 * DRAIN_AFTER_EXIT, self.closed()).await;
        self.close(ConnFailure::WriteFailed(error.to_string()));
    }

    fn cancel_timed_out(&self, id: u64, timeout: Duration) {
        let mut note = build::cancelled(
            &id.to_string(),
            &format!("timed out after {timeout:?} at the gateway"),
        )
        .to_vec();
        note.push(b'\n');
        let _ = self.queue(Line::Other(note));
    }

    fn lock_requests(&self) -> std::sync::MutexGuard<'_, Requests> {
        lock(&self.requests)
    }

    /// The failure that closed the connection, or `otherwise` if it is open.
    fn failure_or(&self, otherwise: ConnFailure) -> ConnFailure {
        self.lock_requests().closed.clone().unwrap_or(otherwise)
    }

    /// Marks the connection finished and fails every pending request. The first
    /// failure wins.
    fn close(&self, failure: ConnFailure) {
        let pending = {
            let mut requests = self.lock_requests();
            if requests.closed.is_some() {
                return;
            }
            requests.closed = Some(failure.clone());
            std::mem::take(&mut requests.pending)
        };
        for (_, p) in pending {
            let _ = p.reply.send(Err(failure.clone()));
        }
        self.closed.send_replace(true);
    }

    async fn read_stdout<R: AsyncBufRead + Unpin>(self: Arc<Self>, mut reader: R, max: usize) {
        let mut line = Vec::with_capacity(8 * 1024);
        let mut oversize = Oversize::default();
        loop {
            match read_bounded_line(&mut reader, &mut line, max, &mut oversize).await {
                Ok(LineRead::Line) => {
                    self.route(&line);
                    // One huge answer must not pin its size in every idle connection.
                    if line.capacity() > LINE_BUFFER_KEEP {
                        line.clear();
                        line.shrink_to(LINE_BUFFER_KEEP);
                    }
                }
                Ok(LineRead::TooLong(len)) => {
                    tracing::warn!(server = %self.server, session = %self.session_label(),
                        len, max, "backend wrote a message larger than max_message_bytes; dropped");
                    self.record_failure("message too large");
                    self.fail_oversized(&oversize, len, max);
                }
                Ok(LineRead::Eof) | Err(_) => break,
            }
        }
    }

    /// Routes one line the backend wrote on stdout.
    fn route(self: &Arc<Self>, line: &[u8]) {
        let trimmed = trim_ascii_end(line);
        if trimmed.is_empty() {
            return;
        }
        let peek = match jsonrpc::peek(trimmed) {
            Ok(peek) => peek,
            Err(e) => {
                let shown = String::from_utf8_lossy(&trimmed[..trimmed.len().min(200)]);
                tracing::warn!(server = %self.server, session = %self.session_label(),
                    error = %e, line = %shown, "backend wrote a line that is not JSON-RPC; ignored");
                self.record_failure("unparseable output");
                return;
            }
        };
        self.record_success();
        match peek.kind {
            Kind::Response if peek.id == Some("null") => {
                let range = peek.id_range.expect("an id has a range");
                self.take_orphan(Bytes::copy_from_slice(trimmed), range);
            }
            Kind::Response => {
                let (Some(id), Some(range)) = (peek.id, peek.id_range) else {
                    return;
                };
                let pending = id
                    .parse::<u64>()
                    .ok()
                    .and_then(|id| self.lock_requests().pending.remove(&id));
                match pending {
                    Some(p) => {
                        let answer = jsonrpc::splice(trimmed, range, p.client_id.as_bytes());
                        let _ = p.reply.send(Ok(Answer {
                            bytes: Bytes::from(answer),
                            is_error: peek.error.is_some(),
                        }));
                    }
                    None => tracing::debug!(server = %self.server,
                        session = %self.session_label(), id,
                        "answer to no pending request (timed out or cancelled); dropped"),
                }
                self.settle_orphans();
            }
            Kind::Request | Kind::Notification => {
                let kind = peek.kind;
                let refused_id =
                    (kind == Kind::Request).then(|| peek.id.unwrap_or("null").to_owned());
                let mut message = Message::new(Bytes::copy_from_slice(trimmed), &peek);
                if let Some(id) = &refused_id {
                    let (conn, id) = (Arc::downgrade(self), id.clone());
                    message = message.with_refusal(Refusal::new(move |why| {
                        if let Some(conn) = conn.upgrade() {
                            conn.refuse_server_request(id.clone(), why);
                        }
                    }));
                }
                let sink = Arc::clone(&self.sink.read().unwrap_or_else(PoisonError::into_inner));
                if !sink.deliver(message)
                    && let Some(id) = refused_id
                {
                    self.refuse_server_request(
                        id,
                        "the gateway has no open client stream to carry this request",
                    );
                }
            }
        }
    }

    /// Takes an error answer with `"id": null` (see [`Orphan`]): it goes to
    /// the one request it can belong to, at once or once the others are
    /// answered. It is not a transport failure: the backend said what went
    /// wrong.
    fn take_orphan(&self, line: Bytes, id_range: Range<usize>) {
        let settled = {
            let mut requests = self.lock_requests();
            let mut candidates: Vec<u64> = requests
                .pending
                .iter()
                // A line the backend has begun to read may be the one it
                // could not parse (its writer may not have heard yet that
                // the write ended).
                .filter(|(_, p)| p.line != LineState::Queued)
                .map(|(id, _)| *id)
                .collect();
            if candidates.is_empty() {
                None
            } else {
                candidates.sort_unstable();
                requests.orphans.push(Orphan {
                    line,
                    id_range,
                    candidates,
                });
                Some(requests.settle())
            }
        };
        match settled {
            None => tracing::warn!(server = %self.server, session = %self.session_label(),
                "the backend answered an error with id null while no request was in flight; dropped"),
            Some(settled) => {
                tracing::info!(server = %self.server, session = %self.session_label(),
                    "the backend answered an error with id null (it could not read a request); \
                     it goes to the one request it can belong to");
                deliver(settled);
            }
        }
    }

    /// Gives orphan errors whose request is now certain to it.
    fn settle_orphans(&self) {
        let settled = {
            let mut requests = self.lock_requests();
            if requests.orphans.is_empty() {
                return;
            }
            requests.settle()
        };
        deliver(settled);
    }

    /// Fails the request an oversized answer was for, so its client gets a clear
    /// error at once instead of a timeout. The id is looked for at the start of
    /// the line and at its end (where SDKs that write `result` first put it); if
    /// it cannot be found and exactly one request is pending, that one is failed.
    fn fail_oversized(&self, oversize: &Oversize, len: usize, max: usize) {
        let id = find_id(&oversize.head).or_else(|| find_id(&oversize.tail));
        let pending = {
            let mut requests = self.lock_requests();
            let id = id.or_else(|| {
                (requests.pending.len() == 1).then(|| *requests.pending.keys().next().expect("one"))
            });
            id.and_then(|id| requests.pending.remove(&id))
        };
        if let Some(p) = pending {
            let _ = p.reply.send(Err(ConnFailure::MessageTooLarge { len, max }));
        }
    }

    /// Answers a backend's request that no client stream can carry (queued:
    /// the stdout reader never waits on stdin).
    fn refuse_server_request(self: &Arc<Self>, id: String, why: &str) {
        let mut answer =
            jsonrpc::error_response(Some(&id), jsonrpc::INTERNAL_ERROR, why, None).to_vec();
        answer.push(b'\n');
        if let Err(e) = self.queue(Line::Other(answer)) {
            tracing::debug!(server = %self.server, error = %e,
                "could not refuse a backend request");
        }
    }

    /// Logs the backend's stderr line by line (at most
    /// [`STDERR_LOG_LINES_PER_SECOND`]; past that, one line a second says how
    /// many were left out) and keeps the last lines for error messages.
    async fn read_stderr<R: AsyncBufRead + Unpin>(self: Arc<Self>, mut reader: R) {
        let mut line = Vec::with_capacity(512);
        let mut oversize = Oversize::default();
        let mut flood = Flood::default();
        loop {
            match read_bounded_line(&mut reader, &mut line, STDERR_LINE_MAX, &mut oversize).await {
                Ok(LineRead::Line) => {
                    let text = String::from_utf8_lossy(trim_ascii_end(&line)).into_owned();
                    match flood.admit(std::time::Instant::now()) {
                        Admit::Log { left_out } => {
                            self.log_left_out(left_out);
                            tracing::info!(target: "mcpgate::backend", server = %self.server,
                                session = %self.session_label(), pid = self.pid, "{text}");
                        }
                        Admit::LeaveOut => {}
                    }
                    let mut tail = lock(&self.stderr_tail);
                    if tail.len() == STDERR_TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(text);
                }
                Ok(LineRead::TooLong(_)) => {}
                Ok(LineRead::Eof) | Err(_) => break,
            }
        }
        self.log_left_out(flood.left_out());
    }

    fn log_left_out(&self, left_out: u64) {
        if left_out > 0 {
            tracing::warn!(target: "mcpgate::backend", server = %self.server,
                session = %self.session_label(), pid = self.pid, left_out,
                "stderr flood: {left_out} lines were left out of the log (the last {STDERR_TAIL_LINES} are kept for errors)");
        }
    }

    async fn watch_exit(
        self: Arc<Self>,
        mut child: Child,
        exited: watch::Sender<Option<ExitStatus>>,
        mut reader: tokio::task::JoinHandle<()>,
        mut logger: tokio::task::JoinHandle<()>,
    ) {
        // Either the process exits, or it closes stdout while alive.
        let mut reader_done = false;
        let status = tokio::select! {
            status = child.wait() => status,
            _ = &mut reader => {
                reader_done = true;
                match tokio::time::timeout(DRAIN_AFTER_EXIT, child.wait()).await {
                    Ok(status) => status,
                    Err(_) => {
                        let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, &mut logger).await;
                        self.close(ConnFailure::StdoutClosed { stderr_tail: self.stderr_tail() });
                        child.wait().await
                    }
                }
            }
        };
        let status_text = match &status {
            Ok(s) => s.to_string(),
            Err(e) => format!("unknown exit status: {e}"),
        };
        if let Ok(s) = status {
            exited.send_replace(Some(s));
        }
        // Let the pipes deliver what the process wrote last (grandchildren may
        // hold them open, so this is bounded).
        let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, async {
            if !reader_done {
                let _ = (&mut reader).await;
            }
            if !logger.is_finished() {
                let _ = (&mut logger).await;
            }
        })
        .await;
        tracing::info!(server = %self.server, session = %self.session_label(),
            pid = self.pid, status = %status_text, "backend exited");
        self.close(ConnFailure::Exited {
            status: status_text,
            stderr_tail: self.stderr_tail(),
        });
    }
}

/// Stderr lines of one backend logged per second at most.
const STDERR_LOG_LINES_PER_SECOND: u32 = 100;

/// Counts a backend's stderr lines per second, to keep a flood out of the log.
#[derive(Default)]
struct Flood {
    second_began: Option<std::time::Instant>,
    logged: u32,
    left_out: u64,
}

enum Admit {
    /// Log the line; first say that `left_out` lines were left out.
    Log {
        left_out: u64,
    },
    LeaveOut,
}

impl Flood {
    fn admit(&mut self, now: std::time::Instant) -> Admit {
        let began = *self.second_began.get_or_insert(now);
        let mut left_out = 0;
        if now.duration_since(began) >= Duration::from_secs(1) {
            self.second_began = Some(now);
            self.logged = 0;
            left_out = std::mem::take(&mut self.left_out);
        }
        if self.logged < STDERR_LOG_LINES_PER_SECOND {
            self.logged += 1;
            Admit::Log { left_out }
        } else {
            self.left_out += 1;
            Admit::LeaveOut
        }
    }

    /// Lines left out and not yet said.
    fn left_out(&mut self) -> u64 {
        std::mem::take(&mut self.left_out)
    }
}

/// Removes a request's pending entry when its caller is done with it.
struct ForgetOnDrop<'a> {
    conn: &'a BackendConn,
    id: u64,
}

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        if self.conn.lock_requests().pending.remove(&self.id).is_some() {
            self.conn.settle_orphans();
        }
    }
}

/// Sends settled orphan errors to their requests.
fn deliver(settled: Vec<(Pending, Bytes)>) {
    for (pending, bytes) in settled {
        let _ = pending.reply.send(Ok(Answer {
            bytes,
            is_error: true,
        }));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks leaves the data consistent (plain inserts
    // and removes), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A number written in decimal, on the stack.
struct Decimal {
    digits: [u8; 20],
    start: usize,
}

impl Decimal {
    fn of(mut n: u64) -> Decimal {
        let mut digits = [0; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                return Decimal { digits, start };
            }
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.digits[self.start..]
    }
}

fn trim_ascii_end(line: &[u8]) -> &[u8] {
    let mut end = line.len();
    while end > 0 && line[end - 1].is_ascii_whitespace() {
        end -= 1;
    }
    &line[..end]
}

enum LineRead {
    Line,
    Eof,
    /// The line exceeded the limit and was skipped; its length so far.
    TooLong(usize),
}

/// Capacity a connection's line buffer keeps between messages.
const LINE_BUFFER_KEEP: usize = 64 * 1024;

/// How much of the start and of the end of an oversized line is kept, to find
/// the id of the request it answers.
const OVERSIZE_KEEP: usize = 512;

/// The start and the end of the last oversized line.
#[derive(Default)]
struct Oversize {
    head: Vec<u8>,
    tail: Vec<u8>,
}

/// Reads one `\n`-terminated line into `line` without ever holding more than
/// `max` bytes of it; a longer line is consumed and reported as too long, with
/// its first and last bytes kept in `oversize`.
async fn read_bounded_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
    max: usize,
    oversize: &mut Oversize,
) -> std::io::Result<LineRead> {
    line.clear();
    oversize.head.clear();
    oversize.tail.clear();
    let mut skipped = 0usize;
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(match (line.is_empty(), skipped) {
                (true, 0) => LineRead::Eof,
                (_, 0) => LineRead::Line,
                (_, n) => LineRead::TooLong(n),
            });
        }
        let (used, done) = match memchr_newline(chunk) {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if skipped == 0 && line.len() + used <= max.saturating_add(1) {
            line.extend_from_slice(&chunk[..used]);
        } else {
            if skipped == 0 {
                skipped = line.len();
                // A small copy: the line buffer itself may have grown to `max`.
                let mut start = line[..line.len().min(OVERSIZE_KEEP)].to_vec();
                start.extend_from_slice(&chunk[..used.min(OVERSIZE_KEEP - start.len())]);
                oversize.head = start;
                line.clear();
                line.shrink_to(LINE_BUFFER_KEEP);
            }
            skipped += used;
            line.clear();
            oversize
                .tail
                .extend_from_slice(&chunk[used.saturating_sub(OVERSIZE_KEEP)..used]);
            let excess = oversize.tail.len().saturating_sub(OVERSIZE_KEEP);
            oversize.tail.drain(..excess);
        }
        reader.consume(used);
        if done {
            return Ok(if skipped == 0 {
                LineRead::Line
            } else {
                LineRead::TooLong(skipped)
            });
        }
    }
}

/// The gateway id (an integer) after a top-level-looking `"id":` in a fragment.
fn find_id(fragment: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(fragment);
    text.match_indices("\"id\"").find_map(|(at, _)| {
        let rest = text[at + 4..].trim_start().strip_prefix(':')?.trim_start();
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let after = rest[digits.len()..].trim_start();
        (!digits.is_empty()
            && (after.starts_with(',') || after.starts_with('}') || after.is_empty()))
        .then(|| digits.parse().ok())
        .flatten()
    })
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|b| *b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_written_as_to_string_writes_them() {
        for n in [0, 7, 10, 99, 12345, u64::MAX] {
            assert_eq!(Decimal::of(n).as_bytes(), n.to_string().as_bytes());
        }
    }

    /// One failure of each kind (a new variant must be added here: the
    /// labels' match above will not compile without it either).
    fn every_failure() -> Vec<ConnFailure> {
        vec![
            ConnFailure::Exited {
                status: "exit status: 1".into(),
                stderr_tail: vec![],
            },
            ConnFailure::StdoutClosed {
                stderr_tail: vec![],
            },
            ConnFailure::WriteFailed("broken pipe".into()),
            ConnFailure::Timeout(Duration::from_secs(1)),
            ConnFailure::StdinNotRead {
                after: Duration::from_secs(1),
                waiting: 10,
            },
            ConnFailure::StdinFull { waiting: 10 },
            ConnFailure::Stopped("test"),
            ConnFailure::TooManyErrors(3),
            ConnFailure::MessageTooLarge { len: 2, max: 1 },
        ]
    }

    #[test]
    fn each_failure_has_a_label_of_its_own() {
        let labels: Vec<&str> = every_failure().iter().map(|f| f.metric_label()).collect();
        assert_eq!(
            labels,
            [
                "backend_exited",
                "backend_stdout_closed",
                "backend_write_failed",
                "backend_timeout",
                "backend_stdin_not_read",
                "backend_stdin_full",
                "backend_stopped",
                "backend_too_many_errors",
                "backend_message_too_large",
            ]
        );
        let distinct: std::collections::HashSet<&str> = labels.iter().copied().collect();
        assert_eq!(distinct.len(), labels.len(), "{labels:?}");
    }

    #[test]
    fn only_a_timeout_is_a_request_timeout() {
        for failure in every_failure() {
            let expected = if matches!(
                failure,
                ConnFailure::Timeout(_) | ConnFailure::StdinNotRead { .. }
            ) {
                jsonrpc::REQUEST_TIMEOUT
            } else {
                jsonrpc::INTERNAL_ERROR
            };
            assert_eq!(failure.jsonrpc_code(), expected, "{failure:?}");
        }
    }

    /// Pending requests 1..=n, written, with client ids "c1".., and their
    /// answer receivers.
    fn written_requests(
        n: u64,
    ) -> (
        Requests,
        Vec<oneshot::Receiver<Result<Answer, ConnFailure>>>,
    ) {
        let mut requests = Requests::default();
        let mut answers = Vec::new();
        for id in 1..=n {
            let (reply, answer) = oneshot::channel();
            requests.pending.insert(
                id,
                Pending {
                    owner: Arc::from("s"),
                    client_id: format!("\"c{id}\"").into(),
                    reply,
                    line: LineState::Written,
                },
            );
            answers.push(answer);
        }
        (requests, answers)
    }

    fn orphan(candidates: Vec<u64>) -> Orphan {
        let line = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}"#,
        );
        let id_range = jsonrpc::peek(&line).unwrap().id_range.unwrap();
        Orphan {
            line,
            id_range,
            candidates,
        }
    }

    #[test]
    fn a_stderr_flood_is_logged_a_hundred_lines_a_second_and_the_rest_counted() {
        let t0 = std::time::Instant::now();
        let mut flood = Flood::default();
        let logged = (0..250)
            .filter(|_| matches!(flood.admit(t0), Admit::Log { .. }))
            .count();
        assert_eq!(logged, 100);
        // The next second's first line is logged, after word of the 150.
        match flood.admit(t0 + Duration::from_millis(1000)) {
            Admit::Log { left_out } => assert_eq!(left_out, 150),
            Admit::LeaveOut => panic!("a new second logs again"),
        }
        assert_eq!(flood.left_out(), 0);
    }

    #[test]
    fn a_null_id_error_goes_to_the_request_left_once_the_others_are_answered() {
        let (mut requests, _answers) = written_requests(2);
        requests.orphans.push(orphan(vec![1, 2]));
        assert!(requests.settle().is_empty(), "either could be its request");
        // Request 1 gets its own answer: the error is 2's.
        requests.pending.remove(&1);
        let settled = requests.settle();
        assert_eq!(settled.len(), 1);
        let (pending, answer) = &settled[0];
        assert_eq!(&*pending.client_id, "\"c2\"");
        assert!(answer.starts_with(br#"{"jsonrpc":"2.0","id":"c2","error""#));
        assert!(requests.orphans.is_empty() && requests.pending.is_empty());
    }

    #[test]
    fn as_many_null_id_errors_as_candidates_take_them_all_and_none_is_kept_for_nothing() {
        let (mut requests, _answers) = written_requests(3);
        requests.orphans.push(orphan(vec![1, 2]));
        requests.orphans.push(orphan(vec![1, 2]));
        let settled: Vec<String> = requests
            .settle()
            .iter()
            .map(|(p, _)| p.client_id.to_string())
            .collect();
        assert_eq!(settled, ["\"c1\"", "\"c2\""]);
        assert_eq!(requests.pending.len(), 1, "request 3 was no candidate");
        // An orphan whose candidates all got answers is dropped.
        requests.orphans.push(orphan(vec![7]));
        assert!(requests.settle().is_empty());
        assert!(requests.orphans.is_empty());
    }

    async fn lines(input: &[u8], max: usize) -> Vec<Result<Vec<u8>, usize>> {
        let mut reader = BufReader::with_capacity(4, input);
        let mut line = Vec::new();
        let mut out = Vec::new();
        let mut oversize = Oversize::default();
        loop {
            match read_bounded_line(&mut reader, &mut line, max, &mut oversize)
                .await
                .unwrap()
            {
                LineRead::Line => out.push(Ok(line.clone())),
                LineRead::TooLong(n) => {
                    assert!(oversize.head.len() <= OVERSIZE_KEEP && !oversize.head.is_empty());
                    assert!(oversize.tail.ends_with(b"\n"));
                    out.push(Err(n))
                }
                LineRead::Eof => return out,
            }
        }
    }

    #[test]
    fn ids_are_found_at_either_end_of_an_oversized_line() {
        assert_eq!(
            find_id(br#"{"jsonrpc":"2.0","id":17,"result":{"content":[{"text":"xxxx"#),
            Some(17)
        );
        assert_eq!(find_id(br#"xxxx"}]},"jsonrpc":"2.0","id":4}"#), Some(4));
        assert_eq!(find_id(br#"{"text":"the "id": 99 in prose xxx"#), None);
        assert_eq!(find_id(b"no id here"), None);
    }

    #[tokio::test]
    async fn bounded_lines_split_and_skip_oversized_ones() {
        let got = lines(b"ab\n0123456789\ncd\nlast", 5).await;
        assert_eq!(
            got,
            vec![
                Ok(b"ab\n".to_vec()),
                Err(11),
                Ok(b"cd\n".to_vec()),
                Ok(b"last".to_vec())
            ]
        );
    }
}
