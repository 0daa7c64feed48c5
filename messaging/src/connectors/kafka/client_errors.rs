//! librdkafka's errors, logged without flooding.
//!
//! While its brokers are down, a client reports the same error on every failed reconnection:
//! measured on a real broker stopped for 25 s, four clients of one service logged about 800
//! lines at ERROR and WARN, most of them `AllBrokersDown`. An operator needs the first report
//! and a reminder while it lasts, with how often it happened. Each kind of error of a client is
//! logged when it first occurs, then at most once per [`REPEAT_INTERVAL`] with the number of
//! reports held back since its last line; every held-back report is still logged, at DEBUG.
//! A kind is the error's code and where it happened, when librdkafka names a place (a broker,
//! a partition), so a second broker or partition failing is news of its own. Health and
//! readiness are not taken from these lines: they follow the client's state.

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
    /// The values of the client's secret properties, kept out of what is logged: librdkafka
    /// may quote configuration in an error's text.
    secrets: Vec<String>,
    kinds: Mutex<HashMap<ErrorKind, Logged>>,
    /// The code of the error the context's callback just logged: rdkafka hands the same error
    /// event to the consumer loop right after, which must not count it twice.
    echo: Mutex<Option<RDKafkaErrorCode>>,
}

/// The error's code (or its text, for the few without one: librdkafka's callbacks always give
/// a code) and the place the reason names, if any.
type ErrorKind = (String, String);

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
    pub(crate) fn new(channel: &str, client: &'static str, secrets: Vec<String>) -> Self {
        Self {
            channel: channel.to_owned(),
            client,
            secrets,
            kinds: Mutex::default(),
            echo: Mutex::default(),
        }
    }

    /// Logs an error librdkafka reported; `reason` is its text, when it gave one, starting
    /// with the place it happened (`127.0.0.1:9092/1: Connect to ...`, `orders[3]: ...`).
    pub(crate) fn report(&self, error: &KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        let kind = (
            code.map_or_else(|| error.to_string(), |code| format!("{code:?}")),
            place(reason).to_owned(),
        );
        let detail = self.detail(error, reason);
        match self.verdict(kind, Instant::now()) {
            Verdict::HoldBack => {
                tracing::debug!(channel = %self.channel, client = %self.client, error = %detail, "Kafka client error (repeated)");
            }
            Verdict::Log { held_back } if needs_an_operator(error) => {
                tracing::error!(channel = %self.channel, client = %self.client, error = %detail, repeated_since_last_line = held_back, "Kafka client error");
            }
            Verdict::Log { held_back } => {
                tracing::warn!(channel = %self.channel, client = %self.client, error = %detail, repeated_since_last_line = held_back, "Kafka client error");
            }
        }
    }

    /// The error and its reason as logged, without the client's secrets.
    fn detail(&self, error: &KafkaError, reason: &str) -> String {
        let mut detail = if reason.is_empty() {
            error.to_string()
        } else {
            format!("{error}: {reason}")
        };
        for secret in self.secrets.iter().filter(|secret| !secret.is_empty()) {
            detail = detail.replace(secret.as_str(), "<redacted>");
        }
        detail
    }

    /// Logs an error from a consumer's error callback, whose event the consumer loop is then
    /// handed as well (see [`is_echo`](Self::is_echo)).
    pub(crate) fn report_from_callback(&self, error: &KafkaError, reason: &str) {
        self.report(error, reason);
        *lock(&self.echo) = error.rdkafka_error_code();
    }

    /// Whether `error`, read from the consumer's main queue, is the event the callback just
    /// logged. A consumer error of a partition read through the main queue never went through
    /// the callback, and is not.
    pub(crate) fn is_echo(&self, error: &KafkaError) -> bool {
        let mut echo = lock(&self.echo);
        let code = error.rdkafka_error_code();
        let echoed = code.is_some() && *echo == code;
        if echoed {
            *echo = None;
        }
        echoed
    }

    fn verdict(&self, kind: ErrorKind, now: Instant) -> Verdict {
        let mut kinds = lock(&self.kinds);
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

/// A report never panics the librdkafka thread that makes it.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The place a reason starts with: a broker (`127.0.0.1:9092/1`, `GroupCoordinator`) or a
/// partition (`orders[3]`), named before the first `": "` without spaces; empty for a reason
/// that names none (`2/2 brokers are down`). Places are few (a cluster's brokers, a topic's
/// partitions), so the kinds stay few.
fn place(reason: &str) -> &str {
    match reason.split_once(": ") {
        Some((place, _)) if !place.contains(char::is_whitespace) => place,
        _ => "",
    }
}

/// Errors no reconnection cures: the client cannot go on, or its credentials, permissions or
/// group settings are wrong. Anything else (a broker down, a timeout) is expected to pass.
fn needs_an_operator(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as Code;
    matches!(error, KafkaError::MessageConsumptionFatal(_))
        || matches!(
            error.rdkafka_error_code(),
            Some(
                Code::Fatal
                    | Code::CriticalSystemResource
                    | Code::Authentication
                    | Code::SaslAuthenticationFailed
                    | Code::SSL
                    | Code::TopicAuthorizationFailed
                    | Code::GroupAuthorizationFailed
                    | Code::ClusterAuthorizationFailed
                    | Code::InvalidSessionTimeout
                    | Code::InconsistentGroupProtocol
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

    fn kind(code: &str, place: &str) -> ErrorKind {
        (code.to_owned(), place.to_owned())
    }

    #[test]
    fn a_repeated_error_is_held_back_and_counted_until_its_interval_passed() {
        let errors = ClientErrors::new("orders", "consumer", Vec::new());
        let start = Instant::now();
        let down = || kind("AllBrokersDown", "");
        assert_eq!(errors.verdict(down(), start), Verdict::Log { held_back: 0 });
        for second in 1..=3 {
            assert_eq!(
                errors.verdict(down(), start + Duration::from_secs(second)),
                Verdict::HoldBack
            );
        }
        // Another kind, or the same code at another place, is news of its own.
        let at = start + Duration::from_secs(4);
        for other in [
            kind("BrokerTransportFailure", "broker-1:9092/1"),
            kind("BrokerTransportFailure", "broker-2:9092/2"),
        ] {
            assert_eq!(errors.verdict(other, at), Verdict::Log { held_back: 0 });
        }
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
    fn the_place_is_a_broker_or_a_partition_named_first() {
        assert_eq!(
            place("127.0.0.1:9092/1: Connect to ipv4#127.0.0.1:9092 failed"),
            "127.0.0.1:9092/1"
        );
        assert_eq!(
            place("GroupCoordinator: 127.0.0.1:9092: Connect failed"),
            "GroupCoordinator"
        );
        assert_eq!(place("orders[3]: Broker: Offset out of range"), "orders[3]");
        assert_eq!(place("2/2 brokers are down"), "");
        assert_eq!(place("Fatal error: Broker: Producer fenced"), "");
        assert_eq!(place(""), "");
    }

    #[test]
    fn the_callbacks_event_is_not_counted_again_from_the_main_queue() {
        let errors = ClientErrors::new("orders", "consumer", Vec::new());
        let down = KafkaError::Global(RDKafkaErrorCode::AllBrokersDown);
        let consumed = KafkaError::MessageConsumption(RDKafkaErrorCode::AllBrokersDown);
        errors.report_from_callback(&down, "1/1 brokers are down");
        assert!(errors.is_echo(&consumed));
        // Once: a second event of the code from the main queue did not go through the callback.
        assert!(!errors.is_echo(&consumed));
    }

    #[test]
    fn the_clients_secrets_stay_out_of_what_is_logged() {
        let errors = ClientErrors::new("orders", "consumer", vec!["hunter2".into(), String::new()]);
        let detail = errors.detail(
            &KafkaError::Global(RDKafkaErrorCode::Authentication),
            "SASL authentication error: bad password hunter2",
        );
        assert!(!detail.contains("hunter2"), "{detail}");
        assert!(detail.ends_with("bad password <redacted>"), "{detail}");
    }

    #[test]
    fn errors_an_operator_must_fix_are_told_apart_from_passing_ones() {
        let global = |code| KafkaError::Global(code);
        assert!(needs_an_operator(&global(RDKafkaErrorCode::Authentication)));
        assert!(needs_an_operator(&global(RDKafkaErrorCode::Fatal)));
        assert!(needs_an_operator(&KafkaError::MessageConsumptionFatal(
            RDKafkaErrorCode::OffsetOutOfRange
        )));
        assert!(!needs_an_operator(&global(
            RDKafkaErrorCode::AllBrokersDown
        )));
        assert!(!needs_an_operator(&KafkaError::Canceled));
    }
}
