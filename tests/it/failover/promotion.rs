//! A promoted replica or a demoted master: leases it never saw waited out, higher tokens, the
//! quarantine after any promotion, READONLY answers sent on to the new master.

use super::*;

/// `lock run --name NAME --ttl 2s -- echo $TRACTATUS_FENCING_TOKEN` against `url` with a 2 s
/// quarantine, a 600 ms node timeout and the given wait: the run.
fn token_run(repo: &Path, url: &str, name: &str, wait: &str) -> crate::support::Ran {
    // The node timeout follows a short TTL down (a tenth of it) unless set: 100 ms for 1 s,
    // which a loaded machine's Redis missed (69 instead of the 75 asserted). These tests are
    // about what a promoted master grants, not how fast it answers.
    run(tractatus(repo)
        .env("TRACTATUS_REDIS", url)
        .env("TRACTATUS_QUARANTINE", "2s")
        .env("TRACTATUS_NODE_TIMEOUT", "600ms")
        .args(["--ttl", "2s", "--wait", wait, "lock", "run", "--name", name])
        .args(["--", "sh", "-c", "echo $TRACTATUS_FENCING_TOKEN"]))
}

fn token_of(r: &crate::support::Ran) -> u64 {
    assert_eq!(r.code, 0, "{}", r.stderr);
    r.stdout.trim().parse().unwrap()
}

#[test]
fn a_promoted_replica_waits_out_the_leases_it_never_received_and_mints_higher_tokens() {
    let master = RedisServer::start();
    let port = master.port.to_string();
    let replica = tractatus_testkit::RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]);
    wait_until(Duration::from_secs(10), "the replica's link is up", || {
        replication_field(replica.port, "master_link_status").as_deref() == Some("up")
    });
    let repo = Repo::new();
    let mut tokens: Vec<u64> = (0..3)
        .map(|_| token_of(&token_run(&repo.path(), &master.url(), "L", "5s")))
        .collect();
    let fence = repo.keys("L").fence;
    wait_until(
        Duration::from_secs(10),
        "the replica has L's counter",
        || replica.cmd(&["GET", &fence]) == master.cmd(&["GET", &fence]),
    );

    // The replica is promoted, and the old master grants L once more: a lease (and a token)
    // the new master never received, as if it was granted just before the failover.
    assert_eq!(replica.cmd(&["REPLICAOF", "NO", "ONE"]), "OK");
    let holder = std::thread::spawn({
        let (root, url) = (repo.path(), master.url());
        move || {
            run(tractatus(&root)
                .env("TRACTATUS_REDIS", &url)
                .env("TRACTATUS_QUARANTINE", "2s")
                .args(["--ttl", "1s", "lock", "run", "--name", "L", "--"])
                .args(["sh", "-c", "echo $TRACTATUS_FENCING_TOKEN; sleep 1"]))
        }
    });
    wait_until(Duration::from_secs(10), "the old master granted L", || {
        master.cmd(&["EXISTS", &repo.keys("L").lease]) == "1"
    });
    let refused_at = Instant::now();
    let r = token_run(&repo.path(), &replica.url(), "L", "0");
    assert_eq!(
        r.code, 75,
        "the promoted replica granted at once: {}",
        r.stderr
    );
    assert!(r.stderr.contains("failover"), "{}", r.stderr);
    let r = token_run(&repo.path(), &replica.url(), "L", "10s");
    let waited = refused_at.elapsed();
    tokens.push(token_of(&holder.join().unwrap()));
    tokens.push(token_of(&r));
    // Later grants in the same slot are not held up again.
    let again = token_run(&repo.path(), &replica.url(), "L", "0");
    tokens.push(token_of(&again));
    println!("tokens {tokens:?}; the promoted replica granted L after {waited:?}");
    assert!(
        waited >= Duration::from_secs(2),
        "granted before the quarantine ended: {waited:?}"
    );
    assert_eq!(repeated(&tokens), 0, "{tokens:?}");
    assert!(strictly_increasing(&tokens), "{tokens:?}");

    // Marking the new master (`lock init`) does not lift the quarantine of the slots it has
    // not granted in yet: it cannot know that no lease the old master granted there still
    // runs (a reviewer showed a second holder that way).
    let r = token_run(&repo.path(), &replica.url(), "other", "0");
    assert_eq!(r.code, 75, "{}", r.stderr);
    assert_eq!(mark_initialized(&replica.url()), 1);
    let r = token_run(&repo.path(), &replica.url(), "fresh", "0");
    assert_eq!(
        r.code, 75,
        "lock init lifted the failover quarantine: {}",
        r.stderr
    );
}

#[test]
fn a_cluster_master_sigkilled_mid_run_is_replaced_by_its_replica_and_no_token_repeats() {
    let mut cluster = tractatus_testkit::RedisCluster::start(3, 1);
    assert_eq!(mark_initialized(&cluster.url()), 3);
    let repo = Repo::new();
    // The first lock writes the repository's namespace, which places W's keys.
    let warm = run(tractatus(&repo.path())
        .env("TRACTATUS_REDIS", format!("{}?cluster=true", cluster.url()))
        .args(["lock", "run", "--name", "W", "--", "true"]));
    assert_eq!(warm.code, 0, "{}", warm.stderr);
    let w_slot = tractatus_lock::keys::slot_of_tag(format!("{}:W", repo.namespace()).as_bytes());
    let victim = cluster.master_of_slot(w_slot);
    // The URL names a node that survives, and every other node as a seed.
    let entry = (0..cluster.len()).find(|&i| i != victim).unwrap();
    let seeds: Vec<String> = (0..cluster.len())
        .filter(|&i| i != entry)
        .map(|i| format!("seed=127.0.0.1:{}", cluster.node(i).port))
        .collect();
    let url = format!(
        "{}?cluster=true&{}",
        cluster.node(entry).url(),
        seeds.join("&")
    );
    let (failover, counts) = failover_mid_run(&repo, &url, || {
        cluster.kill(victim);
        cluster.settle();
        assert_ne!(
            cluster.master_of_slot(w_slot),
            victim,
            "W's slot has a new master"
        );
    });
    println!("cluster failover took {failover:?}; {counts:?}");
}

