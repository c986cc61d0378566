//! The routed endpoint's Streamable HTTP rules, checked with raw HTTP requests.

use serde_json::{Value, json};

use crate::common::*;

async fn error_body(response: reqwest::Response) -> Value {
    let body = response.text().await.unwrap();
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_request_gets_the_status_and_json_rpc_error_the_spec_asks_for() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    let session = gw.open_session("t").await;
    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

    // (what, response, expected status, expected JSON-RPC code or None)
    let cases: Vec<(&str, reqwest::Response, u16, Option<i64>)> = vec![
        (
            "unknown session",
            gw.post("t", Some("0123456789abcdef0123456789abcdef"), list, &[])
                .await,
            404,
            Some(-32000),
        ),
        (
            "malformed session id",
            gw.post("t", Some("bad id"), list, &[]).await,
            404,
            Some(-32000),
        ),
        (
            "no session id on a non-initialize request",
            gw.post("t", None, list, &[]).await,
            400,
            Some(-32000),
        ),
        (
            "a 2.x client's server/discover probe",
            gw.post(
                "t",
                None,
                r#"{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{}}"#,
                &[("mcp-protocol-version", "2025-11-25")],
            )
            .await,
            400,
            Some(-32000),
        ),
        (
            "unknown server",
            gw.post("nope", Some(&session), list, &[]).await,
            404,
            Some(-32000),
        ),
        (
            "invalid MCP-Protocol-Version",
            gw.post(
                "t",
                Some(&session),
                list,
                &[("mcp-protocol-version", "1999-01-01")],
            )
            .await,
            400,
            Some(-32000),
        ),
        (
            "Accept lists neither JSON nor SSE",
            gw.post("t", Some(&session), list, &[("accept", "text/html")])
                .await,
            406,
            Some(-32000),
        ),
        (
            "Accept lists neither JSON nor SSE, and no session id",
            gw.post("t", None, list, &[("accept", "text/html")]).await,
            406,
            Some(-32000),
        ),
        (
            "Accept */* (accepts both), and no session id",
            gw.post("t", None, list, &[("accept", "*/*")]).await,
            400,
            Some(-32000),
        ),
        (
            "Content-Type is not JSON",
            gw.post("t", Some(&session), list, &[("content-type", "text/plain")])
                .await,
            415,
            Some(-32000),
        ),
        (
            "malformed JSON",
            gw.post("t", Some(&session), "{\"jsonrpc\":", &[]).await,
            400,
            Some(-32700),
        ),
        (
            "JSON that is not JSON-RPC",
            gw.post("t", Some(&session), r#"{"hello":"world"}"#, &[])
                .await,
            400,
            Some(-32600),
        ),
        (
            "body over max_body_bytes",
            gw.post(
                "t",
                Some(&session),
                &format!(
                    "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\",\"params\":{{\"p\":\"{}\"}}}}",
                    "x".repeat(5 << 20)
                ),
                &[],
            )
            .await,
            413,
            Some(-32000),
        ),
        (
            "initialize with a session id",
            gw.post("t", Some(&session), &initialize_body("9"), &[])
                .await,
            400,
            Some(-32600),
        ),
    ];
    for (what, response, status, code) in cases {
        assert_eq!(response.status().as_u16(), status, "{what}");
        assert_eq!(
            response
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap()),
            Some("application/json"),
            "{what}"
        );
        let body = error_body(response).await;
        assert_eq!(body["jsonrpc"], "2.0", "{what}: {body}");
        assert_eq!(body["error"]["code"].as_i64(), code, "{what}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: {body}"
        );
    }

    // GET and DELETE follow the same session rules.
    let get = |session: Option<&str>, accept: &str| {
        let mut r = gw.http.get(gw.url("t")).header("accept", accept.to_owned());
        if let Some(s) = session {
            r = r.header("mcp-session-id", s.to_owned());
        }
        r.send()
    };
    assert_eq!(get(None, "text/event-stream").await.unwrap().status(), 400);
    assert_eq!(
        get(
            Some("ffffffffffffffffffffffffffffffff"),
            "text/event-stream"
        )
        .await
        .unwrap()
        .status(),
        404
    );
    assert_eq!(
        get(Some(&session), "application/json")
            .await
            .unwrap()
            .status(),
        406
    );
    assert_eq!(
        gw.delete("t", "ffffffffffffffffffffffffffffffff").await,
        404
    );
    assert_eq!(
        gw.http.delete(gw.url("t")).send().await.unwrap().status(),
        400
    );
    assert_eq!(gw.http.put(gw.url("t")).send().await.unwrap().status(), 405);

    // After all of that, the session still works.
    let answer = gw
        .call_tool("t", &session, "7", "echo", json!({"message": "still here"}))
        .await;
    assert_eq!(
        answer["result"]["content"][0]["text"], "still here",
        "{answer}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_and_responses_get_202_with_no_body() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    let session = gw.open_session("t").await;
    let note = gw
        .post(
            "t",
            Some(&session),
            r#"{"jsonrpc":"2.0","method":"notifications/roots/list_changed"}"#,
            &[],
        )
        .await;
    assert_eq!(note.status(), 202);
    assert!(note.text().await.unwrap().is_empty());
    let response = gw
        .post(
            "t",
            Some(&session),
            r#"{"jsonrpc":"2.0","id":"srv-99","result":{}}"#,
            &[],
        )
        .await;
    assert_eq!(response.status(), 202);
    assert!(response.text().await.unwrap().is_empty());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_answered_as_sse_when_the_client_accepts_only_event_streams() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    let session = gw.open_session("t").await;
    let response = gw
        .post(
            "t",
            Some(&session),
            r#"{"jsonrpc":"2.0","id":"q","method":"tools/call","params":{"name":"echo","arguments":{"message":"sse"}}}"#,
            &[("accept", "text/event-stream")],
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let body = response.text().await.unwrap();
    let events: Vec<&str> = body.split("\n\n").filter(|e| !e.is_empty()).collect();
    // A 2025-11-25 stream starts with a priming event: an id and empty data.
    assert!(
        events[0].starts_with("id: ") && events[0].ends_with("data: "),
        "{body}"
    );
    let data = events[1]
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap();
    let message: Value = serde_json::from_str(data).unwrap();
    assert_eq!(message["id"], "q");
    assert_eq!(message["result"]["content"][0]["text"], "sse");
    let ids: Vec<&str> = events
        .iter()
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("id: ")))
        .collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1], "event ids are unique within the session");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_results_reach_the_client_byte_for_byte_with_the_client_id() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    let session = gw.open_session("t").await;
    // Unknown fields, odd number forms and key order must survive; a u64::MAX id too.
    let result = r#"{"content":[],"zeta":1.50,"alpha":{"_meta":{"x":[1e400]}},"big":123456789012345678901234567890}"#;
    let body = json!({"jsonrpc":"2.0","id":0,"method":"tools/call",
        "params":{"name":"raw_result","arguments":{"result_json":result}}})
    .to_string()
    .replacen("\"id\":0", "\"id\":18446744073709551615", 1);
    let response = gw.post("t", Some(&session), &body, &[]).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert_eq!(
        text,
        format!(r#"{{"jsonrpc":"2.0","id":18446744073709551615,"result":{result}}}"#)
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_a_request_causes_arrive_on_its_own_stream_before_its_answer() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    let session = gw.open_session("t").await;
    let mut get = SseReader::open(&gw, "t", &session).await;
    // The client accepts both: the answer turns into an SSE stream as soon as
    // the backend sends something while the request is in flight.
    let body = json!({"jsonrpc":"2.0","id":"n","method":"tools/call",
        "params":{"name":"notify","arguments":{"count":2},"_meta":{"progressToken":"tok"}}});
    let response = gw.post("t", Some(&session), &body.to_string(), &[]).await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut post = SseReader::from_response(response);
    let mut messages = Vec::new();
    while let Some(message) = post.next_within(DEADLINE).await {
        messages.push(message);
    }
    let methods: Vec<&str> = messages
        .iter()
        .map(|m| m["method"].as_str().unwrap_or("(answer)"))
        .collect();
    assert_eq!(
        methods,
        [
            "notifications/message",
            "notifications/progress",
            "notifications/message",
            "notifications/progress",
            "(answer)"
        ]
    );
    assert_eq!(messages[1]["params"]["progressToken"], "tok");
    assert_eq!(messages[4]["id"], "n");
    assert_eq!(messages[4]["result"]["content"][0]["text"], "sent 2");
    // None of it went to the GET stream.
    assert!(
        get.next_within(std::time::Duration::from_millis(300))
            .await
            .is_none()
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_json_only_client_server_messages_reach_the_get_stream() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    let session = gw.open_session("t").await;
    let mut get = SseReader::open(&gw, "t", &session).await;
    let body = json!({"jsonrpc":"2.0","id":"n","method":"tools/call","params":{"name":"notify","arguments":{"count":2}}});
    let response = gw
        .post(
            "t",
            Some(&session),
            &body.to_string(),
            &[("accept", "application/json")],
        )
        .await;
    assert_eq!(response.headers()["content-type"], "application/json");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["result"]["content"][0]["text"], "sent 2");
    let first = get.next_within(DEADLINE).await.unwrap();
    let second = get.next_within(DEADLINE).await.unwrap();
    assert_eq!(first["params"]["data"], "note 0");
    assert_eq!(second["params"]["data"], "note 1");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_request_with_no_client_stream_gets_an_error_answer() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    let session = gw.open_session("t").await;
    // A JSON-only client with no GET stream: nothing can carry the backend's request.
    let body = json!({"jsonrpc":"2.0","id":"a","method":"tools/call",
        "params":{"name":"ask_client","arguments":{"method":"roots/list"}}});
    let answer: Value = gw
        .post(
            "t",
            Some(&session),
            &body.to_string(),
            &[("accept", "application/json")],
        )
        .await
        .json()
        .await
        .unwrap();
    let response = &answer["result"]["structuredContent"]["response"];
    assert_eq!(response["id"], "srv-1", "{answer}");
    assert_eq!(response["error"]["code"], -32603, "{answer}");
    gw.stop().await;
}
