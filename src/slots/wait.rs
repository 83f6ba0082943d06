//! Waiting for a slot on Redis: a full round tries every slot; then the waiter listens on every
//! slot's release channel and sleeps. A release of slot `i` wakes it to try slot `i` alone (the
//! other slots' state did not change, or their own events say so); the earliest end of a lease
//! seen, a holder on this host that died, or a subscription that ended calls for a full round
//! again. So a release costs each waiter one try, not one per slot.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::stream::{BoxStream, SelectAll};
use futures_util::{FutureExt, StreamExt};
use tokio::time::Instant;

use super::{SAME_HOST_LOOK, Tried, UNHEARD_LOOK};
use crate::coordinator::Backend;
use crate::error::{Error, Result};
use crate::holder::{HolderInfo, Identity};
use crate::keys::{LockKeys, slot_lock_name};
use crate::quorum::Quorum;
use crate::{AcquireOptions, Coordinator, Lease};

pub(super) async fn acquire_slot_redis(
    coordinator: &Coordinator,
    quorum: &Quorum,
    name: &str,
    slots: u32,
    start: u32,
    opts: &AcquireOptions,
    deadline: Instant,
) -> Result<(u32, Lease)> {
    let started = Instant::now();
    let ns = &coordinator.inner.config.namespace;
    let keys: Vec<LockKeys> = (0..slots)
        .map(|i| LockKeys::new(ns, &slot_lock_name(name, i)))
        .collect();
    let mut wake = Wake::default();
    let mut seen = Seen::new();
    // Slots whose release we heard and have not tried since.
    let mut woken: BTreeSet<u32> = BTreeSet::new();
    let mut full = true;
    let mut next_start = start;
    let mut just_subscribed = false;
    loop {
        // Events that came in before this round are answered by it.
        wake.drain(&mut woken);
        let order: Vec<u32> = if full {
            // Each full round starts one slot further on, so a slot that keeps being
            // refused (split votes) is not always the first tried.
            let s = next_start;
            next_start = (next_start + 1) % slots;
            woken.clear();
            seen = Seen::new();
            (0..slots).map(|k| (s + k) % slots).collect()
        } else {
            std::mem::take(&mut woken).into_iter().collect()
        };
        for i in order {
            let lock = slot_lock_name(name, i);
            match super::try_slot(coordinator, quorum, &lock, &keys[i as usize]).await {
                Ok(lease) => return Ok((i, lease)),
                Err(tried) => seen.add(tried, coordinator),
            }
        }
        if let Some(p) = &opts.progress {
            p.send_replace(seen.holder.clone().map(crate::options::InTheWay::Holder));
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(seen.unavailable.unwrap_or_else(|| Error::Timeout {
                name: name.to_owned(),
                waited_ms: now.duration_since(started).as_millis(),
                holder: seen.holder.map(Box::new),
                note: seen.note,
            }));
        }
        if !wake.complete() && seen.unavailable.is_none() && !just_subscribed {
            // Subscribed before a full round: a release between the two is not missed.
            wake.subscribe(quorum, &keys).await;
            just_subscribed = true;
            full = true;
            continue;
        }
        just_subscribed = false;
        // A node we do not listen to cannot wake us: look again a few times a second.
        let due = if wake.complete() {
            seen.due
        } else {
            seen.due.min(now + UNHEARD_LOOK)
        };
        full = tokio::select! {
            got = wake.streams.next(), if !wake.streams.is_empty() => match got {
                Some(Some(i)) => {
                    woken.insert(i);
                    false
                }
                // A subscription that ended is made again, then every slot tried.
                _ => {
                    wake.ended += 1;
                    true
                }
            },
            _ = tokio::time::sleep_until(deadline.min(due)) => true,
            _ = watch_here(&seen.here, &coordinator.inner.identity) => true,
        };
    }
}

/// What the rounds since the last full one found: when to try every slot again, and what to
/// report.
struct Seen {
    /// When every slot is tried again, if no release comes first.
    due: Instant,
    /// A holder to report (the one whose lease ends first).
    holder: Option<HolderInfo>,
    holder_pttl: Duration,
    note: Option<String>,
    /// Set when some slot could not be tried for want of a quorum.
    unavailable: Option<Error>,
    /// The holders on this host, watched while we wait.
    here: Vec<Watched>,
}

