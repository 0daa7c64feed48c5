//! What an incoming Kafka channel's consumer loop, rebalance callbacks, committer and
//! acknowledgers share.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use tokio::sync::{watch, Notify};

use super::acknowledger::PartitionAcknowledger;
use super::broker_probe::Target;
use super::dead_letter::DeadLetterWriter;
use super::intake::Intake;
use super::retry_topic::RetryTopicWriter;
use crate::commit::{CommitStrategy, PartitionTracker};
use crate::concurrency;
use crate::config::IncomingSettings;
use crate::failure::FailureStrategy;
use crate::health::{Aspect, HealthRegistry};
use crate::intake_gate::IntakeGate;
use crate::metrics::ChannelMetrics;
use crate::retry::{Classifiers, Retries};

/// The share of `messaging.shutdown.timeout.ms` in-flight records get; the rest is the last
/// commit's and the close's, and the producers' flush (in-memory channels keep to it too).
pub(crate) const RECORDS_SHARE: f64 = 0.8;

/// What a channel's failure strategy writes with.
#[derive(Default)]
pub(crate) struct FailureWriters {
    pub(crate) dead_letter: Option<DeadLetterWriter>,
    pub(crate) retry_topics: Option<RetryTopicWriter>,
}

pub(crate) struct ChannelState {
    pub(crate) channel: String,
    pub(crate) topic: Arc<str>,
    pub(crate) failure_strategy: FailureStrategy,
    pub(crate) commit_strategy: CommitStrategy,
    /// `enable.auto.commit=true`: librdkafka commits what we store (see `committer.rs`).
    pub(crate) auto_commit: bool,
    /// The dead-letter writer: of `dead-letter-queue`, and of `delayed-retry-topic` for a
    /// record with no retry left.
    pub(crate) dead_letter: Option<DeadLetterWriter>,
    /// The retry topics' writer, for `delayed-retry-topic`.
    pub(crate) retry_topics: Option<RetryTopicWriter>,
    /// Set when this consumer reads one of the channel's retry topics: its records are handled
    /// no sooner than this long after they were written.
    pub(crate) retry_delay: Option<Duration>,
    /// `max-concurrency`, `ordering` and `max-buffered-records`.
    pub(crate) max_concurrency: usize,
    pub(crate) ordering: concurrency::Ordering,
    pub(crate) max_buffered_records: usize,
    /// The most records of one partition the consumer loop may hold: its share of
    /// `max-buffered-records` among the partitions assigned now (see [`partition_share`]).
    partition_share: AtomicUsize,
    /// How many records the consumer loop holds now, and the most it ever held.
    held_records: AtomicUsize,
    held_records_peak: AtomicUsize,
    /// The channel's `retry.*` keys and the application's error classifiers: whether and when
    /// a failed record is tried again before the failure strategy.
    pub(crate) retries: Retries,
    /// The consumer loop's intake, woken when a partition it left at its cap can take more.
    pub(crate) intake: Arc<Intake>,
    pub(crate) metrics: ChannelMetrics,
    health: Option<HealthRegistry>,
    /// The application's registry, whether or not this channel reports to it
    /// (`health-enabled`): the broker probe runs for every channel and ends when it closes.
    application_health: HealthRegistry,
    /// Acknowledgers of the partitions assigned now, by partition number (one topic per channel).
    partitions: Mutex<HashMap<i32, Arc<PartitionAcknowledger>>>,
    /// Revoked assignments whose handler calls were still under way: the age watch goes on
    /// timing them (see `PartitionAcknowledger::calls_running`).
    leaving: Mutex<Vec<Arc<PartitionAcknowledger>>>,
    /// Changes whenever the assignment does, so the consumer loop knows its cache is stale.
    assignment_epoch: AtomicU64,
    /// Wakes the committer when an acknowledgement advanced a partition (`latest`).
    pub(crate) commit_wanted: Arc<Notify>,
    /// Tells the consumer loop to stop fetching: shutdown, or a `fail` failure.
    stop: watch::Sender<bool>,
    stop_requested: AtomicBool,
    /// When the stop was first requested: the shutdown's deadlines count from there.
    stop_requested_at: OnceLock<Instant>,
    failed: AtomicBool,
    /// Set while a consumer error after the first assignment keeps the channel not ready;
    /// the next batch read clears it.
    consumer_error_reported: AtomicBool,
    /// Whether the channel holds an assignment librdkafka took (`ready`), possibly an empty
    /// one: a consumer error then holds readiness only until records flow or the next
    /// assignment; before it (or after a revoke) it is why the channel is not ready.
    holds_assignment: AtomicBool,
    /// Set once the consumer closes, on the close's own thread: a revoke commits nothing then
    /// (see `rebalance.rs`).
    closing: AtomicBool,
    /// Set when shutdown stopped waiting for in-flight records: they stay uncommitted.
    abandoned: AtomicBool,
    /// Wakes the consumer loop out of a record's handling when it is abandoned.
    pub(crate) abandon_waker: AtomicWaker,
    /// The outgoing sink's hold on this channel, if its sink can hold it back (Cosmos DB).
    pub(crate) sink_gate: Option<IntakeGate>,
}

