//! The repository's namespace: which locks are this repository's, on a Redis that several
//! repositories share. It is a random id written once into the config file, created only when
//! something is about to lock (looking around creates nothing), and atomically, so that two
//! first uses at once agree on one id.

use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;

use super::file::{CONFIG_FILE, FileSettings, is_refusal, read_existing};
use crate::config::check_namespace;
use crate::dir_handle::DirHandle;
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
pub(crate) const DEFAULT_NAMESPACE: &str = "default";

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
/// first use (atomically: when two processes race, both end up with the winner's id). The file
/// is written through directory handles: `.claude` opened (or made) without following a link,
/// a new temp file (`O_EXCL`) beside the config file, renamed into place only if no file of
/// that name exists, so that a planted symlink is never written through.
pub fn ensure_namespace(root: &Path, settings: &FileSettings) -> Result<String> {
    if let Some(ns) = &settings.namespace {
        check_namespace(ns)?;
        return Ok(ns.clone());
    }
    let path = root.join(CONFIG_FILE);
    // Another process may have created it since `settings` was read (it is created whole, so
    // what is there now is complete).
    if let Some(now) = read_existing(root)? {
        return named(&path, now);
    }
    let ns = uuid::Uuid::new_v4().simple().to_string();
    let body = format!(
        "# tractatus-lock: shared by every clone and mount of this repository; commit it.\n\
         # Two repositories on one Redis never contend as long as their namespaces differ.\n\
         namespace = \"{ns}\"\n"
    );
    let (dir_name, file_name) = CONFIG_FILE.rsplit_once('/').unwrap_or(("", CONFIG_FILE));
    let dir_path = root.join(dir_name);
    let dir = DirHandle::open_root(root)
        .and_then(|r| r.create_dir_all(Path::new(dir_name), 0o777))
        .map_err(|e| cannot_write(&dir_path, e))?;
    let (mut file, tmp) = dir
        .create_temp(".tractatus-lock.", ".tmp", 0o644)
        .map_err(|e| cannot_write(&dir_path, e))?;
    let written = file
        .write_all(body.as_bytes())
        .and_then(|()| {
            use std::os::unix::fs::PermissionsExt;
            // The umask may have taken the read bits; every clone must read it.
            file.set_permissions(std::fs::Permissions::from_mode(0o644))
        })
        .and_then(|()| file.sync_all())
        .and_then(|()| dir.rename_noreplace(&tmp, OsStr::new(file_name)));
    match written {
        Ok(()) => Ok(ns),
        Err(e) => {
            let _ = dir.remove_file(&tmp);
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(cannot_write(&path, e));
            }
            match read_existing(root)? {
                Some(now) => named(&path, now),
                None => Err(Error::internal(format!(
                    "{} vanished while it was made",
                    path.display()
                ))),
            }
        }
    }
}

/// The namespace an existing config file names; one that names none is refused with the line
/// to add.
fn named(path: &Path, settings: FileSettings) -> Result<String> {
    let Some(ns) = settings.namespace else {
        return Err(Error::usage(format!(
            "{} has no `namespace = \"...\"` line: add one (any id shared by every clone of \
             this repository, e.g. `namespace = \"{}\"`) and commit it",
            path.display(),
            uuid::Uuid::new_v4().simple()
        )));
    };
    check_namespace(&ns)?;
    Ok(ns)
}

/// A planted link or non-directory on the way is bad data (65, as when the file is read);
/// anything else the OS said is an internal error, as it always was.
fn cannot_write(path: &Path, source: std::io::Error) -> Error {
    if is_refusal(&source) {
        return Error::bad_data(format!("refusing to write the config file: {source}"))
            .with_source(source);
    }
    Error::internal(format!("cannot create {}: {source}", path.display())).with_source(source)
}
