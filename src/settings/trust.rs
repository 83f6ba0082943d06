//! Which Redis endpoints may receive the user's credentials. The config file is committed, and
//! anyone who can write to the checkout can change it, so an endpoint that only it names never
//! gets a password or a user name from the environment (`TRACTATUS_REDIS_PASSWORD(_FILE)`,
//! `TRACTATUS_REDIS_USERNAME`, `TRACTATUS_SENTINEL_*`) unless the user trusts it:
//! - endpoints the user names (`--redis`, `TRACTATUS_REDIS`) are trusted, the file's list is
//!   then not used at all;
//! - an endpoint listed in `TRACTATUS_TRUSTED_REDIS` (`host:port` or `host`, separated by commas
//!   or spaces) or in the per-user file `$XDG_CONFIG_HOME/tractatus/trusted-redis` (else
//!   `~/.config/tractatus/trusted-redis`; one or more entries a line, `#` comments) is trusted.
//!
//! An endpoint is every address a URL makes us connect to with those credentials: the server
//! of a `redis://` URL and its cluster `seed=`s, or every sentinel of a Sentinel URL (the
//! sentinels choose the master the password goes to). Anything else is refused before any
//! connection, naming the endpoint and how to trust it (64: the user's settings must say it).

use std::path::{Path, PathBuf};

use crate::config::NodeUrl;
use crate::error::{Error, Result};

/// The allow-list in the environment.
pub(super) const TRUSTED_ENV: &str = "TRACTATUS_TRUSTED_REDIS";
/// The per-user allow-list, below `$XDG_CONFIG_HOME` (else `~/.config`).
const TRUSTED_FILE: &str = "tractatus/trusted-redis";
/// The most the per-user file may hold: 64 KiB (a few hundred endpoints).
const TRUSTED_FILE_CAP: u64 = 64 * 1024;

/// Refuse to give credentials (named by `sources`, the variables that carry them) to any
/// endpoint of `nodes` that the user does not trust.
pub(super) fn check(
    nodes: &[NodeUrl],
    sources: &[&str],
    env: &dyn Fn(&str) -> Option<String>,
    root: Option<&Path>,
) -> Result<()> {
    if sources.is_empty() || nodes.is_empty() {
        return Ok(());
    }
    let mut trusted: Vec<String> = env(TRUSTED_ENV).map(|v| entries(&v)).unwrap_or_default();
    let file = trusted_file(env);
    if let Some(path) = &file {
        trusted.extend(read_trusted_file(path, root)?);
    }
    for node in nodes {
        for endpoint in endpoints(node) {
            if !is_trusted(&endpoint, &trusted) {
                let file = file.as_ref().map_or_else(
                    || format!("~/.config/{TRUSTED_FILE}"),
                    |p| p.display().to_string(),
                );
                return Err(Error::usage(format!(
                    "refusing to send {} to {endpoint}: only {} names it, and anyone who can \
                     write to the checkout can change that file. If you trust it, name it \
                     yourself: in TRACTATUS_REDIS (or --redis), in {TRUSTED_ENV}={endpoint}, or \
                     on a line of {file}",
                    sources.join(", "),
                    super::CONFIG_FILE
                )));
            }
        }
    }
    Ok(())
}

/// The entries of an allow-list text: separated by commas, spaces or lines, `#` to the end of
/// a line a comment; each made lower case.
fn entries(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.split([',', ' ', '\t']))
        .filter(|e| !e.is_empty())
        .map(str::to_ascii_lowercase)
        .collect()
}

