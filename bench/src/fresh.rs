//! The new-session scenarios: how long a session takes to become usable when
//! it is new, on real backends, spawned directly and through the gateway with
//! and without warm spares.
//!
//! - `new-session`: K sessions one after another, on each backend. Each one:
//!   `initialize` (its answer is `init_ms`), `notifications/initialized`,
//!   one `tools/call` (its answer is `first_call_ms`, counted from the
//!   `initialize` send), then `DELETE`. Before each session the benchmark
//!   waits (bounded) until the gateway is in its steady state: nothing left
//!   of the session before, and, with warm spares, every spare ready, so
//!   that each measured session finds one.
//! - `new-session-burst`: 20 such sessions at once on the 1 s test server,
//!   cold and with 4 spares: the 4 fastest should find spares, and the other
//!   16 should be no slower than cold ones.
//!
//! Every process it starts is stopped by its pid or its process group.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::StatusCode;
use hyper::header::HeaderValue;
use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::client::{Conn, Endpoint};
use crate::procs::{self, ServerProcess};
use crate::report::{percentile, round};
use crate::rpc;
use crate::run::{self, SERVER_ID, Setup};

/// Sessions one after another.
pub const NEW_SESSION: &str = "new-session";
/// Sessions at once.
pub const BURST: &str = "new-session-burst";
pub const SCENARIOS: [&str; 2] = [NEW_SESSION, BURST];

/// Sessions opened at once in the burst.
pub const BURST_SESSIONS: usize = 20;
/// Warm spares of the burst's warm target.
const BURST_SPARES: u32 = 4;
/// How many of the burst's fastest sessions `first4_max_ms` covers.
const BURST_FIRST: usize = 4;
/// Warm spares of the one-after-another warm targets.
const SPARES: u32 = 2;
/// The gateway's global cap on spares (`[gateway] max_spares`).
const MAX_SPARES: u32 = 16;
/// Longest wait for the gateway's steady state before a session.
const READY_WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(20);
/// Longest a directly spawned backend may take to answer one request.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);
/// A directly spawned backend gets this long to exit after its stdin is
/// closed (the gateway's `stop_grace` below), then SIGTERM, then SIGKILL.
const EOF_GRACE: Duration = Duration::from_millis(500);
const TERM_GRACE: Duration = Duration::from_secs(5);

// ------------------------------------------------------------ targets ----

/// Where a new session is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionTarget {
    /// The benchmark spawns the backend itself and speaks stdio: the floor.
    DirectSpawn,
    /// The gateway with no warm spares.
    GatewayCold,
    /// The gateway with warm spares that were started.
    GatewayWarmStarted,
    /// The gateway with warm spares that also ran the `initialize` handshake.
    GatewayWarmInitialized,
}

impl SessionTarget {
    pub const ALL: [SessionTarget; 4] = [
        SessionTarget::DirectSpawn,
        SessionTarget::GatewayCold,
        SessionTarget::GatewayWarmStarted,
        SessionTarget::GatewayWarmInitialized,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SessionTarget::DirectSpawn => "direct-spawn",
            SessionTarget::GatewayCold => "gateway-cold",
            SessionTarget::GatewayWarmStarted => "gateway-warm-started",
            SessionTarget::GatewayWarmInitialized => "gateway-warm-initialized",
        }
    }

    pub fn parse(name: &str) -> Option<SessionTarget> {
        SessionTarget::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// Whether `scenario` measures this target (the burst has no
    /// `gateway-warm-initialized`).
    pub fn applies_to(self, scenario: &str) -> bool {
        !(scenario == BURST && self == SessionTarget::GatewayWarmInitialized)
    }

    /// The gateway's warm spares in `scenario`: their count and `warm` mode
    /// (none for the cold gateway); `None` for the direct spawn.
    fn spares(self, scenario: &str) -> Option<(u32, Option<&'static str>)> {
        let warm = if scenario == BURST {
            BURST_SPARES
        } else {
            SPARES
        };
        match self {
            SessionTarget::DirectSpawn => None,
            SessionTarget::GatewayCold => Some((0, None)),
            SessionTarget::GatewayWarmStarted => Some((warm, Some("started"))),
            SessionTarget::GatewayWarmInitialized => Some((warm, Some("initialized"))),
        }
    }
}

// ----------------------------------------------------------- backends ----

/// A backend a new session is opened on.
#[derive(Debug, Clone)]
pub struct Backend {
    pub name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    /// Files it needs, and what provides them.
    needs: Vec<PathBuf>,
    provided_by: &'static str,
    /// The tool its first call calls, and that call's arguments (JSON).
    tool: &'static str,
    arguments: &'static str,
}

