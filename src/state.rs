//! Guarded JSON state files: the whole read-modify-write runs under the lease named after the
//! file, and the commit is atomic and fenced.
//!
//! Commit: write a temp file in the same directory, fsync it, give it the old file's mode, then,
//! holding the file's fence record (`.claude/.tractatus/fence/<name>`, under `flock`), check that
//! the lease is still valid and that no higher fencing token has committed, record our token,
//! rename over the target, fsync the directory. A reader sees the old document or the new one,
//! whole. The window that remains: a holder that pauses *between* the validity check and the
//! rename (a few microseconds, measured by the tests) can still land one write after its lease
//! ran out; writers that all go through `tractatus` are serialized by the fence record's lock,
//! so even then a lower token never overwrites a higher one on one machine. Across machines on a
//! network filesystem the fence record's `flock` is as good as the filesystem's locking.
//!
//! Layout: documents are written as Node's `JSON.stringify(doc, null, 2)` writes them (key
//! order kept, integer-like keys first as JavaScript orders them, 2-space indent, JavaScript's
//! number and string forms), with a final newline only when the old file had one.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};
use crate::holder::{pid_namespace, process_start_ticks, this_host};
use crate::lease::{AcquireOptions, Coordinator, FencingToken, Lease};
use crate::repo;

/// An RFC 6901 JSON pointer, checked and decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    text: String,
    tokens: Vec<String>,
}

impl std::fmt::Display for Pointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.text.is_empty() {
            "\"\" (the whole document)"
        } else {
            &self.text
        })
    }
}

/// Check a pointer's syntax (`""` or `/a/b~1c/0`); a usage error (64) when it is malformed.
pub fn parse_pointer(text: &str) -> Result<Pointer> {
    let p = jsonptr::Pointer::parse(text).map_err(|e| {
        Error::usage(format!(
            "bad JSON pointer '{text}': {e} (RFC 6901: empty, or '/'-separated tokens with ~0 for ~ and ~1 for /)"
        ))
    })?;
    Ok(Pointer {
        text: text.to_owned(),
        tokens: p.tokens().map(|t| t.decoded().into_owned()).collect(),
    })
}

fn parse_json(text: &str, what: &str) -> Result<Value> {
    serde_json::from_str(text)
        .map_err(|e| Error::bad_data(format!("{what} is not valid JSON: {e}")))
}

/// One change to a document.
#[derive(Debug, Clone)]
pub enum Edit {
    /// Replace or insert the value at the pointer (`-` as last token appends to an array).
    Set(Pointer, Value),
    /// Push onto the array at the pointer.
    Append(Pointer, Value),
    /// RFC 7396 merge patch.
    Merge(Value),
    /// Pipe the document through a command (stdin) and take its stdout.
    Update(Vec<String>),
}

impl Edit {
    /// `set POINTER JSON`, checked (64 for the pointer, 65 for the JSON).
    pub fn set(pointer: &str, json: &str) -> Result<Self> {
        Ok(Edit::Set(
            parse_pointer(pointer)?,
            parse_json(json, "the given value")?,
        ))
    }

    /// `append POINTER JSON`, checked.
    pub fn append(pointer: &str, json: &str) -> Result<Self> {
        Ok(Edit::Append(
            parse_pointer(pointer)?,
            parse_json(json, "the given value")?,
        ))
    }

    /// `merge JSON`, checked.
    pub fn merge(json: &str) -> Result<Self> {
        Ok(Edit::Merge(parse_json(json, "the given patch")?))
    }
}

/// How a write ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The new document was committed under this token.
    Committed {
        /// The lease's fencing token.
        token: FencingToken,
        /// How long the commit's unguarded window was: from the last validity check to the
        /// rename being done. A holder paused inside it could still land a late write.
        window: Duration,
    },
    /// The edit changed nothing; the file was not rewritten.
    Unchanged {
        /// The lease's fencing token.
        token: FencingToken,
    },
    /// `update`'s command exited non-zero; nothing was written.
    Aborted {
        /// The command's exit code.
        code: i32,
    },
}

