//! The seam between the session registry (`crate::session::Sessions`) and one backend: a Redis
//! node (`redis_node/sessions.rs`) or the local files (`session/local.rs`), and the entry they
//! keep. Every call is bounded by the caller's deadline; nothing above this trait talks to a
//! backend.

use serde::{Deserialize, Serialize};

use super::NodeFuture;

/// One session as the registry knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEntry {
    /// The session id.
    pub id: String,
    /// The host it registered from.
    pub host: String,
    /// The process that registered it (the parent of `tractatus session start`: the hook's
    /// shell, the agent, the CI job), 0 when unknown.
    pub pid: u32,
    /// The repository root on that host.
    pub repository: String,
    /// What registered it, for display.
    #[serde(default)]
    pub command: String,
    /// When it started, ms since the Unix epoch.
    pub started_ms: u64,
    /// Its last activity, ms since the Unix epoch.
    pub last_active_ms: u64,
    /// When it ended (`session end`), ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<u64>,
}

/// The registry operations one backend serves, for the namespace `ns`.
pub trait SessionStore: Send + Sync {
    /// Name for messages (a Redis URL without its password, or a directory).
    fn label(&self) -> String;

    /// Record `entry` as live from its `last_active_ms`, not ended (a session started again
    /// under the same id is live again).
    fn register<'a>(&'a self, ns: &'a str, entry: &'a SessionEntry) -> NodeFuture<'a, ()>;

    /// Note activity at `entry.last_active_ms` (never moving it back) of a registered session;
    /// a session not registered stays unregistered, an ended one stays ended.
    fn touch<'a>(&'a self, ns: &'a str, entry: &'a SessionEntry) -> NodeFuture<'a, ()>;

    /// Mark session `id` ended at `at_ms` (an earlier end stays); true when it was registered.
    /// An unknown id changes nothing.
    fn end<'a>(&'a self, ns: &'a str, id: &'a str, at_ms: u64) -> NodeFuture<'a, bool>;

    /// Every session held, with its last activity and end.
    fn entries<'a>(&'a self, ns: &'a str) -> NodeFuture<'a, Vec<SessionEntry>>;

    /// Drop the entries of `ids`.
    fn forget<'a>(&'a self, ns: &'a str, ids: &'a [String]) -> NodeFuture<'a, ()>;
}
