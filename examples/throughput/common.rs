//! What the scenarios share: the record, producing a topic, checking that the embedded cluster
//! kept it whole, and reading the process's resident memory.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use messaging::{App, AppBuilder, EmbeddedKafka, IntoSubscriber, RunningApp};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

/// The value of every record: 100 bytes of JSON.
#[derive(Serialize, Deserialize)]
pub struct Reading {
    pub sensor: String,
    pub sequence: u64,
    pub celsius: f64,
    pub note: String,
}

pub fn record(sequence: u64) -> Vec<u8> {
    let mut reading = Reading {
        sensor: "greenhouse-7".into(),
        sequence,
        celsius: 21.5,
        note: String::new(),
    };
    let length = serde_json::to_vec(&reading).unwrap().len();
    reading.note = "x".repeat(100 - length);
    let bytes = serde_json::to_vec(&reading).unwrap();
    assert_eq!(bytes.len(), 100);
    bytes
}

/// Produces `records` records with sequences `0..records`, lz4-compressed; `key` and `value`
/// make each record's key and value from its sequence.
pub fn produce(
    bootstrap: &str,
    topic: &str,
    records: usize,
    key: impl Fn(u64) -> String,
    value: impl Fn(u64) -> Vec<u8>,
) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("compression.type", "lz4")
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .create()
        .expect("producer");
    for sequence in 0..records as u64 {
        let value = value(sequence);
        let key = key(sequence);
        let mut base = BaseRecord::<str, [u8]>::to(topic).key(&key).payload(&value);
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
    producer
        .flush(Duration::from_secs(120))
        .expect("every record delivered");
}

/// The embedded cluster silently drops the oldest batches beyond 5 MiB per partition: make sure
/// every record is there before timing anything.
pub fn check_watermarks(bootstrap: &str, topic: &str, partitions: i32, records: usize) {
    let client = watermark_client(bootstrap);
    let mut total = 0;
    for partition in 0..partitions {
        let (low, high) = watermarks(&client, topic, partition);
        assert_eq!(
            low, 0,
            "partition {partition} lost its oldest batches (5 MiB limit)"
        );
        total += high - low;
    }
    assert_eq!(total as usize, records, "records on the topic");
}

/// A client that only asks for watermarks.
pub fn watermark_client(bootstrap: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("client")
}

/// A partition's low and high watermarks.
pub fn watermarks(client: &BaseConsumer, topic: &str, partition: i32) -> (i64, i64) {
    client
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .expect("watermarks")
}

/// Set by `reset_peak_rss`, read by `start_rss_mib`.
static START_RSS_MIB: Mutex<f64> = Mutex::new(0.0);

/// Starts a new peak: gives freed memory back to the system first (what an earlier round or
/// a producer left in the allocator would otherwise be reused without counting), then the
/// kernel resets VmHWM to the current resident size.
pub fn reset_peak_rss() {
    // SAFETY: glibc's malloc_trim only returns free memory to the system.
    unsafe { libc::malloc_trim(0) };
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak resident size");
    *START_RSS_MIB.lock().unwrap() = status_mib("VmRSS:");
}

/// The resident size when the current measurement started, in MiB.
pub fn start_rss_mib() -> f64 {
    *START_RSS_MIB.lock().unwrap()
}

/// The peak resident size since the last reset, in MiB.
pub fn peak_rss_mib() -> f64 {
    status_mib("VmHWM:")
}

/// How far the resident size rose above the measurement's start, at its peak, in MiB.
pub fn peak_rss_rise_mib() -> f64 {
    peak_rss_mib() - start_rss_mib()
}

fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect(field);
    kib / 1024.0
}

/// The incoming channel every scenario's framework side reads.
pub const CHANNEL: &str = "readings";

