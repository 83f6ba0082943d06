//! The walk for a cycle (see the module doc of `deadlock`): backwards from what the waiter's
//! tree holds, one read per hop, bounded; and the read of one lock on Redis, from a majority.

use std::future::Future;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::{Cycle, Edge, HeldBy};
use crate::backend::{WaitForRequest, WaitForView};
use crate::holder::HolderInfo;
use crate::keys::LockKeys;
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

#[cfg(test)]
mod tests {
    //! The walk on an in-memory table of locks: cycles found, stale edges and chains not.

    use std::collections::HashMap;

    use super::*;
    use crate::deadlock::{Holding, Suspicion};

    /// Locks by name: (owner, edges of its waiters).
    struct Table(
        HashMap<String, (String, Vec<Edge>)>,
        std::sync::Mutex<usize>,
    );

    impl Reader for Table {
        async fn read(&self, name: &str) -> Option<Hop> {
            *self.1.lock().unwrap() += 1;
            let (owner, edges) = self.0.get(name)?;
            Some(Hop {
                held_by: HeldBy::Owner(owner.clone()),
                holder: HolderInfo::default(),
                edges: edges.clone(),
            })
        }
    }

    fn held(name: &str) -> Holding {
        Holding {
            name: name.into(),
            owner: format!("owner-{name}"),
            token: 1,
        }
    }

    fn edge(waiter: &str, place: u64, holds: &str, waits: &str) -> Edge {
        Edge {
            waiter: waiter.into(),
            place,
            session: "s".into(),
            host: "h".into(),
            pid: 1,
            waits_for: waits.into(),
            holding: vec![held(holds)],
        }
    }

    /// A table where each edge is stored under the lock it waits for.
    fn table(edges: &[Edge], owners: &[(&str, &str)]) -> Table {
        let mut t: HashMap<String, (String, Vec<Edge>)> = HashMap::new();
        for (lock, owner) in owners {
            t.insert((*lock).into(), ((*owner).into(), Vec::new()));
        }
        for e in edges {
            t.get_mut(&e.waits_for).unwrap().1.push(e.clone());
        }
        Table(t, std::sync::Mutex::new(0))
    }

    fn owners() -> Vec<(&'static str, &'static str)> {
        vec![("x", "owner-x"), ("y", "owner-y"), ("z", "owner-z")]
    }

    #[tokio::test]
    async fn a_three_way_cycle_is_found_with_one_read_per_hop_and_one_victim() {
        let (a, b, c) = (
            edge("a", 1, "x", "y"),
            edge("b", 2, "y", "z"),
            edge("c", 3, "z", "x"),
        );
        let t = table(&[a.clone(), b.clone(), c.clone()], &owners());
        let mut victims = 0;
        for me in [&a, &b, &c] {
            let waited = HeldBy::Owner(format!("owner-{}", me.waits_for));
            let cycle = find_cycle(&t, me, &waited, None).await.unwrap();
            assert_eq!(cycle.others.len(), 2);
            // The others run from the holder of what we wait for round to our holder's waiter.
            assert_eq!(cycle.others[0].holding[0].name, me.waits_for);
            victims += usize::from(cycle.victim_is_me());
        }
        assert_eq!(victims, 1, "not exactly one victim");
        assert_eq!(*t.1.lock().unwrap(), 6, "two reads per walk of a 3-cycle");
    }

    #[tokio::test]
    async fn an_edge_whose_holding_ended_and_a_chain_are_no_cycle() {
        let (a, b) = (edge("a", 1, "x", "y"), edge("b", 2, "y", "x"));
        // x is held by someone new now: b's wait on it is no longer a wait on a's tree.
        let t = table(&[a.clone(), b.clone()], &[("x", "new"), ("y", "owner-y")]);
        let waited = HeldBy::Owner("owner-y".into());
        assert!(find_cycle(&t, &a, &waited, None).await.is_none());
        // a waits for y, b (holding y) for z, z is free of waiters: a chain.
        let chain = table(&[a.clone(), edge("b", 2, "y", "z")], &owners());
        assert!(find_cycle(&chain, &a, &waited, None).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_victim_gives_up_only_after_a_second_walk_confirms() {
        let (a, b) = (edge("a", 1, "x", "y"), edge("b", 2, "y", "x"));
        let t = table(&[a.clone(), b.clone()], &owners());
        let waited = HeldBy::Owner("owner-x".into());
        let mut s = Suspicion::new();
        let walk = || find_cycle(&t, &b, &waited, None);
        assert!(
            s.judge(walk().await).is_none(),
            "gave up at the first sight"
        );
        assert!(s.judge(walk().await).is_none(), "confirmed too soon");
        tokio::time::advance(crate::deadlock::CONFIRM_AFTER).await;
        assert!(s.judge(walk().await).is_some());
        // The older one never gives up.
        let mut older = Suspicion::new();
        let waited_by_a = HeldBy::Owner("owner-y".into());
        let cycle = find_cycle(&t, &a, &waited_by_a, None).await.unwrap();
        assert!(older.judge(Some(cycle.clone())).is_none());
        tokio::time::advance(crate::deadlock::CONFIRM_AFTER).await;
        assert!(older.judge(Some(cycle)).is_none());
    }
}
