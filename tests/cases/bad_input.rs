//! Bad input gets a clear answer and nobody else is disturbed: every kind of
//! malformed request is refused with its status and a JSON-RPC error body while
//! a well-behaved session next to it keeps working; a backend that writes junk
//! or a single 100 MB line disturbs no one and does not make the gateway buffer
//! it; and `env` values (secrets) never reach the logs or `mcpgate check`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

// ---- sending anything, as raw as needed ----

/// What one row of the table sends.
enum Sending {
    /// A POST to `/mcp/t` through reqwest with these headers and this body
    /// (reqwest adds only `accept: */*` when there is no Accept, and the
    /// connection headers).
    Http {
        headers: Vec<(&'static str, Vec<u8>)>,
        body: Vec<u8>,
    },
    /// These bytes on a fresh TCP connection: for requests that HTTP client
    /// libraries refuse to build (control characters, oversized headers).
    Raw(Vec<u8>),
}

/// What one row expects back.
enum Expect {
    /// This HTTP status with a JSON-RPC error body of this code whose message
    /// contains `says` (case-insensitive).
    Error {
        status: u16,
        code: i64,
        says: &'static str,
    },
    /// The same, where either of two statuses is a fair answer.
    ErrorOneOf {
        statuses: [u16; 2],
        code: i64,
        says: &'static str,
    },
    /// Refused by the HTTP parser (hyper) before any gateway code runs,
    /// because the bytes are not a valid HTTP/1.1 request: this status, an
    /// empty body, the connection closed. Not a JSON-RPC error (no handler
    /// ever sees the request); what matters is that nothing else is disturbed.
    NotHttp { status: u16 },
    /// A 200 answer to the echo request with this JSON-RPC id and this text.
    Answer { id: Value, text: &'static str },
}

struct Row {
    what: String,
    sending: Sending,
    expect: Expect,
}

/// What came back, whichever way it was sent.
struct Reply {
    status: u16,
    content_type: Option<String>,
    body: Vec<u8>,
}

/// The usual headers of a request on `session` (2025-11-25, accepting both),
/// with `set` replacing (or adding) headers and `unset` removing them.
fn headers_for(
    session: &str,
    set: &[(&'static str, &[u8])],
    unset: &[&str],
) -> Vec<(&'static str, Vec<u8>)> {
    let mut headers: Vec<(&'static str, Vec<u8>)> = vec![
        ("content-type", b"application/json".to_vec()),
        ("accept", ACCEPT_BOTH.as_bytes().to_vec()),
        ("mcp-protocol-version", PROTOCOL.as_bytes().to_vec()),
        ("mcp-session-id", session.as_bytes().to_vec()),
    ];
    headers.retain(|(k, _)| !unset.contains(k) && !set.iter().any(|(s, _)| s == k));
    headers.extend(set.iter().map(|(k, v)| (*k, v.to_vec())));
    headers
}

/// A row that POSTs `body` on `session` with the usual headers.
fn post_row(
    what: impl Into<String>,
    session: &str,
    body: impl Into<Vec<u8>>,
    expect: Expect,
) -> Row {
    Row {
        what: what.into(),
        sending: Sending::Http {
            headers: headers_for(session, &[], &[]),
            body: body.into(),
        },
        expect,
    }
}

fn error(status: u16, code: i64, says: &'static str) -> Expect {
    Expect::Error { status, code, says }
}

async fn send(gw: &Gateway, sending: &Sending) -> Result<Reply, String> {
    match sending {
        Sending::Http { headers, body } => {
            let mut map = HeaderMap::new();
            for (k, v) in headers {
                map.append(
                    HeaderName::from_static(k),
                    HeaderValue::from_bytes(v).map_err(|e| format!("bad test header {k}: {e}"))?,
                );
            }
            let response = tokio::time::timeout(
                DEADLINE,
                gw.http
                    .post(gw.url("t"))
                    .headers(map)
                    .body(body.clone())
                    .send(),
            )
            .await
            .map_err(|_| format!("no answer within {DEADLINE:?}"))?
            .map_err(|e| format!("HTTP request failed: {e}"))?;
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            let body = tokio::time::timeout(DEADLINE, response.bytes())
                .await
                .map_err(|_| format!("body not finished within {DEADLINE:?}"))?
                .map_err(|e| format!("reading the body failed: {e}"))?
                .to_vec();
            Ok(Reply {
                status,
                content_type,
                body,
            })
        }
        Sending::Raw(bytes) => raw_exchange(gw, bytes).await,
    }
}

/// Sends `request` on a new TCP connection and reads the response until the
/// server closes it (the request says `Connection: close`).
async fn raw_exchange(gw: &Gateway, request: &[u8]) -> Result<Reply, String> {
    let addr = gw.base.trim_start_matches("http://").to_owned();
    let stream = tokio::time::timeout(DEADLINE, tokio::net::TcpStream::connect(&addr))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("connect: {e}"))?;
    let (mut reader, mut writer) = stream.into_split();
    let mut out = Vec::new();
    let mut read_error = None;
    // Read while writing: the server may answer (and close) before it has
    // read the whole request, and what it sent must not be lost.
    let write = async {
        let _ = writer.write_all(request).await;
    };
    let read = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => {
                    read_error = Some(e);
                    break;
                }
            }
        }
    };
    let finished = tokio::time::timeout(DEADLINE, async { tokio::join!(write, read) }).await;
    let shown = String::from_utf8_lossy(&out[..out.len().min(300)]).into_owned();
    if finished.is_err() {
        return Err(format!(
            "the connection was neither answered nor closed within {DEADLINE:?}; got {shown:?}"
        ));
    }
    match (read_error, out.is_empty()) {
        // A reset after the response arrived: keep what arrived.
        (Some(e), true) => Err(format!("read: {e}")),
        _ => parse_raw_response(&out),
    }
}

