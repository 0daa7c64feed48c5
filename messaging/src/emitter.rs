use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;

use crate::codec;
use crate::error::{Error, Result};
use crate::message::Message;
use crate::outgoing::Sink;

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
    pub async fn send(&self, payload: T) -> Result<()> {
        self.send_message(Message::new(payload)).await
    }

    /// Sends a message, e.g. with a [`KafkaOutgoingMetadata`](crate::KafkaOutgoingMetadata) for
    /// its key and headers; resolves on the broker's acknowledgement.
    pub async fn send_message(&self, message: Message<T>) -> Result<()> {
        let (payload, metadata, settle) = message.into_parts();
        let bytes = codec::encode_owned(payload).map_err(Error::Nacked)?;
        let delivery = self
            .sink
            .enqueue(Message::from_parts(bytes, metadata, settle))
            .await;
        delivery.await.map_err(Error::Nacked)
    }

    pub fn channel(&self) -> &str {
        &self.channel
    }
}
