//! The adapter: every call this binding makes into the `tractatus_lock` library is in this
//! module (this file: settings, errors, the shared connections and the session and status
//! calls; `write`: the state-file calls; `held`: `withLock`'s leases), so that a change of the
//! library's API is a change here only. Configuration is
//! resolved and the backend chosen by the library's `Workspace`, exactly as the CLI does.
//! A document crosses to JavaScript as the file's own text and comes back as the text to
//! commit, so it is parsed once, by `JSON.parse`. A call made inside `withLock` on a file whose
//! lock it holds joins that lease (`Leases`) instead of waiting for it. A call carrying a
//! session (the `session` option or `TRACTATUS_SESSION_ID`) writes that session's copy of a
//! per-session file, and tells the session registry it is active, at the same time as its own
//! work (`touch`).

mod held;
mod write;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use tractatus_lock::session::{Sessions, check_session_id};
use tractatus_lock::settings::Flags;
use tractatus_lock::state::WriteOutcome;
use tractatus_lock::workspace::Workspace;
use tractatus_lock::{AcquireOptions, Coordinator, Error, Identity, Lease};

pub use held::{Held, acquire};
pub use write::{EditSpec, Pending, begin, begin_under, read, write, write_under};

/// Where and how one call runs: the library's own [`Flags`] (what the CLI's flags and the
/// config file also fill), and what only the addon has.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The directory the call runs from (the repository is found above it).
    pub cwd: PathBuf,
    /// The settings, as the CLI's flags give them.
    pub flags: Flags,
    /// The CLI's `--allow-network-fs`.
    pub allow_network_fs: bool,
    /// What the enclosing `withLock` scopes hold: a wait records it as its wait-for edge.
    pub holding: Vec<tractatus_lock::Holding>,
}

/// A library error as JavaScript sees it: a stable code, the CLI's exit code, one line.
#[derive(Debug, Clone)]
pub struct Failure {
    pub code: &'static str,
    pub exit_code: i32,
    pub message: String,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::Conflict { .. } => "CONFLICT",
            e if e.is_deadlock() => "DEADLOCK",
            e if e.is_held() => "HELD",
            e if e.is_unavailable() => "UNAVAILABLE",
            e if e.is_lease_lost() => "LEASE_LOST",
            e if e.is_bad_data() => "BAD_DATA",
            Error::Usage { .. } => "USAGE",
            Error::CannotWrite { .. } | Error::CannotRead { .. } => "CANNOT_WRITE",
            _ => "INTERNAL",
        };
        Failure {
            code,
            exit_code: e.exit_code(),
            message: e.to_string().replace('\n', " "),
        }
    }
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Self {
        Failure::from(Error::usage(message.into()))
    }

    fn bad_data(message: impl Into<String>) -> Self {
        Failure::from(Error::bad_data(message.into()))
    }
}

pub type Out<T> = std::result::Result<T, Failure>;

/// How a write ended, for JavaScript.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub committed: bool,
    pub unchanged: bool,
    pub token: u64,
}

fn outcome(o: WriteOutcome) -> Out<Outcome> {
    match o {
        WriteOutcome::Committed { token, .. } => Ok(Outcome {
            committed: true,
            unchanged: false,
            token,
        }),
        WriteOutcome::Unchanged { token } => Ok(Outcome {
            committed: false,
            unchanged: true,
            token,
        }),
        WriteOutcome::Aborted { code } => Err(Failure::usage(format!(
            "internal: an in-memory edit reported a command exit {code}"
        ))),
    }
}

fn discover(s: &Settings) -> Out<Workspace> {
    Ok(Workspace::discover(&s.cwd, &s.flags, &|k| {
        std::env::var(k).ok()
    })?)
}

/// What a call needs: its workspace, a coordinator and the wait budget.
struct Opened {
    workspace: Workspace,
    coordinator: Coordinator,
    acquire: AcquireOptions,
    notice: Option<String>,
}

/// Coordinators by configuration: a hook making several calls, even at once, connects once.
/// Their sockets live on the addon's runtime threads, which never keep Node's event loop alive.
type Slot = Arc<tokio::sync::OnceCell<Coordinator>>;

fn slot(key: String) -> Slot {
    static CACHE: OnceLock<Mutex<HashMap<String, Slot>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    match cache.lock() {
        Ok(mut m) => m.entry(key).or_default().clone(),
        // A panic elsewhere poisoned it: connect without sharing rather than fail.
        Err(_) => Slot::default(),
    }
}

/// This process as a lock holder sees it: `node script.js …`, passwords masked.
fn command_line() -> String {
    let words: Vec<String> = std::env::args()
        .map(|w| {
            if w.contains("://") {
                tractatus_lock::config::redact(&w)
            } else {
                w
            }
        })
        .collect();
    words.join(" ").chars().take(300).collect()
}

