//! The Cosmos DB sink on the SDK's in-memory emulator, fed by the embedded Kafka cluster (or,
//! where the test reads a clock, by the memory connector): what reaches Cosmos DB, what goes to
//! the dead-letter topic and why, retries and their schedule, pausing on an outage, and the
//! secrecy of the account key. Faults come from the SDK's own fault injection.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use azure_core::http::StatusCode;
use common::*;
use futures_util::TryStreamExt;
use messaging::cosmos_sdk::fault_injection::{
    CustomResponseBuilder, FaultInjectionConditionBuilder, FaultInjectionErrorType,
    FaultInjectionResult, FaultInjectionResultBuilder, FaultInjectionRule,
    FaultInjectionRuleBuilder, FaultOperationType,
};
use messaging::cosmos_sdk::feed::FeedScope;
use messaging::health::{Check, Status};
use messaging::{AppBuilder, EmbeddedCosmos, Error, RunningApp};
use serde::{Deserialize, Serialize};
use serde_json::Value;

const DATABASE: &str = "shop";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Order {
    id: String,
    customer: String,
    amount: i64,
    /// Line items the stored document repeats: enough of them make it too large for Cosmos DB.
    #[serde(default)]
    lines: usize,
}

#[derive(Serialize)]
struct StoredOrder {
    id: String,
    customer: String,
    amount: i64,
    lines: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("order {0} has a negative amount")]
struct InvalidOrder(String);

fn order(id: &str, amount: i64) -> Order {
    Order {
        id: id.to_owned(),
        customer: format!("customer-{}", id.len() % 3),
        amount,
        lines: 0,
    }
}

async fn store(order: Order) -> Result<StoredOrder, InvalidOrder> {
    if order.amount < 0 {
        return Err(InvalidOrder(order.id));
    }
    Ok(StoredOrder {
        lines: (0..order.lines)
            .map(|line| format!("{line:0>100}"))
            .collect(),
        id: order.id,
        customer: order.customer,
        amount: order.amount,
    })
}

/// A pipeline: `orders` (Kafka, dead-letter queue) -> [`store`] -> `orders-db` (Cosmos DB).
struct Pipeline {
    topic: String,
    dead_letters: String,
    container: String,
    cosmos: EmbeddedCosmos,
}

impl Pipeline {
    fn new(partitions: i32) -> Self {
        let topic = unique("orders");
        create_topic(&topic, partitions);
        let dead_letters = format!("{topic}-dlq");
        create_topic(&dead_letters, 1);
        Self {
            container: unique("orders-db"),
            topic,
            dead_letters,
            cosmos: EmbeddedCosmos::new(),
        }
    }

    /// The application, writing through `faults`, retrying fast (the schedule itself is
    /// checked on a paused clock below).
    fn app(&self, faults: &[Arc<FaultInjectionRule>]) -> AppBuilder {
        reading("orders", &self.topic)
            .set(
                "messaging.incoming.orders.failure-strategy",
                "dead-letter-queue",
            )
            .set(
                "messaging.incoming.orders.dead-letter-queue.topic",
                &self.dead_letters,
            )
            .set("messaging.outgoing.orders-db.connector", "cosmos")
            .set("messaging.outgoing.orders-db.endpoint", "embedded")
            .set("messaging.outgoing.orders-db.database", DATABASE)
            .set("messaging.outgoing.orders-db.container", &self.container)
            .set(
                "messaging.outgoing.orders-db.partition-key.paths",
                "/customer",
            )
            .set("messaging.outgoing.orders-db.retry.initial-delay.ms", 5)
            .set("messaging.outgoing.orders-db.retry.max-delay.ms", 40)
            .embedded_cosmos(self.cosmos.with_fault_rules(faults.to_vec()))
    }

    fn produce(&self, orders: &[Order]) {
        let payloads: Vec<String> = orders
            .iter()
            .map(|order| serde_json::to_string(order).unwrap())
            .collect();
        let records: Vec<Record<'_>> = payloads
            .iter()
            .zip(orders)
            .map(|(payload, order)| Record {
                key: Some(order.id.as_bytes()),
                ..Record::value(payload.as_bytes())
            })
            .collect();
        produce(&self.topic, &records);
    }

    /// Every document in the container, by id.
    async fn documents(&self) -> Vec<Value> {
        documents_in(&self.cosmos, &self.container).await
    }

