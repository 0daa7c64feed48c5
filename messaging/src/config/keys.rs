//! The attribute names the library consumes itself; everything else goes to the client.

use std::str::FromStr;

use messaging_names::{commit_strategy, connector, failure_strategy};

/// Attributes of an incoming channel that the library reads (not passed to the Kafka client).
pub(crate) const INCOMING_ATTRIBUTES: &[&str] = &[
    CONNECTOR,
    TOPIC,
    FAILURE_STRATEGY,
    COMMIT_STRATEGY,
    DEAD_LETTER_QUEUE_TOPIC,
    DEAD_LETTER_QUEUE_TIMEOUT,
    DELAYED_RETRY_TOPIC_TOPICS,
    DELAYED_RETRY_TOPIC_MAX_RETRIES,
    DELAYED_RETRY_TOPIC_TIMEOUT,
    MAX_AGE,
    COMMIT_INTERVAL,
    HEALTH_ENABLED,
    MAX_CONCURRENCY,
    ORDERING,
    MAX_BUFFERED_RECORDS,
    RETRY_MAX_RETRIES,
    RETRY_INITIAL_DELAY,
    RETRY_MAX_DELAY,
    RETRY_MULTIPLIER,
    RETRY_JITTER,
    RETRY_MAX_DURATION,
];

/// Attributes of an outgoing channel that the library reads. A sink that retries its writes
/// (Cosmos DB) reads the same retry keys as an incoming channel.
pub(crate) const OUTGOING_ATTRIBUTES: &[&str] = &[
    CONNECTOR,
    TOPIC,
    HEALTH_ENABLED,
    PROPAGATE_RECORD_KEY,
    RETRY_MAX_RETRIES,
    RETRY_INITIAL_DELAY,
    RETRY_MAX_DELAY,
    RETRY_MULTIPLIER,
    RETRY_JITTER,
    RETRY_MAX_DURATION,
];

/// The keys of `failure-strategy = delayed-retry-topic`.
pub(crate) const DELAYED_RETRY_TOPIC_KEYS: [&str; 3] = [
    DELAYED_RETRY_TOPIC_TOPICS,
    DELAYED_RETRY_TOPIC_MAX_RETRIES,
    DELAYED_RETRY_TOPIC_TIMEOUT,
];

/// The retry policy's keys, on an incoming channel and on a sink that retries its writes.
pub(crate) const RETRY_KEYS: &[&str] = &[
    RETRY_MAX_RETRIES,
    RETRY_INITIAL_DELAY,
    RETRY_MAX_DELAY,
    RETRY_MULTIPLIER,
    RETRY_JITTER,
    RETRY_MAX_DURATION,
];

pub(crate) const CONNECTOR: &str = connector::KEY;
pub(crate) const TOPIC: &str = "topic";
pub(crate) const FAILURE_STRATEGY: &str = failure_strategy::KEY;
pub(crate) const COMMIT_STRATEGY: &str = commit_strategy::KEY;
pub(crate) const DEAD_LETTER_QUEUE_TOPIC: &str = "dead-letter-queue.topic";
/// How long a dead-letter write may wait for the broker's acknowledgement.
pub(crate) const DEAD_LETTER_QUEUE_TIMEOUT: &str = "dead-letter-queue.timeout.ms";
/// Prefix of the dead-letter producer's own client properties.
pub(crate) const DEAD_LETTER_QUEUE_PREFIX: &str = "dead-letter-queue.";
/// The retry topics of a `delayed-retry-topic` channel, each name ending in `_<delay ms>`.
pub(crate) const DELAYED_RETRY_TOPIC_TOPICS: &str = "delayed-retry-topic.topics";
/// How many times a record goes to a retry topic before the dead-letter topic.
pub(crate) const DELAYED_RETRY_TOPIC_MAX_RETRIES: &str = "delayed-retry-topic.max-retries";
/// No retry comes later than this many milliseconds after a record's first failure.
pub(crate) const DELAYED_RETRY_TOPIC_TIMEOUT: &str = "delayed-retry-topic.timeout";
/// The consumer group: a client property, read by the library for its default names.
pub(crate) const GROUP_ID: &str = "group.id";
pub(crate) const MAX_AGE: &str = "throttled.unprocessed-record-max-age.ms";
pub(crate) const COMMIT_INTERVAL: &str = "auto.commit.interval.ms";
pub(crate) const HEALTH_ENABLED: &str = "health-enabled";
/// How many records of an incoming channel are handled at the same time.
pub(crate) const MAX_CONCURRENCY: &str = "max-concurrency";
/// Which of them may overlap: `partition`, `key` or `unordered`.
pub(crate) const ORDERING: &str = messaging_names::ordering::KEY;
/// How many records the consumer loop may hold taken from the client and not yet settled.
pub(crate) const MAX_BUFFERED_RECORDS: &str = "max-buffered-records";
/// Whether a processor's output record keeps its input record's key (SmallRye's name).
pub(crate) const PROPAGATE_RECORD_KEY: &str = "propagate-record-key";
pub(crate) const RETRY_MAX_RETRIES: &str = "retry.max-retries";
pub(crate) const RETRY_INITIAL_DELAY: &str = "retry.initial-delay.ms";
pub(crate) const RETRY_MAX_DELAY: &str = "retry.max-delay.ms";
pub(crate) const RETRY_MULTIPLIER: &str = "retry.multiplier";
pub(crate) const RETRY_JITTER: &str = "retry.jitter";
pub(crate) const RETRY_MAX_DURATION: &str = "retry.max-duration.ms";

pub(crate) const HEALTH_PORT: &str = "messaging.health.port";
pub(crate) const HEALTH_SERVER_ENABLED: &str = "messaging.health.enabled";
pub(crate) const SHUTDOWN_TIMEOUT: &str = "messaging.shutdown.timeout.ms";
pub(crate) const APPLICATION_NAME: &str = "messaging.application-name";
pub(crate) const UNKNOWN_KEYS: &str = "messaging.config.unknown-keys";

/// Every application-wide key.
pub(crate) const GLOBAL_KEYS: &[&str] = &[
    HEALTH_PORT,
    HEALTH_SERVER_ENABLED,
    SHUTDOWN_TIMEOUT,
    APPLICATION_NAME,
    UNKNOWN_KEYS,
];

/// Overrides the config file's path; a variable only (the file cannot name itself).
pub(crate) const CONFIG_FILE_VARIABLE: &str = "MESSAGING_CONFIG_FILE";

/// The namespace of the configuration's environment variables.
pub(crate) const VARIABLE_PREFIX: &str = "MESSAGING_";

/// Which connector serves a channel (`connector`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConnectorKind {
    Kafka,
    Memory,
    Cosmos,
}

impl ConnectorKind {
    pub(crate) const ACCEPTED: &'static [&'static str] = connector::ACCEPTED;

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Kafka => connector::KAFKA,
            Self::Memory => connector::MEMORY,
            Self::Cosmos => connector::COSMOS,
        }
    }
}

impl FromStr for ConnectorKind {
    type Err = ();

    fn from_str(value: &str) -> Result<Self, ()> {
        match value {
            connector::KAFKA => Ok(Self::Kafka),
            connector::MEMORY => Ok(Self::Memory),
            connector::COSMOS => Ok(Self::Cosmos),
            _ => Err(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_accepted_connector_parses_back_to_itself() {
        for value in ConnectorKind::ACCEPTED {
            assert_eq!(
                value.parse::<ConnectorKind>().map(ConnectorKind::as_str),
                Ok(*value)
            );
        }
    }
}
