//! A headless Chromium driven over the DevTools protocol, for the status
//! page's test: the browser Debian packages (`chromium`, installed by
//! `scripts/install-test-deps.sh`), started with `--remote-debugging-pipe`,
//! which speaks the protocol as NUL-terminated JSON on its file descriptors
//! 3 (commands in) and 4 (answers and events out), so no WebSocket client and
//! no port are needed.
//!
//! The browser runs in a process group of its own with a temporary profile;
//! it is stopped by its pid and group id (never by name), and every wait is
//! bounded by [`DEADLINE`].

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::DEADLINE;

/// Where Debian's package puts the browser itself (`/usr/bin/chromium` is a
/// shell wrapper around it); `MCPGATE_TEST_CHROMIUM` names another.
const DEBIAN_CHROMIUM: &str = "/usr/lib/chromium/chromium";

fn chromium_path() -> PathBuf {
    let path = std::env::var_os("MCPGATE_TEST_CHROMIUM")
        .map_or_else(|| PathBuf::from(DEBIAN_CHROMIUM), PathBuf::from);
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-test-deps.sh (it installs Debian's chromium)",
        path.display()
    );
    path
}

/// A pipe whose ends are closed on exec (the child gets its copies by `dup2`).
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2(2) writes two new descriptors into `fds`, which are then owned here.
    #[allow(unsafe_code)]
    unsafe {
        assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0, "pipe2");
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    }
}

/// A running headless browser.
pub struct Browser {
    child: Option<Child>,
    pid: u32,
    commands: std::fs::File,
    messages: tokio::sync::mpsc::UnboundedReceiver<Value>,
    next_id: u64,
    /// Events seen while waiting for answers: exceptions and console lines.
    pub events: Vec<Value>,
    profile: tempfile::TempDir,
}

/// One page (a target the browser session is attached to).
#[derive(Clone)]
pub struct Page {
    session: String,
}

