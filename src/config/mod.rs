//! Configuration: the TOML schema, its validation, and the checked form the rest
//! of the gateway uses.
//!
//! Owns turning a file into a [`Config`]: unknown keys are rejected, durations
//! and sizes are parsed, `${VAR}` is expanded in `command`, `args`, `env` values
//! and `working_directory`, and every error names the file, line and key. It
//! also prints the normalised config for `mcpgate check`, with secrets
//! redacted. It never spawns, listens or logs secret values.

mod expand;
mod json;
mod units;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use serde::Deserialize;
use toml::Spanned;

pub use expand::{ExpandError, ProcessEnv, VarSource, expand};
pub use json::{Dialect, JsonConfigError, Translated, translate};
pub use units::{
    ByteSize, ConfigDuration, DurationError, SizeError, format_duration, format_size,
    parse_duration,
};

/// Largest value of the counting settings (sessions, requests, events).
pub const MAX_COUNT: usize = 1_000_000;

/// Largest `worker_threads`.
pub const MAX_WORKER_THREADS: usize = 1024;

/// The gateway's runtime threads unless configured: half the CPUs it may
/// use, at least one. The backends, its children, need the other half: on 2
/// CPUs one thread served a request with 15-27% less CPU than two
/// (docs/PERFORMANCE.md).
pub fn default_worker_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// Largest `warm_spares` and `max_spares`.
pub const MAX_SPARES: usize = 1000;

/// Shortest API key accepted (a guessable key is no key).
pub const MIN_API_KEY_LEN: usize = 16;

/// Where `mcpgate` looks for its config when `--config` is not given, in order.
pub const DEFAULT_CONFIG_PATHS: [&str; 2] = ["./mcpgate.toml", "/etc/mcpgate/mcpgate.toml"];

/// Variables a backend gets from the host when `inherit_env` is false.
pub const MINIMAL_ENV: [&str; 5] = ["PATH", "HOME", "LANG", "TMPDIR", "USER"];

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub source: PathBuf,
    pub gateway: GatewayConfig,
    /// Servers in the order the file lists them.
    pub servers: Vec<Arc<ServerConfig>>,
    /// What a JSON server list had that mcpgate left out, one sentence each
    /// (logged as warnings at start and at each reload).
    pub notes: Vec<String>,
}

/// `[gateway]`: settings of the gateway as a whole.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    /// Address to listen on; `--listen` overrides it.
    pub listen: SocketAddr,
    /// A session with no client request for this long is ended.
    pub session_idle_timeout: Duration,
    /// How often idle sessions are looked for.
    pub cleanup_interval: Duration,
    /// Spawn plus `initialize` handshake of one backend process.
    pub startup_timeout: Duration,
    /// One request to a backend, from send to answer.
    pub tool_timeout: Duration,
    /// Largest HTTP request body accepted (413 beyond).
    pub max_body_bytes: u64,
    /// Largest single message a backend may write on stdout.
    pub max_message_bytes: u64,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_timeout: Duration,
    /// How long a stopping backend gets after stdin is closed, and again after SIGTERM.
    pub stop_grace: Duration,
    /// Transport failures in a row that evict a backend connection.
    pub max_consecutive_errors: u32,
    /// How long requests answered "not ready" are retried.
    pub ready_timeout: Duration,
    /// Substrings of a JSON-RPC error message that mean "not ready yet, retry".
    pub not_ready_patterns: Vec<String>,
    /// Sessions beyond this get 503 with Retry-After.
    pub max_sessions: usize,
    /// Crashes of one session's backend within `crash_loop_window` after which it
    /// is not restarted until the window has passed.
    pub crash_loop_restarts: u32,
    pub crash_loop_window: Duration,
    /// How often an idle SSE stream gets a keep-alive comment (a vanished client
    /// shows up as a failed write).
    pub sse_keepalive: Duration,
    /// Unified endpoint: tool and prompt names are `<serverID><tool_separator><name>`.
    pub tool_separator: String,
    /// Origins (`scheme://host[:port]`) allowed besides loopback ones on a
    /// loopback listen address; a request with any other `Origin` gets 403.
    pub allowed_origins: Vec<String>,
    /// Replayable SSE events kept per session for `Last-Event-ID` resumes.
    pub sse_replay_events: usize,
    /// API keys by name (`Authorization: Bearer <key>`); empty means no auth.
    pub api_keys: Vec<(String, String)>,
    /// The key of the admin API (`Authorization: Bearer <admin_key>` on
    /// `/admin/...`); without one the admin API is off.
    pub admin_key: Option<String>,
    /// Serve a non-loopback address without API keys anyway.
    pub allow_unauthenticated: bool,
    /// Without API keys: the request header that names a stateless (2026-07-28)
    /// caller, whose process it then reaches. `None`: all such callers share one.
    pub caller_header: Option<String>,
    /// How long a stateless call waits for the client's retry with its input
    /// (an `InputRequiredResult`), and how long its `requestState` is valid.
    pub input_required_timeout: Duration,
    /// Reload the config when the file changes (as on SIGHUP).
    pub watch_config: bool,
    /// Append one JSON line per client request to this file.
    pub audit_log: Option<PathBuf>,
    /// Put each request's `params` in the audit log too (they may hold secrets).
    pub audit_payloads: bool,
    /// Put before every session id this gateway mints (`<tag>.<random>`), so
    /// that a load balancer can route a session to the instance holding it.
    pub instance_tag: Option<String>,
    /// Largest request head (request line and headers) accepted.
    pub max_header_bytes: u64,
    /// How long a client may take to send a request's head.
    pub header_read_timeout: Duration,
    /// How long a request body may go without a byte arriving (408 beyond).
    pub body_read_timeout: Duration,
    /// How long a whole request body may take to arrive (408 beyond).
    pub body_read_total_timeout: Duration,
    /// Client connections open at once (TLS handshakes included); more get 503.
    pub max_connections: usize,
    /// Request-body bytes held at once over all requests; a body that would
    /// take the total past it gets 503.
    pub max_buffered_body_bytes: u64,
    /// Requests of one session being handled at once; more get 429.
    pub max_in_flight_per_session: usize,
    /// Serve HTTPS with this certificate chain and key (PEM files).
    pub tls: Option<TlsFiles>,
    /// Warm spares of each per-session server that sets none itself.
    pub warm_spares: usize,
    /// The most spare processes, over all servers, at any time.
    pub max_spares: usize,
    /// A spare older than this is stopped and replaced (default of the servers).
    pub spare_max_age: Duration,
    /// JSON files (`mcpServers` and the like) whose servers are served
    /// beside the TOML's own, as resolved against the TOML file's directory.
    pub servers_from: Vec<PathBuf>,
    /// Threads of the gateway's async runtime.
    pub worker_threads: usize,
    /// `[gateway.oauth]`: accept access tokens of an authorization server.
    pub oauth: Option<OAuthConfig>,
}

/// `[gateway.oauth]`: the gateway as an OAuth 2.1 resource server. A request
/// without a valid API key must carry an access token (a JWT) of `issuer`
/// for `resource`; its `caller_claim` names the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct OAuthConfig {
    /// The authorization server: the token's `iss`, exactly.
    pub issuer: String,
    /// This gateway's resource identifier (RFC 8707), named in its protected
    /// resource metadata.
    pub resource: String,
    /// The `aud` values accepted: `resource` and any others configured.
    pub audiences: Vec<String>,
    /// Where the signing keys are; `None`: from the issuer's metadata.
    pub jwks_url: Option<String>,
    /// Scopes every request needs.
    pub scopes: Vec<String>,
    /// The claim that names the caller.
    pub caller_claim: String,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// Longest wait for the issuer's metadata or keys.
    pub fetch_timeout: Duration,
    /// The keys are fetched again at most once per this (an unknown `kid`
    /// asks for a fetch).
    pub jwks_refresh_interval: Duration,
}

/// The PEM files of the gateway's own TLS certificate.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[servers.<id>]`: one stdio backend.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// The id in `/mcp/<id>`.
    pub id: String,
    pub command: String,
    pub args: Vec<String>,
    /// `command`, `args` and `working_directory` as written, before `${VAR}`
    /// expansion: what `mcpgate check` prints (an expanded value may be a secret).
    pub written: WrittenCommand,
    /// Configured variables, already expanded; pass-through entries hold the
    /// host's value read at load time (`None` when the host has none).
    pub env: Vec<(String, EnvValue)>,
    /// Give the backend the gateway's whole environment.
    pub inherit_env: bool,
    /// One process per session, or one shared by all sessions.
    pub session_mode: SessionMode,
    /// The Linux scheduling policy the backend's process tree runs under.
    pub scheduling: Scheduling,
    /// Which protocol generation the backend speaks, or how to find out.
    pub era: EraSetting,
    /// Tool allow-list (globs; `*` matches any run of characters). Other tools
    /// are hidden from lists and refused, on both endpoints.
    pub tools: Vec<String>,
    pub working_directory: Option<PathBuf>,
    pub startup_timeout: Duration,
    pub tool_timeout: Duration,
    pub session_idle_timeout: Duration,
    pub ready_timeout: Duration,
    pub not_ready_patterns: Vec<String>,
    /// Copied from `[gateway] stop_grace`: how long each step of stopping the
    /// backend's process tree waits.
    pub stop_grace: Duration,
    /// Copied from `[gateway]`.
    pub max_consecutive_errors: u32,
    /// Copied from `[gateway]`.
    pub crash_loop_restarts: u32,
    /// Copied from `[gateway]`.
    pub crash_loop_window: Duration,
    /// Processes kept started ahead of any session, for new sessions to take.
    pub warm_spares: usize,
    /// How far a spare is started ahead.
    pub warm: Warmth,
    /// A spare older than this is stopped and replaced.
    pub spare_max_age: Duration,
    /// OAuth scopes a caller's token needs to reach this server (besides
    /// `[gateway.oauth] scopes`); API-key callers reach it regardless.
    pub oauth_scopes: Vec<String>,
}

