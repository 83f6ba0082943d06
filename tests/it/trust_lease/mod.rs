//! The lease capability (`TRACTATUS_LEASE`) as a co-user or a Redis client would attack it:
//! its secret is written nowhere but the holder's tree's environment, a capability rebuilt from
//! what others can read is refused (76), a joiner's edited fields give it no power over the
//! holder's lease, a join is in the audit log, and joiners of one lease take turns.
//!
//! Split by sub-feature (issue 22): the holder helpers stay here; `capability` (forged,
//! edited or leaked capabilities), `turns` (joiners taking turns).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tractatus_lock::config::parse_nodes;
use tractatus_lock::{AcquireOptions, Config, Coordinator, Identity};
use tractatus_testkit::{SharedCheckout, Who};

use crate::support::{Guard, RedisServer, Repo, run, tractatus, wait_until};

mod capability;
mod turns;

const BIN: &str = env!("CARGO_BIN_EXE_tractatus");
const FILE: &str = "state.json";

/// A holder that writes its capability to `cap` and then waits on `gate` (a FIFO) before it
/// runs `then`: `lock run --file FILE -- sh -c ...`, on Redis when `redis` is given.
fn holder(repo: &Repo, redis: Option<&RedisServer>, cap: &Path, then: &str) -> Guard {
    let script = format!(
        r#"printf %s "$TRACTATUS_LEASE" > {p}.tmp && mv {p}.tmp {p}; {then}"#,
        p = cap.display()
    );
    let mut c = tractatus(&repo.path());
    c.env("TRACTATUS_QUIET", "1").env("TRACTATUS_WAIT", "20s");
    if let Some(r) = redis {
        c.env("TRACTATUS_REDIS", r.url());
    }
    c.args(["lock", "run", "--file", FILE, "--", "sh", "-c"])
        .arg(script)
        .args(["sh", BIN, FILE])
        .stdout(Stdio::null());
    Guard(c.spawn().unwrap())
}

fn capability(cap: &Path) -> serde_json::Value {
    wait_until(Duration::from_secs(10), "the capability is written", || {
        cap.exists()
    });
    serde_json::from_str(&std::fs::read_to_string(cap).unwrap()).unwrap()
}

/// This process's start time and PID namespace, as a capability names its holder.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .to_owned()
}

fn own_origin(pid: u32) -> (u64, String) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let start = after.split(' ').nth(19).unwrap().parse().unwrap();
    let ns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    let inode: String = ns
        .to_string_lossy()
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    // The namespace as tractatus names it: the inode and this boot's id.
    (start, format!("{inode}.{}", boot_id()))
}
