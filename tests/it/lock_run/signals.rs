//! Signals and the terminal: failing renewal warns the command and kills it with its workers,
//! SIGTERM and SIGINT are forwarded, Ctrl-C reaches the command once, and a command in its own
//! group still reads the terminal.

use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::read_pid;
use crate::support::{
    Guard, KillPid, RedisServer, Repo, alive, signal, tractatus, try_lock, wait_until,
};

#[test]
fn failing_renewal_warns_the_command_and_kills_it_and_its_workers_when_the_lease_runs_out() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    let marks = repo.file("marks");
    let worker_pid = repo.file("marks.worker");
    // The command ignores SIGTERM (it only notes it) and runs a worker that ignores it too:
    // only SIGKILL stops them, and the worker is not the direct child.
    let script = r#"
trap 'echo term >> "$1"' TERM
sh -c 'trap "" TERM; while :; do sleep 0.02; done' &
echo $! > "$1.worker"
echo started >> "$1"
while :; do sleep 0.02; done
"#;
    let mut c = tractatus(&repo.path());
    c.args([
        "--redis",
        &redis.url(),
        "--ttl",
        "1s",
        "--kill-grace",
        "30s",
        "lock",
        "run",
        "--name",
        "L",
        "--",
        "sh",
        "-c",
        script,
        "sh",
    ])
    .arg(&marks)
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let mut holder = Guard(c.spawn().unwrap());
    wait_until(Duration::from_secs(10), "the command runs", || {
        std::fs::read_to_string(&marks).is_ok_and(|s| s.contains("started"))
    });
    let worker = read_pid(&worker_pid);
    assert!(alive(worker));
    // Should this test fail, the worker must not outlive it.
    let _worker = KillPid(worker);
    // Redis stops answering: renewals time out, the lease runs out within one TTL.
    redis.pause();
    let paused = Instant::now();
    let status = holder.wait_code(Duration::from_secs(10));
    let took = paused.elapsed();
    redis.resume();
    let marks = std::fs::read_to_string(&marks).unwrap();
    println!("exit {status:?} {took:?} after Redis paused; marks: {marks:?}");
    assert_eq!(status, Some(76));
    assert!(
        marks.contains("term"),
        "no SIGTERM before the lease ran out: {marks:?}"
    );
    // SIGKILL came when the lease ran out (one TTL), not after the 30 s grace.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    wait_until(Duration::from_secs(2), "the worker is gone", || {
        !alive(worker)
    });
}

/// A command that notes each SIGINT and SIGTERM in "$1" as it arrives (`wait` is interrupted
/// by a trapped signal at once, so two signals a moment apart are noted twice), exits 7 on the
/// first SIGTERM, and otherwise ends by itself after about 1.5 s.
const NOTES_SIGNALS: &str = r#"
trap 'echo int >> "$1"' INT
trap 'echo term >> "$1"; exit 7' TERM
echo started >> "$1"
i=0
while [ $i -lt 75 ]; do sleep 0.02 & wait $!; i=$((i + 1)); done
"#;

#[test]
fn sigterm_and_sigint_are_forwarded_and_the_lock_is_released() {
    use std::os::unix::process::CommandExt;
    let redis = RedisServer::start();
    let repo = Repo::new();
    for (sig, mark, code) in [(Signal::SIGTERM, "term", 7), (Signal::SIGINT, "int", 0)] {
        let marks = repo.file(&format!("marks-{mark}"));
        let mut c = tractatus(&repo.path());
        c.args([
            "--redis",
            &redis.url(),
            "lock",
            "run",
            "--name",
            "L",
            "--",
            "sh",
            "-c",
            NOTES_SIGNALS,
            "sh",
        ])
        .arg(&marks)
        // Its own process group: no terminal's foreground, whoever runs the tests.
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let mut g = Guard(c.spawn().unwrap());
        wait_until(Duration::from_secs(10), "the command runs", || {
            std::fs::read_to_string(&marks).is_ok_and(|s| s.contains("started"))
        });
        signal(g.0.id(), sig);
        let status = g.wait_code(Duration::from_secs(10));
        let noted = std::fs::read_to_string(&marks).unwrap();
        assert_eq!(status, Some(code), "{sig}: {noted:?}");
        assert_eq!(noted.matches(mark).count(), 1, "{sig}: {noted:?}");
        let r = try_lock(&repo.path(), &redis.url(), ["--name", "L"]);
        assert_eq!(
            r.code, 0,
            "the lock was not released after {sig}: {}",
            r.stderr
        );
    }
}

#[test]
fn ctrl_c_at_a_terminal_reaches_the_command_once() {
    use std::io::Write;
    let redis = RedisServer::start();
    let repo = Repo::new();
    let marks = repo.file("marks");
    std::fs::write(repo.file("notes.sh"), NOTES_SIGNALS).unwrap();
    // `script` gives `tractatus` a pseudo-terminal whose foreground group it leads.
    let cmd = format!(
        "exec {} --redis {} lock run --name L -- sh notes.sh {}",
        env!("CARGO_BIN_EXE_tractatus"),
        redis.url(),
        marks.display()
    );
    let mut c = std::process::Command::new("script");
    c.args(["-qec", &cmd, "/dev/null"])
        .current_dir(repo.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut g = Guard(c.spawn().unwrap());
    wait_until(Duration::from_secs(10), "the command runs", || {
        std::fs::read_to_string(&marks).is_ok_and(|s| s.contains("started"))
    });
    // Ctrl-C typed at the terminal.
    g.0.stdin.as_mut().unwrap().write_all(b"\x03").unwrap();
    let status = g.wait_code(Duration::from_secs(10));
    let noted = std::fs::read_to_string(&marks).unwrap();
    assert_eq!(noted.matches("int").count(), 1, "{noted:?}");
    assert_eq!(status, Some(0), "{noted:?}");
}

#[test]
fn a_command_in_its_own_group_still_reads_the_terminal() {
    use std::io::Write;
    let redis = RedisServer::start();
    let repo = Repo::new();
    let got = repo.file("got");
    // The command runs in its own process group: it can read the terminal only because that
    // group is given the terminal's foreground (else SIGTTIN would stop it).
    let cmd = format!(
        "exec {} --redis {} lock run --name L -- sh -c 'read line; echo \"$line\" > {}'",
        env!("CARGO_BIN_EXE_tractatus"),
        redis.url(),
        got.display()
    );
    let mut c = std::process::Command::new("script");
    c.args(["-qec", &cmd, "/dev/null"])
        .current_dir(repo.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut g = Guard(c.spawn().unwrap());
    // Typed at once: the terminal keeps the line until the command reads it.
    g.0.stdin.as_mut().unwrap().write_all(b"typed\n").unwrap();
    let status = g.wait_code(Duration::from_secs(10));
    assert_eq!(status, Some(0));
    assert_eq!(std::fs::read_to_string(&got).unwrap().trim(), "typed");
}
