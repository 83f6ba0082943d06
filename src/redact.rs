//! Passwords out of everything we show: a Redis URL's userinfo (`user:***@`) and the values of
//! its secret query parameters (`password=***`, `sentinel_password=***`), in a URL alone or in
//! any text (an argument, an error). No character of a password survives, whatever it holds:
//! spaces, `@`, `%`, `/`, any script. Used by the URL checks of [`crate::config`], which
//! re-exports these functions, and by the front ends for command lines and errors.

/// Query parameters whose values are secrets: masked wherever a URL is shown, and a password
/// for the committed file's check. `password=` is no parameter of ours nor of the Redis client
/// (a plain URL holding it is refused), but whoever wrote it meant a secret.
const SECRET_PARAMS: [&str; 2] = ["password", SENTINEL_PASSWORD_PARAM];

/// A Sentinel URL's parameter for the sentinels' password (see `crate::url::sentinel`); named
/// here, the leaf below the URL parser, so that redaction imports nothing of ours.
pub(crate) const SENTINEL_PASSWORD_PARAM: &str = "sentinel_password";

/// Replace the userinfo of a URL (`user:password@`) with `user:***@`, and the values of the
/// query's secrets (`password=`, a Sentinel URL's `sentinel_password=`) with `***`, keeping the
/// rest. Whatever the password holds (spaces, `@`, `%`, `/`, any script), none of it is kept:
/// everything between the scheme and the last `@` is the userinfo.
pub fn redact(url: &str) -> String {
    // The query's secrets first: a value may hold an '@', which the userinfo's search below
    // would take for the userinfo's end.
    let url = &redact_params(url);
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let after = &url[scheme_end + 3..];
    // The last '@' anywhere: a password may hold an unescaped '/' (a Redis URL's path, the
    // database number, never holds an '@').
    let Some(at) = after.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &after[..at];
    let shown_user = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_owned(),
    };
    format!(
        "{}{}@{}",
        &url[..scheme_end + 3],
        shown_user,
        &after[at + 1..]
    )
}

/// `text` (an argument, an error message) with every URL in it redacted (see [`redact`]). A
/// URL starts at a scheme (`redis://`, `REDIS://`, `http://`...) that begins the text or follows
/// a space, a quote, `=`, `,` or a bracket, and runs to the next such start or the end of the
/// text, not to the next space: a password may hold spaces. More than the URL may be masked;
/// never less.
pub fn redact_text(text: &str) -> String {
    let is_scheme = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-');
    let starts: Vec<usize> = text
        .match_indices("://")
        .filter_map(|(i, _)| {
            let head = &text[..i];
            let start = head.rfind(|c: char| !is_scheme(c)).map_or(0, |j| j + 1);
            let before = head[..start].chars().next_back();
            let begins = before.is_none_or(|c| {
                c.is_whitespace() || matches!(c, '\'' | '"' | '`' | '=' | ',' | '(' | '[' | '<')
            });
            (start < i && begins).then_some(start)
        })
        .collect();
    let Some(&first) = starts.first() else {
        return text.to_owned();
    };
    let mut out = text[..first].to_owned();
    for (k, &start) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(text.len());
        out.push_str(&redact(&text[start..end]));
    }
    out
}

/// The byte ranges of the values of secret parameters ([`SECRET_PARAMS`]) in `url` (after a
/// `?` or an `&`).
fn secret_params(url: &str) -> Vec<std::ops::Range<usize>> {
    let mut out: Vec<std::ops::Range<usize>> = SECRET_PARAMS
        .iter()
        .flat_map(|name| {
            let key = format!("{name}=");
            url.match_indices(&key)
                .filter(|(i, _)| *i > 0 && matches!(url.as_bytes()[i - 1], b'?' | b'&'))
                .map(|(i, _)| {
                    let start = i + key.len();
                    let end = url[start..].find('&').map_or(url.len(), |n| start + n);
                    start..end
                })
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort_by_key(|r| r.start);
    out
}

fn redact_params(url: &str) -> String {
    let mut out = url.to_owned();
    for r in secret_params(url).into_iter().rev() {
        out.replace_range(r, "***");
    }
    out
}

/// True when `url` carries a password (`user:password@` or `:password@`, a `password=` in its
/// query, or a Sentinel URL's `sentinel_password=`); a user name alone is not one.
pub(crate) fn has_password(url: &str) -> bool {
    if secret_params(url).iter().any(|r| !r.is_empty()) {
        return true;
    }
    let url = &redact_params(url);
    let Some(i) = url.find("://") else {
        return false;
    };
    let after = &url[i + 3..];
    after.rfind('@').is_some_and(|at| after[..at].contains(':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_character_of_a_password_survives_redaction() {
        for pw in ["pq ss", "qq@zz@kk", "p%zz%41", "é ü 密码", "xq/yq?zq&wq"] {
            for text in [
                format!("redis://:{pw}@h:1/0"),
                format!("--redis=redis://alice:{pw}@h:1"),
                format!("unexpected argument 'rediss://u:{pw}@h:1' found"),
                format!("redis://:{pw}@h1:1,redis://:{pw}@h2:2"),
            ] {
                let shown = redact_text(&text);
                assert!(!shown.contains(pw), "{pw}: {shown}");
                let first = pw.split([' ', '@', '/']).next().unwrap();
                assert!(!shown.contains(first), "{pw}: {shown}");
                assert!(shown.contains("***@h"), "{shown}");
            }
        }
        assert_eq!(redact_text("no url here"), "no url here");
        // Any scheme, and a "://" inside a password starts no URL.
        assert_eq!(
            redact_text("'HTTP://u:a b@h' and x=rediss://:p://q@h2"),
            "'HTTP://u:***@h' and x=rediss://:***@h2"
        );
        assert_eq!(
            redact_text("a redis://h:1 and redis+sentinel://:x y@s/m ok"),
            "a redis://h:1 and redis+sentinel://:***@s/m ok"
        );
    }
}
