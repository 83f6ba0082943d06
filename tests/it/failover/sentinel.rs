//! Failover through Sentinel: mid-run with eight workers, one process following it on its own
//! connection, sentinels with a password of their own.

use super::*;

#[test]
fn sentinel_failover_mid_run_loses_nothing_and_repeats_no_token() {
    let mut group = SentinelGroup::start(Duration::from_millis(500), &[]);
    assert_eq!(mark_initialized(&group.servers[0].url()), 1);
    let repo = Repo::new();
    let url = group.url();
    let warm = run(tractatus(&repo.path())
        .env("TRACTATUS_REDIS", &url)
        .args(["lock", "run", "--name", "W", "--", "true"]));
    assert_eq!(warm.code, 0, "{}", warm.stderr);
    let (failover, counts) = failover_mid_run(&repo, &url, || {
        let old = group.kill_master();
        group.await_promotion(1 - old);
    });
    println!("sentinel failover took {failover:?}; {counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_follows_a_sentinel_failover_on_its_own_connection() {
    use tractatus_lock::AcquireOptions;
    let group = SentinelGroup::start(Duration::from_millis(500), &[]);
    assert_eq!(mark_initialized(&group.servers[0].url()), 1);
    let (c, t1) = sentinel_coordinator(&group.url(), "failover").await;

    // A graceful failover: the old master is demoted and keeps running. Sentinel closes its
    // clients' connections when it demotes it, so the cached connection breaks and the next
    // call asks the sentinels again (a server demoted by other means answers READONLY, which
    // drops the connection as well).
    let sentinel = group.sentinels[0].port;
    tractatus_testkit::sentinel::query(sentinel, &["SENTINEL", "FAILOVER", "mymaster"])
        .expect("SENTINEL FAILOVER");
    group.await_promotion(1);
    // Until the sentinels demote the old master it still grants (the window the README names);
    // once demoted it answers writes with READONLY.
    wait_until(Duration::from_secs(30), "the old master is demoted", || {
        replication_field(group.servers[0].port, "role").as_deref() == Some("slave")
    });
    let wait = AcquireOptions::wait(Duration::from_secs(10));
    let started = Instant::now();
    // The first call may meet the demoted master (READONLY): it is sent once more on a new
    // connection, which asks the sentinels.
    let after = c.acquire("L", &wait).await.unwrap();
    println!(
        "tokens {t1} then {}, {:?} after the promotion",
        after.token(),
        started.elapsed()
    );
    assert!(after.token() > t1);
    after.release().await.unwrap();
}

/// `url` with `:password@` before its hosts.
fn with_password(url: &str, password: &str) -> String {
    url.replacen("://", &format!("://:{password}@"), 1)
}

#[test]
fn lock_run_goes_through_sentinels_that_want_a_password_of_their_own() {
    use tractatus_testkit::sentinel::Passwords;
    let (master_pw, sentinel_pw) = ("master-pw-31", "sentinel-pw-47");
    let pw = Passwords {
        servers: Some(master_pw.into()),
        sentinels: Some(sentinel_pw.into()),
    };
    let mut group = SentinelGroup::start_with_passwords(Duration::from_millis(500), &[], &pw);
    let master = format!("redis://:{master_pw}@127.0.0.1:{}", group.servers[0].port);
    assert_eq!(mark_initialized(&master), 1);
    let repo = Repo::new();
    // The same 2 s quarantine as the run after the failover: the promoted replica holds the
    // slot for the longest quarantine any client of the old master asked for.
    let lock = |url: &str, env: &[(&str, &str)]| {
        run(tractatus(&repo.path())
            .env("TRACTATUS_REDIS", url)
            .env("TRACTATUS_QUARANTINE", "2s")
            .envs(env.iter().copied())
            .args([
                "--ttl", "1s", "--wait", "5s", "lock", "run", "--name", "x", "--", "true",
            ]))
    };
    // Both passwords from the environment.
    let both = [
        ("TRACTATUS_REDIS_PASSWORD", master_pw),
        ("TRACTATUS_SENTINEL_PASSWORD", sentinel_pw),
    ];
    let r = lock(&group.url(), &both);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Both in the URL.
    let in_url = format!(
        "{}?sentinel_password={sentinel_pw}",
        with_password(&group.url(), master_pw)
    );
    let r = lock(&in_url, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);

    // The sentinels' password missing, or wrong: one line that names the sentinels, 69.
    let refused = |r: &crate::support::Ran, secrets: &[&str]| {
        assert_eq!(r.code, 69, "{}", r.stderr);
        assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
        for s in secrets {
            assert!(!r.stderr.contains(s), "{}", r.stderr);
        }
        println!("{}", r.stderr.trim());
    };
    let r = lock(&group.url(), &[("TRACTATUS_REDIS_PASSWORD", master_pw)]);
    refused(&r, &[master_pw]);
    assert!(
        r.stderr.contains("the sentinels want a password"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("TRACTATUS_SENTINEL_PASSWORD"),
        "{}",
        r.stderr
    );
    let wrong = [
        ("TRACTATUS_REDIS_PASSWORD", master_pw),
        ("TRACTATUS_SENTINEL_PASSWORD", "wrong-sentinel-pw"),
    ];
    let r = lock(&group.url(), &wrong);
    refused(&r, &[master_pw, "wrong-sentinel-pw"]);
    assert!(
        r.stderr.contains("the sentinels refused their password"),
        "{}",
        r.stderr
    );
    // The sentinels let us in, the master does not: the message says it is the master.
    let r = lock(
        &format!("{}?sentinel_password={sentinel_pw}", group.url()),
        &[("TRACTATUS_REDIS_PASSWORD", "wrong-master-pw")],
    );
    refused(&r, &[sentinel_pw, "wrong-master-pw"]);
    assert!(
        r.stderr.contains("the master the sentinels name"),
        "{}",
        r.stderr
    );

    // The sentinels reach each other and the servers with their passwords: a failover, and
    // locking goes on through the promoted replica.
    let old = group.kill_master();
    group.await_promotion(1 - old);
    // The promoted replica waits out one failover quarantine (2 s) before it grants.
    let r = run(tractatus(&repo.path())
        .env("TRACTATUS_REDIS", group.url())
        .envs(both.iter().copied())
        .env("TRACTATUS_QUARANTINE", "2s")
        .args([
            "--ttl", "1s", "--wait", "10s", "lock", "run", "--name", "x", "--", "true",
        ]));
    assert_eq!(r.code, 0, "{}", r.stderr);
}
