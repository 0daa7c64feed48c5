//! End-to-end tests of the Cosmos DB sink over real HTTPS: a Cosmos DB emulator served on
//! loopback (`../shared/tools/cosmos-emulator`; `.ci/run` starts one and sets
//! `MESSAGING_E2E_COSMOS_ENDPOINT`), fed by the independent Kafka broker
//! (`MESSAGING_E2E_BOOTSTRAP`).
//!
//! Without those variables these tests say so and return, except under CI (`CI` set), where a
//! missing one is a failure. The emulator keeps everything in memory and starts empty; each test
//! uses databases of its own.

mod common;

use common::*;
use futures_util::TryStreamExt;
use messaging::cosmos_sdk::clients::ContainerClient;
use messaging::cosmos_sdk::feed::FeedScope;
use messaging::cosmos_sdk::models::{ContainerProperties, PartitionKeyDefinition};
use messaging::cosmos_sdk::options::{
    BinaryEncodingOptions, ConnectionPoolOptions, PartitionFailoverOptions,
    PartitionTopologyCacheMode, Region, ServerCertificateValidation,
};
use messaging::cosmos_sdk::{
    AccountReference, CosmosClient, CosmosRuntime, Query, RoutingStrategy,
};
use messaging::AppBuilder;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The emulator accepts any key; the SDK wants valid base64. This is the well-known key of
/// Microsoft's Cosmos DB emulator.
const EMULATOR_KEY: &str =
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Order {
    id: String,
    customer: String,
    amount: i64,
}

#[derive(Serialize)]
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

/// The handler of the kafka-to-cosmos example: validates an order, returns the document to store.
async fn store(order: Order) -> Result<OrderDocument, InvalidOrder> {
    if order.amount < 0 {
        return Err(InvalidOrder {
            id: order.id,
            amount: order.amount,
        });
    }
    Ok(OrderDocument {
        items: (0..order.amount % 4).map(|n| format!("item {n}")).collect(),
        id: order.id,
        customer: order.customer,
        amount: order.amount,
    })
}

/// A client of the emulator with the settings the sink uses for an endpoint on this machine
/// (see `connect.rs`): its certificate accepted, HTTP/1.1, partition topology read lazily,
/// text JSON.
async fn emulator_client(endpoint: &str) -> CosmosClient {
    let pool = ConnectionPoolOptions::builder()
        .with_server_certificate_validation(ServerCertificateValidation::RequiredUnlessEmulator)
        .with_is_http2_allowed(false)
        .build()
        .expect("connection pool options");
    let runtime = CosmosRuntime::builder()
        .with_connection_pool(pool)
        .build()
        .await
        .expect("runtime");
    let topology = PartitionFailoverOptions::builder()
        .with_partition_topology_cache_mode(PartitionTopologyCacheMode::Lazy)
        .build()
        .expect("partition options");
    CosmosClient::builder()
        .with_runtime(runtime)
        .with_partition_failover_options(topology)
        .with_binary_encoding_options(BinaryEncodingOptions::new().with_enabled(false))
        .build(
            AccountReference::with_authentication_key(
                endpoint.parse().expect("an account URL"),
                EMULATOR_KEY.to_owned(),
            ),
            RoutingStrategy::ProximityTo(Region::EAST_US),
        )
        .await
        .expect("emulator client")
}

/// Creates a database and a container partitioned by `partition_key`, as an operator would
/// before starting the application.
async fn create_container(
    client: &CosmosClient,
    database: &str,
    container: &str,
    partition_key: &str,
) -> ContainerClient {
    client
        .create_database(database, None)
        .await
        .expect("database created");
    let properties = ContainerProperties::new(
        container.to_owned(),
        PartitionKeyDefinition::new(vec![std::borrow::Cow::Owned(partition_key.to_owned())]),
    );
    let database = client.database_client(database);
    database
        .create_container(properties, None)
        .await
        .expect("container created");
    database
        .container_client(container, None)
        .await
        .expect("container client")
}

