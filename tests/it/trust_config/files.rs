//! The config file and the CA file: read through handles, never a link, never waited on,
//! capped.

use super::*;

// --- The config file: read through handles, never a link, never waited on, capped -----------

#[test]
fn a_fifo_as_the_config_file_is_refused_at_once_even_by_state_get() {
    let co = SharedCheckout::new();
    co.write_as(Who::Victim, ".claude/x.json", "{\"a\": 1}\n");
    as_attacker(&co, "mkfifo", &[".claude/tractatus-lock.toml"]);
    for args in [
        &["state", "get", ".claude/x.json"][..],
        &["state", "merge", ".claude/x.json", "{\"b\": 2}"],
        &["lock", "status"],
    ] {
        let r = run_timed(victim(&co).args(args), HANG_LIMIT);
        assert_eq!(r.code, 65, "{args:?}: {}", r.describe());
        assert!(r.stderr.contains("tractatus-lock.toml"), "{}", r.stderr);
        assert!(r.stderr.contains("FIFO"), "{}", r.stderr);
        assert!(r.elapsed < PROMPT, "{args:?} took {:?}", r.elapsed);
    }
    assert_eq!(
        std::fs::read_to_string(co.file(".claude/x.json")).unwrap(),
        "{\"a\": 1}\n"
    );
}

#[test]
fn a_config_file_linked_to_dev_zero_or_outside_is_refused_not_followed() {
    let co = SharedCheckout::new();
    let outside = co.attacker_dir().join("their.toml");
    std::fs::write(&outside, "namespace = \"attackers\"\n").unwrap();
    for target in [Path::new("/dev/zero"), outside.as_path()] {
        let link = co.file(".claude/tractatus-lock.toml");
        let _ = std::fs::remove_file(&link);
        as_attacker(
            &co,
            "ln",
            &[
                "-s",
                target.to_str().unwrap(),
                ".claude/tractatus-lock.toml",
            ],
        );
        // A memory limit, so that the old code's read of /dev/zero fails instead of filling
        // the machine.
        let r = run_timed(
            co.command(Who::Victim, Path::new("prlimit")).args([
                "--as=2000000000",
                "--",
                BIN,
                "state",
                "get",
                ".claude/x.json",
            ]),
            HANG_LIMIT,
        );
        assert_eq!(r.code, 65, "{target:?}: {}", r.describe());
        assert!(r.stderr.contains("tractatus-lock.toml"), "{}", r.stderr);
        assert!(r.stderr.contains("symbolic link"), "{}", r.stderr);
        assert!(r.elapsed < PROMPT, "{target:?} took {:?}", r.elapsed);
    }
    co.assert_private_files_untouched();
}

#[test]
fn a_config_file_over_one_mib_is_refused_naming_the_cap() {
    let co = SharedCheckout::new();
    let mut huge = String::from("namespace = \"team\"\n");
    while huge.len() <= 1024 * 1024 {
        huge.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    co.write_as(Who::Attacker, ".claude/tractatus-lock.toml", &huge);
    let r = run_timed(
        victim(&co).args(["state", "get", ".claude/x.json"]),
        HANG_LIMIT,
    );
    assert_eq!(r.code, 65, "{}", r.describe());
    assert!(r.stderr.contains("tractatus-lock.toml"), "{}", r.stderr);
    assert!(r.stderr.contains("1048576 bytes"), "{}", r.stderr);
}

#[test]
fn the_first_lock_writes_no_config_file_through_a_symlinked_claude_directory() {
    let redis = RedisServer::start();
    let co = SharedCheckout::new();
    // The attacker moves the team's .claude aside and links the name to the victim's own
    // private directory: a config file written "in .claude" would land there.
    as_attacker(&co, "mv", &[".claude", ".claude-moved"]);
    let private = co.private_dir();
    as_attacker(&co, "ln", &["-s", private.to_str().unwrap(), ".claude"]);
    let r = run_timed(
        victim(&co)
            .env("TRACTATUS_REDIS", redis.url())
            .args(["lock", "run", "--name", "x", "--", "true"]),
        HANG_LIMIT,
    );
    co.assert_private_files_untouched();
    assert_eq!(r.code, 65, "{}", r.describe());
    assert!(r.stderr.contains(".claude"), "{}", r.stderr);
    assert!(r.stderr.contains("symbolic link"), "{}", r.stderr);
}

// --- The CA file ------------------------------------------------------------------------------

#[test]
fn a_ca_file_that_is_a_fifo_or_a_link_in_the_repository_is_refused_at_once() {
    let co = SharedCheckout::new();
    co.write_as(
        Who::Attacker,
        ".claude/tractatus-lock.toml",
        "namespace = \"team\"\nredis_ca_file = \".claude/ca.pem\"\n",
    );
    as_attacker(&co, "mkfifo", &[".claude/ca.pem"]);
    // The CA is read before any connection: the port need not answer.
    let merge = |co: &SharedCheckout| {
        let mut c = co.command(Who::Victim, Path::new("prlimit"));
        c.args([
            "--as=2000000000",
            "--",
            BIN,
            "--redis",
            "rediss://127.0.0.1:9",
        ])
        .args(["state", "merge", ".claude/x.json", "{\"a\": 1}"]);
        run_timed(&mut c, HANG_LIMIT)
    };
    let r = merge(&co);
    assert_eq!(r.code, 65, "{}", r.describe());
    assert!(r.stderr.contains("ca.pem"), "{}", r.stderr);
    assert!(r.stderr.contains("FIFO"), "{}", r.stderr);
    assert!(r.elapsed < PROMPT, "took {:?}", r.elapsed);
    std::fs::remove_file(co.file(".claude/ca.pem")).unwrap();
    for target in [
        "/dev/zero",
        co.private_file("secret.json").to_str().unwrap(),
    ] {
        let _ = std::fs::remove_file(co.file(".claude/ca.pem"));
        as_attacker(&co, "ln", &["-s", target, ".claude/ca.pem"]);
        let r = merge(&co);
        assert_eq!(r.code, 65, "{target}: {}", r.describe());
        assert!(r.stderr.contains("symbolic link"), "{}", r.stderr);
        assert!(r.elapsed < PROMPT, "took {:?}", r.elapsed);
    }
    co.assert_private_files_untouched();
}

#[test]
fn a_ca_file_outside_the_repository_must_be_a_regular_file_of_sane_size() {
    let repo = Repo::new();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("ca.pem");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let merge = |ca: &Path| {
        let mut c = tractatus(&repo.path());
        c.env("TRACTATUS_REDIS_CA_FILE", ca)
            .args(["--redis", "rediss://127.0.0.1:9"])
            .args(["state", "merge", ".claude/x.json", "{\"a\": 1}"]);
        run_timed(&mut c, HANG_LIMIT)
    };
    let r = merge(&fifo);
    assert_eq!(r.code, 65, "{}", r.describe());
    assert!(r.stderr.contains("FIFO"), "{}", r.stderr);
    assert!(r.elapsed < PROMPT, "took {:?}", r.elapsed);
    let big = dir.path().join("big.pem");
    let mut pem = b"-----BEGIN CERTIFICATE-----\n".to_vec();
    pem.resize(2 * 1024 * 1024, b'A');
    std::fs::write(&big, pem).unwrap();
    let r = merge(&big);
    assert_eq!(r.code, 65, "{}", r.describe());
    assert!(r.stderr.contains("1048576 bytes"), "{}", r.stderr);
}
