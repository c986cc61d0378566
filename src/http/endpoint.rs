//! Handlers of both endpoints: routed `POST`/`GET`/`DELETE /mcp/{serverID}`
//! and unified `POST`/`GET`/`DELETE /mcp`, with the same session rules.
//!
//! Owns the order of the checks (endpoint, headers, body, message, session) and
//! the choice of status for each outcome, per the Streamable HTTP transport of
//! 2025-11-25 (accepting 2025-03-26 and 2025-06-18 clients). What a message
//! *does* is the endpoints' business; these handlers never touch a backend.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::oauth;
use super::reply::{self, HttpError, SESSION_HEADER};
use super::rules::{self, AnswerAs};
use super::stateless::{self, Era};
use super::{App, limits};
use crate::config::ServerConfig;
use crate::core::{Outcome, Step};
use crate::jsonrpc::{self, Kind};
use crate::protocol::{Version, method};
use crate::session::{Access, Caller, Session};

/// How long the rest of a refused body (oversized, or over the budget of
/// bodies held) is read before the refusal is sent anyway.
const DRAIN_REFUSED_BODY_FOR: std::time::Duration = std::time::Duration::from_secs(5);

/// Which endpoint a request came to.
#[derive(Clone, Copy)]
enum Target<'a> {
    Routed(&'a Arc<ServerConfig>),
    Unified,
}

impl Target<'_> {
    /// The request path of the endpoint.
    fn path(&self) -> String {
        match self {
            Target::Routed(server) => format!("/mcp/{}", server.id),
            Target::Unified => "/mcp".to_owned(),
        }
    }

    fn server(&self) -> Option<&ServerConfig> {
        match self {
            Target::Routed(server) => Some(server),
            Target::Unified => None,
        }
    }

    /// True when `session` was created on this endpoint.
    fn owns(&self, session: &Session) -> bool {
        match (self, session.server()) {
            (Target::Routed(server), Some(own)) => own.id == server.id,
            (Target::Unified, None) => true,
            _ => false,
        }
    }
}

/// The server id of `/mcp/{serverID}`; one that is not UTF-8 names no server.
type ServerIdPath = Result<Path<String>, axum::extract::rejection::PathRejection>;

fn server_id(path: ServerIdPath) -> String {
    path.map_or_else(|_| "(not UTF-8)".to_owned(), |Path(id)| id)
}

pub(super) async fn post(
    State(app): State<Arc<App>>,
    path: ServerIdPath,
    headers: HeaderMap,
    body: Body,
) -> Response {
    routed_post(&app, &server_id(path), headers, body).await
}

