//! Test only: an in-memory node that keeps many locks apart by their keys (the crate's
//! `fake_node` keeps one), enough for the slot wait: grant, release, renew, evict, and a
//! release channel per lock, on tokio's clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::Coordinator;
use crate::backend::{Eviction, GrantReply, GrantRequest, Node, NodeFuture, WAKE_ALL, WakeStream};
use crate::config::{Config, parse_nodes};
use crate::holder::{HolderInfo, Identity};
use crate::keys::LockKeys;

#[derive(Default)]
struct Lock {
    lease: Option<(String, Instant, HolderInfo)>,
    counter: u64,
    grants: usize,
}

#[derive(Default)]
pub(super) struct MultiFake {
    locks: Mutex<HashMap<String, Lock>>,
    channels: Mutex<HashMap<String, broadcast::Sender<String>>>,
}

impl MultiFake {
    fn channel(&self, name: &str) -> broadcast::Sender<String> {
        self.channels
            .lock()
            .unwrap()
            .entry(name.to_owned())
            .or_insert_with(|| broadcast::channel(16).0)
            .clone()
    }

    /// A stranger (another host) holds `keys`'s lock for `ttl`.
    pub(super) fn hold(&self, keys: &LockKeys, owner: &str, ttl: Duration) {
        let holder = HolderInfo {
            session: "s".into(),
            host: "elsewhere".into(),
            pid: 1,
            owner: owner.to_owned(),
            ..HolderInfo::default()
        };
        let mut locks = self.locks.lock().unwrap();
        let l = locks.entry(keys.lease.clone()).or_default();
        l.lease = Some((owner.to_owned(), Instant::now() + ttl, holder));
    }

    /// Release `keys`'s lock as its holder `owner` would, waking its listeners.
    pub(super) fn release_now(&self, keys: &LockKeys, owner: &str) -> bool {
        let mut locks = self.locks.lock().unwrap();
        let l = locks.entry(keys.lease.clone()).or_default();
        if l.lease.as_ref().is_some_and(|x| x.0 == owner) {
            l.lease = None;
            let _ = self.channel(&keys.channel).send(WAKE_ALL.to_owned());
            return true;
        }
        false
    }

    /// Grant requests answered for `keys`'s lock.
    pub(super) fn grants(&self, keys: &LockKeys) -> usize {
        self.locks
            .lock()
            .unwrap()
            .get(&keys.lease)
            .map_or(0, |l| l.grants)
    }
}

impl Node for MultiFake {
    fn label(&self) -> String {
        "multi-fake".into()
    }

    fn grant<'a>(&'a self, req: &'a GrantRequest) -> NodeFuture<'a, GrantReply> {
        Box::pin(async move {
            tokio::task::yield_now().await;
            let now = Instant::now();
            let mut locks = self.locks.lock().unwrap();
            let l = locks.entry(req.keys.lease.clone()).or_default();
            l.grants += 1;
            if let Some((_, expires, holder)) = l.lease.as_ref().filter(|x| x.1 > now) {
                return Ok(GrantReply::Refused {
                    pttl: *expires - now,
                    holder: holder.clone(),
                    head: None,
                });
            }
            l.counter += 1;
            let holder = HolderInfo {
                owner: req.owner.clone(),
                token: l.counter,
                ..HolderInfo::default()
            };
            l.lease = Some((req.owner.clone(), now + req.ttl, holder));
            Ok(GrantReply::Granted { token: l.counter })
        })
    }

    fn renew<'a>(&'a self, k: &'a LockKeys, owner: &'a str, ttl: Duration) -> NodeFuture<'a, bool> {
        Box::pin(async move {
            let mut locks = self.locks.lock().unwrap();
            match locks.get_mut(&k.lease).and_then(|l| l.lease.as_mut()) {
                Some(x) if x.0 == owner => {
                    x.1 = Instant::now() + ttl;
                    Ok(true)
                }
                _ => Ok(false),
            }
        })
    }

    fn release<'a>(&'a self, k: &'a LockKeys, owner: &'a str, _: u32) -> NodeFuture<'a, bool> {
        Box::pin(async move { Ok(self.release_now(k, owner)) })
    }

    fn raise<'a>(&'a self, _: &'a LockKeys, token: u64) -> NodeFuture<'a, u64> {
        Box::pin(async move { Ok(token) })
    }

    fn subscribe<'a>(&'a self, k: &'a LockKeys) -> NodeFuture<'a, WakeStream> {
        Box::pin(async move {
            let rx = self.channel(&k.channel).subscribe();
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                match rx.recv().await {
                    Ok(who) => Some((who, rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => Some((WAKE_ALL.to_owned(), rx)),
                    Err(broadcast::error::RecvError::Closed) => None,
                }
            });
            Ok(Box::pin(stream) as WakeStream)
        })
    }

    fn evict<'a>(&'a self, ev: &'a Eviction) -> NodeFuture<'a, bool> {
        Box::pin(async move {
            let owner = {
                let locks = self.locks.lock().unwrap();
                locks
                    .get(&ev.keys.lease)
                    .and_then(|l| l.lease.as_ref())
                    .map(|x| x.0.clone())
            };
            Ok(owner.is_some_and(|o| {
                (ev.expected_owner.is_empty() || o == ev.expected_owner)
                    && self.release_now(&ev.keys, &o)
            }))
        })
    }

    fn leave<'a>(&'a self, _: &'a LockKeys, _: &'a str) -> NodeFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
}

/// A coordinator over one such node, with `ttl`.
pub(super) fn coordinator(ttl: Duration) -> (Coordinator, Arc<MultiFake>) {
    let fake = Arc::new(MultiFake::default());
    let mut config = Config::new(parse_nodes(&["redis://127.0.0.1:1"]).unwrap_or_default());
    config.ttl = ttl;
    let c = Coordinator::with_nodes(config, Identity::current("test"), vec![fake.clone()]);
    (c, fake)
}