/// The `warm` key: how far a warm spare is started before a session takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Warmth {
    /// The process is spawned and has answered a `ping`; the session's own
    /// `initialize` is its handshake (the backend sees the client's
    /// capabilities and `clientInfo`).
    #[default]
    Started,
    /// The process has also run the handshake, with the gateway's own
    /// `initialize`; a session's `initialize` is answered from its result.
    Initialized,
}

impl Warmth {
    /// The value as the config file writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Warmth::Started => "started",
            Warmth::Initialized => "initialized",
        }
    }
}

/// A server's command as the config file writes it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WrittenCommand {
    pub command: String,
    pub args: Vec<String>,
    pub working_directory: Option<String>,
}

/// How a server's processes map to client sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionMode {
    /// Each client session gets its own process (the default).
    #[default]
    PerSession,
    /// One process serves every session; ids are rewritten so that sessions
    /// never see each other's answers.
    Shared,
}

impl SessionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionMode::PerSession => "per-session",
            SessionMode::Shared => "shared",
        }
    }
}

/// The `era` key: which of the protocol's eras ([`crate::protocol::Era`]) a
/// server's backend processes speak, or `auto` to find out for each process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EraSetting {
    /// `legacy`: the session era (`initialize`), the default: what nearly
    /// every stdio server speaks.
    #[default]
    #[serde(rename = "legacy")]
    Session,
    /// `modern`: 2026-07-28 (`server/discover`, `_meta` on every request).
    #[serde(rename = "modern")]
    Stateless,
    /// Each new process is asked `server/discover` first; any answer but a
    /// discover result naming a 2026 version, or silence for a short while,
    /// means the session era, and `initialize` follows on the same process.
    Auto,
}

impl EraSetting {
    /// The value as the config file writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            EraSetting::Session => "legacy",
            EraSetting::Stateless => "modern",
            EraSetting::Auto => "auto",
        }
    }
}

/// The scheduling policy of a backend's process tree (`sched(7)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheduling {
    /// `SCHED_BATCH` (the default): the backend gets its full share of CPU,
    /// but waking it (the gateway writing a request to it) does not preempt
    /// the gateway thread that woke it, so the gateway finishes the work it
    /// has in hand first. Measured in docs/PERFORMANCE.md.
    #[default]
    Batch,
    /// `SCHED_OTHER`, the policy the gateway itself runs under.
    Normal,
}

impl Scheduling {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheduling::Batch => "batch",
            Scheduling::Normal => "normal",
        }
    }
}

/// One configured environment variable of a backend.
#[derive(Clone, PartialEq, Eq)]
pub enum EnvValue {
    /// A value from the config (after `${VAR}` expansion).
    Set(String),
    /// `""` in the config: the host's value, if it has one.
    PassThrough(Option<String>),
}

impl fmt::Debug for EnvValue {
    // Values may be secrets: Debug never shows them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvValue::Set(_) => f.write_str("Set(<redacted>)"),
            EnvValue::PassThrough(Some(_)) => f.write_str("PassThrough(<redacted>)"),
            EnvValue::PassThrough(None) => f.write_str("PassThrough(unset)"),
        }
    }
}

impl ServerConfig {
    /// True when the allow-list hides some tools (anything but `["*"]`).
    pub fn filters_tools(&self) -> bool {
        self.tools.iter().any(|t| t != "*")
    }

    /// The environment a backend process starts with.
    pub fn child_env(&self) -> Vec<(String, String)> {
        let mut env: BTreeMap<String, String> = if self.inherit_env {
            std::env::vars().collect()
        } else {
            MINIMAL_ENV
                .iter()
                .filter_map(|name| std::env::var(name).ok().map(|v| ((*name).to_owned(), v)))
                .collect()
        };
        for (name, value) in &self.env {
            match value {
                EnvValue::Set(v) | EnvValue::PassThrough(Some(v)) => {
                    env.insert(name.clone(), v.clone());
                }
                EnvValue::PassThrough(None) => {
                    env.remove(name);
                }
            }
        }
        env.into_iter().collect()
    }
}

/// A config that could not be loaded, with where the problem is.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line and column, when the problem has a place in the file.
    pub position: Option<(usize, usize)>,
    /// The key concerned, as a dotted path where known.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        f.write_str(": ")?;
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// No `--config` was given and none of [`DEFAULT_CONFIG_PATHS`] exists.
#[derive(Debug, thiserror::Error)]
#[error(
    "no config file given and none found (looked for {}); pass --config FILE",
    DEFAULT_CONFIG_PATHS.join(" and ")
)]
pub struct ConfigNotFound;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    gateway: RawGateway,
    #[serde(default)]
    servers: IndexMap<String, Spanned<RawServer>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    listen: Option<Spanned<String>>,
    session_idle_timeout: Option<ConfigDuration>,
    cleanup_interval: Option<ConfigDuration>,
    startup_timeout: Option<ConfigDuration>,
    tool_timeout: Option<ConfigDuration>,
    max_body_bytes: Option<ByteSize>,
    max_message_bytes: Option<ByteSize>,
    shutdown_timeout: Option<ConfigDuration>,
    stop_grace: Option<ConfigDuration>,
    max_consecutive_errors: Option<u32>,
    ready_timeout: Option<ConfigDuration>,
    not_ready_patterns: Option<Vec<String>>,
    max_sessions: Option<usize>,
    crash_loop_restarts: Option<u32>,
    crash_loop_window: Option<ConfigDuration>,
    sse_keepalive: Option<ConfigDuration>,
    tool_separator: Option<Spanned<String>>,
    allowed_origins: Option<Vec<String>>,
    sse_replay_events: Option<usize>,
    #[serde(default)]
    api_keys: IndexMap<String, Spanned<String>>,
    admin_key: Option<Spanned<String>>,
    #[serde(default)]
    allow_unauthenticated: bool,
    caller_header: Option<Spanned<String>>,
    input_required_timeout: Option<ConfigDuration>,
    #[serde(default)]
    watch_config: bool,
    instance_tag: Option<Spanned<String>>,
    audit_log: Option<Spanned<String>>,
    #[serde(default)]
    audit_payloads: bool,
    max_header_bytes: Option<ByteSize>,
    header_read_timeout: Option<ConfigDuration>,
    body_read_timeout: Option<ConfigDuration>,
    body_read_total_timeout: Option<ConfigDuration>,
    max_connections: Option<usize>,
    max_buffered_body_bytes: Option<ByteSize>,
    max_in_flight_per_session: Option<usize>,
    tls_cert: Option<Spanned<String>>,
    tls_key: Option<Spanned<String>>,
    warm_spares: Option<usize>,
    max_spares: Option<usize>,
    spare_max_age: Option<ConfigDuration>,
    #[serde(default)]
    servers_from: Vec<String>,
    worker_threads: Option<usize>,
    oauth: Option<Spanned<RawOAuth>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOAuth {
    issuer: Spanned<String>,
    resource: Spanned<String>,
    #[serde(default)]
    audiences: Vec<Spanned<String>>,
    jwks_url: Option<Spanned<String>>,
    #[serde(default)]
    scopes: Vec<Spanned<String>>,
    caller_claim: Option<Spanned<String>>,
    leeway: Option<ConfigDuration>,
    fetch_timeout: Option<ConfigDuration>,
    jwks_refresh_interval: Option<ConfigDuration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    command: Spanned<String>,
    #[serde(default)]
    args: Vec<Spanned<String>>,
    #[serde(default)]
    env: IndexMap<String, Spanned<String>>,
    #[serde(default)]
    inherit_env: bool,
    #[serde(default)]
    session_mode: SessionMode,
    #[serde(default)]
    scheduling: Scheduling,
    #[serde(default)]
    era: EraSetting,
    tools: Option<Vec<String>>,
    working_directory: Option<Spanned<String>>,
    startup_timeout: Option<ConfigDuration>,
    tool_timeout: Option<ConfigDuration>,
    session_idle_timeout: Option<ConfigDuration>,
    ready_timeout: Option<ConfigDuration>,
    not_ready_patterns: Option<Vec<String>>,
    warm_spares: Option<Spanned<usize>>,
    warm: Option<Spanned<Warmth>>,
    spare_max_age: Option<ConfigDuration>,
    #[serde(default)]
    oauth_scopes: Vec<Spanned<String>>,
}

/// The "not ready" answer Serena gives right after its handshake.
pub const DEFAULT_NOT_READY_PATTERN: &str = "method is invalid during session initialization";

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            session_idle_timeout: Duration::from_secs(30 * 60),
            cleanup_interval: Duration::from_secs(60),
            startup_timeout: Duration::from_secs(60),
            tool_timeout: Duration::from_secs(120),
            max_body_bytes: 4 << 20,
            max_message_bytes: 16 << 20,
            shutdown_timeout: Duration::from_secs(10),
            stop_grace: Duration::from_secs(2),
            max_consecutive_errors: 10,
            ready_timeout: Duration::from_secs(60),
            not_ready_patterns: vec![DEFAULT_NOT_READY_PATTERN.to_owned()],
            max_sessions: 1000,
            crash_loop_restarts: 5,
            crash_loop_window: Duration::from_secs(60),
            sse_keepalive: Duration::from_secs(15),
            tool_separator: "___".to_owned(),
            allowed_origins: Vec::new(),
            sse_replay_events: 256,
            api_keys: Vec::new(),
            admin_key: None,
            allow_unauthenticated: false,
            caller_header: None,
            input_required_timeout: Duration::from_secs(600),
            watch_config: false,
            instance_tag: None,
            audit_log: None,
            audit_payloads: false,
            max_header_bytes: 16 << 10,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            body_read_total_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_buffered_body_bytes: 256 << 20,
            max_in_flight_per_session: 64,
            tls: None,
            warm_spares: 0,
            max_spares: 16,
            spare_max_age: Duration::from_secs(60 * 60),
            servers_from: Vec::new(),
            worker_threads: default_worker_threads(),
            oauth: None,
        }
    }
}

