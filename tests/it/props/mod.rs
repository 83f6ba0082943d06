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
//! Split by sub-feature (issue 22): the document strategies, the write case and the fuzz test
//! the docs name stay here; `parsers` (layout, pointer edits, durations, writes on the bytes
//! read), `fuzz` (the fuzz loop's generators and judge).

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

mod fuzz;
mod parsers;

use fuzz::{fuzz_case, fuzz_cases};

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

fn pointer(tokens: &[String]) -> String {
    tokens
        .iter()
        .map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1")))
        .collect()
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
