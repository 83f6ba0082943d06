//! The grant script under faults (issue 19): waiters keep their places in line through a
//! restart quarantine; the longest quarantine any client asked for holds a promoted replica's
//! slot, whatever the first client after the promotion asks for; a release sent twice answers
//! the same; a grant that lands after its attempt was given up leaves no orphan lease.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Guard, RedisServer, Repo, master_and_replica, run, tractatus, wait_until};

/// `lock run --name q --ttl 1s --wait 30s` on `url` with the given quarantine.
fn lock_run(repo: &Repo, url: &str, quarantine: &str) -> Command {
    let mut c = tractatus(&repo.path());
    c.env("TRACTATUS_REDIS", url)
        .env("TRACTATUS_QUARANTINE", quarantine)
        .args([
            "--ttl", "1s", "--wait", "30s", "lock", "run", "--name", "q", "--",
        ]);
    c
}

/// A waiter that appends `label` to the file `order` once it holds the lock.
fn waiter(repo: &Repo, url: &str, label: &str) -> Child {
    lock_run(repo, url, "4s")
        .args(["sh", "-c", "echo \"$1\" >> \"$2\"", "sh", label])
        .arg(repo.file("order"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn waiters_refused_for_a_restart_quarantine_are_granted_in_the_order_they_asked() {
    // Brand-new and not marked by `lock init`: every lock waits out the quarantine.
    let redis = tractatus_testkit::RedisServer::start();
    let started = Instant::now();
    let repo = Repo::new();
    let url = redis.url();
    let mut waiters = Vec::new();
    for i in 1..=6 {
        waiters.push(Guard(waiter(&repo, &url, &i.to_string())));
        // The spacing is the input (arrival order), not a condition to await.
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the waiters did not all ask during the quarantine"
    );
    assert!(
        !repo.file("order").exists(),
        "granted during the quarantine"
    );
    for w in &mut waiters {
        let out = w.0.wait().unwrap();
        assert!(out.success(), "waiter: {out}");
    }
    let order = repo.read("order");
    assert_eq!(
        order.split_whitespace().collect::<Vec<_>>(),
        ["1", "2", "3", "4", "5", "6"],
        "not granted in the order they asked"
    );
}

#[test]
fn a_promoted_replica_holds_a_slot_for_the_longest_quarantine_any_client_asked_for() {
    let (master, replica) = master_and_replica();
    let repo = Repo::new();
    // A client with a long quarantine (for its long TTLs) takes the lock on the old master.
    let r = run(lock_run(&repo, &master.url(), "6s").arg("true"));
    assert_eq!(r.code, 0, "{}", r.stderr);
    // The grant's writes (the stamp with them) reached the replica.
    let fence = repo.keys("q").fence;
    wait_until(
        Duration::from_secs(10),
        "the replica has q's counter",
        || replica.cmd(&["GET", &fence]) == master.cmd(&["GET", &fence]),
    );
    assert_eq!(replica.cmd(&["REPLICAOF", "NO", "ONE"]), "OK");
    // The first client after the promotion has a short one: the slot still waits 6 s.
    let promoted = Instant::now();
    let r = run(lock_run(&repo, &replica.url(), "1s").arg("true"));
    let waited = promoted.elapsed();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        waited >= Duration::from_secs(6),
        "the short quarantine cut the long one short: granted after {waited:?}"
    );
}

/// The release request exactly as the library sends it (`src/redis_node.rs`), sent once more:
/// what a cluster connection's resend does. Its reply.
fn release_again(
    redis: &RedisServer,
    keys: &tractatus_lock::keys::LockKeys,
    owner: &str,
) -> String {
    // As src/redis_node.rs builds it: the release runs the grant for a hand-off.
    let script = format!(
        "local function grant(KEYS, ARGV)\n{}\nend\n{}",
        include_str!("../../lua/grant.lua"),
        include_str!("../../lua/release.lua")
    );
    redis.cmd(&[
        "EVAL",
        &script,
        "11",
        &keys.lease,
        &keys.fence,
        &keys.holder,
        &keys.waiters,
        &keys.log,
        &keys.init,
        &keys.queue,
        &keys.waiting,
        &keys.epoch,
        &keys.handoff,
        &keys.ended,
        owner,
        &keys.channel,
        "100",
        "800",
        "1000",
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_sent_twice_succeeds_twice_and_one_after_another_holder_took_it_is_not_ours() {
    use tractatus_lock::{Config, Coordinator, Identity, config::parse_nodes, keys::LockKeys};
    let redis = RedisServer::start();
    let mut config = Config::new(parse_nodes(&[redis.url()]).unwrap());
    config.namespace = "twice".into();
    let c = Coordinator::connect(config, Identity::current("t"))
        .await
        .unwrap();
    let keys = LockKeys::new("twice", "R");

    let lease = c.try_acquire("R").await.unwrap();
    let owner = redis.cmd(&["GET", &keys.lease]);
    lease.release().await.unwrap();
    assert_eq!(
        release_again(&redis, &keys, &owner),
        "1",
        "the resent release said the lease was not ours"
    );

    // A lease that ran out (as if expired: removed) and was taken by another holder.
    let lease = c.try_acquire("R").await.unwrap();
    let first = redis.cmd(&["GET", &keys.lease]);
    redis.cmd(&["DEL", &keys.lease]);
    let other = c.try_acquire("R").await.unwrap();
    assert_eq!(release_again(&redis, &keys, &first), "0");
    let err = lease.release().await.unwrap_err();
    assert!(err.is_lease_lost(), "{err}");
    assert_ne!(
        redis.cmd(&["GET", &keys.lease]),
        "(nil)",
        "the other's lease was ended"
    );
    other.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_that_lands_after_its_attempt_failed_is_ended_at_once_not_after_its_ttl() {
    use tractatus_lock::{AcquireOptions, Config, Coordinator, Identity, config::parse_nodes};
    let redis = RedisServer::start();
    let mut config = Config::new(parse_nodes(&[redis.url()]).unwrap());
    config.namespace = "late".into();
    config.ttl = Duration::from_secs(20);
    config.quarantine = Duration::from_secs(20);
    config.node_timeout = Duration::from_millis(300);
    config.connect_timeout = Duration::from_millis(300);
    let c = Coordinator::connect(config, Identity::current("t"))
        .await
        .unwrap();
    // The connection is up: the first attempt's grant goes out on it and waits in the
    // stopped server's socket, and lands when it goes on, after the attempt was given up.
    c.try_acquire("warm")
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    redis.pause();
    let wait = tokio::spawn({
        let c = c.clone();
        async move {
            c.acquire("L", &AcquireOptions::wait(Duration::from_secs(10)))
                .await
        }
    });
    // Longer than the node timeout: the attempt in flight fails and is released (which cannot
    // reach the stopped server), and more attempts fail to connect.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    redis.resume();
    let resumed = Instant::now();
    let lease = wait.await.unwrap().unwrap();
    let took = resumed.elapsed();
    println!("granted {took:?} after the server went on");
    assert!(
        took < Duration::from_secs(3),
        "the late grant of our own failed attempt held the lock for {took:?}"
    );
    lease.release().await.unwrap();
}

#[test]
fn a_new_process_rides_out_a_redis_that_answers_late_within_its_wait() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    // Stopped longer than the connect timeout (1 s) and the node timeout, shorter than the wait.
    redis.pause();
    let child = tractatus(&repo.path())
        .env("TRACTATUS_REDIS", redis.url())
        .args([
            "--wait", "10s", "lock", "run", "--name", "late", "--", "true",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Guard(child);
    // The pause is the input, not a condition to await.
    std::thread::sleep(Duration::from_millis(2000));
    let early = child.0.try_wait().unwrap();
    redis.resume();
    let code = child.wait_code(Duration::from_secs(15));
    let mut err = String::new();
    if let Some(mut e) = child.0.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    assert!(
        early.is_none(),
        "gave up while the server was stopped: {err}"
    );
    assert_eq!(code, Some(0), "{err}");
}

/// One grant request as `src/redis_node.rs` sends it (a fresh owner, nobody queued), with the
/// token floor `floor` (ARGV[15]); the token it minted.
fn grant_with_floor(
    conn: &mut redis::Connection,
    keys: &tractatus_lock::keys::LockKeys,
    owner: &str,
    floor: &str,
) -> i64 {
    let reply: Vec<redis::Value> = redis::cmd("EVAL")
        .arg(include_str!("../../lua/grant.lua"))
        .arg(10)
        .arg(&keys.lease)
        .arg(&keys.fence)
        .arg(&keys.holder)
        .arg(&keys.waiters)
        .arg(&keys.log)
        .arg(&keys.init)
        .arg(&keys.queue)
        .arg(&keys.waiting)
        .arg(&keys.epoch)
        .arg(&keys.handoff)
        .arg(&[
            owner, "5000", "s", "h", "1", "", "cmd", "", "800", "100", "0", "", "0", "",
        ])
        .arg(floor)
        .query(conn)
        .unwrap_or_else(|e| panic!("grant with floor {floor:?}: {e}"));
    match reply.as_slice() {
        [redis::Value::Int(1), redis::Value::Int(token)] => *token,
        other => panic!("grant with floor {floor:?} was not granted: {other:?}"),
    }
}

#[test]
fn a_token_floor_that_is_not_digits_or_runs_far_ahead_of_the_servers_clock_is_ignored() {
    let redis = RedisServer::start();
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let keys = tractatus_lock::keys::LockKeys::new("floor", "L");
    let mut clock_us = || -> i64 {
        let (s, us): (i64, i64) = redis::cmd("TIME").query(&mut conn).unwrap();
        s * 1_000_000 + us
    };
    let mut checks = Vec::new();
    for floor in ["99999999999999999", "1e300", "-5", "12x"] {
        checks.push((floor, clock_us()));
    }
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    for (i, (floor, before)) in checks.into_iter().enumerate() {
        let token = grant_with_floor(&mut conn, &keys, &format!("o{i}"), floor);
        assert!(
            token >= before && token < before + 60_000_000,
            "floor {floor:?} minted token {token}; the server's clock was {before}"
        );
        let _: i64 = redis::cmd("DEL").arg(&keys.lease).query(&mut conn).unwrap();
    }
    // A floor a little ahead (a client's clock plus its lead) is honoured.
    let (s, us): (i64, i64) = redis::cmd("TIME").query(&mut conn).unwrap();
    let ahead = s * 1_000_000 + us + 2_000_000;
    let token = grant_with_floor(&mut conn, &keys, "near", &ahead.to_string());
    assert_eq!(token, ahead);
}