pub const BACKENDS: [&str; 3] = ["test-server-1s", "server-everything", "mcp-server-time"];

impl Backend {
    /// Every backend: the test server at `test_server`, and the reference
    /// servers installed under `testdeps` by scripts/install-test-deps.sh.
    pub fn all(test_server: &Path, testdeps: &Path) -> Vec<Backend> {
        let install = "scripts/install-test-deps.sh";
        let node = testdeps.join("npm/node_modules/.bin/node");
        let everything =
            testdeps.join("npm/node_modules/@modelcontextprotocol/server-everything/dist/index.js");
        let python = testdeps.join("py-time/bin/python");
        vec![
            Backend {
                name: BACKENDS[0],
                program: test_server.to_owned(),
                args: vec!["--slow-start-ms".to_owned(), "1000".to_owned()],
                needs: vec![test_server.to_owned()],
                provided_by: "cargo build --release --bins -p mcpgate",
                tool: "echo",
                arguments: r#"{"message":"hello"}"#,
            },
            Backend {
                name: BACKENDS[1],
                program: node.clone(),
                args: vec![everything.to_string_lossy().into_owned()],
                needs: vec![node, everything],
                provided_by: install,
                tool: "echo",
                arguments: r#"{"message":"hello"}"#,
            },
            Backend {
                name: BACKENDS[2],
                program: python.clone(),
                args: vec!["-m".to_owned(), "mcp_server_time".to_owned()],
                needs: vec![python],
                provided_by: install,
                tool: "get_current_time",
                arguments: r#"{"timezone":"UTC"}"#,
            },
        ]
    }

    /// Whether `scenario` runs on this backend (the burst: the test server only).
    pub fn applies_to(&self, scenario: &str) -> bool {
        scenario != BURST || self.name == BACKENDS[0]
    }

    /// Why it cannot run here, if it cannot.
    pub fn missing(&self) -> Option<String> {
        let missing = self.needs.iter().find(|path| !path.exists())?;
        Some(format!(
            "{} is missing: run {} (backend {} skipped)",
            missing.display(),
            self.provided_by,
            self.name
        ))
    }

    /// Its first `tools/call`, with id `id`.
    fn first_call(&self, id: u64) -> Bytes {
        Bytes::from(rpc::tools_call_of(id, self.tool, self.arguments))
    }
}

/// The gateway's config for `backend` with `spares` warm spares in `mode`.
/// The cold gateway gets no spares keys at all (0 is their default), so it
/// runs on builds that do not know them.
fn config(backend: &Backend, spares: u32, mode: Option<&str>) -> String {
    let (gateway, server) = if spares == 0 {
        (String::new(), String::new())
    } else {
        let mode = mode.map(|m| format!("warm = {m:?}\n")).unwrap_or_default();
        (
            format!("max_spares = {MAX_SPARES}\n"),
            format!("warm_spares = {spares}\n{mode}"),
        )
    };
    crate::gateway_config(&backend.program, &backend.args, &gateway, &server)
}

// ------------------------------------------------------------ results ----

/// What one target gave.
#[derive(Debug, Default)]
pub struct SessionsMeasured {
    pub sessions: usize,
    pub in_flight: usize,
    /// Sessions that failed or could not be run.
    pub errors: usize,
    /// Failures around the sessions: starting or stopping what was measured,
    /// `DELETE`, waiting for the steady state after the last session.
    pub setup_errors: usize,
    pub first_error: Option<String>,
    /// Per measured session, in nanoseconds (sorted once gathered).
    init_ns: Vec<u64>,
    first_call_ns: Vec<u64>,
    pub other_load_pct: Option<f64>,
    /// Not run: its backend is missing.
    skipped: bool,
}

impl SessionsMeasured {
    fn new(scenario: &str, count: usize) -> SessionsMeasured {
        let burst = scenario == BURST;
        SessionsMeasured {
            sessions: if burst { BURST_SESSIONS } else { count },
            in_flight: if burst { BURST_SESSIONS } else { 1 },
            ..SessionsMeasured::default()
        }
    }

    /// A target not run because its backend is missing (`why`).
    pub fn skipped(scenario: &str, count: usize, why: String) -> SessionsMeasured {
        SessionsMeasured {
            first_error: Some(why),
            skipped: true,
            ..SessionsMeasured::new(scenario, count)
        }
    }

    pub fn is_skipped(&self) -> bool {
        self.skipped
    }

    fn note_error(&mut self, error: String) {
        self.first_error.get_or_insert(error);
    }

    /// A session that failed (or, `count` of them, that could not run).
    fn fail(&mut self, count: usize, error: String) {
        self.errors += count;
        self.note_error(error);
    }

