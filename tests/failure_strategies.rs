//! The failure strategies on the embedded cluster: fail, ignore, dead-letter-queue, and the
//! nacks that feed them (errors, panics, decode failures, dropped messages).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use messaging::health::{Check, Status};
use messaging::{Message, RunningApp};

#[derive(Debug, thiserror::Error)]
#[error("rejected {title}")]
struct Rejected {
    title: String,
    #[source]
    cause: std::num::ParseIntError,
}

fn reject_bad(
    seen: &Arc<Mutex<Vec<String>>>,
) -> impl Fn(String) -> std::future::Ready<Result<(), Rejected>> + Clone {
    let seen = seen.clone();
    move |title: String| {
        seen.lock().unwrap().push(title.clone());
        std::future::ready(if title.starts_with("bad") {
            Err(Rejected {
                title,
                cause: "x".parse::<u8>().unwrap_err(),
            })
        } else {
            Ok(())
        })
    }
}

fn liveness(app: &RunningApp, channel: &str) -> Result<(), String> {
    app.health().check(Check::Liveness).data[channel].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_stops_the_channel_and_commits_nothing_past_the_failed_record() {
    let topic = topic_with("fail", &["ok-1", "bad-2", "ok-3"]);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = start(
        builder()
            .set("messaging.incoming.titles.topic", &topic)
            .set("messaging.incoming.titles.group.id", &topic)
            .incoming("titles", reject_bad(&seen)),
    )
    .await;

    eventually("liveness DOWN", || {
        app.health().check(Check::Liveness).status == Status::Down
    })
    .await;
    assert_eq!(liveness(&app, "titles"), Err("rejected bad-2".to_owned()));
    app.shutdown().await;

    assert_eq!(
        *seen.lock().unwrap(),
        ["ok-1", "bad-2"],
        "the channel stopped at the failed record"
    );
    assert_eq!(
        committed(&topic, &topic, 0),
        Some(1),
        "committed up to, not past, the failed record"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ignore_acknowledges_and_continues() {
    let topic = topic_with("ignore", &["ok-1", "bad-2", "ok-3"]);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = start(
        builder()
            .set("messaging.incoming.titles.topic", &topic)
            .set("messaging.incoming.titles.group.id", &topic)
            .set("messaging.incoming.titles.failure-strategy", "ignore")
            .incoming("titles", reject_bad(&seen)),
    )
    .await;

    eventually("all three handled", || seen.lock().unwrap().len() == 3).await;
    eventually("offset 3 committed", || {
        committed(&topic, &topic, 0) == Some(3)
    })
    .await;
    assert_eq!(liveness(&app, "titles"), Ok(()));
    app.shutdown().await;
}

fn dead_letter_builder(topic: &str, dead_letter_topic: &str) -> messaging::AppBuilder {
    create_topic(topic, 1);
    builder()
        .set("messaging.incoming.titles.topic", topic)
        .set("messaging.incoming.titles.group.id", topic)
        .set(
            "messaging.incoming.titles.failure-strategy",
            "dead-letter-queue",
        )
        .set(
            "messaging.incoming.titles.dead-letter-queue.topic",
            dead_letter_topic,
        )
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letter_record_keeps_key_bytes_and_headers_and_says_why() {
    let topic = unique("dlq");
    let dead_letters = unique("dlq-out");
    let builder = dead_letter_builder(&topic, &dead_letters);
    produce(
        &topic,
        &[
            Record {
                key: Some(b"k-1"),
                value: b"ok-1",
                headers: &[],
                partition: None,
            },
            Record {
                key: Some(b"k-2"),
                value: b"bad-2",
                // Dead-lettered before and replayed: its old `dead-letter-*` headers are not
                // copied, or readers would find two of each (and the old one last).
                headers: &[
                    ("trace", "abc"),
                    ("dead-letter-reason", "an old reason"),
                    ("dead-letter-cause", "an old cause"),
                    ("tenant", "t1"),
                    ("dead-letter-offset", "4242"),
                    // Not one of ours: a replay tool's own, copied.
                    ("dead-letter-replays", "2"),
                ],
                partition: None,
            },
        ],
    );
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = start(builder.incoming("titles", reject_bad(&seen))).await;

    let records = read(&dead_letters, 1);
    let record = &records[0];
    assert_eq!(record.key.as_deref(), Some(&b"k-2"[..]));
    assert_eq!(record.value.as_deref(), Some(&b"bad-2"[..]));
    let headers: Vec<(&str, &str)> = record
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let topic_name = topic.as_str();
    assert_eq!(
        headers,
        [
            (
                "dead-letter-exception-class-name",
                "failure_strategies::Rejected"
            ),
            ("dead-letter-reason", "rejected bad-2"),
            ("dead-letter-cause", "invalid digit found in string"),
            ("dead-letter-topic", topic_name),
            ("dead-letter-partition", "0"),
            ("dead-letter-offset", "1"),
            ("dead-letter-attempts", "1"),
            ("trace", "abc"),
            ("tenant", "t1"),
            ("dead-letter-replays", "2"),
        ]
    );
    eventually("the original is committed once dead-lettered", || {
        committed(&topic, &topic, 0) == Some(2)
    })
    .await;
    assert_eq!(liveness(&app, "titles"), Ok(()));
    app.shutdown().await;
}

/// A record the consumer could read can be dead-lettered: librdkafka's producer limit
/// (1,000,000 bytes) is below a broker's default (1,048,588), and a record between the two
/// failed the channel on every start.
#[tokio::test(flavor = "multi_thread")]
async fn a_record_larger_than_librdkafkas_producer_limit_is_dead_lettered() {
    let topic = unique("dlq-large");
    let dead_letters = unique("dlq-large-out");
    let builder = dead_letter_builder(&topic, &dead_letters);
    let mut large = b"bad-".to_vec();
    large.resize(1_040_000, b'x');
    produce(&topic, &[Record::value(&large), Record::value(b"ok-1")]);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = start(builder.incoming("titles", reject_bad(&seen))).await;

    let records = read(&dead_letters, 1);
    assert_eq!(records[0].value.as_deref(), Some(&large[..]));
    eventually("both records committed", || {
        committed(&topic, &topic, 0) == Some(2)
    })
    .await;
    assert_eq!(liveness(&app, "titles"), Ok(()));
    app.shutdown().await;

    // Held to librdkafka's limit, it cannot be: the channel fails saying which keys decide.
    let topic = unique("dlq-too-large");
    let builder = dead_letter_builder(&topic, &unique("dlq-too-large-out")).set(
        "messaging.incoming.titles.dead-letter-queue.message.max.bytes",
        1_000_000,
    );
    produce(&topic, &[Record::value(&large)]);
    let app = start(builder.incoming("titles", reject_bad(&seen))).await;
    eventually("the channel fails", || liveness(&app, "titles").is_err()).await;
    let reason = liveness(&app, "titles").unwrap_err();
    assert!(
        reason.contains("raise the topic's, or set dead-letter-queue.message.max.bytes"),
        "{reason}"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_dead_letter_write_fails_the_channel_and_commits_nothing_past_it() {
    let topic = unique("dlq-down");
    // The dead-letter producer inherits the channel's client settings; these overrides point
    // it at a broker that is not there, so its write fails.
    let builder = dead_letter_builder(&topic, "unreachable-dead-letters")
        .set(
            "messaging.incoming.titles.dead-letter-queue.bootstrap.servers",
            "127.0.0.1:1",
        )
        .set(
            "messaging.incoming.titles.dead-letter-queue.message.timeout.ms",
            500,
        );
    produce_values(&topic, &["ok-1", "bad-2", "ok-3"]);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = start(builder.incoming("titles", reject_bad(&seen))).await;

    eventually("liveness DOWN", || {
        app.health().check(Check::Liveness).status == Status::Down
    })
    .await;
    let reason = liveness(&app, "titles").unwrap_err();
    assert!(
        reason.contains("unreachable-dead-letters") && reason.contains("rejected bad-2"),
        "{reason}"
    );
    app.shutdown().await;
    assert_eq!(committed(&topic, &topic, 0), Some(1));
    // The write does not stop the partition, so ok-3 may have been handled meanwhile; it is
    // not committed, and is delivered again after a restart.
    assert_eq!(seen.lock().unwrap()[..2], ["ok-1", "bad-2"]);
}

#[derive(Debug, serde::Deserialize)]
struct Movie {
    title: String,
}

#[tokio::test(flavor = "multi_thread")]
async fn undecodable_records_never_reach_the_handler_and_go_to_the_dead_letter_topic_as_they_were()
{
    let topic = unique("decode");
    let dead_letters = unique("decode-out");
    let builder = dead_letter_builder(&topic, &dead_letters);
    produce(
        &topic,
        &[
            Record::value(b"{\"title\":\"Heat\"}"),
            Record {
                key: Some(b"k"),
                value: &[0xff, b'{', 0x00],
                headers: &[],
                partition: None,
            },
        ],
    );
    let titles = Arc::new(Mutex::new(Vec::new()));
    let seen = titles.clone();
    let app = start(builder.incoming("titles", move |movie: Movie| {
        seen.lock().unwrap().push(movie.title);
        async {}
    }))
    .await;

    let record = &read(&dead_letters, 1)[0];
    assert_eq!(
        record.value.as_deref(),
        Some(&[0xff, b'{', 0x00][..]),
        "the exact original bytes"
    );
    assert_eq!(record.key.as_deref(), Some(&b"k"[..]));
    assert_eq!(
        record.header("dead-letter-exception-class-name"),
        Some(messaging::DECODE_FAILURE)
    );
    let reason = record.header("dead-letter-reason").unwrap();
    assert!(
        reason.contains("cannot decode")
            && reason.contains("failure_strategies::Movie")
            && reason.contains("JSON"),
        "{reason}"
    );
    eventually("both committed", || committed(&topic, &topic, 0) == Some(2)).await;
    assert_eq!(*titles.lock().unwrap(), ["Heat"]);
    app.shutdown().await;
}

/// Checks the one dead-letter record (its value and reason), then that the channel went on and
/// committed up to `committed_after`. Returns the record for further checks.
async fn one_dead_letter(
    topic: &str,
    dead_letters: &str,
    value: &str,
    reason: &str,
    committed_after: i64,
) -> ReadRecord {
    let record = read(dead_letters, 1).remove(0);
    assert_eq!(record.value_str(), value);
    assert_eq!(record.header("dead-letter-reason"), Some(reason));
    eventually("the channel went on", || {
        committed(topic, topic, 0) == Some(committed_after)
    })
    .await;
    record
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panic_is_a_nack_carrying_the_panic_text() {
    let topic = unique("panic");
    let dead_letters = unique("panic-out");
    let builder = dead_letter_builder(&topic, &dead_letters);
    produce_values(&topic, &["boom", "fine"]);
    let app = start(builder.incoming("titles", |title: String| async move {
        if title == "boom" {
            panic!("cannot handle {title}");
        }
    }))
    .await;

    let record = one_dead_letter(
        &topic,
        &dead_letters,
        "boom",
        "handler panicked: cannot handle boom",
        2,
    )
    .await;
    assert_eq!(
        record.header("dead-letter-exception-class-name"),
        Some("panic")
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panic_while_holding_a_message_nacks_it_with_the_panic_text() {
    let topic = unique("manual-panic");
    let dead_letters = unique("manual-panic-out");
    let builder = dead_letter_builder(&topic, &dead_letters);
    produce_values(&topic, &["boom", "fine"]);
    let app = start(
        builder.incoming("titles", |message: Message<String>| async move {
            if message.payload() == "boom" {
                panic!("cannot handle {}", message.payload());
            }
            message.ack().await
        }),
    )
    .await;

    one_dead_letter(
        &topic,
        &dead_letters,
        "boom",
        "handler panicked: cannot handle boom",
        2,
    )
    .await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_dropped_unsettled_is_nacked_and_one_acked_by_hand_is_committed() {
    let topic = unique("manual");
    let dead_letters = unique("manual-out");
    let builder = dead_letter_builder(&topic, &dead_letters);
    produce_values(&topic, &["ack me", "drop me", "ack me too"]);
    let app = start(
        builder.incoming("titles", |message: Message<String>| async move {
            if message.payload().starts_with("drop") {
                drop(message);
                return Ok(());
            }
            message.ack().await
        }),
    )
    .await;

    one_dead_letter(
        &topic,
        &dead_letters,
        "drop me",
        "message dropped without being settled",
        3,
    )
    .await;
    app.shutdown().await;
}

/// A title whose `Deserialize` panics on "boom" (user code the library calls, not the handler).
#[derive(Debug)]
struct TouchyTitle(String);

impl<'de> serde::Deserialize<'de> for TouchyTitle {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let title = String::deserialize(deserializer)?;
        if title == "boom" {
            panic!("cannot deserialize {title}");
        }
        Ok(TouchyTitle(title))
    }
}

/// Checks the one dead-letter record of a panic in user code and that the channel went on.
async fn assert_panic_dead_lettered(
    app: RunningApp,
    topic: &str,
    dead_letters: &str,
    value: &str,
    panic_text: &str,
) {
    let record = &read(dead_letters, 1)[0];
    assert_eq!(record.value_str(), value);
    assert_eq!(
        record.header("dead-letter-exception-class-name"),
        Some("panic")
    );
    let reason = record.header("dead-letter-reason").unwrap();
    assert!(reason.contains(panic_text), "{reason}");
    eventually("the channel went on", || {
        committed(topic, topic, 0) == Some(2)
    })
    .await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_deserialize_is_a_nack_carrying_the_panic_text() {
    let topic = unique("deserialize-panic");
    let dead_letters = unique("deserialize-panic-out");
    let builder = dead_letter_builder(&topic, &dead_letters);
    produce_values(&topic, &["\"boom\"", "\"fine\""]);
    let titles = Arc::new(Mutex::new(Vec::new()));
    let seen = titles.clone();
    let app = start(builder.incoming("titles", move |title: TouchyTitle| {
        seen.lock().unwrap().push(title.0);
        async {}
    }))
    .await;

    assert_panic_dead_lettered(
        app,
        &topic,
        &dead_letters,
        "\"boom\"",
        "cannot deserialize boom",
    )
    .await;
    assert_eq!(*titles.lock().unwrap(), ["fine"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_deserialize_of_a_whole_message_is_a_nack_carrying_the_panic_text() {
    let topic = unique("deserialize-panic-message");
    let dead_letters = unique("deserialize-panic-message-out");
    let builder = dead_letter_builder(&topic, &dead_letters);
    produce_values(&topic, &["\"boom\"", "\"fine\""]);
    let app =
        start(builder.incoming("titles", |message: Message<TouchyTitle>| message.ack())).await;

    assert_panic_dead_lettered(
        app,
        &topic,
        &dead_letters,
        "\"boom\"",
        "cannot deserialize boom",
    )
    .await;
}

/// An error whose `Display` panics.
#[derive(Debug)]
struct Grumpy;

impl std::fmt::Display for Grumpy {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        panic!("grumpy cannot say why");
    }
}

impl std::error::Error for Grumpy {}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_display_of_the_error_is_a_nack_carrying_the_panic_text() {
    let topic = unique("display-panic");
    let dead_letters = unique("display-panic-out");
    let builder = dead_letter_builder(&topic, &dead_letters);
    produce_values(&topic, &["boom", "fine"]);
    let app = start(builder.incoming("titles", |title: String| async move {
        if title == "boom" {
            Err(Grumpy)
        } else {
            Ok(())
        }
    }))
    .await;

    assert_panic_dead_lettered(app, &topic, &dead_letters, "boom", "grumpy cannot say why").await;
}

/// A title whose `Serialize` panics on "boom".
struct LoudTitle(String);

impl serde::Serialize for LoudTitle {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0 == "boom" {
            panic!("cannot serialize {}", self.0);
        }
        serializer.serialize_str(&self.0)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_serialize_of_a_processor_output_nacks_its_input_with_the_panic_text() {
    let topic = unique("serialize-panic");
    let (output, dead_letters) = (unique("serialize-panic-out"), unique("serialize-panic-dlq"));
    create_topic(&output, 1);
    let builder =
        dead_letter_builder(&topic, &dead_letters).set("messaging.outgoing.loud.topic", &output);
    produce_values(&topic, &["boom", "fine"]);
    let app =
        start(builder.processor(
            "titles",
            "loud",
            |title: String| async move { LoudTitle(title) },
        ))
        .await;

    assert_eq!(read(&output, 1)[0].value_str(), "\"fine\"");
    assert_panic_dead_lettered(app, &topic, &dead_letters, "boom", "cannot serialize boom").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_serialize_of_a_whole_message_output_nacks_its_input_with_the_panic_text() {
    let topic = unique("serialize-panic-message");
    let (output, dead_letters) = (
        unique("serialize-panic-message-out"),
        unique("serialize-panic-message-dlq"),
    );
    create_topic(&output, 1);
    let builder =
        dead_letter_builder(&topic, &dead_letters).set("messaging.outgoing.loud.topic", &output);
    produce_values(&topic, &["boom", "fine"]);
    let app = start(
        builder.processor("titles", "loud", |message: Message<String>| async move {
            message.map(LoudTitle)
        }),
    )
    .await;

    assert_eq!(read(&output, 1)[0].value_str(), "\"fine\"");
    assert_panic_dead_lettered(app, &topic, &dead_letters, "boom", "cannot serialize boom").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_handler_returning_an_error_with_question_mark_dead_letters_that_error() {
    let topic = unique("manual-error");
    let dead_letters = unique("manual-error-out");
    let builder = dead_letter_builder(&topic, &dead_letters);
    produce_values(&topic, &["1999", "nineteen", "2001"]);
    let app = start(
        builder.incoming("titles", |message: Message<String>| async move {
            let year: u16 = message.payload().parse()?;
            assert!(year > 1900);
            message.ack().await?;
            Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
        }),
    )
    .await;

    one_dead_letter(
        &topic,
        &dead_letters,
        "nineteen",
        "invalid digit found in string",
        3,
    )
    .await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_kept_past_its_handler_and_dropped_later_is_still_nacked() {
    let topic = unique("manual-kept");
    let dead_letters = unique("manual-kept-out");
    let builder = dead_letter_builder(&topic, &dead_letters);
    produce_values(&topic, &["ack me", "drop me", "ack me too"]);
    let (kept, mut taken) = tokio::sync::mpsc::unbounded_channel();
    let app = start(builder.incoming("titles", move |message: Message<String>| {
        kept.send(message).expect("the test holds the receiver");
        async {}
    }))
    .await;

    for _ in 0..3 {
        let message = taken.recv().await.expect("a message");
        if message.payload().starts_with("drop") {
            drop(message);
        } else {
            message.ack().await.unwrap();
        }
    }
    one_dead_letter(
        &topic,
        &dead_letters,
        "drop me",
        "message dropped without being settled",
        3,
    )
    .await;
    app.shutdown().await;
}

/// A message dropped unsettled while its channel stops (a delivery the shutdown gave up on, its
/// task dropped with the runtime) is neither a bad record nor, most likely, a handler's bug: it
/// is not dead-lettered, stays uncommitted, and the shutdown stops waiting for it at once
/// (the timeout is an hour).
#[tokio::test(flavor = "multi_thread")]
async fn messages_dropped_while_their_channel_stops_stay_uncommitted_and_are_not_dead_lettered() {
    let logs = captured_logs();
    let topic = unique("dropped-stopping");
    let dead_letters = unique("dropped-stopping-out");
    create_topic(&topic, 1);
    // A channel name of this test's own: the log lines below are told apart by it.
    let channel = "kept-at-stop";
    let key = |key: &str| format!("messaging.incoming.{channel}.{key}");
    let builder = builder()
        .set(&key("topic"), &topic)
        .set(&key("group.id"), &topic)
        .set(&key("failure-strategy"), "dead-letter-queue")
        .set(&key("dead-letter-queue.topic"), &dead_letters)
        .set("messaging.shutdown.timeout.ms", 3_600_000);
    produce_values(&topic, &["kept", "kept too", "kept as well"]);
    let (kept, mut taken) = tokio::sync::mpsc::unbounded_channel();
    let app = start(builder.incoming(channel, move |message: Message<String>| {
        kept.send(message).expect("the test holds the receiver");
        async {}
    }))
    .await;
    let mut messages = Vec::new();
    for _ in 0..3 {
        messages.push(taken.recv().await.expect("a message"));
    }
    let health = app.health().clone();
    let shutdown = tokio::spawn(app.shutdown());
    eventually("the consumer loop stopped", || {
        health.check(Check::Readiness).data[channel] == Err("stopped".to_owned())
    })
    .await;
    drop(messages);
    tokio::time::timeout(PATIENCE, shutdown)
        .await
        .expect("the shutdown stops waiting for the dropped messages")
        .expect("shutdown task");
    assert_eq!(committed(&topic, &topic, 0).unwrap_or(0), 0, "uncommitted");
    assert_eq!(end_offset(&dead_letters, 0), 0, "nothing dead-lettered");
    // Said once for the partition, not once a message (a shutdown may give up thousands).
    let text = logs.text();
    let told: Vec<&str> = text
        .lines()
        .filter(|line| line.contains(&format!("channel=\"{channel}\"")))
        .filter(|line| line.contains("dropped unsettled while its channel stops"))
        .collect();
    assert_eq!(told.len(), 1, "{text}");
    assert!(told[0].contains(" INFO "), "{}", told[0]);
}

/// A handler that stops waiting for its nack (a timeout that ends before the dead-letter write
/// is acknowledged) does not cancel it: the record is dead-lettered and committed, not left
/// unsettled with its partition's commits held behind it.
#[tokio::test(flavor = "multi_thread")]
async fn a_nack_no_longer_awaited_still_dead_letters_and_commits() {
    let topic = unique("nack-timeout");
    let dead_letters = unique("nack-timeout-out");
    let builder = dead_letter_builder(&topic, &dead_letters);
    produce_values(&topic, &["impatient", "next"]);
    let app = start(
        builder.incoming("titles", |message: Message<String>| async move {
            if message.payload() == "impatient" {
                // Polled once, then dropped: the write is not acknowledged within no time.
                let _ = tokio::time::timeout(Duration::ZERO, message.nack("not today")).await;
                return Ok(());
            }
            message.ack().await
        }),
    )
    .await;
    one_dead_letter(&topic, &dead_letters, "impatient", "not today", 2).await;
    app.shutdown().await;
}
