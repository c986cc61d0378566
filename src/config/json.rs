//! The JSON server lists other MCP tools keep, read as mcpgate servers.
//!
//! Owns recognising the dialect (the `mcpServers` object of Claude Desktop,
//! Claude Code's `.mcp.json`, Cursor and Windsurf; VS Code's `servers`; the
//! agentic-workflows gateway JSON, `mcpServers` beside a `gateway` object)
//! and writing each stdio entry as a `[servers.<id>]` TOML table, with
//! comments saying what was mapped and what was left out. An entry mcpgate
//! cannot serve (a remote `url`, a container image, a disabled entry, a VS
//! Code input) is left out with a note naming it and why. It never
//! validates the result (the TOML loader does, as for any file), never reads
//! a file itself, and never writes a secret into a note.

use std::fmt::Write as _;

use indexmap::IndexMap;
use serde_json::Value;
use serde_json::value::RawValue;

/// A JSON object with its keys in the file's order (servers keep the order
/// their file gives them; the unified endpoint goes by config order).
type Object = IndexMap<String, Value>;

/// An object of the file whose members keep the file's order, each read
/// later (a `serde_json::Value` object would sort them).
type Ordered = IndexMap<String, Box<RawValue>>;

/// Which tool's format a JSON config is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `{"mcpServers": {...}}`: Claude Desktop, Claude Code, Cursor, Windsurf.
    McpServers,
    /// `{"servers": {...}}`: VS Code's `mcp.json`.
    VsCode,
    /// `{"mcpServers": {...}, "gateway": {...}}`: the MCP gateway config of
    /// GitHub Agentic Workflows.
    AgenticWorkflows,
}

impl Dialect {
    pub fn describe(self) -> &'static str {
        match self {
            Dialect::McpServers => {
                "`mcpServers` (Claude Desktop, Claude Code's .mcp.json, Cursor, Windsurf)"
            }
            Dialect::VsCode => "`servers` (VS Code's mcp.json)",
            Dialect::AgenticWorkflows => "`mcpServers` with `gateway` (GitHub Agentic Workflows)",
        }
    }
}

/// A JSON config as mcpgate TOML.
#[derive(Debug, Clone)]
pub struct Translated {
    pub dialect: Dialect,
    /// `key = value` lines for `[gateway]` (agentic-workflows only).
    pub gateway: Vec<String>,
    /// The `[servers.<id>]` tables, each after its comment lines.
    pub servers: String,
    /// Entries and keys left out, one sentence each.
    pub notes: Vec<String>,
}

/// Why a JSON config cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum JsonConfigError {
    #[error("not valid JSON: {0}")]
    Syntax(#[from] serde_json::Error),
    #[error(
        "neither an `mcpServers` nor a `servers` object at the top (the formats read are Claude Desktop's, Claude Code's, Cursor's and Windsurf's `mcpServers`, VS Code's `servers`, and the agentic-workflows gateway JSON)"
    )]
    NoServers,
}

/// Keys of an entry that mean nothing to mcpgate, left out without a note.
const CLIENT_ONLY_KEYS: [&str; 9] = [
    "alwaysAllow",
    "autoApprove",
    "description",
    "disabledTools",
    "timeout",
    "title",
    "transport",
    "trust",
    "tools",
];

/// Reads `text` (a JSON config in one of the [`Dialect`]s) as mcpgate TOML.
pub fn translate(text: &str) -> Result<Translated, JsonConfigError> {
    let root: Ordered = serde_json::from_str(text)?;
    let object = |key: &str| -> Option<Ordered> { serde_json::from_str(root.get(key)?.get()).ok() };
    let (dialect, entries) = match (object("mcpServers"), object("servers")) {
        (Some(entries), _) if root.contains_key("gateway") => (Dialect::AgenticWorkflows, entries),
        (Some(entries), _) => (Dialect::McpServers, entries),
        (None, Some(entries)) => (Dialect::VsCode, entries),
        _ => return Err(JsonConfigError::NoServers),
    };
    let mut out = Translated {
        dialect,
        gateway: Vec::new(),
        servers: String::new(),
        notes: Vec::new(),
    };
    if let Some(gateway) = root
        .get("gateway")
        .and_then(|g| serde_json::from_str::<Object>(g.get()).ok())
    {
        gateway_settings(&gateway, &mut out);
    }
    for (id, entry) in &entries {
        let entry = serde_json::from_str::<Object>(entry.get()).ok();
        match server_table(dialect, id, entry.as_ref()) {
            Ok(table) => out.servers.push_str(&table),
            Err(why) => out.notes.push(format!("server `{id}` is left out: {why}")),
        }
    }
    Ok(out)
}

