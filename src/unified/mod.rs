//! The unified endpoint, `/mcp`: every configured backend behind one session.
//!
//! Owns what makes many backends look like one server: the gateway's own
//! `initialize` answer (capabilities merged, instructions combined), list
//! requests fanned out to every backend and merged with names prefixed
//! (`<serverID><tool_separator><name>`) and the gateway's own cursor, calls
//! routed back by prefix (tools, prompts, completions) or by URI (resources),
//! and the mapping of ids between the client and each backend's own requests.
//! This module and `catalog` are the only code that rewrites message
//! contents; everything else is passed through as the backend wrote it. It
//! never starts processes itself (it asks the core) and never knows HTTP.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::catalog::lists::{self, ListKind, Rewrite};
use crate::catalog::names;
use crate::config::ServerConfig;
use crate::core::answers::{launch_failed, request_failed, tool_not_allowed};
use crate::core::{Core, Outcome};
use crate::jsonrpc::{self, Kind, Message, Peek, build};
use crate::launcher::ServerMessageSink;
use crate::protocol::{Era, Version, method};
use crate::session::{Caller, Endpoint, EndpointState, Outbox, Session};

/// Most pages read from one backend when the gateway refreshes its URI map.
const MAX_REFRESH_PAGES: usize = 20;

/// What the unified endpoint remembers for one session.
#[derive(Default)]
struct UnifiedState {
    routes: Mutex<Routes>,
    next_server_request: AtomicU64,
}

#[derive(Default)]
struct Routes {
    /// Resource URI -> server id, from the lists the session has seen.
    uris: HashMap<String, String>,
    /// (URI template, server id), in config order.
    templates: Vec<(String, String)>,
    /// The client's in-flight request ids (raw JSON) -> the server handling them.
    in_flight: HashMap<String, String>,
    /// Gateway id of a backend's request (raw JSON) -> (server, the backend's own id).
    server_requests: HashMap<String, (String, String)>,
}

impl UnifiedState {
    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The unified state of `session`, if it is a unified session.
    fn of(session: &Session) -> Option<&UnifiedState> {
        session.endpoint_state::<UnifiedState>()
    }
}

