//! Layered configuration.
//!
//! Keys are `messaging.incoming.<channel>.<attribute>`, `messaging.outgoing.<channel>.<attribute>`,
//! connector-wide `messaging.connector.<connector>.<attribute>` and a few global `messaging.*`
//! keys. For one key the first hit wins, in this order: environment variable, config file
//! (`messaging.toml`), code (`AppBuilder::set`), the `#[incoming]`/`#[outgoing]` attribute,
//! then the same attribute connector-wide (same order of sources), then the built-in default.
//! Attributes a connector does not know are passed to its client (for Kafka, to librdkafka).
//! A key or variable outside every declared scope is a typo and fails the start (`unknown_keys`).

mod channel;
mod cosmos;
mod delayed_retry;
mod edit_distance;
mod env;
mod error;
mod file;
mod keys;
mod layers;
mod property_aliases;
mod retry;
mod unknown_keys;

pub(crate) use channel::{
    default_group_id, is_true, GlobalSettings, IncomingSettings, OutgoingSettings,
};
// Read by the Cosmos DB sink; without the `cosmos` feature the keys are still checked.
#[cfg_attr(not(feature = "cosmos"), allow(unused_imports))]
pub(crate) use cosmos::{
    CosmosSettings, Endpoint as CosmosEndpoint, IdStrategy, OnOutage, TemplatePart, WriteStrategy,
};
pub(crate) use delayed_retry::{check_retry_topics_are_their_own, RetryTopic, RetryTopics};
pub(crate) use edit_distance::nearest;
pub(crate) use env::{env_name, read_variables};
pub(crate) use error::is_secret;
pub use error::ConfigError;
pub(crate) use file::read as read_file;
pub(crate) use keys::CONFIG_FILE_VARIABLE;
pub(crate) use keys::{ConnectorKind, GROUP_ID, INCOMING_ATTRIBUTES, OUTGOING_ATTRIBUTES};
pub use layers::Source;
pub(crate) use layers::{Layers, Setting};
pub(crate) use property_aliases::property_name;
pub(crate) use unknown_keys::check_unknown_keys;
