//! TEMPORARY (h-node): replaced at integration. The repository a call runs in: its root, its
//! resolved settings and its coordinator, chosen exactly as the CLI chooses them, so that other
//! front ends (the Node binding) contend with the CLI on the same locks.

use std::path::{Path, PathBuf};

use crate::settings::{Flags, Resolved, resolve};
use crate::state::StateFile;
use crate::{Coordinator, Error, Identity, Result, repo};

/// Settings and repository root seen from one working directory.
// TEMPORARY (h-node): replaced at integration
#[derive(Debug, Clone)]
pub struct Workspace {
    cwd: PathBuf,
    root: Option<PathBuf>,
    resolved: Resolved,
}

impl Workspace {
    /// Find the repository above `cwd` and resolve flags, environment and config file.
    pub fn discover(
        cwd: &Path,
        flags: &Flags,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Workspace> {
        let root = repo::find_root(cwd);
        let resolved = resolve(flags, env, root.as_deref())?;
        Ok(Workspace {
            cwd: cwd.to_path_buf(),
            root,
            resolved,
        })
    }

    /// The repository root, when there is one.
    pub fn root(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    /// The resolved settings.
    pub fn resolved(&self) -> &Resolved {
        &self.resolved
    }

    fn need_root(&self, what: &str) -> Result<&Path> {
        self.root.as_deref().ok_or_else(|| {
            Error::Usage(format!(
                "{what}: no repository here (no .git or .claude above {})",
                self.cwd.display()
            ))
        })
    }

    /// Connect to Redis, or set up local locks (refused on a network filesystem unless
    /// allowed). The notice, when there is one, is for the caller to show.
    pub async fn coordinator(
        &self,
        identity: Identity,
        allow_network_fs: bool,
    ) -> Result<(Coordinator, Option<String>)> {
        let config = self.resolved.config.clone();
        if !config.nodes.is_empty() {
            return Ok((Coordinator::connect(config, identity).await?, None));
        }
        let root = self.root.as_deref().ok_or_else(|| {
            Error::Usage(
                "no Redis configured (--redis or TRACTATUS_REDIS) and no repository here (no \
                 .git or .claude above this directory) to keep local locks in"
                    .into(),
            )
        })?;
        if let Some(fs) = crate::local::network_filesystem(root)
            && !allow_network_fs
        {
            return Err(Error::Unavailable {
                reachable: 0,
                total: 1,
                needed: 1,
                causes: vec![(
                    "local locks".into(),
                    format!(
                        "{} is on a network filesystem ({fs}); OS file locks there do not \
                         protect other machines: configure Redis (TRACTATUS_REDIS), or allow \
                         the network filesystem if only this machine writes",
                        root.display()
                    ),
                )],
            });
        }
        let dir = repo::work_dir(root)?.join("locks");
        let notice =
            "no Redis configured; using local file locks (protects this machine only)".to_owned();
        Ok((Coordinator::local(config, identity, dir)?, Some(notice)))
    }

    /// The state file at `path` (absolute or relative to the working directory).
    pub fn state_file(&self, path: &Path) -> Result<StateFile> {
        StateFile::open(self.need_root("state file")?, &self.cwd, path)
    }

    /// The lock name of `path`: its path relative to the repository root.
    pub fn lock_name(&self, path: &Path) -> Result<String> {
        repo::lock_name_for(
            self.need_root(&path.display().to_string())?,
            &self.cwd,
            path,
        )
    }
}
