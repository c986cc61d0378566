//! The HTTP ceiling: a trivial Streamable HTTP responder on the gateway's own
//! HTTP stack (axum 0.8 over hyper, tokio multi-threaded runtime), with no
//! backend. It answers `initialize` (minting a session id), notifications
//! (202), `tools/call` of `echo` and `big` (with the very JSON the test server
//! writes) and `DELETE`, as JSON or as a one-event SSE stream as the client's
//! `Accept` asks.
//!
//! It runs as a mode of the benchmark binary in a process of its own, so it
//! gets the same process layout as the gateway (its own runtime and threads)
//! and its CPU time and memory can be read the same way.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

/// The line the ceiling prints once it listens.
pub const ANNOUNCE: &str = "ceiling listening on ";

#[derive(Default)]
struct Ceiling {
    sessions: RwLock<HashSet<Box<str>>>,
    next_session: AtomicU64,
    next_event: AtomicU64,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct CallParams<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    arguments: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct EchoArgs<'a> {
    #[serde(borrow)]
    message: Cow<'a, str>,
}

#[derive(Deserialize)]
struct BigArgs {
    bytes: usize,
}

/// Runs the ceiling on `listen` until SIGTERM or SIGINT.
pub fn serve(listen: &str) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        let state = Arc::new(Ceiling::default());
        let app = Router::new()
            .route("/mcp/{server_id}", post(on_post).delete(on_delete))
            .with_state(state);
        println!("{ANNOUNCE}http://{local}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| e.to_string())?;
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            })
            .await
            .map_err(|e| e.to_string())
    })
}

fn status(code: StatusCode) -> Response {
    code.into_response()
}

async fn on_post(State(ceiling): State<Arc<Ceiling>>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(message) = serde_json::from_slice::<Message<'_>>(&body) else {
        return status(StatusCode::BAD_REQUEST);
    };
    let (Some(id), Some(method)) = (message.id, message.method.as_deref()) else {
        // A notification or a response.
        return status(StatusCode::ACCEPTED);
    };
    let json = headers
        .get(header::ACCEPT)
        .is_some_and(|a| a.as_bytes().windows(16).any(|w| w == b"application/json"));
    if method == "initialize" {
        let n = ceiling.next_session.fetch_add(1, Ordering::Relaxed);
        let session = format!("{n:032x}");
        ceiling
            .sessions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(session.clone().into_boxed_str());
        let result = r#"{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"mcpgate-bench-ceiling","version":"0.1.0"}}"#;
        let mut response = answer(&ceiling, json, respond(id.get(), result));
        if let Ok(value) = HeaderValue::from_str(&session) {
            response.headers_mut().insert("mcp-session-id", value);
        }
        return response;
    }
    let known = headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|s| {
            ceiling
                .sessions
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(s)
        });
    if !known {
        return status(StatusCode::NOT_FOUND);
    }
    let Some(result) = (method == "tools/call")
        .then(|| tool_result(message.params?))
        .flatten()
    else {
        return status(StatusCode::BAD_REQUEST);
    };
    answer(&ceiling, json, respond(id.get(), &result))
}

async fn on_delete(State(ceiling): State<Arc<Ceiling>>, headers: HeaderMap) -> Response {
    let removed = headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|s| {
            ceiling
                .sessions
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(s)
        });
    status(if removed {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    })
}

/// The result the test server gives for `echo` and `big`, built the same way.
fn tool_result(params: &RawValue) -> Option<String> {
    let call: CallParams<'_> = serde_json::from_str(params.get()).ok()?;
    let arguments = call.arguments?;
    match call.name.as_ref() {
        "echo" => {
            let args: EchoArgs<'_> = serde_json::from_str(arguments.get()).ok()?;
            let text = serde_json::to_string(args.message.as_ref()).ok()?;
            Some(format!(
                r#"{{"content":[{{"type":"text","text":{text}}}],"structuredContent":{{"echo":{}}}}}"#,
                arguments.get()
            ))
        }
        "big" => {
            let args: BigArgs = serde_json::from_str(arguments.get()).ok()?;
            let mut result = String::with_capacity(args.bytes + 48);
            result.push_str(r#"{"content":[{"type":"text","text":""#);
            result.extend(std::iter::repeat_n('x', args.bytes));
            result.push_str(r#""}]}"#);
            Some(result)
        }
        _ => None,
    }
}

fn respond(id: &str, result: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#)
}

/// As JSON, or as an SSE stream of a priming event and the message (the
/// gateway's shape for 2025-11-25 sessions).
fn answer(ceiling: &Ceiling, json: bool, message: String) -> Response {
    let (body, content_type) = if json {
        (Body::from(message), "application/json")
    } else {
        let priming = ceiling.next_event.fetch_add(1, Ordering::Relaxed);
        let event = ceiling.next_event.fetch_add(1, Ordering::Relaxed);
        let frames =
            format!("id: {priming}\ndata: \n\nevent: message\nid: {event}\ndata: {message}\n\n");
        (Body::from(frames), "text/event-stream")
    };
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
