//! The Cosmos DB sink: each outgoing message becomes one point write (upsert, create or
//! delete). Writes of one document run one at a time in record order; requests for different
//! documents run side by side, up to `max-concurrency`. A message is acked once Cosmos DB
//! answered 2xx, so its input record is committed only once the document is durably stored.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use azure_data_cosmos::clients::ContainerClient;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::sync::Semaphore;

use super::answer::{judge, refused_for_the_record, FailedWrite};
use super::document::{DocumentShape, Operation, Write};
use super::document_order::DocumentOrder;
use super::outage::Outage;
use crate::config::OnOutage;
use crate::failure::Failure;
use crate::health::HealthRegistry;
use crate::intake_gate::IntakeGate;
use crate::metrics::{AnswerClass, CosmosMetrics, SinkMetrics};
use crate::outgoing::{settle_by_delivery, Delivery, Enqueued, OutgoingMessage, Sink};
use crate::retry::RetryPolicy;
use crate::settle::SettleHandle;

pub(crate) struct CosmosSink {
    pub(super) shared: Arc<Shared>,
    /// The task of the idle probe (`idle_probe.rs`), which ends with the sink.
    idle_probe: tokio::task::AbortHandle,
}

pub(crate) struct Shared {
    pub(crate) channel: String,
    pub(crate) container: ContainerClient,
    pub(crate) shape: DocumentShape,
    pub(crate) retry: RetryPolicy,
    pub(crate) on_outage: OnOutage,
    pub(crate) outage: Outage,
    pub(crate) health: HealthRegistry,
    pub(crate) metrics: SinkMetrics,
    pub(crate) cosmos_metrics: CosmosMetrics,
    /// Room for the messages handed over and not yet written or given up ([`room_for`]):
    /// taken when a message is enqueued, so a full sink holds its processors back.
    pub(crate) room: Arc<Semaphore>,
    /// Requests in flight (`max-concurrency`): a write holds one only while its request runs,
    /// not while it waits for its document's turn, backs off or waits out a pause, so that
    /// other documents' writes go on meanwhile.
    pub(crate) requests: Semaphore,
    pub(crate) max_concurrency: usize,
    pub(crate) order: Arc<DocumentOrder>,
    /// Set by an outage under `on-outage = fail`: no write starts any more.
    pub(crate) failed: AtomicBool,
}

/// The fewest failures in a row that were plainly a document's own (see `Shared::deliver`)
/// that send it to the failure strategy, with few retries too: with none, the answer that ended
/// a pause and one more failure would be enough, and an outage that comes and goes can look so.
const MIN_OWN_FAILURES: u32 = 3;

/// How many messages a sink of `max_concurrency` takes in: twice as many as it may have
/// requests in flight. The room beyond `max_concurrency` lets other documents be written while
/// writes back off (at `max-concurrency` 1 too): their answers are what tells a document that
/// fails on its own (a 408 or a 5xx for it alone) from Cosmos DB failing every write, which
/// otherwise looks like an outage and pauses the channel. A write waiting for its document's
/// turn holds room but no request, so the write it waits for always gets its request back.
pub(crate) fn room_for(max_concurrency: usize) -> usize {
    max_concurrency.saturating_mul(2)
}

/// A write counted as being made (`Outage::started_writing`) until `done` or its drop, owned
/// by its delivery (whose one handle on the sink it is).
struct BeingMade {
    shared: Arc<Shared>,
    counted: bool,
}

impl BeingMade {
    fn new(shared: Arc<Shared>) -> Self {
        shared.outage.started_writing();
        Self {
            shared,
            counted: true,
        }
    }

    fn done(&mut self) {
        if std::mem::take(&mut self.counted) {
            self.shared.outage.stopped_writing();
        }
    }
}

impl Drop for BeingMade {
    fn drop(&mut self) {
        self.done();
    }
}

/// How a write ended.
enum Outcome {
    Written,
    /// Cosmos DB rejected the record, or its retries ran out: the inbound failure strategy.
    Rejected(Failure),
    /// Not written and left unsettled, so its record stays uncommitted and is read again: the
    /// channel failed (`on-outage = fail`, for the restart the failed liveness asks for), or
    /// the record's partition was revoked (its new owner writes it).
    Abandoned(Failure),
}

