//! Property tests of the parsers and writers: the layout writer against Node's
//! `JSON.stringify(JSON.parse(x), null, 2)` (one `node` process per batch) and against parsing
//! its own output back, pointer edits read back through `serde_json`'s own RFC 6901 lookup, the
//! duration parser, and `set`/`append` on the bytes read against the same edit in memory. Case
//! counts are small: the whole file runs in a few seconds.
//!
//! Also the fuzz loop: generated and mutated documents, pointers and values through `state
//! set/append/merge/get` (the library, and one case in ten through the CLI): no crash (no 70,
//! no 101), valid JSON after every success, the same bytes after every failure. 300 cases by
//! default; a longer run: `TRACTATUS_FUZZ_CASES=20000 cargo test --release --test it props::fuzzed`.
//!
//! Over 500 lines: one module per feature, whose tests share the helpers at its top; issue 22
//! splits it by sub-feature.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use serde_json::{Map, Number, Value};
use tractatus_lock::config::parse_duration;
use tractatus_lock::state::{Edit, StateFile, to_node_json};
use tractatus_lock::{AcquireOptions, Config, Coordinator, Identity};

/// Strings, half of them built from the characters whose escapes differ between writers.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        prop::collection::vec(
            prop::sample::select(vec![
                '"', '\\', '/', '\u{8}', '\u{c}', '\n', '\r', '\t', '\u{0}', '\u{1f}', '\u{7f}',
                '\u{2028}', '\u{2029}', '\u{feff}', 'é', '😀', 'a',
            ]),
            0..8,
        )
        .prop_map(String::from_iter),
    ]
}

/// Object keys, weighted toward the ones JavaScript orders specially: array indices
/// (canonical, below 2^32 - 1) come first, ascending; everything else keeps insertion order.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "0",
            "1",
            "2",
            "10",
            "01",
            "-1",
            "1.5",
            "",
            "4294967294",
            "4294967295",
            "a/b",
            "~0",
            "x~y/z",
        ])
        .prop_map(str::to_owned),
        (0u32..50).prop_map(|n| n.to_string()),
        "[a-z]{1,6}",
        text(),
    ]
}

/// Numbers Node prints the way we do: integers up to 2^53 (beyond that Node rounds and we keep
/// the file's digits, on purpose), any finite double, and a few literal spellings.
fn number() -> impl Strategy<Value = Number> {
    prop_oneof![
        (-(1i64 << 53)..=(1i64 << 53)).prop_map(Number::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| Number::from_f64(f).unwrap_or_else(|| Number::from(0))),
        prop::sample::select(vec![
            "1.50",
            "1e21",
            "1E+2",
            "-0",
            "-0.0",
            "0.0000001",
            "1e-7",
            "5e-324",
            "100",
            "1e300",
            "123456789012345",
            "0.1",
            "-1.25e-10",
        ])
        .prop_map(|s| serde_json::from_str::<Number>(s).unwrap()),
    ]
}

fn document() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number().prop_map(Value::Number),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Equal as JSON values: numbers by their double, objects by their entries in any order.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

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

