//! The wait-for edges in `lock status`: what each waiter's process tree holds, read as a
//! walk reads them (a majority of masters, or the live edge files of the lock directory).

use super::walk::{Reader, RedisReader};
use crate::connect::{Backend, Coordinator};
use crate::ops::LockStatus;

impl Coordinator {
    /// Fill each lock's `edges`.
    pub(crate) async fn attach_edges(&self, locks: &mut [LockStatus]) {
        for lock in locks.iter_mut() {
            let hop = match &self.inner.backend {
                Backend::Local(local) => local.read(&lock.name).await,
                Backend::Redis(quorum) => {
                    let reader = RedisReader {
                        quorum,
                        namespace: self.inner.config.namespace.clone(),
                        by: self.inner.identity.clone(),
                        log_cap: self.inner.config.log_cap,
                    };
                    reader.read(&lock.name).await
                }
            };
            if let Some(hop) = hop {
                lock.edges = hop.edges;
            }
        }
    }
}
