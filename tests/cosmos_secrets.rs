//! The Cosmos DB account key never shows: not in a log line (at every level), a startup error,
//! Debug output or a dead-letter header. Its own test binary: it installs the process's
//! logger to read every line, and sets the key's environment variable.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use messaging::cosmos_sdk::fault_injection::{
    FaultInjectionConditionBuilder, FaultInjectionErrorType, FaultInjectionResultBuilder,
    FaultInjectionRuleBuilder, FaultOperationType,
};
use messaging::EmbeddedCosmos;
use serde_json::Value;

const KEY: &str = "c2VjcmV0LWFjY291bnQta2V5LW5ldmVyLXByaW50ZWQ=";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn assert_no_key(place: &str, text: &str) {
    assert!(!text.contains(KEY), "the key shows in {place}: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_key_never_shows() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_writer(move || writer.clone())
        .init();
    // SAFETY: set before any thread of this test binary reads the environment. The end-to-end
    // suite's variables share the prefix; this binary runs no end-to-end test.
    unsafe {
        std::env::set_var("MESSAGING_CONNECTOR_COSMOS_KEY", KEY);
        std::env::remove_var("MESSAGING_E2E_BOOTSTRAP");
        std::env::remove_var("MESSAGING_E2E_COSMOS_ENDPOINT");
    }

    // A startup that fails: the account cannot be reached.
    let error = messaging::App::builder()
        .environment()
        .outgoing("documents")
        .set("messaging.health.enabled", false)
        .set("messaging.outgoing.documents.connector", "cosmos")
        .set(
            "messaging.outgoing.documents.endpoint",
            "https://127.0.0.1:9/",
        )
        .set("messaging.outgoing.documents.database", "shop")
        .set("messaging.outgoing.documents.container", "orders")
        .build()
        .expect("valid configuration")
        .start()
        .await
        .err()
        .expect("no account listens there");
    assert_no_key("a startup error", &format!("{error} {error:?}"));

    // A pipeline on the embedded emulator with the key set: a rejected record, an outage.
    let topic = unique("secret-orders");
    create_topic(&topic, 1);
    let dead_letters = format!("{topic}-dlq");
    create_topic(&dead_letters, 1);
    produce_values(
        &topic,
        &[r#"{"id":"a"}"#, r#"{"id":"b/c"}"#, r#"{"id":"d"}"#],
    );
    let outage = Arc::new(
        FaultInjectionRuleBuilder::new(
            "outage",
            FaultInjectionResultBuilder::new()
                .with_error(FaultInjectionErrorType::ServiceUnavailable)
                .build(),
        )
        .with_condition(
            FaultInjectionConditionBuilder::new()
                .with_operation_type(FaultOperationType::UpsertItem)
                .build(),
        )
        .with_hit_limit(4)
        .build(),
    );
    let cosmos = EmbeddedCosmos::new();
    let app = start(
        reading("orders", &topic)
            .environment()
            .set(
                "messaging.incoming.orders.failure-strategy",
                "dead-letter-queue",
            )
            .set(
                "messaging.incoming.orders.dead-letter-queue.topic",
                &dead_letters,
            )
            .set("messaging.outgoing.documents.connector", "cosmos")
            .set("messaging.outgoing.documents.endpoint", "embedded")
            .set("messaging.outgoing.documents.database", "shop")
            .set("messaging.outgoing.documents.container", "orders")
            .set("messaging.outgoing.documents.outage.threshold", 2)
            .set("messaging.outgoing.documents.retry.initial-delay.ms", 5)
            .embedded_cosmos(cosmos.with_fault_rules(vec![outage]))
            .processor("orders", "documents", |document: Value| async move {
                Ok::<_, std::convert::Infallible>(document)
            }),
    )
    .await;
    let dead = read(&dead_letters, 1);
    for record in &dead {
        assert_no_key("a dead-letter record", &format!("{record:?}"));
        assert!(record.header("dead-letter-reason").is_some());
    }
    eventually("everything settled", || {
        committed(&topic, &topic, 0) == Some(3)
    })
    .await;
    assert_no_key(
        "the health report",
        &format!("{:?}", app.health().report(&[])),
    );
    app.shutdown().await;

    let logged = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(logged.contains("Cosmos DB outage"), "the logs are captured");
    assert_no_key("the logs", &logged);
}
