//! Sessions on a cluster: the registry in its own slot, per-session files, stats, end and gc.

use super::*;
use crate::support::session_states;

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
