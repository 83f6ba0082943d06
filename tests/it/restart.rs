//! Redis servers that restart, empty or with their data: fencing tokens never repeat nor go
//! back, a server that forgot its leases grants nothing until they have expired (one Redis as
//! well as Redlock masters; one that kept its data too, as it may lack its last grants), and a
//! brand-new server marked with `lock init` grants at once.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::{RedisServer, Repo, cluster, run, tractatus, wait_until};

/// The critical section of the workers: every line carries the holder's token and the pid of
/// its shell, appended (O_APPEND, one write per line) to the log `$1`; long enough (about
/// 0.5 s) that a restart lands inside one.
pub(crate) const LOGGED: &str = r#"
log="$1"; t="$TRACTATUS_FENCING_TOKEN"
echo "start $t $$" >> "$log"
i=0
while [ $i -lt 8 ]; do echo "tick $t $$" >> "$log"; sleep 0.05; i=$((i + 1)); done
echo "end $t $$" >> "$log"
"#;

/// `lock run --name W` of [`LOGGED`] on `urls`, TTL 1 s, quarantine 2 s.
fn logged_run(repo: &Path, urls: &str, log: &Path) -> Command {
    let mut c = tractatus(repo);
    c.env("TRACTATUS_REDIS", urls)
        .env("TRACTATUS_QUARANTINE", "2s")
        .args([
            "--ttl", "1s", "--wait", "20s", "lock", "run", "--name", "W", "--",
        ])
        .args(["sh", "-c", LOGGED, "sh"])
        .arg(log);
    c
}

/// What the log says.
#[derive(Debug, Default)]
pub(crate) struct Log {
    /// Tokens of the holders, in the order they started.
    pub(crate) tokens: Vec<u64>,
    /// Lines written by a holder after another holder had started.
    pub(crate) overlaps: usize,
}

pub(crate) fn read_log(path: &Path) -> Log {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut log = Log::default();
    let mut current = "";
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 3, "bad log line {line:?}");
        if f[0] == "start" {
            log.tokens.push(f[1].parse().unwrap());
            current = f[2];
        } else if f[2] != current {
            log.overlaps += 1;
        }
    }
    log
}

pub(crate) fn repeated(tokens: &[u64]) -> usize {
    let distinct: std::collections::BTreeSet<&u64> = tokens.iter().collect();
    tokens.len() - distinct.len()
}

pub(crate) fn strictly_increasing(tokens: &[u64]) -> bool {
    tokens.windows(2).all(|w| w[0] < w[1])
}

#[test]
fn one_redis_restarted_empty_mid_run_repeats_no_token_and_lets_no_two_holders_in() {
    let mut redis = RedisServer::start();
    let repo = Repo::new();
    let log = repo.file("W.log");
    let url = redis.url();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let (root, url, log, stop) = (repo.path(), url.clone(), log.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut codes = Vec::new();
                // Bounded in count as well as by the stop flag.
                for _ in 0..20 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let r = run(&mut logged_run(&root, &url, &log));
                    // 76: the holder whose lease the restart erased learns it at its next
                    // renewal and its command is stopped. 69: a run that started while Redis
                    // was down (a first connection that fails is reported at once).
                    assert!(matches!(r.code, 0 | 69 | 76), "{}: {}", r.code, r.stderr);
                    codes.push(r.code);
                }
                codes
            })
        })
        .collect();
    let starts = || read_log(&log).tokens.len();
    wait_until(Duration::from_secs(20), "three holders ran", || {
        starts() >= 3
    });
    // Restart while a holder is inside its critical section.
    wait_until(Duration::from_secs(10), "a holder is inside", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("tick"))
    });
    let before = starts();
    let restarted = Instant::now();
    redis.restart_empty();
    wait_until(
        Duration::from_secs(20),
        "three holders ran after it",
        || starts() >= before + 3,
    );
    stop.store(true, Ordering::SeqCst);
    let codes: Vec<i32> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let l = read_log(&log);
    println!(
        "{} holders ({} before the restart), exit codes {codes:?}, overlaps {}, tokens {:?}; \
         the run went on {:?} after the restart",
        l.tokens.len(),
        before,
        l.overlaps,
        l.tokens,
        restarted.elapsed()
    );
    assert_eq!(
        repeated(&l.tokens),
        0,
        "tokens handed out twice: {:?}",
        l.tokens
    );
    assert_eq!(l.overlaps, 0, "two holders ran at once");
    assert!(
        strictly_increasing(&l.tokens),
        "tokens went back across the restart: {:?}",
        l.tokens
    );
}

