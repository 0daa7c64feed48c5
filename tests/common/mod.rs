//! Helpers for integration tests on the embedded cluster: unique names, a raw rdkafka producer
//! and reader to check what really is on the broker, committed offsets, and HTTP GET.
#![allow(dead_code)] // each test binary uses its own subset

mod e2e;
#[allow(unused_imports)] // only the end-to-end binaries use it
pub use e2e::*;
mod logs;
#[allow(unused_imports)] // only the binaries that check a log line use it
pub use logs::*;

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use messaging::{App, AppBuilder, EmbeddedKafka, RunningApp};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A safety net only: a test that waits this long has failed; no test passes because of it.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn bootstrap() -> String {
    EmbeddedKafka::get().bootstrap_servers().to_owned()
}

pub fn create_topic(topic: &str, partitions: i32) {
    EmbeddedKafka::get()
        .create_topic(topic, partitions)
        .expect("create topic");
}

/// A fresh one-partition topic holding these values, in order.
pub fn topic_with(prefix: &str, values: &[&str]) -> String {
    let topic = unique(prefix);
    create_topic(&topic, 1);
    produce_values(&topic, values);
    topic
}

/// A builder on the embedded cluster with test-friendly settings: no health server, fast
/// group joins, reading from the start of each topic.
pub fn builder() -> AppBuilder {
    App::builder()
        .set("messaging.connector.kafka.bootstrap.servers", "embedded")
        .set("messaging.connector.kafka.auto.offset.reset", "earliest")
        .set("messaging.connector.kafka.session.timeout.ms", 6000)
        .set("messaging.connector.kafka.auto.commit.interval.ms", 100)
        .set("messaging.health.enabled", false)
        .set("messaging.application-name", unique("app"))
}

/// `builder` with channel `stuck` reading `topic` in a group of that name, whose handler never
/// returns: librdkafka's statistics every 100 ms, `/metrics` on a free port, the age watch off,
/// and a shutdown that gives the stuck record up after 1 s.
pub fn stuck_channel(builder: AppBuilder, topic: &str) -> AppBuilder {
    builder
        .set("messaging.health.enabled", true)
        .set("messaging.health.port", 0)
        .set("messaging.incoming.stuck.topic", topic)
        .set("messaging.incoming.stuck.group.id", topic)
        .set("messaging.incoming.stuck.statistics.interval.ms", 100)
        .set(
            "messaging.incoming.stuck.throttled.unprocessed-record-max-age.ms",
            0,
        )
        .set("messaging.shutdown.timeout.ms", 1000)
        .incoming("stuck", |_: Vec<u8>| std::future::pending::<()>())
}

/// Channel `stuck`'s `messaging_prefetched_records` for `topic` [`partition`] in a `/metrics`
/// text, if it is there.
pub fn prefetched_records(text: &str, topic: &str, partition: i32) -> Option<i64> {
    let series = format!(
        "messaging_prefetched_records{{channel=\"stuck\",topic=\"{topic}\",partition=\"{partition}\"}} "
    );
    text.lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .map(|value| value.parse().expect("a number"))
}

