//! `tractatus demo`: what the locks are for, on a fresh machine. A scratch repository gets
//! Tractatus-shaped files; several simulated sessions (child processes of this binary) write
//! them at once, first unguarded (read, parse, modify, write in place, as Tractatus' Node hooks
//! do), then guarded (`state update` through the library: local locks, or Redis when one is
//! configured), while a reader counts torn reads. Lost updates, torn reads and the cost per
//! write are printed side by side. Bounded in sessions, writes and time; the scratch directory
//! is removed.

mod session;

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tractatus_lock::settings::Flags;
use tractatus_lock::workspace::Workspace;
use tractatus_lock::{Error, Result};

use crate::cli::{DemoArgs, GlobalArgs};
use crate::output;
pub use session::{edit, worker};

/// Longest one run (all sessions' writes) may take before the demo gives up.
const RUN_DEADLINE: Duration = Duration::from_secs(120);

/// What one run (unguarded or guarded) came to.
#[derive(Debug, Default, serde::Serialize)]
struct Outcome {
    writes: u64,
    failed: u64,
    lost: u64,
    reads: u64,
    torn_reads: u64,
    unparseable_files: u64,
    p50_ms: f64,
    p95_ms: f64,
    seconds: f64,
}

pub async fn run(args: &DemoArgs, global: GlobalArgs) -> Result<i32> {
    if !(2..=16).contains(&args.sessions) || !(1..=1000).contains(&args.writes) {
        return Err(Error::usage(
            "demo: --sessions must be 2 to 16 and --writes 1 to 1000",
        ));
    }
    let scratch = tempfile::Builder::new()
        .prefix("tractatus-demo-")
        .tempdir()
        .map_err(|e| Error::internal(format!("cannot make a scratch directory: {e}")))?;
    let root = scratch.path().canonicalize().map_err(Error::internal)?;
    for dir in [".git", ".claude/metrics"] {
        std::fs::create_dir_all(root.join(dir)).map_err(|source| Error::CannotWrite {
            path: root.join(dir),
            source,
        })?;
    }
    // The sessions see the demo's own Redis flags through the environment.
    let flags: Flags = global.settings;
    let redis = (!flags.redis.is_empty()).then(|| flags.redis.join(","));
    let env = |k: &str| match (k, &redis) {
        ("TRACTATUS_REDIS", Some(r)) => Some(r.clone()),
        _ => std::env::var(k).ok(),
    };
    let ws = Workspace::discover(&root, &Flags::default(), &env)?;
    let nodes = ws.resolved().config.nodes.len();
    let backend = match nodes {
        0 => "local file locks".to_owned(),
        1 => "one Redis".to_owned(),
        n => format!("Redlock over {n} Redis masters"),
    };
    if !global.json {
        output::out(&format!(
            "{} sessions write {} times each to .claude/session-state.json, \
             metrics/hooks-metrics.json and instruction-history.json ({} instructions), \
             in a scratch repository:",
            args.sessions,
            args.writes,
            session::SEEDED_INSTRUCTIONS
        ))?;
    }
    let unguarded = one_run(&root, args, false, redis.as_deref()).await?;
    let guarded = one_run(&root, args, true, redis.as_deref()).await?;
    if global.json {
        output::json(&serde_json::json!({
            "sessions": args.sessions,
            "writes_per_session": args.writes,
            "backend": if nodes == 0 { "local" } else { "redis" },
            "unguarded": unguarded,
            "guarded": guarded,
        }))?;
    } else {
        report(&unguarded, &guarded, &backend)?;
    }
    if guarded.lost > 0 || guarded.torn_reads > 0 || guarded.unparseable_files > 0 {
        return Err(Error::internal(
            "the guarded run lost updates or showed a torn file: please report this",
        ));
    }
    Ok(0)
}

