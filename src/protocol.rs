//! MCP's vocabulary, at the bottom of the crate: the protocol versions as an
//! ordered type, the two eras of the protocol, method names, and the `_meta`
//! keys of the 2026-07-28 request envelope.
//!
//! Owns the facts the specification fixes, stated once, so that every layer
//! reads the same list: which versions the gateway serves to which clients,
//! which methods exist (and which carry caching hints or become input
//! requests), and what the envelope's keys are called. It imports nothing
//! from the crate, does no I/O and never looks inside a message (that is
//! `jsonrpc`).

/// A protocol revision the gateway knows, oldest first (so `<` means older).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Version {
    V2024_11_05,
    V2025_03_26,
    V2025_06_18,
    V2025_11_25,
    V2026_07_28,
}

impl Version {
    /// Every revision, oldest first.
    pub(crate) const ALL: [Version; 5] = [
        Version::V2024_11_05,
        Version::V2025_03_26,
        Version::V2025_06_18,
        Version::V2025_11_25,
        Version::V2026_07_28,
    ];
    /// The newest session-era revision: what the gateway answers a session
    /// client whose version it does not serve, and asks for itself.
    pub(crate) const LATEST_SESSION: Version = Version::V2025_11_25;
    /// The stateless revision the gateway speaks, to clients and backends.
    pub(crate) const STATELESS: Version = Version::V2026_07_28;
    /// The last revision with JSON-RPC batches.
    pub(crate) const LAST_WITH_BATCHES: Version = Version::V2025_03_26;
    /// The first revision whose event streams open with a priming event.
    pub(crate) const FIRST_WITH_PRIMING: Version = Version::V2025_11_25;
    /// Assumed when a backend's `initialize` result names no version.
    pub(crate) const ASSUMED: Version = Version::V2025_03_26;

    /// The version as the protocol writes it (`YYYY-MM-DD`).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Version::V2024_11_05 => "2024-11-05",
            Version::V2025_03_26 => "2025-03-26",
            Version::V2025_06_18 => "2025-06-18",
            Version::V2025_11_25 => "2025-11-25",
            Version::V2026_07_28 => "2026-07-28",
        }
    }

    /// The known version written `text`, if any.
    pub(crate) fn parse(text: &str) -> Option<Version> {
        Version::ALL.into_iter().find(|v| v.as_str() == text)
    }

    /// The era this revision belongs to.
    pub(crate) fn era(self) -> Era {
        Era::of_version(self.as_str())
    }

    /// The revisions of `era`, oldest first.
    pub(crate) fn of_era(era: Era) -> impl Iterator<Item = Version> {
        Version::ALL.into_iter().filter(move |v| v.era() == era)
    }

    /// The version a session-era client that asked for `asked` is answered
    /// with: its own when the gateway serves it, else the latest session revision.
    pub(crate) fn answer_to_session_client(asked: Option<&str>) -> Version {
        asked
            .and_then(Version::parse)
            .filter(|v| v.era() == Era::Session)
            .unwrap_or(Version::LATEST_SESSION)
    }

    /// True when `text` (a version a peer wrote, known to the gateway or not)
    /// is this revision or a later one. Versions are dates, so they sort as
    /// text; an unknown later date counts as later.
    pub(crate) fn is_at_most(self, text: &str) -> bool {
        text >= self.as_str()
    }
}

/// The protocol's two generations: which one a client request, a backend
/// process or a session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Era {
    /// 2024-11-05 to 2025-11-25: `initialize` opens a session, and
    /// `Mcp-Session-Id` carries it.
    Session,
    /// 2026-07-28 on: every request stands alone, its `_meta` saying who asks
    /// (`server/discover` instead of `initialize`).
    Stateless,
}

impl Era {
    /// The era of a version a peer wrote: a well-formed date after the last
    /// session-era revision is stateless, whether the gateway knows it or not.
    pub(crate) fn of_version(version: &str) -> Era {
        let is_date = version.len() == 10
            && version.as_bytes()[4] == b'-'
            && version.bytes().all(|b| b.is_ascii_digit() || b == b'-');
        if is_date && version > Version::LATEST_SESSION.as_str() {
            Era::Stateless
        } else {
            Era::Session
        }
    }

    /// What logs and the admin API call this era.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Era::Session => "session",
            Era::Stateless => "stateless",
        }
    }
}

/// Method names.
pub(crate) mod method {
    pub(crate) const INITIALIZE: &str = "initialize";
    pub(crate) const PING: &str = "ping";
    pub(crate) const DISCOVER: &str = "server/discover";
    pub(crate) const TOOLS_LIST: &str = "tools/list";
    pub(crate) const TOOLS_CALL: &str = "tools/call";
    pub(crate) const PROMPTS_LIST: &str = "prompts/list";
    pub(crate) const PROMPTS_GET: &str = "prompts/get";
    pub(crate) const RESOURCES_LIST: &str = "resources/list";
    pub(crate) const RESOURCES_READ: &str = "resources/read";
    pub(crate) const RESOURCE_TEMPLATES_LIST: &str = "resources/templates/list";
    pub(crate) const RESOURCES_SUBSCRIBE: &str = "resources/subscribe";
    pub(crate) const RESOURCES_UNSUBSCRIBE: &str = "resources/unsubscribe";
    pub(crate) const COMPLETE: &str = "completion/complete";
    pub(crate) const SET_LOG_LEVEL: &str = "logging/setLevel";
    pub(crate) const LISTEN: &str = "subscriptions/listen";
    pub(crate) const CREATE_MESSAGE: &str = "sampling/createMessage";
    pub(crate) const ELICIT: &str = "elicitation/create";
    pub(crate) const ROOTS_LIST: &str = "roots/list";

