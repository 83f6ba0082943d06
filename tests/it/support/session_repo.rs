//! A repository with per-session state files on one backend (a Redis of its own, or local
//! locks), and how to call `tractatus` in it: what the session tests (`sessions`, `gc_race`)
//! share.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{RedisServer, Repo, tractatus};

/// A throwaway repository whose config names its per-session files, and its backend.
pub struct SessionRepo {
    pub repo: Repo,
    /// `None`: local locks.
    pub redis: Option<RedisServer>,
}

impl SessionRepo {
    /// A repository whose config lists `per_session`, on a Redis of its own when `on_redis`.
    /// Its namespace is its own (`PREFIX-PID-N`): the test's Redis is fresh, but `lock run`
    /// looks for earlier holders' process groups on this host by namespace and lock name,
    /// across tests.
    pub fn new(on_redis: bool, prefix: &str, per_session: &[&str]) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let files: Vec<String> = per_session.iter().map(|f| format!("\"{f}\"")).collect();
        let repo = Repo::new();
        repo.write(
            ".claude/tractatus-lock.toml",
            &format!(
                "namespace = \"{prefix}-{}-{n}\"\nper_session = [{}]\n",
                std::process::id(),
                files.join(", ")
            ),
        );
        SessionRepo {
            repo,
            redis: on_redis.then(RedisServer::start),
        }
    }

    /// `tractatus` in the repository, on this backend, in `session` (if any), no notices.
    pub fn cli(&self, session: Option<&str>) -> Command {
        let mut c = tractatus(&self.repo.path());
        c.env("TRACTATUS_QUIET", "1");
        if let Some(r) = &self.redis {
            c.env("TRACTATUS_REDIS", r.url());
        }
        if let Some(s) = session {
            c.env("TRACTATUS_SESSION_ID", s);
        }
        c
    }
}

/// The `log` array (of numbers) of the state document at `path`; `None` when there is no file
/// (a session copy gc removed, or one never made).
pub fn log_in(path: &std::path::Path) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    Some(
        v["log"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect(),
    )
}
