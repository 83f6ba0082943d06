//! What a newcomer meets at the command line: looking around creates nothing, errors say where
//! a bad value came from and stay short, `--help` names every environment variable, the
//! no-Redis notice can be silenced, and a stdout that cannot be written is an exit code, not a
//! panic (and never undoes a commit).

use std::path::Path;
use std::process::Stdio;

use crate::support::{RedisServer, Repo, run, run_to, tractatus, tree};

#[test]
fn status_log_and_get_in_a_fresh_repository_create_no_file() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    let before = tree(&repo.path());
    for redis_args in [vec![], vec!["--redis".to_owned(), redis.url()]] {
        for cmd in [vec!["lock", "status"], vec!["lock", "log"]] {
            let r = run(tractatus(&repo.path()).args(&redis_args).args(&cmd));
            assert_eq!(r.code, 0, "{cmd:?} {redis_args:?}: {}", r.stderr);
            assert_eq!(tree(&repo.path()), before, "{cmd:?} {redis_args:?}");
        }
    }
    let r = run(tractatus(&repo.path()).args(["lock", "status"]));
    assert!(r.stdout.starts_with("no locks held"), "{}", r.stdout);
    let r = run(tractatus(&repo.path()).args(["--redis", &redis.url(), "lock", "status"]));
    assert!(r.stdout.contains("nothing has been locked"), "{}", r.stdout);
    let r =
        run(tractatus(&repo.path()).args(["--redis", &redis.url(), "--json", "lock", "status"]));
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["namespace"], serde_json::Value::Null);
    // `state get` (local locks here) makes no namespace file either.
    repo.write(".claude/session-state.json", "{\"message_count\": 1}\n");
    let r = run(tractatus(&repo.path()).args(["state", "get", ".claude/session-state.json"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!repo.file(".claude/tractatus-lock.toml").exists());
    // The first lock writes it.
    let r = run(tractatus(&repo.path()).args([
        "--redis",
        &redis.url(),
        "lock",
        "run",
        "--name",
        "n",
        "--",
        "true",
    ]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(repo.file(".claude/tractatus-lock.toml").exists());
}

#[test]
fn outside_a_repository_the_shared_namespace_is_named() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let r = run(tractatus(dir.path()).args([
        "--redis",
        &redis.url(),
        "lock",
        "run",
        "--name",
        "n",
        "--",
        "true",
    ]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("no repository here") && r.stderr.contains("shared namespace 'default'"),
        "{}",
        r.stderr
    );
    let r = run(tractatus(dir.path()).args(["--redis", &redis.url(), "--quiet", "lock", "status"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.is_empty(), "{}", r.stderr);
    assert!(
        r.stdout
            .contains("namespace default (the namespace shared outside any repository)"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_bad_duration_says_where_it_came_from() {
    let repo = Repo::new();
    let lock = ["lock", "run", "--name", "n", "--", "true"];
    let r = run(tractatus(&repo.path()).args(["--ttl", "10"]).args(lock));
    assert_eq!(r.code, 64, "{}", r.stderr);
    assert!(
        r.stderr.contains("--ttl: bad duration '10'"),
        "{}",
        r.stderr
    );
    let r = run(tractatus(&repo.path())
        .env("TRACTATUS_WAIT", "soon")
        .args(lock));
    assert_eq!(r.code, 64, "{}", r.stderr);
    assert!(
        r.stderr.contains("TRACTATUS_WAIT: bad duration 'soon'"),
        "{}",
        r.stderr
    );
    repo.write(".claude/tractatus-lock.toml", "max_hold = \"1 hour\"\n");
    let r = run(tractatus(&repo.path()).args(lock));
    assert_eq!(r.code, 64, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("`max_hold` in .claude/tractatus-lock.toml: bad duration '1 hour'"),
        "{}",
        r.stderr
    );
}

#[test]
fn help_names_the_environment_variable_of_every_flag_that_has_one() {
    let r = run(tractatus(Path::new("/")).arg("--help"));
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Each flag's paragraph: from its line to the next flag's.
    let help: Vec<&str> = r.stdout.lines().collect();
    let paragraph = |flag: &str| -> String {
        let start = help
            .iter()
            .position(|l| l.trim_start().starts_with(&format!("{flag} ")) || l.trim() == flag)
            .unwrap_or_else(|| panic!("{flag} not in --help:\n{}", r.stdout));
        let rest = &help[start + 1..];
        let end = rest
            .iter()
            .position(|l| l.trim_start().starts_with('-'))
            .unwrap_or(rest.len());
        std::iter::once(help[start])
            .chain(rest[..end].iter().copied())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut expected = tractatus_lock::settings::FLAG_ENV.to_vec();
    expected.push(("--quiet", "TRACTATUS_QUIET"));
    for (flag, var) in expected {
        let text = paragraph(flag)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert!(text.contains(&format!("Env: {var}")), "{flag}: {text}");
    }
}

#[test]
fn the_no_redis_notice_is_silenced_by_quiet() {
    let repo = Repo::new();
    let lock = ["lock", "run", "--name", "n", "--", "true"];
    let r = run(tractatus(&repo.path()).args(lock));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("no Redis configured"), "{}", r.stderr);
    let r = run(tractatus(&repo.path())
        .env("TRACTATUS_QUIET", "1")
        .args(lock));
    assert_eq!((r.code, r.stderr.as_str()), (0, ""));
    let r = run(tractatus(&repo.path()).arg("--quiet").args(lock));
    assert_eq!((r.code, r.stderr.as_str()), (0, ""));
    let r = run(tractatus(&repo.path())
        .env("TRACTATUS_QUIET", "0")
        .args(lock));
    assert!(r.stderr.contains("no Redis configured"), "{}", r.stderr);
}

/// A stdout whose reader is gone: every write fails with EPIPE.
fn closed_pipe() -> Stdio {
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    Stdio::from(write)
}

fn dev_full() -> Stdio {
    Stdio::from(
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap(),
    )
}

#[test]
fn an_unwritable_stdout_is_73_in_one_line_and_never_undoes_a_commit() {
    let repo = Repo::new();
    repo.write(".claude/s.json", "{\"a\": 0}\n");
    for (what, stdout) in [
        ("/dev/full", dev_full as fn() -> Stdio),
        ("a closed pipe", closed_pipe),
    ] {
        for args in [
            vec!["session", "new"],
            vec!["--quiet", "state", "get", ".claude/s.json"],
            vec!["--quiet", "lock", "status"],
        ] {
            let r = run_to(tractatus(&repo.path()).args(&args), stdout());
            assert_eq!(r.code, 73, "{args:?} to {what}: {}", r.stderr);
            assert_eq!(
                r.stderr.lines().count(),
                1,
                "{args:?} to {what}: {}",
                r.stderr
            );
            assert!(
                r.stderr.starts_with("tractatus: cannot write stdout"),
                "{}",
                r.stderr
            );
            assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
        }
        let before = repo.read(".claude/s.json");
        let r = run_to(
            tractatus(&repo.path()).args([
                "--quiet",
                "--json",
                "state",
                "merge",
                ".claude/s.json",
                "{\"b\": 1}",
            ]),
            stdout(),
        );
        assert_eq!(r.code, 0, "merge to {what}: {}", r.stderr);
        assert!(r.stderr.contains("committed"), "{}", r.stderr);
        assert_ne!(repo.read(".claude/s.json"), before);
        std::fs::write(repo.file(".claude/s.json"), "{\"a\": 0}\n").unwrap();
    }
}

#[test]
fn long_inputs_are_cut_in_error_messages() {
    let repo = Repo::new();
    repo.write(".claude/s.json", "{\"a\": 0}\n");
    let pointer = format!("/{}", "p".repeat(100 * 1024));
    let bad_pointer = "p".repeat(100 * 1024);
    let name = "n".repeat(10 * 1024);
    let name_bad = format!("{}*", "n".repeat(10 * 1024));
    for (args, code) in [
        (vec!["state", "get", ".claude/s.json", &pointer], 1),
        (
            vec!["state", "set", ".claude/s.json", &bad_pointer, "1"],
            64,
        ),
        (vec!["lock", "run", "--name", &name, "--", "true"], 64),
        (vec!["lock", "break", &name_bad, "--force"], 64),
    ] {
        let r = run(tractatus(&repo.path()).arg("--quiet").args(&args));
        assert_eq!(r.code, code, "{}", &r.stderr[..r.stderr.len().min(300)]);
        assert_eq!(r.stderr.lines().count(), 1);
        assert!(
            r.stderr.len() < 600,
            "{} bytes: {}",
            r.stderr.len(),
            &r.stderr[..300]
        );
        assert!(r.stderr.contains("characters)…"), "{}", r.stderr);
    }
}

#[test]
fn the_demo_loses_nothing_guarded_and_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let r = run(tractatus(Path::new("/"))
        .env("TMPDIR", tmp.path())
        .args(["--json", "demo", "--writes", "20"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let g = &v["guarded"];
    assert_eq!(
        (g["lost"].as_u64(), g["torn_reads"].as_u64()),
        (Some(0), Some(0)),
        "{v}"
    );
    assert_eq!(
        (g["writes"].as_u64(), g["failed"].as_u64()),
        (Some(80), Some(0)),
        "{v}"
    );
    assert!(g["reads"].as_u64().unwrap() > 0 && v["unguarded"]["writes"].as_u64().is_some());
    assert_eq!(v["backend"], "local");
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "scratch left behind"
    );
}

#[test]
fn the_demo_runs_guarded_on_redis_when_one_is_configured() {
    let redis = RedisServer::start();
    let r = run(tractatus(Path::new("/"))
        .env("TRACTATUS_REDIS", redis.url())
        .args(["demo", "--sessions", "3", "--writes", "10"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("GUARDED (one Redis)"), "{}", r.stdout);
    let lost = r
        .stdout
        .lines()
        .find(|l| l.starts_with("lost updates"))
        .unwrap();
    assert!(lost.trim_end().ends_with(" 0"), "{}", r.stdout);
}
