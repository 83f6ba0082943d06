//! A held lock, [`Lease`], from grant to release: its fencing token, renewal (once, or in the
//! background while the work runs), noticing loss or coming expiry at once, release, and the
//! release on drop. Also lifting a lock's token floor after a counter reset. A lease joined
//! from an ancestor's (see `crate::join`) carries the ancestor's token and owner; it is never
//! renewed or released from here (its holder does both): its keep-alive asks again whether the
//! holder's lease stands and refreshes its turn among the joiners, and its release gives that
//! turn back.
//!
//! Beside it: `renewal.rs` (renewing once, and the keeper that renews in the background) and
//! `joined.rs` (a joined lease's making and keep-alive).

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::backend::JoinRequest;
use crate::clock::Deadline;
use crate::config::Config;
use crate::coordinator::Backend;
use crate::error::{Error, Result};
use crate::join::{Grant, Origin, leave_turn_on, owner_tag};
use crate::keys::LockKeys;
use crate::local::{Joinable, LocalGuard};

use crate::coordinator::Coordinator;

mod joined;
mod renewal;

/// Why a lease whose deadline passed is lost.
const VALIDITY_RAN_OUT: &str = "its validity ran out without a successful renewal";

/// A fencing token: strictly increasing for each new lease of one lock name.
pub type FencingToken = u64;

/// The work of [`Coordinator::raise_floor`].
pub(crate) async fn raise_floor(
    coordinator: &Coordinator,
    name: &str,
    floor: FencingToken,
) -> Result<()> {
    match &coordinator.inner.backend {
        Backend::Local(local) => local.raise(name, floor),
        Backend::Redis(q) => {
            let keys = LockKeys::new(&coordinator.inner.config.namespace, name);
            let all: FuturesUnordered<_> =
                q.nodes().iter().map(|n| n.raise(&keys, floor)).collect();
            let ok = all.filter(|r| std::future::ready(r.is_ok())).count().await;
            if ok >= q.needed() {
                Ok(())
            } else {
                Err(Error::Unavailable {
                    reachable: ok,
                    total: q.nodes().len(),
                    needed: q.needed(),
                    causes: Vec::new(),
                })
            }
        }
    }
}

/// Where a lease stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseState {
    /// Ours until the deadline, unless renewed.
    Valid {
        /// Validity deadline, as tokio's clock reads it when [`Lease::state`] is called (the
        /// validity itself also counts system suspend; see `clock`).
        valid_until: Instant,
    },
    /// Ours until released (local file locks: the kernel holds it for us).
    Held,
    /// Gone: expired, taken, broken or unrenewable, with the reason.
    Lost(String),
}

/// Where a lease stands, as recorded: [`LeaseState`] with the validity kept as a [`Deadline`]
/// (which counts system suspend) rather than an `Instant` (which does not).
#[derive(Debug, Clone)]
enum Standing {
    Valid(Deadline),
    Held,
    Lost(String),
}

/// How often a watcher re-reads the validity deadline while it waits for it: tokio's timers
/// run on a clock that stops during suspend, so after a resume a timer set before it would
/// ring late by the whole suspend. This bounds how late a lost lease is noticed.
const SUSPEND_CHECK: Duration = Duration::from_secs(1);

enum Hold {
    Redis {
        // Boxed: the keys are the largest part of a lease, and the other variants are small.
        keys: Box<LockKeys>,
        owner: String,
    },
    Local(LocalGuard),
    /// A Redis lease joined from its holder: confirmed (and the turn among its joiners
    /// refreshed) by asking again, never renewed from here.
    JoinedRedis(Box<JoinRequest>),
    /// A local lock held by another process (an ancestor, or this one): the lock file must
    /// still be locked by that pid and name its token and secret; `_turn` is our flock on the
    /// joiners' turn file, given up when dropped.
    JoinedLocal {
        pid: u32,
        _turn: std::fs::File,
    },
}

