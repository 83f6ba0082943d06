//! Cleanup: the directories of sessions that ended or went silent (`.claude/sessions/<id>/`),
//! and their registry entries, once they have been inactive for longer than a given time. A
//! live session's directory is never removed. A directory the registry does not know (a Redis
//! that was flushed, a session of another backend) counts as silent from its newest file's
//! modification time plus the idle time.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use super::{Sessions, check_session_id, now_ms};
use crate::error::{Error, Result};
use crate::settings::SESSIONS_DIR;

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

impl Sessions {
    /// Remove the directories and registry entries of the sessions that ended or went silent
    /// at least `older_than` ago (zero: all of them); live sessions are kept, whatever else.
    ///
    /// A session may come back to life while this runs, so nothing is removed on the first
    /// look alone: each doomed directory is first renamed to a tombstone (`.gc-<id>-<pid>`, no
    /// session's name, so a late write of the session recreates its own directory rather than
    /// landing in the doomed one), then the registry is read again and the tombstone's files
    /// looked at again, and only a session still inactive (and a directory nobody wrote since)
    /// is deleted; any other is renamed back (or, if the session made a new directory
    /// meanwhile, its tombstone is left for a look by hand).
    pub async fn gc(&self, older_than: Duration) -> Result<Vec<Removed>> {
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
        let sessions_dir = self.root.join(SESSIONS_DIR);
        let idle = self.idle.as_millis() as u64;
        for (id, dir) in session_dirs(&sessions_dir)? {
            if live.contains(&id) {
                continue;
            }
            let rel = Some(format!("{SESSIONS_DIR}/{id}/"));
            if let Some(r) = candidates.iter_mut().find(|r| r.id == id) {
                r.dir = rel;
            } else if !known.iter().any(|s| s.entry.id == id) {
                let since = newest_mtime(&dir, true).saturating_add(idle);
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
        // First look done: move the doomed directories aside, then look again.
        let mut doomed = Vec::new();
        for r in &candidates {
            if r.dir.is_some() {
                let dir = sessions_dir.join(&r.id);
                let seen = newest_mtime(&dir, true);
                let tomb = sessions_dir.join(format!(".gc-{}-{}", r.id, std::process::id()));
                match std::fs::rename(&dir, &tomb) {
                    Ok(()) => doomed.push((r.id.clone(), tomb, seen)),
                    // Another cleanup took it first.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(Error::CannotWrite {
                            path: dir,
                            source: e,
                        });
                    }
                }
            }
        }
        let again = self.list().await?;
        let now = now_ms();
        let still_inactive = |id: &str| match again.iter().find(|s| s.entry.id == id) {
            Some(s) => s
                .entry
                .inactive_since(now, self.idle)
                .is_some_and(|since| since <= cutoff),
            // Unknown, or forgotten by another cleanup meanwhile.
            None => true,
        };
        let mut kept = std::collections::HashSet::new();
        for (id, tomb, seen) in doomed {
            let dir = sessions_dir.join(&id);
            if still_inactive(&id) && newest_mtime(&tomb, false) <= seen {
                std::fs::remove_dir_all(&tomb)
                    .or_else(gone_is_fine)
                    .map_err(|e| Error::CannotWrite {
                        path: tomb.clone(),
                        source: e,
                    })?;
            } else {
                // Back to life: its directory back in place (unless it made a new one).
                let _ = std::fs::rename(&tomb, &dir);
                kept.insert(id);
            }
        }
        let removed: Vec<Removed> = candidates
            .into_iter()
            .filter(|r| !kept.contains(&r.id) && still_inactive(&r.id))
            .collect();
        let ids: Vec<String> = removed.iter().map(|r| r.id.clone()).collect();
        self.forget(&ids).await?;
        Ok(removed)
    }
}

fn gone_is_fine(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

/// The directories under `.claude/sessions/` named like session ids (a symlink is not one).
fn session_dirs(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let listing = match std::fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(
                Error::internal(format!("cannot list {}: {e}", dir.display())).with_source(e),
            );
        }
    };
    Ok(listing
        .flatten()
        .filter(|i| i.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|i| {
            let id = i.file_name().into_string().ok()?;
            check_session_id(&id).ok()?;
            Some((id, i.path()))
        })
        .collect())
}

/// The newest modification time of anything below `dir` (and of `dir` itself with `own`), ms
/// since the Unix epoch.
fn newest_mtime(dir: &Path, own: bool) -> u64 {
    let mtime = |p: &Path| {
        std::fs::symlink_metadata(p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64)
    };
    let mut newest = if own { mtime(dir) } else { 0 };
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for item in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = item.path();
            newest = newest.max(mtime(&p));
            if item.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
    }
    newest
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::node::NodeFuture;
    use crate::session::{SessionEntry, SessionStore};

    /// A registry holding one session, `s1`: silent at the first look, then (when
    /// `comes_back`) active again from the second look on, as if it wrote in between.
    struct Flaky {
        looks: AtomicUsize,
        comes_back: bool,
    }

    impl SessionStore for Flaky {
        fn label(&self) -> String {
            "flaky".into()
        }
        fn register<'a>(&'a self, _: &'a str, _: &'a SessionEntry) -> NodeFuture<'a, ()> {
            Box::pin(async { Ok(()) })
        }
        fn touch<'a>(&'a self, _: &'a str, _: &'a SessionEntry) -> NodeFuture<'a, ()> {
            Box::pin(async { Ok(()) })
        }
        fn end<'a>(&'a self, _: &'a str, _: &'a str, _: u64) -> NodeFuture<'a, bool> {
            Box::pin(async { Ok(false) })
        }
        fn entries<'a>(&'a self, _: &'a str) -> NodeFuture<'a, Vec<SessionEntry>> {
            let first = self.looks.fetch_add(1, Ordering::SeqCst) == 0;
            let active = if first || !self.comes_back {
                1
            } else {
                now_ms()
            };
            Box::pin(async move {
                Ok(vec![SessionEntry {
                    id: "s1".into(),
                    started_ms: 1,
                    last_active_ms: active,
                    ..Default::default()
                }])
            })
        }
        fn forget<'a>(&'a self, _: &'a str, _: &'a [String]) -> NodeFuture<'a, ()> {
            Box::pin(async { Ok(()) })
        }
    }

    async fn gc_with(comes_back: bool) -> (Vec<Removed>, Vec<String>) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let dir = root.join(SESSIONS_DIR).join("s1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("session-state.json"), "{}").unwrap();
        let store = Arc::new(Flaky {
            looks: AtomicUsize::new(0),
            comes_back,
        });
        let sessions = Sessions::new(
            vec![store],
            "ns".into(),
            root.to_path_buf(),
            Duration::from_secs(60),
            Duration::from_secs(5),
        );
        let removed = sessions.gc(Duration::ZERO).await.unwrap();
        let mut left: Vec<String> = std::fs::read_dir(root.join(SESSIONS_DIR))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().into_string().unwrap())
            .collect();
        left.sort();
        (removed, left)
    }

    #[tokio::test]
    async fn a_session_that_comes_back_to_life_during_cleanup_keeps_its_directory() {
        let (removed, left) = gc_with(true).await;
        assert_eq!(removed, []);
        assert_eq!(left, ["s1"], "no tombstone left, the directory back");
        let (removed, left) = gc_with(false).await;
        assert_eq!(removed.len(), 1);
        assert!(left.is_empty(), "{left:?}");
    }
}
