//! Commits each partition's contiguous watermark: every `auto.commit.interval.ms`
//! (`throttled`) or whenever an acknowledgement moves it (`latest`); and watches the age of
//! the oldest unsettled record (`throttled.unprocessed-record-max-age.ms`).
//!
//! Periodic commits are asynchronous so no tokio worker blocks on the broker; the last commit
//! at shutdown is synchronous, on a blocking thread.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};

use super::channel_state::ChannelState;
use super::rebalance::{forget_failed_commits, ChannelContext};
use crate::commit::CommitStrategy;

pub(crate) type ChannelConsumer = StreamConsumer<ChannelContext>;

/// Commits what moved since the last commit.
pub(crate) fn commit_watermarks(
    consumer: &ChannelConsumer,
    state: &ChannelState,
    mode: CommitMode,
) {
    let mut offsets = TopicPartitionList::new();
    for assigned in state.partitions() {
        if let Some(offset) = assigned.tracker.take_commit() {
            let _ = offsets.add_partition_offset(
                &state.topic,
                assigned.partition,
                Offset::Offset(offset),
            );
        }
    }
    if offsets.count() > 0 {
        if let Err(error) = consumer.commit(&offsets, mode) {
            tracing::warn!(channel = %state.channel, %error, "offset commit failed; it is retried at the next commit");
            forget_failed_commits(state, &offsets);
        }
    }
}

/// Runs until the channel stops.
pub(crate) async fn run(
    consumer: Arc<ChannelConsumer>,
    state: Arc<ChannelState>,
    interval: Duration,
    max_age: Option<Duration>,
) {
    let mut stop = state.subscribe_stop();
    let mut commit_ticks = tokio::time::interval(interval);
    commit_ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Only `throttled` watches stuck records; it looks often enough to notice one in time.
    let mut age_watch = max_age
        .filter(|_| state.commit_strategy == CommitStrategy::Throttled)
        .map(AgeWatch::new);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = commit_ticks.tick() => {}
            _ = state.commit_wanted.notified(), if state.commit_strategy == CommitStrategy::Latest => {}
            _ = AgeWatch::tick(&mut age_watch) => {
                if age_watch.as_mut().is_some_and(|watch| watch.check(&state)) {
                    return;
                }
                continue;
            }
        }
        commit_watermarks(&consumer, &state, CommitMode::Async);
    }
}

/// Per partition, the oldest unsettled offset and when this watch first saw it there.
struct AgeWatch {
    max_age: Duration,
    ticks: tokio::time::Interval,
    oldest: HashMap<i32, (i64, Instant)>,
}

impl AgeWatch {
    fn new(max_age: Duration) -> Self {
        let ticks = tokio::time::interval((max_age / 4).max(Duration::from_millis(10)));
        Self {
            max_age,
            ticks,
            oldest: HashMap::new(),
        }
    }

    /// The next look, or never when there is no watch.
    async fn tick(watch: &mut Option<Self>) {
        match watch {
            Some(watch) => {
                watch.ticks.tick().await;
            }
            None => std::future::pending().await,
        }
    }

    /// Fails the channel when a record has stayed unsettled longer than the limit. Returns
    /// whether it did.
    fn check(&mut self, state: &ChannelState) -> bool {
        let max_age = self.max_age;
        let now = Instant::now();
        let assignment = state.partitions();
        self.oldest.retain(|partition, _| {
            assignment
                .iter()
                .any(|assigned| assigned.partition == *partition)
        });
        for assigned in assignment {
            let partition = assigned.partition;
            let Some(offset) = assigned.tracker.oldest_unsettled() else {
                self.oldest.remove(&partition);
                continue;
            };
            // A new oldest offset restarts the clock.
            let (_, since) = *self
                .oldest
                .entry(partition)
                .and_modify(|entry| {
                    if entry.0 != offset {
                        *entry = (offset, now)
                    }
                })
                .or_insert((offset, now));
            let waited = now - since;
            if waited > max_age {
                state.fail(&format!(
                    "the oldest unsettled record of {}-{partition} (at offset {offset}, or the next one after a gap) has waited \
                     more than {} ms to be settled, longer than throttled.unprocessed-record-max-age.ms ({} ms); offsets of \
                     this partition cannot be committed past it",
                    state.topic,
                    waited.as_millis(),
                    max_age.as_millis()
                ));
                return true;
            }
        }
        false
    }
}
