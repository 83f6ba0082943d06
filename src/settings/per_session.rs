//! The `per_session` list of the config file: which state files each session keeps its own copy
//! of, checked once when the settings are resolved so that a bad entry is refused before any
//! work (64, naming the entry) rather than mapped somewhere surprising.

use std::time::Duration;

use super::file::CONFIG_FILE;
use crate::config::check_lock_name;
use crate::error::{Error, Result};

/// Where the sessions' own copies live, relative to the repository root:
/// `.claude/sessions/<id>/<the file's path below .claude/>`.
pub const SESSIONS_DIR: &str = ".claude/sessions";

/// A session quiet for longer than this counts as silent: 30 minutes.
pub const DEFAULT_SESSION_IDLE: Duration = Duration::from_secs(30 * 60);

/// The most files `per_session` may list: 256. Each session keeps a copy of every one, and
/// every call reads the list.
pub(super) const MAX_ENTRIES: usize = 256;

/// The entries, normalized (`./` and repeated `/` dropped): each a file under `.claude/`,
/// outside `.claude/sessions/` and tractatus' own `.claude/.tractatus/`, named as a lock name
/// may be.
pub(super) fn check(entries: &[String]) -> Result<Vec<String>> {
    if entries.len() > MAX_ENTRIES {
        // Refused before any entry is looked at: every call pays for the list.
        return Err(Error::usage(format!(
            "`per_session` in {CONFIG_FILE} lists {} files: at most {MAX_ENTRIES} are allowed",
            entries.len()
        )));
    }
    entries.iter().map(|e| one(e)).collect()
}

fn one(entry: &str) -> Result<String> {
    let bad = |why: &str| {
        Error::usage(format!(
            "`per_session` in {CONFIG_FILE}: '{}' {why}",
            entry.escape_default()
        ))
    };
    let parts: Vec<&str> = entry
        .trim()
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    let name = parts.join("/");
    check_lock_name(&name).map_err(|_| {
        bad("is not a file path inside the repository (A-Z a-z 0-9 . _ - /, no '..')")
    })?;
    match parts.as_slice() {
        [".claude", "sessions" | ".tractatus", ..] => {
            Err(bad("is tractatus' own directory, not a state file"))
        }
        [".claude", _, ..] => Ok(name),
        _ => Err(bad(
            "is not under .claude/ (per-session copies live in .claude/sessions/<id>/, named by \
             the path below .claude/)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_normalized_and_must_be_files_under_dot_claude() {
        let ok = check(&[
            "./.claude//session-state.json".into(),
            ".claude/metrics/m.json".into(),
        ]);
        assert_eq!(
            ok.unwrap(),
            [".claude/session-state.json", ".claude/metrics/m.json"]
        );
        for bad in [
            "session-state.json",
            ".claude",
            ".claude/../x.json",
            ".claude/sessions/a/x.json",
            ".claude/.tractatus/x",
            "/etc/passwd",
            ".claude/a b.json",
        ] {
            let e = check(&[bad.into()]).unwrap_err();
            assert_eq!(e.exit_code(), 64, "{bad}");
            assert!(e.to_string().contains("per_session"), "{e}");
        }
    }
}
