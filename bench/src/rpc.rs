//! The JSON-RPC messages the benchmark sends, and the checks of the answers.
//!
//! Measured answers get a cheap check (the id and a `result` at the head of
//! the message, and its size), the same for every target, so checking costs
//! the client nearly nothing even for 1 MiB answers. Warm-up answers get a
//! full check: parsed, id compared, and the tool's text compared.

use bytes::Bytes;
use serde_json::Value;

/// What each measured request calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `echo {message: "hello"}`
    Echo,
    /// `big {bytes}`: a text of that many `x`.
    Big(usize),
}

/// The text `echo` is asked to send back.
pub const ECHO_MESSAGE: &str = "hello";

pub const INITIALIZED: &[u8] = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

/// An `initialize` request with integer id `id`.
pub fn initialize(id: u64) -> Bytes {
    Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"initialize","params":{{"protocolVersion":"{}","capabilities":{{}},"clientInfo":{{"name":"mcpgate-bench","version":"0.1.0"}}}}}}"#,
        crate::client::PROTOCOL
    ))
}

/// A `tools/call` request with integer id `id`.
pub fn tools_call(id: u64, call: Call) -> Vec<u8> {
    match call {
        Call::Echo => format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"{ECHO_MESSAGE}"}}}}}}"#
        ),
        Call::Big(bytes) => format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"big","arguments":{{"bytes":{bytes}}}}}}}"#
        ),
    }
    .into_bytes()
}

/// A `tools/call` request with integer id `id` of any tool: `arguments` is
/// the JSON object of its arguments.
pub fn tools_call_of(id: u64, tool: &str, arguments: &str) -> Vec<u8> {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":{tool:?},"arguments":{arguments}}}}}"#
    )
    .into_bytes()
}

/// The id of a JSON-RPC answer (a message with an `id` and no `method`);
/// `None` for requests, notifications and anything else. Parses the whole
/// message: servers put the id anywhere (the TypeScript SDK puts it last).
pub fn answer_id(message: &[u8]) -> Option<u64> {
    let value: Value = serde_json::from_slice(message).ok()?;
    if value.get("method").is_some() {
        return None;
    }
    value.get("id")?.as_u64()
}

/// The full check of any answer: JSON, id `id`, a `result` object, and for a
/// tool's answer no `isError: true`.
pub fn check_answer(message: &[u8], id: u64) -> Result<(), String> {
    let shown = || String::from_utf8_lossy(&message[..message.len().min(300)]).into_owned();
    let value: Value = serde_json::from_slice(message)
        .map_err(|e| format!("answer to request {id} is not JSON ({e}): {}", shown()))?;
    if value.get("id").and_then(Value::as_u64) != Some(id) {
        return Err(format!(
            "expected the answer to request {id}, got {}",
            shown()
        ));
    }
    let result = value
        .get("result")
        .filter(|r| r.is_object())
        .ok_or_else(|| format!("answer to request {id} has no result: {}", shown()))?;
    if result.get("isError") == Some(&Value::Bool(true)) {
        return Err(format!("the tool failed: {}", shown()));
    }
    Ok(())
}

/// True when the message is a JSON-RPC answer with a `result` (a cheap look).
pub fn has_result(message: &[u8]) -> bool {
    let head = &message[..message.len().min(256)];
    head.windows(9).any(|w| w == b"\"result\":")
}

/// The integer id at the head of an answer (`"id":N` before `"result"`).
pub fn head_id(message: &[u8]) -> Option<u64> {
    let head = &message[..message.len().min(128)];
    let at = head.windows(5).position(|w| w == b"\"id\":")? + 5;
    let digits: &[u8] = &head[at..];
    let digits = &digits[digits.iter().position(|b| !b.is_ascii_whitespace())?..];
    let end = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

/// The cheap check of a measured answer: right id, a result, plausible size.
pub fn quick_check(message: &[u8], id: u64, call: Call) -> Result<(), String> {
    if head_id(message) != Some(id) || !has_result(message) || message.last() != Some(&b'}') {
        return Err(format!(
            "unexpected answer to request {id}: {}",
            String::from_utf8_lossy(&message[..message.len().min(300)])
        ));
    }
    if let Call::Big(bytes) = call
        && message.len() < bytes
    {
        return Err(format!(
            "answer to request {id} has {} bytes, expected over {bytes}",
            message.len()
        ));
    }
    Ok(())
}

/// The full check of a warm-up answer: parsed, id, and the tool's text.
pub fn full_check(message: &[u8], id: u64, call: Call) -> Result<(), String> {
    let value: Value = serde_json::from_slice(message)
        .map_err(|e| format!("answer to request {id} is not JSON: {e}"))?;
    if value["id"].as_u64() != Some(id) {
        return Err(format!("answer has id {}, expected {id}", value["id"]));
    }
    let text = value["result"]["content"][0]["text"]
        .as_str()
        .ok_or_else(|| format!("answer to request {id} has no text result: {value:.300}"))?;
    let good = match call {
        Call::Echo => text == ECHO_MESSAGE,
        Call::Big(bytes) => text.len() == bytes && text.bytes().all(|b| b == b'x'),
    };
    if !good {
        return Err(format!("answer to request {id} has the wrong text"));
    }
    quick_check(message, id, call)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_checked_by_their_head() {
        let answer =
            br#"{"jsonrpc":"2.0","id":42,"result":{"content":[{"type":"text","text":"hello"}]}}"#;
        assert_eq!(head_id(answer), Some(42));
        assert!(quick_check(answer, 42, Call::Echo).is_ok());
        assert!(full_check(answer, 42, Call::Echo).is_ok());
        assert!(quick_check(answer, 43, Call::Echo).is_err());
        let error = br#"{"jsonrpc":"2.0","id":42,"error":{"code":-32603,"message":"x"}}"#;
        assert!(quick_check(error, 42, Call::Echo).is_err());
    }

    #[test]
    fn requests_are_valid_json() {
        for call in [Call::Echo, Call::Big(10)] {
            let v: Value = serde_json::from_slice(&tools_call(7, call)).unwrap();
            assert_eq!(v["id"], 7);
        }
        let v: Value = serde_json::from_slice(&initialize(0)).unwrap();
        assert_eq!(v["method"], "initialize");
        let v: Value = serde_json::from_slice(&tools_call_of(
            3,
            "get_current_time",
            r#"{"timezone":"UTC"}"#,
        ))
        .unwrap();
        assert_eq!(v["params"]["name"], "get_current_time");
        assert_eq!(v["params"]["arguments"]["timezone"], "UTC");
    }

    #[test]
    fn answers_are_told_from_requests_wherever_their_id_is() {
        let last = br#"{"result":{"content":[]},"jsonrpc":"2.0","id":1}"#;
        assert_eq!(answer_id(last), Some(1));
        assert!(check_answer(last, 1).is_ok());
        assert!(check_answer(last, 2).is_err());
        let request = br#"{"jsonrpc":"2.0","id":1,"method":"roots/list"}"#;
        assert_eq!(answer_id(request), None);
        assert_eq!(
            answer_id(br#"{"jsonrpc":"2.0","method":"notifications/x"}"#),
            None
        );
        let failed = br#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}}"#;
        assert!(check_answer(failed, 1).is_err());
        let error = br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no"}}"#;
        assert!(check_answer(error, 1).is_err());
    }
}
