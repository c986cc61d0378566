//! Applying a new configuration to a running gateway (SIGHUP, or a changed
//! file with `watch_config = true`).
//!
//! Owns what a reload changes: the server table. Added servers serve new
//! sessions at once; removed servers' sessions are ended (their process trees
//! stopped), and a unified session's processes of a removed server are
//! stopped; changed servers serve *new* sessions with the new settings while
//! existing sessions keep their processes (and, for routed sessions, their
//! settings, through crash relaunches too). `[gateway]` settings cannot change
//! while the gateway runs: a reload that changes them is refused as a whole,
//! so that what runs is always one whole, valid file. It never reads the file
//! itself (the caller loads and validates it) and never speaks HTTP.

use std::collections::HashSet;
use std::sync::Arc;

use crate::config::{Config, ServerConfig};
use crate::relay::Relay;

/// What a reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    /// Sessions ended because their server was removed.
    pub sessions_ended: usize,
}

/// Why a reload was refused (the old configuration stays).
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error(
        "[gateway] settings differ from the running ones; they take effect only at a restart (nothing was reloaded)"
    )]
    GatewayChanged,
}

impl Relay {
    /// Puts `new`'s servers in force (see the module documentation).
    pub async fn reload(&self, new: Config) -> Result<Reloaded, Refused> {
        if new.gateway != self.config.gateway {
            return Err(Refused::GatewayChanged);
        }
        let old = self.servers();
        let ids = |servers: &[Arc<ServerConfig>]| -> HashSet<String> {
            servers.iter().map(|s| s.id.clone()).collect()
        };
        let (old_ids, new_ids) = (ids(&old), ids(&new.servers));
        let mut report = Reloaded {
            added: new
                .servers
                .iter()
                .filter(|s| !old_ids.contains(&s.id))
                .map(|s| s.id.clone())
                .collect(),
            removed: old
                .iter()
                .filter(|s| !new_ids.contains(&s.id))
                .map(|s| s.id.clone())
                .collect(),
            changed: new
                .servers
                .iter()
                .filter(|s| old.iter().any(|o| o.id == s.id && **o != ***s))
                .map(|s| s.id.clone())
                .collect(),
            sessions_ended: 0,
        };
        self.set_servers(new.servers.clone());
        for session in self.sessions.all() {
            match session.server() {
                Some(server) if report.removed.contains(&server.id) => {
                    if self
                        .end_session(&session.id, "server removed by a reload")
                        .await
                    {
                        report.sessions_ended += 1;
                    }
                }
                Some(_) => {}
                None => {
                    for removed in old.iter().filter(|s| report.removed.contains(&s.id)) {
                        self.pool
                            .evict(&session.key_for(removed), "server removed by a reload")
                            .await;
                    }
                }
            }
        }
        Ok(report)
    }
}