    fn setup_fail(&mut self, error: String) {
        self.setup_errors += 1;
        self.note_error(error);
    }

    fn record(&mut self, outcome: Result<(Duration, Duration), String>) {
        match outcome {
            Ok((init, first_call)) => {
                self.init_ns.push(init.as_nanos() as u64);
                self.first_call_ns.push(first_call.as_nanos() as u64);
            }
            Err(e) => self.fail(1, e),
        }
    }
}

/// One printed line: a new-session scenario on one backend and target.
#[derive(Debug, Serialize)]
pub struct SessionLine {
    pub scenario: &'static str,
    pub backend: &'static str,
    pub target: &'static str,
    /// The gateway's `warm_spares` (null for the direct spawn).
    pub warm_spares: Option<u32>,
    /// The gateway's `warm` mode (null without spares).
    pub warm: Option<&'static str>,
    pub sessions: usize,
    pub in_flight: usize,
    pub errors: usize,
    pub init_p50_ms: Option<f64>,
    pub init_p99_ms: Option<f64>,
    pub init_max_ms: Option<f64>,
    pub first_call_p50_ms: Option<f64>,
    pub first_call_p99_ms: Option<f64>,
    pub first_call_max_ms: Option<f64>,
    /// Burst only: the slowest of the 4 fastest sessions' `first_call_ms`.
    pub first4_max_ms: Option<f64>,
    /// Burst only: the median `first_call_ms` of the other sessions.
    pub rest_p50_ms: Option<f64>,
    pub setup_errors: usize,
    pub other_load_pct: Option<f64>,
    pub first_error: Option<String>,
}

fn ms(ns: u64) -> f64 {
    round(ns as f64 / 1e6, 3)
}

impl SessionLine {
    pub fn new(
        scenario: &'static str,
        backend: &'static str,
        target: SessionTarget,
        m: &SessionsMeasured,
    ) -> SessionLine {
        let mut init = m.init_ns.clone();
        let mut first = m.first_call_ns.clone();
        init.sort_unstable();
        first.sort_unstable();
        let p = |values: &[u64], q| percentile(values, q).map(ms);
        let burst = scenario == BURST;
        let (spares, warm) = target.spares(scenario).unzip();
        SessionLine {
            scenario,
            backend,
            target: target.as_str(),
            warm_spares: spares,
            warm: warm.flatten(),
            sessions: m.sessions,
            in_flight: m.in_flight,
            errors: m.errors,
            init_p50_ms: p(&init, 50.0),
            init_p99_ms: p(&init, 99.0),
            init_max_ms: p(&init, 100.0),
            first_call_p50_ms: p(&first, 50.0),
            first_call_p99_ms: p(&first, 99.0),
            first_call_max_ms: p(&first, 100.0),
            first4_max_ms: burst
                .then(|| first.get(BURST_FIRST - 1).copied().map(ms))
                .flatten(),
            rest_p50_ms: burst
                .then(|| p(first.get(BURST_FIRST..).unwrap_or_default(), 50.0))
                .flatten(),
            setup_errors: m.setup_errors,
            other_load_pct: m.other_load_pct.map(|v| round(v, 1)),
            first_error: m.first_error.clone(),
        }
    }
}

// -------------------------------------------------------------- /readyz ----

/// A server's warm spares, as `/readyz` reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spares {
    pub wanted: u64,
    /// Started (and, in `initialized` mode, handshaken): can be claimed.
    pub ready: u64,
    pub starting: u64,
    pub state: String,
}

/// The spares of `server` in a `/readyz` answer: `Ok(None)` when the server
/// is there without a `spares` member (a gateway without warm spares).
pub fn spares_of(readyz: &[u8], server: &str) -> Result<Option<Spares>, String> {
    let value: Value =
        serde_json::from_slice(readyz).map_err(|e| format!("/readyz is not JSON: {e}"))?;
    let entry = value
        .get("servers")
        .and_then(|s| s.get(server))
        .ok_or_else(|| format!("/readyz has no server {server:?}"))?;
    let spares = match entry.get("spares") {
        None | Some(Value::Null) => return Ok(None),
        Some(spares) => spares,
    };
    let count = |key: &str| {
        spares
            .get(key)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("/readyz: spares.{key} of {server:?} is not a count: {spares}"))
    };
    Ok(Some(Spares {
        wanted: count("wanted")?,
        ready: count("ready")?,
        starting: spares.get("starting").and_then(Value::as_u64).unwrap_or(0),
        state: spares
            .get("state")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    }))
}

/// Asks the gateway's `/readyz`, on a connection of its own.
struct Readyz {
    endpoint: Endpoint,
    conn: Option<Conn>,
}

