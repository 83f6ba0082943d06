//! Redis Cluster as the coordinator: 8 processes over 16 locks spread across 3 masters lose no
//! append, let no two holders in and repeat no token, also while the locks' slots migrate; a
//! URL without `?cluster=true` finds out by itself; `lock init`, `lock status` and `lock log`
//! see every master; a cluster is one Redlock member among plain servers; sessions (registry,
//! per-session files, stats, end, gc) and `lock run --slots` work on a cluster, the slot
//! waiters listening on each slot's own master.
//!
//! Over 500 lines: one module per feature, whose tests share the helpers at its top; issue 22
//! splits it by sub-feature.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tractatus_lock::keys::{SLOTS, init_key, slot_of_tag};
use tractatus_testkit::RedisCluster;

use crate::slots::{Hold, check_four_slots, read_hold};
use crate::support::{
    CRITICAL, Guard, RedisServer, Repo, mark_initialized, run, tractatus, wait_until,
};

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

#[test]
fn three_masters_eight_processes_sixteen_locks_lose_nothing() {
    let c = RedisCluster::start(3, 0);
    assert_eq!(
        masters_of_names(&c).len(),
        3,
        "the 16 names land on all 3 masters"
    );
    assert_eq!(mark_initialized(&c.url()), 3);
    let (repo, work) = (Repo::new(), tempfile::tempdir().unwrap());
    let (detect, explicit) = (c.url(), with_param(&c.node(1).url()));
    let d = load(&repo, work.path(), [&detect, &explicit], 12, |_| {});
    assert_counts(&repo, work.path(), &d, 12);
}

#[test]
fn a_migration_of_the_locks_slots_mid_run_loses_nothing() {
    let c = RedisCluster::start(3, 0);
    assert_eq!(mark_initialized(&c.url()), 3);
    let (repo, work) = (Repo::new(), tempfile::tempdir().unwrap());
    let (detect, explicit) = (c.url(), with_param(&c.node(2).url()));
    let mut slots: Vec<u16> = names().iter().map(|n| slot(n)).collect();
    slots.extend((0..FILES).map(|k| slot(&state_file(k))));
    slots.sort();
    slots.dedup();
    let mut moved = (0, 0);
    let d = load(&repo, work.path(), [&detect, &explicit], 12, |done| {
        // Let the run get going, then move every lock's slot to the next master, twice round.
        wait_until(Duration::from_secs(60), "some locks were taken", || {
            done.load(Ordering::SeqCst)
                || std::fs::read_to_string(work.path().join("job-00/tokens")).is_ok()
        });
        for _round in 0..2 {
            for &s in &slots {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                let to = (c.master_of_slot(s) + 1) % 3;
                moved.0 += 1;
                moved.1 += c.move_slot(s, to);
            }
        }
    });
    println!("moved {} slots ({} keys) during the run", moved.0, moved.1);
    assert!(
        moved.0 >= slots.len(),
        "the run ended before the slots moved"
    );
    assert_counts(&repo, work.path(), &d, 12);
}

/// One `lock run --name NAME -- true` on `url`.
fn once(repo: &Path, url: &str, name: &str) -> crate::support::Ran {
    run(cli(repo, url).args(["--wait", "5s", "lock", "run", "--name", name, "--", "true"]))
}

#[test]
fn a_url_without_the_parameter_finds_the_cluster_and_cluster_false_forces_one_server() {
    let c = RedisCluster::start(3, 0);
    assert_eq!(mark_initialized(&c.url()), 3);
    let repo = Repo::new();
    let seed = c.url();
    let elsewhere = names()
        .into_iter()
        .find(|n| c.master_of_slot(slot(n)) != 0)
        .unwrap();
    for n in names() {
        let r = once(&repo.path(), &seed, &n);
        assert_eq!(r.code, 0, "{n}: {}", r.stderr);
    }
    let r = run(cli(&repo.path(), &format!("{seed}?cluster=false")).args([
        "--wait", "0", "lock", "run", "--name", &elsewhere, "--", "true",
    ]));
    assert_eq!(r.code, 69, "{}", r.stderr);
    assert!(
        r.stderr.contains("leave out ?cluster=false"),
        "{}",
        r.stderr
    );
    let r = once(&repo.path(), &format!("{seed}?cluster=maybe"), &elsewhere);
    assert_eq!(r.code, 64, "{}", r.stderr);
}

