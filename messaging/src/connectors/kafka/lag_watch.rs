//! Consumer lag per assigned partition: the broker's high watermark against the channel's own
//! position (its first record not yet settled; before any record, the committed offset).
//!
//! librdkafka's statistics carry a lag too, but it learns the high watermark only from its own
//! fetches: a consumer that stops fetching (a full prefetch queue behind a stuck handler, a
//! partition at `max-buffered-records`) reports a lag that stops growing exactly when it grows.
//! Asking the broker every few seconds, on a blocking thread, keeps it true. A partition's
//! numbers are dropped once it is no longer assigned here at a round (an eager rebalance that
//! gives it straight back between two rounds does not interrupt its series), and all of them
//! when the consumer closes and leaves its group (`ChannelMetrics::consumer_closed`): the
//! members that take its partitions over report them. Until then the watch goes on, also for
//! a stopping or failed channel that still holds its partitions.
//!
//! A round asks for one partition after another within `ROUND_TIMEOUT`; the next round starts
//! with the partition after the last one this round reached, so a slow broker delays every
//! partition's figure alike instead of never reaching the last ones.
//!
//! Each round also says when a partition stands still behind one unsettled record, with
//! `max-buffered-records` or more taken behind it (or with its share of the consumer loop
//! full): under `commit-strategy=latest` or `ignore` no age watch would say it.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};

use super::acknowledger::PartitionAcknowledger;
use super::channel_state::ChannelState;
use super::committer::ChannelConsumer;
use super::off_worker::OffWorker;
use super::source::OPEN_PER_BUFFERED_RECORD;

/// How often the lag is measured: as often as the committed offsets come (librdkafka's
/// statistics, `statistics.interval.ms` by default).
const INTERVAL: Duration = Duration::from_secs(5);

/// The longest a round may ask the broker for; a broker that does not answer leaves the last
/// figures in place (the broker probe reports it), and a closing consumer waits for no more
/// than one question.
const ROUND_TIMEOUT: Duration = Duration::from_secs(2);

/// What a round leaves for the next.
#[derive(Default)]
struct Seen {
    /// The last partition the round reached: the next round starts after it.
    last_reached: Option<i32>,
    /// Partitions at their cap: the offset they wait for, and for how many rounds running.
    at_cap: Vec<(i32, Option<i64>, u32)>,
}

/// Measures until the consumer closes. `consumer` yields the consumer until then.
pub(crate) fn spawn(
    consumer: Weak<ChannelConsumer>,
    state: Arc<ChannelState>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen = Seen::default();
        loop {
            ticks.tick().await;
            let (consumer, measuring) = (consumer.clone(), state.clone());
            let previous = std::mem::take(&mut seen);
            let last_reached = previous.last_reached;
            let measured = tokio::task::spawn_blocking(move || {
                // Held as an `OffWorker`: if this ends up the consumer's last reference, its
                // close still runs on a thread of its own, marked as a close.
                let consumer =
                    OffWorker::new(consumer.upgrade().filter(|_| !measuring.is_closing())?);
                Some(measure(&consumer, &measuring, previous))
            })
            .await;
            match measured {
                Ok(Some(now)) => seen = now,
                Ok(None) => break,
                // A bug, not the broker (its errors leave the figures in place): said, and the
                // next round tries again rather than leave the channel without a lag.
                Err(failed) => {
                    tracing::error!(channel = %state.channel, error = %failed,
                        "measuring the consumer lag failed; trying again at the next round");
                    seen.last_reached = last_reached;
                }
            }
        }
    })
}

/// The order a round asks for the partitions in: from the one after `last_reached` on, round
/// the assignment.
fn round_order(assigned: &[i32], last_reached: Option<i32>) -> Vec<i32> {
    let start = last_reached
        .and_then(|last| assigned.iter().position(|&number| number == last))
        .map_or(0, |position| position + 1);
    assigned
        .iter()
        .cycle()
        .skip(start)
        .take(assigned.len())
        .copied()
        .collect()
}

