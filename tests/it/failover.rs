//! Failover: a replica promoted to master (by Sentinel after its master was SIGKILLed, or by
//! hand with `REPLICAOF NO ONE`) may lack the last leases and tokens of the old master. Tokens
//! still never repeat nor go back (they follow the clock, `lua/grant.lua`), a promoted replica
//! grants nothing in a slot until every lease the old master may have granted there has
//! expired, and locking goes on through `redis+sentinel://` once the replica is promoted.
//!
//! [`eight_workers`] and [`Counts`] are the reusable part: 8 processes alternating `lock run
//! --name W` (logging holders and tokens) and `state append` (noting which appends were
//! acknowledged and with what token), while the caller breaks something; then the counts.
//!
//! Over 500 lines: one module per feature, whose tests share the helpers at its top; issue 22
//! splits it by sub-feature.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tractatus_testkit::sentinel::{SentinelGroup, replication_field};

use crate::restart::{LOGGED, read_log, repeated, strictly_increasing};
use crate::support::{RedisServer, Repo, mark_initialized, run, tractatus, wait_until};

/// The state file the workers append to.
const FILE: &str = ".claude/appended.json";

/// What [`eight_workers`] saw.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    /// Holders of lock W, in the order they started.
    pub holders: usize,
    /// Log lines a holder of W wrote while another one was inside.
    pub overlaps: usize,
    /// W's tokens handed out more than once.
    pub repeated: usize,
    /// True when W's tokens, in the order the holders started, strictly increase.
    pub increasing: bool,
    /// Appends acknowledged (exit 0).
    pub appended: usize,
    /// Acknowledged appends missing from the file.
    pub lost: usize,
    /// Entries found in the file more than once, or whose append was not acknowledged.
    pub unexpected: usize,
    /// The append tokens, in the file's order, that are not above the one before.
    pub backward: usize,
    /// Exit codes of every run, counted.
    pub codes: BTreeMap<i32, usize>,
}

impl Counts {
    /// 0 lost, 0 overlapping holders, 0 repeated or backward tokens.
    pub(crate) fn assert_clean(&self) {
        assert_eq!(
            self.overlaps, 0,
            "two holders of W were inside at once: {self:?}"
        );
        assert_eq!(self.repeated, 0, "a token was handed out twice: {self:?}");
        assert!(self.increasing, "W's tokens went back: {self:?}");
        assert_eq!(self.lost, 0, "acknowledged appends were lost: {self:?}");
        assert_eq!(
            self.unexpected, 0,
            "the file holds unexpected entries: {self:?}"
        );
        assert_eq!(
            self.backward, 0,
            "an append committed a lower token: {self:?}"
        );
    }
}

/// Runs until stopped, shared with the caller's `during`.
pub(crate) struct Progress {
    log: std::path::PathBuf,
    stop: AtomicBool,
}

impl Progress {
    /// Holders of W so far.
    pub(crate) fn holders(&self) -> usize {
        read_log(&self.log).tokens.len()
    }
}

