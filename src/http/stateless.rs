//! The HTTP side of the stateless era (MCP 2026-07-28): which era a request
//! belongs to, and the checks a stateless request must pass before the bridge
//! sees it.
//!
//! Owns the era classification of a POST (session era: a JSON array, a
//! response, `initialize`, an `Mcp-Session-Id`; stateless: a 2026 or later
//! `MCP-Protocol-Version` header, or `_meta` carrying a protocol version), and
//! the validation the 2026-07-28 Streamable HTTP transport asks of a server
//! that reads the body: `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name`
//! against the body (-32020), the required `_meta` (-32602), the version
//! (-32022 with `supported`), and the method (404 with -32601). It never
//! touches sessions, processes or backend messages (that is `bridge`).

use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use serde_json::value::RawValue;

use super::reply::{HttpError, PROTOCOL_VERSION_HEADER, SESSION_HEADER};
use crate::bridge::StatelessCall;
use crate::jsonrpc::{self, Kind, Peek};
pub(crate) use crate::protocol::Era;
use crate::protocol::{Version, meta, method};

/// `Mcp-Method`: the JSON-RPC method, mirrored for intermediaries.
const METHOD_HEADER: &str = "mcp-method";
/// `Mcp-Name`: `params.name` or `params.uri`, mirrored for intermediaries.
const NAME_HEADER: &str = "mcp-name";

use jsonrpc::{HEADER_MISMATCH, UNSUPPORTED_PROTOCOL_VERSION as UNSUPPORTED_VERSION};

/// The era of a request with these headers (GET, DELETE).
pub(super) fn era_of_headers(headers: &HeaderMap) -> Era {
    let header_version = headers
        .get(PROTOCOL_VERSION_HEADER)
        .and_then(|v| v.to_str().ok());
    if header_version.is_some_and(|v| Era::of_version(v) == Era::Stateless) {
        Era::Stateless
    } else {
        Era::Session
    }
}

/// The era of a POST. A 2026 version header or a session id decides at once
/// (the common case costs no parsing); otherwise a request whose `_meta`
/// carries a protocol version is stateless, whatever else its headers say.
pub(super) fn era_of_post(headers: &HeaderMap, body: &[u8]) -> Era {
    if era_of_headers(headers) == Era::Stateless {
        return Era::Stateless;
    }
    if headers.contains_key(SESSION_HEADER) || jsonrpc::is_batch(body) {
        return Era::Session;
    }
    match jsonrpc::peek_client(body) {
        Ok(peek)
            if peek.kind == Kind::Request
                && peek.method.as_deref() != Some(method::INITIALIZE)
                && envelope(&peek)
                    .is_some_and(|m| jsonrpc::member(m, meta::PROTOCOL_VERSION).is_some()) =>
        {
            Era::Stateless
        }
        _ => Era::Session,
    }
}

fn envelope<'a>(peek: &Peek<'a>) -> Option<&'a RawValue> {
    jsonrpc::member(peek.params?, "_meta")
}

fn mismatch(id: Option<&str>, message: String) -> HttpError {
    HttpError::new(
        StatusCode::BAD_REQUEST,
        HEADER_MISMATCH,
        format!("Header mismatch: {message}"),
    )
    .with_id(id)
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<Result<&'h str, ()>> {
    headers.get(name).map(|v| v.to_str().map_err(|_| ()))
}

/// Decodes the `=?base64?...?=` sentinel form of a header value.
fn decode_header_value(value: &str) -> Result<String, ()> {
    match value
        .strip_prefix("=?base64?")
        .and_then(|v| v.strip_suffix("?="))
    {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or(()),
        None => Ok(value.to_owned()),
    }
}

