//! W3C trace context across Kafka hops: the `traceparent` and `tracestate` headers of a consumed
//! record reach the records it leads to (a processor's output, a dead letter), so a trace
//! continues downstream; an output that sets its own `traceparent` keeps it.

mod common;

use common::*;
use messaging::prelude::*;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACESTATE: &str = "vendor=opaque";
const TRACE_HEADERS: &[(&str, &str)] = &[("traceparent", TRACEPARENT), ("tracestate", TRACESTATE)];

fn traced(value: &[u8]) -> Record<'_> {
    Record {
        key: None,
        value,
        headers: TRACE_HEADERS,
        partition: None,
    }
}

fn trace_context(record: &ReadRecord) -> (Option<&str>, Option<&str>) {
    (record.header("traceparent"), record.header("tracestate"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_processors_output_continues_the_inputs_trace() {
    let input = unique("traced-in");
    create_topic(&input, 1);
    produce(&input, &[traced(b"10")]);
    let output = unique("traced-out");
    let app = start(
        builder()
            .set(&format!("messaging.outgoing.{output}.topic"), &output)
            .processor(&input, &output, |price: u32| async move { price * 2 }),
    )
    .await;
    let records = read(&output, 1);
    assert_eq!(records[0].value_str(), "20");
    assert_eq!(
        trace_context(&records[0]),
        (Some(TRACEPARENT), Some(TRACESTATE))
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_output_with_a_traceparent_of_its_own_keeps_it() {
    const OWN: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let input = unique("own-trace-in");
    create_topic(&input, 1);
    produce(&input, &[traced(b"\"x\"")]);
    let output = unique("own-trace-out");
    let app = start(
        builder()
            .set(&format!("messaging.outgoing.{output}.topic"), &output)
            .processor(&input, &output, |msg: Message<String>| async move {
                msg.map(|value| value)
                    .with_metadata(KafkaOutgoingMetadata::new().header("traceparent", OWN))
            }),
    )
    .await;
    let records = read(&output, 1);
    assert_eq!(trace_context(&records[0]), (Some(OWN), None));
    app.shutdown().await;
}

/// A whole-message processor that builds its output afresh (`Message::new`) rather than with
/// `Message::map`: the output still continues the input's trace.
#[tokio::test(flavor = "multi_thread")]
async fn an_output_made_afresh_by_a_whole_message_processor_continues_the_trace() {
    let input = unique("fresh-trace-in");
    create_topic(&input, 1);
    produce(&input, &[traced(b"x")]);
    let output = unique("fresh-trace-out");
    let app = start(
        builder()
            .set(&format!("messaging.outgoing.{output}.topic"), &output)
            .processor(&input, &output, |msg: Message<String>| async move {
                let doubled = format!("{0}{0}", msg.payload());
                msg.ack().await.expect("ack");
                Message::new(doubled)
            }),
    )
    .await;
    let records = read(&output, 1);
    assert_eq!(records[0].value_str(), "xx");
    assert_eq!(
        trace_context(&records[0]),
        (Some(TRACEPARENT), Some(TRACESTATE))
    );
    app.shutdown().await;
}

#[derive(Debug, thiserror::Error)]
#[error("rejected")]
struct Rejected;

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_continues_the_originals_trace() {
    let input = unique("traced-dlq-in");
    create_topic(&input, 1);
    produce(&input, &[traced(b"bad")]);
    let dead_letters = unique("traced-dlq");
    let app = start(
        builder()
            .set(
                &format!("messaging.incoming.{input}.failure-strategy"),
                "dead-letter-queue",
            )
            .set(
                &format!("messaging.incoming.{input}.dead-letter-queue.topic"),
                &dead_letters,
            )
            .incoming(&input, |_: String| async { Err::<(), _>(Rejected) }),
    )
    .await;
    let records = read(&dead_letters, 1);
    assert_eq!(
        trace_context(&records[0]),
        (Some(TRACEPARENT), Some(TRACESTATE))
    );
    app.shutdown().await;
}
