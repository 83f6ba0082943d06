//! A `lock run` that holds its lock until the test lets go: its command marks that it runs,
//! then waits for its stdin to close.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tractatus_testkit::{Guard, wait_until};

/// Start `lock_run` (a `tractatus ... lock run ... --` command line) with a command that touches
/// `marker` and then waits for its stdin to close; returned once it holds the lock (the marker
/// exists), within `within`.
pub fn hold_until_let_go(mut lock_run: Command, marker: &Path, within: Duration) -> Guard {
    let child = lock_run
        .args(["sh", "-c", "touch \"$1\"; read x || true", "sh"])
        .arg(marker)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = Guard(child);
    wait_until(within, "the holder holds the lock", || marker.exists());
    guard
}

/// Let a [`hold_until_let_go`] holder go (close its stdin); it must exit 0.
pub fn let_go(mut holder: Guard) {
    drop(holder.0.stdin.take());
    let status = holder.0.wait().unwrap();
    assert!(status.success(), "holder: {status}");
}
