//! Checked configuration: raw flags, environment and the repository's config file become a
//! [`Config`] before any I/O, and bad input is refused here with a message saying what would be
//! right.

use std::time::Duration;

use crate::error::{Error, Result};
pub(crate) use crate::redact::has_password;
pub use crate::redact::{redact, redact_text};
pub use crate::url::NodeUrl;

/// Lease time-to-live when none is given: 10 s.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// How long to wait for a held lock when none is given: 30 s.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);
/// Longest a lease is renewed for one holder when none is given: 1 h.
pub const DEFAULT_MAX_HOLD: Duration = Duration::from_secs(3600);
/// Per-node deadline of one Redis operation when none is given: 250 ms.
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_millis(250);
/// Deadline to open the connections when none is given: 1 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long after its start a Redis server that started empty (and was not marked with
/// `lock init`) refuses to grant locks it does not know, when none is given: 10 s. Every
/// client's TTL must fit in it.
pub const DEFAULT_QUARANTINE: Duration = Duration::from_secs(10);
/// How long a grant waits for `wait_replicas` replicas to acknowledge it when none is given:
/// 100 ms.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_millis(100);
/// Longest lease TTL accepted: 1 h (longer holds renew; see `max_hold`).
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// Longest wait for a held lock the settings accept: 24 h (a longer one is a typo, and would
/// keep a hook or a CI job waiting for days).
pub const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);
/// Longest hold the settings accept: 30 days. The shortest is the TTL: below it, a lease
/// would be given up at its first renewal.
pub const MAX_MAX_HOLD: Duration = Duration::from_secs(30 * 24 * 3600);
/// Time a command gets between SIGTERM and SIGKILL after its lease is lost: 5 s.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);

/// Parse a duration as the CLI writes it: `500ms`, `10s`, `2m`, `1h`; a bare `0` means zero.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let bad = || {
        Error::usage(format!(
            "bad duration '{text}': expected a whole number with a unit, like 500ms, 10s, 2m or 1h"
        ))
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(bad()),
    };
    ms.map(Duration::from_millis).ok_or_else(bad)
}

/// Each URL of a list whose entries may each hold several, comma-separated (`--redis a,b`,
/// `TRACTATUS_REDIS=a,b,c`), trimmed, empty ones dropped. A piece without a scheme (`://`)
/// belongs to the URL before it: a Sentinel URL lists its sentinels with commas
/// (`redis+sentinel://h1:26379,h2:26380/mymaster`).
pub(crate) fn split_urls<S: AsRef<str>>(urls: &[S]) -> impl Iterator<Item = &str> {
    urls.iter()
        .flat_map(|u| split_one(u.as_ref()))
        .map(str::trim)
        .filter(|u| !u.is_empty())
}

/// The URLs of one comma-separated entry: a new URL begins at each piece with a scheme (or
/// after an empty piece); the other pieces extend the URL before them.
fn split_one(list: &str) -> Vec<&str> {
    let (mut urls, mut start, mut at) = (Vec::new(), 0, 0);
    for piece in list.split(',') {
        if at > start && (piece.contains("://") || piece.trim().is_empty()) {
            urls.push(&list[start..at - 1]);
            start = at;
        }
        at += piece.len() + 1;
    }
    urls.push(&list[start..]);
    urls
}

/// Parse the Redis endpoints (flags or `TRACTATUS_REDIS`): none (local locks), one, or three
/// and more (Redlock). Two are refused: a majority of two is both, so one failure stops all.
pub fn parse_nodes<S: AsRef<str>>(urls: &[S]) -> Result<Vec<NodeUrl>> {
    let nodes = split_urls(urls)
        .map(NodeUrl::parse)
        .collect::<Result<Vec<_>>>()?;
    if nodes.len() == 2 {
        return Err(Error::usage(
            "two Redis URLs given: use one Redis, or three or more independent masters \
             (with two, a majority is both, so losing either one stops every lock)",
        ));
    }
    for (i, a) in nodes.iter().enumerate() {
        if nodes[..i].contains(a) {
            return Err(Error::usage(format!(
                "Redis URL {a} is given twice: Redlock needs independent masters"
            )));
        }
    }
    Ok(nodes)
}

/// Check a lock name: 1 to 200 characters of `A-Z a-z 0-9 . _ - /`, no `..` segment, no
/// leading `/`. These rules keep every name inside its namespace's keys.
pub fn check_lock_name(name: &str) -> Result<()> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    if name.is_empty() || name.len() > 200 || !ok_chars {
        return Err(Error::usage(format!(
            "bad lock name '{}': use 1 to 200 characters from A-Z a-z 0-9 . _ - /",
            name.escape_default()
        )));
    }
    if name.starts_with('/') || name.split('/').any(|s| s == ".." || s.is_empty()) {
        return Err(Error::usage(format!(
            "bad lock name '{name}': no leading '/', no empty or '..' path segment"
        )));
    }
    Ok(())
}

