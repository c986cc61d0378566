//! Looking at raw JSON-RPC messages without re-serialising them.
//!
//! Owns [`peek`], which finds a message's kind, method, id and params as
//! borrowed slices of the original bytes, [`splice`], which replaces one slice
//! (an id) and leaves every other byte as it was, [`splice_members`], the one
//! way members are added to an object inside a message, and (in `build`) the
//! gateway's own messages. It must never turn a forwarded message into typed
//! structs and back: unknown fields, number formats and key order of a
//! backend's answer reach the client exactly as the backend wrote them.

pub mod build;

pub use build::error_response;

use std::borrow::Cow;
use std::ops::Range;

use bytes::Bytes;

use serde::Deserialize;
use serde_json::value::RawValue;

/// Invalid JSON was received.
pub const PARSE_ERROR: i32 = -32700;
/// The JSON sent is not a valid request object.
pub const INVALID_REQUEST: i32 = -32600;
/// The method does not exist or is not available.
pub const METHOD_NOT_FOUND: i32 = -32601;
/// Invalid method parameters.
pub const INVALID_PARAMS: i32 = -32602;
/// Internal error (used for backend failures, with details in `data`).
pub const INTERNAL_ERROR: i32 = -32603;
/// Transport-level problem with the HTTP request (bad session, headers...), as the SDKs use it.
pub const SERVER_ERROR: i32 = -32000;
/// The backend did not answer within the request timeout.
pub const REQUEST_TIMEOUT: i32 = -32001;
/// 2026-07-28: the HTTP headers do not match the body, or are missing.
pub const HEADER_MISMATCH: i32 = -32020;
/// 2026-07-28: the request needs a client capability it did not declare.
pub const MISSING_CLIENT_CAPABILITY: i32 = -32021;
/// 2026-07-28: the protocol version is not one the server implements.
pub const UNSUPPORTED_PROTOCOL_VERSION: i32 = -32022;

/// What a single message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Has `method` and `id`: expects an answer.
    Request,
    /// Has `method`, no `id`.
    Notification,
    /// Has `id` and `result` or `error`, no `method`.
    Response,
}

/// Why bytes are not a usable JSON-RPC message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeekError {
    /// Not JSON at all (or nested too deep to parse safely).
    #[error("parse error: {0}")]
    Parse(String),
    /// JSON, but not a JSON-RPC 2.0 message.
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl PeekError {
    /// The JSON-RPC error code for this problem.
    pub fn code(&self) -> i32 {
        match self {
            PeekError::Parse(_) => PARSE_ERROR,
            PeekError::Invalid(_) => INVALID_REQUEST,
        }
    }
}

/// A message seen through its raw bytes.
#[derive(Debug)]
pub struct Peek<'a> {
    pub kind: Kind,
    pub method: Option<Cow<'a, str>>,
    /// The id exactly as written (e.g. `"abc"` with quotes, or `18446744073709551615`).
    pub id: Option<&'a str>,
    /// Where the id sits in the original bytes.
    pub id_range: Option<Range<usize>>,
    pub params: Option<&'a RawValue>,
    /// The `result` member of a response.
    pub result: Option<&'a RawValue>,
    /// The `error` member of an error response.
    pub error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawMessage<'a> {
    // Raw, not `Cow<str>`: through an `Option`, serde would always copy the
    // string; most messages need no unescaping at all.
    #[serde(borrow)]
    jsonrpc: Option<&'a RawValue>,
    #[serde(borrow)]
    method: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
    #[serde(borrow)]
    result: Option<&'a RawValue>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
}

/// Keeps an explicit `null` as `Some("null")` so it can be told from absence.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Deepest nesting of arrays and objects a client message may have. Parsing
/// here never recurses, but backends might: deeper messages are refused.
pub const MAX_DEPTH: usize = 128;

/// True when arrays/objects in `bytes` nest deeper than `limit` (strings are skipped).
pub fn nests_deeper_than(bytes: &[u8], limit: usize) -> bool {
    // Fewer openings than the limit cannot nest deeper than it, whatever
    // strings they are in: counting them is a quick scan of the bytes.
    if bytes.iter().filter(|&&b| b == b'[' || b == b'{').count() <= limit {
        return false;
    }
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// True when the bytes hold a JSON array (a batch), judged by the first non-space byte.
pub fn is_batch(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'[')
}

