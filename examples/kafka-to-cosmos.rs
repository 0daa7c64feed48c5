//! Seed scenario "Kafka to Cosmos DB with a dead-letter queue".
//!
//! A producer emits orders to `main-topic`, some invalid (a negative amount) and some too large
//! for a Cosmos DB document. The handler validates each order and returns the document to
//! store; the `orders-db` channel writes it to Cosmos DB, retrying a failed write 3 times with
//! exponential backoff. What is rejected for good goes to `dlq-topic` with the reason, where a
//! second handler logs it. Offsets are committed only for orders durably in Cosmos DB (or in the
//! dead-letter topic). Once every order is settled it logs one summary line, and it serves
//! `/health` and `/metrics` until Ctrl-C.
//!
//! ```text
//! cargo run --example kafka-to-cosmos
//! curl localhost:8080/health/ready
//! ```
//!
//! With no configuration it runs on the embedded Kafka cluster and the embedded Cosmos DB
//! emulator. Set `MESSAGING_CONNECTOR_KAFKA_BOOTSTRAP_SERVERS` for a real broker, and
//! `MESSAGING_CONNECTOR_COSMOS_ENDPOINT` and `MESSAGING_CONNECTOR_COSMOS_KEY` for a real account
//! (the database `shop` and container `orders`, partitioned by `/customer`, must exist there).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::TryStreamExt;
use messaging::cosmos_sdk::feed::FeedScope;
use messaging::cosmos_sdk::{AccountReference, CosmosClient, RoutingStrategy};
use messaging::prelude::*;

const ORDERS: usize = 40;
const DATABASE: &str = "shop";
const CONTAINER: &str = "orders";

/// Orders settled so far: written, or dead-lettered.
static DEAD_LETTERED: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    id: String,
    customer: String,
    amount: i64,
    /// Items on the order; an order with tens of thousands is too large for one document.
    items: usize,
}

#[derive(Debug, Serialize)]
struct OrderDocument {
    id: String,
    customer: String,
    amount: i64,
    items: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("order {id} is invalid: the amount {amount} is negative")]
struct InvalidOrder {
    id: String,
    amount: i64,
}

#[incoming("orders", failure_strategy = "dead-letter-queue")]
#[outgoing("orders-db", connector = "cosmos")]
async fn store(order: Order) -> Result<OrderDocument, InvalidOrder> {
    if order.amount < 0 {
        return Err(InvalidOrder {
            id: order.id,
            amount: order.amount,
        });
    }
    Ok(OrderDocument {
        items: (0..order.items).map(|n| format!("item {n:>95}")).collect(),
        id: order.id,
        customer: order.customer,
        amount: order.amount,
    })
}

/// Logs each rejected order with the reason it was rejected.
#[incoming("dead-letters")]
async fn inspect(rejected: Message<Order>) -> messaging::Result<()> {
    let reason = rejected
        .kafka()
        .and_then(|record| record.header_str("dead-letter-reason"))
        .unwrap_or("unknown")
        .to_owned();
    tracing::warn!(order = %rejected.payload().id, %reason, "dead-lettered");
    DEAD_LETTERED.fetch_add(1, Ordering::SeqCst);
    rejected.ack().await
}

/// This run's orders: their ids begin with `prefix`, so that the summary counts this run's
/// documents only (a real account's container may hold others, earlier runs' too).
fn orders(prefix: &str) -> Vec<Order> {
    (0..ORDERS)
        .map(|n| Order {
            id: format!("{prefix}{n:03}"),
            customer: format!("customer-{}", n % 5),
            amount: if n % 10 == 7 { -5 } else { 10 * n as i64 },
            items: if n % 13 == 12 { 25_000 } else { 1 + n % 4 },
        })
        .collect()
}

