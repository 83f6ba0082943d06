//! Deadlock detection's local edge files (issue 24) as a co-user can plant them: a symlink to
//! the victim's private file, a FIFO and an oversized, old file, all named like wait-for edges
//! in the lock directory. The victim's nested wait reads the edges of what it holds while it
//! waits; it must neither follow the link, nor block on the FIFO, nor give up for a deadlock,
//! and its files outside the checkout stay byte-identical.

use std::process::Stdio;
use std::time::Duration;

use tractatus_testkit::couser::runnable;
use tractatus_testkit::{SharedCheckout, Who, as_attacker, run_timed, wait_until};

use crate::support::bin;

/// Every run here must end well within this (a hang is a failure, not a slow test).
const LIMIT: Duration = Duration::from_secs(30);

const LOCKS: &str = ".claude/.tractatus/locks";

#[test]
fn planted_edge_files_neither_are_followed_nor_block_nor_make_a_nested_waiter_give_up() {
    let shared = SharedCheckout::new();
    shared.write_as(Who::Victim, ".claude/x.json", "{}\n");
    shared.write_as(Who::Victim, ".claude/y.json", "{}\n");
    let private = shared.private_file("secret.json");
    as_attacker(&shared, "/usr/bin/mkdir", &["-p", LOCKS]);
    for stem in [".claude%2Fx.json", ".claude%2Fy.json"] {
        let link = format!("{LOCKS}/{stem}.wait-evil-link");
        let fifo = format!("{LOCKS}/{stem}.wait-evil-fifo");
        let big = format!("{LOCKS}/{stem}.wait-evil-big");
        as_attacker(
            &shared,
            "/usr/bin/ln",
            &["-s", private.to_str().unwrap(), &link],
        );
        as_attacker(&shared, "/usr/bin/mkfifo", &[&fifo]);
        as_attacker(&shared, "/usr/bin/truncate", &["-s", "64M", &big]);
        // Old and unlocked: what a walk tidies up as a killed waiter's leftover.
        for planted in [&link, &fifo, &big] {
            as_attacker(
                &shared,
                "/usr/bin/touch",
                &["-h", "-d", "2 hours ago", planted],
            );
        }
    }

    // The victim holds y.json for a moment, while another of its runs holds x.json and waits
    // for y.json inside it: a nested wait, which records its edge and walks.
    let started = shared.file("holder-started");
    let mut holder = shared.command(Who::Victim, bin());
    holder
        .args(["lock", "run", "--file", ".claude/y.json", "--", "sh", "-c"])
        .arg("touch \"$1\"; sleep 1.5")
        .arg("sh")
        .arg(&started)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut holder = holder.spawn().unwrap();
    wait_until(Duration::from_secs(20), "the holder of y.json runs", || {
        started.exists()
    });
    let inner = runnable(bin());
    let mut nested = shared.command(Who::Victim, bin());
    nested
        .args(["lock", "run", "--file", ".claude/x.json", "--"])
        .arg(&inner)
        .args([
            "state",
            "merge",
            "--wait",
            "20s",
            ".claude/y.json",
            r#"{"n": 1}"#,
        ]);
    let ran = run_timed(&mut nested, LIMIT);
    assert!(ran.ok(), "the nested write: {}", ran.describe());
    assert!(
        !ran.stderr.contains("deadlock"),
        "a planted edge made the victim give up: {}",
        ran.describe()
    );
    assert!(holder.wait().unwrap().success());
    let y: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(shared.file(".claude/y.json")).unwrap())
            .unwrap();
    assert_eq!(y["n"], 1);

    // The walk did read the planted entries: the old, unlocked regular one it tidied away as a
    // killed waiter's leftover; the link and the FIFO it left alone.
    assert!(
        !shared
            .file(&format!("{LOCKS}/.claude%2Fx.json.wait-evil-big"))
            .exists(),
        "the nested waiter's walk never looked at the edges of the lock it holds"
    );
    assert!(
        shared
            .file(&format!("{LOCKS}/.claude%2Fx.json.wait-evil-fifo"))
            .exists()
    );

    // Nothing was followed: the link is still a link to the private file, which is untouched.
    shared.assert_private_files_untouched();
    let link = shared.file(&format!("{LOCKS}/.claude%2Fx.json.wait-evil-link"));
    if let Ok(meta) = std::fs::symlink_metadata(&link) {
        assert!(meta.file_type().is_symlink());
        assert_eq!(std::fs::read_link(&link).unwrap(), private);
    }
}
