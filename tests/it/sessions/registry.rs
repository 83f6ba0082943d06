//! The live session registry: list, end, bad ids refused, gc removing exactly the ended and
//! silent sessions, nothing created by looking, the registry on three masters.

use super::*;
use crate::support::tree as walk;

fn gc_removes_exactly_the_directories_of_ended_and_silent_sessions(on_redis: bool) {
    let s = Setup::new(on_redis);
    s.repo.write(STATE, r#"{"message_count": 0}"#);
    let idle = "2s";
    let write = |id: &str| {
        let r = run(s
            .cli(Some(id))
            .args(["state", "merge", STATE, r#"{"seen": true}"#]));
        assert_eq!(r.code, 0, "{id}: {}", r.stderr);
    };
    for id in ["silent-1", "live-1", "ended-1"] {
        s.start(id);
    }
    // The silent one writes first, and then says nothing.
    write("silent-1");
    // The live one keeps writing through a `lock run` that outlasts the test (it refreshes its
    // session every third of the idle time, at least every second).
    write("live-1");
    let holder = s
        .cli(Some("live-1"))
        .env("TRACTATUS_SESSION_IDLE", idle)
        .args(["lock", "run", "--name", "long-job", "--", "sleep", "60"])
        .spawn()
        .expect("spawn lock run");
    let _holder = Guard(holder);
    write("ended-1");
    let r = run(s.cli(None).args(["session", "end", "ended-1"]));
    assert_eq!(
        (r.code, r.stdout.trim()),
        (0, "session ended-1 ended"),
        "{}",
        r.stderr
    );
    // A directory the registry never knew, last written an hour ago.
    s.repo
        .write(".claude/sessions/stray-1/session-state.json", "{}");
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    for p in [
        ".claude/sessions/stray-1/session-state.json",
        ".claude/sessions/stray-1",
    ] {
        std::fs::File::open(s.repo.file(p))
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
    }
    assert_eq!(
        s.session_dirs(),
        ["ended-1", "live-1", "silent-1", "stray-1"]
    );

    wait_until(Duration::from_secs(30), "silent-1 is silent", || {
        s.states(idle)
            .contains(&("silent-1".to_owned(), "silent".to_owned()))
    });
    // The default keeps a day's worth.
    let r = run(s
        .cli(None)
        .env("TRACTATUS_SESSION_IDLE", idle)
        .args(["session", "gc"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(s.session_dirs().len(), 4, "{}", r.stdout);

    let gc = run(s.cli(None).env("TRACTATUS_SESSION_IDLE", idle).args([
        "--json",
        "session",
        "gc",
        "--older-than",
        "0",
    ]));
    assert_eq!(gc.code, 0, "{}", gc.stderr);
    let gc: Value = serde_json::from_str(&gc.stdout).unwrap();
    let mut removed: Vec<(String, String)> = gc["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                r["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    removed.sort();
    assert_eq!(
        removed,
        [
            ("ended-1".to_owned(), "ended".to_owned()),
            ("silent-1".to_owned(), "silent".to_owned()),
            ("stray-1".to_owned(), "unknown".to_owned()),
        ]
    );
    assert_eq!(s.session_dirs(), ["live-1"]);
    assert_eq!(s.states(idle), [("live-1".to_owned(), "live".to_owned())]);
    assert!(
        s.repo
            .file(".claude/sessions/live-1/session-state.json")
            .exists()
    );
}

#[test]
fn gc_removes_exactly_the_directories_of_ended_and_silent_sessions_on_redis() {
    gc_removes_exactly_the_directories_of_ended_and_silent_sessions(true);
}

#[test]
fn gc_removes_exactly_the_directories_of_ended_and_silent_sessions_on_local_locks() {
    gc_removes_exactly_the_directories_of_ended_and_silent_sessions(false);
}

fn sessions_are_listed_and_ended_and_bad_ids_refused(on_redis: bool) {
    let s = Setup::new(on_redis);
    s.repo.write(STATE, r#"{"message_count": 3}"#);
    let r = run(s.cli(None).args(["session", "start", "--id", "dev-a"]));
    assert_eq!((r.code, r.stdout.as_str()), (0, "dev-a\n"), "{}", r.stderr);
    let table = run(s.cli(None).args(["session", "list"]));
    let line = table.stdout.lines().nth(1).unwrap_or_default().to_owned();
    assert!(
        line.starts_with("dev-a ") && line.ends_with("live"),
        "{}",
        table.stdout
    );
    let r = run(s.cli(Some("dev-a")).args(["session", "end"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(s.states("30m"), [("dev-a".to_owned(), "ended".to_owned())]);
    // A straggling write does not undo the end; a new start does.
    let r = run(s.cli(Some("dev-a")).args(["state", "merge", STATE, "{}"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(s.states("30m"), [("dev-a".to_owned(), "ended".to_owned())]);
    let r = run(s.cli(None).args(["session", "start", "--id", "dev-a"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(s.states("30m"), [("dev-a".to_owned(), "live".to_owned())]);
    let r = run(s.cli(None).args(["session", "end"]));
    assert_eq!(r.code, 64, "no session given: {}", r.stderr);
    // A silent session is live again after one write.
    wait_until(Duration::from_secs(30), "dev-a is silent", || {
        s.states("300ms") == [("dev-a".to_owned(), "silent".to_owned())]
    });
    let now_ms = || {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    let before_write = now_ms();
    let r = run(s
        .cli(Some("dev-a"))
        .args(["state", "merge", STATE, r#"{"back": 1}"#]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let after = s.json(None, &["session", "list"]);
    let last = after["sessions"][0]["last_active_ms"].as_u64().unwrap();
    assert!(
        (before_write..=now_ms()).contains(&last),
        "last activity {last} is not the write's ({before_write}..)"
    );
    // A run with no session of its own hands its command none: the command writes the shared
    // file, as the run would, not a copy of a made-up session.
    let r = run(s.cli(None).args([
        "lock", "run", "--name", "hook", "--", "sh", "-c",
        "echo \"[$TRACTATUS_SESSION_ID]\"; \"$0\" state merge .claude/session-state.json '{\"hooked\": 1}'",
        env!("CARGO_BIN_EXE_tractatus"),
    ]));
    assert_eq!((r.code, r.stdout.trim()), (0, "[]"), "{}", r.stderr);
    assert!(s.repo.read(STATE).contains("hooked"));
    assert_eq!(s.session_dirs(), ["dev-a"]);
    // `lock run --file` of a per-session file takes the shared file's lock: its command is
    // opaque and may write the shared path itself.
    let r = run(s.cli(Some("dev-a")).args([
        "lock",
        "run",
        "--file",
        STATE,
        "--",
        "sh",
        "-c",
        "echo $TRACTATUS_LOCK_NAME",
    ]));
    assert_eq!((r.code, r.stdout.trim()), (0, STATE), "{}", r.stderr);

    let shared = s.repo.read(STATE);
    for bad in ["../evil", "a/b", ".hidden", "with space", ""] {
        for args in [
            vec!["session", "start", "--id", bad],
            vec!["session", "end", bad],
        ] {
            let r = run(s.cli(None).args(&args));
            assert_eq!(r.code, 64, "{args:?}: {}", r.stderr);
            assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
        }
        if bad.is_empty() {
            continue;
        }
        let r = run(s
            .cli(Some(bad))
            .args(["state", "merge", STATE, r#"{"x": 1}"#]));
        assert_eq!(r.code, 64, "{bad}: {}", r.stderr);
        assert!(r.stderr.contains("bad session id"), "{}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
        let r = run(s.cli(Some(bad)).args(["state", "path", STATE]));
        assert_eq!(r.code, 64, "{bad}: {}", r.stderr);
    }
    assert_eq!(s.repo.read(STATE), shared);
    assert!(!s.repo.file(".claude/evil").exists());
    // Refused where it enters, even for a file that is not per-session: the id is recorded
    // with the lease and shown to every operator (issue 18).
    let r = run(s
        .cli(Some("with space"))
        .args(["state", "set", ".claude/other.json", "/n", "1"]));
    assert_eq!(r.code, 64, "{}", r.stderr);
    assert!(
        r.stderr.contains("TRACTATUS_SESSION_ID: bad session id"),
        "{}",
        r.stderr
    );
    assert!(!s.repo.file(".claude/other.json").exists());
}

#[test]
fn sessions_are_listed_and_ended_and_bad_ids_refused_on_redis() {
    sessions_are_listed_and_ended_and_bad_ids_refused(true);
}

#[test]
fn sessions_are_listed_and_ended_and_bad_ids_refused_on_local_locks() {
    sessions_are_listed_and_ended_and_bad_ids_refused(false);
}

#[test]
fn looking_at_sessions_creates_nothing_and_registering_locally_keeps_it_out_of_git() {
    let redis = RedisServer::start();
    for on_redis in [true, false] {
        let repo = Repo::new();
        repo.write(
            ".claude/tractatus-lock.toml",
            &format!("namespace = \"fresh-{on_redis}\"\nper_session = [\"{STATE}\"]\n"),
        );
        let files = || {
            let mut all: Vec<_> = walk(&repo.path());
            all.sort();
            all
        };
        let before = files();
        let cli = || {
            let mut c = tractatus(&repo.path());
            c.env("TRACTATUS_QUIET", "1");
            if on_redis {
                c.env("TRACTATUS_REDIS", redis.url());
            }
            c
        };
        for args in [
            &["session", "list"][..],
            &["session", "gc", "--older-than", "0"],
            &["session", "stats", "/message_count"],
            &["--session", "s-1", "state", "path", STATE],
            &["--session", "s-1", "state", "get", STATE],
        ] {
            let r = run(cli().args(args));
            assert!(r.code == 0 || r.code == 1, "{args:?}: {}", r.stderr);
            assert_eq!(files(), before, "{args:?} on redis: {on_redis}");
        }
        let r = run(cli().args(["session", "start", "--id", "s-1"]));
        assert_eq!(r.code, 0, "{}", r.stderr);
        if !on_redis {
            assert_eq!(repo.read(".claude/.tractatus/.gitignore"), "*\n");
            assert!(repo.file(".claude/.tractatus/sessions/s-1.json").is_file());
        }
    }
}

#[test]
fn on_three_masters_the_registry_is_written_to_each_that_answers_and_read_as_their_union() {
    let mut masters = crate::support::cluster(3);
    let urls: Vec<String> = masters.iter().map(|m| m.url()).collect();
    let repo = Repo::new();
    repo.write(
        ".claude/tractatus-lock.toml",
        "namespace = \"rl-sessions\"\n",
    );
    let cli = || {
        let mut c = tractatus(&repo.path());
        c.env("TRACTATUS_QUIET", "1")
            .env("TRACTATUS_REDIS", urls.join(","));
        c
    };
    let start = |id: &str| {
        let r = run(cli().args(["session", "start", "--id", id]));
        assert_eq!(r.code, 0, "{id}: {}", r.stderr);
    };
    start("all-three");
    // On every master (its keys share one hash slot: see `keys::tests`).
    let keys = tractatus_lock::keys::SessionKeys::new("rl-sessions");
    for m in &masters {
        assert_eq!(m.cmd(&["HEXISTS", &keys.entries, "all-three"]), "1");
    }
    masters[0].kill();
    start("two-of-three");
    masters[1].kill();
    // One master is enough for an advisory registry.
    start("one-of-three");
    let listed = run(cli().args(["--json", "session", "list"]));
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    let v: Value = serde_json::from_str(&listed.stdout).unwrap();
    let mut ids: Vec<&str> = v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["all-three", "one-of-three", "two-of-three"]);
    masters[2].kill();
    let r = run(cli().args(["session", "start", "--id", "none"]));
    assert_eq!(r.code, 69, "{}", r.stderr);
    assert!(r.stderr.contains("unavailable"), "{}", r.stderr);
}
