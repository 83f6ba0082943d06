//! A SIGKILLed slot holder frees its slot at once; bad slot requests are usage errors and a
//! full set times out.

use super::*;

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
