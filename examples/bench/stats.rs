//! Scale, budgets and statistics: how many iterations, for how long, and how the samples are
//! summarised and printed against the floors.

use std::time::{Duration, Instant};

use crate::LOOP_BUDGET;

/// `BENCH_SCALE`: a multiplier on every iteration count.
#[derive(Clone, Copy)]
pub(crate) struct Scale(pub(crate) f64);

impl Scale {
    pub(crate) fn from_env() -> Self {
        let s = std::env::var("BENCH_SCALE")
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .unwrap_or(1.0);
        // Capped so that a typo cannot start an hour-long run.
        Scale(s.min(50.0))
    }

    /// `n` scaled, but at least `min` so that percentiles keep some meaning.
    pub(crate) fn count(self, n: usize, min: usize) -> usize {
        ((n as f64 * self.0).round() as usize).max(min)
    }
}

/// A wall-clock budget for one measurement loop.
pub(crate) struct Budget {
    deadline: Instant,
}

impl Budget {
    pub(crate) fn new(limit: Duration) -> Self {
        Budget {
            deadline: Instant::now() + limit,
        }
    }

    pub(crate) fn exhausted(&self) -> bool {
        Instant::now() >= self.deadline
    }
}

/// Value at percentile `p` (0..=100) of sorted samples, by nearest rank.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Latency samples, sorted once.
pub(crate) struct Stats {
    pub(crate) sorted: Vec<Duration>,
}

impl Stats {
    pub(crate) fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        Stats { sorted: samples }
    }

    pub(crate) fn n(&self) -> usize {
        self.sorted.len()
    }

    pub(crate) fn p50(&self) -> Duration {
        percentile(&self.sorted, 50.0)
    }

    pub(crate) fn p99(&self) -> Duration {
        percentile(&self.sorted, 99.0)
    }

    pub(crate) fn max(&self) -> Duration {
        self.sorted.last().copied().unwrap_or_default()
    }
}

/// A floor to compare against: its short name and its p50.
#[derive(Clone, Copy)]
pub(crate) struct Floor {
    pub(crate) name: &'static str,
    pub(crate) p50: Duration,
}

/// The three floors of section 1.
pub(crate) struct Floors {
    pub(crate) ping: Floor,
    pub(crate) flock: Floor,
    pub(crate) spawn: Floor,
}

/// `a / b`, never dividing by zero.
pub(crate) fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

/// A latency for the page: µs below a millisecond, ms above.
pub(crate) fn shown(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.0} µs", us(d))
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1000.0)
    }
}

pub(crate) fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// `d` in µs, followed by its ratio to each floor's p50.
pub(crate) fn figure(d: Duration, floors: &[Floor]) -> String {
    let ratios: Vec<String> = floors
        .iter()
        .map(|f| {
            let r = d.as_secs_f64() / f.p50.as_secs_f64().max(1e-9);
            format!("{r:.1}x {}", f.name)
        })
        .collect();
    if ratios.is_empty() {
        format!("{:>9.1} µs", us(d))
    } else {
        format!("{:>9.1} µs ({})", us(d), ratios.join(", "))
    }
}

/// One report line: label, sample count, p50 and p99 with their ratios.
pub(crate) fn print_latency(label: &str, s: &Stats, floors: &[Floor]) {
    if s.n() == 0 {
        println!("  {label:<42} no samples");
        return;
    }
    println!(
        "  {label:<42} n={:<5} p50 {}   p99 {}",
        s.n(),
        figure(s.p50(), floors),
        figure(s.p99(), floors)
    );
    let ratios: Vec<String> = floors
        .iter()
        .map(|f| format!("{:.1}x {}", ratio(s.p50(), f.p50), f.name))
        .collect();
    crate::targets::row(
        label,
        s.n(),
        shown(s.p50()),
        shown(s.p99()),
        ratios.join(", "),
    );
}

/// Say so when a loop ran out of budget before its planned count.
pub(crate) fn note_truncated(what: &str, done: usize, planned: usize) {
    if done < planned {
        println!(
            "  note: {what} stopped after {done} of {planned} iterations ({} s budget)",
            LOOP_BUDGET.as_secs()
        );
    }
}

/// Count errors, keeping the first one's text for the report.
#[derive(Default)]
pub(crate) struct Failures {
    pub(crate) count: usize,
    pub(crate) first: Option<String>,
}

impl Failures {
    pub(crate) fn add(&mut self, e: impl std::fmt::Display) {
        self.count += 1;
        self.first.get_or_insert_with(|| e.to_string());
    }

    pub(crate) fn merge(&mut self, other: Failures) {
        self.count += other.count;
        if self.first.is_none() {
            self.first = other.first;
        }
    }

    pub(crate) fn print(&self, what: &str) {
        if let Some(first) = &self.first {
            println!(
                "  !! {} {what} failed; first error: {}",
                self.count,
                first.trim()
            );
        }
    }
}