/// A `lock run` holding `name` around `sleep 60`; returns once its command runs.
fn hold(repo: &Path, url: &str, name: &str) -> Guard {
    hold_for(repo, url, name, "3s")
}

/// [`hold`] with a lease TTL of `ttl` (and a quarantine as long).
fn hold_for(repo: &Path, url: &str, name: &str, ttl: &str) -> Guard {
    let ready = repo.join(format!("{name}.ready"));
    let g = Guard(
        cli(repo, url)
            .env("TRACTATUS_QUARANTINE", ttl)
            .env("TRACTATUS_TTL", ttl)
            .args([
                "lock",
                "run",
                "--name",
                name,
                "--",
                "sh",
                "-c",
                "touch \"$1\"; exec sleep 60",
                "sh",
            ])
            .arg(&ready)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until(Duration::from_secs(20), "the holder runs", || {
        ready.exists()
    });
    g
}

#[test]
fn init_status_and_log_see_every_master() {
    let c = RedisCluster::start(3, 0);
    let repo = Repo::new();
    let url = c.url();
    let r = run(cli(&repo.path(), &url).args(["lock", "init"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("marked 3 Redis servers"), "{}", r.stdout);
    // Every master's slots carry that master's own run id and replication id.
    let mut total = 0;
    for m in c.current_masters() {
        let field = |section: &str, name: &str| {
            c.node(m)
                .cmd(&["INFO", section])
                .lines()
                .find_map(|l| l.trim().strip_prefix(name).map(str::to_owned))
                .unwrap()
        };
        let run_id = format!(
            "{}:{}",
            field("server", "run_id:"),
            field("replication", "master_replid:")
        );
        let ranges = c.slot_ranges(m);
        let count: usize = ranges.iter().map(|&(a, b)| usize::from(b - a) + 1).sum();
        for &(a, b) in &ranges {
            for s in [a, b] {
                assert_eq!(c.node(m).cmd(&["GET", &init_key(s)]), run_id);
            }
        }
        // Its own slots' markers, and nothing else (no cross-slot write landed there).
        assert_eq!(c.node(m).cmd(&["DBSIZE"]), count.to_string());
        total += count;
    }
    assert_eq!(total, usize::from(SLOTS));
    // One held lock on each master.
    let mut picked: Vec<String> = Vec::new();
    for m in 0..3 {
        picked.push(
            names()
                .into_iter()
                .find(|n| c.master_of_slot(slot(n)) == m)
                .unwrap(),
        );
    }
    let holders: Vec<Guard> = picked.iter().map(|n| hold(&repo.path(), &url, n)).collect();
    let r = run(cli(&repo.path(), &url).args(["--json", "lock", "status"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let mut shown: Vec<String> = v["locks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap().to_owned())
        .collect();
    shown.sort();
    picked.sort();
    assert_eq!(shown, picked, "{}", r.stdout);
    drop(holders);
    let r = run(cli(&repo.path(), &url).args(["--json", "lock", "log"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    for n in &picked {
        assert!(
            v.as_array()
                .unwrap()
                .iter()
                .any(|e| e["name"] == n.as_str() && e["event"] == "grant"),
            "{n} missing from the log: {}",
            r.stdout
        );
    }
}

#[test]
fn redlock_with_a_cluster_as_one_member_keeps_holders_apart() {
    let c = RedisCluster::start(3, 0);
    assert_eq!(mark_initialized(&c.url()), 3);
    let plain = [RedisServer::start(), RedisServer::start()];
    let urls = format!("{},{},{}", c.url(), plain[0].url(), plain[1].url());
    let repo = Repo::new();
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("counter"), "0").unwrap();
    let dir: PathBuf = work.path().to_path_buf();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (root, urls, dir) = (repo.path(), urls.clone(), dir.clone());
            std::thread::spawn(move || {
                for _ in 0..8 {
                    let r = run(cli(&root, &urls)
                        .args([
                            "lock", "run", "--name", "counter", "--", "sh", "-c", CRITICAL, "sh",
                        ])
                        .arg(&dir));
                    assert_eq!(r.code, 0, "{}", r.stderr);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    let tokens: Vec<u64> = read("tokens").lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(read("counter").trim(), "64");
    assert_eq!(read("overlaps").lines().count(), 0);
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
    // The cluster member took part: the lock's fencing counter lives on the cluster.
    let fence = tractatus_lock::keys::LockKeys::new(NS, "counter").fence;
    let m = c.master_of_slot(slot("counter"));
    assert_ne!(c.node(m).cmd(&["GET", &fence]), "(nil)");
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

#[test]
fn a_waiter_whose_node_dies_listens_on_another_and_is_still_served() {
    let mut c = RedisCluster::start(3, 1);
    assert_eq!(mark_initialized(&c.url()), 3);
    let repo = Repo::new();
    let seed = c.url();
    // A lock served by another master than the URL's node (which new processes connect to).
    let name = names()
        .into_iter()
        .find(|n| c.master_of_slot(slot(n)) != 0)
        .unwrap();
    let master = c.master_of_slot(slot(&name));
    let channel = tractatus_lock::keys::LockKeys::new(NS, &name).channel;
    // A TTL that outlasts the failover, so the holder keeps its lease and the waiter must wait
    // (and listen) throughout.
    let holder = hold_for(&repo.path(), &seed, &name, "30s");
    let log = repo.file("waiter.log");
    let mut waiter = Guard(
        cli(&repo.path(), &seed)
            .env("TRACTATUS_QUARANTINE", "30s")
            .args(["--ttl", "30s", "lock", "run", "--name", &name, "--", "true"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    // It listens where the release is published: the lock's master.
    wait_until(
        Duration::from_secs(20),
        "the waiter listens on the lock's master",
        || subscribers(&c, master, &channel) == 1,
    );
    c.kill(master);
    let listens = || (0..c.len()).any(|i| subscribers(&c, i, &channel) == 1);
    let t = std::time::Instant::now();
    while !listens() && t.elapsed() < Duration::from_secs(45) {
        assert!(
            matches!(waiter.0.try_wait(), Ok(None)),
            "the waiter ended before it listened again: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        listens(),
        "the waiter listens nowhere after {:?}; it said: {}; the cluster: {}",
        t.elapsed(),
        std::fs::read_to_string(&log).unwrap_or_default(),
        c.node(0).cmd(&["CLUSTER", "NODES"])
    );
    let on: Vec<usize> = (0..c.len())
        .filter(|&i| subscribers(&c, i, &channel) == 1)
        .collect();
    println!("after node {master} died the waiter listens on node(s) {on:?}");
    drop(holder);
    assert_eq!(waiter.wait_code(Duration::from_secs(60)), Some(0));
}

#[test]
fn seeds_let_a_new_process_in_while_the_urls_node_is_down() {
    let mut c = RedisCluster::start(3, 1);
    assert_eq!(mark_initialized(&c.url()), 3);
    let repo = Repo::new();
    let seeded = format!(
        "{}?seed=127.0.0.1:{}&seed=127.0.0.1:{}",
        c.url(),
        c.node(1).port,
        c.node(2).port
    );
    let take = |url: &str, name: &str, wait: &str| {
        run(cli(&repo.path(), url).args([
            "--wait",
            wait,
            "--connect-timeout",
            "500ms",
            "lock",
            "run",
            "--name",
            name,
            "--",
            "true",
        ]))
    };
    let r = take(&seeded, "job-00", "20s");
    assert_eq!(r.code, 0, "{}", r.stderr);
    c.kill(0);
    c.settle();
    // Every lock, those of the dead node's slots too (its replica took them over).
    for n in names() {
        let r = take(&seeded, &n, "20s");
        assert_eq!(r.code, 0, "{n}: {}", r.stderr);
    }
    // Without seeds, the URL's node was the only way in.
    let r = take(&format!("{}?cluster=true", c.url()), "job-00", "0");
    assert_eq!(r.code, 69, "{}", r.stderr);
}

/// The shared file of the session tests, per-session in their repositories.
const STATE: &str = ".claude/session-state.json";

/// A Python one-liner for `state update`: `message_count + 1`, the rest kept.
const INCREMENT: &str = "import json,sys; d=json.load(sys.stdin); d['message_count'] += 1; \
                         sys.stdout.write(json.dumps(d, indent=2))";

/// The hash slot of namespace `ns`'s session registry.
fn registry_slot(ns: &str) -> u16 {
    slot_of_tag(format!("{ns}#sessions").as_bytes())
}

/// `cmd` with `input` on its stdin: exit code and stdout.
fn feed(cmd: &mut Command, input: &[u8]) -> (Option<i32>, String) {
    use std::io::{Read, Write};
    let mut g = Guard(
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    g.0.stdin.take().unwrap().write_all(input).unwrap();
    let code = g.wait_code(Duration::from_secs(30));
    let mut out = String::new();
    g.0.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    (code, out)
}

/// Each session's state in `session list --json`, sorted by id.
fn session_states(list: &serde_json::Value) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let text = |k: &str| s[k].as_str().unwrap().to_owned();
            (text("id"), text("state"))
        })
        .collect();
    all.sort();
    all
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

/// Two sessions on the cluster through `url`, namespace `ns`: one started with `--id`, one from
/// a hook's payload; 20 increments of each one's copy of [`STATE`] at once (5 writers each);
/// both listed live, their counts summed; one ended and collected; `lock status` and `lock log`
/// unbothered by the registry's keys.
fn two_sessions_on_the_cluster(c: &RedisCluster, url: &str, ns: &str) {
    let repo = Repo::new();
    repo.write(
        ".claude/tractatus-lock.toml",
        &format!("namespace = \"{ns}\"\nper_session = [\"{STATE}\"]\n"),
    );
    let shared = "{\n  \"message_count\": 0,\n  \"kept\": true\n}";
    repo.write(STATE, shared);
    let call = |session: Option<&str>| {
        let mut cmd = cli(&repo.path(), url);
        cmd.env("TRACTATUS_NAMESPACE", ns)
            .env("TRACTATUS_QUIET", "1");
        if let Some(s) = session {
            cmd.env("TRACTATUS_SESSION_ID", s);
        }
        cmd
    };
    let json = |args: &[&str]| -> serde_json::Value {
        let r = run(call(None).arg("--json").args(args));
        assert_eq!(r.code, 0, "{ns} {args:?}: {}", r.stderr);
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", r.stdout))
    };
    let (a, b) = ("sess-a", "sess-b");
    let r = run(call(None).args(["session", "start", "--id", a]));
    assert_eq!((r.code, r.stdout.as_str()), (0, "sess-a\n"), "{}", r.stderr);
    let payload = format!(
        "{{\"session_id\": \"{b}\", \"hook_event_name\": \"SessionStart\", \"source\": \"startup\"}}"
    );
    let (code, out) = feed(
        call(None).args(["session", "start", "--from-hook"]),
        payload.as_bytes(),
    );
    assert_eq!((code, out.as_str()), (Some(0), payload.as_str()));

    std::thread::scope(|scope| {
        for id in [a, b] {
            for w in 0..5 {
                let call = &call;
                scope.spawn(move || {
                    for _ in 0..4 {
                        let r = run(call(Some(id))
                            .args(["state", "update", STATE, "--", "python3", "-c", INCREMENT]));
                        assert_eq!(r.code, 0, "{id}: {}", r.stderr);
                    }
                    if w == 0 {
                        let patch = format!("{{\"owner\": \"{id}\"}}");
                        let r = run(call(Some(id)).args(["state", "merge", STATE, &patch]));
                        assert_eq!(r.code, 0, "{id}: {}", r.stderr);
                    }
                });
            }
        }
    });
    for id in [a, b] {
        let copy = repo.read(&format!(".claude/sessions/{id}/session-state.json"));
        let doc: serde_json::Value = serde_json::from_str(&copy).unwrap();
        assert_eq!(
            (&doc["message_count"], &doc["owner"], &doc["kept"]),
            (&20.into(), &id.into(), &true.into()),
            "{ns}: session {id}: {copy}"
        );
    }
    assert_eq!(repo.read(STATE), shared, "the shared file was touched");

    let live = pairs(&[(a, "live"), (b, "live")]);
    assert_eq!(session_states(&json(&["session", "list"])), live);
    let stats = json(&["session", "stats", "/message_count"]);
    assert_eq!(
        (&stats["live"], &stats["fields"]["/message_count"]["sum"]),
        (&2.into(), &40.into()),
        "{stats}"
    );
    let r = run(call(None).args(["session", "end", a]));
    assert_eq!(
        (r.code, r.stdout.trim()),
        (0, "session sess-a ended"),
        "{}",
        r.stderr
    );
    let ended = pairs(&[(a, "ended"), (b, "live")]);
    assert_eq!(session_states(&json(&["session", "list"])), ended);
    let gc = json(&["session", "gc", "--older-than", "0"]);
    let removed: Vec<(&str, &str)> = gc["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap(), r["state"].as_str().unwrap()))
        .collect();
    assert_eq!(removed, [(a, "ended")], "{gc}");
    assert!(!repo.file(&format!(".claude/sessions/{a}")).exists());
    assert!(repo.file(&format!(".claude/sessions/{b}")).exists());
    assert_eq!(
        session_states(&json(&["session", "list"])),
        pairs(&[(b, "live")])
    );
    // The registry lives on its slot's master alone, collected entries gone.
    let keys = tractatus_lock::keys::SessionKeys::new(ns);
    let owner = c.master_of_slot(registry_slot(ns));
    let mut conn = redis::Client::open(c.node(owner).url())
        .unwrap()
        .get_connection()
        .unwrap();
    let held: Vec<String> = redis::cmd("HKEYS")
        .arg(&keys.entries)
        .query(&mut conn)
        .unwrap();
    assert_eq!(held, [b]);

    // The operator's views walk every master past the registry's keys.
    let status = json(&["lock", "status"]);
    assert_eq!(
        status["locks"].as_array().map(Vec::len),
        Some(0),
        "{status}"
    );
    let log = json(&["lock", "log", "--limit", "1000"]);
    let grants = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "grant")
        .count();
    // One grant per state write, and one to gc, which holds the collected session's copy
    // while it removes it.
    assert_eq!(
        grants, 43,
        "{ns}: one grant per state write and gc's: {log}"
    );
    println!(
        "{ns} on {url}: registry in slot {} (node {owner}); 2 sessions x 20 increments, sum 40; \
         {grants} grants logged",
        registry_slot(ns)
    );
}

#[test]
fn sessions_on_a_cluster_are_listed_counted_ended_and_collected() {
    let c = RedisCluster::start(3, 0);
    assert_eq!(mark_initialized(&c.url()), 3);
    // Through a node that does not serve the registry: without the parameter, the first
    // registry request (a MULTI) is redirected and the node finds out it is a cluster's; with
    // it, the cluster connection routes every request.
    let ns_away_from = |node: usize, what: &str| {
        (0..)
            .map(|k| format!("cluster-sessions-{what}-{k}"))
            .find(|ns| c.master_of_slot(registry_slot(ns)) != node)
            .unwrap()
    };
    let detect = ns_away_from(0, "detect");
    two_sessions_on_the_cluster(&c, &c.url(), &detect);
    // `?cluster=false` keeps one plain server: the registry's refused MULTI says why.
    let repo = Repo::new();
    let r = run(cli(&repo.path(), &format!("{}?cluster=false", c.url()))
        .env("TRACTATUS_NAMESPACE", &detect)
        .args(["session", "start", "--id", "sess-c"]));
    assert_eq!(r.code, 69, "{}", r.stderr);
    assert!(
        r.stderr.contains("leave out ?cluster=false"),
        "{}",
        r.stderr
    );
    let explicit = with_param(&c.node(1).url());
    two_sessions_on_the_cluster(&c, &explicit, &ns_away_from(1, "param"));
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
            cmd.args([
                "--wait", "30s", "lock", "run", "--name", "test-db", "--slots", "4",
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
    for g in &gaps {
        assert!(
            *g < 100.0,
            "a waiter started {g:.1} ms after its slot was freed"
        );
    }
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