/// The `/metrics` text once channel `stuck`'s prefetch of each of `topic`'s `partitions` holds
/// at least `filled` records, and twenty statistics reports (2 s) after: long enough for a
/// fetcher without a bound to go on past it, as nothing lowers the prefetch behind a stuck
/// record.
pub async fn metrics_after_the_prefetch_filled(
    address: std::net::SocketAddr,
    topic: &str,
    partitions: i32,
    filled: i64,
) -> String {
    scrape_until(address, "every partition's prefetch filled up", |text| {
        (0..partitions)
            .all(|partition| prefetched_records(text, topic, partition).unwrap_or(0) >= filled)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    http_get(address, "/metrics").await.1
}

/// [`builder`] with `channel` reading `topic` in a group of that name.
pub fn reading(channel: &str, topic: &str) -> AppBuilder {
    builder()
        .set(&format!("messaging.incoming.{channel}.topic"), topic)
        .set(&format!("messaging.incoming.{channel}.group.id"), topic)
}

pub async fn start(builder: AppBuilder) -> RunningApp {
    builder
        .build()
        .expect("valid configuration")
        .start()
        .await
        .expect("app starts")
}

/// A record to produce: key, value, headers.
pub struct Record<'a> {
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    pub headers: &'a [(&'a str, &'a str)],
    pub partition: Option<i32>,
}

impl<'a> Record<'a> {
    pub fn value(value: &'a [u8]) -> Self {
        Self {
            key: None,
            value,
            headers: &[],
            partition: None,
        }
    }
}

/// Produces records with plain rdkafka and waits for every delivery.
pub fn produce(topic: &str, records: &[Record<'_>]) {
    produce_at(&bootstrap(), topic, records);
}

/// A mock cluster of the test's own (for faults that must reach only its channel), with a
/// one-partition topic holding `values`: the cluster, its bootstrap address and the topic.
pub fn cluster_of_its_own(
    prefix: &str,
    values: &[&[u8]],
) -> (
    rdkafka::mocking::MockCluster<'static, DefaultProducerContext>,
    String,
    String,
) {
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("a cluster of its own");
    let bootstrap = cluster.bootstrap_servers();
    let topic = unique(prefix);
    cluster.create_topic(&topic, 1, 1).expect("topic");
    let records: Vec<Record<'_>> = values.iter().map(|value| Record::value(value)).collect();
    produce_at(&bootstrap, &topic, &records);
    (cluster, bootstrap, topic)
}

pub fn produce_at(bootstrap: &str, topic: &str, records: &[Record<'_>]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        // Records larger than librdkafka's default limit, as a broker's own takes.
        .set("message.max.bytes", "100000000")
        .create()
        .expect("producer");
    for record in records {
        let mut headers = OwnedHeaders::new();
        for (key, value) in record.headers {
            headers = headers.insert(Header {
                key,
                value: Some(*value),
            });
        }
        let mut base = BaseRecord::<[u8], [u8]>::to(topic)
            .payload(record.value)
            .headers(headers);
        if let Some(key) = record.key {
            base = base.key(key);
        }
        if let Some(partition) = record.partition {
            base = base.partition(partition);
        }
        producer
            .send(base)
            .map_err(|(error, _)| error)
            .expect("enqueue");
    }
    producer.flush(PATIENCE).expect("all records delivered");
}

/// A tombstone: a record with `key` and no value at all (not an empty one).
pub fn produce_tombstone(topic: &str, key: &[u8]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set(
            "bootstrap.servers",
            EmbeddedKafka::get().bootstrap_servers(),
        )
        .create()
        .expect("producer");
    producer
        .send(BaseRecord::<[u8], [u8]>::to(topic).key(key))
        .map_err(|(error, _)| error)
        .expect("enqueue");
    producer.flush(PATIENCE).expect("the tombstone delivered");
}

pub fn produce_values(topic: &str, values: &[&str]) {
    let records: Vec<Record<'_>> = values
        .iter()
        .map(|value| Record::value(value.as_bytes()))
        .collect();
    produce(topic, &records);
}

/// Counts the records a producer's broker did not take.
#[derive(Default)]
pub struct FailedDeliveries(AtomicUsize);

impl rdkafka::ClientContext for FailedDeliveries {}

impl rdkafka::producer::ProducerContext for FailedDeliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Produces `count` records to `partition` of `topic`, the `n`th with the value `value(n)`,
/// with these producer `properties` (how records are batched, say), and checks every one was
/// delivered. Idempotent, so a retried send does not store a record twice.
pub async fn produce_numbered(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    count: usize,
    value: impl Fn(usize) -> Vec<u8> + Send + 'static,
    properties: &[(&str, &str)],
) {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true");
    for (property, setting) in properties {
        config.set(*property, *setting);
    }
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let producer: ThreadedProducer<FailedDeliveries> = config
            .create_with_context(FailedDeliveries::default())
            .expect("producer");
        for number in 0..count {
            let value = value(number);
            let mut record = BaseRecord::<(), [u8]>::to(&topic)
                .partition(partition)
                .payload(&value);
            // A full local queue is waited out; any other error fails the test.
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                        record = returned;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err((error, _)) => panic!("produce to {topic}: {error}"),
                }
            }
        }
        producer.flush(PATIENCE).expect("all records sent");
        let failed = producer.context().0.load(Ordering::Relaxed);
        assert_eq!(failed, 0, "records {topic} [{partition}] did not take");
    })
    .await
    .unwrap();
}

/// A record as read back from the broker.
#[derive(Debug)]
pub struct ReadRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, String)>,
}

impl ReadRecord {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn value_str(&self) -> &str {
        std::str::from_utf8(self.value.as_deref().unwrap_or_default()).expect("utf-8 value")
    }
}

