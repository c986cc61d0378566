//! Turning outcomes into HTTP responses: JSON bodies, SSE frames, and errors.
//!
//! Owns the wire shape of everything the gateway sends back over HTTP: a
//! JSON-RPC error with its HTTP status ([`HttpError`]), a single JSON answer,
//! and SSE events. It never decides *which* status a situation deserves (the
//! handlers do) and never alters the bytes of a forwarded message.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::fmt::{Display, Write as _};

use bytes::{BufMut, Bytes, BytesMut};

use crate::jsonrpc;

/// The header carrying the session id (HTTP headers are case-insensitive).
pub(super) const SESSION_HEADER: &str = "mcp-session-id";
/// The header carrying the protocol version.
pub(super) const PROTOCOL_VERSION_HEADER: &str = "mcp-protocol-version";

/// An HTTP error status with a JSON-RPC error body.
#[derive(Debug)]
pub(super) struct HttpError {
    pub status: StatusCode,
    pub code: i32,
    pub message: String,
    /// The raw id of the request it answers, when known.
    pub id: Option<String>,
    /// The error's `data` member, when it has one.
    pub data: Option<serde_json::Value>,
    /// The `WWW-Authenticate` challenge of a 401 or 403, when it is not the plain one.
    pub challenge: Option<String>,
}

impl HttpError {
    pub(super) fn new(status: StatusCode, code: i32, message: impl Into<String>) -> HttpError {
        HttpError {
            status,
            code,
            message: message.into(),
            id: None,
            data: None,
            challenge: None,
        }
    }

    pub(super) fn with_challenge(mut self, challenge: String) -> HttpError {
        self.challenge = Some(challenge);
        self
    }

    pub(super) fn with_data(mut self, data: serde_json::Value) -> HttpError {
        self.data = Some(data);
        self
    }

    pub(super) fn with_id(mut self, id: Option<&str>) -> HttpError {
        self.id = id.map(str::to_owned);
        self
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = jsonrpc::error_response(self.id.as_deref(), self.code, &self.message, self.data);
        let mut response = json_body(self.status, body);
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
        }
        if let Some(value) = self
            .challenge
            .as_deref()
            .and_then(|c| HeaderValue::from_str(c).ok())
        {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        } else if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"mcpgate\""),
            );
        }
        // A body that stopped coming: the rest of it is not waited for.
        if self.status == StatusCode::REQUEST_TIMEOUT {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        // 503: `max_sessions` reached, or `max_buffered_body_bytes` held.
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}

/// A response whose body is one JSON document, sent as is.
pub(super) fn json_body(status: StatusCode, body: Bytes) -> Response {
    crate::metrics::bytes_out(body.len());
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// 202 Accepted with no body, for notifications and responses.
pub(super) fn accepted() -> Response {
    StatusCode::ACCEPTED.into_response()
}

/// One SSE `message` event carrying a JSON-RPC message. A raw CR or LF can
/// only be whitespace between JSON tokens (inside strings they are escaped),
/// but SSE would read it as the end of the data line: it becomes a space.
pub(super) fn sse_message(event_id: &dyn Display, message: &[u8]) -> Bytes {
    sse_frame(Some(event_id), message)
}

/// One SSE `message` event without an id (2026-07-28 streams are not resumable).
pub(super) fn sse_data(message: &[u8]) -> Bytes {
    sse_frame(None, message)
}

fn sse_frame(event_id: Option<&dyn Display>, message: &[u8]) -> Bytes {
    // Room for the field names and an id of two 20-digit numbers.
    let mut frame = BytesMut::with_capacity(message.len() + 80);
    frame.put_slice(b"event: message\n");
    if let Some(id) = event_id {
        let _ = writeln!(frame, "id: {id}");
    }
    frame.put_slice(b"data: ");
    let data_start = frame.len();
    frame.put_slice(message);
    for b in &mut frame[data_start..] {
        if *b == b'\r' || *b == b'\n' {
            *b = b' ';
        }
    }
    frame.put_slice(b"\n\n");
    crate::metrics::bytes_out(message.len());
    frame.freeze()
}

/// The priming event of a 2025-11-25 stream: an id and empty data.
pub(super) fn sse_priming(event_id: &dyn Display) -> Bytes {
    Bytes::from(format!("id: {event_id}\ndata: \n\n"))
}

/// An SSE comment, used as a keep-alive (a dead client shows up as a failed write).
pub(super) fn sse_keepalive() -> Bytes {
    Bytes::from_static(b": keep-alive\n\n")
}

/// Headers of an SSE response around a body stream.
pub(super) fn sse_response(body: Body) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells nginx-like proxies not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_frames_are_well_formed() {
        let f = sse_message(&"7", br#"{"a":1}"#);
        assert_eq!(&f[..], b"event: message\nid: 7\ndata: {\"a\":1}\n\n");
        let f = sse_message(&"8", b"{\"a\":\r1}");
        assert_eq!(&f[..], b"event: message\nid: 8\ndata: {\"a\": 1}\n\n");
        assert_eq!(&sse_priming(&"0")[..], b"id: 0\ndata: \n\n");
    }
}