impl Readyz {
    fn new(endpoint: &Endpoint) -> Readyz {
        Readyz {
            endpoint: endpoint.clone(),
            conn: None,
        }
    }

    async fn spares(&mut self) -> Result<Option<Spares>, String> {
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.endpoint.connect().await?,
        };
        let reply = conn.get("/readyz").await?;
        self.conn = Some(conn);
        if reply.status != StatusCode::OK {
            return Err(format!("/readyz answered {}", reply.status));
        }
        spares_of(&reply.body, SERVER_ID)
    }
}

/// Waits (up to [`READY_WAIT`]) until the gateway `pid` is in its steady
/// state for a new session: with `wanted` spares, `/readyz` shows them all
/// ready; and it has no more processes under it than `baseline` (nothing
/// left of earlier sessions). Returns how many processes it has.
async fn wait_steady(
    readyz: &mut Readyz,
    pid: u32,
    wanted: u32,
    baseline: Option<usize>,
) -> Result<usize, String> {
    let deadline = Instant::now() + READY_WAIT;
    let mut last = String::new();
    loop {
        let spares_ready = wanted == 0
            || match readyz.spares().await {
                Ok(Some(s)) => {
                    last = format!(
                        "spares wanted {} ready {} starting {} ({})",
                        s.wanted, s.ready, s.starting, s.state
                    );
                    s.wanted == u64::from(wanted) && s.ready >= s.wanted
                }
                Ok(None) => {
                    return Err(format!(
                        "the gateway's /readyz shows no `spares` for server {SERVER_ID:?}: \
                         this build has no warm spares"
                    ));
                }
                Err(e) => {
                    last = e;
                    false
                }
            };
        let processes = procs::descendants_of(pid).len();
        let settled = baseline.is_none_or(|b| processes <= b);
        if spares_ready && settled {
            return Ok(processes);
        }
        if Instant::now() > deadline {
            let mut why =
                format!("the gateway was not ready for a new session within {READY_WAIT:?}:");
            if !spares_ready {
                why += &format!(" {wanted} spares wanted, last seen: {last};");
            }
            if !settled {
                why += &format!(
                    " {processes} processes under it, {} expected;",
                    baseline.unwrap_or(0)
                );
            }
            return Err(why.trim_end_matches(';').to_owned());
        }
        tokio::time::sleep(POLL).await;
    }
}

// --------------------------------------------------------- measurement ----

/// CPU time used by what is measured, to tell the rest of the machine's share.
struct CpuWindow {
    start: Instant,
    machine: Option<u64>,
    ours: u64,
}

impl CpuWindow {
    /// Ours: this process, the backends it spawned and waited for, and the
    /// gateway `server` with everything under it.
    fn ours(server: Option<u32>) -> u64 {
        procs::self_and_children_cpu_us() + server.and_then(procs::tree_cpu_us).unwrap_or(0)
    }

    fn begin(server: Option<u32>) -> CpuWindow {
        CpuWindow {
            start: Instant::now(),
            machine: procs::machine_busy_us(),
            ours: CpuWindow::ours(server),
        }
    }

    /// The rest of the machine's share of all CPUs since `begin`, in percent.
    fn others_pct(self, server: Option<u32>) -> Option<f64> {
        let ours = CpuWindow::ours(server).saturating_sub(self.ours);
        run::others_pct(
            self.machine,
            procs::machine_busy_us(),
            ours,
            self.start.elapsed(),
        )
    }
}

/// Measures `scenario` (`count` sessions one after another, or the burst) on
/// `backend` through `target`.
pub async fn measure(
    setup: &Setup,
    scenario: &'static str,
    backend: &Backend,
    target: SessionTarget,
    count: usize,
) -> SessionsMeasured {
    let mut m = SessionsMeasured::new(scenario, count);
    let burst = scenario == BURST;
    let Some((spares, mode)) = target.spares(scenario) else {
        let log = setup
            .work_dir
            .join(format!("direct-spawn-{}.log", backend.name));
        if burst {
            direct_burst(backend, &log, &mut m).await;
        } else {
            direct_sequence(backend, &log, count, &mut m).await;
        }
        return m;
    };
    let name = format!("{scenario}-{}-{}", backend.name, target.as_str());
    let config_path = setup.work_dir.join(format!("{name}.toml"));
    if let Err(e) = std::fs::write(&config_path, config(backend, spares, mode)) {
        m.setup_fail(format!("{}: {e}", config_path.display()));
        m.errors = m.sessions;
        return m;
    }
    let server = match ServerProcess::start(
        "the gateway",
        &setup.gateway_wrapper,
        &setup.gateway,
        &[
            "--config",
            &config_path.to_string_lossy(),
            "--listen",
            "127.0.0.1:0",
        ],
        "mcpgate listening on ",
        setup.work_dir.join(format!("{name}.log")),
    ) {
        Ok(server) => server,
        Err(e) => {
            m.setup_fail(e);
            m.errors = m.sessions;
            return m;
        }
    };
    match Endpoint::new(&server.base, &format!("/mcp/{SERVER_ID}"), false) {
        Ok(endpoint) if burst => gateway_burst(&server, &endpoint, backend, spares, &mut m).await,
        Ok(endpoint) => {
            gateway_sequence(&server, &endpoint, backend, spares, count, &mut m).await;
        }
        Err(e) => {
            m.setup_fail(e);
            m.errors = m.sessions;
        }
    }
    if let Err(e) = server.stop() {
        m.setup_fail(e);
    }
    m
}

