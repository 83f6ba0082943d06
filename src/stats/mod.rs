//! How locking goes over time, from the audit log: per lock, grants, wait and hold times
//! (percentiles), contention, lost leases, breaks, evictions and joins (`lock stats`), and the
//! same events fed once each to the Prometheus counters (`tractatus metrics`).
//!
//! - `audit`: reading every lock's audit log, one record per event however many nodes hold it.
//! - `nodes`: each Redis node's reachability, round trip and restart quarantine.
//! - `report`: the shape of `lock status --json` (and Node's `lockStatus()`).
//!
//! A grant's wait is its record's `wait_ms` (written since issue 21: from the holder's first ask
//! to the grant; older grants have none and count without a wait). A hold is the time between
//! a grant and the release, break or takeover of the same lease (the same owner id), both read
//! from the log: a lease whose grant fell off the capped log has no hold. A lease that expired
//! (its holder stopped renewing) is a lost lease and has no hold either: its record is written
//! when the next grant notices, not when it ran out.

pub(crate) mod audit;
pub(crate) mod nodes;

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::ops::AuditEvent;

pub use crate::ops::StatusReport;
pub use nodes::NodeHealth;

/// A grant whose wait reached this many ms had to wait (the lock was held or queued when it
/// first asked); below it, the wait is the round trip of a free lock.
pub const CONTENDED_MS: u64 = 10;

/// Percentiles of a set of durations, ms (nearest rank: the smallest value with at least that
/// share of the values at or below it).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Summary {
    /// How many values.
    pub count: usize,
    /// Median.
    pub p50_ms: u64,
    /// 95th percentile.
    pub p95_ms: u64,
    /// 99th percentile.
    pub p99_ms: u64,
    /// Largest.
    pub max_ms: u64,
}

impl Summary {
    /// The summary of `values` (sorted here); `None` when there are none.
    pub fn of(values: &[u64]) -> Option<Summary> {
        let mut v = values.to_vec();
        v.sort_unstable();
        let at = |p: usize| {
            // ceil(p% of n) - 1, in integers.
            let rank = (p * v.len()).div_ceil(100).max(1);
            v[rank - 1]
        };
        let max = *v.last()?;
        Some(Summary {
            count: v.len(),
            p50_ms: at(50),
            p95_ms: at(95),
            p99_ms: at(99),
            max_ms: max,
        })
    }
}

/// One lock's figures, as `lock stats` shows them (`--json`: an array of these).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LockStats {
    /// Lock name.
    pub name: String,
    /// Grants counted.
    pub grants: u64,
    /// Grants whose wait reached [`CONTENDED_MS`].
    pub contended: u64,
    /// `contended` over the grants that recorded a wait (0 when none did).
    pub contention: f64,
    /// Waits of the grants that recorded one.
    pub wait: Option<Summary>,
    /// Holds that ended by a release, a break or a takeover.
    pub hold: Option<Summary>,
    /// Leases that expired while held (their holder stopped renewing).
    pub lost_leases: u64,
    /// Leases ended by `lock break`.
    pub breaks: u64,
    /// Leases of dead holders taken over by a waiter on their host.
    pub evictions: u64,
    /// Processes that joined a held lease.
    pub joins: u64,
    /// Each wait counted, ms, oldest first (for the histogram and the sparkline).
    #[serde(skip)]
    pub waits_ms: Vec<u64>,
    /// Each hold counted, ms, oldest first.
    #[serde(skip)]
    pub holds_ms: Vec<u64>,
}

impl LockStats {
    fn new(name: &str) -> LockStats {
        LockStats {
            name: name.to_owned(),
            grants: 0,
            contended: 0,
            contention: 0.0,
            wait: None,
            hold: None,
            lost_leases: 0,
            breaks: 0,
            evictions: 0,
            joins: 0,
            waits_ms: Vec::new(),
            holds_ms: Vec::new(),
        }
    }
}

