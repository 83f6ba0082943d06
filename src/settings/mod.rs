//! Where each setting comes from: flags override the environment, which overrides the
//! repository's config file (`.claude/tractatus-lock.toml`, see [`FileSettings`]), which
//! overrides the defaults. A value that does not parse is named by where it came from (`--ttl`,
//! `TRACTATUS_TTL`, or `ttl` in the config file). Passwords can come from
//! `TRACTATUS_REDIS_PASSWORD` or `TRACTATUS_REDIS_PASSWORD_FILE` (the sentinels' own from
//! `TRACTATUS_SENTINEL_PASSWORD(_FILE)`), so they need not sit in a URL,
//! a shell history or a committed file, and they go only to endpoints the user named or
//! trusts (see `trust`). Resolving reads and never writes: the namespace of a
//! fresh repository stays [`Namespace::Unset`] until something locks ([`ensure_namespace`]).

mod credentials;
mod entered;
mod file;
mod namespace;
mod per_session;
mod trust;

use std::path::Path;
use std::time::Duration;

pub(crate) use entered::check_entered;
pub use file::{CONFIG_FILE, FileSettings, read_settings};
pub(crate) use namespace::DEFAULT_NAMESPACE;
pub use namespace::{Namespace, ensure_namespace};
pub use per_session::{DEFAULT_SESSION_IDLE, SESSIONS_DIR};

use crate::config::{
    Config, DEFAULT_KILL_GRACE, DEFAULT_WAIT, MAX_MAX_HOLD, MAX_WAIT, parse_duration, parse_nodes,
    split_urls,
};
use crate::error::{Error, Result};
use credentials::{credential_sources, secret, with_credentials, with_sentinel_credentials};

/// The settings a caller gives: the CLI's flags (this type is their definition, so the help
/// text below is `tractatus --help`'s), the Node addon's options, or a program's own. Each one
/// overrides its environment variable and its key in `.claude/tractatus-lock.toml`; `None` (or
/// empty) when absent.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Flags {
    /// Redis URL (repeat for Redlock over 3+ masters). Env: TRACTATUS_REDIS (comma-separated).
    #[arg(long = "redis", value_name = "URL", global = true)]
    pub redis: Vec<String>,
    /// Namespace of the locks (default: from .claude/tractatus-lock.toml). Env: TRACTATUS_NAMESPACE.
    #[arg(long, value_name = "NS", global = true)]
    pub namespace: Option<String>,
    /// Lease TTL, like 10s (default 10s). Env: TRACTATUS_TTL.
    #[arg(long, value_name = "DUR", global = true)]
    pub ttl: Option<String>,
    /// Longest wait for a held lock, like 30s; 0 tries once (default 30s). Env: TRACTATUS_WAIT.
    #[arg(long, value_name = "DUR", global = true)]
    pub wait: Option<String>,
    /// Longest one holder may keep renewing a lease (default 1h). Env: TRACTATUS_MAX_HOLD.
    #[arg(long, value_name = "DUR", global = true)]
    pub max_hold: Option<String>,
    /// Deadline of one operation on one Redis node (default 250ms or ttl/10, the lower; at most
    /// ttl/3). Env: TRACTATUS_NODE_TIMEOUT.
    #[arg(long, value_name = "DUR", global = true)]
    pub node_timeout: Option<String>,
    /// Deadline to connect to Redis (default 1s). Env: TRACTATUS_CONNECT_TIMEOUT.
    #[arg(long, value_name = "DUR", global = true)]
    pub connect_timeout: Option<String>,
    /// Time between SIGTERM and SIGKILL when a lease is lost under `lock run` (default 5s).
    /// Env: TRACTATUS_KILL_GRACE.
    #[arg(long, value_name = "DUR", global = true)]
    pub kill_grace: Option<String>,
    /// The session this call belongs to: shown with its locks, kept alive in the session
    /// registry, and the owner of its per-session state files. Env: TRACTATUS_SESSION_ID.
    #[arg(long, value_name = "ID", global = true)]
    pub session: Option<String>,
}

