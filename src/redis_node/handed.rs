//! A waiter's hand-off box (see `lua/release.lua` and `crate::handoff`): a connection of the
//! wait's own, blocked in `BLPOP` on the box, so a release that hands the waiter the lease
//! reaches it with no round trip of the waiter's. What comes out of the box was put there by a
//! client that may write (`RPUSH`), which a read-only user, allowed to PUBLISH, is not: the
//! release message alone is no proof.
//!
//! The connection has no response timeout (a `BLPOP` blocks for as long as it was told);
//! every wait on it is bounded by its caller, which drops the stream, and the connection with
//! it, when its wait ends. The server then unblocks it as the socket closes.

use futures_util::stream;

use redis::AsyncConnectionConfig;

use super::{RedisNode, describe};
use crate::backend::{NodeError, WakeStream};

/// How long one `BLPOP` blocks before it is sent again (its `timeout`, in seconds): only what a
/// server whose client went away without a close would keep; the wait drops it long before.
const BLOCK_SECS: u64 = 60;

impl RedisNode {
    /// The box `key`: a connection to the server that holds it, within the connect timeout,
    /// then every value popped from it, until the connection fails. (A writer could push a
    /// huge value; a writer can break any lock anyway, so it is not capped.)
    pub(super) async fn open_box(&self, key: String) -> Result<WakeStream, NodeError> {
        // One deadline for the whole: finding the server (behind Sentinel, or a cluster's slot
        // master) and connecting to it.
        let opening = async {
            let client = self.client_for_key(&key).await?;
            // A lighter connect than the node's own (one per queued wait, so it shows under
            // contention): no `CLIENT SETINFO`, and no `PING` to check the password first (a
            // refused one fails the first `BLPOP`, and the box closes).
            let info = client.get_connection_info().clone();
            let settings = info.redis_settings().clone().set_skip_set_lib_name();
            let client = redis::Client::open(info.set_redis_settings(settings))
                .map_err(|e| NodeError::new(describe(&e, &self.url)))?;
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(self.connect_timeout))
                .set_response_timeout(None);
            client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|e| NodeError::new(describe(&e, &self.url)))
        };
        let conn = tokio::time::timeout(self.connect_timeout, opening)
            .await
            .unwrap_or_else(|_| Err(NodeError::timeout(self.connect_timeout)))?;
        Ok(Box::pin(stream::unfold(
            (conn, key),
            |(mut conn, key)| async move {
                loop {
                    let popped: redis::RedisResult<Option<(String, String)>> = redis::cmd("BLPOP")
                        .arg(&key)
                        .arg(BLOCK_SECS)
                        .query_async(&mut conn)
                        .await;
                    match popped {
                        Ok(Some((_, value))) => return Some((value, (conn, key))),
                        Ok(None) => continue,
                        Err(_) => return None,
                    }
                }
            },
        )))
    }
}
