//! `session ...`: session ids, the live registry (start, end, list), cleanup and totals; and
//! the activity that `state` writes and `lock run` report to the registry on the side.

use std::future::Future;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use tractatus_lock::session::{
    Collected, FieldTotals, SessionInfo, Sessions, Stats, check_session_id, session_id_from_hook,
};
use tractatus_lock::{Error, Result};

use crate::Context;
use crate::cli::SessionCommand;
use crate::output::{self, format_time, human_duration};
use tractatus_lock::shown::field;

/// `session new`: a fresh UUID v7.
pub fn new(json: bool) -> Result<i32> {
    let id = tractatus_lock::holder::new_session_id();
    if json {
        output::out(&serde_json::json!({ "session": id }).to_string())?;
    } else {
        output::out(&id)?;
    }
    Ok(0)
}

pub async fn run(ctx: &Context, cmd: SessionCommand) -> Result<i32> {
    match cmd {
        SessionCommand::New => new(ctx.json),
        SessionCommand::Start { id, .. } => start(ctx, id, None).await,
        SessionCommand::End { id } => end(ctx, id).await,
        SessionCommand::List => list(ctx).await,
        SessionCommand::Gc { older_than } => gc(ctx, &older_than).await,
        SessionCommand::Stats { file, fields } => stats(ctx, file, fields).await,
    }
}

/// How long `session start` keeps the directories of inactive sessions.
const START_GC_AFTER: Duration = Duration::from_secs(24 * 3600);

/// `session start --from-hook`'s input: the hook payload read from stdin and passed on to stdout
/// at once, before anything can fail (the settings included: a planted link where the config file
/// should be still leaves a hook chained after this one its input).
pub fn take_hook_payload() -> Result<Vec<u8>> {
    let mut payload = Vec::new();
    std::io::stdin()
        .read_to_end(&mut payload)
        .map_err(|e| Error::bad_data(format!("cannot read the hook payload on stdin: {e}")))?;
    pass_through(&payload)?;
    Ok(payload)
}

/// `session start`: with `payload` (`--from-hook`, already passed through) the id is the
/// payload's, else `id` or a new one.
pub async fn start(ctx: &Context, id: Option<String>, payload: Option<Vec<u8>>) -> Result<i32> {
    let from_hook = payload.is_some();
    let id = if let Some(payload) = payload {
        let id = session_id_from_hook(&payload)?;
        export_to_claude_env(&id)?;
        id
    } else {
        let id = id.unwrap_or_else(tractatus_lock::holder::new_session_id);
        check_session_id(&id)?;
        id
    };
    let sessions = ctx.ws.sessions()?;
    let entry = sessions.start(&id, &ctx.identity().command).await?;
    if !from_hook {
        if ctx.json {
            output::json(&serde_json::json!({ "session": id, "started_ms": entry.started_ms }))?;
        } else {
            output::out(&id)?;
        }
    }
    // Cleanup is a courtesy here: its failure does not undo the registration. A planted link
    // (or FIFO) where our sessions directory should be is no passing failure, though: it is
    // refused with its error and exit code (73), the registration standing.
    let per_session = &ctx.ws.resolved().per_session;
    match sessions
        .gc(START_GC_AFTER, per_session, || copy_locks(ctx))
        .await
    {
        Err(e) if e.is_refused() => return Err(e),
        Ok(c) if !c.removed.is_empty() && !ctx.quiet => output::note(&format!(
            "removed {} inactive session{} (see `tractatus session gc`)",
            c.removed.len(),
            if c.removed.len() == 1 { "" } else { "s" }
        )),
        Ok(_) => {}
        Err(e) => output::note(&format!("session cleanup skipped: {e}")),
    }
    Ok(0)
}

fn pass_through(payload: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(payload)
        .and_then(|()| out.flush())
        .map_err(|source| Error::CannotWrite {
            path: PathBuf::from("stdout"),
            source,
        })
}

/// Claude Code gives a SessionStart hook `CLAUDE_ENV_FILE`, whose `export` lines hold for the
/// session's later shell commands: there, `tractatus` then carries the session on its own.
fn export_to_claude_env(id: &str) -> Result<()> {
    let Some(path) = std::env::var_os("CLAUDE_ENV_FILE").filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    let path = PathBuf::from(path);
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| writeln!(f, "export TRACTATUS_SESSION_ID={id}"))
        .map_err(|source| Error::CannotWrite { path, source })
}

