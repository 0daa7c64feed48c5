//! `delayed-retry-topic.*`: the retry topics a `delayed-retry-topic` channel writes a failed
//! record to, how many times, and until how long after its first failure.

use std::time::Duration;

use super::channel::{parse_positive, IncomingSettings, OutgoingSettings};
use super::error::ConfigError;
use super::keys::{
    ConnectorKind, DELAYED_RETRY_TOPIC_MAX_RETRIES, DELAYED_RETRY_TOPIC_TIMEOUT,
    DELAYED_RETRY_TOPIC_TOPICS,
};
use super::layers::{Setting, Source};

/// `delayed-retry-topic.timeout` by default: two minutes from the record's first failure.
const DEFAULT_TIMEOUT_MS: &str = "120000";

/// The longest delay or timeout taken, in ms: a year, far below what a Kafka timestamp holds.
const MAX_MS: u64 = 365 * 24 * 3_600_000;

/// The default retry delays: the retry topics are `<group.id>_retry_<delay ms>`.
const DEFAULT_DELAYS_MS: [u64; 3] = [10_000, 20_000, 50_000];

/// One retry topic: its records are handled no sooner than `delay` after they were written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RetryTopic {
    pub(crate) name: String,
    pub(crate) delay: Duration,
}

/// A `delayed-retry-topic` channel's ladder of retry topics.
#[derive(Clone, Debug)]
pub(crate) struct RetryTopics {
    /// In the order a record climbs them; the last one takes every retry past its place.
    pub(crate) topics: Vec<RetryTopic>,
    /// How many times a record is written to a retry topic before the dead-letter topic.
    pub(crate) max_retries: u32,
    /// No retry is made that would come later than this after the record's first failure.
    pub(crate) timeout: Duration,
    /// `delayed-retry-topic.topics` as configured, for errors about the topics.
    pub(crate) configured: (String, Setting),
}

impl RetryTopics {
    /// The topic of the `retry`th retry (1-based): the last topic for every retry past it.
    pub(crate) fn topic_of(&self, retry: u32) -> &RetryTopic {
        let index = (retry.max(1) as usize - 1).min(self.topics.len() - 1);
        &self.topics[index]
    }

