//! The sink's own probe, for a pause that no write is left to probe with (see
//! `Outage::nobody_probes`): a write request that changes nothing, every backoff, until Cosmos
//! DB answers it.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use azure_core::http::Etag;
use azure_data_cosmos::clients::ContainerClient;
use azure_data_cosmos::models::PartitionKey;
use azure_data_cosmos::options::{ItemWriteOptions, Precondition};
use futures_util::FutureExt;

use super::answer::{judge, FailedWrite};
use super::sink::Shared;
use crate::failure::Failure;

/// Probes every backoff while the channel is paused with no write left to probe with (see
/// `Outage::nobody_probes`): on an idle topic, or with every partition moved to other members,
/// no record would come to probe, and readiness would stay DOWN after Cosmos DB is back. An
/// answer ends the pause only while still no write is being made and no write failed since it
/// was sent: a write that started meanwhile probes, and its own answer decides.
pub(super) async fn probe_while_nobody_writes(shared: Arc<Shared>) {
    // Its own count, kept through one pause (writes that come and leave without an answer do
    // not make it start again); the writes' probes back off by theirs.
    let mut probes = 0;
    let mut counted_in = 0;
    loop {
        shared.outage.until_left_without_probe().await;
        if shared.outage.pauses() != counted_in {
            counted_in = shared.outage.pauses();
            probes = 0;
        }
        let mut retry_after = None;
        while shared.outage.paused_without_writes() {
            probes += 1;
            tokio::time::sleep(shared.retry.delay_before_probe(probes, retry_after)).await;
            let Some(partition_key) = shared.outage.probe_key() else {
                break;
            };
            if !shared.outage.paused_without_writes() {
                break;
            }
            let epoch = shared.outage.epoch();
            // A panic in the SDK must not end the probing for good.
            let probed = AssertUnwindSafe(probe_without_a_record(&shared.container, partition_key))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| {
                    Err(FailedWrite::Outage(Failure::from_panic_in(
                        panic,
                        "the Cosmos DB probe",
                    )))
                });
            match probed {
                Ok(()) => shared.outage.resume_if_nobody_writes(epoch),
                Err(failed) => {
                    retry_after = match &failed {
                        FailedWrite::Transient { retry_after, .. } => *retry_after,
                        _ => None,
                    };
                    shared.outage.probe_failed(failed.failure().reason());
                }
            }
        }
    }
}

/// The id the sink's own probe names: its condition keeps it from deleting a document that
/// has this id (see `probe_without_a_record`).
const PROBE_ID: &str = "messaging-outage-probe";
/// An ETag Cosmos DB never issues (its ETags are quoted GUID-like strings).
const NEVER_ISSUED_ETAG: &str = "\"messaging-never-issued\"";

/// A write request that changes nothing, in the partition of the write whose failure
/// paused: a delete of [`PROBE_ID`] on the condition that its ETag is one Cosmos DB never
/// issues. It goes to the write region, is charged and throttled as writes are, and is
/// refused as writes are for a key or a role that may not write. Answered, it is a 404 (no
/// such document) or a 412 (a document has that id: the condition fails, nothing is
/// deleted). A missing container answers 404 too (the in-memory emulator without a
/// sub-status), so after a 404 the container is read as well.
async fn probe_without_a_record(
    container: &ContainerClient,
    partition_key: PartitionKey,
) -> Result<(), FailedWrite> {
    let changes_nothing = ItemWriteOptions::default()
        .with_precondition(Precondition::IfMatch(Etag::from(NEVER_ISSUED_ETAG)));
    let Err(error) = container
        .delete_item(partition_key, PROBE_ID, Some(changes_nothing))
        .await
    else {
        // Only if the condition was lost on the way (a proxy that drops If-Match, say).
        tracing::error!(
            id = PROBE_ID,
            "the Cosmos DB outage probe deleted the document with its id: its If-Match condition did not reach Cosmos DB (something between the application and the account dropped it)"
        );
        return Ok(());
    };
    let status = error.status();
    let code = u16::from(status.status_code());
    let sub_status = status.sub_status().map_or(0, |sub| sub.value());
    match (error.is_from_wire(), code, sub_status) {
        (true, 412, _) => Ok(()),
        (true, 404, 0) => match container.read(None).await {
            Ok(_) => Ok(()),
            Err(error) => Err(classified(&error, "read of the container")),
        },
        _ => match classified(&error, "probe") {
            // Any other answer to this request (a 400, say) is Cosmos DB answering.
            FailedWrite::Permanent(_) => Ok(()),
            failed => Err(failed),
        },
    }
}

/// A failed probe's class and reason. `judge` lets a failure pass only for a create's 409 or
/// a delete's 404, neither of which a probe is.
fn classified(error: &azure_data_cosmos::CosmosError, request: &str) -> FailedWrite {
    judge(error, request, false).unwrap_or_else(|| {
        FailedWrite::Outage(super::answer::cosmos_failure(format!(
            "the {request} got {}",
            u16::from(error.status().status_code())
        )))
    })
}

