//! One pub/sub connection per node, shared by every wait on it (issue 20): each wait used to
//! open a connection of its own and subscribe on it, a few milliseconds per master under load.
//! A reader task hands each message to the waits listening on its channel. When the connection
//! ends (the server restarted, the network broke), every wait's stream ends with it, as a
//! connection of its own would have, so the wait loop counts one live subscription less and
//! subscribes again (on a new connection).
//!
//! Anyone who may PUBLISH on a lock's channel can send its waiters messages (hints only: see
//! `crate::handoff`), so what a wait keeps of them is bounded: at most [`QUEUED_MAX`] unread,
//! each at most [`MESSAGE_MAX`] bytes, read off the connection by a task as they come (a Redis
//! Cluster wait's connection of its own too: [`bounded`]) so they do not pile up in the
//! client's own unbounded queue while the wait is busy elsewhere.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::StreamExt;
use tokio::sync::mpsc::{self, Sender, error::TrySendError};

use crate::backend::{NodeError, WAKE_ALL, WakeStream};

/// The waits listening on each channel of one connection.
type Listeners = Arc<Mutex<HashMap<String, Vec<Sender<String>>>>>;

/// Messages a wait has not read yet, at most. A release sends one per lock, so a wait falls
/// this far behind only under a flood (or stuck in one attempt for its timeout); then the last
/// place holds a wake for all (the wait tries once it reads that far) and later messages are
/// dropped (hints: the wait's heartbeat attempt and its box do without them). Unbounded, a
/// flood grew each wait's queue for as long as it lasted.
const QUEUED_MAX: usize = 1024;

/// The longest message a release sends is a waiter id, an owner id and a token (86 bytes). A
/// longer one, or one that is not text, is nobody's: dropped, never copied.
const MESSAGE_MAX: usize = 256;

/// What the waits are handed for a message, if anything.
fn wake_of(m: &redis::Msg) -> Option<String> {
    let payload = m.get_payload_bytes();
    if payload.len() > MESSAGE_MAX {
        return None;
    }
    String::from_utf8(payload.to_vec()).ok()
}

/// Hand `message` to each wait listening: into its last free place a wake for all instead,
/// and nothing once it is [`QUEUED_MAX`] behind; forget those that ended (dropped their
/// receiver).
fn deliver(waits: &mut Vec<Sender<String>>, message: &str) {
    waits.retain(|w| {
        let m = if w.capacity() == 1 { WAKE_ALL } else { message };
        match w.try_send(m.to_owned()) {
            Ok(()) | Err(TrySendError::Full(_)) => true,
            Err(TrySendError::Closed(_)) => false,
        }
    });
}

/// The messages of `stream` (one subscription's connection of its own), read off it by a task
/// as they come and kept as [`deliver`] keeps them; the task and its connection end when the
/// returned stream is dropped or the connection ends.
pub(super) fn bounded<S>(mut stream: S) -> WakeStream
where
    S: futures_util::Stream<Item = redis::Msg> + Send + Unpin + 'static,
{
    let (tx, rx) = mpsc::channel(QUEUED_MAX);
    tokio::spawn(async move {
        let mut waits = vec![tx];
        while let Some(wait) = waits.first().cloned() {
            tokio::select! {
                m = stream.next() => match m {
                    Some(m) => {
                        if let Some(message) = wake_of(&m) {
                            deliver(&mut waits, &message);
                        }
                    }
                    None => return,
                },
                () = wait.closed() => return,
            }
        }
    });
    receiver_stream(rx)
}

/// A wait's end of its channel, as a stream.
fn receiver_stream(rx: mpsc::Receiver<String>) -> WakeStream {
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|m| (m, rx))
    }))
}

/// The shared connection of one node, once opened and while its reader runs.
pub(super) struct Shared {
    sink: redis::aio::PubSubSink,
    listeners: Listeners,
    /// Cleared by the reader when the connection ends.
    live: Arc<std::sync::atomic::AtomicBool>,
    /// Dropped with the last holder (the node, a wait subscribing): the reader then stops and
    /// the connection closes (dropping the sink alone leaves the stream's task running).
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Shared {
    /// Open one pub/sub connection on `client` and start its reader.
    pub(super) async fn open(client: &redis::Client) -> redis::RedisResult<Self> {
        let (sink, stream) = client.get_async_pubsub().await?.split();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut stream = stream.take_until(stopped);
        let listeners: Listeners = Arc::default();
        let live = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (l, alive) = (Arc::clone(&listeners), Arc::clone(&live));
        tokio::spawn(async move {
            while let Some(m) = stream.next().await {
                let Some(message) = wake_of(&m) else {
                    continue;
                };
                let mut map = l.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(waits) = map.get_mut(m.get_channel_name()) {
                    deliver(waits, &message);
                }
            }
            // The connection ended (or the node was dropped): every wait's stream ends (its
            // sender dropped here), so it subscribes again.
            alive.store(false, std::sync::atomic::Ordering::SeqCst);
            l.lock().unwrap_or_else(PoisonError::into_inner).clear();
        });
        Ok(Shared {
            sink,
            listeners,
            live,
            _stop: stop,
        })
    }

    /// Whether the reader still runs.
    pub(super) fn is_live(&self) -> bool {
        self.live.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A stream of the messages on `channel`, from the moment the server confirmed the
    /// subscription (sent again for every wait: the confirmation is what says the server
    /// listens now, and a repeated SUBSCRIBE changes nothing there).
    pub(super) async fn listen(&self, channel: &str) -> Result<WakeStream, redis::RedisError> {
        let (tx, rx) = mpsc::channel(QUEUED_MAX);
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(channel.to_owned())
            .or_default()
            .push(tx);
        let mut sink = self.sink.clone();
        sink.subscribe(channel).await?;
        if !self.is_live() {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "the pub/sub connection ended",
            )));
        }
        Ok(receiver_stream(rx))
    }
}

