//! Starting and stopping one backend process tree.
//!
//! Owns the operating-system side of a backend: spawning the command in a
//! process group of its own with a parent-death signal, and ending the whole
//! group (close stdin, wait, SIGTERM the group, wait, SIGKILL, reap). It is the
//! only code in the gateway that creates or signals processes. It never reads
//! or writes the JSON-RPC streams (that is `conn`).

use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::{Instant, sleep};

use crate::config::ServerConfig;

/// Spawns the backend of `server` with piped stdio, in a new process group whose
/// id is the child's pid, with SIGKILL as its parent-death signal.
pub fn spawn(server: &ServerConfig) -> io::Result<Child> {
    let mut command = Command::new(&server.command);
    command
        .args(&server.args)
        .env_clear()
        .envs(server.child_env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    if let Some(dir) = &server.working_directory {
        command.current_dir(dir);
    }
    set_parent_death_signal(&mut command);
    command.spawn()
}

#[allow(unsafe_code)]
fn set_parent_death_signal(command: &mut Command) {
    let gateway_pid = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (prctl, getppid, _exit); it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The gateway may have died between fork and prctl: then never exec.
            if u32::try_from(libc::getppid()).ok() != Some(gateway_pid) {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Sends `signal` to every process in the group `pgid`. Returns false when the
/// group no longer exists.
pub fn signal_group(pgid: u32, signal: i32) -> bool {
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
pub fn group_alive(pgid: u32) -> bool {
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

/// Ends the process tree led by `pgid` once its stdin has been closed by the caller:
/// waits `grace` for the leader to exit, SIGTERMs the group, waits `grace` for the
/// group to vanish, SIGKILLs it, and waits for the leader to be reaped (the task
/// that owns the `Child` reaps it and publishes on `exited`).
pub async fn stop_group(
    pgid: u32,
    mut exited: watch::Receiver<Option<ExitStatus>>,
    grace: Duration,
) -> StopOutcome {
    let leader_gone = wait_exit(&mut exited, grace).await;
    // Even when the leader left on its own, members of its group (grandchildren)
    // may remain: they are signalled too.
    if leader_gone && !group_alive(pgid) {
        return StopOutcome::ExitedOnEof;
    }
    signal_group(pgid, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    let outcome = if wait_group_gone(pgid, deadline).await {
        StopOutcome::Terminated
    } else {
        signal_group(pgid, libc::SIGKILL);
        StopOutcome::Killed
    };
    // SIGKILL cannot be ignored; the leader is reaped by its owner task.
    wait_exit(&mut exited, Duration::from_secs(5)).await;
    // Grandchildren are reaped by init; wait until the kernel has removed them.
    wait_group_gone(pgid, Instant::now() + Duration::from_secs(5)).await;
    outcome
}
