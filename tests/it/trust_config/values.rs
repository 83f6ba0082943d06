//! Bad values refused up front (item 11), and passwords never printed.

use super::*;

// --- Bad values refused up front (item 11) ----------------------------------------------------

fn with_config(text: &str) -> Repo {
    let repo = Repo::new();
    std::fs::create_dir_all(repo.file(".claude")).unwrap();
    std::fs::write(repo.file(".claude/tractatus-lock.toml"), text).unwrap();
    repo
}

#[test]
fn an_endless_wait_or_a_zero_max_hold_is_refused_naming_the_setting() {
    for (line, key) in [
        ("wait = \"999999999999h\"", "`wait`"),
        ("max_hold = \"0s\"", "`max_hold`"),
        ("max_hold = \"100ms\"", "`max_hold`"),
    ] {
        let repo = with_config(&format!("namespace = \"team\"\n{line}\n"));
        let r = run(tractatus(&repo.path()).args(["lock", "run", "--name", "x", "--", "true"]));
        assert_eq!(r.code, 64, "{line}: {}", r.describe());
        assert!(r.stderr.contains(key), "{}", r.stderr);
    }
    let repo = Repo::new();
    let r =
        run(tractatus(&repo.path())
            .args(["--wait", "25h", "lock", "run", "--name", "x", "--", "true"]));
    assert_eq!(r.code, 64, "{}", r.describe());
    assert!(r.stderr.contains("--wait"), "{}", r.stderr);
}

#[test]
fn a_per_session_list_past_its_cap_is_refused_at_once() {
    let mut text = String::from("namespace = \"team\"\nper_session = [\n");
    for i in 0..20_000 {
        text.push_str(&format!("\".claude/s{i}.json\",\n"));
    }
    text.push_str("]\n");
    let repo = with_config(&text);
    let r = run(tractatus(&repo.path()).args(["state", "get", ".claude/x.json"]));
    assert_eq!(r.code, 64, "{}", r.describe());
    assert!(r.stderr.contains("per_session"), "{}", r.stderr);
    assert!(r.stderr.contains("256"), "{}", r.stderr);
    assert!(r.elapsed < PROMPT, "took {:?}", r.elapsed);
}

#[test]
fn a_redis_list_of_commas_only_is_a_usage_error_not_local_locks() {
    let repo = Repo::new();
    let r = run(tractatus(&repo.path())
        .env("TRACTATUS_REDIS", ",,,")
        .args(["lock", "run", "--name", "x", "--", "true"]));
    assert_eq!(r.code, 64, "{}", r.describe());
    assert!(r.stderr.contains("TRACTATUS_REDIS"), "{}", r.stderr);
    let r = run(tractatus(&repo.path())
        .args(["--redis", " , ", "lock", "run", "--name", "x", "--", "true"]));
    assert_eq!(r.code, 64, "{}", r.describe());
    assert!(r.stderr.contains("--redis"), "{}", r.stderr);
}

#[test]
fn a_password_in_the_url_query_is_refused_and_never_printed() {
    let repo = with_config(
        "namespace = \"team\"\nredis = [\"redis://127.0.0.1:9/?password=hunter2-q\"]\n",
    );
    let r = run(tractatus(&repo.path()).args(["lock", "status"]));
    assert_eq!(r.code, 64, "{}", r.describe());
    assert!(r.stderr.contains("committed"), "{}", r.stderr);
    assert!(!shows_password(r.stderr.as_bytes()), "{}", r.stderr);
    let repo = Repo::new();
    for url in [
        "redis://127.0.0.1:9/?password=hunter2-q".to_owned(),
        "redis://127.0.0.1:9/?username=u&password=hunter2-q&x".to_owned(),
        "rediss+sentinel://127.0.0.1:9/m?password=hunter2-q".to_owned(),
    ] {
        let r = run(tractatus(&repo.path()).args(["--redis", &url, "lock", "status"]));
        assert_eq!(r.code, 64, "{url}: {}", r.describe());
        assert!(r.stderr.contains("password="), "{}", r.stderr);
        assert!(!r.stderr.contains("hunter2"), "{}", r.stderr);
    }
}

#[test]
fn a_password_holding_a_space_is_masked_in_lock_status() {
    let pw = "pa ss@w%rd é";
    let redis = RedisServer::start_with(&["--requirepass", pw]);
    let repo = Repo::new();
    let encoded = "pa%20ss%40w%25rd%20%C3%A9";
    for url in [
        format!("redis://:{pw}@127.0.0.1:{}", redis.port),
        format!("redis://:{encoded}@127.0.0.1:{}", redis.port),
    ] {
        let pidfile: PathBuf = repo.file("holder.pid");
        let _ = std::fs::remove_file(&pidfile);
        let mut c = tractatus(&repo.path());
        c.args(["--redis", &url, "lock", "run", "--name", "y", "--"])
            .args(["sh", "-c", "echo $$ > \"$1\"; exec sleep 60", "sh"])
            .arg(&pidfile)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let holder = Guard(c.spawn().unwrap());
        wait_until(
            Duration::from_secs(10),
            "the holder runs its command",
            || std::fs::read_to_string(&pidfile).is_ok_and(|s| !s.trim().is_empty()),
        );
        let r = run(tractatus(&repo.path())
            .env("TRACTATUS_REDIS_PASSWORD", pw)
            .args(["--redis", &redis.url(), "--json", "lock", "status"]));
        assert_eq!(r.code, 0, "{}", r.describe());
        assert!(r.stdout.contains("***"), "{}", r.stdout);
        for piece in ["pa ss", "ss@w", "w%rd", "pa%20", "%C3%A9", "é"] {
            assert!(!r.stdout.contains(piece), "{piece} in {}", r.stdout);
        }
        drop(holder);
    }
}
