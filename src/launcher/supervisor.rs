//! The per-backend supervisor: a tiny process between the gateway and one
//! backend, so that the backend's whole process tree dies with the gateway even
//! when the gateway is killed with SIGKILL.
//!
//! It is the gateway's own binary re-executed in a hidden mode,
//! `mcpgate __supervise <gateway-pid> <grace-ms> <batch|normal> -- <command> <args...>`, which
//! `main` dispatches to [`main`] before anything else runs (no logging, no async
//! runtime). `process::spawn` starts it as the leader of a new process group
//! (it relies on that: the group's id is its own pid), with the backend's
//! environment and working directory and the three pipes.
//!
//! What it owns: the backend's process tree. It is a child subreaper
//! (`PR_SET_CHILD_SUBREAPER`), so every orphaned descendant of the backend
//! (also one that left the process group with `setsid`/`setpgid`) becomes its
//! child and is reaped by it: no zombie is left, and it knows that the tree is
//! gone exactly when it has no children left. Its parent-death signal is
//! SIGTERM, so the gateway's death (even by SIGKILL) is a stop request.
//! - It puts itself under the scheduling policy it is given (`SCHED_BATCH` or
//!   `SCHED_OTHER`), which the command and its descendants inherit.
//! - It spawns the command with the signal mask cleared and default
//!   dispositions, with SIGKILL as the command's own parent-death signal.
//! - When the command exits, what it left behind is sent SIGTERM, then SIGKILL
//!   after `grace`, and reaped; then the supervisor exits with the command's
//!   status (the same code, or dying of the same signal).
//! - On SIGTERM, SIGINT or SIGHUP (the gateway's stop, or the gateway's death)
//!   it sends SIGTERM to the group and to descendants outside it, waits up to
//!   `grace`, SIGKILLs what is left, reaps everything, and exits likewise.
//!
//! What it must never do: read or write the JSON-RPC pipes (right after the
//! spawn it points its own stdin and stdout at `/dev/null`, so the backend's
//! stdout reaches EOF when the backend closes it; it keeps stderr for its own
//! one-line messages, prefixed `mcpgate:`); install asynchronous signal
//! handlers (the signals it acts on are blocked and taken with `sigtimedwait`);
//! start threads, an async runtime or logging (there is one supervisor per
//! session, so it must stay small); exit while a descendant is alive; or signal
//! a process id that is not its own child or its own process group (a child's
//! id cannot be reused before the supervisor reaps it, so that is race-free).

use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::config::Scheduling;

/// The hidden first argument that selects supervisor mode.
pub const MODE_ARG: &str = "__supervise";

/// The name the supervisor gives itself (`/proc/<pid>/comm`, shown by `ps`/`top`).
const PROCESS_NAME: &[u8] = b"mcpgate-sup\0";

/// Signals taken synchronously by the supervisor; blocked for its whole life.
const HANDLED: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGCHLD];

/// How often the kill phase looks again for descendants that reparented to it.
const KILL_POLL: Duration = Duration::from_millis(20);

/// Where the supervisor is in ending the tree.
#[derive(Clone, Copy)]
enum Phase {
    /// The command runs; nothing was asked.
    Running,
    /// SIGTERM was sent; SIGKILL follows at the deadline.
    Terminating(Instant),
    /// SIGKILL is sent to every child until none is left.
    Killing,
}

/// The parsed command line of supervisor mode.
struct Invocation {
    gateway: libc::pid_t,
    grace: Duration,
    scheduling: Scheduling,
    command: OsString,
    args: Vec<OsString>,
}

