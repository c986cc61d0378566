//! Real MCP clients through the gateway: the official Rust SDK (rmcp), the
//! Python SDK, 1.x and 2.x, the TypeScript SDK, and the MCP Inspector's CLI.

use std::collections::HashSet;

use rmcp::model::{CallToolRequestParams, ClientConfig};
use serde_json::json;

use crate::common::*;

async fn rmcp_pid(client: &RmcpClient) -> u64 {
    let result = client
        .call_tool(CallToolRequestParams::new("pid"))
        .await
        .expect("pid tool");
    result.structured_content.expect("structured content")["pid"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_clients_each_get_their_own_backend_and_keep_it() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    let a = rmcp_client(&gw.url("t")).await;
    let b = rmcp_client(&gw.url("t")).await;
    let info = a.peer_info().expect("server info");
    assert_eq!(
        info.server_info.as_ref().unwrap().name,
        "mcpgate-test-server"
    );
    let tools = a.list_all_tools().await.unwrap();
    assert!(tools.iter().any(|t| t.name == "echo"));

    let pid_a = rmcp_pid(&a).await;
    let pid_b = rmcp_pid(&b).await;
    assert_ne!(pid_a, pid_b);
    for _ in 0..5 {
        assert_eq!(rmcp_pid(&a).await, pid_a);
    }

    // 50 concurrent calls in one session, each with its own answer.
    let calls = (0..50).map(|i| {
        let a = &a;
        async move {
            let args = json!({"message": format!("m{i}")})
                .as_object()
                .unwrap()
                .clone();
            let r = a
                .call_tool(CallToolRequestParams::new("echo").with_arguments(args))
                .await
                .unwrap();
            (
                i,
                r.structured_content.unwrap()["echo"]["message"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        }
    });
    for (i, echoed) in futures_util::future::join_all(calls).await {
        assert_eq!(echoed, format!("m{i}"));
    }

    // The backend saw the client's own capabilities and clientInfo.
    let seen = a
        .call_tool(CallToolRequestParams::new("client_info"))
        .await
        .unwrap();
    let params = &seen.structured_content.unwrap()["initializeParams"];
    let sent = ClientConfig::default();
    assert_eq!(
        params["clientInfo"]["name"],
        sent.client_info.name.as_str(),
        "{params}"
    );

    // Closing the client sends DELETE: its backend goes away, the other stays.
    let mut a = a;
    a.close().await.unwrap();
    wait_until("the closed client's backend is gone", || {
        !process_exists(pid_a as u32)
    })
    .await;
    assert!(process_alive(pid_b as u32));
    drop(b);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_1x_client_works_through_the_gateway() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    let out = python_client(1, &gw.url("t"), "basic").await;
    assert!(
        out["sdk_version"].as_str().unwrap().starts_with("1."),
        "{out}"
    );
    assert_eq!(out["server_name"], "mcpgate-test-server");
    assert_eq!(
        out["pids"][0], out["pids"][1],
        "one session, one process: {out}"
    );
    assert_eq!(out["echo"], "héllo");
    let tools: HashSet<&str> = out["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    assert!(tools.contains("pid") && tools.contains("echo"), "{out}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_2x_client_in_auto_mode_speaks_2026_07_28_and_in_legacy_mode_the_session_era() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    // auto: the client probes `server/discover`, which the gateway answers, so it
    // stays stateless; its calls reach one process (its caller's).
    let auto = python_client_in_mode(2, &gw.url("t"), "basic", "auto").await;
    assert!(
        auto["sdk_version"].as_str().unwrap().starts_with("2."),
        "{auto}"
    );
    assert_eq!(auto["protocol_version"], "2026-07-28", "{auto}");
    assert_eq!(auto["server_name"], "mcpgate-test-server", "{auto}");
    assert_eq!(auto["pids"][0], auto["pids"][1], "{auto}");
    assert_eq!(auto["echo"], "héllo");
    // legacy: initialize and a session, as before.
    let legacy = python_client_in_mode(2, &gw.url("t"), "basic", "legacy").await;
    assert_eq!(legacy["protocol_version"], "2025-11-25", "{legacy}");
    assert_eq!(legacy["pids"][0], legacy["pids"][1], "{legacy}");
    assert_ne!(
        legacy["pids"][0], auto["pids"][0],
        "a session gets its own process"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_2x_stateless_and_1x_session_clients_share_a_gateway_and_elicit_through_the_bridge()
 {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    let url = gw.url("t");
    // The two stateless clients are one (anonymous) caller, so they share a
    // process and run one after the other (a backend request with two calls
    // of a caller in flight is refused); the 1.x session runs beside them.
    let stateless = async {
        let modern = python_client(2, &url, "modern-basic").await;
        let elicit = python_client(2, &url, "modern-elicit").await;
        (modern, elicit)
    };
    let ((modern, elicit), old) = tokio::join!(stateless, python_client(1, &url, "basic"));
    assert_eq!(modern["protocol_version"], "2026-07-28", "{modern}");
    assert_eq!(
        modern["supported_versions"],
        json!(["2026-07-28"]),
        "{modern}"
    );
    assert_eq!(modern["echo"], "hi", "{modern}");
    assert!(modern["pid"].as_u64().is_some(), "{modern}");
    // The backend's elicitation/create reached the client as an input request,
    // and its answer reached the backend through the retry.
    assert_eq!(
        elicit["structured_content"]["response"]["result"]["content"]["name"], "octocat",
        "{elicit}"
    );
    assert_eq!(
        elicit["elicitation_requests"][0]["message"], "Name?",
        "{elicit}"
    );
    assert!(
        old["sdk_version"].as_str().unwrap().starts_with("1."),
        "{old}"
    );
    assert_eq!(old["pids"][0], old["pids"][1], "{old}");
    assert_ne!(
        old["pids"][0], modern["pid"],
        "the 1.x session has its own process"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_servers_from_npm_work_through_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let memory_file = dir.path().join("memory.json");
    let config = format!(
        "{FAST_GATEWAY}{}{}",
        npm_server("everything", "server-everything", &["stdio"], ""),
        memory_server("memory", &memory_file),
    );
    let gw = Gateway::start(&config).await;

    let everything = rmcp_client(&gw.url("everything")).await;
    let tools = everything.list_all_tools().await.unwrap();
    assert!(tools.iter().any(|t| t.name == "echo"), "{tools:?}");
    let args = json!({"message": "through the gateway"})
        .as_object()
        .unwrap()
        .clone();
    let echoed = everything
        .call_tool(CallToolRequestParams::new("echo").with_arguments(args))
        .await
        .unwrap();
    let text = serde_json::to_value(&echoed.content).unwrap()[0]["text"].clone();
    assert_eq!(text, "Echo: through the gateway");

    let memory = rmcp_client(&gw.url("memory")).await;
    let args = json!({"entities": [{"name": "mcpgate", "entityType": "project", "observations": ["routes sessions"]}]});
    memory
        .call_tool(
            CallToolRequestParams::new("create_entities")
                .with_arguments(args.as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    let graph = memory
        .call_tool(CallToolRequestParams::new("read_graph"))
        .await
        .unwrap();
    let graph = serde_json::to_string(&graph).unwrap();
    assert!(graph.contains("routes sessions"), "{graph}");

    drop(everything);
    drop(memory);
    gw.stop().await;
}

/// The TypeScript SDK's client (what Claude Code, VS Code and the Inspector
/// build on), with sampling, elicitation and roots handlers, on both
/// endpoints: it lists and calls tools, and answers the three requests the
/// backend sends it during calls; its DELETE ends each session with its
/// processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_sdk_client_works_on_both_endpoints_and_answers_the_backends_requests() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    for (endpoint, prefix) in [("t", ""), ("", "t___")] {
        let out = ts_client(
            &gw.url(endpoint),
            "basic",
            &[("TS_CLIENT_TOOL_PREFIX", prefix)],
        )
        .await;
        assert_eq!(out["protocol_version"], "2025-11-25", "{out}");
        assert!(
            out["session_id"].as_str().is_some_and(|s| !s.is_empty()),
            "{out}"
        );
        let tools: Vec<&str> = out["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("{out}"))
            .iter()
            .filter_map(|t| t.as_str())
            .collect();
        assert!(tools.contains(&format!("{prefix}echo").as_str()), "{out}");
        assert_eq!(out["echo"], "héllo", "{out}");
        assert_eq!(
            out["elicitation"]["result"],
            json!({"action": "accept", "content": {"name": "octocat"}}),
            "{out}"
        );
        assert_eq!(
            out["roots"]["result"]["roots"][0]["uri"], "file:///tmp/mcpgate-ts-client-root",
            "{out}"
        );
        assert_eq!(
            out["sampling"]["result"]["model"], "mcpgate-test-model",
            "{out}"
        );
        assert_eq!(
            out["asked"],
            json!(["elicitation/create", "roots/list", "sampling/createMessage"]),
            "{out}"
        );
        // The client's DELETE ended its session.
        let session = out["session_id"].as_str().unwrap();
        gw.assert_session_gone(endpoint, session).await;
    }
    wait_until("every session's process is stopped", || {
        gw.leftovers().is_empty()
    })
    .await;
    gw.stop().await;
}

/// The MCP Inspector's CLI lists and calls tools on both endpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inspector_cli_lists_and_calls_tools_on_both_endpoints() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    for (endpoint, prefix) in [("t", ""), ("", "t___")] {
        let url = gw.url(endpoint);
        let listed = inspector_cli(&url, &["--method", "tools/list"]).await;
        let names: Vec<&str> = listed["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("{listed}"))
            .iter()
            .filter_map(|t| t["name"].as_str())
            .collect();
        assert!(
            names.contains(&format!("{prefix}echo").as_str()),
            "{listed}"
        );
        let tool = format!("{prefix}echo");
        let called = inspector_cli(
            &url,
            &[
                "--method",
                "tools/call",
                "--tool-name",
                &tool,
                "--tool-arg",
                "message=from the inspector",
            ],
        )
        .await;
        assert_eq!(
            called["content"][0]["text"], "from the inspector",
            "{called}"
        );
    }
    gw.stop().await;
}

/// The Inspector CLI against `@modelcontextprotocol/server-filesystem` (given
/// its directory on the command line: the CLI declares no roots), on both
/// endpoints: it lists the directory's file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inspector_cli_lists_a_directory_through_server_filesystem_on_both_endpoints() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("seen-by-the-inspector.txt"), "hi").unwrap();
    let dir = root.path().canonicalize().unwrap().display().to_string();
    let gw = Gateway::start(&format!(
        "{FAST_GATEWAY}{}",
        npm_server("fs", "server-filesystem", &[&dir], "")
    ))
    .await;
    for (endpoint, prefix) in [("fs", ""), ("", "fs___")] {
        let tool = format!("{prefix}list_directory");
        let path = format!("path={dir}");
        let called = inspector_cli(
            &gw.url(endpoint),
            &[
                "--method",
                "tools/call",
                "--tool-name",
                &tool,
                "--tool-arg",
                &path,
            ],
        )
        .await;
        let listing = called["content"][0]["text"].as_str().unwrap_or_default();
        assert!(
            listing.contains("seen-by-the-inspector.txt"),
            "{endpoint:?}: {called}"
        );
    }
    gw.stop().await;
}
