//! The integration tests' harness: starts the real `mcpgate` binary on
//! `127.0.0.1:0` with a temporary config, talks to it over real HTTP, and checks
//! through `/proc` that every process a test caused is gone at the end.
//!
//! Every backend a test starts carries `MCPGATE_TEST_TAG=<unique tag>` in its
//! environment (passed through by the gateway's `env = { X = "" }` rule), so a
//! leftover process, grandchildren included, can be found by its tag and
//! stopped by its pid. Nothing here kills by name.

#![allow(dead_code)]

pub mod browser;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long any wait in a test may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The protocol version the raw-HTTP tests speak.
pub const PROTOCOL: &str = "2025-11-25";

pub const ACCEPT_BOTH: &str = "application/json, text/event-stream";

/// Path of the project's stdio test server.
pub fn test_server_path() -> &'static str {
    env!("CARGO_BIN_EXE_mcpgate-test-server")
}

/// A `[servers.<id>]` block running the test server with `args`.
pub fn test_server(id: &str, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    format!(
        "[servers.{id}]\ncommand = {:?}\nargs = [{}]\nenv = {{ MCPGATE_TEST_TAG = \"\" }}\n",
        test_server_path(),
        args.join(", ")
    )
}

/// Settings that keep tests quick: short grace periods.
pub const FAST_GATEWAY: &str = "[gateway]\nstop_grace = \"500ms\"\nshutdown_timeout = \"5s\"\n";

/// Waits until `check` holds, polling; fails the test after [`DEADLINE`].
pub async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

static NEXT_TAG: AtomicU64 = AtomicU64::new(0);

/// A running gateway.
pub struct Gateway {
    child: Option<Child>,
    pub pid: u32,
    pub base: String,
    pub tag: String,
    pub config_path: PathBuf,
    _dir: tempfile::TempDir,
    log: Arc<Mutex<Vec<String>>>,
    pub http: reqwest::Client,
}

impl Gateway {
    /// Starts `mcpgate` with `config` (a TOML text; `[gateway] listen` is set by the harness).
    pub async fn start(config: &str) -> Gateway {
        Gateway::start_with_env(config, &[]).await
    }

    /// Like [`Gateway::start`], with `env` added to the gateway's environment.
    pub async fn start_with_env(config: &str, env: &[(&str, &str)]) -> Gateway {
        Gateway::start_with_files(("mcpgate.toml", config), &[], env, false).await
    }

    /// Like [`Gateway::start`], on `listen` (from [`free_port`]): for a
    /// config that must name the gateway's own URL.
    pub async fn start_on(config: &str, listen: &str) -> Gateway {
        Gateway::launch(("mcpgate.toml", config), &[], &[], false, listen).await
    }

    /// Starts `mcpgate` with the config file `main` (a name and its text,
    /// TOML or JSON) written to a temp dir beside the `others`, with `env`
    /// added; with `stdin`, the config text is given on standard input
    /// (`--config -`) instead of as a file.
    pub async fn start_with_files(
        main: (&str, &str),
        others: &[(&str, &str)],
        env: &[(&str, &str)],
        stdin: bool,
    ) -> Gateway {
        Gateway::launch(main, others, env, stdin, "127.0.0.1:0").await
    }

