use std::error::Error as StdError;
use std::fmt;

use crate::config::ConfigError;
use crate::failure::Failure;

/// What can go wrong starting, running or using the application.
///
/// Its `Debug` reads like its `Display` followed by the causes, as anyhow's does: `main`
/// returning `Err` prints the error with `Debug`, and an operator should read the message there,
/// not the enum's structure.
pub enum Error {
    /// Bad configuration, found at startup.
    Config(ConfigError),
    /// The Kafka client failed outside of configuration.
    Kafka(String),
    /// A sent message was rejected (nacked), e.g. its delivery failed.
    Nacked(Failure),
    /// A channel was asked for that the application does not declare, or of another kind; or a
    /// channel's name is refused (also when an incoming and an outgoing channel share it), or
    /// two handlers consume one channel.
    Channel { channel: String, problem: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(error) => fmt::Display::fmt(error, f),
            Self::Kafka(problem) => write!(f, "kafka: {problem}"),
            Self::Nacked(failure) => write!(f, "message rejected: {failure}"),
            Self::Channel { channel, problem } => write!(f, "channel `{channel}`: {problem}"),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        report(self, f)
    }
}

impl StdError for Error {
    /// The wrapped error's causes, not the wrapped error: its message is already ours.
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::Config(error) => StdError::source(error),
            Self::Nacked(failure) => failure.source(),
            Self::Kafka(_) | Self::Channel { .. } => None,
        }
    }
}

impl From<ConfigError> for Error {
    fn from(error: ConfigError) -> Self {
        Self::Config(error)
    }
}

/// `Display`, then every `source()` under "Caused by:", numbered when there are several
/// (anyhow's layout, which Rust users already know how to read).
pub(crate) fn report(error: &dyn StdError, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    write!(f, "{error}")?;
    let causes: Vec<&dyn StdError> =
        std::iter::successors(error.source(), |&cause| cause.source()).collect();
    match causes.as_slice() {
        [] => Ok(()),
        [only] => write!(f, "\n\nCaused by:\n    {only}"),
        many => {
            f.write_str("\n\nCaused by:")?;
            many.iter()
                .enumerate()
                .try_for_each(|(index, cause)| write!(f, "\n    {index}: {cause}"))
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
