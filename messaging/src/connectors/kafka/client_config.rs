//! librdkafka configurations of a channel's consumer, producer and dead-letter producer.
//!
//! Properties are passed through as a string map, never re-modelled; only the library's
//! defaults are added (`acks=all`, idempotence on, auto-commit off, a documented `group.id`).

use rdkafka::ClientConfig;

use super::client_properties::known_property_names;
use super::embedded::{EmbeddedKafka, EMBEDDED};
use crate::config::{
    env_name, is_secret, nearest, property_name, ConfigError, Setting, Source, INCOMING_ATTRIBUTES,
    OUTGOING_ATTRIBUTES,
};

const BOOTSTRAP_SERVERS: &str = "bootstrap.servers";

/// librdkafka's `queue.buffering.max.kbytes` default.
const QUEUE_KBYTES_DEFAULT: u64 = 1_048_576;

/// Consumer-only properties a producer inherits no use for (librdkafka would warn about each).
const CONSUMER_ONLY: &[&str] = &[
    "group.id",
    "group.instance.id",
    "auto.offset.reset",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "partition.assignment.strategy",
    "isolation.level",
    "fetch.queue.backoff.ms",
    "fetch.wait.max.ms",
    "fetch.min.bytes",
    "fetch.max.bytes",
    "fetch.message.max.bytes",
    "max.partition.fetch.bytes",
    "queued.min.messages",
    // Not consumer-only, but our producers read no statistics: rdkafka's default context would
    // log every report at INFO.
    "statistics.interval.ms",
    "queued.max.messages.kbytes",
    "check.crcs",
    "group.protocol",
];

fn under_kept_names(
    properties: &[(String, Setting)],
) -> impl Iterator<Item = (String, Setting)> + '_ {
    properties
        .iter()
        .map(|(name, setting)| (property_name(name).to_owned(), setting.clone()))
}

/// A configuration for one client, remembering where each property came from (its key as the
/// user wrote it), each property under one name whichever of librdkafka's names it was set by.
#[derive(Clone)]
pub(crate) struct ClientSettings {
    /// The configuration key prefix of this client's properties, for error messages.
    scope: String,
    properties: Vec<(String, Setting)>,
}

impl ClientSettings {
    pub(crate) fn new(scope: &str, properties: &[(String, Setting)]) -> Self {
        Self {
            scope: scope.to_owned(),
            properties: under_kept_names(properties).collect(),
        }
    }

    /// The values of the client's secret properties (passwords, keys, tokens), to keep out of
    /// what is logged.
    pub(crate) fn secret_values(&self) -> Vec<String> {
        self.properties
            .iter()
            .filter(|(name, setting)| is_secret(name) && !setting.value.is_empty())
            .map(|(_, setting)| setting.value.clone())
            .collect()
    }

    pub(crate) fn has(&self, property: &str) -> bool {
        let property = property_name(property);
        self.properties.iter().any(|(name, _)| name == property)
    }

    pub(crate) fn get(&self, property: &str) -> Option<&str> {
        self.setting(property).map(|setting| setting.value.as_str())
    }

    /// The property's value and where it came from; the last one set wins, as in librdkafka.
    pub(crate) fn setting(&self, property: &str) -> Option<&Setting> {
        let property = property_name(property);
        self.properties
            .iter()
            .rev()
            .find(|(name, _)| name == property)
            .map(|(_, setting)| setting)
    }

    /// A whole-number property's value; `None` when it is not set, or not a plain decimal
    /// number (librdkafka's own parse takes more forms).
    pub(crate) fn number(&self, property: &str) -> Option<u64> {
        self.get(property)?.trim().parse().ok()
    }

    /// How many KiB of record values the producer's queue holds (`queue.buffering.max.kbytes`).
    pub(crate) fn queue_kbytes(&self) -> u64 {
        self.number("queue.buffering.max.kbytes")
            .unwrap_or(QUEUE_KBYTES_DEFAULT)
    }

    /// Whether a boolean property is set to true (librdkafka also takes `t` and `1`).
    pub(crate) fn is_true(&self, property: &str) -> bool {
        self.get(property).is_some_and(crate::config::is_true)
    }

    pub(crate) fn default(&mut self, property: &str, value: &str) {
        let property = property_name(property);
        if !self.has(property) {
            let key = format!("{}{property}", self.scope);
            self.properties.push((
                property.to_owned(),
                Setting {
                    value: value.to_owned(),
                    source: Source::BuiltIn,
                    key,
                },
            ));
        }
    }

