//! Test only: the one fake node of the unit tests. In memory, it behaves like a Redis running
//! our scripts (a lease with a TTL on tokio's clock, a fencing counter, a waiter set, a release
//! channel), and its options make it misbehave the ways a real node does: answer late, stay
//! silent until the deadline, refuse connections, sit in its restart quarantine, fail renewals
//! or counter raises, restart empty, seed its counter from a skewed clock. With
//! [`Builder::many_locks`] it keeps each lock apart by its keys (the slot wait needs many);
//! with [`Builder::admin`] it answers the operator's `inspect`, optionally with the lock
//! changing hands right after it was read ([`Builder::shifts_after_inspect`]).
//!
//! The acquire loop, keep-alive, the quorum, the slot wait and `lock break` all run on it on
//! paused time, with no Redis.

mod node;

use std::collections::{BTreeMap, HashMap};
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::Coordinator;
use crate::backend::{Node, NodeError, WAKE_ALL};
use crate::config::{Config, parse_nodes};
use crate::holder::{HolderInfo, Identity};
use crate::keys::LockKeys;

/// What the fake node does with the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Answers like Redis.
    Up,
    /// Answers like Redis, after this delay.
    Late(Duration),
    /// Never answers: each call ends with a timeout after this long (the node's deadline).
    Silent(Duration),
    /// Refuses every connection (a Redis that is down).
    Down,
    /// Grants nothing until then (a master in its restart quarantine).
    QuarantinedUntil(Instant),
    /// Answers, but every renewal fails with a dropped connection.
    RenewalsFail,
    /// Answers, but raising its counter fails with a dropped connection.
    RaiseFails,
}

/// One lock's data on the node and what happened to it (the node's mode lives with the
/// node's first lock, see [`FakeNode::state`]).
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) mode: Mode,
    /// Owner id, expiry, holder.
    pub(crate) lease: Option<(String, Instant, HolderInfo)>,
    /// 0 stands for a missing counter.
    pub(crate) counter: u64,
    /// The queue: waiter id -> (place in line, registration expiry).
    pub(crate) waiters: BTreeMap<String, (u64, Instant)>,
    /// Grant requests answered (not counting refused connections).
    pub(crate) grants: usize,
    /// Waiter registrations seen.
    pub(crate) registrations: usize,
    /// Owners whose release was asked, in order.
    pub(crate) releases: Vec<String>,
    /// Events of evictions that removed a lease.
    pub(crate) evictions: Vec<&'static str>,
    /// The owners every eviction asked for, whether it removed a lease or not.
    pub(crate) evicts_asked: Vec<String>,
    /// Grant requests that fail (connection reset) before the node answers again.
    pub(crate) fail_grants: usize,
    /// The owner id of the last grant request answered.
    pub(crate) last_owner: Option<String>,
}

impl State {
    fn new() -> Self {
        State {
            mode: Mode::Up,
            lease: None,
            counter: 0,
            waiters: BTreeMap::new(),
            grants: 0,
            registrations: 0,
            releases: Vec::new(),
            evictions: Vec::new(),
            evicts_asked: Vec::new(),
            fail_grants: 0,
            last_owner: None,
        }
    }
}

/// The key of the node's first lock, which every lock shares unless [`Builder::many_locks`].
const FIRST: &str = "";

/// What a [`FakeNode`] is built with.
#[derive(Default)]
pub(crate) struct Builder {
    many_locks: bool,
    admin: bool,
    shift: Option<Option<String>>,
}

impl Builder {
    /// Keep each lock apart by its keys (lease and channel), instead of one lock for all.
    pub(crate) fn many_locks(mut self) -> Self {
        self.many_locks = true;
        self
    }

    /// Answer the operator's requests ([`crate::backend::NodeAdmin`]): `inspect` reads the
    /// lease; the others fail as unused.
    pub(crate) fn admin(mut self) -> Self {
        self.admin = true;
        self
    }

    /// Right after each `inspect`, the lock changes hands to `owner` (or is freed): what an
    /// operator read is stale when the next request arrives.
    pub(crate) fn shifts_after_inspect(mut self, owner: Option<&str>) -> Self {
        self.shift = Some(owner.map(str::to_owned));
        self
    }

