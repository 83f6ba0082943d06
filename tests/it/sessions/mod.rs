//! Sessions that see each other (issue 12), on one Redis and on local locks alike: per-session
//! state files that keep each session's count apart while the shared file stays as it was,
//! totals across sessions, the id taken from a Claude Code hook payload passed through byte for
//! byte, the live registry (list, end), cleanup that removes exactly the directories of ended
//! and silent sessions, and session ids refused where they would name a directory.
//!
//! Split by sub-feature (issue 22): `Setup` and the shared constants stay here; `counts`
//! (per-session counts, stats, the hook payload), `registry` (list, end, gc, three masters),
//! `files` (per-session files against the shared file and its lock).

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::support::{
    Guard, RedisServer, Repo, SessionRepo, run, session_states, tractatus, wait_until,
};

mod counts;
mod files;
mod registry;

const STATE: &str = ".claude/session-state.json";

/// A repository whose `session-state.json` is per-session, and how to call `tractatus` in it
/// on one backend.
struct Setup(SessionRepo);

impl std::ops::Deref for Setup {
    type Target = SessionRepo;

    fn deref(&self) -> &SessionRepo {
        &self.0
    }
}

impl Setup {
    fn new(on_redis: bool) -> Setup {
        Setup(SessionRepo::new(
            on_redis,
            "sessions",
            &[STATE, ".claude/token-checkpoints.json"],
        ))
    }

    fn json(&self, session: Option<&str>, args: &[&str]) -> Value {
        let r = run(self.cli(session).arg("--json").args(args));
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", r.stdout))
    }

    /// `session start --id ID`: only a start registers a session.
    fn start(&self, id: &str) {
        let r = run(self.cli(None).args(["session", "start", "--id", id]));
        assert_eq!(r.code, 0, "{id}: {}", r.stderr);
    }

    /// Each registered session's state, by id.
    fn states(&self, idle: &str) -> Vec<(String, String)> {
        let r = run(self
            .cli(None)
            .env("TRACTATUS_SESSION_IDLE", idle)
            .args(["--json", "session", "list"]));
        assert_eq!(r.code, 0, "{}", r.stderr);
        session_states(&serde_json::from_str(&r.stdout).unwrap())
    }

    /// The session directories left under `.claude/sessions/`, sorted.
    fn session_dirs(&self) -> Vec<String> {
        let mut dirs: Vec<String> = std::fs::read_dir(self.repo.file(".claude/sessions"))
            .map(|l| {
                l.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().into_string().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        dirs.sort();
        dirs
    }
}
