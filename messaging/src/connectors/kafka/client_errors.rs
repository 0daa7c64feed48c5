//! librdkafka's errors, logged without flooding.
//!
//! While its brokers are down, a client reports the same error each time a reconnection
//! fails: measured on a real broker stopped for 25 s, four clients of one service logged about
//! 800 lines at ERROR and WARN, most of them `AllBrokersDown`. An operator needs the first
//! report and a reminder while it lasts, with how often it happened. Each kind of error of a
//! client is logged when it first occurs, then at most once per [`REPEAT_INTERVAL`] with the
//! number of reports held back since its last line; every held-back report is still logged, at
//! DEBUG. Health and readiness are not taken from these lines: they follow the client's state.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

/// How often a client's error of one kind is logged again while it keeps being reported.
pub(crate) const REPEAT_INTERVAL: Duration = Duration::from_secs(60);

/// One client's errors: which client it is, and when each kind was last logged.
pub(crate) struct ClientErrors {
    channel: String,
    /// What the client does for the channel, e.g. "consumer" or "dead-letter producer".
    client: &'static str,
    kinds: Mutex<HashMap<ErrorKind, Logged>>,
}

/// The code an error carries, or its text for the few without one (librdkafka's callbacks
/// always give a code).
type ErrorKind = String;

struct Logged {
    at: Instant,
    held_back: u64,
}

/// Whether a report is logged at its level, and how many were held back before it.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Log { held_back: u64 },
    HoldBack,
}

impl ClientErrors {
    pub(crate) fn new(channel: &str, client: &'static str) -> Self {
        Self {
            channel: channel.to_owned(),
            client,
            kinds: Mutex::default(),
        }
    }

    /// Logs an error librdkafka reported; `reason` is its text, when it gave one.
    pub(crate) fn report(&self, error: &KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        let kind = code.map_or_else(|| error.to_string(), |code| format!("{code:?}"));
        let detail = if reason.is_empty() {
            error.to_string()
        } else {
            format!("{error}: {reason}")
        };
        match self.verdict(kind, Instant::now()) {
            Verdict::HoldBack => {
                tracing::debug!(channel = %self.channel, client = %self.client, error = %detail, "Kafka client error (repeated)");
            }
            Verdict::Log { held_back } if needs_an_operator(code) => {
                tracing::error!(channel = %self.channel, client = %self.client, error = %detail, repeated_since_last_line = held_back, "Kafka client error");
            }
            Verdict::Log { held_back } => {
                tracing::warn!(channel = %self.channel, client = %self.client, error = %detail, repeated_since_last_line = held_back, "Kafka client error");
            }
        }
    }

    fn verdict(&self, kind: ErrorKind, now: Instant) -> Verdict {
        let mut kinds = self
            .kinds
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match kinds.get_mut(&kind) {
            Some(logged) if now.saturating_duration_since(logged.at) < REPEAT_INTERVAL => {
                logged.held_back += 1;
                Verdict::HoldBack
            }
            Some(logged) => {
                let held_back = std::mem::take(&mut logged.held_back);
                logged.at = now;
                Verdict::Log { held_back }
            }
            None => {
                kinds.insert(
                    kind,
                    Logged {
                        at: now,
                        held_back: 0,
                    },
                );
                Verdict::Log { held_back: 0 }
            }
        }
    }
}

/// Errors no reconnection cures: the client cannot go on, or its credentials or permissions
/// are wrong. Anything else (a broker down, a timeout) is expected to pass.
fn needs_an_operator(code: Option<RDKafkaErrorCode>) -> bool {
    use RDKafkaErrorCode as Code;
    matches!(
        code,
        Some(
            Code::Fatal
                | Code::Authentication
                | Code::SaslAuthenticationFailed
                | Code::SSL
                | Code::TopicAuthorizationFailed
                | Code::GroupAuthorizationFailed
                | Code::ClusterAuthorizationFailed
                | Code::InvalidConfig
        )
    )
}

/// The context of the library's producers (outgoing channels, emitters, dead-letter writers):
/// their errors logged as above.
pub(crate) struct ProducerContext {
    pub(crate) errors: ClientErrors,
}

impl ClientContext for ProducerContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.report(&error, reason);
    }
}

pub(crate) type KafkaProducer = FutureProducer<ProducerContext>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_error_is_held_back_and_counted_until_its_interval_passed() {
        let errors = ClientErrors::new("orders", "consumer");
        let start = Instant::now();
        let down = || "AllBrokersDown".to_owned();
        assert_eq!(errors.verdict(down(), start), Verdict::Log { held_back: 0 });
        for second in 1..=3 {
            assert_eq!(
                errors.verdict(down(), start + Duration::from_secs(second)),
                Verdict::HoldBack
            );
        }
        // Another kind is its own news.
        assert_eq!(
            errors.verdict(
                "BrokerTransportFailure".into(),
                start + Duration::from_secs(4)
            ),
            Verdict::Log { held_back: 0 }
        );
        let later = start + REPEAT_INTERVAL;
        assert_eq!(errors.verdict(down(), later), Verdict::Log { held_back: 3 });
        assert_eq!(
            errors.verdict(down(), later + Duration::from_secs(1)),
            Verdict::HoldBack
        );
        assert_eq!(
            errors.verdict(down(), later + REPEAT_INTERVAL),
            Verdict::Log { held_back: 1 }
        );
    }

    #[test]
    fn errors_an_operator_must_fix_are_told_apart_from_passing_ones() {
        assert!(needs_an_operator(Some(RDKafkaErrorCode::Authentication)));
        assert!(needs_an_operator(Some(RDKafkaErrorCode::Fatal)));
        assert!(!needs_an_operator(Some(RDKafkaErrorCode::AllBrokersDown)));
        assert!(!needs_an_operator(None));
    }
}
