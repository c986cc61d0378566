//! A session's outbox: every message the gateway sends a client on its own
//! initiative, and the streams that carry them.
//!
//! Owns which stream carries a backend's request or notification (the POST
//! stream of the request that caused it while it is in flight, else the
//! session's GET stream, else a bounded backlog), the event ids
//! (`<stream>-<seq>`, unique within the session), and the bounded replay
//! buffer that lets a client resume a broken stream with `Last-Event-ID`
//! without ever receiving another stream's events.
//!
//! A backend's request that no client request caused (none is in flight: most
//! often a `roots/list` as the backend starts) is held, at most
//! [`HELD_REQUESTS_MAX`] of them for at most [`HOLD_REQUESTS_FOR`], until a
//! stream of the client can carry it: the session's GET stream, or the next
//! request's stream; unless a stream comes, it is refused, saying why. A
//! stateless caller's session has no stream of its own: its outbox refuses
//! such a request at once. It never formats HTTP and never talks to backends
//! (a refusal goes through the message's own [`Refusal`]).

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::jsonrpc::{self, Kind, Message, Refusal};
use crate::launcher::ServerMessageSink;
use crate::protocol::{Era, method};

/// Notifications kept while no stream is open.
const BACKLOG_MAX: usize = 256;
/// A session's backend requests held at once while no stream can carry them.
pub const HELD_REQUESTS_MAX: usize = 16;
/// How long a backend request waits for a stream that can carry it.
pub const HOLD_REQUESTS_FOR: Duration = Duration::from_secs(10);
/// Why a stateless caller's session refuses a request no call caused.
const STATELESS_CALLER_CANNOT_BE_ASKED: &str = "the client is a stateless (2026-07-28) caller: \
     the gateway can ask it only during a tools/call, prompts/get or resources/read";
/// Events queued on one open stream before its client counts as stuck.
const STREAM_QUEUE: usize = 1024;
/// Replayable events kept per session by `Outbox::default` (tests).
const DEFAULT_REPLAY_EVENTS: usize = 256;

/// One SSE event for a client stream. Queued boxed: a stream's queue then
/// starts small, and most request streams carry no event at all.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: EventId,
    /// The JSON-RPC message; empty for a priming event.
    pub message: Bytes,
    /// True for the final answer of a request stream: the stream ends after it.
    pub last: bool,
}

/// An event's id, written `<stream>-<seq>`: unique within the session, and
/// says which stream it belongs to. Written out only when it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventId {
    stream: u64,
    seq: u64,
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.stream, self.seq)
    }
}

/// Streams are numbered per session: GET streams even, request streams odd,
/// so an event id alone says which kind of stream it came from.
fn is_request_stream(stream: u64) -> bool {
    stream % 2 == 1
}

struct RequestStream {
    stream: u64,
    /// The request's `_meta.progressToken` (raw JSON), which routes progress exactly.
    progress_token: Option<String>,
    tx: mpsc::Sender<Box<Event>>,
}

/// A backend request waiting for a stream that can carry it.
struct Held {
    message: Bytes,
    refusal: Option<Refusal>,
    until: Instant,
}

struct State {
    next_stream: u64,
    next_seq: u64,
    get: Option<(u64, mpsc::Sender<Box<Event>>)>,
    requests: Vec<RequestStream>,
    backlog: VecDeque<Bytes>,
    held: VecDeque<Held>,
    /// (stream, seq, message) of recent events, oldest first.
    replay: VecDeque<(u64, u64, Bytes)>,
    replay_capacity: usize,
    /// Request streams whose final answer was sent (the last few, for resumes).
    finished: VecDeque<u64>,
}

/// The outbox of one session.
pub struct Outbox {
    state: Mutex<State>,
    /// The era of the session's client: nothing is held for a stateless
    /// caller, which has no stream of its own.
    client: Era,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox::new(DEFAULT_REPLAY_EVENTS)
    }
}

/// A stream to read events from.
pub struct StreamHandle {
    pub stream: u64,
    /// The stream's priming event, numbered before anything the stream carries,
    /// so that resuming from it replays everything.
    pub priming: Event,
    pub events: mpsc::Receiver<Box<Event>>,
}

