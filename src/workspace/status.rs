//! "Who holds what, now" in this workspace (`lock status --json`, Node's `lockStatus()`), in the
//! one shape of [`StatusReport`]: built here so that both front ends print the same thing.

use super::Workspace;
use crate::Identity;
use crate::error::Result;
use crate::ops::StatusReport;
use crate::settings::DEFAULT_NAMESPACE;

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
