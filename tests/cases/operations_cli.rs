//! Running as a system service: shell completions and the man page generated
//! from the command line's definition, systemd's `NOTIFY_SOCKET` messages
//! (`READY=1`, `STOPPING=1`, `WATCHDOG=1`) received on a socket the test binds,
//! and SIGHUP (sent by the unit's `ExecReload`) not stopping the gateway.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::common::*;

/// Runs `mcpgate args` in an empty directory (no config anywhere near).
fn mcpgate_in_empty_dir(args: &[&str]) -> (tempfile::TempDir, std::process::Output) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mcpgate"))
        .args(args)
        .current_dir(dir.path())
        .output()
        .expect("run mcpgate");
    (dir, out)
}

/// Runs `script` in bash with `$1` = `arg`; returns stdout, failing on an error.
fn bash(script: &str, arg: &Path) -> String {
    let out = Command::new("bash")
        .args(["-c", script, "bash"])
        .arg(arg)
        .output()
        .expect("run bash");
    assert!(out.status.success(), "bash failed: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn bash_completions_complete_the_subcommands_and_flags() {
    let (dir, out) = mcpgate_in_empty_dir(&["completions", "bash"]);
    assert!(out.status.success(), "{out:?}");
    let script = dir.path().join("mcpgate.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    // bash accepts the script and it registers a completion for `mcpgate`.
    let registered = bash(r#"source "$1" && complete -p mcpgate"#, &script);
    assert!(registered.contains("mcpgate"), "{registered}");
    // Completing real command lines, the way bash calls the function.
    let complete = |words: &str| {
        bash(
            &format!(
                r#"source "$1"; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1));
                   _mcpgate mcpgate "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}";
                   printf '%s\n' "${{COMPREPLY[@]}}""#
            ),
            &script,
        )
    };
    let first_word: Vec<String> = complete("mcpgate ''").lines().map(str::to_owned).collect();
    for expected in [
        "check",
        "completions",
        "man",
        "--config",
        "--listen",
        "--log-format",
    ] {
        assert!(
            first_word.iter().any(|w| w == expected),
            "{expected} missing from {first_word:?}"
        );
    }
    assert_eq!(complete("mcpgate --log-format ''").trim(), "text\njson");
    assert!(
        complete("mcpgate completions ''")
            .lines()
            .any(|w| w == "fish"),
        "completions completes shell names"
    );
    // Every other shell gets a script of its own that names the flags too.
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let (_dir, out) = mcpgate_in_empty_dir(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("log-format") && text.contains("completions"),
            "{shell}: {text}"
        );
    }
}

#[test]
fn the_man_page_is_roff_that_groff_renders_without_warnings_naming_every_flag() {
    let (dir, out) = mcpgate_in_empty_dir(&["man"]);
    assert!(out.status.success(), "{out:?}");
    let roff = String::from_utf8(out.stdout).unwrap();
    for section in [".TH mcpgate 1", ".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS"] {
        assert!(roff.contains(section), "{section} missing:\n{roff}");
    }
    let page = dir.path().join("mcpgate.1");
    std::fs::write(&page, &roff).unwrap();
    // -ww: every warning; -P-cbou: plain text without overstriking.
    let rendered = Command::new("groff")
        .args(["-man", "-Tascii", "-ww", "-P-c", "-P-b", "-P-o", "-P-u"])
        .arg(&page)
        .stdin(Stdio::null())
        .output()
        .expect("run groff (Debian: groff-base)");
    let stderr = String::from_utf8_lossy(&rendered.stderr);
    assert!(rendered.status.success() && stderr.is_empty(), "{stderr}");
    let text = String::from_utf8_lossy(&rendered.stdout);
    for name in [
        "--config",
        "--listen",
        "--log-format",
        "--version",
        "check",
        "completions",
        "man",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
}

/// A Unix datagram socket standing in for systemd's notification socket.
struct NotifySocket {
    socket: UnixDatagram,
    /// Every datagram received so far, in order.
    received: Vec<String>,
    /// `NOTIFY_SOCKET` for the gateway: the path, or `@name` for an abstract socket.
    name: String,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        NotifySocket::new(socket, path.to_str().unwrap().to_owned(), dir)
    }

    fn bind_abstract() -> NotifySocket {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!("mcpgate-test-notify-{}-{nanos}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).expect("bind the abstract notify socket");
        NotifySocket::new(socket, format!("@{name}"), tempfile::tempdir().unwrap())
    }

    fn new(socket: UnixDatagram, name: String, dir: tempfile::TempDir) -> NotifySocket {
        socket.set_nonblocking(true).unwrap();
        NotifySocket {
            socket,
            received: Vec::new(),
            name,
            _dir: dir,
        }
    }

    /// Reads whatever datagrams are waiting.
    fn drain(&mut self) {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = self.socket.recv(&mut buf) {
            self.received
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }

    /// How many datagrams so far carry the line `line`.
    fn count(&mut self, line: &str) -> usize {
        self.drain();
        self.received
            .iter()
            .filter(|m| m.lines().any(|l| l == line))
            .count()
    }

    /// Waits until `n` datagrams carry the line `line`; returns the first one.
    async fn wait_for(&mut self, line: &str, n: usize) -> String {
        let start = Instant::now();
        while self.count(line) < n {
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {n} x {line}; received {:?}",
                self.received
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        self.received
            .iter()
            .find(|m| m.lines().any(|l| l == line))
            .unwrap()
            .clone()
    }

    /// Position of the first datagram carrying `line`.
    fn position(&self, line: &str) -> Option<usize> {
        self.received
            .iter()
            .position(|m| m.lines().any(|l| l == line))
    }
}

#[tokio::test]
async fn ready_comes_once_listening_and_stopping_when_sigterm_arrives() {
    let mut notify = NotifySocket::bind();
    let config = format!("{FAST_GATEWAY}{}", test_server("a", &[]));
    let mut gw = Gateway::start_with_env(&config, &[("NOTIFY_SOCKET", &notify.name)]).await;
    let ready = notify.wait_for("READY=1", 1).await;
    // The status names the address actually bound (port 0 was asked for).
    assert!(
        ready.contains(&format!("STATUS=serving 1 server(s) on {}", gw.base)),
        "{ready}"
    );
    let health = gw.http.get(format!("{}/healthz", gw.base)).send().await;
    assert_eq!(health.unwrap().status(), 200);
    let session = gw.open_session("a").await;
    assert!(!session.is_empty());
    assert_eq!(notify.count("STOPPING=1"), 0, "{:?}", notify.received);

    gw.signal(libc::SIGTERM);
    notify.wait_for("STOPPING=1", 1).await;
    let status = gw.wait_exit().await;
    assert!(status.success(), "gateway exited with {status}");
    gw.assert_no_leftovers().await;
    notify.drain();
    assert!(
        notify.position("READY=1") < notify.position("STOPPING=1"),
        "{:?}",
        notify.received
    );
    assert_eq!(notify.count("READY=1"), 1, "{:?}", notify.received);
    // No watchdog was asked for, so none was sent.
    assert_eq!(notify.count("WATCHDOG=1"), 0, "{:?}", notify.received);
}

#[tokio::test]
async fn an_abstract_notify_socket_gets_ready_too() {
    let mut notify = NotifySocket::bind_abstract();
    let gw = Gateway::start_with_env(FAST_GATEWAY, &[("NOTIFY_SOCKET", &notify.name)]).await;
    notify.wait_for("READY=1", 1).await;
    gw.stop().await;
    notify.wait_for("STOPPING=1", 1).await;
}

#[tokio::test]
async fn a_gateway_that_cannot_listen_never_sends_ready() {
    let mut notify = NotifySocket::bind();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mcpgate.toml");
    std::fs::write(&config, FAST_GATEWAY).unwrap();
    let name = notify.name.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_mcpgate"))
            .arg("--config")
            .arg(&config)
            .args(["--listen", &addr])
            .env("NOTIFY_SOCKET", &name)
            .env("WATCHDOG_USEC", "200000")
            .output()
            .expect("run mcpgate")
    });
    let out = out.await.unwrap();
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot listen"), "{stderr}");
    assert_eq!(notify.count("READY=1"), 0, "{:?}", notify.received);
    drop(taken);
}

#[tokio::test]
async fn the_watchdog_is_fed_every_half_of_watchdog_usec() {
    let mut notify = NotifySocket::bind();
    let gw = Gateway::start_with_env(
        FAST_GATEWAY,
        &[("NOTIFY_SOCKET", &notify.name), ("WATCHDOG_USEC", "200000")],
    )
    .await;
    notify.wait_for("READY=1", 1).await;
    let start = Instant::now();
    let before = notify.count("WATCHDOG=1");
    notify.wait_for("WATCHDOG=1", before + 2).await;
    // Two more pings at 100 ms apart take at least one interval.
    assert!(start.elapsed() >= std::time::Duration::from_millis(90));
    gw.stop().await;
}

#[tokio::test]
async fn the_watchdog_is_not_fed_when_watchdog_pid_names_another_process() {
    let mut notify = NotifySocket::bind();
    let mut gw = Gateway::start_with_env(
        FAST_GATEWAY,
        &[
            ("NOTIFY_SOCKET", &notify.name),
            ("WATCHDOG_USEC", "200000"),
            ("WATCHDOG_PID", "1"),
        ],
    )
    .await;
    notify.wait_for("READY=1", 1).await;
    gw.signal(libc::SIGTERM);
    notify.wait_for("STOPPING=1", 1).await;
    assert!(gw.wait_exit().await.success());
    // A fed watchdog pings at once when the gateway starts, long before it exits.
    assert_eq!(notify.count("WATCHDOG=1"), 0, "{:?}", notify.received);
}

#[tokio::test]
async fn sighup_does_not_stop_the_gateway_or_its_sessions() {
    let config = format!("{FAST_GATEWAY}{}", test_server("a", &[]));
    let gw = Gateway::start(&config).await;
    let session = gw.open_session("a").await;
    let pid = gw.backend_pid("a", &session).await;
    gw.signal(libc::SIGHUP);
    gw.wait_for_log(&["SIGHUP"]).await;
    assert!(process_alive(gw.pid), "the gateway died of SIGHUP");
    assert_eq!(gw.backend_pid("a", &session).await, pid);
    gw.stop().await;
}
