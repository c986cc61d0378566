//! Names in the unified endpoint: prefixing, allow-lists and URI templates.
//!
//! Owns the pure rules that decide which server a name or URI belongs to:
//! `<serverID><separator><name>` for tools and prompts, glob allow-lists
//! (`*` matches any run of characters), and matching a URI against an RFC 6570
//! style template (`{var}` is one path segment, `{+var}` anything). It never
//! touches messages or processes.

/// Joins a server id and a backend name into the client-facing name.
pub(crate) fn prefixed(server: &str, separator: &str, name: &str) -> String {
    format!("{server}{separator}{name}")
}

/// Splits a client-facing name into (server id, backend name), if it has the
/// separator. Server ids cannot contain the separator (config validation
/// ensures it), so the first occurrence is the split point.
pub(crate) fn split<'a>(name: &'a str, separator: &str) -> Option<(&'a str, &'a str)> {
    let at = name.find(separator)?;
    let (server, rest) = name.split_at(at);
    Some((server, &rest[separator.len()..])).filter(|(s, n)| !s.is_empty() && !n.is_empty())
}

/// True when `name` matches the glob `pattern` (`*` matches any run of characters).
pub(crate) fn glob_matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// True when `name` is allowed by the allow-list (any pattern matches).
pub(crate) fn allowed(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| glob_matches(p, name))
}

/// True when `uri` can be produced by the URI template `template`.
/// `{var}` (and `{var,other}`) stands for one or more characters other than
/// `/`, `?` and `#`; `{+var}` and `{#var}` for one or more characters of any kind;
/// `{?a,b}`, `{&a}` and `{/a}` for an optional query or path part.
pub(crate) fn template_matches(template: &str, uri: &str) -> bool {
    match template.find('{') {
        None => template == uri,
        Some(open) => {
            let Some(close) = template[open..].find('}').map(|c| open + c) else {
                return template == uri;
            };
            let (literal, expression) = (&template[..open], &template[open + 1..close]);
            let after = &template[close + 1..];
            let Some(rest) = uri.strip_prefix(literal) else {
                return false;
            };
            let (optional, stops): (bool, &[char]) = match expression.chars().next() {
                Some('+' | '#') => (false, &[]),
                Some('?' | '&' | '/' | ';' | '.') => (true, &[]),
                _ => (false, &['/', '?', '#']),
            };
            let min = usize::from(!optional);
            // Try every possible length for this expression (templates are short).
            let mut end = min;
            loop {
                if end > rest.len() {
                    return false;
                }
                if rest.is_char_boundary(end) {
                    let taken = &rest[..end];
                    if taken.contains(stops) {
                        return false;
                    }
                    if template_matches(after, &rest[end..]) {
                        return true;
                    }
                }
                end += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_and_split() {
        assert_eq!(
            prefixed("memory", "___", "read_graph"),
            "memory___read_graph"
        );
        assert_eq!(
            split("memory___read_graph", "___"),
            Some(("memory", "read_graph"))
        );
        assert_eq!(split("a___b___c", "___"), Some(("a", "b___c")));
        assert_eq!(split("plain", "___"), None);
        assert_eq!(split("___x", "___"), None);
        assert_eq!(split("x___", "___"), None);
    }

    #[test]
    fn globs() {
        assert!(glob_matches("*", "anything"));
        assert!(glob_matches("echo", "echo"));
        assert!(!glob_matches("echo", "echo2"));
        assert!(glob_matches("get_*", "get_file"));
        assert!(!glob_matches("get_*", "set_file"));
        assert!(glob_matches("*_file", "get_file"));
        assert!(glob_matches("a*b*c", "axxbyyc"));
        assert!(!glob_matches("a*b*c", "axxbyy"));
        assert!(allowed(&["echo".into(), "pid".into()], "pid"));
        assert!(!allowed(&[], "pid"));
    }

    #[test]
    fn uri_templates() {
        assert!(template_matches("test://static", "test://static"));
        assert!(template_matches(
            "test://template/{id}/data",
            "test://template/42/data"
        ));
        assert!(!template_matches(
            "test://template/{id}/data",
            "test://template/4/2/data"
        ));
        assert!(!template_matches(
            "test://template/{id}/data",
            "test://template//data"
        ));
        assert!(template_matches("file:///{+path}", "file:///a/b/c.txt"));
        assert!(template_matches(
            "demo://resource/{id}",
            "demo://resource/7"
        ));
        assert!(template_matches("search://q{?term,page}", "search://q"));
        assert!(template_matches(
            "search://q{?term,page}",
            "search://q?term=x"
        ));
        assert!(!template_matches("a://{x}", "b://1"));
    }
}