impl ChannelState {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        settings: &IncomingSettings,
        auto_commit: bool,
        writers: FailureWriters,
        retry_delay: Option<Duration>,
        classifiers: Arc<Classifiers>,
        health: &HealthRegistry,
        metrics: ChannelMetrics,
        sink_gate: Option<IntakeGate>,
    ) -> Arc<Self> {
        Arc::new(Self {
            channel: settings.channel.clone(),
            topic: Arc::from(settings.topic.as_str()),
            failure_strategy: settings.failure_strategy,
            commit_strategy: settings.commit_strategy,
            auto_commit,
            dead_letter: writers.dead_letter,
            retry_topics: writers.retry_topics,
            retry_delay,
            max_concurrency: settings.max_concurrency,
            ordering: settings.ordering,
            max_buffered_records: settings.max_buffered_records,
            partition_share: AtomicUsize::new(settings.max_buffered_records),
            held_records: AtomicUsize::new(0),
            held_records_peak: AtomicUsize::new(0),
            retries: Retries::new(settings.retry.clone(), classifiers),
            intake: Arc::default(),
            metrics,
            health: settings.health_enabled.then(|| health.clone()),
            application_health: health.clone(),
            partitions: Mutex::new(HashMap::new()),
            leaving: Mutex::new(Vec::new()),
            assignment_epoch: AtomicU64::new(0),
            commit_wanted: Arc::new(Notify::new()),
            stop: watch::channel(false).0,
            stop_requested: AtomicBool::new(false),
            stop_requested_at: OnceLock::new(),
            failed: AtomicBool::new(false),
            consumer_error_reported: AtomicBool::new(false),
            holds_assignment: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
            abandon_waker: AtomicWaker::new(),
            sink_gate,
        })
    }

    /// The consumer loop now holds `records` (its only writer).
    #[inline]
    pub(crate) fn held_records(&self, records: usize) {
        self.held_records.store(records, Ordering::Relaxed);
        self.metrics.in_flight(records);
        if records > self.held_records_peak.load(Ordering::Relaxed) {
            self.held_records_peak.store(records, Ordering::Relaxed);
        }
    }

    /// Records held by the consumer loop: now, and the most at any time.
    pub(crate) fn held_records_now_and_peak(&self) -> (usize, usize) {
        (
            self.held_records.load(Ordering::Relaxed),
            self.held_records_peak.load(Ordering::Relaxed),
        )
    }

    /// Whether offsets are committed (or, under auto-commit, stored) at all.
    pub(crate) fn commits(&self) -> bool {
        self.auto_commit || self.commit_strategy != CommitStrategy::Ignore
    }

    /// The acknowledger of a partition's current assignment; `None` when it is not assigned
    /// (a record of a revoked partition still in a queue).
    pub(crate) fn current_partition(&self, partition: i32) -> Option<Arc<PartitionAcknowledger>> {
        self.partitions
            .lock()
            .expect("partitions lock")
            .get(&partition)
            .cloned()
    }

    fn new_partition(self: &Arc<Self>, partition: i32) -> Arc<PartitionAcknowledger> {
        let wake_committer =
            (self.commit_strategy == CommitStrategy::Latest).then(|| self.commit_wanted.clone());
        // Only a dead-letter or retry topic needs the original records kept until they are
        // settled.
        let tracker = if self.dead_letter.is_some() {
            PartitionTracker::with_attachments()
        } else {
            PartitionTracker::new()
        };
        Arc::new(PartitionAcknowledger::new(
            partition,
            tracker,
            Arc::downgrade(self),
            wake_committer,
            self.metrics.clone(),
            self.intake.clone(),
        ))
    }

    /// The partitions assigned now, as a list for librdkafka's calls.
    pub(crate) fn assignment_list(&self) -> rdkafka::TopicPartitionList {
        let mut list = rdkafka::TopicPartitionList::new();
        for assigned in self.partitions() {
            list.add_partition(&self.topic, assigned.partition);
        }
        list
    }

    /// Whether `assigned` is still its partition's current assignment (not revoked since).
    pub(crate) fn is_current(&self, assigned: &Arc<PartitionAcknowledger>) -> bool {
        self.partitions
            .lock()
            .expect("partitions lock")
            .get(&assigned.partition)
            .is_some_and(|current| Arc::ptr_eq(current, assigned))
    }

    pub(crate) fn assigned(self: &Arc<Self>, partition: i32) {
        let mut partitions = self.partitions.lock().expect("partitions lock");
        partitions
            .entry(partition)
            .or_insert_with(|| self.new_partition(partition));
        self.share_among(partitions.len());
        drop(partitions);
        self.assignment_epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Ends a partition's assignment; returns its acknowledger for a last commit.
    pub(crate) fn revoked(&self, partition: i32) -> Option<Arc<PartitionAcknowledger>> {
        // Removed, then the epoch changed: whoever sees the new epoch sees the removal.
        let mut partitions = self.partitions.lock().expect("partitions lock");
        let revoked = partitions.remove(&partition);
        self.share_among(partitions.len());
        drop(partitions);
        self.assignment_epoch.fetch_add(1, Ordering::AcqRel);
        if let Some(revoked) = &revoked {
            let mut leaving = self.leaving.lock().expect("leaving lock");
            leaving.retain(|assigned| assigned.calls_running() > 0);
            if revoked.calls_running() > 0 {
                leaving.push(revoked.clone());
            }
        }
        revoked
    }

    /// The revoked assignments with handler calls still under way.
    pub(crate) fn leaving(&self) -> Vec<Arc<PartitionAcknowledger>> {
        let mut leaving = self.leaving.lock().expect("leaving lock");
        leaving.retain(|assigned| assigned.calls_running() > 0);
        leaving.clone()
    }

    fn share_among(&self, partitions: usize) {
        let share = partition_share(self.max_buffered_records, self.max_concurrency, partitions);
        self.partition_share.store(share, Ordering::Relaxed);
    }

    /// The most records of one partition the consumer loop may hold now.
    #[inline]
    pub(crate) fn partition_share(&self) -> usize {
        self.partition_share.load(Ordering::Relaxed)
    }

    #[inline]
    pub(crate) fn assignment_epoch(&self) -> u64 {
        self.assignment_epoch.load(Ordering::Acquire)
    }

    /// Forgets a failed commit so the next round commits that offset again.
    pub(crate) fn commit_failed(&self, partition: i32, offset: i64) {
        if let Some(assigned) = self
            .partitions
            .lock()
            .expect("partitions lock")
            .get(&partition)
        {
            assigned.tracker.commit_failed(offset);
        }
    }

    pub(crate) fn partitions(&self) -> Vec<Arc<PartitionAcknowledger>> {
        self.partitions
            .lock()
            .expect("partitions lock")
            .values()
            .cloned()
            .collect()
    }

    pub(crate) fn request_stop(&self) {
        self.stop_requested_at.get_or_init(Instant::now);
        self.stop_requested.store(true, Ordering::Release);
        self.stop.send_replace(true);
    }

    /// Resolves once the channel is asked to stop, also when that was before this call.
    pub(crate) async fn stopped(&self) {
        let mut stop = self.stop.subscribe();
        let _ = stop.wait_for(|stopped| *stopped).await;
    }

    /// Until when a stopping channel waits for its records: the first part of
    /// `messaging.shutdown.timeout.ms`, leaving the rest for the last commit and the close, so
    /// that the whole shutdown stays within the timeout.
    pub(crate) fn records_deadline(&self, timeout: Duration) -> Instant {
        self.stopped_at() + timeout.mul_f64(RECORDS_SHARE)
    }

    /// Until when a stopping channel may take to commit and close.
    pub(crate) fn close_deadline(&self, timeout: Duration) -> Instant {
        self.stopped_at() + timeout
    }

    fn stopped_at(&self) -> Instant {
        *self.stop_requested_at.get_or_init(Instant::now)
    }

    /// A cheap check for the consumer loop, between records.
    #[inline]
    pub(crate) fn stop_requested(&self) -> bool {
        self.stop_requested.load(Ordering::Acquire)
    }

    /// Records a fatal failure: liveness DOWN with the reason, and the channel stops consuming.
    pub(crate) fn fail(&self, reason: &str) {
        tracing::error!(channel = %self.channel, %reason, "channel failed; it stops consuming and its offsets stay uncommitted past the failed record");
        self.failed.store(true, Ordering::Release);
        self.metrics.channel_failed();
        if let Some(health) = &self.health {
            health.fail(&self.channel, reason);
        }
        self.request_stop();
    }

    /// Shutdown (or a failed channel) waited `messaging.shutdown.timeout.ms` and stops waiting:
    /// the records in hand are dropped and nothing unsettled is committed (it is delivered
    /// again, after the restart or to the partition's next owner). Says which records, and why.
    pub(crate) fn abandon_in_flight(&self, why: &str) {
        self.warn_unsettled_stay_uncommitted(why);
        self.abandoned.store(true, Ordering::Release);
        self.abandon_waker.wake();
    }

    /// Names, per partition, the offset from which records stay uncommitted (they are
    /// delivered again).
    pub(crate) fn warn_unsettled_stay_uncommitted(&self, why: &str) {
        for assigned in self.partitions() {
            if let Some(offset) = assigned.tracker.oldest_unsettled() {
                tracing::warn!(channel = %self.channel, topic = %self.topic, partition = assigned.partition, from_offset = offset,
                    "{why}; unsettled records stay uncommitted and will be delivered again");
            }
        }
    }

    /// The consumer is being closed, off the async workers.
    pub(crate) fn closing(&self) {
        self.closing.store(true, Ordering::Release);
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    pub(crate) fn is_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Acquire)
    }

    pub(crate) fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    pub(crate) fn ready(&self) {
        self.holds_assignment.store(true, Ordering::Release);
        if let Some(health) = &self.health {
            health.ready(&self.channel);
        }
    }

    /// See `holds_assignment`.
    pub(crate) fn holds_assignment(&self) -> bool {
        self.holds_assignment.load(Ordering::Acquire)
    }

    /// What the consumer's broker probe reports on.
    pub(crate) fn broker_probe_target(&self) -> Target {
        Target {
            channel: self.channel.clone(),
            client: "consumer",
            topic: self.topic.to_string(),
            aspect: Aspect::Broker,
            health: self.application_health.clone(),
            reports: self.health.is_some(),
            starts_channel: false,
        }
    }

    /// A consumer error: not ready with it as the reason until records flow again (or the next
    /// assignment), so a consumer that cannot fetch, lost its group or is not authorized says
    /// so even while it holds partitions.
    pub(crate) fn consumer_error(&self, reason: &str) {
        if let Some(health) = &self.health {
            self.consumer_error_reported.store(true, Ordering::Release);
            health.not_ready_for(&self.channel, Aspect::Consuming, reason);
        }
    }

    /// Records are flowing: a reported consumer error no longer holds readiness.
    #[inline]
    pub(crate) fn consuming(&self) {
        if self.consumer_error_reported.load(Ordering::Acquire) {
            self.consumer_error_reported.store(false, Ordering::Release);
            if let Some(health) = &self.health {
                health.ready_for(&self.channel, Aspect::Consuming);
            }
        }
    }

    pub(crate) fn not_ready(&self, reason: &str) {
        self.holds_assignment.store(false, Ordering::Release);
        if let Some(health) = &self.health {
            health.not_ready(&self.channel, reason);
        }
    }
}

/// A partition's share of `max-buffered-records` among `partitions` assigned: the partition
/// whose records arrive first must not take every place, or the others' records would wait
/// behind all of its records (taken in turn, started in the order taken) however slow they
/// are. At least `max-concurrency` (itself at least 1 and at most `max-buffered-records`, as
/// the configuration checks), so one busy partition can still fill every place in flight
/// while the others are idle.
fn partition_share(
    max_buffered_records: usize,
    max_concurrency: usize,
    partitions: usize,
) -> usize {
    (max_buffered_records / partitions.max(1)).max(max_concurrency)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_partition_gets_its_share_of_the_buffer_but_never_less_than_the_places_in_flight() {
        assert_eq!(partition_share(1024, 1, 0), 1024);
        assert_eq!(partition_share(1024, 1, 1), 1024);
        assert_eq!(partition_share(1024, 1, 4), 256);
        assert_eq!(partition_share(1024, 64, 100), 64);
        assert_eq!(partition_share(1024, 1, 5000), 1);
        assert_eq!(partition_share(16, 16, 3), 16);
    }
}
