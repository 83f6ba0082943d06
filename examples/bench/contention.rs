//! Section 4, contended: several tasks, each with its own coordinator on 3 masters, taking and
//! releasing one lock, with an overlap check on the side.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tractatus_lock::AcquireOptions;

use crate::stats::{Failures, Floors, Scale, Stats, figure, note_truncated, print_latency};
use crate::{LOOP_BUDGET, Res, THREADS, acquire_release, connect};

/// Per-task results of the contended run.
struct Contender {
    latencies: Vec<Duration>,
    failures: Failures,
}

/// `THREADS` tasks, each with its own coordinator (own connections) on 3 masters, taking and
/// releasing the same lock in a loop.
pub(crate) async fn contended(urls: &[String], floors: &Floors, scale: Scale) -> Res<()> {
    const NAME: &str = "bench/rl-contended";
    let rounds = scale.count(50, 3);
    let mut coordinators = Vec::with_capacity(THREADS);
    for _ in 0..THREADS {
        let c = connect(urls, None).await?;
        // Open the lazily connected minority and load the scripts before the clock starts.
        acquire_release(&c, NAME).await?;
        coordinators.push(c);
    }
    let ttl = coordinators[0].config().ttl;
    // Mutual exclusion check on the side: all tasks share this flag, so an overlap shows.
    let inside = Arc::new(AtomicBool::new(false));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + LOOP_BUDGET;
    let start = Instant::now();
    let tasks: Vec<_> = coordinators
        .into_iter()
        .map(|c| {
            let (inside, overlaps) = (Arc::clone(&inside), Arc::clone(&overlaps));
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
                    let opts = AcquireOptions::wait(Duration::from_secs(10));
                    match c.acquire(NAME, &opts).await {
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
                }
                me
            })
        })
        .collect();
    let (mut all, mut failures) = (Vec::new(), Failures::default());
    for t in tasks {
        match t.await {
            Ok(me) => {
                all.extend(me.latencies);
                failures.merge(me.failures);
            }
            Err(e) => failures.add(format!("task: {e}")),
        }
    }
    let wall = start.elapsed();
    let stats = Stats::new(all);
    let over_ttl = stats.sorted.iter().filter(|d| **d > ttl).count();

    println!(
        "  contended: {THREADS} tasks x {rounds} rounds, each task its own coordinator on 3 \
         masters, one lock name"
    );
    print_latency("  acquire latency under contention", &stats, &[floors.ping]);
    println!(
        "      max {}; {} rounds in {:.2} s = {:.1} rounds/s; acquires slower than the TTL \
         ({} s): {over_ttl}; overlapping holders seen: {}",
        figure(stats.max(), &[floors.ping]),
        stats.n(),
        wall.as_secs_f64(),
        stats.n() as f64 / wall.as_secs_f64().max(1e-9),
        ttl.as_secs(),
        overlaps.load(Ordering::SeqCst)
    );
    note_truncated(
        "the contended run",
        stats.n() + failures.count,
        THREADS * rounds,
    );
    failures.print("contended rounds");
    Ok(())
}
