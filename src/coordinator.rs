//! The [`Coordinator`] and its whole surface, in one `impl`: connecting, acquiring (one lock,
//! several, a slot, joining an ancestor's lease), the operator's views (status, log, break,
//! audit, node health), marking servers initialized and raising a fencing floor. Each method
//! says what it promises and hands the work to the module that does it, so a reader finds the
//! API here and follows one call to the code: `connect`, `acquire`, `multi`, `slots`,
//! `join::turn`, `lease`, `ops`, `stats`, `init`, `deadlock`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::deadlock::redis::RedisWatch;
use crate::error::Result;
use crate::holder::Identity;
use crate::join::Capability;
use crate::keys::LockKeys;
use crate::lease::{FencingToken, Lease};
use crate::local::LocalBackend;
use crate::ops::{AuditEvent, BreakOutcome, LockStatus};
use crate::options::{AcquireOptions, WaitProgress};
use crate::quorum::Quorum;
use crate::stats::NodeHealth;

pub(crate) enum Backend {
    Redis(Quorum),
    Local(LocalBackend),
}

pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) identity: Identity,
    pub(crate) backend: Backend,
}

/// A connection to the coordinator (one Redis, several Redlock masters, or local file locks).
/// Cheap to clone; every clone shares the connections.
#[derive(Clone)]
pub struct Coordinator {
    pub(crate) inner: Arc<Inner>,
}

impl Coordinator {
    /// Connect to the Redis nodes of `config` within its connect timeout. Returns once a
    /// majority is connected; the rest connect on first use. Nodes that did not answer in
    /// time (a stopped or overloaded server, not a refused connection) are no reason to fail
    /// here: they connect on first use too, and a wait rides them out as it rides out a blip
    /// (an acquire without a wait reports them unavailable at its first attempt).
    pub async fn connect(config: Config, identity: Identity) -> Result<Self> {
        crate::connect::connect(config, identity).await
    }

    /// A coordinator over `nodes`, which are taken as connected (tests run it on fakes).
    #[cfg(test)]
    pub(crate) fn with_nodes(
        config: Config,
        identity: Identity,
        nodes: Vec<Arc<dyn crate::backend::Node>>,
    ) -> Self {
        crate::connect::with_nodes(config, identity, nodes)
    }

    /// A coordinator for one machine: OS file locks in `lock_dir` (created when missing).
    pub fn local(config: Config, identity: Identity, lock_dir: PathBuf) -> Result<Self> {
        crate::connect::local(config, identity, lock_dir)
    }

    /// As [`Coordinator::local`], with the locks in `locks`, a directory reached through
    /// handles (the repository's `.claude/.tractatus/locks`: nothing in it is followed).
    pub(crate) fn local_in(
        config: Config,
        identity: Identity,
        locks: crate::dir_handle::DirHandle,
    ) -> Self {
        crate::connect::local_in(config, identity, locks)
    }

    /// The checked configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Who this process is.
    pub fn identity(&self) -> &Identity {
        &self.inner.identity
    }

    /// True when the locks are local OS file locks (no Redis).
    pub fn is_local(&self) -> bool {
        matches!(self.inner.backend, Backend::Local(_))
    }

    /// A lock's identity among the process-group guards of this host: namespace and where
    /// the locks live (see [`Coordinator::location`]).
    pub(crate) fn guard_scope(&self) -> String {
        format!("{}@{}", self.inner.config.namespace, self.location())
    }

    /// Where this coordinator's locks live, as one line without secrets: the Redis endpoints
    /// (sorted, passwords hidden) or the local lock directory. Two coordinators with the same
    /// namespace but another scope hold other locks (two clones of one repository, say, or two
    /// Redis deployments), which the process-group guards must not mistake for each other.
    pub(crate) fn location(&self) -> String {
        match &self.inner.backend {
            Backend::Local(local) => local.dir().display().to_string(),
            Backend::Redis(_) => {
                let mut urls: Vec<String> = self
                    .inner
                    .config
                    .nodes
                    .iter()
                    .map(|n| n.to_string())
                    .collect();
                urls.sort();
                urls.join(",")
            }
        }
    }

    /// Take lock `name` without waiting: fails with [`Error::Timeout`](crate::Error::Timeout) when it is held.
    pub async fn try_acquire(&self, name: &str) -> Result<Lease> {
        crate::acquire::try_acquire(self, name).await
    }

