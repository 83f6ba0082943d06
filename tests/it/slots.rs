//! `lock run --slots N`: up to N runs at once, each on its own slot with its own fencing, the
//! next one woken when a slot is let go; on one Redis, on Redlock and on local file locks.
//!
//! Over 500 lines: one module per feature, whose tests share the helpers at its top; issue 22
//! splits it by sub-feature.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;

use crate::support::{Guard, RedisServer, Repo, run, run_timed, signal, tractatus, wait_until};

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

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn ms(ns: u128) -> f64 {
    ns as f64 / 1e6
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

/// Six runs of about 1 s on four slots, started at once: at most four hold at once, never two
/// on one slot, each slot's tokens rise, and the fifth and sixth start right after a slot is
/// let go. Returns the two gaps (ms) from the freeing run's end to their start.
fn six_runs_on_four_slots(urls: &[String], what: &str) -> Vec<f64> {
    let repo = Repo::new();
    let work = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = (0..6)
        .map(|k| work.path().join(format!("run{k}")))
        .collect();
    let threads: Vec<_> = files
        .iter()
        .map(|f| {
            let mut c = slot_run(&repo.path(), urls, &["--wait", "30s"], 4, f, "1");
            std::thread::spawn(move || run_timed(&mut c, Duration::from_secs(60)))
        })
        .collect();
    for t in threads {
        let r = t.join().unwrap();
        assert_eq!(r.code, 0, "a run failed: {}", r.describe());
    }
    let holds: Vec<Hold> = files
        .iter()
        .enumerate()
        .map(|(k, f)| read_hold(k, f).unwrap_or_else(|| panic!("run {k} left no record")))
        .collect();
    for h in &holds {
        assert!(h.end.is_some(), "run {} did not finish: {h:?}", h.run);
        assert!(h.slot < 4, "{h:?}");
        assert_eq!(h.lock, format!("test-db#{}", h.slot), "{h:?}");
    }
    let (most, gaps) = check_four_slots(&holds);
    println!(
        "{what}: 6 runs on 4 slots: at most {most} at once; the 5th and 6th started {:.1} ms \
         and {:.1} ms after their slot's holder ended",
        gaps[0], gaps[1]
    );
    for g in &gaps {
        assert!(
            *g < 100.0,
            "{what}: a waiter started {g:.1} ms after its slot was freed"
        );
    }
    gaps
}

#[test]
fn six_runs_share_four_slots_on_one_redis() {
    let redis = RedisServer::start();
    six_runs_on_four_slots(&[redis.url()], "one Redis");
}

#[test]
fn six_runs_share_four_slots_on_local_locks() {
    six_runs_on_four_slots(&[], "local locks");
}

#[test]
fn six_runs_share_four_slots_on_redlock() {
    let masters = crate::support::cluster(3);
    let urls: Vec<String> = masters.iter().map(|m| m.url()).collect();
    six_runs_on_four_slots(&urls, "Redlock, 3 masters");
}

/// Threads of `pid` blocked in `flock(2)` (x86-64 syscall 73), or `None` where that cannot
/// be told.
fn threads_in_flock(pid: u32) -> Option<usize> {
    if !cfg!(target_arch = "x86_64") {
        return None;
    }
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    Some(
        tasks
            .flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("syscall"))
                    .is_ok_and(|s| s.split_whitespace().next() == Some("73"))
            })
            .count(),
    )
}

/// How many subscribers each channel has on `url`.
fn subscribers(url: &str, channels: &[String]) -> Vec<i64> {
    let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
    let mut c = redis::cmd("PUBSUB");
    c.arg("NUMSUB").arg(channels);
    let pairs: Vec<(String, i64)> = c.query(&mut conn).unwrap();
    pairs.into_iter().map(|p| p.1).collect()
}

