//! The acknowledgement chain through processors and emitters: an input is acked only once its
//! output is on the broker, and a failed send nacks the input.

mod common;

use std::convert::Infallible;

use common::*;
use messaging::{Error, KafkaMetadata, KafkaOutgoingMetadata, Message, Metadata};

fn processor_app(input: &str, output: &str) -> messaging::AppBuilder {
    create_topic(input, 1);
    create_topic(output, 1);
    builder()
        .set("messaging.incoming.prices.topic", input)
        .set("messaging.incoming.prices.group.id", input)
        .set("messaging.outgoing.prices-eur.topic", output)
}

/// The end of a failed send's test: the other input's output ("small") is on the broker, and
/// both inputs are committed.
async fn small_sent_and_both_committed(app: messaging::RunningApp, input: &str, output: &str) {
    assert_eq!(read(output, 1)[0].value_str(), "small");
    eventually("both inputs committed", || {
        committed(input, input, 0) == Some(2)
    })
    .await;
    app.shutdown().await;
}

/// A processor app whose failed inputs go to `dead_letters`.
fn dead_lettering_processor_app(
    input: &str,
    output: &str,
    dead_letters: &str,
) -> messaging::AppBuilder {
    processor_app(input, output)
        .set(
            "messaging.incoming.prices.failure-strategy",
            "dead-letter-queue",
        )
        .set(
            "messaging.incoming.prices.dead-letter-queue.topic",
            dead_letters,
        )
}

