//! Interoperability with independent implementations on both sides of the
//! gateway: the official Python SDK client, with sampling and elicitation
//! callbacks, a logging callback and a progress handler, against the npm
//! reference server `@modelcontextprotocol/server-everything`. The server's
//! own requests, progress and log messages reach the client while its call is
//! in flight, and the client's answers reach the server.

use serde_json::{Value, json};

use crate::common::*;

/// What `py_client.py everything` makes its sampling callback answer.
const SAMPLED_TEXT: &str = "sampled-by-mcpgate-test";
/// The `name` its elicitation callback accepts with.
const ELICITED_NAME: &str = "mcpgate-test-user";
/// The `steps` it passes to `trigger-long-running-operation`.
const STEPS: u64 = 5;

async fn sampling_elicitation_progress_and_logging(major: u32) {
    let gw = Gateway::start(&format!(
        "{FAST_GATEWAY}{}",
        npm_server("everything", "server-everything", &["stdio"], "")
    ))
    .await;
    // The session era (the 2.x client in legacy mode): server requests on SSE
    // streams, logging/setLevel and request-scoped logs, which 2026-07-28
    // replaced or removed.
    let out = python_client_in_mode(major, &gw.url("everything"), "everything", "legacy").await;
    assert!(
        out["sdk_version"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{major}.")),
        "{out}"
    );

    let tools: Vec<&str> = out["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tool list: {out}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for tool in [
        "trigger-sampling-request",
        "trigger-elicitation-request",
        "trigger-long-running-operation",
        "toggle-simulated-logging",
    ] {
        assert!(tools.contains(&tool), "{tool} is not listed: {out}");
    }

    // sampling/createMessage reached the client once and its answer reached the server.
    assert_eq!(out["sampling_requests"], 1, "{out}");
    let sampled = out["sampling_result"].as_str().unwrap();
    assert!(sampled.contains(SAMPLED_TEXT), "{out}");

    // elicitation/create likewise; the server saw the accepted content.
    assert_eq!(out["elicitation_requests"], 1, "{out}");
    let elicited = out["elicitation_result"].as_str().unwrap();
    assert!(
        elicited.contains(&format!("Name: {ELICITED_NAME}")),
        "{out}"
    );
    assert!(elicited.contains(r#""action": "accept""#), "{out}");

    // One progress notification per step, in order, ending at the total.
    let expected: Vec<Value> = (1..=STEPS)
        .map(|step| json!([step as f64, STEPS as f64]))
        .collect();
    assert_eq!(out["progress"], Value::Array(expected), "{out}");

    assert!(out["log_messages"].as_u64().unwrap() >= 1, "{out}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_sampling_elicitation_progress_and_logging_work_against_server_everything() {
    sampling_elicitation_progress_and_logging(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_2x_sampling_elicitation_progress_and_logging_work_against_server_everything() {
    sampling_elicitation_progress_and_logging(2).await;
}
