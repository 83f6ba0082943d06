//! How a waiter hears that it may try again: its release subscriptions, one per node, its
//! hand-off box on one node, and the pauses between attempts after a split vote and while no
//! quorum answers.

use std::time::Duration;

use tokio::time::Instant;

use backon::BackoffBuilder;
use futures_util::stream::{BoxStream, SelectAll};
use futures_util::{FutureExt, StreamExt};

use crate::backend::{WAKE_ALL, WakeStream};
use crate::handoff::{Call, boxed_token};
use crate::holder::{HolderInfo, Identity};
use crate::keys::LockKeys;
use crate::quorum::Quorum;

/// Longest pause after a split vote. It was the node timeout (250 ms by default), and the
/// back-off grew over a whole wait: a waiter that split a few times slept hundreds of
/// milliseconds, deaf to releases, while the queue (which every node orders alike) already
/// says who goes next. A few milliseconds of spread is what contenders need.
pub(super) const SPLIT_MAX: Duration = Duration::from_millis(10);

/// Pauses after split votes in a row: 2 ms, then growing up to [`SPLIT_MAX`], with jitter.
pub(super) fn split_backoff() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(2))
        .with_max_delay(SPLIT_MAX)
        .with_jitter()
        .without_max_times()
        .build()
}

/// How long a waiter called by fewer nodes than a majority waits for the other calls before it
/// tries anyway.
const CALL_GRACE: Duration = Duration::from_millis(5);

/// Longest pause between attempts while the coordinator is unreachable.
pub(super) const RECONNECT_MAX: Duration = Duration::from_millis(250);

/// Pauses between attempts while no quorum answers: soon at first (a restart takes well under
/// a second), then a few times a second, so a waiter neither hammers a dead node nor sleeps
/// through its return.
pub(super) fn reconnect_backoff() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(20))
        .with_max_delay(RECONNECT_MAX)
        .with_jitter()
        .without_max_times()
        .build()
}

/// A waiter's release subscriptions, one per node that answered, and its hand-off box.
#[derive(Default)]
pub(super) struct Wake {
    /// On one node, where a release hands the lease to the head of the line.
    pub(super) boxed: HandedBox,
    /// Every subscription's events (who should try now), and one `None` from each as it ends.
    pub(super) streams: SelectAll<BoxStream<'static, Option<String>>>,
    /// Subscriptions still open.
    pub(super) live: usize,
    /// True once we subscribed: from then on attempts register us as a waiter.
    pub(super) registered: bool,
}

impl Wake {
    /// (Re)subscribe on every node, replacing the subscriptions we had, and open waiter
    /// `waiter`'s hand-off box if it is closed, both at once. (A value pushed before the box
    /// is read stays there for the probation, but the next attempt waits for the box all the
    /// same: a release right after it would wait for the box's connection.)
    pub(super) async fn subscribe(&mut self, quorum: &Quorum, keys: &LockKeys, waiter: &str) {
        let ((streams, _), ()) = tokio::join!(
            quorum.subscribe(keys),
            self.boxed.open(quorum, keys, waiter)
        );
        self.live = streams.len();
        self.streams = SelectAll::new();
        for s in streams {
            self.streams.push(
                s.map(Some)
                    .chain(futures_util::stream::once(async { None }))
                    .boxed(),
            );
        }
        self.registered = true;
    }

