//! The operator's endpoints: `/readyz`, `/health`, `/metrics`, and the admin
//! API (`GET /admin/sessions`, `DELETE /admin/sessions/{id}`).
//!
//! Owns their JSON and text shapes and the admin check: the admin key as a
//! bearer token, or the status page's login cookie (`admin_page`), which may
//! end a session only from the page's own origin. What it reports
//! comes from the session store, the pool's per-server records and `/proc`;
//! it never starts or stops a process itself (ending a session goes through
//! the core, like a client's DELETE) and never shows a secret.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::App;
use super::admin_page;
use super::reply::HttpError;
use super::rules;
use crate::jsonrpc;
use crate::launcher::SpareCounts;
use crate::launcher::stats::ServerRecord;

/// What a server's processes are doing, in a word.
fn state_of(record: &ServerRecord, processes: usize) -> &'static str {
    if record.crash_loop_for().is_some() {
        "crash-loop"
    } else if record.last_spawn.as_ref().is_some_and(|s| !s.ok) {
        "failing"
    } else if processes > 0 {
        "running"
    } else {
        "idle"
    }
}

/// Running processes per server.
fn processes_by_server(app: &App) -> BTreeMap<String, usize> {
    let mut counts: BTreeMap<String, usize> = app
        .core
        .servers()
        .iter()
        .map(|s| (s.id.clone(), 0))
        .collect();
    for (key, _, _) in app.core.connections() {
        *counts.entry(key.server.to_string()).or_default() += 1;
    }
    counts
}

/// The same DNS-rebinding and cross-site protection as the MCP endpoints: a
/// web page must not read server names or sessions through a browser.
pub(super) fn check_origin(app: &App, headers: &HeaderMap) -> Result<(), HttpError> {
    let gateway = app.core.gateway();
    rules::check_origin_and_host(
        headers,
        gateway.listen.ip().is_loopback(),
        &gateway.allowed_origins,
    )
}