/// A state file inside a repository, and its lock.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
    name: String,
    work_dir: PathBuf,
}

impl StateFile {
    /// The state file at `path` (absolute or relative to `cwd`) in the repository at `root`.
    /// Refuses paths outside the repository (64).
    pub fn open(root: &Path, cwd: &Path, path: &Path) -> Result<Self> {
        let root = root
            .canonicalize()
            .map_err(|e| Error::usage(format!("repository root {}: {e}", root.display())))?;
        let abs = repo::resolve(&root, cwd, path)?;
        let name = repo::lock_name_for(&root, cwd, path)?;
        if abs.starts_with(root.join(repo::WORK_DIR)) {
            return Err(Error::usage(format!(
                "{} is tractatus' own working file, not a state file",
                path.display()
            )));
        }
        Ok(StateFile {
            path: abs,
            name,
            work_dir: root.join(repo::WORK_DIR),
        })
    }

    /// The lock name (path relative to the repository root).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The absolute path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read the document (or the value at `pointer`) under the lease.
    pub async fn read(
        &self,
        coordinator: &Coordinator,
        opts: &AcquireOptions,
        pointer: Option<&Pointer>,
    ) -> Result<Value> {
        let lease = coordinator.acquire(&self.name, opts).await?;
        let result = self.load().and_then(|(bytes, _)| {
            let bytes = bytes.ok_or_else(|| {
                Error::bad_data(format!("{} does not exist", self.path.display()))
            })?;
            let doc = self.parse(&bytes)?;
            match pointer {
                None => Ok(doc),
                Some(p) => resolve_pointer(&doc, p)
                    .cloned()
                    .ok_or_else(|| Error::bad_data(format!("{}: no value at {p}", self.name))),
            }
        });
        // The read is done: a lease that ran out just after it changes nothing about it.
        let _ = lease.release().await;
        result
    }

    /// Apply `edit` under the lease and commit it atomically with a fencing check.
    ///
    /// When the file changed under us (someone wrote it outside our lease), `set`, `append` and
    /// `merge` are redone once on the new document; `update` is not (its command may have done
    /// more than print), and ends in [`Error::Conflict`].
    pub async fn write(
        &self,
        coordinator: &Coordinator,
        opts: &AcquireOptions,
        edit: Edit,
    ) -> Result<WriteOutcome> {
        if matches!(edit, Edit::Update(_)) {
            return self.write_once(coordinator, opts, edit).await;
        }
        match self.write_once(coordinator, opts, edit.clone()).await {
            Err(Error::Conflict { .. }) => self.write_once(coordinator, opts, edit).await,
            other => other,
        }
    }

    async fn write_once(
        &self,
        coordinator: &Coordinator,
        opts: &AcquireOptions,
        edit: Edit,
    ) -> Result<WriteOutcome> {
        let fence = FenceRecord::new(&self.work_dir, &self.name)?;
        let mut lease = coordinator.acquire(&self.name, opts).await?;
        let committed = match fence.read() {
            Ok(c) => c,
            Err(e) => {
                let _ = lease.release().await;
                return Err(e);
            }
        };
        if lease.token() <= committed {
            // Our lease is valid, so a token at or below a committed one means the coordinator's
            // counter was reset (Redis flushed, backend switched): lift it and take a fresh lease.
            // Released explicitly on every path: a dropped lease is released by a background
            // task, which a short-lived process may never run.
            let raised = coordinator.raise_floor(&self.name, committed).await;
            let _ = lease.release().await;
            raised?;
            lease = coordinator.acquire(&self.name, opts).await?;
        }
        lease.keep_alive(coordinator.config().max_hold);
        let result = self.edit_and_commit(&lease, &fence, edit).await;
        // Once committed, the write stands: a lease that ran out after the rename changes
        // nothing about it, so release errors are not the caller's.
        let _ = lease.release().await;
        result
    }

