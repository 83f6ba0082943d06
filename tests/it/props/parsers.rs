//! Property tests of the layout writer (against Node and itself), pointer edits, the duration
//! parser and `set`/`append` on the bytes read.

use super::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn the_layout_parses_back_to_the_same_document_and_is_a_fixed_point(doc in document()) {
        let text = to_node_json(&doc);
        let back: Value = serde_json::from_str(&text).unwrap();
        prop_assert!(same(&doc, &back), "{text}");
        prop_assert_eq!(to_node_json(&back), text);
    }
}

/// Generate `n` documents (as JSON text) without shrinking: they go to one `node` process.
fn batch(n: usize) -> Vec<String> {
    let mut runner = TestRunner::new(RunnerConfig::default());
    let strategy = document();
    (0..n)
        .map(|_| {
            let doc = strategy.new_tree(&mut runner).unwrap().current();
            serde_json::to_string(&doc).unwrap()
        })
        .collect()
}

#[test]
fn the_layout_matches_node_json_stringify() {
    let mut texts = batch(300);
    // Spellings a generated document never has: duplicate keys (the last value wins, at the
    // first key's place), exponents and trailing zeros, whitespace.
    texts.extend(
        [
            r#"{"a":1,"b":2,"a":3}"#,
            r#"{"b":{"2":1,"1":[],"x":{}},"1":1e21,"0":-0,"z":1.000}"#,
            " [ 1E2 , 1e-7 , 0.1e1 , \"\\u2028\\ud83d\\ude00\" ] ",
        ]
        .map(str::to_owned),
    );
    let script = r#"
        let s = "";
        process.stdin.setEncoding("utf8");
        process.stdin.on("data", d => s += d).on("end", () => {
            const out = JSON.parse(s).map(t => JSON.stringify(JSON.parse(t), null, 2));
            process.stdout.write(JSON.stringify(out));
        });
    "#;
    let child = Command::new("node")
        .args(["-e", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var_os("CI").is_none(),
                "node is not on PATH and CI is set: the layout must be compared with Node's"
            );
            eprintln!(
                "NOTE: node is not on PATH: the comparison with Node's JSON.stringify DID NOT RUN"
            );
            return;
        }
        Err(e) => panic!("cannot run node: {e}"),
    };
    let input = serde_json::to_vec(&texts).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(out.status.success(), "node failed");
    let node: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(node.len(), texts.len());
    for (text, want) in texts.iter().zip(&node) {
        let ours = to_node_json(&serde_json::from_str(text).unwrap());
        assert_eq!(&ours, want, "input: {text}");
    }
}

/// Every array and object in `doc`, as the list of tokens that reaches it.
fn containers(doc: &Value) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut stack = vec![(doc, Vec::new())];
    while let Some((v, path)) = stack.pop() {
        match v {
            Value::Array(a) => {
                for (i, item) in a.iter().enumerate() {
                    let mut p = path.clone();
                    p.push(i.to_string());
                    stack.push((item, p));
                }
            }
            Value::Object(m) => {
                for (k, item) in m {
                    let mut p = path.clone();
                    p.push(k.clone());
                    stack.push((item, p));
                }
            }
            _ => continue,
        }
        found.push(path);
    }
    found
}

