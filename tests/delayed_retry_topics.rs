//! `failure-strategy = delayed-retry-topic` on the embedded cluster: a failed record climbs the
//! channel's retry topics, is handled again by the same handler once each topic's delay has
//! passed, and ends in the dead-letter topic when no retry is left; every original is
//! committed only once its next copy was written.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use messaging::health::Check;
use messaging::{KafkaMetadata, Metadata, RunningApp};

#[derive(Debug, thiserror::Error)]
#[error("{0} is not ready yet")]
struct NotYet(String);

/// One handler call: the value, where the record was read, and when the handler ran.
#[derive(Clone, Debug)]
struct Call {
    value: String,
    topic: String,
    /// The record's timestamp (when it was written), in ms since the epoch.
    written_ms: i64,
    handled_ms: i64,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A handler that fails each record whose value starts with `flaky` on its first `failures`
/// calls (every call when `failures` is `usize::MAX`), and records every call.
fn failing(
    calls: &Arc<Mutex<Vec<Call>>>,
    failures: usize,
) -> impl Fn(String, Metadata) -> std::future::Ready<Result<(), NotYet>> + Clone {
    let calls = calls.clone();
    move |value: String, metadata: Metadata| {
        let kafka = metadata.get::<KafkaMetadata>().expect("kafka metadata");
        let mut calls = calls.lock().unwrap();
        let before = calls.iter().filter(|call| call.value == value).count();
        calls.push(Call {
            value: value.clone(),
            topic: kafka.topic().to_owned(),
            written_ms: kafka.timestamp().expect("a timestamp"),
            handled_ms: now_ms(),
        });
        std::future::ready(if value.starts_with("flaky") && before < failures {
            Err(NotYet(value))
        } else {
            Ok(())
        })
    }
}

/// The topics `value` was read from, one per handler call.
fn topics_of(calls: &Arc<Mutex<Vec<Call>>>, value: &str) -> Vec<String> {
    calls_of(calls, value)
        .into_iter()
        .map(|call| call.topic)
        .collect()
}

fn calls_of(calls: &Arc<Mutex<Vec<Call>>>, value: &str) -> Vec<Call> {
    let calls = calls.lock().unwrap();
    calls
        .iter()
        .filter(|call| call.value == value)
        .cloned()
        .collect()
}

/// A channel `titles` reading a fresh topic with `delayed-retry-topic` and these retry topics.
fn retrying(topic: &str, retry_topics: &[String]) -> messaging::AppBuilder {
    reading("titles", topic)
        .set(
            "messaging.incoming.titles.failure-strategy",
            "delayed-retry-topic",
        )
        .set(
            "messaging.incoming.titles.delayed-retry-topic.topics",
            retry_topics.join(","),
        )
        .set(
            "messaging.incoming.titles.dead-letter-queue.topic",
            format!("{topic}-dead-letters"),
        )
}

/// The consumer group of a retry topic's consumer: the channel's group, then the topic.
fn retry_group(group: &str, retry_topic: &str) -> String {
    format!("{group}-{retry_topic}")
}

/// Why a dead letter was not retried again.
fn retries_ended(dead_letter: &ReadRecord) -> &str {
    dead_letter
        .header("dead-letter-retries-ended")
        .unwrap_or_else(|| panic!("no dead-letter-retries-ended in {:?}", dead_letter.headers))
}

fn liveness(app: &RunningApp, channel: &str) -> Option<Result<(), String>> {
    app.health()
        .check(Check::Liveness)
        .data
        .get(channel)
        .cloned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_record_is_handled_again_from_each_retry_topic_after_its_delay() {
    let topic = unique("retry-topics");
    create_topic(&topic, 1);
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    produce(
        &topic,
        &[
            Record::value(b"ok-1"),
            Record {
                key: Some(b"k-2"),
                value: b"flaky-2",
                headers: &[("traceparent", traceparent)],
                partition: None,
            },
            Record::value(b"ok-3"),
        ],
    );
    let retry_topics = [format!("{topic}_retry_200"), format!("{topic}_retry_400")];
    let calls = Arc::new(Mutex::new(Vec::new()));
    let app = start(
        retrying(&topic, &retry_topics)
            .set("messaging.health.enabled", true)
            .set("messaging.health.port", 0)
            .incoming("titles", failing(&calls, 2)),
    )
    .await;

    eventually("flaky-2 handled three times", || {
        calls_of(&calls, "flaky-2").len() == 3
    })
    .await;
    let flaky = calls_of(&calls, "flaky-2");
    let topics: Vec<&str> = flaky.iter().map(|call| call.topic.as_str()).collect();
    assert_eq!(topics, [&topic, &retry_topics[0], &retry_topics[1]]);
    // Never early: each retry ran at least its topic's delay after it was written.
    for (call, delay) in flaky[1..].iter().zip([200, 400]) {
        assert!(
            call.handled_ms >= call.written_ms + delay,
            "handled {} ms after it was written to {}, before its {delay} ms delay",
            call.handled_ms - call.written_ms,
            call.topic
        );
    }
    for value in ["ok-1", "ok-3"] {
        assert_eq!(calls_of(&calls, value).len(), 1, "{value} handled once");
    }

    // Each retry record: the original value, and where and why it failed before.
    let first = &read(&retry_topics[0], 1)[0];
    let second = &read(&retry_topics[1], 1)[0];
    assert_eq!(first.value_str(), "flaky-2");
    assert_eq!(second.value_str(), "flaky-2");
    for record in [first, second] {
        // The original's key and headers travel on, its trace context among them.
        assert_eq!(record.key.as_deref(), Some(&b"k-2"[..]));
        assert_eq!(record.header("traceparent"), Some(traceparent));
    }
    assert_eq!(first.header("delayed-retry-count"), Some("1"));
    assert_eq!(second.header("delayed-retry-count"), Some("2"));
    assert_eq!(first.header("delayed-retry-topic"), Some(topic.as_str()));
    assert_eq!(first.header("delayed-retry-offset"), Some("1"));
    assert_eq!(
        second.header("delayed-retry-topic"),
        Some(retry_topics[0].as_str())
    );
    assert_eq!(
        first.header("delayed-retry-reason"),
        Some("flaky-2 is not ready yet")
    );
    assert_eq!(
        first.header("delayed-retry-exception-class-name"),
        Some("delayed_retry_topics::NotYet")
    );
    let original_timestamp = flaky[0].written_ms.to_string();
    for record in [first, second] {
        assert_eq!(
            record.header("delayed-retry-original-timestamp"),
            Some(original_timestamp.as_str())
        );
        // Written afresh on each hop, not accumulated.
        let counts = record
            .headers
            .iter()
            .filter(|(name, _)| name == "delayed-retry-count")
            .count();
        assert_eq!(counts, 1, "{:?}", record.headers);
    }
    assert_eq!(
        first.header("delayed-retry-first-processing-timestamp"),
        second.header("delayed-retry-first-processing-timestamp")
    );

    // Every original committed, nothing dead-lettered, every consumer healthy.
    eventually("all three topics committed", || {
        committed(&topic, &topic, 0) == Some(3)
            && committed(&retry_group(&topic, &retry_topics[0]), &retry_topics[0], 0) == Some(1)
            && committed(&retry_group(&topic, &retry_topics[1]), &retry_topics[1], 0) == Some(1)
    })
    .await;
    assert_eq!(end_offset(&format!("{topic}-dead-letters"), 0), 0);
    for channel in [
        "titles".to_owned(),
        format!("titles[{}]", retry_topics[0]),
        format!("titles[{}]", retry_topics[1]),
    ] {
        assert_eq!(liveness(&app, &channel), Some(Ok(())), "{channel}");
    }
    let address = app.health_address().expect("health server");
    let text = scrape_until(address, "retries counted", |text| {
        text.contains(&format!(
            "messaging_records_sent_to_retry_topic_total{{channel=\"titles[{}]\"}} 1\n",
            retry_topics[0]
        ))
    })
    .await;
    assert!(
        text.contains("messaging_records_sent_to_retry_topic_total{channel=\"titles\"} 1\n"),
        "{text}"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_with_no_retry_left_goes_to_the_dead_letter_topic_with_its_history() {
    let topic = topic_with("retry-exhausted", &["flaky-1", "ok-2"]);
    let retry_topics = [format!("{topic}_first_100"), format!("{topic}_then_100")];
    let calls = Arc::new(Mutex::new(Vec::new()));
    let app = start(
        retrying(&topic, &retry_topics)
            .set(
                "messaging.incoming.titles.delayed-retry-topic.max-retries",
                3,
            )
            .incoming("titles", failing(&calls, usize::MAX)),
    )
    .await;

    let dead_letters = read(&format!("{topic}-dead-letters"), 1);
    let dead_letter = &dead_letters[0];
    assert_eq!(dead_letter.value_str(), "flaky-1");
    // The third retry stays on the last topic.
    let topics = topics_of(&calls, "flaky-1");
    assert_eq!(
        topics,
        [&topic, &retry_topics[0], &retry_topics[1], &retry_topics[1]].map(String::clone)
    );
    assert_eq!(
        dead_letter.header("dead-letter-reason"),
        Some("flaky-1 is not ready yet")
    );
    assert_eq!(
        dead_letter.header("dead-letter-topic"),
        Some(retry_topics[1].as_str())
    );
    assert!(
        retries_ended(dead_letter).starts_with("retried 3 times through retry topics"),
        "{}",
        retries_ended(dead_letter)
    );
    // What the last retry record said comes along: the history of the record.
    assert_eq!(dead_letter.header("delayed-retry-count"), Some("3"));
    assert_eq!(
        dead_letter.header("delayed-retry-topic"),
        Some(retry_topics[1].as_str())
    );
    assert_eq!(end_offset(&retry_topics[1], 0), 2);
    eventually("everything committed", || {
        committed(&topic, &topic, 0) == Some(2)
            && committed(&retry_group(&topic, &retry_topics[0]), &retry_topics[0], 0) == Some(1)
            && committed(&retry_group(&topic, &retry_topics[1]), &retry_topics[1], 0) == Some(2)
    })
    .await;
    assert_eq!(liveness(&app, "titles"), Some(Ok(())));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_that_would_come_past_the_timeout_is_not_made() {
    let topic = topic_with("retry-timeout", &["flaky-1"]);
    let retry_topics = [format!("{topic}_retry_300")];
    let calls = Arc::new(Mutex::new(Vec::new()));
    // At the first failure a retry 300 ms later is within the 500 ms; at the second, at least
    // 300 ms after the first, another one would not be.
    let app = start(
        retrying(&topic, &retry_topics)
            .set(
                "messaging.incoming.titles.delayed-retry-topic.max-retries",
                5,
            )
            .set("messaging.incoming.titles.delayed-retry-topic.timeout", 500)
            .incoming("titles", failing(&calls, usize::MAX)),
    )
    .await;

    let dead_letter = &read(&format!("{topic}-dead-letters"), 1)[0];
    assert_eq!(dead_letter.value_str(), "flaky-1");
    assert!(
        retries_ended(dead_letter).contains("past delayed-retry-topic.timeout"),
        "{}",
        retries_ended(dead_letter)
    );
    assert_eq!(calls_of(&calls, "flaky-1").len(), 2);
    assert_eq!(end_offset(&retry_topics[0], 0), 1, "retried once");
    app.shutdown().await;
}

/// A record that would fail the same way again (a decode failure here; a panic or an error
/// marked `Permanent` alike) goes straight to the dead-letter topic. This one is a dead letter
/// replayed: the `delayed-retry-*` history it carries is of its earlier run, and does not go
/// with it to the new dead letter.
#[tokio::test(flavor = "multi_thread")]
async fn a_permanent_failure_skips_the_retry_topics() {
    let topic = unique("retry-permanent");
    create_topic(&topic, 1);
    produce(
        &topic,
        &[
            Record {
                key: None,
                value: &[0xff, 0xfe],
                headers: &[
                    ("delayed-retry-count", "3"),
                    ("delayed-retry-reason", "an earlier run's"),
                    ("trace", "kept"),
                ],
                partition: None,
            },
            Record::value(b"ok-2"),
        ],
    );
    let retry_topics = [format!("{topic}_retry_100")];
    let calls = Arc::new(Mutex::new(Vec::new()));
    let app = start(retrying(&topic, &retry_topics).incoming("titles", failing(&calls, 0))).await;

    let dead_letter = &read(&format!("{topic}-dead-letters"), 1)[0];
    assert_eq!(dead_letter.value.as_deref(), Some(&[0xff, 0xfe][..]));
    assert_eq!(dead_letter.header("delayed-retry-count"), None);
    assert_eq!(dead_letter.header("delayed-retry-reason"), None);
    assert_eq!(dead_letter.header("trace"), Some("kept"));
    assert!(
        retries_ended(dead_letter).contains("a permanent error"),
        "{}",
        retries_ended(dead_letter)
    );
    eventually("both committed", || committed(&topic, &topic, 0) == Some(2)).await;
    assert_eq!(end_offset(&retry_topics[0], 0), 0, "never retried");
    assert_eq!(
        calls.lock().unwrap().len(),
        1,
        "only ok-2 reached the handler"
    );
    app.shutdown().await;
}

/// A record in a retry topic without its history (written there by something else, or its
/// headers stripped on the way) cannot be counted: when it fails it goes to the dead-letter
/// topic, never round again.
#[tokio::test(flavor = "multi_thread")]
async fn a_retry_without_its_history_headers_is_dead_lettered_when_it_fails() {
    let topic = topic_with("retry-no-history", &[]);
    let retry_topics = [format!("{topic}_retry_100"), format!("{topic}_retry_200")];
    create_topic(&retry_topics[0], 1);
    produce(&retry_topics[0], &[Record::value(b"flaky-1")]);
    let calls = Arc::new(Mutex::new(Vec::new()));
    let app =
        start(retrying(&topic, &retry_topics).incoming("titles", failing(&calls, usize::MAX)))
            .await;

    let dead_letter = &read(&format!("{topic}-dead-letters"), 1)[0];
    assert_eq!(dead_letter.value_str(), "flaky-1");
    assert_eq!(
        dead_letter.header("dead-letter-topic"),
        Some(retry_topics[0].as_str())
    );
    assert!(
        retries_ended(dead_letter).contains("without its delayed-retry-count"),
        "{}",
        retries_ended(dead_letter)
    );
    assert_eq!(calls_of(&calls, "flaky-1").len(), 1);
    // Starting afresh would have written it to the first topic again.
    assert_eq!(end_offset(&retry_topics[0], 0), 1, "not sent round again");
    assert_eq!(end_offset(&retry_topics[1], 0), 0);
    app.shutdown().await;
}

/// Two applications reading one topic in groups of their own get retry topics of their own:
/// the default names follow the consumer group and the channel, not the channel alone.
#[tokio::test(flavor = "multi_thread")]
async fn the_default_retry_topics_are_named_after_the_consumer_group() {
    let topic = topic_with("retry-defaults", &[]);
    let mut apps = Vec::new();
    for group in ["billing", "shipping"] {
        let group = format!("{topic}-{group}");
        let app = start(
            reading("titles", &topic)
                .set("messaging.incoming.titles.group.id", &group)
                .set(
                    "messaging.incoming.titles.failure-strategy",
                    "delayed-retry-topic",
                )
                .incoming("titles", |_: String| async { Ok::<(), NotYet>(()) }),
        )
        .await;
        let checks = app.health().check(Check::Liveness).data;
        for delay in [10_000, 20_000, 50_000] {
            let channel = format!("titles[{group}-titles_retry_{delay}]");
            assert!(checks.contains_key(&channel), "{channel} in {checks:?}");
        }
        apps.push(app);
    }
    // Two channels sharing a group (set connector-wide) get retry topics of their own too.
    let group = format!("{topic}-shared");
    let app = start(
        builder()
            .set("messaging.connector.kafka.group.id", &group)
            .set(
                "messaging.connector.kafka.failure-strategy",
                "delayed-retry-topic",
            )
            .set("messaging.incoming.titles.topic", &topic)
            .set("messaging.incoming.names.topic", &topic)
            .incoming("titles", |_: String| async { Ok::<(), NotYet>(()) })
            .incoming("names", |_: String| async { Ok::<(), NotYet>(()) }),
    )
    .await;
    let checks = app.health().check(Check::Liveness).data;
    for channel in ["titles", "names"] {
        let retry_consumer = format!("{channel}[{group}-{channel}_retry_10000]");
        assert!(
            checks.contains_key(&retry_consumer),
            "{retry_consumer} in {checks:?}"
        );
    }
    apps.push(app);
    for app in apps {
        app.shutdown().await;
    }
}

/// The retry topic a channel writes next is probed as its dead-letter topic is: missing (never
/// created, or deleted), the channel is not ready, naming it, until it exists; a retry written
/// there would fail the channel.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_retry_topic_makes_the_channel_that_writes_it_not_ready() {
    let (cluster, bootstrap, topic) = cluster_of_its_own("retry-missing", &[]);
    let retry_topic = format!("{topic}_retry_100");
    let dead_letters = format!("{topic}-dead-letters");
    cluster.create_topic(&dead_letters, 1, 1).expect("topic");
    let app = start(
        retrying(&topic, std::slice::from_ref(&retry_topic))
            .set("messaging.connector.kafka.bootstrap.servers", &bootstrap)
            .set("messaging.connector.kafka.allow.auto.create.topics", false)
            .incoming("titles", |_: String| async { Ok::<(), NotYet>(()) }),
    )
    .await;
    let readiness = |channel: &str| {
        app.health()
            .check(Check::Readiness)
            .data
            .get(channel)
            .cloned()
    };
    let missing = format!("the retry topic {retry_topic} cannot be written");
    eventually(
        "not ready, naming the retry topic",
        || matches!(readiness("titles"), Some(Err(text)) if text.contains(&missing)),
    )
    .await;
    cluster.create_topic(&retry_topic, 1, 1).expect("topic");
    eventually("ready once it exists", || {
        readiness("titles") == Some(Ok(()))
    })
    .await;
    app.shutdown().await;
}

/// A retry waiting for its delay at shutdown neither holds the shutdown for the delay nor is
/// lost: it stays uncommitted in its retry topic and is handled after the restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_retry_waiting_at_shutdown_is_handled_after_the_restart() {
    let topic = topic_with("retry-restart", &["flaky-1"]);
    // Long enough that the shutdown below comes while the retry waits.
    let retry_topic = format!("{topic}_retry_10000");
    let calls = Arc::new(Mutex::new(Vec::new()));
    let app = retrying(&topic, std::slice::from_ref(&retry_topic));
    let app = start(app.incoming("titles", failing(&calls, 1))).await;
    eventually("the original committed once its retry was written", || {
        end_offset(&retry_topic, 0) == 1 && committed(&topic, &topic, 0) == Some(1)
    })
    .await;
    // The retry topic's consumer holds it, waiting out the delay, when the shutdown comes.
    let retry_consumer = format!("titles[{retry_topic}]");
    eventually("the retry taken in", || {
        app.held_records(&retry_consumer)
            .is_some_and(|held| held.now == 1)
    })
    .await;
    app.shutdown().await;
    assert_eq!(calls_of(&calls, "flaky-1").len(), 1, "not retried early");
    assert_eq!(
        committed(&retry_group(&topic, &retry_topic), &retry_topic, 0).unwrap_or(0),
        0,
        "the waiting retry stays uncommitted"
    );

    let app = retrying(&topic, std::slice::from_ref(&retry_topic));
    let app = start(app.incoming("titles", failing(&calls, 1))).await;
    eventually("handled again after the restart", || {
        calls_of(&calls, "flaky-1").len() == 2
    })
    .await;
    let retried = &calls_of(&calls, "flaky-1")[1];
    assert_eq!(retried.topic, retry_topic);
    assert!(retried.handled_ms >= retried.written_ms + 10_000);
    eventually("the retry committed", || {
        committed(&retry_group(&topic, &retry_topic), &retry_topic, 0) == Some(1)
    })
    .await;
    app.shutdown().await;
}

#[tokio::test]
async fn bad_retry_topics_fail_the_start_naming_the_key() {
    let error = builder()
        .set(
            "messaging.incoming.titles.failure-strategy",
            "delayed-retry-topic",
        )
        .set(
            "messaging.incoming.titles.delayed-retry-topic.topics",
            "titles-retry-fast",
        )
        .incoming("titles", |_: String| async { Ok::<(), NotYet>(()) })
        .build()
        .err()
        .expect("a configuration error")
        .to_string();
    assert!(
        error.contains("messaging.incoming.titles.delayed-retry-topic.topics"),
        "{error}"
    );
    assert!(error.contains("does not end in _<delay in ms>"), "{error}");

    let error = builder()
        .set("messaging.incoming.titles.connector", "memory")
        .set(
            "messaging.incoming.titles.failure-strategy",
            "delayed-retry-topic",
        )
        .incoming("titles", |_: String| async { Ok::<(), NotYet>(()) })
        .build()
        .err()
        .expect("a configuration error")
        .to_string();
    assert!(error.contains("no dead-letter or retry topics"), "{error}");

    let start_error = |builder: messaging::AppBuilder| {
        builder
            .build()
            .err()
            .expect("a configuration error")
            .to_string()
    };
    let handler = |_: String| async { Ok::<(), NotYet>(()) };
    // Two channels on the same retry topics (here set connector-wide): each one's retries
    // would reach the other's handler.
    let error = start_error(
        builder()
            .set(
                "messaging.connector.kafka.failure-strategy",
                "delayed-retry-topic",
            )
            .set(
                "messaging.connector.kafka.delayed-retry-topic.topics",
                "shared_retry_1000",
            )
            .incoming("titles", handler)
            .incoming("names", handler),
    );
    assert!(
        error.contains("shared_retry_1000 is also a retry topic of incoming channel"),
        "{error}"
    );
    let error = start_error(
        retrying("titles", &["lengths_retry_1000".to_owned()])
            .set("messaging.outgoing.lengths.topic", "lengths_retry_1000")
            .incoming("titles", handler)
            .outgoing("lengths"),
    );
    assert!(
        error.contains("is also the topic of outgoing channel lengths"),
        "{error}"
    );
    let error = start_error(
        retrying("titles", &["titles_retry_1000".to_owned()])
            .set("messaging.incoming.titles.commit-strategy", "ignore")
            .incoming("titles", handler),
    );
    assert!(
        error.contains("messaging.incoming.titles.commit-strategy")
            && error.contains("would handle every retry again"),
        "{error}"
    );
    // With librdkafka's auto-commit (any spelling of true it takes), the retry consumers commit.
    retrying("titles", &["titles_retry_1000".to_owned()])
        .set("messaging.incoming.titles.commit-strategy", "ignore")
        .set("messaging.incoming.titles.enable.auto.commit", 1)
        .incoming("titles", handler)
        .build()
        .expect("auto-commit commits what the retry consumers read");
    let error = start_error(
        retrying("titles", &["titles_retry_600000".to_owned()]).incoming("titles", handler),
    );
    assert!(
        error.contains("past messaging.incoming.titles.delayed-retry-topic.timeout"),
        "{error}"
    );
}

/// In-process retries run on every hop, the first on a retry topic included: the topic's delay
/// does not count towards `retry.max-duration.ms`.
#[tokio::test(flavor = "multi_thread")]
async fn in_process_retries_run_before_each_hop() {
    let topic = topic_with("retry-in-process", &["flaky-1"]);
    let retry_topics = [format!("{topic}_retry_3000")];
    let calls = Arc::new(Mutex::new(Vec::new()));
    let app = start(
        retrying(&topic, &retry_topics)
            .set("messaging.incoming.titles.retry.max-retries", 1)
            .set("messaging.incoming.titles.retry.initial-delay.ms", 10)
            .set("messaging.incoming.titles.retry.max-duration.ms", 2000)
            .incoming("titles", failing(&calls, 3)),
    )
    .await;

    eventually("flaky-1 handled four times", || {
        calls_of(&calls, "flaky-1").len() == 4
    })
    .await;
    let topics = topics_of(&calls, "flaky-1");
    assert_eq!(
        topics,
        [&topic, &topic, &retry_topics[0], &retry_topics[0]].map(String::clone)
    );
    eventually("the retry committed", || {
        committed(&retry_group(&topic, &retry_topics[0]), &retry_topics[0], 0) == Some(1)
    })
    .await;
    assert_eq!(end_offset(&format!("{topic}-dead-letters"), 0), 0);
    app.shutdown().await;
}

/// A retry topic's records are handled in offset order even when a later one is due first
/// (timestamps written by instances with skewed clocks, or a millisecond boundary between two
/// reads of the clock): under the defaults too (`max-concurrency` 1, no in-process retries), a
/// record waiting out its delay holds its partition's ordering slot.
#[tokio::test(flavor = "multi_thread")]
async fn a_retry_topics_records_are_handled_in_offset_order_whenever_each_is_due() {
    let topic = unique("retry-order");
    let retry_topic = format!("{topic}_retry_2000");
    create_topic(&topic, 1);
    create_topic(&retry_topic, 1);
    // `first` is written "in the future" by a clock ahead of ours: it waits the whole 2 s delay
    // once read. `second`, the next offset, was due long ago.
    let producer: rdkafka::producer::ThreadedProducer<rdkafka::producer::DefaultProducerContext> =
        rdkafka::ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .create()
            .expect("producer");
    let hour_ms = 3_600_000;
    for (value, written_ms) in [
        ("first", now_ms() + hour_ms),
        ("second", now_ms() - hour_ms),
    ] {
        producer
            .send(
                rdkafka::producer::BaseRecord::<(), str>::to(&retry_topic)
                    .payload(value)
                    .timestamp(written_ms),
            )
            .map_err(|(error, _)| error)
            .expect("enqueue");
    }
    rdkafka::producer::Producer::flush(&producer, PATIENCE).expect("delivered");
    let calls = Arc::new(Mutex::new(Vec::new()));
    let app = start(retrying(&topic, &[retry_topic]).incoming("titles", failing(&calls, 0))).await;
    eventually("both handled", || calls.lock().unwrap().len() == 2).await;
    let order: Vec<String> = calls
        .lock()
        .unwrap()
        .iter()
        .map(|call| call.value.clone())
        .collect();
    assert_eq!(order, ["first", "second"]);
    app.shutdown().await;
}