/// A `POST` to `/mcp/<server_id>`, from the router or the hot path.
pub(super) async fn routed_post(
    app: &Arc<App>,
    server_id: &str,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = match read_post_body(app, &headers, body).await {
        Ok(bytes) => match server(app, server_id) {
            Ok(server) => post_message(app, Target::Routed(&server), &headers, bytes).await,
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    result.unwrap_or_else(|e| refused(server_id, e))
}

pub(super) async fn get(
    State(app): State<Arc<App>>,
    path: ServerIdPath,
    headers: HeaderMap,
) -> Response {
    let server_id = server_id(path);
    let result = match server(&app, &server_id) {
        Ok(server) => open_stream(&app, Target::Routed(&server), &headers).await,
        Err(e) => Err(e),
    };
    result.unwrap_or_else(|e| refused(&server_id, e))
}

pub(super) async fn delete(
    State(app): State<Arc<App>>,
    path: ServerIdPath,
    headers: HeaderMap,
) -> Response {
    let server_id = server_id(path);
    let result = match server(&app, &server_id) {
        Ok(server) => end_session(&app, Target::Routed(&server), &headers).await,
        Err(e) => Err(e),
    };
    result.unwrap_or_else(|e| refused(&server_id, e))
}

pub(super) async fn unified_post(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = match read_post_body(&app, &headers, body).await {
        Ok(bytes) => post_message(&app, Target::Unified, &headers, bytes).await,
        Err(e) => Err(e),
    };
    result.unwrap_or_else(|e| refused("(unified)", e))
}

pub(super) async fn unified_get(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    open_stream(&app, Target::Unified, &headers)
        .await
        .unwrap_or_else(|e| refused("(unified)", e))
}

pub(super) async fn unified_delete(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    end_session(&app, Target::Unified, &headers)
        .await
        .unwrap_or_else(|e| refused("(unified)", e))
}

/// Logs a refused request (at debug level: clients probing is normal) and answers it.
fn refused(server_id: &str, error: HttpError) -> Response {
    crate::metrics::error(&format!("http_{}", error.status.as_u16()));
    tracing::debug!(
        server = server_id,
        status = error.status.as_u16(),
        "request refused: {}",
        error.message
    );
    error.into_response()
}

fn server(app: &App, server_id: &str) -> Result<Arc<ServerConfig>, HttpError> {
    app.core.server(server_id).ok_or_else(|| {
        HttpError::new(
            StatusCode::NOT_FOUND,
            jsonrpc::SERVER_ERROR,
            format!("Not Found: no server `{server_id}` is configured"),
        )
    })
}

/// The live session a request names, on this endpoint, created by the same
/// caller (API key, or OAuth identity): presented by another, a session is
/// as unknown as any (404). The caller's latest access is recorded on it.
fn session(
    app: &App,
    target: Target<'_>,
    caller: &Caller,
    headers: &HeaderMap,
) -> Result<Arc<Session>, HttpError> {
    let id = rules::require_session_id(headers)?;
    let session = app
        .core
        .session(id)
        .filter(|s| target.owns(s) && s.caller == caller.name)
        .ok_or_else(rules::unknown_session)?;
    session.set_access(caller.access.clone());
    Ok(session)
}

/// Reads the body, refusing more than `limit` bytes with 413. The rest of an
/// oversized body is read and thrown away (up to another `limit` bytes, for
/// at most a few seconds: [`drain`]) so that the client, still sending, gets
/// to read the 413 instead of a reset connection.
///
/// The body must keep coming: a wait of more than `body_read_timeout` for its
/// next bytes, or more than `body_read_total_timeout` for all of it (a
/// `Content-Length` larger than what is sent included), is a 408, after which
/// the connection is closed. Its bytes are counted against
/// `max_buffered_body_bytes` as they are read (all of a declared length up
/// front) until the last reference to them is dropped; a body that would take
/// the count past it is a 503 (its bytes drained, not held, as for a 413).
pub(super) async fn read_body(
    app: &App,
    body: Body,
    limit: u64,
    declared: Option<u64>,
) -> Result<Bytes, HttpError> {
    let gateway = app.core.gateway();
    let mut deadline =
        limits::BodyDeadline::new(gateway.body_read_timeout, gateway.body_read_total_timeout);
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut body = body.into_data_stream();
    let declared = declared.map_or(0, |d| usize::try_from(d).unwrap_or(usize::MAX));
    let Ok(mut reservation) = app.bodies.reserve(declared.min(limit) as u64) else {
        drain(&mut body, declared.min(limit)).await;
        return Err(bodies_full(gateway.max_buffered_body_bytes));
    };
    let mut collected = bytes::BytesMut::new();
    loop {
        let Some(next) = deadline.next(body.next()).await else {
            return Err(body_too_slow(gateway, deadline.total_is_up()));
        };
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| {
            HttpError::new(
                StatusCode::BAD_REQUEST,
                jsonrpc::SERVER_ERROR,
                format!("Bad Request: could not read the body: {e}"),
            )
        })?;
        if collected.len() + chunk.len() > limit {
            drop((reservation, collected));
            drain(&mut body, limit).await;
            return Err(too_large(limit as u64));
        }
        if reservation
            .grow_to((collected.len() + chunk.len()) as u64)
            .is_err()
        {
            drop((reservation, collected));
            drain(&mut body, limit).await;
            return Err(bodies_full(gateway.max_buffered_body_bytes));
        }
        collected.extend_from_slice(&chunk);
    }
    Ok(reservation.hold(collected))
}

/// Reads up to `at_most` more bytes of a refused body, for at most
/// [`DRAIN_REFUSED_BODY_FOR`], and throws them away, so that a client still
/// sending gets to read its answer instead of a reset connection.
async fn drain(body: &mut axum::body::BodyDataStream, at_most: usize) {
    let mut discarded = 0;
    let drain = async {
        while let Some(Ok(chunk)) = body.next().await {
            discarded += chunk.len();
            if discarded > at_most {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_REFUSED_BODY_FOR, drain).await;
}

/// Reads a POST's body before anything else is checked: a connection whose
/// request body was left unread cannot be reused, and a client that already
/// sent its next request on it would see it closed under it.
///
/// A body declared (by `Content-Length`) larger than `max_body_bytes` is
/// refused before it is read when the client waits for `100 Continue` or the
/// excess is too large to drain: it is never sent at all.
async fn read_post_body(app: &App, headers: &HeaderMap, body: Body) -> Result<Bytes, HttpError> {
    let limit = app.core.gateway().max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    let waits_for_continue = headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if let Some(declared) = declared
        && declared > limit
        && (waits_for_continue || declared > limit.saturating_mul(2))
    {
        return Err(too_large(limit));
    }
    let bytes = read_body(app, body, limit, declared).await?;
    crate::metrics::bytes_in(bytes.len());
    Ok(bytes)
}

/// A body that stopped coming: 408 (the response closes the connection).
fn body_too_slow(gateway: &crate::config::GatewayConfig, total: bool) -> HttpError {
    let why = if total {
        format!(
            "the body did not arrive within body_read_total_timeout ({})",
            crate::config::format_duration(gateway.body_read_total_timeout)
        )
    } else {
        format!(
            "no bytes of the body arrived for body_read_timeout ({})",
            crate::config::format_duration(gateway.body_read_timeout)
        )
    };
    HttpError::new(
        StatusCode::REQUEST_TIMEOUT,
        jsonrpc::SERVER_ERROR,
        format!("Request Timeout: {why}"),
    )
}

/// The gateway holds `max_buffered_body_bytes` of request bodies already: 503.
fn bodies_full(cap: u64) -> HttpError {
    HttpError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        jsonrpc::SERVER_ERROR,
        format!(
            "Service Unavailable: the gateway holds max_buffered_body_bytes ({}) of request bodies; retry later",
            crate::config::format_size(cap)
        ),
    )
}

fn too_large(limit: u64) -> HttpError {
    HttpError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        jsonrpc::SERVER_ERROR,
        format!("Payload Too Large: the body exceeds max_body_bytes ({limit} bytes)"),
    )
}

/// Any method other than GET, POST and DELETE on an MCP endpoint.
pub(super) async fn method_not_allowed() -> Response {
    HttpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        jsonrpc::SERVER_ERROR,
        "Method Not Allowed: use POST, GET or DELETE",
    )
    .into_response()
}