async fn end(ctx: &Context, id: Option<String>) -> Result<i32> {
    let id = id
        .or_else(|| ctx.ws.session().map(str::to_owned))
        .ok_or_else(|| {
            Error::usage("session end: which session? give its id, or set TRACTATUS_SESSION_ID")
        })?;
    check_session_id(&id)?;
    let known = ctx.ws.sessions()?.end(&id).await?;
    if ctx.json {
        output::json(&serde_json::json!({ "session": id, "ended": known, "known": known }))?;
    } else if known {
        output::out(&format!("session {id} ended"))?;
    }
    if known {
        return Ok(0);
    }
    // Like `state get` of something missing: not bad data, just not there (1), and nothing
    // recorded (a made-up end would list a session nobody started).
    output::note(&format!(
        "session {id} is not registered (never started, or collected): nothing changed"
    ));
    Ok(1)
}

fn backend(ctx: &Context) -> &'static str {
    if ctx.ws.resolved().config.nodes.is_empty() {
        "local"
    } else {
        "redis"
    }
}

async fn list(ctx: &Context) -> Result<i32> {
    let all: Vec<SessionInfo> = match ctx.ws.sessions_observer()? {
        Some(s) => s.list().await?,
        None => Vec::new(),
    };
    if ctx.json {
        output::json(&serde_json::json!({
            "backend": backend(ctx),
            "idle_ms": ctx.ws.resolved().session_idle.as_millis() as u64,
            "sessions": all,
        }))?;
        return Ok(0);
    }
    if all.is_empty() {
        output::out("no sessions registered")?;
        return Ok(0);
    }
    let now = now_ms();
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|s| {
            let e = &s.entry;
            vec![
                e.id.clone(),
                e.host.clone(),
                e.pid.to_string(),
                format_time(e.started_ms),
                format!(
                    "{} ago",
                    human_duration(now.saturating_sub(e.last_active_ms))
                ),
                match e.ended_ms {
                    Some(at) => format!("ended {} ago", human_duration(now.saturating_sub(at))),
                    None => s.state.as_str().to_owned(),
                },
            ]
        })
        .collect();
    output::table(
        &[
            "SESSION",
            "HOST",
            "PID",
            "STARTED (UTC)",
            "LAST ACTIVE",
            "STATE",
        ],
        &rows,
    )?;
    Ok(0)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn gc(ctx: &Context, older_than: &str) -> Result<i32> {
    let older_than = tractatus_lock::config::parse_duration(older_than)
        .map_err(|e| Error::usage(format!("--older-than: {e}")))?;
    let per_session = &ctx.ws.resolved().per_session;
    let Collected { removed, busy } = match ctx.ws.sessions_observer()? {
        Some(s) => s.gc(older_than, per_session, || copy_locks(ctx)).await?,
        None => Collected::default(),
    };
    if ctx.json {
        output::json(&serde_json::json!({ "removed": removed, "busy": busy }))?;
        return Ok(0);
    }
    if removed.is_empty() && busy.is_empty() {
        output::out("nothing to remove: no session ended or went silent long enough ago")?;
    }
    for b in &busy {
        output::out(&format!(
            "kept session {} this time: {}",
            field(&b.id),
            field(&b.reason)
        ))?;
    }
    let now = now_ms();
    for r in &removed {
        let since = human_duration(now.saturating_sub(r.inactive_since_ms));
        match &r.dir {
            Some(dir) => output::out(&format!(
                "removed {} ({}, inactive {since})",
                field(dir),
                r.state
            ))?,
            None => output::out(&format!(
                "forgot session {} ({}, inactive {since}; it had no directory)",
                field(&r.id),
                r.state
            ))?,
        }
    }
    Ok(0)
}

/// The coordinator whose locks gc takes on the copies of the sessions it collects: the one
/// every `state` write here uses (its notice about local locks is no news to gc's reader).
async fn copy_locks(ctx: &Context) -> Result<tractatus_lock::Coordinator> {
    let (c, _notice) = ctx
        .ws
        .coordinator(ctx.identity(), ctx.allow_network_fs)
        .await?;
    Ok(c)
}

