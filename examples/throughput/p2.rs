//! p2: 1 % of the records rejected to a dead-letter topic.
//!
//! 200,000 records on 4 partitions, read in fresh groups: eight alternating rounds of the
//! framework rejecting nothing and the framework rejecting every 100th record
//! (`failure-strategy=dead-letter-queue`, the dead-letter producer on the library's defaults),
//! then once the raw baseline: a `StreamConsumer` loop that sends each rejected record to a
//! dead-letter topic with a `FutureProducer` on librdkafka's defaults, awaits the delivery,
//! then stores the offset (once, because it takes seconds: each awaited write waits at least
//! `linger.ms`). Both framework sides run the same channel and handler, dead-letter strategy
//! included; only the rejections differ. `p2 framework/p1 rate ratio` is the median of the
//! rounds' ratios (1 % rejected over none); `best/best ratio` and the raw comparison take each
//! side's best rate.
//!
//! Each run is timed from its first record until every record is settled: for the framework,
//! until the handler has seen the last record and the dead-letter topic holds every rejected
//! one (its high watermark, polled every millisecond); for the raw loop, its last stored offset.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use messaging::{EmbeddedKafka, HeldRecords};
use rdkafka::consumer::Consumer;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};

use crate::common::{
    application, by_thousand_keys, filled_topic, raw_consumer, report_paired_ratios, started,
    watermark_client, watermarks, PairedRatio, Reading, CHANNEL,
};

const RECORDS: usize = 200_000;
const PARTITIONS: i32 = 4;
const TOPIC: &str = "p2";
/// One record in this many is rejected, the last of each hundred (99, 199, ...): 1 %.
const REJECT_EVERY: u64 = 100;
const REJECTED: usize = RECORDS / REJECT_EVERY as usize;
/// Rounds of a framework run of each kind, alternating which goes first, as P1's: one run
/// says little here. Even, so that each kind goes first as often as the other.
const ROUNDS: usize = 8;
/// As P1, so that a full local queue does not pause a partition for librdkafka's 1000 ms.

#[derive(Debug, thiserror::Error)]
#[error("sequence {0} rejected by the benchmark")]
struct Rejected(u64);

fn rejects(sequence: u64) -> bool {
    // Not `is_multiple_of`: the workspace's rust-version (1.85) predates it.
    sequence % REJECT_EVERY == REJECT_EVERY - 1
}

pub async fn run() {
    let bootstrap = filled_topic(TOPIC, PARTITIONS, RECORDS, by_thousand_keys).await;

    let (mut best_none, mut best_rejecting) = (0f64, 0f64);
    // Each round's rate with 1 % rejected over its rate with none: the two runs of a round go
    // back to back, on the machine as it was then.
    let mut ratios: Vec<PairedRatio> = Vec::with_capacity(ROUNDS);
    for round in 1..=ROUNDS {
        let run = |rejecting: bool| {
            let bootstrap = &bootstrap;
            async move {
                let kind = if rejecting { "rejecting" } else { "none" };
                let group = format!("p2-framework-{kind}-{round}");
                let (rate, held) = framework(bootstrap, &group, rejecting).await;
                let (label, dead_letters) = if rejecting {
                    ("1 % rejected: ", format!("{REJECTED} dead letters; "))
                } else {
                    ("none rejected:", String::new())
                };
                println!(
                    "round {round}: framework, {label} {rate:>9.0} records/s  ({dead_letters}the loop held at most {} records)",
                    held.peak
                );
                rate
            }
        };
        // Each kind goes first in every other round, as in P1.
        let (none, rejecting) = if round % 2 == 1 {
            let none = run(false).await;
            (none, run(true).await)
        } else {
            let rejecting = run(true).await;
            (run(false).await, rejecting)
        };
        best_none = best_none.max(none);
        best_rejecting = best_rejecting.max(rejecting);
        ratios.push((round % 2 == 1, rejecting / none));
    }
    let dead_letters = "p2-dead-letters-raw";
    EmbeddedKafka::get()
        .create_topic(dead_letters, 1)
        .expect("topic");
    let raw = tokio::spawn(raw(bootstrap.clone(), dead_letters))
        .await
        .expect("raw run");
    println!("raw, 1 % rejected:                  {raw:>9.0} records/s  ({REJECTED} dead letters, each awaited)");
    println!(
        "best: framework {best_none:.0} records/s with none rejected, {best_rejecting:.0} with 1 %"
    );
    println!(
        "framework/raw ratio (1 % rejected): {:.2}",
        best_rejecting / raw
    );
    println!(
        "best/best ratio (1 % rejected over none): {:.2}",
        best_rejecting / best_none
    );
    let median = report_paired_ratios(&ratios, "none rejected", "1 % rejected");
    println!("p2 framework/p1 rate ratio: {median:.2}");
}

