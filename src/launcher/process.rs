//! Starting and stopping one backend process tree.
//!
//! Owns the operating-system side of a backend: spawning it, and ending its
//! whole process tree. It is the only code in the gateway that creates or
//! signals processes. It never reads or writes the JSON-RPC streams (that is
//! `conn`).
//!
//! ## The supervisor
//! A backend is not the gateway's direct child: [`spawn`] starts the gateway's
//! own binary in supervisor mode (see [`super::supervisor`]), which starts the
//! configured command. The supervisor is the leader of a new process group
//! (pgid = its pid = [`Child::id`]), gets the backend's environment, working
//! directory and the three pipes (it lets go of stdin and stdout at once). Its
//! first act is to arm SIGTERM as its own parent-death signal and to check that
//! its parent is still the gateway (so a gateway that died during the spawn
//! leaves nothing behind).
//! It is a child subreaper, so the backend's orphaned descendants become its
//! children: when the backend exits it stops and reaps what is left, and when
//! the gateway dies, even by SIGKILL, the parent-death signal makes it stop the
//! whole tree (SIGTERM, then SIGKILL after `stop_grace`). It exits with the
//! backend's status, so exit codes and signals read as before.
//!
//! The supervisor is started from `/proc/self/exe`, the very file the gateway
//! runs, even if the installed binary was replaced or deleted by an upgrade
//! since the gateway started (a new binary might not speak the same hidden
//! mode). Its `argv[0]` is the gateway's path, for `ps` (it names itself
//! `mcpgate-sup` in `/proc/<pid>/comm`). Without `/proc` mounted, no backend
//! can be started: the supervisor needs it as much as `current_exe()` does.
//!
//! The supervisor is started with no code of ours between fork and exec, so
//! the standard library spawns it with `posix_spawn` (a `vfork`-style clone
//! that does not copy the gateway's page tables: with a hook before exec it
//! would fork, which took about a tenth of the gateway's CPU when 100 sessions
//! opened at once). It sets the server's `scheduling` policy on itself, and the
//! backend and its descendants inherit it: `SCHED_BATCH` by default, so that
//! writing a request to a sleeping backend does not preempt the gateway's worker
//! thread in the middle of its work.
//!
//! Because a command that cannot be started would only show up as the
//! supervisor's exit status 127, [`spawn`] first resolves the command itself,
//! as `execvp` in the supervisor will (the child's `PATH`, relative to the
//! working directory), and fails with `NotFound` or `PermissionDenied`.
//!
//! ## Stopping
//! [`stop_group`]: the caller closes stdin; wait `grace` for the supervisor to
//! exit (it exits once the backend has and its leftovers are gone); SIGTERM
//! the group (the supervisor relays it to descendants that left the group and
//! SIGKILLs everything after its own `grace`); the gateway SIGKILLs the group
//! itself only if the group outlives that by [`SUPERVISOR_MARGIN`].
//!
//! ## Caveats
//! - Parent-death signals are tied to the *thread* that spawned the child, not
//!   the process: a supervisor is told to stop when the gateway thread that
//!   spawned it exits. Backends are spawned from tokio worker threads, which
//!   live as long as the runtime, so this is the gateway's death. `spawn` must
//!   not be called from a `spawn_blocking` thread or inside `block_in_place`
//!   (blocking-pool threads exit when idle, which would stop the backend).
//! - A descendant that leaves the group with `setsid()`/`setpgid()` is out of
//!   reach of `kill(-pgid)`, but not of the supervisor: as a subreaper it gets
//!   such a process as its child as soon as the process's parent dies, and then
//!   signals it by pid (SIGTERM, then SIGKILL after `grace`) and reaps it. The
//!   supervisor exits only when it has no child left. A process escaping the
//!   tree altogether (handed to a system daemon, say) is out of reach.
//! - The gateway's own SIGKILL to the group is a backstop for a stuck
//!   supervisor; it does not reach processes that left the group.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::{Instant, sleep};

use super::supervisor;
use crate::config::ServerConfig;

/// How much longer than `grace` the gateway waits after SIGTERM before it
/// SIGKILLs the group itself: the supervisor's own SIGKILL comes at `grace`.
pub(super) const SUPERVISOR_MARGIN: Duration = Duration::from_secs(1);

/// Where the `PATH` search looks when the child's environment has no `PATH`
/// (what glibc's `execvp` uses then).
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// Spawns the backend of `server` under its supervisor, with piped stdio, in a
/// new process group whose id is the supervisor's pid. Fails with `NotFound` or
/// `PermissionDenied` when the command cannot be started.
pub(super) fn spawn(server: &ServerConfig) -> io::Result<Child> {
    let env = server.child_env();
    locate_in(server, &env)?;
    let exe = supervisor_exe()?;
    let grace_ms = u64::try_from(server.stop_grace.as_millis()).unwrap_or(u64::MAX);
    let mut command = Command::new(&exe.path);
    command
        .arg0(&exe.arg0)
        .arg(supervisor::MODE_ARG)
        .arg(std::process::id().to_string())
        .arg(grace_ms.to_string())
        .arg(server.scheduling.as_str())
        .arg("--")
        .arg(&server.command)
        .args(&server.args)
        .env_clear()
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    if let Some(dir) = &server.working_directory {
        command.current_dir(dir);
    }
    command.spawn()
}

