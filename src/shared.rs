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
                        let delivered = self.deliver_to(&session, message.clone());
                        if !delivered {
                            // Refused (the session has no stream to carry it):
                            // the backend gets an error answer; nothing to follow.
                            self.state().server_requests.remove(id);
                        }
                        delivered
                    }
                    None => {
                        tracing::warn!(
                            method,
                            "a shared backend's request cannot be tied to one session (none or several have requests in flight); refused"
                        );
                        match message.refusal() {
                            Some(refusal) => {
                                refusal.refuse(
                                    "the backend is shared: a request it sends can reach a client only while exactly one of its sessions has a request in flight",
                                );
                                true
                            }
                            None => false,
                        }
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;
    use std::time::Duration;

    use bytes::Bytes;
    use tokio::sync::mpsc;

    use super::*;
    use crate::config::{Config, ServerConfig, SessionMode};
    use crate::outbox::{Event, Outbox};
    use crate::session::Endpoint;

    fn server() -> Arc<ServerConfig> {
        let config = Config::parse(
            Path::new("t.toml"),
            "[servers.s]\ncommand = \"x\"\nsession_mode = \"shared\"\n",
            &HashMap::<String, String>::new(),
        )
        .expect("the test config parses");
        let server = Arc::clone(&config.servers[0]);
        assert_eq!(server.session_mode, SessionMode::Shared);
        server
    }

    fn session(id: &str) -> Arc<Session> {
        Arc::new(Session::new(
            Arc::from(id),
            Endpoint::Routed(server()),
            crate::session::Caller::default(),
            Duration::from_secs(60),
            Bytes::new(),
            "2025-06-18".into(),
            Arc::new(Outbox::default()),
        ))
    }

    fn message(json: &str) -> Message {
        Message::read(Bytes::from(json.to_owned())).expect("a test message reads")
    }

    /// What a stream has received so far, as text.
    fn received(events: &mut mpsc::Receiver<Box<Event>>) -> Vec<String> {
        std::iter::from_fn(|| events.try_recv().ok())
            .map(|event| String::from_utf8(event.message.to_vec()).expect("UTF-8"))
            .collect()
    }

    fn progress(token: &str) -> String {
        format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":{token},"progress":0.50,"total":1}}}}"#
        )
    }

    fn roots_request(id: &str) -> String {
        format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"roots/list"}}"#)
    }

    fn cancelled(id: &str) -> String {
        format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":{id},"reason":"timeout"}}}}"#
        )
    }

    /// A route with two member sessions, `a` and `b`, each with its GET
    /// stream open.
    fn two_members() -> (
        SharedRoute,
        Arc<Session>,
        Arc<Session>,
        crate::outbox::StreamHandle,
        crate::outbox::StreamHandle,
    ) {
        let route = SharedRoute::default();
        let (a, b) = (session("a"), session("b"));
        route.join(Arc::clone(&a));
        route.join(Arc::clone(&b));
        let (a_get, b_get) = (a.outbox.attach(), b.outbox.attach());
        (route, a, b, a_get, b_get)
    }

    const LIST_CHANGED: &str = r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#;

    #[test]
    fn sessions_using_the_same_progress_token_get_their_own_progress_with_their_token_put_back() {
        for client_token in [r#""a\u0062""#, "7.50"] {
            let route = SharedRoute::default();
            let (a, b) = (session("a"), session("b"));
            route.join(Arc::clone(&a));
            route.join(Arc::clone(&b));
            let mut a_get = a.outbox.attach();
            let mut a_post = a.outbox.open_request(Some(client_token.into()));
            let mut b_get = b.outbox.attach();
            let mut b_post = b.outbox.open_request(Some(client_token.into()));

            let for_a = route.map_progress_token(&a.id, client_token);
            let for_b = route.map_progress_token(&b.id, client_token);
            assert_ne!(for_a, for_b, "{client_token}");

            assert!(route.deliver(message(&progress(&for_b))));
            assert_eq!(received(&mut b_post.events), [progress(client_token)]);
            assert!(received(&mut b_get.events).is_empty());
            assert!(received(&mut a_post.events).is_empty(), "{client_token}");
            assert!(received(&mut a_get.events).is_empty(), "{client_token}");

            assert!(route.deliver(message(&progress(&for_a))));
            assert_eq!(received(&mut a_post.events), [progress(client_token)]);
            assert!(received(&mut b_post.events).is_empty(), "{client_token}");
        }
    }

    #[test]
    fn progress_with_a_forgotten_token_goes_nowhere() {
        let route = SharedRoute::default();
        let a = session("a");
        route.join(Arc::clone(&a));
        let mut a_get = a.outbox.attach();
        let token = route.map_progress_token(&a.id, "1");
        assert!(route.deliver(message(&progress(&token))), "known at first");
        assert_eq!(received(&mut a_get.events), [progress("1")]);

        route.forget_progress_token(&token);
        assert!(!route.deliver(message(&progress(&token))));
        assert!(received(&mut a_get.events).is_empty());
    }

    #[test]
    fn a_backend_request_goes_to_the_one_session_with_a_request_in_flight() {
        let (route, _a, b, mut a_get, mut b_get) = two_members();

        let _busy = b.begin_request();
        assert!(route.deliver(message(&roots_request("7"))));
        assert_eq!(received(&mut b_get.events), [roots_request("7")]);
        assert!(received(&mut a_get.events).is_empty());
    }

    #[test]
    fn a_backend_request_is_refused_when_no_session_or_several_have_requests_in_flight() {
        let route = SharedRoute::default();
        let (a, b) = (session("a"), session("b"));
        // Even the only member is not guessed at while it has nothing in flight.
        route.join(Arc::clone(&a));
        let mut a_get = a.outbox.attach();
        assert!(
            !route.deliver(message(&roots_request("1"))),
            "none in flight"
        );

        route.join(Arc::clone(&b));
        let mut b_get = b.outbox.attach();
        let _a_busy = a.begin_request();
        let _b_busy = b.begin_request();
        assert!(
            !route.deliver(message(&roots_request("2"))),
            "two in flight"
        );
        assert!(received(&mut a_get.events).is_empty());
        assert!(received(&mut b_get.events).is_empty());
    }

    #[test]
    fn a_backend_request_its_session_cannot_carry_is_not_remembered() {
        let route = SharedRoute::default();
        let a = session("a");
        route.join(Arc::clone(&a));
        let _a_busy = a.begin_request();
        // No stream open: the outbox refuses a request (it cannot wait).
        assert!(!route.deliver(message(&roots_request("9"))));
        assert!(route.state().server_requests.is_empty());
    }

    #[test]
    fn the_backends_cancellation_of_its_request_follows_it_to_its_session_once() {
        let (route, a, b, mut a_get, mut b_get) = two_members();
        let a_busy = a.begin_request();
        assert!(route.deliver(message(&roots_request(r#""r1""#))));
        assert_eq!(received(&mut a_get.events), [roots_request(r#""r1""#)]);

        // Which sessions are busy now does not matter: the request went to `a`.
        drop(a_busy);
        let _b_busy = b.begin_request();
        assert!(route.deliver(message(&cancelled(r#""r1""#))));
        assert_eq!(received(&mut a_get.events), [cancelled(r#""r1""#)]);
        assert!(received(&mut b_get.events).is_empty());

        assert!(!route.deliver(message(&cancelled(r#""r1""#))), "only once");
        assert!(!route.deliver(message(&cancelled(r#""r2""#))), "never sent");
        assert!(received(&mut a_get.events).is_empty());
        assert!(received(&mut b_get.events).is_empty());
    }

    #[test]
    fn other_notifications_reach_every_member() {
        let (route, _a, _b, mut a_get, mut b_get) = two_members();

        assert!(route.deliver(message(LIST_CHANGED)));
        assert_eq!(received(&mut a_get.events), [LIST_CHANGED]);
        assert_eq!(received(&mut b_get.events), [LIST_CHANGED]);
    }

    #[test]
    fn leaving_forgets_the_sessions_tokens_and_requests_and_says_how_many_still_share() {
        let route = SharedRoute::default();
        let (a, b, c) = (session("a"), session("b"), session("c"));
        for s in [&a, &b, &c] {
            route.join(Arc::clone(s));
        }
        let mut a_get = a.outbox.attach();
        let mut b_get = b.outbox.attach();
        let a_token = route.map_progress_token(&a.id, "1");
        let b_token = route.map_progress_token(&b.id, "1");
        let a_busy = a.begin_request();
        assert!(route.deliver(message(&roots_request("9"))));
        assert_eq!(received(&mut a_get.events), [roots_request("9")]);
        drop(a_busy);

        assert_eq!(route.leave(&a.id), 2);
        // A departed session gets nothing either way; what matters is that the
        // route does not keep its entries (they would pile up with every
        // session that ever shared the process), so look inside.
        {
            let state = route.state();
            assert_eq!(
                state.progress.keys().collect::<Vec<_>>(),
                [&b_token],
                "a's token is forgotten, b's kept"
            );
            assert!(state.server_requests.is_empty(), "a's request is forgotten");
        }
        assert!(!route.deliver(message(&progress(&a_token))));
        assert!(!route.deliver(message(&cancelled("9"))));
        assert!(route.deliver(message(&progress(&b_token))));
        assert_eq!(received(&mut b_get.events), [progress("1")]);

        assert_eq!(route.leave(&b.id), 1);
        assert_eq!(route.leave(&c.id), 0);
        assert_eq!(route.leave(&c.id), 0, "leaving twice changes nothing");
    }
}