    async fn edit_and_commit(
        &self,
        lease: &Lease,
        fence: &FenceRecord,
        edit: Edit,
    ) -> Result<WriteOutcome> {
        self.remove_abandoned_temp_files(lease);
        let token = lease.token();
        let (old, mode) = self.load()?;
        let new_doc = match edit {
            Edit::Update(argv) => {
                let old = old.as_deref().ok_or_else(|| {
                    Error::bad_data(format!(
                        "{} does not exist: `state update` needs a document to update (create it with `state set FILE \"\" '{{}}'`)",
                        self.path.display()
                    ))
                })?;
                self.parse(old)?;
                match run_filter(lease, &argv, old).await? {
                    Filtered::Output(out) => {
                        parse_json(&String::from_utf8_lossy(&out), "the command's output")
                            .map_err(|e| Error::bad_data(format!("{e}; nothing written")))?
                    }
                    Filtered::Failed(code) => return Ok(WriteOutcome::Aborted { code }),
                }
            }
            other => {
                let mut doc = match &old {
                    Some(bytes) => self.parse(bytes)?,
                    None => Value::Object(Map::new()),
                };
                apply(&mut doc, other, &self.name)?;
                doc
            }
        };
        let mut text = to_node_json(&new_doc);
        if old.as_deref().is_some_and(|b| b.ends_with(b"\n")) {
            text.push('\n');
        }
        if old.as_deref() == Some(text.as_bytes()) {
            return Ok(WriteOutcome::Unchanged { token });
        }
        let window = self.commit(lease, fence, old.as_deref(), text.as_bytes(), mode)?;
        Ok(WriteOutcome::Committed { token, window })
    }

    /// The file's bytes (None when absent) and mode.
    fn load(&self) -> Result<(Option<Vec<u8>>, Option<u32>)> {
        match std::fs::read(&self.path) {
            Ok(b) => {
                let mode = std::fs::metadata(&self.path)
                    .map(|m| m.permissions().mode())
                    .ok();
                Ok((Some(b), mode))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((None, None)),
            Err(e) => Err(Error::bad_data(format!(
                "cannot read {}: {e}",
                self.path.display()
            ))),
        }
    }

    fn parse(&self, bytes: &[u8]) -> Result<Value> {
        serde_json::from_slice(bytes).map_err(|e| {
            Error::bad_data(format!(
                "{} is not valid JSON ({e}); nothing written",
                self.path.display()
            ))
        })
    }

    fn temp_prefix(&self) -> String {
        let file_name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!(".{file_name}.tractatus-")
    }

    /// Returns the length of the window between the last validity check and the rename.
    fn commit(
        &self,
        lease: &Lease,
        fence: &FenceRecord,
        read: Option<&[u8]>,
        bytes: &[u8],
        mode: Option<u32>,
    ) -> Result<Duration> {
        let dir = self.path.parent().unwrap_or(Path::new("/"));
        let cannot = |e: std::io::Error| Error::CannotWrite {
            path: self.path.clone(),
            source: e,
        };
        let pid = std::process::id();
        let start = process_start_ticks(pid).unwrap_or(0);
        let host = temp_owner_tag();
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!("{}{host}-{pid}-{start}-", self.temp_prefix()))
            .suffix(".tmp")
            .rand_bytes(6)
            .tempfile_in(dir)
            .map_err(cannot)?;
        tmp.write_all(bytes).map_err(cannot)?;
        // Keep the file's mode; a new file gets what `open(2)` would give it (0666 less the
        // umask), not the temp file's 0600.
        let mode = mode.unwrap_or(0o666 & !repo::process_umask());
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(cannot)?;
        tmp.as_file().sync_all().map_err(cannot)?;

        let mut record = fence.lock()?;
        // Compare and swap: the file must still hold what we read. A writer whose lease was
        // broken or ran out may have committed in between (its token was above the record then),
        // or a program that takes no lock may have written it; writing over that would lose its
        // update, so we refuse and the change is redone on the new document. Bytes, not
        // metadata: a same-size rewrite within one coarse mtime tick would pass a stat check.
        let now = match std::fs::read(&self.path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(cannot(e)),
        };
        if now.as_deref() != read {
            return Err(Error::Conflict {
                name: self.name.clone(),
            });
        }
        let committed = record.read()?;
        // A token is used for one commit: equal is as stale as lower.
        if lease.token() <= committed {
            return Err(Error::Fenced {
                name: self.name.clone(),
                token: lease.token(),
                committed,
            });
        }
        // Record first: if the check below fails, a token that never landed is on record, which
        // only refuses writers that are older still.
        record.write(lease.token())?;
        // The last check: from here to the rename is the window no lease can close.
        lease.check_valid()?;
        let checked = std::time::Instant::now();
        tmp.persist(&self.path).map_err(|e| cannot(e.error))?;
        let window = checked.elapsed();
        // The new document is in place and every reader sees it: a failed directory fsync
        // (only durability across a power loss is in doubt) must not report "nothing written".
        let _ = File::open(dir).and_then(|d| d.sync_all());
        Ok(window)
    }

