//! One pub/sub connection per node, shared by every wait on it (issue 20): each wait used to
//! open a connection of its own and subscribe on it, a few milliseconds per master under load.
//! A reader task hands each message to the waits listening on its channel. When the connection
//! ends (the server restarted, the network broke), every wait's stream ends with it, as a
//! connection of its own would have, so the wait loop counts one live subscription less and
//! subscribes again (on a new connection).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::StreamExt;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

use crate::backend::{NodeError, WAKE_ALL, WakeStream};

/// The waits listening on each channel of one connection.
type Listeners = Arc<Mutex<HashMap<String, Vec<UnboundedSender<String>>>>>;

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
                let payload = m
                    .get_payload::<String>()
                    .unwrap_or_else(|_| WAKE_ALL.to_owned());
                let mut map = l.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(waits) = map.get_mut(m.get_channel_name()) {
                    // A wait that ended dropped its receiver: forget it here.
                    waits.retain(|w| w.send(payload.clone()).is_ok());
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
        let (tx, rx) = unbounded_channel();
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
