//! One simulated Tractatus session of `demo`: the three files it writes, the edit it makes to
//! each (the same edit guarded or not), and the worker process that makes them, either as
//! Tractatus' Node hooks do today (read, parse, modify, write in place, no lock) or through
//! the library (`state update` under a lease, committed atomically).

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tractatus_lock::settings::Flags;
use tractatus_lock::state::{Edit, WriteOutcome, to_node_json};
use tractatus_lock::workspace::Workspace;
use tractatus_lock::{AcquireOptions, Error, Identity, Result};

use crate::cli::{DemoEditArgs, DemoWorkerArgs};

/// The files, relative to the scratch repository, in the order the edits take turns.
pub const FILES: [&str; 3] = [
    ".claude/session-state.json",
    ".claude/metrics/hooks-metrics.json",
    ".claude/instruction-history.json",
];
/// Instructions in the seeded history.
pub const SEEDED_INSTRUCTIONS: usize = 100;
/// Entries the hook-metrics ring keeps.
const RING: usize = 50;
const QUADRANTS: [&str; 4] = ["STRATEGIC", "OPERATIONAL", "TACTICAL", "SYSTEM"];

/// Write the three files as a fresh Tractatus checkout has them.
pub fn seed(root: &Path) -> Result<()> {
    let instructions: Vec<Value> = (1..=SEEDED_INSTRUCTIONS)
        .map(|i| instruction(&format!("inst_{i:03}"), QUADRANTS[i % 4], "2026-10-01-001"))
        .collect();
    let docs = [
        json!({
            "version": "1.0.0",
            "session_id": "2026-10-01-001",
            "started": "2026-10-01T09:00:00.000Z",
            "message_count": 0,
            "token_estimate": 0,
            "last_framework_activity": {
                "ContextPressureMonitor": {"message": 0, "tokens": 0, "last_level": "NORMAL"}
            }
        }),
        json!({
            "hook_executions": [],
            "session_stats": {"total_hook_calls": 0, "total_blocks": 0}
        }),
        json!({
            "version": "3.5",
            "last_updated": "2026-10-01T12:00:00.000Z",
            "description": "Persistent instruction database for Tractatus framework governance",
            "instructions": instructions,
        }),
    ];
    for (rel, doc) in FILES.iter().zip(docs) {
        let path = root.join(rel);
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, to_node_json(&doc) + "\n"));
        written.map_err(|source| Error::CannotWrite { path, source })?;
    }
    Ok(())
}

fn instruction(id: &str, quadrant: &str, session: &str) -> Value {
    json!({
        "id": id,
        "text": format!("{id}: before changing any governance file, check the session state and record the change here, so that a later session can audit why it was made."),
        "timestamp": "2026-10-01T12:00:00.000Z",
        "quadrant": quadrant,
        "persistence": "HIGH",
        "temporal_scope": "PERMANENT",
        "verification_required": "MANDATORY",
        "explicitness": 0.9,
        "source": "user",
        "session_id": session,
        "active": true
    })
}

/// What one file's edits add up to once applied: the counter each edit raises by one.
pub fn count(kind: usize, doc: &Value) -> Option<u64> {
    match kind {
        0 => doc["message_count"].as_u64(),
        1 => doc["session_stats"]["total_hook_calls"].as_u64(),
        _ => doc["instructions"]
            .as_array()
            .map(|a| a.len().saturating_sub(SEEDED_INSTRUCTIONS) as u64),
    }
}