// ---- through the gateway

/// One new session through the gateway, on a new connection: returns its
/// id (when it got one, to be closed) and its (init, first call) times.
async fn gateway_session(
    endpoint: &Endpoint,
    first_call: Bytes,
) -> (Option<HeaderValue>, Result<(Duration, Duration), String>) {
    let mut conn = match endpoint.connect().await {
        Ok(conn) => conn,
        Err(e) => return (None, Err(e)),
    };
    let t0 = Instant::now();
    let reply = match conn.post(None, rpc::initialize(0)).await {
        Ok(reply) => reply,
        Err(e) => return (None, Err(format!("initialize: {e}"))),
    };
    let session = reply.session.clone();
    if reply.status != StatusCode::OK {
        let body = String::from_utf8_lossy(&reply.body[..reply.body.len().min(300)]).into_owned();
        return (
            session,
            Err(format!("initialize got {}: {body}", reply.status)),
        );
    }
    let Some(session) = session else {
        return (None, Err("initialize answer has no Mcp-Session-Id".into()));
    };
    let outcome = async {
        let message = reply.message().ok_or("initialize answer has no message")?;
        rpc::check_answer(&message, 0).map_err(|e| format!("initialize: {e}"))?;
        let init = t0.elapsed();
        let note = conn
            .post(Some(&session), Bytes::from_static(rpc::INITIALIZED))
            .await?;
        if note.status != StatusCode::ACCEPTED {
            return Err(format!("notifications/initialized got {}", note.status));
        }
        let reply = conn.post(Some(&session), first_call).await?;
        if reply.status != StatusCode::OK {
            return Err(format!(
                "tools/call got {}: {}",
                reply.status,
                String::from_utf8_lossy(&reply.body[..reply.body.len().min(300)])
            ));
        }
        let message = reply.message().ok_or("tools/call answer has no message")?;
        rpc::check_answer(&message, 1)?;
        Ok((init, t0.elapsed()))
    }
    .await;
    (Some(session), outcome)
}

/// Closes a session; it must answer 200.
async fn close(endpoint: &Endpoint, session: &HeaderValue) -> Result<(), String> {
    let mut conn = endpoint.connect().await?;
    match conn.delete(session).await? {
        reply if reply.status == StatusCode::OK => Ok(()),
        reply => Err(format!("DELETE got {}", reply.status)),
    }
}

async fn gateway_sequence(
    server: &ServerProcess,
    endpoint: &Endpoint,
    backend: &Backend,
    spares: u32,
    count: usize,
    m: &mut SessionsMeasured,
) {
    let mut readyz = Readyz::new(endpoint);
    let window = CpuWindow::begin(Some(server.pid));
    let mut baseline = None;
    for done in 0..count {
        match wait_steady(&mut readyz, server.pid, spares, baseline).await {
            Ok(processes) => {
                baseline.get_or_insert(processes);
            }
            Err(e) => {
                // Not in its steady state within the bound: it will not be.
                m.fail(count - done, e);
                break;
            }
        }
        let (session, outcome) = gateway_session(endpoint, backend.first_call(1)).await;
        m.record(outcome);
        if let Some(session) = session
            && let Err(e) = close(endpoint, &session).await
        {
            m.setup_fail(e);
        }
    }
    // The last session's processes end inside the window too.
    if let Some(baseline) = baseline
        && let Err(e) = wait_steady(&mut readyz, server.pid, spares, Some(baseline)).await
    {
        m.setup_fail(format!("after the last session: {e}"));
    }
    m.other_load_pct = window.others_pct(Some(server.pid));
}