/// The checks every request to an MCP endpoint passes first (origin, host,
/// API key or access token); returns the caller: the key's name, or with
/// `[gateway.oauth]` the token's identity and scopes (a valid API key is
/// served as without OAuth). A routed endpoint whose server needs scopes
/// the token lacks is refused here (403).
async fn check_caller(
    app: &App,
    headers: &HeaderMap,
    target: Target<'_>,
) -> Result<Caller, HttpError> {
    let gateway = app.core.gateway();
    rules::check_origin_and_host(
        headers,
        gateway.listen.ip().is_loopback(),
        &gateway.allowed_origins,
    )?;
    let Some(verifier) = &app.oauth else {
        return Ok(Caller {
            name: rules::authenticate(headers, &gateway.api_keys)?,
            access: Access::Every,
        });
    };
    if !gateway.api_keys.is_empty()
        && let Ok(Some(name)) = rules::authenticate(headers, &gateway.api_keys)
    {
        return Ok(Caller {
            name: Some(name),
            access: Access::Every,
        });
    }
    let path = target.path();
    let needed = verifier.needed(target.server());
    let Some(token) = rules::bearer_token(headers) else {
        return Err(verifier.unauthorized(&path, &needed, None));
    };
    // Boxed: a key fetch would otherwise sit in every request's future.
    let verified = Box::pin(verifier.verify(token))
        .await
        .map_err(|e| verifier.unauthorized(&path, &needed, Some(&e)))?;
    if !oauth::has_all(&verified.scopes, &needed) {
        return Err(verifier.insufficient_scope(&path, &needed));
    }
    Ok(Caller {
        name: Some(verified.caller),
        access: Access::Scopes(verified.scopes),
    })
}

