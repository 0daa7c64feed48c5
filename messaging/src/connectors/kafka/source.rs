//! An incoming channel's consumer loop.
//!
//! One task polls the consumer, hands each record to the handler and awaits it before taking
//! the next (records of the channel are processed one at a time, in partition order). Polling
//! the main queue also runs the rebalance callbacks. Offsets are committed by the committer
//! task from the trackers that acknowledgements update.

use std::future::{poll_fn, Future};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rdkafka::consumer::CommitMode;
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::Message as _;
use tokio::task::JoinHandle;

use super::acknowledger::PartitionAcknowledger;
use super::channel_state::ChannelState;
use super::committer::{self, commit_watermarks, ChannelConsumer};
use super::dead_letter::OriginalRecord;
use super::metadata::{Header, KafkaMetadata};
use crate::commit::CommitStrategy;
use crate::connectors::Sink;
use crate::handler::{BoxedHandler, Handled, Handler, Incoming, SettleSource};
use crate::metadata::Metadata;
use crate::settle::{Acknowledger, SettleHandle};

/// A running incoming channel.
pub(crate) struct KafkaSource {
    state: Arc<ChannelState>,
    task: JoinHandle<()>,
}

/// Everything a channel's consumer loop needs but its handler.
pub(crate) struct SourceParts {
    pub(crate) consumer: ChannelConsumer,
    pub(crate) state: Arc<ChannelState>,
    pub(crate) sink: Option<Arc<dyn Sink>>,
    pub(crate) commit_interval: Duration,
    pub(crate) max_age: Option<Duration>,
    pub(crate) drain_timeout: Duration,
}

impl KafkaSource {
    pub(crate) fn spawn(parts: SourceParts, handler: BoxedHandler) -> Self {
        let state = parts.state.clone();
        let task = tokio::spawn(handler.0.kafka_loop(parts));
        Self { state, task }
    }

    /// Stops fetching, waits (bounded) for in-flight records, commits, closes the consumer.
    pub(crate) async fn shutdown(self) {
        self.state.request_stop();
        if let Err(error) = self.task.await {
            tracing::error!(channel = %self.state.channel, %error, "consumer task ended abnormally");
        }
    }
}

/// The consumer loop, compiled for the channel's handler type.
pub(crate) async fn consume<H: Handler>(parts: SourceParts, handler: Arc<H>) {
    let SourceParts { consumer, state, sink, commit_interval, max_age, drain_timeout } = parts;
    let consumer = Arc::new(consumer);
    let committer = (state.commit_strategy != CommitStrategy::Ignore)
        .then(|| tokio::spawn(committer::run(consumer.clone(), state.clone(), commit_interval, max_age)));
    let keep_originals = state.dead_letter.is_some();
    let reads_metadata = handler.reads_metadata();
    let mut partitions = PartitionCache::default();
    let mut stop = state.subscribe_stop();
    let stopped = stop.changed();
    tokio::pin!(stopped);
    // One stream for the channel's life: `recv()` would register and unregister a waker slot
    // (two lock round trips) for every record.
    let mut records = consumer.stream();
    while !state.stop_requested() {
        // The stream is polled first and the stop signal only when no record is ready, so a
        // record costs one poll of the queue, and an empty queue registers one waker.
        let next = poll_fn(|context| match records.poll_next_unpin(context) {
            Poll::Ready(next) => Poll::Ready(Some(next)),
            Poll::Pending => stopped.as_mut().poll(context).map(|_| None),
        })
        .await;
        let Some(next) = next else { break };
        match next.expect("a Kafka message stream never ends") {
            Ok(record) => {
                let assigned = partitions.get(&state, record.partition());
                let tracked = assigned.tracker.received(record.offset());
                let settle_handle = || SettleHandle::new(assigned.clone(), tracked);
                let incoming = incoming(&state, assigned, &record, reads_metadata, keep_originals, SettleSource(&settle_handle));
                // The value is decoded before `handle` returns: the record can go before the await.
                let handling = handler.handle(incoming);
                drop(record);
                match handling.await {
                    // A subscriber's ack, the common case, settles in place.
                    Handled::Verdict(Ok(())) => assigned.ack(tracked),
                    handled => handled.finish(assigned, tracked, sink.as_ref()).await,
                }
            }
            Err(error) => {
                tracing::warn!(channel = %state.channel, %error, "consumer error");
                // Before the first assignment an error (e.g. a missing topic) is why we are not ready.
                if state.partitions().is_empty() {
                    state.not_ready(&error.to_string());
                }
            }
        }
    }
    drop(records);
    state.not_ready("stopped");
    if !state.has_failed() {
        drain(&state, drain_timeout).await;
    }
    if let Some(committer) = committer {
        let _ = committer.await;
    }
    // The last commit and the close talk to the broker synchronously: off the async workers.
    let closing_state = state.clone();
    let closed = tokio::task::spawn_blocking(move || {
        if closing_state.commit_strategy != CommitStrategy::Ignore {
            commit_watermarks(&consumer, &closing_state, CommitMode::Sync);
        }
        drop(consumer);
    })
    .await;
    if let Err(error) = closed {
        tracing::error!(channel = %state.channel, %error, "closing the consumer failed");
    }
    tracing::info!(channel = %state.channel, "consumer closed");
}

