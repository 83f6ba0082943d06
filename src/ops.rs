//! The operator's views and tools: who holds what (`lock status`), what happened (`lock log`),
//! and the forced release (`lock break`). Locks are found with SCAN, never KEYS.

use std::collections::BTreeMap;
use std::collections::HashMap;

use redis::Value;
use serde::Serialize;

use crate::connect::{Backend, Coordinator};
use crate::error::{Error, Result};
use crate::holder::HolderInfo;
use crate::keys::{LockKeys, lease_pattern, log_pattern, name_from_key};
use crate::redis_node::{INSPECT, RedisNode, pairs, text};

/// One held lock, as `lock status` shows it. `lock status --json` prints
/// `{"namespace": .., "backend": .., "locks": [..]}` with one of these per lock.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LockStatus {
    /// Lock name.
    pub name: String,
    /// Holder's session id.
    pub session: String,
    /// Holder's host.
    pub host: String,
    /// Holder's pid.
    pub pid: u32,
    /// Holder's command.
    pub command: String,
    /// How long it has been held, ms.
    pub held_ms: u64,
    /// Time left on the lease, ms (null for local locks, which have no TTL).
    pub ttl_left_ms: Option<u64>,
    /// Fencing token of the lease.
    pub token: u64,
    /// Processes waiting for it.
    pub waiters: u64,
    /// True when the holder ran on this host and its process is gone.
    pub stale: bool,
    /// Nodes that show this lease (1 for a single Redis).
    pub nodes: usize,
}

/// One audit event, as `lock log` shows it. The `--json` output is an array of these, oldest
/// first.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AuditEvent {
    /// When, ms since the Unix epoch (coordinator's clock).
    pub at_ms: u64,
    /// `grant`, `release`, `expired`, `takeover` or `break`.
    pub event: String,
    /// Lock name.
    pub name: String,
    /// The holder's session.
    pub session: String,
    /// The holder's host.
    pub host: String,
    /// The holder's pid.
    pub pid: u32,
    /// The lease's fencing token.
    pub token: u64,
    /// Who acted, for `takeover` and `break`: `session@host pid N`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(skip)]
    owner: String,
}

/// Every key matching `pattern`, one SCAN page per call, so a large keyspace is not held to
/// one operation's deadline.
async fn scan(node: &RedisNode, pattern: &str) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = node
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
            .await
            .map_err(|e| Error::Unavailable {
                reachable: 0,
                total: 1,
                needed: 1,
                causes: vec![(node.label_string(), e.cause)],
            })?;
        keys.extend(batch);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

impl RedisNode {
    fn label_string(&self) -> String {
        self.url().to_string()
    }
}

async fn inspect(node: &RedisNode, keys: &LockKeys) -> Option<(u64, u64, u64, HolderInfo)> {
    let reply: Value = node
        .call(|mut c| async move {
            INSPECT
                .key(&keys.lease)
                .key(&keys.fence)
                .key(&keys.holder)
                .key(&keys.waiters)
                .invoke_async(&mut c)
                .await
        })
        .await
        .ok()?;
    let Value::Array(items) = reply else {
        return None;
    };
    let num = |i: usize| {
        items
            .get(i)
            .and_then(text)
            .and_then(|t| t.parse::<i64>().ok())
    };
    let pttl = num(0)?;
    if pttl < 0 {
        return None;
    }
    let holder = HolderInfo::from_fields(&pairs(items.get(3..).unwrap_or(&[])));
    Some((pttl as u64, num(1)? as u64, num(2)? as u64, holder))
}

impl Coordinator {
    /// Every lock held in this namespace.
    pub async fn status(&self) -> Result<Vec<LockStatus>> {
        let ns = &self.inner.config.namespace;
        let me = &self.inner.identity;
        match &self.inner.backend {
            Backend::Local(local) => Ok(local
                .held()?
                .into_iter()
                .map(|(name, h)| LockStatus {
                    name,
                    held_ms: h.held_for().as_millis() as u64,
                    ttl_left_ms: None,
                    waiters: 0,
                    stale: false,
                    nodes: 1,
                    session: h.session,
                    host: h.host,
                    pid: h.pid,
                    command: h.command,
                    token: h.token,
                })
                .collect()),
            Backend::Redis(q) => {
                let mut found: BTreeMap<String, Vec<(u64, u64, u64, HolderInfo)>> = BTreeMap::new();
                let mut failures = Vec::new();
                for node in q.nodes() {
                    let keys = match scan(node, &lease_pattern(ns)).await {
                        Ok(k) => k,
                        Err(e) => {
                            failures.push(e);
                            continue;
                        }
                    };
                    for key in keys {
                        let Some(name) = name_from_key(ns, &key, ":lease") else {
                            continue;
                        };
                        if let Some(seen) = inspect(node, &LockKeys::new(ns, name)).await {
                            found.entry(name.to_owned()).or_default().push(seen);
                        }
                    }
                }
                if failures.len() > q.nodes().len() - q.needed() {
                    return Err(failures.remove(0));
                }
                Ok(found
                    .into_iter()
                    .filter_map(|(name, seen)| {
                        // The owner shown by the most nodes is the holder.
                        let mut by_owner: HashMap<&str, usize> = HashMap::new();
                        for s in &seen {
                            *by_owner.entry(s.3.owner.as_str()).or_default() += 1;
                        }
                        let (owner, count) = by_owner.into_iter().max_by_key(|e| e.1)?;
                        let (pttl, _, waiters, h) =
                            seen.iter().find(|s| s.3.owner == owner)?.clone();
                        Some(LockStatus {
                            name,
                            held_ms: h.held_for().as_millis() as u64,
                            ttl_left_ms: Some(pttl),
                            waiters,
                            stale: h.is_gone_from(me),
                            nodes: count,
                            session: h.session,
                            host: h.host,
                            pid: h.pid,
                            command: h.command,
                            token: h.token,
                        })
                    })
                    .collect())
            }
        }
    }

