//! Redis behind Sentinel: the `redis+sentinel://` (and `rediss+sentinel://`) URL form, and where
//! a [`super::RedisNode`] opens its connections ([`Endpoint`]): a plain URL names one server; a
//! Sentinel URL names the sentinels and the service, and every new connection asks them for the
//! current master.
//!
//! After a failover the cached connection breaks (the old master is gone, or comes back as a
//! replica and answers writes with `READONLY`; the node drops the connection on either), and
//! the next connect asks the sentinels again. The master they name is checked with `ROLE` before
//! it is used (the `redis` crate does it), so a node that says it is a replica is refused.
//! Whether the new master lacks the last writes is the grant script's business (see
//! `lua/grant.lua`, "Failover quarantine").
//!
//! URL: `redis+sentinel://[user[:password]@]host[:port][,host[:port]]...]/service[/db]`, port
//! 26379 by default. The credentials and the database are the master's; the sentinels are
//! asked without a password. `rediss+sentinel://` speaks TLS to the sentinels and the master,
//! trusting the configured certificate authority if any.

use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{ConnectionAddr, RedisResult, TlsCertificates, TlsMode};
use tokio::sync::Mutex;

/// The schemes of a Sentinel URL.
const SCHEMES: [(&str, bool); 2] = [("redis+sentinel://", false), ("rediss+sentinel://", true)];

/// Port of a sentinel when the URL names none.
pub const DEFAULT_PORT: u16 = 26379;

/// A parsed `redis+sentinel://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelUrl {
    /// TLS to the sentinels and the master (`rediss+sentinel://`).
    pub tls: bool,
    /// The master's ACL user, if any.
    pub username: Option<String>,
    /// The master's password, if any.
    pub password: Option<String>,
    /// The sentinels, in the order given.
    pub sentinels: Vec<(String, u16)>,
    /// The name the sentinels monitor the master under.
    pub service: String,
    /// The master's database number.
    pub db: i64,
}

/// True when `url` is a Sentinel URL (whatever else is wrong with it).
pub fn is_sentinel_url(url: &str) -> bool {
    SCHEMES.iter().any(|(s, _)| url.starts_with(s))
}

/// Parse a Sentinel URL; the error says what is wrong, without the URL (the caller names it,
/// password hidden).
pub fn parse(url: &str) -> Result<SentinelUrl, String> {
    let (rest, tls) = SCHEMES
        .iter()
        .find_map(|(s, tls)| url.strip_prefix(s).map(|r| (r, *tls)))
        .ok_or("it must start with redis+sentinel:// or rediss+sentinel://")?;
    let (authority, path) = rest
        .split_once('/')
        .ok_or("it names no service: redis+sentinel://host:26379[,host:port...]/SERVICE[/db]")?;
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(u) => match u.split_once(':') {
            Some((user, pass)) => (
                Some(decode(user)?).filter(|u| !u.is_empty()),
                Some(decode(pass)?),
            ),
            None => (Some(decode(u)?), None),
        },
    };
    let sentinels = hosts
        .split(',')
        .map(host_port)
        .collect::<Result<Vec<_>, _>>()?;
    let mut parts = path.split('/');
    let service = parts.next().unwrap_or("");
    if service.is_empty() {
        return Err(
            "it names no service: redis+sentinel://host:26379[,host:port...]/SERVICE[/db]".into(),
        );
    }
    let db = match parts.next() {
        None | Some("") => 0,
        Some(d) => d
            .parse::<i64>()
            .ok()
            .filter(|d| *d >= 0)
            .ok_or_else(|| format!("bad database number '{d}'"))?,
    };
    if parts.next().is_some_and(|p| !p.is_empty()) {
        return Err("too many path segments: use /SERVICE or /SERVICE/DB".into());
    }
    Ok(SentinelUrl {
        tls,
        username,
        password,
        sentinels,
        service: decode(service)?,
        db,
    })
}

fn host_port(text: &str) -> Result<(String, u16), String> {
    let text = text.trim();
    let (host, port) = if let Some(v6) = text.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("bad sentinel address '{text}'"))?;
        (host, after.strip_prefix(':'))
    } else {
        match text.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err(format!("a sentinel address names no host ('{text}')"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("bad sentinel port in '{text}'"))?,
    };
    Ok((host.to_owned(), port))
}

/// Undo `%XX` escapes (the settings percent-encode a password from the environment).
fn decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("bad %-escape in the URL")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the URL's credentials are not UTF-8".to_owned())
}

/// Where a node opens its connections.
pub enum Endpoint {
    /// One server, always the same.
    Direct(redis::Client),
    /// The master a group of sentinels names at the time of connecting.
    Sentinel(Mutex<SentinelClient>),
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
        Ok(Endpoint::Sentinel(Mutex::new(b.build()?)))
    }

    /// The client to open a connection with now: for Sentinel, the current master's (asked of
    /// the sentinels, and checked to say it is a master).
    pub async fn client(&self) -> RedisResult<redis::Client> {
        match self {
            Endpoint::Direct(c) => Ok(c.clone()),
            Endpoint::Sentinel(s) => s.lock().await.async_get_client().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_parse_with_several_sentinels_credentials_and_db() {
        let u = parse("redis+sentinel://h1:26379,h2:26380/mymaster").unwrap();
        assert_eq!(
            u.sentinels,
            vec![("h1".to_owned(), 26379), ("h2".to_owned(), 26380)]
        );
        assert_eq!((u.service.as_str(), u.db, u.tls), ("mymaster", 0, false));
        let u = parse("rediss+sentinel://alice:p%40ss@h1,[::1]:5/m/3").unwrap();
        assert_eq!(u.sentinels[0], ("h1".to_owned(), DEFAULT_PORT));
        assert_eq!(u.sentinels[1], ("::1".to_owned(), 5));
        assert_eq!(u.username.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        assert_eq!((u.db, u.tls), (3, true));
        let u = parse("redis+sentinel://:pw@h/m").unwrap();
        assert_eq!((u.username, u.password.as_deref()), (None, Some("pw")));
        for bad in [
            "redis+sentinel://h1:26379",
            "redis+sentinel://h1/",
            "redis+sentinel:///m",
            "redis+sentinel://h1:x/m",
            "redis+sentinel://h1,/m",
            "redis+sentinel://h1/m/x",
            "redis+sentinel://h1/m/0/z",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
