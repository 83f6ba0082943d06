//! `session gc` against a session that comes back (issue 19 item 5), with real processes, on one
//! Redis and on local locks: gc moves a silent session's directory to a tombstone, looks again,
//! then removes it. A write of that session reads its copy and renames the new document over
//! it; were gc to move the directory between the two, the rename landed in the tombstone and,
//! after gc's second look, was removed though the write had exited 0. gc now holds the lease
//! of each of the session's copies from before the move until after the removal: every write
//! that exits 0 is in the session's copy afterwards, or gc removed the copy before the write
//! read it, and the write then started afresh from the shared file (its template).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::support::{Guard, SessionRepo, log_in, run_timed, wait_until};

const STATE: &str = ".claude/session-state.json";
const COPY: &str = ".claude/sessions/s1/session-state.json";
const LIMIT: Duration = Duration::from_secs(30);

/// A repository whose `session-state.json` is per-session (its template: an empty log), and how
/// to call `tractatus` in it on one backend.
struct Setup(SessionRepo);

impl std::ops::Deref for Setup {
    type Target = SessionRepo;

    fn deref(&self) -> &SessionRepo {
        &self.0
    }
}

impl Setup {
    fn new(on_redis: bool) -> Setup {
        let s = SessionRepo::new(on_redis, "gc-race", &[STATE]);
        s.repo.write(STATE, "{\"log\": []}\n");
        Setup(s)
    }

    /// `session gc --older-than 0 --json`, ready to run.
    fn gc(&self) -> Command {
        let mut gc = self.cli(None);
        gc.args(["--json", "session", "gc", "--older-than", "0"]);
        gc
    }

    /// The log of session `s1`'s copy; `None` when it has none.
    fn log(&self) -> Option<Vec<u64>> {
        log_in(&self.repo.file(COPY))
    }

    /// Session `s1` silent as gc sees it: it was never registered (a write registers
    /// nothing), so its directory counts from its newest file's time, set a day back here.
    fn make_silent(&self) {
        let old = SystemTime::now() - Duration::from_secs(24 * 3600);
        let dir = self.repo.file(".claude/sessions/s1");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for path in entries.flatten().map(|e| e.path()).chain([dir]) {
            if let Ok(f) = std::fs::File::open(&path) {
                let _ = f.set_times(std::fs::FileTimes::new().set_modified(old));
            }
        }
    }

