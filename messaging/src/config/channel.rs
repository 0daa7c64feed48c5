//! Typed, validated settings of channels and of the application, resolved from the layers.

use std::str::FromStr;
use std::time::Duration;

use super::cosmos::CosmosSettings;
use super::delayed_retry::{topic_name_problem, RetryTopics};
use super::env::{env_name, properties_below, same_key};
use super::error::ConfigError;
use super::keys::*;
use super::layers::{Layers, Setting, Source};
use super::property_aliases::property_name;
use crate::commit::CommitStrategy;
use crate::concurrency::Ordering;
use crate::failure::FailureStrategy;
use crate::retry::RetryPolicy;

/// `max-buffered-records` by default: enough records for 64 in flight with many waiting behind
/// busy keys, a few hundred KiB to a few MiB of held records at typical sizes.
pub(crate) const DEFAULT_MAX_BUFFERED_RECORDS: usize = 1024;

/// `retry.max-retries` of a Cosmos DB outgoing channel by default (other channels: 0).
const COSMOS_DEFAULT_MAX_RETRIES: &str = "3";

/// Settings of one incoming channel.
#[derive(Clone, Debug)]
pub(crate) struct IncomingSettings {
    pub(crate) channel: String,
    pub(crate) connector: ConnectorKind,
    pub(crate) topic: String,
    pub(crate) failure_strategy: FailureStrategy,
    pub(crate) commit_strategy: CommitStrategy,
    pub(crate) dead_letter_topic: String,
    /// `dead-letter-queue.timeout.ms`: the longest a dead-letter write may take.
    pub(crate) dead_letter_timeout: Duration,
    /// The retry topics, for `failure-strategy = delayed-retry-topic` only.
    pub(crate) retry_topics: Option<RetryTopics>,
    /// `None` when `throttled.unprocessed-record-max-age.ms` <= 0 (the check is off).
    pub(crate) max_age: Option<Duration>,
    pub(crate) commit_interval: Duration,
    pub(crate) health_enabled: bool,
    /// `max-concurrency`: how many records are handled at the same time (at least 1).
    pub(crate) max_concurrency: usize,
    /// `ordering`: which of them may overlap.
    pub(crate) ordering: Ordering,
    /// `max-buffered-records`: how many records the loop may hold, taken and not yet settled.
    pub(crate) max_buffered_records: usize,
    pub(crate) retry: RetryPolicy,
    /// Client properties: connector-wide ones, then the channel's own (later wins).
    pub(crate) client: Vec<(String, Setting)>,
    /// `dead-letter-queue.<property>` overrides for the dead-letter producer, prefix removed.
    pub(crate) dead_letter_client: Vec<(String, Setting)>,
}

/// Settings of one outgoing channel.
#[derive(Clone, Debug)]
pub(crate) struct OutgoingSettings {
    pub(crate) channel: String,
    pub(crate) connector: ConnectorKind,
    pub(crate) topic: String,
    pub(crate) health_enabled: bool,
    /// A processor's output keeps its input's key unless the output sets one itself.
    pub(crate) propagate_record_key: bool,
    /// How the sink retries a failed write (a Kafka producer retries on its own instead).
    #[cfg_attr(not(feature = "cosmos"), allow(dead_code))]
    pub(crate) retry: RetryPolicy,
    pub(crate) client: Vec<(String, Setting)>,
    /// The Cosmos DB sink's settings, for `connector = cosmos`.
    #[cfg_attr(not(feature = "cosmos"), allow(dead_code))]
    pub(crate) cosmos: Option<CosmosSettings>,
}

/// Application-wide settings.
#[derive(Clone, Debug)]
pub(crate) struct GlobalSettings {
    /// `None` when the health server is disabled; the setting names its source in errors.
    pub(crate) health_port: Option<(u16, Setting)>,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) application_name: String,
    /// Where the application name came from: the default group ids hang on it.
    pub(crate) application_name_source: Source,
}

/// One channel's view of the layers: its own keys first, then connector-wide ones.
struct Scope<'a> {
    layers: &'a Layers,
    prefix: String,
    /// Prefixes of other channels of the same direction that could be mistaken for ours.
    longer: Vec<String>,
    known: &'static [&'static str],
}

