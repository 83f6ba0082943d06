//! The one entry every front end (the CLI, the Node addon) goes through: find the repository
//! above a directory, resolve its settings, and choose the backend: Redis when configured, else
//! local file locks, refused on a network filesystem (they would protect one machine while the
//! checkout is shared by several). Discovering writes nothing; the namespace file and the lock
//! directory are created only when something is about to lock. The library never prints: what a
//! user should be told (no Redis, the shared namespace outside a repository) is returned.
//!
//! It also knows the session a call belongs to (`--session` or `TRACTATUS_SESSION_ID`): a state
//! file listed in `per_session` is that session's own copy under `.claude/sessions/<id>/` (see
//! [`crate::session`]), for every front end alike.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::repo;
use crate::session::{LocalSessions, SessionStore, Sessions, seed_from_shared, session_copy};
use crate::settings::{Flags, Namespace, Resolved, ensure_namespace, read_settings, resolve};
use crate::state::StateFile;
use crate::{Coordinator, Identity};

mod status;

/// Told to the user when locks are local: they do not reach other machines.
pub(crate) const NO_REDIS_NOTICE: &str =
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
            let locks = repo::work_dir_at(&repo::open_root(root)?, Some("locks"))?;
            let coordinator = Coordinator::local_in(config, identity, locks);
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
            // Through handles: a symlinked `.claude` or lock directory is refused (73), not
            // looked through.
            let locks = Path::new(repo::WORK_DIR).join("locks");
            repo::open_root(root)?
                .open_dir(&locks)
                .map_err(|source| Error::CannotWrite {
                    path: root.join(&locks),
                    source,
                })?
                .is_none()
        } else {
            self.resolved.namespace == Namespace::Unset
        };
        if never_locked {
            return Ok(None);
        }
        self.coordinator(identity, allow_network_fs).await.map(Some)
    }

    /// `path` (absolute or relative to cwd) resolved once for this call: its place in the
    /// repository, its lock name and, for a session, its own copy. Lexical: nothing below the
    /// root is looked at here; the file is opened (through handles, refusing a symlink) by
    /// [`Workspace::state_file_at`] and the others, each time they are called.
    pub fn resolve(&self, path: &Path) -> Result<ResolvedPath> {
        let root = self.repo_root(path)?;
        let rel = repo::below_root(root, &self.cwd, path)?;
        let shared_name = repo::lock_name_for(root, root, &rel)?;
        let copy = if self.session().is_none() || self.resolved.per_session.is_empty() {
            None
        } else {
            session_copy(&self.resolved.per_session, self.session(), &shared_name)?
        };
        Ok(ResolvedPath {
            root: root.to_path_buf(),
            given: path.to_path_buf(),
            rel,
            shared_name,
            copy,
        })
    }

    /// The state file at `path` (absolute or relative to cwd), ready to be written: for a
    /// session, a file listed in `per_session` is the session's own copy, whose directory is
    /// made here and which starts as a copy of the shared file when it does not exist yet.
    pub fn state_file(&self, path: &Path) -> Result<StateFile> {
        self.state_file_at(&self.resolve(path)?)
    }

    /// [`Workspace::state_file`] of a path already resolved (opened afresh at each call).
    pub fn state_file_at(&self, at: &ResolvedPath) -> Result<StateFile> {
        match at.copy_file()? {
            Some(file) => {
                seed_from_shared(&at.root, &at.shared_path(), file.path())?;
                Ok(file)
            }
            None => at.shared_file(),
        }
    }

    /// The state file a read of `path` sees: the session's own copy once it exists, else the
    /// file it would start from (the shared one). Writes nothing.
    pub fn state_file_to_read(&self, path: &Path) -> Result<StateFile> {
        self.state_file_to_read_at(&self.resolve(path)?)
    }

    /// [`Workspace::state_file_to_read`] of a path already resolved.
    pub fn state_file_to_read_at(&self, at: &ResolvedPath) -> Result<StateFile> {
        if let Some(file) = at.copy_file()?
            && file.path().exists()
        {
            return Ok(file);
        }
        at.shared_file()
    }

    /// Where `path` lives for this call's session (`tractatus state path`): the session's copy
    /// of a per-session file (whether it exists yet or not), else the file itself. Absolute.
    pub fn state_path(&self, path: &Path) -> Result<PathBuf> {
        Ok(self.resolve(path)?.path())
    }

    /// The session this call carries (`--session`, else `TRACTATUS_SESSION_ID`), unchecked.
    pub fn session(&self) -> Option<&str> {
        self.resolved.session.as_deref().filter(|s| !s.is_empty())
    }

    /// The session registry of this repository (Redis when configured, else files under
    /// `.claude/.tractatus/sessions/`), ready to register: a fresh repository on Redis gets its
    /// namespace file here. Connections open on first use.
    pub fn sessions(&self) -> Result<Sessions> {
        let root = self.repo_root(Path::new(crate::settings::SESSIONS_DIR))?;
        let mut namespace = self.resolved.config.namespace.clone();
        let on_redis = !self.resolved.config.nodes.is_empty();
        if on_redis && self.resolved.namespace == Namespace::Unset {
            namespace = ensure_namespace(root, &read_settings(root)?)?;
        }
        self.registry(root, namespace)
    }

    /// The session registry for looking only (list, stats, gc): `None` when nothing can have
    /// been registered here (a repository on Redis with no namespace yet), so that looking
    /// creates no file.
    pub fn sessions_observer(&self) -> Result<Option<Sessions>> {
        let root = self.repo_root(Path::new(crate::settings::SESSIONS_DIR))?;
        match self.resolved.namespace.name() {
            Some(ns) => self.registry(root, ns.to_owned()).map(Some),
            None if self.resolved.config.nodes.is_empty() => {
                self.registry(root, String::new()).map(Some)
            }
            None => Ok(None),
        }
    }

    fn registry(&self, root: &Path, namespace: String) -> Result<Sessions> {
        let config = &self.resolved.config;
        let stores: Vec<Arc<dyn SessionStore>> = if config.nodes.is_empty() {
            vec![Arc::new(LocalSessions::open(root)?)]
        } else {
            crate::connect::redis_nodes(config)?
                .into_iter()
                .map(|n| Arc::new(n) as Arc<dyn SessionStore>)
                .collect()
        };
        // One answer is enough (the registry is advisory), but connecting may take the whole
        // connect deadline.
        let timeout = config.connect_timeout + config.node_timeout;
        Ok(Sessions::new(
            stores,
            namespace,
            root.to_path_buf(),
            self.resolved.session_idle,
            timeout,
        ))
    }

    /// The lock name of a file (path relative to the root). For a session, a per-session
    /// file's lock is its copy's (what the session's `state` writes take, and Node's `withLock`,
    /// whose writes join it). `lock run --file` takes [`Workspace::shared_name`] instead: its
    /// command is opaque and may write the shared path itself.
    pub fn lock_name(&self, path: &Path) -> Result<String> {
        Ok(self.resolve(path)?.lock_name().to_owned())
    }

    /// The lock name of a file as it is shared by every session (path relative to the root).
    pub fn shared_name(&self, path: &Path) -> Result<String> {
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

/// A state file's path, resolved once per call by [`Workspace::resolve`] and passed down: the
/// repository root, the file's place below it, its lock name, and the session's copy when it
/// has one. Only names: opening the file (through directory handles, refusing a symlink) is
/// done afresh wherever the file is opened.
#[derive(Debug, Clone)]
pub struct ResolvedPath {
    /// The canonical repository root.
    root: PathBuf,
    /// The path as the caller gave it, for messages.
    given: PathBuf,
    /// The shared file, relative to the root (plain names, folded lexically).
    rel: PathBuf,
    /// The shared file's lock name.
    shared_name: String,
    /// The session's own copy, relative to the root, when the file is per-session.
    copy: Option<String>,
}

impl ResolvedPath {
    /// The lock a write takes: the session's copy's when it has one, else the shared file's.
    pub fn lock_name(&self) -> &str {
        self.copy.as_deref().unwrap_or(&self.shared_name)
    }

    /// The lock name of the file as every session shares it.
    pub fn shared_name(&self) -> &str {
        &self.shared_name
    }

    /// The session's copy (relative to the root), when the file is per-session.
    pub fn session_copy(&self) -> Option<&str> {
        self.copy.as_deref()
    }

    /// Where the file lives for this call's session (absolute): its copy, or the shared file.
    pub fn path(&self) -> PathBuf {
        match &self.copy {
            Some(copy) => self.root.join(copy),
            None => self.shared_path(),
        }
    }

    /// The shared file (absolute).
    pub fn shared_path(&self) -> PathBuf {
        self.root.join(&self.rel)
    }

    fn shared_file(&self) -> Result<StateFile> {
        StateFile::open_resolved(&self.root, &self.rel, self.shared_name.clone(), &self.given)
    }

    fn copy_file(&self) -> Result<Option<StateFile>> {
        let Some(copy) = &self.copy else {
            return Ok(None);
        };
        // Built from a checked id and a checked name, but it may be too long for a lock name.
        crate::config::check_lock_name(copy)?;
        let name = Path::new(copy);
        StateFile::open_resolved(&self.root, name, copy.clone(), name).map(Some)
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
