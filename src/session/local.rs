//! The registry with local locks: one small JSON file per session in
//! `.claude/.tractatus/sessions/<id>.json` (git-ignored, this machine only). A registration or an
//! end replaces the file atomically (temp file, rename); a touch only moves the file's mtime
//! forward, so that the hot path (every `state` write) costs one `utimensat`, and the last
//! activity is the later of the recorded one and the mtime.

use std::fs::{File, FileTimes};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use super::{SessionEntry, SessionStore};
use crate::node::{NodeError, NodeFuture};

/// The registry files of one repository.
pub(crate) struct LocalSessions {
    root: PathBuf,
    dir: PathBuf,
}

impl LocalSessions {
    /// The registry of the repository at `root`, kept in its private working directory
    /// (created, git-ignored, on the first registration: looking creates nothing).
    pub(crate) fn new(root: &Path) -> Self {
        LocalSessions {
            root: root.to_path_buf(),
            dir: root.join(crate::repo::WORK_DIR).join("sessions"),
        }
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn fail(&self, what: &str, path: &Path, e: impl std::fmt::Display) -> NodeError {
        NodeError::new(format!("{what} {}: {e}", path.display()))
    }

    /// The entry in `path`, its last activity lifted to the file's mtime; `None` when absent.
    fn read(&self, path: &Path) -> Result<Option<SessionEntry>, NodeError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.fail("cannot read", path, e)),
        };
        let mut entry: SessionEntry =
            serde_json::from_slice(&bytes).map_err(|e| self.fail("bad entry", path, e))?;
        let touched = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64);
        // An end rewrites the file: its mtime then says when it ended, not when it was active.
        if entry.ended_ms.is_none() {
            entry.last_active_ms = entry.last_active_ms.max(touched);
        }
        Ok(Some(entry))
    }

    /// Replace (or, with `fresh`, only create) the entry's file atomically; false when `fresh`
    /// and it existed.
    fn write(&self, entry: &SessionEntry, fresh: bool) -> Result<bool, NodeError> {
        crate::repo::work_dir(&self.root).map_err(|e| NodeError::new(e.to_string()))?;
        std::fs::create_dir_all(&self.dir).map_err(|e| self.fail("cannot create", &self.dir, e))?;
        let path = self.path(&entry.id);
        let body = serde_json::to_vec(entry).map_err(|e| self.fail("cannot encode", &path, e))?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)
            .map_err(|e| self.fail("cannot write in", &self.dir, e))?;
        tmp.write_all(&body)
            .map_err(|e| self.fail("cannot write", tmp.path(), e))?;
        if fresh {
            return match tmp.persist_noclobber(&path) {
                Ok(_) => Ok(true),
                Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(self.fail("cannot create", &path, e.error)),
            };
        }
        tmp.persist(&path)
            .map(|_| true)
            .map_err(|e| self.fail("cannot replace", &path, e.error))
    }

    fn touch_file(&self, entry: &SessionEntry) -> Result<(), NodeError> {
        let path = self.path(&entry.id);
        let at = UNIX_EPOCH + Duration::from_millis(entry.last_active_ms);
        match File::options().write(true).open(&path) {
            Ok(f) => f
                .set_times(FileTimes::new().set_modified(at))
                .map_err(|e| self.fail("cannot touch", &path, e)),
            // Not registered (never started, or collected): activity registers nothing, or
            // every `lock run` without a session would leave a phantom behind.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.fail("cannot touch", &path, e)),
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
            let Some(mut entry) = self.read(&self.path(id))? else {
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
            let listing = match std::fs::read_dir(&self.dir) {
                Ok(l) => l,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(self.fail("cannot list", &self.dir, e)),
            };
            let mut all = Vec::new();
            for item in listing.flatten() {
                let path = item.path();
                let is_entry = path.extension().is_some_and(|x| x == "json")
                    && path
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .is_some_and(|s| super::check_session_id(s).is_ok());
                // Another process's temp file, or a file removed meanwhile: not an entry.
                if let (true, Ok(Some(e))) = (is_entry, self.read(&path)) {
                    all.push(e);
                }
            }
            Ok(all)
        })
    }

    fn forget<'a>(&'a self, _ns: &'a str, ids: &'a [String]) -> NodeFuture<'a, ()> {
        Box::pin(async move {
            for id in ids {
                let path = self.path(id);
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(self.fail("cannot remove", &path, e));
                    }
                    _ => {}
                }
            }
            Ok(())
        })
    }
}
