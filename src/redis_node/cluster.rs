//! Redis Cluster under one [`RedisNode`]: which connection a node uses ([`Conn`]: one plain
//! multiplexed connection, or the `redis` crate's cluster connection, which follows MOVED and
//! ASK and retries TRYAGAIN), how a URL that does not say `?cluster=true|false` finds out, and
//! the cluster's shape for the requests that must visit every master (`lock status`, `lock log`
//! and `lock init` walk each master's keyspace) or any live node (a waiter's subscription).
//!
//! Detection is lazy because a hook is a fresh process per tool call: a URL without `cluster=`
//! starts with a plain connection, which costs no more than for one Redis, and keeps it as long
//! as every request lands on the node it names. The first MOVED, ASK or TRYAGAIN reply (which
//! Redis sends before it runs anything, so the script did not run) marks the node as a cluster:
//! the request is sent once more through a cluster connection seeded with the URL, and so is
//! everything after it. The operator's commands ask `INFO cluster` up front instead, since a
//! keyspace walk has no key to be redirected by.
//!
//! A cluster connection learns the slot map from the first of the URL's node and its `seed=`s
//! to answer, all asked at once (`discover`), and gives each node only a short
//! time to connect: a node that accepts connections but never answers must not hold up a
//! process whose locks live elsewhere. A cluster connection whose request went unanswered is
//! dropped, and the next call learns the map afresh (after a failover, from a live node).
//!
//! Every script touches the keys of one hash slot (see [`crate::keys`]), so a cluster runs them
//! as one server would; while a slot migrates, Redis refuses a script whose keys are split
//! between the two masters (TRYAGAIN) rather than running it on half the lock, and the cluster
//! connection retries within the node's deadline. A release's PUBLISH goes over the cluster bus
//! to every node, so a waiter may listen on any live node; it listens on the slot's master as
//! the cluster sees it when it subscribes (quickest), and when that one is gone, on any other.
//!
//! Beside it: `cluster/discover.rs` (which seed answers first) and `cluster/shape.rs` (the slot
//! map, the masters, clients at other nodes).

mod discover;
mod shape;

use std::sync::atomic::{AtomicBool, Ordering};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionInfo, ErrorKind, IntoConnectionInfo, Pipeline,
    RedisError, RedisFuture, ServerErrorKind, Value,
};

use super::{RedisNode, describe};
use crate::backend::NodeError;
use crate::keys::slot_of_tag;
use crate::url::NodeUrl;
pub(crate) use shape::Shard;
use shape::{Addr, addr_like};

/// The connection a node's requests go through.
#[derive(Clone)]
pub(crate) enum Conn {
    /// One server (or a cluster node whose slots we have not left yet).
    Plain(MultiplexedConnection),
    /// Every master of a Redis Cluster, requests routed by key.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Plain(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Plain(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Plain(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// What a node knows about being part of a Redis Cluster.
pub(crate) struct ClusterSide {
    /// The URL's `cluster=` parameter.
    asked: Option<bool>,
    /// True once a redirect or `INFO cluster` showed a cluster (URL without `cluster=`).
    detected: AtomicBool,
    /// The nodes the cluster is learned from (the URL's, then its `seed=`s), or why the URL
    /// cannot seed a cluster connection.
    seeds: Result<Vec<ConnectionInfo>, String>,
    /// The certificate authority a `rediss://` URL trusts, for every node.
    certs: Option<redis::TlsCertificates>,
}

/// Retries of one request inside the cluster connection (MOVED, ASK, TRYAGAIN, a node that
/// went away), all inside the node's deadline: the crate's default first wait (over a second)
/// would outlast every lease operation.
const RETRIES: u32 = 8;
const RETRY_MIN_MS: u64 = 2;
const RETRY_MAX_MS: u64 = 50;

impl ClusterSide {
    /// What `url` says and the cluster client it seeds (built now, connected only when used).
    pub(crate) fn new(url: &NodeUrl, tls: Option<redis::TlsCertificates>) -> Self {
        ClusterSide {
            asked: url.cluster(),
            detected: AtomicBool::new(false),
            seeds: seed_nodes(url).map_err(|e| describe(&e, url)),
            certs: tls,
        }
    }

