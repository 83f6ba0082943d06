//! Test only: an in-memory node that behaves like a Redis running our scripts (a lease with a
//! TTL on tokio's clock, a fencing counter, a waiter set, a release channel), and that can be
//! taken down, quarantined or made to fail renewals, so the acquire loop and keep-alive run on
//! paused time with no Redis.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::Coordinator;
use crate::backend::{
    Eviction, GrantReply, GrantRequest, Node, NodeError, NodeFuture, WAKE_ALL, WakeStream,
};
use crate::config::{Config, parse_nodes};
use crate::holder::{HolderInfo, Identity};
use crate::keys::LockKeys;

/// What the fake node does with the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Answers like Redis.
    Up,
    /// Refuses every connection (a Redis that is down).
    Down,
    /// Grants nothing until then (a master in its restart quarantine).
    QuarantinedUntil(Instant),
    /// Answers, but every renewal fails with a dropped connection.
    RenewalsFail,
}

/// The node's data and what happened to it.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) mode: Mode,
    /// Owner id, expiry, holder.
    pub(crate) lease: Option<(String, Instant, HolderInfo)>,
    pub(crate) counter: u64,
    /// The queue: waiter id -> (place in line, registration expiry).
    pub(crate) waiters: BTreeMap<String, (u64, Instant)>,
    /// Grant requests answered (not counting refused connections).
    pub(crate) grants: usize,
    /// Waiter registrations seen.
    pub(crate) registrations: usize,
    /// Owners whose release was asked, in order.
    pub(crate) releases: Vec<String>,
    /// Events of evictions that removed a lease.
    pub(crate) evictions: Vec<&'static str>,
    /// Grant requests that fail (connection reset) before the node answers again.
    pub(crate) fail_grants: usize,
}

/// One fake node.
pub(crate) struct FakeNode {
    state: Mutex<State>,
    /// Replaced (so its subscribers' streams end) when the node goes down.
    released: Mutex<broadcast::Sender<String>>,
}

impl FakeNode {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(FakeNode {
            state: Mutex::new(State {
                mode: Mode::Up,
                lease: None,
                counter: 0,
                waiters: BTreeMap::new(),
                grants: 0,
                registrations: 0,
                releases: Vec::new(),
                evictions: Vec::new(),
                fail_grants: 0,
            }),
            released: Mutex::new(broadcast::channel(16).0),
        })
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    pub(crate) fn set(&self, mode: Mode) {
        self.state().mode = mode;
        if mode == Mode::Down {
            // A dead server closes its subscribers' connections.
            *self.released.lock().unwrap() = broadcast::channel(16).0;
        }
    }

    /// Someone else holds the lock here for `ttl`.
    pub(crate) fn hold(&self, owner: &str, ttl: Duration, holder: HolderInfo) {
        let holder = HolderInfo {
            owner: owner.to_owned(),
            ..holder
        };
        self.state().lease = Some((owner.to_owned(), Instant::now() + ttl, holder));
    }

    /// The current lease's owner, if any lease is live.
    pub(crate) fn owner(&self) -> Option<String> {
        let s = self.state();
        s.lease
            .as_ref()
            .filter(|l| l.1 > Instant::now())
            .map(|l| l.0.clone())
    }

    /// Release the lease of `owner`, as its holder would, and wake the waiters.
    pub(crate) fn release_now(&self, owner: &str) -> bool {
        let mut s = self.state();
        if s.lease.as_ref().is_some_and(|l| l.0 == owner) {
            s.lease = None;
            self.publish(&s);
            return true;
        }
        false
    }

    /// Wake the head of the queue among live waiters, or everyone when nobody waits.
    fn publish(&self, s: &State) {
        let now = Instant::now();
        let head = s
            .waiters
            .iter()
            .filter(|(_, w)| w.1 > now)
            .min_by_key(|(id, w)| (w.0, id.as_str()))
            .map_or_else(|| WAKE_ALL.to_owned(), |(id, _)| id.clone());
        let _ = self.released.lock().unwrap().send(head);
    }

    fn gate(&self) -> Result<MutexGuard<'_, State>, NodeError> {
        let mut s = self.state();
        if s.mode == Mode::Down {
            return Err(NodeError::new("connection refused"));
        }
        if s.lease.as_ref().is_some_and(|l| l.1 <= Instant::now()) {
            s.lease = None;
        }
        Ok(s)
    }
}

/// Yield a fake round trip, so every request of a quorum is sent before any answer.
async fn round_trip() {
    tokio::task::yield_now().await;
}

impl Node for FakeNode {
    fn label(&self) -> String {
        "fake".into()
    }

