//! A capability rebuilt, rewritten or edited gives no power over the holder's lease; the secret
//! is written nowhere else; a join is logged; a forged one is refused with a master down.

use super::*;

#[test]
fn a_capability_rebuilt_from_what_redis_shows_is_refused_and_writes_nothing() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    repo.write(FILE, "{\"x\": 0}\n");
    let work = tempfile::tempdir().unwrap();
    let cap = work.path().join("cap");
    let _holder = holder(&repo, Some(&redis), &cap, "exec sleep 60");
    let real = capability(&cap);
    let keys = repo.keys(FILE);
    let owner = redis.cmd(&["GET", &keys.lease]);
    let token: u64 = redis.cmd(&["HGET", &keys.holder, "token"]).parse().unwrap();
    let stored_hash = redis.cmd(&["HGET", &keys.holder, "join"]);
    let status = run(tractatus(&repo.path())
        .env("TRACTATUS_REDIS", redis.url())
        .args(["lock", "status", "--json"]));
    assert_eq!(status.code, 0, "{}", status.describe());
    // The forger binds the capability to itself (the test process is the joiner's parent):
    // what Redis, `lock status` and its own /proc say, and every guess at the secret.
    let me = std::process::id();
    let (start, ns) = own_origin(me);
    for guess in [owner.as_str(), stored_hash.as_str(), "00", ""] {
        let forged = serde_json::json!([{
            "scope": format!("redis:{}", repo.namespace()),
            "name": real[0]["name"], "token": token, "owner": owner, "secret": guess,
            "pid": me, "start": start, "ns": ns, "ttl_ms": 60_000,
        }]);
        let r = run(tractatus(&repo.path())
            .env("TRACTATUS_REDIS", redis.url())
            .env("TRACTATUS_WAIT", "1s")
            .env("TRACTATUS_LEASE", forged.to_string())
            .args(["state", "merge", FILE, r#"{"x":1}"#]));
        assert_eq!(r.code, 76, "guess {guess:?}: {}", r.describe());
        assert!(r.stderr.contains("TRACTATUS_LEASE"), "{}", r.stderr);
        assert_eq!(repo.read(FILE), "{\"x\": 0}\n", "the forged join wrote");
    }
    // The holder still holds: nothing above touched its lease.
    assert_eq!(redis.cmd(&["GET", &keys.lease]), owner);
}

#[test]
fn a_co_user_who_rewrites_the_local_lock_file_cannot_join_the_victims_lease() {
    let shared = SharedCheckout::new();
    shared.write_as(Who::Victim, FILE, "{\"x\": 0}\n");
    let before = std::fs::read(shared.file(FILE)).unwrap();
    let mut victim = shared.command(Who::Victim, Path::new(BIN));
    victim
        .env("TRACTATUS_QUIET", "1")
        .args(["lock", "run", "--file", FILE, "--", "sleep", "60"])
        .stdout(Stdio::null());
    let _victim = Guard(victim.spawn().unwrap());
    let locks = shared.file(".claude/.tractatus/locks");
    let lock_file = || {
        std::fs::read_dir(&locks).ok().and_then(|d| {
            d.flatten()
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "lock"))
        })
    };
    wait_until(Duration::from_secs(10), "the victim holds the lock", || {
        lock_file().is_some_and(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("token")))
    });
    let lock = lock_file().unwrap();
    let name = lock
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .replace("%2F", "/");
    // The attacker rewrites the record in place (the victim's flock stays on that inode) to
    // name its own shell and a secret of its own, then joins with a capability naming both.
    let script = r#"
        start=$(cut -d' ' -f22 /proc/$$/stat)
        ns=$(readlink /proc/$$/ns/pid | tr -dc 0-9).$(cat /proc/sys/kernel/random/boot_id)
        secret=0123456789abcdef0123456789abcdef
        hash=$(printf %s "$secret" | sha256sum | cut -c1-64)
        token=$(sed 's/.*"token":\([0-9]*\).*/\1/' "$LOCK")
        rec=$(sed "s/\"pid\":[0-9]*/\"pid\":$$/; s/\"join\":\"[0-9a-f]*\"//; s/}\$/,\"join\":\"$hash\"}/; s/,,/,/" "$LOCK")
        printf %s "$rec" > "$LOCK" || exit 90
        TRACTATUS_LEASE=$(printf '[{"scope":"local:%s","name":"%s","token":%s,"owner":"x","secret":"%s","pid":%s,"start":%s,"ns":"%s","ttl_ms":60000}]' \
            "$LOCKS" "$NAME" "$token" "$secret" $$ "$start" "$ns")
        export TRACTATUS_LEASE
        exec "$BIN" state merge state.json '{"x":1}'
    "#;
    let mut attacker = shared.command(Who::Attacker, Path::new("/bin/sh"));
    attacker
        .args(["-c", script])
        .env("LOCK", &lock)
        .env("LOCKS", &locks)
        .env("NAME", &name)
        .env("BIN", tractatus_testkit::couser::runnable(Path::new(BIN)))
        .env("TRACTATUS_WAIT", "1s")
        .env("TRACTATUS_QUIET", "1");
    let r = run(&mut attacker);
    assert_eq!(r.code, 76, "{}", r.describe());
    assert_eq!(
        std::fs::read(shared.file(FILE)).unwrap(),
        before,
        "it wrote"
    );
    shared.assert_private_files_untouched();
}

