//! One record's handling, from the handler call to its settle: the future the consumer loop
//! keeps in flight for it.
//!
//! A transient failure (see `retry/`) calls the handler again after a backoff, with the same
//! record decoded again; the record keeps its slot while it waits, and the wait ends early,
//! leaving the record uncommitted, when its partition is revoked or the channel stops.
//!
//! It ends in two steps. While the handler runs (and a processor's output is handed to the
//! sink) the record holds its ordering slot, so the next record of its partition or key waits.
//! A nack's dead-letter write then goes on without the slot: later records of the partition
//! are handled meanwhile, and commits still wait for it (the committed offset never passes an
//! unsettled record).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use futures_util::future::BoxFuture;

use super::acknowledger::PartitionAcknowledger;
use super::channel_state::ChannelState;
use super::dead_letter::{Original, OriginalRecord};
use super::metadata::KafkaMetadata;
use super::record::{FetchedRecord, HeldRecord};
use super::retry_topic::{now_ms, wait_before_retry};
use crate::commit::TrackedOffset;
use crate::concurrency::{Place, Places, Slot};
use crate::handler::{Handled, Handler, Incoming, SettleSource};
use crate::metadata::Metadata;
use crate::outgoing::{forward, Sink};
use crate::retry::Attempt;
use crate::settle::{Acknowledger, SettleHandle, Token};

/// What every record of a channel is handled with.
pub(crate) struct RecordJob<H> {
    pub(crate) state: Arc<ChannelState>,
    /// The places among `max-concurrency`: a record holds one while its handler runs (and a
    /// processor's output is handed over), not while it waits for its next attempt. Here, not
    /// in the shared channel state, because only the consumer loop's task may take and give
    /// back places (see `Places`): the job is the loop's own, lent to its records' futures.
    pub(crate) places: Places,
    pub(crate) handler: Arc<H>,
    pub(crate) sink: Option<Arc<dyn Sink>>,
    /// Whether the user function reads metadata, and whether a processor's output needs it.
    reads_metadata: bool,
    passes_metadata_on: bool,
    /// Whether the original is copied for a dead letter written after the loop let the record
    /// go (a settle handle's nack); a verdict's dead letter is written from the record in hand.
    keep_originals: bool,
}

impl<H: Handler> RecordJob<H> {
    pub(crate) fn new(
        state: Arc<ChannelState>,
        handler: Arc<H>,
        sink: Option<Arc<dyn Sink>>,
    ) -> Self {
        Self {
            places: Places::new(state.max_concurrency),
            reads_metadata: handler.reads_metadata(),
            passes_metadata_on: handler.passes_metadata_on(),
            keep_originals: state.dead_letter.is_some() && handler.hands_out_settle(),
            state,
            handler,
            sink,
        }
    }
}

/// A record taken in by the loop, with its place in its partition's tracker.
pub(crate) struct Taken {
    pub(crate) record: HeldRecord,
    pub(crate) assigned: Arc<PartitionAcknowledger>,
    pub(crate) tracked: TrackedOffset,
}

impl Taken {
    /// The record will not run (shutdown, or its partition was revoked): uncommitted, it is
    /// read again by the partition's next owner or after a restart.
    pub(crate) fn give_up(self) {
        self.assigned.tracker.given_up(self.tracked.offset);
    }
}

/// What a record's handling left for the loop: the slot to free, the rest of its settling, and
/// its partition (whose share of the loop it held).
pub(crate) struct Finished {
    pub(crate) slot: Option<Slot>,
    pub(crate) settling: Option<BoxFuture<'static, ()>>,
    pub(crate) assigned: Arc<PartitionAcknowledger>,
    /// When the handling ended, for a record settled in place (an ack, or nothing left for the
    /// loop to settle): the loop starts the next record with it rather than reading the clock
    /// again.
    pub(crate) ended_at: Option<Instant>,
}

