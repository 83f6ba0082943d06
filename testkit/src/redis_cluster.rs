//! A real Redis Cluster of this kit's [`RedisServer`]s: N masters and R replicas per master on
//! free loopback ports, created with `redis-cli --cluster create`, ready once every node says
//! `cluster_state:ok` with every slot covered (and every replica's link to its master is up),
//! stopped by pid when dropped. Tests kill nodes and move slots by hand with it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::redis_server::RedisServer;

/// How long creating a cluster, or its settling after a change, may take.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// A Redis Cluster on loopback. Node `i` is [`Self::node`]`(i)`; the first `masters` nodes
/// start as masters, the rest as their replicas (failovers may change that: see
/// [`Self::master_of_slot`]).
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    masters: usize,
}

/// What a node's `CLUSTER NODES` line says.
#[derive(Debug, Clone)]
struct NodeLine {
    port: u16,
    master: bool,
    failed: bool,
    slots: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// Start `masters` masters with `replicas` replicas each; panics when it cannot.
    pub fn start(masters: usize, replicas: usize) -> Self {
        Self::try_start(masters, replicas).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Self::start`], or say why not (for the benchmark).
    pub fn try_start(masters: usize, replicas: usize) -> Result<Self, String> {
        if masters < 3 {
            return Err("redis-cli --cluster create needs at least 3 masters".into());
        }
        let n = masters * (1 + replicas);
        let mut nodes = Vec::with_capacity(n);
        for _ in 0..n {
            nodes.push(RedisServer::try_start(&[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "1000",
                // A replica may be promoted whatever its link's age: tests kill masters at will.
                "--cluster-replica-validity-factor",
                "0",
            ])?);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                format!("cannot run redis-cli (is redis-tools installed? .ci/run installs it): {e}")
            })?;
        if !out.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let cluster = RedisCluster { nodes, masters };
        cluster.try_settle()?;
        Ok(cluster)
    }

    /// `redis://127.0.0.1:PORT` of the first node (no `cluster=` parameter).
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    /// The URL of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &RedisServer {
        &self.nodes[i]
    }

    /// How many nodes (masters and replicas).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when it has no node (never, once started).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// How many masters it was created with.
    pub fn masters(&self) -> usize {
        self.masters
    }

