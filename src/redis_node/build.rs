//! Building a [`RedisNode`] from its URL: a plain server or a Sentinel group (see
//! [`super::sentinel`]), the certificate authority a `rediss://` URL trusts, and the one
//! process-wide TLS crypto provider. Nothing is connected here.

use std::time::Duration;

use tokio::sync::Mutex;

use super::cluster::ClusterSide;
use super::sentinel::{self, Endpoint};
use super::{RedisNode, describe};
use crate::backend::NodeError;
use crate::url::NodeUrl;

/// See [`RedisNode::with_tls_ca`].
pub(super) fn node(
    url: &NodeUrl,
    connect_timeout: Duration,
    op_timeout: Duration,
    tls_ca: Option<&[u8]>,
) -> Result<RedisNode, NodeError> {
    install_crypto_provider();
    if sentinel::is_sentinel_url(url.secret_url()) {
        let parsed = sentinel::parse(url.secret_url())
            .map_err(|e| NodeError::new(format!("bad Sentinel URL {url}: {e}")))?;
        let endpoint =
            Endpoint::sentinel(&parsed, tls_ca).map_err(|e| NodeError::new(describe(&e, url)))?;
        return Ok(with_endpoint(
            url,
            endpoint,
            ClusterSide::new(url, None),
            connect_timeout,
            op_timeout,
        ));
    }
    let certs = tls_ca
        .filter(|_| url.secret_url().starts_with("rediss://"))
        .map(|pem| redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.to_vec()),
        });
    let cluster = ClusterSide::new(url, certs.clone());
    let client = match certs {
        Some(certs) => redis::Client::build_with_tls(url.secret_url(), certs),
        None => redis::Client::open(url.secret_url()),
    }
    .map_err(|e| NodeError::new(describe(&e, url)))?;
    Ok(with_endpoint(
        url,
        Endpoint::Direct(client),
        cluster,
        connect_timeout,
        op_timeout,
    ))
}

fn with_endpoint(
    url: &NodeUrl,
    endpoint: Endpoint,
    cluster: ClusterSide,
    connect_timeout: Duration,
    op_timeout: Duration,
) -> RedisNode {
    RedisNode {
        url: url.clone(),
        endpoint,
        cluster,
        conn: Mutex::new(None),
        subscriber: Default::default(),
        boxes: Default::default(),
        connect_timeout,
        op_timeout,
        wait: None,
    }
}

/// rustls needs one process-wide crypto provider; ours is ring. Installing twice is harmless.
fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
