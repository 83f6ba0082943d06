//! Deadlock detection across processes: a cycle of waiters is found in milliseconds, named,
//! and broken by one rule every waiter applies alike.
//!
//! Inside one call there is no deadlock (`lock run --file X --file Y` and `withLock` take
//! their locks in sorted order); across processes nested calls make cycles easy: a hook under
//! `lock run --file x.json` updates `y.json` while another session's hook under `lock run
//! --file y.json` updates `x.json`. Each waits for the other's ancestor.
//!
//! # Edges
//! A waiter whose process tree holds leases (inherited in `crate::join::ENV_VAR`, or the
//! enclosing `withLock` scopes of a Node caller, [`crate::AcquireOptions::holding`]) records,
//! beside its place in the queue, an [`Edge`]: "holding A (owner, token), waiting for B". On
//! Redis the edge lives in the hash slot of B (`keys::LockKeys::waitfor`, written by
//! `lua/wait_for.lua`) and counts only while the waiter's registration in B's queue lives (the
//! queue's heartbeat): a waiter that was granted, left or died counts for nothing. Locally the
//! edge is a file in the lock directory that its waiter keeps `flock`ed (`local.rs`): the kernel
//! says whether it still waits. A caller that holds nothing records nothing and reads nothing:
//! an uncontended or unnested acquire pays nothing.
//!
//! # Walk
//! On every refusal (and so whenever B's holder changes, and at each heartbeat of the queue)
//! the waiter walks the edges backwards from what it holds: who waits for A (an edge in A's
//! slot), what that waiter's tree holds, who waits for that, ... one read per hop, at most
//! `walk::MAX_HOPS` hops and `walk::MAX_READS` reads. A hop counts only when the lock's
//! current holder is the one the edge names (its owner id on Redis, its token locally): an edge
//! whose holding ended is stale. The walk closes a cycle when it reaches a waiter whose tree
//! holds B under B's current owner. On Redlock every read goes to every master and an owner or
//! an edge counts only when a majority of masters agree on it.
//!
//! # Victim
//! Every member of the cycle is a waiter that walks. The one whose queue place is the youngest
//! (the highest place, chosen once at its first ask; the higher waiter id on a tie) gives up;
//! the others wait on, and the victim's leaving (and its holder's release) ends the cycle. A
//! victim gives up only when a second walk, at least [`CONFIRM_AFTER`] later, finds a cycle
//! through it with it still the youngest: a cycle seen across a release in flight is not
//! confirmed. It fails with [`crate::Error::Deadlock`] (exit 75), naming the cycle, and its
//! lock's audit log records a `deadlock`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::Lease;
use crate::error::Error;
use crate::holder::{HolderInfo, Identity};

pub(crate) mod local;
pub(crate) mod redis;
pub(crate) mod status;
pub(crate) mod walk;

/// How long after a first walk found a cycle a second walk must confirm it.
pub const CONFIRM_AFTER: Duration = Duration::from_millis(100);

/// How often a local waiter that holds locks walks again (a local wait has no queue heartbeat).
pub(crate) const LOCAL_WALK_EVERY: Duration = Duration::from_millis(150);

pub use crate::options::Holding;

impl Lease {
    /// What this lease holds, as a wait-for edge names it: pass it in
    /// [`crate::AcquireOptions::holding`] when waiting for another lock under it.
    pub fn holding(&self) -> Holding {
        let grant = self.grant();
        let local = grant.scope.starts_with("local:");
        Holding {
            name: grant.name,
            owner: if local { String::new() } else { grant.owner },
            token: grant.token,
        }
    }
}

/// One waiter's wait-for edge: its tree holds `holding` and it waits for `waits_for`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edge {
    /// The waiter's id (its queue entry).
    pub waiter: String,
    /// Its place in line (microseconds since the epoch at its first ask).
    pub place: u64,
    /// Its session.
    pub session: String,
    /// Its host.
    pub host: String,
    /// Its pid.
    pub pid: u32,
    /// The lock it waits for.
    pub waits_for: String,
    /// What its process tree holds.
    pub holding: Vec<Holding>,
}

/// The longest edge text read back: a few hundred bytes are ours; a longer one was planted.
pub(crate) const EDGE_MAX: usize = 16 * 1024;

impl Edge {
    pub(crate) fn text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The edge of `text` when it is one, stored for `waiter` (an edge claiming another
    /// waiter's id is not one).
    pub(crate) fn parse(waiter: &str, text: &str) -> Option<Edge> {
        if text.len() > EDGE_MAX {
            return None;
        }
        let edge: Edge = serde_json::from_str(text).ok()?;
        (edge.waiter == waiter).then_some(edge)
    }

    /// The order of the victim rule: the youngest place last (ties: the higher waiter id).
    fn age_key(&self) -> (u64, &str) {
        (self.place, &self.waiter)
    }
}

/// Who holds a lock now, as one read tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeldBy {
    /// The Redis lease with this owner id.
    Owner(String),
    /// The local lock with this token in its holder record.
    Token(u64),
}

