//! What other processes and the environment put in front of an operator, and what `state
//! update`'s command may do (issue 18, items 7, 8, 10 and two of 11): hostile session ids, host
//! names and command lines are shown escaped in `lock status`, `lock log` and the wait line,
//! nothing there can panic, bad ids are refused where they enter, and the update's command
//! neither outlives the update (even by `setsid`) nor prints without bound nor hangs past
//! `--max-hold` on local locks.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::{Guard, KillPid, RedisServer, Repo, alive, run, tractatus, wait_until};

/// A line forged into the audit log by a newline in a field: it must never start a line.
const FORGED: &str = "FORGED 2026-01-01 00:00:00.000  break  guarded";

/// Everything a terminal acts on: OSC title and hyperlink, screen clear, CSI in C1, a bidi
/// override, and a newline and carriage return that forge a line.
fn hostile(tag: &str) -> String {
    format!(
        "{tag}\x1b]0;owned-title\x07\x1b[2J\x1b]8;;http://evil.example/\x07link\x1b]8;;\x07\u{9b}31m\u{202e}rev\r\n{FORGED}"
    )
}

/// No byte a terminal would act on, and no forged line, in `text` (our own wait line's `\r` and
/// `ESC [ K` aside when `ours_allowed`).
fn assert_inert(what: &str, text: &str, ours_allowed: bool) {
    let text = if ours_allowed {
        text.replace("\x1b[K", "").replace('\r', "\n")
    } else {
        text.to_owned()
    };
    for bad in ['\x1b', '\x07', '\u{9b}', '\u{202e}', '\u{2028}'] {
        assert!(
            !text.contains(bad),
            "{what} holds a raw {bad:?}:\n{}",
            text.escape_debug()
        );
    }
    if !ours_allowed {
        assert!(!text.contains('\r'), "{what} holds a raw CR");
    }
    for line in text.lines() {
        assert!(
            !line.trim_start().starts_with("FORGED"),
            "{what} has a forged line: {line:?}"
        );
    }
}

fn now_ms() -> String {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string()
}

/// A `lock run` holding `guarded` whose command line carries the escapes (any user may run
/// one), then what an older or hostile client writes straight into Redis: `host` as the holder's
/// host and in an audit entry, escapes in the sessions and in who acted.
fn hostile_holder(redis: &RedisServer, repo: &Repo, host: &str) -> Guard {
    let url = redis.url();
    let pidfile = repo.file("holder.pid");
    let holder = Guard(
        tractatus(&repo.path())
            .args(["--redis", &url, "lock", "run", "--name", "guarded", "--"])
            .args(["sh", "-c", "echo $$ > \"$1\"; exec sleep 60", "sh"])
            .arg(&pidfile)
            .arg(hostile("cmd"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    pid_in(&pidfile);
    let keys = repo.keys("guarded");
    redis.cmd(&[
        "HSET",
        &keys.holder,
        "session",
        &hostile("sess"),
        "host",
        host,
    ]);
    redis.cmd(&[
        "XADD",
        &keys.log,
        "*",
        "event",
        &hostile("event"),
        "owner",
        "forged-owner",
        "session",
        &hostile("logsess"),
        "host",
        host,
        "pid",
        "1",
        "token",
        "1",
        "at",
        &now_ms(),
        "by_session",
        &hostile("by"),
        "by_host",
        "h",
        "by_pid",
        "2",
    ]);
    holder
}

#[test]
fn hostile_sessions_hosts_and_commands_are_shown_escaped_in_status_log_and_the_wait_line() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    let url = redis.url();
    let _holder = hostile_holder(&redis, &repo, &hostile("host"));

    let status = run(tractatus(&repo.path()).args(["--redis", &url, "lock", "status"]));
    assert_eq!(status.code, 0, "lock status: {}", status.stderr);
    assert_inert("lock status", &status.stdout, false);
    assert!(
        status
            .stdout
            .contains("sess\\x1b]0;owned-title\\x07\\x1b[2J"),
        "the session is shown, escaped: {}",
        status.stdout
    );
    assert!(status.stdout.contains("\\u{202e}rev\\r\\nFORGED"));
    assert!(status.stdout.contains("host\\x1b]0;owned-title"));
    assert!(status.stdout.contains("cmd\\x1b]0;owned-title"));

    let log = run(tractatus(&repo.path()).args(["--redis", &url, "lock", "log"]));
    assert_eq!(log.code, 0, "lock log: {}", log.stderr);
    assert_inert("lock log", &log.stdout, false);
    assert!(
        log.stdout.contains("logsess\\x1b]0;owned-title"),
        "{}",
        log.stdout
    );
    assert!(
        log.stdout.contains("by\\x1b]0;owned-title"),
        "{}",
        log.stdout
    );
    // JSON stays exact JSON: the fields whole, controls in JSON's own escapes.
    let json = run(tractatus(&repo.path()).args(["--redis", &url, "--json", "lock", "log"]));
    assert_eq!(json.code, 0, "{}", json.stderr);
    let events: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["session"] == hostile("logsess").as_str())
    );
    assert!(!json.stdout.contains('\x1b'));

    // A waiter on a terminal: its wait line and its final error name the holder.
    let waiter = run(tractatus_testkit::Cli::new("python3")
        .command(&repo.path())
        .args([
            "-c",
            "import pty, sys\npty.spawn(sys.argv[1:])",
            env!("CARGO_BIN_EXE_tractatus"),
            "--redis",
            &url,
            "--wait",
            "1500ms",
            "lock",
            "run",
            "--name",
            "guarded",
            "--",
            "true",
        ]));
    assert!(
        waiter.stdout.contains("waiting") && waiter.stdout.contains("held by session sess"),
        "no wait line on the terminal: {}",
        waiter.stdout.escape_debug()
    );
    assert_inert("the waiter's terminal", &waiter.stdout, true);
}

