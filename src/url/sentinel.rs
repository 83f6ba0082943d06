//! The Sentinel URL form, as text: `redis+sentinel://[user[:password]@]host[:port][,host[:port]]
//! ...]/service[/db][?sentinel_username=U&sentinel_password=P]`, port 26379 by default. The
//! userinfo and the database are the master's; the query parameters are the sentinels' own
//! credentials. Connecting through the sentinels is [`crate::redis_node::sentinel`]'s job.

/// The schemes of a Sentinel URL.
const SCHEMES: [(&str, bool); 2] = [("redis+sentinel://", false), ("rediss+sentinel://", true)];

/// Port of a sentinel when the URL names none.
pub const DEFAULT_PORT: u16 = 26379;

/// A parsed `redis+sentinel://` URL; its `Debug` hides the passwords.
#[derive(Clone, PartialEq, Eq)]
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
    /// The sentinels' ACL user (`sentinel_username=`), if any.
    pub sentinel_username: Option<String>,
    /// The sentinels' password (`sentinel_password=`), if any.
    pub sentinel_password: Option<String>,
}

impl std::fmt::Debug for SentinelUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |p: &Option<String>| p.as_ref().map(|_| "***");
        f.debug_struct("SentinelUrl")
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &hidden(&self.password))
            .field("sentinels", &self.sentinels)
            .field("service", &self.service)
            .field("db", &self.db)
            .field("sentinel_username", &self.sentinel_username)
            .field("sentinel_password", &hidden(&self.sentinel_password))
            .finish()
    }
}

/// The query parameters of a Sentinel URL (the sentinels' credentials).
pub const USERNAME_PARAM: &str = "sentinel_username";
/// See [`USERNAME_PARAM`]; its value is a secret, hidden wherever a URL is shown.
pub const PASSWORD_PARAM: &str = crate::redact::SENTINEL_PASSWORD_PARAM;

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
    let (path, query) = match path.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path, None),
    };
    let (sentinel_username, sentinel_password) = sentinel_credentials(query)?;
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
        sentinel_username,
        sentinel_password,
    })
}

/// The sentinels' user and password from the URL's query; any other parameter is refused (a
/// misspelt one would otherwise leave the sentinels asked without a password). Errors name the
/// parameter, never its value.
fn sentinel_credentials(query: Option<&str>) -> Result<(Option<String>, Option<String>), String> {
    let (mut username, mut password) = (None, None);
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        if pair.is_empty() {
            continue;
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match key {
            USERNAME_PARAM => &mut username,
            PASSWORD_PARAM => &mut password,
            _ => {
                return Err(format!(
                    "unknown parameter '{}': a Sentinel URL takes {USERNAME_PARAM}= and \
                     {PASSWORD_PARAM}= (the sentinels' own credentials)",
                    key.escape_default()
                ));
            }
        };
        if value.is_empty() {
            return Err(format!("{key}= is empty"));
        }
        if slot.replace(decode(value)?).is_some() {
            return Err(format!("{key}= is given twice"));
        }
    }
    Ok((username, password))
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
        let u = parse("redis+sentinel://:m@h1/m/2?sentinel_username=s%40m&sentinel_password=a%26b")
            .unwrap();
        assert_eq!((u.service.as_str(), u.db), ("m", 2));
        assert_eq!(u.password.as_deref(), Some("m"));
        assert_eq!(u.sentinel_username.as_deref(), Some("s@m"));
        assert_eq!(u.sentinel_password.as_deref(), Some("a&b"));
        assert!(!format!("{u:?}").contains("a&b"), "{u:?}");
        let u = parse("redis+sentinel://h1/m?sentinel_password=p").unwrap();
        assert_eq!(
            (u.sentinel_username, u.sentinel_password.as_deref()),
            (None, Some("p"))
        );
        for bad in [
            "redis+sentinel://h1/m?sentinel_password",
            "redis+sentinel://h1/m?password=p",
            "redis+sentinel://h1/m?sentinel_username=a&sentinel_username=b",
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
