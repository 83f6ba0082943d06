//! Redlock over N independent nodes (N = 1 is the single-Redis case of the same code).
//!
//! A grant goes to every node at once, each bounded by its own timeout. The lock is held when a
//! majority (N/2 + 1) granted and the validity `ttl - elapsed - drift` is still positive, with
//! `elapsed` on `clock` (which counts system suspend) and `drift = ttl/100 + 2 ms`.
//! We stop listening as soon as a majority granted or a majority became impossible; on failure
//! we release on every node, including the ones that failed or timed out (their grant may still
//! have landed). A node whose last grant call timed out (paused, or its host gone without a
//! reset) is waited for only a grace once the others answered, until it answers again: its
//! calls would end at the connect timeout, not the node timeout, each time an attempt needs its
//! vote. When every node that answered refused, the attempt is `Held` however many are silent.
//!
//! # Fencing tokens across masters
//! Each node mints max(counter + 1, its clock `TIME` in microseconds) inside its grant script
//! (`lua/grant.lua`) and stores it as its counter. The token handed out is the highest
//! counter among the granting majority `M`. Before handing it out, every node of `M` whose
//! counter is below it is raised to it (`lua/raise.lua`), and that raise is awaited; when a
//! raise fails, the attempt fails (released everywhere, retried like a split vote). The nodes
//! that had not answered when the majority was reached finish in the background, and any of
//! them that did not report a counter of at least `t` is raised too, without waiting.
//!
//! A node mints at least the floor an attempt carries (`GrantRequest::floor`): on several
//! masters the client's clock in microseconds plus [`TOKEN_LEAD`] ([`token_proposal`]), or the
//! highest token the nodes that handed this waiter the lease named (`crate::handoff`), whichever
//! is higher. When no node's counter or clock is past the proposal, every node of the attempt
//! mints the same token and no raise is needed, which saves a round trip on every Redlock grant.
//! A node past it mints its own value, and the raise above makes up the difference, as before.
//! The floor only lifts what a node mints; the argument below does not depend on it.
//!
//! Why tokens strictly increase while no node forgets: let A hold token `t` with granting set
//! `M_A`. Every node of `M_A` has counter >= `t` before A's lease there ends (the raise is
//! awaited before A uses `t`). A later holder B is granted on a majority `M_B`; `M_A` and `M_B`
//! share a node X (two majorities of N always intersect), and B's grant on X can only happen once
//! A's lease on X is gone, so X mints at least its counter + 1, that is `t + 1` or more, and B's token (the maximum over
//! `M_B`) is above `t`.
//!
//! # When nodes forget
//! A node that restarts without its data forgets its leases and its counters. Two rules keep
//! tokens increasing and holders apart, for one master, a majority or all of them, and for one
//! Redis (N = 1) alike:
//!
//! - **Counters never restart lower.** Each grant mints max(counter + 1, the node's clock in
//!   microseconds) (`lua/grant.lua`; a missing counter counts as 0), so a counter stays at or
//!   about the clock while fewer than one token per microsecond is minted on average; a raise
//!   copies a value that was at or below another node's clock, or a client's clock plus
//!   [`TOKEN_LEAD`] (a proposal). So every token handed out by time `T` is at most the highest
//!   clock among the nodes and clients at `T`, plus that lead (milliseconds). A node that comes back empty seeds
//!   at its own clock once its quarantine is over, above every earlier token as long as no clock went back and the
//!   clocks agree to within the quarantine. (A clock further off could let a token go back; the
//!   state file's fence record then refuses the lower token, exit 76, rather than let a stale
//!   write through.)
//! - **Restart quarantine.** A node that does not know the lock (counter missing) refuses to
//!   grant it until its uptime reaches the quarantine (at least every client's TTL), unless
//!   `lock init` marked this run of the server as brand-new; a restart changes the run id, so the
//!   mark does not survive it. Every lease the node forgot has expired by then: a holder renews
//!   every TTL/3 and finds its lease gone there. A node whose data survived (AOF) knows the lock
//!   and grants at once. A background raise (above) may create the counter on a node still in
//!   quarantine; that is harmless, as it follows a grant by a majority without that node, which
//!   any live lease the node forgot would have blocked (two majorities share a node).
//!
//! Operators should still run masters with `appendonly yes` and `appendfsync always`: with
//! `everysec`, a restart can lose the last second of grants of a lock whose counter survived,
//! which no rule here can tell from a lock that was never granted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use crate::backend::{GrantReply, GrantRequest, Node, NodeError};
use crate::clock::{Deadline, Stamp};
use crate::holder::HolderInfo;
use crate::keys::LockKeys;

mod ending;
mod late;
mod tally;
pub(crate) mod trace;

use late::LateGrants;
use tally::Tally;

/// How far ahead of its clock a client proposes the token of an attempt on several masters:
/// past the time the attempt takes to reach them, so that their clocks are still behind it
/// when they mint (on one host; across hosts, as long as the clocks agree this closely).
/// Small beside any restart or failover, which the "When nodes forget" argument needs.
pub(crate) const TOKEN_LEAD: Duration = Duration::from_millis(20);

