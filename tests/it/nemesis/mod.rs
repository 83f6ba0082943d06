//! The nemesis: a randomized, bounded run on real processes that mixes the faults a lock meets
//! (a holder's `tractatus` or its command, or a waiter, SIGSTOPped then continued, sometimes
//! past the TTL; holders and waiters SIGKILLed; Redis restarted empty, with or without `lock init`; on
//! Redlock a master paused past the TTL) while workers on four "hosts" loop `lock run` on one
//! lock. Every holder's command appends "<token> <ns since epoch> <pid> <n>" lines to one log;
//! the checker proves that the holding intervals [first line, last line] of distinct tokens
//! never overlap, that tokens rise in the order the intervals start, that no token serves two
//! holders, and that no line of a lower token lands (in file order) after a higher one's first.
//!
//! CI runs each mode for a few seconds; `TRACTATUS_NEMESIS_SECS=300` runs each mode longer,
//! and `TRACTATUS_NEMESIS_SEED` replays a seed (the faults' choices and pauses, not the
//! scheduler: a replay is the same storm, not the same interleaving). The seed is printed.
//!
//! Split (issue 22): the workers, the nemesis and its faults stay here; `run` (one run and the
//! three backends), `check` (the log's checker).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::support::{
    Guard, RedisServer, Repo, child_named, now_ns, parent_and_state, run_timed, signal, tractatus,
};

mod check;
mod run;

use check::check;

/// The holder's command: six lines of its token, ~60 ms apart (long enough that a fault often
/// finds a holder inside), each stamped just before it is
/// appended (one `write` per line, O_APPEND). `$$` tells two holders with one token apart.
const WRITER: &str = r#"
log="$1"; t="$TRACTATUS_FENCING_TOKEN"; i=0
while [ $i -lt 6 ]; do
  echo "$t $(date +%s%N) $$ $i" >> "$log"
  i=$((i + 1))
  [ $i -lt 6 ] && sleep 0.06
done
exit 0
"#;

/// Workers per mode; each has its own `TRACTATUS_HOST`, except the last two, which share one
/// (so the same-host judgment of a stopped or killed holder is exercised too).
const HOSTS: [&str; 4] = ["nemesis-a", "nemesis-b", "nemesis-c", "nemesis-c"];

/// The quarantine of a server restarted empty; longer than the TTL (1 s), so `lock init` after
/// [`INIT_AFTER`] still shortens it.
const QUARANTINE: &str = "3s";

/// How long after an empty restart's kill the nemesis may say `lock init`: past the TTL plus a
/// margin, so every lease the old run granted has expired, as the README asks of an operator
/// ("never to skip the quarantine after a crash" is about leases that may still run).
const INIT_AFTER: Duration = Duration::from_millis(1600);

/// Most a single `lock run` may take before the worker gives up on it (then the Guard stops it).
const RUN_LIMIT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    OneRedis,
    Redlock,
    Local,
}

/// splitmix64: small, seedable, good enough to pick faults.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

/// Signal `pid` only while it is still `parent`'s child: the table's lock keeps `parent`
/// unreaped, so `parent`'s pid is ours; a child that exits between the check and the signal is
/// a zombie until `parent` reaps it, which leaves only a window of microseconds for a reuse.
fn signal_child(parent: u32, pid: u32, sig: Signal) -> bool {
    if parent_and_state(pid).is_some_and(|(pp, _)| pp == parent) {
        signal(pid, sig);
        true
    } else {
        false
    }
}

/// The `tractatus` pid each worker runs now; a slot is emptied, under this lock, before the
/// worker reaps its child, so a pid read here under the lock is never a recycled one.
type Table = Arc<Mutex<Vec<Option<u32>>>>;

/// What a run saw, besides the log.
#[derive(Default)]
struct Tally {
    exits: BTreeMap<String, usize>,
    faults: BTreeMap<&'static str, usize>,
    /// "+ms kind detail", for the evidence when a check fails.
    events: Vec<String>,
    /// One stderr line per odd exit code (not 0, 75, 76 or a signal), with how long the run
    /// took, the first few.
    odd: Vec<String>,
    /// When a holder's `tractatus` was stopped, and for how long (ns since epoch), to count
    /// the holders that started while it was: the faults that bit.
    stops: Vec<(u128, u128)>,
}