impl CosmosSink {
    /// Must be called within a tokio runtime: it starts the sink's idle probe.
    pub(crate) fn new(shared: Shared) -> Self {
        let shared = Arc::new(shared);
        let idle_probe = tokio::spawn(super::idle_probe::probe_while_nobody_writes(shared.clone()))
            .abort_handle();
        Self { shared, idle_probe }
    }
}

impl Drop for CosmosSink {
    fn drop(&mut self) {
        self.idle_probe.abort();
    }
}

impl Sink for CosmosSink {
    // The returned future resolves once the message has room (backpressure), to the write
    // under way (resolving once Cosmos DB answered for good) or, at max-concurrency 1 with the
    // answer at hand, to its outcome.
    fn enqueue(&self, message: OutgoingMessage) -> BoxFuture<'_, Enqueued> {
        Box::pin(async move {
            let handed_over = Instant::now();
            let (payload, metadata, settle) = message.into_parts();
            let shared = &self.shared;
            let write = match shared.shape.prepare(payload, &metadata) {
                Ok(write) => write,
                Err(failure) => {
                    shared.metrics.delivered(false, handed_over.elapsed());
                    return Enqueued::Delivering(Box::pin(settle_by_delivery(
                        settle,
                        Err(failure),
                    )));
                }
            };
            let room = shared
                .room
                .clone()
                .acquire_owned()
                .await
                .expect("the room is never closed");
            let mut turn = shared.order.take_turn(write.identity);
            // Being made from its turn on, its wait for the document's earlier write included:
            // if that write leaves a pause without an answer, this one is left to probe, and the
            // gate must not let records in as if no write were left (see `nobody_probes`).
            let mut being_made = BeingMade::new(shared.clone());
            let one_at_a_time = shared.max_concurrency == 1;
            let mut delivery: Delivery = Box::pin(async move {
                turn.wait().await;
                let outcome = being_made.shared.deliver(&write, settle.as_ref()).await;
                drop(turn);
                being_made.done();
                drop(room);
                let shared = &being_made.shared;
                match outcome {
                    Outcome::Written => {
                        shared.metrics.delivered(true, handed_over.elapsed());
                        settle_by_delivery(settle, Ok(())).await
                    }
                    Outcome::Rejected(failure) => {
                        shared.metrics.delivered(false, handed_over.elapsed());
                        settle_by_delivery(settle, Err(failure)).await
                    }
                    // Neither sent nor failed: the record is read and written again (its new
                    // owner, or this service after the restart its failed liveness asks for).
                    Outcome::Abandoned(failure) => {
                        if let Some(settle) = settle {
                            settle.disarm();
                        }
                        Err(failure)
                    }
                }
            });
            // One request at a time: the processor's next record would wait for this write's
            // request anyway, so it starts here, and a write that ends in its first poll (an
            // answer at hand) costs no task. Above 1 it starts in a task of its own, so that
            // writes run side by side on all workers.
            if one_at_a_time {
                // A panic in the SDK must not unwind into the processor's loop: the delivery
                // is dropped as its task would have been, which nacks its record.
                let first = std::future::poll_fn(|context| {
                    Poll::Ready(catch_unwind(AssertUnwindSafe(|| {
                        delivery.as_mut().poll(context)
                    })))
                })
                .await;
                match first {
                    Ok(Poll::Ready(outcome)) => return Enqueued::Delivered(outcome),
                    Ok(Poll::Pending) => {}
                    Err(panic) => {
                        drop(delivery);
                        return Enqueued::Delivered(Err(Failure::from_panic_in(
                            panic,
                            "the Cosmos DB write",
                        )));
                    }
                }
            }
            Enqueued::Delivering(delivery)
        })
    }

    fn flush(&self, timeout: Duration) -> BoxFuture<'static, ()> {
        // Shutting down: writes abandoned now must not set the idle probe going (an emitter
        // kept after the shutdown would keep the sink, and the probe, alive).
        self.idle_probe.abort();
        let shared = self.shared.clone();
        Box::pin(async move {
            let room = room_for(shared.max_concurrency);
            let all = u32::try_from(room).unwrap_or(u32::MAX);
            let drained =
                tokio::time::timeout(timeout, shared.room.clone().acquire_many_owned(all)).await;
            if drained.is_err() {
                let left = room - shared.room.available_permits();
                tracing::warn!(channel = %shared.channel, writes = left, "shutdown: Cosmos DB writes still in flight are abandoned; their records stay uncommitted");
            }
        })
    }

    fn intake_gate(&self) -> Option<IntakeGate> {
        Some(self.shared.outage.gate.clone())
    }
}

