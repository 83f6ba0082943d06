//! Five Redlock masters, one killed and one paused (SIGSTOP): every grant then needs all three
//! live ones. A free lock must go to a live waiter within seconds, and a wait must end within
//! its `--wait` and one node timeout, however silent the paused master is.
//!
//! Each `lock run` here runs with `TRACTATUS_DEBUG_ACQUIRE=1`: a failure prints the trace of
//! the slow run (every attempt, each master's answer, the pause chosen).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{CRITICAL, RedisServer, Repo, cluster, run, tractatus, wait_until};

fn urls(servers: &[RedisServer]) -> String {
    let all: Vec<String> = servers.iter().map(|s| s.url()).collect();
    all.join(",")
}

/// `tractatus --ttl 1s --wait <wait> lock run --name counter -- <argv>` on `urls`, traced.
fn lock_run(repo: &Path, urls: &str, wait: &str, argv: &[&str]) -> Command {
    let mut c = tractatus(repo);
    c.env("TRACTATUS_REDIS", urls)
        .env("TRACTATUS_QUARANTINE", "1s")
        .env("TRACTATUS_DEBUG_ACQUIRE", "1")
        .args([
            "--ttl", "1s", "--wait", wait, "lock", "run", "--name", "counter", "--",
        ])
        .args(argv);
    c
}

