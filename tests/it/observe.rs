//! Watching the locks (issue 21): `lock stats` against a run whose waits and holds the test
//! knows, `tractatus metrics` checked by `promtool` and scraped by a real Prometheus, and
//! `lock status --watch` driven in a pseudo-terminal.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::support::{Guard, RedisServer, Repo, run, tractatus, wait_until};

const LOCK: &str = "hot";
/// How long each worker holds the lock.
const HOLD_MS: u64 = 200;
/// A hold as the log records it (grant to release) may exceed the command's sleep by the
/// command's start and the release's round trip, never fall short of it.
const HOLD_SLACK_MS: u64 = 200;
/// A recorded wait starts at the worker's first ask, which the test cannot see: it sees the
/// spawn, up to the binary's start earlier, and the command's first line, a fork and an exec
/// after the grant. So a recorded wait may fall short of the test's figure by this much, and
/// exceed it by no more than clock granularity.
const WAIT_BELOW_MS: u64 = 250;
const WAIT_ABOVE_MS: u64 = 20;

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn lock_run(repo: &Repo, url: &str) -> std::process::Command {
    let mut c = tractatus(&repo.path());
    c.env("TRACTATUS_REDIS", url).args([
        "--ttl", "10s", "--wait", "60s", "lock", "run", "--name", LOCK, "--",
    ]);
    c
}

/// A holder whose command runs until its stdin is closed; returned once it holds the lock.
fn gate(repo: &Repo, url: &str) -> Guard {
    let marker = repo.file("held");
    let child = lock_run(repo, url)
        .args(["sh", "-c", "touch \"$1\"; read x || true", "sh"])
        .arg(&marker)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = Guard(child);
    wait_until(Duration::from_secs(20), "the gate holds the lock", || {
        marker.exists()
    });
    guard
}

fn open(mut gate: Guard) {
    drop(gate.0.stdin.take());
    let status = gate.0.wait().unwrap();
    assert!(status.success(), "gate: {status}");
}

