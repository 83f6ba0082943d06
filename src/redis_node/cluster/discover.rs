//! How a new cluster connection finds a node to learn the cluster from: the URL's node and its
//! `seed=`s asked at once, the first slot map wins; and the deadlines the cluster connection
//! gives each node.

use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, Value};

use super::shape::parse_cluster_slots;
use crate::backend::NodeError;
use crate::redis_node::{RedisNode, describe};

impl RedisNode {
    /// The first of the URL's node and its seeds to answer `CLUSTER SLOTS` with a slot map,
    /// all asked at once, each within the connect timeout: a node that accepts connections but
    /// never answers (a hung host, a black-holed network, a SIGSTOPped server) named first must
    /// not stop a process that another seed would let in. The cluster connection then learns
    /// the cluster from that node alone (the crate waits for every seed it is given).
    pub(super) async fn discover(
        &self,
        seeds: &[ConnectionInfo],
    ) -> Result<ConnectionInfo, NodeError> {
        use futures_util::StreamExt;
        use futures_util::stream::FuturesUnordered;
        let ask = |info: ConnectionInfo| async move {
            let label = match info.addr() {
                ConnectionAddr::Tcp(h, p)
                | ConnectionAddr::TcpTls {
                    host: h, port: p, ..
                } => {
                    format!("{h}:{p}")
                }
                _ => self.url.to_string(),
            };
            let work = async {
                let client = self
                    .cluster
                    .plain_client(info.clone())
                    .map_err(|e| NodeError::new(describe(&e, &self.url)))?;
                let mut conn = self.open_plain(&client).await?;
                let reply: Value = redis::cmd("CLUSTER")
                    .arg("SLOTS")
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| NodeError::new(describe(&e, &self.url)))?;
                if parse_cluster_slots(&reply, "").is_empty() {
                    return Err(NodeError::new("CLUSTER SLOTS names no master"));
                }
                Ok(())
            };
            let r = tokio::time::timeout(self.connect_timeout, work)
                .await
                .unwrap_or_else(|_| Err(NodeError::timeout(self.connect_timeout)));
            (label, r.map(|()| info))
        };
        let mut pending: FuturesUnordered<_> = seeds.iter().cloned().map(ask).collect();
        let mut causes = Vec::new();
        let mut all_timed_out = true;
        while let Some((label, r)) = pending.next().await {
            match r {
                Ok(info) => return Ok(info),
                Err(e) => {
                    all_timed_out &= e.timed_out;
                    causes.push(format!("{label}: {}", e.cause));
                }
            }
        }
        Err(NodeError {
            cause: format!(
                "no node of the Redis Cluster gave its slot map ({})",
                causes.join("; ")
            ),
            timed_out: all_timed_out && !causes.is_empty(),
        })
    }

    /// How long the cluster connection gives each node to connect: a quarter of the connect
    /// timeout, at least the per-node deadline. The crate connects to every node of the slot
    /// map and waits for all of them before the first request goes out, so this is how long a
    /// silent node delays a new process, whichever master its locks live on. Raise
    /// `--connect-timeout` for distant nodes behind TLS.
    pub(super) fn node_connect_timeout(&self) -> Duration {
        (self.connect_timeout / 4)
            .max(self.op_timeout)
            .min(self.connect_timeout)
    }

    /// How long the cluster connection waits for one reply before it gives up (and, the crate
    /// being what it is, sends the request again): the per-node deadline, and for a grant's
    /// `WAIT` its timeout on top. Our own deadline on each call bounds the whole anyway.
    pub(super) fn cluster_response_timeout(&self) -> Duration {
        let wait = self.wait.map_or(Duration::ZERO, |(_, t)| t);
        (self.op_timeout + wait).max(Duration::from_millis(1))
    }
}
