//! Redis Cluster under faults that leave no error to see: a node that accepts connections and
//! never answers (SIGSTOPped) named first in the URL stops no new process, and a `lock break`
//! that reaches a master twice (the cluster connection resends after a dropped reply) never
//! removes the next holder's lease.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tractatus_lock::keys::slot_of_tag;
use tractatus_testkit::RedisCluster;

use crate::support::{Guard, Repo, mark_initialized, run, tractatus, wait_until};

const NS: &str = "cluster-faults";

fn slot(name: &str) -> u16 {
    slot_of_tag(format!("{NS}:{name}").as_bytes())
}

/// `tractatus` in `repo` against `url`, namespace [`NS`], TTL and quarantine 3 s.
fn cli(repo: &Path, url: &str) -> Command {
    let mut c = tractatus(repo);
    c.env("TRACTATUS_REDIS", url)
        .env("TRACTATUS_NAMESPACE", NS)
        .env("TRACTATUS_QUARANTINE", "3s")
        .env("TRACTATUS_TTL", "3s");
    c
}

/// SIGCONTs a paused node when the test ends, failed or not (the cluster then stops it by pid).
struct Resume<'a>(&'a RedisCluster, usize);

impl Drop for Resume<'_> {
    fn drop(&mut self) {
        self.0.node(self.1).resume();
    }
}

/// One `lock run --name NAME --wait WAIT -- true`; its exit code, stderr and duration.
fn take(repo: &Path, url: &str, name: &str, wait: &str) -> (i32, String, Duration) {
    let start = Instant::now();
    let r = run(cli(repo, url).args(["--wait", wait, "lock", "run", "--name", name, "--", "true"]));
    (r.code, r.stderr, start.elapsed())
}

#[test]
fn a_silent_node_named_first_in_the_url_stops_no_new_process() {
    let c = RedisCluster::start(3, 1);
    assert_eq!(mark_initialized(&c.url()), 3);
    let repo = Repo::new();
    let masters = c.current_masters();
    let sick = masters[0];
    let url = format!(
        "{}?seed=127.0.0.1:{}&seed=127.0.0.1:{}",
        c.node(sick).url(),
        c.node(masters[1]).port,
        c.node(masters[2]).port
    );
    let names: Vec<String> = (0..64).map(|i| format!("job-{i:02}")).collect();
    let healthy: Vec<&String> = names
        .iter()
        .filter(|n| c.master_of_slot(slot(n)) != sick)
        .take(4)
        .collect();
    let on_sick: Vec<&String> = names
        .iter()
        .filter(|n| c.master_of_slot(slot(n)) == sick)
        .take(2)
        .collect();
    let (code, err, normal) = take(&repo.path(), &url, healthy[0], "10s");
    assert_eq!(code, 0, "{err}");

    c.node(sick).pause();
    let _resume = Resume(&c, sick);
    let (code, err, paused) = take(&repo.path(), &url, healthy[0], "10s");
    println!("a lock on a healthy master: {normal:?} before the pause, {paused:?} during it");
    assert_eq!(code, 0, "{err}");
    assert!(
        paused < Duration::from_millis(900),
        "a lock on a healthy master took {paused:?} while another node was silent"
    );

    // Processes started during the pause, on healthy masters and on the silent one's slots
    // (served once its replica took over), all get in within their wait.
    let runs: Vec<_> = healthy
        .iter()
        .chain(&on_sick)
        .map(|name| {
            let (repo, url, name) = (repo.path(), url.clone(), (*name).clone());
            std::thread::spawn(move || (name.clone(), take(&repo, &url, &name, "10s")))
        })
        .collect();
    for t in runs {
        let (name, (code, err, took)) = t.join().unwrap();
        println!("{name} (slot {}): exit {code} after {took:?}", slot(&name));
        assert_eq!(code, 0, "{name}: {err}");
    }
}

/// A `lock run --name NAME` of `sh -c SCRIPT` (given `$1`, a path in `repo`), output dropped.
fn spawn_run(repo: &Path, url: &str, name: &str, script: &str, arg: &Path) -> Guard {
    Guard(
        cli(repo, url)
            .args(["--wait", "30s", "lock", "run", "--name", name, "--"])
            .args(["sh", "-c", script, "sh"])
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// `lock status --json`'s entry for `name`, if it is held.
fn status_of(repo: &Path, url: &str, name: &str) -> Option<serde_json::Value> {
    let r = run(cli(repo, url).args(["lock", "status", "--json"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    v["locks"]
        .as_array()?
        .iter()
        .find(|l| l["name"] == name)
        .cloned()
}

#[test]
fn a_break_resent_after_the_next_grant_keeps_the_next_holders_lease() {
    let c = RedisCluster::start(3, 0);
    assert_eq!(mark_initialized(&c.url()), 3);
    let repo = Repo::new();
    let url = format!("{}?cluster=true", c.url());
    let name = (0..64)
        .map(|i| format!("job-{i:02}"))
        .find(|n| c.master_of_slot(slot(n)) != 0)
        .unwrap();
    let (first, second) = (
        repo.path().join("first.ready"),
        repo.path().join("second.ran"),
    );
    let _first = spawn_run(
        &repo.path(),
        &url,
        &name,
        "touch \"$1\"; exec sleep 60",
        &first,
    );
    wait_until(Duration::from_secs(20), "the first holder runs", || {
        first.exists()
    });
    // The next holder runs for 3 s, past its first renewals (TTL 3 s).
    let mut next = spawn_run(&repo.path(), &url, &name, "touch \"$1\"; sleep 3", &second);
    wait_until(Duration::from_secs(20), "the next one waits", || {
        status_of(&repo.path(), &url, &name).is_some_and(|l| l["waiters"] == 1)
    });

    let r = run(cli(&repo.path(), &url)
        .env("TRACTATUS_TEST_RESEND_EVICT", "1")
        .args(["lock", "break", &name, "--force"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("broke lock"), "{}", r.stdout);
    // The resend went out once the lock was held again: by the next holder, whose command
    // starts now.
    wait_until(Duration::from_secs(20), "the next holder runs", || {
        second.exists()
    });

    let held = status_of(&repo.path(), &url, &name);
    assert_eq!(
        held.as_ref().map(|l| l["pid"].clone()),
        Some(next.0.id().into()),
        "the resent break removed the next holder's lease: {held:?}"
    );
    assert_eq!(
        next.wait_code(Duration::from_secs(30)),
        Some(0),
        "the next holder lost its lease"
    );
    let log = run(cli(&repo.path(), &url).args(["lock", "log", "--json"]));
    let events: Vec<serde_json::Value> = serde_json::from_str(&log.stdout).unwrap();
    let breaks = events.iter().filter(|e| e["event"] == "break").count();
    assert_eq!(breaks, 1, "{}", log.stdout);
}
