//! The attribute names the library consumes itself; everything else goes to the client.

use std::str::FromStr;

/// Attributes of an incoming channel that the library reads (not passed to the Kafka client).
pub(crate) const INCOMING_ATTRIBUTES: &[&str] = &[
    CONNECTOR,
    TOPIC,
    FAILURE_STRATEGY,
    COMMIT_STRATEGY,
    DEAD_LETTER_QUEUE_TOPIC,
    DEAD_LETTER_QUEUE_TIMEOUT,
    MAX_AGE,
    COMMIT_INTERVAL,
    HEALTH_ENABLED,
];

/// Attributes of an outgoing channel that the library reads.
pub(crate) const OUTGOING_ATTRIBUTES: &[&str] =
    &[CONNECTOR, TOPIC, HEALTH_ENABLED, PROPAGATE_RECORD_KEY];

pub(crate) const CONNECTOR: &str = "connector";
pub(crate) const TOPIC: &str = "topic";
pub(crate) const FAILURE_STRATEGY: &str = "failure-strategy";
pub(crate) const COMMIT_STRATEGY: &str = "commit-strategy";
pub(crate) const DEAD_LETTER_QUEUE_TOPIC: &str = "dead-letter-queue.topic";
/// How long a dead-letter write may wait for the broker's acknowledgement.
pub(crate) const DEAD_LETTER_QUEUE_TIMEOUT: &str = "dead-letter-queue.timeout.ms";
/// Prefix of the dead-letter producer's own client properties.
pub(crate) const DEAD_LETTER_QUEUE_PREFIX: &str = "dead-letter-queue.";
pub(crate) const MAX_AGE: &str = "throttled.unprocessed-record-max-age.ms";
pub(crate) const COMMIT_INTERVAL: &str = "auto.commit.interval.ms";
pub(crate) const HEALTH_ENABLED: &str = "health-enabled";
/// Whether a processor's output record keeps its input record's key (SmallRye's name).
pub(crate) const PROPAGATE_RECORD_KEY: &str = "propagate-record-key";

pub(crate) const HEALTH_PORT: &str = "messaging.health.port";
pub(crate) const HEALTH_SERVER_ENABLED: &str = "messaging.health.enabled";
pub(crate) const SHUTDOWN_TIMEOUT: &str = "messaging.shutdown.timeout.ms";
pub(crate) const APPLICATION_NAME: &str = "messaging.application-name";

/// Which connector serves a channel (`connector`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConnectorKind {
    Kafka,
    Memory,
}

impl ConnectorKind {
    pub(crate) const ACCEPTED: &'static [&'static str] = &["kafka", "memory"];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Kafka => "kafka",
            Self::Memory => "memory",
        }
    }
}

impl FromStr for ConnectorKind {
    type Err = ();

    fn from_str(value: &str) -> Result<Self, ()> {
        match value {
            "kafka" => Ok(Self::Kafka),
            "memory" => Ok(Self::Memory),
            _ => Err(()),
        }
    }
}
