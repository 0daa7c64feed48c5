use std::fmt;
use std::str::FromStr;

use messaging_names::failure_strategy::{ACCEPTED, DEAD_LETTER_QUEUE, FAIL, IGNORE};

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
    /// The accepted spellings, for error messages and docs; the attribute macros check against
    /// the same table.
    pub const ACCEPTED: &'static [&'static str] = ACCEPTED;

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fail => FAIL,
            Self::Ignore => IGNORE,
            Self::DeadLetterQueue => DEAD_LETTER_QUEUE,
        }
    }
}

impl FromStr for FailureStrategy {
    type Err = ();

    fn from_str(value: &str) -> Result<Self, ()> {
        match value {
            FAIL => Ok(Self::Fail),
            IGNORE => Ok(Self::Ignore),
            DEAD_LETTER_QUEUE => Ok(Self::DeadLetterQueue),
            _ => Err(()),
        }
    }
}

impl fmt::Display for FailureStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_accepted_value_parses_back_to_itself() {
        for value in FailureStrategy::ACCEPTED {
            assert_eq!(
                value
                    .parse::<FailureStrategy>()
                    .map(FailureStrategy::as_str),
                Ok(*value)
            );
        }
    }
}
