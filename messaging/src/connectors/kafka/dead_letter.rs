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
const REPLACED: [&str; 8] = [
    "dead-letter-exception-class-name",
    "dead-letter-reason",
    "dead-letter-cause",
    "dead-letter-cause-class-name",
    "dead-letter-topic",
    "dead-letter-partition",
    "dead-letter-offset",
    "dead-letter-attempts",
];

/// The parts of a consumed record the dead-letter topic needs, kept only when the channel's
/// strategy is `dead-letter-queue`.
pub(crate) struct OriginalRecord {
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) headers: Vec<Header>,
}

/// The original record's bytes, whether kept for the dead-letter topic or still in hand.
pub(crate) struct Original<'a> {
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) value: Option<&'a [u8]>,
    pub(crate) headers: Vec<Header>,
}

impl OriginalRecord {
    pub(crate) fn as_original(&self) -> Original<'_> {
        Original {
            key: self.key.as_deref(),
            value: self.value.as_deref(),
            headers: self.headers.clone(),
        }
    }
}

impl<'a, R: FetchedRecord> From<&'a R> for Original<'a> {
    fn from(record: &'a R) -> Self {
        Original {
            key: record.key(),
            value: record.value(),
            headers: record.headers(),
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

    /// Drops the dead letters not yet sent to the broker: shutdown gave up on their records,
    /// which stay uncommitted and are delivered (and dead-lettered) again after the restart. A
    /// write already on its way may still land, so that record can be dead-lettered twice.
    pub(crate) fn purge_unsent(&self) {
        self.producer.purge(PurgeConfig::default().queue());
    }

    /// Writes the dead-letter record; resolves once the broker acknowledged it.
    pub(crate) async fn write(
        &self,
        original: Original<'_>,
        position: RecordPosition<'_>,
        failure: &Failure,
    ) -> Result<(), String> {
        let partition = position.partition.to_string();
        let offset = position.offset.to_string();
        let attempts = position.attempts.to_string();
        let mut headers = OwnedHeaders::new_with_capacity(7 + original.headers.len());
        let mut add = |key: &str, value: &str| {
            let taken = std::mem::replace(&mut headers, OwnedHeaders::new());
            headers = taken.insert(KafkaHeader {
                key,
                value: Some(value),
            });
        };
        add("dead-letter-exception-class-name", failure.class_name());
        add("dead-letter-reason", failure.reason());
        if let Some(cause) = failure.cause() {
            add("dead-letter-cause", cause);
        }
        add("dead-letter-topic", position.topic);
        add("dead-letter-partition", &partition);
        add("dead-letter-offset", &offset);
        add("dead-letter-attempts", &attempts);
        // A record dead-lettered before (replayed from a dead-letter topic) would otherwise
        // carry two of each, the old ones last, where a reader of the last one looks.
        let kept = original
            .headers
            .iter()
            .filter(|header| !REPLACED.contains(&header.key.as_str()));
        let headers = Header::append_all(headers, kept);
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.topic).headers(headers);
        if let Some(key) = original.key {
            record = record.key(key);
        }
        if let Some(value) = original.value {
            record = record.payload(value);
        }
        let sending = self.producer.send(record, Timeout::After(self.timeout));
        match tokio::time::timeout(self.timeout, sending).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((error, _))) => {
                let too_large =
                    error.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge);
                let hint = if too_large {
                    " (the record with its dead-letter headers is larger than the topic's \
                     max.message.bytes, or than the dead-letter producer's message.max.bytes: \
                     raise the topic's, or set dead-letter-queue.message.max.bytes)"
                } else {
                    ""
                };
                Err(format!(
                    "writing to dead-letter topic {} failed: {error}{hint}",
                    self.topic
                ))
            }
            Err(_) => Err(format!(
                "writing to dead-letter topic {} was not acknowledged within \
                 dead-letter-queue.timeout.ms ({} ms)",
                self.topic,
                self.timeout.as_millis()
            )),
        }
    }
}
