//! An incoming channel's consumer loop.
//!
//! One task reads the consumer and keeps up to `max-concurrency` records in flight, never two
//! of one ordering slot (partition or key, see `concurrency/`) at once. Records come in
//! batches from each assigned partition's own queue, in turn, while the loop holds fewer than
//! `max-buffered-records`; the main queue is polled between batches and whenever the loop
//! waits, which runs the rebalance callbacks. Offsets are committed by the committer task from
//! the trackers that acknowledgements update, never past an unsettled record.

use std::future::{poll_fn, Future};
use std::panic::AssertUnwindSafe;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use rdkafka::consumer::{Consumer, MessageStream};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::BorrowedMessage;
use rdkafka::TopicPartitionList;
use tokio::task::JoinHandle;

use super::acknowledger::PartitionAcknowledger;
use super::broker_probe;
use super::channel_state::ChannelState;
use super::committer::{self, commit_at_close, ChannelConsumer};
use super::lag_watch;
use super::off_worker::OffWorker;
use super::partition_queue::{PartitionQueue, MAX_BATCH};
use super::queued_record::QueuedRecord;
use super::rebalance::ChannelContext;
use super::record::{FetchedRecord, HeldRecord};
use super::record_task::{handle_record, handle_retry, Finished, RecordJob, Taken};
use super::split_queues::SplitQueues;
use crate::concurrency::{HeldRecords, Slots};
use crate::failure::Failure;
use crate::handler::{BoxedHandler, Handler};
use crate::intake_gate::IntakeGate;
use crate::outgoing::Sink;

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

    /// The records the loop holds, if this is `channel`.
    pub(crate) fn held_records(&self, channel: &str) -> Option<HeldRecords> {
        (self.state.channel == channel).then(|| {
            let (now, peak) = self.state.held_records_now_and_peak();
            HeldRecords { now, peak }
        })
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
                self.state.abandon_in_flight(SHUTDOWN_STOPPED_WAITING);
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
    lag_watch::spawn(Arc::downgrade(&consumer), state.clone());
    let (probed, probing_state) = (Arc::downgrade(&consumer), state.clone());
    broker_probe::spawn(state.broker_probe_target(), move || {
        let consumer = probed
            .upgrade()
            .filter(|_| !probing_state.stop_requested())?;
        Some(Arc::new(OffWorker::new(consumer)))
    });
    let split_queues = &consumer.context().queues;
    // Lent to the records' futures, which live in the loop: no reference count per record.
    let job = RecordJob::new(state.clone(), handler, sink);
    let mut channel = ChannelLoop {
        state: &state,
        job: &job,
        partitions: PartitionCache::new(split_queues),
        // One stream for the channel's life: `recv()` would register and unregister a waker
        // slot (two lock round trips) for every poll.
        main_queue: consumer.stream(),
        consumer: &consumer,
        paused: Vec::new(),
        gate: state.sink_gate.clone(),
        paused_by_gate: None,
        gate_followed_closed: false,
        gate_followed_epoch: 0,
        waiting: Slots::new(),
        in_flight: FuturesUnordered::new(),
        settling: FuturesUnordered::new(),
        held: 0,
        batch: Vec::with_capacity(MAX_BATCH),
        failure_grace: drain_timeout,
        failure_timer: None,
        slice_started: tokio::time::Instant::now(),
        slice_records: 0,
        parked: false,
    };
    channel.run().await;
    drop(channel);
    if !job.places.all_given_back() {
        // A bug in the library, not in the service: every record future is gone with the
        // loop and each gives its place back when dropped. Nothing depends on the count now.
        tracing::error!(channel = %state.channel, "a place among max-concurrency was not given back when the consumer loop ended");
    }
    drop(job);
    if state.is_abandoned() {
        if let Some(writer) = &state.dead_letter {
            writer.purge_unsent();
        }
    }
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
    let close_deadline = state.close_deadline(drain_timeout);
    let spawned = std::thread::Builder::new()
        .name("messaging-consumer-close".into())
        .spawn(move || {
            closing_state.closing();
            if closing_state.commits() {
                commit_at_close(&*consumer, &closing_state, close_deadline);
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
            closing_state.metrics.consumer_closed();
            let _ = closed.send(());
        });
    if let Err(error) = spawned {
        tracing::error!(channel = %state.channel, %error, "cannot start the consumer's close");
        return;
    }
    match tokio::time::timeout_at(close_deadline.into(), closing).await {
        Ok(_) => tracing::info!(channel = %state.channel, "consumer closed"),
        Err(_) => {
            tracing::warn!(channel = %state.channel, timeout_ms = drain_timeout.as_millis() as u64,
            "the last commit and the consumer's close did not finish within messaging.shutdown.timeout.ms; not waiting for them")
        }
    }
}

/// What the consumer loop works with.
///
/// One task serves everything of the channel: the main queue (rebalances, errors, commit
/// results: their callbacks run inside its polls), the partition queues, the records in
/// flight and the stop signal. A record that waits (for I/O, a retry's backoff, a dead-letter
/// write) is one future among the others, so it delays neither a rebalance answer nor the
/// polls `max.poll.interval.ms` asks for.
struct ChannelLoop<'a, H> {
    state: &'a Arc<ChannelState>,
    job: &'a RecordJob<H>,
    partitions: PartitionCache<'a>,
    main_queue: MessageStream<'a, ChannelContext>,
    consumer: &'a ChannelConsumer,
    /// Partitions whose records come through the main queue (their queue could not be split),
    /// paused because one came while the loop held all it may; resumed once there is room.
    /// The main queue itself is always polled: it carries the rebalances.
    paused: Vec<i32>,
    /// The outgoing sink's hold on this channel: closed while the sink's store is down (see
    /// `intake_gate.rs`); no record is taken or started then, and the assignment is paused.
    gate: Option<IntakeGate>,
    /// The partitions paused for the gate, and the assignment epoch they were paused in.
    paused_by_gate: Option<(u64, TopicPartitionList)>,
    /// Whether the gate was closed when `follow_gate` last looked.
    gate_followed_closed: bool,
    /// The assignment epoch when `follow_gate` last looked.
    gate_followed_epoch: u64,
    /// Records taken in and not started: ready, or waiting behind their slot.
    waiting: Slots<Taken>,
    /// Records whose handler runs (at most `max-concurrency`), or that wait for their next
    /// attempt (holding no place meanwhile).
    in_flight: FuturesUnordered<BoxFuture<'a, Finished>>,
    /// Dead-letter writes (and other nacks) of records that gave their slot back.
    settling: FuturesUnordered<BoxFuture<'static, Arc<PartitionAcknowledger>>>,
    /// Records taken from the client and not yet let go: `waiting`, `in_flight`, `settling`
    /// and the stash. Capped by `max-buffered-records`.
    held: usize,
    batch: Vec<QueuedRecord>,
    /// How long a failed channel waits for its records in flight (`messaging.shutdown.timeout.ms`)
    /// before it gives them up and closes its consumer, so that a handler that never returns
    /// cannot keep the partitions from the group's other members.
    failure_grace: Duration,
    /// Running once the channel failed; stopped with the loop.
    failure_timer: Option<AbortOnDrop>,
    /// When the loop's current time slice began: at its last yield, or at the first record
    /// after a wait (see `start_or_yield`).
    slice_started: tokio::time::Instant,
    /// Records started in the current time slice.
    slice_records: usize,
    /// Whether the loop waited since the last record started.
    parked: bool,
}