/// Four holders of long runs; `lock status` shows the four slots; a fifth run waits; one
/// holder is SIGKILLed: the fifth gets its slot as soon as the killed run's group is gone,
/// long before the 30 s TTL.
fn a_killed_holders_slot_is_reused(redis: Option<&RedisServer>) {
    let what = if redis.is_some() {
        "one Redis"
    } else {
        "local locks"
    };
    let urls: Vec<String> = redis.iter().map(|r| r.url()).collect();
    let repo = Repo::new();
    let work = tempfile::tempdir().unwrap();
    let flags = ["--ttl", "30s", "--wait", "20s"];
    let files: Vec<PathBuf> = (0..5)
        .map(|k| work.path().join(format!("run{k}")))
        .collect();
    let mut holders: Vec<Guard> = files[..4]
        .iter()
        .map(|f| {
            let mut c = slot_run(&repo.path(), &urls, &flags, 4, f, "60");
            Guard(
                c.stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    wait_until(Duration::from_secs(20), "four runs hold a slot", || {
        files[..4]
            .iter()
            .enumerate()
            .all(|(k, f)| read_hold(k, f).is_some())
    });

    // `lock status` shows the set's four slots and who holds each.
    let mut status = tractatus(&repo.path());
    for u in &urls {
        status.args(["--redis", u]);
    }
    let r = run(status.args(["--json", "lock", "status"]));
    assert_eq!(r.code, 0, "{}", r.describe());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let mut shown: Vec<(u64, u64)> = v["locks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["slot_of"] == "test-db")
        .map(|l| (l["slot"].as_u64().unwrap(), l["pid"].as_u64().unwrap()))
        .collect();
    shown.sort();
    let mut expected: Vec<(u64, u64)> = files[..4]
        .iter()
        .enumerate()
        .map(|(k, f)| {
            let h = read_hold(k, f).unwrap();
            (u64::from(h.slot), u64::from(holders[k].0.id()))
        })
        .collect();
    expected.sort();
    assert_eq!(shown, expected, "{}", r.stdout);
    let mut table = tractatus(&repo.path());
    for u in &urls {
        table.args(["--redis", u]);
    }
    let r = run(table.args(["lock", "status"]));
    assert!(
        r.stdout.contains("slots of test-db: 4 held (0, 1, 2, 3)"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("test-db#2"), "{}", r.stdout);

    // A fifth run waits, listening for every slot.
    let mut fifth = slot_run(&repo.path(), &urls, &flags, 4, &files[4], "0.2");
    let fifth = fifth
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let fifth_pid = fifth.id();
    let mut fifth = Guard(fifth);
    match redis {
        Some(r) => {
            let channels: Vec<String> = (0..4)
                .map(|i| repo.keys(&format!("test-db#{i}")).channel)
                .collect();
            wait_until(
                Duration::from_secs(10),
                "the fifth listens on every slot",
                || subscribers(&r.url(), &channels).iter().all(|n| *n >= 1),
            );
        }
        None => {
            if threads_in_flock(fifth_pid).is_some() {
                wait_until(Duration::from_secs(10), "the fifth waits in flock", || {
                    threads_in_flock(fifth_pid).unwrap_or(0) >= 4
                });
            }
        }
    }
    assert!(
        read_hold(4, &files[4]).is_none(),
        "the fifth ran beside four holders"
    );

    let victim = 1;
    let victim_slot = read_hold(victim, &files[victim]).unwrap().slot;
    let killed_at = now_ns();
    signal(holders[victim].0.id(), Signal::SIGKILL);
    let _ = holders[victim].0.wait();
    let code = fifth.wait_code(Duration::from_secs(20));
    let err = {
        use std::io::Read;
        let mut s = String::new();
        let _ = fifth.0.stderr.take().unwrap().read_to_string(&mut s);
        s
    };
    assert_eq!(code, Some(0), "{err}");
    let got = read_hold(4, &files[4]).unwrap();
    let after = ms(got.start - killed_at);
    println!(
        "{what}: the holder of slot {victim_slot} was SIGKILLed; the waiting run got slot {} \
         {after:.0} ms later (TTL 30 s)",
        got.slot
    );
    assert_eq!(got.slot, victim_slot);
    assert!(
        after < 5_000.0,
        "the slot came back only after {after:.0} ms"
    );
    // The others still hold theirs, untouched.
    for (k, f) in files[..4].iter().enumerate().filter(|(k, _)| *k != victim) {
        assert!(read_hold(k, f).unwrap().end.is_none());
        assert!(holders[k].0.try_wait().unwrap().is_none());
    }
    let started = Instant::now();
    holders.clear();
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_sigkilled_slot_holder_frees_its_slot_at_once_on_one_redis() {
    let redis = RedisServer::start();
    a_killed_holders_slot_is_reused(Some(&redis));
}

#[test]
fn a_sigkilled_slot_holder_frees_its_slot_at_once_on_local_locks() {
    a_killed_holders_slot_is_reused(None);
}

#[test]
fn bad_slot_requests_are_usage_errors_and_a_full_set_times_out() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    let url = redis.url();
    let try_run = |args: &[&str]| {
        run(tractatus(&repo.path())
            .args(["--redis", &url, "--wait", "0", "lock", "run"])
            .args(args)
            .args(["--", "true"]))
    };
    for args in [
        &["--name", "db", "--slots", "0"][..],
        &["--name", "db", "--slots", "1025"],
        &["--name", "db", "--slots", "-1"],
        &["--name", "db", "--slots", "x"],
        &["--name", "a", "--name", "b", "--slots", "2"],
        &["--name", "db", "--file", "f.json", "--slots", "2"],
        &["--file", "f.json", "--slots", "2"],
        &["--name", "db#1", "--slots", "2"],
    ] {
        let r = try_run(args);
        assert_eq!(r.code, 64, "{args:?}: {}", r.describe());
        assert_eq!(r.stderr.trim().lines().count(), 1, "{args:?}: {}", r.stderr);
    }
    // Slot 0 of a one-slot set is held: a second one-slot run times out (75) at once.
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("run");
    let mut holder = slot_run(
        &repo.path(),
        std::slice::from_ref(&url),
        &[],
        1,
        &file,
        "30",
    );
    let _holder = Guard(
        holder
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until(Duration::from_secs(10), "the holder runs", || {
        read_hold(0, &file).is_some()
    });
    assert_eq!(read_hold(0, &file).unwrap().slot, 0);
    let r = try_run(&["--name", "test-db", "--slots", "1"]);
    assert_eq!(r.code, 75, "{}", r.describe());
    assert!(r.stderr.contains("test-db"), "{}", r.stderr);
    // The plain lock of that name is another lock; and a slot can be broken by its name.
    assert_eq!(try_run(&["--name", "test-db"]).code, 0);
    let r = run(tractatus(&repo.path()).args([
        "--redis",
        &url,
        "lock",
        "break",
        "test-db#0",
        "--force",
    ]));
    assert_eq!(r.code, 0, "{}", r.describe());
    assert!(r.stdout.contains("broke lock 'test-db#0'"), "{}", r.stdout);
    // The slot's audit trail is under the slot's name.
    let r = run(tractatus(&repo.path()).args(["--redis", &url, "--json", "lock", "log"]));
    let events: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let of_slot: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == "test-db#0")
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(of_slot[..2], ["grant", "break"], "{}", r.stdout);
}

#[test]
fn runs_with_different_slot_counts_use_their_own_range_and_never_share_a_slot() {
    // Local locks. Two runs of --slots 2 hold slots 0 and 1: another --slots 2 run finds the
    // set full, a --slots 3 run gets slot 2.
    let repo = Repo::new();
    let work = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = (0..2)
        .map(|k| work.path().join(format!("run{k}")))
        .collect();
    let _holders: Vec<Guard> = files
        .iter()
        .map(|f| {
            let mut c = slot_run(&repo.path(), &[], &["--wait", "10s"], 2, f, "30");
            Guard(
                c.stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    wait_until(Duration::from_secs(10), "two runs hold a slot", || {
        files
            .iter()
            .enumerate()
            .all(|(k, f)| read_hold(k, f).is_some())
    });
    let full = run(&mut slot_run(
        &repo.path(),
        &[],
        &["--wait", "0"],
        2,
        &work.path().join("x"),
        "0",
    ));
    assert_eq!(full.code, 75, "{}", full.describe());
    assert!(full.stderr.contains("all 2 slots held"), "{}", full.stderr);
    let third = work.path().join("third");
    let r = run(&mut slot_run(
        &repo.path(),
        &[],
        &["--wait", "0"],
        3,
        &third,
        "0",
    ));
    assert_eq!(r.code, 0, "{}", r.describe());
    assert_eq!(read_hold(2, &third).unwrap().slot, 2);
}

#[test]
fn a_run_under_a_slot_joins_that_slot_instead_of_waiting_for_itself() {
    // Local locks: the one slot is held by the outer run; the inner one, told not to wait,
    // gets it only by joining it, with the same slot and token.
    let repo = Repo::new();
    let inner = r#"exec "$0" --wait 0 lock run --name test-db --slots 1 -- sh -c 'echo "inner $TRACTATUS_SLOT $TRACTATUS_FENCING_TOKEN"'"#;
    let outer = format!(r#"echo "outer $TRACTATUS_SLOT $TRACTATUS_FENCING_TOKEN"; {inner}"#);
    let r = run(tractatus(&repo.path())
        .args([
            "--wait", "0", "lock", "run", "--name", "test-db", "--slots", "1",
        ])
        .args(["--", "sh", "-c", &outer])
        .arg(env!("CARGO_BIN_EXE_tractatus")));
    assert_eq!(r.code, 0, "{}", r.describe());
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", r.stdout);
    let (outer, inner) = (&lines[0]["outer ".len()..], &lines[1]["inner ".len()..]);
    assert!(outer.starts_with("0 "), "{outer}");
    assert_eq!(
        outer, inner,
        "the inner run did not join the outer one's slot"
    );
}

#[test]
fn a_slot_run_longer_than_its_ttl_keeps_its_slot() {
    // Renewed like any lease: a 2.5 s run on a 1 s TTL ends well (not 76), and nobody got the
    // slot meanwhile.
    let redis = RedisServer::start();
    let repo = Repo::new();
    let work = tempfile::tempdir().unwrap();
    let (long, other) = (work.path().join("long"), work.path().join("other"));
    let urls = [redis.url()];
    let flags = ["--ttl", "1s", "--wait", "0"];
    let mut c = slot_run(&repo.path(), &urls, &flags, 1, &long, "2.5");
    let holder = std::thread::spawn(move || run_timed(&mut c, Duration::from_secs(30)));
    wait_until(
        Duration::from_secs(10),
        "the long run holds its slot",
        || read_hold(0, &long).is_some(),
    );
    // Past two TTLs, the slot is still held.
    wait_until(Duration::from_secs(10), "two TTLs pass", || {
        now_ns() > read_hold(0, &long).unwrap().start + 2_000_000_000
    });
    let r = run(&mut slot_run(&repo.path(), &urls, &flags, 1, &other, "0"));
    assert_eq!(r.code, 75, "the slot was free again: {}", r.describe());
    let r = holder.join().unwrap();
    assert_eq!(r.code, 0, "{}", r.describe());
    assert!(read_hold(0, &long).unwrap().end.is_some());
}