/// Everything resolved: the coordinator's config and the per-command defaults.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The coordinator's checked config.
    pub config: Config,
    /// How long to wait for a held lock.
    pub wait: Duration,
    /// SIGTERM-to-SIGKILL grace for a command whose lease is lost.
    pub kill_grace: Duration,
    /// Which namespace, and where it came from. While it is [`Namespace::Unset`],
    /// `config.namespace` is empty, which [`crate::Coordinator::connect`] refuses: settle it
    /// first with [`ensure_namespace`] (as [`crate::workspace::Workspace::coordinator`] does).
    pub namespace: Namespace,
    /// The session this call carries (`--session`, else `TRACTATUS_SESSION_ID`), trimmed and
    /// not yet checked (see [`crate::session::check_session_id`]); `None` when neither is set.
    pub session: Option<String>,
    /// The files each session keeps its own copy of (`per_session` in the config file), as
    /// paths relative to the repository root, each under `.claude/`. Default: none.
    pub per_session: Vec<String>,
    /// How long a session may be quiet before it counts as silent (`session_idle`,
    /// `TRACTATUS_SESSION_IDLE`). Default: [`DEFAULT_SESSION_IDLE`].
    pub session_idle: Duration,
}

/// One setting's names: its flag, its environment variable, its key in the config file.
struct Names {
    flag: Option<&'static str>,
    env: &'static str,
    key: Option<&'static str>,
}

const fn names(flag: Option<&'static str>, env: &'static str, key: Option<&'static str>) -> Names {
    Names { flag, env, key }
}

const TTL: Names = names(Some("--ttl"), "TRACTATUS_TTL", Some("ttl"));
const WAIT: Names = names(Some("--wait"), "TRACTATUS_WAIT", Some("wait"));
const MAX_HOLD: Names = names(Some("--max-hold"), "TRACTATUS_MAX_HOLD", Some("max_hold"));
const NODE_TIMEOUT: Names = names(
    Some("--node-timeout"),
    "TRACTATUS_NODE_TIMEOUT",
    Some("node_timeout"),
);
const CONNECT_TIMEOUT: Names = names(
    Some("--connect-timeout"),
    "TRACTATUS_CONNECT_TIMEOUT",
    Some("connect_timeout"),
);
const KILL_GRACE: Names = names(Some("--kill-grace"), "TRACTATUS_KILL_GRACE", None);
const QUARANTINE: Names = names(None, "TRACTATUS_QUARANTINE", Some("quarantine"));
const CA_FILE: Names = names(None, "TRACTATUS_REDIS_CA_FILE", Some("redis_ca_file"));
const WAIT_REPLICAS: Names = names(None, "TRACTATUS_REDIS_WAIT_REPLICAS", Some("wait_replicas"));
const WAIT_TIMEOUT: Names = names(None, "TRACTATUS_REDIS_WAIT_TIMEOUT", Some("wait_timeout"));
const NAMESPACE: Names = names(Some("--namespace"), "TRACTATUS_NAMESPACE", None);
const SESSION: Names = names(Some("--session"), "TRACTATUS_SESSION_ID", None);
const SESSION_IDLE: Names = names(None, "TRACTATUS_SESSION_IDLE", Some("session_idle"));

/// The environment variable behind each flag that has one, for a `--help` that names them all.
pub const FLAG_ENV: &[(&str, &str)] = &[
    ("--redis", "TRACTATUS_REDIS"),
    ("--namespace", NAMESPACE.env),
    ("--ttl", TTL.env),
    ("--wait", WAIT.env),
    ("--max-hold", MAX_HOLD.env),
    ("--node-timeout", NODE_TIMEOUT.env),
    ("--connect-timeout", CONNECT_TIMEOUT.env),
    ("--kill-grace", KILL_GRACE.env),
    ("--session", SESSION.env),
];

/// A value and where it came from (`--ttl`, `TRACTATUS_TTL`, `` `ttl` in <config file> ``).
struct Picked {
    value: String,
    origin: String,
}