/// Handles one record, started at `first_attempt_at` (the loop has the time for its slice):
/// calls the handler (again, after a backoff, while a failure is transient and `retry.*`
/// allows) and settles what it came to.
pub(crate) async fn handle_record<'a, H: Handler>(
    job: &'a RecordJob<H>,
    taken: Taken,
    slot: Option<Slot>,
    place: Place<'a>,
    first_attempt_at: Instant,
) -> Finished {
    let mut place = Some(place);
    let Taken {
        mut record,
        assigned,
        tracked,
    } = taken;
    let token = Token::from(tracked);
    // Entered around each handler call, so what the handler logs (and a tracing-opentelemetry
    // layer) knows which record it was. At DEBUG: a subscriber at INFO pays nothing for it.
    let span = tracing::debug_span!(
        "record",
        channel = %job.state.channel,
        topic = %job.state.topic,
        partition = assigned.partition,
        offset = tracked.offset,
    );
    #[cfg(feature = "opentelemetry")]
    super::trace_context::continue_trace(&span, &record);
    let mut attempt = 1;
    loop {
        let handling = {
            let settle_handle = || SettleHandle::for_attempt(assigned.clone(), token, attempt);
            let incoming = incoming(
                job,
                &assigned,
                &record,
                attempt,
                SettleSource(&settle_handle),
            );
            job.handler.handle(incoming)
        };
        // A disabled span (the common case: DEBUG is off) is not entered around every poll.
        let handled = {
            let _running = assigned.call_running();
            if span.is_disabled() {
                handling.await
            } else {
                handling.instrument(span.clone()).await
            }
        };
        let failure = match &handled {
            Handled::Verdict(Err(failure)) => Some(failure),
            Handled::Nack(rejected) => Some(&rejected.1),
            _ => None,
        };
        let retry = failure.and_then(|failure| {
            let elapsed = first_attempt_at.elapsed();
            let delay = job.state.retries.delay_after(failure, attempt, elapsed)?;
            Some((failure, delay))
        });
        if let Some((failure, delay)) = retry {
            tracing::warn!(channel = %job.state.channel, partition = assigned.partition, offset = tracked.offset,
                attempt, delay_ms = delay.as_millis() as u64, reason = %failure, "handler failed; retrying after a backoff");
            if let Handled::Nack(rejected) = handled {
                // The next attempt makes its own handle and settles through it.
                rejected.0.disarm();
            }
            // Boxed: a retry is rare, and its timer would otherwise enlarge every record's future.
            let waited = wait_out(job, &assigned, tracked, record, place.take(), delay);
            let Some((waited, got_place)) = Box::pin(waited).await else {
                return Finished {
                    slot,
                    settling: None,
                    assigned,
                    ended_at: None,
                };
            };
            (record, place) = (waited, Some(got_place));
            job.state.metrics.retried();
            attempt += 1;
            continue;
        }
        let ended_at = Instant::now();
        job.state
            .metrics
            .processing_time(ended_at - first_attempt_at);
        // Only then is the record done with when this returns: a processor's hand-over to its
        // sink and a nack's settle (a log line, a dead-letter copy) still take time after it.
        let settles_in_place = matches!(handled, Handled::Verdict(Ok(())) | Handled::Done);
        let settling: Option<BoxFuture<'static, ()>> = match handled {
            // A subscriber's ack, the common case, settles in place.
            Handled::Verdict(Ok(())) => {
                assigned.ack(token);
                None
            }
            Handled::Verdict(Err(failure)) => {
                let (assigned, state) = (assigned.clone(), job.state.clone());
                Some(Box::pin(async move {
                    // Out of the fetch buffer while the write waits for the broker.
                    let record = record.detached(&state.topic);
                    let in_hand = Original::from(&record);
                    assigned
                        .reject(tracked, failure, Some(in_hand), attempt)
                        .await
                }))
            }
            // Handed to the sink while the slot is held, so outputs keep their inputs' order.
            Handled::Output(mut output) => {
                if output.metadata().get::<KafkaMetadata>().is_none() {
                    // A whole-message processor's output made with `Message::new`: it still
                    // continues its input's trace and keeps its key, as every output does.
                    output
                        .metadata_mut()
                        .insert(kafka_metadata(job, &assigned, &record));
                }
                // Boxed: only processors come here, and a subscriber's future stays smaller.
                Box::pin(forward(job.sink.as_ref(), *output)).await;
                None
            }
            Handled::Nack(rejected) => {
                let (settle, failure) = *rejected;
                Some(settle.nack(failure))
            }
            Handled::Done => None,
        };
        return Finished {
            slot,
            settling,
            assigned,
            ended_at: settles_in_place.then_some(ended_at),
        };
    }
}

/// Handles a record read from one of the channel's retry topics once the topic's `delay` has
/// passed since it was written. Until then it waits, as a retry in process does, holding its
/// ordering slot: later records of its partition were written later and are due later. (Apart
/// from [`handle_record`], so that other channels' records do not carry the wait's state.)
pub(crate) async fn handle_retry<'a, H: Handler>(
    job: &'a RecordJob<H>,
    taken: Taken,
    slot: Option<Slot>,
    place: Place<'a>,
    started: Instant,
    delay: Duration,
) -> Finished {
    let wait = wait_before_retry(taken.record.timestamp(), delay, now_ms());
    if wait.is_zero() {
        return handle_record(job, taken, slot, place, started).await;
    }
    let Taken {
        record,
        assigned,
        tracked,
    } = taken;
    let waited = wait_out(job, &assigned, tracked, record, Some(place), wait).await;
    let Some((record, place)) = waited else {
        return Finished {
            slot,
            settling: None,
            assigned,
            ended_at: None,
        };
    };
    let taken = Taken {
        record,
        assigned,
        tracked,
    };
    // The delay is neither processing time nor part of `retry.max-duration.ms`.
    handle_record(job, taken, slot, place, Instant::now()).await
}