    /// Sets a property over whatever was inherited, as the library's own value.
    pub(crate) fn force(&mut self, property: &str, value: &str) {
        let property = property_name(property);
        self.properties.retain(|(name, _)| name != property);
        self.default(property, value);
    }

    pub(crate) fn without_consumer_properties(mut self) -> Self {
        self.properties
            .retain(|(name, _)| !CONSUMER_ONLY.contains(&name.as_str()));
        self
    }

    pub(crate) fn overridden_by(mut self, scope: &str, overrides: &[(String, Setting)]) -> Self {
        self.properties.extend(under_kept_names(overrides));
        self.scope = scope.to_owned();
        self
    }

    /// Whether `bootstrap.servers` selects the embedded cluster.
    pub(crate) fn is_embedded(&self) -> bool {
        self.get(BOOTSTRAP_SERVERS)
            .is_some_and(|servers| servers.trim() == EMBEDDED)
    }

    /// The librdkafka configuration; `embedded` is replaced by the embedded cluster's address.
    pub(crate) fn to_client_config(&self) -> Result<ClientConfig, ConfigError> {
        let Some(servers) = self.get(BOOTSTRAP_SERVERS) else {
            return Err(ConfigError::missing(
                &format!("{}{BOOTSTRAP_SERVERS}", self.scope),
                "no Kafka bootstrap servers are set; set messaging.connector.kafka.bootstrap.servers \
                 (environment MESSAGING_CONNECTOR_KAFKA_BOOTSTRAP_SERVERS or KAFKA_BOOTSTRAP_SERVERS), \
                 or \"embedded\" for the in-process development cluster",
            ));
        };
        let mut config = ClientConfig::new();
        for (property, setting) in &self.properties {
            config.set(property, &setting.value);
        }
        if servers.trim() == EMBEDDED {
            config.set(BOOTSTRAP_SERVERS, EmbeddedKafka::get().bootstrap_servers());
        }
        Ok(config)
    }

    /// Turns librdkafka's refusal of a configuration into an error naming the key as the user
    /// wrote it (a connector-wide key, an environment variable) and its source: the channel's
    /// derived key would send them looking for a key they never set.
    pub(crate) fn rejected(&self, error: &rdkafka::error::KafkaError) -> ConfigError {
        let mut text = error.to_string();
        // librdkafka quotes rejected values; a credential must not travel on in an error.
        for (name, setting) in &self.properties {
            if is_secret(name) && !setting.value.is_empty() {
                text = text.replace(&setting.value, "<redacted>");
            }
        }
        // The property librdkafka quotes, else one its text names: a name found only inside
        // another (`fetch.wait.max.ms` in a misspelled `fetch.wait.max.msx`) is not the culprit.
        let culprit = self
            .properties
            .iter()
            .rev()
            .find(|(name, _)| text.contains(&format!("\"{name}\"")))
            .or_else(|| {
                self.properties
                    .iter()
                    .rev()
                    .find(|(name, _)| text.contains(name.as_str()))
            });
        match culprit {
            // A property librdkafka does not know may be a misspelled secret: its value stays out.
            Some((property, setting)) if text.contains("No such configuration property") => {
                let text = if setting.value.is_empty() {
                    text
                } else {
                    text.replace(&setting.value, "<redacted>")
                };
                let suggestion = self
                    .meant(property, setting)
                    .map(|key| format!("; did you mean `{key}`?"))
                    .unwrap_or_default();
                ConfigError::unrecognised(
                    &setting.key,
                    setting,
                    format!("the Kafka client rejected it: {text}{suggestion}"),
                    None,
                )
            }
            Some((_, setting)) => ConfigError::invalid(
                &setting.key,
                setting,
                format!("the Kafka client rejected it: {text}"),
                None,
            ),
            None => ConfigError::missing(
                &format!("{}*", self.scope),
                format!("the Kafka client rejected this configuration: {text}"),
            ),
        }
    }

