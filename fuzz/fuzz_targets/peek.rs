//! `jsonrpc::peek`, `peek_client`, `splice`, `to_single_line`,
//! `nests_deeper_than` and `is_batch` on arbitrary bytes.
//!
//! Invariants, beyond "never panics":
//! - `peek_client` agrees with `peek` unless the message nests deeper than `MAX_DEPTH`;
//! - an accepted message has the members its kind needs, and every slice it
//!   returns (id, params, result, error) lies inside the input;
//! - splicing the id for `7` leaves every other byte alone and peeks again as
//!   the same kind and method with id `7`;
//! - `to_single_line` leaves no CR/LF and keeps the message peekable, unchanged
//!   in kind, method and id.

#![no_main]

use std::ops::Range;

use libfuzzer_sys::fuzz_target;
use mcpgate::jsonrpc::{self, Kind, MAX_DEPTH, Peek};

/// Where `inner` sits in `outer`, if it is a slice of it.
fn within(outer: &[u8], inner: &str) -> Option<Range<usize>> {
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    (i >= o && i + inner.len() <= o + outer.len()).then(|| i - o..i - o + inner.len())
}

fn check_shape(data: &[u8], p: &Peek<'_>) {
    match p.kind {
        Kind::Request => assert!(p.method.is_some() && p.id.is_some()),
        Kind::Notification => assert!(p.method.is_some() && p.id.is_none()),
        Kind::Response => {
            assert!(p.method.is_none() && p.id.is_some());
            assert!(p.result.is_some() || p.error.is_some());
        }
    }
    assert_eq!(p.id.is_some(), p.id_range.is_some());
    if let (Some(id), Some(range)) = (p.id, p.id_range.clone()) {
        assert_eq!(
            within(data, id),
            Some(range.clone()),
            "id is not a slice of the input"
        );
        assert_eq!(&data[range], id.as_bytes());
        let first = id.as_bytes()[0];
        assert!(
            first == b'"' || first == b'-' || first.is_ascii_digit(),
            "accepted id {id}"
        );
    }
    for raw in [p.params, p.result, p.error].into_iter().flatten() {
        assert!(
            within(data, raw.get()).is_some(),
            "member is not a slice of the input"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let deep = jsonrpc::nests_deeper_than(data, MAX_DEPTH);
    // A smaller limit can only say "deeper" more often.
    if deep {
        assert!(jsonrpc::nests_deeper_than(data, 1));
    }
    let _ = jsonrpc::nests_deeper_than(data, 0);
    let batch = jsonrpc::is_batch(data);

    let peeked = jsonrpc::peek(data);
    let client = jsonrpc::peek_client(data);
    match (&peeked, &client) {
        (Ok(p), Ok(c)) => {
            assert!(!deep);
            assert_eq!((p.kind, &p.method, p.id), (c.kind, &c.method, c.id));
        }
        (Ok(_), Err(e)) => assert!(deep, "peek_client refused what peek took: {e}"),
        (Err(_), Ok(_)) => panic!("peek_client took what peek refused"),
        (Err(a), Err(b)) => {
            if !deep {
                assert_eq!(a, b);
            }
        }
    }
    let Ok(p) = peeked else { return };
    assert!(!batch, "an accepted message is an object, not a batch");
    check_shape(data, &p);

    // Splicing the id keeps every other byte and the message's meaning.
    if let Some(range) = p.id_range.clone() {
        let spliced = jsonrpc::splice(data, range.clone(), b"7");
        assert_eq!(&spliced[..range.start], &data[..range.start]);
        assert_eq!(&spliced[range.start..range.start + 1], b"7");
        assert_eq!(&spliced[range.start + 1..], &data[range.end..]);
        let again = jsonrpc::peek(&spliced)
            .unwrap_or_else(|e| panic!("spliced message no longer peeks: {e}"));
        assert_eq!(again.id, Some("7"));
        assert_eq!(again.kind, p.kind);
        assert_eq!(again.method, p.method);
        check_shape(&spliced, &again);
    }

    // One stdio line: no CR/LF left, and still the same message.
    let mut line = data.to_vec();
    jsonrpc::to_single_line(&mut line);
    assert!(!line.iter().any(|b| *b == b'\n' || *b == b'\r'));
    let single =
        jsonrpc::peek(&line).unwrap_or_else(|e| panic!("message no longer peeks on one line: {e}"));
    assert_eq!(single.kind, p.kind);
    assert_eq!(single.method, p.method);
    assert_eq!(single.id, p.id);
    assert_eq!(single.id_range, p.id_range);
});
