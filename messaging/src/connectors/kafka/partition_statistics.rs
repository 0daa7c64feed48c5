//! The committed offset of each partition, from librdkafka's statistics (every
//! `statistics.interval.ms`), whoever committed it (the channel's committer or librdkafka's
//! auto-commit). The lag is measured against the broker instead (see `lag_watch.rs`).

use rdkafka::statistics::Statistics;

use super::channel_state::ChannelState;

pub(crate) fn record(state: &ChannelState, statistics: &Statistics) {
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
        if partition.committed_offset >= 0 {
            state
                .metrics
                .committed(partition.partition, partition.committed_offset);
        }
    }
}
