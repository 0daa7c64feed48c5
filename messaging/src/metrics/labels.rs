//! The label sets of the library's metrics. Each label has a bounded number of values: channels
//! and partitions are fixed by the configuration, and error types are capped per channel.

use prometheus_client::encoding::EncodeLabelSet;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ChannelLabels {
    pub(super) channel: String,
}

/// For numbers that exist per partition: consumer lag, committed offset.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct PartitionLabels {
    pub(super) channel: String,
    pub(super) topic: String,
    pub(super) partition: i32,
}

/// A dead-lettered record's channel and the type name of the error that rejected it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct DeadLetterLabels {
    pub(super) channel: String,
    pub(super) error_type: String,
}