impl Scope<'_> {
    fn own(&self, attribute: &str) -> Option<(String, Setting)> {
        let key = format!("{}{attribute}", self.prefix);
        self.layers.get(&key).map(|setting| (key, setting))
    }

    /// The channel's value, else the connector-wide one, else the built-in default.
    fn get(
        &self,
        connector: ConnectorKind,
        attribute: &str,
        default: impl Into<String>,
    ) -> (String, Setting) {
        self.own(attribute)
            .or_else(|| {
                let key = format!("messaging.connector.{}.{attribute}", connector.as_str());
                self.layers.get(&key).map(|setting| (key, setting))
            })
            .unwrap_or_else(|| {
                let key = format!("{}{attribute}", self.prefix);
                (
                    key.clone(),
                    Setting {
                        value: default.into(),
                        source: Source::BuiltIn,
                        key,
                    },
                )
            })
    }

    /// Warns of the library's attributes set on this channel that it does not read (`read`):
    /// an attribute of the other direction (`failure-strategy` on an outgoing channel, say),
    /// which would otherwise be left out of the client's properties without a word.
    fn warn_of_attributes_not_read(&self, read: &[&str], what: &str) {
        let attributes = INCOMING_ATTRIBUTES.iter().chain(
            OUTGOING_ATTRIBUTES
                .iter()
                .filter(|attribute| !INCOMING_ATTRIBUTES.contains(attribute)),
        );
        for attribute in attributes.filter(|attribute| !read.contains(attribute)) {
            if let Some((key, setting)) = self.own(attribute) {
                // A variable of a channel whose name extends this one's reads like ours.
                if let Source::Environment(variable) = &setting.source {
                    if self
                        .longer
                        .iter()
                        .any(|other| variable.starts_with(&env_name(other)))
                    {
                        continue;
                    }
                }
                tracing::warn!(%key, source = %setting.source,
                    "set, but {what} does not read it: it has no effect");
            }
        }
    }

    fn connector(&self) -> Result<ConnectorKind, ConfigError> {
        let (key, setting) = self.own(CONNECTOR).unwrap_or_else(|| {
            let key = format!("{}{CONNECTOR}", self.prefix);
            (
                key.clone(),
                Setting {
                    value: ConnectorKind::Kafka.as_str().into(),
                    source: Source::BuiltIn,
                    key,
                },
            )
        });
        parse_choice(&key, &setting, "unknown connector", ConnectorKind::ACCEPTED)
    }

    /// Client properties from the connector-wide scope and then the channel's own.
    fn client_properties(&self, connector: ConnectorKind) -> Vec<(String, Setting)> {
        let connector_prefix = format!("messaging.connector.{}.", connector.as_str());
        let mut merged = Vec::new();
        for (prefix, longer) in [
            (connector_prefix.as_str(), &[][..]),
            (self.prefix.as_str(), &self.longer[..]),
        ] {
            for (property, setting) in properties_from_all_layers(self.layers, prefix, longer) {
                if is_library_attribute(&property) {
                    continue;
                }
                merged.retain(|(seen, _): &(String, Setting)| {
                    kept_name(seen) != kept_name(&property)
                });
                merged.push((property, setting));
            }
        }
        merged.retain(|(property, _)| !self.known.contains(&property.as_str()));
        merged
    }
}

/// Attributes either direction consumes, so a connector-wide one never reaches the client.
fn is_library_attribute(property: &str) -> bool {
    INCOMING_ATTRIBUTES.contains(&property) || OUTGOING_ATTRIBUTES.contains(&property)
}

/// Properties below a prefix: environment first, then file, code and attributes.
fn properties_from_all_layers(
    layers: &Layers,
    prefix: &str,
    longer: &[String],
) -> Vec<(String, Setting)> {
    let known: Vec<&str> = INCOMING_ATTRIBUTES
        .iter()
        .chain(OUTGOING_ATTRIBUTES)
        .copied()
        .collect();
    let mut found = properties_below(&layers.environment, prefix, &known, longer);
    // The variables other tools use (`KAFKA_BOOTSTRAP_SERVERS`) are variables too: over the
    // file and the code, as `Layers::get` ranks them.
    for (property, setting) in layers
        .aliased_below(prefix)
        .into_iter()
        .chain(layers.suffixes_below(prefix, longer))
    {
        if !found.iter().any(|seen| same_property(seen, &property)) {
            found.push((property, setting));
        }
    }
    found
}

/// Whether `property` of a lower layer is `seen`, found in a higher one: the same name, or
/// librdkafka's other name of it (see `property_aliases.rs`). A variable's name cannot tell
/// `on-outage` (a Cosmos DB key) from `on.outage`, so it is read dotted: a variable's `on.outage`
/// is the key `on-outage` too, and overrides it as variables do.
fn same_property((seen, setting): &(String, Setting), property: &str) -> bool {
    kept_name(seen) == kept_name(property)
        || (matches!(setting.source, Source::Environment(_)) && same_key(property, seen))
}