    /// Take lock `name`, waiting up to `opts.wait` for its holder to release it.
    ///
    /// Waiting is driven by release events (Redis pub/sub, or the kernel for local locks); the
    /// only timer is the holder's remaining TTL, so a crashed holder is taken over as soon as
    /// its lease expires, and at once when it ran on this host and its process is gone.
    ///
    /// On one Redis, a release that finds us first in line grants us the lease in its own
    /// script (on a 1 s probation) and pushes it into our hand-off box, which we wait on with
    /// `BLPOP` on a connection of our own: we have it from there, at first valid for the
    /// probation ([`Lease::state`] shows it), and one renewal sent at once in the background
    /// extends it to the TTL within a round trip (a `lock run` waits for that before its
    /// command starts). The release message says so too, but is never trusted alone: whoever
    /// may publish on the lock's channel could forge it; without a box, our next attempt (at
    /// once) finds the lease ours, and its answer names the token.
    ///
    /// A coordinator that stops answering while we wait (a restart, a failover) is retried
    /// a few times a second, with the subscriptions made again, until the wait runs out; only
    /// then is it [`Error::Unavailable`](crate::Error::Unavailable). Without a wait, it is reported at once.
    ///
    /// With local locks the wait is a `flock(2)` on a blocking thread; when the wait times out
    /// that thread stays parked until the holder lets go, then drops the lock at once (it never
    /// holds it for anyone). Many timed-out waits on a long-held lock park as many threads.
    ///
    /// A process started under a lease of `name` (its capability inherited in
    /// `crate::join::ENV_VAR`) joins that lease instead of waiting for its own ancestor, once
    /// the coordinator confirms it still stands; see `crate::join`.
    pub async fn acquire(&self, name: &str, opts: &AcquireOptions) -> Result<Lease> {
        crate::acquire::acquire(self, name, opts).await
    }

    /// Remove a lease whatever its owner (`expected_owner` empty) or only if it is
    /// `expected_owner`'s, on every node; recorded in the lock's audit log as `event`.
    /// Returns how many nodes removed it.
    pub(crate) async fn evict(
        &self,
        quorum: &Quorum,
        keys: &LockKeys,
        expected_owner: &str,
        event: &'static str,
    ) -> usize {
        crate::acquire::evict(self, quorum, keys, expected_owner, event).await
    }

    /// Acquire every name, sorted and deduplicated, within `wait` in total. Each lease is
    /// renewed (up to the config's `max_hold`) from the moment it is taken, so a long wait for
    /// the next name cannot let it expire; on failure the ones taken are released, newest
    /// first. `progress(name)` may return where to report the holder while waiting for `name`.
    pub async fn acquire_all<S: AsRef<str>>(
        &self,
        names: &[S],
        wait: Duration,
        progress: impl FnMut(&str) -> Option<WaitProgress>,
    ) -> Result<Vec<Lease>> {
        crate::multi::acquire_all(self, names, wait, progress).await
    }

    /// [`Coordinator::acquire_all`] by a caller that already holds `holding` (a Node caller's
    /// enclosing `withLock` scopes): each wait records them, with the leases this call took
    /// before it, as its wait-for edge (see [`crate::deadlock`]).
    pub async fn acquire_all_holding<S: AsRef<str>>(
        &self,
        names: &[S],
        wait: Duration,
        holding: &[crate::Holding],
        progress: impl FnMut(&str) -> Option<WaitProgress>,
    ) -> Result<Vec<Lease>> {
        crate::multi::acquire_all_holding(self, names, wait, holding, progress).await
    }

    /// Lift the fencing counter of `name` to at least `floor` on every node (after a counter
    /// reset), so the next lease's token is above every committed one.
    pub async fn raise_floor(&self, name: &str, floor: FencingToken) -> Result<()> {
        crate::lease::raise_floor(self, name, floor).await
    }

    /// Each Redis node, probed once (an empty list for local locks).
    pub async fn node_health(&self) -> Vec<NodeHealth> {
        crate::stats::nodes::node_health(self).await
    }

