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
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use std::panic::AssertUnwindSafe;

use futures_util::{FutureExt, StreamExt};
use rdkafka::consumer::{CommitMode, Consumer, MessageStream};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::BorrowedMessage;
use tokio::task::JoinHandle;

use super::acknowledger::PartitionAcknowledger;
use super::broker_probe;
use super::channel_state::ChannelState;
use super::committer::{self, commit_watermarks, ChannelConsumer, Round};
use super::dead_letter::OriginalRecord;
use super::metadata::KafkaMetadata;
use super::off_worker::OffWorker;
use super::partition_queue::{PartitionQueue, MAX_BATCH};
use super::queued_record::QueuedRecord;
use super::rebalance::ChannelContext;
use super::record::FetchedRecord;
use super::split_queues::SplitQueues;
use crate::failure::Failure;
use crate::handler::{BoxedHandler, Handled, Handler, Incoming, SettleSource};
use crate::metadata::Metadata;
use crate::outgoing::Sink;
use crate::settle::{Acknowledger, SettleHandle, Token};

/// A running incoming channel.
pub(crate) struct KafkaSource {
    state: Arc<ChannelState>,
    task: JoinHandle<()>,
    drain_timeout: Duration,
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
        let drain_timeout = parts.drain_timeout;
        let failing = state.clone();
        let task = tokio::spawn(supervised(
            "consumer loop",
            handler.0.kafka_loop(parts),
            move |reason| failing.fail(&reason),
        ));
        Self {
            state,
            task,
            drain_timeout,
        }
    }

    /// Stops fetching, waits for the record in hand and for unsettled ones, then abandons what
    /// is left (uncommitted, so delivered again), commits what is settled and closes the
    /// consumer: all within `messaging.shutdown.timeout.ms` (see `ChannelState::records_deadline`).
    pub(crate) async fn shutdown(mut self) {
        self.state.request_stop();
        let records_deadline = self.state.records_deadline(self.drain_timeout);
        let finished = tokio::time::timeout_at(records_deadline.into(), &mut self.task).await;
        let ended = match finished {
            Ok(ended) => ended,
            Err(_) => {
                self.state.abandon_in_flight();
                (&mut self.task).await
            }
        };
        if let Err(error) = ended {
            tracing::error!(channel = %self.state.channel, %error, "consumer task ended abnormally");
        }
    }
}