async fn post_message(
    app: &Arc<App>,
    target: Target<'_>,
    headers: &HeaderMap,
    bytes: Bytes,
) -> Result<Response, HttpError> {
    let caller = check_caller(app, headers, target).await?;
    rules::require_json_content(headers)?;
    let answer_as = rules::post_answer_as(headers)?;
    if stateless::era_of_post(headers, &bytes) == Era::Stateless {
        return Box::pin(stateless_post(
            app, target, caller, answer_as, headers, bytes,
        ))
        .await;
    }
    rules::protocol_version(headers)?;
    let session_id = rules::session_id(headers)?;
    if jsonrpc::is_batch(&bytes) {
        let session = session(app, target, &caller, headers)?;
        return Box::pin(serve_batch(app, &session, answer_as, &bytes)).await;
    }
    let peek = jsonrpc::peek_client(&bytes)
        .map_err(|e| HttpError::new(StatusCode::BAD_REQUEST, e.code(), e.to_string()))?;

    if peek.kind == Kind::Request && peek.method.as_deref() == Some(method::INITIALIZE) {
        if session_id.is_some() {
            return Err(HttpError::new(
                StatusCode::BAD_REQUEST,
                jsonrpc::INVALID_REQUEST,
                "Bad Request: initialize must be sent without Mcp-Session-Id; it starts a new session",
            )
            .with_id(peek.id));
        }
        // Boxed, as every way but a request's: once per session, and a
        // launch would otherwise sit in every request's future (hyper keeps
        // one per connection).
        let outcome = match target {
            Target::Routed(server) => {
                Box::pin(app.endpoints.routed().initialize(
                    server,
                    caller,
                    bytes.clone(),
                    &peek,
                    Era::Session,
                ))
                .await
            }
            Target::Unified => {
                Box::pin(app.endpoints.unified().initialize(
                    caller,
                    bytes.clone(),
                    &peek,
                    Era::Session,
                ))
                .await
            }
        };
        return Ok(respond(app, outcome, answer_as, peek.id));
    }

    let session = session(app, target, &caller, headers)?;
    match peek.kind {
        Kind::Request => {
            let limit = app.core.gateway().max_in_flight_per_session;
            if session.in_flight() >= limit {
                return Err(too_many("session", limit).with_id(peek.id));
            }
            Ok(serve_request(app, session, answer_as, bytes.clone(), &peek).await)
        }
        Kind::Notification | Kind::Response => {
            Box::pin(app.endpoints.forward(&session, &bytes, &peek)).await;
            Ok(reply::accepted())
        }
    }
}

/// The one place a client message's [`Outcome`] becomes a response: its
/// status, headers and shape. `id` is the request's, for the errors the
/// gateway words itself.
fn respond(app: &App, outcome: Outcome, answer_as: AnswerAs, id: Option<&str>) -> Response {
    match outcome {
        Outcome::Created { session, answer } => {
            let mut reply = single_answer(answer_as, &session, answer);
            if let Ok(value) = HeaderValue::from_str(&session.id) {
                reply.headers_mut().insert(SESSION_HEADER, value);
            }
            reply
        }
        Outcome::Answer(body) => reply::json_body(StatusCode::OK, body),
        Outcome::Refused(body) => reply::json_body(StatusCode::BAD_REQUEST, body),
        Outcome::Stream(first, steps) => {
            stateless_stream(first, steps, app.core.gateway().sse_keepalive)
        }
        Outcome::TooMany => too_many("caller", app.core.gateway().max_in_flight_per_session)
            .with_id(id)
            .into_response(),
        Outcome::Busy => busy().with_id(id).into_response(),
    }
}

/// 503: `max_sessions` are open (the response says when to retry).
fn busy() -> HttpError {
    HttpError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        jsonrpc::SERVER_ERROR,
        "Service Unavailable: the gateway holds max_sessions sessions; retry later",
    )
}

/// 429: this `who` (session or stateless caller) has `limit` requests in flight.
fn too_many(who: &str, limit: usize) -> HttpError {
    HttpError::new(
        StatusCode::TOO_MANY_REQUESTS,
        jsonrpc::SERVER_ERROR,
        format!(
            "Too Many Requests: this {who} already has {limit} requests in flight (max_in_flight_per_session)"
        ),
    )
}