/// An application whose channel `readings` reads `topic` from the start on the embedded
/// cluster, in a group of its own, with the connector-wide [`consumer_overrides`]; the scenario
/// adds its settings (a channel setting of the same property wins) and the handler.
pub fn application(topic: &str, group: &str) -> AppBuilder {
    let application = App::builder()
        .set("messaging.connector.kafka.bootstrap.servers", "embedded")
        .set("messaging.health.enabled", false)
        .set("messaging.incoming.readings.topic", topic)
        .set("messaging.incoming.readings.group.id", group)
        .set("messaging.incoming.readings.auto.offset.reset", "earliest")
        .set("messaging.incoming.readings.session.timeout.ms", 6000);
    consumer_overrides()
        .into_iter()
        .fold(application, |application, (key, value)| {
            application.set(&key, value)
        })
}

/// The librdkafka properties to try on the framework's side: each `THROUGHPUT_KAFKA_<PROPERTY>`
/// variable as `messaging.connector.kafka.<property>`, `_` read as `.` (for example
/// `THROUGHPUT_KAFKA_QUEUED_MIN_MESSAGES=5000` sets `queued.min.messages`). They reach the
/// framework's Kafka clients (its consumers, and p2's dead-letter producer for what a producer
/// takes); a channel setting of a scenario's own wins over them; the raw baselines read none.
/// A prefix of its own: a service's `MESSAGING_*` variables left in the shell (the movies
/// example's, the end-to-end tests') would move a scenario to another broker or fail its start.
/// Left out: the brokers (where a scenario reads is its own choice: P1 and p5 follow
/// `KAFKA_BOOTSTRAP_SERVERS`) and variables whose names or values are not UTF-8.
pub fn consumer_overrides() -> Vec<(String, String)> {
    const PREFIX: &str = "THROUGHPUT_KAFKA_";
    let mut overrides: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(name, value)| {
            let property = name.to_str()?.strip_prefix(PREFIX)?;
            let property = property.to_ascii_lowercase().replace('_', ".");
            if matches!(
                property.as_str(),
                "bootstrap.servers" | "metadata.broker.list"
            ) {
                return None;
            }
            Some((
                format!("messaging.connector.kafka.{property}"),
                value.into_string().ok()?,
            ))
        })
        .collect();
    overrides.sort();
    overrides
}

/// Keys records as P1 does: 1,024 keys, in turn.
pub fn by_thousand_keys(sequence: u64) -> String {
    (sequence % 1024).to_string()
}

/// Creates `topic` on the embedded cluster, or on the broker at `KAFKA_BOOTSTRAP_SERVERS` when
/// that is set (the topic's name then gets the process id and the time, so each run has its
/// own), and fills it with `records` readings keyed by `key`, checking that all of them are
/// there. Returns the bootstrap address and the topic's name.
pub async fn filled_topic_on_any_broker(
    topic: &str,
    partitions: i32,
    records: usize,
    key: fn(u64) -> String,
) -> (String, String) {
    let Ok(bootstrap) = std::env::var("KAFKA_BOOTSTRAP_SERVERS") else {
        return (
            filled_topic(topic, partitions, records, key).await,
            topic.to_owned(),
        );
    };
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let topic = format!("{topic}-{}-{since_epoch}", std::process::id());
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("admin client");
    let new_topic = NewTopic::new(&topic, partitions, TopicReplication::Fixed(1));
    for created in admin
        .create_topics([&new_topic], &AdminOptions::new())
        .await
        .expect("create the topic")
    {
        created.expect("topic created");
    }
    fill(&bootstrap, &topic, partitions, records, key, record).await;
    println!("topic {topic} on {bootstrap}: {records} records of 100 bytes on {partitions} partitions, watermarks checked");
    (bootstrap, topic)
}

/// Creates `topic` on the embedded cluster and fills it with `records` readings keyed by `key`,
/// checking that all of them are there. Returns the cluster's bootstrap address.
pub async fn filled_topic(
    topic: &str,
    partitions: i32,
    records: usize,
    key: fn(u64) -> String,
) -> String {
    let bootstrap = filled_topic_of(topic, partitions, records, key, record).await;
    println!("topic {topic}: {records} records of 100 bytes on {partitions} partitions, watermarks checked");
    bootstrap
}

