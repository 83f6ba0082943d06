//! Child processes run back to back or from several threads at once, each timed and bounded by
//! the kit's `run_timed`, within a loop budget.

use std::process::Command;
use std::time::{Duration, Instant};

use tractatus_testkit::run_timed;

use crate::stats::{Budget, Failures, Floor, Stats, note_truncated, print_latency};
use crate::{CHILD_LIMIT, LOOP_BUDGET, THREADS};

/// Latencies of `n` sequential runs of the command `make(i)`, within `budget`.
pub(crate) fn run_sequential(
    n: usize,
    budget: &Budget,
    mut before: impl FnMut(usize),
    mut make: impl FnMut(usize) -> Command,
) -> (Stats, Failures) {
    let (mut samples, mut failures) = (Vec::with_capacity(n), Failures::default());
    for i in 0..n {
        if budget.exhausted() {
            break;
        }
        before(i);
        let ran = run_timed(&mut make(i), CHILD_LIMIT);
        if ran.ok() {
            samples.push(ran.elapsed);
        } else {
            failures.add(ran.describe());
        }
    }
    (Stats::new(samples), failures)
}

/// `threads` OS threads, each running `each` commands `make(thread, i)` one after another.
pub(crate) struct Parallel {
    pub(crate) wall: Duration,
    pub(crate) stats: Stats,
    pub(crate) failures: Failures,
    pub(crate) planned: usize,
}

pub(crate) fn run_parallel(
    threads: usize,
    each: usize,
    make: impl Fn(usize, usize) -> Command + Sync,
) -> Parallel {
    let budget = Budget::new(LOOP_BUDGET);
    let start = Instant::now();
    let results: Vec<(Vec<Duration>, Failures)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (make, budget) = (&make, &budget);
                s.spawn(move || {
                    let (mut lat, mut failures) = (Vec::new(), Failures::default());
                    for i in 0..each {
                        if budget.exhausted() {
                            break;
                        }
                        let ran = run_timed(&mut make(t, i), CHILD_LIMIT);
                        if ran.ok() {
                            lat.push(ran.elapsed);
                        } else {
                            failures.add(ran.describe());
                        }
                    }
                    (lat, failures)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    let mut f = Failures::default();
                    f.add("a worker thread panicked");
                    (Vec::new(), f)
                })
            })
            .collect()
    });
    let wall = start.elapsed();
    let (mut all, mut failures) = (Vec::new(), Failures::default());
    for (lat, f) in results {
        all.extend(lat);
        failures.merge(f);
    }
    Parallel {
        wall,
        stats: Stats::new(all),
        failures,
        planned: threads * each,
    }
}

impl Parallel {
    pub(crate) fn print(&self, unit: &str, floors: &[Floor]) {
        let done = self.stats.n();
        println!(
            "  throughput, {THREADS} threads x {} each: {done} {unit} in {:.2} s = {:.1} {unit}/s",
            self.planned / THREADS,
            self.wall.as_secs_f64(),
            done as f64 / self.wall.as_secs_f64().max(1e-9)
        );
        print_latency("  per-run latency under contention", &self.stats, floors);
        note_truncated(
            "the throughput run",
            done + self.failures.count,
            self.planned,
        );
        self.failures.print(unit);
    }
}
