//! cosmos: the Cosmos DB sink against the bare SDK, both on the SDK's in-memory emulator.
//!
//! 20,000 JSON documents of 184 bytes (`id` `doc-0000000` on, partition key `/tenant`
//! over 100 tenants in turn) on a 4-partition topic. For each `max-concurrency` (1, 16, 64),
//! 32 rounds of both sides back to back, each side first in every other round:
//! - sink: a processor passing each document through (`serde_json::Value` in, the same out) to
//!   a `connector = cosmos` channel with `endpoint = embedded` and that `max-concurrency`,
//!   reading the whole topic in a fresh group and writing to a fresh `EmbeddedCosmos`;
//! - sdk: the same documents, already in memory, upserted with `ContainerClient::upsert_item`
//!   on a fresh `EmbeddedCosmos`: at `max-concurrency` 1 each awaited in turn in one task, as
//!   a bare loop does; above 1 each upsert a spawned task holding one of `max-concurrency` semaphore places
//!   (as the sink spawns each write), which lets the CPU-bound emulator use both cores.
//!
//! A sink round is timed from the handler's first call to the moment the channel's
//! `messaging_records_sent_total` reaches the document count: the sink counts a write there
//! when Cosmos DB answered 2xx, just before it acks the message (which acks the Kafka record).
//! The count is read from `/metrics`, only once the handler has seen the last record: at most
//! twice `max-concurrency` writes are then left (the sink's room), and it is polled every
//! millisecond. An
//! SDK round is timed from its first upsert to the answer of its last. Each round gives a
//! paired ratio (the sink's rate over the SDK's in that round); each concurrency's figure is the
//! median of its 32 (P1 takes eight: a round's ratio here moves by 0.2 and more either way with
//! the machine's slow and fast phases, and the median of sixteen moved by up to 0.17 between
//! runs). A run takes about eight minutes, most of it the sink's group joins (about 3 s each on
//! the embedded cluster).
//! Each round also reports the process CPU time per write in its window (the sink's includes
//! the Kafka consumer and the embedded broker). Every round then
//! checks that the container holds every document and that the sink failed none.
//!
//! The last line is `cosmos sink/sdk ratio: c1=X c16=Y c64=Z`.
//!
//! `cosmos-batch` measures, at the SDK level only, whether transactional batches of one
//! partition key (`execute_transactional_batch`, upserts) beat point upserts on the emulator:
//! the same documents grouped by tenant (every batch full but each tenant's last), at 1, 16 and
//! 64 batches in flight, against point upserts at 16 and 64, three rounds each, each round on a
//! fresh container. The emulator copies the whole partition's documents for every batch (its
//! snapshot for the transaction), so a batch costs more the more documents the container
//! holds: the 20,000 documents go in batches of 100 (the most a batch takes), and 2,000
//! documents in batches of 10 and of 100 show what batching saves per request while that
//! copy is small. It ends with `cosmos batch/point ratio: 20k b100=X; 2k b10=Y b100=Z`, each
//! side's best rate at any concurrency.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::TryStreamExt;
use messaging::cosmos_sdk::clients::ContainerClient;
use messaging::cosmos_sdk::feed::FeedScope;
use messaging::cosmos_sdk::models::{ContainerProperties, PartitionKeyDefinition};
use messaging::cosmos_sdk::TransactionalBatch;
use messaging::EmbeddedCosmos;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, Semaphore};

use crate::common::{
    application, filled_topic_of, report_paired_ratios, PairedRatio, Throughput, Window, CHANNEL,
};

const DOCUMENTS: usize = 20_000;
/// `cosmos-batch` measures on a container this small too (see `run_batches`).
const SMALL_DOCUMENTS: usize = 2_000;
const TENANTS: u64 = 100;
const PARTITIONS: i32 = 4;
/// Even, so each side goes first in half of them.
const ROUNDS: usize = 32;
const BATCH_ROUNDS: usize = 3;
const CONCURRENCIES: [usize; 3] = [1, 16, 64];
const TOPIC: &str = "cosmos";
/// The sink's outgoing channel.
const SINK: &str = "documents";
const DATABASE: &str = "bench";
const CONTAINER: &str = "documents";
const PARTITION_KEY: &str = "/tenant";
/// How often the end of a sink round is looked for, once the handler has seen every record.
const POLL: Duration = Duration::from_millis(1);

