//! Tests of the two-phase write: an equal token commits again only for its own lease, a collected
//! directory is said so, text commits as given, and the depth limit.

use super::*;

fn nested(levels: usize) -> String {
    format!("{}{}", "[".repeat(levels), "]".repeat(levels))
}

/// A Node addon holds a `PendingWrite` across threads and awaits its futures on a
/// multi-threaded runtime: all of them must be `Send`. Compiling is the test.
#[allow(dead_code)]
fn the_two_phases_are_send(
    file: StateFile,
    c: Coordinator,
    o: AcquireOptions,
    mut p: PendingWrite,
    v: Value,
) {
    fn send<T: Send + 'static>(_: &T) {}
    fn send_now<T: Send>(_: T) {}
    send_now(file.begin(&c, &o));
    send_now(file.write(
        &c,
        &o,
        Edit::Append(crate::state::parse_pointer("").unwrap(), v.clone()),
    ));
    send_now(p.commit(&v));
    send(&p);
    send_now(p.release());
}

/// A lease commits as often as its holder and those who joined it like; an equal token on
/// record from another lease is refused, and a lower one always.
#[tokio::test]
async fn an_equal_token_commits_again_only_for_the_same_lease() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    std::fs::create_dir(root.join(".git")).unwrap();
    std::fs::write(root.join("s.json"), "{}\n").unwrap();
    let file = StateFile::open(&root, &root, std::path::Path::new("s.json")).unwrap();
    let locks = crate::repo::work_dir(&root).unwrap().join("locks");
    let c = Coordinator::local(
        crate::Config::new(vec![]),
        crate::Identity::current("t"),
        locks,
    )
    .unwrap();
    let held = c.try_acquire(file.name()).await.unwrap();
    for patch in [r#"{"a":1}"#, r#"{"b":2}"#] {
        let out = file
            .write_under(&held, Edit::merge(patch).unwrap())
            .await
            .unwrap();
        assert!(
            matches!(out, WriteOutcome::Committed { token, .. } if token == held.token()),
            "{out:?}"
        );
    }
    let record = root.join(".claude/.tractatus/fence/s.json");
    let before = std::fs::read(file.path()).unwrap();
    for (token, tag) in [
        (held.token(), held.owner_tag() ^ 1),
        (held.token() + 1, held.owner_tag()),
    ] {
        let ours = format!("{:020} {:016x}", held.token(), held.owner_tag());
        std::fs::write(&record, ours).unwrap();
        let mut p = file.begin_under(&held).await.unwrap();
        std::fs::write(&record, format!("{token:020} {tag:016x}")).unwrap();
        let e = p.commit(&serde_json::json!({"c": 3})).await.unwrap_err();
        assert!(matches!(e, Error::Fenced { .. }), "{e}");
        p.release().await.unwrap();
        // Refused at the start as well.
        let e = file.begin_under(&held).await.err().unwrap();
        assert!(matches!(e, Error::Fenced { .. }), "{e}");
    }
    assert_eq!(std::fs::read(file.path()).unwrap(), before);
    held.release().await.unwrap();
}

/// Issue 19 item 5: `session gc` moves a silent session's directory aside (a tombstone)
/// and then removes it. A write that opened the session's copy before that read it through
/// its handle on the collected directory: the file read as missing, and an append said
/// "no array at /log" (65), or the write landed in the tombstone. Now it names what
/// happened (73, run it again) and writes nothing.
#[tokio::test]
async fn a_write_whose_directory_was_collected_after_it_was_opened_says_so() {
    for removed in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        std::fs::create_dir(root.join(".git")).unwrap();
        let dir = root.join(".claude/sessions/s1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("state.json"), "{\"log\": []}\n").unwrap();
        let rel = std::path::Path::new(".claude/sessions/s1/state.json");
        let file = StateFile::open(&root, &root, rel).unwrap();
        let locks = crate::repo::work_dir(&root).unwrap().join("locks");
        let c = Coordinator::local(
            crate::Config::new(vec![]),
            crate::Identity::current("t"),
            locks,
        )
        .unwrap();
        let tomb = root.join(".claude/sessions/.gc-s1-1");
        std::fs::rename(&dir, &tomb).unwrap();
        if removed {
            std::fs::remove_dir_all(&tomb).unwrap();
        }
        let append = Edit::Append(
            crate::state::parse_pointer("/log").unwrap(),
            serde_json::json!(1),
        );
        let opts = AcquireOptions::wait(std::time::Duration::ZERO);
        let e = file.write(&c, &opts, append).await.unwrap_err();
        let text = e.to_string();
        assert_eq!(e.exit_code(), 73, "removed {removed}: {text}");
        assert!(e.is_directory_gone(), "{text}");
        assert!(
            text.contains("was moved or removed after this write opened it")
                && text.contains("session gc")
                && text.contains("run the write again"),
            "{text}"
        );
        if !removed {
            assert_eq!(
                std::fs::read_to_string(tomb.join("state.json")).unwrap(),
                "{\"log\": []}\n"
            );
        }
    }
}

