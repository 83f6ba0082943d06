//! The operator's views and tools: who holds what (`lock status`), what happened (`lock log`),
//! and the forced release (`lock break`), through each node's [`NodeAdmin`] view.

use std::collections::BTreeMap;
use std::collections::HashMap;

use serde::Serialize;

use crate::backend::{Eviction, KeyKind, LockView, Node, NodeAdmin, Queued};
use crate::coordinator::{Backend, Coordinator};
use crate::error::{Error, Result};
use crate::keys::LockKeys;

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
    /// For a slot (`lock run --slots`): the slot set's name (the lock is `<slot_of>#<slot>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot_of: Option<String>,
    /// For a slot: its index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot: Option<u32>,
    /// The waiters in line, first first, as the holder's node shows them (the table output
    /// lists them; the `--json` shape does not carry them).
    #[serde(skip)]
    pub queue: Vec<Queued>,
    /// The wait-for edges of its waiters whose process trees hold other locks: each says what
    /// that waiter holds (see [`crate::deadlock`]).
    /// (`--json` carries `edges` only when there are some, so the shape of a lock without
    /// nested waiters stays as it was.)
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub edges: Vec<crate::deadlock::Edge>,
}

/// One audit event, as `lock log` shows it. The `--json` output is an array of these, oldest
/// first.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AuditEvent {
    /// When, ms since the Unix epoch (coordinator's clock).
    pub at_ms: u64,
    /// `grant`, `release`, `expired`, `takeover`, `break`, `join` (a process joined the
    /// lease: the holder's fields, the joiner as `by`) or `deadlock` (a waiter gave up to break
    /// a cycle of waiters: its session, host and pid; see [`crate::deadlock`]).
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
    /// Who acted, for `takeover`, `break` and `join`: `session@host pid N`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// For a `grant`: how long the holder waited, ms, from its first ask to the grant (absent
    /// in records written before this field existed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
    /// The lease's owner id (one per grant): pairs a grant with its end.
    #[serde(skip)]
    pub(crate) owner: String,
}

/// The admin view of `node`, or why there is none.
pub(crate) fn admin_of(node: &dyn Node) -> Result<&dyn NodeAdmin> {
    node.admin()
        .ok_or_else(|| Error::internal(format!("node {} has no operator view", node.label())))
}

/// The lock names of `kind` on one node; a node that fails counts as unreachable.
pub(crate) async fn names_on(node: &dyn Node, ns: &str, kind: KeyKind) -> Result<Vec<String>> {
    admin_of(node)?
        .lock_names(ns, kind)
        .await
        .map_err(|e| Error::Unavailable {
            reachable: 0,
            total: 1,
            needed: 1,
            causes: vec![(node.label(), e.cause)],
        })
}

/// The work of [`Coordinator::status`].
pub(crate) async fn status(coordinator: &Coordinator) -> Result<Vec<LockStatus>> {
    let mut locks = holders(coordinator).await?;
    // Issue 24: each waiter's wait-for edge (what its tree holds), from src/deadlock.
    coordinator.attach_edges(&mut locks).await;
    Ok(locks)
}

