//! An incoming channel's consumer loop.
//!
//! One task reads the consumer, hands each record to the handler and awaits it before taking
//! the next (records of the channel are processed one at a time, in partition order). Records
//! come in batches from each assigned partition's own queue, in turn; the main queue is polled
//! between batches and after every record whose handling waited, which runs the rebalance
//! callbacks. Offsets are committed by the committer task from the trackers that
//! acknowledgements update.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use rdkafka::consumer::{CommitMode, Consumer, MessageStream};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::BorrowedMessage;
use tokio::task::JoinHandle;

use super::acknowledger::PartitionAcknowledger;
use super::channel_state::ChannelState;
use super::committer::{self, commit_watermarks, ChannelConsumer};
use super::dead_letter::OriginalRecord;
use super::metadata::KafkaMetadata;
use super::partition_queue::{PartitionQueue, MAX_BATCH};
use super::queued_record::QueuedRecord;
use super::rebalance::ChannelContext;
use super::record::FetchedRecord;
use super::split_queues::SplitQueues;
use crate::commit::CommitStrategy;
use crate::handler::{BoxedHandler, Handled, Handler, Incoming, SettleSource};
use crate::metadata::Metadata;
use crate::outgoing::Sink;
use crate::settle::{Acknowledger, SettleHandle, Token};

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
    let SourceParts {
        consumer,
        state,
        sink,
        commit_interval,
        max_age,
        drain_timeout,
    } = parts;
    let consumer = Arc::new(consumer);
    let committer = (state.commit_strategy != CommitStrategy::Ignore).then(|| {
        tokio::spawn(committer::run(
            consumer.clone(),
            state.clone(),
            commit_interval,
            max_age,
        ))
    });
    let split_queues = &consumer.context().queues;
    let mut channel = ChannelLoop {
        state: &state,
        handler: &*handler,
        sink: sink.as_ref(),
        reads_metadata: handler.reads_metadata(),
        keep_originals: state.dead_letter.is_some(),
        partitions: PartitionCache::new(split_queues),
    };
    let mut stop = state.subscribe_stop();
    let stopped = stop.changed();
    tokio::pin!(stopped);
    // One stream for the channel's life: `recv()` would register and unregister a waker slot
    // (two lock round trips) for every poll. It carries rebalances, errors and commit results,
    // and the records of any partition whose queue could not be split.
    let mut main_queue = consumer.stream();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while !state.stop_requested() {
        if let Some(assigned) = channel.partitions.take_batch(&state, &mut batch) {
            channel
                .handle_batch(assigned, &mut batch, &mut main_queue)
                .await;
            // Between batches the main queue is served even for handlers that never wait.
            channel.serve_ready(&mut main_queue).await;
            continue;
        }
        // Nothing ready: wait for a record in a partition queue, a main-queue event or the stop
        // signal. The waker is registered before the queues are checked, so a record that
        // arrives in between still wakes us.
        let woken = poll_fn(|context| {
            split_queues.waker.register(context.waker());
            match main_queue.poll_next_unpin(context) {
                Poll::Ready(event) => Poll::Ready(Woken::Event(
                    event.expect("a Kafka message stream never ends"),
                )),
                Poll::Pending if channel.partitions.any_ready(&state) => {
                    Poll::Ready(Woken::Records)
                }
                Poll::Pending => stopped.as_mut().poll(context).map(|_| Woken::Stop),
            }
        })
        .await;
        match woken {
            Woken::Event(event) => channel.handle_event(event).await,
            Woken::Records => {}
            Woken::Stop => break,
        }
    }
    drop((batch, channel, main_queue));
    // Before the consumer closes: librdkafka must not be destroyed while we hold its queues.
    split_queues.release_all();
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

/// What the consumer loop works with, besides its queues.
struct ChannelLoop<'a, H> {
    state: &'a Arc<ChannelState>,
    handler: &'a H,
    sink: Option<&'a Arc<dyn Sink>>,
    reads_metadata: bool,
    keep_originals: bool,
    partitions: PartitionCache<'a>,
}