/// Reads exactly `count` records from the start of a topic (all partitions), without a group.
pub fn read(topic: &str, count: usize) -> Vec<ReadRecord> {
    read_at(&bootstrap(), topic, count)
}

pub fn read_at(bootstrap: &str, topic: &str, count: usize) -> Vec<ReadRecord> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let metadata = consumer
        .fetch_metadata(Some(topic), PATIENCE)
        .expect("metadata");
    let mut assignment = TopicPartitionList::new();
    for partition in metadata.topics()[0].partitions() {
        assignment
            .add_partition_offset(topic, partition.id(), Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&assignment).expect("assign");
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut records = Vec::new();
    while records.len() < count {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {count} records arrived in {topic}",
            records.len()
        );
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.expect("read");
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|header| {
                        (
                            header.key.to_owned(),
                            String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        records.push(ReadRecord {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            headers,
        });
    }
    records
}

/// The number of records in a topic partition (its high watermark).
pub fn end_offset(topic: &str, partition: i32) -> i64 {
    end_offset_at(&bootstrap(), topic, partition)
}

pub fn end_offset_at(bootstrap: &str, topic: &str, partition: i32) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("client");
    consumer
        .fetch_watermarks(topic, partition, PATIENCE)
        .expect("watermarks")
        .1
}

/// Whether the embedded cluster has this topic. A consumer's metadata request does not create
/// topics (`allow.auto.create.topics` is off for consumers), so asking does not change the answer.
pub fn topic_exists(topic: &str) -> bool {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .expect("client");
    let metadata = consumer
        .fetch_metadata(Some(topic), PATIENCE)
        .expect("metadata");
    metadata
        .topics()
        .iter()
        .any(|found| found.name() == topic && found.error().is_none())
}

/// The offset a group committed for a partition, if any.
pub fn committed(group: &str, topic: &str, partition: i32) -> Option<i64> {
    committed_at(&bootstrap(), group, topic, partition)
}

pub fn committed_at(bootstrap: &str, group: &str, topic: &str, partition: i32) -> Option<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("client");
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition(topic, partition);
    let offsets = consumer
        .committed_offsets(wanted, PATIENCE)
        .expect("committed offsets");
    match offsets.elements()[0].offset() {
        Offset::Offset(offset) => Some(offset),
        _ => None,
    }
}

/// The safety net of a test on a paused clock, which has no timeouts of its own (its clock runs
/// ahead while librdkafka works in real time): a test still running after twice `PATIENCE` of
/// real time has failed. Hold the guard for the whole test; dropping it calls the watch off.
#[must_use = "the watchdog is called off when its guard drops"]
pub fn paused_clock_watchdog(test: &'static str) -> Watchdog {
    Watchdog::start(PATIENCE * 2, test, || {})
}

/// Waits until `condition` holds, on a paused clock, with no deadline of its own (see
/// [`paused_clock_watchdog`]). Each look runs on a blocking thread, after 10 ms of real time,
/// which holds the paused clock still meanwhile: the clock moves on only between looks, 100 ms
/// at a time at most, so it cannot race ahead of librdkafka's real time.
pub async fn on_a_paused_clock_until(condition: impl Fn() -> bool + Clone + Send + 'static) {
    loop {
        let look = condition.clone();
        let holds = tokio::task::spawn_blocking(move || {
            std::thread::sleep(Duration::from_millis(10));
            look()
        })
        .await
        .expect("looking thread");
        if holds {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls a condition until it holds; panics (fails the test) after [`PATIENCE`].
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A plain HTTP/1.0 GET: returns the status code and the body.
pub async fn http_get(address: std::net::SocketAddr, path: &str) -> (u16, String) {
    try_http_get(address, path).await.expect("connect")
}

/// [`http_get`] of a server that may not listen yet: `None` while it refuses the connection.
pub async fn try_http_get(address: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", address.port()))
        .await
        .ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("response");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status line");
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    Some((status, body))
}

/// Scrapes `/metrics` until its text satisfies `condition`; returns that text. Panics (fails
/// the test) after [`PATIENCE`], showing the last scrape.
pub async fn scrape_until(
    address: std::net::SocketAddr,
    what: &str,
    condition: impl Fn(&str) -> bool,
) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, text) = http_get(address, "/metrics").await;
        if status == 200 && condition(&text) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting: {what}; last scrape ({status}):\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
