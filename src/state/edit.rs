//! Changes to a document in memory: RFC 6901 pointers, the edits `state` commands make (set,
//! append, merge, update), and applying them. Bad targets are bad data (65), usage errors 64.

use serde_json::Value;

use crate::error::{Error, Result};

/// An RFC 6901 JSON pointer, checked and decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    text: String,
    pub(super) tokens: Vec<String>,
}

impl std::fmt::Display for Pointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.text.is_empty() {
            "\"\" (the whole document)"
        } else {
            &self.text
        })
    }
}

/// Check a pointer's syntax (`""` or `/a/b~1c/0`); a usage error (64) when it is malformed.
pub fn parse_pointer(text: &str) -> Result<Pointer> {
    let p = jsonptr::Pointer::parse(text).map_err(|e| {
        Error::usage(format!(
            "bad JSON pointer '{text}': {e} (RFC 6901: empty, or '/'-separated tokens with ~0 for ~ and ~1 for /)"
        ))
    })?;
    Ok(Pointer {
        text: text.to_owned(),
        tokens: p.tokens().map(|t| t.decoded().into_owned()).collect(),
    })
}

pub(super) fn parse_json(text: &str, what: &str) -> Result<Value> {
    serde_json::from_str(text)
        .map_err(|e| Error::bad_data(format!("{what} is not valid JSON: {e}")))
}

/// One change to a document.
#[derive(Debug, Clone)]
pub enum Edit {
    /// Replace or insert the value at the pointer (`-` as last token appends to an array).
    Set(Pointer, Value),
    /// Push onto the array at the pointer.
    Append(Pointer, Value),
    /// RFC 7396 merge patch.
    Merge(Value),
    /// Pipe the document through a command (stdin) and take its stdout. The command runs
    /// under `lock run`'s process-group guard, so a program that uses this calls
    /// [`crate::group::guard_main`] first in its `main`, as for [`crate::run::supervise`].
    Update(Vec<String>),
}

impl Edit {
    /// Apply the edit to `doc` in memory, as `state` commands do between reading and
    /// committing (for a [`PendingWrite`](super::PendingWrite)); `name` names the file in error
    /// messages. A bad target is bad data (65); [`Edit::Update`] runs a command and is not an
    /// in-memory edit (70).
    pub fn apply(self, doc: &mut Value, name: &str) -> Result<()> {
        apply(doc, self, name)
    }

    /// `set POINTER JSON`, checked (64 for the pointer, 65 for the JSON).
    pub fn set(pointer: &str, json: &str) -> Result<Self> {
        Ok(Edit::Set(
            parse_pointer(pointer)?,
            parse_json(json, "the given value")?,
        ))
    }

    /// `append POINTER JSON`, checked.
    pub fn append(pointer: &str, json: &str) -> Result<Self> {
        Ok(Edit::Append(
            parse_pointer(pointer)?,
            parse_json(json, "the given value")?,
        ))
    }

    /// `merge JSON`, checked.
    /// Only an object is a patch: RFC 7396 would let any other value replace the whole
    /// document, which `merge` is never meant to do (`set FILE "" JSON` does that).
    pub fn merge(json: &str) -> Result<Self> {
        let patch = parse_json(json, "the given patch")?;
        if !patch.is_object() {
            return Err(Error::bad_data(format!(
                "the given patch is {}, not an object: `state merge` takes an object (RFC 7396); \
                 nothing written",
                kind(&patch)
            )));
        }
        Ok(Edit::Merge(patch))
    }
}

/// The value at `p`, moved out of `doc` (no copy of what is kept); `None` when there is none.
pub(super) fn take_pointer(mut doc: Value, p: &Pointer) -> Option<Value> {
    resolve_pointer_mut(&mut doc, &p.tokens).map(Value::take)
}

fn resolve_pointer_mut<'v>(doc: &'v mut Value, tokens: &[String]) -> Option<&'v mut Value> {
    tokens.iter().try_fold(doc, |v, t| match v {
        Value::Object(m) => m.get_mut(t),
        Value::Array(a) => {
            let i = array_index(t, a.len())?;
            a.get_mut(i)
        }
        _ => None,
    })
}

/// An RFC 6901 array index: `0` or digits without a leading zero.
pub(super) fn array_index(token: &str, _len: usize) -> Option<usize> {
    if token == "0" || (!token.starts_with('0') && token.bytes().all(|b| b.is_ascii_digit())) {
        token.parse().ok()
    } else {
        None
    }
}

/// Why [`push`] found no array to push onto, for its caller to word (the CLI and the addon
/// suggest different ways to create one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoArray {
    /// Nothing is at the pointer.
    Missing,
    /// Something else is there: what it is (`"an object"`, `"a number"`, ...).
    Found(&'static str),
}

