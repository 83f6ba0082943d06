//! `StateFile` begin/commit through the library holds the lease, a change in between is a
//! conflict, a lost lease gives 76; `state get` takes no lease and logs nothing.

use super::*;

/// A coordinator on `url` in `repo`'s namespace, so that it contends with the CLI's leases.
async fn coordinator_for(repo: &Repo, url: &str, ttl: Duration, max_hold: Duration) -> Coordinator {
    let root = repo.path();
    let settings = tractatus_lock::settings::read_settings(&root).unwrap();
    let mut config = Config::new(parse_nodes(&[url]).unwrap());
    config.namespace = tractatus_lock::settings::ensure_namespace(&root, &settings).unwrap();
    config.ttl = ttl;
    config.node_timeout = ttl / 10;
    config.max_hold = max_hold;
    Coordinator::connect(config, Identity::current("it"))
        .await
        .unwrap()
}

#[tokio::test]
async fn begin_then_commit_holds_the_lease_and_a_change_in_between_is_a_conflict() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    let rel = ".claude/session-state.json";
    repo.write(rel, "{\n  \"n\": 1\n}\n");
    let c = coordinator_for(
        &repo,
        &redis.url(),
        Duration::from_secs(10),
        Duration::from_secs(60),
    )
    .await;
    let file = StateFile::open(&repo.path(), &repo.path(), Path::new(rel)).unwrap();
    let mut pending = file
        .begin(&c, &AcquireOptions::wait(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(pending.document(), Some(&serde_json::json!({"n": 1})));
    // The lease is held between the phases: the CLI cannot take it.
    let root = repo.path();
    let url = redis.url();
    let tried = tokio::task::spawn_blocking(move || try_lock(&root, &url, ["--file", rel]))
        .await
        .unwrap();
    assert_eq!(tried.code, 75, "{}", tried.stderr);

    // A program that takes no lock writes in between: the commit is refused, nothing written.
    let theirs = "{\n  \"n\": 1,\n  \"theirs\": true\n}\n";
    repo.write(rel, theirs);
    let mut doc = pending.document().unwrap().clone();
    doc["n"] = 2.into();
    let e = pending.commit(&doc).await.unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    assert_eq!(e.exit_code(), 76);
    assert_eq!(repo.read(rel), theirs);

    // Read again under the same lease, redo, commit: both changes are in the file.
    pending.reload().unwrap();
    let mut doc = pending.document().unwrap().clone();
    doc["n"] = 2.into();
    let token = pending.token();
    match pending.commit(&doc).await.unwrap() {
        WriteOutcome::Committed { token: t, .. } => assert_eq!(t, token),
        other => panic!("{other:?}"),
    }
    // A token commits once.
    assert_eq!(pending.commit(&doc).await.unwrap_err().exit_code(), 64);
    pending.release().await.unwrap();
    assert_eq!(repo.read(rel), "{\n  \"n\": 2,\n  \"theirs\": true\n}\n");

    // A file that does not exist yet: no document; committing creates it. Identical bytes are
    // not rewritten.
    let fresh =
        StateFile::open(&repo.path(), &repo.path(), Path::new(".claude/fresh.json")).unwrap();
    let mut pending = fresh.begin(&c, &AcquireOptions::default()).await.unwrap();
    assert_eq!(pending.document(), None);
    let doc = serde_json::json!({"a": [1]});
    assert!(matches!(
        pending.commit(&doc).await.unwrap(),
        WriteOutcome::Committed { .. }
    ));
    pending.release().await.unwrap();
    let mut pending = fresh.begin(&c, &AcquireOptions::default()).await.unwrap();
    assert!(matches!(
        pending.commit(&doc).await.unwrap(),
        WriteOutcome::Unchanged { .. }
    ));
    pending.release().await.unwrap();
    assert_eq!(
        repo.read(".claude/fresh.json"),
        "{\n  \"a\": [\n    1\n  ]\n}"
    );
}

#[tokio::test]
async fn a_lease_lost_before_commit_gives_76_and_leaves_the_file_untouched() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    let rel = ".claude/session-state.json";
    let before = "{\n  \"n\": 1\n}";
    repo.write(rel, before);
    // Renewal stops after half a second (max hold): the lease is then lost.
    let c = coordinator_for(
        &repo,
        &redis.url(),
        Duration::from_secs(1),
        Duration::from_millis(500),
    )
    .await;
    let file = StateFile::open(&repo.path(), &repo.path(), Path::new(rel)).unwrap();
    let mut pending = file.begin(&c, &AcquireOptions::default()).await.unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(10), pending.lease().lost())
        .await
        .expect("the lease is lost once its max hold is reached");
    println!("lost: {reason}");
    let e = pending
        .commit(&serde_json::json!({"n": 2}))
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), 76, "{e}");
    assert!(matches!(e, Error::LeaseLost { .. }), "{e}");
    let _ = pending.release().await;
    assert_eq!(repo.read(rel), before);
    let left: Vec<_> = std::fs::read_dir(repo.file(".claude"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tractatus-"))
        .collect();
    assert!(left.is_empty(), "temp files left: {left:?}");
}

#[test]
fn state_get_takes_no_lease_and_writes_nothing_to_the_audit_log() {
    let redis = RedisServer::start();
    let url = redis.url();
    let repo = Repo::new();
    let rel = ".claude/session-state.json";
    repo.write(rel, &fixture("session-state.json"));
    let ready = repo.file("holder.ready");
    let mut holder = Guard(
        tractatus(&repo.path())
            .args([
                "--redis", &url, "lock", "run", "--file", rel, "--", "sh", "-c",
            ])
            .arg(format!("touch {}; sleep 30", ready.display()))
            .spawn()
            .unwrap(),
    );
    wait_until(Duration::from_secs(10), "the holder runs", || {
        ready.exists()
    });
    let log = || {
        let r = run(tractatus(&repo.path()).args(["--redis", &url, "--json", "lock", "log"]));
        assert_eq!(r.code, 0, "{}", r.stderr);
        serde_json::from_str::<serde_json::Value>(&r.stdout).unwrap()
    };
    let before = log();
    let r = run(tractatus(&repo.path()).args([
        "--redis",
        &url,
        "--wait",
        "20s",
        "state",
        "get",
        rel,
        "/message_count",
    ]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "42\n");
    assert!(
        r.elapsed < Duration::from_secs(2),
        "waited behind the holder: {:?}",
        r.elapsed
    );
    assert_eq!(log(), before, "the read left a trace in the audit log");
    assert!(holder.0.try_wait().unwrap().is_none(), "the holder ended");

    // Nothing there is not bad data: exit 1, one line saying what is missing.
    let r = run(tractatus(&repo.path()).args(["--redis", &url, "state", "get", rel, "/missing"]));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(
        r.stderr.trim(),
        format!("tractatus: no value at /missing in {rel}")
    );
    let r =
        run(tractatus(&repo.path()).args(["--redis", &url, "state", "get", ".claude/none.json"]));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(
        r.stderr.trim(),
        "tractatus: .claude/none.json does not exist"
    );
    // Without Redis a read still works: it needs no coordinator at all.
    let r = run(tractatus(&repo.path()).args([
        "--redis",
        "redis://127.0.0.1:1",
        "state",
        "get",
        rel,
        "/message_count",
    ]));
    assert_eq!((r.code, r.stdout.as_str()), (0, "42\n"), "{}", r.stderr);
}