/// How long the consumer loop runs records without returning to the scheduler.
const TIME_SLICE: Duration = Duration::from_millis(1);

/// The most records the consumer loop starts without returning to the scheduler: more than a
/// fast handler gets through in `TIME_SLICE`, so it counts only where the clock does not move.
const SLICE_RECORDS: usize = 8192;

/// A task stopped when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

const SHUTDOWN_STOPPED_WAITING: &str =
    "shutdown stopped waiting for unsettled records within messaging.shutdown.timeout.ms";

impl<'a, H: Handler> ChannelLoop<'a, H> {
    async fn run(&mut self) {
        let stopped = self.state.stopped();
        let mut stopped = pin!(stopped);
        loop {
            if self.state.is_abandoned() {
                // Shutdown stopped waiting: what is in flight is dropped, uncommitted.
                return;
            }
            let stopping = self.state.stop_requested();
            if stopping && self.failure_timer.is_none() && self.state.has_failed() {
                // The same share of the timeout as a shutdown's, leaving the rest for the last
                // commit and the close.
                let (state, deadline) = (
                    self.state.clone(),
                    self.state.records_deadline(self.failure_grace),
                );
                self.failure_timer = Some(AbortOnDrop(tokio::spawn(async move {
                    tokio::time::sleep_until(deadline.into()).await;
                    state.abandon_in_flight(
                        "the channel failed and its records in flight did not finish within messaging.shutdown.timeout.ms; \
                         it gives them up and closes its consumer, leaving its partitions to the group",
                    );
                })));
            }
            if stopping {
                // Not started, so never settled: uncommitted, read again after a restart.
                for given_up in self.waiting.clear() {
                    self.let_go(&given_up.assigned);
                    given_up.give_up();
                }
                if self.in_flight.is_empty() && self.settling.is_empty() {
                    return;
                }
            }
            self.follow_gate();
            self.collect_finished();
            self.start_ready().await;
            if !stopping {
                self.resume_paused();
                if self.has_room() {
                    let room = self.room();
                    if let Some(assigned) =
                        self.partitions
                            .take_batch(self.state, &mut self.batch, room)
                    {
                        self.take_batch(assigned);
                        // Between batches the main queue is served even for handlers that
                        // never wait.
                        self.serve_main_queue_now();
                        continue;
                    }
                }
            }
            // Nothing to start: wait for a finished record, a record in a partition queue, a
            // main-queue event or the stop signal. The waker is registered before the queues
            // are checked, so a record that arrives in between still wakes us.
            let woken =
                poll_fn(|context| self.poll_woken(context, stopped.as_mut(), stopping)).await;
            match woken {
                Woken::Finished(finished) => self.finished(finished),
                Woken::Settled(assigned) => self.let_go(&assigned),
                Woken::Event(event) => self.handle_event(event),
                Woken::Records | Woken::Room | Woken::Stop | Woken::Abandoned => {}
            }
        }
    }