/// Push `value` onto the array at `p`, then keep only its last `keep` entries (a ring; all of
/// them when `None`): `state append`, and the addon's `appendJson`.
pub fn push(
    doc: &mut Value,
    p: &Pointer,
    value: Value,
    keep: Option<usize>,
) -> std::result::Result<(), NoArray> {
    match resolve_pointer_mut(doc, &p.tokens) {
        Some(Value::Array(a)) => {
            a.push(value);
            if let Some(keep) = keep {
                let excess = a.len().saturating_sub(keep);
                a.drain(..excess);
            }
            Ok(())
        }
        Some(other) => Err(NoArray::Found(kind(other))),
        None => Err(NoArray::Missing),
    }
}

/// Apply one edit in memory. Bad targets are bad data (65).
fn apply(doc: &mut Value, edit: Edit, name: &str) -> Result<()> {
    match edit {
        Edit::Merge(patch) => {
            json_patch::merge(doc, &patch);
            Ok(())
        }
        Edit::Append(p, value) => push(doc, &p, value, None).map_err(|e| match e {
            NoArray::Found(kind) => Error::bad_data(format!(
                "{name}: the value at {p} is {kind}, not an array; nothing written"
            )),
            NoArray::Missing => Error::bad_data(format!(
                "{name}: no array at {p} to append to; nothing written (create it once with \
                 `tractatus state set {name} {p} '[]'`)"
            )),
        }),
        Edit::Set(p, value) => {
            let Some((last, parent)) = p.tokens.split_last() else {
                *doc = value;
                return Ok(());
            };
            match resolve_pointer_mut(doc, parent) {
                Some(Value::Object(m)) => {
                    m.insert(last.clone(), value);
                    Ok(())
                }
                Some(Value::Array(a)) => {
                    let len = a.len();
                    match (last.as_str(), array_index(last, len)) {
                        ("-", _) => a.push(value),
                        (_, Some(i)) if i < len => a[i] = value,
                        (_, Some(i)) if i == len => a.push(value),
                        _ => {
                            return Err(Error::bad_data(format!(
                                "{name}: {p}: index '{last}' is not in an array of {len}; nothing written"
                            )));
                        }
                    }
                    Ok(())
                }
                Some(other) => Err(Error::bad_data(format!(
                    "{name}: cannot set {p}: its parent is {}; nothing written",
                    kind(other)
                ))),
                None => Err(Error::bad_data(format!(
                    "{name}: cannot set {p}: its parent does not exist; nothing written"
                ))),
            }
        }
        Edit::Update(_) => Err(Error::internal("update is not an in-memory edit")),
    }
}

pub(super) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::to_node_json;

    #[test]
    fn pointers_are_checked() {
        assert!(parse_pointer("").is_ok());
        assert_eq!(
            parse_pointer("/a~1b/~0c").unwrap().tokens,
            vec!["a/b", "~c"]
        );
        for bad in ["a", "/a~2", "/~"] {
            assert_eq!(parse_pointer(bad).unwrap_err().exit_code(), 64, "{bad}");
        }
    }

    #[test]
    fn push_keeps_the_last_entries() {
        let mut doc: Value = serde_json::from_str(r#"{"a/b":{"ring":[1,2,3]}}"#).unwrap();
        let ring = parse_pointer("/a~1b/ring").unwrap();
        push(&mut doc, &ring, Value::from(4), Some(3)).unwrap();
        assert_eq!(doc.to_string(), r#"{"a/b":{"ring":[2,3,4]}}"#);
        push(&mut doc, &ring, Value::from(5), None).unwrap();
        assert_eq!(doc.to_string(), r#"{"a/b":{"ring":[2,3,4,5]}}"#);
        let at = |p: &str| parse_pointer(p).unwrap();
        let found = push(&mut doc, &at("/a~1b"), Value::from(1), None);
        assert_eq!(found, Err(NoArray::Found("an object")));
        let missing = push(&mut doc, &at("/missing"), Value::from(1), None);
        assert_eq!(missing, Err(NoArray::Missing));
    }

    #[test]
    fn edits_refuse_bad_targets_as_bad_data() {
        let mut doc: Value = serde_json::from_str(r#"{"list":[1],"n":3}"#).unwrap();
        apply(&mut doc, Edit::append("/list", "2").unwrap(), "f").unwrap();
        apply(&mut doc, Edit::set("/list/-", "3").unwrap(), "f").unwrap();
        apply(&mut doc, Edit::set("/new", "true").unwrap(), "f").unwrap();
        apply(
            &mut doc,
            Edit::merge(r#"{"n":null,"m":{"x":1}}"#).unwrap(),
            "f",
        )
        .unwrap();
        assert_eq!(
            to_node_json(&doc).replace([' ', '\n'], ""),
            r#"{"list":[1,2,3],"new":true,"m":{"x":1}}"#
        );
        for patch in ["[1,2]", "3", "null", "\"x\""] {
            assert_eq!(Edit::merge(patch).unwrap_err().exit_code(), 65, "{patch}");
        }
        for edit in [
            Edit::append("/new", "1").unwrap(),
            Edit::append("/missing", "1").unwrap(),
            Edit::set("/missing/x", "1").unwrap(),
            Edit::set("/list/9", "1").unwrap(),
        ] {
            assert_eq!(apply(&mut doc, edit, "f").unwrap_err().exit_code(), 65);
        }
    }
}
