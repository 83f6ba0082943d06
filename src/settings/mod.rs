//! Where each setting comes from: flags override the environment, which overrides the
//! repository's config file (`.claude/tractatus-lock.toml`, see [`FileSettings`]), which
//! overrides the defaults. A value that does not parse is named by where it came from (`--ttl`,
//! `TRACTATUS_TTL`, or `ttl` in the config file). Passwords can come from
//! `TRACTATUS_REDIS_PASSWORD` or `TRACTATUS_REDIS_PASSWORD_FILE` (the sentinels' own from
//! `TRACTATUS_SENTINEL_PASSWORD(_FILE)`), so they need not sit in a URL,
//! a shell history or a committed file, and they go only to endpoints the user named or
//! trusts (see `trust`). Resolving reads and never writes: the namespace of a
//! fresh repository stays [`Namespace::Unset`] until something locks ([`ensure_namespace`]).

mod file;
mod namespace;
mod per_session;
mod trust;

use std::path::Path;
use std::time::Duration;

pub(crate) use file::is_refusal;
pub use file::{CONFIG_FILE, FileSettings, read_settings};
pub use namespace::{DEFAULT_NAMESPACE, Namespace, ensure_namespace};
pub use per_session::{DEFAULT_SESSION_IDLE, SESSIONS_DIR};

use crate::config::{
    Config, DEFAULT_KILL_GRACE, DEFAULT_WAIT, MAX_MAX_HOLD, MAX_WAIT, parse_duration, parse_nodes,
    split_urls,
};
use crate::error::{Error, Result};

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
    /// `--session`: the session this call belongs to (else `TRACTATUS_SESSION_ID`).
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
    crate::holder::check_entered(env, session.as_ref().map(|p| (&*p.origin, &*p.value)))?;
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

/// The variables that hold credentials for Redis or the sentinels, of those set.
fn credential_sources(env: &dyn Fn(&str) -> Option<String>) -> Vec<&'static str> {
    [
        "TRACTATUS_REDIS_PASSWORD",
        "TRACTATUS_REDIS_PASSWORD_FILE",
        "TRACTATUS_REDIS_USERNAME",
        "TRACTATUS_SENTINEL_PASSWORD",
        "TRACTATUS_SENTINEL_PASSWORD_FILE",
        "TRACTATUS_SENTINEL_USERNAME",
    ]
    .into_iter()
    .filter(|name| env(name).is_some_and(|v| !v.is_empty()))
    .collect()
}

/// The secret in the variable `name`, or in the file that `{name}_FILE` names (its last line
/// break dropped); the variable wins.
fn secret(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Result<Option<String>> {
    if let Some(p) = env(name).filter(|p| !p.is_empty()) {
        return Ok(Some(p));
    }
    let Some(path) = env(&format!("{name}_FILE")).filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    // Never waited on (a FIFO is refused) and capped: 64 KiB is far more than any password.
    let bytes = crate::dir_handle::read_capped_path(Path::new(&path), 64 * 1024)
        .map_err(|e| Error::usage(format!("cannot read {name}_FILE {path}: {e}")).with_source(e))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::usage(format!("{name}_FILE {path} is not UTF-8 text")))?;
    Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned()))
}

/// Give a Sentinel URL that names no password for its sentinels (`sentinel_password=`) the
/// one from the environment, and `username` as `sentinel_username=` unless it names one. Other
/// URLs are returned as they are.
fn with_sentinel_credentials(url: &str, username: Option<&str>, password: Option<&str>) -> String {
    use crate::redis_node::sentinel::{PASSWORD_PARAM, USERNAME_PARAM, is_sentinel_url};
    let Some(password) = password.filter(|_| is_sentinel_url(url)) else {
        return url.to_owned();
    };
    let has = |key: &str| {
        let key = format!("{key}=");
        url.split_once('?')
            .is_some_and(|(_, q)| q.split('&').any(|p| p.starts_with(&key)))
    };
    if has(PASSWORD_PARAM) {
        return url.to_owned();
    }
    let mut params = Vec::new();
    if let Some(u) = username.filter(|_| !has(USERNAME_PARAM)) {
        params.push(format!("{USERNAME_PARAM}={}", percent_encode(u)));
    }
    params.push(format!("{PASSWORD_PARAM}={}", percent_encode(password)));
    let joint = if url.contains('?') { '&' } else { '?' };
    format!("{url}{joint}{}", params.join("&"))
}

