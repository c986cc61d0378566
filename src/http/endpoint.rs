//! Handlers of both endpoints: routed `POST`/`GET`/`DELETE /mcp/{serverID}`
//! and unified `POST`/`GET`/`DELETE /mcp`, with the same session rules.
//!
//! Owns the order of the checks (endpoint, headers, body, message, session) and
//! the choice of status for each outcome, per the Streamable HTTP transport of
//! 2025-11-25 (accepting 2025-03-26 and 2025-06-18 clients). What a message
//! *does* is the relay's business; these handlers never touch a backend.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::App;
use super::reply::{self, HttpError, SESSION_HEADER};
use super::rules::{self, AnswerAs};
use crate::config::ServerConfig;
use crate::jsonrpc::{self, Kind};
use crate::relay::InitOutcome;
use crate::session::Session;

/// How long the rest of an oversized body is read before the 413 is sent anyway.
const DRAIN_OVERSIZED_BODY_FOR: std::time::Duration = std::time::Duration::from_secs(5);

/// `Retry-After` of a 503 when `max_sessions` are open.
const BUSY_RETRY_AFTER_SECS: &str = "5";

/// First protocol version whose streams start with a priming event.
const PRIMING_SINCE: &str = "2025-11-25";

/// Which endpoint a request came to.
#[derive(Clone, Copy)]
enum Target<'a> {
    Routed(&'a Arc<ServerConfig>),
    Unified,
}

impl Target<'_> {
    /// True when `session` was created on this endpoint.
    fn owns(&self, session: &Session) -> bool {
        match (self, session.server()) {
            (Target::Routed(server), Some(own)) => own.id == server.id,
            (Target::Unified, None) => true,
            _ => false,
        }
    }
}

pub async fn post(
    State(app): State<Arc<App>>,
    Path(server_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = match server(&app, &server_id) {
        Ok(server) => post_message(&app, Target::Routed(server), &headers, body).await,
        Err(e) => Err(e),
    };
    result.unwrap_or_else(|e| refused(&server_id, e))
}

pub async fn get(
    State(app): State<Arc<App>>,
    Path(server_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    server(&app, &server_id)
        .and_then(|server| open_stream(&app, Target::Routed(server), &headers))
        .unwrap_or_else(|e| refused(&server_id, e))
}

pub async fn delete(
    State(app): State<Arc<App>>,
    Path(server_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = match server(&app, &server_id) {
        Ok(server) => end_session(&app, Target::Routed(server), &headers).await,
        Err(e) => Err(e),
    };
    result.unwrap_or_else(|e| refused(&server_id, e))
}

pub async fn unified_post(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    post_message(&app, Target::Unified, &headers, body)
        .await
        .unwrap_or_else(|e| refused("(unified)", e))
}

pub async fn unified_get(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    open_stream(&app, Target::Unified, &headers).unwrap_or_else(|e| refused("(unified)", e))
}

pub async fn unified_delete(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    end_session(&app, Target::Unified, &headers)
        .await
        .unwrap_or_else(|e| refused("(unified)", e))
}

/// Logs a refused request (at debug level: clients probing is normal) and answers it.
fn refused(server_id: &str, error: HttpError) -> Response {
    tracing::debug!(
        server = server_id,
        status = error.status.as_u16(),
        "request refused: {}",
        error.message
    );
    error.into_response()
}

fn server<'a>(app: &'a App, server_id: &str) -> Result<&'a Arc<ServerConfig>, HttpError> {
    app.relay.config.server(server_id).ok_or_else(|| {
        HttpError::new(
            StatusCode::NOT_FOUND,
            jsonrpc::SERVER_ERROR,
            format!("Not Found: no server `{server_id}` is configured"),
        )
    })
}

/// The live session a request names, on this endpoint.
fn session(app: &App, target: Target<'_>, headers: &HeaderMap) -> Result<Arc<Session>, HttpError> {
    let id = rules::require_session_id(headers)?;
    app.relay
        .sessions
        .get(id)
        .filter(|s| target.owns(s))
        .ok_or_else(rules::unknown_session)
}

/// Reads the body, refusing more than `limit` bytes with 413. The rest of an
/// oversized body is read and thrown away (up to another `limit` bytes, for
/// at most a few seconds) so that the client, still sending, gets to read the
/// 413 instead of a reset connection.
async fn read_body(body: Body, limit: u64) -> Result<Bytes, HttpError> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut body = body.into_data_stream();
    let mut collected = bytes::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            HttpError::new(
                StatusCode::BAD_REQUEST,
                jsonrpc::SERVER_ERROR,
                format!("Bad Request: could not read the body: {e}"),
            )
        })?;
        if collected.len() + chunk.len() > limit {
            let mut discarded = collected.len() + chunk.len() - limit;
            let drain = async {
                while let Some(Ok(chunk)) = body.next().await {
                    discarded += chunk.len();
                    if discarded > limit {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_OVERSIZED_BODY_FOR, drain).await;
            return Err(HttpError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                jsonrpc::SERVER_ERROR,
                format!("Payload Too Large: the body exceeds max_body_bytes ({limit} bytes)"),
            ));
        }
        collected.extend_from_slice(&chunk);
    }
    Ok(collected.freeze())
}

