//! Sessions and their backend processes: one process per session, reused for
//! every request of that session, ended with the whole process group.

use std::collections::HashSet;

use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_get_two_processes_and_each_session_keeps_its_own() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    let a = gw.open_session("t").await;
    let b = gw.open_session("t").await;
    assert_ne!(a, b);
    let pid_a = gw.backend_pid("t", &a).await;
    let pid_b = gw.backend_pid("t", &b).await;
    assert_ne!(pid_a, pid_b, "each session has its own backend process");
    for _ in 0..10 {
        assert_eq!(gw.backend_pid("t", &a).await, pid_a);
        assert_eq!(gw.backend_pid("t", &b).await, pid_b);
    }
    // The backend runs under its supervisor (the gateway's child), in the
    // process group the supervisor leads.
    let stat_of = |pid: u32| -> Vec<String> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields = stat.rsplit_once(')').unwrap().1.split_whitespace();
        fields.map(str::to_owned).collect()
    };
    let backend = stat_of(pid_a);
    let supervisor = &backend[1];
    assert_ne!(
        supervisor,
        &gw.pid.to_string(),
        "the backend has a supervisor"
    );
    assert_eq!(
        stat_of(supervisor.parse().unwrap())[1],
        gw.pid.to_string(),
        "the supervisor's parent is the gateway"
    );
    assert_eq!(
        &backend[2], supervisor,
        "process group id is the supervisor's pid"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_requests_in_one_session_each_get_their_own_answer() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    let session = gw.open_session("t").await;
    let pid = gw.backend_pid("t", &session).await;
    // The same client ids in a second session must not collide with the first.
    let other = gw.open_session("t").await;
    let calls = (0..50).flat_map(|i| {
        [(&session, i), (&other, i)].map(|(s, i)| {
            let gw = &gw;
            async move {
                let answer = gw
                    .call_tool(
                        "t",
                        s,
                        &format!("req-{i}"),
                        "echo",
                        json!({"message": format!("{s}:{i}")}),
                    )
                    .await;
                (s.clone(), i, answer)
            }
        })
    });
    let answers = futures_util::future::join_all(calls).await;
    assert_eq!(answers.len(), 100);
    for (s, i, answer) in answers {
        assert_eq!(answer["id"], format!("req-{i}"));
        assert_eq!(
            answer["result"]["content"][0]["text"],
            format!("{s}:{i}"),
            "{answer}"
        );
    }
    assert_eq!(
        gw.backend_pid("t", &session).await,
        pid,
        "still the same process"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_ends_the_backend_and_its_grandchildren_and_the_session() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    let session = gw.open_session("t").await;
    let keep = gw.open_session("t").await;
    let pid = gw.backend_pid("t", &session).await;
    let answer = gw
        .call_tool("t", &session, "g", "spawn_grandchild", json!({}))
        .await;
    let grandchild = answer["result"]["structuredContent"]["pid"]
        .as_u64()
        .unwrap() as u32;
    assert!(process_alive(pid) && process_alive(grandchild));

    assert_eq!(gw.delete("t", &session).await, 200);
    // DELETE answers after the process tree is gone, zombies reaped.
    assert!(
        !process_exists(pid),
        "backend {pid} still exists after DELETE"
    );
    wait_until("the grandchild is gone", || !process_exists(grandchild)).await;
    gw.assert_session_gone("t", &session).await;
    assert_eq!(gw.delete("t", &session).await, 404);
    // The other session is untouched.
    let other_pid = gw.backend_pid("t", &keep).await;
    assert!(process_alive(other_pid));
    // The gateway's only child is the other backend's supervisor.
    let supervisors = children_of(gw.pid);
    assert_eq!(supervisors.len(), 1, "{supervisors:?}");
    assert_eq!(children_of(supervisors[0]), vec![other_pid]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_escalates_to_sigterm_and_sigkill_for_backends_that_ignore_eof() {
    let config = format!(
        "{FAST_GATEWAY}{}{}",
        test_server("stubborn", &["--ignore-stdin-eof"]),
        test_server("deaf", &["--ignore-stdin-eof", "--ignore-sigterm"]),
    );
    let gw = Gateway::start(&config).await;
    for server in ["stubborn", "deaf"] {
        let session = gw.open_session(server).await;
        let pid = gw.backend_pid(server, &session).await;
        assert_eq!(gw.delete(server, &session).await, 200);
        assert!(
            !process_exists(pid),
            "{server} backend {pid} survived DELETE"
        );
    }
    gw.wait_for_log(&["backend stopped", "stubborn", "Terminated"])
        .await;
    gw.wait_for_log(&["backend stopped", "deaf", "Killed"])
        .await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_every_backend_tree_and_exits_zero() {
    let config = format!(
        "{FAST_GATEWAY}{}",
        test_server("t", &["--ignore-stdin-eof"])
    );
    let gw = Gateway::start(&config).await;
    let mut pids = HashSet::new();
    for _ in 0..3 {
        let session = gw.open_session("t").await;
        pids.insert(gw.backend_pid("t", &session).await);
        let answer = gw
            .call_tool("t", &session, "g", "spawn_grandchild", json!({}))
            .await;
        pids.insert(
            answer["result"]["structuredContent"]["pid"]
                .as_u64()
                .unwrap() as u32,
        );
    }
    assert_eq!(pids.len(), 6);
    gw.stop().await; // asserts exit 0 and no tagged process left
    for pid in pids {
        assert!(!process_alive(pid), "{pid} survived shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_die_with_the_gateway_even_when_it_is_killed_with_sigkill() {
    let gw = Gateway::start(&format!(
        "{FAST_GATEWAY}{}",
        test_server("t", &["--ignore-stdin-eof"])
    ))
    .await;
    let session = gw.open_session("t").await;
    let pid = gw.backend_pid("t", &session).await;
    let mut gw = gw;
    gw.signal(libc::SIGKILL);
    gw.wait_exit().await;
    wait_until("the backend is gone", || !process_alive(pid)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_request_finishes_during_graceful_shutdown() {
    let mut gw = Gateway::start(&format!(
        "{FAST_GATEWAY}{}",
        test_server("t", &["--stderr-noise"])
    ))
    .await;
    let session = gw.open_session("t").await;
    let slow = gw.call_tool("t", &session, "s", "sleep", json!({"ms": 700}));
    let signal = async {
        // The backend logs each request it handles: signal once this one is there.
        gw.wait_for_log(&["handling tools/call"]).await;
        gw.signal(libc::SIGTERM);
    };
    let (answer, ()) = tokio::join!(slow, signal);
    assert_eq!(
        answer["result"]["content"][0]["text"], "slept 700 ms",
        "{answer}"
    );
    let status = gw.wait_exit().await;
    assert!(status.success(), "{status}");
    gw.assert_no_leftovers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_crashes_mid_request_gives_an_error_with_exit_status_and_stderr() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    let session = gw.open_session("t").await;
    let keep = gw.open_session("t").await;
    let answer = gw
        .call_tool("t", &session, "c", "crash", json!({"code": 7}))
        .await;
    let error = &answer["error"];
    assert_eq!(error["code"], -32603, "{answer}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("exit status: 7"),
        "{answer}"
    );
    let tail = error["data"]["stderrTail"].as_array().unwrap();
    assert!(tail.iter().any(|l| l == "crash tool called"), "{answer}");
    // Everyone else is unaffected.
    let other = gw
        .call_tool("t", &keep, "e", "echo", json!({"message": "fine"}))
        .await;
    assert_eq!(other["result"]["content"][0]["text"], "fine");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_backend_never_answers_times_out_with_a_json_rpc_error() {
    let config = format!(
        "[gateway]\ntool_timeout = \"300ms\"\nstop_grace = \"500ms\"\n{}",
        test_server("t", &[])
    );
    let gw = Gateway::start(&config).await;
    let session = gw.open_session("t").await;
    let answer = gw
        .call_tool("t", &session, "slow", "sleep", json!({"ms": 60000}))
        .await;
    assert_eq!(answer["id"], "slow");
    assert_eq!(answer["error"]["code"], -32001, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("300ms"),
        "{answer}"
    );
    // The backend was told to cancel, and the session goes on.
    let ok = gw
        .call_tool("t", &session, "next", "echo", json!({"message": "after"}))
        .await;
    assert_eq!(ok["result"]["content"][0]["text"], "after");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_cannot_start_gives_initialize_a_clear_error_and_no_session() {
    let config = format!(
        "{FAST_GATEWAY}[servers.missing]\ncommand = \"/nonexistent/mcp-server\"\n{}{}",
        test_server("dies", &["--exit-on-start", "4"]),
        test_server("t", &[])
    );
    let gw = Gateway::start(&config).await;
    let response = gw.post("missing", None, &initialize_body("1"), &[]).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("mcp-session-id").is_none());
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["id"], "1");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("/nonexistent/mcp-server") && message.contains("No such file"),
        "{body}"
    );

    let response = gw.post("dies", None, &initialize_body("2"), &[]).await;
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("exit status: 4"),
        "{body}"
    );
    let tail = body["error"]["data"]["stderrTail"].as_array().unwrap();
    assert!(
        tail.iter()
            .any(|l| l.as_str().unwrap().contains("exiting on start")),
        "{body}"
    );

    // Other servers still work.
    let session = gw.open_session("t").await;
    assert!(gw.backend_pid("t", &session).await > 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_stderr_is_logged_with_server_and_session() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    let session = gw.open_session("t").await;
    gw.call_tool("t", &session, "s", "stderr", json!({"lines": 2}))
        .await;
    let line = gw.wait_for_log(&["stderr line 2"]).await;
    assert!(
        line.contains("server=t") && line.contains(&format!("session={session}")),
        "{line}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_on_a_backends_stdout_is_skipped_and_answers_still_arrive() {
    let gw = Gateway::start(&format!(
        "{FAST_GATEWAY}{}",
        test_server("t", &["--junk-stdout"])
    ))
    .await;
    let session = gw.open_session("t").await;
    let answer = gw
        .call_tool(
            "t",
            &session,
            "j",
            "echo",
            json!({"message": "through junk"}),
        )
        .await;
    assert_eq!(answer["result"]["content"][0]["text"], "through junk");
    gw.wait_for_log(&["not JSON-RPC", "this is not json"]).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_get_a_minimal_environment_plus_their_env() {
    let config = format!(
        "{FAST_GATEWAY}[servers.t]\ncommand = {:?}\nenv = {{ MCPGATE_TEST_TAG = \"\", EXTRA = \"x-${{MCPGATE_TEST_TAG}}\" }}\n",
        test_server_path()
    );
    let gw = Gateway::start(&config).await;
    let session = gw.open_session("t").await;
    let pid = gw.backend_pid("t", &session).await;
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let names: Vec<String> = environ
        .split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    for entry in &names {
        let name = entry.split('=').next().unwrap();
        assert!(
            [
                "PATH",
                "HOME",
                "LANG",
                "TMPDIR",
                "USER",
                "MCPGATE_TEST_TAG",
                "EXTRA"
            ]
            .contains(&name),
            "unexpected variable {entry}"
        );
    }
    assert!(names.contains(&format!("EXTRA=x-{}", gw.tag)), "{names:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_the_next_request_starts_a_new_process_and_replays_initialize() {
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    let session = gw.open_session("t").await;
    let first = gw.backend_pid("t", &session).await;
    let crashed = gw.call_tool("t", &session, "c", "crash", json!({})).await;
    assert!(crashed["error"].is_object(), "{crashed}");
    wait_until("the crashed backend is reaped", || !process_exists(first)).await;
    let second = gw.backend_pid("t", &session).await;
    assert_ne!(first, second);
    // The new process got the session's own initialize and one initialized.
    let seen = gw
        .call_tool("t", &session, "i", "client_info", json!({}))
        .await;
    let content = &seen["result"]["structuredContent"];
    assert_eq!(
        content["initializeParams"]["clientInfo"]["name"], "mcpgate-tests",
        "{seen}"
    );
    assert_eq!(content["initializedCount"], 1, "{seen}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_is_ended_and_its_process_stopped() {
    let config = format!(
        "[gateway]\nsession_idle_timeout = \"1s\"\ncleanup_interval = \"100ms\"\nstop_grace = \"500ms\"\n{}",
        test_server("t", &[])
    );
    let gw = Gateway::start(&config).await;
    let session = gw.open_session("t").await;
    let pid = gw.backend_pid("t", &session).await;
    wait_until("the idle session's backend is gone", || {
        !process_exists(pid)
    })
    .await;
    gw.wait_for_log(&["session ended", "idle timeout"]).await;
    gw.assert_session_gone("t", &session).await;
    gw.stop().await;
}
