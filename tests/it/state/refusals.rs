//! Bad input and odd files are refused with their exit code and the file stays byte for byte:
//! bad arguments, modes, unwritable or missing directories, FIFOs, stuck fence records,
//! documents too deep, invalid UTF-8.

use super::*;

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
