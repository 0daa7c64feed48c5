//! Settling consumed records of one assigned partition: an ack marks the offset committable;
//! a nack runs the channel's failure strategy first.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use futures_util::future::BoxFuture;
use tokio::sync::Notify;

use super::channel_state::ChannelState;
use super::dead_letter::{DeadLetterWriter, Original, OriginalRecord, RecordPosition};
use super::intake::Intake;
use super::retry_topic::{is_retry_history, now_ms, NextStep, RetryHistory};
use crate::commit::{PartitionTracker, TrackedOffset};
use crate::failure::{Failure, FailureStrategy};
use crate::metrics::ChannelMetrics;
use crate::settle::{nack_dropped, Acknowledger, Token, DROPPED_KIND};

/// The acknowledger of one partition's current assignment. Records are settled by offset; the
/// tracker keeps each record's original only when the dead-letter topic may need it.
pub(crate) struct PartitionAcknowledger {
    pub(crate) partition: i32,
    pub(crate) tracker: PartitionTracker<OriginalRecord>,
    /// Weak: the channel owns its partitions, not the other way round.
    channel: Weak<ChannelState>,
    /// Set for `commit-strategy=latest`: an advancing ack wakes the committer.
    wake_committer: Option<Arc<Notify>>,
    /// Wakes the records of this assignment that wait for a retry when it is revoked.
    revoke_signal: Notify,
    /// The channel's, held here so that an ack need not reach the channel through `Weak`.
    metrics: ChannelMetrics,
    /// Woken when a record settles while the consumer loop waits for room in this partition.
    intake: Arc<Intake>,
    /// Whether a message of this assignment dropped while its channel stops was logged: a
    /// shutdown that gives up thousands of deliveries says so once per partition.
    told_of_drop_while_stopping: AtomicBool,
    /// How many of this assignment's records the consumer loop holds: waiting to start,
    /// running, waiting for a retry or being dead-lettered. Only the loop writes it (a load and
    /// a store, no read-modify-write); the lag watch reads it.
    held_by_loop: AtomicUsize,
    /// This assignment's handler calls under way. Only the consumer loop's record futures
    /// change it (a load and a store, as `held_by_loop`); the age watch reads it, also once the
    /// assignment is revoked: a call that never returns keeps its place among
    /// `max-concurrency` and its ordering turn, which the partition's next assignment waits for.
    calls_running: AtomicUsize,
}

/// A handler call under way, counted in its assignment's `calls_running` until dropped.
pub(crate) struct CallRunning<'a>(&'a PartitionAcknowledger);

impl Drop for CallRunning<'_> {
    fn drop(&mut self) {
        let running = &self.0.calls_running;
        running.store(
            running.load(Ordering::Relaxed).saturating_sub(1),
            Ordering::Relaxed,
        );
    }
}

impl PartitionAcknowledger {
    pub(crate) fn new(
        partition: i32,
        tracker: PartitionTracker<OriginalRecord>,
        channel: Weak<ChannelState>,
        wake_committer: Option<Arc<Notify>>,
        metrics: ChannelMetrics,
        intake: Arc<Intake>,
    ) -> Self {
        Self {
            partition,
            tracker,
            channel,
            wake_committer,
            revoke_signal: Notify::new(),
            metrics,
            intake,
            told_of_drop_while_stopping: AtomicBool::new(false),
            held_by_loop: AtomicUsize::new(0),
            calls_running: AtomicUsize::new(0),
        }
    }

    /// Counts a handler call as under way until the returned guard drops. Only the consumer
    /// loop's record futures call this.
    #[inline]
    pub(crate) fn call_running(&self) -> CallRunning<'_> {
        let running = &self.calls_running;
        running.store(running.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        CallRunning(self)
    }

    /// How many of this assignment's handler calls are under way now.
    pub(crate) fn calls_running(&self) -> usize {
        self.calls_running.load(Ordering::Relaxed)
    }