impl Shared {
    /// Writes until Cosmos DB takes the write, rejects it for good, or the retries run out.
    /// The caller counts the write as being made (`Outage::started_writing`) meanwhile.
    async fn deliver(&self, write: &Write, settle: Option<&SettleHandle>) -> Outcome {
        // Set at the first request (again after an outage).
        let mut started = Instant::now();
        // The answers to all writes at this write's first failure (again after an outage): only
        // answers after it say Cosmos DB was up while this write failed. One that came while
        // its first request was out may have come before an outage began.
        let mut answers_at_first_failure = 0;
        let mut attempts = 0;
        // Whether this write probed a pause or paused the channel, since its tries last started:
        // its failures during an outage do not count against the record once it is over.
        let mut in_an_outage = false;
        // Failures in a row that were this document's own: a 408 or a 5xx other than 503 to an
        // ordinary request (not a probe: in a pause held for an unavailable partition, that
        // partition may answer 500 while others answer), with other writes answered and none
        // failed since this write's previous failure (so never its first: at an outage's
        // onset, writes answered just before it say nothing; and in an outage that comes and
        // goes, other writes fail too). Unlike `attempts`, an outage does not give them back: a
        // document that fails on its own while everything else is written must not pause and
        // resume the channel for ever (as each of its failures does with
        // `outage.threshold = 1`), its retries coming back with every resume.
        let mut own_failures = 0;
        // The answers to all writes, and this write's number among all failures, at its
        // previous failure.
        let mut at_last_failure: Option<(u64, u64)> = None;
        // Set once this record's retries ran out and it paused the channel: the pause then
        // waits for this record's own write (see `Outage::hold`).
        let mut hold = None;
        loop {
            if let Some(given_up) = self.given_up(settle) {
                return given_up;
            }
            // While paused, one write at a time probes; the others wait for the outcome.
            let probe_turn = if self.outage.is_paused() {
                let _waiting = self.outage.gate.write_waits();
                Some(self.outage.probe_turn().await)
            } else {
                None
            };
            let paused = self.outage.is_paused();
            // The outage ended while this write waited for its turn to probe, probed, or
            // backed off from a probe: its retries start again.
            let waited_out_an_outage = (in_an_outage || probe_turn.is_some()) && !paused;
            let probing = probe_turn.is_some() && paused;
            let _probe_turn = if probing { probe_turn } else { None };
            if waited_out_an_outage {
                attempts = 0;
                in_an_outage = false;
            }
            if probing {
                in_an_outage = true;
            }
            let request = self
                .requests
                .acquire()
                .await
                .expect("the requests are never closed");
            // The wait for a request can be long (other writes' requests): what was looked at
            // before it may have changed. A write of a revoked partition made now could land
            // after its new owner's newer one; a failed channel starts no write; and a write
            // must not probe a pause that ended, or make an ordinary request in one that began.
            if let Some(given_up) = self.given_up(settle) {
                return given_up;
            }
            if self.outage.is_paused() != probing {
                drop(request);
                continue;
            }
            if attempts == 0 {
                // `retry.max-duration` counts from the first request, not from the wait for it.
                started = Instant::now();
            }
            attempts += 1;
            let answer = self.execute(write).await;
            drop(request);
            let (failure, retry_after, cosmos_is_down, unavailable) = match answer {
                Ok(()) => {
                    drop(hold.take());
                    self.outage.answered();
                    return Outcome::Written;
                }
                Err(FailedWrite::Permanent(failure)) => {
                    drop(hold.take());
                    self.outage.answered();
                    return Outcome::Rejected(failure);
                }
                // Not an answer: Cosmos DB may still be down, and a pause goes on.
                Err(FailedWrite::Refused(failure)) => return Outcome::Rejected(failure),
                // Throttling or unavailability says nothing about the record either: it is
                // never dead-lettered for it, however long it lasts, even while other
                // documents' partitions answer.
                Err(FailedWrite::Transient {
                    failure,
                    retry_after,
                    unavailable,
                }) => (failure, retry_after, unavailable, unavailable),
                Err(FailedWrite::Outage(failure)) => (failure, None, true, false),
            };
            let failed = self.outage.failed();
            let in_a_row = failed.in_a_row;
            let answers = self.outage.answers();
            if attempts == 1 {
                answers_at_first_failure = answers;
            }
            let alone_among_answers = at_last_failure
                .replace((answers, failed.number))
                .is_some_and(|(answers_then, number_then)| {
                    answers != answers_then && failed.number == number_then + 1
                });
            if !probing && !cosmos_is_down && alone_among_answers {
                own_failures += 1;
                if own_failures >= self.retry.max_attempts().max(MIN_OWN_FAILURES) {
                    return Outcome::Rejected(failure);
                }
            } else {
                own_failures = 0;
            }
            let delay = (!probing)
                .then(|| {
                    self.retry
                        .delay_before_retry(attempts, started.elapsed(), retry_after)
                })
                .flatten();
            if self.on_outage == OnOutage::DeadLetter {
                match delay {
                    Some(delay) => self.wait(delay).await,
                    None => return Outcome::Rejected(failure),
                }
                continue;
            }
            let retries_ran_out = !probing && delay.is_none();
            let retries_ran_out_in_silence =
                retries_ran_out && (cosmos_is_down || answers == answers_at_first_failure);
            if probing || in_a_row || retries_ran_out_in_silence {
                if self.on_outage == OnOutage::Fail {
                    self.fail(&failure);
                    return Outcome::Abandoned(failure);
                }
                // Only an unavailable partition holds the pause: a 408 or a 5xx may be this
                // document's own, and must not keep the channel paused for good (the first
                // answer to another write ends the pause, and its retries start again).
                if retries_ran_out && unavailable && hold.is_none() {
                    hold = Some(self.outage.hold(&write.partition_key));
                }
                self.outage.pause(failure.reason(), &write.partition_key);
                in_an_outage = true;
                let probe = self.outage.next_probe();
                self.wait(self.retry.delay_before_probe(probe, retry_after))
                    .await;
                continue;
            }
            match delay {
                Some(delay) => self.wait(delay).await,
                None => return Outcome::Rejected(failure),
            }
        }
    }

