//! The in-memory connector, for users' own tests: send into an incoming channel and get the
//! handler's verdict back; read what an outgoing channel received. No broker involved.
//!
//! Switch a channel to it with `connector = "memory"` (in code: `AppBuilder::set`, or the
//! attribute), then take the handles from the running application:
//! [`RunningApp::in_memory_source`](crate::RunningApp::in_memory_source) and
//! [`RunningApp::in_memory_sink`](crate::RunningApp::in_memory_sink).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;

use crate::codec;
use crate::config::IncomingSettings;
use crate::failure::{Failure, FailureStrategy};
use crate::handler::{BoxedHandler, Handler, Incoming, SettleSource};
use crate::health::HealthRegistry;
use crate::message::Message;
use crate::metadata::Metadata;
use crate::metrics::ChannelMetrics;
use crate::outgoing::{settle_by_delivery, Delivery, Enqueued, OutgoingMessage, Sink};
use crate::settle::{Acknowledger, SettleHandle, Token};

/// A message waiting in an in-memory channel: the encoded value.
type Queued = Message<Option<Vec<u8>>>;

/// Capacity of an in-memory channel: senders wait beyond it, as a broker would push back.
const CAPACITY: usize = 1024;

/// Sends messages into an incoming channel served by the memory connector.
#[derive(Clone)]
pub struct InMemorySource {
    channel: String,
    sender: mpsc::Sender<Queued>,
}

impl InMemorySource {
    /// Sends a payload and waits for the handler's verdict: `Ok` on ack, the reason on nack.
    pub async fn send<T: Serialize + 'static>(&self, payload: T) -> Result<(), Failure> {
        self.send_message(Message::new(payload)).await
    }

    /// Sends a message with metadata of your choosing and waits for the verdict.
    pub async fn send_message<T: Serialize + 'static>(
        &self,
        message: Message<T>,
    ) -> Result<(), Failure> {
        let (payload, metadata, _) = message.into_parts();
        let bytes = codec::encode_owned(payload)?;
        let (verdict, outcome) = oneshot::channel();
        let message = Message::with_settle(
            Some(bytes),
            metadata,
            SettleHandle::new(
                Arc::new(Verdict {
                    sender: Mutex::new(Some(verdict)),
                }),
                Token::default(),
            ),
        );
        if self.sender.send(message).await.is_err() {
            return Err(self.stopped());
        }
        outcome.await.unwrap_or_else(|_| Err(self.stopped()))
    }

    fn stopped(&self) -> Failure {
        Failure::new(format!("in-memory channel `{}` has stopped", self.channel))
    }
}

/// Reports the handler's verdict to the sender (one message per verdict); the channel's
/// strategy has already run.
struct Verdict {
    sender: Mutex<Option<oneshot::Sender<Result<(), Failure>>>>,
}

impl Verdict {
    fn tell(&self, verdict: Result<(), Failure>) {
        if let Some(sender) = self.sender.lock().expect("verdict lock").take() {
            let _ = sender.send(verdict);
        }
    }
}

impl Acknowledger for Verdict {
    fn ack(&self, _: Token) {
        self.tell(Ok(()));
    }

    fn nack(self: Arc<Self>, _: Token, failure: Failure) -> BoxFuture<'static, ()> {
        self.tell(Err(failure));
        Box::pin(async {})
    }
}

/// A running in-memory incoming channel.
pub(crate) struct MemorySourceTask {
    channel: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Everything an in-memory channel's loop needs but its handler.
pub(crate) struct MemoryLoop {
    channel: String,
    strategy: FailureStrategy,
    health: Option<HealthRegistry>,
    receiver: mpsc::Receiver<Queued>,
    stopped: watch::Receiver<bool>,
    sink: Option<Arc<dyn Sink>>,
    metrics: ChannelMetrics,
}

impl MemorySourceTask {
    pub(crate) fn spawn(
        settings: &IncomingSettings,
        handler: BoxedHandler,
        sink: Option<Arc<dyn Sink>>,
        health: &HealthRegistry,
        metrics: ChannelMetrics,
    ) -> (Self, InMemorySource) {
        let (sender, receiver) = mpsc::channel::<Queued>(CAPACITY);
        let (stop, stopped) = watch::channel(false);
        let health = settings.health_enabled.then(|| health.clone());
        if let Some(health) = &health {
            health.ready(&settings.channel);
        }
        let parts = MemoryLoop {
            channel: settings.channel.clone(),
            strategy: settings.failure_strategy,
            health,
            receiver,
            stopped,
            sink,
            metrics,
        };
        let task = tokio::spawn(handler.0.memory_loop(parts));
        (
            Self {
                channel: settings.channel.clone(),
                stop,
                task,
            },
            InMemorySource {
                channel: settings.channel.clone(),
                sender,
            },
        )
    }