/// A listen address that names no address to listen on.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not an address like \"127.0.0.1:3000\" or \"localhost:3000\"")]
pub struct BadListenAddress(String);

/// A listen address: an IP address and port (`127.0.0.1:3000`, `[::1]:3000`),
/// or a host name and port (`localhost:3000`), looked up now; of the
/// addresses a name has, the first IPv4 one is taken (else the first).
pub fn parse_listen(text: &str) -> Result<SocketAddr, BadListenAddress> {
    use std::net::ToSocketAddrs as _;
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let bad = || BadListenAddress(text.to_owned());
    // Only `host:port` is looked up (not a bare name or a URL).
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || host.contains(['/', ' ']) || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    let addrs: Vec<SocketAddr> = text.to_socket_addrs().map_err(|_| bad())?.collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(bad)
}

/// `name` (from the config file `file`) as a path: relative ones are taken
/// from the file's directory.
fn resolve_beside(file: &Path, name: &str) -> PathBuf {
    let path = Path::new(name);
    match file.parent() {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_owned(),
    }
}

/// True when a config is JSON: its name ends in `.json`, or its first
/// character opens an object.
fn is_json(path: &Path, text: &str) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        || text.trim_start().starts_with('{')
}

/// The path that means "read the config from standard input".
pub const STDIN_PATH: &str = "-";

