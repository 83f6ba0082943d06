//! Redis URLs as text: [`NodeUrl`] (a `redis://`, `rediss://` or Sentinel URL, checked, shown
//! without its password) and the Sentinel URL form ([`sentinel`]). A leaf: it connects nothing
//! and knows nothing of the nodes, so that [`crate::config`] checks URLs and
//! [`crate::redis_node`] opens them without either importing the other.

pub(crate) mod sentinel;

use std::fmt;

use crate::error::{Error, Result};
use crate::redact::redact;

/// One Redis endpoint. Displays without its password.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeUrl {
    url: String,
    shown: String,
    cluster: Option<bool>,
    seeds: Vec<(String, u16)>,
}

impl NodeUrl {
    /// Check one `redis://` or `rediss://` URL, or a `redis+sentinel://` (`rediss+sentinel://`)
    /// URL naming sentinels and a service (its form: `url::sentinel`).
    pub fn parse(url: &str) -> Result<Self> {
        let url = url.trim();
        if sentinel::is_sentinel_url(url) {
            sentinel::parse(url).map_err(|e| {
                // Without its query: a misspelt parameter's value may be a password.
                let shown = match url.split_once('?') {
                    Some((base, _)) => format!("{}?...", redact(base)),
                    None => redact(url),
                };
                Error::usage(format!("bad Sentinel URL '{shown}': {e}"))
            })?;
            // A Sentinel names a master, never a cluster: no cluster parameters.
            return Ok(NodeUrl {
                url: url.to_owned(),
                shown: redact(url),
                cluster: Some(false),
                seeds: Vec::new(),
            });
        }
        let rest = url
            .strip_prefix("redis://")
            .or_else(|| url.strip_prefix("rediss://"))
            .ok_or_else(|| {
                Error::usage(format!(
                    "bad Redis URL '{}': it must start with redis://, rediss:// or \
                     redis+sentinel://",
                    redact(url)
                ))
            })?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(Error::usage(format!(
                "bad Redis URL '{}': it names no host",
                redact(url)
            )));
        }
        if url.contains("?sentinel_") || url.contains("&sentinel_") {
            return Err(Error::usage(format!(
                "bad Redis URL '{}': sentinel_username= and sentinel_password= belong to a \
                 redis+sentinel:// URL",
                redact(url)
            )));
        }
        if let Some(key) = credential_param(url) {
            return Err(Error::usage(format!(
                "bad Redis URL '{}': {key}= in its query is not used by the Redis client (the \
                 connection would go unauthenticated): give the password in \
                 TRACTATUS_REDIS_PASSWORD or TRACTATUS_REDIS_PASSWORD_FILE and the user in \
                 TRACTATUS_REDIS_USERNAME",
                redact(url)
            )));
        }
        let ClusterParams {
            plain,
            cluster,
            seeds,
        } = take_cluster_params(url)?;
        redis::parse_redis_url(&plain).ok_or_else(|| {
            Error::usage(format!(
                "bad Redis URL '{}': it does not parse",
                redact(url)
            ))
        })?;
        Ok(NodeUrl {
            url: plain,
            shown: redact(url),
            cluster,
            seeds,
        })
    }

    /// What the URL's `cluster` parameter says: `Some(true)` a Redis Cluster, `Some(false)` one
    /// plain server, `None` find out (see `redis_node::cluster`).
    pub fn cluster(&self) -> Option<bool> {
        self.cluster
    }

    /// Further nodes of the same Redis Cluster (`seed=host:port`, repeatable) that a new
    /// connection may learn the cluster from when the URL's own node is down.
    pub fn seeds(&self) -> &[(String, u16)] {
        &self.seeds
    }

    /// The full URL, password included: for connecting only, never for display.
    pub(crate) fn secret_url(&self) -> &str {
        &self.url
    }
}

impl fmt::Display for NodeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for NodeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeUrl({})", self.shown)
    }
}

/// What [`take_cluster_params`] takes out of a URL.
struct ClusterParams {
    /// The URL without them, for the `redis` crate.
    plain: String,
    /// `cluster=true|false`; `Some(true)` also when seeds are given.
    cluster: Option<bool>,
    /// `seed=host:port`, in order.
    seeds: Vec<(String, u16)>,
}

/// The query parameters that are ours, not the `redis` crate's: `cluster=true|false` and
/// `seed=host:port` (repeatable; a seed says the URL names a cluster).
fn take_cluster_params(url: &str) -> Result<ClusterParams> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok(ClusterParams {
            plain: url.to_owned(),
            cluster: None,
            seeds: Vec::new(),
        });
    };
    let bad = |what: String| Error::usage(format!("bad Redis URL '{}': {what}", redact(url)));
    let mut cluster = None;
    let mut seeds = Vec::new();
    let mut kept = Vec::new();
    for pair in query.split('&') {
        if let Some(value) = pair.strip_prefix("cluster=") {
            cluster = match value {
                "true" => Some(true),
                "false" => Some(false),
                other => {
                    return Err(bad(format!(
                        "cluster={} must be true or false",
                        other.escape_default()
                    )));
                }
            };
        } else if let Some(value) = pair.strip_prefix("seed=") {
            let seed = value
                .rsplit_once(':')
                .filter(|(host, _)| !host.is_empty() && !host.contains(['@', '/']))
                // An IPv6 address comes in brackets, as in a URL: `seed=[::1]:7302`.
                .map(|(host, port)| {
                    let host = host
                        .strip_prefix('[')
                        .and_then(|h| h.strip_suffix(']'))
                        .unwrap_or(host);
                    (host, port)
                })
                .filter(|(host, _)| !host.is_empty())
                .and_then(|(host, port)| Some((host.to_owned(), port.parse::<u16>().ok()?)))
                .ok_or_else(|| {
                    bad(format!(
                        "seed={} must be host:port (IPv6: [address]:port)",
                        value.escape_default()
                    ))
                })?;
            seeds.push(seed);
        } else {
            kept.push(pair);
        }
    }
    if !seeds.is_empty() {
        if cluster == Some(false) {
            return Err(bad(
                "seed= names further nodes of a Redis Cluster, and cluster=false says it is none"
                    .to_owned(),
            ));
        }
        cluster = Some(true);
    }
    let plain = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok(ClusterParams {
        plain,
        cluster,
        seeds,
    })
}

/// The credential a plain Redis URL's query names (`password=`, `username=`), which the Redis
/// client ignores.
fn credential_param(url: &str) -> Option<&'static str> {
    let (_, query) = url.split_once('?')?;
    query.split('&').find_map(|pair| {
        let key = pair.split('=').next().unwrap_or("");
        ["password", "username"].into_iter().find(|k| *k == key)
    })
}
