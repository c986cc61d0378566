//! The session pool's lifecycle: idle, errors, crashes, readiness, admission, concurrency.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;

fn config(gateway: &str, servers: &[String]) -> String {
    format!(
        "[gateway]\nstop_grace = \"500ms\"\n{gateway}\n{}",
        servers.concat()
    )
}

fn error_message(answer: &Value) -> &str {
    answer["error"]["message"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_failures_in_a_row_evict_the_backend_and_a_success_resets_the_count() {
    let gw = Gateway::start(&config(
        "tool_timeout = \"300ms\"\nmax_consecutive_errors = 3",
        &[test_server("t", &[])],
    ))
    .await;
    let session = gw.open_session("t").await;
    let first = gw.backend_pid("t", &session).await;
    let hang = || gw.call_tool("t", &session, "h", "sleep", json!({"ms": 60000}));
    for _ in 0..2 {
        assert_eq!(hang().await["error"]["code"], -32001);
    }
    // A success in between starts the count again.
    assert_eq!(gw.backend_pid("t", &session).await, first);
    for _ in 0..2 {
        assert_eq!(hang().await["error"]["code"], -32001);
    }
    assert!(process_alive(first), "two failures in a row do not evict");
    assert_eq!(hang().await["error"]["code"], -32001);
    // The third in a row does: the process tree is stopped at once...
    wait_until("the evicted backend is gone", || !process_exists(first)).await;
    gw.wait_for_log(&["evicting backend after too many transport failures"])
        .await;
    // ...and the session's next request starts a fresh process.
    let second = gw.backend_pid("t", &session).await;
    assert_ne!(first, second);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_rpc_error_answers_are_not_transport_failures() {
    let gw = Gateway::start(&config(
        "max_consecutive_errors = 2",
        &[test_server("t", &[])],
    ))
    .await;
    let session = gw.open_session("t").await;
    let pid = gw.backend_pid("t", &session).await;
    for i in 0..5 {
        let answer = gw
            .call_tool("t", &session, &format!("e{i}"), "no_such_tool", json!({}))
            .await;
        assert_eq!(answer["error"]["code"], -32602, "{answer}");
    }
    assert_eq!(gw.backend_pid("t", &session).await, pid);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_stops_restarting_and_says_why() {
    let gw = Gateway::start(&config(
        "crash_loop_restarts = 2\ncrash_loop_window = \"10m\"",
        &[test_server("t", &[])],
    ))
    .await;
    let session = gw.open_session("t").await;
    let other = gw.open_session("t").await;
    for round in 0..2 {
        let pid = gw.backend_pid("t", &session).await;
        let crashed = gw.call_tool("t", &session, "c", "crash", json!({})).await;
        assert!(
            error_message(&crashed).contains("exit status: 7"),
            "round {round}: {crashed}"
        );
        wait_until("the crashed backend is reaped", || !process_exists(pid)).await;
    }
    let refused = gw.call_tool("t", &session, "p", "pid", json!({})).await;
    let message = error_message(&refused);
    assert!(
        message.contains("crashed 2 times") && message.contains("crash-loop breaker"),
        "{refused}"
    );
    // No process was started for the refused request, and other sessions are fine.
    assert_eq!(children_of(gw.pid).len(), 1);
    assert!(gw.backend_pid("t", &other).await > 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_answers_are_retried_until_the_backend_is_ready() {
    let gw = Gateway::start(&config("", &[test_server("t", &["--not-ready-ms", "700"])])).await;
    let session = gw.open_session("t").await;
    // The backend answers "method is invalid during session initialization" for
    // 700 ms after the handshake; the client only ever sees the real answer.
    let answer = gw
        .call_tool("t", &session, "r", "echo", json!({"message": "ready"}))
        .await;
    assert_eq!(answer["result"]["content"][0]["text"], "ready", "{answer}");
    gw.wait_for_log(&["backend not ready yet; retrying"]).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_ready_timeout_the_backends_not_ready_answer_is_passed_on() {
    let gw = Gateway::start(&config(
        "ready_timeout = \"300ms\"",
        &[test_server("t", &["--not-ready-ms", "600000"])],
    ))
    .await;
    let session = gw.open_session("t").await;
    let answer = gw
        .call_tool("t", &session, "r", "echo", json!({"message": "x"}))
        .await;
    assert_eq!(answer["id"], "r");
    assert_eq!(
        error_message(&answer),
        "method is invalid during session initialization"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_patterns_are_configurable_per_server() {
    let servers = [format!(
        "{}ready_timeout = \"300ms\"\nnot_ready_patterns = [\"Unknown tool\"]\n",
        test_server("t", &[])
    )];
    let gw = Gateway::start(&config("", &servers)).await;
    let session = gw.open_session("t").await;
    let answer = gw
        .call_tool("t", &session, "u", "no_such_tool", json!({}))
        .await;
    assert!(error_message(&answer).contains("Unknown tool"), "{answer}");
    gw.wait_for_log(&["backend not ready yet; retrying", "server=t"])
        .await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_timeout_bounds_spawn_and_handshake_and_reports_stderr() {
    let gw = Gateway::start(&config(
        "startup_timeout = \"300ms\"",
        &[test_server(
            "slow",
            &["--stderr-noise", "--slow-start-ms", "600000"],
        )],
    ))
    .await;
    let response = gw.post("slow", None, &initialize_body("1"), &[]).await;
    assert!(response.headers().get("mcp-session-id").is_none());
    let body: Value = response.json().await.unwrap();
    assert!(
        error_message(&body).contains("startup_timeout of 300ms"),
        "{body}"
    );
    let tail = body["error"]["data"]["stderrTail"].as_array().unwrap();
    assert!(tail.iter().any(|l| l == "noise line 1"), "{body}");
    // The half-started process is gone.
    wait_until("the timed-out backend is gone", || {
        children_of(gw.pid).is_empty()
    })
    .await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_sessions_initialize_gets_503_with_retry_after() {
    let gw = Gateway::start(&config("max_sessions = 2", &[test_server("t", &[])])).await;
    let a = gw.open_session("t").await;
    let _b = gw.open_session("t").await;
    let refused = gw.post("t", None, &initialize_body("3"), &[]).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "5");
    assert!(refused.headers().get("mcp-session-id").is_none());
    let body: Value = refused.json().await.unwrap();
    assert!(error_message(&body).contains("max_sessions"), "{body}");
    assert_eq!(
        children_of(gw.pid).len(),
        2,
        "no process for the refused session"
    );
    // Ending a session frees its place.
    assert_eq!(gw.delete("t", &a).await, 200);
    gw.open_session("t").await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_sessions_initialised_at_once_all_succeed() {
    let gw = Gateway::start(&config("", &[test_server("t", &[])])).await;
    let opens = (0..100).map(|_| gw.open_session("t"));
    let sessions = futures_util::future::join_all(opens).await;
    let ids: HashSet<&String> = sessions.iter().collect();
    assert_eq!(ids.len(), 100);
    let pids =
        futures_util::future::join_all(sessions.iter().map(|s| gw.backend_pid("t", s))).await;
    let pids: HashSet<u32> = pids.into_iter().collect();
    assert_eq!(pids.len(), 100, "one process per session");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_starting_backend_delays_no_other_session_and_no_healthz() {
    let gw = Gateway::start(&config(
        "",
        &[
            test_server("slow", &["--slow-start-ms", "5000"]),
            test_server("fast", &[]),
        ],
    ))
    .await;
    let slow = {
        let url = gw.url("slow");
        let http = gw.http.clone();
        tokio::spawn(async move {
            http.post(url)
                .header("content-type", "application/json")
                .header("accept", ACCEPT_BOTH)
                .body(initialize_body("slow"))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    gw.wait_for_log(&["backend spawned", "server=slow"]).await;
    // While the slow backend starts, other sessions open and work, on this
    // server's neighbour, and health checks answer.
    for _ in 0..3 {
        let session = gw.open_session("fast").await;
        assert!(gw.backend_pid("fast", &session).await > 0);
        let health = gw
            .http
            .get(format!("{}/healthz", gw.base))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
    }
    assert!(!slow.is_finished(), "the slow initialize is still starting");
    assert_eq!(slow.await.unwrap(), 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_gives_up_during_initialize_leaves_no_process() {
    let gw = Gateway::start(&config(
        "max_sessions = 1",
        &[
            test_server("slow", &["--slow-start-ms", "1500"]),
            test_server("t", &[]),
        ],
    ))
    .await;
    let gave_up = gw
        .http
        .post(gw.url("slow"))
        .header("content-type", "application/json")
        .header("accept", ACCEPT_BOTH)
        .body(initialize_body("1"))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client timed out");
    gw.wait_for_log(&["backend spawned", "server=slow"]).await;
    // Stopped either by the abandoned initialize or as soon as its launch ended.
    gw.wait_for_log(&["backend stopped", "server=slow"]).await;
    wait_until("no backend is left", || gw.leftovers().is_empty()).await;
    // Its admission slot was given back: with max_sessions = 1, a new session opens.
    gw.open_session("t").await;
    gw.stop().await;
}

/// Reads an SSE body until `count` keep-alive comments have arrived.
async fn read_keepalives(stream: &mut reqwest::Response, count: usize) {
    let mut seen = 0;
    while seen < count {
        let chunk = tokio::time::timeout(DEADLINE, stream.chunk())
            .await
            .expect("stream delivers")
            .unwrap()
            .expect("stream still open");
        seen += String::from_utf8_lossy(&chunk)
            .matches(": keep-alive")
            .count();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_get_stream_keeps_a_session_alive_and_a_dead_one_does_not() {
    let gw = Gateway::start(&config(
        "session_idle_timeout = \"1s\"\ncleanup_interval = \"100ms\"\nsse_keepalive = \"100ms\"",
        &[test_server("t", &[])],
    ))
    .await;
    let session = gw.open_session("t").await;
    let pid = gw.backend_pid("t", &session).await;
    let mut stream = gw
        .http
        .get(gw.url("t"))
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    // 20 keep-alives 100 ms apart: the session outlives its 1 s idle timeout.
    read_keepalives(&mut stream, 20).await;
    assert!(process_alive(pid), "a live stream keeps the session");
    // A client that vanishes without closing politely: its socket is dropped.
    drop(stream);
    wait_until("the idle session's backend is gone", || {
        !process_exists(pid)
    })
    .await;
    gw.assert_session_gone("t", &session).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_sse_streams_and_does_not_wait_for_them() {
    let mut gw = Gateway::start(&config(
        "shutdown_timeout = \"30s\"",
        &[test_server("t", &[])],
    ))
    .await;
    let session = gw.open_session("t").await;
    let mut stream = gw
        .http
        .get(gw.url("t"))
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    gw.signal(libc::SIGTERM);
    // The stream ends (end of body), well before the 30 s shutdown_timeout.
    let ended = tokio::time::timeout(DEADLINE, async {
        loop {
            match stream.chunk().await {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the SSE stream was not ended at shutdown");
    let status = gw.wait_exit().await;
    assert!(status.success(), "{status}");
    assert!(
        !gw.log()
            .iter()
            .any(|l| l.contains("still running at shutdown_timeout"))
    );
    gw.assert_no_leftovers().await;
}
