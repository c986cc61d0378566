//! The unified endpoint `/mcp`: every backend behind one session, names
//! prefixed `<serverID>___<name>`, calls routed back by name or URI.

use std::collections::BTreeSet;

use rmcp::model::{CallToolRequestParams, GetPromptRequestParams, ReadResourceRequestParams};
use serde_json::{Value, json};

use crate::common::*;

/// The test server (tools in pages of 5), the two npm reference servers, and
/// one server whose command does not exist.
fn four_servers(memory_file: &std::path::Path) -> String {
    format!(
        "{FAST_GATEWAY}{}{}{}[servers.missing]\ncommand = \"/nonexistent/mcp-server\"\n",
        test_server("t", &["--page-size", "5"]),
        npm_server("everything", "server-everything", &["stdio"], ""),
        memory_server("memory", memory_file),
    )
}

fn unified_url(gw: &Gateway) -> String {
    format!("{}/mcp", gw.base)
}

async fn tool_names(client: &RmcpClient) -> BTreeSet<String> {
    client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect()
}

fn text_of(result: &rmcp::model::CallToolResult) -> String {
    serde_json::to_value(&result.content).unwrap()[0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The pid a test server reports through the tool `name`.
async fn tool_pid(client: &RmcpClient, name: &str) -> u32 {
    let result = client
        .call_tool(CallToolRequestParams::new(name.to_owned()))
        .await
        .unwrap();
    result.structured_content.unwrap()["pid"].as_u64().unwrap() as u32
}

fn args(value: Value) -> serde_json::Map<String, Value> {
    value.as_object().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_lists_are_the_union_of_every_backend_with_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&four_servers(&dir.path().join("m.json"))).await;
    // What each backend offers, asked on its own routed endpoint.
    let mut expected = BTreeSet::new();
    for server in ["t", "everything", "memory"] {
        let direct = rmcp_client(&gw.url(server)).await;
        for name in tool_names(&direct).await {
            expected.insert(format!("{server}___{name}"));
        }
    }
    let unified = rmcp_client(&unified_url(&gw)).await;
    let info = unified.peer_info().unwrap();
    assert_eq!(info.server_info.as_ref().unwrap().name, "mcpgate");
    let instructions = info.instructions.clone().unwrap_or_default();
    assert!(
        instructions.contains("## t") && instructions.contains("___"),
        "{instructions}"
    );
    // rmcp follows the gateway's cursor across pages and backends.
    assert_eq!(tool_names(&unified).await, expected);
    assert!(expected.iter().any(|n| n.starts_with("t___")));
    assert!(!expected.iter().any(|n| n.starts_with("missing___")));

    // The test server's 5-tool pages: the first merged page carries a cursor.
    let session = gw.open_session("").await;
    let page = gw
        .post(
            "",
            Some(&session),
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#,
            &[],
        )
        .await;
    let page = answer_of(page).await;
    assert_eq!(page["id"], 7);
    assert!(page["result"]["nextCursor"].is_string(), "{page}");
    drop(unified);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_reach_the_right_backend_and_a_broken_one_breaks_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&four_servers(&dir.path().join("m.json"))).await;
    let client = rmcp_client(&unified_url(&gw)).await;
    let echo = |name: &'static str| {
        let client = &client;
        async move {
            client
                .call_tool(
                    CallToolRequestParams::new(name).with_arguments(args(json!({"message": "hi"}))),
                )
                .await
        }
    };
    assert_eq!(text_of(&echo("t___echo").await.unwrap()), "hi");
    assert_eq!(
        text_of(&echo("everything___echo").await.unwrap()),
        "Echo: hi"
    );
    let graph = client
        .call_tool(CallToolRequestParams::new("memory___read_graph"))
        .await
        .unwrap();
    assert!(
        serde_json::to_string(&graph).unwrap().contains("entities"),
        "{graph:?}"
    );

    // The broken server's tools get a clear error; an unknown prefix too.
    let broken = client
        .call_tool(CallToolRequestParams::new("missing___anything"))
        .await;
    let message = format!("{broken:?}");
    assert!(
        message.contains("could not be started") && message.contains("/nonexistent/mcp-server"),
        "{message}"
    );
    let unknown = client
        .call_tool(CallToolRequestParams::new("nope___echo"))
        .await;
    assert!(
        format!("{unknown:?}").contains("names no configured server"),
        "{unknown:?}"
    );

    // A crash of one backend leaves the others working, and it comes back.
    let first = tool_pid(&client, "t___pid").await;
    assert!(
        client
            .call_tool(CallToolRequestParams::new("t___crash"))
            .await
            .is_err()
    );
    assert_eq!(
        text_of(&echo("everything___echo").await.unwrap()),
        "Echo: hi"
    );
    assert_ne!(tool_pid(&client, "t___pid").await, first);
    drop(client);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_and_resources_are_merged_and_routed() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&four_servers(&dir.path().join("m.json"))).await;
    let direct = rmcp_client(&gw.url("everything")).await;
    let direct_prompts: BTreeSet<String> = direct
        .list_all_prompts()
        .await
        .unwrap()
        .into_iter()
        .map(|p| format!("everything___{}", p.name))
        .collect();
    let direct_resources = direct.list_all_resources().await.unwrap();
    let client = rmcp_client(&unified_url(&gw)).await;

    let prompts: BTreeSet<String> = client
        .list_all_prompts()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name.to_string())
        .collect();
    assert_eq!(prompts, direct_prompts);
    let simple = prompts
        .iter()
        .find(|p| p.contains("simple"))
        .expect("a simple prompt");
    let got = client
        .get_prompt(GetPromptRequestParams::new(simple.clone()))
        .await
        .unwrap();
    assert!(!got.messages.is_empty());

    // Resources keep their URIs: the union of both backends, across their pages.
    let resources: BTreeSet<String> = client
        .list_all_resources()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.uri.clone())
        .collect();
    let mut expected: BTreeSet<String> = direct_resources.iter().map(|r| r.uri.clone()).collect();
    for server in ["t", "memory"] {
        let other = rmcp_client(&gw.url(server)).await;
        expected.extend(
            other
                .list_all_resources()
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.uri),
        );
    }
    assert!(expected.contains("test://mcpgate/static"), "{expected:?}");
    assert_eq!(resources, expected);

    // Reads are routed by URI: exact, and through the test server's template.
    let read = |uri: &str| client.read_resource(ReadResourceRequestParams::new(uri.to_owned()));
    let ours = serde_json::to_string(&read("test://mcpgate/static").await.unwrap()).unwrap();
    assert!(ours.contains("read by pid"), "{ours}");
    let item = serde_json::to_string(&read("test://mcpgate/item/42").await.unwrap()).unwrap();
    assert!(
        item.contains("test://mcpgate/item/42 read by pid"),
        "{item}"
    );
    let theirs = read(&direct_resources[0].uri).await.unwrap();
    assert_eq!(theirs.contents.len(), 1);
    assert!(read("nowhere://x").await.is_err());
    drop((client, direct));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_changed_from_a_backend_reaches_the_unified_client() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    let session = gw.open_session("").await;
    let mut stream = gw
        .http
        .get(unified_url(&gw))
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let answer = gw
        .call_tool("", &session, "2", "t___announce_list_changed", json!({}))
        .await;
    assert_eq!(
        answer["result"]["content"][0]["text"], "announced",
        "{answer}"
    );
    let mut seen = String::new();
    while !seen.contains("notifications/tools/list_changed") {
        let chunk = tokio::time::timeout(DEADLINE, stream.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(stream);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tools_allow_list_hides_and_refuses_other_tools_on_both_endpoints() {
    let config = format!(
        "{FAST_GATEWAY}{}tools = [\"echo\", \"p*\"]\n",
        test_server("t", &[])
    );
    let gw = Gateway::start(&config).await;
    let routed = rmcp_client(&gw.url("t")).await;
    let unified = rmcp_client(&unified_url(&gw)).await;
    assert_eq!(
        tool_names(&routed).await,
        BTreeSet::from(["echo".to_owned(), "pid".to_owned()])
    );
    assert_eq!(
        tool_names(&unified).await,
        BTreeSet::from(["t___echo".to_owned(), "t___pid".to_owned()])
    );
    for (client, name) in [(&routed, "crash"), (&unified, "t___crash")] {
        let refused = client.call_tool(CallToolRequestParams::new(name)).await;
        assert!(
            format!("{refused:?}").contains("not allowed"),
            "{refused:?}"
        );
    }
    // Refused, not forwarded: the backends are still alive and answer.
    for (client, name) in [(&routed, "echo"), (&unified, "t___echo")] {
        let ok = client
            .call_tool(
                CallToolRequestParams::new(name).with_arguments(args(json!({"message": "x"}))),
            )
            .await
            .unwrap();
        assert_eq!(text_of(&ok), "x");
    }
    drop((routed, unified));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unified_sessions_have_their_own_processes_and_delete_ends_them_all() {
    let gw = Gateway::start(&format!(
        "{FAST_GATEWAY}{}{}",
        test_server("a", &[]),
        test_server("b", &[])
    ))
    .await;
    let one = rmcp_client(&unified_url(&gw)).await;
    let two = rmcp_client(&unified_url(&gw)).await;
    let pids_one = [
        tool_pid(&one, "a___pid").await,
        tool_pid(&one, "b___pid").await,
    ];
    let pids_two = [
        tool_pid(&two, "a___pid").await,
        tool_pid(&two, "b___pid").await,
    ];
    assert_ne!(pids_one[0], pids_one[1]);
    assert!(
        pids_one.iter().all(|p| !pids_two.contains(p)),
        "sessions do not share processes"
    );
    let mut one = one;
    one.close().await.unwrap();
    wait_until("the closed session's backends are gone", || {
        pids_one.iter().all(|p| !process_exists(*p))
    })
    .await;
    assert!(pids_two.iter().all(|p| process_alive(*p)));
    drop(two);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_clients_use_the_unified_endpoint() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    for major in [1, 2] {
        let out = python_client_with(major, &unified_url(&gw), "basic", "t___").await;
        assert_eq!(out["server_name"], "mcpgate", "{out}");
        assert_eq!(out["echo"], "héllo");
        assert_eq!(out["pids"][0], out["pids"][1]);
        let tools = out["tools"].as_array().unwrap();
        assert!(
            tools
                .iter()
                .all(|t| t.as_str().unwrap().starts_with("t___")),
            "{out}"
        );
    }
    gw.stop().await;
}

/// A resource two servers offer is listed once, from the server first in the
/// config (the one that serves it), and the conflict is logged once, naming
/// that server first, however often the client lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_two_servers_offer_is_listed_once_and_warned_of_once() {
    let gw = Gateway::start(&format!(
        "{FAST_GATEWAY}{}{}",
        test_server("b", &[]),
        test_server("a", &[])
    ))
    .await;
    let session = gw.open_session("").await;
    for _ in 0..3 {
        let answer = answer_of(
            gw.post(
                "",
                Some(&session),
                r#"{"jsonrpc":"2.0","id":"r","method":"resources/list"}"#,
                &[],
            )
            .await,
        )
        .await;
        let uris: Vec<&str> = answer["result"]["resources"]
            .as_array()
            .unwrap_or_else(|| panic!("{answer}"))
            .iter()
            .map(|r| r["uri"].as_str().unwrap())
            .collect();
        assert_eq!(uris, ["test://mcpgate/static"], "{answer}");
    }
    let warned: Vec<String> = gw
        .log()
        .into_iter()
        .filter(|l| l.contains("two servers offer the same resource"))
        .collect();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0].contains("first=b") && warned[0].contains("also=a"),
        "the first in the config is named first: {warned:?}"
    );
    assert_eq!(gw.delete("", &session).await, 200);
    gw.stop().await;
}
