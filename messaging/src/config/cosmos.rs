//! The keys of a Cosmos DB outgoing channel (`connector = cosmos`), read into [`CosmosSettings`].
//!
//! They are read like every key: the channel's own (`messaging.outgoing.<channel>.<key>`), else
//! the connector-wide one (`messaging.connector.cosmos.<key>`), else the default. In an
//! environment variable a `-` is spelled `_` like a `.`, so both spellings are accepted here
//! (`MESSAGING_CONNECTOR_COSMOS_DELETE_ON_TOMBSTONE` is `delete-on-tombstone`). The names
//! follow the Kafka Connect Cosmos DB sink where it has one (`id.strategy`, `write.strategy`).
//!
//! The keys are checked without the crate's `cosmos` feature too (the start then says the
//! feature is missing), so only the sink reads what is resolved here.
#![cfg_attr(not(feature = "cosmos"), allow(dead_code))]

use std::fmt;
use std::str::FromStr;

use super::channel::{non_empty, parse_bool, parse_choice, parse_positive};
use super::env::same_key;
use super::error::ConfigError;
use super::keys::{CONNECTOR, HEALTH_ENABLED, MAX_CONCURRENCY, RETRY_KEYS};
use super::layers::{Setting, Source};

pub(crate) const ENDPOINT: &str = "endpoint";
pub(crate) const KEY: &str = "key";
pub(crate) const DATABASE: &str = "database";
pub(crate) const CONTAINER: &str = "container";
pub(crate) const ID_STRATEGY: &str = "id.strategy";
pub(crate) const ID_PATH: &str = "id.path";
pub(crate) const ID_TEMPLATE: &str = "id.template";
pub(crate) const WRITE_STRATEGY: &str = "write.strategy";
pub(crate) const DELETE_ON_TOMBSTONE: &str = "delete-on-tombstone";
pub(crate) const CREATE_IF_MISSING: &str = "create-if-missing";
pub(crate) const PARTITION_KEY_PATHS: &str = "partition-key.paths";
pub(crate) const ON_OUTAGE: &str = "on-outage";
pub(crate) const OUTAGE_THRESHOLD: &str = "outage.threshold";

/// Every key the Cosmos DB connector reads; anything else under its channel is a mistake.
pub(crate) const COSMOS_KEYS: &[&str] = &[
    ENDPOINT,
    KEY,
    DATABASE,
    CONTAINER,
    ID_STRATEGY,
    ID_PATH,
    ID_TEMPLATE,
    WRITE_STRATEGY,
    DELETE_ON_TOMBSTONE,
    CREATE_IF_MISSING,
    PARTITION_KEY_PATHS,
    ON_OUTAGE,
    OUTAGE_THRESHOLD,
];

/// The keys a Cosmos DB channel reads with its channel settings (and [`RETRY_KEYS`]), named
/// beside [`COSMOS_KEYS`] when a key is not recognised.
const CHANNEL_KEYS: &[&str] = &[CONNECTOR, HEALTH_ENABLED, MAX_CONCURRENCY];

/// Whether `value` is an account URL the SDK can connect to: an `https` (or `http`) URL with a
/// host. The SDK's own parsing takes any URL, and one without a host (a typo such as
/// `htps:/localhost:8081`) panicked inside it at startup.
fn is_account_url(value: &str) -> bool {
    if looks_like_connection_string(value) {
        return false;
    }
    let Some((scheme, rest)) = value.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_and_port = authority.rsplit('@').next().unwrap_or_default();
    let host = match host_and_port.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => host_and_port,
    };
    matches!(scheme.to_ascii_lowercase().as_str(), "https" | "http") && !host.is_empty()
}

/// Whether `value` looks like a Cosmos DB connection string (`AccountEndpoint=...;AccountKey=...;`),
/// pasted where the endpoint goes. No account URL holds a `;`.
fn looks_like_connection_string(value: &str) -> bool {
    value.contains(';') || value.to_ascii_lowercase().contains("accountkey")
}

