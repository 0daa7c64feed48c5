//! `failure-strategy = delayed-retry-topic`: a nacked record is written to the next of the
//! channel's retry topics, which the channel reads too (a consumer per retry topic, see
//! `mod.rs`), and handled again once that topic's delay has passed since it was written. After
//! `delayed-retry-topic.max-retries` retries, when the next retry would come later than
//! `delayed-retry-topic.timeout` after its first failure, or for a permanent failure, it goes
//! to the dead-letter topic instead. A retry topic's consumer group is the channel's, then
//! `-<topic>`.
//!
//! Header names follow SmallRye's connector. They are written afresh on each hop (SmallRye
//! lets a second set accumulate): `delayed-retry-count` (this is the record's n-th retry, from
//! 1, as stored; SmallRye stores one less and adds one when it reads the record),
//! `delayed-retry-original-timestamp` (the timestamp of the record first read from the
//! channel's topic), `delayed-retry-first-processing-timestamp` (its first
//! failure), `delayed-retry-reason`, `delayed-retry-cause` (when the error has a source),
//! `delayed-retry-exception-class-name`, and `delayed-retry-topic`, `-partition`, `-offset`
//! (where the failed record was read). Timestamps are milliseconds since the epoch.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::client_errors::KafkaProducer;
use super::dead_letter::{headers_replacing, write_acknowledged, Original, RecordPosition};
use crate::config::{RetryTopic, RetryTopics};
use crate::failure::Failure;

const COUNT: &str = "delayed-retry-count";
const ORIGINAL_TIMESTAMP: &str = "delayed-retry-original-timestamp";
const FIRST_PROCESSING_TIMESTAMP: &str = "delayed-retry-first-processing-timestamp";

/// Every header a retry record gets, in place of any of the same name the record carries; with
/// SmallRye's one we never write (an old one would not belong to the new reason).
const REPLACED: [&str; 10] = [
    COUNT,
    ORIGINAL_TIMESTAMP,
    FIRST_PROCESSING_TIMESTAMP,
    "delayed-retry-reason",
    "delayed-retry-cause",
    "delayed-retry-topic",
    "delayed-retry-partition",
    "delayed-retry-offset",
    "delayed-retry-exception-class-name",
    "delayed-retry-cause-class-name",
];

/// Whether `name` is a header of a retry record's history (one of ours).
pub(crate) fn is_retry_history(name: &str) -> bool {
    REPLACED.contains(&name)
}

/// Milliseconds since the epoch, as Kafka timestamps count.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64)
}

/// How long a record read from a retry topic still has to wait: until its timestamp (when it
/// was written) plus the topic's delay, never longer than the delay itself from now (a
/// timestamp in the future, or none, does not hold a record longer).
pub(crate) fn wait_before_retry(timestamp: Option<i64>, delay: Duration, now_ms: i64) -> Duration {
    let Some(written) = timestamp else {
        return delay;
    };
    let due = written.saturating_add(delay.as_millis() as i64);
    let left = due.saturating_sub(now_ms).max(0) as u64;
    Duration::from_millis(left).min(delay)
}

/// What is known of a failed record's earlier retries.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RetryHistory {
    Known(KnownHistory),
    /// Read from a retry topic without readable `delayed-retry-*` headers (written by someone
    /// else, or stripped on the way): how often it went round is unknown, and starting afresh
    /// could send it round for ever.
    Lost,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct KnownHistory {
    /// How many times it was written to a retry topic before.
    retries: u32,
    first_failure_ms: i64,
    original_timestamp: Option<i64>,
}

impl RetryHistory {
    /// `from_retry_topic`: whether the record was read from a retry topic, whose headers tell
    /// its history. A record of the channel's own topic starts afresh, whatever headers it
    /// carries (one replayed from a dead-letter topic would otherwise go straight back).
    pub(crate) fn of(original: &Original<'_>, from_retry_topic: bool, now_ms: i64) -> Self {
        if !from_retry_topic {
            return Self::Known(KnownHistory {
                retries: 0,
                first_failure_ms: now_ms,
                original_timestamp: original.timestamp,
            });
        }
        let number = |name: &str| -> Option<i64> {
            let header = original
                .headers
                .iter()
                .rev()
                .find(|header| header.key == name)?;
            std::str::from_utf8(header.value.as_deref()?)
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        let (Some(retries), Some(first_failure_ms)) =
            (number(COUNT), number(FIRST_PROCESSING_TIMESTAMP))
        else {
            return Self::Lost;
        };
        let Ok(retries) = u32::try_from(retries) else {
            return Self::Lost;
        };
        // Not the retry record's own timestamp when the header is missing: that is when the
        // retry was written, not when the original was.
        Self::Known(KnownHistory {
            retries,
            first_failure_ms,
            original_timestamp: number(ORIGINAL_TIMESTAMP),
        })
    }
}

/// Where a nacked record goes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NextStep<'a> {
    /// Its `retry`th retry (1-based), through `topic`.
    Retry {
        retry: u32,
        topic: &'a RetryTopic,
        history: &'a KnownHistory,
    },
    /// No retry left: the dead-letter topic, for this reason.
    DeadLetter(String),
}