fn json(status: StatusCode, value: &Value) -> Response {
    let mut response = (status, value.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A server's warm spares, for `/readyz`: how many it wants, how many are
/// ready and starting, and a word: `off` (it keeps none), `warming` (none
/// ready yet), `warm` (at least one ready).
fn spares_of(counts: Option<&SpareCounts>) -> Value {
    let counts = counts.cloned().unwrap_or_default();
    let state = match (counts.wanted, counts.ready) {
        (0, _) => "off",
        (_, 0) => "warming",
        _ => "warm",
    };
    json!({
        "state": state,
        "wanted": counts.wanted,
        "ready": counts.ready,
        "starting": counts.starting,
        "claims": counts.claims,
        "misses": counts.misses,
    })
}

/// `GET /readyz`: ready (200) once listening with the config loaded, with each
/// server's state.
pub(super) async fn readyz(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(e) = check_origin(&app, &headers) {
        return e.into_response();
    }
    let processes = processes_by_server(&app);
    let spares = app.core.spares().counts();
    let servers: serde_json::Map<String, Value> = processes
        .iter()
        .map(|(id, &n)| {
            let record = app.core.server_record(id);
            let last_spawn = record
                .last_spawn
                .as_ref()
                .map(|s| json!({"at_unix_ms": s.at_unix_ms, "ok": s.ok, "error": s.error}));
            let errors: Vec<Value> = record
                .recent_errors
                .iter()
                .map(|e| json!({"at_unix_ms": e.at_unix_ms, "error": e.what}))
                .collect();
            let crash_loop = record.crash_loop_for();
            (
                id.clone(),
                json!({
                    "state": state_of(&record, n),
                    "processes": n,
                    "spawns": record.spawns,
                    "spawn_failures": record.spawn_failures,
                    "restarts": record.restarts,
                    "last_spawn": last_spawn,
                    "recent_errors": errors,
                    "crash_loop": {
                        "open": crash_loop.is_some(),
                        "retry_after_s": crash_loop.map(|d| d.as_millis().div_ceil(1000)),
                    },
                    "spares": spares_of(spares.get(id)),
                }),
            )
        })
        .collect();
    json(
        StatusCode::OK,
        &json!({"status": "ready", "sessions": app.core.sessions().len(), "servers": servers}),
    )
}

/// `GET /health`, in the shape gh-aw-mcpg users script against: `status`
/// (`healthy`, or `degraded` when a server cannot start), and `servers` with
/// each server's `status` (`running`, `idle` or `error`).
pub(super) async fn health(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(e) = check_origin(&app, &headers) {
        return e.into_response();
    }
    let mut degraded = false;
    let servers: serde_json::Map<String, Value> = processes_by_server(&app)
        .into_iter()
        .map(|(id, n)| {
            let status = match state_of(&app.core.server_record(&id), n) {
                "crash-loop" | "failing" => {
                    degraded = true;
                    "error"
                }
                "running" => "running",
                _ => "idle",
            };
            (id, json!({"status": status, "processes": n}))
        })
        .collect();
    let status = if degraded { "degraded" } else { "healthy" };
    json(
        StatusCode::OK,
        &json!({"status": status, "servers": servers}),
    )
}

/// `GET /metrics`: the Prometheus (OpenMetrics) text exposition.
pub(super) async fn metrics(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(e) = check_origin(&app, &headers) {
        return e.into_response();
    }
    let mut sessions: BTreeMap<String, i64> = BTreeMap::new();
    for session in app.core.sessions() {
        *sessions
            .entry(session.endpoint_name().to_owned())
            .or_default() += 1;
    }
    let processes: Vec<(String, i64)> = processes_by_server(&app)
        .into_iter()
        .map(|(id, n)| (id, i64::try_from(n).unwrap_or(i64::MAX)))
        .collect();
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    let spares = app
        .core
        .spares()
        .counts()
        .into_iter()
        .map(|(id, c)| (id, count(c.ready), count(c.wanted)))
        .collect();
    let text = crate::metrics::render(&crate::metrics::Gauges {
        sessions: sessions.into_iter().collect(),
        processes,
        spares,
        connections: i64::try_from(app.connections.open()).unwrap_or(i64::MAX),
        buffered_body_bytes: i64::try_from(app.bodies.held()).unwrap_or(i64::MAX),
    });
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

/// How an admin request proved itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AdminAuth {
    /// `Authorization: Bearer <admin_key>`.
    Bearer,
    /// The status page's login cookie (and no `Authorization` header).
    Cookie,
}

/// The admin API needs `admin_key`; without one configured it does not exist.
/// A request with an `Authorization` header is judged by it alone; one without
/// may carry the status page's login cookie.
fn check_admin(app: &App, headers: &HeaderMap) -> Result<AdminAuth, HttpError> {
    check_origin(app, headers)?;
    let Some(key) = &app.core.gateway().admin_key else {
        return Err(HttpError::new(
            StatusCode::NOT_FOUND,
            jsonrpc::SERVER_ERROR,
            "Not Found: the admin API is off (set [gateway] admin_key)",
        ));
    };
    if !headers.contains_key(header::AUTHORIZATION) && app.logins.holds_cookie_of(headers) {
        return Ok(AdminAuth::Cookie);
    }
    rules::authenticate(headers, &[("admin".to_owned(), key.clone())]).map(|_| AdminAuth::Bearer)
}

/// `GET /admin/sessions`: every session, with its processes.
pub(super) async fn admin_sessions(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(e) = check_admin(&app, &headers) {
        return e.into_response();
    }
    let live = app.core.connections();
    let mut sessions: Vec<Value> = app
        .core
        .sessions()
        .into_iter()
        .map(|session| {
            let processes: Vec<Value> = live
                .iter()
                .filter(|(key, _, _)| *key.session == *session.id)
                .map(|(key, conn, restarts)| {
                    json!({
                        "server": &*key.server,
                        "pid": conn.pid(),
                        "age_s": conn.age().as_secs(),
                        "consecutive_errors": conn.consecutive_errors(),
                        "stdin_waiting_bytes": conn.stdin_waiting(),
                        "restarts": restarts,
                        "rss_kib": crate::launcher::tree_rss_kib(conn.pid()),
                        "stderr_tail": conn.stderr_tail(),
                    })
                })
                .collect();
            json!({
                "id": &*session.id,
                "endpoint": session.endpoint_name(),
                "era": session.client_era().as_str(),
                "caller": session.caller.as_deref(),
                "protocol_version": session.protocol_version,
                "age_s": session.age().as_secs(),
                "idle_s": session.idle_for().as_secs(),
                "requests": session.requests(),
                "in_flight": session.in_flight(),
                "parked": session.parked(),
                "processes": processes,
            })
        })
        .collect();
    sessions.sort_by_key(|s| std::cmp::Reverse(s["age_s"].as_u64()));
    // Processes started ahead that no session has taken yet.
    let spares: Vec<Value> = app
        .core
        .spares()
        .list()
        .into_iter()
        .map(|spare| {
            json!({
                "server": spare.server,
                "pid": spare.pid,
                "age_s": spare.age.as_secs(),
                "ready": spare.ready,
                "warm": spare.warm.as_str(),
                "rss_kib": crate::launcher::tree_rss_kib(spare.pid),
            })
        })
        .collect();
    json(
        StatusCode::OK,
        &json!({"sessions": sessions, "spares": spares}),
    )
}

/// `DELETE /admin/sessions/{id}`: ends a session (and stops its processes).
pub(super) async fn admin_end_session(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    // With the cookie, only the page itself may end a session (not another
    // page of the same site, which `SameSite` alone would let through).
    let checked = check_admin(&app, &headers).and_then(|auth| match auth {
        AdminAuth::Cookie => admin_page::check_same_origin(&app, &headers, true),
        AdminAuth::Bearer => Ok(()),
    });
    if let Err(e) = checked {
        return e.into_response();
    }
    if app.core.end_session(&id, "admin DELETE").await {
        tracing::info!(session = %id, "session ended by the admin API");
        json(StatusCode::OK, &json!({"ended": id}))
    } else {
        json(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("no session {id}")}),
        )
    }
}