/// The `endpoint` value that runs the SDK's in-memory emulator in the process.
pub(crate) const EMBEDDED: &str = "embedded";

/// Requests for different documents in flight at once, by default.
pub(crate) const DEFAULT_MAX_CONCURRENCY: &str = "16";
/// The most requests a Cosmos DB channel may have in flight at once: far above what one
/// client's connections serve, and low enough that the sink's room for twice as many messages
/// stays a small number.
const MOST_CONCURRENCY: usize = 10_000;

/// A Cosmos DB channel's `max-concurrency`: a whole number from 1 to [`MOST_CONCURRENCY`].
pub(crate) fn parse_max_concurrency(
    (key, setting): (String, Setting),
) -> Result<usize, ConfigError> {
    match setting.value.trim().parse::<usize>() {
        Ok(number) if (1..=MOST_CONCURRENCY).contains(&number) => Ok(number),
        _ => Err(ConfigError::invalid(
            &key,
            &setting,
            format!("not a whole number from 1 to {MOST_CONCURRENCY}"),
            Some(format!("an integer from 1 to {MOST_CONCURRENCY}, e.g. 16")),
        )),
    }
}

/// Consecutive failed writes (of any documents) that make an outage, by default.
pub(crate) const DEFAULT_OUTAGE_THRESHOLD: &str = "5";

/// A Cosmos DB outgoing channel's settings.
#[derive(Clone, Debug)]
pub(crate) struct CosmosSettings {
    pub(crate) endpoint: Endpoint,
    /// The account key; `None` for the embedded emulator, or for an account reached with the
    /// application's token credential (see `require_authentication`).
    pub(crate) key: Option<AccountKey>,
    pub(crate) database: String,
    pub(crate) container: String,
    pub(crate) id: IdStrategy,
    pub(crate) write: WriteStrategy,
    pub(crate) delete_on_tombstone: bool,
    pub(crate) create_if_missing: bool,
    /// The partition key paths of a container this channel creates (the embedded emulator, or
    /// `create-if-missing`); an existing container's own are read from its definition.
    pub(crate) partition_key_paths: Vec<String>,
    pub(crate) max_concurrency: usize,
    pub(crate) on_outage: OnOutage,
    pub(crate) outage_threshold: u32,
    /// The key each setting was read under, for errors found when connecting.
    pub(crate) keys: SettingKeys,
}

/// Where the channel's connection settings were read from, to name them in startup errors.
#[derive(Clone, Debug)]
pub(crate) struct SettingKeys {
    pub(crate) endpoint: String,
    pub(crate) key: String,
    pub(crate) database: String,
    pub(crate) container: String,
    pub(crate) delete_on_tombstone: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// The SDK's in-memory emulator, in this process.
    Embedded,
    /// An account's URL, e.g. `https://myaccount.documents.azure.com:443/`.
    Url(String),
}

/// The account key: a credential, so its `Debug` never shows it.
#[derive(Clone)]
pub(crate) struct AccountKey(String);

impl AccountKey {
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccountKey(<redacted>)")
    }
}

fn is_base64(text: &str) -> bool {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .is_ok()
}

