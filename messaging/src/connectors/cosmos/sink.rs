//! The Cosmos DB sink: each outgoing message becomes one point write (upsert, create or
//! delete). Writes of one document run one at a time in record order; writes of different
//! documents run side by side, up to `max-concurrency`. A message is acked once Cosmos DB
//! answered 2xx, so its input record is committed only once the document is durably stored.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use azure_data_cosmos::clients::ContainerClient;
use azure_data_cosmos::models::PartitionKey;
use futures_util::future::BoxFuture;
use tokio::sync::Semaphore;

use super::answer::{judge, FailedWrite};
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
    shared: Arc<Shared>,
    /// The task of [`probe_while_nobody_writes`], which ends with the sink.
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
    /// Places for writes in flight (`max-concurrency`): taken when a message is enqueued, so a
    /// full sink holds its processors back.
    pub(crate) places: Arc<Semaphore>,
    pub(crate) max_concurrency: usize,
    pub(crate) order: Arc<DocumentOrder>,
    /// Set by an outage under `on-outage = fail`: no write starts any more.
    pub(crate) failed: AtomicBool,
    /// The partition key of the latest write that paused the channel or failed as its probe:
    /// where the idle probe reads (see [`probe_while_nobody_writes`]).
    pub(crate) probe_key: std::sync::Mutex<Option<PartitionKey>>,
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
        let idle_probe = tokio::spawn(probe_while_nobody_writes(shared.clone())).abort_handle();
        Self { shared, idle_probe }
    }
}

impl Drop for CosmosSink {
    fn drop(&mut self) {
        self.idle_probe.abort();
    }
}

/// Probes with a read every backoff while the channel is paused with no write left to probe
/// with (see `Outage::nobody_probes`): on an idle topic, or with every partition moved to other
/// members, no record would come to probe, and readiness would stay DOWN after Cosmos DB is
/// back. A read answered ends the pause only while still no write is being made: a write that
/// started meanwhile probes, and its own answer decides.
async fn probe_while_nobody_writes(shared: Arc<Shared>) {
    loop {
        shared.outage.until_left_without_probe().await;
        let mut retry_after = None;
        while shared.outage.paused_without_writes() {
            let probe = shared.outage.next_probe();
            tokio::time::sleep(shared.retry.delay_before_probe(probe, retry_after)).await;
            if !shared.outage.paused_without_writes() {
                break;
            }
            match shared.probe_read().await {
                Ok(()) => {
                    shared.outage.resume_if_nobody_writes();
                }
                Err(failed) => {
                    retry_after = match &failed {
                        FailedWrite::Transient { retry_after, .. } => *retry_after,
                        _ => None,
                    };
                    shared.outage.probe_read_failed(failed.failure().reason());
                }
            }
        }
    }
}

/// The id a probe reads: no document is expected to have it, and one that does is no harm.
const PROBE_ID: &str = "messaging-outage-probe";

