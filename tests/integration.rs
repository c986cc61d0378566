//! The integration test binary: every test starts the real `mcpgate` binary on
//! `127.0.0.1:0`, drives it over real HTTP with real clients, and checks that
//! the processes it caused are gone when it ends.

// The harness and the cases' helpers are modules of this one binary: `pub`
// there says "for every case", which is all it can mean.
#![allow(unreachable_pub)]

mod cases;
mod common;