/// Checks a stateless POST body against its headers: the request for the
/// bridge, or `None` for a notification (2026-07-28 defines none over HTTP;
/// it is accepted and dropped). The checks run in the order the
/// transport's errors are most useful to a client: the body is a request, the
/// version is given and matches, is supported, the capabilities are declared,
/// the method is mirrored and served, the name is mirrored.
pub(super) fn check(
    headers: &HeaderMap,
    body: &[u8],
    caller_header: Option<&str>,
    accepts_stream: bool,
) -> Result<Option<StatelessCall>, HttpError> {
    let peek = jsonrpc::peek_client(body)
        .map_err(|e| HttpError::new(StatusCode::BAD_REQUEST, e.code(), e.to_string()))?;
    match peek.kind {
        Kind::Request => {}
        Kind::Notification => return Ok(None),
        Kind::Response => {
            return Err(HttpError::new(
                StatusCode::BAD_REQUEST,
                jsonrpc::INVALID_REQUEST,
                "Bad Request: clients send no JSON-RPC responses in 2026-07-28 (input goes in inputResponses)",
            ));
        }
    }
    let id = peek.id;
    let method = peek.method.as_deref().unwrap_or_default().to_owned();
    let missing_meta = |what: &str| {
        HttpError::new(
            StatusCode::BAD_REQUEST,
            jsonrpc::INVALID_PARAMS,
            format!("Invalid params: _meta[\"{what}\"] is required"),
        )
        .with_id(id)
    };
    let envelope = envelope(&peek);
    let body_version = envelope
        .and_then(|m| jsonrpc::string_member(m, meta::PROTOCOL_VERSION))
        .ok_or_else(|| missing_meta(meta::PROTOCOL_VERSION))?;
    let header_version = match header(headers, PROTOCOL_VERSION_HEADER) {
        None => {
            return Err(mismatch(
                id,
                "the MCP-Protocol-Version header is required".into(),
            ));
        }
        Some(Err(())) => {
            return Err(mismatch(
                id,
                "MCP-Protocol-Version has invalid characters".into(),
            ));
        }
        Some(Ok(v)) => v.trim(),
    };
    if header_version != body_version {
        return Err(mismatch(
            id,
            format!(
                "MCP-Protocol-Version header value '{header_version}' does not match body value '{body_version}'"
            ),
        ));
    }
    let stateless_versions: Vec<&str> = Version::of_era(Era::Stateless)
        .map(Version::as_str)
        .collect();
    if !stateless_versions.contains(&body_version.as_str()) {
        return Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            UNSUPPORTED_VERSION,
            format!("Unsupported protocol version: {body_version}"),
        )
        .with_id(id)
        .with_data(serde_json::json!({
            // What `server/discover` says too (clients check that they agree).
            "supported": stateless_versions,
            "requested": body_version,
        })));
    }
    let capabilities = envelope
        .and_then(|m| jsonrpc::member(m, meta::CLIENT_CAPABILITIES))
        .filter(|c| c.get().starts_with('{'))
        .ok_or_else(|| missing_meta(meta::CLIENT_CAPABILITIES))?;
    match header(headers, METHOD_HEADER) {
        None => return Err(mismatch(id, "the Mcp-Method header is required".into())),
        Some(Ok(value)) if value == method => {}
        Some(value) => {
            return Err(mismatch(
                id,
                format!(
                    "Mcp-Method header value '{}' does not match body value '{method}'",
                    value.unwrap_or("(invalid)")
                ),
            ));
        }
    }
    if !crate::protocol::method::SERVED_STATELESS.contains(&method.as_str()) {
        return Err(HttpError::new(
            StatusCode::NOT_FOUND,
            jsonrpc::METHOD_NOT_FOUND,
            format!("Method not found: {method}"),
        )
        .with_id(id));
    }
    let name_member = match method.as_str() {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    };
    let name = match name_member {
        None => None,
        Some(member) => {
            let body_name = peek
                .params
                .and_then(|p| jsonrpc::string_member(p, member))
                .ok_or_else(|| {
                    HttpError::new(
                        StatusCode::BAD_REQUEST,
                        jsonrpc::INVALID_PARAMS,
                        format!("Invalid params: params.{member} is required for {method}"),
                    )
                    .with_id(id)
                })?;
            let header_name = match header(headers, NAME_HEADER) {
                None => return Err(mismatch(id, "the Mcp-Name header is required".into())),
                Some(value) => value.and_then(decode_header_value).map_err(|()| {
                    mismatch(id, "Mcp-Name has invalid characters or encoding".into())
                })?,
            };
            if header_name != body_name {
                return Err(mismatch(
                    id,
                    format!(
                        "Mcp-Name header value '{header_name}' does not match body value '{body_name}'"
                    ),
                ));
            }
            Some(body_name)
        }
    };
    let params = peek.params;
    let request_state = params.and_then(|p| jsonrpc::string_member(p, "requestState"));
    let input_responses = params
        .and_then(|p| jsonrpc::member(p, "inputResponses"))
        .map(|r| r.get().to_owned());
    let client_info = envelope
        .and_then(|m| jsonrpc::member(m, meta::CLIENT_INFO))
        .map(|c| c.get().to_owned());
    let named_caller = caller_header
        .and_then(|name| headers.get(name))
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_owned);
    let call = StatelessCall {
        id: id.unwrap_or("null").to_owned(),
        method,
        name,
        capabilities: capabilities.get().to_owned(),
        client_info,
        request_state,
        input_responses,
        named_caller,
        accepts_stream,
        log_level: envelope.and_then(|m| jsonrpc::string_member(m, meta::LOG_LEVEL)),
    };
    Ok(Some(call))
}