/// Owns the node's shared connection: [`Self::listen`] opens it on first use and again once
/// it ended.
#[derive(Default)]
pub(super) struct Subscriber(tokio::sync::Mutex<Option<Arc<Shared>>>);

impl Subscriber {
    /// Listen on `channel` over the shared connection, opening one on the client `client`
    /// yields when there is none live. A failure drops the connection, so the next wait opens
    /// a new one.
    pub(super) async fn listen<F, Fut>(
        &self,
        client: F,
        channel: &str,
        describe: impl Fn(&redis::RedisError) -> String,
    ) -> Result<WakeStream, NodeError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<redis::Client, NodeError>>,
    {
        let shared = {
            let mut slot = self.0.lock().await;
            match slot.as_ref().filter(|s| s.is_live()) {
                Some(s) => Arc::clone(s),
                None => {
                    let client = client().await?;
                    let s = Arc::new(
                        Shared::open(&client)
                            .await
                            .map_err(|e| NodeError::new(describe(&e)))?,
                    );
                    *slot = Some(Arc::clone(&s));
                    s
                }
            }
        };
        match shared.listen(channel).await {
            Ok(s) => Ok(s),
            Err(e) => {
                let mut slot = self.0.lock().await;
                if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, &shared)) {
                    *slot = None;
                }
                Err(NodeError::new(describe(&e)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pub/sub message on channel `c` with `payload`, as the server sends it.
    fn msg(payload: &[u8]) -> redis::Msg {
        let push = |b: &[u8]| redis::Value::BulkString(b.to_vec());
        redis::Msg::from_value(&redis::Value::Array(vec![
            push(b"message"),
            push(b"c"),
            push(payload),
        ]))
        .unwrap()
    }

    #[test]
    fn a_message_longer_than_any_release_sends_or_not_text_is_nobodys() {
        let longest = format!("{} {} {}", "w".repeat(32), "o".repeat(32), u64::MAX);
        assert_eq!(wake_of(&msg(longest.as_bytes())), Some(longest));
        assert_eq!(wake_of(&msg(&[b'x'; MESSAGE_MAX + 1])), None);
        assert_eq!(wake_of(&msg(&[0xff, 0xfe])), None);
    }

    #[test]
    fn a_wait_that_does_not_read_keeps_its_bound_ending_in_a_wake_and_an_ended_one_is_gone() {
        let (reading, mut unread) = mpsc::channel(QUEUED_MAX);
        let (ended, gone) = mpsc::channel(QUEUED_MAX);
        drop(gone);
        let mut waits = vec![reading, ended];
        for _ in 0..QUEUED_MAX * 3 {
            deliver(&mut waits, "w");
        }
        assert_eq!(waits.len(), 1, "the ended wait is still listed");
        let mut kept = Vec::new();
        while let Ok(m) = unread.try_recv() {
            kept.push(m);
        }
        assert_eq!(kept.len(), QUEUED_MAX);
        assert_eq!(
            kept.last().map(String::as_str),
            Some(WAKE_ALL),
            "no wake for the overflow"
        );
        assert!(kept[..QUEUED_MAX - 1].iter().all(|m| m == "w"));
        deliver(&mut waits, "after");
        assert_eq!(unread.try_recv().as_deref(), Ok("after"));
    }

    /// A Cluster wait's own subscription is read off as it comes and kept bounded, and its
    /// reader ends once the wait drops its stream.
    #[tokio::test]
    async fn a_bounded_subscription_keeps_its_bound_and_its_reader_ends_with_the_wait() {
        // A source that ends, and says when the reader asked past its last message: the
        // wait reads only then, and its stream ends after what it kept.
        let mut sent: Vec<redis::Msg> = (0..QUEUED_MAX * 2).map(|_| msg(b"w")).collect();
        sent.push(msg(&[b'x'; MESSAGE_MAX + 1]));
        sent.push(msg(b"last"));
        let (all_read, read) = tokio::sync::oneshot::channel::<()>();
        let said = futures_util::stream::once(async move {
            let _ = all_read.send(());
        })
        .filter_map(|()| async { None });
        let wake = bounded(Box::pin(futures_util::stream::iter(sent).chain(said)));
        read.await.unwrap();
        let kept: Vec<String> = wake.collect().await;
        assert_eq!(kept.len(), QUEUED_MAX);
        assert_eq!(kept.last().map(String::as_str), Some(WAKE_ALL));
        // A source that never ends: dropping the wait's stream ends the reader, which drops
        // the source.
        let (tx, rx) = mpsc::unbounded_channel::<redis::Msg>();
        let source =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|m| (m, rx)) },
            );
        let wake = bounded(Box::pin(source));
        tx.send(msg(b"w")).unwrap();
        drop(wake);
        tokio::time::timeout(std::time::Duration::from_secs(5), tx.closed())
            .await
            .expect("the reader outlived its wait");
    }
}
