//! Requests a backend sends on its own, that no client request caused: most
//! often `roots/list` as it starts. They wait, bounded, for a stream of the
//! client that can carry them (the GET stream, or the next request's stream);
//! a stateless caller, which has no stream of its own, cannot be asked them,
//! and the backend hears so at once; nothing is ever pinned on an unrelated
//! call.

use serde_json::{Value, json};

use crate::cases::stateless::Stateless;
use crate::common::*;

/// The test server asking `roots/list` the moment it is initialized.
fn asks_roots_at_start(id: &str) -> String {
    test_server(id, &["--ask-roots-on-initialized"])
}

/// A gateway whose stateless callers are named by `x-caller`, with a backend
/// that asks `roots/list` as it starts.
async fn callers_gateway() -> Gateway {
    Gateway::start(&format!(
        "{FAST_GATEWAY}caller_header = \"x-caller\"\n{}",
        asks_roots_at_start("t")
    ))
    .await
}

/// Waits until `callers` callers' backends were told at once that their
/// client cannot be asked.
async fn callers_backends_told_at_once(gw: &Gateway, callers: usize) {
    wait_until("every caller's backend was told at once", || {
        gw.log()
            .iter()
            .filter(|l| {
                l.contains("roots/list at start was answered")
                    && l.contains("stateless (2026-07-28) caller")
            })
            .count()
            == callers
    })
    .await;
}

