//! `set` and `append` on a large document without building it. A `serde_json::Value` of a
//! document takes about five times the document's bytes; appending one entry to a 50 MB
//! instruction history needs none of that. Only the containers on the pointer's path are opened
//! (one level each, their children kept as slices of the bytes read); every other subtree is
//! written straight from those bytes in Node's layout. The output is byte for byte what
//! [`to_node_json`](super::to_node_json) writes for the edited document, errors included
//! (checked by the property tests against the in-memory edit).

use std::collections::HashMap;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use super::edit::{Edit, Pointer, array_index};
use super::node_json::{js_order, newline, write_string, write_value};
use crate::{Error, Result};

/// A document opened only where an edit goes.
enum Lazy<'a> {
    /// Untouched: a slice of the bytes read.
    Raw(&'a RawValue),
    Array(Vec<Lazy<'a>>),
    /// Keys unique, in the order `serde_json` keeps them (a repeated key keeps its first place
    /// and its last value, as `JSON.parse` does).
    Object(Vec<(String, Lazy<'a>)>),
    /// A scalar, or a value the edit brought in.
    Value(Value),
}

/// An object's entries as written, repeats included.
struct Entries<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(
                self,
                mut m: M,
            ) -> std::result::Result<Self::Value, M::Error> {
                let mut entries = Vec::new();
                while let Some(k) = m.next_key::<String>()? {
                    entries.push((k, m.next_value::<&'de RawValue>()?));
                }
                Ok(Entries(entries))
            }
        }
        d.deserialize_map(V)
    }
}

fn malformed(e: serde_json::Error) -> Error {
    Error::internal(format!(
        "a document that parsed once did not parse again: {e}"
    ))
}

/// The object's entries with repeats folded as `serde_json`'s map folds them.
fn object_entries(raw: &RawValue) -> Result<Vec<(String, &RawValue)>> {
    let Entries(all) = serde_json::from_str(raw.get()).map_err(malformed)?;
    let mut at: HashMap<&str, usize> = HashMap::with_capacity(all.len());
    let mut unique: Vec<(String, &RawValue)> = Vec::with_capacity(all.len());
    for (k, v) in &all {
        match at.get(k.as_str()) {
            Some(&i) => unique[i].1 = v,
            None => {
                at.insert(k, unique.len());
                unique.push((k.clone(), v));
            }
        }
    }
    Ok(unique)
}

impl<'a> Lazy<'a> {
    /// Parse one level of a raw value: its children stay raw.
    fn open(&mut self) -> Result<()> {
        let Lazy::Raw(raw) = self else {
            return Ok(());
        };
        *self = match raw.get().as_bytes().first() {
            Some(b'[') => Lazy::Array(
                serde_json::from_str::<Vec<&'a RawValue>>(raw.get())
                    .map_err(malformed)?
                    .into_iter()
                    .map(Lazy::Raw)
                    .collect(),
            ),
            Some(b'{') => Lazy::Object(
                object_entries(raw)?
                    .into_iter()
                    .map(|(k, v)| (k, Lazy::Raw(v)))
                    .collect(),
            ),
            _ => Lazy::Value(serde_json::from_str(raw.get()).map_err(malformed)?),
        };
        Ok(())
    }

    /// The child at `tokens`, opening every container on the way; `None` when there is none.
    fn walk(&mut self, tokens: &[String]) -> Result<Option<&mut Lazy<'a>>> {
        let mut at = self;
        for t in tokens {
            at.open()?;
            at = match at {
                Lazy::Array(a) => match array_index(t, a.len()) {
                    Some(i) if i < a.len() => &mut a[i],
                    _ => return Ok(None),
                },
                Lazy::Object(m) => match m.iter_mut().find(|(k, _)| k == t) {
                    Some((_, v)) => v,
                    None => return Ok(None),
                },
                _ => return Ok(None),
            };
        }
        at.open()?;
        Ok(Some(at))
    }

    fn kind(&self) -> &'static str {
        match self {
            Lazy::Array(_) => "an array",
            Lazy::Object(_) => "an object",
            Lazy::Value(v) => super::edit::kind(v),
            Lazy::Raw(_) => "a value",
        }
    }

    fn write(&self, out: &mut String, depth: usize) -> Result<()> {
        match self {
            Lazy::Value(v) => write_value(out, v, depth),
            Lazy::Raw(raw) => write_raw(out, raw, depth)?,
            Lazy::Array(a) => write_items(out, a.iter().map(|v| (None, v)), depth, ('[', ']'))?,
            Lazy::Object(m) => {
                let order = js_order(m.iter().map(|(k, v)| (k, v)));
                write_items(
                    out,
                    order.into_iter().map(|(k, v)| (Some(k), v)),
                    depth,
                    ('{', '}'),
                )?
            }
        }
        Ok(())
    }
}

