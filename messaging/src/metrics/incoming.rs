//! An incoming channel's metrics: what happened to its records, how long they took, how many
//! are in flight, and per partition its consumer lag, committed offset and prefetch.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::duration_histogram::DurationHistogram;
use super::labels::{ChannelLabels, DeadLetterLabels, PartitionLabels};

/// How many distinct error types a channel's dead-letter counter names; later ones count as
/// [`OTHER_ERROR_TYPES`], so a handler with ever new error types cannot grow the series
/// without bound.
const MAX_ERROR_TYPES: usize = 20;
const OTHER_ERROR_TYPES: &str = "other";

pub(super) struct IncomingFamilies {
    received: Family<ChannelLabels, Counter>,
    acked: Family<ChannelLabels, Counter>,
    nacked: Family<ChannelLabels, Counter>,
    ignored: Family<ChannelLabels, Counter>,
    retried: Family<ChannelLabels, Counter>,
    sent_to_retry_topic: Family<ChannelLabels, Counter>,
    dead_lettered: Family<ChannelLabels, Counter>,
    dead_lettered_by_error_type: Family<DeadLetterLabels, Counter>,
    in_flight: Family<ChannelLabels, Gauge>,
    processing: Family<ChannelLabels, DurationHistogram>,
    consumer_lag: Family<PartitionLabels, Gauge>,
    committed_offset: Family<PartitionLabels, Gauge>,
    prefetched_records: Family<PartitionLabels, Gauge>,
    prefetched_bytes: Family<PartitionLabels, Gauge>,
    commit_failures: Family<ChannelLabels, Counter>,
    oldest_unsettled_age: Family<ChannelLabels, Gauge<f64, AtomicU64>>,
}

impl IncomingFamilies {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let families = Self {
            received: Family::default(),
            acked: Family::default(),
            nacked: Family::default(),
            ignored: Family::default(),
            retried: Family::default(),
            sent_to_retry_topic: Family::default(),
            dead_lettered: Family::default(),
            dead_lettered_by_error_type: Family::default(),
            in_flight: Family::default(),
            processing: Family::default(),
            consumer_lag: Family::default(),
            committed_offset: Family::default(),
            prefetched_records: Family::default(),
            prefetched_bytes: Family::default(),
            commit_failures: Family::default(),
            oldest_unsettled_age: Family::default(),
        };
        registry.register(
            "messaging_records_received",
            "Records an incoming channel took from its source",
            families.received.clone(),
        );
        registry.register(
            "messaging_records_acked",
            "Records acknowledged (processed successfully)",
            families.acked.clone(),
        );
        registry.register(
            "messaging_records_nacked",
            "Records nacked (rejected by the handler, whatever the failure strategy then did)",
            families.nacked.clone(),
        );
        registry.register(
            "messaging_records_ignored",
            "Nacked records let through by failure-strategy=ignore",
            families.ignored.clone(),
        );
        registry.register(
            "messaging_records_retried",
            "Handler attempts repeated by the retry policy",
            families.retried.clone(),
        );
        registry.register(
            "messaging_records_sent_to_retry_topic",
            "Nacked records written to a retry topic (failure-strategy=delayed-retry-topic), to be handled again after its delay",
            families.sent_to_retry_topic.clone(),
        );
        registry.register(
            "messaging_records_dead_lettered",
            "Nacked records written to the dead-letter topic (from 0 when the channel starts, so a first dead letter shows as an increase)",
            families.dead_lettered.clone(),
        );
        registry.register(
            "messaging_records_dead_lettered_by_error_type",
            "Nacked records written to the dead-letter topic, by the type name of the error",
            families.dead_lettered_by_error_type.clone(),
        );
        registry.register(
            "messaging_records_in_flight",
            "Records the channel holds: taken from the source and not let go yet (waiting for their turn, being handled or retried, being dead-lettered)",
            families.in_flight.clone(),
        );
        registry.register_with_unit(
            "messaging_record_processing_duration",
            "Time from handing a record to its handler until the handler's verdict (a processor's: its output made, before it is handed to the outgoing channel), retries included",
            Unit::Seconds,
            families.processing.clone(),
        );
        registry.register(
            "messaging_consumer_lag",
            "Records in the partition after the channel's position (its first unsettled record, or the committed offset before it read any), against the broker's high watermark",
            families.consumer_lag.clone(),
        );
        registry.register(
            "messaging_committed_offset",
            "The last offset committed for the partition",
            families.committed_offset.clone(),
        );
        registry.register(
            "messaging_prefetched_records",
            "Records librdkafka fetched ahead of the channel for the partition and has not handed over yet (it fetches more while fewer than queued.min.messages are queued)",
            families.prefetched_records.clone(),
        );
        registry.register_with_unit(
            "messaging_prefetched",
            "Size of the values of the records librdkafka fetched ahead of the channel for the partition, as queued.max.messages.kbytes counts them (their memory is more: keys, headers and librdkafka's own per-record overhead)",
            Unit::Bytes,
            families.prefetched_bytes.clone(),
        );
        registry.register(
            "messaging_commit_failures",
            "Offset commits that failed (each is retried at the next commit)",
            families.commit_failures.clone(),
        );
        registry.register_with_unit(
            "messaging_oldest_unsettled_record_age",
            "How long the oldest unsettled record has waited (throttled commits only); starts again while an outgoing sink holds the channel back for an outage",
            Unit::Seconds,
            families.oldest_unsettled_age.clone(),
        );
        families
    }
}