#[test]
fn a_joiner_with_edited_fields_cannot_cut_or_fence_out_the_holders_lease() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    repo.write(FILE, "{\"x\": 0}\n");
    // The command edits its capability: TTL 1 ms (a renewal with it would end the lease), then
    // a token far above the real one (a commit with it would fence the holder out). It then
    // outlives two renewals of the holder and writes under the real capability.
    let script = r#"
        cut=$(printf %s "$TRACTATUS_LEASE" | sed 's/"ttl_ms":[0-9]*/"ttl_ms":1/')
        TRACTATUS_LEASE="$cut" "$1" state merge "$2" '{"cut":1}'; echo $? > "$3/cut"
        up=$(printf %s "$TRACTATUS_LEASE" | sed 's/"token":\([0-9]*\)/"token":9\1/')
        TRACTATUS_LEASE="$up" "$1" state merge "$2" '{"up":1}'; echo $? > "$3/up"
        sleep 2.5
        "$1" state merge "$2" '{"last":1}'
    "#;
    let work = tempfile::tempdir().unwrap();
    let r = run(tractatus(&repo.path())
        .env("TRACTATUS_REDIS", redis.url())
        .env("TRACTATUS_TTL", "3s")
        .env("TRACTATUS_WAIT", "2s")
        .env("TRACTATUS_QUIET", "1")
        .args([
            "lock", "run", "--file", FILE, "--", "sh", "-c", script, "sh", BIN, FILE,
        ])
        .arg(work.path()));
    assert_eq!(r.code, 0, "the holder was cut: {}", r.describe());
    let code = |f: &str| std::fs::read_to_string(work.path().join(f)).unwrap();
    // Edited TTL: ignored (a joiner sends none); edited token: refused.
    assert_eq!(code("cut").trim(), "0");
    assert_eq!(code("up").trim(), "76");
    let doc: serde_json::Value = serde_json::from_str(&repo.read(FILE)).unwrap();
    assert_eq!(doc, serde_json::json!({"x": 0, "cut": 1, "last": 1}));
}

