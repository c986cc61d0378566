//! Running one scenario against one target: open the sessions (at once, and
//! later one by one), warm up, measure the load, read memory and CPU time,
//! close everything and check it closed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hyper::StatusCode;
use hyper::header::HeaderValue;

use crate::client::{self, Endpoint};
use crate::procs::{self, ServerProcess};
use crate::report::{Measured, Target};
use crate::rpc::{self, Call};
use crate::stdio::Backend;

/// One load scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    pub sessions: usize,
    pub in_flight: usize,
    pub requests: usize,
    pub warmup: usize,
    pub call: Call,
    /// The client accepts only `text/event-stream` answers.
    pub sse_only: bool,
    /// Also measure the server's peak RSS growth during the run.
    pub peak_rss: bool,
}

/// Where the programs are and how to start them.
pub struct Setup {
    pub gateway: PathBuf,
    pub test_server: PathBuf,
    pub gateway_wrapper: Vec<String>,
    pub ceiling_wrapper: Vec<String>,
    pub config: PathBuf,
    pub work_dir: PathBuf,
}

/// The routed endpoint the gateway serves the test server on.
pub const SERVER_ID: &str = "test";

/// Ids of warm-up requests start here; measured ones at [`MEASURED_IDS`].
const WARMUP_IDS: u64 = 1;
const MEASURED_IDS: u64 = 1 << 32;
/// Concurrency of the DELETEs that close sessions.
const CLOSE_CONCURRENCY: usize = 64;
/// Settling time before a memory reading.
const SETTLE: Duration = Duration::from_millis(300);

/// What a load run gave.
#[derive(Default)]
struct Load {
    latencies_ns: Vec<u64>,
    errors: usize,
    first_error: Option<String>,
    wall: Duration,
}

impl Load {
    fn merge(&mut self, mut other: Load) {
        self.latencies_ns.append(&mut other.latencies_ns);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    /// Counts one request: its latency if it succeeded, else its error.
    fn record(&mut self, took: Duration, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => self.latencies_ns.push(took.as_nanos() as u64),
            Err(e) => self.fail(e),
        }
    }

    fn fail(&mut self, error: String) {
        self.errors += 1;
        self.first_error.get_or_insert(error);
    }

    /// Merges the workers' loads into this one, sets the wall time since
    /// `start`, and sorts the latencies.
    async fn gather(mut self, workers: Vec<tokio::task::JoinHandle<Load>>, start: Instant) -> Load {
        for worker in workers {
            match worker.await {
                Ok(part) => self.merge(part),
                Err(e) => self.fail(e.to_string()),
            }
        }
        self.wall = start.elapsed();
        self.latencies_ns.sort_unstable();
        self
    }
}

fn check(message: &[u8], id: u64, call: Call, full: bool) -> Result<(), String> {
    if full {
        rpc::full_check(message, id, call)
    } else {
        rpc::quick_check(message, id, call)
    }
}

/// Measures `scenario` on `target`.
pub async fn measure(setup: &Setup, scenario: &Scenario, target: Target) -> Measured {
    let mut m = Measured {
        sessions: scenario.sessions,
        in_flight: scenario.in_flight,
        requests: scenario.requests,
        ..Measured::default()
    };
    match target {
        Target::StdioFloor => measure_floor(setup, scenario, &mut m).await,
        Target::Gateway | Target::HttpCeiling => {
            let log = setup
                .work_dir
                .join(format!("{}-{}.log", target.as_str(), scenario.name));
            let started = match target {
                Target::Gateway => ServerProcess::start(
                    "the gateway",
                    &setup.gateway_wrapper,
                    &setup.gateway,
                    &[
                        "--config",
                        &setup.config.to_string_lossy(),
                        "--listen",
                        "127.0.0.1:0",
                    ],
                    "mcpgate listening on ",
                    log,
                ),
                _ => std::env::current_exe()
                    .map_err(|e| e.to_string())
                    .and_then(|me| {
                        ServerProcess::start(
                            "the HTTP ceiling",
                            &setup.ceiling_wrapper,
                            &me,
                            &["--serve-ceiling", "--listen", "127.0.0.1:0"],
                            crate::ceiling::ANNOUNCE,
                            log,
                        )
                    }),
            };
            let server = match started {
                Ok(server) => server,
                Err(e) => {
                    m.setup_errors += 1;
                    m.note_error(e);
                    return m;
                }
            };
            measure_http(&server, scenario, &mut m).await;
            if let Err(e) = server.stop() {
                m.setup_errors += 1;
                m.note_error(e);
            }
        }
    }
    m
}

