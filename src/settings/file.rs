//! The repository's config file, `.claude/tractatus-lock.toml`: its schema and how it is read.
//! It is committed, so it holds what every clone shares (namespace, endpoints, durations) and
//! never a password.

use std::ffi::OsStr;
use std::path::Path;

use serde::Deserialize;

use crate::dir_handle::DirHandle;
use crate::error::{Error, Result};

/// The config file, relative to the repository root.
pub const CONFIG_FILE: &str = ".claude/tractatus-lock.toml";

/// Settings from `.claude/tractatus-lock.toml`. Every field is optional; the environment and
/// flags override it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    /// The repository's namespace: shared by every clone and mount of it.
    pub namespace: Option<String>,
    /// Redis URLs (without passwords: use `TRACTATUS_REDIS_PASSWORD(_FILE)`, and
    /// `TRACTATUS_SENTINEL_PASSWORD(_FILE)` for the sentinels'). Credentials from the
    /// environment go to them only when the user trusts them (`TRACTATUS_TRUSTED_REDIS` or
    /// `~/.config/tractatus/trusted-redis`).
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
    /// PEM file of the CA that signed the Redis servers' TLS certificates (at most 1 MiB;
    /// inside the repository, reached without following a symlink).
    pub redis_ca_file: Option<String>,
    /// State files each session keeps its own copy of (paths under `.claude/`, relative to
    /// the repository root), like `[".claude/session-state.json"]`. Default: none.
    pub per_session: Option<Vec<String>>,
    /// How long a session may be quiet before it counts as silent, like `30m`. Default: 30m.
    pub session_idle: Option<String>,
    /// Replicas that must acknowledge each grant (Redis `WAIT`), like `1`; 0 = off.
    pub wait_replicas: Option<u32>,
    /// How long a grant waits for them, like `100ms`.
    pub wait_timeout: Option<String>,
}

/// The most the config file may hold: 1 MiB. A real one is a few hundred bytes; the cap keeps
/// a huge file, or a link to `/dev/zero` that slipped past, from filling memory.
pub(crate) const CONFIG_CAP: u64 = 1024 * 1024;

/// Read the config file of `root`; an absent file gives empty settings.
pub fn read_settings(root: &Path) -> Result<FileSettings> {
    Ok(read_existing(root)?.unwrap_or_default())
}

/// The config file of `root`, `None` when there is none. It is reached through directory
/// handles: `.claude` is opened `O_NOFOLLOW` from the root, the file `O_NOFOLLOW | O_NONBLOCK`,
/// judged by `fstat` and read with a cap ([`CONFIG_CAP`]). A co-user can replace it, so a
/// symlink (at the file or at `.claude`), a FIFO, a device or a file over the cap is refused at
/// once, naming the path: 65, bad data, since the file is the repository's shared input rather
/// than our bookkeeping or the caller's flag. It never makes us wait or fill memory.
pub(crate) fn read_existing(root: &Path) -> Result<Option<FileSettings>> {
    let path = root.join(CONFIG_FILE);
    let (dir, name) = CONFIG_FILE.rsplit_once('/').unwrap_or(("", CONFIG_FILE));
    let bytes = DirHandle::open_root(root)
        .and_then(|r| r.open_dir(Path::new(dir)))
        .and_then(|d| match d {
            Some(d) => d.read_capped(OsStr::new(name), CONFIG_CAP),
            None => Ok(None),
        })
        .map_err(|e| unreadable(&path, e))?;
    let Some(bytes) = bytes else {
        return Ok(None);
    };
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::usage(format!("bad {}: it is not UTF-8 text", path.display())))?;
    toml::from_str(&text)
        .map(Some)
        .map_err(|e| Error::usage(format!("bad {}: {}", path.display(), one_line(&e))))
}

/// A refusal of what is there (a link, a FIFO, too large: the message names the path) is bad
/// data; an error of the OS (permission denied) is the caller's to fix.
pub(crate) fn unreadable(path: &Path, e: std::io::Error) -> Error {
    if is_refusal(&e) {
        Error::bad_data(format!("refusing the config file: {e}")).with_source(e)
    } else {
        Error::usage(format!("cannot read {}: {e}", path.display())).with_source(e)
    }
}

pub(crate) use crate::dir_handle::is_refusal_by_kind as is_refusal;

fn one_line(e: &impl std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}