/// The agentic-workflows `gateway` object: `port` and `apiKey` map to
/// `listen` (on loopback: `--listen` exposes it) and an API key; the rest
/// is noted as left out.
fn gateway_settings(gateway: &Object, out: &mut Translated) {
    for (key, value) in gateway {
        match (key.as_str(), value) {
            ("port", Value::Number(port)) => out
                .gateway
                .push(format!("listen = {}", quoted(&format!("127.0.0.1:{port}")))),
            ("apiKey", Value::String(api_key)) => out
                .gateway
                .push(format!("api_keys = {{ gateway = {} }}", quoted(api_key))),
            ("startupTimeout", Value::Number(seconds)) => {
                out.gateway.push(format!("startup_timeout = {seconds}"));
            }
            ("toolTimeout", Value::Number(seconds)) => {
                out.gateway.push(format!("tool_timeout = {seconds}"));
            }
            _ => out.notes.push(format!(
                "gateway key `{key}` is left out (mcpgate's own settings go in its TOML)"
            )),
        }
    }
}

/// One entry as a `[servers.<id>]` table; `Err` says why mcpgate cannot serve it.
fn server_table(dialect: Dialect, id: &str, entry: Option<&Object>) -> Result<String, String> {
    let Some(entry) = entry else {
        return Err("it is not an object".into());
    };
    if entry.get("disabled") == Some(&Value::Bool(true)) {
        return Err("it is disabled (`\"disabled\": true`)".into());
    }
    if let Some(url) = entry.get("url").or_else(|| entry.get("serverUrl")) {
        // Without its query, which may hold a token.
        let shown = url.as_str().unwrap_or("?").split('?').next().unwrap_or("?");
        return Err(format!(
            "it is a remote server ({shown}); mcpgate serves stdio servers, and a client can reach a remote one directly"
        ));
    }
    match entry.get("type").and_then(Value::as_str) {
        None | Some("stdio" | "local") => {}
        Some(other) => {
            return Err(format!(
                "its type `{other}` is not a stdio server (\"stdio\" or \"local\")"
            ));
        }
    }
    if let Some(image) = entry.get("container") {
        let image = image.as_str().unwrap_or("?");
        return Err(format!(
            "it runs a container ({image}); write it as a command instead, e.g. command = \"docker\", args = [\"run\", \"-i\", \"--rm\", \"{image}\"] (stopping the docker client closes the container's stdin; a container that ignores that outlives it)"
        ));
    }
    let command = match entry.get("command") {
        Some(Value::String(command)) => command,
        _ => return Err("it has no `command`".into()),
    };
    let strings = |key: &str| -> Result<Vec<String>, String> {
        match entry.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => variables(dialect, s),
                    other => Err(format!("`{key}` holds {other}, not a string")),
                })
                .collect(),
            Some(_) => Err(format!("`{key}` is not an array of strings")),
        }
    };
    let mut table = String::new();
    let _ = writeln!(table, "\n[servers.{}]", toml_key(id));
    let _ = writeln!(table, "command = {}", quoted(&variables(dialect, command)?));
    let args = strings("args")?;
    if !args.is_empty() {
        let items: Vec<String> = args.iter().map(|a| quoted(a)).collect();
        let _ = writeln!(table, "args = [{}]", items.join(", "));
    }
    if let Some(env) = entry.get("env") {
        let Value::Object(env) = env else {
            return Err("`env` is not an object".into());
        };
        let mut pairs = Vec::new();
        for (name, value) in env {
            let Value::String(value) = value else {
                return Err(format!("`env.{name}` is not a string"));
            };
            pairs.push(format!(
                "{} = {}",
                toml_key(name),
                quoted(&variables(dialect, value)?)
            ));
        }
        let _ = writeln!(table, "env = {{ {} }}", pairs.join(", "));
    }
    if let Some(cwd) = entry.get("cwd") {
        let Value::String(cwd) = cwd else {
            return Err("`cwd` is not a string".into());
        };
        let _ = writeln!(
            table,
            "working_directory = {}",
            quoted(&variables(dialect, cwd)?)
        );
    }
    if entry.contains_key("envFile") {
        return Err(
            "it reads `envFile`, which mcpgate does not; put the variables in `env`".into(),
        );
    }
    let known = [
        "command",
        "args",
        "env",
        "cwd",
        "type",
        "disabled",
        "url",
        "serverUrl",
        "container",
    ];
    let left: Vec<&str> = entry
        .keys()
        .map(String::as_str)
        .filter(|k| !known.contains(k) && !CLIENT_ONLY_KEYS.contains(k))
        .collect();
    if !left.is_empty() {
        let _ = writeln!(
            table,
            "# left out (no mcpgate equivalent): {}",
            left.join(", ")
        );
    }
    Ok(table)
}

