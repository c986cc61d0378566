//! The operating-system side of the benchmark: starting the gateway and the
//! HTTP ceiling as child processes, reading their memory and CPU time from
//! `/proc`, raising the open-file limit, and stopping everything it started.
//!
//! It only ever signals processes by the pid it started (or a pid it found as
//! the child of one it started); it never looks processes up by name.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to print its address (valgrind is slow).
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a server may take to exit after SIGTERM (it stops every backend).
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns (soft, hard) after.
/// Children (the gateway, the backends) inherit it.
#[allow(unsafe_code)]
pub fn raise_open_file_limit() -> (u64, u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return (0, 0);
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    (limit.rlim_cur, limit.rlim_max)
}

/// CPU time this process has used (user + system), in microseconds.
#[allow(unsafe_code)]
pub fn self_cpu_us() -> u64 {
    // SAFETY: getrusage only writes the struct we pass; zeroed is a valid rusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0;
    }
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(usage.ru_utime) + us(usage.ru_stime)
}

/// CPU time this process and its reaped children have used (user + system),
/// in microseconds: for the backends the benchmark spawns and waits for itself.
#[allow(unsafe_code)]
pub fn self_and_children_cpu_us() -> u64 {
    let mut total = 0;
    for who in [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN] {
        // SAFETY: getrusage only writes the struct we pass; zeroed is a valid rusage.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::getrusage(who, &mut usage) } != 0 {
            continue;
        }
        let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
        total += us(usage.ru_utime) + us(usage.ru_stime);
    }
    total
}

/// Clock ticks per second of `/proc/<pid>/stat` times.
#[allow(unsafe_code)]
fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100)
}

/// The fields of `/proc/<pid>/stat` after the command name (field 3 onwards).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// CPU time (user + system, all threads of the process, not its children) of
/// `pid`, in microseconds: from the process's CPU-time clock (nanosecond
/// resolution), else from `/proc/<pid>/stat` (clock ticks, often 10 ms).
#[allow(unsafe_code)]
pub fn cpu_us(pid: u32) -> Option<u64> {
    let mut clock: libc::clockid_t = 0;
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: both calls only write the values we pass them.
    let read = unsafe {
        libc::clock_getcpuclockid(i32::try_from(pid).ok()?, &mut clock) == 0
            && libc::clock_gettime(clock, &mut now) == 0
    };
    if read {
        return Some(now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000);
    }
    let fields = stat_fields(pid)?;
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 1_000_000 / clock_ticks())
}

/// CPU time of the children `pid` has waited for (and of theirs, reaped in
/// turn), in microseconds (`cutime` + `cstime`, clock ticks).
fn reaped_children_cpu_us(pid: u32) -> Option<u64> {
    let fields = stat_fields(pid)?;
    // cutime and cstime are fields 16 and 17 (1-based), i.e. 13 and 14 here.
    let cutime: u64 = fields.get(13)?.parse().ok()?;
    let cstime: u64 = fields.get(14)?.parse().ok()?;
    Some((cutime + cstime) * 1_000_000 / clock_ticks())
}

/// CPU time of `root` and everything under it, including processes that
/// already exited and were waited for, in microseconds. The difference of
/// two readings is what the tree used between them, even when processes
/// came and went in between (an exited process's time moves into its
/// parent's reaped-children time); only orphans handed to init are lost.
pub fn tree_cpu_us(root: u32) -> Option<u64> {
    let own = cpu_us(root)? + reaped_children_cpu_us(root)?;
    Some(
        own + descendants_of(root)
            .into_iter()
            .filter_map(|pid| Some(cpu_us(pid)? + reaped_children_cpu_us(pid)?))
            .sum::<u64>(),
    )
}

/// CPU time used by the whole machine (every CPU, every process, and time
/// stolen by the hypervisor), in microseconds.
pub fn machine_busy_us() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is within user).
    let busy: u64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| *t)
        .sum();
    Some(busy * 1_000_000 / clock_ticks())
}

/// Waits (up to `limit`) until the rest of the machine uses less than
/// `max_share` of one CPU over a quarter of a second; returns that share.
pub fn wait_for_quiet(max_share: f64, limit: Duration) -> f64 {
    let start = Instant::now();
    loop {
        let (busy0, self0) = (machine_busy_us().unwrap_or(0), self_cpu_us());
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_millis(250));
        let (busy1, self1) = (machine_busy_us().unwrap_or(0), self_cpu_us());
        let others = busy1.saturating_sub(busy0).saturating_sub(self1 - self0);
        let share = others as f64 / t0.elapsed().as_micros() as f64;
        if share < max_share || start.elapsed() > limit {
            return share;
        }
    }
}

