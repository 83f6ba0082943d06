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
