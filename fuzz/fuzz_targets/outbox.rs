//! `outbox::Outbox` driven by an arbitrary sequence of operations, the way the
//! HTTP layer and a backend connection drive it: requests opened (with or
//! without a progress token), finished or abandoned; backend notifications and
//! requests delivered; GET streams attached, resumed with `Last-Event-ID`
//! values (issued ones, altered ones, or arbitrary text) and detached; clients
//! reading, or dropping their connection. No runtime: only `try_send` and
//! `try_recv` are used.
//!
//! Input format (so that seeds can be written by hand): byte 0 picks the replay
//! capacity, then each operation is one opcode byte followed by its operands
//! (see `run`); a missing byte reads as 0.
//!
//! Invariants, beyond "never panics":
//! - an event id names one event: seen again (a replay), it carries the same
//!   message; a priming id is never seen before or after, and belongs to its
//!   handle's stream; on a new stream it comes before every event;
//! - event ids are `<stream>-<seq>` and safe in an SSE `id:` line;
//! - every event on a handle belongs to that handle's stream, with rising
//!   sequence numbers; a resumed handle's stream is the one its
//!   `Last-Event-ID` names, so a resume never yields another stream's events;
//! - an id the outbox issued can always be resumed; an id is refused only when
//!   it is not `<u64>-<u64>`;
//! - every message carried is one that was given to the outbox;
//! - a final answer (`last`) ends its stream.

#![no_main]

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mcpgate::jsonrpc::Message;
use mcpgate::launcher::ServerMessageSink;
use mcpgate::outbox::{Outbox, StreamHandle};

/// At most this many operations and open handles, to keep runs fast.
const MAX_OPS: usize = 400;
const MAX_HANDLES: usize = 24;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn bytes(&mut self) -> Vec<u8> {
        let len = usize::from(self.byte() % 64).min(self.0.len());
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        taken.to_vec()
    }
    fn text(&mut self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A progress token as raw JSON, as the HTTP layer stores it.
fn token(n: u8) -> String {
    match n % 4 {
        0 => "\"t0\"".into(),
        1 => "\"t1\"".into(),
        2 => "7".into(),
        _ => "\"a\\u0062\"".into(),
    }
}

fn parse_id(id: &str) -> (u64, u64) {
    let (stream, seq) = id
        .split_once('-')
        .unwrap_or_else(|| panic!("event id {id:?}"));
    (
        stream.parse().unwrap_or_else(|_| panic!("event id {id:?}")),
        seq.parse().unwrap_or_else(|_| panic!("event id {id:?}")),
    )
}

/// The stream a `Last-Event-ID` names, read independently of the outbox.
fn requested_stream(id: &str) -> Option<u64> {
    let (stream, seq) = id.trim().split_once('-')?;
    seq.parse::<u64>().ok()?;
    stream.parse().ok()
}

struct Open {
    handle: StreamHandle,
    /// Opened by `open_request` and neither finished nor abandoned yet.
    request_in_flight: bool,
    /// Highest sequence number seen on this handle.
    last_seq: Option<u64>,
    /// A `last` event was received: nothing may follow it.
    ended: bool,
}

#[derive(Default)]
struct Checker {
    /// Every event id seen, with its message (empty for priming events).
    ids: HashMap<String, (Bytes, bool)>,
    /// Every message the outbox was given.
    given: HashSet<Bytes>,
}

impl Checker {
    fn see_id(&mut self, id: &str, message: &Bytes, priming: bool) {
        assert!(
            !id.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0),
            "event id {id:?} breaks an SSE id line"
        );
        parse_id(id);
        match self.ids.get(id) {
            None => {
                self.ids.insert(id.to_owned(), (message.clone(), priming));
            }
            Some((known, was_priming)) => {
                assert!(
                    !priming && !was_priming,
                    "event id {id} reused for a priming event"
                );
                assert_eq!(known, message, "event id {id} names two different messages");
            }
        }
    }

    /// Checks a new handle's priming event; returns its sequence number, which
    /// comes before anything the stream carries.
    fn see_priming(&mut self, handle: &StreamHandle) -> u64 {
        let priming = &handle.priming;
        assert!(priming.message.is_empty() && !priming.last);
        let (stream, seq) = parse_id(&priming.id);
        assert_eq!(
            stream, handle.stream,
            "priming id {} of stream {}",
            priming.id, handle.stream
        );
        assert!(
            !self.ids.contains_key(&priming.id),
            "priming id {} reused",
            priming.id
        );
        self.see_id(&priming.id, &priming.message, true);
        seq
    }

    fn drain(&mut self, open: &mut Open) {
        while let Ok(event) = open.handle.events.try_recv() {
            assert!(!open.ended, "an event after a stream's final answer");
            let (stream, seq) = parse_id(&event.id);
            assert_eq!(
                stream, open.handle.stream,
                "event {} on the handle of stream {}",
                event.id, open.handle.stream
            );
            if let Some(last) = open.last_seq {
                assert!(
                    seq > last,
                    "event {} after seq {last} on one stream",
                    event.id
                );
            }
            open.last_seq = Some(seq);
            assert!(
                self.given.contains(&event.message),
                "event {} carries a message nobody gave",
                event.id
            );
            self.see_id(&event.id, &event.message, false);
            if event.last {
                open.ended = true;
            }
        }
    }
}

