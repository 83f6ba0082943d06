//! `lock run` and its command's process group on one Redis: a holder killed outright, stopped,
//! told to stop, or held past --max-hold lets the next holder in only once nothing of its
//! command runs. Every command writes "<token> <ns since epoch>" lines to one log; a line of
//! an earlier token after the first line of a later one is an overlapping write.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;

use crate::support::{
    Guard, KillPid, RedisServer, Repo, alive, run, signal, tractatus, wait_until,
};

/// The worker: writes its token every 10 ms. "ignore": SIGTERM is ignored (by its `sleep`s
/// too); "slow": on SIGTERM it takes 0.3 s, notes when it is done (ms) in "$1.done", exits.
const WRITER: &str = r#"
case "$2" in
  ignore) trap '' TERM ;;
  slow) trap 'sleep 0.3; date +%s%3N > "$1.done"; exit 0' TERM ;;
esac
while :; do echo "$TRACTATUS_FENCING_TOKEN $(date +%s%N)" >> "$1"; sleep 0.01; done
"#;

/// The holder's command: a shell that starts the worker, notes its pid, and waits for it.
const COMMAND: &str = r#"
sh writer.sh "$1" "$2" &
echo $! > "$1.worker"
wait
"#;

/// The next holder's command: two lines of its own token, 0.3 s apart.
const NEXT: &str = r#"
echo "$TRACTATUS_FENCING_TOKEN $(date +%s%N)" >> "$1"
sleep 0.3
echo "$TRACTATUS_FENCING_TOKEN $(date +%s%N)" >> "$1"
"#;

fn scripts(repo: &Repo) {
    repo.write("writer.sh", WRITER);
    repo.write("command.sh", COMMAND);
}

/// A holder of lock `name` running the writer in `mode`, with extra global flags; on Redis at
/// `url`, or on local file locks when `url` is empty.
fn holder(repo: &Repo, url: &str, flags: &[&str], name: &str, log: &Path, mode: &str) -> Guard {
    let mut c = tractatus(&repo.path());
    if !url.is_empty() {
        c.args(["--redis", url]);
    }
    c.args(flags)
        .args(["lock", "run", "--name", name, "--", "sh", "command.sh"])
        .arg(log)
        .arg(mode)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let g = Guard(c.spawn().unwrap());
    wait_until(Duration::from_secs(10), "the worker writes", || {
        lines(log).len() >= 3
    });
    g
}

/// The next holder: waits up to 20 s, then writes its two lines (`url` as for [`holder`]).
fn next_holder(repo: &Repo, url: &str, host: Option<&str>, name: &str, log: &Path) -> Command {
    let mut c = tractatus(&repo.path());
    if let Some(h) = host {
        c.env("TRACTATUS_HOST", h);
    }
    if !url.is_empty() {
        c.args(["--redis", url]);
    }
    c.args([
        "--wait",
        "20s",
        "--kill-grace",
        "1s",
        "lock",
        "run",
        "--name",
        name,
        "--",
        "sh",
        "-c",
        NEXT,
        "sh",
    ])
    .arg(log);
    c
}

fn lines(log: &Path) -> Vec<(u64, u128)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (token, ns) = l.split_once(' ')?;
            Some((token.parse().ok()?, ns.parse().ok()?))
        })
        .collect()
}

