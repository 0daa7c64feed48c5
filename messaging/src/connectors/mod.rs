//! Connectors: where incoming messages come from and outgoing ones go.
//!
//! The core sees a connector through [`Sink`] (outgoing) and through the consumer loops that
//! feed a [`Handler`]; only `kafka/` touches rdkafka.

pub(crate) mod kafka;
pub(crate) mod memory;

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::failure::Failure;
use crate::handler::{Handler, OutgoingMessage};
use crate::settle::SettleHandle;

/// Starts a channel's consumer loop compiled for the channel's concrete handler type: the one
/// dynamic call per channel, so that no record pays for one.
pub(crate) trait ChannelHandler: Send + Sync + 'static {
    fn kafka_loop(self: Arc<Self>, parts: kafka::SourceParts) -> BoxFuture<'static, ()>;
    fn memory_loop(self: Arc<Self>, parts: memory::MemoryLoop) -> BoxFuture<'static, ()>;
}

impl<H: Handler> ChannelHandler for H {
    fn kafka_loop(self: Arc<Self>, parts: kafka::SourceParts) -> BoxFuture<'static, ()> {
        Box::pin(kafka::consume(parts, self))
    }

    fn memory_loop(self: Arc<Self>, parts: memory::MemoryLoop) -> BoxFuture<'static, ()> {
        Box::pin(memory::consume(parts, self))
    }
}

/// Resolves once an outgoing message was delivered or finally failed, after settling it.
pub(crate) type Delivery = BoxFuture<'static, Result<(), Failure>>;

/// An outgoing channel's connector.
pub(crate) trait Sink: Send + Sync + 'static {
    /// Hands the message to the connector, in call order. Resolves once it is enqueued (this is
    /// where backpressure waits) to the future of its delivery.
    fn enqueue(&self, message: OutgoingMessage) -> BoxFuture<'_, Delivery>;

    /// Waits, up to `timeout`, for enqueued messages to be delivered.
    fn flush(&self, timeout: std::time::Duration) -> BoxFuture<'static, ()>;
}

/// Settles an outgoing message by its delivery outcome and passes the outcome on.
pub(crate) async fn settle_by_delivery(
    settle: Option<SettleHandle>,
    outcome: Result<(), Failure>,
) -> Result<(), Failure> {
    if let Some(settle) = settle {
        match &outcome {
            Ok(()) => settle.ack(),
            Err(failure) => settle.nack(failure.clone()).await,
        }
    }
    outcome
}

/// Sends a processor's output to the sink, whose delivery settles the input: the input is acked
/// only once the output is durable.
///
/// The consumer loops await a handler's future and then, if it yielded an output, this (through
/// [`Handled::finish`](crate::handler::Handled::finish)): in place, with no per-record wrapper
/// future (which would only be one more copy of the handler's future).
pub(crate) async fn forward(sink: Option<&Arc<dyn Sink>>, output: OutgoingMessage) {
    match sink {
        Some(sink) => {
            let delivery = sink.enqueue(output).await;
            tokio::spawn(delivery);
        }
        None => {
            let (_, _, settle) = output.into_parts();
            let failure = Failure::new(
                "a subscriber produced an output but its channel has no outgoing channel",
            );
            settle_by_delivery(settle, Err(failure)).await.ok();
        }
    }
}