    /// Remove temp files of this state file whose writer is gone (crashed mid-commit). A temp
    /// file of a live writer, or of another host younger than the longest hold, is kept.
    fn remove_abandoned_temp_files(&self, lease: &Lease) {
        let Some(dir) = self.path.parent() else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let prefix = self.temp_prefix();
        let me = temp_owner_tag();
        let old_enough = lease_max_age(lease);
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name
                .strip_prefix(&prefix)
                .and_then(|r| r.strip_suffix(".tmp"))
            else {
                continue;
            };
            let mut parts = rest.rsplitn(4, '-');
            let (_rand, start, pid, host) =
                (parts.next(), parts.next(), parts.next(), parts.next());
            let (Some(start), Some(pid), Some(host)) = (start, pid, host) else {
                continue;
            };
            let same_host = host == me;
            let gone = if same_host {
                let pid: u32 = pid.parse().unwrap_or(0);
                pid != std::process::id()
                    && match process_start_ticks(pid) {
                        None => true,
                        Some(now) => start.parse::<u64>().ok() != Some(now),
                    }
            } else {
                entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .is_some_and(|age| age > old_enough)
            };
            if gone {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

// TEMPORARY (h-node): replaced at integration. Two-phase update for callers that transform
// the document in their own process (the Node binding): `begin` takes the lease and reads,
// the caller computes, `commit` lands it with the same fence and compare-and-swap as `write`.
impl StateFile {
    /// Take the file's lease (lifting a reset token counter like `write` does), check the
    /// fence record and read the document. Release the result with [`PendingWrite::release`].
    pub async fn begin(
        &self,
        coordinator: &Coordinator,
        opts: &AcquireOptions,
    ) -> Result<PendingWrite> {
        let fence = FenceRecord::new(&self.work_dir, &self.name)?;
        let mut lease = coordinator.acquire(&self.name, opts).await?;
        let committed = match fence.read() {
            Ok(c) => c,
            Err(e) => {
                let _ = lease.release().await;
                return Err(e);
            }
        };
        if lease.token() <= committed {
            let raised = coordinator.raise_floor(&self.name, committed).await;
            let _ = lease.release().await;
            raised?;
            lease = coordinator.acquire(&self.name, opts).await?;
        }
        lease.keep_alive(coordinator.config().max_hold);
        self.remove_abandoned_temp_files(&lease);
        let mut pending = PendingWrite {
            file: self.clone(),
            fence,
            lease,
            bytes: None,
            mode: None,
            doc: None,
        };
        if let Err(e) = pending.reload() {
            let _ = pending.release().await;
            return Err(e);
        }
        Ok(pending)
    }

    /// Read the document (or the value at `pointer`) without a lease: commits are atomic
    /// renames, so the read is whole. `None` when the file or the value does not exist.
    pub fn read_unlocked(&self, pointer: Option<&Pointer>) -> Result<Option<Value>> {
        let Some(bytes) = self.load()?.0 else {
            return Ok(None);
        };
        let doc = self.parse(&bytes)?;
        Ok(match pointer {
            None => Some(doc),
            Some(p) => resolve_pointer(&doc, p).cloned(),
        })
    }
}

/// A state file read under its lease, waiting for the caller's new document.
// TEMPORARY (h-node): replaced at integration
pub struct PendingWrite {
    file: StateFile,
    fence: FenceRecord,
    lease: Lease,
    bytes: Option<Vec<u8>>,
    mode: Option<u32>,
    doc: Option<Value>,
}

impl PendingWrite {
    /// The document as read; `None` when the file does not exist yet.
    pub fn document(&self) -> Option<&Value> {
        self.doc.as_ref()
    }

    /// The lease's fencing token.
    pub fn token(&self) -> FencingToken {
        self.lease.token()
    }

    /// The lease held for this write.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Read the file again under the same lease (after a [`Error::Conflict`]).
    pub fn reload(&mut self) -> Result<()> {
        self.lease.check_valid()?;
        let (bytes, mode) = self.file.load()?;
        self.doc = bytes.as_deref().map(|b| self.file.parse(b)).transpose()?;
        self.bytes = bytes;
        self.mode = mode;
        Ok(())
    }

    /// Commit `doc` atomically with the fencing check; [`Error::Conflict`] when the file
    /// changed since it was read (nothing written: reload and redo the change).
    pub fn commit(&mut self, doc: &Value) -> Result<WriteOutcome> {
        self.lease.check_valid()?;
        let token = self.lease.token();
        let mut text = to_node_json(doc);
        if self.bytes.as_deref().is_some_and(|b| b.ends_with(b"\n")) {
            text.push('\n');
        }
        if self.bytes.as_deref() == Some(text.as_bytes()) {
            return Ok(WriteOutcome::Unchanged { token });
        }
        let window = self.file.commit(
            &self.lease,
            &self.fence,
            self.bytes.as_deref(),
            text.as_bytes(),
            self.mode,
        )?;
        Ok(WriteOutcome::Committed { token, window })
    }

    /// End the lease. A lease that ran out after a commit changes nothing about the commit.
    pub async fn release(self) -> Result<()> {
        self.lease.release().await
    }
}

/// Who writes a temp file, in its name: the host name (letters, digits and dots kept) and the
/// PID namespace, so a pid in the name is judged only where it means the same process.
fn temp_owner_tag() -> String {
    let host: String = this_host()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{host}.{}", pid_namespace().unwrap_or_default())
}

/// How old another host's temp file must be before it is surely abandoned: no lease lasts
/// longer than the longest hold plus one TTL (other hosts are assumed to use the same settings,
/// and never less than the defaults).
fn lease_max_age(lease: &Lease) -> Duration {
    let c = lease.config();
    c.max_hold.max(crate::config::DEFAULT_MAX_HOLD) + c.ttl.max(crate::config::DEFAULT_TTL)
}

/// The highest token committed to one state file, kept in the repository's working directory.
struct FenceRecord {
    path: PathBuf,
}

struct LockedRecord {
    file: File,
    path: PathBuf,
}

impl FenceRecord {
    fn new(work_dir: &Path, name: &str) -> Result<Self> {
        let dir = work_dir.join("fence");
        if !dir.is_dir() {
            if let Some(root) = work_dir.parent().and_then(Path::parent) {
                repo::work_dir(root)?;
            }
            std::fs::create_dir_all(&dir).map_err(|e| Error::CannotWrite {
                path: dir.clone(),
                source: e,
            })?;
        }
        Ok(FenceRecord {
            path: dir.join(name.replace('/', "%2F")),
        })
    }

    fn read(&self) -> Result<u64> {
        match std::fs::read_to_string(&self.path) {
            Ok(s) => parse_record(&self.path, &s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(Error::CannotWrite {
                path: self.path.clone(),
                source: e,
            }),
        }
    }

    fn lock(&self) -> Result<LockedRecord> {
        let cannot = |e| Error::CannotWrite {
            path: self.path.clone(),
            source: e,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
            .map_err(cannot)?;
        file.lock().map_err(cannot)?;
        Ok(LockedRecord {
            file,
            path: self.path.clone(),
        })
    }
}

impl LockedRecord {
    fn read(&mut self) -> Result<u64> {
        let mut s = String::new();
        self.file
            .rewind()
            .and_then(|()| self.file.read_to_string(&mut s))
            .map_err(|e| Error::internal(format!("fence record: {e}")))?;
        parse_record(&self.path, &s)
    }

    /// Overwrite in place with a fixed width (20 digits hold any u64), never truncating first:
    /// a crash mid-write cannot leave an empty record that would forget the committed token.
    fn write(&mut self, token: u64) -> Result<()> {
        self.file
            .rewind()
            .and_then(|()| self.file.write_all(format!("{token:020}").as_bytes()))
            .map_err(|e| Error::internal(format!("fence record: {e}")))
    }
}

/// A fence record's token; empty (just created) is 0. Anything else unreadable is an error: a
/// record read as 0 would let a stale writer through.
fn parse_record(path: &Path, text: &str) -> Result<u64> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(0);
    }
    t.parse().map_err(|_| {
        Error::internal(format!(
            "fence record {} is damaged ({:?}); remove it only when no writer runs",
            path.display(),
            t.chars().take(40).collect::<String>()
        ))
    })
}

enum Filtered {
    Output(Vec<u8>),
    Failed(i32),
}

/// Run `update`'s command with the document on stdin, watching the lease meanwhile.
async fn run_filter(lease: &Lease, argv: &[String], input: &[u8]) -> Result<Filtered> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| Error::usage("no command given after --"))?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("TRACTATUS_LOCK_NAME", lease.name())
        .env("TRACTATUS_FENCING_TOKEN", lease.token().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::usage(format!("cannot run '{program}': {e}")))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| Error::internal("no stdin pipe"))?;
    let input = input.to_vec();
    let feed = tokio::spawn(async move {
        // A command that does not read its input closes the pipe early: not an error.
        let _ = stdin.write_all(&input).await;
    });
    let output = tokio::select! {
        out = child.wait_with_output() => out.map_err(|e| Error::internal(format!("waiting for '{program}': {e}")))?,
        reason = lease.lost() => {
            return Err(Error::LeaseLost { name: lease.name().to_owned(), reason });
        }
    };
    let _ = feed.await;
    if !output.status.success() {
        return Ok(Filtered::Failed(crate::run::exit_code(output.status)));
    }
    Ok(Filtered::Output(output.stdout))
}

