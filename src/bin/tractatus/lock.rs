//! `lock ...`: run a command under locks, and the operator's views (status, break, log).

use std::path::PathBuf;

use tractatus_lock::ops::{AuditEvent, BreakOutcome, LockStatus};
use tractatus_lock::run::{RunOutcome, start_group, supervise_started, supervise_with_env};
use tractatus_lock::settings::Namespace;
use tractatus_lock::stats::StatusReport;
use tractatus_lock::{AcquireOptions, Error, Lease, Result};

use crate::Context;
use crate::cli::LockCommand;
use crate::output::{self, WaitFeedback, format_time, human_duration};
use tractatus_lock::shown::field;

pub async fn run(ctx: &Context, cmd: LockCommand) -> Result<i32> {
    match cmd {
        LockCommand::Run {
            names,
            files,
            slots: Some(slots),
            command,
        } => slot_run(ctx, names, files, slots, command).await,
        LockCommand::Run {
            names,
            files,
            slots: None,
            command,
        } => lock_run(ctx, names, files, command).await,
        LockCommand::Status {
            watch: false,
            interval: _,
        } => status(ctx).await,
        LockCommand::Status {
            watch: true,
            interval,
        } => crate::watch::run(ctx, &interval).await,
        LockCommand::Stats { since, lock } => {
            crate::stats::run(ctx, since.as_deref(), lock.as_deref()).await
        }
        LockCommand::Break { name, force } => lock_break(ctx, &name, force).await,
        LockCommand::Log { limit } => log(ctx, limit).await,
        LockCommand::Init => init(ctx).await,
    }
}

async fn lock_run(
    ctx: &Context,
    mut names: Vec<String>,
    files: Vec<PathBuf>,
    command: Vec<String>,
) -> Result<i32> {
    // The shared file's lock even for a per-session file: CMD is opaque, and may write the
    // shared path itself (a `state` call inside it still finds the session's copy).
    for f in &files {
        names.push(ctx.ws.shared_name(f)?);
    }
    if names.is_empty() {
        return Err(Error::usage(
            "lock run needs at least one --name NAME or --file PATH",
        ));
    }
    for n in &names {
        tractatus_lock::config::check_lock_name(n)?;
    }
    let coordinator = ctx.coordinator().await?;
    // The command's group and its guard start while the locks are acquired, not inside them.
    let group = start_group(&coordinator, &names, ctx.ws.resolved().kill_grace).await?;
    // Session registry (issue 12): this run keeps its session active until it returns.
    let _active = crate::session::keep_active(ctx);
    // One terminal line per lock waited for, wiped before the next one starts.
    let mut feedback: Option<WaitFeedback> = None;
    let got = coordinator
        .acquire_all(&names, ctx.ws.resolved().wait, |name| {
            if let Some(f) = feedback.take() {
                f.finish();
            }
            let f = WaitFeedback::start(&format!("lock '{name}'"), !coordinator.is_local());
            let progress = f.progress();
            feedback = Some(f);
            Some(progress)
        })
        .await;
    if let Some(f) = feedback.take() {
        f.finish();
    }
    let leases = match got {
        Ok(l) => l,
        Err(e) => {
            group.abandon().await;
            return Err(e);
        }
    };
    let outcome = supervise_started(
        group,
        &leases,
        // Session registry (issue 12): no made-up session where it would pick per-session files.
        &crate::session::for_command(ctx, coordinator.identity()),
        &command,
        ctx.ws.resolved().kill_grace,
    )
    .await;
    finish_run(leases, outcome).await
}

/// `lock run --name NAME --slots N`: hold one of the N slots of NAME (see
/// `tractatus_lock::slots`), the command told which in `TRACTATUS_SLOT`.
async fn slot_run(
    ctx: &Context,
    names: Vec<String>,
    files: Vec<PathBuf>,
    slots: u32,
    command: Vec<String>,
) -> Result<i32> {
    let (Some(name), 1, true) = (names.first(), names.len(), files.is_empty()) else {
        return Err(Error::usage(
            "--slots takes exactly one --name NAME (and no --file)",
        ));
    };
    tractatus_lock::config::check_lock_name(name)?;
    tractatus_lock::slots::check_slots(slots)?;
    let coordinator = ctx.coordinator().await?;
    // Session registry (issue 12): this run keeps its session active until it returns.
    let _active = crate::session::keep_active(ctx);
    let feedback = WaitFeedback::start(
        &format!("one of the {slots} slots of '{name}'"),
        !coordinator.is_local(),
    );
    let opts = AcquireOptions {
        wait: ctx.ws.resolved().wait,
        progress: Some(feedback.progress()),
        ..AcquireOptions::default()
    };
    let got = coordinator.acquire_slot(name, slots, &opts).await;
    feedback.finish();
    let (slot, mut lease) = got?;
    lease.keep_alive(coordinator.config().max_hold);
    let leases = vec![lease];
    let outcome = supervise_with_env(
        &leases,
        &crate::session::for_command(ctx, coordinator.identity()),
        &command,
        ctx.ws.resolved().kill_grace,
        &[("TRACTATUS_SLOT", slot.to_string())],
    )
    .await;
    finish_run(leases, outcome).await
}