/// `lock run --name W -- echo $TRACTATUS_FENCING_TOKEN` on `urls`: the token.
fn token(repo: &Path, urls: &str, quarantine: &str) -> u64 {
    let r = run(tractatus(repo)
        .env("TRACTATUS_REDIS", urls)
        .env("TRACTATUS_QUARANTINE", quarantine)
        .args([
            "--ttl",
            "1s",
            "--wait",
            "20s",
            "lock",
            "run",
            "--name",
            "W",
            "--",
            "sh",
            "-c",
            "echo $TRACTATUS_FENCING_TOKEN",
        ]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    r.stdout.trim().parse().unwrap()
}

#[test]
fn a_majority_of_masters_restarted_empty_never_repeats_a_token_nor_goes_back() {
    let mut servers = cluster(3);
    let repo = Repo::new();
    let urls = servers
        .iter()
        .map(|s| s.url())
        .collect::<Vec<_>>()
        .join(",");
    let mut tokens: Vec<u64> = (0..4).map(|_| token(&repo.path(), &urls, "2s")).collect();
    // Two of three forget everything, and the third, which remembers, is silent: the grants
    // come from the two that forgot alone.
    servers[0].restart_empty();
    servers[1].restart_empty();
    servers[2].pause();
    let start = Instant::now();
    tokens.extend((0..4).map(|_| token(&repo.path(), &urls, "2s")));
    let waited = start.elapsed();
    servers[2].resume();
    tokens.extend((0..4).map(|_| token(&repo.path(), &urls, "2s")));
    // All three forget.
    for s in &mut servers {
        s.restart_empty();
    }
    tokens.extend((0..4).map(|_| token(&repo.path(), &urls, "2s")));
    println!("tokens {tokens:?}; the first grant after the restart came after {waited:?}");
    assert!(
        waited >= Duration::from_secs(2),
        "the restarted masters did not wait out their quarantine: {waited:?}"
    );
    assert_eq!(repeated(&tokens), 0, "{tokens:?}");
    assert!(strictly_increasing(&tokens), "{tokens:?}");
}

/// One try at lock `name` with a 30 s quarantine: the result.
fn try_once(repo: &Path, url: &str, name: &str) -> crate::support::Ran {
    run(tractatus(repo).env("TRACTATUS_QUARANTINE", "30s").args([
        "--redis", url, "--ttl", "1s", "--wait", "0", "lock", "run", "--name", name, "--", "true",
    ]))
}

#[test]
fn a_brand_new_redis_marked_initialized_grants_at_once_and_a_restarted_one_waits() {
    let mut redis = RedisServer::start_with(&[]);
    let repo = Repo::new();
    let url = redis.url();
    // The test kit marked the new server (`lock init`): a 30 s quarantine does not apply.
    let r = try_once(&repo.path(), &url, "W");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.elapsed < Duration::from_secs(2), "{:?}", r.elapsed);

    // Restarted empty: a new run, with no mark. Nothing is granted, and the refusal says why.
    redis.restart_empty();
    let r = try_once(&repo.path(), &url, "W");
    assert_eq!(r.code, 75, "{}", r.stderr);
    assert!(r.stderr.contains("restart quarantine"), "{}", r.stderr);
    assert!(r.stderr.contains("lock init"), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);

    // The operator says this run is brand-new: it grants at once, this lock and any other.
    let used = || -> u64 {
        let info = redis.cmd(&["INFO", "memory"]);
        let line = info
            .lines()
            .find(|l| l.starts_with("used_memory:"))
            .unwrap();
        line["used_memory:".len()..].trim().parse().unwrap()
    };
    let (start, memory) = (Instant::now(), used());
    // Through the CLI, as an operator does it.
    let r = run(tractatus(&repo.path()).args(["--redis", &url, "lock", "init"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.starts_with("marked 1 Redis server "),
        "{}",
        r.stdout
    );
    println!(
        "marking one Redis took {:?} (connect included) and {} KiB",
        start.elapsed(),
        (used() - memory) / 1024
    );
    for name in ["W", "other", ".claude/session-state.json"] {
        let r = try_once(&repo.path(), &url, name);
        assert_eq!(r.code, 0, "{name}: {}", r.stderr);
    }

    // A restart empties it again: quarantined again, for every lock it does not know.
    redis.restart_empty();
    for name in ["W", "other"] {
        let r = try_once(&repo.path(), &url, name);
        assert_eq!(r.code, 75, "{name}: {}", r.stderr);
    }
}

#[test]
fn a_redis_that_kept_its_data_waits_one_quarantine_then_grants_at_once_with_rising_tokens() {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let repo = Repo::new();
    let url = redis.url();
    let mut tokens = vec![token(&repo.path(), &url, "2s")];
    let fence = repo.keys("W").fence;
    let before: u64 = redis.cmd(&["GET", &fence]).parse().unwrap();

    // One try with the same 2 s quarantine (a longer one would be kept for the slot).
    let try_now = |name: &str| {
        run(tractatus(&repo.path())
            .env("TRACTATUS_QUARANTINE", "2s")
            .args(["--redis", &url, "--ttl", "1s", "--wait", "0"])
            .args(["lock", "run", "--name", name, "--", "true"]))
    };

    // Killed and started again on its append-only file: a new run that remembers lock W, but
    // may have lost a grant (everysec, a snapshot, a promoted replica): it waits one quarantine
    // from its start for W too, and the refusal says why. The old run's `lock init` mark was
    // reloaded, but it names the old run: it lifts nothing.
    redis.kill();
    let restarted = Instant::now();
    redis.restart();
    assert_eq!(redis.cmd(&["GET", &fence]), before.to_string(), "AOF lost");
    for name in ["W", "never-seen"] {
        let r = try_now(name);
        assert_eq!(r.code, 75, "{name} was granted at once: {}", r.stderr);
        assert!(r.stderr.contains("restart quarantine"), "{}", r.stderr);
    }
    tokens.push(token(&repo.path(), &url, "2s"));
    let waited = restarted.elapsed();
    // Up longer than the quarantine: it grants at once, W and a lock it never saw.
    for name in ["W", "never-seen"] {
        let r = try_now(name);
        assert_eq!(r.code, 0, "{name}: {}", r.stderr);
        assert!(r.elapsed < Duration::from_secs(2), "{:?}", r.elapsed);
    }
    tokens.push(token(&repo.path(), &url, "2s"));
    println!("tokens {tokens:?}; the restarted server granted W after {waited:?}");
    assert!(
        waited >= Duration::from_secs(2),
        "granted before the quarantine ended: {waited:?}"
    );
    assert!(strictly_increasing(&tokens), "{tokens:?}");
    assert!(tokens[0] == before, "{tokens:?}, counter {before}");
}