fn resolve_pointer<'v>(doc: &'v Value, p: &Pointer) -> Option<&'v Value> {
    p.tokens.iter().try_fold(doc, |v, t| match v {
        Value::Object(m) => m.get(t),
        Value::Array(a) => array_index(t, a.len()).and_then(|i| a.get(i)),
        _ => None,
    })
}

fn resolve_pointer_mut<'v>(doc: &'v mut Value, tokens: &[String]) -> Option<&'v mut Value> {
    tokens.iter().try_fold(doc, |v, t| match v {
        Value::Object(m) => m.get_mut(t),
        Value::Array(a) => {
            let i = array_index(t, a.len())?;
            a.get_mut(i)
        }
        _ => None,
    })
}

/// An RFC 6901 array index: `0` or digits without a leading zero.
fn array_index(token: &str, _len: usize) -> Option<usize> {
    if token == "0" || (!token.starts_with('0') && token.bytes().all(|b| b.is_ascii_digit())) {
        token.parse().ok()
    } else {
        None
    }
}

/// Apply one edit in memory. Bad targets are bad data (65).
fn apply(doc: &mut Value, edit: Edit, name: &str) -> Result<()> {
    match edit {
        Edit::Merge(patch) => {
            json_patch::merge(doc, &patch);
            Ok(())
        }
        Edit::Append(p, value) => match resolve_pointer_mut(doc, &p.tokens) {
            Some(Value::Array(a)) => {
                a.push(value);
                Ok(())
            }
            Some(other) => Err(Error::bad_data(format!(
                "{name}: the value at {p} is {}, not an array; nothing written",
                kind(other)
            ))),
            None => Err(Error::bad_data(format!(
                "{name}: no array at {p} to append to; nothing written (create it once with \
                 `tractatus state set {name} {p} '[]'`)"
            ))),
        },
        Edit::Set(p, value) => {
            let Some((last, parent)) = p.tokens.split_last() else {
                *doc = value;
                return Ok(());
            };
            match resolve_pointer_mut(doc, parent) {
                Some(Value::Object(m)) => {
                    m.insert(last.clone(), value);
                    Ok(())
                }
                Some(Value::Array(a)) => {
                    let len = a.len();
                    match (last.as_str(), array_index(last, len)) {
                        ("-", _) => a.push(value),
                        (_, Some(i)) if i < len => a[i] = value,
                        (_, Some(i)) if i == len => a.push(value),
                        _ => {
                            return Err(Error::bad_data(format!(
                                "{name}: {p}: index '{last}' is not in an array of {len}; nothing written"
                            )));
                        }
                    }
                    Ok(())
                }
                Some(other) => Err(Error::bad_data(format!(
                    "{name}: cannot set {p}: its parent is {}; nothing written",
                    kind(other)
                ))),
                None => Err(Error::bad_data(format!(
                    "{name}: cannot set {p}: its parent does not exist; nothing written"
                ))),
            }
        }
        Edit::Update(_) => Err(Error::internal("update is not an in-memory edit")),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Serialize as Node's `JSON.stringify(doc, null, 2)` does (no final newline).
pub fn to_node_json(doc: &Value) -> String {
    let mut out = String::with_capacity(4096);
    write_value(&mut out, doc, 0);
    out
}

fn write_value(out: &mut String, v: &Value, depth: usize) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(a) if a.is_empty() => out.push_str("[]"),
        Value::Object(m) if m.is_empty() => out.push_str("{}"),
        Value::Array(a) => {
            out.push('[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, depth + 1);
                write_value(out, item, depth + 1);
            }
            newline(out, depth);
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            for (i, (k, item)) in js_order(m).into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, depth + 1);
                write_string(out, k);
                out.push_str(": ");
                write_value(out, item, depth + 1);
            }
            newline(out, depth);
            out.push('}');
        }
    }
}

