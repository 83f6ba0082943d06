//! The registry with local locks: one small JSON file per session in
//! `.claude/.tractatus/sessions/<id>.json` (git-ignored, this machine only). A registration or an
//! end replaces the file atomically (temp file, rename); a touch only moves the file's mtime
//! forward, so that the hot path (every `state` write) costs one `utimensat`, and the last
//! activity is the later of the recorded one and the mtime.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{AtFlags, FileType, Timespec, Timestamps};

use super::{SessionEntry, SessionStore};
use crate::backend::{NodeError, NodeFuture};
use crate::dir_handle::DirHandle;
use crate::error::{Error, Result};

/// The longest registry entry read (an entry is a few hundred bytes).
const ENTRY_CAP: u64 = 64 * 1024;

/// The registry files of one repository, reached through the root's handle: a co-user can
/// write into `.claude/`, so nothing there is followed through a symlink, read from a FIFO or
/// device, or read past a cap, and entries are new files renamed into place.
pub(crate) struct LocalSessions {
    root: DirHandle,
    dir: PathBuf,
}

/// The registry's directory below the root.
fn rel_dir() -> PathBuf {
    Path::new(crate::repo::WORK_DIR).join("sessions")
}

impl LocalSessions {
    /// The registry of the repository at `root`, kept in its private working directory
    /// (created, git-ignored, on the first registration: looking creates nothing). A symlink
    /// at `.claude`, `.claude/.tractatus` or its `sessions` is refused here (73, naming it).
    pub(crate) fn open(root: &Path) -> Result<Self> {
        let handle = crate::repo::open_root(root)?;
        handle
            .open_dir(&rel_dir())
            .map_err(|source| Error::CannotWrite {
                path: root.join(rel_dir()),
                source,
            })?;
        Ok(LocalSessions {
            root: handle,
            dir: root.join(rel_dir()),
        })
    }

    fn file(id: &str) -> OsString {
        OsString::from(format!("{id}.json"))
    }

    fn fail(&self, what: &str, path: &Path, e: impl std::fmt::Display) -> NodeError {
        NodeError::new(format!("{what} {}: {e}", path.display()))
    }

    /// The registry's directory as it is now; `None` when nothing was registered yet.
    fn look(&self) -> Result<Option<DirHandle>, NodeError> {
        self.root
            .open_dir(&rel_dir())
            .map_err(|e| self.fail("cannot open", &self.dir, e))
    }