/// Check a namespace: 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
pub(crate) fn check_namespace(ns: &str) -> Result<()> {
    if crate::shown::is_plain_name(ns, 64, false) {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "bad namespace '{}': use 1 to 64 characters from A-Z a-z 0-9 . _ -",
            ns.escape_default()
        )))
    }
}

/// Everything the coordinator needs, checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// Redis endpoints; empty means local OS file locks. Default: empty.
    pub nodes: Vec<NodeUrl>,
    /// Which repository the locks belong to. Default: `"default"`.
    pub namespace: String,
    /// Lease time-to-live. Default: [`DEFAULT_TTL`].
    pub ttl: Duration,
    /// Per-node deadline of one operation. Default: [`DEFAULT_NODE_TIMEOUT`] (the CLI lowers
    /// it to a tenth of a short TTL); [`Config::check`] refuses more than a third of the TTL.
    pub node_timeout: Duration,
    /// Deadline to open connections. Default: [`DEFAULT_CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
    /// Longest one holder keeps a lease by renewing it. Default: [`DEFAULT_MAX_HOLD`].
    pub max_hold: Duration,
    /// Entries kept in each lock's audit log. Default: 1000.
    pub log_cap: u32,
    /// PEM file of the certificate authority that signed the Redis servers' TLS certificates
    /// (`rediss://`). Default: none, the system's trust store.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// The repository these locks belong to (canonical), if any: a `tls_ca_file` inside it is
    /// read through directory handles that follow no symlink below it, since a co-user may
    /// plant one there. Default: none.
    pub repo_root: Option<std::path::PathBuf>,
    /// How long after its start a Redis server (one Redis or a Redlock master) refuses to grant
    /// a lock it does not know, unless `lock init` marked it as brand-new: a server that
    /// restarted empty forgot its leases, and they must have expired first. Must be at least
    /// the longest TTL any client uses; [`Config::check`] refuses a TTL above it. Default:
    /// [`DEFAULT_QUARANTINE`].
    pub quarantine: Duration,
    /// After each grant, wait (Redis `WAIT`, on the connection that granted) until this many
    /// replicas acknowledged the lease and its token, so that it survives a failover to one of
    /// them; 0 turns it off. A grant that fewer replicas acknowledge in `wait_timeout` still
    /// stands (see the README, "Failover"). Default: 0.
    pub wait_replicas: u32,
    /// How long a grant waits for `wait_replicas`; at most a third of the TTL. Default:
    /// [`DEFAULT_WAIT_TIMEOUT`].
    pub wait_timeout: Duration,
}

impl Config {
    /// A config for the given nodes with every other field at its default.
    pub fn new(nodes: Vec<NodeUrl>) -> Self {
        Config {
            nodes,
            namespace: "default".to_owned(),
            ttl: DEFAULT_TTL,
            node_timeout: DEFAULT_NODE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_hold: DEFAULT_MAX_HOLD,
            log_cap: 1000,
            tls_ca_file: None,
            repo_root: None,
            quarantine: DEFAULT_QUARANTINE,
            wait_replicas: 0,
            wait_timeout: DEFAULT_WAIT_TIMEOUT,
        }
    }

    /// Refuse combinations that cannot work: a TTL too short to renew or longer than an hour,
    /// a node timeout that does not fit in the TTL, a Redis TTL longer than the restart
    /// quarantine, a bad namespace.
    pub fn check(&self) -> Result<()> {
        check_namespace(&self.namespace)?;
        if self.ttl < Duration::from_millis(300) || self.ttl > MAX_TTL {
            return Err(Error::usage(format!(
                "ttl {} ms is out of range: use 300ms to 1h (longer holds renew the lease)",
                self.ttl.as_millis()
            )));
        }
        if !self.nodes.is_empty() && self.ttl > self.quarantine {
            return Err(Error::usage(format!(
                "ttl {} ms is longer than the Redis restart quarantine ({} ms): a Redis that \
                 restarted empty could grant a lease another client still holds; raise the \
                 quarantine (TRACTATUS_QUARANTINE, or `quarantine` in .claude/tractatus-lock.toml) \
                 to the longest TTL any client uses",
                self.ttl.as_millis(),
                self.quarantine.as_millis()
            )));
        }
        if self.node_timeout.is_zero() || self.node_timeout.saturating_mul(3) > self.ttl {
            return Err(Error::usage(format!(
                "node timeout {} ms must be above 0 and at most a third of the ttl ({} ms)",
                self.node_timeout.as_millis(),
                self.ttl.as_millis()
            )));
        }
        if self.wait_replicas > 0
            && (self.wait_timeout.is_zero() || self.wait_timeout.saturating_mul(3) > self.ttl)
        {
            return Err(Error::usage(format!(
                "replica wait timeout {} ms must be above 0 and at most a third of the ttl ({} ms)",
                self.wait_timeout.as_millis(),
                self.ttl.as_millis()
            )));
        }
        if self.connect_timeout.is_zero() {
            return Err(Error::usage("connect timeout must be above 0"));
        }
        Ok(())
    }

