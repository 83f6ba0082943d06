//! Where each setting comes from: flags override the environment, which overrides the
//! repository's config file (`.claude/tractatus-lock.toml`), which overrides the defaults.
//! Passwords can come from `TRACTATUS_REDIS_PASSWORD` or `TRACTATUS_REDIS_PASSWORD_FILE`, so
//! they need not sit in a URL, a shell history or a committed file.

use std::path::Path;
use std::time::Duration;

use crate::config::{Config, DEFAULT_KILL_GRACE, DEFAULT_WAIT, parse_duration, parse_nodes};
use crate::error::{Error, Result};
use crate::repo::{FileSettings, ensure_namespace, read_settings};

/// Settings given on the command line (each `None` when absent).
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--redis`, repeatable.
    pub redis: Vec<String>,
    /// `--namespace`.
    pub namespace: Option<String>,
    /// `--ttl`.
    pub ttl: Option<String>,
    /// `--wait`.
    pub wait: Option<String>,
    /// `--max-hold`.
    pub max_hold: Option<String>,
    /// `--node-timeout`.
    pub node_timeout: Option<String>,
    /// `--connect-timeout`.
    pub connect_timeout: Option<String>,
    /// `--kill-grace`.
    pub kill_grace: Option<String>,
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
}

/// Resolve flags, then environment (through `env`), then the config file of `root`.
pub fn resolve(
    flags: &Flags,
    env: &dyn Fn(&str) -> Option<String>,
    root: Option<&Path>,
) -> Result<Resolved> {
    let file = match root {
        Some(r) => read_settings(r)?,
        None => FileSettings::default(),
    };
    let pick = |flag: &Option<String>, var: &str, from_file: &Option<String>| {
        flag.clone()
            .or_else(|| env(var).filter(|v| !v.trim().is_empty()))
            .or_else(|| from_file.clone())
    };
    let duration = |flag: &Option<String>, var: &str, from_file: &Option<String>, name: &str| {
        pick(flag, var, from_file)
            .map(|t| parse_duration(&t).map_err(|e| Error::usage(format!("{name}: {e}"))))
            .transpose()
    };

    // The config file is committed: a password there is a leak, whatever overrides it today.
    if let Some(u) = file
        .redis
        .iter()
        .flatten()
        .find(|u| crate::config::has_password(u))
    {
        return Err(Error::usage(format!(
            "{} holds a password in `redis = [...]` ({}); that file is committed: remove it and \
             use TRACTATUS_REDIS_PASSWORD or TRACTATUS_REDIS_PASSWORD_FILE",
            crate::repo::CONFIG_FILE,
            crate::config::redact(u)
        )));
    }
    let urls: Vec<String> = if !flags.redis.is_empty() {
        flags.redis.clone()
    } else if let Some(v) = env("TRACTATUS_REDIS").filter(|v| !v.trim().is_empty()) {
        vec![v]
    } else {
        file.redis.clone().unwrap_or_default()
    };
    let password = match (
        env("TRACTATUS_REDIS_PASSWORD"),
        env("TRACTATUS_REDIS_PASSWORD_FILE"),
    ) {
        (Some(p), _) if !p.is_empty() => Some(p),
        (_, Some(path)) if !path.is_empty() => Some(
            std::fs::read_to_string(&path)
                .map_err(|e| {
                    Error::usage(format!(
                        "cannot read TRACTATUS_REDIS_PASSWORD_FILE {path}: {e}"
                    ))
                })?
                .trim_end_matches(['\n', '\r'])
                .to_owned(),
        ),
        _ => None,
    };
    let username = env("TRACTATUS_REDIS_USERNAME").filter(|u| !u.is_empty());
    let urls: Vec<String> = urls
        .iter()
        .flat_map(|u| u.split(','))
        .filter(|u| !u.trim().is_empty())
        .map(|u| with_credentials(u.trim(), username.as_deref(), password.as_deref()))
        .collect();
    let mut config = Config::new(parse_nodes(&urls)?);

    config.tls_ca_file =
        pick(&None, "TRACTATUS_REDIS_CA_FILE", &file.redis_ca_file).map(std::path::PathBuf::from);
    let namespace = pick(&flags.namespace, "TRACTATUS_NAMESPACE", &None);
    config.namespace = match (namespace, root) {
        (Some(ns), _) => ns,
        (None, Some(r)) if !config.nodes.is_empty() => ensure_namespace(r, &file)?,
        (None, _) => file
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned()),
    };
    if let Some(d) = duration(&flags.ttl, "TRACTATUS_TTL", &file.ttl, "ttl")? {
        config.ttl = d;
    }
    if let Some(d) = duration(
        &flags.max_hold,
        "TRACTATUS_MAX_HOLD",
        &file.max_hold,
        "max-hold",
    )? {
        config.max_hold = d;
    }
    let node_timeout = duration(
        &flags.node_timeout,
        "TRACTATUS_NODE_TIMEOUT",
        &file.node_timeout,
        "node-timeout",
    )?;
    // Unless set, the node timeout follows a short TTL down, so it always fits.
    config.node_timeout = node_timeout.unwrap_or(config.node_timeout.min(config.ttl / 10));
    if let Some(d) = duration(
        &flags.connect_timeout,
        "TRACTATUS_CONNECT_TIMEOUT",
        &file.connect_timeout,
        "connect-timeout",
    )? {
        config.connect_timeout = d;
    }
    if let Some(d) = duration(
        &None,
        "TRACTATUS_QUARANTINE",
        &file.quarantine,
        "quarantine",
    )? {
        config.quarantine = d;
    }
    config.check()?;
    let wait = duration(&flags.wait, "TRACTATUS_WAIT", &file.wait, "wait")?.unwrap_or(DEFAULT_WAIT);
    let kill_grace = duration(
        &flags.kill_grace,
        "TRACTATUS_KILL_GRACE",
        &None,
        "kill-grace",
    )?
    .unwrap_or(DEFAULT_KILL_GRACE);
    Ok(Resolved {
        config,
        wait,
        kill_grace,
    })
}

/// Put `username`/`password` into a URL that carries none.
fn with_credentials(url: &str, username: Option<&str>, password: Option<&str>) -> String {
    let Some(password) = password else {
        return url.to_owned();
    };
    let Some(i) = url.find("://") else {
        return url.to_owned();
    };
    let (scheme, rest) = url.split_at(i + 3);
    let authority = rest.split('/').next().unwrap_or("");
    if authority.contains('@') {
        return url.to_owned();
    }
    let user = username.map(percent_encode).unwrap_or_default();
    format!("{scheme}{user}:{}@{rest}", percent_encode(password))
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_environment_beat_file() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join(".claude")).unwrap();
        std::fs::write(
            tmp.path().join(".claude/tractatus-lock.toml"),
            "namespace = \"filens\"\nttl = \"20s\"\nwait = \"7s\"\nquarantine = \"20s\"\n\
             redis = [\"redis://file:1\"]\n",
        )
        .unwrap();
        let env = |k: &str| match k {
            "TRACTATUS_TTL" => Some("15s".to_owned()),
            "TRACTATUS_REDIS" => Some("redis://env:1".to_owned()),
            _ => None,
        };
        let flags = Flags {
            ttl: Some("12s".into()),
            ..Default::default()
        };
        let r = resolve(&flags, &env, Some(tmp.path())).unwrap();
        assert_eq!(r.config.ttl, Duration::from_secs(12));
        assert_eq!(r.config.nodes[0].to_string(), "redis://env:1");
        assert_eq!(r.config.namespace, "filens");
        assert_eq!(r.wait, Duration::from_secs(7));
        let r = resolve(&Flags::default(), &env, Some(tmp.path())).unwrap();
        assert_eq!(r.config.ttl, Duration::from_secs(15));
    }

    #[test]
    fn a_password_in_the_committed_config_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join(".claude")).unwrap();
        std::fs::write(
            tmp.path().join(".claude/tractatus-lock.toml"),
            "namespace = \"n\"\nredis = [\"redis://:hunter2@h:1\"]\n",
        )
        .unwrap();
        let e = resolve(&Flags::default(), &|_| None, Some(tmp.path())).unwrap_err();
        assert_eq!(e.exit_code(), 64);
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(e.to_string().contains("TRACTATUS_REDIS_PASSWORD"), "{e}");
    }

    #[test]
    fn password_from_environment_is_injected_and_never_shown() {
        let env = |k: &str| match k {
            "TRACTATUS_REDIS" => Some("redis://127.0.0.1:1".to_owned()),
            "TRACTATUS_REDIS_PASSWORD" => Some("p@ss:w/rd".to_owned()),
            _ => None,
        };
        let r = resolve(&Flags::default(), &env, None).unwrap();
        let node = &r.config.nodes[0];
        assert_eq!(node.secret_url(), "redis://:p%40ss%3Aw%2Frd@127.0.0.1:1");
        assert!(!node.to_string().contains("ss"));
    }
}