/// Every document of these customers (the partition key values), by id. One query per
/// partition key value, naming it in the query too: a cross-partition query needs the partition
/// key ranges, which the emulator serves in a shape the SDK does not read, and the emulator
/// answers a query that does not name the partition key with 400.
async fn documents(container: &ContainerClient, customers: &[String]) -> Vec<Value> {
    let mut documents: Vec<Value> = Vec::new();
    for customer in customers {
        let found: Vec<Value> = container
            .query_items::<Value>(
                Query::from("SELECT * FROM c WHERE c.customer = @customer")
                    .with_parameter("@customer", customer)
                    .expect("a parameter"),
                FeedScope::partition(customer.clone()),
                None,
            )
            .await
            .expect("query")
            .try_collect()
            .await
            .expect("documents");
        documents.extend(found);
    }
    documents.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    documents
}

/// `orders-db` writing to the emulator with its key.
fn to_cosmos(builder: AppBuilder, endpoint: &str, database: &str, container: &str) -> AppBuilder {
    to_cosmos_without_key(builder, endpoint, database, container)
        .set("messaging.outgoing.orders-db.key", EMULATOR_KEY)
}

/// `orders-db` writing to the emulator, authenticated otherwise.
fn to_cosmos_without_key(
    builder: AppBuilder,
    endpoint: &str,
    database: &str,
    container: &str,
) -> AppBuilder {
    builder
        .set("messaging.outgoing.orders-db.connector", "cosmos")
        .set("messaging.outgoing.orders-db.endpoint", endpoint)
        .set("messaging.outgoing.orders-db.database", database)
        .set("messaging.outgoing.orders-db.container", container)
}

