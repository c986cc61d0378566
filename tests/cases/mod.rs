//! Integration tests, one module per area.

mod bad_input;
mod cli;
mod clients;
mod conformance;
mod fidelity;
mod hostile_clients;
mod interop;
mod json_configs;
mod lifecycle;
mod modern_backends;
mod oauth;
mod operations;
mod operations_cli;
mod pool;
mod process_tree;
mod routed_http;
mod scale_out;
mod security;
mod shared_mode;
mod spares;
mod stateless;
mod status_page;
mod stuck_backends;
mod unified;
mod unprompted;
