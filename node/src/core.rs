//! The adapter: every call this binding makes into the `tractatus_lock` library is in this
//! file, so that a change of the library's API is a change here only. Configuration is
//! resolved and the backend chosen by the library's `Workspace`, exactly as the CLI does.
//! A document crosses to JavaScript as the file's own text and comes back as the text to
//! commit, so it is parsed once, by `JSON.parse`. A call made inside `withLock` on a file whose
//! lock it holds joins that lease (`Leases`) instead of waiting for it. A call carrying a
//! session (the `session` option or `TRACTATUS_SESSION_ID`) writes that session's copy of a
//! per-session file, and tells the session registry it is active, at the same time as its own
//! work (`touch`).
//!
//! Over 500 lines on purpose: it is the one seam between the binding and the library, and
//! splitting it would spread the library's API over several files again.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use futures_util::future::{FutureExt, select_all};
use serde_json::Value;
use tokio::sync::watch;
use tractatus_lock::session::{Sessions, check_session_id};
use tractatus_lock::settings::Flags;
use tractatus_lock::state::{Edit, PendingWrite, StateFile, WriteOutcome, parse_pointer, push};
use tractatus_lock::workspace::Workspace;
use tractatus_lock::{AcquireOptions, Coordinator, Error, Identity, Lease};

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

fn to_text(v: &Value) -> String {
    // Compact: JavaScript parses it.
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned())
}

fn parse_value(text: &str, what: &str) -> Out<Value> {
    serde_json::from_str(text)
        .map_err(|e| Failure::bad_data(format!("{what} is not valid JSON: {e}")))
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

/// A state file read under its lease, waiting for JavaScript's new document.
pub struct Pending {
    write: PendingWrite,
    /// The `withLock` leases this write joined.
    under: Option<Leases>,
}

/// Take `file`'s lease and read it; `parse` builds the document (for `append`), else only its
/// text is kept (for JavaScript).
pub async fn begin(s: &Settings, file: &str, parse: bool) -> Out<(Pending, Option<String>)> {
    let o = open(s).await?;
    let (c, a) = (&o.coordinator, &o.acquire);
    let write = once_more_if_collected(&o.workspace, file, |state| async move {
        if parse {
            state.begin(c, a).await
        } else {
            state.begin_text(c, a).await
        }
    })
    .await?;
    Ok((Pending { write, under: None }, o.notice))
}

/// Run `write` on `file` freshly opened, and once more when its directory was collected after
/// it was opened (`session gc` and a session's copy; [`Error::is_directory_gone`]), as the
/// CLI's `state` does: nothing was written, and the copy is found again (gc put it back) or
/// seeded afresh (gc removed it).
async fn once_more_if_collected<T, F, Fut>(
    workspace: &Workspace,
    file: &str,
    mut write: F,
) -> Result<T, Error>
where
    F: FnMut(StateFile) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let at = workspace.resolve(Path::new(file))?;
    let mut again = true;
    loop {
        let state = workspace.state_file_at(&at)?;
        match write(state).await {
            Err(e) if again && e.is_directory_gone() => again = false,
            done => return done,
        }
    }
}

/// [`begin`] joining `file`'s lease among `leases`; `None` when its lock is not among them.
pub async fn begin_under(
    s: &Settings,
    leases: &Leases,
    file: &str,
    parse: bool,
) -> Out<Option<Pending>> {
    let state = discover(s)?.state_file(Path::new(file))?;
    let held = leases.read().await;
    let Some(lease) = find(held.as_deref(), state.name())? else {
        return Ok(None);
    };
    let write = if parse {
        state.begin_under(lease).await?
    } else {
        state.begin_text_under(lease).await?
    };
    Ok(Some(Pending {
        write,
        under: Some(leases.clone()),
    }))
}

/// The lease named `name` among a `withLock`'s, if any; `LEASE_LOST` once they are released.
fn find<'l>(held: Option<&'l [Lease]>, name: &str) -> Out<Option<&'l Lease>> {
    let held = held.ok_or_else(|| ended(name))?;
    Ok(held.iter().find(|l| l.name() == name))
}

impl Pending {
    /// The document as the file's own text; `None` when the file does not exist yet.
    pub fn document(&self) -> Option<&str> {
        self.write.document_text()
    }

    pub fn token(&self) -> u64 {
        self.write.token()
    }

    /// Commit JavaScript's text as it is (its layout and final newline chosen there);
    /// `CONFLICT` when the file changed meanwhile.
    pub async fn commit(&mut self, text: &str) -> Out<Outcome> {
        let Some(leases) = self.under.clone() else {
            return outcome(self.write.commit_text(text).await?);
        };
        let held = leases.read().await;
        if held.is_none() {
            return Err(ended(self.write.file().name()));
        }
        outcome(self.write.commit_text(text).await?)
    }

