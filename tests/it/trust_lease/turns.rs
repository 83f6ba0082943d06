//! Joiners of one lease take turns: siblings, two joins in one process, a killed joiner, one
//! waiting going first.

use super::*;

/// Each sibling runs 50 nested `lock run`s whose command reads a counter, waits a little and
/// writes it back, logging when it entered and left.
const SIBLINGS: &str = r#"
    one() { i=0; while [ $i -lt 50 ]; do
        "$1" lock run --file "$2" -- sh -c '
            echo "in $(date +%s%N)" >> "$0/times"
            n=$(cat "$0/counter"); sleep 0.005; echo $((n + 1)) > "$0/counter"
            echo "out $(date +%s%N)" >> "$0/times"' "$3" || exit 9
        i=$((i + 1)); done; }
    one "$@" & a=$!; one "$@" & b=$!
    wait $a || exit 9; wait $b || exit 9
"#;

/// Runs [`SIBLINGS`] under one `lock run` on `redis` (URLs; none: local locks) and checks that
/// no two critical sections overlapped and no increment was lost.
fn siblings_take_turns(redis: Option<&str>, backend: &str) {
    let repo = Repo::new();
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("counter"), "0").unwrap();
    let mut c = tractatus(&repo.path());
    c.env("TRACTATUS_QUIET", "1").env("TRACTATUS_WAIT", "60s");
    if let Some(urls) = redis {
        c.env("TRACTATUS_REDIS", urls);
    }
    let r = run(c
        .args([
            "lock", "run", "--file", FILE, "--", "sh", "-c", SIBLINGS, "sh", BIN, FILE,
        ])
        .arg(work.path()));
    assert_eq!(r.code, 0, "{backend}: {}", r.describe());
    let times = std::fs::read_to_string(work.path().join("times")).unwrap();
    let (mut inside, mut most, mut overlaps) = (0, 0, 0);
    let mut events: Vec<(u128, i32)> = times
        .lines()
        .map(|l| {
            let (what, at) = l.split_once(' ').unwrap();
            (at.parse().unwrap(), if what == "in" { 1 } else { -1 })
        })
        .collect();
    events.sort();
    for (_, d) in &events {
        inside += d;
        if inside > 1 {
            overlaps += 1;
        }
        most = most.max(inside);
    }
    let counter = std::fs::read_to_string(work.path().join("counter")).unwrap();
    println!("{backend}: {overlaps} overlaps, counter {}", counter.trim());
    assert_eq!(events.len(), 200, "{backend}");
    assert_eq!(overlaps, 0, "{backend}: at most {most} inside at once");
    assert_eq!(counter.trim(), "100", "{backend}");
}

#[test]
fn sibling_joiners_of_one_lease_take_turns() {
    let redis = RedisServer::start();
    siblings_take_turns(Some(&redis.url()), "redis");
    siblings_take_turns(None, "local");
}

#[test]
fn sibling_joiners_take_turns_on_three_masters_and_on_a_cluster() {
    let masters = crate::support::cluster(3);
    let urls: Vec<String> = masters.iter().map(|m| m.url()).collect();
    siblings_take_turns(Some(&urls.join(",")), "redlock");
    let c = tractatus_testkit::RedisCluster::start(3, 0);
    crate::support::mark_initialized(&c.url());
    siblings_take_turns(Some(&c.url()), "cluster");
}

#[test]
fn two_joins_in_one_process_take_turns_and_a_dropped_one_lets_the_next_in() {
    let redis = RedisServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let repo = Repo::new();
        let redis_config = Config::new(parse_nodes(&[redis.url().as_str()]).unwrap());
        let on_redis = Coordinator::connect(redis_config, Identity::current("t"))
            .await
            .unwrap();
        let locks = repo.path().join(".claude/.tractatus/locks");
        let local = Coordinator::local(Config::new(vec![]), Identity::current("t"), locks).unwrap();
        for c in [on_redis, local] {
            let held = c
                .acquire("turns", &AcquireOptions::default())
                .await
                .unwrap();
            let first = held.join().await.unwrap();
            let mut second = Box::pin(held.join());
            assert!(
                tokio::time::timeout(Duration::from_millis(300), &mut second)
                    .await
                    .is_err(),
                "the second join went in while the first was inside"
            );
            let started = Instant::now();
            first.release().await.unwrap();
            let second = second.await.unwrap();
            assert!(started.elapsed() < Duration::from_secs(1));
            assert_eq!(second.token(), held.token());
            // A joiner dropped without release (as a dying process would) lets the next in.
            drop(second);
            let third = tokio::time::timeout(Duration::from_secs(5), held.join())
                .await
                .expect("a dropped joiner still blocks")
                .unwrap();
            third.release().await.unwrap();
            held.release().await.unwrap();
        }
    });
}

#[test]
fn a_joiner_killed_in_its_turn_holds_the_next_one_up_for_less_than_a_second() {
    // The inner `lock run` joins and takes the turn; once its command runs, it is killed
    // (SIGKILL: no release, no leave), and another joiner of the same lease goes in.
    let script = r#"
        mkfifo "$3/in"
        "$1" lock run --file "$2" -- sh -c 'echo in > "$0/in"; exec sleep 60' "$3" & j=$!
        read x < "$3/in"
        kill -9 $j
        start=$(date +%s%N)
        "$1" state merge "$2" '{"after":1}' || exit 9
        echo $(( ($(date +%s%N) - start) / 1000000 )) > "$3/ms"
    "#;
    for redis in [Some(RedisServer::start()), None] {
        let repo = Repo::new();
        let work = tempfile::tempdir().unwrap();
        let mut c = tractatus(&repo.path());
        c.env("TRACTATUS_QUIET", "1").env("TRACTATUS_WAIT", "20s");
        if let Some(r) = &redis {
            c.env("TRACTATUS_REDIS", r.url());
        }
        let r = run(c
            .args([
                "lock", "run", "--file", FILE, "--", "sh", "-c", script, "sh", BIN, FILE,
            ])
            .arg(work.path()));
        let backend = if redis.is_some() { "redis" } else { "local" };
        assert_eq!(r.code, 0, "{backend}: {}", r.describe());
        let ms: u64 = std::fs::read_to_string(work.path().join("ms"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        println!("{backend}: the next joiner went in {ms} ms after the kill");
        assert!(ms < 1000, "{backend}: {ms} ms");
    }
}

#[test]
fn on_redis_a_joiner_waiting_for_its_turn_goes_before_one_that_asks_again_at_once() {
    let redis = RedisServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let config = Config::new(parse_nodes(&[redis.url().as_str()]).unwrap());
        let c = Coordinator::connect(config, Identity::current("t"))
            .await
            .unwrap();
        let held = c.acquire("fair", &AcquireOptions::default()).await.unwrap();
        for round in 0..5 {
            let first = held.join().await.unwrap();
            let mut waiting = Box::pin(held.join());
            // It asks, finds the turn taken, and gets in line.
            assert!(
                tokio::time::timeout(Duration::from_millis(100), &mut waiting)
                    .await
                    .is_err()
            );
            // The first leaves and at once asks again: the one in line goes first.
            first.release().await.unwrap();
            let mut again = Box::pin(held.join());
            let winner = tokio::select! {
                w = &mut waiting => { w.unwrap().release().await.unwrap(); "waiting" }
                a = &mut again => { a.unwrap().release().await.unwrap(); "again" }
            };
            assert_eq!(winner, "waiting", "round {round}");
            let _ = tokio::time::timeout(Duration::from_secs(5), again).await;
        }
        held.release().await.unwrap();
    });
}