impl EndpointState for UnifiedState {
    /// A backend's messages for a unified session: its requests get ids of
    /// the gateway's own (two backends may use the same ids).
    fn sink(
        self: Arc<Self>,
        session: &Arc<Session>,
        server: &ServerConfig,
    ) -> Arc<dyn ServerMessageSink> {
        Arc::new(UnifiedSink {
            session: Arc::clone(session),
            state: self,
            server: server.id.clone(),
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The initialize results of each server's latest handshake, for the unified
/// endpoint's merged capabilities.
#[derive(Default)]
struct BackendInfo {
    init_results: Mutex<HashMap<String, Bytes>>,
}

impl BackendInfo {
    fn get(&self, server: &str) -> Option<Bytes> {
        self.init_results
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(server)
            .cloned()
    }

    fn set(&self, server: &str, result: Bytes) {
        self.init_results
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(server.to_owned(), result);
    }

    /// The `capabilities` object of a server's cached initialize result.
    fn capabilities(&self, server: &str) -> Option<Value> {
        let answer = self.get(server)?;
        let result = jsonrpc::peek(&answer).ok()?.result?;
        serde_json::from_str(jsonrpc::member(result, "capabilities")?.get()).ok()
    }
}

/// A backend's messages for a unified session: its requests get ids of the
/// gateway's own (two backends may use the same ids), the rest passes through.
struct UnifiedSink {
    session: Arc<Session>,
    state: Arc<UnifiedState>,
    server: String,
}

impl ServerMessageSink for UnifiedSink {
    fn deliver(&self, message: Message) -> bool {
        let state = &self.state;
        let outbox = &self.session.outbox;
        match (message.kind(), message.method()) {
            (Kind::Request, _) => {
                let Some(id) = message.id() else {
                    return false;
                };
                let ours = format!(
                    "\"mcpgate-{}\"",
                    state.next_server_request.fetch_add(1, Ordering::Relaxed)
                );
                state
                    .routes()
                    .server_requests
                    .insert(ours.clone(), (self.server.clone(), id.to_owned()));
                let delivered = outbox.deliver(message.with_id(&ours));
                if !delivered {
                    state.routes().server_requests.remove(&ours);
                }
                delivered
            }
            (Kind::Notification, Some(method::CANCELLED)) => {
                let Some((id, range)) = message
                    .peek()
                    .and_then(|peek| jsonrpc::cancelled_request_id(message.bytes(), peek.params?))
                else {
                    return false;
                };
                let ours = state
                    .routes()
                    .server_requests
                    .iter()
                    .find(|(_, (server, original))| *server == self.server && original == id)
                    .map(|(ours, _)| ours.clone());
                match ours {
                    Some(ours) => outbox.deliver(message.spliced(range, ours.as_bytes())),
                    None => false,
                }
            }
            (_, Some(method::RESOURCES_LIST_CHANGED)) => {
                // The URI map is rebuilt from the next lists the client reads.
                let mut routes = state.routes();
                routes.uris.retain(|_, server| *server != self.server);
                routes
                    .templates
                    .retain(|(_, server)| *server != self.server);
                drop(routes);
                outbox.deliver(message)
            }
            _ => outbox.deliver(message),
        }
    }
}

/// The unified endpoint's answer to `initialize`.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct InitializeResult {
    protocol_version: &'static str,
    capabilities: Value,
    server_info: ServerInfo,
    instructions: String,
}

#[derive(serde::Serialize)]
struct ServerInfo {
    name: &'static str,
    version: &'static str,
}

/// The parameters of a list request of the gateway's own.
#[derive(serde::Serialize)]
struct ListParams<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    cursor: Option<&'a str>,
}

fn invalid_params(id: Option<&str>, message: &str) -> Bytes {
    jsonrpc::error_response(id, jsonrpc::INVALID_PARAMS, message, None)
}

/// Merges capability objects: every key any backend offers, boolean flags OR-ed.
fn merge_capabilities(all: impl Iterator<Item = Value>) -> Value {
    let mut merged = Map::new();
    for caps in all {
        let Value::Object(caps) = caps else { continue };
        for (key, value) in caps {
            match (merged.get_mut(&key), value) {
                (None, value) => {
                    merged.insert(key, value);
                }
                (Some(Value::Object(have)), Value::Object(more)) => {
                    for (flag, v) in more {
                        match (have.get_mut(&flag), v) {
                            (Some(Value::Bool(a)), Value::Bool(b)) => *a |= b,
                            (None, v) => {
                                have.insert(flag, v);
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Value::Object(merged)
}

/// The URIs already warned about as claimed by two servers: each is said
/// once, not on every list (at most [`ClaimedTwice::MAX`] are remembered).
#[derive(Default)]
struct ClaimedTwice(Mutex<HashSet<String>>);

impl ClaimedTwice {
    const MAX: usize = 4096;

    /// True the first time `uri` is seen here (while there is room).
    fn first_time(&self, uri: &str) -> bool {
        let mut warned = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if warned.contains(uri) || warned.len() >= Self::MAX {
            return false;
        }
        warned.insert(uri.to_owned())
    }
}

/// The unified endpoint.
pub(crate) struct Unified {
    core: Arc<Core>,
    backend_info: BackendInfo,
    claimed_twice: ClaimedTwice,
}

impl Unified {
    pub(crate) fn new(core: Arc<Core>) -> Unified {
        Unified {
            core,
            backend_info: BackendInfo::default(),
            claimed_twice: ClaimedTwice::default(),
        }
    }

    /// The server with this id, if the session's caller may reach it.
    fn server_by_id(&self, session: &Session, id: &str) -> Option<Arc<ServerConfig>> {
        self.core.server(id).filter(|s| session.reaches(s))
    }

    /// The servers the session's caller may reach, in config order.
    fn servers_of(&self, session: &Session) -> Vec<Arc<ServerConfig>> {
        self.core
            .servers()
            .iter()
            .filter(|s| session.reaches(s))
            .cloned()
            .collect()
    }

    /// Of the servers the session's caller may reach, those whose latest
    /// handshake offered `capability`, in config order; servers never started
    /// yet count when `unknown_counts`.
    fn servers_offering(
        &self,
        session: &Session,
        capability: &str,
        unknown_counts: bool,
    ) -> Vec<Arc<ServerConfig>> {
        self.servers_of(session)
            .into_iter()
            .filter(|s| match self.backend_info.capabilities(&s.id) {
                Some(caps) => caps.get(capability).is_some(),
                None => unknown_counts,
            })
            .collect()
    }

    /// Starts a unified session. The gateway answers `initialize` itself: the
    /// client's version if the gateway serves it (else its latest), the union of
    /// the backends' capabilities, and their instructions, each under its server's
    /// name. Backends with no known capabilities yet are started now, in parallel;
    /// one that fails is left out (and logged) and the others serve.
    pub(crate) async fn initialize(
        &self,
        caller: Caller,
        message: Bytes,
        peek: &Peek<'_>,
        client: Era,
    ) -> Outcome {
        let id = self.core.mint_session_id();
        let requested = peek
            .params
            .and_then(|p| jsonrpc::string_member(p, "protocolVersion"));
        let version = Version::answer_to_session_client(requested.as_deref()).as_str();
        let Some(mut pending) = self.core.admit(vec![]) else {
            tracing::warn!("max_sessions reached; unified initialize refused");
            return Outcome::Busy;
        };
        let session = Arc::new(Session::new(
            Arc::clone(&id),
            Endpoint::Unified(Arc::new(UnifiedState::default())),
            caller,
            self.core.gateway().session_idle_timeout,
            message,
            version.to_owned(),
            Arc::new(Outbox::for_client(
                client,
                self.core.gateway().sse_replay_events,
            )),
        ));
        let servers = self.servers_of(&session);
        let unknown: Vec<&Arc<ServerConfig>> = servers
            .iter()
            .filter(|s| self.backend_info.get(&s.id).is_none())
            .collect();
        for server in &unknown {
            pending.also_evict(session.key_for(server));
        }
        let session_ref = &session;
        let starts = unknown
            .iter()
            .map(|server| async move { (server, self.core.conn_for(session_ref, server).await) });
        for (server, started) in futures_util::future::join_all(starts).await {
            match started {
                Ok((_, Some(answer))) => self.backend_info.set(&server.id, answer),
                Ok((_, None)) => {}
                Err(error) => tracing::warn!(server = %server.id, %error,
                    "backend unavailable to the unified endpoint; its tools are left out"),
            }
        }
        let capabilities = merge_capabilities(
            servers
                .iter()
                .filter_map(|s| self.backend_info.capabilities(&s.id)),
        );
        let instructions: Vec<String> = servers
            .iter()
            .filter_map(|s| {
                let answer = self.backend_info.get(&s.id)?;
                let result = jsonrpc::peek(&answer).ok()?.result?;
                let text = jsonrpc::string_member(result, "instructions")?;
                Some(format!("## {}\n{text}", s.id))
            })
            .collect();
        let separator = &self.core.gateway().tool_separator;
        let mut own_instructions = format!(
            "mcpgate unified endpoint: tools and prompts of server S are named S{separator}<name>."
        );
        if !instructions.is_empty() {
            own_instructions.push_str("\n\n");
            own_instructions.push_str(&instructions.join("\n\n"));
        }
        let response = build::success(
            peek.id,
            InitializeResult {
                protocol_version: version,
                capabilities,
                server_info: ServerInfo {
                    name: "mcpgate",
                    version: env!("CARGO_PKG_VERSION"),
                },
                instructions: own_instructions,
            },
        );
        self.core.register(session, pending, response)
    }

    /// Answers a request of a unified session.
    pub(crate) async fn request(
        &self,
        session: &Arc<Session>,
        message: &[u8],
        peek: &Peek<'_>,
    ) -> Bytes {
        self.core
            .observe(session, peek, self.answer(session, message, peek))
            .await
    }

    async fn answer(&self, session: &Arc<Session>, message: &[u8], peek: &Peek<'_>) -> Bytes {
        let method = peek.method.as_deref().unwrap_or_default();
        if method == method::PING {
            return build::success(peek.id, build::raw("{}"));
        }
        if let Some(kind) = ListKind::from_method(method) {
            return self.merged_list(session, kind, peek).await;
        }
        let Some(params) = peek.params else {
            return invalid_params(peek.id, &format!("`{method}` needs params"));
        };
        match method {
            method::TOOLS_CALL | method::PROMPTS_GET => {
                let Some(raw_name) = jsonrpc::member(params, "name") else {
                    return invalid_params(peek.id, "params.name is missing");
                };
                self.call_by_name(
                    session,
                    message,
                    peek,
                    raw_name,
                    method == method::TOOLS_CALL,
                )
                .await
            }
            method::COMPLETE => {
                let Some(reference) = jsonrpc::member(params, "ref") else {
                    return invalid_params(peek.id, "params.ref is missing");
                };
                if let Some(raw_name) = jsonrpc::member(reference, "name") {
                    self.call_by_name(session, message, peek, raw_name, false)
                        .await
                } else if let Some(uri) = jsonrpc::string_member(reference, "uri") {
                    self.call_by_uri(session, message, peek, &uri).await
                } else {
                    invalid_params(peek.id, "params.ref has neither name nor uri")
                }
            }
            method::RESOURCES_READ
            | method::RESOURCES_SUBSCRIBE
            | method::RESOURCES_UNSUBSCRIBE => match jsonrpc::string_member(params, "uri") {
                Some(uri) => self.call_by_uri(session, message, peek, &uri).await,
                None => invalid_params(peek.id, "params.uri is missing"),
            },
            method::SET_LOG_LEVEL => {
                let targets = self.servers_offering(session, "logging", false);
                let sends = targets
                    .iter()
                    .map(|server| self.send_to(session, server, message, peek));
                futures_util::future::join_all(sends).await;
                build::success(peek.id, build::raw("{}"))
            }
            _ => jsonrpc::error_response(
                peek.id,
                jsonrpc::METHOD_NOT_FOUND,
                &format!("Method not found: `{method}` is not served by the unified endpoint"),
                None,
            ),
        }
    }

    /// Routes a call by its prefixed name (`name` is the raw JSON string inside
    /// `message`), with the prefix removed.
    async fn call_by_name(
        &self,
        session: &Arc<Session>,
        message: &[u8],
        peek: &Peek<'_>,
        raw_name: &serde_json::value::RawValue,
        is_tool: bool,
    ) -> Bytes {
        let separator = self.core.gateway().tool_separator.as_str();
        let Ok(name) = serde_json::from_str::<String>(raw_name.get()) else {
            return invalid_params(peek.id, "the name must be a string");
        };
        let Some((server, backend_name)) = names::split(&name, separator)
            .and_then(|(s, n)| Some((self.server_by_id(session, s)?, n)))
        else {
            return invalid_params(
                peek.id,
                &format!(
                    "`{name}` names no configured server (names are <serverID>{separator}<name>)"
                ),
            );
        };
        if is_tool && !names::allowed(&server.tools, backend_name) {
            return tool_not_allowed(peek.id, &server, backend_name);
        }
        let unprefixed = serde_json::to_string(backend_name).expect("strings serialise");
        let range = jsonrpc::range_in(message, raw_name.get());
        let rewritten = jsonrpc::splice(message, range, unprefixed.as_bytes());
        match jsonrpc::peek(&rewritten) {
            Ok(p) => self.send_to(session, &server, &rewritten, &p).await,
            Err(_) => invalid_params(peek.id, "the name could not be rewritten"),
        }
    }

    /// Routes a call by resource URI; an unknown URI first refreshes the map.
    async fn call_by_uri(
        &self,
        session: &Arc<Session>,
        message: &[u8],
        peek: &Peek<'_>,
        uri: &str,
    ) -> Bytes {
        let mut server = self.server_for_uri(session, uri);
        if server.is_none() {
            self.refresh_resources(session).await;
            server = self.server_for_uri(session, uri);
        }
        match server {
            Some(server) => self.send_to(session, &server, message, peek).await,
            None => invalid_params(
                peek.id,
                &format!("no configured server offers resource `{uri}`"),
            ),
        }
    }

    fn server_for_uri(&self, session: &Session, uri: &str) -> Option<Arc<ServerConfig>> {
        let state = UnifiedState::of(session)?;
        let routes = state.routes();
        let id = routes.uris.get(uri).cloned().or_else(|| {
            routes
                .templates
                .iter()
                .find(|(template, _)| names::template_matches(template, uri))
                .map(|(_, server)| server.clone())
        })?;
        self.server_by_id(session, &id)
    }

    /// Sends a request to one server for the session, tracking it for cancellation.
    async fn send_to(
        &self,
        session: &Arc<Session>,
        server: &Arc<ServerConfig>,
        message: &[u8],
        peek: &Peek<'_>,
    ) -> Bytes {
        let Some(state) = UnifiedState::of(session) else {
            return jsonrpc::error_response(
                peek.id,
                jsonrpc::INTERNAL_ERROR,
                "not a unified session",
                None,
            );
        };
        if !session.reaches(server) {
            return invalid_params(
                peek.id,
                &format!(
                    "server `{}` is not reachable with this caller's scopes",
                    server.id
                ),
            );
        }
        let conn = match self.core.conn_for(session, server).await {
            Ok((conn, started)) => {
                if let Some(answer) = started {
                    self.backend_info.set(&server.id, answer);
                }
                conn
            }
            Err(error) => return launch_failed(peek.id, server, &error),
        };
        let client_id = peek.id.unwrap_or("null").to_owned();
        state
            .routes()
            .in_flight
            .insert(client_id.clone(), server.id.clone());
        let answer = self.core.send(session, server, &conn, message, peek).await;
        state.routes().in_flight.remove(&client_id);
        match answer {
            Ok(answer) => answer,
            Err(failure) => request_failed(peek.id, server, &failure),
        }
    }

    /// Fans a list request out to every backend that offers such items and
    /// merges the pages; the cursor says which backends still have pages.
    async fn merged_list(&self, session: &Arc<Session>, kind: ListKind, peek: &Peek<'_>) -> Bytes {
        let cursor = peek
            .params
            .and_then(|p| jsonrpc::string_member(p, "cursor"));
        let targets: Vec<(Arc<ServerConfig>, Option<String>)> = match cursor {
            Some(cursor) => match lists::decode_cursor(&cursor) {
                Some(pending) => pending
                    .into_iter()
                    .filter_map(|(s, c)| Some((self.server_by_id(session, &s)?, Some(c))))
                    .collect(),
                None => return invalid_params(peek.id, "invalid cursor"),
            },
            None => self
                .servers_offering(session, kind.capability(), true)
                .into_iter()
                .map(|s| (s, None))
                .collect(),
        };
        let pages = futures_util::future::join_all(
            targets
                .iter()
                .map(|(server, cursor)| self.list_page(session, server, kind, cursor.as_deref())),
        )
        .await;
        let mut items = Vec::new();
        let mut seen = HashSet::new();
        let mut pending = Vec::new();
        for ((server, _), page) in targets.iter().zip(pages) {
            let Some(mut page) = page else { continue };
            if let Some(next) = page.next_cursor.take() {
                pending.push((server.id.clone(), next));
            }
            lists::merge_page(&mut items, &mut seen, page);
        }
        let next = (!pending.is_empty()).then(|| lists::encode_cursor(&pending));
        build::success(
            peek.id,
            build::raw(&lists::merged_result(kind, &items, next.as_deref())),
        )
    }

    /// One page of one backend's list, rewritten; `None` when the backend failed.
    async fn list_page(
        &self,
        session: &Arc<Session>,
        server: &Arc<ServerConfig>,
        kind: ListKind,
        cursor: Option<&str>,
    ) -> Option<lists::Page> {
        let request = build::request(build::raw("0"), kind.method(), Some(ListParams { cursor }));
        let peek = jsonrpc::peek(&request).ok()?;
        let answer = self.send_to(session, server, &request, &peek).await;
        let answer_peek = jsonrpc::peek(&answer).ok()?;
        let Some(result) = answer_peek.result else {
            tracing::warn!(server = %server.id, method = kind.method(),
                answer = %String::from_utf8_lossy(&answer), "backend left out of a merged list");
            return None;
        };
        let rewrite = Rewrite {
            prefix: Some((&server.id, &self.core.gateway().tool_separator)),
            allow: server.filters_tools().then_some(server.tools.as_slice()),
        };
        let page = match lists::read_page(result, kind, &rewrite) {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(server = %server.id, method = kind.method(), error = %e,
                    "backend's list result unreadable; left out");
                return None;
            }
        };
        self.learn_uris(session, server, kind, &page.uris);
        Some(page)
    }

    /// Records which server offers which resource URIs; on a conflict the server
    /// first in config order wins, and the conflict is logged (once per URI).
    fn learn_uris(
        &self,
        session: &Session,
        server: &ServerConfig,
        kind: ListKind,
        uris: &[Option<String>],
    ) {
        let Some(state) = UnifiedState::of(session) else {
            return;
        };
        let servers = self.core.servers();
        let order = |id: &str| servers.iter().position(|s| s.id == id);
        let mut routes = state.routes();
        for uri in uris.iter().flatten() {
            match kind {
                ListKind::Resources => match routes.uris.get(uri) {
                    Some(owner) if owner != &server.id => {
                        let (first, also) = if order(&server.id) < order(owner) {
                            (server.id.clone(), owner.clone())
                        } else {
                            (owner.clone(), server.id.clone())
                        };
                        if self.claimed_twice.first_time(uri) {
                            tracing::warn!(uri, first = %first, also = %also,
                                "two servers offer the same resource; the one first in the config serves it");
                        }
                        routes.uris.insert(uri.clone(), first);
                    }
                    Some(_) => {}
                    None => {
                        routes.uris.insert(uri.clone(), server.id.clone());
                    }
                },
                ListKind::ResourceTemplates
                    if !routes
                        .templates
                        .iter()
                        .any(|(t, s)| t == uri && *s == server.id) =>
                {
                    routes.templates.push((uri.clone(), server.id.clone()));
                    routes
                        .templates
                        .sort_by_key(|(_, s)| order(s).unwrap_or(usize::MAX));
                }
                _ => {}
            }
        }
    }

    /// Reads every backend's resources and templates (bounded) to learn their URIs.
    async fn refresh_resources(&self, session: &Arc<Session>) {
        let servers = self.servers_offering(session, "resources", true);
        let reads = servers.iter().flat_map(|server| {
            [ListKind::Resources, ListKind::ResourceTemplates].map(|kind| async move {
                let mut cursor: Option<String> = None;
                for _ in 0..MAX_REFRESH_PAGES {
                    match self
                        .list_page(session, server, kind, cursor.as_deref())
                        .await
                    {
                        Some(page) if page.next_cursor.is_some() => cursor = page.next_cursor,
                        _ => break,
                    }
                }
            })
        });
        futures_util::future::join_all(reads).await;
    }

    /// Forwards a unified session's notification or response to the right backends.
    pub(crate) async fn forward(&self, session: &Arc<Session>, message: &[u8], peek: &Peek<'_>) {
        let _in_flight = session.begin_request();
        let Some(state) = UnifiedState::of(session) else {
            return;
        };
        if !self.core.is_for_backends(session, message, peek) {
            return;
        }
        match (peek.kind, peek.method.as_deref()) {
            (Kind::Response, _) => {
                let (Some(id), Some(range)) = (peek.id, peek.id_range.clone()) else {
                    return;
                };
                let Some((server_id, original)) = state.routes().server_requests.remove(id) else {
                    tracing::debug!(id, "answer to no backend request; dropped");
                    return;
                };
                let restored = jsonrpc::splice(message, range, original.as_bytes());
                if let Some(server) = self.server_by_id(session, &server_id) {
                    self.forward_to_live(session, &server, &restored).await;
                }
            }
            (_, Some(method::CANCELLED)) => {
                let server_id = peek
                    .params
                    .and_then(|p| jsonrpc::cancelled_request_id(message, p))
                    .and_then(|(id, _)| state.routes().in_flight.get(id).cloned());
                if let Some(server) = server_id
                    .as_deref()
                    .and_then(|s| self.server_by_id(session, s))
                {
                    self.forward_to_live(session, &server, message).await;
                }
            }
            _ => {
                for server in &self.servers_of(session) {
                    self.forward_to_live(session, server, message).await;
                }
            }
        }
    }

    /// Forwards to a backend only if this session already has it running.
    async fn forward_to_live(
        &self,
        session: &Arc<Session>,
        server: &Arc<ServerConfig>,
        message: &[u8],
    ) {
        let Some(conn) = self.core.live_conn(session, server) else {
            return;
        };
        if let Ok(peek) = jsonrpc::peek(message) {
            self.core
                .forward_to(session, server, &conn, message, &peek)
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn capabilities_are_merged_with_flags_ored() {
        let merged = merge_capabilities(
            [
                json!({"tools": {"listChanged": false}, "logging": {}}),
                json!({"tools": {"listChanged": true}, "resources": {"subscribe": true}}),
            ]
            .into_iter(),
        );
        assert_eq!(
            merged,
            json!({"tools": {"listChanged": true}, "logging": {}, "resources": {"subscribe": true}})
        );
    }
}
