//! The JSON-RPC errors the gateway answers a client's request with when the
//! request could not reach its backend, or got no answer there.
//!
//! Owns the wording and `data` of those errors (which server, the backend's
//! last stderr lines, its exit status), and counts each in the metrics. The
//! code and metric label of each failure belong to the failure's own type
//! (`launcher`). It never speaks HTTP (the status is always 200: these are
//! JSON-RPC answers) and never passes a backend's bytes through changed,
//! except for the request id of a backend's own refusal.

use bytes::Bytes;
use serde_json::json;

use super::with_id;
use crate::config::ServerConfig;
use crate::jsonrpc;
use crate::launcher::{ConnFailure, LaunchError};

/// The JSON-RPC error a client gets when its backend could not be started.
pub(crate) fn launch_failed(id: Option<&str>, server: &ServerConfig, error: &LaunchError) -> Bytes {
    crate::metrics::error(error.metric_label());
    if let LaunchError::Refused(answer) = error
        && let Some(answer) = with_id(answer, id)
    {
        // The backend's own refusal is the most precise answer there is.
        return answer;
    }
    jsonrpc::error_response(
        id,
        error.jsonrpc_code(),
        &format!("backend `{}` could not be started: {error}", server.id),
        Some(json!({ "server": server.id, "stderrTail": error.stderr_tail() })),
    )
}

/// The JSON-RPC error a client gets when its request got no answer.
pub(crate) fn request_failed(
    id: Option<&str>,
    server: &ServerConfig,
    failure: &ConnFailure,
) -> Bytes {
    crate::metrics::error(failure.metric_label());
    let message = match failure {
        ConnFailure::Timeout(after) => format!(
            "backend `{}` did not answer within the tool_timeout of {}",
            server.id,
            crate::config::format_duration(*after)
        ),
        other => format!("backend `{}`: {other}", server.id),
    };
    let mut data = json!({ "server": server.id });
    if let ConnFailure::Exited {
        status,
        stderr_tail,
    } = failure
    {
        data["exitStatus"] = json!(status);
        data["stderrTail"] = json!(stderr_tail);
    }
    jsonrpc::error_response(id, failure.jsonrpc_code(), &message, Some(data))
}

/// The answer to a call of a tool the server's allow-list hides.
pub(crate) fn tool_not_allowed(id: Option<&str>, server: &ServerConfig, name: &str) -> Bytes {
    jsonrpc::error_response(
        id,
        jsonrpc::INVALID_PARAMS,
        &format!("tool `{name}` is not allowed on server `{}`", server.id),
        None,
    )
}
