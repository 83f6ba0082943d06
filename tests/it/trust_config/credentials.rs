//! Credentials go only to endpoints the user named or trusts.

use super::*;

// --- Credentials go only to endpoints the user named -------------------------------------------

/// The attacker's config file sends the victim to `url`.
fn plant_endpoint(co: &SharedCheckout, url: &str) {
    co.write_as(
        Who::Attacker,
        ".claude/tractatus-lock.toml",
        &format!("namespace = \"team\"\nredis = [\"{url}\"]\n"),
    );
}

#[test]
fn an_endpoint_named_only_by_the_committed_file_never_receives_the_victims_password() {
    let fake = Recorder::start();
    let co = SharedCheckout::new();
    plant_endpoint(&co, &fake.url());
    co.write_as(Who::Victim, ".claude/x.json", "{\"a\": 1}\n");
    let pwfile = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(pwfile.path(), PASSWORD).unwrap();
    std::fs::set_permissions(
        pwfile.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let envs: [&[(&str, &str)]; 3] = [
        &[
            ("TRACTATUS_REDIS_PASSWORD", PASSWORD),
            ("TRACTATUS_REDIS_USERNAME", USERNAME),
        ],
        &[(
            "TRACTATUS_REDIS_PASSWORD_FILE",
            pwfile.path().to_str().unwrap(),
        )],
        &[("TRACTATUS_REDIS_USERNAME", USERNAME)],
    ];
    for env in envs {
        let r = run_timed(
            victim(&co).envs(env.iter().copied()).args([
                "state",
                "merge",
                ".claude/x.json",
                "{\"b\": 2}",
            ]),
            HANG_LIMIT,
        );
        let got = fake.received();
        assert!(!shows_password(&got), "the fake endpoint got the password");
        assert!(!contains(&got, USERNAME), "the fake endpoint got the user");
        assert_eq!(r.code, 64, "{env:?}: {}", r.describe());
        let endpoint = format!("127.0.0.1:{}", fake.port);
        assert!(r.stderr.contains(&endpoint), "{}", r.stderr);
        assert!(r.stderr.contains("TRACTATUS_TRUSTED_REDIS"), "{}", r.stderr);
        assert!(!shows_password(r.stderr.as_bytes()), "{}", r.stderr);
        assert!(!contains(r.stderr.as_bytes(), USERNAME), "{}", r.stderr);
    }
    let got = fake.received();
    assert!(!shows_password(&got), "the fake endpoint got the password");
    assert!(!contains(&got, USERNAME), "the fake endpoint got the user");
    assert_eq!(
        std::fs::read_to_string(co.file(".claude/x.json")).unwrap(),
        "{\"a\": 1}\n"
    );
}

#[test]
fn sentinels_named_only_by_the_committed_file_never_receive_the_sentinel_password() {
    let fake = Recorder::start();
    let co = SharedCheckout::new();
    plant_endpoint(
        &co,
        &format!("redis+sentinel://127.0.0.1:{}/mymaster", fake.port),
    );
    let r = run_timed(
        victim(&co)
            .env("TRACTATUS_SENTINEL_PASSWORD", PASSWORD)
            .args(["state", "merge", ".claude/x.json", "{\"b\": 2}"]),
        HANG_LIMIT,
    );
    assert!(
        !shows_password(&fake.received()),
        "the fake sentinel got the password"
    );
    assert_eq!(r.code, 64, "{}", r.describe());
    assert!(
        r.stderr.contains(&format!("127.0.0.1:{}", fake.port)),
        "{}",
        r.stderr
    );
}

#[test]
fn a_committed_endpoint_the_user_trusts_authenticates_with_the_environment_password() {
    let redis = RedisServer::start_with(&["--requirepass", "right-horse-battery"]);
    let co = SharedCheckout::new();
    plant_endpoint(&co, &redis.url());
    let endpoint = format!("127.0.0.1:{}", redis.port);
    // A per-user file outside the repository, readable by the victim.
    let config_home = tempfile::tempdir().unwrap();
    std::fs::create_dir(config_home.path().join("tractatus")).unwrap();
    std::fs::write(
        config_home.path().join("tractatus/trusted-redis"),
        format!("# endpoints I trust\n{endpoint}\n"),
    )
    .unwrap();
    for p in [
        config_home.path().to_path_buf(),
        config_home.path().join("tractatus"),
    ] {
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let trusts: [(&str, String); 3] = [
        (
            "TRACTATUS_TRUSTED_REDIS",
            format!("10.0.0.1:6379, {endpoint}"),
        ),
        ("TRACTATUS_REDIS", redis.url()),
        ("XDG_CONFIG_HOME", config_home.path().display().to_string()),
    ];
    for (i, (var, value)) in trusts.iter().enumerate() {
        let r = run_timed(
            victim(&co)
                .env("TRACTATUS_REDIS_PASSWORD", "right-horse-battery")
                .env(var, value)
                .args([
                    "state",
                    "merge",
                    ".claude/x.json",
                    &format!("{{\"n{i}\": {i}}}"),
                ]),
            HANG_LIMIT,
        );
        assert_eq!(r.code, 0, "{var}: {}", r.describe());
    }
    let doc = std::fs::read_to_string(co.file(".claude/x.json")).unwrap();
    assert!(doc.contains("\"n2\": 2"), "{doc}");
}