/// The name a property is kept under (`property_aliases.rs`), a dead-letter producer's own
/// (`dead-letter-queue.<property>`) too.
fn kept_name(property: &str) -> String {
    match property.strip_prefix("dead-letter-queue.") {
        Some(producer_property) => {
            format!("dead-letter-queue.{}", property_name(producer_property))
        }
        None => property_name(property).to_owned(),
    }
}

fn scope<'a>(
    layers: &'a Layers,
    direction: &str,
    channel: &str,
    all: &[String],
    known: &'static [&'static str],
) -> Scope<'a> {
    let prefix = format!("messaging.{direction}.{channel}.");
    let own_variable = env_name(&prefix);
    let longer = all
        .iter()
        .filter(|other| other.as_str() != channel)
        .map(|other| format!("messaging.{direction}.{other}."))
        .filter(|other| other.starts_with(&prefix) || env_name(other).starts_with(&own_variable))
        .collect();
    Scope {
        layers,
        prefix,
        longer,
        known,
    }
}

impl IncomingSettings {
    pub(crate) fn resolve(
        layers: &Layers,
        channel: &str,
        all_incoming: &[String],
    ) -> Result<Self, ConfigError> {
        let scope = scope(
            layers,
            "incoming",
            channel,
            all_incoming,
            INCOMING_ATTRIBUTES,
        );
        let connector = scope.connector()?;
        if connector == ConnectorKind::Cosmos {
            let (key, setting) = scope.own(CONNECTOR).expect("cosmos is never the default");
            return Err(ConfigError::invalid(
                &key,
                &setting,
                "the cosmos connector only writes (an outgoing channel)",
                Some("kafka, memory".into()),
            ));
        }
        if connector == ConnectorKind::Memory {
            // One message at a time, each settled before the next, no retries, no commits.
            scope.warn_of_attributes_not_read(
                &[CONNECTOR, FAILURE_STRATEGY, HEALTH_ENABLED],
                "an in-memory incoming channel",
            );
        } else {
            scope.warn_of_attributes_not_read(INCOMING_ATTRIBUTES, "an incoming channel");
        }
        let (key, setting) = scope.get(connector, FAILURE_STRATEGY, FailureStrategy::Fail.as_str());
        let failure_strategy: FailureStrategy = parse_choice(
            &key,
            &setting,
            "unknown failure strategy",
            FailureStrategy::ACCEPTED,
        )?;
        if connector == ConnectorKind::Memory && failure_strategy.writes_dead_letters() {
            return Err(ConfigError::invalid(
                &key,
                &setting,
                "the memory connector has no dead-letter or retry topics",
                Some("fail, ignore".into()),
            ));
        }
        let (key, setting) = scope.get(
            connector,
            COMMIT_STRATEGY,
            CommitStrategy::Throttled.as_str(),
        );
        let commit_strategy = parse_choice(
            &key,
            &setting,
            "unknown commit strategy",
            CommitStrategy::ACCEPTED,
        )?;
        let (key, setting) = scope.get(connector, MAX_AGE, "60000");
        let max_age = parse_signed_ms(&key, &setting)?.filter(|age| !age.is_zero());
        let (key, setting) = scope.get(connector, COMMIT_INTERVAL, "5000");
        let commit_interval = parse_signed_ms(&key, &setting)?
            .filter(|interval| !interval.is_zero())
            .ok_or_else(|| {
                ConfigError::invalid(
                    &key,
                    &setting,
                    "the commit interval must be positive",
                    Some("a number of milliseconds > 0".into()),
                )
            })?;
        let (key, setting) = scope.get(connector, DEAD_LETTER_QUEUE_TIMEOUT, "30000");
        // librdkafka's message.timeout.ms of the dead-letter producer, which it takes up to
        // i32::MAX: a larger value would be refused at startup under that key, not this one.
        let dead_letter_timeout = parse_signed_ms(&key, &setting)?
            .filter(|timeout| !timeout.is_zero() && timeout.as_millis() <= i32::MAX as u128)
            .ok_or_else(|| {
                ConfigError::invalid(
                    &key,
                    &setting,
                    "the dead-letter write timeout must be positive, and at most librdkafka's largest message.timeout.ms",
                    Some("a number of milliseconds from 1 to 2147483647".into()),
                )
            })?;
        let max_concurrency = parse_positive(scope.get(connector, MAX_CONCURRENCY, "1"))?;
        let (key, setting) = scope.get(connector, ORDERING, Ordering::Partition.as_str());
        let ordering = parse_choice(&key, &setting, "unknown ordering", Ordering::ACCEPTED)?;
        let (key, setting) = scope.get(
            connector,
            MAX_BUFFERED_RECORDS,
            DEFAULT_MAX_BUFFERED_RECORDS.to_string(),
        );
        let max_buffered_records = parse_positive((key.clone(), setting.clone()))?;
        if max_buffered_records < max_concurrency {
            return Err(ConfigError::invalid(
                &key,
                &setting,
                "must be at least max-concurrency, or records could never all be in flight",
                Some(format!("a whole number >= {max_concurrency}")),
            ));
        }
        let retry =
            super::retry::resolve(|attribute, default| scope.get(connector, attribute, default))?;
        let topic = non_empty(scope.get(connector, TOPIC, channel))?;
        let dead_letter_topic = non_empty(scope.get(
            connector,
            DEAD_LETTER_QUEUE_TOPIC,
            format!("dead-letter-topic-{channel}"),
        ))?;
        if failure_strategy.writes_dead_letters() {
            if let Some(problem) = topic_name_problem(&dead_letter_topic) {
                let (key, setting) =
                    scope.get(connector, DEAD_LETTER_QUEUE_TOPIC, &dead_letter_topic);
                return Err(ConfigError::invalid(
                    &key,
                    &setting,
                    problem,
                    Some("a Kafka topic name: 1 to 249 of a-z, A-Z, 0-9, '.', '_' and '-'".into()),
                ));
            }
            // A dead letter written back to the topic it came from is read and fails again,
            // for ever, with nothing in it to show the loop.
            if dead_letter_topic == topic {
                let (key, setting) =
                    scope.get(connector, DEAD_LETTER_QUEUE_TOPIC, &dead_letter_topic);
                return Err(ConfigError::invalid(
                    &key,
                    &setting,
                    format!("{topic} is also the channel's incoming topic: its failed records would be read again, and fail again, for ever"),
                    Some("a topic of its own, other than the channel's topic".into()),
                ));
            }
        }
        let retry_topics = (failure_strategy == FailureStrategy::DelayedRetryTopic)
            .then(|| {
                // The default retry topics are named after the consumer group and the channel:
                // after the channel alone, two applications with a channel of the same name
                // would read each other's retries; after the group alone, two channels sharing
                // a group would share them.
                let application = application_name(layers).1.value;
                let (_, group) = scope.get(
                    connector,
                    GROUP_ID,
                    default_group_id(application.trim(), channel),
                );
                let group = group.value.trim();
                let of_this_channel = format!("-{channel}");
                let prefix = if group.ends_with(&of_this_channel) {
                    group.to_owned()
                } else {
                    format!("{group}{of_this_channel}")
                };
                RetryTopics::resolve(&prefix, &topic, &dead_letter_topic, |attribute, default| {
                    scope.get(connector, attribute, default)
                })
            })
            .transpose()?;
        if failure_strategy != FailureStrategy::DelayedRetryTopic {
            for attribute in DELAYED_RETRY_TOPIC_KEYS {
                if let Some((key, setting)) = scope.own(attribute) {
                    tracing::warn!(%key, source = %setting.source, failure_strategy = %failure_strategy,
                        "set, but only failure-strategy=delayed-retry-topic reads it: it has no effect");
                }
            }
        }
        let client = scope.client_properties(connector);
        if retry_topics.is_some() && commit_strategy == CommitStrategy::Ignore {
            let auto_commit = client.iter().any(|(property, setting)| {
                property == "enable.auto.commit" && is_true(&setting.value)
            });
            if !auto_commit {
                let (key, setting) = scope.get(connector, COMMIT_STRATEGY, "");
                return Err(ConfigError::invalid(
                    &key,
                    &setting,
                    "with failure-strategy=delayed-retry-topic nothing would commit what the retry \
                     topics' consumers read: after each restart they would handle every retry again",
                    Some("throttled, latest".into()),
                ));
            }
        }
        let (dead_letter_client, client): (Vec<_>, Vec<_>) = client
            .into_iter()
            .partition(|(property, _)| property.starts_with(DEAD_LETTER_QUEUE_PREFIX));
        Ok(Self {
            channel: channel.to_owned(),
            connector,
            topic,
            failure_strategy,
            commit_strategy,
            dead_letter_topic,
            dead_letter_timeout,
            retry_topics,
            max_age,
            commit_interval,
            health_enabled: parse_bool(scope.get(connector, HEALTH_ENABLED, "true"))?,
            max_concurrency,
            ordering,
            max_buffered_records,
            retry,
            client,
            dead_letter_client: dead_letter_client
                .into_iter()
                .map(|(property, setting)| {
                    (
                        property[DEAD_LETTER_QUEUE_PREFIX.len()..].to_owned(),
                        setting,
                    )
                })
                .collect(),
        })
    }
}