/// Writes a channel's retry records.
pub(crate) struct RetryTopicWriter {
    producer: KafkaProducer,
    topics: RetryTopics,
    /// `dead-letter-queue.timeout.ms`: the producer is the dead-letter one.
    timeout: Duration,
}

impl RetryTopicWriter {
    pub(crate) fn new(producer: KafkaProducer, topics: RetryTopics, timeout: Duration) -> Self {
        Self {
            producer,
            topics,
            timeout,
        }
    }

    /// Where a record with this history goes at `now_ms`; a `permanent` failure is not
    /// retried.
    pub(crate) fn next_step<'a>(
        &'a self,
        history: &'a RetryHistory,
        now_ms: i64,
        permanent: bool,
    ) -> NextStep<'a> {
        if permanent {
            return NextStep::DeadLetter(
                "a permanent error (a decode failure, a panic, or marked permanent) is not retried"
                    .into(),
            );
        }
        match history {
            RetryHistory::Known(history) => next_step(&self.topics, history, now_ms),
            RetryHistory::Lost => NextStep::DeadLetter(
                "read from a retry topic without its delayed-retry-count and \
                 delayed-retry-first-processing-timestamp headers: how often it was retried is \
                 unknown"
                    .into(),
            ),
        }
    }

    /// Writes the record as its `retry`th retry to `topic`; resolves once the broker
    /// acknowledged it.
    pub(crate) async fn write(
        &self,
        original: Original<'_>,
        position: RecordPosition<'_>,
        failure: &Failure,
        history: &KnownHistory,
        retry: u32,
        topic: &RetryTopic,
    ) -> Result<(), String> {
        let count = retry.to_string();
        let original_timestamp = history
            .original_timestamp
            .map(|timestamp| timestamp.to_string());
        let first_failure = history.first_failure_ms.to_string();
        let partition = position.partition.to_string();
        let offset = position.offset.to_string();
        let mut ours = vec![(COUNT, count.as_str())];
        if let Some(timestamp) = &original_timestamp {
            ours.push((ORIGINAL_TIMESTAMP, timestamp));
        }
        ours.extend([
            (FIRST_PROCESSING_TIMESTAMP, first_failure.as_str()),
            ("delayed-retry-reason", failure.reason()),
        ]);
        if let Some(cause) = failure.cause() {
            ours.push(("delayed-retry-cause", cause));
        }
        ours.extend([
            ("delayed-retry-topic", position.topic),
            ("delayed-retry-partition", &partition),
            ("delayed-retry-offset", &offset),
            ("delayed-retry-exception-class-name", failure.class_name()),
        ]);
        let headers = headers_replacing(&ours, &REPLACED, &original.headers);
        write_acknowledged(
            &self.producer,
            &topic.name,
            &original,
            headers,
            self.timeout,
            "retry topic",
        )
        .await
    }
}

