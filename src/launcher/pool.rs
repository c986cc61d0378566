//! The `(server, session)` connection pool.
//!
//! Owns which backend connection serves which key: launching on first need
//! (single-flight per key, never under a lock other keys need), running the
//! `initialize` handshake on every fresh process, relaunching after a crash on
//! the next request, and evicting (stopping the whole process tree) on request
//! or at shutdown. It never parses HTTP and never decides *when* a session ends;
//! the session layer tells it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;

use super::conn::{BackendConn, ConnFailure, ConnLabel, ServerMessageSink};
use super::process;
use crate::config::ServerConfig;
use crate::jsonrpc;

/// The `notifications/initialized` the gateway sends after every handshake.
const INITIALIZED: &[u8] = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

/// Which connection: one per backend server and client session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub server: Arc<str>,
    pub session: Arc<str>,
}

/// Why a connection could not be had.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("could not start `{command}`: {error}")]
    Spawn {
        command: String,
        error: std::io::Error,
    },
    #[error("the backend failed during the initialize handshake: {0}")]
    Handshake(ConnFailure),
    /// The backend answered `initialize` with a JSON-RPC error (kept as written).
    #[error("the backend refused initialize")]
    Refused(Bytes),
    #[error("the session ended while its backend was starting")]
    Evicted,
}

impl LaunchError {
    /// The stderr lines the backend wrote last, where known.
    pub fn stderr_tail(&self) -> &[String] {
        match self {
            LaunchError::Handshake(f) => f.stderr_tail(),
            _ => &[],
        }
    }
}

/// A connection ready for requests.
pub struct Launched {
    pub conn: Arc<BackendConn>,
    /// The backend's answer to `initialize` when this call started the process.
    pub init_response: Option<Bytes>,
}

#[derive(Default)]
struct Entry {
    conn: RwLock<Option<Arc<BackendConn>>>,
    /// Held while launching: the single flight of this key.
    launching: tokio::sync::Mutex<()>,
}

impl Entry {
    fn live(&self) -> Option<Arc<BackendConn>> {
        let conn = self
            .conn
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        conn.as_ref().filter(|c| !c.is_closed()).cloned()
    }
}

/// The connection pool.
pub struct SessionPool {
    entries: Mutex<HashMap<PoolKey, Arc<Entry>>>,
    stop_grace: Duration,
    max_message_bytes: usize,
}

impl SessionPool {
    pub fn new(stop_grace: Duration, max_message_bytes: u64) -> SessionPool {
        SessionPool {
            entries: Mutex::new(HashMap::new()),
            stop_grace,
            max_message_bytes: usize::try_from(max_message_bytes).unwrap_or(usize::MAX),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<PoolKey, Arc<Entry>>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The live connection for `key`, launching one (and replaying the session's
    /// `initialize` message, `init_message`) if there is none.
    pub async fn connection(
        &self,
        key: &PoolKey,
        server: &Arc<ServerConfig>,
        init_message: &[u8],
        sink: Arc<dyn ServerMessageSink>,
    ) -> Result<Launched, LaunchError> {
        let entry = Arc::clone(self.entries().entry(key.clone()).or_default());
        if let Some(conn) = entry.live() {
            return Ok(Launched {
                conn,
                init_response: None,
            });
        }
        let _flight = entry.launching.lock().await;
        if let Some(conn) = entry.live() {
            return Ok(Launched {
                conn,
                init_response: None,
            });
        }
        let (conn, init_response) = self.launch(key, server, init_message, sink).await?;
        let still_wanted = self
            .entries()
            .get(key)
            .is_some_and(|current| Arc::ptr_eq(current, &entry));
        if !still_wanted {
            conn.stop("session ended during launch", self.stop_grace)
                .await;
            return Err(LaunchError::Evicted);
        }
        *entry
            .conn
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::clone(&conn));
        Ok(Launched {
            conn,
            init_response: Some(init_response),
        })
    }

    async fn launch(
        &self,
        key: &PoolKey,
        server: &Arc<ServerConfig>,
        init_message: &[u8],
        sink: Arc<dyn ServerMessageSink>,
    ) -> Result<(Arc<BackendConn>, Bytes), LaunchError> {
        let child = process::spawn(server).map_err(|error| LaunchError::Spawn {
            command: server.command.clone(),
            error,
        })?;
        let label = ConnLabel {
            server: Arc::clone(&key.server),
            session: Arc::clone(&key.session),
        };
        let conn = BackendConn::start(child, label, sink, self.max_message_bytes);
        tracing::info!(server = %key.server, session = %key.session, pid = conn.pid(), "backend spawned");
        self.watch_for_exit(&conn);

        let id_range = jsonrpc::peek(init_message)
            .ok()
            .and_then(|p| p.id_range)
            .expect("the session layer stores only valid initialize requests");
        let answer = conn
            .request(init_message, id_range, server.startup_timeout)
            .await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(failure) => {
                conn.stop("initialize failed", self.stop_grace).await;
                return Err(LaunchError::Handshake(failure));
            }
        };
        if jsonrpc::peek(&answer)
            .map(|p| p.result.is_none())
            .unwrap_or(true)
        {
            conn.stop("initialize refused", self.stop_grace).await;
            return Err(LaunchError::Refused(answer));
        }
        if let Err(failure) = conn.send(INITIALIZED).await {
            conn.stop("initialized failed", self.stop_grace).await;
            return Err(LaunchError::Handshake(failure));
        }
        Ok((conn, answer))
    }

    /// When a backend exits on its own, its process group (grandchildren) is
    /// ended and reaped at once; the entry stays, so the session's next request
    /// starts a new process.
    fn watch_for_exit(&self, conn: &Arc<BackendConn>) {
        let conn = Arc::clone(conn);
        let grace = self.stop_grace;
        tokio::spawn(async move {
            conn.closed().await;
            if !conn.was_stopped() {
                conn.stop("backend exited", grace).await;
            }
        });
    }

    /// Removes `key` and stops its process tree. Returns false if there was nothing.
    pub async fn evict(&self, key: &PoolKey, reason: &'static str) -> bool {
        let Some(entry) = self.entries().remove(key) else {
            return false;
        };
        let conn = entry
            .conn
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(conn) = conn {
            conn.stop(reason, self.stop_grace).await;
        }
        true
    }

    /// Stops every connection, all at once.
    pub async fn shutdown(&self) {
        let entries: Vec<_> = self.entries().drain().collect();
        let stops = entries.into_iter().filter_map(|(_, entry)| {
            let conn = entry
                .conn
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            conn.map(|c| {
                let grace = self.stop_grace;
                async move { c.stop("gateway shutdown", grace).await }
            })
        });
        futures_util::future::join_all(stops).await;
    }

    /// How many keys have an entry (live or being launched).
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