// ---------------------------------------------------------------- HTTP ----

/// Opens `count` sessions at once, each on its own new connection.
/// Returns the sessions, each one's time, and the wall time.
async fn open_at_once(
    endpoint: &Endpoint,
    count: usize,
    m: &mut Measured,
) -> (Vec<HeaderValue>, Vec<Duration>, Duration) {
    let start = Instant::now();
    let tasks: Vec<_> = (0..count)
        .map(|_| {
            let endpoint = endpoint.clone();
            tokio::spawn(async move {
                let t0 = Instant::now();
                let mut conn = endpoint.connect().await?;
                let session = client::open_session(&mut conn).await?;
                Ok::<_, String>((session, t0.elapsed()))
            })
        })
        .collect();
    let mut sessions = Vec::with_capacity(count);
    let mut times = Vec::with_capacity(count);
    for task in tasks {
        match task.await.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok((session, took)) => {
                sessions.push(session);
                times.push(took);
            }
            Err(e) => {
                m.setup_errors += 1;
                m.note_error(format!("opening a session: {e}"));
            }
        }
    }
    (sessions, times, start.elapsed())
}

/// Opens `count` sessions one after another on one connection.
async fn open_one_by_one(
    endpoint: &Endpoint,
    count: usize,
    m: &mut Measured,
) -> (Vec<HeaderValue>, Vec<Duration>, Duration) {
    let start = Instant::now();
    let mut sessions = Vec::with_capacity(count);
    let mut times = Vec::with_capacity(count);
    let mut conn = match endpoint.connect().await {
        Ok(conn) => conn,
        Err(e) => {
            m.setup_errors += 1;
            m.note_error(e);
            return (sessions, times, start.elapsed());
        }
    };
    for _ in 0..count {
        let t0 = Instant::now();
        match client::open_session(&mut conn).await {
            Ok(session) => {
                times.push(t0.elapsed());
                sessions.push(session);
            }
            Err(e) => {
                m.setup_errors += 1;
                m.note_error(format!("opening a session: {e}"));
                match endpoint.connect().await {
                    Ok(fresh) => conn = fresh,
                    Err(_) => break,
                }
            }
        }
    }
    (sessions, times, start.elapsed())
}

