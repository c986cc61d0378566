//! `subscriptions/listen` (2026-07-28) for stateless callers, whatever their
//! backend speaks.
//!
//! Owns one *hub* per caller process: it takes the change notifications the
//! backend sends (its hidden session's server-initiated stream) and hands each
//! to the listen streams whose filter asked for it, tagged with that stream's
//! `io.modelcontextprotocol/subscriptionId` (the id of its `subscriptions/listen`
//! request). The gateway acknowledges each listen itself, with the part of the
//! filter the backend's capabilities can honour. What makes the backend send:
//! a session-era backend sends list changes anyway and gets `resources/subscribe`
//! for each URI asked for; a 2026-07-28 backend gets `subscriptions/listen`
//! requests of the gateway's own (one for the list changes, one per new set of
//! URIs), whose subscription ids the hub replaces.
//! It never speaks HTTP and never sends a listener a notification type it did
//! not ask for.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use super::{Bridge, StatelessCall, lock};
use crate::core::{Outcome, Step};
use crate::jsonrpc::{self, Kind, build};
use crate::protocol::{meta, method};
use crate::session::Session;

/// What a listen stream asked for (its `notifications` filter), serialised
/// as the acknowledgment states it.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Filter {
    #[serde(rename = "toolsListChanged", skip_serializing_if = "is_false")]
    tools: bool,
    #[serde(rename = "promptsListChanged", skip_serializing_if = "is_false")]
    prompts: bool,
    #[serde(rename = "resourcesListChanged", skip_serializing_if = "is_false")]
    resources: bool,
    #[serde(
        rename = "resourceSubscriptions",
        skip_serializing_if = "Vec::is_empty"
    )]
    uris: Vec<String>,
}

fn is_false(flag: &bool) -> bool {
    !flag
}

/// The params of a `subscriptions/listen` (and of its acknowledgment, with
/// the subscription's id in `_meta`).
#[derive(Serialize)]
struct ListenParams<'a> {
    #[serde(rename = "_meta", skip_serializing_if = "Option::is_none")]
    meta: Option<BTreeMap<&'static str, &'a RawValue>>,
    notifications: &'a Filter,
}

/// The params of a `resources/subscribe`.
#[derive(Serialize)]
struct SubscribeParams<'a> {
    uri: &'a str,
}

/// The `_meta` that says which subscription a message belongs to.
fn subscription_meta(id: &str) -> BTreeMap<&'static str, &RawValue> {
    BTreeMap::from([(meta::SUBSCRIPTION_ID, build::raw(id))])
}

impl Filter {
    fn parse(params: Option<&RawValue>) -> Filter {
        let Some(notifications) = params.and_then(|p| jsonrpc::member(p, "notifications")) else {
            return Filter::default();
        };
        let flag =
            |name| jsonrpc::member(notifications, name).is_some_and(|v| v.get().trim() == "true");
        Filter {
            tools: flag("toolsListChanged"),
            prompts: flag("promptsListChanged"),
            resources: flag("resourcesListChanged"),
            uris: jsonrpc::member(notifications, "resourceSubscriptions")
                .and_then(|u| serde_json::from_str(u.get()).ok())
                .unwrap_or_default(),
        }
    }

    /// The part of `self` that a backend with `capabilities` (raw JSON) can honour.
    fn honoured_by(&self, capabilities: Option<&RawValue>) -> Filter {
        let has = |capability: &str, flag: &str| {
            capabilities
                .and_then(|c| jsonrpc::member(c, capability))
                .and_then(|c| jsonrpc::member(c, flag))
                .is_some_and(|v| v.get().trim() == "true")
        };
        Filter {
            tools: self.tools && has("tools", "listChanged"),
            prompts: self.prompts && has("prompts", "listChanged"),
            resources: self.resources && has("resources", "listChanged"),
            uris: if has("resources", "subscribe") {
                self.uris.clone()
            } else {
                Vec::new()
            },
        }
    }

    /// True when a notification of `method` (with `params`) is one this filter asked for.
    fn wants(&self, method: &str, params: Option<&RawValue>) -> bool {
        match method {
            method::TOOLS_LIST_CHANGED => self.tools,
            method::PROMPTS_LIST_CHANGED => self.prompts,
            method::RESOURCES_LIST_CHANGED => self.resources,
            method::RESOURCES_UPDATED => params
                .and_then(|p| jsonrpc::string_member(p, "uri"))
                .is_some_and(|uri| self.uris.contains(&uri)),
            _ => false,
        }
    }
}

