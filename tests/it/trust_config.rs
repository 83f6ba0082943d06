//! What the committed config file and the files it names may make another user's `tractatus`
//! do (issue 18, items 3, 9 and part of 11): a co-user (the attacker, another uid in the team's
//! group) writes `.claude/tractatus-lock.toml`, plants links and FIFOs; the victim runs
//! ordinary commands. The config file and the CA file are read without following a link below
//! the root, never wait, and are capped; credentials from the victim's environment go only to
//! endpoints the victim named or trusts; bad values are refused up front.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tractatus_testkit::{SharedCheckout, Who};

use crate::support::{Guard, RedisServer, Repo, run, run_timed, tractatus, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_tractatus");
const PASSWORD: &str = "hunter2 with spaces@%é";
const USERNAME: &str = "victim-acl-user";
/// Long enough that a hang shows as a kill, not as a slow pass.
const HANG_LIMIT: Duration = Duration::from_secs(10);
/// How fast a refusal of a planted file must come (the binary starts and stops well within it,
/// even on a loaded two-core CI machine).
const PROMPT: Duration = Duration::from_secs(1);

fn victim(co: &SharedCheckout) -> Command {
    co.command(Who::Victim, Path::new(BIN))
}

/// Run `program args` as the attacker in the checkout's root (planting links and FIFOs).
fn as_attacker(co: &SharedCheckout, program: &str, args: &[&str]) {
    let r = run(co.command(Who::Attacker, Path::new(program)).args(args));
    assert_eq!(r.code, 0, "{program} {args:?}: {}", r.stderr);
}

/// A Redis endpoint that is not one: it accepts every connection on loopback, records every
/// byte it receives and answers each read with a Redis error. Stopped on drop.
struct Recorder {
    port: u16,
    bytes: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
}

impl Recorder {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s) = (bytes.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().take(1000) {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let b = b.clone();
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut buf = [0u8; 4096];
                    for _ in 0..1000 {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                b.lock().unwrap().extend_from_slice(&buf[..n]);
                                let _ = conn.write_all(b"-ERR not a Redis\r\n");
                            }
                        }
                    }
                });
            }
        });
        Recorder { port, bytes, stop }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn received(&self) -> Vec<u8> {
        self.bytes.lock().unwrap().clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The password in any of the forms a client or an error could carry it: as is, percent-encoded,
/// and its distinctive first word.
fn shows_password(text: &[u8]) -> bool {
    contains(text, PASSWORD) || contains(text, "hunter2")
}

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
