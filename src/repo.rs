//! Where the repository is and what its locks are called: the root (git top level, else the
//! nearest ancestor holding `.claude/`), the lock name of a file (its path relative to the root,
//! so two machines mounting one checkout at different places contend for the same lock), and
//! the private working directory. The config file and the namespace are the settings' (see
//! [`crate::settings`]).

use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};

use crate::config::check_lock_name;
use crate::dir_handle::DirHandle;
use crate::error::{Error, Result};

pub use crate::settings::CONFIG_FILE;
/// Private working directory (git-ignored), relative to the repository root.
pub(crate) const WORK_DIR: &str = ".claude/.tractatus";

/// The repository root above `start`: the nearest ancestor holding `.git`, else the nearest
/// holding a `.claude` directory. `None` when neither exists.
pub(crate) fn find_root(start: &Path) -> Option<PathBuf> {
    let start = start.canonicalize().ok()?;
    start
        .ancestors()
        .find(|d| d.join(".git").exists())
        .or_else(|| start.ancestors().find(|d| d.join(".claude").is_dir()))
        .map(Path::to_path_buf)
}

/// The lock name of `path` (absolute, or relative to `cwd`): its path relative to `root`,
/// with `/` separators. Lexical (see [`below_root`]): nothing below the root is looked at, so
/// the file and its directory need not exist.
pub(crate) fn lock_name_for(root: &Path, cwd: &Path, path: &Path) -> Result<String> {
    let rel = below_root(root, cwd, path)?;
    let parts: Vec<&str> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect();
    let name = parts.join("/");
    check_lock_name(&name)?;
    Ok(name)
}

/// The absolute path of `path` inside `root` (`root` joined with [`below_root`]'s answer).
/// Paths outside `root` are refused (64). Nothing below the root is followed: a symlink there
/// is refused when the file is opened (see [`crate::state::StateFile::open`]).
pub fn resolve(root: &Path, cwd: &Path, path: &Path) -> Result<PathBuf> {
    Ok(root.join(below_root(root, cwd, path)?))
}

/// `path` (absolute, or relative to `cwd`) relative to the canonical `root`: plain names only,
/// `.` and `..` folded lexically. Symlinks *above* the root are the user's own choice of path
/// and are followed (a prefix of the path that canonicalizes to `root` is the root); nothing
/// below it is resolved here, so a planted symlink cannot move the answer. Outside the root,
/// or the root itself, is a usage error (64).
pub fn below_root(root: &Path, cwd: &Path, path: &Path) -> Result<PathBuf> {
    let outside = || {
        Error::usage(format!(
            "{} is outside the repository at {}: state files must live inside it",
            path.display(),
            root.display()
        ))
    };
    let joined = normalize(&cwd.join(path));
    let rel = match joined.strip_prefix(root) {
        Ok(rel) => rel.to_path_buf(),
        // Reached through a symlink above the root (a checkout mounted or linked elsewhere):
        // the shortest prefix that is the root, so a link below the root back to it is never
        // taken for the root.
        Err(_) => joined
            .ancestors()
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .find(|a| a.canonicalize().is_ok_and(|c| c == root))
            .and_then(|a| joined.strip_prefix(a).ok())
            .map(Path::to_path_buf)
            .ok_or_else(outside)?,
    };
    if rel.as_os_str().is_empty() {
        return Err(outside());
    }
    Ok(rel)
}

/// `path` with `.` dropped and `..` taking off the component before it (at `/`, nothing), as
/// text: no link is looked at.
pub(crate) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// The private working directory of `root` (`.claude/.tractatus`), created with a
/// `.gitignore` that keeps everything in it out of git. Path form of `work_dir_at`, for
/// callers not yet on directory handles.
pub fn work_dir(root: &Path) -> Result<PathBuf> {
    let handle = open_root(root)?;
    work_dir_at(&handle, None)?;
    Ok(root.join(WORK_DIR))
}

/// The repository root, opened once as a directory handle: everything below it is reached
/// through handles that never follow a symlink (see [`crate::dir_handle`]).
pub(crate) fn open_root(root: &Path) -> Result<DirHandle> {
    DirHandle::open_root(root).map_err(|e| Error::CannotWrite {
        path: root.to_path_buf(),
        source: e,
    })
}

/// The private working directory (`.claude/.tractatus`) below `root`'s handle, or its
/// subdirectory `sub` (`locks`, `fence`, `sessions`), created when missing (0775 less the
/// umask). Its `.gitignore` is written by temp file and rename, so a full disk cannot leave it
/// empty (and the working directory tracked by git). A symlink on the way is refused (73,
/// naming it): it is our bookkeeping, and a co-user may have planted it.
pub(crate) fn work_dir_at(root: &DirHandle, sub: Option<&str>) -> Result<DirHandle> {
    let cannot = |path: PathBuf, e: std::io::Error| Error::CannotWrite { path, source: e };
    let dir = root
        .create_dir_all(Path::new(WORK_DIR), 0o775)
        .map_err(|e| cannot(root.child_path(WORK_DIR), e))?;
    let ignore = OsStr::new(".gitignore");
    let holds = dir.read_capped(ignore, 64).ok().flatten();
    if holds.as_deref() != Some(b"*\n".as_slice()) {
        let (mut f, tmp) = dir
            .create_temp(".gitignore.", ".tmp", 0o664)
            .map_err(|e| cannot(dir.child_path(ignore), e))?;
        let written = std::io::Write::write_all(&mut f, b"*\n")
            .and_then(|()| f.sync_all())
            .and_then(|()| dir.rename(&tmp, ignore));
        if let Err(e) = written {
            let _ = dir.remove_file(&tmp);
            return Err(cannot(dir.child_path(ignore), e));
        }
    }
    match sub {
        None => Ok(dir),
        Some(sub) => dir
            .create_dir_all(Path::new(sub), 0o775)
            .map_err(|e| cannot(dir.child_path(sub), e)),
    }
}

/// This process's umask (see [`crate::sys::umask`]).
pub(crate) fn process_umask() -> u32 {
    crate::sys::umask()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_relative_to_the_root_however_reached() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join(".claude/metrics")).unwrap();
        let name = lock_name_for(&root, &root, Path::new(".claude/metrics/x.json")).unwrap();
        assert_eq!(name, ".claude/metrics/x.json");
        let from_sub = lock_name_for(&root, &root.join(".claude"), Path::new("metrics/x.json"));
        assert_eq!(from_sub.unwrap(), name);
        let dotted = lock_name_for(&root, &root, Path::new(".claude/metrics/../metrics/x.json"));
        assert_eq!(dotted.unwrap(), name);
        let outside = lock_name_for(&root, &root, Path::new("../x.json")).unwrap_err();
        assert_eq!(outside.exit_code(), 64);
        let outside = lock_name_for(&root, &root, Path::new("/etc/x.json")).unwrap_err();
        assert_eq!(outside.exit_code(), 64);
        let at_root = lock_name_for(&root, &root, Path::new(".claude/..")).unwrap_err();
        assert_eq!(at_root.exit_code(), 64);
        // Through a symlink above the root: the user's path, the same name.
        let links = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(&root, links.path().join("co")).unwrap();
        let linked = links.path().join("co/.claude/metrics/x.json");
        assert_eq!(lock_name_for(&root, &root, &linked).unwrap(), name);
        // A symlink below the root is not resolved: its own name, refused when opened.
        std::os::unix::fs::symlink(root.join(".claude"), root.join("l")).unwrap();
        let below = lock_name_for(&root, &root, Path::new("l/metrics/x.json")).unwrap();
        assert_eq!(below, "l/metrics/x.json");
    }
}