    pub(crate) const INITIALIZED: &str = "notifications/initialized";
    pub(crate) const CANCELLED: &str = "notifications/cancelled";
    pub(crate) const PROGRESS: &str = "notifications/progress";
    pub(crate) const MESSAGE: &str = "notifications/message";
    pub(crate) const TOOLS_LIST_CHANGED: &str = "notifications/tools/list_changed";
    pub(crate) const PROMPTS_LIST_CHANGED: &str = "notifications/prompts/list_changed";
    pub(crate) const RESOURCES_LIST_CHANGED: &str = "notifications/resources/list_changed";
    pub(crate) const RESOURCES_UPDATED: &str = "notifications/resources/updated";
    pub(crate) const SUBSCRIPTIONS_ACKNOWLEDGED: &str = "notifications/subscriptions/acknowledged";

    /// Every request method of the specification (metrics label these by
    /// name; anything else is `other`).
    pub(crate) const KNOWN: [&str; 22] = [
        INITIALIZE,
        PING,
        DISCOVER,
        TOOLS_LIST,
        TOOLS_CALL,
        PROMPTS_LIST,
        PROMPTS_GET,
        RESOURCES_LIST,
        RESOURCES_READ,
        RESOURCE_TEMPLATES_LIST,
        RESOURCES_SUBSCRIBE,
        RESOURCES_UNSUBSCRIBE,
        COMPLETE,
        SET_LOG_LEVEL,
        LISTEN,
        CREATE_MESSAGE,
        ELICIT,
        ROOTS_LIST,
        "tasks/get",
        "tasks/list",
        "tasks/result",
        "tasks/cancel",
    ];

    /// The methods the gateway serves to stateless (2026-07-28) clients.
    pub(crate) const SERVED_STATELESS: [&str; 10] = [
        DISCOVER,
        TOOLS_LIST,
        TOOLS_CALL,
        PROMPTS_LIST,
        PROMPTS_GET,
        RESOURCES_LIST,
        RESOURCES_READ,
        RESOURCE_TEMPLATES_LIST,
        COMPLETE,
        LISTEN,
    ];

    /// Results that carry caching hints (2026-07-28, caching).
    pub(crate) const CACHEABLE: [&str; 6] = [
        DISCOVER,
        TOOLS_LIST,
        PROMPTS_LIST,
        RESOURCES_LIST,
        RESOURCE_TEMPLATES_LIST,
        RESOURCES_READ,
    ];

    /// The requests whose result may be an `InputRequiredResult` (2026-07-28):
    /// no other request can carry input requests to its client.
    pub(crate) const CARRIES_INPUT_REQUESTS: [&str; 3] = [TOOLS_CALL, PROMPTS_GET, RESOURCES_READ];

    /// Requests a server sends its client that a 2026-07-28 server returns as
    /// input requests instead, each with the client capability it needs.
    const INPUT_REQUESTS: [(&str, &str); 3] = [
        (ELICIT, "elicitation"),
        (CREATE_MESSAGE, "sampling"),
        (ROOTS_LIST, "roots"),
    ];

    /// The client capability a server's request of `method` needs, if it is
    /// one of [`INPUT_REQUESTS`].
    pub(crate) fn capability_needed(method: &str) -> Option<&'static str> {
        INPUT_REQUESTS
            .iter()
            .find(|(m, _)| *m == method)
            .map(|(_, capability)| *capability)
    }
}

/// The `_meta` keys of the 2026-07-28 request envelope and results.
pub(crate) mod meta {
    /// The prefix every envelope key shares.
    pub(crate) const ENVELOPE_PREFIX: &str = "io.modelcontextprotocol/";
    pub(crate) const PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
    pub(crate) const CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
    pub(crate) const CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
    pub(crate) const LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
    /// The server info in a `server/discover` result.
    pub(crate) const SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
    /// The id of a `subscriptions/listen` stream, on what it carries.
    pub(crate) const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_by_date_and_parse_back() {
        for pair in Version::ALL.windows(2) {
            assert!(pair[0] < pair[1]);
            assert!(pair[0].as_str() < pair[1].as_str());
        }
        for v in Version::ALL {
            assert_eq!(Version::parse(v.as_str()), Some(v));
        }
        assert_eq!(Version::parse("2025-11-26"), None);
    }

    #[test]
    fn eras_split_after_the_last_session_revision() {
        let session: Vec<&str> = Version::of_era(Era::Session).map(Version::as_str).collect();
        assert_eq!(
            session,
            ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"]
        );
        assert_eq!(Version::STATELESS.era(), Era::Stateless);
        assert_eq!(Era::of_version("2027-01-01"), Era::Stateless);
        assert_eq!(Era::of_version("2025-11-25"), Era::Session);
        assert_eq!(Era::of_version("2026-7-28x"), Era::Session);
        assert_eq!(Era::of_version("latest"), Era::Session);
    }

    #[test]
    fn a_session_client_gets_its_version_if_served_else_the_latest() {
        let answer = Version::answer_to_session_client;
        assert_eq!(answer(Some("2025-06-18")), Version::V2025_06_18);
        assert_eq!(answer(Some("2026-07-28")), Version::LATEST_SESSION);
        assert_eq!(answer(Some("1999-01-01")), Version::LATEST_SESSION);
        assert_eq!(answer(None), Version::LATEST_SESSION);
    }

    #[test]
    fn unknown_later_versions_count_as_later() {
        assert!(Version::FIRST_WITH_PRIMING.is_at_most("2025-11-25"));
        assert!(Version::FIRST_WITH_PRIMING.is_at_most("2026-01-01"));
        assert!(!Version::FIRST_WITH_PRIMING.is_at_most("2025-06-18"));
    }
}