    /// A cluster client that learns the cluster from `seed` alone (one that just answered).
    fn client_from(&self, seed: ConnectionInfo) -> redis::RedisResult<ClusterClient> {
        let mut builder = ClusterClient::builder([seed])
            .retries(RETRIES)
            .min_retry_wait(RETRY_MIN_MS)
            .max_retry_wait(RETRY_MAX_MS)
            .retry_wait_formula(5, 2);
        if let Some(certs) = &self.certs {
            builder = builder.certs(certs.clone());
        }
        builder.build()
    }

    /// A plain client for one node, with the URL's TLS trust.
    fn plain_client(&self, info: ConnectionInfo) -> redis::RedisResult<redis::Client> {
        match &self.certs {
            Some(certs) => redis::Client::build_with_tls(info, certs.clone()),
            None => redis::Client::open(info),
        }
    }

    /// True when requests go through a cluster connection.
    pub(crate) fn is_on(&self) -> bool {
        self.asked == Some(true) || self.detected.load(Ordering::Relaxed)
    }

    /// True when a redirect may still reveal a cluster.
    fn detecting(&self) -> bool {
        self.asked.is_none() && !self.detected.load(Ordering::Relaxed)
    }
}

/// The nodes a cluster connection learns the cluster from: the URL's, then its `seed=`s (with
/// the URL's credentials and TLS).
fn seed_nodes(url: &NodeUrl) -> redis::RedisResult<Vec<ConnectionInfo>> {
    let first = url.secret_url().into_connection_info()?;
    let mut all = vec![first.clone()];
    for (host, port) in url.seeds() {
        let at = Addr {
            host: host.clone(),
            port: *port,
        };
        all.push(first.clone().set_addr(addr_like(first.addr(), &at)));
    }
    Ok(all)
}

/// True for the replies a cluster node gives to a request for a slot it does not serve (now):
/// the request was not run. A pipeline sent there gets one such reply per command, which
/// `redis` reports as one error listing them (an atomic pipeline, the session registry's
/// MULTI, as an aborted transaction: EXECABORT, nothing ran): it counts when every error it
/// lists is a redirect. Every pipeline of the crate touches one slot, so its commands are all
/// redirected or none is.
pub(crate) fn is_redirect(e: &RedisError) -> bool {
    every_server_error(e, |k| {
        matches!(
            k,
            ServerErrorKind::Moved | ServerErrorKind::Ask | ServerErrorKind::TryAgain
        )
    })
}

/// True when the server refused `e`'s request as a replica (READONLY), one command or every
/// command of a pipeline or transaction: nothing of it was written.
pub(crate) fn is_readonly(e: &RedisError) -> bool {
    every_server_error(e, |k| matches!(k, ServerErrorKind::ReadOnly))
}

/// True when `e` is a server error of a kind `wanted` accepts, or a pipeline's (transaction's)
/// error whose every listed error is.
fn every_server_error(e: &RedisError, wanted: impl Fn(ServerErrorKind) -> bool) -> bool {
    match e.clone().into_server_errors() {
        Some(all) => !all.is_empty() && all.iter().all(|(_, s)| s.kind().is_some_and(&wanted)),
        None => match e.kind() {
            ErrorKind::Server(k) => wanted(k),
            _ => false,
        },
    }
}

impl RedisNode {
    /// A new connection of the kind this node uses now, within the connect timeout.
    pub(super) async fn open(&self) -> Result<Conn, NodeError> {
        if !self.cluster.is_on() {
            // Behind Sentinel, asking the sentinels for the master counts against the
            // connect deadline too.
            let client =
                tokio::time::timeout(self.connect_timeout, self.endpoint.client(&self.url))
                    .await
                    .map_err(|_| NodeError::timeout(self.connect_timeout))??;
            return self.open_plain(&client).await.map(Conn::Plain);
        }
        let seeds = self.cluster.seeds.as_ref().map_err(|e| {
            NodeError::new(format!(
                "this URL cannot seed a Redis Cluster connection: {e}"
            ))
        })?;
        let seed = self.discover(seeds).await?;
        let client = self
            .cluster
            .client_from(seed)
            .map_err(|e| NodeError::new(describe(&e, &self.url)))?;
        let config = ClusterConfig::new()
            .set_connection_timeout(self.node_connect_timeout())
            .set_response_timeout(self.cluster_response_timeout());
        tokio::time::timeout(
            self.connect_timeout,
            client.get_async_connection_with_config(config),
        )
        .await
        .map_err(|_| NodeError::timeout(self.connect_timeout))?
        .map(Conn::Cluster)
        .map_err(|e| NodeError::new(describe(&e, &self.url)))
    }

