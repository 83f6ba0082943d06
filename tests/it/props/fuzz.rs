//! The fuzz loop's parts: mutated documents, hostile pointers and values, and the judge of each
//! case (no crash, valid JSON after a success, the same bytes after a failure).

use super::*;

/// How many fuzzed state operations to run: a few seconds' worth in the normal test run, more
/// by `TRACTATUS_FUZZ_CASES` (the README gives the longer run's command).
pub(super) fn fuzz_cases() -> u32 {
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
pub(super) struct FuzzCase {
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

pub(super) fn fuzz_case() -> impl Strategy<Value = FuzzCase> {
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
    pub(super) fn fuzz(&self, case: &FuzzCase) -> Result<(), TestCaseError> {
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
