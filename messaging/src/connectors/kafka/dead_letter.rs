//! The dead-letter record: the original key and value bytes, `dead-letter-*` headers naming
//! the failure and where the record came from, then the original headers.
//!
//! Header names and order follow SmallRye's Kafka connector so its tooling reads our records:
//! `dead-letter-exception-class-name`, `dead-letter-reason`, `dead-letter-cause` (when the error
//! has a source), `dead-letter-topic`, `dead-letter-partition`, `dead-letter-offset`, then our
//! own `dead-letter-attempts`. There is no `dead-letter-cause-class-name`: a Rust error's
//! source does not know its type name.
//! Those the original carries itself (a record dead-lettered before, replayed) are replaced,
//! not copied: SmallRye copies them after its own, where a reader of the last one finds the old.

use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header as KafkaHeader, OwnedHeaders};
use rdkafka::producer::{FutureRecord, Producer, PurgeConfig};
use rdkafka::util::Timeout;
use std::time::Duration;

use super::client_errors::KafkaProducer;
use super::metadata::Header;
use super::record::FetchedRecord;
use crate::failure::Failure;

/// The headers a dead letter gets, in place of any the original carries: ours, and SmallRye's
/// one we never write (an old one would not belong to the new reason). Others with the same
/// prefix (a replay tool's own counter, say) are copied as any header is.
const REPLACED: [&str; 9] = [
    "dead-letter-exception-class-name",
    "dead-letter-reason",
    "dead-letter-cause",
    "dead-letter-cause-class-name",
    "dead-letter-topic",
    "dead-letter-partition",
    "dead-letter-offset",
    "dead-letter-attempts",
    RETRIES_ENDED,
];

/// Why a record of a `delayed-retry-topic` channel was not retried again (ours).
const RETRIES_ENDED: &str = "dead-letter-retries-ended";

/// The parts of a consumed record the dead-letter (or retry) topic needs, kept only when the
/// channel's strategy writes one.
pub(crate) struct OriginalRecord {
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) headers: Vec<Header>,
    pub(crate) timestamp: Option<i64>,
}

/// The original record's bytes, whether kept for the dead-letter topic or still in hand.
pub(crate) struct Original<'a> {
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) value: Option<&'a [u8]>,
    pub(crate) headers: Vec<Header>,
    /// Milliseconds since the epoch, when the record carries a timestamp.
    pub(crate) timestamp: Option<i64>,
}

impl OriginalRecord {
    pub(crate) fn as_original(&self) -> Original<'_> {
        Original {
            key: self.key.as_deref(),
            value: self.value.as_deref(),
            headers: self.headers.clone(),
            timestamp: self.timestamp,
        }
    }
}

impl<'a, R: FetchedRecord> From<&'a R> for Original<'a> {
    fn from(record: &'a R) -> Self {
        Original {
            key: record.key(),
            value: record.value(),
            headers: record.headers(),
            timestamp: record.timestamp(),
        }
    }
}

/// Where the original record was, and how many times its handler ran.
pub(crate) struct RecordPosition<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) attempts: u32,
}

/// `ours` in order, then the original's headers but those named in `replaced` (ours, written
/// afresh: a reader of the last one of a name would otherwise find an old one).
pub(crate) fn headers_replacing(
    ours: &[(&str, &str)],
    replaced: &[&str],
    original: &[Header],
) -> OwnedHeaders {
    let headers = ours.iter().fold(
        OwnedHeaders::new_with_capacity(ours.len() + original.len()),
        |all, (key, value)| {
            all.insert(KafkaHeader {
                key,
                value: Some(*value),
            })
        },
    );
    let kept = original
        .iter()
        .filter(|header| !replaced.contains(&header.key.as_str()));
    Header::append_all(headers, kept)
}

/// Writes the original's key and value with `headers` to `topic`, and resolves once the broker
/// acknowledged it, or with an error naming `what` the topic is for.
pub(crate) async fn write_acknowledged(
    producer: &KafkaProducer,
    topic: &str,
    original: &Original<'_>,
    headers: OwnedHeaders,
    timeout: Duration,
    what: &str,
) -> Result<(), String> {
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
    if let Some(key) = original.key {
        record = record.key(key);
    }
    if let Some(value) = original.value {
        record = record.payload(value);
    }
    let sending = producer.send(record, Timeout::After(timeout));
    match tokio::time::timeout(timeout, sending).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((error, _))) => {
            let too_large =
                error.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge);
            let hint = if too_large {
                " (the record with its added headers is larger than the topic's \
                 max.message.bytes, or than the dead-letter producer's message.max.bytes: \
                 raise the topic's, or set dead-letter-queue.message.max.bytes)"
            } else {
                ""
            };
            Err(format!("writing to {what} {topic} failed: {error}{hint}"))
        }
        Err(_) => Err(format!(
            "writing to {what} {topic} was not acknowledged within \
             dead-letter-queue.timeout.ms ({} ms)",
            timeout.as_millis()
        )),
    }
}

pub(crate) struct DeadLetterWriter {
    producer: KafkaProducer,
    topic: String,
    /// `dead-letter-queue.timeout.ms`: also the producer's `message.timeout.ms` by default.
    timeout: Duration,
}

impl DeadLetterWriter {
    pub(crate) fn new(producer: KafkaProducer, topic: String, timeout: Duration) -> Self {
        Self {
            producer,
            topic,
            timeout,
        }
    }

    pub(crate) fn topic(&self) -> &str {
        &self.topic
    }

    /// Drops the dead letters (and retry records) not yet sent to the broker: shutdown gave up
    /// on their records, which stay uncommitted and are delivered (and dead-lettered) again
    /// after the restart. A write already on its way may still land, so that record can be
    /// dead-lettered twice.
    pub(crate) fn purge_unsent(&self) {
        self.producer.purge(PurgeConfig::default().queue());
    }

    /// Writes the dead-letter record; resolves once the broker acknowledged it. `retries_ended`
    /// says why a record of a `delayed-retry-topic` channel was not retried again.
    pub(crate) async fn write(
        &self,
        original: Original<'_>,
        position: RecordPosition<'_>,
        failure: &Failure,
        retries_ended: Option<&str>,
    ) -> Result<(), String> {
        let partition = position.partition.to_string();
        let offset = position.offset.to_string();
        let attempts = position.attempts.to_string();
        let mut ours = vec![
            ("dead-letter-exception-class-name", failure.class_name()),
            ("dead-letter-reason", failure.reason()),
        ];
        if let Some(cause) = failure.cause() {
            ours.push(("dead-letter-cause", cause));
        }
        ours.extend([
            ("dead-letter-topic", position.topic),
            ("dead-letter-partition", &partition),
            ("dead-letter-offset", &offset),
            ("dead-letter-attempts", &attempts),
        ]);
        if let Some(why) = retries_ended {
            ours.push((RETRIES_ENDED, why));
        }
        // A record dead-lettered before (replayed from a dead-letter topic) would otherwise
        // carry two of each, the old ones last, where a reader of the last one looks.
        let headers = headers_replacing(&ours, &REPLACED, &original.headers);
        write_acknowledged(
            &self.producer,
            &self.topic,
            &original,
            headers,
            self.timeout,
            "dead-letter topic",
        )
        .await
    }
}
