//! A Redis master with one replica watched by three sentinels, all real processes on free
//! loopback ports ([`SentinelGroup`]): started ready (replication link up, every sentinel sees
//! the replica and the other two), with short failure detection, so a test can SIGKILL the
//! master and await the replica's promotion. Sentinels are `redis-server <conf> --sentinel`
//! (no package beyond redis-server), each with its own config file (Sentinel rewrites it), and
//! are SIGKILLed by pid when dropped. [`Passwords`] puts the servers, the sentinels, or both
//! behind a password of their own.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::wait_until;
use crate::redis_server::{RedisServer, answers_ping, free_port};

/// The name the sentinels monitor the master under.
pub const SERVICE: &str = "mymaster";

/// How long the group may take to come up, or a failover to finish.
const LIMIT: Duration = Duration::from_secs(30);

/// The passwords of a [`SentinelGroup`]; `None` is none.
#[derive(Debug, Clone, Default)]
pub struct Passwords {
    /// The servers' `requirepass` (also their `masterauth`, and the sentinels' `auth-pass`).
    pub servers: Option<String>,
    /// The sentinels' own `requirepass` (also their `sentinel-pass`, to reach each other).
    pub sentinels: Option<String>,
}

/// One sentinel process.
pub struct Sentinel {
    child: Child,
    /// Its loopback port.
    pub port: u16,
    password: Option<String>,
    _dir: tempfile::TempDir,
}

impl Sentinel {
    fn start(master_port: u16, down_after: Duration, pw: &Passwords) -> Result<Self, String> {
        let mut last = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().map_err(|e| format!("no temp dir: {e}"))?;
            let port = free_port().map_err(|e| format!("no free port: {e}"))?;
            let conf = dir.path().join("sentinel.conf");
            let mut text = format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {SERVICE} 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds {SERVICE} {down}\n\
                 sentinel failover-timeout {SERVICE} {timeout}\n\
                 sentinel parallel-syncs {SERVICE} 1\n",
                dir = dir.path().display(),
                down = down_after.as_millis(),
                timeout = (down_after * 3).as_millis(),
            );
            if let Some(p) = &pw.servers {
                text += &format!("sentinel auth-pass {SERVICE} {p}\n");
            }
            if let Some(p) = &pw.sentinels {
                text += &format!("requirepass {p}\nsentinel sentinel-pass {p}\n");
            }
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
                        password: pw.sentinels.clone(),
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
        let v = self.query(&["SENTINEL", "MASTER", SERVICE])?;
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
        let v = self.query(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE])?;
        match v {
            redis::Value::Array(a) => match a.get(1)? {
                redis::Value::BulkString(b) => String::from_utf8_lossy(b).parse().ok(),
                _ => None,
            },
            _ => None,
        }
    }

    /// One command to this sentinel, with its password; `None` on any error.
    pub fn query(&self, args: &[&str]) -> Option<redis::Value> {
        query_with(self.port, self.password.as_deref(), args)
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
    query_with(port, None, args)
}

/// [`query`] authenticated with `password`.
pub fn query_with(port: u16, password: Option<&str>, args: &[&str]) -> Option<redis::Value> {
    let auth = password.map(|p| format!(":{p}@")).unwrap_or_default();
    let client = redis::Client::open(format!("redis://{auth}127.0.0.1:{port}")).ok()?;
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
    replication_field_with(port, None, field)
}

/// [`replication_field`] of a server that wants `password`.
pub fn replication_field_with(port: u16, password: Option<&str>, field: &str) -> Option<String> {
    let v = query_with(port, password, &["INFO", "replication"])?;
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
    passwords: Passwords,
}

impl SentinelGroup {
    /// Start the group with failure detection after `down_after` (failover timeout three
    /// times that) and wait until it is ready: the replica's link is up and every sentinel
    /// knows the replica and the two other sentinels. `extra` goes to both redis-servers.
    pub fn start(down_after: Duration, extra: &[&str]) -> Self {
        Self::start_with_passwords(down_after, extra, &Passwords::default())
    }

    /// [`Self::start`] with the servers, the sentinels, or both behind a password.
    pub fn start_with_passwords(down_after: Duration, extra: &[&str], pw: &Passwords) -> Self {
        let mut extra: Vec<&str> = extra.to_vec();
        if let Some(p) = &pw.servers {
            extra.extend(["--requirepass", p, "--masterauth", p]);
        }
        let master = RedisServer::start_with(&extra);
        let port = master.port.to_string();
        let mut replica_args = vec!["--replicaof", "127.0.0.1", &port];
        replica_args.extend_from_slice(&extra);
        let replica = RedisServer::start_with(&replica_args);
        let server_pw = pw.servers.as_deref();
        wait_until(LIMIT, "the replica's link to the master is up", || {
            replication_field_with(replica.port, server_pw, "master_link_status").as_deref()
                == Some("up")
        });
        let sentinels: Vec<Sentinel> = (0..3)
            .map(|_| Sentinel::start(master.port, down_after, pw).unwrap_or_else(|e| panic!("{e}")))
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
            passwords: pw.clone(),
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
                && self.role(i).as_deref() == Some("master")
        });
    }
}

impl SentinelGroup {
    /// What server `i` says it is (`master` or `slave`), asked with the servers' password.
    pub fn role(&self, i: usize) -> Option<String> {
        let pw = self.passwords.servers.as_deref();
        replication_field_with(self.servers[i].port, pw, "role")
    }

    /// Make every sentinel monitor server `i` as the master from now on (`SENTINEL REMOVE`, then
    /// `SENTINEL MONITOR` with the group's settings): a switch the sentinels did not make, so
    /// they close no client connection. Returns once all of them name it.
    pub fn repoint(&self, i: usize, down_after: Duration) {
        let port = self.servers[i].port.to_string();
        let down = down_after.as_millis().to_string();
        let timeout = (down_after * 3).as_millis().to_string();
        for s in &self.sentinels {
            let mut steps = vec![
                vec!["SENTINEL", "REMOVE", SERVICE],
                vec!["SENTINEL", "MONITOR", SERVICE, "127.0.0.1", &port, "2"],
                vec!["SENTINEL", "SET", SERVICE, "down-after-milliseconds", &down],
                vec!["SENTINEL", "SET", SERVICE, "failover-timeout", &timeout],
            ];
            if let Some(p) = &self.passwords.servers {
                steps.push(vec!["SENTINEL", "SET", SERVICE, "auth-pass", p]);
            }
            for step in steps {
                s.query(&step)
                    .unwrap_or_else(|| panic!("sentinel {}: {step:?} failed", s.port));
            }
        }
        let port = self.servers[i].port;
        wait_until(LIMIT, "every sentinel names the new master", || {
            self.sentinels.iter().all(|s| s.master_port() == Some(port))
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
