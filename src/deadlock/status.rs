//! The wait-for edges in `lock status`: what each waiter's process tree holds, read as a
//! walk reads them (a majority of masters, or the live edge files of the lock directory).

use super::walk::{Reader, RedisReader};
use crate::coordinator::{Backend, Coordinator};
use crate::ops::LockStatus;

/// The work of [`Coordinator::attach_edges`].
pub(crate) async fn attach_edges(coordinator: &Coordinator, locks: &mut [LockStatus]) {
    for lock in locks.iter_mut() {
        let hop = match &coordinator.inner.backend {
            Backend::Local(local) => local.read(&lock.name).await,
            Backend::Redis(quorum) => {
                let reader = RedisReader {
                    quorum,
                    namespace: coordinator.inner.config.namespace.clone(),
                    by: coordinator.inner.identity.clone(),
                    log_cap: coordinator.inner.config.log_cap,
                };
                reader.read(&lock.name).await
            }
        };
        if let Some(hop) = hop {
            lock.edges = hop.edges;
        }
    }
}