/// GET and DELETE belong to the session era: a stateless client gets 405.
pub(super) fn refuse_get_or_delete() -> HttpError {
    HttpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        jsonrpc::SERVER_ERROR,
        "Method Not Allowed: protocol version 2026-07-28 has no GET stream and no sessions to DELETE",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    const META: &str = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}"#;

    #[test]
    fn eras_are_told_apart() {
        let modern =
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{{{META}}}}}"#);
        assert_eq!(
            era_of_post(&HeaderMap::new(), modern.as_bytes()),
            Era::Stateless
        );
        let h = headers(&[("mcp-protocol-version", "2026-07-28")]);
        assert_eq!(era_of_post(&h, b"{}"), Era::Stateless);
        let h = headers(&[("mcp-session-id", "abc")]);
        assert_eq!(era_of_post(&h, modern.as_bytes()), Era::Session);
        let init = br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#;
        assert_eq!(era_of_post(&HeaderMap::new(), init), Era::Session);
        let plain = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        assert_eq!(era_of_post(&HeaderMap::new(), plain), Era::Session);
        assert_eq!(Era::of_version("2025-11-25"), Era::Session);
        assert_eq!(Era::of_version("2027-01-01"), Era::Stateless);
        assert_eq!(Era::of_version("banana-pie"), Era::Session);
    }

    fn check_err(h: &HeaderMap, body: &str) -> (StatusCode, i32, String) {
        match check(h, body.as_bytes(), None, true) {
            Ok(_) => panic!("accepted: {body}"),
            Err(e) => (e.status, e.code, e.message),
        }
    }

    #[test]
    fn each_check_gives_its_error() {
        let call = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"echo",{META}}}}}"#
        );
        let good = [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "echo"),
        ];
        assert!(matches!(
            check(&headers(&good), call.as_bytes(), None, true),
            Ok(Some(_))
        ));
        let encoded = [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?ZWNobw==?="),
        ];
        assert!(check(&headers(&encoded), call.as_bytes(), None, true).is_ok());
        let (s, c, _) = check_err(&headers(&good[..2]), &call);
        assert_eq!((s, c), (StatusCode::BAD_REQUEST, HEADER_MISMATCH));
        let (s, c, _) = check_err(&headers(&[good[0], good[1], ("mcp-name", "other")]), &call);
        assert_eq!((s, c), (StatusCode::BAD_REQUEST, HEADER_MISMATCH));
        let (s, c, _) = check_err(
            &headers(&[good[0], ("mcp-method", "tools/list"), good[2]]),
            &call,
        );
        assert_eq!((s, c), (StatusCode::BAD_REQUEST, HEADER_MISMATCH));
        let (s, c, _) = check_err(&headers(&good[1..]), &call);
        assert_eq!((s, c), (StatusCode::BAD_REQUEST, HEADER_MISMATCH));
        let later = call.replace("2026-07-28", "2099-01-01");
        let h = headers(&[("mcp-protocol-version", "2099-01-01"), good[1], good[2]]);
        let (s, c, _) = check_err(&h, &later);
        assert_eq!((s, c), (StatusCode::BAD_REQUEST, UNSUPPORTED_VERSION));
        let no_caps = call.replace(r#","io.modelcontextprotocol/clientCapabilities":{}"#, "");
        let (s, c, _) = check_err(&headers(&good), &no_caps);
        assert_eq!((s, c), (StatusCode::BAD_REQUEST, jsonrpc::INVALID_PARAMS));
        let unknown = call.replace("tools/call", "tools/dance");
        let h = headers(&[good[0], ("mcp-method", "tools/dance"), good[2]]);
        let (s, c, _) = check_err(&h, &unknown);
        assert_eq!((s, c), (StatusCode::NOT_FOUND, jsonrpc::METHOD_NOT_FOUND));
    }
}
