//! Stateless calls at a backend: started, driven to an answer, parked while
//! the client is asked for input (multi round-trip requests), resumed, and
//! cancelled when their client goes away.
//!
//! Owns a call's life: the task that drives it (notifications streamed to a
//! client that takes a stream, logs from a session-era backend filtered by the
//! request's `logLevel`), turning a backend's `elicitation/create`,
//! `sampling/createMessage` or `roots/list` into an `InputRequiredResult` (the
//! requests a backend sends together are asked together) for the calls that
//! may carry one (`tools/call`, `prompts/get`, `resources/read`; during any
//! other call such a request is refused at once), the table of parked
//! calls and its expiry, and refusing to guess which call a backend request
//! belongs to when one caller has several in flight. It never speaks HTTP and
//! never decides which process a call reaches (that is `bridge`).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use indexmap::IndexMap;
use serde::Serialize;
use serde_json::value::RawValue;

use super::request_state::Binding;
use super::{Bridge, StatelessCall, completed, final_outcome, lock, random_hex, refused};
use crate::core::{Outcome, Step, with_id};
use crate::jsonrpc::{self, Kind, build};
use crate::outbox::StreamHandle;
use crate::protocol::method;
use crate::session::{ParkedMark, Session};

/// How long the bridge waits for more input requests after one arrives, so
/// that requests a backend sends together go to the client together.
const INPUT_BATCH_WAIT: std::time::Duration = std::time::Duration::from_millis(25);

/// Log levels from the least to the most severe (RFC 5424, as MCP names them).
const LOG_LEVELS: [&str; 8] = [
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];

/// True when a `notifications/message` with these params is at or above `wanted`.
fn log_level_admits(wanted: Option<&str>, params: Option<&RawValue>) -> bool {
    let rank = |level: &str| LOG_LEVELS.iter().position(|l| *l == level);
    let Some(wanted) = wanted.and_then(rank) else {
        return false;
    };
    params
        .and_then(|p| jsonrpc::string_member(p, "level"))
        .and_then(|level| rank(&level))
        .is_some_and(|level| level >= wanted)
}

type Answering = Pin<Box<dyn Future<Output = Bytes> + Send>>;

/// A call in flight at a backend, on its way to an answer.
pub(super) struct Running {
    bridge: Arc<Bridge>,
    session: Arc<Session>,
    /// The id the backend's answer will carry (the first request's).
    client_id: String,
    /// The backend speaks the session era (its log notifications are filtered
    /// by the request's `logLevel`, as 2026-07-28 asks).
    bridged: bool,
    handle: Option<StreamHandle>,
    answer: Option<Answering>,
}

impl Running {
    /// Hands the call over (to an answer or to the parked table) so that
    /// dropping `self` no longer cancels it.
    fn take(&mut self) -> (StreamHandle, Answering) {
        (
            self.handle.take().expect("a running call has its stream"),
            self.answer.take().expect("a running call has its answer"),
        )
    }
}

impl Drop for Running {
    /// A client that went away mid-call cancels it (2026-07-28: closing the
    /// response stream is cancellation): the backend gets
    /// `notifications/cancelled` while the request is still known, then the
    /// call is dropped.
    fn drop(&mut self) {
        let (Some(handle), Some(answer)) = (self.handle.take(), self.answer.take()) else {
            return;
        };
        let (bridge, session) = (Arc::clone(&self.bridge), Arc::clone(&self.session));
        let cancel = build::cancelled(&self.client_id, "the client closed the request");
        tokio::spawn(async move {
            if let Ok(peek) = jsonrpc::peek(&cancel) {
                bridge.endpoints.forward(&session, &cancel, &peek).await;
            }
            drop(answer);
            session.outbox.abandon_request(handle);
        });
    }
}

/// A backend request waiting for the client's input.
pub(super) struct Waiting {
    /// The key in `inputRequests`/`inputResponses`.
    key: String,
    /// The backend request's raw id.
    id: String,
    /// The backend request without its id: `{"method":..,"params":..}`.
    request: Box<RawValue>,
}

/// A backend request as an input request: the request without its id.
#[derive(Serialize)]
struct InputRequest<'a> {
    method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    params: Option<&'a RawValue>,
}