/// Redis' role switch by hand: `promoted` becomes the master, `demoted` its replica; returns
/// once the link is up.
fn switch_roles(promoted: u16, demoted: u16) {
    let cli = |port: u16, args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(cli(promoted, &["REPLICAOF", "NO", "ONE"]), "OK");
    let p = promoted.to_string();
    assert_eq!(cli(demoted, &["REPLICAOF", "127.0.0.1", &p]), "OK");
    wait_until(
        Duration::from_secs(10),
        "the new replica's link is up",
        || replication_field(demoted, "master_link_status").as_deref() == Some("up"),
    );
}

#[test]
fn a_marked_master_demoted_and_promoted_again_is_quarantined_like_any_promotion_and_init_lifts_nothing()
 {
    // `a` is marked by `lock init` (the test kit marks every server it starts); its marker
    // comes back to it through replication while it is a replica, and its run_id survives the
    // role changes: only the replication id in the marker tells the marker is old.
    let (a, b) = master_and_replica();
    let repo = Repo::new();
    token_of(&token_run(&repo.path(), &a.url(), "L", "5s"));
    switch_roles(b.port, a.port);
    // The promoted `b` waits out the leases it may lack, then grants.
    let r = token_run(&repo.path(), &b.url(), "L", "0");
    assert_eq!(
        r.code, 75,
        "b granted at once after its promotion: {}",
        r.stderr
    );
    token_of(&token_run(&repo.path(), &b.url(), "L", "10s"));
    // Back to `a`: a lease `b` granted may not have reached it, so it waits too.
    switch_roles(a.port, b.port);
    let r = token_run(&repo.path(), &a.url(), "L", "0");
    assert_eq!(
        r.code, 75,
        "a, marked before its demotion, granted at once after its promotion again: {}",
        r.stderr
    );
    // Marked again, it still waits: `lock init` never lifts a failover quarantine.
    assert_eq!(mark_initialized(&a.url()), 1);
    let r = token_run(&repo.path(), &a.url(), "fresh", "0");
    assert_eq!(r.code, 75, "{}", r.stderr);
}

/// `errorstat_READONLY` of `INFO errorstats` on `port`: the READONLY errors it answered.
fn readonly_errors(port: u16) -> u64 {
    let Some(redis::Value::BulkString(b)) =
        tractatus_testkit::sentinel::query(port, &["INFO", "errorstats"])
    else {
        panic!("INFO errorstats on {port}");
    };
    String::from_utf8_lossy(&b)
        .lines()
        .find_map(|l| l.strip_prefix("errorstat_READONLY:count="))
        .map_or(0, |n| n.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demoted_master_that_keeps_its_clients_answers_readonly_and_the_grant_goes_to_the_new_one()
 {
    use tractatus_lock::{AcquireOptions, Config, Coordinator, Identity, config::parse_nodes};
    let down = Duration::from_millis(500);
    let group = SentinelGroup::start(down, &[]);
    assert_eq!(mark_initialized(&group.servers[0].url()), 1);
    let (c, t1) = sentinel_coordinator(&group.url(), "readonly").await;

    // A switch by hand, which closes no client connection (unlike Sentinel's, which kills the
    // demoted master's clients): the coordinator's cached connection still reaches the old
    // master, now a replica. Then the sentinels are pointed at the new master.
    let (old, new) = (group.servers[0].port, group.servers[1].port);
    switch_roles(new, old);
    group.repoint(1, down);
    // Another client meets the new master first and waits out L's failover quarantine, so
    // that what follows is about the connection only.
    let mut other = Config::new(parse_nodes(&[group.servers[1].url()]).unwrap());
    other.namespace = "readonly".into();
    other.ttl = Duration::from_secs(1);
    other.quarantine = Duration::from_secs(1);
    let other = Coordinator::connect(other, Identity::current("t"))
        .await
        .unwrap();
    let wait = AcquireOptions::wait(Duration::from_secs(10));
    other
        .acquire("L", &wait)
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    let refused_before = readonly_errors(old);

    // No wait: the first grant meets READONLY on the cached connection, and only the retry on
    // a new connection (asking the sentinels) can make this succeed.
    let after = c.try_acquire("L").await.unwrap();
    assert_eq!(
        readonly_errors(old),
        refused_before + 1,
        "the grant did not meet the demoted master"
    );
    println!("tokens {t1} then {}", after.token());
    assert!(after.token() > t1);
    after.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_url_on_a_demoted_master_says_readonly_also_on_a_new_connection() {
    use tractatus_lock::{Config, Coordinator, Identity, config::parse_nodes};
    let (a, b) = master_and_replica();
    let mut config = Config::new(parse_nodes(&[a.url()]).unwrap());
    config.namespace = "readonly".into();
    let c = Coordinator::connect(config, Identity::current("t"))
        .await
        .unwrap();
    c.try_acquire("L").await.unwrap().release().await.unwrap();
    switch_roles(b.port, a.port);
    let refused_before = readonly_errors(a.port);
    let Err(e) = c.try_acquire("L").await else {
        panic!("a demoted master granted");
    };
    let e = e.to_string();
    println!("{e}");
    assert!(e.contains("READONLY), also on a new connection"), "{e}");
    assert_eq!(e.matches(&a.url()).count(), 1, "{e}");
    assert_eq!(readonly_errors(a.port), refused_before + 2, "{e}");
}
