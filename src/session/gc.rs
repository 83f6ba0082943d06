//! Cleanup: the directories of sessions that ended or went silent (`.claude/sessions/<id>/`),
//! and their registry entries, once they have been inactive for longer than a given time. A
//! live session's directory is never removed. A directory the registry does not know (a Redis
//! that was flushed, a session of another backend) counts as silent from its newest file's
//! modification time plus the idle time.
//!
//! A co-user can write into `.claude/`, so everything is found through the handle of
//! `.claude/sessions`, opened from the root's handle without following a symlink: a symlinked
//! `.claude` or `.claude/sessions` is refused (73, naming it) before anything is looked at. Only
//! a real directory named like a session id is collected, it is renamed and removed through
//! that handle, and the removal crosses neither a symlink nor a mount point.
//!
//! A session may write while it is collected: gc holds the leases of its copies from before
//! the move to the tombstone until after the removal (see `gc_guard.rs`), so that no write's
//! commit lands in a directory gc has already judged.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use rustix::fs::{FileType, Stat};
use serde::Serialize;

use super::gc_guard::{COPY_LOCK_WAIT, copy_lock_names, pause_before_removal_for_test, print_of};
use super::{SessionInfo, Sessions, check_session_id, now_ms};
use crate::dir_handle::DirHandle;
use crate::error::{Error, Result};
use crate::settings::SESSIONS_DIR;
use crate::{Coordinator, Lease};

/// One session collected by [`Sessions::gc`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Removed {
    /// The session id.
    pub id: String,
    /// `ended`, `silent`, or `unknown` (a directory the registry did not know).
    pub state: String,
    /// Since when it was inactive, ms since the Unix epoch.
    pub inactive_since_ms: u64,
    /// Its directory, relative to the repository root, when it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
}

/// A session [`Sessions::gc`] left for a later run: a lock of one of its copies was held
/// (a write, `lock run` or `withLock` on it) for longer than gc waits, or could not be taken.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Busy {
    /// The session id.
    pub id: String,
    /// Why it was left, one line.
    pub reason: String,
}

/// What [`Sessions::gc`] did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Collected {
    /// The sessions collected: directory removed, registry entry forgotten.
    pub removed: Vec<Removed>,
    /// The inactive sessions left as they are this time, because a copy of theirs was locked.
    pub busy: Vec<Busy>,
}