/// The start time of `pid` (field 22), to tell a process from a later one with its pid.
pub fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// Every descendant of `root` (children, their children...), such as the
/// gateway's per-session supervisors and the backends under them.
pub fn descendants_of(root: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parents: Vec<(u32, u32)> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let ppid = stat_fields(pid)?.get(1)?.parse::<u32>().ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut found = vec![root];
    let mut next = 0;
    while next < found.len() {
        let parent = found[next];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        next += 1;
    }
    found.remove(0);
    found
}

/// A `kB` line of `/proc/<pid>/status`, such as `VmRSS` or `VmHWM`.
fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// Resident set size of `pid` (its own memory; children are separate processes).
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS")
}

/// Peak resident set size of `pid` since it started or since [`reset_peak_rss`].
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM")
}

/// Resets the peak RSS of `pid` to its current RSS (Linux 4.0+); true if it worked.
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Sends `signal` to `pid`, a process this benchmark started.
#[allow(unsafe_code)]
pub fn signal(pid: u32, signal: i32) {
    if let Ok(pid) = i32::try_from(pid)
        && pid > 1
    {
        // SAFETY: kill(2) only sends a signal.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// Sends `signal` to the process group `group`, one this benchmark started
/// (its leader's pid); true if the group had a process to signal.
#[allow(unsafe_code)]
pub fn signal_group(group: u32, signal: i32) -> bool {
    match i32::try_from(group) {
        // SAFETY: kill(2) only sends a signal (0: only checks the group exists).
        Ok(group) if group > 1 => unsafe { libc::kill(-group, signal) == 0 },
        _ => false,
    }
}

/// A server process (the gateway or the HTTP ceiling) that announced its address.
pub struct ServerProcess {
    child: Option<Child>,
    pub pid: u32,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    log: PathBuf,
    what: &'static str,
}

impl ServerProcess {
    /// Starts `program args...` (after `wrapper`, if any), with stderr to `log`,
    /// and waits for the stdout line `<announce> http://ADDR`.
    pub fn start(
        what: &'static str,
        wrapper: &[String],
        program: &Path,
        args: &[&str],
        announce: &'static str,
        log: PathBuf,
    ) -> Result<ServerProcess, String> {
        let mut command = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(program);
                c
            }
            None => Command::new(program),
        };
        let log_file =
            std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot start {what} ({}): {e}", program.display()))?;
        let pid = child.id();
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            // Keep reading to the end so the server never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent && let Some(rest) = line.strip_prefix(announce) {
                    let _ = tx.send(rest.trim().to_owned());
                    sent = true;
                }
            }
        });
        let mut server = ServerProcess {
            child: Some(child),
            pid,
            base: String::new(),
            log,
            what,
        };
        match rx.recv_timeout(ANNOUNCE_TIMEOUT) {
            Ok(base) => {
                server.base = base;
                Ok(server)
            }
            Err(_) => Err(format!(
                "{what} did not announce its address; its log ends with:\n{}",
                server.log_tail()
            )),
        }
    }

    /// The last lines of the server's stderr.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM, then waits for the exit; an error if it did not exit 0 in time,
    /// or if a descendant it had (a backend) outlived it.
    pub fn stop(mut self) -> Result<(), String> {
        let children: Vec<(u32, Option<u64>)> = descendants_of(self.pid)
            .into_iter()
            .map(|pid| (pid, start_time(pid)))
            .collect();
        let mut child = self.child.take().expect("still owned");
        signal(self.pid, libc::SIGTERM);
        let start = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if start.elapsed() < EXIT_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => break None,
            }
        };
        let Some(status) = status else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{} did not exit within {EXIT_TIMEOUT:?} of SIGTERM; killed",
                self.what
            ));
        };
        // Its backends (any depth) must be gone with it (same pid and start
        // time = same process).
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut left: Vec<u32>;
        loop {
            left = children
                .iter()
                .filter(|(pid, started)| start_time(*pid).is_some() && start_time(*pid) == *started)
                .map(|(pid, _)| *pid)
                .collect();
            if left.is_empty() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in &left {
            signal(*pid, libc::SIGKILL);
        }
        if !status.success() {
            return Err(format!(
                "{} exited with {status}; its log ends with:\n{}",
                self.what,
                self.log_tail()
            ));
        }
        if !left.is_empty() {
            return Err(format!(
                "{} exited but {} of its descendants outlived it (killed by pid): {left:?}",
                self.what,
                left.len()
            ));
        }
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Only reached when `stop` was not (a failed run): do not leave it behind.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
