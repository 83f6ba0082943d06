//! The hand-off box on one Redis: the waiter takes the lease from it, a waiter whose box broke
//! takes the hand-off with its next attempt, an ended wait leaves no `BLPOP` blocked, and box
//! connections are kept between waits (and replaced when their server restarted).

use std::sync::mpsc;
use std::time::Duration;

use super::*;

/// One Redis, a holder, the release messages heard from now on, and a traced waiter queued
/// behind the holder with its box open.
struct Handing {
    servers: Vec<RedisServer>,
    repo: Repo,
    held: Guard,
    messages: mpsc::Receiver<Vec<String>>,
    next: Traced,
}

fn handing() -> Handing {
    let servers = cluster(1);
    let urls = urls(&servers);
    let repo = Repo::new();
    let held = holder(&repo, &urls, "10s");
    let messages = listen(&servers[0], repo.keys(LOCK).channel);
    let next = traced_waiter(&repo, &servers, &urls);
    Handing {
        servers,
        repo,
        held,
        messages,
        next,
    }
}

/// On one Redis the release pushes the hand-off into the waiter's box, and the waiter takes the
/// lease from there (no round trip of its own before its command starts its confirmation), under
/// the token the release minted.
#[test]
fn a_handed_waiter_takes_the_lease_from_its_box() {
    by_its_box(|| {
        let Handing {
            servers: _servers,
            repo,
            held,
            messages,
            mut next,
        } = handing();
        next.let_go_after_an_attempt(held);
        let (out, err) = next.finish();
        assert!(out.success(), "the waiter: {out}: {err}");
        assert_eq!(
            repo.read("ran").trim(),
            the_hand_off_token(messages),
            "the command ran under another token than the release's"
        );
        err
    });
}

/// A waiter whose box connection broke (killed here) still takes a hand-off: the message names
/// it, and its next attempt at once finds the lease its own, under the token the release
/// minted (the server's answer, never the message's).
#[test]
fn a_waiter_whose_box_broke_takes_a_hand_off_with_its_next_attempt() {
    let Handing {
        servers,
        repo,
        held,
        messages,
        next,
    } = handing();
    let id = boxes(&servers[0]).remove(0);
    assert_eq!(servers[0].cmd(&["CLIENT", "KILL", "ID", &id]), "1");
    wait_until(Duration::from_secs(10), "the box is closed", || {
        boxes(&servers[0]).is_empty()
    });
    let_go(held);
    let (out, err) = next.finish();
    assert!(out.success(), "the waiter: {out}: {err}");
    assert!(!err.contains("(its box)"), "a killed box handed it: {err}");
    assert_eq!(
        repo.read("ran").trim(),
        the_hand_off_token(messages),
        "the command ran under another token than the one the release minted"
    );
}

/// The library on `redis` alone.
async fn library_on(redis: &RedisServer) -> tractatus_lock::Coordinator {
    use tractatus_lock::{Config, Coordinator, Identity, config::parse_nodes};
    let config = Config::new(parse_nodes(&[redis.url()]).unwrap());
    Coordinator::connect(config, Identity::current("t"))
        .await
        .unwrap()
}

/// A wait for `lock`, held by another, that runs out after `wait`.
async fn runs_out(c: &tractatus_lock::Coordinator, lock: &str, wait: Duration) {
    let Err(err) = c
        .acquire(lock, &tractatus_lock::AcquireOptions::wait(wait))
        .await
    else {
        panic!("a wait took a held lock");
    };
    assert!(
        matches!(err, tractatus_lock::Error::Timeout { .. }),
        "{err}"
    );
}

/// A connection of the test's own, to watch a server's clients.
struct Watch(redis::Connection);

impl Watch {
    fn on(redis: &RedisServer) -> Watch {
        Watch(
            redis::Client::open(redis.url())
                .unwrap()
                .get_connection()
                .unwrap(),
        )
    }

    /// `CLIENT LIST`.
    fn clients(&mut self) -> String {
        redis::cmd("CLIENT").arg("LIST").query(&mut self.0).unwrap()
    }

    /// How many connections the server has accepted so far.
    fn received(&mut self) -> u64 {
        let info: String = redis::cmd("INFO").arg("stats").query(&mut self.0).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

/// A wait that ended (ran out while queued, or dropped midway) leaves no `BLPOP` of its box
/// blocked on the server: its end unblocks it (and its connection is kept for the next wait).
/// (Found in review to hold when the connection was closed with the wait.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_wait_leaves_no_blpop_behind() {
    use tractatus_lock::AcquireOptions;
    let redis = crate::support::RedisServer::start();
    let c = library_on(&redis).await;
    let held = c.try_acquire("B").await.unwrap();
    // Three waits that run out while queued, one after another, in one process.
    for _ in 0..3 {
        runs_out(&c, "B", Duration::from_millis(500)).await;
    }
    // A wait in a task, dropped midway (its future aborted) once its box is open.
    let c2 = c.clone();
    let task = tokio::spawn(async move {
        let _ = c2
            .acquire("B", &AcquireOptions::wait(Duration::from_secs(30)))
            .await;
    });
    let r = &redis;
    tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(10), "the wait's box is open", || {
            boxes(r).len() == 1
        })
    });
    task.abort();
    tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(10), "every box is closed", || {
            boxes(r).is_empty()
        })
    });
    held.release().await.unwrap();
}