/// A worker that, once granted, appends "<index> <epoch ms>" to `starts` and holds
/// [`HOLD_MS`].
fn worker(repo: &Repo, url: &str, index: usize) -> Child {
    lock_run(repo, url)
        .args([
            "sh",
            "-c",
            "echo \"$1 $(date +%s%3N)\" >> \"$2\"; sleep 0.2",
            "sh",
            &index.to_string(),
        ])
        .arg(repo.file("starts"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn waiters(server: &RedisServer, repo: &Repo) -> usize {
    server
        .cmd(&["ZCARD", &repo.keys(LOCK).waiters])
        .parse()
        .unwrap_or(0)
}

/// Nearest-rank percentile, as `lock stats` computes it.
fn percentile(sorted: &[u64], p: usize) -> u64 {
    sorted[(p * sorted.len()).div_ceil(100).max(1) - 1]
}

fn ms(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("not a count of ms: {v}"))
}

/// A gate holds the lock while 4 workers queue, then lets go: the workers are granted one
/// after the other, each holding 200 ms. The gate's grant waited for nothing; each worker
/// waited from its spawn until its command's first line (both seen by the test).
#[test]
fn lock_stats_counts_a_known_run_exactly_and_its_percentiles_match_the_test_clock() {
    let server = RedisServer::start();
    let url = server.url();
    let repo = Repo::new();
    let held = gate(&repo, &url);
    let mut spawned = Vec::new();
    let mut workers = Vec::new();
    for i in 0..4 {
        spawned.push(epoch_ms());
        workers.push(Guard(worker(&repo, &url, i)));
    }
    wait_until(Duration::from_secs(30), "the 4 workers are queued", || {
        waiters(&server, &repo) == 4
    });
    open(held);
    let deadline = Instant::now() + Duration::from_secs(30);
    for w in &mut workers {
        loop {
            if let Some(status) = w.0.try_wait().unwrap() {
                assert!(status.success(), "worker: {status}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "workers still running after 30 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // The test's own figures: each worker's wait, spawn to its command's first line.
    let starts = std::fs::read_to_string(repo.file("starts")).unwrap();
    let mut expected_waits = vec![0u64]; // the gate's
    for line in starts.lines() {
        let (i, at) = line.split_once(' ').unwrap();
        let (i, at): (usize, u64) = (i.parse().unwrap(), at.parse().unwrap());
        expected_waits.push(at.saturating_sub(spawned[i]));
    }
    assert_eq!(expected_waits.len(), 5, "starts: {starts}");
    expected_waits.sort_unstable();

    let ran = run(tractatus(&repo.path())
        .env("TRACTATUS_REDIS", &url)
        .args(["--json", "lock", "stats", "--lock", LOCK]));
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let v: Value = serde_json::from_str(&ran.stdout).unwrap();
    let locks = v["locks"].as_array().unwrap();
    assert_eq!(locks.len(), 1, "{v}");
    let s = &locks[0];
    assert_eq!(s["name"], LOCK);
    assert_eq!(s["grants"], 5, "{s}");
    assert_eq!(s["contended"], 4, "{s}");
    assert_eq!(s["contention"], 0.8, "{s}");
    for zero in ["lost_leases", "breaks", "evictions", "joins"] {
        assert_eq!(s[zero], 0, "{zero}: {s}");
    }
    assert_eq!(s["wait"]["count"], 5, "{s}");
    for (field, p) in [
        ("p50_ms", 50),
        ("p95_ms", 95),
        ("p99_ms", 99),
        ("max_ms", 100),
    ] {
        let got = ms(&s["wait"][field]);
        let want = percentile(&expected_waits, p);
        assert!(
            got + WAIT_BELOW_MS >= want && got <= want + WAIT_ABOVE_MS,
            "wait {field}: {got} ms recorded, {want} ms by the test's clock \
             (waits {expected_waits:?}): {s}"
        );
    }
    // Five holds: four of 200 ms, and the gate's, the longest (it held while 4 queued).
    assert_eq!(s["hold"]["count"], 5, "{s}");
    let p50 = ms(&s["hold"]["p50_ms"]);
    assert!(
        (HOLD_MS..=HOLD_MS + HOLD_SLACK_MS).contains(&p50),
        "hold p50 {p50} ms: {s}"
    );
    assert!(ms(&s["hold"]["max_ms"]) >= p50, "{s}");

    // The table names the lock and its grants; the same figures, for people.
    let ran = run(tractatus(&repo.path())
        .env("TRACTATUS_REDIS", &url)
        .args(["lock", "stats", "--since", "1h"]));
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let row = ran.stdout.lines().find(|l| l.starts_with(LOCK)).unwrap();
    assert_eq!(row.split_whitespace().nth(1), Some("5"), "{}", ran.stdout);
}

#[test]
fn lock_stats_on_local_locks_says_there_is_no_audit_log() {
    let repo = Repo::new();
    let ran = run(tractatus(&repo.path()).args(["lock", "run", "--name", "x", "--", "true"]));
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let ran = run(tractatus(&repo.path()).args(["lock", "stats"]));
    assert_eq!(ran.code, 64, "{}", ran.stderr);
    assert!(
        ran.stderr.contains("no audit log without Redis"),
        "{}",
        ran.stderr
    );
}

/// `tool` from PATH; a missing one fails the test, naming the package (never a silent skip).
fn need(tool: &str) -> std::path::PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{tool}` is not installed: these tests need Debian's `prometheus` package \
                 (apt-get install prometheus; .ci/run installs it when missing)"
            )
        })
}

/// One HTTP/1.0 GET on loopback, bounded: the status code and the body (`None` when nothing
/// answers yet).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").ok()?;
    let mut reply = Vec::new();
    s.take(16 * 1024 * 1024).read_to_end(&mut reply).ok()?;
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let (head, body) = reply.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}

/// `n` short runs of lock `name`.
fn runs(repo: &Repo, url: &str, name: &str, n: usize) {
    for _ in 0..n {
        let ran = run(tractatus(&repo.path())
            .env("TRACTATUS_REDIS", url)
            .args(["lock", "run", "--name", name, "--", "true"]));
        assert_eq!(ran.code, 0, "{}", ran.stderr);
    }
}

#[test]
fn metrics_output_passes_promtool_check_metrics() {
    let promtool = need("promtool");
    let server = RedisServer::start();
    let url = server.url();
    let repo = Repo::new();
    runs(&repo, &url, "a/b", 3);
    // A lock held and a slot held while the metrics are read: their gauges have samples too.
    let held = gate(&repo, &url);
    let slot = Guard(
        tractatus(&repo.path())
            .env("TRACTATUS_REDIS", &url)
            .args([
                "lock", "run", "--name", "pool", "--slots", "2", "--", "sleep", "30",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until(Duration::from_secs(20), "the slot is held", || {
        server.cmd(&["EXISTS", &repo.keys("pool#0").lease]) == "1"
            || server.cmd(&["EXISTS", &repo.keys("pool#1").lease]) == "1"
    });
    // Keys planted by someone who can write to Redis, under names no lock can have: no label.
    let evil = "evil\"} 1\ntractatus_grants_total{lock=\"x";
    for keys in [repo.keys(evil), repo.keys("../up")] {
        server.cmd(&[
            "XADD", &keys.log, "*", "event", "grant", "owner", "o", "at", "1",
        ]);
        server.cmd(&["SET", &keys.lease, "o"]);
    }
    let ran = run(tractatus(&repo.path())
        .env("TRACTATUS_REDIS", &url)
        .arg("metrics"));
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert!(
        !ran.stdout.contains("evil") && !ran.stdout.contains("../up"),
        "{}",
        ran.stdout
    );
    for sample in [
        "tractatus_grants_total{lock=\"a/b\"} 3",
        "tractatus_locks_held 2",
        "tractatus_slots_held{lock=\"pool\"} 1",
        "tractatus_lock_held_seconds{lock=\"hot\"}",
        "tractatus_node_up{node=",
        "tractatus_wait_seconds_bucket{lock=\"a/b\",le=\"+Inf\"} 3",
    ] {
        assert!(
            ran.stdout.contains(sample),
            "no {sample} in:\n{}",
            ran.stdout
        );
    }
    drop((held, slot));
    let mut check = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = check.stdin.take().unwrap();
        stdin.write_all(ran.stdout.as_bytes()).unwrap();
    }
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A real Prometheus scrapes `tractatus metrics --listen` every second; its query API returns
/// the grant counter the test produced (3 runs before the listener started, 2 after).
#[test]
fn prometheus_scrapes_the_listener_and_its_query_api_returns_the_grant_count() {
    let prometheus = need("prometheus");
    let server = RedisServer::start();
    let url = server.url();
    let repo = Repo::new();
    runs(&repo, &url, "scraped", 3);

    let port = crate::support::free_port().unwrap();
    let _listener = Guard(
        tractatus(&repo.path())
            .env("TRACTATUS_REDIS", &url)
            .args(["metrics", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until(
        Duration::from_secs(20),
        "the listener serves /metrics",
        || http_get(port, "/metrics").is_some_and(|(code, _)| code == 200),
    );
    assert_eq!(http_get(port, "/other").map(|r| r.0), Some(404));
    runs(&repo, &url, "scraped", 2);

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: tractatus\n    static_configs:\n      \
             - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .unwrap();
    let web = crate::support::free_port().unwrap();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let _prometheus = Guard(
        std::process::Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{web}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let query = "/api/v1/query?query=tractatus_grants_total%7Block%3D%22scraped%22%7D";
    let mut last = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let value = loop {
        if let Some((200, body)) = http_get(web, query) {
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            if let Some(value) = v["data"]["result"][0]["value"][1].as_str()
                && value == "5"
            {
                break value.to_owned();
            }
            last = body;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not report 5 grants within 60 s; last answer: {last}\nits log:\n{}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(value, "5");
}

/// What `script` copied from the pseudo-terminal so far.
fn screen_text(out: &std::sync::Mutex<Vec<u8>>) -> String {
    String::from_utf8_lossy(&out.lock().unwrap()).into_owned()
}

/// The complete frames drawn so far (each starts with a clear-screen and ends with the nodes'
/// table).
fn frames(text: &str) -> Vec<String> {
    text.split("\x1b[2J")
        .filter(|f| f.contains("NODE"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn watch_in_a_terminal_shows_a_holder_come_and_go_and_q_restores_the_terminal() {
    use std::io::{Read, Write};
    let server = RedisServer::start();
    let url = server.url();
    let repo = Repo::new();
    // The namespace exists once something was locked.
    runs(&repo, &url, "warmup", 1);
    let cmd = format!(
        "exec {} --redis {} lock status --watch --interval 200ms",
        env!("CARGO_BIN_EXE_tractatus"),
        url
    );
    let mut c = std::process::Command::new("script");
    c.args(["-qfec", &cmd, "/dev/null"])
        .current_dir(repo.path())
        .env_remove("TRACTATUS_REDIS")
        .env("TERM", "xterm")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut watch = Guard(c.spawn().unwrap());
    let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut stdout = watch.0.stdout.take().unwrap();
    let sink = out.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    wait_until(Duration::from_secs(20), "a frame with no lock held", || {
        frames(&screen_text(&out))
            .last()
            .is_some_and(|f| f.contains("no locks held"))
    });
    let held = gate(&repo, &url);
    wait_until(
        Duration::from_secs(20),
        "a frame showing the holder",
        || {
            frames(&screen_text(&out))
                .last()
                .is_some_and(|f| f.contains(LOCK) && f.contains("up"))
        },
    );
    let seen = frames(&screen_text(&out)).len();
    open(held);
    wait_until(
        Duration::from_secs(20),
        "a later frame without the holder",
        || {
            let all = frames(&screen_text(&out));
            all.len() > seen && all.last().is_some_and(|f| !f.contains(LOCK))
        },
    );
    watch.0.stdin.as_mut().unwrap().write_all(b"q").unwrap();
    let code = watch.wait_code(Duration::from_secs(10));
    reader.join().unwrap();
    assert_eq!(code, Some(0));
    // The terminal is handed back: after the last frame, the cursor is shown again and the
    // alternate screen left (raw mode is undone in the same drop).
    let text = screen_text(&out);
    let last_frame = text.rfind("\x1b[2J").unwrap();
    let tail = &text[last_frame..];
    assert!(
        tail.contains("\x1b[?25h"),
        "cursor not shown again: {tail:?}"
    );
    assert!(
        tail.contains("\x1b[?1049l"),
        "alternate screen not left: {tail:?}"
    );
}

#[test]
fn watch_off_a_terminal_prints_one_snapshot_per_interval() {
    let server = RedisServer::start();
    let url = server.url();
    let repo = Repo::new();
    runs(&repo, &url, "warmup", 1);
    let mut c = tractatus(&repo.path());
    c.env("TRACTATUS_REDIS", &url)
        .args(["lock", "status", "--watch", "--interval", "100ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut watch = Guard(c.spawn().unwrap());
    let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut stdout = watch.0.stdout.take().unwrap();
    let sink = out.clone();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    wait_until(Duration::from_secs(20), "three snapshots", || {
        screen_text(&out).matches("--- ").count() >= 3
    });
    drop(watch);
    reader.join().unwrap();
    let text = screen_text(&out);
    assert!(text.contains("no locks held"), "{text}");
    assert!(
        !text.contains('\x1b'),
        "terminal codes off a terminal: {text:?}"
    );
}
