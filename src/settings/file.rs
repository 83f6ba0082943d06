//! The repository's config file, `.claude/tractatus-lock.toml`: its schema and how it is read.
//! It is committed, so it holds what every clone shares (namespace, endpoints, durations) and
//! never a password.

use std::path::Path;

use serde::Deserialize;

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
    /// `TRACTATUS_SENTINEL_PASSWORD(_FILE)` for the sentinels').
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

/// Read the config file of `root`; an absent file gives empty settings.
pub fn read_settings(root: &Path) -> Result<FileSettings> {
    let path = root.join(CONFIG_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text)
            .map_err(|e| Error::usage(format!("bad {}: {}", path.display(), one_line(&e)))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileSettings::default()),
        Err(e) => Err(Error::usage(format!("cannot read {}: {e}", path.display())).with_source(e)),
    }
}

fn one_line(e: &impl std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}