/// 8 worker threads, each running up to `rounds` times `lock run --name W` of [`LOGGED`] and
/// `state append` of a unique entry, against `urls` with TTL 1 s and the given quarantine;
/// `during` runs beside them (it breaks something and waits for what it wants to see), then the
/// workers stop after their current round and everything is counted. Exit codes 0, 69
/// (unreachable during the failover), 75 (waited out) and 76 (lease lost) are expected.
pub(crate) fn eight_workers(
    repo: &Repo,
    urls: &str,
    quarantine: &str,
    rounds: usize,
    during: impl FnOnce(&Progress),
) -> Counts {
    repo.write(FILE, "{\n  \"items\": []\n}");
    let progress = Arc::new(Progress {
        log: repo.file("W.log"),
        stop: AtomicBool::new(false),
    });
    // id -> token of every acknowledged append; every exit code.
    let acked = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let codes = Arc::new(Mutex::new(BTreeMap::<i32, usize>::new()));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (root, urls, q) = (repo.path(), urls.to_owned(), quarantine.to_owned());
            let (progress, acked, codes) = (progress.clone(), acked.clone(), codes.clone());
            std::thread::spawn(move || {
                let count = |code: i32, stderr: &str| {
                    assert!(matches!(code, 0 | 69 | 75 | 76), "exit {code}: {stderr}");
                    *codes.lock().unwrap().entry(code).or_default() += 1;
                    if code == 69 {
                        // Unreachable (no master yet): a client retries a little later, as
                        // the README tells hooks to, rather than spin through its rounds.
                        std::thread::sleep(Duration::from_millis(100));
                    }
                };
                for i in 0..rounds {
                    if progress.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let r = run(tractatus(&root)
                        .env("TRACTATUS_REDIS", &urls)
                        .env("TRACTATUS_QUARANTINE", &q)
                        .args(["--ttl", "1s", "--wait", "20s", "lock", "run", "--name", "W"])
                        .args(["--", "sh", "-c", LOGGED, "sh"])
                        .arg(&progress.log));
                    count(r.code, &r.stderr);
                    let id = format!("w{w}-{i}");
                    let r = run(tractatus(&root)
                        .env("TRACTATUS_REDIS", &urls)
                        .env("TRACTATUS_QUARANTINE", &q)
                        .args(["--json", "--ttl", "1s", "--wait", "20s", "state", "append"])
                        .args([FILE, "/items", &format!(r#"{{"id":"{id}"}}"#)]));
                    count(r.code, &r.stderr);
                    if r.code == 0 {
                        let out: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
                        let token = out["token"].as_u64().unwrap();
                        acked.lock().unwrap().insert(id, token);
                    }
                }
            })
        })
        .collect();
    during(&progress);
    progress.stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    let log = read_log(&progress.log);
    let acked = acked.lock().unwrap().clone();
    let doc: serde_json::Value = serde_json::from_str(&repo.read(FILE)).unwrap();
    let ids: Vec<String> = doc["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    let distinct: BTreeSet<&String> = ids.iter().collect();
    let tokens: Vec<u64> = ids.iter().filter_map(|id| acked.get(id).copied()).collect();
    Counts {
        holders: log.tokens.len(),
        overlaps: log.overlaps,
        repeated: repeated(&log.tokens),
        increasing: strictly_increasing(&log.tokens),
        appended: acked.len(),
        lost: acked.keys().filter(|id| !distinct.contains(id)).count(),
        unexpected: (ids.len() - distinct.len())
            + ids.iter().filter(|id| !acked.contains_key(*id)).count(),
        backward: tokens.windows(2).filter(|w| w[0] >= w[1]).count(),
        codes: codes.lock().unwrap().clone(),
    }
}

/// [`eight_workers`] (40 rounds, quarantine 2 s) on `url` with a failover in the middle: once
/// four holders ran, `fail_over` kills the master and returns when a replica took over; then
/// four more holders must run. Returns how long the failover took and the counts, checked
/// clean.
fn failover_mid_run(repo: &Repo, url: &str, fail_over: impl FnOnce()) -> (Duration, Counts) {
    let mut took = Duration::ZERO;
    let counts = eight_workers(repo, url, "2s", 40, |p| {
        wait_until(Duration::from_secs(30), "four holders ran", || {
            p.holders() >= 4
        });
        let before = p.holders();
        let killed = Instant::now();
        fail_over();
        took = killed.elapsed();
        wait_until(
            Duration::from_secs(40),
            "four holders ran after the promotion",
            || p.holders() >= before + 4,
        );
    });
    counts.assert_clean();
    assert!(counts.holders >= 8 && counts.appended > 0, "{counts:?}");
    assert!(counts.codes.contains_key(&0), "{counts:?}");
    (took, counts)
}

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

/// `lock run --name NAME --ttl 1s -- echo $TRACTATUS_FENCING_TOKEN` against `url` with a 2 s
/// quarantine and the given wait: the run.
fn token_run(repo: &Path, url: &str, name: &str, wait: &str) -> crate::support::Ran {
    run(tractatus(repo)
        .env("TRACTATUS_REDIS", url)
        .env("TRACTATUS_QUARANTINE", "2s")
        .args(["--ttl", "1s", "--wait", wait, "lock", "run", "--name", name])
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

/// A master with one replica, both on loopback, the master marked initialized.
fn master_and_replica() -> (RedisServer, tractatus_testkit::RedisServer) {
    let master = RedisServer::start();
    let port = master.port.to_string();
    let replica = tractatus_testkit::RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]);
    wait_until(Duration::from_secs(10), "the replica's link is up", || {
        replication_field(replica.port, "master_link_status").as_deref() == Some("up")
    });
    (master, replica)
}

#[test]
fn a_grant_waits_for_its_replica_and_a_shortfall_stands_and_is_logged() {
    let (master, replica) = master_and_replica();
    let repo = Repo::new();
    let locked = |name: &str| {
        run(tractatus(&repo.path())
            .env("TRACTATUS_REDIS", master.url())
            .env("TRACTATUS_REDIS_WAIT_REPLICAS", "1")
            .env("TRACTATUS_REDIS_WAIT_TIMEOUT", "300ms")
            .args(["--wait", "0", "lock", "run", "--name", name, "--", "true"]))
    };
    let r = locked("W");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let quick = r.elapsed;
    // The replica stops answering: the grant waits the timeout, then stands, and the log says
    // the lease did not reach its replica.
    replica.pause();
    let r = locked("W");
    replica.resume();
    assert_eq!(r.code, 0, "{}", r.stderr);
    println!(
        "lock run with its replica: {quick:?}; with it paused: {:?}",
        r.elapsed
    );
    assert!(r.elapsed >= Duration::from_millis(300), "{:?}", r.elapsed);
    let log = run(tractatus(&repo.path())
        .env("TRACTATUS_REDIS", master.url())
        .args(["--json", "lock", "log"]));
    assert_eq!(log.code, 0, "{}", log.stderr);
    let events: serde_json::Value = serde_json::from_str(&log.stdout).unwrap();
    let names: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        names.iter().filter(|e| **e == "unreplicated").count(),
        1,
        "{names:?}"
    );
}

/// p50 and p90 of `samples`.
fn p50_p90(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.9))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_replica_wait_and_the_failover_check_cost() {
    use tractatus_lock::{Config, Coordinator, Identity, config::parse_nodes};
    let (master, _replica) = master_and_replica();
    let coordinator = |replicas: u32| {
        let mut config = Config::new(parse_nodes(&[master.url()]).unwrap());
        config.namespace = "bench".into();
        config.wait_replicas = replicas;
        Coordinator::connect(config, Identity::current("t"))
    };
    let cases = [
        ("no replica wait", coordinator(0).await.unwrap()),
        ("WAIT for 1 replica", coordinator(1).await.unwrap()),
    ];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); cases.len()];
    let deadline = Instant::now() + Duration::from_secs(20);
    for _ in 0..500 {
        if Instant::now() > deadline {
            break;
        }
        for (i, (_, c)) in cases.iter().enumerate() {
            let t = Instant::now();
            let lease = c.try_acquire("bench/uncontended").await.unwrap();
            lease.release().await.unwrap();
            samples[i].push(t.elapsed());
        }
    }
    for ((name, _), s) in cases.iter().zip(samples) {
        let (p50, p90) = p50_p90(s);
        println!("acquire+release, {name}: p50 {p50:?}, p90 {p90:?}");
    }
    // The failover check's own price, server side: the INFO replication a grant of a free lease
    // now makes, against a script that does nothing.
    let client = redis::Client::open(master.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for (name, body) in [
        ("EVAL return 1", "return 1"),
        (
            "EVAL INFO replication",
            "return #redis.call('INFO', 'replication')",
        ),
    ] {
        let mut s = Vec::new();
        for _ in 0..1000 {
            let t = Instant::now();
            let _: i64 = redis::cmd("EVAL")
                .arg(body)
                .arg(0)
                .query_async(&mut conn)
                .await
                .unwrap();
            s.push(t.elapsed());
        }
        let (p50, p90) = p50_p90(s);
        println!("{name}: p50 {p50:?}, p90 {p90:?}");
    }
}