/// Waits until every handed-out record is settled, or the timeout passes.
async fn drain(state: &ChannelState, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while state.partitions().iter().any(|assigned| assigned.tracker.has_pending()) {
        if Instant::now() >= deadline {
            tracing::warn!(channel = %state.channel, timeout_ms = timeout.as_millis() as u64,
                "shutdown drain timed out; unsettled records stay uncommitted and will be redelivered");
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The consumer loop's copy of the assignment, so a record costs no map lookup under a lock.
/// Rebalance callbacks run inside the loop's own `recv()`, and each changes the channel's
/// assignment epoch; a changed epoch empties the cache.
#[derive(Default)]
struct PartitionCache {
    epoch: u64,
    partitions: Vec<Arc<PartitionAcknowledger>>,
}

impl PartitionCache {
    #[inline]
    fn get(&mut self, state: &Arc<ChannelState>, partition: i32) -> &Arc<PartitionAcknowledger> {
        let epoch = state.assignment_epoch();
        if epoch != self.epoch {
            self.partitions.clear();
            self.epoch = epoch;
        }
        let index = match self.partitions.iter().position(|assigned| assigned.partition == partition) {
            Some(index) => index,
            None => {
                self.partitions.push(state.partition(partition));
                self.partitions.len() - 1
            }
        };
        &self.partitions[index]
    }
}

/// The handler's view of a record. Metadata (with copies of key and headers) is built only
/// for handlers that read it; the original record is copied only for the dead-letter topic.
#[inline]
fn incoming<'r>(
    state: &ChannelState,
    assigned: &PartitionAcknowledger,
    record: &'r BorrowedMessage<'_>,
    reads_metadata: bool,
    keep_original: bool,
    settle: SettleSource<'r>,
) -> Incoming<'r> {
    let offset = record.offset();
    let value = record.payload();
    let key = || record.key().map(<[u8]>::to_vec);
    let headers = || -> Vec<Header> {
        record
            .headers()
            .map(|headers| headers.iter().map(|header| Header { key: header.key.to_owned(), value: header.value.map(<[u8]>::to_vec) }).collect())
            .unwrap_or_default()
    };
    if keep_original {
        assigned.tracker.attach(offset, OriginalRecord { key: key(), value: value.map(<[u8]>::to_vec), headers: headers() });
    }
    let metadata = if reads_metadata {
        Metadata::new().with(KafkaMetadata {
            topic: state.topic.clone(),
            partition: assigned.partition,
            offset,
            timestamp: record.timestamp().to_millis(),
            key: key(),
            headers: headers(),
        })
    } else {
        Metadata::new()
    };
    Incoming { value, metadata, settle }
}