/// The program that runs supervisors, and the `argv[0]` it gets.
struct SupervisorExe {
    path: PathBuf,
    arg0: OsString,
}

/// Resolved once: see the module doc.
fn supervisor_exe() -> io::Result<&'static SupervisorExe> {
    static EXE: OnceLock<Option<SupervisorExe>> = OnceLock::new();
    let exe = EXE.get_or_init(|| {
        let path = PathBuf::from("/proc/self/exe");
        if !path.exists() {
            return None;
        }
        // For `ps` only. After an upgrade the kernel reports the old path
        // with " (deleted)" appended.
        let arg0 = std::env::current_exe().map_or_else(
            |_| OsString::from("mcpgate"),
            |p| {
                let p = p.into_os_string();
                match p.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
                    Some(stripped) => OsString::from(stripped),
                    None => p,
                }
            },
        );
        Some(SupervisorExe { path, arg0 })
    });
    exe.as_ref().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "cannot start the backend's supervisor: /proc/self/exe does not exist (is /proc mounted?)",
        )
    })
}

/// Where `server`'s command is found, looked for now the way a backend's
/// supervisor will look for it (in the working directory and on the `PATH`
/// the backend gets), or why it cannot be run. For `mcpgate check` and the
/// warnings at start; spawning looks again every time.
pub fn locate_command(server: &ServerConfig) -> io::Result<PathBuf> {
    locate_in(server, &server.child_env())
}

/// [`locate_command`] with the backend's environment already made. The
/// `PATH` searched is logged, not put in the error: the error reaches clients.
fn locate_in(server: &ServerConfig, env: &[(String, String)]) -> io::Result<PathBuf> {
    let path_var = env
        .iter()
        .find(|(name, _)| name == "PATH")
        .map(|(_, value)| value.as_str());
    let found = resolve_command(
        &server.command,
        path_var,
        server.working_directory.as_deref(),
    );
    if let Err(e) = &found
        && !server.command.contains('/')
    {
        tracing::debug!(server = %server.id, command = %server.command,
            path = path_var.unwrap_or(DEFAULT_PATH), error = %e, "command not found on the backend's PATH");
    }
    found
}

/// Checks that `command` can be executed the way the supervisor will look for
/// it: a name with a `/` is a path (relative to `dir`, the child's working
/// directory), any other name is searched in `path_var`.
fn resolve_command(
    command: &str,
    path_var: Option<&str>,
    dir: Option<&Path>,
) -> io::Result<PathBuf> {
    let in_dir = |p: &Path| match dir {
        Some(dir) => dir.join(p),
        None => p.to_path_buf(),
    };
    if command.contains('/') {
        let path = in_dir(Path::new(command));
        return check_executable(&path).map(|()| path);
    }
    let search = path_var.unwrap_or(DEFAULT_PATH);
    let mut denied = None;
    if !command.is_empty() {
        for entry in search.split(':') {
            // An empty entry is the working directory, as for execvp.
            let candidate =
                in_dir(&Path::new(if entry.is_empty() { "." } else { entry }).join(command));
            match check_executable(&candidate) {
                Ok(()) => return Ok(candidate),
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    denied.get_or_insert(e);
                }
                Err(_) => {}
            }
        }
    }
    Err(denied.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("No such file or directory: no `{command}` on the backend's PATH"),
        )
    }))
}

/// Ok if `path` is a file this process may execute; else an error naming it.
fn check_executable(path: &Path) -> io::Result<()> {
    let named = |kind, what: &dyn std::fmt::Display| {
        io::Error::new(kind, format!("{}: {what}", path.display()))
    };
    let meta = std::fs::metadata(path).map_err(|e| named(e.kind(), &e))?;
    if !meta.is_file() {
        return Err(named(
            io::ErrorKind::PermissionDenied,
            &"Permission denied: not a regular file",
        ));
    }
    may_execute(path).map_err(|e| named(e.kind(), &format_args!("{e}: not executable")))
}

