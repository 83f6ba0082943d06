//! The fake node's answers: [`Node`] as our scripts answer, and [`NodeAdmin`]'s `inspect`.

use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

use super::{FakeNode, Mode};
use crate::backend::{
    Eviction, GrantReply, GrantRequest, KeyKind, LockView, Node, NodeAdmin, NodeError, NodeFuture,
    WAKE_ALL, WakeStream,
};
use crate::holder::HolderInfo;
use crate::keys::LockKeys;

/// The true time of the fake nodes, in microseconds: tokio's (paused) clock from a fixed
/// start near today's Unix time.
fn true_micros() -> i64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    1_800_000_000_000_000 + Instant::now().duration_since(start).as_micros() as i64
}

fn unused<'a, T: 'a>() -> NodeFuture<'a, T> {
    Box::pin(async { Err(NodeError::new("not used by the fake node")) })
}

impl Node for FakeNode {
    fn label(&self) -> String {
        "fake".into()
    }

    fn grant<'a>(&'a self, req: &'a GrantRequest) -> NodeFuture<'a, GrantReply> {
        Box::pin(async move {
            self.gate().await?;
            let skew = *self.clock_skew.lock().unwrap();
            let mode = self.mode();
            self.with_lock(&req.keys, |s| {
                if s.fail_grants > 0 {
                    s.fail_grants -= 1;
                    return Err(NodeError::new("connection reset"));
                }
                s.grants += 1;
                s.last_owner = Some(req.owner.clone());
                let now = Instant::now();
                if let Mode::QuarantinedUntil(until) = mode
                    && until > now
                {
                    return Ok(GrantReply::Quarantined { left: until - now });
                }
                s.waiters.retain(|_, w| w.1 > now);
                if let Some(w) = &req.waiter {
                    s.waiters
                        .insert(w.clone(), (req.place, now + req.waiter_ttl));
                    s.registrations += 1;
                }
                if let Some((_, expires, holder)) = &s.lease {
                    return Ok(GrantReply::Refused {
                        pttl: *expires - now,
                        holder: holder.clone(),
                        head: None,
                    });
                }
                let head = s
                    .waiters
                    .iter()
                    .min_by_key(|(id, w)| (w.0, id.as_str()))
                    .map(|(id, w)| (id.clone(), w.1));
                // Free, another waiter first in line: named, as Redis names it.
                if let Some((head, until)) = head
                    && req.waiter.as_ref() != Some(&head)
                {
                    return Ok(GrantReply::Refused {
                        pttl: until - now,
                        holder: HolderInfo::default(),
                        head: Some(Box::new(HolderInfo {
                            owner: head,
                            session: "s-ahead".into(),
                            host: "elsewhere".into(),
                            ..HolderInfo::default()
                        })),
                    });
                }
                if let (0, Some(skew)) = (s.counter, skew) {
                    s.counter = (true_micros() + skew) as u64;
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
                s.lease = Some((req.owner.clone(), now + req.ttl, holder));
                Ok(GrantReply::Granted { token: s.counter })
            })
        })
    }

    fn renew<'a>(&'a self, k: &'a LockKeys, owner: &'a str, ttl: Duration) -> NodeFuture<'a, bool> {
        Box::pin(async move {
            self.gate().await?;
            if self.mode() == Mode::RenewalsFail {
                return Err(NodeError::new("connection reset"));
            }
            Ok(self.with_lock(k, |s| match s.lease.as_mut() {
                Some(l) if l.0 == owner => {
                    l.1 = Instant::now() + ttl;
                    true
                }
                _ => false,
            }))
        })
    }

    fn release<'a>(&'a self, k: &'a LockKeys, owner: &'a str, _: u32) -> NodeFuture<'a, bool> {
        Box::pin(async move {
            self.gate().await?;
            self.with_lock(k, |s| s.releases.push(owner.to_owned()));
            Ok(self.release_at(k, owner))
        })
    }

    fn raise<'a>(&'a self, k: &'a LockKeys, token: u64) -> NodeFuture<'a, u64> {
        Box::pin(async move {
            self.gate().await?;
            if self.mode() == Mode::RaiseFails {
                return Err(NodeError::new("connection reset"));
            }
            Ok(self.with_lock(k, |s| {
                s.counter = s.counter.max(token);
                s.counter
            }))
        })
    }

    fn subscribe<'a>(&'a self, k: &'a LockKeys) -> NodeFuture<'a, WakeStream> {
        Box::pin(async move {
            self.gate().await?;
            let rx = self.channel(k).subscribe();
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

    fn handed(&self, key: String) -> NodeFuture<'_, WakeStream> {
        Box::pin(async move {
            self.gate().await?;
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            self.boxes.lock().unwrap().push((key, tx));
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|v| (v, rx))
            });
            Ok(Box::pin(stream) as WakeStream)
        })
    }

    fn evict<'a>(&'a self, ev: &'a Eviction) -> NodeFuture<'a, bool> {
        Box::pin(async move {
            self.gate().await?;
            let evicted = self.with_lock(&ev.keys, |s| {
                s.evicts_asked.push(ev.expected_owner.clone());
                let matches = s
                    .lease
                    .as_ref()
                    .is_some_and(|l| ev.expected_owner.is_empty() || l.0 == ev.expected_owner);
                if matches {
                    s.lease = None;
                    s.evictions.push(ev.event);
                }
                matches
            });
            if evicted {
                self.publish(&ev.keys, WAKE_ALL.to_owned());
            }
            Ok(evicted)
        })
    }

    fn record_group<'a>(
        &'a self,
        k: &'a LockKeys,
        owner: &'a str,
        group: u32,
        group_start: Option<u64>,
    ) -> NodeFuture<'a, bool> {
        Box::pin(async move {
            self.gate().await?;
            Ok(self.with_lock(k, |s| match s.lease.as_mut() {
                Some(l) if l.0 == owner => {
                    l.2.group = group;
                    l.2.group_start = group_start;
                    true
                }
                _ => false,
            }))
        })
    }

    fn leave<'a>(&'a self, k: &'a LockKeys, waiter: &'a str) -> NodeFuture<'a, ()> {
        Box::pin(async move {
            self.gate().await?;
            self.with_lock(k, |s| s.waiters.remove(waiter));
            Ok(())
        })
    }

    fn admin(&self) -> Option<&dyn NodeAdmin> {
        self.admin.then_some(self as &dyn NodeAdmin)
    }
}