/// With `RUST_BACKTRACE` set, every `typespec::Error` captures a std backtrace, and the SDK
/// makes one for each optional header it looks up and does not find
/// (`Headers::get_optional_str`), which the emulator's request parsing does on every request:
/// that was about two thirds of a write's CPU time, on the sink and the SDK side alike, and
/// would hide what the sink itself costs. Turns library backtraces off for the run
/// (`RUST_LIB_BACKTRACE=0`, which the SDK's driver reads too) unless `RUST_LIB_BACKTRACE` is
/// set already; a panic still prints its backtrace. Call it before any thread starts.
pub fn without_library_backtraces() {
    let asked = std::env::var_os("RUST_BACKTRACE").is_some_and(|value| value != "0");
    if asked && std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
        println!(
            "RUST_BACKTRACE is set: library backtraces are off for this run (RUST_LIB_BACKTRACE=0); set RUST_LIB_BACKTRACE=1 to measure with them"
        );
    }
}

/// One document as the SDK side holds it.
struct Document {
    id: String,
    tenant: String,
    value: Value,
}

fn tenant(sequence: u64) -> String {
    format!("tenant-{:03}", sequence % TENANTS)
}

fn document(sequence: u64) -> Value {
    json!({
        "id": format!("doc-{sequence:07}"),
        "tenant": tenant(sequence),
        "sequence": sequence,
        "celsius": 21.5,
        "sensor": "greenhouse-7",
        "note": "x".repeat(80),
    })
}

fn record_value(sequence: u64) -> Vec<u8> {
    serde_json::to_vec(&document(sequence)).expect("JSON")
}

fn record_key(sequence: u64) -> String {
    format!("doc-{sequence:07}")
}

fn documents(count: usize) -> Arc<Vec<Document>> {
    Arc::new(
        (0..count as u64)
            .map(|sequence| Document {
                id: record_key(sequence),
                tenant: tenant(sequence),
                value: document(sequence),
            })
            .collect(),
    )
}

/// The best rate and the least CPU per write over a side's rounds.
#[derive(Clone, Copy)]
struct Best {
    rate: f64,
    cpu_us: f64,
}

impl Default for Best {
    fn default() -> Self {
        Self {
            rate: 0.0,
            cpu_us: f64::MAX,
        }
    }
}

impl Best {
    fn add(&mut self, measured: Throughput) {
        self.rate = self.rate.max(measured.rate);
        self.cpu_us = self.cpu_us.min(measured.cpu_us);
    }
}

fn report(round: usize, side: &str, measured: Throughput) {
    println!(
        "  round {round}: {side:<12} {:>8.0} writes/s  {:>6.1} us CPU/write",
        measured.rate, measured.cpu_us
    );
}

pub async fn run() {
    filled_topic_of(TOPIC, PARTITIONS, DOCUMENTS, record_key, record_value).await;
    println!(
        "topic {TOPIC}: {DOCUMENTS} JSON documents of {} bytes on {PARTITIONS} partitions, {TENANTS} tenants (/tenant), watermarks checked",
        record_value(0).len()
    );
    let documents = documents(DOCUMENTS);
    let mut ratios = Vec::new();
    let mut round_number = 0;
    for concurrency in CONCURRENCIES {
        println!("max-concurrency {concurrency}:");
        let (mut sink, mut sdk) = (Best::default(), Best::default());
        // Each round's sink rate over its SDK rate: the two sides of a round run back to back,
        // each first in every other round, so neither always meets the machine's quieter turn.
        let mut paired: Vec<PairedRatio> = Vec::new();
        for round in 1..=ROUNDS {
            round_number += 1;
            let sink_first = round % 2 == 1;
            let group = format!("cosmos-{round_number}");
            let sdk_side = || async {
                tokio::spawn(sdk_round(concurrency, documents.clone()))
                    .await
                    .expect("sdk round")
            };
            let (sink_measured, sdk_measured) = if sink_first {
                let sink_measured = sink_round(concurrency, &group).await;
                (sink_measured, sdk_side().await)
            } else {
                let sdk_measured = sdk_side().await;
                (sink_round(concurrency, &group).await, sdk_measured)
            };
            report(round, "sink", sink_measured);
            report(round, "sdk", sdk_measured);
            sink.add(sink_measured);
            sdk.add(sdk_measured);
            paired.push((sink_first, sink_measured.rate / sdk_measured.rate));
        }
        println!(
            "  best: sink {:.0} writes/s, sdk {:.0} writes/s (best/best {:.2}); least CPU/write: sink {:.1} us, sdk {:.1} us",
            sink.rate,
            sdk.rate,
            sink.rate / sdk.rate,
            sink.cpu_us,
            sdk.cpu_us
        );
        let median = report_paired_ratios(&paired, "sink", "sdk");
        println!("  median of the paired ratios at {concurrency}: {median:.2}");
        ratios.push(format!("c{concurrency}={median:.2}"));
    }
    println!("cosmos sink/sdk ratio: {}", ratios.join(" "));
}

/// Handler calls, the window opened by the first, and the signal of the last.
struct Progress {
    handled: AtomicUsize,
    window: Mutex<Option<Window>>,
    last: Mutex<Option<oneshot::Sender<()>>>,
}