impl Sessions {
    /// Remove the directories and registry entries of the sessions that ended or went silent
    /// at least `older_than` ago (zero: all of them); live sessions are kept, whatever else.
    ///
    /// A session may come back to life while this runs, so nothing is removed on the first
    /// look alone. Before a doomed directory is touched, the lease of each of its state-file
    /// copies (the lock a write of that copy takes: each `per_session` file's copy, and each
    /// file already there) is taken from `coordinator()`, called only when there is a
    /// directory to collect, and held until the directory is removed or back: no write is ever
    /// between its read and its commit meanwhile. A session whose locks are not had within
    /// 2 s (`COPY_LOCK_WAIT`) is left for a later run ([`Collected::busy`]). The directory is
    /// then renamed to a tombstone (`.gc-<id>-<pid>`, no session's name, so a late write of the
    /// session does not recreate the doomed one), the registry is read again and the
    /// tombstone's files looked at again, and only a session still inactive, whose files
    /// nobody touched since the first look, is deleted; any other is renamed back (or, if the
    /// session made a new directory meanwhile, its tombstone is left for a look by hand).
    pub async fn gc<C, F>(
        &self,
        older_than: Duration,
        per_session: &[String],
        coordinator: C,
    ) -> Result<Collected>
    where
        C: FnOnce() -> F,
        F: Future<Output = Result<Coordinator>>,
    {
        // First, and before any registry: a planted link is refused before anything is read.
        let sessions_dir = open_sessions_dir(&self.root)?;
        let dirs = match &sessions_dir {
            Some(d) => session_dirs(d)?,
            None => Vec::new(),
        };
        // The first look at the files comes before the registry's: a write from here on
        // changes a directory's print and keeps it, whatever the registry says of its session
        // (an ended session's straggler included).
        let printed: HashMap<String, u64> = match &sessions_dir {
            Some(d) => dirs
                .iter()
                .map(|id| (id.clone(), print_of(d, OsStr::new(id))))
                .collect(),
            None => HashMap::new(),
        };
        let now = now_ms();
        let cutoff = now.saturating_sub(older_than.as_millis() as u64);
        let known = self.list().await?;
        let mut candidates = Vec::new();
        let mut live = std::collections::HashSet::new();
        for s in &known {
            match s.entry.inactive_since(now, self.idle) {
                None => {
                    live.insert(s.entry.id.clone());
                }
                Some(since) if since <= cutoff => candidates.push(Removed {
                    id: s.entry.id.clone(),
                    state: s.state.as_str().to_owned(),
                    inactive_since_ms: since,
                    dir: None,
                }),
                Some(_) => {}
            }
        }
        let idle = self.idle.as_millis() as u64;
        for id in dirs {
            if live.contains(&id) {
                continue;
            }
            let rel = Some(format!("{SESSIONS_DIR}/{id}/"));
            if let Some(r) = candidates.iter_mut().find(|r| r.id == id) {
                r.dir = rel;
            } else if !known.iter().any(|s| s.entry.id == id)
                && let Some(d) = &sessions_dir
            {
                let since = newest_mtime(d, OsStr::new(&id), true).saturating_add(idle);
                if since <= cutoff {
                    candidates.push(Removed {
                        id,
                        state: "unknown".into(),
                        inactive_since_ms: since,
                        dir: rel,
                    });
                }
            }
        }
        let Some(d) = sessions_dir
            .as_ref()
            .filter(|_| candidates.iter().any(|r| r.dir.is_some()))
        else {
            // No directory to collect: registry entries only, each still inactive at a
            // second look.
            let again = self.list().await?;
            let now = now_ms();
            let removed: Vec<Removed> = candidates
                .into_iter()
                .filter(|r| self.inactive_in(&again, &r.id, now, cutoff))
                .collect();
            let ids: Vec<String> = removed.iter().map(|r| r.id.clone()).collect();
            self.forget(&ids).await?;
            return Ok(Collected {
                removed,
                busy: Vec::new(),
            });
        };
        let coordinator = coordinator().await?;
        let mut held = Vec::new();
        let first = FirstLook {
            candidates: &candidates,
            printed: &printed,
            cutoff,
        };
        let outcome = self
            .collect_dirs(d, &coordinator, per_session, &first, &mut held)
            .await;
        for lease in held.into_iter().rev() {
            let _ = lease.release().await;
        }
        let (kept, busy) = outcome?;
        let removed: Vec<Removed> = candidates
            .into_iter()
            .filter(|r| !kept.contains(&r.id) && !busy.iter().any(|b| b.id == r.id))
            .collect();
        let ids: Vec<String> = removed.iter().map(|r| r.id.clone()).collect();
        self.forget(&ids).await?;
        Ok(Collected { removed, busy })
    }