/// How a document's `id` is found (`id.strategy`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum IdStrategy {
    /// A field of the document (`id.path`, a JSON pointer, `/id` by default).
    Value { pointer: String },
    /// The Kafka record key.
    Key,
    /// `<topic>-<partition>-<offset>` of the input record: a redelivery overwrites, never
    /// duplicates.
    KafkaMetadata,
    /// `id.template`, e.g. `${topic}-${key}`.
    Template(Vec<TemplatePart>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TemplatePart {
    Text(String),
    Topic,
    Partition,
    Offset,
    Key,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteStrategy {
    /// Insert or replace: idempotent, the last write of an id wins.
    Upsert,
    /// Insert only; a conflict (the id exists) counts as already written.
    Create,
}

/// What an outage (Cosmos DB unreachable, the key rejected, the container gone, throttling
/// that does not end) does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OnOutage {
    /// Stop taking records and probe with one write until Cosmos DB answers again.
    Pause,
    /// Fail the channel (liveness DOWN); the records stay uncommitted.
    Fail,
    /// Treat the records like rejected ones: the inbound failure strategy applies.
    DeadLetter,
}

impl FromStr for IdStrategyName {
    type Err = ();
    fn from_str(value: &str) -> Result<Self, ()> {
        match value {
            "value" => Ok(Self::Value),
            "key" => Ok(Self::Key),
            "kafka-metadata" => Ok(Self::KafkaMetadata),
            "template" => Ok(Self::Template),
            _ => Err(()),
        }
    }
}

enum IdStrategyName {
    Value,
    Key,
    KafkaMetadata,
    Template,
}

impl FromStr for WriteStrategy {
    type Err = ();
    fn from_str(value: &str) -> Result<Self, ()> {
        match value {
            "upsert" => Ok(Self::Upsert),
            "create" => Ok(Self::Create),
            _ => Err(()),
        }
    }
}

impl FromStr for OnOutage {
    type Err = ();
    fn from_str(value: &str) -> Result<Self, ()> {
        match value {
            "pause" => Ok(Self::Pause),
            "fail" => Ok(Self::Fail),
            "dead-letter" => Ok(Self::DeadLetter),
            _ => Err(()),
        }
    }
}

impl CosmosSettings {
    /// An account (not the embedded emulator) needs its key, or else a token credential given
    /// to the application: known only once the whole application is built.
    pub(crate) fn require_authentication(
        &self,
        has_token_credential: bool,
    ) -> Result<(), ConfigError> {
        if matches!(self.endpoint, Endpoint::Url(_)) && self.key.is_none() && !has_token_credential
        {
            return Err(ConfigError::missing(
                &self.keys.key,
                "a Cosmos DB account needs its key (not endpoint = \"embedded\"), also read from MESSAGING_CONNECTOR_COSMOS_KEY, \
                 or a Microsoft Entra ID token credential given to the application with AppBuilder::cosmos_credential \
                 (e.g. azure_identity's ManagedIdentityCredential)",
            ));
        }
        Ok(())
    }

    /// Reads the settings from the channel's non-library properties (connector-wide ones,
    /// then the channel's own), `prefix` being `messaging.outgoing.<channel>.`.
    pub(crate) fn resolve(
        prefix: &str,
        properties: &[(String, Setting)],
        max_concurrency: usize,
    ) -> Result<Self, ConfigError> {
        for (property, setting) in properties {
            if !COSMOS_KEYS.iter().any(|known| same_key(known, property)) {
                return Err(ConfigError::unrecognised(
                    &setting.key,
                    setting,
                    "not a key of the cosmos connector",
                    Some(
                        COSMOS_KEYS
                            .iter()
                            .chain(CHANNEL_KEYS)
                            .chain(RETRY_KEYS)
                            .copied()
                            .collect::<Vec<_>>()
                            .join(", "),
                    ),
                ));
            }
        }
        let set = |name: &str| -> Option<(String, Setting)> {
            find(properties, name).map(|setting| (setting.key.clone(), setting.clone()))
        };
        let or_default = |name: &str, default: &str| -> (String, Setting) {
            set(name).unwrap_or_else(|| {
                let key = format!("{prefix}{name}");
                let setting = Setting {
                    value: default.to_owned(),
                    source: Source::BuiltIn,
                    key: key.clone(),
                };
                (key, setting)
            })
        };
        // Where a setting was read, or would have been, for errors found when connecting.
        let key_of =
            |name: &str| set(name).map_or_else(|| format!("{prefix}{name}"), |(key, _)| key);
        let required = |name: &str, what: &str| {
            set(name)
                .ok_or_else(|| ConfigError::missing(&format!("{prefix}{name}"), what.to_owned()))
                .and_then(non_empty)
        };
        let endpoint = match required(
            ENDPOINT,
            "the Cosmos DB account's URL (or \"embedded\" for the in-process emulator) is required; also read from MESSAGING_CONNECTOR_COSMOS_ENDPOINT",
        )? {
            value if value == EMBEDDED => Endpoint::Embedded,
            value if is_account_url(&value) => Endpoint::Url(value),
            value => {
                let (key, mut setting) = set(ENDPOINT).expect("read just above");
                let problem = if looks_like_connection_string(&value) {
                    // A connection string holds the account key: the error must not show it.
                    setting.value = "<not shown: a connection string, which holds the account key>".to_owned();
                    "a connection string, not an account URL: set its AccountEndpoint part here and its AccountKey as the key"
                } else {
                    "not a Cosmos DB account URL: it needs https:// (or http://) and a host"
                };
                return Err(ConfigError::invalid(
                    &key,
                    &setting,
                    problem,
                    Some(
                        "the account's URI as the portal shows it, e.g. https://myaccount.documents.azure.com:443/, or \"embedded\""
                            .to_owned(),
                    ),
                ));
            }
        };
        let account_key = match (&endpoint, &set(KEY)) {
            (_, Some((key, setting))) if setting.value.trim().is_empty() => {
                return Err(ConfigError::invalid(
                    key,
                    setting,
                    "must not be empty",
                    None,
                ))
            }
            (_, Some((key, setting))) if !is_base64(setting.value.trim()) => {
                // Found here, not by the account: the SDK could not even sign a request with it.
                return Err(ConfigError::invalid(
                    key,
                    setting,
                    "not an account key: a Cosmos DB key is base64 text (the account's primary or secondary key, as the portal shows it under Keys), and this is not",
                    None,
                ));
            }
            (_, Some((_, setting))) => Some(AccountKey(setting.value.trim().to_owned())),
            (_, None) => None,
        };
        let database = required(DATABASE, "the database to write to is required")?;
        let container = required(CONTAINER, "the container to write to is required")?;
        let (strategy_key, strategy_setting) = or_default(ID_STRATEGY, "value");
        let id = match parse_choice(
            &strategy_key,
            &strategy_setting,
            "unknown id strategy",
            &["value", "key", "kafka-metadata", "template"],
        )? {
            IdStrategyName::Value => {
                let (key, setting) = or_default(ID_PATH, "/id");
                let pointer = setting.value.trim().to_owned();
                if !pointer.starts_with('/') || pointer.len() < 2 {
                    return Err(ConfigError::invalid(
                        &key,
                        &setting,
                        "not a JSON pointer to a field",
                        Some("a path starting with /, e.g. /id or /order/number".into()),
                    ));
                }
                IdStrategy::Value { pointer }
            }
            IdStrategyName::Key => IdStrategy::Key,
            IdStrategyName::KafkaMetadata => IdStrategy::KafkaMetadata,
            IdStrategyName::Template => {
                let (key, setting) = set(ID_TEMPLATE).ok_or_else(|| {
                    ConfigError::missing(
                        &format!("{prefix}{ID_TEMPLATE}"),
                        "id.strategy = template needs a template, e.g. ${topic}-${key}",
                    )
                })?;
                IdStrategy::Template(parse_template(&key, &setting)?)
            }
        };
        // An id template set for this channel while no strategy is set anywhere: the strategy
        // was left out, and ids read from `id` rather than made as meant would be a silent
        // surprise. A strategy set on purpose wins (a deployment may override the one in code
        // without unsetting its keys), and a connector-wide template serves the channels whose
        // strategy reads it.
        if strategy_setting.source == Source::BuiltIn {
            if let Some((key, setting)) =
                set(ID_TEMPLATE).filter(|(key, _)| !is_connector_wide(key))
            {
                return Err(ConfigError::invalid(
                    &key,
                    &setting,
                    format!(
                        "read only with id.strategy = template, and no id.strategy is set, so ids are read from the document ({ID_PATH})"
                    ),
                    Some(format!(
                        "set {prefix}{ID_STRATEGY} = template, or remove {key}"
                    )),
                ));
            }
        }
        let (key, setting) = or_default(WRITE_STRATEGY, "upsert");
        let write = parse_choice(
            &key,
            &setting,
            "unknown write strategy",
            &["upsert", "create"],
        )?;
        let (tombstone_key, tombstone_setting) = or_default(DELETE_ON_TOMBSTONE, "false");
        let delete_on_tombstone = parse_bool((tombstone_key.clone(), tombstone_setting.clone()))?;
        if delete_on_tombstone && matches!(id, IdStrategy::Value { .. }) {
            // Refused here rather than dead-lettering every tombstone the channel will see.
            return Err(ConfigError::invalid(
                &tombstone_key,
                &tombstone_setting,
                format!(
                    "a tombstone has no document to read the id from, and {strategy_key} is value"
                ),
                Some(format!(
                    "set {strategy_key} = key or template, or remove {tombstone_key}"
                )),
            ));
        }
        let create_if_missing = parse_bool(or_default(CREATE_IF_MISSING, "false"))?;
        let (key, setting) = or_default(PARTITION_KEY_PATHS, "/id");
        let partition_key_paths: Vec<String> = setting
            .value
            .split(',')
            .map(|path| path.trim().to_owned())
            .collect();
        if partition_key_paths
            .iter()
            .any(|path| !path.starts_with('/') || path.len() < 2)
            || partition_key_paths.len() > 3
        {
            return Err(ConfigError::invalid(
                &key,
                &setting,
                "not one to three partition key paths",
                Some(
                    "paths starting with /, separated by commas, e.g. /customerId or /tenant,/user"
                        .into(),
                ),
            ));
        }
        let (key, setting) = or_default(ON_OUTAGE, "pause");
        let on_outage = parse_choice(
            &key,
            &setting,
            "unknown outage behaviour",
            &["pause", "fail", "dead-letter"],
        )?;
        let threshold = parse_positive(or_default(OUTAGE_THRESHOLD, DEFAULT_OUTAGE_THRESHOLD))?;
        Ok(Self {
            keys: SettingKeys {
                endpoint: key_of(ENDPOINT),
                key: key_of(KEY),
                database: key_of(DATABASE),
                container: key_of(CONTAINER),
                delete_on_tombstone: key_of(DELETE_ON_TOMBSTONE),
            },
            endpoint,
            key: account_key,
            database,
            container,
            id,
            write,
            delete_on_tombstone,
            create_if_missing,
            partition_key_paths,
            max_concurrency,
            on_outage,
            outage_threshold: u32::try_from(threshold).unwrap_or(u32::MAX),
        })
    }
}

/// Whether `key`, as the user wrote it (a key or a variable), is a connector-wide one.
fn is_connector_wide(key: &str) -> bool {
    key.to_ascii_lowercase()
        .replace('_', ".")
        .starts_with("messaging.connector.")
}

/// The last setting of `name` (the channel's own come after connector-wide ones).
fn find<'a>(properties: &'a [(String, Setting)], name: &str) -> Option<&'a Setting> {
    properties
        .iter()
        .rev()
        .find(|(property, _)| same_key(name, property))
        .map(|(_, setting)| setting)
}

