//! What `session gc` holds while it collects one session (issue 19 item 5): the leases of the
//! session's state-file copies, the very locks a write of those copies takes, and a print of
//! its directory taken at the first look.
//!
//! A write reads its copy and renames the new document over it under the copy's lease. Were gc
//! to move the directory to its tombstone between the two, the rename would land in the
//! tombstone, possibly after gc's second look, and gc would remove a write that was reported
//! committed. Holding every copy's lease from before the move until after the removal (or the
//! move back), gc never meets a write half-way: a write that waited for the lease then finds
//! its directory gone (73, and the CLI's second try seeds a fresh copy) or back in place.
//!
//! The print (every entry's inode, size, mode and times, below the directory) is compared at
//! the second look: a write since the first look, however close in time, changes it (a commit
//! is a new inode), where a modification time compared in milliseconds could miss it.

use std::ffi::OsStr;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::time::Duration;

use rustix::fs::FileType;

use super::session_copy;
use crate::dir_handle::DirHandle;
use crate::settings::SESSIONS_DIR;

/// How long gc waits for the locks of one session's copies (all of them together) before it
/// leaves that session for a later run: a write holds its copy's lock for milliseconds, a
/// `lock run` or `withLock` on it for as long as its command runs.
pub(super) const COPY_LOCK_WAIT: Duration = Duration::from_secs(2);

/// The most files of one session whose locks gc takes; a session with more is left for a look
/// by hand (a session's directory holds a few state files).
const MAX_COPY_LOCKS: usize = 64;

/// How deep below a session's directory its files are looked for.
const COPY_DEPTH: usize = 8;

/// The lock names of session `id`'s copies, sorted: the copy of each per-session file, and
/// every file already in its directory (a write naming a file there by its path locks it under
/// that name). Temp files (names starting with `.`) are no state files. `Err` saying why when
/// there are too many to lock.
pub(super) fn copy_lock_names(
    sessions: &DirHandle,
    id: &str,
    per_session: &[String],
) -> std::result::Result<Vec<String>, String> {
    let mut names: Vec<String> = per_session
        .iter()
        .filter_map(|p| session_copy(per_session, Some(id), p).ok().flatten())
        .collect();
    if let Ok(Some(top)) = sessions.open_dir(Path::new(id)) {
        files_below(&top, &format!("{SESSIONS_DIR}/{id}"), 0, &mut names);
    }
    names.sort_unstable();
    names.dedup();
    if names.len() > MAX_COPY_LOCKS {
        return Err(format!(
            "its directory holds more than {MAX_COPY_LOCKS} files, whose locks gc does not take \
             all at once; remove it by hand when the session is over"
        ));
    }
    Ok(names)
}

/// Collect the lock names of the regular files below `dir` (`prefix` its lock name), depth
/// first, stopping a little past the cap so that an overfull directory is seen as such.
fn files_below(dir: &DirHandle, prefix: &str, depth: usize, names: &mut Vec<String>) {
    for (entry, kind) in dir.entries().unwrap_or_default() {
        if names.len() > MAX_COPY_LOCKS {
            return;
        }
        let Some(name) = entry.to_str().filter(|n| !n.starts_with('.')) else {
            continue;
        };
        let lock = format!("{prefix}/{name}");
        if kind == FileType::RegularFile && crate::config::check_lock_name(&lock).is_ok() {
            names.push(lock);
        } else if kind == FileType::Directory
            && depth < COPY_DEPTH
            && let Ok(Some(sub)) = dir.open_dir(Path::new(name))
        {
            files_below(&sub, &lock, depth + 1, names);
        }
    }
}

/// The most entries [`print_of`] looks at (as `newest_mtime` in gc.rs).
const PRINT_ENTRIES: usize = 100_000;
const PRINT_DEPTH: usize = 64;

/// A print of everything below the directory `name` of `dir` (names, kinds, inodes, sizes,
/// modes, modification and change times), through handles, never through a link; 0 when it is
/// no directory. The directory's own stat is left out: renaming it to its tombstone changes its
/// change time, and nothing else of it tells of a write that its entries do not.
pub(super) fn print_of(dir: &DirHandle, name: &OsStr) -> u64 {
    let mut h = DefaultHasher::new();
    if let Ok(Some(top)) = dir.open_dir(Path::new(name)) {
        let mut budget = PRINT_ENTRIES;
        print_below(&top, 0, &mut budget, &mut h);
    }
    h.finish()
}

