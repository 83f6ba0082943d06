//! Where a per-session state file lives, and how it comes to exist. A file listed in
//! `per_session` is, for a session `<id>`, `.claude/sessions/<id>/<its path below .claude/>`;
//! the session's first write starts from the shared file as it is then (a template), copied
//! whole and atomically, and the shared file is never touched.

use std::io::Write;
use std::path::Path;

use super::check_session_id;
use crate::error::{Error, Result};
use crate::settings::SESSIONS_DIR;

/// The session's copy of the file whose lock name (path relative to the root) is `name`, as a
/// path relative to the root; `None` when there is no session or the file is not per-session.
/// A bad session id is refused (64) only when it would name a directory.
pub(crate) fn session_copy(
    per_session: &[String],
    session: Option<&str>,
    name: &str,
) -> Result<Option<String>> {
    let (Some(id), true) = (session, per_session.iter().any(|p| p == name)) else {
        return Ok(None);
    };
    check_session_id(id)?;
    let below = name.strip_prefix(".claude/").unwrap_or(name);
    Ok(Some(format!("{SESSIONS_DIR}/{id}/{below}")))
}

/// Make sure `copy` (the session's file, absolute) can be written: its directory exists, and
/// when it does not exist yet but `shared` does, it starts as a copy of `shared`. The copy is
/// linked into place only if nothing is there (two first writes of one session at once: the
/// first copy stays, the second is dropped), so a session's own writes are never overwritten.
/// The template must be valid JSON: a torn or broken shared file is bad data (65) naming it, and
/// no copy is made (the session would otherwise be stuck with it after the shared file is
/// repaired). `.claude/sessions/` of `root` gets a `.gitignore` that keeps the copies out of git.
pub(crate) fn seed_from_shared(root: &Path, shared: &Path, copy: &Path) -> Result<()> {
    let dir = copy.parent().unwrap_or(Path::new("/"));
    let cannot = |path: &Path, source: std::io::Error| Error::CannotWrite {
        path: path.to_owned(),
        source,
    };
    let template = if copy.exists() {
        None
    } else {
        read_template(shared)?
    };
    std::fs::create_dir_all(dir).map_err(|e| cannot(dir, e))?;
    let ignore = root.join(SESSIONS_DIR).join(".gitignore");
    if !ignore.exists() {
        std::fs::write(&ignore, "*\n").map_err(|e| cannot(&ignore, e))?;
    }
    let Some(template) = template else {
        return Ok(());
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| cannot(dir, e))?;
    tmp.write_all(&template)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| cannot(copy, e))?;
    // The mode a new state file gets (what open(2) gives it), not tempfile's private 0600.
    let mode = 0o666 & !crate::repo::process_umask();
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| cannot(copy, e))?;
    }
    match tmp.persist_noclobber(copy) {
        Ok(_) => Ok(()),
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(cannot(copy, e.error)),
    }
}

/// How long to wait before reading a broken template a second time: Tractatus' own hooks write
/// the shared files in place, unguarded, and a read may land in the middle of one such write.
const REREAD_AFTER: std::time::Duration = std::time::Duration::from_millis(50);

/// The shared file's bytes, checked to be JSON (read twice at most); `None` when it does not
/// exist.
fn read_template(shared: &Path) -> Result<Option<Vec<u8>>> {
    let read = || match std::fs::read(shared) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::usage(format!(
            "cannot read {} (the template of this session's copy): {e}",
            shared.display()
        ))
        .with_source(e)),
    };
    let check = |b: &[u8]| serde_json::from_slice::<serde::de::IgnoredAny>(b).map(drop);
    let Some(bytes) = read()? else {
        return Ok(None);
    };
    if check(&bytes).is_ok() {
        return Ok(Some(bytes));
    }
    std::thread::sleep(REREAD_AFTER);
    let Some(bytes) = read()? else {
        return Ok(None);
    };
    match check(&bytes) {
        Ok(()) => Ok(Some(bytes)),
        Err(e) => Err(Error::bad_data(format!(
            "{} is not valid JSON ({e}): it is the template this session's copy starts from; \
             repair it (nothing written, no copy made)",
            shared.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_files_of_a_session_move_to_its_directory() {
        let listed = vec![
            ".claude/session-state.json".to_owned(),
            ".claude/metrics/m.json".to_owned(),
        ];
        let copy = |s, n| session_copy(&listed, s, n).unwrap();
        assert_eq!(
            copy(Some("abc"), ".claude/session-state.json").as_deref(),
            Some(".claude/sessions/abc/session-state.json")
        );
        assert_eq!(
            copy(Some("abc"), ".claude/metrics/m.json").as_deref(),
            Some(".claude/sessions/abc/metrics/m.json")
        );
        assert_eq!(copy(Some("abc"), ".claude/instruction-history.json"), None);
        assert_eq!(copy(None, ".claude/session-state.json"), None);
        // A bad id matters only where it would name a directory.
        assert_eq!(copy(Some("../x"), ".claude/other.json"), None);
        let e = session_copy(&listed, Some("../x"), ".claude/session-state.json").unwrap_err();
        assert_eq!(e.exit_code(), 64);
    }

    #[test]
    fn the_first_copy_starts_from_the_shared_file_and_is_never_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let shared = root.join("shared.json");
        let copy = root.join(".claude/sessions/a/shared.json");
        let seed_from_shared = |s: &Path, c: &Path| seed_from_shared(root, s, c);
        seed_from_shared(&shared, &copy).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join(".claude/sessions/.gitignore")).unwrap(),
            "*\n"
        );
        assert!(!copy.exists() && copy.parent().unwrap().is_dir());
        std::fs::write(&shared, "{ \"n\": 1 }").unwrap();
        seed_from_shared(&shared, &copy).unwrap();
        assert_eq!(std::fs::read_to_string(&copy).unwrap(), "{ \"n\": 1 }");
        std::fs::write(&copy, "{\"n\": 7}").unwrap();
        seed_from_shared(&shared, &copy).unwrap();
        assert_eq!(std::fs::read_to_string(&copy).unwrap(), "{\"n\": 7}");
        assert_eq!(std::fs::read_to_string(&shared).unwrap(), "{ \"n\": 1 }");
    }

    #[test]
    fn a_broken_template_makes_no_copy_and_names_the_shared_file() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let shared = root.join("shared.json");
        let copy = root.join(".claude/sessions/a/shared.json");
        std::fs::write(&shared, "{\"message_count\": 1\n").unwrap();
        let e = seed_from_shared(root, &shared, &copy).unwrap_err();
        assert_eq!(e.exit_code(), 65);
        assert!(e.to_string().contains(&shared.display().to_string()), "{e}");
        assert!(!copy.exists());
        std::fs::write(&shared, "{\"message_count\": 1}").unwrap();
        seed_from_shared(root, &shared, &copy).unwrap();
        assert_eq!(
            std::fs::read_to_string(&copy).unwrap(),
            "{\"message_count\": 1}"
        );
    }
}
