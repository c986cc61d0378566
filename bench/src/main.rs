//! `mcpgate-bench`: the load benchmark of mcpgate.
//!
//! Runs each scenario (S sessions, N `tools/call` requests of the test
//! server's `echo` or `big` tool, C in flight) against three targets, one after
//! another, each started fresh:
//! - `stdio-floor`: the test server spoken to directly over its pipes (the
//!   least any route to the backend can cost);
//! - `http-ceiling`: a trivial responder on the gateway's HTTP stack with no
//!   backend (what HTTP alone costs);
//! - `gateway`: the release `mcpgate` binary with the test server as backend.
//!
//! It prints one JSON line per scenario and target on stdout, progress and a
//! verdict on the design targets on stderr, and exits non-zero if any request
//! failed or anything it started did not stop cleanly.
//!
//! Two more scenarios run only when named with `--only`: `new-session` and
//! `new-session-burst` ([`fresh`]) measure how long a new session takes on
//! real backends, spawned directly or through the gateway with and without
//! warm spares (targets `direct-spawn`, `gateway-cold`,
//! `gateway-warm-started`, `gateway-warm-initialized`).
//!
//! Run it with `cargo run --release -p mcpgate-bench -- [--quick]`: it first
//! builds the gateway and the test server with `cargo build --release --bins
//! -p mcpgate` (skip with `--no-build`). See docs/PERFORMANCE.md.
//!
//! Layout: [`client`] (raw hyper client), [`stdio`] (the floor), [`ceiling`]
//! (the ceiling's server, a mode of this binary), [`run`] (one scenario on one
//! target), [`procs`] (processes, `/proc`), [`report`] (the JSON line),
//! [`rpc`] (messages and answer checks), [`fresh`] (the new-session scenarios).

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(rust_2018_idioms)]

mod ceiling;
mod client;
mod fresh;
mod procs;
mod report;
mod rpc;
mod run;
mod stdio;
mod verdict;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

use crate::fresh::{Backend, SessionLine, SessionTarget, SessionsMeasured};
use crate::report::{Line, Measured, Target};
use crate::rpc::Call;
use crate::run::{Scenario, Setup};

/// Load benchmark of mcpgate against the direct-stdio floor and the HTTP ceiling.
#[derive(Debug, Parser)]
#[command(version)]
struct Options {
    /// Small request counts, for a smoke run (CI).
    #[arg(long)]
    quick: bool,
    /// Run only these scenarios (comma-separated names; see --list).
    /// new-session and new-session-burst run only when named here.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Run only these targets: gateway, stdio-floor, http-ceiling; for the
    /// new-session scenarios direct-spawn, gateway-cold, gateway-warm-started,
    /// gateway-warm-initialized.
    #[arg(long, value_delimiter = ',')]
    targets: Vec<String>,
    /// New-session scenarios: only these backends (test-server-1s,
    /// server-everything, mcp-server-time).
    #[arg(long, value_delimiter = ',')]
    backends: Vec<String>,
    /// Measured requests per scenario, instead of the scenario's own count.
    #[arg(long)]
    requests: Option<usize>,
    /// Warm-up requests per scenario, instead of the scenario's own count.
    #[arg(long)]
    warmup: Option<usize>,
    /// Do not run `cargo build --release --bins -p mcpgate` first.
    #[arg(long)]
    no_build: bool,
    /// Start the gateway under this command (split on spaces), e.g.
    /// "valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out".
    #[arg(long)]
    gateway_wrapper: Option<String>,
    /// Start the HTTP ceiling under this command (as --gateway-wrapper).
    #[arg(long)]
    ceiling_wrapper: Option<String>,
    /// Threads of the client's runtime (1: a current-thread runtime, the cheapest).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Before each measurement, wait up to this many seconds for the rest of
    /// the machine to go quiet (under 15% of one CPU); 0 to never wait.
    /// Default: 20, or 2 with --quick.
    #[arg(long)]
    quiet_wait: Option<u64>,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
    /// Run as the HTTP ceiling server (used by the benchmark itself).
    #[arg(long, hide = true)]
    serve_ceiling: bool,
    /// Address of the HTTP ceiling server.
    #[arg(long, hide = true, default_value = "127.0.0.1:0")]
    listen: String,
}

