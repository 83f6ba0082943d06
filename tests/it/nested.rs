//! A command started under a lease (and its descendants) calling `tractatus` again on the same
//! lock joins the lease instead of waiting for its own ancestor; a process outside the tree
//! cannot, nor can anyone once the lease is broken. Every lock behaviour runs on one Redis and
//! on local file locks alike.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tractatus_lock::config::parse_nodes;
use tractatus_lock::state::{Edit, StateFile, WriteOutcome, parse_pointer};
use tractatus_lock::{AcquireOptions, Config, Coordinator, Identity};

use crate::support::{Guard, RedisServer, Repo, run, tractatus, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_tractatus");
const FILE: &str = "state.json";
/// The wait every command here is given: a nested call that waited for its parent would end
/// in 75 after it, so "at once" is judged against it.
const WAIT: &str = "20s";

/// Where the locks are: one Redis, or local file locks (no Redis configured).
enum Backend {
    Redis(RedisServer),
    Local,
}

impl Backend {
    fn both() -> [Backend; 2] {
        [Backend::Redis(RedisServer::start()), Backend::Local]
    }

    /// `tractatus` in `dir` on this backend, with settings in the environment so that the
    /// nested calls, which inherit it, use the same ones.
    fn tractatus(&self, dir: &Path) -> Command {
        let mut c = tractatus(dir);
        c.env("TRACTATUS_WAIT", WAIT).env("TRACTATUS_QUIET", "1");
        if let Backend::Redis(r) = self {
            c.env("TRACTATUS_REDIS", r.url());
        }
        c
    }

    fn name(&self) -> &'static str {
        match self {
            Backend::Redis(_) => "redis",
            Backend::Local => "local",
        }
    }
}

/// `lock run --file FILE -- sh -c SCRIPT sh BIN FILE`: the script has the binary in `$1` and
/// the file in `$2`.
fn lock_run_sh(backend: &Backend, repo: &Repo, script: &str) -> Command {
    let mut c = backend.tractatus(&repo.path());
    c.args([
        "lock", "run", "--file", FILE, "--", "sh", "-c", script, "sh", BIN, FILE,
    ]);
    c
}

fn doc(repo: &Repo) -> serde_json::Value {
    serde_json::from_str(&repo.read(FILE)).unwrap()
}

#[test]
fn a_hook_under_lock_run_joins_its_parents_lease_at_once() {
    for backend in Backend::both() {
        let repo = Repo::new();
        let started = Instant::now();
        let mut c = backend.tractatus(&repo.path());
        c.args([
            "lock", "run", "--file", FILE, "--", BIN, "state", "merge", FILE,
        ])
        .arg(r#"{"a":1}"#);
        let r = run(&mut c);
        let took = started.elapsed();
        assert_eq!(r.code, 0, "{}: {}", backend.name(), r.describe());
        assert!(
            took < Duration::from_secs(5),
            "{}: took {took:?}",
            backend.name()
        );
        assert_eq!(
            doc(&repo),
            serde_json::json!({"a": 1}),
            "{}",
            backend.name()
        );
        println!(
            "{}: nested merge under lock run took {took:?}",
            backend.name()
        );
    }
}

#[test]
fn a_nested_lock_run_joins_and_leaves_the_lease_held_for_its_parent() {
    for backend in Backend::both() {
        let repo = Repo::new();
        // The inner `lock run` joins, runs, "releases"; the outer still holds: a write after
        // it joins the same lease again.
        let script = r#""$1" lock run --file "$2" -- "$1" state set "$2" /a 1 || exit $?
            "$1" state set "$2" /b 2"#;
        let started = Instant::now();
        let r = run(&mut lock_run_sh(&backend, &repo, script));
        assert_eq!(r.code, 0, "{}: {}", backend.name(), r.describe());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{}: waited",
            backend.name()
        );
        assert_eq!(doc(&repo), serde_json::json!({"a": 1, "b": 2}));
    }
}

#[test]
fn a_grandchild_joins_and_two_commits_under_one_lease_both_land() {
    for backend in Backend::both() {
        let repo = Repo::new();
        repo.write(FILE, "{\"items\": []}\n");
        // `sh` runs a `sh` that runs `tractatus`: a grandchild, then a great-grandchild, of the
        // holder; each commits under the holder's token.
        let script = r#"echo "parent $TRACTATUS_FENCING_TOKEN"
            sh -c '"$1" --json state append "$2" /items 1; exit $?' sh "$1" "$2" || exit $?
            sh -c '"$1" --json state append "$2" /items 2; exit $?' sh "$1" "$2""#;
        let r = run(&mut lock_run_sh(&backend, &repo, script));
        assert_eq!(r.code, 0, "{}: {}", backend.name(), r.describe());
        assert_eq!(doc(&repo)["items"], serde_json::json!([1, 2]));
        let mut lines = r.stdout.lines();
        let parent = lines
            .next()
            .unwrap()
            .strip_prefix("parent ")
            .unwrap()
            .to_owned();
        for line in lines {
            let report: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(report["committed"], true, "{line}");
            assert_eq!(
                report["token"].to_string(),
                parent,
                "not the parent's token"
            );
        }
    }
}

