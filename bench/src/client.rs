//! The benchmark's HTTP client: raw hyper HTTP/1.1 connections, one request in
//! flight per connection, kept alive for the whole run.
//!
//! This is the cheapest client hyper offers (no pool, no redirects, no
//! decompression, headers built once per session), so that on a 2-core
//! machine the client takes as little CPU as possible from the server it
//! measures. Its own CPU time is reported beside every result.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The protocol version the benchmark speaks.
pub const PROTOCOL: &str = "2025-11-25";
/// Longest any one HTTP exchange may take before it counts as an error.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(120);

/// Where to send requests, and with which `Accept`.
#[derive(Debug, Clone)]
pub struct Endpoint {
    addr: SocketAddr,
    host: HeaderValue,
    path: String,
    accept: HeaderValue,
}

impl Endpoint {
    /// `base` is `http://ADDR`; `path` the routed endpoint, such as `/mcp/test`.
    /// With `sse_only`, the client accepts only `text/event-stream` answers.
    pub fn new(base: &str, path: &str, sse_only: bool) -> Result<Endpoint, String> {
        let authority = base
            .strip_prefix("http://")
            .ok_or_else(|| format!("not an http:// address: {base}"))?;
        let addr: SocketAddr = authority
            .parse()
            .map_err(|e| format!("bad address {authority}: {e}"))?;
        Ok(Endpoint {
            addr,
            host: HeaderValue::from_str(authority).map_err(|e| e.to_string())?,
            path: path.to_owned(),
            accept: HeaderValue::from_static(if sse_only {
                "text/event-stream"
            } else {
                "application/json, text/event-stream"
            }),
        })
    }

    /// Opens one keep-alive connection.
    pub async fn connect(&self) -> Result<Conn, String> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", self.addr))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn {
            endpoint: self.clone(),
            sender,
        })
    }
}

/// What came back from one exchange.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub session: Option<HeaderValue>,
    /// True when the body was an SSE stream.
    pub sse: bool,
    pub body: Bytes,
}

impl Reply {
    /// The JSON-RPC message carried: the body itself, or the data of the
    /// stream's event (priming events, with empty data, are skipped).
    pub fn message(&self) -> Option<Bytes> {
        if self.sse {
            sse_data(&self.body)
        } else {
            Some(self.body.clone())
        }
    }
}

/// The data of the first SSE event that has non-empty data.
pub fn sse_data(stream: &Bytes) -> Option<Bytes> {
    let mut data: Vec<std::ops::Range<usize>> = Vec::new();
    let mut offset = 0;
    for line in stream.split(|b| *b == b'\n') {
        let start = offset;
        offset += line.len() + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            // End of an event.
            if data.iter().any(|r| !r.is_empty()) {
                break;
            }
            data.clear();
            continue;
        }
        if let Some(value) = line.strip_prefix(b"data:") {
            let skip = usize::from(value.first() == Some(&b' '));
            let begin = start + 5 + skip;
            data.push(begin..start + line.len());
        }
    }
    match data.as_slice() {
        [] => None,
        [one] if one.is_empty() => None,
        [one] => Some(stream.slice(one.clone())),
        many => {
            let parts: Vec<&[u8]> = many.iter().map(|r| &stream[r.clone()]).collect();
            Some(Bytes::from(parts.join(&b'\n')))
        }
    }
}

/// One keep-alive connection.
pub struct Conn {
    endpoint: Endpoint,
    sender: SendRequest<HttpBody>,
}

type HttpBody = http_body_util::Either<Full<Bytes>, Empty<Bytes>>;

impl Conn {
    /// POSTs one JSON-RPC message, with the session's id when it has one.
    pub async fn post(
        &mut self,
        session: Option<&HeaderValue>,
        body: Bytes,
    ) -> Result<Reply, String> {
        self.exchange(Method::POST, None, session, Some(body)).await
    }

    /// DELETEs the session.
    pub async fn delete(&mut self, session: &HeaderValue) -> Result<Reply, String> {
        self.exchange(Method::DELETE, None, Some(session), None)
            .await
    }

    /// GETs `path` (such as `/readyz`) on the same server, outside the endpoint.
    pub async fn get(&mut self, path: &str) -> Result<Reply, String> {
        self.exchange(Method::GET, Some(path), None, None).await
    }

    /// One exchange on the endpoint's path, or on `path` when given.
    async fn exchange(
        &mut self,
        method: Method,
        path: Option<&str>,
        session: Option<&HeaderValue>,
        body: Option<Bytes>,
    ) -> Result<Reply, String> {
        let mut request = Request::builder()
            .method(method)
            .uri(path.unwrap_or(self.endpoint.path.as_str()))
            .header(HOST, self.endpoint.host.clone())
            .header(ACCEPT, self.endpoint.accept.clone())
            .header("mcp-protocol-version", HeaderValue::from_static(PROTOCOL));
        if let Some(session) = session {
            request = request.header("mcp-session-id", session.clone());
        }
        let request = match body {
            Some(body) => request
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(HttpBody::Left(Full::new(body))),
            None => request.body(HttpBody::Right(Empty::new())),
        }
        .map_err(|e| e.to_string())?;
        let exchange = async {
            self.sender.ready().await.map_err(|e| e.to_string())?;
            let response = self
                .sender
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
            let sse = parts
                .headers
                .get(CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
            Ok(Reply {
                status: parts.status,
                session: parts.headers.get("mcp-session-id").cloned(),
                sse,
                body,
            })
        };
        tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("no answer within {EXCHANGE_TIMEOUT:?}"))?
    }
}

/// Opens a session: `initialize`, then `notifications/initialized` with the id
/// it got. Returns the `Mcp-Session-Id`.
pub async fn open_session(conn: &mut Conn) -> Result<HeaderValue, String> {
    let init = crate::rpc::initialize(0);
    let reply = conn.post(None, init).await?;
    if reply.status != StatusCode::OK {
        return Err(format!(
            "initialize got {}: {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        ));
    }
    let session = reply
        .session
        .clone()
        .ok_or("initialize answer has no Mcp-Session-Id")?;
    let message = reply.message().ok_or("initialize answer has no message")?;
    if !crate::rpc::has_result(&message) {
        return Err(format!(
            "initialize failed: {}",
            String::from_utf8_lossy(&message)
        ));
    }
    let note = conn
        .post(Some(&session), Bytes::from_static(crate::rpc::INITIALIZED))
        .await?;
    if note.status != StatusCode::ACCEPTED {
        return Err(format!("notifications/initialized got {}", note.status));
    }
    Ok(session)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_data_skips_priming_events_and_joins_lines() {
        let stream =
            Bytes::from_static(b"id: 0\ndata: \n\nevent: message\nid: 1\ndata: {\"a\":1}\n\n");
        assert_eq!(sse_data(&stream).unwrap(), Bytes::from_static(b"{\"a\":1}"));
        let split = Bytes::from_static(b"data:{\"a\":\ndata: 1}\n\n");
        assert_eq!(
            sse_data(&split).unwrap(),
            Bytes::from_static(b"{\"a\":\n1}")
        );
        assert!(sse_data(&Bytes::from_static(b": keep-alive\n\n")).is_none());
    }
}