    /// How many of this assignment's records the consumer loop holds now.
    #[inline]
    pub(crate) fn held_by_loop(&self) -> usize {
        self.held_by_loop.load(Ordering::Relaxed)
    }

    /// The consumer loop took in a record (`true`) or let one go (`false`). Only the loop calls
    /// this.
    #[inline]
    pub(crate) fn loop_holds(&self, one_more: bool) {
        let held = self.held_by_loop.load(Ordering::Relaxed);
        let held = if one_more {
            held + 1
        } else {
            debug_assert!(held > 0, "a record let go twice");
            held.saturating_sub(1)
        };
        self.held_by_loop.store(held, Ordering::Relaxed);
    }

    /// Ends this assignment: late settles change nothing, and records waiting for a retry
    /// stop waiting (the partition's next owner reads them again).
    pub(crate) fn revoke(&self) {
        self.tracker.revoke();
        self.revoke_signal.notify_waiters();
    }

    /// Resolves once this assignment is revoked, also when that was before this call.
    pub(crate) async fn revoked(&self) {
        let notified = self.revoke_signal.notified();
        let mut notified = std::pin::pin!(notified);
        // Registered before the flag is read: a revoke in between still wakes us.
        notified.as_mut().enable();
        if self.tracker.is_revoked() {
            return;
        }
        notified.await;
    }

    fn settle(&self, record: TrackedOffset) {
        self.settled(self.tracker.settled(record));
    }

    /// A record settled: a partition the consumer loop left at its cap may take more (one
    /// unsettled record fewer, even when the watermark did not move), and `latest` commits as
    /// soon as the committable offset moves.
    fn settled(&self, advanced: bool) {
        self.intake.settled();
        if advanced {
            if let Some(committer) = &self.wake_committer {
                committer.notify_one();
            }
        }
    }

    /// A message dropped unsettled while its channel stops: most likely a delivery the
    /// shutdown gave up on (its task dropped with the runtime), neither a bug in the handler
    /// nor a bad record, so neither the warning of one nor the failure strategy. It stays
    /// uncommitted and is delivered again, and the shutdown does not wait for it any more.
    fn give_up_dropped(&self, record: TrackedOffset) {
        self.tracker.given_up(record.offset);
        // A revoked assignment's records are its next owner's to read and tell of.
        if self.tracker.is_revoked()
            || self
                .told_of_drop_while_stopping
                .swap(true, Ordering::Relaxed)
        {
            tracing::debug!(
                channel = self.metrics.channel(),
                partition = self.partition,
                offset = record.offset,
                "a message dropped unsettled while its channel stops stays uncommitted"
            );
            return;
        }
        let from_offset = self.tracker.oldest_unsettled().unwrap_or(record.offset);
        tracing::info!(channel = self.metrics.channel(), partition = self.partition, offset = record.offset, from_offset,
            "a message dropped unsettled while its channel stops (a shutdown, or the channel's failure) stays uncommitted: \
             the partition is read again from from_offset or before; more such drops of this partition are logged at DEBUG only");
    }