async fn post_message(
    app: &App,
    target: Target<'_>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    rules::require_json_content(headers)?;
    let answer_as = rules::post_answer_as(headers)?;
    rules::protocol_version(headers)?;
    let session_id = rules::session_id(headers)?;
    let bytes = read_body(body, app.relay.config.gateway.max_body_bytes).await?;
    if jsonrpc::is_batch(&bytes) {
        return Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            jsonrpc::INVALID_REQUEST,
            "Invalid Request: JSON-RPC batches are not supported on this endpoint",
        ));
    }
    let peek = jsonrpc::peek_client(&bytes)
        .map_err(|e| HttpError::new(StatusCode::BAD_REQUEST, e.code(), e.to_string()))?;

    if peek.kind == Kind::Request && peek.method.as_deref() == Some("initialize") {
        if session_id.is_some() {
            return Err(HttpError::new(
                StatusCode::BAD_REQUEST,
                jsonrpc::INVALID_REQUEST,
                "Bad Request: initialize must be sent without Mcp-Session-Id; it starts a new session",
            )
            .with_id(peek.id));
        }
        let outcome = match target {
            Target::Routed(server) => app.relay.initialize(server, bytes.clone(), &peek).await,
            Target::Unified => app.relay.unified_initialize(bytes.clone(), &peek).await,
        };
        return Ok(match outcome {
            InitOutcome::Created { session, response } => {
                let mut reply = answer(answer_as, &session, response);
                if let Ok(value) = HeaderValue::from_str(&session.id) {
                    reply.headers_mut().insert(SESSION_HEADER, value);
                }
                reply
            }
            InitOutcome::Failed { response } => reply::json_body(StatusCode::OK, response),
            InitOutcome::Busy => {
                let mut busy = HttpError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    jsonrpc::SERVER_ERROR,
                    "Service Unavailable: the gateway holds max_sessions sessions; retry later",
                )
                .with_id(peek.id)
                .into_response();
                busy.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(BUSY_RETRY_AFTER_SECS),
                );
                busy
            }
        });
    }

    let session = session(app, target, headers)?;
    match peek.kind {
        Kind::Request => {
            let response = app.relay.request(&session, &bytes, &peek).await;
            Ok(answer(answer_as, &session, response))
        }
        Kind::Notification | Kind::Response => {
            app.relay.forward(&session, &bytes, &peek).await;
            Ok(reply::accepted())
        }
    }
}

/// A request's answer as JSON or as a one-event SSE stream.
fn answer(answer_as: AnswerAs, session: &Session, message: Bytes) -> Response {
    match answer_as {
        AnswerAs::Json => reply::json_body(StatusCode::OK, message),
        AnswerAs::EventStream => {
            let mut frames = Vec::with_capacity(2);
            if session.protocol_version.as_str() >= PRIMING_SINCE {
                frames.push(reply::sse_priming(
                    &session.outbox.next_event_id().to_string(),
                ));
            }
            frames.push(reply::sse_message(
                &session.outbox.next_event_id().to_string(),
                &message,
            ));
            reply::sse_response(Body::from(frames.concat()))
        }
    }
}

fn open_stream(app: &App, target: Target<'_>, headers: &HeaderMap) -> Result<Response, HttpError> {
    rules::get_accepts_stream(headers)?;
    rules::protocol_version(headers)?;
    let session = session(app, target, headers)?;
    session.touch();
    let mut stream = session.outbox.attach();
    let keepalive_every = app.relay.config.gateway.sse_keepalive;
    let (frames, body) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        if session.protocol_version.as_str() >= PRIMING_SINCE {
            let priming = reply::sse_priming(&session.outbox.next_event_id().to_string());
            if frames.send(Ok(priming)).await.is_err() {
                session.outbox.detach(stream.token);
                return;
            }
        }
        let mut keepalive = tokio::time::interval(keepalive_every);
        keepalive.reset();
        loop {
            let frame = tokio::select! {
                message = stream.messages.recv() => match message {
                    Some(m) => reply::sse_message(&session.outbox.next_event_id().to_string(), &m),
                    // Replaced by a newer stream, or the session ended.
                    None => break,
                },
                _ = keepalive.tick() => reply::sse_keepalive(),
                () = frames.closed() => break,
            };
            if frames.send(Ok(frame)).await.is_err() {
                break;
            }
        }
        session.outbox.detach(stream.token);
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
    rules::protocol_version(headers)?;
    let session = session(app, target, headers)?;
    if app.relay.end_session(&session.id, "client DELETE").await {
        Ok(StatusCode::OK.into_response())
    } else {
        Err(rules::unknown_session())
    }
}