/// The result that parks a call: the input the client must give, and the
/// token to come back with.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InputRequired<'a> {
    result_type: &'static str,
    input_requests: IndexMap<&'a str, &'a RawValue>,
    request_state: &'a str,
}

/// A call waiting for the client's retry.
pub(super) struct Parked {
    call: Running,
    waiting: Vec<Waiting>,
    expires: Instant,
    /// Keeps the call from counting as work in its session while it waits.
    _mark: ParkedMark,
}

/// Counts a call as active in its session while it lives.
struct Active {
    counts: Arc<Mutex<HashMap<Arc<str>, usize>>>,
    session: Arc<str>,
}

impl Active {
    fn new(counts: &Arc<Mutex<HashMap<Arc<str>, usize>>>, session: &Arc<str>) -> Active {
        *lock(counts).entry(Arc::clone(session)).or_default() += 1;
        Active {
            counts: Arc::clone(counts),
            session: Arc::clone(session),
        }
    }

    /// How many calls of the session are active, this one included.
    fn in_session(&self) -> usize {
        lock(&self.counts).get(&self.session).copied().unwrap_or(0)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts);
        if let Some(n) = counts.get_mut(&self.session) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.session);
            }
        }
    }
}

impl Bridge {
    /// Drives a call in a task of its own and answers with its first step: the
    /// final message, or (for a client that accepts a stream) the backend's
    /// first notification and then the rest. A client that goes away before
    /// the end cancels the call (its receiver closes; see `Running`).
    pub(super) async fn run(
        self: &Arc<Self>,
        running: Running,
        expected: Binding,
        call: StatelessCall,
    ) -> Outcome {
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let bridge = Arc::clone(self);
        tokio::spawn(async move {
            let outcome = tokio::select! {
                outcome = bridge.drive(running, &expected, &call, &tx) => outcome,
                () = tx.closed() => return,
            };
            let _ = tx.send(Step::Done(outcome)).await;
        });
        match rx.recv().await {
            Some(Step::Done(outcome)) => outcome,
            Some(Step::Note(first)) => Outcome::Stream(first, rx),
            None => Outcome::Answer(jsonrpc::error_response(
                None,
                jsonrpc::INTERNAL_ERROR,
                "the call ended without an answer",
                None,
            )),
        }
    }

    /// Starts a new call at the backend.
    pub(super) fn start(
        self: &Arc<Self>,
        session: &Arc<Session>,
        message: Bytes,
        call: &StatelessCall,
        bridged: bool,
    ) -> Running {
        let progress_token = jsonrpc::peek(&message).ok().and_then(|p| {
            jsonrpc::request_progress_token(&message, p.params?).map(|(t, _)| t.to_owned())
        });
        let handle = session.outbox.open_request(progress_token);
        let (bridge, in_task) = (Arc::clone(self), Arc::clone(session));
        let answer: Answering = Box::pin(async move {
            match jsonrpc::peek(&message) {
                Ok(peek) => bridge.endpoints.request(&in_task, &message, &peek).await,
                Err(e) => jsonrpc::error_response(None, e.code(), &e.to_string(), None),
            }
        });
        Running {
            bridge: Arc::clone(self),
            session: Arc::clone(session),
            client_id: call.id.clone(),
            bridged,
            handle: Some(handle),
            answer: Some(answer),
        }
    }