    /// Wait until `until` for what says to act before it: a majority of the nodes we listen to
    /// calling us (one release, one attempt), or our box handing us the lease. Release messages
    /// count only when `wake_early` (not after a split vote: the other contenders' releases
    /// would wake everyone at once and split the vote again); the box always does, when
    /// `l.box_above` allows it. `floor`: lifted to the highest token a call handed us.
    pub(super) async fn listen(
        &mut self,
        mut until: Instant,
        wake_early: bool,
        l: &Listening<'_>,
        floor: &mut u64,
    ) -> Heard {
        let mut calls = 0;
        // A message said a release handed us the lease: our box says so too, within a round
        // trip, unless it broke meanwhile.
        let mut hinted = false;
        loop {
            // In this order when several are ready (a process that ran late finds its box
            // filled and its time up at once): the box first, which hands us the lease, then
            // the calls, then the clock. Picked at random, the clock won half of the time,
            // and the next attempt took the lease its box held (a CI failure, test:
            // `a_filled_box_wins_over_a_time_that_is_up`).
            let sleep_on = tokio::select! {
                biased;
                got = self.boxed.next(), if self.boxed.is_live() => match got {
                    Some(v) => match boxed_token(&v, l.owner) {
                        Some(token) if l.box_above.is_some_and(|above| token > above) => {
                            return Heard::Handed(token);
                        }
                        // Another owner's (an earlier wait's id cannot reach this box, but a
                        // failed attempt's owner can: its undo ends what was handed to it),
                        // one no newer than the lease our last refusal named (ended early and
                        // given on since), or garbage: not ours to take. The next attempt
                        // finds out whatever is ours.
                        _ => true,
                    },
                    // Its connection failed: after a hint, the next attempt finds the lease ours.
                    None => !hinted,
                },
                got = self.streams.next(), if wake_early && !self.streams.is_empty() => {
                    match got.map(|m| m.map(|m| Call::parse(&m))) {
                        // Another waiter is first in line: it tries, we sleep on, unless it
                        // is one on this host whose process is gone: then we try at once
                        // (and take it out of the line).
                        Some(Some(c)) if c.who != WAKE_ALL && c.who != l.waiter => {
                            !l.head.is_some_and(|w| {
                                w.owner == c.who && w.is_gone_from(l.identity)
                            })
                        }
                        // Handed the lease by the one node, the message says: a hint only
                        // (anyone who may publish can send it). Our box says so too if it is
                        // open: wait for it there, a node timeout at most. Without a box, the
                        // next attempt finds the lease already ours (its grant confirms it,
                        // with the server's token, never the message's).
                        Some(Some(c))
                            if l.nodes == 1 && c.handed_to(l.waiter, l.owner).is_some() =>
                        {
                            hinted = true;
                            until = until.min(Instant::now() + l.node_timeout);
                            self.boxed.is_live()
                        }
                        Some(Some(c)) => {
                            if let Some(token) = c.handed_to(l.waiter, l.owner) {
                                *floor = (*floor).max(token);
                            }
                            calls += 1;
                            // The others' calls come within a round trip of the first. One
                            // that never comes (that node's line differs for a moment, its
                            // copy of the lease is an orphan, or another waiter's undo
                            // there called someone else) must not leave us asleep until
                            // the heartbeat while the lock is free: try after a grace.
                            until = until.min(Instant::now() + CALL_GRACE);
                            calls < l.needed.min(self.live)
                        }
                        // A subscription that ended (its connection dropped) is made
                        // again before the next attempt.
                        _ => {
                            self.live = self.live.saturating_sub(1);
                            false
                        }
                    }
                }
                _ = tokio::time::sleep_until(until) => false,
            };
            // Never past `until`, however many calls come: with the calls polled before the
            // clock, a flood of messages naming others (anyone who may PUBLISH can send them)
            // kept the clock from ever ringing, past the wait's deadline (found in review,
            // test: `a_flood_of_calls_does_not_hold_the_wait_past_its_time`).
            if !sleep_on || Instant::now() >= until {
                return Heard::Try;
            }
        }
    }

    /// Take every event already waiting; a subscription found ended is counted as lost.
    pub(super) fn drain(&mut self) {
        while let Some(Some(item)) = self.streams.next().now_or_never() {
            if item.is_none() {
                self.live = self.live.saturating_sub(1);
            }
        }
    }

    /// The connections are gone: subscribe again once a quorum answers (and open the box
    /// again: one to a server that went silent would never say so).
    pub(super) fn lost_all(&mut self) {
        self.live = 0;
        self.streams = SelectAll::new();
        self.boxed = HandedBox::default();
    }
}

