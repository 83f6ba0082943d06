//! The operator's side of a Redis node ([`NodeAdmin`]): which locks exist (SCAN, never KEYS),
//! one lock's holder and queue (`lua/inspect.lua`), its audit log, and the `lock init` markers.
//! Kept apart from the lease operations in the parent module, which the hot path uses.

use super::cluster::Shard;
use super::replies::pairs;
use super::*;
use crate::backend::Probe;

impl NodeAdmin for RedisNode {
    fn lock_names<'a>(&'a self, namespace: &'a str, kind: KeyKind) -> NodeFuture<'a, Vec<String>> {
        let (pattern, suffix) = match kind {
            KeyKind::Lease => (lease_pattern(namespace), ":lease"),
            KeyKind::Log => (log_pattern(namespace), ":log"),
        };
        Box::pin(async move {
            // On a cluster, every master holds its own slots' locks: each is walked.
            let mut names = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for shard in self.shards().await? {
                let mut cursor: u64 = 0;
                // One SCAN page per request, so a large keyspace is not held to one deadline.
                loop {
                    let mut conn = shard.conn.clone();
                    let mut scan = redis::cmd("SCAN");
                    scan.arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000);
                    let page = scan.query_async::<(u64, Vec<String>)>(&mut conn);
                    let (next, batch) = self.on_shard(&shard, self.op_timeout, page).await?;
                    for key in &batch {
                        if let Some(name) = name_from_key(namespace, key, suffix)
                            && seen.insert(name.to_owned())
                        {
                            names.push(name.to_owned());
                        }
                    }
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
            Ok(names)
        })
    }

    fn inspect<'a>(&'a self, keys: &'a LockKeys) -> NodeFuture<'a, Option<LockView>> {
        Box::pin(async move {
            let reply: Value = self
                .call(|mut c| async move {
                    INSPECT
                        .key(&keys.lease)
                        .key(&keys.fence)
                        .key(&keys.holder)
                        .key(&keys.waiters)
                        .key(&keys.queue)
                        .key(&keys.waiting)
                        .invoke_async(&mut c)
                        .await
                })
                .await?;
            Ok(parse_inspect(reply))
        })
    }

    fn read_log<'a>(
        &'a self,
        keys: &'a LockKeys,
        limit: usize,
    ) -> NodeFuture<'a, Vec<Vec<(String, String)>>> {
        Box::pin(async move {
            let v: Value = self
                .call(|mut c| async move {
                    redis::cmd("XREVRANGE")
                        .arg(&keys.log)
                        .arg("+")
                        .arg("-")
                        .arg("COUNT")
                        .arg(limit)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            let mut entries = parse_entries(v);
            entries.reverse();
            Ok(entries)
        })
    }

    fn mark_initialized(&self) -> NodeFuture<'_, Vec<String>> {
        Box::pin(async move {
            let shards = self.shards().await?;
            // `shards` found out whether this is a cluster.
            let one_server = !self.cluster.is_on();
            let mut run_ids = Vec::new();
            for shard in &shards {
                run_ids.push(self.mark_shard(shard, one_server).await?);
            }
            Ok(run_ids)
        })
    }

    fn probe(&self) -> NodeFuture<'_, Probe> {
        Box::pin(async move {
            let mut youngest: Option<u64> = None;
            let mut marked = true;
            for shard in self.shards().await? {
                let mut conn = shard.conn.clone();
                let info: String = self
                    .on_shard(
                        &shard,
                        self.op_timeout,
                        redis::cmd("INFO").arg("server").query_async(&mut conn),
                    )
                    .await?;
                let field = |name: &str| {
                    info.lines()
                        .find_map(|l| l.trim().strip_prefix(name).map(str::to_owned))
                };
                let secs: u64 = field("uptime_in_seconds:")
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| NodeError::new("INFO server shows no uptime_in_seconds"))?;
                youngest = Some(youngest.map_or(secs, |y| y.min(secs)));
                // One slot's marker stands for the shard's: `lock init` writes them all at once
                // (see `mark_shard`), and grant.lua reads the run id part.
                let slot = shard.slots.first().map_or(0, |r| *r.start());
                let mut conn = shard.conn.clone();
                let marker: Option<String> = self
                    .on_shard(
                        &shard,
                        self.op_timeout,
                        redis::cmd("GET")
                            .arg(crate::keys::init_key(slot))
                            .query_async(&mut conn),
                    )
                    .await?;
                let run_id = field("run_id:").unwrap_or_default();
                marked &= !run_id.is_empty()
                    && marker.is_some_and(|m| m.split(':').next() == Some(run_id.as_str()));
            }
            youngest
                .map(|secs| Probe {
                    uptime: Duration::from_secs(secs),
                    marked,
                })
                .ok_or_else(|| NodeError::new("no master to ask"))
        })
    }
}

/// Markers written per request by [`NodeAdmin::mark_initialized`].
const MARKERS_PER_PIPELINE: usize = 2048;

