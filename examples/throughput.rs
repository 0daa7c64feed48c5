//! Consumer throughput: the framework against raw rdkafka, on the same embedded topic, in one run.
//!
//! ```text
//! cargo run --release --example throughput
//! ```
//!
//! Produces 500,000 JSON records of 100 bytes (lz4-compressed, so the embedded cluster's 5 MiB
//! per partition holds them all: the watermarks are checked before timing), then alternates
//! three rounds of:
//! - raw: an rdkafka `StreamConsumer` that decodes each record and stores its offset, in a
//!   spawned task like the framework's consumer loop;
//! - framework: an `#[incoming]`-style handler decoding the same struct, throttled commits.
//!
//! Each round reads the whole topic with a fresh group and is timed from its first record to
//! its last. Both sides set `fetch.queue.backoff.ms=10`: librdkafka's default of 1000 ms pauses
//! a partition whenever its local queue is full, which would time the pauses, not the work.
//! The last line is `framework/raw ratio: <best framework rate / best raw rate>`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use messaging::{App, EmbeddedKafka};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message};
use serde::{Deserialize, Serialize};

const RECORDS: usize = 500_000;
const PARTITIONS: i32 = 4;
const ROUNDS: usize = 3;
const TOPIC: &str = "throughput";
const FETCH_QUEUE_BACKOFF_MS: &str = "10";

#[derive(Serialize, Deserialize)]
struct Reading {
    sensor: String,
    sequence: u64,
    celsius: f64,
    note: String,
}

fn record(sequence: u64) -> Vec<u8> {
    let mut reading = Reading { sensor: "greenhouse-7".into(), sequence, celsius: 21.5, note: String::new() };
    let length = serde_json::to_vec(&reading).unwrap().len();
    reading.note = "x".repeat(100 - length);
    let bytes = serde_json::to_vec(&reading).unwrap();
    assert_eq!(bytes.len(), 100);
    bytes
}

fn produce(bootstrap: &str) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("compression.type", "lz4")
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .create()
        .expect("producer");
    for sequence in 0..RECORDS as u64 {
        let value = record(sequence);
        let key = (sequence % 1024).to_string();
        let mut base = BaseRecord::<str, [u8]>::to(TOPIC).key(&key).payload(&value);
        loop {
            match producer.send(base) {
                Ok(()) => break,
                Err((_, returned)) => {
                    base = returned;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120)).expect("every record delivered");
}

/// The embedded cluster silently drops the oldest batches beyond 5 MiB per partition: make sure
/// every record is there before timing anything.
fn check_watermarks(bootstrap: &str) {
    let consumer: StreamConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap).create().expect("client");
    let mut total = 0;
    for partition in 0..PARTITIONS {
        let (low, high) = consumer.fetch_watermarks(TOPIC, partition, Duration::from_secs(10)).expect("watermarks");
        assert_eq!(low, 0, "partition {partition} lost its oldest batches (5 MiB limit)");
        total += high - low;
    }
    assert_eq!(total as usize, RECORDS, "records on the topic");
    println!("topic {TOPIC}: {RECORDS} records of 100 bytes on {PARTITIONS} partitions, watermarks checked");
}

async fn raw_round(bootstrap: String, group: String) -> f64 {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", &group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.offset.store", "false")
        .set("session.timeout.ms", "6000")
        .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS)
        .create()
        .expect("consumer");
    consumer.subscribe(&[TOPIC]).expect("subscribe");
    let mut first = None;
    for _ in 0..RECORDS {
        let message = consumer.recv().await.expect("record");
        first.get_or_insert_with(Instant::now);
        let reading: Reading = serde_json::from_slice(message.payload().expect("value")).expect("decode");
        std::hint::black_box(reading);
        consumer.store_offset_from_message(&message).expect("store offset");
    }
    rate(first.expect("records").elapsed())
}

async fn framework_round(group: &str) -> f64 {
    let handled = Arc::new(AtomicUsize::new(0));
    let first = Arc::new(Mutex::new(None::<Instant>));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Instant>();
    let done_tx = Arc::new(Mutex::new(Some(done_tx)));
    let handler = {
        let (handled, first) = (handled.clone(), first.clone());
        move |reading: Reading| {
            // A channel calls its handler for one record at a time, so a plain load and store
            // count exactly, without the locked add the raw loop's counter does not pay either.
            let count = handled.load(Ordering::Relaxed) + 1;
            handled.store(count, Ordering::Relaxed);
            if count == 1 {
                *first.lock().unwrap() = Some(Instant::now());
            }
            if count == RECORDS {
                if let Some(done) = done_tx.lock().unwrap().take() {
                    let _ = done.send(Instant::now());
                }
            }
            std::hint::black_box(reading);
            std::future::ready(())
        }
    };
    let app = App::builder()
        .set("messaging.connector.kafka.bootstrap.servers", "embedded")
        .set("messaging.health.enabled", false)
        .set("messaging.incoming.readings.topic", TOPIC)
        .set("messaging.incoming.readings.group.id", group)
        .set("messaging.incoming.readings.auto.offset.reset", "earliest")
        .set("messaging.incoming.readings.session.timeout.ms", 6000)
        .set("messaging.incoming.readings.fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS)
        .incoming("readings", handler)
        .build()
        .expect("configuration")
        .start()
        .await
        .expect("start");
    let last = done_rx.await.expect("all records handled");
    let started = first.lock().unwrap().expect("records");
    app.shutdown().await;
    rate(last - started)
}

fn rate(elapsed: Duration) -> f64 {
    RECORDS as f64 / elapsed.as_secs_f64()
}

#[tokio::main]
async fn main() {
    let cluster = EmbeddedKafka::get();
    cluster.create_topic(TOPIC, PARTITIONS).expect("topic");
    let bootstrap = cluster.bootstrap_servers().to_owned();
    let producing = bootstrap.clone();
    tokio::task::spawn_blocking(move || produce(&producing)).await.unwrap();
    check_watermarks(&bootstrap);

    let (mut best_raw, mut best_framework) = (0f64, 0f64);
    for round in 1..=ROUNDS {
        // Spawned, as the framework's consumer loop is: both run on a runtime worker thread.
        let raw = tokio::spawn(raw_round(bootstrap.clone(), format!("raw-{round}"))).await.expect("raw round");
        println!("round {round}: raw       {raw:>12.0} records/s");
        let framework = framework_round(&format!("framework-{round}")).await;
        println!("round {round}: framework {framework:>12.0} records/s");
        best_raw = best_raw.max(raw);
        best_framework = best_framework.max(framework);
    }
    println!("best: raw {best_raw:.0} records/s, framework {best_framework:.0} records/s");
    println!("framework/raw ratio: {:.2}", best_framework / best_raw);
}