/// The kafka-to-cosmos pipeline on the independent broker and the emulator: valid orders end
/// in the container (the last write of an id wins), invalid ones in the dead-letter topic with
/// their reason, and every offset is committed. Unlike the example, no order is too large:
/// this emulator takes a document of any size (Cosmos DB answers 413 above 2 MB), so the 413
/// path is tested on the in-memory emulator (`tests/cosmos_sink.rs`), which enforces the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_end_in_cosmos_or_in_the_dead_letter_topic_with_their_reason() {
    let (Some(bootstrap), Some(endpoint)) = (broker(), cosmos_endpoint()) else {
        return;
    };
    let topic = unique("orders");
    let dead_letters = format!("{topic}-dlq");
    create_topics(&bootstrap, &[(&topic, 2), (&dead_letters, 1)]).await;
    let (database, container) = (unique("shop"), unique("orders"));
    let client = emulator_client(&endpoint).await;
    let orders_db = create_container(&client, &database, &container, "/customer").await;

    // order-07, order-17 and order-27 are invalid; order-03 is sent again with a new amount.
    let mut orders: Vec<Order> = (0..30)
        .map(|n| Order {
            id: format!("order-{n:02}"),
            customer: format!("customer-{}", n % 4),
            amount: if n % 10 == 7 { -5 } else { 10 * n },
        })
        .collect();
    orders.push(Order {
        amount: 31,
        ..orders[3].clone()
    });
    let payloads: Vec<String> = orders
        .iter()
        .map(|order| serde_json::to_string(order).unwrap())
        .collect();
    {
        let (bootstrap, topic) = (bootstrap.clone(), topic.clone());
        let keys: Vec<String> = orders.iter().map(|order| order.id.clone()).collect();
        tokio::task::spawn_blocking(move || {
            let records: Vec<Record<'_>> = payloads
                .iter()
                .zip(&keys)
                .map(|(payload, key)| Record {
                    key: Some(key.as_bytes()),
                    ..Record::value(payload.as_bytes())
                })
                .collect();
            produce_at(&bootstrap, &topic, &records);
        })
        .await
        .unwrap();
    }

    let app = start(
        to_cosmos(
            reading("orders", &topic)
                .set("messaging.connector.kafka.bootstrap.servers", &bootstrap)
                .set("messaging.connector.kafka.session.timeout.ms", 6000)
                .set(
                    "messaging.incoming.orders.failure-strategy",
                    "dead-letter-queue",
                )
                .set(
                    "messaging.incoming.orders.dead-letter-queue.topic",
                    &dead_letters,
                ),
            &endpoint,
            &database,
            &container,
        )
        .set("messaging.outgoing.orders-db.retry.max-retries", 3)
        .set("messaging.outgoing.orders-db.retry.initial-delay.ms", 50)
        .processor("orders", "orders-db", store),
    )
    .await;

    // An offset is committed once its order is in Cosmos DB or in the dead-letter topic.
    let ends: Vec<i64> = {
        let (bootstrap, topic) = (bootstrap.clone(), topic.clone());
        tokio::task::spawn_blocking(move || {
            (0..2)
                .map(|partition| end_offset_at(&bootstrap, &topic, partition))
                .collect()
        })
        .await
        .unwrap()
    };
    assert_eq!(ends.iter().sum::<i64>(), orders.len() as i64);
    eventually("every offset committed", || {
        (0..2).all(|partition| {
            committed_at(&bootstrap, &topic, &topic, partition) == Some(ends[partition as usize])
        })
    })
    .await;

    let invalid: Vec<&Order> = orders.iter().filter(|order| order.amount < 0).collect();
    let dead = {
        let (bootstrap, dead_letters) = (bootstrap.clone(), dead_letters.clone());
        let count = invalid.len();
        tokio::task::spawn_blocking(move || read_at(&bootstrap, &dead_letters, count))
            .await
            .unwrap()
    };
    let mut rejected: Vec<(Order, String)> = dead
        .iter()
        .map(|record| {
            (
                serde_json::from_str(record.value_str()).expect("the order as sent"),
                record
                    .header("dead-letter-reason")
                    .expect("a reason")
                    .to_owned(),
            )
        })
        .collect();
    rejected.sort_by(|a, b| a.0.id.cmp(&b.0.id));
    assert_eq!(
        rejected.iter().map(|(order, _)| order).collect::<Vec<_>>(),
        invalid
    );
    for (order, reason) in &rejected {
        assert_eq!(
            reason,
            &format!(
                "order {} is invalid: the amount {} is negative",
                order.id, order.amount
            )
        );
    }
    {
        let (bootstrap, dead_letters) = (bootstrap.clone(), dead_letters.clone());
        let end = tokio::task::spawn_blocking(move || end_offset_at(&bootstrap, &dead_letters, 0))
            .await
            .unwrap();
        assert_eq!(end, invalid.len() as i64, "only the invalid orders");
    }

    // What the application wrote, read back over HTTPS with the SDK.
    let mut expected: Vec<(String, String, i64)> = Vec::new();
    for order in orders.iter().filter(|order| order.amount >= 0) {
        expected.retain(|(id, _, _)| id != &order.id);
        expected.push((order.id.clone(), order.customer.clone(), order.amount));
    }
    expected.sort();
    let mut customers: Vec<String> = orders.iter().map(|order| order.customer.clone()).collect();
    customers.sort();
    customers.dedup();
    let stored: Vec<(String, String, i64)> = documents(&orders_db, &customers)
        .await
        .iter()
        .map(|document| {
            (
                document["id"].as_str().expect("an id").to_owned(),
                document["customer"]
                    .as_str()
                    .expect("a customer")
                    .to_owned(),
                document["amount"].as_i64().expect("an amount"),
            )
        })
        .collect();
    assert_eq!(stored, expected);
    assert!(stored.contains(&("order-03".to_owned(), "customer-3".to_owned(), 31)));
    app.shutdown().await;
}

/// The memory connector into `orders-db` on the emulator: no broker needed.
fn from_memory(endpoint: &str, database: &str, container: &str) -> AppBuilder {
    to_cosmos(memory_app(), endpoint, database, container).processor("orders", "orders-db", store)
}

fn memory_app() -> AppBuilder {
    messaging::App::builder()
        .set("messaging.health.enabled", false)
        .set("messaging.application-name", unique("app"))
        .set("messaging.incoming.orders.connector", "memory")
}

/// Hands `order` to the memory channel, waits for its write, and returns the documents of its
/// customer in `container`.
async fn write_through(
    app: &messaging::RunningApp,
    container: &ContainerClient,
    order: &Order,
) -> Vec<Value> {
    let source = app.in_memory_source("orders").expect("the memory channel");
    let written = tokio::time::timeout(PATIENCE, source.send(order.clone()))
        .await
        .expect("the write settles (a failing one would be retried while the sink pauses)");
    assert_eq!(written, Ok(()), "written");
    documents(container, std::slice::from_ref(&order.customer)).await
}

