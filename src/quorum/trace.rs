//! A debug trace of the wait loop and of each Redlock attempt, one line per event on stderr,
//! when the environment sets `TRACTATUS_DEBUG_ACQUIRE=1`: to see why a waiter is not granted
//! a lock that looks free (which master answered what, how long each took, what pause came
//! next). Off, it costs one load of a cached flag per attempt; nothing is formatted.
//!
//! The library prints nothing otherwise; this is an operator's switch for a hunt, never on by
//! default, and it names only ids, counts and durations (no holder's command line).

use std::sync::OnceLock;
use std::time::Duration;

use crate::backend::{GrantReply, NodeError};

/// Whether the trace is on (read once per process).
pub(crate) fn on() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        std::env::var_os("TRACTATUS_DEBUG_ACQUIRE").is_some_and(|v| !v.is_empty() && v != "0")
    })
}

/// One line of the trace, with the process id and the time since the epoch in milliseconds
/// (to line up the traces of several processes).
pub(crate) fn line(what: std::fmt::Arguments<'_>) {
    let ms = crate::clock::epoch_micros() / 1000;
    eprintln!(
        "tractatus-debug {} {}.{:03}: {what}",
        std::process::id(),
        ms / 1000,
        ms % 1000
    );
}

/// A short form of an id (its first 8 characters): enough to follow one through a trace.
pub(crate) fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// What one node answered to a grant, and after how long.
pub(crate) fn answer(reply: &Result<GrantReply, NodeError>, took: Duration) -> String {
    let ms = took.as_millis();
    match reply {
        Ok(GrantReply::Granted { token }) => format!("granted {token} in {ms}ms"),
        Ok(GrantReply::Refused { pttl, holder, head }) => format!(
            "refused pttl {}ms holder {} head {} in {ms}ms",
            pttl.as_millis(),
            if holder.owner.is_empty() {
                "-"
            } else {
                short(&holder.owner)
            },
            head.as_ref().map_or("-", |h| short(&h.owner)),
        ),
        Ok(GrantReply::Quarantined { left }) => {
            format!("quarantined {}ms in {ms}ms", left.as_millis())
        }
        Err(e) if e.timed_out => format!("timed out in {ms}ms"),
        // The cause may carry a server's text: escaped, as everything printed of others'.
        Err(e) => format!("failed in {ms}ms: {}", crate::shown::escape(&e.cause)),
    }
}

/// An attempt's outcome in a few words: the variant, and who it named.
pub(crate) fn outcome(a: &super::Attempt) -> String {
    use super::Attempt;
    let who = |h: Option<&crate::holder::HolderInfo>| h.map_or("-", |h| short(&h.owner)).to_owned();
    match a {
        Attempt::Granted { token, .. } => format!("Granted {token}"),
        Attempt::Held {
            pttl,
            holder,
            head,
            undone,
        } => format!(
            "Held pttl {}ms holder {} head {} undone {undone}",
            pttl.as_millis(),
            who(holder.as_ref()),
            who(head.as_deref())
        ),
        Attempt::Quarantined { left, nodes } => {
            format!("Quarantined {}ms on {nodes}", left.as_millis())
        }
        Attempt::Split { holder } => format!("Split holder {}", who(holder.as_ref())),
        Attempt::Unavailable { reachable, .. } => format!("Unavailable ({reachable} reachable)"),
    }
}
