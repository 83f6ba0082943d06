//! Holders that crash, pause or lose their lease: the next holder takes over once the TTL runs
//! out, a paused holder's command is stopped, a wrong token changes nothing, a held lock times
//! out, a broken lock ends the command with 76.

use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::{read_pid, start_holder};
use crate::support::{
    Guard, RedisServer, Repo, alive, run, signal, tractatus, try_lock, wait_until,
};

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
