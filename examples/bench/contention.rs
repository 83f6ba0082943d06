//! Section 4, contended (issue 10): `THREADS` tasks, each with its own coordinator, taking one
//! lock in a loop with a think time outside it, on local `flock`, on 1 master and on 3, in one
//! run: ops/s, acquire p50/p99/max, acquires as long as a TTL, overlaps, and grants out of
//! queue order.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tractatus_lock::{AcquireOptions, Config, Coordinator, Identity};

use crate::stats::{Failures, Scale, Stats, note_truncated};
use crate::{LOOP_BUDGET, Res, THREADS, acquire_release, connect};

/// Pause outside the lock between two rounds of one task.
const THINK: Duration = Duration::from_millis(5);

/// A queued waiter counts as ahead of another when it started asking this much earlier (its
/// place is the time of its first request; the two clocks are read microseconds apart).
const SLACK: Duration = Duration::from_millis(1);

/// What one contended run measured.
pub(crate) struct Run {
    pub(crate) stats: Stats,
    pub(crate) ops_per_s: f64,
    over_ttl: usize,
    pub(crate) overlaps: usize,
    out_of_order: usize,
}

/// Per-task results.
struct Contender {
    latencies: Vec<Duration>,
    failures: Failures,
}

/// Contention on flock, on 1 master and on 3, in that order; then the figures side by side.
pub(crate) async fn contended(urls: &[String], scale: Scale) -> Res<()> {
    let rounds = scale.count(200, 10);
    println!(
        "  contended: {THREADS} tasks x {rounds} rounds, each task its own coordinator, one lock, \
         {} ms think time outside it",
        THINK.as_millis()
    );
    let dir = tempfile::tempdir()?;
    let mut flock = Vec::with_capacity(THREADS);
    for _ in 0..THREADS {
        let config = Config::new(Vec::new());
        flock.push(Coordinator::local(
            config,
            Identity::current("bench"),
            dir.path().to_path_buf(),
        )?);
    }
    let floor = contend(flock, "bench/contended-flock", rounds).await?;
    let mut one = Vec::with_capacity(THREADS);
    let mut three = Vec::with_capacity(THREADS);
    for _ in 0..THREADS {
        one.push(connect(&urls[..1], None).await?);
        three.push(connect(&urls[..3], None).await?);
    }
    let one = contend(one, "bench/contended-1", rounds).await?;
    let three = contend(three, "bench/contended-3", rounds).await?;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    for (label, r) in [
        ("local flock", &floor),
        ("1 master   ", &one),
        ("3 masters  ", &three),
    ] {
        println!(
            "    {label}: {:7.1} ops/s; acquire p50 {:6.2} ms, p99 {:6.2} ms, max {:7.2} ms; \
             as long as a TTL: {}; overlaps: {}; out of queue order: {}",
            r.ops_per_s,
            ms(r.stats.p50()),
            ms(r.stats.p99()),
            ms(r.stats.max()),
            r.over_ttl,
            r.overlaps,
            r.out_of_order
        );
    }
    println!(
        "    3 masters / 1 master throughput: {:.2}x (target >= 0.8x); 1-master p99 / flock \
         p99: {:.2}x (target <= 3x); grants out of queue order (waiters ahead by more than {} \
         ms): {} on 1 master, {} on 3 (target 0)",
        three.ops_per_s / one.ops_per_s.max(1e-9),
        ms(one.stats.p99()) / ms(floor.stats.p99()).max(1e-6),
        SLACK.as_millis(),
        one.out_of_order,
        three.out_of_order
    );
    crate::targets::at_least(
        "3 masters / 1 master throughput, contended",
        format!("{:.0} / {:.0} ops/s", three.ops_per_s, one.ops_per_s),
        three.ops_per_s / one.ops_per_s.max(1e-9),
        0.8,
    );
    crate::targets::at_least(
        &format!(
            "1 master / local flock throughput, {THREADS} tasks, {} ms think",
            THINK.as_millis()
        ),
        format!("{:.0} / {:.0} ops/s", one.ops_per_s, floor.ops_per_s),
        one.ops_per_s / floor.ops_per_s.max(1e-9),
        0.85,
    );
    let runs = [&floor, &one, &three];
    crate::targets::zero(
        "overlapping holders (flock, 1 and 3 masters)",
        runs.iter().map(|r| r.overlaps).sum(),
        "overlaps",
    );
    crate::targets::zero(
        "grants out of queue order (1 and 3 masters)",
        one.out_of_order + three.out_of_order,
        "out of order",
    );
    crate::targets::zero(
        "acquires as long as a TTL (flock, 1 and 3 masters)",
        runs.iter().map(|r| r.over_ttl).sum(),
        "acquires",
    );
    println!(
        "    (out of queue order: granted while a queued task (refused at least once) that had \
         started asking more than {} ms earlier still waited; flock reports no refusals)",
        SLACK.as_millis()
    );
    Ok(())
}