    /// A backoff: the feeding channels' age watch knows the wait is on purpose.
    async fn wait(&self, delay: Duration) {
        let _waiting = self.outage.gate.write_waits();
        tokio::time::sleep(delay).await;
    }

    /// One request, counted by its answer.
    async fn execute(&self, write: &Write) -> Result<(), FailedWrite> {
        let partition_key = write.partition_key.clone();
        let operation = match &write.operation {
            Operation::Upsert(_) => "upsert",
            Operation::Create(_) => "create",
            Operation::Delete => "delete",
        };
        let request = AssertUnwindSafe(async {
            match &write.operation {
                Operation::Upsert(document) => {
                    self.container
                        .upsert_item(partition_key, &write.id, document, None)
                        .await
                }
                Operation::Create(document) => {
                    self.container
                        .create_item(partition_key, &write.id, document, None)
                        .await
                }
                Operation::Delete => {
                    self.container
                        .delete_item(partition_key, &write.id, None)
                        .await
                }
            }
        });
        let Ok(result) = request.catch_unwind().await else {
            // A bug of the SDK's, on an answer it did not expect (an outage's) or on this very
            // document: judged as a 500 is, retried, and the record's own problem only if
            // other writes were answered meanwhile (see `deliver`), so neither a good record
            // dead-lettered at an outage nor a channel paused for good behind one document.
            // The panic's text went to stderr; it is not repeated in the reason, which could
            // then quote the document.
            self.cosmos_metrics
                .answered(AnswerClass::ServerError, false, 0.0);
            return Err(FailedWrite::Transient {
                failure: super::answer::cosmos_failure(format!(
                    "the Cosmos DB SDK panicked during the {operation} (its message is on stderr)"
                )),
                retry_after: None,
                unavailable: false,
            });
        };
        match result {
            Ok(response) => {
                let charge = response
                    .headers()
                    .request_charge()
                    .map_or(0.0, |charge| charge.value());
                self.cosmos_metrics
                    .answered(AnswerClass::Success, false, charge);
                Ok(())
            }
            Err(error) => {
                let code = u16::from(error.status().status_code());
                let headers = error.response().map(|response| response.headers());
                let charge = headers
                    .and_then(|headers| headers.request_charge)
                    .map_or(0.0, |charge| charge.value());
                let sub_status = error.status().sub_status().map(|sub| sub.value());
                let class = match (error.response().is_some(), code) {
                    // Refused by the SDK before it was sent: the record's, not the network's.
                    (false, 400) if refused_for_the_record(code, sub_status) => {
                        AnswerClass::ClientError
                    }
                    (false, _) => AnswerClass::Transport,
                    (true, 200..=299) => AnswerClass::Success,
                    (true, 400..=499) => AnswerClass::ClientError,
                    (true, _) => AnswerClass::ServerError,
                };
                self.cosmos_metrics.answered(class, code == 429, charge);
                match judge(
                    &error,
                    operation,
                    matches!(write.operation, Operation::Create(_)),
                ) {
                    None => Ok(()),
                    Some(failed) => Err(failed),
                }
            }
        }
    }