/// A stateless (2026-07-28) POST, on either endpoint: checked here, served by
/// the bridge, answered as one JSON document or as an event stream.
async fn stateless_post(
    app: &Arc<App>,
    target: Target<'_>,
    caller: Caller,
    answer_as: AnswerAs,
    headers: &HeaderMap,
    bytes: Bytes,
) -> Result<Response, HttpError> {
    let server = match target {
        Target::Routed(server) => Some(server),
        Target::Unified => None,
    };
    let caller_header = app.core.gateway().caller_header.as_deref();
    let accepts_stream = answer_as != AnswerAs::Json;
    let call = match stateless::check(headers, &bytes, caller_header, accepts_stream)? {
        None => return Ok(reply::accepted()),
        Some(call) => call,
    };
    let outcome = app.bridge.stateless(server, caller, bytes, call).await;
    // The stateless era's 503 and 429 carry no id (as before the bridge grew one).
    Ok(respond(app, outcome, answer_as, None))
}

/// A stateless call's notifications and then its final message (or a
/// `subscriptions/listen` stream), as an event stream without event ids
/// (2026-07-28 streams are not resumable), with a keep-alive comment every
/// `keepalive` so that a client that went away is noticed.
fn stateless_stream(
    first: Bytes,
    mut steps: tokio::sync::mpsc::Receiver<Step>,
    keepalive: std::time::Duration,
) -> Response {
    let (frames, body) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        if frames.send(Ok(reply::sse_data(&first))).await.is_err() {
            return;
        }
        let mut tick = tokio::time::interval(keepalive);
        tick.tick().await;
        loop {
            let step = tokio::select! {
                step = steps.recv() => step,
                _ = tick.tick() => {
                    if frames.send(Ok(reply::sse_keepalive())).await.is_err() {
                        break;
                    }
                    continue;
                }
            };
            let Some(step) = step else { break };
            let (frame, last) = match step {
                Step::Note(note) => (reply::sse_data(&note), false),
                Step::Done(Outcome::Answer(end) | Outcome::Refused(end)) => {
                    (reply::sse_data(&end), true)
                }
                Step::Done(_) => break,
            };
            // A client that went away drops `steps` with this task, which
            // cancels the call.
            if frames.send(Ok(frame)).await.is_err() || last {
                break;
            }
        }
    });
    reply::sse_response(Body::from_stream(ReceiverStream::new(body)))
}

/// A request's answer as JSON or as an SSE stream that carries a single answer.
fn single_answer(answer_as: AnswerAs, session: &Session, message: Bytes) -> Response {
    match answer_as {
        AnswerAs::Json | AnswerAs::JsonOrStream => reply::json_body(StatusCode::OK, message),
        AnswerAs::EventStream => {
            let mut handle = session.outbox.open_request(None);
            let mut frames = Vec::with_capacity(2);
            if primes(session) {
                frames.push(reply::sse_priming(&handle.priming.id));
            }
            session.outbox.finish_request(handle.stream, message);
            while let Ok(event) = handle.events.try_recv() {
                frames.push(reply::sse_message(&event.id, &event.message));
            }
            reply::sse_response(Body::from(frames.concat()))
        }
    }
}

/// True when the session's streams start with a priming event (2025-11-25 on).
fn primes(session: &Session) -> bool {
    Version::FIRST_WITH_PRIMING.is_at_most(&session.protocol_version)
}