/// DELETEs every session; each must answer 200.
async fn close_sessions(endpoint: &Endpoint, sessions: Vec<HeaderValue>, m: &mut Measured) {
    let sessions = Arc::new(sessions);
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..CLOSE_CONCURRENCY.min(sessions.len()))
        .map(|_| {
            let (endpoint, sessions, next) =
                (endpoint.clone(), Arc::clone(&sessions), Arc::clone(&next));
            tokio::spawn(async move {
                let mut failures = Vec::new();
                let mut conn = match endpoint.connect().await {
                    Ok(conn) => conn,
                    Err(e) => return vec![e],
                };
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(session) = sessions.get(i) else {
                        return failures;
                    };
                    match conn.delete(session).await {
                        Ok(reply) if reply.status == StatusCode::OK => {}
                        Ok(reply) => failures.push(format!("DELETE got {}", reply.status)),
                        Err(e) => {
                            failures.push(format!("DELETE: {e}"));
                            match endpoint.connect().await {
                                Ok(fresh) => conn = fresh,
                                Err(e) => {
                                    failures.push(e);
                                    return failures;
                                }
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        for failure in worker.await.unwrap_or_else(|e| vec![e.to_string()]) {
            m.setup_errors += 1;
            m.note_error(failure);
        }
    }
}

/// Sends `count` `tools/call` requests over the sessions (request `i` on
/// session `i % sessions`), `in_flight` at a time, each on its own connection.
async fn http_load(
    endpoint: &Endpoint,
    sessions: &Arc<Vec<HeaderValue>>,
    count: usize,
    in_flight: usize,
    call: Call,
    first_id: u64,
    full_check: bool,
) -> Load {
    let mut load = Load::default();
    if sessions.is_empty() || count == 0 {
        return load;
    }
    let mut conns = Vec::with_capacity(in_flight);
    for _ in 0..in_flight.min(count) {
        match endpoint.connect().await {
            Ok(conn) => conns.push(conn),
            Err(e) => load.fail(e),
        }
    }
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let (endpoint, sessions, next) =
                (endpoint.clone(), Arc::clone(sessions), Arc::clone(&next));
            tokio::spawn(async move {
                let mut load = Load {
                    latencies_ns: Vec::with_capacity(count / in_flight + 1),
                    ..Load::default()
                };
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return load;
                    }
                    let id = first_id + i as u64;
                    let session = &sessions[i % sessions.len()];
                    let body = bytes::Bytes::from(rpc::tools_call(id, call));
                    let t0 = Instant::now();
                    let result = conn.post(Some(session), body).await;
                    let took = t0.elapsed();
                    let outcome = match result {
                        Ok(reply) if reply.status == StatusCode::OK => match reply.message() {
                            Some(message) => check(&message, id, call, full_check),
                            None => Err("an SSE answer without a message".to_owned()),
                        },
                        Ok(reply) => Err(format!(
                            "HTTP {}: {}",
                            reply.status,
                            String::from_utf8_lossy(&reply.body[..reply.body.len().min(300)])
                        )),
                        Err(e) => {
                            if let Ok(fresh) = endpoint.connect().await {
                                conn = fresh;
                            }
                            Err(e)
                        }
                    };
                    load.record(took, outcome);
                }
            })
        })
        .collect();
    load.gather(workers, start).await
}

/// CPU time of `pids` (those that still exist), microseconds each.
fn cpu_of(pids: &[u32]) -> Vec<Option<u64>> {
    pids.iter().map(|pid| procs::cpu_us(*pid)).collect()
}

fn cpu_delta(before: &[Option<u64>], after: &[Option<u64>]) -> u64 {
    before
        .iter()
        .zip(after)
        .filter_map(|(b, a)| Some(a.as_ref()?.saturating_sub(*b.as_ref()?)))
        .sum()
}

/// The share of all CPUs that processes outside the measurement used during it.
fn other_load(
    machine0: Option<u64>,
    machine1: Option<u64>,
    m: &Measured,
    wall: Duration,
) -> Option<f64> {
    let ours =
        m.client_cpu_us.unwrap_or(0) + m.target_cpu_us.unwrap_or(0) + m.backend_cpu_us.unwrap_or(0);
    others_pct(machine0, machine1, ours, wall)
}

/// The share of all CPUs, in percent, that the machine used beyond `ours`
/// (microseconds of CPU of the measured processes) between two readings of
/// [`procs::machine_busy_us`] `wall` apart; none for runs too short to tell.
pub fn others_pct(
    machine0: Option<u64>,
    machine1: Option<u64>,
    ours: u64,
    wall: Duration,
) -> Option<f64> {
    let busy = machine1?.checked_sub(machine0?)?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let capacity = wall.as_micros() as f64 * cpus as f64;
    // `/proc/stat` counts in clock ticks (often 10 ms): too coarse for short runs.
    (wall >= Duration::from_millis(500))
        .then(|| 100.0 * busy.saturating_sub(ours) as f64 / capacity)
}

/// Samples the RSS of `pid` every millisecond until stopped; returns the maximum.
struct RssSampler {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, max) = (Arc::clone(&stop), Arc::clone(&max));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(rss) = procs::rss_kib(pid) {
                        max.fetch_max(rss, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        RssSampler { stop, max, thread }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.max.load(Ordering::Relaxed)
    }
}

async fn measure_http(server: &ServerProcess, sc: &Scenario, m: &mut Measured) {
    let endpoint = match Endpoint::new(&server.base, &format!("/mcp/{SERVER_ID}"), sc.sse_only) {
        Ok(endpoint) => endpoint,
        Err(e) => {
            m.setup_errors += 1;
            m.note_error(e);
            return;
        }
    };
    let pid = server.pid;
    tokio::time::sleep(SETTLE).await;
    m.rss_idle_kib = procs::rss_kib(pid);

    // Sessions for the run, opened at once.
    let (sessions, times, wall) = open_at_once(&endpoint, sc.sessions, m).await;
    m.setup_parallel = Some(wall);
    m.setup_slowest = times.iter().max().copied();
    tokio::time::sleep(SETTLE).await;
    m.rss_after_setup_kib = procs::rss_kib(pid);
    let sessions = Arc::new(sessions);

    // A peak is measured from before the first big answer, warm-up included:
    // buffers that grow on the first one stay grown.
    let peak_reset = sc.peak_rss && procs::reset_peak_rss(pid);
    let rss_before = procs::rss_kib(pid);
    let sampler = sc.peak_rss.then(|| RssSampler::start(pid));
    let warm = http_load(
        &endpoint,
        &sessions,
        sc.warmup,
        sc.in_flight,
        sc.call,
        WARMUP_IDS,
        true,
    )
    .await;
    if warm.errors > 0 {
        m.setup_errors += warm.errors;
        m.note_error(format!("warm-up: {}", warm.first_error.unwrap_or_default()));
    }

    // Per session: the gateway's supervisor process and the backend under it.
    let backends = procs::descendants_of(pid);
    let window = Instant::now();
    let (machine0, client0, server0, backends0) = (
        procs::machine_busy_us(),
        procs::self_cpu_us(),
        procs::cpu_us(pid),
        cpu_of(&backends),
    );
    let load = http_load(
        &endpoint,
        &sessions,
        sc.requests,
        sc.in_flight,
        sc.call,
        MEASURED_IDS,
        false,
    )
    .await;
    let (machine1, client1, server1, backends1) = (
        procs::machine_busy_us(),
        procs::self_cpu_us(),
        procs::cpu_us(pid),
        cpu_of(&backends),
    );
    let sampled_peak = sampler.map(RssSampler::finish);
    m.client_cpu_us = Some(client1.saturating_sub(client0));
    m.target_cpu_us = server0.zip(server1).map(|(a, b)| b.saturating_sub(a));
    m.backend_cpu_us = (!backends.is_empty()).then(|| cpu_delta(&backends0, &backends1));
    m.other_load_pct = other_load(machine0, machine1, m, window.elapsed());
    m.errors = load.errors;
    if let Some(e) = &load.first_error {
        m.note_error(e.clone());
    }
    m.wall = load.wall;
    m.latencies_ns = load.latencies_ns;
    if sc.peak_rss {
        let peak = if peak_reset {
            procs::peak_rss_kib(pid)
        } else {
            sampled_peak
        };
        m.rss_peak_growth_kib = peak.zip(rss_before).map(|(p, b)| p.saturating_sub(b));
    }
    tokio::time::sleep(SETTLE).await;
    m.rss_after_run_kib = procs::rss_kib(pid);

    let sessions = Arc::try_unwrap(sessions).unwrap_or_else(|a| a.as_ref().clone());
    close_sessions(&endpoint, sessions, m).await;

    // The same number of sessions, one by one.
    let (serial, times, wall) = open_one_by_one(&endpoint, sc.sessions, m).await;
    m.setup_serial = Some(wall);
    m.setup_one = median(times);
    close_sessions(&endpoint, serial, m).await;
}

fn median(mut times: Vec<Duration>) -> Option<Duration> {
    times.sort_unstable();
    times.get(times.len().saturating_sub(1) / 2).copied()
}

// ------------------------------------------------------------- floor ----

async fn start_at_once(
    program: &Path,
    count: usize,
    m: &mut Measured,
) -> (Vec<Arc<Backend>>, Vec<Duration>, Duration) {
    let start = Instant::now();
    let tasks: Vec<_> = (0..count)
        .map(|_| {
            let program = program.to_owned();
            tokio::spawn(async move {
                let t0 = Instant::now();
                Backend::start(&program).await.map(|b| (b, t0.elapsed()))
            })
        })
        .collect();
    let mut backends = Vec::with_capacity(count);
    let mut times = Vec::with_capacity(count);
    for task in tasks {
        match task.await.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok((backend, took)) => {
                backends.push(backend);
                times.push(took);
            }
            Err(e) => {
                m.setup_errors += 1;
                m.note_error(e);
            }
        }
    }
    (backends, times, start.elapsed())
}