/// One framework run: its rate in records per second and what its loop held.
async fn framework(bootstrap: &str, group: &str, rejecting: bool) -> (f64, HeldRecords) {
    let dead_letters = format!("{group}-dead-letters");
    let handled = Arc::new(AtomicUsize::new(0));
    let first = Arc::new(Mutex::new(None::<Instant>));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Instant>();
    let done_tx = Arc::new(Mutex::new(Some(done_tx)));
    let handler = move |reading: Reading| {
        // One record at a time (max-concurrency 1), so a load and a store count exactly.
        let count = handled.load(Ordering::Relaxed) + 1;
        handled.store(count, Ordering::Relaxed);
        if count == 1 {
            *first.lock().unwrap() = Some(Instant::now());
        }
        if count == RECORDS {
            if let Some(done) = done_tx.lock().unwrap().take() {
                let started = first.lock().unwrap().expect("the first record was seen");
                let _ = done.send(started);
            }
        }
        let verdict = if rejecting && rejects(reading.sequence) {
            Err(Rejected(reading.sequence))
        } else {
            Ok(())
        };
        std::future::ready(verdict)
    };
    let app = started(
        application(TOPIC, group)
            .set(
                "messaging.incoming.readings.failure-strategy",
                "dead-letter-queue",
            )
            .set(
                "messaging.incoming.readings.dead-letter-queue.topic",
                &dead_letters,
            ),
        handler,
    )
    .await;
    let started = done_rx.await.expect("all records handled");
    let expected = if rejecting { REJECTED } else { 0 };
    let polling = bootstrap.to_owned();
    let written = tokio::task::spawn_blocking(move || {
        let client = watermark_client(&polling);
        loop {
            let (_, high) = watermarks(&client, &dead_letters, 0);
            if high as usize >= expected {
                return high as usize;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    })
    .await
    .unwrap();
    let wall = started.elapsed();
    assert_eq!(written, expected, "dead letters written");
    let held = app.held_records(CHANNEL).expect("a Kafka channel");
    app.shutdown().await;
    (RECORDS as f64 / wall.as_secs_f64(), held)
}

/// The baseline: its rate in records per second.
async fn raw(bootstrap: String, dead_letters: &'static str) -> f64 {
    let consumer = raw_consumer(&bootstrap, "p2-raw", TOPIC);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("dead-letter producer");
    let mut first = None;
    let mut stream = consumer.stream();
    for _ in 0..RECORDS {
        let message = stream
            .next()
            .await
            .expect("streams never end")
            .expect("record");
        first.get_or_insert_with(Instant::now);
        let reading: Reading =
            serde_json::from_slice(message.payload().expect("value")).expect("decode");
        if rejects(reading.sequence) {
            let mut letter = FutureRecord::<[u8], [u8]>::to(dead_letters)
                .payload(message.payload().expect("value"));
            if let Some(key) = message.key() {
                letter = letter.key(key);
            }
            producer
                .send(letter, Duration::from_secs(30))
                .await
                .expect("dead letter delivered");
        }
        consumer
            .store_offset_from_message(&message)
            .expect("store offset");
    }
    let wall = first.expect("records").elapsed();
    RECORDS as f64 / wall.as_secs_f64()
}
