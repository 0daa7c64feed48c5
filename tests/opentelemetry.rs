//! Connected traces with tracing-opentelemetry and the crate's `opentelemetry` feature, as the
//! README shows them: each handler call runs in a `record` span (channel, topic, partition,
//! offset) that continues the producer's trace from the record's `traceparent`, so the
//! handler's own spans are in that trace too; a processor that writes its own trace context
//! makes its output a child of its own span, in the same trace.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use messaging::prelude::*;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::Value;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{filter::LevelFilter, prelude::*};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PRODUCER_SPAN_ID: &str = "00f067aa0ba902b7";

#[derive(Debug, thiserror::Error)]
#[error("I don't like movies with ' in their title: {0}")]
struct BadMovie(String);

/// A handler with a span of its own: nothing else to do for it to be in the producer's trace.
#[incoming("traced-movies")]
async fn consume(title: String) -> Result<(), BadMovie> {
    async move {
        if title.contains('\'') {
            return Err(BadMovie(title));
        }
        Ok(())
    }
    .instrument(tracing::info_span!("consume movie"))
    .await
}

// As the README shows it: the output carries the context of the processor's own span.
#[incoming("traced-titles")]
#[outgoing("traced-lengths")]
async fn measure(title: String) -> Message<usize> {
    async move {
        let mut context = std::collections::HashMap::new();
        TraceContextPropagator::new()
            .inject_context(&tracing::Span::current().context(), &mut context);
        let headers = context
            .into_iter()
            .fold(KafkaOutgoingMetadata::new(), |out, (name, value)| {
                out.header(name, value)
            });
        Message::new(title.len()).with_metadata(headers)
    }
    .instrument(tracing::info_span!("measure title"))
    .await
}

/// Keeps what the tracer provider exports.
#[derive(Clone, Debug, Default)]
struct Exported(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Exported {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

impl Exported {
    fn named(&self, name: &str) -> Option<SpanData> {
        let spans = self.0.lock().unwrap();
        spans.iter().find(|span| span.name == name).cloned()
    }

    /// The `record` span of the record of `channel`.
    fn record_span(&self, channel: &str) -> SpanData {
        let spans = self.0.lock().unwrap();
        spans
            .iter()
            .find(|span| {
                span.name == "record"
                    && attribute(span, "channel") == Some(Value::from(channel.to_owned()))
            })
            .cloned()
            .unwrap_or_else(|| panic!("a record span for {channel}"))
    }
}

fn attribute(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|attribute| attribute.key.as_str() == key)
        .map(|attribute| attribute.value.clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn handlers_continue_the_producers_trace_and_run_in_a_record_span() {
    let exported = Exported::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exported.clone())
        .build();
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_filter(LevelFilter::INFO))
        // The record spans are at DEBUG: a filter of its own lets them reach OpenTelemetry
        // while the log stays at INFO.
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("movies"))
                .with_filter(LevelFilter::DEBUG),
        )
        .init();

    let traceparent = format!("00-{TRACE_ID}-{PRODUCER_SPAN_ID}-01");
    let (movies, titles, lengths) = (
        unique("traced-movies"),
        unique("traced-titles"),
        unique("traced-lengths"),
    );
    for topic in [&movies, &titles] {
        create_topic(topic, 1);
        produce(
            topic,
            &[Record {
                key: None,
                value: b"Alien",
                headers: &[("traceparent", traceparent.as_str())],
                partition: None,
            }],
        );
    }
    let app = start(
        builder()
            .discover()
            .set("messaging.incoming.traced-movies.topic", &movies)
            .set("messaging.incoming.traced-titles.topic", &titles)
            .set("messaging.outgoing.traced-lengths.topic", &lengths),
    )
    .await;
    let output = read(&lengths, 1);
    eventually("the handler's span exported", || {
        exported.named("consume movie").is_some()
    })
    .await;
    app.shutdown().await;

    // The record span continues the producer's trace; the handler's span is its child.
    let of_movies = exported.record_span("traced-movies");
    assert_eq!(of_movies.span_context.trace_id().to_string(), TRACE_ID);
    assert_eq!(of_movies.parent_span_id.to_string(), PRODUCER_SPAN_ID);
    assert_eq!(attribute(&of_movies, "topic"), Some(Value::from(movies)));
    assert_eq!(attribute(&of_movies, "partition"), Some(Value::I64(0)));
    assert_eq!(attribute(&of_movies, "offset"), Some(Value::I64(0)));
    let consumed = exported.named("consume movie").unwrap();
    assert_eq!(consumed.span_context.trace_id().to_string(), TRACE_ID);
    assert_eq!(consumed.parent_span_id, of_movies.span_context.span_id());

    // The processor's span is a child of its input's record span, and its output a child of
    // the processor's span: one trace across the hop.
    let of_titles = exported.record_span("traced-titles");
    let measured = exported.named("measure title").unwrap();
    assert_eq!(measured.parent_span_id, of_titles.span_context.span_id());
    assert_eq!(measured.span_context.trace_id().to_string(), TRACE_ID);
    let written = output[0].header("traceparent").expect("a traceparent");
    assert_eq!(
        written,
        format!("00-{TRACE_ID}-{}-01", measured.span_context.span_id())
    );
    assert_eq!(output[0].value_str(), "5");
}

/// The README shows the subscriber and `measure` as this file has them, so the documented
/// snippets are the tested ones.
#[test]
fn the_readme_shows_the_tested_code() {
    let between = |text: &str, from: &str, to: &str| -> Vec<String> {
        let start = text.find(from).unwrap_or_else(|| panic!("{from}"));
        let end = start + text[start..].find(to).unwrap_or_else(|| panic!("{to}")) + to.len();
        text[start..end]
            .lines()
            .map(|line| line.trim().to_owned())
            .collect()
    };
    let readme = include_str!("../README.md");
    let tested = include_str!("opentelemetry.rs");
    for (from, to) in [
        ("tracing_subscriber::registry()", ".init();"),
        ("async fn measure(title: String)", "\n}\n"),
    ] {
        assert_eq!(
            between(readme, from, to),
            between(tested, from, to),
            "{from}"
        );
    }
}
