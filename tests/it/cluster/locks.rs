//! Locks on a cluster: load and a slot migration lose nothing, a URL finds the cluster by
//! itself, `lock init`/`status`/`log` see every master, a cluster as one Redlock member,
//! waiters and newcomers when a node dies.

use super::*;

#[test]
fn three_masters_eight_processes_sixteen_locks_lose_nothing() {
    let c = RedisCluster::start(3, 0);
    assert_eq!(
        masters_of_names(&c).len(),
        3,
        "the 16 names land on all 3 masters"
    );
    assert_eq!(mark_initialized(&c.url()), 3);
    let (repo, work) = (Repo::new(), tempfile::tempdir().unwrap());
    let (detect, explicit) = (c.url(), with_param(&c.node(1).url()));
    let d = load(&repo, work.path(), [&detect, &explicit], 12, |_| {});
    assert_counts(&repo, work.path(), &d, 12);
}

#[test]
fn a_migration_of_the_locks_slots_mid_run_loses_nothing() {
    let c = RedisCluster::start(3, 0);
    assert_eq!(mark_initialized(&c.url()), 3);
    let (repo, work) = (Repo::new(), tempfile::tempdir().unwrap());
    let (detect, explicit) = (c.url(), with_param(&c.node(2).url()));
    let mut slots: Vec<u16> = names().iter().map(|n| slot(n)).collect();
    slots.extend((0..FILES).map(|k| slot(&state_file(k))));
    slots.sort();
    slots.dedup();
    let mut moved = (0, 0);
    let d = load(&repo, work.path(), [&detect, &explicit], 12, |done| {
        // Let the run get going, then move every lock's slot to the next master, twice round.
        wait_until(Duration::from_secs(60), "some locks were taken", || {
            done.load(Ordering::SeqCst)
                || std::fs::read_to_string(work.path().join("job-00/tokens")).is_ok()
        });
        for _round in 0..2 {
            for &s in &slots {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                let to = (c.master_of_slot(s) + 1) % 3;
                moved.0 += 1;
                moved.1 += c.move_slot(s, to);
            }
        }
    });
    println!("moved {} slots ({} keys) during the run", moved.0, moved.1);
    assert!(
        moved.0 >= slots.len(),
        "the run ended before the slots moved"
    );
    assert_counts(&repo, work.path(), &d, 12);
}

/// One `lock run --name NAME -- true` on `url`.
fn once(repo: &Path, url: &str, name: &str) -> crate::support::Ran {
    run(cli(repo, url).args(["--wait", "5s", "lock", "run", "--name", name, "--", "true"]))
}

#[test]
fn a_url_without_the_parameter_finds_the_cluster_and_cluster_false_forces_one_server() {
    let c = RedisCluster::start(3, 0);
    assert_eq!(mark_initialized(&c.url()), 3);
    let repo = Repo::new();
    let seed = c.url();
    let elsewhere = names()
        .into_iter()
        .find(|n| c.master_of_slot(slot(n)) != 0)
        .unwrap();
    for n in names() {
        let r = once(&repo.path(), &seed, &n);
        assert_eq!(r.code, 0, "{n}: {}", r.stderr);
    }
    let r = run(cli(&repo.path(), &format!("{seed}?cluster=false")).args([
        "--wait", "0", "lock", "run", "--name", &elsewhere, "--", "true",
    ]));
    assert_eq!(r.code, 69, "{}", r.stderr);
    assert!(
        r.stderr.contains("leave out ?cluster=false"),
        "{}",
        r.stderr
    );
    let r = once(&repo.path(), &format!("{seed}?cluster=maybe"), &elsewhere);
    assert_eq!(r.code, 64, "{}", r.stderr);
}

/// A `lock run` holding `name` around `sleep 60`; returns once its command runs.
fn hold(repo: &Path, url: &str, name: &str) -> Guard {
    hold_for(repo, url, name, "3s")
}