    pub(crate) fn build(self) -> Arc<FakeNode> {
        Arc::new(FakeNode {
            locks: Mutex::new(HashMap::from([(FIRST.to_owned(), State::new())])),
            channels: Mutex::new(HashMap::new()),
            clock_skew: Mutex::new(None),
            boxes: Mutex::new(Vec::new()),
            many_locks: self.many_locks,
            admin: self.admin,
            shift: self.shift,
        })
    }
}

/// One fake node.
pub(crate) struct FakeNode {
    locks: Mutex<HashMap<String, State>>,
    /// Release channels by name, dropped (so their subscribers' streams end) when the node
    /// goes down.
    channels: Mutex<HashMap<String, broadcast::Sender<String>>>,
    /// When set, a missing counter is seeded from this node's clock, which is this many
    /// microseconds off the true time (as `lua/grant.lua` does); else it starts from 0.
    pub(crate) clock_skew: Mutex<Option<i64>>,
    /// Open hand-off boxes: key, and the sender feeding the box's stream.
    pub(crate) boxes: Mutex<Vec<(String, tokio::sync::mpsc::UnboundedSender<String>)>>,
    many_locks: bool,
    admin: bool,
    shift: Option<Option<String>>,
}

/// The node's first lock (its only one unless [`Builder::many_locks`]), locked.
pub(crate) struct StateGuard<'a>(MutexGuard<'a, HashMap<String, State>>);

impl Deref for StateGuard<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.0[FIRST]
    }
}

impl DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        self.0.entry(FIRST.to_owned()).or_insert_with(State::new)
    }
}

impl FakeNode {
    /// A node that answers like Redis, one lock for all keys.
    pub(crate) fn new() -> Arc<Self> {
        Self::builder().build()
    }

    pub(crate) fn builder() -> Builder {
        Builder::default()
    }

