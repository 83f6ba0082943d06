//! Writers paused past their TTL or killed at random moments: no commit without the lease,
//! never a broken file.

use super::*;

#[test]
fn a_writer_paused_past_its_ttl_cannot_commit() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    repo.write(".claude/session-state.json", &fixture("session-state.json"));
    let work = tempfile::tempdir().unwrap();
    let d = work.path().display().to_string();
    // Writer A reads the document (its filter got it on stdin), says so, then waits for "go".
    let filter = format!(
        "cat > /dev/null; touch {d}/ready; while [ ! -e {d}/go ]; do sleep 0.01; done; echo '{{\"writer\": \"A\"}}'"
    );
    let mut a = Guard(
        tractatus(&repo.path())
            .args([
                "--redis",
                &redis.url(),
                "--ttl",
                "1s",
                "state",
                "update",
                ".claude/session-state.json",
                "--",
            ])
            .args(["sh", "-c", &filter])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_until(
        Duration::from_secs(10),
        "writer A has read the file",
        || work.path().join("ready").exists(),
    );
    signal(a.0.id(), Signal::SIGSTOP);

    // Writer B gets the lock once A's TTL has run out, and commits.
    let r = run(tractatus(&repo.path()).args([
        "--redis",
        &redis.url(),
        "--wait",
        "10s",
        "state",
        "set",
        ".claude/session-state.json",
        "/writer",
        "\"B\"",
    ]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let after_b = repo.read(".claude/session-state.json");

    std::fs::write(work.path().join("go"), "").unwrap();
    signal(a.0.id(), Signal::SIGCONT);
    let code = a.wait_code(Duration::from_secs(10));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut a.0.stderr.take().unwrap(), &mut stderr).unwrap();
    println!("paused writer: {code:?}: {stderr}");
    assert_eq!(code, Some(76), "{stderr}");
    assert_eq!(
        repo.read(".claude/session-state.json"),
        after_b,
        "the stale writer changed the file"
    );
    assert!(after_b.contains("\"writer\": \"B\""));
}

#[test]
fn writers_killed_at_random_moments_never_leave_a_broken_file() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    repo.write(HISTORY, &instruction_history(60));
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = |m: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % m
    };
    // Spread the kills over a whole write: from process start to past its usual end.
    let append = |id: &str| {
        let entry = format!(r#"{{"id":"{id}"}}"#);
        let mut c = tractatus(&repo.path());
        c.args([
            "--redis",
            &redis.url(),
            "--wait",
            "10s",
            "state",
            "append",
            HISTORY,
            "/instructions",
            &entry,
        ]);
        c
    };
    let start = Instant::now();
    assert_eq!(run(&mut append("warm-up")).code, 0);
    let mut span = (start.elapsed().as_micros() as u64 * 3 / 2).max(1000);
    let kills = 200;
    let mut landed = 0;
    for i in 0..kills {
        // A write can take far longer than the warm-up did: on a loaded machine, and when the
        // writer before was killed while queued (its place in line lapses only after 800 ms).
        // While no write has finished yet, stretch the span, so the kills still cover a whole
        // write.
        if i > 0 && i % 20 == 0 && landed == 0 {
            span = (span * 2).min(5_000_000);
        }
        let mut child = Guard(
            append(&format!("k{i}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        std::thread::sleep(Duration::from_micros(next(span)));
        signal(child.0.id(), Signal::SIGKILL);
        let status = child.0.wait().unwrap();
        landed += usize::from(status.success());
        let text = repo.read(HISTORY);
        assert!(!text.is_empty(), "kill {i}: empty file");
        serde_json::from_str::<serde_json::Value>(&text)
            .unwrap_or_else(|e| panic!("kill {i}: unparsable file: {e}"));
    }
    let temp_files = |repo: &Repo| {
        std::fs::read_dir(repo.file(".claude"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".tractatus-"))
            .count()
    };
    let left = temp_files(&repo);
    // The next writer removes what crashed writers left behind.
    let r = run(&mut append("last"));
    assert_eq!(r.code, 0, "{}", r.stderr);
    println!(
        "{kills} kills spread over {span} us: {landed} writes finished first, {left} temp files left, then {} after the next write",
        temp_files(&repo)
    );
    assert!(
        landed > 0 && landed < kills,
        "the kills did not spread over the write: {landed}"
    );
    assert_eq!(
        temp_files(&repo),
        0,
        "abandoned temp files were not cleaned up"
    );
    assert!(ids(&repo.read(HISTORY)).contains(&"last".to_owned()));
}