/// The edit session `session` makes, its `seq`th, to file `kind` (an index into [`FILES`]).
fn modify(kind: usize, doc: &mut Value, session: u32, seq: u32) -> Option<()> {
    let now = format!("2026-10-01T12:{:02}:{:02}.000Z", seq / 60 % 60, seq % 60);
    match kind {
        0 => {
            let n = doc["message_count"].as_u64()?;
            doc["message_count"] = json!(n + 1);
            doc["token_estimate"] = json!(doc["token_estimate"].as_u64()? + 1234);
            doc["last_framework_activity"]["ContextPressureMonitor"]["message"] = json!(n + 1);
        }
        1 => {
            let ring = doc["hook_executions"].as_array_mut()?;
            ring.push(json!({"hook": "PreToolUse", "session": session, "seq": seq, "timestamp": now, "duration_ms": 3}));
            let excess = ring.len().saturating_sub(RING);
            ring.drain(..excess);
            let n = doc["session_stats"]["total_hook_calls"].as_u64()?;
            doc["session_stats"]["total_hook_calls"] = json!(n + 1);
        }
        _ => {
            let id = format!("inst_demo_{session}_{seq}");
            let new = instruction(&id, QUADRANTS[seq as usize % 4], &format!("demo-{session}"));
            doc["instructions"].as_array_mut()?.push(new);
            doc["last_updated"] = json!(now);
        }
    }
    Some(())
}

/// What a worker did, printed as one JSON line for `demo` to add up.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// Writes done, per file.
    pub done: [u64; 3],
    /// Writes that failed, nothing written (unguarded: the file did not parse, as a Node hook's
    /// `JSON.parse` throws on a torn file).
    pub failed: u64,
    /// Reads made, and how many of them did not parse.
    pub reads: u64,
    pub torn: u64,
    /// Each write's cost, in microseconds (writes done only).
    pub latency_us: Vec<u64>,
}

/// `demo-worker`: one session's writes, then its [`Report`] on stdout.
pub async fn worker(args: &DemoWorkerArgs) -> Result<i32> {
    let mut report = Report::default();
    let guarded = if args.guarded {
        let env = |k: &str| std::env::var(k).ok();
        let ws = Workspace::discover(&args.dir, &Flags::default(), &env)?;
        let id = Identity::current(format!("tractatus demo session {}", args.session));
        let (coordinator, _) = ws.coordinator(id, false).await?;
        Some((
            ws,
            coordinator,
            std::env::current_exe().map_err(Error::internal)?,
        ))
    } else {
        None
    };
    for seq in 0..args.writes {
        let kind = (seq as usize + args.session as usize) % FILES.len();
        let path = args.dir.join(FILES[kind]);
        let started = Instant::now();
        let ok = match &guarded {
            None => {
                report.reads += 1;
                let bytes = std::fs::read(&path).unwrap_or_default();
                match serde_json::from_slice::<Value>(&bytes) {
                    Ok(mut doc) => {
                        // As a Node hook does: writeFileSync truncates, then writes, in place.
                        modify(kind, &mut doc, args.session, seq).is_some()
                            && std::fs::write(&path, to_node_json(&doc) + "\n").is_ok()
                    }
                    Err(_) => {
                        report.torn += 1;
                        false
                    }
                }
            }
            Some((ws, coordinator, exe)) => {
                let file = ws.state_file(Path::new(FILES[kind]))?;
                let edit = Edit::Update(vec![
                    exe.display().to_string(),
                    "demo-edit".into(),
                    kind.to_string(),
                    args.session.to_string(),
                    seq.to_string(),
                ]);
                let opts = AcquireOptions::wait(Duration::from_secs(30));
                report.reads += 1;
                matches!(
                    file.write(coordinator, &opts, edit).await,
                    Ok(WriteOutcome::Committed { .. })
                )
            }
        };
        if ok {
            report.latency_us.push(started.elapsed().as_micros() as u64);
            report.done[kind] += 1;
        } else {
            report.failed += 1;
        }
    }
    crate::output::out(&serde_json::to_string(&report).map_err(Error::internal)?)?;
    Ok(0)
}

/// `demo-edit`: the edit as a `state update` command: the document on stdin, the new one on
/// stdout.
pub fn edit(args: &DemoEditArgs) -> Result<i32> {
    let mut doc: Value = serde_json::from_reader(std::io::stdin().lock())
        .map_err(|e| Error::bad_data(format!("demo-edit: stdin is not JSON: {e}")))?;
    modify(args.kind, &mut doc, args.session, args.seq)
        .ok_or_else(|| Error::bad_data("demo-edit: the document does not have the demo's shape"))?;
    crate::output::out(&to_node_json(&doc))?;
    Ok(0)
}