/// Why a resume was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    /// `Last-Event-ID` is not an id this gateway issues.
    #[error("Last-Event-ID is not an event id of this gateway")]
    Malformed,
}

impl Outbox {
    pub fn new(replay_capacity: usize) -> Outbox {
        Outbox::for_client(Era::Session, replay_capacity)
    }

    /// The outbox of a session whose client speaks `client`'s era. A
    /// stateless caller's session has no stream of its own: a backend request
    /// no call caused is refused at once.
    pub(crate) fn for_client(client: Era, replay_capacity: usize) -> Outbox {
        Outbox {
            client,
            state: Mutex::new(State {
                next_stream: 0,
                next_seq: 0,
                get: None,
                requests: Vec::new(),
                backlog: VecDeque::new(),
                held: VecDeque::new(),
                replay: VecDeque::new(),
                replay_capacity,
                finished: VecDeque::new(),
            }),
        }
    }

    /// The era of the session's client.
    pub(crate) fn client_era(&self) -> Era {
        self.client
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens a request stream for a request in flight; backend messages it
    /// caused arrive on it until [`Outbox::finish_request`] or
    /// [`Outbox::abandon_request`].
    pub fn open_request(&self, progress_token: Option<String>) -> StreamHandle {
        let (tx, events) = mpsc::channel(STREAM_QUEUE);
        let mut state = self.state();
        let stream = state.new_stream(true);
        let priming = state.priming(stream);
        state.requests.push(RequestStream {
            stream,
            progress_token,
            tx,
        });
        StreamHandle {
            stream,
            priming,
            events,
        }
    }

    /// The request was answered as plain JSON: its stream is closed, and any
    /// message that raced onto it is delivered elsewhere.
    pub fn abandon_request(&self, handle: StreamHandle) {
        let StreamHandle {
            stream, mut events, ..
        } = handle;
        self.state().requests.retain(|r| r.stream != stream);
        events.close();
        while let Ok(event) = events.try_recv() {
            if let Ok(message) = Message::read(event.message) {
                self.deliver(message);
            }
        }
    }

    /// Sends a request's final answer on its stream (kept for resumes) and
    /// closes the stream.
    pub fn finish_request(&self, stream: u64, answer: Bytes) {
        let mut state = self.state();
        let event = state.record(stream, answer, true);
        if let Some(i) = state.requests.iter().position(|r| r.stream == stream) {
            let request = state.requests.remove(i);
            let _ = request.tx.try_send(event);
        }
        state.finished.push_back(stream);
        if state.finished.len() > BACKLOG_MAX {
            state.finished.pop_front();
        }
    }

    /// Sends one more answer on a request stream (a batch's), kept for resumes.
    pub fn deliver_on(&self, stream: u64, message: Bytes) {
        let mut state = self.state();
        let event = state.record(stream, message, false);
        if let Some(request) = state.requests.iter().find(|r| r.stream == stream) {
            let _ = request.tx.try_send(event);
        }
    }

    /// Delivers the held backend requests on the request stream `stream`
    /// (a client request's, opened with [`Outbox::open_request`]): the next
    /// request's stream carries what no request caused. Not for the stream of
    /// an `initialize` answer: the client may be asked nothing before it.
    pub fn deliver_held_on(&self, stream: u64) {
        let mut state = self.state();
        if state.held.is_empty() {
            return;
        }
        let Some(tx) = state
            .requests
            .iter()
            .find(|r| r.stream == stream)
            .map(|r| r.tx.clone())
        else {
            return;
        };
        for held in state.take_held() {
            let event = state.record(stream, held.message, false);
            let _ = tx.try_send(event);
        }
    }

    /// Opens the session's GET stream, replacing (and so ending) any earlier
    /// one; backlogged notifications and held requests are delivered on it
    /// first.
    pub fn attach(&self) -> StreamHandle {
        let (tx, events) = mpsc::channel(STREAM_QUEUE);
        let mut state = self.state();
        let stream = state.new_stream(false);
        let priming = state.priming(stream);
        state.flush_waiting_onto(stream, &tx);
        state.get = Some((stream, tx));
        StreamHandle {
            stream,
            priming,
            events,
        }
    }

    /// Resumes the stream that `last_event_id` came from: the events after it on
    /// that stream, then whatever that stream still carries. A GET stream
    /// resumes as the session's GET stream; a request stream still in flight
    /// goes on on the new connection; a finished one ends after the replay.
    pub fn resume(&self, last_event_id: &str) -> Result<StreamHandle, ResumeError> {
        let (stream, seq) = parse_event_id(last_event_id).ok_or(ResumeError::Malformed)?;
        let (tx, events) = mpsc::channel(STREAM_QUEUE);
        let mut state = self.state();
        if stream == 0 || stream > state.next_stream || seq > state.next_seq {
            return Err(ResumeError::Malformed);
        }
        let priming = state.priming(stream);
        let missed: Vec<Box<Event>> = state
            .replay
            .iter()
            .filter(|(s, q, _)| *s == stream && *q > seq)
            .map(|(s, q, message)| {
                Box::new(Event {
                    id: EventId {
                        stream: *s,
                        seq: *q,
                    },
                    message: message.clone(),
                    last: false,
                })
            })
            .collect();
        for event in missed {
            let _ = tx.try_send(event);
        }
        if !is_request_stream(stream) {
            // The GET stream goes on here (a newer GET stream is replaced too).
            state.flush_waiting_onto(stream, &tx);
            state.get = Some((stream, tx));
        } else if let Some(request) = state.requests.iter_mut().find(|r| r.stream == stream) {
            request.tx = tx;
        } else {
            // Finished: the replay above ends with its answer, if it was kept.
            drop(tx);
        }
        Ok(StreamHandle {
            stream,
            priming,
            events,
        })
    }

    /// Detaches the GET stream `stream` if it is still the attached one.
    pub fn detach(&self, stream: u64) {
        let mut state = self.state();
        if state.get.as_ref().is_some_and(|(s, _)| *s == stream) {
            state.get = None;
        }
    }

    /// True while a GET stream is attached and its client alive.
    pub fn has_stream(&self) -> bool {
        self.state()
            .get
            .as_ref()
            .is_some_and(|(_, tx)| !tx.is_closed())
    }

    /// Ends the GET stream (shutdown, or the session is over). Request streams
    /// end with their answers; held backend requests are refused.
    pub fn close(&self) {
        let mut state = self.state();
        state.get = None;
        state.backlog.clear();
        for held in state.held.drain(..) {
            if let Some(refusal) = held.refusal {
                refusal.refuse("the client's session ended before it could be asked");
            }
        }
    }

    /// Refuses the held backend requests no stream came for in time.
    pub fn refuse_expired_requests(&self) {
        self.refuse_requests_expired_at(Instant::now());
    }

    fn refuse_requests_expired_at(&self, now: Instant) {
        let mut state = self.state();
        while state.held.front().is_some_and(|h| h.until <= now) {
            let held = state.held.pop_front().expect("looked at");
            if let Some(refusal) = held.refusal {
                refusal.refuse(&format!(
                    "no stream of the client opened within {} s to carry this request",
                    HOLD_REQUESTS_FOR.as_secs()
                ));
            }
        }
    }
}

impl State {
    /// The held requests still in time (the expired ones are refused).
    fn take_held(&mut self) -> Vec<Held> {
        let now = Instant::now();
        let (fresh, expired): (Vec<Held>, Vec<Held>) =
            self.held.drain(..).partition(|h| h.until > now);
        for held in expired {
            if let Some(refusal) = held.refusal {
                refusal.refuse("no stream of the client opened in time to carry this request");
            }
        }
        fresh
    }

