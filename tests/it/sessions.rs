//! Sessions that see each other (issue 12), on one Redis and on local locks alike: per-session
//! state files that keep each session's count apart while the shared file stays as it was,
//! totals across sessions, the id taken from a Claude Code hook payload passed through byte for
//! byte, the live registry (list, end), cleanup that removes exactly the directories of ended
//! and silent sessions, and session ids refused where they would name a directory.
//!
//! Over 500 lines: one module per feature, whose tests share the helpers at its top; issue 22
//! splits it by sub-feature.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::support::{Guard, RedisServer, Repo, run, tractatus, wait_until};

const STATE: &str = ".claude/session-state.json";

/// A repository whose `session-state.json` is per-session, and how to call `tractatus` in it
/// on one backend.
struct Setup {
    repo: Repo,
    redis: Option<RedisServer>,
}

impl Setup {
    fn new(on_redis: bool) -> Setup {
        let repo = Repo::new();
        // A namespace of its own: the test's Redis is fresh, but `lock run` looks for earlier
        // holders' process groups on this host by namespace and lock name, across tests.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        repo.write(
            ".claude/tractatus-lock.toml",
            &format!(
                "namespace = \"sessions-{}-{n}\"\nper_session = [\"{STATE}\", \".claude/token-checkpoints.json\"]\n",
                std::process::id()
            ),
        );
        Setup {
            repo,
            redis: on_redis.then(RedisServer::start),
        }
    }

    /// `tractatus` in the repository, on this backend, in `session` (if any), no notices.
    fn cli(&self, session: Option<&str>) -> Command {
        let mut c = tractatus(&self.repo.path());
        c.env("TRACTATUS_QUIET", "1");
        if let Some(r) = &self.redis {
            c.env("TRACTATUS_REDIS", r.url());
        }
        if let Some(s) = session {
            c.env("TRACTATUS_SESSION_ID", s);
        }
        c
    }

    fn json(&self, session: Option<&str>, args: &[&str]) -> Value {
        let r = run(self.cli(session).arg("--json").args(args));
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", r.stdout))
    }

    /// `session start --id ID`: only a start registers a session.
    fn start(&self, id: &str) {
        let r = run(self.cli(None).args(["session", "start", "--id", id]));
        assert_eq!(r.code, 0, "{id}: {}", r.stderr);
    }

    /// Each registered session's state, by id.
    fn states(&self, idle: &str) -> Vec<(String, String)> {
        let r = run(self
            .cli(None)
            .env("TRACTATUS_SESSION_IDLE", idle)
            .args(["--json", "session", "list"]));
        assert_eq!(r.code, 0, "{}", r.stderr);
        let v: Value = serde_json::from_str(&r.stdout).unwrap();
        let mut all: Vec<(String, String)> = v["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let text = |k: &str| s[k].as_str().unwrap().to_owned();
                (text("id"), text("state"))
            })
            .collect();
        all.sort();
        all
    }

    /// The session directories left under `.claude/sessions/`, sorted.
    fn session_dirs(&self) -> Vec<String> {
        let mut dirs: Vec<String> = std::fs::read_dir(self.repo.file(".claude/sessions"))
            .map(|l| {
                l.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().into_string().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        dirs.sort();
        dirs
    }
}

/// A Python one-liner for `state update`: `message_count + 1`, the rest kept.
const INCREMENT: &str = "import json,sys; d=json.load(sys.stdin); d['message_count'] += 1; \
                         sys.stdout.write(json.dumps(d, indent=2))";

fn two_sessions_keep_their_own_counts_and_stats_add_them_up(on_redis: bool) {
    let s = Setup::new(on_redis);
    let mut shared: Value = serde_json::from_str(&crate::support::fixture("session-state.json"))
        .expect("fixture parses");
    shared["message_count"] = 0.into();
    let shared = serde_json::to_string_pretty(&shared).unwrap();
    s.repo.write(STATE, &shared);

    // Two sessions at once, each with two hooks of its own writing at once: 2 x 25 each.
    let sessions = [
        "019a0000-aaaa-7000-8000-000000000001",
        "019a0000-bbbb-7000-8000-000000000002",
    ];
    for id in sessions {
        s.start(id);
    }
    std::thread::scope(|scope| {
        for id in sessions {
            for _ in 0..2 {
                let s = &s;
                scope.spawn(move || {
                    for _ in 0..25 {
                        let r = run(s.cli(Some(id)).args([
                            "--wait", "60s", "state", "update", STATE, "--", "python3", "-c",
                            INCREMENT,
                        ]));
                        assert_eq!(r.code, 0, "{id}: {}", r.stderr);
                    }
                });
            }
        }
    });

    for id in sessions {
        let own = s.json(Some(id), &["state", "path", STATE]);
        let path = own["path"].as_str().unwrap();
        assert_eq!(
            Path::new(path),
            s.repo
                .file(&format!(".claude/sessions/{id}/session-state.json"))
        );
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(doc["message_count"], 50, "session {id}");
        // Started from the shared file: its other fields came along.
        assert_eq!(doc["token_estimate"], 61234);
        let got = run(s
            .cli(Some(id))
            .args(["state", "get", STATE, "/message_count"]));
        assert_eq!(got.stdout.trim(), "50");
    }
    assert_eq!(s.repo.read(STATE), shared, "the shared file was touched");
    let no_session = run(s.cli(None).args(["state", "get", STATE, "/message_count"]));
    assert_eq!(no_session.stdout.trim(), "0");

    let stats = s.json(
        None,
        &["session", "stats", "/message_count", "/token_estimate"],
    );
    println!("session stats: {stats}");
    assert_eq!(stats["live"], 2);
    assert_eq!(stats["fields"]["/message_count"]["sum"], 100);
    assert_eq!(stats["fields"]["/message_count"]["max"], 50);
    assert_eq!(stats["fields"]["/message_count"]["sessions"], 2);
    assert_eq!(stats["fields"]["/token_estimate"]["sum"], 2 * 61234);
    let table = run(s.cli(None).args(["session", "stats", "/message_count"]));
    assert!(
        table
            .stdout
            .contains("2 live sessions, 2 with .claude/session-state.json"),
        "{}",
        table.stdout
    );
}

#[test]
fn two_sessions_keep_their_own_counts_and_stats_add_them_up_on_redis() {
    two_sessions_keep_their_own_counts_and_stats_add_them_up(true);
}

#[test]
fn two_sessions_keep_their_own_counts_and_stats_add_them_up_on_local_locks() {
    two_sessions_keep_their_own_counts_and_stats_add_them_up(false);
}

/// `cmd` with `input` on its stdin: exit code, stdout bytes, stderr.
fn feed(cmd: &mut Command, input: &[u8]) -> (i32, Vec<u8>, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let mut guard = Guard(child);
    let code = guard.wait_code(Duration::from_secs(60)).unwrap_or(-1);
    let mut out = Vec::new();
    let mut err = String::new();
    use std::io::Read;
    guard
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    guard
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (code, out, err)
}

fn session_start_from_hook_takes_the_id_and_passes_the_payload_through(on_redis: bool) {
    let s = Setup::new(on_redis);
    let id = "3f1c9e2a-5b7d-4c8e-9f10-a1b2c3d4e5f6";
    // What Claude Code sends a SessionStart hook, with odd whitespace, raw and escaped
    // unicode, CRLF, a tab and no final newline.
    let payload = format!(
        "{{\r\n  \"session_id\" :\t\"{id}\",\n\"transcript_path\":\"/home/dév/.claude/projects/x/{id}.jsonl\",  \
         \"cwd\": \"/work/ünïcödé ✓\", \"hook_event_name\":\"SessionStart\",\"source\":\"startup\", \
         \"note\": \"\\u00e9\\ud83d\\ude00 😀\"   }}\t "
    );
    let env_file = s.repo.file("claude-env");
    let (code, out, err) = feed(
        s.cli(None)
            .env("CLAUDE_ENV_FILE", &env_file)
            .args(["session", "start", "--from-hook"]),
        payload.as_bytes(),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        payload.as_bytes(),
        "stdout is not the payload, byte for byte"
    );
    assert_eq!(
        std::fs::read_to_string(&env_file).unwrap(),
        format!("export TRACTATUS_SESSION_ID={id}\n")
    );
    assert_eq!(s.states("30m"), [(id.to_owned(), "live".to_owned())]);
    let listed = s.json(None, &["session", "list"]);
    let entry = &listed["sessions"][0];
    assert_eq!(entry["repository"], s.repo.path().display().to_string());
    assert!(entry["pid"].as_u64().unwrap() > 0 && !entry["host"].as_str().unwrap().is_empty());

    // Not JSON, or no session id: 65, and the payload still goes on.
    for bad in [
        &b"not json \xff"[..],
        br#"{"hook_event_name": "SessionStart"}"#,
    ] {
        let (code, out, _) = feed(s.cli(None).args(["session", "start", "--from-hook"]), bad);
        assert_eq!((code, out.as_slice()), (65, bad));
    }
    // Without --from-hook: a fresh id, printed.
    let r = run(s.cli(None).args(["session", "start"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let fresh = r.stdout.trim();
    assert_eq!(fresh.len(), 36, "{fresh}");
    assert_eq!(s.states("30m").len(), 2);
}

#[test]
fn session_start_from_hook_takes_the_id_and_passes_the_payload_through_on_redis() {
    session_start_from_hook_takes_the_id_and_passes_the_payload_through(true);
}

#[test]
fn session_start_from_hook_takes_the_id_and_passes_the_payload_through_on_local_locks() {
    session_start_from_hook_takes_the_id_and_passes_the_payload_through(false);
}

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

/// Every path under `dir`, relative.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut all = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p.clone());
            }
            all.push(p.strip_prefix(dir).unwrap().to_path_buf());
        }
    }
    all
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