impl Config {
    /// Reads, parses and checks a config file (`-`: standard input), TOML or
    /// JSON, expanding variables from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read_config_text(path)?;
        Config::load_text(path, &text)
    }

    /// Parses and checks the config text read from `path`: a JSON server
    /// list (see [`translate`]) with every gateway setting at its default,
    /// or TOML whose `servers_from` JSON files add their servers.
    pub fn load_text(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let unplaced = |mut e: ConfigError| {
            // The place is in the TOML made from JSON, not in any file.
            e.position = None;
            e
        };
        if is_json(path, text) {
            let translated = translate(text).map_err(|e| ConfigError {
                file: path.to_owned(),
                position: None,
                key: None,
                message: e.to_string(),
            })?;
            if translated.servers.is_empty() {
                return Err(ConfigError {
                    file: path.to_owned(),
                    position: None,
                    key: None,
                    message: format!(
                        "no server in it can be served by mcpgate: {}",
                        translated.notes.join("; ")
                    ),
                });
            }
            let toml = format!(
                "[gateway]\n{}\n{}",
                translated.gateway.join("\n"),
                translated.servers
            );
            let mut config = Config::parse(path, &toml, &ProcessEnv).map_err(unplaced)?;
            config.notes = translated.notes;
            return Ok(config);
        }
        let lines = text.lines().count();
        let (from_json, notes) = servers_from(path, text)?;
        let whole = format!("{text}\n{from_json}");
        let mut config = Config::parse(path, &whole, &ProcessEnv).map_err(|e| {
            if e.position.is_some_and(|(line, _)| line > lines) {
                unplaced(e)
            } else {
                e
            }
        })?;
        config.notes = notes;
        Ok(config)
    }

    /// Finds the config: the given path, else the first of [`DEFAULT_CONFIG_PATHS`] that exists.
    pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, ConfigNotFound> {
        if let Some(path) = explicit {
            return Ok(path.to_owned());
        }
        DEFAULT_CONFIG_PATHS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or(ConfigNotFound)
    }

    /// Parses and checks config text; `file` is only used in error messages.
    pub fn parse(file: &Path, text: &str, vars: &dyn VarSource) -> Result<Config, ConfigError> {
        let at = |span: Option<Range<usize>>, key: Option<String>, message: String| {
            let position = span.map(|s| line_col(text, s.start));
            let key = key.or_else(|| {
                position.and_then(|(line, _)| key_on_line(text.lines().nth(line - 1)?))
            });
            ConfigError {
                file: file.to_owned(),
                position,
                key,
                message,
            }
        };
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| at(e.span(), None, e.message().to_owned()))?;
        let expand_at = |value: &Spanned<String>, key: String| {
            expand(value.get_ref(), vars)
                .map_err(|e| at(Some(value.span()), Some(key), e.to_string()))
        };

        let defaults = GatewayConfig::default();
        let g = raw.gateway;
        let dur = |d: Option<ConfigDuration>, default: Duration| d.map_or(default, |d| d.0);
        let listen = match &g.listen {
            None => defaults.listen,
            Some(text_addr) => parse_listen(text_addr.get_ref()).map_err(|e| {
                at(
                    Some(text_addr.span()),
                    Some("gateway.listen".into()),
                    e.to_string(),
                )
            })?,
        };
        let gateway = GatewayConfig {
            listen,
            session_idle_timeout: dur(g.session_idle_timeout, defaults.session_idle_timeout),
            cleanup_interval: dur(g.cleanup_interval, defaults.cleanup_interval),
            startup_timeout: dur(g.startup_timeout, defaults.startup_timeout),
            tool_timeout: dur(g.tool_timeout, defaults.tool_timeout),
            max_body_bytes: g.max_body_bytes.map_or(defaults.max_body_bytes, |b| b.0),
            max_message_bytes: g
                .max_message_bytes
                .map_or(defaults.max_message_bytes, |b| b.0),
            shutdown_timeout: dur(g.shutdown_timeout, defaults.shutdown_timeout),
            stop_grace: dur(g.stop_grace, defaults.stop_grace),
            max_consecutive_errors: g
                .max_consecutive_errors
                .unwrap_or(defaults.max_consecutive_errors),
            ready_timeout: dur(g.ready_timeout, defaults.ready_timeout),
            not_ready_patterns: g.not_ready_patterns.unwrap_or(defaults.not_ready_patterns),
            max_sessions: g.max_sessions.unwrap_or(defaults.max_sessions),
            crash_loop_restarts: g
                .crash_loop_restarts
                .unwrap_or(defaults.crash_loop_restarts),
            crash_loop_window: dur(g.crash_loop_window, defaults.crash_loop_window),
            sse_keepalive: dur(g.sse_keepalive, defaults.sse_keepalive),
            tool_separator: match &g.tool_separator {
                None => defaults.tool_separator,
                Some(sep) if sep.get_ref().is_empty() => {
                    return Err(at(
                        Some(sep.span()),
                        Some("gateway.tool_separator".into()),
                        "must not be empty".into(),
                    ));
                }
                Some(sep) => sep.get_ref().clone(),
            },
            allowed_origins: g.allowed_origins.unwrap_or_default(),
            sse_replay_events: g.sse_replay_events.unwrap_or(defaults.sse_replay_events),
            api_keys: Vec::new(),
            admin_key: None,
            allow_unauthenticated: g.allow_unauthenticated,
            caller_header: match &g.caller_header {
                None => None,
                Some(name)
                    if axum::http::HeaderName::from_bytes(name.get_ref().as_bytes()).is_err() =>
                {
                    return Err(at(
                        Some(name.span()),
                        Some("gateway.caller_header".into()),
                        "must be an HTTP header name".into(),
                    ));
                }
                Some(name) => Some(name.get_ref().to_ascii_lowercase()),
            },
            input_required_timeout: dur(g.input_required_timeout, defaults.input_required_timeout),
            watch_config: g.watch_config,
            audit_log: g
                .audit_log
                .as_ref()
                .map(|p| expand_at(p, "gateway.audit_log".to_owned()).map(PathBuf::from))
                .transpose()?,
            audit_payloads: g.audit_payloads,
            instance_tag: match &g.instance_tag {
                None => None,
                Some(tag) => {
                    let value = expand_at(tag, "gateway.instance_tag".to_owned())?;
                    let ok = !value.is_empty()
                        && value.len() <= 64
                        && value
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                    if !ok {
                        return Err(at(
                            Some(tag.span()),
                            Some("gateway.instance_tag".into()),
                            "must be 1 to 64 of A-Z, a-z, 0-9, '-' and '_'".into(),
                        ));
                    }
                    Some(value)
                }
            },
            max_header_bytes: g
                .max_header_bytes
                .map_or(defaults.max_header_bytes, |b| b.0),
            header_read_timeout: dur(g.header_read_timeout, defaults.header_read_timeout),
            body_read_timeout: dur(g.body_read_timeout, defaults.body_read_timeout),
            body_read_total_timeout: dur(
                g.body_read_total_timeout,
                defaults.body_read_total_timeout,
            ),
            max_connections: g.max_connections.unwrap_or(defaults.max_connections),
            max_buffered_body_bytes: g
                .max_buffered_body_bytes
                .map_or(defaults.max_buffered_body_bytes, |b| b.0),
            max_in_flight_per_session: g
                .max_in_flight_per_session
                .unwrap_or(defaults.max_in_flight_per_session),
            tls: None,
            warm_spares: g.warm_spares.unwrap_or(defaults.warm_spares),
            max_spares: g.max_spares.unwrap_or(defaults.max_spares),
            spare_max_age: dur(g.spare_max_age, defaults.spare_max_age),
            servers_from: g
                .servers_from
                .iter()
                .map(|f| {
                    expand(f, vars)
                        .map(|f| resolve_beside(file, &f))
                        .map_err(|e| at(None, Some("gateway.servers_from".into()), e.to_string()))
                })
                .collect::<Result<_, _>>()?,
            worker_threads: g.worker_threads.unwrap_or_else(default_worker_threads),
            oauth: None,
        };
        let mut gateway = gateway;
        if let Some(oauth) = &g.oauth {
            gateway.oauth = Some(oauth_config(oauth.get_ref(), &expand_at, &at)?);
        }
        for (name, key) in &g.api_keys {
            let value = expand_at(key, format!("gateway.api_keys.{name}"))?;
            if value.len() < MIN_API_KEY_LEN {
                return Err(at(
                    Some(key.span()),
                    Some(format!("gateway.api_keys.{name}")),
                    format!("an API key must be at least {MIN_API_KEY_LEN} characters"),
                ));
            }
            if gateway.api_keys.iter().any(|(_, k)| *k == value) {
                return Err(at(
                    Some(key.span()),
                    Some(format!("gateway.api_keys.{name}")),
                    "two names share one key; give each caller its own".into(),
                ));
            }
            if gateway.oauth.is_some() && name.contains('@') {
                return Err(at(
                    Some(key.span()),
                    Some(format!("gateway.api_keys.{name}")),
                    "with [gateway.oauth], a key's name must not contain `@` \
                     (OAuth callers are named <claim>@<issuer>)"
                        .into(),
                ));
            }
            gateway.api_keys.push((name.clone(), value));
        }
        if let Some(key) = &g.admin_key {
            let value = expand_at(key, "gateway.admin_key".to_owned())?;
            if value.len() < MIN_API_KEY_LEN {
                return Err(at(
                    Some(key.span()),
                    Some("gateway.admin_key".into()),
                    format!("the admin key must be at least {MIN_API_KEY_LEN} characters"),
                ));
            }
            if gateway.api_keys.iter().any(|(_, k)| *k == value) {
                return Err(at(
                    Some(key.span()),
                    Some("gateway.admin_key".into()),
                    "the admin key must not be a caller's API key".into(),
                ));
            }
            gateway.admin_key = Some(value);
        }
        gateway.tls = match (&g.tls_cert, &g.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: expand_at(cert, "gateway.tls_cert".into())?.into(),
                key: expand_at(key, "gateway.tls_key".into())?.into(),
            }),
            (Some(only), None) | (None, Some(only)) => {
                return Err(at(
                    Some(only.span()),
                    Some("gateway.tls_cert / gateway.tls_key".into()),
                    "set both tls_cert and tls_key, or neither".into(),
                ));
            }
        };
        if gateway.max_header_bytes < 8192 {
            return Err(at(
                None,
                Some("gateway.max_header_bytes".into()),
                "must be at least 8KiB".into(),
            ));
        }
        for (key, value) in [
            ("gateway.cleanup_interval", gateway.cleanup_interval),
            ("gateway.startup_timeout", gateway.startup_timeout),
            ("gateway.tool_timeout", gateway.tool_timeout),
            ("gateway.session_idle_timeout", gateway.session_idle_timeout),
            ("gateway.crash_loop_window", gateway.crash_loop_window),
            ("gateway.header_read_timeout", gateway.header_read_timeout),
            ("gateway.body_read_timeout", gateway.body_read_timeout),
            (
                "gateway.body_read_total_timeout",
                gateway.body_read_total_timeout,
            ),
            ("gateway.sse_keepalive", gateway.sse_keepalive),
            (
                "gateway.input_required_timeout",
                gateway.input_required_timeout,
            ),
            ("gateway.spare_max_age", gateway.spare_max_age),
        ] {
            if value.is_zero() {
                return Err(at(
                    None,
                    Some(key.into()),
                    "must be greater than zero".into(),
                ));
            }
        }
        for (key, value) in [
            (
                "gateway.max_consecutive_errors",
                gateway.max_consecutive_errors as usize,
            ),
            ("gateway.max_sessions", gateway.max_sessions),
            ("gateway.max_connections", gateway.max_connections),
            (
                "gateway.max_in_flight_per_session",
                gateway.max_in_flight_per_session,
            ),
            (
                "gateway.crash_loop_restarts",
                gateway.crash_loop_restarts as usize,
            ),
        ] {
            if value == 0 {
                return Err(at(None, Some(key.into()), "must be at least 1".into()));
            }
        }
        for (key, value) in [
            ("gateway.max_sessions", gateway.max_sessions),
            ("gateway.max_connections", gateway.max_connections),
            (
                "gateway.max_in_flight_per_session",
                gateway.max_in_flight_per_session,
            ),
            ("gateway.sse_replay_events", gateway.sse_replay_events),
        ] {
            if value > MAX_COUNT {
                return Err(at(
                    None,
                    Some(key.into()),
                    format!("must be at most {MAX_COUNT}"),
                ));
            }
        }
        if gateway.worker_threads == 0 || gateway.worker_threads > MAX_WORKER_THREADS {
            return Err(at(
                None,
                Some("gateway.worker_threads".into()),
                format!("must be 1 to {MAX_WORKER_THREADS}"),
            ));
        }
        for (key, value) in [
            ("gateway.warm_spares", gateway.warm_spares),
            ("gateway.max_spares", gateway.max_spares),
        ] {
            if value > MAX_SPARES {
                return Err(at(
                    None,
                    Some(key.into()),
                    format!("must be at most {MAX_SPARES}"),
                ));
            }
        }
        if gateway.max_body_bytes == 0 || gateway.max_message_bytes == 0 {
            return Err(at(
                None,
                Some("gateway.max_body_bytes / gateway.max_message_bytes".into()),
                "sizes must be greater than zero".into(),
            ));
        }
        if gateway.max_buffered_body_bytes < gateway.max_body_bytes {
            return Err(at(
                None,
                Some("gateway.max_buffered_body_bytes".into()),
                format!(
                    "must be at least max_body_bytes ({}): a body of that size could never be taken",
                    format_size(gateway.max_body_bytes)
                ),
            ));
        }
        if gateway.body_read_total_timeout < gateway.body_read_timeout {
            return Err(at(
                None,
                Some("gateway.body_read_total_timeout".into()),
                format!(
                    "must be at least body_read_timeout ({})",
                    format_duration(gateway.body_read_timeout)
                ),
            ));
        }

        let mut servers = Vec::with_capacity(raw.servers.len());
        for (id, spanned) in &raw.servers {
            let key = |field: &str| format!("servers.{id}.{field}");
            if !is_valid_server_id(id) {
                return Err(at(
                    Some(spanned.span()),
                    Some(format!("servers.{id}")),
                    "a server id may hold only letters, digits, `-`, `_` and `.`".into(),
                ));
            }
            if id.contains(&gateway.tool_separator) {
                return Err(at(
                    Some(spanned.span()),
                    Some(format!("servers.{id}")),
                    format!(
                        "a server id must not contain the tool_separator `{}`",
                        gateway.tool_separator
                    ),
                ));
            }
            let s = spanned.get_ref();
            let command = expand_at(&s.command, key("command"))?;
            if command.trim().is_empty() {
                return Err(at(
                    Some(s.command.span()),
                    Some(key("command")),
                    "must not be empty".into(),
                ));
            }
            let args = s
                .args
                .iter()
                .map(|a| expand_at(a, key("args")))
                .collect::<Result<Vec<_>, _>>()?;
            let mut env = Vec::with_capacity(s.env.len());
            for (name, value) in &s.env {
                let value = if value.get_ref().is_empty() {
                    EnvValue::PassThrough(std::env::var(name).ok())
                } else {
                    EnvValue::Set(expand_at(value, format!("servers.{id}.env.{name}"))?)
                };
                env.push((name.clone(), value));
            }
            let working_directory = s
                .working_directory
                .as_ref()
                .map(|w| expand_at(w, key("working_directory")).map(PathBuf::from))
                .transpose()?;
            let (warm_spares, warm) = warm_settings(s, &gateway, &key, &at)?;
            let spare_max_age = dur(s.spare_max_age, gateway.spare_max_age);
            if spare_max_age.is_zero() {
                return Err(at(
                    None,
                    Some(key("spare_max_age")),
                    "must be greater than zero".into(),
                ));
            }
            let oauth_scopes = scope_list(&s.oauth_scopes, &key("oauth_scopes"), &at)?;
            if !oauth_scopes.is_empty() && gateway.oauth.is_none() {
                return Err(at(
                    s.oauth_scopes.first().map(Spanned::span),
                    Some(key("oauth_scopes")),
                    "oauth_scopes needs [gateway.oauth]".into(),
                ));
            }
            servers.push(Arc::new(ServerConfig {
                oauth_scopes,
                id: id.clone(),
                command,
                args,
                env,
                inherit_env: s.inherit_env,
                session_mode: s.session_mode,
                scheduling: s.scheduling,
                era: s.era,
                written: WrittenCommand {
                    command: s.command.get_ref().clone(),
                    args: s.args.iter().map(|a| a.get_ref().clone()).collect(),
                    working_directory: s.working_directory.as_ref().map(|w| w.get_ref().clone()),
                },
                tools: s.tools.clone().unwrap_or_else(|| vec!["*".to_owned()]),
                working_directory,
                startup_timeout: dur(s.startup_timeout, gateway.startup_timeout),
                tool_timeout: dur(s.tool_timeout, gateway.tool_timeout),
                session_idle_timeout: dur(s.session_idle_timeout, gateway.session_idle_timeout),
                ready_timeout: dur(s.ready_timeout, gateway.ready_timeout),
                not_ready_patterns: s
                    .not_ready_patterns
                    .clone()
                    .unwrap_or_else(|| gateway.not_ready_patterns.clone()),
                stop_grace: gateway.stop_grace,
                max_consecutive_errors: gateway.max_consecutive_errors,
                crash_loop_restarts: gateway.crash_loop_restarts,
                crash_loop_window: gateway.crash_loop_window,
                warm_spares,
                warm,
                spare_max_age,
            }));
        }
        Ok(Config {
            source: file.to_owned(),
            gateway,
            servers,
            notes: Vec::new(),
        })
    }

    /// Refuses a config that would expose backends without authentication: a
    /// non-loopback listen address needs API keys, unless
    /// `allow_unauthenticated = true` says the risk is taken on purpose.
    /// Settings that work but carry a risk an operator should know of, one
    /// sentence each (logged as warnings at start).
    pub fn risks(&self) -> Vec<String> {
        let g = &self.gateway;
        let exposed = !g.listen.ip().is_loopback();
        let mut risks = Vec::new();
        if exposed && g.api_keys.is_empty() && g.oauth.is_none() {
            risks.push(format!(
                "{} is not a loopback address and there are no api_keys \
                 (allow_unauthenticated = true): anyone who can reach it can run the configured commands",
                g.listen
            ));
        }
        if exposed && g.tls.is_none() {
            risks.push(format!(
                "{} is not a loopback address and TLS is off: keys, session ids and payloads \
                 cross the network in clear (set tls_cert/tls_key, or terminate TLS in front)",
                g.listen
            ));
        }
        if exposed && g.api_keys.is_empty() && g.oauth.is_none() && g.caller_header.is_some() {
            risks.push(
                "stateless callers are named by caller_header, which any client can set: \
                 without api_keys they can reach each other's processes"
                    .to_owned(),
            );
        }
        if g.audit_payloads {
            risks.push(
                "audit_payloads = true: the audit log records every request's params, \
                 which may hold secrets"
                    .to_owned(),
            );
        }
        for server in &self.servers {
            if server.session_mode == SessionMode::Shared {
                risks.push(format!(
                    "server `{}` is shared: every session uses one process, which sees \
                     (and may mix up) what all of them send it",
                    server.id
                ));
            }
            if server.inherit_env {
                risks.push(format!(
                    "server `{}` inherits the gateway's whole environment (inherit_env = true)",
                    server.id
                ));
            }
        }
        risks
    }

    /// Refuses a non-loopback `listen` without `api_keys` (unless
    /// `allow_unauthenticated`). A config error like any other, but one that
    /// has no single place in the file: it is the combination that is wrong.
    pub fn check_exposure(&self) -> Result<(), ConfigError> {
        let g = &self.gateway;
        if g.listen.ip().is_loopback()
            || !g.api_keys.is_empty()
            || g.oauth.is_some()
            || g.allow_unauthenticated
        {
            return Ok(());
        }
        Err(ConfigError {
            file: self.source.clone(),
            position: None,
            key: None,
            message: format!(
                "refusing to listen on {} without api_keys: anyone who can reach it could run \
                 the configured commands. Add [gateway] api_keys or [gateway.oauth], listen on \
                 loopback, or set \
                 allow_unauthenticated = true if something in front of mcpgate authenticates \
                 callers",
                g.listen
            ),
        })
    }

    /// The server with this id.
    pub fn server(&self, id: &str) -> Option<&Arc<ServerConfig>> {
        self.servers.iter().find(|s| s.id == id)
    }

    /// The normalised config as TOML, with every `env` value redacted.
    pub fn to_redacted_toml(&self) -> String {
        use toml::{Table, Value};
        let dur = |d: Duration| Value::String(format_duration(d));
        let strings = |v: &[String]| Value::Array(v.iter().cloned().map(Value::String).collect());
        let count = |n: usize| Value::Integer(i64::try_from(n).unwrap_or(i64::MAX));
        let g = &self.gateway;
        let mut gateway = Table::new();
        gateway.insert("listen".into(), Value::String(g.listen.to_string()));
        gateway.insert("session_idle_timeout".into(), dur(g.session_idle_timeout));
        gateway.insert("cleanup_interval".into(), dur(g.cleanup_interval));
        gateway.insert("startup_timeout".into(), dur(g.startup_timeout));
        gateway.insert("tool_timeout".into(), dur(g.tool_timeout));
        gateway.insert(
            "max_body_bytes".into(),
            Value::String(format_size(g.max_body_bytes)),
        );
        gateway.insert(
            "max_message_bytes".into(),
            Value::String(format_size(g.max_message_bytes)),
        );
        gateway.insert("shutdown_timeout".into(), dur(g.shutdown_timeout));
        gateway.insert("stop_grace".into(), dur(g.stop_grace));
        gateway.insert(
            "max_consecutive_errors".into(),
            Value::Integer(g.max_consecutive_errors.into()),
        );
        gateway.insert("ready_timeout".into(), dur(g.ready_timeout));
        gateway.insert("not_ready_patterns".into(), strings(&g.not_ready_patterns));
        gateway.insert(
            "max_sessions".into(),
            Value::Integer(i64::try_from(g.max_sessions).unwrap_or(i64::MAX)),
        );
        gateway.insert(
            "crash_loop_restarts".into(),
            Value::Integer(g.crash_loop_restarts.into()),
        );
        gateway.insert("crash_loop_window".into(), dur(g.crash_loop_window));
        gateway.insert("sse_keepalive".into(), dur(g.sse_keepalive));
        gateway.insert(
            "tool_separator".into(),
            Value::String(g.tool_separator.clone()),
        );
        gateway.insert("allowed_origins".into(), strings(&g.allowed_origins));
        let keys: Table = g
            .api_keys
            .iter()
            .map(|(name, _)| (name.clone(), Value::String("<redacted>".into())))
            .collect();
        gateway.insert("api_keys".into(), Value::Table(keys));
        if g.admin_key.is_some() {
            gateway.insert("admin_key".into(), Value::String("<redacted>".into()));
        }
        gateway.insert(
            "allow_unauthenticated".into(),
            Value::Boolean(g.allow_unauthenticated),
        );
        if let Some(name) = &g.caller_header {
            gateway.insert("caller_header".into(), Value::String(name.clone()));
        }
        gateway.insert(
            "input_required_timeout".into(),
            dur(g.input_required_timeout),
        );
        gateway.insert("watch_config".into(), Value::Boolean(g.watch_config));
        if let Some(path) = &g.audit_log {
            gateway.insert(
                "audit_log".into(),
                Value::String(path.display().to_string()),
            );
        }
        gateway.insert("audit_payloads".into(), Value::Boolean(g.audit_payloads));
        if let Some(tag) = &g.instance_tag {
            gateway.insert("instance_tag".into(), Value::String(tag.clone()));
        }
        gateway.insert(
            "max_header_bytes".into(),
            Value::String(format_size(g.max_header_bytes)),
        );
        gateway.insert("header_read_timeout".into(), dur(g.header_read_timeout));
        gateway.insert("body_read_timeout".into(), dur(g.body_read_timeout));
        gateway.insert(
            "body_read_total_timeout".into(),
            dur(g.body_read_total_timeout),
        );
        gateway.insert("max_connections".into(), count(g.max_connections));
        gateway.insert(
            "max_buffered_body_bytes".into(),
            Value::String(format_size(g.max_buffered_body_bytes)),
        );
        if let Some(tls) = &g.tls {
            gateway.insert(
                "tls_cert".into(),
                Value::String(tls.cert.display().to_string()),
            );
            gateway.insert(
                "tls_key".into(),
                Value::String(tls.key.display().to_string()),
            );
        }
        gateway.insert(
            "max_in_flight_per_session".into(),
            Value::Integer(i64::try_from(g.max_in_flight_per_session).unwrap_or(i64::MAX)),
        );
        gateway.insert(
            "sse_replay_events".into(),
            Value::Integer(i64::try_from(g.sse_replay_events).unwrap_or(i64::MAX)),
        );
        if !g.servers_from.is_empty() {
            let files: Vec<String> = g
                .servers_from
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            gateway.insert("servers_from".into(), strings(&files));
        }
        gateway.insert("worker_threads".into(), count(g.worker_threads));
        gateway.insert("warm_spares".into(), count(g.warm_spares));
        gateway.insert("max_spares".into(), count(g.max_spares));
        gateway.insert("spare_max_age".into(), dur(g.spare_max_age));
        if let Some(o) = &g.oauth {
            let mut oauth = Table::new();
            oauth.insert("issuer".into(), Value::String(o.issuer.clone()));
            oauth.insert("resource".into(), Value::String(o.resource.clone()));
            oauth.insert("audiences".into(), strings(&o.audiences));
            if let Some(url) = &o.jwks_url {
                oauth.insert("jwks_url".into(), Value::String(url.clone()));
            }
            oauth.insert("scopes".into(), strings(&o.scopes));
            oauth.insert("caller_claim".into(), Value::String(o.caller_claim.clone()));
            oauth.insert("leeway".into(), dur(o.leeway));
            oauth.insert("fetch_timeout".into(), dur(o.fetch_timeout));
            oauth.insert("jwks_refresh_interval".into(), dur(o.jwks_refresh_interval));
            gateway.insert("oauth".into(), Value::Table(oauth));
        }

        let mut servers = Table::new();
        for s in &self.servers {
            let mut t = Table::new();
            t.insert("command".into(), Value::String(s.written.command.clone()));
            t.insert("args".into(), strings(&s.written.args));
            let env: Table = s
                .env
                .iter()
                .map(|(name, value)| {
                    let shown = match value {
                        EnvValue::Set(_) => "<redacted>",
                        EnvValue::PassThrough(Some(_)) => "<redacted: passed through from host>",
                        EnvValue::PassThrough(None) => "<unset: host has no value to pass through>",
                    };
                    (name.clone(), Value::String(shown.into()))
                })
                .collect();
            t.insert("env".into(), Value::Table(env));
            t.insert("inherit_env".into(), Value::Boolean(s.inherit_env));
            t.insert(
                "session_mode".into(),
                Value::String(s.session_mode.as_str().into()),
            );
            t.insert(
                "scheduling".into(),
                Value::String(s.scheduling.as_str().into()),
            );
            t.insert("era".into(), Value::String(s.era.as_str().into()));
            t.insert("tools".into(), strings(&s.tools));
            if let Some(dir) = &s.written.working_directory {
                t.insert("working_directory".into(), Value::String(dir.clone()));
            }
            t.insert("startup_timeout".into(), dur(s.startup_timeout));
            t.insert("tool_timeout".into(), dur(s.tool_timeout));
            t.insert("session_idle_timeout".into(), dur(s.session_idle_timeout));
            t.insert("ready_timeout".into(), dur(s.ready_timeout));
            t.insert("not_ready_patterns".into(), strings(&s.not_ready_patterns));
            t.insert("warm_spares".into(), count(s.warm_spares));
            t.insert("warm".into(), Value::String(s.warm.as_str().into()));
            t.insert("spare_max_age".into(), dur(s.spare_max_age));
            if !s.oauth_scopes.is_empty() {
                t.insert("oauth_scopes".into(), strings(&s.oauth_scopes));
            }
            servers.insert(s.id.clone(), Value::Table(t));
        }
        let mut root = Table::new();
        root.insert("gateway".into(), Value::Table(gateway));
        root.insert("servers".into(), Value::Table(servers));
        toml::to_string_pretty(&root).unwrap_or_else(|e| format!("# cannot print config: {e}\n"))
    }
}

