//! Redlock's fan-out over five masters, uncontended (issue 20): what one acquire and release
//! asks of the masters. The masters of an attempt mint one token (the client's proposed floor),
//! so the grant needs no raise round trip; and a release does not end on a master a second
//! time what that master's release already ended.

use std::time::Duration;

use tractatus_lock::keys::LockKeys;
use tractatus_lock::{Config, Coordinator, Identity, config::parse_nodes};

use crate::support::{RedisServer, cluster};

const NS: &str = "fanout";
const LOCK: &str = "L";
const ROUNDS: usize = 20;

async fn coordinator(servers: &[RedisServer]) -> Coordinator {
    let urls: Vec<_> = servers.iter().map(|s| s.url()).collect();
    let mut config = Config::new(parse_nodes(&[urls.join(",")]).unwrap());
    config.namespace = NS.into();
    Coordinator::connect(config, Identity::current("fanout"))
        .await
        .unwrap()
}

/// Script calls (EVAL and EVALSHA) each master served so far, from `INFO commandstats`.
fn script_calls(servers: &[RedisServer]) -> u64 {
    servers
        .iter()
        .map(|s| {
            s.cmd(&["INFO", "commandstats"])
                .lines()
                .filter(|l| l.starts_with("cmdstat_eval:") || l.starts_with("cmdstat_evalsha:"))
                .filter_map(|l| {
                    l.split_once("calls=")?
                        .1
                        .split(',')
                        .next()?
                        .parse::<u64>()
                        .ok()
                })
                .sum::<u64>()
        })
        .sum()
}

/// Without the client's floor every master mints its own clock reading: the masters that
/// answered first are raised to the highest of them (an awaited round trip), and the ones that
/// answered later keep their own, higher, counters. So no round would leave all five alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncontended_grant_on_five_masters_mints_one_token_on_every_master() {
    let servers = cluster(5);
    let c = coordinator(&servers).await;
    let keys = LockKeys::new(NS, LOCK);
    let mut alike = 0;
    for _ in 0..ROUNDS {
        let lease = c.try_acquire(LOCK).await.unwrap();
        let token = lease.token().to_string();
        // Every master's grant has landed once its counter is there (a late one may still be
        // on its way when the acquire returns).
        let counters = |servers: &[RedisServer]| -> Vec<String> {
            servers
                .iter()
                .map(|s| s.cmd(&["GET", &keys.fence]))
                .collect()
        };
        crate::support::wait_until(Duration::from_secs(10), "every master minted", || {
            counters(&servers)
                .iter()
                .all(|c| c != "(nil)" && c.len() >= token.len() && *c >= token)
        });
        alike += usize::from(counters(&servers).iter().all(|c| *c == token));
        lease.release().await.unwrap();
    }
    // A grant that reaches its master more than the proposal's lead after the client read its
    // clock (a loaded machine) mints its own: most rounds, not all, must be alike.
    assert!(
        alike * 4 >= ROUNDS * 3,
        "only {alike} of {ROUNDS} rounds left one token on all five masters"
    );
}

/// Five grants and five releases a round. Before, each round also had about two raises (the
/// masters minted different tokens) and about two more ends (the two slowest grants answered
/// after the release had begun, and were ended again though the release right behind each on
/// the same connection had already ended it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncontended_acquire_and_release_on_five_masters_asks_each_master_twice() {
    let servers = cluster(5);
    let c = coordinator(&servers).await;
    // Scripts loaded and connections made before counting.
    c.try_acquire(LOCK).await.unwrap().release().await.unwrap();
    let before = script_calls(&servers);
    for _ in 0..ROUNDS {
        c.try_acquire(LOCK).await.unwrap().release().await.unwrap();
    }
    // Late calls run in the background; an extra one cannot be awaited, only given time.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let calls = script_calls(&servers) - before;
    let per_round = calls as f64 / ROUNDS as f64;
    assert!(
        per_round <= 10.5,
        "{per_round:.2} script calls per acquire+release on 5 masters (10 would be a grant and a \
         release on each)"
    );
}

