//! `tractatus`: the command line. Parses flags, resolves settings, calls the library, and
//! turns the result into an exit code (SPEC's table; never 2, which blocks a Claude Code hook).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use tokio::sync::watch;
use tractatus_lock::error::{Error, Result};
use tractatus_lock::lease::WaitProgress;
use tractatus_lock::ops::{AuditEvent, LockStatus};
use tractatus_lock::run::{RunOutcome, supervise};
use tractatus_lock::settings::{Flags, Resolved, resolve};
use tractatus_lock::state::{Edit, StateFile, WriteOutcome};
use tractatus_lock::{AcquireOptions, Coordinator, HolderInfo, Identity, Lease, repo};

#[derive(Parser, Debug)]
#[command(
    name = "tractatus",
    version,
    about = "Leases on Redis for the JSON state files of a repository, with fencing tokens"
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct GlobalArgs {
    /// Redis URL (repeat for Redlock over 3+ masters). Env: TRACTATUS_REDIS (comma-separated).
    #[arg(long = "redis", value_name = "URL", global = true)]
    redis: Vec<String>,
    /// Namespace of the locks (default: from .claude/tractatus-lock.toml). Env: TRACTATUS_NAMESPACE.
    #[arg(long, value_name = "NS", global = true)]
    namespace: Option<String>,
    /// Print one JSON document on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// Lease TTL, like 10s (default 10s). Env: TRACTATUS_TTL.
    #[arg(long, value_name = "DUR", global = true)]
    ttl: Option<String>,
    /// Longest wait for a held lock, like 30s; 0 tries once (default 30s). Env: TRACTATUS_WAIT.
    #[arg(long, value_name = "DUR", global = true)]
    wait: Option<String>,
    /// Longest one holder may keep renewing a lease (default 1h). Env: TRACTATUS_MAX_HOLD.
    #[arg(long, value_name = "DUR", global = true)]
    max_hold: Option<String>,
    /// Deadline of one operation on one Redis node (default 250ms or ttl/10, the lower; at most ttl/3).
    #[arg(long, value_name = "DUR", global = true)]
    node_timeout: Option<String>,
    /// Deadline to connect to Redis (default 1s). Env: TRACTATUS_CONNECT_TIMEOUT.
    #[arg(long, value_name = "DUR", global = true)]
    connect_timeout: Option<String>,
    /// Time between SIGTERM and SIGKILL when a lease is lost under `lock run` (default 5s).
    #[arg(long, value_name = "DUR", global = true)]
    kill_grace: Option<String>,
    /// Use local file locks even on a network filesystem (they do not protect other machines).
    #[arg(long, global = true)]
    allow_network_fs: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run commands under locks, and look at them.
    #[command(subcommand)]
    Lock(LockCommand),
    /// Read and write JSON state files under their lock, committed atomically.
    #[command(subcommand)]
    State(StateCommand),
    /// Session ids.
    #[command(subcommand)]
    Session(SessionCommand),
}