/// The token floor a client proposes for an attempt on `nodes` masters (0 for one: a single
/// node needs no agreement).
pub(crate) fn token_proposal(nodes: usize) -> u64 {
    if nodes < 2 {
        return 0;
    }
    let lead = u64::try_from(TOKEN_LEAD.as_micros()).unwrap_or(0);
    crate::clock::epoch_micros().saturating_add(lead)
}

/// Nodes needed for a majority of `n`.
pub(crate) fn majority(n: usize) -> usize {
    n / 2 + 1
}

/// Clock drift allowance for a TTL: 1% of it plus 2 ms (the reference Redlock constant).
pub(crate) fn drift(ttl: Duration) -> Duration {
    ttl / 100 + Duration::from_millis(2)
}

/// Time left on a lease granted `elapsed` ago; `None` once nothing is left. Never underflows.
pub(crate) fn validity(ttl: Duration, elapsed: Duration) -> Option<Duration> {
    ttl.checked_sub(elapsed)
        .and_then(|d| d.checked_sub(drift(ttl)))
        .filter(|d| !d.is_zero())
}

/// How one attempt to take a lock on the quorum ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// A majority granted in time.
    Granted {
        /// The fencing token handed out.
        token: u64,
        /// Deadline of the lease's validity.
        valid_until: Deadline,
    },
    /// Someone else holds it: no vote was ours.
    Held {
        /// Shortest time left on the holder's lease among the refusing nodes.
        pttl: Duration,
        /// The holder, when a node said.
        holder: Option<HolderInfo>,
        /// The waiter first in line, when a node named one other than us.
        head: Option<Box<HolderInfo>>,
        /// Some node granted this attempt before the majority refused (its vote was undone):
        /// the lease is free there and we were first in line, so the next attempt is due soon.
        undone: bool,
    },
    /// Too many nodes are in their restart quarantine for a majority; our votes were
    /// released. Retry once the first of them is out.
    Quarantined {
        /// Time until the first quarantined node grants again.
        left: Duration,
        /// How many nodes are in quarantine.
        nodes: usize,
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
pub(crate) enum Renewal {
    /// A majority extended the lease.
    Renewed {
        /// New validity deadline.
        valid_until: Deadline,
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
pub(crate) struct Quorum<N: ?Sized = dyn Node> {
    /// Owners whose grant may still land on a node after their attempt returned.
    late: Arc<LateGrants>,
    nodes: Vec<Arc<N>>,
    /// Per node: its last grant call timed out (it is paused, or its host is gone without a
    /// reset), until one answers. An attempt waits for such a node only a grace after the
    /// others answered, as its answer would come at the connect timeout, not the node's.
    silent: Arc<[AtomicBool]>,
}

impl<N: Node + ?Sized> Quorum<N> {
    /// A quorum over `nodes` (at least one).
    pub(crate) fn new(nodes: Vec<Arc<N>>) -> Self {
        Quorum {
            late: Arc::default(),
            silent: nodes.iter().map(|_| AtomicBool::new(false)).collect(),
            nodes,
        }
    }

    /// The nodes.
    pub(crate) fn nodes(&self) -> &[Arc<N>] {
        &self.nodes
    }

    /// Nodes needed for a majority.
    pub(crate) fn needed(&self) -> usize {
        majority(self.nodes.len())
    }

    /// One attempt to take the lease on a majority.
    pub(crate) async fn grant(&self, req: &GrantRequest) -> Attempt {
        let n = self.nodes.len();
        let need = self.needed();
        if n == 0 {
            return Attempt::Unavailable {
                reachable: 0,
                causes: vec![("(none)".into(), "no nodes configured".into())],
            };
        }
        let start = Stamp::now();
        self.late.revive(&req.owner);
        // Each call owns what it needs, so the ones still running when a majority has answered
        // can finish in the background (see `settle`).
        let mut pending: FuturesUnordered<_> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let (node, req) = (Arc::clone(node), req.clone());
                async move { (i, node.grant(&req).await) }
            })
            .collect();

        let mut t = Tally::new(n);
        let decided = |t: &Tally| t.granted.len() >= need || t.against() > n.saturating_sub(need);
        // Each reply: whether its node is silent (see `silent`), then counted.
        let count = |t: &mut Tally, (i, reply): (usize, Result<GrantReply, NodeError>)| {
            heard(&self.silent, i, &reply);
            t.take(i, reply, || self.nodes[i].label(), start.elapsed());
        };
        while let Some(answer) = pending.next().await {
            count(&mut t, answer);
            if decided(&t) {
                break;
            }
            let loud_left =
                (0..n).any(|j| !t.answered[j] && !self.silent[j].load(Ordering::Relaxed));
            if !loud_left && !pending.is_empty() {
                // Only nodes silent at their last call are left: as long again as the attempt
                // took (at least 2 ms) for them, then decide without them (a paused master
                // answered each attempt that needed it at the connect timeout, a second).
                // Their calls finish in the background (see `settle`), and one that answers
                // is waited for again.
                let grace = start.elapsed().max(Duration::from_millis(2));
                let rest = async {
                    while let Some(answer) = pending.next().await {
                        count(&mut t, answer);
                        if decided(&t) {
                            break;
                        }
                    }
                };
                let _ = tokio::time::timeout(grace, rest).await;
                if !decided(&t) {
                    // Still silent: a failed node for this attempt, as its call's timeout
                    // would have said (so that too few reachable is Unavailable, as before).
                    for j in (0..n).filter(|&j| !t.answered[j]) {
                        t.causes.push((
                            self.nodes[j].label(),
                            "no answer (it did not answer its last call in time either)".into(),
                        ));
                    }
                }
                break;
            }
        }
        if t.granted.is_empty() && !t.refused.is_empty() && !pending.is_empty() {
            // Refused wherever a node answered, and the majority lost to nodes that failed:
            // held, or a split if a node still on its way grants. Those that answer within as
            // long again as the attempt took (at least 2 ms) tell; a silent one (paused, its
            // host gone) does not. Without this, with 2 of 5 masters down every attempt on a
            // held lock was a split vote: the waiter retried every few milliseconds, deaf to
            // the release, and left a call to the silent master behind each time.
            let grace = start.elapsed().max(Duration::from_millis(2));
            let more = async {
                while let Some(answer) = pending.next().await {
                    count(&mut t, answer);
                    if !t.granted.is_empty() {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(grace, more).await;
        }
        let Tally {
            granted,
            refused,
            head,
            mut causes,
            quarantined,
            answers,
            ..
        } = t;

        if trace::on() {
            let mut all = answers;
            all.sort();
            let said: Vec<String> = all.iter().map(|(i, a)| format!("m{i} {a}")).collect();
            trace::line(format_args!(
                "grant {} decided in {}ms: {}; {} not awaited",
                trace::short(&req.owner),
                start.elapsed().as_millis(),
                said.join(", "),
                pending.len()
            ));
        }
        // Every node answered and none granted: there is no vote of ours to undo (a node that
        // failed or timed out may have granted before its answer was lost).
        let no_votes = granted.is_empty() && pending.is_empty() && causes.is_empty();
        if granted.len() >= need {
            let token = granted.iter().map(|g| g.1).max().unwrap_or(0);
            self.settle(req, Some(token), pending);
            // Every node of the granting majority must hold `token` before it is handed out
            // (the module doc's argument); a raise that fails makes this attempt fail, and the
            // node counts as one that did not answer.
            let (holding, failed) = self.raise(&req.keys, token, &granted).await;
            let elapsed = start.elapsed();
            if holding >= need
                && let Some(left) = validity(req.ttl, elapsed)
            {
                return Attempt::Granted {
                    token,
                    valid_until: Deadline::new(start, elapsed + left),
                };
            }
            causes.extend(failed);
            // Not ours after all: a grant still in flight is undone where it lands.
            self.late.end(&req.owner);
        } else {
            // Calls already sent still run on their nodes: one that grants after the undo
            // below is undone where it lands.
            self.settle(req, None, pending);
        }

        // Not ours: undo every vote we may have, on every node, before saying why.
        if !no_votes {
            self.undo(&req.keys, &req.owner, req.log_cap).await;
        }
        let holder = refused
            .iter()
            .map(|r| r.1.clone())
            .find(|h| !h.owner.is_empty());
        if causes.len() > n.saturating_sub(need) {
            Attempt::Unavailable {
                reachable: n - causes.len(),
                causes,
            }
        } else if refused.len() >= need {
            let pttl = refused.iter().map(|r| r.0).min().unwrap_or_default();
            Attempt::Held {
                pttl,
                holder,
                head,
                undone: !granted.is_empty(),
            }
        } else if quarantined.len() > n.saturating_sub(need) {
            // The quarantined masters alone leave no majority: nothing to do until one is out.
            Attempt::Quarantined {
                left: quarantined.iter().min().copied().unwrap_or_default(),
                nodes: quarantined.len(),
            }
        } else if !refused.is_empty()
            && !quarantined.is_empty()
            && refused.len() + causes.len() + quarantined.len() > n.saturating_sub(need)
        {
            // A holder and quarantined masters between them leave no majority: wait for the
            // holder's release (an event) or the first end, of its lease or of a quarantine.
            let pttl = refused
                .iter()
                .map(|r| r.0)
                .chain(quarantined.iter().copied())
                .min()
                .unwrap_or_default();
            Attempt::Held {
                pttl,
                holder,
                head,
                undone: !granted.is_empty(),
            }
        } else if granted.is_empty() && !refused.is_empty() {
            // No vote was ours and every node that answered refused (see the grace above):
            // held, or another waiter is first in line, however many nodes are silent.
            Attempt::Held {
                pttl: refused.iter().map(|r| r.0).min().unwrap_or_default(),
                holder,
                head,
                undone: false,
            }
        } else {
            Attempt::Split { holder }
        }
    }

    /// Lift the granting nodes whose counter is below `token` to it, awaited. Returns how many
    /// granting nodes hold at least `token` afterwards, and the nodes whose raise failed.
    async fn raise(
        &self,
        keys: &LockKeys,
        token: u64,
        granted: &[(usize, u64)],
    ) -> (usize, Vec<(String, String)>) {
        let mut holding = granted.iter().filter(|g| g.1 >= token).count();
        let mut lagging: FuturesUnordered<_> = granted
            .iter()
            .filter(|g| g.1 < token)
            .map(|&(i, _)| async move { (i, self.nodes[i].raise(keys, token).await) })
            .collect();
        let mut failed = Vec::new();
        while let Some((i, r)) = lagging.next().await {
            match r {
                Ok(c) if c >= token => holding += 1,
                Ok(c) => failed.push((
                    self.nodes[i].label(),
                    format!("fencing counter stayed at {c} below token {token}"),
                )),
                Err(e) => failed.push((self.nodes[i].label(), e.cause)),
            }
        }
        (holding, failed)
    }

    /// The nodes that had not answered when the attempt was decided: let their calls finish in
    /// the background. With the attempt granted (`token`), raise the ones that did not report a
    /// counter of at least `token`, so that with every node up all of them remember it. A grant
    /// that lands once the attempt failed, or once its lease was released, is undone on its node
    /// (a release that ran before it there found nothing to end). Nothing waits for this.
    fn settle<F>(&self, req: &GrantRequest, token: Option<u64>, mut pending: FuturesUnordered<F>)
    where
        F: std::future::Future<Output = (usize, Result<GrantReply, NodeError>)> + Send + 'static,
    {
        if pending.is_empty() {
            return;
        }
        let (nodes, keys, late) = (self.nodes.clone(), req.keys.clone(), Arc::clone(&self.late));
        let silent = Arc::clone(&self.silent);
        let (owner, log_cap) = (req.owner.clone(), req.log_cap);
        late.start(&owner, token.is_none());
        tokio::spawn(async move {
            while let Some((i, reply)) = pending.next().await {
                heard(&silent, i, &reply);
                let landed = matches!(reply, Ok(GrantReply::Granted { .. }));
                if landed && late.ended(&owner) {
                    if late.must_undo(&owner, i).await {
                        let _ = nodes[i].undo(&keys, &owner, log_cap).await;
                    }
                    continue;
                }
                if let Some(token) = token
                    && !matches!(reply, Ok(GrantReply::Granted { token: t }) if t >= token)
                {
                    let _ = nodes[i].raise(&keys, token).await;
                }
            }
            late.finish(&owner);
        });
    }

    /// Extend the lease on a majority.
    pub(crate) async fn renew(&self, keys: &LockKeys, owner: &str, ttl: Duration) -> Renewal {
        let n = self.nodes.len();
        let need = self.needed();
        let start = Stamp::now();
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
            if ours >= need
                || not_ours > n.saturating_sub(need)
                || not_ours + causes.len() > n.saturating_sub(need)
            {
                break;
            }
        }
        let elapsed = start.elapsed();
        if ours >= need
            && let Some(left) = validity(ttl, elapsed)
        {
            return Renewal::Renewed {
                valid_until: Deadline::new(start, elapsed + left),
            };
        }
        if not_ours > n.saturating_sub(need) {
            Renewal::Lost
        } else {
            Renewal::Undecided { causes }
        }
    }
}

/// Keep whether node `i`'s grant call timed out (see `Quorum::silent`).
fn heard(silent: &[AtomicBool], i: usize, reply: &Result<GrantReply, NodeError>) {
    silent[i].store(matches!(reply, Err(e) if e.timed_out), Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    //! Quorum arithmetic against fake nodes that grant, refuse, fail, time out or answer late.
    //! Time is tokio's paused clock, so "late" and "timed out" cost no real time.

    use tokio::time::Instant;

    use super::*;
    use crate::fake_node::{FakeNode, Mode};
    use crate::holder::Identity;

    const NODE_TIMEOUT: Duration = Duration::from_millis(50);
    /// How long a lease another holds has left on a fake node when a test asks.
    const HELD: Duration = Duration::from_millis(500);

    /// The crate's one fake node (see `crate::fake_node`), under the name these tests use.
    type Fake = FakeNode;

    fn fakes(n: usize) -> (Quorum<Fake>, Vec<Arc<Fake>>) {
        let nodes: Vec<Arc<Fake>> = (0..n).map(|_| Fake::new()).collect();
        (Quorum::new(nodes.clone()), nodes)
    }

    fn request(owner: &str, ttl: Duration) -> GrantRequest {
        GrantRequest {
            keys: LockKeys::new("ns", "lock"),
            owner: owner.into(),
            join_hash: String::new(),
            ttl,
            identity: Identity::current("test"),
            waiter: None,
            waiter_ttl: ttl,
            place: 0,
            log_cap: 10,
            quarantine: Duration::ZERO,
            floor: 0,
        }
    }

    #[test]
    fn majority_and_validity_never_underflow() {
        assert_eq!(
            [1, 2, 3, 4, 5, 7].map(majority),
            [1, 2, 2, 3, 3, 4],
            "majorities of 1, 2, 3, 4, 5, 7"
        );
        let ttl = Duration::from_secs(10);
        assert_eq!(drift(ttl), Duration::from_millis(102));
        assert_eq!(
            validity(ttl, Duration::ZERO),
            Some(Duration::from_millis(9898))
        );
        for ttl_ms in [0u64, 1, 2, 3, 100, 10_000, u64::MAX / 4] {
            for elapsed_ms in [0u64, 1, 2, 99, 100, 10_000, u64::MAX / 2] {
                let (ttl, elapsed) = (
                    Duration::from_millis(ttl_ms),
                    Duration::from_millis(elapsed_ms),
                );
                if let Some(v) = validity(ttl, elapsed) {
                    assert!(v + elapsed + drift(ttl) == ttl, "{ttl:?} {elapsed:?}");
                }
            }
        }
        assert_eq!(validity(ttl, ttl), None);
        assert_eq!(validity(ttl, Duration::from_millis(9898)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_minority_does_not_slow_the_grant() {
        let (q, nodes) = fakes(5);
        nodes[3].set(Mode::Silent(NODE_TIMEOUT));
        nodes[4].set(Mode::Silent(NODE_TIMEOUT));
        let start = Instant::now();
        let got = q.grant(&request("a", Duration::from_secs(10))).await;
        assert!(matches!(got, Attempt::Granted { token: 1, .. }), "{got:?}");
        assert!(
            start.elapsed() < NODE_TIMEOUT,
            "waited for the silent nodes"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_majority_is_unavailable_with_each_cause() {
        let (q, nodes) = fakes(5);
        for n in &nodes[..2] {
            n.set(Mode::Down);
        }
        nodes[2].set(Mode::Silent(NODE_TIMEOUT));
        let got = q.grant(&request("a", Duration::from_secs(10))).await;
        let Attempt::Unavailable { reachable, causes } = got else {
            panic!("{got:?}")
        };
        assert_eq!(reachable, 2);
        assert_eq!(causes.len(), 3);
        assert!(
            causes
                .iter()
                .any(|c| c.1.contains("no answer within 50 ms"))
        );
        assert!(causes.iter().any(|c| c.1.contains("refused")));
        assert!(
            nodes.iter().all(|n| n.owner().is_none()),
            "votes left behind"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_split_vote_releases_its_minority_at_once() {
        let (q, nodes) = fakes(3);
        nodes[1].hold("other", HELD, HolderInfo::default());
        nodes[2].set(Mode::Down);
        let got = q.grant(&request("a", Duration::from_secs(10))).await;
        assert!(matches!(got, Attempt::Split { .. }), "{got:?}");
        assert_eq!(nodes[0].owner(), None, "our one vote was not released");
        assert_eq!(nodes[1].owner().as_deref(), Some("other"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lock_held_on_every_master_that_answers_is_held_with_two_of_five_down() {
        let (q, nodes) = fakes(5);
        nodes[0].set(Mode::Down);
        nodes[1].set(Mode::Silent(NODE_TIMEOUT));
        let other = HolderInfo {
            owner: "other".into(),
            ..HolderInfo::default()
        };
        for n in &nodes[2..] {
            n.hold("other", HELD, other.clone());
        }
        // Slow to answer: two refusals and the dead master decide the attempt.
        nodes[4].set(Mode::Late(Duration::from_millis(30)));
        let start = Instant::now();
        let got = q.grant(&request("a", Duration::from_secs(10))).await;
        let Attempt::Held { holder, undone, .. } = got else {
            panic!("taken for a split vote: {got:?}")
        };
        assert_eq!(holder.map(|h| h.owner).as_deref(), Some("other"));
        assert!(!undone);
        assert!(
            start.elapsed() < Duration::from_millis(30),
            "waited for the slow or the silent master: {:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_master_that_grants_within_the_grace_makes_it_a_split_vote() {
        let (q, nodes) = fakes(5);
        nodes[0].set(Mode::Down);
        nodes[1].set(Mode::Down);
        nodes[2].hold("other", HELD, HolderInfo::default());
        // Free there, answering a moment after the refusal decided the attempt.
        nodes[3].set(Mode::Late(Duration::from_millis(1)));
        nodes[4].set(Mode::Late(Duration::from_millis(1)));
        let got = q.grant(&request("a", Duration::from_secs(10))).await;
        assert!(matches!(got, Attempt::Split { .. }), "{got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            nodes.iter().all(|n| n.owner().as_deref() != Some("a")),
            "a vote was left behind"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_master_silent_at_its_last_call_is_waited_for_a_grace_only_until_it_answers() {
        let (q, nodes) = fakes(5);
        // Dead, paused (a call to it ends at the connect timeout), free, free, held: every
        // attempt needs the paused master's vote.
        const CONNECT: Duration = Duration::from_secs(1);
        nodes[0].set(Mode::Down);
        nodes[1].set(Mode::Silent(CONNECT));
        nodes[4].hold("other", Duration::from_secs(60), HolderInfo::default());
        let timed = |owner: &'static str| {
            let q = &q;
            async move {
                let start = Instant::now();
                let got = q.grant(&request(owner, Duration::from_secs(10))).await;
                (got, start.elapsed())
            }
        };
        let (got, took) = timed("a").await;
        assert!(matches!(got, Attempt::Split { .. }), "{got:?}");
        assert!(
            took >= CONNECT,
            "the first call to it is waited for: {took:?}"
        );
        let (got, took) = timed("b").await;
        assert!(matches!(got, Attempt::Split { .. }), "{got:?}");
        assert!(
            took < Duration::from_millis(10),
            "waited {took:?} again for the master silent at its last call"
        );
        // It answers again, within the grace: its vote counts.
        nodes[1].set(Mode::Up);
        let (got, _) = timed("c").await;
        assert!(matches!(got, Attempt::Granted { .. }), "{got:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_master_silent_at_its_last_call_and_still_silent_counts_as_unreachable() {
        let (q, nodes) = fakes(5);
        nodes[0].set(Mode::Down);
        nodes[1].set(Mode::Down);
        nodes[2].set(Mode::Silent(Duration::from_secs(1)));
        for owner in ["a", "b"] {
            let got = q.grant(&request(owner, Duration::from_secs(10))).await;
            assert!(
                matches!(got, Attempt::Unavailable { reachable: 2, .. }),
                "{owner}: {got:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn subscribing_does_not_wait_for_a_silent_master_once_a_majority_listens() {
        let (q, nodes) = fakes(5);
        nodes[0].set(Mode::Down);
        nodes[1].set(Mode::Silent(Duration::from_secs(1)));
        let start = Instant::now();
        let (streams, _) = q.subscribe(&LockKeys::new("ns", "lock")).await;
        assert_eq!(streams.len(), 3);
        assert!(
            start.elapsed() < Duration::from_millis(10),
            "waited {:?} for the silent master",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_release_waits_for_a_slower_master_within_its_deadline() {
        let (q, nodes) = fakes(3);
        let req = request("a", Duration::from_secs(10));
        assert!(matches!(q.grant(&req).await, Attempt::Granted { .. }));
        // Two answer at once, the third 30 ms later (inside the 50 ms node deadline): a release
        // that returned on the majority would leave the lease standing there.
        nodes[2].set(Mode::Late(Duration::from_millis(30)));
        let (confirmed, denied) = q.release_counted(&req.keys, "a", 10, NODE_TIMEOUT).await;
        assert_eq!((confirmed, denied), (3, 0));
        assert!(
            nodes.iter().all(|n| n.owner().is_none()),
            "the lease was left standing on the slower master"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_majority_refusing_means_held() {
        let (q, nodes) = fakes(3);
        for n in &nodes[..2] {
            n.hold("other", HELD, HolderInfo::default());
        }
        let got = q.grant(&request("a", Duration::from_secs(10))).await;
        let Attempt::Held { pttl, holder, .. } = got else {
            panic!("{got:?}")
        };
        assert_eq!(pttl, Duration::from_millis(500));
        assert_eq!(holder.unwrap().owner, "other");
    }

    #[tokio::test(start_paused = true)]
    async fn answers_that_arrive_after_the_validity_do_not_grant() {
        let (q, nodes) = fakes(3);
        for n in &nodes {
            n.set(Mode::Late(Duration::from_millis(99)));
        }
        // TTL 100 ms: after 99 ms, 100 - 99 - drift (3 ms) is below zero.
        let got = q.grant(&request("a", Duration::from_millis(100))).await;
        assert!(matches!(got, Attempt::Split { .. }), "{got:?}");
        assert!(nodes.iter().all(|n| n.owner().is_none()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_token_is_the_highest_counter_and_laggards_are_raised() {
        let (q, nodes) = fakes(3);
        // A majority (nodes 0 and 2) remembers 5 or more: the last token handed out was <= 5.
        nodes[0].state().counter = 5;
        nodes[1].state().counter = 3;
        nodes[2].state().counter = 7;
        let got = q.grant(&request("a", Duration::from_secs(10))).await;
        let Attempt::Granted { token, .. } = got else {
            panic!("{got:?}")
        };
        assert!(token > 5, "token {token}");
        tokio::task::yield_now().await;
        let at_least = nodes.iter().filter(|n| n.counter() >= token).count();
        assert!(
            at_least >= 2,
            "a majority must hold the token after the grant"
        );
        assert!(
            nodes[1].counter() >= token,
            "the lagging node 1 was not raised"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_a_majority_cannot_be_raised_to_is_not_handed_out() {
        let (q, nodes) = fakes(3);
        // Nodes 0 and 1 grant first, at 10 and 2; node 1 cannot be raised to 10, so only one
        // node of the granting majority would remember the token.
        nodes[0].state().counter = 9;
        nodes[1].state().counter = 1;
        nodes[2].state().counter = 9;
        nodes[1].set(Mode::RaiseFails);
        nodes[2].set(Mode::Late(Duration::from_millis(20)));
        let got = q.grant(&request("a", Duration::from_secs(10))).await;
        assert!(matches!(got, Attempt::Split { .. }), "{got:?}");
        assert!(nodes.iter().all(|n| n.owner().is_none()));
        // With one of them healed, a majority holds the token and it is handed out.
        nodes[1].set(Mode::Up);
        let got = q.grant(&request("b", Duration::from_secs(10))).await;
        let Attempt::Granted { token, .. } = got else {
            panic!("{got:?}")
        };
        assert!(token >= 10 && nodes[1].counter() >= token, "{token}");
    }

    #[tokio::test(start_paused = true)]
    async fn masters_in_quarantine_say_how_long_instead_of_splitting_the_vote() {
        let (q, nodes) = fakes(3);
        nodes[1].set(Mode::QuarantinedUntil(
            Instant::now() + Duration::from_millis(800),
        ));
        nodes[2].set(Mode::QuarantinedUntil(
            Instant::now() + Duration::from_millis(300),
        ));
        let got = q.grant(&request("a", Duration::from_secs(10))).await;
        assert_eq!(
            got,
            Attempt::Quarantined {
                left: Duration::from_millis(300),
                nodes: 2
            }
        );
        // The healthy master's vote was given back.
        assert!(nodes[0].owner().is_none());
        // One quarantined master of three does not stop a majority.
        nodes[1].set(Mode::Up);
        let got = q.grant(&request("b", Duration::from_secs(10))).await;
        assert!(matches!(got, Attempt::Granted { .. }), "{got:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_holder_and_a_quarantine_together_mean_waiting_for_the_holder() {
        let (q, nodes) = fakes(3);
        // "x" holds on master 0 only; master 2 is quarantined for 10 s; master 1 is free.
        nodes[0].hold("x", HELD, HolderInfo::default());
        nodes[2].set(Mode::QuarantinedUntil(
            Instant::now() + Duration::from_secs(10),
        ));
        let got = q.grant(&request("c", Duration::from_secs(10))).await;
        // Its release (an event) or its lease's end comes first, not the whole quarantine.
        let Attempt::Held { pttl, holder, .. } = got else {
            panic!("{got:?}")
        };
        assert_eq!(
            pttl,
            Duration::from_millis(500),
            "the fake's lease time left"
        );
        assert_eq!(holder.map(|h| h.owner), Some("x".to_owned()));
        assert!(nodes[1].owner().is_none(), "our vote was given back");
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_quorum_is_unavailable_not_a_panic() {
        let q: Quorum<Fake> = Quorum::new(Vec::new());
        let got = q.grant(&request("a", Duration::from_secs(10))).await;
        assert!(
            matches!(got, Attempt::Unavailable { reachable: 0, .. }),
            "{got:?}"
        );
        let keys = LockKeys::new("ns", "lock");
        assert!(matches!(
            q.renew(&keys, "a", Duration::from_secs(10)).await,
            Renewal::Undecided { .. }
        ));
        assert_eq!(q.release(&keys, "a", 10).await, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn renewal_needs_a_majority_and_tells_loss_from_silence() {
        let (q, nodes) = fakes(3);
        let req = request("a", Duration::from_secs(10));
        assert!(matches!(q.grant(&req).await, Attempt::Granted { .. }));
        nodes[0].set(Mode::Silent(NODE_TIMEOUT));
        assert!(matches!(
            q.renew(&req.keys, "a", req.ttl).await,
            Renewal::Renewed { .. }
        ));
        nodes[1].set(Mode::Silent(NODE_TIMEOUT));
        assert!(matches!(
            q.renew(&req.keys, "a", req.ttl).await,
            Renewal::Undecided { .. }
        ));
        nodes[0].set(Mode::Up);
        nodes[1].set(Mode::Up);
        nodes[0].forget();
        nodes[1].forget();
        assert_eq!(q.renew(&req.keys, "a", req.ttl).await, Renewal::Lost);
    }

    /// Tokens stay strictly increasing over many rounds in which, at any time, at most a
    /// minority (2 of 5) of the nodes is faulty: down, silent, restarted empty, or still behind
    /// (its counter below the last token, because it missed a raise while it was away).
    #[tokio::test(start_paused = true)]
    async fn tokens_increase_while_a_majority_survives() {
        let (q, nodes) = fakes(5);
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        let mut last = 0;
        let (mut repeats, mut forgotten) = (0, 0);
        for round in 0..2000 {
            for n in &nodes {
                n.set(Mode::Up);
            }
            let mut faulty: Vec<usize> = (0..5).filter(|&i| nodes[i].counter() < last).collect();
            for _ in 0..next(3) {
                let i = next(5) as usize;
                if faulty.len() >= 2 && !faulty.contains(&i) {
                    break;
                }
                if !faulty.contains(&i) {
                    faulty.push(i);
                }
                match next(3) {
                    0 => {
                        nodes[i].forget();
                        forgotten += 1;
                    }
                    1 => nodes[i].set(Mode::Silent(NODE_TIMEOUT)),
                    _ => nodes[i].set(Mode::Down),
                }
            }
            let owner = format!("owner-{round}");
            let req = request(&owner, Duration::from_secs(10));
            match q.grant(&req).await {
                Attempt::Granted { token, .. } => {
                    assert!(token > last, "round {round}: token {token} after {last}");
                    repeats += usize::from(token == last);
                    last = token;
                    tokio::task::yield_now().await;
                    q.release(&req.keys, &owner, 10).await;
                }
                other => panic!("round {round}: {other:?} with faulty nodes {faulty:?}"),
            }
        }
        assert_eq!(repeats, 0);
        assert!(
            forgotten > 100,
            "the run restarted too few nodes to mean much: {forgotten}"
        );
    }

    /// A majority (or all) of the masters restart empty again and again, their clocks a little
    /// off: with counters seeded from the clock, no token repeats or goes back; with counters
    /// that restart from 0 (the old behaviour), they do.
    #[tokio::test(start_paused = true)]
    async fn tokens_increase_when_a_majority_restarts_empty_with_clock_seeded_counters() {
        // The quarantine a restarted node waits before it grants a lock it does not know.
        const QUARANTINE: Duration = Duration::from_millis(20);
        let mut backwards_by_seeding = Vec::new();
        for seeded in [true, false] {
            let (q, nodes) = fakes(3);
            for (i, n) in nodes.iter().enumerate() {
                // Clocks up to 1 ms apart, well inside the quarantine.
                *n.clock_skew.lock().unwrap() = seeded.then_some(i as i64 * 700 - 700);
            }
            let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
            let mut next = |m: u64| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed % m
            };
            let (mut last, mut backwards, mut restarts) = (0, 0, 0);
            for round in 0..600 {
                if round % 20 == 19 {
                    // Two of three, or all three, restart empty; the quarantine passes.
                    let spared = next(4) as usize;
                    for (i, n) in nodes.iter().enumerate() {
                        if i != spared {
                            n.forget();
                            restarts += 1;
                        }
                    }
                    tokio::time::advance(QUARANTINE).await;
                }
                let owner = format!("owner-{round}");
                let req = request(&owner, Duration::from_secs(10));
                let Attempt::Granted { token, .. } = q.grant(&req).await else {
                    panic!("round {round}: not granted");
                };
                backwards += usize::from(token <= last);
                last = last.max(token);
                tokio::task::yield_now().await;
                q.release(&req.keys, &owner, 10).await;
                // Far fewer than one token per microsecond.
                tokio::time::advance(Duration::from_micros(1 + next(50))).await;
            }
            assert!(restarts > 50, "{restarts}");
            backwards_by_seeding.push(backwards);
        }
        assert_eq!(
            backwards_by_seeding[0], 0,
            "a token repeated or went back with clock-seeded counters"
        );
        assert!(
            backwards_by_seeding[1] > 0,
            "the test did not catch counters that restart from 0"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_grant_that_lands_after_its_lease_was_released_is_undone_where_it_landed() {
        // A majority granted at once; the third master's grant is still on its way when the
        // holder releases, and the release reaches that master first (found nothing there).
        let (q, nodes) = fakes(3);
        nodes[2].set(Mode::Late(Duration::from_millis(30)));
        let req = request("a", Duration::from_secs(10));
        assert!(matches!(q.grant(&req).await, Attempt::Granted { .. }));
        nodes[2].set(Mode::Up);
        q.release(&req.keys, "a", 10).await;
        assert!(nodes.iter().all(|n| n.owner().is_none()));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            nodes[2].owner(),
            None,
            "the late grant stood as an orphan lease for its whole TTL"
        );
        assert!(
            q.late.0.lock().unwrap().is_empty(),
            "bookkeeping left behind"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_grant_of_a_refused_owner_that_tries_again_counts_as_its_new_attempts() {
        // A queued waiter keeps its owner id while refused: the late grant of its first attempt
        // must not undo the lease its second attempt won.
        let (q, nodes) = fakes(3);
        for n in &nodes[..2] {
            n.hold("other", HELD, HolderInfo::default());
        }
        nodes[2].set(Mode::Late(Duration::from_millis(30)));
        let req = request("a", Duration::from_secs(10));
        assert!(matches!(q.grant(&req).await, Attempt::Held { .. }));
        for n in &nodes[..2] {
            assert!(n.release_now("other"));
        }
        nodes[2].set(Mode::Up);
        assert!(matches!(q.grant(&req).await, Attempt::Granted { .. }));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let held = nodes
            .iter()
            .filter(|n| n.owner().as_deref() == Some("a"))
            .count();
        assert!(
            held >= 2,
            "the second attempt's lease was undone: {held} of 3"
        );
    }
}
