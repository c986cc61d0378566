//! Integration tests, one module per area.

mod cli;
mod clients;
mod lifecycle;
mod routed_http;