impl OutgoingSettings {
    pub(crate) fn resolve(
        layers: &Layers,
        channel: &str,
        all_outgoing: &[String],
    ) -> Result<Self, ConfigError> {
        let scope = scope(
            layers,
            "outgoing",
            channel,
            all_outgoing,
            OUTGOING_ATTRIBUTES,
        );
        let connector = scope.connector()?;
        match connector {
            // Its writes' concurrency and their retries.
            ConnectorKind::Cosmos => scope.warn_of_attributes_not_read(
                &[OUTGOING_ATTRIBUTES, &[MAX_CONCURRENCY]].concat(),
                "an outgoing channel of the cosmos connector",
            ),
            _ => scope.warn_of_attributes_not_read(
                &OUTGOING_ATTRIBUTES
                    .iter()
                    .filter(|attribute| !RETRY_KEYS.contains(attribute))
                    .copied()
                    .collect::<Vec<_>>(),
                "an outgoing channel of this connector (retries are the incoming channel's)",
            ),
        }
        Ok(Self {
            channel: channel.to_owned(),
            connector,
            topic: non_empty(scope.get(connector, TOPIC, channel))?,
            health_enabled: parse_bool(scope.get(connector, HEALTH_ENABLED, "true"))?,
            propagate_record_key: parse_bool(scope.get(connector, PROPAGATE_RECORD_KEY, "true"))?,
            retry: super::retry::resolve(|attribute, default| {
                // A Cosmos DB write is retried 3 times unless said otherwise: throttling and
                // short unavailability are routine there, and the SDK's own retries are off.
                let default = match (connector, attribute) {
                    (ConnectorKind::Cosmos, RETRY_MAX_RETRIES) => COSMOS_DEFAULT_MAX_RETRIES,
                    _ => default,
                };
                scope.get(connector, attribute, default)
            })?,
            cosmos: match connector {
                ConnectorKind::Cosmos => {
                    let max_concurrency = super::cosmos::parse_max_concurrency(scope.get(
                        connector,
                        MAX_CONCURRENCY,
                        super::cosmos::DEFAULT_MAX_CONCURRENCY,
                    ))?;
                    Some(CosmosSettings::resolve(
                        &scope.prefix,
                        &scope.client_properties(connector),
                        max_concurrency,
                    )?)
                }
                _ => None,
            },
            client: scope.client_properties(connector),
        })
    }
}