fn newline(out: &mut String, depth: usize) {
    out.push('\n');
    for _ in 0..depth {
        out.push_str("  ");
    }
}

/// JavaScript's property order: array-index keys ascending, then the rest in insertion order.
fn js_order(m: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let is_index = |k: &str| {
        (k == "0"
            || (!k.starts_with('0') && !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit())))
            && k.parse::<u64>().is_ok_and(|n| n < u64::from(u32::MAX))
    };
    let mut indexed: Vec<(&String, &Value)> = m.iter().filter(|(k, _)| is_index(k)).collect();
    if indexed.is_empty() {
        return m.iter().collect();
    }
    indexed.sort_by_key(|(k, _)| k.parse::<u64>().unwrap_or(0));
    indexed.extend(m.iter().filter(|(k, _)| !is_index(k)));
    indexed
}

/// Numbers as JavaScript prints them; integers too long for a double keep their digits.
fn write_number(out: &mut String, n: &serde_json::Number) {
    let text = n.as_str();
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.bytes().all(|b| b.is_ascii_digit()) && digits.len() <= 15 {
        out.push_str(if digits.bytes().all(|b| b == b'0') {
            "0"
        } else {
            text
        });
        return;
    }
    if digits.bytes().all(|b| b.is_ascii_digit()) {
        // Node would round this to a double; we keep what the file says.
        out.push_str(text);
        return;
    }
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() => {
            let mut buf = ryu_js::Buffer::new();
            out.push_str(buf.format(f));
        }
        _ => out.push_str("null"),
    }
}

