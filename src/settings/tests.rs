//! How settings resolve: precedence, origins named in errors, credentials kept out of files.

use super::*;

#[test]
fn flags_beat_environment_beat_file() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join(".claude")).unwrap();
    std::fs::write(
        tmp.path().join(".claude/tractatus-lock.toml"),
        "namespace = \"filens\"\nttl = \"20s\"\nwait = \"7s\"\nquarantine = \"20s\"\nredis = [\"redis://file:1\"]\n",
    )
    .unwrap();
    let env = |k: &str| match k {
        "TRACTATUS_TTL" => Some("15s".to_owned()),
        "TRACTATUS_REDIS" => Some("redis://env:1".to_owned()),
        _ => None,
    };
    let flags = Flags {
        ttl: Some("12s".into()),
        ..Default::default()
    };
    let r = resolve(&flags, &env, Some(tmp.path())).unwrap();
    assert_eq!(r.config.ttl, Duration::from_secs(12));
    assert_eq!(r.config.nodes[0].to_string(), "redis://env:1");
    assert_eq!(r.config.namespace, "filens");
    assert_eq!(r.wait, Duration::from_secs(7));
    let r = resolve(&Flags::default(), &env, Some(tmp.path())).unwrap();
    assert_eq!(r.config.ttl, Duration::from_secs(15));
}

#[test]
fn a_password_in_the_committed_config_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join(".claude")).unwrap();
    std::fs::write(
        tmp.path().join(".claude/tractatus-lock.toml"),
        "namespace = \"n\"\nredis = [\"redis://:hunter2@h:1\"]\n",
    )
    .unwrap();
    let e = resolve(&Flags::default(), &|_| None, Some(tmp.path())).unwrap_err();
    assert_eq!(e.exit_code(), 64);
    assert!(!e.to_string().contains("hunter2"), "{e}");
    assert!(e.to_string().contains("TRACTATUS_REDIS_PASSWORD"), "{e}");
}

#[test]
fn password_from_environment_is_injected_and_never_shown() {
    let env = |k: &str| match k {
        "TRACTATUS_REDIS" => Some("redis://127.0.0.1:1".to_owned()),
        "TRACTATUS_REDIS_PASSWORD" => Some("p@ss:w/rd".to_owned()),
        _ => None,
    };
    let r = resolve(&Flags::default(), &env, None).unwrap();
    let node = &r.config.nodes[0];
    assert_eq!(node.secret_url(), "redis://:p%40ss%3Aw%2Frd@127.0.0.1:1");
    assert!(!node.to_string().contains("ss"));
}

#[test]
fn the_sentinels_password_comes_from_the_environment_to_sentinel_urls_only() {
    let tmp = tempfile::tempdir().unwrap();
    let pwfile = tmp.path().join("sentinel-pw");
    std::fs::write(&pwfile, "from&file\n").unwrap();
    let pwfile = pwfile.display().to_string();
    let env = |k: &str| match k {
        "TRACTATUS_REDIS" => Some(
            "redis://a:1,redis+sentinel://h1,h2:2/m/1,redis+sentinel://h3/n?sentinel_username=own"
                .to_owned(),
        ),
        "TRACTATUS_REDIS_PASSWORD" => Some("master".to_owned()),
        "TRACTATUS_SENTINEL_USERNAME" => Some("sam".to_owned()),
        "TRACTATUS_SENTINEL_PASSWORD_FILE" => Some(pwfile.clone()),
        _ => None,
    };
    let r = resolve(&Flags::default(), &env, None).unwrap();
    let urls: Vec<&str> = r.config.nodes.iter().map(|n| n.secret_url()).collect();
    assert_eq!(
        urls,
        [
            "redis://:master@a:1",
            "redis+sentinel://:master@h1,h2:2/m/1?sentinel_username=sam&sentinel_password=from%26file",
            "redis+sentinel://:master@h3/n?sentinel_username=own&sentinel_password=from%26file",
        ]
    );
    for n in &r.config.nodes {
        assert!(!n.to_string().contains("from"), "{n}");
        assert!(!n.to_string().contains("master"), "{n}");
    }
    // A URL's own sentinel password stays.
    let own = "redis+sentinel://h/m?sentinel_password=mine";
    assert_eq!(with_sentinel_credentials(own, Some("u"), Some("env")), own);
}