impl HeldBy {
    /// True when `h` still holds what it names.
    pub(crate) fn is(&self, h: &Holding) -> bool {
        match self {
            HeldBy::Owner(o) => !h.owner.is_empty() && *o == h.owner,
            HeldBy::Token(t) => h.owner.is_empty() && *t == h.token,
        }
    }
}

/// A cycle through this waiter: its own edge, then each other waiter met walking back, each
/// with the lock it waits for and its holder as recorded there.
#[derive(Debug, Clone)]
pub(crate) struct Cycle {
    pub(crate) me: Edge,
    /// The holder of the lock this waiter waits for (as its refusal named it).
    pub(crate) waited_holder: Option<HolderInfo>,
    /// The others, from the one whose tree holds what this waiter waits for, back to the one
    /// that waits for what this waiter's tree holds.
    pub(crate) others: Vec<Edge>,
}

impl Cycle {
    /// True when this waiter is the one the rule picks to give up: the youngest place.
    pub(crate) fn victim_is_me(&self) -> bool {
        self.others.iter().all(|o| o.age_key() < self.me.age_key())
    }

    /// The cycle for people, every other process's text escaped.
    pub(crate) fn describe(&self) -> String {
        use crate::shown::field;
        let names = |e: &Edge| {
            let held: Vec<String> = e
                .holding
                .iter()
                .map(|h| format!("'{}'", field(&h.name)))
                .collect();
            held.join(", ")
        };
        let who = |e: &Edge| {
            format!(
                "session {} on {} pid {}",
                field(&e.session),
                field(&e.host),
                e.pid
            )
        };
        let mut out = format!(
            "this process ({}) holds {} and waits for '{}'",
            who(&self.me),
            names(&self.me),
            field(&self.me.waits_for)
        );
        if let Some(h) = &self.waited_holder {
            out.push_str(&format!(
                ", held by session {} on {} pid {}",
                field(&h.session),
                field(&h.host),
                h.pid
            ));
        }
        // From the tree holding what we wait for, round to the one waiting for what we hold.
        for o in &self.others {
            out.push_str(&format!(
                "; {} holds {} and waits for '{}'",
                who(o),
                names(o),
                field(&o.waits_for)
            ));
        }
        out.push_str(&format!(
            " (a cycle of {} waits: this one, the youngest in line, gives up so the others \
             go on; run it again once they are done)",
            self.others.len() + 1
        ));
        out
    }
}

/// What a wait keeps between its walks: its edge and a cycle seen but not yet confirmed.
pub(crate) struct Suspicion {
    since: Option<Instant>,
}

impl Suspicion {
    pub(crate) fn new() -> Self {
        Suspicion { since: None }
    }

    /// The outcome of one walk: `Some(cycle)` when this waiter must give up now (a cycle
    /// through it, it the victim, seen by a walk at least [`CONFIRM_AFTER`] before this one).
    pub(crate) fn judge(&mut self, found: Option<Cycle>) -> Option<Cycle> {
        let Some(cycle) = found.filter(Cycle::victim_is_me) else {
            self.since = None;
            return None;
        };
        let now = Instant::now();
        match self.since {
            Some(first) if now.duration_since(first) >= CONFIRM_AFTER => Some(cycle),
            Some(_) => None,
            None => {
                self.since = Some(now);
                None
            }
        }
    }
}

/// The error a confirmed cycle ends a wait with.
pub(crate) fn error(name: &str, cycle: &Cycle) -> Error {
    Error::Deadlock {
        name: name.to_owned(),
        cycle: cycle.describe(),
    }
}

/// The edge of a wait for `name` by `identity`, holding `holding`.
pub(crate) fn edge_of(
    identity: &Identity,
    waiter: &str,
    place: u64,
    name: &str,
    holding: Vec<Holding>,
) -> Edge {
    Edge {
        waiter: waiter.to_owned(),
        place,
        session: identity.session.clone(),
        host: identity.host.clone(),
        pid: identity.pid,
        waits_for: name.to_owned(),
        holding,
    }
}

/// What the caller's tree holds in `scope`, other than `name`: the leases inherited in
/// `crate::join::ENV_VAR` and those the caller names in its options. Empty: nothing to
/// record, nothing to walk.
pub(crate) fn holdings(scope: &str, name: &str, extra: &[Holding]) -> Vec<Holding> {
    let local = scope.starts_with("local:");
    let mut out: Vec<Holding> = Vec::new();
    let inherited = crate::join::Capability::inherited()
        .grants()
        .iter()
        .filter(|g| g.scope == scope)
        .map(|g| Holding {
            name: g.name.clone(),
            owner: if local {
                String::new()
            } else {
                g.owner.clone()
            },
            token: g.token,
        });
    for h in inherited.chain(extra.iter().cloned()) {
        if h.name != name && !out.iter().any(|o| o.name == h.name) {
            out.push(h);
        }
    }
    out
}