/// A long-lived coordinator on `url` (TTL and quarantine 1 s, namespace `ns`) that took and
/// released lock L once: the coordinator and that token.
async fn sentinel_coordinator(url: &str, ns: &str) -> (tractatus_lock::Coordinator, u64) {
    use tractatus_lock::{Config, Coordinator, Identity, config::parse_nodes};
    let mut config = Config::new(parse_nodes(&[url]).unwrap());
    config.namespace = ns.into();
    config.ttl = Duration::from_secs(1);
    config.quarantine = Duration::from_secs(1);
    let c = Coordinator::connect(config, Identity::current("t"))
        .await
        .unwrap();
    let before = c.try_acquire("L").await.unwrap();
    let token = before.token();
    before.release().await.unwrap();
    (c, token)
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

#[tokio::test]
async fn a_grant_sent_twice_answers_granted_with_its_token_again() {
    // A cluster connection sends a request again after a dropped connection or a response
    // timeout, though the first one may have run: the second grant of the same owner must say
    // granted (same token), not "held by" the caller itself, which would leave it waiting on
    // its own lease for a TTL.
    use tractatus_lock::backend::{GrantReply, GrantRequest, Node};
    use tractatus_lock::redis_node::RedisNode;
    let server = RedisServer::start();
    let url = tractatus_lock::config::NodeUrl::parse(&server.url()).unwrap();
    let node = RedisNode::new(&url, Duration::from_secs(2), Duration::from_secs(2)).unwrap();
    let req = GrantRequest {
        keys: tractatus_lock::keys::LockKeys::new("twice", "L"),
        owner: "owner-1".into(),
        join_hash: String::new(),
        ttl: Duration::from_secs(5),
        identity: tractatus_lock::Identity::current("t"),
        waiter: None,
        waiter_ttl: Duration::from_secs(1),
        place: 0,
        log_cap: 100,
        quarantine: Duration::from_secs(5),
        floor: 0,
    };
    let first = node.grant(&req).await.unwrap();
    let GrantReply::Granted { token } = first else {
        panic!("first grant: {first:?}");
    };
    assert_eq!(
        node.grant(&req).await.unwrap(),
        GrantReply::Granted { token }
    );
    // Another owner is still refused.
    let other = GrantRequest {
        owner: "owner-2".into(),
        ..req
    };
    assert!(matches!(
        node.grant(&other).await.unwrap(),
        GrantReply::Refused { .. }
    ));
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
