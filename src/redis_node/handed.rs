//! A waiter's hand-off box (see `lua/release.lua` and `crate::handoff`): a connection of the
//! wait's own, blocked in `BLPOP` on the box, so a release that hands the waiter the lease
//! reaches it with no round trip of the waiter's. What comes out of the box was put there by a
//! client that may write (`RPUSH`), which a read-only user, allowed to PUBLISH, is not: the
//! release message alone is no proof.
//!
//! The connection has no response timeout (a `BLPOP` blocks for as long as it was told);
//! every wait on it is bounded by its caller, which drops the stream when its wait ends.
//!
//! Connections are kept between waits (one server, not a cluster): a wait that ended with its
//! `BLPOP` still blocked pushes a value of no owner into its own box over the node's
//! connection, which unblocks it (one round trip, after the wait, off its path), and its
//! connection goes back to the node's [`Pool`] for the next wait once it answers a `PING`
//! itself; one that took the lease from its box has nothing blocked and goes back at once. A
//! connect per queued wait cost 8 tasks contending on one master 4% of their throughput. A box
//! whose `BLPOP` failed, or whose end could not be pushed or answered, is closed instead; but a
//! kept connection found gone at its first `BLPOP` (its server restarted meanwhile) is replaced
//! by a new one, once, on one server always the same (not behind Sentinel), and the other kept
//! ones are dropped.

use std::sync::{Arc, Mutex, PoisonError};

use futures_util::stream;
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;

use super::sentinel::Endpoint;
use super::{Conn, RedisNode, describe};
use crate::backend::{NodeError, WakeStream};
use crate::url::NodeUrl;

/// How long one `BLPOP` blocks before it is sent again (its `timeout`, in seconds): only what a
/// server whose client went away without a close would keep; the wait drops it long before.
const BLOCK_SECS: u64 = 60;

/// What a wait that ended pushes into its own box: no owner's value, so ignored by any reader.
const ENDED: &str = "-";

/// Most connections a node keeps between waits.
const POOL_MAX: usize = 16;

/// Box connections kept between waits.
#[derive(Default, Clone)]
pub(super) struct Pool(Arc<Mutex<Vec<MultiplexedConnection>>>);

impl Pool {
    fn take(&self) -> Option<MultiplexedConnection> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).pop()
    }

    /// Drop every kept connection (their server restarted).
    fn clear(&self) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    fn put(&self, conn: MultiplexedConnection) {
        let mut idle = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < POOL_MAX {
            idle.push(conn);
        }
    }
}

/// One open box: its connection, its key, and (when its connection can be kept) how to end its
/// `BLPOP` once the wait is over.
struct Boxed {
    conn: MultiplexedConnection,
    key: String,
    /// The pool to return the connection to, and the node's connection to push the end over.
    keep: Option<(Pool, MultiplexedConnection)>,
    /// A `BLPOP` was sent and has not answered (it is dropped while the server still blocks).
    blocked: bool,
    /// Taken from the pool, not yet used: how to connect anew, once, should its first `BLPOP`
    /// fail (its server restarted since it was kept; checking each kept connection with a
    /// `PING` when a wait takes it cost 8 tasks on one master 2% of their throughput).
    anew: Option<(redis::Client, std::time::Duration, NodeUrl)>,
}

impl Drop for Boxed {
    fn drop(&mut self) {
        let Some((pool, mut node)) = self.keep.take() else {
            return;
        };
        if !self.blocked {
            // Idle (its last value taken, as when the wait took the lease from it): kept as is.
            pool.put(self.conn.clone());
            return;
        }
        // Outside a runtime (a finalizer's thread), the connection is simply closed.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (mut conn, key) = (self.conn.clone(), std::mem::take(&mut self.key));
        runtime.spawn(async move {
            // Both or neither (a user whose ACL lacks `PEXPIRE` leaves no list without expiry).
            let mut end = redis::pipe();
            end.atomic()
                .rpush(&key, ENDED)
                .ignore()
                .pexpire(&key, 1000)
                .ignore();
            let unblocked = async {
                end.query_async::<()>(&mut node).await?;
                // Kept only once it answers itself: unblocked, alive, and (behind Sentinel,
                // which resolves each connection on its own) still a server that answers.
                redis::cmd("PING").query_async::<String>(&mut conn).await
            };
            // Bounded like any request: a silent server loses the connection, not the task.
            if let Ok(Ok(_)) =
                tokio::time::timeout(std::time::Duration::from_secs(1), unblocked).await
            {
                pool.put(conn);
            }
        });
    }
}