    async fn launch(
        main: (&str, &str),
        others: &[(&str, &str)],
        env: &[(&str, &str)],
        stdin: bool,
        listen: &str,
    ) -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join(main.0);
        std::fs::write(&config_path, main.1).expect("write config");
        for (name, text) in others {
            std::fs::write(dir.path().join(name), text).expect("write a config file");
        }
        let tag = format!(
            "t{}-{}",
            std::process::id(),
            NEXT_TAG.fetch_add(1, Ordering::Relaxed)
        );
        let config_arg = if stdin {
            PathBuf::from("-")
        } else {
            config_path.clone()
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_mcpgate"))
            .arg("--config")
            .arg(&config_arg)
            .args(["--listen", listen])
            .env("MCPGATE_TEST_TAG", &tag)
            .envs(env.iter().copied())
            // MCPGATE_TEST_LOG overrides the gateway's log filter when debugging a test.
            .env(
                "RUST_LOG",
                std::env::var("MCPGATE_TEST_LOG").unwrap_or_else(|_| "info,mcpgate=debug".into()),
            )
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mcpgate");
        if let Some(mut input) = child.stdin.take() {
            use std::io::Write as _;
            input
                .write_all(main.1.as_bytes())
                .expect("write the config to stdin");
            // Dropped: the gateway reads to the end of it.
        }
        let pid = child.id();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let stderr_log = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[gateway] {line}");
                stderr_log.lock().unwrap().push(line);
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent && let Some(rest) = line.strip_prefix("mcpgate listening on ") {
                    let _ = addr_tx.send(rest.trim().to_owned());
                    sent = true;
                }
            }
        });
        let base = tokio::task::spawn_blocking(move || addr_rx.recv_timeout(DEADLINE))
            .await
            .unwrap()
            .unwrap_or_else(|_| panic!("mcpgate did not report its address; see [gateway] lines"));
        Gateway {
            child: Some(child),
            pid,
            base,
            tag,
            config_path,
            _dir: dir,
            log,
            // No request may hang a test for ever (a wedged gateway fails it).
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(90))
                .build()
                .expect("HTTP client"),
        }
    }

    /// The text of `GET path` (the operator's endpoints), which must answer 200.
    pub async fn get_text(&self, path: &str) -> String {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("HTTP request");
        assert_eq!(response.status(), 200, "{path}");
        response.text().await.expect("a body")
    }

    /// `GET /admin/sessions` with `Authorization: <auth>` (which must answer 200).
    pub async fn admin_sessions(&self, auth: &str) -> serde_json::Value {
        let response = self
            .http
            .get(format!("{}/admin/sessions", self.base))
            .header("authorization", auth)
            .send()
            .await
            .expect("HTTP request");
        assert_eq!(response.status(), 200, "/admin/sessions");
        response.json().await.expect("JSON")
    }

    /// How many descriptors the gateway has open whose target starts with
    /// `kind` (`"socket:"`, `"pipe:"`); 0 once it is gone.
    pub fn open_fds(&self, kind: &str) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .map(|dir| {
                dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                    .filter(|target| target.to_string_lossy().starts_with(kind))
                    .count()
            })
            .unwrap_or(0)
    }

    /// The routed endpoint of `server`; `""` names the unified endpoint `/mcp`.
    /// (Every helper that takes a server id takes `""` the same way.)
    pub fn url(&self, server: &str) -> String {
        if server.is_empty() {
            format!("{}/mcp", self.base)
        } else {
            format!("{}/mcp/{server}", self.base)
        }
    }

    /// Lines the gateway logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the gateway has logged a line containing every one of `parts`.
    pub async fn wait_for_log(&self, parts: &[&str]) -> String {
        let mut found = None;
        wait_until(&format!("the gateway logs {parts:?}"), || {
            found = self
                .log()
                .into_iter()
                .find(|l| parts.iter().all(|p| l.contains(p)));
            found.is_some()
        })
        .await;
        found.unwrap()
    }

    /// Processes this test caused that still exist: tagged ones (any depth) and
    /// the gateway's direct children (zombies included).
    pub fn leftovers(&self) -> Vec<u32> {
        let mut pids = tagged_processes(&self.tag);
        pids.extend(children_of(self.pid));
        pids.retain(|p| *p != self.pid);
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Sends `signal` to the gateway.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) only sends a signal to the gateway this test started.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(self.pid as i32, signal);
        };
    }

    /// Waits for the gateway to exit and returns its status.
    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("gateway still owned");
        tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    return status;
                }
                assert!(start.elapsed() < DEADLINE, "gateway did not exit");
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await
        .unwrap()
    }

    /// Stops the gateway with SIGTERM, checks it exited 0, and checks that no
    /// process this test caused is left.
    pub async fn stop(mut self) {
        self.signal(libc::SIGTERM);
        let status = self.wait_exit().await;
        assert!(status.success(), "gateway exited with {status}");
        self.assert_no_leftovers().await;
    }

    /// Fails the test (after killing them by pid) if processes it caused remain.
    pub async fn assert_no_leftovers(&self) {
        let tag = self.tag.clone();
        let start = Instant::now();
        let mut left = self.leftovers();
        while !left.is_empty() && start.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            left = self.leftovers();
        }
        if !left.is_empty() {
            let described: Vec<String> = left.iter().map(|p| describe(*p)).collect();
            for pid in &left {
                // SAFETY: kill(2) on pids this test's gateway caused (found by tag or parentage).
                #[allow(unsafe_code)]
                unsafe {
                    libc::kill(*pid as i32, libc::SIGKILL);
                };
            }
            panic!("processes left behind (tag {tag}): {described:?}");
        }
    }

    // ---- raw HTTP ----

    /// POSTs `body` with the usual headers plus `extra`.
    pub async fn post(
        &self,
        server: &str,
        session: Option<&str>,
        body: &str,
        extra: &[(&str, &str)],
    ) -> reqwest::Response {
        use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
        let mut headers = HeaderMap::new();
        let mut set = |k: &str, v: &str| {
            headers.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        };
        set("content-type", "application/json");
        set("accept", ACCEPT_BOTH);
        set("mcp-protocol-version", PROTOCOL);
        if let Some(id) = session {
            set("mcp-session-id", id);
        }
        // Extra headers replace the defaults of the same name.
        for (k, v) in extra {
            set(k, v);
        }
        self.http
            .post(self.url(server))
            .headers(headers)
            .body(body.to_owned())
            .send()
            .await
            .expect("HTTP request")
    }

    /// Opens a session on `server` with a raw `initialize` + `initialized`;
    /// returns the session id.
    pub async fn open_session(&self, server: &str) -> String {
        self.open_session_speaking(server, PROTOCOL).await
    }

    /// Like [`Gateway::open_session`], with the client asking for `version`
    /// (also sent as `MCP-Protocol-Version`); checks it was granted.
    pub async fn open_session_speaking(&self, server: &str, version: &str) -> String {
        let version_header = [("mcp-protocol-version", version)];
        let response = self
            .post(
                server,
                None,
                &initialize_body_for("1", version),
                &version_header,
            )
            .await;
        assert_eq!(response.status(), 200);
        let id = response
            .headers()
            .get("mcp-session-id")
            .expect("initialize answer carries Mcp-Session-Id")
            .to_str()
            .unwrap()
            .to_owned();
        let body: Value = response.json().await.unwrap();
        assert!(body["result"]["serverInfo"].is_object(), "{body}");
        assert_eq!(body["result"]["protocolVersion"], version, "{body}");
        let note = self
            .post(
                server,
                Some(&id),
                r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
                &version_header,
            )
            .await;
        assert_eq!(note.status(), 202);
        id
    }

    /// Checks that `session` is unknown now: a request with it gets 404.
    pub async fn assert_session_gone(&self, server: &str, session: &str) {
        let again = self
            .post(
                server,
                Some(session),
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
                &[],
            )
            .await;
        assert_eq!(again.status(), 404, "session {session} should be unknown");
    }

    /// Calls a tool through a raw session and returns the JSON-RPC answer.
    pub async fn call_tool(
        &self,
        server: &str,
        session: &str,
        id: &str,
        tool: &str,
        args: Value,
    ) -> Value {
        let body = json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":args}});
        let response = self
            .post(server, Some(session), &body.to_string(), &[])
            .await;
        assert_eq!(response.status(), 200);
        answer_of(response).await
    }

    /// The pid the test server reports for this session.
    pub async fn backend_pid(&self, server: &str, session: &str) -> u32 {
        let answer = self
            .call_tool(server, session, "pid", "pid", json!({}))
            .await;
        answer["result"]["structuredContent"]["pid"]
            .as_u64()
            .unwrap_or_else(|| panic!("pid answer: {answer}")) as u32
    }

    /// DELETEs a session and returns the status.
    pub async fn delete(&self, server: &str, session: &str) -> u16 {
        self.http
            .delete(self.url(server))
            .header("mcp-session-id", session)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // A test that failed before `stop` still must not leave processes behind.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            for pid in tagged_processes(&self.tag) {
                // SAFETY: kill(2) on pids found by this test's unique tag.
                #[allow(unsafe_code)]
                unsafe {
                    libc::kill(pid as i32, libc::SIGKILL);
                };
            }
        }
    }
}

