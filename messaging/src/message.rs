use std::error::Error as StdError;
use std::fmt;

use crate::failure::Failure;
use crate::metadata::Metadata;
use crate::settle::SettleHandle;

/// A payload, its [`Metadata`], and the right to settle it exactly once.
///
/// Handlers that take a `Message<T>` settle it themselves with [`ack`](Self::ack) or
/// [`nack`](Self::nack). A message dropped without being settled is nacked with the reason
/// "message dropped without being settled" (and a warning is logged), so nothing is lost
/// silently. To derive an outgoing message from an incoming one, use [`map`](Self::map): the
/// result carries the incoming message's settle handle, so the incoming record is acknowledged
/// only once the outgoing one is delivered.
pub struct Message<T> {
    payload: T,
    metadata: Metadata,
    settle: Option<SettleHandle>,
}

impl<T> Message<T> {
    /// A message with no metadata and nothing to acknowledge, e.g. for an `Emitter` or a test.
    pub fn new(payload: T) -> Self {
        Self {
            payload,
            metadata: Metadata::new(),
            settle: None,
        }
    }

    pub(crate) fn with_settle(payload: T, metadata: Metadata, settle: SettleHandle) -> Self {
        Self {
            payload,
            metadata,
            settle: Some(settle),
        }
    }

    pub fn payload(&self) -> &T {
        &self.payload
    }

    pub fn payload_mut(&mut self) -> &mut T {
        &mut self.payload
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }

    /// Adds a metadata entry, e.g. a [`KafkaOutgoingMetadata`](crate::KafkaOutgoingMetadata).
    pub fn with_metadata<M: std::any::Any + Send + Sync>(mut self, entry: M) -> Self {
        self.metadata.insert(entry);
        self
    }

    /// Transforms the payload, keeping the metadata and the settle handle.
    pub fn map<U>(self, transform: impl FnOnce(T) -> U) -> Message<U> {
        let (payload, metadata, settle) = self.into_parts();
        Message {
            payload: transform(payload),
            metadata,
            settle,
        }
    }

    /// Acknowledges the message: for a Kafka source, its offset may now be committed.
    pub async fn ack(self) -> crate::Result<()> {
        if let (_, _, Some(settle)) = self.into_parts() {
            settle.ack();
        }
        Ok(())
    }

    /// Rejects the message; the channel's failure strategy decides what happens next. Resolves
    /// once the strategy has run (for `dead-letter-queue`, once the dead-letter write is done).
    /// The strategy runs to its end even if this call is no longer awaited (a timeout, a
    /// `select!`).
    pub async fn nack<E>(self, reason: E) -> crate::Result<()>
    where
        E: Into<Box<dyn StdError + Send + Sync>> + 'static,
    {
        if let (_, _, Some(settle)) = self.into_parts() {
            settle.nack_to_the_end(Failure::from_error(reason)).await;
        }
        Ok(())
    }

    pub(crate) fn into_parts(mut self) -> (T, Metadata, Option<SettleHandle>) {
        let settle = self.settle.take();
        // `Message` has no Drop of its own; moving the fields out is all there is to do.
        let Message {
            payload, metadata, ..
        } = self;
        (payload, metadata, settle)
    }

    pub(crate) fn from_parts(payload: T, metadata: Metadata, settle: Option<SettleHandle>) -> Self {
        Self {
            payload,
            metadata,
            settle,
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Message<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("payload", &self.payload)
            .field("metadata", &self.metadata)
            .field("settled", &self.settle.is_none())
            .finish()
    }
}
