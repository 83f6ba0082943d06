//! How a waiter hears that it may try again: its release subscriptions, one per node, its
//! hand-off box on one node, and the pauses between attempts after a split vote and while no
//! quorum answers.

use std::time::Duration;

use backon::BackoffBuilder;
use futures_util::stream::{BoxStream, SelectAll};
use futures_util::{FutureExt, StreamExt};

use crate::backend::WakeStream;
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
    /// `waiter`'s hand-off box if it is not open, both at once. (A value pushed before the
    /// box is read stays there for the probation, but the next attempt waits for the box all
    /// the same: a release right after it would wait for the box's connection.)
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

    /// Take every event already waiting; a subscription found ended is counted as lost.
    pub(super) fn drain(&mut self) {
        while let Some(Some(item)) = self.streams.next().now_or_never() {
            if item.is_none() {
                self.live = self.live.saturating_sub(1);
            }
        }
    }

    /// The connections are gone: subscribe again once a quorum answers.
    pub(super) fn lost_all(&mut self) {
        self.live = 0;
        self.streams = SelectAll::new();
    }
}

/// A waiter's hand-off box (see [`crate::backend::Node::handed`]): open, or not.
#[derive(Default)]
pub(super) struct HandedBox(Option<WakeStream>);

impl HandedBox {
    /// Open the box, unless it is open (or the quorum has several nodes), within the node's
    /// connect timeout; a box that cannot be opened stays closed.
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
