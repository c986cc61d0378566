//! What an operator sees: `/readyz`, `/health`, `/metrics` after real
//! traffic, and the admin API (`admin_key`) after a crash.

use serde_json::{Value, json};

use crate::common::*;

const ADMIN: &str = "Bearer admin-key-0123456789";

/// The value of the sample `name{labels}` in a Prometheus text exposition
/// (labels in any order; only the ones given are compared).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
            if metric != name {
                return None;
            }
            let rest = rest.strip_suffix('}')?;
            let all = labels
                .iter()
                .all(|(k, v)| rest.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            all.then(|| value.parse().ok()).flatten()
        })
}

async fn get_json(gw: &Gateway, path: &str) -> Value {
    let response = gw
        .http
        .get(format!("{}{path}", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_health_and_metrics_report_real_traffic() {
    let gw = Gateway::start(&format!(
        "{FAST_GATEWAY}{}[servers.broken]\ncommand = \"/nonexistent/mcp-server\"\n",
        test_server("t", &[])
    ))
    .await;
    let session = gw.open_session("t").await;
    for i in 0..3 {
        gw.call_tool(
            "t",
            &session,
            &i.to_string(),
            "echo",
            json!({"message": "m"}),
        )
        .await;
    }
    let failed = gw.post("broken", None, &initialize_body("1"), &[]).await;
    assert_eq!(failed.status(), 200, "a JSON-RPC error, not an HTTP one");

    let ready = get_json(&gw, "/readyz").await;
    assert_eq!(ready["status"], "ready");
    let t = &ready["servers"]["t"];
    assert_eq!(t["state"], "running", "{ready}");
    assert_eq!(t["processes"], 1);
    assert_eq!(t["last_spawn"]["ok"], true);
    let broken = &ready["servers"]["broken"];
    assert_eq!(broken["state"], "failing", "{ready}");
    assert_eq!(broken["processes"], 0);
    assert_eq!(broken["last_spawn"]["ok"], false);
    assert!(
        broken["last_spawn"]["error"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/mcp-server"),
        "{ready}"
    );
    assert!(!broken["recent_errors"].as_array().unwrap().is_empty());

    let health = get_json(&gw, "/health").await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["servers"]["t"]["status"], "running");
    assert_eq!(health["servers"]["broken"]["status"], "error");

    let response = gw
        .http
        .get(format!("{}/metrics", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = response.text().await.unwrap();
    let value = |name: &str, labels: &[(&str, &str)]| {
        sample(&text, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{text}"))
    };
    assert_eq!(value("mcpgate_sessions", &[("endpoint", "t")]), 1.0);
    assert_eq!(value("mcpgate_processes", &[("server", "t")]), 1.0);
    assert_eq!(value("mcpgate_processes", &[("server", "broken")]), 0.0);
    assert_eq!(
        value(
            "mcpgate_spawns_total",
            &[("server", "t"), ("outcome", "ok")]
        ),
        1.0
    );
    assert!(
        value(
            "mcpgate_spawns_total",
            &[("server", "broken"), ("outcome", "error")]
        ) >= 1.0
    );
    assert_eq!(
        value(
            "mcpgate_request_seconds_count",
            &[("server", "t"), ("method", "tools/call")]
        ),
        3.0
    );
    assert_eq!(
        value("mcpgate_spawn_to_ready_seconds_count", &[("server", "t")]),
        1.0
    );
    assert!(value("mcpgate_errors_total", &[("kind", "launch_spawn")]) >= 1.0);
    assert!(value("mcpgate_bytes_total", &[("direction", "in")]) > 0.0);
    assert!(value("mcpgate_bytes_total", &[("direction", "out")]) > 0.0);
    assert!(!text.contains(&session), "no session id in the metrics");

    // A session ended by its client: an eviction with that reason.
    assert_eq!(gw.delete("t", &session).await, 200);
    let text = gw.get_text("/metrics").await;
    assert_eq!(
        sample(
            &text,
            "mcpgate_evictions_total",
            &[("server", "t"), ("reason", "client DELETE")]
        ),
        Some(1.0),
        "{text}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_lists_sessions_after_a_crash_and_ends_one() {
    let gw = Gateway::start(&format!(
        "{FAST_GATEWAY}admin_key = \"admin-key-0123456789\"\n{}",
        test_server("t", &["--stderr-noise"])
    ))
    .await;
    let session = gw.open_session("t").await;
    let first = gw.backend_pid("t", &session).await;
    // The backend crashes; the next request starts it again.
    let _ = gw.call_tool("t", &session, "c", "crash", json!({})).await;
    let second = gw.backend_pid("t", &session).await;
    assert_ne!(first, second);

    let admin = |auth: Option<&'static str>| {
        let mut request = gw.http.get(format!("{}/admin/sessions", gw.base));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        request.send()
    };
    assert_eq!(admin(None).await.unwrap().status(), 401);
    assert_eq!(
        admin(Some("Bearer wrong-key-0123456789"))
            .await
            .unwrap()
            .status(),
        401
    );
    let table: Value = admin(Some(ADMIN)).await.unwrap().json().await.unwrap();
    let row = table["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == session.as_str())
        .unwrap_or_else(|| panic!("{table}"))
        .clone();
    assert_eq!(row["endpoint"], "t");
    assert_eq!(row["era"], "session");
    assert!(row["requests"].as_u64().unwrap() >= 4, "{row}");
    let process = &row["processes"][0];
    // The pid is the supervisor's; the backend is its child.
    let supervisor = process["pid"].as_u64().unwrap() as u32;
    assert!(children_of(supervisor).contains(&second), "{row}");
    assert_eq!(process["restarts"], 1, "{row}");
    assert!(process["rss_kib"].as_u64().unwrap() > 0, "{row}");
    assert!(process["stderr_tail"].is_array(), "{row}");
    // /readyz remembers the crash.
    let ready = get_json(&gw, "/readyz").await;
    assert_eq!(ready["servers"]["t"]["restarts"], 1, "{ready}");
    assert!(
        ready["servers"]["t"]["recent_errors"][0]["error"]
            .as_str()
            .unwrap()
            .contains("exited"),
        "{ready}"
    );

    let ended = gw
        .http
        .delete(format!("{}/admin/sessions/{session}", gw.base))
        .header("authorization", ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), 200);
    wait_until("the backend is stopped", || !process_alive(second)).await;
    gw.assert_session_gone("t", &session).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_admin_key_the_admin_api_does_not_exist() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    let response = gw
        .http
        .get(format!("{}/admin/sessions", gw.base))
        .header("authorization", ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    gw.stop().await;
}

/// Tool names a fresh session on `server` lists.
async fn tool_names(gw: &Gateway, server: &str, session: &str) -> Vec<String> {
    let response = gw
        .post(
            server,
            Some(session),
            r#"{"jsonrpc":"2.0","id":"l","method":"tools/list"}"#,
            &[],
        )
        .await;
    let answer = answer_of(response).await;
    answer["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{answer}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_servers_added_removed_and_changed_while_other_sessions_keep_their_processes()
 {
    let server = |id: &str| test_server(id, &[]);
    let gw = Gateway::start(&format!(
        "{FAST_GATEWAY}{}{}{}",
        server("same"),
        server("gone"),
        server("changed")
    ))
    .await;
    let same = gw.open_session("same").await;
    let same_pid = gw.backend_pid("same", &same).await;
    let gone = gw.open_session("gone").await;
    let gone_pid = gw.backend_pid("gone", &gone).await;
    let changed = gw.open_session("changed").await;
    let changed_pid = gw.backend_pid("changed", &changed).await;
    assert!(tool_names(&gw, "changed", &changed).await.len() > 2);

    // `gone` removed, `new` added, `changed` limited to two tools.
    std::fs::write(
        &gw.config_path,
        format!(
            "{FAST_GATEWAY}{}{}tools = [\"echo\", \"pid\"]\n{}",
            server("same"),
            server("changed"),
            server("new")
        ),
    )
    .unwrap();
    gw.signal(libc::SIGHUP);
    gw.wait_for_log(&["configuration reloaded"]).await;

    // The unchanged server's session kept its process.
    assert_eq!(gw.backend_pid("same", &same).await, same_pid);
    // The removed server's session ended, its process tree stopped.
    wait_until("the removed server's backend is stopped", || {
        !process_alive(gone_pid)
    })
    .await;
    gw.assert_session_gone("gone", &gone).await;
    let refused = gw.post("gone", None, &initialize_body("1"), &[]).await;
    assert_eq!(refused.status(), 404, "a removed server is no route");
    // The changed server: its existing session keeps its process and its
    // settings; a new session gets the new ones.
    assert_eq!(gw.backend_pid("changed", &changed).await, changed_pid);
    assert!(tool_names(&gw, "changed", &changed).await.len() > 2);
    let fresh = gw.open_session("changed").await;
    let mut fresh_tools = tool_names(&gw, "changed", &fresh).await;
    fresh_tools.sort();
    assert_eq!(fresh_tools, ["echo", "pid"]);
    // The added server serves.
    let added = gw.open_session("new").await;
    assert!(gw.backend_pid("new", &added).await > 0);

    // A broken file is refused, and the running configuration stays.
    std::fs::write(&gw.config_path, "[servers.x]\ncommand = 42\n").unwrap();
    gw.signal(libc::SIGHUP);
    gw.wait_for_log(&["reload refused"]).await;
    assert_eq!(gw.backend_pid("same", &same).await, same_pid);
    let still = gw.open_session("new").await;
    assert!(gw.backend_pid("new", &still).await > 0);
    gw.stop().await;
}

/// Regression: the unified endpoint once read the server list loaded at start,
/// so after a reload removed `gone`, a new `/mcp` session still started it, and
/// that process outlived the session's DELETE (until the gateway stopped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_reload_removes_a_server_a_unified_session_neither_starts_nor_leaves_its_process() {
    let gw = Gateway::start(&format!(
        "{FAST_GATEWAY}{}{}",
        test_server("stay", &[]),
        test_server("gone", &[])
    ))
    .await;
    std::fs::write(
        &gw.config_path,
        format!("{FAST_GATEWAY}{}", test_server("stay", &[])),
    )
    .unwrap();
    gw.signal(libc::SIGHUP);
    gw.wait_for_log(&["configuration reloaded"]).await;

    let session = gw.open_session("").await;
    let tools = tool_names(&gw, "", &session).await;
    assert!(!tools.is_empty(), "the remaining server serves");
    assert!(
        tools.iter().all(|t| t.starts_with("stay")),
        "only the server in force is listed: {tools:?}"
    );
    assert!(!gw.leftovers().is_empty(), "the session's backend runs");
    assert_eq!(gw.delete("", &session).await, 200);
    // Every process this test caused belonged to that one session: all gone.
    wait_until("the unified session's every process is stopped", || {
        gw.leftovers().is_empty()
    })
    .await;
    gw.stop().await;
}

/// A reload that adds a server whose command cannot be found says so at once
/// (it may be installed later, so the reload goes through).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_warns_of_a_command_that_cannot_be_found() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    std::fs::write(
        &gw.config_path,
        format!(
            "{FAST_GATEWAY}{}[servers.later]\ncommand = \"mcpgate-no-such-command-xyz\"\n",
            test_server("t", &[])
        ),
    )
    .unwrap();
    gw.signal(libc::SIGHUP);
    gw.wait_for_log(&["configuration reloaded", "later"]).await;
    gw.wait_for_log(&["command cannot be found", "server=later"])
        .await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_watch_config_a_changed_file_is_reloaded_and_gateway_changes_are_refused() {
    let gw = Gateway::start(&format!(
        "[gateway]\nstop_grace = \"500ms\"\nshutdown_timeout = \"5s\"\nwatch_config = true\n{}",
        test_server("t", &[])
    ))
    .await;
    let session = gw.open_session("t").await;
    let pid = gw.backend_pid("t", &session).await;
    std::fs::write(
        &gw.config_path,
        format!(
            "[gateway]\nstop_grace = \"500ms\"\nshutdown_timeout = \"5s\"\nwatch_config = true\n{}{}",
            test_server("t", &[]),
            test_server("more", &[])
        ),
    )
    .unwrap();
    gw.wait_for_log(&["configuration reloaded", "more"]).await;
    let more = gw.open_session("more").await;
    assert!(gw.backend_pid("more", &more).await > 0);
    // [gateway] settings change only at a restart: the whole reload is refused.
    std::fs::write(
        &gw.config_path,
        format!(
            "[gateway]\nstop_grace = \"900ms\"\nshutdown_timeout = \"5s\"\nwatch_config = true\n{}",
            test_server("t", &[])
        ),
    )
    .unwrap();
    gw.wait_for_log(&["reload refused", "[gateway] settings"])
        .await;
    assert!(gw.backend_pid("more", &more).await > 0, "still served");
    assert_eq!(gw.backend_pid("t", &session).await, pid);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_has_a_line_per_request_with_caller_and_outcome_and_no_payload() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let gw = Gateway::start(&format!(
        "{FAST_GATEWAY}audit_log = {:?}\napi_keys = {{ alice = \"alice-key-0123456789\" }}\n{}",
        audit.display().to_string(),
        test_server("t", &[])
    ))
    .await;
    let alice = [("authorization", "Bearer alice-key-0123456789")];
    let init = gw.post("t", None, &initialize_body("1"), &alice).await;
    let session = init.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let call = |id: &str, tool: &str, args: Value| {
        json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":args}})
            .to_string()
    };
    let secret = "do-not-log-this-argument";
    gw.post(
        "t",
        Some(&session),
        &call("a", "echo", json!({"message": secret})),
        &alice,
    )
    .await;
    gw.post(
        "t",
        Some(&session),
        &call("b", "no_such_tool", json!({})),
        &alice,
    )
    .await;
    let lines = || -> Vec<Value> {
        std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    wait_until("two tools/call lines in the audit log", || {
        lines()
            .iter()
            .filter(|l| l["method"] == "tools/call")
            .count()
            == 2
    })
    .await;
    let calls: Vec<Value> = lines()
        .into_iter()
        .filter(|l| l["method"] == "tools/call")
        .collect();
    let echo = &calls[0];
    assert_eq!(echo["caller"], "alice");
    assert_eq!(echo["session"], session.as_str());
    assert_eq!(echo["server"], "t");
    assert_eq!(echo["tool"], "echo");
    assert_eq!(echo["outcome"], "ok");
    assert!(echo["duration_ms"].as_f64().unwrap() >= 0.0);
    assert!(echo["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(calls[1]["outcome"], "error", "{}", calls[1]);
    assert!(calls[1]["error_code"].is_i64());
    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(!text.contains(secret), "no payloads by default");
    assert!(!text.contains("alice-key-0123456789"), "no keys, ever");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn risky_settings_are_warned_about_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&format!(
        "{FAST_GATEWAY}audit_log = {:?}\naudit_payloads = true\n{}session_mode = \"shared\"\n",
        dir.path().join("audit.jsonl").display().to_string(),
        test_server("t", &[])
    ))
    .await;
    gw.wait_for_log(&["risky setting", "audit_payloads"]).await;
    gw.wait_for_log(&["risky setting", "server `t` is shared"])
        .await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_endpoints_refuse_foreign_origins_like_the_mcp_ones() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    for path in ["/readyz", "/health", "/metrics", "/admin/sessions"] {
        let response = gw
            .http
            .get(format!("{}{path}", gw.base))
            .header("origin", "http://evil.example.com")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{path}");
    }
    gw.stop().await;
}
