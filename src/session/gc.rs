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
    pub async fn gc(&self, older_than: Duration) -> Result<Vec<Removed>> {
        let now = now_ms();
        let cutoff = now.saturating_sub(older_than.as_millis() as u64);
        let known = self.list().await?;
        let mut removed = Vec::new();
        let mut live = std::collections::HashSet::new();
        for s in &known {
            match s.entry.inactive_since(now, self.idle) {
                None => {
                    live.insert(s.entry.id.clone());
                }
                Some(since) if since <= cutoff => removed.push(Removed {
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
            if let Some(r) = removed.iter_mut().find(|r| r.id == id) {
                r.dir = rel;
            } else if !known.iter().any(|s| s.entry.id == id) {
                let since = newest_mtime(&dir).saturating_add(idle);
                if since <= cutoff {
                    removed.push(Removed {
                        id,
                        state: "unknown".into(),
                        inactive_since_ms: since,
                        dir: rel,
                    });
                }
            }
        }
        for r in &removed {
            if r.dir.is_some() {
                let dir = sessions_dir.join(&r.id);
                std::fs::remove_dir_all(&dir)
                    .or_else(gone_is_fine)
                    .map_err(|e| Error::CannotWrite {
                        path: dir.clone(),
                        source: e,
                    })?;
            }
        }
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

/// The newest modification time of `dir` and anything below it, ms since the Unix epoch.
fn newest_mtime(dir: &Path) -> u64 {
    let mtime = |p: &Path| {
        std::fs::symlink_metadata(p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64)
    };
    let mut newest = mtime(dir);
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
