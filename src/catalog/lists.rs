//! Rewriting list results: prefixing names, filtering by allow-list, merging
//! pages of several backends, and the gateway's own pagination cursor.
//!
//! Owns the only code that builds new JSON-RPC results out of backend ones.
//! Items are kept as the raw JSON the backend wrote (unknown fields, number
//! forms and key order survive); only a tool's or prompt's `name` member is
//! spliced. It never talks to backends.

use std::borrow::Cow;
use std::collections::HashSet;

use indexmap::IndexMap;
use serde_json::value::RawValue;

use super::names;
use crate::jsonrpc;
use crate::protocol::method;

/// The four list methods the unified endpoint merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListKind {
    Tools,
    Prompts,
    Resources,
    ResourceTemplates,
}

impl ListKind {
    pub(crate) fn from_method(method: &str) -> Option<ListKind> {
        Some(match method {
            method::TOOLS_LIST => ListKind::Tools,
            method::PROMPTS_LIST => ListKind::Prompts,
            method::RESOURCES_LIST => ListKind::Resources,
            method::RESOURCE_TEMPLATES_LIST => ListKind::ResourceTemplates,
            _ => return None,
        })
    }

    pub(crate) fn method(self) -> &'static str {
        match self {
            ListKind::Tools => method::TOOLS_LIST,
            ListKind::Prompts => method::PROMPTS_LIST,
            ListKind::Resources => method::RESOURCES_LIST,
            ListKind::ResourceTemplates => method::RESOURCE_TEMPLATES_LIST,
        }
    }

    /// The member of the result that holds the items.
    pub(crate) fn field(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources => "resources",
            ListKind::ResourceTemplates => "resourceTemplates",
        }
    }

    /// The server capability that says a backend has such items.
    pub(crate) fn capability(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources | ListKind::ResourceTemplates => "resources",
        }
    }
}

/// How one backend's items are changed on their way to the client.
pub(crate) struct Rewrite<'a> {
    /// Prefix names with `<server><separator>` (unified endpoint only).
    pub prefix: Option<(&'a str, &'a str)>,
    /// Tool allow-list (tools only); `None` keeps every item.
    pub allow: Option<&'a [String]>,
}

/// One backend's page after rewriting.
#[derive(Debug, Default)]
pub(crate) struct Page {
    /// Items as raw JSON objects.
    pub items: Vec<String>,
    /// For resources: each item's `uri`; for templates: each `uriTemplate`
    /// (`None` where an item has none); one per item. Empty for tools and
    /// prompts.
    pub uris: Vec<Option<String>>,
    pub next_cursor: Option<String>,
}