    /// Applies the channel's failure strategy to a nacked record. A dead letter is written from
    /// `in_hand` (the record the consumer loop still holds) or else from the original kept with
    /// the record (a settle handle's nack, after the loop let the record go); `attempts` is how
    /// many times the handler ran.
    pub(crate) async fn reject(
        self: Arc<Self>,
        record: TrackedOffset,
        failure: Failure,
        in_hand: Option<Original<'_>>,
        attempts: u32,
    ) {
        let offset = record.offset;
        let state = self.channel.upgrade();
        // Dropped before the stop (or the channel's end), nacked after it: as if dropped after
        // it.
        if failure.class_name() == DROPPED_KIND
            && state.as_ref().is_none_or(|state| state.stop_requested())
        {
            return self.give_up_dropped(record);
        }
        let Some(state) = state else {
            tracing::warn!(channel = self.metrics.channel(), partition = self.partition, offset, reason = %failure,
                "nack after the channel closed; the record stays uncommitted");
            return;
        };
        let partition = self.partition;
        if state.is_abandoned() {
            tracing::warn!(channel = %state.channel, partition, offset, reason = %failure,
                "nack after shutdown stopped waiting; the record stays uncommitted and will be delivered again");
            return;
        }
        if self.tracker.is_revoked() {
            // The partition's next owner (maybe this member again) reads the record again and
            // applies the strategy then: acting here too would write a duplicate dead letter.
            tracing::warn!(channel = %state.channel, partition, offset, reason = %failure,
                "nack of a record whose partition was revoked; its next owner will redeliver it");
            return;
        }
        self.metrics.nacked();
        match state.failure_strategy {
            FailureStrategy::Fail => state.fail(failure.reason()),
            FailureStrategy::Ignore => {
                tracing::warn!(channel = %state.channel, partition, offset, reason = %failure, "message nacked; ignored per failure-strategy=ignore");
                self.metrics.ignored();
                self.settle(record);
            }
            FailureStrategy::DeadLetterQueue | FailureStrategy::DelayedRetryTopic => {
                let kept: Option<OriginalRecord>;
                let from_kept = in_hand.is_none();
                let original = match in_hand {
                    Some(original) => Some(original),
                    None => {
                        kept = self.tracker.take_attachment(offset);
                        kept.as_ref().map(OriginalRecord::as_original)
                    }
                };
                let (Some(writer), Some(original)) = (&state.dead_letter, original) else {
                    // Revoked since the check above: the new owner handles the record.
                    tracing::warn!(channel = %state.channel, partition, offset, reason = %failure, "nack of a revoked record; the new owner will redeliver it");
                    return;
                };
                let position = RecordPosition {
                    topic: &state.topic,
                    partition,
                    offset,
                    attempts,
                };
                let written = match &state.retry_topics {
                    Some(retry_topics) => {
                        let now = now_ms();
                        let history = RetryHistory::of(&original, state.retry_delay.is_some(), now);
                        let permanent = state.retries.is_permanent(&failure);
                        match retry_topics.next_step(&history, now, permanent) {
                            NextStep::Retry {
                                retry,
                                topic,
                                history,
                            } => {
                                let written = retry_topics
                                    .write(original, position, &failure, history, retry, topic)
                                    .await;
                                if written.is_ok() {
                                    tracing::info!(channel = %state.channel, partition, offset, retry_topic = %topic.name, retry,
                                        reason = %failure, "message sent to a retry topic");
                                    self.metrics.sent_to_retry_topic();
                                }
                                written
                            }
                            NextStep::DeadLetter(why) => {
                                let mut original = original;
                                if state.retry_delay.is_none() {
                                    // Read from the channel's own topic, the record's history
                                    // starts here: `delayed-retry-*` headers it carries (a dead
                                    // letter replayed) tell of retries before, not of this one.
                                    original
                                        .headers
                                        .retain(|header| !is_retry_history(&header.key));
                                }
                                self.dead_letter(
                                    &state,
                                    writer,
                                    original,
                                    position,
                                    &failure,
                                    Some(&why),
                                )
                                .await
                            }
                        }
                    }
                    None => {
                        self.dead_letter(&state, writer, original, position, &failure, None)
                            .await
                    }
                };
                match written {
                    Ok(()) => {
                        let advanced = if from_kept {
                            self.tracker.settled_after_taking_attachment(record)
                        } else {
                            // Also drops the copy kept for a settle handle, if one was made.
                            self.tracker.settled(record)
                        };
                        self.settled(advanced);
                    }
                    // Shutdown gave up on it and dropped what was not sent: the original stays
                    // uncommitted and is delivered again; the channel did not fail.
                    Err(error) if state.is_abandoned() => {
                        tracing::warn!(channel = %state.channel, partition, offset, %error,
                            "dead-letter or retry write given up at shutdown; the record stays uncommitted and will be delivered again")
                    }
                    // Without the dead-letter (or retry) record the original must not be
                    // committed: fail.
                    Err(error) => state.fail(&format!(
                        "{error}; the record was nacked because: {failure}"
                    )),
                }
            }
        }
    }

