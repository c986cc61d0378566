//! The direct-stdio floor: the test server spoken to over its own pipes, with
//! no gateway and no HTTP. Requests are pipelined on stdin; one reader task
//! per process matches answers to requests by id.
//!
//! This is the least any route to the backend can cost on this machine: what
//! the gateway adds is measured against it.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::oneshot;

/// Longest a backend may take to answer one request.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a backend gets to exit after its stdin is closed.
const EXIT_GRACE: Duration = Duration::from_secs(5);

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>>;

/// One test-server process.
pub struct Backend {
    pub pid: u32,
    child: tokio::sync::Mutex<Child>,
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    waiters: Waiters,
}

impl Backend {
    /// Spawns the test server and runs the handshake (`initialize`, then
    /// `notifications/initialized`).
    pub async fn start(program: &Path) -> Result<Arc<Backend>, String> {
        let mut child = Command::new(program)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let pid = child.id().unwrap_or(0);
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        let waiters: Waiters = Arc::default();
        tokio::spawn(read_answers(
            BufReader::with_capacity(64 * 1024, stdout),
            Arc::clone(&waiters),
        ));
        let backend = Arc::new(Backend {
            pid,
            child: tokio::sync::Mutex::new(child),
            stdin: tokio::sync::Mutex::new(stdin),
            waiters,
        });
        let init = crate::rpc::initialize(0);
        let answer = backend.call(0, &init).await?;
        if !crate::rpc::has_result(&answer) {
            return Err(format!(
                "initialize failed: {}",
                String::from_utf8_lossy(&answer)
            ));
        }
        let mut note = crate::rpc::INITIALIZED.to_vec();
        note.push(b'\n');
        backend.write(&note).await?;
        Ok(backend)
    }

    async fn write(&self, line: &[u8]) -> Result<(), String> {
        let mut stdin = self.stdin.lock().await;
        let pipe = stdin.as_mut().ok_or("stdin is closed")?;
        pipe.write_all(line)
            .await
            .map_err(|e| format!("write to backend {}: {e}", self.pid))
    }

    /// Sends request `message` (one line, without its newline) whose id is
    /// `id`, and returns the answer line.
    pub async fn call(&self, id: u64, message: &[u8]) -> Result<Vec<u8>, String> {
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, tx);
        let mut line = Vec::with_capacity(message.len() + 1);
        line.extend_from_slice(message);
        line.push(b'\n');
        self.write(&line).await?;
        match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(format!("backend {} closed its stdout", self.pid)),
            Err(_) => Err(format!("backend {} did not answer request {id}", self.pid)),
        }
    }

    /// Closes stdin and waits for the exit (the test server exits on EOF);
    /// kills it (by its pid, through its handle) if it does not.
    pub async fn stop(&self) -> Result<(), String> {
        self.stdin.lock().await.take();
        let mut child = self.child.lock().await;
        match tokio::time::timeout(EXIT_GRACE, child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(format!("backend {} exited with {status}", self.pid)),
            Ok(Err(e)) => Err(format!("backend {}: {e}", self.pid)),
            Err(_) => {
                let _ = child.kill().await;
                Err(format!("backend {} ignored stdin EOF; killed", self.pid))
            }
        }
    }
}

/// Routes each answer line to the request waiting for its id.
async fn read_answers<R: tokio::io::AsyncBufRead + Unpin>(mut reader: R, waiters: Waiters) {
    let mut line = Vec::with_capacity(8 * 1024);
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        while line.last().is_some_and(u8::is_ascii_whitespace) {
            line.pop();
        }
        let Some(id) = crate::rpc::head_id(&line) else {
            continue;
        };
        let waiter = waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
        if let Some(waiter) = waiter {
            let _ = waiter.send(std::mem::replace(&mut line, Vec::with_capacity(8 * 1024)));
        }
    }
    // Whoever still waits learns the stream ended.
    waiters
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clear();
}
