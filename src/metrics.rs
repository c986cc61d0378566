//! The gateway's Prometheus metrics.
//!
//! Owns the metric families and their names, and the text exposition served
//! on `/metrics`. The rest of the gateway records into them through the
//! functions here (the counters and histograms are atomics, so recording takes
//! no lock any request could wait on, beyond the family map's read lock).
//! Labels are bounded sets: server ids from the config, JSON-RPC methods of
//! the MCP specification (anything else is `other`), and fixed reasons. It
//! never labels anything with a session id, a caller or a client-chosen string.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// The labels of a request's latency: built on every request without
/// allocating (the server id is shared, the method label is static).
type RequestLabels = (
    [(&'static str, std::sync::Arc<str>); 1],
    [(&'static str, &'static str); 1],
);

struct Metrics {
    registry: Registry,
    sessions: Family<Labels, Gauge>,
    processes: Family<Labels, Gauge>,
    spawns: Family<Labels, Counter>,
    exits: Family<Labels, Counter>,
    evictions: Family<Labels, Counter>,
    spawn_seconds: Family<Labels, Histogram>,
    request_seconds: Family<RequestLabels, Histogram>,
    errors: Family<Labels, Counter>,
    spares_ready: Family<Labels, Gauge>,
    spares_wanted: Family<Labels, Gauge>,
    spare_claims: Family<Labels, Counter>,
    spare_misses: Family<Labels, Counter>,
    spare_failures: Family<Labels, Counter>,
    spare_ready_seconds: Family<Labels, Histogram>,
    /// `mcpgate_bytes_total{direction="in"}` and `{direction="out"}`, looked
    /// up once.
    bytes_in: Counter,
    bytes_out: Counter,
    connections: Gauge,
    buffered_body_bytes: Gauge,
}

fn latency_histogram() -> Histogram {
    // 0.1 ms to about 100 s.
    Histogram::new(exponential_buckets(0.0001, 4.0, 11))
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("mcpgate");
    let bytes: Family<Labels, Counter> = Family::default();
    // One statement each: `get_or_create` holds the family's read lock until
    // the statement ends, and a second one in the same statement would wait
    // for the first (a deadlock).
    let bytes_in = bytes
        .get_or_create(&vec![("direction", "in".to_owned())])
        .clone();
    let bytes_out = bytes
        .get_or_create(&vec![("direction", "out".to_owned())])
        .clone();
    let m = Metrics {
        bytes_in,
        bytes_out,
        connections: Gauge::default(),
        buffered_body_bytes: Gauge::default(),
        sessions: Family::default(),
        processes: Family::default(),
        spawns: Family::default(),
        exits: Family::default(),
        evictions: Family::default(),
        spawn_seconds: Family::new_with_constructor(latency_histogram),
        request_seconds: Family::new_with_constructor(latency_histogram),
        errors: Family::default(),
        spares_ready: Family::default(),
        spares_wanted: Family::default(),
        spare_claims: Family::default(),
        spare_misses: Family::default(),
        spare_failures: Family::default(),
        spare_ready_seconds: Family::new_with_constructor(latency_histogram),
        registry: Registry::default(),
    };
    registry.register(
        "sessions",
        "Open client sessions (stateless callers' included), by endpoint: a server id or /mcp",
        m.sessions.clone(),
    );
    registry.register(
        "processes",
        "Running backend processes, by server",
        m.processes.clone(),
    );
    registry.register(
        "spawns",
        "Backend processes started, by server and outcome (ok: the handshake succeeded)",
        m.spawns.clone(),
    );
    registry.register(
        "process_exits",
        "Backend processes that ended, by server and reason",
        m.exits.clone(),
    );
    registry.register(
        "evictions",
        "Backend processes stopped by the gateway, by server and reason",
        m.evictions.clone(),
    );
    registry.register(
        "spawn_to_ready_seconds",
        "Time a session's launch took, from spawning its backend (or taking a warm spare) to the end of the handshake, by server",
        m.spawn_seconds.clone(),
    );
    registry.register(
        "request_seconds",
        "Time a backend took to answer a client request, by server and method",
        m.request_seconds.clone(),
    );
    registry.register(
        "errors",
        "Errors, by kind (an HTTP refusal's status, a backend failure, a launch failure)",
        m.errors.clone(),
    );
    registry.register(
        "spares_ready",
        "Warm spares ready for a new session to take, by server",
        m.spares_ready.clone(),
    );
    registry.register(
        "spares_wanted",
        "Warm spares each server keeps (warm_spares), by server",
        m.spares_wanted.clone(),
    );
    registry.register(
        "spare_claims",
        "New processes of sessions that were warm spares, by server",
        m.spare_claims.clone(),
    );
    registry.register(
        "spare_misses",
        "New processes of sessions that found no warm spare to take and started cold, by server",
        m.spare_misses.clone(),
    );
    registry.register(
        "spare_failures",
        "Warm spares that failed to start or exited before a session took them, by server",
        m.spare_failures.clone(),
    );
    registry.register(
        "spare_spawn_to_ready_seconds",
        "Time from spawning a warm spare to its being ready (its ping answered, or its handshake done), by server",
        m.spare_ready_seconds.clone(),
    );
    registry.register(
        "bytes",
        "JSON-RPC bytes from clients (in) and to clients (out)",
        bytes,
    );
    registry.register(
        "http_connections",
        "Client connections open (TLS handshakes included); at most max_connections",
        m.connections.clone(),
    );
    registry.register(
        "buffered_body_bytes",
        "Request-body bytes held at once; at most max_buffered_body_bytes",
        m.buffered_body_bytes.clone(),
    );
    Metrics { registry, ..m }
});

fn server(server: &str) -> Labels {
    vec![("server", server.to_owned())]
}

/// The label of a JSON-RPC method: itself if the specification has it, else `other`.
fn method_label(method: &str) -> &'static str {
    crate::protocol::method::KNOWN
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}