async fn open(s: &Settings) -> Out<Opened> {
    let workspace = discover(s)?;
    let resolved = workspace.resolved();
    let mut identity = Identity::current(command_line());
    // Without TRACTATUS_SESSION_ID the library makes a fresh id per identity; one process is
    // one session, so its first id is kept for every later call.
    static PROCESS_SESSION: OnceLock<String> = OnceLock::new();
    let from_env = std::env::var("TRACTATUS_SESSION_ID").is_ok_and(|v| !v.trim().is_empty());
    if let Some(session) = &s.flags.session {
        identity.session = session.clone();
    } else if !from_env {
        identity.session = PROCESS_SESSION
            .get_or_init(|| identity.session.clone())
            .clone();
    }
    let key = format!(
        "{:?}|{:?}|{:?}|{}|{}",
        (
            &s.flags.redis,
            [
                "TRACTATUS_REDIS_USERNAME",
                "TRACTATUS_REDIS_PASSWORD",
                "TRACTATUS_REDIS_PASSWORD_FILE",
                "TRACTATUS_SENTINEL_USERNAME",
                "TRACTATUS_SENTINEL_PASSWORD",
                "TRACTATUS_SENTINEL_PASSWORD_FILE"
            ]
            .map(|k| std::env::var(k).ok())
        ),
        resolved.config,
        workspace.root(),
        identity.session,
        s.allow_network_fs
    );
    let acquire = AcquireOptions {
        holding: s.holding.clone(),
        ..AcquireOptions::wait(resolved.wait)
    };
    let mut notice = None;
    let cell = slot(key.clone());
    let connect = cell.get_or_try_init(|| async {
        let (c, n) = workspace.coordinator(identity, s.allow_network_fs).await?;
        notice = n;
        Ok::<_, Error>(c)
    });
    touch(&workspace, key);
    let coordinator = connect.await?.clone();
    Ok(Opened {
        workspace,
        coordinator,
        acquire,
        notice,
    })
}

/// Registries by configuration, like the coordinators: one connection per process.
fn registry(workspace: &Workspace, key: String) -> Out<Arc<Sessions>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Sessions>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(found) = cache.lock().ok().and_then(|m| m.get(&key).cloned()) {
        return Ok(found);
    }
    let made = Arc::new(workspace.sessions()?);
    if let Ok(mut m) = cache.lock() {
        m.insert(key, made.clone());
    }
    Ok(made)
}

/// Tell the registry, on the side, that this call's session is active: a task of the addon's
/// runtime, never awaited, so it costs the call nothing (a hook that exits within a round trip
/// of its last call may leave it unsent: the registry is advisory). Nothing when the call
/// carries no session, or one that could not name a directory.
fn touch(workspace: &Workspace, key: String) {
    let Some(id) = workspace
        .session()
        .filter(|id| check_session_id(id).is_ok())
    else {
        return;
    };
    if let Ok(sessions) = registry(workspace, key) {
        let (id, command) = (id.to_owned(), command_line());
        tokio::spawn(async move {
            let _ = sessions.touch(&id, &command).await;
        });
    }
}

/// Where `file` lives for the session of `s` (its own copy when the file is per-session).
pub fn state_path(s: &Settings, file: &str) -> Out<String> {
    let path = discover(s)?.state_path(Path::new(file))?;
    Ok(path.display().to_string())
}

/// Register session `id` (a fresh one when `None`) as live, then collect the directories of
/// sessions inactive for a day, as `tractatus session start` does; the id.
pub async fn session_start(s: &Settings, id: Option<String>) -> Out<String> {
    let workspace = discover(s)?;
    let id = id.unwrap_or_else(tractatus_lock::holder::new_session_id);
    let sessions = workspace.sessions()?;
    sessions.start(&id, &command_line()).await?;
    // Cleanup is a courtesy, but a planted link where our sessions directory should be is
    // refused aloud, as the CLI does (73); the registration stands.
    let per_session = &workspace.resolved().per_session;
    let locks = || async {
        let identity = Identity::current(command_line());
        let (c, _notice) = workspace.coordinator(identity, s.allow_network_fs).await?;
        Ok(c)
    };
    match sessions
        .gc(
            std::time::Duration::from_secs(24 * 3600),
            per_session,
            locks,
        )
        .await
    {
        Err(e) if e.is_refused() => Err(e.into()),
        _ => Ok(id),
    }
}

/// Who holds what now, as `tractatus lock status --json` prints it (JSON text: JavaScript
/// parses it). Looks only: nothing is set up in a repository that never locked.
pub async fn lock_status(s: &Settings) -> Out<String> {
    let workspace = discover(s)?;
    let (report, _notice) = workspace
        .status_report(Identity::current(command_line()), s.allow_network_fs)
        .await?;
    serde_json::to_string(&report)
        .map_err(|e| Failure::from(Error::internal(format!("lock status: {e}"))))
}

/// A `withLock`'s leases, shared with the writes that join them; `None` once released. A joined
/// write holds a read guard while it joins and while it commits, so the release waits for
/// those, and nothing joined commits after it.
pub type Leases = Arc<tokio::sync::RwLock<Option<Vec<Lease>>>>;

fn ended(name: &str) -> Failure {
    Failure::from(Error::LeaseLost {
        name: name.to_owned(),
        reason: "the withLock this call joined has ended; nothing written".to_owned(),
    })
}