    /// The key a property librdkafka does not know was most likely meant to be, spelled as the
    /// user wrote it (a key, or a variable): a librdkafka property, or one of the library's
    /// own attributes of this channel (a misspelled one reaches librdkafka as a property).
    fn meant(&self, property: &str, setting: &Setting) -> Option<String> {
        // The dead-letter producer's own overrides (not the properties it inherits from its
        // channel) are no place for the channel's attributes.
        let dead_letter_producer_property = self.scope.ends_with(".dead-letter-queue.")
            && (setting.key.starts_with(&self.scope)
                || setting.key.starts_with(&env_name(&self.scope)));
        let own: &[&str] = if dead_letter_producer_property {
            &[]
        } else if self.scope.starts_with("messaging.incoming.") {
            INCOMING_ATTRIBUTES
        } else {
            OUTGOING_ATTRIBUTES
        };
        let candidates = known_property_names()
            .iter()
            .map(String::as_str)
            .chain(own.iter().copied());
        // A variable's `_` stood for `.` or `-`: compared in variable spelling, `max.concurency`
        // read from `..._MAX_CONCURENCY` is one edit from `max-concurrency`.
        let spelled: Vec<(String, &str)> = candidates
            .map(|candidate| (env_name(candidate), candidate))
            .collect();
        let written = env_name(property);
        // A name that is already one of them was not misspelled: it cannot be set this way
        // (a variable's `_` all read as `.`, so `..._LOG_LEVEL` is `log.level`, not `log_level`).
        let others = spelled
            .iter()
            .map(|(name, _)| name.as_str())
            .filter(|name| *name != written);
        let nearest_spelled = nearest(&written, others)?;
        let (_, meant) = spelled.iter().find(|(name, _)| name == nearest_spelled)?;
        let (written_tail, meant_tail) = match setting.source {
            Source::Environment(_) => (written, env_name(meant)),
            _ => (property.to_owned(), (*meant).to_owned()),
        };
        Some(match setting.key.strip_suffix(&written_tail) {
            Some(scope) => format!("{scope}{meant_tail}"),
            None => meant_tail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(key: &str, source: Source) -> Setting {
        Setting {
            value: "1".into(),
            source,
            key: key.into(),
        }
    }

    #[test]
    fn a_misspelled_property_or_attribute_is_suggested_as_the_user_spelled_it() {
        let consumer = ClientSettings::new("messaging.incoming.orders.", &[]);
        let meant = |settings: &ClientSettings, property: &str, key: &str, source: Source| {
            settings.meant(property, &setting(key, source))
        };
        assert_eq!(
            meant(
                &consumer,
                "linger.mz",
                "messaging.connector.kafka.linger.mz",
                Source::Code
            )
            .as_deref(),
            Some("messaging.connector.kafka.linger.ms")
        );
        assert_eq!(
            meant(
                &consumer,
                "max-concurency",
                "messaging.incoming.orders.max-concurency",
                Source::File("messaging.toml".into())
            )
            .as_deref(),
            Some("messaging.incoming.orders.max-concurrency")
        );
        assert_eq!(
            meant(
                &consumer,
                "max.concurency",
                "MESSAGING_INCOMING_ORDERS_MAX_CONCURENCY",
                Source::Environment("MESSAGING_INCOMING_ORDERS_MAX_CONCURENCY".into())
            )
            .as_deref(),
            Some("MESSAGING_INCOMING_ORDERS_MAX_CONCURRENCY")
        );
        assert_eq!(
            meant(
                &consumer,
                "colour.scheme",
                "messaging.incoming.orders.colour.scheme",
                Source::Code
            ),
            None
        );
        assert_eq!(
            meant(
                &consumer,
                "log.level",
                "MESSAGING_INCOMING_ORDERS_LOG_LEVEL",
                Source::Environment("MESSAGING_INCOMING_ORDERS_LOG_LEVEL".into())
            ),
            None,
            "a name that is already librdkafka's is not suggested back"
        );
        let of_a_channel_so_named =
            ClientSettings::new("messaging.incoming.orders-dead-letter-queue.", &[]);
        assert_eq!(
            meant(
                &of_a_channel_so_named,
                "max-concurency",
                "messaging.incoming.orders-dead-letter-queue.max-concurency",
                Source::Code
            )
            .as_deref(),
            Some("messaging.incoming.orders-dead-letter-queue.max-concurrency")
        );
        // The dead-letter producer reads none of the channel's attributes.
        let dead_letter = ClientSettings::new("messaging.incoming.orders.dead-letter-queue.", &[]);
        assert_eq!(
            meant(
                &dead_letter,
                "max-concurency",
                "messaging.incoming.orders.dead-letter-queue.max-concurency",
                Source::Code
            ),
            None
        );
        assert_eq!(
            meant(
                &dead_letter,
                "enable.idempotance",
                "messaging.incoming.orders.dead-letter-queue.enable.idempotance",
                Source::Code
            )
            .as_deref(),
            Some("messaging.incoming.orders.dead-letter-queue.enable.idempotence")
        );
    }
}
