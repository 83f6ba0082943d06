//! The walk for a cycle (see the module doc of `deadlock`): backwards from what the waiter's
//! tree holds, one read per hop, bounded; and the read of one lock on Redis, from a majority.

use std::future::Future;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::{Cycle, Edge, HeldBy};
use crate::holder::HolderInfo;
use crate::keys::LockKeys;
use crate::node::{WaitForRequest, WaitForView};
use crate::quorum::Quorum;

/// Longest chain of other waiters a walk follows: cycles longer than this are not seen (and
/// wait out their time as before).
pub(crate) const MAX_HOPS: usize = 8;

/// Most reads one walk makes (a lock with many waiters branches the walk).
pub(crate) const MAX_READS: usize = 32;

/// One lock as one hop reads it.
#[derive(Debug, Clone)]
pub(crate) struct Hop {
    /// Who holds it now.
    pub(crate) held_by: HeldBy,
    /// The holder as recorded.
    pub(crate) holder: HolderInfo,
    /// The live edges of its waiters.
    pub(crate) edges: Vec<Edge>,
}

/// Where a walk reads a lock.
pub(crate) trait Reader {
    /// Lock `name`, or `None` when it cannot be read (no cycle is then seen through it).
    fn read(&self, name: &str) -> impl Future<Output = Option<Hop>> + Send;
}

/// Walk back from `me`'s holdings for a cycle through the lock it waits for, held now as
/// `waited` says (by `waited_holder`).
pub(crate) async fn find_cycle(
    reader: &impl Reader,
    me: &Edge,
    waited: &HeldBy,
    waited_holder: Option<HolderInfo>,
) -> Option<Cycle> {
    // Each entry: a lock to read, the holding of it the chain so far relies on, and the
    // chain of other waiters that led there.
    let mut frontier: std::collections::VecDeque<(super::Holding, Vec<Edge>)> =
        me.holding.iter().map(|h| (h.clone(), Vec::new())).collect();
    let mut seen: Vec<String> = me.holding.iter().map(|h| h.name.clone()).collect();
    let mut reads = 0;
    while let Some((held, chain)) = frontier.pop_front() {
        if reads >= MAX_READS {
            break;
        }
        reads += 1;
        let Some(hop) = reader.read(&held.name).await else {
            continue;
        };
        if !hop.held_by.is(&held) {
            // The holding this chain relies on ended: nobody waits on it any more.
            continue;
        }
        let mut edges = hop.edges;
        edges.sort_by(|a, b| a.waiter.cmp(&b.waiter));
        for edge in edges {
            if edge.waiter == me.waiter || edge.waits_for != held.name {
                continue;
            }
            for h in &edge.holding {
                let mut next = chain.clone();
                next.push(edge.clone());
                if h.name == me.waits_for && waited.is(h) {
                    next.reverse();
                    return Some(Cycle {
                        me: me.clone(),
                        waited_holder,
                        others: next,
                    });
                }
                if next.len() < MAX_HOPS && !seen.contains(&h.name) {
                    seen.push(h.name.clone());
                    frontier.push_back((h.clone(), next));
                }
            }
        }
    }
    None
}

/// Reads locks of one namespace on Redis: every master, and what a majority agrees on.
pub(crate) struct RedisReader<'q> {
    pub(crate) quorum: &'q Quorum,
    pub(crate) namespace: String,
    pub(crate) by: crate::holder::Identity,
    pub(crate) log_cap: u32,
}

impl RedisReader<'_> {
    /// Send `req` to every master and keep what a majority agrees on; `None` without a
    /// majority of answers.
    pub(crate) async fn ask(&self, req: &WaitForRequest) -> Option<(Hop, String)> {
        let all: FuturesUnordered<_> = self
            .quorum
            .nodes()
            .iter()
            .map(|n| n.wait_for(req))
            .collect();
        let views: Vec<WaitForView> = all.filter_map(|r| async { r.ok() }).collect().await;
        let needed = self.quorum.needed();
        if views.len() < needed {
            return None;
        }
        let agreed = |owner: &str| views.iter().filter(|v| v.owner == owner).count() >= needed;
        let view = views
            .iter()
            .find(|v| !v.owner.is_empty() && agreed(&v.owner))?;
        let mut edges: Vec<Edge> = Vec::new();
        for (id, text) in &view.edges {
            let on = views
                .iter()
                .filter(|v| v.edges.iter().any(|(i, t)| i == id && t == text))
                .count();
            if on >= needed
                && let Some(e) = Edge::parse(id, text)
            {
                edges.push(e);
            }
        }
        let hop = Hop {
            held_by: HeldBy::Owner(view.owner.clone()),
            holder: view.holder.clone(),
            edges,
        };
        Some((hop, view.owner.clone()))
    }

    pub(crate) fn request(&self, name: &str) -> WaitForRequest {
        WaitForRequest {
            keys: LockKeys::new(&self.namespace, name),
            waiter: String::new(),
            edge: String::new(),
            deadlock: String::new(),
            by: self.by.clone(),
            log_cap: self.log_cap,
        }
    }
}

impl Reader for RedisReader<'_> {
    async fn read(&self, name: &str) -> Option<Hop> {
        self.ask(&self.request(name)).await.map(|(hop, _)| hop)
    }
}
