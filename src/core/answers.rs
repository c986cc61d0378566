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
    crate::metrics::error(match error {
        LaunchError::Spawn { .. } => "launch_spawn",
        LaunchError::Handshake(_) => "launch_handshake",
        LaunchError::StartupTimeout { .. } => "launch_startup_timeout",
        LaunchError::CrashLoop { .. } => "launch_crash_loop",
        LaunchError::Refused(_) => "launch_refused",
        LaunchError::Evicted => "launch_evicted",
    });
    if let LaunchError::Refused(answer) = error
        && let Some(answer) = with_id(answer, id)
    {
        // The backend's own refusal is the most precise answer there is.
        return answer;
    }
    jsonrpc::error_response(
        id,
        jsonrpc::INTERNAL_ERROR,
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
    crate::metrics::error(match failure {
        ConnFailure::Exited { .. } => "backend_exited",
        ConnFailure::StdoutClosed { .. } => "backend_stdout_closed",
        ConnFailure::WriteFailed(_) => "backend_write_failed",
        ConnFailure::Timeout(_) => "backend_timeout",
        ConnFailure::Stopped(_) => "backend_stopped",
        ConnFailure::TooManyErrors(_) => "backend_too_many_errors",
        ConnFailure::MessageTooLarge { .. } => "backend_message_too_large",
    });
    let (code, message) = match failure {
        ConnFailure::Timeout(after) => (
            jsonrpc::REQUEST_TIMEOUT,
            format!(
                "backend `{}` did not answer within the tool_timeout of {}",
                server.id,
                crate::config::format_duration(*after)
            ),
        ),
        other => (
            jsonrpc::INTERNAL_ERROR,
            format!("backend `{}`: {other}", server.id),
        ),
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
    jsonrpc::error_response(id, code, &message, Some(data))
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