/// Finds kind, method, id and params of one message without copying it.
pub fn peek(bytes: &[u8]) -> Result<Peek<'_>, PeekError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        // Validate as JSON first so that junk is a parse error, not an invalid request.
        return match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Err(e) => Err(PeekError::Parse(e.to_string())),
            Ok(_) => Err(PeekError::Invalid(
                "a JSON-RPC message must be a JSON object".into(),
            )),
        };
    }
    let raw: RawMessage<'_> = serde_json::from_slice(bytes).map_err(|e| {
        if e.is_data() {
            PeekError::Invalid(e.to_string())
        } else {
            PeekError::Parse(e.to_string())
        }
    })?;
    if raw.jsonrpc.and_then(json_str).as_deref() != Some("2.0") {
        return Err(PeekError::Invalid("`jsonrpc` must be \"2.0\"".into()));
    }
    let method = match raw.method {
        None => None,
        Some(method) => Some(
            json_str(method)
                .ok_or_else(|| PeekError::Invalid("`method` must be a string".into()))?,
        ),
    };
    let id = raw.id.map(RawValue::get);
    // `"id": null` is allowed in one place: an error answer to a request
    // whose id could not be read (JSON-RPC 2.0, section 5).
    let null_error =
        id == Some("null") && raw.error.is_some() && raw.result.is_none() && raw.method.is_none();
    if let Some(id) = id
        && !is_valid_id(id)
        && !null_error
    {
        return Err(PeekError::Invalid(
            "`id` must be a string or an integer".into(),
        ));
    }
    let kind = match (&method, id, raw.result.is_some() || raw.error.is_some()) {
        (Some(_), Some(_), false) => Kind::Request,
        (Some(_), None, false) => Kind::Notification,
        (None, Some(_), true) => Kind::Response,
        _ => {
            return Err(PeekError::Invalid(
                "not a request, notification or response".into(),
            ));
        }
    };
    Ok(Peek {
        kind,
        method,
        id,
        id_range: id.map(|id| range_in(bytes, id)),
        params: raw.params,
        result: raw.result,
        error: raw.error,
    })
}

/// The text of a raw JSON string, borrowed when it holds no escapes; `None`
/// when the value is not a string.
fn json_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        serde_json::from_str::<String>(text).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(inner))
    }
}

/// [`peek`] for messages from clients: also refuses nesting deeper than [`MAX_DEPTH`].
/// (Backend output is not limited: it is passed through, never parsed deeply.)
pub fn peek_client(bytes: &[u8]) -> Result<Peek<'_>, PeekError> {
    if nests_deeper_than(bytes, MAX_DEPTH) {
        return Err(PeekError::Invalid(format!(
            "the message nests deeper than {MAX_DEPTH} levels"
        )));
    }
    peek(bytes)
}

/// Ids are strings or integers; null, floats, objects and arrays are not allowed.
fn is_valid_id(raw: &str) -> bool {
    match raw.as_bytes().first() {
        Some(b'"') => true,
        Some(b'-' | b'0'..=b'9') => raw.bytes().all(|b| b == b'-' || b.is_ascii_digit()),
        _ => false,
    }
}

/// An owned message with what reading it told: its kind, its method, and
/// where its id sits. What a backend sends on its own reaches the sinks as
/// one of these, so that none reads the bytes again for what the reader knew.
#[derive(Debug, Clone)]
pub struct Message {
    bytes: Bytes,
    kind: Kind,
    method: Option<Box<str>>,
    id_range: Option<Range<usize>>,
    refusal: Option<Refusal>,
}

/// How to answer a peer's request on its client's behalf when the client
/// cannot be asked: an error saying why goes back to the peer that asked.
#[derive(Clone)]
pub struct Refusal(std::sync::Arc<dyn Fn(&str) + Send + Sync>);

impl Refusal {
    pub fn new(refuse: impl Fn(&str) + Send + Sync + 'static) -> Refusal {
        Refusal(std::sync::Arc::new(refuse))
    }

    /// Answers the request with an error saying `why`.
    pub fn refuse(&self, why: &str) {
        (self.0)(why);
    }
}

