//! Protocol fidelity for session-era clients: resumable streams, batches,
//! message sizes, and origin checks.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;

/// A tools/call that the client wants answered as JSON only, so the backend's
/// notifications go to the GET stream.
async fn notify_json_only(gw: &Gateway, session: &str, count: u64) {
    let body = json!({"jsonrpc":"2.0","id":"n","method":"tools/call","params":{"name":"notify","arguments":{"count":count}}});
    let response = gw
        .post(
            "t",
            Some(session),
            &body.to_string(),
            &[("accept", "application/json")],
        )
        .await;
    assert_eq!(response.status(), 200);
}

/// Reads raw SSE events (id, data) from a response until `count` data events came.
async fn raw_events(response: &mut reqwest::Response, count: usize) -> Vec<(String, String)> {
    let mut buffer = String::new();
    let mut events = Vec::new();
    while events.len() < count {
        let chunk = tokio::time::timeout(DEADLINE, response.chunk())
            .await
            .expect("events arrive")
            .unwrap()
            .expect("stream open");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let id = event
                .lines()
                .find_map(|l| l.strip_prefix("id: "))
                .map(str::to_owned);
            let data = event
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap_or("");
            if let Some(id) = id
                && !data.trim().is_empty()
            {
                events.push((id, data.to_owned()));
            }
        }
    }
    events
}