/// The emulator starts empty: without `create-if-missing` the start fails and names the
/// container's key, whether the database is missing too or only the container.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_container_fails_the_start_naming_its_key() {
    let Some(endpoint) = cosmos_endpoint() else {
        return;
    };
    let (database, container) = (unique("shop"), unique("orders"));
    let start_error = || async {
        from_memory(&endpoint, &database, &container)
            .build()
            .expect("valid configuration")
            .start()
            .await
            .err()
            .expect("the start fails")
            .to_string()
    };

    let error = start_error().await;
    let expected = format!(
        "channel `orders-db`: the database {database} (messaging.outgoing.orders-db.database) does not exist; create it and the container {container} (messaging.outgoing.orders-db.container), or set create-if-missing = true (for development)"
    );
    assert_eq!(error, expected, "no database");

    let client = emulator_client(&endpoint).await;
    client
        .create_database(&database, None)
        .await
        .expect("database created");
    let expected = format!(
        "channel `orders-db`: the container {container} (messaging.outgoing.orders-db.container) of database {database} (messaging.outgoing.orders-db.database) does not exist; create it, or set create-if-missing = true (for development)"
    );
    assert_eq!(start_error().await, expected, "a database, no container");
}

/// `create-if-missing = true` creates the database and the container, partitioned by
/// `partition-key.paths`, and the sink writes to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_if_missing_creates_the_database_and_the_container() {
    let Some(endpoint) = cosmos_endpoint() else {
        return;
    };
    let (database, container) = (unique("shop"), unique("orders"));
    let app = from_memory(&endpoint, &database, &container)
        .set("messaging.outgoing.orders-db.create-if-missing", true)
        .set(
            "messaging.outgoing.orders-db.partition-key.paths",
            "/customer",
        )
        .build()
        .expect("valid configuration")
        .start()
        .await
        .expect("the start creates what is missing");

    let client = emulator_client(&endpoint).await;
    let created = client
        .database_client(&database)
        .container_client(&container, None)
        .await
        .expect("the container exists");
    let definition: ContainerProperties = created
        .read(None)
        .await
        .expect("its definition")
        .into_model()
        .expect("a container definition");
    let paths: Vec<String> = definition
        .partition_key
        .paths()
        .iter()
        .map(|path| path.to_string())
        .collect();
    assert_eq!(paths, ["/customer"]);

    let order = Order {
        id: "order-1".into(),
        customer: "customer-1".into(),
        amount: 12,
    };
    let stored = write_through(&app, &created, &order).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(
        (
            stored[0]["id"].as_str(),
            stored[0]["customer"].as_str(),
            stored[0]["amount"].as_i64()
        ),
        (Some("order-1"), Some("customer-1"), Some(12))
    );
    app.shutdown().await;
}

/// Hands out a token and counts how often it was asked: a stand-in for `azure_identity`'s
/// credentials, which need Azure to get a token from.
#[derive(Debug, Default)]
struct CountingCredential(std::sync::atomic::AtomicUsize);

#[async_trait::async_trait]
impl azure_core::credentials::TokenCredential for CountingCredential {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(azure_core::credentials::AccessToken::new(
            "a-token-for-the-emulator",
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
}

/// With no `key`, the application's token credential signs the sink's requests (the emulator
/// takes any signature; a real account checks the identity's role).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_credential_signs_the_requests_when_no_key_is_set() {
    let Some(endpoint) = cosmos_endpoint() else {
        return;
    };
    let (database, container) = (unique("shop"), unique("orders"));
    let credential = std::sync::Arc::new(CountingCredential::default());
    let app = to_cosmos_without_key(memory_app(), &endpoint, &database, &container)
        .set("messaging.outgoing.orders-db.create-if-missing", true)
        .set(
            "messaging.outgoing.orders-db.partition-key.paths",
            "/customer",
        )
        .cosmos_credential(credential.clone())
        .processor("orders", "orders-db", store)
        .build()
        .expect("valid configuration: the credential stands in for the key")
        .start()
        .await
        .expect("the start connects with the credential");
    let created = emulator_client(&endpoint)
        .await
        .database_client(&database)
        .container_client(&container, None)
        .await
        .expect("the container exists");
    let order = Order {
        id: "order-1".into(),
        customer: "customer-1".into(),
        amount: 3,
    };
    let stored = write_through(&app, &created, &order).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(
        credential.0.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the credential was asked for a token"
    );
    app.shutdown().await;
}