/// A raw initialize request body.
pub fn initialize_body(id: &str) -> String {
    initialize_body_for(id, PROTOCOL)
}

/// A raw initialize request body asking for `version`.
pub fn initialize_body_for(id: &str, version: &str) -> String {
    json!({
        "jsonrpc": "2.0", "id": id, "method": "initialize",
        "params": {
            "protocolVersion": version,
            "capabilities": {"roots": {"listChanged": true}, "sampling": {}},
            "clientInfo": {"name": "mcpgate-tests", "version": "1.0"}
        }
    })
    .to_string()
}

// ---- /proc ----

/// True if `pid` exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => state_of(&stat) != Some('Z'),
        Err(_) => false,
    }
}

/// True if `pid` exists in any state (zombies included).
pub fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn state_of(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn ppid_of(stat: &str) -> Option<u32> {
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Processes whose environment holds `MCPGATE_TEST_TAG=<tag>`.
pub fn tagged_processes(tag: &str) -> Vec<u32> {
    let needle = format!("MCPGATE_TEST_TAG={tag}\0");
    all_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| {
                    let mut env = env;
                    env.push(0);
                    env.windows(needle.len()).any(|w| w == needle.as_bytes())
                })
                .unwrap_or(false)
        })
        .collect()
}

/// Direct children of `parent`, zombies included.
pub fn children_of(parent: u32) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| ppid_of(&s))
                == Some(parent)
        })
        .collect()
}

