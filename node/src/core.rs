//! The adapter: every call this binding makes into the `tractatus_lock` library is in this
//! file, so that a change of the library's API is a change here only. Configuration is
//! resolved and the backend chosen by the library's `Workspace`, exactly as the CLI does;
//! documents cross to JavaScript as JSON text.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use futures_util::future::{FutureExt, select_all};
use serde_json::Value;
use tokio::sync::watch;
use tractatus_lock::settings::Flags;
use tractatus_lock::state::{Edit, PendingWrite, WriteOutcome, parse_pointer};
use tractatus_lock::workspace::Workspace;
use tractatus_lock::{AcquireOptions, Coordinator, Error, Identity, Lease};

/// Where and how one call runs: the JavaScript options, still as text.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub cwd: PathBuf,
    pub redis: Vec<String>,
    pub namespace: Option<String>,
    pub ttl: Option<String>,
    pub wait: Option<String>,
    pub max_hold: Option<String>,
    pub node_timeout: Option<String>,
    pub connect_timeout: Option<String>,
    pub session: Option<String>,
    pub allow_network_fs: bool,
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
            e if e.is_held() => "HELD",
            e if e.is_unavailable() => "UNAVAILABLE",
            e if e.is_lease_lost() => "LEASE_LOST",
            e if e.is_bad_data() => "BAD_DATA",
            Error::Usage { .. } => "USAGE",
            Error::CannotWrite { .. } => "CANNOT_WRITE",
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
    let flags = Flags {
        redis: s.redis.clone(),
        namespace: s.namespace.clone(),
        ttl: s.ttl.clone(),
        wait: s.wait.clone(),
        max_hold: s.max_hold.clone(),
        node_timeout: s.node_timeout.clone(),
        connect_timeout: s.connect_timeout.clone(),
        kill_grace: None,
    };
    Ok(Workspace::discover(&s.cwd, &flags, &|k| {
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
    if let Some(session) = s
        .session
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
    {
        identity.session = session.to_owned();
    } else if !from_env {
        identity.session = PROCESS_SESSION
            .get_or_init(|| identity.session.clone())
            .clone();
    }
    let key = format!(
        "{:?}|{:?}|{:?}|{}|{}",
        (
            &s.redis,
            [
                "TRACTATUS_REDIS_USERNAME",
                "TRACTATUS_REDIS_PASSWORD",
                "TRACTATUS_REDIS_PASSWORD_FILE"
            ]
            .map(|k| std::env::var(k).ok())
        ),
        resolved.config,
        workspace.root(),
        identity.session,
        s.allow_network_fs
    );
    let acquire = AcquireOptions::wait(resolved.wait);
    let mut notice = None;
    let coordinator = slot(key)
        .get_or_try_init(|| async {
            let (c, n) = workspace.coordinator(identity, s.allow_network_fs).await?;
            notice = n;
            Ok::<_, Error>(c)
        })
        .await?
        .clone();
    Ok(Opened {
        workspace,
        coordinator,
        acquire,
        notice,
    })
}

fn to_text(v: &Value) -> String {
    // Compact: JavaScript parses it; the file's own layout is made by the library.
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned())
}

fn parse_value(text: &str, what: &str) -> Out<Value> {
    serde_json::from_str(text)
        .map_err(|e| Failure::bad_data(format!("{what} is not valid JSON: {e}")))
}

/// A state file read under its lease, waiting for JavaScript's new document.
pub struct Pending {
    write: PendingWrite,
}

/// Take `file`'s lease and read it.
pub async fn begin(s: &Settings, file: &str) -> Out<(Pending, Option<String>)> {
    let o = open(s).await?;
    let state = o.workspace.state_file(Path::new(file))?;
    let write = state.begin(&o.coordinator, &o.acquire).await?;
    Ok((Pending { write }, o.notice))
}

impl Pending {
    /// The document as JSON text; `None` when the file does not exist yet.
    pub fn document(&self) -> Option<String> {
        self.write.document().map(to_text)
    }

    pub fn token(&self) -> u64 {
        self.write.token()
    }

    /// Commit JavaScript's document (JSON text); `CONFLICT` when the file changed meanwhile.
    pub async fn commit(&mut self, json: &str) -> Out<Outcome> {
        let doc = parse_value(json, "the new document")?;
        outcome(self.write.commit(&doc).await?)
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
    let state = workspace.state_file(Path::new(file))?;
    let pointer = pointer.map(parse_pointer).transpose()?;
    Ok(state.read(pointer.as_ref())?.as_ref().map(to_text))
}

/// `set` or `merge`, the CLI's own code path (redone once on a conflict).
pub async fn edit(s: &Settings, file: &str, edit: EditSpec<'_>) -> Out<(Outcome, Option<String>)> {
    let edit = match edit {
        EditSpec::Set { pointer, json } => Edit::set(pointer, json)?,
        EditSpec::Merge { json } => {
            if !matches!(parse_value(json, "the given patch")?, Value::Object(_)) {
                return Err(Failure::usage(
                    "mergeJson takes an object patch (RFC 7396); use setJson to replace a value",
                ));
            }
            Edit::merge(json)?
        }
    };
    let o = open(s).await?;
    let state = o.workspace.state_file(Path::new(file))?;
    let done = state.write(&o.coordinator, &o.acquire, edit).await?;
    Ok((outcome(done)?, o.notice))
}

/// An edit given as JSON text.
pub enum EditSpec<'a> {
    Set { pointer: &'a str, json: &'a str },
    Merge { json: &'a str },
}

/// Push `json` onto the array at `pointer`, keeping its last `keep` entries (a ring).
pub async fn append(
    s: &Settings,
    file: &str,
    pointer: &str,
    json: &str,
    keep: Option<u32>,
) -> Out<(Outcome, Option<String>)> {
    parse_pointer(pointer)?;
    let value = parse_value(json, "the given value")?;
    if keep == Some(0) {
        return Err(Failure::usage("keep must be at least 1"));
    }
    let (mut pending, notice) = begin(s, file).await?;
    let result = append_under_lease(&mut pending.write, pointer, value, keep).await;
    let released = pending.release().await;
    let done = result?;
    // A failed release after a commit changes nothing about the commit.
    if !done.committed {
        released?;
    }
    Ok((done, notice))
}

async fn append_under_lease(
    write: &mut PendingWrite,
    pointer: &str,
    value: Value,
    keep: Option<u32>,
) -> Out<Outcome> {
    let mut conflicts = 0;
    loop {
        let mut doc = write
            .document()
            .cloned()
            .unwrap_or_else(|| Value::Object(Default::default()));
        crate::edit::push(&mut doc, pointer, value.clone(), keep).map_err(Failure::bad_data)?;
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
    leases: Vec<Lease>,
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
        .acquire_all(&all, o.acquire.wait, |_| None)
        .await?;
    let held = Held {
        leases,
        released: watch::channel(false).0,
    };
    Ok((held, o.notice))
}

impl Held {
    /// (lock name, fencing token) of each lease.
    pub fn tokens(&self) -> Vec<(String, u64)> {
        self.leases
            .iter()
            .map(|l| (l.name().to_owned(), l.token()))
            .collect()
    }

    /// Resolves with the first loss's reason, or `None` once the leases are released.
    pub fn lost(&self) -> impl Future<Output = Option<String>> + Send + use<> {
        let losses: Vec<_> = self.leases.iter().map(|l| l.lost().boxed()).collect();
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
        let mut lost = None;
        for l in self.leases.into_iter().rev() {
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