    /// Reads the three keys; `get` gives a key's setting, or its default. The default topics
    /// are `<prefix>_retry_<delay>`.
    pub(crate) fn resolve(
        prefix: &str,
        main_topic: &str,
        dead_letter_topic: &str,
        get: impl Fn(&str, String) -> (String, Setting),
    ) -> Result<Self, ConfigError> {
        // Characters a topic name cannot have become `_`.
        let prefix: String = prefix
            .chars()
            .map(|c| if is_topic_char(c) { c } else { '_' })
            .collect();
        let default_topics = DEFAULT_DELAYS_MS
            .iter()
            .map(|delay| format!("{prefix}_retry_{delay}"))
            .collect::<Vec<_>>()
            .join(",");
        let (topics_key, topics_setting) = get(DELAYED_RETRY_TOPIC_TOPICS, default_topics);
        let mut topics = parse_topics(&topics_key, &topics_setting).map_err(|error| {
            if topics_setting.source != Source::BuiltIn {
                return error;
            }
            // A default name the group id made too long: what to change is elsewhere.
            ConfigError::invalid(
                &topics_key,
                &topics_setting,
                format!(
                    "the default retry topic names, made from the consumer group and the channel \
                     ({prefix}), are not Kafka topic names: {}",
                    error.problem()
                ),
                Some(
                    "retry topics of your own in this key, or a shorter group.id (by default \
                     <messaging.application-name>-<channel>)"
                        .into(),
                ),
            )
        })?;
        for topic in &topics {
            if topic.name == main_topic || topic.name == dead_letter_topic {
                return Err(ConfigError::invalid(
                    &topics_key,
                    &topics_setting,
                    format!(
                        "{} is also the channel's {} topic: a retry topic must be a topic of its own",
                        topic.name,
                        if topic.name == main_topic { "incoming" } else { "dead-letter" }
                    ),
                    Some(topic_names_accepted()),
                ));
            }
        }
        let names: Vec<&str> = topics.iter().map(|topic| topic.name.as_str()).collect();
        if let Some(twice) = names
            .iter()
            .enumerate()
            .find_map(|(at, name)| names[..at].contains(name).then_some(*name))
        {
            return Err(ConfigError::invalid(
                &topics_key,
                &topics_setting,
                format!("{twice} is listed twice"),
                Some(topic_names_accepted()),
            ));
        }
        let (max_retries_key, setting) =
            get(DELAYED_RETRY_TOPIC_MAX_RETRIES, topics.len().to_string());
        let max_retries =
            u32::try_from(parse_positive((max_retries_key.clone(), setting.clone()))?).map_err(
                |_| {
                    ConfigError::invalid(
                        &max_retries_key,
                        &setting,
                        "too many retries",
                        Some(format!("an integer from 1 to {}", u32::MAX)),
                    )
                },
            )?;
        let (timeout_key, timeout_setting) =
            get(DELAYED_RETRY_TOPIC_TIMEOUT, DEFAULT_TIMEOUT_MS.to_owned());
        let timeout = match timeout_setting.value.trim().parse::<u64>() {
            Ok(millis) if (1..=MAX_MS).contains(&millis) => Duration::from_millis(millis),
            _ => {
                return Err(ConfigError::invalid(
                    &timeout_key,
                    &timeout_setting,
                    "not a positive number of milliseconds",
                    Some(format!("an integer from 1 to {MAX_MS}, e.g. 120000")),
                ))
            }
        };
        // Every topic listed must be reachable: one past the last retry, or one whose retry
        // would come after the timeout (the delays before it add up), would never be written,
        // and the records meant for it would go to the dead-letter topic instead. The default
        // ladder is cut short to the topics a shorter max-retries or timeout reaches.
        if topics_setting.source == Source::BuiltIn {
            let mut earliest = Duration::ZERO;
            let reachable = topics
                .iter()
                .take(max_retries as usize)
                .take_while(|topic| {
                    earliest += topic.delay;
                    earliest <= timeout
                })
                .count();
            if reachable == 0 {
                return Err(ConfigError::invalid(
                    &timeout_key,
                    &timeout_setting,
                    format!(
                        "shorter than the first default retry topic's delay ({} ms): no retry \
                         could be made",
                        topics[0].delay.as_millis()
                    ),
                    Some(format!(
                        "at least {} ms, or retry topics of your own in {topics_key}",
                        topics[0].delay.as_millis()
                    )),
                ));
            }
            topics.truncate(reachable);
        }
        let mut earliest = Duration::ZERO;
        for (index, topic) in topics.iter().enumerate() {
            earliest += topic.delay;
            let problem = if index as u64 >= u64::from(max_retries) {
                format!(
                    "{} is never written: {max_retries_key} ({max_retries}) ends the retries \
                     before it",
                    topic.name
                )
            } else if earliest > timeout {
                format!(
                    "{} is never written: a retry through it would come at least {} ms after the \
                     first failure (the delays up to it added up), past {timeout_key} ({} ms)",
                    topic.name,
                    earliest.as_millis(),
                    timeout.as_millis()
                )
            } else {
                continue;
            };
            return Err(ConfigError::invalid(
                &topics_key,
                &topics_setting,
                problem,
                Some(format!(
                    "topics each reachable within {max_retries_key} retries whose delays add up to \
                     at most {timeout_key}"
                )),
            ));
        }
        let made = retries_within(&topics, timeout);
        if made < u64::from(max_retries) {
            tracing::warn!(key = %max_retries_key, max_retries, %timeout_key, timeout_ms = timeout.as_millis() as u64,
                "at most {made} retries are made: the one after would come past the timeout (the last retry topic's delay repeats after the others), and its record goes to the dead-letter topic instead");
        }
        Ok(Self {
            topics,
            max_retries,
            timeout,
            configured: (topics_key, topics_setting),
        })
    }
}

/// How many retries come within `timeout` of the first failure, at the earliest: each retry
/// waits its topic's delay, the last topic's for every retry past the list. Every topic is
/// reachable (checked before).
fn retries_within(topics: &[RetryTopic], timeout: Duration) -> u64 {
    let through_the_list: Duration = topics.iter().map(|topic| topic.delay).sum();
    let last = topics.last().map_or(Duration::ZERO, |topic| topic.delay);
    let left = timeout.saturating_sub(through_the_list);
    let more = if last.is_zero() {
        u64::MAX
    } else {
        u64::try_from(left.as_millis() / last.as_millis()).unwrap_or(u64::MAX)
    };
    (topics.len() as u64).saturating_add(more)
}