    /// True when several independent masters form a Redlock quorum.
    pub fn is_redlock(&self) -> bool {
        self.nodes.len() >= 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_refuse_garbage() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for bad in [
            "",
            "10",
            "s",
            "1.5s",
            "-1s",
            "10 parsecs",
            "99999999999999999999h",
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert_eq!(e.exit_code(), 64, "{bad}");
        }
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://alice:s3cret@127.0.0.1:6379/0"),
            "redis://alice:***@127.0.0.1:6379/0"
        );
        assert_eq!(redact("rediss://:s3cret@h:1"), "rediss://:***@h:1");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
        assert!(has_password("redis://alice:pw@h:1") && has_password("redis://:pw@h:1"));
        assert!(!has_password("redis://alice@h:1") && !has_password("redis://h:1"));
        assert_eq!(redact("redis://u:pa/ss@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(
            redact("--redis=redis://:pw@h:1"),
            "--redis=redis://:***@h:1"
        );
        let e = NodeUrl::parse("http://u:s3cret@h").unwrap_err();
        assert!(!e.to_string().contains("s3cret"));
    }

    #[test]
    fn a_password_in_the_query_is_found_hidden_and_refused() {
        assert!(has_password("redis://h:1/?password=x"));
        assert!(has_password("redis://h:1/?db=0&password=a@b"));
        assert!(!has_password("redis://h:1/?xpassword=x"));
        assert_eq!(
            redact("redis://u@h:1/?password=a@b&cluster=false"),
            "redis://***@h:1/?password=***&cluster=false"
        );
        for url in ["redis://h:1/?password=s3cret", "redis://h:1/?username=u"] {
            let e = NodeUrl::parse(url).unwrap_err();
            assert_eq!(e.exit_code(), 64);
            assert!(!e.to_string().contains("s3cret"), "{e}");
            assert!(e.to_string().contains("TRACTATUS_REDIS_PASSWORD"), "{e}");
        }
    }

    #[test]
    fn the_cluster_parameter_is_ours_and_stripped() {
        let u = NodeUrl::parse("redis://:pw@h:1?cluster=true").unwrap();
        assert_eq!(
            (u.cluster(), u.secret_url()),
            (Some(true), "redis://:pw@h:1")
        );
        assert_eq!(u.to_string(), "redis://:***@h:1?cluster=true");
        let u = NodeUrl::parse("redis://h:1/0?protocol=resp3&cluster=false").unwrap();
        assert_eq!(u.cluster(), Some(false));
        assert_eq!(u.secret_url(), "redis://h:1/0?protocol=resp3");
        assert_eq!(NodeUrl::parse("redis://h:1").unwrap().cluster(), None);
        let e = NodeUrl::parse("redis://:s3cret@h:1?cluster=yes").unwrap_err();
        assert_eq!(e.exit_code(), 64);
        assert!(e.to_string().contains("true or false") && !e.to_string().contains("s3cret"));
        let v6 = NodeUrl::parse("redis://h:1?seed=[::1]:7302").unwrap();
        assert_eq!(v6.seeds(), &[("::1".to_owned(), 7302)]);
        let u = NodeUrl::parse("redis://h:1?seed=h2:2&seed=10.0.0.3:3").unwrap();
        assert_eq!(u.cluster(), Some(true));
        assert_eq!(
            u.seeds(),
            [("h2".to_owned(), 2), ("10.0.0.3".to_owned(), 3)]
        );
        assert_eq!(u.secret_url(), "redis://h:1");
        for bad in ["seed=h2", "seed=:2", "seed=h2:x", "cluster=false&seed=h2:2"] {
            let e = NodeUrl::parse(&format!("redis://h:1?{bad}")).unwrap_err();
            assert_eq!(e.exit_code(), 64, "{bad}");
        }
    }

