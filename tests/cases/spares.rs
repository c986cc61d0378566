//! Warm spares: processes of a server started ahead of any session, taken by
//! the sessions born afterwards (routed, unified, stateless callers, a
//! relaunch after a crash), replaced, recycled, and stopped with their trees
//! by a reload, at shutdown, and by the gateway's death.

use std::time::Instant;

use serde_json::{Value, json};

use crate::cases::stateless::Stateless;
use crate::common::*;

const ADMIN: &str = "Bearer admin-key-0123456789";

/// `[gateway]` with the admin API on (it lists the spares).
fn gateway() -> String {
    format!("{FAST_GATEWAY}admin_key = \"admin-key-0123456789\"\n")
}

/// A test server block keeping `spares` spares, warmed as `warm` says.
fn spared(id: &str, args: &[&str], spares: usize, warm: &str) -> String {
    format!(
        "{}warm_spares = {spares}\nwarm = \"{warm}\"\n",
        test_server(id, args)
    )
}

/// The spares of `server` the admin table lists now.
async fn spares_of(gw: &Gateway, server: &str) -> Vec<Value> {
    let table = gw.admin_sessions(ADMIN).await;
    table["spares"]
        .as_array()
        .unwrap_or_else(|| panic!("{table}"))
        .iter()
        .filter(|s| s["server"] == server)
        .cloned()
        .collect()
}

/// `/readyz`'s record of `server`.
async fn readyz_of(gw: &Gateway, server: &str) -> Value {
    let readyz: Value = serde_json::from_str(&gw.get_text("/readyz").await).unwrap();
    readyz["servers"][server].clone()
}