/// Put `username`/`password` into a URL that carries no password. A URL that names a user
/// alone (`redis://alice@host`) gets the password after that user; `username` is used only when
/// the URL names none.
fn with_credentials(url: &str, username: Option<&str>, password: Option<&str>) -> String {
    let Some(password) = password else {
        return url.to_owned();
    };
    let Some(i) = url.find("://") else {
        return url.to_owned();
    };
    let (scheme, rest) = url.split_at(i + 3);
    let authority = rest.split('/').next().unwrap_or("");
    let password = percent_encode(password);
    match authority.rfind('@') {
        Some(at) if authority[..at].contains(':') => url.to_owned(),
        Some(at) => format!("{scheme}{}:{password}{}", &rest[..at], &rest[at..]),
        None => {
            let user = username.map(percent_encode).unwrap_or_default();
            format!("{scheme}{user}:{password}@{rest}")
        }
    }
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
            "namespace = \"filens\"\nttl = \"20s\"\nwait = \"7s\"\nquarantine = \"20s\"\nredis = [\"redis://file:1\"]\n",
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

    #[test]
    fn the_sentinels_password_comes_from_the_environment_to_sentinel_urls_only() {
        let tmp = tempfile::tempdir().unwrap();
        let pwfile = tmp.path().join("sentinel-pw");
        std::fs::write(&pwfile, "from&file\n").unwrap();
        let pwfile = pwfile.display().to_string();
        let env = |k: &str| {
            match k {
            "TRACTATUS_REDIS" => Some(
                "redis://a:1,redis+sentinel://h1,h2:2/m/1,redis+sentinel://h3/n?sentinel_username=own"
                    .to_owned(),
            ),
            "TRACTATUS_REDIS_PASSWORD" => Some("master".to_owned()),
            "TRACTATUS_SENTINEL_USERNAME" => Some("sam".to_owned()),
            "TRACTATUS_SENTINEL_PASSWORD_FILE" => Some(pwfile.clone()),
            _ => None,
        }
        };
        let r = resolve(&Flags::default(), &env, None).unwrap();
        let urls: Vec<&str> = r.config.nodes.iter().map(|n| n.secret_url()).collect();
        assert_eq!(
            urls,
            [
                "redis://:master@a:1",
                "redis+sentinel://:master@h1,h2:2/m/1?sentinel_username=sam&sentinel_password=from%26file",
                "redis+sentinel://:master@h3/n?sentinel_username=own&sentinel_password=from%26file",
            ]
        );
        for n in &r.config.nodes {
            assert!(!n.to_string().contains("from"), "{n}");
            assert!(!n.to_string().contains("master"), "{n}");
        }
        // A URL's own sentinel password stays.
        let own = "redis+sentinel://h/m?sentinel_password=mine";
        assert_eq!(with_sentinel_credentials(own, Some("u"), Some("env")), own);
    }

    #[test]
    fn a_sentinel_password_in_the_committed_config_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join(".claude")).unwrap();
        std::fs::write(
            tmp.path().join(CONFIG_FILE),
            "redis = [\"redis+sentinel://h:1/m?sentinel_password=hunter2\"]\n",
        )
        .unwrap();
        let e = resolve(&Flags::default(), &|_| None, Some(tmp.path())).unwrap_err();
        assert_eq!(e.exit_code(), 64);
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(e.to_string().contains("TRACTATUS_SENTINEL_PASSWORD"), "{e}");
    }

    #[test]
    fn a_url_naming_a_user_alone_gets_the_password_from_the_environment() {
        let with = |u| with_credentials(u, Some("bob"), Some("pw"));
        assert_eq!(with("redis://alice@h:1/0"), "redis://alice:pw@h:1/0");
        assert_eq!(with("redis://alice:own@h:1"), "redis://alice:own@h:1");
        assert_eq!(with("redis://h:1"), "redis://bob:pw@h:1");
        assert_eq!(
            with_credentials("redis://alice@h:1", None, None),
            "redis://alice@h:1"
        );
    }

    #[test]
    fn the_replica_wait_comes_from_the_environment_or_the_file_and_must_fit_the_ttl() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join(".claude")).unwrap();
        std::fs::write(
            tmp.path().join(CONFIG_FILE),
            "redis = [\"redis://h:1\"]\nwait_replicas = 1\nwait_timeout = \"50ms\"\n",
        )
        .unwrap();
        let root = Some(tmp.path());
        let r = resolve(&Flags::default(), &|_| None, root).unwrap();
        assert_eq!(r.config.wait_replicas, 1);
        assert_eq!(r.config.wait_timeout, Duration::from_millis(50));
        let env = |k: &str| match k {
            "TRACTATUS_REDIS_WAIT_REPLICAS" => Some("2".to_owned()),
            "TRACTATUS_REDIS_WAIT_TIMEOUT" => Some("5s".to_owned()),
            _ => None,
        };
        let e = resolve(&Flags::default(), &env, root).unwrap_err();
        assert_eq!(e.exit_code(), 64);
        assert!(e.to_string().contains("third of the ttl"), "{e}");
        let env = |k: &str| (k == "TRACTATUS_REDIS_WAIT_REPLICAS").then(|| "one".to_owned());
        let e = resolve(&Flags::default(), &env, root).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("TRACTATUS_REDIS_WAIT_REPLICAS: bad replica count 'one'"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_duration_names_where_it_came_from() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join(".claude")).unwrap();
        std::fs::write(tmp.path().join(CONFIG_FILE), "ttl = \"ten\"\n").unwrap();
        let root = Some(tmp.path());
        let e = resolve(&Flags::default(), &|_| None, root).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("`ttl` in .claude/tractatus-lock.toml: bad duration 'ten'"),
            "{e}"
        );
        let env = |k: &str| (k == "TRACTATUS_TTL").then(|| "9".to_owned());
        let e = resolve(&Flags::default(), &env, root).unwrap_err();
        assert!(
            e.to_string().starts_with("TRACTATUS_TTL: bad duration '9'"),
            "{e}"
        );
        let flags = Flags {
            ttl: Some("1x".into()),
            ..Default::default()
        };
        let e = resolve(&flags, &env, root).unwrap_err();
        assert!(e.to_string().starts_with("--ttl: bad duration '1x'"), "{e}");
        assert_eq!(e.exit_code(), 64);
    }

    #[test]
    fn session_settings_come_from_flag_environment_and_file() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join(".claude")).unwrap();
        std::fs::write(
            tmp.path().join(CONFIG_FILE),
            "session_idle = \"5m\"\nper_session = [\".claude/s.json\"]\n",
        )
        .unwrap();
        let root = Some(tmp.path());
        let r = resolve(&Flags::default(), &|_| None, root).unwrap();
        assert_eq!(r.session_idle, Duration::from_secs(300));
        assert_eq!(r.per_session, [".claude/s.json"]);
        assert_eq!(r.session, None);
        let env = |k: &str| match k {
            "TRACTATUS_SESSION_ID" => Some(" env-s ".to_owned()),
            "TRACTATUS_SESSION_IDLE" => Some("0".to_owned()),
            _ => None,
        };
        let e = resolve(&Flags::default(), &env, root).unwrap_err();
        assert!(e.to_string().starts_with("TRACTATUS_SESSION_IDLE: "), "{e}");
        let env = |k: &str| (k == "TRACTATUS_SESSION_ID").then(|| " env-s ".to_owned());
        assert_eq!(
            resolve(&Flags::default(), &env, root)
                .unwrap()
                .session
                .as_deref(),
            Some("env-s")
        );
        let flags = Flags {
            session: Some("flag-s".into()),
            ..Default::default()
        };
        assert_eq!(
            resolve(&flags, &env, root).unwrap().session.as_deref(),
            Some("flag-s")
        );
    }

    #[test]
    fn resolving_a_fresh_repository_writes_nothing_and_leaves_the_namespace_unset() {
        let tmp = tempfile::tempdir().unwrap();
        let env = |k: &str| (k == "TRACTATUS_REDIS").then(|| "redis://127.0.0.1:1".to_owned());
        let r = resolve(&Flags::default(), &env, Some(tmp.path())).unwrap();
        assert_eq!(r.namespace, Namespace::Unset);
        assert_eq!(r.config.namespace, "");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
        let r = resolve(&Flags::default(), &env, None).unwrap();
        assert_eq!(r.namespace, Namespace::Default);
        assert_eq!(r.config.namespace, "default");
    }

    fn with_file(text: &str) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join(".claude")).unwrap();
        std::fs::write(tmp.path().join(CONFIG_FILE), text).unwrap();
        tmp
    }

    #[test]
    fn credentials_go_only_to_endpoints_the_user_named_or_trusts() {
        let tmp = with_file("redis = [\"redis://far.example:7000\"]\n");
        let root = Some(tmp.path());
        let env = |k: &str| (k == "TRACTATUS_REDIS_PASSWORD").then(|| "pw x".to_owned());
        let e = resolve(&Flags::default(), &env, root).unwrap_err();
        assert_eq!(e.exit_code(), 64);
        assert!(e.to_string().contains("far.example:7000"), "{e}");
        assert!(!e.to_string().contains("pw x"), "{e}");
        // Without credentials, the file's endpoints are used as they are.
        let r = resolve(&Flags::default(), &|_| None, root).unwrap();
        assert_eq!(r.config.nodes[0].secret_url(), "redis://far.example:7000");
        // Named by the user, or trusted: the password goes along.
        let flags = Flags {
            redis: vec!["redis://far.example:7000".into()],
            ..Default::default()
        };
        let r = resolve(&flags, &env, root).unwrap();
        assert_eq!(
            r.config.nodes[0].secret_url(),
            "redis://:pw%20x@far.example:7000"
        );
        let trusted = |k: &str| match k {
            "TRACTATUS_TRUSTED_REDIS" => Some("far.example:7000".to_owned()),
            _ => env(k),
        };
        let r = resolve(&Flags::default(), &trusted, root).unwrap();
        assert_eq!(
            r.config.nodes[0].secret_url(),
            "redis://:pw%20x@far.example:7000"
        );
    }

    #[test]
    fn durations_out_of_their_range_are_refused_naming_where_they_came_from() {
        for (line, origin) in [
            ("wait = \"999999999999h\"", "`wait` in"),
            ("wait = \"25h\"", "`wait` in"),
            ("max_hold = \"0s\"", "`max_hold` in"),
            ("max_hold = \"9s\"", "`max_hold` in"),
            ("max_hold = \"721h\"", "`max_hold` in"),
        ] {
            let tmp = with_file(&format!("{line}\n"));
            let e = resolve(&Flags::default(), &|_| None, Some(tmp.path())).unwrap_err();
            assert_eq!(e.exit_code(), 64, "{line}");
            assert!(e.to_string().starts_with(origin), "{line}: {e}");
        }
        let tmp = with_file("wait = \"24h\"\nmax_hold = \"10s\"\n");
        let r = resolve(&Flags::default(), &|_| None, Some(tmp.path())).unwrap();
        assert_eq!(r.wait, Duration::from_secs(86_400));
        assert_eq!(r.config.max_hold, Duration::from_secs(10));
    }

    #[test]
    fn a_redis_setting_that_names_no_url_is_refused_not_taken_for_local_locks() {
        let env = |k: &str| (k == "TRACTATUS_REDIS").then(|| ",,,".to_owned());
        let e = resolve(&Flags::default(), &env, None).unwrap_err();
        assert_eq!(e.exit_code(), 64);
        assert!(e.to_string().starts_with("TRACTATUS_REDIS:"), "{e}");
        let tmp = with_file("redis = [\" , \"]\n");
        let e = resolve(&Flags::default(), &|_| None, Some(tmp.path())).unwrap_err();
        assert!(e.to_string().starts_with("`redis` in"), "{e}");
        let tmp = with_file("redis = []\n");
        let r = resolve(&Flags::default(), &|_| None, Some(tmp.path())).unwrap();
        assert!(r.config.nodes.is_empty());
    }

    #[test]
    fn a_per_session_list_past_its_cap_is_refused_before_any_entry_is_checked() {
        let list: Vec<String> = (0..=256)
            .map(|i| format!("\".claude/s{i}.json\""))
            .collect();
        let tmp = with_file(&format!("per_session = [{}]\n", list.join(",")));
        let e = resolve(&Flags::default(), &|_| None, Some(tmp.path())).unwrap_err();
        assert_eq!(e.exit_code(), 64);
        assert!(e.to_string().contains("at most 256"), "{e}");
    }

    #[test]
    fn a_config_file_that_is_a_link_fifo_or_too_big_is_refused_as_bad_data() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("t.toml"), "namespace = \"theirs\"\n").unwrap();
        std::os::unix::fs::symlink(outside.path(), tmp.path().join(".claude")).unwrap();
        let e = read_settings(tmp.path()).unwrap_err();
        assert_eq!(e.exit_code(), 65, "{e}");
        assert!(e.to_string().contains(".claude is a symbolic link"), "{e}");
        std::fs::remove_file(tmp.path().join(".claude")).unwrap();
        std::fs::create_dir(tmp.path().join(".claude")).unwrap();
        let cfg = tmp.path().join(CONFIG_FILE);
        std::os::unix::fs::symlink(outside.path().join("t.toml"), &cfg).unwrap();
        assert_eq!(read_settings(tmp.path()).unwrap_err().exit_code(), 65);
        std::fs::remove_file(&cfg).unwrap();
        nix::unistd::mkfifo(&cfg, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = read_settings(tmp.path()).unwrap_err();
        assert!(e.to_string().contains("a FIFO"), "{e}");
        std::fs::remove_file(&cfg).unwrap();
        std::fs::write(&cfg, vec![b'#'; 1024 * 1024 + 1]).unwrap();
        let e = read_settings(tmp.path()).unwrap_err();
        assert!(e.to_string().contains("larger than 1048576 bytes"), "{e}");
    }

    #[test]
    fn the_first_namespace_is_written_through_handles_and_never_through_a_link() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), tmp.path().join(".claude")).unwrap();
        let e = ensure_namespace(tmp.path(), &FileSettings::default()).unwrap_err();
        assert_eq!(e.exit_code(), 65, "{e}");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        std::fs::remove_file(tmp.path().join(".claude")).unwrap();
        let ns = ensure_namespace(tmp.path(), &FileSettings::default()).unwrap();
        assert_eq!(
            read_settings(tmp.path()).unwrap().namespace,
            Some(ns.clone())
        );
        assert_eq!(
            ensure_namespace(tmp.path(), &FileSettings::default()).unwrap(),
            ns
        );
        // Nothing but the config file is left in .claude (no temp file).
        let names: Vec<_> = std::fs::read_dir(tmp.path().join(".claude"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["tractatus-lock.toml"]);
    }

    #[test]
    fn a_password_file_that_is_a_fifo_is_refused_at_once() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("pw");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let path = fifo.display().to_string();
        let env = |k: &str| (k == "TRACTATUS_REDIS_PASSWORD_FILE").then(|| path.clone());
        let flags = Flags {
            redis: vec!["redis://h:1".into()],
            ..Default::default()
        };
        let e = resolve(&flags, &env, None).unwrap_err();
        assert_eq!(e.exit_code(), 64);
        assert!(e.to_string().contains("a FIFO"), "{e}");
    }
}
