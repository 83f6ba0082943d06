//! The one entry every front end (the CLI, the Node addon) goes through: find the repository
//! above a directory, resolve its settings, and choose the backend: Redis when configured, else
//! local file locks, refused on a network filesystem (they would protect one machine while the
//! checkout is shared by several). Discovering writes nothing; the namespace file and the lock
//! directory are created only when something is about to lock. The library never prints: what a
//! user should be told (no Redis, the shared namespace outside a repository) is returned.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::repo;
use crate::settings::{Flags, Namespace, Resolved, ensure_namespace, read_settings, resolve};
use crate::state::StateFile;
use crate::{Coordinator, Identity};

/// Told to the user when locks are local: they do not reach other machines.
pub const NO_REDIS_NOTICE: &str =
    "no Redis configured; using local file locks (protects this machine only)";

/// A repository (or none) seen from a working directory, with its settings resolved.
#[derive(Debug, Clone)]
pub struct Workspace {
    root: Option<PathBuf>,
    cwd: PathBuf,
    resolved: Resolved,
}

impl Workspace {
    /// Find the repository above `cwd`, resolve settings (flags over env over
    /// `.claude/tractatus-lock.toml` over defaults). Writes nothing.
    pub fn discover(
        cwd: &Path,
        flags: &Flags,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Workspace> {
        let root = repo::find_root(cwd);
        let resolved = resolve(flags, env, root.as_deref())?;
        Ok(Workspace {
            root,
            cwd: cwd.to_path_buf(),
            resolved,
        })
    }

    /// The repository root, if `cwd` is inside one.
    pub fn root(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    /// The resolved settings.
    pub fn resolved(&self) -> &Resolved {
        &self.resolved
    }

    /// Redis, or local locks (refused on a network filesystem unless allowed), ready to lock:
    /// a fresh repository on Redis gets its namespace file here. The library never prints: a
    /// notice such as "no Redis configured; using local file locks (protects this machine
    /// only)" is returned for the caller to show.
    pub async fn coordinator(
        &self,
        identity: Identity,
        allow_network_fs: bool,
    ) -> Result<(Coordinator, Option<String>)> {
        let mut config = self.resolved.config.clone();
        if config.nodes.is_empty() {
            let root = self.local_root(allow_network_fs)?;
            let dir = repo::work_dir(root)?.join("locks");
            let coordinator = Coordinator::local(config, identity, dir)?;
            return Ok((coordinator, Some(NO_REDIS_NOTICE.to_owned())));
        }
        if let (Namespace::Unset, Some(root)) = (&self.resolved.namespace, &self.root) {
            config.namespace = ensure_namespace(root, &read_settings(root)?)?;
        }
        let notice = self.namespace_notice();
        Ok((Coordinator::connect(config, identity).await?, notice))
    }

    /// The coordinator for looking only (status, log, break): `None` when nothing can be held
    /// here yet (a repository on Redis with no namespace, or local locks never taken), so that
    /// looking creates no file.
    pub async fn observer(
        &self,
        identity: Identity,
        allow_network_fs: bool,
    ) -> Result<Option<(Coordinator, Option<String>)>> {
        let never_locked = if self.resolved.config.nodes.is_empty() {
            let root = self.local_root(allow_network_fs)?;
            !root.join(repo::WORK_DIR).join("locks").is_dir()
        } else {
            self.resolved.namespace == Namespace::Unset
        };
        if never_locked {
            return Ok(None);
        }
        self.coordinator(identity, allow_network_fs).await.map(Some)
    }

    /// The state file at `path` (absolute or relative to cwd).
    pub fn state_file(&self, path: &Path) -> Result<StateFile> {
        StateFile::open(self.repo_root(path)?, &self.cwd, path)
    }

    /// The lock name of a file (path relative to the root).
    pub fn lock_name(&self, path: &Path) -> Result<String> {
        repo::lock_name_for(self.repo_root(path)?, &self.cwd, path)
    }

    fn repo_root(&self, for_path: &Path) -> Result<&Path> {
        self.root.as_deref().ok_or_else(|| {
            Error::usage(format!(
                "{}: no repository here (no .git or .claude above {})",
                for_path.display(),
                self.cwd.display()
            ))
        })
    }

    /// The root to keep local locks in, checked to be on a local filesystem.
    fn local_root(&self, allow_network_fs: bool) -> Result<&Path> {
        let root = self.root.as_deref().ok_or_else(|| {
            Error::usage(
                "no Redis configured (--redis or TRACTATUS_REDIS) and no repository here (no \
                 .git or .claude above this directory) to keep local locks in",
            )
        })?;
        if let Some(fs) = crate::local::network_filesystem(root)
            && !allow_network_fs
        {
            return Err(Error::unavailable_one(
                "local locks",
                format!(
                    "{} is on a network filesystem ({fs}); OS file locks there do not protect \
                     other machines: configure Redis (--redis or TRACTATUS_REDIS), or pass \
                     --allow-network-fs if only this machine writes",
                    root.display()
                ),
            ));
        }
        Ok(root)
    }

    /// Outside a repository the locks are in a namespace everyone outside one shares: say so.
    fn namespace_notice(&self) -> Option<String> {
        (self.resolved.namespace == Namespace::Default).then(|| {
            format!(
                "no repository here (no .git or .claude above {}); using the shared namespace \
                 '{}' (choose one with --namespace or TRACTATUS_NAMESPACE)",
                self.cwd.display(),
                crate::settings::DEFAULT_NAMESPACE
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn looking_at_a_fresh_repository_creates_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join(".git")).unwrap();
        let ws = Workspace::discover(tmp.path(), &Flags::default(), &|_| None).unwrap();
        assert_eq!(
            ws.root(),
            Some(tmp.path().canonicalize().unwrap().as_path())
        );
        assert!(
            ws.observer(Identity::current("t"), false)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            1,
            "only .git"
        );
        let (c, notice) = ws.coordinator(Identity::current("t"), false).await.unwrap();
        assert!(c.is_local());
        assert_eq!(notice.as_deref(), Some(NO_REDIS_NOTICE));
        assert!(
            ws.observer(Identity::current("t"), false)
                .await
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn lock_names_need_a_repository() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = Workspace::discover(tmp.path(), &Flags::default(), &|_| None).unwrap();
        let e = ws.lock_name(Path::new("x.json")).unwrap_err();
        assert_eq!(e.exit_code(), 64);
        assert!(e.to_string().contains("no repository here"), "{e}");
    }
}
