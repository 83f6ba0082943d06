//! How a caller asks for a lock: the wait limit and where wait feedback goes. A leaf module,
//! so the backends (`local`, `acquire`) can share it without importing each other.

use std::time::Duration;

use tokio::sync::watch;

use crate::holder::HolderInfo;

/// What a waiter learns while it waits: who holds the lock (updated on every refusal).
pub type WaitProgress = watch::Sender<Option<HolderInfo>>;

/// How to acquire.
#[derive(Debug, Clone, Default)]
pub struct AcquireOptions {
    /// Longest total wait; zero means try once. Default: zero.
    pub wait: Duration,
    /// Receives the current holder while we wait, for feedback. Default: none.
    pub progress: Option<WaitProgress>,
}

impl AcquireOptions {
    /// Wait at most `wait`.
    pub fn wait(wait: Duration) -> Self {
        AcquireOptions {
            wait,
            progress: None,
        }
    }
}