async fn gateway_burst(
    server: &ServerProcess,
    endpoint: &Endpoint,
    backend: &Backend,
    spares: u32,
    m: &mut SessionsMeasured,
) {
    let mut readyz = Readyz::new(endpoint);
    let baseline = match wait_steady(&mut readyz, server.pid, spares, None).await {
        Ok(processes) => processes,
        Err(e) => {
            m.fail(m.sessions, e);
            return;
        }
    };
    let window = CpuWindow::begin(Some(server.pid));
    let tasks: Vec<_> = (0..m.sessions)
        .map(|_| {
            let (endpoint, call) = (endpoint.clone(), backend.first_call(1));
            tokio::spawn(async move { gateway_session(&endpoint, call).await })
        })
        .collect();
    let mut sessions = Vec::with_capacity(tasks.len());
    for task in tasks {
        match task.await {
            Ok((session, outcome)) => {
                m.record(outcome);
                sessions.extend(session);
            }
            Err(e) => m.fail(1, e.to_string()),
        }
    }
    let closes: Vec<_> = sessions
        .into_iter()
        .map(|session| {
            let endpoint = endpoint.clone();
            tokio::spawn(async move { close(&endpoint, &session).await })
        })
        .collect();
    for closed in closes {
        if let Err(e) = closed.await.map_err(|e| e.to_string()).and_then(|r| r) {
            m.setup_fail(e);
        }
    }
    if let Err(e) = wait_steady(&mut readyz, server.pid, spares, Some(baseline)).await {
        m.setup_fail(format!("after the burst: {e}"));
    }
    m.other_load_pct = window.others_pct(Some(server.pid));
}

// ---- spawned directly

/// A backend the benchmark spawned, in a process group of its own, spoken
/// to over its pipes one request at a time.
struct Spawned {
    child: Child,
    /// Its pid, which is also its process group's id.
    pid: u32,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    stopped: bool,
}

impl Spawned {
    /// Spawns `backend` with its stderr appended to `log`.
    fn spawn(backend: &Backend, log: &Path) -> Result<Spawned, String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let mut child = tokio::process::Command::new(&backend.program)
            .args(&backend.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", backend.program.display()))?;
        let pid = child.id().unwrap_or(0);
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        Ok(Spawned {
            child,
            pid,
            stdin,
            stdout: BufReader::new(stdout).lines(),
            stopped: false,
        })
    }

    async fn send(&mut self, message: &[u8]) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("stdin is closed")?;
        let mut line = Vec::with_capacity(message.len() + 1);
        line.extend_from_slice(message);
        line.push(b'\n');
        stdin
            .write_all(&line)
            .await
            .map_err(|e| format!("write to backend {}: {e}", self.pid))
    }

    /// The answer to request `id` (other messages before it are skipped).
    async fn answer(&mut self, id: u64) -> Result<Vec<u8>, String> {
        let pid = self.pid;
        let read = async {
            loop {
                match self.stdout.next_line().await {
                    Ok(Some(line)) if rpc::answer_id(line.as_bytes()) == Some(id) => {
                        return Ok(line.into_bytes());
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => return Err(format!("backend {pid} closed its stdout")),
                    Err(e) => return Err(format!("backend {pid}: {e}")),
                }
            }
        };
        tokio::time::timeout(ANSWER_TIMEOUT, read)
            .await
            .map_err(|_| {
                format!("backend {pid} did not answer request {id} in {ANSWER_TIMEOUT:?}")
            })?
    }

    /// Closes its stdin and waits for it to exit; then SIGTERM, then SIGKILL
    /// to its group. An error if it needed SIGKILL, exited non-zero on its
    /// own, or left a process in its group.
    async fn stop(mut self) -> Result<(), String> {
        self.stdin.take();
        let pid = self.pid;
        let exited = match tokio::time::timeout(EOF_GRACE, self.child.wait()).await {
            Ok(status) => status
                .map_err(|e| format!("backend {pid}: {e}"))
                .and_then(|s| {
                    s.success()
                        .then_some(())
                        .ok_or_else(|| format!("backend {pid} exited with {s}"))
                }),
            Err(_) => {
                procs::signal_group(pid, libc::SIGTERM);
                match tokio::time::timeout(TERM_GRACE, self.child.wait()).await {
                    Ok(_) => Ok(()),
                    Err(_) => {
                        procs::signal_group(pid, libc::SIGKILL);
                        let _ = self.child.wait().await;
                        Err(format!("backend {pid} ignored SIGTERM; killed"))
                    }
                }
            }
        };
        self.stopped = true;
        if procs::signal_group(pid, 0) {
            procs::signal_group(pid, libc::SIGKILL);
            return exited.and(Err(format!(
                "backend {pid} exited but left processes in its group (killed)"
            )));
        }
        exited
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // Only reached without `stop` (a failed run): leave nothing behind.
        if !self.stopped {
            procs::signal_group(self.pid, libc::SIGKILL);
        }
    }
}

