//! A local wait's side of deadlock detection: while the kernel makes the waiter wait on the
//! lock file, its edge is a locked file in the lock directory (`local/waits.rs`), and it walks
//! for a cycle at once and then every `LOCAL_WALK_EVERY` (a local wait has no queue heartbeat).

use tokio::time::Instant;

use super::walk::{Hop, Reader, find_cycle};
use super::{Edge, LOCAL_WALK_EVERY, Suspicion, edge_of, error, holdings};
use crate::error::{Error, Result};
use crate::holder::Identity;
use crate::local::LocalBackend;
use crate::options::AcquireOptions;

impl Reader for LocalBackend {
    async fn read(&self, name: &str) -> Option<Hop> {
        self.read_waits(name)
    }
}

/// One local wait's edge (recorded while it lives) and suspicion.
pub(crate) struct Watch<'b> {
    backend: &'b LocalBackend,
    edge: Edge,
    _record: crate::local::WaitRecord,
}

impl<'b> Watch<'b> {
    /// The watch of a wait for `name`, its edge recorded; `None` when the caller holds no
    /// other local lock of this directory (nothing recorded, nothing walked: no cost).
    pub(crate) fn start(
        backend: &'b LocalBackend,
        name: &str,
        identity: &Identity,
        opts: &AcquireOptions,
    ) -> Result<Option<Self>> {
        let scope = format!("local:{}", backend.dir().display());
        let holding = holdings(&scope, name, &opts.holding);
        if holding.is_empty() {
            return Ok(None);
        }
        let waiter = uuid::Uuid::new_v4().simple().to_string();
        let place = crate::clock::epoch_micros();
        let edge = edge_of(identity, &waiter, place, name, holding);
        let record = backend.record_wait(&edge)?;
        Ok(Some(Watch {
            backend,
            edge,
            _record: record,
        }))
    }

    /// Walk until a confirmed cycle picks this waiter (its error), or forever: the caller
    /// races this against the wait itself, which ends at `deadline`.
    pub(crate) async fn run(self, deadline: Instant) -> Error {
        let mut suspicion = Suspicion::new();
        loop {
            let found = match self.backend.read_waits(&self.edge.waits_for) {
                Some(hop) => {
                    find_cycle(self.backend, &self.edge, &hop.held_by, Some(hop.holder)).await
                }
                None => None,
            };
            if let Some(cycle) = suspicion.judge(found) {
                return error(&self.edge.waits_for, &cycle);
            }
            let next = Instant::now() + LOCAL_WALK_EVERY;
            if next >= deadline {
                // The wait itself ends first.
                std::future::pending::<()>().await;
            }
            tokio::time::sleep_until(next).await;
        }
    }
}