/// Runs one of a channel's tasks (its consumer loop, its committer); if it panics, the channel
/// fails (liveness DOWN with the reason) instead of leaving health UP over a dead task.
async fn supervised(
    task: &'static str,
    running: impl Future<Output = ()>,
    fail: impl FnOnce(String),
) {
    if let Err(panic) = AssertUnwindSafe(running).catch_unwind().await {
        fail(format!(
            "the {task} ended abnormally: {}",
            Failure::from_panic(panic).reason()
        ));
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
    let consumer = OffWorker::new(Arc::new(consumer));
    // Declared before anything that holds a queue, so it drops after them: on every path out
    // of this function (a panic or a cancelled task too), the queues go before the consumer.
    let queues_owner = QueuesOwner(OffWorker::new(Arc::clone(&consumer)));
    let committer = state.commits().then(|| {
        let failing = state.clone();
        tokio::spawn(supervised(
            "committer",
            committer::run(
                OffWorker::new(Arc::clone(&consumer)),
                state.clone(),
                commit_interval,
                max_age,
            ),
            move |reason| failing.fail(&reason),
        ))
    });
    if let Some(target) = state.broker_probe_target() {
        let (probed, probing_state) = (Arc::downgrade(&consumer), state.clone());
        broker_probe::spawn(target, move || {
            probed.upgrade().filter(|_| !probing_state.stop_requested())
        });
    }
    let split_queues = &consumer.context().queues;
    let mut channel = ChannelLoop {
        state: &state,
        handler: &*handler,
        sink: sink.as_ref(),
        reads_metadata: handler.reads_metadata(),
        keep_originals: state.dead_letter.is_some(),
        partitions: PartitionCache::new(split_queues),
        // One stream for the channel's life: `recv()` would register and unregister a waker
        // slot (two lock round trips) for every poll.
        main_queue: consumer.stream(),
        stashed: None,
    };
    let stopped = state.stopped();
    tokio::pin!(stopped);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while !state.stop_requested() {
        if let Some(assigned) = channel.partitions.take_batch(&state, &mut batch) {
            channel.handle_batch(assigned, &mut batch).await;
            // Between batches the main queue is served even for handlers that never wait.
            channel.serve_ready().await;
            continue;
        }
        // Nothing ready: wait for a record in a partition queue, a main-queue event or the stop
        // signal. The waker is registered before the queues are checked, so a record that
        // arrives in between still wakes us.
        let woken = poll_fn(|context| {
            split_queues.waker.register(context.waker());
            match channel.main_queue.poll_next_unpin(context) {
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
            Woken::Event(event) => {
                channel.handle_event(event).await;
                channel.serve_ready().await;
            }
            Woken::Records => {}
            Woken::Stop => break,
        }
    }
    drop((batch, channel));
    drop(queues_owner);
    state.not_ready("stopped");
    if !state.has_failed() && !state.is_abandoned() {
        drain(&state, state.records_deadline(drain_timeout)).await;
    }
    if let Some(committer) = committer {
        let _ = committer.await;
    }
    // The last commit and the close talk to the broker synchronously: on a thread of their
    // own, so that neither a tokio worker nor the runtime's shutdown waits for a broker that
    // does not answer.
    let (closed, closing) = tokio::sync::oneshot::channel();
    let (closing_state, consumer) = (state.clone(), consumer.into_inner());
    let spawned = std::thread::Builder::new()
        .name("messaging-consumer-close".into())
        .spawn(move || {
            if closing_state.commits() {
                commit_watermarks(
                    &*consumer,
                    &closing_state,
                    &closing_state.partitions(),
                    Round::Final,
                    CommitMode::Sync,
                );
            }
            // The close is the last reference's drop. A broker probe may hold one for a moment
            // (it stops once the channel stops): wait for it here, so the close runs on this
            // thread, not on the probe's blocking-pool thread (which would hold the runtime's
            // shutdown).
            let mut consumer = consumer;
            loop {
                match Arc::try_unwrap(consumer) {
                    Ok(last) => break drop(last),
                    Err(shared) => consumer = shared,
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = closed.send(());
        });
    if let Err(error) = spawned {
        tracing::error!(channel = %state.channel, %error, "cannot start the consumer's close");
        return;
    }
    let close_deadline = state.close_deadline(drain_timeout);
    match tokio::time::timeout_at(close_deadline.into(), closing).await {
        Ok(_) => tracing::info!(channel = %state.channel, "consumer closed"),
        Err(_) => {
            tracing::warn!(channel = %state.channel, timeout_ms = drain_timeout.as_millis() as u64,
            "the last commit and the consumer's close did not finish within messaging.shutdown.timeout.ms; not waiting for them")
        }
    }
}

/// What the consumer loop works with.
struct ChannelLoop<'a, H> {
    state: &'a Arc<ChannelState>,
    handler: &'a H,
    sink: Option<&'a Arc<dyn Sink>>,
    reads_metadata: bool,
    keep_originals: bool,
    partitions: PartitionCache<'a>,
    /// The consumer's main queue: rebalances, errors and commit results (their callbacks run
    /// inside its polls), and the records of any partition whose queue could not be split.
    main_queue: MessageStream<'a, ChannelContext>,
    /// A main-queue record that arrived while another record was in hand, with the
    /// assignment it arrived in: handled next, if that assignment is still current.
    stashed: Option<(BorrowedMessage<'a>, Arc<PartitionAcknowledger>)>,
}

impl<'a, H: Handler> ChannelLoop<'a, H> {
    /// Handles a batch from one partition's queue, in order. A handler that had to wait (for
    /// I/O, say) is slow next to a poll, so after its record the main queue is served: a
    /// rebalance is answered, and librdkafka sees the poll `max.poll.interval.ms` asks for,
    /// record by record as without batches.
    async fn handle_batch(
        &mut self,
        assigned: Arc<PartitionAcknowledger>,
        batch: &mut Vec<QueuedRecord>,
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
                self.serve_ready().await;
            }
        }
    }

    /// Serves a stashed record and what the main queue holds now, without waiting.
    async fn serve_ready(&mut self) {
        loop {
            if let Some((record, assigned)) = self.stashed.take() {
                // Revoked (and perhaps assigned back) meanwhile: the partition's next owner,
                // or the new assignment, reads the record again from the committed offset.
                if self.state.is_current(&assigned) && !self.state.stop_requested() {
                    self.handle(&assigned, record).await;
                }
                continue;
            }
            match self.main_queue.next().now_or_never() {
                Some(event) => {
                    self.handle_event(event.expect("a Kafka message stream never ends"))
                        .await
                }
                None => return,
            }
        }
    }

    /// While a record waits (for I/O, a dead-letter write), rebalances are still answered and
    /// librdkafka still sees the polls `max.poll.interval.ms` asks for: the main queue is
    /// polled, and its callbacks run inside the poll. A record that comes through it waits in
    /// `stashed` until the one in hand is done (records are handled one at a time, in order),
    /// and polling pauses until then: this happens only for a partition whose queue could not
    /// be split. An error is handled at once.
    fn poll_main_queue(&mut self, context: &mut Context<'_>) {
        while self.stashed.is_none() {
            match self.main_queue.poll_next_unpin(context) {
                Poll::Ready(Some(Ok(record))) => {
                    let assigned = self.partitions.get(self.state, record.partition()).cloned();
                    // A record of a partition not assigned is left for its next owner.
                    self.stashed = assigned.map(|assigned| (record, assigned));
                }
                Poll::Ready(Some(Err(error))) => self.consumer_error(&error),
                Poll::Ready(None) | Poll::Pending => return,
            }
        }
    }

    async fn handle_event(&mut self, event: KafkaResult<BorrowedMessage<'a>>) {
        match event {
            Ok(record) => {
                if self.state.stop_requested() {
                    // Stopping: not handed out, so not committed; read again after a restart.
                    return;
                }
                let Some(assigned) = self.partitions.get(self.state, record.partition()).cloned()
                else {
                    // Left over from a revoked assignment: its next owner reads it again.
                    return;
                };
                self.state.consuming();
                self.handle(&assigned, record).await;
            }
            Err(error) => self.consumer_error(&error),
        }
    }

    fn consumer_error(&self, error: &KafkaError) {
        if let KafkaError::PartitionEOF(_) = error {
            // The end of a partition (`enable.partition.eof`) is news, not an error.
            return;
        }
        tracing::warn!(channel = %self.state.channel, %error, "consumer error");
        if self.state.partitions().is_empty() {
            // Before the first assignment an error (e.g. a missing topic) is why we are not ready.
            self.state.not_ready(&error.to_string());
        } else if !is_unreachable_broker(error) {
            self.state
                .consumer_error(&format!("consumer error: {error}"));
        }
    }

    /// Hands one record to the handler and settles it.
    #[inline]
    async fn handle<R: FetchedRecord>(
        &mut self,
        assigned: &Arc<PartitionAcknowledger>,
        record: R,
    ) -> Waited {
        // A handler that never waits would otherwise run a whole backlog without returning to
        // the scheduler, starving the committer, the health server and the signal handler (on
        // a current-thread runtime, or with as many busy channels as workers). Once tokio's
        // per-task budget is spent this yields, before the record is handed out.
        tokio::task::consume_budget().await;
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
        let Some(handled) = self.awaiting(handling, &mut waited).await else {
            // Abandoned at shutdown: unsettled, so uncommitted and delivered again.
            return waited;
        };
        match handled {
            // A subscriber's ack, the common case, settles in place.
            Handled::Verdict(Ok(())) => assigned.ack(token),
            handled => {
                let finish = handled.finish(assigned, token, self.sink);
                self.awaiting(finish, &mut waited).await;
            }
        }
        waited
    }

    /// Awaits `future`, noting in `waited` whether it had to wait, and serving the main queue
    /// meanwhile; `None` when shutdown abandoned it (a handler or a dead-letter write that
    /// outlasts `messaging.shutdown.timeout.ms`).
    #[inline]
    async fn awaiting<F: Future>(&mut self, future: F, waited: &mut Waited) -> Option<F::Output> {
        let mut future = pin!(future);
        poll_fn(|context| {
            if let Poll::Ready(output) = future.as_mut().poll(context) {
                return Poll::Ready(Some(output));
            }
            // Only a record that has to wait pays for what follows.
            *waited = Waited::Yes;
            self.poll_main_queue(context);
            self.state.abandon_waker.register(context.waker());
            if self.state.is_abandoned() {
                Poll::Ready(None)
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

/// Whether an error says the broker cannot be reached: the broker probe reports that, and
/// clears it when the broker answers again (an idle consumer fetches no records to clear it).
fn is_unreachable_broker(error: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        error.rdkafka_error_code(),
        Some(
            Code::BrokerTransportFailure
                | Code::AllBrokersDown
                | Code::Resolve
                | Code::OperationTimedOut
                | Code::RequestTimedOut
                | Code::NetworkException
                | Code::BrokerNotAvailable
                | Code::LeaderNotAvailable
                | Code::CoordinatorNotAvailable
                | Code::NotCoordinator
        )
    )
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

/// Waits until every handed-out record is settled, or the timeout passes, or shutdown
/// abandons them.
async fn drain(state: &ChannelState, deadline: Instant) {
    while state
        .partitions()
        .iter()
        .any(|assigned| assigned.tracker.has_pending())
    {
        if state.is_abandoned() {
            return;
        }
        if Instant::now() >= deadline {
            state.warn_unsettled_stay_uncommitted();
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Releases the split partition queues before the consumer can be destroyed: librdkafka must
/// not be destroyed while we hold its queues (it would wait for them forever). Holds the
/// consumer, as rdkafka's own `PartitionQueue` does, so the client outlives the release.
struct QueuesOwner(OffWorker);

impl Drop for QueuesOwner {
    fn drop(&mut self) {
        let consumer = &self.0;
        consumer
            .context()
            .queues
            .release_all(consumer.client().native_ptr());
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
    /// The current assignment of `partition`, or `None` when the partition is not assigned
    /// (its records are left for its next owner).
    fn get(&mut self, state: &ChannelState, partition: i32) -> Option<&Arc<PartitionAcknowledger>> {
        self.refresh(state);
        let index = match self
            .partitions
            .iter()
            .position(|assigned| assigned.partition == partition)
        {
            Some(index) => index,
            None => {
                self.partitions.push(state.current_partition(partition)?);
                self.partitions.len() - 1
            }
        };
        Some(&self.partitions[index])
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
                state.consuming();
                match self.get(state, queue.partition) {
                    Some(assigned) => return Some(assigned.clone()),
                    // Not assigned (any more): untracked, so never committed; read again by
                    // the partition's next owner.
                    None => batch.clear(),
                }
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[tokio::test]
    async fn a_consumer_loop_that_panics_fails_its_channel_with_the_reason() {
        let reason = Mutex::new(None);
        supervised("consumer loop", async { panic!("the loop broke") }, |why| {
            *reason.lock().unwrap() = Some(why)
        })
        .await;
        let reason = reason.into_inner().unwrap().expect("the channel failed");
        assert!(
            reason.contains("ended abnormally") && reason.contains("the loop broke"),
            "{reason}"
        );
    }

    #[tokio::test]
    async fn a_consumer_loop_that_returns_fails_nothing() {
        let mut failed = false;
        supervised("consumer loop", async {}, |_| failed = true).await;
        assert!(!failed);
    }
}