async fn stop_all(backends: Vec<Arc<Backend>>, m: &mut Measured) {
    let stops: Vec<_> = backends
        .into_iter()
        .map(|b| tokio::spawn(async move { b.stop().await }))
        .collect();
    for stop in stops {
        if let Err(e) = stop.await.map_err(|e| e.to_string()).and_then(|r| r) {
            m.setup_errors += 1;
            m.note_error(e);
        }
    }
}

async fn floor_load(
    backends: &Arc<Vec<Arc<Backend>>>,
    count: usize,
    in_flight: usize,
    call: Call,
    first_id: u64,
    full_check: bool,
) -> Load {
    let load = Load::default();
    if backends.is_empty() || count == 0 {
        return load;
    }
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..in_flight.min(count))
        .map(|_| {
            let (backends, next) = (Arc::clone(backends), Arc::clone(&next));
            tokio::spawn(async move {
                let mut load = Load {
                    latencies_ns: Vec::with_capacity(count / in_flight + 1),
                    ..Load::default()
                };
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return load;
                    }
                    let id = first_id + i as u64;
                    let backend = &backends[i % backends.len()];
                    let message = rpc::tools_call(id, call);
                    let t0 = Instant::now();
                    let result = backend.call(id, &message).await;
                    let took = t0.elapsed();
                    load.record(
                        took,
                        result.and_then(|answer| check(&answer, id, call, full_check)),
                    );
                }
            })
        })
        .collect();
    load.gather(workers, start).await
}