/// The client's answer to the backend's `request`, with one root.
fn roots_answer(request: &Value, root: &str) -> String {
    json!({"jsonrpc": "2.0", "id": request["id"], "result": {"roots": [{"uri": root}]}}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backends_request_at_start_waits_for_the_clients_get_stream() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", asks_roots_at_start("t"))).await;
    let session = gw.open_session("t").await;
    let mut stream = SseReader::open(&gw, "t", &session).await;
    let asked = stream.next().await.expect("the held request");
    assert_eq!(asked["method"], "roots/list", "{asked}");
    let answered = gw
        .post(
            "t",
            Some(&session),
            &roots_answer(&asked, "file:///tmp/mcpgate-root-get"),
            &[],
        )
        .await;
    assert_eq!(answered.status(), 202);
    gw.wait_for_log(&[
        "roots/list at start was answered",
        "file:///tmp/mcpgate-root-get",
    ])
    .await;
    assert_eq!(gw.delete("t", &session).await, 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backends_request_at_start_rides_the_next_requests_stream() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", asks_roots_at_start("t"))).await;
    let session = gw.open_session("t").await;
    let list = gw
        .post(
            "t",
            Some(&session),
            r#"{"jsonrpc":"2.0","id":"l","method":"tools/list"}"#,
            &[],
        )
        .await;
    assert_eq!(list.status(), 200);
    let mut stream = SseReader::from_response(list);
    let asked = stream.next().await.expect("the held request first");
    assert_eq!(asked["method"], "roots/list", "{asked}");
    let answered = gw
        .post(
            "t",
            Some(&session),
            &roots_answer(&asked, "file:///tmp/mcpgate-root-next"),
            &[],
        )
        .await;
    assert_eq!(answered.status(), 202);
    let list = stream.next().await.expect("then the list's own answer");
    assert_eq!(list["id"], "l", "{list}");
    assert!(list["result"]["tools"].as_array().is_some(), "{list}");
    gw.wait_for_log(&[
        "roots/list at start was answered",
        "file:///tmp/mcpgate-root-next",
    ])
    .await;
    assert_eq!(gw.delete("t", &session).await, 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backends_request_no_stream_comes_for_is_refused_saying_why() {
    let gw = Gateway::start(&format!(
        "[gateway]\nstop_grace = \"500ms\"\nshutdown_timeout = \"5s\"\ncleanup_interval = \"100ms\"\n{}",
        asks_roots_at_start("t")
    ))
    .await;
    let session = gw.open_session("t").await;
    // No GET stream, no request: after the hold, the backend hears why.
    gw.wait_for_log(&[
        "roots/list at start was answered",
        "no stream of the client opened within 10 s",
    ])
    .await;
    // The session goes on.
    let answer = gw
        .call_tool("t", &session, "e", "echo", json!({"message": "still here"}))
        .await;
    assert_eq!(answer["result"]["content"][0]["text"], "still here");
    assert_eq!(gw.delete("t", &session).await, 200);
    gw.stop().await;
}

/// Stateless callers, one fresh process each, whose backend asks `roots/list`
/// as it starts: the backend is told at once that its client cannot be asked,
/// and every caller's list and call are answered as themselves (never an
/// `InputRequiredResult` or a missing-capability error pinned on them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateless_callers_backend_is_told_at_once_and_its_calls_go_on() {
    const CALLERS: usize = 20;
    let gw = callers_gateway().await;
    for n in 0..CALLERS {
        let caller = format!("caller-{n}");
        let mut list = Stateless::new(1, "tools/list", json!({}));
        list.capabilities = json!({"roots": {}, "elicitation": {}});
        let (status, answer) = list
            .send_with(&gw, |headers, _| headers.push(("x-caller", caller.clone())))
            .await;
        assert_eq!(status, 200, "{caller}: {answer}");
        assert_eq!(
            answer["result"]["resultType"], "complete",
            "{caller}: {answer}"
        );
        let mut echo = Stateless::new(
            2,
            "tools/call",
            json!({"name": "echo", "arguments": {"message": "hi"}}),
        );
        echo.capabilities = json!({"roots": {}});
        let (status, answer) = echo
            .send_with(&gw, |headers, _| headers.push(("x-caller", caller.clone())))
            .await;
        assert_eq!(status, 200, "{caller}: {answer}");
        assert_eq!(
            answer["result"]["content"][0]["text"], "hi",
            "{caller}: {answer}"
        );
    }
    callers_backends_told_at_once(&gw, CALLERS).await;
    gw.stop().await;
}

/// The Python SDK 2.x's default client (`mcp.Client(url)`, mode "auto", which
/// goes stateless through the gateway), 50 in a row, each a caller of its own
/// so that each gets a fresh process that asks `roots/list` the moment it
/// starts: 50 of 50 list their tools and call one, and every backend was told
/// at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_python_2x_default_clients_in_a_row_each_list_and_call_as_fresh_callers() {
    const CLIENTS: u64 = 50;
    let gw = callers_gateway().await;
    let runs = CLIENTS.to_string();
    let out = python_client_env(
        2,
        &gw.url("t"),
        "fresh-callers",
        &[("PY_CLIENT_RUNS", &runs), ("PY_CLIENT_TIMEOUT", "240")],
    )
    .await;
    assert_eq!(out["listed"], CLIENTS, "{out}");
    assert_eq!(out["echoed"], CLIENTS, "{out}");
    assert_eq!(out["protocol_versions"], json!(["2026-07-28"]), "{out}");
    callers_backends_told_at_once(&gw, CLIENTS as usize).await;
    gw.stop().await;
}

/// The TypeScript SDK's client, 50 fresh sessions in a row, each backend
/// asking `roots/list` the moment it starts: 50 of 50 get the client's roots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_typescript_clients_in_a_row_each_get_asked_their_roots_at_start() {
    const CLIENTS: usize = 50;
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", asks_roots_at_start("t"))).await;
    let mut asked = 0;
    for _ in 0..CLIENTS {
        let out = ts_client(&gw.url("t"), "roots-at-start", &[]).await;
        if out["roots_asked"].as_u64().is_some_and(|n| n >= 1) {
            asked += 1;
        }
    }
    assert_eq!(asked, CLIENTS, "clients asked their roots");
    wait_until("every backend got the client's roots", || {
        gw.log()
            .iter()
            .filter(|l| {
                l.contains("roots/list at start was answered")
                    && l.contains("file:///tmp/mcpgate-ts-client-root")
            })
            .count()
            == CLIENTS
    })
    .await;
    wait_until("every session's process is stopped", || {
        gw.leftovers().is_empty()
    })
    .await;
    gw.stop().await;
}

/// `@modelcontextprotocol/server-filesystem` started with no directory works
/// only with the roots its client gives it, which it asks the moment it
/// starts: through the gateway, the TypeScript SDK's client gives them, and
/// the server then serves exactly that directory (five fresh sessions in a
/// row).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_filesystem_without_directories_serves_the_roots_the_client_gives() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("hello-from-mcpgate.txt"), "hi").unwrap();
    let root_path = root.path().canonicalize().unwrap();
    let root_uri = format!("file://{}", root_path.display());
    let gw = Gateway::start(&format!(
        "{FAST_GATEWAY}{}",
        npm_server("fs", "server-filesystem", &[], "")
    ))
    .await;
    for _ in 0..5 {
        let out = ts_client(
            &gw.url("fs"),
            "filesystem-roots",
            &[("TS_CLIENT_ROOT", &root_uri)],
        )
        .await;
        assert_eq!(out["roots_asked"], 1, "{out}");
        let allowed = out["allowed"].as_str().unwrap_or_default();
        assert!(
            allowed.contains(&root_path.display().to_string()),
            "the root is the one allowed directory: {out}"
        );
        let listing = out["listing"].as_str().unwrap_or_default();
        assert!(listing.contains("hello-from-mcpgate.txt"), "{out}");
    }
    wait_until("every session's process is stopped", || {
        gw.leftovers().is_empty()
    })
    .await;
    gw.stop().await;
}
