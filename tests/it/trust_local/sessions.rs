//! Session cleanup and the local registry under a co-user: symlinked directories, planted
//! entries, FIFOs, gc racing a writer, stats skipping a planted copy.

use super::*;
use crate::support::log_in;

#[test]
fn session_start_and_gc_refuse_a_symlinked_sessions_directory_and_delete_nothing_outside() {
    let shared = SharedCheckout::new();
    age_private_dir(&shared);
    let private = shared.private_dir();
    as_attacker(
        &shared,
        "/usr/bin/ln",
        &["-s", private.to_str().unwrap(), ".claude/sessions"],
    );
    let (file, text) = payload(&shared, "victim-1");
    let ran = tractatus_with_stdin(
        &shared,
        Who::Victim,
        &["session", "start", "--from-hook", "--quiet"],
        Some(&file),
    );
    assert_eq!(ran.stdout, text, "the payload still passes through");
    shared.assert_private_files_untouched();
    assert_refused(&ran, ".claude/sessions");
    let ran = tractatus(
        &shared,
        Who::Victim,
        &["session", "gc", "--older-than", "0"],
    );
    shared.assert_private_files_untouched();
    assert_refused(&ran, ".claude/sessions");
}

#[test]
fn session_start_and_gc_refuse_a_symlinked_dot_claude_and_touch_nothing_outside() {
    let shared = SharedCheckout::new();
    age_private_dir(&shared);
    let private = shared.private_dir();
    as_attacker(&shared, "/usr/bin/mv", &[".claude", ".claude-moved"]);
    as_attacker(
        &shared,
        "/usr/bin/ln",
        &["-s", private.to_str().unwrap(), ".claude"],
    );
    let (file, text) = payload(&shared, "victim-1");
    // The config file is read first, through `.claude`: a symlinked `.claude` is refused
    // there (65, the repository's shared input), before any bookkeeping file is reached.
    let ran = tractatus_with_stdin(
        &shared,
        Who::Victim,
        &["session", "start", "--from-hook", "--quiet"],
        Some(&file),
    );
    assert_eq!(ran.stdout, text, "the payload still passes through");
    shared.assert_private_files_untouched();
    assert_refused_with(&ran, ".claude", 65);
    let ran = tractatus(
        &shared,
        Who::Victim,
        &["session", "gc", "--older-than", "0"],
    );
    shared.assert_private_files_untouched();
    assert_refused_with(&ran, ".claude", 65);
}

#[test]
fn gc_removes_old_session_directories_but_not_what_is_planted_among_them() {
    let shared = SharedCheckout::new();
    age_private_dir(&shared);
    shared.write_as(
        Who::Victim,
        ".claude/sessions/old-1/session-state.json",
        "{}",
    );
    shared.write_as(Who::Attacker, ".claude/sessions/not-a-dir", "x");
    let old = SystemTime::now() - Duration::from_secs(10 * 24 * 3600);
    let times = std::fs::FileTimes::new().set_modified(old);
    for rel in [
        ".claude/sessions/old-1/session-state.json",
        ".claude/sessions/old-1",
    ] {
        std::fs::File::open(shared.file(rel))
            .and_then(|f| f.set_times(times))
            .unwrap();
    }
    // A link under a session's name, to the victim's private (old) directory.
    let private = shared.private_dir().join("notes");
    as_attacker(
        &shared,
        "/usr/bin/ln",
        &["-s", private.to_str().unwrap(), ".claude/sessions/linked-1"],
    );
    let ran = tractatus(
        &shared,
        Who::Victim,
        &["session", "gc", "--older-than", "1h"],
    );
    assert!(ran.ok(), "{}", ran.describe());
    assert!(
        !shared.file(".claude/sessions/old-1").exists(),
        "the old session is collected"
    );
    assert!(shared.file(".claude/sessions/not-a-dir").exists());
    assert!(
        std::fs::symlink_metadata(shared.file(".claude/sessions/linked-1")).is_ok(),
        "the link is no session's directory and stays"
    );
    shared.assert_private_files_untouched();
}

