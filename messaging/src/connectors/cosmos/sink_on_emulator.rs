//! A Cosmos DB sink on the SDK's in-memory emulator, for the library's own tests of the write
//! path and the outage handling.

use std::borrow::Cow;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use azure_data_cosmos::clients::ContainerClient;
use azure_data_cosmos::models::{ContainerProperties, PartitionKeyDefinition};
use tokio::sync::Semaphore;

use super::document::DocumentShape;
use super::document_order::DocumentOrder;
use super::outage::Outage;
use super::sink::{room_for, CosmosSink, Shared};
use super::EmbeddedCosmos;
use crate::config::{IdStrategy, OnOutage};
use crate::health::HealthRegistry;
use crate::metrics::Metrics;
use crate::retry::RetryPolicy;

/// Creates the container `orders` (partitioned by `/id`) in the database `db`.
pub(super) async fn create_container(cosmos: &EmbeddedCosmos) {
    let properties = ContainerProperties::new(
        "orders".to_owned(),
        PartitionKeyDefinition::new(vec![Cow::Borrowed("/id")]),
    );
    let setup = cosmos.client().await.expect("client");
    setup
        .database_client("db")
        .create_container(properties, None)
        .await
        .expect("container");
}

/// A sink writing to `orders` in `db` on `cosmos`, with 3 retries from 100 ms (no jitter) and
/// an `outage.threshold` of 3; the channel `orders-db` registered with `health`, ready.
pub(super) async fn sink_into(
    cosmos: &EmbeddedCosmos,
    health: &HealthRegistry,
    on_outage: OnOutage,
    max_concurrency: usize,
) -> CosmosSink {
    sink_with(cosmos, health, on_outage, max_concurrency, 3, 3).await
}

/// [`sink_into`] with another `outage.threshold` and `retry.max-retries`.
pub(super) async fn sink_with(
    cosmos: &EmbeddedCosmos,
    health: &HealthRegistry,
    on_outage: OnOutage,
    max_concurrency: usize,
    outage_threshold: u32,
    max_retries: u32,
) -> CosmosSink {
    let setup = cosmos.client().await.expect("client");
    setup.create_database("db", None).await.expect("database");
    create_container(cosmos).await;
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
            max_retries,
            Duration::from_millis(100),
            Duration::from_secs(1),
            2.0,
            0.0,
            None,
        ),
        on_outage,
        outage: Outage::new(
            "orders-db",
            health.clone(),
            sink_metrics.clone(),
            outage_threshold,
        ),
        health: health.clone(),
        metrics: sink_metrics,
        cosmos_metrics: metrics.cosmos_channel("orders-db"),
        room: Arc::new(Semaphore::new(room_for(max_concurrency))),
        requests: Semaphore::new(max_concurrency),
        max_concurrency,
        order: Arc::new(DocumentOrder::default()),
        failed: AtomicBool::new(false),
    })
}

/// A client of `orders` in `db` on `cosmos`, for a test to look at what was written.
pub(super) async fn orders(cosmos: &EmbeddedCosmos) -> ContainerClient {
    cosmos
        .client()
        .await
        .expect("client")
        .database_client("db")
        .container_client("orders", None)
        .await
        .expect("container client")
}
