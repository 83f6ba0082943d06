//! `lock status` fields and waiters, a dead holder taken over at once, `lock break` with
//! --force, the audit log in order and capped.

use super::*;

#[test]
fn status_shows_every_field_and_counts_waiters() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    let url = redis.url();
    let holder = hold(
        &repo.path(),
        Some(&url),
        ".claude/session-state.json",
        &repo.file("p"),
    );
    let _waiter = Guard(
        tractatus(&repo.path())
            .args([
                "--redis",
                &url,
                "--wait",
                "60s",
                "lock",
                "run",
                "--name",
                ".claude/session-state.json",
                "--",
                "true",
            ])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut v = serde_json::Value::Null;
    wait_until(Duration::from_secs(10), "status counts the waiter", || {
        let r = run(tractatus(&repo.path()).args(["--redis", &url, "--json", "lock", "status"]));
        v = json(&r.stdout);
        v["locks"][0]["waiters"] == 1
    });
    let l = &v["locks"][0];
    assert_eq!(v["backend"], "redis");
    assert!(v["namespace"].as_str().unwrap().len() >= 8);
    assert_eq!(l["name"], ".claude/session-state.json");
    assert_eq!(l["pid"], holder.0.id());
    assert_eq!(l["host"], tractatus_lock::holder::this_host());
    let fence = repo.keys(".claude/session-state.json").fence;
    assert_eq!(l["token"].to_string(), redis.cmd(&["GET", &fence]));
    assert_eq!(l["stale"], false);
    assert_eq!(l["nodes"], 1);
    assert!(l["command"].as_str().unwrap().contains("lock run"));
    assert!(l["held_ms"].as_u64().is_some() && l["ttl_left_ms"].as_u64().unwrap() <= 10_000);
    uuid::Uuid::parse_str(l["session"].as_str().unwrap()).unwrap();
    let keys: Vec<&String> = l.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "name",
            "session",
            "host",
            "pid",
            "command",
            "held_ms",
            "ttl_left_ms",
            "token",
            "waiters",
            "stale",
            "nodes"
        ],
        "the documented --json shape changed"
    );
    let r = run(tractatus(&repo.path()).args(["--redis", &url, "lock", "status"]));
    let header = r.stdout.lines().next().unwrap();
    assert!(
        header.starts_with("LOCK") && header.contains("WAITERS"),
        "{}",
        r.stdout
    );
    let row = r.stdout.lines().nth(1).unwrap();
    assert!(row.starts_with(".claude/session-state.json  "), "{row}");
    // A waiter that gives up (75) is no longer counted.
    let r = run(tractatus(&repo.path()).args([
        "--redis",
        &url,
        "--wait",
        "300ms",
        "lock",
        "run",
        "--name",
        ".claude/session-state.json",
        "--",
        "true",
    ]));
    assert_eq!(r.code, 75, "{}", r.stderr);
    let r = run(tractatus(&repo.path()).args(["--redis", &url, "--json", "lock", "status"]));
    assert_eq!(json(&r.stdout)["locks"][0]["waiters"], 1, "{}", r.stdout);
}

#[test]
fn a_dead_holder_on_this_host_is_taken_over_at_once_and_logged() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    let url = redis.url();
    let pidfile = repo.file("p");
    let mut holder = hold(&repo.path(), Some(&url), "L", &pidfile);
    let cmd_pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    signal(holder.0.id(), Signal::SIGKILL);
    let _ = holder.0.wait();
    signal(cmd_pid, Signal::SIGKILL);
    wait_until(Duration::from_secs(5), "the command is gone", || {
        !alive(cmd_pid)
    });

    let r = run(tractatus(&repo.path()).args(["--redis", &url, "--json", "lock", "status"]));
    assert_eq!(json(&r.stdout)["locks"][0]["stale"], true, "{}", r.stdout);
    let start = Instant::now();
    let r = run(tractatus(&repo.path()).args([
        "--redis", &url, "--wait", "20s", "lock", "run", "--name", "L", "--", "true",
    ]));
    println!(
        "stale holder taken over in {:?} (TTL 10 s)",
        start.elapsed()
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "waited out the TTL: {:?}",
        start.elapsed()
    );
    let r = run(tractatus(&repo.path()).args(["--redis", &url, "--json", "lock", "log"]));
    let events: Vec<String> = json(&r.stdout)
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(events, ["grant", "takeover", "grant", "release"]);
}

#[test]
fn break_needs_force_and_is_logged_with_who_broke_it() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    let url = redis.url();
    let _holder = hold(&repo.path(), Some(&url), "L", &repo.file("p"));
    let r = run(tractatus(&repo.path()).args(["--redis", &url, "lock", "break", "L"]));
    assert_eq!(r.code, 64, "{}", r.stderr);
    assert!(r.stderr.contains("--force"), "{}", r.stderr);
    let r = run(tractatus(&repo.path())
        .env("TRACTATUS_SESSION_ID", "operator-1")
        .args(["--redis", &url, "lock", "break", "L", "--force"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("broke lock 'L'"), "{}", r.stdout);
    let r = run(tractatus(&repo.path()).args(["--redis", &url, "--json", "lock", "status"]));
    assert_eq!(json(&r.stdout)["locks"], serde_json::json!([]));
    let r =
        run(tractatus(&repo.path())
            .args(["--redis", &url, "--json", "lock", "log", "--limit", "10"]));
    let log = json(&r.stdout);
    let last = log.as_array().unwrap().last().unwrap();
    assert_eq!(last["event"], "break");
    assert!(
        last["by"].as_str().unwrap().starts_with("operator-1@"),
        "{last}"
    );
    let keys: Vec<&String> = last.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "at_ms", "event", "name", "session", "host", "pid", "token", "by"
        ]
    );
    let r = run(tractatus(&repo.path()).args(["--redis", &url, "lock", "break", "L", "--force"]));
    assert!(r.stdout.contains("was not held"), "{}", r.stdout);
}

#[test]
fn the_log_keeps_events_in_order_and_is_capped() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    let url = redis.url();
    for _ in 0..3 {
        let r = run(tractatus(&repo.path())
            .args(["--redis", &url, "lock", "run", "--name", "a", "--", "true"]));
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    let r =
        run(tractatus(&repo.path())
            .args(["--redis", &url, "--json", "lock", "log", "--limit", "4"]));
    let events = json(&r.stdout);
    let seq: Vec<(String, u64)> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_owned(),
                e["token"].as_u64().unwrap(),
            )
        })
        .collect();
    // Tokens follow the Redis clock (issue 14): what counts is that each grant's is higher.
    let (t, u) = (seq[0].1, seq[2].1);
    assert!(u > t, "{seq:?}");
    assert_eq!(
        seq,
        [
            ("grant".into(), t),
            ("release".into(), t),
            ("grant".into(), u),
            ("release".into(), u)
        ]
    );
    let r = run(tractatus(&repo.path()).args(["--redis", &url, "lock", "log"]));
    assert!(r.stdout.starts_with("TIME (UTC)"), "{}", r.stdout);
    assert_eq!(r.stdout.lines().count(), 7);
    // The stream is capped (MAXLEN ~ 1000 per lock), so it cannot grow without bound.
    let log_key = repo.keys("a").log;
    assert_eq!(redis.cmd(&["XLEN", &log_key]), "6");
}
