//! Sessions that see each other: a live registry of the sessions working on a repository, the
//! per-session copies of state files, and the cleanup and totals built on both.
//!
//! A session is one agent's (or CI job's) process tree, named by a session id (Claude Code's
//! `session_id`, or one `tractatus session start` makes). The registry keeps one entry per
//! session (id, host, pid, repository, command, start time, last activity, end time) in Redis
//! (keys of [`crate::keys::SessionKeys`], one hash slot) or, with local locks, in files under
//! `.claude/.tractatus/sessions/`. `session start` registers a session; every `state` write and
//! `lock run` carrying the id of a registered session refreshes its last activity (an id never
//! started, or collected, registers nothing); quiet for longer than the idle time, a session is *silent*.
//! With several Redlock masters the registry is written to every master that answers and read
//! as the union of what they hold: it is advisory (it says who is around, it guards nothing),
//! so a master that missed a write costs accuracy, never safety.
//!
//! # Files
//! - `mod.rs`: [`Sessions`], the registry's front (start, touch, end, list), and session ids.
//! - `store.rs`: [`SessionStore`], the seam to one backend (Redis: `redis_node/sessions.rs`).
//! - `local.rs`: the registry as files, for local locks.
//! - `files.rs`: where a per-session state file lives, and its copy from the shared file.
//! - `gc.rs`: removing the directories of ended and silent sessions.
//! - `gc_guard.rs`: what gc holds while it collects one: its copies' leases, its first look.
//! - `stats.rs`: totals of numeric fields across the live sessions' files.

mod files;
mod gc;
mod gc_guard;
mod local;
mod stats;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use crate::backend::{SessionEntry, SessionStore};
pub(crate) use files::{seed_from_shared, session_copy};
pub use gc::{Busy, Collected, Removed};
pub(crate) use local::LocalSessions;
pub use stats::{FieldTotals, Stats};

/// Longest session id: 64 characters.
pub(crate) const MAX_SESSION_ID: usize = 64;

/// Check a session id before it names a directory or a registry entry: 1 to 64 characters of
/// `A-Z a-z 0-9 . _ -`, starting with a letter or digit (so never `.` or `..`). A usage error
/// (64) otherwise.
pub fn check_session_id(id: &str) -> Result<()> {
    if crate::shown::is_plain_name(id, MAX_SESSION_ID, true) {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "bad session id '{}': use 1 to {MAX_SESSION_ID} characters from A-Z a-z 0-9 . _ -, \
             starting with a letter or digit",
            crate::error::shorten(&id.escape_default().to_string())
        )))
    }
}

/// The `session_id` of a Claude Code hook payload (the JSON every hook gets on stdin), checked.
/// Bad data (65) when the payload is not JSON or has no string `session_id`.
pub fn session_id_from_hook(payload: &[u8]) -> Result<String> {
    #[derive(Deserialize)]
    struct Hook {
        session_id: Option<serde_json::Value>,
    }
    let hook: Hook = serde_json::from_slice(payload).map_err(|e| {
        Error::bad_data(format!(
            "the hook payload on stdin is not a JSON object ({e})"
        ))
    })?;
    match hook.session_id {
        Some(serde_json::Value::String(id)) => {
            check_session_id(&id)?;
            Ok(id)
        }
        _ => Err(Error::bad_data(
            "the hook payload on stdin has no string \"session_id\"",
        )),
    }
}

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    /// Active within the idle time.
    Live,
    /// Quiet for longer than the idle time, and never ended.
    Silent,
    /// Ended with `session end`.
    Ended,
}

impl SessionState {
    /// The word `session list` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Live => "live",
            SessionState::Silent => "silent",
            SessionState::Ended => "ended",
        }
    }
}

impl SessionEntry {
    /// Where the session stands at `now_ms`, given the idle time.
    pub fn state(&self, now_ms: u64, idle: Duration) -> SessionState {
        if self.ended_ms.is_some() {
            SessionState::Ended
        } else if now_ms.saturating_sub(self.last_active_ms) > idle.as_millis() as u64 {
            SessionState::Silent
        } else {
            SessionState::Live
        }
    }

