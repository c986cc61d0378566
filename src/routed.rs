//! The routed endpoint, `/mcp/<serverID>`: one backend behind each session.
//!
//! Owns what a session-era message means on a routed session: `initialize`
//! creates the session and starts its process (per session, or joining the
//! server's one shared process), and answers with the backend's own result
//! (or, for a 2026-07-28 backend, one made from its `server/discover`);
//! requests go to that process and come back as it answered them (a tool
//! the server's allow-list hides is refused, and `tools/list` is filtered);
//! notifications and client responses are forwarded. Everything it does to a
//! process goes through the core. It speaks in message bytes and outcomes,
//! never in HTTP statuses or headers (that is `http`).

use std::sync::Arc;

use bytes::Bytes;

use crate::catalog::{self, names};
use crate::config::{ServerConfig, SessionMode};
use crate::core::answers::{launch_failed, request_failed, tool_not_allowed};
use crate::core::stateless_backend::initialize_from_discover;
use crate::core::{Core, Outcome, with_id};
use crate::jsonrpc::{self, Peek};
use crate::launcher::ServerMessageSink;
use crate::protocol::{Era, Version, method};
use crate::session::{Caller, Endpoint, Outbox, Session, pool_key};

/// The routed endpoint.
pub(crate) struct Routed {
    core: Arc<Core>,
}

impl Routed {
    pub(crate) fn new(core: Arc<Core>) -> Routed {
        Routed { core }
    }

    /// Starts a session on `server` with the client's `initialize` request
    /// (the gateway's own, for a stateless caller: `client` says which):
    /// [`Outcome::Created`], or an [`Outcome::Answer`] with the JSON-RPC error
    /// that says why not, or [`Outcome::Busy`].
    pub(crate) async fn initialize(
        &self,
        server: &Arc<ServerConfig>,
        caller: Caller,
        message: Bytes,
        peek: &Peek<'_>,
        client: Era,
    ) -> Outcome {
        let core = &self.core;
        let id = core.mint_session_id();
        let key = pool_key(server, &id);
        // Until the session is registered, giving up (a client that disconnects)
        // releases the slot and stops whatever was started for it alone.
        let own_process = server.session_mode == SessionMode::PerSession;
        let Some(pending) = core.admit(if own_process {
            vec![key.clone()]
        } else {
            vec![]
        }) else {
            tracing::warn!(server = %server.id, "max_sessions reached; initialize refused");
            return Outcome::Busy;
        };
        let outbox = Arc::new(Outbox::for_client(client, core.gateway().sse_replay_events));
        let sink: Arc<dyn ServerMessageSink> = match core.shared_route(server) {
            Some(route) => route,
            None => outbox.clone(),
        };
        let launched = match core
            .launch_for_new_session(&key, server, &message, sink)
            .await
        {
            Ok(launched) => launched,
            Err(error) => return Outcome::Answer(launch_failed(peek.id, server, &error)),
        };
        // A shared process was initialised once, by the session that started it;
        // later sessions get that answer with their own id.
        let response = match launched.init_response {
            Some(response) => response,
            None => match launched
                .conn
                .init_result()
                .and_then(|r| with_id(&r, peek.id))
            {
                Some(response) => response,
                None => {
                    return Outcome::Answer(jsonrpc::error_response(
                        peek.id,
                        jsonrpc::INTERNAL_ERROR,
                        &format!("backend `{}` has no initialize result to share", server.id),
                        None,
                    ));
                }
            },
        };
        // A 2026-07-28 backend answered `server/discover`; the client asked `initialize`.
        let response = if launched.conn.era() == Era::Stateless {
            initialize_from_discover(&response, peek)
        } else {
            response
        };
        let protocol_version = jsonrpc::peek(&response)
            .ok()
            .and_then(|p| {
                p.result
                    .and_then(|r| jsonrpc::string_member(r, "protocolVersion"))
            })
            .unwrap_or_else(|| Version::ASSUMED.as_str().to_owned());
        let session = Arc::new(Session::new(
            id,
            Endpoint::Routed(Arc::clone(server)),
            caller,
            server.session_idle_timeout,
            message,
            protocol_version,
            outbox,
        ));
        core.register(session, pending, response)
    }

    /// Forwards a request of a routed session and returns the answer: the
    /// backend's own, or a JSON-RPC error naming what failed.
    pub(crate) async fn request(
        &self,
        session: &Arc<Session>,
        message: &[u8],
        peek: &Peek<'_>,
    ) -> Bytes {
        let Some(server) = session.server() else {
            return not_this_endpoint(peek.id);
        };
        self.core
            .observe(session, peek, self.answer(session, server, message, peek))
            .await
    }

    async fn answer(
        &self,
        session: &Arc<Session>,
        server: &Arc<ServerConfig>,
        message: &[u8],
        peek: &Peek<'_>,
    ) -> Bytes {
        let method = peek.method.as_deref().unwrap_or_default();
        let filtered = server.filters_tools();
        if filtered
            && method == method::TOOLS_CALL
            && let Some(name) = peek.params.and_then(|p| jsonrpc::string_member(p, "name"))
            && !names::allowed(&server.tools, &name)
        {
            return tool_not_allowed(peek.id, server, &name);
        }
        let conn = match self.core.conn_for(session, server).await {
            Ok((conn, _)) => conn,
            Err(error) => return launch_failed(peek.id, server, &error),
        };
        match self.core.send(session, server, &conn, message, peek).await {
            Ok(answer) if filtered && method == method::TOOLS_LIST => {
                catalog::filter_tools(&answer, server)
            }
            Ok(answer) => answer,
            Err(failure) => request_failed(peek.id, server, &failure),
        }
    }

    /// Forwards a client notification (or a client's answer to a backend
    /// request) of a routed session to its process.
    pub(crate) async fn forward(&self, session: &Arc<Session>, message: &[u8], peek: &Peek<'_>) {
        let _in_flight = session.begin_request();
        let Some(server) = session.server() else {
            return;
        };
        if !self.core.is_for_backends(session, message, peek) {
            return;
        }
        match self.core.conn_for(session, server).await {
            Ok((conn, _)) => {
                self.core
                    .forward_to(session, server, &conn, message, peek)
                    .await;
            }
            Err(error) => {
                tracing::warn!(server = %server.id, session = %session.id, %error,
                    "client message not forwarded: backend unavailable");
            }
        }
    }
}

/// The answer to a request handed to the wrong endpoint (a bug, not a client's fault).
fn not_this_endpoint(id: Option<&str>) -> Bytes {
    jsonrpc::error_response(
        id,
        jsonrpc::INTERNAL_ERROR,
        "not a session of this endpoint",
        None,
    )
}
