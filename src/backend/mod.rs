//! One coordinator node, seen through the operations a lease needs. The [`Node`] trait is the
//! seam between the quorum logic (`quorum`) and Redis ([`crate::redis_node`]), so that
//! the quorum arithmetic can also be tested against fakes that time out, refuse or answer late.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;

use crate::holder::{HolderInfo, Identity};
use crate::keys::LockKeys;

mod sessions;

pub use sessions::{SessionEntry, SessionStore};

/// How long a waiter keeps its place in line without asking again: a waiter that dies holds
/// the line up for at most this long (the grant script's `waiter_ttl`).
pub(crate) const WAITER_TTL: Duration = Duration::from_millis(800);

/// What a grant asks of one node.
#[derive(Debug, Clone)]
pub struct GrantRequest {
    /// The lock's keys.
    pub keys: LockKeys,
    /// Owner id of this attempt: random, never reused.
    pub owner: String,
    /// SHA-256 (hex) of the lease's secret: what a process joining the lease must present the
    /// preimage of (see `crate::join`). The secret itself never leaves the holder's tree.
    pub join_hash: String,
    /// Lease TTL.
    pub ttl: Duration,
    /// Who asks.
    pub identity: Identity,
    /// Register as a waiter under this id when refused.
    pub waiter: Option<String>,
    /// How long a waiter registration lasts.
    pub waiter_ttl: Duration,
    /// The waiter's place in line, chosen once per wait (microseconds since the epoch at its
    /// first refusal) and sent the same to every node, so every node orders the queue alike.
    pub place: u64,
    /// Audit log length cap.
    pub log_cap: u32,
    /// How long after its start a node not marked initialized refuses a free lease it may have
    /// forgotten (it does not know the lock, or the lock's slot last granted before the
    /// restart; see `lua/grant.lua`); zero turns the check off.
    pub quarantine: Duration,
    /// The highest token the nodes that handed us the lease named in their release messages
    /// (0: none): a node that finds the lease already ours lifts its counter and the lease's
    /// token to it, so a hand-off over several nodes needs no raise of its own (see
    /// `crate::handoff`).
    pub floor: u64,
}

/// One node's answer to a grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantReply {
    /// The node granted the lease; its fencing counter is now `token`.
    Granted {
        /// This node's counter after the grant.
        token: u64,
    },
    /// This node started (new, or restarted with or without its data) or was promoted, may have
    /// forgotten a lease of the lock, and grants it nothing for a while (see `lua/grant.lua`).
    Quarantined {
        /// Time until it grants again.
        left: Duration,
    },
    /// Someone else holds the lease on this node.
    Refused {
        /// Time left on the holder's lease on this node.
        pttl: Duration,
        /// The holder, as recorded on this node.
        holder: HolderInfo,
        /// The waiter first in line, when it is another one: its id as `owner`, and who it is
        /// (session, host, pid, pid start, pid namespace), so that a waiter on its host can
        /// tell that it died (see `lua/grant.lua`).
        head: Option<Box<HolderInfo>>,
    },
}

/// Why one node did not answer: carried into [`crate::Error::Unavailable`] per node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeError {
    /// What went wrong, for people (never holds a password).
    pub cause: String,
    /// True when the node did not answer in time.
    pub timed_out: bool,
}

impl NodeError {
    /// A node error with the given cause.
    pub fn new(cause: impl Into<String>) -> Self {
        NodeError {
            cause: cause.into(),
            timed_out: false,
        }
    }

    /// The node did not answer within `after`.
    pub fn timeout(after: Duration) -> Self {
        NodeError {
            cause: format!("no answer within {} ms", after.as_millis()),
            timed_out: true,
        }
    }
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.cause)
    }
}

/// A stream that yields once per release announced on a subscribed channel, and ends when the
/// subscription's connection is gone. Each item names who should try now: the waiter id at the
/// head of the queue, or [`WAKE_ALL`].
pub type WakeStream = Pin<Box<dyn Stream<Item = String> + Send>>;

/// A release announcement for every listener (nobody was queued, or a lease was evicted).
pub const WAKE_ALL: &str = "released";

/// What a node operation returns: boxed, so that nodes can sit behind `Arc<dyn Node>`.
pub type NodeFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, NodeError>> + Send + 'a>>;

/// A lease removed whatever its state (a takeover of a gone holder, or an operator's break).
#[derive(Debug, Clone)]
pub struct Eviction {
    /// The lock's keys.
    pub keys: LockKeys,
    /// Remove it only if this is its owner (as read just before); empty removes nothing.
    pub expected_owner: String,
    /// Recorded in the audit log: `takeover` or `break`.
    pub event: &'static str,
    /// Who evicts, recorded in the audit log.
    pub by: Identity,
    /// Audit log length cap.
    pub log_cap: u32,
}

