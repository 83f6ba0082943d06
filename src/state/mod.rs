//! Guarded JSON state files: the whole read-modify-write runs under the lease named after the
//! file, and the commit is atomic and fenced. A read takes no lease: it sees one committed
//! document, whole.
//!
//! Every step goes through one handle on the file's directory, opened from the repository
//! root without following a symlink (see `dir_handle.rs`): a co-user who swaps a
//! directory or the file for a symlink mid-write can neither move the write out of the
//! checkout nor make us read a file it cannot read.
//!
//! Commit: write a temp file in the same directory, give it the old file's owner, group and
//! mode (as far as the writer may), fsync it, then, holding the file's fence record
//! (`.claude/.tractatus/fence/<name>`, under `flock`), check that the lease is still valid and
//! that no higher fencing token (nor the same token of another lease) has committed, record our
//! token (synced), rename over the target, fsync the directory. A process started under the
//! file's lease (a hook under `lock run`, `update`'s command) joins that lease rather than
//! waiting for it, and commits under its token (see `crate::join`). A reader sees the old
//! document or the new one, whole. The window that remains: a holder that pauses *between*
//! the validity check and the rename (a few microseconds, measured by the tests) can still land
//! one write after its lease ran out; writers that all go through `tractatus` are serialized by the fence record's lock,
//! so even then a lower token never overwrites a higher one on one machine. Across machines on a
//! network filesystem the fence record's `flock` is as good as the filesystem's locking.
//!
//! Documents are written as Node's `JSON.stringify(doc, null, 2)` writes them (key
//! order kept, integer-like keys first as JavaScript orders them, 2-space indent, JavaScript's
//! number and string forms), with a final newline only when the old file had one.
//!
//! # Files
//! - `mod.rs`: [`StateFile`]: open, the lock-free read, and `write` (an [`Edit`] applied
//!   through the two-phase write).
//! - `pending.rs`: the two-phase write: [`StateFile::begin`], then [`PendingWrite::commit`].
//! - `edit.rs`: [`Pointer`], [`Edit`] and applying an edit in memory.
//! - `lean.rs`: `set` and `append` on the bytes read, without building the document.
//! - `filter.rs`: running `state update`'s command.
//! - `load.rs`: reading the file through its directory's handle (regular files only, never a
//!   symlink, never waiting on a FIFO).
//! - `commit.rs`: the atomic, fenced compare-and-swap commit and abandoned temp files.
//! - `fence.rs`: the fence record of committed tokens.
//! - `node_json.rs`: [`to_node_json`], the `JSON.stringify(x, null, 2)` layout.

mod commit;
mod edit;
mod fence;
mod filter;
mod lean;
mod load;
mod node_json;
mod pending;

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustix::fs::FileType;

use serde_json::{Map, Value};

use crate::dir_handle::{DirHandle, is_refused_link};
use crate::error::DirectoryGone;
use crate::repo;
use crate::{AcquireOptions, Coordinator, Error, FencingToken, Lease, Result};

pub use edit::{Edit, NoArray, Pointer, parse_pointer, push};
pub use node_json::to_node_json;
pub use pending::{MAX_DEPTH, PendingWrite};

use pending::Via;

use edit::{parse_json, take_pointer};
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
///
/// Its directory is reached from the repository root's handle one component at a time, never
/// through a symlink, and a write goes through that one directory handle from the read to the
/// rename (see `dir_handle.rs`): a directory swapped for a symlink mid-write cannot send
/// the write, the compare or the temp file anywhere else.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
    name: String,
    root: Arc<DirHandle>,
    /// The directory, relative to the root.
    rel_dir: PathBuf,
    file_name: OsString,
    /// The directory's handle, when it existed when the file was opened.
    dir: Option<Arc<DirHandle>>,
}

impl StateFile {
    /// The state file at `path` (absolute or relative to `cwd`) in the repository at `root`.
    /// Refuses paths outside the repository (64), and a symlink anywhere below the root, the
    /// file itself included (65; 64 when the link leads out of the repository).
    pub fn open(root: &Path, cwd: &Path, path: &Path) -> Result<Self> {
        let root = root
            .canonicalize()
            .map_err(|e| Error::usage(format!("repository root {}: {e}", root.display())))?;
        let rel = repo::below_root(&root, cwd, path)?;
        let name = repo::lock_name_for(&root, &root, &rel)?;
        Self::open_resolved(&root, &rel, name, path)
    }