    fn poll_woken(
        &mut self,
        context: &mut Context<'_>,
        stopped: Pin<&mut impl Future<Output = ()>>,
        stopping: bool,
    ) -> Poll<Woken<'a>> {
        if stopping && self.in_flight.is_empty() && self.settling.is_empty() {
            // The last records finished since the loop last looked (`collect_finished` takes
            // in those that finished meanwhile, after that look): nothing would wake it again
            // before shutdown gives up waiting.
            return Poll::Ready(Woken::Stop);
        }
        self.partitions.split_queues.waker.register(context.waker());
        if let Poll::Ready(Some(finished)) = self.in_flight.poll_next_unpin(context) {
            return Poll::Ready(Woken::Finished(finished));
        }
        if let Some(gate) = self.gate.as_ref() {
            // Registered, then looked at: a close or an open in between is not missed. A change
            // since `follow_gate` last looked takes the loop round to pause or resume the
            // assignment (while it waits for records too, when the sink's writes fail).
            gate.wake_on_change(context.waker());
            if gate.is_closed() != self.gate_followed_closed {
                return Poll::Ready(Woken::Room);
            }
        }
        if !self.held_back() && self.waiting.has_ready() && self.job.places.has_room_for_new() {
            // A record in flight began waiting for a retry: a place to start another.
            return Poll::Ready(Woken::Room);
        }
        if let Poll::Ready(Some(assigned)) = self.settling.poll_next_unpin(context) {
            return Poll::Ready(Woken::Settled(assigned));
        }
        if let Poll::Ready(event) = self.main_queue.poll_next_unpin(context) {
            return Poll::Ready(Woken::Event(
                event.expect("a Kafka message stream never ends"),
            ));
        }
        if self.held_back() && self.gate_followed_epoch != self.state.assignment_epoch() {
            // A rebalance (its callback runs in the main queue's poll just now) while the gate
            // is closed: the new assignment is paused too.
            return Poll::Ready(Woken::Room);
        }
        if !stopping && !self.paused.is_empty() {
            // A settle that makes room for a paused partition wakes us to resume it (not
            // while stopping: nothing is taken in then, and the loop runs on until its
            // records in flight end).
            self.state.intake.blocked(context.waker());
            // Registered, then looked at again: a settle since `resume_paused` last looked is
            // not missed.
            if self.resume_paused() {
                return Poll::Ready(Woken::Room);
            }
        }
        if !stopping {
            if self.has_room() && self.partitions.any_ready(self.state, context) {
                return Poll::Ready(Woken::Records);
            }
            if stopped.poll(context).is_ready() {
                return Poll::Ready(Woken::Stop);
            }
        }
        self.state.abandon_waker.register(context.waker());
        if self.state.is_abandoned() {
            return Poll::Ready(Woken::Abandoned);
        }
        self.parked = true;
        Poll::Pending
    }

    /// Starts ready records while fewer than `max-concurrency` run. A record whose handling
    /// finishes at once (a handler that did not wait) is done with then and there.
    async fn start_ready(&mut self) {
        // When the record that last finished here ended, if it was settled in place: the next
        // one starts then, give or take the loop's own sub-microsecond work (one clock read a
        // record, not two).
        let mut clock = None;
        while self.waiting.has_ready() && !self.held_back() {
            // Before the record is taken: what runs during a yield (a stop, the sink's gate
            // closing) is seen before it starts.
            let Some(started) = self.start_or_yield(clock.take()).await else {
                continue;
            };
            let job = self.job;
            let Some(place) = job.places.try_take() else {
                return;
            };
            let Some((slot, taken)) = self.waiting.next_ready() else {
                return;
            };
            if self.state.stop_requested() || taken.assigned.tracker.is_revoked() {
                // Revoked meanwhile: the partition's next owner (maybe us again) reads it
                // from the committed offset.
                self.waiting.release(slot);
                self.let_go(&taken.assigned);
                taken.give_up();
                continue;
            }
            taken.assigned.tracker.started(taken.tracked);
            let mut handling: BoxFuture<'a, Finished> = match self.state.retry_delay {
                None => Box::pin(handle_record(job, taken, slot, place, started)),
                Some(delay) => Box::pin(handle_retry(job, taken, slot, place, started, delay)),
            };
            match poll_fn(|context| Poll::Ready(handling.as_mut().poll(context))).await {
                Poll::Ready(finished) => {
                    clock = finished.ended_at;
                    self.finished(finished);
                }
                Poll::Pending => self.in_flight.push(handling),
            }
        }
    }

    /// When the next record starts (now, or `now`: when the record before it ended), or `None`
    /// after yielding to the scheduler: the loop yields once it has run records for a time
    /// slice without waiting, or `SLICE_RECORDS` of them (the clock stands still when tokio's
    /// is paused, in tests), or when its handlers have spent the task's tokio budget. A
    /// handler that never waits would otherwise run a whole backlog without returning to the
    /// scheduler, starving the committer, the health server and the signal handler (on a
    /// current-thread runtime, or with as many busy channels as workers). Not a yield per 128 records, as spending tokio's budget per record
    /// would make it: for a fast handler that is every tenth of a millisecond, each yield
    /// waking another worker to steal the loop (13 % more CPU per record in P1's framework
    /// rounds, BENCHMARKS.md); for a slow one, every few seconds.
    async fn start_or_yield(
        &mut self,
        now: Option<tokio::time::Instant>,
    ) -> Option<tokio::time::Instant> {
        let now = now.unwrap_or_else(tokio::time::Instant::now);
        if std::mem::take(&mut self.parked) {
            // Waited since the last record: a new slice.
            self.slice_started = now;
            self.slice_records = 0;
        }
        self.slice_records += 1;
        if self.slice_records <= SLICE_RECORDS
            && now.duration_since(self.slice_started) < TIME_SLICE
            && tokio::task::coop::has_budget_remaining()
        {
            return Some(now);
        }
        // Deferred until the scheduler has looked at timers and I/O (the health server's
        // connections, the signal handler), then the loop goes on.
        tokio::task::yield_now().await;
        self.slice_started = tokio::time::Instant::now();
        self.slice_records = 0;
        None
    }

    /// Takes in the records that finished and the dead-letter writes that completed since the
    /// last look, without waiting: a loop that always has records to take must still free
    /// their slots and their room under `max-buffered-records` (and let commits pass them).
    fn collect_finished(&mut self) {
        while let Some(Some(finished)) = self.in_flight.next().now_or_never() {
            self.finished(finished);
        }
        while let Some(Some(assigned)) = self.settling.next().now_or_never() {
            self.let_go(&assigned);
        }
    }

    /// A record's handling finished: its slot goes to the next record waiting for it, and its
    /// settling (a dead-letter write) goes on without it.
    fn finished(&mut self, finished: Finished) {
        let Finished {
            slot,
            settling,
            assigned,
            ended_at: _,
        } = finished;
        self.waiting.release(slot);
        match settling {
            Some(mut settling) => {
                let waker = futures_util::task::noop_waker();
                // Most nacks (`ignore`, `fail`) settle at once; only a write waits.
                if settling
                    .as_mut()
                    .poll(&mut Context::from_waker(&waker))
                    .is_ready()
                {
                    self.let_go(&assigned);
                } else {
                    self.settling.push(Box::pin(async move {
                        settling.await;
                        assigned
                    }));
                }
            }
            None => self.let_go(&assigned),
        }
    }

    /// Takes in a batch from one partition's queue, in order.
    fn take_batch(&mut self, assigned: Arc<PartitionAcknowledger>) {
        let mut epoch = self.state.assignment_epoch();
        let mut batch = std::mem::take(&mut self.batch);
        let mut taken = 0;
        for record in batch.drain(..) {
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
                let reason = format!(
                    "{}[{}]: {}",
                    self.state.topic,
                    assigned.partition,
                    record.error_text()
                );
                self.consumer_error(&error, Some(&reason));
                continue;
            }
            self.take(HeldRecord::Queued(record), &assigned);
            taken += 1;
        }
        self.batch = batch;
        if taken > 0 {
            self.took(taken);
        }
    }

    /// Counts `records` just taken in as received, and publishes how many the loop holds.
    fn took(&mut self, records: u64) {
        self.state.metrics.received(records);
        self.state.held_records(self.held);
    }

    /// Takes in one record: tracked from now on (the committed offset stays before it until it
    /// is settled), and started when its slot and a place in flight are free. The caller then
    /// reports what it took with [`took`](Self::took).
    #[inline]
    fn take(&mut self, record: HeldRecord, assigned: &Arc<PartitionAcknowledger>) {
        // A retry topic's record gives its place back while it waits out its delay (as one
        // waiting for an in-process retry does): without a slot, the next record would start
        // waiting beside it and could be due first.
        let can_wait = self.state.retries.policy().is_enabled() || self.state.retry_delay.is_some();
        let slot = self.state.ordering.slot(
            self.state.max_concurrency,
            can_wait,
            assigned.partition,
            record.key(),
        );
        let tracked = assigned.tracker.received(record.offset());
        // Counted and published by the caller, once for a batch.
        self.held += 1;
        assigned.loop_holds(true);
        self.waiting.admit(
            slot,
            Taken {
                record,
                assigned: assigned.clone(),
                tracked,
            },
        );
    }

    /// Pauses a partition whose records come through the main queue while the loop holds all
    /// it may: librdkafka then stops fetching it (and drops what it queued, to fetch it again
    /// from the position after the last record taken).
    fn pause(&mut self, partition: i32) {
        if self.paused.contains(&partition) {
            return;
        }
        let mut list = rdkafka::TopicPartitionList::new();
        list.add_partition(&self.state.topic, partition);
        match self.consumer.pause(&list) {
            Ok(()) => self.paused.push(partition),
            Err(error) => {
                tracing::warn!(channel = %self.state.channel, partition, %error, "cannot pause a partition read through the main queue")
            }
        }
    }

    /// Resumes the paused partitions that have room again: half the cap, in the loop and in
    /// the partition, so that a resume is worth the fetch it starts. Whether it resumed any.
    fn resume_paused(&mut self) -> bool {
        // Half of what the partition may take at most: its share, when smaller than the cap.
        let half = self
            .state
            .max_buffered_records
            .min(self.state.partition_share())
            .div_ceil(2);
        if self.paused.is_empty() || self.room() < half {
            return false;
        }
        let mut list = rdkafka::TopicPartitionList::new();
        let state = self.state;
        let partitions = &mut self.partitions;
        self.paused.retain(|&partition| {
            let room = partitions
                .get(state, partition)
                .map_or(half, |assigned| partition_room(state, assigned));
            if room < half {
                return true;
            }
            list.add_partition(&state.topic, partition);
            false
        });
        if list.count() == 0 {
            return false;
        }
        // A partition revoked meanwhile is not paused in its next assignment: an error here
        // changes nothing.
        let _ = self.consumer.resume(&list);
        true
    }

    /// Serves what the main queue holds now, without waiting.
    fn serve_main_queue_now(&mut self) {
        while let Some(event) = self.main_queue.next().now_or_never() {
            self.handle_event(event.expect("a Kafka message stream never ends"));
        }
    }

    fn handle_event(&mut self, event: KafkaResult<BorrowedMessage<'a>>) {
        match event {
            Ok(record) => {
                if self.state.stop_requested() {
                    // Stopping: not taken in, so not committed; read again after a restart.
                    return;
                }
                let Some(assigned) = self
                    .partitions
                    .get(self.state, rdkafka::Message::partition(&record))
                    .cloned()
                else {
                    // Left over from a revoked assignment: its next owner reads it again.
                    return;
                };
                self.state.consuming();
                let partition = assigned.partition;
                self.take(HeldRecord::Polled(Box::new(record.detach())), &assigned);
                self.took(1);
                if !self.has_room() || partition_room(self.state, &assigned) == 0 {
                    self.pause(partition);
                }
            }
            Err(error) => {
                // An error event went through the context's error callback first, which logged
                // it with its reason; a consumer error of a partition read through the main
                // queue did not.
                let logged = self.consumer.context().errors.is_echo(&error);
                self.consumer_error(&error, (!logged).then_some(""));
            }
        }
    }

    /// `reason`: the error's text to log, or `None` when it was logged already.
    fn consumer_error(&self, error: &KafkaError, reason: Option<&str>) {
        if let KafkaError::PartitionEOF(_) = error {
            // The end of a partition (`enable.partition.eof`) is news, not an error.
            return;
        }
        if let Some(reason) = reason {
            self.consumer.context().errors.report(error, reason);
        }
        if !self.state.holds_assignment() {
            // Before the first assignment (or between a revoke and the next) an error, e.g. a
            // missing topic, is why we are not ready. Once one is held, even an empty one (a
            // member with more members than partitions in its group), a broker that does not
            // answer is the broker probe's to report, and it reports the broker back.
            self.state.not_ready(&error.to_string());
        } else if !is_unreachable_broker(error) {
            self.state
                .consumer_error(&format!("consumer error: {error}"));
        }
    }

    /// Whether another record may be taken from the client.
    #[inline]
    fn has_room(&self) -> bool {
        self.room() > 0
    }

    #[inline]
    fn room(&self) -> usize {
        if self.held_back() {
            return 0;
        }
        self.state.max_buffered_records.saturating_sub(self.held)
    }

    /// Whether the outgoing sink holds this channel back (its store is down).
    #[inline]
    fn held_back(&self) -> bool {
        self.gate.as_ref().is_some_and(IntakeGate::is_closed)
    }

    /// Pauses the assignment when the sink closes its gate, so librdkafka stops fetching what
    /// could not be written anyway, and resumes it when the gate opens. A rebalance while
    /// closed pauses the new assignment too; the resume covers every partition paused, since
    /// librdkafka keeps a partition paused by the application across a revoke and a new
    /// assignment until it is resumed.
    fn follow_gate(&mut self) {
        let held_back = self.held_back();
        let epoch = self.state.assignment_epoch();
        // Whatever comes of it: a pause that fails is not tried again on every wake-up.
        self.gate_followed_closed = held_back;
        self.gate_followed_epoch = epoch;
        match (&self.paused_by_gate, held_back) {
            (None, false) => return,
            (Some((paused_at, _)), true) if *paused_at == epoch => return,
            _ => {}
        }
        let assignment = match self.consumer.assignment() {
            Ok(assignment) => assignment,
            Err(error) => {
                tracing::warn!(channel = %self.state.channel, %error, "cannot read the assignment to pause or resume it for the sink");
                return;
            }
        };
        if held_back {
            if let Err(error) = self.consumer.pause(&assignment) {
                tracing::warn!(channel = %self.state.channel, %error, "cannot pause the assignment for the sink's outage");
                return;
            }
            let mut paused = self
                .paused_by_gate
                .take()
                .map_or_else(TopicPartitionList::new, |(_, paused)| paused);
            for element in assignment.elements() {
                add_once(&mut paused, element.topic(), element.partition());
            }
            if self.paused_by_gate.is_none() {
                tracing::info!(channel = %self.state.channel, topic = %self.state.topic, "the outgoing sink's outage pauses fetching");
            }
            self.paused_by_gate = Some((epoch, paused));
        } else if let Some((_, mut paused)) = self.paused_by_gate.take() {
            // Partitions paused at their cap resume too (one still at its cap is paused again
            // with its next record), revoked ones included: librdkafka keeps a partition paused
            // across a revoke and a new assignment until it is resumed.
            for partition in self.paused.drain(..) {
                add_once(&mut paused, &self.state.topic, partition);
            }
            for element in assignment.elements() {
                add_once(&mut paused, element.topic(), element.partition());
            }
            if let Err(error) = self.consumer.resume(&paused) {
                tracing::warn!(channel = %self.state.channel, %error, "cannot resume every partition paused for the sink's outage");
            }
            tracing::info!(channel = %self.state.channel, "the outgoing sink answers again; fetching resumes");
        }
    }

    /// A record of `assigned` is let go: settled, or given up.
    #[inline]
    fn let_go(&mut self, assigned: &PartitionAcknowledger) {
        self.held -= 1;
        assigned.loop_holds(false);
        self.state.held_records(self.held);
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
    Finished(Finished),
    Settled(Arc<PartitionAcknowledger>),
    Event(KafkaResult<BorrowedMessage<'a>>),
    Records,
    Room,
    Stop,
    Abandoned,
}

/// Waits until every record whose settle handle left the loop (a processor's output being
/// delivered, a message kept by user code) is settled, or the timeout passes, or shutdown
/// abandons them.
async fn drain(state: &ChannelState, deadline: Instant) {
    while state
        .partitions()
        .iter()
        .any(|assigned| assigned.tracker.has_outstanding())
    {
        if state.is_abandoned() {
            return;
        }
        if Instant::now() >= deadline {
            state.warn_unsettled_stay_uncommitted(SHUTDOWN_STOPPED_WAITING);
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

    /// Fills `batch` with up to `limit` records from the next partition queue that has records
    /// and room (see [`partition_room`]); returns that partition's acknowledger, or `None` when
    /// no queue has both.
    fn take_batch(
        &mut self,
        state: &Arc<ChannelState>,
        batch: &mut Vec<QueuedRecord>,
        limit: usize,
    ) -> Option<Arc<PartitionAcknowledger>> {
        self.refresh(state);
        for _ in 0..self.queues.len() {
            let queue = self.queues[self.next_queue % self.queues.len()].clone();
            self.next_queue = self.next_queue.wrapping_add(1);
            let assigned = self.get(state, queue.partition).cloned();
            let room = assigned
                .as_ref()
                .map_or(limit, |assigned| limit.min(partition_room(state, assigned)));
            if room == 0 || queue.take_batch(batch, room) == 0 {
                continue;
            }
            state.consuming();
            match assigned {
                Some(assigned) => return Some(assigned),
                // Not assigned (any more): untracked, so never committed; read again by the
                // partition's next owner.
                None => batch.clear(),
            }
        }
        None
    }

    /// Whether any partition queue has records to take now, the queues of a new assignment
    /// included. A queue whose partition is at its cap does not count: settling one of its
    /// records wakes the loop through `intake` (registered here for that).
    fn any_ready(&mut self, state: &ChannelState, context: &Context<'_>) -> bool {
        self.refresh(state);
        let ready = |cache: &mut Self| {
            let mut at_cap = false;
            for queue in cache.queues.clone() {
                if queue.is_empty() {
                    continue;
                }
                match cache.get(state, queue.partition) {
                    Some(assigned) if partition_room(state, assigned) == 0 => at_cap = true,
                    _ => return (true, at_cap),
                }
            }
            (false, at_cap)
        };
        match ready(self) {
            (true, _) => true,
            (false, false) => false,
            // Registered, then looked at again: a settle in between is not missed.
            (false, true) => {
                state.intake.blocked(context.waker());
                ready(self).0
            }
        }
    }
}

/// Adds a partition to a list unless it is there already.
fn add_once(list: &mut TopicPartitionList, topic: &str, partition: i32) {
    if list.find_partition(topic, partition).is_none() {
        list.add_partition(topic, partition);
    }
}

/// How many times `max-buffered-records` a partition may have taken and not committable, its
/// settled records waiting behind an unsettled one included. Those settled records hold no
/// memory but an offset each; bounded so that one record stuck in a slow handler, a retry or
/// a dead-letter write cannot let its partition run on without end (the tracker growing, and
/// everything after it read again after a crash). Not `max-buffered-records` itself: a
/// dead-letter write takes at least the producer's `linger.ms` (5 ms), and a partition read at
/// 400,000 records a second would otherwise stand still behind each one once 1,024 records
/// were settled after it (BENCHMARKS.md, "p2: settled records behind a dead letter").
pub(crate) const OPEN_PER_BUFFERED_RECORD: usize = 8;

/// How many more records of a partition may be taken. It holds at most `max-buffered-records`
/// unsettled (whether in the loop or delivered by a sink, or kept by the application), and at
/// most `OPEN_PER_BUFFERED_RECORD` times that taken and not yet committable, so that one record
/// stuck in a retry, a dead-letter write or a slow handler cannot make the partition's settled
/// records pile up without end behind it. And at most its share of `max-buffered-records` in
/// the loop (waiting to start, running, waiting for a retry or being dead-lettered;
/// `ChannelState::partition_share`), so one partition cannot take the places of the others.
/// (`lag_watch.rs` says when a partition stands still at any of these caps.)
fn partition_room(state: &ChannelState, assigned: &PartitionAcknowledger) -> usize {
    let unsettled = state
        .max_buffered_records
        .saturating_sub(assigned.tracker.unsettled());
    let behind = state
        .max_buffered_records
        .saturating_mul(OPEN_PER_BUFFERED_RECORD)
        .saturating_sub(assigned.tracker.open());
    let share = state
        .partition_share()
        .saturating_sub(assigned.held_by_loop());
    unsettled.min(behind).min(share)
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