/// Five fresh masters with the lock taken once (past every quarantine), then master 0 killed
/// and master 1 paused.
fn one_dead_one_paused() -> (Vec<RedisServer>, Repo, String) {
    let mut servers = cluster(5);
    let repo = Repo::new();
    let urls = urls(&servers);
    let r = run(&mut lock_run(&repo.path(), &urls, "10s", &["true"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    servers[0].kill();
    servers[1].pause();
    (servers, repo, urls)
}

/// The lines of a run's trace and its error, without the per-attempt flood of a long wait.
fn tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

#[test]
fn a_free_lock_goes_to_a_live_waiter_within_seconds_with_one_master_dead_and_one_paused() {
    let (servers, repo, urls) = one_dead_one_paused();
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("counter"), "0").unwrap();
    const PROCS: usize = 6;
    const EACH: usize = 12;
    // Every run's time and, for the slowest, its trace.
    let slowest: Arc<Mutex<(Duration, String)>> = Arc::default();
    let threads: Vec<_> = (0..PROCS)
        .map(|_| {
            let (root, urls, dir) = (repo.path(), urls.clone(), work.path().to_path_buf());
            let slowest = Arc::clone(&slowest);
            std::thread::spawn(move || {
                for _ in 0..EACH {
                    let mut c = lock_run(&root, &urls, "20s", &["sh", "-c", CRITICAL, "sh"]);
                    let r = run(c.arg(&dir));
                    let mut s = slowest.lock().unwrap();
                    if r.elapsed > s.0 {
                        *s = (r.elapsed, r.stderr.clone());
                    }
                    drop(s);
                    assert_eq!(r.code, 0, "lock run failed: {}", tail(&r.stderr));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (worst, trace) = slowest.lock().unwrap().clone();
    println!("{PROCS} x {EACH} lock runs, 1 master dead and 1 paused: slowest {worst:?}");
    // Each run holds the lock for a few milliseconds; with 5 others ahead in line, a waiter
    // needs well under a second. A free lock left ungranted shows as a run of many seconds.
    assert!(
        worst < Duration::from_secs(5),
        "a run waited {worst:?}: {}",
        tail(&trace)
    );
    let counter = std::fs::read_to_string(work.path().join("counter")).unwrap();
    assert_eq!(counter.trim(), (PROCS * EACH).to_string());
    assert!(
        !work.path().join("overlaps").exists(),
        "two holders at once"
    );
    drop(servers);
}

/// Hold the lock in a `lock run` of its own (it touches `marker` once it holds) until a file
/// `go` appears beside `marker` (or 30 s passed).
fn holder(repo: &Path, urls: &str, marker: &Path) -> Child {
    let go = marker.with_file_name("go");
    let script = format!(
        "touch '{}'; for i in $(seq 600); do [ -e '{}' ] && exit 0; sleep 0.05; done",
        marker.display(),
        go.display()
    );
    let mut c = lock_run(repo, urls, "10s", &["sh", "-c", &script]);
    let child = c
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(marker.with_extension("stderr")).unwrap())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), "the holder holds", || {
        marker.exists()
    });
    child
}

#[test]
fn a_wait_with_a_paused_master_ends_within_its_wait_and_one_node_timeout() {
    let (servers, repo, urls) = one_dead_one_paused();
    let dir = tempfile::tempdir().unwrap();
    let mut held = holder(&repo.path(), &urls, &dir.path().join("holds"));
    let mut worst = Duration::ZERO;
    let mut trace = String::new();
    for _ in 0..3 {
        let r = run(&mut lock_run(&repo.path(), &urls, "2s", &["true"]));
        assert_eq!(r.code, 75, "{}", tail(&r.stderr));
        // Held, it asks again at its heartbeat (200 ms) or when called: taken for a split
        // vote (two refusals and the dead master decided each attempt), it asked every few
        // milliseconds, over a hundred times.
        let attempts = r.stderr.matches(": attempt ").count();
        assert!(
            attempts <= 20,
            "{attempts} attempts in 2 s: {}",
            tail(&r.stderr)
        );
        if r.elapsed > worst {
            (worst, trace) = (r.elapsed, r.stderr);
        }
    }
    std::fs::write(dir.path().join("go"), "").unwrap();
    let _ = held.wait();
    println!("--wait 2s with a paused master: slowest {worst:?}");
    // 2 s of wait, one node timeout (100 ms, ttl/10) and a process's start and exit.
    assert!(
        worst < Duration::from_millis(2500),
        "the wait overran: {worst:?}: {}",
        tail(&trace)
    );
    drop(servers);
}

/// Put a waiter of another host first in line on `server` only, its place lasting `ms`: that
/// master refuses everyone else meanwhile ("free, but another waiter is first in line"),
/// and nobody on this host may take it out of the line.
fn stray_head(server: &RedisServer, keys: &tractatus_lock::keys::LockKeys, ms: u64) {
    let script = "local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        redis.call('ZADD', KEYS[1], 0, 'stray')
        redis.call('ZADD', KEYS[2], now + tonumber(ARGV[1]), 'stray')
        redis.call('HSET', KEYS[3], 'stray', 's\telsewhere\t1\t' .. t[1] .. '000\t\t')
        for _, k in ipairs(KEYS) do
          if redis.call('PTTL', k) < tonumber(ARGV[1]) then redis.call('PEXPIRE', k, ARGV[1]) end
        end
        return 1";
    let ms = ms.to_string();
    let args = [
        "EVAL",
        script,
        "3",
        &keys.queue,
        &keys.waiters,
        &keys.waiting,
        &ms,
    ];
    assert_eq!(server.cmd(&args), "1");
}

#[test]
fn a_waiter_refused_by_one_live_master_is_granted_soon_after_that_master_frees_up() {
    let (servers, repo, urls) = one_dead_one_paused();
    let dir = tempfile::tempdir().unwrap();
    let mut held = holder(&repo.path(), &urls, &dir.path().join("holds"));
    // A waiter that waits a while: each of its attempts leaves a call to the paused master
    // behind (the attempt was decided without it).
    let log = dir.path().join("waiter.stderr");
    let mut waiter = lock_run(&repo.path(), &urls, "60s", &["true"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let attempts = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches(": attempt ")
            .count()
    };
    wait_until(Duration::from_secs(30), "the waiter tried 40 times", || {
        attempts() >= 40
    });
    // Free everywhere but on master 2, where a stray waiter of another host is first in line
    // for 2 s more: the live masters 3 and 4 grant, master 2 refuses, and the attempt needs
    // the paused master's answer to be decided.
    const STRAY: Duration = Duration::from_secs(2);
    stray_head(&servers[2], &repo.keys("counter"), STRAY.as_millis() as u64);
    let freed = std::time::Instant::now();
    std::fs::write(dir.path().join("go"), "").unwrap();
    let _ = held.wait();
    let mut status = None;
    wait_until(Duration::from_secs(90), "the waiter ended", || {
        status = waiter.try_wait().unwrap();
        status.is_some()
    });
    let took = freed.elapsed();
    let trace = std::fs::read_to_string(&log).unwrap_or_default();
    println!("granted {took:?} after the release, the stray's place lasting {STRAY:?}");
    assert!(status.unwrap().success(), "{}", tail(&trace));
    // The stray's 2 s, then an attempt or two (a master silent at its last call is waited
    // for a grace only, see `Quorum::grant`).
    assert!(
        took < STRAY + Duration::from_millis(1500),
        "a free lock waited {took:?} for a live waiter: {}",
        tail(&trace)
    );
    drop(servers);
}

#[tokio::test]
async fn calls_to_a_paused_redis_each_end_within_the_connect_and_node_timeouts() {
    use tractatus_lock::backend::Node;
    use tractatus_lock::redis_node::RedisNode;
    const CONNECT: Duration = Duration::from_millis(500);
    const NODE: Duration = Duration::from_millis(100);
    let server = RedisServer::start();
    server.pause();
    let url = tractatus_lock::config::NodeUrl::parse(&server.url()).unwrap();
    let node = Arc::new(RedisNode::new(&url, CONNECT, NODE).unwrap());
    let keys = tractatus_lock::keys::LockKeys::new("paused", "L");
    // Eight calls at once, as the background calls of eight attempts: each opened (and timed
    // out) a connection in turn, the last one after eight connect timeouts.
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let (node, keys) = (Arc::clone(&node), keys.clone());
            tokio::spawn(async move {
                let start = tokio::time::Instant::now();
                let got = node.leave(&keys, &format!("w{i}")).await;
                (got.is_err(), start.elapsed())
            })
        })
        .collect();
    let mut worst = Duration::ZERO;
    for c in calls {
        let (failed, took) = c.await.unwrap();
        assert!(failed, "a paused server answered");
        worst = worst.max(took);
    }
    server.resume();
    println!("8 calls to a paused Redis: slowest ended after {worst:?}");
    assert!(
        worst < CONNECT + NODE + Duration::from_millis(300),
        "a call to a paused Redis took {worst:?}"
    );
}