#[test]
fn a_fifo_or_symlink_in_the_session_registry_neither_hangs_nor_touches_the_victims_files() {
    let shared = SharedCheckout::new();
    shared.write_as(
        Who::Victim,
        ".claude/tractatus-lock.toml",
        "per_session = [\".claude/session-state.json\"]\n",
    );
    let start = tractatus(
        &shared,
        Who::Victim,
        &["session", "start", "--id", "victim-1"],
    );
    assert!(start.ok(), "{}", start.describe());
    as_attacker(
        &shared,
        "/usr/bin/mkfifo",
        &[".claude/.tractatus/sessions/fifo-1.json"],
    );
    let secret = shared.private_file("secret.json");
    let before = std::fs::metadata(&secret).unwrap().modified().unwrap();
    as_attacker(
        &shared,
        "/usr/bin/ln",
        &[
            "-s",
            secret.to_str().unwrap(),
            ".claude/.tractatus/sessions/link-1.json",
        ],
    );
    let list = tractatus(&shared, Who::Victim, &["session", "list", "--json"]);
    assert!(list.ok(), "{}", list.describe());
    assert!(list.elapsed < PROMPT, "took {:?}", list.elapsed);
    assert!(list.stdout.contains("victim-1"), "{}", list.stdout);
    // Writes of those sessions refresh their (planted) entries: no wait, no write through.
    for id in ["fifo-1", "link-1"] {
        let ran = tractatus(
            &shared,
            Who::Victim,
            &[
                "--session",
                id,
                "--wait",
                "3s",
                "state",
                "set",
                ".claude/session-state.json",
                "/n",
                "1",
            ],
        );
        assert!(ran.elapsed < PROMPT, "{id} took {:?}", ran.elapsed);
    }
    shared.assert_private_files_untouched();
    assert_eq!(
        std::fs::metadata(&secret).unwrap().modified().unwrap(),
        before,
        "the victim's file's mtime moved through the link"
    );
}

/// The entry of session `s1` in the local registry, silent for a day.
fn make_silent(repo: &tractatus_testkit::Repo) {
    repo.write(
        ".claude/.tractatus/sessions/s1.json",
        "{\"id\":\"s1\",\"host\":\"h\",\"pid\":0,\"repository\":\"r\",\"command\":\"t\",\
         \"started_ms\":1,\"last_active_ms\":1}",
    );
    let old = SystemTime::now() - Duration::from_secs(24 * 3600);
    std::fs::File::options()
        .write(true)
        .open(repo.file(".claude/.tractatus/sessions/s1.json"))
        .and_then(|f| f.set_times(std::fs::FileTimes::new().set_modified(old)))
        .unwrap();
}

fn log_of(repo: &tractatus_testkit::Repo) -> Option<Vec<u64>> {
    log_in(&repo.file(".claude/sessions/s1/session-state.json"))
}

