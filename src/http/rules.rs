//! The Streamable HTTP rules a request must meet before its body is looked at.
//!
//! Owns checking `Accept`, `Content-Type`, `MCP-Protocol-Version` and
//! `Mcp-Session-Id` headers and turning a failed check into the status the
//! spec asks for (406, 415, 400). It never touches sessions or backends.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};

use super::reply::{HttpError, PROTOCOL_VERSION_HEADER, SESSION_HEADER};
use crate::jsonrpc;
use crate::protocol::{Era, Version};
use crate::session::is_plausible_session_id;

/// How the client wants a request answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AnswerAs {
    /// Only JSON is acceptable.
    Json,
    /// Only an event stream is acceptable.
    EventStream,
    /// Either: JSON unless the backend sends something before its answer.
    JsonOrStream,
}

/// True when an `Accept` header admits `wanted` (`type/subtype`, lower case):
/// exactly, as `type/*` or as `*/*`, unless with `q=0`. Compared in place: this
/// runs on every request.
fn accepts(headers: &HeaderMap, wanted: &str) -> bool {
    let major = wanted.split('/').next().unwrap_or_default();
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim();
            // `q=0` means "not acceptable".
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0))
            });
            let wildcard_of_major = media
                .split_once('/')
                .is_some_and(|(m, sub)| sub == "*" && m.eq_ignore_ascii_case(major));
            !refused && (media.eq_ignore_ascii_case(wanted) || media == "*/*" || wildcard_of_major)
        })
}

/// POST: the client must accept JSON or an event stream (the spec asks clients to
/// list both).
pub(super) fn post_answer_as(headers: &HeaderMap) -> Result<AnswerAs, HttpError> {
    // What the SDKs send, byte for byte: one range admitting a type is
    // enough, so this value alone admits both.
    let both = |v: &HeaderValue| {
        matches!(
            v.as_bytes(),
            b"application/json, text/event-stream" | b"text/event-stream, application/json"
        )
    };
    if headers.get_all(header::ACCEPT).iter().any(both) {
        return Ok(AnswerAs::JsonOrStream);
    }
    match (
        accepts(headers, "application/json"),
        accepts(headers, "text/event-stream"),
    ) {
        (true, true) => Ok(AnswerAs::JsonOrStream),
        (true, false) => Ok(AnswerAs::Json),
        (false, true) => Ok(AnswerAs::EventStream),
        (false, false) => Err(not_acceptable(
            "Accept must list application/json and text/event-stream",
        )),
    }
}

/// GET: the client must accept an event stream.
pub(super) fn get_accepts_stream(headers: &HeaderMap) -> Result<(), HttpError> {
    if accepts(headers, "text/event-stream") {
        Ok(())
    } else {
        Err(not_acceptable("Accept must list text/event-stream"))
    }
}

fn not_acceptable(message: &str) -> HttpError {
    HttpError::new(
        StatusCode::NOT_ACCEPTABLE,
        jsonrpc::SERVER_ERROR,
        format!("Not Acceptable: {message}"),
    )
}

/// 403 with a JSON-RPC error saying `what` is refused.
pub(super) fn forbidden(what: &str) -> HttpError {
    HttpError::new(
        StatusCode::FORBIDDEN,
        jsonrpc::SERVER_ERROR,
        format!("Forbidden: {what}"),
    )
}

/// POST bodies must be JSON.
pub(super) fn require_json_content(headers: &HeaderMap) -> Result<(), HttpError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(HttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            jsonrpc::SERVER_ERROR,
            "Unsupported Media Type: Content-Type must be application/json",
        ))
    }
}

/// The `MCP-Protocol-Version` header, checked: absent is fine (2025-03-26
/// clients send none); present must be a version the gateway serves.
pub(super) fn protocol_version(headers: &HeaderMap) -> Result<Option<&'static str>, HttpError> {
    let Some(value) = headers.get(PROTOCOL_VERSION_HEADER) else {
        return Ok(None);
    };
    let version = value.to_str().unwrap_or("").trim();
    if let Some(known) = Version::parse(version).filter(|v| v.era() == Era::Session) {
        Ok(Some(known.as_str()))
    } else {
        Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            jsonrpc::SERVER_ERROR,
            format!(
                "Bad Request: unsupported MCP-Protocol-Version `{}` (supported: {})",
                String::from_utf8_lossy(value.as_bytes()),
                Version::of_era(Era::Session)
                    .map(Version::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ))
    }
}