/// A backend process was started: `ok` when its handshake succeeded, after `took`.
pub(crate) fn spawned(server_id: &str, ok: bool, took: Duration) {
    let mut labels = server(server_id);
    labels.push(("outcome", if ok { "ok" } else { "error" }.to_owned()));
    METRICS.spawns.get_or_create(&labels).inc();
    if ok {
        METRICS
            .spawn_seconds
            .get_or_create(&server(server_id))
            .observe(took.as_secs_f64());
    }
}

/// A backend process ended: `crashed` when nobody asked it to.
pub(crate) fn exited(server_id: &str, crashed: bool) {
    let mut labels = server(server_id);
    labels.push((
        "reason",
        if crashed { "crashed" } else { "stopped" }.to_owned(),
    ));
    METRICS.exits.get_or_create(&labels).inc();
}

/// The gateway stopped a backend process for `reason` (a fixed phrase).
pub(crate) fn evicted(server_id: &str, reason: &'static str) {
    let mut labels = server(server_id);
    labels.push(("reason", reason.to_owned()));
    METRICS.evictions.get_or_create(&labels).inc();
}

/// A backend of `server_id` answered a request of `method` after `took`.
pub(crate) fn answered(server_id: &std::sync::Arc<str>, method: &str, took: Duration) {
    let labels = (
        [("server", std::sync::Arc::clone(server_id))],
        [("method", method_label(method))],
    );
    METRICS
        .request_seconds
        .get_or_create(&labels)
        .observe(took.as_secs_f64());
}

/// A session's new process was a warm spare of `server_id`.
pub(crate) fn spare_claimed(server_id: &str) {
    METRICS.spare_claims.get_or_create(&server(server_id)).inc();
}

/// A session's new process of `server_id` found no spare to take.
pub(crate) fn spare_missed(server_id: &str) {
    METRICS.spare_misses.get_or_create(&server(server_id)).inc();
}