impl RedisNode {
    /// The box `key`: a connection to the server that holds it, within the connect timeout,
    /// then every value popped from it, until the connection fails. (A writer could push a
    /// huge value; a writer can break any lock anyway, so it is not capped.)
    pub(super) async fn open_box(&self, key: String) -> Result<WakeStream, NodeError> {
        let opening = async {
            // A kept connection, on one server (a cluster's boxes live on their slots' masters).
            let kept = if self.cluster.is_on() {
                None
            } else {
                match self.connection().await {
                    Ok(Conn::Plain(node)) => Some((self.boxes.clone(), node)),
                    _ => None,
                }
            };
            // A kept connection, on one server always the same, may connect anew once (see
            // `Boxed::anew`); behind Sentinel, finding the master would cost the sentinels a
            // question on every wait.
            if let Some(conn) = kept.as_ref().and_then(|(pool, _)| pool.take()) {
                let anew = match &self.endpoint {
                    Endpoint::Direct(client) => {
                        Some((client.clone(), self.connect_timeout, self.url.clone()))
                    }
                    Endpoint::Sentinel(_) => None,
                };
                return Ok((kept, conn, anew));
            }
            Ok::<_, NodeError>((kept, self.connect_box(&key).await?, None))
        };
        // One connect timeout in all, the node's own connection included.
        let (kept, conn, anew) = tokio::time::timeout(self.connect_timeout, opening)
            .await
            .unwrap_or_else(|_| Err(NodeError::timeout(self.connect_timeout)))?;
        let boxed = Boxed {
            conn,
            key,
            keep: kept,
            blocked: false,
            anew,
        };
        Ok(Box::pin(stream::unfold(boxed, |mut b| async move {
            loop {
                b.blocked = true;
                let popped: redis::RedisResult<Option<(String, String)>> = redis::cmd("BLPOP")
                    .arg(&b.key)
                    .arg(BLOCK_SECS)
                    .query_async(&mut b.conn)
                    .await;
                b.blocked = false;
                match (popped, b.anew.take()) {
                    (Ok(Some((popped_from, value))), _) if popped_from == b.key => {
                        return Some((value, b));
                    }
                    (Ok(None), _) => continue,
                    // A kept connection that turned out gone at its first `BLPOP`: its server
                    // restarted since it was kept. One new connection, at once (the wait
                    // listens meanwhile), and the other kept ones, as old, are dropped. (Not
                    // kept while it connects: a wait that ends meanwhile must not give the dead
                    // connection back; its end, pushed over the node connection it was opened
                    // with, dead too, then fails, and it is closed rather than kept: one
                    // connect per restart.) A refusal from a live server closes the box (an
                    // authentication refused reconnects once first).
                    (Err(e), Some((client, timeout, url)))
                        if e.is_unrecoverable_error() || e.is_connection_dropped() =>
                    {
                        let keep = b.keep.take();
                        if let Some((pool, _)) = &keep {
                            pool.clear();
                        }
                        let connecting = connect_light(&client, timeout, &url);
                        let Ok(Ok(conn)) = tokio::time::timeout(timeout, connecting).await else {
                            return None;
                        };
                        (b.conn, b.keep) = (conn, keep);
                    }
                    // Broken or refused, or another key's reply (it cannot come on this
                    // connection; were it to, the connection is not trusted further): closed,
                    // not kept.
                    _ => {
                        b.keep.take();
                        return None;
                    }
                }
            }
        })))
    }

    /// A new connection for a box: finding the server (behind Sentinel, or a cluster's slot
    /// master) and connecting to it. Bounded by [`Self::open_box`]'s one connect timeout.
    async fn connect_box(&self, key: &str) -> Result<MultiplexedConnection, NodeError> {
        let client = self.client_for_key(key).await?;
        connect_light(&client, self.connect_timeout, &self.url).await
    }
}

/// A connection to `client`'s server, lighter than the node's own: no `CLIENT SETINFO`, and
/// no `PING` to check the password first (a refused one fails the first `BLPOP`, and the box
/// closes); no response timeout (see the module's header).
async fn connect_light(
    client: &redis::Client,
    timeout: std::time::Duration,
    url: &NodeUrl,
) -> Result<MultiplexedConnection, NodeError> {
    let info = client.get_connection_info().clone();
    let settings = info.redis_settings().clone().set_skip_set_lib_name();
    let client = redis::Client::open(info.set_redis_settings(settings))
        .map_err(|e| NodeError::new(describe(&e, url)))?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(None);
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| NodeError::new(describe(&e, url)))
}