    /// When the session stopped counting as live (its end, or its last activity plus the
    /// idle time); `None` while live.
    pub(crate) fn inactive_since(&self, now_ms: u64, idle: Duration) -> Option<u64> {
        match self.state(now_ms, idle) {
            SessionState::Live => None,
            SessionState::Ended => self.ended_ms,
            SessionState::Silent => {
                Some(self.last_active_ms.saturating_add(idle.as_millis() as u64))
            }
        }
    }
}

/// A session and where it stands, as `session list --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    /// The registry's entry.
    #[serde(flatten)]
    pub entry: SessionEntry,
    /// `live`, `silent` or `ended`.
    pub state: SessionState,
}

/// Milliseconds since the Unix epoch, by this host's clock.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The session registry of one repository, and its sessions' directories.
pub struct Sessions {
    stores: Vec<Arc<dyn SessionStore>>,
    namespace: String,
    root: PathBuf,
    idle: Duration,
    timeout: Duration,
}

impl Sessions {
    /// A registry over `stores` (one local store, one Redis, or every Redlock master) for the
    /// repository at `root`, in `namespace`; `idle` makes a session silent, `timeout` bounds
    /// each store's answer.
    pub fn new(
        stores: Vec<Arc<dyn SessionStore>>,
        namespace: String,
        root: PathBuf,
        idle: Duration,
        timeout: Duration,
    ) -> Self {
        Sessions {
            stores,
            namespace,
            root,
            idle,
            timeout,
        }
    }

    /// The repository root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The idle time after which a quiet session is silent.
    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// An entry for `id` made by this process, active now.
    fn fresh_entry(&self, id: &str, command: &str) -> SessionEntry {
        let now = now_ms();
        SessionEntry {
            id: id.to_owned(),
            host: crate::holder::this_host(),
            pid: std::os::unix::process::parent_id(),
            repository: self.root.display().to_string(),
            command: command.to_owned(),
            started_ms: now,
            last_active_ms: now,
            ended_ms: None,
        }
    }

    /// Register session `id` (again, if it ended), live from now.
    pub async fn start(&self, id: &str, command: &str) -> Result<SessionEntry> {
        check_session_id(id)?;
        let entry = self.fresh_entry(id, command);
        let ns = &self.namespace;
        self.each(|s| s.register(ns, &entry)).await?;
        Ok(entry)
    }

    /// Note that session `id` is active now, if it is registered: an unknown session stays
    /// unknown (only [`Sessions::start`] registers), an ended one stays ended (a straggling
    /// write does not undo `session end`).
    pub async fn touch(&self, id: &str, command: &str) -> Result<()> {
        check_session_id(id)?;
        let entry = self.fresh_entry(id, command);
        let ns = &self.namespace;
        self.each(|s| s.touch(ns, &entry)).await.map(drop)
    }

    /// Mark session `id` ended; true when the registry knew it (an unknown id changes nothing).
    pub async fn end(&self, id: &str) -> Result<bool> {
        check_session_id(id)?;
        let (ns, at) = (&self.namespace, now_ms());
        let known = self.each(|s| s.end(ns, id, at)).await?;
        Ok(known.into_iter().any(|k| k))
    }

    /// Every session the registry holds (live, silent, and ended but not yet collected), oldest
    /// start first.
    pub async fn list(&self) -> Result<Vec<SessionInfo>> {
        let ns = &self.namespace;
        let seen = self.each(|s| s.entries(ns)).await?;
        let now = now_ms();
        let mut all: Vec<SessionInfo> = union(seen)
            .into_iter()
            .map(|entry| SessionInfo {
                state: entry.state(now, self.idle),
                entry,
            })
            .collect();
        all.sort_by(|a, b| {
            (a.entry.started_ms, &a.entry.id).cmp(&(b.entry.started_ms, &b.entry.id))
        });
        Ok(all)
    }

    /// Drop the registry entries of `ids`.
    async fn forget(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ns = &self.namespace;
        self.each(|s| s.forget(ns, ids)).await.map(drop)
    }

