//! Benchmark report for `tractatus-lock`: how close the coordinator gets to its floors.
//!
//! Run `cargo build --release` once (the CLI sections need `target/release/tractatus`), then
//! `cargo run --release --example bench`. `BENCH_SCALE` (a float, default 1.0) scales the
//! iteration counts: 0.2 for a quick look, 3 for steadier tails.
//!
//! It starts what it needs itself: `redis-server` processes on free loopback ports (killed by
//! pid when the report ends, also on panic) and throwaway repositories in temp dirs. It measures
//! and prints; it never asserts a timing, since the figures belong to the machine.
//!
//! Every latency is shown in microseconds and as a ratio against the p50 of a floor measured in
//! the same run: a raw Redis PING round trip for Redis operations, a local `flock` lock+unlock
//! for local locks, and spawning `/bin/true` for anything that starts a process.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;
use tokio::runtime::Runtime;
use tractatus_lock::config::parse_nodes;
use tractatus_lock::keys::LockKeys;
use tractatus_lock::{AcquireOptions, Config, Coordinator, HolderInfo, Identity};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Res<T> = Result<T, BoxError>;

/// Longest any one child process may run before it is killed and counted as a failure.
const CHILD_LIMIT: Duration = Duration::from_secs(60);
/// Wall-clock budget of each measurement loop: a loop stops early (and says so) past it.
const LOOP_BUDGET: Duration = Duration::from_secs(25);
/// Concurrency of the throughput and contention runs.
const THREADS: usize = 8;
/// The state file of the Tractatus framework, relative to the repository root.
const HISTORY: &str = ".claude/instruction-history.json";

