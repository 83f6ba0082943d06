//! Throwaway repositories: a temp directory that `tractatus` takes for a repository root.

use std::path::{Path, PathBuf};

/// A temp directory holding `.git/` and `.claude/`, removed when dropped.
pub struct Repo {
    dir: tempfile::TempDir,
}

impl Default for Repo {
    fn default() -> Self {
        Self::new()
    }
}

impl Repo {
    /// A fresh repository; panics when no temp directory can be made.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join(".git")).expect("mkdir .git");
        std::fs::create_dir_all(dir.path().join(".claude")).expect("mkdir .claude");
        Repo { dir }
    }

    /// The root, canonical (as `tractatus` resolves it).
    pub fn path(&self) -> PathBuf {
        self.dir.path().canonicalize().expect("canonical repo path")
    }

    /// `rel` under the root.
    pub fn file(&self, rel: &str) -> PathBuf {
        self.path().join(rel)
    }

    /// Write `text` to `rel`, making its directories.
    pub fn write(&self, rel: &str, text: &str) {
        let p = self.file(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    }

    /// The text of `rel`.
    pub fn read(&self, rel: &str) -> String {
        let p = self.file(rel);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
    }

    /// The namespace the first use of a lock wrote into `.claude/tractatus-lock.toml`.
    pub fn namespace(&self) -> String {
        let text = self.read(".claude/tractatus-lock.toml");
        let settings: toml::Table = text.parse().expect("config file parses");
        settings["namespace"]
            .as_str()
            .expect("namespace is a string")
            .to_owned()
    }
}

/// Every file and directory under `dir`, relative to it, sorted; panics on an unreadable
/// directory.
pub fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p.clone());
            }
            all.push(p.strip_prefix(dir).expect("below dir").to_path_buf());
        }
    }
    all.sort();
    all
}