/// The handles of one incoming channel, looked up once when it starts. Cheap to clone.
#[derive(Clone)]
pub(crate) struct ChannelMetrics {
    handles: Arc<Handles>,
}

struct Handles {
    channel: String,
    topic: String,
    received: Counter,
    acked: Counter,
    nacked: Counter,
    ignored: Counter,
    retried: Counter,
    sent_to_retry_topic: Counter,
    in_flight: Gauge,
    processing: DurationHistogram,
    commit_failures: Counter,
    failed: Gauge,
    oldest_unsettled_age: Gauge<f64, AtomicU64>,
    /// Dead letters and per-partition numbers are rare next to records: these look their
    /// series up when they happen.
    dead_lettered: Counter,
    dead_lettered_by_error_type: Family<DeadLetterLabels, Counter>,
    /// The series of each error type seen so far, kept so that a dead letter takes one lock.
    error_types: Mutex<HashMap<String, Counter>>,
    consumer_lag: Family<PartitionLabels, Gauge>,
    committed_offset: Family<PartitionLabels, Gauge>,
    prefetched_records: Family<PartitionLabels, Gauge>,
    prefetched_bytes: Family<PartitionLabels, Gauge>,
    partition_series: Mutex<PartitionSeries>,
}

/// The partitions with a lag, committed-offset or prefetch series (what `keep_partitions` may drop), and
/// whether the consumer has closed: then no late measurement may bring one back.
#[derive(Default)]
struct PartitionSeries {
    partitions: BTreeSet<i32>,
    consumer_closed: bool,
}

impl ChannelMetrics {
    pub(super) fn new(
        families: &IncomingFamilies,
        failed: Gauge,
        channel: &str,
        topic: &str,
    ) -> Self {
        let labels = ChannelLabels {
            channel: channel.to_owned(),
        };
        Self {
            handles: Arc::new(Handles {
                channel: channel.to_owned(),
                topic: topic.to_owned(),
                received: families.received.get_or_create_owned(&labels),
                acked: families.acked.get_or_create_owned(&labels),
                nacked: families.nacked.get_or_create_owned(&labels),
                ignored: families.ignored.get_or_create_owned(&labels),
                retried: families.retried.get_or_create_owned(&labels),
                sent_to_retry_topic: families.sent_to_retry_topic.get_or_create_owned(&labels),
                in_flight: families.in_flight.get_or_create_owned(&labels),
                processing: families.processing.get_or_create_owned(&labels),
                commit_failures: families.commit_failures.get_or_create_owned(&labels),
                failed,
                oldest_unsettled_age: families.oldest_unsettled_age.get_or_create_owned(&labels),
                dead_lettered: families.dead_lettered.get_or_create_owned(&labels),
                dead_lettered_by_error_type: families.dead_lettered_by_error_type.clone(),
                error_types: Mutex::new(HashMap::new()),
                consumer_lag: families.consumer_lag.clone(),
                committed_offset: families.committed_offset.clone(),
                prefetched_records: families.prefetched_records.clone(),
                prefetched_bytes: families.prefetched_bytes.clone(),
                partition_series: Mutex::default(),
            }),
        }
    }

