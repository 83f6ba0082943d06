//! How one request reaches the server: the cached connection (opened once, dropped when
//! broken or silent), the deadline on every call, and the requests sent once more because they
//! did not run (a Redis Cluster redirect, a server demoted to a replica) or may safely run twice
//! (renew, release). Every Redis error becomes one line here, with no password in it.

use std::time::Duration;

use super::RedisNode;
use super::cluster::{self, Conn};
use crate::backend::NodeError;
use crate::url::NodeUrl;

impl RedisNode {
    /// The cached connection, opened (once) when there is none.
    pub(super) async fn connection(&self) -> Result<Conn, NodeError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let conn = self.open().await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Run one request against this node within the operation deadline; a broken or silent
    /// connection is dropped so the next call reconnects.
    pub(super) async fn call<T, F, Fut>(&self, f: F) -> Result<T, NodeError>
    where
        F: Fn(Conn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        self.call_for(self.op_timeout, f).await
    }

    /// [`Self::call`] with a deadline of its own, for the operator's bulk requests (`lock
    /// init`), which a lease's per-node deadline does not fit.
    pub(super) async fn call_for<T, F, Fut>(&self, deadline: Duration, f: F) -> Result<T, NodeError>
    where
        F: Fn(Conn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        // Connecting has its own deadline (the connect timeout, which a TLS handshake or a
        // distant node may need), outside the operation's. It counts the wait for another
        // call's connect too: calls to a silent node queue on the connection slot, each opening
        // (and timing out) in turn, and without it the last of a hundred waited minutes.
        let conn = tokio::time::timeout(self.connect_timeout, self.connection())
            .await
            .map_err(|_| NodeError::timeout(self.connect_timeout))??;
        match self.attempt(deadline, &f, conn).await {
            Err(NotRun::Redirected) => {
                // The URL's node is part of a Redis Cluster that serves this lock's slot
                // elsewhere; the request did not run. Once more, through the whole cluster.
                let conn = self.switch_to_cluster().await?;
                self.attempt(deadline, &f, conn)
                    .await
                    .map_err(|_| NodeError::new("redirected again by the Redis Cluster"))?
            }
            Err(NotRun::Demoted) => {
                // The server became a replica (a failover) and refused the request's first
                // write, so nothing of it ran. Once more on a new connection: behind Sentinel
                // that one goes to the new master.
                let conn = self.connection().await?;
                self.attempt(deadline, &f, conn).await.map_err(|_| {
                    NodeError::new(
                        "the server is a replica (READONLY), also on a new connection: \
                         point at the master, or at its sentinels (redis+sentinel://)",
                    )
                })?
            }
            Ok(r) => r,
        }
    }

    /// One try of [`Self::call_for`]; `Err(NotRun)` when the request did not run and may go
    /// once more: a plain connection's cluster node sent it elsewhere (see [`cluster`]), or
    /// the server was demoted to a replica.
    async fn attempt<T, F, Fut>(
        &self,
        deadline: Duration,
        f: &F,
        conn: Conn,
    ) -> Result<Result<T, NodeError>, NotRun>
    where
        F: Fn(Conn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        // The cluster connection reconnects to its nodes itself; only a plain one is dropped.
        let plain = matches!(conn, Conn::Plain(_));
        let work = async {
            match f(conn.clone()).await {
                Ok(v) => Ok(Ok(v)),
                Err(e) if self.redirected(&conn, &e) => Err(NotRun::Redirected),
                // READONLY: the server was demoted to a replica (a failover); every script
                // refuses at its first write, before which it wrote nothing. The connection
                // goes; behind Sentinel the next connect finds the new master.
                Err(e) if plain && cluster::is_readonly(&e) => {
                    *self.conn.lock().await = None;
                    Err(NotRun::Demoted)
                }
                Err(e) => {
                    // The cluster connection reconnects to its nodes itself; only a plain one
                    // is dropped.
                    if plain
                        && (e.is_io_error()
                            || e.is_connection_dropped()
                            || e.is_unrecoverable_error())
                    {
                        *self.conn.lock().await = None;
                    }
                    Ok(Err(NodeError::new(describe(&e, &self.url))))
                }
            }
        };
        match tokio::time::timeout(deadline, work).await {
            Ok(r) => r,
            Err(_) => {
                // No answer in time: the connection may be half-open (a host gone without a
                // reset), which would never recover. Drop it; the next call reconnects. A
                // cluster connection goes too: it keeps its slot map until a node redirects,
                // which a silent node never does, so after a failover only a fresh map (asked
                // of every seed at once) finds the promoted replica.
                if let Ok(mut slot) = self.conn.try_lock() {
                    *slot = None;
                }
                Ok(Err(NodeError::timeout(deadline)))
            }
        }
    }