// A partition revoked mid-outage leaves a pause without a write through the public API in
// `tests/cosmos_sink.rs` (`a_partition_revoked_mid_outage_leaves_the_sink_to_probe_on_its_own`).
// The other trigger, a request the SDK refuses, cannot be brought about on purpose: the tests
// here make that state themselves, and the probes go to a real (emulated) container through
// the SDK.
#[cfg(all(test, feature = "cosmos-embedded"))]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use azure_core::http::StatusCode;
    use azure_data_cosmos::fault_injection::{
        CustomResponseBuilder, FaultInjectionConditionBuilder, FaultInjectionErrorType,
        FaultInjectionResult, FaultInjectionResultBuilder, FaultInjectionRule,
        FaultInjectionRuleBuilder, FaultOperationType,
    };

    use super::super::outage::Outage;
    use super::super::sink_on_emulator::{create_container, orders, sink_into};
    use super::*;
    use crate::config::OnOutage;
    use crate::connectors::cosmos::EmbeddedCosmos;
    use crate::health::{Check, HealthRegistry, Status};
    use crate::message::Message;
    use crate::metadata::Metadata;
    use crate::outgoing::{Enqueued, Sink};

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

    fn on_probes(id: &str, result: FaultInjectionResult) -> Arc<FaultInjectionRule> {
        on_requests(FaultOperationType::DeleteItem, id, result)
    }

    fn on_requests(
        operation: FaultOperationType,
        id: &str,
        result: FaultInjectionResult,
    ) -> Arc<FaultInjectionRule> {
        Arc::new(
            FaultInjectionRuleBuilder::new(id, result)
                .with_condition(
                    FaultInjectionConditionBuilder::new()
                        .with_operation_type(operation)
                        .build(),
                )
                .build(),
        )
    }

    fn service_unavailable() -> FaultInjectionResult {
        FaultInjectionResultBuilder::new()
            .with_error(FaultInjectionErrorType::ServiceUnavailable)
            .build()
    }

    /// A write leaves the pause without an answer (its partition revoked, say).
    fn left_without_an_answer(outage: &Outage, reason: &str, id: &str) {
        let write = outage.writing();
        outage.pause(reason, &PartitionKey::from(id.to_owned()));
        drop(write);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_left_without_a_write_is_probed_until_cosmos_db_answers() {
        let unavailable = on_probes("unavailable", service_unavailable());
        // A document has the probe's id: answered 412 (after 1 s), and nothing deleted.
        let late_answer = on_probes(
            "412 after 1 s",
            FaultInjectionResultBuilder::new()
                .with_custom_response(
                    CustomResponseBuilder::new(StatusCode::PreconditionFailed).build(),
                )
                .with_delay(Duration::from_secs(1))
                .build(),
        );
        late_answer.disable();
        let cosmos =
            EmbeddedCosmos::new().with_fault_rules(vec![unavailable.clone(), late_answer.clone()]);
        let health = HealthRegistry::default();
        let sink = sink_into(&cosmos, &health, OnOutage::Pause, 4).await;
        let outage = &sink.shared.outage;

        left_without_an_answer(outage, "Cosmos DB answered the upsert with 503", "o1");
        assert!(!outage.gate.is_closed(), "a record may come to probe");
        // None comes: the sink probes every backoff, and readiness gives the probes' failure.
        let probes_failing = tokio::time::Instant::now();
        within_a_minute("three probes", || unavailable.hit_count() == 3).await;
        let (status, report) = readiness(&health);
        assert_eq!(status, Status::Down, "{report}");
        assert!(
            report.contains("no write left to probe with") && report.contains("the probe with 503"),
            "{report}"
        );
        // Backoffs of 100, 200 and 400 ms before the three probes.
        assert!(
            probes_failing.elapsed() >= Duration::from_millis(700),
            "{:?}",
            probes_failing.elapsed()
        );

        // A record comes and its write probes: the sink does not while it is being made.
        let write = outage.writing();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(
            unavailable.hit_count(),
            3,
            "no probe of its own while a write probes"
        );
        assert!(outage.is_paused());
        drop(write);

        // A probe's answer that comes after a newer failure does not end the pause.
        unavailable.disable();
        late_answer.enable();
        within_a_minute("a probe sent", || late_answer.hit_count() == 1).await;
        late_answer.disable();
        left_without_an_answer(outage, "Cosmos DB answered the upsert with 429", "o1");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(
            outage.is_paused(),
            "the 412 answered a probe sent before the 429"
        );

        // The next probe is answered (a 404: no document has its id): the pause ends. That
        // answer is no record's, so no record's retries are judged by it.
        let answers = outage.answers();
        within_a_minute("the pause ended", || !outage.is_paused()).await;
        assert_eq!(readiness(&health).0, Status::Up);
        assert!(!outage.gate.is_closed());
        assert_eq!(outage.answers(), answers);
        // No more probes once it answered (each would hit the fault again).
        unavailable.enable();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(unavailable.hit_count(), 3, "no probe while not paused");
        // The next pause's probes back off from the start again: the first after 100 ms.
        left_without_an_answer(outage, "Cosmos DB answered the upsert with 503", "o1");
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(unavailable.hit_count(), 4);
        unavailable.disable();
        within_a_minute("the pause ended", || !outage.is_paused()).await;

        // The container is deleted: its 404 is no answer, and the probing goes on until the
        // container is back.
        orders(&cosmos).await.delete(None).await.unwrap();
        left_without_an_answer(outage, "Cosmos DB answered the upsert with 404", "o1");
        tokio::time::sleep(Duration::from_secs(30)).await;
        let (status, report) = readiness(&health);
        assert_eq!(status, Status::Down, "{report}");
        assert!(
            report.contains("read of the container with 404"),
            "{report}"
        );
        create_container(&cosmos).await;
        within_a_minute("the pause ended", || !outage.is_paused()).await;
        assert_eq!(readiness(&health).0, Status::Up);

        // A document has the probe's id, in the partition probed: Cosmos DB answers 412 (the
        // condition fails), which ends the pause, and the document is left as it was.
        let container = orders(&cosmos).await;
        let etag = |document: serde_json::Value| document["_etag"].as_str().unwrap().to_owned();
        container
            .create_item(
                PROBE_ID,
                PROBE_ID,
                serde_json::json!({"id": PROBE_ID, "n": 1}),
                None,
            )
            .await
            .unwrap();
        let before = container.read_item(PROBE_ID, PROBE_ID, None).await.unwrap();
        let before = etag(before.into_model().unwrap());
        left_without_an_answer(outage, "Cosmos DB answered the upsert with 503", PROBE_ID);
        within_a_minute("the pause ended", || !outage.is_paused()).await;
        let after = container.read_item(PROBE_ID, PROBE_ID, None).await;
        let after = after
            .expect("the probe deleted nothing")
            .into_model()
            .unwrap();
        assert_eq!(etag(after), before, "nor changed anything");

        // Shut down: writes abandoned now do not set the probe going.
        sink.flush(Duration::from_secs(1)).await;
        unavailable.enable();
        left_without_an_answer(outage, "Cosmos DB answered the upsert with 503", "o1");
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(unavailable.hit_count(), 4, "no probe after the shutdown");
    }

    /// The sink never probes on its own under `on-outage = dead-letter` (which never pauses:
    /// the record goes to the failure strategy) or `fail` (which closes the intake for good
    /// and fails the channel): nothing is sent to Cosmos DB after that.
    #[tokio::test(start_paused = true)]
    async fn only_a_sink_that_pauses_probes_on_its_own() {
        for on_outage in [OnOutage::DeadLetter, OnOutage::Fail] {
            let upserts_unavailable = on_requests(
                FaultOperationType::UpsertItem,
                "upserts",
                service_unavailable(),
            );
            let probes = on_probes("probes", service_unavailable());
            let cosmos = EmbeddedCosmos::new()
                .with_fault_rules(vec![upserts_unavailable.clone(), probes.clone()]);
            let health = HealthRegistry::default();
            let sink = sink_into(&cosmos, &health, on_outage, 4).await;
            let order = Message::from_parts(br#"{"id":"o1"}"#.to_vec(), Metadata::default(), None);
            let Enqueued::Delivering(delivery) = sink.enqueue(order).await else {
                panic!("above max-concurrency 1 the write runs in a delivery of its own");
            };
            let failure = delivery.await.expect_err("every upsert answered 503");
            assert!(failure.reason().contains("503"), "{}", failure.reason());
            // The first try and three retries with `on-outage = dead-letter`; `fail` gives up
            // at the third failure in a row (`outage.threshold`).
            let tries = if on_outage == OnOutage::Fail { 3 } else { 4 };
            assert_eq!(upserts_unavailable.hit_count(), tries, "{on_outage:?}");
            assert_eq!(
                sink.shared.failed.load(Ordering::SeqCst),
                on_outage == OnOutage::Fail,
                "{on_outage:?}"
            );
            tokio::time::sleep(Duration::from_secs(600)).await;
            // `dead-letter` never pauses; `fail` closes the intake for good, with no probe.
            let outage = &sink.shared.outage;
            assert_eq!(outage.pauses(), 0, "{on_outage:?}");
            assert_eq!(outage.is_paused(), on_outage == OnOutage::Fail);
            assert_eq!(outage.gate.is_closed(), on_outage == OnOutage::Fail);
            assert_eq!(probes.hit_count(), 0, "{on_outage:?}: no probe");
            assert_eq!(upserts_unavailable.hit_count(), tries, "{on_outage:?}");
        }
    }
}
