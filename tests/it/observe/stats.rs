//! `lock stats` against a run whose waits and holds the test knows; no audit log on local locks.

use super::*;

/// A gate holds the lock while 4 workers queue, then lets go: the workers are granted one
/// after the other, each holding 200 ms. The gate's grant waited for nothing; each worker
/// waited from its spawn until its command's first line (both seen by the test).
#[test]
fn lock_stats_counts_a_known_run_exactly_and_its_percentiles_match_the_test_clock() {
    let server = RedisServer::start();
    let url = server.url();
    let repo = Repo::new();
    let held = gate(&repo, &url);
    let mut spawned = Vec::new();
    let mut workers = Vec::new();
    for i in 0..4 {
        spawned.push(epoch_ms());
        workers.push(Guard(worker(&repo, &url, i)));
    }
    wait_until(Duration::from_secs(30), "the 4 workers are queued", || {
        waiters(&server, &repo) == 4
    });
    let_go(held);
    let deadline = Instant::now() + Duration::from_secs(30);
    for w in &mut workers {
        loop {
            if let Some(status) = w.0.try_wait().unwrap() {
                assert!(status.success(), "worker: {status}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "workers still running after 30 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // The test's own figures: each worker's wait, spawn to its command's first line.
    let starts = std::fs::read_to_string(repo.file("starts")).unwrap();
    let mut expected_waits = vec![0u64]; // the gate's
    for line in starts.lines() {
        let (i, at) = line.split_once(' ').unwrap();
        let (i, at): (usize, u64) = (i.parse().unwrap(), at.parse().unwrap());
        expected_waits.push(at.saturating_sub(spawned[i]));
    }
    assert_eq!(expected_waits.len(), 5, "starts: {starts}");
    expected_waits.sort_unstable();

    let ran = run(tractatus(&repo.path())
        .env("TRACTATUS_REDIS", &url)
        .args(["--json", "lock", "stats", "--lock", LOCK]));
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let v: Value = serde_json::from_str(&ran.stdout).unwrap();
    let locks = v["locks"].as_array().unwrap();
    assert_eq!(locks.len(), 1, "{v}");
    let s = &locks[0];
    assert_eq!(s["name"], LOCK);
    assert_eq!(s["grants"], 5, "{s}");
    // The gate waited for nothing, but on a loaded machine even an uncontended acquire can take
    // the contended threshold: the audit log says how long the gate's own grant took, and the
    // expected count follows it (4, or 5 when the gate's grant alone crossed the threshold).
    let log = run(tractatus(&repo.path())
        .env("TRACTATUS_REDIS", &url)
        .args(["--json", "lock", "log", "--limit", "100"]));
    assert_eq!(log.code, 0, "{}", log.stderr);
    let events: Value = serde_json::from_str(&log.stdout).unwrap();
    let gate_wait = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "grant" && e["name"] == LOCK)
        .min_by_key(|e| e["at_ms"].as_u64().unwrap())
        .and_then(|e| e["wait_ms"].as_u64())
        .expect("the gate's grant is in the log with its wait");
    let contended = 4 + u64::from(gate_wait >= tractatus_lock::stats::CONTENDED_MS);
    assert_eq!(s["contended"], contended, "gate waited {gate_wait} ms: {s}");
    assert_eq!(
        s["contention"].as_f64(),
        Some(contended as f64 / 5.0),
        "{s}"
    );
    for zero in ["lost_leases", "breaks", "evictions", "joins"] {
        assert_eq!(s[zero], 0, "{zero}: {s}");
    }
    assert_eq!(s["wait"]["count"], 5, "{s}");
    for (field, p) in [
        ("p50_ms", 50),
        ("p95_ms", 95),
        ("p99_ms", 99),
        ("max_ms", 100),
    ] {
        let got = ms(&s["wait"][field]);
        let want = percentile(&expected_waits, p);
        assert!(
            got + WAIT_BELOW_MS >= want && got <= want + WAIT_ABOVE_MS,
            "wait {field}: {got} ms recorded, {want} ms by the test's clock \
             (waits {expected_waits:?}): {s}"
        );
    }
    // Five holds: four of 200 ms, and the gate's, the longest (it held while 4 queued).
    assert_eq!(s["hold"]["count"], 5, "{s}");
    let p50 = ms(&s["hold"]["p50_ms"]);
    assert!(
        (HOLD_MS..=HOLD_MS + HOLD_SLACK_MS).contains(&p50),
        "hold p50 {p50} ms: {s}"
    );
    assert!(ms(&s["hold"]["max_ms"]) >= p50, "{s}");

    // The table names the lock and its grants; the same figures, for people.
    let ran = run(tractatus(&repo.path())
        .env("TRACTATUS_REDIS", &url)
        .args(["lock", "stats", "--since", "1h"]));
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let row = ran.stdout.lines().find(|l| l.starts_with(LOCK)).unwrap();
    assert_eq!(row.split_whitespace().nth(1), Some("5"), "{}", ran.stdout);
}

#[test]
fn lock_stats_on_local_locks_says_there_is_no_audit_log() {
    let repo = Repo::new();
    let ran = run(tractatus(&repo.path()).args(["lock", "run", "--name", "x", "--", "true"]));
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let ran = run(tractatus(&repo.path()).args(["lock", "stats"]));
    assert_eq!(ran.code, 64, "{}", ran.stderr);
    assert!(
        ran.stderr.contains("no audit log without Redis"),
        "{}",
        ran.stderr
    );
}