/// What the log shows: (writes of earlier tokens after the next token's first write, when the
/// next token first wrote (ns), when the first token last wrote (ns)).
fn overlaps(log: &Path) -> (usize, u128, u128) {
    let all = lines(log);
    let first = all[0].0;
    let next_at = all
        .iter()
        .position(|l| l.0 > first)
        .expect("the next holder never wrote");
    let overlapping = all[next_at..]
        .iter()
        .filter(|l| l.0 < all[next_at].0)
        .count();
    let last_first = all
        .iter()
        .filter(|l| l.0 == first)
        .map(|l| l.1)
        .max()
        .unwrap();
    (overlapping, all[next_at].1, last_first)
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn worker_of(log: &Path) -> u32 {
    let path = format!("{}.worker", log.display());
    wait_until(Duration::from_secs(5), "the worker's pid is noted", || {
        std::fs::read_to_string(&path).is_ok_and(|s| s.trim().parse::<u32>().is_ok())
    });
    std::fs::read_to_string(&path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn ms(ns: u128) -> f64 {
    ns as f64 / 1e6
}

#[test]
fn a_sigkilled_lock_run_lets_nobody_in_while_its_command_group_runs() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    scripts(&repo);
    let log = repo.file("log");
    let flags = ["--ttl", "3s", "--kill-grace", "10s"];
    let mut first = holder(&repo, &redis.url(), &flags, "W", &log, "ignore");
    let worker = worker_of(&log);
    let _worker = KillPid(worker);
    // The holder record names the command's process group (led by its guard).
    let stat = std::fs::read_to_string(format!("/proc/{worker}/stat")).unwrap();
    let pgrp = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(2)
        .unwrap();
    assert_eq!(redis.cmd(&["HGET", &repo.keys("W").holder, "group"]), pgrp);
    signal(first.0.id(), Signal::SIGKILL);
    let _ = first.0.wait();
    let killed = now_ns();
    // On this host: it may judge the killed holder gone, but not while the group runs.
    let r = run(&mut next_holder(&repo, &redis.url(), None, "W", &log));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (overlapping, next_at, last_first) = overlaps(&log);
    println!(
        "after the SIGKILL: the first holder's worker last wrote at +{:.0} ms, the next holder \
         first wrote at +{:.0} ms; {overlapping} overlapping writes",
        ms(last_first.saturating_sub(killed)),
        ms(next_at.saturating_sub(killed)),
    );
    assert!(!alive(worker), "the orphaned worker still runs");
    assert_eq!(
        overlapping, 0,
        "the orphan wrote inside the next holder's turn"
    );
    // Its guard ends the group within a third of the TTL: well inside the 3 s TTL.
    assert!(last_first.saturating_sub(killed) < 2_000_000_000);
}

#[test]
fn a_sigkilled_lock_run_on_local_locks_lets_nobody_in_while_its_command_group_runs() {
    // The kernel drops a dead holder's flock at once: only the guard scan keeps the next
    // holder's command from starting beside the orphan.
    let repo = Repo::new();
    scripts(&repo);
    let log = repo.file("log");
    let flags = ["--ttl", "3s", "--kill-grace", "10s"];
    let mut first = holder(&repo, "", &flags, "L", &log, "ignore");
    let worker = worker_of(&log);
    let _worker = KillPid(worker);
    signal(first.0.id(), Signal::SIGKILL);
    let _ = first.0.wait();
    let killed = now_ns();
    let r = run(&mut next_holder(&repo, "", None, "L", &log));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (overlapping, next_at, last_first) = overlaps(&log);
    println!(
        "local locks, after the SIGKILL: the worker last wrote at +{:.0} ms, the next holder \
         first wrote at +{:.0} ms; {overlapping} overlapping writes",
        ms(last_first.saturating_sub(killed)),
        ms(next_at.saturating_sub(killed)),
    );
    assert!(!alive(worker), "the orphaned worker still runs");
    assert_eq!(
        overlapping, 0,
        "the orphan wrote inside the next holder's turn"
    );
}

#[test]
fn sigterm_releases_only_after_the_commands_worker_is_gone() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    scripts(&repo);
    let log = repo.file("log");
    let mut first = holder(&repo, &redis.url(), &[], "T", &log, "slow");
    let worker = worker_of(&log);
    let _worker = KillPid(worker);
    let termed = now_ns();
    signal(first.0.id(), Signal::SIGTERM);
    let code = first.wait_code(Duration::from_secs(10));
    let done_ms: u128 = std::fs::read_to_string(format!("{}.done", log.display()))
        .expect("the worker never got SIGTERM")
        .trim()
        .parse()
        .unwrap();
    let events =
        run(tractatus(&repo.path()).args(["--redis", &redis.url(), "--json", "lock", "log"]));
    let events: serde_json::Value = serde_json::from_str(&events.stdout).unwrap();
    let released_ms = events
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|e| e["event"] == "release")
        .and_then(|e| e["at_ms"].as_u64())
        .expect("no release in the audit log") as u128;
    println!(
        "exit {code:?}; after SIGTERM the worker was done at +{} ms, the lock released at +{} ms",
        done_ms.saturating_sub(termed / 1_000_000),
        released_ms.saturating_sub(termed / 1_000_000)
    );
    assert!(!alive(worker));
    assert!(
        released_ms >= done_ms,
        "released at {released_ms} before the worker was done at {done_ms}"
    );
}

