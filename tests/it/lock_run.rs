//! `tractatus lock run` on one Redis: mutual exclusion across processes, fencing tokens,
//! crashed and paused holders, exit codes.
//!
//! Over 500 lines: one module per feature, whose tests share the helpers at its top; issue 22
//! splits it by sub-feature.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::support::{
    CRITICAL, Guard, KillPid, RedisServer, Repo, alive, run, signal, tractatus, try_lock,
    wait_until,
};

fn lock_run_counter(repo: &Path, url: &str, dir: &Path) -> Command {
    let mut c = tractatus(repo);
    c.args([
        "--redis", url, "--wait", "60s", "lock", "run", "--name", "counter", "--",
    ])
    .args(["sh", "-c", CRITICAL, "sh"])
    .arg(dir);
    c
}

#[test]
fn eight_processes_never_overlap_and_lose_no_update() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("counter"), "0").unwrap();
    let (procs, iterations) = (8, 50);
    let threads: Vec<_> = (0..procs)
        .map(|_| {
            let (repo, url, dir) = (repo.path(), redis.url(), work.path().to_path_buf());
            std::thread::spawn(move || {
                for _ in 0..iterations {
                    let r = run(&mut lock_run_counter(&repo, &url, &dir));
                    assert_eq!(r.code, 0, "lock run failed: {}", r.stderr);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let counter: u32 = std::fs::read_to_string(work.path().join("counter"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let overlaps = std::fs::read_to_string(work.path().join("overlaps"))
        .map(|s| s.lines().count())
        .unwrap_or(0);
    println!(
        "counter {counter} (expected {}), overlaps {overlaps}",
        procs * iterations
    );
    assert_eq!(overlaps, 0, "two holders were inside at once");
    assert_eq!(counter, procs * iterations, "updates were lost");

    // Fencing tokens, in the order the holders ran: strictly increasing, never repeated.
    let tokens: Vec<u64> = std::fs::read_to_string(work.path().join("tokens"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(tokens.len(), (procs * iterations) as usize);
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "tokens not strictly increasing in grant order: {tokens:?}"
    );
}

#[test]
fn control_without_the_lock_loses_updates() {
    // The same workload with no lock: shows the counter test above can fail.
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("counter"), "0").unwrap();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let dir = work.path().to_path_buf();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    let _ = Command::new("sh")
                        .args(["-c", CRITICAL, "sh"])
                        .arg(&dir)
                        .status();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let counter: u32 = std::fs::read_to_string(work.path().join("counter"))
        .unwrap()
        .trim()
        .parse()
        .unwrap_or(0);
    println!("unguarded counter {counter} of 400");
    assert!(
        counter < 400,
        "the unguarded control lost nothing: the workload does not contend"
    );
}

/// Start a holder `lock run` whose command writes its pid to `pidfile` and sleeps.
fn start_holder(repo: &Path, url: &str, ttl: &str, host: &str, pidfile: &Path) -> Guard {
    let mut c = tractatus(repo);
    c.env("TRACTATUS_HOST", host)
        .args([
            "--redis",
            url,
            "--ttl",
            ttl,
            "--kill-grace",
            "1s",
            "lock",
            "run",
            "--name",
            "L",
            "--",
        ])
        .args(["sh", "-c", "echo $$ > \"$1\"; exec sleep 60", "sh"])
        .arg(pidfile)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let guard = Guard(c.spawn().unwrap());
    wait_until(Duration::from_secs(10), "the holder's command runs", || {
        std::fs::read_to_string(pidfile).is_ok_and(|s| s.trim().parse::<u32>().is_ok())
    });
    guard
}

fn read_pid(p: &Path) -> u32 {
    std::fs::read_to_string(p).unwrap().trim().parse().unwrap()
}

#[test]
fn killed_holder_is_taken_over_once_its_ttl_runs_out() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    let pidfile = repo.file("holder.pid");
    // The holder claims another host, so the waiter cannot see its process is gone and must
    // rely on the TTL, the path a holder on another machine takes.
    let mut holder = start_holder(&repo.path(), &redis.url(), "1s", "elsewhere", &pidfile);
    let cmd_pid = read_pid(&pidfile);
    signal(holder.0.id(), Signal::SIGKILL);
    let _ = holder.0.wait();
    signal(cmd_pid, Signal::SIGKILL);
    let killed_at = Instant::now();

    let r = run(tractatus(&repo.path()).args([
        "--redis",
        &redis.url(),
        "--wait",
        "10s",
        "lock",
        "run",
        "--name",
        "L",
        "--",
        "true",
    ]));
    let took = killed_at.elapsed();
    println!("taken over {took:?} after the holder was killed (ttl 1s)");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        took < Duration::from_millis(1000 + 500),
        "took {took:?}, TTL is 1s"
    );
    // Renewed every ttl/3, so between 2/3 and all of the TTL was left when it died.
    assert!(
        took >= Duration::from_millis(600),
        "taken over before the TTL ran out: {took:?}"
    );
}

#[test]
fn paused_holder_learns_it_lost_its_lease_and_its_command_is_stopped() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    let pidfile = repo.file("holder.pid");
    let mut holder = start_holder(&repo.path(), &redis.url(), "1s", "elsewhere", &pidfile);
    let cmd_pid = read_pid(&pidfile);
    signal(holder.0.id(), Signal::SIGSTOP);
    let paused_token: u64 = redis
        .cmd(&["HGET", &repo.keys("L").holder, "token"])
        .parse()
        .unwrap();

    // Another process takes the lock once the paused holder's TTL runs out.
    let r = run(tractatus(&repo.path()).args([
        "--redis",
        &redis.url(),
        "--wait",
        "10s",
        "lock",
        "run",
        "--name",
        "L",
        "--",
        "sh",
        "-c",
        "echo $TRACTATUS_FENCING_TOKEN",
    ]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let token: u64 = r.stdout.trim().parse().unwrap();
    assert!(token > paused_token, "the new holder's token {token}");
    // Its guard, told no deadline after the pause, ended the command before the lease ran out.
    assert!(
        !alive(cmd_pid),
        "the paused holder's command still runs beside the new holder"
    );

    signal(holder.0.id(), Signal::SIGCONT);
    let status = holder.wait_code(Duration::from_secs(10));
    let mut stderr = String::new();
    use std::io::Read;
    holder
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    println!("paused holder: exit {status:?}, stderr: {stderr}");
    assert_eq!(status, Some(76), "the paused holder must exit 76");
    assert!(stderr.contains("lost"), "{stderr}");
    wait_until(
        Duration::from_secs(5),
        "the paused holder's command is gone",
        || !alive(cmd_pid),
    );
}

#[test]
fn wrong_token_release_and_renew_change_nothing() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    let pidfile = repo.file("holder.pid");
    let _holder = start_holder(&repo.path(), &redis.url(), "10s", "h", &pidfile);
    let keys = repo.keys("L");
    let before_owner = redis.cmd(&["GET", &keys.lease]);
    let before_holder = redis.cmd(&["HGET", &keys.holder, "token"]);
    assert_ne!(before_owner, "(nil)");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use tractatus_lock::backend::Node;
        let url = tractatus_lock::config::NodeUrl::parse(&redis.url()).unwrap();
        let node = tractatus_lock::redis_node::RedisNode::new(
            &url,
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(!node.release(&keys, "not-the-owner", 100).await.unwrap());
        assert!(
            !node
                .renew(&keys, "not-the-owner", Duration::from_secs(3600))
                .await
                .unwrap()
        );
    });
    assert_eq!(
        redis.cmd(&["GET", &keys.lease]),
        before_owner,
        "owner changed"
    );
    assert_eq!(redis.cmd(&["HGET", &keys.holder, "token"]), before_holder);
    let pttl: i64 = redis.cmd(&["PTTL", &keys.lease]).parse().unwrap();
    assert!(
        pttl > 0 && pttl <= 10_000,
        "TTL was extended by a wrong token: {pttl}"
    );
}

#[test]
fn held_lock_times_out_with_75_after_the_wait() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    let _holder = start_holder(&repo.path(), &redis.url(), "10s", "h", &repo.file("p"));
    let r = run(tractatus(&repo.path()).args([
        "--redis",
        &redis.url(),
        "--wait",
        "200ms",
        "lock",
        "run",
        "--name",
        "L",
        "--",
        "true",
    ]));
    assert_eq!(r.code, 75, "{}", r.stderr);
    assert!(r.elapsed >= Duration::from_millis(200), "{:?}", r.elapsed);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("'L'") && r.stderr.contains("held by session"),
        "{}",
        r.stderr
    );
    let r = try_lock(&repo.path(), &redis.url(), ["--name", "L"]);
    assert_eq!(r.code, 75, "{}", r.stderr);
}

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

#[test]
fn status_lists_the_holder() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    let holder = start_holder(&repo.path(), &redis.url(), "10s", "host-a", &repo.file("p"));
    let r =
        run(tractatus(&repo.path()).args(["--redis", &redis.url(), "lock", "status", "--json"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let lock = &v["locks"][0];
    assert_eq!(lock["name"], "L");
    assert_eq!(lock["host"], "host-a");
    assert_eq!(lock["pid"], holder.0.id());
    assert_eq!(
        lock["token"].to_string(),
        redis.cmd(&["GET", &repo.keys("L").fence])
    );
    assert!(lock["ttl_left_ms"].as_u64().unwrap() <= 10_000);
    assert!(lock["session"].as_str().unwrap().len() >= 32);
    let r = run(tractatus(&repo.path()).args(["--redis", &redis.url(), "lock", "status"]));
    assert!(r.stdout.starts_with("LOCK"), "{}", r.stdout);
    assert!(r.stdout.contains("host-a"), "{}", r.stdout);
}

#[test]
fn a_lease_taken_first_stays_held_while_the_next_name_is_waited_for() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    // Someone else holds B for a while (TTL 1s, renewed).
    let pidfile = repo.file("b.pid");
    let mut c = tractatus(&repo.path());
    c.args([
        "--redis",
        &redis.url(),
        "--ttl",
        "1s",
        "lock",
        "run",
        "--name",
        "B",
        "--",
        "sh",
        "-c",
        "echo $$ > \"$1\"; exec sleep 3",
        "sh",
    ])
    .arg(&pidfile)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let _b = Guard(c.spawn().unwrap());
    wait_until(Duration::from_secs(10), "B's holder runs", || {
        std::fs::read_to_string(&pidfile).is_ok_and(|s| !s.trim().is_empty())
    });
    // A then B, in that order: A is taken at once, B is waited for for about 3 s (3 TTLs).
    let mut c = tractatus(&repo.path());
    c.args([
        "--redis",
        &redis.url(),
        "--ttl",
        "1s",
        "--wait",
        "20s",
        "lock",
        "run",
        "--name",
        "B",
        "--name",
        "A",
        "--",
        "sh",
        "-c",
        "echo $TRACTATUS_LOCK_NAME",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut both = Guard(c.spawn().unwrap());
    let probe = |what: &str| try_lock(&repo.path(), &redis.url(), ["--name", what]);
    // Until B frees up, A stays held by the waiting process, TTLs after it was taken.
    let mut probes = 0;
    while alive(read_pid(&pidfile)) {
        std::thread::sleep(Duration::from_millis(400));
        if !alive(read_pid(&pidfile)) {
            break;
        }
        let r = probe("A");
        assert_eq!(
            r.code, 75,
            "A was free while its taker waited for B: {}",
            r.stderr
        );
        probes += 1;
    }
    assert!(probes >= 3, "only {probes} probes while B was held");
    let status = both.wait_code(Duration::from_secs(20));
    let (mut out, mut err) = (String::new(), String::new());
    use std::io::Read;
    both.0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    both.0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status, Some(0), "{err}");
    assert_eq!(out.trim(), "A,B");
}

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
fn a_command_whose_lock_was_broken_under_it_exits_76() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    let started = repo.file("started");
    let mut c = tractatus(&repo.path());
    c.args([
        "--redis",
        &redis.url(),
        "lock",
        "run",
        "--name",
        "BR",
        "--",
        "sh",
        "-c",
    ])
    .arg(format!(": > {}; sleep 1", started.display()))
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let mut holder = Guard(c.spawn().unwrap());
    wait_until(Duration::from_secs(10), "the command runs", || {
        started.exists()
    });
    let r = run(tractatus(&repo.path()).args([
        "--redis",
        &redis.url(),
        "lock",
        "break",
        "BR",
        "--force",
    ]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Someone else takes it while the first command still runs.
    let r = try_lock(&repo.path(), &redis.url(), ["--name", "BR"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let status = holder.wait_code(Duration::from_secs(10));
    let mut stderr = String::new();
    use std::io::Read;
    holder
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status, Some(76), "{stderr}");
    assert!(stderr.contains("no longer ours"), "{stderr}");
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