/// Who is listening, for [`Wake::listen`].
pub(super) struct Listening<'a> {
    /// Our waiter id.
    pub(super) waiter: &'a str,
    /// The owner id our attempts ask under, which a hand-off names.
    pub(super) owner: &'a str,
    /// Whether our box may hand us the lease, and above which token: only when our last
    /// attempt was refused and we kept its owner id (a failed attempt's owner is undone and
    /// given up), and only a token above that of the lease the refusal named (0 when none):
    /// a value the box held from before a lease that ended early was handed on is older.
    pub(super) box_above: Option<u64>,
    /// The waiter first in line, as the last refusal named it, and who we are (to tell
    /// whether it ran on this host and its process is gone).
    pub(super) head: Option<&'a HolderInfo>,
    pub(super) identity: &'a Identity,
    /// The quorum's nodes, and how many make a majority.
    pub(super) nodes: usize,
    pub(super) needed: usize,
    /// The node timeout: how long a hint waits for the box.
    pub(super) node_timeout: Duration,
}

/// What [`Wake::listen`] heard.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Heard {
    /// Try again (called, or the time is up).
    Try,
    /// Our box handed us the lease with this token: ours.
    Handed(u64),
}

/// A waiter's hand-off box (see [`crate::backend::Node::handed`]): open, or not.
#[derive(Default)]
pub(super) struct HandedBox(Option<WakeStream>);

impl HandedBox {
    /// Open the box unless it is open (not over several nodes), within the node's connect
    /// timeout (the node bounds it); a box that cannot be opened stays closed. (One to a
    /// server gone silent is dropped by [`Wake::lost_all`].)
    async fn open(&mut self, quorum: &Quorum, keys: &LockKeys, waiter: &str) {
        if self.0.is_none()
            && let Some(opening) = quorum.handed(keys, waiter)
        {
            self.0 = opening.await.ok();
        }
    }

    /// Whether a value may still come out of the box.
    pub(super) fn is_live(&self) -> bool {
        self.0.is_some()
    }

    /// The next value in the box; `None` once it closed (its connection failed). Cancel-safe:
    /// the `BLPOP` in flight lives in the stream between polls.
    pub(super) async fn next(&mut self) -> Option<String> {
        let value = self.0.as_mut()?.next().await;
        if value.is_none() {
            self.0 = None;
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listening(identity: &Identity) -> Listening<'_> {
        Listening {
            waiter: "w",
            owner: "o",
            box_above: Some(0),
            head: None,
            identity,
            nodes: 1,
            needed: 1,
            node_timeout: Duration::from_millis(250),
        }
    }

    /// Calls that name other waiters, always ready, do not keep the wait past its time: it
    /// returns after the first.
    #[tokio::test]
    async fn a_flood_of_calls_does_not_hold_the_wait_past_its_time() {
        let identity = Identity::current("test");
        let flood = futures_util::stream::iter((0..10_000).map(|_| Some("other".to_owned())));
        let mut wake = Wake::default();
        wake.streams.push(flood.boxed());
        wake.live = 1;
        let past = Instant::now() - Duration::from_millis(50);
        let heard = wake.listen(past, true, &listening(&identity), &mut 0).await;
        assert_eq!(heard, Heard::Try);
        let mut left = 0;
        while let Some(Some(_)) = wake.streams.next().now_or_never() {
            left += 1;
        }
        assert!(left >= 9_999, "the wait took {} calls", 10_000 - left);
    }

    /// A box that already holds the hand-off wins over a time already up, every time.
    #[tokio::test]
    async fn a_filled_box_wins_over_a_time_that_is_up() {
        let identity = Identity::current("test");
        let l = listening(&identity);
        for _ in 0..64 {
            let filled = futures_util::stream::iter(["o 7".to_owned()])
                .chain(futures_util::stream::pending());
            let mut wake = Wake {
                boxed: HandedBox(Some(Box::pin(filled))),
                ..Wake::default()
            };
            let past = Instant::now() - Duration::from_millis(50);
            let heard = wake.listen(past, true, &l, &mut 0).await;
            assert_eq!(heard, Heard::Handed(7));
        }
    }
}