    async fn open_plain(&self, client: &redis::Client) -> Result<MultiplexedConnection, NodeError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(None);
        let conn = tokio::time::timeout(
            self.connect_timeout,
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| NodeError::timeout(self.connect_timeout))?
        .map_err(|e| NodeError {
            // The crate's own connect deadline (the same one) may fire first: still silence,
            // which a wait rides out (see `Coordinator::connect`), not a refusal.
            timed_out: e.is_timeout(),
            ..NodeError::new(describe(&e, &self.url))
        })?;
        let unauthenticated = client
            .get_connection_info()
            .redis_settings()
            .password()
            .is_none();
        self.check_auth(conn, unauthenticated).await
    }

    /// Without a password, one `PING` on the new connection: a server that wants one answers
    /// `NOAUTH` here, and every command then says "authentication refused" and how to give
    /// the password, at once, instead of failing later in its own way (a pipeline's dump, a
    /// connection the crate dropped, a wait spent retrying). With a password, the crate's
    /// `AUTH` already failed the connect when it was refused.
    async fn check_auth(
        &self,
        mut conn: MultiplexedConnection,
        unauthenticated: bool,
    ) -> Result<MultiplexedConnection, NodeError> {
        if !unauthenticated {
            return Ok(conn);
        }
        let ping = redis::cmd("PING");
        match tokio::time::timeout(self.connect_timeout, ping.query_async::<Value>(&mut conn)).await
        {
            Err(_) => Err(NodeError::timeout(self.connect_timeout)),
            Ok(Err(e)) => Err(NodeError::new(describe(&e, &self.url))),
            Ok(Ok(_)) => Ok(conn),
        }
    }

    /// True when `e`, the reply to a request sent on `conn`, means that the URL's node is part
    /// of a cluster that serves the request elsewhere, and the request should go through a
    /// cluster connection instead.
    pub(super) fn redirected(&self, conn: &Conn, e: &RedisError) -> bool {
        // Not `detecting()`: a request still in flight on the plain connection when another
        // task switched must follow the switch too.
        matches!(conn, Conn::Plain(_)) && self.cluster.asked != Some(false) && is_redirect(e)
    }

    /// From now on, requests go through a cluster connection: the one that replaces the plain
    /// connection, opened now.
    pub(super) async fn switch_to_cluster(&self) -> Result<Conn, NodeError> {
        self.cluster.detected.store(true, Ordering::Relaxed);
        {
            let mut slot = self.conn.lock().await;
            if matches!(slot.as_ref(), Some(Conn::Plain(_))) {
                *slot = None;
            }
        }
        self.connection().await
    }

