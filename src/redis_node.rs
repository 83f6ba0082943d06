//! A coordinator node that is a real Redis (one server, or a Redis Cluster: see
//! `redis_node/cluster.rs`): one multiplexed connection (shared by every operation of this
//! process), the Lua scripts of `lua/`, and a deadline on every call. Every Redis command the
//! crate sends is here, behind [`Node`] and [`NodeAdmin`].
//!
//! Why no pool (deadpool-redis): a multiplexed connection is already shared by all tasks, and a
//! pool's recycle check (UNWATCH + PING) would add a round trip to every lock operation. (The
//! one exception is off that path: waiters' hand-off box connections, blocked in `BLPOP`, are
//! kept between waits, see `handed`.)
//!
//! # Failover: why tokens never repeat and holders stay apart
//! Behind Sentinel (`sentinel`), or in a cluster with replicas, a replica promoted to master
//! may lack the last writes of the old master: replication is asynchronous. Two rules of
//! `lua/grant.lua` make a promoted replica as safe as a master restarted empty:
//!
//! - **Tokens are a hybrid logical clock**: each grant mints max(counter + 1, clock in µs).
//!   The old master's last token `t` was minted at its clock reading `c` and is at most `c`
//!   plus the grants of that same microsecond, so `t` is about `c`. The promoted replica mints
//!   its first token from its own clock at least the failover's duration later (seconds: a
//!   dead master must first be noticed, then a replica elected), so above `t` unless its clock
//!   is behind the old master's by more than that. The counters it did receive only push it
//!   higher. So no token repeats or goes back, without knowing what was lost.
//! - **Failover quarantine, per hash slot**: promotion gives the node a new replication id.
//!   A slot's stamp (`keys::epoch_key`) names the replication id it last granted under; a
//!   promoted node that finds another id (or none) refuses the slot's free leases for one
//!   quarantine (at least every TTL), so a lease the old master granted and this node never
//!   received has expired before anyone else gets it; its holder, renewing on the new master,
//!   finds it gone at its next renewal and stops. A restart that is not a promotion keeps the
//!   restart rules.
//! - **Restart quarantine, also with data**: a server that restarted grants no lease it may
//!   have forgotten until its uptime reaches the quarantine: a lock whose counter is missing
//!   (it restarted empty), and a free lease in a slot stamped under another replication id
//!   (every restart changes it), even when the lock's counter survived. Data that survived may
//!   still lack the last grants: `appendfsync everysec` loses up to a second of writes in a
//!   crash, a snapshot lacks what came after it, and a promoted replica that restarts with its
//!   data before its first grant in a slot reads as a plain restart (Redis 7.0.15: new
//!   replication id, `second_repl_offset` -1) while a lease the old master granted and never
//!   replicated may still run. `lock init`'s marker of the current run lifts this rule on a
//!   brand-new server; a server up longer than the quarantine grants at once.
//!
//! What stays open: a partition in which the old master keeps granting after the promotion
//! (until Sentinel demotes it) can hand a lease out twice; Redis' `min-replicas-to-write`
//! bounds that, and the fencing token (higher on the new master) refuses the stale holder's
//! write where it lands. `wait_replicas` (`replicas`) makes the lease reach replicas before its
//! holder starts, so a failover usually keeps it.
//!
//! Here: the node's public face (one `impl`), the scripts and the lease operations of [`Node`].
//! Beside it: `build` (a node from its URL), `call` (how a request reaches the server),
//! `replies` (reading the scripts' answers), `cluster`, `sentinel`, `replicas`, `admin`,
//! `sessions`, `wait_for` and `handed` (a waiter's hand-off box).

use std::sync::LazyLock;
use std::time::Duration;

use redis::{Script, Value};
use tokio::sync::Mutex;

use crate::backend::{
    Eviction, GrantReply, GrantRequest, JoinReply, JoinRequest, KeyKind, LockView, Node, NodeAdmin,
    NodeError, NodeFuture, Queued, WaitForRequest, WaitForView, WakeStream,
};
use crate::holder::HolderInfo;
use crate::keys::{LockKeys, init_keys, lease_pattern, log_pattern, name_from_key};
use crate::url::NodeUrl;