fn run(mut input: Input<'_>) {
    let capacity = match input.byte() % 4 {
        0 => 0,
        1 => 1,
        2 => 3,
        _ => 256,
    };
    let outbox = Outbox::new(capacity);
    let mut check = Checker::default();
    let mut handles: Vec<Open> = Vec::new();
    // Request streams opened, and whether each was finished or abandoned.
    let mut requests: Vec<(u64, bool)> = Vec::new();
    let mut counter = 0u32;

    let deliver = |check: &mut Checker, message: Bytes| {
        // The connection hands sinks only the lines it could read.
        let Ok(message) = Message::read(message) else {
            return;
        };
        check.given.insert(message.bytes().clone());
        outbox.deliver(message);
    };

    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        counter += 1;
        let pick = |input: &mut Input<'_>, len: usize| usize::from(input.byte()) % len.max(1);
        match input.byte() % 20 {
            0 | 1 => {
                if handles.len() < MAX_HANDLES {
                    let progress = (input.byte() % 2 == 1).then(|| token(input.byte()));
                    let handle = outbox.open_request(progress);
                    assert!(handle.stream % 2 == 1, "request streams are odd");
                    assert!(requests.iter().all(|(s, _)| *s != handle.stream));
                    requests.push((handle.stream, false));
                    let priming = check.see_priming(&handle);
                    handles.push(Open {
                        handle,
                        request_in_flight: true,
                        last_seq: Some(priming),
                        ended: false,
                    });
                }
            }
            2 => {
                let t = input.byte();
                let token = if t >= 128 {
                    String::new()
                } else {
                    format!(",\"progressToken\":{}", token(t))
                };
                let message = format!(
                    r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progress":{counter}{token}}}}}"#
                );
                deliver(&mut check, Bytes::from(message));
            }
            3..=5 => {
                let method = match input.byte() % 4 {
                    0 => "notifications/message".to_owned(),
                    1 => "notifications/cancelled".to_owned(),
                    2 => "notifications/tools/list_changed".to_owned(),
                    _ => input.text(),
                };
                let method = serde_json::to_string(&method).unwrap();
                let message =
                    format!(r#"{{"jsonrpc":"2.0","method":{method},"params":{{"n":{counter}}}}}"#);
                deliver(&mut check, Bytes::from(message));
            }
            6 => {
                let message = format!(
                    r#"{{"jsonrpc":"2.0","id":"s{counter}","method":"sampling/createMessage"}}"#
                );
                deliver(&mut check, Bytes::from(message));
            }
            7 => {
                deliver(&mut check, Bytes::from(input.bytes()));
            }
            8 | 9 => {
                // The answer of a request in flight ends its stream.
                let open: Vec<usize> = (0..requests.len()).filter(|&i| !requests[i].1).collect();
                if !open.is_empty() {
                    let i = open[pick(&mut input, open.len())];
                    let stream = requests[i].0;
                    requests[i].1 = true;
                    let answer = Bytes::from(format!(
                        r#"{{"jsonrpc":"2.0","id":{counter},"result":{{}}}}"#
                    ));
                    check.given.insert(answer.clone());
                    outbox.finish_request(stream, answer);
                    for h in handles.iter_mut().filter(|h| h.handle.stream == stream) {
                        h.request_in_flight = false;
                    }
                }
            }
            10 => {
                // One answer of a batch, on a request still in flight.
                let open: Vec<usize> = (0..requests.len()).filter(|&i| !requests[i].1).collect();
                if !open.is_empty() {
                    let stream = requests[open[pick(&mut input, open.len())]].0;
                    let answer = Bytes::from(format!(
                        r#"{{"jsonrpc":"2.0","id":"b{counter}","result":{{}}}}"#
                    ));
                    check.given.insert(answer.clone());
                    outbox.deliver_on(stream, answer);
                }
            }
            11 => {
                if handles.len() < MAX_HANDLES {
                    let handle = outbox.attach();
                    assert!(handle.stream.is_multiple_of(2), "GET streams are even");
                    let priming = check.see_priming(&handle);
                    handles.push(Open {
                        handle,
                        request_in_flight: false,
                        last_seq: Some(priming),
                        ended: false,
                    });
                }
            }
            12..=14 => {
                if handles.len() >= MAX_HANDLES {
                    continue;
                }
                let known: Vec<&String> = {
                    let mut ids: Vec<&String> = check.ids.keys().collect();
                    ids.sort();
                    ids
                };
                let issued = !known.is_empty() && !input.byte().is_multiple_of(4);
                let id = if issued {
                    let id = known[pick(&mut input, known.len())].clone();
                    match input.byte() % 8 {
                        0 => format!(" {id}\t"),
                        1 => format!("0{id}"),
                        2 => format!("+{id}"),
                        3 => id.replacen('-', "-+", 1),
                        4 => format!("{id}0"),
                        5 => format!("1{id}"),
                        _ => id,
                    }
                } else {
                    input.text()
                };
                let requested = requested_stream(&id);
                match outbox.resume(&id) {
                    Ok(handle) => {
                        let requested = requested
                            .unwrap_or_else(|| panic!("resume accepted the malformed id {id:?}"));
                        assert_eq!(handle.stream, requested, "resume of {id:?}");
                        // Replayed events come before the new priming id; live ones after it.
                        check.see_priming(&handle);
                        handles.push(Open {
                            handle,
                            request_in_flight: false,
                            last_seq: None,
                            ended: false,
                        });
                    }
                    Err(_) => assert!(requested.is_none(), "resume refused {id:?}"),
                }
            }
            15 => {
                if !handles.is_empty() {
                    let stream = handles[pick(&mut input, handles.len())].handle.stream;
                    outbox.detach(stream);
                }
            }
            16 => {
                // The request was answered as plain JSON.
                let live: Vec<usize> = (0..handles.len())
                    .filter(|&i| handles[i].request_in_flight)
                    .collect();
                if !live.is_empty() {
                    let i = live[pick(&mut input, live.len())];
                    let mut open = handles.remove(i);
                    check.drain(&mut open);
                    let stream = open.handle.stream;
                    outbox.abandon_request(open.handle);
                    for r in requests.iter_mut().filter(|r| r.0 == stream) {
                        r.1 = true;
                    }
                    for h in handles.iter_mut().filter(|h| h.handle.stream == stream) {
                        h.request_in_flight = false;
                    }
                }
            }
            17 | 18 => {
                // A client's connection broke: its receiver is dropped.
                if !handles.is_empty() {
                    let i = pick(&mut input, handles.len());
                    let mut open = handles.remove(i);
                    check.drain(&mut open);
                    // Dropped here. A request still runs and can be finished
                    // (`requests` keeps its stream), or resumed.
                    drop(open);
                }
            }
            _ => match input.byte() % 3 {
                0 => outbox.close(),
                1 => {
                    let _ = outbox.has_stream();
                }
                _ => {}
            },
        }
        // Clients read what they were sent.
        for open in &mut handles {
            check.drain(open);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    run(Input(data));
});