/// Why a backend's list result could not be read (the backend is then left
/// out of the merged list, or its answer forwarded as written).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ListResultError {
    #[error("not a list result: {0}")]
    NotAnObject(#[source] serde_json::Error),
    /// The member named by [`ListKind::field`] is missing.
    #[error("the result has no `{0}`")]
    NoItems(&'static str),
    #[error("bad `{field}`: {source}")]
    BadItems {
        field: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// Reads a backend's list result and rewrites its items.
pub(crate) fn read_page(
    result: &RawValue,
    kind: ListKind,
    rewrite: &Rewrite<'_>,
) -> Result<Page, ListResultError> {
    let members: IndexMap<Cow<'_, str>, &RawValue> =
        serde_json::from_str(result.get()).map_err(ListResultError::NotAnObject)?;
    let raw_items = members
        .get(kind.field())
        .ok_or(ListResultError::NoItems(kind.field()))?;
    let items: Vec<&RawValue> =
        serde_json::from_str(raw_items.get()).map_err(|source| ListResultError::BadItems {
            field: kind.field(),
            source,
        })?;
    let next_cursor = members
        .get("nextCursor")
        .and_then(|c| serde_json::from_str::<String>(c.get()).ok());
    let mut page = Page {
        items: Vec::with_capacity(items.len()),
        uris: Vec::new(),
        next_cursor,
    };
    for item in items {
        match kind {
            ListKind::Tools | ListKind::Prompts => {
                let Some(name_raw) = jsonrpc::member(item, "name") else {
                    continue;
                };
                let Ok(name) = serde_json::from_str::<String>(name_raw.get()) else {
                    continue;
                };
                if kind == ListKind::Tools
                    && let Some(allow) = rewrite.allow
                    && !names::allowed(allow, &name)
                {
                    continue;
                }
                match rewrite.prefix {
                    Some((server, separator)) => {
                        let new_name = names::prefixed(server, separator, &name);
                        let json_name =
                            serde_json::to_string(&new_name).expect("strings serialise");
                        let range = jsonrpc::range_in(item.get().as_bytes(), name_raw.get());
                        let spliced =
                            jsonrpc::splice(item.get().as_bytes(), range, json_name.as_bytes());
                        page.items
                            .push(String::from_utf8(spliced).expect("splicing UTF-8 into UTF-8"));
                    }
                    None => page.items.push(item.get().to_owned()),
                }
            }
            ListKind::Resources | ListKind::ResourceTemplates => {
                let key = if kind == ListKind::Resources {
                    "uri"
                } else {
                    "uriTemplate"
                };
                page.uris.push(jsonrpc::string_member(item, key));
                page.items.push(item.get().to_owned());
            }
        }
    }
    Ok(page)
}

/// Adds `page`'s items to `merged`, leaving out a resource (or template)
/// whose URI an earlier page already gave: `seen` holds those. Pages are
/// merged in config order, so the server first in the config keeps a URI
/// two servers claim (the one that serves it, too).
pub(crate) fn merge_page(merged: &mut Vec<String>, seen: &mut HashSet<String>, page: Page) {
    if page.uris.is_empty() {
        merged.extend(page.items);
        return;
    }
    for (item, uri) in page.items.into_iter().zip(page.uris) {
        let new = uri.is_none_or(|uri| seen.insert(uri));
        if new {
            merged.push(item);
        }
    }
}

/// A list result holding `items`, with the gateway's own `nextCursor` if any.
pub(crate) fn merged_result(kind: ListKind, items: &[String], next_cursor: Option<&str>) -> String {
    let mut out = String::with_capacity(64 + items.iter().map(String::len).sum::<usize>());
    out.push_str("{\"");
    out.push_str(kind.field());
    out.push_str("\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(item);
    }
    out.push(']');
    if let Some(cursor) = next_cursor {
        out.push_str(",\"nextCursor\":");
        out.push_str(&serde_json::to_string(cursor).expect("strings serialise"));
    }
    out.push('}');
    out
}

/// The backend result with its items replaced by `page`'s and every other member
/// kept as written (routed mode: the allow-list hides tools, nothing else changes).
pub(crate) fn replace_items(
    result: &RawValue,
    kind: ListKind,
    page: &Page,
) -> Result<String, ListResultError> {
    let members: IndexMap<Cow<'_, str>, &RawValue> =
        serde_json::from_str(result.get()).map_err(ListResultError::NotAnObject)?;
    let mut out = String::with_capacity(result.get().len());
    out.push('{');
    for (i, (key, value)) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(key).expect("strings serialise"));
        out.push(':');
        if key == kind.field() {
            out.push('[');
            out.push_str(&page.items.join(","));
            out.push(']');
        } else {
            out.push_str(value.get());
        }
    }
    out.push('}');
    Ok(out)
}

/// The gateway's pagination cursor: which servers still have pages, and each
/// one's own cursor. Hex of a small JSON document, opaque to clients.
pub(crate) fn encode_cursor(pending: &[(String, String)]) -> String {
    let json = serde_json::to_string(pending).expect("strings serialise");
    json.bytes().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn decode_cursor(cursor: &str) -> Option<Vec<(String, String)>> {
    if !cursor.len().is_multiple_of(2) || cursor.len() > 64 * 1024 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(cursor.get(i..i + 2)?, 16).ok())
        .collect();
    serde_json::from_slice(&bytes?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn tool_names_are_prefixed_and_everything_else_kept() {
        let result = raw(
            r#"{"tools":[{"name":"echo","x-odd":1.50,"inputSchema":{"type":"object"}},{"name":"pid"}],"nextCursor":"c2"}"#,
        );
        let rewrite = Rewrite {
            prefix: Some(("t", "___")),
            allow: None,
        };
        let page = read_page(&result, ListKind::Tools, &rewrite).unwrap();
        assert_eq!(
            page.items,
            vec![
                r#"{"name":"t___echo","x-odd":1.50,"inputSchema":{"type":"object"}}"#.to_owned(),
                r#"{"name":"t___pid"}"#.to_owned()
            ]
        );
        assert_eq!(page.next_cursor.as_deref(), Some("c2"));
        let merged = merged_result(ListKind::Tools, &page.items, Some("abc"));
        assert_eq!(
            merged,
            r#"{"tools":[{"name":"t___echo","x-odd":1.50,"inputSchema":{"type":"object"}},{"name":"t___pid"}],"nextCursor":"abc"}"#
        );
    }

    #[test]
    fn the_allow_list_hides_tools_and_routed_results_keep_other_members() {
        let result = raw(r#"{"tools":[{"name":"echo"},{"name":"crash"}],"_meta":{"k":[1]}}"#);
        let allow = vec!["echo".to_owned()];
        let rewrite = Rewrite {
            prefix: None,
            allow: Some(&allow),
        };
        let page = read_page(&result, ListKind::Tools, &rewrite).unwrap();
        assert_eq!(page.items, vec![r#"{"name":"echo"}"#.to_owned()]);
        assert_eq!(
            replace_items(&result, ListKind::Tools, &page).unwrap(),
            r#"{"tools":[{"name":"echo"}],"_meta":{"k":[1]}}"#
        );
    }

    #[test]
    fn resources_keep_their_uris_and_report_them() {
        let result = raw(r#"{"resources":[{"uri":"test://a","name":"A"}]}"#);
        let rewrite = Rewrite {
            prefix: Some(("t", "___")),
            allow: None,
        };
        let page = read_page(&result, ListKind::Resources, &rewrite).unwrap();
        assert_eq!(
            page.items,
            vec![r#"{"uri":"test://a","name":"A"}"#.to_owned()]
        );
        assert_eq!(page.uris, vec![Some("test://a".to_owned())]);
    }

    #[test]
    fn a_uri_two_pages_give_is_kept_once_from_the_first() {
        let rewrite = Rewrite {
            prefix: None,
            allow: None,
        };
        let first = raw(r#"{"resources":[{"uri":"x://1","name":"a1"},{"name":"no uri"}]}"#);
        let second = raw(
            r#"{"resources":[{"uri":"x://1","name":"b1"},{"uri":"x://2","name":"b2"},{"name":"no uri"}]}"#,
        );
        let (mut merged, mut seen) = (Vec::new(), HashSet::new());
        for page in [first, second] {
            merge_page(
                &mut merged,
                &mut seen,
                read_page(&page, ListKind::Resources, &rewrite).unwrap(),
            );
        }
        assert_eq!(
            merged,
            [
                r#"{"uri":"x://1","name":"a1"}"#,
                r#"{"name":"no uri"}"#,
                r#"{"uri":"x://2","name":"b2"}"#,
                r#"{"name":"no uri"}"#,
            ]
        );
        // Tools have no URIs: nothing is left out.
        let tools = raw(r#"{"tools":[{"name":"t"},{"name":"t"}]}"#);
        let mut merged_tools = Vec::new();
        merge_page(
            &mut merged_tools,
            &mut HashSet::new(),
            read_page(&tools, ListKind::Tools, &rewrite).unwrap(),
        );
        assert_eq!(merged_tools.len(), 2);
    }

    #[test]
    fn unreadable_results_say_what_is_wrong() {
        let rewrite = Rewrite {
            prefix: None,
            allow: None,
        };
        let error = read_page(&raw("[1]"), ListKind::Tools, &rewrite).unwrap_err();
        assert!(
            matches!(error, ListResultError::NotAnObject(_)),
            "{error:?}"
        );
        assert!(
            error.to_string().starts_with("not a list result: "),
            "{error}"
        );
        let error = read_page(&raw(r#"{"prompts":[]}"#), ListKind::Tools, &rewrite).unwrap_err();
        assert_eq!(error.to_string(), "the result has no `tools`");
        let error = read_page(&raw(r#"{"tools":7}"#), ListKind::Tools, &rewrite).unwrap_err();
        assert!(
            matches!(error, ListResultError::BadItems { field: "tools", .. }),
            "{error:?}"
        );
        assert!(std::error::Error::source(&error).is_some());
    }

    #[test]
    fn cursors_round_trip_and_junk_is_refused() {
        let pending = vec![("everything".to_owned(), "Mg==".to_owned())];
        let cursor = encode_cursor(&pending);
        assert_eq!(decode_cursor(&cursor), Some(pending));
        assert_eq!(decode_cursor("zz"), None);
        assert_eq!(decode_cursor("abc"), None);
    }
}