#[test]
fn a_join_is_in_the_audit_log_with_who_joined() {
    let redis = RedisServer::start();
    let repo = Repo::new();
    let r = run(tractatus(&repo.path())
        .env("TRACTATUS_REDIS", redis.url())
        .env("TRACTATUS_QUIET", "1")
        .env("TRACTATUS_SESSION_ID", "joiner-session")
        .args([
            "lock", "run", "--file", FILE, "--", BIN, "state", "merge", FILE,
        ])
        .arg(r#"{"a":1}"#));
    assert_eq!(r.code, 0, "{}", r.describe());
    let log = run(tractatus(&repo.path())
        .env("TRACTATUS_REDIS", redis.url())
        .args(["lock", "log", "--json"]));
    assert_eq!(log.code, 0, "{}", log.describe());
    let events: serde_json::Value = serde_json::from_str(&log.stdout).unwrap();
    let events = events.as_array().unwrap();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    let join = events
        .iter()
        .find(|e| e["event"] == "join")
        .unwrap_or_else(|| panic!("no join event in {kinds:?}"));
    let grant = events.iter().find(|e| e["event"] == "grant").unwrap();
    // The lease's holder, and who joined it (`by`): its session, host and own pid.
    assert_eq!(join["pid"], grant["pid"], "{join}");
    assert_eq!(join["token"], grant["token"], "{join}");
    let by = join["by"]
        .as_str()
        .unwrap_or_else(|| panic!("no joiner in {join}"));
    let (who, pid) = by.split_once(" pid ").unwrap();
    assert!(who.starts_with("joiner-session@") && who.len() > 15, "{by}");
    assert_ne!(pid, grant["pid"].to_string(), "the joiner's own pid: {by}");
}

#[test]
fn the_secret_is_written_nowhere_but_the_holders_environment() {
    for redis in [Some(RedisServer::start()), None] {
        let repo = Repo::new();
        let work = tempfile::tempdir().unwrap();
        let cap = work.path().join("cap");
        let _h = holder(
            &repo,
            redis.as_ref(),
            &cap,
            r#""$1" state merge "$2" '{"a":1}' && exec sleep 60"#,
        );
        let real = capability(&cap);
        // Whatever lets a process join: the secret (and, before it existed, the owner id).
        let secret = real[0]
            .get("secret")
            .or(real[0].get("owner"))
            .and_then(|s| s.as_str())
            .unwrap()
            .to_owned();
        assert!(secret.len() >= 32, "{secret}");
        wait_until(Duration::from_secs(10), "the nested write", || {
            std::fs::read_to_string(repo.file(FILE)).is_ok_and(|t| t.contains("\"a\""))
        });
        if let Some(r) = &redis {
            let mut seen = String::new();
            let keys = r.cmd(&["KEYS", "*"]);
            for key in keys.split('"').filter(|k| k.starts_with("tractatus:")) {
                let value = match r.cmd(&["TYPE", key]).as_str() {
                    "string" => r.cmd(&["GET", key]),
                    "hash" => r.cmd(&["HGETALL", key]),
                    "stream" => r.cmd(&["XRANGE", key, "-", "+"]),
                    "zset" => r.cmd(&["ZRANGE", key, "0", "-1", "WITHSCORES"]),
                    other => other.to_owned(),
                };
                seen.push_str(&value);
            }
            let log = run(tractatus(&repo.path())
                .env("TRACTATUS_REDIS", r.url())
                .args(["lock", "log", "--json"]));
            seen.push_str(&log.stdout);
            assert!(!seen.contains(&secret), "the secret is in Redis");
        }
        let mut stack = vec![repo.path().join(".claude")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned();
                    assert!(!text.contains(&secret), "the secret is in {}", p.display());
                }
            }
        }
    }
}

#[test]
fn with_one_of_three_masters_down_a_nested_call_still_joins_and_a_forged_one_is_refused() {
    let mut masters = crate::support::cluster(3);
    masters[2].kill();
    let urls: Vec<String> = masters.iter().map(|m| m.url()).collect();
    let repo = Repo::new();
    repo.write(FILE, "{\"x\": 0}\n");
    // The real capability joins on the two live masters; the same with the token edited does
    // not.
    let script = r#"
        "$1" state merge "$2" '{"a":1}' || exit 9
        up=$(printf %s "$TRACTATUS_LEASE" | sed 's/"token":\([0-9]*\)/"token":9\1/')
        TRACTATUS_LEASE="$up" "$1" state merge "$2" '{"b":1}'; echo $? > "$3/up"
    "#;
    let work = tempfile::tempdir().unwrap();
    let r = run(tractatus(&repo.path())
        .env("TRACTATUS_REDIS", urls.join(","))
        .env("TRACTATUS_WAIT", "5s")
        .env("TRACTATUS_QUIET", "1")
        .args([
            "lock", "run", "--file", FILE, "--", "sh", "-c", script, "sh", BIN, FILE,
        ])
        .arg(work.path()));
    assert_eq!(r.code, 0, "{}", r.describe());
    let up = std::fs::read_to_string(work.path().join("up")).unwrap();
    assert_eq!(up.trim(), "76");
    let doc: serde_json::Value = serde_json::from_str(&repo.read(FILE)).unwrap();
    assert_eq!(doc, serde_json::json!({"x": 0, "a": 1}));
}
