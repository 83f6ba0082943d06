//! Connecting: a [`Coordinator`] is built here, from Redis URLs (one node or Redlock masters,
//! with an optional TLS certificate authority read and checked up front) or for local file
//! locks. Nothing else in the crate opens a connection to set one up.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use crate::backend::Node;
use crate::config::Config;
use crate::coordinator::{Backend, Coordinator, Inner};
use crate::dir_handle::DirHandle;
use crate::error::{Error, Result};
use crate::holder::Identity;
use crate::local::LocalBackend;
use crate::quorum::Quorum;
use crate::redis_node::RedisNode;

/// The work of [`Coordinator::connect`]: every node built (TLS included), a majority
/// connected within the connect timeout.
pub(crate) async fn connect(config: Config, identity: Identity) -> Result<Coordinator> {
    config.check()?;
    if config.nodes.is_empty() {
        return Err(Error::usage(
            "no Redis configured: use Coordinator::local for OS file locks",
        ));
    }
    let nodes = redis_nodes(&config)?
        .into_iter()
        .map(|n| Arc::new(n.with_replica_wait(config.wait_replicas, config.wait_timeout)))
        .collect::<Vec<_>>();
    let (n, need) = (nodes.len(), crate::quorum::majority(nodes.len()));
    let mut pending: FuturesUnordered<_> = nodes
        .iter()
        .map(|node| async move { (node.label(), node.connect().await) })
        .collect();
    let (mut ok, mut causes, mut silent) = (0, Vec::new(), 0);
    while let Some((label, r)) = pending.next().await {
        match r {
            Ok(_) => ok += 1,
            Err(e) => {
                silent += usize::from(e.timed_out);
                causes.push((label, e.cause));
            }
        }
        // Stop early on success only: a failure waits for the others (each bounded by the
        // connect timeout) so that the message counts them right.
        if ok >= need {
            break;
        }
    }
    drop(pending);
    if ok + silent < need {
        return Err(Error::Unavailable {
            reachable: ok,
            total: n,
            needed: need,
            causes,
        });
    }
    let nodes = nodes
        .into_iter()
        .map(|n| n as Arc<dyn Node>)
        .collect::<Vec<_>>();
    Ok(with_nodes(config, identity, nodes))
}

/// The work of [`Coordinator::with_nodes`].
pub(crate) fn with_nodes(
    config: Config,
    identity: Identity,
    nodes: Vec<Arc<dyn Node>>,
) -> Coordinator {
    Coordinator {
        inner: Arc::new(Inner {
            config,
            identity,
            backend: Backend::Redis(Quorum::new(nodes)),
        }),
    }
}

/// The work of [`Coordinator::local`].
pub(crate) fn local(config: Config, identity: Identity, lock_dir: PathBuf) -> Result<Coordinator> {
    Ok(Coordinator {
        inner: Arc::new(Inner {
            backend: Backend::Local(LocalBackend::new(lock_dir)?),
            config,
            identity,
        }),
    })
}

/// The work of [`Coordinator::local_in`].
pub(crate) fn local_in(
    config: Config,
    identity: Identity,
    locks: crate::dir_handle::DirHandle,
) -> Coordinator {
    Coordinator {
        inner: Arc::new(Inner {
            backend: Backend::Local(LocalBackend::at(locks)),
            config,
            identity,
        }),
    }
}

/// A node for each Redis URL of `config`, not yet connected, with its TLS certificate authority
/// (read and checked once for all of them); a URL that cannot make one is a usage error naming it.
pub(crate) fn redis_nodes(config: &Config) -> Result<Vec<RedisNode>> {
    let tls_ca = read_tls_ca(config)?;
    config
        .nodes
        .iter()
        .map(|u| {
            RedisNode::with_tls_ca(
                u,
                config.connect_timeout,
                config.node_timeout,
                tls_ca.as_deref(),
            )
            .map_err(|e| Error::usage(format!("{u}: {e}")))
        })
        .collect()
}

/// The most a CA file may hold: 1 MiB (a bundle of every public CA is about 200 KB).
pub(crate) const CA_CAP: u64 = 1024 * 1024;

/// The PEM certificate authority named by the configuration, checked to hold a certificate.
/// It never makes us wait or fill memory (see [`read_ca_file`]): a FIFO, a device or a file
/// over [`CA_CAP`] is refused at once, naming the path (65, bad data, as for the config file
/// that may name it); one that cannot be read is 64.
pub(crate) fn read_tls_ca(config: &Config) -> Result<Option<Vec<u8>>> {
    let Some(path) = &config.tls_ca_file else {
        return Ok(None);
    };
    let pem = read_ca_file(path, config.repo_root.as_deref()).map_err(|e| {
        if crate::dir_handle::is_refusal_by_kind(&e) {
            Error::bad_data(format!("refusing the TLS CA file: {e}")).with_source(e)
        } else {
            Error::usage(format!("cannot read TLS CA file {}: {e}", path.display())).with_source(e)
        }
    })?;
    // Checked here: a file with no certificate would otherwise fail later as a handshake error
    // that does not name it.
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(Error::usage(format!(
            "TLS CA file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(Some(pem))
}

/// The CA file's bytes. The user names it, possibly outside the repository (`/etc/ssl/...`,
/// where links are common and are the system's), so by its path it is read following links
/// but never waiting and capped. When the path passes through the repository `root` (a
/// committed `redis_ca_file = ".claude/ca.pem"`), the part below the root is walked through
/// directory handles like every file of ours: a co-user's symlink there is refused.
fn read_ca_file(path: &Path, root: Option<&Path>) -> std::io::Result<Vec<u8>> {
    let Some(rel) = root.and_then(|r| below_root(path, r).map(|rel| (r, rel))) else {
        return crate::dir_handle::read_capped_path(path, CA_CAP);
    };
    let (root, rel) = rel;
    let not_found = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
    let name = rel.file_name().ok_or_else(not_found)?;
    let dir = DirHandle::open_root(root)?
        .open_dir(rel.parent().unwrap_or(Path::new("")))?
        .ok_or_else(not_found)?;
    dir.read_capped(name, CA_CAP)?.ok_or_else(not_found)
}

/// The part of `path` below `root` (canonical) when `path`, made absolute from the current
/// directory, passes through it: the first of its prefixes whose canonical form is the root
/// (links above the root are the user's and are followed; nothing below it is resolved).
fn below_root(path: &Path, root: &Path) -> Option<PathBuf> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(path)
    };
    let mut prefix = PathBuf::new();
    let mut rest = abs.components();
    while let Some(c) = rest.next() {
        prefix.push(c);
        if prefix.canonicalize().ok().as_deref() == Some(root) {
            return Some(rest.as_path().to_path_buf());
        }
    }
    None
}