/// What a process joining a held lease asks of one node (see `lua/join.lua`).
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// The lock's keys.
    pub keys: LockKeys,
    /// The lease's owner id, as the joiner's capability names it.
    pub owner: String,
    /// SHA-256 (hex) of the secret the joiner presents.
    pub secret_hash: String,
    /// The lease's token, as the capability names it.
    pub token: u64,
    /// This join's id: whose turn it is among the joiners.
    pub joiner: String,
    /// Nesting depth of this join: 1 for a joiner of the holder, one more for each joined
    /// lease between (a joiner's command joining under its turn).
    pub depth: usize,
    /// At depth 2 and more: the joiner whose turn (one level up) this one works under; that
    /// turn must still be its.
    pub parent: String,
    /// How long a turn lasts unless refreshed.
    pub turn_ttl: Duration,
    /// A joiner whose turn (or place in line) may be taken (its process is gone), or empty.
    pub take_from: String,
    /// The joiner's place in line for the turn: microseconds since the epoch at its first
    /// ask, the same on every node.
    pub place: u64,
    /// Who joins, recorded in the audit log.
    pub by: Identity,
    /// Audit log length cap.
    pub log_cap: u32,
}

/// One node's answer to a join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinReply {
    /// The lease stands, as named, and the turn is the joiner's.
    Joined {
        /// Time left on the holder's lease.
        pttl: Duration,
        /// The TTL the holder renews it by.
        ttl: Duration,
    },
    /// The lease is not that owner's (it ended, or another holds the lock).
    Ended,
    /// The owner matches but the secret or the token does not: forged or edited.
    Mismatch,
    /// Another joiner's turn, for up to `left` unless refreshed.
    Busy {
        /// Time left on that turn.
        left: Duration,
        /// That joiner's id.
        by: String,
    },
}

/// What a wait-for read asks of one node (see `lua/wait_for.lua` and `crate::deadlock`).
#[derive(Debug, Clone)]
pub struct WaitForRequest {
    /// The keys of the lock waited for.
    pub keys: LockKeys,
    /// The waiter whose edge to record, or empty to record nothing.
    pub waiter: String,
    /// The edge's text (see `crate::deadlock::Edge`).
    pub edge: String,
    /// A deadlock to record in the lock's audit log (the cycle, for people), or empty.
    pub deadlock: String,
    /// Who asks, recorded with a deadlock.
    pub by: Identity,
    /// Audit log length cap.
    pub log_cap: u32,
}

/// One lock's wait-for edges and holder as one node sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WaitForView {
    /// The owner id of the lease, empty when free.
    pub owner: String,
    /// The holder as recorded (session, host, pid only).
    pub holder: HolderInfo,
    /// The live waiters' edges: waiter id and edge text, at most [`WAIT_FOR_EDGES_MAX`].
    pub edges: Vec<(String, String)>,
}

/// Most edges one wait-for read returns: a hostile or huge crowd of waiters costs a bounded
/// reply.
pub const WAIT_FOR_EDGES_MAX: usize = 64;

/// The operations a lease needs from each node. Every call must finish on its own within the
/// node's timeout (an implementation applies it), so a slow node cannot hold the quorum up.
/// Nothing above this trait (and [`NodeAdmin`]) sends a backend command.
pub trait Node: Send + Sync + 'static {
    /// Name for messages (a Redis URL without its password).
    fn label(&self) -> String;

    /// Take the lease if free (see `lua/grant.lua`).
    fn grant<'a>(&'a self, req: &'a GrantRequest) -> NodeFuture<'a, GrantReply>;

    /// Extend the lease if still ours; `Ok(false)` when it is not.
    fn renew<'a>(
        &'a self,
        keys: &'a LockKeys,
        owner: &'a str,
        ttl: Duration,
    ) -> NodeFuture<'a, bool>;

    /// End the lease if still ours and wake the waiters; `Ok(false)` when it was not ours.
    fn release<'a>(
        &'a self,
        keys: &'a LockKeys,
        owner: &'a str,
        log_cap: u32,
    ) -> NodeFuture<'a, bool>;

    /// Undo a vote of an attempt that did not win: [`Node::release`], except that the lease is
    /// not handed to the next waiter in line (see `lua/release.lua`): that waiter may not be
    /// first in line on the other nodes, and a hand-off it cannot complete would only set off
    /// another attempt that fails. A node without hand-offs just releases.
    fn undo<'a>(
        &'a self,
        keys: &'a LockKeys,
        owner: &'a str,
        log_cap: u32,
    ) -> NodeFuture<'a, bool> {
        self.release(keys, owner, log_cap)
    }

    /// Lift the fencing counter to at least `token`; returns the counter after.
    fn raise<'a>(&'a self, keys: &'a LockKeys, token: u64) -> NodeFuture<'a, u64>;

    /// Listen for releases of one lock.
    fn subscribe<'a>(&'a self, keys: &'a LockKeys) -> NodeFuture<'a, WakeStream>;

    /// Open the hand-off box `key` of one waiter ([`LockKeys::handed_box`]; see
    /// `lua/release.lua`): a stream of the `<owner> <token>` values a release pushed there,
    /// read on a connection of the box's own, ending with that connection. Only a client that
    /// may write can push there, unlike a message anyone who may publish can send. A node
    /// without boxes says so as an error; its waiters take a hand-off with their next attempt.
    fn handed(&self, key: String) -> NodeFuture<'_, WakeStream> {
        let _ = key;
        Box::pin(async { Err(NodeError::new("this node keeps no hand-off boxes")) })
    }

    /// Remove the lease as `ev` says and wake the waiters; `Ok(false)` when there was nothing
    /// to remove (see `lua/evict.lua`).
    fn evict<'a>(&'a self, ev: &'a Eviction) -> NodeFuture<'a, bool>;

    /// Note in the holder record the process group its command runs in (with its leader's
    /// start time), only while the lease is `owner`'s; `Ok(false)` when it is not (see
    /// `lua/record_group.lua`). A node that cannot record it says `Ok(false)`.
    fn record_group<'a>(
        &'a self,
        keys: &'a LockKeys,
        owner: &'a str,
        group: u32,
        group_start: Option<u64>,
    ) -> NodeFuture<'a, bool> {
        let _ = (keys, owner, group, group_start);
        Box::pin(async { Ok(false) })
    }

    /// Confirm a held lease to a joiner and give it the lease's turn (see `lua/join.lua`).
    /// Nothing of the lease itself is written. A node that cannot says so as an error.
    fn join<'a>(&'a self, req: &'a JoinRequest) -> NodeFuture<'a, JoinReply> {
        let _ = req;
        Box::pin(async { Err(NodeError::new("this node cannot confirm a join")) })
    }

    /// End the turn `req` took among the joiners of a lease, if it is still its turn.
    fn leave_turn<'a>(&'a self, req: &'a JoinRequest) -> NodeFuture<'a, ()> {
        let _ = req;
        Box::pin(async { Ok(()) })
    }

    /// Record a waiter's wait-for edge (when `req.waiter` is not empty) and read the lock's
    /// owner and the live edges of its waiters (see `lua/wait_for.lua`). A node that keeps no
    /// edges says so as an error (no edge seen is no cycle found).
    fn wait_for<'a>(&'a self, req: &'a WaitForRequest) -> NodeFuture<'a, WaitForView> {
        let _ = req;
        Box::pin(async { Err(NodeError::new("this node keeps no wait-for edges")) })
    }

    /// Leave the lock's queue (a waiter that gives up), so nobody waits behind it and `lock
    /// status` stops counting it.
    fn leave<'a>(&'a self, keys: &'a LockKeys, waiter: &'a str) -> NodeFuture<'a, ()>;

    /// The operator's view of this node, when it has one.
    fn admin(&self) -> Option<&dyn NodeAdmin> {
        None
    }
}

