//! `ordering`: which records of a channel may be handled at the same time (with
//! `max-concurrency` above 1), after Confluent's Parallel Consumer.

use std::str::FromStr;

use messaging_names::ordering::{ACCEPTED, KEY_ORDER, PARTITION, UNORDERED};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ordering {
    /// One record at a time per partition, in offset order. The default.
    Partition,
    /// One record at a time per key, each key's records in offset order; records without a
    /// key are ordered by partition.
    Key,
    /// Any records at once.
    Unordered,
}

impl Ordering {
    pub(crate) const ACCEPTED: &'static [&'static str] = ACCEPTED;

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Partition => PARTITION,
            Self::Key => KEY_ORDER,
            Self::Unordered => UNORDERED,
        }
    }
}

impl FromStr for Ordering {
    type Err = ();

    fn from_str(value: &str) -> Result<Self, ()> {
        match value {
            PARTITION => Ok(Self::Partition),
            KEY_ORDER => Ok(Self::Key),
            UNORDERED => Ok(Self::Unordered),
            _ => Err(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_accepted_value_parses_back_to_itself() {
        for value in Ordering::ACCEPTED {
            assert_eq!(value.parse::<Ordering>().map(Ordering::as_str), Ok(*value));
        }
    }
}