/// One new session on a backend spawned directly, timed from the spawn:
/// (init, first call) times, and how its stop went.
async fn direct_session(
    backend: &Backend,
    log: &Path,
) -> (Result<(Duration, Duration), String>, Result<(), String>) {
    let t0 = Instant::now();
    let mut process = match Spawned::spawn(backend, log) {
        Ok(process) => process,
        Err(e) => return (Err(e), Ok(())),
    };
    let outcome = async {
        process.send(&rpc::initialize(0)).await?;
        let answer = process.answer(0).await?;
        rpc::check_answer(&answer, 0).map_err(|e| format!("initialize: {e}"))?;
        let init = t0.elapsed();
        process.send(rpc::INITIALIZED).await?;
        process.send(&backend.first_call(1)).await?;
        rpc::check_answer(&process.answer(1).await?, 1)?;
        Ok((init, t0.elapsed()))
    }
    .await;
    (outcome, process.stop().await)
}

async fn direct_sequence(backend: &Backend, log: &Path, count: usize, m: &mut SessionsMeasured) {
    let window = CpuWindow::begin(None);
    for _ in 0..count {
        let (outcome, stopped) = direct_session(backend, log).await;
        m.record(outcome);
        if let Err(e) = stopped {
            m.setup_fail(e);
        }
    }
    m.other_load_pct = window.others_pct(None);
}