fn describe(pid: u32) -> String {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .unwrap_or_default();
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| state_of(&s))
        .unwrap_or('?');
    format!("{pid} [{state}] {cmdline}")
}

// ---- Python SDK clients ----

/// Runs `tests/clients/py_client.py` with the Python SDK of `major` version.
pub async fn python_client(major: u32, url: &str, scenario: &str) -> Value {
    python_client_with(major, url, scenario, "").await
}

/// Like [`python_client`], with the tools it calls named `<prefix><name>`.
pub async fn python_client_with(major: u32, url: &str, scenario: &str, prefix: &str) -> Value {
    python_client_env(major, url, scenario, &[("PY_CLIENT_TOOL_PREFIX", prefix)]).await
}

/// Like [`python_client`], with the 2.x client's `mode` (`auto`, `legacy` or
/// `2026-07-28`) for the basic, list and everything scenarios.
pub async fn python_client_in_mode(major: u32, url: &str, scenario: &str, mode: &str) -> Value {
    python_client_env(major, url, scenario, &[("PY_CLIENT_MODE", mode)]).await
}

/// Runs `tests/clients/py_client.py` with extra environment variables.
pub async fn python_client_env(
    major: u32,
    url: &str,
    scenario: &str,
    env: &[(&str, &str)],
) -> Value {
    let python = test_dep(&format!("py-mcp{major}/bin/python"));
    let mut command = tokio::process::Command::new(python);
    command
        .arg(repo_path("tests/clients/py_client.py"))
        .arg(url)
        .arg(scenario)
        .env("PY_CLIENT_TIMEOUT", "15")
        .envs(env.iter().copied());
    last_json_line(&run_client(command, &format!("python mcp {major}.x client")).await)
}

/// Runs `tests/clients/ts_client.mjs` (the TypeScript SDK's client) with the
/// Node 22 and SDK in `.testdeps/npm`, against `url`, and returns the JSON
/// line it prints. `env` adds variables (`TS_CLIENT_TOOL_PREFIX`).
pub async fn ts_client(url: &str, scenario: &str, env: &[(&str, &str)]) -> Value {
    let mut command = tokio::process::Command::new(test_dep(NODE22));
    command
        .arg(repo_path("tests/clients/ts_client.mjs"))
        .arg(url)
        .arg(scenario)
        .env(
            "TS_SDK_DIR",
            test_dep("npm/node_modules/@modelcontextprotocol/sdk"),
        )
        .env("TS_CLIENT_TIMEOUT", "15")
        .envs(env.iter().copied());
    last_json_line(&run_client(command, "typescript client").await)
}

/// Runs the MCP Inspector's CLI (`.testdeps/npm-inspector`, on the Node 22
/// of `.testdeps/npm`) against `url` over Streamable HTTP with `args` (its
/// `--method ...` options), and returns the JSON it prints. Its catalog file
/// goes to a temporary directory, not the user's home.
pub async fn inspector_cli(url: &str, args: &[&str]) -> Value {
    let cli = test_dep(
        "npm-inspector/node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js",
    );
    let catalog = tempfile::tempdir().expect("temp dir");
    let mut command = tokio::process::Command::new(test_dep(NODE22));
    command
        .arg(cli)
        .args(["--cli", url, "--transport", "http"])
        .args(args)
        .env("MCP_CATALOG_PATH", catalog.path().join("mcp.json"))
        .env("HOME", catalog.path());
    let stdout = run_client(command, "the inspector").await;
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("bad inspector output {stdout:?}: {e}"))
}

/// The Node 22 the test dependencies install, under `.testdeps/`.
pub const NODE22: &str = "npm/node_modules/node/bin/node";

/// A loopback port nothing listens on now, for a gateway whose config must
/// name its own URL (its listener binds it again at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A path inside the repository.
pub fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// A file the test dependencies install under `.testdeps/`; fails the test,
/// saying how to install it, if it is missing.
pub fn test_dep(relative: &str) -> PathBuf {
    let path = repo_path(".testdeps").join(relative);
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-test-deps.sh (the README's test command does)",
        path.display()
    );
    path
}

