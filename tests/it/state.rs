//! `tractatus state`: guarded read-modify-write of JSON state files, atomic commits, the fencing
//! check, crash safety, and bad input that leaves the file byte for byte as it was.
//!
//! Over 500 lines: one module per feature, whose tests share the helpers at its top; issue 22
//! splits it by sub-feature.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use tractatus_lock::config::parse_nodes;
use tractatus_lock::state::{StateFile, WriteOutcome};
use tractatus_lock::{AcquireOptions, Config, Coordinator, Error, Identity};

use crate::support::{
    Guard, RedisServer, Repo, alive, fixture, instruction_history, run, signal, tractatus,
    try_lock, wait_until,
};

const HISTORY: &str = ".claude/instruction-history.json";

fn ids(text: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(text).expect("state file parses");
    v["instructions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn eight_appenders_lose_nothing_and_readers_never_see_a_torn_file() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    repo.write(HISTORY, &instruction_history(20));
    let before = ids(&repo.read(HISTORY)).len();

    // A plain reader (no lock) reads all the time: every read must parse.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (stop, reads, path) = (stop.clone(), reads.clone(), repo.file(HISTORY));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let text = std::fs::read_to_string(&path).unwrap();
                serde_json::from_str::<serde_json::Value>(&text)
                    .unwrap_or_else(|e| panic!("torn read ({e}): {} bytes", text.len()));
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let (procs, each) = (8, 100);
    let writers: Vec<_> = (0..procs)
        .map(|p| {
            let (root, url) = (repo.path(), redis.url());
            std::thread::spawn(move || {
                let mut windows = Vec::new();
                for i in 0..each {
                    let entry = format!(r#"{{"id":"p{p}-{i}","text":"appended by writer {p}"}}"#);
                    let r = run(tractatus(&root).args([
                        "--redis",
                        &url,
                        "--wait",
                        "60s",
                        "--json",
                        "state",
                        "append",
                        HISTORY,
                        "/instructions",
                        &entry,
                    ]));
                    assert_eq!(r.code, 0, "append failed: {}", r.stderr);
                    let out: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
                    windows.push(out["window_us"].as_u64().unwrap());
                }
                windows
            })
        })
        .collect();
    let mut windows: Vec<u64> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    windows.sort_unstable();
    println!(
        "commit window (last validity check to rename done): p50 {} us, p99 {} us, max {} us",
        windows[windows.len() / 2],
        windows[windows.len() * 99 / 100],
        windows[windows.len() - 1]
    );
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();

    let all = ids(&repo.read(HISTORY));
    let mut added: Vec<&String> = all.iter().filter(|id| id.starts_with('p')).collect();
    let total = added.len();
    added.sort();
    added.dedup();
    println!(
        "guarded: {} of {} appended entries present ({} unique), {} plain reads all whole",
        total,
        procs * each,
        added.len(),
        reads.load(Ordering::Relaxed)
    );
    assert_eq!(all.len(), before + procs * each);
    assert_eq!(added.len(), procs * each, "an entry is missing or twice");
    assert!(reads.load(Ordering::Relaxed) > 0);

    // The control: the same workload as Tractatus does it today (read, parse, push, write in
    // place, no lock) loses entries.
    repo.write(HISTORY, &instruction_history(20));
    let path = repo.file(HISTORY);
    let controls: Vec<_> = (0..procs)
        .map(|p| {
            let path = path.clone();
            std::thread::spawn(move || {
                for i in 0..each {
                    let Ok(text) = std::fs::read_to_string(&path) else {
                        continue;
                    };
                    let Ok(mut doc) = serde_json::from_str::<serde_json::Value>(&text) else {
                        continue; // a torn read: Node's JSON.parse would throw here
                    };
                    doc["instructions"]
                        .as_array_mut()
                        .unwrap()
                        .push(serde_json::json!({"id": format!("p{p}-{i}")}));
                    let _ = std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap());
                }
            })
        })
        .collect();
    for c in controls {
        c.join().unwrap();
    }
    let text = repo.read(HISTORY);
    let kept = serde_json::from_str::<serde_json::Value>(&text)
        .map(|_| ids(&text).iter().filter(|id| id.starts_with('p')).count())
        .unwrap_or(0);
    println!(
        "unguarded control: {kept} of {} appended entries present",
        procs * each
    );
    assert!(
        kept < procs * each,
        "the control lost nothing: the workload does not contend"
    );
}

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

/// Run a state command that must fail with `code` and leave `rel` byte for byte as it was.
fn refused(repo: &Repo, url: &str, rel: &str, args: &[&str], code: i32) {
    let before = std::fs::read(repo.file(rel)).ok();
    let r = run(tractatus(&repo.path())
        .args(["--redis", url, "--wait", "5s", "state"])
        .args(args));
    assert_eq!(r.code, code, "{args:?}: {}", r.stderr);
    assert_eq!(
        r.stderr.trim().lines().count(),
        1,
        "{args:?}: want one line: {}",
        r.stderr
    );
    assert_eq!(
        std::fs::read(repo.file(rel)).ok(),
        before,
        "{args:?} changed the file"
    );
}

#[test]
fn bad_input_is_refused_with_its_code_and_the_file_is_untouched() {
    let redis = RedisServer::start();
    let url = redis.url();
    let repo = Repo::new();
    let cp = ".claude/token-checkpoints.json";
    repo.write(cp, &fixture("token-checkpoints.json"));
    repo.write(".claude/broken.json", "{\"budget\": 200000,");

    refused(
        &repo,
        &url,
        ".claude/broken.json",
        &["set", ".claude/broken.json", "/x", "1"],
        65,
    );
    refused(
        &repo,
        &url,
        ".claude/broken.json",
        &["get", ".claude/broken.json"],
        65,
    );
    refused(&repo, &url, cp, &["set", cp, "/overdue", "tru"], 65);
    refused(&repo, &url, cp, &["merge", cp, "{\"budget\":"], 65);
    // A merge patch is an object: any other JSON would replace the whole document.
    for patch in ["[1,2]", "3", "null", "\"x\""] {
        refused(&repo, &url, cp, &["merge", cp, patch], 65);
    }
    refused(&repo, &url, cp, &["append", cp, "/budget", "1"], 65);
    refused(&repo, &url, cp, &["append", cp, "/missing/list", "1"], 65);
    refused(&repo, &url, cp, &["set", cp, "/missing/x", "1"], 65);
    refused(&repo, &url, cp, &["set", cp, "overdue", "true"], 64);
    refused(&repo, &url, cp, &["set", cp, "/a~2", "true"], 64);
    refused(
        &repo,
        &url,
        cp,
        &["update", cp, "--", "sh", "-c", "echo not json"],
        65,
    );
    refused(
        &repo,
        &url,
        cp,
        &["update", cp, "--", "sh", "-c", "true"],
        65,
    );
    refused(&repo, &url, cp, &["set", "../outside.json", "/x", "1"], 64);
    refused(&repo, &url, cp, &["set", "/etc/hostname", "/x", "1"], 64);
    refused(
        &repo,
        &url,
        ".claude/new.json",
        &["update", ".claude/new.json", "--", "cat"],
        65,
    );
    // A failing filter: its own code comes back, nothing written.
    let before = repo.read(cp);
    let r = run(tractatus(&repo.path()).args([
        "--redis", &url, "state", "update", cp, "--", "sh", "-c", "exit 9",
    ]));
    assert_eq!(r.code, 9);
    assert!(
        r.stderr.contains("exited 9; nothing written"),
        "{}",
        r.stderr
    );
    assert_eq!(repo.read(cp), before);
    // JSON that starts with '-' is a value, not a flag.
    let r =
        run(tractatus(&repo.path()).args(["--redis", &url, "state", "set", cp, "/budget", "-1"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        repo.read(cp).contains("\"budget\": -1,"),
        "{}",
        repo.read(cp)
    );
    let before = repo.read(cp);
    // A filter exiting 2 (which would block a Claude Code hook) or with one of our codes: 65.
    for code in ["2", "69", "75", "76"] {
        let r = run(tractatus(&repo.path()).args([
            "--redis",
            &url,
            "state",
            "update",
            cp,
            "--",
            "sh",
            "-c",
            &format!("exit {code}"),
        ]));
        assert_eq!(r.code, 65, "exit {code}: {}", r.stderr);
        assert_eq!(repo.read(cp), before);
    }
}

#[test]
fn a_new_state_file_gets_the_mode_open_would_give_it() {
    use std::os::unix::fs::PermissionsExt;
    let redis = RedisServer::start();
    let repo = Repo::new();
    for (umask, want) in [("022", 0o644), ("077", 0o600)] {
        let rel = format!(".claude/new-{umask}.json");
        let r = run(std::process::Command::new("sh")
            .current_dir(repo.path())
            .args(["-c", &format!("umask {umask}; exec \"$0\" \"$@\"")])
            .arg(env!("CARGO_BIN_EXE_tractatus"))
            .args(["--redis", &redis.url(), "state", "set", &rel, "/n", "1"]));
        assert_eq!(r.code, 0, "{}", r.stderr);
        let mode = std::fs::metadata(repo.file(&rel))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, want, "umask {umask}: mode {mode:o}");
    }
    // An existing file keeps its own mode.
    let rel = ".claude/kept.json";
    repo.write(rel, "{}");
    std::fs::set_permissions(repo.file(rel), std::fs::Permissions::from_mode(0o640)).unwrap();
    let r = run(tractatus(&repo.path()).args([
        "--redis",
        &redis.url(),
        "state",
        "set",
        rel,
        "/n",
        "1",
    ]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mode = std::fs::metadata(repo.file(rel))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o640);
}

#[test]
fn an_unwritable_directory_gives_73_and_keeps_the_old_file() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    let rel = ".claude/metrics/hooks-metrics.json";
    repo.write(rel, "{\n  \"hooks\": []\n}");
    let make = |mode: u32, p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    // The process must not be root (root writes anywhere): drop to nobody when we are root.
    let mut cmd = if nix::unistd::geteuid().is_root() {
        make(0o755, repo.path().parent().unwrap());
        let mut c = std::process::Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_tractatus"),
        ]);
        c.current_dir(repo.path());
        c
    } else {
        tractatus(&repo.path())
    };
    make(0o755, &repo.path());
    make(0o777, &repo.file(".claude"));
    make(0o644, &repo.file(rel));
    make(0o555, &repo.file(".claude/metrics"));
    std::fs::create_dir_all(repo.file(".claude/.tractatus")).unwrap();
    make(0o777, &repo.file(".claude/.tractatus"));
    std::fs::write(
        repo.file(".claude/tractatus-lock.toml"),
        "namespace = \"perm-test\"\n",
    )
    .unwrap();
    let before = repo.read(rel);
    let r = run(cmd.args([
        "--redis",
        &redis.url(),
        "state",
        "append",
        rel,
        "/hooks",
        "{\"n\":1}",
    ]));
    make(0o755, &repo.file(".claude/metrics"));
    assert_eq!(r.code, 73, "{}", r.stderr);
    assert!(r.stderr.contains("hooks-metrics.json"), "{}", r.stderr);
    assert_eq!(repo.read(rel), before);
}