    /// True when this node is part of a Redis Cluster: the URL said so, a redirect showed it,
    /// or (asked once, for the operator's commands) `INFO cluster` says so.
    pub(super) async fn is_cluster(&self) -> Result<bool, NodeError> {
        if !self.cluster.detecting() {
            return Ok(self.cluster.is_on());
        }
        let info: String = self
            .call(
                |mut c| async move { redis::cmd("INFO").arg("cluster").query_async(&mut c).await },
            )
            .await?;
        if info.lines().any(|l| l.trim() == "cluster_enabled:1") {
            self.switch_to_cluster().await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// A client for the server that holds `key`: the node's own (behind Sentinel, its master
    /// now), or on a cluster the master of `key`'s slot as the cluster sees it now. Unbounded
    /// here: its one caller (`handed`) bounds the whole box open.
    pub(super) async fn client_for_key(&self, key: &str) -> Result<redis::Client, NodeError> {
        if !self.cluster.is_on() {
            return self.endpoint.client(&self.url).await;
        }
        let slot = slot_of_key(key);
        let ranges = self.cluster_slots().await?;
        let master = ranges
            .iter()
            .find(|r| r.slots.contains(&slot))
            .map(|r| r.master.clone())
            .ok_or_else(|| NodeError::new("CLUSTER SLOTS names no master for the slot"))?;
        self.client_at(&master)
    }

    /// Subscribe to `channel`: on one server, there; on a cluster, on the master of `key`'s
    /// slot as the cluster sees it now, then (that one gone) its replicas, the other nodes and
    /// the URL's node. The release's PUBLISH runs on the slot's master and reaches the other
    /// nodes over the cluster bus, which adds a tail (on loopback: p99 2-3 ms, at worst 40 ms,
    /// against 0.2 ms on the master itself), so listening there hears it at once.
    pub(super) async fn subscribe_anywhere(
        &self,
        channel: &str,
        key: &str,
    ) -> Result<super::WakeStream, NodeError> {
        if !self.cluster.is_on() {
            // The node's one shared pub/sub connection (`subscriber`), opened when there is
            // none live; connecting and subscribing within the connect timeout.
            let work = self.subscriber.listen(
                || async { self.endpoint.client(&self.url).await },
                channel,
                |e| describe(e, &self.url),
            );
            return tokio::time::timeout(self.connect_timeout, work)
                .await
                .unwrap_or_else(|_| Err(NodeError::timeout(self.connect_timeout)));
        }
        let mut candidates: Vec<Addr> = Vec::new();
        let mut last = match self.cluster_slots().await {
            Ok(ranges) => {
                let slot = slot_of_key(key);
                let owner = ranges.iter().filter(|r| r.slots.contains(&slot));
                let others = ranges.iter().filter(|r| !r.slots.contains(&slot));
                for r in owner.chain(others) {
                    for a in std::iter::once(&r.master).chain(&r.replicas) {
                        if !candidates.contains(a) {
                            candidates.push(a.clone());
                        }
                    }
                }
                Err(NodeError::new("CLUSTER SLOTS names no node"))
            }
            Err(e) => Err(e),
        };
        for addr in candidates {
            let client = self.client_at(&addr)?;
            last = self.subscribe_at(&client, channel).await;
            if last.is_ok() {
                return last;
            }
        }
        match self.subscribe_at(self.seed_client()?, channel).await {
            Ok(s) => Ok(s),
            Err(e) => Err(and_then(last, e)),
        }
    }

    /// One subscription on the node of `client`, within the connect timeout.
    async fn subscribe_at(
        &self,
        client: &redis::Client,
        channel: &str,
    ) -> Result<super::WakeStream, NodeError> {
        let work = async {
            let mut pubsub = client
                .get_async_pubsub()
                .await
                .map_err(|e| NodeError::new(describe(&e, &self.url)))?;
            pubsub
                .subscribe(channel)
                .await
                .map_err(|e| NodeError::new(describe(&e, &self.url)))?;
            Ok(super::subscriber::bounded(pubsub.into_on_message()))
        };
        tokio::time::timeout(self.connect_timeout, work)
            .await
            .unwrap_or_else(|_| Err(NodeError::timeout(self.connect_timeout)))
    }
}

/// The hash slot of `key`: its hash tag's (the text between the first `{` and the next `}`,
/// when not empty), or the whole key's.
pub(super) fn slot_of_key(key: &str) -> u16 {
    let tag = key
        .split_once('{')
        .and_then(|(_, rest)| rest.split_once('}'))
        .map(|(tag, _)| tag)
        .filter(|t| !t.is_empty())
        .unwrap_or(key);
    slot_of_tag(tag.as_bytes())
}

/// The first failure's cause followed by the next one's.
fn and_then<T>(first: Result<T, NodeError>, next: NodeError) -> NodeError {
    match first {
        Err(e) => NodeError::new(format!("{}; then {}", e.cause, next.cause)),
        Ok(_) => next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_is_looked_up_in_the_slot_of_its_hash_tag() {
        let k = crate::keys::LockKeys::new("ns", "a");
        assert_eq!(slot_of_key(&k.lease), slot_of_tag(b"ns:a"));
        assert_eq!(slot_of_key("foo"), 12182);
    }

    #[test]
    fn only_the_replies_sent_before_anything_ran_count_as_redirects() {
        let moved = RedisError::from((
            ErrorKind::Server(ServerErrorKind::Moved),
            "moved",
            "1 127.0.0.1:7002".to_owned(),
        ));
        assert!(is_redirect(&moved));
        let down = RedisError::from((ErrorKind::Server(ServerErrorKind::ClusterDown), "down"));
        assert!(!is_redirect(&down));
    }
}