/// One contended run: every coordinator in `cs` loops on lock `name`.
pub(crate) async fn contend(cs: Vec<Coordinator>, name: &'static str, rounds: usize) -> Res<Run> {
    for c in &cs {
        // Open connections and load the scripts before the clock starts.
        acquire_release(c, name).await?;
    }
    let ttl = cs[0].config().ttl;
    let inside = Arc::new(AtomicBool::new(false));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let out_of_order = Arc::new(AtomicUsize::new(0));
    // Who is queued (refused at least once), and since when it asks.
    let asking: Arc<Mutex<BTreeMap<usize, Instant>>> = Arc::default();
    let deadline = Instant::now() + LOOP_BUDGET;
    let start = Instant::now();
    let tasks: Vec<_> = cs
        .into_iter()
        .enumerate()
        .map(|(id, c)| {
            let (inside, overlaps) = (Arc::clone(&inside), Arc::clone(&overlaps));
            let (asking, out_of_order) = (Arc::clone(&asking), Arc::clone(&out_of_order));
            tokio::spawn(async move {
                let mut me = Contender {
                    latencies: Vec::with_capacity(rounds),
                    failures: Failures::default(),
                };
                for _ in 0..rounds {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let t = Instant::now();
                    let (tx, mut refused) = tokio::sync::watch::channel(None);
                    let opts = AcquireOptions {
                        progress: Some(tx),
                        ..AcquireOptions::wait(Duration::from_secs(30))
                    };
                    let acquire = c.acquire(name, &opts);
                    tokio::pin!(acquire);
                    let mut queued = false;
                    let got = loop {
                        tokio::select! {
                            got = &mut acquire => break got,
                            // Refused once: we are in the queue (joined with the first request).
                            _ = refused.changed(), if !queued => {
                                queued = true;
                                asking.lock().map_err(|_| "poisoned")?.insert(id, t);
                            }
                        }
                    };
                    {
                        let mut asking = asking.lock().map_err(|_| "poisoned")?;
                        asking.remove(&id);
                        if got.is_ok() && asking.values().any(|&s| s + SLACK < t) {
                            out_of_order.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    match got {
                        Ok(lease) => {
                            me.latencies.push(t.elapsed());
                            if inside.swap(true, Ordering::SeqCst) {
                                overlaps.fetch_add(1, Ordering::SeqCst);
                            }
                            inside.store(false, Ordering::SeqCst);
                            if let Err(e) = lease.release().await {
                                me.failures.add(format!("release: {e}"));
                            }
                        }
                        Err(e) => me.failures.add(format!("acquire: {e}")),
                    }
                    tokio::time::sleep(THINK).await;
                }
                Ok::<_, &'static str>(me)
            })
        })
        .collect();
    let (mut all, mut failures) = (Vec::new(), Failures::default());
    for t in tasks {
        match t.await {
            Ok(Ok(me)) => {
                all.extend(me.latencies);
                failures.merge(me.failures);
            }
            Ok(Err(e)) => failures.add(format!("task: {e}")),
            Err(e) => failures.add(format!("task: {e}")),
        }
    }
    let wall = start.elapsed();
    let stats = Stats::new(all);
    let over_ttl = stats.sorted.iter().filter(|d| **d >= ttl).count();
    note_truncated(name, stats.n() + failures.count, THREADS * rounds);
    failures.print(name);
    Ok(Run {
        ops_per_s: stats.n() as f64 / wall.as_secs_f64().max(1e-9),
        stats,
        over_ttl,
        overlaps: overlaps.load(Ordering::SeqCst),
        out_of_order: out_of_order.load(Ordering::SeqCst),
    })
}