/// Serves one request. Its answer is JSON when the client accepts JSON and the
/// backend answers before it sends anything else; as soon as the backend sends
/// a request or notification while this request is in flight (sampling,
/// progress, logs), the answer becomes an SSE stream that carries those
/// messages and then the answer. A client that drops that stream can resume it
/// with `Last-Event-ID`; the request itself runs to its end either way.
async fn serve_request(
    app: &Arc<App>,
    session: Arc<Session>,
    answer_as: AnswerAs,
    bytes: Bytes,
    peek: &jsonrpc::Peek<'_>,
) -> Response {
    if answer_as == AnswerAs::Json {
        let response = Box::pin(app.endpoints.request(&session, &bytes, peek)).await;
        return reply::json_body(StatusCode::OK, response);
    }
    let progress_token = peek
        .params
        .and_then(|p| jsonrpc::request_progress_token(&bytes, p))
        .map(|(token, _)| token.to_owned());
    let mut handle = session.outbox.open_request(progress_token);
    // What the backend asked with no request in flight, held until a stream
    // could carry it: this request's can.
    session.outbox.deliver_held_on(handle.stream);
    let app_in_task = Arc::clone(app);
    let in_task = Arc::clone(&session);
    let mut answer: std::pin::Pin<Box<dyn Future<Output = Bytes> + Send>> = Box::pin(async move {
        match jsonrpc::peek(&bytes) {
            Ok(peek) => app_in_task.endpoints.request(&in_task, &bytes, &peek).await,
            Err(e) => jsonrpc::error_response(None, e.code(), &e.to_string(), None),
        }
    });
    let mut first = None;
    if answer_as == AnswerAs::JsonOrStream {
        tokio::select! {
            biased;
            event = handle.events.recv() => first = event,
            response = &mut answer => {
                // Messages the backend sent before its answer are queued before
                // the answer arrives; a poll may still have missed them (the
                // runtime's cooperative budget can make a ready channel look
                // empty), so the queue is looked at once more, directly.
                match handle.events.try_recv() {
                    Ok(event) => {
                        first = Some(event);
                        answer = Box::pin(std::future::ready(response));
                    }
                    Err(_) => {
                        session.outbox.abandon_request(handle);
                        return reply::json_body(StatusCode::OK, response);
                    }
                }
            }
        }
    }
    let (frames, body) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        let stream = handle.stream;
        let mut sender = FrameSender::new(frames);
        if primes(&session) {
            sender.send(reply::sse_priming(&handle.priming.id)).await;
        }
        if let Some(event) = first {
            sender
                .send(reply::sse_message(&event.id, &event.message))
                .await;
        }
        let mut answered = false;
        loop {
            tokio::select! {
                event = handle.events.recv() => match event {
                    Some(event) => {
                        sender.send(reply::sse_message(&event.id, &event.message)).await;
                        if event.last {
                            break;
                        }
                    }
                    // Resumed on another connection: only the answer is left to wait for.
                    None => {
                        if !answered {
                            let response = answer.as_mut().await;
                            session.outbox.finish_request(stream, response);
                        }
                        break;
                    }
                },
                response = answer.as_mut(), if !answered => {
                    answered = true;
                    session.outbox.finish_request(stream, response);
                }
            }
        }
    });
    reply::sse_response(Body::from_stream(ReceiverStream::new(body)))
}

/// Sends SSE frames to a client until it goes away; after that the frames are
/// dropped (they stay in the session's replay buffer for a resume).
struct FrameSender {
    frames: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    gone: bool,
}

impl FrameSender {
    fn new(frames: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>) -> FrameSender {
        FrameSender {
            frames,
            gone: false,
        }
    }

    async fn send(&mut self, frame: Bytes) {
        if !self.gone && self.frames.send(Ok(frame)).await.is_err() {
            self.gone = true;
        }
    }
}