struct Listener {
    /// The raw id of the `subscriptions/listen` request: the subscription id.
    id: String,
    filter: Filter,
    tx: mpsc::Sender<Step>,
}

/// The listen streams of one caller process.
#[derive(Default)]
pub(crate) struct Hub {
    listeners: Mutex<Vec<Listener>>,
    /// URIs the backend was already asked to report on.
    subscribed: Mutex<HashSet<String>>,
    /// A 2026-07-28 backend's listen of the gateway's own, while open: a
    /// sender whose drop (or send) ends it.
    backend: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

/// Numbers the gateway's own backend listens (their ids must differ, so that
/// cancelling one never reaches another).
static NEXT_BACKEND_LISTEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Hub {
    /// True once every listen stream of the hub has gone.
    fn has_no_listener(&self) -> bool {
        lock(&self.listeners).iter().all(|l| l.tx.is_closed())
    }

    /// Hands one backend message to the listeners that asked for it.
    fn fan_out(&self, message: &[u8]) {
        let Ok(peek) = jsonrpc::peek(message) else {
            return;
        };
        if peek.kind != Kind::Notification {
            return;
        }
        let method = peek.method.as_deref().unwrap_or_default();
        // The backend's own subscription id (2026-07-28 backends) is replaced.
        let untagged = jsonrpc::without_meta_members(message, &peek, meta::SUBSCRIPTION_ID);
        let base: &[u8] = untagged.as_deref().unwrap_or(message);
        let Ok(base_peek) = jsonrpc::peek(base) else {
            return;
        };
        lock(&self.listeners).retain(|listener| {
            if !listener.filter.wants(method, peek.params) {
                return !listener.tx.is_closed();
            }
            let tagged = jsonrpc::with_meta_members(
                base,
                &base_peek,
                &build::members(&subscription_meta(&listener.id)),
            );
            match listener.tx.try_send(Step::Note(Bytes::from(tagged))) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!("a listen stream is not reading; notification dropped");
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }
}

impl Bridge {
    /// Opens a `subscriptions/listen` stream for a stateless caller on its
    /// process (`session`).
    pub(super) async fn listen(
        self: &Arc<Self>,
        session: &Arc<Session>,
        call: &StatelessCall,
        params: Option<&RawValue>,
        init: Option<&[u8]>,
        modern: bool,
    ) -> Outcome {
        if !call.accepts_stream {
            return super::refused(
                &call.id,
                jsonrpc::INVALID_REQUEST,
                "subscriptions/listen answers with an event stream: Accept must list text/event-stream",
                None,
            );
        }
        let capabilities = init
            .and_then(|i| jsonrpc::peek(i).ok()?.result)
            .and_then(|r| jsonrpc::member(r, "capabilities"));
        let honoured = Filter::parse(params).honoured_by(capabilities);
        let ack = build::notification(
            method::SUBSCRIPTIONS_ACKNOWLEDGED,
            Some(ListenParams {
                meta: Some(subscription_meta(&call.id)),
                notifications: &honoured,
            }),
        );
        let (tx, rx) = mpsc::channel(256);
        let hub = self.join_hub(
            session,
            Listener {
                id: call.id.clone(),
                filter: honoured.clone(),
                tx,
            },
        );
        let new_uris: Vec<String> = {
            let mut subscribed = lock(&hub.subscribed);
            honoured
                .uris
                .iter()
                .filter(|uri| subscribed.insert((*uri).clone()))
                .cloned()
                .collect()
        };
        if modern && (!new_uris.is_empty() || lock(&hub.backend).is_none()) {
            // One backend listen for every list change the backend can report
            // and every URI asked for so far (replacing the previous one).
            let all = Filter {
                tools: true,
                prompts: true,
                resources: true,
                uris: lock(&hub.subscribed).iter().cloned().collect(),
            }
            .honoured_by(capabilities);
            self.backend_listen(session, &hub, &all);
        } else if !modern {
            for uri in &new_uris {
                let subscribe = build::request(
                    build::raw("0"),
                    method::RESOURCES_SUBSCRIBE,
                    Some(SubscribeParams { uri }),
                );
                if let Ok(peek) = jsonrpc::peek(&subscribe) {
                    let _ = self.endpoints.request(session, &subscribe, &peek).await;
                }
            }
        }
        Outcome::Stream(ack, rx)
    }

    /// Joins `listener` to the hub of a caller process, made (and fed from the
    /// process's server-initiated stream) on first use.
    fn join_hub(&self, session: &Arc<Session>, listener: Listener) -> Arc<Hub> {
        let mut hubs = lock(&self.hubs);
        if let Some(hub) = hubs.get(&session.id) {
            lock(&hub.listeners).push(listener);
            return Arc::clone(hub);
        }
        let hub = Arc::new(Hub::default());
        lock(&hub.listeners).push(listener);
        hubs.insert(Arc::clone(&session.id), Arc::clone(&hub));
        let mut stream = session.outbox.attach();
        let (feeding, hubs) = (Arc::clone(&hub), Arc::clone(&self.hubs));
        let id = Arc::clone(&session.id);
        let every = self.core.gateway().cleanup_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tokio::select! {
                    event = stream.events.recv() => match event {
                        Some(event) => feeding.fan_out(&event.message),
                        // The process's session ended: so do its listen streams.
                        None => break,
                    },
                    _ = tick.tick() => {
                        // No listener left: let go of the stream, so that the
                        // process can go idle; a later listen makes a new hub.
                        // (Listeners join under the same lock, so none is lost.)
                        let mut hubs = lock(&hubs);
                        if feeding.has_no_listener() {
                            hubs.remove(&id);
                            return;
                        }
                    }
                }
            }
            let mut hubs = lock(&hubs);
            if hubs.get(&id).is_some_and(|h| Arc::ptr_eq(h, &feeding)) {
                hubs.remove(&id);
            }
        });
        hub
    }

