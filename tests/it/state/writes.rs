//! How a commit writes: the Node layout and key order, never over a commit it did not see
//! (a broken writer's, a lock-less program's), memory bounded on large files, the update
//! command's leftovers stopped first.

use super::*;

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
