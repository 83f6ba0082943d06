//! Redis Cluster as the coordinator: 8 processes over 16 locks spread across 3 masters lose no
//! append, let no two holders in and repeat no token, also while the locks' slots migrate; a
//! URL without `?cluster=true` finds out by itself; `lock init`, `lock status` and `lock log`
//! see every master; a cluster is one Redlock member among plain servers; sessions (registry,
//! per-session files, stats, end, gc) and `lock run --slots` work on a cluster, the slot
//! waiters listening on each slot's own master.
//!
//! Split by sub-feature (issue 22): the load driver and its checks, and the slot-run test the
//! docs name, stay here; `locks` (load, migration, discovery, init/status/log, Redlock member,
//! waiters and seeds when a node dies), `sessions` (sessions on a cluster).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tractatus_lock::keys::{SLOTS, init_key, slot_of_tag};
use tractatus_testkit::RedisCluster;

use crate::slots::{Hold, SIX_RUNS_TTL, assert_woken_by_release, check_four_slots, read_hold};
use crate::support::{
    CRITICAL, Guard, RedisServer, Repo, mark_initialized, run, tractatus, wait_until,
};

mod locks;
mod sessions;

const NS: &str = "cluster-it";
const FILES: usize = 4;

/// The 16 lock names of the load tests.
fn names() -> Vec<String> {
    (0..16).map(|i| format!("job-{i:02}")).collect()
}

fn slot(name: &str) -> u16 {
    slot_of_tag(format!("{NS}:{name}").as_bytes())
}

fn state_file(k: usize) -> String {
    format!(".claude/s{k}.json")
}

/// `tractatus` in `repo` against `url`, namespace [`NS`], TTL and quarantine 3 s (set through
/// the environment, so a flag may override them).
fn cli(repo: &Path, url: &str) -> Command {
    let mut c = tractatus(repo);
    c.env("TRACTATUS_REDIS", url)
        .env("TRACTATUS_NAMESPACE", NS)
        .env("TRACTATUS_QUARANTINE", "3s")
        .env("TRACTATUS_WAIT", "60s")
        .env("TRACTATUS_TTL", "3s");
    c
}

/// What one load run did: runs per lock name, appends per state file, exit codes not 0.
#[derive(Default)]
struct Done {
    runs: BTreeMap<String, usize>,
    appends: Vec<Vec<(usize, usize)>>,
    failures: Vec<String>,
}

/// 8 worker threads, each running `each` rounds of a `lock run --name` of [`CRITICAL`] and a
/// `state append`; workers alternate between `urls[0]` and `urls[1]`. `during` runs beside
/// them until they are done.
fn load(
    repo: &Repo,
    work: &Path,
    urls: [&str; 2],
    each: usize,
    during: impl FnOnce(&AtomicBool),
) -> Done {
    let names = names();
    for n in &names {
        std::fs::create_dir_all(work.join(n)).unwrap();
        std::fs::write(work.join(n).join("counter"), "0").unwrap();
    }
    for k in 0..FILES {
        repo.write(&state_file(k), "{\n  \"list\": []\n}");
    }
    let done = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (root, url, work, names) = (
                repo.path(),
                urls[w % 2].to_owned(),
                work.to_path_buf(),
                names.clone(),
            );
            std::thread::spawn(move || {
                let mut d = Done {
                    appends: vec![Vec::new(); FILES],
                    ..Done::default()
                };
                for i in 0..each {
                    let name = &names[(w * 7 + i) % names.len()];
                    let r = run(cli(&root, &url)
                        .args([
                            "lock", "run", "--name", name, "--", "sh", "-c", CRITICAL, "sh",
                        ])
                        .arg(work.join(name)));
                    if r.code == 0 {
                        *d.runs.entry(name.clone()).or_default() += 1;
                    } else {
                        d.failures
                            .push(format!("lock run {name}: {} {}", r.code, r.stderr));
                    }
                    let k = (w + i) % FILES;
                    let item = format!("{{\"w\":{w},\"i\":{i}}}");
                    let r = run(cli(&root, &url).args([
                        "state",
                        "append",
                        &state_file(k),
                        "/list",
                        &item,
                    ]));
                    if r.code == 0 {
                        d.appends[k].push((w, i));
                    } else {
                        d.failures
                            .push(format!("state append: {} {}", r.code, r.stderr));
                    }
                }
                d
            })
        })
        .collect();
    let watcher = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut all = Done {
                appends: vec![Vec::new(); FILES],
                ..Done::default()
            };
            for w in workers {
                let d = w.join().unwrap();
                for (n, c) in d.runs {
                    *all.runs.entry(n).or_default() += c;
                }
                for (k, a) in d.appends.into_iter().enumerate() {
                    all.appends[k].extend(a);
                }
                all.failures.extend(d.failures);
            }
            done.store(true, Ordering::SeqCst);
            all
        })
    };
    during(&done);
    watcher.join().unwrap()
}

