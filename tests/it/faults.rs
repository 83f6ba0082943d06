//! Faults of the coordinator while locks are held and awaited: a Redis that dies and comes
//! back must cost a waiter time, not its turn.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Guard, RedisServer, Repo, stderr_of, tractatus, wait_until};

/// `lock run --name W` under `url`, with the given global flags before `lock`.
fn lock_run(repo: &Path, url: &str, flags: &[&str], cmd: &[&str]) -> Command {
    let mut c = tractatus(repo);
    // A quarantine as short as the TTL allows: a restarted server waits it out (see `blip`).
    c.env("TRACTATUS_QUARANTINE", "5s")
        .args(["--redis", url, "--ttl", "5s"])
        .args(flags)
        .args(["lock", "run", "--name", "W", "--"])
        .args(cmd)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// Kill Redis with SIGKILL, keep it down for `down`, start it again on the same port and data
/// directory (it reloads its append-only file). Until its uptime reaches the quarantine it
/// grants no free lease (its data may lack the last grants), held ones renew.
fn blip(redis: &mut RedisServer, down: Duration) {
    redis.kill();
    std::thread::sleep(down);
    // Nothing to stop any more: `restart` starts it again on the same data directory.
    redis.restart();
}

/// INFO's uptime_in_seconds.
fn uptime(redis: &RedisServer) -> u64 {
    let info = redis.cmd(&["INFO", "server"]);
    info.lines()
        .find_map(|l| l.strip_prefix("uptime_in_seconds:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

#[test]
fn a_waiter_rides_out_a_redis_restart_and_gets_the_lock() {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let repo = Repo::new();
    let (held, go) = (repo.file("held"), repo.file("go"));
    let mut holder = Guard(
        lock_run(
            &repo.path(),
            &redis.url(),
            &[],
            &[
                "sh",
                "-c",
                "touch \"$1\"; while [ ! -e \"$2\" ]; do sleep 0.02; done",
                "sh",
            ],
        )
        .arg(&held)
        .arg(&go)
        .spawn()
        .unwrap(),
    );
    wait_until(Duration::from_secs(10), "the holder's command runs", || {
        held.exists()
    });
    let keys = repo.keys("W");
    let mut waiter = Guard(
        lock_run(&repo.path(), &redis.url(), &["--wait", "20s"], &["true"])
            .spawn()
            .unwrap(),
    );
    wait_until(Duration::from_secs(10), "the waiter registers", || {
        redis.cmd(&["ZCARD", &keys.waiters]) == "1"
    });

    blip(&mut redis, Duration::from_millis(500));
    // The waiter is still waiting a while after Redis is back (it did not exit at the blip).
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        waiter.0.try_wait().unwrap().is_none(),
        "the waiter gave up at the blip: {}",
        stderr_of(&mut waiter)
    );

    // Released once the restarted server is past its quarantine (uptime counts whole seconds,
    // one more to be sure), so that what wakes the waiter is the release.
    wait_until(
        Duration::from_secs(15),
        "the restart quarantine is over",
        || uptime(&redis) >= 6,
    );
    let released = Instant::now();
    std::fs::write(&go, "").unwrap();
    assert_eq!(
        holder.wait_code(Duration::from_secs(10)),
        Some(0),
        "holder: {}",
        stderr_of(&mut holder)
    );
    let code = waiter.wait_code(Duration::from_secs(15));
    assert_eq!(code, Some(0), "waiter: {}", stderr_of(&mut waiter));
    // Woken by the release on its new subscription, not by the holder's TTL running out.
    assert!(
        released.elapsed() < Duration::from_secs(3),
        "the waiter took {:?} after the release",
        released.elapsed()
    );
}

#[test]
fn a_waiter_reports_unavailable_once_its_wait_runs_out() {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let repo = Repo::new();
    let held = repo.file("held");
    let _holder = Guard(
        lock_run(
            &repo.path(),
            &redis.url(),
            &[],
            &["sh", "-c", "touch \"$1\"; exec sleep 60", "sh"],
        )
        .arg(&held)
        .spawn()
        .unwrap(),
    );
    wait_until(Duration::from_secs(10), "the holder's command runs", || {
        held.exists()
    });
    let keys = repo.keys("W");
    let start = Instant::now();
    let mut waiter = Guard(
        lock_run(&repo.path(), &redis.url(), &["--wait", "2s"], &["true"])
            .spawn()
            .unwrap(),
    );
    wait_until(Duration::from_secs(10), "the waiter registers", || {
        redis.cmd(&["ZCARD", &keys.waiters]) == "1"
    });
    redis.kill();
    let code = waiter.wait_code(Duration::from_secs(10));
    let err = stderr_of(&mut waiter);
    assert_eq!(code, Some(69), "waiter: {err}");
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "gave up after {:?}, before its wait ran out: {err}",
        start.elapsed()
    );
}

#[test]
fn try_once_reports_unavailable_at_once() {
    let mut redis = RedisServer::start();
    let repo = Repo::new();
    let url = redis.url();
    redis.kill();
    let start = Instant::now();
    let mut c = lock_run(&repo.path(), &url, &["--wait", "20s"], &["true"]);
    let out = c.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(69),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "a first connect that fails should not wait: {:?}",
        start.elapsed()
    );
}