fn parse_raw_response(mut raw: &[u8]) -> Result<Reply, String> {
    // Skip interim responses (100 Continue).
    while raw.starts_with(b"HTTP/1.1 1") {
        match raw.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(end) => raw = &raw[end + 4..],
            None => break,
        }
    }
    let text_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            format!(
                "no complete response head in {:?}",
                String::from_utf8_lossy(raw)
            )
        })?;
    let head = String::from_utf8_lossy(&raw[..text_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut content_type = None;
    let mut chunked = false;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            if name == "content-type" {
                content_type = Some(value.to_owned());
            }
            if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
        }
    }
    let mut body = raw[text_end + 4..].to_vec();
    if chunked {
        let mut decoded = Vec::new();
        let mut rest = &body[..];
        while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&rest[..eol])
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim(),
                16,
            )
            .map_err(|e| format!("bad chunk size: {e}"))?;
            if size == 0 {
                break;
            }
            let start = eol + 2;
            let end = (start + size).min(rest.len());
            decoded.extend_from_slice(&rest[start..end]);
            rest = &rest[(end + 2).min(rest.len())..];
        }
        body = decoded;
    }
    Ok(Reply {
        status,
        content_type,
        body,
    })
}

/// A raw HTTP/1.1 request: `Host` and `Connection: close`, then exactly the
/// header lines `headers`, then `body` (nothing computes a Content-Length).
fn raw(gw: &Gateway, method: &str, path: &[u8], headers: &[&[u8]], body: &[u8]) -> Vec<u8> {
    let host = gw.base.trim_start_matches("http://");
    let mut request = format!("{method} ").into_bytes();
    request.extend_from_slice(path);
    request.extend_from_slice(
        format!(" HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n").as_bytes(),
    );
    for line in headers {
        request.extend_from_slice(line);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(body);
    request
}

/// A raw POST of a small valid request to `path`, with the usual headers
/// except those named in `unset`, plus the raw header lines `extra`.
fn raw_post(gw: &Gateway, path: &[u8], unset: &[&str], extra: &[&[u8]]) -> Vec<u8> {
    let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let usual = [
        ("content-type", "Content-Type: application/json".to_owned()),
        ("accept", format!("Accept: {ACCEPT_BOTH}")),
        (
            "mcp-protocol-version",
            format!("MCP-Protocol-Version: {PROTOCOL}"),
        ),
        ("content-length", format!("Content-Length: {}", body.len())),
    ];
    let mut headers: Vec<&[u8]> = usual
        .iter()
        .filter(|(name, _)| !unset.contains(name))
        .map(|(_, line)| line.as_bytes())
        .collect();
    headers.extend_from_slice(extra);
    raw(gw, "POST", path, &headers, body)
}

/// A raw bodiless request (GET, DELETE, PUT...) on `session`.
fn raw_request(gw: &Gateway, method: &str, path: &[u8], session: &str) -> Vec<u8> {
    let session = session_line(session.as_bytes());
    let protocol = format!("MCP-Protocol-Version: {PROTOCOL}");
    let accept = format!("Accept: {ACCEPT_BOTH}");
    raw(
        gw,
        method,
        path,
        &[
            accept.as_bytes(),
            protocol.as_bytes(),
            &session,
            b"Content-Length: 0",
        ],
        b"",
    )
}

const ACCEPT_LINE: &[u8] = b"Accept: application/json, text/event-stream";

/// A raw `Mcp-Session-Id: <id>` header line.
fn session_line(id: &[u8]) -> Vec<u8> {
    [b"Mcp-Session-Id: ".as_slice(), id].concat()
}

/// Checks a reply against what its row expects; `Err` says what was wrong.
fn judge(reply: &Reply, expect: &Expect) -> Result<(), String> {
    let shown = String::from_utf8_lossy(&reply.body[..reply.body.len().min(300)]).into_owned();
    let content_type = reply.content_type.as_deref().unwrap_or("(none)");
    let statuses = match expect {
        Expect::Error { status, .. } => vec![*status],
        Expect::ErrorOneOf { statuses, .. } => statuses.to_vec(),
        Expect::NotHttp { status } => vec![*status],
        Expect::Answer { .. } => vec![200],
    };
    if !statuses.contains(&reply.status) {
        return Err(format!(
            "status {} (expected {statuses:?}), content-type {content_type}, body {shown:?}",
            reply.status
        ));
    }
    if let Expect::NotHttp { .. } = expect {
        return if reply.body.is_empty() {
            Ok(())
        } else {
            Err(format!("expected hyper's empty body, got {shown:?}"))
        };
    }
    let wanted_type = "application/json";
    if content_type != wanted_type {
        return Err(format!(
            "content-type {content_type} (expected {wanted_type}), body {shown:?}"
        ));
    }
    let body: Value = serde_json::from_slice(&reply.body)
        .map_err(|e| format!("body is not JSON ({e}): {shown:?}"))?;
    if body["jsonrpc"] != "2.0" {
        return Err(format!("no \"jsonrpc\":\"2.0\" in {shown}"));
    }
    if body.get("id").is_none() {
        return Err(format!(
            "a JSON-RPC response needs an id (null if unknown): {shown}"
        ));
    }
    match expect {
        Expect::Error { code, says, .. } | Expect::ErrorOneOf { code, says, .. } => {
            let got = body["error"]["code"].as_i64();
            if got != Some(*code) {
                return Err(format!("error code {got:?} (expected {code}): {shown}"));
            }
            let message = body["error"]["message"].as_str().unwrap_or_default();
            if message.is_empty() || !message.to_lowercase().contains(&says.to_lowercase()) {
                return Err(format!("error message should say {says:?}: {shown}"));
            }
        }
        Expect::NotHttp { .. } => unreachable!("judged above"),
        Expect::Answer { id, text } => {
            if &body["id"] != id {
                let got = body["id"].to_string();
                return Err(format!(
                    "answer id differs (got {} bytes: {}...): {shown}",
                    got.len(),
                    &got[..got.len().min(40)]
                ));
            }
            if body["result"]["content"][0]["text"] != *text {
                return Err(format!("answer text should be {text:?}: {shown}"));
            }
        }
    }
    Ok(())
}

// ---- a well-behaved client beside the bad one ----

/// One echo call on `session`, checked; `Err` says what went wrong.
async fn echo_ok(
    http: &reqwest::Client,
    url: &str,
    session: &str,
    id: &str,
    message: &str,
) -> Result<(), String> {
    let body = json!({"jsonrpc":"2.0","id":id,"method":"tools/call",
        "params":{"name":"echo","arguments":{"message":message}}});
    let call = async {
        let response = http
            .post(url)
            .header("content-type", "application/json")
            .header("accept", ACCEPT_BOTH)
            .header("mcp-protocol-version", PROTOCOL)
            .header("mcp-session-id", session)
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| format!("{id}: HTTP error {e}"))?;
        if response.status() != 200 {
            return Err(format!("{id}: status {}", response.status()));
        }
        let answer = answer_of(response).await;
        if answer["id"] != id || answer["result"]["content"][0]["text"] != message {
            return Err(format!("{id}: wrong answer {answer}"));
        }
        Ok(())
    };
    tokio::time::timeout(DEADLINE, call)
        .await
        .unwrap_or_else(|_| Err(format!("{id}: no answer within {DEADLINE:?}")))
}