    /// The tombstones left in `.claude/sessions`.
    fn tombstones(&self) -> Vec<String> {
        std::fs::read_dir(self.repo.file(".claude/sessions"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(".gc-"))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Whether gc's JSON answer names `s1` among the sessions it removed, and among those it left
/// busy.
fn removed_and_busy(gc_stdout: &str) -> (bool, bool) {
    let v: Value = serde_json::from_str(gc_stdout).unwrap_or(Value::Null);
    let has = |list: &str| {
        v[list]
            .as_array()
            .is_some_and(|a| a.iter().any(|r| r["id"] == "s1"))
    };
    (has("removed"), has("busy"))
}

/// `cmd` started `secs` later, through `sh` (its environment and directory kept).
fn delayed(cmd: &Command, secs: f64) -> Command {
    let mut sh = Command::new("sh");
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        sh.current_dir(dir);
    }
    sh.env("DELAY", format!("{secs:.3}"))
        .args(["-c", "sleep \"$DELAY\"; exec \"$0\" \"$@\""])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    sh
}

/// Many rounds (bounded in count and time): `s1` goes silent, then gc collects it while `s1`
/// appends the round's number, one of the two started up to 40 ms after the other. A write
/// that exited 0 must be in the copy: after the log as it was (gc left the session), or alone
/// (gc removed the copy before the write read it). Lost writes are counted over all rounds.
fn gc_racing_a_returning_session_loses_no_committed_write(on_redis: bool) {
    const ROUNDS: u64 = 80;
    const BUDGET: Duration = Duration::from_secs(120);
    let s = Setup::new(on_redis);
    let first = run_timed(
        s.cli(Some("s1"))
            .args(["state", "append", STATE, "/log", "1000"]),
        LIMIT,
    );
    assert!(first.ok(), "{}", first.describe());
    let started = Instant::now();
    let (mut lost, mut removed_count, mut refused, mut busy_count, mut rounds) = (0, 0, 0, 0, 0);
    let mut report = Vec::new();
    for round in 0..ROUNDS {
        if started.elapsed() > BUDGET {
            break;
        }
        rounds += 1;
        s.make_silent();
        let before = s.log().unwrap_or_default();
        // One of the two starts later, by 0 to 38 ms, to meet the other at every step.
        let offset = (round % 40) as f64 * 0.002 - 0.04;
        let mut gc = delayed(&s.gc(), offset.max(0.0));
        let mut write = delayed(
            s.cli(Some("s1"))
                .args(["state", "append", STATE, "/log", &round.to_string()]),
            (-offset).max(0.0),
        );
        let gc = std::thread::spawn(move || run_timed(&mut gc, LIMIT));
        let wrote = run_timed(&mut write, LIMIT);
        let gc = gc.join().unwrap();
        assert!(gc.ok(), "round {round}: gc {}", gc.describe());
        let (removed, busy) = removed_and_busy(&gc.stdout);
        removed_count += usize::from(removed);
        busy_count += usize::from(busy);
        assert_eq!(s.tombstones(), Vec::<String>::new(), "round {round}");
        let after = s.log();
        if wrote.ok() {
            let mut kept = before.clone();
            kept.push(round);
            let fine = after.as_ref() == Some(&kept) || (removed && after == Some(vec![round]));
            if !fine {
                lost += 1;
                report.push(format!(
                    "round {round}: wrote {round} (exit 0), log {after:?} after {before:?}, gc \
                     removed s1: {removed}"
                ));
            }
        } else {
            refused += 1;
            assert!(
                after.as_ref() == Some(&before) || removed,
                "round {round}: a refused write changed {before:?} to {after:?}: {}",
                wrote.describe()
            );
        }
    }
    eprintln!(
        "{} {rounds} rounds: gc removed s1 {removed_count} times, left it busy {busy_count} \
         times; {refused} writes refused; {lost} committed writes lost",
        if on_redis { "redis" } else { "local" }
    );
    assert_eq!(lost, 0, "{}", report.join("\n"));
}

#[test]
fn gc_racing_a_returning_session_loses_no_committed_write_on_redis() {
    gc_racing_a_returning_session_loses_no_committed_write(true);
}

#[test]
fn gc_racing_a_returning_session_loses_no_committed_write_on_local_locks() {
    gc_racing_a_returning_session_loses_no_committed_write(false);
}

/// The race made certain: `s1`'s write (`state update`, whose command waits for the test) has
/// read the copy under its lease when gc starts. gc stops before removing anything it decided
/// to remove (the debug-only `TRACTATUS_TEST_GC_PAUSE`) until the write has committed. Without
/// the copy's lease gc moved the directory, decided, and removed the write's commit (exit 0,
/// copy gone). With it, gc waits for the lease, leaves `s1` for a later run and says so, and
/// the write lands in the copy.
fn a_write_between_its_read_and_its_commit_keeps_gc_off_its_session(on_redis: bool) {
    let s = Setup::new(on_redis);
    let first = run_timed(
        s.cli(Some("s1"))
            .args(["state", "append", STATE, "/log", "1"]),
        LIMIT,
    );
    assert!(first.ok(), "{}", first.describe());
    s.make_silent();
    let (ready, go, pause) = (
        s.repo.file("ready"),
        s.repo.file("go"),
        s.repo.file("pause"),
    );
    let mut writer = Guard(
        s.cli(Some("s1"))
            .args(["state", "update", STATE, "--", "sh", "-c"])
            .arg(
                r#"cat >/dev/null; touch "$1"; i=0
                while [ ! -e "$2" ] && [ $i -lt 1500 ]; do sleep 0.02; i=$((i+1)); done
                printf '{"log": [1, 2]}'"#,
            )
            .args(["sh"])
            .arg(&ready)
            .arg(&go)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_until(LIMIT, "the write has read the copy", || ready.exists());
    let mut gc = Guard(
        s.gc()
            .env("TRACTATUS_TEST_GC_PAUSE", &pause)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let reached = pause.with_extension("reached");
    let mut gc_done = false;
    wait_until(LIMIT, "gc pauses before a removal or ends", || {
        gc_done = !matches!(gc.0.try_wait(), Ok(None));
        gc_done || reached.exists()
    });
    // The write commits now: into the session's copy, or into gc's tombstone.
    std::fs::write(&go, "").unwrap();
    let wrote = writer.wait_code(LIMIT);
    std::fs::write(pause.with_extension("go"), "").unwrap();
    let gc_code = gc.wait_code(LIMIT);
    let mut out = String::new();
    std::io::Read::read_to_string(&mut gc.0.stdout.take().unwrap(), &mut out).unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut writer.0.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(gc_code, Some(0), "gc: {out}");
    assert_eq!(wrote, Some(0), "the write: {err}");
    assert_eq!(
        s.log(),
        Some(vec![1, 2]),
        "the write exited 0; gc paused before a removal: {}; gc said {out}",
        !gc_done
    );
    let (removed, busy) = removed_and_busy(&out);
    assert!(busy && !removed, "gc said {out}");
    assert_eq!(s.tombstones(), Vec::<String>::new());
    // A later run, the copy's lock free and the session silent again, collects it.
    s.make_silent();
    let again = run_timed(&mut s.gc(), LIMIT);
    assert_eq!(
        removed_and_busy(&again.stdout),
        (true, false),
        "{}",
        again.stdout
    );
    assert!(!Path::new(&s.repo.file(COPY)).exists());
}

#[test]
fn a_write_between_its_read_and_its_commit_keeps_gc_off_its_session_on_redis() {
    a_write_between_its_read_and_its_commit_keeps_gc_off_its_session(true);
}

#[test]
fn a_write_between_its_read_and_its_commit_keeps_gc_off_its_session_on_local_locks() {
    a_write_between_its_read_and_its_commit_keeps_gc_off_its_session(false);
}