/// Where a record with this history goes at `now_ms`.
fn next_step<'a>(topics: &'a RetryTopics, history: &'a KnownHistory, now_ms: i64) -> NextStep<'a> {
    if history.retries >= topics.max_retries {
        return NextStep::DeadLetter(format!(
            "retried {} times through retry topics (delayed-retry-topic.max-retries)",
            history.retries
        ));
    }
    let retry = history.retries + 1;
    let topic = topics.topic_of(retry);
    // Not a retry that would come after the deadline: the record would only wait longer for
    // the same dead letter.
    let due = now_ms.saturating_add(topic.delay.as_millis() as i64);
    let at_retry = due.saturating_sub(history.first_failure_ms);
    if at_retry > topics.timeout.as_millis() as i64 {
        return NextStep::DeadLetter(format!(
            "its next retry ({} ms from now, through {}) would come {at_retry} ms after its first \
             failure, past delayed-retry-topic.timeout ({} ms); retried {} times",
            topic.delay.as_millis(),
            topic.name,
            topics.timeout.as_millis(),
            history.retries
        ));
    }
    NextStep::Retry {
        retry,
        topic,
        history,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Setting, Source};
    use crate::connectors::kafka::metadata::Header;

    fn topics(max_retries: u32, timeout_ms: u64) -> RetryTopics {
        RetryTopics {
            topics: vec![
                RetryTopic {
                    name: "a_retry_100".into(),
                    delay: Duration::from_millis(100),
                },
                RetryTopic {
                    name: "a_retry_500".into(),
                    delay: Duration::from_millis(500),
                },
            ],
            max_retries,
            timeout: Duration::from_millis(timeout_ms),
            configured: (
                "messaging.incoming.a.delayed-retry-topic.topics".into(),
                Setting {
                    value: "a_retry_100,a_retry_500".into(),
                    source: Source::Code,
                    key: "messaging.incoming.a.delayed-retry-topic.topics".into(),
                },
            ),
        }
    }

    fn header(key: &str, value: &str) -> Header {
        Header {
            key: key.into(),
            value: Some(value.as_bytes().to_vec()),
        }
    }

    fn original(headers: Vec<Header>) -> Original<'static> {
        Original {
            key: None,
            value: Some(b"v"),
            headers,
            timestamp: Some(1_000),
        }
    }

    #[test]
    fn a_record_climbs_the_topics_then_goes_to_the_dead_letter_topic() {
        let topics = topics(3, 60_000);
        let step = |retries: u32| {
            let history = KnownHistory {
                retries,
                first_failure_ms: 10_000,
                original_timestamp: None,
            };
            match next_step(&topics, &history, 20_000) {
                NextStep::Retry { retry, topic, .. } => format!("{retry} {}", topic.name),
                NextStep::DeadLetter(why) => why,
            }
        };
        assert_eq!(step(0), "1 a_retry_100");
        assert_eq!(step(1), "2 a_retry_500");
        assert_eq!(step(2), "3 a_retry_500");
        assert!(step(3).contains("retried 3 times"), "{}", step(3));
        let late = KnownHistory {
            retries: 1,
            first_failure_ms: 10_000,
            original_timestamp: None,
        };
        let NextStep::DeadLetter(why) = next_step(&topics, &late, 69_600) else {
            panic!("the next retry would come past the timeout");
        };
        assert!(
            why.contains("would come 60100 ms after its first failure"),
            "{why}"
        );
        assert!(
            matches!(
                next_step(&topics, &late, 69_500),
                NextStep::Retry { retry: 2, .. }
            ),
            "due exactly at the timeout"
        );
    }

    #[test]
    fn the_history_is_read_only_from_a_retry_topic() {
        let headers = vec![
            header(COUNT, "2"),
            header(FIRST_PROCESSING_TIMESTAMP, "500"),
            header(ORIGINAL_TIMESTAMP, "400"),
        ];
        assert_eq!(
            RetryHistory::of(&original(headers.clone()), true, 9_000),
            RetryHistory::Known(KnownHistory {
                retries: 2,
                first_failure_ms: 500,
                original_timestamp: Some(400)
            })
        );
        let fresh = RetryHistory::Known(KnownHistory {
            retries: 0,
            first_failure_ms: 9_000,
            original_timestamp: Some(1_000),
        });
        assert_eq!(RetryHistory::of(&original(headers), false, 9_000), fresh);
        // Read from a retry topic without a readable history: never sent round again.
        let garbled = vec![
            header(COUNT, "two"),
            header(FIRST_PROCESSING_TIMESTAMP, "500"),
        ];
        let lost = RetryHistory::of(&original(garbled), true, 9_000);
        assert_eq!(lost, RetryHistory::Lost);
        assert_eq!(RetryHistory::of(&original(Vec::new()), true, 9_000), lost);
    }

    #[test]
    fn a_retry_waits_for_its_topics_delay_since_it_was_written_and_never_longer() {
        let delay = Duration::from_millis(1_000);
        assert_eq!(
            wait_before_retry(Some(5_000), delay, 5_300),
            Duration::from_millis(700)
        );
        assert_eq!(wait_before_retry(Some(5_000), delay, 7_000), Duration::ZERO);
        assert_eq!(wait_before_retry(Some(9_000), delay, 5_000), delay);
        assert_eq!(wait_before_retry(None, delay, 5_000), delay);
    }
}
