//! Issue 18, our own bookkeeping under `.claude/` as a co-user can plant it (a second uid in
//! the same group, a setgid group-writable checkout): session cleanup, local lock files and
//! token counters, the local session registry. A symlink, FIFO or device where a file or
//! directory of ours should be is refused (73, naming it) within the wait, and the victim's own
//! files outside the checkout stay byte-identical.
//!
//! Split by sub-feature (issue 22): the two-uid helpers stay here; `sessions` (session
//! cleanup and the registry), `lock_files` (lock files, token counters, .gitignore).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use tractatus_testkit::{Ran, SharedCheckout, Who, as_attacker, run_timed};

use crate::support::bin;

mod lock_files;
mod sessions;

/// Every run here must end well within this (a hang is a failure, not a slow test).
const LIMIT: Duration = Duration::from_secs(20);

/// How soon a refusal must come: well inside the `--wait` the calls are given.
const PROMPT: Duration = Duration::from_secs(5);

/// `tractatus args...` as `who` in the checkout, under a 4 GB address-space limit (so that a
/// read without a cap ends in an allocation failure, not in the machine's memory), timed.
fn tractatus(shared: &SharedCheckout, who: Who, args: &[&str]) -> Ran {
    tractatus_with_stdin(shared, who, args, None)
}

fn tractatus_with_stdin(
    shared: &SharedCheckout,
    who: Who,
    args: &[&str],
    stdin: Option<&Path>,
) -> Ran {
    let script = match stdin {
        Some(_) => "ulimit -v 4000000; f=$1; shift; exec \"$@\" < \"$f\"",
        None => "ulimit -v 4000000; shift; exec \"$@\"",
    };
    let mut cmd: Command = shared.command(who, Path::new("/bin/sh"));
    cmd.args(["-c", script, "sh"])
        .arg(stdin.unwrap_or(Path::new("-")))
        .arg(bin())
        .args(args);
    run_timed(&mut cmd, LIMIT)
}

/// Make everything in the victim's private directory look ten days old, so that a cleanup that
/// wandered in would take its subdirectories for long-dead sessions.
fn age_private_dir(shared: &SharedCheckout) {
    let old = SystemTime::now() - Duration::from_secs(10 * 24 * 3600);
    let times = std::fs::FileTimes::new()
        .set_modified(old)
        .set_accessed(old);
    for p in [
        shared.private_file("notes/diary.txt"),
        shared.private_file("secret.json"),
        shared.private_file("notes"),
    ] {
        std::fs::File::open(&p)
            .and_then(|f| f.set_times(times))
            .unwrap_or_else(|e| panic!("age {}: {e}", p.display()));
    }
}

/// A hook payload the victim can read, at `payload.json` in the checkout.
fn payload(shared: &SharedCheckout, id: &str) -> (PathBuf, String) {
    let text = format!("{{\"session_id\": \"{id}\", \"hook_event_name\": \"SessionStart\"}}\n");
    shared.write_as(Who::Victim, "payload.json", &text);
    (shared.file("payload.json"), text)
}

fn assert_refused(ran: &Ran, names: &str) {
    assert_refused_with(ran, names, 73);
}

/// Refused with `code`, in one line naming `names`.
fn assert_refused_with(ran: &Ran, names: &str, code: i32) {
    assert_eq!(ran.code, code, "{}", ran.describe());
    assert!(
        ran.stderr.contains(names),
        "names {names}: {}",
        ran.describe()
    );
    let lines = ran
        .stderr
        .lines()
        .filter(|l| !l.contains("no Redis configured"));
    assert_eq!(lines.count(), 1, "one line: {}", ran.stderr);
    assert!(ran.elapsed < PROMPT, "took {:?}", ran.elapsed);
}