/// The pub/sub connections a server serves now.
fn pubsub_clients(server: &RedisServer) -> usize {
    server
        .cmd(&["CLIENT", "LIST", "TYPE", "pubsub"])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

/// Three waits on one master, on two locks, listen over one pub/sub connection (each opened
/// its own before); each is still woken and takes its lock once it is free; the connection
/// closes with its coordinator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_on_one_master_share_one_pub_sub_connection() {
    let servers = cluster(1);
    let (holder, waiter) = (coordinator(&servers).await, coordinator(&servers).await);
    let held = [
        holder.try_acquire("A").await.unwrap(),
        holder.try_acquire("B").await.unwrap(),
    ];
    let opts = tractatus_lock::AcquireOptions::wait(Duration::from_secs(20));
    let waits: Vec<_> = ["A", "A", "B"]
        .into_iter()
        .map(|name| {
            let (c, opts) = (waiter.clone(), opts.clone());
            tokio::spawn(async move {
                let lease = c.acquire(name, &opts).await?;
                lease.release().await
            })
        })
        .collect();
    let keys = [LockKeys::new(NS, "A"), LockKeys::new(NS, "B")];
    crate::support::wait_until(Duration::from_secs(10), "all three waits queued", || {
        keys.iter()
            .map(|k| servers[0].cmd(&["ZCARD", &k.queue]).parse().unwrap_or(0))
            .sum::<usize>()
            == 3
    });
    // A wait subscribes after its first refusal, before its next attempt, which renews its
    // registration: once every registration was renewed, every wait has subscribed.
    let latest: Vec<String> = keys
        .iter()
        .map(|k| {
            let script = "return redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2]";
            servers[0].cmd(&["EVAL", script, "1", &k.waiters])
        })
        .collect();
    crate::support::wait_until(Duration::from_secs(10), "every wait asked again", || {
        keys.iter()
            .zip(&latest)
            .all(|(k, max)| servers[0].cmd(&["ZCOUNT", &k.waiters, "-inf", max]) == "0")
    });
    assert_eq!(
        pubsub_clients(&servers[0]),
        1,
        "each wait opened a pub/sub connection of its own"
    );
    for lease in held {
        lease.release().await.unwrap();
    }
    for w in waits {
        tokio::time::timeout(Duration::from_secs(10), w)
            .await
            .expect("a wait was not woken")
            .unwrap()
            .unwrap();
    }
    // The connection lives as long as its coordinator, not longer.
    drop((holder, waiter));
    crate::support::wait_until(Duration::from_secs(10), "the connection closed", || {
        pubsub_clients(&servers[0]) == 0
    });
}

/// The shared connection dropped under a wait (the server killed it): the wait notices it lost
/// its subscription, subscribes again on a new connection, and is woken by the release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_whose_shared_pub_sub_connection_is_killed_subscribes_again_and_is_woken() {
    let servers = cluster(1);
    let (holder, waiter) = (coordinator(&servers).await, coordinator(&servers).await);
    let lease = holder.try_acquire(LOCK).await.unwrap();
    let opts = tractatus_lock::AcquireOptions::wait(Duration::from_secs(20));
    let wait = tokio::spawn({
        let (c, opts) = (waiter.clone(), opts.clone());
        async move { c.acquire(LOCK, &opts).await.map(|l| l.token()) }
    });
    crate::support::wait_until(Duration::from_secs(10), "the wait subscribed", || {
        pubsub_clients(&servers[0]) == 1
    });
    let first = servers[0].cmd(&["CLIENT", "LIST", "TYPE", "pubsub"]);
    servers[0].cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    crate::support::wait_until(Duration::from_secs(10), "the wait subscribed again", || {
        let now = servers[0].cmd(&["CLIENT", "LIST", "TYPE", "pubsub"]);
        !now.trim().is_empty() && now != first
    });
    let released = std::time::Instant::now();
    lease.release().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("the wait was not woken")
        .unwrap()
        .unwrap();
    // Woken by the release, not by its lease's end (the TTL is seconds).
    assert!(released.elapsed() < Duration::from_secs(2));
}
