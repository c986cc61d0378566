//! The integration test binary: every test starts the real `mcpgate` binary on
//! `127.0.0.1:0`, drives it over real HTTP with real clients, and checks that
//! the processes it caused are gone when it ends.

mod cases;
mod common;
