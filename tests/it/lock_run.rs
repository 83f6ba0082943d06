//! `tractatus lock run` on one Redis: mutual exclusion across processes, fencing tokens,
//! crashed and paused holders, exit codes. One file per sub-feature under `lock_run/`; the
//! holder these tests start is here.

mod exclusion;
mod exits;
mod signals;
mod takeover;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::support::{Guard, tractatus, wait_until};

/// Start a holder `lock run` whose command writes its pid to `pidfile` and sleeps.
fn start_holder(repo: &Path, url: &str, ttl: &str, host: &str, pidfile: &Path) -> Guard {
    let mut c = tractatus(repo);
    c.env("TRACTATUS_HOST", host)
        .args([
            "--redis",
            url,
            "--ttl",
            ttl,
            "--kill-grace",
            "1s",
            "lock",
            "run",
            "--name",
            "L",
            "--",
        ])
        .args(["sh", "-c", "echo $$ > \"$1\"; exec sleep 60", "sh"])
        .arg(pidfile)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let guard = Guard(c.spawn().unwrap());
    wait_until(Duration::from_secs(10), "the holder's command runs", || {
        std::fs::read_to_string(pidfile).is_ok_and(|s| s.trim().parse::<u32>().is_ok())
    });
    guard
}

fn read_pid(p: &Path) -> u32 {
    std::fs::read_to_string(p).unwrap().trim().parse().unwrap()
}