#[test]
fn a_sentinel_password_in_the_committed_config_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join(".claude")).unwrap();
    std::fs::write(
        tmp.path().join(CONFIG_FILE),
        "redis = [\"redis+sentinel://h:1/m?sentinel_password=hunter2\"]\n",
    )
    .unwrap();
    let e = resolve(&Flags::default(), &|_| None, Some(tmp.path())).unwrap_err();
    assert_eq!(e.exit_code(), 64);
    assert!(!e.to_string().contains("hunter2"), "{e}");
    assert!(e.to_string().contains("TRACTATUS_SENTINEL_PASSWORD"), "{e}");
}

#[test]
fn a_url_naming_a_user_alone_gets_the_password_from_the_environment() {
    let with = |u| with_credentials(u, Some("bob"), Some("pw"));
    assert_eq!(with("redis://alice@h:1/0"), "redis://alice:pw@h:1/0");
    assert_eq!(with("redis://alice:own@h:1"), "redis://alice:own@h:1");
    assert_eq!(with("redis://h:1"), "redis://bob:pw@h:1");
    assert_eq!(
        with_credentials("redis://alice@h:1", None, None),
        "redis://alice@h:1"
    );
}

#[test]
fn the_replica_wait_comes_from_the_environment_or_the_file_and_must_fit_the_ttl() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join(".claude")).unwrap();
    std::fs::write(
        tmp.path().join(CONFIG_FILE),
        "redis = [\"redis://h:1\"]\nwait_replicas = 1\nwait_timeout = \"50ms\"\n",
    )
    .unwrap();
    let root = Some(tmp.path());
    let r = resolve(&Flags::default(), &|_| None, root).unwrap();
    assert_eq!(r.config.wait_replicas, 1);
    assert_eq!(r.config.wait_timeout, Duration::from_millis(50));
    let env = |k: &str| match k {
        "TRACTATUS_REDIS_WAIT_REPLICAS" => Some("2".to_owned()),
        "TRACTATUS_REDIS_WAIT_TIMEOUT" => Some("5s".to_owned()),
        _ => None,
    };
    let e = resolve(&Flags::default(), &env, root).unwrap_err();
    assert_eq!(e.exit_code(), 64);
    assert!(e.to_string().contains("third of the ttl"), "{e}");
    let env = |k: &str| (k == "TRACTATUS_REDIS_WAIT_REPLICAS").then(|| "one".to_owned());
    let e = resolve(&Flags::default(), &env, root).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("TRACTATUS_REDIS_WAIT_REPLICAS: bad replica count 'one'"),
        "{e}"
    );
}

#[test]
fn a_bad_duration_names_where_it_came_from() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join(".claude")).unwrap();
    std::fs::write(tmp.path().join(CONFIG_FILE), "ttl = \"ten\"\n").unwrap();
    let root = Some(tmp.path());
    let e = resolve(&Flags::default(), &|_| None, root).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("`ttl` in .claude/tractatus-lock.toml: bad duration 'ten'"),
        "{e}"
    );
    let env = |k: &str| (k == "TRACTATUS_TTL").then(|| "9".to_owned());
    let e = resolve(&Flags::default(), &env, root).unwrap_err();
    assert!(
        e.to_string().starts_with("TRACTATUS_TTL: bad duration '9'"),
        "{e}"
    );
    let flags = Flags {
        ttl: Some("1x".into()),
        ..Default::default()
    };
    let e = resolve(&flags, &env, root).unwrap_err();
    assert!(e.to_string().starts_with("--ttl: bad duration '1x'"), "{e}");
    assert_eq!(e.exit_code(), 64);
}

