//! The gateway's own JSON-RPC messages: one builder per kind of message.
//!
//! Owns the envelopes the gateway writes itself — requests and notifications
//! it sends a backend or a client, the answers and errors it makes — as
//! structs serialised by serde, so that no message is put together by hand.
//! Whatever part of a message came from a peer (an id, a backend's result or
//! capabilities, a client's params) goes in as a [`RawValue`] and comes out
//! byte for byte as it was written. It never re-serialises a forwarded
//! message: these are only the gateway's own.

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::protocol::{Version, meta, method};

const VERSION: &str = "2.0";

#[derive(Serialize)]
struct Request<'a, P: Serialize> {
    jsonrpc: &'static str,
    id: &'a RawValue,
    method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    params: Option<P>,
}

#[derive(Serialize)]
struct Notification<'a, P: Serialize> {
    jsonrpc: &'static str,
    method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    params: Option<P>,
}

#[derive(Serialize)]
struct Success<'a, R: Serialize> {
    jsonrpc: &'static str,
    id: &'a RawValue,
    result: R,
}

#[derive(Serialize)]
struct Failure<'a> {
    jsonrpc: &'static str,
    id: &'a RawValue,
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    code: i32,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<serde_json::Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Cancelled<'a> {
    request_id: &'a RawValue,
    reason: &'a str,
}

fn to_bytes(message: &impl Serialize) -> Bytes {
    Bytes::from(serde_json::to_vec(message).expect("the gateway's own messages serialise"))
}

/// Raw JSON text (an id as `peek` found it, a result a backend wrote) as a
/// value to put in a message; `null` when it is not JSON (never the case for
/// text `peek` borrowed from a message).
pub fn raw(json: &str) -> &RawValue {
    serde_json::from_str(json).unwrap_or_else(|_| null())
}

fn raw_or_null(id: Option<&str>) -> &RawValue {
    match id {
        Some(id) => raw(id),
        None => null(),
    }
}

fn null() -> &'static RawValue {
    static NULL: std::sync::LazyLock<Box<RawValue>> = std::sync::LazyLock::new(|| {
        RawValue::from_string("null".to_owned()).expect("null is JSON")
    });
    &NULL
}

/// A request of the gateway's own: `id` is raw JSON.
pub fn request(id: &RawValue, method: &str, params: Option<impl Serialize>) -> Bytes {
    to_bytes(&Request {
        jsonrpc: VERSION,
        id,
        method,
        params,
    })
}

/// A notification of the gateway's own.
pub fn notification(method: &str, params: Option<impl Serialize>) -> Bytes {
    to_bytes(&Notification {
        jsonrpc: VERSION,
        method,
        params,
    })
}

/// A success answer to the request `id` (raw JSON; `None` writes `null`).
pub fn success(id: Option<&str>, result: impl Serialize) -> Bytes {
    to_bytes(&Success {
        jsonrpc: VERSION,
        id: raw_or_null(id),
        result,
    })
}

/// An error answer to the request `id` (raw JSON; `None` writes `null`).
pub fn error_response(
    id: Option<&str>,
    code: i32,
    message: &str,
    data: Option<serde_json::Value>,
) -> Bytes {
    to_bytes(&Failure {
        jsonrpc: VERSION,
        id: raw_or_null(id),
        error: ErrorObject {
            code,
            message,
            data,
        },
    })
}

/// `notifications/cancelled` for the request `request_id` (raw JSON).
pub fn cancelled(request_id: &str, reason: &str) -> Bytes {
    notification(
        method::CANCELLED,
        Some(Cancelled {
            request_id: raw(request_id),
            reason,
        }),
    )
}

/// The client capabilities the gateway declares when it speaks `initialize`
/// to a backend for a client that is not there yet (a stateless caller's
/// process, a warm spare): every request it can relay to a client.
pub const RELAYED_CAPABILITIES: &str =
    r#"{"elicitation":{"form":{},"url":{}},"sampling":{},"roots":{}}"#;

/// The gateway's own `clientInfo`.
pub const GATEWAY_CLIENT_INFO: &str = concat!(
    r#"{"name":"mcpgate","version":""#,
    env!("CARGO_PKG_VERSION"),
    r#""}"#
);

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InitializeParams<'a> {
    protocol_version: &'static str,
    capabilities: &'a RawValue,
    client_info: &'a RawValue,
}