    fn grant<'a>(&'a self, req: &'a GrantRequest) -> NodeFuture<'a, GrantReply> {
        Box::pin(async move {
            round_trip().await;
            let mut s = self.gate()?;
            if s.fail_grants > 0 {
                s.fail_grants -= 1;
                return Err(NodeError::new("connection reset"));
            }
            s.grants += 1;
            if let Mode::QuarantinedUntil(until) = s.mode {
                let now = Instant::now();
                if until > now {
                    return Ok(GrantReply::Quarantined { left: until - now });
                }
            }
            let now = Instant::now();
            s.waiters.retain(|_, w| w.1 > now);
            if let Some(w) = &req.waiter {
                s.waiters
                    .insert(w.clone(), (req.place, now + req.waiter_ttl));
                s.registrations += 1;
            }
            if let Some((_, expires, holder)) = &s.lease {
                let (pttl, holder) = (*expires - now, holder.clone());
                return Ok(GrantReply::Refused {
                    pttl,
                    holder,
                    head: None,
                });
            }
            let head = s
                .waiters
                .iter()
                .min_by_key(|(id, w)| (w.0, id.as_str()))
                .map(|(id, w)| (id.clone(), w.1));
            if let Some((head, until)) = head
                && req.waiter.as_ref() != Some(&head)
            {
                return Ok(GrantReply::Refused {
                    pttl: until - now,
                    holder: HolderInfo::default(),
                    head: None,
                });
            }
            s.counter += 1;
            let id = &req.identity;
            let holder = HolderInfo {
                session: id.session.clone(),
                host: id.host.clone(),
                pid: id.pid,
                pid_start: id.pid_start,
                pid_ns: id.pid_ns.clone(),
                command: id.command.clone(),
                token: s.counter,
                owner: req.owner.clone(),
                ..HolderInfo::default()
            };
            if let Some(w) = &req.waiter {
                s.waiters.remove(w);
            }
            s.lease = Some((req.owner.clone(), Instant::now() + req.ttl, holder));
            Ok(GrantReply::Granted { token: s.counter })
        })
    }

    fn renew<'a>(&'a self, _: &'a LockKeys, owner: &'a str, ttl: Duration) -> NodeFuture<'a, bool> {
        Box::pin(async move {
            round_trip().await;
            let mut s = self.gate()?;
            if s.mode == Mode::RenewalsFail {
                return Err(NodeError::new("connection reset"));
            }
            match s.lease.as_mut() {
                Some(l) if l.0 == owner => {
                    l.1 = Instant::now() + ttl;
                    Ok(true)
                }
                _ => Ok(false),
            }
        })
    }

    fn release<'a>(&'a self, _: &'a LockKeys, owner: &'a str, _: u32) -> NodeFuture<'a, bool> {
        Box::pin(async move {
            round_trip().await;
            self.gate()?.releases.push(owner.to_owned());
            Ok(self.release_now(owner))
        })
    }

    fn raise<'a>(&'a self, _: &'a LockKeys, token: u64) -> NodeFuture<'a, u64> {
        Box::pin(async move {
            round_trip().await;
            let mut s = self.gate()?;
            s.counter = s.counter.max(token);
            Ok(s.counter)
        })
    }

    fn subscribe<'a>(&'a self, _: &'a LockKeys) -> NodeFuture<'a, WakeStream> {
        Box::pin(async move {
            round_trip().await;
            drop(self.gate()?);
            let rx = self.released.lock().unwrap().subscribe();
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
            round_trip().await;
            let mut s = self.gate()?;
            let matches = s
                .lease
                .as_ref()
                .is_some_and(|l| ev.expected_owner.is_empty() || l.0 == ev.expected_owner);
            if !matches {
                return Ok(false);
            }
            s.lease = None;
            s.evictions.push(ev.event);
            let _ = self.released.lock().unwrap().send(WAKE_ALL.to_owned());
            Ok(true)
        })
    }

    fn record_group<'a>(
        &'a self,
        _: &'a LockKeys,
        owner: &'a str,
        group: u32,
        group_start: Option<u64>,
    ) -> NodeFuture<'a, bool> {
        Box::pin(async move {
            round_trip().await;
            let mut s = self.gate()?;
            match s.lease.as_mut() {
                Some(l) if l.0 == owner => {
                    l.2.group = group;
                    l.2.group_start = group_start;
                    Ok(true)
                }
                _ => Ok(false),
            }
        })
    }

    fn leave<'a>(&'a self, _: &'a LockKeys, waiter: &'a str) -> NodeFuture<'a, ()> {
        Box::pin(async move {
            round_trip().await;
            self.gate()?.waiters.remove(waiter);
            Ok(())
        })
    }
}

/// A coordinator over `n` fake nodes (Redlock from 3 on), with `ttl`.
pub(crate) fn coordinator(n: usize, ttl: Duration) -> (Coordinator, Vec<Arc<FakeNode>>) {
    let fakes: Vec<Arc<FakeNode>> = (0..n).map(|_| FakeNode::new()).collect();
    let urls: Vec<String> = (0..n)
        .map(|i| format!("redis://127.0.0.1:{}", 1 + i))
        .collect();
    let mut config = Config::new(parse_nodes(&urls).unwrap_or_default());
    config.ttl = ttl;
    let nodes = fakes.iter().map(|f| f.clone() as Arc<dyn Node>).collect();
    let c = Coordinator::with_nodes(config, Identity::current("test"), nodes);
    (c, fakes)
}