#[test]
fn a_field_over_65535_characters_is_cut_and_panics_neither_lock_status_nor_lock_log() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    let url = redis.url();
    let _holder = hostile_holder(&redis, &repo, &"h".repeat(70_000));
    for view in ["status", "log"] {
        let r = run(tractatus(&repo.path()).args(["--redis", &url, "lock", view]));
        assert_eq!(r.code, 0, "lock {view}: {}", r.stderr);
        assert!(
            r.stdout.contains(&format!("{}…(+", "h".repeat(200))),
            "lock {view} cuts the long host: {}",
            r.stdout
        );
        assert!(
            r.stdout.len() < 10_000,
            "lock {view}: {} bytes",
            r.stdout.len()
        );
    }
}

#[test]
fn bad_session_ids_and_host_names_are_refused_where_they_enter() {
    let repo = Repo::new();
    repo.write(".claude/s.json", "{\"n\": 1}\n");
    let merge = |c: &mut std::process::Command| {
        run(c.args(["state", "merge", ".claude/s.json", "{\"n\": 2}"]))
    };
    let r = merge(tractatus(&repo.path()).env("TRACTATUS_HOST", "evil\x1b]0;t\x07"));
    assert_eq!(r.code, 64, "{}", r.stderr);
    assert!(
        r.stderr.contains("TRACTATUS_HOST: bad host name"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains('\x1b'), "{}", r.stderr);
    let r = merge(tractatus(&repo.path()).env("TRACTATUS_HOST", "h".repeat(254)));
    assert_eq!(r.code, 64, "{}", r.stderr);
    let r = merge(tractatus(&repo.path()).env("TRACTATUS_SESSION_ID", "s\nFORGED"));
    assert_eq!(r.code, 64, "{}", r.stderr);
    assert!(
        r.stderr.contains("TRACTATUS_SESSION_ID: bad session id"),
        "{}",
        r.stderr
    );
    let r = merge(tractatus(&repo.path()).args(["--session", "s\x1b[2J"]));
    assert_eq!(r.code, 64, "{}", r.stderr);
    assert!(
        r.stderr.contains("--session: bad session id"),
        "{}",
        r.stderr
    );
    assert_eq!(repo.read(".claude/s.json"), "{\"n\": 1}\n");
    // Good ones pass.
    let r = merge(
        tractatus(&repo.path())
            .env("TRACTATUS_HOST", "ci-runner-7.example")
            .env("TRACTATUS_SESSION_ID", "s-1"),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
}

/// The pid a script wrote to `path`, once written.
fn pid_in(path: &Path) -> u32 {
    let mut pid = 0;
    wait_until(Duration::from_secs(10), "the pid file is written", || {
        pid = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        pid != 0
    });
    pid
}

#[test]
fn an_update_commands_setsid_child_is_gone_before_the_update_returns() {
    let repo = Repo::new();
    repo.write(".claude/s.json", "{\"n\": 1}\n");
    let pidfile = repo.file("escaped.pid");
    // A child that leaves the group and the session, its output elsewhere, to write the file
    // unguarded once the update is over.
    repo.write(
        "escape.sh",
        "setsid sh -c 'echo $$ > \"$1\"; sleep 0.5; echo \"{\\\"child\\\": 1}\" > .claude/s.json' \
         sh \"$1\" >/dev/null 2>&1 < /dev/null &\n\
         cat > /dev/null\n\
         while [ ! -s \"$1\" ]; do sleep 0.01; done\n\
         echo '{\"update\": 1}'\n",
    );
    let r = run(tractatus(&repo.path())
        .args(["--quiet", "state", "update", ".claude/s.json", "--"])
        .args(["sh", "escape.sh"])
        .arg(&pidfile));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let child = pid_in(&pidfile);
    let _reap = KillPid(child);
    // Gone before the update returned: the shell that would write the file later is no more,
    // so nothing can land after the update's document (no need to wait out its time).
    assert!(!alive(child), "the setsid child outlived the update");
    assert_eq!(repo.read(".claude/s.json"), "{\n  \"update\": 1\n}\n");
}

#[test]
fn an_update_printing_past_the_cap_is_stopped_with_65_and_memory_stays_bounded() {
    let repo = Repo::new();
    repo.write(".claude/s.json", "{\"n\": 1}\n");
    // 400 MiB of output against a cap of 64 MiB (four times a tiny document, at least 64 MiB).
    let r = run(tractatus_testkit::Cli::new("python3")
        .command(&repo.path())
        .args([
            "-c",
            "import resource, subprocess, sys\n\
             r = subprocess.run(sys.argv[1:])\n\
             print('peak_kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n\
             sys.exit(r.returncode)",
            env!("CARGO_BIN_EXE_tractatus"),
            "state",
            "update",
            ".claude/s.json",
            "--",
            "head",
            "-c",
            "400M",
            "/dev/zero",
        ]));
    assert_eq!(r.code, 65, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("the command printed more than 67108864 bytes (64 MiB"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("nothing written"), "{}", r.stderr);
    let peak_mib: u64 = r
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("peak_kib "))
        .and_then(|k| k.trim().parse::<u64>().ok())
        .expect("python3 reported the peak")
        >> 10;
    println!(
        "update printing 400 MiB: peak RSS {peak_mib} MiB in {:?}",
        r.elapsed
    );
    assert!(peak_mib < 200, "peak RSS {peak_mib} MiB");
    assert_eq!(repo.read(".claude/s.json"), "{\"n\": 1}\n");
}

#[test]
fn a_hung_update_on_local_locks_is_stopped_at_max_hold() {
    let repo = Repo::new();
    repo.write(".claude/s.json", "{\"n\": 1}\n");
    let pidfile = repo.file("hung.pid");
    let r = run(tractatus(&repo.path())
        .args([
            "--quiet",
            "--ttl",
            "1s",
            "--max-hold",
            "2s",
            "state",
            "update",
            ".claude/s.json",
        ])
        .args(["--", "sh", "-c", "echo $$ > \"$0\"; exec sleep 20"])
        .arg(&pidfile));
    let hung = pid_in(&pidfile);
    let _reap = KillPid(hung);
    assert_eq!(r.code, 76, "{}", r.stderr);
    assert!(r.stderr.contains("--max-hold"), "{}", r.stderr);
    assert!(r.elapsed < Duration::from_secs(10), "{:?}", r.elapsed);
    assert!(!alive(hung), "the hung command outlived the update");
    assert_eq!(repo.read(".claude/s.json"), "{\"n\": 1}\n");
}