    /// Under the locks of their copies (pushed onto `held`, released by the caller on every
    /// path), move each candidate's directory to its tombstone, look again, and remove it or
    /// move it back. The ids kept (back to life, or gone from the registry's second look as
    /// live), and the sessions left busy.
    async fn collect_dirs(
        &self,
        d: &DirHandle,
        coordinator: &Coordinator,
        per_session: &[String],
        first: &FirstLook<'_>,
        held: &mut Vec<Lease>,
    ) -> Result<(HashSet<String>, Vec<Busy>)> {
        let FirstLook {
            candidates,
            printed,
            cutoff,
        } = *first;
        let mut busy = Vec::new();
        // Each doomed session: its id, its tombstone, and where its leases are in `held`.
        let mut doomed: Vec<(String, OsString, std::ops::Range<usize>)> = Vec::new();
        for r in candidates.iter().filter(|r| r.dir.is_some()) {
            let names = match copy_lock_names(d, &r.id, per_session) {
                Ok(names) => names,
                Err(reason) => {
                    busy.push(Busy {
                        id: r.id.clone(),
                        reason,
                    });
                    continue;
                }
            };
            let leases = match coordinator
                .acquire_all(&names, COPY_LOCK_WAIT, |_| None)
                .await
            {
                Ok(leases) => leases,
                Err(e) => {
                    busy.push(Busy {
                        id: r.id.clone(),
                        reason: format!(
                            "{}; run gc again later",
                            crate::error::shorten(&e.to_string())
                        ),
                    });
                    continue;
                }
            };
            let first = held.len();
            held.extend(leases);
            let entombed = entomb(d, &r.id);
            match entombed {
                Ok(Some(tomb)) => doomed.push((r.id.clone(), tomb, first..held.len())),
                Ok(None) => {}
                Err(e) => {
                    put_back(d, &doomed);
                    return Err(e);
                }
            }
        }
        let again = match self.list().await {
            Ok(again) => again,
            Err(e) => {
                put_back(d, &doomed);
                return Err(e);
            }
        };
        let now = now_ms();
        let still_inactive = |id: &str| self.inactive_in(&again, id, now, cutoff);
        let mut kept = HashSet::new();
        for (id, tomb, leases) in doomed {
            let untouched = printed.get(&id) == Some(&print_of(d, &tomb));
            let locked = held[leases].iter().all(|l| l.check_valid().is_ok());
            if still_inactive(&id) && untouched && locked {
                pause_before_removal_for_test().await;
                if let Err(e) = d.remove_tree(&tomb) {
                    let _ = rename_back(d, &tomb, &id);
                    return Err(Error::CannotWrite {
                        path: d.child_path(&tomb),
                        source: e,
                    });
                }
            } else {
                // Back to life: its directory back in place (unless it made a new one).
                let _ = rename_back(d, &tomb, &id);
                kept.insert(id);
            }
        }
        for r in candidates.iter().filter(|r| !still_inactive(&r.id)) {
            kept.insert(r.id.clone());
        }
        Ok((kept, busy))
    }
}

/// What gc's first look found: the sessions to collect, each directory's print, and the
/// cutoff their inactivity is judged by.
#[derive(Clone, Copy)]
struct FirstLook<'a> {
    candidates: &'a [Removed],
    printed: &'a HashMap<String, u64>,
    cutoff: u64,
}

impl Sessions {
    /// Whether session `id` is inactive since `cutoff` or earlier in the registry's answer
    /// `again` (unknown to it, or forgotten by another cleanup meanwhile, counts as inactive).
    fn inactive_in(&self, again: &[SessionInfo], id: &str, now: u64, cutoff: u64) -> bool {
        match again.iter().find(|s| s.entry.id == id) {
            Some(s) => s
                .entry
                .inactive_since(now, self.idle)
                .is_some_and(|since| since <= cutoff),
            None => true,
        }
    }
}

/// Every tombstone of `doomed` back under its session's name (gc is giving up half-way).
fn put_back(d: &DirHandle, doomed: &[(String, OsString, std::ops::Range<usize>)]) {
    for (id, tomb, _) in doomed {
        let _ = rename_back(d, tomb, id);
    }
}

/// `.claude/sessions` of `root`, reached from the root's handle without following a symlink;
/// `None` when it does not exist. A symlink (or a file) at `.claude` or `.claude/sessions` is
/// refused (73, naming it).
pub(crate) fn open_sessions_dir(root: &Path) -> Result<Option<DirHandle>> {
    crate::repo::open_root(root)?
        .open_dir(Path::new(SESSIONS_DIR))
        .map_err(|source| Error::CannotWrite {
            path: root.join(SESSIONS_DIR),
            source,
        })
}

/// The lstat of `name` in `dir` when it is a real directory (not a link, not a file).
fn real_dir(dir: &DirHandle, name: &OsStr) -> Option<Stat> {
    dir.stat(name)
        .ok()
        .flatten()
        .filter(|s| FileType::from_raw_mode(s.st_mode) == FileType::Directory)
}

