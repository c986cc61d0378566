//! Backends that speak 2026-07-28 themselves (`era = "modern"`, or found by
//! `era = "auto"`): stateless clients pass straight through to them, and
//! session-era clients get an `initialize` made from their `server/discover`.
//! The backend is `tests/fixtures/modern_server.py` (Python `mcp` 2.x).

use serde_json::{Value, json};

use super::stateless::{Stateless, call};
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modern_backend_serves_stateless_clients_with_its_own_input_required_results() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", modern_server("m", "modern"))).await;

    // server/discover is the backend's own.
    let (status, discover) = Stateless::new(1, "server/discover", json!({}))
        .to("m")
        .send(&gw)
        .await;
    assert_eq!(status, 200, "{discover}");
    assert_eq!(
        discover["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "mcpgate-modern-test-server",
        "{discover}"
    );
    let (status, echo) = call(2, "echo", json!({"message": "hi"}))
        .to("m")
        .send(&gw)
        .await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["id"], 2);
    assert_eq!(echo["result"]["resultType"], "complete", "{echo}");
    assert_eq!(echo["result"]["content"][0]["text"], "hi");

    // The backend's own MRTR: its input keys and its requestState reach the
    // client untouched, and the retry goes back to the same process.
    let (status, first) = call(3, "ask_name", json!({})).to("m").send(&gw).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["result"]["resultType"], "input_required", "{first}");
    let requests = first["result"]["inputRequests"].as_object().unwrap();
    let (key, request) = requests.iter().next().unwrap();
    assert_eq!(request["method"], "elicitation/create");
    assert!(!key.starts_with("input-"), "the backend's own key: {key}");
    let state = first["result"]["requestState"].clone();
    let retry = Stateless::new(
        4,
        "tools/call",
        json!({
            "name": "ask_name",
            "arguments": {},
            "inputResponses": { key: {"action": "accept", "content": {"name": "octocat"}} },
            "requestState": state,
        }),
    )
    .to("m");
    let (status, done) = retry.send(&gw).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["id"], 4);
    assert_eq!(
        done["result"]["content"][0]["text"], "Hello, octocat!",
        "{done}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn era_auto_finds_each_backends_generation_on_the_same_process() {
    let gw = Gateway::start(&format!(
        "{FAST_GATEWAY}{}era = \"auto\"\n{}",
        test_server("t", &[]),
        modern_server("m", "auto")
    ))
    .await;
    let server_name = |answer: &Value| {
        answer["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"].clone()
    };
    // The test server refuses the probe: session era, bridged by the gateway.
    let (_, legacy) = Stateless::new(1, "server/discover", json!({}))
        .send(&gw)
        .await;
    assert_eq!(server_name(&legacy), "mcpgate-test-server", "{legacy}");
    // The Python server answers it: 2026-07-28, passed through.
    let (_, modern) = Stateless::new(1, "server/discover", json!({}))
        .to("m")
        .send(&gw)
        .await;
    assert_eq!(
        server_name(&modern),
        "mcpgate-modern-test-server",
        "{modern}"
    );
    gw.wait_for_log(&["backend handshake done", "server=t", "Session"])
        .await;
    gw.wait_for_log(&["backend handshake done", "server=m", "Stateless"])
        .await;
    // A probe refused does not count as a spawn: one process per caller.
    assert_eq!(children_of(gw.pid).len(), 2);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_era_client_reaches_a_modern_backend_through_initialize_from_discover() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", modern_server("m", "modern"))).await;
    let response = gw.post("m", None, &initialize_body("1"), &[]).await;
    assert_eq!(response.status(), 200);
    let session = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let init: Value = answer_of(response).await;
    assert_eq!(init["result"]["protocolVersion"], PROTOCOL, "{init}");
    assert_eq!(
        init["result"]["serverInfo"]["name"], "mcpgate-modern-test-server",
        "{init}"
    );
    assert!(
        init["result"]["capabilities"]["tools"].is_object(),
        "{init}"
    );
    // Each request gets the session's `_meta`, which the backend requires.
    let echo = gw
        .call_tool("m", &session, "2", "echo", json!({"message": "old client"}))
        .await;
    assert_eq!(echo["result"]["content"][0]["text"], "old client", "{echo}");
    // And a real 1.x client (session era only) works against it too.
    let out = python_client(1, &gw.url("m"), "basic").await;
    assert_eq!(out["server_name"], "mcpgate-modern-test-server", "{out}");
    assert_eq!(out["echo"], "héllo", "{out}");
    assert_eq!(out["pids"][0], out["pids"][1], "{out}");
    assert_eq!(gw.delete("m", &session).await, 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modern_backends_input_request_reaches_a_session_era_client_as_a_request() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", modern_server("m", "modern"))).await;
    let init = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL,
            "capabilities": {"elicitation": {"form": {}}},
            "clientInfo": {"name": "old-client", "version": "1"}
        }
    });
    let response = gw.post("m", None, &init.to_string(), &[]).await;
    let session = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let call = json!({"jsonrpc": "2.0", "id": "c1", "method": "tools/call",
        "params": {"name": "ask_name", "arguments": {}}});
    let response = gw.post("m", Some(&session), &call.to_string(), &[]).await;
    assert_eq!(response.status(), 200);
    let mut stream = SseReader::from_response(response);
    // The backend's InputRequiredResult became an elicitation/create request.
    let ask = stream.next().await.expect("a request before the answer");
    assert_eq!(ask["method"], "elicitation/create", "{ask}");
    assert_eq!(ask["params"]["message"], "Name?", "{ask}");
    // Another session cannot answer it, even with the right id.
    let intruder = gw.post("m", None, &init.to_string(), &[]).await;
    let intruder = intruder.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let forged = json!({"jsonrpc": "2.0", "id": ask["id"],
        "result": {"action": "accept", "content": {"name": "mallory"}}});
    gw.post("m", Some(&intruder), &forged.to_string(), &[])
        .await;
    let reply = json!({"jsonrpc": "2.0", "id": ask["id"],
        "result": {"action": "accept", "content": {"name": "octocat"}}});
    let accepted = gw.post("m", Some(&session), &reply.to_string(), &[]).await;
    assert_eq!(accepted.status(), 202);
    // The gateway retried with inputResponses and the backend's requestState.
    let answer = stream.next().await.expect("the answer");
    assert_eq!(answer["id"], "c1", "{answer}");
    assert_eq!(
        answer["result"]["content"][0]["text"], "Hello, octocat!",
        "{answer}"
    );
    gw.stop().await;
}