/// Sets the stop flag when dropped, so that a panicking test ends its threads too.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn worker_command(repo: &Path, urls: Option<&str>, host: &str, log: &Path) -> Command {
    let mut c = tractatus(repo);
    if let Some(u) = urls {
        c.env("TRACTATUS_REDIS", u);
    }
    c.env("TRACTATUS_HOST", host)
        .env("TRACTATUS_QUARANTINE", QUARANTINE)
        .args(["--ttl", "1s", "--wait", "5s", "lock", "run", "--name", "N"])
        .args(["--", "sh", "-c", WRITER, "sh"])
        .arg(log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// One worker: `lock run` after `lock run` until `stop`, each bounded by [`RUN_LIMIT`].
fn worker(
    slot: usize,
    mut cmd: impl FnMut() -> Command,
    table: Table,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
) {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    // Bounded in count as well as by the flag.
    for _ in 0..100_000 {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let child = cmd().spawn().expect("spawn tractatus");
        let pid = child.id();
        let mut g = Guard(child);
        let mut err = g.0.stderr.take().expect("stderr");
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        table.lock().unwrap()[slot] = Some(pid);
        let start = Instant::now();
        let status = loop {
            {
                let mut t = table.lock().unwrap();
                // Reaped only under the lock, after the slot is emptied.
                if let Ok(Some(s)) = g.0.try_wait() {
                    t[slot] = None;
                    break Some(s);
                }
                if start.elapsed() > RUN_LIMIT {
                    t[slot] = None;
                    break None;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let what = match status {
            Some(s) => match (s.code(), s.signal()) {
                (Some(c), _) => c.to_string(),
                (None, Some(sig)) => format!("signal {sig}"),
                _ => "?".to_owned(),
            },
            None => format!("still running after {RUN_LIMIT:?}"),
        };
        let took = start.elapsed();
        drop(g);
        let stderr = reader.join().unwrap_or_default();
        let mut t = tally.lock().unwrap();
        let odd = !matches!(what.as_str(), "0" | "75" | "76") && !what.starts_with("signal");
        if odd && t.odd.len() < 8 {
            let line = stderr.lines().last().unwrap_or("").to_owned();
            t.odd
                .push(format!("{what} after {took:.2?} (--wait 5s): {line}"));
        }
        *t.exits.entry(what).or_default() += 1;
    }
}

/// The faults, one at a time, until `stop`; whatever it stops it continues before the next.
struct Nemesis {
    mode: Mode,
    rng: Rng,
    table: Table,
    servers: Arc<Mutex<Vec<RedisServer>>>,
    repo: PathBuf,
    tally: Arc<Mutex<Tally>>,
    began: Instant,
}

impl Nemesis {
    /// Count a fault (a continue is only logged) and log it.
    fn note(&self, kind: &'static str, detail: String) {
        let mut t = self.tally.lock().unwrap();
        if kind != "cont" {
            *t.faults.entry(kind).or_default() += 1;
        }
        let at = self.began.elapsed().as_millis();
        t.events
            .push(format!("+{at}ms @{} {kind} {detail}", now_ns()));
    }

    /// A worker's `tractatus` pid and, if it holds the lock, its command's: under the table's
    /// lock, then `f` runs with both, still under it.
    /// It polls for 0.5 s at most: a holder may be between two runs.
    fn with_victim<R>(
        &mut self,
        want_holder: bool,
        f: impl FnOnce(u32, Option<u32>) -> R,
    ) -> Option<R> {
        let deadline = Instant::now() + Duration::from_millis(500);
        let mut f = Some(f);
        while Instant::now() < deadline {
            if let Some(r) = self.try_victim(want_holder, &mut f) {
                return Some(r);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    fn try_victim<R, F: FnOnce(u32, Option<u32>) -> R>(
        &mut self,
        want_holder: bool,
        f: &mut Option<F>,
    ) -> Option<R> {
        let t = self.table.lock().unwrap();
        let live: Vec<u32> = t.iter().flatten().copied().collect();
        let mut picks: Vec<(u32, Option<u32>)> = live
            .into_iter()
            .map(|p| (p, child_named(p, "sh")))
            .filter(|(_, c)| c.is_some() == want_holder)
            .collect();
        if picks.is_empty() {
            return None;
        }
        let (p, c) = picks.swap_remove(self.rng.below(picks.len() as u64) as usize);
        Some(f.take()?(p, c))
    }

    fn cont(&self, pid: u32, cmd: Option<u32>) {
        // Under the lock: `pid` is not reaped while it is in the table, and a stopped process
        // cannot exit unless killed, which only this thread does.
        let _t = self.table.lock().unwrap();
        signal(pid, Signal::SIGCONT);
        if let Some(c) = cmd {
            signal_child(pid, c, Signal::SIGCONT);
        }
    }

    fn step(&mut self) {
        let redis = self.mode != Mode::Local;
        let kinds: &[&str] = match self.mode {
            Mode::Local => &[
                "stop-tractatus",
                "stop-command",
                "stop-both",
                "kill-holder",
                "kill-waiter",
                "stop-waiter",
            ],
            Mode::OneRedis => &[
                "stop-tractatus",
                "stop-tractatus",
                "stop-tractatus",
                "kill-holder",
                "stop-command",
                "stop-both",
                "kill-holder",
                "kill-waiter",
                "stop-waiter",
                "restart",
                "restart+init",
            ],
            Mode::Redlock => &[
                "stop-tractatus",
                "stop-tractatus",
                "kill-holder",
                "stop-command",
                "stop-both",
                "kill-holder",
                "kill-waiter",
                "stop-waiter",
                "restart",
                "restart+init",
                "pause-master",
                "pause-master",
            ],
        };
        let kind = kinds[self.rng.below(kinds.len() as u64) as usize];
        // Sometimes shorter than the TTL (1 s), sometimes well past it.
        let pause = self.rng.millis(200, 2600);
        match kind {
            // A waiter stopped may be one whose grant has just landed, before its command starts.
            "stop-tractatus" | "stop-command" | "stop-both" | "stop-waiter" => {
                let (tr, cm) = (kind != "stop-command", kind != "stop-tractatus");
                let got = self.with_victim(kind != "stop-waiter", |p, c| {
                    if cm {
                        c.map(|c| signal_child(p, c, Signal::SIGSTOP));
                    }
                    if tr {
                        signal(p, Signal::SIGSTOP);
                    }
                    (p, c)
                });
                if let Some((p, c)) = got {
                    self.note(kind, format!("tractatus {p} command {c:?} for {pause:?}"));
                    let from = now_ns();
                    std::thread::sleep(pause);
                    self.cont(p, c);
                    if tr && kind != "stop-waiter" {
                        self.tally.lock().unwrap().stops.push((from, now_ns()));
                    }
                    self.note("cont", format!("tractatus {p}"));
                }
            }
            "kill-holder" | "kill-waiter" => {
                let holder = kind == "kill-holder";
                if let Some(p) = self.with_victim(holder, |p, _| {
                    signal(p, Signal::SIGKILL);
                    p
                }) {
                    self.note(kind, format!("tractatus {p}"));
                }
            }
            "restart" | "restart+init" if redis => {
                let mut servers = self.servers.lock().unwrap();
                let i = self.rng.below(servers.len() as u64) as usize;
                let killed = Instant::now();
                servers[i].restart_empty();
                let port = servers[i].port;
                drop(servers);
                if kind == "restart+init" {
                    let wait = INIT_AFTER.saturating_sub(killed.elapsed());
                    std::thread::sleep(wait);
                    let url = format!("redis://127.0.0.1:{port}");
                    let r = run_timed(
                        tractatus(&self.repo).args(["--redis", &url, "lock", "init"]),
                        Duration::from_secs(20),
                    );
                    // Under load it may fail (an availability fact, not a safety one): noted.
                    if r.code != 0 {
                        let why = r.stderr.trim().to_owned();
                        self.note("init-failed", format!("exit {}: {why}", r.code));
                    }
                }
                self.note(kind, format!("server {i} (port {port})"));
            }
            "pause-master" => {
                let i = {
                    let s = self.servers.lock().unwrap();
                    let i = self.rng.below(s.len() as u64) as usize;
                    s[i].pause();
                    i
                };
                let pause = self.rng.millis(1200, 3000);
                self.note(kind, format!("master {i} for {pause:?}"));
                std::thread::sleep(pause);
                self.servers.lock().unwrap()[i].resume();
                self.note("cont", format!("master {i}"));
            }
            _ => {}
        }
    }
}