    /// SIGKILL node `i` (its replica, if any, is promoted after the node timeout, 1 s).
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Indices of the live nodes.
    fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].pid() != 0)
    }

    /// Wait until every live node says `cluster_state:ok` with all 16384 slots served by live
    /// masters, every live node knows the same masters, and every live replica's link is up.
    pub fn settle(&self) {
        self.try_settle().unwrap_or_else(|e| panic!("{e}"));
    }

    fn try_settle(&self) -> Result<(), String> {
        let deadline = Instant::now() + SETTLE_LIMIT;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.settled() {
                Ok(()) => return Ok(()),
                Err(why) => last = why,
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "the cluster did not settle within {SETTLE_LIMIT:?}: {last}"
        ))
    }

    fn settled(&self) -> Result<(), String> {
        let live_ports: Vec<u16> = self.live().map(|i| self.nodes[i].port).collect();
        let mut views = Vec::new();
        for i in self.live() {
            let s = &self.nodes[i];
            let info = try_cmd(s.port, &["CLUSTER", "INFO"])?;
            if !info.contains("cluster_state:ok") || !info.contains("cluster_slots_ok:16384") {
                return Err(format!("node {}: not ok yet", s.port));
            }
            let mut masters: Vec<(u16, Vec<(u16, u16)>)> = self
                .lines_of(s.port)?
                .into_iter()
                .filter(|l| l.master && !l.failed && !l.slots.is_empty())
                .map(|l| (l.port, l.slots))
                .collect();
            masters.sort();
            if masters.iter().any(|m| !live_ports.contains(&m.0)) {
                return Err(format!("node {} still names a dead master", s.port));
            }
            views.push(masters);
            let repl = try_cmd(s.port, &["INFO", "replication"])?;
            if repl.contains("role:slave") && !repl.contains("master_link_status:up") {
                return Err(format!("replica {}: link not up", s.port));
            }
        }
        if views.windows(2).any(|w| w[0] != w[1]) {
            return Err("the nodes disagree on who serves which slots".into());
        }
        Ok(())
    }

    fn lines_of(&self, port: u16) -> Result<Vec<NodeLine>, String> {
        let text = try_cmd(port, &["CLUSTER", "NODES"])?;
        Ok(text.lines().filter_map(parse_node_line).collect())
    }

    /// The index of the node that serves `slot` now, as the first live node sees it.
    pub fn master_of_slot(&self, slot: u16) -> usize {
        let first = self.live().next().expect("a live node");
        let lines = self
            .lines_of(self.nodes[first].port)
            .unwrap_or_else(|e| panic!("{e}"));
        let port = lines
            .iter()
            .find(|l| l.master && l.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            .map(|l| l.port)
            .unwrap_or_else(|| panic!("no master serves slot {slot}"));
        self.index_of(port)
    }

    /// The slot ranges node `i` serves now (none for a replica), as the first live node sees it.
    pub fn slot_ranges(&self, i: usize) -> Vec<(u16, u16)> {
        let first = self.live().next().expect("a live node");
        self.lines_of(self.nodes[first].port)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .find(|l| l.port == self.nodes[i].port && l.master)
            .map_or(Vec::new(), |l| l.slots)
    }

    /// The index of the node listening on `port`.
    pub fn index_of(&self, port: u16) -> usize {
        self.nodes
            .iter()
            .position(|s| s.port == port)
            .unwrap_or_else(|| panic!("no node on port {port}"))
    }

    /// Indices of the nodes that serve slots now.
    pub fn current_masters(&self) -> Vec<usize> {
        let first = self.live().next().expect("a live node");
        let mut ports: Vec<u16> = self
            .lines_of(self.nodes[first].port)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .filter(|l| l.master && !l.failed && !l.slots.is_empty())
            .map(|l| l.port)
            .collect();
        ports.sort();
        ports.into_iter().map(|p| self.index_of(p)).collect()
    }

    /// Node `i`'s cluster id.
    pub fn node_id(&self, i: usize) -> String {
        self.nodes[i].cmd(&["CLUSTER", "MYID"])
    }

    /// Move `slot` to node `to` by hand, as `redis-cli --cluster reshard` does: the target
    /// imports, the source migrates, its keys are MIGRATEd in batches, then both (and every
    /// other master) learn the new owner. Requests for the slot meanwhile get ASK or TRYAGAIN.
    /// Returns how many keys moved. A slot already served by `to` moves nothing.
    pub fn move_slot(&self, slot: u16, to: usize) -> usize {
        let from = self.master_of_slot(slot);
        if from == to {
            return 0;
        }
        let (src, dst) = (&self.nodes[from], &self.nodes[to]);
        let (src_id, dst_id) = (self.node_id(from), self.node_id(to));
        let s = slot.to_string();
        dst.cmd(&["CLUSTER", "SETSLOT", &s, "IMPORTING", &src_id]);
        src.cmd(&["CLUSTER", "SETSLOT", &s, "MIGRATING", &dst_id]);
        let mut moved = 0;
        loop {
            let keys = keys_in_slot(src.port, slot);
            if keys.is_empty() {
                break;
            }
            let port = dst.port.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys.iter().map(String::as_str));
            src.cmd(&args);
            moved += keys.len();
        }
        dst.cmd(&["CLUSTER", "SETSLOT", &s, "NODE", &dst_id]);
        src.cmd(&["CLUSTER", "SETSLOT", &s, "NODE", &dst_id]);
        for m in self.current_masters() {
            if m != from && m != to {
                let _ = try_cmd(
                    self.nodes[m].port,
                    &["CLUSTER", "SETSLOT", &s, "NODE", &dst_id],
                );
            }
        }
        moved
    }

    /// Every node's pid and port, for messages.
    pub fn describe(&self) -> String {
        self.nodes
            .iter()
            .map(|s| format!("{}(pid {})", s.port, s.pid()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The keys of `slot` on the node of `port`, up to 100.
fn keys_in_slot(port: u16, slot: u16) -> Vec<String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("client");
    let mut conn = client.get_connection().expect("connection");
    redis::cmd("CLUSTER")
        .arg("GETKEYSINSLOT")
        .arg(slot)
        .arg(100)
        .query(&mut conn)
        .expect("CLUSTER GETKEYSINSLOT")
}

/// One command on a fresh connection to the node of `port`, its reply as text.
fn try_cmd(port: u16, args: &[&str]) -> Result<String, String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .map_err(|e| format!("node {port}: {e}"))?;
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .map_err(|e| format!("node {port}: {e}"))?;
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    match c.query::<redis::Value>(&mut conn) {
        Ok(redis::Value::BulkString(b)) => Ok(String::from_utf8_lossy(&b).into_owned()),
        Ok(redis::Value::VerbatimString { text, .. }) => Ok(text),
        Ok(redis::Value::SimpleString(s)) => Ok(s),
        Ok(other) => Ok(format!("{other:?}")),
        Err(e) => Err(format!("node {port}: {e}")),
    }
}

/// `<id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slot> ...`.
fn parse_node_line(line: &str) -> Option<NodeLine> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let port = f
        .get(1)?
        .split('@')
        .next()?
        .rsplit(':')
        .next()?
        .parse()
        .ok()?;
    let flags = f.get(2)?;
    let slots = f
        .iter()
        .skip(8)
        .filter(|s| !s.starts_with('['))
        .filter_map(|s| match s.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => {
                let n = s.parse().ok()?;
                Some((n, n))
            }
        })
        .collect();
    Some(NodeLine {
        port,
        master: flags.contains("master"),
        failed: flags.contains("fail"),
        slots,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_lines_parse() {
        let l = parse_node_line(
            "07c3 127.0.0.1:30004@31004 myself,master - 0 0 4 connected 0-5460 6000 [7000->-abc]",
        )
        .unwrap();
        assert_eq!((l.port, l.master, l.failed), (30004, true, false));
        assert_eq!(l.slots, vec![(0, 5460), (6000, 6000)]);
    }

    #[test]
    fn a_cluster_starts_serves_every_slot_and_moves_one() {
        let c = RedisCluster::start(3, 0);
        assert_eq!(c.current_masters().len(), 3);
        let slot = 1234;
        let from = c.master_of_slot(slot);
        let to = (from + 1) % 3;
        c.move_slot(slot, to);
        c.settle();
        assert_eq!(c.master_of_slot(slot), to);
    }
}