/// A session making sequential echo calls in the background until stopped.
struct CalmClient {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl CalmClient {
    fn start(gw: &Gateway, server: &str, session: String, name: &'static str) -> CalmClient {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let (http, url) = (gw.http.clone(), gw.url(server));
        let task = tokio::spawn({
            let (stop, done, failures) = (stop.clone(), done.clone(), failures.clone());
            async move {
                let mut i = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    let (id, message) = (format!("{name}-{i}"), format!("{name} says {i}"));
                    if let Err(e) = echo_ok(&http, &url, &session, &id, &message).await {
                        failures.lock().unwrap().push(e);
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                    i += 1;
                }
            }
        });
        CalmClient {
            stop,
            done,
            failures,
            task,
        }
    }

    /// Waits until it has made `calls` calls (so it surely runs alongside what follows).
    async fn wait_for_calls(&self, calls: usize) {
        let done = self.done.clone();
        wait_until("the calm client made its calls", || {
            done.load(Ordering::SeqCst) >= calls
        })
        .await;
    }

    /// Makes it stop after a few more calls; returns how many it made, and
    /// fails the test if any of them went wrong.
    async fn finish(self, what: &str) -> usize {
        let more = self.done.load(Ordering::SeqCst) + 3;
        self.wait_for_calls(more).await;
        self.stop.store(true, Ordering::SeqCst);
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("the calm client stops")
            .expect("the calm client did not panic");
        let failures = self.failures.lock().unwrap().clone();
        assert!(
            failures.is_empty(),
            "{what}: the well-behaved session was disturbed: {failures:#?}"
        );
        self.done.load(Ordering::SeqCst)
    }
}

// ---- 1: the table ----

fn table(gw: &Gateway, noisy: &str, old: &str) -> Vec<Row> {
    let list = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#.as_slice();
    let with_id = |id: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"x"}}}}}}"#
        )
    };
    let header_row =
        |what: &str, set: &[(&'static str, &[u8])], unset: &[&str], expect: Expect| Row {
            what: what.to_owned(),
            sending: Sending::Http {
                headers: headers_for(noisy, set, unset),
                body: list.to_vec(),
            },
            expect,
        };
    let huge_id = "i".repeat(1 << 20);
    let deep = 100_000;
    let deep_params = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"x","deep":{}1{}}}}}}}"#,
        "[".repeat(deep),
        "]".repeat(deep)
    );
    let deep_objects = format!("{}1{}", r#"{"a":"#.repeat(deep), "}".repeat(deep));
    let long_session = "a".repeat(10 * 1024);
    let mut invalid_utf8 = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":""#.to_vec();
    invalid_utf8.extend_from_slice(b"\xff\xfe\xc0\xaf");
    invalid_utf8.extend_from_slice(br#""}}}"#);
    let mut invalid_utf8_method = br#"{"jsonrpc":"2.0","id":1,"method":"tools/"#.to_vec();
    invalid_utf8_method.extend_from_slice(b"\xc3\x28");
    invalid_utf8_method.extend_from_slice(br#""}"#);
    let too_big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"{}"}}}}}}"#,
        "x".repeat(6 << 20)
    );

    vec![
        // Not JSON.
        post_row(
            "malformed JSON",
            noisy,
            "{\"jsonrpc\":",
            error(400, -32700, "parse"),
        ),
        post_row(
            "truncated JSON",
            noisy,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/li"#,
            error(400, -32700, "parse"),
        ),
        post_row(
            "plain text",
            noisy,
            "hello, gateway",
            error(400, -32700, "parse"),
        ),
        post_row("an empty body", noisy, "", error(400, -32700, "parse")),
        post_row(
            "a body of only whitespace",
            noisy,
            " \r\n\t \n ",
            error(400, -32700, "parse"),
        ),
        post_row(
            "a NUL byte inside the JSON",
            noisy,
            b"{\"jsonrpc\":\"2.0\",\0\"id\":1,\"method\":\"tools/list\"}".to_vec(),
            error(400, -32700, "parse"),
        ),
        post_row(
            "invalid UTF-8 in a string of the body",
            noisy,
            invalid_utf8,
            error(400, -32700, "parse"),
        ),
        post_row(
            "invalid UTF-8 in the method",
            noisy,
            invalid_utf8_method,
            error(400, -32700, "parse"),
        ),
        post_row(
            "a lone 0xFF byte",
            noisy,
            b"\xff".to_vec(),
            error(400, -32700, "parse"),
        ),
        // JSON, but not JSON-RPC.
        post_row(
            "a JSON number",
            noisy,
            "42",
            error(400, -32600, "invalid request"),
        ),
        post_row(
            "a JSON string",
            noisy,
            r#""tools/list""#,
            error(400, -32600, "invalid request"),
        ),
        post_row(
            "JSON null",
            noisy,
            "null",
            error(400, -32600, "invalid request"),
        ),
        post_row(
            "an array of numbers on a 2025-11-25 session",
            noisy,
            "[1,2,3]",
            error(400, -32600, "batch"),
        ),
        post_row(
            "an empty array on a 2025-11-25 session",
            noisy,
            "[]",
            error(400, -32600, "batch"),
        ),
        post_row(
            "an object without jsonrpc",
            noisy,
            r#"{"id":1,"method":"tools/list"}"#,
            error(400, -32600, "jsonrpc"),
        ),
        post_row(
            "jsonrpc 1.0",
            noisy,
            r#"{"jsonrpc":"1.0","id":1,"method":"tools/list"}"#,
            error(400, -32600, "jsonrpc"),
        ),
        post_row(
            "a method that is a number",
            noisy,
            r#"{"jsonrpc":"2.0","id":1,"method":42}"#,
            error(400, -32600, "invalid request"),
        ),
        post_row(
            "neither method nor result",
            noisy,
            r#"{"jsonrpc":"2.0","id":1}"#,
            error(400, -32600, "invalid request"),
        ),
        post_row(
            "a float id",
            noisy,
            with_id("1.5"),
            error(400, -32600, "id"),
        ),
        post_row(
            "an exponent id",
            noisy,
            with_id("1e3"),
            error(400, -32600, "id"),
        ),
        post_row(
            "a null id",
            noisy,
            with_id("null"),
            error(400, -32600, "id"),
        ),
        post_row(
            "an object id",
            noisy,
            with_id(r#"{"a":1}"#),
            error(400, -32600, "id"),
        ),
        post_row(
            "an array id",
            noisy,
            with_id("[1]"),
            error(400, -32600, "id"),
        ),
        post_row(
            "a boolean id",
            noisy,
            with_id("true"),
            error(400, -32600, "id"),
        ),
        // Absurd sizes and depths.
        post_row(
            "a JSON-RPC id that is a 1 MB string",
            noisy,
            with_id(&format!("\"{huge_id}\"")),
            Expect::Answer {
                id: Value::String(huge_id.clone()),
                text: "x",
            },
        ),
        post_row(
            "params nested 100,000 deep",
            noisy,
            deep_params,
            error(400, -32600, "nests deeper"),
        ),
        post_row(
            "objects nested 100,000 deep",
            noisy,
            deep_objects,
            error(400, -32600, "nests deeper"),
        ),
        post_row(
            "100,000 unclosed objects",
            noisy,
            r#"{"a":"#.repeat(deep),
            error(400, -32600, "nests deeper"),
        ),
        post_row(
            "arrays nested 100,000 deep on a 2025-11-25 session",
            noisy,
            format!("{}{}", "[".repeat(deep), "]".repeat(deep)),
            error(400, -32600, "batch"),
        ),
        Row {
            what: "arrays nested 100,000 deep on a 2025-03-26 session (batches allowed)".into(),
            sending: Sending::Http {
                headers: headers_for(old, &[("mcp-protocol-version", b"2025-03-26")], &[]),
                body: format!("{}{}", "[".repeat(deep), "]".repeat(deep)).into_bytes(),
            },
            expect: error(400, -32600, "deep"),
        },
        post_row(
            "a body over max_body_bytes (6 MiB)",
            noisy,
            too_big,
            error(413, -32000, "max_body_bytes"),
        ),
        // Headers.
        header_row(
            "Content-Type text/plain",
            &[("content-type", b"text/plain")],
            &[],
            error(415, -32000, "content-type"),
        ),
        header_row(
            "no Content-Type",
            &[],
            &["content-type"],
            error(415, -32000, "content-type"),
        ),
        header_row(
            "Content-Type application/jsonx",
            &[("content-type", b"application/jsonx")],
            &[],
            error(415, -32000, "content-type"),
        ),
        header_row(
            "Accept text/html",
            &[("accept", b"text/html")],
            &[],
            error(406, -32000, "accept"),
        ),
        header_row(
            "Accept with both at q=0",
            &[("accept", b"application/json;q=0, text/event-stream;q=0")],
            &[],
            error(406, -32000, "accept"),
        ),
        // Session ids no session can have.
        header_row(
            "a session id with spaces",
            &[("mcp-session-id", b"has spaces in it")],
            &[],
            error(404, -32000, "session"),
        ),
        header_row(
            "a session id with a tab (the only control character HTTP allows)",
            &[("mcp-session-id", b"abc\tdef")],
            &[],
            error(404, -32000, "session"),
        ),
        header_row(
            "a session id of non-ASCII UTF-8",
            &[("mcp-session-id", "sesi\u{f3}n-\u{1F600}".as_bytes())],
            &[],
            error(404, -32000, "session"),
        ),
        header_row(
            "a session id with Latin-1 bytes (invalid UTF-8)",
            &[("mcp-session-id", b"caf\xe9\xff")],
            &[],
            error(404, -32000, "session"),
        ),
        header_row(
            "a 10 KB session id",
            &[("mcp-session-id", long_session.as_bytes())],
            &[],
            error(404, -32000, "session"),
        ),
        header_row(
            "the live session id in upper case",
            &[("mcp-session-id", noisy.to_uppercase().as_bytes())],
            &[],
            error(404, -32000, "session"),
        ),
        Row {
            what: "a session id with a raw 0x01 control character (raw TCP)".into(),
            sending: Sending::Raw(raw_post(
                gw,
                b"/mcp/t",
                &[],
                &[&session_line(b"abc\x01def")],
            )),
            expect: Expect::NotHttp { status: 400 },
        },
        Row {
            what: "a session id with a raw DEL (0x7f) (raw TCP)".into(),
            sending: Sending::Raw(raw_post(
                gw,
                b"/mcp/t",
                &[],
                &[&session_line(b"abc\x7fdef")],
            )),
            expect: Expect::NotHttp { status: 400 },
        },
        Row {
            what: "a 1 MB session id (raw TCP)".into(),
            sending: Sending::Raw(raw_post(
                gw,
                b"/mcp/t",
                &[],
                &[&session_line("b".repeat(1 << 20).as_bytes())],
            )),
            // Over hyper's limit on the size of a request head.
            expect: Expect::NotHttp { status: 431 },
        },
        Row {
            what: "no Accept header at all (raw TCP: reqwest adds */*)".into(),
            sending: Sending::Raw(raw_post(
                gw,
                b"/mcp/t",
                &["accept"],
                &[&session_line(noisy.as_bytes())],
            )),
            expect: error(406, -32000, "accept"),
        },
        Row {
            what: "a server id with invalid percent-encoded UTF-8 (raw TCP)".into(),
            sending: Sending::Raw(raw_post(
                gw,
                b"/mcp/%FF%FE",
                &[],
                &[&session_line(noisy.as_bytes())],
            )),
            // It names no configured server (404, like any unknown server) or
            // is a bad request (400): either way a JSON-RPC error.
            expect: Expect::ErrorOneOf {
                statuses: [404, 400],
                code: -32000,
                says: "",
            },
        },
        Row {
            what: "GET with a server id of invalid percent-encoded UTF-8 (raw TCP)".into(),
            sending: Sending::Raw(raw_request(gw, "GET", b"/mcp/%FF%FE", noisy)),
            expect: Expect::ErrorOneOf {
                statuses: [404, 400],
                code: -32000,
                says: "",
            },
        },
        Row {
            what: "DELETE with a server id of invalid percent-encoded UTF-8 (raw TCP)".into(),
            sending: Sending::Raw(raw_request(gw, "DELETE", b"/mcp/%FF%FE", noisy)),
            expect: Expect::ErrorOneOf {
                statuses: [404, 400],
                code: -32000,
                says: "",
            },
        },
        // Other methods and broken HTTP framing.
        Row {
            what: "PUT (raw TCP)".into(),
            sending: Sending::Raw(raw_request(gw, "PUT", b"/mcp/t", noisy)),
            expect: error(405, -32000, ""),
        },
        Row {
            what: "PATCH on the unified endpoint (raw TCP)".into(),
            sending: Sending::Raw(raw_request(gw, "PATCH", b"/mcp", noisy)),
            expect: error(405, -32000, ""),
        },
        Row {
            what: "a malformed chunked body (raw TCP)".into(),
            sending: Sending::Raw(raw(
                gw,
                "POST",
                b"/mcp/t",
                &[
                    b"Content-Type: application/json",
                    ACCEPT_LINE,
                    &session_line(noisy.as_bytes()),
                    b"Transfer-Encoding: chunked",
                ],
                b"ZZ\r\n{\"jsonrpc\"\r\n0\r\n\r\n",
            )),
            expect: error(400, -32000, "body"),
        },
        Row {
            what: "two different Content-Lengths (raw TCP)".into(),
            sending: Sending::Raw(raw(
                gw,
                "POST",
                b"/mcp/t",
                &[
                    b"Content-Type: application/json",
                    ACCEPT_LINE,
                    &session_line(noisy.as_bytes()),
                    b"Content-Length: 2",
                    b"Content-Length: 3",
                ],
                b"{}",
            )),
            expect: Expect::NotHttp { status: 400 },
        },
        Row {
            what: "Content-Length of 10 GB with Expect: 100-continue, body not sent (raw TCP)"
                .into(),
            sending: Sending::Raw(raw(
                gw,
                "POST",
                b"/mcp/t",
                &[
                    b"Content-Type: application/json",
                    ACCEPT_LINE,
                    &session_line(noisy.as_bytes()),
                    b"Content-Length: 10000000000",
                    b"Expect: 100-continue",
                ],
                b"",
            )),
            expect: error(413, -32000, "max_body_bytes"),
        },
        Row {
            what: "a 10 KB server id (raw TCP)".into(),
            sending: Sending::Raw(raw_post(
                gw,
                format!("/mcp/{}", "s".repeat(10 * 1024)).as_bytes(),
                &[],
                &[&session_line(noisy.as_bytes())],
            )),
            expect: error(404, -32000, "server"),
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_answer_while_a_parallel_session_is_unaffected() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    let noisy = gw.open_session("t").await;
    let old = gw.open_session_speaking("t", "2025-03-26").await;
    let calm = CalmClient::start(&gw, "t", gw.open_session("t").await, "calm");
    calm.wait_for_calls(1).await;

    let mut failures = Vec::new();
    let mut observed = Vec::new();
    for row in table(&gw, &noisy, &old) {
        let started = Instant::now();
        let outcome = match send(&gw, &row.sending).await {
            Ok(reply) => {
                let code = serde_json::from_slice::<Value>(&reply.body)
                    .ok()
                    .and_then(|b| b["error"]["code"].as_i64())
                    .map_or("-".to_owned(), |c| c.to_string());
                observed.push(format!(
                    "{:<70} {} {:<18} {code:>6} {:?}",
                    row.what,
                    reply.status,
                    reply.content_type.as_deref().unwrap_or("(none)"),
                    started.elapsed()
                ));
                judge(&reply, &row.expect)
            }
            Err(e) => {
                observed.push(format!("{:<70} FAILED: {e}", row.what));
                Err(e)
            }
        };
        if let Err(e) = outcome {
            failures.push(format!("{}: {e}", row.what));
        }
        assert!(
            process_alive(gw.pid),
            "the gateway died after {:?}; see [gateway] lines",
            row.what
        );
    }
    eprintln!(
        "observed (what, status, content-type, code, time):\n{}",
        observed.join("\n")
    );

    let calls = calm.finish("bad input table").await;
    assert!(calls >= 4, "the calm client made only {calls} calls");

    // The gateway is alive and every session still works, the noisy one included.
    assert!(process_alive(gw.pid));
    let health = gw
        .http
        .get(format!("{}/healthz", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let answer = gw
        .call_tool(
            "t",
            &noisy,
            "after",
            "echo",
            json!({"message": "noisy still works"}),
        )
        .await;
    assert_eq!(
        answer["result"]["content"][0]["text"], "noisy still works",
        "{answer}"
    );
    let fresh = gw.open_session("t").await;
    let answer = gw
        .call_tool(
            "t",
            &fresh,
            "fresh",
            "echo",
            json!({"message": "new sessions work"}),
        )
        .await;
    assert_eq!(
        answer["result"]["content"][0]["text"], "new sessions work",
        "{answer}"
    );
    gw.stop().await;
    // Last, so that a wrong answer does not hide whether the rest held.
    assert!(
        failures.is_empty(),
        "{} rows got the wrong answer:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---- 2: a backend that writes junk or one enormous line ----

/// A `kB` field of `/proc/<pid>/status`, in bytes.
fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("gateway status");
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("bad line {line:?}"));
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_writing_garbage_or_a_100_mb_line_disturbs_nobody() {
    let config = format!(
        "{FAST_GATEWAY}{}{}",
        test_server("junk", &["--junk-stdout"]),
        test_server("t", &[])
    );
    let gw = Gateway::start(&config).await;

    // Answers of a backend that writes junk before each of them still arrive.
    let junk = gw.open_session("junk").await;
    for i in 0..5 {
        let message = format!("through the junk {i}");
        let answer = gw
            .call_tool(
                "junk",
                &junk,
                &format!("j{i}"),
                "echo",
                json!({"message": message}),
            )
            .await;
        assert_eq!(answer["result"]["content"][0]["text"], message, "{answer}");
    }
    gw.wait_for_log(&["not JSON-RPC", "junk"]).await;

    // One session asks for a 100 MB answer; others keep working meanwhile.
    let greedy = gw.open_session("t").await;
    let calm = CalmClient::start(&gw, "t", gw.open_session("t").await, "calm");
    let calm_junk = CalmClient::start(&gw, "junk", gw.open_session("junk").await, "calm-junk");
    calm.wait_for_calls(2).await;
    calm_junk.wait_for_calls(2).await;
    let rss_before = proc_status_bytes(gw.pid, "VmRSS");

    let started = Instant::now();
    let calm_before = calm.done.load(Ordering::SeqCst);
    // The deadline is generous: the (debug-built) test server itself needs
    // seconds to write 100 MB on a loaded machine. A gateway that hung would
    // answer -32001 only after tool_timeout (120 s), so the message check
    // below tells a refusal from a timeout.
    let too_big = tokio::time::timeout(
        3 * DEADLINE,
        gw.call_tool("t", &greedy, "huge", "big", json!({"bytes": 100_000_000})),
    )
    .await
    .expect("the 100 MB answer is refused within the deadline, not left hanging");
    let took = started.elapsed();
    let calm_during = calm.done.load(Ordering::SeqCst) - calm_before;
    assert_eq!(too_big["id"], "huge", "{too_big}");
    let message = too_big["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("exceeds max_message_bytes"), "{too_big}");

    // The gateway never held the line: its peak RSS (VmHWM, the kernel's own
    // high-water mark, so no sample can miss it) stayed well under 100 MB above
    // what it used before. Up to max_message_bytes (16 MiB) may be buffered.
    let peak = proc_status_bytes(gw.pid, "VmHWM");
    let rss_after = proc_status_bytes(gw.pid, "VmRSS");
    let growth = peak.saturating_sub(rss_before);
    eprintln!(
        "100 MB line: refused after {took:?} ({calm_during} calm calls meanwhile); gateway VmRSS before {} MiB, peak {} MiB, after {} MiB",
        rss_before >> 20,
        peak >> 20,
        rss_after >> 20
    );
    assert!(
        growth < 64 << 20,
        "the gateway's memory grew by {} MiB while a backend wrote a 100 MB line",
        growth >> 20
    );

    assert!(
        calm_during >= 1,
        "no other session's call completed while the 100 MB answer was in progress"
    );

    // The same session goes on, and nobody else noticed.
    let after = gw
        .call_tool(
            "t",
            &greedy,
            "after",
            "echo",
            json!({"message": "greedy goes on"}),
        )
        .await;
    assert_eq!(
        after["result"]["content"][0]["text"], "greedy goes on",
        "{after}"
    );
    calm.finish("100 MB line").await;
    calm_junk.finish("junk backend").await;
    let answer = gw
        .call_tool(
            "junk",
            &junk,
            "last",
            "echo",
            json!({"message": "junk still fine"}),
        )
        .await;
    assert_eq!(
        answer["result"]["content"][0]["text"], "junk still fine",
        "{answer}"
    );
    assert!(process_alive(gw.pid));
    gw.stop().await;
}

// ---- 3: secrets ----

const SECRET: &str = "s3cr3t-value-4242-do-not-log";
const EXPANDED_SECRET: &str = "expanded-s3cr3t-7373-do-not-print";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs_or_check_output() {
    let server = |id: &str, command: &str, args: &[&str]| {
        let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
        format!(
            "[servers.{id}]\ncommand = {command:?}\nargs = [{}]\n\
             env = {{ MCPGATE_TEST_TAG = \"\", SECRET_TOKEN = \"{SECRET}\", API_KEY = \"{SECRET}-key\" }}\n",
            args.join(", ")
        )
    };
    let config = format!(
        "{FAST_GATEWAY}{}{}{}",
        server("t", test_server_path(), &["--stderr-noise"]),
        server("broken", "/nonexistent/mcpgate-no-such-command", &[]),
        server("dies", test_server_path(), &["--exit-on-start", "3"]),
    );
    let gw = Gateway::start(&config).await;

    // A session that lives a full life: calls, stderr, a crash and its restart, DELETE.
    let session = gw.open_session("t").await;
    let pid = gw.backend_pid("t", &session).await;
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&environ).contains(&format!("SECRET_TOKEN={SECRET}")),
        "the backend really got the secret (else this test proves nothing)"
    );
    let answer = gw
        .call_tool("t", &session, "1", "echo", json!({"message": "hello"}))
        .await;
    assert_eq!(answer["result"]["content"][0]["text"], "hello", "{answer}");
    gw.call_tool("t", &session, "2", "stderr", json!({"lines": 3}))
        .await;
    let crashed = gw
        .call_tool("t", &session, "3", "crash", json!({"code": 9}))
        .await;
    assert!(crashed["error"].is_object(), "{crashed}");
    let answer = gw
        .call_tool("t", &session, "4", "echo", json!({"message": "restarted"}))
        .await;
    assert_eq!(
        answer["result"]["content"][0]["text"], "restarted",
        "{answer}"
    );
    assert_eq!(gw.delete("t", &session).await, 200);

    // Backends that cannot start: their errors are logged and answered.
    for server in ["broken", "dies"] {
        let response = gw.post(server, None, &initialize_body("1"), &[]).await;
        let body = response.text().await.unwrap();
        assert!(
            !body.contains(SECRET),
            "{server}'s initialize answer shows the secret: {body}"
        );
        assert!(body.contains("\"error\""), "{server}: {body}");
    }

    // The unified endpoint starts them all too.
    let unified = format!("{}/mcp", gw.base);
    let init = gw
        .http
        .post(&unified)
        .header("content-type", "application/json")
        .header("accept", ACCEPT_BOTH)
        .body(initialize_body("u1"))
        .send()
        .await
        .unwrap();
    assert_eq!(init.status(), 200);
    let unified_session = init.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let list = gw
        .http
        .post(&unified)
        .header("content-type", "application/json")
        .header("accept", ACCEPT_BOTH)
        .header("mcp-protocol-version", PROTOCOL)
        .header("mcp-session-id", &unified_session)
        .body(r#"{"jsonrpc":"2.0","id":"l","method":"tools/list"}"#)
        .send()
        .await
        .unwrap();
    let list = answer_of(list).await;
    assert!(!list.to_string().contains(SECRET), "{list}");
    let deleted = gw
        .http
        .delete(&unified)
        .header("mcp-session-id", &unified_session)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);

    // A last refused request marks the end: once its line is in, so is every earlier one.
    let marker = gw.post("end-of-secret-test", None, "{}", &[]).await;
    assert_eq!(marker.status(), 404);
    gw.wait_for_log(&["request refused", "end-of-secret-test"])
        .await;
    let log = gw.log();
    assert!(log.len() > 10, "the gateway logged what happened: {log:#?}");
    let leaks: Vec<&String> = log
        .iter()
        .filter(|l| l.contains(SECRET) || l.contains("s3cr3t-value-4242"))
        .collect();
    assert!(leaks.is_empty(), "secrets in the gateway's log: {leaks:#?}");

    // `mcpgate check` on the very same file, and on one that takes the secret
    // from the environment with `${VAR}`.
    let check = |path: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mcpgate"))
            .args(["check", "--config"])
            .arg(path)
            .env("MCPGATE_TEST_SECRET_VALUE", EXPANDED_SECRET)
            .output()
            .expect("run mcpgate check")
    };
    let dir = tempfile::tempdir().unwrap();
    let expanded_path = dir.path().join("expanded.toml");
    std::fs::write(
        &expanded_path,
        "[servers.e]\ncommand = \"x\"\nenv = { SECRET_TOKEN = \"${MCPGATE_TEST_SECRET_VALUE}\", \
         MIXED = \"Bearer ${MCPGATE_TEST_SECRET_VALUE}\" }\n",
    )
    .unwrap();
    // The gateway's file names a command path that does not exist, which
    // `check` refuses: the refusal names the server and no secret.
    let out = check(&gw.config_path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("server `broken`"), "{stderr}");
    for secret in [SECRET, "s3cr3t-value-4242"] {
        assert!(
            !stderr.contains(secret) && !String::from_utf8_lossy(&out.stdout).contains(secret),
            "a refusing `mcpgate check` printed a secret:\n{stderr}"
        );
    }
    // The same file with that command fixed is valid, and printed redacted.
    let fixed_path = dir.path().join("fixed.toml");
    std::fs::write(
        &fixed_path,
        config.replace("/nonexistent/mcpgate-no-such-command", test_server_path()),
    )
    .unwrap();
    for (path, secrets) in [
        (fixed_path.as_path(), [SECRET, "s3cr3t-value-4242"]),
        (
            expanded_path.as_path(),
            [EXPANDED_SECRET, "expanded-s3cr3t"],
        ),
    ] {
        let out = check(path);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "check failed: {stderr}");
        assert!(
            stdout.contains("SECRET_TOKEN"),
            "check prints the env keys: {stdout}"
        );
        for secret in secrets {
            assert!(
                !stdout.contains(secret) && !stderr.contains(secret),
                "`mcpgate check` printed a secret:\n{stdout}\n{stderr}"
            );
        }
    }
    gw.stop().await;
}
