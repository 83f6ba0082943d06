//! Exit codes and what the command gets: an unreachable Redis (69, no password shown), usage
//! errors (64, never 2), the command's environment, stdio and exit code.

use std::process::Stdio;
use std::time::Duration;

use crate::support::{RedisServer, Repo, run, tractatus};

#[test]
fn unreachable_redis_exits_69_fast_without_leaking_the_password() {
    let repo = Repo::new();
    // A port nobody listens on: bind, read the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://user:hunter2secret@127.0.0.1:{port}");
    let r = run(tractatus(&repo.path()).args([
        "--redis",
        &url,
        "--connect-timeout",
        "500ms",
        "lock",
        "run",
        "--name",
        "X",
        "--",
        "true",
    ]));
    assert_eq!(r.code, 69, "{}", r.stderr);
    assert!(
        r.elapsed < Duration::from_millis(500 + 400),
        "{:?}",
        r.elapsed
    );
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("127.0.0.1:{port}")),
        "{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("hunter2") && !r.stdout.contains("hunter2"),
        "{}",
        r.stderr
    );
}

#[test]
fn usage_errors_exit_64_never_2() {
    let repo = Repo::new();
    let cases: &[&[&str]] = &[
        &[
            "lock",
            "run",
            "--name",
            "X",
            "--wait",
            "5 parsecs",
            "--",
            "true",
        ],
        &["lock", "run", "--name", "X"],
        &["lock", "run", "--", "true"],
        &["lock", "run", "--bogus", "--", "true"],
        &[
            "--redis",
            "redis://127.0.0.1:1",
            "--redis",
            "redis://127.0.0.1:2",
            "lock",
            "status",
        ],
        &["--redis", "http://127.0.0.1:1", "lock", "status"],
        &["lock", "run", "--name", "../escape", "--", "true"],
        &["lock", "break", "X"],
        &["nonsense"],
        &[],
        &["lock"],
        &["state"],
        &[
            "--redis",
            "redis://127.0.0.1:1,redis://127.0.0.1:2,redis://127.0.0.1:3",
            "--ttl",
            "11s",
            "lock",
            "status",
        ],
    ];
    for args in cases {
        let r = run(tractatus(&repo.path()).args(*args));
        assert_eq!(r.code, 64, "{args:?}: {}", r.stderr);
        assert_eq!(
            r.stderr.lines().count(),
            1,
            "{args:?}: not one line: {}",
            r.stderr
        );
    }
}

#[test]
fn command_gets_its_environment_stdio_and_exit_code() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    let mut c = tractatus(&repo.path());
    c.env("TRACTATUS_SESSION_ID", "sess-123")
        .args([
            "--redis",
            &redis.url(),
            "lock",
            "run",
            "--name",
            "b",
            "--name",
            "a",
            "--",
            "sh",
            "-c",
        ])
        .arg("cat; echo \"$TRACTATUS_LOCK_NAME|$TRACTATUS_SESSION_ID\"; echo err >&2; exit 7")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"hook\":\"payload\"}\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(7));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout, "{\"hook\":\"payload\"}\na,b|sess-123\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
}
