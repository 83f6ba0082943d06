//! Deadlock detection across processes (issue 24): nested calls under `lock run` that wait for
//! each other in a cycle are found and one of them, the youngest in line, gives up at once
//! with 75 and the cycle named, while the others finish; waits without a cycle never give up.
//! Every case runs on one Redis, on three Redlock masters and on local file locks.
//!
//! Over 500 lines: one module per feature, whose tests share the helpers at its top; issue 22
//! splits it by sub-feature.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::{Ran, RedisServer, Repo, run_timed, tractatus};

const BIN: &str = env!("CARGO_BIN_EXE_tractatus");
/// Every wait's limit: a cycle waited out would end in 75 after it, far past the 1 s a victim
/// is given.
const WAIT: &str = "20s";
/// A process's limit in these tests.
const LIMIT: Duration = Duration::from_secs(40);

/// Where the locks are.
enum Backend {
    Redis(Vec<RedisServer>),
    /// A Redis Cluster, namespace [`CLUSTER_NS`].
    Cluster(tractatus_testkit::RedisCluster),
    Local,
}

/// The namespace on the cluster, fixed so that a test can tell which master a lock lives on.
const CLUSTER_NS: &str = "deadlock";

impl Backend {
    fn all() -> [Backend; 3] {
        [
            Backend::Redis(vec![RedisServer::start()]),
            Backend::Redis((0..3).map(|_| RedisServer::start()).collect()),
            Backend::Local,
        ]
    }

    fn name(&self) -> String {
        match self {
            Backend::Redis(s) if s.len() == 1 => "one Redis".into(),
            Backend::Redis(s) => format!("{} Redlock masters", s.len()),
            Backend::Cluster(c) => format!("a {}-master Redis Cluster", c.masters()),
            Backend::Local => "local locks".into(),
        }
    }

    fn tractatus(&self, dir: &Path) -> Command {
        let mut c = tractatus(dir);
        c.env("TRACTATUS_WAIT", WAIT).env("TRACTATUS_QUIET", "1");
        if let Backend::Redis(servers) = self {
            let urls: Vec<String> = servers.iter().map(|s| s.url()).collect();
            c.env("TRACTATUS_REDIS", urls.join(","));
        }
        if let Backend::Cluster(cluster) = self {
            c.env("TRACTATUS_REDIS", cluster.url())
                .env("TRACTATUS_NAMESPACE", CLUSTER_NS);
        }
        c
    }
}

/// One process of a test: it holds `held` (under `lock run`), and once every process holds
/// its file, merges `{"<tag>": 1}` into `wanted` (with `host` as its TRACTATUS_HOST, when
/// given). Marks `<tag>.start` just before the merge and `<tag>.done` just after (ns since the
/// epoch).
struct Step {
    tag: String,
    held: String,
    wanted: String,
    host: Option<String>,
}

fn step(tag: &str, held: &str, wanted: &str) -> Step {
    Step {
        tag: tag.into(),
        held: held.into(),
        wanted: wanted.into(),
        host: None,
    }
}

/// What one process did.
struct Outcome {
    ran: Ran,
    start_ns: u128,
    done_ns: u128,
}

/// Run `steps` at once, each waiting (bounded) until all hold their file before it merges.
fn run_steps(backend: &Backend, repo: &Repo, steps: &[Step]) -> Vec<Outcome> {
    let dir = repo.path();
    let marks = dir.join(".marks");
    std::fs::create_dir_all(&marks).unwrap();
    let n = steps.len();
    let script = r#"
        touch "$MARKS/$TAG.ready"
        i=0
        while [ "$(ls "$MARKS" | grep -c '\.ready$')" -lt "$N" ] && [ $i -lt 2000 ]; do
            sleep 0.005; i=$((i+1))
        done
        date +%s%N > "$MARKS/$TAG.start"
        "$BIN" state merge "$WANTED" "{\"$TAG\": 1}"
        rc=$?
        date +%s%N > "$MARKS/$TAG.done"
        exit $rc
    "#;
    let handles: Vec<_> = steps
        .iter()
        .map(|s| {
            let mut c = backend.tractatus(&dir);
            c.args(["lock", "run", "--file", &s.held, "--", "sh", "-c", script])
                .env("MARKS", &marks)
                .env("TAG", &s.tag)
                .env("N", n.to_string())
                .env("BIN", BIN)
                .env("WANTED", &s.wanted);
            if let Some(h) = &s.host {
                c.env("TRACTATUS_HOST", h);
            }
            std::thread::spawn(move || run_timed(&mut c, LIMIT))
        })
        .collect();
    let read_ns = |tag: &str, what: &str| {
        std::fs::read_to_string(marks.join(format!("{tag}.{what}")))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    };
    handles
        .into_iter()
        .zip(steps)
        .map(|(h, s)| Outcome {
            ran: h.join().unwrap(),
            start_ns: read_ns(&s.tag, "start"),
            done_ns: read_ns(&s.tag, "done"),
        })
        .collect()
}