    /// The first lock's data (the only lock's, unless [`Builder::many_locks`]) and the mode.
    pub(crate) fn state(&self) -> StateGuard<'_> {
        StateGuard(self.locks.lock().unwrap())
    }

    pub(crate) fn set(&self, mode: Mode) {
        self.state().mode = mode;
        if mode == Mode::Down {
            // A dead server closes its subscribers' connections.
            self.channels.lock().unwrap().clear();
        }
    }

    /// Restart without persistence: forget every lease and counter.
    pub(crate) fn forget(&self) {
        for s in self.locks.lock().unwrap().values_mut() {
            s.lease = None;
            s.counter = 0;
        }
    }

    /// Push `value` into every open hand-off box, as `lua/release.lua` would.
    pub(crate) fn push_boxes(&self, value: &str) -> usize {
        let boxes = self.boxes.lock().unwrap();
        boxes
            .iter()
            .filter(|(_, tx)| tx.send(value.to_owned()).is_ok())
            .count()
    }

    /// The first lock's fencing counter (0: missing).
    pub(crate) fn counter(&self) -> u64 {
        self.state().counter
    }

    /// Someone else holds the lock here for `ttl`.
    pub(crate) fn hold(&self, owner: &str, ttl: Duration, holder: HolderInfo) {
        self.hold_at(&LockKeys::new("ns", "lock"), owner, ttl, holder);
    }

    /// Someone else holds `keys`'s lock here for `ttl`.
    pub(crate) fn hold_at(&self, keys: &LockKeys, owner: &str, ttl: Duration, holder: HolderInfo) {
        let holder = HolderInfo {
            owner: owner.to_owned(),
            ..holder
        };
        self.with_lock(keys, |s| {
            s.lease = Some((owner.to_owned(), Instant::now() + ttl, holder));
        });
    }

    /// The current lease's owner, if any lease is live.
    pub(crate) fn owner(&self) -> Option<String> {
        let s = self.state();
        s.lease
            .as_ref()
            .filter(|l| l.1 > Instant::now())
            .map(|l| l.0.clone())
    }

    /// Release the lease of `owner`, as its holder would, and wake the waiters.
    pub(crate) fn release_now(&self, owner: &str) -> bool {
        self.release_at(&LockKeys::new("ns", "lock"), owner)
    }

    /// Release `keys`'s lease of `owner`, as its holder would, and wake its waiters.
    pub(crate) fn release_at(&self, keys: &LockKeys, owner: &str) -> bool {
        let head = self.with_lock(keys, |s| {
            if s.lease.as_ref().is_none_or(|l| l.0 != owner) {
                return None;
            }
            s.lease = None;
            Some(head_of(s))
        });
        match head {
            Some(head) => {
                self.publish(keys, head);
                true
            }
            None => false,
        }
    }

    /// Grant requests answered for `keys`'s lock.
    pub(crate) fn grants_at(&self, keys: &LockKeys) -> usize {
        self.with_lock(keys, |s| s.grants)
    }

    /// The name `keys`'s lock is kept under here.
    fn key(&self, keys: &LockKeys) -> String {
        if self.many_locks {
            keys.lease.clone()
        } else {
            FIRST.to_owned()
        }
    }

    /// Run `f` on `keys`'s lock, its expired lease gone.
    fn with_lock<T>(&self, keys: &LockKeys, f: impl FnOnce(&mut State) -> T) -> T {
        let mut locks = self.locks.lock().unwrap();
        let s = locks.entry(self.key(keys)).or_insert_with(State::new);
        if s.lease.as_ref().is_some_and(|l| l.1 <= Instant::now()) {
            s.lease = None;
        }
        f(s)
    }

    fn mode(&self) -> Mode {
        self.state().mode
    }

    /// The release channel of `keys`'s lock.
    fn channel(&self, keys: &LockKeys) -> broadcast::Sender<String> {
        let name = if self.many_locks {
            keys.channel.clone()
        } else {
            FIRST.to_owned()
        };
        self.channels
            .lock()
            .unwrap()
            .entry(name)
            .or_insert_with(|| broadcast::channel(16).0)
            .clone()
    }

    fn publish(&self, keys: &LockKeys, who: String) {
        let _ = self.channel(keys).send(who);
    }

    /// One round trip under the node's mode: every request of a quorum is sent before any
    /// answer; a late node answers after its delay, a silent one times out, a down one
    /// refuses.
    async fn gate(&self) -> Result<(), NodeError> {
        match self.mode() {
            Mode::Late(d) => tokio::time::sleep(d).await,
            Mode::Silent(d) => {
                tokio::time::sleep(d).await;
                return Err(NodeError::timeout(d));
            }
            _ => tokio::task::yield_now().await,
        }
        if self.mode() == Mode::Down {
            return Err(NodeError::new("connection refused"));
        }
        Ok(())
    }
}

/// The head of the queue among live waiters, or everyone when nobody waits.
fn head_of(s: &State) -> String {
    let now = Instant::now();
    s.waiters
        .iter()
        .filter(|(_, w)| w.1 > now)
        .min_by_key(|(id, w)| (w.0, id.as_str()))
        .map_or_else(|| WAKE_ALL.to_owned(), |(id, _)| id.clone())
}

/// A coordinator over `nodes`, with `ttl`.
pub(crate) fn coordinator_over(nodes: &[Arc<FakeNode>], ttl: Duration) -> Coordinator {
    let urls: Vec<String> = (0..nodes.len())
        .map(|i| format!("redis://127.0.0.1:{}", 1 + i))
        .collect();
    let mut config = Config::new(parse_nodes(&urls).unwrap_or_default());
    config.ttl = ttl;
    let nodes = nodes.iter().map(|f| f.clone() as Arc<dyn Node>).collect();
    Coordinator::with_nodes(config, Identity::current("test"), nodes)
}

/// A coordinator over `n` fake nodes (Redlock from 3 on), with `ttl`.
pub(crate) fn coordinator(n: usize, ttl: Duration) -> (Coordinator, Vec<Arc<FakeNode>>) {
    let fakes: Vec<Arc<FakeNode>> = (0..n).map(|_| FakeNode::new()).collect();
    (coordinator_over(&fakes, ttl), fakes)
}
