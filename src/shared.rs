//! Shared mode: one backend process serving every session of a server.
//!
//! Owns the routing of a shared backend's own messages among the sessions
//! that share it: progress notifications go to the session whose request
//! carried the token (tokens are rewritten on the way in, so two sessions using
//! the same token never cross), a backend request goes to the one session with
//! a request in flight (and is refused when that is ambiguous, rather than
//! guessed), the backend's cancellation of such a request follows it, and
//! other notifications (list changes, resource updates, logs) go to every
//! session, since they describe the one shared server. Answers to client
//! requests never come through here: the connection routes them by id. It
//! never spawns processes and never knows HTTP.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::jsonrpc::{self, Kind, Message};
use crate::launcher::ServerMessageSink;
use crate::protocol::method;
use crate::session::Session;

/// The sessions sharing one server's process, and what routes to which.
#[derive(Default)]
pub(crate) struct SharedRoute {
    state: Mutex<RouteState>,
    next_token: AtomicU64,
}

#[derive(Default)]
struct RouteState {
    members: HashMap<Arc<str>, Arc<Session>>,
    /// Gateway token (raw JSON) -> (session, the client's own token, raw JSON).
    progress: HashMap<String, (Arc<str>, Box<str>)>,
    /// Backend request id (raw JSON) -> the session it was sent to.
    server_requests: HashMap<String, Arc<str>>,
}

impl SharedRoute {
    fn state(&self) -> std::sync::MutexGuard<'_, RouteState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a session to the sharers.
    pub(crate) fn join(&self, session: Arc<Session>) {
        self.state()
            .members
            .insert(Arc::clone(&session.id), session);
    }

    /// Removes a session; returns how many sessions still share the process.
    pub(crate) fn leave(&self, id: &str) -> usize {
        let mut state = self.state();
        state.members.remove(id);
        state.progress.retain(|_, (owner, _)| &**owner != id);
        state.server_requests.retain(|_, owner| &**owner != id);
        state.members.len()
    }

    /// Replaces the client's progress token (raw JSON) with one unique to the
    /// gateway, remembered until [`SharedRoute::forget_progress_token`].
    pub(crate) fn map_progress_token(&self, session: &Arc<str>, client_token: &str) -> String {
        let token = format!(
            "\"mcpgate-{}\"",
            self.next_token.fetch_add(1, Ordering::Relaxed)
        );
        self.state()
            .progress
            .insert(token.clone(), (Arc::clone(session), client_token.into()));
        token
    }

    pub(crate) fn forget_progress_token(&self, token: &str) {
        self.state().progress.remove(token);
    }

    fn deliver_to(&self, session: &Session, message: Message) -> bool {
        session.outbox.deliver(message)
    }
}

impl ServerMessageSink for SharedRoute {
    fn deliver(&self, message: Message) -> bool {
        let method = message.method().unwrap_or_default();
        match (message.kind(), method) {
            (Kind::Notification, method::PROGRESS) => {
                let Some((token, range)) = message.peek().and_then(|peek| {
                    jsonrpc::notification_progress_token(message.bytes(), peek.params?)
                }) else {
                    return false;
                };
                let target = {
                    let state = self.state();
                    state.progress.get(token).and_then(|(owner, original)| {
                        Some((state.members.get(owner)?.clone(), original.clone()))
                    })
                };
                match target {
                    Some((session, original)) => {
                        self.deliver_to(&session, message.spliced(range, original.as_bytes()))
                    }
                    None => {
                        tracing::debug!(token, "progress for no request in flight; dropped");
                        false
                    }
                }
            }
            (Kind::Notification, method::CANCELLED) => {
                let owner = message
                    .peek()
                    .and_then(|peek| jsonrpc::cancelled_request_id(message.bytes(), peek.params?))
                    .and_then(|(id, _)| {
                        let mut state = self.state();
                        let owner = state.server_requests.remove(id)?;
                        state.members.get(&owner).cloned()
                    });
                owner.is_some_and(|session| self.deliver_to(&session, message.clone()))
            }
            (Kind::Request, _) => {
                let Some(id) = message.id() else {
                    return false;
                };
                let target = {
                    let state = self.state();
                    let mut busy = state.members.values().filter(|s| s.in_flight() > 0);
                    match (busy.next(), busy.next()) {
                        (Some(only), None) => Some(Arc::clone(only)),
                        _ => None,
                    }
                };
                match target {
                    Some(session) => {
                        self.state()
                            .server_requests
                            .insert(id.to_owned(), Arc::clone(&session.id));
                        self.deliver_to(&session, message.clone())
                    }
                    None => {
                        tracing::warn!(
                            method,
                            "a shared backend's request cannot be tied to one session (none or several have requests in flight); refused"
                        );
                        false
                    }
                }
            }
            _ => {
                let members: Vec<_> = self.state().members.values().cloned().collect();
                for session in &members {
                    self.deliver_to(session, message.clone());
                }
                true
            }
        }
    }
}