/// 0 lost appends, 0 overlapping holders, 0 repeated (or backward) tokens, every run done.
fn assert_counts(repo: &Repo, work: &Path, d: &Done, each: usize) {
    assert!(d.failures.is_empty(), "runs failed: {:#?}", d.failures);
    assert_eq!(d.runs.values().sum::<usize>(), 8 * each);
    let (mut tokens_seen, mut overlaps) = (0, 0);
    for (name, runs) in &d.runs {
        let dir = work.join(name);
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        assert_eq!(
            read("counter").trim(),
            runs.to_string(),
            "{name}: updates lost"
        );
        overlaps += read("overlaps").lines().count();
        let tokens: Vec<u64> = read("tokens").lines().map(|l| l.parse().unwrap()).collect();
        assert_eq!(tokens.len(), *runs, "{name}");
        assert!(
            tokens.windows(2).all(|w| w[0] < w[1]),
            "{name}: tokens repeated or went back: {tokens:?}"
        );
        tokens_seen += tokens.len();
    }
    let mut lost = 0;
    for (k, appended) in d.appends.iter().enumerate() {
        let doc: serde_json::Value = serde_json::from_str(&repo.read(&state_file(k))).unwrap();
        let list = doc["list"].as_array().unwrap();
        lost += appended.len().saturating_sub(list.len());
        assert_eq!(
            list.len(),
            appended.len(),
            "{}: appends lost",
            state_file(k)
        );
    }
    println!(
        "{} lock runs over {} names ({tokens_seen} tokens, none repeated), {} appends, {lost} lost, {overlaps} overlaps",
        8 * each,
        d.runs.len(),
        d.appends.iter().map(Vec::len).sum::<usize>()
    );
    assert_eq!(overlaps, 0, "two holders were inside at once");
}

/// The masters (node indices) that serve the 16 names' slots.
fn masters_of_names(c: &RedisCluster) -> std::collections::BTreeSet<usize> {
    names().iter().map(|n| c.master_of_slot(slot(n))).collect()
}

fn with_param(url: &str) -> String {
    format!("{url}?cluster=true")
}

/// `PUBSUB NUMSUB channel` on node `i`: its own subscribers (0 when it is down).
fn subscribers(c: &RedisCluster, i: usize, channel: &str) -> usize {
    if c.node(i).pid() == 0 {
        return 0;
    }
    let client = redis::Client::open(c.node(i).url()).unwrap();
    let Ok(mut conn) = client.get_connection() else {
        return 0;
    };
    redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query::<(String, usize)>(&mut conn)
        .map_or(0, |r| r.1)
}

/// A slot run's command: note (slot, start, token) in `$1`, wait for the gate file `$2`, hold
/// `$3` seconds more, note the end.
const SLOT_HOLD: &str = r#"echo "start $TRACTATUS_SLOT $(date +%s%N) $TRACTATUS_FENCING_TOKEN" >> "$1"
while [ ! -e "$2" ]; do sleep 0.01; done
sleep "$3"
echo "end $TRACTATUS_SLOT $(date +%s%N) $TRACTATUS_FENCING_TOKEN" >> "$1""#;