/// A value's variables in mcpgate's syntax: VS Code's `${env:NAME}` becomes
/// `${NAME}`; its other variables (`${input:...}`, `${workspaceFolder}`, ...)
/// name things only VS Code knows, so an entry using them is left out.
fn variables(dialect: Dialect, value: &str) -> Result<String, String> {
    if dialect != Dialect::VsCode {
        return Ok(value.to_owned());
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 2..];
        let Some(end) = tail.find('}') else {
            out.push_str(&rest[at..]);
            rest = "";
            break;
        };
        let inner = &tail[..end];
        match inner.strip_prefix("env:") {
            Some(name) => {
                let _ = write!(out, "${{{name}}}");
            }
            None => {
                return Err(format!(
                    "it uses `${{{inner}}}`, a variable only VS Code can fill in"
                ));
            }
        }
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A TOML string.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// A TOML key: bare when it can be, quoted otherwise (a `.` would nest it).
fn toml_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if bare { key.to_owned() } else { quoted(key) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claude_desktops_stdio_entries_become_server_tables() {
        let t = translate(
            r#"{"mcpServers": {
                "filesystem": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "/Users/me/Desktop"]},
                "memory": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-memory"], "env": {"MEMORY_FILE_PATH": "/tmp/m.json"}, "cwd": "/tmp", "autoApprove": ["x"]}
            }}"#,
        )
        .unwrap();
        assert_eq!(t.dialect, Dialect::McpServers);
        assert!(t.notes.is_empty(), "{:?}", t.notes);
        assert!(t.servers.contains("[servers.filesystem]\ncommand = \"npx\"\nargs = [\"-y\", \"@modelcontextprotocol/server-filesystem\", \"/Users/me/Desktop\"]"), "{}", t.servers);
        assert!(
            t.servers
                .contains("env = { MEMORY_FILE_PATH = \"/tmp/m.json\" }")
        );
        assert!(t.servers.contains("working_directory = \"/tmp\""));
        let parsed: toml::Table = toml::from_str(&t.servers).unwrap();
        assert_eq!(parsed["servers"].as_table().unwrap().len(), 2);
    }

    #[test]
    fn what_cannot_be_served_is_left_out_naming_the_entry() {
        let t = translate(
            r#"{"mcpServers": {
                "remote": {"type": "http", "url": "https://example.com/mcp"},
                "sse": {"url": "https://example.com/sse"},
                "boxed": {"type": "stdio", "container": "ghcr.io/github/github-mcp-server"},
                "off": {"command": "x", "disabled": true},
                "nocommand": {"args": []},
                "ok": {"command": "x", "type": "stdio", "extra": 1}
            }}"#,
        )
        .unwrap();
        let notes = t.notes.join("\n");
        for id in ["remote", "sse", "boxed", "off", "nocommand"] {
            assert!(
                notes.contains(&format!("server `{id}` is left out")),
                "{notes}"
            );
        }
        assert!(
            notes.contains("remote server (https://example.com/mcp)"),
            "{notes}"
        );
        assert!(notes.contains("docker"), "{notes}");
        assert!(t.servers.contains("[servers.ok]"));
        assert!(
            t.servers
                .contains("# left out (no mcpgate equivalent): extra")
        );
    }

    #[test]
    fn vs_code_variables_become_mcpgates_or_leave_the_entry_out() {
        let t = translate(
            r#"{"inputs": [], "servers": {
                "time": {"type": "stdio", "command": "uvx", "args": ["mcp-server-time"], "env": {"TZ": "${env:TZ}"}},
                "asks": {"type": "stdio", "command": "x", "env": {"KEY": "${input:api-key}"}}
            }}"#,
        )
        .unwrap();
        assert_eq!(t.dialect, Dialect::VsCode);
        assert!(
            t.servers.contains("env = { TZ = \"${TZ}\" }"),
            "{}",
            t.servers
        );
        assert!(t.notes[0].contains("`asks`") && t.notes[0].contains("${input:api-key}"));
    }

    #[test]
    fn the_agentic_workflows_gateway_object_maps_port_and_key() {
        let t = translate(
            r#"{"mcpServers": {"gh": {"type": "local", "command": "gh", "args": ["aw", "mcp-server"]}},
                "gateway": {"port": 8080, "apiKey": "a-key-of-sixteen-chars", "domain": "localhost"}}"#,
        )
        .unwrap();
        assert_eq!(t.dialect, Dialect::AgenticWorkflows);
        assert_eq!(
            t.gateway,
            [
                "listen = \"127.0.0.1:8080\"",
                "api_keys = { gateway = \"a-key-of-sixteen-chars\" }"
            ]
        );
        assert!(t.notes[0].contains("`domain`"));
    }

    #[test]
    fn ids_that_toml_would_nest_or_refuse_are_quoted() {
        let t = translate(
            r#"{"mcpServers": {"my.server": {"command": "x"}, "a b": {"command": "y"}}}"#,
        )
        .unwrap();
        let parsed: toml::Table = toml::from_str(&t.servers).unwrap();
        let servers = parsed["servers"].as_table().unwrap();
        assert!(servers.contains_key("my.server") && servers.contains_key("a b"));
    }

    #[test]
    fn servers_keep_the_files_order() {
        let t =
            translate(r#"{"mcpServers": {"zeta": {"command": "z"}, "alpha": {"command": "a"}}}"#)
                .unwrap();
        let zeta = t.servers.find("[servers.zeta]").unwrap();
        assert!(zeta < t.servers.find("[servers.alpha]").unwrap());
    }

    #[test]
    fn a_file_with_no_server_list_is_refused() {
        assert!(matches!(
            translate(r#"{"other": {}}"#),
            Err(JsonConfigError::NoServers)
        ));
        assert!(matches!(translate("{"), Err(JsonConfigError::Syntax(_))));
    }
}