/// The first of flag, environment, file that is set.
fn pick(
    names: &Names,
    flag: &Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
    from_file: &Option<String>,
) -> Option<Picked> {
    if let (Some(v), Some(f)) = (flag, names.flag) {
        return Some(Picked {
            value: v.clone(),
            origin: f.to_owned(),
        });
    }
    if let Some(v) = env(names.env).filter(|v| !v.trim().is_empty()) {
        return Some(Picked {
            value: v,
            origin: names.env.to_owned(),
        });
    }
    match (from_file, names.key) {
        (Some(v), Some(k)) => Some(Picked {
            value: v.clone(),
            origin: format!("`{k}` in {CONFIG_FILE}"),
        }),
        _ => None,
    }
}

/// The duration set for `names`, if any; a bad one is refused naming where it came from.
fn duration(
    names: &Names,
    flag: &Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
    from_file: &Option<String>,
) -> Result<Option<Duration>> {
    pick(names, flag, env, from_file)
        .map(|p| parse_duration(&p.value).map_err(|e| Error::usage(format!("{}: {e}", p.origin))))
        .transpose()
}

/// Resolve flags, then environment (through `env`), then the config file of `root`. Reads,
/// never writes.
pub fn resolve(
    flags: &Flags,
    env: &dyn Fn(&str) -> Option<String>,
    root: Option<&Path>,
) -> Result<Resolved> {
    let file = match root {
        Some(r) => read_settings(r)?,
        None => FileSettings::default(),
    };

    // The config file is committed: a password there is a leak, whatever overrides it today.
    if let Some(u) = file
        .redis
        .iter()
        .flatten()
        .find(|u| crate::config::has_password(u))
    {
        return Err(Error::usage(format!(
            "{CONFIG_FILE} holds a password in `redis = [...]` ({}); that file is committed: \
             remove it and use TRACTATUS_REDIS_PASSWORD or TRACTATUS_REDIS_PASSWORD_FILE \
             (TRACTATUS_SENTINEL_PASSWORD(_FILE) for the sentinels' own)",
            crate::config::redact(u)
        )));
    }
    let (urls, origin) = if !flags.redis.is_empty() {
        (flags.redis.clone(), Some("--redis"))
    } else if let Some(v) = env("TRACTATUS_REDIS").filter(|v| !v.trim().is_empty()) {
        (vec![v], Some("TRACTATUS_REDIS"))
    } else {
        (file.redis.clone().unwrap_or_default(), None)
    };
    if !urls.is_empty() && split_urls(&urls).next().is_none() {
        // `TRACTATUS_REDIS=',,,'`: meant to name Redis, names nothing; local locks would be a
        // silent downgrade.
        return Err(Error::usage(format!(
            "{}: no Redis URL in it (only commas and spaces): name one, or leave it unset for \
             local locks",
            origin.map_or_else(|| format!("`redis` in {CONFIG_FILE}"), str::to_owned)
        )));
    }
    let password = secret(env, "TRACTATUS_REDIS_PASSWORD")?;
    let username = env("TRACTATUS_REDIS_USERNAME").filter(|u| !u.is_empty());
    let sentinel_password = secret(env, "TRACTATUS_SENTINEL_PASSWORD")?;
    let sentinel_username = env("TRACTATUS_SENTINEL_USERNAME").filter(|u| !u.is_empty());
    if origin.is_none() {
        // Endpoints only the committed file names get no credentials unless trusted.
        let sources = credential_sources(env);
        trust::check(&parse_nodes(&urls)?, &sources, env, root)?;
    }
    let urls: Vec<String> = split_urls(&urls)
        .map(|u| with_credentials(u, username.as_deref(), password.as_deref()))
        .map(|u| {
            with_sentinel_credentials(
                &u,
                sentinel_username.as_deref(),
                sentinel_password.as_deref(),
            )
        })
        .collect();
    let mut config = Config::new(parse_nodes(&urls)?);

    config.tls_ca_file = pick(&CA_FILE, &None, env, &file.redis_ca_file).map(|p| p.value.into());
    config.repo_root = root.map(Path::to_path_buf);
    let namespace = match (pick(&NAMESPACE, &flags.namespace, env, &None), root) {
        (Some(p), _) => Namespace::Given(p.value),
        (None, Some(_)) => match &file.namespace {
            Some(ns) => Namespace::File(ns.clone()),
            None => Namespace::Unset,
        },
        (None, None) => Namespace::Default,
    };
    if let Some(d) = duration(&TTL, &flags.ttl, env, &file.ttl)? {
        config.ttl = d;
    }
    if let Some(d) = duration(&MAX_HOLD, &flags.max_hold, env, &file.max_hold)? {
        if d < config.ttl || d > MAX_MAX_HOLD {
            // Below one TTL the lease is given up at its first renewal, however well it stands.
            let origin = pick(&MAX_HOLD, &flags.max_hold, env, &file.max_hold).map(|p| p.origin);
            return Err(Error::usage(format!(
                "{}: a longest hold of {} ms is out of range: use the ttl ({} ms) to 30 days",
                origin.unwrap_or_default(),
                d.as_millis(),
                config.ttl.as_millis()
            )));
        }
        config.max_hold = d;
    }
    let node_timeout = duration(&NODE_TIMEOUT, &flags.node_timeout, env, &file.node_timeout)?;
    // Unless set, the node timeout follows a short TTL down, so it always fits.
    config.node_timeout = node_timeout.unwrap_or(config.node_timeout.min(config.ttl / 10));
    let connect = duration(
        &CONNECT_TIMEOUT,
        &flags.connect_timeout,
        env,
        &file.connect_timeout,
    )?;
    if let Some(d) = connect {
        config.connect_timeout = d;
    }
    if let Some(d) = duration(&QUARANTINE, &None, env, &file.quarantine)? {
        config.quarantine = d;
    }
    let replicas = file.wait_replicas.map(|n| n.to_string());
    if let Some(p) = pick(&WAIT_REPLICAS, &None, env, &replicas) {
        config.wait_replicas = p.value.trim().parse().map_err(|_| {
            Error::usage(format!(
                "{}: bad replica count '{}': expected a whole number (0 = off)",
                p.origin, p.value
            ))
        })?;
    }
    if let Some(d) = duration(&WAIT_TIMEOUT, &None, env, &file.wait_timeout)? {
        config.wait_timeout = d;
    }
    // An unset namespace is checked as a valid stand-in: the fresh id it will get always passes.
    config.namespace = namespace.name().unwrap_or(DEFAULT_NAMESPACE).to_owned();
    config.check()?;
    config.namespace = namespace.name().unwrap_or_default().to_owned();
    let wait = duration(&WAIT, &flags.wait, env, &file.wait)?.unwrap_or(DEFAULT_WAIT);
    if wait > MAX_WAIT {
        let origin = pick(&WAIT, &flags.wait, env, &file.wait).map(|p| p.origin);
        return Err(Error::usage(format!(
            "{}: a wait of {} s is out of range: use 0 to 24h",
            origin.unwrap_or_default(),
            wait.as_secs()
        )));
    }
    let kill_grace =
        duration(&KILL_GRACE, &flags.kill_grace, env, &None)?.unwrap_or(DEFAULT_KILL_GRACE);
    let session = pick(&SESSION, &flags.session, env, &None);
    check_entered(env, session.as_ref().map(|p| (&*p.origin, &*p.value)))?;
    let session = session.map(|p| p.value.trim().to_owned());
    let session_idle =
        duration(&SESSION_IDLE, &None, env, &file.session_idle)?.unwrap_or(DEFAULT_SESSION_IDLE);
    if session_idle.is_zero() {
        // Every session would be silent at once, and `session gc` would take their directories.
        let origin = pick(&SESSION_IDLE, &None, env, &file.session_idle).map(|p| p.origin);
        return Err(Error::usage(format!(
            "{}: a session idle time of 0 makes every session silent at once; use a duration \
             like 30m",
            origin.unwrap_or_default()
        )));
    }
    let per_session = per_session::check(file.per_session.as_deref().unwrap_or_default())?;
    Ok(Resolved {
        config,
        wait,
        kill_grace,
        namespace,
        session,
        per_session,
        session_idle,
    })
}

#[cfg(test)]
mod tests;
