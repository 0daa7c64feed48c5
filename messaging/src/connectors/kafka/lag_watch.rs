//! Consumer lag per assigned partition: the broker's high watermark against the channel's own
//! position (its first record not yet settled; before any record, the committed offset).
//!
//! librdkafka's statistics carry a lag too, but it learns the high watermark only from its own
//! fetches: a consumer that stops fetching (a full prefetch queue behind a stuck handler, a
//! partition at `max-buffered-records`) reports a lag that stops growing exactly when it grows.
//! Asking the broker every few seconds, on a blocking thread, keeps it true. A partition's
//! numbers are dropped only once it has not been assigned here for a whole round: an eager
//! rebalance that gives it straight back does not interrupt its series.

use std::sync::{Arc, Weak};
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};

use super::channel_state::ChannelState;
use super::committer::ChannelConsumer;

/// How often the lag is measured: as often as the committed offsets come (librdkafka's
/// statistics, `statistics.interval.ms` by default).
const INTERVAL: Duration = Duration::from_secs(5);

/// The longest one broker question may take; a broker that does not answer leaves the last
/// figures in place (the broker probe reports it).
const QUESTION_TIMEOUT: Duration = Duration::from_secs(2);

/// Measures until the channel stops. `consumer` yields the consumer while the channel runs.
pub(crate) fn spawn(
    consumer: Weak<ChannelConsumer>,
    state: Arc<ChannelState>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reported: Vec<i32> = Vec::new();
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = state.stopped() => return,
            }
            let (consumer, measuring) = (consumer.clone(), state.clone());
            let previous = std::mem::take(&mut reported);
            let measured = tokio::task::spawn_blocking(move || {
                let consumer = consumer.upgrade().filter(|_| !measuring.stop_requested())?;
                Some(measure(&consumer, &measuring, &previous))
            })
            .await;
            match measured {
                Ok(Some(now)) => reported = now,
                _ => return,
            }
        }
    })
}

/// Sets the lag of every assigned partition; drops the numbers of those reported last round
/// and no longer assigned. Returns the partitions reported.
fn measure(consumer: &ChannelConsumer, state: &ChannelState, previous: &[i32]) -> Vec<i32> {
    let assigned = state.partitions();
    let mut reported = Vec::with_capacity(assigned.len());
    for partition in &assigned {
        let number = partition.partition;
        let Ok((_, high)) = consumer.fetch_watermarks(&state.topic, number, QUESTION_TIMEOUT)
        else {
            continue;
        };
        let position = partition
            .tracker
            .committable()
            .or_else(|| committed(consumer, state, number));
        if let Some(position) = position {
            state.metrics.consumer_lag(number, (high - position).max(0));
            reported.push(number);
        }
    }
    for gone in previous.iter().filter(|number| {
        !assigned
            .iter()
            .any(|partition| partition.partition == **number)
    }) {
        state.metrics.partition_revoked(*gone);
    }
    reported
}

/// The group's committed offset of a partition this member has not read from yet.
fn committed(consumer: &ChannelConsumer, state: &ChannelState, partition: i32) -> Option<i64> {
    let mut list = TopicPartitionList::new();
    list.add_partition(&state.topic, partition);
    let committed = consumer.committed_offsets(list, QUESTION_TIMEOUT).ok()?;
    match committed.find_partition(&state.topic, partition)?.offset() {
        Offset::Offset(offset) => Some(offset),
        _ => None,
    }
}
