//! Offset tracking for at-least-once delivery.
//!
//! Connector-neutral: a source reports each record it hands out and each one settled; the
//! tracker answers which offset may be committed (the contiguous watermark) and how old the
//! oldest unsettled record is. The Kafka connector decides when to commit.

mod strategy;
mod tracker;

pub use strategy::CommitStrategy;
pub(crate) use tracker::{PartitionTracker, TrackedOffset};