impl std::fmt::Debug for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Refusal")
    }
}

impl Message {
    /// `bytes`, as `peek` (a reading of these very bytes) found them.
    pub fn new(bytes: Bytes, peek: &Peek<'_>) -> Message {
        debug_assert!(
            peek.id_range.as_ref().is_none_or(|r| r.end <= bytes.len()),
            "the peek reads these bytes"
        );
        Message {
            kind: peek.kind,
            method: peek.method.as_deref().map(Box::from),
            id_range: peek.id_range.clone(),
            bytes,
            refusal: None,
        }
    }

    /// The same request, with how to refuse it on its client's behalf.
    pub fn with_refusal(mut self, refusal: Refusal) -> Message {
        self.refusal = Some(refusal);
        self
    }

    /// How to refuse this request on its client's behalf, if known.
    pub fn refusal(&self) -> Option<&Refusal> {
        self.refusal.as_ref()
    }

    /// Reads `bytes` once.
    pub fn read(bytes: Bytes) -> Result<Message, PeekError> {
        let peek = peek(&bytes)?;
        let (kind, method, id_range) = (
            peek.kind,
            peek.method.as_deref().map(Box::from),
            peek.id_range,
        );
        Ok(Message {
            bytes,
            kind,
            method,
            id_range,
            refusal: None,
        })
    }

    /// The message as it was written.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The message as it was written, owned.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The method, unescaped (none for a response).
    pub fn method(&self) -> Option<&str> {
        self.method.as_deref()
    }

    /// The id exactly as written, if it has one.
    pub fn id(&self) -> Option<&str> {
        let range = self.id_range.clone()?;
        std::str::from_utf8(&self.bytes[range]).ok()
    }

    /// A second reading, for what only some need (params).
    pub fn peek(&self) -> Option<Peek<'_>> {
        peek(&self.bytes).ok()
    }

    /// The same message with its id replaced by `id` (raw JSON); every other
    /// byte kept. A message without an id is returned as it is.
    pub fn with_id(&self, id: &str) -> Message {
        let Some(range) = self.id_range.clone() else {
            return self.clone();
        };
        let start = range.start;
        Message {
            bytes: Bytes::from(splice(&self.bytes, range, id.as_bytes())),
            kind: self.kind,
            method: self.method.clone(),
            id_range: Some(start..start + id.len()),
            refusal: self.refusal.clone(),
        }
    }

    /// The same message with `range` (of its bytes, not its id) replaced by
    /// `replacement`; every other byte kept.
    pub fn spliced(&self, range: Range<usize>, replacement: &[u8]) -> Message {
        let bytes = Bytes::from(splice(&self.bytes, range.clone(), replacement));
        let shift = |at: usize| {
            if at >= range.end {
                at + replacement.len() - range.len()
            } else {
                at
            }
        };
        Message {
            bytes,
            kind: self.kind,
            method: self.method.clone(),
            id_range: self.id_range.clone().map(|r| shift(r.start)..shift(r.end)),
            refusal: self.refusal.clone(),
        }
    }
}

/// The byte range of a slice borrowed from `outer`.
pub fn range_in(outer: &[u8], inner: &str) -> Range<usize> {
    let start = inner.as_ptr() as usize - outer.as_ptr() as usize;
    debug_assert!(start + inner.len() <= outer.len());
    start..start + inner.len()
}

/// Returns `bytes` with `range` replaced by `replacement`; every other byte is
/// kept. The vector is exactly as long as its capacity, so that it becomes
/// [`Bytes`] without another allocation.
pub fn splice(bytes: &[u8], range: Range<usize>, replacement: &[u8]) -> Vec<u8> {
    splice_with_room(bytes, range, replacement, 0)
}

/// [`splice`], with room for `room` more bytes (a line's newline) after it.
pub fn splice_with_room(
    bytes: &[u8],
    range: Range<usize>,
    replacement: &[u8],
    room: usize,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() - range.len() + replacement.len() + room);
    out.extend_from_slice(&bytes[..range.start]);
    out.extend_from_slice(replacement);
    out.extend_from_slice(&bytes[range.end..]);
    out
}