/// A server's `warm_spares` and `warm`: its own, or (for a per-session server)
/// the gateway's count. A shared server has one process for every session,
/// so spares of it are refused, as is `warm = "initialized"` for a backend
/// whose handshake is not `initialize` (`era` other than `legacy`).
type At<'a> = &'a dyn Fn(Option<Range<usize>>, Option<String>, String) -> ConfigError;
type ExpandAt<'a> = &'a dyn Fn(&Spanned<String>, String) -> Result<String, ConfigError>;

/// OAuth scopes as written: each a non-empty run of visible ASCII without
/// `"` or `\` (RFC 6749's scope-token), no duplicates.
fn scope_list(raw: &[Spanned<String>], key: &str, at: At<'_>) -> Result<Vec<String>, ConfigError> {
    let mut scopes: Vec<String> = Vec::with_capacity(raw.len());
    for scope in raw {
        let value = scope.get_ref();
        let ok = !value.is_empty()
            && value
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\');
        if !ok {
            return Err(at(
                Some(scope.span()),
                Some(key.to_owned()),
                format!(
                    "`{value}` is not a scope (visible ASCII, no spaces, quotes or backslashes)"
                ),
            ));
        }
        if !scopes.contains(value) {
            scopes.push(value.clone());
        }
    }
    Ok(scopes)
}