    /// `on-outage = fail`: the channel fails (liveness DOWN), once.
    fn fail(&self, failure: &Failure) {
        if !self.failed.swap(true, Ordering::SeqCst) {
            let reason = format!(
                "Cosmos DB outage with on-outage = fail: {}; records not written stay uncommitted",
                failure.reason()
            );
            tracing::error!(channel = %self.channel, "{reason}");
            self.health.fail(&self.channel, &reason);
            // Nothing more will be written: the feeding channels stop taking records too.
            self.outage.close_for_good();
        }
    }

    /// Why the write is no longer to be made, if so: the channel failed, or the record's
    /// partition was revoked (its new owner writes it).
    fn given_up(&self, settle: Option<&SettleHandle>) -> Option<Outcome> {
        if self.failed.load(Ordering::SeqCst) {
            return Some(Outcome::Abandoned(self.abandoned()));
        }
        settle.is_some_and(SettleHandle::is_stale).then(|| {
            Outcome::Abandoned(super::answer::cosmos_failure(
                "the record's partition was revoked before its write; its new owner writes it"
                    .into(),
            ))
        })
    }

    fn abandoned(&self) -> Failure {
        super::answer::cosmos_failure(format!(
            "the Cosmos DB channel {} failed on an outage; the write was not attempted",
            self.channel
        ))
    }
}

#[cfg(all(test, feature = "cosmos-embedded"))]
mod tests {
    use azure_core::http::StatusCode;
    use azure_data_cosmos::fault_injection::{
        CustomResponseBuilder, FaultInjectionConditionBuilder, FaultInjectionResultBuilder,
        FaultInjectionRule, FaultInjectionRuleBuilder, FaultOperationType,
    };
    use azure_data_cosmos::models::PartitionKey;

    use super::super::sink_on_emulator::{orders, sink_into, sink_with};
    use super::super::EmbeddedCosmos;
    use super::*;
    use crate::message::Message;
    use crate::metadata::Metadata;
    use crate::settle::{RevocableRecord, Token};

    /// Every upsert answered 500 after `delay`, `hits` times.
    fn internal_errors(delay: Duration, hits: u32) -> Arc<FaultInjectionRule> {
        upserts_answered(StatusCode::InternalServerError, delay, hits)
    }

    /// Every upsert answered `status` after `delay`, `hits` times.
    fn upserts_answered(status: StatusCode, delay: Duration, hits: u32) -> Arc<FaultInjectionRule> {
        let answer = FaultInjectionResultBuilder::new()
            .with_custom_response(CustomResponseBuilder::new(status).build())
            .with_delay(delay)
            .build();
        Arc::new(
            FaultInjectionRuleBuilder::new(format!("{status:?}"), answer)
                .with_condition(
                    FaultInjectionConditionBuilder::new()
                        .with_operation_type(FaultOperationType::UpsertItem)
                        .build(),
                )
                .with_hit_limit(hits)
                .build(),
        )
    }