fn print_below(dir: &DirHandle, depth: usize, budget: &mut usize, h: &mut DefaultHasher) {
    let mut entries = dir.entries().unwrap_or_default();
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    (depth, entries.len()).hash(h);
    for (entry, kind) in entries {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        entry.hash(h);
        if let Ok(Some(s)) = dir.stat(&entry) {
            (s.st_ino, s.st_size, s.st_mode).hash(h);
            (s.st_mtime, s.st_mtime_nsec, s.st_ctime, s.st_ctime_nsec).hash(h);
        }
        if kind == FileType::Directory
            && depth < PRINT_DEPTH
            && let Ok(Some(sub)) = dir.open_dir(Path::new(&entry))
        {
            print_below(&sub, depth + 1, budget, h);
        }
    }
}

/// Test-only, read in debug builds alone: with `TRACTATUS_TEST_GC_PAUSE=<path>`, gc, having
/// decided to remove a session's tombstone (its copies' locks held), creates `<path>.reached`
/// and waits until `<path>.go` exists (looked at every 10 ms, at most 30 s) before removing it.
/// The integration tests prove with it that no write commits in that gap. Release builds
/// ignore the variable.
pub(super) async fn pause_before_removal_for_test() {
    if !cfg!(debug_assertions) {
        return;
    }
    let Some(path) = std::env::var_os("TRACTATUS_TEST_GC_PAUSE").filter(|p| !p.is_empty()) else {
        return;
    };
    let with = |ext: &str| {
        let mut p = path.clone();
        p.push(ext);
        std::path::PathBuf::from(p)
    };
    let _ = std::fs::write(with(".reached"), "");
    for _ in 0..3000 {
        if with(".go").exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sessions_copies_are_its_per_session_files_and_the_files_in_its_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let dir = root.join(SESSIONS_DIR).join("s1");
        std::fs::create_dir_all(dir.join("metrics")).unwrap();
        std::fs::write(dir.join("other.json"), "{}").unwrap();
        std::fs::write(dir.join("metrics/m.json"), "{}").unwrap();
        std::fs::write(dir.join(".other.json.tractatus-x.tmp"), "{}").unwrap();
        let sessions = crate::repo::open_root(root)
            .unwrap()
            .open_dir(Path::new(SESSIONS_DIR))
            .unwrap()
            .unwrap();
        let per_session = [".claude/session-state.json".to_owned()];
        let names = copy_lock_names(&sessions, "s1", &per_session).unwrap();
        assert_eq!(
            names,
            [
                ".claude/sessions/s1/metrics/m.json",
                ".claude/sessions/s1/other.json",
                ".claude/sessions/s1/session-state.json",
            ]
        );
        for i in 0..MAX_COPY_LOCKS {
            std::fs::write(dir.join(format!("f{i}.json")), "{}").unwrap();
        }
        let e = copy_lock_names(&sessions, "s1", &per_session).unwrap_err();
        assert!(e.contains("more than 64 files"), "{e}");
    }

    #[test]
    fn the_print_changes_with_a_commit_and_not_with_the_tombstones_rename() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let dir = root.join(SESSIONS_DIR).join("s1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("s.json"), "{\"n\": 1}").unwrap();
        let sessions = crate::repo::open_root(root)
            .unwrap()
            .open_dir(Path::new(SESSIONS_DIR))
            .unwrap()
            .unwrap();
        let first = print_of(&sessions, OsStr::new("s1"));
        std::fs::rename(&dir, root.join(SESSIONS_DIR).join(".gc-s1-1")).unwrap();
        assert_eq!(print_of(&sessions, OsStr::new(".gc-s1-1")), first);
        // A commit: same size, same content even, but a new file renamed into place.
        let tomb = root.join(SESSIONS_DIR).join(".gc-s1-1");
        std::fs::write(tomb.join(".t"), "{\"n\": 1}").unwrap();
        std::fs::rename(tomb.join(".t"), tomb.join("s.json")).unwrap();
        assert_ne!(print_of(&sessions, OsStr::new(".gc-s1-1")), first);
    }
}