/// `message` with `members` (`"k":v,...`) added at the start of `object`, an
/// object inside it (as `peek` borrowed it); every other byte is kept. `None`
/// when `object` is not an object.
pub fn splice_members(message: &[u8], object: &RawValue, members: &str) -> Option<Vec<u8>> {
    let text = object.get();
    let empty = text.strip_prefix('{')?.trim_start().starts_with('}');
    let at = range_in(message, text).start + 1;
    let mut out = Vec::with_capacity(message.len() + members.len() + 1);
    out.extend_from_slice(&message[..at]);
    out.extend_from_slice(members.as_bytes());
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(&message[at..]);
    Some(out)
}

/// `message` with `member` (`"k":v`) added as the last member of its top
/// level object.
fn append_member(message: &[u8], member: &str) -> Vec<u8> {
    let end = message
        .iter()
        .rposition(|b| *b == b'}')
        .unwrap_or(message.len());
    splice(message, end..end, format!(",{member}").as_bytes())
}

/// `message` (a request, as `peek` read it) with `members` (`"k":v,...`) added
/// to its `params._meta`, creating `_meta` and `params` where missing; every
/// other byte is kept.
pub fn with_meta_members(message: &[u8], peek: &Peek<'_>, members: &str) -> Vec<u8> {
    let Some(params) = peek.params else {
        return append_member(message, &format!("\"params\":{{\"_meta\":{{{members}}}}}"));
    };
    member(params, "_meta")
        .and_then(|meta| splice_members(message, meta, members))
        .or_else(|| splice_members(message, params, &format!("\"_meta\":{{{members}}}")))
        .unwrap_or_else(|| message.to_vec())
}

/// `message` (a request, as `peek` read it) without the members of its
/// `params._meta` whose names start with `prefix`; `None` when it has none.
/// The members kept are copied as they were written.
pub fn without_meta_members(message: &[u8], peek: &Peek<'_>, prefix: &str) -> Option<Vec<u8>> {
    let meta = member(peek.params?, "_meta")?;
    let members: indexmap::IndexMap<String, &RawValue> = serde_json::from_str(meta.get()).ok()?;
    if !members.keys().any(|k| k.starts_with(prefix)) {
        return None;
    }
    let kept: Vec<String> = members
        .iter()
        .filter(|(k, _)| !k.starts_with(prefix))
        .map(|(k, v)| {
            format!(
                "{}:{}",
                serde_json::to_string(k).expect("a string"),
                v.get()
            )
        })
        .collect();
    let object = format!("{{{}}}", kept.join(","));
    Some(splice(
        message,
        range_in(message, meta.get()),
        object.as_bytes(),
    ))
}

/// `message` (a request) with `members` (`"k":v,...`) added at the start of
/// its `params`, created if missing; every other byte is kept.
pub fn with_params_members(message: &[u8], peek: &Peek<'_>, members: &str) -> Vec<u8> {
    peek.params
        .and_then(|params| splice_members(message, params, members))
        .unwrap_or_else(|| append_member(message, &format!("\"params\":{{{members}}}")))
}

/// Makes a message fit on one stdio line: raw CR/LF can only be insignificant
/// whitespace in valid JSON (inside strings they must be escaped), so they become spaces.
pub fn to_single_line(message: &mut [u8]) {
    for b in message.iter_mut() {
        if *b == b'\n' || *b == b'\r' {
            *b = b' ';
        }
    }
}

/// One member of a raw JSON object, still borrowed from the original bytes.
pub fn member<'a>(object: &'a RawValue, name: &str) -> Option<&'a RawValue> {
    use serde::Deserializer as _;
    let mut object = serde_json::Deserializer::from_str(object.get());
    object.deserialize_map(FindMember(name)).ok().flatten()
}

/// Walks an object's members once, building nothing: a key is compared where
/// it lies (unescaped only if it has escapes), and the value of the last
/// member named so is kept, as a map would keep it.
struct FindMember<'n>(&'n str);

impl<'de> serde::de::Visitor<'de> for FindMember<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(named) = map.next_key_seed(KeyIs(self.0))? {
            if named {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// A key, read as whether it equals the name.
struct KeyIs<'n>(&'n str);

impl<'de> serde::de::DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, key: D) -> Result<bool, D::Error> {
        key.deserialize_str(self)
    }
}