/// The `Mcp-Session-Id` header, if any. A malformed one can name no session:
/// 404. Two different ones name no one session: 400 (the same value twice is
/// that value).
pub(super) fn session_id(headers: &HeaderMap) -> Result<Option<&str>, HttpError> {
    let mut values = headers.get_all(SESSION_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.any(|other| other != value) {
        return Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            jsonrpc::SERVER_ERROR,
            "Bad Request: two different Mcp-Session-Id headers; send one",
        ));
    }
    match value.to_str() {
        Ok(id) if is_plausible_session_id(id) => Ok(Some(id)),
        _ => Err(unknown_session()),
    }
}

/// The session id a request needs; its absence is a 400.
pub(super) fn require_session_id(headers: &HeaderMap) -> Result<&str, HttpError> {
    session_id(headers)?.ok_or_else(|| {
        HttpError::new(
            StatusCode::BAD_REQUEST,
            jsonrpc::SERVER_ERROR,
            "Bad Request: Mcp-Session-Id header is required (send initialize first)",
        )
    })
}

/// True for a host name that can only mean this machine.
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(name, _)| name)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// DNS-rebinding and cross-site protection. A present `Origin` must be a
/// loopback origin (when the gateway listens on loopback) or one of
/// `allowed_origins`; on a loopback listen address the `Host` must name this
/// machine too. Anything else gets 403.
pub(super) fn check_origin_and_host(
    headers: &HeaderMap,
    listen_is_loopback: bool,
    allowed_origins: &[String],
) -> Result<(), HttpError> {
    if listen_is_loopback
        && let Some(host) = headers.get(header::HOST)
        && !host.to_str().is_ok_and(is_loopback_host)
    {
        return Err(forbidden("the Host header does not name this machine"));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default().trim_end_matches('/');
        let loopback = listen_is_loopback
            && origin
                .split_once("://")
                .is_some_and(|(_, host)| is_loopback_host(host));
        if !loopback
            && !allowed_origins
                .iter()
                .any(|o| o.trim_end_matches('/') == origin)
        {
            return Err(forbidden("the Origin is not allowed (see allowed_origins)"));
        }
    }
    Ok(())
}

/// The name of the API key the request carries (`Authorization: Bearer <key>`),
/// `None` when the gateway has no keys. A missing or wrong key is a 401. Every
/// key is compared, in time that does not depend on where they differ.
pub(super) fn authenticate(
    headers: &HeaderMap,
    keys: &[(String, String)],
) -> Result<Option<std::sync::Arc<str>>, HttpError> {
    if keys.is_empty() {
        return Ok(None);
    }
    let unauthorized = |why: &str| {
        HttpError::new(
            StatusCode::UNAUTHORIZED,
            jsonrpc::SERVER_ERROR,
            format!("Unauthorized: {why}"),
        )
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("send Authorization: Bearer <key>"))?
        .as_bytes();
    let token = presented
        .split_at_checked(7)
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(b"bearer "))
        .map(|(_, token)| token.trim_ascii())
        .ok_or_else(|| unauthorized("the Authorization scheme must be Bearer"))?;
    let mut found = None;
    for (name, key) in keys {
        if constant_time_eq(token, key.as_bytes()) {
            found = Some(name);
        }
    }
    found
        .map(|name| Some(std::sync::Arc::from(name.as_str())))
        .ok_or_else(|| unauthorized("the API key is not valid"))
}

/// The token of an `Authorization: Bearer <token>` header, if the request has one.
pub(super) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_at_checked(7)?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer ") && !token.is_empty()).then_some(token)
}

/// Compares two byte strings in time that depends only on their lengths.
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut difference = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        difference |= usize::from(x ^ y);
    }
    difference == 0
}

