//! `lock run --slots N`: up to N runs at once, each on its own slot with its own fencing, the
//! next one woken when a slot is let go; on one Redis, on Redlock and on local file locks.
//!
//! Split by sub-feature (issue 22): the slot runner and its checks (used by `cluster` too) stay
//! here; `sharing` (runs sharing slots), `failures` (killed holders, bad requests).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::support::{
    Guard, RedisServer, Repo, now_ns, run, run_timed, signal, tractatus, wait_until,
};

mod failures;
mod sharing;

/// The command of every run: note (slot, start, token), hold for `$2` seconds, note the end.
/// Each run writes a file of its own, `$1`.
const HOLD: &str = r#"echo "start $TRACTATUS_SLOT $(date +%s%N) $TRACTATUS_FENCING_TOKEN $TRACTATUS_LOCK_NAME" >> "$1"
sleep "$2"
echo "end $TRACTATUS_SLOT $(date +%s%N) $TRACTATUS_FENCING_TOKEN" >> "$1""#;

/// `tractatus [--redis URL]... FLAGS lock run --name test-db --slots N -- sh -c HOLD sh FILE SECS`;
/// local file locks when `urls` is empty.
fn slot_run(
    repo: &Path,
    urls: &[String],
    flags: &[&str],
    n: u32,
    file: &Path,
    secs: &str,
) -> Command {
    let mut c = tractatus(repo);
    for u in urls {
        c.args(["--redis", u]);
    }
    // A TTL longer than the restart quarantine is refused: lift the quarantine with it.
    c.env("TRACTATUS_QUARANTINE", "60s")
        .args(flags)
        .args([
            "lock",
            "run",
            "--name",
            "test-db",
            "--slots",
            &n.to_string(),
        ])
        .args(["--", "sh", "-c", HOLD, "sh"])
        .arg(file)
        .arg(secs);
    c
}

/// One slot run as its file tells: slot, start and end (ns since the epoch), token, lock name.
#[derive(Debug, Clone)]
pub(crate) struct Hold {
    pub(crate) run: usize,
    pub(crate) slot: u32,
    pub(crate) start: u128,
    pub(crate) end: Option<u128>,
    pub(crate) token: u64,
    pub(crate) lock: String,
}

/// The record a run's command wrote: `start SLOT NS TOKEN [LOCK]`, then `end SLOT NS ...`.
pub(crate) fn read_hold(run: usize, file: &Path) -> Option<Hold> {
    let text = std::fs::read_to_string(file).ok()?;
    let mut hold: Option<Hold> = None;
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.first().copied() {
            Some("start") => {
                hold = Some(Hold {
                    run,
                    slot: w[1].parse().ok()?,
                    start: w[2].parse().ok()?,
                    end: None,
                    token: w[3].parse().ok()?,
                    lock: w.get(4).map(|s| s.to_string()).unwrap_or_default(),
                })
            }
            Some("end") => hold.as_mut()?.end = w[2].parse().ok(),
            _ => {}
        }
    }
    hold
}

fn ms(ns: u128) -> f64 {
    ns as f64 / 1e6
}

/// The TTL of the leases in the six-runs tests. A waiter that missed a release (no event
/// heard, no holder seen gone) tries again only when the lease it last saw would have run
/// out: about this long after it looked, many seconds after the runs of one second end.
pub(crate) const SIX_RUNS_TTL: &str = "30s";

/// How soon after its slot was let go a waiter must start to have been woken by that release
/// rather than by the lease's TTL ([`SIX_RUNS_TTL`]): a sixth of it, so that neither a loaded
/// machine (a start takes up to a few hundred ms there) nor a missed release can pass for the
/// other.
pub(crate) const WOKEN_BY_RELEASE_MS: f64 = 5000.0;

/// Asserts that each of `gaps` (ms from a slot's release to its next run's start) was a wake-up
/// by the release (see [`WOKEN_BY_RELEASE_MS`]).
pub(crate) fn assert_woken_by_release(what: &str, gaps: &[f64]) {
    for g in gaps {
        assert!(
            *g < WOKEN_BY_RELEASE_MS,
            "{what}: a waiter started {g:.1} ms after its slot was freed: not woken by the \
             release, but by the lease's TTL ({SIX_RUNS_TTL})"
        );
    }
}

/// The checks of six runs on four slots: never more than four at once (and four reached), no
/// two runs on one slot at once, each slot's tokens rising from holder to holder, and the
/// fifth and sixth to start each waited for a slot: how long after it was let go they started
/// (ms). Returns the most at once and those two delays.
pub(crate) fn check_four_slots(holds: &[Hold]) -> (i32, Vec<f64>) {
    let end = |h: &Hold| h.end.unwrap();

    // Never more than four at once (an end and a start at one instant: the end first).
    let mut events: Vec<(u128, i32)> = holds
        .iter()
        .flat_map(|h| [(h.start, 1), (end(h), -1)])
        .collect();
    events.sort();
    let (mut now, mut most) = (0, 0);
    for (_, d) in &events {
        now += d;
        most = most.max(now);
    }
    assert!(most <= 4, "{most} runs held at once: {holds:#?}");
    assert_eq!(
        most, 4,
        "the four slots were never held at once: {holds:#?}"
    );

    // No two holders of one slot at once; each slot's tokens rise from holder to holder.
    for a in holds {
        for b in holds.iter().filter(|b| b.run != a.run && b.slot == a.slot) {
            assert!(
                end(a) <= b.start || end(b) <= a.start,
                "two runs on slot {} at once: {a:?} {b:?}",
                a.slot
            );
            if a.start < b.start {
                assert!(
                    a.token < b.token,
                    "slot {} token went back: {a:?} {b:?}",
                    a.slot
                );
            }
        }
    }

    // The fifth and sixth to start waited, and started right after their slot was let go.
    let mut by_start = holds.to_vec();
    by_start.sort_by_key(|h| h.start);
    let mut gaps = Vec::new();
    for late in &by_start[4..] {
        let freed_by = holds
            .iter()
            .filter(|h| h.slot == late.slot && h.run != late.run && end(h) <= late.start)
            .max_by_key(|h| end(h))
            .unwrap_or_else(|| panic!("run {} did not wait for a slot: {holds:#?}", late.run));
        gaps.push(ms(late.start - end(freed_by)));
    }
    (most, gaps)
}
