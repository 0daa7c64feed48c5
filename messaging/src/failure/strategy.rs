use std::fmt;
use std::str::FromStr;

use messaging_names::failure_strategy::{
    ACCEPTED, DEAD_LETTER_QUEUE, DELAYED_RETRY_TOPIC, FAIL, IGNORE,
};

/// What an inbound channel does with a nacked message (`failure-strategy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureStrategy {
    /// Do not commit past the message, stop the channel, report liveness DOWN. The default.
    Fail,
    /// Log a warning, then treat the message as acknowledged.
    Ignore,
    /// Write the original record to the dead-letter topic, then acknowledge it.
    DeadLetterQueue,
    /// Write the record to the next of the channel's retry topics, where the channel reads it
    /// again once the topic's delay has passed; after the last retry, to the dead-letter topic.
    DelayedRetryTopic,
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
            Self::DelayedRetryTopic => DELAYED_RETRY_TOPIC,
        }
    }

    /// Whether a nacked record may be written to the dead-letter topic: directly, or at the
    /// end of the retry topics.
    pub(crate) fn writes_dead_letters(self) -> bool {
        matches!(self, Self::DeadLetterQueue | Self::DelayedRetryTopic)
    }
}

impl FromStr for FailureStrategy {
    type Err = ();

    fn from_str(value: &str) -> Result<Self, ()> {
        match value {
            FAIL => Ok(Self::Fail),
            IGNORE => Ok(Self::Ignore),
            DEAD_LETTER_QUEUE => Ok(Self::DeadLetterQueue),
            DELAYED_RETRY_TOPIC => Ok(Self::DelayedRetryTopic),
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