/// Waits until `server` has `n` ready spares and none starting; returns
/// their pids (each its supervisor's: the backend is its child).
async fn ready_spares(gw: &Gateway, server: &str, n: usize) -> Vec<u32> {
    let start = Instant::now();
    loop {
        let spares = spares_of(gw, server).await;
        if spares.len() == n && spares.iter().all(|s| s["ready"] == true) {
            return spares
                .iter()
                .map(|s| s["pid"].as_u64().unwrap() as u32)
                .collect();
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for {n} ready spares of {server}: {spares:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// True when `backend` runs under the spare whose supervisor is `spare`.
fn runs_under(backend: u32, spare: u32) -> bool {
    children_of(spare).contains(&backend)
}

/// The pid the test server behind `tool` (maybe prefixed) reports.
async fn pid_via(gw: &Gateway, endpoint: &str, session: &str, tool: &str) -> u32 {
    let answer = gw.call_tool(endpoint, session, "p", tool, json!({})).await;
    answer["result"]["structuredContent"]["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("pid answer: {answer}")) as u32
}

/// What the test server saw in its `initialize`.
async fn initialize_seen(gw: &Gateway, server: &str, session: &str) -> Value {
    let answer = gw
        .call_tool(server, session, "i", "client_info", json!({}))
        .await;
    answer["result"]["structuredContent"]["initializeParams"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_session_takes_a_ready_spare_with_its_own_initialize_and_the_spare_is_replaced() {
    let gw = Gateway::start(&format!(
        "{}{}",
        gateway(),
        spared("t", &["--slow-start-ms", "300"], 1, "started")
    ))
    .await;
    let first = ready_spares(&gw, "t", 1).await;
    gw.wait_for_log(&["warm spares ready", "server=t", "took_ms="])
        .await;
    let warm = readyz_of(&gw, "t").await;
    assert_eq!(warm["spares"]["state"], "warm", "{warm}");
    assert_eq!(warm["spares"]["wanted"], 1, "{warm}");
    assert_eq!(warm["processes"], 0, "a spare is not a session's process");

    let session = gw.open_session("t").await;
    let backend = gw.backend_pid("t", &session).await;
    assert!(runs_under(backend, first[0]), "the session got the spare");
    // The spare's handshake was the client's own: it saw the client's
    // capabilities and clientInfo, and the initialized notification once.
    let seen = initialize_seen(&gw, "t", &session).await;
    assert_eq!(seen["clientInfo"]["name"], "mcpgate-tests", "{seen}");
    assert_eq!(seen["capabilities"]["sampling"], json!({}), "{seen}");

    // A replacement is started and readied.
    let second = ready_spares(&gw, "t", 1).await;
    assert_ne!(second, first);
    let record = readyz_of(&gw, "t").await;
    assert_eq!(record["spares"]["claims"], 1, "{record}");
    assert_eq!(record["spares"]["misses"], 0, "{record}");
    let metrics = gw.get_text("/metrics").await;
    assert!(
        metrics.contains("mcpgate_spare_claims_total{server=\"t\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mcpgate_spares_ready{server=\"t\"} 1"),
        "{metrics}"
    );

    assert_eq!(gw.delete("t", &session).await, 200);
    wait_until("the session's process is stopped", || {
        !process_alive(backend)
    })
    .await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spare_that_cannot_start_is_retried_with_backoff_until_the_breaker_stops_it() {
    let gw = Gateway::start(&format!(
        "{}crash_loop_restarts = 3\ncrash_loop_window = \"60s\"\n{}",
        gateway(),
        spared("t", &["--exit-on-start", "7"], 1, "started")
    ))
    .await;
    let start = Instant::now();
    let record = loop {
        let record = readyz_of(&gw, "t").await;
        if record["crash_loop"]["open"] == true {
            break record;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the breaker never opened: {record}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    // Three failures opened the breaker, and with it open no fourth spare
    // is started for the window's whole minute: the server does not spin.
    assert_eq!(record["spawn_failures"], 3, "{record}");
    assert_eq!(record["spares"]["ready"], 0, "{record}");
    assert_eq!(record["spares"]["state"], "warming", "{record}");
    assert_eq!(record["state"], "crash-loop", "{record}");
    let log = gw.wait_for_log(&["a warm spare failed"]).await;
    assert!(log.contains("next_in_ms"), "{log}");
    assert_eq!(
        gw.log()
            .iter()
            .filter(|l| l.contains("warm spare spawned"))
            .count(),
        3
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_spare_that_dies_is_replaced() {
    let gw = Gateway::start(&format!("{}{}", gateway(), spared("t", &[], 1, "started"))).await;
    let first = ready_spares(&gw, "t", 1).await[0];
    let backend = children_of(first)[0];
    // SAFETY: kill(2) with a pid of a process this test's gateway started.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(backend as i32, libc::SIGKILL)
    };
    wait_until("the dead spare's supervisor is gone", || {
        !process_alive(first)
    })
    .await;
    let second = ready_spares(&gw, "t", 1).await[0];
    assert_ne!(second, first);
    gw.wait_for_log(&["a warm spare failed", "exited on its own"])
        .await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_starts_replaces_and_stops_spares_and_shutdown_stops_every_one() {
    let config = |servers: &str| format!("{}{servers}", gateway());
    let gw = Gateway::start(&config(&format!(
        "{}{}",
        spared("a", &[], 1, "started"),
        spared("b", &[], 1, "started")
    )))
    .await;
    let a = ready_spares(&gw, "a", 1).await;
    let b = ready_spares(&gw, "b", 1).await;

    // `a` unchanged, `b` changed, `c` added.
    std::fs::write(
        &gw.config_path,
        config(&format!(
            "{}{}{}",
            spared("a", &[], 1, "started"),
            spared("b", &["--stderr-noise"], 1, "started"),
            spared("c", &[], 2, "started")
        )),
    )
    .unwrap();
    gw.signal(libc::SIGHUP);
    gw.wait_for_log(&["configuration reloaded"]).await;
    wait_until("the changed server's old spare is stopped", || {
        !process_alive(b[0])
    })
    .await;
    let b2 = ready_spares(&gw, "b", 1).await;
    assert_ne!(b2, b);
    assert_eq!(
        ready_spares(&gw, "a", 1).await,
        a,
        "an unchanged spare stays"
    );
    let c = ready_spares(&gw, "c", 2).await;

    // `c` removed again: its spares' trees are stopped.
    std::fs::write(
        &gw.config_path,
        config(&format!(
            "{}{}",
            spared("a", &[], 1, "started"),
            spared("b", &["--stderr-noise"], 1, "started")
        )),
    )
    .unwrap();
    gw.signal(libc::SIGHUP);
    wait_until("the removed server's spares are stopped", || {
        c.iter().all(|pid| !process_alive(*pid))
    })
    .await;
    assert!(spares_of(&gw, "c").await.is_empty());
    assert_eq!(
        readyz_of(&gw, "c").await,
        Value::Null,
        "the removed server is gone"
    );
    // Shutdown stops the spares left, trees and all (`stop` checks).
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_initialized_spare_answers_initialize_from_its_own_handshake_and_says_what_that_trades()
{
    let gw = Gateway::start(&format!(
        "{}{}",
        gateway(),
        spared("t", &["--ask-roots-on-initialized"], 1, "initialized")
    ))
    .await;
    let spare = ready_spares(&gw, "t", 1).await;
    // What the backend asked as it started had no client to go to.
    gw.wait_for_log(&["roots/list at start was answered", "warm spare"])
        .await;

    let session = gw.open_session_speaking("t", PROTOCOL).await;
    let backend = gw.backend_pid("t", &session).await;
    assert!(runs_under(backend, spare[0]), "the session got the spare");
    // The backend saw the gateway's initialize, not the client's.
    let seen = initialize_seen(&gw, "t", &session).await;
    assert_eq!(seen["clientInfo"]["name"], "mcpgate", "{seen}");
    assert!(seen["capabilities"]["elicitation"].is_object(), "{seen}");
    // So a request for a capability this client did not declare (the tests'
    // client declares roots and sampling) is refused, saying why.
    let asked = gw
        .call_tool(
            "t",
            &session,
            "e",
            "ask_client",
            json!({"method": "elicitation/create", "params": {"message": "name?", "requestedSchema": {"type": "object", "properties": {}}}}),
        )
        .await;
    let response = asked["result"]["structuredContent"]["response"].to_string();
    assert!(
        response.contains("did not declare the elicitation capability")
            && response.contains("warm = \\\"initialized\\\""),
        "{asked}"
    );

    // A client asking for another version than the spare was initialized
    // with gets a process of its own, with its own handshake.
    let older = gw.open_session_speaking("t", "2025-03-26").await;
    let seen = initialize_seen(&gw, "t", &older).await;
    assert_eq!(seen["protocolVersion"], "2025-03-26", "{seen}");
    assert_eq!(seen["clientInfo"]["name"], "mcpgate-tests", "{seen}");
    let record = readyz_of(&gw, "t").await;
    assert_eq!(record["spares"]["claims"], 1, "{record}");
    assert_eq!(record["spares"]["misses"], 1, "{record}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unified_sessions_stateless_callers_and_relaunches_take_spares_too() {
    let gw = Gateway::start(&format!(
        "{}{}{}",
        gateway(),
        spared("a", &[], 1, "started"),
        spared("b", &[], 1, "started")
    ))
    .await;
    // A unified session starts every backend at initialize: each a spare.
    let (a, b) = (
        ready_spares(&gw, "a", 1).await,
        ready_spares(&gw, "b", 1).await,
    );
    let unified = gw.open_session("").await;
    assert!(runs_under(
        pid_via(&gw, "", &unified, "a___pid").await,
        a[0]
    ));
    assert!(runs_under(
        pid_via(&gw, "", &unified, "b___pid").await,
        b[0]
    ));

    // A stateless caller's first request opens its process: a spare.
    let a = ready_spares(&gw, "a", 1).await;
    let (status, answer) = Stateless::new(1, "tools/call", json!({"name": "pid", "arguments": {}}))
        .to("a")
        .send(&gw)
        .await;
    assert_eq!(status, 200, "{answer}");
    let caller = answer["result"]["structuredContent"]["pid"]
        .as_u64()
        .unwrap() as u32;
    assert!(runs_under(caller, a[0]), "the caller got the spare");

    // A session whose process crashed is relaunched on a spare.
    let a = ready_spares(&gw, "a", 1).await;
    let routed = gw.open_session("a").await;
    let before = gw.backend_pid("a", &routed).await;
    assert!(runs_under(before, a[0]));
    let a = ready_spares(&gw, "a", 1).await;
    let _ = gw.call_tool("a", &routed, "c", "crash", json!({})).await;
    let after = gw.backend_pid("a", &routed).await;
    assert_ne!(after, before);
    assert!(runs_under(after, a[0]), "the relaunch got the spare");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_with_sigkill_leaves_no_spare_behind() {
    let mut gw = Gateway::start(&format!("{}{}", gateway(), spared("t", &[], 2, "started"))).await;
    let spares = ready_spares(&gw, "t", 2).await;
    let backends: Vec<u32> = spares.iter().flat_map(|s| children_of(*s)).collect();
    assert_eq!(backends.len(), 2);
    gw.signal(libc::SIGKILL);
    gw.wait_exit().await;
    wait_until("every spare's backend and supervisor is gone", || {
        backends.iter().all(|p| !process_exists(*p)) && spares.iter().all(|p| !process_alive(*p))
    })
    .await;
    gw.assert_no_leftovers().await;
}

/// The first spare runs the server's command when the gateway starts, before
/// any client: what the command fetches on its first run (`npx -y`, `uvx`
/// filling their caches) is fetched then. The command here stands in for
/// such a download by leaving a file behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_spare_runs_the_command_at_start_before_any_client() {
    let dir = tempfile::tempdir().unwrap();
    let fetched = dir.path().join("fetched-on-first-run");
    let script = format!("touch {} && exec {}", fetched.display(), test_server_path());
    let gw = Gateway::start(&format!(
        "{}[servers.t]\ncommand = \"/bin/sh\"\nargs = [\"-c\", {script:?}]\nenv = {{ MCPGATE_TEST_TAG = \"\" }}\nwarm_spares = 1\n",
        gateway()
    ))
    .await;
    ready_spares(&gw, "t", 1).await;
    assert!(fetched.exists(), "the spare ran the command");
    let table = gw.admin_sessions(ADMIN).await;
    assert_eq!(table["sessions"], json!([]), "no client came yet");
    gw.stop().await;
}

/// `max_spares` caps the spares of all servers together: two servers that
/// want two each share two places, and a place a session frees is filled
/// again, never past the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_spares_caps_the_spares_of_every_server_together() {
    let gw = Gateway::start(&format!(
        "{}max_spares = 2\n{}{}",
        gateway(),
        spared("a", &[], 2, "started"),
        spared("b", &[], 2, "started")
    ))
    .await;
    for round in 0..2 {
        let start = Instant::now();
        let spares = loop {
            let table = gw.admin_sessions(ADMIN).await;
            let spares = table["spares"].as_array().unwrap().clone();
            if spares.len() >= 2 && spares.iter().all(|s| s["ready"] == true) {
                break spares;
            }
            assert!(start.elapsed() < DEADLINE, "round {round}: {spares:?}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert_eq!(spares.len(), 2, "round {round}: {spares:?}");
        let wanted = readyz_of(&gw, "a").await["spares"]["wanted"]
            .as_u64()
            .unwrap()
            + readyz_of(&gw, "b").await["spares"]["wanted"]
                .as_u64()
                .unwrap();
        assert_eq!(wanted, 4, "both servers still want theirs");
        if round == 0 {
            // A session takes one; its place is filled again.
            let server = spares[0]["server"].as_str().unwrap();
            let session = gw.open_session(server).await;
            let backend = gw.backend_pid(server, &session).await;
            assert!(runs_under(
                backend,
                spares[0]["pid"].as_u64().unwrap() as u32
            ));
        }
    }
    gw.stop().await;
}

/// A ready spare older than `spare_max_age` is stopped and replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spare_older_than_spare_max_age_is_recycled() {
    let gw = Gateway::start(&format!(
        "{}{}spare_max_age = \"1s\"\n",
        gateway(),
        spared("t", &[], 1, "started")
    ))
    .await;
    let first = ready_spares(&gw, "t", 1).await[0];
    wait_until("the old spare is stopped", || !process_alive(first)).await;
    let second = ready_spares(&gw, "t", 1).await[0];
    assert_ne!(second, first);
    gw.wait_for_log(&["reason=\"spare recycled\""]).await;
    gw.stop().await;
}
