//! One nemesis run: workers on four hosts loop `lock run` while the nemesis strikes, then the
//! checker judges the log; once per backend (one Redis, three Redlock masters, local locks).

use super::*;

/// Run the workers and the nemesis for the mode's time on fresh servers, check the log, print
/// the counts, and fail with the evidence on any violation.
fn nemesis(mode: Mode) {
    let secs = env_u64("TRACTATUS_NEMESIS_SECS").unwrap_or(8);
    let base = env_u64("TRACTATUS_NEMESIS_SEED").unwrap_or_else(|| now_ns() as u64);
    let seed = base ^ (mode as u64).wrapping_mul(0x9e37_79b9);
    println!("nemesis {mode:?}: seed {base} (replay: TRACTATUS_NEMESIS_SEED={base}), {secs} s");
    let servers: Vec<RedisServer> = match mode {
        Mode::OneRedis => vec![RedisServer::start()],
        Mode::Redlock => (0..3).map(|_| RedisServer::start()).collect(),
        Mode::Local => Vec::new(),
    };
    let urls = (!servers.is_empty()).then(|| {
        servers
            .iter()
            .map(|s| s.url())
            .collect::<Vec<_>>()
            .join(",")
    });
    let servers = Arc::new(Mutex::new(servers));
    let repo = Repo::new();
    let log = repo.file("N.log");
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_panic = StopOnDrop(stop.clone());
    let table: Table = Arc::new(Mutex::new(vec![None; HOSTS.len()]));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let workers: Vec<_> = HOSTS
        .iter()
        .enumerate()
        .map(|(slot, host)| {
            let (root, urls, log) = (repo.path(), urls.clone(), log.clone());
            let (table, stop, tally) = (table.clone(), stop.clone(), tally.clone());
            std::thread::spawn(move || {
                worker(
                    slot,
                    || worker_command(&root, urls.as_deref(), host, &log),
                    table,
                    stop,
                    tally,
                )
            })
        })
        .collect();
    let began = Instant::now();
    let mut nem = Nemesis {
        mode,
        rng: Rng(seed),
        table: table.clone(),
        servers: servers.clone(),
        repo: repo.path(),
        tally: tally.clone(),
        began,
    };
    // Let the first holders in before the first fault.
    std::thread::sleep(Duration::from_millis(500));
    let until = began + Duration::from_secs(secs);
    for _ in 0..1_000_000 {
        if Instant::now() >= until {
            break;
        }
        nem.step();
        std::thread::sleep(nem.rng.millis(50, 500));
    }
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().expect("worker");
    }
    let c = check(&log);
    let t = tally.lock().unwrap();
    let tokens: Vec<u64> = c.intervals.iter().map(|i| i.token).collect();
    let bit = c
        .intervals
        .iter()
        .filter(|i| t.stops.iter().any(|&(a, b)| a < i.first && i.first < b))
        .count();
    println!(
        "nemesis {mode:?}: {:?} run, {} holders ({bit} granted while a holder's tractatus was \
         stopped), {} writes ({} malformed), faults {:?}, exits {:?}",
        began.elapsed(),
        c.intervals.len(),
        c.writes,
        c.malformed,
        t.faults,
        t.exits
    );
    if !t.odd.is_empty() {
        println!("nemesis {mode:?}: odd exits: {:#?}", t.odd);
    }
    if !c.violations.is_empty() {
        panic!(
            "nemesis {mode:?} seed {base}: {} violations:\n{}\nfaults:\n{}\ntokens {tokens:?}",
            c.violations.len(),
            c.violations.join("\n"),
            t.events.join("\n")
        );
    }
    assert!(
        c.intervals.len() >= 3,
        "nemesis {mode:?} seed {base}: only {} holders ran; exits {:?}, odd {:?}",
        c.intervals.len(),
        t.exits,
        t.odd
    );
}

#[test]
fn nemesis_on_one_redis_never_lets_two_holders_overlap_nor_tokens_go_back() {
    nemesis(Mode::OneRedis);
}

#[test]
fn nemesis_on_three_redlock_masters_never_lets_two_holders_overlap_nor_tokens_go_back() {
    nemesis(Mode::Redlock);
}

#[test]
fn nemesis_on_local_locks_never_lets_two_holders_overlap_nor_tokens_go_back() {
    nemesis(Mode::Local);
}