    /// Delivers the backlogged notifications and the held requests on the
    /// GET stream `stream`.
    fn flush_waiting_onto(&mut self, stream: u64, tx: &mpsc::Sender<Box<Event>>) {
        let backlog: Vec<Bytes> = self.backlog.drain(..).collect();
        let held: Vec<Bytes> = self.take_held().into_iter().map(|h| h.message).collect();
        for message in backlog.into_iter().chain(held) {
            let event = self.record(stream, message, false);
            let _ = tx.try_send(event);
        }
    }

    fn new_stream(&mut self, request: bool) -> u64 {
        // GET streams even, request streams odd.
        self.next_stream += 1;
        if is_request_stream(self.next_stream) != request {
            self.next_stream += 1;
        }
        self.next_stream
    }

    fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// A priming event for `stream`: an id and no data.
    fn priming(&mut self, stream: u64) -> Event {
        let seq = self.next_seq();
        Event {
            id: EventId { stream, seq },
            message: Bytes::new(),
            last: false,
        }
    }

    /// Gives a message its event id on `stream` and keeps it for resumes.
    fn record(&mut self, stream: u64, message: Bytes, last: bool) -> Box<Event> {
        let seq = self.next_seq();
        if self.replay_capacity > 0 {
            if self.replay.len() == self.replay_capacity {
                self.replay.pop_front();
            }
            self.replay.push_back((stream, seq, message.clone()));
        }
        Box::new(Event {
            id: EventId { stream, seq },
            message,
            last,
        })
    }