    /// Picks a parked call back up with the client's input: each waiting
    /// backend request is answered from `inputResponses`; those the client left
    /// out are asked again.
    pub(super) async fn resume(
        &self,
        token: &str,
        expected: &Binding,
        call: &StatelessCall,
    ) -> Result<(Running, Vec<Waiting>), Outcome> {
        let parked_id = self.signer.verify(token, expected).map_err(|why| {
            tracing::info!(caller = %expected.caller, server = %expected.server, reason = %why,
                "requestState refused");
            refused(
                &call.id,
                jsonrpc::INVALID_PARAMS,
                &format!("Invalid params: {why}"),
                None,
            )
        })?;
        let parked = lock(&self.parked).remove(&parked_id);
        let Some(parked) = parked.filter(|p| !p.call.session.is_ended()) else {
            return Err(refused(
                &call.id,
                jsonrpc::INVALID_PARAMS,
                "Invalid params: requestState was already used, or its call has ended",
                None,
            ));
        };
        let responses: HashMap<String, Box<RawValue>> = call
            .input_responses
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok())
            .unwrap_or_default();
        let mut left = Vec::new();
        for waiting in parked.waiting {
            match responses.get(&waiting.key) {
                Some(result) => {
                    let answer = build::success(Some(&waiting.id), result);
                    let peek = jsonrpc::peek(&answer).expect("built from valid JSON");
                    let session = Arc::clone(&parked.call.session);
                    self.endpoints.forward(&session, &answer, &peek).await;
                }
                None => left.push(waiting),
            }
        }
        Ok((parked.call, left))
    }

    /// Runs a call until it is answered or needs the client's input.
    async fn drive(
        &self,
        mut running: Running,
        expected: &Binding,
        call: &StatelessCall,
        notes: &tokio::sync::mpsc::Sender<Step>,
    ) -> Outcome {
        let mut waiting: Vec<Waiting> = Vec::new();
        let active = Active::new(&self.active, &running.session.id);
        loop {
            let (handle, answer) = (
                running.handle.as_mut().expect("running"),
                running.answer.as_mut().expect("running"),
            );
            let event = tokio::select! {
                biased;
                event = handle.events.recv() => event,
                response = answer => {
                    let (handle, _) = running.take();
                    running.session.outbox.abandon_request(handle);
                    let answer = with_id(&response, Some(&call.id)).unwrap_or(response);
                    return final_outcome(completed(&answer, &call.method));
                }
            };
            let Some(event) = event else { continue };
            let Ok(peek) = jsonrpc::peek(&event.message) else {
                continue;
            };
            if peek.kind != Kind::Request {
                // Progress and logs of this request, for a client that takes a
                // stream (a JSON-only client cannot get them).
                let wanted = !running.bridged
                    || peek.method.as_deref() != Some(method::MESSAGE)
                    || log_level_admits(call.log_level.as_deref(), peek.params);
                if call.accepts_stream && wanted {
                    let _ = notes.send(Step::Note(event.message.clone())).await;
                }
                continue;
            }
            let method = peek.method.as_deref().unwrap_or_default();
            let backend_id = peek.id.unwrap_or("null").to_owned();
            let needs = method::capability_needed(method);
            if needs.is_some() && !method::CARRIES_INPUT_REQUESTS.contains(&call.method.as_str()) {
                // A list (or discover) cannot answer with an InputRequiredResult:
                // the backend hears at once that its request cannot reach the
                // client, and the call goes on to its own answer.
                let session = Arc::clone(&running.session);
                self.answer_backend_error(
                    &session,
                    &backend_id,
                    &format!(
                        "{method} cannot reach the client: its request in flight ({}) cannot carry input requests",
                        call.method
                    ),
                )
                .await;
                continue;
            }
            if needs.is_some() && active.in_session() > 1 {
                // stdio says nothing of which call a backend request belongs
                // to; with several calls of this caller in flight the gateway
                // does not guess.
                let session = Arc::clone(&running.session);
                self.answer_backend_error(
                    &session,
                    &backend_id,
                    "several calls of this caller are in flight: the gateway cannot tell which one this request belongs to",
                )
                .await;
                continue;
            }
            let declared = needs.is_some_and(|cap| {
                serde_json::from_str::<HashMap<String, serde::de::IgnoredAny>>(&call.capabilities)
                    .is_ok_and(|caps| caps.contains_key(cap))
            });
            match needs {
                Some(_) if declared => {
                    let request = serde_json::value::to_raw_value(&InputRequest {
                        method,
                        params: peek.params,
                    })
                    .expect("an input request serialises");
                    waiting.push(Waiting {
                        key: format!("input-{}", waiting.len() + 1),
                        id: backend_id,
                        request,
                    });
                    // Requests the backend sends together are asked together.
                    if handle.events.is_empty() {
                        tokio::time::sleep(INPUT_BATCH_WAIT).await;
                        let handle = running.handle.as_mut().expect("running");
                        if handle.events.is_empty() {
                            return self.park(running, waiting, expected, call);
                        }
                    }
                }
                Some(cap) => {
                    let session = Arc::clone(&running.session);
                    self.answer_backend_error(
                        &session,
                        &backend_id,
                        &format!("the client did not declare the {cap} capability"),
                    )
                    .await;
                    // The call goes on without its client.
                    let (handle, answer) = running.take();
                    tokio::spawn(async move {
                        let _ = answer.await;
                        session.outbox.abandon_request(handle);
                    });
                    return refused(
                        &call.id,
                        jsonrpc::MISSING_CLIENT_CAPABILITY,
                        &format!("Missing required client capability: {cap}"),
                        Some(serde_json::json!({ "requiredCapabilities": { cap: {} } })),
                    );
                }
                None if method == method::PING => {
                    let pong = build::success(Some(&backend_id), build::raw("{}"));
                    let peek = jsonrpc::peek(&pong).expect("built from valid JSON");
                    let session = Arc::clone(&running.session);
                    self.endpoints.forward(&session, &pong, &peek).await;
                }
                None => {
                    let session = Arc::clone(&running.session);
                    self.answer_backend_error(
                        &session,
                        &backend_id,
                        &format!("{method} cannot reach a 2026-07-28 client"),
                    )
                    .await;
                }
            }
        }
    }

    /// Answers a backend's request of `session` with an error.
    async fn answer_backend_error(&self, session: &Arc<Session>, backend_id: &str, message: &str) {
        let error =
            jsonrpc::error_response(Some(backend_id), jsonrpc::METHOD_NOT_FOUND, message, None);
        if let Ok(peek) = jsonrpc::peek(&error) {
            self.endpoints.forward(session, &error, &peek).await;
        }
    }

    /// Parks a call and answers with an `InputRequiredResult`.
    pub(super) fn park(
        &self,
        running: Running,
        waiting: Vec<Waiting>,
        expected: &Binding,
        call: &StatelessCall,
    ) -> Outcome {
        let ttl = self.core.gateway().input_required_timeout;
        let parked_id = random_hex(16);
        let token = self.signer.sign(
            &Binding {
                parked: parked_id.clone(),
                ..expected.clone()
            },
            ttl,
        );
        let answer = build::success(
            Some(&call.id),
            InputRequired {
                result_type: "input_required",
                input_requests: waiting
                    .iter()
                    .map(|w| (w.key.as_str(), &*w.request))
                    .collect(),
                request_state: &token,
            },
        );
        let mark = running.session.park_request();
        lock(&self.parked).insert(
            parked_id,
            Parked {
                call: running,
                waiting,
                expires: Instant::now() + ttl,
                _mark: mark,
            },
        );
        Outcome::Answer(answer)
    }

    /// Drops the parked calls whose client did not come back in time: the call
    /// is cancelled at the backend and its waiting requests answered with an
    /// error. A parked call whose session has ended (idle while it waited,
    /// say) is dropped too: its process is gone.
    pub(crate) fn drop_expired_parked_calls(&self) {
        let now = Instant::now();
        let (expired, orphaned): (Vec<Parked>, Vec<Parked>) = {
            let mut parked = lock(&self.parked);
            let stale: Vec<String> = parked
                .iter()
                .filter(|(_, p)| p.expires <= now || p.call.session.is_ended())
                .map(|(id, _)| id.clone())
                .collect();
            stale
                .iter()
                .filter_map(|id| parked.remove(id))
                .partition(|p| !p.call.session.is_ended())
        };
        drop(orphaned);
        for stale in expired {
            let bridge = Arc::clone(&stale.call.bridge);
            let session = Arc::clone(&stale.call.session);
            let ids: Vec<String> = stale.waiting.iter().map(|w| w.id.clone()).collect();
            tracing::info!(session = %session.id, "a call waiting for its client's input expired");
            // Dropping the call cancels it at the backend (see `Running`).
            drop(stale);
            tokio::spawn(async move {
                for id in ids {
                    bridge
                        .answer_backend_error(&session, &id, "the client did not answer in time")
                        .await;
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_messages_pass_at_or_above_the_level_asked_for_and_none_without() {
        let warning =
            RawValue::from_string(r#"{"level":"warning","data":"x"}"#.to_owned()).unwrap();
        assert!(log_level_admits(Some("info"), Some(&warning)));
        assert!(log_level_admits(Some("warning"), Some(&warning)));
        assert!(!log_level_admits(Some("error"), Some(&warning)));
        assert!(!log_level_admits(None, Some(&warning)));
        assert!(!log_level_admits(Some("loud"), Some(&warning)));
    }
}
