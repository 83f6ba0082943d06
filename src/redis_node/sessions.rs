//! The session registry on a Redis node ([`SessionStore`]): a hash of entries, a sorted set of
//! last activity and a sorted set of ends, all under the namespace's one hash tag
//! ([`SessionKeys`]), each operation one atomic pipeline (MULTI/EXEC), command or script in one
//! slot. A touch, on the hot path of every `state` write, is one `ZADD XX GT`: only a session
//! that `session start` registered is refreshed (activity never registers one), and its time
//! never moves back. An end is a small script: an unknown id changes nothing.

use std::collections::HashMap;

use super::*;
use crate::backend::{SessionEntry, SessionStore};
use crate::keys::SessionKeys;

/// Ends a registered session (an earlier end stays); an unknown id changes nothing. Both keys
/// share the namespace's hash tag.
const END_SCRIPT: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[1])
return 1
";

/// The fields of an entry that do not change after its start (activity and end are kept in
/// the sorted sets).
fn encode(entry: &SessionEntry) -> String {
    let fixed = SessionEntry {
        last_active_ms: 0,
        ended_ms: None,
        ..entry.clone()
    };
    serde_json::to_string(&fixed).unwrap_or_default()
}

fn ms(score: f64) -> u64 {
    if score.is_finite() && score > 0.0 {
        score as u64
    } else {
        0
    }
}

/// The entry of `id`, made empty when only the sorted sets know it (an end of a session that
/// never registered).
fn at(all: &mut HashMap<String, SessionEntry>, id: String) -> &mut SessionEntry {
    all.entry(id.clone()).or_insert_with(|| SessionEntry {
        id,
        ..Default::default()
    })
}

impl SessionStore for RedisNode {
    fn label(&self) -> String {
        self.url.to_string()
    }

    fn register<'a>(&'a self, ns: &'a str, entry: &'a SessionEntry) -> NodeFuture<'a, ()> {
        Box::pin(async move {
            let (k, body) = (SessionKeys::new(ns), encode(entry));
            let (k, body) = (&k, &body);
            self.call(|mut c| async move {
                redis::pipe()
                    .atomic()
                    .cmd("HSET")
                    .arg(&k.entries)
                    .arg(&entry.id)
                    .arg(body)
                    .ignore()
                    .cmd("ZADD")
                    .arg(&k.active)
                    .arg(entry.last_active_ms)
                    .arg(&entry.id)
                    .ignore()
                    .cmd("ZREM")
                    .arg(&k.ended)
                    .arg(&entry.id)
                    .ignore()
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
        })
    }

    fn touch<'a>(&'a self, ns: &'a str, entry: &'a SessionEntry) -> NodeFuture<'a, ()> {
        Box::pin(async move {
            let k = &SessionKeys::new(ns);
            self.call(|mut c| async move {
                // XX: only a registered session (a member since its start) is refreshed; GT:
                // never moved back.
                redis::cmd("ZADD")
                    .arg(&k.active)
                    .arg("XX")
                    .arg("GT")
                    .arg(entry.last_active_ms)
                    .arg(&entry.id)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
        })
    }

    fn end<'a>(&'a self, ns: &'a str, id: &'a str, at_ms: u64) -> NodeFuture<'a, bool> {
        Box::pin(async move {
            let k = &SessionKeys::new(ns);
            let known: bool = self
                .call(|mut c| async move {
                    redis::cmd("EVAL")
                        .arg(END_SCRIPT)
                        .arg(2)
                        .arg(&k.entries)
                        .arg(&k.ended)
                        .arg(id)
                        .arg(at_ms)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            Ok(known)
        })
    }

    fn entries<'a>(&'a self, ns: &'a str) -> NodeFuture<'a, Vec<SessionEntry>> {
        Box::pin(async move {
            let k = &SessionKeys::new(ns);
            type Reply = (
                HashMap<String, String>,
                Vec<(String, f64)>,
                Vec<(String, f64)>,
            );
            let (fixed, active, ended): Reply = self
                .call(|mut c| async move {
                    redis::pipe()
                        .cmd("HGETALL")
                        .arg(&k.entries)
                        .cmd("ZRANGE")
                        .arg(&k.active)
                        .arg(0)
                        .arg(-1)
                        .arg("WITHSCORES")
                        .cmd("ZRANGE")
                        .arg(&k.ended)
                        .arg(0)
                        .arg(-1)
                        .arg("WITHSCORES")
                        .query_async(&mut c)
                        .await
                })
                .await?;
            let mut all: HashMap<String, SessionEntry> = fixed
                .into_iter()
                .map(|(id, body)| {
                    let e = serde_json::from_str(&body).unwrap_or_else(|_| SessionEntry {
                        id: id.clone(),
                        ..Default::default()
                    });
                    (id, e)
                })
                .collect();
            for (id, score) in active {
                at(&mut all, id).last_active_ms = ms(score);
            }
            for (id, score) in ended {
                at(&mut all, id).ended_ms = Some(ms(score));
            }
            Ok(all.into_values().collect())
        })
    }

    fn forget<'a>(&'a self, ns: &'a str, ids: &'a [String]) -> NodeFuture<'a, ()> {
        Box::pin(async move {
            let k = &SessionKeys::new(ns);
            self.call(|mut c| async move {
                redis::pipe()
                    .atomic()
                    .cmd("HDEL")
                    .arg(&k.entries)
                    .arg(ids)
                    .ignore()
                    .cmd("ZREM")
                    .arg(&k.active)
                    .arg(ids)
                    .ignore()
                    .cmd("ZREM")
                    .arg(&k.ended)
                    .arg(ids)
                    .ignore()
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
        })
    }
}