/// Which keys of a namespace to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// Locks with a live lease.
    Lease,
    /// Locks with an audit log.
    Log,
}

/// A waiter in a lock's queue, as `lock status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Queued {
    /// Its session.
    pub session: String,
    /// Its host.
    pub host: String,
    /// Its pid.
    pub pid: u32,
    /// When it joined the queue, ms since the Unix epoch (the node's clock).
    pub since_ms: u64,
}

/// One lock as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockView {
    /// Time left on the lease.
    pub pttl: Duration,
    /// The node's fencing counter.
    pub token: u64,
    /// Waiters registered on this node.
    pub waiters: u64,
    /// The live waiters queued on this node, first in line first.
    pub queue: Vec<Queued>,
    /// The holder, as recorded on this node.
    pub holder: HolderInfo,
}

/// What [`NodeAdmin::probe`] finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// How long the server has run.
    pub uptime: Duration,
    /// `lock init` marked this server run: no restart quarantine.
    pub marked: bool,
}

/// The operator's reads of one node (`lock status`, `lock log`): they walk the keyspace, so
/// they are kept apart from the lease operations of [`Node`].
pub trait NodeAdmin: Send + Sync {
    /// Names of the locks of `namespace` that have a key of `kind`, found page by page (never
    /// one blocking walk of the whole keyspace).
    fn lock_names<'a>(&'a self, namespace: &'a str, kind: KeyKind) -> NodeFuture<'a, Vec<String>>;

    /// The lock's lease, counter, waiters and holder; `None` when it is not held here.
    fn inspect<'a>(&'a self, keys: &'a LockKeys) -> NodeFuture<'a, Option<LockView>>;

    /// The newest `limit` audit entries of the lock, oldest first, each as its fields.
    fn read_log<'a>(
        &'a self,
        keys: &'a LockKeys,
        limit: usize,
    ) -> NodeFuture<'a, Vec<Vec<(String, String)>>>;

    /// Mark this server run as brand-new, so its grants skip the restart quarantine: write the
    /// marker of every hash slot (see [`crate::keys::init_key`]) with the server's run id, and
    /// return that run id. A Redis Cluster marks each master's slots with that master's run
    /// id, and returns one run id per master.
    fn mark_initialized(&self) -> NodeFuture<'_, Vec<String>>;

    /// How long the server has run and whether `lock init` marked this run (on a Redis
    /// Cluster: its youngest master, and whether every master is marked), for the operator's
    /// views (`lock status --watch`, `tractatus metrics`), which also time the call as the
    /// node's round trip. A node that cannot say answers an error.
    fn probe(&self) -> NodeFuture<'_, Probe> {
        Box::pin(async { Err(NodeError::new("this node does not answer probes")) })
    }
}
