//! Redlock over N independent nodes (N = 1 is the single-Redis case of the same code).
//!
//! A grant goes to every node at once, each bounded by its own timeout. The lock is held when a
//! majority (N/2 + 1) granted and the validity `ttl - elapsed - drift` is still positive, with
//! `elapsed` on the monotonic clock and `drift = ttl/100 + 2 ms`. We stop listening as soon as a
//! majority granted or a majority became impossible; on failure we release on every node,
//! including the ones that failed or timed out (their grant may still have landed).
//!
//! # Fencing tokens across masters
//! Each node mints with `INCR` inside its grant script. The token handed out is the highest
//! counter among the granting majority `M`. Before handing it out, every node of `M` whose
//! counter is below it is raised to it (`lua/raise.lua`), and that raise is awaited; nodes
//! outside `M` are raised too, without waiting.
//!
//! Why tokens strictly increase while no node forgets: let A hold token `t` with granting set
//! `M_A`. Every node of `M_A` has counter >= `t` before A's lease there ends (the raise is
//! awaited before A uses `t`). A later holder B is granted on a majority `M_B`; `M_A` and `M_B`
//! share a node X (two majorities of N always intersect), and B's grant on X can only happen once
//! A's lease on X is gone, so X's `INCR` yields at least `t + 1`, and B's token (the maximum over
//! `M_B`) is above `t`.
//!
//! When nodes forget (restart without persistence): the argument needs one node of `M_A ∩ M_B`
//! to remember. With every node up, `M_A` is all N nodes (the raise reaches all), so any minority
//! may be lost. In the worst case (A reached a bare majority and exactly the nodes A shares with
//! B restart empty) a token can repeat; the state-file commit then refuses the lower or equal
//! token (exit 76) rather than let a stale write through. Operators should run masters with
//! `appendfsync always`, or keep a crashed master down longer than the maximum TTL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use crate::holder::HolderInfo;
use crate::keys::LockKeys;
use crate::node::{GrantReply, GrantRequest, Node, NodeError, WakeStream};

/// Nodes needed for a majority of `n`.
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}

/// Clock drift allowance for a TTL: 1% of it plus 2 ms (the reference Redlock constant).
pub fn drift(ttl: Duration) -> Duration {
    ttl / 100 + Duration::from_millis(2)
}

/// Time left on a lease granted `elapsed` ago; `None` once nothing is left. Never underflows.
pub fn validity(ttl: Duration, elapsed: Duration) -> Option<Duration> {
    ttl.checked_sub(elapsed)
        .and_then(|d| d.checked_sub(drift(ttl)))
        .filter(|d| !d.is_zero())
}

/// How one attempt to take a lock on the quorum ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// A majority granted in time.
    Granted {
        /// The fencing token handed out.
        token: u64,
        /// Monotonic deadline of the lease's validity.
        valid_until: Instant,
    },
    /// Someone else holds it: no vote was ours.
    Held {
        /// Shortest time left on the holder's lease among the refusing nodes.
        pttl: Duration,
        /// The holder, when a node said.
        holder: Option<HolderInfo>,
    },
    /// Some nodes granted but not a majority (contenders split the vote, or time ran out);
    /// our votes were released. Retry after a short random delay.
    Split {
        /// Who holds it elsewhere, when a node said.
        holder: Option<HolderInfo>,
    },
    /// Too many nodes failed to answer for a majority.
    Unavailable {
        /// Nodes that answered.
        reachable: usize,
        /// Each failed node and its cause.
        causes: Vec<(String, String)>,
    },
}

/// How one renewal on the quorum ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// A majority extended the lease.
    Renewed {
        /// New monotonic validity deadline.
        valid_until: Instant,
    },
    /// A majority says the lease is no longer ours: it is gone for good.
    Lost,
    /// Not enough answers to decide; try again while validity lasts.
    Undecided {
        /// Each failed node and its cause.
        causes: Vec<(String, String)>,
    },
}

/// A set of independent nodes acting as one coordinator.
pub struct Quorum<N> {
    nodes: Vec<Arc<N>>,
}

impl<N: Node> Quorum<N> {
    /// A quorum over `nodes` (at least one).
    pub fn new(nodes: Vec<Arc<N>>) -> Self {
        Quorum { nodes }
    }

    /// The nodes.
    pub fn nodes(&self) -> &[Arc<N>] {
        &self.nodes
    }

    /// Nodes needed for a majority.
    pub fn needed(&self) -> usize {
        majority(self.nodes.len())
    }

    /// One attempt to take the lease on a majority.
    pub async fn grant(&self, req: &GrantRequest) -> Attempt {
        let n = self.nodes.len();
        let need = self.needed();
        let start = Instant::now();
        let mut pending: FuturesUnordered<_> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| async move { (i, node.grant(req).await) })
            .collect();