#[test]
fn six_runs_share_four_slots_whose_locks_live_on_different_masters() {
    let c = RedisCluster::start(3, 0);
    assert_eq!(mark_initialized(&c.url()), 3);
    let slot_name = |i: u32| tractatus_lock::keys::slot_lock_name("test-db", i);
    let masters: Vec<usize> = (0..4)
        .map(|i| c.master_of_slot(slot(&slot_name(i))))
        .collect();
    let spread: std::collections::BTreeSet<_> = masters.iter().collect();
    assert!(
        spread.len() >= 2 && masters.iter().any(|&m| m != 0),
        "the four slots' locks sit on masters {masters:?}"
    );
    let channels: Vec<String> = (0..4)
        .map(|i| tractatus_lock::keys::LockKeys::new(NS, &slot_name(i)).channel)
        .collect();
    let repo = Repo::new();
    let work = tempfile::tempdir().unwrap();
    let gate = work.path().join("gate");
    let files: Vec<PathBuf> = (0..6)
        .map(|k| work.path().join(format!("run{k}")))
        .collect();
    // Every run through the URL of node 0, which finds out it is a cluster's by itself.
    let url = c.url();
    let threads: Vec<_> = files
        .iter()
        .enumerate()
        .map(|(k, f)| {
            let mut cmd = cli(&repo.path(), &url);
            // A long TTL, so that only the release can explain a prompt start (see
            // `crate::slots::SIX_RUNS_TTL`); the restart quarantine must hold it.
            cmd.env("TRACTATUS_TTL", SIX_RUNS_TTL)
                .env("TRACTATUS_QUARANTINE", "60s")
                .args([
                    "--wait", "60s", "lock", "run", "--name", "test-db", "--slots", "4",
                ])
                .args(["--", "sh", "-c", SLOT_HOLD, "sh"])
                .arg(f)
                .arg(&gate)
                .arg(format!("0.{}", 5 + k));
            std::thread::spawn(move || crate::support::run_timed(&mut cmd, Duration::from_secs(60)))
        })
        .collect();
    // Four hold; the two others listen for every slot's release on that slot's master.
    let started = || {
        files
            .iter()
            .enumerate()
            .filter(|(k, f)| read_hold(*k, f).is_some())
            .count()
    };
    wait_until(
        Duration::from_secs(20),
        "four runs hold and two listen on every slot's master",
        || started() == 4 && (0..4).all(|i| subscribers(&c, masters[i], &channels[i]) == 2),
    );
    for (i, ch) in channels.iter().enumerate() {
        let elsewhere: Vec<usize> = (0..c.len())
            .filter(|&n| n != masters[i] && subscribers(&c, n, ch) > 0)
            .collect();
        assert!(
            elsewhere.is_empty(),
            "slot {i} is listened to on {elsewhere:?}"
        );
    }
    // `lock status` finds the four slots on their masters, through either kind of URL.
    for status_url in [url.clone(), with_param(&c.node(2).url())] {
        let r = run(cli(&repo.path(), &status_url).args(["--json", "lock", "status"]));
        assert_eq!(r.code, 0, "{}", r.stderr);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let mut shown: Vec<(String, u64)> = v["locks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["slot_of"] == "test-db")
            .map(|l| {
                (
                    l["name"].as_str().unwrap().to_owned(),
                    l["slot"].as_u64().unwrap(),
                )
            })
            .collect();
        shown.sort();
        let all: Vec<(String, u64)> = (0..4).map(|i| (slot_name(i), u64::from(i))).collect();
        assert_eq!(shown, all, "{status_url}: {}", r.stdout);
    }
    std::fs::write(&gate, "").unwrap();
    for t in threads {
        let r = t.join().unwrap();
        assert_eq!(r.code, 0, "a run failed: {}", r.describe());
    }
    let holds: Vec<Hold> = files
        .iter()
        .enumerate()
        .map(|(k, f)| read_hold(k, f).unwrap_or_else(|| panic!("run {k} left no record")))
        .collect();
    let (most, gaps) = check_four_slots(&holds);
    println!(
        "6 runs on 4 slots on masters {masters:?}: at most {most} at once; the 5th and 6th \
         started {gaps:.1?} ms after their slot's holder ended"
    );
    assert_woken_by_release("cluster", &gaps);
    // `lock log` shows every slot's grants and releases, from each slot's master.
    let r = run(cli(&repo.path(), &url).args(["--json", "lock", "log", "--limit", "1000"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let log: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    for i in 0..4 {
        let n = slot_name(i);
        let count = |event: &str| {
            log.as_array()
                .unwrap()
                .iter()
                .filter(|e| e["name"] == n.as_str() && e["event"] == event)
                .count()
        };
        let runs = holds.iter().filter(|h| h.slot == i).count();
        assert_eq!(
            (count("grant"), count("release")),
            (runs, runs),
            "{n}: {log}"
        );
    }
    let r = run(cli(&repo.path(), &url).args(["--json", "lock", "status"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
}
