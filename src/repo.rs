//! Where the repository is and what its locks are called: the root (git top level, else the
//! nearest ancestor holding `.claude/`), the lock name of a file (its path relative to the root,
//! so two machines mounting one checkout at different places contend for the same lock), the
//! namespace, and the config file `.claude/tractatus-lock.toml`.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use crate::config::{check_lock_name, check_namespace};
use crate::error::{Error, Result};

/// The config file, relative to the repository root.
pub const CONFIG_FILE: &str = ".claude/tractatus-lock.toml";
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
                    )));
                };
                missing.push(name.to_owned());
                cur = parent;
            }
            Err(e) => {
                return Err(Error::usage(format!(
                    "directory of {} cannot be read: {e}",
                    for_path.display()
                )));
            }
        }
    }
}

/// Settings from `.claude/tractatus-lock.toml`. Every field is optional; the environment and
/// flags override it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    /// The repository's namespace: shared by every clone and mount of it.
    pub namespace: Option<String>,
    /// Redis URLs (without passwords: use `TRACTATUS_REDIS_PASSWORD(_FILE)`).
    pub redis: Option<Vec<String>>,
    /// Lease TTL, like `10s`.
    pub ttl: Option<String>,
    /// Default wait, like `30s`.
    pub wait: Option<String>,
    /// Longest hold, like `1h`.
    pub max_hold: Option<String>,
    /// Per-node timeout, like `250ms`.
    pub node_timeout: Option<String>,
    /// Connect timeout, like `1s`.
    pub connect_timeout: Option<String>,
    /// Redlock restart quarantine, like `10s` (at least the longest TTL of any client).
    pub quarantine: Option<String>,
    /// PEM file of the CA that signed the Redis servers' TLS certificates.
    pub redis_ca_file: Option<String>,
}

/// Read the config file of `root`; an absent file gives empty settings.
pub fn read_settings(root: &Path) -> Result<FileSettings> {
    let path = root.join(CONFIG_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text)
            .map_err(|e| Error::usage(format!("bad {}: {}", path.display(), one_line(&e)))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileSettings::default()),
        Err(e) => Err(Error::usage(format!("cannot read {}: {e}", path.display()))),
    }
}

fn one_line(e: &impl std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The repository's namespace from its config file, creating the file with a fresh one on
/// first use (atomically: when two processes race, both end up with the winner's id).
pub fn ensure_namespace(root: &Path, settings: &FileSettings) -> Result<String> {
    if let Some(ns) = &settings.namespace {
        check_namespace(ns)?;
        return Ok(ns.clone());
    }
    let path = root.join(CONFIG_FILE);
    if path.exists() {
        // Another process may have created it since `settings` was read (it is created whole,
        // so what is there now is complete).
        if let Some(ns) = read_settings(root)?.namespace {
            check_namespace(&ns)?;
            return Ok(ns);
        }
        return Err(Error::usage(format!(
            "{} has no `namespace = \"...\"` line: add one (any id shared by every clone of this repository)",
            path.display()
        )));
    }
    let ns = uuid::Uuid::new_v4().simple().to_string();
    let dir = root.join(".claude");
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::internal(format!("cannot create {}: {e}", dir.display())))?;
    let body = format!(
        "# tractatus-lock: shared by every clone and mount of this repository; commit it.\n\
         # Two repositories on one Redis never contend as long as their namespaces differ.\n\
         namespace = \"{ns}\"\n"
    );
    let tmp = tempfile::NamedTempFile::new_in(&dir)
        .and_then(|mut t| t.write_all(body.as_bytes()).map(|()| t))
        .and_then(|t| {
            use std::os::unix::fs::PermissionsExt;
            t.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))
                .map(|()| t)
        })
        .map_err(|e| Error::internal(format!("cannot write in {}: {e}", dir.display())))?;
    // persist_noclobber: link(2) fails if another process created the file first.
    match tmp.persist_noclobber(&path) {
        Ok(_) => Ok(ns),
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => read_settings(root)?
            .namespace
            .ok_or_else(|| Error::usage(format!("{} has no namespace line", path.display()))),
        Err(e) => Err(Error::internal(format!(
            "cannot create {}: {}",
            path.display(),
            e.error
        ))),
    }
}

/// The private working directory of `root` (`.claude/.tractatus`), created with a
/// `.gitignore` that keeps everything in it out of git.
pub fn work_dir(root: &Path) -> Result<PathBuf> {
    let dir = root.join(WORK_DIR);
    if !dir.join(".gitignore").exists() {
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(dir.join(".gitignore"), "*\n"))
            .map_err(|source| Error::CannotWrite {
                path: dir.clone(),
                source,
            })?;
    }
    Ok(dir)
}

/// This process's umask, from `/proc/self/status` (022 when it cannot be read). Reading it
/// this way does not change it, unlike `umask(2)`, which other threads could observe.
pub(crate) fn process_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
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