impl serde::de::Visitor<'_> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

/// The `requestId` of a `notifications/cancelled`, with its position in the message bytes.
pub fn cancelled_request_id<'a>(
    message: &'a [u8],
    params: &'a RawValue,
) -> Option<(&'a str, Range<usize>)> {
    let id = member(params, "requestId")?.get();
    Some((id, range_in(message, id)))
}

/// The `params._meta.progressToken` of a request, with its position in the message bytes.
pub fn request_progress_token<'a>(
    message: &'a [u8],
    params: &'a RawValue,
) -> Option<(&'a str, Range<usize>)> {
    // Most requests carry no token: without the name written out (or an
    // escape that could spell it), there is none, and nothing is parsed.
    let raw = params.get().as_bytes();
    if !raw.contains(&b'\\') && !contains(raw, b"progressToken") {
        return None;
    }
    let token = member(member(params, "_meta")?, "progressToken")?.get();
    Some((token, range_in(message, token)))
}

/// The `params.progressToken` of a `notifications/progress`, with its position.
pub fn notification_progress_token<'a>(
    message: &'a [u8],
    params: &'a RawValue,
) -> Option<(&'a str, Range<usize>)> {
    let token = member(params, "progressToken")?.get();
    Some((token, range_in(message, token)))
}

/// True when `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    let mut at = 0;
    while let Some(found) = haystack[at..].iter().position(|&b| b == first) {
        let start = at + found;
        if haystack[start + 1..].starts_with(rest) {
            return true;
        }
        at = start + 1;
    }
    false
}