    /// [`Self::call`] for requests that may safely run twice (the owner-checked renew and
    /// release): when the cached connection turns out broken (the server restarted since it was
    /// opened), the request is sent once more on a fresh connection. Without this, the first
    /// release after a Redis restart fails, and the waiters wait out the TTL instead of being
    /// woken.
    pub(super) async fn call_twice<T, F, Fut>(&self, f: F) -> Result<T, NodeError>
    where
        F: Fn(Conn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let cached = self.conn.lock().await.is_some();
        match self.call(&f).await {
            // `call` dropped the connection: it was broken, not slow.
            Err(e) if cached && !e.timed_out && self.conn.lock().await.is_none() => {
                self.call(&f).await.map_err(|again| {
                    NodeError::new(format!(
                        "{}; again on a new connection: {}",
                        e.cause, again.cause
                    ))
                })
            }
            other => other,
        }
    }
}

/// Test-only, read in debug builds alone: `TRACTATUS_TEST_RESEND_EVICT=1` makes every eviction
/// reach the server a second time once the lock is held again, which is what the cluster
/// connection does when the first reply is lost and its resend lands after the next grant.
/// The integration tests prove with it that a resent `lock break` keeps the next holder's
/// lease. Release builds ignore the variable.
pub(super) fn resend_evict_for_test() -> bool {
    cfg!(debug_assertions)
        && std::env::var_os("TRACTATUS_TEST_RESEND_EVICT").is_some_and(|v| v == "1")
}

impl RedisNode {
    /// The second send of [`resend_evict_for_test`]: once `lease` is held again (looked at
    /// every 10 ms, at most 1000 times), `send` once more, its reply ignored.
    pub(super) async fn resend_when_held_again<T, F, Fut>(&self, lease: &str, send: F)
    where
        F: Fn(Conn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        for _ in 0..1000 {
            let held: Result<Option<String>, _> = self
                .call(|mut c| async move { redis::cmd("GET").arg(lease).query_async(&mut c).await })
                .await;
            if matches!(held, Ok(Some(_))) {
                let _ = self.call(&send).await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Why a request did not run on a plain connection, and may be sent once more.
enum NotRun {
    /// A Redis Cluster node redirected it (MOVED, ASK, TRYAGAIN).
    Redirected,
    /// The server is a replica now (READONLY).
    Demoted,
}

/// A Redis error as one line, with no password in it.
pub(super) fn describe(e: &redis::RedisError, url: &NodeUrl) -> String {
    // One line, whatever the server or the parser said.
    let text = e
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let text = text.replace(url.secret_url(), &url.to_string());
    if e.is_connection_refusal() {
        "connection refused".to_owned()
    } else if text.contains("NOAUTH") {
        // The server's words only: a pipeline's refusal repeats them once per command.
        "authentication refused: this Redis wants a password and none was given (\"NOAUTH\"); \
         give it in TRACTATUS_REDIS_PASSWORD or TRACTATUS_REDIS_PASSWORD_FILE (and the ACL user \
         in TRACTATUS_REDIS_USERNAME)"
            .to_owned()
    } else if matches!(e.kind(), redis::ErrorKind::AuthenticationFailed)
        || text.contains("WRONGPASS")
    {
        format!(
            "authentication refused ({text}): check TRACTATUS_REDIS_PASSWORD (or \
             TRACTATUS_REDIS_PASSWORD_FILE) and TRACTATUS_REDIS_USERNAME"
        )
    } else if text.contains("unauthenticated") {
        // Redis drops a client that sends a long request before AUTH.
        format!("authentication required: no password given? ({text})")
    } else if cluster::is_redirect(e) {
        format!(
            "{text} (a Redis Cluster node that serves this lock elsewhere: leave out \
             ?cluster=false)"
        )
    } else if text.contains("CROSSSLOT") || text.contains("CrossSlot") {
        format!("{text} (a Redis Cluster node: leave out ?cluster=false, or say ?cluster=true)")
    } else if text.contains("MasterNameNotFoundBySentinel") {
        format!(
            "no sentinel named a master for this service: a failover under way, or a wrong \
             service name? ({text})"
        )
    } else if text.contains("Parse error") || text.contains("Incompatible type") {
        format!("the server does not speak the Redis protocol: is this a Redis port? ({text})")
    } else {
        text
    }
}
