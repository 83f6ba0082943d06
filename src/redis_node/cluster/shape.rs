//! The shape of a Redis Cluster: its slot map (`CLUSTER SLOTS`), its masters for the requests
//! that walk every keyspace ([`Shard`]), and clients at nodes other than the URL's, with the
//! URL's credentials and TLS.

use std::ops::RangeInclusive;

use redis::{ConnectionAddr, Value};

use super::Conn;
use crate::backend::NodeError;
use crate::redis_node::sentinel::Endpoint;
use crate::redis_node::{RedisNode, describe, text};

/// One master of a cluster (or the one server) and the hash slots it serves.
pub(crate) struct Shard {
    /// `host:port`, for messages.
    pub(crate) label: String,
    /// A plain connection to it.
    pub(crate) conn: Conn,
    /// Its slots.
    pub(crate) slots: Vec<RangeInclusive<u16>>,
}

/// A node of the cluster as `CLUSTER SLOTS` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Addr {
    pub(super) host: String,
    pub(super) port: u16,
}

/// One slot range of `CLUSTER SLOTS`: its master and replicas.
#[derive(Debug, Clone)]
pub(super) struct SlotRange {
    pub(super) slots: RangeInclusive<u16>,
    pub(super) master: Addr,
    pub(super) replicas: Vec<Addr>,
}

impl RedisNode {
    /// The masters a keyspace walk must visit, each with a plain connection of its own: this
    /// one server (every slot), or every master of its cluster.
    pub(in crate::redis_node) async fn shards(&self) -> Result<Vec<Shard>, NodeError> {
        if !self.is_cluster().await? {
            return Ok(vec![Shard {
                label: self.url.to_string(),
                conn: self.connection().await?,
                slots: vec![0..=crate::keys::SLOTS - 1],
            }]);
        }
        let ranges = self.cluster_slots().await?;
        let mut shards: Vec<(Addr, Vec<RangeInclusive<u16>>)> = Vec::new();
        for r in ranges {
            match shards.iter_mut().find(|s| s.0 == r.master) {
                Some(s) => s.1.push(r.slots),
                None => shards.push((r.master, vec![r.slots])),
            }
        }
        let mut out = Vec::new();
        for (addr, slots) in shards {
            let label = format!("{}:{}", addr.host, addr.port);
            let client = self.client_at(&addr)?;
            let conn = self
                .open_plain(&client)
                .await
                .map_err(|e| NodeError::new(format!("master {label}: {}", e.cause)))?;
            out.push(Shard {
                label,
                conn: Conn::Plain(conn),
                slots,
            });
        }
        Ok(out)
    }

    /// The cluster's slot ranges, as any live node it knows answers.
    pub(super) async fn cluster_slots(&self) -> Result<Vec<SlotRange>, NodeError> {
        let reply: Value = self
            .call(
                |mut c| async move { redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut c).await },
            )
            .await?;
        let seed_host = match self.seed_client()?.get_connection_info().addr() {
            ConnectionAddr::Tcp(host, _) | ConnectionAddr::TcpTls { host, .. } => host.clone(),
            _ => String::new(),
        };
        let ranges = parse_cluster_slots(&reply, &seed_host);
        if ranges.is_empty() {
            return Err(NodeError::new("CLUSTER SLOTS names no master"));
        }
        Ok(ranges)
    }

    /// The client of the URL's own node, which a cluster is learned from (a Sentinel URL names
    /// no node of its own, and is never a cluster's).
    pub(super) fn seed_client(&self) -> Result<&redis::Client, NodeError> {
        match &self.endpoint {
            Endpoint::Direct(c) => Ok(c),
            Endpoint::Sentinel(_) => Err(NodeError::new(
                "a Sentinel URL cannot reach a Redis Cluster: give a cluster node's URL",
            )),
        }
    }

    /// A client for another node of the cluster: the URL's credentials, TLS and database, at
    /// that node's address.
    pub(super) fn client_at(&self, addr: &Addr) -> Result<redis::Client, NodeError> {
        let info = self.seed_client()?.get_connection_info().clone();
        let at = addr_like(info.addr(), addr);
        redis::Client::open(info.set_addr(at)).map_err(|e| NodeError::new(describe(&e, &self.url)))
    }
}

/// `addr`'s kind of address (plain or TLS, with its TLS settings) at `at`.
pub(super) fn addr_like(addr: &ConnectionAddr, at: &Addr) -> ConnectionAddr {
    match addr {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host: at.host.clone(),
            port: at.port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => ConnectionAddr::Tcp(at.host.clone(), at.port),
    }
}

/// `CLUSTER SLOTS`: `[[start, end, [host, port, id, ..], [replica host, port, ..]..]..]`. A
/// node that announces no host (an empty string or `?`) is at the host we reached it by.
pub(super) fn parse_cluster_slots(reply: &Value, seed_host: &str) -> Vec<SlotRange> {
    let Value::Array(entries) = reply else {
        return Vec::new();
    };
    let addr = |v: &Value| {
        let Value::Array(parts) = v else { return None };
        let host = text(parts.first()?)?;
        let port = u16::try_from(match parts.get(1)? {
            Value::Int(n) => *n,
            _ => return None,
        })
        .ok()?;
        let host = if host.is_empty() || host == "?" {
            seed_host.to_owned()
        } else {
            host
        };
        Some(Addr { host, port })
    };
    entries
        .iter()
        .filter_map(|e| {
            let Value::Array(parts) = e else { return None };
            let bound = |i: usize| match parts.get(i)? {
                Value::Int(n) => u16::try_from(*n).ok(),
                _ => None,
            };
            Some(SlotRange {
                slots: bound(0)?..=bound(1)?,
                master: addr(parts.get(2)?)?,
                replicas: parts.iter().skip(3).filter_map(addr).collect(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn cluster_slots_names_masters_replicas_and_fills_in_an_unannounced_host() {
        let node = |h: &str, p: i64| Value::Array(vec![bulk(h), Value::Int(p), bulk("id")]);
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("10.0.0.1", 7001),
                node("10.0.0.4", 7004),
            ]),
            Value::Array(vec![Value::Int(5461), Value::Int(16383), node("", 7002)]),
        ]);
        let r = parse_cluster_slots(&reply, "seed");
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].slots, 0..=5460);
        assert_eq!(r[0].master.port, 7001);
        assert_eq!(r[0].replicas[0].host, "10.0.0.4");
        assert_eq!(
            (r[1].master.host.as_str(), r[1].replicas.len()),
            ("seed", 0)
        );
    }
}
