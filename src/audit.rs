//! The audit log: one JSON line per client request, appended to the file
//! named by `[gateway] audit_log`.
//!
//! Owns the record's shape (`time`, `caller`, `session`, `endpoint`, `server`,
//! `method`, `tool`, `duration_ms`, `outcome`, `error_code`, and `params` only
//! with `audit_payloads = true`) and the writing: records go through a bounded
//! queue to one writer task, so a slow disk never holds a request up (a full
//! queue drops the record and says so in the log). It never writes an API key,
//! an access token or any other secret (callers appear by their key's *name*,
//! or as the OAuth user `<sub>@<issuer>`), and never a payload unless asked for.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::jsonrpc::{self, Peek};

/// Records queued for the writer before new ones are dropped.
const QUEUE: usize = 4096;

/// What one request was and how it ended.
pub(crate) struct Record<'a> {
    pub caller: Option<&'a str>,
    pub session: &'a str,
    pub endpoint: &'a str,
    pub server: Option<&'a str>,
    pub request: &'a Peek<'a>,
    pub answer: &'a [u8],
    pub took: Duration,
}

/// An open audit log.
pub(crate) struct AuditLog {
    tx: mpsc::Sender<String>,
    payloads: bool,
}

impl AuditLog {
    /// Opens (creating, appending to) `path` and starts its writer task.
    pub(crate) fn open(path: &Path, payloads: bool) -> std::io::Result<AuditLog> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let (tx, mut rx) = mpsc::channel::<String>(QUEUE);
        let path = path.to_owned();
        std::thread::Builder::new()
            .name("mcpgate-audit".into())
            .spawn(move || {
                let mut out = std::io::BufWriter::new(file);
                while let Some(line) = rx.blocking_recv() {
                    let mut result = out.write_all(line.as_bytes());
                    // Everything queued goes out in one write, then to the file.
                    while let Ok(line) = rx.try_recv() {
                        result = result.and_then(|()| out.write_all(line.as_bytes()));
                    }
                    if let Err(e) = result.and_then(|()| out.flush()) {
                        tracing::error!(path = %path.display(), error = %e,
                            "cannot write the audit log");
                    }
                }
            })?;
        Ok(AuditLog { tx, payloads })
    }

    /// Queues one record.
    pub(crate) fn record(&self, record: &Record<'_>) {
        let request = record.request;
        let method = request.method.as_deref().unwrap_or_default();
        let tool = request.params.and_then(|p| {
            jsonrpc::string_member(p, "name").or_else(|| jsonrpc::string_member(p, "uri"))
        });
        let error_code = jsonrpc::peek(record.answer)
            .ok()
            .and_then(|p| p.error)
            .and_then(|e| jsonrpc::member(e, "code"))
            .and_then(|c| c.get().parse::<i64>().ok());
        let mut line = json!({
            "time": rfc3339_now(),
            "caller": record.caller,
            "session": record.session,
            "endpoint": record.endpoint,
            "server": record.server,
            "method": method,
            "tool": tool,
            "duration_ms": (record.took.as_secs_f64() * 1e6).round() / 1e3,
            "outcome": if error_code.is_some() { "error" } else { "ok" },
            "error_code": error_code,
        });
        if self.payloads
            && let Some(params) = request.params
        {
            line["params"] = serde_json::from_str(params.get()).unwrap_or(Value::Null);
        }
        let mut text = line.to_string();
        text.push('\n');
        if self.tx.try_send(text).is_err() {
            tracing::warn!("the audit log is not keeping up; a record was dropped");
        }
    }
}

/// Now, as an RFC 3339 UTC timestamp with milliseconds.
fn rfc3339_now() -> String {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(since.as_secs(), since.subsec_millis())
}

fn rfc3339(secs: u64, millis: u32) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(1_795_660_847, 175), "2026-11-26T02:40:47.175Z");
    }
}