impl Sink for CosmosSink {
    // The returned future resolves once the write has a place (backpressure), to the write
    // under way (resolving once Cosmos DB answered for good) or, at max-concurrency 1 with the
    // answer at hand, to its outcome.
    fn enqueue(&self, message: OutgoingMessage) -> BoxFuture<'_, Enqueued> {
        Box::pin(async move {
            let handed_over = Instant::now();
            let (payload, metadata, settle) = message.into_parts();
            let shared = self.shared.clone();
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
            let place = shared
                .places
                .clone()
                .acquire_owned()
                .await
                .expect("the places are never closed");
            let mut turn = shared.order.take_turn(write.identity);
            let one_at_a_time = shared.max_concurrency == 1;
            let mut delivery: Delivery = Box::pin(async move {
                turn.wait().await;
                let outcome = shared.deliver(&write, settle.as_ref()).await;
                drop(turn);
                drop(place);
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
            // One write at a time: the processor's next record waits for this write anyway, so
            // it starts here, and a write that ends in its first poll (an answer at hand) costs
            // no task. Above 1 it starts in a task of its own, so that writes run side by side
            // on all workers.
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
            let all = u32::try_from(shared.max_concurrency).unwrap_or(u32::MAX);
            let drained =
                tokio::time::timeout(timeout, shared.places.clone().acquire_many_owned(all)).await;
            if drained.is_err() {
                let left = shared.max_concurrency - shared.places.available_permits();
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
    async fn deliver(&self, write: &Write, settle: Option<&SettleHandle>) -> Outcome {
        let mut started = Instant::now();
        let mut answers_before = self.outage.answers();
        let mut attempts = 0;
        let _writing = self.outage.writing();
        // Set once this record's retries ran out and it paused the channel: the pause then
        // waits for this record's own write (see `Outage::hold`).
        let mut hold = None;
        loop {
            if self.failed.load(Ordering::SeqCst) {
                return Outcome::Abandoned(self.abandoned());
            }
            if settle.is_some_and(SettleHandle::is_stale) {
                return Outcome::Abandoned(super::answer::cosmos_failure(
                    "the record's partition was revoked before its write; its new owner writes it"
                        .into(),
                ));
            }
            // While paused, one write at a time probes; the others wait for the outcome.
            let probe_turn = if self.outage.is_paused() {
                let _waiting = self.outage.gate.write_waits();
                Some(self.outage.probe_turn().await)
            } else {
                None
            };
            let waited_out_an_outage = probe_turn.is_some() && !self.outage.is_paused();
            let probing = probe_turn.is_some() && !waited_out_an_outage;
            let _probe_turn = if probing { probe_turn } else { None };
            if waited_out_an_outage {
                // The outage ended while this write waited: its failures during it do not
                // count against the record.
                started = Instant::now();
                answers_before = self.outage.answers();
                attempts = 0;
            }
            attempts += 1;
            let (failure, retry_after, cosmos_is_down, unavailable) =
                match self.execute(write).await {
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
            let in_a_row = self.outage.failed();
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
                retries_ran_out && (cosmos_is_down || self.outage.answers() == answers_before);
            if probing || in_a_row || retries_ran_out_in_silence {
                if self.on_outage == OnOutage::Fail {
                    self.fail(&failure);
                    return Outcome::Abandoned(failure);
                }
                // Only an unavailable partition holds the pause: a 408 or a 5xx may be this
                // document's own, and must not keep the channel paused for good (the first
                // answer to another write ends the pause, and its retries start again).
                if retries_ran_out && unavailable && hold.is_none() {
                    hold = Some(self.outage.hold());
                }
                *self.probe_key.lock().expect("probe key") = Some(write.partition_key.clone());
                self.outage.pause(failure.reason());
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

    /// A point read of [`PROBE_ID`] in the partition of the latest failed write: a request that
    /// partition serves the way it serves writes (throttled alike, unavailable alike, refused
    /// alike for a rejected key). Its 404 is an answer: the partition serves.
    async fn probe_read(&self) -> Result<(), FailedWrite> {
        let partition_key = self
            .probe_key
            .lock()
            .expect("probe key")
            .clone()
            .unwrap_or_else(|| PartitionKey::from(PROBE_ID));
        let Err(error) = self
            .container
            .read_item(partition_key, PROBE_ID, None)
            .await
        else {
            return Ok(());
        };
        let status = error.status();
        let not_found = status.status_code() == azure_core::http::StatusCode::NotFound
            && status.sub_status().is_none_or(|sub| sub.value() == 0);
        if not_found && error.is_from_wire() {
            return Ok(());
        }
        // `None` (the write done anyway) is only ever a create's 409 or a delete's 404.
        judge(&error, "probe read", false).map_or(Ok(()), Err)
    }

    /// One request, counted by its answer.
    async fn execute(&self, write: &Write) -> Result<(), FailedWrite> {
        let partition_key = write.partition_key.clone();
        let (result, operation) = match &write.operation {
            Operation::Upsert(document) => (
                self.container
                    .upsert_item(partition_key, &write.id, document, None)
                    .await,
                "upsert",
            ),
            Operation::Create(document) => (
                self.container
                    .create_item(partition_key, &write.id, document, None)
                    .await,
                "create",
            ),
            Operation::Delete => (
                self.container
                    .delete_item(partition_key, &write.id, None)
                    .await,
                "delete",
            ),
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
                let class = match (error.response().is_some(), code) {
                    // Refused by the SDK before it was sent: the record's, not the network's.
                    (false, 400) => AnswerClass::ClientError,
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

    fn abandoned(&self) -> Failure {
        super::answer::cosmos_failure(format!(
            "the Cosmos DB channel {} failed on an outage; the write was not attempted",
            self.channel
        ))
    }
}

// The triggers of a pause left without a write (a partition revoked mid-outage, a request the
// SDK refuses) cannot be brought about on purpose through the public API with the embedded
// cluster: the test makes that state itself, and the sink's probe reads from a real
// (emulated) container through the SDK.
#[cfg(all(test, feature = "cosmos-embedded"))]
mod tests {
    use std::borrow::Cow;

    use azure_data_cosmos::fault_injection::{
        FaultInjectionConditionBuilder, FaultInjectionErrorType, FaultInjectionResultBuilder,
        FaultInjectionRuleBuilder, FaultOperationType,
    };
    use azure_data_cosmos::models::{ContainerProperties, PartitionKeyDefinition};

    use super::*;
    use crate::config::IdStrategy;
    use crate::connectors::cosmos::EmbeddedCosmos;
    use crate::health::{Check, Status};
    use crate::metrics::Metrics;

    async fn sink_into(cosmos: &EmbeddedCosmos, health: &HealthRegistry) -> CosmosSink {
        let setup = cosmos.client().await.expect("client");
        setup.create_database("db", None).await.expect("database");
        let properties = ContainerProperties::new(
            "orders".to_owned(),
            PartitionKeyDefinition::new(vec![Cow::Borrowed("/id")]),
        );
        let database = setup.database_client("db");
        database
            .create_container(properties, None)
            .await
            .expect("container");
        let container = cosmos
            .sink_client(None)
            .await
            .expect("sink client")
            .database_client("db")
            .container_client("orders", None)
            .await
            .expect("container client");
        health.register("orders-db");
        health.ready("orders-db");
        let metrics = Metrics::new(health);
        let sink_metrics = metrics.outgoing_channel("orders-db");
        CosmosSink::new(Shared {
            channel: "orders-db".into(),
            container,
            shape: DocumentShape::new(
                IdStrategy::Value {
                    pointer: "/id".into(),
                },
                false,
                false,
                vec!["/id".into()],
            ),
            retry: RetryPolicy::new(
                3,
                Duration::from_millis(100),
                Duration::from_secs(1),
                2.0,
                0.0,
                None,
            ),
            on_outage: OnOutage::Pause,
            outage: Outage::new("orders-db", health.clone(), sink_metrics.clone(), 3),
            health: health.clone(),
            metrics: sink_metrics,
            cosmos_metrics: metrics.cosmos_channel("orders-db"),
            places: Arc::new(Semaphore::new(4)),
            max_concurrency: 4,
            order: Arc::new(DocumentOrder::default()),
            failed: AtomicBool::new(false),
            probe_key: std::sync::Mutex::new(None),
        })
    }

    /// Waits (on the paused clock) for `done`, for at most a minute.
    async fn within_a_minute(what: &str, mut done: impl FnMut() -> bool) {
        tokio::time::timeout(Duration::from_secs(60), async {
            while !done() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{what} within a minute"));
    }

    fn readiness(health: &HealthRegistry) -> (Status, String) {
        let report = health.check(Check::Readiness);
        (report.status, format!("{report:?}"))
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_left_without_a_write_is_probed_with_reads_until_one_is_answered() {
        let unavailable = Arc::new(
            FaultInjectionRuleBuilder::new(
                "point reads",
                FaultInjectionResultBuilder::new()
                    .with_error(FaultInjectionErrorType::ServiceUnavailable)
                    .build(),
            )
            .with_condition(
                FaultInjectionConditionBuilder::new()
                    .with_operation_type(FaultOperationType::ReadItem)
                    .build(),
            )
            .build(),
        );
        let cosmos = EmbeddedCosmos::new().with_fault_rules(vec![unavailable.clone()]);
        let health = HealthRegistry::default();
        let sink = sink_into(&cosmos, &health).await;
        let outage = &sink.shared.outage;

        // The last write leaves the pause without an answer (its partition revoked, say).
        let write = outage.writing();
        *sink.shared.probe_key.lock().unwrap() = Some(PartitionKey::from("o1"));
        outage.pause("Cosmos DB answered the upsert with 503 ServiceUnavailable");
        drop(write);
        assert!(!outage.gate.is_closed(), "a record may come to probe");
        // None comes: the sink reads every backoff, and readiness gives the reads' failure.
        let reads_failing = tokio::time::Instant::now();
        within_a_minute("three reads", || unavailable.hit_count() == 3).await;
        let (status, report) = readiness(&health);
        assert_eq!(status, Status::Down, "{report}");
        assert!(
            report.contains("no write left to probe with")
                && report.contains("probe read")
                && report.contains("503"),
            "{report}"
        );
        // Backoffs of 100, 200 and 400 ms before the three reads (and no read before the first).
        assert!(
            reads_failing.elapsed() >= Duration::from_millis(700),
            "{:?}",
            reads_failing.elapsed()
        );

        // A record comes and its write probes: no reads while it is being made.
        let write = outage.writing();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(unavailable.hit_count(), 3, "no read while a write probes");
        assert!(outage.is_paused());
        // It leaves without an answer too: the reads go on, and the first answered (here a
        // 404: no document has the probe's id) ends the pause.
        unavailable.disable();
        let answers = outage.answers();
        drop(write);
        within_a_minute("the pause ended", || !outage.is_paused()).await;
        assert_eq!(readiness(&health).0, Status::Up);
        assert!(!outage.gate.is_closed());
        assert_eq!(
            outage.answers(),
            answers,
            "a probe read answers for no record: no record's retries are judged by it"
        );
        // No more reads (each would hit the fault again).
        unavailable.enable();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(unavailable.hit_count(), 3, "no read while not paused");
    }
}