    /// Writes the dead letter; `exhausted` says why a record of a retry-topic channel was not
    /// retried again.
    async fn dead_letter(
        &self,
        state: &ChannelState,
        writer: &DeadLetterWriter,
        original: Original<'_>,
        position: RecordPosition<'_>,
        failure: &Failure,
        exhausted: Option<&str>,
    ) -> Result<(), String> {
        let (partition, offset) = (position.partition, position.offset);
        writer.write(original, position, failure, exhausted).await?;
        let topic = writer.topic();
        match exhausted {
            None => {
                tracing::info!(channel = %state.channel, partition, offset, dead_letter_topic = topic,
                reason = %failure, "message sent to the dead-letter topic")
            }
            Some(why) => {
                tracing::info!(channel = %state.channel, partition, offset, dead_letter_topic = topic,
                reason = %failure, not_retried_because = why, "message sent to the dead-letter topic: not retried again")
            }
        }
        self.metrics.dead_lettered(failure.class_name());
        Ok(())
    }
}

impl Acknowledger for PartitionAcknowledger {
    fn is_stale(&self, _token: Token) -> bool {
        self.tracker.is_revoked()
    }

    fn ack(&self, token: Token) {
        // An ack after the revoke settles nothing: the partition's next owner reads the
        // record again and counts it then, as a nack after the revoke is not counted either.
        if !self.tracker.is_revoked() {
            self.metrics.acked();
        }
        self.settle(token.into());
    }

    fn nack(self: Arc<Self>, token: Token, failure: Failure) -> BoxFuture<'static, ()> {
        self.nack_after(token, failure, 1)
    }

    fn dropped(self: Arc<Self>, token: Token, attempts: u32) {
        let stopping = self
            .channel
            .upgrade()
            .is_none_or(|state| state.stop_requested());
        if !stopping {
            return nack_dropped(self, token, attempts);
        }
        self.give_up_dropped(token.into());
    }

    fn nack_after(
        self: Arc<Self>,
        token: Token,
        failure: Failure,
        attempts: u32,
    ) -> BoxFuture<'static, ()> {
        Box::pin(self.reject(token.into(), failure, None, attempts))
    }
}

/// A record's settle token is its tracked offset, packed.
impl From<TrackedOffset> for Token {
    #[inline]
    fn from(record: TrackedOffset) -> Self {
        Token::new([record.offset, record.follows])
    }
}

impl From<Token> for TrackedOffset {
    #[inline]
    fn from(token: Token) -> Self {
        let [offset, follows] = token.words();
        TrackedOffset { offset, follows }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::HealthRegistry;
    use crate::metrics::Metrics;

    /// A record acked after its partition was revoked is read and counted again by the
    /// partition's next owner: counting it here too would count it twice.
    #[test]
    fn an_ack_after_the_revoke_is_not_counted() {
        let metrics = Metrics::new(&HealthRegistry::default());
        let assigned = Arc::new(PartitionAcknowledger::new(
            0,
            PartitionTracker::new(),
            Weak::new(),
            None,
            metrics.incoming_channel("movies", "movies"),
            Arc::default(),
        ));
        let first = assigned.tracker.received(7);
        let second = assigned.tracker.received(8);
        assigned.ack(first.into());
        assigned.revoke();
        assigned.ack(second.into());
        let text = metrics.encode();
        assert!(
            text.contains("messaging_records_acked_total{channel=\"movies\"} 1\n"),
            "{text}"
        );
    }
}
