use crate::config::ConfigError;
use crate::failure::Failure;

/// What can go wrong starting, running or using the application.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad configuration, found at startup.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The Kafka client failed outside of configuration.
    #[error("kafka: {0}")]
    Kafka(String),
    /// A sent message was rejected (nacked), e.g. its delivery failed.
    #[error("message rejected: {0}")]
    Nacked(Failure),
    /// A channel was asked for that the application does not declare, or of another kind.
    #[error("channel `{channel}`: {problem}")]
    Channel { channel: String, problem: String },
    /// The health server could not start.
    #[error("health server: {0}")]
    Io(#[from] std::io::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