/// The scenarios, full or quick.
fn scenarios(quick: bool) -> Vec<Scenario> {
    let q = |full: usize, small: usize| if quick { small } else { full };
    let echo = |name, sessions, in_flight, requests, warmup| Scenario {
        name,
        sessions,
        in_flight,
        requests,
        warmup,
        call: Call::Echo,
        sse_only: false,
        peak_rss: false,
    };
    let many = q(1000, 100);
    let hundred = q(100, 20);
    vec![
        echo("1x1", 1, 1, q(10_000, 300), q(1_000, 50)),
        echo("1x16", 1, 16, q(40_000, 1_000), q(4_000, 100)),
        Scenario {
            sse_only: true,
            ..echo("1x16-sse", 1, 16, q(20_000, 500), q(2_000, 50))
        },
        echo("50x50", 50, 50, q(40_000, 1_000), q(4_000, 100)),
        // Every session is called once in the warm-up and once measured.
        echo("1000-sessions", many, many, many, many),
        echo("setup-100", hundred, hundred, hundred, hundred),
        Scenario {
            name: "big-1MiB",
            call: Call::Big(1 << 20),
            peak_rss: true,
            ..echo("", 1, 1, q(100, 10), q(10, 2))
        },
        Scenario {
            name: "big-1MiB-x4",
            call: Call::Big(1 << 20),
            peak_rss: true,
            ..echo("", 1, 4, q(200, 20), q(20, 4))
        },
    ]
}