    /// Stops the loop, waiting until `deadline` (the records' share of the application's
    /// shutdown timeout) for the message in hand. A handler that has not returned by then is dropped: its message is
    /// nacked as dropped, which its sender hears.
    pub(crate) async fn shutdown(self, deadline: std::time::Instant) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if tokio::time::timeout(left, &mut task).await.is_err() {
            task.abort();
            // Cancelled, rather than ended on its own just now: a handler was still running.
            if task.await.is_err_and(|ended| ended.is_cancelled()) {
                tracing::warn!(channel = %self.channel, "shutdown: the message in the handler is abandoned after its share of messaging.shutdown.timeout.ms");
            }
        }
    }
}

/// The loop of an in-memory channel: one message at a time, each settled before the next.
pub(crate) async fn consume<H: Handler>(parts: MemoryLoop, handler: Arc<H>) {
    let MemoryLoop {
        channel,
        strategy,
        health,
        mut receiver,
        mut stopped,
        sink,
        metrics,
    } = parts;
    loop {
        let message = tokio::select! {
            _ = stopped.changed() => break,
            message = receiver.recv() => match message { Some(message) => message, None => break },
        };
        metrics.received(1);
        metrics.in_flight(1);
        let (verdict_tx, verdict_rx) = oneshot::channel();
        let (value, metadata, settle) = message.into_parts();
        let watched = Arc::new(Watched {
            rejected: Mutex::new(Some((verdict_tx, settle))),
        });
        let settle_handle = || SettleHandle::new(watched.clone(), Token::default());
        let handed_over = Instant::now();
        let handled = handler
            .handle(Incoming {
                value: value.as_deref(),
                metadata,
                for_output: Metadata::new(),
                settle: SettleSource(&settle_handle),
            })
            .await;
        metrics.processing_time(handed_over.elapsed());
        handled
            .finish(&watched, Token::default(), sink.as_ref())
            .await;
        // The strategy runs before the sender hears of the nack, so what the sender sees
        // next (health, a stopped channel) is already true.
        let verdict = verdict_rx.await;
        metrics.in_flight(0);
        let Ok(Rejected { failure, sender }) = verdict else {
            metrics.acked();
            continue;
        };
        metrics.nacked();
        let stop = strategy == FailureStrategy::Fail;
        if stop {
            tracing::error!(%channel, reason = %failure, "in-memory channel failed; it stops");
            metrics.channel_failed();
            if let Some(health) = &health {
                health.fail(&channel, failure.reason());
            }
        } else {
            tracing::warn!(%channel, reason = %failure, "message nacked; ignored per failure-strategy=ignore");
            metrics.ignored();
        }
        if let Some(sender) = sender {
            sender.nack(failure).await;
        }
        if stop {
            break;
        }
    }
    if let Some(health) = &health {
        health.not_ready(&channel, "stopped");
    }
}

/// Passes an ack straight to the sender; hands a nack to the channel loop, which applies the
/// failure strategy and then tells the sender.
struct Watched {
    rejected: Mutex<Option<(oneshot::Sender<Rejected>, Option<SettleHandle>)>>,
}

struct Rejected {
    failure: Failure,
    sender: Option<SettleHandle>,
}

impl Watched {
    fn take(&self) -> Option<(oneshot::Sender<Rejected>, Option<SettleHandle>)> {
        self.rejected.lock().expect("watched lock").take()
    }
}

impl Acknowledger for Watched {
    fn ack(&self, _: Token) {
        if let Some((_, Some(sender))) = self.take() {
            sender.ack();
        }
    }

    fn nack(self: Arc<Self>, _: Token, failure: Failure) -> BoxFuture<'static, ()> {
        if let Some((verdict, sender)) = self.take() {
            let _ = verdict.send(Rejected { failure, sender });
        }
        Box::pin(async {})
    }
}

/// What an outgoing channel served by the memory connector received.
#[derive(Clone, Default)]
pub struct InMemorySink {
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    arrived: Arc<Notify>,
}

impl InMemorySink {
    /// The payloads received so far, decoded as `T` (`String`/`Vec<u8>` raw, others JSON).
    pub fn received<T: DeserializeOwned + 'static>(&self) -> Result<Vec<T>, Failure> {
        let received = self.received.lock().expect("sink lock");
        received
            .iter()
            .map(|bytes| codec::decode(Some(bytes)).map_err(Failure::new))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.received.lock().expect("sink lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until at least `count` messages have arrived.
    pub async fn wait_for(&self, count: usize) {
        loop {
            let arrived = self.arrived.notified();
            if self.len() >= count {
                return;
            }
            arrived.await;
        }
    }
}

impl Sink for InMemorySink {
    fn enqueue(&self, message: OutgoingMessage) -> BoxFuture<'_, Enqueued> {
        let (payload, _, settle) = message.into_parts();
        self.received.lock().expect("sink lock").push(payload);
        self.arrived.notify_waiters();
        let delivery: Delivery = Box::pin(settle_by_delivery(settle, Ok(())));
        Box::pin(std::future::ready(Enqueued::Delivering(delivery)))
    }

    fn flush(&self, _timeout: std::time::Duration) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}
