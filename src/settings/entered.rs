//! Who a call says it is, checked where it enters: the host name in `TRACTATUS_HOST` and the
//! session id from `--session` or `TRACTATUS_SESSION_ID`. Every operator's terminal shows them,
//! so they must not carry escapes or line breaks.

use crate::error::{Error, Result};

/// Longest host name accepted in `TRACTATUS_HOST`: 253 characters, a DNS name's limit.
pub(crate) const MAX_HOST_NAME: usize = 253;

/// Check a host name given in `TRACTATUS_HOST` (it is recorded with every lease and shown to
/// every operator): 1 to [`MAX_HOST_NAME`] characters of `A-Z a-z 0-9 . _ -`, starting with a
/// letter or digit, the rule of session ids (see [`crate::session::check_session_id`]) with a
/// DNS name's length. A usage error (64) otherwise.
pub(crate) fn check_host_name(host: &str) -> Result<()> {
    if crate::shown::is_plain_name(host, MAX_HOST_NAME, true) {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "bad host name '{}': use 1 to {MAX_HOST_NAME} characters from A-Z a-z 0-9 . _ -, \
             starting with a letter or digit",
            crate::error::shorten(&host.escape_default().to_string())
        )))
    }
}

/// Check who this call says it is, where that enters: `TRACTATUS_HOST` read through `env`, and
/// the session as picked from `--session` or `TRACTATUS_SESSION_ID` (`origin`, value), each
/// trimmed and checked when set. A usage error (64) naming the variable or flag otherwise: a
/// value another operator's terminal shows must not carry escapes or line breaks.
pub(crate) fn check_entered(
    env: &dyn Fn(&str) -> Option<String>,
    session: Option<(&str, &str)>,
) -> Result<()> {
    let named = |origin: &str, e: Error| Error::usage(format!("{origin}: {e}"));
    if let Some(h) = env("TRACTATUS_HOST").filter(|h| !h.trim().is_empty()) {
        check_host_name(h.trim()).map_err(|e| named("TRACTATUS_HOST", e))?;
    }
    if let Some((origin, s)) = session.filter(|(_, s)| !s.trim().is_empty()) {
        crate::session::check_session_id(s.trim()).map_err(|e| named(origin, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_and_sessions_are_checked_where_they_enter() {
        for ok in [
            "ci-runner-7",
            "a",
            "host.example.org",
            "box_2",
            &"h".repeat(253),
        ] {
            check_host_name(ok).unwrap();
        }
        for bad in [
            "",
            "-x",
            ".x",
            "a b",
            "a\x1b[2J",
            "a\nb",
            "h\u{202e}",
            &"h".repeat(254),
        ] {
            assert_eq!(check_host_name(bad).unwrap_err().exit_code(), 64, "{bad:?}");
        }
        let env = |k: &str| (k == "TRACTATUS_HOST").then(|| "evil\x1b]0;t\x07".to_owned());
        let e = check_entered(&env, None).unwrap_err();
        assert!(
            e.to_string().starts_with("TRACTATUS_HOST: bad host name"),
            "{e}"
        );
        assert!(!e.to_string().contains('\x1b'), "{e}");
        let none = |_: &str| None;
        check_entered(&none, Some(("--session", " s-1 "))).unwrap();
        check_entered(&none, Some(("--session", "  "))).unwrap();
        let e = check_entered(&none, Some(("TRACTATUS_SESSION_ID", "a\nb"))).unwrap_err();
        assert_eq!(e.exit_code(), 64);
        assert!(
            e.to_string()
                .starts_with("TRACTATUS_SESSION_ID: bad session id"),
            "{e}"
        );
    }
}