/// The figures of each lock over the events `counted` picks out of `events` (oldest first;
/// `counted` gets each event's index and the event; the others still pair a counted end with
/// its grant). Locks without a counted event are left
/// out.
pub fn lock_stats(
    events: &[AuditEvent],
    counted: impl Fn(usize, &AuditEvent) -> bool,
) -> Vec<LockStats> {
    let granted: HashMap<(&str, &str), u64> = events
        .iter()
        .filter(|e| e.event == "grant")
        .map(|e| ((e.name.as_str(), e.owner.as_str()), e.at_ms))
        .collect();
    let mut by_lock: BTreeMap<&str, LockStats> = BTreeMap::new();
    for (_, e) in events.iter().enumerate().filter(|(i, e)| counted(*i, e)) {
        let s = by_lock
            .entry(e.name.as_str())
            .or_insert_with(|| LockStats::new(&e.name));
        match e.event.as_str() {
            "grant" => {
                s.grants += 1;
                if let Some(w) = e.wait_ms {
                    s.waits_ms.push(w);
                    s.contended += u64::from(w >= CONTENDED_MS);
                }
            }
            "expired" => s.lost_leases += 1,
            "join" => s.joins += 1,
            _ => {}
        }
        match e.event.as_str() {
            "break" => s.breaks += 1,
            "takeover" => s.evictions += 1,
            _ => {}
        }
        if matches!(e.event.as_str(), "release" | "break" | "takeover")
            && let Some(start) = granted.get(&(e.name.as_str(), e.owner.as_str()))
        {
            s.holds_ms.push(e.at_ms.saturating_sub(*start));
        }
    }
    by_lock
        .into_values()
        .map(|mut s| {
            s.wait = Summary::of(&s.waits_ms);
            s.hold = Summary::of(&s.holds_ms);
            if !s.waits_ms.is_empty() {
                s.contention = s.contended as f64 / s.waits_ms.len() as f64;
            }
            s
        })
        .collect()
}

/// The audit events not seen by the previous call: what a long-running exporter adds to its
/// counters at each scrape. The log is capped, so only the events it still holds are
/// remembered (memory stays bounded by the logs' length).
#[derive(Debug, Default)]
pub struct Fresh {
    seen: HashSet<EventKey>,
}

type EventKey = (String, String, String, Option<String>);

fn key_of(e: &AuditEvent) -> EventKey {
    (
        e.event.clone(),
        e.name.clone(),
        e.owner.clone(),
        e.by.clone(),
    )
}

impl Fresh {
    /// Nothing seen yet: the first call finds every event new.
    pub fn new() -> Fresh {
        Fresh::default()
    }

    /// Which of `events` (the logs as read now) are new since the last call.
    pub fn mark(&mut self, events: &[AuditEvent]) -> Vec<bool> {
        let now: HashSet<EventKey> = events.iter().map(key_of).collect();
        let new = events
            .iter()
            .map(|e| !self.seen.contains(&key_of(e)))
            .collect();
        self.seen = now;
        new
    }
}

/// The events among `events` at or after `since_ms` (ms since the epoch).
pub fn since(since_ms: u64) -> impl Fn(usize, &AuditEvent) -> bool {
    move |_, e| e.at_ms >= since_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: &str, owner: &str, at_ms: u64, wait_ms: Option<u64>) -> AuditEvent {
        let fields: Vec<(String, String)> = [
            ("event", event.to_owned()),
            ("owner", owner.to_owned()),
            ("at", at_ms.to_string()),
        ]
        .into_iter()
        .chain(wait_ms.map(|w| ("wait_ms", w.to_string())))
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        crate::ops::event_from("L", &fields)
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        let s = Summary::of(&v).unwrap();
        assert_eq!((s.p50_ms, s.p95_ms, s.p99_ms, s.max_ms), (50, 95, 99, 100));
        assert_eq!(Summary::of(&[7]).unwrap().p50_ms, 7);
        assert_eq!(Summary::of(&[]), None);
    }

    #[test]
    fn holds_pair_a_grant_with_the_end_of_the_same_lease_and_old_grants_have_no_wait() {
        let events = vec![
            ev("grant", "a", 1000, None),
            ev("grant", "b", 1500, Some(300)),
            ev("release", "a", 1200, None),
            ev("expired", "b", 9000, None),
            ev("grant", "c", 9000, Some(2)),
            ev("break", "c", 9100, None),
        ];
        let s = &lock_stats(&events, |_, _| true)[0];
        assert_eq!(
            (s.grants, s.contended, s.lost_leases, s.breaks),
            (3, 1, 1, 1)
        );
        assert_eq!(s.waits_ms, vec![300, 2]);
        assert_eq!(s.holds_ms, vec![200, 100]);
        assert_eq!(s.contention, 0.5);
    }

    #[test]
    fn fresh_finds_each_event_new_once() {
        let mut f = Fresh::new();
        let first = vec![ev("grant", "a", 1, None)];
        assert_eq!(f.mark(&first), vec![true]);
        let second = vec![ev("grant", "a", 1, None), ev("release", "a", 2, None)];
        assert_eq!(f.mark(&second), vec![false, true]);
    }
}