/// An `initialize` of the gateway's own (id 0) at the latest session-era
/// version, declaring `capabilities` and `client_info` (raw JSON).
pub fn initialize(capabilities: &RawValue, client_info: &RawValue) -> Bytes {
    request(
        raw("0"),
        method::INITIALIZE,
        Some(InitializeParams {
            protocol_version: Version::LATEST_SESSION.as_str(),
            capabilities,
            client_info,
        }),
    )
}

/// The `_meta` a 2026-07-28 request carries: the protocol version, and the
/// client's capabilities and `clientInfo` (raw, as the client wrote them).
pub struct RequestMeta<'a> {
    pub capabilities: &'a RawValue,
    pub client_info: Option<&'a RawValue>,
}

impl Serialize for RequestMeta<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry(meta::PROTOCOL_VERSION, Version::STATELESS.as_str())?;
        map.serialize_entry(meta::CLIENT_CAPABILITIES, self.capabilities)?;
        if let Some(info) = self.client_info {
            map.serialize_entry(meta::CLIENT_INFO, info)?;
        }
        map.end()
    }
}

/// Params that hold nothing but a `_meta`.
#[derive(Serialize)]
pub struct MetaOnly<M: Serialize> {
    #[serde(rename = "_meta")]
    pub meta: M,
}

/// The members of `object` (which must serialise to a JSON object) as
/// `"k":v,...`, for [`super::splice_members`].
pub fn members(object: &impl Serialize) -> String {
    let text = serde_json::to_string(object).expect("the gateway's own members serialise");
    match text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
        Some(members) => members.to_owned(),
        None => panic!("members of a value that is not an object: {text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_parts_keep_their_bytes_and_ids_keep_their_form() {
        let result = raw(r#"{"z":1e400,"a":[1.50]}"#);
        assert_eq!(
            &success(Some("\"x-1\""), result)[..],
            br#"{"jsonrpc":"2.0","id":"x-1","result":{"z":1e400,"a":[1.50]}}"#
        );
        assert_eq!(
            &success(Some("18446744073709551615"), raw("{}"))[..],
            br#"{"jsonrpc":"2.0","id":18446744073709551615,"result":{}}"#
        );
        assert_eq!(
            &success(None, raw("{}"))[..],
            br#"{"jsonrpc":"2.0","id":null,"result":{}}"#
        );
    }

    #[test]
    fn one_builder_per_kind() {
        assert_eq!(
            &cancelled("7", "gone")[..],
            br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":7,"reason":"gone"}}"#
        );
        assert_eq!(
            &request(raw("0"), "ping", None::<()>)[..],
            br#"{"jsonrpc":"2.0","id":0,"method":"ping"}"#
        );
        assert_eq!(
            &notification(method::INITIALIZED, None::<()>)[..],
            br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#
        );
        assert_eq!(
            &error_response(Some("1"), -32601, "no \"such\" method", None)[..],
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no \"such\" method"}}"#
        );
        let with_data = error_response(None, -1, "m", Some(serde_json::json!({"server": "s"})));
        assert_eq!(
            &with_data[..],
            br#"{"jsonrpc":"2.0","id":null,"error":{"code":-1,"message":"m","data":{"server":"s"}}}"#
        );
    }

    #[test]
    fn members_are_an_objects_inside() {
        #[derive(Serialize)]
        struct Two<'a> {
            a: u8,
            b: &'a RawValue,
        }
        assert_eq!(
            members(&Two {
                a: 1,
                b: raw("[ 2 ]")
            }),
            r#""a":1,"b":[ 2 ]"#
        );
    }

    #[test]
    fn a_request_meta_carries_the_envelope_keys() {
        let caps = raw(r#"{"sampling":{}}"#);
        let with_info = RequestMeta {
            capabilities: caps,
            client_info: Some(raw(r#"{"name":"c"}"#)),
        };
        assert_eq!(
            members(&with_info),
            r#""io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"sampling":{}},"io.modelcontextprotocol/clientInfo":{"name":"c"}"#
        );
        let bare = RequestMeta {
            capabilities: caps,
            client_info: None,
        };
        assert!(!members(&bare).contains("clientInfo"));
    }

    #[test]
    fn text_that_is_not_json_becomes_null() {
        assert_eq!(raw("not json").get(), "null");
    }
}