/// Reads one string member of a raw object (e.g. `protocolVersion` of an initialize result).
pub fn string_member(object: &RawValue, name: &str) -> Option<String> {
    serde_json::from_str::<String>(member(object, name)?.get()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_null_id_is_an_error_answers_only() {
        let null_error =
            peek(br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}"#).unwrap();
        assert_eq!(null_error.kind, Kind::Response);
        assert_eq!(null_error.id, Some("null"));
        assert!(peek(br#"{"jsonrpc":"2.0","id":null,"result":{}}"#).is_err());
        assert!(peek(br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#).is_err());
    }

    #[test]
    fn a_message_keeps_what_reading_told_through_splices() {
        let m = Message::read(Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":"a","method":"roots/list","params":{"x":"yy"}}"#,
        ))
        .unwrap();
        assert_eq!(
            (m.kind(), m.method(), m.id()),
            (Kind::Request, Some("roots/list"), Some("\"a\""))
        );
        let renamed = m.with_id("\"mcpgate-17\"");
        assert_eq!(renamed.id(), Some("\"mcpgate-17\""));
        assert_eq!(
            &renamed.bytes()[..],
            br#"{"jsonrpc":"2.0","id":"mcpgate-17","method":"roots/list","params":{"x":"yy"}}"#
        );
        // A splice after the id leaves the id where it was; one before moves it.
        let at = renamed
            .bytes()
            .windows(4)
            .position(|w| w == b"\"yy\"")
            .unwrap();
        let after = renamed.spliced(at..at + 4, b"1");
        assert_eq!(after.id(), Some("\"mcpgate-17\""));
        let before = renamed.spliced(1..1, b" ");
        assert_eq!(before.id(), Some("\"mcpgate-17\""));
        assert_eq!(before.peek().unwrap().id, Some("\"mcpgate-17\""));
        let note = Message::read(Bytes::from_static(br#"{"jsonrpc":"2.0","method":"m"}"#)).unwrap();
        assert_eq!(note.id(), None);
        assert_eq!(note.with_id("1").bytes(), note.bytes());
    }

    #[test]
    fn meta_members_with_a_prefix_are_removed_and_the_rest_kept() {
        let m = br#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"a":1,"_meta":{"x/v":"1","progressToken":7.50,"x/c":{}}}}"#;
        let out = without_meta_members(m, &peek(m).unwrap(), "x/").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"a":1,"_meta":{"progressToken":7.50}}}"#
        );
        let plain =
            br#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"_meta":{"progressToken":1}}}"#;
        assert!(without_meta_members(plain, &peek(plain).unwrap(), "x/").is_none());
    }

    #[test]
    fn meta_members_are_added_where_they_belong() {
        let add = |m: &[u8]| {
            String::from_utf8(with_meta_members(m, &peek(m).unwrap(), r#""k":1"#)).unwrap()
        };
        assert_eq!(
            add(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"k":1}}}"#
        );
        assert_eq!(
            add(br#"{"jsonrpc":"2.0","id":1,"method":"m","params":{}}"#),
            r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"_meta":{"k":1}}}"#
        );
        assert_eq!(
            add(br#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"a":2.50}}"#),
            r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"_meta":{"k":1},"a":2.50}}"#
        );
        assert_eq!(
            add(br#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"_meta":{"progressToken":7},"a":1}}"#),
            r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"_meta":{"k":1,"progressToken":7},"a":1}}"#
        );
    }

    #[test]
    fn kinds_are_told_apart() {
        let req = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        let note = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        let resp = br#"{"jsonrpc":"2.0","id":"a","result":{}}"#;
        let err = br#"{"jsonrpc":"2.0","id":"a","error":{"code":1,"message":"x"}}"#;
        assert_eq!(peek(req).unwrap().kind, Kind::Request);
        assert_eq!(peek(note).unwrap().kind, Kind::Notification);
        assert_eq!(peek(resp).unwrap().kind, Kind::Response);
        assert_eq!(peek(err).unwrap().kind, Kind::Response);
        assert_eq!(peek(req).unwrap().method.as_deref(), Some("tools/list"));
    }

    #[test]
    fn methods_are_borrowed_unless_escaped() {
        let plain = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        assert!(matches!(
            peek(plain).unwrap().method,
            Some(Cow::Borrowed("tools/list"))
        ));
        let escaped = br#"{"jsonrpc":"2.0","id":1,"method":"tools\/list"}"#;
        assert_eq!(peek(escaped).unwrap().method.as_deref(), Some("tools/list"));
        let number = br#"{"jsonrpc":"2.0","id":1,"method":7}"#;
        assert_eq!(peek(number).unwrap_err().code(), INVALID_REQUEST);
    }

    #[test]
    fn junk_is_a_parse_error_and_wrong_shapes_are_invalid() {
        assert_eq!(peek(b"{not json").unwrap_err().code(), PARSE_ERROR);
        assert_eq!(peek(b"").unwrap_err().code(), PARSE_ERROR);
        assert_eq!(peek(b"\xff\xfe").unwrap_err().code(), PARSE_ERROR);
        assert_eq!(peek(b"42").unwrap_err().code(), INVALID_REQUEST);
        assert_eq!(
            peek(br#"{"id":1,"method":"x"}"#).unwrap_err().code(),
            INVALID_REQUEST
        );
        assert_eq!(
            peek(br#"{"jsonrpc":"2.0","id":null,"method":"x"}"#)
                .unwrap_err()
                .code(),
            INVALID_REQUEST
        );
        assert_eq!(
            peek(br#"{"jsonrpc":"2.0","id":1.5,"method":"x"}"#)
                .unwrap_err()
                .code(),
            INVALID_REQUEST
        );
        assert_eq!(
            peek(br#"{"jsonrpc":"2.0"}"#).unwrap_err().code(),
            INVALID_REQUEST
        );
    }

    #[test]
    fn deep_nesting_is_refused_without_overflowing_the_stack() {
        let deep = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\",\"params\":{}{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(peek_client(deep.as_bytes()).is_err());
        // Backend output is passed through: peeking it must not overflow either.
        assert!(peek(deep.as_bytes()).is_ok());
        let inside_string = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\",\"params\":{{\"s\":\"{}\\\"\"}}}}",
            "[".repeat(1000)
        );
        assert!(
            peek_client(inside_string.as_bytes()).is_ok(),
            "{inside_string}"
        );
        // Many openings side by side (more than the limit) nest shallowly.
        let wide = format!("[{}[]]", "[],".repeat(1000));
        assert!(!nests_deeper_than(wide.as_bytes(), MAX_DEPTH));
        let just_over = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(nests_deeper_than(just_over.as_bytes(), MAX_DEPTH));
        let at_limit = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(!nests_deeper_than(at_limit.as_bytes(), MAX_DEPTH));
    }

    #[test]
    fn splicing_an_id_keeps_every_other_byte() {
        let msg = br#"{ "jsonrpc":"2.0", "id" : 18446744073709551615 ,"method":"x","params":{"z":1.0e5,"a":[]}}"#;
        let p = peek(msg).unwrap();
        assert_eq!(p.id, Some("18446744073709551615"));
        let out = splice(msg, p.id_range.unwrap(), b"7");
        assert_eq!(
            out,
            br#"{ "jsonrpc":"2.0", "id" : 7 ,"method":"x","params":{"z":1.0e5,"a":[]}}"#.to_vec()
        );
    }

    #[test]
    fn single_line_keeps_string_contents() {
        let mut msg = b"{\"jsonrpc\":\"2.0\",\n\"method\":\"a\\nb\"}".to_vec();
        to_single_line(&mut msg);
        assert_eq!(msg, b"{\"jsonrpc\":\"2.0\", \"method\":\"a\\nb\"}".to_vec());
        assert_eq!(peek(&msg).unwrap().method.as_deref(), Some("a\nb"));
    }

    #[test]
    fn cancelled_request_id_is_located() {
        let msg = br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"r-1","reason":"x"}}"#;
        let p = peek(msg).unwrap();
        let (id, range) = cancelled_request_id(msg, p.params.unwrap()).unwrap();
        assert_eq!(id, "\"r-1\"");
        assert_eq!(&msg[range], b"\"r-1\"");
    }

    #[test]
    fn progress_tokens_are_located_in_requests_and_notifications() {
        let req = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","_meta":{"progressToken":"tok"}}}"#;
        let p = peek(req).unwrap();
        let (token, range) = request_progress_token(req, p.params.unwrap()).unwrap();
        assert_eq!(token, "\"tok\"");
        assert_eq!(
            splice(req, range, b"\"g1\""),
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","_meta":{"progressToken":"g1"}}}"#.to_vec()
        );
        let note = br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":7,"progress":1}}"#;
        let p = peek(note).unwrap();
        assert_eq!(
            notification_progress_token(note, p.params.unwrap())
                .unwrap()
                .0,
            "7"
        );
        let plain = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#;
        assert!(request_progress_token(plain, peek(plain).unwrap().params.unwrap()).is_none());
        // A name spelled with escapes is still the name.
        let escaped = br#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"\u005fmeta":{"progress\u0054oken":"e"}}}"#;
        let p = peek(escaped).unwrap();
        assert_eq!(
            request_progress_token(escaped, p.params.unwrap())
                .unwrap()
                .0,
            "\"e\""
        );
    }

    #[test]
    fn members_are_found_as_a_map_would_find_them() {
        let object: &RawValue =
            serde_json::from_str(r#"{"a":1,"b":{"c":[1,{"d":2}]},"a":"last","\u0065":true}"#)
                .unwrap();
        assert_eq!(member(object, "a").unwrap().get(), "\"last\"");
        assert_eq!(member(object, "b").unwrap().get(), r#"{"c":[1,{"d":2}]}"#);
        assert_eq!(member(object, "e").unwrap().get(), "true");
        assert!(member(object, "c").is_none());
        let not_an_object: &RawValue = serde_json::from_str("[1,2]").unwrap();
        assert!(member(not_an_object, "a").is_none());
    }

    #[test]
    fn error_response_is_valid_json_rpc() {
        let e = error_response(Some("\"x\""), INTERNAL_ERROR, "boom \"quoted\"", None);
        let v: serde_json::Value = serde_json::from_slice(&e).unwrap();
        assert_eq!(v["id"], "x");
        assert_eq!(v["error"]["code"], INTERNAL_ERROR);
        let e = error_response(None, PARSE_ERROR, "bad", Some(serde_json::json!({"k": 1})));
        let v: serde_json::Value = serde_json::from_slice(&e).unwrap();
        assert!(v["id"].is_null());
        assert_eq!(v["error"]["data"]["k"], 1);
    }

    #[test]
    fn string_member_reads_without_rewriting() {
        let msg = br#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","x":{}}}"#;
        let p = peek(msg).unwrap();
        assert_eq!(
            string_member(p.result.unwrap(), "protocolVersion").as_deref(),
            Some("2025-06-18")
        );
    }
}