#[test]
fn state_updates_command_joins_the_lease_of_its_update() {
    for backend in Backend::both() {
        let repo = Repo::new();
        repo.write(FILE, "{\"n\": 1}\n");
        // The update's command writes the file itself (joining the update's lease), then prints
        // what it read.
        let mut c = backend.tractatus(&repo.path());
        c.args(["state", "update", FILE, "--", "sh", "-c"])
            .arg(r#""$1" state set "$2" /inner true >/dev/null && cat"#)
            .args(["sh", BIN, FILE]);
        let started = Instant::now();
        let r = run(&mut c);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{}: waited",
            backend.name()
        );
        // The nested write landed; the update, which read the file before it, is refused
        // rather than writing over it (76, a conflict).
        assert_eq!(r.code, 76, "{}: {}", backend.name(), r.describe());
        assert_eq!(doc(&repo), serde_json::json!({"n": 1, "inner": true}));
    }
}

#[test]
fn a_copied_capability_outside_the_tree_waits_and_times_out() {
    for backend in Backend::both() {
        let repo = Repo::new();
        repo.write(FILE, "{\"x\": 0}\n");
        let before = repo.read(FILE);
        let work = tempfile::tempdir().unwrap();
        let cap = work.path().join("cap");
        let script = format!(
            r#"printf %s "$TRACTATUS_LEASE" > {p}.tmp && mv {p}.tmp {p}; exec sleep 60"#,
            p = cap.display()
        );
        let mut holder = lock_run_sh(&backend, &repo, &script);
        let _holder = Guard(holder.stdout(Stdio::null()).spawn().unwrap());
        wait_until(Duration::from_secs(10), "the capability is written", || {
            cap.exists()
        });
        let stolen = std::fs::read_to_string(&cap).unwrap();
        assert!(stolen.contains("\"owner\""), "{stolen}");
        let started = Instant::now();
        let mut c = backend.tractatus(&repo.path());
        c.env("TRACTATUS_LEASE", &stolen)
            .env("TRACTATUS_WAIT", "1s")
            .args(["state", "merge", FILE, r#"{"x":1}"#]);
        let r = run(&mut c);
        assert_eq!(r.code, 75, "{}: {}", backend.name(), r.describe());
        assert!(started.elapsed() >= Duration::from_secs(1), "did not wait");
        assert_eq!(repo.read(FILE), before, "{}: written", backend.name());
    }
}

/// A FIFO the script blocks on (`read x < go`) until the test opens it: no polling.
fn fifo(dir: &Path, name: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    p
}

/// Let the script past its `read x < p`. Opened without blocking: a script that is no longer
/// there to read fails the test here instead of hanging it.
fn open_gate(p: &Path) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(p)
        .unwrap_or_else(|e| panic!("nobody waits at {}: {e}", p.display()));
    f.write_all(b"go\n").unwrap();
}

#[test]
fn after_a_break_the_nested_call_does_not_join_and_writes_nothing_stale() {
    let redis = RedisServer::start();
    let backend = Backend::Redis(redis);
    let repo = Repo::new();
    repo.write(FILE, "{\"x\": 0}\n");
    let work = tempfile::tempdir().unwrap();
    let go = fifo(work.path(), "go");
    let code = work.path().join("code");
    // A long TTL (allowed by a longer quarantine): the parent notices the break only at its
    // next renewal, a third of a TTL away, after this test is done.
    let script = format!(
        r#""$1" state merge "$2" '{{"x":1}}' || exit 9; touch {ready}; read x < {go}
           TRACTATUS_WAIT=1s "$1" state merge "$2" '{{"x":2}}'; echo $? > {code}; exec sleep 60"#,
        ready = work.path().join("ready").display(),
        go = go.display(),
        code = code.display()
    );
    let mut parent = lock_run_sh(&backend, &repo, &script);
    let _parent = Guard(
        parent
            .env("TRACTATUS_TTL", "60s")
            .env("TRACTATUS_QUARANTINE", "120s")
            .spawn()
            .unwrap(),
    );
    // It joined once, while the lease stood.
    wait_until(Duration::from_secs(10), "the hook's first write", || {
        work.path().join("ready").exists()
    });
    let r = run(backend
        .tractatus(&repo.path())
        .args(["lock", "break", FILE, "--force"]));
    assert_eq!(r.code, 0, "{}", r.describe());
    // Someone else takes the lock: the nested call must wait for them, not join the broken
    // lease. On this host the new holder does not start its command while the broken holder's
    // command group still runs (it would kill it after its --kill-grace, here longer than the
    // test): it holds the lease meanwhile, which is what this test needs.
    let Backend::Redis(redis) = &backend else {
        unreachable!()
    };
    let lease_key = repo.keys(FILE).lease;
    let mut other = backend.tractatus(&repo.path());
    other.args([
        "--kill-grace",
        "60s",
        "lock",
        "run",
        "--file",
        FILE,
        "--",
        "true",
    ]);
    let _other = Guard(other.spawn().unwrap());
    wait_until(Duration::from_secs(10), "another holder", || {
        redis.cmd(&["EXISTS", &lease_key]) == "1"
    });
    open_gate(&go);
    wait_until(Duration::from_secs(10), "the nested call ends", || {
        std::fs::read_to_string(&code).is_ok_and(|c| c.ends_with('\n'))
    });
    assert_eq!(std::fs::read_to_string(&code).unwrap().trim(), "75");
    assert_eq!(
        doc(&repo),
        serde_json::json!({"x": 1}),
        "a stale write landed"
    );
}

#[test]
fn a_joined_write_whose_lease_is_broken_meanwhile_is_refused() {
    let redis = RedisServer::start();
    let backend = Backend::Redis(redis);
    let repo = Repo::new();
    repo.write(FILE, "{\"x\": 0}\n");
    let work = tempfile::tempdir().unwrap();
    let go = fifo(work.path(), "go");
    let code = work.path().join("code");
    // The nested update joins, reads, then waits in its command while the lease is broken and
    // another writer commits under a newer token.
    let script = format!(
        r#""$1" state update "$2" -- sh -c 'touch {ready}; read x < {go}; cat'; echo $? > {code}; exec sleep 60"#,
        ready = work.path().join("ready").display(),
        go = go.display(),
        code = code.display()
    );
    let mut parent = lock_run_sh(&backend, &repo, &script);
    let _parent = Guard(
        parent
            .env("TRACTATUS_TTL", "60s")
            .env("TRACTATUS_QUARANTINE", "120s")
            .spawn()
            .unwrap(),
    );
    wait_until(Duration::from_secs(10), "the nested update runs", || {
        work.path().join("ready").exists()
    });
    let r = run(backend
        .tractatus(&repo.path())
        .args(["lock", "break", FILE, "--force"]));
    assert_eq!(r.code, 0, "{}", r.describe());
    let r = run(backend
        .tractatus(&repo.path())
        .args(["state", "merge", FILE, r#"{"other":1}"#]));
    assert_eq!(r.code, 0, "{}", r.describe());
    let after_other = repo.read(FILE);
    open_gate(&go);
    wait_until(Duration::from_secs(10), "the nested update ends", || {
        std::fs::read_to_string(&code).is_ok_and(|c| c.ends_with('\n'))
    });
    assert_eq!(std::fs::read_to_string(&code).unwrap().trim(), "76");
    assert_eq!(repo.read(FILE), after_other, "the stale update landed");
}

/// The Node addon's case: a lock held in this process (`withLock`), then a state file written
/// under it from the same process: it joins the held lease, twice, and the lease stays held.
/// A lease of the same token from another coordinator is refused by the fence record.
#[test]
fn in_one_process_writes_join_a_held_lease_and_an_equal_token_of_another_is_refused() {
    let redis = RedisServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(in_one_process(&redis));
}

async fn in_one_process(redis: &RedisServer) {
    let repo = Repo::new();
    repo.write(FILE, "{\"items\": []}\n");
    let config = Config::new(parse_nodes(&[redis.url().as_str()]).unwrap());
    let coordinator = Coordinator::connect(config, Identity::current("t"))
        .await
        .unwrap();
    let file = StateFile::open(&repo.path(), &repo.path(), Path::new(FILE)).unwrap();
    let held = coordinator
        .acquire(file.name(), &AcquireOptions::default())
        .await
        .unwrap();
    let append = |v: u32| Edit::Append(parse_pointer("/items").unwrap(), serde_json::json!(v));
    for v in [1, 2] {
        let out = file.write_under(&held, append(v)).await.unwrap();
        assert!(
            matches!(out, WriteOutcome::Committed { token, .. } if token == held.token()),
            "{out:?}"
        );
    }
    assert_eq!(doc(&repo)["items"], serde_json::json!([1, 2]));
    // Still held: another acquire in this process excludes.
    let e = file
        .write(&coordinator, &AcquireOptions::default(), append(3))
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), 75, "{e}");

    // Local locks whose counter stands just below: their lease gets the same token.
    let locks = repo.path().join(".claude/.tractatus/locks");
    let local =
        Coordinator::local(Config::new(vec![]), Identity::current("t"), locks.clone()).unwrap();
    std::fs::write(
        locks.join(format!("{FILE}.fence")),
        (held.token() - 1).to_string(),
    )
    .unwrap();
    let same = local
        .acquire(file.name(), &AcquireOptions::default())
        .await
        .unwrap();
    assert_eq!(same.token(), held.token());
    let e = file.write_under(&same, append(4)).await.unwrap_err();
    assert_eq!(e.exit_code(), 76, "{e}");
    assert!(e.to_string().contains("token"), "{e}");
    assert_eq!(doc(&repo)["items"], serde_json::json!([1, 2]));
    same.release().await.unwrap();
    held.release().await.unwrap();
}
