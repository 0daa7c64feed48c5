//! Commits each partition's contiguous watermark: every `auto.commit.interval.ms`
//! (`throttled`) or whenever an acknowledgement moves it (`latest`); and watches the age of
//! the oldest unsettled record (`throttled.unprocessed-record-max-age.ms`).
//!
//! With `enable.auto.commit=true` librdkafka commits, on its own timer, on revoke and at close,
//! whatever offsets were stored. So the same watermarks are stored instead of committed
//! (`rd_kafka_offsets_store`, a local call), and librdkafka's own store on delivery stays off:
//! it would store records no handler has finished, and a crash would lose them.
//!
//! Periodic commits are asynchronous so no tokio worker blocks on the broker; the last commit
//! at shutdown is synchronous, on a blocking thread.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};

use super::acknowledger::PartitionAcknowledger;
use super::age_watch::AgeWatch;
use super::channel_state::ChannelState;
use super::off_worker::OffWorker;
use super::rebalance::{forget_failed_commits, ChannelContext};
use crate::commit::CommitStrategy;

pub(crate) type ChannelConsumer = StreamConsumer<ChannelContext>;

/// Which offsets of a partition to send.
#[derive(Clone, Copy)]
pub(crate) enum Round {
    /// What moved since the last commit.
    Periodic,
    /// The last commit of an assignment (revoke, shutdown): the watermark, even if a commit of
    /// it is still in flight.
    Final,
}

/// Commits (or, under auto-commit, stores) the watermarks of `partitions`.
pub(crate) fn commit_watermarks<'a>(
    consumer: &impl Consumer<ChannelContext>,
    state: &ChannelState,
    partitions: impl IntoIterator<Item = &'a Arc<PartitionAcknowledger>>,
    round: Round,
    mode: CommitMode,
) {
    let mut offsets = TopicPartitionList::new();
    for assigned in partitions {
        // A partition revoked since the committer looked is the next owner's to commit (a
        // revoke's own last commit is the one `Final` round of an assignment that is over).
        if matches!(round, Round::Periodic) && !state.is_current(assigned) {
            continue;
        }
        let offset = match round {
            Round::Periodic => assigned.tracker.take_commit(),
            Round::Final => assigned.tracker.take_final_commit(),
        };
        if let Some(offset) = offset {
            let _ = offsets.add_partition_offset(
                &state.topic,
                assigned.partition,
                Offset::Offset(offset),
            );
        }
    }
    if offsets.count() == 0 {
        return;
    }
    let sent = if state.auto_commit {
        consumer.store_offsets(&offsets)
    } else {
        consumer.commit(&offsets, mode)
    };
    if let Err(error) = sent {
        tracing::warn!(channel = %state.channel, %error, "offset commit failed; it is retried at the next commit");
        // A synchronous commit's result also reaches the commit callback, which counts it.
        if state.auto_commit || matches!(mode, CommitMode::Async) {
            state.metrics.commit_failed();
        }
        forget_failed_commits(state, &offsets);
    }
}

/// Runs until the channel stops.
pub(crate) async fn run(
    consumer: OffWorker,
    state: Arc<ChannelState>,
    interval: Duration,
    max_age: Option<Duration>,
) {
    let stopped = state.stopped();
    tokio::pin!(stopped);
    let mut commit_ticks = tokio::time::interval(interval);
    commit_ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Only `throttled` watches stuck records; it looks often enough to notice one in time.
    let mut age_watch = max_age
        .filter(|_| state.commit_strategy == CommitStrategy::Throttled)
        .map(AgeWatch::new);
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = commit_ticks.tick() => {}
            _ = state.commit_wanted.notified(), if state.commit_strategy == CommitStrategy::Latest => {}
            _ = AgeWatch::tick(&mut age_watch) => {
                if age_watch.as_mut().is_some_and(|watch| watch.check(&state)) {
                    return;
                }
                continue;
            }
        }
        commit_watermarks(
            &**consumer,
            &state,
            &state.partitions(),
            Round::Periodic,
            CommitMode::Async,
        );
    }
}