async fn sink_round(concurrency: usize, group: &str) -> Throughput {
    let cosmos = EmbeddedCosmos::new();
    let (last_tx, last_rx) = oneshot::channel();
    let progress = Arc::new(Progress {
        handled: AtomicUsize::new(0),
        window: Mutex::new(None),
        last: Mutex::new(Some(last_tx)),
    });
    let handler = {
        let progress = progress.clone();
        move |document: Value| {
            // One record at a time (the incoming side's max-concurrency is 1): a load and a
            // store count exactly.
            let count = progress.handled.load(Ordering::Relaxed) + 1;
            progress.handled.store(count, Ordering::Relaxed);
            if count == 1 {
                *progress.window.lock().unwrap() = Some(Window::start());
            }
            if count == DOCUMENTS {
                if let Some(last) = progress.last.lock().unwrap().take() {
                    let _ = last.send(());
                }
            }
            std::future::ready(Ok::<_, Infallible>(document))
        }
    };
    let outgoing = |key: &str| format!("messaging.outgoing.{SINK}.{key}");
    let app = application(TOPIC, group)
        .set("messaging.health.enabled", true)
        .set("messaging.health.port", 0)
        .set(&outgoing("connector"), "cosmos")
        .set(&outgoing("endpoint"), "embedded")
        .set(&outgoing("database"), DATABASE)
        .set(&outgoing("container"), CONTAINER)
        .set(&outgoing("partition-key.paths"), PARTITION_KEY)
        .set(&outgoing("max-concurrency"), concurrency)
        .embedded_cosmos(cosmos.clone())
        .processor(CHANNEL, SINK, handler)
        .build()
        .expect("configuration")
        .start()
        .await
        .expect("start");
    let metrics = app.health_address().expect("the health server is on");
    last_rx.await.expect("every record handled");
    let (mut sent, mut failed) = sent_and_failed(metrics).await;
    while sent + failed < DOCUMENTS {
        tokio::time::sleep(POLL).await;
        (sent, failed) = sent_and_failed(metrics).await;
    }
    let window = progress.window.lock().unwrap().take();
    let measured = window.expect("the first record was seen").end(DOCUMENTS);
    assert_eq!((sent, failed), (DOCUMENTS, 0), "documents written, failed");
    app.shutdown().await;
    assert_eq!(
        stored(&cosmos).await,
        DOCUMENTS,
        "documents in the container"
    );
    measured
}

/// The sink channel's `messaging_records_sent_total` and `messaging_records_send_failed_total`.
async fn sent_and_failed(address: SocketAddr) -> (usize, usize) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", address.port()))
        .await
        .expect("connect to /metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .expect("request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("response");
    let counter = |name: &str| {
        let prefix = format!("{name}{{channel=\"{SINK}\"}} ");
        response
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map_or(0, |value| value.trim().parse().expect("a count"))
    };
    (
        counter("messaging_records_sent_total"),
        counter("messaging_records_send_failed_total"),
    )
}

/// A fresh container on `cosmos`, as the sink's `endpoint = embedded` creates it.
async fn fresh_container(cosmos: &EmbeddedCosmos) -> ContainerClient {
    let client = cosmos.client().await.expect("client");
    client
        .create_database(DATABASE, None)
        .await
        .expect("database");
    let database = client.database_client(DATABASE);
    let properties = ContainerProperties::new(
        CONTAINER,
        PartitionKeyDefinition::new(vec![Cow::Borrowed(PARTITION_KEY)]),
    );
    database
        .create_container(properties, None)
        .await
        .expect("container");
    database
        .container_client(CONTAINER, None)
        .await
        .expect("container client")
}

/// How many documents `cosmos`'s container holds.
async fn stored(cosmos: &EmbeddedCosmos) -> usize {
    let client = cosmos.client().await.expect("client");
    let container = client
        .database_client(DATABASE)
        .container_client(CONTAINER, None)
        .await
        .expect("container client");
    let ids: Vec<Value> = container
        .query_items("SELECT c.id FROM c", FeedScope::full_container(), None)
        .await
        .expect("query")
        .try_collect()
        .await
        .expect("ids");
    ids.len()
}

/// Point upserts of every document, `concurrency` at a time: at 1 each awaited in turn, as a
/// bare loop does (no task per upsert, no wake-up between workers); above 1 each in a spawned
/// task, so the writes use both cores as the sink's do.
async fn sdk_round(concurrency: usize, documents: Arc<Vec<Document>>) -> Throughput {
    let cosmos = EmbeddedCosmos::new();
    let container = fresh_container(&cosmos).await;
    let window = Window::start();
    if concurrency == 1 {
        for document in documents.iter() {
            upsert(&container, document).await;
        }
    } else {
        with_places(
            concurrency,
            (0..documents.len()).map(|index| {
                let (container, documents) = (container.clone(), documents.clone());
                async move { upsert(&container, &documents[index]).await }
            }),
        )
        .await;
    }
    let measured = window.end(documents.len());
    assert_eq!(stored(&cosmos).await, documents.len(), "documents stored");
    measured
}