/// Release what a run held (newest first) and turn the run's outcome into the exit code.
async fn finish_run(leases: Vec<Lease>, outcome: Result<RunOutcome>) -> Result<i32> {
    let mut lost_at_release = None;
    for l in leases.into_iter().rev() {
        if let Err(e @ Error::LeaseLost { .. }) = l.release().await {
            lost_at_release.get_or_insert(e);
        }
    }
    match outcome? {
        // The command ran, but its lock was gone by the end: its writes were not all guarded.
        RunOutcome::Exited(code) => match lost_at_release {
            Some(Error::LeaseLost { name, reason }) => Err(Error::LeaseLost {
                name,
                reason: format!("{reason}; the command had exited ({code})"),
            }),
            _ => Ok(code),
        },
        RunOutcome::LeaseLost { name, reason } => Err(Error::LeaseLost { name, reason }),
    }
}

async fn status(ctx: &Context) -> Result<i32> {
    // One shape for `--json` and Node's `lockStatus()` (tractatus_lock::stats::StatusReport).
    let (report, notice) = ctx
        .ws
        .status_report(ctx.identity(), ctx.allow_network_fs)
        .await?;
    ctx.notice(notice);
    if ctx.json {
        output::json(&report)?;
        return Ok(0);
    }
    let StatusReport {
        namespace, locks, ..
    } = report;
    if locks.is_empty() {
        match (&namespace, &ctx.ws.resolved().namespace) {
            (Some(ns), Namespace::Default) => output::out(&format!(
                "no locks held in namespace {ns} (the namespace shared outside any repository)"
            ))?,
            (Some(ns), _) => output::out(&format!("no locks held in namespace {ns}"))?,
            (None, _) => output::out(
                "no locks held: nothing has been locked in this repository yet (its namespace \
                 is written to .claude/tractatus-lock.toml by the first lock)",
            )?,
        }
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = locks.iter().map(|l| status_row(l, true)).collect();
    output::table(
        &[
            "LOCK", "SESSION", "HOST", "PID", "HELD", "TTL", "TOKEN", "WAITERS", "STATE", "COMMAND",
        ],
        &rows,
    )?;
    slot_summary(&locks)?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    for l in locks.iter().filter(|l| !l.queue.is_empty()) {
        output::out(&format!("\nqueue of {}:", field(&l.name)))?;
        for (i, w) in l.queue.iter().enumerate() {
            // Issue 24: what the waiter's tree holds while it waits (its wait-for edge).
            let edge = l
                .edges
                .iter()
                .find(|e| e.session == w.session && e.host == w.host && e.pid == w.pid);
            output::out(&format!(
                "  {}. session {} on {} pid {}, waiting {}{}",
                i + 1,
                field(&w.session),
                field(&w.host),
                w.pid,
                human_duration(now_ms.saturating_sub(w.since_ms)),
                edge.map(holding_text).unwrap_or_default()
            ))?;
        }
    }
    // Local locks keep no queue: their waiters that hold other locks are listed by their edges.
    for l in locks
        .iter()
        .filter(|l| l.queue.is_empty() && !l.edges.is_empty())
    {
        output::out(&format!("\nwaiting for {}:", field(&l.name)))?;
        for e in &l.edges {
            output::out(&format!(
                "  session {} on {} pid {}{}",
                field(&e.session),
                field(&e.host),
                e.pid,
                holding_text(e)
            ))?;
        }
    }
    Ok(0)
}

/// One held lock as a row of the status table (`lock status`, and `--watch` without the token
/// column): LOCK, SESSION, HOST, PID, HELD, TTL, (TOKEN,) WAITERS, STATE, COMMAND.
pub(crate) fn status_row(l: &LockStatus, with_token: bool) -> Vec<String> {
    let mut row = vec![
        l.name.clone(),
        l.session.clone(),
        l.host.clone(),
        l.pid.to_string(),
        human_duration(l.held_ms),
        l.ttl_left_ms
            .map(human_duration)
            .unwrap_or_else(|| "-".into()),
    ];
    if with_token {
        row.push(l.token.to_string());
    }
    row.push(l.waiters.to_string());
    row.push(if l.stale {
        "stale".into()
    } else {
        String::new()
    });
    row.push(l.command.clone());
    row
}

/// ", holding 'x' (token N), ..." for a waiter's wait-for edge.
fn holding_text(e: &tractatus_lock::deadlock::Edge) -> String {
    let held: Vec<String> = e
        .holding
        .iter()
        .map(|h| format!("'{}' (token {})", field(&h.name), h.token))
        .collect();
    format!(", holding {}", held.join(", "))
}

/// One line per slot set: which of its slots are held (each is a row of the table).
fn slot_summary(locks: &[LockStatus]) -> Result<()> {
    let mut sets: std::collections::BTreeMap<&str, Vec<u32>> = Default::default();
    for l in locks {
        if let (Some(set), Some(i)) = (&l.slot_of, l.slot) {
            sets.entry(set.as_str()).or_default().push(i);
        }
    }
    for (set, mut held) in sets {
        held.sort_unstable();
        let list: Vec<String> = held.iter().map(u32::to_string).collect();
        output::out(&format!(
            "\nslots of {}: {} held ({})",
            field(set),
            held.len(),
            list.join(", ")
        ))?;
    }
    Ok(())
}

async fn lock_break(ctx: &Context, name: &str, force: bool) -> Result<i32> {
    tractatus_lock::slots::check_lock_or_slot_name(name)?;
    if !force {
        return Err(Error::usage(format!(
            "refusing to break '{name}' without --force: if its holder still runs, two writers \
             would hold it at once"
        )));
    }
    let outcome = match ctx.observer().await? {
        Some(c) => c.break_lock(name).await?,
        None => BreakOutcome::NotHeld,
    };
    let broken = outcome == BreakOutcome::Broken;
    let changed = outcome == BreakOutcome::ChangedHands;
    if ctx.json {
        output::json(&serde_json::json!({
            "name": name,
            "broken": broken,
            "changed_hands": changed,
        }))?;
    } else if broken {
        output::out(&format!("broke lock '{name}' (recorded in the audit log)"))?;
    } else if changed {
        output::out(&format!(
            "lock '{name}' changed hands while it was being broken: the holder it found had \
             already released it or expired, and the new holder keeps it; nothing broken \
             (break again to end the new holder's lease)"
        ))?;
    } else {
        output::out(&format!("lock '{name}' was not held; nothing broken"))?;
    }
    Ok(0)
}

async fn log(ctx: &Context, limit: usize) -> Result<i32> {
    let events: Vec<AuditEvent> = match ctx.observer().await? {
        Some(c) => c.log(limit).await?,
        None => Vec::new(),
    };
    if ctx.json {
        output::json(&events)?;
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                format_time(e.at_ms),
                e.event.clone(),
                e.name.clone(),
                e.token.to_string(),
                e.session.clone(),
                e.host.clone(),
                e.pid.to_string(),
                e.by.clone().unwrap_or_default(),
            ]
        })
        .collect();
    output::table(
        &[
            "TIME (UTC)",
            "EVENT",
            "LOCK",
            "TOKEN",
            "SESSION",
            "HOST",
            "PID",
            "BY",
        ],
        &rows,
    )?;
    Ok(0)
}

/// `lock init`: mark every configured Redis as brand-new for its current run.
async fn init(ctx: &Context) -> Result<i32> {
    let coordinator = ctx.coordinator().await?;
    let marked = coordinator.mark_initialized().await?;
    if ctx.json {
        output::json(&serde_json::json!({ "marked": marked }))?;
    } else if marked == 0 {
        output::out("local locks: there is no Redis to mark")?;
    } else {
        // What the mark changes: no restart quarantine for a lock the server does not know.
        let said = if marked == 1 {
            "marked 1 Redis server as brand-new: a lock it does not know is granted at once, \
             without waiting out the restart quarantine, until it next restarts"
                .to_owned()
        } else {
            format!(
                "marked {marked} Redis servers as brand-new: a lock they do not know is granted \
                 at once, without waiting out the restart quarantine, until they next restart"
            )
        };
        output::out(&said)?;
    }
    Ok(0)
}
