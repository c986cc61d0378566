//! `session_mode = "shared"`: one backend process for every session of a
//! server, with sessions kept apart.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;

fn shared_server(extra: &str) -> String {
    format!(
        "[gateway]\nstop_grace = \"500ms\"\n{extra}\n{}session_mode = \"shared\"\n",
        test_server("s", &["--stderr-noise"])
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_mode_runs_one_process_for_all_sessions_and_keeps_answers_apart() {
    let gw = Gateway::start(&shared_server("")).await;
    let sessions: Vec<String> =
        futures_util::future::join_all((0..3).map(|_| gw.open_session("s"))).await;
    let pids: Vec<u32> =
        futures_util::future::join_all(sessions.iter().map(|s| gw.backend_pid("s", s))).await;
    assert!(pids.iter().all(|p| *p == pids[0]), "one process: {pids:?}");
    assert_eq!(children_of(gw.pid).len(), 1);
    // Every session uses the very same request ids at the same time.
    let gw_ref = &gw;
    let calls = sessions.iter().flat_map(|s| {
        (0..10).map(move |i| async move {
            let gw = gw_ref;
            let answer = gw
                .call_tool(
                    "s",
                    s,
                    &format!("{i}"),
                    "echo",
                    json!({"message": format!("{s}/{i}")}),
                )
                .await;
            (s, i, answer)
        })
    });
    for (s, i, answer) in futures_util::future::join_all(calls).await {
        assert_eq!(answer["id"], format!("{i}"));
        assert_eq!(
            answer["result"]["content"][0]["text"],
            format!("{s}/{i}"),
            "{answer}"
        );
    }
    // Later sessions got the backend's initialize result, and the backend was
    // initialised exactly once.
    let seen = gw
        .call_tool("s", &sessions[2], "c", "client_info", json!({}))
        .await;
    assert_eq!(
        seen["result"]["structuredContent"]["initializedCount"], 1,
        "{seen}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_process_outlives_one_session_and_ends_with_the_last() {
    let gw = Gateway::start(&shared_server("")).await;
    let a = gw.open_session("s").await;
    let b = gw.open_session("s").await;
    let pid = gw.backend_pid("s", &a).await;
    assert_eq!(gw.delete("s", &a).await, 200);
    assert!(process_alive(pid));
    assert_eq!(gw.backend_pid("s", &b).await, pid);
    assert_eq!(gw.delete("s", &b).await, 200);
    assert!(
        !process_exists(pid),
        "the last session's DELETE stops the shared process"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_with_the_same_token_in_two_sessions_never_crosses() {
    let gw = Gateway::start(&shared_server("")).await;
    let a = gw.open_session("s").await;
    let b = gw.open_session("s").await;
    let call = |session: &String, count: u64| {
        let body = json!({"jsonrpc":"2.0","id":"p","method":"tools/call",
            "params":{"name":"notify","arguments":{"count":count},"_meta":{"progressToken":1}}});
        let session = session.clone();
        let gw = &gw;
        async move {
            // Each request's progress arrives on its own answer stream.
            let response = gw.post("s", Some(&session), &body.to_string(), &[]).await;
            let mut stream = SseReader::from_response(response);
            let mut messages = Vec::new();
            while let Some(message) = stream.next_within(DEADLINE).await {
                messages.push(message);
            }
            messages
        }
    };
    let (got_a, got_b) = tokio::join!(call(&a, 2), call(&b, 3));
    let progress_of = |messages: &[Value]| -> Vec<u64> {
        messages
            .iter()
            .filter(|m| m["method"] == "notifications/progress")
            .map(|m| {
                assert_eq!(m["params"]["progressToken"], 1, "{m}");
                m["params"]["total"].as_u64().unwrap()
            })
            .collect()
    };
    // Each client sees its own progress, with the token it chose, and its answer.
    assert_eq!(progress_of(&got_a), vec![2, 2], "{got_a:?}");
    assert_eq!(progress_of(&got_b), vec![3, 3, 3], "{got_b:?}");
    assert_eq!(
        got_a.last().unwrap()["result"]["content"][0]["text"],
        "sent 2"
    );
    assert_eq!(
        got_b.last().unwrap()["result"]["content"][0]["text"],
        "sent 3"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_request_goes_to_the_session_whose_request_caused_it() {
    let gw = Gateway::start(&shared_server("")).await;
    let a = gw.open_session("s").await;
    let b = gw.open_session("s").await;
    let mut stream_b = SseReader::open(&gw, "s", &b).await;
    let call = json!({"jsonrpc":"2.0","id":"ask","method":"tools/call",
        "params":{"name":"ask_client","arguments":{"method":"roots/list"}}});
    let response = gw.post("s", Some(&a), &call.to_string(), &[]).await;
    // The backend's request arrives on the stream of a's own request.
    let mut stream_a = SseReader::from_response(response);
    let request = stream_a
        .next_within(DEADLINE)
        .await
        .expect("a gets the backend's request");
    assert_eq!(request["method"], "roots/list", "{request}");
    let reply =
        json!({"jsonrpc":"2.0","id":request["id"],"result":{"roots":[{"uri":"file:///a"}]}});
    let posted = gw.post("s", Some(&a), &reply.to_string(), &[]).await;
    assert_eq!(posted.status(), 202);
    let answer = stream_a.next_within(DEADLINE).await.expect("a's answer");
    let response = &answer["result"]["structuredContent"]["response"];
    assert_eq!(
        response["result"]["roots"][0]["uri"], "file:///a",
        "{answer}"
    );
    assert!(
        stream_b
            .next_within(Duration::from_millis(300))
            .await
            .is_none(),
        "b saw nothing of a's exchange"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancellation_reaches_only_the_cancelling_sessions_request() {
    let gw = Gateway::start(&shared_server("tool_timeout = \"3s\"")).await;
    let a = gw.open_session("s").await;
    let b = gw.open_session("s").await;
    let slow_a = gw.call_tool("s", &a, "x", "sleep", json!({"ms": 60000}));
    let slow_b = gw.call_tool("s", &b, "x", "sleep", json!({"ms": 1500}));
    let cancel = async {
        wait_until("both requests are in flight", || {
            gw.log()
                .iter()
                .filter(|l| l.contains("handling tools/call"))
                .count()
                >= 2
        })
        .await;
        let note =
            json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"x"}});
        assert_eq!(
            gw.post("s", Some(&a), &note.to_string(), &[])
                .await
                .status(),
            202
        );
    };
    let (answer_a, answer_b, ()) = tokio::join!(slow_a, slow_b, cancel);
    // b's request with the same id ran to its end; a's was cancelled at the
    // backend (which then sends no answer), so a only gets the gateway's timeout.
    assert_eq!(
        answer_b["result"]["content"][0]["text"], "slept 1500 ms",
        "{answer_b}"
    );
    assert_eq!(answer_a["error"]["code"], -32001, "{answer_a}");
    gw.wait_for_log(&["cancelled"]).await;
    gw.stop().await;
}
