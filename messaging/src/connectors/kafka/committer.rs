//! Commits each partition's contiguous watermark: every `auto.commit.interval.ms`
//! (`throttled`) or whenever an acknowledgement moves it (`latest`); and watches the age of
//! the oldest unsettled record (`throttled.unprocessed-record-max-age.ms`).
//!
//! Periodic commits are asynchronous so no tokio worker blocks on the broker; the last commit
//! at shutdown is synchronous, on a blocking thread.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};

use super::channel_state::ChannelState;
use super::rebalance::{forget_failed_commits, ChannelContext};
use crate::commit::CommitStrategy;

pub(crate) type ChannelConsumer = StreamConsumer<ChannelContext>;

/// Commits what moved since the last commit. Returns the number of partitions committed.
pub(crate) fn commit_watermarks(consumer: &ChannelConsumer, state: &ChannelState, mode: CommitMode) -> usize {
    let mut offsets = TopicPartitionList::new();
    for (partition, tracker) in state.trackers() {
        if let Some(offset) = tracker.take_commit() {
            let _ = offsets.add_partition_offset(&state.topic, partition, Offset::Offset(offset));
        }
    }
    let count = offsets.count();
    if count > 0 {
        if let Err(error) = consumer.commit(&offsets, mode) {
            tracing::warn!(channel = %state.channel, %error, "offset commit failed; it is retried at the next commit");
            forget_failed_commits(state, &offsets);
        }
    }
    count
}

/// Runs until the channel stops.
pub(crate) async fn run(consumer: Arc<ChannelConsumer>, state: Arc<ChannelState>, interval: Duration, max_age: Option<Duration>) {
    let mut stop = state.subscribe_stop();
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = ticks.tick() => {
                if let Some(max_age) = max_age {
                    if state.commit_strategy == CommitStrategy::Throttled && check_max_age(&state, max_age) {
                        return;
                    }
                }
            }
            _ = state.commit_wanted.notified(), if state.commit_strategy == CommitStrategy::Latest => {}
        }
        commit_watermarks(&consumer, &state, CommitMode::Async);
    }
}

/// Fails the channel when a record has waited longer than the limit. Returns whether it did.
fn check_max_age(state: &ChannelState, max_age: Duration) -> bool {
    for (partition, tracker) in state.trackers() {
        let position = tracker.position();
        if let Some((offset, waited)) = position.oldest_unsettled {
            if waited > max_age {
                state.fail(&format!(
                    "the record at offset {offset} of {}-{partition} has waited {} ms to be settled, more than \
                     throttled.unprocessed-record-max-age.ms ({} ms); offsets of this partition cannot be committed past it",
                    state.topic,
                    waited.as_millis(),
                    max_age.as_millis()
                ));
                return true;
            }
        }
    }
    false
}