/// Runs a client driver to its end (within [`DEADLINE`]; it is killed if the
/// test gives up), fails the test with its output unless it succeeded, and
/// returns what it printed on stdout. `what` names it in the failure.
pub async fn run_client(mut command: tokio::process::Command, what: &str) -> String {
    command.kill_on_drop(true);
    let output = tokio::time::timeout(DEADLINE, command.output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {DEADLINE:?}"))
        .unwrap_or_else(|e| panic!("{what} could not be run: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{stderr}\n{stdout}",
        output.status
    );
    stdout
}

/// The JSON of the last line a client driver printed.
pub fn last_json_line(stdout: &str) -> Value {
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("bad client output {last:?}: {e}"))
}

// ---- SSE ----

/// The JSON-RPC answer in a POST's response, sent as JSON or as an SSE stream
/// (whose last message is the answer; earlier ones are the backend's own).
pub async fn answer_of(response: reqwest::Response) -> Value {
    let is_stream = response.headers().get("content-type").is_some_and(|v| {
        v.to_str()
            .unwrap_or_default()
            .starts_with("text/event-stream")
    });
    if !is_stream {
        return response.json().await.unwrap();
    }
    let mut reader = SseReader::from_response(response);
    let mut last = None;
    while let Some(message) = reader.next_within(DEADLINE).await {
        last = Some(message);
    }
    last.expect("the stream carried an answer")
}

/// Reads JSON-RPC messages from an SSE response body, skipping comments and
/// priming events.
pub struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    /// Opens the session's GET stream.
    pub async fn open(gw: &Gateway, server: &str, session: &str) -> SseReader {
        let response = gw
            .http
            .get(gw.url(server))
            .header("accept", "text/event-stream")
            .header("mcp-session-id", session)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        SseReader {
            response,
            buffer: String::new(),
        }
    }

    /// Reads the SSE body of a response.
    pub fn from_response(response: reqwest::Response) -> SseReader {
        SseReader {
            response,
            buffer: String::new(),
        }
    }

    /// The next JSON-RPC message, or `None` if none arrives within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Value> {
        tokio::time::timeout(wait, self.next()).await.ok().flatten()
    }

    /// The next JSON-RPC message; `None` at the end of the stream.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                let data: String = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
                    .collect();
                if !data.trim().is_empty() {
                    return Some(serde_json::from_str(&data).expect("SSE data is JSON"));
                }
            }
            let chunk = self.response.chunk().await.ok()??;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// A `[servers.<id>]` block running a reference server installed from npm by
/// `scripts/install-test-deps.sh`, under the Node 22 installed beside it.
pub fn npm_server(id: &str, package: &str, args: &[&str], env: &str) -> String {
    let deps = concat!(env!("CARGO_MANIFEST_DIR"), "/.testdeps/npm/node_modules");
    let node = test_dep("npm/node_modules/.bin/node").display().to_string();
    let mut all = vec![format!(
        "{deps}/@modelcontextprotocol/{package}/dist/index.js"
    )];
    all.extend(args.iter().map(|a| a.to_string()));
    format!(
        "[servers.{id}]\ncommand = {node:?}\nargs = {all:?}\nenv = {{ MCPGATE_TEST_TAG = \"\"{env} }}\n"
    )
}

/// A `[servers.<id>]` block running `tests/fixtures/modern_server.py` (a
/// Python `mcp` 2.x server that speaks 2026-07-28, or the session era when
/// its first request is `initialize`), with the server's `era`.
pub fn modern_server(id: &str, era: &str) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let python = test_dep("py-mcp2/bin/python").display().to_string();
    format!(
        "[servers.{id}]\ncommand = {python:?}\nargs = [{:?}]\nera = {era:?}\nenv = {{ MCPGATE_TEST_TAG = \"\" }}\n",
        format!("{root}/tests/fixtures/modern_server.py")
    )
}

// ---- the Rust SDK ----

pub type RmcpClient = rmcp::service::RunningService<rmcp::RoleClient, rmcp::model::ClientConfig>;

/// An rmcp client, initialised through the gateway at `url`.
pub async fn rmcp_client(url: &str) -> RmcpClient {
    use rmcp::ServiceExt;
    rmcp::model::ClientConfig::default()
        .serve(rmcp::transport::StreamableHttpClientTransport::from_uri(
            url.to_owned(),
        ))
        .await
        .expect("rmcp client initialises through the gateway")
}

/// A `[servers.<id>]` block running the npm `server-memory` with its graph in `file`.
pub fn memory_server(id: &str, file: &std::path::Path) -> String {
    npm_server(
        id,
        "server-memory",
        &[],
        &format!(", MEMORY_FILE_PATH = {:?}", file.display().to_string()),
    )
}
