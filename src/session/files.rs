//! Where a per-session state file lives, and how it comes to exist. A file listed in
//! `per_session` is, for a session `<id>`, `.claude/sessions/<id>/<its path below .claude/>`;
//! the session's first write starts from the shared file as it is then (a template), copied
//! whole and atomically, and the shared file is never touched. Everything is reached through
//! directory handles from the root (see [`crate::dir_handle`]): a co-user's symlink under
//! `.claude/` leads nowhere.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::check_session_id;
use crate::dir_handle::DirHandle;
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

/// Make sure `copy` (the session's file, absolute, below `root/.claude/sessions/`) can be
/// written: its directory exists, and when it does not exist yet but `shared` does, it starts
/// as a copy of `shared`. The copy is linked into place only if nothing is there (two first
/// writes of one session at once: the first copy stays, the second is dropped), so a session's
/// own writes are never overwritten. The template must be valid JSON: a torn or broken shared
/// file is bad data (65) naming it, and no copy is made (the session would otherwise be stuck
/// with it after the shared file is repaired). `.claude/sessions/` of `root` gets a
/// `.gitignore` that keeps the copies out of git.
///
/// Everything goes through directory handles from the root: a symlink at `.claude`,
/// `.claude/sessions` or below is refused (73, naming it), never followed; the template is
/// read with a cap, never from a FIFO or device; the copy is a new file (`O_EXCL`) linked into
/// place.
pub(crate) fn seed_from_shared(root: &Path, shared: &Path, copy: &Path) -> Result<()> {
    let cannot = |path: PathBuf, source: std::io::Error| Error::CannotWrite { path, source };
    let below = copy
        .strip_prefix(root.join(SESSIONS_DIR))
        .map_err(|_| Error::internal(format!("{} is no session's copy", copy.display())))?;
    let (Some(name), Some(parent)) = (below.file_name(), below.parent()) else {
        return Err(Error::internal(format!(
            "{} is no session's copy",
            copy.display()
        )));
    };
    let handle = crate::repo::open_root(root)?;
    let sessions = handle
        .create_dir_all(Path::new(SESSIONS_DIR), 0o775)
        .map_err(|e| cannot(root.join(SESSIONS_DIR), e))?;
    let ignore = OsStr::new(".gitignore");
    if sessions
        .stat(ignore)
        .map_err(|e| cannot(sessions.child_path(ignore), e))?
        .is_none()
    {
        publish(&sessions, ignore, b"*\n").map_err(|e| cannot(sessions.child_path(ignore), e))?;
    }
    let dir = session_dir(&sessions, parent)?;
    if dir
        .stat(name)
        .map_err(|e| cannot(copy.to_owned(), e))?
        .is_some()
    {
        return Ok(());
    }
    let Some(template) = read_template(&handle, root, shared)? else {
        return Ok(());
    };
    publish(&dir, name, &template).map_err(|e| cannot(copy.to_owned(), e))
}

/// How long a session's write waits for a cleanup that holds the session's earlier directory
/// as a tombstone to decide on it (it renames it back or removes it within moments).
const TOMBSTONE_WAIT: Duration = Duration::from_secs(10);

