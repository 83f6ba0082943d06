//! `withLock`'s leases: several locks taken in sorted order, renewed until released, which
//! the calls made inside the scope join (see `write`'s `*_under`).

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use futures_util::future::{FutureExt, select_all};
use tokio::sync::watch;
use tractatus_lock::Lease;

use super::{Failure, Leases, Out, Settings, open};

/// Leases on several locks, taken in sorted order.
pub struct Held {
    leases: Leases,
    holdings: Vec<tractatus_lock::Holding>,
    tokens: Vec<(String, u64)>,
    released: watch::Sender<bool>,
}

/// Take the locks `names` and those named after `files`, each renewed until released.
pub async fn acquire(
    s: &Settings,
    names: Vec<String>,
    files: Vec<String>,
) -> Out<(Held, Option<String>)> {
    let o = open(s).await?;
    let mut all = names;
    for f in &files {
        all.push(o.workspace.lock_name(Path::new(f))?);
    }
    if all.is_empty() {
        return Err(Failure::usage("withLock needs at least one name or file"));
    }
    for n in &all {
        tractatus_lock::config::check_lock_name(n)?;
    }
    let leases = o
        .coordinator
        .acquire_all_holding(&all, o.acquire.wait, &s.holding, |_| None)
        .await?;
    let held = Held {
        holdings: leases.iter().map(Lease::holding).collect(),
        tokens: leases
            .iter()
            .map(|l| (l.name().to_owned(), l.token()))
            .collect(),
        leases: Arc::new(tokio::sync::RwLock::new(Some(leases))),
        released: watch::channel(false).0,
    };
    Ok((held, o.notice))
}

impl Held {
    /// (lock name, fencing token) of each lease.
    pub fn tokens(&self) -> Vec<(String, u64)> {
        self.tokens.clone()
    }

    /// What the leases hold, as a wait-for edge names it.
    pub fn holdings(&self) -> Vec<tractatus_lock::Holding> {
        self.holdings.clone()
    }

    /// The leases, for the calls that join them.
    pub fn leases(&self) -> Leases {
        self.leases.clone()
    }

    /// Resolves with the first loss's reason, or `None` once the leases are released.
    pub fn lost(&self) -> impl Future<Output = Option<String>> + Send + use<> {
        // Only a release takes the write lock, and it takes `self`: this read never waits.
        let losses: Vec<_> = match self.leases.try_read() {
            Ok(held) => held.iter().flatten().map(|l| l.lost().boxed()).collect(),
            Err(_) => Vec::new(),
        };
        let mut released = self.released.subscribe();
        let flag = self.released.subscribe();
        async move {
            if losses.is_empty() {
                return None;
            }
            tokio::select! {
                (reason, _, _) = select_all(losses) => {
                    (!*flag.borrow()).then_some(reason)
                }
                _ = released.wait_for(|r| *r) => None,
            }
        }
    }

    /// Release every lease (in reverse order); `LEASE_LOST` when any was no longer ours.
    pub async fn release(self) -> Out<()> {
        self.released.send_replace(true);
        // Waits for joined writes in flight; none joins or commits after this.
        let leases = self.leases.write().await.take().unwrap_or_default();
        let mut lost = None;
        for l in leases.into_iter().rev() {
            if let Err(e) = l.release().await {
                lost.get_or_insert(e);
            }
        }
        match lost {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}