fn doc(repo: &Repo, file: &str) -> serde_json::Value {
    serde_json::from_str(&repo.read(file)).unwrap_or(serde_json::Value::Null)
}

/// A cycle of `steps` (each wants the next one's file): exactly one gives up, with 75 and
/// the cycle named, within 1 s of the last wait that closed it; every other update lands.
fn assert_one_victim(backend: &Backend, repo: &Repo, steps: &[Step], out: &[Outcome]) {
    let name = backend.name();
    let victims: Vec<usize> = (0..out.len()).filter(|&i| out[i].ran.code != 0).collect();
    assert_eq!(
        victims.len(),
        1,
        "{name}: not exactly one gave up: {}",
        out.iter()
            .map(|o| o.ran.describe())
            .collect::<Vec<_>>()
            .join("\n---\n")
    );
    let v = &out[victims[0]];
    assert_eq!(v.ran.code, 75, "{name}: {}", v.ran.describe());
    assert!(
        v.ran.stderr.contains("deadlock"),
        "{name}: {}",
        v.ran.stderr
    );
    let vs = &steps[victims[0]];
    assert!(
        v.ran.stderr.contains(&format!("'{}'", vs.held))
            && v.ran.stderr.contains(&format!("'{}'", vs.wanted)),
        "{name}: the message does not name the locks held and waited for: {}",
        v.ran.stderr
    );
    println!("{name}: the victim said: {}", v.ran.stderr.trim());
    if let Backend::Redis(_) | Backend::Cluster(_) = backend {
        let log = crate::support::run(
            backend
                .tractatus(&repo.path())
                .args(["lock", "log", "--json"]),
        );
        assert!(
            log.stdout.contains(r#""deadlock""#),
            "{name}: no deadlock in the audit log: {}",
            log.stdout
        );
    }
    let closed = out.iter().map(|o| o.start_ns).max().unwrap();
    let took = Duration::from_nanos((v.done_ns.saturating_sub(closed)) as u64);
    println!(
        "{name}: {} waits, victim gave up {took:?} after the cycle closed",
        out.len()
    );
    assert!(
        took < Duration::from_secs(1),
        "{name}: victim took {took:?}"
    );
    for (i, s) in steps.iter().enumerate() {
        if i == victims[0] {
            continue;
        }
        assert_eq!(
            doc(repo, &s.wanted)[&s.tag],
            serde_json::json!(1),
            "{name}: {}'s update was lost",
            s.tag
        );
    }
}

#[test]
fn two_processes_waiting_for_each_others_file_end_with_one_victim_at_once_and_no_lost_update() {
    for backend in Backend::all() {
        let repo = Repo::new();
        repo.write("x.json", "{}");
        repo.write("y.json", "{}");
        let steps = [step("a", "x.json", "y.json"), step("b", "y.json", "x.json")];
        let out = run_steps(&backend, &repo, &steps);
        assert_one_victim(&backend, &repo, &steps, &out);
    }
}

#[test]
fn three_processes_in_a_cycle_over_three_locks_one_on_another_host_end_with_one_victim() {
    for backend in Backend::all() {
        let repo = Repo::new();
        for f in ["x.json", "y.json", "z.json"] {
            repo.write(f, "{}");
        }
        let mut steps = [
            step("a", "x.json", "y.json"),
            step("b", "y.json", "z.json"),
            step("c", "z.json", "x.json"),
        ];
        steps[1].host = Some("other-host".into());
        let out = run_steps(&backend, &repo, &steps);
        assert_one_victim(&backend, &repo, &steps, &out);
    }
}

#[test]
fn a_chain_without_a_cycle_gives_nobody_up() {
    for backend in Backend::all() {
        let repo = Repo::new();
        for f in ["x.json", "y.json", "z.json"] {
            repo.write(f, "{}");
        }
        // a holds x and waits for y; b holds y and waits for z; c holds z and updates w.
        let steps = [
            step("a", "x.json", "y.json"),
            step("b", "y.json", "z.json"),
            step("c", "z.json", "w.json"),
        ];
        let out = run_steps(&backend, &repo, &steps);
        for (o, s) in out.iter().zip(&steps) {
            assert_eq!(o.ran.code, 0, "{}: {}", backend.name(), o.ran.describe());
            assert_eq!(doc(&repo, &s.wanted)[&s.tag], serde_json::json!(1));
        }
    }
}

#[test]
fn eight_processes_taking_random_nested_pairs_in_one_global_order_never_see_a_deadlock() {
    const FILES: [&str; 4] = ["a.json", "b.json", "c.json", "d.json"];
    const FOR: Duration = Duration::from_secs(3);
    const MOST_ROUNDS: usize = 200;
    for backend in Backend::all() {
        let repo = Repo::new();
        for f in FILES {
            repo.write(f, "{}");
        }
        let backend = std::sync::Arc::new(backend);
        let workers: Vec<_> = (0..8u64)
            .map(|w| {
                let (backend, dir) = (backend.clone(), repo.path());
                std::thread::spawn(move || {
                    // xorshift, seeded per worker: random pairs, first < second.
                    let mut x = 0x9E37_79B9_7F4A_7C15_u64 ^ (w + 1);
                    let mut next = || {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x
                    };
                    let end = std::time::Instant::now() + FOR;
                    let mut runs = Vec::new();
                    while std::time::Instant::now() < end && runs.len() < MOST_ROUNDS {
                        let i = (next() % 3) as usize;
                        let j = i + 1 + (next() % (3 - i as u64)) as usize;
                        let mut c = backend.tractatus(&dir);
                        c.args(["lock", "run", "--file", FILES[i], "--", BIN])
                            .args(["state", "merge", FILES[j]])
                            .arg(format!(r#"{{"w{w}": {}}}"#, runs.len()));
                        runs.push(run_timed(&mut c, LIMIT));
                    }
                    runs
                })
            })
            .collect();
        let runs: Vec<Ran> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        let deadlocks = runs
            .iter()
            .filter(|r| r.stderr.contains("deadlock"))
            .count();
        let failed: Vec<&Ran> = runs.iter().filter(|r| r.code != 0).collect();
        println!(
            "{}: {} nested updates by 8 processes, {deadlocks} deadlock errors, {} failures",
            backend.name(),
            runs.len(),
            failed.len()
        );
        assert_eq!(deadlocks, 0, "{}", backend.name());
        assert!(
            failed.is_empty(),
            "{}: {}",
            backend.name(),
            failed[0].describe()
        );
        assert!(runs.len() >= 16, "{}: too few rounds", backend.name());
        if let Backend::Redis(servers) = &*backend {
            // Nested waits did happen: they recorded edges (and walked).
            let sha = wait_for_script_sha();
            let exists = servers[0].cmd(&["SCRIPT", "EXISTS", &sha]);
            assert!(exists.contains('1'), "{}: no nested wait", backend.name());
        }
    }
}

/// SHA-1 of `lua/wait_for.lua`: the name Redis knows the script by once it ran.
fn wait_for_script_sha() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/lua/wait_for.lua");
    let out = Command::new("sha1sum").arg(path).output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..40].to_owned()
}

#[test]
fn an_uncontended_merge_nested_or_not_never_runs_the_wait_for_script() {
    let server = RedisServer::start();
    let backend = Backend::Redis(vec![server]);
    let Backend::Redis(servers) = &backend else {
        unreachable!()
    };
    let sha = wait_for_script_sha();
    let ran_script = || servers[0].cmd(&["SCRIPT", "EXISTS", &sha]).contains('1');
    let repo = Repo::new();
    repo.write("x.json", "{}");
    let plain = crate::support::run(backend.tractatus(&repo.path()).args([
        "state",
        "merge",
        "y.json",
        r#"{"a": 1}"#,
    ]));
    assert_eq!(plain.code, 0, "{}", plain.describe());
    let nested = crate::support::run(backend.tractatus(&repo.path()).args([
        "lock",
        "run",
        "--file",
        "x.json",
        "--",
        BIN,
        "state",
        "merge",
        "y.json",
        r#"{"b": 1}"#,
    ]));
    assert_eq!(nested.code, 0, "{}", nested.describe());
    // The figures: commands one merge sends (INFO commandstats between a reset and the end),
    // plain and nested under `lock run` (measured inside its command, so the outer lease's
    // own commands are outside the window, except a renewal that happens to fall in it).
    let calls = |info: &str| -> u64 {
        info.lines()
            .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_config"))
            .filter(|l| !l.starts_with("cmdstat_info"))
            .filter_map(|l| {
                l.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    let port = servers[0].port.to_string();
    let measure = "redis-cli -p \"$PORT\" CONFIG RESETSTAT >/dev/null && \"$BIN\" state merge y.json '{\"c\": 1}' && redis-cli -p \"$PORT\" INFO commandstats";
    let env = backend.tractatus(&repo.path());
    let mut sh = Command::new("sh");
    sh.args(["-c", measure])
        .current_dir(repo.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .env("PORT", &port)
        .env("BIN", BIN);
    let plain = crate::support::run(&mut sh);
    assert_eq!(plain.code, 0, "{}", plain.describe());
    let nested = crate::support::run(
        backend
            .tractatus(&repo.path())
            .args(["lock", "run", "--file", "x.json", "--", "sh", "-c", measure])
            .env("PORT", &port)
            .env("BIN", BIN),
    );
    assert_eq!(nested.code, 0, "{}", nested.describe());
    println!(
        "commands of one uncontended merge: {} plain, {} nested under x.json's lease",
        calls(&plain.stdout),
        calls(&nested.stdout)
    );
    // Scripts are where a wait-for edge would go: the same two (grant, release) either way.
    // (Totals may differ by the outer `lock run`'s own bookkeeping falling in the window.)
    let scripts = |info: &str| {
        info.lines()
            .find(|l| l.starts_with("cmdstat_evalsha:"))
            .and_then(|l| {
                l.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
    };
    assert_eq!(scripts(&plain.stdout), Some(2), "{}", plain.stdout);
    assert_eq!(scripts(&nested.stdout), Some(2), "{}", nested.stdout);
    let keys = servers[0].cmd(&["KEYS", "*:waitfor"]);
    assert!(
        !ran_script(),
        "an uncontended merge ran the wait-for script (keys: {keys})"
    );
    assert!(!keys.contains("waitfor"), "{keys}");
    // The same nested merge, made to wait: now it records its edge.
    let go = repo.path().join(".go");
    let mut h = backend.tractatus(&repo.path());
    h.args(["lock", "run", "--file", "y.json", "--", "sh", "-c"])
        .arg(r#"i=0; while [ ! -e "$GO" ] && [ $i -lt 4000 ]; do sleep 0.005; i=$((i+1)); done"#)
        .env("GO", &go);
    let h = std::thread::spawn(move || run_timed(&mut h, LIMIT));
    crate::support::wait_until(Duration::from_secs(10), "h holds y", || {
        servers[0].cmd(&["EXISTS", &repo.keys("y.json").lease]) == "1"
    });
    let mut v = backend.tractatus(&repo.path());
    v.args([
        "lock", "run", "--file", "x.json", "--", BIN, "state", "merge",
    ])
    .args(["y.json", r#"{"v": 1}"#]);
    let v = std::thread::spawn(move || run_timed(&mut v, LIMIT));
    crate::support::wait_until(
        Duration::from_secs(10),
        "the nested wait records its edge",
        ran_script,
    );
    std::fs::write(&go, "").unwrap();
    assert_eq!(h.join().unwrap().code, 0);
    assert_eq!(v.join().unwrap().code, 0);
}

#[test]
fn lock_status_shows_what_each_nested_waiter_holds_and_its_json_has_the_edges() {
    for backend in [Backend::Redis(vec![RedisServer::start()]), Backend::Local] {
        let name = backend.name();
        let repo = Repo::new();
        repo.write("x.json", "{}");
        repo.write("y.json", "{}");
        let dir = repo.path();
        let go = dir.join(".go");
        // b holds y until told to go; a holds x and waits for y.
        let mut b = backend.tractatus(&dir);
        b.args(["lock", "run", "--file", "y.json", "--", "sh", "-c"])
            .arg(
                r#"i=0; while [ ! -e "$GO" ] && [ $i -lt 4000 ]; do sleep 0.005; i=$((i+1)); done"#,
            )
            .env("GO", &go);
        let b = std::thread::spawn(move || run_timed(&mut b, LIMIT));
        let held = |c: &mut Command| crate::support::run(c.args(["lock", "status", "--json"]));
        crate::support::wait_until(Duration::from_secs(10), "b holds y", || {
            held(&mut backend.tractatus(&dir)).stdout.contains("y.json")
        });
        let mut a = backend.tractatus(&dir);
        a.args([
            "lock", "run", "--file", "x.json", "--", BIN, "state", "merge",
        ])
        .args(["y.json", r#"{"a": 1}"#]);
        let a = std::thread::spawn(move || run_timed(&mut a, LIMIT));
        let mut json = serde_json::Value::Null;
        crate::support::wait_until(Duration::from_secs(10), "a's edge shows", || {
            json = serde_json::from_str(&held(&mut backend.tractatus(&dir)).stdout).unwrap();
            let locks = json["locks"].as_array().cloned().unwrap_or_default();
            locks
                .iter()
                .any(|l| l["name"] == "y.json" && l["edges"][0]["holding"][0]["name"] == "x.json")
        });
        let y = json["locks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == "y.json")
            .unwrap()
            .clone();
        assert_eq!(y["edges"][0]["waits_for"], "y.json", "{name}: {y}");
        let text = crate::support::run(backend.tractatus(&dir).args(["lock", "status"]));
        assert!(
            text.stdout.contains("holding 'x.json' (token"),
            "{name}: {}",
            text.stdout
        );
        println!("{name}:\n{}", text.stdout);
        std::fs::write(&go, "").unwrap();
        assert_eq!(b.join().unwrap().code, 0);
        let a = a.join().unwrap();
        assert_eq!(a.code, 0, "{name}: {}", a.describe());
        assert_eq!(doc(&repo, "y.json")["a"], serde_json::json!(1));
    }
}

#[test]
fn a_planted_local_edge_claiming_another_trees_lock_makes_nobody_give_up() {
    let backend = Backend::Local;
    let repo = Repo::new();
    repo.write("x.json", "{}");
    repo.write("y.json", "{}");
    let dir = repo.path();
    let go = dir.join(".go");
    // h holds y until told to go.
    let mut h = backend.tractatus(&dir);
    h.args(["lock", "run", "--file", "y.json", "--", "sh", "-c"])
        .arg(r#"i=0; while [ ! -e "$GO" ] && [ $i -lt 4000 ]; do sleep 0.005; i=$((i+1)); done"#)
        .env("GO", &go);
    let h = std::thread::spawn(move || run_timed(&mut h, LIMIT));
    let status = || -> serde_json::Value {
        let r = crate::support::run(backend.tractatus(&dir).args(["lock", "status", "--json"]));
        serde_json::from_str(&r.stdout).unwrap_or_default()
    };
    let token_of = |s: &serde_json::Value, name: &str| {
        s["locks"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["name"] == name))
            .map(|l| l["token"].as_u64().unwrap())
    };
    crate::support::wait_until(Duration::from_secs(10), "h holds y", || {
        token_of(&status(), "y.json").is_some()
    });
    let y_token = token_of(&status(), "y.json").unwrap();
    // This test process (outside h's tree) plants an edge: "holding y, waiting for x", with
    // the oldest place, and keeps it locked as a live waiter would.
    let locks = dir.join(".claude/.tractatus/locks");
    let planted = std::fs::File::create(locks.join("x.json.wait-evil")).unwrap();
    planted.lock().unwrap();
    let edge = serde_json::json!({
        "waiter": "evil", "place": 0, "session": "evil", "host": "evil", "pid": std::process::id(),
        "waits_for": "x.json", "holding": [{"name": "y.json", "token": y_token}],
    });
    std::io::Write::write_all(&mut &planted, edge.to_string().as_bytes()).unwrap();
    // v holds x and waits for y: with the planted edge believed, it would see a cycle and,
    // the youngest, give up.
    let mut v = backend.tractatus(&dir);
    v.args([
        "lock", "run", "--file", "x.json", "--", BIN, "state", "merge",
    ])
    .args(["y.json", r#"{"v": 1}"#]);
    let v = std::thread::spawn(move || run_timed(&mut v, LIMIT));
    crate::support::wait_until(Duration::from_secs(10), "v waits for y", || {
        std::fs::read_dir(&locks).unwrap().any(|e| {
            let name = e.unwrap().file_name();
            let name = name.to_string_lossy();
            name.starts_with("y.json.wait-") && !name.ends_with("evil")
        })
    });
    // Two walks and a confirmation's worth of time, well past when a victim would have gone.
    let gave_up = (0..40).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        v.is_finished()
    });
    assert!(
        !gave_up,
        "v gave up on a planted edge: {}",
        v.join().unwrap().describe()
    );
    std::fs::write(&go, "").unwrap();
    assert_eq!(h.join().unwrap().code, 0);
    let v = v.join().unwrap();
    assert_eq!(v.code, 0, "{}", v.describe());
    assert_eq!(doc(&repo, "y.json")["v"], serde_json::json!(1));
    drop(planted);
}

#[test]
fn a_cycle_over_locks_on_two_cluster_masters_is_found_reading_each_where_it_lives() {
    let cluster = tractatus_testkit::RedisCluster::start(3, 0);
    assert_eq!(crate::support::mark_initialized(&cluster.url()), 3);
    let master = |name: &str| {
        let slot = tractatus_lock::keys::slot_of_tag(format!("{CLUSTER_NS}:{name}").as_bytes());
        cluster.master_of_slot(slot)
    };
    // Two files whose locks live on different masters.
    let files: Vec<String> = (0..64).map(|i| format!("f{i}.json")).collect();
    let first = &files[0];
    let second = files
        .iter()
        .find(|f| master(f) != master(first))
        .expect("64 names all on one master")
        .clone();
    let backend = Backend::Cluster(cluster);
    let repo = Repo::new();
    repo.write(first, "{}");
    repo.write(&second, "{}");
    let steps = [step("a", first, &second), step("b", &second, first)];
    let out = run_steps(&backend, &repo, &steps);
    assert_one_victim(&backend, &repo, &steps, &out);
}

#[test]
fn an_edge_file_left_by_a_killed_local_waiter_is_removed_once_old_and_a_fresh_one_kept() {
    let backend = Backend::Local;
    let repo = Repo::new();
    repo.write("x.json", "{}");
    let dir = repo.path();
    let go = dir.join(".go");
    let mut h = backend.tractatus(&dir);
    h.args(["lock", "run", "--file", "x.json", "--", "sh", "-c"])
        .arg(r#"i=0; while [ ! -e "$GO" ] && [ $i -lt 4000 ]; do sleep 0.005; i=$((i+1)); done"#)
        .env("GO", &go);
    let h = std::thread::spawn(move || run_timed(&mut h, LIMIT));
    let locks = dir.join(".claude/.tractatus/locks");
    crate::support::wait_until(Duration::from_secs(10), "h holds x", || {
        locks.join("x.json.lock").exists()
            && crate::support::run(backend.tractatus(&dir).args(["lock", "status"]))
                .stdout
                .contains("x.json")
    });
    let (old, fresh) = (
        locks.join("x.json.wait-old"),
        locks.join("x.json.wait-fresh"),
    );
    std::fs::write(&old, "{}").unwrap();
    std::fs::write(&fresh, "{}").unwrap();
    let touched = Command::new("touch")
        .args(["-d", "2 minutes ago"])
        .arg(&old)
        .status()
        .unwrap();
    assert!(touched.success());
    // `lock status` reads x's edges as a walk does.
    let r = crate::support::run(backend.tractatus(&dir).args(["lock", "status"]));
    assert_eq!(r.code, 0, "{}", r.describe());
    assert!(!old.exists(), "the old unlocked edge file was kept");
    assert!(
        fresh.exists(),
        "a fresh edge file (its waiter may be locking it) was removed"
    );
    std::fs::write(&go, "").unwrap();
    assert_eq!(h.join().unwrap().code, 0);
}
