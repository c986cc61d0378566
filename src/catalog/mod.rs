//! What servers list — tools, prompts, resources, templates — and how the
//! gateway reshapes those lists.
//!
//! Owns the pure rules over list results and names that both endpoints use:
//! reading and rewriting pages (`lists`), prefixing, allow-lists and URI
//! templates (`names`), and a routed `tools/list` answer with the tools a
//! server's allow-list hides removed. It never talks to backends or sessions,
//! and it keeps every item the raw JSON its backend wrote, but for the one
//! member it splices.

pub(crate) mod lists;
pub(crate) mod names;

use bytes::Bytes;

use crate::config::ServerConfig;
use crate::jsonrpc;
use lists::{ListKind, Rewrite};

/// A routed `tools/list` answer with the tools the server's allow-list hides
/// removed (unchanged when it cannot be read).
pub(crate) fn filter_tools(answer: &Bytes, server: &ServerConfig) -> Bytes {
    let rewrite = Rewrite {
        prefix: None,
        allow: Some(&server.tools),
    };
    let filtered = (|| {
        let peek = jsonrpc::peek(answer).ok()?;
        let result = peek.result?;
        let page = lists::read_page(result, ListKind::Tools, &rewrite).ok()?;
        let new_result = lists::replace_items(result, ListKind::Tools, &page).ok()?;
        let range = jsonrpc::range_in(answer, result.get());
        Some(Bytes::from(jsonrpc::splice(
            answer,
            range,
            new_result.as_bytes(),
        )))
    })();
    filtered.unwrap_or_else(|| answer.clone())
}
