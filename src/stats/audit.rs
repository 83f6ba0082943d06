//! Reading the audit logs whole for `lock stats` and `tractatus metrics`: every lock's stream
//! (or one lock's) on every node, one record per event however many nodes wrote it.

use std::collections::HashSet;

use crate::backend::KeyKind;
use crate::coordinator::{Backend, Coordinator};
use crate::error::Result;
use crate::keys::LockKeys;
use crate::ops::{AuditEvent, admin_of, event_from, names_on};

/// The work of [`Coordinator::audit`].
pub(crate) async fn audit(
    coordinator: &Coordinator,
    only: Option<&str>,
) -> Result<Option<Vec<AuditEvent>>> {
    let ns = &coordinator.inner.config.namespace;
    let Backend::Redis(q) = &coordinator.inner.backend else {
        return Ok(None);
    };
    if let Some(name) = only {
        crate::slots::check_lock_or_slot_name(name)?;
    }
    // The whole log: it is capped at `log_cap` (and MAXLEN ~ may keep a little more).
    let limit = (coordinator.inner.config.log_cap as usize).saturating_mul(2);
    let mut events: Vec<AuditEvent> = Vec::new();
    let mut seen = HashSet::new();
    let mut failures = Vec::new();
    for node in q.nodes() {
        let names = match only {
            Some(name) => vec![name.to_owned()],
            None => match names_on(node.as_ref(), ns, KeyKind::Log).await {
                Ok(n) => n,
                Err(e) => {
                    failures.push(e);
                    continue;
                }
            },
        };
        let admin = admin_of(node.as_ref())?;
        // A key planted under another name (anyone who can write to Redis can) is not a
        // lock of ours: it would only add labels and lines nobody locked.
        for name in names
            .into_iter()
            .filter(|n| crate::slots::check_lock_or_slot_name(n).is_ok())
        {
            let entries = match admin.read_log(&LockKeys::new(ns, &name), limit).await {
                Ok(entries) => entries,
                Err(e) => {
                    failures.push(crate::Error::Unavailable {
                        reachable: 0,
                        total: 1,
                        needed: 1,
                        causes: vec![(node.label(), e.cause)],
                    });
                    break;
                }
            };
            for fields in entries {
                let e = event_from(&name, &fields);
                // One lease's grant (or end) is written by every node that granted it.
                if seen.insert((
                    e.event.clone(),
                    e.name.clone(),
                    e.owner.clone(),
                    e.by.clone(),
                )) {
                    events.push(e);
                }
            }
        }
    }
    if failures.len() > q.nodes().len() - q.needed() {
        return Err(failures.remove(0));
    }
    // Stable: the events of one lock keep their stream order within a millisecond.
    events.sort_by_key(|e| e.at_ms);
    Ok(Some(events))
}
