//! Layered configuration.
//!
//! Keys are `messaging.incoming.<channel>.<attribute>`, `messaging.outgoing.<channel>.<attribute>`,
//! connector-wide `messaging.connector.<connector>.<attribute>` and a few global `messaging.*`
//! keys. For one key the first hit wins, in this order: environment variable, config file
//! (`messaging.toml`), code (`AppBuilder::set`), the `#[incoming]`/`#[outgoing]` attribute,
//! then the same attribute connector-wide (same order of sources), then the built-in default.
//! Attributes a connector does not know are passed to its client (for Kafka, to librdkafka).

mod channel;
mod env;
mod error;
mod file;
mod keys;
mod layers;

pub(crate) use channel::{GlobalSettings, IncomingSettings, OutgoingSettings};
pub(crate) use error::is_secret;
pub use error::ConfigError;
pub(crate) use file::read as read_file;
pub(crate) use keys::ConnectorKind;
pub use layers::Source;
pub(crate) use layers::{Layers, Setting};