    /// The channel's name, as its series are labelled.
    pub(crate) fn channel(&self) -> &str {
        &self.handles.channel
    }

    #[inline]
    pub(crate) fn received(&self, records: u64) {
        self.handles.received.inc_by(records);
    }

    /// The channel now holds `records`: taken from the source and not let go yet.
    #[inline]
    pub(crate) fn in_flight(&self, records: usize) {
        self.handles.in_flight.set(records as i64);
    }

    #[inline]
    pub(crate) fn processing_time(&self, duration: Duration) {
        self.handles.processing.observe(duration);
    }

    #[inline]
    pub(crate) fn acked(&self) {
        self.handles.acked.inc();
    }

    #[inline]
    pub(crate) fn nacked(&self) {
        self.handles.nacked.inc();
    }

    pub(crate) fn ignored(&self) {
        self.handles.ignored.inc();
    }

    pub(crate) fn retried(&self) {
        self.handles.retried.inc();
    }

    pub(crate) fn sent_to_retry_topic(&self) {
        self.handles.sent_to_retry_topic.inc();
    }

    /// A record went to the dead-letter topic, rejected by an error of this type.
    pub(crate) fn dead_lettered(&self, error_type: &str) {
        self.handles.dead_lettered.inc();
        let mut known = self.handles.error_types.lock().expect("error types lock");
        if let Some(counter) = known.get(error_type) {
            counter.inc();
            return;
        }
        let error_type = if known.len() < MAX_ERROR_TYPES {
            error_type
        } else {
            OTHER_ERROR_TYPES
        };
        let counter = self
            .handles
            .dead_lettered_by_error_type
            .get_or_create_owned(&DeadLetterLabels {
                channel: self.handles.channel.clone(),
                error_type: error_type.to_owned(),
            });
        counter.inc();
        if error_type != OTHER_ERROR_TYPES {
            known.insert(error_type.to_owned(), counter);
        }
    }

    /// The channel failed and stopped consuming.
    pub(crate) fn channel_failed(&self) {
        self.handles.failed.set(1);
    }

    pub(crate) fn commit_failed(&self) {
        self.handles.commit_failures.inc();
    }

    pub(crate) fn oldest_unsettled_age(&self, age: Duration) {
        self.handles.oldest_unsettled_age.set(age.as_secs_f64());
    }

    pub(crate) fn consumer_lag(&self, partition: i32, lag: i64) {
        self.set_partition_series(&[(&self.handles.consumer_lag, lag)], partition);
    }

    pub(crate) fn committed(&self, partition: i32, offset: i64) {
        self.set_partition_series(&[(&self.handles.committed_offset, offset)], partition);
    }

    /// What librdkafka holds fetched ahead for the partition: records and their bytes.
    pub(crate) fn prefetched(&self, partition: i32, records: i64, bytes: i64) {
        self.set_partition_series(
            &[
                (&self.handles.prefetched_records, records),
                (&self.handles.prefetched_bytes, bytes),
            ],
            partition,
        );
    }

    /// The partition's prefetch cannot be told apart any more (it is read through the
    /// consumer's main queue): its prefetch series go rather than keep an old value.
    pub(crate) fn prefetch_unknown(&self, partition: i32) {
        let _series = self.partition_series();
        self.remove_prefetch_series(&self.partition_labels(partition));
    }

    fn remove_prefetch_series(&self, labels: &PartitionLabels) {
        self.handles.prefetched_records.remove(labels);
        self.handles.prefetched_bytes.remove(labels);
    }

    /// Drops the numbers of every partition not in `assigned`: those partitions have gone to
    /// another member, and their numbers are that member's to report now.
    pub(crate) fn keep_partitions(&self, assigned: &[i32]) {
        self.drop_series_unless(&mut self.partition_series(), |partition| {
            assigned.contains(&partition)
        });
    }

    /// The channel's consumer has closed and left its group: it holds no partition and no
    /// record any more. Its per-partition series go for good, and the gauges of what it held
    /// read 0.
    pub(crate) fn consumer_closed(&self) {
        // The gauges first: a scrape that no longer finds the partitions' series finds them
        // at 0 too.
        self.handles.in_flight.set(0);
        self.handles.oldest_unsettled_age.set(0.0);
        let mut series = self.partition_series();
        series.consumer_closed = true;
        self.drop_series_unless(&mut series, |_| false);
    }