/// Serves a JSON-RPC batch (2025-03-26 sessions only): requests run at once and
/// are answered together, in order; notifications and responses are forwarded.
async fn serve_batch(
    app: &App,
    session: &Arc<Session>,
    answer_as: AnswerAs,
    bytes: &[u8],
) -> Result<Response, HttpError> {
    if session.protocol_version.as_str() > Version::LAST_WITH_BATCHES.as_str() {
        return Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            jsonrpc::INVALID_REQUEST,
            format!(
                "Invalid Request: JSON-RPC batches were removed after {}; this session speaks {}",
                Version::LAST_WITH_BATCHES.as_str(),
                session.protocol_version
            ),
        ));
    }
    if jsonrpc::nests_deeper_than(bytes, jsonrpc::MAX_DEPTH) {
        return Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            jsonrpc::INVALID_REQUEST,
            "Invalid Request: the batch nests too deep",
        ));
    }
    let elements: Vec<&serde_json::value::RawValue> =
        serde_json::from_slice(bytes).map_err(|e| {
            HttpError::new(
                StatusCode::BAD_REQUEST,
                jsonrpc::PARSE_ERROR,
                format!("Parse error: {e}"),
            )
        })?;
    if elements.is_empty() {
        return Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            jsonrpc::INVALID_REQUEST,
            "Invalid Request: an empty batch",
        ));
    }
    let answers = elements.iter().map(|element| async move {
        let bytes = element.get().as_bytes();
        match jsonrpc::peek(bytes) {
            Err(e) => Some(jsonrpc::error_response(
                None,
                e.code(),
                &e.to_string(),
                None,
            )),
            Ok(peek) if peek.method.as_deref() == Some(method::INITIALIZE) => {
                Some(jsonrpc::error_response(
                    peek.id,
                    jsonrpc::INVALID_REQUEST,
                    "initialize must not be part of a batch",
                    None,
                ))
            }
            Ok(peek) if peek.kind == Kind::Request => {
                Some(app.endpoints.request(session, bytes, &peek).await)
            }
            Ok(peek) => {
                app.endpoints.forward(session, bytes, &peek).await;
                None
            }
        }
    });
    let answers: Vec<Bytes> = futures_util::future::join_all(answers)
        .await
        .into_iter()
        .flatten()
        .collect();
    let Some((last, rest)) = answers.split_last() else {
        return Ok(reply::accepted());
    };
    Ok(match answer_as {
        AnswerAs::Json | AnswerAs::JsonOrStream => {
            let mut body =
                Vec::with_capacity(answers.iter().map(|a| a.len() + 1).sum::<usize>() + 2);
            body.push(b'[');
            for (i, answer) in answers.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(answer);
            }
            body.push(b']');
            reply::json_body(StatusCode::OK, Bytes::from(body))
        }
        AnswerAs::EventStream => {
            let mut handle = session.outbox.open_request(None);
            for answer in rest {
                session.outbox.deliver_on(handle.stream, answer.clone());
            }
            session.outbox.finish_request(handle.stream, last.clone());
            let mut frames = Vec::new();
            while let Ok(event) = handle.events.try_recv() {
                frames.push(reply::sse_message(&event.id, &event.message));
            }
            reply::sse_response(Body::from(frames.concat()))
        }
    })
}

async fn open_stream(
    app: &App,
    target: Target<'_>,
    headers: &HeaderMap,
) -> Result<Response, HttpError> {
    let caller = check_caller(app, headers, target).await?;
    if stateless::era_of_headers(headers) == Era::Stateless {
        return Err(stateless::refuse_get_or_delete());
    }
    rules::get_accepts_stream(headers)?;
    rules::protocol_version(headers)?;
    let session = session(app, target, &caller, headers)?;
    session.touch();
    let last_event_id = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    let mut stream = match &last_event_id {
        Some(id) => session.outbox.resume(id).map_err(|_| {
            HttpError::new(
                StatusCode::BAD_REQUEST,
                jsonrpc::SERVER_ERROR,
                "Bad Request: Last-Event-ID is not an event id of this gateway",
            )
        })?,
        None => session.outbox.attach(),
    };
    let keepalive_every = app.core.gateway().sse_keepalive;
    let (frames, body) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        if last_event_id.is_none() && primes(&session) {
            let priming = reply::sse_priming(&stream.priming.id);
            if frames.send(Ok(priming)).await.is_err() {
                session.outbox.detach(stream.stream);
                return;
            }
        }
        let mut keepalive = tokio::time::interval(keepalive_every);
        keepalive.reset();
        loop {
            let frame = tokio::select! {
                event = stream.events.recv() => match event {
                    Some(event) => reply::sse_message(&event.id, &event.message),
                    // Replaced by a newer stream, finished, or the session ended.
                    None => break,
                },
                _ = keepalive.tick() => reply::sse_keepalive(),
                () = frames.closed() => break,
            };
            if frames.send(Ok(frame)).await.is_err() {
                break;
            }
        }
        session.outbox.detach(stream.stream);
        session.touch();
    });
    Ok(reply::sse_response(Body::from_stream(ReceiverStream::new(
        body,
    ))))
}

async fn end_session(
    app: &App,
    target: Target<'_>,
    headers: &HeaderMap,
) -> Result<Response, HttpError> {
    let caller = check_caller(app, headers, target).await?;
    if stateless::era_of_headers(headers) == Era::Stateless {
        return Err(stateless::refuse_get_or_delete());
    }
    rules::protocol_version(headers)?;
    let session = session(app, target, &caller, headers)?;
    if app.core.end_session(&session.id, "client DELETE").await {
        Ok(StatusCode::OK.into_response())
    } else {
        Err(rules::unknown_session())
    }
}
