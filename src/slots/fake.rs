//! Test only: the crate's one fake node (`crate::fake_node`) keeping many locks apart by their
//! keys, as the slot wait needs, with the lock named by its keys in each call.

use std::sync::Arc;
use std::time::Duration;

use crate::Coordinator;
use crate::fake_node::{FakeNode, coordinator_over};
use crate::holder::HolderInfo;
use crate::keys::LockKeys;

/// A fake node with many locks.
pub(super) struct MultiFake(Arc<FakeNode>);

impl MultiFake {
    /// A stranger (another host) holds `keys`'s lock for `ttl`.
    pub(super) fn hold(&self, keys: &LockKeys, owner: &str, ttl: Duration) {
        let holder = HolderInfo {
            session: "s".into(),
            host: "elsewhere".into(),
            pid: 1,
            ..HolderInfo::default()
        };
        self.0.hold_at(keys, owner, ttl, holder);
    }

    /// Release `keys`'s lock as its holder `owner` would, waking its listeners.
    pub(super) fn release_now(&self, keys: &LockKeys, owner: &str) -> bool {
        self.0.release_at(keys, owner)
    }

    /// Grant requests answered for `keys`'s lock.
    pub(super) fn grants(&self, keys: &LockKeys) -> usize {
        self.0.grants_at(keys)
    }
}

/// A coordinator over one such node, with `ttl`.
pub(super) fn coordinator(ttl: Duration) -> (Coordinator, MultiFake) {
    let fake = FakeNode::builder().many_locks().build();
    (
        coordinator_over(std::slice::from_ref(&fake), ttl),
        MultiFake(fake),
    )
}
