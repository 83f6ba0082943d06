//! One pub/sub connection per node, shared by every wait on it (issue 20): each wait used to
//! open a connection of its own and subscribe on it, a few milliseconds per master under load.
//! A reader task hands each message to the waits listening on its channel. When the connection
//! ends (the server restarted, the network broke), every wait's stream ends with it, as a
//! connection of its own would have, so the wait loop counts one live subscription less and
//! subscribes again (on a new connection).
//!
//! Anyone who may PUBLISH on a lock's channel can send its waiters messages (hints only: see
//! `crate::handoff`), so what a wait keeps of them is bounded: at most [`QUEUED_MAX`] unread,
//! each at most [`MESSAGE_MAX`] bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::StreamExt;
use tokio::sync::mpsc::{self, Sender, error::TrySendError};

use crate::backend::{NodeError, WAKE_ALL, WakeStream};

/// The waits listening on each channel of one connection.
type Listeners = Arc<Mutex<HashMap<String, Vec<Sender<String>>>>>;

/// Messages a wait has not read yet, at most. A release sends one per lock, so a wait falls
/// this far behind only under a flood; the excess is dropped (a hint: the wait's heartbeat
/// attempt and its box do without it). Unbounded, a flood grew each wait's queue for as long
/// as it lasted.
const QUEUED_MAX: usize = 1024;

/// The longest message a release sends is a waiter id, an owner id and a token (86 bytes). A
/// longer one is nobody's: it reaches the waits as a wake for all, not kept whole for each.
const MESSAGE_MAX: usize = 256;

/// What the waits are handed for a message's payload (`None`: not text).
pub(super) fn wake_of(payload: Option<String>) -> String {
    payload
        .filter(|p| p.len() <= MESSAGE_MAX)
        .unwrap_or_else(|| WAKE_ALL.to_owned())
}

/// Hand `message` to each wait listening, but to none [`QUEUED_MAX`] messages behind; forget
/// those that ended (dropped their receiver).
fn deliver(waits: &mut Vec<Sender<String>>, message: &str) {
    waits.retain(|w| match w.try_send(message.to_owned()) {
        Ok(()) | Err(TrySendError::Full(_)) => true,
        Err(TrySendError::Closed(_)) => false,
    });
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
                let message = wake_of(m.get_payload::<String>().ok());
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
        Ok(Box::pin(futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|m| (m, rx)) },
        )))
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

    #[test]
    fn a_message_longer_than_any_release_sends_wakes_all_and_is_not_kept() {
        let longest = format!("{} {} {}", "w".repeat(32), "o".repeat(32), u64::MAX);
        assert_eq!(wake_of(Some(longest.clone())), longest);
        assert_eq!(wake_of(Some("x".repeat(MESSAGE_MAX + 1))), WAKE_ALL);
        assert_eq!(wake_of(None), WAKE_ALL);
    }

    #[test]
    fn a_wait_that_does_not_read_keeps_at_most_its_bound_and_an_ended_one_is_forgotten() {
        let (reading, mut unread) = mpsc::channel(QUEUED_MAX);
        let (ended, gone) = mpsc::channel(QUEUED_MAX);
        drop(gone);
        let mut waits = vec![reading, ended];
        for _ in 0..QUEUED_MAX * 3 {
            deliver(&mut waits, "w");
        }
        assert_eq!(waits.len(), 1, "the ended wait is still listed");
        let mut kept = 0;
        while unread.try_recv().is_ok() {
            kept += 1;
        }
        assert_eq!(kept, QUEUED_MAX);
        deliver(&mut waits, "after");
        assert_eq!(unread.try_recv().as_deref(), Ok("after"));
    }
}