    async fn wait_for_documents(&self, count: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let documents = self.documents().await;
            if documents.len() >= count {
                return documents;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "gave up waiting for {count} documents; {} written",
                documents.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_for_commit(&self, partition: i32, offset: i64) {
        eventually(
            &format!("partition {partition} committed up to {offset}"),
            || committed(&self.topic, &self.topic, partition) == Some(offset),
        )
        .await;
    }
}

fn amounts(documents: &[Value]) -> Vec<(String, i64)> {
    documents
        .iter()
        .map(|document| {
            (
                document["id"].as_str().unwrap().to_owned(),
                document["amount"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn upsert_fault(
    id: &str,
    result: messaging::cosmos_sdk::fault_injection::FaultInjectionResult,
) -> Arc<FaultInjectionRule> {
    Arc::new(
        FaultInjectionRuleBuilder::new(id, result)
            .with_condition(
                FaultInjectionConditionBuilder::new()
                    .with_operation_type(FaultOperationType::UpsertItem)
                    .build(),
            )
            .build(),
    )
}

fn error_fault(id: &str, error: FaultInjectionErrorType) -> Arc<FaultInjectionRule> {
    upsert_fault(
        id,
        FaultInjectionResultBuilder::new().with_error(error).build(),
    )
}

fn status_fault(id: &str, status: StatusCode) -> Arc<FaultInjectionRule> {
    upsert_fault(id, answering(status).build())
}

fn readiness(app: &RunningApp) -> (Status, String) {
    let report = app.health().check(Check::Readiness);
    (report.status, format!("{report:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_order_ends_in_cosmos_or_in_the_dead_letter_topic_with_its_reason() {
    every_order_ends_in_cosmos_or_in_the_dead_letter_topic(16).await;
}

/// At `max-concurrency` 1 a write starts in the processor's own task (and usually ends there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_write_at_a_time_ends_every_order_in_cosmos_or_in_the_dead_letter_topic() {
    every_order_ends_in_cosmos_or_in_the_dead_letter_topic(1).await;
}

async fn every_order_ends_in_cosmos_or_in_the_dead_letter_topic(max_concurrency: usize) {
    let pipeline = Pipeline::new(2);
    let too_large = Order {
        lines: 30_000,
        ..order("huge", 7)
    };
    let mut orders = vec![
        order("o1", 10),
        order("o2", 20),
        order("o5", 1),
        order("bad", -1),
        order("o5", 2),
        too_large,
        order("a/b", 3),
        order("o5", 3),
        order("o3", 30),
    ];
    for n in 10..40 {
        orders.push(order(&format!("o{n}"), n));
    }
    pipeline.produce(&orders);
    let app = start(
        pipeline
            .app(&[])
            .set(
                "messaging.outgoing.orders-db.max-concurrency",
                max_concurrency,
            )
            .processor("orders", "orders-db", store),
    )
    .await;

    let dead = read(&pipeline.dead_letters, 3);
    let mut reasons: Vec<(String, String)> = dead
        .iter()
        .map(|record| {
            let order: Order = serde_json::from_str(record.value_str()).unwrap();
            (
                order.id,
                record.header("dead-letter-reason").unwrap().to_owned(),
            )
        })
        .collect();
    reasons.sort();
    assert_eq!(reasons[0].0, "a/b");
    assert!(reasons[0].1.contains("/ \\ ? #"), "{}", reasons[0].1);
    assert_eq!(reasons[1].0, "bad");
    assert!(reasons[1].1.contains("negative amount"), "{}", reasons[1].1);
    assert_eq!(reasons[2].0, "huge");
    assert!(
        reasons[2].1.contains("413") && reasons[2].1.contains("activity id"),
        "{}",
        reasons[2].1
    );
    let expected = orders.len() - 3 - 2; // rejected ones, and o5 written three times
    pipeline.wait_for_documents(expected).await;
    // Every record committed: every write answered, o5's last one too (the documents' count is
    // reached while o5's later writes may still be on their way).
    for partition in 0..2 {
        pipeline
            .wait_for_commit(partition, end_offset(&pipeline.topic, partition))
            .await;
    }
    let written = amounts(&pipeline.documents().await);
    assert_eq!(written.len(), expected, "no duplicates: {written:?}");
    assert!(
        written.contains(&("o5".to_owned(), 3)),
        "the last o5 wins: {written:?}"
    );
    assert_eq!(end_offset(&pipeline.dead_letters, 0), 3);
    app.shutdown().await;
}

/// Writes fail with `fault` until it is disabled: the incoming side pauses (readiness DOWN,
/// no new record reaches the handler), then everything is written, committed, and nothing
/// dead-lettered.
async fn an_outage_pauses_and_recovers(fault: Arc<FaultInjectionRule>, answer_class: &str) {
    let logs = captured_logs();
    let pipeline = Pipeline::new(1);
    // 20 documents written twice in a row each, the second time with a larger amount: the
    // last record of each id must be what Cosmos DB holds. The first records' two writes of
    // o00 and o01 both meet the outage, failed and retried, the second waiting for the first.
    let orders: Vec<Order> = (0..40)
        .map(|n| order(&format!("o{:02}", n / 2), n))
        .collect();
    // A few first, the rest once paused: the sink has room for all of them (its
    // max-concurrency is above 40), so only the pause can keep the rest from the handler.
    let (first, rest) = orders.split_at(5);
    pipeline.produce(first);
    let handled = Arc::new(AtomicUsize::new(0));
    let counted = handled.clone();
    let app = start(
        pipeline
            .app(std::slice::from_ref(&fault))
            .set("messaging.outgoing.orders-db.max-concurrency", 64)
            .set("messaging.outgoing.orders-db.outage.threshold", 3)
            // An outage longer than the age limit is not a stuck record.
            .set(
                "messaging.incoming.orders.throttled.unprocessed-record-max-age.ms",
                200,
            )
            .set("messaging.health.enabled", true)
            .set("messaging.health.port", 0)
            .processor("orders", "orders-db", move |order: Order| {
                counted.fetch_add(1, Ordering::SeqCst);
                store(order)
            }),
    )
    .await;
    eventually("readiness DOWN for the outage", || {
        let (status, report) = readiness(&app);
        status == Status::Down && report.contains("Cosmos DB outage")
    })
    .await;
    // The gate closed before readiness went DOWN. A loop turn that looked at the gate just
    // before it closed may still start one record (however long the machine holds that turn
    // up); no other record starts while paused.
    let handled_when_paused = handled.load(Ordering::SeqCst);
    // The loop had handled every record it had when the writes began to fail: waiting for
    // more, it still pauses its assignment (librdkafka stops fetching).
    let paused_line = format!("topic={}", pipeline.topic);
    eventually("the assignment paused", || {
        logs.text().lines().any(|line| {
            line.contains("the outgoing sink's outage pauses fetching")
                && line.split_whitespace().any(|word| word == paused_line)
        })
    })
    .await;
    pipeline.produce(rest);
    // Probes go on with backoff; none of them lets another record in.
    let hits = fault.hit_count();
    eventually("five probes", || fault.hit_count() >= hits + 5).await;
    // Five times the age limit: the watch has looked often enough to fail a stuck channel (and
    // a gate that let records through would have let the rest in by now).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let handled_while_paused = handled.load(Ordering::SeqCst);
    assert!(
        handled_while_paused <= handled_when_paused + 1,
        "{handled_while_paused} records handled, {handled_when_paused} when the pause was seen"
    );
    assert_eq!(
        app.health().check(Check::Liveness).status,
        Status::Up,
        "{:?}",
        app.health().check(Check::Liveness)
    );
    let metrics = scrape(&app).await;
    assert!(
        metrics.contains("messaging_sink_paused{channel=\"orders-db\"} 1"),
        "{metrics}"
    );
    // The feeding channel's records wait on purpose: the outage is not also a stuck record.
    let age = metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix("messaging_oldest_unsettled_record_age_seconds{channel=\"orders\"} ")
        })
        .and_then(|value| value.parse::<f64>().ok())
        .expect("the age exported");
    assert_eq!(age, 0.0, "{metrics}");

    fault.disable();
    // Committed only once every write was answered 2xx: then every document is final.
    pipeline.wait_for_commit(0, orders.len() as i64).await;
    assert_eq!(
        amounts(&pipeline.documents().await),
        orders
            .iter()
            .skip(1)
            .step_by(2)
            .map(|o| (o.id.clone(), o.amount))
            .collect::<Vec<_>>()
    );
    eventually("readiness UP again", || readiness(&app).0 == Status::Up).await;
    let metrics = scrape(&app).await;
    let value = |series: &str| -> f64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} exported: {metrics}"))
    };
    let writes = |class: &str| {
        value(&format!(
            "messaging_cosmos_writes_total{{channel=\"orders-db\",status_class=\"{class}\"}}"
        ))
    };
    assert!(writes("2xx") >= orders.len() as f64, "{metrics}");
    assert!(writes(answer_class) >= 3.0, "{metrics}");
    assert!(value("messaging_cosmos_request_units_total{channel=\"orders-db\"}") > 0.0);
    let throttled = value("messaging_cosmos_throttled_total{channel=\"orders-db\"}");
    assert_eq!(throttled > 0.0, fault.id().contains("429"), "{metrics}");
    assert!(
        metrics.contains("messaging_sink_paused{channel=\"orders-db\"} 0"),
        "{metrics}"
    );
    assert_eq!(
        end_offset(&pipeline.dead_letters, 0),
        0,
        "nothing dead-lettered"
    );
    app.shutdown().await;
}

/// A record whose write backs off for longer than `throttled.unprocessed-record-max-age.ms`
/// is not stuck: the sink tells the feeding channel's age watch that it waits on purpose, and
/// liveness stays UP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_backing_off_longer_than_the_age_limit_is_not_a_stuck_record() {
    let pipeline = Pipeline::new(1);
    // One 500, then written: its one backoff lasts four times the age limit.
    let fault = limited(
        on_upserts(
            "one 500",
            answering(StatusCode::InternalServerError).build(),
        ),
        1,
    );
    pipeline.produce(&[order("o1", 1)]);
    let app = start(
        pipeline
            .app(std::slice::from_ref(&fault))
            .set("messaging.outgoing.orders-db.retry.initial-delay.ms", 4000)
            .set("messaging.outgoing.orders-db.retry.max-delay.ms", 4000)
            .set("messaging.outgoing.orders-db.retry.jitter", 0)
            .set(
                "messaging.incoming.orders.throttled.unprocessed-record-max-age.ms",
                1000,
            )
            .set("messaging.health.enabled", true)
            .set("messaging.health.port", 0)
            .processor("orders", "orders-db", store),
    )
    .await;
    pipeline.wait_for_commit(0, 1).await;
    assert_eq!(fault.hit_count(), 1, "one failure, then written");
    assert_eq!(
        app.health().check(Check::Liveness).status,
        Status::Up,
        "{:?}",
        app.health().check(Check::Liveness)
    );
    app.shutdown().await;
}

async fn scrape(app: &RunningApp) -> String {
    http_get(app.health_address().expect("health served"), "/metrics")
        .await
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_unavailable_for_a_while_pauses_then_recovers() {
    let fault = error_fault("503", FaultInjectionErrorType::ServiceUnavailable);
    an_outage_pauses_and_recovers(fault, "5xx").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_for_a_while_pause_then_recover() {
    an_outage_pauses_and_recovers(error_fault("408", FaultInjectionErrorType::Timeout), "4xx")
        .await;
}

/// The network, not Cosmos DB: the request never left (a refused connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_for_a_while_pause_then_recover() {
    let fault = error_fault("connection", FaultInjectionErrorType::ConnectionError);
    an_outage_pauses_and_recovers(fault, "transport").await;
}

/// No answer for a request the transport reports as perhaps sent (an I/O failure; the
/// injected one never reaches the emulator).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_lost_in_transport_for_a_while_pause_then_recover() {
    let fault = error_fault("no-answer", FaultInjectionErrorType::ResponseTimeout);
    an_outage_pauses_and_recovers(fault, "transport").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_key_pauses_rather_than_dead_letters() {
    an_outage_pauses_and_recovers(status_fault("401", StatusCode::Unauthorized), "4xx").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttling_storm_without_retry_after_pauses_then_recovers() {
    let fault = error_fault("429", FaultInjectionErrorType::TooManyRequests);
    an_outage_pauses_and_recovers(fault, "4xx").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttling_storm_with_retry_after_pauses_then_recovers() {
    let throttled = FaultInjectionResultBuilder::new()
        .with_custom_response(
            CustomResponseBuilder::new(StatusCode::TooManyRequests)
                // Under the pipeline's retry.max-delay.ms (40), so it is the wait used; the
                // paused-clock test checks the wait itself.
                .with_header("x-ms-retry-after-ms", "20")
                .build(),
        )
        .build();
    an_outage_pauses_and_recovers(upsert_fault("429 retry-after", throttled), "4xx").await;
}

/// The memory connector's `orders` into the Cosmos DB sink `orders-db` (container `orders`),
/// without the health server: a test adds its retry settings, faults and processor.
fn memory_into_cosmos() -> AppBuilder {
    messaging::App::builder()
        .set("messaging.health.enabled", false)
        .set("messaging.incoming.orders.connector", "memory")
        .set("messaging.outgoing.orders-db.connector", "cosmos")
        .set("messaging.outgoing.orders-db.endpoint", "embedded")
        .set("messaging.outgoing.orders-db.database", DATABASE)
        .set("messaging.outgoing.orders-db.container", "orders")
}

/// The memory connector into the Cosmos DB sink, on a paused clock: every wait is exact.
async fn on_a_paused_clock(
    fault: Arc<FaultInjectionRule>,
) -> (Duration, Result<(), messaging::Failure>) {
    on_a_paused_clock_at(fault, 16).await
}

/// [`on_a_paused_clock`] with the sink's `max-concurrency`.
async fn on_a_paused_clock_at(
    fault: Arc<FaultInjectionRule>,
    max_concurrency: usize,
) -> (Duration, Result<(), messaging::Failure>) {
    let cosmos = EmbeddedCosmos::new();
    let app = start(
        memory_into_cosmos()
            .set("messaging.outgoing.orders-db.retry.initial-delay.ms", 100)
            .set("messaging.outgoing.orders-db.retry.max-delay.ms", 1000)
            .set("messaging.outgoing.orders-db.retry.jitter", 0)
            .set("messaging.outgoing.orders-db.outage.threshold", 10)
            .set(
                "messaging.outgoing.orders-db.max-concurrency",
                max_concurrency,
            )
            .embedded_cosmos(cosmos.with_fault_rules(vec![fault]))
            .processor("orders", "orders-db", store),
    )
    .await;
    let source = app.in_memory_source("orders").unwrap();
    let started = tokio::time::Instant::now();
    let verdict = source.send(order("o1", 1)).await;
    let took = started.elapsed();
    app.shutdown().await;
    (took, verdict)
}

fn limited(rule: FaultInjectionRuleBuilder, hits: u32) -> Arc<FaultInjectionRule> {
    Arc::new(rule.with_hit_limit(hits).build())
}

fn on_upserts(id: &str, result: FaultInjectionResult) -> FaultInjectionRuleBuilder {
    FaultInjectionRuleBuilder::new(id, result).with_condition(
        FaultInjectionConditionBuilder::new()
            .with_operation_type(FaultOperationType::UpsertItem)
            .build(),
    )
}

#[tokio::test(start_paused = true)]
async fn throttled_writes_back_off_exponentially_then_succeed() {
    let throttled = FaultInjectionResultBuilder::new()
        .with_error(FaultInjectionErrorType::TooManyRequests)
        .build();
    let (took, verdict) = on_a_paused_clock(limited(on_upserts("429", throttled), 3)).await;
    assert_eq!(verdict, Ok(()));
    assert_eq!(took, Duration::from_millis(100 + 200 + 400));
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_replaces_the_backoff() {
    let throttled = FaultInjectionResultBuilder::new()
        .with_custom_response(
            CustomResponseBuilder::new(StatusCode::TooManyRequests)
                .with_header("x-ms-retry-after-ms", "250")
                .build(),
        )
        .build();
    let (took, verdict) = on_a_paused_clock(limited(on_upserts("429", throttled), 3)).await;
    assert_eq!(verdict, Ok(()));
    assert_eq!(took, Duration::from_millis(3 * 250));
}

#[tokio::test(start_paused = true)]
async fn a_bad_request_is_not_retried() {
    let bad = answering(StatusCode::BadRequest).build();
    let rule = limited(on_upserts("400", bad), 5);
    let (took, verdict) = on_a_paused_clock(rule.clone()).await;
    let failure = verdict.unwrap_err();
    assert!(failure.reason().contains("400"), "{failure:?}");
    assert_eq!(rule.hit_count(), 1);
    assert_eq!(took, Duration::ZERO);
}

/// An emitter's `send` into Cosmos DB resolves once the document is stored, or with the reason
/// Cosmos DB rejected it; at `max-concurrency` 1 the write ends during the hand-over itself.
async fn an_emitter_writes_and_hears_the_answer(max_concurrency: usize) {
    let cosmos = EmbeddedCosmos::new();
    let app = messaging::App::builder()
        .set("messaging.health.enabled", false)
        .set("messaging.outgoing.orders-db.connector", "cosmos")
        .set("messaging.outgoing.orders-db.endpoint", "embedded")
        .set("messaging.outgoing.orders-db.database", DATABASE)
        .set("messaging.outgoing.orders-db.container", "orders")
        .set(
            "messaging.outgoing.orders-db.max-concurrency",
            max_concurrency,
        )
        .embedded_cosmos(cosmos.clone())
        .outgoing("orders-db")
        .build()
        .expect("valid configuration")
        .start()
        .await
        .expect("app starts");
    let orders = app.emitter::<StoredOrder>("orders-db").unwrap();
    for amount in [1, 2] {
        let stored = store(order("o1", amount)).await.unwrap();
        orders.send(stored).await.expect("written");
    }
    let too_large = store(Order {
        lines: 30_000,
        ..order("huge", 7)
    })
    .await
    .unwrap();
    let rejected = orders.send(too_large).await.expect_err("too large");
    assert!(rejected.to_string().contains("413"), "{rejected}");
    app.shutdown().await;
    assert_eq!(
        amounts(&documents_in(&cosmos, "orders").await),
        vec![("o1".to_owned(), 2)]
    );
}

/// The write reaches Cosmos DB but its answer is lost on the way back: no answer, so it is
/// retried, and the retry finds it done (an upsert writes the same document again, a create's
/// 409 counts as written). Nothing is dead-lettered, nothing doubled.
async fn an_answer_lost_after_the_write(strategy: &str, operation: FaultOperationType) {
    let cosmos = EmbeddedCosmos::new();
    let lost = FaultInjectionResultBuilder::new()
        .with_error(FaultInjectionErrorType::ResponseTimeoutAfterService)
        .build();
    let rule = Arc::new(
        FaultInjectionRuleBuilder::new("answer lost", lost)
            .with_condition(
                FaultInjectionConditionBuilder::new()
                    .with_operation_type(operation)
                    .build(),
            )
            .with_hit_limit(1)
            .build(),
    );
    let app = start(
        memory_into_cosmos()
            .set("messaging.outgoing.orders-db.write.strategy", strategy)
            .set("messaging.outgoing.orders-db.retry.initial-delay.ms", 5)
            .embedded_cosmos(cosmos.with_fault_rules(vec![rule.clone()]))
            .processor("orders", "orders-db", store),
    )
    .await;
    let source = app.in_memory_source("orders").unwrap();
    assert_eq!(source.send(order("o1", 1)).await, Ok(()));
    assert_eq!(rule.hit_count(), 1, "the first answer was lost");
    app.shutdown().await;
    assert_eq!(
        amounts(&documents_in(&cosmos, "orders").await),
        vec![("o1".to_owned(), 1)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upsert_whose_answer_was_lost_is_written_once() {
    an_answer_lost_after_the_write("upsert", FaultOperationType::UpsertItem).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_answer_was_lost_counts_its_conflict_as_written() {
    an_answer_lost_after_the_write("create", FaultOperationType::CreateItem).await;
}

/// Every document in `container`, by id.
async fn documents_in(cosmos: &EmbeddedCosmos, container: &str) -> Vec<Value> {
    let client = cosmos.client().await.expect("client");
    let container = client
        .database_client(DATABASE)
        .container_client(container, None)
        .await
        .expect("container");
    let mut documents: Vec<Value> = container
        .query_items::<Value>("SELECT * FROM c", FeedScope::full_container(), None)
        .await
        .expect("query")
        .try_collect()
        .await
        .expect("documents");
    documents.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    documents
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emitter_writes_and_hears_the_answer_one_write_at_a_time() {
    an_emitter_writes_and_hears_the_answer(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emitter_writes_and_hears_the_answer_side_by_side() {
    an_emitter_writes_and_hears_the_answer(16).await;
}

/// Twice `status` (with `sub_status`) to the upserts, then the emulator's own answers: the
/// write's verdict, how long it took on the paused clock, and how many answers were injected.
async fn answered_twice(
    status: StatusCode,
    sub_status: Option<u16>,
    max_concurrency: usize,
) -> (Duration, Result<(), messaging::Failure>, u32) {
    let mut response = CustomResponseBuilder::new(status);
    if let Some(sub_status) = sub_status {
        response = response.with_sub_status(sub_status);
    }
    let answer = FaultInjectionResultBuilder::new()
        .with_custom_response(response.build())
        .build();
    let rule = limited(on_upserts("answer", answer), 2);
    let (took, verdict) = on_a_paused_clock_at(rule.clone(), max_concurrency).await;
    (took, verdict, rule.hit_count())
}

#[tokio::test(start_paused = true)]
async fn each_answer_is_retried_or_rejected_by_its_status_and_sub_status() {
    each_answer_is_retried_or_rejected(16).await;
}

/// At `max-concurrency` 1 a write starts in the processor's task, and goes on in a task of its
/// own once it waits (a backoff here).
#[tokio::test(start_paused = true)]
async fn one_write_at_a_time_retries_or_rejects_each_answer_alike() {
    each_answer_is_retried_or_rejected(1).await;
}

async fn each_answer_is_retried_or_rejected(max_concurrency: usize) {
    // Retried with the backoff (100 ms, then 200 ms), then written.
    for (status, sub_status) in [
        (StatusCode::RequestTimeout, None),
        (StatusCode::Gone, None),
        (StatusCode::TooManyRequests, None),
        (StatusCode::NotFound, Some(1002)),
        (StatusCode::InternalServerError, None),
        (StatusCode::ServiceUnavailable, None),
        (StatusCode::BadGateway, None),
    ] {
        let (took, verdict, hits) = answered_twice(status, sub_status, max_concurrency).await;
        assert_eq!(verdict, Ok(()), "{status:?}/{sub_status:?}");
        assert_eq!(hits, 2, "{status:?}/{sub_status:?}");
        assert_eq!(
            took,
            Duration::from_millis(100 + 200),
            "{status:?}/{sub_status:?}"
        );
    }
    // A 449 the SDK retries itself, with its own backoff (from 10 ms, doubling, plus up to
    // 5 ms): quicker than the sink's first wait.
    let (took, verdict, hits) = answered_twice(StatusCode::from(449), None, max_concurrency).await;
    assert_eq!(verdict, Ok(()));
    assert_eq!(hits, 2);
    assert!(took < Duration::from_millis(100), "{took:?}");
    // The record's own fault: to the failure strategy at once, the reason naming the answer.
    for (status, sub_status) in [
        (StatusCode::BadRequest, None),
        (StatusCode::Forbidden, Some(1014)),
        (StatusCode::Conflict, None),
        (StatusCode::PreconditionFailed, None),
        (StatusCode::PayloadTooLarge, None),
    ] {
        let (took, verdict, hits) = answered_twice(status, sub_status, max_concurrency).await;
        let failure = verdict.expect_err("rejected");
        let code = u16::from(status).to_string();
        assert!(failure.reason().contains(&code), "{failure:?}");
        if let Some(sub_status) = sub_status {
            assert!(
                failure
                    .reason()
                    .contains(&format!("sub-status {sub_status}")),
                "{failure:?}"
            );
        }
        assert!(failure.reason().contains("activity id"), "{failure:?}");
        assert_eq!(hits, 1, "{status:?}/{sub_status:?} not retried");
        assert_eq!(took, Duration::ZERO, "{status:?}/{sub_status:?}");
    }
    // Never the record's fault (the key rejected, the container gone): retried until Cosmos
    // DB answers again, and written.
    for status in [
        StatusCode::Unauthorized,
        StatusCode::Forbidden,
        StatusCode::NotFound,
    ] {
        let (_, verdict, hits) = answered_twice(status, None, max_concurrency).await;
        assert_eq!(verdict, Ok(()), "{status:?}");
        assert_eq!(hits, 2, "{status:?}");
    }
}

/// Half of all upserts answered 503 for the whole run, with no retry after the first failure:
/// a write fails while others succeed, as when one physical partition is down. No record is
/// dead-lettered for it: each waits, paused and probing, until its write is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_unavailable_while_others_answer_dead_letters_nothing() {
    let pipeline = Pipeline::new(2);
    let orders: Vec<Order> = (0..60).map(|n| order(&format!("o{n:02}"), n)).collect();
    pipeline.produce(&orders);
    let unavailable = FaultInjectionResultBuilder::new()
        .with_error(FaultInjectionErrorType::ServiceUnavailable)
        .with_probability(0.5)
        .build();
    let fault = upsert_fault("503 half", unavailable);
    let app = start(
        pipeline
            .app(std::slice::from_ref(&fault))
            .set("messaging.outgoing.orders-db.max-concurrency", 16)
            .set("messaging.outgoing.orders-db.retry.max-retries", 0)
            .set("messaging.outgoing.orders-db.outage.threshold", 1000)
            .processor("orders", "orders-db", store),
    )
    .await;
    for partition in 0..2 {
        pipeline
            .wait_for_commit(partition, end_offset(&pipeline.topic, partition))
            .await;
    }
    assert!(fault.hit_count() > 0, "the fault was met");
    assert_eq!(
        amounts(&pipeline.documents().await),
        orders
            .iter()
            .map(|o| (o.id.clone(), o.amount))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        end_offset(&pipeline.dead_letters, 0),
        0,
        "nothing dead-lettered"
    );
    app.shutdown().await;
}

/// A record's send through the memory connector, in a task: its verdict.
type Sending = tokio::task::JoinHandle<Result<(), messaging::Failure>>;

/// The memory connector into the Cosmos DB sink with no retries (a 100 ms probe backoff, no
/// jitter) and `rule`: order `a` is sent, in a task, and this returns once its first upsert
/// has met the rule, with the app and `a`'s send.
async fn a_meets(rule: &Arc<FaultInjectionRule>) -> (RunningApp, Sending) {
    let sink = memory_into_cosmos()
        .set("messaging.outgoing.orders-db.retry.max-retries", 0)
        .set("messaging.outgoing.orders-db.retry.initial-delay.ms", 100)
        .set("messaging.outgoing.orders-db.retry.jitter", 0)
        .embedded_cosmos(EmbeddedCosmos::new().with_fault_rules(vec![rule.clone()]));
    sent_until_it_meets(sink, rule, order("a", 1)).await
}

/// Starts `sink` with [`store`] as the processor, sends `a` through the memory connector in a
/// task, and returns once `first` was met, with the app and `a`'s send.
async fn sent_until_it_meets(
    sink: AppBuilder,
    first: &Arc<FaultInjectionRule>,
    a: Order,
) -> (RunningApp, Sending) {
    let app = start(sink.processor("orders", "orders-db", store)).await;
    let source = app.in_memory_source("orders").unwrap();
    let a = tokio::spawn(async move { source.send(a).await });
    while first.hit_count() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    (app, a)
}

/// Order `a`'s first upsert is answered `status` after 1 s (on a paused clock), while order
/// `b` is written meanwhile (through an emitter): one partition failing while another answers.
/// No retries, so `a`'s retries have run out by then. Returns `a`'s verdict.
async fn one_write_fails_while_another_is_answered(
    status: StatusCode,
) -> Result<(), messaging::Failure> {
    let failing = answering(status).with_delay(Duration::from_secs(1)).build();
    let rule = limited(on_upserts("a fails", failing), 1);
    // `a`'s upsert has met the fault (it is counted before the delay): `b` goes now.
    let (app, a) = a_meets(&rule).await;
    // Through an emitter: the memory source hands over one record at a time.
    let emitter = app.emitter::<StoredOrder>("orders-db").unwrap();
    let b = store(order("b", 2)).await.unwrap();
    assert!(emitter.send(b).await.is_ok(), "b is written at once");
    assert!(!a.is_finished(), "while a waits for its answer");
    let verdict = a.await.expect("a's send");
    assert_eq!(rule.hit_count(), 1);
    app.shutdown().await;
    verdict
}

#[tokio::test(start_paused = true)]
async fn a_write_unavailable_while_others_are_answered_is_not_dead_lettered() {
    for status in [
        StatusCode::ServiceUnavailable,
        StatusCode::Gone,
        StatusCode::TooManyRequests,
    ] {
        assert_eq!(
            one_write_fails_while_another_is_answered(status).await,
            Ok(()),
            "{status:?}: paused and probed until written"
        );
    }
}

/// An answer to another write while `a`'s request was out may have come before an outage
/// began, so it does not make `a`'s 500 its own: with no answer after `a` failed, its retries
/// running out pause the channel, and the probe writes it. (Answers during its backoff do tell
/// a document failing on its own: see
/// `one_request_at_a_time_tells_a_document_failing_on_its_own_by_the_writes_made_while_it_backs_off`.)
#[tokio::test(start_paused = true)]
async fn an_internal_error_after_others_were_answered_during_its_request_is_not_dead_lettered() {
    assert_eq!(
        one_write_fails_while_another_is_answered(StatusCode::InternalServerError).await,
        Ok(()),
        "paused and probed until written"
    );
}

/// A fault that answers `status`.
fn answering(status: StatusCode) -> FaultInjectionResultBuilder {
    FaultInjectionResultBuilder::new()
        .with_custom_response(CustomResponseBuilder::new(status).build())
}

/// The memory connector into the Cosmos DB sink at `max-concurrency` 1, one retry after 100 ms
/// (no jitter), faults from `rules`.
fn one_request_at_a_time(cosmos: &EmbeddedCosmos, rules: &[Arc<FaultInjectionRule>]) -> AppBuilder {
    memory_into_cosmos()
        .set("messaging.outgoing.orders-db.max-concurrency", 1)
        .set("messaging.outgoing.orders-db.retry.max-retries", 1)
        .set("messaging.outgoing.orders-db.retry.initial-delay.ms", 100)
        .set("messaging.outgoing.orders-db.retry.jitter", 0)
        .embedded_cosmos(cosmos.with_fault_rules(rules.to_vec()))
}

/// [`one_request_at_a_time`]: `a` is sent in a task, and this returns once `a`'s first upsert
/// has met `first`, with the app and `a`'s send.
async fn a_meets_at_one_request_at_a_time(
    cosmos: &EmbeddedCosmos,
    first: &Arc<FaultInjectionRule>,
    rules: &[Arc<FaultInjectionRule>],
    a: Order,
) -> (RunningApp, Sending) {
    sent_until_it_meets(one_request_at_a_time(cosmos, rules), first, a).await
}

/// How long order `b`'s send through an emitter takes to be written.
async fn time_to_write_b(app: &RunningApp) -> Duration {
    let sending = tokio::time::Instant::now();
    let emitter = app.emitter::<StoredOrder>("orders-db").unwrap();
    let b = store(order("b", 2)).await.unwrap();
    assert!(emitter.send(b).await.is_ok(), "b is written");
    sending.elapsed()
}

/// At `max-concurrency` 1, order `a`'s write meets `status` every time (its first try and its
/// one retry), while order `b` is written during `a`'s backoff. Returns the app, `a`'s send,
/// and the rule `a`'s retry (and any later try) meets, until disabled.
async fn a_fails_while_b_is_written_in_its_backoff(
    status: StatusCode,
) -> (RunningApp, Sending, Arc<FaultInjectionRule>) {
    // `a`'s first upsert meets the first rule, its retry the second (enabled once `b` is
    // written): `a` fails every time, `b` never.
    let first = limited(
        on_upserts("a's first attempt", answering(status).build()),
        1,
    );
    let retry = Arc::new(on_upserts("a's retry", answering(status).build()).build());
    retry.disable();
    let (app, a) = a_meets_at_one_request_at_a_time(
        &EmbeddedCosmos::new(),
        &first,
        &[first.clone(), retry.clone()],
        order("a", 1),
    )
    .await;
    assert!(
        time_to_write_b(&app).await < Duration::from_millis(100),
        "b was written while a backed off"
    );
    retry.enable();
    (app, a, retry)
}

/// At `max-concurrency` 1 too, a document Cosmos DB fails with a 500 every time is told apart
/// from an outage by the other writes answered while it backs off: it is dead-lettered when
/// its retries run out, and the channel does not pause behind it (a pause would have made `a`
/// its probe, retried until written, not rejected).
#[tokio::test(start_paused = true)]
async fn one_request_at_a_time_tells_a_document_failing_on_its_own_by_the_writes_made_while_it_backs_off(
) {
    let (app, a, retry) =
        a_fails_while_b_is_written_in_its_backoff(StatusCode::InternalServerError).await;
    let failure = a
        .await
        .expect("a's send")
        .expect_err("a fails on its own: dead-lettered");
    assert!(failure.reason().contains("500"), "{failure:?}");
    assert_eq!(retry.hit_count(), 1, "a's one retry");
    // The memory channel fails on the nack (its default failure strategy); the sink is ready.
    let report = app.health().check(Check::Readiness);
    assert_eq!(report.data["orders-db"], Ok(()), "never paused: {report:?}");
    app.shutdown().await;
}

/// At `max-concurrency` 1, a document whose partition answers 503 is never dead-lettered, even
/// though `b` was written while it backed off: its retries running out pause the channel, and
/// the pause lasts until `a` itself is written.
#[tokio::test(start_paused = true)]
async fn one_request_at_a_time_never_dead_letters_an_unavailable_document_while_others_are_written()
{
    let (app, a, retry) =
        a_fails_while_b_is_written_in_its_backoff(StatusCode::ServiceUnavailable).await;
    while retry.hit_count() < 5 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let report = app.health().check(Check::Readiness);
    assert!(
        matches!(&report.data["orders-db"], Err(reason) if reason.contains("503")),
        "paused for a's partition: {report:?}"
    );
    assert!(!a.is_finished(), "a is probed, not dead-lettered");
    retry.disable();
    assert_eq!(a.await.expect("a's send"), Ok(()), "a is written");
    let report = app.health().check(Check::Readiness);
    assert_eq!(
        report.data["orders-db"],
        Ok(()),
        "the pause ended: {report:?}"
    );
    app.shutdown().await;
}

/// The first upsert answered 500 after a second; the others as they come.
fn first_upsert_fails_in_a_second() -> Arc<FaultInjectionRule> {
    let slow_failure = answering(StatusCode::InternalServerError)
        .with_delay(Duration::from_secs(1))
        .build();
    limited(on_upserts("the first upsert, 500 in 1 s", slow_failure), 1)
}

/// At `max-concurrency` 1 a second write waits for the first one's request to be answered.
#[tokio::test(start_paused = true)]
async fn one_request_at_a_time_makes_no_second_request_while_the_first_is_out() {
    let first = first_upsert_fails_in_a_second();
    let (app, a) = a_meets_at_one_request_at_a_time(
        &EmbeddedCosmos::new(),
        &first,
        std::slice::from_ref(&first),
        order("a", 1),
    )
    .await;
    let took = time_to_write_b(&app).await;
    assert!(
        took >= Duration::from_millis(900),
        "b's request waited for the answer to a's: {took:?}"
    );
    assert_eq!(a.await.expect("a's send"), Ok(()), "a's retry is answered");
    app.shutdown().await;
}

/// The shutdown waits for every write the sink took in, not only those with a request out: at
/// `max-concurrency` 1, `a` backs off while `b` is written, and `a`'s retry is still made
/// before the shutdown ends. Both come from an emitter, whose sends nothing else waits for.
#[tokio::test(start_paused = true)]
async fn one_request_at_a_time_the_shutdown_waits_for_every_write_taken_in() {
    let first = first_upsert_fails_in_a_second();
    let cosmos = EmbeddedCosmos::new();
    let app = start(
        one_request_at_a_time(&cosmos, std::slice::from_ref(&first)).processor(
            "orders",
            "orders-db",
            store,
        ),
    )
    .await;
    let emitter = app.emitter::<StoredOrder>("orders-db").unwrap();
    let mut sends = Vec::new();
    for (id, amount) in [("a", 1), ("b", 2)] {
        let (emitter, stored) = (emitter.clone(), store(order(id, amount)).await.unwrap());
        sends.push(tokio::spawn(async move { emitter.send(stored).await }));
        while first.hit_count() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    // `b` waits for `a`'s request: both are in the sink.
    tokio::time::sleep(Duration::from_millis(10)).await;
    app.shutdown().await;
    assert_eq!(
        amounts(&documents_in(&cosmos, "orders").await),
        vec![("a".to_owned(), 1), ("b".to_owned(), 2)],
        "both written before the shutdown ended"
    );
    for send in sends {
        assert!(send.await.expect("a send").is_ok());
    }
}

/// A second record of a document whose write backs off waits for its turn without holding the
/// one request `max-concurrency` 1 allows: the first write's retry is made, then the second.
#[tokio::test(start_paused = true)]
async fn one_request_at_a_time_a_documents_next_write_waits_behind_its_retry() {
    let failing = answering(StatusCode::InternalServerError).build();
    let first = limited(on_upserts("a1's first attempt", failing), 1);
    let cosmos = EmbeddedCosmos::new();
    let (app, a1) = a_meets_at_one_request_at_a_time(
        &cosmos,
        &first,
        std::slice::from_ref(&first),
        order("a", 1),
    )
    .await;
    let emitter = app.emitter::<StoredOrder>("orders-db").unwrap();
    let a2 = store(order("a", 2)).await.unwrap();
    // A minute of the paused clock: a2 holding the request a1's retry needs would never end.
    let sent = tokio::time::timeout(Duration::from_secs(60), emitter.send(a2))
        .await
        .expect("a2's send ends");
    assert!(sent.is_ok(), "a2 is written");
    assert_eq!(
        a1.await.expect("a1's send"),
        Ok(()),
        "a1's retry is answered"
    );
    assert_eq!(
        amounts(&documents_in(&cosmos, "orders").await),
        vec![("a".to_owned(), 2)],
        "the last record wins"
    );
    app.shutdown().await;
}

/// Order `a`'s partition answers 503 (after 1 s, on a paused clock) and `a` has no retries
/// left, so it pauses the channel. Order `c`, written through an emitter during the pause, is
/// answered: that must not end the pause, which `a` holds until its own write is answered (else
/// readiness would turn UP and DOWN again with each of `a`'s probes while its partition fails).
#[tokio::test(start_paused = true)]
async fn a_pause_held_by_an_unavailable_write_outlasts_the_answers_to_other_writes() {
    let unavailable = answering(StatusCode::ServiceUnavailable)
        .with_delay(Duration::from_secs(1))
        .build();
    let rule = Arc::new(on_upserts("a's partition", unavailable).build());
    let (app, a) = a_meets(&rule).await;
    // Only `a`'s first write fails: the partition of every later one answers.
    rule.disable();
    while readiness(&app).0 == Status::Up {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let paused_at = tokio::time::Instant::now();
    let emitter = app.emitter::<StoredOrder>("orders-db").unwrap();
    let c = store(order("c", 3)).await.unwrap();
    assert!(
        emitter.send(c).await.is_ok(),
        "c is written during the pause"
    );
    let (status, report) = readiness(&app);
    assert_eq!(status, Status::Down, "still paused for a: {report}");
    assert!(report.contains("503"), "{report}");
    assert!(
        paused_at.elapsed() < Duration::from_millis(100),
        "c was answered before a's probe"
    );
    assert!(!a.is_finished(), "a waits for its probe");
    assert_eq!(
        a.await.expect("a's send"),
        Ok(()),
        "a is written by its probe"
    );
    assert_eq!(readiness(&app).0, Status::Up, "a's answer ends the pause");
    assert_eq!(rule.hit_count(), 1);
    app.shutdown().await;
}

/// Two orders into a Cosmos DB that answers every upsert with 503, the sink set with these
/// `messaging.outgoing.orders-db.*` keys.
async fn while_unavailable(
    settings: &[(&str, &str)],
) -> (Pipeline, Arc<FaultInjectionRule>, RunningApp) {
    let pipeline = Pipeline::new(1);
    pipeline.produce(&[order("o1", 1), order("o2", 2)]);
    let fault = error_fault("503", FaultInjectionErrorType::ServiceUnavailable);
    let mut builder = pipeline
        .app(std::slice::from_ref(&fault))
        .set("messaging.health.enabled", true)
        .set("messaging.health.port", 0);
    for (key, value) in settings {
        builder = builder.set(&format!("messaging.outgoing.orders-db.{key}"), value);
    }
    let app = start(builder.processor("orders", "orders-db", store)).await;
    (pipeline, fault, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_outage_fail_fails_the_channel_and_leaves_the_records_uncommitted() {
    let (pipeline, _, app) =
        while_unavailable(&[("on-outage", "fail"), ("outage.threshold", "2")]).await;
    eventually("liveness DOWN", || {
        app.health().check(Check::Liveness).status == Status::Down
    })
    .await;
    let report = format!("{:?}", app.health().check(Check::Liveness));
    assert!(report.contains("on-outage = fail"), "{report}");
    // Failed, not paused; and the writes it gave up are neither sent nor failed: their
    // records are read and written again after the restart.
    let metrics = scrape_until(
        app.health_address().expect("health served"),
        "the failed sink's gauges",
        |text| text.contains("messaging_channel_failed{channel=\"orders-db\"} 1\n"),
    )
    .await;
    for series in [
        "messaging_sink_paused{channel=\"orders-db\"} 0\n",
        "messaging_records_send_failed_total{channel=\"orders-db\"} 0\n",
        "messaging_records_sent_total{channel=\"orders-db\"} 0\n",
        "messaging_channel_live{channel=\"orders-db\"} 0\n",
    ] {
        assert!(metrics.contains(series), "{series} in {metrics}");
    }
    app.shutdown().await;
    assert_eq!(
        committed(&pipeline.topic, &pipeline.topic, 0).unwrap_or(0),
        0,
        "the first record stays uncommitted"
    );
    assert_eq!(
        end_offset(&pipeline.dead_letters, 0),
        0,
        "nothing dead-lettered"
    );
    assert!(pipeline.documents().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_outage_dead_letter_sends_what_cannot_be_written_to_the_failure_strategy() {
    let (pipeline, fault, app) =
        while_unavailable(&[("on-outage", "dead-letter"), ("retry.max-retries", "2")]).await;
    let dead = read(&pipeline.dead_letters, 2);
    for record in &dead {
        let reason = record.header("dead-letter-reason").unwrap();
        assert!(reason.contains("503"), "{reason}");
    }
    pipeline.wait_for_commit(0, 2).await;
    assert_eq!(fault.hit_count(), 2 * 3, "each write tried 3 times");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_deleted_mid_run_pauses_until_it_is_back() {
    let pipeline = Pipeline::new(1);
    let first: Vec<Order> = (0..5).map(|n| order(&format!("a{n}"), n)).collect();
    pipeline.produce(&first);
    let app = start(
        pipeline
            .app(&[])
            .set("messaging.outgoing.orders-db.outage.threshold", 2)
            .processor("orders", "orders-db", store),
    )
    .await;
    pipeline.wait_for_documents(first.len()).await;
    let client = pipeline.cosmos.client().await.unwrap();
    let database = client.database_client(DATABASE);
    let container = database
        .container_client(&pipeline.container, None)
        .await
        .unwrap();
    let definition = container.read(None).await.unwrap().into_model().unwrap();
    container.delete(None).await.unwrap();

    let second: Vec<Order> = (0..5).map(|n| order(&format!("b{n}"), n)).collect();
    pipeline.produce(&second);
    eventually("readiness DOWN for the missing container", || {
        let (status, report) = readiness(&app);
        status == Status::Down && report.contains("404")
    })
    .await;
    assert_eq!(
        end_offset(&pipeline.dead_letters, 0),
        0,
        "nothing dead-lettered"
    );
    database.create_container(definition, None).await.unwrap();
    let documents = pipeline.wait_for_documents(second.len()).await;
    assert_eq!(
        documents.len(),
        second.len(),
        "the new container holds the second batch"
    );
    pipeline.wait_for_commit(0, 10).await;
    app.shutdown().await;
}

/// The write that paused the channel leaves it without an answer when its partition moves to
/// another member: no record is left to probe with, so the sink probes on its own (a delete
/// that changes nothing), and its answer ends the pause while Cosmos DB still fails every
/// upsert. Without that probe the first member would stay paused, readiness DOWN. The group's
/// assignor picks which member reads o1's partition after the join: when it is the first member
/// again, o1 itself comes back to probe, and only the end (nothing lost) is checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_revoked_mid_outage_leaves_the_sink_to_probe_on_its_own() {
    let pipeline = Pipeline::new(2);
    let o1 = order("o1", 1);
    pipeline.produce(std::slice::from_ref(&o1));
    let partition = (0..2)
        .find(|&partition| end_offset(&pipeline.topic, partition) == 1)
        .expect("o1 produced");
    let unavailable = error_fault("503", FaultInjectionErrorType::ServiceUnavailable);
    // Only the sink's own probe deletes here: answered as a document it names is not there.
    let probe_answered = Arc::new(
        FaultInjectionRuleBuilder::new(
            "probe answered 404",
            answering(StatusCode::NotFound).build(),
        )
        .with_condition(
            FaultInjectionConditionBuilder::new()
                .with_operation_type(FaultOperationType::DeleteItem)
                .build(),
        )
        .build(),
    );
    // Each member's handler calls.
    let member = |handled: Arc<AtomicUsize>| {
        pipeline
            .app(&[unavailable.clone(), probe_answered.clone()])
            .set("messaging.health.enabled", true)
            .set("messaging.health.port", 0)
            .set("messaging.outgoing.orders-db.outage.threshold", 2)
            .processor("orders", "orders-db", move |order: Order| {
                handled.fetch_add(1, Ordering::SeqCst);
                store(order)
            })
    };
    let (first_handled, second_handled) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let first = start(member(first_handled.clone())).await;
    eventually("the first member paused for the outage", || {
        let (status, report) = readiness(&first);
        status == Status::Down && report.contains("Cosmos DB outage")
    })
    .await;
    // o1's write holds the pause and probes with its own upserts.
    let hits = unavailable.hit_count();
    eventually("o1's write probes", || unavailable.hit_count() >= hits + 3).await;
    assert_eq!(
        probe_answered.hit_count(),
        0,
        "no probe of the sink's own yet"
    );

    // The join revokes every partition of the first member, o1's among them: its write ends
    // unanswered and uncommitted.
    let second = start(member(second_handled.clone())).await;
    eventually("o1 read again by either member", || {
        second_handled.load(Ordering::SeqCst) == 1 || first_handled.load(Ordering::SeqCst) == 2
    })
    .await;
    if second_handled.load(Ordering::SeqCst) == 1 {
        // Nothing is left for the first member to write: it probes on its own, and the answer
        // ends its pause though every upsert still fails.
        eventually("the first member's own probe", || {
            probe_answered.hit_count() >= 1
        })
        .await;
        eventually("the first member ready again", || {
            readiness(&first).0 == Status::Up
        })
        .await;
        assert!(unavailable.is_enabled(), "every upsert still fails");
    }

    // Whichever member read o1 writes it once Cosmos DB answers.
    unavailable.disable();
    pipeline.wait_for_commit(partition, 1).await;
    assert_eq!(
        amounts(&pipeline.documents().await),
        vec![("o1".to_owned(), 1)]
    );
    for member in [&first, &second] {
        eventually("readiness UP", || readiness(member).0 == Status::Up).await;
    }
    assert_eq!(
        end_offset(&pipeline.dead_letters, 0),
        0,
        "nothing dead-lettered"
    );
    second.shutdown().await;
    first.shutdown().await;
}

/// Readiness says the latest failure of an outage, not its first: Cosmos DB came back, but
/// refuses the key (or has lost the database), and the operator must see that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_outages_latest_failure() {
    let unavailable = error_fault("503", FaultInjectionErrorType::ServiceUnavailable);
    let refused = status_fault("401", StatusCode::Unauthorized);
    refused.disable();
    let pipeline = Pipeline::new(1);
    let orders: Vec<Order> = (0..3).map(|n| order(&format!("r{n}"), n)).collect();
    pipeline.produce(&orders);
    let app = start(
        pipeline
            .app(&[refused.clone(), unavailable.clone()])
            .set("messaging.outgoing.orders-db.outage.threshold", 2)
            .processor("orders", "orders-db", store),
    )
    .await;
    eventually("readiness DOWN for the 503s", || {
        let (status, report) = readiness(&app);
        status == Status::Down && report.contains("Cosmos DB outage") && report.contains("503")
    })
    .await;
    // The 401 on before the 503 off: no probe in between can succeed and end the outage.
    refused.enable();
    unavailable.disable();
    eventually("readiness DOWN for the 401s", || {
        let (status, report) = readiness(&app);
        status == Status::Down
            && report.contains("Cosmos DB outage")
            && report.contains("401")
            && !report.contains("503")
    })
    .await;
    refused.disable();
    pipeline.wait_for_documents(orders.len()).await;
    pipeline.wait_for_commit(0, orders.len() as i64).await;
    eventually("readiness UP again", || readiness(&app).0 == Status::Up).await;
    app.shutdown().await;
}

/// Records with keys, into a container partitioned by `/id` with ids made by `strategy`; a
/// record without a value is a tombstone.
async fn ids_written_with(
    settings: &[(&str, &str)],
    records: &[(&str, Option<&str>)],
) -> Vec<Value> {
    let pipeline = Pipeline::new(1);
    // One at a time, in order: a tombstone goes through a producer of its own.
    for (key, value) in records {
        match value {
            Some(value) => produce(
                &pipeline.topic,
                &[Record {
                    key: Some(key.as_bytes()),
                    ..Record::value(value.as_bytes())
                }],
            ),
            None => produce_tombstone(&pipeline.topic, key.as_bytes()),
        }
    }
    let mut builder = pipeline
        .app(&[])
        .set("messaging.outgoing.orders-db.partition-key.paths", "/id");
    for (key, value) in settings {
        builder = builder.set(&format!("messaging.outgoing.orders-db.{key}"), value);
    }
    let app = start(
        builder.processor("orders", "orders-db", |value: Option<Value>| async move {
            Ok::<_, std::convert::Infallible>(value)
        }),
    )
    .await;
    pipeline.wait_for_commit(0, records.len() as i64).await;
    app.shutdown().await;
    assert_eq!(
        end_offset(&pipeline.dead_letters, 0),
        0,
        "nothing dead-lettered"
    );
    pipeline
        .documents()
        .await
        .into_iter()
        .map(|document| serde_json::json!({"id": document["id"], "n": document["n"]}))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_metadata_ids_name_each_record_by_its_place() {
    let written = ids_written_with(
        &[("id.strategy", "kafka-metadata")],
        &[("k", Some(r#"{"n":1}"#)), ("k", Some(r#"{"n":2}"#))],
    )
    .await;
    let ids: Vec<&str> = written.iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2);
    assert!(
        ids[0].ends_with("-0-0") && ids[1].ends_with("-0-1"),
        "{ids:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_ids_replace_the_characters_cosmos_refuses() {
    let written = ids_written_with(
        &[
            ("id.strategy", "template"),
            ("id.template", "order/${key}#${offset}"),
        ],
        &[("a?b", Some(r#"{"n":1}"#))],
    )
    .await;
    assert_eq!(
        written,
        vec![serde_json::json!({"id": "order_a_b_0", "n": 1})]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_deletes_its_document_when_asked_to() {
    let written = ids_written_with(
        &[("id.strategy", "key"), ("delete-on-tombstone", "true")],
        &[
            ("gone", Some(r#"{"n":1}"#)),
            ("kept", Some(r#"{"n":2}"#)),
            ("lost", Some(r#"{"n":3}"#)),
            // A JSON null, and a Kafka tombstone (no value), which an `Option` handler
            // receives as `None`.
            ("gone", Some("null")),
            ("lost", None),
        ],
    )
    .await;
    assert_eq!(written, vec![serde_json::json!({"id": "kept", "n": 2})]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_keeps_the_first_write_and_counts_a_conflict_as_written() {
    let written = ids_written_with(
        &[("id.strategy", "key"), ("write.strategy", "create")],
        &[("same", Some(r#"{"n":1}"#)), ("same", Some(r#"{"n":2}"#))],
    )
    .await;
    assert_eq!(written, vec![serde_json::json!({"id": "same", "n": 1})]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hierarchical_partition_keys_are_read_from_the_document() {
    let pipeline = Pipeline::new(1);
    produce_values(
        &pipeline.topic,
        &[
            r#"{"id":"x","tenant":"t1","user":"u1","n":1}"#,
            r#"{"id":"x","tenant":"t1","user":"u2","n":2}"#,
        ],
    );
    let app = start(
        pipeline
            .app(&[])
            .set(
                "messaging.outgoing.orders-db.partition-key.paths",
                "/tenant,/user",
            )
            .processor("orders", "orders-db", |value: Value| async move {
                Ok::<_, std::convert::Infallible>(value)
            }),
    )
    .await;
    pipeline.wait_for_commit(0, 2).await;
    app.shutdown().await;
    let documents = pipeline.documents().await;
    let users: Vec<&str> = documents
        .iter()
        .map(|d| d["user"].as_str().unwrap())
        .collect();
    assert_eq!(
        users.len(),
        2,
        "one id in two hierarchical partitions: {documents:?}"
    );
}

/// An app whose only channel is `orders-db`, a sink to the embedded emulator's `orders`.
fn embedded_orders_db() -> AppBuilder {
    builder()
        .outgoing("orders-db")
        .set("messaging.outgoing.orders-db.connector", "cosmos")
        .set("messaging.outgoing.orders-db.endpoint", "embedded")
        .set("messaging.outgoing.orders-db.database", DATABASE)
        .set("messaging.outgoing.orders-db.container", "orders")
}

async fn start_error(builder: AppBuilder) -> String {
    let error = builder
        .build()
        .expect("valid configuration")
        .start()
        .await
        .err()
        .expect("the start fails");
    error.to_string()
}

/// The configuration error `builder` is refused with (`what` says what was set): its key and
/// its text.
fn refused(builder: AppBuilder, what: &str) -> (String, String) {
    let error = builder
        .build()
        .err()
        .unwrap_or_else(|| panic!("{what} is refused"));
    let Error::Config(error) = &error else {
        panic!("{what}: a configuration error, not {error}")
    };
    (error.key().to_owned(), error.to_string())
}

#[test]
fn a_max_concurrency_out_of_range_is_refused_naming_its_key() {
    for max_concurrency in ["0", "10001", "many"] {
        let builder = memory_into_cosmos()
            .set(
                "messaging.outgoing.orders-db.max-concurrency",
                max_concurrency,
            )
            .processor("orders", "orders-db", store);
        let (key, text) = refused(builder, max_concurrency);
        assert_eq!(key, "messaging.outgoing.orders-db.max-concurrency");
        assert!(text.contains("from 1 to 10000"), "{text}");
    }
}

/// Refused by `build`, before anything connects. The host-less ones parse as URLs, and the
/// SDK panicked on them at startup.
#[test]
fn a_malformed_endpoint_is_refused_naming_its_key() {
    for endpoint in [
        "myaccount.documents",
        "htps:/127.0.0.1:8081",
        "foo:bar",
        "mailto:someone@example.com",
        "https://:443/",
        "ftp://myaccount.documents.azure.com/",
    ] {
        let builder = builder()
            .outgoing("orders-db")
            .set("messaging.outgoing.orders-db.connector", "cosmos")
            .set("messaging.outgoing.orders-db.endpoint", endpoint)
            .set("messaging.outgoing.orders-db.key", "c2VjcmV0")
            .set("messaging.outgoing.orders-db.database", DATABASE)
            .set("messaging.outgoing.orders-db.container", "orders");
        let (key, text) = refused(builder, endpoint);
        assert_eq!(key, "messaging.outgoing.orders-db.endpoint");
        assert!(
            text.contains("not a Cosmos DB account URL") && text.contains(endpoint),
            "{text}"
        );
    }
    // A connection string pasted as the endpoint: refused, and its key not shown.
    let connection_string =
        "AccountEndpoint=https://acct.documents.azure.com:443/;AccountKey=c2VjcmV0S0VZ;";
    let error = builder()
        .outgoing("orders-db")
        .set("messaging.outgoing.orders-db.connector", "cosmos")
        .set("messaging.outgoing.orders-db.endpoint", connection_string)
        .set("messaging.outgoing.orders-db.database", DATABASE)
        .set("messaging.outgoing.orders-db.container", "orders")
        .build()
        .err()
        .expect("a connection string is refused");
    let text = format!("{error} {error:?}");
    assert!(text.contains("a connection string"), "{text}");
    assert!(!text.contains("c2VjcmV0S0VZ"), "the key shows: {text}");
}

#[test]
fn an_account_without_a_key_or_a_token_credential_is_refused_naming_the_key() {
    let error = builder()
        .outgoing("orders-db")
        .set("messaging.outgoing.orders-db.connector", "cosmos")
        .set(
            "messaging.outgoing.orders-db.endpoint",
            "https://myaccount.documents.azure.com:443/",
        )
        .set("messaging.outgoing.orders-db.database", DATABASE)
        .set("messaging.outgoing.orders-db.container", "orders")
        .build()
        .err()
        .expect("refused")
        .to_string();
    assert!(
        error.contains("messaging.outgoing.orders-db.key") && error.contains("cosmos_credential"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_key_fails_the_start_naming_its_key() {
    let rejected = Arc::new(
        FaultInjectionRuleBuilder::new("401", answering(StatusCode::Unauthorized).build())
            .with_condition(
                FaultInjectionConditionBuilder::new()
                    .with_operation_type(FaultOperationType::MetadataReadContainer)
                    .build(),
            )
            .build(),
    );
    let error = start_error(
        embedded_orders_db()
            .embedded_cosmos(EmbeddedCosmos::new().with_fault_rules(vec![rejected])),
    )
    .await;
    assert!(
        error.contains("rejected the key") && error.contains("messaging.outgoing.orders-db.key"),
        "{error}"
    );
}

/// A tombstone carries only its key, so deleting by tombstone needs the id to be the partition
/// key: refused at the start rather than dead-lettering every tombstone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_on_tombstone_on_a_container_not_partitioned_by_id_fails_the_start() {
    let error = start_error(
        embedded_orders_db()
            .set(
                "messaging.outgoing.orders-db.partition-key.paths",
                "/tenant",
            )
            .set("messaging.outgoing.orders-db.id.strategy", "key")
            .set("messaging.outgoing.orders-db.delete-on-tombstone", "true")
            .embedded_cosmos(EmbeddedCosmos::new()),
    )
    .await;
    assert!(
        error.contains("messaging.outgoing.orders-db.delete-on-tombstone = true")
            && error.contains("partitioned by /tenant"),
        "{error}"
    );
}