    /// Every event the audit logs of this namespace hold (or lock `only`'s), oldest first;
    /// `None` for local locks, which keep no history. A node that cannot be read is skipped
    /// while a quorum can be (each event is on a majority of the nodes).
    pub async fn audit(&self, only: Option<&str>) -> Result<Option<Vec<AuditEvent>>> {
        crate::stats::audit::audit(self, only).await
    }

    /// Mark every Redis node as brand-new for its current run: its grants skip the restart
    /// quarantine until it restarts. Returns how many servers were marked (each master of a
    /// Redis Cluster counts; 0 for local locks, which have no quarantine).
    ///
    /// Only for servers that are new, or whose data survived: marking a server that restarted
    /// empty lets it grant a lease it forgot while its holder still runs.
    ///
    /// Every node is tried; when any could not be marked, the error names each one (the others
    /// stay marked, and marking again is harmless).
    pub async fn mark_initialized(&self) -> Result<usize> {
        crate::init::mark_initialized(self).await
    }

    /// Every lock held in this namespace.
    pub async fn status(&self) -> Result<Vec<LockStatus>> {
        crate::ops::status(self).await
    }

    /// The newest `limit` audit events of this namespace, oldest first.
    pub async fn log(&self, limit: usize) -> Result<Vec<AuditEvent>> {
        crate::ops::log(self, limit).await
    }

    /// End the lease of lock `name`'s holder (an operator's decision), recorded in its audit
    /// log. `name` may be a slot's (`test-db#3`).
    ///
    /// Each node is asked who holds the lock, then told to end that owner's lease only. A
    /// request may reach a node twice (the cluster connection resends one whose reply was
    /// lost), and one that said "whoever holds it" would, landing after the next waiter's
    /// grant, end that waiter's lease while it runs.
    pub async fn break_lock(&self, name: &str) -> Result<BreakOutcome> {
        crate::ops::break_lock(self, name).await
    }

    /// Take one of the `slots` slots of set `name` (slot `i` is the lock `name#i`), waiting up
    /// to `opts.wait` for one to be let go when all are held. Returns the slot's index and its
    /// lease, whose token is that slot's fencing token. As with [`Coordinator::acquire`], keep
    /// it alive with [`Lease::keep_alive`] while work runs.
    ///
    /// Fails as [`Coordinator::acquire`] does ([`Error::Timeout`](crate::Error::Timeout) naming the set when every
    /// slot stayed held, [`Error::Unavailable`](crate::Error::Unavailable), ...); a bad name or a slot count outside
    /// 1..=[`MAX_SLOTS`](crate::slots::MAX_SLOTS) is a usage error. A process started under a slot of this set (its
    /// capability inherited, see `crate::join`) joins that slot instead of taking another.
    pub async fn acquire_slot(
        &self,
        name: &str,
        slots: u32,
        opts: &AcquireOptions,
    ) -> Result<(u32, Lease)> {
        crate::slots::acquire_slot(self, name, slots, opts).await
    }

    /// The deadlock watch of a wait for `name` by `waiter` at `place`, or `None` when the
    /// caller holds nothing (nothing to record, nothing to walk: no cost).
    pub(crate) fn deadlock_watch(
        &self,
        name: &str,
        waiter: &str,
        place: u64,
        opts: &AcquireOptions,
    ) -> Option<RedisWatch> {
        crate::deadlock::redis::deadlock_watch(self, name, waiter, place, opts)
    }

    /// Fill each lock's `edges`.
    pub(crate) async fn attach_edges(&self, locks: &mut [LockStatus]) {
        crate::deadlock::status::attach_edges(self, locks).await
    }

    /// Where a lock name means the same lock: the Redis namespace, or the local directory.
    pub(crate) fn scope(&self) -> String {
        crate::join::turn::scope(self)
    }

    /// Join lock `name` through `capability`, waiting up to `wait` for the turn among its
    /// joiners: `Ok(Some)` when it names the lock, its holder is this process or an ancestor,
    /// and the coordinator confirms that holder's lease (see the module doc); `Ok(None)` when
    /// the capability does not apply (acquire as usual); an error when it names a standing
    /// lease it does not match (76), or the turn did not come in time (75).
    pub async fn join_within(
        &self,
        name: &str,
        capability: &Capability,
        wait: Duration,
    ) -> Result<Option<Lease>> {
        crate::join::turn::join_within(self, name, capability, wait).await
    }
}
