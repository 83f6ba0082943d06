//! Per-session counts kept apart and added up by stats; the id taken from a Claude Code hook
//! payload passed through byte for byte.

use super::*;

/// A Python one-liner for `state update`: `message_count + 1`, the rest kept.
const INCREMENT: &str = "import json,sys; d=json.load(sys.stdin); d['message_count'] += 1; \
                         sys.stdout.write(json.dumps(d, indent=2))";

fn two_sessions_keep_their_own_counts_and_stats_add_them_up(on_redis: bool) {
    let s = Setup::new(on_redis);
    let mut shared: Value = serde_json::from_str(&crate::support::fixture("session-state.json"))
        .expect("fixture parses");
    shared["message_count"] = 0.into();
    let shared = serde_json::to_string_pretty(&shared).unwrap();
    s.repo.write(STATE, &shared);

    // Two sessions at once, each with two hooks of its own writing at once: 2 x 25 each.
    let sessions = [
        "019a0000-aaaa-7000-8000-000000000001",
        "019a0000-bbbb-7000-8000-000000000002",
    ];
    for id in sessions {
        s.start(id);
    }
    std::thread::scope(|scope| {
        for id in sessions {
            for _ in 0..2 {
                let s = &s;
                scope.spawn(move || {
                    for _ in 0..25 {
                        let r = run(s.cli(Some(id)).args([
                            "--wait", "60s", "state", "update", STATE, "--", "python3", "-c",
                            INCREMENT,
                        ]));
                        assert_eq!(r.code, 0, "{id}: {}", r.stderr);
                    }
                });
            }
        }
    });

    for id in sessions {
        let own = s.json(Some(id), &["state", "path", STATE]);
        let path = own["path"].as_str().unwrap();
        assert_eq!(
            Path::new(path),
            s.repo
                .file(&format!(".claude/sessions/{id}/session-state.json"))
        );
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(doc["message_count"], 50, "session {id}");
        // Started from the shared file: its other fields came along.
        assert_eq!(doc["token_estimate"], 61234);
        let got = run(s
            .cli(Some(id))
            .args(["state", "get", STATE, "/message_count"]));
        assert_eq!(got.stdout.trim(), "50");
    }
    assert_eq!(s.repo.read(STATE), shared, "the shared file was touched");
    let no_session = run(s.cli(None).args(["state", "get", STATE, "/message_count"]));
    assert_eq!(no_session.stdout.trim(), "0");

    let stats = s.json(
        None,
        &["session", "stats", "/message_count", "/token_estimate"],
    );
    println!("session stats: {stats}");
    assert_eq!(stats["live"], 2);
    assert_eq!(stats["fields"]["/message_count"]["sum"], 100);
    assert_eq!(stats["fields"]["/message_count"]["max"], 50);
    assert_eq!(stats["fields"]["/message_count"]["sessions"], 2);
    assert_eq!(stats["fields"]["/token_estimate"]["sum"], 2 * 61234);
    let table = run(s.cli(None).args(["session", "stats", "/message_count"]));
    assert!(
        table
            .stdout
            .contains("2 live sessions, 2 with .claude/session-state.json"),
        "{}",
        table.stdout
    );
}

#[test]
fn two_sessions_keep_their_own_counts_and_stats_add_them_up_on_redis() {
    two_sessions_keep_their_own_counts_and_stats_add_them_up(true);
}

#[test]
fn two_sessions_keep_their_own_counts_and_stats_add_them_up_on_local_locks() {
    two_sessions_keep_their_own_counts_and_stats_add_them_up(false);
}

/// `cmd` with `input` on its stdin: exit code, stdout bytes, stderr.
fn feed(cmd: &mut Command, input: &[u8]) -> (i32, Vec<u8>, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let mut guard = Guard(child);
    let code = guard.wait_code(Duration::from_secs(60)).unwrap_or(-1);
    let mut out = Vec::new();
    let mut err = String::new();
    use std::io::Read;
    guard
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    guard
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (code, out, err)
}

fn session_start_from_hook_takes_the_id_and_passes_the_payload_through(on_redis: bool) {
    let s = Setup::new(on_redis);
    let id = "3f1c9e2a-5b7d-4c8e-9f10-a1b2c3d4e5f6";
    // What Claude Code sends a SessionStart hook, with odd whitespace, raw and escaped
    // unicode, CRLF, a tab and no final newline.
    let payload = format!(
        "{{\r\n  \"session_id\" :\t\"{id}\",\n\"transcript_path\":\"/home/dév/.claude/projects/x/{id}.jsonl\",  \
         \"cwd\": \"/work/ünïcödé ✓\", \"hook_event_name\":\"SessionStart\",\"source\":\"startup\", \
         \"note\": \"\\u00e9\\ud83d\\ude00 😀\"   }}\t "
    );
    let env_file = s.repo.file("claude-env");
    let (code, out, err) = feed(
        s.cli(None)
            .env("CLAUDE_ENV_FILE", &env_file)
            .args(["session", "start", "--from-hook"]),
        payload.as_bytes(),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        payload.as_bytes(),
        "stdout is not the payload, byte for byte"
    );
    assert_eq!(
        std::fs::read_to_string(&env_file).unwrap(),
        format!("export TRACTATUS_SESSION_ID={id}\n")
    );
    assert_eq!(s.states("30m"), [(id.to_owned(), "live".to_owned())]);
    let listed = s.json(None, &["session", "list"]);
    let entry = &listed["sessions"][0];
    assert_eq!(entry["repository"], s.repo.path().display().to_string());
    assert!(entry["pid"].as_u64().unwrap() > 0 && !entry["host"].as_str().unwrap().is_empty());

    // Not JSON, or no session id: 65, and the payload still goes on.
    for bad in [
        &b"not json \xff"[..],
        br#"{"hook_event_name": "SessionStart"}"#,
    ] {
        let (code, out, _) = feed(s.cli(None).args(["session", "start", "--from-hook"]), bad);
        assert_eq!((code, out.as_slice()), (65, bad));
    }
    // Without --from-hook: a fresh id, printed.
    let r = run(s.cli(None).args(["session", "start"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let fresh = r.stdout.trim();
    assert_eq!(fresh.len(), 36, "{fresh}");
    assert_eq!(s.states("30m").len(), 2);
}

#[test]
fn session_start_from_hook_takes_the_id_and_passes_the_payload_through_on_redis() {
    session_start_from_hook_takes_the_id_and_passes_the_payload_through(true);
}

#[test]
fn session_start_from_hook_takes_the_id_and_passes_the_payload_through_on_local_locks() {
    session_start_from_hook_takes_the_id_and_passes_the_payload_through(false);
}
