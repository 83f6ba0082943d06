//! Redlock across 5 (or 3) independent masters: exclusion, minority failures, majority loss,
//! masters restarted empty mid-run, fencing tokens that keep increasing.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::{CRITICAL, RedisServer, Repo, cluster, run, tractatus, wait_until};

fn urls(servers: &[RedisServer]) -> String {
    servers
        .iter()
        .map(|s| s.url())
        .collect::<Vec<_>>()
        .join(",")
}

fn locked_increment(repo: &Path, urls: &str, dir: &Path) -> Command {
    let mut c = tractatus(repo);
    c.env("TRACTATUS_REDIS", urls)
        .env("TRACTATUS_QUARANTINE", "1s")
        .args([
            "--ttl", "1s", "--wait", "60s", "lock", "run", "--name", "counter", "--",
        ])
        .args(["sh", "-c", CRITICAL, "sh"])
        .arg(dir);
    c
}

/// Take the lock once so every fresh master has passed its start-up quarantine (one TTL).
fn warm_up(repo: &Path, urls: &str) {
    let r = run(tractatus(repo)
        .env("TRACTATUS_REDIS", urls)
        .env("TRACTATUS_QUARANTINE", "1s")
        .args([
            "--ttl", "1s", "--wait", "10s", "lock", "run", "--name", "counter", "--", "true",
        ]));
    assert_eq!(r.code, 0, "{}", r.stderr);
}

struct Tally {
    counter: usize,
    overlaps: usize,
    tokens: Vec<u64>,
}

fn tally(dir: &Path) -> Tally {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    Tally {
        counter: read("counter").trim().parse().unwrap(),
        overlaps: read("overlaps").lines().count(),
        tokens: read("tokens").lines().map(|l| l.parse().unwrap()).collect(),
    }
}