#[tokio::main]
async fn main() -> messaging::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    // Defaults for a fresh machine; every one of them yields to the environment or messaging.toml.
    let cosmos = messaging::EmbeddedCosmos::shared();
    let app = App::builder()
        .discover()
        .outgoing("new-orders")
        .set("messaging.outgoing.new-orders.topic", "main-topic")
        .set("messaging.incoming.orders.topic", "main-topic")
        .set(
            "messaging.incoming.orders.dead-letter-queue.topic",
            "dlq-topic",
        )
        .set("messaging.incoming.dead-letters.topic", "dlq-topic")
        .set("messaging.connector.kafka.bootstrap.servers", "embedded")
        .set("messaging.connector.kafka.auto.offset.reset", "earliest")
        .set("messaging.connector.kafka.session.timeout.ms", 6000)
        .set("messaging.connector.cosmos.endpoint", "embedded")
        .set("messaging.outgoing.orders-db.database", DATABASE)
        .set("messaging.outgoing.orders-db.container", CONTAINER)
        .set(
            "messaging.outgoing.orders-db.partition-key.paths",
            "/customer",
        )
        .set("messaging.outgoing.orders-db.retry.max-retries", 3)
        .set("messaging.outgoing.orders-db.retry.initial-delay.ms", 200)
        .environment()
        .build()?
        .start()
        .await?;

    // Listening from the start: /health already says the service is up, so an orchestrator
    // (or the end-to-end test, once it reads the log line below) may send SIGTERM at any time.
    let shutdown_requested = app.wait_for_shutdown_signal();

    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let prefix = format!("order-{}-", started.as_millis());
    let orders = orders(&prefix);
    let new_orders = app.emitter::<Order>("new-orders")?;
    let count = orders.len();
    for order in orders {
        new_orders.send(order).await?;
    }
    tracing::info!(count, "orders sent");

    let documents = settled_documents(&cosmos, &prefix, count).await?;
    tracing::info!(
        "documents in {CONTAINER}: {documents}, dead-lettered: {}",
        DEAD_LETTERED.load(Ordering::SeqCst)
    );
    tracing::info!("serving /health until Ctrl-C");
    shutdown_requested.await;
    app.shutdown().await;
    Ok(())
}

/// Waits until every order of this run is either a document or a dead letter; returns the
/// documents.
async fn settled_documents(
    embedded: &messaging::EmbeddedCosmos,
    prefix: &str,
    orders: usize,
) -> messaging::Result<usize> {
    let client = match std::env::var("MESSAGING_CONNECTOR_COSMOS_ENDPOINT") {
        Ok(endpoint) => account_client(&endpoint).await,
        Err(_) => embedded.client().await,
    }
    .map_err(|error| messaging::Error::Nacked(messaging::Failure::from_error(error)))?;
    let container = client
        .database_client(DATABASE)
        .container_client(CONTAINER, None)
        .await
        .map_err(|error| messaging::Error::Nacked(messaging::Failure::from_error(error)))?;
    loop {
        let count = count_documents(&container, prefix).await;
        if count + DEAD_LETTERED.load(Ordering::SeqCst) >= orders {
            return Ok(count);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// This run's documents (their ids begin with `prefix`); 0 while the query fails. The ids are
/// filtered here, as the SDK's in-memory emulator (1.0.0) did not answer a `COUNT` over
/// `STARTSWITH`.
async fn count_documents(
    container: &messaging::cosmos_sdk::ContainerClient,
    prefix: &str,
) -> usize {
    let ids: Result<Vec<serde_json::Value>, _> = match container
        .query_items("SELECT c.id FROM c", FeedScope::full_container(), None)
        .await
    {
        Ok(pages) => pages.try_collect().await,
        Err(error) => Err(error),
    };
    ids.map_or(0, |ids| {
        ids.iter()
            .filter(|id| id["id"].as_str().is_some_and(|id| id.starts_with(prefix)))
            .count()
    })
}

async fn account_client(endpoint: &str) -> messaging::cosmos_sdk::Result<CosmosClient> {
    let key = std::env::var("MESSAGING_CONNECTOR_COSMOS_KEY").unwrap_or_default();
    let endpoint = endpoint.parse().map_err(|_| {
        messaging::cosmos_sdk::CosmosError::builder()
            .with_message("MESSAGING_CONNECTOR_COSMOS_ENDPOINT is not a URL")
            .build()
    })?;
    CosmosClient::builder()
        .build(
            AccountReference::with_authentication_key(endpoint, key),
            RoutingStrategy::ProximityTo(messaging::cosmos_sdk::options::Region::EAST_US),
        )
        .await
}