/// What an unknown or ended session gets, so the client re-initialises.
pub(super) fn unknown_session() -> HttpError {
    HttpError::new(
        StatusCode::NOT_FOUND,
        jsonrpc::SERVER_ERROR,
        "Session not found: it has ended or never existed; send initialize to start a new one",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn accept_rules() {
        let both = headers(&[("accept", "application/json, text/event-stream")]);
        assert_eq!(post_answer_as(&both).unwrap(), AnswerAs::JsonOrStream);
        let sse = headers(&[("accept", "text/event-stream")]);
        assert_eq!(post_answer_as(&sse).unwrap(), AnswerAs::EventStream);
        let any = headers(&[("accept", "*/*")]);
        assert_eq!(post_answer_as(&any).unwrap(), AnswerAs::JsonOrStream);
        let json = headers(&[("accept", "application/json")]);
        assert_eq!(post_answer_as(&json).unwrap(), AnswerAs::Json);
        let html = headers(&[("accept", "text/html")]);
        assert_eq!(
            post_answer_as(&html).unwrap_err().status,
            StatusCode::NOT_ACCEPTABLE
        );
        assert!(post_answer_as(&HeaderMap::new()).is_err());
        let refused = headers(&[("accept", "application/json;q=0, text/event-stream")]);
        assert_eq!(post_answer_as(&refused).unwrap(), AnswerAs::EventStream);
        assert!(get_accepts_stream(&both).is_ok());
        assert!(get_accepts_stream(&headers(&[("accept", "application/json")])).is_err());
        // The SDKs' exact values and their variants are read alike.
        for value in [
            "text/event-stream, application/json",
            "application/json,text/event-stream",
            "Application/JSON ; charset=utf-8, text/*",
        ] {
            let h = headers(&[("accept", value)]);
            assert_eq!(
                post_answer_as(&h).unwrap(),
                AnswerAs::JsonOrStream,
                "{value}"
            );
        }
        let two_lines = headers(&[
            ("accept", "application/json;q=0"),
            ("accept", "application/json, text/event-stream"),
        ]);
        assert_eq!(post_answer_as(&two_lines).unwrap(), AnswerAs::JsonOrStream);
    }

    #[test]
    fn content_type_rules() {
        assert!(
            require_json_content(&headers(&[(
                "content-type",
                "application/json; charset=utf-8"
            )]))
            .is_ok()
        );
        let err = require_json_content(&headers(&[("content-type", "text/plain")])).unwrap_err();
        assert_eq!(err.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(require_json_content(&HeaderMap::new()).is_err());
    }

    #[test]
    fn protocol_version_rules() {
        assert_eq!(protocol_version(&HeaderMap::new()).unwrap(), None);
        assert_eq!(
            protocol_version(&headers(&[("mcp-protocol-version", "2025-06-18")])).unwrap(),
            Some("2025-06-18")
        );
        let err =
            protocol_version(&headers(&[("mcp-protocol-version", "1999-01-01")])).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn origin_and_host_rules() {
        let ok = |pairs: &[(&'static str, &'static str)]| {
            check_origin_and_host(&headers(pairs), true, &["https://app.example".into()]).is_ok()
        };
        assert!(ok(&[("host", "127.0.0.1:3000")]));
        assert!(ok(&[("host", "localhost")]));
        assert!(ok(&[("host", "[::1]:80")]));
        assert!(!ok(&[("host", "evil.example.com")]));
        assert!(!ok(&[("host", "127.0.0.1.evil.com:80")]));
        assert!(ok(&[
            ("host", "localhost:1"),
            ("origin", "http://localhost:5173")
        ]));
        assert!(ok(&[
            ("host", "localhost:1"),
            ("origin", "https://app.example")
        ]));
        assert!(!ok(&[
            ("host", "localhost:1"),
            ("origin", "http://evil.example.com")
        ]));
        assert!(!ok(&[("host", "localhost:1"), ("origin", "null")]));
        // Not on loopback: any Host, and only listed origins.
        assert!(check_origin_and_host(&headers(&[("host", "gw.internal")]), false, &[]).is_ok());
        assert!(
            check_origin_and_host(&headers(&[("origin", "http://localhost")]), false, &[]).is_err()
        );
    }

    #[test]
    fn api_keys_are_checked() {
        let keys = vec![
            ("ci".to_owned(), "key-of-ci-0123456789".to_owned()),
            ("ops".to_owned(), "key-of-ops-0123456789".to_owned()),
        ];
        assert_eq!(authenticate(&HeaderMap::new(), &[]).unwrap(), None);
        let with = |value: &'static str| headers(&[("authorization", value)]);
        assert_eq!(
            authenticate(&with("Bearer key-of-ops-0123456789"), &keys)
                .unwrap()
                .as_deref(),
            Some("ops")
        );
        assert_eq!(
            authenticate(&with("bearer key-of-ci-0123456789"), &keys)
                .unwrap()
                .as_deref(),
            Some("ci")
        );
        for bad in [
            "Bearer key-of-ci-012345678",
            "Basic a2V5",
            "Bearer ",
            "key-of-ci-0123456789",
        ] {
            let err = authenticate(&with(bad), &keys).unwrap_err();
            assert_eq!(err.status, StatusCode::UNAUTHORIZED, "{bad}");
        }
        assert!(authenticate(&HeaderMap::new(), &keys).is_err());
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn session_header_rules() {
        assert_eq!(session_id(&HeaderMap::new()).unwrap(), None);
        assert_eq!(
            require_session_id(&HeaderMap::new()).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        let bad = headers(&[("mcp-session-id", "has space")]);
        assert_eq!(session_id(&bad).unwrap_err().status, StatusCode::NOT_FOUND);
        let two = headers(&[("mcp-session-id", "abc"), ("mcp-session-id", "abd")]);
        assert_eq!(
            session_id(&two).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        let twice = headers(&[("mcp-session-id", "abc"), ("mcp-session-id", "abc")]);
        assert_eq!(session_id(&twice).unwrap(), Some("abc"));
    }
}
