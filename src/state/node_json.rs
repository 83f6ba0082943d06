//! The layout writer: documents serialized as Node's `JSON.stringify(doc, null, 2)` writes them
//! (key order kept, integer-like keys first as JavaScript orders them, 2-space indent,
//! JavaScript's number and string forms).

use std::fmt::Write as _;

use serde_json::Value;

/// Serialize as Node's `JSON.stringify(doc, null, 2)` does (no final newline).
pub fn to_node_json(doc: &Value) -> String {
    let mut out = String::with_capacity(4096);
    write_value(&mut out, doc, 0);
    out
}

pub(super) fn write_value(out: &mut String, v: &Value, depth: usize) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(a) if a.is_empty() => out.push_str("[]"),
        Value::Object(m) if m.is_empty() => out.push_str("{}"),
        Value::Array(a) => {
            out.push('[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, depth + 1);
                write_value(out, item, depth + 1);
            }
            newline(out, depth);
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            for (i, (k, item)) in js_order(m.iter()).into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, depth + 1);
                write_string(out, k);
                out.push_str(": ");
                write_value(out, item, depth + 1);
            }
            newline(out, depth);
            out.push('}');
        }
    }
}

pub(super) fn newline(out: &mut String, depth: usize) {
    out.push('\n');
    for _ in 0..depth {
        out.push_str("  ");
    }
}

/// JavaScript's property order: array-index keys ascending, then the rest in insertion order.
pub(super) fn js_order<'m, V>(
    entries: impl Iterator<Item = (&'m String, &'m V)> + Clone,
) -> Vec<(&'m String, &'m V)> {
    let is_index = |k: &str| {
        (k == "0"
            || (!k.starts_with('0') && !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit())))
            && k.parse::<u64>().is_ok_and(|n| n < u64::from(u32::MAX))
    };
    let mut indexed: Vec<(&String, &V)> = entries.clone().filter(|(k, _)| is_index(k)).collect();
    if indexed.is_empty() {
        return entries.collect();
    }
    indexed.sort_by_key(|(k, _)| k.parse::<u64>().unwrap_or(0));
    indexed.extend(entries.filter(|(k, _)| !is_index(k)));
    indexed
}

/// Numbers as JavaScript prints them; integers too long for a double keep their digits.
fn write_number(out: &mut String, n: &serde_json::Number) {
    let text = n.as_str();
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.bytes().all(|b| b.is_ascii_digit()) && digits.len() <= 15 {
        out.push_str(if digits.bytes().all(|b| b == b'0') {
            "0"
        } else {
            text
        });
        return;
    }
    if digits.bytes().all(|b| b.is_ascii_digit()) {
        // Node would round this to a double; we keep what the file says.
        out.push_str(text);
        return;
    }
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() => {
            let mut buf = ryu_js::Buffer::new();
            out.push_str(buf.format(f));
        }
        // Too large for a double (`1e400`): Node would write `null`, losing the value; we keep
        // what the file says, as for long integers. It is valid JSON and reads back the same.
        _ => out.push_str(text),
    }
}

/// Strings as `JSON.stringify` escapes them. Every character that needs an escape is ASCII, so
/// the bytes between them are copied in runs (UTF-8 never has an ASCII byte inside a character).
pub(super) fn write_string(out: &mut String, s: &str) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut run_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            0x0c => "\\f",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[run_start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        run_start = i + 1;
    }
    out.push_str(&s[run_start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_matches_node_stringify() {
        let src = r#"{"b":1,"a":[],"o":{},"2":"x","1":[1,{"k":null}],"s":"q\"\\\n\u0001é","f":1.50,"e":1e21,"t":0.0000001,"z":-0}"#;
        let v: Value = serde_json::from_str(src).unwrap();
        // Node: JSON.stringify(JSON.parse(src), null, 2)
        let node = "{\n  \"1\": [\n    1,\n    {\n      \"k\": null\n    }\n  ],\n  \"2\": \"x\",\n  \"b\": 1,\n  \"a\": [],\n  \"o\": {},\n  \"s\": \"q\\\"\\\\\\n\\u0001é\",\n  \"f\": 1.5,\n  \"e\": 1e+21,\n  \"t\": 1e-7,\n  \"z\": 0\n}";
        assert_eq!(to_node_json(&v), node);
    }

    #[test]
    fn string_escapes_match_a_char_by_char_reference() {
        fn reference(s: &str) -> String {
            let mut out = String::from('"');
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\u{8}' => out.push_str("\\b"),
                    '\u{c}' => out.push_str("\\f"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
        let every_ascii: String = (0u8..0x80).map(char::from).collect();
        for s in [
            "",
            "plain",
            every_ascii.as_str(),
            "é\u{1}ü\"\\𝄞\u{7f}\u{2028}end",
            "\n\n",
        ] {
            let mut got = String::new();
            write_string(&mut got, s);
            assert_eq!(got, reference(s), "{s:?}");
        }
    }
}
