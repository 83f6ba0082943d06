//! A Redis master with one replica watched by three sentinels, all real processes on free
//! loopback ports ([`SentinelGroup`]): started ready (replication link up, every sentinel sees
//! the replica and the other two), with short failure detection, so a test can SIGKILL the
//! master and await the replica's promotion. Sentinels are `redis-server <conf> --sentinel`
//! (no package beyond redis-server), each with its own config file (Sentinel rewrites it), and
//! are SIGKILLed by pid when dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::wait_until;
use crate::redis_server::{RedisServer, answers_ping, free_port};

/// The name the sentinels monitor the master under.
pub const SERVICE: &str = "mymaster";

/// How long the group may take to come up, or a failover to finish.
const LIMIT: Duration = Duration::from_secs(30);

/// One sentinel process.
pub struct Sentinel {
    child: Child,
    /// Its loopback port.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Sentinel {
    fn start(master_port: u16, down_after: Duration) -> Result<Self, String> {
        let mut last = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().map_err(|e| format!("no temp dir: {e}"))?;
            let port = free_port().map_err(|e| format!("no free port: {e}"))?;
            let conf = dir.path().join("sentinel.conf");
            let text = format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {SERVICE} 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds {SERVICE} {down}\n\
                 sentinel failover-timeout {SERVICE} {timeout}\n\
                 sentinel parallel-syncs {SERVICE} 1\n",
                dir = dir.path().display(),
                down = down_after.as_millis(),
                timeout = (down_after * 3).as_millis(),
            );
            std::fs::write(&conf, text).map_err(|e| format!("cannot write {conf:?}: {e}"))?;
            let mut child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot run redis-server --sentinel: {e}"))?;
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last = format!("sentinel on port {port} exited early ({status})");
                    break;
                }
                if answers_ping(port) {
                    return Ok(Sentinel {
                        child,
                        port,
                        _dir: dir,
                    });
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = format!("sentinel on port {port} did not answer PING");
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Err(last)
    }

    /// The sentinel's view of the master, as `SENTINEL MASTER` fields.
    fn master_field(&self, field: &str) -> Option<String> {
        let v = query(self.port, &["SENTINEL", "MASTER", SERVICE])?;
        let redis::Value::Array(items) = v else {
            return None;
        };
        let text = |v: &redis::Value| match v {
            redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            redis::Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        };
        items
            .chunks_exact(2)
            .find(|kv| text(&kv[0]).as_deref() == Some(field))
            .and_then(|kv| text(&kv[1]))
    }

    /// The port of the master this sentinel names now.
    pub fn master_port(&self) -> Option<u16> {
        let v = query(self.port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE])?;
        match v {
            redis::Value::Array(a) => match a.get(1)? {
                redis::Value::BulkString(b) => String::from_utf8_lossy(b).parse().ok(),
                _ => None,
            },
            _ => None,
        }
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One command on a fresh connection with a short timeout; `None` on any error.
pub fn query(port: u16, args: &[&str]) -> Option<redis::Value> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut conn = client
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()?;
    let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(&mut conn).ok()
}

/// The value of `field` in the `INFO replication` of the server on `port`.
pub fn replication_field(port: u16, field: &str) -> Option<String> {
    let v = query(port, &["INFO", "replication"])?;
    let redis::Value::BulkString(b) = v else {
        return None;
    };
    String::from_utf8_lossy(&b).lines().find_map(|l| {
        l.strip_prefix(field)
            .and_then(|r| r.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    })
}

/// A master, a replica of it and three sentinels, ready.
pub struct SentinelGroup {
    /// The servers: `[0]` started as master, `[1]` as its replica. Roles change on failover:
    /// ask [`Self::master_port`].
    pub servers: Vec<RedisServer>,
    /// The three sentinels.
    pub sentinels: Vec<Sentinel>,
}

impl SentinelGroup {
    /// Start the group with failure detection after `down_after` (failover timeout three
    /// times that) and wait until it is ready: the replica's link is up and every sentinel
    /// knows the replica and the two other sentinels. `extra` goes to both redis-servers.
    pub fn start(down_after: Duration, extra: &[&str]) -> Self {
        let master = RedisServer::start_with(extra);
        let port = master.port.to_string();
        let mut replica_args = vec!["--replicaof", "127.0.0.1", &port];
        replica_args.extend_from_slice(extra);
        let replica = RedisServer::start_with(&replica_args);
        wait_until(LIMIT, "the replica's link to the master is up", || {
            replication_field(replica.port, "master_link_status").as_deref() == Some("up")
        });
        let sentinels: Vec<Sentinel> = (0..3)
            .map(|_| Sentinel::start(master.port, down_after).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        wait_until(
            LIMIT,
            "every sentinel sees the replica and the others",
            || {
                sentinels.iter().all(|s| {
                    s.master_field("num-other-sentinels").as_deref() == Some("2")
                        && s.master_field("num-slaves").as_deref() == Some("1")
                })
            },
        );
        SentinelGroup {
            servers: vec![master, replica],
            sentinels,
        }
    }

    /// `redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/mymaster`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/{SERVICE}", hosts.join(","))
    }

    /// The master the first sentinel that answers names now.
    pub fn master_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(Sentinel::master_port)
    }

    /// The index in [`Self::servers`] of the master the sentinels name now.
    pub fn master_index(&self) -> Option<usize> {
        let port = self.master_port()?;
        self.servers.iter().position(|s| s.port == port)
    }

    /// SIGKILL the current master (a crash, nothing flushed); returns its index.
    pub fn kill_master(&mut self) -> usize {
        let i = self.master_index().expect("the sentinels name a master");
        self.servers[i].kill();
        i
    }

    /// Wait until the sentinels name server `i` as master and it says it is one; panics after
    /// the limit.
    pub fn await_promotion(&self, i: usize) {
        let port = self.servers[i].port;
        wait_until(LIMIT, "the replica is promoted", || {
            self.sentinels.iter().all(|s| s.master_port() == Some(port))
                && replication_field(port, "role").as_deref() == Some("master")
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_master_is_replaced_by_its_replica() {
        let mut g = SentinelGroup::start(Duration::from_millis(500), &[]);
        assert_eq!(g.master_index(), Some(0));
        assert_eq!(g.servers[0].cmd(&["SET", "k", "v"]), "OK");
        wait_until(LIMIT, "the write reached the replica", || {
            g.servers[1].cmd(&["GET", "k"]) == "v"
        });
        let t = Instant::now();
        assert_eq!(g.kill_master(), 0);
        g.await_promotion(1);
        println!("promoted after {:?}", t.elapsed());
        assert_eq!(g.servers[1].cmd(&["GET", "k"]), "v");
        let second: i64 = replication_field(g.servers[1].port, "second_repl_offset")
            .unwrap()
            .parse()
            .unwrap();
        assert!(second >= 0, "a promotion shifts the replication id");
    }
}