fn object_document() -> impl Strategy<Value = Value> {
    document().prop_map(|d| match d {
        Value::Object(_) => d,
        other => Value::Object(Map::from_iter([("root".to_owned(), other)])),
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn a_set_value_reads_back_and_nothing_else_changes(
        mut doc in object_document(),
        at in any::<prop::sample::Index>(),
        new_key in key(),
        slot in any::<prop::sample::Index>(),
        value in document(),
    ) {
        let places = containers(&doc);
        let parent = at.get(&places).clone();
        let mut target = parent.clone();
        match doc.pointer(&pointer(&parent)) {
            Some(Value::Array(a)) => target.push(if a.is_empty() { "0".into() } else { slot.index(a.len()).to_string() }),
            _ => target.push(new_key),
        }
        let path = pointer(&target);
        let before = doc.clone();
        Edit::set(&path, &serde_json::to_string(&value).unwrap())
            .unwrap()
            .apply(&mut doc, "f")
            .unwrap();
        prop_assert_eq!(doc.pointer(&path), Some(&value), "{}", path);
        // Setting the old value back gives the old document.
        if let Some(old) = before.pointer(&path) {
            let mut undo = doc.clone();
            Edit::set(&path, &serde_json::to_string(old).unwrap()).unwrap().apply(&mut undo, "f").unwrap();
            prop_assert_eq!(undo, before);
        }
    }

    #[test]
    fn an_append_grows_the_array_by_one_at_its_end(
        mut doc in object_document(),
        list in prop::collection::vec(document(), 0..4),
        value in document(),
    ) {
        doc.as_object_mut().unwrap().insert("list~/".into(), Value::Array(list.clone()));
        Edit::append("/list~0~1", &serde_json::to_string(&value).unwrap())
            .unwrap()
            .apply(&mut doc, "f")
            .unwrap();
        let after = doc["list~/"].as_array().unwrap();
        prop_assert_eq!(after.len(), list.len() + 1);
        prop_assert_eq!(&after[..list.len()], &list[..]);
        prop_assert_eq!(after.last(), Some(&value));
    }
}

/// Whether the CLI's duration syntax accepts `text`: `0`, or ASCII digits then `ms`, `s`, `m`
/// or `h`, with surrounding whitespace ignored.
fn well_formed(text: &str) -> bool {
    let t = text.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    t == "0" || (digits > 0 && matches!(&t[digits..], "ms" | "s" | "m" | "h"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn durations_round_trip(n in 0u64..=u64::from(u32::MAX)) {
        prop_assert_eq!(parse_duration(&format!("{n}ms")).unwrap(), Duration::from_millis(n));
        prop_assert_eq!(parse_duration(&format!("{n}s")).unwrap(), Duration::from_secs(n));
        prop_assert_eq!(parse_duration(&format!("{n}m")).unwrap(), Duration::from_secs(n * 60));
    }

    #[test]
    fn malformed_durations_are_usage_errors(
        text in prop_oneof![
            any::<String>(),
            "[ 0-9]{0,4}[a-zA-Z.+-]{0,3}[0-9]{0,2}",
            "[0-9]{1,3}(ms|s|m|h|us|d|sec|MS| s)",
        ]
    ) {
        // Well-formed but too large to count in milliseconds is refused too: only short digit
        // runs must be accepted.
        let short = text.trim().bytes().take_while(u8::is_ascii_digit).count() <= 9;
        match parse_duration(&text) {
            Ok(_) => prop_assert!(well_formed(&text), "accepted {text:?}"),
            Err(e) => {
                prop_assert!(!(well_formed(&text) && short), "refused {text:?}: {e}");
                prop_assert_eq!(e.exit_code(), 64);
            }
        }
    }
}

#[test]
fn writes_edit_the_bytes_read_exactly_as_the_in_memory_edit_would() {
    let case = WriteCase::new();
    // Spellings a generated document never has: repeated keys (the last value at the first
    // key's place), index-like keys out of order, odd whitespace and number forms.
    let odd = r#" {"b":1,"2":{"x":1,"x":2},"1":[],"a":{"k":[1,2]},"a":{"k":[3]} , "n": 1.50e1 } "#;
    for (pointer, json) in [
        ("/a/k", "4"),
        ("/1", "{\"a\":[]}"),
        ("/2", "1"),
        ("/b", "[]"),
    ] {
        case.check(odd, Edit::append(pointer, json).unwrap())
            .unwrap();
    }
    for (pointer, json) in [
        ("/a/k/0", "9"),
        ("/a/k/-", "9"),
        ("/2/x", "null"),
        ("/1/0", "1"),
        ("/1/1", "1"),
        ("/a/k/5", "1"),
        ("/z/y", "1"),
        ("", "[1]"),
    ] {
        case.check(odd, Edit::set(pointer, json).unwrap()).unwrap();
    }
    let mut runner = TestRunner::new(RunnerConfig {
        cases: 48,
        ..RunnerConfig::default()
    });
    runner
        .run(
            &(
                object_document(),
                any::<prop::sample::Index>(),
                key(),
                any::<bool>(),
                document(),
            ),
            |(doc, at, new_key, append, value)| {
                let places = containers(&doc);
                let mut target = at.get(&places).clone();
                if !append {
                    target.push(new_key);
                }
                let value = serde_json::to_string(&value).unwrap();
                let edit = if append {
                    Edit::append(&pointer(&target), &value)
                } else {
                    Edit::set(&pointer(&target), &value)
                };
                case.check(&serde_json::to_string(&doc).unwrap(), edit.unwrap())
            },
        )
        .unwrap();
}