#[test]
fn past_max_hold_a_command_ignoring_sigterm_is_gone_before_the_next_holder_starts() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    scripts(&repo);
    // Twice: at --max-hold the lease's loss and its coming expiry are noticed together, and
    // only one of the two orders used to let the command outlive the lease.
    for name in ["M1", "M2"] {
        let log = repo.file(&format!("log-{name}"));
        let flags = ["--ttl", "1s", "--max-hold", "2s", "--kill-grace", "10s"];
        let started = now_ns();
        let mut first = holder(&repo, &redis.url(), &flags, name, &log, "ignore");
        let worker = worker_of(&log);
        let _worker = KillPid(worker);
        // Another host: nothing but the lease keeps it out.
        let r = run(&mut next_holder(
            &repo,
            &redis.url(),
            Some("elsewhere"),
            name,
            &log,
        ));
        assert_eq!(r.code, 0, "{}", r.stderr);
        let code = first.wait_code(Duration::from_secs(15));
        let (overlapping, next_at, last_first) = overlaps(&log);
        println!(
            "exit {code:?}; the first command last wrote at +{:.0} ms, the next holder first \
             wrote at +{:.0} ms; {overlapping} overlapping writes",
            ms(last_first.saturating_sub(started)),
            ms(next_at.saturating_sub(started)),
        );
        assert_eq!(code, Some(76));
        assert!(!alive(worker));
        assert_eq!(
            overlapping, 0,
            "the first command wrote after the next holder started"
        );
    }
}

#[test]
fn a_grant_over_a_stopped_holder_on_this_host_waits_for_its_group() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    scripts(&repo);
    let log = repo.file("log");
    let flags = ["--ttl", "1s", "--kill-grace", "1s"];
    let mut first = holder(&repo, &redis.url(), &flags, "S", &log, "ignore");
    let worker = worker_of(&log);
    let _worker = KillPid(worker);
    // Stopped, its lease runs out while its command runs on.
    signal(first.0.id(), Signal::SIGSTOP);
    let stopped = now_ns();
    let r = run(&mut next_holder(&repo, &redis.url(), None, "S", &log));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (overlapping, next_at, last_first) = overlaps(&log);
    println!(
        "after the SIGSTOP: the stopped holder's command last wrote at +{:.0} ms, the next \
         holder first wrote at +{:.0} ms; {overlapping} overlapping writes",
        ms(last_first.saturating_sub(stopped)),
        ms(next_at.saturating_sub(stopped)),
    );
    assert_eq!(overlapping, 0);
    signal(first.0.id(), Signal::SIGCONT);
    assert_eq!(first.wait_code(Duration::from_secs(10)), Some(76));
    assert!(!alive(worker));
}

#[test]
fn a_lock_of_the_same_name_on_another_redis_is_another_lock_for_the_guards_too() {
    // Two clones of one repository (one namespace, committed in its config file) on two Redis
    // deployments: lock `build` of one is not lock `build` of the other. Before the guards
    // knew where a lock lives, the second run waited for the first one's command, then
    // SIGKILLed it after the kill grace.
    let (a, b) = (RedisServer::start(), RedisServer::start());
    let (one, two) = (Repo::new(), Repo::new());
    let take = |repo: &Repo, url: &str, command: &str| {
        let mut c = tractatus(&repo.path());
        c.env("TRACTATUS_REDIS", url)
            .env("TRACTATUS_NAMESPACE", "shared-ns")
            .args([
                "--kill-grace",
                "200ms",
                "lock",
                "run",
                "--name",
                "build",
                "--",
            ])
            .args(["sh", "-c", command]);
        c
    };
    let started = one.file("started");
    let mut first = Guard(
        take(
            &one,
            &a.url(),
            &format!("touch {}; sleep 2", started.display()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    wait_until(
        Duration::from_secs(10),
        "the first run's command started",
        || started.exists(),
    );
    let second = run(&mut take(&two, &b.url(), "true"));
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert!(
        second.elapsed < Duration::from_millis(1500),
        "the run on the other Redis waited for a lock it does not share: {:?}",
        second.elapsed
    );
    assert_eq!(
        first.wait_code(Duration::from_secs(10)),
        Some(0),
        "the first run's command was killed by a run on another Redis"
    );
}