/// An absolute `http`/`https` URL without a fragment, as OAuth names things.
fn is_http_url(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once("://") else {
        return false;
    };
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    (scheme == "https" || scheme == "http")
        && !host.is_empty()
        && !text.contains('#')
        && !text.contains(char::is_whitespace)
}

/// `[gateway.oauth]`, checked.
fn oauth_config(
    o: &RawOAuth,
    expand_at: ExpandAt<'_>,
    at: At<'_>,
) -> Result<OAuthConfig, ConfigError> {
    let url = |value: &Spanned<String>, key: &str| {
        let text = expand_at(value, format!("gateway.oauth.{key}"))?;
        if is_http_url(&text) {
            Ok(text)
        } else {
            Err(at(
                Some(value.span()),
                Some(format!("gateway.oauth.{key}")),
                format!("`{text}` is not an absolute http(s) URL without a fragment"),
            ))
        }
    };
    let issuer = url(&o.issuer, "issuer")?;
    let resource = url(&o.resource, "resource")?;
    let mut audiences = vec![resource.clone()];
    for audience in &o.audiences {
        let value = expand_at(audience, "gateway.oauth.audiences".into())?;
        if value.is_empty() {
            return Err(at(
                Some(audience.span()),
                Some("gateway.oauth.audiences".into()),
                "an audience must not be empty".into(),
            ));
        }
        if !audiences.contains(&value) {
            audiences.push(value);
        }
    }
    let jwks_url = o
        .jwks_url
        .as_ref()
        .map(|u| url(u, "jwks_url"))
        .transpose()?;
    let scopes = scope_list(&o.scopes, "gateway.oauth.scopes", at)?;
    let caller_claim = match &o.caller_claim {
        None => "sub".to_owned(),
        Some(claim) if claim.get_ref().is_empty() => {
            return Err(at(
                Some(claim.span()),
                Some("gateway.oauth.caller_claim".into()),
                "must not be empty".into(),
            ));
        }
        Some(claim) => claim.get_ref().clone(),
    };
    let dur =
        |d: Option<ConfigDuration>, default: u64| d.map_or(Duration::from_secs(default), |d| d.0);
    let config = OAuthConfig {
        issuer,
        resource,
        audiences,
        jwks_url,
        scopes,
        caller_claim,
        leeway: dur(o.leeway, 60),
        fetch_timeout: dur(o.fetch_timeout, 5),
        jwks_refresh_interval: dur(o.jwks_refresh_interval, 10),
    };
    for (key, value) in [
        ("gateway.oauth.fetch_timeout", config.fetch_timeout),
        (
            "gateway.oauth.jwks_refresh_interval",
            config.jwks_refresh_interval,
        ),
    ] {
        if value.is_zero() {
            return Err(at(
                None,
                Some(key.into()),
                "must be greater than zero".into(),
            ));
        }
    }
    if config.leeway > Duration::from_secs(600) {
        return Err(at(
            None,
            Some("gateway.oauth.leeway".into()),
            "must be at most 10m".into(),
        ));
    }
    Ok(config)
}

fn warm_settings(
    s: &RawServer,
    gateway: &GatewayConfig,
    key: &dyn Fn(&str) -> String,
    at: &dyn Fn(Option<Range<usize>>, Option<String>, String) -> ConfigError,
) -> Result<(usize, Warmth), ConfigError> {
    let shared = s.session_mode == SessionMode::Shared;
    let warm_spares = match &s.warm_spares {
        Some(n) if *n.get_ref() > MAX_SPARES => {
            return Err(at(
                Some(n.span()),
                Some(key("warm_spares")),
                format!("must be at most {MAX_SPARES}"),
            ));
        }
        Some(n) if shared && *n.get_ref() > 0 => {
            return Err(at(
                Some(n.span()),
                Some(key("warm_spares")),
                "a shared server has one process for every session: spares are for per-session servers".into(),
            ));
        }
        Some(n) => *n.get_ref(),
        None if shared => 0,
        None => gateway.warm_spares,
    };
    let warm = match &s.warm {
        Some(w) if *w.get_ref() == Warmth::Initialized && s.era != EraSetting::Session => {
            return Err(at(
                Some(w.span()),
                Some(key("warm")),
                format!(
                    "\"initialized\" runs the initialize handshake ahead, which era = \"{}\" does not begin with; use \"started\"",
                    s.era.as_str()
                ),
            ));
        }
        Some(w) => *w.get_ref(),
        None => Warmth::default(),
    };
    Ok((warm_spares, warm))
}

/// Reads a config file, or standard input for [`STDIN_PATH`].
pub fn read_config_text(path: &Path) -> Result<String, ConfigError> {
    let read = if path == Path::new(STDIN_PATH) {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    };
    read.map_err(|e| ConfigError {
        file: path.to_owned(),
        position: None,
        key: None,
        message: format!("cannot read the config file: {e}"),
    })
}

/// A JSON config (`text`, read from `path`) as mcpgate TOML, for `mcpgate
/// import`: a header saying where it came from, what was left out as
/// comments, the `[gateway]` settings it had, and the server tables.
pub fn import_as_toml(path: &Path, text: &str) -> Result<String, ConfigError> {
    let translated = translate(text).map_err(|e| ConfigError {
        file: path.to_owned(),
        position: None,
        key: None,
        message: e.to_string(),
    })?;
    let mut out = format!(
        "# The servers of {} (format: {}), as mcpgate TOML.\n\
         # Check the result with `mcpgate check --config FILE`.\n",
        path.display(),
        translated.dialect.describe()
    );
    for note in &translated.notes {
        out.push_str(&format!("# {note}\n"));
    }
    if !translated.gateway.is_empty() {
        out.push_str(&format!("\n[gateway]\n{}\n", translated.gateway.join("\n")));
    }
    out.push_str(&translated.servers);
    Ok(out)
}

/// The `[servers.<id>]` tables of the JSON files a TOML config names in
/// `[gateway] servers_from`, and the notes of what they left out. Their own
/// `gateway` objects are not read: the TOML holds the gateway's settings.
fn servers_from(path: &Path, text: &str) -> Result<(String, Vec<String>), ConfigError> {
    let files: Vec<String> = toml::from_str::<toml::Table>(text)
        .ok()
        .and_then(|t| t.get("gateway")?.get("servers_from").cloned())
        .and_then(|v| v.try_into().ok())
        .unwrap_or_default();
    let (mut tables, mut notes) = (String::new(), Vec::new());
    for name in files {
        let failed = |message: String| ConfigError {
            file: path.to_owned(),
            position: None,
            key: Some("gateway.servers_from".into()),
            message,
        };
        let name = expand(&name, &ProcessEnv).map_err(|e| failed(e.to_string()))?;
        let file = resolve_beside(path, &name);
        let json = std::fs::read_to_string(&file)
            .map_err(|e| failed(format!("cannot read {}: {e}", file.display())))?;
        let translated =
            translate(&json).map_err(|e| failed(format!("{}: {e}", file.display())))?;
        tables.push_str(&translated.servers);
        notes.extend(
            translated
                .notes
                .into_iter()
                .map(|note| format!("{}: {note}", file.display())),
        );
        if !translated.gateway.is_empty() {
            notes.push(format!(
                "{}: its `gateway` object is not read (the TOML holds the gateway's settings)",
                file.display()
            ));
        }
    }
    Ok((tables, notes))
}

/// Server ids appear in URL paths and tool-name prefixes: keep them plain.
fn is_valid_server_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, col)
}