/// Runs supervisor mode. `args` are the arguments after [`MODE_ARG`]:
/// `<gateway-pid> <grace-ms> <batch|normal> -- <command> <args...>`. Never returns.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ! {
    let inv = match parse(args) {
        Ok(inv) => inv,
        Err(e) => {
            say(format_args!(
                "{MODE_ARG} is internal to mcpgate ({e}); usage: mcpgate {MODE_ARG} <gateway-pid> <grace-ms> <batch|normal> -- <command> [args...]"
            ));
            std::process::exit(2);
        }
    };
    set_process_name();
    // Signals first: from here on a SIGTERM (from the gateway, or from the
    // parent-death signal below) waits in the queue instead of killing us.
    block_handled_signals();
    if let Err(e) = adopt_orphans_and_follow_parent() {
        say(format_args!("cannot set up process supervision: {e}"));
        std::process::exit(1);
    }
    if parent_pid() != inv.gateway {
        // The gateway died before the parent-death signal was armed (or this
        // was not started by it): nothing was started, nothing to clean up.
        say(format_args!(
            "the gateway (pid {}) is not this process's parent; not starting",
            inv.gateway
        ));
        std::process::exit(1);
    }
    if let Err(e) = set_scheduling(inv.scheduling) {
        say(format_args!(
            "cannot set the scheduling policy {:?}: {e}",
            inv.scheduling.as_str()
        ));
        std::process::exit(1);
    }
    let child = match spawn(&inv) {
        Ok(pid) => pid,
        Err(e) => {
            let command = std::path::Path::new(&inv.command);
            say(format_args!("cannot start `{}`: {e}", command.display()));
            let code = if e.kind() == io::ErrorKind::PermissionDenied {
                126
            } else {
                127
            };
            std::process::exit(code);
        }
    };
    detach_stdin_stdout();
    let status = supervise(child, inv.grace);
    exit_like(status)
}

/// Why the supervisor's command line was refused (it is written by
/// `process::spawn`, so this means a bug or a person trying the hidden mode).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum InvocationError {
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("bad {what} {arg:?}")]
    BadNumber { what: &'static str, arg: OsString },
    #[error("bad gateway pid")]
    GatewayPidOutOfRange,
    #[error("bad scheduling policy {0:?}")]
    BadScheduling(Option<String>),
}

fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Invocation, InvocationError> {
    let mut args = args.into_iter();
    let mut number = |what: &'static str| -> Result<u64, InvocationError> {
        let arg = args.next().ok_or(InvocationError::Missing(what))?;
        arg.to_str()
            .and_then(|s| s.parse().ok())
            .ok_or(InvocationError::BadNumber { what, arg })
    };
    let gateway = number("gateway pid")?;
    let gateway =
        libc::pid_t::try_from(gateway).map_err(|_| InvocationError::GatewayPidOutOfRange)?;
    let grace = Duration::from_millis(number("grace in ms")?);
    let scheduling = match args.next().as_ref().and_then(|a| a.to_str()) {
        Some("batch") => Scheduling::Batch,
        Some("normal") => Scheduling::Normal,
        other => return Err(InvocationError::BadScheduling(other.map(str::to_owned))),
    };
    if args.next().as_deref() != Some(OsStr::new("--")) {
        return Err(InvocationError::Missing("`--`"));
    }
    let command = args.next().ok_or(InvocationError::Missing("command"))?;
    Ok(Invocation {
        gateway,
        grace,
        scheduling,
        command,
        args: args.collect(),
    })
}

/// Writes one `mcpgate: ...` line to stderr (the gateway logs the backend's
/// stderr). Errors are ignored: with the gateway gone, nobody reads it.
fn say(message: std::fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr().lock(), "mcpgate: {message}");
}

#[allow(unsafe_code)]
fn set_process_name() {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes,
    // which PROCESS_NAME is; a failure only leaves the old name.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, PROCESS_NAME.as_ptr());
    }
}

/// The set of [`HANDLED`] signals.
#[allow(unsafe_code)]
fn handled_set() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the zeroed set; sigaddset only adds
    // valid signal numbers to it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in HANDLED {
            libc::sigaddset(&mut set, signal);
        }
        set
    }
}

