//! Offset tracking for at-least-once delivery.
//!
//! Connector-neutral: a source reports each record it hands out and each one settled; the
//! tracker answers which offset may be committed (the contiguous watermark) and where the
//! oldest unsettled record is (the committer times how long it stays there). The Kafka
//! connector decides when to commit.

mod strategy;
mod tracker;

pub use strategy::CommitStrategy;
pub(crate) use tracker::{PartitionTracker, TrackedOffset};