fn parse_template(key: &str, setting: &Setting) -> Result<Vec<TemplatePart>, ConfigError> {
    let accepted = || Some("text with ${topic}, ${partition}, ${offset} and ${key}".into());
    let mut parts = Vec::new();
    let mut rest = setting.value.trim();
    while let Some(start) = rest.find("${") {
        if start > 0 {
            parts.push(TemplatePart::Text(rest[..start].to_owned()));
        }
        let Some(end) = rest[start..].find('}') else {
            return Err(ConfigError::invalid(
                key,
                setting,
                "a ${ without its }",
                accepted(),
            ));
        };
        parts.push(match &rest[start + 2..start + end] {
            "topic" => TemplatePart::Topic,
            "partition" => TemplatePart::Partition,
            "offset" => TemplatePart::Offset,
            "key" => TemplatePart::Key,
            other => {
                return Err(ConfigError::invalid(
                    key,
                    setting,
                    format!("unknown placeholder ${{{other}}}"),
                    accepted(),
                ))
            }
        });
        rest = &rest[start + end + 1..];
    }
    if !rest.is_empty() {
        parts.push(TemplatePart::Text(rest.to_owned()));
    }
    if parts.is_empty() {
        return Err(ConfigError::invalid(
            key,
            setting,
            "must not be empty",
            accepted(),
        ));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: &str = "messaging.outgoing.orders-db.";

    fn properties(entries: &[(&str, &str)]) -> Vec<(String, Setting)> {
        properties_at(PREFIX, entries)
    }

    /// Properties written under `prefix` (the channel's, or the connector-wide one).
    fn properties_at(prefix: &str, entries: &[(&str, &str)]) -> Vec<(String, Setting)> {
        entries
            .iter()
            .map(|(property, value)| {
                (
                    (*property).to_owned(),
                    Setting {
                        value: (*value).to_owned(),
                        source: Source::Code,
                        key: format!("{prefix}{property}"),
                    },
                )
            })
            .collect()
    }

    fn minimal(extra: &[(&str, &str)]) -> Vec<(String, Setting)> {
        let mut all = properties(&[
            ("endpoint", "https://account.documents.azure.com:443/"),
            ("key", "c2VjcmV0LWtleQ=="),
            ("database", "shop"),
            ("container", "orders"),
        ]);
        all.extend(properties(extra));
        all
    }

    #[test]
    fn defaults_follow_the_documentation() {
        let settings = CosmosSettings::resolve(PREFIX, &minimal(&[]), 16).unwrap();
        assert_eq!(
            settings.id,
            IdStrategy::Value {
                pointer: "/id".into()
            }
        );
        assert_eq!(settings.write, WriteStrategy::Upsert);
        assert!(!settings.delete_on_tombstone && !settings.create_if_missing);
        assert_eq!(settings.on_outage, OnOutage::Pause);
        assert_eq!(settings.outage_threshold, 5);
        assert_eq!(settings.partition_key_paths, vec!["/id".to_owned()]);
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let settings = CosmosSettings::resolve(PREFIX, &minimal(&[]), 16).unwrap();
        let printed = format!("{settings:?} {:?}", minimal(&[]));
        assert!(!printed.contains("c2VjcmV0LWtleQ=="), "{printed}");
    }

    #[test]
    fn missing_and_bad_values_name_the_key() {
        let without_key: Vec<_> = minimal(&[])
            .into_iter()
            .filter(|(property, _)| property != "key")
            .collect();
        let settings = CosmosSettings::resolve(PREFIX, &without_key, 16).unwrap();
        let error = settings.require_authentication(false).unwrap_err();
        assert_eq!(error.key(), "messaging.outgoing.orders-db.key");
        assert!(error.to_string().contains("cosmos_credential"), "{error}");
        assert!(settings.require_authentication(true).is_ok());
        let error =
            CosmosSettings::resolve(PREFIX, &minimal(&[("id.strategy", "uuid")]), 16).unwrap_err();
        assert_eq!(error.key(), "messaging.outgoing.orders-db.id.strategy");
        assert!(error.to_string().contains("kafka-metadata"), "{error}");
        let error =
            CosmosSettings::resolve(PREFIX, &minimal(&[("delete-on-tombstone", "true")]), 16)
                .unwrap_err();
        assert_eq!(
            error.key(),
            "messaging.outgoing.orders-db.delete-on-tombstone"
        );
        assert!(
            error.to_string().contains("id.strategy = key or template"),
            "{error}"
        );
        let error =
            CosmosSettings::resolve(PREFIX, &minimal(&[("on-outage", "wait")]), 16).unwrap_err();
        assert!(
            error.to_string().contains("pause, fail, dead-letter"),
            "{error}"
        );
        let mut bad_key = without_key.clone();
        bad_key.extend(properties(&[("key", "s3cret-not*base64")]));
        let error = CosmosSettings::resolve(PREFIX, &bad_key, 16).unwrap_err();
        assert_eq!(error.key(), "messaging.outgoing.orders-db.key");
        let text = format!("{error} {error:?}");
        assert!(
            text.contains("base64") && !text.contains("s3cret"),
            "{text}"
        );
        let error =
            CosmosSettings::resolve(PREFIX, &minimal(&[("conatiner", "x")]), 16).unwrap_err();
        assert_eq!(error.key(), "messaging.outgoing.orders-db.conatiner");
        let accepted = error.to_string();
        assert!(
            accepted.contains("container")
                && accepted.contains("max-concurrency, retry.max-retries"),
            "{accepted}"
        );
        let error = CosmosSettings::resolve(
            PREFIX,
            &minimal(&[
                ("id.strategy", "template"),
                ("id.template", "${topic}-${nope}"),
            ]),
            16,
        )
        .unwrap_err();
        assert!(error.to_string().contains("${nope}"), "{error}");
    }

    #[test]
    fn an_id_template_without_an_id_strategy_is_an_error() {
        let error = CosmosSettings::resolve(PREFIX, &minimal(&[("id.template", "${key}")]), 16)
            .unwrap_err();
        assert_eq!(error.key(), "messaging.outgoing.orders-db.id.template");
        let text = error.to_string();
        assert!(
            text.contains("read only with id.strategy = template")
                && text.contains("set messaging.outgoing.orders-db.id.strategy = template"),
            "{text}"
        );
        // A strategy set on purpose wins: a deployment may override the one in code.
        for strategy in ["value", "kafka-metadata"] {
            let properties = minimal(&[("id.strategy", strategy), ("id.template", "${key}")]);
            assert!(CosmosSettings::resolve(PREFIX, &properties, 16).is_ok());
        }
        // Connector-wide (a key or a variable), it serves the channels whose strategy reads it.
        for prefix in ["messaging.connector.cosmos.", "MESSAGING_CONNECTOR_COSMOS_"] {
            let mut properties = properties_at(prefix, &[("id.template", "${topic}-${key}")]);
            properties.extend(minimal(&[]));
            assert!(CosmosSettings::resolve(PREFIX, &properties, 16).is_ok());
        }
    }

    #[test]
    fn an_account_url_needs_http_or_https_and_a_host() {
        for good in [
            "https://myaccount.documents.azure.com:443/",
            "https://localhost:8081",
            "HTTPS://127.0.0.1:8081/",
            "http://[::1]:8081/",
        ] {
            assert!(is_account_url(good), "{good}");
        }
        for bad in [
            "myaccount.documents",
            "htps:/127.0.0.1:8081",
            "foo:bar",
            "mailto:someone@example.com",
            "https://:443/",
            "https://acct.documents.azure.com:443/;AccountKey=c2VjcmV0;",
            "ftp://myaccount.documents.azure.com/",
        ] {
            assert!(!is_account_url(bad), "{bad}");
        }
    }

    #[test]
    fn embedded_needs_no_key_and_variables_spell_dashes_as_dots() {
        let settings = CosmosSettings::resolve(
            PREFIX,
            &properties(&[
                ("endpoint", "embedded"),
                ("database", "shop"),
                ("container", "orders"),
                ("delete.on.tombstone", "true"),
                ("id.strategy", "template"),
                ("id.template", "${topic}/${partition}-${offset}:${key}"),
            ]),
            16,
        )
        .unwrap();
        assert_eq!(settings.endpoint, Endpoint::Embedded);
        assert!(settings.key.is_none() && settings.delete_on_tombstone);
        assert_eq!(
            settings.id,
            IdStrategy::Template(vec![
                TemplatePart::Topic,
                TemplatePart::Text("/".into()),
                TemplatePart::Partition,
                TemplatePart::Text("-".into()),
                TemplatePart::Offset,
                TemplatePart::Text(":".into()),
                TemplatePart::Key,
            ])
        );
    }
}