/// `faccessat(X_OK)` with the effective ids, as `execve` checks them.
#[allow(unsafe_code)]
fn may_execute(path: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: faccessat reads a valid NUL-terminated path and writes nothing.
    let rc =
        unsafe { libc::faccessat(libc::AT_FDCWD, path.as_ptr(), libc::X_OK, libc::AT_EACCESS) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The resident memory of `pid` and every descendant of it, in KiB (from
/// `/proc`); `None` when `pid` is gone.
pub fn tree_rss_kib(pid: u32) -> Option<u64> {
    fn rss(pid: u32) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }
    fn children(pid: u32) -> Vec<u32> {
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .map(|c| {
                c.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
    let mut total = rss(pid)?;
    let mut todo = children(pid);
    while let Some(child) = todo.pop() {
        total += rss(child).unwrap_or(0);
        todo.extend(children(child));
    }
    Some(total)
}

/// Sends `signal` to every process in the group `pgid`. Returns false when the
/// group no longer exists.
pub(super) fn signal_group(pgid: u32, signal: i32) -> bool {
    let Ok(pgid) = i32::try_from(pgid) else {
        return false;
    };
    if pgid <= 1 {
        return false;
    }
    #[allow(unsafe_code)]
    // SAFETY: kill(2) with a negative pid only sends a signal; it touches no memory.
    let rc = unsafe { libc::kill(-pgid, signal) };
    rc == 0
}

/// True while any process of the group `pgid` exists (zombies included).
pub(super) fn group_alive(pgid: u32) -> bool {
    signal_group(pgid, 0)
}

/// Waits until the group is gone or the deadline passes; true if it is gone.
async fn wait_group_gone(pgid: u32, deadline: Instant) -> bool {
    loop {
        if !group_alive(pgid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(10)).await;
    }
}

/// Waits for the leader's exit to be published, up to `timeout`.
async fn wait_exit(exited: &mut watch::Receiver<Option<ExitStatus>>, timeout: Duration) -> bool {
    tokio::time::timeout(timeout, exited.wait_for(Option::is_some))
        .await
        .is_ok_and(|r| r.is_ok())
}

/// How a stop ended, for the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// Everything was gone after stdin closed.
    ExitedOnEof,
    /// SIGTERM to the group was needed.
    Terminated,
    /// SIGKILL to the group was needed.
    Killed,
}

/// Ends the process tree led by `pgid` (a supervisor) once its stdin has been
/// closed by the caller: waits `grace` for the leader to exit, SIGTERMs the
/// group, waits for the group to vanish (the supervisor SIGKILLs what is left
/// after its own `grace`; the gateway SIGKILLs the group after `grace` plus
/// [`SUPERVISOR_MARGIN`]), and waits for the leader to be reaped (the task that
/// owns the `Child` reaps it and publishes on `exited`).
pub(super) async fn stop_group(
    pgid: u32,
    mut exited: watch::Receiver<Option<ExitStatus>>,
    grace: Duration,
) -> StopOutcome {
    let leader_gone = wait_exit(&mut exited, grace).await;
    // A supervisor exits only when its tree is gone; if it was killed, members
    // of its group may remain: they are signalled too.
    if leader_gone && !group_alive(pgid) {
        return StopOutcome::ExitedOnEof;
    }
    signal_group(pgid, libc::SIGTERM);
    let deadline = Instant::now() + grace + SUPERVISOR_MARGIN;
    let outcome = if wait_group_gone(pgid, deadline).await {
        // The supervisor dies of the signal that ended the backend: SIGKILL
        // means it had to kill it.
        wait_exit(&mut exited, Duration::from_secs(5)).await;
        if killed_by_sigkill(&exited) {
            StopOutcome::Killed
        } else {
            StopOutcome::Terminated
        }
    } else {
        signal_group(pgid, libc::SIGKILL);
        StopOutcome::Killed
    };
    // SIGKILL cannot be ignored; the leader is reaped by its owner task.
    wait_exit(&mut exited, Duration::from_secs(5)).await;
    // Members the supervisor could not reap (if it was killed) are reaped by
    // init; wait until the kernel has removed them.
    wait_group_gone(pgid, Instant::now() + Duration::from_secs(5)).await;
    outcome
}

fn killed_by_sigkill(exited: &watch::Receiver<Option<ExitStatus>>) -> bool {
    use std::os::unix::process::ExitStatusExt;
    exited
        .borrow()
        .is_some_and(|status| status.signal() == Some(libc::SIGKILL))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn kind(result: io::Result<PathBuf>) -> io::ErrorKind {
        result.expect_err("should fail").kind()
    }

    #[test]
    fn commands_are_resolved_like_execvp_does() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("server");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        let path_var = format!("/nonexistent:{}", dir.path().display());

        assert_eq!(
            resolve_command("server", Some(&path_var), None).unwrap(),
            exe
        );
        assert_eq!(
            resolve_command("./server", None, Some(dir.path())).unwrap(),
            dir.path().join("./server")
        );
        assert_eq!(
            resolve_command(exe.to_str().unwrap(), None, None).unwrap(),
            exe
        );
        let missing = resolve_command("no-such-server", Some(&path_var), None).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        // Named, but not where it was looked for: the error reaches clients.
        assert!(
            missing.to_string().contains("no-such-server")
                && !missing.to_string().contains(&path_var),
            "{missing}"
        );
        assert_eq!(
            kind(resolve_command("/nonexistent/x", None, None)),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            kind(resolve_command("", None, None)),
            io::ErrorKind::NotFound
        );
        // Root may execute any file with an x bit, but none is set here.
        let denied = resolve_command(plain.to_str().unwrap(), None, None).unwrap_err();
        assert_eq!(denied.kind(), io::ErrorKind::PermissionDenied, "{denied}");
        assert!(denied.to_string().contains("plain"), "{denied}");
        assert_eq!(
            kind(resolve_command("plain", Some(&path_var), None)),
            io::ErrorKind::PermissionDenied
        );
        assert_eq!(
            kind(resolve_command(dir.path().to_str().unwrap(), None, None)),
            io::ErrorKind::PermissionDenied
        );
    }
}
