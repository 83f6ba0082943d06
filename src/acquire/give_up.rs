//! Giving up a wait midway (its future dropped: an aborted Node call, a cancelled task) without
//! leaving anything behind: the place in line is left, and every lease an attempt of ours may
//! still be granted (in flight, or failed with a node silent or split) is ended.

use crate::backend::GrantRequest;
use crate::coordinator::{Backend, Coordinator};
use crate::keys::LockKeys;

/// A wait given up midway, its future dropped (an aborted Node call, a cancelled task): leave
/// the line, and end the lease the attempt in flight may have been granted, so that neither a
/// place left in line nor an orphan lease holds the next waiter up. From the runtime kept at
/// the start, in a task: a drop cannot await.
///
/// It also keeps the owners of the attempts that failed with a node silent or split (their
/// release may have reached a node before their grant, which then lands late and leaves an
/// orphan lease, up to one TTL): a refusal naming one of them is ended at once by the wait
/// (see [`GiveUp::abandoned`]), and whatever wait ends releases them once more, from the runtime.
pub(super) struct GiveUp {
    coordinator: Coordinator,
    keys: LockKeys,
    waiter: String,
    /// The owner id of the attempt in flight, and while queued the one a release may hand the
    /// lease to (see `crate::handoff`).
    owner: Option<String>,
    queued: bool,
    /// Owners of failed attempts whose grant may still land (the last [`ABANDONED_KEPT`]).
    failed: Vec<String>,
    runtime: Option<tokio::runtime::Handle>,
}

/// How many failed attempts' owners a wait keeps (a wait against a silent node fails a few
/// times a second; the oldest are forgotten first, and their orphans, if any, last one TTL).
const ABANDONED_KEPT: usize = 64;

impl GiveUp {
    pub(super) fn new(coordinator: &Coordinator, keys: &LockKeys, waiter: &str) -> Self {
        GiveUp {
            coordinator: coordinator.clone(),
            keys: keys.clone(),
            waiter: waiter.to_owned(),
            owner: None,
            queued: false,
            failed: Vec::new(),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    pub(super) fn attempting(&mut self, req: &GrantRequest) {
        self.owner = Some(req.owner.clone());
        self.queued |= req.waiter.is_some();
    }

    /// The attempt in flight was answered; `failed` when it failed with a node silent or the
    /// votes split, so that a grant of it may still land somewhere.
    pub(super) fn answered(&mut self, failed: bool) {
        if !failed && self.queued {
            return;
        }
        if let Some(owner) = self.owner.take()
            && failed
        {
            if self.failed.len() >= ABANDONED_KEPT {
                self.failed.remove(0);
            }
            self.failed.push(owner);
        }
    }

    /// True (once) when `owner` is one of our failed attempts: its grant landed late.
    pub(super) fn abandoned(&mut self, owner: &str) -> bool {
        let at = self.failed.iter().position(|o| o == owner);
        at.map(|i| self.failed.remove(i)).is_some()
    }

    /// The wait ends by itself (granted, or given up and already out of line): only the failed
    /// attempts are still released on drop.
    pub(super) fn disarm(&mut self) {
        self.owner = None;
        self.queued = false;
    }
}

impl Drop for GiveUp {
    fn drop(&mut self) {
        let Some(rt) = self.runtime.take() else {
            return;
        };
        if self.owner.is_none() && !self.queued && self.failed.is_empty() {
            return;
        }
        let (c, keys, waiter) = (
            self.coordinator.clone(),
            self.keys.clone(),
            self.waiter.clone(),
        );
        let mut owners = std::mem::take(&mut self.failed);
        owners.extend(self.owner.take());
        let queued = self.queued;
        rt.spawn(async move {
            if let Backend::Redis(q) = &c.inner.backend {
                // Out of line first, so no release hands us the lease after ours ran.
                if queued {
                    q.leave(&keys, &waiter).await;
                }
                for owner in owners {
                    q.release(&keys, &owner, c.inner.config.log_cap).await;
                }
            }
        });
    }
}