    pub fn reload(&mut self) -> Out<()> {
        Ok(self.write.reload()?)
    }

    pub async fn release(self) -> Out<()> {
        Ok(self.write.release().await?)
    }
}

/// Read `file` (or the value at `pointer`) with no lease: JSON text, `None` when absent.
pub fn read(s: &Settings, file: &str, pointer: Option<&str>) -> Out<Option<String>> {
    let workspace = discover(s)?;
    let state = workspace.state_file_to_read(Path::new(file))?;
    let pointer = pointer.map(parse_pointer).transpose()?;
    Ok(state.read(pointer.as_ref())?.as_ref().map(to_text))
}

fn to_edit(spec: &EditSpec) -> Out<Edit> {
    Ok(match spec {
        EditSpec::Set { pointer, json } => Edit::set(pointer, json)?,
        EditSpec::Merge { json } => {
            if !matches!(parse_value(json, "the given patch")?, Value::Object(_)) {
                return Err(Failure::usage(
                    "mergeJson takes an object patch (RFC 7396); use setJson to replace a value",
                ));
            }
            Edit::merge(json)?
        }
        EditSpec::Append { .. } => {
            return Err(Failure::usage("internal: append is not a one-step edit"));
        }
    })
}

/// A write as JavaScript asks for it, its JSON still text.
pub enum EditSpec {
    Set { pointer: String, json: String },
    Merge { json: String },
    /// Push onto the array at `pointer`, keeping its last `keep` entries (a ring).
    Append {
        pointer: String,
        json: String,
        keep: Option<u32>,
    },
}

/// `set`, `merge` or `append`: take `file`'s lease, edit, commit, release.
pub async fn write(s: &Settings, file: &str, spec: EditSpec) -> Out<(Outcome, Option<String>)> {
    match spec {
        EditSpec::Append {
            pointer,
            json,
            keep,
        } => append(s, file, &pointer, &json, keep).await,
        spec => edit(s, file, &spec).await,
    }
}

/// [`write`] under `file`'s lease among `leases`; `None` when its lock is not among them.
pub async fn write_under(
    s: &Settings,
    leases: &Leases,
    file: &str,
    spec: EditSpec,
) -> Out<Option<Outcome>> {
    match spec {
        EditSpec::Append {
            pointer,
            json,
            keep,
        } => append_under(s, leases, file, &pointer, &json, keep).await,
        spec => edit_under(s, leases, file, &spec).await,
    }
}

/// `set` or `merge`, the CLI's own code path (redone once on a conflict).
async fn edit(s: &Settings, file: &str, edit: &EditSpec) -> Out<(Outcome, Option<String>)> {
    let edit = to_edit(edit)?;
    let o = open(s).await?;
    let (c, a) = (&o.coordinator, &o.acquire);
    let done = once_more_if_collected(&o.workspace, file, |state| {
        let edit = edit.clone();
        async move { state.write(c, a, edit).await }
    })
    .await?;
    Ok((outcome(done)?, o.notice))
}

/// [`edit`] under `file`'s lease among `leases`; `None` when its lock is not among them.
async fn edit_under(
    s: &Settings,
    leases: &Leases,
    file: &str,
    edit: &EditSpec,
) -> Out<Option<Outcome>> {
    let edit = to_edit(edit)?;
    let state = discover(s)?.state_file(Path::new(file))?;
    let held = leases.read().await;
    let Some(lease) = find(held.as_deref(), state.name())? else {
        return Ok(None);
    };
    Ok(Some(outcome(state.write_under(lease, edit).await?)?))
}

/// Push `json` onto the array at `pointer`, keeping its last `keep` entries (a ring).
async fn append(
    s: &Settings,
    file: &str,
    pointer: &str,
    json: &str,
    keep: Option<u32>,
) -> Out<(Outcome, Option<String>)> {
    let value = append_value(pointer, json, keep)?;
    let (pending, notice) = begin(s, file, true).await?;
    Ok((
        append_and_release(pending, pointer, value, keep).await?,
        notice,
    ))
}

/// `append` under `file`'s lease among `leases`; `None` when its lock is not among them.
async fn append_under(
    s: &Settings,
    leases: &Leases,
    file: &str,
    pointer: &str,
    json: &str,
    keep: Option<u32>,
) -> Out<Option<Outcome>> {
    let value = append_value(pointer, json, keep)?;
    let Some(pending) = begin_under(s, leases, file, true).await? else {
        return Ok(None);
    };
    // The read guard is taken again for the commit only: a release meanwhile ends it.
    let held = leases.read().await;
    if held.is_none() {
        let _ = pending.release().await;
        return Err(ended(file));
    }
    Ok(Some(
        append_and_release(pending, pointer, value, keep).await?,
    ))
}