    /// The entry in file `name` of `dir`, its last activity lifted to the file's mtime; `None`
    /// when absent.
    fn read(&self, dir: &DirHandle, name: &OsStr) -> Result<Option<SessionEntry>, NodeError> {
        let path = dir.child_path(name);
        let (file, stat) = match dir.open_read(name) {
            Ok(Some(opened)) => opened,
            Ok(None) => return Ok(None),
            Err(e) => return Err(self.fail("cannot read", &path, e)),
        };
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(self.fail("cannot read", &path, "not a regular file"));
        }
        let mut bytes = Vec::new();
        file.take(ENTRY_CAP + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.fail("cannot read", &path, e))?;
        if bytes.len() as u64 > ENTRY_CAP {
            return Err(self.fail("cannot read", &path, "larger than an entry can be"));
        }
        let mut entry: SessionEntry =
            serde_json::from_slice(&bytes).map_err(|e| self.fail("bad entry", &path, e))?;
        let touched = super::gc::mtime_ms(&stat);
        // An end rewrites the file: its mtime then says when it ended, not when it was active.
        if entry.ended_ms.is_none() {
            entry.last_active_ms = entry.last_active_ms.max(touched);
        }
        Ok(Some(entry))
    }

    /// Replace (or, with `fresh`, only create) the entry's file atomically: a new temp file
    /// (`O_EXCL`) renamed into place, so a link planted at the entry's name is replaced, never
    /// written through. False when `fresh` and it existed.
    fn write(&self, entry: &SessionEntry, fresh: bool) -> Result<bool, NodeError> {
        let dir = crate::repo::work_dir_at(&self.root, Some("sessions"))
            .map_err(|e| NodeError::new(e.to_string()))?;
        let name = Self::file(&entry.id);
        let path = dir.child_path(&name);
        let body = serde_json::to_vec(entry).map_err(|e| self.fail("cannot encode", &path, e))?;
        // Readable by the team (`session list`): 0666 less the umask.
        let (mut tmp, tmp_name) = dir
            .create_temp(".entry-", ".tmp", 0o666)
            .map_err(|e| self.fail("cannot write in", dir.path(), e))?;
        let placed = match tmp.write_all(&body) {
            Err(e) => Err(self.fail("cannot write", &path, e)),
            Ok(()) if fresh => match dir.rename_noreplace(&tmp_name, &name) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(self.fail("cannot create", &path, e)),
            },
            Ok(()) => dir
                .rename(&tmp_name, &name)
                .map(|()| true)
                .map_err(|e| self.fail("cannot replace", &path, e)),
        };
        if !matches!(placed, Ok(true)) {
            let _ = dir.remove_file(&tmp_name);
        }
        placed
    }

    /// Move the entry's mtime to its last activity (`utimensat` with `AT_SYMLINK_NOFOLLOW`
    /// through the directory's handle: nothing is opened, so a FIFO cannot make it wait).
    fn touch_file(&self, entry: &SessionEntry) -> Result<(), NodeError> {
        let Some(dir) = self.look()? else {
            return Ok(());
        };
        let name = Self::file(&entry.id);
        let path = dir.child_path(&name);
        let at = Duration::from_millis(entry.last_active_ms);
        let modified = Timespec {
            tv_sec: i64::try_from(at.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(at.subsec_nanos()),
        };
        let times = Timestamps {
            last_access: Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_OMIT,
            },
            last_modification: modified,
        };
        match dir.stat(&name) {
            // Not registered (never started, or collected): activity registers nothing, or
            // every `lock run` without a session would leave a phantom behind.
            Ok(None) => return Ok(()),
            Ok(Some(s)) if FileType::from_raw_mode(s.st_mode) != FileType::RegularFile => {
                return Err(self.fail("cannot touch", &path, "not a regular file"));
            }
            Ok(Some(_)) => {}
            Err(e) => return Err(self.fail("cannot touch", &path, e)),
        }
        match rustix::fs::utimensat(dir.fd(), &name, &times, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(self.fail("cannot touch", &path, std::io::Error::from(e))),
        }
    }
}

impl SessionStore for LocalSessions {
    fn label(&self) -> String {
        self.dir.display().to_string()
    }

    fn register<'a>(&'a self, _ns: &'a str, entry: &'a SessionEntry) -> NodeFuture<'a, ()> {
        Box::pin(async move { self.write(entry, false).map(drop) })
    }

    fn touch<'a>(&'a self, _ns: &'a str, entry: &'a SessionEntry) -> NodeFuture<'a, ()> {
        Box::pin(async move { self.touch_file(entry) })
    }

    fn end<'a>(&'a self, _ns: &'a str, id: &'a str, at_ms: u64) -> NodeFuture<'a, bool> {
        Box::pin(async move {
            let Some(dir) = self.look()? else {
                return Ok(false);
            };
            let Some(mut entry) = self.read(&dir, &Self::file(id))? else {
                return Ok(false);
            };
            if entry.ended_ms.is_none() {
                entry.ended_ms = Some(at_ms);
                self.write(&entry, false)?;
            }
            Ok(true)
        })
    }

    fn entries<'a>(&'a self, _ns: &'a str) -> NodeFuture<'a, Vec<SessionEntry>> {
        Box::pin(async move {
            let Some(dir) = self.look()? else {
                return Ok(Vec::new());
            };
            let listing = dir
                .entries()
                .map_err(|e| self.fail("cannot list", &self.dir, e))?;
            let mut all = Vec::new();
            for (name, kind) in listing {
                let is_entry = kind == FileType::RegularFile
                    && name
                        .to_str()
                        .and_then(|n| n.strip_suffix(".json"))
                        .is_some_and(|id| super::check_session_id(id).is_ok());
                // Another process's temp file, a file removed meanwhile, or something planted
                // (a link, a FIFO): not an entry.
                if let (true, Ok(Some(e))) = (is_entry, self.read(&dir, &name)) {
                    all.push(e);
                }
            }
            Ok(all)
        })
    }

    fn forget<'a>(&'a self, _ns: &'a str, ids: &'a [String]) -> NodeFuture<'a, ()> {
        Box::pin(async move {
            let Some(dir) = self.look()? else {
                return Ok(());
            };
            for id in ids {
                let name = Self::file(id);
                dir.remove_file(&name)
                    .map_err(|e| self.fail("cannot remove", &dir.child_path(&name), e))?;
            }
            Ok(())
        })
    }
}
