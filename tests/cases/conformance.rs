//! The official MCP conformance suite (`@modelcontextprotocol/conformance`, its
//! server scenarios) run through the gateway, against the project's own fixture
//! server (`tests/conformance/fixture_server.py`) behind `/mcp/conformance`.
//! See `tests/conformance/README.md`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use crate::common::*;

/// The scenarios of the suite's `active` set (0.1.16): every server scenario but
/// the two it marks pending (`json-schema-2020-12`, `server-sse-polling`). Each
/// must be reported as passed, so one that is silently skipped fails the test.
const ACTIVE_SCENARIOS: [&str; 30] = [
    "server-initialize",
    "logging-set-level",
    "ping",
    "completion-complete",
    "tools-list",
    "tools-call-simple-text",
    "tools-call-image",
    "tools-call-audio",
    "tools-call-embedded-resource",
    "tools-call-mixed-content",
    "tools-call-with-logging",
    "tools-call-error",
    "tools-call-with-progress",
    "tools-call-sampling",
    "tools-call-elicitation",
    "elicitation-sep1034-defaults",
    "server-sse-multiple-streams",
    "elicitation-sep1330-enums",
    "resources-list",
    "resources-read-text",
    "resources-read-binary",
    "resources-templates-read",
    "resources-subscribe",
    "resources-unsubscribe",
    "prompts-list",
    "prompts-get-simple",
    "prompts-get-with-args",
    "prompts-get-embedded-resource",
    "prompts-get-with-image",
    "dns-rebinding-protection",
];

/// The pending scenarios the active set leaves out.
const PENDING_SCENARIOS: usize = 2;

/// run.sh stops the suite after this long; the test waits a little longer.
const SUITE_TIMEOUT: Duration = Duration::from_secs(240);

/// `(passed, failed, skipped)` from run.sh's last line
/// `conformance: P passed, F failed, S skipped (not run) of N scenarios run in T s`.
fn counts(stdout: &str) -> Option<(usize, usize, usize)> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("conformance: "))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let number_before = |label: &str| {
        words
            .windows(2)
            .find(|w| w[1].trim_end_matches(',') == label)
            .and_then(|w| w[0].parse().ok())
    };
    Some((
        number_before("passed")?,
        number_before("failed")?,
        number_before("skipped")?,
    ))
}

