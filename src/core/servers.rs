//! The server table in force: read live by every endpoint, replaced whole by
//! a reload.
//!
//! Owns the one list of servers the gateway serves now, and what tells two
//! lists apart (added, removed, changed servers). It never ends sessions or
//! stops processes (the reload does, through the core) and never reads a file.

use std::collections::HashSet;
use std::sync::{Arc, PoisonError, RwLock};

use crate::config::ServerConfig;

/// The servers in force, in config order.
pub(super) struct ServerTable {
    servers: RwLock<Arc<Vec<Arc<ServerConfig>>>>,
}

impl ServerTable {
    pub(super) fn new(servers: Vec<Arc<ServerConfig>>) -> ServerTable {
        ServerTable {
            servers: RwLock::new(Arc::new(servers)),
        }
    }

    /// The whole table now (a snapshot: a reload does not change it under you).
    pub(super) fn all(&self) -> Arc<Vec<Arc<ServerConfig>>> {
        Arc::clone(&self.servers.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The server with this id.
    pub(super) fn get(&self, id: &str) -> Option<Arc<ServerConfig>> {
        self.all().iter().find(|s| s.id == id).cloned()
    }

    /// Puts `servers` in force; returns the table they replace.
    pub(super) fn replace(&self, servers: Vec<Arc<ServerConfig>>) -> Arc<Vec<Arc<ServerConfig>>> {
        let mut table = self.servers.write().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *table, Arc::new(servers))
    }
}

/// How one server table differs from another, by server id, in the order
/// the tables list them.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    /// In the new table only.
    pub(crate) added: Vec<String>,
    /// In the old table only.
    pub(crate) removed: Vec<String>,
    /// In both, with different settings.
    pub(crate) changed: Vec<String>,
}

/// What changes from `old` to `new`.
pub(crate) fn changes(old: &[Arc<ServerConfig>], new: &[Arc<ServerConfig>]) -> Changes {
    let ids = |servers: &[Arc<ServerConfig>]| -> HashSet<String> {
        servers.iter().map(|s| s.id.clone()).collect()
    };
    let (old_ids, new_ids) = (ids(old), ids(new));
    Changes {
        added: new
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
            .iter()
            .filter(|s| old.iter().any(|o| o.id == s.id && **o != ***s))
            .map(|s| s.id.clone())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(toml: &str) -> Vec<Arc<ServerConfig>> {
        let vars = std::collections::HashMap::<String, String>::new();
        crate::config::Config::parse(std::path::Path::new("test.toml"), toml, &vars)
            .expect("a valid config")
            .servers
    }

    #[test]
    fn a_reload_is_told_apart_by_id_and_settings() {
        let old = servers(
            "[servers.same]\ncommand = \"a\"\n[servers.gone]\ncommand = \"b\"\n[servers.tuned]\ncommand = \"c\"\n",
        );
        let new = servers(
            "[servers.tuned]\ncommand = \"c\"\nargs = [\"-v\"]\n[servers.same]\ncommand = \"a\"\n[servers.fresh]\ncommand = \"d\"\n",
        );
        assert_eq!(
            changes(&old, &new),
            Changes {
                added: vec!["fresh".into()],
                removed: vec!["gone".into()],
                changed: vec!["tuned".into()],
            }
        );
        assert_eq!(changes(&new, &new), Changes::default());
    }

    #[test]
    fn the_table_is_replaced_whole_and_read_live() {
        let table = ServerTable::new(servers("[servers.a]\ncommand = \"x\"\n"));
        let before = table.all();
        let old = table.replace(servers("[servers.b]\ncommand = \"y\"\n"));
        assert!(Arc::ptr_eq(&before, &old));
        assert!(table.get("a").is_none());
        assert_eq!(
            table.get("b").map(|s| s.command.clone()).as_deref(),
            Some("y")
        );
        // A snapshot taken before stays whole.
        assert_eq!(before[0].id, "a");
    }
}