/// A held lock. Keep it alive with [`Lease::keep_alive`] while work runs; end it with
/// [`Lease::release`]. Dropping it (on any thread) stops the renewal and releases it from a
/// background task on the tokio runtime it was made on; a runtime that shuts down first never runs that task, and the
/// lease then lasts until its TTL runs out. Release explicitly where it matters.
pub struct Lease {
    coordinator: Coordinator,
    name: String,
    token: FencingToken,
    hold: Option<Hold>,
    state: watch::Sender<Standing>,
    acquired: Instant,
    keeper: Option<JoinHandle<()>>,
    /// A lease handed over by a release (see `crate::handoff`): true once its confirmation
    /// (one renewal, in the background) has taken it off probation, or given up.
    probation: Option<watch::Receiver<bool>>,
    /// What a renewal extends it by: the granting holder's TTL (a joined lease has its
    /// holder's, as the coordinator reports it, and renews nothing).
    ttl: Duration,
    /// The owner id: the Redis lease value (public); random for local locks. Its hash tells
    /// leases apart in the fence record.
    owner: String,
    /// What lets a process join it (see `crate::join`): only its SHA-256 is ever written.
    secret: String,
    /// The joiners whose turns it works under, outermost first, its own last (joined leases
    /// only): its command joins under its turn.
    turns: Vec<String>,
    /// The process that holds it (this one, or the ancestor it was joined from).
    origin: Origin,
    joined: bool,
    /// The tokio runtime it was made on, for the release on drop: a drop may run where no
    /// runtime is current (a garbage collector's finalizer thread, a plain thread).
    runtime: Option<tokio::runtime::Handle>,
}

