//! Issue 18, our own bookkeeping under `.claude/` as a co-user can plant it (a second uid in
//! the same group, a setgid group-writable checkout): session cleanup, local lock files and
//! token counters, the local session registry. A symlink, FIFO or device where a file or
//! directory of ours should be is refused (73, naming it) within the wait, and the victim's own
//! files outside the checkout stay byte-identical.
//!
//! Over 500 lines: one module per feature, whose tests share the helpers at its top; issue 22
//! splits it by sub-feature.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use tractatus_testkit::{Ran, SharedCheckout, Who, run_timed};

/// Every run here must end well within this (a hang is a failure, not a slow test).
const LIMIT: Duration = Duration::from_secs(20);

/// How soon a refusal must come: well inside the `--wait` the calls are given.
const PROMPT: Duration = Duration::from_secs(5);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tractatus"))
}

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

/// `program args...` as the attacker, which must succeed.
fn as_attacker(shared: &SharedCheckout, program: &str, args: &[&str]) {
    let mut cmd = shared.command(Who::Attacker, Path::new(program));
    cmd.args(args);
    let ran = run_timed(&mut cmd, LIMIT);
    assert!(
        ran.ok(),
        "{program} {args:?} as the attacker: {}",
        ran.describe()
    );
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

/// The lock file and counter of `.claude/metrics.json` with local locks.
const LOCK_FILE: &str = ".claude/.tractatus/locks/.claude%2Fmetrics.json.lock";
const COUNTER_FILE: &str = ".claude/.tractatus/locks/.claude%2Fmetrics.json.fence";

/// The attacker makes the lock directory (as a first lock would) and plants `link -> target`
/// at `rel` in it.
fn plant_link(shared: &SharedCheckout, rel: &str, target: &Path) {
    as_attacker(
        shared,
        "/usr/bin/mkdir",
        &["-p", ".claude/.tractatus/locks"],
    );
    as_attacker(
        shared,
        "/usr/bin/ln",
        &["-s", target.to_str().unwrap(), rel],
    );
}

fn merge(shared: &SharedCheckout) -> Ran {
    tractatus(
        shared,
        Who::Victim,
        &[
            "--wait",
            "3s",
            "state",
            "merge",
            ".claude/metrics.json",
            "{\"n\": 1}",
        ],
    )
}

#[test]
fn a_symlink_planted_at_the_next_lock_file_is_refused_and_the_victims_file_is_untouched() {
    let shared = SharedCheckout::new();
    shared.write_as(Who::Victim, ".claude/metrics.json", "{\"n\": 0}\n");
    plant_link(&shared, LOCK_FILE, &shared.private_file("secret.json"));
    let ran = merge(&shared);
    shared.assert_private_files_untouched();
    assert_refused(&ran, "metrics.json.lock");
    assert_eq!(
        std::fs::read_to_string(shared.file(".claude/metrics.json")).unwrap(),
        "{\"n\": 0}\n"
    );
}

#[test]
fn a_symlink_planted_at_the_token_counter_is_refused_and_the_victims_file_is_untouched() {
    let shared = SharedCheckout::new();
    shared.write_as(Who::Victim, ".claude/metrics.json", "{\"n\": 0}\n");
    plant_link(&shared, COUNTER_FILE, &shared.private_file("secret.json"));
    let ran = merge(&shared);
    shared.assert_private_files_untouched();
    assert_refused(&ran, "metrics.json.fence");
    assert_eq!(
        std::fs::read_to_string(shared.file(".claude/metrics.json")).unwrap(),
        "{\"n\": 0}\n"
    );
}

/// A FIFO at `rel`, made by the attacker.
fn plant_fifo(shared: &SharedCheckout, rel: &str) {
    as_attacker(
        shared,
        "/usr/bin/mkdir",
        &["-p", ".claude/.tractatus/locks"],
    );
    as_attacker(shared, "/usr/bin/mkfifo", &[rel]);
}

#[test]
fn a_fifo_or_dev_zero_as_lock_file_or_token_counter_is_refused_within_the_wait() {
    for (rel, fifo) in [
        (COUNTER_FILE, true),
        (LOCK_FILE, true),
        (COUNTER_FILE, false),
        (LOCK_FILE, false),
    ] {
        let shared = SharedCheckout::new();
        shared.write_as(Who::Victim, ".claude/metrics.json", "{\"n\": 0}\n");
        if fifo {
            plant_fifo(&shared, rel);
        } else {
            plant_link(&shared, rel, Path::new("/dev/zero"));
        }
        let ran = merge(&shared);
        let name = Path::new(rel).file_name().unwrap().to_str().unwrap();
        assert_refused(&ran, name);
        assert_eq!(
            std::fs::read_to_string(shared.file(".claude/metrics.json")).unwrap(),
            "{\"n\": 0}\n",
            "{rel}"
        );
    }
}

#[test]
fn a_token_counter_at_its_maximum_is_refused_as_exhausted_not_as_a_lost_lease() {
    let shared = SharedCheckout::new();
    shared.write_as(Who::Victim, ".claude/metrics.json", "{\"n\": 0}\n");
    shared.write_as(Who::Victim, COUNTER_FILE, &u64::MAX.to_string());
    let ran = merge(&shared);
    assert_refused(&ran, "metrics.json.fence");
    assert!(ran.stderr.contains("exhausted"), "{}", ran.describe());
    assert_eq!(
        std::fs::read_to_string(shared.file(".claude/metrics.json")).unwrap(),
        "{\"n\": 0}\n"
    );
    // One below the maximum still mints the maximum, once.
    shared.write_as(Who::Victim, COUNTER_FILE, &(u64::MAX - 1).to_string());
    let ran = merge(&shared);
    assert!(ran.ok(), "{}", ran.describe());
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
    let text = std::fs::read_to_string(repo.file(".claude/sessions/s1/session-state.json")).ok()?;
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

/// Issue 18, item 11: a write of the working directory's `.gitignore` that fails half-way (a full
/// disk; here the file-size limit, which kills the process at its first byte) left an empty
/// `.gitignore` for good, and git then tracked the working directory. Now the file is written by
/// temp file and rename: it is never empty, and the next call writes it whole.
#[test]
fn a_gitignore_write_cut_short_never_leaves_the_working_directory_unignored() {
    let repo = tractatus_testkit::Repo::new();
    repo.write(".claude/s.json", "{}\n");
    let merge = |limited: bool| {
        let mut cmd = if limited {
            let mut c = Command::new("prlimit");
            c.arg("--fsize=0").arg(bin());
            c
        } else {
            Command::new(bin())
        };
        cmd.current_dir(repo.path())
            .env_remove("TRACTATUS_REDIS")
            .args(["--quiet", "state", "merge", ".claude/s.json", r#"{"a":1}"#]);
        run_timed(&mut cmd, LIMIT)
    };
    let ignore = repo.file(".claude/.tractatus/.gitignore");
    let cut = merge(true);
    assert_ne!(cut.code, 0, "the limit did not bite: {}", cut.describe());
    if let Ok(text) = std::fs::read_to_string(&ignore) {
        assert_eq!(text, "*\n", "a cut-short write left .gitignore as {text:?}");
    }
    let whole = merge(false);
    assert_eq!(whole.code, 0, "{}", whole.describe());
    assert_eq!(std::fs::read_to_string(&ignore).unwrap(), "*\n");
    assert_eq!(repo.read(".claude/s.json"), "{\n  \"a\": 1\n}\n");
}