async fn stats(ctx: &Context, file: Option<PathBuf>, fields: Vec<String>) -> Result<i32> {
    let per_session = &ctx.ws.resolved().per_session;
    let name = match &file {
        Some(f) => ctx.ws.shared_name(f)?,
        None => per_session.first().cloned().ok_or_else(|| {
            Error::usage(format!(
                "no per-session files: list them in {} (per_session = [\".claude/session-state.json\"])",
                tractatus_lock::settings::CONFIG_FILE
            ))
        })?,
    };
    let stats = match ctx.ws.sessions_observer()? {
        Some(s) => s.stats(per_session, &name, &fields).await?,
        // Nothing can be registered yet (a fresh repository on Redis): no session, no totals.
        None => {
            for f in &fields {
                tractatus_lock::state::parse_pointer(f)?;
            }
            let zero = || FieldTotals {
                sum: 0.into(),
                max: None,
                sessions: 0,
            };
            Stats {
                file: name,
                live: 0,
                read: 0,
                fields: fields.iter().map(|f| (f.clone(), zero())).collect(),
            }
        }
    };
    if ctx.json {
        output::json(&stats)?;
        return Ok(0);
    }
    output::out(&format!(
        "{} live session{}, {} with {}",
        stats.live,
        if stats.live == 1 { "" } else { "s" },
        stats.read,
        stats.file
    ))?;
    let rows: Vec<Vec<String>> = stats
        .fields
        .iter()
        .map(|(f, t)| {
            vec![
                f.clone(),
                t.sum.to_string(),
                t.max.as_ref().map_or_else(|| "-".into(), |m| m.to_string()),
                t.sessions.to_string(),
            ]
        })
        .collect();
    output::table(&["FIELD", "SUM", "MAX", "SESSIONS"], &rows)?;
    Ok(0)
}

/// Run `work` while telling the registry, on the side, that this call's session is active.
/// The touch starts first and runs beside the work; when the work is done it gets at most the
/// per-node deadline more (no time at all in the usual case: one round trip, long finished), so
/// a silent Redis master never holds the call up for a connect timeout. Advisory: its failure is
/// nobody's business.
pub async fn with_activity<T>(ctx: &Context, work: impl Future<Output = T>) -> T {
    let touch = session_and_id(ctx).map(|(sessions, id)| {
        let command = ctx.identity().command;
        tokio::spawn(async move {
            let _ = sessions.touch(&id, &command).await;
        })
    });
    let done = work.await;
    if let Some(t) = touch {
        let _ = tokio::time::timeout(ctx.ws.resolved().config.node_timeout, t).await;
    }
    done
}

/// The registry and this call's session id, when it carries one that can be registered.
fn session_and_id(ctx: &Context) -> Option<(Sessions, String)> {
    let id = ctx.ws.session().filter(|id| check_session_id(id).is_ok())?;
    Some((ctx.ws.sessions().ok()?, id.to_owned()))
}

/// The session `lock run` hands its command in `TRACTATUS_SESSION_ID`: the run's own. A run
/// that has none (no `--session`, no `TRACTATUS_SESSION_ID`) holds its locks under a fresh id,
/// which its command gets too, except where per-session files are configured: there a made-up
/// id would send the command's writes to a copy of its own that no session owns, so the command
/// gets an empty one and writes the shared files, as the run would.
pub fn for_command(ctx: &Context, holder: &tractatus_lock::Identity) -> String {
    match ctx.ws.session() {
        None if !ctx.ws.resolved().per_session.is_empty() => String::new(),
        _ => holder.session.clone(),
    }
}

/// While held, this call's session is kept active in the registry (`lock run`: at the start,
/// then every third of the idle time while the command runs).
pub struct Activity(Option<tokio::task::AbortHandle>);

impl Drop for Activity {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

/// Keep this call's session active until the returned guard is dropped.
pub fn keep_active(ctx: &Context) -> Activity {
    let Some((sessions, id)) = session_and_id(ctx) else {
        return Activity(None);
    };
    let command = ctx.identity().command;
    let every = (ctx.ws.resolved().session_idle / 3).max(Duration::from_secs(1));
    let task = tokio::spawn(async move {
        loop {
            let _ = sessions.touch(&id, &command).await;
            tokio::time::sleep(every).await;
        }
    });
    Activity(Some(task.abort_handle()))
}