fn append_value(pointer: &str, json: &str, keep: Option<u32>) -> Out<Value> {
    parse_pointer(pointer)?;
    let value = parse_value(json, "the given value")?;
    if keep == Some(0) {
        return Err(Failure::usage("keep must be at least 1"));
    }
    Ok(value)
}

async fn append_and_release(
    mut pending: Pending,
    pointer: &str,
    value: Value,
    keep: Option<u32>,
) -> Out<Outcome> {
    let result = append_under_lease(&mut pending.write, pointer, value, keep).await;
    let released = pending.release().await;
    let done = result?;
    // A failed release after a commit changes nothing about the commit.
    if !done.committed {
        released?;
    }
    Ok(done)
}

async fn append_under_lease(
    write: &mut PendingWrite,
    pointer: &str,
    value: Value,
    keep: Option<u32>,
) -> Out<Outcome> {
    let pointer = parse_pointer(pointer)?;
    let mut conflicts = 0;
    loop {
        let mut doc = write
            .document()
            .cloned()
            .unwrap_or_else(|| Value::Object(Default::default()));
        let name = write.file().name().to_owned();
        push(&mut doc, &pointer, value.clone(), keep.map(|k| k as usize), &name)?;
        match write.commit(&doc).await {
            Err(Error::Conflict { .. }) if conflicts == 0 => {
                conflicts += 1;
                write.reload()?;
            }
            other => return outcome(other?),
        }
    }
}

/// Leases on several locks, taken in sorted order.
pub struct Held {
    leases: Leases,
    holdings: Vec<tractatus_lock::Holding>,
    tokens: Vec<(String, u64)>,
    released: watch::Sender<bool>,
}

/// Take the locks `names` and those named after `files`, each renewed until released.
pub async fn acquire(
    s: &Settings,
    names: Vec<String>,
    files: Vec<String>,
) -> Out<(Held, Option<String>)> {
    let o = open(s).await?;
    let mut all = names;
    for f in &files {
        all.push(o.workspace.lock_name(Path::new(f))?);
    }
    if all.is_empty() {
        return Err(Failure::usage("withLock needs at least one name or file"));
    }
    for n in &all {
        tractatus_lock::config::check_lock_name(n)?;
    }
    let leases = o
        .coordinator
        .acquire_all_holding(&all, o.acquire.wait, &s.holding, |_| None)
        .await?;
    let held = Held {
        holdings: leases.iter().map(Lease::holding).collect(),
        tokens: leases
            .iter()
            .map(|l| (l.name().to_owned(), l.token()))
            .collect(),
        leases: Arc::new(tokio::sync::RwLock::new(Some(leases))),
        released: watch::channel(false).0,
    };
    Ok((held, o.notice))
}

impl Held {
    /// (lock name, fencing token) of each lease.
    pub fn tokens(&self) -> Vec<(String, u64)> {
        self.tokens.clone()
    }

    /// What the leases hold, as a wait-for edge names it.
    pub fn holdings(&self) -> Vec<tractatus_lock::Holding> {
        self.holdings.clone()
    }

    /// The leases, for the calls that join them.
    pub fn leases(&self) -> Leases {
        self.leases.clone()
    }

    /// Resolves with the first loss's reason, or `None` once the leases are released.
    pub fn lost(&self) -> impl Future<Output = Option<String>> + Send + use<> {
        // Only a release takes the write lock, and it takes `self`: this read never waits.
        let losses: Vec<_> = match self.leases.try_read() {
            Ok(held) => held.iter().flatten().map(|l| l.lost().boxed()).collect(),
            Err(_) => Vec::new(),
        };
        let mut released = self.released.subscribe();
        let flag = self.released.subscribe();
        async move {
            if losses.is_empty() {
                return None;
            }
            tokio::select! {
                (reason, _, _) = select_all(losses) => {
                    (!*flag.borrow()).then_some(reason)
                }
                _ = released.wait_for(|r| *r) => None,
            }
        }
    }

    /// Release every lease (in reverse order); `LEASE_LOST` when any was no longer ours.
    pub async fn release(self) -> Out<()> {
        self.released.send_replace(true);
        // Waits for joined writes in flight; none joins or commits after this.
        let leases = self.leases.write().await.take().unwrap_or_default();
        let mut lost = None;
        for l in leases.into_iter().rev() {
            if let Err(e) = l.release().await {
                lost.get_or_insert(e);
            }
        }
        match lost {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}
