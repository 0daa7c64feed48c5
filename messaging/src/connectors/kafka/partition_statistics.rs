//! From librdkafka's statistics (every `statistics.interval.ms`), for each partition: its
//! committed offset, whoever committed it (the channel's committer or librdkafka's
//! auto-commit), and what librdkafka has fetched ahead of the channel. The lag is measured
//! against the broker instead (see `lag_watch.rs`).

use rdkafka::statistics::Statistics;

use super::channel_state::ChannelState;

/// `split`: the partitions whose queues are split off, so that librdkafka's fetch queue of each
/// is that partition's prefetch alone.
pub(crate) fn record(state: &ChannelState, statistics: &Statistics, split: &[i32]) {
    let Some(topic) = statistics.topics.get(&*state.topic) else {
        return;
    };
    for partition in topic.partitions.values() {
        // librdkafka lists every partition it knows (and an internal one, -1); only those this
        // member consumes have a committed offset (else -1, or -1001 for none).
        if partition.partition < 0 || !partition.desired {
            continue;
        }
        // A report queued before a revoke must not bring back the numbers the lag watch
        // dropped.
        if state.current_partition(partition.partition).is_none() {
            continue;
        }
        // The fetch queue of a partition read through the main queue is counted as the main
        // queue: what every such partition holds, and events. Not that partition's.
        if split.contains(&partition.partition) {
            state.metrics.prefetched(
                partition.partition,
                partition.fetchq_cnt,
                i64::try_from(partition.fetchq_size).unwrap_or(i64::MAX),
            );
        } else {
            state.metrics.prefetch_unknown(partition.partition);
        }
        if partition.committed_offset >= 0 {
            state
                .metrics
                .committed(partition.partition, partition.committed_offset);
        }
    }
}