async fn measure_floor(setup: &Setup, sc: &Scenario, m: &mut Measured) {
    let (backends, times, wall) = start_at_once(&setup.test_server, sc.sessions, m).await;
    m.setup_parallel = Some(wall);
    m.setup_slowest = times.iter().max().copied();
    let backends = Arc::new(backends);
    let warm = floor_load(
        &backends,
        sc.warmup,
        sc.in_flight,
        sc.call,
        WARMUP_IDS,
        true,
    )
    .await;
    if warm.errors > 0 {
        m.setup_errors += warm.errors;
        m.note_error(format!("warm-up: {}", warm.first_error.unwrap_or_default()));
    }
    let pids: Vec<u32> = backends.iter().map(|b| b.pid).collect();
    let window = Instant::now();
    let (machine0, client0, backends0) = (
        procs::machine_busy_us(),
        procs::self_cpu_us(),
        cpu_of(&pids),
    );
    let load = floor_load(
        &backends,
        sc.requests,
        sc.in_flight,
        sc.call,
        MEASURED_IDS,
        false,
    )
    .await;
    let (machine1, client1, backends1) = (
        procs::machine_busy_us(),
        procs::self_cpu_us(),
        cpu_of(&pids),
    );
    m.client_cpu_us = Some(client1.saturating_sub(client0));
    m.backend_cpu_us = Some(cpu_delta(&backends0, &backends1));
    m.other_load_pct = other_load(machine0, machine1, m, window.elapsed());
    m.errors = load.errors;
    if let Some(e) = &load.first_error {
        m.note_error(e.clone());
    }
    m.wall = load.wall;
    m.latencies_ns = load.latencies_ns;
    let backends = Arc::try_unwrap(backends).unwrap_or_else(|a| a.as_ref().clone());
    stop_all(backends, m).await;

    // The same number of processes, one by one.
    let start = Instant::now();
    let mut serial = Vec::with_capacity(sc.sessions);
    let mut times = Vec::with_capacity(sc.sessions);
    for _ in 0..sc.sessions {
        let t0 = Instant::now();
        match Backend::start(&setup.test_server).await {
            Ok(backend) => {
                times.push(t0.elapsed());
                serial.push(backend);
            }
            Err(e) => {
                m.setup_errors += 1;
                m.note_error(e);
            }
        }
    }
    m.setup_serial = Some(start.elapsed());
    m.setup_one = median(times);
    stop_all(serial, m).await;
}