impl RedisNode {
    /// Mark the slots of one server (one Redis: all of them; a cluster master: its own) with
    /// its run id, and return that run id.
    async fn mark_shard(&self, shard: &Shard, one_server: bool) -> Result<String, NodeError> {
        let before = self.marker(shard).await?;
        let keys = init_keys();
        let mine: Vec<&String> = shard
            .slots
            .iter()
            .flat_map(|r| keys[usize::from(*r.start())..=usize::from(*r.end())].iter())
            .collect();
        // Pages of markers, each under the connect deadline (at least the operation deadline):
        // an operator's one-off bulk write, not a lease's hot path. One server takes a page as
        // one MSET (one append-only-file write with `appendfsync always`); a cluster master
        // refuses a multi-key command across slots, so it gets a pipeline of SETs.
        let deadline = self.connect_timeout.max(self.op_timeout);
        for page in mine.chunks(MARKERS_PER_PIPELINE) {
            let mut conn = shard.conn.clone();
            if one_server {
                let mut mset = redis::cmd("MSET");
                for key in page {
                    mset.arg(key).arg(&before);
                }
                self.on_shard(shard, deadline, mset.query_async::<()>(&mut conn))
                    .await?;
            } else {
                let mut pipe = redis::pipe();
                for key in page {
                    pipe.cmd("SET").arg(key).arg(&before).ignore();
                }
                self.on_shard(shard, deadline, pipe.query_async::<()>(&mut conn))
                    .await?;
            }
        }
        // A restart in between would leave markers of a run that no longer exists: they
        // would not count, and the server would not be marked after all.
        let after = self.marker(shard).await?;
        if after != before {
            return Err(NodeError::new(format!(
                "{}: the server restarted while it was being marked: run init again",
                shard.label
            )));
        }
        Ok(after)
    }

    /// What `lock init` writes into every slot of `shard`: `<run_id>:<master_replid>`. The
    /// grant script counts it while the run id is this server run's (a restart makes a new
    /// one); the replication id says which role the server had when marked, for the operator
    /// reading the keys. A marker lifts the restart quarantine only, never the failover one.
    async fn marker(&self, shard: &Shard) -> Result<String, NodeError> {
        let field = |section: &'static str, name: &'static str| {
            let mut conn = shard.conn.clone();
            async move {
                let info: String = self
                    .on_shard(
                        shard,
                        self.op_timeout,
                        redis::cmd("INFO").arg(section).query_async(&mut conn),
                    )
                    .await?;
                info.lines()
                    .find_map(|l| l.trim().strip_prefix(name).map(str::to_owned))
                    .ok_or_else(|| {
                        NodeError::new(format!("{}: INFO {section} shows no {name}", shard.label))
                    })
            }
        };
        let run_id = field("server", "run_id:").await?;
        let replid = field("replication", "master_replid:").await?;
        Ok(format!("{run_id}:{replid}"))
    }

    /// One request to one master within `deadline`; a failure names the master on a cluster.
    async fn on_shard<T>(
        &self,
        shard: &Shard,
        deadline: Duration,
        request: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, NodeError> {
        let named = |cause: String| {
            if shard.label == self.url.to_string() {
                cause
            } else {
                format!("master {}: {cause}", shard.label)
            }
        };
        match tokio::time::timeout(deadline, request).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(NodeError::new(named(describe(&e, &self.url)))),
            Err(_) => Err(NodeError {
                cause: named(NodeError::timeout(deadline).cause),
                timed_out: true,
            }),
        }
    }
}

/// `lua/inspect.lua`'s reply; `None` when the lock is free.
fn parse_inspect(reply: Value) -> Option<LockView> {
    let Value::Array(items) = reply else {
        return None;
    };
    let num = |i: usize| {
        items
            .get(i)
            .and_then(text)
            .and_then(|t| t.parse::<i64>().ok())
    };
    let pttl = u64::try_from(num(0)?).ok()?;
    Some(LockView {
        pttl: Duration::from_millis(pttl),
        token: u64::try_from(num(1)?).unwrap_or(0),
        waiters: u64::try_from(num(2)?).unwrap_or(0),
        queue: match items.get(3) {
            Some(Value::Array(line)) => line.iter().filter_map(text).map(|w| queued(&w)).collect(),
            _ => Vec::new(),
        },
        holder: HolderInfo::from_fields(&pairs(items.get(4..).unwrap_or(&[]))),
    })
}

/// One waiter of the queue, from `session<TAB>host<TAB>pid<TAB>since_ms`.
fn queued(who: &str) -> Queued {
    let mut f = who.split('\t');
    let mut next = || f.next().unwrap_or("").to_owned();
    Queued {
        session: next(),
        host: next(),
        pid: next().parse().unwrap_or(0),
        since_ms: next().parse().unwrap_or(0),
    }
}

/// An XRANGE-style reply as the fields of each entry, in reply order.
fn parse_entries(v: Value) -> Vec<Vec<(String, String)>> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|entry| {
            let Value::Array(mut parts) = entry else {
                return None;
            };
            match parts.pop()? {
                Value::Array(f) => Some(pairs(&f)),
                Value::Map(m) => Some(
                    m.iter()
                        .filter_map(|(k, v)| Some((text(k)?, text(v)?)))
                        .collect(),
                ),
                _ => None,
            }
        })
        .collect()
}