    /// The state file `rel` below the canonical `root`, whose lock name `name` was worked out
    /// from it (see [`crate::workspace::ResolvedPath`]): the path is not resolved again, but
    /// every directory is still opened here, from the root's handle, refusing a symlink.
    /// `given` is the path as the caller named it, for messages.
    pub(crate) fn open_resolved(
        root: &Path,
        rel: &Path,
        name: String,
        given: &Path,
    ) -> Result<Self> {
        let path = given;
        if rel.starts_with(repo::WORK_DIR) {
            return Err(Error::usage(format!(
                "{} is tractatus' own working file, not a state file",
                path.display()
            )));
        }
        let file_name = rel
            .file_name()
            .ok_or_else(|| Error::usage(format!("{} does not name a file", path.display())))?
            .to_owned();
        let rel_dir = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        let handle = repo::open_root(root)?;
        let mut file = StateFile {
            path: root.join(rel),
            name,
            root: Arc::new(handle),
            rel_dir,
            file_name,
            dir: None,
        };
        file.dir = file.open_dir()?.map(Arc::new);
        if let Some(dir) = &file.dir {
            let is_link = dir
                .stat(&file.file_name)
                .ok()
                .flatten()
                .is_some_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Symlink);
            if is_link {
                return Err(file.link_refused(dir, &file.file_name));
            }
        }
        Ok(file)
    }

    /// The file's directory, opened from the root one component at a time with `O_NOFOLLOW`;
    /// `None` when it does not exist (yet).
    fn open_dir(&self) -> Result<Option<DirHandle>> {
        let mut cur = self.root.try_clone().map_err(|e| self.unreadable(e))?;
        for c in self.rel_dir.components() {
            let name = c.as_os_str();
            match cur.open_dir(Path::new(name)) {
                Ok(Some(next)) => cur = next,
                Ok(None) => return Ok(None),
                Err(e) if is_refused_link(&e) => {
                    let is_link = cur.read_link(name).ok().flatten().is_some();
                    return Err(if is_link {
                        self.link_refused(&cur, name)
                    } else {
                        Error::bad_data(format!("{e}; nothing written"))
                    });
                }
                Err(e) => return Err(self.unreadable(e)),
            }
        }
        Ok(Some(cur))
    }

    /// The directory handle a write goes through: the one opened with the file, else (the
    /// directory was made since, as a session's copy's is) opened now.
    pub(super) fn dir_handle(&self) -> Result<Option<Arc<DirHandle>>> {
        match &self.dir {
            Some(d) => Ok(Some(d.clone())),
            None => Ok(self.open_dir()?.map(Arc::new)),
        }
    }

    /// Refuse (73) when `dir`, this file's directory as opened, is no longer the directory at
    /// its path: moved away or removed since. `session gc` does both to a silent session's
    /// directory (a tombstone, then the removal), and a write through a handle on it would
    /// read the file as missing (an append then said "no array", 65) or land where gc deletes
    /// it. 73 as for any missing directory: nothing is written and the old file, if any, is
    /// intact; run again, the write starts from what is there then (a session's copy seeded
    /// afresh). A removed directory keeps no link (`st_nlink` 0), so a new one that reuses its
    /// inode number is not taken for it.
    pub(super) fn check_in_place(&self, dir: &DirHandle) -> Result<()> {
        let held = dir.stat_self().map_err(|e| self.unreadable(e))?;
        let here = match self.open_dir()? {
            Some(now) => Some(now.stat_self().map_err(|e| self.unreadable(e))?),
            None => None,
        };
        let in_place = here.is_some_and(|h| (h.st_dev, h.st_ino) == (held.st_dev, held.st_ino));
        if in_place && held.st_nlink > 0 {
            return Ok(());
        }
        let why = if self.rel_dir.starts_with(crate::settings::SESSIONS_DIR) {
            " (`tractatus session gc` was collecting this session's copy)"
        } else {
            ""
        };
        Err(Error::CannotWrite {
            path: self.path.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                DirectoryGone(format!(
                    "its directory {} was moved or removed after this write opened it{why}; \
                     nothing written; run the write again",
                    self.root.child_path(&self.rel_dir).display()
                )),
            ),
        })
    }

    fn unreadable(&self, e: std::io::Error) -> Error {
        Error::usage(format!("directory of {} cannot be read: {e}", self.name)).with_source(e)
    }

    /// The refusal of the symlink `name` in `dir`: outside the repository (64) when it leads
    /// out of the root (as far as its own text says), else bad data (65). Never followed.
    fn link_refused(&self, dir: &DirHandle, name: &OsStr) -> Error {
        let link = dir.child_path(name);
        let leads_out = match dir.read_link(name) {
            Ok(Some(target)) => {
                !repo::normalize(&dir.path().join(target)).starts_with(self.root.path())
            }
            _ => false,
        };
        if leads_out {
            Error::usage(format!(
                "{} is a symbolic link that leads outside the repository at {}: state files must \
                 live inside it",
                link.display(),
                self.root.path().display()
            ))
        } else {
            Error::bad_data(format!(
                "{} is a symbolic link; tractatus never follows a symlink below the repository \
                 root (a co-user may have planted it); nothing written",
                link.display()
            ))
        }
    }

    /// The lock name (path relative to the repository root).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The absolute path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read the document, or the value at `pointer`, without a lease: commits are atomic
    /// renames, so a read sees one whole committed document. `None` when the file does not
    /// exist or nothing is at the pointer. Bad data (65) when the file is not a regular file or
    /// not valid JSON.
    pub fn read(&self, pointer: Option<&Pointer>) -> Result<Option<Value>> {
        let Some(dir) = self.dir_handle()? else {
            return Ok(None);
        };
        let Some(loaded) = load::load(&dir, &self.file_name, Path::new(&self.name))? else {
            return Ok(None);
        };
        // A read writes nothing, so its message does not say "nothing written".
        let doc = serde_json::from_slice(&loaded.bytes)
            .map_err(|e| Error::bad_data(format!("{} is not valid JSON ({e})", self.name)))?;
        drop(loaded);
        Ok(match pointer {
            None => Some(doc),
            Some(p) => take_pointer(doc, p),
        })
    }

    /// Apply `edit` under the lease and commit it atomically with a fencing check (built on
    /// [`StateFile::begin`] and [`PendingWrite::commit`]).
    ///
    /// When the file changed under us (someone wrote it outside our lease), `set`, `append` and
    /// `merge` are redone once on the new document, under the same lease; `update` is not (its
    /// command may have done more than print), and ends in [`Error::Conflict`].
    pub async fn write(
        &self,
        coordinator: &Coordinator,
        opts: &AcquireOptions,
        edit: Edit,
    ) -> Result<WriteOutcome> {
        // Only `merge` needs the whole document built; `set` and `append` edit the bytes read
        // (see `lean.rs`), `update` hands them to its command.
        self.write_via(Via::Acquire(coordinator, opts), edit).await
    }

    /// [`StateFile::write`] under a lease the caller holds in this process, joined rather than
    /// waited for (see [`StateFile::begin_under`]); `lease` stays held.
    pub async fn write_under(&self, lease: &Lease, edit: Edit) -> Result<WriteOutcome> {
        self.write_via(Via::Under(lease), edit).await
    }

    async fn write_via(&self, via: Via<'_>, edit: Edit) -> Result<WriteOutcome> {
        let build = matches!(edit, Edit::Merge(_));
        let mut pending = self.begin_with(via, build).await?;
        let result = match edit {
            Edit::Update(argv) => self.update(&mut pending, &argv).await,
            edit => match self.edit_and_commit(&mut pending, edit.clone()).await {
                Err(Error::Conflict { .. }) => match pending.reload() {
                    Ok(()) => self.edit_and_commit(&mut pending, edit).await,
                    Err(e) => Err(e),
                },
                other => other,
            },
        };
        // Once committed, the write stands: a lease that ran out after the rename changes
        // nothing about it, so release errors are not the caller's.
        let _ = pending.release().await;
        result
    }

    async fn edit_and_commit(
        &self,
        pending: &mut PendingWrite,
        edit: Edit,
    ) -> Result<WriteOutcome> {
        if !matches!(edit, Edit::Merge(_)) {
            return pending.commit_edit(edit).await;
        }
        let mut doc = pending
            .take_document()
            .unwrap_or_else(|| Value::Object(Map::new()));
        edit.apply(&mut doc, &self.name)?;
        pending.commit(&doc).await
    }

    /// `update`: the command gets the bytes read and prints the new document.
    async fn update(&self, pending: &mut PendingWrite, argv: &[String]) -> Result<WriteOutcome> {
        let old = pending.bytes().ok_or_else(|| {
            Error::bad_data(format!(
                "{} does not exist: `state update` needs a document to update (create it with `state set FILE \"\" '{{}}'`)",
                self.name
            ))
        })?;
        let out = match run_filter(pending.lease(), argv, old).await? {
            Filtered::Output(out) => out,
            Filtered::Failed(code) => return Ok(WriteOutcome::Aborted { code }),
        };
        // Replacing bad bytes with U+FFFD would commit a document the command never printed.
        let text = std::str::from_utf8(&out).map_err(|e| {
            Error::bad_data(format!(
                "the command's output is not valid UTF-8 (at byte {}); nothing written",
                e.valid_up_to()
            ))
        })?;
        let doc = parse_json(text, "the command's output")
            .map_err(|e| Error::bad_data(format!("{e}; nothing written")))?;
        drop(out);
        pending.commit(&doc).await
    }

    /// [`StateFile::parse`]'s check without building the document.
    pub(super) fn check(&self, bytes: &[u8]) -> Result<()> {
        if pending::text_deeper_than(bytes, MAX_DEPTH) {
            return Err(Error::bad_data(format!(
                "{} is not valid JSON (it nests deeper than {MAX_DEPTH} levels, the most it can \
                 read); nothing written",
                self.name
            )));
        }
        serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
            .map(drop)
            .map_err(|e| self.not_json(e))
    }

    pub(super) fn parse(&self, bytes: &[u8]) -> Result<Value> {
        serde_json::from_slice(bytes).map_err(|e| self.not_json(e))
    }

    pub(super) fn not_json(&self, e: serde_json::Error) -> Error {
        Error::bad_data(format!(
            "{} is not valid JSON ({e}); nothing written",
            self.name
        ))
    }
}
