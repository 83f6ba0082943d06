//! The operator's side: status, stale holders taken over at once, break, the audit log,
//! sessions, namespaces, passwords, the local backend and waiting feedback.
//!
//! Split by sub-feature (issue 22): the shared helpers stay here; `status` (status, takeover,
//! break, the log), `setup` (sessions, namespaces, local locks, feedback, first use, symlinks),
//! `auth` (passwords, TLS, ACL users).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::support::{
    Guard, RedisServer, Repo, alive, run, signal, tractatus, try_lock, wait_until,
};

mod auth;
mod setup;
mod status;

/// A `lock run` holding `name` around `sleep 60`, started in `dir`; returns once it holds.
fn hold(dir: &Path, redis: Option<&str>, name: &str, pidfile: &Path) -> Guard {
    let mut c = tractatus(dir);
    if let Some(url) = redis {
        c.args(["--redis", url]);
    }
    c.args([
        "lock",
        "run",
        "--name",
        name,
        "--",
        "sh",
        "-c",
        "echo $$ > \"$1\"; exec sleep 60",
        "sh",
    ])
    .arg(pidfile)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let g = Guard(c.spawn().unwrap());
    wait_until(
        Duration::from_secs(10),
        "the holder runs its command",
        || std::fs::read_to_string(pidfile).is_ok_and(|s| !s.trim().is_empty()),
    );
    g
}

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not one JSON document ({e}): {stdout}"))
}