/// Runs a conformance runner script against `url` in its own process group,
/// stopping the whole group if it overruns.
async fn run_suite(script: &std::path::Path, url: &str) -> std::process::Output {
    let mut command = tokio::process::Command::new(script);
    command
        .arg(url)
        .env("CONFORMANCE_TIMEOUT", SUITE_TIMEOUT.as_secs().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a hung suite (node and all) can be stopped by pgid.
        .process_group(0)
        .kill_on_drop(true);
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", script.display()));
    let pgid = child.id().expect("runner pid") as i32;
    match tokio::time::timeout(
        SUITE_TIMEOUT + Duration::from_secs(30),
        child.wait_with_output(),
    )
    .await
    {
        Ok(output) => output.expect("the runner ran"),
        Err(_) => {
            // SAFETY: kill(2) on the process group of the runner this test started.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            };
            panic!("{} did not finish in time", script.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_conformance_server_scenarios_pass_through_the_gateway() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".testdeps/py-mcp1/bin/python");
    let suite = root.join(".testdeps/npm/node_modules/@modelcontextprotocol/conformance");
    for needed in [&python, &suite] {
        assert!(
            needed.exists(),
            "{} is missing: run scripts/install-test-deps.sh (the README's test command does)",
            needed.display()
        );
    }
    let fixture = root.join("tests/conformance/fixture_server.py");
    // The suite opens one session per scenario and never DELETEs it (its client
    // only drops the connection), so idle sessions are reaped quickly rather than
    // keeping some 30 fixture processes until the end.
    let config = format!(
        "{FAST_GATEWAY}session_idle_timeout = \"10s\"\ncleanup_interval = \"1s\"\n\
         [servers.conformance]\ncommand = {:?}\nargs = [{:?}]\nenv = {{ MCPGATE_TEST_TAG = \"\" }}\n",
        python.display().to_string(),
        fixture.display().to_string(),
    );
    let gw = Gateway::start(&config).await;

    let output = run_suite(
        &root.join("tests/conformance/run.sh"),
        &gw.url("conformance"),
    )
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}{stderr}");

    let (passed, failed, skipped) =
        counts(&stdout).unwrap_or_else(|| panic!("no summary line from run.sh:\n{stdout}{stderr}"));
    let missing: Vec<&str> = ACTIVE_SCENARIOS
        .iter()
        .copied()
        .filter(|s| !stdout.lines().any(|l| l.starts_with(&format!("PASS {s} "))))
        .collect();
    assert!(
        output.status.success() && failed == 0 && missing.is_empty(),
        "conformance scenarios failed through the gateway ({}): not passed: {missing:?}; \
         see the run.sh output above",
        output.status
    );
    assert_eq!(
        (passed, skipped),
        (ACTIVE_SCENARIOS.len(), PENDING_SCENARIOS),
        "the suite ran another set of scenarios than the {} active ones expected",
        ACTIVE_SCENARIOS.len()
    );
    gw.stop().await;
}

/// The 37 server scenarios the 2026-07-28 revision requires
/// (`--requirements 2026-07-28` of the suite 0.2.0-alpha.12).
const REQUIRED_2026: [&str; 37] = [
    "server-stateless",
    "completion-complete",
    "tools-list",
    "tools-call-simple-text",
    "tools-call-image",
    "tools-call-audio",
    "tools-call-embedded-resource",
    "tools-call-mixed-content",
    "tools-call-error",
    "tools-call-with-progress",
    "server-sse-multiple-streams",
    "resources-list",
    "resources-read-text",
    "resources-read-binary",
    "resources-templates-read",
    "sep-2164-resource-not-found",
    "prompts-list",
    "prompts-get-simple",
    "prompts-get-with-args",
    "prompts-get-embedded-resource",
    "prompts-get-with-image",
    "dns-rebinding-protection",
    "caching",
    "input-required-result-basic-elicitation",
    "input-required-result-basic-sampling",
    "input-required-result-basic-list-roots",
    "input-required-result-request-state",
    "input-required-result-multiple-input-requests",
    "input-required-result-multi-round",
    "input-required-result-missing-input-response",
    "input-required-result-non-tool-request",
    "input-required-result-result-type",
    "input-required-result-unsupported-methods",
    "input-required-result-tampered-state",
    "input-required-result-capability-check",
    "input-required-result-ignore-extra-params",
    "input-required-result-validate-input",
];

/// Runs the 2026-07-28 required scenarios through a gateway whose one server
/// runs `tests/conformance/fixture_server_modern.py` with `era`, and checks that
/// exactly `expected_failures` fail: a regression and a fix both show.
async fn conformance_2026(era: &str, expected_failures: &[&str]) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".testdeps/py-mcp2/bin/python");
    let suite =
        root.join(".testdeps/npm-conformance-2026/node_modules/@modelcontextprotocol/conformance");
    for needed in [&python, &suite] {
        assert!(
            needed.exists(),
            "{} is missing: run scripts/install-test-deps.sh (the README's test command does)",
            needed.display()
        );
    }
    let fixture = root.join("tests/conformance/fixture_server_modern.py");
    let config = format!(
        "{FAST_GATEWAY}[servers.c]\ncommand = {:?}\nargs = [{:?}]\nera = {era:?}\nenv = {{ MCPGATE_TEST_TAG = \"\" }}\n",
        python.display().to_string(),
        fixture.display().to_string(),
    );
    let gw = Gateway::start(&config).await;
    let output = run_suite(&root.join("tests/conformance/run-2026.sh"), &gw.url("c")).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}{stderr}");
    let json_line = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("conformance-json: "))
        .unwrap_or_else(|| panic!("no conformance-json line:\n{stdout}{stderr}"));
    let report: serde_json::Value = serde_json::from_str(json_line).unwrap();
    let names = |key: &str| -> Vec<String> {
        let mut v: Vec<String> = report[key]
            .as_array()
            .unwrap_or_else(|| panic!("no {key} in {report}"))
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    };
    let mut want_failed: Vec<String> = expected_failures.iter().map(|s| s.to_string()).collect();
    want_failed.sort();
    let mut want_passed: Vec<String> = REQUIRED_2026
        .iter()
        .filter(|s| !expected_failures.contains(s))
        .map(|s| s.to_string())
        .collect();
    want_passed.sort();
    assert_eq!(
        names("failed"),
        want_failed,
        "era = {era}: failed scenarios"
    );
    assert_eq!(
        names("passed"),
        want_passed,
        "era = {era}: passed scenarios"
    );
    assert!(names("skipped").is_empty(), "era = {era}: {report}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_2026_07_28_scenarios_pass_through_to_a_modern_backend() {
    conformance_2026("modern", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_2026_07_28_scenarios_through_the_bridge_to_a_session_era_backend() {
    conformance_2026(
        "legacy",
        &[
            // Inherent to bridging: the suite expects the fixture's own input key
            // (the bridge names keys itself), and a backend that was told (by the
            // gateway's initialize) that the client can elicit asks for it even
            // when this client declared only sampling.
            "input-required-result-basic-elicitation",
            "input-required-result-capability-check",
        ],
    )
    .await;
}
