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
    }
}