    /// Sends a 2026-07-28 backend a `subscriptions/listen` of the gateway's own
    /// (ending the one before), kept open while the hub has listeners: once the
    /// last one has gone (looked at every `cleanup_interval`), it is cancelled,
    /// so that the process can go idle.
    fn backend_listen(self: &Arc<Self>, session: &Arc<Session>, hub: &Arc<Hub>, filter: &Filter) {
        let n = NEXT_BACKEND_LISTEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("\"mcpgate-listen-{n}\"");
        let listen = build::request(
            build::raw(&id),
            method::LISTEN,
            Some(ListenParams {
                meta: None,
                notifications: filter,
            }),
        );
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        // Dropping the previous sender ends the previous listen.
        *lock(&hub.backend) = Some(stop_tx);
        let (bridge, session, hub) = (Arc::clone(self), Arc::clone(session), Arc::clone(hub));
        let every = self.core.gateway().cleanup_interval;
        tokio::spawn(async move {
            let Ok(peek) = jsonrpc::peek(&listen) else {
                return;
            };
            let answer = bridge.endpoints.request(&session, &listen, &peek);
            tokio::pin!(answer);
            let mut tick = tokio::time::interval(every);
            let idle = loop {
                tokio::select! {
                    _ = &mut answer => break false,
                    _ = &mut stop_rx => break false,
                    _ = tick.tick() => {
                        if hub.has_no_listener() {
                            break true;
                        }
                    }
                }
            };
            // Cancelled while the request is still known, so the backend hears of it.
            let cancel = build::cancelled(&id, "no listener is left");
            if let Ok(peek) = jsonrpc::peek(&cancel) {
                bridge.endpoints.forward(&session, &cancel, &peek).await;
            }
            if idle {
                lock(&hub.listeners).clear();
                lock(&hub.subscribed).clear();
                lock(&hub.backend).take();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).unwrap()
    }

    #[test]
    fn a_filter_is_honoured_as_far_as_the_backend_can() {
        let params = raw(
            r#"{"notifications":{"toolsListChanged":true,"promptsListChanged":true,"resourceSubscriptions":["a://1"]}}"#,
        );
        let asked = Filter::parse(Some(&params));
        let caps = raw(r#"{"tools":{"listChanged":true},"resources":{"subscribe":true}}"#);
        let honoured = asked.honoured_by(Some(&caps));
        assert_eq!(
            serde_json::to_string(&honoured).expect("a filter serialises"),
            r#"{"toolsListChanged":true,"resourceSubscriptions":["a://1"]}"#
        );
        assert!(honoured.wants("notifications/tools/list_changed", None));
        assert!(!honoured.wants("notifications/prompts/list_changed", None));
        let updated = raw(r#"{"uri":"a://1"}"#);
        let other = raw(r#"{"uri":"a://2"}"#);
        assert!(honoured.wants("notifications/resources/updated", Some(&updated)));
        assert!(!honoured.wants("notifications/resources/updated", Some(&other)));
    }
}
