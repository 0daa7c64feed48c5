//! W3C trace context across Kafka hops: a record that a consumed record leads to carries the
//! consumed record's `traceparent` and `tracestate` headers, so a trace continues downstream.
//!
//! Dead-letter records copy all of the original's headers (see `dead_letter.rs`), these two
//! among them. A processor's output inherits them here unless it sets its own `traceparent`
//! (a handler that started a span of its own and propagates it): then its `tracestate`, if
//! any, belongs with it and nothing is inherited.

use super::metadata::{Header, KafkaMetadata};

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// The input's trace context headers an output with these headers of its own should add.
pub(crate) fn inherited<'a>(
    own: &[Header],
    input: Option<&'a KafkaMetadata>,
) -> impl Iterator<Item = &'a Header> {
    // Header names are matched as the W3C propagators match them: in any case.
    let has = |name: &str| {
        own.iter()
            .any(|header| header.key.eq_ignore_ascii_case(name))
    };
    // A traceparent of its own brings its own context: nothing is inherited. Otherwise each of
    // the two the output does not set comes from the input (never a second copy of one).
    let input = input.filter(|_| !has(TRACEPARENT));
    let wanted: Vec<&str> = [TRACEPARENT, TRACESTATE]
        .into_iter()
        .filter(|name| !has(name))
        .collect();
    wanted.into_iter().filter_map(move |name| {
        input?
            .headers()
            .iter()
            .rev()
            .find(|header| header.key.eq_ignore_ascii_case(name))
    })
}

/// With the `opentelemetry` feature: makes a record's span a child of the span that produced
/// the record (its `traceparent` and `tracestate`), so that for a tracing-opentelemetry
/// subscriber the handler's work, and any span it opens, is part of the producer's trace. Only
/// for a span a subscriber records: for a disabled one the headers are not even read.
#[cfg(feature = "opentelemetry")]
pub(crate) fn continue_trace(span: &tracing::Span, record: &impl super::record::FetchedRecord) {
    use opentelemetry::propagation::{Extractor, TextMapPropagator};
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    struct Headers<'a>(&'a [Header]);

    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0
                .iter()
                .rev()
                .find(|header| header.key.eq_ignore_ascii_case(key))
                .and_then(|header| std::str::from_utf8(header.value.as_deref()?).ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.iter().map(|header| header.key.as_str()).collect()
        }
    }

    if span.is_disabled() {
        return;
    }
    let headers = record.headers();
    if !headers
        .iter()
        .any(|header| header.key.eq_ignore_ascii_case(TRACEPARENT))
    {
        return;
    }
    let parent =
        opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&Headers(&headers));
    // Not entered yet, so this fails only without a tracing-opentelemetry layer of the same
    // version as this crate's (0.34): said once, since every record would say it again.
    if let Err(error) = span.set_parent(parent) {
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            tracing::warn!(%error, "the record spans cannot continue the records' traces: the opentelemetry feature needs a tracing-opentelemetry 0.34 layer in the subscriber");
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(key: &str, value: &str) -> Header {
        Header {
            key: key.to_owned(),
            value: Some(value.as_bytes().to_vec()),
        }
    }

    fn input(headers: Vec<Header>) -> KafkaMetadata {
        KafkaMetadata {
            topic: "in".into(),
            partition: 0,
            offset: 0,
            timestamp: None,
            key: None,
            headers,
        }
    }

    #[test]
    fn an_output_inherits_the_inputs_trace_context_and_nothing_else() {
        let input = input(vec![
            header("tenant", "t1"),
            header("tracestate", "vendor=1"),
            header("traceparent", "00-aa-bb-01"),
        ]);
        let inherited: Vec<_> = inherited(&[header("x", "y")], Some(&input)).collect();
        assert_eq!(
            inherited,
            [
                &header("traceparent", "00-aa-bb-01"),
                &header("tracestate", "vendor=1")
            ]
        );
    }

    /// Header names in another case are the same headers, as for the W3C propagators.
    #[test]
    fn trace_context_headers_are_matched_in_any_case() {
        let input = input(vec![header("Traceparent", "00-aa-bb-01")]);
        let carried: Vec<_> = inherited(&[], Some(&input)).collect();
        assert_eq!(carried, [&header("Traceparent", "00-aa-bb-01")]);
        let own = [header("TRACEPARENT", "00-cc-dd-01")];
        assert_eq!(inherited(&own, Some(&input)).count(), 0);
    }

    #[test]
    fn an_output_with_its_own_traceparent_inherits_nothing() {
        let input = input(vec![
            header("traceparent", "00-aa-bb-01"),
            header("tracestate", "vendor=1"),
        ]);
        let own = [header("traceparent", "00-cc-dd-01")];
        assert_eq!(inherited(&own, Some(&input)).count(), 0);
        assert_eq!(inherited(&[], None).count(), 0);
    }

    #[test]
    fn an_output_with_only_its_own_tracestate_inherits_the_traceparent_alone() {
        let input = input(vec![
            header("traceparent", "00-aa-bb-01"),
            header("tracestate", "vendor=1"),
        ]);
        let own = [header("tracestate", "mine=2")];
        let inherited: Vec<_> = inherited(&own, Some(&input)).collect();
        assert_eq!(inherited, [&header("traceparent", "00-aa-bb-01")]);
    }
}