async fn direct_burst(backend: &Backend, log: &Path, m: &mut SessionsMeasured) {
    let window = CpuWindow::begin(None);
    let tasks: Vec<_> = (0..m.sessions)
        .map(|_| {
            let (backend, log) = (backend.clone(), log.to_owned());
            tokio::spawn(async move { direct_session(&backend, &log).await })
        })
        .collect();
    for task in tasks {
        match task.await {
            Ok((outcome, stopped)) => {
                m.record(outcome);
                if let Err(e) = stopped {
                    m.setup_fail(e);
                }
            }
            Err(e) => m.fail(1, e.to_string()),
        }
    }
    m.other_load_pct = window.others_pct(None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spares_are_read_from_the_servers_entry() {
        let readyz = br#"{"status":"ready","sessions":0,"servers":{"test":{"state":"idle",
            "processes":0,"spares":{"wanted":4,"ready":3,"starting":1,"state":"warming"}}}}"#;
        assert_eq!(
            spares_of(readyz, "test"),
            Ok(Some(Spares {
                wanted: 4,
                ready: 3,
                starting: 1,
                state: "warming".to_owned()
            }))
        );
        assert!(spares_of(readyz, "other").is_err());
    }

    #[test]
    fn a_gateway_without_spares_is_told_from_a_bad_answer() {
        let before = br#"{"status":"ready","servers":{"test":{"state":"idle","processes":0}}}"#;
        assert_eq!(spares_of(before, "test"), Ok(None));
        let null = br#"{"servers":{"test":{"spares":null}}}"#;
        assert_eq!(spares_of(null, "test"), Ok(None));
        assert!(spares_of(b"not json", "test").is_err());
        let no_count = br#"{"servers":{"test":{"spares":{"wanted":"4","ready":1}}}}"#;
        assert!(spares_of(no_count, "test").is_err());
        // `starting` and `state` are optional.
        let bare = br#"{"servers":{"test":{"spares":{"wanted":2,"ready":2}}}}"#;
        assert_eq!(spares_of(bare, "test").unwrap().unwrap().ready, 2);
    }

    /// A stand-in for the gateway's `/readyz`: `answers` in turn, then the
    /// last one again and again. Returns its endpoint and how many it served.
    async fn fake_readyz(
        answers: Vec<&'static str>,
    ) -> (Endpoint, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let served = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&served);
        let app = axum::Router::new().route(
            "/readyz",
            axum::routing::get(move || {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let answer = answers[n.min(answers.len() - 1)];
                async move { answer }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let endpoint = Endpoint::new(&format!("http://{addr}"), "/mcp/test", false).unwrap();
        (endpoint, served)
    }

    #[tokio::test]
    async fn the_wait_ends_when_every_spare_is_ready() {
        let warming = r#"{"servers":{"test":{"spares":{"wanted":2,"ready":0,"starting":2,"state":"warming"}}}}"#;
        let half = r#"{"servers":{"test":{"spares":{"wanted":2,"ready":1,"starting":1,"state":"warming"}}}}"#;
        let warm =
            r#"{"servers":{"test":{"spares":{"wanted":2,"ready":2,"starting":0,"state":"warm"}}}}"#;
        let (endpoint, served) = fake_readyz(vec![warming, half, warm]).await;
        let mut readyz = Readyz::new(&endpoint);
        // This test process has no children: nothing to settle.
        let waited = wait_steady(&mut readyz, std::process::id(), 2, Some(0)).await;
        assert_eq!(waited, Ok(0));
        assert_eq!(served.load(std::sync::atomic::Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn a_gateway_without_spares_fails_the_wait_at_once() {
        let before = r#"{"status":"ready","servers":{"test":{"state":"idle","processes":0}}}"#;
        let (endpoint, _) = fake_readyz(vec![before]).await;
        let start = Instant::now();
        let waited = wait_steady(&mut Readyz::new(&endpoint), std::process::id(), 2, None).await;
        assert!(waited.unwrap_err().contains("no warm spares"));
        assert!(start.elapsed() < Duration::from_secs(5));
        // Without spares wanted, /readyz is not even asked.
        let waited = wait_steady(&mut Readyz::new(&endpoint), std::process::id(), 0, None).await;
        assert_eq!(waited, Ok(0));
    }

    #[test]
    fn targets_parse_and_carry_their_spares() {
        for target in SessionTarget::ALL {
            assert_eq!(SessionTarget::parse(target.as_str()), Some(target));
        }
        assert_eq!(SessionTarget::parse("gateway"), None);
        assert_eq!(SessionTarget::DirectSpawn.spares(NEW_SESSION), None);
        assert_eq!(SessionTarget::GatewayCold.spares(BURST), Some((0, None)));
        assert_eq!(
            SessionTarget::GatewayWarmStarted.spares(BURST),
            Some((4, Some("started")))
        );
        assert_eq!(
            SessionTarget::GatewayWarmInitialized.spares(NEW_SESSION),
            Some((2, Some("initialized")))
        );
        assert!(!SessionTarget::GatewayWarmInitialized.applies_to(BURST));
    }

    #[test]
    fn only_warm_configs_name_spares() {
        let backends = Backend::all(Path::new("/bin/test-server"), Path::new("/deps"));
        let cold = config(&backends[2], 0, None);
        assert!(!cold.contains("spares") && !cold.contains("warm"));
        assert!(
            cold.contains(r#"args = ["-m", "mcp_server_time"]"#),
            "{cold}"
        );
        let warm = config(&backends[0], 4, Some("started"));
        assert!(warm.contains("max_spares = 16\n"), "{warm}");
        assert!(
            warm.contains("warm_spares = 4\nwarm = \"started\"\n"),
            "{warm}"
        );
        assert!(
            warm.contains(r#"args = ["--slow-start-ms", "1000"]"#),
            "{warm}"
        );
    }

    #[test]
    fn missing_backends_say_what_installs_them() {
        let backends = Backend::all(
            Path::new("/nonexistent/test-server"),
            Path::new("/nonexistent"),
        );
        let why = backends[1].missing().unwrap();
        assert!(why.contains("scripts/install-test-deps.sh"), "{why}");
        assert!(backends[0].missing().unwrap().contains("cargo build"));
        assert!(backends.iter().all(|b| b.applies_to(NEW_SESSION)));
        assert_eq!(backends.iter().filter(|b| b.applies_to(BURST)).count(), 1);
    }

    #[test]
    fn burst_lines_split_the_four_fastest_from_the_rest() {
        let mut m = SessionsMeasured::new(BURST, 0);
        for i in 1..=20u64 {
            m.record(Ok((
                Duration::from_millis(i),
                Duration::from_millis(100 * i),
            )));
        }
        let line = SessionLine::new(
            BURST,
            "test-server-1s",
            SessionTarget::GatewayWarmStarted,
            &m,
        );
        assert_eq!((line.sessions, line.in_flight), (20, 20));
        assert_eq!(line.first4_max_ms, Some(400.0));
        // The median (nearest rank) of 500..=2000.
        assert_eq!(line.rest_p50_ms, Some(1200.0));
        assert_eq!(line.first_call_max_ms, Some(2000.0));
        assert_eq!((line.warm_spares, line.warm), (Some(4), Some("started")));

        let mut one = SessionsMeasured::new(NEW_SESSION, 3);
        one.record(Ok((Duration::from_millis(5), Duration::from_millis(9))));
        one.record(Err("boom".to_owned()));
        let line = SessionLine::new(NEW_SESSION, "x", SessionTarget::DirectSpawn, &one);
        assert_eq!((line.first4_max_ms, line.rest_p50_ms), (None, None));
        assert_eq!((line.warm_spares, line.warm), (None, None));
        assert_eq!(line.init_p50_ms, Some(5.0));
        assert_eq!(
            (line.errors, line.first_error.as_deref()),
            (1, Some("boom"))
        );
    }
}
