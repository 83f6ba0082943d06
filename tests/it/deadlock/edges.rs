//! The wait-for edges: never run when uncontended, shown by `lock status`, a planted one
//! ignored, a stale one removed once old.

use super::*;

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
