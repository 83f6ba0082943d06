//! The operator's side of a Redis node ([`NodeAdmin`]): which locks exist (SCAN, never KEYS),
//! one lock's holder and queue (`lua/inspect.lua`), its audit log, and the `lock init` markers.
//! Kept apart from the lease operations in the parent module, which the hot path uses.

use super::*;

impl NodeAdmin for RedisNode {
    fn lock_names<'a>(&'a self, namespace: &'a str, kind: KeyKind) -> NodeFuture<'a, Vec<String>> {
        let (pattern, suffix) = match kind {
            KeyKind::Lease => (lease_pattern(namespace), ":lease"),
            KeyKind::Log => (log_pattern(namespace), ":log"),
        };
        Box::pin(async move {
            let mut names = Vec::new();
            let mut cursor: u64 = 0;
            // One SCAN page per call, so a large keyspace is not held to one deadline.
            loop {
                let pattern = &pattern;
                let (next, batch): (u64, Vec<String>) = self
                    .call(move |mut c| async move {
                        redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(pattern)
                            .arg("COUNT")
                            .arg(1000)
                            .query_async(&mut c)
                            .await
                    })
                    .await?;
                names.extend(
                    batch
                        .iter()
                        .filter_map(|k| name_from_key(namespace, k, suffix))
                        .map(str::to_owned),
                );
                if next == 0 {
                    return Ok(names);
                }
                cursor = next;
            }
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

    fn mark_initialized(&self) -> NodeFuture<'_, String> {
        Box::pin(async move {
            let before = self.run_id().await?;
            // Pages of markers, one MSET each (one append-only-file write with `appendfsync
            // always`), each under the connect deadline (at least the operation deadline): an
            // operator's one-off bulk write, not a lease's hot path.
            let deadline = self.connect_timeout.max(self.op_timeout);
            for page in init_keys().chunks(MARKERS_PER_PIPELINE) {
                let before = &before;
                self.call_for(deadline, move |mut c| async move {
                    let mut mset = redis::cmd("MSET");
                    for key in page {
                        mset.arg(key).arg(before);
                    }
                    mset.query_async::<()>(&mut c).await
                })
                .await?;
            }
            // A restart in between would leave markers of a run that no longer exists: they
            // would not count, and the node would not be marked after all.
            let after = self.run_id().await?;
            if after != before {
                return Err(NodeError::new(
                    "the server restarted while it was being marked: run init again",
                ));
            }
            Ok(after)
        })
    }
}

/// Markers written per pipeline by [`NodeAdmin::mark_initialized`].
const MARKERS_PER_PIPELINE: usize = 2048;

impl RedisNode {
    /// The server's run id: random, new at every start.
    async fn run_id(&self) -> Result<String, NodeError> {
        let info: String = self
            .call(|mut c| async move { redis::cmd("INFO").arg("server").query_async(&mut c).await })
            .await?;
        info.lines()
            .find_map(|l| l.trim().strip_prefix("run_id:"))
            .map(str::to_owned)
            .ok_or_else(|| NodeError::new("INFO server shows no run_id"))
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
