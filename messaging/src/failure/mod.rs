//! Why a message was rejected, and what a channel does about it.
//!
//! [`Failure`] is the value a nack carries; [`FailureStrategy`] is the channel's answer to it.
//! The Kafka-specific execution of a strategy (writing the dead-letter record) lives with the
//! Kafka connector; everything here is connector-neutral.

mod reason;
mod strategy;

pub use reason::Failure;
pub use strategy::FailureStrategy;