/// A holder on this host, and how it stood when seen.
struct Watched {
    holder: HolderInfo,
    /// Its process was gone and its group still ran.
    winding_down: bool,
}

/// Returns once a holder on this host moved on (its process went, or then its group too);
/// never when there is none.
async fn watch_here(here: &[Watched], me: &Identity) {
    if here.is_empty() {
        return std::future::pending().await;
    }
    loop {
        tokio::time::sleep(SAME_HOST_LOOK).await;
        let moved = here.iter().any(|w| {
            if w.winding_down {
                w.holder.is_gone_from(me)
            } else {
                w.holder.is_gone_from(me) || w.holder.is_winding_down(me)
            }
        });
        if moved {
            return;
        }
    }
}

impl Seen {
    fn new() -> Self {
        Seen {
            due: Instant::now() + Duration::from_secs(3600),
            holder: None,
            holder_pttl: Duration::MAX,
            note: None,
            unavailable: None,
            here: Vec::new(),
        }
    }

    fn after(&mut self, pause: Duration) {
        self.due = self.due.min(Instant::now() + pause);
    }

    fn add(&mut self, tried: Tried, c: &Coordinator) {
        let me = &c.inner.identity;
        match tried {
            Tried::Held { pttl, holder } => {
                // A little after the lease runs out, in case its holder never releases.
                self.after(pttl + Duration::from_millis(1));
                if let Some(h) = &holder
                    && h.host == me.host
                    && h.pid_ns.is_some()
                    && h.pid_ns == me.pid_ns
                {
                    self.here.push(Watched {
                        winding_down: h.is_winding_down(me),
                        holder: h.clone(),
                    });
                }
                if pttl < self.holder_pttl || self.holder.is_none() {
                    self.holder_pttl = pttl;
                    self.holder = holder.or(self.holder.take());
                }
            }
            Tried::Split { holder } => {
                // Contenders split a slot's vote: a short, random pause before the next round.
                let jitter = 2 + (uuid::Uuid::new_v4().as_u128() % 20) as u64;
                self.after(Duration::from_millis(jitter));
                self.holder = self.holder.take().or(holder);
            }
            Tried::Quarantined { left, nodes } => {
                self.after(left + Duration::from_millis(1));
                let total = match &c.inner.backend {
                    Backend::Redis(q) => q.nodes().len(),
                    Backend::Local(_) => 1,
                };
                self.note = Some(crate::acquire::quarantine_note(total, nodes, left));
            }
            Tried::Unavailable(e) => {
                self.after(UNHEARD_LOOK);
                self.unavailable = Some(e);
            }
        }
    }
}

/// A waiter's subscriptions to every slot's release channel, on every node that answered.
#[derive(Default)]
struct Wake {
    /// Each subscription's events as its slot's index, and one `None` as it ends.
    streams: SelectAll<BoxStream<'static, Option<u32>>>,
    /// Subscriptions made, and how many of them ended since (their connection dropped).
    made: usize,
    ended: usize,
    /// Subscriptions wanted: slots × nodes.
    wanted: usize,
}

impl Wake {
    /// True when every slot is listened to on every node.
    fn complete(&self) -> bool {
        self.wanted > 0 && self.made >= self.wanted && self.ended == 0
    }

    /// (Re)subscribe to every slot's channel on every node, replacing what we had.
    async fn subscribe(&mut self, quorum: &Quorum, keys: &[LockKeys]) {
        let all = futures_util::future::join_all(keys.iter().map(|k| quorum.subscribe(k))).await;
        self.streams = SelectAll::new();
        self.made = 0;
        self.ended = 0;
        self.wanted = keys.len() * quorum.nodes().len();
        for (i, (streams, _)) in (0u32..).zip(all) {
            for s in streams {
                self.made += 1;
                self.streams.push(
                    s.map(move |_| Some(i))
                        .chain(futures_util::stream::once(async { None }))
                        .boxed(),
                );
            }
        }
    }

    /// Take every event already waiting into `woken`; an ended subscription is counted.
    fn drain(&mut self, woken: &mut BTreeSet<u32>) {
        while let Some(Some(item)) = self.streams.next().now_or_never() {
            match item {
                Some(i) => {
                    woken.insert(i);
                }
                None => self.ended += 1,
            }
        }
    }
}