    fn order(id: &str, settle: Option<SettleHandle>) -> OutgoingMessage {
        let json = format!(r#"{{"id":"{id}"}}"#).into_bytes();
        Message::from_parts(json, Metadata::default(), settle)
    }

    /// Hands `message` over and runs its delivery to its end.
    async fn written(sink: &CosmosSink, message: OutgoingMessage) -> Result<(), Failure> {
        match sink.enqueue(message).await {
            Enqueued::Delivering(delivery) => tokio::spawn(delivery).await.expect("delivery"),
            Enqueued::Delivered(outcome) => outcome,
        }
    }

    /// `a`'s write holds the one request of `max-concurrency` 1 for a second; `b` waits for
    /// it, and `meanwhile` runs 500 ms into that wait. Returns `b`'s outcome and whether `b`
    /// was written.
    async fn b_waits_for_a_request(
        on_outage: OnOutage,
        b_settle: Option<SettleHandle>,
        meanwhile: impl FnOnce(&Arc<Shared>) + Send + 'static,
    ) -> (Result<(), Failure>, bool) {
        let slow = internal_errors(Duration::from_secs(1), 1);
        let cosmos = EmbeddedCosmos::new().with_fault_rules(vec![slow.clone()]);
        let health = HealthRegistry::default();
        let sink = sink_into(&cosmos, &health, on_outage, 1).await;
        let Enqueued::Delivering(a) = sink.enqueue(order("a", None)).await else {
            panic!("a's request waits a second: its delivery goes on in a task");
        };
        let a = tokio::spawn(a);
        while slow.hit_count() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let shared = sink.shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            meanwhile(&shared);
        });
        let b = written(&sink, order("b", b_settle)).await;
        let b_written = orders(&cosmos)
            .await
            .read_item("b", "b", None)
            .await
            .is_ok();
        let _ = a.await;
        (b, b_written)
    }

    /// A write whose partition is revoked while it waits for a request is not made: the
    /// partition's new owner writes the record, and a late write of ours could land after its
    /// newer one.
    #[tokio::test(start_paused = true)]
    async fn a_write_revoked_while_it_waits_for_a_request_is_not_made() {
        let record = Arc::new(RevocableRecord::default());
        let settle = SettleHandle::new(record.clone(), Token::default());
        let (b, b_written) = b_waits_for_a_request(OnOutage::Pause, Some(settle), move |_| {
            record.revoke();
        })
        .await;
        let failure = b.expect_err("given up");
        assert!(failure.reason().contains("revoked"), "{failure:?}");
        assert!(!b_written, "b's write was not made");
    }

    /// Once the channel failed (`on-outage = fail`), a write waiting for a request is not made.
    #[tokio::test(start_paused = true)]
    async fn a_write_waiting_for_a_request_when_the_channel_fails_is_not_made() {
        let (b, b_written) = b_waits_for_a_request(OnOutage::Fail, None, |shared| {
            shared.fail(&crate::connectors::cosmos::answer::cosmos_failure(
                "Cosmos DB answered the upsert with 503".into(),
            ));
        })
        .await;
        let failure = b.expect_err("given up");
        assert!(
            failure.reason().contains("failed on an outage"),
            "{failure:?}"
        );
        assert!(!b_written, "b's write was not made");
    }

    /// Writes `w` against upserts that all fail with a 500, in a pause begun by another write
    /// when `paused_before` (`w` then probes it), else in the pause `w`'s own failures begin
    /// (three in a row, `outage.threshold`). Once `w` met `tries` failures, another write is
    /// answered, which ends the pause. Returns whether `w` was rejected before it met three
    /// more failures: it should not be, as its retries start again after an outage.
    async fn rejected_soon_after_the_outage(paused_before: bool, tries: u32) -> bool {
        let failing = internal_errors(Duration::ZERO, u32::MAX);
        let cosmos = EmbeddedCosmos::new().with_fault_rules(vec![failing.clone()]);
        let health = HealthRegistry::default();
        let sink = sink_into(&cosmos, &health, OnOutage::Pause, 4).await;
        let outage = &sink.shared.outage;
        // The other write is being made throughout (so the sink does not probe on its own).
        let other = outage.writing();
        if paused_before {
            let elsewhere = PartitionKey::from("x".to_owned());
            outage.pause("Cosmos DB answered the upsert with 500", &elsewhere);
        }
        let Enqueued::Delivering(w) = sink.enqueue(order("w", None)).await else {
            panic!("w's first try fails: its delivery goes on in a task");
        };
        let w = tokio::spawn(w);
        while failing.hit_count() < tries && !w.is_finished() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(!w.is_finished(), "w ended during the outage");
        assert!(outage.is_paused());
        outage.answered();
        assert!(
            !outage.is_paused(),
            "the other write's answer ended the pause"
        );
        while failing.hit_count() < tries + 3 && !w.is_finished() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let rejected = w.is_finished();
        if !rejected {
            // Three failures in a row paused again, and `w` probes: it is written once Cosmos
            // DB answers.
            assert!(outage.is_paused());
            failing.disable();
            assert!(w.await.expect("delivery").is_ok(), "w is written");
        }
        drop(other);
        rejected
    }

    /// A write that probed a pause four times (one more than its retries) has its retries back
    /// once the outage is over.
    #[tokio::test(start_paused = true)]
    async fn a_write_that_probed_a_pause_has_its_retries_back_when_the_outage_ends() {
        assert!(!rejected_soon_after_the_outage(true, 4).await);
    }

    /// A write whose third failure in a row paused the channel has its retries back when the
    /// pause ends before its own probe.
    #[tokio::test(start_paused = true)]
    async fn a_write_that_paused_the_channel_has_its_retries_back_when_the_outage_ends() {
        assert!(!rejected_soon_after_the_outage(false, 3).await);
    }

    /// With `outage.threshold = 1` each failure of a document that fails on its own pauses
    /// the channel, and the next answer to another write ends the pause and gives the document
    /// its retries back. Its own failures still add up: it is dead-lettered once it met as
    /// many (after its first) as it has attempts, rather than pausing and resuming for ever.
    /// In an outage that comes and goes, where other writes fail too, it never is. Without
    /// retries it takes three such failures all the same (after its first): the answer that
    /// ended a pause and one more failure are not enough.
    #[tokio::test(start_paused = true)]
    async fn a_document_failing_on_its_own_cannot_pause_and_resume_for_ever() {
        // Its first failure, then one for each of its 4 attempts (3 retries).
        assert_eq!(
            dead_lettered_at_failure(false, 3).await,
            Some(5),
            "document"
        );
        assert_eq!(dead_lettered_at_failure(true, 3).await, None, "outage");
        assert_eq!(
            dead_lettered_at_failure(false, 0).await,
            Some(4),
            "no retries"
        );
        assert_eq!(
            dead_lettered_at_failure(true, 0).await,
            None,
            "no retries, outage"
        );
    }

    /// Writes `w` against upserts that all fail with a 500, at `outage.threshold = 1` and
    /// `max_retries`: each failure pauses, and the test resumes by another write's answer (after
    /// another write's failure too when `others_fail`). Returns the failure at which `w` was
    /// dead-lettered; if it was not after 20, `w` is written once the upserts succeed.
    async fn dead_lettered_at_failure(others_fail: bool, max_retries: u32) -> Option<u32> {
        let failing = internal_errors(Duration::ZERO, u32::MAX);
        let cosmos = EmbeddedCosmos::new().with_fault_rules(vec![failing.clone()]);
        let health = HealthRegistry::default();
        let sink = sink_with(&cosmos, &health, OnOutage::Pause, 4, 1, max_retries).await;
        let outage = &sink.shared.outage;
        let Enqueued::Delivering(w) = sink.enqueue(order("w", None)).await else {
            panic!("w's first try fails: its delivery goes on in a task");
        };
        let w = tokio::spawn(w);
        let mut pauses = 0;
        // Bounded: without the count of its own failures `w` never ends.
        while !w.is_finished() && failing.hit_count() < 20 {
            if outage.is_paused() {
                pauses += 1;
                if others_fail {
                    outage.failed();
                }
                // Another write is answered while `w` backs off from its probe.
                outage.answered();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if !w.is_finished() {
            failing.disable();
            assert!(w.await.expect("delivery").is_ok(), "w is written");
            return None;
        }
        let failure = w.await.expect("delivery").expect_err("dead-lettered");
        assert!(failure.reason().contains("500"), "{failure:?}");
        assert_eq!(
            pauses + 1,
            failing.hit_count(),
            "each failure but the last paused"
        );
        assert!(!outage.is_paused());
        Some(failing.hit_count())
    }

    /// In a pause, the write probing it leaves without an answer (its partition revoked) while
    /// the next write of the same document waits for its turn: that one is left to probe, so
    /// the gate stays closed (no records let in as if no write were left).
    #[tokio::test(start_paused = true)]
    async fn a_write_waiting_for_its_turn_is_left_to_probe_when_the_one_before_leaves() {
        let failing = internal_errors(Duration::from_secs(1), u32::MAX);
        let cosmos = EmbeddedCosmos::new().with_fault_rules(vec![failing.clone()]);
        let health = HealthRegistry::default();
        let sink = sink_into(&cosmos, &health, OnOutage::Pause, 4).await;
        let outage = &sink.shared.outage;
        outage.pause(
            "Cosmos DB answered the upsert with 500",
            &PartitionKey::from("w".to_owned()),
        );
        let record = Arc::new(RevocableRecord::default());
        let settle = SettleHandle::new(record.clone(), Token::default());
        let Enqueued::Delivering(first) = sink.enqueue(order("w", Some(settle))).await else {
            panic!("the probe's answer takes a second: its delivery goes on in a task");
        };
        let first = tokio::spawn(first);
        while failing.hit_count() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let Enqueued::Delivering(next) = sink.enqueue(order("w", None)).await else {
            panic!("the next write of `w` waits for its turn");
        };
        let next = tokio::spawn(next);
        record.revoke();
        let left = first.await.expect("delivery").expect_err("given up");
        assert!(left.reason().contains("revoked"), "{left:?}");
        while failing.hit_count() < 2 && !next.is_finished() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(outage.is_paused());
        assert!(
            outage.gate.is_closed(),
            "the next write probes: no records let in meanwhile"
        );
        failing.disable();
        assert!(next.await.expect("delivery").is_ok(), "written");
        assert!(!outage.is_paused() && !outage.gate.is_closed());
    }

    /// A document whose retries ran out on 503s holds the pause (its partition is unavailable);
    /// its probes then meet 500s, as a partition in failover answers, while other documents'
    /// writes are answered. Those failures are not its own: it is not dead-lettered, and it is
    /// written once its partition answers.
    #[tokio::test(start_paused = true)]
    async fn a_document_holding_a_pause_is_not_dead_lettered_for_its_probes_500s() {
        // Its four tries (three retries) meet 503, its probes 500.
        let unavailable = upserts_answered(StatusCode::ServiceUnavailable, Duration::ZERO, 4);
        let failing = internal_errors(Duration::ZERO, u32::MAX);
        let cosmos =
            EmbeddedCosmos::new().with_fault_rules(vec![unavailable.clone(), failing.clone()]);
        let health = HealthRegistry::default();
        // No run of failures in a row pauses: its retries running out does.
        let sink = sink_with(&cosmos, &health, OnOutage::Pause, 4, 100, 3).await;
        let outage = &sink.shared.outage;
        let Enqueued::Delivering(h) = sink.enqueue(order("h", None)).await else {
            panic!("h's first try fails: its delivery goes on in a task");
        };
        let h = tokio::spawn(h);
        let mut seen = 0;
        // Bounded: twelve probes, each after another write was answered.
        while failing.hit_count() < 12 && !h.is_finished() {
            if failing.hit_count() > seen {
                seen = failing.hit_count();
                outage.answered();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(!h.is_finished(), "h was given up after {seen} probes");
        assert!(outage.is_paused(), "h holds the pause");
        failing.disable();
        assert!(h.await.expect("delivery").is_ok(), "h is written");
        assert!(!outage.is_paused());
    }
}
