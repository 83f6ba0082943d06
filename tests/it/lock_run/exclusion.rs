//! Mutual exclusion across processes: no overlap, no lost update, and the holder as `lock
//! status` shows it; a lease taken first stays held while the next name is waited for.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{read_pid, start_holder};
use crate::support::{
    CRITICAL, Guard, RedisServer, Repo, alive, run, tractatus, try_lock, wait_until,
};

fn lock_run_counter(repo: &Path, url: &str, dir: &Path) -> Command {
    let mut c = tractatus(repo);
    c.args([
        "--redis", url, "--wait", "60s", "lock", "run", "--name", "counter", "--",
    ])
    .args(["sh", "-c", CRITICAL, "sh"])
    .arg(dir);
    c
}

#[test]
fn eight_processes_never_overlap_and_lose_no_update() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("counter"), "0").unwrap();
    let (procs, iterations) = (8, 50);
    let threads: Vec<_> = (0..procs)
        .map(|_| {
            let (repo, url, dir) = (repo.path(), redis.url(), work.path().to_path_buf());
            std::thread::spawn(move || {
                for _ in 0..iterations {
                    let r = run(&mut lock_run_counter(&repo, &url, &dir));
                    assert_eq!(r.code, 0, "lock run failed: {}", r.stderr);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let counter: u32 = std::fs::read_to_string(work.path().join("counter"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let overlaps = std::fs::read_to_string(work.path().join("overlaps"))
        .map(|s| s.lines().count())
        .unwrap_or(0);
    println!(
        "counter {counter} (expected {}), overlaps {overlaps}",
        procs * iterations
    );
    assert_eq!(overlaps, 0, "two holders were inside at once");
    assert_eq!(counter, procs * iterations, "updates were lost");

    // Fencing tokens, in the order the holders ran: strictly increasing, never repeated.
    let tokens: Vec<u64> = std::fs::read_to_string(work.path().join("tokens"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(tokens.len(), (procs * iterations) as usize);
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "tokens not strictly increasing in grant order: {tokens:?}"
    );
}

#[test]
fn control_without_the_lock_loses_updates() {
    // The same workload with no lock: shows the counter test above can fail.
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("counter"), "0").unwrap();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let dir = work.path().to_path_buf();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    let _ = Command::new("sh")
                        .args(["-c", CRITICAL, "sh"])
                        .arg(&dir)
                        .status();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let counter: u32 = std::fs::read_to_string(work.path().join("counter"))
        .unwrap()
        .trim()
        .parse()
        .unwrap_or(0);
    println!("unguarded counter {counter} of 400");
    assert!(
        counter < 400,
        "the unguarded control lost nothing: the workload does not contend"
    );
}

#[test]
fn status_lists_the_holder() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    let holder = start_holder(&repo.path(), &redis.url(), "10s", "host-a", &repo.file("p"));
    let r =
        run(tractatus(&repo.path()).args(["--redis", &redis.url(), "lock", "status", "--json"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let lock = &v["locks"][0];
    assert_eq!(lock["name"], "L");
    assert_eq!(lock["host"], "host-a");
    assert_eq!(lock["pid"], holder.0.id());
    assert_eq!(
        lock["token"].to_string(),
        redis.cmd(&["GET", &repo.keys("L").fence])
    );
    assert!(lock["ttl_left_ms"].as_u64().unwrap() <= 10_000);
    assert!(lock["session"].as_str().unwrap().len() >= 32);
    let r = run(tractatus(&repo.path()).args(["--redis", &redis.url(), "lock", "status"]));
    assert!(r.stdout.starts_with("LOCK"), "{}", r.stdout);
    assert!(r.stdout.contains("host-a"), "{}", r.stdout);
}

#[test]
fn a_lease_taken_first_stays_held_while_the_next_name_is_waited_for() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    // Someone else holds B for a while (TTL 1s, renewed).
    let pidfile = repo.file("b.pid");
    let mut c = tractatus(&repo.path());
    c.args([
        "--redis",
        &redis.url(),
        "--ttl",
        "1s",
        "lock",
        "run",
        "--name",
        "B",
        "--",
        "sh",
        "-c",
        "echo $$ > \"$1\"; exec sleep 3",
        "sh",
    ])
    .arg(&pidfile)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let _b = Guard(c.spawn().unwrap());
    wait_until(Duration::from_secs(10), "B's holder runs", || {
        std::fs::read_to_string(&pidfile).is_ok_and(|s| !s.trim().is_empty())
    });
    // A then B, in that order: A is taken at once, B is waited for for about 3 s (3 TTLs).
    let mut c = tractatus(&repo.path());
    c.args([
        "--redis",
        &redis.url(),
        "--ttl",
        "1s",
        "--wait",
        "20s",
        "lock",
        "run",
        "--name",
        "B",
        "--name",
        "A",
        "--",
        "sh",
        "-c",
        "echo $TRACTATUS_LOCK_NAME",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut both = Guard(c.spawn().unwrap());
    let probe = |what: &str| try_lock(&repo.path(), &redis.url(), ["--name", what]);
    // Until B frees up, A stays held by the waiting process, TTLs after it was taken.
    let mut probes = 0;
    while alive(read_pid(&pidfile)) {
        std::thread::sleep(Duration::from_millis(400));
        if !alive(read_pid(&pidfile)) {
            break;
        }
        let r = probe("A");
        assert_eq!(
            r.code, 75,
            "A was free while its taker waited for B: {}",
            r.stderr
        );
        probes += 1;
    }
    assert!(probes >= 3, "only {probes} probes while B was held");
    let status = both.wait_code(Duration::from_secs(20));
    let (mut out, mut err) = (String::new(), String::new());
    use std::io::Read;
    both.0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    both.0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status, Some(0), "{err}");
    assert_eq!(out.trim(), "A,B");
}
