//! Backends that get stuck or lie: one that stops reading its stdin, one that
//! answers an error with `"id": null`. Each bounded, each leaving the session
//! beside it untouched.

use serde_json::{Value, json};

use crate::common::*;

/// A `tools/call` of `echo` whose message is `size` bytes.
fn big_echo(id: &str, size: usize) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": "x".repeat(size)}}})
    .to_string()
}

/// Pipes the gateway has open (each backend's stdin, stdout and stderr).
fn open_pipes(gw: &Gateway) -> usize {
    gw.open_fds("pipe:")
}

/// Posts `body` to a session and returns the JSON-RPC answer, failing the
/// test if none comes within the harness's deadline.
async fn answer(gw: &Gateway, server: &str, session: &str, body: &str) -> Value {
    let response = tokio::time::timeout(DEADLINE, gw.post(server, Some(session), body, &[]))
        .await
        .unwrap_or_else(|_| panic!("no answer within {DEADLINE:?}"));
    answer_of(response).await
}

fn error_code(answer: &Value) -> i64 {
    answer["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("not an error: {answer}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_stops_reading_its_stdin_times_out_its_requests_and_delete_still_ends_it() {
    let gw = Gateway::start(&format!(
        "{FAST_GATEWAY}tool_timeout = \"2s\"\n{}",
        test_server("t", &[])
    ))
    .await;
    let healthy = gw.open_session("t").await;
    let pipes_before = open_pipes(&gw);
    let stuck = gw.open_session("t").await;
    let stuck_pid = gw.backend_pid("t", &stuck).await;
    let stopped = gw
        .call_tool("t", &stuck, "s", "stop_reading", json!({"ms": 600_000}))
        .await;
    assert!(stopped["result"].is_object(), "{stopped}");

    // 200 KB cannot fit the pipe: the write blocks, inside the deadline.
    let big_call = big_echo("big", 200_000);
    let (big, small) = tokio::join!(answer(&gw, "t", &stuck, &big_call), async {
        // Queued behind the big one.
        gw.wait_for_log(&["not reading stdin for 600000 ms"]).await;
        answer(&gw, "t", &stuck, &big_echo("small", 10)).await
    });
    // Both get -32001 within the deadline; the big one's line never got
    // all the way into the pipe, and the error says so. (The small one may
    // have fitted in the pipe's buffer before the big one: then the backend
    // simply did not answer.)
    assert_eq!(error_code(&small), -32001, "{small}");
    assert_eq!(error_code(&big), -32001, "{big}");
    let message = big["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("did not read the request from its stdin"),
        "{big}"
    );
    // The session beside it is served all along.
    let echoed = gw
        .call_tool("t", &healthy, "h", "echo", json!({"message": "fine"}))
        .await;
    assert_eq!(echoed["result"]["content"][0]["text"], "fine", "{echoed}");

    // DELETE ends the stuck backend whatever it is doing.
    let status = tokio::time::timeout(DEADLINE, gw.delete("t", &stuck))
        .await
        .expect("DELETE answered");
    assert_eq!(status, 200);
    wait_until("the stuck backend is stopped", || !process_alive(stuck_pid)).await;
    // Its pipes are closed with it, the one stuck mid-write included.
    wait_until("the stuck backend's pipes are closed", || {
        open_pipes(&gw) <= pipes_before
    })
    .await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_not_reading_holds_at_most_max_message_bytes_and_is_evicted_after_its_errors() {
    let gw = Gateway::start(&format!(
        "{FAST_GATEWAY}admin_key = \"admin-key-0123456789\"\ntool_timeout = \"2s\"\nmax_message_bytes = \"256KiB\"\nmax_consecutive_errors = 2\n{}",
        test_server("t", &[])
    ))
    .await;
    let session = gw.open_session("t").await;
    let first_pid = gw.backend_pid("t", &session).await;
    gw.call_tool("t", &session, "s", "stop_reading", json!({"ms": 600_000}))
        .await;
    let first_call = big_echo("a", 200_000);
    let (blocked, refused) = tokio::join!(answer(&gw, "t", &session, &first_call), async {
        // Sent once the first is waiting for the pipe: its 200 KB would
        // take what waits past 256 KiB, so it is refused at once.
        let start = std::time::Instant::now();
        while stdin_waiting(&gw).await < 100_000 {
            assert!(start.elapsed() < DEADLINE, "the first call never waited");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        answer(&gw, "t", &session, &big_echo("b", 200_000)).await
    });
    assert_eq!(error_code(&blocked), -32001, "{blocked}");
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("not reading its stdin") && message.contains("bytes are already waiting"),
        "{refused}"
    );
    // Two failures in a row: the connection was evicted, its tree stopped,
    // and the session's next request starts a fresh process.
    wait_until("the stuck backend is evicted", || !process_alive(first_pid)).await;
    let second_pid = gw.backend_pid("t", &session).await;
    assert_ne!(second_pid, first_pid);
    gw.stop().await;
}

/// The bytes waiting for backends' stdin, as the admin table shows them.
async fn stdin_waiting(gw: &Gateway) -> u64 {
    let table = gw.admin_sessions("Bearer admin-key-0123456789").await;
    table["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["processes"].as_array().unwrap().clone())
        .map(|p| p["stdin_waiting_bytes"].as_u64().unwrap())
        .sum()
}

/// A `tools/call` of `echo` whose message holds a lone surrogate escape:
/// valid JSON that a serde_json-typed server cannot parse.
fn unparseable_echo(id: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":"{id}","method":"tools/call","params":{{"name":"echo","arguments":{{"message":"\ud800"}}}}}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_answer_with_id_null_goes_to_the_request_it_belongs_to_at_once() {
    // A long tool_timeout: an answer that were dropped would make the test
    // fail at its deadline, long before.
    let gw = Gateway::start(&format!(
        "{FAST_GATEWAY}tool_timeout = \"5m\"\nmax_consecutive_errors = 2\n{}",
        test_server("t", &["--strict-json"])
    ))
    .await;
    let healthy = gw.open_session("t").await;
    let session = gw.open_session("t").await;
    let pid = gw.backend_pid("t", &session).await;
    // One request in flight: the error is its own, with its id; five in a
    // row are no transport failures (two would evict the backend).
    for n in 0..5 {
        let id = format!("bad-{n}");
        let answer = answer(&gw, "t", &session, &unparseable_echo(&id)).await;
        assert_eq!(error_code(&answer), -32700, "{answer}");
        assert_eq!(answer["id"], id.as_str(), "{answer}");
    }
    assert_eq!(gw.backend_pid("t", &session).await, pid, "not evicted");

    // With another request in flight, the error waits until the other one
    // has its own answer, then goes to the one left.
    let slow_call = json!({"jsonrpc": "2.0", "id": "slow", "method": "tools/call",
        "params": {"name": "sleep", "arguments": {"ms": 300}}})
    .to_string();
    let (slow, bad) = tokio::join!(answer(&gw, "t", &session, &slow_call), async {
        gw.wait_for_log(&["sleeping", "for 300 ms"]).await;
        answer(&gw, "t", &session, &unparseable_echo("bad")).await
    });
    assert_eq!(
        slow["result"]["content"][0]["text"], "slept 300 ms",
        "{slow}"
    );
    assert_eq!(error_code(&bad), -32700, "{bad}");
    assert_eq!(bad["id"], "bad", "{bad}");

    let echoed = gw
        .call_tool("t", &healthy, "h", "echo", json!({"message": "fine"}))
        .await;
    assert_eq!(echoed["result"]["content"][0]["text"], "fine");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stderr_flood_is_summarised_in_the_log_not_written_line_by_line() {
    const LINES: u64 = 5000;
    let gw = Gateway::start(&format!("{FAST_GATEWAY}{}", test_server("t", &[]))).await;
    let session = gw.open_session("t").await;
    let flooded = gw
        .call_tool("t", &session, "f", "stderr", json!({"lines": LINES}))
        .await;
    assert!(flooded["result"].is_object(), "{flooded}");
    // Ending the session ends the backend's stderr: what was left out is said.
    assert_eq!(gw.delete("t", &session).await, 200);
    gw.wait_for_log(&["stderr flood", "left_out="]).await;
    let log = gw.log();
    let logged = log.iter().filter(|l| l.contains("stderr line ")).count() as u64;
    let left_out: u64 = log
        .iter()
        .filter_map(|l| l.split("left_out=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    assert!(
        left_out > 0 && logged < LINES / 2,
        "logged {logged}, left out {left_out}"
    );
    // (The backend also says it is exiting, on stderr too.)
    assert!(
        (LINES..=LINES + 2).contains(&(logged + left_out)),
        "every line logged or counted: {logged} + {left_out}"
    );
    gw.stop().await;
}