/// A container's items (with their keys, for an object) laid out as `JSON.stringify` does.
fn write_items<'i, 'a: 'i>(
    out: &mut String,
    items: impl ExactSizeIterator<Item = (Option<&'i String>, &'i Lazy<'a>)>,
    depth: usize,
    (open, close): (char, char),
) -> Result<()> {
    out.push(open);
    if items.len() == 0 {
        out.push(close);
        return Ok(());
    }
    for (i, (key, item)) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        newline(out, depth + 1);
        if let Some(k) = key {
            write_string(out, k);
            out.push_str(": ");
        }
        item.write(out, depth + 1)?;
    }
    newline(out, depth);
    out.push(close);
    Ok(())
}

/// An untouched subtree, re-laid out from its bytes one level at a time. A number too large
/// for a double (`1e400`) is written as the file spells it: the edit was not about it.
fn write_raw(out: &mut String, raw: &RawValue, depth: usize) -> Result<()> {
    let text = raw.get();
    if matches!(text.as_bytes().first(), Some(b'-' | b'0'..=b'9'))
        && text.parse::<f64>().is_ok_and(|f| !f.is_finite())
    {
        out.push_str(text);
        return Ok(());
    }
    let mut node = Lazy::Raw(raw);
    node.open()?;
    node.write(out, depth)
}

/// The document `text` with `edit` (a `set` or an `append`) applied, in Node's layout with no
/// final newline.
pub(super) fn edit_text(text: &str, edit: Edit, name: &str) -> Result<String> {
    let raw: &RawValue = serde_json::from_str(text).map_err(malformed)?;
    let mut root = Lazy::Raw(raw);
    match edit {
        Edit::Append(p, value) => append(&mut root, &p, value, name)?,
        Edit::Set(p, value) => set(&mut root, &p, value, name)?,
        _ => return Err(Error::internal("only set and append edit the text")),
    }
    let mut out = String::with_capacity(text.len() + text.len() / 8 + 4096);
    root.write(&mut out, 0)?;
    Ok(out)
}

fn append(root: &mut Lazy<'_>, p: &Pointer, value: Value, name: &str) -> Result<()> {
    match root.walk(&p.tokens)? {
        Some(Lazy::Array(a)) => {
            a.push(Lazy::Value(value));
            Ok(())
        }
        Some(other) => Err(Error::bad_data(format!(
            "{name}: the value at {p} is {}, not an array; nothing written",
            other.kind()
        ))),
        None => Err(Error::bad_data(format!(
            "{name}: no array at {p} to append to; nothing written (create it once with \
             `tractatus state set {name} {p} '[]'`)"
        ))),
    }
}

fn set(root: &mut Lazy<'_>, p: &Pointer, value: Value, name: &str) -> Result<()> {
    let Some((last, parent)) = p.tokens.split_last() else {
        *root = Lazy::Value(value);
        return Ok(());
    };
    match root.walk(parent)? {
        Some(Lazy::Object(m)) => {
            match m.iter_mut().find(|(k, _)| k == last) {
                Some((_, v)) => *v = Lazy::Value(value),
                None => m.push((last.clone(), Lazy::Value(value))),
            }
            Ok(())
        }
        Some(Lazy::Array(a)) => {
            let len = a.len();
            match (last.as_str(), array_index(last, len)) {
                ("-", _) => a.push(Lazy::Value(value)),
                (_, Some(i)) if i < len => a[i] = Lazy::Value(value),
                (_, Some(i)) if i == len => a.push(Lazy::Value(value)),
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
            other.kind()
        ))),
        None => Err(Error::bad_data(format!(
            "{name}: cannot set {p}: its parent does not exist; nothing written"
        ))),
    }
}