fn report(unguarded: &Outcome, guarded: &Outcome, backend: &str) -> Result<()> {
    let pair = |f: &dyn Fn(&Outcome) -> String| vec![f(unguarded), f(guarded)];
    let rows: Vec<(&str, Vec<String>)> = vec![
        ("writes done", pair(&|o| o.writes.to_string())),
        (
            "writes failed (a torn read)",
            pair(&|o| o.failed.to_string()),
        ),
        ("lost updates", pair(&|o| o.lost.to_string())),
        (
            "torn reads",
            pair(&|o| format!("{} of {}", o.torn_reads, o.reads)),
        ),
        (
            "files left unparseable",
            pair(&|o| o.unparseable_files.to_string()),
        ),
        (
            "cost per write, p50",
            pair(&|o| format!("{:.2} ms", o.p50_ms)),
        ),
        (
            "cost per write, p95",
            pair(&|o| format!("{:.2} ms", o.p95_ms)),
        ),
        (
            "run time",
            pair(&|o| {
                format!(
                    "{:.2} s ({:.0} writes/s)",
                    o.seconds,
                    o.writes as f64 / o.seconds.max(1e-3)
                )
            }),
        ),
    ];
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|(label, cells)| std::iter::once(label.to_owned()).chain(cells).collect())
        .collect();
    let guarded_head = format!("GUARDED ({backend})");
    output::table(&["", "UNGUARDED", &guarded_head], &rows)?;
    output::out(
        "unguarded: read, parse, modify, write in place, no lock (what the Node hooks do today).\n\
         guarded: `tractatus state update` through the library: a lease, the edit run as a \
         command, a fenced atomic commit (temp file, fsync, rename). A write's cost includes \
         waiting for the other sessions' turns.",
    )
}

/// One run: seed the files, start the sessions and a reader, add up what they saw.
async fn one_run(
    root: &Path,
    args: &DemoArgs,
    guarded: bool,
    redis: Option<&str>,
) -> Result<Outcome> {
    session::seed(root)?;
    let exe = std::env::current_exe().map_err(Error::internal)?;
    let stop = Arc::new(AtomicBool::new(false));
    let (reads, torn) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let reader = {
        let (root, stop, reads, torn) =
            (root.to_owned(), stop.clone(), reads.clone(), torn.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for rel in session::FILES {
                    let bytes = std::fs::read(root.join(rel)).unwrap_or_default();
                    reads.fetch_add(1, Ordering::Relaxed);
                    if serde_json::from_slice::<serde_json::Value>(&bytes).is_err() {
                        torn.fetch_add(1, Ordering::Relaxed);
                    }
                }
                // A sampling rate, so the reader does not take a core from the writers.
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let started = Instant::now();
    let mut children = Vec::new();
    for s in 0..args.sessions {
        let mut c = tokio::process::Command::new(&exe);
        c.arg("demo-worker")
            .arg("--dir")
            .arg(root)
            .args([
                "--worker",
                &s.to_string(),
                "--writes",
                &args.writes.to_string(),
            ])
            .env("TRACTATUS_QUIET", "1")
            .env("TRACTATUS_SESSION_ID", format!("demo-session-{s}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Past the deadline the sessions are killed (by their pid) when dropped.
            .kill_on_drop(true);
        if guarded {
            c.arg("--guarded");
        }
        if let Some(r) = redis {
            c.env("TRACTATUS_REDIS", r);
        }
        children.push(
            c.spawn()
                .map_err(|e| Error::internal(format!("cannot start a session: {e}")))?,
        );
    }
    let all = futures_util::future::join_all(children.into_iter().map(|c| c.wait_with_output()));
    let outputs = tokio::time::timeout(RUN_DEADLINE, all).await;
    stop.store(true, Ordering::Relaxed);
    let _ = reader.join();
    let outputs = outputs.map_err(|_| {
        Error::internal(format!(
            "the demo run took over {}s; try fewer --sessions or --writes",
            RUN_DEADLINE.as_secs()
        ))
    })?;
    let mut o = Outcome {
        seconds: started.elapsed().as_secs_f64(),
        reads: reads.load(Ordering::Relaxed),
        torn_reads: torn.load(Ordering::Relaxed),
        ..Outcome::default()
    };
    let mut done = [0u64; 3];
    let mut latencies = Vec::new();
    for out in outputs {
        let out = out.map_err(Error::internal)?;
        let line = String::from_utf8_lossy(&out.stdout);
        let r: session::Report = serde_json::from_str(line.trim()).map_err(|_| {
            Error::internal(format!(
                "a demo session failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        })?;
        for (d, n) in done.iter_mut().zip(r.done) {
            *d += n;
        }
        o.failed += r.failed;
        o.reads += r.reads;
        o.torn_reads += r.torn;
        latencies.extend(r.latency_us);
    }
    for (kind, rel) in session::FILES.iter().enumerate() {
        let text = std::fs::read(root.join(rel)).unwrap_or_default();
        let found = serde_json::from_slice(&text)
            .ok()
            .and_then(|doc| session::count(kind, &doc));
        if found.is_none() {
            o.unparseable_files += 1;
        }
        o.lost += done[kind].saturating_sub(found.unwrap_or(0));
    }
    o.writes = done.iter().sum();
    latencies.sort_unstable();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1);
        latencies.get(i).map_or(0.0, |us| *us as f64 / 1000.0)
    };
    (o.p50_ms, o.p95_ms) = (at(0.50), at(0.95));
    Ok(o)
}
