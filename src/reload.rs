//! Applying a new configuration to a running gateway (SIGHUP, or a changed
//! file with `watch_config = true`).
//!
//! Owns what a reload changes: the server table. Added servers serve new
//! sessions at once; removed servers' sessions are ended (their process trees
//! stopped), and a unified session's processes of a removed server are
//! stopped; changed servers serve *new* sessions with the new settings while
//! existing sessions keep their processes (and, for routed sessions, their
//! settings, through crash relaunches too). Warm spares follow the new
//! table: an added server's start, a changed server's are replaced, a
//! removed server's are stopped. `[gateway]` settings cannot change
//! while the gateway runs: a reload that changes them is refused as a whole,
//! so that what runs is always one whole, valid file. It never reads the file
//! itself (the caller loads and validates it) and never speaks HTTP.

use crate::config::Config;
use crate::core::{Changes, Core, changes};

/// What a reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Reloaded {
    pub(crate) changes: Changes,
    /// Sessions ended because their server was removed.
    pub(crate) sessions_ended: usize,
}

/// Why a reload was refused (the old configuration stays).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    #[error(
        "[gateway] settings differ from the running ones; they take effect only at a restart (nothing was reloaded)"
    )]
    GatewayChanged,
}

/// Puts `new`'s servers in force (see the module documentation).
pub(crate) async fn apply(core: &Core, new: Config) -> Result<Reloaded, Refused> {
    if new.gateway != *core.gateway() {
        return Err(Refused::GatewayChanged);
    }
    let old = core.replace_servers(new.servers.clone());
    core.keep_spares().await;
    let mut report = Reloaded {
        changes: changes(&old, &new.servers),
        sessions_ended: 0,
    };
    let removed = &report.changes.removed;
    for session in core.sessions() {
        match session.server() {
            Some(server) if removed.contains(&server.id) => {
                if core
                    .end_session(&session.id, "server removed by a reload")
                    .await
                {
                    report.sessions_ended += 1;
                }
            }
            Some(_) => {}
            None => {
                for server in old.iter().filter(|s| removed.contains(&s.id)) {
                    core.stop_conn(&session, server, "server removed by a reload")
                        .await;
                }
            }
        }
    }
    Ok(report)
}
