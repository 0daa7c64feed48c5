use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;

use crate::codec;
use crate::error::{Error, Result};
use crate::failure::Failure;
use crate::message::Message;
use crate::outgoing::{encoded_message, Enqueued, Sink};

/// Sends to an outgoing channel from ordinary code (a timer, an HTTP handler, a test).
///
/// `send(..).await` resolves once the broker acknowledged the record, and returns the reason
/// if it was not delivered. It waits while the connector's buffer is full (for Kafka,
/// librdkafka's bounded producer queue, `queue.buffering.max.messages`), so a fast producer
/// is slowed down rather than buffered without bound. Cheap to clone.
pub struct Emitter<T> {
    channel: String,
    sink: Arc<dyn Sink>,
    _payload: PhantomData<fn(T)>,
}

impl<T> Clone for Emitter<T> {
    fn clone(&self) -> Self {
        Self {
            channel: self.channel.clone(),
            sink: self.sink.clone(),
            _payload: PhantomData,
        }
    }
}

impl<T: Serialize + 'static> Emitter<T> {
    pub(crate) fn new(channel: &str, sink: Arc<dyn Sink>) -> Self {
        Self {
            channel: channel.to_owned(),
            sink,
            _payload: PhantomData,
        }
    }

    /// Sends a payload; resolves on the broker's acknowledgement.
    ///
    /// # How long it can wait
    ///
    /// First while the producer queue is full (`queue.buffering.max.messages`), then for the
    /// delivery: librdkafka retries a record until `message.timeout.ms` (alias
    /// `delivery.timeout.ms`) has passed, 300000 ms (five minutes) by default. While the broker
    /// is unreachable, a send therefore returns its error only after up to five minutes. Bound
    /// it per channel with `messaging.outgoing.<channel>.message.timeout.ms` (environment:
    /// `MESSAGING_OUTGOING_<CHANNEL>_MESSAGE_TIMEOUT_MS`), or for every producer with
    /// `messaging.connector.kafka.message.timeout.ms`:
    ///
    /// ```no_run
    /// # async fn run() -> messaging::Result<()> {
    /// let app = messaging::App::builder()
    ///     .outgoing("alerts")
    ///     .set("messaging.outgoing.alerts.message.timeout.ms", 10_000) // fail a send after 10 s
    ///     .environment()
    ///     .build()?
    ///     .start()
    ///     .await?;
    /// app.emitter::<String>("alerts")?.send("disk full".to_owned()).await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Wrapping the call in `tokio::time::timeout` gives up waiting, not the record: once
    /// queued, it may still be delivered.
    pub async fn send(&self, payload: T) -> Result<()> {
        self.send_message(Message::new(payload)).await
    }

    /// Sends a message, e.g. with a [`KafkaOutgoingMetadata`](crate::KafkaOutgoingMetadata) for
    /// its key and headers; resolves on the broker's acknowledgement.
    pub async fn send_message(&self, message: Message<T>) -> Result<()> {
        let (payload, metadata, settle) = message.into_parts();
        let bytes = match codec::encode_owned(payload) {
            Ok(bytes) => bytes,
            Err(failure) => {
                // A message derived from an incoming one: that one is nacked with the reason,
                // not as dropped unsettled.
                if let Some(settle) = settle {
                    settle.nack_to_the_end(failure.clone()).await;
                }
                return Err(Error::Nacked(failure));
            }
        };
        let enqueued = self
            .sink
            .enqueue(encoded_message::<T>(bytes, metadata, settle))
            .await;
        let outcome = match enqueued {
            Enqueued::Delivered(outcome) => outcome,
            // Spawned, like a processor's deliveries: a caller who stops waiting (a send in a
            // timeout) must not cancel a delivery halfway, such as a Cosmos DB write or the
            // probe an outage depends on.
            Enqueued::Delivering(delivery) => {
                tokio::spawn(delivery).await.unwrap_or_else(|error| {
                    Err(Failure::new(format!(
                        "the delivery ended without an outcome: {error}"
                    )))
                })
            }
        };
        outcome.map_err(Error::Nacked)
    }

    pub fn channel(&self) -> &str {
        &self.channel
    }
}