async fn holders(coordinator: &Coordinator) -> Result<Vec<LockStatus>> {
    let ns = &coordinator.inner.config.namespace;
    let me = &coordinator.inner.identity;
    match &coordinator.inner.backend {
        Backend::Local(local) => Ok(local
            .held()?
            .into_iter()
            .map(|(name, h)| LockStatus {
                slot_of: slot_of(&name),
                slot: slot_index(&name),
                name,
                held_ms: h.held_for().as_millis() as u64,
                ttl_left_ms: None,
                waiters: 0,
                queue: Vec::new(),
                edges: Vec::new(),
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
            let mut found: BTreeMap<String, Vec<LockView>> = BTreeMap::new();
            let mut failures = Vec::new();
            for node in q.nodes() {
                let names = match names_on(node.as_ref(), ns, KeyKind::Lease).await {
                    Ok(n) => n,
                    Err(e) => {
                        failures.push(e);
                        continue;
                    }
                };
                let admin = admin_of(node.as_ref())?;
                for name in names {
                    if let Ok(Some(seen)) = admin.inspect(&LockKeys::new(ns, &name)).await {
                        found.entry(name).or_default().push(seen);
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
                        *by_owner.entry(s.holder.owner.as_str()).or_default() += 1;
                    }
                    let (owner, count) = by_owner.into_iter().max_by_key(|e| e.1)?;
                    let LockView {
                        pttl,
                        waiters,
                        queue,
                        holder: h,
                        ..
                    } = seen.iter().find(|s| s.holder.owner == owner)?.clone();
                    Some(LockStatus {
                        slot_of: slot_of(&name),
                        slot: slot_index(&name),
                        name,
                        held_ms: h.held_for().as_millis() as u64,
                        ttl_left_ms: Some(pttl.as_millis() as u64),
                        waiters,
                        queue,
                        edges: Vec::new(),
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

/// The work of [`Coordinator::log`].
pub(crate) async fn log(coordinator: &Coordinator, limit: usize) -> Result<Vec<AuditEvent>> {
    let ns = &coordinator.inner.config.namespace;
    let Backend::Redis(q) = &coordinator.inner.backend else {
        return Err(Error::usage(
            "no audit log without Redis: local locks keep no history",
        ));
    };
    let mut events: Vec<AuditEvent> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut failures = Vec::new();
    for node in q.nodes() {
        let names = match names_on(node.as_ref(), ns, KeyKind::Log).await {
            Ok(n) => n,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        let admin = admin_of(node.as_ref())?;
        for name in names {
            let entries = admin
                .read_log(&LockKeys::new(ns, &name), limit)
                .await
                .unwrap_or_default();
            for fields in entries {
                let e = event_from(&name, &fields);
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

/// The work of [`Coordinator::break_lock`].
pub(crate) async fn break_lock(coordinator: &Coordinator, name: &str) -> Result<BreakOutcome> {
    crate::slots::check_lock_or_slot_name(name)?;
    match &coordinator.inner.backend {
        Backend::Local(local) => {
            let holder = local.held()?.into_iter().find(|(n, _)| n == name);
            match holder {
                None => Ok(BreakOutcome::NotHeld),
                Some((_, h)) => Err(Error::usage(format!(
                    "'{name}' is a local lock held by pid {} on {}: the kernel releases it \
                     when that process exits; stop the process instead",
                    h.pid,
                    crate::shown::field(&h.host)
                ))),
            }
        }
        Backend::Redis(q) => {
            let keys = LockKeys::new(&coordinator.inner.config.namespace, name);
            let (mut seen, mut broken) = (false, false);
            for node in q.nodes() {
                let holder = match admin_of(node.as_ref())?.inspect(&keys).await {
                    Ok(Some(view)) if !view.holder.owner.is_empty() => view.holder,
                    _ => continue,
                };
                seen = true;
                let ev = Eviction {
                    keys: keys.clone(),
                    expected_owner: holder.owner,
                    event: "break",
                    by: coordinator.inner.identity.clone(),
                    log_cap: coordinator.inner.config.log_cap,
                };
                broken |= matches!(node.evict(&ev).await, Ok(true));
            }
            Ok(match (seen, broken) {
                (_, true) => BreakOutcome::Broken,
                (false, false) => BreakOutcome::NotHeld,
                (true, false) => BreakOutcome::ChangedHands,
            })
        }
    }
}

/// What [`Coordinator::break_lock`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakOutcome {
    /// The holder's lease was ended (on every node that showed it and still had it).
    Broken,
    /// Nobody held the lock.
    NotHeld,
    /// The holder that was read had already gone when the break arrived (released, expired,
    /// or taken over), and whoever holds the lock now keeps it: nothing was broken.
    ChangedHands,
}

fn slot_of(lock: &str) -> Option<String> {
    crate::keys::parse_slot_lock_name(lock).map(|(set, _)| set.to_owned())
}

fn slot_index(lock: &str) -> Option<u32> {
    crate::keys::parse_slot_lock_name(lock).map(|(_, i)| i)
}

pub(crate) fn event_from(name: &str, fields: &[(String, String)]) -> AuditEvent {
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
        wait_ms: get("wait_ms").parse().ok(),
        owner: get("owner"),
    }
}

/// What `lock status --json` prints.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StatusReport {
    /// The namespace the locks live in; null when a repository on Redis has locked nothing yet
    /// (its namespace is written by the first lock).
    pub namespace: Option<String>,
    /// `redis` or `local`.
    pub backend: &'static str,
    /// Every held lock.
    pub locks: Vec<LockStatus>,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::config::{Config, parse_nodes};
    use crate::fake_node::FakeNode;
    use crate::holder::{HolderInfo, Identity};

    /// A break on a node whose lock was held by `seen` when inspected and is held by `now`
    /// when the eviction arrives: what it did, and every owner it was asked to evict.
    async fn break_on(seen: Option<&str>, now: Option<&str>) -> (BreakOutcome, Vec<String>) {
        let node = FakeNode::builder()
            .admin()
            .shifts_after_inspect(now)
            .build();
        if let Some(owner) = seen {
            let keys = LockKeys::new("ns", "L");
            node.hold_at(&keys, owner, Duration::from_secs(1), HolderInfo::default());
        }
        let config = Config::new(parse_nodes(&["redis://127.0.0.1:1"]).unwrap());
        let c = Coordinator::with_nodes(
            config,
            Identity::current("test"),
            vec![node.clone() as Arc<dyn Node>],
        );
        let outcome = c.break_lock("L").await.unwrap();
        let asked = node.state().evicts_asked.clone();
        (outcome, asked)
    }

    #[tokio::test]
    async fn a_break_evicts_the_holder_it_read_and_no_one_else() {
        assert_eq!(
            break_on(Some("a"), Some("a")).await,
            (BreakOutcome::Broken, vec!["a".to_owned()])
        );
        // The holder read went away and another took the lock before the eviction arrived.
        assert_eq!(
            break_on(Some("a"), Some("b")).await,
            (BreakOutcome::ChangedHands, vec!["a".to_owned()])
        );
        assert_eq!(
            break_on(None, Some("b")).await,
            (BreakOutcome::NotHeld, Vec::new())
        );
    }
}
