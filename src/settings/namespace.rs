//! The repository's namespace: which locks are this repository's, on a Redis that several
//! repositories share. It is a random id written once into the config file, created only when
//! something is about to lock (looking around creates nothing), and atomically, so that two
//! first uses at once agree on one id.

use std::io::Write;
use std::path::Path;

use super::file::{CONFIG_FILE, FileSettings, read_settings};
use crate::config::check_namespace;
use crate::error::{Error, Result};

/// Which namespace the locks are in, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespace {
    /// `--namespace` or `TRACTATUS_NAMESPACE`.
    Given(String),
    /// `namespace = "..."` in the repository's config file.
    File(String),
    /// A repository whose config file names none yet: the first lock on Redis writes a fresh
    /// one (see [`ensure_namespace`]); until then nothing can be held in it.
    Unset,
    /// Outside any repository: the namespace `default`, shared by everyone who is outside one.
    Default,
}

/// The namespace used outside any repository.
pub const DEFAULT_NAMESPACE: &str = "default";

impl Namespace {
    /// The namespace's name; `None` while [`Namespace::Unset`].
    pub fn name(&self) -> Option<&str> {
        match self {
            Namespace::Given(n) | Namespace::File(n) => Some(n),
            Namespace::Default => Some(DEFAULT_NAMESPACE),
            Namespace::Unset => None,
        }
    }
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
            "{} has no `namespace = \"...\"` line: add one (any id shared by every clone of \
             this repository, e.g. `namespace = \"{}\"`) and commit it",
            path.display(),
            uuid::Uuid::new_v4().simple()
        )));
    }
    let ns = uuid::Uuid::new_v4().simple().to_string();
    let dir = root.join(".claude");
    std::fs::create_dir_all(&dir).map_err(|e| cannot_write(&dir, e))?;
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
        .map_err(|e| cannot_write(&dir, e))?;
    // persist_noclobber: link(2) fails if another process created the file first.
    match tmp.persist_noclobber(&path) {
        Ok(_) => Ok(ns),
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => read_settings(root)?
            .namespace
            .ok_or_else(|| Error::usage(format!("{} has no namespace line", path.display()))),
        Err(e) => Err(cannot_write(&path, e.error)),
    }
}

fn cannot_write(path: &Path, source: std::io::Error) -> Error {
    Error::internal(format!("cannot create {}: {source}", path.display())).with_source(source)
}