/// Strings as `JSON.stringify` escapes them. Every character that needs an escape is ASCII, so
/// the bytes between them are copied in runs (UTF-8 never has an ASCII byte inside a character).
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut run_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            0x0c => "\\f",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[run_start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        run_start = i + 1;
    }
    out.push_str(&s[run_start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_matches_node_stringify() {
        let src = r#"{"b":1,"a":[],"o":{},"2":"x","1":[1,{"k":null}],"s":"q\"\\\n\u0001é","f":1.50,"e":1e21,"t":0.0000001,"z":-0}"#;
        let v: Value = serde_json::from_str(src).unwrap();
        // Node: JSON.stringify(JSON.parse(src), null, 2)
        let node = "{\n  \"1\": [\n    1,\n    {\n      \"k\": null\n    }\n  ],\n  \"2\": \"x\",\n  \"b\": 1,\n  \"a\": [],\n  \"o\": {},\n  \"s\": \"q\\\"\\\\\\n\\u0001é\",\n  \"f\": 1.5,\n  \"e\": 1e+21,\n  \"t\": 1e-7,\n  \"z\": 0\n}";
        assert_eq!(to_node_json(&v), node);
    }

    #[test]
    fn string_escapes_match_a_char_by_char_reference() {
        fn reference(s: &str) -> String {
            let mut out = String::from('"');
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\u{8}' => out.push_str("\\b"),
                    '\u{c}' => out.push_str("\\f"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
        let every_ascii: String = (0u8..0x80).map(char::from).collect();
        for s in [
            "",
            "plain",
            every_ascii.as_str(),
            "é\u{1}ü\"\\𝄞\u{7f}\u{2028}end",
            "\n\n",
        ] {
            let mut got = String::new();
            write_string(&mut got, s);
            assert_eq!(got, reference(s), "{s:?}");
        }
    }

    #[test]
    fn pointers_are_checked() {
        assert!(parse_pointer("").is_ok());
        assert_eq!(
            parse_pointer("/a~1b/~0c").unwrap().tokens,
            vec!["a/b", "~c"]
        );
        for bad in ["a", "/a~2", "/~"] {
            assert_eq!(parse_pointer(bad).unwrap_err().exit_code(), 64, "{bad}");
        }
    }

    #[test]
    fn edits_refuse_bad_targets_as_bad_data() {
        let mut doc: Value = serde_json::from_str(r#"{"list":[1],"n":3}"#).unwrap();
        apply(&mut doc, Edit::append("/list", "2").unwrap(), "f").unwrap();
        apply(&mut doc, Edit::set("/list/-", "3").unwrap(), "f").unwrap();
        apply(&mut doc, Edit::set("/new", "true").unwrap(), "f").unwrap();
        apply(
            &mut doc,
            Edit::merge(r#"{"n":null,"m":{"x":1}}"#).unwrap(),
            "f",
        )
        .unwrap();
        assert_eq!(
            to_node_json(&doc).replace([' ', '\n'], ""),
            r#"{"list":[1,2,3],"new":true,"m":{"x":1}}"#
        );
        for edit in [
            Edit::append("/new", "1").unwrap(),
            Edit::append("/missing", "1").unwrap(),
            Edit::set("/missing/x", "1").unwrap(),
            Edit::set("/list/9", "1").unwrap(),
        ] {
            assert_eq!(apply(&mut doc, edit, "f").unwrap_err().exit_code(), 65);
        }
    }
}
