//! How a waiter hears that it may try again: its release subscriptions, one per node, and the
//! pauses between attempts after a split vote and while no quorum answers.

use std::time::Duration;

use backon::BackoffBuilder;
use futures_util::stream::{BoxStream, SelectAll};
use futures_util::{FutureExt, StreamExt};

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

/// A waiter's release subscriptions, one per node that answered.
#[derive(Default)]
pub(super) struct Wake {
    /// Every subscription's events (who should try now), and one `None` from each as it ends.
    pub(super) streams: SelectAll<BoxStream<'static, Option<String>>>,
    /// Subscriptions still open.
    pub(super) live: usize,
    /// True once we subscribed: from then on attempts register us as a waiter.
    pub(super) registered: bool,
}

impl Wake {
    /// (Re)subscribe on every node, replacing the subscriptions we had.
    pub(super) async fn subscribe(&mut self, quorum: &Quorum, keys: &LockKeys) {
        let (streams, _) = quorum.subscribe(keys).await;
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
