//! Ending a lease on the quorum (a release, an undone attempt, an eviction), leaving a line,
//! subscribing to the release events of a lock, and a waiter's hand-off box.

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::time::Instant;

use super::Quorum;
use crate::backend::{Eviction, Node, NodeError, WakeStream};
use crate::keys::LockKeys;

impl<N: Node + ?Sized> Quorum<N> {
    /// Undo the votes of an attempt that did not win on every node, handing nothing over (see
    /// [`Node::undo`]); as [`Self::release`] otherwise.
    pub(super) async fn undo(&self, keys: &LockKeys, owner: &str, log_cap: u32) {
        self.end(keys, owner, log_cap, Duration::ZERO, false).await;
    }

    /// End a lease on every node (an attempt that did not win, or one given up). Returns how
    /// many nodes confirmed it was ours. Once a majority answered, the others get as long again as the
    /// majority took (a slow or paused node does not hold the next attempt up for its whole
    /// timeout; its copy expires with the TTL).
    pub(crate) async fn release(&self, keys: &LockKeys, owner: &str, log_cap: u32) -> usize {
        self.end(keys, owner, log_cap, Duration::ZERO, true).await.0
    }

    /// End a lease on every node, waiting for every node's answer up to `deadline` (the
    /// per-node deadline) after the start: a copy left standing on a slower node would keep
    /// the lock from the next acquirer once others fail. A node that cannot answer in that
    /// time (paused, or reconnecting) keeps its copy until the TTL. Returns `(confirmed,
    /// denied)`: the nodes that said it was ours, and those that said it was not (expired
    /// there, broken or taken).
    pub(crate) async fn release_counted(
        &self,
        keys: &LockKeys,
        owner: &str,
        log_cap: u32,
        deadline: Duration,
    ) -> (usize, usize) {
        self.end(keys, owner, log_cap, deadline, true).await
    }

    /// End the lease on every node: wait for a majority, then for the others until `wait_all`
    /// after the start, or as long again as the majority took, whichever is longer.
    ///
    /// Only one node hands the lease over (`hand_off`). Over several masters each would hand
    /// it to its own head, and a master whose line differs for a moment (a waiter handed the
    /// lease there and undone is out of that line until its next attempt) hands it to a later
    /// waiter: with 8 tasks contending on 3 masters that made 22 and 30 grants out of queue
    /// order in two runs, against 0 and 0 with the releases only waking the head (the same
    /// binary, alternating, 2026-12-05). So several masters keep waking the head, which asks
    /// itself; the waiter's side of a Redlock hand-off (`crate::handoff`) stays ready.
    pub(super) async fn end(
        &self,
        keys: &LockKeys,
        owner: &str,
        log_cap: u32,
        wait_all: Duration,
        hand_off: bool,
    ) -> (usize, usize) {
        let start = Instant::now();
        let need = self.needed();
        self.late.end(owner);
        let mut pending: FuturesUnordered<_> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| async move {
                let r = if hand_off && self.nodes.len() == 1 {
                    node.release(keys, owner, log_cap).await
                } else {
                    node.undo(keys, owner, log_cap).await
                };
                // A grant of ours still in flight to this node waits for this answer.
                self.late.answered(owner, i, matches!(r, Ok(true)));
                r
            })
            .collect();
        let (mut answered, mut confirmed, mut denied) = (0, 0, 0);
        let mut count = |r: &Result<bool, NodeError>| match r {
            Ok(true) => confirmed += 1,
            Ok(false) => denied += 1,
            Err(_) => {}
        };
        while answered < need {
            match pending.next().await {
                Some(r) => {
                    answered += 1;
                    count(&r);
                }
                None => {
                    self.late.ended_all(owner);
                    return (confirmed, denied);
                }
            }
        }
        let grace = start
            .elapsed()
            .max(Duration::from_millis(2))
            .max(wait_all.saturating_sub(start.elapsed()));
        let rest = async {
            while let Some(r) = pending.next().await {
                count(&r);
            }
        };
        let _ = tokio::time::timeout(grace, rest).await;
        self.late.ended_all(owner);
        (confirmed, denied)
    }

    /// Remove a lease on every node as `ev` says. Returns how many nodes removed it.
    pub(crate) async fn evict(&self, ev: &Eviction) -> usize {
        let all: FuturesUnordered<_> = self.nodes.iter().map(|n| n.evict(ev)).collect();
        all.filter(|r| std::future::ready(matches!(r, Ok(true))))
            .count()
            .await
    }

    /// Leave the lock's waiter set on every node (best effort: a registration also expires).
    pub(crate) async fn leave(&self, keys: &LockKeys, waiter: &str) {
        let all: FuturesUnordered<_> = self.nodes.iter().map(|n| n.leave(keys, waiter)).collect();
        all.collect::<Vec<_>>().await;
    }

    /// Listen for releases of one lock on every node that answers: once a majority listens,
    /// the others get as long again as that took (at least 2 ms), as a release does. A silent
    /// node (paused, or its host gone without a reset) answered at the connect timeout, and
    /// every wait stood deaf that long (a second by default) before its next attempt.
    pub(crate) async fn subscribe(&self, keys: &LockKeys) -> (Vec<WakeStream>, Vec<NodeError>) {
        let start = Instant::now();
        let need = self.needed();
        let mut all: FuturesUnordered<_> = self.nodes.iter().map(|n| n.subscribe(keys)).collect();
        let mut streams = Vec::new();
        let mut errors = Vec::new();
        let mut take = |r: Result<WakeStream, NodeError>| match r {
            Ok(s) => streams.push(s),
            Err(e) => errors.push(e),
        };
        let mut listening = 0;
        while listening < need {
            match all.next().await {
                Some(r) => {
                    listening += usize::from(r.is_ok());
                    take(r);
                }
                None => break,
            }
        }
        if !all.is_empty() {
            let grace = start.elapsed().max(Duration::from_millis(2));
            let rest = async {
                while let Some(r) = all.next().await {
                    take(r);
                }
            };
            let _ = tokio::time::timeout(grace, rest).await;
        }
        (streams, errors)
    }

    /// The hand-off box of waiter `waiter`, opened on the one node when there is one (see
    /// [`Node::handed`]); `None` over several masters, where a release hands nothing over (see
    /// [`Self::end`]).
    pub(crate) fn handed(
        &self,
        keys: &LockKeys,
        waiter: &str,
    ) -> Option<crate::backend::NodeFuture<'_, WakeStream>> {
        match self.nodes.as_slice() {
            [node] => Some(node.handed(keys.handed_box(waiter))),
            _ => None,
        }
    }
}