/// `messaging.application-name`, by default the executable's name.
fn application_name(layers: &Layers) -> (String, Setting) {
    let setting = layers.get(APPLICATION_NAME).unwrap_or_else(|| Setting {
        value: std::env::current_exe()
            .ok()
            .and_then(|path| {
                path.file_stem()
                    .map(|stem| stem.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "messaging".to_owned()),
        source: Source::BuiltIn,
        key: APPLICATION_NAME.to_owned(),
    });
    (APPLICATION_NAME.to_owned(), setting)
}

/// Whether librdkafka reads a boolean property's value as true.
pub(crate) fn is_true(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "true" | "t" | "1"
    )
}

/// A consumer's `group.id` unless one is configured: `<application-name>-<channel>`.
pub(crate) fn default_group_id(application_name: &str, channel: &str) -> String {
    format!("{application_name}-{channel}")
}

impl GlobalSettings {
    pub(crate) fn resolve(layers: &Layers) -> Result<Self, ConfigError> {
        let get = |key: &str, default: &str| {
            (
                key.to_owned(),
                layers.get(key).unwrap_or(Setting {
                    value: default.to_owned(),
                    source: Source::BuiltIn,
                    key: key.to_owned(),
                }),
            )
        };
        let enabled = parse_bool(get(HEALTH_SERVER_ENABLED, "true"))?;
        let (key, setting_of_port) = get(HEALTH_PORT, "8080");
        let port = setting_of_port.value.trim().parse::<u16>().map_err(|_| {
            ConfigError::invalid(
                &key,
                &setting_of_port,
                "not a port number",
                Some("0 to 65535 (0 picks a free port)".into()),
            )
        })?;
        let (key, setting) = get(SHUTDOWN_TIMEOUT, "10000");
        // A negative value would read as "no limit" by the convention of other `.ms` keys; it
        // would in fact give records in flight no time at all.
        let shutdown_timeout = parse_signed_ms(&key, &setting)?.ok_or_else(|| {
            ConfigError::invalid(
                &key,
                &setting,
                "must not be negative: shutdown always has a limit",
                Some("milliseconds >= 0, e.g. 10000 (0 gives records in flight no time)".into()),
            )
        })?;
        let (key, setting) = application_name(layers);
        let application_name_source = setting.source.clone();
        let application_name = non_empty((key, setting))?;
        Ok(Self {
            health_port: enabled.then_some((port, setting_of_port)),
            shutdown_timeout,
            application_name,
            application_name_source,
        })
    }

    /// The health port cannot be listened on (in use, say): an error naming the key, the port
    /// and where it was set.
    pub(crate) fn unusable_health_port(setting: &Setting, error: &std::io::Error) -> ConfigError {
        ConfigError::invalid(
            HEALTH_PORT,
            setting,
            format!("cannot listen on this port: {error}"),
            Some("a port no other process listens on, or 0 (picks a free one)".into()),
        )
    }
}

pub(crate) fn parse_choice<T: FromStr>(
    key: &str,
    setting: &Setting,
    problem: &str,
    accepted: &[&str],
) -> Result<T, ConfigError> {
    setting
        .value
        .trim()
        .parse()
        .map_err(|_| ConfigError::invalid(key, setting, problem, Some(accepted.join(", "))))
}

/// Milliseconds; a negative value yields `None` (the feature is off).
pub(super) fn parse_signed_ms(
    key: &str,
    setting: &Setting,
) -> Result<Option<Duration>, ConfigError> {
    let millis: i64 = setting.value.trim().parse().map_err(|_| {
        ConfigError::invalid(
            key,
            setting,
            "not a whole number of milliseconds",
            Some("an integer, e.g. 60000".into()),
        )
    })?;
    Ok((millis >= 0).then(|| Duration::from_millis(millis as u64)))
}

/// A whole number of at least 1.
pub(crate) fn parse_positive((key, setting): (String, Setting)) -> Result<usize, ConfigError> {
    match setting.value.trim().parse::<usize>() {
        Ok(number) if number >= 1 => Ok(number),
        _ => Err(ConfigError::invalid(
            &key,
            &setting,
            "not a whole number of at least 1",
            Some("an integer >= 1, e.g. 16".into()),
        )),
    }
}

pub(crate) fn parse_bool((key, setting): (String, Setting)) -> Result<bool, ConfigError> {
    match setting.value.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ConfigError::invalid(
            &key,
            &setting,
            "not a boolean",
            Some("true, false".into()),
        )),
    }
}

