//! Connectors: where incoming messages come from and outgoing ones go.
//!
//! A connector implements the core's contracts: [`Sink`] (outgoing, in
//! [`outgoing`](crate::outgoing)) and a consumer loop that feeds a [`Handler`]; only `kafka/`
//! touches rdkafka.

#[cfg(feature = "cosmos")]
pub(crate) mod cosmos;
pub(crate) mod kafka;
pub(crate) mod memory;

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::handler::Handler;

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
