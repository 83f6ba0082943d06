//! Per-session files against the shared one: a broken shared file, `lock run --file` of a
//! session copy, activity that registers nothing, a copy collected while its write waited.

use super::*;

#[test]
fn a_broken_shared_file_seeds_no_copy_and_the_session_recovers_once_it_is_repaired() {
    let s = Setup::new(false);
    // Torn, as an unguarded in-place writer leaves it.
    s.repo.write(STATE, "{\"message_count\": 1\n");
    let copy = s.repo.file(".claude/sessions/abc/session-state.json");
    let r = run(s
        .cli(Some("abc"))
        .args(["state", "merge", STATE, r#"{"x": 1}"#]));
    assert_eq!(r.code, 65, "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("session-state.json") && !r.stderr.contains(".claude/sessions/"),
        "names the shared file: {}",
        r.stderr
    );
    assert!(!copy.exists(), "a copy of the torn template was made");
    assert_eq!(s.repo.read(STATE), "{\"message_count\": 1\n");
    s.repo.write(STATE, r#"{"message_count": 1}"#);
    let r = run(s
        .cli(Some("abc"))
        .args(["state", "merge", STATE, r#"{"x": 1}"#]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&copy).unwrap()).unwrap();
    assert_eq!(doc, serde_json::json!({"message_count": 1, "x": 1}));
    assert_eq!(s.repo.read(STATE), r#"{"message_count": 1}"#);
}

/// Start and end times (ns) each command under `lock run` wrote to `log`.
fn intervals(log: &Path) -> Vec<(u128, u128)> {
    let text = std::fs::read_to_string(log).unwrap();
    let mut all: Vec<(u128, u128)> = text
        .lines()
        .map(|l| {
            let (a, b) = l.split_once(' ').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    all.sort();
    all
}

fn lock_run_file_of_a_per_session_file_takes_the_shared_lock(on_redis: bool) {
    let s = Setup::new(on_redis);
    s.repo.write(STATE, r#"{"message_count": 0}"#);
    let log = s.repo.file("runs.log");
    // Each run writes "start end" (ns) in one line when its command is done.
    let body = format!(
        "a=$(date +%s%N); sleep 0.5; echo \"$a $(date +%s%N)\" >> {}",
        log.display()
    );
    std::thread::scope(|scope| {
        for id in ["sess-a", "sess-b", "sess-c"] {
            let (s, body) = (&s, &body);
            scope.spawn(move || {
                let r = run(s
                    .cli(Some(id))
                    .args([
                        "--wait", "30s", "lock", "run", "--file", STATE, "--", "sh", "-c",
                    ])
                    .arg(body));
                assert_eq!(r.code, 0, "{id}: {}", r.stderr);
            });
        }
    });
    let all = intervals(&log);
    assert_eq!(all.len(), 3);
    for w in all.windows(2) {
        assert!(w[0].1 <= w[1].0, "runs of two sessions overlapped: {all:?}");
    }
    // A `state` call inside still writes the session's copy, at once (its own lock).
    let started = std::time::Instant::now();
    let r = run(s.cli(Some("sess-a")).args([
        "--wait",
        "0",
        "lock",
        "run",
        "--file",
        STATE,
        "--",
        env!("CARGO_BIN_EXE_tractatus"),
        "state",
        "merge",
        STATE,
        r#"{"inner": 1}"#,
    ]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        s.repo
            .read(".claude/sessions/sess-a/session-state.json")
            .contains("inner")
    );
    assert_eq!(s.repo.read(STATE), r#"{"message_count": 0}"#);
}

#[test]
fn lock_run_file_of_a_per_session_file_takes_the_shared_lock_on_redis() {
    lock_run_file_of_a_per_session_file_takes_the_shared_lock(true);
}

#[test]
fn lock_run_file_of_a_per_session_file_takes_the_shared_lock_on_local_locks() {
    lock_run_file_of_a_per_session_file_takes_the_shared_lock(false);
}

fn activity_registers_no_session_and_ending_an_unknown_one_changes_nothing(on_redis: bool) {
    let repo = Repo::new();
    let redis = on_redis.then(RedisServer::start);
    repo.write(
        ".claude/tractatus-lock.toml",
        &format!(
            "namespace = \"phantoms-{on_redis}-{}\"\n",
            std::process::id()
        ),
    );
    let cli = || {
        let mut c = tractatus(&repo.path());
        c.env("TRACTATUS_QUIET", "1");
        if let Some(r) = &redis {
            c.env("TRACTATUS_REDIS", r.url());
        }
        c
    };
    let listed = || {
        let r = run(cli().args(["--json", "session", "list"]));
        assert_eq!(r.code, 0, "{}", r.stderr);
        let v: Value = serde_json::from_str(&r.stdout).unwrap();
        v["sessions"].as_array().unwrap().len()
    };
    // A run with no session hands its command a made-up id; its nested writes register nothing.
    for _ in 0..3 {
        let r = run(cli().args([
            "lock",
            "run",
            "--name",
            "x",
            "--",
            env!("CARGO_BIN_EXE_tractatus"),
            "state",
            "merge",
            ".claude/f.json",
            r#"{"a": 1}"#,
        ]));
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    // Nor does a write or a run in a session never started.
    let r = run(cli().env("TRACTATUS_SESSION_ID", "never-started").args([
        "state",
        "merge",
        ".claude/f.json",
        r#"{"b": 1}"#,
    ]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = run(cli()
        .env("TRACTATUS_SESSION_ID", "never-started")
        .args(["lock", "run", "--name", "y", "--", "true"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(listed(), 0, "activity registered a session");
    // Ending an unknown id: 1, one line, nothing recorded.
    let r = run(cli().args(["session", "end", "ghost"]));
    assert_eq!((r.code, r.stdout.as_str()), (1, ""), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("not registered"), "{}", r.stderr);
    let r = run(cli().args(["--json", "session", "end", "ghost"]));
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        (v["ended"].as_bool(), v["known"].as_bool()),
        (Some(false), Some(false))
    );
    assert_eq!(listed(), 0, "ending an unknown id registered it");
    // A started one is refreshed by its activity, and ends with 0.
    let r = run(cli().args(["session", "start", "--id", "real-1"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(listed(), 1);
    let r = run(cli().args(["session", "end", "real-1"]));
    assert_eq!(
        (r.code, r.stdout.trim()),
        (0, "session real-1 ended"),
        "{}",
        r.stderr
    );
}

#[test]
fn activity_registers_no_session_and_ending_an_unknown_one_changes_nothing_on_redis() {
    activity_registers_no_session_and_ending_an_unknown_one_changes_nothing(true);
}

#[test]
fn activity_registers_no_session_and_ending_an_unknown_one_changes_nothing_on_local_locks() {
    activity_registers_no_session_and_ending_an_unknown_one_changes_nothing(false);
}

#[test]
fn on_redis_a_config_file_without_a_namespace_says_which_line_to_add() {
    let repo = Repo::new();
    let redis = RedisServer::start();
    repo.write(
        ".claude/tractatus-lock.toml",
        &format!("per_session = [\"{STATE}\"]\n"),
    );
    let r = run(tractatus(&repo.path())
        .env("TRACTATUS_REDIS", redis.url())
        .args(["state", "merge", STATE, r#"{"a": 1}"#]));
    assert_eq!(r.code, 64, "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    let line = r
        .stderr
        .split("e.g. `")
        .nth(1)
        .and_then(|t| t.split('`').next());
    let line = line.unwrap_or_else(|| panic!("no line to add: {}", r.stderr));
    assert!(
        line.starts_with("namespace = \"") && line.len() > 20,
        "{line}"
    );
    // The line as given works.
    repo.write(
        ".claude/tractatus-lock.toml",
        &format!("{line}\nper_session = [\"{STATE}\"]\n"),
    );
    let r = run(tractatus(&repo.path())
        .env("TRACTATUS_REDIS", redis.url())
        .env("TRACTATUS_QUIET", "1")
        .args(["state", "merge", STATE, r#"{"a": 1}"#]));
    assert_eq!(r.code, 0, "{}", r.stderr);
}

/// Issue 19 item 5: a session's write that opened its copy, then waited for the copy's lock
/// while `session gc` collected the session (its directory moved to a tombstone, then removed:
/// done here by hand, as gc does it), read the copy as missing and said "no array at /log"
/// (65). Now it writes nothing there and runs once more: the copy is seeded afresh from the
/// shared file, as after any cleanup, and the write lands in it.
#[test]
fn a_write_whose_session_copy_gc_collected_while_it_waited_starts_again_from_the_template() {
    let s = Setup::new(true);
    s.repo.write(STATE, "{\"log\": []}\n");
    let append = |n: &str| ["--wait", "20s", "state", "append", STATE, "/log", n].map(String::from);
    let r = run(s.cli(Some("s1")).args(append("1")));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let copy = ".claude/sessions/s1/session-state.json";
    let (ready, go) = (s.repo.file("ready"), s.repo.file("go"));
    let _holder = Guard(
        s.cli(None)
            .args(["lock", "run", "--name", copy, "--", "sh", "-c"])
            .arg(r#"touch "$1"; while [ ! -e "$2" ]; do sleep 0.02; done"#)
            .args(["sh"])
            .arg(&ready)
            .arg(&go)
            .spawn()
            .unwrap(),
    );
    wait_until(Duration::from_secs(10), "the copy's lock is held", || {
        ready.exists()
    });
    let mut writer = Guard(
        s.cli(Some("s1"))
            .args(append("2"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let waiters = s.repo.keys(copy).waiters;
    let redis = s.redis.as_ref().unwrap();
    wait_until(
        Duration::from_secs(10),
        "the write waits for the lock",
        || redis.cmd(&["ZCARD", &waiters]) == "1",
    );
    let sessions = s.repo.file(".claude/sessions");
    std::fs::rename(sessions.join("s1"), sessions.join(".gc-s1-1")).unwrap();
    std::fs::remove_dir_all(sessions.join(".gc-s1-1")).unwrap();
    std::fs::write(&go, "").unwrap();
    let code = writer.wait_code(Duration::from_secs(20));
    let mut stderr = String::new();
    let _ = writer.0.stderr.take().unwrap().read_to_string(&mut stderr);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(s.repo.file(copy)).unwrap(),
        "{\n  \"log\": [\n    2\n  ]\n}\n"
    );
}
