//! `${VAR}` expansion in the configuration fields that allow it.
//!
//! Owns the expansion grammar: `${NAME}` is replaced by the variable's value,
//! `${NAME:-default}` by `default` when the variable is undefined or empty (as
//! in the shell, and in Claude Code's `.mcp.json`), `$$` is a literal `$`, and
//! an undefined variable without a default is an error naming it. It
//! never decides which fields are expanded (the config loader does) and never
//! logs values, which may be secrets.

/// Where variables come from; the process environment in production, a map in tests.
pub trait VarSource {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl VarSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<S: std::hash::BuildHasher> VarSource for std::collections::HashMap<String, String, S> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Why a value could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error("environment variable `{0}` is not defined")]
    Undefined(String),
    #[error("unterminated `${{` (write `$$` for a literal `$`)")]
    Unterminated,
    #[error("`${{{0}}}` is not a valid variable name")]
    BadName(String),
}

/// Expands every `${NAME}` in `text`.
pub fn expand(text: &str, vars: &dyn VarSource) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail.find('}').ok_or(ExpandError::Unterminated)?;
            let (name, default) = match tail[..end].split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (&tail[..end], None),
            };
            let valid = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(ExpandError::BadName(name.to_owned()));
            }
            let value = match (vars.var(name), default) {
                (Some(value), Some(default)) if value.is_empty() => default.to_owned(),
                (Some(value), _) => value,
                (None, Some(default)) => default.to_owned(),
                (None, None) => return Err(ExpandError::Undefined(name.to_owned())),
            };
            out.push_str(&value);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars() -> HashMap<String, String> {
        HashMap::from([
            ("HOME".to_owned(), "/home/me".to_owned()),
            ("TOKEN".to_owned(), "s3cret".to_owned()),
        ])
    }

    #[test]
    fn expands_defined_variables() {
        assert_eq!(expand("${HOME}/x", &vars()).unwrap(), "/home/me/x");
        assert_eq!(
            expand("a${TOKEN}b${HOME}", &vars()).unwrap(),
            "as3cretb/home/me"
        );
        assert_eq!(expand("no vars", &vars()).unwrap(), "no vars");
    }

    #[test]
    fn a_default_stands_in_for_an_undefined_or_empty_variable() {
        let mut vars = vars();
        vars.insert("EMPTY".into(), String::new());
        assert_eq!(expand("${MISSING:-/tmp}", &vars).unwrap(), "/tmp");
        assert_eq!(expand("${EMPTY:-x}", &vars).unwrap(), "x");
        assert_eq!(expand("${HOME:-x}", &vars).unwrap(), "/home/me");
        assert_eq!(expand("${MISSING:-}", &vars).unwrap(), "");
    }

    #[test]
    fn dollar_rules() {
        assert_eq!(expand("cost $$5", &vars()).unwrap(), "cost $5");
        assert_eq!(expand("lone $ sign", &vars()).unwrap(), "lone $ sign");
        assert_eq!(expand("$HOME", &vars()).unwrap(), "$HOME");
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(
            expand("${MISSING}", &vars()),
            Err(ExpandError::Undefined("MISSING".into()))
        );
        assert_eq!(expand("${HOME", &vars()), Err(ExpandError::Unterminated));
        assert_eq!(
            expand("${1X}", &vars()),
            Err(ExpandError::BadName("1X".into()))
        );
    }
}