impl Lease {
    pub(crate) fn redis(
        coordinator: Coordinator,
        name: &str,
        keys: LockKeys,
        owner: String,
        secret: String,
        token: FencingToken,
        valid_until: Deadline,
    ) -> Self {
        let origin = Origin::of(coordinator.identity());
        let ttl = coordinator.inner.config.ttl;
        Lease {
            coordinator,
            name: name.to_owned(),
            token,
            hold: Some(Hold::Redis {
                keys: Box::new(keys),
                owner: owner.clone(),
            }),
            state: watch::channel(Standing::Valid(valid_until)).0,
            acquired: Instant::now(),
            keeper: None,
            probation: None,
            ttl,
            owner,
            secret,
            turns: Vec::new(),
            origin,
            joined: false,
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    pub(crate) fn local(coordinator: Coordinator, name: &str, guard: LocalGuard) -> Self {
        let origin = Origin::of(coordinator.identity());
        let ttl = coordinator.inner.config.ttl;
        Lease {
            coordinator,
            name: name.to_owned(),
            token: guard.token,
            secret: guard.secret.clone(),
            turns: Vec::new(),
            hold: Some(Hold::Local(guard)),
            state: watch::channel(Standing::Held).0,
            acquired: Instant::now(),
            keeper: None,
            probation: None,
            ttl,
            owner: uuid::Uuid::new_v4().simple().to_string(),
            origin,
            joined: false,
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// True when this lease was joined from a holder (an ancestor process, or another lease of
    /// this one) rather than granted to it: releasing it leaves the holder's lease held.
    pub fn is_joined(&self) -> bool {
        self.joined
    }

    /// What a command needs to join this lease (see `crate::join`).
    pub(crate) fn grant(&self) -> Grant {
        Grant {
            scope: self.coordinator.scope(),
            name: self.name.clone(),
            token: self.token,
            owner: self.owner.clone(),
            secret: self.secret.clone(),
            pid: self.origin.pid,
            start: self.origin.start,
            ns: self.origin.ns.clone(),
            turns: self.turns.clone(),
        }
    }

    pub(crate) fn coordinator(&self) -> &Coordinator {
        &self.coordinator
    }

    /// A short hash of the owner id: which lease committed, in the fence record.
    pub(crate) fn owner_tag(&self) -> u64 {
        owner_tag(&self.owner)
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The TTL it was granted with (renewals extend it by as much); a joined lease has its
    /// holder's.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The configuration of the coordinator that granted it.
    pub fn config(&self) -> &Config {
        &self.coordinator.inner.config
    }

    /// The lock's identity among the process-group guards of this host: namespace and where
    /// the locks live (see `Coordinator::location`).
    pub(crate) fn guard_scope(&self) -> String {
        self.coordinator.guard_scope()
    }

    /// This lease's fencing token.
    pub fn token(&self) -> FencingToken {
        self.token
    }

    /// Where the lease stands now (validity is judged on a clock that counts system suspend;
    /// see `clock`).
    pub fn state(&self) -> LeaseState {
        if let Some(Hold::JoinedLocal { pid, .. }) = &self.hold
            && let Backend::Local(local) = &self.coordinator.inner.backend
            && local.joinable(
                &self.name,
                *pid,
                self.token,
                &crate::join::secret_hash(&self.secret),
            ) != Joinable::Held
        {
            self.state.send_if_modified(|s| match s {
                Standing::Held => {
                    *s = Standing::Lost(format!(
                        "the lease it joined (pid {pid}, token {}) is no longer held",
                        self.token
                    ));
                    true
                }
                _ => false,
            });
        }
        match &*self.state.borrow() {
            Standing::Valid(d) if d.has_passed() => LeaseState::Lost(VALIDITY_RAN_OUT.into()),
            Standing::Valid(d) => LeaseState::Valid {
                valid_until: d.instant(),
            },
            Standing::Held => LeaseState::Held,
            Standing::Lost(r) => LeaseState::Lost(r.clone()),
        }
    }

    /// `Ok` while the lease is valid, else [`Error::LeaseLost`] saying why.
    pub fn check_valid(&self) -> Result<()> {
        match self.state() {
            LeaseState::Lost(reason) => Err(Error::LeaseLost {
                name: self.name.clone(),
                reason,
            }),
            _ => Ok(()),
        }
    }

    /// Resolves when the lease is lost, with the reason. Pending forever while it is not.
    pub fn lost(&self) -> impl std::future::Future<Output = String> + Send + use<> {
        let watch = self.watch_validity(Duration::ZERO);
        async move { watch.await.unwrap_or_else(|| VALIDITY_RAN_OUT.to_owned()) }
    }

    /// Resolves once the lease is within `margin` of running out with no renewal in sight (its
    /// validity deadline came that close without being extended), or is lost. Pending forever
    /// for local locks, which do not expire.
    pub fn expiring(
        &self,
        margin: Duration,
    ) -> impl std::future::Future<Output = ()> + Send + use<> {
        let watch = self.watch_validity(margin);
        async move {
            let _ = watch.await;
        }
    }

    /// Resolves with the reason when the lease is lost, or with `None` once its validity
    /// deadline is `margin` away without having been extended.
    fn watch_validity(
        &self,
        margin: Duration,
    ) -> impl std::future::Future<Output = Option<String>> + Send + use<> {
        let mut rx = self.state.subscribe();
        async move {
            loop {
                let alarm = match &*rx.borrow_and_update() {
                    Standing::Lost(r) => return Some(r.clone()),
                    Standing::Valid(d) => Some(*d),
                    Standing::Held => None,
                };
                let rings = async {
                    let Some(d) = alarm else {
                        return std::future::pending().await;
                    };
                    loop {
                        let left = d.remaining().saturating_sub(margin);
                        if left.is_zero() {
                            return;
                        }
                        tokio::time::sleep(left.min(SUSPEND_CHECK)).await;
                    }
                };
                tokio::select! {
                    changed = rx.changed() => {
                        if changed.is_err() {
                            return Some("the lease was dropped".to_owned());
                        }
                    }
                    _ = rings => return None,
                }
            }
        }
    }

    /// Record the process group the holder's command runs in, on every node that still has
    /// this lease (see `lua/record_group.lua`), so that a same-host takeover waits for the
    /// group too. Best effort: a node restarted empty or out of reach just lacks the note (the
    /// next holder on this host also finds the group through its guard). Errs only when the
    /// lease is no longer valid. Nothing to record for local locks.
    pub(crate) async fn record_group(&self, group: u32, start: Option<u64>) -> Result<()> {
        if let (Some(Hold::Redis { keys, owner }), Backend::Redis(q)) =
            (&self.hold, &self.coordinator.inner.backend)
        {
            let began = Instant::now();
            let mut all: FuturesUnordered<_> = q
                .nodes()
                .iter()
                .map(|n| n.record_group(keys, owner, group, start))
                .collect();
            let mut recorded = 0;
            while recorded < q.needed() {
                match all.next().await {
                    Some(Ok(true)) => recorded += 1,
                    Some(_) => {}
                    None => break,
                }
            }
            // Like a release: a slow or paused node gets as long again as the majority took,
            // not its whole timeout, before the command may start.
            let grace = began.elapsed().max(Duration::from_millis(2));
            let _ = tokio::time::timeout(grace, all.collect::<Vec<_>>()).await;
        }
        self.check_valid()
    }

    /// End the lease (on every node) and wake the waiters. Errors with [`Error::LeaseLost`]
    /// when it was no longer ours: lost on our side, or a majority of nodes says so.
    pub async fn release(mut self) -> Result<()> {
        if let Some(k) = self.keeper.take() {
            k.abort();
        }
        let lost = self.state();
        if self.joined {
            // Its holder releases it; a joined lease gives its turn back and says whether it
            // was still valid.
            if let (Some(Hold::JoinedRedis(req)), Backend::Redis(q)) =
                (self.hold.take(), &self.coordinator.inner.backend)
            {
                leave_turn_on(q, &req).await;
            }
            return match lost {
                LeaseState::Lost(reason) => Err(Error::LeaseLost {
                    name: self.name.clone(),
                    reason,
                }),
                _ => Ok(()),
            };
        }
        match self.hold.take() {
            Some(Hold::Redis { keys, owner }) => {
                let Backend::Redis(q) = &self.coordinator.inner.backend else {
                    return Err(Error::internal("redis lease on a local coordinator"));
                };
                let cfg = &self.coordinator.inner.config;
                let (confirmed, denied) = q
                    .release_counted(&keys, &owner, cfg.log_cap, cfg.node_timeout)
                    .await;
                if confirmed >= q.needed() {
                    return Ok(());
                }
                let reason = match lost {
                    LeaseState::Lost(reason) => reason,
                    // A majority says it was not ours: it expired there, or an operator broke
                    // it and perhaps someone else holds it now.
                    _ if denied > q.nodes().len().saturating_sub(q.needed()) => {
                        "the coordinator says it was \
                        no longer ours when it was released (it expired, was broken or was taken)"
                            .to_owned()
                    }
                    // Too few answers to tell.
                    _ => return Ok(()),
                };
                Err(Error::LeaseLost {
                    name: self.name.clone(),
                    reason,
                })
            }
            Some(Hold::Local(guard)) => guard.release(),
            Some(Hold::JoinedRedis(_) | Hold::JoinedLocal { .. }) | None => Ok(()),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(k) = self.keeper.take() {
            k.abort();
        }
        let end = match self.hold.take() {
            Some(Hold::Redis { keys, owner }) if !self.joined => Some((keys, Ok(owner))),
            // A joiner dropped without release gives its turn back (else it lapses).
            Some(Hold::JoinedRedis(req)) => Some((Box::new(req.keys.clone()), Err(req))),
            _ => None,
        };
        let Some((keys, who)) = end else {
            return;
        };
        let coordinator = self.coordinator.clone();
        if let Some(rt) = self.runtime.take() {
            rt.spawn(async move {
                if let Backend::Redis(q) = &coordinator.inner.backend {
                    match who {
                        Ok(owner) => {
                            q.release(&keys, &owner, coordinator.inner.config.log_cap)
                                .await;
                        }
                        Err(req) => leave_turn_on(q, &req).await,
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    //! Keep-alive on fake nodes and tokio's paused clock.

    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;
    use crate::fake_node::{Mode, coordinator};

    const TTL: Duration = Duration::from_secs(3);

    #[tokio::test(start_paused = true)]
    async fn renewals_keep_the_lease_valid_for_many_ttls() {
        let (c, fakes) = coordinator(3, TTL);
        let mut lease = c.try_acquire("L").await.unwrap();
        lease.keep_alive(Duration::from_secs(3600));
        tokio::time::sleep(TTL * 10).await;
        assert!(matches!(lease.state(), LeaseState::Valid { .. }));
        // A renewal stops listening once a majority said yes.
        assert!(fakes.iter().filter(|f| f.owner().is_some()).count() >= 2);
        lease.release().await.unwrap();
        assert!(fakes.iter().all(|f| f.owner().is_none()));
    }

    #[tokio::test(start_paused = true)]
    async fn failing_renewals_end_in_loss_when_validity_runs_out() {
        let (c, fakes) = coordinator(1, TTL);
        let mut lease = c.try_acquire("L").await.unwrap();
        let start = Instant::now();
        lease.keep_alive(Duration::from_secs(3600));
        fakes[0].set(Mode::RenewalsFail);
        let reason = lease.lost().await;
        let after = start.elapsed();
        assert!(reason.contains("validity ran out"), "{reason}");
        assert!(
            after <= TTL && after > TTL - Duration::from_millis(100),
            "lost after {after:?}"
        );
        assert!(lease.check_valid().unwrap_err().is_lease_lost());
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_taken_away_is_lost_at_the_next_renewal() {
        let (c, fakes) = coordinator(1, TTL);
        let mut lease = c.try_acquire("L").await.unwrap();
        lease.keep_alive(Duration::from_secs(3600));
        let start = Instant::now();
        fakes[0].state().lease = None;
        let reason = lease.lost().await;
        assert!(reason.contains("no longer ours"), "{reason}");
        assert_eq!(start.elapsed(), TTL / 3, "not noticed at the first renewal");
        assert!(lease.release().await.unwrap_err().is_lease_lost());
    }

    /// A lease as a release hands it over on one node (see `crate::handoff`): ours there on
    /// the probation, taken from the message with the probation's validity.
    fn handed(c: &Coordinator, fake: &crate::fake_node::FakeNode) -> Lease {
        let keys = LockKeys::new(&c.inner.config.namespace, "L");
        let probation = crate::handoff::PROBATION;
        fake.hold_at(&keys, "o", probation, crate::holder::HolderInfo::default());
        let valid = Deadline::new(crate::clock::Stamp::now(), probation);
        Lease::redis(c.clone(), "L", keys, "o".into(), "s".into(), 7, valid)
    }

    fn left(lease: &Lease) -> Duration {
        match lease.state() {
            LeaseState::Valid { valid_until } => valid_until - Instant::now(),
            other => panic!("not valid: {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_handed_lease_is_confirmed_to_a_whole_ttl_in_the_background() {
        let (c, fakes) = coordinator(1, TTL);
        let mut lease = handed(&c, &fakes[0]);
        assert!(left(&lease) <= crate::handoff::PROBATION);
        lease.confirm_handed();
        let start = Instant::now();
        lease.off_probation().await;
        assert_eq!(start.elapsed(), Duration::ZERO, "a timer had to ring");
        assert!(
            left(&lease) > TTL - Duration::from_millis(100),
            "{:?}",
            left(&lease)
        );
        lease.release().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_handed_lease_that_cannot_be_confirmed_stops_waiting_by_its_probation_end() {
        for mode in [Mode::RenewalsFail, Mode::Silent(Duration::from_millis(250))] {
            let (c, fakes) = coordinator(1, TTL);
            fakes[0].set(mode);
            let mut lease = handed(&c, &fakes[0]);
            let start = Instant::now();
            lease.confirm_handed();
            lease.off_probation().await;
            // Bounded: the probation, plus one node deadline for a renewal sent just before
            // its end.
            let took = start.elapsed();
            assert!(
                took <= crate::handoff::PROBATION + Duration::from_millis(250),
                "{mode:?}: waited {took:?}"
            );
            // Never extended: what is left is the probation's, or nothing.
            assert!(!matches!(lease.state(), LeaseState::Valid { valid_until }
                if valid_until - Instant::now() > crate::handoff::PROBATION));
        }
    }

    /// A finalizer (the Node addon's garbage collector) drops a lease on a thread of its own.
    #[tokio::test]
    async fn a_lease_dropped_on_a_thread_without_a_runtime_still_releases() {
        let (c, fakes) = coordinator(1, TTL);
        let lease = c.try_acquire("L").await.unwrap();
        assert!(fakes[0].owner().is_some());
        std::thread::spawn(move || drop(lease)).join().unwrap();
        // Well before the TTL, when the lease would go by itself.
        let deadline = Instant::now() + TTL / 3;
        while fakes[0].owner().is_some() {
            assert!(
                Instant::now() < deadline,
                "the dropped lease was not released"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn keep_alive_stops_at_max_hold() {
        let (c, _fakes) = coordinator(1, TTL);
        let mut lease = c.try_acquire("L").await.unwrap();
        lease.keep_alive(Duration::from_secs(5));
        let reason = lease.lost().await;
        assert!(reason.contains("--max-hold"), "{reason}");
    }

    /// Paused tokio time stands for a monotonic clock stopped by a system suspend; real time
    /// (the boot clock) runs on. The lease must count the suspend.
    #[tokio::test(start_paused = true)]
    async fn a_suspend_longer_than_the_validity_loses_the_lease() {
        let ttl = Duration::from_millis(500);
        let (c, _fakes) = coordinator(1, ttl);
        let lease = c.try_acquire("L").await.unwrap();
        assert!(matches!(lease.state(), LeaseState::Valid { .. }));
        let lost = lease.lost();
        std::thread::sleep(ttl + Duration::from_millis(100));
        assert!(lease.check_valid().unwrap_err().is_lease_lost());
        assert!(lost.await.contains("validity ran out"));
        // A renewal that still lands does not bring back a lease its holder was told it lost.
        assert!(lease.renew().await.unwrap_err().is_lease_lost());
        assert!(matches!(lease.state(), LeaseState::Lost(_)));
    }
}
