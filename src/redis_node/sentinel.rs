//! Redis behind Sentinel: where a [`super::RedisNode`] opens its connections ([`Endpoint`]): a
//! plain URL names one server; a Sentinel URL names the sentinels and the service, and every new
//! connection asks them for the current master. The URL form itself is parsed in the leaf
//! `crate::url::sentinel` and re-exported here.
//!
//! After a failover the cached connection breaks (the old master is gone, or comes back as a
//! replica and answers writes with `READONLY`; the node drops the connection on either), and
//! the next connect asks the sentinels again. The master they name is checked with `ROLE` before
//! it is used (the `redis` crate does it), so a node that says it is a replica is refused.
//! Whether the new master lacks the last writes is the grant script's business (see
//! `lua/grant.lua`, "Failover quarantine").
//!
//! The query's `sentinel_username=` and `sentinel_password=` are the sentinels' own credentials
//! (`requirepass` or an ACL user on the sentinels), sent to no master. `rediss+sentinel://`
//! speaks TLS to the sentinels and the master, trusting the configured certificate authority if
//! any.

use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{ConnectionAddr, ErrorKind, RedisResult, TlsCertificates, TlsMode};
use tokio::sync::Mutex;

use super::describe;
use crate::backend::NodeError;
use crate::url::NodeUrl;
pub use crate::url::sentinel::{
    DEFAULT_PORT, PASSWORD_PARAM, SentinelUrl, USERNAME_PARAM, is_sentinel_url, parse,
};

/// Where a node opens its connections.
pub enum Endpoint {
    /// One server, always the same.
    Direct(redis::Client),
    /// The master a group of sentinels names at the time of connecting.
    Sentinel(Sentinels),
}

/// The sentinels of an [`Endpoint`].
pub struct Sentinels {
    /// Asks the sentinels, then connects to the master they name.
    client: Mutex<SentinelClient>,
    /// The URL gave the sentinels a password (said when they refuse).
    with_password: bool,
}

impl Endpoint {
    /// The endpoint of a Sentinel URL, trusting `tls_ca` (PEM) for `rediss+sentinel://`.
    pub fn sentinel(url: &SentinelUrl, tls_ca: Option<&[u8]>) -> RedisResult<Self> {
        let addrs = url.sentinels.iter().map(|(host, port)| {
            if url.tls {
                ConnectionAddr::TcpTls {
                    host: host.clone(),
                    port: *port,
                    insecure: false,
                    tls_params: None,
                }
            } else {
                ConnectionAddr::Tcp(host.clone(), *port)
            }
        });
        let mut b = SentinelClientBuilder::new(addrs, &url.service, SentinelServerType::Master)?
            .set_client_to_redis_db(url.db);
        if let Some(u) = &url.username {
            b = b.set_client_to_redis_username(u);
        }
        if let Some(p) = &url.password {
            b = b.set_client_to_redis_password(p);
        }
        if let Some(u) = &url.sentinel_username {
            b = b.set_client_to_sentinel_username(u);
        }
        if let Some(p) = &url.sentinel_password {
            b = b.set_client_to_sentinel_password(p);
        }
        if url.tls {
            b = b
                .set_client_to_redis_tls_mode(TlsMode::Secure)
                .set_client_to_sentinel_tls_mode(TlsMode::Secure);
            if let Some(pem) = tls_ca {
                let certs = || TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.to_vec()),
                };
                b = b
                    .set_client_to_redis_certificates(certs())
                    .set_client_to_sentinel_certificates(certs());
            }
        }
        Ok(Endpoint::Sentinel(Sentinels {
            client: Mutex::new(b.build()?),
            with_password: url.sentinel_password.is_some(),
        }))
    }

    /// The client to open a connection with now: for Sentinel, the current master's (asked of
    /// the sentinels, and checked to say it is a master). A refused password says whose it was.
    pub async fn client(&self, url: &NodeUrl) -> Result<redis::Client, NodeError> {
        let (s, with_password) = match self {
            Endpoint::Direct(c) => return Ok(c.clone()),
            Endpoint::Sentinel(s) => (&s.client, s.with_password),
        };
        let mut s = s.lock().await;
        let e = match s.async_get_client().await {
            Ok(c) => return Ok(c),
            Err(e) if refused_auth(&e) => e,
            Err(e) => return Err(NodeError::new(describe(&e, url))),
        };
        // The sentinels and the master refuse in the same words: asking a sentinel alone (only
        // on this failure path) tells whose password is wrong.
        let cause = match s.async_get_sentinel_client().await {
            Err(se) if refused_auth(&se) => {
                let said = se
                    .to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                if with_password {
                    format!(
                        "the sentinels refused their password ({said}): check \
                         TRACTATUS_SENTINEL_PASSWORD or the URL's {PASSWORD_PARAM}= (and \
                         {USERNAME_PARAM}=)"
                    )
                } else {
                    format!(
                        "the sentinels want a password, and none was given ({said}): set \
                         TRACTATUS_SENTINEL_PASSWORD(_FILE) or the URL's {PASSWORD_PARAM}="
                    )
                }
            }
            _ => format!("the master the sentinels name: {}", describe(&e, url)),
        };
        Err(NodeError::new(cause))
    }
}

/// True when `e` is a server refusing the credentials (or their absence).
fn refused_auth(e: &redis::RedisError) -> bool {
    let text = e.to_string();
    e.kind() == ErrorKind::AuthenticationFailed
        || ["WRONGPASS", "NOAUTH", "unauthenticated"]
            .iter()
            .any(|w| text.contains(w))
}
