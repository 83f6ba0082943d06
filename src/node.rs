//! One coordinator node, seen through the operations a lease needs. The [`Node`] trait is the
//! seam between the quorum logic ([`crate::quorum`]) and Redis ([`crate::redis_node`]), so that
//! the quorum arithmetic can also be tested against fakes that time out, refuse or answer late.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;

use crate::holder::{HolderInfo, Identity};
use crate::keys::LockKeys;

/// What a grant asks of one node.
#[derive(Debug, Clone)]
pub struct GrantRequest {
    /// The lock's keys.
    pub keys: LockKeys,
    /// Owner id of this attempt: random, never reused.
    pub owner: String,
    /// Lease TTL.
    pub ttl: Duration,
    /// Who asks.
    pub identity: Identity,
    /// Register as a waiter under this id when refused.
    pub waiter: Option<String>,
    /// How long a waiter registration lasts.
    pub waiter_ttl: Duration,
    /// Audit log length cap.
    pub log_cap: u32,
    /// How long a node seen for the first time since it started (empty) refuses grants; zero
    /// turns the check off (single Redis).
    pub quarantine: Duration,
}

/// One node's answer to a grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantReply {
    /// The node granted the lease; its fencing counter is now `token`.
    Granted {
        /// This node's counter after the grant.
        token: u64,
    },
    /// This node started empty (new, or restarted without its data) and grants nothing for a
    /// while (see `lua/grant.lua`).
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

/// A stream that yields once per release announced on a subscribed channel.
pub type WakeStream = Pin<Box<dyn Stream<Item = ()> + Send>>;

/// The operations the quorum logic runs on each node. Every call must finish on its own within
/// the node's timeout (an implementation applies it), so a slow node cannot hold the quorum up.
pub trait Node: Send + Sync + 'static {
    /// Name for messages (a Redis URL without its password).
    fn label(&self) -> String;

    /// Take the lease if free (see `lua/grant.lua`).
    fn grant(
        &self,
        req: &GrantRequest,
    ) -> impl Future<Output = Result<GrantReply, NodeError>> + Send;

    /// Extend the lease if still ours; `Ok(false)` when it is not.
    fn renew(
        &self,
        keys: &LockKeys,
        owner: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, NodeError>> + Send;

    /// End the lease if still ours and wake the waiters; `Ok(false)` when it was not ours.
    fn release(
        &self,
        keys: &LockKeys,
        owner: &str,
        log_cap: u32,
    ) -> impl Future<Output = Result<bool, NodeError>> + Send;

    /// Lift the fencing counter to at least `token`; returns the counter after.
    fn raise(
        &self,
        keys: &LockKeys,
        token: u64,
    ) -> impl Future<Output = Result<u64, NodeError>> + Send;

    /// Listen for releases of one lock.
    fn subscribe(
        &self,
        keys: &LockKeys,
    ) -> impl Future<Output = Result<WakeStream, NodeError>> + Send;
}