/// Rename the directory of session `id` to its tombstone, through the sessions handle; the
/// tombstone's name, or `None` when there is nothing (any more) to collect: gone (another
/// cleanup took it), or not a real directory (a link or file planted under a session's name is
/// never a session's directory, and stays where it is).
fn entomb(dir: &DirHandle, id: &str) -> Result<Option<OsString>> {
    if real_dir(dir, OsStr::new(id)).is_none() {
        return Ok(None);
    }
    let tomb = OsString::from(format!(".gc-{id}-{}", std::process::id()));
    match dir.rename(OsStr::new(id), &tomb) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::CannotWrite {
                path: dir.child_path(id),
                source: e,
            });
        }
    }
    // Swapped for a link between the look and the rename: put it back, touch nothing.
    if real_dir(dir, &tomb).is_none() {
        let _ = rename_back(dir, &tomb, id);
        return Ok(None);
    }
    Ok(Some(tomb))
}

/// The tombstone back under the session's name, unless the session made a new directory
/// meanwhile (then the tombstone stays for a look by hand).
fn rename_back(dir: &DirHandle, tomb: &OsStr, id: &str) -> std::io::Result<()> {
    if dir.stat(OsStr::new(id))?.is_some() {
        return Ok(());
    }
    dir.rename(tomb, OsStr::new(id))
}

/// The directories under `.claude/sessions/` named like session ids (a symlink is not one).
fn session_dirs(dir: &DirHandle) -> Result<Vec<String>> {
    let listing = dir.entries().map_err(|e| {
        Error::internal(format!("cannot list {}: {e}", dir.path().display())).with_source(e)
    })?;
    Ok(listing
        .into_iter()
        .filter(|(_, kind)| *kind == FileType::Directory)
        .filter_map(|(name, _)| {
            let id = name.into_string().ok()?;
            check_session_id(&id).ok()?;
            Some(id)
        })
        .collect())
}

/// The most entries [`newest_mtime`] looks at, and the deepest it goes: a session's directory
/// holds a few state files; a co-user's tree of millions is not walked whole.
const MTIME_ENTRIES: usize = 100_000;
const MTIME_DEPTH: usize = 64;

/// The newest modification time of anything below the directory `name` of `dir` (and of the
/// directory itself with `own`), ms since the Unix epoch; through handles, never through a
/// link.
fn newest_mtime(dir: &DirHandle, name: &OsStr, own: bool) -> u64 {
    let mut newest = if own {
        real_dir(dir, name).map_or(0, |s| mtime_ms(&s))
    } else {
        0
    };
    if let Ok(Some(top)) = dir.open_dir(Path::new(name)) {
        let mut budget = MTIME_ENTRIES;
        newest_below(&top, 0, &mut budget, &mut newest);
    }
    newest
}

/// Depth first, so that at most [`MTIME_DEPTH`] handles are open at once.
fn newest_below(dir: &DirHandle, depth: usize, budget: &mut usize, newest: &mut u64) {
    for (entry, kind) in dir.entries().unwrap_or_default() {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        if let Ok(Some(s)) = dir.stat(&entry) {
            *newest = (*newest).max(mtime_ms(&s));
        }
        if kind == FileType::Directory
            && depth < MTIME_DEPTH
            && let Ok(Some(sub)) = dir.open_dir(Path::new(&entry))
        {
            newest_below(&sub, depth + 1, budget, newest);
        }
    }
}

/// A stat's modification time, ms since the Unix epoch (0 before it). The fields' types differ
/// between targets, hence the conversions.
#[allow(clippy::useless_conversion)]
pub(super) fn mtime_ms(s: &Stat) -> u64 {
    let secs = u64::try_from(s.st_mtime).unwrap_or(0);
    let nanos = u64::try_from(s.st_mtime_nsec).unwrap_or(0);
    secs.saturating_mul(1000).saturating_add(nanos / 1_000_000)
}

#[cfg(test)]
mod tests;
