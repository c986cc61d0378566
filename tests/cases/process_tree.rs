//! Process trees: what happens to a backend's descendants.
//!
//! Every backend runs under a supervisor (the gateway's own binary in a hidden
//! mode): the gateway's child, leader of the backend's process group, and a
//! subreaper for the backend's descendants. These tests check that no
//! descendant outlives its session or the gateway, however either ends.

use std::os::unix::fs::PermissionsExt;

use serde_json::json;

use crate::common::*;

/// Fields of `/proc/<pid>/stat` after the command name: 0 state, 1 ppid,
/// 2 pgrp, 3 session, 38 scheduling policy.
fn stat_field(pid: u32, index: usize) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(index)?
        .parse()
        .ok()
}

fn parent_of(pid: u32) -> u32 {
    stat_field(pid, 1).unwrap_or_else(|| panic!("no parent for {pid}"))
}

fn group_of(pid: u32) -> u32 {
    stat_field(pid, 2).unwrap_or_else(|| panic!("no process group for {pid}"))
}

fn session_of(pid: u32) -> u32 {
    stat_field(pid, 3).unwrap_or_else(|| panic!("no session for {pid}"))
}

/// The backend of `session` and its supervisor, checked to be laid out as
/// designed: gateway -> supervisor (group leader) -> backend (same group).
async fn backend_and_supervisor(gw: &Gateway, server: &str, session: &str) -> (u32, u32) {
    let backend = gw.backend_pid(server, session).await;
    let supervisor = parent_of(backend);
    assert_ne!(supervisor, gw.pid, "the backend runs under a supervisor");
    assert_eq!(
        parent_of(supervisor),
        gw.pid,
        "the supervisor is the gateway's child"
    );
    assert_eq!(
        group_of(supervisor),
        supervisor,
        "the supervisor leads the group"
    );
    assert_eq!(group_of(backend), supervisor, "the backend is in its group");
    (backend, supervisor)
}

fn policy_of(pid: u32) -> u32 {
    stat_field(pid, 38).unwrap_or_else(|| panic!("no scheduling policy for {pid}"))
}