impl NodeAdmin for FakeNode {
    fn lock_names<'a>(&'a self, _: &'a str, _: KeyKind) -> NodeFuture<'a, Vec<String>> {
        unused()
    }

    fn inspect<'a>(&'a self, keys: &'a LockKeys) -> NodeFuture<'a, Option<LockView>> {
        let view = self.with_lock(keys, |s| {
            let view = s.lease.as_ref().map(|(_, expires, holder)| LockView {
                pttl: *expires - Instant::now(),
                token: s.counter.max(1),
                waiters: s.waiters.len() as u64,
                queue: Vec::new(),
                holder: holder.clone(),
            });
            if let Some(to) = &self.shift {
                s.lease = to.as_ref().map(|owner| {
                    let holder = HolderInfo {
                        owner: owner.clone(),
                        ..HolderInfo::default()
                    };
                    (
                        owner.clone(),
                        Instant::now() + Duration::from_secs(60),
                        holder,
                    )
                });
            }
            view
        });
        Box::pin(async move { Ok(view) })
    }

    fn read_log<'a>(
        &'a self,
        _: &'a LockKeys,
        _: usize,
    ) -> NodeFuture<'a, Vec<Vec<(String, String)>>> {
        unused()
    }

    fn mark_initialized(&self) -> NodeFuture<'_, Vec<String>> {
        unused()
    }
}
