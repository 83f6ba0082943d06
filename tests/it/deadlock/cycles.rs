//! Which waits give up: a cycle of two or three (one lock on another host, or on two cluster
//! masters) has one victim at once; a chain or one global order has none.

use super::*;

#[test]
fn two_processes_waiting_for_each_others_file_end_with_one_victim_at_once_and_no_lost_update() {
    for backend in Backend::all() {
        let repo = Repo::new();
        repo.write("x.json", "{}");
        repo.write("y.json", "{}");
        let steps = [step("a", "x.json", "y.json"), step("b", "y.json", "x.json")];
        let out = run_steps(&backend, &repo, &steps);
        assert_one_victim(&backend, &repo, &steps, &out);
    }
}

#[test]
fn three_processes_in_a_cycle_over_three_locks_one_on_another_host_end_with_one_victim() {
    for backend in Backend::all() {
        let repo = Repo::new();
        for f in ["x.json", "y.json", "z.json"] {
            repo.write(f, "{}");
        }
        let mut steps = [
            step("a", "x.json", "y.json"),
            step("b", "y.json", "z.json"),
            step("c", "z.json", "x.json"),
        ];
        steps[1].host = Some("other-host".into());
        let out = run_steps(&backend, &repo, &steps);
        assert_one_victim(&backend, &repo, &steps, &out);
    }
}

#[test]
fn a_chain_without_a_cycle_gives_nobody_up() {
    for backend in Backend::all() {
        let repo = Repo::new();
        for f in ["x.json", "y.json", "z.json"] {
            repo.write(f, "{}");
        }
        // a holds x and waits for y; b holds y and waits for z; c holds z and updates w.
        let steps = [
            step("a", "x.json", "y.json"),
            step("b", "y.json", "z.json"),
            step("c", "z.json", "w.json"),
        ];
        let out = run_steps(&backend, &repo, &steps);
        for (o, s) in out.iter().zip(&steps) {
            assert_eq!(o.ran.code, 0, "{}: {}", backend.name(), o.ran.describe());
            assert_eq!(doc(&repo, &s.wanted)[&s.tag], serde_json::json!(1));
        }
    }
}

#[test]
fn eight_processes_taking_random_nested_pairs_in_one_global_order_never_see_a_deadlock() {
    const FILES: [&str; 4] = ["a.json", "b.json", "c.json", "d.json"];
    const FOR: Duration = Duration::from_secs(3);
    const MOST_ROUNDS: usize = 200;
    for backend in Backend::all() {
        let repo = Repo::new();
        for f in FILES {
            repo.write(f, "{}");
        }
        let backend = std::sync::Arc::new(backend);
        let workers: Vec<_> = (0..8u64)
            .map(|w| {
                let (backend, dir) = (backend.clone(), repo.path());
                std::thread::spawn(move || {
                    // xorshift, seeded per worker: random pairs, first < second.
                    let mut x = 0x9E37_79B9_7F4A_7C15_u64 ^ (w + 1);
                    let mut next = || {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x
                    };
                    let end = std::time::Instant::now() + FOR;
                    let mut runs = Vec::new();
                    while std::time::Instant::now() < end && runs.len() < MOST_ROUNDS {
                        let i = (next() % 3) as usize;
                        let j = i + 1 + (next() % (3 - i as u64)) as usize;
                        let mut c = backend.tractatus(&dir);
                        c.args(["lock", "run", "--file", FILES[i], "--", BIN])
                            .args(["state", "merge", FILES[j]])
                            .arg(format!(r#"{{"w{w}": {}}}"#, runs.len()));
                        runs.push(run_timed(&mut c, LIMIT));
                    }
                    runs
                })
            })
            .collect();
        let runs: Vec<Ran> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        let deadlocks = runs
            .iter()
            .filter(|r| r.stderr.contains("deadlock"))
            .count();
        let failed: Vec<&Ran> = runs.iter().filter(|r| r.code != 0).collect();
        println!(
            "{}: {} nested updates by 8 processes, {deadlocks} deadlock errors, {} failures",
            backend.name(),
            runs.len(),
            failed.len()
        );
        assert_eq!(deadlocks, 0, "{}", backend.name());
        assert!(
            failed.is_empty(),
            "{}: {}",
            backend.name(),
            failed[0].describe()
        );
        assert!(runs.len() >= 16, "{}: too few rounds", backend.name());
        if let Backend::Redis(servers) = &*backend {
            // Nested waits did happen: they recorded edges (and walked).
            let sha = wait_for_script_sha();
            let exists = servers[0].cmd(&["SCRIPT", "EXISTS", &sha]);
            assert!(exists.contains('1'), "{}: no nested wait", backend.name());
        }
    }
}

#[test]
fn a_cycle_over_locks_on_two_cluster_masters_is_found_reading_each_where_it_lives() {
    let cluster = tractatus_testkit::RedisCluster::start(3, 0);
    assert_eq!(crate::support::mark_initialized(&cluster.url()), 3);
    let master = |name: &str| {
        let slot = tractatus_lock::keys::slot_of_tag(format!("{CLUSTER_NS}:{name}").as_bytes());
        cluster.master_of_slot(slot)
    };
    // Two files whose locks live on different masters.
    let files: Vec<String> = (0..64).map(|i| format!("f{i}.json")).collect();
    let first = &files[0];
    let second = files
        .iter()
        .find(|f| master(f) != master(first))
        .expect("64 names all on one master")
        .clone();
    let backend = Backend::Cluster(cluster);
    let repo = Repo::new();
    repo.write(first, "{}");
    repo.write(&second, "{}");
    let steps = [step("a", first, &second), step("b", &second, first)];
    let out = run_steps(&backend, &repo, &steps);
    assert_one_victim(&backend, &repo, &steps, &out);
}
