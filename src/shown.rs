//! Text that came from elsewhere (another process through Redis or a lock file, the
//! environment, a command line), made safe to show on a terminal or in a log: every character a
//! terminal would act on instead of print is written as an escape, and a field is cut to a
//! bounded length. Session ids, host names, commands, lock names and owners are shown only
//! through [`escape`] or [`field`], so a hostile value cannot clear the screen, set the window
//! title, plant a link, reorder what is read (bidi overrides) or forge a line of its own.

use std::borrow::Cow;
use std::fmt::Write;

/// The longest a field of a table or a line is shown, in characters after escaping: longer
/// ones are cut, saying how many characters were left out.
pub const FIELD_MAX: usize = 256;

/// `text` with every control character written as an escape: C0 and DEL as `\x1b` (`\n`, `\r`,
/// `\t` by name), and C1, line and paragraph separators, bidi overrides and isolates, zero-width
/// and other invisible format characters, and unassigned code points as `\u{202e}`. Quotes and
/// backslashes stay as they are, so escaping twice changes nothing. Text with nothing to escape
/// is returned as it is.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        push_char(&mut out, c);
    }
    Cow::Owned(out)
}

/// `text` escaped as [`escape`] does and cut to [`FIELD_MAX`] characters: a table cell, or a
/// value quoted in a line.
pub fn field(text: &str) -> String {
    field_max(text, FIELD_MAX)
}

/// [`field`] with a limit of `max` characters (at least 32), the mark of the cut included.
pub(crate) fn field_max(text: &str, max: usize) -> String {
    let max = max.max(32);
    let whole = escape(text);
    if whole.chars().count() <= max {
        return whole.into_owned();
    }
    // Room for the mark of the cut: `…(+N chars)`, N at most the text's length in bytes.
    let room = max - (10 + text.len().to_string().len());
    let mut out = String::new();
    let mut shown = 0;
    let mut piece = String::new();
    for (i, c) in text.char_indices() {
        piece.clear();
        push_char(&mut piece, c);
        let len = piece.chars().count();
        if shown + len > room {
            let left = text[i..].chars().count();
            let _ = write!(out, "…(+{left} chars)");
            break;
        }
        out.push_str(&piece);
        shown += len;
    }
    out
}

fn needs_escape(c: char) -> bool {
    c.is_control() || (!c.is_ascii() && escaped_by_std(c))
}

/// Rust's own judgement of what is not printable (`char::escape_debug` writes it as `\u{..}`):
/// format characters (bidi controls, zero-width), separators, unassigned code points.
fn escaped_by_std(c: char) -> bool {
    let mut e = c.escape_debug();
    e.next() == Some('\\') && e.next() == Some('u')
}

fn push_char(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if c.is_ascii_control() => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if needs_escape(c) => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

/// True when `name` is 1 to `max` characters of `A-Z a-z 0-9 . _ -` (starting with a letter or
/// digit when `alnum_first`): the rule of every name we take from a user and show others as it
/// is (session ids, host names, namespaces), so that none needs escaping and none is `.` or `..`.
pub(crate) fn is_plain_name(name: &str, max: usize, alnum_first: bool) -> bool {
    !name.is_empty()
        && name.len() <= max
        && (!alnum_first || name.starts_with(|c: char| c.is_ascii_alphanumeric()))
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_escapes_and_invisible_characters_are_written_out() {
        assert_eq!(escape("plain host-1.a_b"), "plain host-1.a_b");
        assert!(matches!(escape("plain"), Cow::Borrowed(_)));
        assert_eq!(
            escape("\x1b]0;title\x07\x1b[2J"),
            "\\x1b]0;title\\x07\\x1b[2J"
        );
        assert_eq!(escape("a\nb\rc\td\x7f"), "a\\nb\\rc\\td\\x7f");
        assert_eq!(escape("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(
            escape("x\u{202e}y\u{2028}z\u{2029}\u{200b}\u{2066}"),
            "x\\u{202e}y\\u{2028}z\\u{2029}\\u{200b}\\u{2066}"
        );
        // Printable text of any script, quotes and backslashes stay.
        assert_eq!(
            escape("é ü 日本 \"q\" 'q' \\x1b"),
            "é ü 日本 \"q\" 'q' \\x1b"
        );
        // Escaping is idempotent: a note escaped twice reads the same.
        let once = escape("\x1b[2J\u{202e}").into_owned();
        assert_eq!(escape(&once), once);
    }

    #[test]
    fn a_long_field_is_cut_and_says_how_much_was_left_out() {
        let long = "a".repeat(70_000);
        let shown = field(&long);
        assert!(shown.chars().count() <= FIELD_MAX, "{}", shown.len());
        assert!(
            shown.starts_with(&"a".repeat(200)) && shown.ends_with("…(+69759 chars)"),
            "{shown}"
        );
        assert_eq!(field(&"b".repeat(FIELD_MAX)), "b".repeat(FIELD_MAX));
        // Cut on whole escapes only, and the escapes count toward the limit.
        let esc = field_max(&"\x1b".repeat(100), 40);
        assert!(esc.chars().count() <= 40, "{esc}");
        assert_eq!(field_max("abc", 0), "abc");
        assert!(
            esc.starts_with("\\x1b\\x1b") && esc.contains("…(+"),
            "{esc}"
        );
        assert!(!esc.contains('\x1b'));
    }
}