    /// Sets per-partition series of one partition and remembers the partition for
    /// `keep_partitions`, under one lock, so a drop running meanwhile cannot leave a series it
    /// does not know of.
    fn set_partition_series(
        &self,
        values: &[(&Family<PartitionLabels, Gauge>, i64)],
        partition: i32,
    ) {
        let mut series = self.partition_series();
        if series.consumer_closed {
            return;
        }
        series.partitions.insert(partition);
        let labels = self.partition_labels(partition);
        for (family, value) in values {
            family.get_or_create(&labels).set(*value);
        }
    }

    /// Removes the per-partition series of every partition `keep` says no to.
    fn drop_series_unless(&self, series: &mut PartitionSeries, keep: impl Fn(i32) -> bool) {
        series.partitions.retain(|&partition| {
            keep(partition) || {
                let labels = self.partition_labels(partition);
                self.handles.consumer_lag.remove(&labels);
                self.handles.committed_offset.remove(&labels);
                self.remove_prefetch_series(&labels);
                false
            }
        });
    }

    fn partition_series(&self) -> std::sync::MutexGuard<'_, PartitionSeries> {
        self.handles
            .partition_series
            .lock()
            .expect("partition series lock")
    }

    fn partition_labels(&self, partition: i32) -> PartitionLabels {
        PartitionLabels {
            channel: self.handles.channel.clone(),
            topic: self.handles.topic.clone(),
            partition,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::health::HealthRegistry;
    use crate::metrics::Metrics;

    #[test]
    fn error_types_beyond_the_bound_count_as_other() {
        let metrics = Metrics::new(&HealthRegistry::default());
        let channel = metrics.incoming_channel("movies", "movies");
        for error_type in 0..super::MAX_ERROR_TYPES + 5 {
            channel.dead_lettered(&format!("app::Error{error_type}"));
        }
        channel.dead_lettered("app::Error0");
        let text = metrics.encode();
        let series = text
            .lines()
            .filter(|line| line.starts_with("messaging_records_dead_lettered_by_error_type_total{"))
            .count();
        assert_eq!(series, super::MAX_ERROR_TYPES + 1, "{text}");
        assert!(text.contains("error_type=\"app::Error0\"} 2\n"), "{text}");
        assert!(text.contains("error_type=\"other\"} 5\n"), "{text}");
        assert!(
            text.contains("messaging_records_dead_lettered_total{channel=\"movies\"} 26\n"),
            "{text}"
        );
    }

    /// A partition whose prefetch can no longer be told apart loses its prefetch series, not
    /// its lag.
    #[test]
    fn an_unknown_prefetch_drops_its_series_and_keeps_the_lag() {
        let metrics = Metrics::new(&HealthRegistry::default());
        let channel = metrics.incoming_channel("movies", "films");
        channel.consumer_lag(0, 5);
        channel.prefetched(0, 100, 10_000);
        channel.prefetch_unknown(0);
        let text = metrics.encode();
        assert!(!text.contains("messaging_prefetched"), "{text}");
        assert!(
            text.contains(
                "messaging_consumer_lag{channel=\"movies\",topic=\"films\",partition=\"0\"} 5\n"
            ),
            "{text}"
        );
    }

    /// Partitions gone to another member lose their per-partition series, also those that
    /// only ever had some of them; a closed consumer keeps none, even when a late
    /// measurement arrives.
    #[test]
    fn only_assigned_partitions_keep_their_series() {
        let metrics = Metrics::new(&HealthRegistry::default());
        let channel = metrics.incoming_channel("movies", "films");
        channel.consumer_lag(0, 5);
        channel.committed(0, 10);
        channel.consumer_lag(1, 6);
        channel.committed(2, 12);
        channel.prefetched(3, 100, 10_000);
        channel.keep_partitions(&[1]);
        let series = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|line| line.contains("partition=\""))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(
            series(&metrics.encode()),
            ["messaging_consumer_lag{channel=\"movies\",topic=\"films\",partition=\"1\"} 6"]
        );
        channel.consumer_closed();
        assert!(series(&metrics.encode()).is_empty());
        channel.consumer_lag(1, 7);
        assert!(
            series(&metrics.encode()).is_empty(),
            "a measurement after the close brings nothing back"
        );
    }
}