fn pointer(tokens: &[String]) -> String {
    tokens
        .iter()
        .map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1")))
        .collect()
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

/// One `set` or `append` through `StateFile::write` (which edits the bytes read without building
/// the document) against the same edit applied in memory and laid out by `to_node_json`: the
/// same file, or the same refusal with the file untouched.
struct WriteCase {
    dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
    coordinator: Coordinator,
}

impl WriteCase {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".git")).unwrap();
        std::fs::create_dir_all(dir.path().join(".claude")).unwrap();
        let coordinator = Coordinator::local(
            Config::new(Vec::new()),
            Identity::current("props"),
            dir.path().join(".claude/.tractatus/locks"),
        )
        .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        WriteCase {
            dir,
            runtime,
            coordinator,
        }
    }

    fn check(&self, text: &str, edit: Edit) -> Result<(), TestCaseError> {
        let rel = std::path::Path::new(".claude/doc.json");
        let path = self.dir.path().join(rel);
        std::fs::write(&path, text).unwrap();
        let mut expected: Value = serde_json::from_str(text).unwrap();
        let applied = edit.clone().apply(&mut expected, ".claude/doc.json");
        let file = StateFile::open(self.dir.path(), self.dir.path(), rel).unwrap();
        let written = self.runtime.block_on(file.write(
            &self.coordinator,
            &AcquireOptions::default(),
            edit.clone(),
        ));
        let after = std::fs::read_to_string(&path).unwrap();
        match (applied, written) {
            (Ok(()), Ok(_)) => prop_assert_eq!(after, to_node_json(&expected), "{:?}", edit),
            (Err(want), Err(got)) => {
                prop_assert_eq!(want.to_string(), got.to_string());
                prop_assert_eq!(after, text);
            }
            (want, got) => prop_assert!(false, "in memory {want:?}, written {got:?}"),
        }
        Ok(())
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

/// How many fuzzed state operations to run: a few seconds' worth in the normal test run, more
/// by `TRACTATUS_FUZZ_CASES` (the README gives the longer run's command).
fn fuzz_cases() -> u32 {
    std::env::var("TRACTATUS_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

/// Text that breaks JSON, or is valid JSON that edits find hard: inserted into documents,
/// values and pointers.
const NASTY: &[&str] = &[
    "\\ud800",
    "\\udc00\\ud800",
    "\\ud83d",
    "1e400",
    "-1E+400",
    "1e-400",
    "12345678901234567890123",
    "-0",
    "\"",
    "\\",
    "\\u0000",
    "\u{0}",
    "\u{feff}",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "null",
    "~",
    "/",
    "-",
    "\"a\":1,\"a\":",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    "]]]]]]]]",
];

/// One change to a text: the fuzz loop's mutations.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(prop::sample::Index, u8),
    Delete(prop::sample::Index, usize),
    Insert(prop::sample::Index, &'static str),
    Truncate(prop::sample::Index),
    Duplicate(prop::sample::Index, usize),
    /// A byte that is never UTF-8 (documents only: arguments are strings).
    NotUtf8(prop::sample::Index),
    /// Text right after a quote: inside a string or a key half the time.
    AfterQuote(prop::sample::Index, &'static str),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    use prop::sample::{Index, select};
    prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<Index>(), 1usize..8).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<Index>(), select(NASTY)).prop_map(|(i, s)| Mutation::Insert(i, s)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), 1usize..16).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        any::<Index>().prop_map(Mutation::NotUtf8),
        (any::<Index>(), select(NASTY)).prop_map(|(i, s)| Mutation::AfterQuote(i, s)),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation], utf8_only: bool) -> Vec<u8> {
    for m in mutations {
        let at = |i: &prop::sample::Index, len: usize| if len == 0 { 0 } else { i.index(len + 1) };
        match m {
            Mutation::Flip(i, b) if !bytes.is_empty() => {
                let i = i.index(bytes.len());
                bytes[i] = if utf8_only { b & 0x7f } else { *b };
            }
            Mutation::Delete(i, n) if !bytes.is_empty() => {
                let i = i.index(bytes.len());
                let end = (i + n).min(bytes.len());
                bytes.drain(i..end);
            }
            Mutation::Insert(i, s) => {
                let i = at(i, bytes.len());
                bytes.splice(i..i, s.bytes());
            }
            Mutation::Truncate(i) => bytes.truncate(at(i, bytes.len())),
            Mutation::Duplicate(i, n) if !bytes.is_empty() => {
                let i = i.index(bytes.len());
                let slice = bytes[i..(i + n).min(bytes.len())].to_vec();
                bytes.splice(i..i, slice);
            }
            Mutation::AfterQuote(i, s) => {
                let quotes: Vec<usize> = (0..bytes.len()).filter(|&j| bytes[j] == b'"').collect();
                if !quotes.is_empty() {
                    let j = quotes[i.index(quotes.len())] + 1;
                    bytes.splice(j..j, s.bytes());
                }
            }
            Mutation::NotUtf8(i) if !utf8_only => {
                let i = at(i, bytes.len());
                bytes.insert(i, 0xff);
            }
            _ => {}
        }
    }
    if utf8_only {
        // Arguments are strings: a flip may have split a character.
        String::from_utf8_lossy(&bytes).into_owned().into_bytes()
    } else {
        bytes
    }
}

