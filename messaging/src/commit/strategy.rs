use std::fmt;
use std::str::FromStr;

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
    pub const ACCEPTED: &'static [&'static str] = &["throttled", "latest", "ignore"];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Throttled => "throttled",
            Self::Latest => "latest",
            Self::Ignore => "ignore",
        }
    }
}

impl FromStr for CommitStrategy {
    type Err = ();

    fn from_str(value: &str) -> Result<Self, ()> {
        match value {
            "throttled" => Ok(Self::Throttled),
            "latest" => Ok(Self::Latest),
            "ignore" => Ok(Self::Ignore),
            _ => Err(()),
        }
    }
}

impl fmt::Display for CommitStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