/// Box connections are kept between waits: ten waits in a row, each queued with its box open
/// and handed the lock, open one or two connections in all, not ten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_in_a_row_reuse_their_box_connections() {
    use tractatus_lock::AcquireOptions;
    let redis = crate::support::RedisServer::start();
    let c = library_on(&redis).await;
    let mut watch = Watch::on(&redis);
    let mut clients = Watch::on(&redis);
    let mut waiting_in_box = move || blocked_in_blpop(&clients.clients()).len();
    let before = watch.received();
    for _ in 0..10 {
        let held = c.try_acquire("P").await.unwrap();
        let c2 = c.clone();
        let waiter = tokio::spawn(async move {
            c2.acquire("P", &AcquireOptions::wait(Duration::from_secs(10)))
                .await
        });
        tokio::task::block_in_place(|| {
            wait_until(Duration::from_secs(10), "the waiter's box is open", || {
                waiting_in_box() == 1
            })
        });
        held.release().await.unwrap();
        let lease = waiter.await.unwrap().unwrap();
        lease.release().await.unwrap();
        // A hand-off that landed as the waiter's heartbeat attempt ran (a stall) leaves its box
        // blocked until its end unblocks it: the connection is kept a round trip after that.
        tokio::task::block_in_place(|| {
            wait_until(Duration::from_secs(10), "the box is unblocked", || {
                waiting_in_box() == 0
            })
        });
    }
    let opened = watch.received() - before;
    assert!(
        opened <= 2,
        "{opened} connections opened for 10 waits in a row (one each, unless kept)"
    );
}

/// A wait that ended with its box still blocked (it ran out while queued) unblocks it with a
/// push into its own box, and its connection, once it answers a `PING`, serves the next wait:
/// five such waits in a row open at most one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_that_run_out_give_their_box_connection_back() {
    let redis = crate::support::RedisServer::start();
    let c = library_on(&redis).await;
    let held = c.try_acquire("E").await.unwrap();
    let mut watch = Watch::on(&redis);
    // A kept box connection: idle, its last command the PING that let it back.
    let mut kept = || {
        watch.clients().lines().any(|l| {
            let f: Vec<_> = l.split(' ').collect();
            f.contains(&"cmd=ping") && f.contains(&"flags=N")
        })
    };
    let wait_out = || runs_out(&c, "E", Duration::from_millis(300));
    wait_out().await;
    tokio::task::block_in_place(|| {
        wait_until(
            Duration::from_secs(10),
            "the box connection is kept",
            &mut kept,
        )
    });
    let before = watch.received();
    for _ in 0..5 {
        wait_out().await;
    }
    let opened = watch.received() - before;
    held.release().await.unwrap();
    assert!(
        opened <= 1,
        "{opened} connections opened for 5 waits that ran out (one each, unless given back)"
    );
}

/// A kept box connection whose server restarted since does not fail the next wait's box: that
/// wait opens a new connection (its `BLPOP` blocks on the server) and is handed the lock from
/// it. (Taken from the pool unchecked, the dead connection failed the first `BLPOP` and the
/// wait went without a box.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_box_connection_to_a_restarted_server_is_replaced() {
    use tractatus_lock::AcquireOptions;
    let mut redis = crate::support::RedisServer::start();
    let c = library_on(&redis).await;
    let held = c.try_acquire("R").await.unwrap();
    runs_out(&c, "R", Duration::from_millis(300)).await;
    let mut watch = Watch::on(&redis);
    tokio::task::block_in_place(|| {
        wait_until(
            Duration::from_secs(10),
            "the box connection is kept",
            || {
                watch.clients().lines().any(|l| {
                    let f: Vec<_> = l.split(' ').collect();
                    f.contains(&"cmd=ping") && f.contains(&"flags=N")
                })
            },
        )
    });
    held.release().await.unwrap();
    redis.restart_empty();
    assert_eq!(crate::support::mark_initialized(&redis.url()), 1);
    let other = library_on(&redis).await;
    let held = other.try_acquire("R").await.unwrap();
    let c2 = c.clone();
    let waiter = tokio::spawn(async move {
        c2.acquire("R", &AcquireOptions::wait(Duration::from_secs(10)))
            .await
    });
    let r = &redis;
    tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(10), "the waiter's box is open", || {
            boxes(r).len() == 1
        })
    });
    held.release().await.unwrap();
    let lease = waiter.await.unwrap().unwrap();
    lease.release().await.unwrap();
}