fn main() -> ExitCode {
    let options = Options::parse();
    if options.serve_ceiling {
        return match ceiling::serve(&options.listen) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mcpgate-bench ceiling: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match bench(&options) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("mcpgate-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (this crate lives in `bench/`).
fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_owned()
}

/// Builds (unless told not to) and finds the release gateway and test server.
fn release_binaries(options: &Options) -> Result<(PathBuf, PathBuf), String> {
    let root = workspace_root();
    if !options.no_build {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        eprintln!("building: cargo build --release --bins -p mcpgate");
        let status = std::process::Command::new(&cargo)
            .args(["build", "--release", "--bins", "-p", "mcpgate"])
            .current_dir(&root)
            .status()
            .map_err(|e| format!("cannot run cargo ({e}); run `cargo build --release --bins` yourself and pass --no-build"))?;
        if !status.success() {
            return Err(format!(
                "cargo build --release --bins -p mcpgate failed ({status})"
            ));
        }
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let release = target.join("release");
    let (gateway, test_server) = (release.join("mcpgate"), release.join("mcpgate-test-server"));
    for path in [&gateway, &test_server] {
        if !path.exists() {
            return Err(format!(
                "{} is missing: run `cargo build --release --bins` first",
                path.display()
            ));
        }
    }
    Ok((gateway, test_server))
}

/// The gateway's config: `command args...` as the one backend, quick stops,
/// room for 2,000 sessions, generous timeouts; `gateway` and `server` are
/// more lines for the `[gateway]` and the server's table.
fn gateway_config(command: &Path, args: &[String], gateway: &str, server: &str) -> String {
    let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    format!(
        r#"[gateway]
listen = "127.0.0.1:0"
stop_grace = "500ms"
max_sessions = 2000
startup_timeout = "120s"
tool_timeout = "120s"
shutdown_timeout = "30s"
session_idle_timeout = "1h"
{gateway}
[servers.{}]
command = {:?}
args = [{}]
{server}"#,
        run::SERVER_ID,
        command.to_string_lossy(),
        args.join(", ")
    )
}

/// Prints what is measured: the source version and the machine.
fn describe_machine() {
    let git = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(workspace_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    eprintln!("source {git}; {cpus} CPUs ({cpu})");
}

fn split_command(command: Option<&str>) -> Vec<String> {
    command
        .map(|c| c.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// True when a measurement had no failures; otherwise says how many, and
/// the first.
fn no_failures(errors: usize, setup_errors: usize, first: Option<&str>) -> bool {
    if errors == 0 && setup_errors == 0 {
        return true;
    }
    eprintln!(
        "  {errors} errors, {setup_errors} setup errors; first: {}",
        first.unwrap_or("?")
    );
    false
}

/// Waits (as the options say) for the rest of the machine to go quiet.
fn wait_for_quiet(options: &Options) {
    let quiet_wait = options
        .quiet_wait
        .unwrap_or(if options.quick { 2 } else { 20 });
    if quiet_wait > 0 {
        let share = procs::wait_for_quiet(0.15, std::time::Duration::from_secs(quiet_wait));
        if share >= 0.15 {
            eprintln!(
                "  the machine is busy (others use {:.0}% of a CPU); measuring anyway",
                share * 100.0
            );
        }
    }
}

fn bench(options: &Options) -> Result<bool, String> {
    let all = scenarios(options.quick);
    // New sessions one after another, per backend and target.
    let new_sessions = if options.quick { 3 } else { 10 };
    if options.list {
        for s in &all {
            println!(
                "{:<17} sessions={:<5} in_flight={:<5} requests={}",
                s.name, s.sessions, s.in_flight, s.requests
            );
        }
        println!(
            "{:<17} sessions={new_sessions:<5} in_flight=1     new sessions one by one on each backend (only with --only)",
            fresh::NEW_SESSION
        );
        println!(
            "{:<17} sessions={n:<5} in_flight={n:<5} new sessions at once on test-server-1s (only with --only)",
            fresh::BURST,
            n = fresh::BURST_SESSIONS
        );
        return Ok(true);
    }
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this benchmark was built without --release; its own client is slow, so its numbers mean little"
        );
    }
    for name in &options.only {
        if !all.iter().any(|s| s.name == name) && !fresh::SCENARIOS.contains(&name.as_str()) {
            return Err(format!("unknown scenario {name:?}; see --list"));
        }
    }
    let (mut targets, mut session_targets) = (Vec::new(), Vec::new());
    for name in &options.targets {
        if let Some(t) = Target::parse(name) {
            targets.push(t);
        } else if let Some(t) = SessionTarget::parse(name) {
            session_targets.push(t);
        } else {
            let known: Vec<&str> = Target::ALL
                .iter()
                .map(|t| t.as_str())
                .chain(SessionTarget::ALL.iter().map(|t| t.as_str()))
                .collect();
            return Err(format!(
                "unknown target {name:?}; known: {}",
                known.join(", ")
            ));
        }
    }
    if options.targets.is_empty() {
        targets = Target::ALL.to_vec();
        session_targets = SessionTarget::ALL.to_vec();
    }
    for name in &options.backends {
        if !fresh::BACKENDS.contains(&name.as_str()) {
            return Err(format!(
                "unknown backend {name:?}; known: {}",
                fresh::BACKENDS.join(", ")
            ));
        }
    }
    let chosen_new: Vec<&'static str> = fresh::SCENARIOS
        .into_iter()
        .filter(|s| options.only.iter().any(|o| o == s))
        .collect();
    if options.only.is_empty() {
        eprintln!(
            "(new-session and new-session-burst run only when named: --only {},{})",
            fresh::NEW_SESSION,
            fresh::BURST
        );
    }
    let chosen: Vec<Scenario> = all
        .into_iter()
        .filter(|s| options.only.is_empty() || options.only.iter().any(|o| o == s.name))
        .map(|mut s| {
            if let Some(n) = options.requests {
                s.requests = n;
            }
            if let Some(n) = options.warmup {
                s.warmup = n;
            }
            s
        })
        .collect();
    if !chosen.is_empty() && targets.is_empty() {
        eprintln!("(no load target among --targets: the load scenarios measure nothing)");
    }
    if !chosen_new.is_empty() && session_targets.is_empty() {
        eprintln!(
            "(no new-session target among --targets: the new-session scenarios measure nothing)"
        );
    }

    let (soft, hard) = procs::raise_open_file_limit();
    eprintln!("open-file limit: {soft} (hard {hard})");
    let (gateway, test_server) = release_binaries(options)?;
    describe_machine();
    let dir = tempfile::Builder::new()
        .prefix("mcpgate-bench-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    let config = dir.path().join("mcpgate.toml");
    std::fs::write(&config, gateway_config(&test_server, &[], "", ""))
        .map_err(|e| e.to_string())?;
    let setup = Setup {
        gateway,
        test_server,
        gateway_wrapper: split_command(options.gateway_wrapper.as_deref()),
        ceiling_wrapper: split_command(options.ceiling_wrapper.as_deref()),
        config,
        work_dir: dir.path().to_owned(),
    };

    let runtime = if options.client_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.client_threads)
            .enable_all()
            .build()
    }
    .map_err(|e| e.to_string())?;

    let started = std::time::Instant::now();
    let mut results: Vec<(Scenario, Vec<(Target, Measured)>)> = Vec::new();
    let mut clean = true;
    for scenario in chosen {
        let mut measured = Vec::new();
        for &target in &targets {
            eprintln!(
                "[{:>6.1}s] {} on {} ...",
                started.elapsed().as_secs_f64(),
                scenario.name,
                target.as_str()
            );
            wait_for_quiet(options);
            let m = runtime.block_on(run::measure(&setup, &scenario, target));
            clean &= no_failures(m.errors, m.setup_errors, m.first_error.as_deref());
            measured.push((target, m));
        }
        let rps_of = |t: Target| {
            measured
                .iter()
                .find(|(target, _)| *target == t)
                .and_then(|(_, m)| m.rps())
        };
        let (floor, ceiling) = (rps_of(Target::StdioFloor), rps_of(Target::HttpCeiling));
        for (target, m) in &measured {
            let line = Line::new(scenario.name, *target, m, floor, ceiling);
            println!(
                "{}",
                serde_json::to_string(&line).map_err(|e| e.to_string())?
            );
        }
        results.push((scenario, measured));
    }

    let testdeps = std::env::var_os("MCPGATE_TESTDEPS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".testdeps"));
    let backends: Vec<Backend> = Backend::all(&setup.test_server, &testdeps)
        .into_iter()
        .filter(|b| options.backends.is_empty() || options.backends.iter().any(|n| n == b.name))
        .collect();
    for scenario in chosen_new {
        for backend in backends.iter().filter(|b| b.applies_to(scenario)) {
            let missing = backend.missing();
            if let Some(why) = &missing {
                eprintln!("{scenario} on {}: {why}", backend.name);
            }
            for &target in session_targets.iter().filter(|t| t.applies_to(scenario)) {
                let m = match &missing {
                    Some(why) => SessionsMeasured::skipped(scenario, new_sessions, why.clone()),
                    None => {
                        eprintln!(
                            "[{:>6.1}s] {scenario} of {} on {} ...",
                            started.elapsed().as_secs_f64(),
                            backend.name,
                            target.as_str()
                        );
                        wait_for_quiet(options);
                        runtime.block_on(fresh::measure(
                            &setup,
                            scenario,
                            backend,
                            target,
                            new_sessions,
                        ))
                    }
                };
                if !m.is_skipped() {
                    clean &= no_failures(m.errors, m.setup_errors, m.first_error.as_deref());
                }
                let line = SessionLine::new(scenario, backend.name, target, &m);
                println!(
                    "{}",
                    serde_json::to_string(&line).map_err(|e| e.to_string())?
                );
            }
        }
    }

    eprintln!("[{:>6.1}s] done", started.elapsed().as_secs_f64());
    if !results.is_empty() {
        verdict::print(&results);
    }
    if options.gateway_wrapper.is_some() || options.ceiling_wrapper.is_some() {
        eprintln!("(a server ran under a wrapper: its timings are not comparable)");
    }
    Ok(clean)
}