#[derive(Subcommand, Debug)]
enum LockCommand {
    /// Run CMD while holding the named locks (taken in sorted order, renewed, released on exit).
    Run {
        /// Lock name (repeatable).
        #[arg(long = "name", value_name = "NAME")]
        names: Vec<String>,
        /// Lock named after a file: its path relative to the repository root (repeatable).
        #[arg(long = "file", value_name = "PATH")]
        files: Vec<PathBuf>,
        /// The command and its arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// List every held lock: holder, host, pid, age, TTL left, token, waiters.
    Status,
    /// Release a lock whoever holds it (recorded in the audit log).
    Break {
        /// The lock to break.
        name: String,
        /// Required: breaking a lock lets two writers in at once if its holder still runs.
        #[arg(long)]
        force: bool,
    },
    /// Show the audit trail: grants, releases, expiries, takeovers, breaks.
    Log {
        /// How many events, newest last.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

#[derive(Subcommand, Debug)]
enum StateCommand {
    /// Pipe FILE's JSON through CMD (stdin) and commit CMD's stdout as the new document.
    Update {
        /// The state file.
        file: PathBuf,
        /// The command and its arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Apply an RFC 7396 JSON merge patch.
    Merge {
        /// The state file.
        file: PathBuf,
        /// The patch.
        #[arg(value_name = "JSON", allow_hyphen_values = true)]
        patch: String,
    },
    /// Push JSON onto the array at an RFC 6901 pointer.
    Append {
        /// The state file.
        file: PathBuf,
        /// Where the array is, like /instructions.
        pointer: String,
        /// The value to push.
        #[arg(value_name = "JSON", allow_hyphen_values = true)]
        value: String,
    },
    /// Replace or insert the value at an RFC 6901 pointer.
    Set {
        /// The state file.
        file: PathBuf,
        /// Where, like /session_id.
        pointer: String,
        /// The value.
        #[arg(value_name = "JSON", allow_hyphen_values = true)]
        value: String,
    },
    /// Print the document (or the value at POINTER), read under the lock.
    Get {
        /// The state file.
        file: PathBuf,
        /// Where, like /instructions/0.
        pointer: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum SessionCommand {
    /// Print a fresh session id (a UUID v7).
    New,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                // Asked for: success. Help shown because a subcommand is missing: a usage error.
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
                _ => 64,
            };
            if code == 0 {
                let _ = e.print();
            } else {
                // One line (hooks read stderr as one reason). clap quotes the offending word,
                // which may be a URL with a password in it.
                let text = e.to_string();
                // clap's first paragraph (before "Usage:"), on one line.
                let first = if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    "a subcommand is missing".to_owned()
                } else {
                    text.trim_start()
                        .lines()
                        .take_while(|l| !l.trim().is_empty())
                        .map(str::trim)
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                let first = first.trim_start_matches("error: ");
                eprintln!("tractatus: {} (see tractatus --help)", redact_words(first));
            }
            return ExitCode::from(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&Error::Internal(format!("cannot start runtime: {e}"))),
    };
    let result = runtime.block_on(dispatch(cli));
    // Do not wait for a thread still blocked in flock() after a local-lock wait gave up.
    runtime.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(70)),
        Err(e) => fail(&e),
    }
}

fn fail(e: &Error) -> ExitCode {
    eprintln!("tractatus: {e}");
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(70))
}

struct Context {
    root: Option<PathBuf>,
    cwd: PathBuf,
    resolved: Resolved,
    json: bool,
    allow_network_fs: bool,
}

async fn dispatch(cli: Cli) -> Result<i32> {
    if let Command::Session(SessionCommand::New) = cli.command {
        let id = tractatus_lock::holder::new_session_id();
        if cli.global.json {
            println!("{}", serde_json::json!({ "session": id }));
        } else {
            println!("{id}");
        }
        return Ok(0);
    }
    let cwd = std::env::current_dir()
        .map_err(|e| Error::Internal(format!("no current directory: {e}")))?;
    let root = repo::find_root(&cwd);
    let g = &cli.global;
    let flags = Flags {
        redis: g.redis.clone(),
        namespace: g.namespace.clone(),
        ttl: g.ttl.clone(),
        wait: g.wait.clone(),
        max_hold: g.max_hold.clone(),
        node_timeout: g.node_timeout.clone(),
        connect_timeout: g.connect_timeout.clone(),
        kill_grace: g.kill_grace.clone(),
    };
    let resolved = resolve(&flags, &|k| std::env::var(k).ok(), root.as_deref())?;
    let ctx = Context {
        root,
        cwd,
        resolved,
        json: g.json,
        allow_network_fs: g.allow_network_fs,
    };
    match cli.command {
        Command::Lock(LockCommand::Run {
            names,
            files,
            command,
        }) => lock_run(&ctx, names, files, command).await,
        Command::Lock(LockCommand::Status) => lock_status(&ctx).await,
        Command::Lock(LockCommand::Break { name, force }) => lock_break(&ctx, &name, force).await,
        Command::Lock(LockCommand::Log { limit }) => lock_log(&ctx, limit).await,
        Command::State(cmd) => state(&ctx, cmd).await,
        Command::Session(SessionCommand::New) => Ok(0),
    }
}

/// `text` with the password of every URL in it masked.
fn redact_words(text: &str) -> String {
    text.split(' ')
        .map(|w| {
            if w.contains("://") {
                tractatus_lock::config::redact(w)
            } else {
                w.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// This process's command line for `lock status`, with any password in a URL masked.
fn command_line() -> String {
    let words: Vec<String> = std::env::args().map(|w| redact_words(&w)).collect();
    let line = words.join(" ");
    line.chars().take(300).collect()
}

/// Connect to Redis, or set up local locks (refused on a network filesystem).
async fn coordinator(ctx: &Context) -> Result<Coordinator> {
    let identity = Identity::current(command_line());
    let config = ctx.resolved.config.clone();
    if !config.nodes.is_empty() {
        return Coordinator::connect(config, identity).await;
    }
    let root = ctx.root.as_deref().ok_or_else(|| {
        Error::Usage(
            "no Redis configured (--redis or TRACTATUS_REDIS) and no repository here (no .git or \
             .claude above this directory) to keep local locks in"
                .into(),
        )
    })?;
    if let Some(fs) = tractatus_lock::local::network_filesystem(root)
        && !ctx.allow_network_fs
    {
        return Err(Error::Unavailable {
            reachable: 0,
            total: 1,
            needed: 1,
            causes: vec![(
                "local locks".into(),
                format!(
                    "{} is on a network filesystem ({fs}); OS file locks there do not \
                         protect other machines: configure Redis (--redis or TRACTATUS_REDIS), \
                         or pass --allow-network-fs if only this machine writes",
                    root.display()
                ),
            )],
        });
    }
    eprintln!(
        "tractatus: no Redis configured; using local file locks (protects this machine only)"
    );
    let dir = repo::work_dir(root)?.join("locks");
    Coordinator::local(config, identity, dir)
}

/// While waiting on a terminal, one stderr line updated in place names the holder.
struct WaitFeedback {
    progress: WaitProgress,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl WaitFeedback {
    fn start(what: &str) -> Self {
        let (tx, mut rx) = watch::channel::<Option<HolderInfo>>(None);
        let task = std::io::stderr().is_terminal().then(|| {
            let what = what.to_owned();
            tokio::spawn(async move {
                let started = Instant::now();
                let mut shown = false;
                loop {
                    let _ = tokio::time::timeout(Duration::from_millis(250), rx.changed()).await;
                    let line = rx.borrow().as_ref().map(|h| {
                        format!(
                            "\rtractatus: waiting {:.1}s for {what}: held by session {} on {} pid {} for {:.1}s\x1b[K",
                            started.elapsed().as_secs_f64(),
                            h.session,
                            h.host,
                            h.pid,
                            h.held_for().as_secs_f64()
                        )
                    });
                    if let Some(line) = line {
                        let mut err = std::io::stderr();
                        let _ = err.write_all(line.as_bytes());
                        let _ = err.flush();
                        shown = true;
                    } else if shown {
                        // Acquired: wipe the line before the work starts writing.
                        let _ = std::io::stderr().write_all(b"\r\x1b[K");
                        break;
                    }
                }
            })
        });
        WaitFeedback { progress: tx, task }
    }

    fn options(&self, wait: Duration) -> AcquireOptions {
        AcquireOptions {
            wait,
            progress: Some(self.progress.clone()),
        }
    }

    fn finish(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = std::io::stderr().write_all(b"\r\x1b[K");
        }
    }
}

/// Acquire every name (sorted, deduplicated) within one shared wait budget, renewing each one
/// from the moment it is taken (a long wait for the next name must not let it expire); on
/// failure release the ones already taken.
async fn acquire_all(
    coordinator: &Coordinator,
    mut names: Vec<String>,
    wait: Duration,
) -> Result<Vec<Lease>> {
    names.sort();
    names.dedup();
    let started = Instant::now();
    let max_hold = coordinator.config().max_hold;
    let mut leases: Vec<Lease> = Vec::new();
    for name in names {
        let feedback = WaitFeedback::start(&format!("lock '{name}'"));
        let left = wait.saturating_sub(started.elapsed());
        let got = coordinator.acquire(&name, &feedback.options(left)).await;
        feedback.finish();
        match got {
            Ok(mut l) => {
                l.keep_alive(max_hold);
                leases.push(l);
            }
            Err(e) => {
                for l in leases.into_iter().rev() {
                    let _ = l.release().await;
                }
                return Err(e);
            }
        }
    }
    Ok(leases)
}

async fn lock_run(
    ctx: &Context,
    mut names: Vec<String>,
    files: Vec<PathBuf>,
    command: Vec<String>,
) -> Result<i32> {
    for f in &files {
        let root = ctx.root.as_deref().ok_or_else(|| {
            Error::Usage(format!(
                "--file {}: no repository here (no .git or .claude above this directory)",
                f.display()
            ))
        })?;
        names.push(repo::lock_name_for(root, &ctx.cwd, f)?);
    }
    if names.is_empty() {
        return Err(Error::Usage(
            "lock run needs at least one --name NAME or --file PATH".into(),
        ));
    }
    for n in &names {
        tractatus_lock::config::check_lock_name(n)?;
    }
    let coordinator = coordinator(ctx).await?;
    let leases = acquire_all(&coordinator, names, ctx.resolved.wait).await?;
    let outcome = supervise(
        &leases,
        &coordinator.identity().session,
        &command,
        ctx.resolved.kill_grace,
    )
    .await;
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

fn human_duration(ms: u64) -> String {
    if ms < 10_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 600_000 {
        format!("{}s", ms / 1000)
    } else {
        format!("{}m", ms / 60_000)
    }
}

fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.iter().map(|s| s.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Error::Internal(e.to_string()))?;
    println!("{text}");
    Ok(())
}

async fn lock_status(ctx: &Context) -> Result<i32> {
    let coordinator = coordinator(ctx).await?;
    let locks: Vec<LockStatus> = coordinator.status().await?;
    if ctx.json {
        print_json(&serde_json::json!({
            "namespace": coordinator.config().namespace,
            "backend": if coordinator.is_local() { "local" } else { "redis" },
            "locks": locks,
        }))?;
        return Ok(0);
    }
    if locks.is_empty() {
        println!(
            "no locks held in namespace {}",
            coordinator.config().namespace
        );
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = locks
        .iter()
        .map(|l| {
            vec![
                l.name.clone(),
                l.session.clone(),
                l.host.clone(),
                l.pid.to_string(),
                human_duration(l.held_ms),
                l.ttl_left_ms
                    .map(human_duration)
                    .unwrap_or_else(|| "-".into()),
                l.token.to_string(),
                l.waiters.to_string(),
                if l.stale {
                    "stale".into()
                } else {
                    String::new()
                },
                l.command.clone(),
            ]
        })
        .collect();
    print_table(
        &[
            "LOCK", "SESSION", "HOST", "PID", "HELD", "TTL", "TOKEN", "WAITERS", "STATE", "COMMAND",
        ],
        &rows,
    );
    Ok(0)
}

async fn lock_break(ctx: &Context, name: &str, force: bool) -> Result<i32> {
    tractatus_lock::config::check_lock_name(name)?;
    if !force {
        return Err(Error::Usage(format!(
            "refusing to break '{name}' without --force: if its holder still runs, two writers \
             would hold it at once"
        )));
    }
    let coordinator = coordinator(ctx).await?;
    let broken = coordinator.break_lock(name).await?;
    if ctx.json {
        print_json(&serde_json::json!({ "name": name, "broken": broken }))?;
    } else if broken {
        println!("broke lock '{name}' (recorded in the audit log)");
    } else {
        println!("lock '{name}' was not held; nothing broken");
    }
    Ok(0)
}

async fn lock_log(ctx: &Context, limit: usize) -> Result<i32> {
    let coordinator = coordinator(ctx).await?;
    let events: Vec<AuditEvent> = coordinator.log(limit).await?;
    if ctx.json {
        print_json(&events)?;
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
    print_table(
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
    );
    Ok(0)
}

/// `YYYY-MM-DD HH:MM:SS.mmm` in UTC, from ms since the epoch.
fn format_time(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

async fn state(ctx: &Context, cmd: StateCommand) -> Result<i32> {
    let root = ctx.root.as_deref().ok_or_else(|| {
        Error::Usage("no repository here (no .git or .claude above this directory)".into())
    })?;
    let (path, edit): (&Path, Option<Edit>) = match &cmd {
        StateCommand::Get { file, .. } => (file, None),
        StateCommand::Update { file, command } => (file, Some(Edit::Update(command.clone()))),
        StateCommand::Merge { file, patch } => (file, Some(Edit::merge(patch)?)),
        StateCommand::Append {
            file,
            pointer,
            value,
        } => (file, Some(Edit::append(pointer, value)?)),
        StateCommand::Set {
            file,
            pointer,
            value,
        } => (file, Some(Edit::set(pointer, value)?)),
    };
    let pointer = match &cmd {
        StateCommand::Get {
            pointer: Some(p), ..
        } => Some(tractatus_lock::state::parse_pointer(p)?),
        _ => None,
    };
    let file = StateFile::open(root, &ctx.cwd, path)?;
    let Some(edit) = edit else {
        // No lease: commits are atomic renames. Missing is not bad data (65 asks for a human).
        return Ok(match file.read(pointer.as_ref())? {
            Some(doc) => {
                println!("{}", tractatus_lock::state::to_node_json(&doc));
                0
            }
            None => {
                match &pointer {
                    Some(p) if file.path().exists() => {
                        eprintln!("tractatus: no value at {p} in {}", file.name())
                    }
                    _ => eprintln!("tractatus: {} does not exist", file.name()),
                }
                1
            }
        });
    };
    let coordinator = coordinator(ctx).await?;
    let feedback = WaitFeedback::start(&format!("lock '{}'", file.name()));
    let opts = feedback.options(ctx.resolved.wait);
    let result = file.write(&coordinator, &opts, edit).await.map(|outcome| {
        match outcome {
            WriteOutcome::Committed { token, window } => {
                if ctx.json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "committed": true,
                            "token": token,
                            "window_us": window.as_micros() as u64,
                        })
                    );
                }
                0
            }
            WriteOutcome::Unchanged { token } => {
                if ctx.json {
                    println!(
                        "{}",
                        serde_json::json!({ "committed": false, "unchanged": true, "token": token })
                    );
                }
                0
            }
            WriteOutcome::Aborted { code } => {
                // Passed through, except where it would read as one of our own codes (or
                // as 2, which blocks a Claude Code hook): those become 65.
                let passed = if code == 2 || (64..=78).contains(&code) {
                    65
                } else {
                    code
                };
                eprintln!(
                    "tractatus: the update command exited {code}; nothing written{}",
                    if passed == code {
                        String::new()
                    } else {
                        format!(" (exit {passed}: {code} would read as a tractatus code)")
                    }
                );
                passed
            }
        }
    });
    feedback.finish();
    result
}