#[test]
fn session_settings_come_from_flag_environment_and_file() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join(".claude")).unwrap();
    std::fs::write(
        tmp.path().join(CONFIG_FILE),
        "session_idle = \"5m\"\nper_session = [\".claude/s.json\"]\n",
    )
    .unwrap();
    let root = Some(tmp.path());
    let r = resolve(&Flags::default(), &|_| None, root).unwrap();
    assert_eq!(r.session_idle, Duration::from_secs(300));
    assert_eq!(r.per_session, [".claude/s.json"]);
    assert_eq!(r.session, None);
    let env = |k: &str| match k {
        "TRACTATUS_SESSION_ID" => Some(" env-s ".to_owned()),
        "TRACTATUS_SESSION_IDLE" => Some("0".to_owned()),
        _ => None,
    };
    let e = resolve(&Flags::default(), &env, root).unwrap_err();
    assert!(e.to_string().starts_with("TRACTATUS_SESSION_IDLE: "), "{e}");
    let env = |k: &str| (k == "TRACTATUS_SESSION_ID").then(|| " env-s ".to_owned());
    assert_eq!(
        resolve(&Flags::default(), &env, root)
            .unwrap()
            .session
            .as_deref(),
        Some("env-s")
    );
    let flags = Flags {
        session: Some("flag-s".into()),
        ..Default::default()
    };
    assert_eq!(
        resolve(&flags, &env, root).unwrap().session.as_deref(),
        Some("flag-s")
    );
}

#[test]
fn resolving_a_fresh_repository_writes_nothing_and_leaves_the_namespace_unset() {
    let tmp = tempfile::tempdir().unwrap();
    let env = |k: &str| (k == "TRACTATUS_REDIS").then(|| "redis://127.0.0.1:1".to_owned());
    let r = resolve(&Flags::default(), &env, Some(tmp.path())).unwrap();
    assert_eq!(r.namespace, Namespace::Unset);
    assert_eq!(r.config.namespace, "");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    let r = resolve(&Flags::default(), &env, None).unwrap();
    assert_eq!(r.namespace, Namespace::Default);
    assert_eq!(r.config.namespace, "default");
}

fn with_file(text: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join(".claude")).unwrap();
    std::fs::write(tmp.path().join(CONFIG_FILE), text).unwrap();
    tmp
}

#[test]
fn credentials_go_only_to_endpoints_the_user_named_or_trusts() {
    let tmp = with_file("redis = [\"redis://far.example:7000\"]\n");
    let root = Some(tmp.path());
    let env = |k: &str| (k == "TRACTATUS_REDIS_PASSWORD").then(|| "pw x".to_owned());
    let e = resolve(&Flags::default(), &env, root).unwrap_err();
    assert_eq!(e.exit_code(), 64);
    assert!(e.to_string().contains("far.example:7000"), "{e}");
    assert!(!e.to_string().contains("pw x"), "{e}");
    // Without credentials, the file's endpoints are used as they are.
    let r = resolve(&Flags::default(), &|_| None, root).unwrap();
    assert_eq!(r.config.nodes[0].secret_url(), "redis://far.example:7000");
    // Named by the user, or trusted: the password goes along.
    let flags = Flags {
        redis: vec!["redis://far.example:7000".into()],
        ..Default::default()
    };
    let r = resolve(&flags, &env, root).unwrap();
    assert_eq!(
        r.config.nodes[0].secret_url(),
        "redis://:pw%20x@far.example:7000"
    );
    let trusted = |k: &str| match k {
        "TRACTATUS_TRUSTED_REDIS" => Some("far.example:7000".to_owned()),
        _ => env(k),
    };
    let r = resolve(&Flags::default(), &trusted, root).unwrap();
    assert_eq!(
        r.config.nodes[0].secret_url(),
        "redis://:pw%20x@far.example:7000"
    );
}

#[test]
fn durations_out_of_their_range_are_refused_naming_where_they_came_from() {
    for (line, origin) in [
        ("wait = \"999999999999h\"", "`wait` in"),
        ("wait = \"25h\"", "`wait` in"),
        ("max_hold = \"0s\"", "`max_hold` in"),
        ("max_hold = \"9s\"", "`max_hold` in"),
        ("max_hold = \"721h\"", "`max_hold` in"),
    ] {
        let tmp = with_file(&format!("{line}\n"));
        let e = resolve(&Flags::default(), &|_| None, Some(tmp.path())).unwrap_err();
        assert_eq!(e.exit_code(), 64, "{line}");
        assert!(e.to_string().starts_with(origin), "{line}: {e}");
    }
    let tmp = with_file("wait = \"24h\"\nmax_hold = \"10s\"\n");
    let r = resolve(&Flags::default(), &|_| None, Some(tmp.path())).unwrap();
    assert_eq!(r.wait, Duration::from_secs(86_400));
    assert_eq!(r.config.max_hold, Duration::from_secs(10));
}