async fn spawn_grandchild(gw: &Gateway, server: &str, session: &str) -> u32 {
    let answer = gw
        .call_tool(server, session, "g", "spawn_grandchild", json!({}))
        .await;
    answer["result"]["structuredContent"]["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("spawn_grandchild answer: {answer}")) as u32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_with_sigkill_leaves_no_backend_and_no_grandchild() {
    let mut gw = Gateway::start(&format!(
        "{FAST_GATEWAY}{}",
        test_server("t", &["--ignore-stdin-eof"])
    ))
    .await;
    let session = gw.open_session("t").await;
    let (backend, supervisor) = backend_and_supervisor(&gw, "t", &session).await;
    let grandchild = spawn_grandchild(&gw, "t", &session).await;
    assert_eq!(group_of(grandchild), supervisor);

    gw.signal(libc::SIGKILL);
    gw.wait_exit().await;
    // The backend and the grandchild are reaped by the supervisor; the
    // supervisor itself, orphaned, is reaped by whoever adopted it.
    wait_until(
        "the backend, the grandchild and the supervisor are gone",
        || !process_exists(backend) && !process_exists(grandchild) && !process_alive(supervisor),
    )
    .await;
    gw.assert_no_leftovers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grandchild_left_behind_by_an_exited_backend_is_stopped_and_reaped() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    let session = gw.open_session("t").await;
    let (backend, supervisor) = backend_and_supervisor(&gw, "t", &session).await;
    let grandchild = spawn_grandchild(&gw, "t", &session).await;

    let answer = gw
        .call_tool("t", &session, "c", "crash", json!({"code": 7}))
        .await;
    // The supervisor reports the backend's own exit status.
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("exit status: 7"), "{answer}");
    // Nothing of that tree is left, not even a zombie.
    wait_until("the crashed backend's whole tree is gone", || {
        !process_exists(grandchild) && !process_exists(backend) && !process_exists(supervisor)
    })
    .await;
    assert!(children_of(gw.pid).is_empty(), "{:?}", children_of(gw.pid));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_descendant_that_left_the_process_group_is_still_stopped() {
    // The backend is the test server, exec'd by a shell that first started
    // `sleep 3600` in a session (and process group) of its own.
    let server = |id: &str, extra: &str| {
        format!(
            "[servers.{id}]\ncommand = \"sh\"\nargs = [\"-c\", {:?}, {:?}]\nenv = {{ MCPGATE_TEST_TAG = \"\" }}\n",
            format!("setsid sleep 3600 & exec \"$0\" {extra}"),
            test_server_path(),
        )
    };
    let mut gw = Gateway::start(&format!(
        "{FAST_GATEWAY}{}{}",
        server("quits", ""),
        server("stays", "--ignore-stdin-eof")
    ))
    .await;
    let mut escapees = Vec::new();
    let mut sessions = Vec::new();
    for id in ["quits", "stays"] {
        let session = gw.open_session(id).await;
        let (backend, supervisor) = backend_and_supervisor(&gw, id, &session).await;
        let mut escapee = None;
        wait_until("the backend's child has left the process group", || {
            escapee = children_of(backend).into_iter().find(|p| {
                std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c == b"sleep\x003600\x00")
                    && stat_field(*p, 2).is_some_and(|g| g != supervisor)
            });
            escapee.is_some()
        })
        .await;
        let escapee = escapee.unwrap();
        assert_eq!(
            session_of(escapee),
            escapee,
            "the sleep leads a session of its own"
        );
        escapees.push(escapee);
        sessions.push(session);
    }

    // A DELETE answers once the whole tree is gone, the escapee included
    // (SIGTERMed by the supervisor once it is reparented to it).
    assert_eq!(gw.delete("quits", &sessions[0]).await, 200);
    assert!(
        !process_exists(escapees[0]),
        "the escapee {} outlived DELETE",
        escapees[0]
    );

    // And the gateway's death by SIGKILL ends the other tree too.
    gw.signal(libc::SIGKILL);
    gw.wait_exit().await;
    wait_until(
        "the escapee of the killed gateway's backend is gone",
        || !process_exists(escapees[1]),
    )
    .await;
    gw.assert_no_leftovers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_cannot_be_executed_is_reported_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("not-executable");
    std::fs::write(&plain, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = format!(
        "{FAST_GATEWAY}[servers.plain]\ncommand = {:?}\n[servers.nowhere]\ncommand = \"mcpgate-no-such-command\"\n{}",
        plain.to_str().unwrap(),
        test_server("t", &[])
    );
    let gw = Gateway::start(&config).await;
    // Both are warned of at start, before any client asks.
    gw.wait_for_log(&["command cannot be found", "server=plain"])
        .await;
    gw.wait_for_log(&["command cannot be found", "server=nowhere"])
        .await;
    for (server, expected) in [
        ("plain", [plain.to_str().unwrap(), "Permission denied"]),
        ("nowhere", ["mcpgate-no-such-command", "the backend's PATH"]),
    ] {
        let response = gw.post(server, None, &initialize_body("1"), &[]).await;
        assert_eq!(response.status(), 200);
        assert!(response.headers().get("mcp-session-id").is_none());
        let body: serde_json::Value = response.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            expected.iter().all(|part| message.contains(part)),
            "{server}: {body}"
        );
        // The client is not shown the gateway's PATH.
        let path = std::env::var("PATH").unwrap();
        assert!(
            !body.to_string().contains("PATH=") && !body.to_string().contains(&path),
            "{server}: {body}"
        );
    }
    assert!(children_of(gw.pid).is_empty(), "nothing was started");
    // Other servers still work.
    let session = gw.open_session("t").await;
    assert!(gw.backend_pid("t", &session).await > 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_run_under_sched_batch_unless_configured_normal() {
    let gw = Gateway::start(&format!(
        "{FAST_GATEWAY}{}{}scheduling = \"normal\"\n",
        test_server("b", &[]),
        test_server("n", &[])
    ))
    .await;
    for (server, policy) in [("b", libc::SCHED_BATCH), ("n", libc::SCHED_OTHER)] {
        let session = gw.open_session(server).await;
        let (backend, supervisor) = backend_and_supervisor(&gw, server, &session).await;
        let grandchild = spawn_grandchild(&gw, server, &session).await;
        for pid in [supervisor, backend, grandchild] {
            assert_eq!(policy_of(pid), policy as u32, "{server}: policy of {pid}");
        }
    }
    assert_eq!(
        policy_of(gw.pid),
        libc::SCHED_OTHER as u32,
        "the gateway's own"
    );
    gw.stop().await;
}
