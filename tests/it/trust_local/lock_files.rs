//! Local lock files and token counters under a co-user: planted symlinks, FIFOs and devices,
//! an exhausted counter; a .gitignore write cut short.

use super::*;

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
