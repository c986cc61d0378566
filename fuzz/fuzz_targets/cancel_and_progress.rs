//! `cancelled_request_id`, `request_progress_token`,
//! `notification_progress_token`, `member` and `string_member` on arbitrary
//! messages.
//!
//! The first byte picks how the rest is used, so that the fuzzer reaches the
//! member lookups often: as a whole message, as the `params` of a
//! `notifications/cancelled` or `notifications/progress`, or as the `_meta` of
//! a request's params.
//!
//! Invariants, beyond "never panics": every returned range indexes the message
//! and holds exactly the returned raw text, which is also what `member` finds;
//! every member found is a slice of the object it was looked up in; a
//! `string_member` is the JSON string that `member` found, decoded.

#![no_main]

use std::ops::Range;

use libfuzzer_sys::fuzz_target;
use mcpgate::jsonrpc;
use serde_json::value::RawValue;

/// Where `inner` sits in `outer`, if it is a slice of it.
fn within(outer: &[u8], inner: &str) -> Option<Range<usize>> {
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    (i >= o && i + inner.len() <= o + outer.len()).then(|| i - o..i - o + inner.len())
}

fn check_located(message: &[u8], found: Option<(&str, Range<usize>)>, expected: Option<&RawValue>) {
    assert_eq!(found.as_ref().map(|f| f.0), expected.map(RawValue::get));
    if let Some((text, range)) = found {
        assert!(
            range.end <= message.len(),
            "range {range:?} is outside the message"
        );
        assert_eq!(&message[range.clone()], text.as_bytes());
        assert_eq!(within(message, text), Some(range));
    }
}

fn check_member<'a>(object: &'a RawValue, name: &str) -> Option<&'a RawValue> {
    let found = jsonrpc::member(object, name);
    if let Some(raw) = found {
        assert!(
            within(object.get().as_bytes(), raw.get()).is_some(),
            "member `{name}` is not a slice of its object"
        );
    }
    let string = jsonrpc::string_member(object, name);
    if let Some(s) = &string {
        let raw = found.expect("a string member is a member");
        assert_eq!(
            serde_json::from_str::<String>(raw.get()).ok().as_ref(),
            Some(s)
        );
    }
    found
}

fn check_message(message: &[u8]) {
    let Ok(peek) = jsonrpc::peek(message) else {
        return;
    };
    for object in [peek.params, peek.result, peek.error].into_iter().flatten() {
        for name in [
            "requestId",
            "progressToken",
            "_meta",
            "protocolVersion",
            "",
            "id",
        ] {
            check_member(object, name);
        }
    }
    let Some(params) = peek.params else { return };
    check_located(
        message,
        jsonrpc::cancelled_request_id(message, params),
        check_member(params, "requestId"),
    );
    check_located(
        message,
        jsonrpc::notification_progress_token(message, params),
        check_member(params, "progressToken"),
    );
    let meta = check_member(params, "_meta");
    check_located(
        message,
        jsonrpc::request_progress_token(message, params),
        meta.and_then(|m| check_member(m, "progressToken")),
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let wrap = |head: &[u8], tail: &[u8]| [head, rest, tail].concat();
    let message = match mode % 4 {
        0 => rest.to_vec(),
        1 => wrap(
            br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":"#,
            b"}",
        ),
        2 => wrap(
            br#"{"jsonrpc":"2.0","method":"notifications/progress","params":"#,
            b"}",
        ),
        _ => wrap(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","_meta":"#,
            b"}}",
        ),
    };
    check_message(&message);
});
