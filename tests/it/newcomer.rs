//! The stumbles of a new user (issue 23): a Redis that wants a password, a read-only or
//! unreadable state file, a file that is not JSON, a quarantine stall in a hook's log, and the
//! words `lock init` prints. Each answer is one clear line with the documented exit code, and
//! the state file stays byte-identical.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use tractatus_testkit::{SharedCheckout, Who};

use crate::support::{RedisServer, Repo, run, tractatus};

fn chmod(p: &std::path::Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn every_command_against_a_redis_that_wants_a_password_says_authentication_refused_and_how_to_give_it()
 {
    let server = RedisServer::start_with(&["--requirepass", "s3cret-pw"]);
    let repo = Repo::new();
    repo.write(".claude/state.json", "{\"n\": 1}\n");
    let commands: [&[&str]; 8] = [
        &["state", "merge", ".claude/state.json", "{\"n\": 2}"],
        &["lock", "run", "--name", "x", "--", "true"],
        &["session", "list"],
        &["session", "start"],
        &["session", "gc"],
        &["lock", "status"],
        &["lock", "log"],
        &["lock", "init"],
    ];
    for args in commands {
        let started = Instant::now();
        let r = run(tractatus(&repo.path())
            .env("TRACTATUS_REDIS", server.url())
            .env("TRACTATUS_QUIET", "1")
            .args(args));
        let said = r.stderr.trim();
        assert_eq!(r.code, 69, "{args:?}: {said}");
        assert!(
            said.contains("authentication refused") && said.contains("TRACTATUS_REDIS_PASSWORD"),
            "{args:?}: {said}"
        );
        assert!(
            !said.contains("Pipeline") && !said.contains("broken pipe"),
            "{args:?}: {said}"
        );
        assert_eq!(said.lines().count(), 1, "{args:?}: {said}");
        // At once: a refused password is no blip to wait out.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{args:?} took {:?}",
            started.elapsed()
        );
    }
    assert_eq!(repo.read(".claude/state.json"), "{\"n\": 1}\n");
}

#[test]
fn a_read_only_state_file_in_a_writable_directory_is_not_replaced_by_a_writer_who_may_not_write_it()
{
    let shared = SharedCheckout::new();
    shared.write_as(Who::Victim, ".claude/state.json", "{\"n\": 1}\n");
    chmod(&shared.file(".claude/state.json"), 0o444);
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_tractatus"));
    for args in [
        &["state", "merge", ".claude/state.json", "{\"n\": 2}"][..],
        &["state", "set", ".claude/state.json", "/n", "3"],
    ] {
        let r = run(shared.command(Who::Victim, bin).arg("--quiet").args(args));
        assert_eq!(r.code, 73, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("read-only"), "{}", r.stderr);
        assert!(
            r.stderr.contains(" .claude/state.json"),
            "named relative: {}",
            r.stderr
        );
    }
    assert_eq!(
        std::fs::read_to_string(shared.file(".claude/state.json")).unwrap(),
        "{\"n\": 1}\n"
    );
    let mode = std::fs::metadata(shared.file(".claude/state.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o444);
}

#[test]
fn a_state_file_the_user_may_not_read_exits_73_for_reads_and_writes_alike() {
    let shared = SharedCheckout::new();
    shared.write_as(Who::Attacker, ".claude/state.json", "{\"n\": 1}\n");
    chmod(&shared.file(".claude/state.json"), 0o600);
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_tractatus"));
    for args in [
        &["state", "get", ".claude/state.json"][..],
        &["state", "merge", ".claude/state.json", "{\"n\": 2}"],
    ] {
        let r = run(shared.command(Who::Victim, bin).arg("--quiet").args(args));
        assert_eq!(r.code, 73, "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("cannot read .claude/state.json"),
            "{}",
            r.stderr
        );
    }
    assert_eq!(
        std::fs::read_to_string(shared.file(".claude/state.json")).unwrap(),
        "{\"n\": 1}\n"
    );
}

#[test]
fn state_get_on_a_file_that_is_not_json_names_it_from_the_root_and_does_not_claim_a_write() {
    let repo = Repo::new();
    repo.write(".claude/bad.json", "not json\n");
    let get = run(tractatus(&repo.path()).args(["--quiet", "state", "get", ".claude/bad.json"]));
    assert_eq!(get.code, 65, "{}", get.stderr);
    assert!(
        get.stderr.contains(": .claude/bad.json is not valid JSON"),
        "{}",
        get.stderr
    );
    assert!(
        !get.stderr.contains("nothing written"),
        "a read wrote nothing to speak of: {}",
        get.stderr
    );
    // A write says the same path, the same way, and that nothing was written.
    let merge =
        run(tractatus(&repo.path()).args(["--quiet", "state", "merge", ".claude/bad.json", "{}"]));
    assert_eq!(merge.code, 65, "{}", merge.stderr);
    assert!(
        merge
            .stderr
            .contains(": .claude/bad.json is not valid JSON"),
        "{}",
        merge.stderr
    );
    assert!(merge.stderr.contains("nothing written"), "{}", merge.stderr);
    assert_eq!(repo.read(".claude/bad.json"), "not json\n");
}

#[test]
fn a_quarantine_stall_is_said_once_on_a_stderr_that_is_not_a_terminal_and_lock_init_says_what_it_did()
 {
    // Not marked: a brand-new server's first grant waits out the quarantine (2 s here).
    let server = tractatus_testkit::RedisServer::start();
    let repo = Repo::new();
    let r = run(tractatus(&repo.path())
        .env("TRACTATUS_REDIS", server.url())
        .env("TRACTATUS_QUARANTINE", "2s")
        .args([
            "--ttl", "1s", "--wait", "10s", "lock", "run", "--name", "q", "--", "true",
        ]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stderr.matches("restart quarantine").count(),
        1,
        "said once: {}",
        r.stderr
    );
    let init = run(tractatus(&repo.path())
        .env("TRACTATUS_REDIS", server.url())
        .args(["lock", "init"]));
    assert_eq!(init.code, 0, "{}", init.stderr);
    assert!(
        init.stdout
            .starts_with("marked 1 Redis server as brand-new: a lock it does not know"),
        "{}",
        init.stdout
    );
}
