//! Benchmark report for `tractatus-lock`: how close the coordinator gets to its floors.
//!
//! Run `cargo build --release` once (the CLI sections need `target/release/tractatus`), then
//! `cargo run --release --example bench`. `BENCH_SCALE` (a float, default 1.0) scales the
//! iteration counts: 0.2 for a quick look, 3 for steadier tails. `BENCH_ONLY` (section
//! numbers, such as `4` or `2,4`) runs only those sections after the floors (section 1).
//!
//! It starts what it needs itself: `redis-server` processes on free loopback ports (killed by
//! pid when the report ends, also on panic) and throwaway repositories in temp dirs. It measures
//! and prints; it never asserts a timing, since the figures belong to the machine.
//!
//! Every latency is shown in microseconds and as a ratio against the p50 of a floor measured in
//! the same run: a raw Redis PING round trip for Redis operations, a local `flock` lock+unlock
//! for local locks, and spawning `/bin/true` for anything that starts a process.

//! # Layout
//! - `main.rs`: the run: servers, runtime, sections in order; what the sections share.
//! - `stats.rs`: scale, budgets, percentiles, the floors and how a figure is printed.
//! - `machine.rs`: machine facts.
//! - `children.rs`: child processes back to back and from several threads, timed and bounded.
//! - `cli.rs`: the `tractatus` binary as the benchmark runs it; CLI `lock run`.
//! - `floors.rs`: section 1, the floors.
//! - `lease.rs`: section 2, the lease engine on one Redis.
//! - `state_files.rs`: section 3, `state append` through the CLI.
//! - `redlock.rs`: section 4, 5 masters vs 1.
//! - `contention.rs`: section 4, contended Redlock.
//! - `cluster.rs`: section 5, a 3-master Redis Cluster beside one plain Redis.
//! - `deadlock.rs`: section 6, what deadlock detection costs and how soon it breaks a cycle.
//!
//! The processes, repositories and timed children come from the shared test kit
//! (`tractatus-testkit`); of the library it uses the crate-root re-exports and the two items
//! imported below.

mod children;
mod cli;
mod cluster;
mod contention;
mod deadlock;
mod floors;
mod lease;
mod machine;
mod redlock;
mod state_files;
mod stats;
mod targets;

use std::time::{Duration, Instant};

use tractatus_lock::{Config, Coordinator, Identity};
// The two library items beyond the crate-root re-exports: the node list of a `Config`, and the
// key layout (read in Redis to show quarantines and fencing counters). If the library moves
// them, only these lines change.
use tractatus_lock::config::parse_nodes;
use tractatus_lock::keys::LockKeys;
use tractatus_testkit::RedisServer;

use crate::cli::Cli;
use crate::floors::section_floors;
use crate::lease::section_lease_engine;
use crate::machine::print_machine;
use crate::redlock::section_redlock;
use crate::state_files::section_state_files;
use crate::stats::Scale;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Res<T> = Result<T, BoxError>;

/// Longest any one child process may run before it is killed and counted as a failure.
const CHILD_LIMIT: Duration = Duration::from_secs(60);
/// Wall-clock budget of each measurement loop: a loop stops early (and says so) past it.
const LOOP_BUDGET: Duration = Duration::from_secs(25);
/// Concurrency of the throughput and contention runs.
const THREADS: usize = 8;

fn main() -> Res<()> {
    let scale = Scale::from_env();
    let started = Instant::now();
    let load_before = targets::load_average();
    let machine = print_machine(scale);

    // Five masters for the whole run: server 0 serves the single-Redis sections, 0..3 the
    // contended Redlock run, all five the 5-vs-1 comparison. Dropped (killed) at the end of
    // main, or during unwinding if anything panics.
    let servers = (0..5)
        .map(|_| RedisServer::try_start(&[]))
        .collect::<Result<Vec<_>, String>>()?;
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    println!(
        "servers:      5 redis-server processes on 127.0.0.1, ports {}",
        servers
            .iter()
            .map(|s| s.port.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // Brand-new servers: marked as `tractatus lock init` does, so no grant waits out the
    // restart quarantine.
    let marked = Instant::now();
    rt.block_on(async {
        let c = Coordinator::connect(Config::new(parse_nodes(&urls)?), Identity::current("bench"))
            .await?;
        c.mark_initialized().await
    })?;
    println!(
        "lock init:    {} masters marked in {:.1} ms (16384 markers each)",
        urls.len(),
        marked.elapsed().as_secs_f64() * 1000.0
    );
    let cli = Cli::locate();

    let floors = section_floors(&rt, &urls[0], scale)?;
    let only = Only::from_env();
    if only.runs(2) {
        section_lease_engine(&rt, &urls[0], &floors, scale, cli.as_ref())?;
    }
    if only.runs(3) {
        match &cli {
            Some(cli) => section_state_files(cli, &urls[0], &floors, scale)?,
            None => println!("\n3. State files (CLI): skipped, see above"),
        }
    }
    if only.runs(4) {
        section_redlock(&rt, &urls, &floors, scale)?;
    }
    if only.runs(5) {
        crate::cluster::section_cluster(&rt, &floors, scale, cli.as_ref())?;
    }
    if only.runs(6) {
        crate::deadlock::section_deadlock(&rt, &urls[0], &floors, scale)?;
    }

    targets::finish(&machine, &load_before)?;
    println!("\ntotal run time {:.1} s", started.elapsed().as_secs_f64());
    drop(rt);
    drop(servers);
    Ok(())
}

/// The sections `BENCH_ONLY` names (`4`, `2,4`); every section when unset or empty.
struct Only(Option<Vec<u32>>);

impl Only {
    fn from_env() -> Self {
        let listed = std::env::var("BENCH_ONLY").ok().map(|v| {
            v.split(',')
                .filter_map(|n| n.trim().parse::<u32>().ok())
                .collect::<Vec<_>>()
        });
        Only(listed.filter(|l| !l.is_empty()))
    }

    fn runs(&self, section: u32) -> bool {
        self.0.as_ref().is_none_or(|l| l.contains(&section))
    }
}

pub(crate) async fn connect(urls: &[String], ttl: Option<Duration>) -> Res<Coordinator> {
    let mut config = Config::new(parse_nodes(urls)?);
    if let Some(ttl) = ttl {
        config.ttl = ttl;
        // Fresh masters refuse grants for the quarantine; keep it as short as the TTL allows.
        config.quarantine = ttl;
    }
    Ok(Coordinator::connect(config, Identity::current("bench")).await?)
}

/// One uncontended `try_acquire` + `release`, timed.
pub(crate) async fn acquire_release(c: &Coordinator, name: &str) -> Res<Duration> {
    let t = Instant::now();
    let lease = c.try_acquire(name).await?;
    lease.release().await?;
    Ok(t.elapsed())
}
