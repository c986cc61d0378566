//! The JSON server lists users already have: Claude Desktop's, Claude Code's
//! `.mcp.json`, Cursor's, VS Code's `mcp.json` and the agentic-workflows
//! gateway JSON, read as they are (`--config FILE.json`, `--config -`,
//! `servers_from`), and printed as TOML by `mcpgate import`.

use std::process::Command;

use serde_json::json;

use crate::common::*;

fn fixture(name: &str) -> String {
    format!(
        "{}/tests/fixtures/json-configs/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn mcpgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mcpgate"))
        .args(args)
        .env("MCPGATE_JSON_TEST_TZ", "UTC")
        .output()
        .expect("run mcpgate")
}

/// An `mcpServers` entry running the test server.
fn test_server_entry() -> serde_json::Value {
    json!({"command": test_server_path(), "env": {"MCPGATE_TEST_TAG": ""}})
}

#[test]
fn each_dialects_real_world_example_loads_with_what_cannot_be_served_named() {
    // (file, servers served, entries left out)
    let cases: [(&str, &[&str], &[&str]); 5] = [
        (
            "claude_desktop_config.json",
            &["filesystem", "memory", "time", "git"],
            &[],
        ),
        (
            "claude-code.mcp.json",
            &["everything", "api-server"],
            &["remote-docs"],
        ),
        (
            "cursor-mcp.json",
            &["sequential-thinking", "fetch"],
            &["old-one"],
        ),
        ("vscode-mcp.json", &["fetch", "time"], &["perplexity"]),
        (
            "agentic-workflows-gateway.json",
            &["safeoutputs"],
            &["github"],
        ),
    ];
    for (file, served, left_out) in cases {
        let out = mcpgate(&["check", "--config", &fixture(file)]);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{file}: {stderr}");
        let printed: toml::Table = toml::from_str(&stdout).unwrap();
        let servers = printed["servers"].as_table().unwrap();
        let ids: Vec<&str> = servers.keys().map(String::as_str).collect();
        assert_eq!(ids.len(), served.len(), "{file}: {ids:?}");
        for id in served {
            assert!(servers.contains_key(*id), "{file}: {ids:?}");
        }
        for id in left_out {
            assert!(
                stderr.contains(&format!("server `{id}` is left out")),
                "{file}: {stderr}"
            );
        }
        // Nothing secret leaks into what is printed.
        for secret in ["not-shown", "agentic-workflows-key-0123456789"] {
            assert!(
                !stdout.contains(secret) && !stderr.contains(secret),
                "{file}"
            );
        }
    }
    // The mappings: Claude Code's `${VAR:-default}` kept as written (and
    // expanded when the backend starts), the workflows' port and key.
    let out = mcpgate(&["check", "--config", &fixture("claude-code.mcp.json")]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("command = \"${MCPGATE_JSON_TEST_BIN:-api-server}\""),
        "{printed}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`api-server` is not found"), "{stderr}");
    let out = mcpgate(&[
        "check",
        "--config",
        &fixture("agentic-workflows-gateway.json"),
    ]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("listen = \"127.0.0.1:8080\""), "{printed}");
    assert!(printed.contains("gateway = \"<redacted>\""), "{printed}");
}

#[test]
fn import_prints_toml_that_check_accepts() {
    for file in ["claude_desktop_config.json", "vscode-mcp.json"] {
        let out = mcpgate(&["import", &fixture(file)]);
        assert!(out.status.success(), "{out:?}");
        let toml_text = String::from_utf8(out.stdout).unwrap();
        assert!(toml_text.starts_with("# The servers of "), "{toml_text}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("imported.toml");
        std::fs::write(&path, &toml_text).unwrap();
        let checked = mcpgate(&["check", "--config", path.to_str().unwrap()]);
        assert!(
            checked.status.success(),
            "{toml_text}\n{}",
            String::from_utf8_lossy(&checked.stderr)
        );
    }
    let out = mcpgate(&["import", &fixture("vscode-mcp.json")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("# server `perplexity` is left out"), "{text}");
    assert!(text.contains("TZ = \"${MCPGATE_JSON_TEST_TZ}\""), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_serves_a_json_config_given_as_a_file_or_on_stdin() {
    let config = json!({"mcpServers": {"t": test_server_entry()}}).to_string();
    for stdin in [false, true] {
        let gw = Gateway::start_with_files(("servers.json", &config), &[], &[], stdin).await;
        let session = gw.open_session("t").await;
        let echoed = gw
            .call_tool("t", &session, "1", "echo", json!({"message": "from json"}))
            .await;
        assert_eq!(
            echoed["result"]["content"][0]["text"], "from json",
            "stdin: {stdin}: {echoed}"
        );
        gw.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_from_serves_a_json_lists_servers_beside_the_tomls_and_a_reload_follows_it() {
    let toml_config = format!(
        "{FAST_GATEWAY}servers_from = [\"claude.json\"]\n{}",
        test_server("t", &[])
    );
    let list = |ids: &[&str]| {
        let servers: serde_json::Map<String, serde_json::Value> = ids
            .iter()
            .map(|id| (id.to_string(), test_server_entry()))
            .collect();
        json!({"mcpServers": servers}).to_string()
    };
    let gw = Gateway::start_with_files(
        ("mcpgate.toml", &toml_config),
        &[("claude.json", &list(&["j"]))],
        &[],
        false,
    )
    .await;
    for server in ["t", "j"] {
        let session = gw.open_session(server).await;
        assert!(gw.backend_pid(server, &session).await > 0);
    }
    // The JSON file gains a server; a reload serves it.
    let json_path = gw.config_path.with_file_name("claude.json");
    std::fs::write(&json_path, list(&["j", "k"])).unwrap();
    gw.signal(libc::SIGHUP);
    gw.wait_for_log(&["configuration reloaded", "added=[\"k\"]"])
        .await;
    let session = gw.open_session("k").await;
    assert!(gw.backend_pid("k", &session).await > 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_watch_config_a_change_of_a_servers_from_file_reloads() {
    let toml_config = format!(
        "{FAST_GATEWAY}watch_config = true\nservers_from = [\"claude.json\"]\n{}",
        test_server("t", &[])
    );
    let one = json!({"mcpServers": {"j": test_server_entry()}}).to_string();
    let gw = Gateway::start_with_files(
        ("mcpgate.toml", &toml_config),
        &[("claude.json", &one)],
        &[],
        false,
    )
    .await;
    let two = json!({"mcpServers": {"j": test_server_entry(), "k": test_server_entry()}});
    std::fs::write(
        gw.config_path.with_file_name("claude.json"),
        two.to_string(),
    )
    .unwrap();
    gw.wait_for_log(&["the config file changed", "reloading"])
        .await;
    gw.wait_for_log(&["configuration reloaded", "added=[\"k\"]"])
        .await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_config_reloads_on_sighup_like_a_toml_one() {
    let one = json!({"mcpServers": {"t": test_server_entry()}}).to_string();
    let gw = Gateway::start_with_files(("servers.json", &one), &[], &[], false).await;
    let two = json!({"mcpServers": {"t": test_server_entry(), "u": test_server_entry()}});
    std::fs::write(&gw.config_path, two.to_string()).unwrap();
    gw.signal(libc::SIGHUP);
    gw.wait_for_log(&["configuration reloaded", "added=[\"u\"]"])
        .await;
    let session = gw.open_session("u").await;
    assert!(gw.backend_pid("u", &session).await > 0);
    gw.stop().await;
}