/// Sets the lag of every assigned partition; drops the numbers of those no longer assigned.
fn measure(consumer: &ChannelConsumer, state: &ChannelState, previous: Seen) -> Seen {
    let assigned = state.partitions();
    let mut numbers: Vec<i32> = assigned
        .iter()
        .map(|partition| partition.partition)
        .collect();
    // In partition order, so "after the last one reached" means the same from round to round.
    numbers.sort_unstable();
    state.metrics.keep_partitions(&numbers);
    let deadline = Instant::now() + ROUND_TIMEOUT;
    let mut seen = Seen {
        last_reached: previous.last_reached,
        at_cap: Vec::new(),
    };
    let mut unread = Vec::new();
    for number in round_order(&numbers, previous.last_reached) {
        let Some(partition) = assigned
            .iter()
            .find(|partition| partition.partition == number)
        else {
            continue;
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if state.is_closing() || left.is_zero() {
            break;
        }
        seen.last_reached = Some(number);
        let Ok((_, high)) = consumer.fetch_watermarks(&state.topic, number, left) else {
            continue;
        };
        match partition.tracker.committable() {
            // Not for a partition revoked while the round asked the broker: its series would
            // come back beside its new owner's.
            Some(position) if still_assigned(state, partition) => {
                state.metrics.consumer_lag(number, (high - position).max(0));
            }
            Some(_) => {}
            None => unread.push((number, high)),
        }
        // Any cap: unsettled records, settled records piled up behind an unsettled one, or
        // the partition's share of the loop filled (records waiting behind one that does not
        // finish).
        let share = state.partition_share();
        // Not for a retry topic's record waiting out the topic's delay: the records behind it
        // were written later and are due later. Its rounds count from the end of the wait, so
        // a handler that then hangs on it is still told of.
        let waits_its_delay =
            state.retry_delay.is_some() && partition.tracker.oldest_waits_for_retry();
        // From `max-buffered-records` not committable on, not only at eight times that, where
        // the loop stops taking the partition's records: a slow partition may never get there.
        // (Its other caps, unsettled records and records not committable, are reached only
        // past that.)
        if !waits_its_delay
            && (partition.tracker.open() >= state.max_buffered_records
                || partition.held_by_loop() >= share)
        {
            let waiting_for = partition.tracker.committable();
            let rounds = previous
                .at_cap
                .iter()
                .find(|(seen, offset, _)| *seen == number && *offset == waiting_for)
                .map_or(1, |(_, _, rounds)| rounds + 1);
            // At the cap is normal while a backlog drains; at the cap without moving for a
            // whole round is a partition standing still: said once per offset it waits for.
            if rounds == 2 {
                tracing::warn!(channel = %state.channel, partition = number, waiting_for_offset = waiting_for,
                    max_buffered_records = state.max_buffered_records, partition_share = share,
                    "the partition's committed offset waits for one record not settled yet, with max-buffered-records or more taken behind it (or its share of the loop full); at {OPEN_PER_BUFFERED_RECORD} times max-buffered-records not committable no more of it is taken until that one settles");
            }
            seen.at_cap.push((number, waiting_for, rounds));
        }
    }
    for (number, position) in committed(consumer, state, &unread, deadline) {
        let high = unread
            .iter()
            .find(|(partition, _)| *partition == number)
            .map_or(position, |(_, high)| *high);
        let assigned_still = assigned
            .iter()
            .find(|partition| partition.partition == number)
            .is_some_and(|partition| still_assigned(state, partition));
        if assigned_still {
            state.metrics.consumer_lag(number, (high - position).max(0));
        }
    }
    seen
}

/// Whether `partition` is still this member's current assignment of its partition.
fn still_assigned(state: &ChannelState, partition: &PartitionAcknowledger) -> bool {
    state
        .current_partition(partition.partition)
        .is_some_and(|current| std::ptr::eq(&*current, partition))
}

/// The group's committed offsets of partitions this member has not read from yet, in one
/// question.
fn committed(
    consumer: &ChannelConsumer,
    state: &ChannelState,
    unread: &[(i32, i64)],
    deadline: Instant,
) -> Vec<(i32, i64)> {
    let left = deadline.saturating_duration_since(Instant::now());
    if unread.is_empty() || left.is_zero() || state.is_closing() {
        return Vec::new();
    }
    let mut list = TopicPartitionList::new();
    for (number, _) in unread {
        list.add_partition(&state.topic, *number);
    }
    let Ok(committed) = consumer.committed_offsets(list, left) else {
        return Vec::new();
    };
    committed
        .elements()
        .iter()
        .filter_map(|element| match element.offset() {
            Offset::Offset(offset) => Some((element.partition(), offset)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::round_order;

    /// A round that reached only some partitions (a slow broker) is followed by one that
    /// starts with the first it did not reach, so every partition is reached in turn.
    #[test]
    fn a_round_starts_after_the_last_partition_the_previous_one_reached() {
        let assigned = [0, 1, 2, 3, 4];
        assert_eq!(round_order(&assigned, None), [0, 1, 2, 3, 4]);
        assert_eq!(round_order(&assigned, Some(1)), [2, 3, 4, 0, 1]);
        assert_eq!(round_order(&assigned, Some(4)), [0, 1, 2, 3, 4]);
        // The last one reached was revoked since: from the start.
        assert_eq!(round_order(&[0, 2, 3], Some(1)), [0, 2, 3]);
        assert!(round_order(&[], Some(1)).is_empty());
    }
}