/// The key a `key = value` line sets, if the line is one.
fn key_on_line(line: &str) -> Option<String> {
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    (!key.is_empty() && !key.starts_with('[') && !key.starts_with('#')).then(|| key.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listen_address_may_name_a_host() {
        assert_eq!(
            parse_listen("127.0.0.1:3000").unwrap(),
            SocketAddr::from(([127, 0, 0, 1], 3000))
        );
        assert_eq!(parse_listen("[::1]:0").unwrap().port(), 0);
        let local = parse_listen("localhost:3000").unwrap();
        assert!(local.ip().is_loopback() && local.port() == 3000, "{local}");
        for bad in [
            "localhost",
            "http://localhost:3000",
            ":3000",
            "localhost:99999",
            "",
        ] {
            assert!(parse_listen(bad).is_err(), "{bad}");
        }
        let c = parse("[gateway]\nlisten = \"localhost:4000\"\n").unwrap();
        assert!(c.gateway.listen.ip().is_loopback() && c.gateway.listen.port() == 4000);
        let e = parse("[gateway]\nlisten = \"nowhere\"\n").unwrap_err();
        assert!(e.to_string().contains("localhost:3000"), "{e}");
    }
    use std::collections::HashMap;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let vars = HashMap::from([
            ("TOKEN".to_owned(), "s3cret".to_owned()),
            ("DIR".to_owned(), "/srv".to_owned()),
        ]);
        Config::parse(Path::new("test.toml"), text, &vars)
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse("[servers.a]\ncommand = \"cat\"\n").unwrap();
        assert_eq!(c.gateway, GatewayConfig::default());
        assert_eq!(c.servers.len(), 1);
        assert_eq!(c.servers[0].tool_timeout, Duration::from_secs(120));
    }

    #[test]
    fn durations_accept_seconds_and_strings_and_servers_override() {
        let c = parse(
            "[gateway]\ntool_timeout = 5\nstartup_timeout = \"2m\"\n\
             [servers.a]\ncommand = \"cat\"\ntool_timeout = \"750ms\"\n\
             [servers.b]\ncommand = \"cat\"\n",
        )
        .unwrap();
        assert_eq!(c.gateway.tool_timeout, Duration::from_secs(5));
        assert_eq!(c.gateway.startup_timeout, Duration::from_secs(120));
        assert_eq!(c.servers[0].tool_timeout, Duration::from_millis(750));
        assert_eq!(c.servers[1].tool_timeout, Duration::from_secs(5));
        assert_eq!(c.servers[1].startup_timeout, Duration::from_secs(120));
    }

    #[test]
    fn servers_keep_file_order() {
        let c =
            parse("[servers.zeta]\ncommand = \"a\"\n[servers.alpha]\ncommand = \"b\"\n").unwrap();
        let ids: Vec<_> = c.servers.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["zeta", "alpha"]);
    }

    #[test]
    fn unknown_key_is_an_error_naming_file_line_and_key() {
        let err = parse("[gateway]\nlisten = \"127.0.0.1:1\"\nbogus_key = 3\n").unwrap_err();
        let text = err.to_string();
        assert_eq!(err.position.map(|p| p.0), Some(3), "{text}");
        assert!(text.starts_with("test.toml:3:"), "{text}");
        assert!(text.contains("bogus_key"), "{text}");
    }

    #[test]
    fn bad_value_names_its_key() {
        let err = parse("[gateway]\ntool_timeout = \"soon\"\n").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("tool_timeout"), "{err}");
        assert_eq!(err.position.map(|p| p.0), Some(2));
    }

    #[test]
    fn variables_expand_in_named_fields_only() {
        let c = parse(
            "[servers.a]\ncommand = \"${DIR}/bin/x\"\nargs = [\"--token\", \"${TOKEN}\"]\n\
             working_directory = \"${DIR}\"\nenv = { T = \"${TOKEN}\" }\n",
        )
        .unwrap();
        let s = &c.servers[0];
        assert_eq!(s.command, "/srv/bin/x");
        assert_eq!(s.args, ["--token", "s3cret"]);
        assert_eq!(s.working_directory.as_deref(), Some(Path::new("/srv")));
        assert_eq!(
            s.env,
            vec![("T".to_owned(), EnvValue::Set("s3cret".into()))]
        );
    }

    #[test]
    fn undefined_variable_is_an_error_naming_it_and_the_key() {
        let err = parse("[servers.a]\ncommand = \"x\"\nargs = [\"${NOPE}\"]\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("NOPE"), "{text}");
        assert!(text.contains("servers.a.args"), "{text}");
        assert_eq!(err.position.map(|p| p.0), Some(3));
    }

    #[test]
    fn empty_env_value_passes_the_host_value_through() {
        // PATH is set in every test environment.
        let c = parse("[servers.a]\ncommand = \"x\"\nenv = { PATH = \"\", MCPGATE_SURELY_UNSET_VAR = \"\" }\n")
            .unwrap();
        let s = &c.servers[0];
        assert_eq!(
            s.env[0].1,
            EnvValue::PassThrough(std::env::var("PATH").ok())
        );
        assert_eq!(s.env[1].1, EnvValue::PassThrough(None));
        let env: HashMap<_, _> = s.child_env().into_iter().collect();
        assert_eq!(env.get("PATH"), std::env::var("PATH").ok().as_ref());
        assert!(!env.contains_key("MCPGATE_SURELY_UNSET_VAR"));
    }

    #[test]
    fn child_env_is_minimal_unless_inherited() {
        let c = parse(
            "[servers.a]\ncommand = \"x\"\nenv = { EXTRA = \"1\" }\n\
             [servers.b]\ncommand = \"x\"\ninherit_env = true\n",
        )
        .unwrap();
        let minimal: HashMap<_, _> = c.servers[0].child_env().into_iter().collect();
        for name in minimal.keys() {
            assert!(
                MINIMAL_ENV.contains(&name.as_str()) || name == "EXTRA",
                "{name}"
            );
        }
        assert_eq!(minimal.get("EXTRA").map(String::as_str), Some("1"));
        let inherited = c.servers[1].child_env();
        assert_eq!(inherited.len(), std::env::vars().count());
    }

    #[test]
    fn check_output_shows_commands_as_written_and_reparses_to_the_same() {
        let text = "[servers.a]\ncommand = \"$${X}/bin\"\nargs = [\"--token\", \"${TOKEN}\"]\nworking_directory = \"${DIR}\"\n";
        let c = parse(text).unwrap();
        assert_eq!(c.servers[0].command, "${X}/bin");
        let printed = c.to_redacted_toml();
        assert!(
            !printed.contains("s3cret"),
            "an expanded argument may be a secret: {printed}"
        );
        let again = parse(&printed).unwrap();
        assert_eq!(again.servers[0], c.servers[0]);
        assert!(parse("[gateway]\nmax_sessions = 9223372036854775808\n").is_err());
        assert!(parse("[gateway]\nready_timeout = 9223372036854775807\n").is_err());
    }

    #[test]
    fn redacted_output_hides_env_values_and_reparses() {
        let c = parse("[servers.a]\ncommand = \"x\"\nenv = { T = \"${TOKEN}\" }\n").unwrap();
        let printed = c.to_redacted_toml();
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("<redacted>"), "{printed}");
        let again = parse(&printed).unwrap();
        assert_eq!(again.gateway, c.gateway);
    }

    #[test]
    fn session_mode_defaults_to_per_session() {
        let c = parse(
            "[servers.a]\ncommand = \"x\"\n[servers.b]\ncommand = \"x\"\nsession_mode = \"shared\"\n",
        )
        .unwrap();
        assert_eq!(c.servers[0].session_mode, SessionMode::PerSession);
        assert_eq!(c.servers[1].session_mode, SessionMode::Shared);
        assert!(parse("[servers.a]\ncommand = \"x\"\nsession_mode = \"pooled\"\n").is_err());
    }

    #[test]
    fn warm_spares_default_from_the_gateway_for_per_session_servers_only() {
        let c = parse(
            "[gateway]\nwarm_spares = 2\n\
             [servers.a]\ncommand = \"x\"\n\
             [servers.b]\ncommand = \"x\"\nwarm_spares = 0\n\
             [servers.c]\ncommand = \"x\"\nsession_mode = \"shared\"\n\
             [servers.d]\ncommand = \"x\"\nwarm = \"initialized\"\nspare_max_age = \"5m\"\n",
        )
        .unwrap();
        let spares: Vec<usize> = c.servers.iter().map(|s| s.warm_spares).collect();
        assert_eq!(spares, [2, 0, 0, 2]);
        assert_eq!(c.servers[0].warm, Warmth::Started);
        assert_eq!(c.servers[3].warm, Warmth::Initialized);
        assert_eq!(c.servers[0].spare_max_age, Duration::from_secs(3600));
        assert_eq!(c.servers[3].spare_max_age, Duration::from_secs(300));
        assert_eq!(c.gateway.max_spares, 16);
    }

    #[test]
    fn worker_threads_default_to_half_the_cpus_and_are_checked() {
        let c = parse("[servers.a]\ncommand = \"x\"\n").unwrap();
        assert_eq!(c.gateway.worker_threads, default_worker_threads());
        let cpus = std::thread::available_parallelism().unwrap().get();
        assert_eq!(default_worker_threads(), (cpus / 2).max(1));
        let c = parse("[gateway]\nworker_threads = 3\n[servers.a]\ncommand = \"x\"\n").unwrap();
        assert_eq!(c.gateway.worker_threads, 3);
        let zero = parse("[gateway]\nworker_threads = 0\n").unwrap_err();
        assert!(
            zero.to_string().contains("gateway.worker_threads"),
            "{zero}"
        );
    }

    #[test]
    fn warm_spares_are_refused_where_they_cannot_work() {
        let shared =
            parse("[servers.a]\ncommand = \"x\"\nsession_mode = \"shared\"\nwarm_spares = 1\n")
                .unwrap_err();
        assert!(
            shared.to_string().contains("servers.a.warm_spares"),
            "{shared}"
        );
        assert!(shared.to_string().contains("shared server"), "{shared}");
        let auto = parse("[servers.a]\ncommand = \"x\"\nera = \"auto\"\nwarm = \"initialized\"\n")
            .unwrap_err();
        assert!(auto.to_string().contains("servers.a.warm"), "{auto}");
        assert!(auto.to_string().contains("\"started\""), "{auto}");
        let too_many = parse("[gateway]\nmax_spares = 1001\n").unwrap_err();
        assert!(too_many.to_string().contains("at most 1000"), "{too_many}");
        let zero_age = parse("[servers.a]\ncommand = \"x\"\nspare_max_age = 0\n").unwrap_err();
        assert!(
            zero_age.to_string().contains("greater than zero"),
            "{zero_age}"
        );
        assert!(parse("[servers.a]\ncommand = \"x\"\nwarm = \"hot\"\n").is_err());
    }

    #[test]
    fn client_limits_are_read_checked_and_printed() {
        let c = parse(
            "[gateway]\nbody_read_timeout = \"2s\"\nbody_read_total_timeout = \"30s\"\n\
             max_connections = 8\nmax_buffered_body_bytes = \"64MiB\"\n",
        )
        .unwrap();
        assert_eq!(c.gateway.body_read_timeout, Duration::from_secs(2));
        assert_eq!(c.gateway.body_read_total_timeout, Duration::from_secs(30));
        assert_eq!(c.gateway.max_connections, 8);
        assert_eq!(c.gateway.max_buffered_body_bytes, 64 << 20);
        let printed = c.to_redacted_toml();
        for line in [
            "body_read_timeout = \"2s\"",
            "body_read_total_timeout = \"30s\"",
            "max_connections = 8",
            "max_buffered_body_bytes = \"64MiB\"",
        ] {
            assert!(printed.contains(line), "{line} in {printed}");
        }
        assert_eq!(parse(&printed).unwrap().gateway, c.gateway);
        for (bad, says) in [
            ("body_read_timeout = 0", "greater than zero"),
            ("body_read_total_timeout = 0", "greater than zero"),
            ("max_connections = 0", "at least 1"),
            ("max_connections = 1000001", "at most 1000000"),
            ("max_buffered_body_bytes = 0", "at least max_body_bytes"),
            (
                "max_body_bytes = \"8MiB\"\nmax_buffered_body_bytes = \"4MiB\"",
                "at least max_body_bytes (8MiB)",
            ),
            (
                "body_read_timeout = \"20s\"\nbody_read_total_timeout = \"10s\"",
                "at least body_read_timeout (20s)",
            ),
        ] {
            let e = parse(&format!("[gateway]\n{bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn scheduling_defaults_to_batch() {
        let c = parse(
            "[servers.a]\ncommand = \"x\"\n[servers.b]\ncommand = \"x\"\nscheduling = \"normal\"\n",
        )
        .unwrap();
        assert_eq!(c.servers[0].scheduling, Scheduling::Batch);
        assert_eq!(c.servers[1].scheduling, Scheduling::Normal);
        assert!(parse("[servers.a]\ncommand = \"x\"\nscheduling = \"fifo\"\n").is_err());
    }

    #[test]
    fn risks_name_exposure_without_keys_or_tls_and_shared_servers() {
        let quiet = parse("[servers.a]\ncommand = \"x\"\n").unwrap();
        assert!(quiet.risks().is_empty());
        let risky = parse(
            "[gateway]\nlisten = \"0.0.0.0:3000\"\nallow_unauthenticated = true\ncaller_header = \"x-c\"\n\
             [servers.a]\ncommand = \"x\"\nsession_mode = \"shared\"\n",
        )
        .unwrap();
        let risks = risky.risks().join("\n");
        for part in [
            "no api_keys",
            "TLS is off",
            "caller_header",
            "`a` is shared",
        ] {
            assert!(risks.contains(part), "{part}: {risks}");
        }
    }

    #[test]
    fn era_defaults_to_legacy() {
        let c = parse(
            "[servers.a]\ncommand = \"x\"\n[servers.b]\ncommand = \"x\"\nera = \"auto\"\n[servers.c]\ncommand = \"x\"\nera = \"modern\"\n",
        )
        .unwrap();
        let eras: Vec<EraSetting> = c.servers.iter().map(|s| s.era).collect();
        assert_eq!(
            eras,
            [EraSetting::Session, EraSetting::Auto, EraSetting::Stateless]
        );
        assert!(parse("[servers.a]\ncommand = \"x\"\nera = \"2026\"\n").is_err());
    }

    #[test]
    fn api_keys_expand_are_checked_and_redacted() {
        let c = parse("[gateway]\napi_keys = { ci = \"${TOKEN}-0123456789abcdef\" }\n").unwrap();
        assert_eq!(
            c.gateway.api_keys,
            vec![("ci".to_owned(), "s3cret-0123456789abcdef".to_owned())]
        );
        let printed = c.to_redacted_toml();
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("ci = \"<redacted>\""), "{printed}");
        let err = parse("[gateway]\napi_keys = { ci = \"short\" }\n").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("gateway.api_keys.ci"));
        let err = parse(
            "[gateway]\napi_keys = { a = \"0123456789abcdef0\", b = \"0123456789abcdef0\" }\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("share one key"), "{err}");
    }

    #[test]
    fn oauth_settings_are_checked_and_printed() {
        let c = parse(
            "[gateway]\nlisten = \"0.0.0.0:3000\"\n[gateway.oauth]\n\
             issuer = \"https://login.example/realms/a\"\n\
             resource = \"https://mcp.example/mcp\"\n\
             audiences = [\"mcpgate\"]\nscopes = [\"mcp\", \"mcp\"]\n\
             [servers.files]\ncommand = \"x\"\noauth_scopes = [\"files:read\"]\n",
        )
        .unwrap();
        let o = c.gateway.oauth.as_ref().unwrap();
        assert_eq!(o.audiences, ["https://mcp.example/mcp", "mcpgate"]);
        assert_eq!(o.scopes, ["mcp"]);
        assert_eq!(o.caller_claim, "sub");
        assert_eq!(o.leeway, Duration::from_secs(60));
        assert_eq!(o.jwks_url, None);
        assert_eq!(c.servers[0].oauth_scopes, ["files:read"]);
        // OAuth is authentication: a public address is allowed.
        assert!(c.check_exposure().is_ok());
        let printed = c.to_redacted_toml();
        assert!(printed.contains("[gateway.oauth]"), "{printed}");
        assert!(printed.contains("caller_claim = \"sub\""), "{printed}");
        assert!(
            printed.contains("jwks_refresh_interval = \"10s\""),
            "{printed}"
        );
        assert!(
            printed.contains("oauth_scopes = [\"files:read\"]"),
            "{printed}"
        );
        let again = parse(&printed).unwrap();
        assert_eq!(again.gateway.oauth, c.gateway.oauth);

        let key_of = |text: &str| parse(text).unwrap_err().key.unwrap_or_default();
        let base = "[gateway.oauth]\nissuer = \"https://i.example\"\nresource = \"https://r.example/mcp\"\n";
        assert_eq!(
            key_of("[gateway.oauth]\nissuer = \"i.example\"\nresource = \"https://r/mcp\"\n"),
            "gateway.oauth.issuer"
        );
        assert_eq!(
            key_of(&format!("{base}scopes = [\"has space\"]\n")),
            "gateway.oauth.scopes"
        );
        assert_eq!(
            key_of(&format!("{base}jwks_url = \"ftp://k\"\n")),
            "gateway.oauth.jwks_url"
        );
        assert_eq!(
            key_of(&format!("{base}jwks_refresh_interval = \"0s\"\n")),
            "gateway.oauth.jwks_refresh_interval"
        );
        assert_eq!(key_of(&format!("{base}unknown = 1\n")), "unknown");
        assert_eq!(
            key_of("[servers.s]\ncommand = \"x\"\noauth_scopes = [\"a\"]\n"),
            "servers.s.oauth_scopes"
        );
        assert_eq!(
            key_of(&format!(
                "[gateway]\napi_keys = {{ \"a@b\" = \"0123456789abcdef0\" }}\n{base}"
            )),
            "gateway.api_keys.a@b"
        );
    }

    #[test]
    fn exposure_without_keys_is_refused_unless_allowed() {
        let open = parse("[gateway]\nlisten = \"0.0.0.0:3000\"\n").unwrap();
        assert_eq!(
            open.check_exposure().unwrap_err().to_string(),
            "test.toml: refusing to listen on 0.0.0.0:3000 without api_keys: anyone who can reach \
             it could run the configured commands. Add [gateway] api_keys or [gateway.oauth], \
             listen on loopback, or set allow_unauthenticated = true if something in front of \
             mcpgate authenticates callers"
        );
        let allowed =
            parse("[gateway]\nlisten = \"0.0.0.0:3000\"\nallow_unauthenticated = true\n").unwrap();
        assert!(allowed.check_exposure().is_ok());
        let keyed = parse(
            "[gateway]\nlisten = \"0.0.0.0:3000\"\napi_keys = { a = \"0123456789abcdef0\" }\n",
        )
        .unwrap();
        assert!(keyed.check_exposure().is_ok());
        assert!(parse("").unwrap().check_exposure().is_ok());
    }

    #[test]
    fn bad_server_id_and_listen_are_rejected() {
        assert!(parse("[servers.\"a b\"]\ncommand = \"x\"\n").is_err());
        let err = parse("[gateway]\nlisten = \"nowhere\"\n").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("gateway.listen"));
        let err = parse("[servers.a]\nargs = []\n").unwrap_err();
        assert!(err.to_string().contains("command"), "{err}");
    }
}
