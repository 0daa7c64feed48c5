use std::fmt;
use std::str::FromStr;

use messaging_names::commit_strategy::{ACCEPTED, IGNORE, LATEST, THROTTLED};

/// When an incoming channel commits offsets (`commit-strategy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitStrategy {
    /// Commit the contiguous watermark every `auto.commit.interval.ms`, on revoke and on
    /// shutdown. The default.
    Throttled,
    /// Commit the contiguous watermark as soon as an acknowledgement advances it.
    Latest,
    /// Never commit (e.g. with `enable.auto.commit=true`, or when offsets are kept elsewhere).
    Ignore,
}

impl CommitStrategy {
    /// The accepted spellings, for error messages and docs; the attribute macros check against
    /// the same table.
    pub const ACCEPTED: &'static [&'static str] = ACCEPTED;

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Throttled => THROTTLED,
            Self::Latest => LATEST,
            Self::Ignore => IGNORE,
        }
    }
}

impl FromStr for CommitStrategy {
    type Err = ();

    fn from_str(value: &str) -> Result<Self, ()> {
        match value {
            THROTTLED => Ok(Self::Throttled),
            LATEST => Ok(Self::Latest),
            IGNORE => Ok(Self::Ignore),
            _ => Err(()),
        }
    }
}

impl fmt::Display for CommitStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_accepted_value_parses_back_to_itself() {
        for value in CommitStrategy::ACCEPTED {
            assert_eq!(
                value.parse::<CommitStrategy>().map(CommitStrategy::as_str),
                Ok(*value)
            );
        }
    }
}