#[allow(unsafe_code)]
fn block_handled_signals() {
    let set = handled_set();
    // SAFETY: sigprocmask reads a valid, initialised set; the supervisor has a
    // single thread, so the process mask is this thread's mask.
    unsafe {
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Becomes a child subreaper and arms SIGTERM as the parent-death signal.
#[allow(unsafe_code)]
fn adopt_orphans_and_follow_parent() -> io::Result<()> {
    // SAFETY: prctl with these integer options reads and writes no memory of ours.
    unsafe {
        if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Puts this process (and so every process it starts) under `scheduling`.
#[allow(unsafe_code)]
fn set_scheduling(scheduling: Scheduling) -> io::Result<()> {
    let policy = match scheduling {
        Scheduling::Batch => libc::SCHED_BATCH,
        Scheduling::Normal => libc::SCHED_OTHER,
    };
    // Neither policy needs a privilege; both take priority 0.
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler reads the local `param` and changes only this
    // process's policy.
    if unsafe { libc::sched_setscheduler(0, policy, &param) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// This process's parent: the gateway, while it lives.
fn parent_pid() -> libc::pid_t {
    to_pid(std::os::unix::process::parent_id())
}

fn own_pid() -> libc::pid_t {
    to_pid(std::process::id())
}

/// A pid as std gives it, as libc takes it (pids are below 2^22 on Linux).
fn to_pid(pid: u32) -> libc::pid_t {
    libc::pid_t::try_from(pid).expect("a pid fits pid_t")
}

/// Starts the command with this process's environment, working directory and
/// stdio; returns its pid.
#[allow(unsafe_code)]
fn spawn(inv: &Invocation) -> io::Result<libc::pid_t> {
    let supervisor = own_pid();
    let mut command = Command::new(&inv.command);
    command.args(&inv.args);
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (sigemptyset, sigprocmask, signal, prctl,
    // getppid, _exit) on stack data; it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            for signal in HANDLED.into_iter().chain([libc::SIGPIPE]) {
                if libc::signal(signal, libc::SIG_DFL) == libc::SIG_ERR {
                    return Err(io::Error::last_os_error());
                }
            }
            // Should the supervisor itself be killed, the command goes too (its
            // group is then still killed by the gateway).
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != supervisor {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    // The `Child` handle is dropped: waitpid(-1) below reaps the process.
    libc::pid_t::try_from(child.id()).map_err(io::Error::other)
}

/// Points fds 0 and 1 at `/dev/null`, so that the supervisor holds neither
/// end of the JSON-RPC pipes.
#[allow(unsafe_code)]
fn detach_stdin_stdout() {
    // SAFETY: open/dup2/close on a literal path and on file descriptors this
    // process owns; nothing else in the process uses fds 0 and 1.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if null < 0 {
            libc::close(0);
            libc::close(1);
            return;
        }
        libc::dup2(null, 0);
        libc::dup2(null, 1);
        if null > 1 {
            libc::close(null);
        }
    }
}

/// Runs until every descendant is gone; returns the command's wait status.
fn supervise(child: libc::pid_t, grace: Duration) -> libc::c_int {
    let group = own_pid();
    let handled = handled_set();
    let mut status = None;
    let mut phase = Phase::Running;
    // Descendants outside the group that were already sent SIGTERM.
    let mut terminated: Vec<libc::pid_t> = Vec::new();
    loop {
        if reap_all(child, &mut status) {
            // No child left: as a subreaper, that means no descendant left.
            return status.unwrap_or(0);
        }
        let now = Instant::now();
        if status.is_some() && matches!(phase, Phase::Running) {
            // The command is gone but left processes behind.
            phase = start_terminating(group, now + grace, &mut terminated);
        }
        if let Phase::Terminating(deadline) = phase {
            if now >= deadline {
                phase = Phase::Killing;
            } else {
                // Processes that left the group are reached one by one once
                // they are our children (when their parent has died).
                terminate_escapees(group, &mut terminated);
            }
        }
        if matches!(phase, Phase::Killing) {
            kill_children(group);
        }
        let timeout = match phase {
            Phase::Running => None,
            Phase::Terminating(deadline) => Some(deadline.saturating_duration_since(now)),
            Phase::Killing => Some(KILL_POLL),
        };
        match wait_for_signal(&handled, timeout) {
            Some(libc::SIGTERM | libc::SIGINT | libc::SIGHUP)
                if matches!(phase, Phase::Running) =>
            {
                phase = start_terminating(group, Instant::now() + grace, &mut terminated);
            }
            // SIGCHLD, a timeout, or a stop request while already stopping
            // (including the SIGTERM we sent our own group): look again.
            _ => {}
        }
    }
}

/// Sends SIGTERM to the group and to the children outside it.
fn start_terminating(
    group: libc::pid_t,
    deadline: Instant,
    terminated: &mut Vec<libc::pid_t>,
) -> Phase {
    // The supervisor is in the group but has SIGTERM blocked: it only gets a
    // pending SIGTERM, which the loop takes and ignores.
    send(-group, libc::SIGTERM);
    terminate_escapees(group, terminated);
    Phase::Terminating(deadline)
}

/// Sends SIGTERM once to each child that is not in the group.
fn terminate_escapees(group: libc::pid_t, terminated: &mut Vec<libc::pid_t>) {
    let _ = for_each_child(|pid| {
        if process_group_of(pid) != Some(group) && !terminated.contains(&pid) {
            send(pid, libc::SIGTERM);
            terminated.push(pid);
        }
    });
}

/// Sends SIGKILL to every child. Their own children then reparent to the
/// supervisor and get theirs on the next round. Without `/proc`, it SIGKILLs
/// the whole group, itself included, as its last act.
fn kill_children(group: libc::pid_t) {
    if for_each_child(|pid| send(pid, libc::SIGKILL)).is_err() {
        say(format_args!(
            "cannot list the backend's processes; killing its process group"
        ));
        send(-group, libc::SIGKILL);
    }
}

/// Calls `f` with the pid of each child of this (single-threaded) process:
/// from `/proc/<pid>/task/<pid>/children`, or, on kernels without that file
/// (`CONFIG_PROC_CHILDREN`), by the parent field of every `/proc/<pid>/stat`.
/// Fails only without a readable `/proc`.
fn for_each_child(mut f: impl FnMut(libc::pid_t)) -> io::Result<()> {
    let me = own_pid();
    let parse = |text: &[u8]| {
        std::str::from_utf8(text)
            .ok()
            .and_then(|s| s.trim().parse::<libc::pid_t>().ok())
            .filter(|pid| *pid > 0)
    };
    if let Ok(list) = std::fs::read(format!("/proc/{me}/task/{me}/children")) {
        list.split(|b| *b == b' ').filter_map(parse).for_each(f);
        return Ok(());
    }
    for entry in std::fs::read_dir("/proc")? {
        let Some(pid) = entry
            .ok()
            .and_then(|e| parse(e.file_name().as_encoded_bytes()))
        else {
            continue;
        };
        let Ok(stat) = std::fs::read(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // After the command name, which may hold anything but ends at the
        // last ')': " <state> <ppid> ...".
        let Some(close) = stat.iter().rposition(|b| *b == b')') else {
            continue;
        };
        let parent = stat[close + 1..]
            .split(|b| *b == b' ')
            .filter(|field| !field.is_empty())
            .nth(1)
            .and_then(parse);
        if parent == Some(me) {
            f(pid);
        }
    }
    Ok(())
}

#[allow(unsafe_code)]
fn process_group_of(pid: libc::pid_t) -> Option<libc::pid_t> {
    // SAFETY: getpgid only reads the kernel's process table.
    let group = unsafe { libc::getpgid(pid) };
    (group >= 0).then_some(group)
}

#[allow(unsafe_code)]
fn send(pid: libc::pid_t, signal: libc::c_int) {
    // SAFETY: kill(2) only sends a signal; `pid` is a child of ours (not yet
    // reaped, so not reused) or our own group.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Reaps every exited child, recording the command's status. Returns true
/// when no child is left.
#[allow(unsafe_code)]
fn reap_all(command: libc::pid_t, status: &mut Option<libc::c_int>) -> bool {
    loop {
        let mut raw = 0;
        // SAFETY: waitpid writes the status into a local integer.
        let pid = unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG) };
        if pid == command {
            *status = Some(raw);
        } else if pid == 0 {
            return false;
        } else if pid < 0 {
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::ECHILD) => return true,
                _ => return false,
            }
        }
    }
}

/// Waits for one of the handled signals, up to `timeout` (forever if None).
#[allow(unsafe_code)]
fn wait_for_signal(set: &libc::sigset_t, timeout: Option<Duration>) -> Option<libc::c_int> {
    // SAFETY: the set is initialised; siginfo is written by the kernel into a
    // zeroed local; the timespec is a local.
    let signal = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        match timeout {
            None => libc::sigwaitinfo(set, &mut info),
            Some(t) => {
                let ts = libc::timespec {
                    tv_sec: libc::time_t::try_from(t.as_secs()).unwrap_or(libc::time_t::MAX),
                    // Below 10^9: fits a 32-bit `c_long` too.
                    tv_nsec: t.subsec_nanos() as libc::c_long,
                };
                libc::sigtimedwait(set, &mut info, &ts)
            }
        }
    };
    // -1: timeout (EAGAIN) or an interruption (EINTR); the caller looks again.
    (signal > 0).then_some(signal)
}

/// Exits the way the command did: the same exit code, or killed by the same
/// signal (without a core dump of the supervisor).
#[allow(unsafe_code)]
fn exit_like(status: libc::c_int) -> ! {
    if libc::WIFEXITED(status) {
        std::process::exit(libc::WEXITSTATUS(status));
    }
    let signal = libc::WTERMSIG(status);
    // SAFETY: setrlimit reads a local struct; signal/sigprocmask/raise act on
    // this single-threaded process only; _exit does not return.
    unsafe {
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        libc::signal(signal, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(signal);
        libc::_exit(128 + signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_command_line_is_parsed_after_the_separator() {
        let inv = parse(args(&["42", "1500", "batch", "--", "npx", "-y", "--", "x"])).unwrap();
        assert_eq!(inv.gateway, 42);
        assert_eq!(inv.grace, Duration::from_millis(1500));
        assert_eq!(inv.scheduling, Scheduling::Batch);
        assert_eq!(inv.command, "npx");
        assert_eq!(inv.args, args(&["-y", "--", "x"]));
        let inv = parse(args(&["42", "1500", "normal", "--", "c"])).unwrap();
        assert_eq!(inv.scheduling, Scheduling::Normal);
    }

    #[test]
    fn a_malformed_command_line_is_refused() {
        for bad in [
            &[][..],
            &["x", "1", "batch", "--", "c"],
            &["1", "x", "batch", "--", "c"],
            &["1", "1", "--", "c"],
            &["1", "1", "fifo", "--", "c"],
            &["1", "1", "batch", "c"],
            &["1", "1", "batch", "--"],
        ] {
            assert!(parse(args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_refusal_says_which_argument_is_wrong() {
        let said = |list: &[&str]| parse(args(list)).err().unwrap().to_string();
        assert_eq!(said(&[]), "missing gateway pid");
        assert_eq!(
            said(&["1", "x", "batch", "--", "c"]),
            r#"bad grace in ms "x""#
        );
        assert_eq!(
            said(&["4294967295", "1", "batch", "--", "c"]),
            "bad gateway pid"
        );
        assert_eq!(
            said(&["1", "1", "fifo", "--", "c"]),
            r#"bad scheduling policy Some("fifo")"#
        );
        assert_eq!(said(&["1", "1", "batch", "c"]), "missing `--`");
        assert_eq!(said(&["1", "1", "batch", "--"]), "missing command");
    }
}