/// `procs` threads, each running `each` locked increments; `during` runs beside them.
fn contend(
    repo: &Repo,
    urls: &str,
    procs: usize,
    each: usize,
    during: impl FnOnce(&AtomicBool),
) -> Tally {
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("counter"), "0").unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..procs)
        .map(|_| {
            let (root, urls, dir) = (repo.path(), urls.to_owned(), work.path().to_path_buf());
            std::thread::spawn(move || {
                for _ in 0..each {
                    let r = run(&mut locked_increment(&root, &urls, &dir));
                    assert_eq!(r.code, 0, "lock run failed: {}", r.stderr);
                }
            })
        })
        .collect();
    let watcher = {
        let done = done.clone();
        std::thread::spawn(move || {
            for t in threads {
                t.join().unwrap();
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    during(&done);
    watcher.join().unwrap();
    tally(work.path())
}

fn assert_exclusive(t: &Tally, expected: usize) {
    assert_eq!(t.overlaps, 0, "two holders were inside at once");
    assert_eq!(t.counter, expected, "updates were lost");
    assert_eq!(t.tokens.len(), expected);
    assert!(
        t.tokens.windows(2).all(|w| w[0] < w[1]),
        "fencing tokens not strictly increasing: {:?}",
        t.tokens
    );
}

#[test]
fn five_masters_eight_processes_exclude_and_lose_nothing() {
    let servers = cluster(5);
    let repo = Repo::new();
    let urls = urls(&servers);
    warm_up(&repo.path(), &urls);
    let t = contend(&repo, &urls, 8, 25, |_| {});
    println!(
        "5 masters: counter {} of 200, overlaps {}",
        t.counter, t.overlaps
    );
    assert_exclusive(&t, 200);
}

#[test]
fn two_of_five_killed_or_paused_and_locking_goes_on() {
    let mut servers = cluster(5);
    let repo = Repo::new();
    let urls = urls(&servers);
    warm_up(&repo.path(), &urls);
    servers[0].kill();
    servers[1].pause();
    // Node timeout 100 ms (ttl/10): the paused master costs at most that. Without a per-node
    // deadline its silence would hang every run forever; the bound below is loose on purpose.
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let r = run(tractatus(&repo.path())
            .env("TRACTATUS_REDIS", &urls)
            .env("TRACTATUS_QUARANTINE", "1s")
            .args([
                "--ttl", "1s", "--wait", "5s", "lock", "run", "--name", "counter", "--", "true",
            ]));
        assert_eq!(r.code, 0, "{}", r.stderr);
        worst = worst.max(r.elapsed);
    }
    println!("with 1 master killed and 1 paused, slowest lock run took {worst:?}");
    assert!(
        worst < Duration::from_secs(3),
        "a dead or paused minority stalled the lock: {worst:?}"
    );
    let t = contend(&repo, &urls, 4, 10, |_| {});
    assert_exclusive(&t, 40);
}

#[test]
fn three_of_five_down_is_unavailable_and_writes_nothing() {
    let mut servers = cluster(5);
    let repo = Repo::new();
    repo.write(".claude/session-state.json", "{\n  \"n\": 1\n}");
    let urls = urls(&servers);
    warm_up(&repo.path(), &urls);
    servers[0].kill();
    servers[1].kill();
    servers[2].pause();
    let r = run(tractatus(&repo.path())
        .env("TRACTATUS_REDIS", &urls)
        .env("TRACTATUS_QUARANTINE", "1s")
        .args([
            "--ttl",
            "1s",
            "--wait",
            "3s",
            "--connect-timeout",
            "500ms",
            "state",
            "set",
            ".claude/session-state.json",
            "/n",
            "2",
        ]));
    println!("{:?}: {}", r.elapsed, r.stderr);
    assert_eq!(r.code, 69, "{}", r.stderr);
    // The silent one might answer yet: it is waited for within --wait (3 s), no longer.
    assert!(r.elapsed < Duration::from_secs(6), "took {:?}", r.elapsed);
    assert!(
        r.stderr
            .contains("only 2 of 5 Redis nodes reachable, 3 needed"),
        "{}",
        r.stderr
    );
    // One line of error; the wait's one-time notice (no holder to name after 1 s) aside.
    let errors = r
        .stderr
        .lines()
        .filter(|l| !l.contains("with no holder to name"));
    assert_eq!(errors.count(), 1);
    assert_eq!(repo.read(".claude/session-state.json"), "{\n  \"n\": 1\n}");
}

#[test]
fn a_minority_restarted_empty_mid_run_keeps_tokens_increasing_and_holders_apart() {
    let mut servers = cluster(5);
    let repo = Repo::new();
    let urls = urls(&servers);
    warm_up(&repo.path(), &urls);
    let fence = repo.keys("counter").fence;
    let counter_of = |s: &RedisServer| s.cmd(&["GET", &fence]).parse::<u64>().unwrap_or(0);
    let mut restarts = 0;
    let t = contend(&repo, &urls, 8, 30, |done| {
        for pair in [[0usize, 1], [2, 3], [4, 0]] {
            if done.load(Ordering::SeqCst) {
                break;
            }
            // Let the run go on a little, then restart two masters with no data.
            let before = counter_of(&servers[(pair[1] + 1) % 5]);
            wait_until(Duration::from_secs(30), "some locks are taken", || {
                done.load(Ordering::SeqCst) || counter_of(&servers[(pair[1] + 1) % 5]) >= before + 5
            });
            for &i in &pair {
                servers[i].restart_empty();
            }
            restarts += 2;
            // A minority at a time: wait until the restarted masters have caught up (a grant
            // raised their counters) before the next pair goes down.
            let survivor = (pair[1] + 1) % 5;
            wait_until(
                Duration::from_secs(30),
                "the restarted masters catch up",
                || {
                    done.load(Ordering::SeqCst)
                        || pair.iter().all(|&i| {
                            counter_of(&servers[i])
                                >= counter_of(&servers[survivor]).saturating_sub(8)
                        }) && pair.iter().all(|&i| counter_of(&servers[i]) > 0)
                },
            );
        }
    });
    println!(
        "{restarts} masters restarted empty: counter {} of 240, overlaps {}, tokens {}..{}",
        t.counter,
        t.overlaps,
        t.tokens.first().unwrap(),
        t.tokens.last().unwrap()
    );
    assert!(restarts >= 2, "no master was restarted during the run");
    assert_exclusive(&t, 240);
}

#[test]
fn contended_acquires_on_three_masters_never_stall_for_a_ttl() {
    let servers = cluster(3);
    let repo = Repo::new();
    let urls = urls(&servers);
    warm_up(&repo.path(), &urls);
    let start = Instant::now();
    let t = contend(&repo, &urls, 8, 15, |_| {});
    assert_exclusive(&t, 120);
    println!(
        "3 masters, 8 processes: 120 locked runs in {:?}",
        start.elapsed()
    );
}

#[test]
fn masters_restarted_empty_are_waited_for_not_hammered() {
    let mut servers = cluster(3);
    let repo = Repo::new();
    let urls = urls(&servers);
    warm_up(&repo.path(), &urls);
    // Grants on the healthy master, from its audit log (a grant and a release entry each): its
    // counter no longer counts them, as a raise lifts it to a restarted master's clock seed.
    let log = repo.keys("counter").log;
    let counter_of = |s: &RedisServer| s.cmd(&["XLEN", &log]).parse::<u64>().unwrap_or(0) / 2;
    servers[1].restart_empty();
    servers[2].restart_empty();
    let before = counter_of(&servers[0]);
    let lock = |wait: &str| {
        run(tractatus(&repo.path())
            .env("TRACTATUS_REDIS", &urls)
            .env("TRACTATUS_QUARANTINE", "1500ms")
            .args([
                "--ttl", "1s", "--wait", wait, "lock", "run", "--name", "counter", "--", "true",
            ]))
    };
    // Two of three masters refuse for 1.5 s: no majority, and the message says why.
    let r = lock("0");
    assert_eq!(r.code, 75, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("2 of 3 Redis masters started (new or restarted)"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    // Waiting goes through once the quarantine is over, without retrying all along.
    let r = lock("10s");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let grants = counter_of(&servers[0]) - before;
    println!(
        "through after {:?}; {grants} grants on the healthy master",
        r.elapsed
    );
    assert!(
        grants <= 6,
        "{grants} grants on the healthy master while it waited"
    );
}