/// A retry topic must be its channel's own: read by another channel, or written by one, its
/// records would be handled (and committed) by a handler they were not meant for.
pub(crate) fn check_retry_topics_are_their_own(
    incoming: &[&IncomingSettings],
    outgoing: &[OutgoingSettings],
) -> Result<(), ConfigError> {
    for settings in incoming {
        let Some(retry_topics) = &settings.retry_topics else {
            continue;
        };
        for retry_topic in &retry_topics.topics {
            let name = retry_topic.name.as_str();
            let incoming_use = incoming
                .iter()
                .filter(|other| {
                    other.channel != settings.channel && other.connector == ConnectorKind::Kafka
                })
                .find_map(|other| {
                    let use_of =
                        if other.topic == name {
                            "the topic"
                        } else if other.failure_strategy.writes_dead_letters()
                            && other.dead_letter_topic == name
                        {
                            "the dead-letter topic"
                        } else if other.retry_topics.as_ref().is_some_and(|theirs| {
                            theirs.topics.iter().any(|topic| topic.name == name)
                        }) {
                            "a retry topic"
                        } else {
                            return None;
                        };
                    Some(format!("{use_of} of incoming channel {}", other.channel))
                });
            let outgoing_use = || {
                outgoing
                    .iter()
                    .filter(|other| other.connector == ConnectorKind::Kafka && other.topic == name)
                    .map(|other| format!("the topic of outgoing channel {}", other.channel))
                    .next()
            };
            if let Some(use_of) = incoming_use.or_else(outgoing_use) {
                let (key, setting) = &retry_topics.configured;
                return Err(ConfigError::invalid(
                    key,
                    setting,
                    format!(
                        "{name} is also {use_of}: a retry topic must be read and written by its \
                         own channel only"
                    ),
                    Some(topic_names_accepted()),
                ));
            }
        }
    }
    Ok(())
}

/// Whether `c` may appear in a Kafka topic name.
fn is_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// What keeps `name` from being a Kafka topic's name, if anything: Kafka takes 1 to 249 of
/// `a-z A-Z 0-9 . _ -`, but not `.` or `..`. (librdkafka would also read a leading `^` as a
/// pattern and subscribe to whatever matches.)
pub(crate) fn topic_name_problem(name: &str) -> Option<String> {
    if let Some(bad) = name.chars().find(|c| !is_topic_char(*c)) {
        return Some(format!(
            "{name:?} is not a Kafka topic name: it contains {bad:?} (Kafka takes a-z, A-Z, 0-9, \
             '.', '_' and '-')"
        ));
    }
    if name.len() > 249 {
        return Some(format!(
            "{name} is not a Kafka topic name: {} characters, more than Kafka's 249",
            name.len()
        ));
    }
    (name == "." || name == "..").then(|| format!("{name} is not a Kafka topic name"))
}

fn topic_names_accepted() -> String {
    "a comma-separated list of topic names, each ending in _<delay in ms> \
     (e.g. orders_retry_10000,orders_retry_60000)"
        .into()
}

