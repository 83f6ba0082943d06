//! Waiting for replicas after a grant (`wait_replicas`, Redis `WAIT`): the lease and its token
//! should reach that many replicas before the holder starts, so that a failover to one of them
//! keeps the lease (and the failover quarantine of `lua/grant.lua` rarely matters).
//!
//! `WAIT` covers the writes sent earlier on the same connection, so it goes on the connection
//! that granted (the node's one multiplexed connection). When fewer replicas acknowledge within
//! the timeout, the grant still stands: refusing it would make every lock depend on every
//! replica being up, which is what Redis' own `min-replicas-to-write` is for. The shortfall is
//! recorded in the lock's audit log as an `unreplicated` event (with how many acknowledged),
//! so `lock log` shows which leases a failover could have lost; the failover quarantine still
//! keeps holders apart if one is lost.

use std::time::Duration;

use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};

use super::RedisNode;
use super::cluster::{Conn, slot_of_key};
use crate::backend::GrantRequest;

impl RedisNode {
    /// Wait on replicas for `req`'s grant (token `token`), when asked to; never fails the grant.
    pub(super) async fn await_replicas(&self, req: &GrantRequest, token: u64) {
        let Some((wanted, timeout)) = self.wait else {
            return;
        };
        let ms = timeout.as_millis() as u64;
        let slot = slot_of_key(&req.keys.lease);
        // The server answers by the timeout; the margin covers the round trip.
        let acked = self
            .call_for(timeout + self.op_timeout, |c| async move {
                let mut wait = redis::cmd("WAIT");
                wait.arg(wanted).arg(ms);
                match c {
                    Conn::Plain(mut c) => wait.query_async::<i64>(&mut c).await,
                    // A cluster connection would send a keyless WAIT to every master and
                    // answer the least count: the lock's own master is the one that granted.
                    Conn::Cluster(mut c) => {
                        let route = Route::new(slot, SlotAddr::Master);
                        let v = c
                            .route_command(
                                wait,
                                RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                            )
                            .await?;
                        Ok(redis::from_redis_value::<i64>(v)?)
                    }
                }
            })
            .await
            .unwrap_or(-1);
        if acked >= i64::from(wanted) {
            return;
        }
        let (k, id) = (&req.keys, &req.identity);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis() as u64;
        // Best effort: the grant stands whether or not the note lands.
        let _ = self
            .call(|mut c| async move {
                redis::cmd("XADD")
                    .arg(&k.log)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(req.log_cap)
                    .arg("*")
                    .arg(&[
                        ("event", "unreplicated".to_owned()),
                        ("owner", req.owner.clone()),
                        ("session", id.session.clone()),
                        ("host", id.host.clone()),
                        ("pid", id.pid.to_string()),
                        ("token", token.to_string()),
                        ("replicas", acked.max(0).to_string()),
                        ("wanted", wanted.to_string()),
                        ("at", now.to_string()),
                    ])
                    .query_async::<()>(&mut c)
                    .await
            })
            .await;
    }
}
