//! Both session endpoints behind one handle.
//!
//! Owns one rule: a session's later messages go through the endpoint that
//! opened it (`routed` for `/mcp/<serverID>`, `unified` for `/mcp`), whoever
//! hands them on (`http` for a client's session, `bridge` for a stateless
//! caller's hidden one). It never decides what a message means; the
//! endpoints do.

use std::sync::Arc;

use bytes::Bytes;

use crate::jsonrpc::Peek;
use crate::routed::Routed;
use crate::session::{Endpoint, Session};
use crate::unified::Unified;

/// The routed and the unified endpoint.
pub(crate) struct Endpoints {
    routed: Arc<Routed>,
    unified: Arc<Unified>,
}

impl Endpoints {
    pub(crate) fn new(routed: Arc<Routed>, unified: Arc<Unified>) -> Endpoints {
        Endpoints { routed, unified }
    }

    /// The `/mcp/<serverID>` endpoint.
    pub(crate) fn routed(&self) -> &Routed {
        &self.routed
    }

    /// The `/mcp` endpoint.
    pub(crate) fn unified(&self) -> &Unified {
        &self.unified
    }

    /// Answers a request of `session` through the endpoint that opened it.
    pub(crate) async fn request(
        &self,
        session: &Arc<Session>,
        message: &[u8],
        peek: &Peek<'_>,
    ) -> Bytes {
        match &session.endpoint {
            Endpoint::Routed(_) => self.routed.request(session, message, peek).await,
            Endpoint::Unified(_) => self.unified.request(session, message, peek).await,
        }
    }

    /// Forwards a notification or response of `session` through the endpoint
    /// that opened it.
    pub(crate) async fn forward(&self, session: &Arc<Session>, message: &[u8], peek: &Peek<'_>) {
        match &session.endpoint {
            Endpoint::Routed(_) => self.routed.forward(session, message, peek).await,
            Endpoint::Unified(_) => self.unified.forward(session, message, peek).await,
        }
    }
}