/// `host:port` is trusted by the entry `host:port` or by `host` alone (any port).
fn is_trusted(endpoint: &str, trusted: &[String]) -> bool {
    let host = endpoint
        .rsplit_once(':')
        .map_or(endpoint, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    trusted
        .iter()
        .any(|t| t == endpoint || t.trim_start_matches('[').trim_end_matches(']') == host)
}

/// `$XDG_CONFIG_HOME/tractatus/trusted-redis`, else `$HOME/.config/tractatus/trusted-redis`.
fn trusted_file(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let base = env("XDG_CONFIG_HOME")
        .filter(|d| d.starts_with('/'))
        .map(PathBuf::from)
        .or_else(|| {
            env("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| Path::new(&h).join(".config"))
        })?;
    Some(base.join(TRUSTED_FILE))
}

/// The per-user allow-list's entries; none when it does not exist. It must lie outside the
/// repository (a co-user could write it there); it is never waited on and is capped.
fn read_trusted_file(path: &Path, root: Option<&Path>) -> Result<Vec<String>> {
    let inside = |r: &Path| path.canonicalize().is_ok_and(|p| p.starts_with(r));
    if root.is_some_and(inside) {
        return Err(Error::usage(format!(
            "{} lies inside the repository, where others may write it: keep the list of \
             trusted Redis endpoints in your own configuration directory",
            path.display()
        )));
    }
    match crate::dir_handle::read_capped_path(path, TRUSTED_FILE_CAP) {
        Ok(bytes) => Ok(entries(&String::from_utf8_lossy(&bytes))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::usage(format!("cannot read {}: {e}", path.display())).with_source(e)),
    }
}

/// Every `host:port` that `node` makes us connect to with its credentials.
fn endpoints(node: &NodeUrl) -> Vec<String> {
    let url = node.secret_url();
    if crate::redis_node::sentinel::is_sentinel_url(url) {
        return crate::redis_node::sentinel::parse(url)
            .map(|s| s.sentinels.iter().map(|(h, p)| endpoint(h, *p)).collect())
            .unwrap_or_default();
    }
    let mut out = Vec::new();
    if let Some(u) = redis::parse_redis_url(url) {
        let host = u.host_str().unwrap_or("");
        let host = host.trim_start_matches('[').trim_end_matches(']');
        out.push(endpoint(host, u.port().unwrap_or(6379)));
    }
    out.extend(node.seeds().iter().map(|(h, p)| endpoint(h, *p)));
    out
}

/// `host:port` (an IPv6 address in brackets), the host in lower case.
fn endpoint(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_nodes;

    #[test]
    fn every_address_a_url_connects_to_is_an_endpoint() {
        let nodes = parse_nodes(&[
            "redis://Cache.Example:7000/0?seed=[::1]:7001",
            "redis+sentinel://s1,s2:26380/master",
            "rediss://[::2]",
        ])
        .unwrap();
        let all: Vec<String> = nodes.iter().flat_map(endpoints).collect();
        assert_eq!(
            all,
            [
                "cache.example:7000",
                "[::1]:7001",
                "s1:26379",
                "s2:26380",
                "[::2]:6379"
            ]
        );
    }

    #[test]
    fn an_endpoint_is_trusted_by_its_address_or_its_host() {
        let list = entries("# mine\nA.example:1, b.example\n[::1]:5 # home\n");
        assert_eq!(list, ["a.example:1", "b.example", "[::1]:5"]);
        assert!(is_trusted("a.example:1", &list));
        assert!(!is_trusted("a.example:2", &list));
        assert!(is_trusted("b.example:6379", &list));
        assert!(is_trusted("[::1]:5", &list));
        assert!(!is_trusted("[::1]:6", &list));
        assert!(!is_trusted("c.example:1", &list));
    }

    #[test]
    fn untrusted_endpoints_get_no_credentials_and_the_refusal_says_how_to_trust() {
        let nodes = parse_nodes(&["redis://evil.example:6379"]).unwrap();
        let none = |_: &str| None;
        assert!(check(&nodes, &[], &none, None).is_ok());
        let e = check(&nodes, &["TRACTATUS_REDIS_PASSWORD"], &none, None).unwrap_err();
        assert_eq!(e.exit_code(), 64);
        let m = e.to_string();
        assert!(m.contains("evil.example:6379"), "{m}");
        assert!(
            m.contains("TRACTATUS_TRUSTED_REDIS=evil.example:6379"),
            "{m}"
        );
        let env = |k: &str| (k == TRUSTED_ENV).then(|| "evil.example".to_owned());
        assert!(check(&nodes, &["TRACTATUS_REDIS_PASSWORD"], &env, None).is_ok());
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join(".config/tractatus")).unwrap();
        std::fs::write(
            home.path().join(".config/tractatus/trusted-redis"),
            "evil.example:6379\n",
        )
        .unwrap();
        let h = home.path().display().to_string();
        let env = |k: &str| (k == "HOME").then(|| h.clone());
        assert!(check(&nodes, &["TRACTATUS_REDIS_USERNAME"], &env, None).is_ok());
        // The same file inside the repository does not count.
        let root = home.path().canonicalize().unwrap();
        let e = check(&nodes, &["TRACTATUS_REDIS_USERNAME"], &env, Some(&root)).unwrap_err();
        assert!(e.to_string().contains("inside the repository"), "{e}");
    }
}
