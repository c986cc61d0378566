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

    let mut command = tokio::process::Command::new(root.join("tests/conformance/run.sh"));
    command
        .arg(gw.url("conformance"))
        .env("CONFORMANCE_TIMEOUT", SUITE_TIMEOUT.as_secs().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a hung suite (node and all) can be stopped by pgid.
        .process_group(0)
        .kill_on_drop(true);
    let child = command.spawn().expect("start tests/conformance/run.sh");
    let pgid = child.id().expect("run.sh pid") as i32;
    let output = match tokio::time::timeout(
        SUITE_TIMEOUT + Duration::from_secs(30),
        child.wait_with_output(),
    )
    .await
    {
        Ok(output) => output.expect("run.sh ran"),
        Err(_) => {
            // SAFETY: kill(2) on the process group of the run.sh this test started.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
            panic!("tests/conformance/run.sh did not finish in time");
        }
    };
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