static GRANT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/grant.lua")));
static RENEW: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/renew.lua")));
/// The release, with the grant before it: a release hands the lease to the head of the queue by
/// running that very grant for it (see `lua/release.lua`), so the rules of a grant live in one
/// script.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "local function grant(KEYS, ARGV)\n{}\nend\n{}",
        include_str!("../lua/grant.lua"),
        include_str!("../lua/release.lua")
    ))
});
static RAISE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/raise.lua")));
static EVICT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/evict.lua")));
static RECORD_GROUP: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/record_group.lua")));
static JOIN: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/join.lua")));
static LEAVE_TURN: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/leave_turn.lua")));
static INSPECT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/inspect.lua")));

mod admin;
mod build;
mod call;
mod cluster;
mod handed;
mod replicas;
mod replies;
pub mod sentinel;
mod sessions;
mod subscriber;
mod wait_for;

use sentinel::Endpoint;

use call::describe;
use cluster::{ClusterSide, Conn};
use replies::{parse_grant, parse_join, text};

/// One Redis master (or one Redis Cluster).
pub struct RedisNode {
    url: NodeUrl,
    endpoint: Endpoint,
    cluster: ClusterSide,
    conn: Mutex<Option<Conn>>,
    /// The one pub/sub connection every wait on this node shares (not on a Redis Cluster).
    subscriber: subscriber::Subscriber,
    /// Hand-off box connections kept between waits (see `handed`).
    boxes: handed::Pool,
    connect_timeout: Duration,
    op_timeout: Duration,
    /// Replicas each grant waits for, and how long (see `replicas`).
    wait: Option<(u32, Duration)>,
}

/// `RedisNode`'s whole public face, in this one `impl`: each method delegates to the module that
/// does the work (`build`, `call`). The trait impls ([`Node`] here, [`NodeAdmin`] in `admin`,
/// `SessionStore` in `sessions`) are its other face.
impl RedisNode {
    /// A node for `url`; nothing is connected until the first operation or [`Self::connect`].
    pub fn new(
        url: &NodeUrl,
        connect_timeout: Duration,
        op_timeout: Duration,
    ) -> Result<Self, NodeError> {
        Self::with_tls_ca(url, connect_timeout, op_timeout, None)
    }

    /// Like [`Self::new`], trusting the PEM certificate authority `tls_ca` for `rediss://`
    /// (instead of the system's trust store).
    pub fn with_tls_ca(
        url: &NodeUrl,
        connect_timeout: Duration,
        op_timeout: Duration,
        tls_ca: Option<&[u8]>,
    ) -> Result<Self, NodeError> {
        build::node(url, connect_timeout, op_timeout, tls_ca)
    }

    /// Wait after each grant until `replicas` replicas acknowledged it, up to `timeout` (Redis
    /// `WAIT`); 0 replicas: no wait.
    pub fn with_replica_wait(mut self, replicas: u32, timeout: Duration) -> Self {
        self.wait = (replicas > 0).then_some((replicas, timeout));
        self
    }

    /// The node's URL, password hidden.
    pub fn url(&self) -> &NodeUrl {
        &self.url
    }

    /// Open the connection (once) within the connect timeout: a plain one, or a cluster
    /// connection when the URL says `cluster=true` or the node turned out to be part of one.
    pub async fn connect(&self) -> Result<(), NodeError> {
        self.connection().await.map(|_| ())
    }
}

impl Node for RedisNode {
    fn label(&self) -> String {
        self.url.to_string()
    }

    fn grant<'a>(&'a self, req: &'a GrantRequest) -> NodeFuture<'a, GrantReply> {
        Box::pin(async move {
            let k = &req.keys;
            let id = &req.identity;
            let reply: Value = self
                .call(|mut c| async move {
                    GRANT
                        .key(&k.lease)
                        .key(&k.fence)
                        .key(&k.holder)
                        .key(&k.waiters)
                        .key(&k.log)
                        .key(&k.init)
                        .key(&k.queue)
                        .key(&k.waiting)
                        .key(&k.epoch)
                        .key(&k.handoff)
                        .arg(&req.owner)
                        .arg(req.ttl.as_millis() as u64)
                        .arg(&id.session)
                        .arg(&id.host)
                        .arg(id.pid)
                        .arg(id.pid_start.map(|s| s.to_string()).unwrap_or_default())
                        .arg(&id.command)
                        .arg(req.waiter.as_deref().unwrap_or(""))
                        .arg(req.waiter_ttl.as_millis() as u64)
                        .arg(req.log_cap)
                        .arg(req.quarantine.as_millis() as u64)
                        .arg(id.pid_ns.as_deref().unwrap_or(""))
                        .arg(req.place)
                        .arg(&req.join_hash)
                        .arg(req.floor)
                        .invoke_async(&mut c)
                        .await
                })
                .await?;
            let reply =
                parse_grant(reply).ok_or_else(|| NodeError::new("unexpected reply to grant"))?;
            if let GrantReply::Granted { token } = reply {
                self.await_replicas(req, token).await;
            }
            Ok(reply)
        })
    }