impl<H: Handler> ChannelLoop<'_, H> {
    /// Handles a batch from one partition's queue, in order. A handler that had to wait (for
    /// I/O, say) is slow next to a poll, so after its record the main queue is served: a
    /// rebalance is answered, and librdkafka sees the poll `max.poll.interval.ms` asks for,
    /// record by record as without batches.
    async fn handle_batch(
        &mut self,
        assigned: Arc<PartitionAcknowledger>,
        batch: &mut Vec<QueuedRecord>,
        main_queue: &mut MessageStream<'_, ChannelContext>,
    ) {
        let mut epoch = self.state.assignment_epoch();
        for record in batch.drain(..) {
            if self.state.stop_requested() {
                // Not handed out, so not tracked: the committed offset stays before them.
                break;
            }
            let current_epoch = self.state.assignment_epoch();
            if current_epoch != epoch {
                if !self.state.is_current(&assigned) {
                    // Revoked meanwhile: the partition's next owner (maybe us again) fetches
                    // these from the committed offset.
                    break;
                }
                // Still ours: look again only after the next change, not for every record.
                epoch = current_epoch;
            }
            if let Some(error) = record.error() {
                self.consumer_error(&error);
                continue;
            }
            if self.handle(&assigned, record).await == Waited::Yes {
                self.serve_ready(main_queue).await;
            }
        }
    }

    /// Serves what the main queue holds now, without waiting.
    async fn serve_ready(&mut self, main_queue: &mut MessageStream<'_, ChannelContext>) {
        while let Some(event) = main_queue.next().now_or_never() {
            self.handle_event(event.expect("a Kafka message stream never ends"))
                .await;
        }
    }

    async fn handle_event(&mut self, event: KafkaResult<BorrowedMessage<'_>>) {
        match event {
            Ok(record) => {
                let assigned = self.partitions.get(self.state, record.partition()).clone();
                self.handle(&assigned, record).await;
            }
            Err(error) => self.consumer_error(&error),
        }
    }

    fn consumer_error(&self, error: &KafkaError) {
        tracing::warn!(channel = %self.state.channel, %error, "consumer error");
        // Before the first assignment an error (e.g. a missing topic) is why we are not ready.
        if self.state.partitions().is_empty() {
            self.state.not_ready(&error.to_string());
        }
    }

    /// Hands one record to the handler and settles it.
    #[inline]
    async fn handle<R: FetchedRecord>(
        &self,
        assigned: &Arc<PartitionAcknowledger>,
        record: R,
    ) -> Waited {
        let token = Token::from(assigned.tracker.received(record.offset()));
        let settle_handle = || SettleHandle::new(assigned.clone(), token);
        let metadata = MetadataWanted {
            by_handler: self.reads_metadata,
            for_output: self.handler.passes_metadata_on(),
        };
        let incoming = incoming(
            self.state,
            assigned,
            &record,
            metadata,
            self.keep_originals,
            SettleSource(&settle_handle),
        );
        // The value is decoded before `handle` returns: the record can go before the await.
        let handling = self.handler.handle(incoming);
        drop(record);
        let mut waited = Waited::No;
        match noting_wait(handling, &mut waited).await {
            // A subscriber's ack, the common case, settles in place.
            Handled::Verdict(Ok(())) => assigned.ack(token),
            handled => noting_wait(handled.finish(assigned, token, self.sink), &mut waited).await,
        }
        waited
    }
}

/// Awaits `future`, noting in `waited` whether it had to wait.
#[inline]
async fn noting_wait<F: Future>(future: F, waited: &mut Waited) -> F::Output {
    let mut future = pin!(future);
    poll_fn(|context| {
        let poll = future.as_mut().poll(context);
        if poll.is_pending() {
            *waited = Waited::Yes;
        }
        poll
    })
    .await
}

/// What ended the consumer loop's wait.
enum Woken<'a> {
    Event(KafkaResult<BorrowedMessage<'a>>),
    Records,
    Stop,
}

/// Whether handling a record had to wait.
#[derive(PartialEq, Eq)]
enum Waited {
    No,
    Yes,
}