#[test]
fn writes_keep_the_node_layout_key_order_and_final_newline() {
    let redis = RedisServer::start();
    let url = redis.url();
    let repo = Repo::new();
    for (name, final_newline) in [
        ("instruction-history.v1.json", false),
        ("instruction-history.v2.json", true),
    ] {
        let rel = format!(".claude/{name}");
        let original = fixture(name);
        repo.write(&rel, &original);
        let r = run(tractatus(&repo.path()).args([
            "--redis",
            &url,
            "state",
            "append",
            &rel,
            "/instructions",
            r#"{"id":"inst_new","active":true}"#,
        ]));
        assert_eq!(r.code, 0, "{}", r.stderr);
        let after = repo.read(&rel);
        // Everything before the end of the array is untouched, byte for byte.
        let cut = original.rfind("\n  ]").unwrap();
        assert_eq!(
            &after[..cut],
            &original[..cut],
            "{name}: untouched part changed"
        );
        assert_eq!(
            after.ends_with('\n'),
            final_newline,
            "{name}: final newline"
        );
        assert!(
            after
                .contains("    {\n      \"id\": \"inst_new\",\n      \"active\": true\n    }\n  ]")
        );
    }
    // Setting a value that is already there rewrites nothing.
    let rel = ".claude/session-state.json";
    repo.write(rel, &fixture("session-state.json"));
    let mtime = std::fs::metadata(repo.file(rel))
        .unwrap()
        .modified()
        .unwrap();
    let r = run(tractatus(&repo.path()).args([
        "--redis",
        &url,
        "--json",
        "state",
        "set",
        rel,
        "/message_count",
        "42",
    ]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("\"unchanged\":true"), "{}", r.stdout);
    assert_eq!(
        std::fs::metadata(repo.file(rel))
            .unwrap()
            .modified()
            .unwrap(),
        mtime
    );
    // merge, set and get round trip.
    let r = run(tractatus(&repo.path()).args([
        "--redis",
        &url,
        "state",
        "merge",
        rel,
        r#"{"message_count":43,"alerts":null,"new":{"a":1}}"#,
    ]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = run(tractatus(&repo.path()).args(["--redis", &url, "state", "get", rel, "/new"]));
    assert_eq!(r.stdout, "{\n  \"a\": 1\n}\n");
    let doc: serde_json::Value = serde_json::from_str(&repo.read(rel)).unwrap();
    assert_eq!(doc["message_count"], 43);
    assert!(doc.get("alerts").is_none());
    // A missing file is created by set/merge/append with an object root.
    let r = run(tractatus(&repo.path()).args([
        "--redis",
        &url,
        "state",
        "set",
        ".claude/fresh.json",
        "/session_id",
        "\"x\"",
    ]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        repo.read(".claude/fresh.json"),
        "{\n  \"session_id\": \"x\"\n}"
    );
}

#[test]
fn a_broken_writer_that_commits_first_is_not_overwritten_by_the_next() {
    let redis = RedisServer::start();
    let url = redis.url();
    let repo = Repo::new();
    let rel = ".claude/session-state.json";
    repo.write(rel, "{\n  \"a\": 0,\n  \"b\": 0\n}");
    // Each writer's command read the same document and sets its own field after a while.
    let update = |field: &str, delay: &str, marker: &str| {
        let mut c = tractatus(&repo.path());
        c.args([
            "--redis", &url, "--wait", "10s", "state", "update", rel, "--", "sh", "-c",
        ])
        .arg(format!(
            "cat > /dev/null; : > {marker}; sleep {delay}; \
                 if [ {field} = a ]; then echo '{{\"a\": 1, \"b\": 0}}'; \
                 else echo '{{\"a\": 0, \"b\": 1}}'; fi"
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        c
    };
    let a_started = repo.file("a.started");
    let b_started = repo.file("b.started");
    let mut a = Guard(
        update("a", "1", &a_started.display().to_string())
            .spawn()
            .unwrap(),
    );
    wait_until(Duration::from_secs(10), "A's command runs", || {
        a_started.exists()
    });
    // An operator breaks A's lock while A still works; B takes it and reads the same document.
    let r = run(tractatus(&repo.path()).args(["--redis", &url, "lock", "break", rel, "--force"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut b = Guard(
        update("b", "2", &b_started.display().to_string())
            .spawn()
            .unwrap(),
    );
    wait_until(Duration::from_secs(10), "B's command runs", || {
        b_started.exists()
    });
    // A commits first (its token is above every committed one), then B tries to.
    let (a_code, b_code) = (
        a.wait_code(Duration::from_secs(20)),
        b.wait_code(Duration::from_secs(20)),
    );
    let doc: serde_json::Value = serde_json::from_str(&repo.read(rel)).unwrap();
    println!("A exit {a_code:?}, B exit {b_code:?}, file {doc}");
    // Whoever reported success has its change in the file: no update is lost silently.
    if a_code == Some(0) {
        assert_eq!(doc["a"], 1, "A's committed update was lost: {doc}");
    }
    if b_code == Some(0) {
        assert_eq!(doc["b"], 1, "B's committed update was lost: {doc}");
    }
    assert_eq!((a_code, b_code), (Some(0), Some(76)));
}

#[test]
fn a_write_by_a_program_that_takes_no_lock_is_not_overwritten() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    let rel = ".claude/session-state.json";
    repo.write(rel, "{\n  \"n\": 1\n}");
    // While our update runs, a plain writer (like today's Node hooks) rewrites the file in place.
    let r = run(tractatus(&repo.path())
        .args([
            "--redis",
            &redis.url(),
            "state",
            "update",
            rel,
            "--",
            "sh",
            "-c",
        ])
        .arg(format!(
            "cat > /dev/null; printf '{{\"n\": 2}}' > {}; echo '{{\"n\": 3}}'",
            repo.file(rel).display()
        )));
    assert_eq!(r.code, 76, "{}", r.stderr);
    assert!(
        r.stderr.contains("changed after it was read"),
        "{}",
        r.stderr
    );
    assert_eq!(
        repo.read(rel),
        "{\"n\": 2}",
        "the plain writer's update was lost"
    );
}

/// A coordinator on `url` in `repo`'s namespace, so that it contends with the CLI's leases.
async fn coordinator_for(repo: &Repo, url: &str, ttl: Duration, max_hold: Duration) -> Coordinator {
    let root = repo.path();
    let settings = tractatus_lock::settings::read_settings(&root).unwrap();
    let mut config = Config::new(parse_nodes(&[url]).unwrap());
    config.namespace = tractatus_lock::settings::ensure_namespace(&root, &settings).unwrap();
    config.ttl = ttl;
    config.node_timeout = ttl / 10;
    config.max_hold = max_hold;
    Coordinator::connect(config, Identity::current("it"))
        .await
        .unwrap()
}

#[tokio::test]
async fn begin_then_commit_holds_the_lease_and_a_change_in_between_is_a_conflict() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    let rel = ".claude/session-state.json";
    repo.write(rel, "{\n  \"n\": 1\n}\n");
    let c = coordinator_for(
        &repo,
        &redis.url(),
        Duration::from_secs(10),
        Duration::from_secs(60),
    )
    .await;
    let file = StateFile::open(&repo.path(), &repo.path(), Path::new(rel)).unwrap();
    let mut pending = file
        .begin(&c, &AcquireOptions::wait(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(pending.document(), Some(&serde_json::json!({"n": 1})));
    // The lease is held between the phases: the CLI cannot take it.
    let root = repo.path();
    let url = redis.url();
    let tried = tokio::task::spawn_blocking(move || try_lock(&root, &url, ["--file", rel]))
        .await
        .unwrap();
    assert_eq!(tried.code, 75, "{}", tried.stderr);

    // A program that takes no lock writes in between: the commit is refused, nothing written.
    let theirs = "{\n  \"n\": 1,\n  \"theirs\": true\n}\n";
    repo.write(rel, theirs);
    let mut doc = pending.document().unwrap().clone();
    doc["n"] = 2.into();
    let e = pending.commit(&doc).await.unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    assert_eq!(e.exit_code(), 76);
    assert_eq!(repo.read(rel), theirs);

    // Read again under the same lease, redo, commit: both changes are in the file.
    pending.reload().unwrap();
    let mut doc = pending.document().unwrap().clone();
    doc["n"] = 2.into();
    let token = pending.token();
    match pending.commit(&doc).await.unwrap() {
        WriteOutcome::Committed { token: t, .. } => assert_eq!(t, token),
        other => panic!("{other:?}"),
    }
    // A token commits once.
    assert_eq!(pending.commit(&doc).await.unwrap_err().exit_code(), 64);
    pending.release().await.unwrap();
    assert_eq!(repo.read(rel), "{\n  \"n\": 2,\n  \"theirs\": true\n}\n");

    // A file that does not exist yet: no document; committing creates it. Identical bytes are
    // not rewritten.
    let fresh =
        StateFile::open(&repo.path(), &repo.path(), Path::new(".claude/fresh.json")).unwrap();
    let mut pending = fresh.begin(&c, &AcquireOptions::default()).await.unwrap();
    assert_eq!(pending.document(), None);
    let doc = serde_json::json!({"a": [1]});
    assert!(matches!(
        pending.commit(&doc).await.unwrap(),
        WriteOutcome::Committed { .. }
    ));
    pending.release().await.unwrap();
    let mut pending = fresh.begin(&c, &AcquireOptions::default()).await.unwrap();
    assert!(matches!(
        pending.commit(&doc).await.unwrap(),
        WriteOutcome::Unchanged { .. }
    ));
    pending.release().await.unwrap();
    assert_eq!(
        repo.read(".claude/fresh.json"),
        "{\n  \"a\": [\n    1\n  ]\n}"
    );
}

#[tokio::test]
async fn a_lease_lost_before_commit_gives_76_and_leaves_the_file_untouched() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    let rel = ".claude/session-state.json";
    let before = "{\n  \"n\": 1\n}";
    repo.write(rel, before);
    // Renewal stops after half a second (max hold): the lease is then lost.
    let c = coordinator_for(
        &repo,
        &redis.url(),
        Duration::from_secs(1),
        Duration::from_millis(500),
    )
    .await;
    let file = StateFile::open(&repo.path(), &repo.path(), Path::new(rel)).unwrap();
    let mut pending = file.begin(&c, &AcquireOptions::default()).await.unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(10), pending.lease().lost())
        .await
        .expect("the lease is lost once its max hold is reached");
    println!("lost: {reason}");
    let e = pending
        .commit(&serde_json::json!({"n": 2}))
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), 76, "{e}");
    assert!(matches!(e, Error::LeaseLost { .. }), "{e}");
    let _ = pending.release().await;
    assert_eq!(repo.read(rel), before);
    let left: Vec<_> = std::fs::read_dir(repo.file(".claude"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tractatus-"))
        .collect();
    assert!(left.is_empty(), "temp files left: {left:?}");
}

#[test]
fn state_get_takes_no_lease_and_writes_nothing_to_the_audit_log() {
    let redis = RedisServer::start();
    let url = redis.url();
    let repo = Repo::new();
    let rel = ".claude/session-state.json";
    repo.write(rel, &fixture("session-state.json"));
    let ready = repo.file("holder.ready");
    let mut holder = Guard(
        tractatus(&repo.path())
            .args([
                "--redis", &url, "lock", "run", "--file", rel, "--", "sh", "-c",
            ])
            .arg(format!("touch {}; sleep 30", ready.display()))
            .spawn()
            .unwrap(),
    );
    wait_until(Duration::from_secs(10), "the holder runs", || {
        ready.exists()
    });
    let log = || {
        let r = run(tractatus(&repo.path()).args(["--redis", &url, "--json", "lock", "log"]));
        assert_eq!(r.code, 0, "{}", r.stderr);
        serde_json::from_str::<serde_json::Value>(&r.stdout).unwrap()
    };
    let before = log();
    let r = run(tractatus(&repo.path()).args([
        "--redis",
        &url,
        "--wait",
        "20s",
        "state",
        "get",
        rel,
        "/message_count",
    ]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "42\n");
    assert!(
        r.elapsed < Duration::from_secs(2),
        "waited behind the holder: {:?}",
        r.elapsed
    );
    assert_eq!(log(), before, "the read left a trace in the audit log");
    assert!(holder.0.try_wait().unwrap().is_none(), "the holder ended");

    // Nothing there is not bad data: exit 1, one line saying what is missing.
    let r = run(tractatus(&repo.path()).args(["--redis", &url, "state", "get", rel, "/missing"]));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(
        r.stderr.trim(),
        format!("tractatus: no value at /missing in {rel}")
    );
    let r =
        run(tractatus(&repo.path()).args(["--redis", &url, "state", "get", ".claude/none.json"]));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(
        r.stderr.trim(),
        "tractatus: .claude/none.json does not exist"
    );
    // Without Redis a read still works: it needs no coordinator at all.
    let r = run(tractatus(&repo.path()).args([
        "--redis",
        "redis://127.0.0.1:1",
        "state",
        "get",
        rel,
        "/message_count",
    ]));
    assert_eq!((r.code, r.stdout.as_str()), (0, "42\n"), "{}", r.stderr);
}

#[test]
fn a_fifo_as_the_state_file_is_refused_at_once_and_no_lease_is_left_held() {
    let redis = RedisServer::start();
    let url = redis.url();
    let repo = Repo::new();
    let rel = ".claude/fifo.json";
    nix::unistd::mkfifo(
        &repo.file(rel),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    for args in [
        vec!["set", rel, "/a", "1"],
        vec!["merge", rel, "{}"],
        vec!["update", rel, "--", "cat"],
        vec!["get", rel],
    ] {
        // Spawned, not run: on a build that hangs the test must still end.
        let mut child = Guard(
            tractatus(&repo.path())
                .args(["--redis", &url, "--wait", "5s", "state"])
                .args(&args)
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let start = Instant::now();
        let code = child.wait_code(Duration::from_secs(10));
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut stderr).unwrap();
        assert_eq!(code, Some(65), "{args:?}: {stderr}");
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{args:?} took {:?}",
            start.elapsed()
        );
        assert!(stderr.contains("not a regular file"), "{stderr}");
        let r = crate::support::try_lock(&repo.path(), &url, ["--file", rel]);
        assert_eq!(r.code, 0, "{args:?} left its lease held: {}", r.stderr);
    }
    assert!(
        std::fs::symlink_metadata(repo.file(rel))
            .unwrap()
            .file_type()
            .is_fifo()
    );
}

#[test]
fn a_fence_record_locked_by_a_stuck_writer_times_out_instead_of_hanging() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    let rel = ".claude/session-state.json";
    repo.write(rel, "{}");
    // A writer stopped mid-commit holds the file's fence record locked.
    let fence_dir = repo.file(".claude/.tractatus/fence");
    std::fs::create_dir_all(&fence_dir).unwrap();
    let record = std::fs::File::create(fence_dir.join(".claude%2Fsession-state.json")).unwrap();
    record.lock().unwrap();
    let mut child = Guard(
        tractatus(&repo.path())
            .args([
                "--redis",
                &redis.url(),
                "--ttl",
                "1s",
                "state",
                "set",
                rel,
                "/a",
                "1",
            ])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    let code = child.wait_code(Duration::from_secs(20));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut stderr).unwrap();
    println!("gave up after {:?}: {stderr}", start.elapsed());
    assert_eq!(code, Some(75), "{stderr}");
    assert!(stderr.contains("fence record"), "{stderr}");
    assert_eq!(repo.read(rel), "{}");
    let r = crate::support::try_lock(&repo.path(), &redis.url(), ["--file", rel]);
    assert_eq!(r.code, 0, "the lease was left held: {}", r.stderr);
    drop(record);
}

#[test]
fn a_document_too_deep_to_read_back_is_refused_and_the_limit_is_readable() {
    let redis = RedisServer::start();
    let url = redis.url();
    let repo = Repo::new();
    let rel = ".claude/deep.json";
    repo.write(rel, "{\n  \"list\": []\n}");
    let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    // The object and the list are two levels: 126 more is one too many to read back.
    refused(
        &repo,
        &url,
        rel,
        &["append", rel, "/list", &nested(126)],
        65,
    );
    let r = run(tractatus(&repo.path()).args([
        "--redis",
        &url,
        "state",
        "append",
        rel,
        "/list",
        &nested(125),
    ]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    // What was written reads back, by us and by the next writer.
    let r = run(tractatus(&repo.path()).args(["--redis", &url, "state", "get", rel, "/list/0"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = run(tractatus(&repo.path()).args(["--redis", &url, "state", "set", rel, "/n", "1"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    // A file nested deeper than can be read (written by another program) is refused by every
    // command, and never crashes one (each level of a deep document is a level of recursion).
    for levels in [128, 100_000] {
        repo.write(
            rel,
            &format!("{{\"list\": [], \"deep\": {}}}", nested(levels)),
        );
        for args in [
            vec!["append", rel, "/list", "1"],
            vec!["set", rel, "/n", "1"],
            vec!["merge", rel, "{}"],
            vec!["update", rel, "--", "cat"],
            vec!["get", rel],
        ] {
            refused(&repo, &url, rel, &args, 65);
        }
    }
}

#[test]
fn invalid_utf8_from_the_update_command_is_bad_data_and_nothing_is_written() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    let rel = ".claude/session-state.json";
    repo.write(rel, "{\n  \"a\": \"x\"\n}");
    refused(
        &repo,
        &redis.url(),
        rel,
        &[
            "update",
            rel,
            "--",
            "sh",
            "-c",
            r#"cat > /dev/null; printf '{"a": "\377"}'"#,
        ],
        65,
    );
}

#[test]
fn a_missing_directory_is_named_in_the_error() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    let rel = ".claude/nodir/state.json";
    let r = run(tractatus(&repo.path()).args([
        "--redis",
        &redis.url(),
        "state",
        "set",
        rel,
        "/a",
        "1",
    ]));
    assert_eq!(r.code, 73, "{}", r.stderr);
    let line = r.stderr.trim();
    // Named from the repository root, as every state-file message names paths.
    assert!(line.contains(".claude/nodir does not exist"), "{line}");
    assert!(
        !line.contains(".tractatus-"),
        "the temp file's path: {line}"
    );
    assert!(!repo.file(".claude/nodir").exists());
}

#[test]
fn appending_to_a_large_file_peaks_below_three_times_its_size() {
    let repo = Repo::new();
    // About 30 MB in Node's layout, built as text (building it as a document would be slow).
    let mut text = String::from("{\n  \"version\": \"3.5\",\n  \"instructions\": [");
    for i in 0..40_000 {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&format!(
            "\n    {{\n      \"id\": \"inst_{i}\",\n      \"text\": \"{}\",\n      \"parameters\": {{\n        \"threshold\": 0.75,\n        \"files\": [\n          \".claude/a.json\"\n        ]\n      }},\n      \"active\": true\n    }}",
            "Rule: check the session state and record the change. ".repeat(12)
        ));
    }
    text.push_str("\n  ]\n}\n");
    repo.write(HISTORY, &text);
    let size = text.len() as i64;
    drop(text);
    // The peak of this one child, measured by a parent of its own (python3's getrusage of its
    // children): this test process's own children figure would include other tests' children.
    let bin = env!("CARGO_BIN_EXE_tractatus");
    let r = run(tractatus_testkit::Cli::new("python3")
        .command(&repo.path())
        .args([
            "-c",
            "import resource, subprocess, sys\n\
             r = subprocess.run(sys.argv[1:])\n\
             print('peak_kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n\
             sys.exit(r.returncode)",
            bin,
            "state",
            "append",
            HISTORY,
            "/instructions",
            r#"{"id":"last"}"#,
        ]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let peak: i64 = r
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("peak_kib "))
        .and_then(|k| k.trim().parse::<i64>().ok())
        .expect("python3 reported the peak")
        * 1024;
    println!(
        "append to {} MB: peak RSS at most {} MB ({:.1}x) in {:?}",
        size >> 20,
        peak >> 20,
        peak as f64 / size as f64,
        r.elapsed
    );
    assert!(peak <= 3 * size, "peak {peak} bytes for a {size}-byte file");
    assert!(
        repo.read(HISTORY)
            .ends_with("    {\n      \"id\": \"last\"\n    }\n  ]\n}\n")
    );
}

#[test]
fn what_the_update_command_leaves_running_is_stopped_before_the_commit() {
    let repo = Repo::new();
    repo.write(".claude/s.json", "{\"n\": 1}\n");
    let pidfile = repo.file("worker.pid");
    // The command prints the document back and leaves a worker behind, as `sh -c 'x &'` or an
    // `npm run` wrapper does; a worker that outlives the lease could write unguarded.
    let r = run(tractatus(&repo.path()).args([
        "--quiet",
        "state",
        "update",
        ".claude/s.json",
        "--",
        "sh",
        "-c",
        "sleep 30 & echo $! > \"$0\"; cat",
        pidfile.to_str().unwrap(),
    ]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    // The worker holds the command's stdout too: the update must not wait for it to end.
    assert!(
        r.elapsed < Duration::from_secs(20),
        "the update waited for its command's worker: {:?}",
        r.elapsed
    );
    let worker: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _reap = crate::support::KillPid(worker);
    // Stopped before the update returned; its parent (init) may take a moment to reap it.
    wait_until(
        Duration::from_secs(2),
        "the update command's worker is gone",
        || !alive(worker),
    );
}