async fn upsert(container: &ContainerClient, document: &Document) {
    container
        .upsert_item(document.tenant.clone(), &document.id, &document.value, None)
        .await
        .expect("upsert");
}

/// Runs each job in a spawned task, `concurrency` at a time; returns once all have ended.
async fn with_places<F>(concurrency: usize, jobs: impl Iterator<Item = F>)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let places = Arc::new(Semaphore::new(concurrency));
    for job in jobs {
        let place = places.clone().acquire_owned().await.expect("open");
        tokio::spawn(async move {
            job.await;
            drop(place);
        });
    }
    let _all = places.acquire_many(concurrency as u32).await.expect("open");
}

/// Transactional batches of up to `size` upserts, each of one tenant, `concurrency` batches in
/// flight, each in a spawned task.
async fn batch_round(concurrency: usize, size: usize, documents: Arc<Vec<Document>>) -> Throughput {
    let cosmos = EmbeddedCosmos::new();
    let container = fresh_container(&cosmos).await;
    // Grouped by tenant in record order, then cut: what a sink that batched per partition key
    // could send at best, every batch full but each tenant's last.
    let mut by_tenant: Vec<Vec<usize>> = vec![Vec::new(); TENANTS as usize];
    for index in 0..documents.len() {
        // Document `index` has sequence `index`.
        by_tenant[index % TENANTS as usize].push(index);
    }
    let batches: Vec<Vec<usize>> = by_tenant
        .iter()
        .flat_map(|indices| indices.chunks(size).map(<[usize]>::to_vec))
        .collect();
    let batches = Arc::new(batches);
    let window = Window::start();
    with_places(
        concurrency,
        (0..batches.len()).map(|batch| {
            let (container, documents, batches) =
                (container.clone(), documents.clone(), batches.clone());
            async move {
                let indices = &batches[batch];
                let mut transaction = TransactionalBatch::new(documents[indices[0]].tenant.clone());
                for &index in indices {
                    transaction = transaction
                        .upsert_item(&documents[index].value, None)
                        .expect("a document");
                }
                let response = container
                    .execute_transactional_batch(transaction, None)
                    .await
                    .expect("batch");
                let results = response.into_model().expect("batch results");
                assert_eq!(results.results().len(), indices.len());
                assert!(results.results().iter().all(|result| result.is_success()));
            }
        }),
    )
    .await;
    let measured = window.end(documents.len());
    assert_eq!(stored(&cosmos).await, documents.len(), "documents stored");
    measured
}

pub async fn run_batches() {
    println!(
        "JSON documents of {} bytes, {TENANTS} tenants (/tenant); SDK only, each round on a fresh EmbeddedCosmos",
        record_value(0).len()
    );
    let mut ratios = Vec::new();
    // Batches of 10 into the larger container take half a minute a round: only 100 there.
    for (count, sizes) in [(DOCUMENTS, &[100][..]), (SMALL_DOCUMENTS, &[10, 100][..])] {
        println!("{count} documents:");
        let documents = documents(count);
        let mut point = Best::default();
        let mut batches = vec![Best::default(); sizes.len()];
        for round in 1..=BATCH_ROUNDS {
            for concurrency in [16, 64] {
                let measured = tokio::spawn(sdk_round(concurrency, documents.clone()))
                    .await
                    .expect("point round");
                report(round, &format!("point c{concurrency}"), measured);
                point.add(measured);
            }
            for (size, best) in sizes.iter().zip(&mut batches) {
                for concurrency in CONCURRENCIES {
                    let measured = tokio::spawn(batch_round(concurrency, *size, documents.clone()))
                        .await
                        .expect("batch round");
                    report(round, &format!("b{size} c{concurrency}"), measured);
                    best.add(measured);
                }
            }
        }
        println!(
            "  best point:     {:>8.0} writes/s, least CPU {:.1} us/write",
            point.rate, point.cpu_us
        );
        let mut line = format!("{}k", count / 1000);
        for (size, best) in sizes.iter().zip(&batches) {
            println!(
                "  best batch {size:<3}: {:>8.0} writes/s, least CPU {:.1} us/write",
                best.rate, best.cpu_us
            );
            line.push_str(&format!(" b{size}={:.2}", best.rate / point.rate));
        }
        ratios.push(line);
    }
    println!("cosmos batch/point ratio: {}", ratios.join("; "));
}