/// `name_<delay ms>,...`: the delay is read from each name, as SmallRye's connector does.
fn parse_topics(key: &str, setting: &Setting) -> Result<Vec<RetryTopic>, ConfigError> {
    let mut topics = Vec::new();
    for name in setting.value.split(',').map(str::trim) {
        let delay = name
            .rsplit_once('_')
            .filter(|(prefix, _)| !prefix.is_empty())
            .and_then(|(_, delay)| {
                (!delay.is_empty() && delay.bytes().all(|byte| byte.is_ascii_digit()))
                    .then(|| delay.parse::<u64>().ok())
                    .flatten()
                    .filter(|delay| *delay <= MAX_MS)
            });
        let problem = match delay {
            _ if name.is_empty() => Some("an empty topic name in the list".to_owned()),
            None => Some(format!("{name} does not end in _<delay in ms>")),
            Some(_) => topic_name_problem(name),
        };
        if let Some(problem) = problem {
            return Err(ConfigError::invalid(
                key,
                setting,
                problem,
                Some(topic_names_accepted()),
            ));
        }
        topics.push(RetryTopic {
            name: name.to_owned(),
            delay: Duration::from_millis(delay.unwrap_or_default()),
        });
    }
    Ok(topics)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::layers::Source;

    fn resolve(settings: &[(&str, &str)]) -> Result<RetryTopics, ConfigError> {
        RetryTopics::resolve("orders", "orders", "orders_dlq_1", |attribute, default| {
            let key = format!("messaging.incoming.orders.{attribute}");
            let (value, source) = settings
                .iter()
                .find(|(name, _)| *name == attribute)
                .map(|(_, value)| (value.to_string(), Source::Code))
                .unwrap_or((default, Source::BuiltIn));
            (key.clone(), Setting { value, source, key })
        })
    }

    #[test]
    fn the_defaults_are_three_topics_named_after_the_group() {
        let resolved = resolve(&[]).unwrap();
        let topics: Vec<(&str, u64)> = resolved
            .topics
            .iter()
            .map(|topic| (topic.name.as_str(), topic.delay.as_millis() as u64))
            .collect();
        assert_eq!(
            topics,
            [
                ("orders_retry_10000", 10_000),
                ("orders_retry_20000", 20_000),
                ("orders_retry_50000", 50_000)
            ]
        );
        assert_eq!(resolved.max_retries, 3);
        assert_eq!(resolved.timeout, Duration::from_secs(120));
    }

    /// A group id may hold characters a topic name cannot: they become `_`.
    #[test]
    fn the_default_names_are_topic_names_whatever_the_group() {
        let resolved =
            RetryTopics::resolve("billing service/orders", "o", "d", |attribute, default| {
                let key = format!("messaging.incoming.orders.{attribute}");
                (
                    key.clone(),
                    Setting {
                        value: default,
                        source: Source::BuiltIn,
                        key,
                    },
                )
            })
            .unwrap();
        assert_eq!(
            resolved.topics[0].name,
            "billing_service_orders_retry_10000"
        );
        // One too long for a topic name points at what made it.
        let long = "g".repeat(240);
        let error = RetryTopics::resolve(&long, "o", "d", |attribute, default| {
            let key = format!("messaging.incoming.orders.{attribute}");
            let source = Source::BuiltIn;
            (
                key.clone(),
                Setting {
                    value: default,
                    source,
                    key,
                },
            )
        })
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("made from the consumer group and the channel")
                && error.contains("a shorter group.id"),
            "{error}"
        );
    }

    /// `max-retries` beyond what the timeout lets come is warned of at startup.
    #[test]
    fn the_retries_a_timeout_lets_come_are_counted_with_the_last_delay_repeating() {
        let topics = |settings: &[(&str, &str)]| resolve(settings).unwrap().topics;
        let within = |settings: &[(&str, &str)], timeout_ms| {
            retries_within(&topics(settings), Duration::from_millis(timeout_ms))
        };
        // The default ladder, 10 s, 20 s, 50 s: 80 s for the three, then 50 s each.
        assert_eq!(within(&[], 120_000), 3);
        assert_eq!(
            within(&[("delayed-retry-topic.max-retries", "5")], 130_000),
            4
        );
        let own = [("delayed-retry-topic.topics", "o_retry_100,o_retry_0")];
        assert_eq!(
            within(&own, 1_000),
            u64::MAX,
            "a last delay of 0 repeats for ever"
        );
    }

    /// A shorter max-retries or timeout cuts the default ladder short; a list of one's own is
    /// refused instead (see below), since its topics were meant to be used.
    #[test]
    fn the_default_ladder_is_cut_to_what_max_retries_and_the_timeout_reach() {
        let names = |settings: &[(&str, &str)]| -> Vec<String> {
            let resolved = resolve(settings).unwrap();
            resolved
                .topics
                .into_iter()
                .map(|topic| topic.name)
                .collect()
        };
        assert_eq!(
            names(&[(DELAYED_RETRY_TOPIC_MAX_RETRIES, "1")]),
            ["orders_retry_10000"]
        );
        assert_eq!(
            names(&[(DELAYED_RETRY_TOPIC_TIMEOUT, "60000")]),
            ["orders_retry_10000", "orders_retry_20000"]
        );
        let error = resolve(&[(DELAYED_RETRY_TOPIC_TIMEOUT, "5000")])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("messaging.incoming.orders.delayed-retry-topic.timeout")
                && error.contains("shorter than the first default retry topic's delay"),
            "{error}"
        );
    }

    #[test]
    fn retries_past_the_last_topic_stay_on_it() {
        let resolved = resolve(&[
            (DELAYED_RETRY_TOPIC_TOPICS, "a_retry_100, b_retry_2000"),
            (DELAYED_RETRY_TOPIC_MAX_RETRIES, "4"),
        ])
        .unwrap();
        let names: Vec<&str> = (1..=4)
            .map(|retry| resolved.topic_of(retry).name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "a_retry_100",
                "b_retry_2000",
                "b_retry_2000",
                "b_retry_2000"
            ]
        );
    }

    #[test]
    fn bad_values_name_the_key_and_what_is_accepted() {
        for (settings, expected) in [
            (
                [(DELAYED_RETRY_TOPIC_TOPICS, "orders_retry")],
                "orders_retry does not end in _<delay in ms>",
            ),
            ([(DELAYED_RETRY_TOPIC_TOPICS, "_10")], "_10 does not end in"),
            (
                [(DELAYED_RETRY_TOPIC_TOPICS, "a_retry_10,")],
                "an empty topic name",
            ),
            (
                [(DELAYED_RETRY_TOPIC_TOPICS, "a_retry_-10")],
                "does not end in",
            ),
            (
                [(DELAYED_RETRY_TOPIC_TOPICS, "a_1,a_1")],
                "a_1 is listed twice",
            ),
            (
                [(DELAYED_RETRY_TOPIC_TOPICS, "orders_dlq_1,a_1")],
                "also the channel's dead-letter topic",
            ),
            ([(DELAYED_RETRY_TOPIC_MAX_RETRIES, "0")], "at least 1"),
            (
                [(DELAYED_RETRY_TOPIC_TOPICS, "a_retry_1000,a_retry_200000")],
                "a_retry_200000 is never written: a retry through it would come at least 201000 ms",
            ),
            (
                [(DELAYED_RETRY_TOPIC_TOPICS, "a_retry_90000,b_retry_40000")],
                "b_retry_40000 is never written: a retry through it would come at least 130000 ms",
            ),
            (
                [(DELAYED_RETRY_TOPIC_TOPICS, "a retry_1000")],
                "\"a retry_1000\" is not a Kafka topic name: it contains ' '",
            ),
            (
                [(DELAYED_RETRY_TOPIC_TOPICS, "^a_retry_1000")],
                "it contains '^'",
            ),
            (
                [(DELAYED_RETRY_TOPIC_TOPICS, "a_retry_99999999999999999999")],
                "does not end in",
            ),
            (
                [(DELAYED_RETRY_TOPIC_TIMEOUT, "0")],
                "positive number of milliseconds",
            ),
            (
                [(DELAYED_RETRY_TOPIC_TIMEOUT, "2m")],
                "positive number of milliseconds",
            ),
        ] {
            let error = resolve(&settings).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
            assert!(
                error.contains(&format!("messaging.incoming.orders.{}", settings[0].0)),
                "{error}"
            );
        }
        let error = resolve(&[
            (DELAYED_RETRY_TOPIC_TOPICS, "a_retry_10,b_retry_10"),
            (DELAYED_RETRY_TOPIC_MAX_RETRIES, "1"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            error.contains(
                "b_retry_10 is never written: messaging.incoming.orders.delayed-retry-topic.max-retries (1)"
            ),
            "{error}"
        );
        let error = RetryTopics::resolve("orders", "orders_5", "dlq", |attribute, default| {
            let key = format!("messaging.incoming.orders.{attribute}");
            let value = if attribute == DELAYED_RETRY_TOPIC_TOPICS {
                "orders_5".to_owned()
            } else {
                default
            };
            (
                key.clone(),
                Setting {
                    value,
                    source: Source::Code,
                    key,
                },
            )
        })
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("also the channel's incoming topic"),
            "{error}"
        );
    }
}