fn main() -> Res<()> {
    let scale = Scale::from_env();
    let started = Instant::now();
    print_machine(scale);

    // Five masters for the whole run: server 0 serves the single-Redis sections, 0..3 the
    // contended Redlock run, all five the 5-vs-1 comparison. Dropped (killed) at the end of
    // main, or during unwinding if anything panics.
    let servers = (0..5)
        .map(|_| RedisServer::start())
        .collect::<Res<Vec<_>>>()?;
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
    section_lease_engine(&rt, &urls[0], &floors, scale, cli.as_ref())?;
    match &cli {
        Some(cli) => section_state_files(cli, &urls[0], &floors, scale)?,
        None => println!("\n3. State files (CLI): skipped, see above"),
    }
    section_redlock(&rt, &urls, &floors, scale)?;

    println!("\ntotal run time {:.1} s", started.elapsed().as_secs_f64());
    drop(rt);
    drop(servers);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Scale, budgets and statistics
// ---------------------------------------------------------------------------------------------

/// `BENCH_SCALE`: a multiplier on every iteration count.
#[derive(Clone, Copy)]
struct Scale(f64);

impl Scale {
    fn from_env() -> Self {
        let s = std::env::var("BENCH_SCALE")
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .unwrap_or(1.0);
        // Capped so that a typo cannot start an hour-long run.
        Scale(s.min(50.0))
    }

    /// `n` scaled, but at least `min` so that percentiles keep some meaning.
    fn count(self, n: usize, min: usize) -> usize {
        ((n as f64 * self.0).round() as usize).max(min)
    }
}

/// A wall-clock budget for one measurement loop.
struct Budget {
    deadline: Instant,
}

impl Budget {
    fn new(limit: Duration) -> Self {
        Budget {
            deadline: Instant::now() + limit,
        }
    }

    fn exhausted(&self) -> bool {
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
struct Stats {
    sorted: Vec<Duration>,
}

impl Stats {
    fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        Stats { sorted: samples }
    }

    fn n(&self) -> usize {
        self.sorted.len()
    }

    fn p50(&self) -> Duration {
        percentile(&self.sorted, 50.0)
    }

    fn p99(&self) -> Duration {
        percentile(&self.sorted, 99.0)
    }

    fn max(&self) -> Duration {
        self.sorted.last().copied().unwrap_or_default()
    }
}

/// A floor to compare against: its short name and its p50.
#[derive(Clone, Copy)]
struct Floor {
    name: &'static str,
    p50: Duration,
}

/// The three floors of section 1.
struct Floors {
    ping: Floor,
    flock: Floor,
    spawn: Floor,
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// `d` in µs, followed by its ratio to each floor's p50.
fn figure(d: Duration, floors: &[Floor]) -> String {
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
fn print_latency(label: &str, s: &Stats, floors: &[Floor]) {
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
}

/// Say so when a loop ran out of budget before its planned count.
fn note_truncated(what: &str, done: usize, planned: usize) {
    if done < planned {
        println!(
            "  note: {what} stopped after {done} of {planned} iterations ({} s budget)",
            LOOP_BUDGET.as_secs()
        );
    }
}

/// Count errors, keeping the first one's text for the report.
#[derive(Default)]
struct Failures {
    count: usize,
    first: Option<String>,
}

impl Failures {
    fn add(&mut self, e: impl std::fmt::Display) {
        self.count += 1;
        self.first.get_or_insert_with(|| e.to_string());
    }

    fn merge(&mut self, other: Failures) {
        self.count += other.count;
        if self.first.is_none() {
            self.first = other.first;
        }
    }

    fn print(&self, what: &str) {
        if let Some(first) = &self.first {
            println!(
                "  !! {} {what} failed; first error: {}",
                self.count,
                first.trim()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Machine facts
// ---------------------------------------------------------------------------------------------

fn print_machine(scale: Scale) {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    let redis = Command::new("redis-server")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .unwrap_or_else(|e| format!("not runnable: {e}"));
    let tmp = std::env::temp_dir();

    println!("tractatus-lock benchmark report");
    println!("===============================");
    println!("nproc:        {nproc}");
    println!("cpu:          {cpu}");
    println!("kernel:       {kernel}");
    println!("redis-server: {redis}");
    println!(
        "temp dir:     {} on {} (state commits fsync there)",
        tmp.display(),
        filesystem_name(&tmp)
    );
    println!(
        "scale:        {} (BENCH_SCALE); ratios are against the named floor's p50",
        scale.0
    );
}

/// A readable name for the filesystem holding `path`: fsync costs differ by an order of
/// magnitude between tmpfs and a disk.
fn filesystem_name(path: &Path) -> String {
    let Ok(fs) = nix::sys::statfs::statfs(path) else {
        return "unknown filesystem".into();
    };
    let magic = fs.filesystem_type().0;
    let name = match magic {
        0x0102_1994 => "tmpfs",
        0xEF53 => "ext2/3/4",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x794C_7630 => "overlayfs",
        _ => "",
    };
    if name.is_empty() {
        format!("filesystem magic {magic:#x}")
    } else {
        name.to_owned()
    }
}

// ---------------------------------------------------------------------------------------------
// Redis servers we own
// ---------------------------------------------------------------------------------------------

/// One `redis-server` this benchmark started: loopback only, no persistence, killed by pid
/// (`Child::kill` + `wait`) when dropped.
struct RedisServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Start a server on a free port and wait until it answers PING. A port found free can be
    /// taken before redis binds it, so a failed start is retried on another port.
    fn start() -> Res<Self> {
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            let dir = tempfile::tempdir()?;
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--dir"])
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot run redis-server (is it on PATH?): {e}"))?;
            // Owned by the guard from here on, so a failure below still kills it.
            let mut server = RedisServer {
                child,
                port,
                _dir: dir,
            };
            match server.wait_until_ready(Duration::from_secs(10)) {
                Ok(()) => return Ok(server),
                Err(e) => last_error = e,
            }
        }
        Err(format!("could not start redis-server: {last_error}").into())
    }

    fn wait_until_ready(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("port {} exited early ({status})", self.port));
            }
            if answers_ping(self.port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Err(format!("port {}: no PONG within {limit:?}", self.port))
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Res<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn answers_ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

// ---------------------------------------------------------------------------------------------
// Child processes, timed and bounded
// ---------------------------------------------------------------------------------------------

/// How one child process ended.
struct Ran {
    elapsed: Duration,
    status: Option<ExitStatus>,
    stderr: String,
}

impl Ran {
    fn ok(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    fn describe(&self) -> String {
        match self.status {
            Some(s) => format!("{s}: {}", self.stderr.trim()),
            None => format!("no exit status: {}", self.stderr.trim()),
        }
    }
}

/// Run `cmd` to completion, timing it from just before spawn to its exit, and kill it if it
/// runs past `limit`.
///
/// A helper thread drains stderr and waits for the exit with `waitid(WNOWAIT)`, which does not
/// reap: only this function reaps (through `Child`), so on a timeout the pid we kill is still
/// certainly our child and never a recycled one.
fn run_timed(cmd: &mut Command, limit: Duration) -> Ran {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Ran {
                elapsed: start.elapsed(),
                status: None,
                stderr: format!("cannot spawn: {e}"),
            };
        }
    };
    let pid = Pid::from_raw(child.id() as i32);
    let mut stderr_pipe = child.stderr.take();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(p) = stderr_pipe.as_mut() {
            let _ = p.read_to_string(&mut text);
        }
        let exited = waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT);
        let _ = tx.send((Instant::now(), exited.is_ok(), text));
    });
    match rx.recv_timeout(limit) {
        Ok((end, _, stderr)) => Ran {
            elapsed: end - start,
            status: child.wait().ok(),
            stderr,
        },
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            Ran {
                elapsed: start.elapsed(),
                status: None,
                stderr: format!("killed after {limit:?}"),
            }
        }
    }
}

/// Latencies of `n` sequential runs of the command `make(i)`, within `budget`.
fn run_sequential(
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
struct Parallel {
    wall: Duration,
    stats: Stats,
    failures: Failures,
    planned: usize,
}

fn run_parallel(
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
    fn print(&self, unit: &str, floors: &[Floor]) {
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

// ---------------------------------------------------------------------------------------------
// The CLI and throwaway repositories
// ---------------------------------------------------------------------------------------------

/// The `tractatus` binary of the same build profile as this example.
struct Cli {
    bin: PathBuf,
}

impl Cli {
    /// This example runs as `target/<profile>/examples/bench`; the binary is
    /// `target/<profile>/tractatus`. Building it from here would fight with cargo's lock.
    fn locate() -> Option<Cli> {
        let exe = std::env::current_exe().ok()?;
        let bin = exe.parent()?.parent()?.join("tractatus");
        if bin.is_file() {
            println!("cli:          {}", bin.display());
            Some(Cli { bin })
        } else {
            println!(
                "cli:          {} not found: run `cargo build --release` first; \
                 the CLI sections are skipped",
                bin.display()
            );
            None
        }
    }

    /// `tractatus [--redis URL]` in `repo`, with no TRACTATUS_* variable from our environment,
    /// so that only what we pass decides the backend, namespace and timings.
    fn command(&self, repo: &Path, redis: Option<&str>) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.current_dir(repo);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("TRACTATUS_") {
                cmd.env_remove(k);
            }
        }
        if let Some(url) = redis {
            cmd.args(["--redis", url]);
        }
        cmd
    }

    fn lock_run_true(&self, repo: &Path, url: &str, name: &str) -> Command {
        let mut cmd = self.command(repo, Some(url));
        cmd.args(["lock", "run", "--name", name, "--", "true"]);
        cmd
    }

    fn append(&self, repo: &Path, url: Option<&str>, id: &str) -> Command {
        let value = serde_json::json!({
            "id": id,
            "text": "Benchmark entry: appended through tractatus state append under the file's lock.",
        });
        let mut cmd = self.command(repo, url);
        cmd.args([
            "state",
            "append",
            HISTORY,
            "/instructions",
            &value.to_string(),
        ]);
        cmd
    }
}

/// A throwaway repository: a temp dir holding `.git/` and `.claude/`.
struct FakeRepo {
    dir: tempfile::TempDir,
}

impl FakeRepo {
    fn new() -> Res<Self> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join(".git"))?;
        std::fs::create_dir_all(dir.path().join(".claude"))?;
        Ok(FakeRepo { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn history(&self) -> PathBuf {
        self.path().join(HISTORY)
    }
}

// ---------------------------------------------------------------------------------------------
// Section 1: floors
// ---------------------------------------------------------------------------------------------

fn section_floors(rt: &Runtime, url: &str, scale: Scale) -> Res<Floors> {
    println!("\n1. Floors");
    let n_ping = scale.count(2000, 20);
    let ping = rt.block_on(ping_floor(url, n_ping))?;
    print_latency("Redis PING round trip (async, sequential)", &ping, &[]);

    let flock = flock_floor(scale.count(2000, 20))?;
    print_latency("local flock lock+unlock (std File::lock)", &flock, &[]);

    let budget = Budget::new(LOOP_BUDGET);
    let (spawn, failures) = run_sequential(
        scale.count(100, 10),
        &budget,
        |_| {},
        |_| Command::new("/bin/true"),
    );
    print_latency("process spawn: /bin/true to exit", &spawn, &[]);
    failures.print("spawns of /bin/true");

    Ok(Floors {
        ping: Floor {
            name: "PING",
            p50: ping.p50(),
        },
        flock: Floor {
            name: "flock",
            p50: flock.p50(),
        },
        spawn: Floor {
            name: "spawn",
            p50: spawn.p50(),
        },
    })
}

async fn ping_floor(url: &str, n: usize) -> Res<Stats> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    // Warm up: the first round trips pay for cold caches and lazy setup.
    for _ in 0..50 {
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        samples.push(t.elapsed());
    }
    Ok(Stats::new(samples))
}

fn flock_floor(n: usize) -> Res<Stats> {
    let file = tempfile::tempfile()?;
    for _ in 0..50 {
        file.lock()?;
        file.unlock()?;
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        file.lock()?;
        file.unlock()?;
        samples.push(t.elapsed());
    }
    Ok(Stats::new(samples))
}

// ---------------------------------------------------------------------------------------------
// Section 2: lease engine on one Redis
// ---------------------------------------------------------------------------------------------

fn section_lease_engine(
    rt: &Runtime,
    url: &str,
    floors: &Floors,
    scale: Scale,
    cli: Option<&Cli>,
) -> Res<()> {
    println!("\n2. Lease engine, 1 Redis");
    rt.block_on(lease_engine_library(url, floors, scale))?;
    local_backend_library(rt, floors, scale)?;
    match cli {
        Some(cli) => lock_run_cli(cli, url, floors, scale)?,
        None => println!("  CLI lock run: skipped (no tractatus binary, see above)"),
    }
    Ok(())
}

async fn connect(urls: &[String], ttl: Option<Duration>) -> Res<Coordinator> {
    let mut config = Config::new(parse_nodes(urls)?);
    if let Some(ttl) = ttl {
        config.ttl = ttl;
        // Fresh masters refuse grants for the quarantine; keep it as short as the TTL allows.
        config.quarantine = ttl;
    }
    Ok(Coordinator::connect(config, Identity::current("bench")).await?)
}

/// One uncontended `try_acquire` + `release`, timed.
async fn acquire_release(c: &Coordinator, name: &str) -> Res<Duration> {
    let t = Instant::now();
    let lease = c.try_acquire(name).await?;
    lease.release().await?;
    Ok(t.elapsed())
}

async fn lease_engine_library(url: &str, floors: &Floors, scale: Scale) -> Res<()> {
    let urls = [url.to_owned()];
    let holder = connect(&urls, None).await?;
    // The waiter has its own connections (a separate coordinator), as a second process would,
    // but shares this process' monotonic clock, so t1 - t0 below is meaningful.
    let waiter = connect(&urls, None).await?;

    let n = scale.count(1000, 20);
    for _ in 0..20 {
        acquire_release(&holder, "bench/uncontended").await?;
    }
    let budget = Budget::new(LOOP_BUDGET);
    let mut samples = Vec::with_capacity(n);
    let mut failures = Failures::default();
    for _ in 0..n {
        if budget.exhausted() {
            break;
        }
        match acquire_release(&holder, "bench/uncontended").await {
            Ok(d) => samples.push(d),
            Err(e) => failures.add(e),
        }
    }
    let uncontended = Stats::new(samples);
    print_latency(
        "acquire+release, uncontended (library)",
        &uncontended,
        &[floors.ping],
    );
    note_truncated("acquire+release", uncontended.n() + failures.count, n);
    failures.print("acquire+release");

    let rounds = scale.count(200, 10);
    let handoff = handoff(&holder, &waiter, rounds).await;
    // Each hand-off round idles 20 ms before the release, so it starts from parked threads and
    // idle CPUs; a PING after the same idle is the like-for-like floor.
    let cold = cold_ping_floor(url, rounds, Duration::from_millis(20)).await?;
    let idle_ping = Floor {
        name: "idle PING",
        p50: cold.p50(),
    };
    print_latency(
        "hand-off: release -> waiter acquired",
        &handoff.stats,
        &[floors.ping, idle_ping],
    );
    print_latency(
        "  of which: the holder's release() call",
        &handoff.release,
        &[floors.ping, idle_ping],
    );
    let notify = pubsub_floor(url, rounds).await?;
    print_latency(
        "  reference: raw PUBLISH -> subscriber",
        &notify,
        &[floors.ping],
    );
    print_latency("  reference: PING after 20 ms idle", &cold, &[floors.ping]);
    let per = |f: Floor| handoff.stats.p50().as_secs_f64() / f.p50.as_secs_f64().max(1e-9);
    println!(
        "    hand-off p50 = {:.1} back-to-back PING round trips, {:.1} round trips of a PING \
         after the same idle (target: within 3).\n    The waiter is woken by the release event, \
         not by polling; for comparison, polling Redlock clients average 50-130 ms.",
        per(floors.ping),
        per(idle_ping)
    );
    if handoff.not_waiting > 0 {
        println!(
            "    note: in {} rounds the waiter had not yet reported the holder after 20 ms",
            handoff.not_waiting
        );
    }
    note_truncated(
        "hand-off",
        handoff.stats.n() + handoff.failures.count,
        rounds,
    );
    handoff.failures.print("hand-off rounds");
    Ok(())
}

/// Raw Redis pub/sub, the mechanism that wakes a waiter: from sending a PUBLISH to the moment
/// the subscriber's stream yields the message (same crate, same kind of connections).
async fn pubsub_floor(url: &str, n: usize) -> Res<Stats> {
    const CHANNEL: &str = "bench:pubsub-floor";
    let client = redis::Client::open(url)?;
    let mut publisher = client.get_multiplexed_async_connection().await?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(CHANNEL).await?;
    let mut messages = pubsub.into_on_message();
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + 20 {
        let t0 = Instant::now();
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(CHANNEL).arg("released");
        let publish = cmd.query_async::<i64>(&mut publisher);
        let receive = async {
            let got = tokio::time::timeout(Duration::from_secs(2), messages.next()).await;
            matches!(got, Ok(Some(_))).then(Instant::now)
        };
        let (sent, received) = tokio::join!(publish, receive);
        sent?;
        let t1 = received.ok_or("pub/sub message not received within 2 s")?;
        // The first 20 rounds warm up.
        if i >= 20 {
            samples.push(t1 - t0);
        }
    }
    Ok(Stats::new(samples))
}

/// A PING after the machine sat idle for `idle`, as the holder's release does in the hand-off
/// rounds: on a VM, waking idle vCPUs and parked threads can cost more than the round trip.
async fn cold_ping_floor(url: &str, n: usize, idle: Duration) -> Res<Stats> {
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let budget = Budget::new(LOOP_BUDGET);
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        if budget.exhausted() {
            break;
        }
        tokio::time::sleep(idle).await;
        let t0 = Instant::now();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        samples.push(t0.elapsed());
    }
    Ok(Stats::new(samples))
}

struct Handoff {
    stats: Stats,
    /// The holder's `release()` call alone, timed in the same rounds.
    release: Stats,
    failures: Failures,
    not_waiting: usize,
}

/// Rounds of: `holder` takes the lock, `waiter` blocks on it, `holder` releases; the hand-off
/// is from just before the release to the moment the waiter's acquire returns.
async fn handoff(holder: &Coordinator, waiter: &Coordinator, rounds: usize) -> Handoff {
    const NAME: &str = "bench/handoff";
    let budget = Budget::new(LOOP_BUDGET);
    let mut out = Handoff {
        stats: Stats::new(Vec::new()),
        release: Stats::new(Vec::new()),
        failures: Failures::default(),
        not_waiting: 0,
    };
    let (mut samples, mut releases) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for _ in 0..rounds {
        if budget.exhausted() {
            break;
        }
        let lease = match holder.try_acquire(NAME).await {
            Ok(l) => l,
            Err(e) => {
                out.failures.add(format!("holder: {e}"));
                continue;
            }
        };
        // The progress channel tells us the waiter was refused and saw the holder.
        let (progress, seen) = tokio::sync::watch::channel::<Option<HolderInfo>>(None);
        let w = waiter.clone();
        let task = tokio::spawn(async move {
            let opts = AcquireOptions {
                wait: Duration::from_secs(10),
                progress: Some(progress),
            };
            let got = w.acquire(NAME, &opts).await;
            (Instant::now(), got)
        });
        // Give the waiter time to be refused, subscribe to release events and block on them.
        tokio::time::sleep(Duration::from_millis(20)).await;
        if seen.borrow().is_none() {
            out.not_waiting += 1;
        }
        let t0 = Instant::now();
        if let Err(e) = lease.release().await {
            out.failures.add(format!("holder release: {e}"));
        }
        releases.push(t0.elapsed());
        match task.await {
            Ok((t1, Ok(lease))) => {
                samples.push(t1 - t0);
                if let Err(e) = lease.release().await {
                    out.failures.add(format!("waiter release: {e}"));
                }
            }
            Ok((_, Err(e))) => out.failures.add(format!("waiter: {e}")),
            Err(e) => out.failures.add(format!("waiter task: {e}")),
        }
    }
    out.stats = Stats::new(samples);
    out.release = Stats::new(releases);
    out
}

/// The no-Redis backend at library level: one flock plus a fencing counter file.
fn local_backend_library(rt: &Runtime, floors: &Floors, scale: Scale) -> Res<()> {
    let dir = tempfile::tempdir()?;
    let c = Coordinator::local(
        Config::new(Vec::new()),
        Identity::current("bench"),
        dir.path().join("locks"),
    )?;
    let n = scale.count(1000, 20);
    let budget = Budget::new(LOOP_BUDGET);
    let (mut samples, mut failures) = (Vec::with_capacity(n), Failures::default());
    rt.block_on(async {
        for _ in 0..20 {
            let _ = acquire_release(&c, "bench/local").await;
        }
        for _ in 0..n {
            if budget.exhausted() {
                break;
            }
            match acquire_release(&c, "bench/local").await {
                Ok(d) => samples.push(d),
                Err(e) => failures.add(e),
            }
        }
    });
    let stats = Stats::new(samples);
    print_latency(
        "local file-lock backend acquire+release",
        &stats,
        &[floors.flock],
    );
    failures.print("local acquire+release");
    Ok(())
}

fn lock_run_cli(cli: &Cli, url: &str, floors: &Floors, scale: Scale) -> Res<()> {
    let repo = FakeRepo::new()?;
    // The first run writes the repository's namespace into its config file: not measured.
    let first = run_timed(
        &mut cli.lock_run_true(repo.path(), url, "bench-cli"),
        CHILD_LIMIT,
    );
    if !first.ok() {
        println!(
            "  CLI lock run: first run failed ({}); skipping",
            first.describe()
        );
        return Ok(());
    }

    let n = scale.count(100, 10);
    let budget = Budget::new(LOOP_BUDGET);
    let (stats, failures) = run_sequential(
        n,
        &budget,
        |_| {},
        |_| cli.lock_run_true(repo.path(), url, "bench-cli"),
    );
    print_latency(
        "CLI `lock run -- true`, uncontended",
        &stats,
        &[floors.spawn],
    );
    note_truncated("CLI lock run", stats.n() + failures.count, n);
    failures.print("lock runs");

    let each = scale.count(25, 2);
    let par = run_parallel(THREADS, each, |_, _| {
        cli.lock_run_true(repo.path(), url, "bench-cli-tp")
    });
    par.print("lock-runs", &[floors.spawn]);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Section 3: state files through the CLI
// ---------------------------------------------------------------------------------------------

const QUADRANTS: [&str; 5] = [
    "STRATEGIC",
    "OPERATIONAL",
    "TACTICAL",
    "SYSTEM",
    "STOCHASTIC",
];

/// A realistic `instruction-history.json` with `n` instructions of about 1 KB each, laid out
/// as Node's `JSON.stringify(x, null, 2)` writes it (2-space indentation, no trailing newline).
fn instruction_history(n: usize) -> Res<String> {
    let instructions: Vec<serde_json::Value> = (1..=n)
        .map(|i| {
            serde_json::json!({
                "id": format!("inst_{i:03}"),
                "text": format!(
                    "Rule {i}: before changing any governance file, read the current session \
                     state and record the change here, so that a later session can audit why \
                     it was made and by whom. Never weaken a boundary without an explicit human \
                     decision recorded in this history. Run the pre-action check before \
                     deploying, and stop if two sessions edit the same file at once."
                ),
                "timestamp": format!("2026-{:02}-{:02}T{:02}:{:02}:00.000Z", 1 + i % 11, 1 + i % 28, i % 24, i % 60),
                "quadrant": QUADRANTS[i % QUADRANTS.len()],
                "persistence": "HIGH",
                "temporal_scope": if i % 3 == 0 { "PROJECT" } else { "PERMANENT" },
                "verification_required": "MANDATORY",
                "explicitness": 0.9,
                "source": if i % 4 == 0 { "framework" } else { "user" },
                "session_id": format!("2026-{:02}-{:02}-{:03}", 1 + i % 11, 1 + i % 28, i % 7),
                "parameters": {
                    "files": [HISTORY, ".claude/session-state.json"],
                    "threshold": 0.75,
                    "max_retries": 3,
                    "scope": "repository"
                },
                "active": true,
                "notes": "Added after a lost write between two concurrent sessions; keep until \
                          the lock is deployed on every machine."
            })
        })
        .collect();
    let doc = serde_json::json!({
        "version": "3.5",
        "last_updated": "2026-11-20T10:00:00.000Z",
        "description": "Persistent instruction database for Tractatus framework governance",
        "instructions": instructions,
    });
    Ok(serde_json::to_string_pretty(&doc)?)
}

fn section_state_files(cli: &Cli, url: &str, floors: &Floors, scale: Scale) -> Res<()> {
    println!("\n3. State files (CLI, `state append` on {HISTORY})");
    let fixture = instruction_history(140)?;
    println!(
        "  fixture: 140 instructions, {:.1} KiB, 2-space indentation",
        fixture.len() as f64 / 1024.0
    );

    let repo = FakeRepo::new()?;
    append_uncontended(
        cli,
        &repo,
        Some(url),
        &fixture,
        scale,
        "append, 1 Redis, uncontended",
        &[floors.spawn, floors.ping],
    )?;
    append_throughput(cli, &repo, url, &fixture, scale, floors)?;

    // A repository of its own: its fencing record must not carry tokens from the Redis runs.
    let local = FakeRepo::new()?;
    append_uncontended(
        cli,
        &local,
        None,
        &fixture,
        scale,
        "append, no Redis (flock), uncontended",
        &[floors.spawn],
    )?;
    Ok(())
}

/// Sequential appends, each timed from process start to exit. The file is put back to the
/// fixture every 20 runs so that it stays about the fixture's size.
fn append_uncontended(
    cli: &Cli,
    repo: &FakeRepo,
    url: Option<&str>,
    fixture: &str,
    scale: Scale,
    label: &str,
    floors: &[Floor],
) -> Res<()> {
    std::fs::write(repo.history(), fixture)?;
    // Warm-up run (namespace file, fence record, page cache): not measured.
    let first = run_timed(
        &mut cli.append(repo.path(), url, "bench_warmup"),
        CHILD_LIMIT,
    );
    if !first.ok() {
        println!("  {label}: warm-up failed ({}); skipped", first.describe());
        return Ok(());
    }
    let n = scale.count(100, 10);
    let budget = Budget::new(LOOP_BUDGET);
    let path = repo.history();
    let (stats, failures) = run_sequential(
        n,
        &budget,
        |i| {
            if i % 20 == 0 {
                let _ = std::fs::write(&path, fixture);
            }
        },
        |i| cli.append(repo.path(), url, &format!("bench_{i}")),
    );
    print_latency(label, &stats, floors);
    note_truncated(label, stats.n() + failures.count, n);
    failures.print("appends");
    Ok(())
}

fn append_throughput(
    cli: &Cli,
    repo: &FakeRepo,
    url: &str,
    fixture: &str,
    scale: Scale,
    floors: &Floors,
) -> Res<()> {
    std::fs::write(repo.history(), fixture)?;
    let each = scale.count(10, 2);
    let id = |t: usize, i: usize| format!("tp_{t}_{i}");
    let par = run_parallel(THREADS, each, |t, i| {
        cli.append(repo.path(), Some(url), &id(t, i))
    });
    par.print("appends", &[floors.spawn, floors.ping]);

    // Sanity, not an assertion: every append that exited 0 must be in the file.
    let expected: HashSet<String> = (0..THREADS)
        .flat_map(|t| (0..each).map(move |i| (t, i)))
        .map(|(t, i)| id(t, i))
        .collect();
    match count_ids(&repo.history(), &expected) {
        Ok((found, total)) => println!(
            "  sanity: file parses; {found}/{} appended ids present ({} exited 0); \
             {total} instructions in the file",
            expected.len(),
            par.stats.n()
        ),
        Err(e) => println!("  sanity: the file does NOT parse or has no instructions: {e}"),
    }
    Ok(())
}

/// How many of `expected` ids are in the file's `/instructions`, and how many entries it has.
fn count_ids(path: &Path, expected: &HashSet<String>) -> Res<(usize, usize)> {
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path)?)?;
    let list = doc["instructions"]
        .as_array()
        .ok_or("no /instructions array")?;
    let found = list
        .iter()
        .filter_map(|e| e["id"].as_str())
        .filter(|id| expected.contains(*id))
        .count();
    Ok((found, list.len()))
}

// ---------------------------------------------------------------------------------------------
// Section 4: Redlock
// ---------------------------------------------------------------------------------------------

fn section_redlock(rt: &Runtime, urls: &[String], floors: &Floors, scale: Scale) -> Res<()> {
    println!("\n4. Redlock (library)");
    rt.block_on(five_versus_one(urls, floors, scale))?;
    rt.block_on(contended(&urls[..3], floors, scale))?;
    Ok(())
}

/// The fencing counter of lock `name` on each master, `-` where it never granted it.
async fn fence_counters(urls: &[String], name: &str) -> Res<String> {
    let key = LockKeys::new("default", name).fence;
    let mut shown = Vec::with_capacity(urls.len());
    for url in urls {
        let mut conn = redis::Client::open(url.as_str())?
            .get_multiplexed_async_connection()
            .await?;
        let v: Option<u64> = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
        shown.push(v.map_or_else(|| "-".to_owned(), |v| v.to_string()));
    }
    Ok(shown.join(", "))
}

/// Uncontended acquire+release on 5 masters and on 1, interleaved so that both see the same
/// machine load.
async fn five_versus_one(urls: &[String], floors: &Floors, scale: Scale) -> Res<()> {
    // One lock name per coordinator: master 0 serves both, and a shared name would leave its
    // fencing counter ahead of the other four, costing the 5-master grants a raise each time.
    const ONE: &str = "bench/rl-1";
    const FIVE: &str = "bench/rl-5";
    let one = connect(&urls[..1], None).await?;
    let five = connect(urls, None).await?;
    for _ in 0..20 {
        acquire_release(&one, ONE).await?;
        acquire_release(&five, FIVE).await?;
    }
    let n = scale.count(500, 20);
    let budget = Budget::new(LOOP_BUDGET);
    let (mut s1, mut s5, mut failures) = (Vec::new(), Vec::new(), Failures::default());
    for _ in 0..n {
        if budget.exhausted() {
            break;
        }
        match acquire_release(&one, ONE).await {
            Ok(d) => s1.push(d),
            Err(e) => failures.add(format!("1 master: {e}")),
        }
        match acquire_release(&five, FIVE).await {
            Ok(d) => s5.push(d),
            Err(e) => failures.add(format!("5 masters: {e}")),
        }
    }
    let (s1, s5) = (Stats::new(s1), Stats::new(s5));
    print_latency("acquire+release, 1 master", &s1, &[floors.ping]);
    print_latency("acquire+release, 5 masters", &s5, &[floors.ping]);
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    println!(
        "    5 masters / 1 master: p50 {:.2}x, p99 {:.2}x (target: p50 within 1.5x)",
        ratio(s5.p50(), s1.p50()),
        ratio(s5.p99(), s1.p99())
    );
    let (f1, f5) = fanout_floor(urls, n).await?;
    print_latency("  floor: PING to 1 master", &f1, &[floors.ping]);
    print_latency("  floor: PING to 5 at once, 3rd reply", &f5, &[floors.ping]);
    println!(
        "    the same fan-out as raw PINGs on this machine: 5 / 1 = p50 {:.2}x (5 servers and \
         the client share {} cores, so fan-out costs CPU here, not only network)",
        ratio(f5.p50(), f1.p50()),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let k = scale.count(100, 10);
    let c1 = script_calls_per_round(&one, &urls[..1], ONE, k).await?;
    let c5 = script_calls_per_round(&five, urls, FIVE, k).await?;
    println!(
        "    script calls (EVALSHA) per acquire+release, summed over the masters: 1 master \
         {c1:.1}, 5 masters {c5:.1} (2 per master would be grant + release)"
    );
    println!(
        "    fencing counter of that lock on each of the 5 masters (raised to the token handed \
         out): {}",
        fence_counters(urls, FIVE).await?
    );
    note_truncated("5 vs 1", s1.n().min(s5.n()), n);
    failures.print("acquire+release");
    Ok(())
}

/// Script calls (each one a request and its reply) the masters served per uncontended
/// acquire+release of `c`, from `INFO commandstats`. Background work such as fire-and-forget
/// calls gets 50 ms to land before the second reading.
async fn script_calls_per_round(
    c: &Coordinator,
    urls: &[String],
    name: &str,
    k: usize,
) -> Res<f64> {
    let before = script_calls(urls).await?;
    for _ in 0..k {
        acquire_release(c, name).await?;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after = script_calls(urls).await?;
    Ok(after.saturating_sub(before) as f64 / k as f64)
}

/// EVAL and EVALSHA calls served so far, summed over the masters. (`total_commands_processed`
/// would also count every `redis.call` made inside the scripts.)
async fn script_calls(urls: &[String]) -> Res<u64> {
    let mut total = 0;
    for url in urls {
        let mut conn = redis::Client::open(url.as_str())?
            .get_multiplexed_async_connection()
            .await?;
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await?;
        total += info
            .lines()
            .filter(|l| l.starts_with("cmdstat_eval:") || l.starts_with("cmdstat_evalsha:"))
            .filter_map(|l| {
                l.split_once("calls=")?
                    .1
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum::<u64>();
    }
    Ok(total)
}

/// The machine's floor for a Redlock round: PING one master, and PING all masters at once
/// until a majority answered (the rest are awaited untimed). Interleaved, like the library run.
async fn fanout_floor(urls: &[String], n: usize) -> Res<(Stats, Stats)> {
    let mut conns = Vec::with_capacity(urls.len());
    for url in urls {
        conns.push(
            redis::Client::open(url.as_str())?
                .get_multiplexed_async_connection()
                .await?,
        );
    }
    let need = urls.len() / 2 + 1;
    let (mut one, mut all) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n + 20 {
        let t1 = majority_ping(&conns[..1], 1).await?;
        let t5 = majority_ping(&conns, need).await?;
        // The first 20 rounds warm up.
        if i >= 20 {
            one.push(t1);
            all.push(t5);
        }
    }
    Ok((Stats::new(one), Stats::new(all)))
}

/// PING every connection at once; the time until `need` replies came back.
async fn majority_ping(conns: &[redis::aio::MultiplexedConnection], need: usize) -> Res<Duration> {
    let start = Instant::now();
    let mut pending: FuturesUnordered<_> = conns
        .iter()
        .map(|c| {
            let mut c = c.clone();
            async move { redis::cmd("PING").query_async::<String>(&mut c).await }
        })
        .collect();
    let (mut got, mut at) = (0, None);
    while let Some(reply) = pending.next().await {
        reply?;
        got += 1;
        if got == need {
            at = Some(start.elapsed());
        }
    }
    at.ok_or_else(|| "fewer PING replies than a majority".into())
}

/// Per-task results of the contended run.
struct Contender {
    latencies: Vec<Duration>,
    failures: Failures,
}

/// `THREADS` tasks, each with its own coordinator (own connections) on 3 masters, taking and
/// releasing the same lock in a loop.
async fn contended(urls: &[String], floors: &Floors, scale: Scale) -> Res<()> {
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
