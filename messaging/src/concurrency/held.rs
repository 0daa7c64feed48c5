//! What a running channel reports about the records its consumer loop holds.

/// Records an incoming channel's consumer loop holds: taken from the Kafka client and not yet
/// let go (waiting for their turn, being handled or retried, or being dead-lettered). Never
/// more than the channel's `max-buffered-records`, however large the backlog (a record from
/// a partition whose queue could not be split may add one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldRecords {
    /// Held now.
    pub now: usize,
    /// The most held at any one time since the channel started.
    pub peak: usize,
}