/// The text path: the bytes read cross as they are, and text comes back committed as
/// given after a check that it reads back; bad text leaves the file untouched.
#[tokio::test]
async fn text_crosses_as_read_and_commits_as_given_when_it_reads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    std::fs::create_dir(root.join(".git")).unwrap();
    let original = "{\"b\":1, \"a\": [1.50, 12345678901234567890]}\n";
    std::fs::write(root.join("s.json"), original).unwrap();
    let file = StateFile::open(&root, &root, std::path::Path::new("s.json")).unwrap();
    let locks = crate::repo::work_dir(&root).unwrap().join("locks");
    let c = Coordinator::local(
        crate::Config::new(vec![]),
        crate::Identity::current("t"),
        locks,
    )
    .unwrap();
    let o = AcquireOptions::wait(std::time::Duration::from_secs(5));
    let mut p = file.begin_text(&c, &o).await.unwrap();
    assert!(p.document().is_none());
    assert_eq!(p.document_text(), Some(original));
    let refused = [
        ("{\"a\": 1,", "not valid JSON"),
        ("{} {}", "not valid JSON"),
        ("[\"\\ud800\"]", "not valid JSON"),
        (&nested(MAX_DEPTH + 1), "deeper than"),
    ];
    for (bad, why) in refused {
        let e = p.commit_text(bad).await.unwrap_err();
        assert_eq!(e.exit_code(), 65, "{e}");
        assert!(e.to_string().contains(why), "{e}");
    }
    assert_eq!(std::fs::read_to_string(file.path()).unwrap(), original);
    let same = p.commit_text(original).await.unwrap();
    assert!(matches!(same, WriteOutcome::Unchanged { .. }), "{same:?}");
    let new = format!(
        "{{\"s\": \"\\ud83d\\ude00\", \"d\": {}}}",
        nested(MAX_DEPTH - 1)
    );
    let done = p.commit_text(&new).await.unwrap();
    assert!(matches!(done, WriteOutcome::Committed { .. }), "{done:?}");
    assert_eq!(std::fs::read_to_string(file.path()).unwrap(), new);
    assert_eq!(p.commit_text("{}").await.unwrap_err().exit_code(), 64);
    p.release().await.unwrap();

    // Text that is not UTF-8 is refused when read, before anyone sees it.
    std::fs::write(file.path(), b"{\"s\": \"\xff\"}").unwrap();
    let e = file.begin_text(&c, &o).await.err().unwrap();
    assert!(e.to_string().contains("UTF-8"), "{e}");
    // Joined, the text path works the same.
    std::fs::write(file.path(), "[]").unwrap();
    let held = c.try_acquire(file.name()).await.unwrap();
    let mut p = file.begin_text_under(&held).await.unwrap();
    assert_eq!(p.document_text(), Some("[]"));
    let out = p.commit_text("[1]").await.unwrap();
    assert!(matches!(out, WriteOutcome::Committed { token, .. } if token == held.token()));
    p.release().await.unwrap();
    held.release().await.unwrap();
}

#[test]
fn the_depth_limit_is_what_serde_json_reads_back() {
    let deepest: Value = serde_json::from_str(&nested(MAX_DEPTH)).unwrap();
    assert_eq!(deeper_than(&deepest, MAX_DEPTH), None);
    assert!(serde_json::from_str::<Value>(&nested(MAX_DEPTH + 1)).is_err());
    let mut deeper = Value::Array(vec![deepest]);
    assert_eq!(deeper_than(&deeper, MAX_DEPTH), Some(MAX_DEPTH + 1));
    // Wider documents are judged by their deepest branch.
    deeper = serde_json::json!({"a": 1, "b": [[1]], "c": {"d": deeper}});
    assert_eq!(deeper_than(&deeper, MAX_DEPTH), Some(MAX_DEPTH + 1));
    assert_eq!(deeper_than(&serde_json::json!(3), 0), None);
    assert_eq!(deeper_than(&serde_json::json!({"a": [1]}), 2), None);
    assert_eq!(deeper_than(&serde_json::json!({"a": [1]}), 1), Some(2));
    // The text scan agrees, and brackets inside strings do not count.
    assert!(!text_deeper_than(nested(MAX_DEPTH).as_bytes(), MAX_DEPTH));
    assert!(text_deeper_than(
        nested(MAX_DEPTH + 1).as_bytes(),
        MAX_DEPTH
    ));
    assert!(!text_deeper_than(br#"[{"a": "[[[\"[[", "b": [1]}]"#, 3));
    assert!(text_deeper_than(br#"[{"a": "]]]\"]]", "b": [[1]]}]"#, 3));
}
