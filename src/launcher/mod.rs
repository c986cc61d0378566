//! The launcher: the only part of the gateway that starts backend processes.
//!
//! `process` spawns and stops process trees, `conn` speaks JSON-RPC over one
//! child's pipes, `pool` maps `(server, session)` keys to connections, and
//! `spares` keeps processes started ahead for the pool to take. Nothing
//! here knows about HTTP, and nothing outside this module creates a process.
//!
//! Its two errors, [`LaunchError`] (no connection could be had) and
//! [`ConnFailure`] (a request got no answer), each know their metric label
//! and JSON-RPC code, and keep the error they wrap as their `source()`.

mod conn;
pub mod handshake;
mod pool;
mod process;
mod spares;
pub mod stats;
mod stdin;
pub mod supervisor;

pub use conn::{Answer, BackendConn, ConnFailure, ConnLabel, ServerMessageSink};
pub use pool::{LaunchError, Launched, PoolKey, SessionPool};
pub use process::{StopOutcome, locate_command, tree_rss_kib};
pub use spares::{SpareCounts, SpareInfo, Spares};
