//! A Redis wait's side of deadlock detection: at each refusal, record this waiter's edge in
//! the slot of the lock it waits for (the same call reads that lock's owner), walk for a
//! cycle, and give up when a confirmed one picks this waiter.

use super::walk::{RedisReader, find_cycle};
use super::{Edge, Suspicion, edge_of, error, holdings};
use crate::coordinator::Coordinator;
use crate::error::Error;
use crate::options::AcquireOptions;
use crate::quorum::Quorum;

/// One Redis wait's edge and suspicion.
pub(crate) struct RedisWatch {
    edge: Edge,
    text: String,
    suspicion: Suspicion,
}

/// The work of [`Coordinator::deadlock_watch`].
pub(crate) fn deadlock_watch(
    coordinator: &Coordinator,
    name: &str,
    waiter: &str,
    place: u64,
    opts: &AcquireOptions,
) -> Option<RedisWatch> {
    let holding = holdings(&coordinator.scope(), name, &opts.holding);
    if holding.is_empty() || opts.wait.is_zero() {
        return None;
    }
    let edge = edge_of(&coordinator.inner.identity, waiter, place, name, holding);
    Some(RedisWatch {
        text: edge.text(),
        edge,
        suspicion: Suspicion::new(),
    })
}

impl RedisWatch {
    /// Record our edge and walk: `Some(error)` when this wait must give up now. The caller
    /// then leaves the queue (which ends the edge).
    pub(crate) async fn check(&mut self, c: &Coordinator, quorum: &Quorum) -> Option<Error> {
        let reader = RedisReader {
            quorum,
            namespace: c.inner.config.namespace.clone(),
            by: c.inner.identity.clone(),
            log_cap: c.inner.config.log_cap,
        };
        let mut req = reader.request(&self.edge.waits_for);
        req.waiter = self.edge.waiter.clone();
        req.edge = self.text.clone();
        let found = match reader.ask(&req).await {
            Some((hop, _)) => find_cycle(&reader, &self.edge, &hop.held_by, Some(hop.holder)).await,
            None => None,
        };
        let cycle = self.suspicion.judge(found)?;
        let mut log = reader.request(&self.edge.waits_for);
        log.deadlock = cycle.describe();
        let _ = reader.ask(&log).await;
        Some(error(&self.edge.waits_for, &cycle))
    }
}