#[tokio::test(flavor = "multi_thread")]
async fn processor_outputs_reach_the_outgoing_topic_and_inputs_are_committed() {
    let (input, output) = (unique("prices"), unique("prices-eur"));
    let app =
        processor_app(&input, &output).processor("prices", "prices-eur", |usd: f64| async move {
            Ok::<_, Infallible>(usd * 0.5)
        });
    produce_values(&input, &["10", "3"]);
    let app = start(app).await;
    let outputs: Vec<String> = read(&output, 2)
        .iter()
        .map(|record| record.value_str().to_owned())
        .collect();
    assert_eq!(outputs, ["5.0", "1.5"]);
    eventually("inputs committed", || {
        committed(&input, &input, 0) == Some(2)
    })
    .await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_input_is_acknowledged_only_after_its_output_is_on_the_broker() {
    let output = unique("chain-out");
    create_topic(&output, 1);
    let app = start(
        builder()
            .set("messaging.incoming.words.connector", "memory")
            .set("messaging.outgoing.shouted.topic", &output)
            .processor("words", "shouted", |word: String| async move {
                word.to_uppercase()
            }),
    )
    .await;
    let words = app.in_memory_source("words").unwrap();
    words.send("hello".to_owned()).await.expect("acked");
    // The ack came back, so the output's delivery report came first: it is on the broker now.
    assert_eq!(end_offset(&output, 0), 1);
    assert_eq!(read(&output, 1)[0].value_str(), "HELLO");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_send_nacks_the_input_into_its_failure_strategy() {
    let (input, output, dead_letters) = (unique("big-in"), unique("big-out"), unique("big-dlq"));
    let app = dead_lettering_processor_app(&input, &output, &dead_letters)
        // The outgoing producer refuses records over 1000 bytes.
        .set("messaging.outgoing.prices-eur.message.max.bytes", 1000)
        .processor("prices", "prices-eur", |text: String| async move {
            text.repeat(if text == "huge" { 500 } else { 1 })
        });
    produce_values(&input, &["small", "huge"]);
    let app = start(app).await;
    let rejected = &read(&dead_letters, 1)[0];
    assert_eq!(
        rejected.value_str(),
        "huge",
        "the input whose output could not be sent"
    );
    assert_eq!(
        rejected.header("dead-letter-exception-class-name"),
        Some("messaging::DeliveryError")
    );
    let reason = rejected.header("dead-letter-reason").unwrap();
    assert!(
        reason.contains(&format!("delivery to topic {output} failed")),
        "{reason}"
    );
    small_sent_and_both_committed(app, &input, &output).await;
}

/// An output larger than the producer's whole queue (`queue.buffering.max.kbytes`), which
/// librdkafka refuses as "queue full" even when its queue is empty, is a failed send, not a wait
/// for room that never comes: its input goes to the failure strategy and the partition goes on.
#[tokio::test(flavor = "multi_thread")]
async fn an_output_larger_than_the_producers_whole_queue_nacks_its_input() {
    let (input, output, dead_letters) =
        (unique("queue-in"), unique("queue-out"), unique("queue-dlq"));
    create_topic(&dead_letters, 1);
    let app = dead_lettering_processor_app(&input, &output, &dead_letters)
        .set(
            "messaging.outgoing.prices-eur.queue.buffering.max.kbytes",
            1,
        )
        .processor("prices", "prices-eur", |text: String| async move {
            text.repeat(if text == "huge" { 500 } else { 1 })
        });
    produce_values(&input, &["huge", "small"]);
    let app = start(app).await;
    let rejected = &read(&dead_letters, 1)[0];
    assert_eq!(rejected.value_str(), "huge");
    let reason = rejected.header("dead-letter-reason").unwrap();
    assert!(
        reason.contains(
            "is larger than the producer's whole queue (queue.buffering.max.kbytes = 1 KiB)"
        ),
        "{reason}"
    );
    small_sent_and_both_committed(app, &input, &output).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn handlers_see_the_record_and_set_key_and_headers_of_their_output() {
    let (input, output) = (unique("meta-in"), unique("meta-out"));
    let app = processor_app(&input, &output).processor(
        "prices",
        "prices-eur",
        |value: String, metadata: Metadata| async move {
            let record = metadata.get::<KafkaMetadata>().expect("a Kafka record");
            let coordinates = format!(
                "{}/{}/{}",
                record.topic(),
                record.partition(),
                record.offset()
            );
            let outgoing = KafkaOutgoingMetadata::new()
                .key(record.key().unwrap_or_default())
                .header("source", coordinates)
                .header("tenant", record.header_str("tenant").unwrap_or("none"));
            assert!(record.timestamp().is_some());
            Message::new(value).with_metadata(outgoing)
        },
    );
    produce(
        &input,
        &[Record {
            key: Some(b"key-1"),
            value: b"v",
            headers: &[("tenant", "acme")],
            partition: None,
        }],
    );
    let app = start(app).await;
    let record = &read(&output, 1)[0];
    assert_eq!(record.key.as_deref(), Some(&b"key-1"[..]));
    assert_eq!(
        record.header("source"),
        Some(format!("{input}/0/0").as_str())
    );
    assert_eq!(record.header("tenant"), Some("acme"));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_whole_message_processor_keeps_the_input_settle_handle() {
    let (input, output) = (unique("whole-in"), unique("whole-out"));
    let app = processor_app(&input, &output).processor(
        "prices",
        "prices-eur",
        |message: Message<String>| async move { message.map(|text| text.len()) },
    );
    produce_values(&input, &["four", "seven!!"]);
    let app = start(app).await;
    let lengths: Vec<String> = read(&output, 2)
        .iter()
        .map(|record| record.value_str().to_owned())
        .collect();
    assert_eq!(lengths, ["4", "7"]);
    eventually("inputs committed via the outputs' deliveries", || {
        committed(&input, &input, 0) == Some(2)
    })
    .await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn emitter_send_resolves_on_broker_ack() {
    let topic = unique("emitted");
    create_topic(&topic, 1);
    let app = start(
        builder()
            .outgoing("alerts")
            .set("messaging.outgoing.alerts.topic", &topic),
    )
    .await;
    let alerts = app.emitter::<serde_json::Value>("alerts").unwrap();
    alerts
        .send(serde_json::json!({"level": "high"}))
        .await
        .expect("acked");
    assert_eq!(end_offset(&topic, 0), 1, "on the broker when send resolved");
    alerts
        .send_message(
            Message::new(serde_json::json!({"level": "low"}))
                .with_metadata(KafkaOutgoingMetadata::new().key("k")),
        )
        .await
        .expect("acked");
    let records = read(&topic, 2);
    assert_eq!(records[0].value_str(), r#"{"level":"high"}"#);
    assert_eq!(records[1].key.as_deref(), Some(&b"k"[..]));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn emitter_send_returns_the_reason_of_a_nack() {
    let topic = unique("emitted-big");
    create_topic(&topic, 1);
    let app = start(
        builder()
            .outgoing("alerts")
            .set("messaging.outgoing.alerts.topic", &topic)
            .set("messaging.outgoing.alerts.message.max.bytes", 1000),
    )
    .await;
    let alerts = app.emitter::<String>("alerts").unwrap();
    match alerts.send("x".repeat(5000)).await {
        Err(Error::Nacked(failure)) => assert!(
            failure.reason().contains("too large") || failure.reason().contains("TooLarge"),
            "{failure}"
        ),
        other => panic!("expected a nack, got {other:?}"),
    }
    alerts
        .send("fits".to_owned())
        .await
        .expect("a small one still goes through");
    assert!(matches!(
        app.emitter::<String>("nope"),
        Err(Error::Channel { .. })
    ));
    app.shutdown().await;
}

/// Runs a processor that does not read metadata on one keyed record; returns its output record.
async fn keyed_output(
    configure: impl FnOnce(messaging::AppBuilder) -> messaging::AppBuilder,
) -> ReadRecord {
    let (input, output) = (unique("keyed-in"), unique("keyed-out"));
    let app = configure(processor_app(&input, &output));
    produce(
        &input,
        &[Record {
            key: Some(b"k"),
            value: b"v",
            headers: &[],
            partition: None,
        }],
    );
    let app = start(app).await;
    let record = read(&output, 1).remove(0);
    eventually("the input committed", || {
        committed(&input, &input, 0) == Some(1)
    })
    .await;
    app.shutdown().await;
    record
}

#[tokio::test(flavor = "multi_thread")]
async fn a_processor_output_keeps_the_input_key() {
    let record = keyed_output(|app| {
        app.processor("prices", "prices-eur", |value: String| async move { value })
    })
    .await;
    assert_eq!(record.key.as_deref(), Some(&b"k"[..]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_processor_output_has_no_key_when_propagate_record_key_is_false() {
    let record = keyed_output(|app| {
        app.set("messaging.outgoing.prices-eur.propagate-record-key", false)
            .processor("prices", "prices-eur", |value: String| async move { value })
    })
    .await;
    assert_eq!(record.key, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_the_processor_sets_wins_over_the_input_key() {
    let record = keyed_output(|app| {
        app.processor("prices", "prices-eur", |value: String| async move {
            Message::new(value).with_metadata(KafkaOutgoingMetadata::new().key("own"))
        })
    })
    .await;
    assert_eq!(record.key.as_deref(), Some(&b"own"[..]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_whole_message_processor_output_keeps_the_input_key() {
    let record = keyed_output(|app| {
        app.processor(
            "prices",
            "prices-eur",
            |message: Message<String>| async move { message.map(|value| value.len()) },
        )
    })
    .await;
    assert_eq!(record.key.as_deref(), Some(&b"k"[..]));
}

/// A tombstone passes through a processor of `Option<T>` as a tombstone: `None` in, `None`
/// out, written without a value (so a compacted output topic drops the key); the text "null"
/// of a `String` output stays a value.
#[tokio::test(flavor = "multi_thread")]
async fn a_tombstone_through_an_option_processor_stays_a_tombstone() {
    let (input, output) = (unique("upserts"), unique("upserts-out"));
    let app = processor_app(&input, &output).processor(
        "prices",
        "prices-eur",
        |usd: Option<f64>| async move { usd.map(|usd| usd * 0.5) },
    );
    produce(
        &input,
        &[Record {
            key: Some(b"a"),
            ..Record::value(b"10")
        }],
    );
    produce_tombstone(&input, b"a");
    let app = start(app).await;
    let outputs = read(&output, 2);
    assert_eq!(outputs[0].value.as_deref(), Some(&b"5.0"[..]));
    assert_eq!(outputs[1].key.as_deref(), Some(&b"a"[..]));
    assert_eq!(outputs[1].value, None, "a tombstone");
    app.shutdown().await;

    let (input, output) = (unique("texts"), unique("texts-out"));
    let app = processor_app(&input, &output).processor(
        "prices",
        "prices-eur",
        |text: String| async move { text },
    );
    produce_values(&input, &["null"]);
    let app = start(app).await;
    assert_eq!(read(&output, 1)[0].value.as_deref(), Some(&b"null"[..]));
    app.shutdown().await;
}