        let mut granted: Vec<(usize, u64)> = Vec::new();
        let mut refused: Vec<(Duration, HolderInfo)> = Vec::new();
        let mut causes: Vec<(String, String)> = Vec::new();
        while let Some((i, reply)) = pending.next().await {
            match reply {
                Ok(GrantReply::Granted { token }) => granted.push((i, token)),
                Ok(GrantReply::Refused { pttl, holder }) => refused.push((pttl, holder)),
                Err(e) => causes.push((self.nodes[i].label(), e.cause)),
            }
            if granted.len() >= need || refused.len() + causes.len() > n - need {
                break;
            }
        }
        drop(pending);

        if granted.len() >= need {
            let token = granted.iter().map(|g| g.1).max().unwrap_or(0);
            if !(granted.len() == n && granted.iter().all(|g| g.1 == token)) {
                self.raise(&req.keys, token, &granted).await;
            }
            if let Some(left) = validity(req.ttl, start.elapsed()) {
                return Attempt::Granted {
                    token,
                    valid_until: start + left,
                };
            }
        }

        // Not ours: undo every vote we may have, on every node, before saying why.
        self.release(&req.keys, &req.owner, req.log_cap).await;
        let holder = refused
            .iter()
            .map(|r| r.1.clone())
            .find(|h| !h.owner.is_empty());
        if causes.len() > n - need {
            Attempt::Unavailable {
                reachable: n - causes.len(),
                causes,
            }
        } else if refused.len() >= need {
            let pttl = refused.iter().map(|r| r.0).min().unwrap_or_default();
            Attempt::Held { pttl, holder }
        } else {
            Attempt::Split { holder }
        }
    }

    /// Lift lagging counters to `token`: awaited on the granting nodes below it, fired and
    /// forgotten on the nodes that did not grant (see the module doc).
    async fn raise(&self, keys: &LockKeys, token: u64, granted: &[(usize, u64)]) {
        let mut lagging = FuturesUnordered::new();
        for (i, node) in self.nodes.iter().enumerate() {
            match granted.iter().find(|g| g.0 == i) {
                Some(&(_, t)) if t >= token => {}
                Some(_) => lagging.push(node.raise(keys, token)),
                None => {
                    let (node, keys) = (Arc::clone(node), keys.clone());
                    tokio::spawn(async move {
                        let _ = node.raise(&keys, token).await;
                    });
                }
            }
        }
        while lagging.next().await.is_some() {}
    }

    /// Extend the lease on a majority.
    pub async fn renew(&self, keys: &LockKeys, owner: &str, ttl: Duration) -> Renewal {
        let n = self.nodes.len();
        let need = self.needed();
        let start = Instant::now();
        let mut pending: FuturesUnordered<_> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| async move { (i, node.renew(keys, owner, ttl).await) })
            .collect();
        let (mut ours, mut not_ours) = (0, 0);
        let mut causes = Vec::new();
        while let Some((i, reply)) = pending.next().await {
            match reply {
                Ok(true) => ours += 1,
                Ok(false) => not_ours += 1,
                Err(e) => causes.push((self.nodes[i].label(), e.cause)),
            }
            if ours >= need || not_ours > n - need || not_ours + causes.len() > n - need {
                break;
            }
        }
        if ours >= need {
            if let Some(left) = validity(ttl, start.elapsed()) {
                return Renewal::Renewed {
                    valid_until: start + left,
                };
            }
        }
        if not_ours > n - need {
            Renewal::Lost
        } else {
            Renewal::Undecided { causes }
        }
    }

    /// End the lease on every node, waiting for each at most its timeout. Returns how many
    /// nodes confirmed it was ours.
    pub async fn release(&self, keys: &LockKeys, owner: &str, log_cap: u32) -> usize {
        let all: FuturesUnordered<_> = self
            .nodes
            .iter()
            .map(|node| node.release(keys, owner, log_cap))
            .collect();
        all.filter(|r| std::future::ready(matches!(r, Ok(true))))
            .count()
            .await
    }

    /// Listen for releases of one lock on every node that answers.
    pub async fn subscribe(&self, keys: &LockKeys) -> (Vec<WakeStream>, Vec<NodeError>) {
        let all: FuturesUnordered<_> = self.nodes.iter().map(|n| n.subscribe(keys)).collect();
        let results: Vec<_> = all.collect().await;
        let mut streams = Vec::new();
        let mut errors = Vec::new();
        for r in results {
            match r {
                Ok(s) => streams.push(s),
                Err(e) => errors.push(e),
            }
        }
        (streams, errors)
    }
}