    /// Run `op` on every store at once, each within the timeout; the answers of those that
    /// answered. Unavailable (69) when none did: the registry is advisory, one answer is
    /// enough.
    async fn each<'a, T, F>(&'a self, op: F) -> Result<Vec<T>>
    where
        F: Fn(&'a dyn SessionStore) -> crate::backend::NodeFuture<'a, T>,
    {
        let asks = self.stores.iter().map(|s| {
            let fut = op(s.as_ref());
            async move {
                match tokio::time::timeout(self.timeout, fut).await {
                    Ok(r) => r,
                    Err(_) => Err(crate::backend::NodeError::timeout(self.timeout)),
                }
            }
        });
        let answers = join_all(asks).await;
        let total = answers.len();
        let (mut ok, mut causes) = (Vec::new(), Vec::new());
        for (store, a) in self.stores.iter().zip(answers) {
            match a {
                Ok(v) => ok.push(v),
                Err(e) => causes.push((store.label(), e.cause)),
            }
        }
        if ok.is_empty() {
            return Err(Error::unavailable(0, total, 1, causes));
        }
        Ok(ok)
    }
}

/// One entry per session from what several stores hold: the latest start's entry, the latest
/// activity, and an end only if it came after that start (a master that missed a restart of the
/// session still holds its old end).
fn union(seen: Vec<Vec<SessionEntry>>) -> Vec<SessionEntry> {
    let mut by_id: std::collections::BTreeMap<String, SessionEntry> = Default::default();
    let mut ends: std::collections::BTreeMap<String, u64> = Default::default();
    for e in seen.into_iter().flatten() {
        if let Some(at) = e.ended_ms {
            let end = ends.entry(e.id.clone()).or_default();
            *end = (*end).max(at);
        }
        match by_id.get_mut(&e.id) {
            Some(have) => {
                let last = have.last_active_ms.max(e.last_active_ms);
                if e.started_ms > have.started_ms {
                    *have = e;
                }
                have.last_active_ms = last;
            }
            None => {
                by_id.insert(e.id.clone(), e);
            }
        }
    }
    by_id
        .into_values()
        .map(|mut e| {
            e.ended_ms = ends.get(&e.id).copied().filter(|&at| at >= e.started_ms);
            e
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_safe_as_directory_names() {
        for ok in ["019a5b2c-7d1e-7f00-8000-0123456789ab", "a", "ci.job_42-x"] {
            check_session_id(ok).unwrap();
        }
        let long = "a".repeat(65);
        for bad in [
            "", ".", "..", "../x", "a/b", "a b", "-x", ".hidden", "é", &long,
        ] {
            assert_eq!(check_session_id(bad).unwrap_err().exit_code(), 64, "{bad}");
        }
    }

    #[test]
    fn the_hook_payload_gives_its_session_id_or_bad_data() {
        let id = session_id_from_hook(br#" { "session_id" : "abc-1", "x": "\u00e9" } "#);
        assert_eq!(id.unwrap(), "abc-1");
        for bad in [&b"{}"[..], b"not json", br#"{"session_id": 7}"#] {
            assert_eq!(session_id_from_hook(bad).unwrap_err().exit_code(), 65);
        }
        let e = session_id_from_hook(br#"{"session_id": "../etc"}"#).unwrap_err();
        assert_eq!(e.exit_code(), 64);
    }

    #[test]
    fn states_follow_activity_and_end() {
        let idle = Duration::from_secs(60);
        let e = SessionEntry {
            last_active_ms: 1_000_000,
            ..Default::default()
        };
        assert_eq!(e.state(1_000_000 + 60_000, idle), SessionState::Live);
        assert_eq!(e.state(1_000_000 + 60_001, idle), SessionState::Silent);
        assert_eq!(e.inactive_since(2_000_000, idle), Some(1_060_000));
        let ended = SessionEntry {
            ended_ms: Some(5),
            ..e
        };
        assert_eq!(ended.state(1_000_000, idle), SessionState::Ended);
        assert_eq!(ended.inactive_since(1_000_000, idle), Some(5));
    }

    #[test]
    fn the_union_keeps_the_latest_start_activity_and_a_later_end() {
        let e = |started, active, ended| SessionEntry {
            id: "s".into(),
            started_ms: started,
            last_active_ms: active,
            ended_ms: ended,
            ..Default::default()
        };
        // One master missed the restart: its old end does not count.
        let u = union(vec![vec![e(10, 20, Some(30))], vec![e(40, 50, None)]]);
        assert_eq!(u, [e(40, 50, None)]);
        // Both saw the end after the restart.
        let u = union(vec![vec![e(40, 90, Some(95))], vec![e(40, 60, None)]]);
        assert_eq!(u, [e(40, 90, Some(95))]);
    }
}
