use std::fmt;
use std::str::FromStr;

/// What an inbound channel does with a nacked message (`failure-strategy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureStrategy {
    /// Do not commit past the message, stop the channel, report liveness DOWN. The default.
    Fail,
    /// Log a warning, then treat the message as acknowledged.
    Ignore,
    /// Write the original record to the dead-letter topic, then acknowledge it.
    DeadLetterQueue,
}

impl FailureStrategy {
    /// The accepted spellings, for error messages and docs.
    pub const ACCEPTED: &'static [&'static str] = &["fail", "ignore", "dead-letter-queue"];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fail => "fail",
            Self::Ignore => "ignore",
            Self::DeadLetterQueue => "dead-letter-queue",
        }
    }
}

impl FromStr for FailureStrategy {
    type Err = ();

    fn from_str(value: &str) -> Result<Self, ()> {
        match value {
            "fail" => Ok(Self::Fail),
            "ignore" => Ok(Self::Ignore),
            "dead-letter-queue" => Ok(Self::DeadLetterQueue),
            _ => Err(()),
        }
    }
}

impl fmt::Display for FailureStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