/// A document as a file may spell it: our layout (with or without the final newline), compact,
/// pretty, or one of the spellings generated documents never have.
fn file_text() -> impl Strategy<Value = Vec<u8>> {
    let deep = |n: usize| format!("{{\"d\": {}{}}}", "[".repeat(n), "]".repeat(n));
    prop_oneof![
        4 => (document(), 0..4u8).prop_map(|(doc, form)| match form {
            0 => to_node_json(&doc),
            1 => to_node_json(&doc) + "\n",
            2 => serde_json::to_string(&doc).unwrap(),
            _ => serde_json::to_string_pretty(&doc).unwrap(),
        }.into_bytes()),
        1 => prop::sample::select(vec![
            String::new(),
            "   ".into(),
            "{}".into(),
            "[]\n".into(),
            "null".into(),
            "1e400".into(),
            r#"{"a":1,"a":{"b":[]},"2":0,"1":{}}"#.into(),
            r#"{"big": 1e400, "s": "\ud83d\ude00", "l": [1.50, -0]}"#.into(),
            r#"{"s": "\ud800", "l": [], "o": {}}"#.into(),
            r#"{"l": ["\udc00"], "o": {"\ud83d": 1}}"#.into(),
            r#"{"o": {"x": -1e400}, "l": [1e400, 2]}"#.into(),
            deep(125),
            deep(126),
        ]).prop_map(String::into_bytes),
    ]
}

fn pointer_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            "/",
            "-",
            "/-",
            "/~",
            "/~2",
            "/~01",
            "/01",
            "/0",
            "/1/-",
            "/a",
            "a",
            "/a/",
            "//",
            "/99999999999999999999",
            "/-1",
            "/ ",
            "/d/0/0/0",
        ])
        .prop_map(str::to_owned),
        prop::collection::vec(key(), 0..4).prop_map(|t| pointer(&t)),
    ]
}

/// One fuzzed operation: the file's bytes (or no file), the command, its pointer and value
/// (patch, for merge), and whether it also goes through the CLI.
#[derive(Clone)]
struct FuzzCase {
    file: Option<Vec<u8>>,
    op: &'static str,
    pointer: String,
    value: String,
    cli: bool,
}

impl std::fmt::Debug for FuzzCase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FuzzCase")
            .field("file", &self.file.as_deref().map(String::from_utf8_lossy))
            .field("op", &self.op)
            .field("pointer", &self.pointer)
            .field("value", &self.value)
            .field("cli", &self.cli)
            .finish()
    }
}

fn fuzz_case() -> impl Strategy<Value = FuzzCase> {
    let mutations = || prop::collection::vec(mutation(), 0..4);
    (
        prop::option::weighted(0.95, (file_text(), mutations(), any::<bool>())),
        prop::sample::select(vec!["set", "append", "merge", "get"]),
        (pointer_text(), mutations()),
        (document(), mutations()),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(file, op, (pointer, pm), (value, vm), cli)| FuzzCase {
            // Half the documents are used as generated, half mutated.
            file: file.map(|(text, m, keep)| if keep { text } else { mutate(text, &m, false) }),
            op,
            pointer: String::from_utf8(mutate(pointer.into_bytes(), &pm, true)).unwrap(),
            value: String::from_utf8(mutate(
                serde_json::to_string(&value).unwrap().into_bytes(),
                &vm,
                true,
            ))
            .unwrap(),
            cli,
        })
}