/// The directory `parent` below `.claude/sessions` (its first component the session's id),
/// made when missing. A fresh directory is never made under the id while `session gc` holds
/// the session's earlier one as a tombstone (`.gc-<id>-<pid>`): the session's state is in
/// there, and gc renames it back when the session turns out to be alive, which a fresh
/// directory in its place would prevent (the state stranded in the tombstone, the session
/// restarted from the template; issue 19). So the write waits for gc to decide: back in place
/// (the write goes on in it) or removed (the session starts afresh, as after any cleanup). A
/// tombstone still there after [`TOMBSTONE_WAIT`] (a cleanup that died) is refused (73,
/// naming it) for a human to look at.
///
/// No race is left open: `rename` moves a directory to its tombstone in one step, so when the
/// id is absent and no tombstone is there, gc holds nothing of the session; a directory that
/// exists is used as it is (were it entombed after, the write lands in the tombstone, whose
/// newer time makes gc put it back).
fn session_dir(sessions: &DirHandle, parent: &Path) -> Result<DirHandle> {
    let cannot = |path: PathBuf, source: std::io::Error| Error::CannotWrite { path, source };
    let Some(std::path::Component::Normal(id)) = parent.components().next() else {
        return Err(Error::internal(format!(
            "{} names no session",
            parent.display()
        )));
    };
    let deadline = Instant::now() + TOMBSTONE_WAIT;
    loop {
        let present = sessions
            .stat(id)
            .map_err(|e| cannot(sessions.child_path(id), e))?
            .is_some();
        let tomb = if present {
            None
        } else {
            tombstone_of(sessions, id).map_err(|e| cannot(sessions.path().to_owned(), e))?
        };
        let Some(tomb) = tomb else {
            return sessions
                .create_dir_all(parent, 0o775)
                .map_err(|e| cannot(sessions.child_path(parent), e));
        };
        if Instant::now() >= deadline {
            return Err(cannot(
                sessions.child_path(&tomb),
                std::io::Error::other(format!(
                    "holds the earlier state of session {} for a cleanup (session gc) that \
                     has not finished; if no cleanup runs, rename it back to {} to keep that \
                     state, or remove it",
                    id.to_string_lossy(),
                    id.to_string_lossy()
                )),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A tombstone of session `id` in `sessions` (`.gc-<id>-<pid>`), if there is one.
fn tombstone_of(sessions: &DirHandle, id: &OsStr) -> std::io::Result<Option<OsString>> {
    let prefix = format!(".gc-{}-", id.to_string_lossy());
    Ok(sessions.entries()?.into_iter().find_map(|(name, _)| {
        let pid = name.to_str()?.strip_prefix(&prefix)?;
        let digits = !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit());
        digits.then_some(name)
    }))
}

/// Write `bytes` to a new temp file in `dir` and link it in as `name` unless something has
/// that name by then (then ours is dropped: the first one stays). The mode is a new state
/// file's (0666 less the umask, as open(2) gives it).
fn publish(dir: &DirHandle, name: &OsStr, bytes: &[u8]) -> std::io::Result<()> {
    let (mut tmp, tmp_name) = dir.create_temp(".seed-", ".tmp", 0o666)?;
    let placed = tmp
        .write_all(bytes)
        .and_then(|()| tmp.sync_all())
        .and_then(|()| dir.rename_noreplace(&tmp_name, name));
    match placed {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = dir.remove_file(&tmp_name);
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Ok(())
            } else {
                Err(e)
            }
        }
    }
}

/// How long to wait before reading a broken template a second time: Tractatus' own hooks write
/// the shared files in place, unguarded, and a read may land in the middle of one such write.
const REREAD_AFTER: std::time::Duration = std::time::Duration::from_millis(50);

/// The largest template copied (a state file is far smaller; a larger one is refused, 65).
const TEMPLATE_CAP: u64 = 256 * 1024 * 1024;

/// The shared file's bytes, checked to be JSON (read twice at most); `None` when it does not
/// exist. `shared` is canonical below `root` and is read through handles from the root: a
/// symlink, FIFO or device planted on its way is refused (65, naming it).
fn read_template(handle: &DirHandle, root: &Path, shared: &Path) -> Result<Option<Vec<u8>>> {
    let rel = shared.strip_prefix(root).unwrap_or(shared);
    let (Some(name), Some(parent)) = (rel.file_name(), rel.parent()) else {
        return Ok(None);
    };
    let read = || {
        let failed = |e: std::io::Error| {
            if crate::dir_handle::is_refusal(&e) {
                Error::bad_data(format!(
                    "{e} (the template of this session's copy; nothing written, no copy made)"
                ))
            } else {
                Error::usage(format!(
                    "cannot read {} (the template of this session's copy): {e}",
                    shared.display()
                ))
                .with_source(e)
            }
        };
        match handle.open_dir(parent).map_err(failed)? {
            Some(dir) => dir.read_capped(name, TEMPLATE_CAP).map_err(failed),
            None => Ok(None),
        }
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