/// [`filled_topic`] with records whose values `value` makes from their sequences; says nothing.
pub async fn filled_topic_of(
    topic: &str,
    partitions: i32,
    records: usize,
    key: fn(u64) -> String,
    value: fn(u64) -> Vec<u8>,
) -> String {
    let cluster = EmbeddedKafka::get();
    cluster.create_topic(topic, partitions).expect("topic");
    let bootstrap = cluster.bootstrap_servers().to_owned();
    fill(&bootstrap, topic, partitions, records, key, value).await;
    bootstrap
}

/// Produces `records` records to an existing topic, off the runtime's workers, and checks that
/// all of them are there.
async fn fill(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    records: usize,
    key: fn(u64) -> String,
    value: fn(u64) -> Vec<u8>,
) {
    let (producing, filling) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || produce(&producing, &filling, records, key, value))
        .await
        .unwrap();
    check_watermarks(bootstrap, topic, partitions, records);
}

/// Starts `application` with `handler` on the channel.
pub async fn started<S>(application: AppBuilder, handler: impl IntoSubscriber<S>) -> RunningApp {
    application
        .incoming(CHANNEL, handler)
        .build()
        .expect("configuration")
        .start()
        .await
        .expect("start")
}

/// librdkafka's `fetch.queue.backoff.ms` for the raw baselines, the library's default: librdkafka's
/// own of 1000 ms pauses a partition whenever its local queue is full, which would time the
/// pauses, not the work.
pub const FETCH_QUEUE_BACKOFF_MS: &str = "10";

/// The raw baseline's consumer: a plain `StreamConsumer` of `topic` in `group`, from the start,
/// storing its offsets by hand.
pub fn raw_consumer(bootstrap: &str, group: &str, topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.offset.store", "false")
        .set("session.timeout.ms", "6000")
        .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS)
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

/// CPU time used so far by all threads of this process.
pub fn process_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; the clock id is a constant the kernel knows.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) };
    assert_eq!(status, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// A timed stretch of a round: the wall clock and this process's CPU time from its start.
pub struct Window {
    wall: Instant,
    cpu: Duration,
}

/// What a window measured: items per second, and process CPU microseconds per item.
#[derive(Clone, Copy)]
pub struct Throughput {
    pub rate: f64,
    pub cpu_us: f64,
}

impl Window {
    pub fn start() -> Self {
        Self {
            wall: Instant::now(),
            cpu: process_cpu_time(),
        }
    }

    /// The window ends now, `items` done in it.
    pub fn end(self, items: usize) -> Throughput {
        let wall = self.wall.elapsed();
        let cpu = process_cpu_time() - self.cpu;
        Throughput {
            rate: items as f64 / wall.as_secs_f64(),
            cpu_us: cpu.as_secs_f64() * 1e6 / items as f64,
        }
    }
}

/// A paired round's ratio, and whether the side named first in `report_paired_ratios` went
/// first in it.
pub type PairedRatio = (bool, f64);

/// Prints every round's ratio, sorted, and the medians of the rounds where each side went
/// first (a side that gains from going first would show there); returns the median of all.
pub fn report_paired_ratios(ratios: &[PairedRatio], first: &str, second: &str) -> f64 {
    let mut all: Vec<f64> = ratios.iter().map(|(_, ratio)| *ratio).collect();
    all.sort_by(f64::total_cmp);
    let went_first = |yes: bool| -> Vec<f64> {
        ratios
            .iter()
            .filter(|(first, _)| *first == yes)
            .map(|(_, ratio)| *ratio)
            .collect()
    };
    let listed: Vec<String> = all.iter().map(|ratio| format!("{ratio:.2}")).collect();
    println!("round ratios, sorted: {}", listed.join(" "));
    println!(
        "median ratio with {first} first: {:.2}; with {second} first: {:.2}",
        median(went_first(true)),
        median(went_first(false))
    );
    median(all)
}

/// The middle value, or the mean of the two middle values of an even count.
pub fn median(mut values: Vec<f64>) -> f64 {
    assert!(!values.is_empty(), "a median of no values");
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    // An even count (not `is_multiple_of`: the workspace's rust-version, 1.85, predates it).
    if values.len() == 2 * middle {
        (values[middle - 1] + values[middle]) / 2.0
    } else {
        values[middle]
    }
}