    /// The request stream a backend message belongs to. Progress goes to the
    /// request whose token it carries; a backend request (sampling, elicitation,
    /// roots, ping), a log message or a cancellation to the newest request in
    /// flight, since over stdio nothing says which request caused it. Other
    /// notifications (list changes, resource updates) are not about a request:
    /// they go to the GET stream.
    fn request_stream_for(&self, message: &Message) -> Option<usize> {
        if self.requests.is_empty() {
            return None;
        }
        let newest = Some(self.requests.len() - 1);
        if message.kind() == Kind::Request {
            return newest;
        }
        match message.method()? {
            method::PROGRESS => {
                let peek = message.peek()?;
                let (token, _) =
                    jsonrpc::notification_progress_token(message.bytes(), peek.params?)?;
                self.requests
                    .iter()
                    .position(|r| r.progress_token.as_deref() == Some(token))
            }
            method::MESSAGE | method::CANCELLED => newest,
            _ => None,
        }
    }
}

impl ServerMessageSink for Outbox {
    fn deliver(&self, message: Message) -> bool {
        let mut state = self.state();
        let stream_index = state.request_stream_for(&message);
        let kind = message.kind();
        let refusal = message.refusal().cloned();
        let message = message.into_bytes();
        if let Some(i) = stream_index {
            let stream = state.requests[i].stream;
            let event = state.record(stream, message, false);
            // A client that dropped the stream can still resume it from the replay buffer.
            return match state.requests[i].tx.try_send(event) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!("client stream is not reading; server message dropped");
                    false
                }
            };
        }
        if let Some((stream, tx)) = &state.get
            && !tx.is_closed()
        {
            let (stream, tx) = (*stream, tx.clone());
            let event = state.record(stream, message, false);
            return match tx.try_send(event) {
                Ok(()) => true,
                Err(_) => {
                    tracing::warn!("client stream is not reading; server message dropped");
                    false
                }
            };
        }
        // No stream: a notification waits for the next GET stream; a request
        // waits, bounded, for the GET stream or the next request's stream.
        if kind == Kind::Request {
            return match refusal {
                Some(refusal) if self.client == Era::Stateless => {
                    refusal.refuse(STATELESS_CALLER_CANNOT_BE_ASKED);
                    true
                }
                Some(refusal) if state.held.len() < HELD_REQUESTS_MAX => {
                    state.held.push_back(Held {
                        message,
                        refusal: Some(refusal),
                        until: Instant::now() + HOLD_REQUESTS_FOR,
                    });
                    true
                }
                // Too many held, or no way to refuse it later: refused now.
                _ => false,
            };
        }
        if state.backlog.len() == BACKLOG_MAX {
            state.backlog.pop_front();
        }
        state.backlog.push_back(message);
        true
    }
}

