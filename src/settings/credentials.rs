//! Credentials from the environment into Redis URLs: `TRACTATUS_REDIS_PASSWORD(_FILE)`,
//! `TRACTATUS_REDIS_USERNAME` and the sentinels' own, put into the URLs that name none, so that
//! a password need not sit in a URL, a shell history or a committed file.

use std::path::Path;

use crate::error::{Error, Result};

/// The variables that hold credentials for Redis or the sentinels, of those set.
pub(super) fn credential_sources(env: &dyn Fn(&str) -> Option<String>) -> Vec<&'static str> {
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
pub(super) fn secret(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Result<Option<String>> {
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
pub(super) fn with_sentinel_credentials(
    url: &str,
    username: Option<&str>,
    password: Option<&str>,
) -> String {
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
pub(super) fn with_credentials(
    url: &str,
    username: Option<&str>,
    password: Option<&str>,
) -> String {
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