/// [`hold`] with a lease TTL of `ttl` (and a quarantine as long).
fn hold_for(repo: &Path, url: &str, name: &str, ttl: &str) -> Guard {
    let ready = repo.join(format!("{name}.ready"));
    let g = Guard(
        cli(repo, url)
            .env("TRACTATUS_QUARANTINE", ttl)
            .env("TRACTATUS_TTL", ttl)
            .args([
                "lock",
                "run",
                "--name",
                name,
                "--",
                "sh",
                "-c",
                "touch \"$1\"; exec sleep 60",
                "sh",
            ])
            .arg(&ready)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until(Duration::from_secs(20), "the holder runs", || {
        ready.exists()
    });
    g
}

#[test]
fn init_status_and_log_see_every_master() {
    let c = RedisCluster::start(3, 0);
    let repo = Repo::new();
    let url = c.url();
    let r = run(cli(&repo.path(), &url).args(["lock", "init"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("marked 3 Redis servers"), "{}", r.stdout);
    // Every master's slots carry that master's own run id and replication id.
    let mut total = 0;
    for m in c.current_masters() {
        let field = |section: &str, name: &str| {
            c.node(m)
                .cmd(&["INFO", section])
                .lines()
                .find_map(|l| l.trim().strip_prefix(name).map(str::to_owned))
                .unwrap()
        };
        let run_id = format!(
            "{}:{}",
            field("server", "run_id:"),
            field("replication", "master_replid:")
        );
        let ranges = c.slot_ranges(m);
        let count: usize = ranges.iter().map(|&(a, b)| usize::from(b - a) + 1).sum();
        for &(a, b) in &ranges {
            for s in [a, b] {
                assert_eq!(c.node(m).cmd(&["GET", &init_key(s)]), run_id);
            }
        }
        // Its own slots' markers, and nothing else (no cross-slot write landed there).
        assert_eq!(c.node(m).cmd(&["DBSIZE"]), count.to_string());
        total += count;
    }
    assert_eq!(total, usize::from(SLOTS));
    // One held lock on each master.
    let mut picked: Vec<String> = Vec::new();
    for m in 0..3 {
        picked.push(
            names()
                .into_iter()
                .find(|n| c.master_of_slot(slot(n)) == m)
                .unwrap(),
        );
    }
    let holders: Vec<Guard> = picked.iter().map(|n| hold(&repo.path(), &url, n)).collect();
    let r = run(cli(&repo.path(), &url).args(["--json", "lock", "status"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let mut shown: Vec<String> = v["locks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap().to_owned())
        .collect();
    shown.sort();
    picked.sort();
    assert_eq!(shown, picked, "{}", r.stdout);
    drop(holders);
    let r = run(cli(&repo.path(), &url).args(["--json", "lock", "log"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    for n in &picked {
        assert!(
            v.as_array()
                .unwrap()
                .iter()
                .any(|e| e["name"] == n.as_str() && e["event"] == "grant"),
            "{n} missing from the log: {}",
            r.stdout
        );
    }
}

#[test]
fn redlock_with_a_cluster_as_one_member_keeps_holders_apart() {
    let c = RedisCluster::start(3, 0);
    assert_eq!(mark_initialized(&c.url()), 3);
    let plain = [RedisServer::start(), RedisServer::start()];
    let urls = format!("{},{},{}", c.url(), plain[0].url(), plain[1].url());
    let repo = Repo::new();
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("counter"), "0").unwrap();
    let dir: PathBuf = work.path().to_path_buf();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (root, urls, dir) = (repo.path(), urls.clone(), dir.clone());
            std::thread::spawn(move || {
                for _ in 0..8 {
                    let r = run(cli(&root, &urls)
                        .args([
                            "lock", "run", "--name", "counter", "--", "sh", "-c", CRITICAL, "sh",
                        ])
                        .arg(&dir));
                    assert_eq!(r.code, 0, "{}", r.stderr);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    let tokens: Vec<u64> = read("tokens").lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(read("counter").trim(), "64");
    assert_eq!(read("overlaps").lines().count(), 0);
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
    // The cluster member took part: the lock's fencing counter lives on the cluster.
    let fence = tractatus_lock::keys::LockKeys::new(NS, "counter").fence;
    let m = c.master_of_slot(slot("counter"));
    assert_ne!(c.node(m).cmd(&["GET", &fence]), "(nil)");
}

#[test]
fn a_waiter_whose_node_dies_listens_on_another_and_is_still_served() {
    let mut c = RedisCluster::start(3, 1);
    assert_eq!(mark_initialized(&c.url()), 3);
    let repo = Repo::new();
    let seed = c.url();
    // A lock served by another master than the URL's node (which new processes connect to).
    let name = names()
        .into_iter()
        .find(|n| c.master_of_slot(slot(n)) != 0)
        .unwrap();
    let master = c.master_of_slot(slot(&name));
    let channel = tractatus_lock::keys::LockKeys::new(NS, &name).channel;
    // A TTL that outlasts the failover, so the holder keeps its lease and the waiter must wait
    // (and listen) throughout.
    let holder = hold_for(&repo.path(), &seed, &name, "30s");
    let log = repo.file("waiter.log");
    let mut waiter = Guard(
        cli(&repo.path(), &seed)
            .env("TRACTATUS_QUARANTINE", "30s")
            .args(["--ttl", "30s", "lock", "run", "--name", &name, "--", "true"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    // It listens where the release is published: the lock's master.
    wait_until(
        Duration::from_secs(20),
        "the waiter listens on the lock's master",
        || subscribers(&c, master, &channel) == 1,
    );
    c.kill(master);
    let listens = || (0..c.len()).any(|i| subscribers(&c, i, &channel) == 1);
    let t = std::time::Instant::now();
    while !listens() && t.elapsed() < Duration::from_secs(45) {
        assert!(
            matches!(waiter.0.try_wait(), Ok(None)),
            "the waiter ended before it listened again: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        listens(),
        "the waiter listens nowhere after {:?}; it said: {}; the cluster: {}",
        t.elapsed(),
        std::fs::read_to_string(&log).unwrap_or_default(),
        c.node(0).cmd(&["CLUSTER", "NODES"])
    );
    let on: Vec<usize> = (0..c.len())
        .filter(|&i| subscribers(&c, i, &channel) == 1)
        .collect();
    println!("after node {master} died the waiter listens on node(s) {on:?}");
    drop(holder);
    assert_eq!(waiter.wait_code(Duration::from_secs(60)), Some(0));
}

#[test]
fn seeds_let_a_new_process_in_while_the_urls_node_is_down() {
    let mut c = RedisCluster::start(3, 1);
    assert_eq!(mark_initialized(&c.url()), 3);
    let repo = Repo::new();
    let seeded = format!(
        "{}?seed=127.0.0.1:{}&seed=127.0.0.1:{}",
        c.url(),
        c.node(1).port,
        c.node(2).port
    );
    let take = |url: &str, name: &str, wait: &str| {
        run(cli(&repo.path(), url).args([
            "--wait",
            wait,
            "--connect-timeout",
            "500ms",
            "lock",
            "run",
            "--name",
            name,
            "--",
            "true",
        ]))
    };
    let r = take(&seeded, "job-00", "20s");
    assert_eq!(r.code, 0, "{}", r.stderr);
    c.kill(0);
    c.settle();
    // Every lock, those of the dead node's slots too (its replica took them over).
    for n in names() {
        let r = take(&seeded, &n, "20s");
        assert_eq!(r.code, 0, "{n}: {}", r.stderr);
    }
    // Without seeds, the URL's node was the only way in.
    let r = take(&format!("{}?cluster=true", c.url()), "job-00", "0");
    assert_eq!(r.code, 69, "{}", r.stderr);
}
