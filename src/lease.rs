//! The coordinator and its leases: acquire (waiting on release events, not sleeps), renew in
//! the background while the work runs, notice loss at once, release.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use backon::BackoffBuilder;
use futures_util::StreamExt;
use futures_util::stream::{FuturesUnordered, SelectAll};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, check_lock_name};
use crate::error::{Error, Result};
use crate::holder::{HolderInfo, Identity};
use crate::keys::LockKeys;
use crate::local::{LocalBackend, LocalGuard};
use crate::node::{GrantRequest, Node};
use crate::quorum::{Attempt, Quorum, Renewal};
use crate::redis_node::RedisNode;

/// Why a lease whose deadline passed is lost.
const VALIDITY_RAN_OUT: &str = "its validity ran out without a successful renewal";

/// A fencing token: strictly increasing for each new lease of one lock name.
pub type FencingToken = u64;

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

pub(crate) enum Backend {
    Redis(Quorum<RedisNode>),
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
    /// majority is connected; the rest connect on first use.
    pub async fn connect(config: Config, identity: Identity) -> Result<Self> {
        config.check()?;
        if config.nodes.is_empty() {
            return Err(Error::usage(
                "no Redis configured: use Coordinator::local for OS file locks",
            ));
        }
        let tls_ca = match &config.tls_ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    Error::usage(format!("cannot read TLS CA file {}: {e}", path.display()))
                })?;
                // Checked here: a file with no certificate would otherwise fail later as a
                // handshake error that does not name it.
                if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                    return Err(Error::usage(format!(
                        "TLS CA file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                        path.display()
                    )));
                }
                Some(pem)
            }
            None => None,
        };
        let nodes = config
            .nodes
            .iter()
            .map(|u| {
                RedisNode::with_tls_ca(
                    u,
                    config.connect_timeout,
                    config.node_timeout,
                    tls_ca.as_deref(),
                )
                .map(Arc::new)
                .map_err(|e| Error::usage(format!("{u}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let quorum = Quorum::new(nodes);
        let (n, need) = (quorum.nodes().len(), quorum.needed());
        let mut pending: FuturesUnordered<_> = quorum
            .nodes()
            .iter()
            .map(|node| async move { (node.label(), node.connect().await) })
            .collect();
        let (mut ok, mut causes) = (0, Vec::new());
        while let Some((label, r)) = pending.next().await {
            match r {
                Ok(_) => ok += 1,
                Err(e) => causes.push((label, e.cause)),
            }
            // Stop early on success only: a failure waits for the others (each bounded by the
            // connect timeout) so that the message counts them right.
            if ok >= need {
                break;
            }
        }
        drop(pending);
        if ok < need {
            return Err(Error::Unavailable {
                reachable: ok,
                total: n,
                needed: need,
                causes,
            });
        }
        Ok(Coordinator {
            inner: Arc::new(Inner {
                config,
                identity,
                backend: Backend::Redis(quorum),
            }),
        })
    }

    /// A coordinator for one machine: OS file locks in `lock_dir` (created when missing).
    pub fn local(config: Config, identity: Identity, lock_dir: PathBuf) -> Result<Self> {
        Ok(Coordinator {
            inner: Arc::new(Inner {
                backend: Backend::Local(LocalBackend::new(lock_dir)?),
                config,
                identity,
            }),
        })
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

    /// Take lock `name` without waiting: fails with [`Error::Timeout`] when it is held.
    pub async fn try_acquire(&self, name: &str) -> Result<Lease> {
        self.acquire(name, &AcquireOptions::default()).await
    }

    /// Take lock `name`, waiting up to `opts.wait` for its holder to release it.
    ///
    /// Waiting is driven by release events (Redis pub/sub, or the kernel for local locks); the
    /// only timer is the holder's remaining TTL, so a crashed holder is taken over as soon as
    /// its lease expires, and at once when it ran on this host and its process is gone.
    ///
    /// With local locks the wait is a `flock(2)` on a blocking thread; when the wait times out
    /// that thread stays parked until the holder lets go, then drops the lock at once (it never
    /// holds it for anyone). Many timed-out waits on a long-held lock park as many threads.
    pub async fn acquire(&self, name: &str, opts: &AcquireOptions) -> Result<Lease> {
        check_lock_name(name)?;
        let deadline = far_deadline(Instant::now(), opts.wait);
        let got = match &self.inner.backend {
            Backend::Local(local) => local
                .acquire(name, &self.inner.identity, opts, deadline)
                .await
                .map(|guard| Lease::local(self.clone(), name, guard)),
            Backend::Redis(quorum) => self.acquire_redis(quorum, name, opts, deadline).await,
        };
        if let (Ok(_), Some(p)) = (&got, &opts.progress) {
            // Nobody is in the way any more: feedback about a holder would be stale.
            p.send_replace(None);
        }
        got
    }

    async fn acquire_redis(
        &self,
        quorum: &Quorum<RedisNode>,
        name: &str,
        opts: &AcquireOptions,
        deadline: Instant,
    ) -> Result<Lease> {
        let cfg = &self.inner.config;
        let started = Instant::now();
        let keys = LockKeys::new(&cfg.namespace, name);
        let waiter_id = uuid::Uuid::new_v4().simple().to_string();
        let mut wake: Option<SelectAll<crate::node::WakeStream>> = None;
        let mut last_holder: Option<HolderInfo> = None;
        let mut note: Option<String> = None;
        let mut jitter = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(2))
            .with_max_delay(cfg.node_timeout.max(Duration::from_millis(20)))
            .with_jitter()
            .without_max_times()
            .build();
        loop {
            let req = GrantRequest {
                keys: keys.clone(),
                owner: uuid::Uuid::new_v4().simple().to_string(),
                ttl: cfg.ttl,
                identity: self.inner.identity.clone(),
                waiter: wake.as_ref().map(|_| waiter_id.clone()),
                waiter_ttl: cfg.ttl.saturating_mul(2),
                log_cap: cfg.log_cap,
                quarantine: if cfg.is_redlock() {
                    cfg.quarantine
                } else {
                    Duration::ZERO
                },
            };
            // How long to wait before the next attempt, and whether a release event may cut it
            // short (not after a split vote: the other contenders' releases would wake everyone
            // at once and split the vote again).
            let (pause, wake_early) = match quorum.grant(&req).await {
                Attempt::Granted { token, valid_until } => {
                    let state = LeaseState::Valid { valid_until };
                    return Ok(Lease::redis(
                        self.clone(),
                        name,
                        keys,
                        req.owner,
                        token,
                        state,
                    ));
                }
                Attempt::Unavailable { reachable, causes } => {
                    return Err(Error::Unavailable {
                        reachable,
                        total: quorum.nodes().len(),
                        needed: quorum.needed(),
                        causes,
                    });
                }
                Attempt::Held { pttl, holder } => {
                    if let Some(h) = &holder
                        && h.is_gone_from(&self.inner.identity)
                        && self.evict(quorum, &keys, &h.owner, "takeover").await > 0
                    {
                        continue;
                    }
                    last_holder = holder.or(last_holder);
                    // Wake a little after the holder's lease runs out, in case it never releases.
                    (pttl + Duration::from_millis(1), true)
                }
                Attempt::Split { holder } => {
                    last_holder = holder.or(last_holder);
                    (jitter.next().unwrap_or(Duration::from_millis(5)), false)
                }
                Attempt::Quarantined { left, nodes } => {
                    // Retrying sooner would only burn tokens and audit entries on the others.
                    note = Some(format!(
                        "{nodes} of {} Redis masters started empty and are in their restart \
                         quarantine (the first grants again in {} ms)",
                        quorum.nodes().len(),
                        left.as_millis()
                    ));
                    (left + Duration::from_millis(1), false)
                }
            };
            if let Some(p) = &opts.progress {
                p.send_replace(last_holder.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                if wake.is_some() {
                    // We registered as a waiter: leave, so `lock status` stops counting us.
                    let leave: FuturesUnordered<_> = quorum
                        .nodes()
                        .iter()
                        .map(|node| {
                            let (set, id) = (&keys.waiters, &waiter_id);
                            node.call(move |mut c| async move {
                                redis::cmd("ZREM")
                                    .arg(set)
                                    .arg(id)
                                    .query_async::<i64>(&mut c)
                                    .await
                            })
                        })
                        .collect();
                    leave.collect::<Vec<_>>().await;
                }
                return Err(Error::Timeout {
                    name: name.to_owned(),
                    waited_ms: now.duration_since(started).as_millis(),
                    holder: last_holder.map(Box::new),
                    note,
                });
            }
            if wake.is_none() {
                // Subscribe before the next attempt, so a release between the two is not missed.
                let (streams, _) = quorum.subscribe(&keys).await;
                let mut all = SelectAll::new();
                all.extend(streams);
                wake = Some(all);
                continue;
            }
            let until = deadline.min(now + pause);
            if let Some(w) = wake.as_mut() {
                tokio::select! {
                    got = w.next(), if wake_early && !w.is_empty() => {
                        if got.is_none() { wake = Some(SelectAll::new()); }
                    }
                    _ = tokio::time::sleep_until(until) => {}
                }
            }
        }
    }

    /// Lift the fencing counter of `name` to at least `floor` on every node (after a counter
    /// reset), so the next lease's token is above every committed one.
    pub async fn raise_floor(&self, name: &str, floor: FencingToken) -> Result<()> {
        match &self.inner.backend {
            Backend::Local(local) => local.raise(name, floor),
            Backend::Redis(q) => {
                let keys = LockKeys::new(&self.inner.config.namespace, name);
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

    /// Remove a lease whatever its owner (`expected_owner` empty) or only if it is
    /// `expected_owner`'s, on every node; recorded in the lock's audit log as `event`.
    /// Returns how many nodes removed it.
    pub(crate) async fn evict(
        &self,
        quorum: &Quorum<RedisNode>,
        keys: &LockKeys,
        expected_owner: &str,
        event: &str,
    ) -> usize {
        let id = &self.inner.identity;
        let cap = self.inner.config.log_cap;
        let all: FuturesUnordered<_> = quorum
            .nodes()
            .iter()
            .map(|node| {
                node.call(move |mut c| async move {
                    crate::redis_node::EVICT
                        .key(&keys.lease)
                        .key(&keys.holder)
                        .key(&keys.log)
                        .arg(expected_owner)
                        .arg(&keys.channel)
                        .arg(cap)
                        .arg(event)
                        .arg(&id.session)
                        .arg(&id.host)
                        .arg(id.pid)
                        .invoke_async::<i64>(&mut c)
                        .await
                })
            })
            .collect();
        all.filter(|r| std::future::ready(matches!(r, Ok(1))))
            .count()
            .await
    }
}

/// `start + wait`, or a deadline about thirty years out when that overflows (`Duration::MAX`
/// means "wait for ever").
fn far_deadline(start: Instant, wait: Duration) -> Instant {
    start
        .checked_add(wait)
        .or_else(|| start.checked_add(Duration::from_secs(30 * 365 * 86_400)))
        .unwrap_or(start)
}

/// Where a lease stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseState {
    /// Ours until the monotonic deadline, unless renewed.
    Valid {
        /// Validity deadline on the monotonic clock.
        valid_until: Instant,
    },
    /// Ours until released (local file locks: the kernel holds it for us).
    Held,
    /// Gone: expired, taken, broken or unrenewable, with the reason.
    Lost(String),
}

enum Hold {
    Redis { keys: LockKeys, owner: String },
    Local(LocalGuard),
}

/// A held lock. Keep it alive with [`Lease::keep_alive`] while work runs; end it with
/// [`Lease::release`]. Dropping it stops the renewal and releases it from a background task on
/// the current tokio runtime; a runtime that shuts down first never runs that task, and the
/// lease then lasts until its TTL runs out. Release explicitly where it matters.
pub struct Lease {
    coordinator: Coordinator,
    name: String,
    token: FencingToken,
    hold: Option<Hold>,
    state: watch::Sender<LeaseState>,
    acquired: Instant,
    keeper: Option<JoinHandle<()>>,
}

impl Lease {
    fn redis(
        coordinator: Coordinator,
        name: &str,
        keys: LockKeys,
        owner: String,
        token: FencingToken,
        state: LeaseState,
    ) -> Self {
        Lease {
            coordinator,
            name: name.to_owned(),
            token,
            hold: Some(Hold::Redis { keys, owner }),
            state: watch::channel(state).0,
            acquired: Instant::now(),
            keeper: None,
        }
    }

    fn local(coordinator: Coordinator, name: &str, guard: LocalGuard) -> Self {
        Lease {
            coordinator,
            name: name.to_owned(),
            token: guard.token,
            hold: Some(Hold::Local(guard)),
            state: watch::channel(LeaseState::Held).0,
            acquired: Instant::now(),
            keeper: None,
        }
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The TTL it was granted with (renewals extend it by as much).
    pub fn ttl(&self) -> Duration {
        self.coordinator.inner.config.ttl
    }

    /// The configuration of the coordinator that granted it.
    pub fn config(&self) -> &Config {
        &self.coordinator.inner.config
    }

    /// This lease's fencing token.
    pub fn token(&self) -> FencingToken {
        self.token
    }

    /// Where the lease stands now (validity is judged on the monotonic clock).
    pub fn state(&self) -> LeaseState {
        let s = self.state.borrow().clone();
        match s {
            LeaseState::Valid { valid_until } if Instant::now() >= valid_until => {
                LeaseState::Lost(VALIDITY_RAN_OUT.into())
            }
            other => other,
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
                    LeaseState::Lost(r) => return Some(r.clone()),
                    LeaseState::Valid { valid_until } => {
                        Some(valid_until.checked_sub(margin).unwrap_or(*valid_until))
                    }
                    LeaseState::Held => None,
                };
                let rings = async {
                    match alarm {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
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

    /// Extend the lease once. Errors with [`Error::LeaseLost`] when it is no longer ours.
    pub async fn renew(&self) -> Result<()> {
        let Some(Hold::Redis { keys, owner }) = &self.hold else {
            return self.check_valid();
        };
        self.check_valid()?;
        renew_once(&self.coordinator, keys, owner, &self.state).await;
        self.check_valid()
    }

    /// Renew in the background at a third of the TTL until released, lost, or held for
    /// `max_hold`. Loss is reported through [`Lease::lost`] and [`Lease::state`].
    pub fn keep_alive(&mut self, max_hold: Duration) {
        let Some(Hold::Redis { keys, owner }) = &self.hold else {
            return;
        };
        let (coordinator, keys, owner) = (self.coordinator.clone(), keys.clone(), owner.clone());
        let state = self.state.clone();
        let stop_at = far_deadline(self.acquired, max_hold);
        let ttl = coordinator.inner.config.ttl;
        self.keeper = Some(tokio::spawn(async move {
            let mut next = Instant::now() + ttl / 3;
            loop {
                tokio::time::sleep_until(next).await;
                let now = Instant::now();
                let valid_until = match &*state.borrow() {
                    LeaseState::Valid { valid_until } => *valid_until,
                    _ => return,
                };
                if now >= valid_until {
                    state.send_replace(LeaseState::Lost(VALIDITY_RAN_OUT.into()));
                    return;
                }
                if now >= stop_at {
                    state.send_replace(LeaseState::Lost(format!(
                        "held for the maximum of {} s (--max-hold); renewal stopped",
                        max_hold.as_secs()
                    )));
                    return;
                }
                // Counted from the attempt's start, like the validity it buys: a slow renewal
                // must not push the next one later and later.
                let attempt = Instant::now();
                next = if renew_once(&coordinator, &keys, &owner, &state).await {
                    attempt + ttl / 3
                } else {
                    // Retry soon, but never past the end of validity.
                    (Instant::now() + ttl / 10).min(valid_until)
                };
            }
        }));
    }

    /// End the lease (on every node) and wake the waiters. Errors with [`Error::LeaseLost`]
    /// when it was no longer ours: lost on our side, or a majority of nodes says so.
    pub async fn release(mut self) -> Result<()> {
        if let Some(k) = self.keeper.take() {
            k.abort();
        }
        let lost = self.state();
        match self.hold.take() {
            Some(Hold::Redis { keys, owner }) => {
                let Backend::Redis(q) = &self.coordinator.inner.backend else {
                    return Err(Error::internal("redis lease on a local coordinator"));
                };
                let (confirmed, denied) = q
                    .release_counted(&keys, &owner, self.coordinator.inner.config.log_cap)
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
            None => Ok(()),
        }
    }
}

/// One renewal on the quorum, recorded in `state`. True when it succeeded.
async fn renew_once(
    coordinator: &Coordinator,
    keys: &LockKeys,
    owner: &str,
    state: &watch::Sender<LeaseState>,
) -> bool {
    let Backend::Redis(q) = &coordinator.inner.backend else {
        return true;
    };
    match q.renew(keys, owner, coordinator.inner.config.ttl).await {
        Renewal::Renewed { valid_until } => {
            state.send_if_modified(|s| match s {
                LeaseState::Valid { .. } => {
                    *s = LeaseState::Valid { valid_until };
                    true
                }
                _ => false,
            });
            true
        }
        Renewal::Lost => {
            state.send_replace(LeaseState::Lost(
                "the coordinator says the lease is no longer ours (it expired or was taken)".into(),
            ));
            false
        }
        Renewal::Undecided { .. } => false,
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(k) = self.keeper.take() {
            k.abort();
        }
        if let Some(Hold::Redis { keys, owner }) = self.hold.take() {
            let coordinator = self.coordinator.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    if let Backend::Redis(q) = &coordinator.inner.backend {
                        q.release(&keys, &owner, coordinator.inner.config.log_cap)
                            .await;
                    }
                });
            }
        }
    }
}
