//! Watching the locks (issue 21): `lock stats` against a run whose waits and holds the test
//! knows, `tractatus metrics` checked by `promtool` and scraped by a real Prometheus, and
//! `lock status --watch` driven in a pseudo-terminal.
//!
//! Split by sub-feature (issue 22): the shared run helpers stay here; `stats` (`lock stats`),
//! `metrics` (promtool and Prometheus), `watch` (`lock status --watch`).

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{
    Guard, RedisServer, Repo, epoch_ms, hold_until_let_go, let_go, run, tractatus, wait_until,
};

mod metrics;
mod stats;
mod watch;

const LOCK: &str = "hot";
/// How long each worker holds the lock.
const HOLD_MS: u64 = 200;
/// A hold as the log records it (grant to release) may exceed the command's sleep by the
/// command's start and the release's round trip, never fall short of it.
const HOLD_SLACK_MS: u64 = 200;
/// A recorded wait starts at the worker's first ask, which the test cannot see: it sees the
/// spawn, up to the binary's start earlier, and the command's first line, a fork and an exec
/// after the grant. So a recorded wait may fall short of the test's figure by this much, and
/// exceed it by no more than clock granularity.
const WAIT_BELOW_MS: u64 = 250;
const WAIT_ABOVE_MS: u64 = 20;

fn lock_run(repo: &Repo, url: &str) -> std::process::Command {
    let mut c = tractatus(&repo.path());
    c.env("TRACTATUS_REDIS", url).args([
        "--ttl", "10s", "--wait", "60s", "lock", "run", "--name", LOCK, "--",
    ]);
    c
}

/// A holder whose command runs until its stdin is closed; returned once it holds the lock.
fn gate(repo: &Repo, url: &str) -> Guard {
    hold_until_let_go(
        lock_run(repo, url),
        &repo.file("held"),
        Duration::from_secs(20),
    )
}

/// A worker that, once granted, appends "<index> <epoch ms>" to `starts` and holds
/// [`HOLD_MS`].
fn worker(repo: &Repo, url: &str, index: usize) -> Child {
    lock_run(repo, url)
        .args([
            "sh",
            "-c",
            "echo \"$1 $(date +%s%3N)\" >> \"$2\"; sleep 0.2",
            "sh",
            &index.to_string(),
        ])
        .arg(repo.file("starts"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn waiters(server: &RedisServer, repo: &Repo) -> usize {
    server
        .cmd(&["ZCARD", &repo.keys(LOCK).waiters])
        .parse()
        .unwrap_or(0)
}

/// Nearest-rank percentile, as `lock stats` computes it.
fn percentile(sorted: &[u64], p: usize) -> u64 {
    sorted[(p * sorted.len()).div_ceil(100).max(1) - 1]
}

fn ms(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("not a count of ms: {v}"))
}

/// `n` short runs of lock `name`.
fn runs(repo: &Repo, url: &str, name: &str, n: usize) {
    for _ in 0..n {
        let ran = run(tractatus(&repo.path())
            .env("TRACTATUS_REDIS", url)
            .args(["lock", "run", "--name", name, "--", "true"]));
        assert_eq!(ran.code, 0, "{}", ran.stderr);
    }
}
