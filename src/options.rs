//! How a caller asks for a lock: the wait limit and where wait feedback goes. A leaf module,
//! so the backends (`local`, `acquire`) can share it without importing each other.

use std::time::Duration;

use tokio::sync::watch;

use crate::holder::HolderInfo;

/// What a waiter learns while it waits: who is in its way (updated on every refusal).
pub type WaitProgress = watch::Sender<Option<InTheWay>>;

/// Who is in a waiter's way, as its last refusal named them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InTheWay {
    /// The lease's holder.
    Holder(HolderInfo),
    /// Nobody holds the lease, but this other waiter is first in line: it goes next (one
    /// that died holds the line up until its registration lapses, under a second).
    FirstInLine(HolderInfo),
}

/// How to acquire.
#[derive(Debug, Clone, Default)]
pub struct AcquireOptions {
    /// Longest total wait; zero means try once. Default: zero.
    pub wait: Duration,
    /// Receives who is in the way while we wait, for feedback. Default: none.
    pub progress: Option<WaitProgress>,
    /// Leases the caller holds while it waits, besides those its process inherited (a Node
    /// caller's enclosing `withLock` scopes): a wait records them as its wait-for edge and
    /// fails with [`crate::Error::Deadlock`] when they close a cycle of waiters (see
    /// `crate::deadlock`). Default: none.
    pub holding: Vec<Holding>,
}

/// A lease a waiter (its process tree, or its Node scope) holds, as a wait-for edge names it
/// ([`crate::Lease::holding`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Holding {
    /// The lock's name.
    pub name: String,
    /// The Redis lease's owner id (empty for local locks, which the token names).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
    /// The lease's fencing token.
    pub token: u64,
}

impl AcquireOptions {
    /// Wait at most `wait`.
    pub fn wait(wait: Duration) -> Self {
        AcquireOptions {
            wait,
            progress: None,
            holding: Vec::new(),
        }
    }
}
