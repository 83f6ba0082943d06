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
//! Split by sub-feature (issue 22): the eight workers and their counts, and the cost
//! measurement the docs name, stay here; `sentinel` (failover through Sentinel), `promotion`
//! (promoted replicas and demoted masters), `replica_wait` (waiting for the replica, retried
//! grants).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tractatus_testkit::sentinel::{SentinelGroup, replication_field};

use crate::restart::{LOGGED, read_log, repeated, strictly_increasing};
use crate::support::{
    RedisServer, Repo, mark_initialized, master_and_replica, run, tractatus, wait_until,
};

mod promotion;
mod replica_wait;
mod sentinel;

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