/// Issue 19 item 5, with real processes: each round the silent session `s1` writes while
/// `session gc --older-than 0` collects it. Whichever wins, nothing acknowledged is lost: the
/// session's log either goes on from where it was, or (gc removed it first) starts afresh
/// from the template, and no tombstone is ever left behind.
#[test]
fn a_session_writing_while_gc_collects_it_loses_no_acknowledged_state_over_many_rounds() {
    const ROUNDS: u64 = 40;
    const LIVE_SESSIONS: usize = 3000;
    let repo = tractatus_testkit::Repo::new();
    repo.write(
        ".claude/tractatus-lock.toml",
        "per_session = [\".claude/session-state.json\"]\n",
    );
    repo.write(".claude/session-state.json", "{\"log\": []}\n");
    // Many live sessions: gc's looks at the registry take a while, as in a busy repository,
    // which leaves the returning session time to write while gc holds its directory.
    let live = SystemTime::now() + Duration::from_secs(365 * 24 * 3600);
    let live_ms = live
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    for i in 0..LIVE_SESSIONS {
        repo.write(
            &format!(".claude/.tractatus/sessions/live-{i}.json"),
            &format!(
                "{{\"id\":\"live-{i}\",\"host\":\"h\",\"pid\":0,\"repository\":\"r\",\
                 \"command\":\"t\",\"started_ms\":1,\"last_active_ms\":{live_ms}}}"
            ),
        );
    }
    let cli = tractatus_testkit::Cli::new(bin());
    let (mut collected, mut refused) = (0, 0);
    for round in 0..ROUNDS {
        make_silent(&repo);
        let before = log_of(&repo).unwrap_or_default();
        let mut gc = cli.command(&repo.path());
        gc.args(["--json", "session", "gc", "--older-than", "0"]);
        // The writer starts a little later each round (0 to 78 ms), to meet gc at every step.
        let mut write = Command::new("sh");
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("TRACTATUS_") {
                write.env_remove(k);
            }
        }
        write.env("DELAY", format!("{:.3}", (round % 40) as f64 * 0.002));
        write.current_dir(repo.path()).args([
            "-c",
            "sleep \"$DELAY\"; exec \"$0\" \"$@\"",
            bin().to_str().unwrap(),
            "--session",
            "s1",
            "--quiet",
            "state",
            "append",
            ".claude/session-state.json",
            "/log",
            &round.to_string(),
        ]);
        let gc = std::thread::spawn(move || run_timed(&mut gc, LIMIT));
        let wrote = run_timed(&mut write, LIMIT);
        let gc = gc.join().unwrap();
        assert!(gc.ok(), "round {round}: gc {}", gc.describe());
        let removed = gc.stdout.contains("\"s1\"");
        collected += usize::from(removed);
        let left: Vec<String> = std::fs::read_dir(repo.file(".claude/sessions"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().into_string().unwrap())
            .filter(|n| n.starts_with(".gc-"))
            .collect();
        assert!(left.is_empty(), "round {round}: tombstones left {left:?}");
        let after = log_of(&repo);
        if wrote.ok() {
            let after = after.unwrap_or_else(|| panic!("round {round}: acknowledged, no copy"));
            let mut kept = before.clone();
            kept.push(round);
            assert!(
                after == kept || (removed && after == [round]),
                "round {round}: log {after:?} after {before:?} (gc removed s1: {removed})"
            );
        } else {
            refused += 1;
            eprintln!("round {round}: refused: {}", wrote.describe());
            assert!(
                after.as_ref() == Some(&before) || removed,
                "round {round}: a refused write changed {before:?} to {after:?}: {}",
                wrote.describe()
            );
        }
    }
    eprintln!("{ROUNDS} rounds: gc collected s1 {collected} times, {refused} writes refused");
}

#[test]
fn session_stats_skips_a_fifo_planted_as_a_live_sessions_copy_without_waiting() {
    let shared = SharedCheckout::new();
    shared.write_as(
        Who::Victim,
        ".claude/tractatus-lock.toml",
        "per_session = [\".claude/session-state.json\"]\n",
    );
    for id in ["victim-1", "fifo-1"] {
        let ran = tractatus(&shared, Who::Victim, &["session", "start", "--id", id]);
        assert!(ran.ok(), "{}", ran.describe());
    }
    shared.write_as(
        Who::Victim,
        ".claude/sessions/victim-1/session-state.json",
        "{\"n\": 2}",
    );
    as_attacker(
        &shared,
        "/usr/bin/mkdir",
        &["-p", ".claude/sessions/fifo-1"],
    );
    as_attacker(
        &shared,
        "/usr/bin/mkfifo",
        &[".claude/sessions/fifo-1/session-state.json"],
    );
    let ran = tractatus(
        &shared,
        Who::Victim,
        &[
            "--json",
            "session",
            "stats",
            "--file",
            ".claude/session-state.json",
        ],
    );
    assert!(ran.ok(), "{}", ran.describe());
    assert!(ran.elapsed < PROMPT, "took {:?}", ran.elapsed);
    let v: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(v["read"], 1, "{v}");
    assert_eq!(v["fields"]["/n"]["sum"], 2, "{v}");
}