#[test]
fn a_redis_setting_that_names_no_url_is_refused_not_taken_for_local_locks() {
    let env = |k: &str| (k == "TRACTATUS_REDIS").then(|| ",,,".to_owned());
    let e = resolve(&Flags::default(), &env, None).unwrap_err();
    assert_eq!(e.exit_code(), 64);
    assert!(e.to_string().starts_with("TRACTATUS_REDIS:"), "{e}");
    let tmp = with_file("redis = [\" , \"]\n");
    let e = resolve(&Flags::default(), &|_| None, Some(tmp.path())).unwrap_err();
    assert!(e.to_string().starts_with("`redis` in"), "{e}");
    let tmp = with_file("redis = []\n");
    let r = resolve(&Flags::default(), &|_| None, Some(tmp.path())).unwrap();
    assert!(r.config.nodes.is_empty());
}

#[test]
fn a_per_session_list_past_its_cap_is_refused_before_any_entry_is_checked() {
    let list: Vec<String> = (0..=256)
        .map(|i| format!("\".claude/s{i}.json\""))
        .collect();
    let tmp = with_file(&format!("per_session = [{}]\n", list.join(",")));
    let e = resolve(&Flags::default(), &|_| None, Some(tmp.path())).unwrap_err();
    assert_eq!(e.exit_code(), 64);
    assert!(e.to_string().contains("at most 256"), "{e}");
}

#[test]
fn a_config_file_that_is_a_link_fifo_or_too_big_is_refused_as_bad_data() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("t.toml"), "namespace = \"theirs\"\n").unwrap();
    std::os::unix::fs::symlink(outside.path(), tmp.path().join(".claude")).unwrap();
    let e = read_settings(tmp.path()).unwrap_err();
    assert_eq!(e.exit_code(), 65, "{e}");
    assert!(e.to_string().contains(".claude is a symbolic link"), "{e}");
    std::fs::remove_file(tmp.path().join(".claude")).unwrap();
    std::fs::create_dir(tmp.path().join(".claude")).unwrap();
    let cfg = tmp.path().join(CONFIG_FILE);
    std::os::unix::fs::symlink(outside.path().join("t.toml"), &cfg).unwrap();
    assert_eq!(read_settings(tmp.path()).unwrap_err().exit_code(), 65);
    std::fs::remove_file(&cfg).unwrap();
    nix::unistd::mkfifo(&cfg, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let e = read_settings(tmp.path()).unwrap_err();
    assert!(e.to_string().contains("a FIFO"), "{e}");
    std::fs::remove_file(&cfg).unwrap();
    std::fs::write(&cfg, vec![b'#'; 1024 * 1024 + 1]).unwrap();
    let e = read_settings(tmp.path()).unwrap_err();
    assert!(e.to_string().contains("larger than 1048576 bytes"), "{e}");
}

#[test]
fn the_first_namespace_is_written_through_handles_and_never_through_a_link() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), tmp.path().join(".claude")).unwrap();
    let e = ensure_namespace(tmp.path(), &FileSettings::default()).unwrap_err();
    assert_eq!(e.exit_code(), 65, "{e}");
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    std::fs::remove_file(tmp.path().join(".claude")).unwrap();
    let ns = ensure_namespace(tmp.path(), &FileSettings::default()).unwrap();
    assert_eq!(
        read_settings(tmp.path()).unwrap().namespace,
        Some(ns.clone())
    );
    assert_eq!(
        ensure_namespace(tmp.path(), &FileSettings::default()).unwrap(),
        ns
    );
    // Nothing but the config file is left in .claude (no temp file).
    let names: Vec<_> = std::fs::read_dir(tmp.path().join(".claude"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["tractatus-lock.toml"]);
}

#[test]
fn a_password_file_that_is_a_fifo_is_refused_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("pw");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let path = fifo.display().to_string();
    let env = |k: &str| (k == "TRACTATUS_REDIS_PASSWORD_FILE").then(|| path.clone());
    let flags = Flags {
        redis: vec!["redis://h:1".into()],
        ..Default::default()
    };
    let e = resolve(&flags, &env, None).unwrap_err();
    assert_eq!(e.exit_code(), 64);
    assert!(e.to_string().contains("a FIFO"), "{e}");
}