impl Browser {
    /// Starts the browser with an empty profile and no window.
    pub fn start() -> Browser {
        let profile = tempfile::tempdir().expect("temp dir");
        let (commands_read, commands_write) = pipe();
        let (messages_read, messages_write) = pipe();
        let log = std::fs::File::create(profile.path().join("chromium.log")).expect("log file");
        let mut command = Command::new(chromium_path());
        command
            .arg("--headless=new")
            // The test suite runs as root in CI, where Chromium refuses to
            // start with its sandbox; the pages it loads are the gateway's own.
            .arg("--no-sandbox")
            .arg("--remote-debugging-pipe")
            .arg(format!(
                "--user-data-dir={}",
                profile.path().join("profile").display()
            ))
            .args([
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-breakpad",
                "--disable-crash-reporter",
                "--hide-scrollbars",
                "--mute-audio",
                "--window-size=1360,860",
                "about:blank",
            ])
            .env("HOME", profile.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .process_group(0);
        let (to_browser, from_browser) = (commands_read.as_raw_fd(), messages_write.as_raw_fd());
        // SAFETY: between fork and exec only async-signal-safe calls (fcntl,
        // dup2) on descriptors this process owns: the pipes' ends become the
        // child's 3 and 4 (first moved above 10, so that neither is already
        // 3 or 4; dup2's copies are not closed on exec).
        #[allow(unsafe_code)]
        unsafe {
            command.pre_exec(move || {
                let read = libc::fcntl(to_browser, libc::F_DUPFD_CLOEXEC, 10);
                let write = libc::fcntl(from_browser, libc::F_DUPFD_CLOEXEC, 10);
                if read < 0 || write < 0 || libc::dup2(read, 3) < 0 || libc::dup2(write, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("start chromium");
        drop((commands_read, messages_write));
        let pid = child.id();
        let (tx, messages) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(std::fs::File::from(messages_read));
            let mut buffer = Vec::new();
            while let Ok(n) = reader.read_until(0, &mut buffer) {
                if n == 0 {
                    break;
                }
                if buffer.last() == Some(&0) {
                    buffer.pop();
                }
                if let Ok(message) = serde_json::from_slice::<Value>(&buffer)
                    && tx.send(message).is_err()
                {
                    break;
                }
                buffer.clear();
            }
        });
        Browser {
            child: Some(child),
            pid,
            commands: std::fs::File::from(commands_write),
            messages,
            next_id: 0,
            events: Vec::new(),
            profile,
        }
    }

    /// The browser's pid (its process group's id too).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `method` (to `session`'s page, or the browser) and returns its
    /// result; a protocol error fails with its message.
    async fn send(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = message.to_string().into_bytes();
        bytes.push(0);
        self.commands
            .write_all(&bytes)
            .map_err(|e| format!("writing to chromium: {e}"))?;
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let message = tokio::time::timeout_at(deadline, self.messages.recv())
                .await
                .map_err(|_| format!("chromium did not answer {method} within {DEADLINE:?}"))?
                .ok_or_else(|| {
                    format!(
                        "chromium closed its pipe (see {})",
                        self.log_path().display()
                    )
                })?;
            if message["id"] == id {
                return match message.get("error") {
                    Some(error) => Err(format!("{method}: {error}")),
                    None => Ok(message["result"].clone()),
                };
            }
            let event = message["method"].as_str().unwrap_or_default();
            if event == "Runtime.exceptionThrown" || event == "Runtime.consoleAPICalled" {
                self.events.push(message);
            }
        }
    }

    /// Where the browser's own stderr goes.
    pub fn log_path(&self) -> PathBuf {
        self.profile.path().join("chromium.log")
    }

    /// Opens a new page (`width` x `height` CSS pixels) and attaches to it.
    pub async fn new_page(&mut self, width: u32, height: u32) -> Page {
        let target = self
            .send(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await
            .unwrap();
        let attached = self
            .send(
                None,
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await
            .unwrap();
        let page = Page {
            session: attached["sessionId"].as_str().unwrap().to_owned(),
        };
        for method in ["Page.enable", "Runtime.enable"] {
            self.send(Some(&page.session), method, json!({}))
                .await
                .unwrap();
        }
        self.send(
            Some(&page.session),
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await
        .unwrap();
        page
    }

    /// Loads `url` in `page` (returns once the navigation is committed).
    pub async fn navigate(&mut self, page: &Page, url: &str) {
        let result = self
            .send(Some(&page.session), "Page.navigate", json!({"url": url}))
            .await
            .unwrap();
        assert!(
            result.get("errorText").is_none(),
            "navigating to {url}: {result}"
        );
    }

    /// The value of the JavaScript `expression` in `page` (promises awaited).
    pub async fn eval(&mut self, page: &Page, expression: &str) -> Result<Value, String> {
        let result = self
            .send(
                Some(&page.session),
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await?;
        if let Some(exception) = result.get("exceptionDetails") {
            return Err(format!("{expression}: {exception}"));
        }
        Ok(result["result"]["value"].clone())
    }

    /// Waits until `expression` is `true` in `page` (a page that is still
    /// loading counts as not yet), failing the test after [`DEADLINE`].
    pub async fn wait_for(&mut self, page: &Page, what: &str, expression: &str) {
        let start = Instant::now();
        loop {
            let last = match self.eval(page, expression).await {
                Ok(Value::Bool(true)) => return,
                Ok(other) => other.to_string(),
                Err(e) => e,
            };
            if start.elapsed() >= DEADLINE {
                let shown = self
                    .eval(
                        page,
                        "location.href + '\\n' + document.body.innerText.slice(0, 2000)",
                    )
                    .await;
                panic!(
                    "timed out waiting until {what} (last: {last}; page: {shown:?}; events: {:?})",
                    self.events
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Types `text` into the focused element, as a keyboard would.
    pub async fn type_text(&mut self, page: &Page, text: &str) {
        self.send(
            Some(&page.session),
            "Input.insertText",
            json!({"text": text}),
        )
        .await
        .unwrap();
    }

    /// Saves a PNG of `page` to `path`.
    pub async fn screenshot(&mut self, page: &Page, path: &Path) {
        use base64::Engine;
        let shot = self
            .send(
                Some(&page.session),
                "Page.captureScreenshot",
                json!({"format": "png"}),
            )
            .await
            .unwrap();
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Closes the browser and waits until every process of its group is gone
    /// (killing the group by its id if it does not go in time).
    pub async fn stop(mut self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            self.send(None, "Browser.close", json!({})),
        )
        .await;
        let mut child = self.child.take().unwrap();
        let pgid = self.pid as i32;
        tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            while child.try_wait().unwrap().is_none() && start.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(20));
            }
            kill_group(pgid, libc::SIGKILL);
            let _ = child.wait();
            while group_exists(pgid) {
                assert!(
                    start.elapsed() < DEADLINE,
                    "chromium's processes did not exit"
                );
                kill_group(pgid, libc::SIGKILL);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await
        .unwrap();
    }
}

fn kill_group(pgid: i32, signal: i32) {
    // SAFETY: kill(2) on the process group this test started (its id is the browser's pid).
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// True while any process of group `pgid` exists (zombies reaped by others included).
fn group_exists(pgid: i32) -> bool {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .any(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    stat.rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(2)?
                        .parse::<i32>()
                        .ok()
                })
                == Some(pgid)
        })
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A test that failed before `stop` must not leave the browser running.
        if let Some(mut child) = self.child.take() {
            kill_group(self.pid as i32, libc::SIGKILL);
            let _ = child.wait();
        }
    }
}
