//! systemd's readiness protocol (`sd_notify`), spoken by hand: one Unix
//! datagram of `KEY=VALUE` lines to the socket named by `NOTIFY_SOCKET`.
//!
//! Owns reading `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`, and sending
//! `READY=1`, `STOPPING=1`, `STATUS=...` and the `WATCHDOG=1` keep-alive. Without
//! `NOTIFY_SOCKET` (not started by systemd with `Type=notify`) every call does
//! nothing.
//!
//! It must never fail, stall or stop the gateway: a notification that cannot be
//! sent is logged at debug level and dropped, and the socket never blocks. It
//! never changes the process environment (`NOTIFY_SOCKET` stays set: backends get
//! a minimal environment anyway, and `NotifyAccess=main` makes systemd ignore
//! any process but the gateway). It decides nothing about when the gateway is
//! ready or stopping: `run` says so.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::Duration;

/// The service manager's notification socket, if there is one.
#[derive(Debug)]
pub(crate) struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`. Never fails:
    /// anything missing or unusable means no notifications (or no watchdog).
    pub(crate) fn from_env() -> Notifier {
        let Some(name) = std::env::var_os("NOTIFY_SOCKET") else {
            return Notifier::disabled();
        };
        let target = socket_addr(name.as_encoded_bytes()).and_then(|addr| {
            let socket = UnixDatagram::unbound().ok()?;
            socket.set_nonblocking(true).ok()?;
            Some((socket, addr))
        });
        let Some(target) = target else {
            tracing::warn!(
                notify_socket = %name.to_string_lossy(),
                "NOTIFY_SOCKET is not a Unix socket path or abstract name; not notifying systemd"
            );
            return Notifier::disabled();
        };
        let watchdog = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        Notifier {
            target: Some(target),
            watchdog,
        }
    }

    /// A notifier that sends nothing.
    pub(crate) fn disabled() -> Notifier {
        Notifier {
            target: None,
            watchdog: None,
        }
    }

    /// `READY=1`: the gateway listens and serves. `status` is shown by `systemctl status`.
    pub(crate) fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// `STOPPING=1`: shutdown has begun.
    pub(crate) fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
    }

    /// `STATUS=...` alone.
    pub(crate) fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    /// Sends `WATCHDOG=1` every half of `WATCHDOG_USEC` from a task of its own,
    /// for as long as the returned guard lives, when systemd asked for it.
    /// The pings come from the async runtime, so they stop if it stalls.
    pub(crate) fn spawn_watchdog(self: &Arc<Self>) -> Option<WatchdogTask> {
        let every = self.watchdog?;
        tracing::debug!(?every, "feeding the systemd watchdog");
        let notifier = Arc::clone(self);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                notifier.send("WATCHDOG=1");
            }
        });
        Some(WatchdogTask(task))
    }

    fn send(&self, message: &str) {
        let Some((socket, addr)) = &self.target else {
            return;
        };
        if let Err(e) = socket.send_to_addr(message.as_bytes(), addr) {
            tracing::debug!(error = %e, message, "cannot notify systemd");
        }
    }
}

/// The watchdog task; dropping it stops the pings.
#[derive(Debug)]
pub(crate) struct WatchdogTask(tokio::task::JoinHandle<()>);

impl Drop for WatchdogTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `NOTIFY_SOCKET` as an address: an absolute path, or `@name` for the
/// abstract namespace. Anything else (relative paths, `vsock:`) is refused.
fn socket_addr(name: &[u8]) -> Option<SocketAddr> {
    match name {
        [b'@', abstract_name @ ..] if !abstract_name.is_empty() => {
            SocketAddr::from_abstract_name(abstract_name).ok()
        }
        [b'/', ..] => SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(name)).ok(),
        _ => None,
    }
}

/// Half of `WATCHDOG_USEC`, when it is set, positive, and meant for us (no
/// `WATCHDOG_PID`, or ours).
fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, our_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(our_pid)
    {
        return None;
    }
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

/// A status is one line of the protocol: newlines would start new keys.
fn one_line(status: &str) -> String {
    status.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_abstract_names_are_addresses_and_nothing_else_is() {
        let path = socket_addr(b"/run/systemd/notify").unwrap();
        assert_eq!(
            path.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        let abstract_addr = socket_addr(b"@/org/freedesktop/systemd1/notify/42").unwrap();
        assert_eq!(
            abstract_addr.as_abstract_name(),
            Some(&b"/org/freedesktop/systemd1/notify/42"[..])
        );
        for bad in [&b""[..], b"@", b"relative/path", b"vsock:2:1234"] {
            assert!(socket_addr(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn the_watchdog_pings_at_half_the_interval_and_only_for_its_own_pid() {
        let half = Some(Duration::from_millis(100));
        assert_eq!(watchdog_interval(Some("200000"), None, 7), half);
        assert_eq!(watchdog_interval(Some("200000"), Some("7"), 7), half);
        assert_eq!(watchdog_interval(Some("200000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("200000"), Some("x"), 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
    }

    #[test]
    fn a_status_stays_one_line() {
        assert_eq!(one_line("a\nb\rc"), "a b c");
    }

    #[test]
    fn a_disabled_notifier_sends_nothing_and_has_no_watchdog() {
        let notifier = Arc::new(Notifier::disabled());
        notifier.ready("x");
        notifier.stopping("x");
        assert!(notifier.spawn_watchdog().is_none());
    }
}