    /// The newest `limit` audit events of this namespace, oldest first.
    pub async fn log(&self, limit: usize) -> Result<Vec<AuditEvent>> {
        let ns = &self.inner.config.namespace;
        let Backend::Redis(q) = &self.inner.backend else {
            return Err(Error::usage(
                "no audit log without Redis: local locks keep no history",
            ));
        };
        let mut events: Vec<AuditEvent> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut failures = Vec::new();
        for node in q.nodes() {
            let keys = match scan(node, &log_pattern(ns)).await {
                Ok(k) => k,
                Err(e) => {
                    failures.push(e);
                    continue;
                }
            };
            for key in keys {
                let Some(name) = name_from_key(ns, &key, ":log") else {
                    continue;
                };
                let key2 = key.clone();
                let entries: Vec<(String, Vec<(String, String)>)> = node
                    .call(move |mut c| async move {
                        let v: Value = redis::cmd("XREVRANGE")
                            .arg(&key2)
                            .arg("+")
                            .arg("-")
                            .arg("COUNT")
                            .arg(limit)
                            .query_async(&mut c)
                            .await?;
                        Ok(parse_entries(v))
                    })
                    .await
                    .unwrap_or_default();
                for (_, fields) in entries.into_iter().rev() {
                    let e = event_from(name, &fields);
                    if seen.insert((e.event.clone(), e.name.clone(), e.owner.clone())) {
                        events.push(e);
                    }
                }
            }
        }
        if failures.len() > q.nodes().len() - q.needed() {
            return Err(failures.remove(0));
        }
        // Stable: events of one lock keep their stream order within a millisecond.
        events.sort_by_key(|e| e.at_ms);
        let skip = events.len().saturating_sub(limit);
        Ok(events.split_off(skip))
    }

    /// Release lock `name` whoever holds it (an operator's decision), recorded in its audit
    /// log. Returns false when it was not held.
    pub async fn break_lock(&self, name: &str) -> Result<bool> {
        crate::config::check_lock_name(name)?;
        match &self.inner.backend {
            Backend::Local(local) => {
                let holder = local.held()?.into_iter().find(|(n, _)| n == name);
                match holder {
                    None => Ok(false),
                    Some((_, h)) => Err(Error::usage(format!(
                        "'{name}' is a local lock held by pid {} on {}: the kernel releases it \
                         when that process exits; stop the process instead",
                        h.pid, h.host
                    ))),
                }
            }
            Backend::Redis(q) => {
                let keys = LockKeys::new(&self.inner.config.namespace, name);
                Ok(self.evict(q, &keys, "", "break").await > 0)
            }
        }
    }
}

fn parse_entries(v: Value) -> Vec<(String, Vec<(String, String)>)> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|entry| {
            let Value::Array(mut parts) = entry else {
                return None;
            };
            let fields = match parts.pop()? {
                Value::Array(f) => pairs(&f),
                Value::Map(m) => m
                    .iter()
                    .filter_map(|(k, v)| Some((text(k)?, text(v)?)))
                    .collect(),
                _ => return None,
            };
            Some((text(parts.first()?)?, fields))
        })
        .collect()
}

fn event_from(name: &str, fields: &[(String, String)]) -> AuditEvent {
    let get = |k: &str| {
        fields
            .iter()
            .find(|f| f.0 == k)
            .map(|f| f.1.clone())
            .unwrap_or_default()
    };
    let by_session = get("by_session");
    AuditEvent {
        at_ms: get("at").parse().unwrap_or(0),
        event: get("event"),
        name: name.to_owned(),
        session: get("session"),
        host: get("host"),
        pid: get("pid").parse().unwrap_or(0),
        token: get("token").parse().unwrap_or(0),
        by: (!by_session.is_empty())
            .then(|| format!("{by_session}@{} pid {}", get("by_host"), get("by_pid"))),
        owner: get("owner"),
    }
}
