//! Waits on three masters that must not sleep through a free lock (issue 20): an attempt that
//! one master granted and the others refused is undone there, which takes the waiter out of
//! that master's line and calls the next one there; the waiter must try again soon rather than
//! wait for calls from a majority until its 200 ms heartbeat.

use std::time::{Duration, Instant};

use tractatus_lock::keys::LockKeys;
use tractatus_lock::{AcquireOptions, Config, Coordinator, Identity, config::parse_nodes};

use crate::support::{RedisServer, cluster, wait_until};

const NS: &str = "stall";
const LOCK: &str = "L";

async fn coordinator(urls: &str) -> Coordinator {
    let mut config = Config::new(parse_nodes(&[urls.to_owned()]).unwrap());
    config.namespace = NS.into();
    Coordinator::connect(config, Identity::current("stall"))
        .await
        .unwrap()
}

fn queued(server: &RedisServer, keys: &LockKeys) -> usize {
    server.cmd(&["ZCARD", &keys.queue]).parse().unwrap_or(0)
}

/// Master 0 free, master 1 held by another (a lease planted there), master 2 held by an orphan
/// for the whole test. The first of two waiters in line is granted on master 0 only, over and
/// over; when master 1 is freed (its release calls that waiter there), it must take the lock
/// within a fraction of a heartbeat. Several rounds, freed at different phases of the waiter's
/// attempts: a waiter asleep until its heartbeat passes one round in two at best.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_granted_by_one_master_of_three_and_refused_by_two_takes_the_lock_soon_after_one_frees()
 {
    let servers = cluster(3);
    let urls: Vec<_> = servers.iter().map(|s| s.url()).collect();
    let urls = urls.join(",");
    let keys = LockKeys::new(NS, LOCK);
    servers[2].cmd(&["SET", &keys.lease, "orphan", "PX", "120000"]);
    let (first, second) = (coordinator(&urls).await, coordinator(&urls).await);
    let opts = AcquireOptions::wait(Duration::from_secs(20));
    for round in 0..5u64 {
        servers[1].cmd(&["SET", &keys.lease, "other", "PX", "60000"]);
        let a = tokio::spawn({
            let (c, opts) = (first.clone(), opts.clone());
            async move { c.acquire(LOCK, &opts).await.map(|l| (l, Instant::now())) }
        });
        wait_until(Duration::from_secs(10), "the first waiter queued", || {
            queued(&servers[1], &keys) == 1
        });
        let b = tokio::spawn({
            let (c, opts) = (second.clone(), opts.clone());
            async move { c.acquire(LOCK, &opts).await }
        });
        wait_until(Duration::from_secs(10), "both waiters queued", || {
            queued(&servers[1], &keys) == 2
        });
        // Free master 1 at a different point of the first waiter's round each time.
        tokio::time::sleep(Duration::from_millis(250 + 47 * round)).await;
        let head = servers[1].cmd(&["ZRANGE", &keys.queue, "0", "0"]);
        let freed = Instant::now();
        servers[1].cmd(&["DEL", &keys.lease]);
        servers[1].cmd(&["PUBLISH", &keys.channel, head.trim()]);
        let (lease, at) = tokio::time::timeout(Duration::from_secs(10), a)
            .await
            .expect("the first waiter never took the lock")
            .unwrap()
            .unwrap();
        let took = at.duration_since(freed);
        assert!(
            took < Duration::from_millis(100),
            "round {round}: the first waiter took the lock {took:?} after master 1 freed it"
        );
        lease.release().await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), b)
            .await
            .expect("the second waiter never took the lock")
            .unwrap()
            .unwrap()
            .release()
            .await
            .unwrap();
    }
}