async fn get_stream(gw: &Gateway, session: &str, last_event_id: Option<&str>) -> reqwest::Response {
    let mut request = gw
        .http
        .get(gw.url("t"))
        .header("accept", "text/event-stream")
        .header("mcp-session-id", session);
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_get_stream_delivers_exactly_the_missed_events() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    let session = gw.open_session("t").await;
    let mut first = get_stream(&gw, &session, None).await;
    notify_json_only(&gw, &session, 1).await;
    let seen = raw_events(&mut first, 1).await;
    let (last_seen, _) = seen[0].clone();
    drop(first); // the connection breaks
    // Meanwhile: three notes for the GET stream, and a request whose own stream
    // carries other events, which must never show up on the GET stream.
    notify_json_only(&gw, &session, 3).await;
    let body = json!({"jsonrpc":"2.0","id":"p","method":"tools/call",
        "params":{"name":"notify","arguments":{"count":1},"_meta":{"progressToken":"on-post"}}});
    let post = gw.post("t", Some(&session), &body.to_string(), &[]).await;
    assert_eq!(
        answer_of(post).await["result"]["content"][0]["text"],
        "sent 1"
    );

    let mut resumed = get_stream(&gw, &session, Some(&last_seen)).await;
    let missed = raw_events(&mut resumed, 3).await;
    let notes: Vec<Value> = missed
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    let texts: Vec<&str> = notes
        .iter()
        .map(|n| n["params"]["data"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["note 0", "note 1", "note 2"]);
    // Ids are unique, and nothing else follows (not the POST stream's events).
    let mut ids: Vec<&String> = missed.iter().map(|(id, _)| id).collect();
    ids.push(&seen[0].0);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4);
    let mut reader = SseReader::from_response(resumed);
    assert!(
        reader
            .next_within(Duration::from_millis(300))
            .await
            .is_none()
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_request_stream_is_resumed_with_its_answer() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    let session = gw.open_session("t").await;
    let call = json!({"jsonrpc":"2.0","id":"ask","method":"tools/call",
        "params":{"name":"ask_client","arguments":{"method":"roots/list"}}});
    let mut post = gw.post("t", Some(&session), &call.to_string(), &[]).await;
    assert_eq!(post.headers()["content-type"], "text/event-stream");
    let events = raw_events(&mut post, 1).await;
    let (event_id, data) = events[0].clone();
    let request: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(request["method"], "roots/list");
    drop(post); // the client loses the stream before the answer
    let reply = json!({"jsonrpc":"2.0","id":request["id"],"result":{"roots":[]}});
    assert_eq!(
        gw.post("t", Some(&session), &reply.to_string(), &[])
            .await
            .status(),
        202
    );
    let resumed = get_stream(&gw, &session, Some(&event_id)).await;
    let answer = SseReader::from_response(resumed)
        .next_within(DEADLINE)
        .await
        .unwrap();
    assert_eq!(answer["id"], "ask");
    assert_eq!(
        answer["result"]["structuredContent"]["response"]["result"]["roots"],
        json!([])
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_answered_for_2025_03_26_sessions_and_refused_after() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    let old = gw.open_session_speaking("t", "2025-03-26").await;
    let batch = json!([
        {"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"echo","arguments":{"message":"one"}}},
        {"jsonrpc":"2.0","method":"notifications/roots/list_changed"},
        {"jsonrpc":"2.0","id":"b","method":"tools/call","params":{"name":"echo","arguments":{"message":"two"}}},
    ]);
    let response = gw
        .post(
            "t",
            Some(&old),
            &batch.to_string(),
            &[("mcp-protocol-version", "2025-03-26")],
        )
        .await;
    assert_eq!(response.status(), 200);
    let answers: Value = response.json().await.unwrap();
    assert_eq!(answers[0]["id"], "a");
    assert_eq!(answers[0]["result"]["content"][0]["text"], "one");
    assert_eq!(answers[1]["id"], "b");
    assert_eq!(answers[1]["result"]["content"][0]["text"], "two");
    assert_eq!(answers.as_array().unwrap().len(), 2);
    // Only notifications: 202.
    let notes = json!([{"jsonrpc":"2.0","method":"notifications/roots/list_changed"}]);
    let response = gw
        .post(
            "t",
            Some(&old),
            &notes.to_string(),
            &[("mcp-protocol-version", "2025-03-26")],
        )
        .await;
    assert_eq!(response.status(), 202);

    let new = gw.open_session_speaking("t", "2025-11-25").await;
    let response = gw.post("t", Some(&new), &batch.to_string(), &[]).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32600, "{body}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_over_max_message_bytes_gets_a_clear_error_and_the_session_goes_on() {
    let config = format!(
        "[gateway]\nmax_message_bytes = \"64KiB\"\nstop_grace = \"500ms\"\n{}",
        test_server("t", &[])
    );
    let gw = Gateway::start(&config).await;
    let session = gw.open_session("t").await;
    let fits = gw
        .call_tool("t", &session, "f", "big", json!({"bytes": 60_000}))
        .await;
    assert_eq!(
        fits["result"]["content"][0]["text"].as_str().unwrap().len(),
        60_000
    );
    let too_big = gw
        .call_tool("t", &session, "b", "big", json!({"bytes": 100_000}))
        .await;
    assert_eq!(too_big["id"], "b");
    let message = too_big["error"]["message"].as_str().unwrap();
    assert!(message.contains("exceeds max_message_bytes"), "{too_big}");
    let after = gw
        .call_tool("t", &session, "e", "echo", json!({"message": "still fine"}))
        .await;
    assert_eq!(after["result"]["content"][0]["text"], "still fine");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_answers_pass_by_default() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    let session = gw.open_session("t").await;
    let big = gw
        .call_tool("t", &session, "b", "big", json!({"bytes": 12 << 20}))
        .await;
    assert_eq!(
        big["result"]["content"][0]["text"].as_str().unwrap().len(),
        12 << 20
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_hosts_and_origins_are_refused_with_403() {
    let config = format!(
        "[gateway]\nallowed_origins = [\"https://app.example\"]\nstop_grace = \"500ms\"\n{}",
        test_server("t", &[])
    );
    let gw = Gateway::start(&config).await;
    let init = initialize_body("1");
    let cases: [(&[(&str, &str)], u16); 5] = [
        (&[("host", "evil.example.com")], 403),
        (&[("origin", "http://evil.example.com")], 403),
        (
            &[
                ("host", "evil.example.com"),
                ("origin", "http://evil.example.com"),
            ],
            403,
        ),
        (&[("origin", "http://localhost:5173")], 200),
        (&[("origin", "https://app.example")], 200),
    ];
    for (headers, status) in cases {
        let response = gw.post("t", None, &init, headers).await;
        assert_eq!(response.status().as_u16(), status, "{headers:?}");
    }
    let refused = gw
        .post("t", None, &init, &[("origin", "http://evil.example.com")])
        .await;
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Origin"),
        "{body}"
    );
    gw.stop().await;
}
