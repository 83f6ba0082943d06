//! `tractatus metrics` checked by promtool and scraped by a real Prometheus.

use super::*;

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