/// Waits `delay` before the record's next attempt: copied out of librdkafka's fetch buffer
/// (which it would otherwise keep alive, with every other record of that fetch, for as long as
/// it waits), its place among max-concurrency going to another record meanwhile. Returns the
/// record and its new place; `None` when the wait ended early because its partition was revoked
/// or the channel is stopping: given up then, uncommitted, it is read again by the partition's
/// next owner or after the restart.
async fn wait_out<'a, H>(
    job: &'a RecordJob<H>,
    assigned: &PartitionAcknowledger,
    tracked: TrackedOffset,
    record: HeldRecord,
    place: Option<Place<'a>>,
    delay: Duration,
) -> Option<(HeldRecord, Place<'a>)> {
    let record = record.detached(&job.state.topic);
    drop(place);
    let Some(place) = wait_for_retry(job, assigned, tracked, delay).await else {
        assigned.tracker.given_up(tracked.offset);
        return None;
    };
    Some((record, place))
}

/// Waits `delay` before a retry, then for a place among `max-concurrency`; `None` when the
/// wait ended early because the record's partition was revoked or the channel is stopping.
/// Meanwhile the record counts as waiting (see [`WaitingForRetry`]).
async fn wait_for_retry<'a, H>(
    job: &'a RecordJob<H>,
    assigned: &PartitionAcknowledger,
    tracked: TrackedOffset,
    delay: Duration,
) -> Option<Place<'a>> {
    let _waiting = WaitingForRetry::new(assigned, tracked);
    let state = &job.state;
    let waited = async {
        tokio::time::sleep(delay).await;
        Some(job.places.take_for_retry().await)
    };
    tokio::select! {
        place = waited => place.filter(|_| !state.stop_requested() && !assigned.tracker.is_revoked()),
        _ = assigned.revoked() => None,
        _ = state.stopped() => None,
    }
}

/// A record waiting for its next attempt, for as long as this lives (its wait may also end by
/// the future being dropped, at an abandoned shutdown): the age watch does not count the wait
/// against it.
struct WaitingForRetry<'a> {
    assigned: &'a PartitionAcknowledger,
    tracked: TrackedOffset,
}

impl<'a> WaitingForRetry<'a> {
    fn new(assigned: &'a PartitionAcknowledger, tracked: TrackedOffset) -> Self {
        assigned.tracker.waiting_for_retry(tracked, true);
        Self { assigned, tracked }
    }
}

impl Drop for WaitingForRetry<'_> {
    fn drop(&mut self) {
        self.assigned.tracker.waiting_for_retry(self.tracked, false);
    }
}

/// The handler's view of a record. Metadata (with copies of key and headers) is built only
/// for handlers that read it and for processors' outputs; the original record is copied only
/// when a settle handle may nack it after the loop let it go.
#[inline]
fn incoming<'r, H>(
    job: &RecordJob<H>,
    assigned: &PartitionAcknowledger,
    record: &'r HeldRecord,
    attempt: u32,
    settle: SettleSource<'r>,
) -> Incoming<'r> {
    let offset = record.offset();
    let value = record.value();
    let key = || record.key().map(<[u8]>::to_vec);
    // Kept once, until the record is settled, whichever attempt settles it.
    if job.keep_originals && attempt == 1 {
        assigned.tracker.attach(
            offset,
            OriginalRecord {
                key: key(),
                value: value.map(<[u8]>::to_vec),
                headers: record.headers(),
                timestamp: record.timestamp(),
            },
        );
    }
    let metadata = |wanted: bool| {
        if !wanted {
            return Metadata::new();
        }
        Metadata::new().with(kafka_metadata(job, assigned, record))
    };
    let mut for_handler = metadata(job.reads_metadata);
    if job.reads_metadata {
        for_handler.insert(Attempt(attempt));
    }
    Incoming {
        value,
        metadata: for_handler,
        for_output: metadata(job.passes_metadata_on),
        settle,
    }
}

/// The record's coordinates, key and headers, as a handler and a processor's output see them.
fn kafka_metadata<H>(
    job: &RecordJob<H>,
    assigned: &PartitionAcknowledger,
    record: &HeldRecord,
) -> KafkaMetadata {
    KafkaMetadata {
        topic: job.state.topic.clone(),
        partition: assigned.partition,
        offset: record.offset(),
        timestamp: record.timestamp(),
        key: record.key().map(<[u8]>::to_vec),
        headers: record.headers(),
    }
}
