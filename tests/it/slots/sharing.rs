//! Runs sharing slots: six runs on four slots on every backend, different slot counts kept
//! apart, a run under a slot joining it, a slot kept past its TTL.

use super::*;

/// Six runs of about 1 s on four slots, started at once: at most four hold at once, never two
/// on one slot, each slot's tokens rise, and the fifth and sixth are woken by a slot's release
/// (not by its lease's TTL, 30 s). Returns the two gaps (ms) from the freeing run's end to
/// their start.
fn six_runs_on_four_slots(urls: &[String], what: &str) -> Vec<f64> {
    let repo = Repo::new();
    let work = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = (0..6)
        .map(|k| work.path().join(format!("run{k}")))
        .collect();
    let threads: Vec<_> = files
        .iter()
        .map(|f| {
            let flags = ["--wait", "60s", "--ttl", SIX_RUNS_TTL];
            let mut c = slot_run(&repo.path(), urls, &flags, 4, f, "1");
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
    assert_woken_by_release(what, &gaps);
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