/// Waits until every handed-out record is settled, or the timeout passes.
async fn drain(state: &ChannelState, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while state
        .partitions()
        .iter()
        .any(|assigned| assigned.tracker.has_pending())
    {
        if Instant::now() >= deadline {
            tracing::warn!(channel = %state.channel, timeout_ms = timeout.as_millis() as u64,
                "shutdown drain timed out; unsettled records stay uncommitted and will be redelivered");
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The consumer loop's copy of the assignment and of the split partition queues, so a record
/// costs no map lookup under a lock. Rebalance callbacks run inside the loop's own polls of
/// the main queue, and each changes the channel's assignment epoch; a changed epoch empties
/// the cache.
struct PartitionCache<'a> {
    split_queues: &'a SplitQueues,
    epoch: u64,
    partitions: Vec<Arc<PartitionAcknowledger>>,
    queues: Vec<Arc<PartitionQueue>>,
    /// The queue to read first next time, so every partition gets its turn.
    next_queue: usize,
}

impl<'a> PartitionCache<'a> {
    fn new(split_queues: &'a SplitQueues) -> Self {
        Self {
            split_queues,
            epoch: 0,
            partitions: Vec::new(),
            queues: Vec::new(),
            next_queue: 0,
        }
    }

    #[inline]
    fn refresh(&mut self, state: &ChannelState) {
        let epoch = state.assignment_epoch();
        if epoch != self.epoch {
            self.partitions.clear();
            self.queues = self.split_queues.current();
            self.epoch = epoch;
        }
    }

    #[inline]
    fn get(&mut self, state: &Arc<ChannelState>, partition: i32) -> &Arc<PartitionAcknowledger> {
        self.refresh(state);
        let index = match self
            .partitions
            .iter()
            .position(|assigned| assigned.partition == partition)
        {
            Some(index) => index,
            None => {
                self.partitions.push(state.partition(partition));
                self.partitions.len() - 1
            }
        };
        &self.partitions[index]
    }

    /// Fills `batch` from the next partition queue that has records; returns that partition's
    /// acknowledger, or `None` when every queue is empty.
    fn take_batch(
        &mut self,
        state: &Arc<ChannelState>,
        batch: &mut Vec<QueuedRecord>,
    ) -> Option<Arc<PartitionAcknowledger>> {
        self.refresh(state);
        for _ in 0..self.queues.len() {
            let queue = self.queues[self.next_queue % self.queues.len()].clone();
            self.next_queue = self.next_queue.wrapping_add(1);
            if queue.take_batch(batch) > 0 {
                return Some(self.get(state, queue.partition).clone());
            }
        }
        None
    }

    /// Whether any partition queue has records, the queues of a new assignment included.
    fn any_ready(&mut self, state: &ChannelState) -> bool {
        self.refresh(state);
        self.queues.iter().any(|queue| !queue.is_empty())
    }
}

/// Who needs a record's [`KafkaMetadata`]: the user function, and a processor's output.
struct MetadataWanted {
    by_handler: bool,
    for_output: bool,
}

/// The handler's view of a record. Metadata (with copies of key and headers) is built only
/// for handlers that read it and for processors' outputs; the original record is copied only
/// for the dead-letter topic.
#[inline]
fn incoming<'r>(
    state: &ChannelState,
    assigned: &PartitionAcknowledger,
    record: &'r impl FetchedRecord,
    wanted: MetadataWanted,
    keep_original: bool,
    settle: SettleSource<'r>,
) -> Incoming<'r> {
    let offset = record.offset();
    let value = record.value();
    let key = || record.key().map(<[u8]>::to_vec);
    if keep_original {
        assigned.tracker.attach(
            offset,
            OriginalRecord {
                key: key(),
                value: value.map(<[u8]>::to_vec),
                headers: record.headers(),
            },
        );
    }
    let metadata = |wanted: bool| {
        if !wanted {
            return Metadata::new();
        }
        Metadata::new().with(KafkaMetadata {
            topic: state.topic.clone(),
            partition: assigned.partition,
            offset,
            timestamp: record.timestamp(),
            key: key(),
            headers: record.headers(),
        })
    };
    Incoming {
        value,
        metadata: metadata(wanted.by_handler),
        for_output: metadata(wanted.for_output),
        settle,
    }
}