impl WriteCase {
    /// Run `case` through the library (and the CLI when it says so): no panic, no internal
    /// error (70), valid JSON after every success, the same bytes after every failure, and a
    /// `get` never changes the file.
    fn fuzz(&self, case: &FuzzCase) -> Result<(), TestCaseError> {
        let rel = std::path::Path::new(".claude/doc.json");
        let path = self.dir.path().join(rel);
        let reset = || match &case.file {
            Some(bytes) => std::fs::write(&path, bytes).unwrap(),
            None => {
                let _ = std::fs::remove_file(&path);
            }
        };
        reset();
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.runtime.block_on(self.fuzz_op(rel, case))
        }));
        let code = match run {
            Ok(Ok(())) => 0,
            Ok(Err(e)) => e.exit_code(),
            Err(_) => 101,
        };
        self.judge("library", case, code, "")?;
        if case.cli && !case.value.contains('\0') && !case.pointer.contains('\0') {
            reset();
            let mut cmd = crate::support::tractatus(self.dir.path());
            cmd.args(["--quiet", "state", case.op, ".claude/doc.json"]);
            match case.op {
                "get" => cmd.args(["--", &case.pointer]),
                "merge" => cmd.args(["--", &case.value]),
                _ => cmd.args(["--", &case.pointer, &case.value]),
            };
            let r = crate::support::run(&mut cmd);
            self.judge("cli", case, r.code, &r.stderr)?;
        }
        Ok(())
    }

    async fn fuzz_op(&self, rel: &std::path::Path, case: &FuzzCase) -> tractatus_lock::Result<()> {
        let file = StateFile::open(self.dir.path(), self.dir.path(), rel)?;
        let edit = match case.op {
            "get" => {
                let p = tractatus_lock::state::parse_pointer(&case.pointer)?;
                file.read(Some(&p))?;
                return Ok(());
            }
            "set" => Edit::set(&case.pointer, &case.value)?,
            "append" => Edit::append(&case.pointer, &case.value)?,
            _ => Edit::merge(&case.value)?,
        };
        file.write(&self.coordinator, &AcquireOptions::default(), edit)
            .await
            .map(drop)
    }

    fn judge(
        &self,
        via: &str,
        case: &FuzzCase,
        code: i32,
        stderr: &str,
    ) -> Result<(), TestCaseError> {
        let after = std::fs::read(self.dir.path().join(".claude/doc.json")).ok();
        prop_assert!(
            code != 70 && code != 101 && code >= 0,
            "{via}: exit {code} for {case:?}: {stderr}"
        );
        if code == 0 && case.op != "get" {
            let after = after.as_deref().unwrap_or_default();
            prop_assert!(
                serde_json::from_slice::<Value>(after).is_ok(),
                "{via}: {case:?} left invalid JSON: {}",
                String::from_utf8_lossy(after)
            );
        } else {
            prop_assert_eq!(
                &after,
                &case.file,
                "{}: {:?} failed ({}) and changed the file: {}",
                via,
                case,
                code,
                stderr
            );
        }
        Ok(())
    }
}

#[test]
fn fuzzed_state_operations_never_crash_and_never_change_a_file_they_refuse() {
    let case = WriteCase::new();
    let mut runner = TestRunner::new(RunnerConfig {
        cases: fuzz_cases(),
        // A failure is shrunk in a few hundred steps; each is a write to disk.
        max_shrink_iters: 512,
        ..RunnerConfig::default()
    });
    let started = std::time::Instant::now();
    runner.run(&fuzz_case(), |c| case.fuzz(&c)).unwrap();
    println!(
        "{} fuzzed state operations in {:?}",
        fuzz_cases(),
        started.elapsed()
    );
}
