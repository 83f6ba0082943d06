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
pub const WORK_DIR: &str = ".claude/.tractatus";

/// The repository root above `start`: the nearest ancestor holding `.git`, else the nearest
/// holding a `.claude` directory. `None` when neither exists.
pub fn find_root(start: &Path) -> Option<PathBuf> {
    let start = start.canonicalize().ok()?;
    start
        .ancestors()
        .find(|d| d.join(".git").exists())
        .or_else(|| start.ancestors().find(|d| d.join(".claude").is_dir()))
        .map(Path::to_path_buf)
}

/// The lock name of `path` (absolute, or relative to `cwd`): its path relative to `root`,
/// with `/` separators. The file itself need not exist; its directory must.
pub fn lock_name_for(root: &Path, cwd: &Path, path: &Path) -> Result<String> {
    let abs = resolve(root, cwd, path)?;
    let rel = abs.strip_prefix(root).map_err(|_| {
        Error::usage(format!(
            "{} is outside the repository at {}",
            path.display(),
            root.display()
        ))
    })?;
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

/// The canonical absolute path of `path` inside `root`: a symlink at the last component is
/// followed (a state file that is a link is locked and written as the file it points to), the
/// directory is canonicalized (symlinks and `..` resolve; directories that do not exist yet are
/// kept as named), and paths outside `root` are refused.
pub fn resolve(root: &Path, cwd: &Path, path: &Path) -> Result<PathBuf> {
    let mut joined = cwd.join(path);
    for _ in 0..40 {
        match std::fs::symlink_metadata(&joined) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&joined).map_err(|e| {
                    Error::usage(format!("cannot read the link {}: {e}", path.display()))
                        .with_source(e)
                })?;
                joined = joined.parent().unwrap_or(Path::new("/")).join(target);
            }
            _ => break,
        }
    }
    let file_name = joined
        .file_name()
        .filter(|n| *n != "..")
        .ok_or_else(|| Error::usage(format!("{} does not name a file", path.display())))?
        .to_owned();
    let dir = canonicalize_existing(joined.parent().unwrap_or(Path::new("/")), path)?;
    let abs = dir.join(file_name);
    if !abs.starts_with(root) || abs == root {
        return Err(Error::usage(format!(
            "{} is outside the repository at {}: state files must live inside it",
            path.display(),
            root.display()
        )));
    }
    Ok(abs)
}

/// `dir` canonicalized as far as it exists, with the missing tail appended as named.
fn canonicalize_existing(dir: &Path, for_path: &Path) -> Result<PathBuf> {
    let mut missing = Vec::new();
    let mut cur = dir;
    loop {
        match cur.canonicalize() {
            Ok(mut found) => {
                found.extend(missing.iter().rev());
                return Ok(found);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let (Some(name), Some(parent)) = (cur.file_name(), cur.parent()) else {
                    return Err(Error::usage(format!(
                        "directory of {} not found: {e}",
                        for_path.display()
                    ))
                    .with_source(e));
                };
                missing.push(name.to_owned());
                cur = parent;
            }
            Err(e) => {
                return Err(Error::usage(format!(
                    "directory of {} cannot be read: {e}",
                    for_path.display()
                ))
                .with_source(e));
            }
        }
    }
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
    }
}