/// `<stream>-<seq>`, both plain decimal numbers as this gateway writes them.
fn parse_event_id(id: &str) -> Option<(u64, u64)> {
    let (stream, seq) = id.trim().split_once('-')?;
    let number = |text: &str| {
        (!text.is_empty() && text.len() <= 20 && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse().ok())
            .flatten()
    };
    Some((number(stream)?, number(seq)?))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn msg(bytes: Bytes) -> Message {
        Message::read(bytes).expect("a test message reads")
    }

    /// A request message whose refusals are written down in `refused`.
    fn refusable_request(id: &str, refused: &Arc<Mutex<Vec<String>>>) -> Message {
        let refused = Arc::clone(refused);
        msg(Bytes::from(format!(
            r#"{{"jsonrpc":"2.0","id":"{id}","method":"roots/list"}}"#
        )))
        .with_refusal(Refusal::new(move |why| {
            refused.lock().unwrap().push(why.to_owned());
        }))
    }

    #[test]
    fn a_request_no_stream_can_carry_is_held_for_the_get_stream() {
        let outbox = Outbox::new(8);
        let refused = Arc::new(Mutex::new(Vec::new()));
        assert!(outbox.deliver(refusable_request("r1", &refused)));
        assert!(refused.lock().unwrap().is_empty(), "held, not refused");
        let mut get = outbox.attach();
        let event = get.events.try_recv().expect("the held request");
        assert!(String::from_utf8_lossy(&event.message).contains("\"r1\""));
        assert!(get.events.try_recv().is_err(), "once");
    }

    #[test]
    fn a_held_request_rides_the_next_requests_stream() {
        let outbox = Outbox::new(8);
        let refused = Arc::new(Mutex::new(Vec::new()));
        assert!(outbox.deliver(refusable_request("r1", &refused)));
        let mut next = outbox.open_request(None);
        assert!(next.events.try_recv().is_err(), "not before it is asked to");
        outbox.deliver_held_on(next.stream);
        let event = next.events.try_recv().expect("the held request");
        assert!(String::from_utf8_lossy(&event.message).contains("\"r1\""));
    }

    #[test]
    fn held_requests_are_bounded_in_number_and_time_and_refused_saying_why() {
        let outbox = Outbox::new(8);
        let refused = Arc::new(Mutex::new(Vec::new()));
        for n in 0..HELD_REQUESTS_MAX {
            assert!(outbox.deliver(refusable_request(&format!("r{n}"), &refused)));
        }
        // One more is refused at once, by the connection (false).
        assert!(!outbox.deliver(refusable_request("over", &refused)));
        outbox.refuse_requests_expired_at(Instant::now());
        assert!(refused.lock().unwrap().is_empty(), "still in time");
        outbox.refuse_requests_expired_at(Instant::now() + HOLD_REQUESTS_FOR);
        let refused = refused.lock().unwrap();
        assert_eq!(refused.len(), HELD_REQUESTS_MAX);
        assert!(
            refused[0].contains("no stream of the client opened"),
            "{refused:?}"
        );
    }

    #[test]
    fn a_stateless_callers_outbox_refuses_at_once_and_a_closed_one_refuses_what_it_held() {
        let refused = Arc::new(Mutex::new(Vec::new()));
        let stateless = Outbox::for_client(Era::Stateless, 8);
        assert!(stateless.deliver(refusable_request("s", &refused)));
        assert!(
            refused.lock().unwrap()[0].contains("stateless (2026-07-28) caller"),
            "{refused:?}"
        );
        let outbox = Outbox::new(8);
        assert!(outbox.deliver(refusable_request("c", &refused)));
        outbox.close();
        assert_eq!(refused.lock().unwrap().len(), 2);
        assert!(refused.lock().unwrap()[1].contains("session ended"));
    }

    fn note(text: &str) -> Bytes {
        Bytes::from(format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/message","params":{{"data":"{text}"}}}}"#
        ))
    }

    fn request() -> Bytes {
        Bytes::from_static(br#"{"jsonrpc":"2.0","id":"s1","method":"roots/list"}"#)
    }

    #[tokio::test]
    async fn notifications_wait_for_a_stream_and_requests_are_refused_without_one() {
        let outbox = Outbox::default();
        assert!(outbox.deliver(msg(note("n1"))));
        assert!(!outbox.deliver(msg(request())));
        let mut get = outbox.attach();
        assert_eq!(get.events.recv().await.unwrap().message, note("n1"));
        assert!(outbox.deliver(msg(request())));
        assert_eq!(get.events.recv().await.unwrap().message, request());
    }

    #[tokio::test]
    async fn a_request_in_flight_gets_the_messages_it_causes() {
        let outbox = Outbox::default();
        let mut get = outbox.attach();
        let mut post = outbox.open_request(None);
        assert!(outbox.deliver(msg(note("during"))));
        assert_eq!(post.events.recv().await.unwrap().message, note("during"));
        outbox.finish_request(post.stream, Bytes::from_static(b"{}"));
        let last = post.events.recv().await.unwrap();
        assert!(last.last);
        assert!(
            post.events.recv().await.is_none(),
            "the stream ends after the answer"
        );
        assert!(outbox.deliver(msg(note("after"))));
        assert_eq!(get.events.recv().await.unwrap().message, note("after"));
    }

    #[tokio::test]
    async fn progress_goes_to_the_request_with_that_token() {
        let outbox = Outbox::default();
        let mut first = outbox.open_request(Some("\"a\"".into()));
        let mut second = outbox.open_request(Some("\"b\"".into()));
        let progress = Bytes::from_static(
            br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"a","progress":1}}"#,
        );
        outbox.deliver(msg(progress.clone()));
        assert_eq!(first.events.recv().await.unwrap().message, progress);
        outbox.deliver(msg(note("x")));
        assert_eq!(second.events.recv().await.unwrap().message, note("x"));
    }

    #[tokio::test]
    async fn event_ids_are_unique_and_resume_replays_only_that_stream() {
        let outbox = Outbox::default();
        let mut get = outbox.attach();
        outbox.deliver(msg(note("g1")));
        let g1 = get.events.recv().await.unwrap();
        let mut post = outbox.open_request(None);
        outbox.deliver(msg(note("p1")));
        let p1 = post.events.recv().await.unwrap();
        assert_ne!(g1.id, p1.id);
        outbox.deliver(msg(note("p2")));
        drop(post.events); // the client's connection broke
        outbox.finish_request(post.stream, Bytes::from_static(b"{\"answer\":1}"));
        outbox.deliver(msg(note("g2")));

        let mut resumed = outbox.resume(&p1.id.to_string()).unwrap();
        assert_eq!(resumed.events.recv().await.unwrap().message, note("p2"));
        let answer = resumed.events.recv().await.unwrap();
        assert_eq!(answer.message, Bytes::from_static(b"{\"answer\":1}"));
        assert!(resumed.events.recv().await.is_none());

        let mut get_again = outbox.resume(&g1.id.to_string()).unwrap();
        assert_eq!(get_again.events.recv().await.unwrap().message, note("g2"));
        assert!(outbox.resume("junk").is_err());
        assert!(outbox.resume("+2-+5").is_err());
        assert!(outbox.resume("99-1").is_err(), "a stream never opened");
    }

    #[tokio::test]
    async fn a_priming_event_is_numbered_before_the_streams_events() {
        let outbox = Outbox::default();
        let mut post = outbox.open_request(None);
        outbox.deliver(msg(note("first")));
        let first = post.events.recv().await.unwrap();
        // Resuming from the priming event replays the first message too.
        drop(post.events);
        let mut resumed = outbox.resume(&post.priming.id.to_string()).unwrap();
        assert_eq!(resumed.events.recv().await.unwrap().id, first.id);
    }

    #[tokio::test]
    async fn the_replay_buffer_is_bounded() {
        let outbox = Outbox::new(2);
        let mut get = outbox.attach();
        let first = {
            outbox.deliver(msg(note("0")));
            get.events.recv().await.unwrap()
        };
        for i in 1..5 {
            outbox.deliver(msg(note(&i.to_string())));
        }
        let mut resumed = outbox.resume(&first.id.to_string()).unwrap();
        assert_eq!(resumed.events.recv().await.unwrap().message, note("3"));
        assert_eq!(resumed.events.recv().await.unwrap().message, note("4"));
    }
}