pub(crate) fn non_empty((key, setting): (String, Setting)) -> Result<String, ConfigError> {
    let value = setting.value.trim();
    if value.is_empty() {
        return Err(ConfigError::invalid(
            &key,
            &setting,
            "must not be empty",
            None,
        ));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(
        environment: &[(&str, &str)],
        code: &[(&str, &str)],
        attributes: &[(&str, &str)],
    ) -> Layers {
        fn own<C: FromIterator<(String, String)>>(pairs: &[(&str, &str)]) -> C {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        }
        Layers {
            environment: own(environment),
            file: None,
            code: own(code),
            attributes: own(attributes),
        }
    }

    #[test]
    fn precedence_environment_code_attribute_connector_default() {
        let channels = ["movies".to_owned()];
        let attribute_only = layers(
            &[],
            &[],
            &[("messaging.incoming.movies.failure-strategy", "ignore")],
        );
        let resolved = IncomingSettings::resolve(&attribute_only, "movies", &channels).unwrap();
        assert_eq!(resolved.failure_strategy, FailureStrategy::Ignore);
        assert_eq!(resolved.topic, "movies");
        assert_eq!(resolved.dead_letter_topic, "dead-letter-topic-movies");

        let overridden = layers(
            &[(
                "MESSAGING_INCOMING_MOVIES_FAILURE_STRATEGY",
                "dead-letter-queue",
            )],
            &[("messaging.incoming.movies.failure-strategy", "fail")],
            &[("messaging.incoming.movies.failure-strategy", "ignore")],
        );
        let resolved = IncomingSettings::resolve(&overridden, "movies", &channels).unwrap();
        assert_eq!(resolved.failure_strategy, FailureStrategy::DeadLetterQueue);

        let connector_wide = layers(
            &[],
            &[("messaging.connector.kafka.commit-strategy", "latest")],
            &[],
        );
        let resolved = IncomingSettings::resolve(&connector_wide, "movies", &channels).unwrap();
        assert_eq!(resolved.commit_strategy, CommitStrategy::Latest);
    }

    #[test]
    fn client_properties_merge_connector_wide_and_channel() {
        let channels = ["movies".to_owned()];
        let resolved = IncomingSettings::resolve(
            &layers(
                &[("MESSAGING_CONNECTOR_KAFKA_BOOTSTRAP_SERVERS", "broker:9092")],
                &[
                    ("messaging.connector.kafka.auto.offset.reset", "latest"),
                    ("messaging.incoming.movies.auto.offset.reset", "earliest"),
                    ("messaging.incoming.movies.dead-letter-queue.acks", "1"),
                    ("messaging.connector.kafka.failure-strategy", "ignore"),
                ],
                &[],
            ),
            "movies",
            &channels,
        )
        .unwrap();
        let client: Vec<(&str, &str)> = resolved
            .client
            .iter()
            .map(|(k, s)| (k.as_str(), s.value.as_str()))
            .collect();
        assert_eq!(
            client,
            [
                ("bootstrap.servers", "broker:9092"),
                ("auto.offset.reset", "earliest")
            ]
        );
        assert_eq!(resolved.dead_letter_client[0].0, "acks");
        assert_eq!(resolved.failure_strategy, FailureStrategy::Ignore);
    }

    #[test]
    fn bad_values_name_key_source_and_accepted_values() {
        let channels = ["movies".to_owned()];
        let error = IncomingSettings::resolve(
            &layers(
                &[("MESSAGING_INCOMING_MOVIES_FAILURE_STRATEGY", "retry")],
                &[],
                &[],
            ),
            "movies",
            &channels,
        )
        .unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("messaging.incoming.movies.failure-strategy"),
            "{text}"
        );
        assert!(
            text.contains("`retry`") && text.contains("MESSAGING_INCOMING_MOVIES_FAILURE_STRATEGY"),
            "{text}"
        );
        assert!(text.contains("fail, ignore, dead-letter-queue"), "{text}");

        let error = IncomingSettings::resolve(
            &layers(
                &[],
                &[("messaging.incoming.movies.auto.commit.interval.ms", "5s")],
                &[],
            ),
            "movies",
            &channels,
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("not a whole number of milliseconds"),
            "{error}"
        );
    }

    #[test]
    fn a_dead_letter_topic_that_is_the_channels_own_topic_is_refused() {
        let channels = ["movies".to_owned()];
        let writing_back = |strategy: &str| {
            IncomingSettings::resolve(
                &layers(
                    &[],
                    &[
                        ("messaging.incoming.movies.topic", "films"),
                        ("messaging.incoming.movies.failure-strategy", strategy),
                        ("messaging.incoming.movies.dead-letter-queue.topic", "films"),
                    ],
                    &[],
                ),
                "movies",
                &channels,
            )
        };
        let text = writing_back("dead-letter-queue").unwrap_err().to_string();
        assert!(
            text.contains("messaging.incoming.movies.dead-letter-queue.topic")
                && text.contains("films is also the channel's incoming topic"),
            "{text}"
        );
        assert!(writing_back("delayed-retry-topic").is_err());
        // A strategy that writes no dead letters does not read the key.
        assert!(writing_back("ignore").is_ok());
    }

    #[test]
    fn retry_keys_per_channel_and_connector_wide_in_both_directions() {
        let incoming = ["movies".to_owned(), "prices".to_owned()];
        let outgoing = ["documents".to_owned()];
        let configured = layers(
            &[("MESSAGING_INCOMING_MOVIES_RETRY_MAX_RETRIES", "3")],
            &[
                ("messaging.connector.kafka.retry.max-retries", "1"),
                ("messaging.connector.kafka.retry.initial-delay.ms", "50"),
                ("messaging.incoming.movies.retry.initial-delay.ms", "200"),
                ("messaging.outgoing.documents.retry.max-retries", "7"),
                ("messaging.incoming.movies.retry.backoff.ms", "10"),
            ],
            &[],
        );
        let movies = IncomingSettings::resolve(&configured, "movies", &incoming).unwrap();
        assert_eq!(
            movies.retry,
            RetryPolicy::new(
                3,
                Duration::from_millis(200),
                Duration::from_secs(30),
                2.0,
                0.2,
                Some(Duration::from_secs(180))
            )
        );
        let client: Vec<&str> = movies.client.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            client,
            ["retry.backoff.ms"],
            "the library's retry keys are not client properties; librdkafka's are"
        );
        let prices = IncomingSettings::resolve(&configured, "prices", &incoming).unwrap();
        assert_eq!(prices.retry.max_attempts(), 2);
        let documents = OutgoingSettings::resolve(&configured, "documents", &outgoing).unwrap();
        assert_eq!(documents.retry.max_attempts(), 8);
        assert!(documents.client.is_empty(), "{:?}", documents.client);

        let error = OutgoingSettings::resolve(
            &layers(&[], &[("messaging.connector.kafka.retry.jitter", "2")], &[]),
            "documents",
            &outgoing,
        )
        .unwrap_err();
        assert_eq!(error.key(), "messaging.connector.kafka.retry.jitter");
    }

    #[test]
    fn a_negative_shutdown_timeout_is_refused() {
        let timeout = |value: &str| {
            GlobalSettings::resolve(&layers(
                &[],
                &[("messaging.shutdown.timeout.ms", value)],
                &[],
            ))
            .map(|global| global.shutdown_timeout)
        };
        assert_eq!(timeout("0").unwrap(), Duration::ZERO);
        assert_eq!(timeout("2500").unwrap(), Duration::from_millis(2500));
        let text = timeout("-1").unwrap_err().to_string();
        assert!(
            text.contains("messaging.shutdown.timeout.ms") && text.contains("must not be negative"),
            "{text}"
        );
    }

    /// A variable cannot spell a dashed key (`on-outage`): read dotted, it still overrides the
    /// key set in the code (or the file), and only its setting is left.
    #[test]
    fn a_variable_overrides_a_dashed_key_of_the_code() {
        let resolved = OutgoingSettings::resolve(
            &layers(
                &[("MESSAGING_OUTGOING_ORDERS_DB_ON_OUTAGE", "fail")],
                &[
                    ("messaging.outgoing.orders-db.connector", "cosmos"),
                    ("messaging.outgoing.orders-db.endpoint", "embedded"),
                    ("messaging.outgoing.orders-db.database", "shop"),
                    ("messaging.outgoing.orders-db.container", "orders"),
                    ("messaging.outgoing.orders-db.on-outage", "pause"),
                ],
                &[],
            ),
            "orders-db",
            &[],
        )
        .unwrap();
        assert_eq!(
            resolved.cosmos.expect("a Cosmos DB channel").on_outage,
            crate::config::OnOutage::Fail
        );
        let on_outage: Vec<(&str, &str)> = resolved
            .client
            .iter()
            .filter(|(property, _)| property == "on.outage" || property == "on-outage")
            .map(|(property, setting)| (property.as_str(), setting.value.as_str()))
            .collect();
        assert_eq!(on_outage, [("on.outage", "fail")]);
    }

    #[test]
    fn kafka_bootstrap_servers_alias() {
        let resolved = OutgoingSettings::resolve(
            &layers(&[("KAFKA_BOOTSTRAP_SERVERS", "b:1")], &[], &[]),
            "out",
            &[],
        )
        .unwrap();
        assert_eq!(resolved.client[0].0, "bootstrap.servers");
        assert_eq!(resolved.client[0].1.value, "b:1");

        let over_the_code = OutgoingSettings::resolve(
            &layers(
                &[("KAFKA_BOOTSTRAP_SERVERS", "b:1")],
                &[("messaging.connector.kafka.bootstrap.servers", "c:2")],
                &[],
            ),
            "out",
            &[],
        )
        .unwrap();
        let servers: Vec<&str> = over_the_code
            .client
            .iter()
            .filter(|(property, _)| property == "bootstrap.servers")
            .map(|(_, setting)| setting.value.as_str())
            .collect();
        assert_eq!(servers, ["b:1"], "a variable, over the code");
    }

    #[test]
    fn concurrency_keys_have_defaults_and_reject_bad_values() {
        let channels = ["orders".to_owned()];
        let resolve = |pairs: &[(&str, &str)]| {
            IncomingSettings::resolve(&layers(&[], pairs, &[]), "orders", &channels)
        };
        let defaults = resolve(&[]).unwrap();
        assert_eq!(defaults.max_concurrency, 1);
        assert_eq!(defaults.ordering, Ordering::Partition);
        assert_eq!(defaults.max_buffered_records, DEFAULT_MAX_BUFFERED_RECORDS);
        let set = resolve(&[
            ("messaging.incoming.orders.max-concurrency", "64"),
            ("messaging.incoming.orders.ordering", "key"),
            ("messaging.incoming.orders.max-buffered-records", "500"),
        ])
        .unwrap();
        assert_eq!(
            (set.max_concurrency, set.ordering, set.max_buffered_records),
            (64, Ordering::Key, 500)
        );
        for (key, value, says) in [
            ("max-concurrency", "0", "at least 1"),
            ("max-concurrency", "many", "at least 1"),
            ("ordering", "by-key", "partition, key, unordered"),
            ("max-buffered-records", "-1", "at least 1"),
        ] {
            let key = format!("messaging.incoming.orders.{key}");
            let error = resolve(&[(&key, value)]).expect_err("rejected").to_string();
            assert!(error.contains(&key) && error.contains(says), "{error}");
        }
        let error = resolve(&[
            ("messaging.incoming.orders.max-concurrency", "64"),
            ("messaging.incoming.orders.max-buffered-records", "10"),
        ])
        .expect_err("fewer buffered records than in flight")
        .to_string();
        assert!(
            error.contains("max-buffered-records") && error.contains(">= 64"),
            "{error}"
        );
    }
}