/// A warm spare of `server_id` failed to start or died unclaimed.
pub(crate) fn spare_failed(server_id: &str) {
    METRICS
        .spare_failures
        .get_or_create(&server(server_id))
        .inc();
}

/// A warm spare of `server_id` was ready `took` after its spawn.
pub(crate) fn spare_ready(server_id: &str, took: Duration) {
    METRICS
        .spare_ready_seconds
        .get_or_create(&server(server_id))
        .observe(took.as_secs_f64());
}

/// An error of `kind` (a fixed phrase).
pub(crate) fn error(kind: &str) {
    METRICS
        .errors
        .get_or_create(&vec![("kind", kind.to_owned())])
        .inc();
}

/// `n` bytes came from a client.
pub(crate) fn bytes_in(n: usize) {
    METRICS.bytes_in.inc_by(n as u64);
}

/// `n` bytes went to a client.
pub(crate) fn bytes_out(n: usize) {
    METRICS.bytes_out.inc_by(n as u64);
}

/// The gauges' values now: sessions per endpoint; processes, and spares
/// ready and wanted, per server.
#[derive(Default)]
pub(crate) struct Gauges {
    pub(crate) sessions: Vec<(String, i64)>,
    pub(crate) processes: Vec<(String, i64)>,
    pub(crate) spares: Vec<(String, i64, i64)>,
    pub(crate) connections: i64,
    pub(crate) buffered_body_bytes: i64,
}

/// The Prometheus text exposition, with the gauges set from `gauges`.
pub(crate) fn render(gauges: &Gauges) -> String {
    let Gauges {
        sessions,
        processes,
        spares,
        connections,
        buffered_body_bytes,
    } = gauges;
    METRICS.connections.set(*connections);
    METRICS.buffered_body_bytes.set(*buffered_body_bytes);
    METRICS.sessions.clear();
    for (endpoint, n) in sessions {
        METRICS
            .sessions
            .get_or_create(&vec![("endpoint", endpoint.clone())])
            .set(*n);
    }
    METRICS.processes.clear();
    for (server_id, n) in processes {
        METRICS.processes.get_or_create(&server(server_id)).set(*n);
    }
    METRICS.spares_ready.clear();
    METRICS.spares_wanted.clear();
    for (server_id, ready, wanted) in spares {
        METRICS
            .spares_ready
            .get_or_create(&server(server_id))
            .set(*ready);
        METRICS
            .spares_wanted
            .get_or_create(&server(server_id))
            .set(*wanted);
    }
    let mut out = String::new();
    encode(&mut out, &METRICS.registry).expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recording_and_rendering_work_from_first_use() {
        bytes_in(3);
        bytes_out(5);
        answered(
            &std::sync::Arc::from("s"),
            "tools/call",
            Duration::from_millis(2),
        );
        error("test");
        spare_claimed("s");
        let text = render(&Gauges {
            sessions: vec![("s".to_owned(), 1)],
            processes: vec![("s".to_owned(), 2)],
            spares: vec![("s".to_owned(), 1, 2)],
            connections: 3,
            buffered_body_bytes: 4096,
        });
        assert!(text.contains("mcpgate_http_connections 3"), "{text}");
        assert!(text.contains("mcpgate_buffered_body_bytes 4096"), "{text}");
        assert!(
            text.contains("mcpgate_spares_ready{server=\"s\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mcpgate_spare_claims_total{server=\"s\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mcpgate_bytes_total{direction=\"in\"}"),
            "{text}"
        );
        assert!(text.contains("mcpgate_processes{server=\"s\"} 2"), "{text}");
        assert!(text.contains("method=\"tools/call\""), "{text}");
    }

    #[test]
    fn client_chosen_methods_do_not_become_labels() {
        assert_eq!(method_label("tools/call"), "tools/call");
        assert_eq!(method_label("x/any-string-a-client-likes"), "other");
    }
}