    #[test]
    fn two_nodes_are_refused_one_and_three_accepted() {
        assert_eq!(parse_nodes(&["redis://a:1"]).unwrap().len(), 1);
        assert_eq!(
            parse_nodes(&["redis://a:1,redis://b:1,redis://c:1"])
                .unwrap()
                .len(),
            3
        );
        let e = parse_nodes(&["redis://a:1", "redis://b:1"]).unwrap_err();
        assert_eq!(e.exit_code(), 64);
        assert!(e.to_string().contains("majority"));
    }

    #[test]
    fn a_sentinel_url_keeps_its_sentinels_when_urls_are_split_on_commas() {
        let urls = ["redis://a:1, redis+sentinel://h1:26379,h2:26380/m ,redis://b:1,,redis://c:1,"];
        assert_eq!(
            split_urls(&urls).collect::<Vec<_>>(),
            [
                "redis://a:1",
                "redis+sentinel://h1:26379,h2:26380/m",
                "redis://b:1",
                "redis://c:1"
            ]
        );
        let one = parse_nodes(&["redis+sentinel://:s3cret@h1,h2:26380/m"]).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].to_string(), "redis+sentinel://:***@h1,h2:26380/m");
        let e = parse_nodes(&["redis+sentinel://:s3cret@h1:x/m"]).unwrap_err();
        assert_eq!(e.exit_code(), 64);
        assert!(e.to_string().contains("bad sentinel port"), "{e}");
        assert!(!e.to_string().contains("s3cret"), "{e}");
        let e = parse_nodes(&["redis+sentinel://h1:26379"]).unwrap_err();
        assert!(e.to_string().contains("names no service"), "{e}");
    }

    #[test]
    fn the_sentinels_password_is_hidden_and_counts_as_a_password() {
        let url = "redis+sentinel://:m@st@h1,h2/m/1?sentinel_username=sam&sentinel_password=p@ss";
        assert_eq!(
            NodeUrl::parse(url).unwrap().to_string(),
            "redis+sentinel://:***@h1,h2/m/1?sentinel_username=sam&sentinel_password=***"
        );
        assert!(has_password("redis+sentinel://h1/m?sentinel_password=x"));
        assert!(has_password(
            "redis+sentinel://h1/m?sentinel_username=u&sentinel_password=x"
        ));
        assert!(!has_password("redis+sentinel://h1/m?sentinel_username=u"));
        assert!(!has_password("redis+sentinel://sam@h1/m"));
        assert_eq!(
            redact("redis+sentinel://h/m?sentinel_password=a%26b"),
            "redis+sentinel://h/m?sentinel_password=***"
        );
        for bad in [
            "redis+sentinel://h1/m?sentinel_pasword=s3cret",
            "redis+sentinel://h1/m?sentinel_password=",
            "redis+sentinel://h1/m?sentinel_password=s3cret&sentinel_password=s3cret",
            "redis://h1:1?sentinel_password=s3cret",
        ] {
            let e = NodeUrl::parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), 64, "{bad}");
            assert!(!e.to_string().contains("s3cret"), "{e}");
        }
    }

    #[test]
    fn a_redis_ttl_must_fit_in_the_restart_quarantine() {
        let three = parse_nodes(&["redis://a:1,redis://b:1,redis://c:1"]).unwrap();
        let mut c = Config::new(three);
        c.check().unwrap();
        c.ttl = Duration::from_secs(11);
        let e = c.check().unwrap_err();
        assert_eq!(e.exit_code(), 64);
        assert!(e.to_string().contains("quarantine"), "{e}");
        c.quarantine = Duration::from_secs(11);
        c.check().unwrap();
        // One Redis forgets as a master does: the same rule.
        let mut one = Config::new(parse_nodes(&["redis://a:1"]).unwrap());
        one.ttl = Duration::from_secs(60);
        assert!(one.check().unwrap_err().to_string().contains("quarantine"));
        one.quarantine = Duration::from_secs(2 * 3600);
        one.check().unwrap();
        one.ttl = Duration::from_secs(2 * 3600);
        assert_eq!(one.check().unwrap_err().exit_code(), 64);
        let mut local = Config::new(Vec::new());
        local.ttl = Duration::from_secs(60);
        local.check().unwrap();
    }

    #[test]
    fn lock_names_cannot_escape_their_namespace() {
        check_lock_name(".claude/instruction-history.json").unwrap();
        for bad in ["", "/etc/passwd", "a/../b", "a}b", "a*", "a b", "a//b"] {
            assert!(check_lock_name(bad).is_err(), "{bad}");
        }
    }
}