    fn renew<'a>(
        &'a self,
        keys: &'a LockKeys,
        owner: &'a str,
        ttl: Duration,
    ) -> NodeFuture<'a, bool> {
        Box::pin(async move {
            self.call_twice(|mut c| async move {
                RENEW
                    .key(&keys.lease)
                    .arg(owner)
                    .arg(ttl.as_millis() as u64)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await
            .map(|n| n == 1)
        })
    }

    fn release<'a>(
        &'a self,
        keys: &'a LockKeys,
        owner: &'a str,
        log_cap: u32,
    ) -> NodeFuture<'a, bool> {
        Box::pin(self.end(keys, owner, log_cap, true))
    }

    fn undo<'a>(
        &'a self,
        keys: &'a LockKeys,
        owner: &'a str,
        log_cap: u32,
    ) -> NodeFuture<'a, bool> {
        Box::pin(self.end(keys, owner, log_cap, false))
    }

    fn raise<'a>(&'a self, keys: &'a LockKeys, token: u64) -> NodeFuture<'a, u64> {
        Box::pin(async move {
            self.call(|mut c| async move {
                RAISE
                    .key(&keys.fence)
                    .arg(token)
                    .invoke_async::<u64>(&mut c)
                    .await
            })
            .await
        })
    }

    fn subscribe<'a>(&'a self, keys: &'a LockKeys) -> NodeFuture<'a, WakeStream> {
        Box::pin(self.subscribe_anywhere(&keys.channel, &keys.lease))
    }

    fn handed(&self, key: String) -> NodeFuture<'_, WakeStream> {
        Box::pin(self.open_box(key))
    }

    fn evict<'a>(&'a self, ev: &'a Eviction) -> NodeFuture<'a, bool> {
        Box::pin(async move {
            let (keys, by) = (&ev.keys, &ev.by);
            let send = |mut c: Conn| async move {
                EVICT
                    .key(&keys.lease)
                    .key(&keys.holder)
                    .key(&keys.log)
                    .arg(&ev.expected_owner)
                    .arg(&keys.channel)
                    .arg(ev.log_cap)
                    .arg(ev.event)
                    .arg(&by.session)
                    .arg(&by.host)
                    .arg(by.pid)
                    .invoke_async::<i64>(&mut c)
                    .await
            };
            let first = self.call(send).await;
            if call::resend_evict_for_test() {
                self.resend_when_held_again(&keys.lease, send).await;
            }
            first.map(|n| n == 1)
        })
    }

    fn record_group<'a>(
        &'a self,
        keys: &'a LockKeys,
        owner: &'a str,
        group: u32,
        group_start: Option<u64>,
    ) -> NodeFuture<'a, bool> {
        Box::pin(async move {
            self.call(|mut c| async move {
                RECORD_GROUP
                    .key(&keys.lease)
                    .key(&keys.holder)
                    .arg(owner)
                    .arg(group)
                    .arg(group_start.map(|s| s.to_string()).unwrap_or_default())
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await
            .map(|n| n == 1)
        })
    }

    fn join<'a>(&'a self, req: &'a JoinRequest) -> NodeFuture<'a, JoinReply> {
        Box::pin(async move {
            let (k, by) = (&req.keys, &req.by);
            let line = k.turn_line_at(req.depth);
            let line = &line;
            // Sent again after a dropped reply, it answers the same: the turn is already ours.
            let reply: Value = self
                .call_twice(|mut c| async move {
                    JOIN.key(&k.lease)
                        .key(&k.fence)
                        .key(&k.holder)
                        .key(&k.log)
                        .key(k.turn_at(req.depth))
                        .key(k.turn_at(req.depth.saturating_sub(1)))
                        .key(&line[0])
                        .key(&line[1])
                        .arg(&req.owner)
                        .arg(&req.secret_hash)
                        .arg(req.token.to_string())
                        .arg(&req.joiner)
                        .arg(req.turn_ttl.as_millis() as u64)
                        .arg(&by.session)
                        .arg(&by.host)
                        .arg(by.pid)
                        .arg(req.log_cap)
                        .arg(&req.take_from)
                        .arg(&req.parent)
                        .arg(req.place)
                        .arg(TURN_LINE.as_millis() as u64)
                        .invoke_async(&mut c)
                        .await
                })
                .await?;
            parse_join(reply).ok_or_else(|| NodeError::new("unexpected reply to join"))
        })
    }

    fn leave_turn<'a>(&'a self, req: &'a JoinRequest) -> NodeFuture<'a, ()> {
        Box::pin(async move {
            let (key, mine) = (req.keys.turn_at(req.depth), turn_value(req));
            let line = req.keys.turn_line_at(req.depth);
            let (key, mine, line) = (&key, &mine, &line);
            self.call_twice(|mut c| async move {
                LEAVE_TURN
                    .key(key)
                    .key(&line[0])
                    .key(&line[1])
                    .arg(mine)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await
            .map(|_| ())
        })
    }

    fn leave<'a>(&'a self, keys: &'a LockKeys, waiter: &'a str) -> NodeFuture<'a, ()> {
        Box::pin(async move {
            self.call(|mut c| async move {
                redis::pipe()
                    .atomic()
                    .cmd("ZREM")
                    .arg(&keys.waiters)
                    .arg(waiter)
                    .ignore()
                    .cmd("ZREM")
                    .arg(&keys.queue)
                    .arg(waiter)
                    .ignore()
                    .cmd("HDEL")
                    .arg(&keys.waiting)
                    .arg(waiter)
                    .ignore()
                    .cmd("HDEL")
                    .arg(&keys.handoff)
                    .arg(waiter)
                    .ignore()
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
            .map(|_| ())
        })
    }

    fn wait_for<'a>(&'a self, req: &'a WaitForRequest) -> NodeFuture<'a, WaitForView> {
        Box::pin(self.wait_for_edges(req))
    }

    fn admin(&self) -> Option<&dyn NodeAdmin> {
        Some(self)
    }
}

impl RedisNode {
    /// `lua/release.lua`: end the lease if still `owner`'s, and hand it to the first waiter in
    /// line when `hand_off`.
    async fn end(
        &self,
        keys: &LockKeys,
        owner: &str,
        log_cap: u32,
        hand_off: bool,
    ) -> Result<bool, NodeError> {
        self.call_twice(|mut c| async move {
            RELEASE
                .key(&keys.lease)
                .key(&keys.fence)
                .key(&keys.holder)
                .key(&keys.waiters)
                .key(&keys.log)
                .key(&keys.init)
                .key(&keys.queue)
                .key(&keys.waiting)
                .key(&keys.epoch)
                .key(&keys.handoff)
                .key(&keys.ended)
                .key(&keys.handed)
                .arg(owner)
                .arg(&keys.channel)
                .arg(log_cap)
                .arg(crate::backend::WAITER_TTL.as_millis() as u64)
                .arg(crate::handoff::PROBATION.as_millis() as u64)
                .arg(u8::from(hand_off))
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await
        .and_then(|n| match n {
            // A server that restarted empty since it granted the lease knows nothing of the
            // lock: it cannot say whose the lease was. No answer, not a denial.
            -1 => Err(NodeError::new(
                "it knows nothing of this lock (restarted empty since it granted the lease)",
            )),
            n => Ok(n == 1),
        })
    }
}

/// How long a joiner's place in line for a turn lasts without another ask (it asks every few
/// tens of milliseconds): how long one that stopped asking holds the line up.
const TURN_LINE: Duration = Duration::from_secs(1);

/// A joiner's turn as `lua/join.lua` records it: the lease's owner id and the joiner's.
fn turn_value(req: &JoinRequest) -> String {
    format!("{} {}", req.owner, req.joiner)
}
