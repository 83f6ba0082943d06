//! Credentials: a wrong password is 69 and never printed, TLS with a self-signed CA, an ACL
//! user's password from the environment.

use super::*;

#[test]
fn a_wrong_password_is_69_and_never_printed() {
    let redis = RedisServer::start_with(&["--requirepass", "right-horse-battery"]);
    let repo = Repo::new();
    let url = format!("redis://:wrong-staple-42@127.0.0.1:{}", redis.port);
    let r =
        run(tractatus(&repo.path())
            .args(["--redis", &url, "lock", "run", "--name", "x", "--", "true"]));
    assert_eq!(r.code, 69, "{}", r.stderr);
    assert!(r.stderr.contains("authentication"), "{}", r.stderr);
    assert!(
        !format!("{}{}", r.stdout, r.stderr).contains("wrong-staple"),
        "{}",
        r.stderr
    );
    // A URL given where a subcommand belongs (--redis forgotten): clap's usage error masks it.
    let r = run(tractatus(&repo.path()).args([&url, "lock", "status"]));
    assert_eq!(r.code, 64, "{}", r.stderr);
    assert!(r.stderr.contains("redis://:***@127.0.0.1"), "{}", r.stderr);
    assert!(!r.stderr.contains("wrong-staple"), "{}", r.stderr);
    // The right password from the environment (not the URL) works.
    let r = run(tractatus(&repo.path())
        .env("TRACTATUS_REDIS_PASSWORD", "right-horse-battery")
        .args([
            "--redis",
            &redis.url(),
            "lock",
            "run",
            "--name",
            "x",
            "--",
            "true",
        ]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let pwfile = repo.file("pw");
    std::fs::write(&pwfile, "right-horse-battery\n").unwrap();
    let r = run(tractatus(&repo.path())
        .env("TRACTATUS_REDIS_PASSWORD_FILE", &pwfile)
        .args(["--redis", &redis.url(), "--json", "lock", "status"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stdout.contains("right-horse"));
    // A holder whose command line carried the password in its URL: status masks it.
    let in_url = format!("redis://:right-horse-battery@127.0.0.1:{}", redis.port);
    let _holder = hold(&repo.path(), Some(&in_url), "y", &repo.file("y.pid"));
    let r = run(tractatus(&repo.path()).args(["--redis", &in_url, "--json", "lock", "status"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = json(&r.stdout);
    let command = v["locks"][0]["command"].as_str().unwrap();
    assert!(command.contains("redis://:***@127.0.0.1"), "{command}");
    assert!(!r.stdout.contains("right-horse"), "{}", r.stdout);
}

#[test]
fn tls_with_a_self_signed_certificate_authority() {
    let certs = tempfile::tempdir().unwrap();
    let sh = |script: &str| {
        let out = std::process::Command::new("sh")
            .args(["-ec", script])
            .current_dir(certs.path())
            .output()
            .expect("openssl (the CI script installs it)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=tractatus-test-ca 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr -subj /CN=localhost 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > san.ext
        openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out srv.crt -days 2 -extfile san.ext 2>/dev/null");
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = |f: &str| certs.path().join(f).display().to_string();
    let redis = RedisServer::start_with(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        &p("srv.crt"),
        "--tls-key-file",
        &p("srv.key"),
        "--tls-ca-cert-file",
        &p("ca.crt"),
        "--tls-auth-clients",
        "no",
    ]);
    let url = format!("rediss://127.0.0.1:{tls_port}");
    let repo = Repo::new();
    let mut trusted = tractatus(&repo.path());
    trusted.env("TRACTATUS_REDIS_CA_FILE", p("ca.crt")).args([
        "--redis",
        &url,
        "lock",
        "run",
        "--name",
        "t",
        "--",
        "sh",
        "-c",
        "echo $TRACTATUS_FENCING_TOKEN",
    ]);
    let r = run(&mut trusted);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.trim(), redis.cmd(&["GET", &repo.keys("t").fence]));
    // The lease really went through the TLS port: the plain port's Redis holds its audit log.
    assert!(redis.cmd(&["DBSIZE"]).parse::<u32>().unwrap() > 0);
    // Without the CA the server's certificate is not trusted: unavailable, said why.
    let r =
        run(tractatus(&repo.path())
            .args(["--redis", &url, "lock", "run", "--name", "t", "--", "true"]));
    assert_eq!(r.code, 69, "{}", r.stderr);
    assert!(
        r.stderr.to_lowercase().contains("certificate"),
        "{}",
        r.stderr
    );
    // A CA file that holds no certificate is named as the problem (64), not a handshake.
    let r = run(tractatus(&repo.path())
        .env("TRACTATUS_REDIS_CA_FILE", p("srv.key"))
        .args(["--redis", &url, "lock", "run", "--name", "t", "--", "true"]));
    assert_eq!(r.code, 64, "{}", r.stderr);
    assert!(
        r.stderr.contains("holds no PEM certificate"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_url_naming_an_acl_user_takes_the_password_from_the_environment() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    redis.cmd(&[
        "ACL",
        "SETUSER",
        "alice",
        "on",
        ">s3cret-alice",
        "~*",
        "&*",
        "+@all",
    ]);
    // The default user off: a client that does not authenticate as alice is refused.
    redis.cmd(&["ACL", "SETUSER", "default", "off"]);
    let url = format!("redis://alice@127.0.0.1:{}", redis.port);
    let lock = ["lock", "run", "--name", "x", "--", "true"];
    let r = run(tractatus(&repo.path())
        .env("TRACTATUS_REDIS", &url)
        .env("TRACTATUS_REDIS_PASSWORD", "s3cret-alice")
        .args(lock));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = run(tractatus(&repo.path())
        .env("TRACTATUS_REDIS", &url)
        .env("TRACTATUS_REDIS_PASSWORD", "wrong")
        .args(lock));
    assert_eq!(r.code, 69, "{}", r.stderr);
    assert!(!r.stderr.contains("wrong"), "{}", r.stderr);
}
