//! `appendJson` with `keep`: push onto the array at a JSON pointer and drop its oldest
//! entries beyond `keep`, in memory. Pointer rules and messages follow the CLI's `append`.

use serde_json::Value;

/// RFC 6901 array index: `0`, or digits without a leading zero.
fn array_index(token: &str) -> Option<usize> {
    if token == "0" || (!token.starts_with('0') && token.bytes().all(|b| b.is_ascii_digit())) {
        token.parse().ok()
    } else {
        None
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Push `value` onto the array at `pointer` (already checked by the caller), then keep only
/// the last `keep` entries. The error is one line for `BAD_DATA`.
pub fn push(doc: &mut Value, pointer: &str, value: Value, keep: Option<u32>) -> Result<(), String> {
    let parsed = jsonptr::Pointer::parse(pointer)
        .map_err(|e| format!("bad JSON pointer '{pointer}': {e}"))?;
    let mut target = Some(doc);
    for token in parsed.tokens() {
        let t = token.decoded();
        target = target.and_then(|v| match v {
            Value::Object(m) => m.get_mut(t.as_ref()),
            Value::Array(a) => array_index(&t).and_then(|i| a.get_mut(i)),
            _ => None,
        });
    }
    match target {
        Some(Value::Array(a)) => {
            a.push(value);
            if let Some(keep) = keep {
                let excess = a.len().saturating_sub(keep as usize);
                a.drain(..excess);
            }
            Ok(())
        }
        Some(other) => Err(format!(
            "the value at {pointer} is {}, not an array; nothing written",
            kind(other)
        )),
        None => Err(format!(
            "no array at {pointer} to append to; nothing written (create it once with \
             setJson(file, '{pointer}', []))"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_entries() {
        let mut doc: Value = serde_json::from_str(r#"{"a/b":{"ring":[1,2,3]}}"#).unwrap();
        push(&mut doc, "/a~1b/ring", Value::from(4), Some(3)).unwrap();
        assert_eq!(doc.to_string(), r#"{"a/b":{"ring":[2,3,4]}}"#);
        push(&mut doc, "/a~1b/ring", Value::from(5), None).unwrap();
        assert_eq!(doc.to_string(), r#"{"a/b":{"ring":[2,3,4,5]}}"#);
        assert!(push(&mut doc, "/a~1b", Value::from(1), None).is_err());
        assert!(push(&mut doc, "/missing", Value::from(1), None).is_err());
    }
}
