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
//! Documents are written as Node's `JSON.stringify(doc, null, 2)` writes them (key
//! order kept, integer-like keys first as JavaScript orders them, 2-space indent, JavaScript's
//! number and string forms), with a final newline only when the old file had one.
//!
//! # Files
//! - `mod.rs`: [`StateFile`]: open, read, and the read-modify-write orchestration.
//! - `edit.rs`: [`Pointer`], [`Edit`] and applying an edit in memory.
//! - `filter.rs`: running `state update`'s command.
//! - `commit.rs`: the atomic, fenced compare-and-swap commit and abandoned temp files.
//! - `fence.rs`: the fence record of committed tokens.
//! - `node_json.rs`: [`to_node_json`], the `JSON.stringify(x, null, 2)` layout.

mod commit;
mod edit;
mod fence;
mod filter;
mod node_json;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::repo;
use crate::{AcquireOptions, Coordinator, Error, FencingToken, Lease, Result};

pub use edit::{Edit, Pointer, parse_pointer};
pub use node_json::to_node_json;

use edit::{apply, parse_json, resolve_pointer};
use fence::FenceRecord;
use filter::{Filtered, run_filter};

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
}
