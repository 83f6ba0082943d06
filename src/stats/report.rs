//! The one shape of "who holds what, now" (`lock status --json`, Node's `lockStatus()`): built
//! here so that both front ends print the same thing.

use serde::Serialize;

use crate::Identity;
use crate::error::Result;
use crate::ops::LockStatus;
use crate::settings::DEFAULT_NAMESPACE;
use crate::workspace::Workspace;

/// What `lock status --json` prints.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StatusReport {
    /// The namespace the locks live in; null when a repository on Redis has locked nothing yet
    /// (its namespace is written by the first lock).
    pub namespace: Option<String>,
    /// `redis` or `local`.
    pub backend: &'static str,
    /// Every held lock.
    pub locks: Vec<LockStatus>,
}

impl Workspace {
    /// Who holds what in this workspace now, and the notice connecting gave (if any). Looks
    /// only: a repository that never locked anything is reported empty, not set up.
    pub async fn status_report(
        &self,
        identity: Identity,
        allow_network_fs: bool,
    ) -> Result<(StatusReport, Option<String>)> {
        let r = self.resolved();
        let local = r.config.nodes.is_empty();
        let (locks, notice) = match self.observer(identity, allow_network_fs).await? {
            Some((c, notice)) => (c.status().await?, notice),
            None => (Vec::new(), None),
        };
        // Local locks are the repository's own, whatever the namespace.
        let namespace = match r.namespace.name() {
            Some(ns) => Some(ns.to_owned()),
            None if local => Some(DEFAULT_NAMESPACE.to_owned()),
            None => None,
        };
        let backend = if local { "local" } else { "redis" };
        Ok((
            StatusReport {
                namespace,
                backend,
                locks,
            },
            notice,
        ))
    }
}
