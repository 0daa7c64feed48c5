use std::collections::VecDeque;
use std::sync::Mutex;

/// The received-but-unsettled records of one assigned partition.
///
/// Records arrive in offset order, so the pending ones form a sorted queue: settling finds its
/// offset by binary search and the front is always the oldest unsettled record. (How long the
/// front has waited is measured by whoever watches it, not stamped on every record: that would
/// read the clock on the hot path.) The committable
/// offset is the front's offset (everything below it was settled), or the last received + 1
/// when nothing is pending; gaps in offsets (compaction, transaction markers) need no care.
///
/// A tracker lives for one assignment of its partition: after a revoke it is `revoked`, and a
/// late settle of a record it handed out changes nothing that will be committed.
///
/// Each pending record may carry an attachment `A` until it is settled (the Kafka connector
/// keeps the original record there when a dead-letter topic may need it).
pub(crate) struct PartitionTracker<A = ()> {
    state: Mutex<State<A>>,
}

struct State<A> {
    pending: VecDeque<Pending<A>>,
    next_after_received: Option<i64>,
    committed: Option<i64>,
    revoked: bool,
}

struct Pending<A> {
    offset: i64,
    settled: bool,
    attachment: Option<A>,
}

impl<A> State<A> {
    fn committable(&self) -> Option<i64> {
        self.pending.front().map(|front| front.offset).or(self.next_after_received)
    }
}

impl<A> Default for PartitionTracker<A> {
    fn default() -> Self {
        let state = State { pending: VecDeque::new(), next_after_received: None, committed: None, revoked: false };
        Self { state: Mutex::new(state) }
    }
}

impl<A> PartitionTracker<A> {
    /// Records a received offset. Returns `false` once the partition was revoked.
    pub(crate) fn received(&self, offset: i64, attachment: Option<A>) -> bool {
        let mut state = self.state.lock().expect("tracker lock");
        if state.revoked {
            return false;
        }
        state.pending.push_back(Pending { offset, settled: false, attachment });
        state.next_after_received = Some(offset + 1);
        true
    }

    /// Records a settled offset. Returns `true` when the committable offset moved.
    pub(crate) fn settled(&self, offset: i64) -> bool {
        let mut state = self.state.lock().expect("tracker lock");
        if state.revoked {
            return false;
        }
        let Ok(index) = state.pending.binary_search_by_key(&offset, |pending| pending.offset) else { return false };
        state.pending[index].settled = true;
        let mut advanced = false;
        while state.pending.front().is_some_and(|front| front.settled) {
            state.pending.pop_front();
            advanced = true;
        }
        advanced
    }

    /// Takes the attachment of a pending record.
    pub(crate) fn take_attachment(&self, offset: i64) -> Option<A> {
        let mut state = self.state.lock().expect("tracker lock");
        let index = state.pending.binary_search_by_key(&offset, |pending| pending.offset).ok()?;
        state.pending[index].attachment.take()
    }

    /// The offset to commit (the next one to consume), if anything was received.
    #[cfg(test)]
    fn committable(&self) -> Option<i64> {
        self.state.lock().expect("tracker lock").committable()
    }

    /// The offset of the oldest unsettled record.
    pub(crate) fn oldest_unsettled(&self) -> Option<i64> {
        self.state.lock().expect("tracker lock").pending.front().map(|front| front.offset)
    }

    /// The committable offset if it is ahead of what was last committed; marks it committed.
    pub(crate) fn take_commit(&self) -> Option<i64> {
        let mut state = self.state.lock().expect("tracker lock");
        if state.revoked {
            return None;
        }
        let committable = state.committable()?;
        if state.committed.is_some_and(|committed| committed >= committable) {
            return None;
        }
        state.committed = Some(committable);
        Some(committable)
    }

    /// Forgets a commit that failed, so the next round commits the offset again.
    pub(crate) fn commit_failed(&self, offset: i64) {
        let mut state = self.state.lock().expect("tracker lock");
        if state.committed == Some(offset) {
            state.committed = None;
        }
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self.state.lock().expect("tracker lock").pending.is_empty()
    }

    /// Ends this assignment: later settles are ignored.
    pub(crate) fn revoke(&self) {
        self.state.lock().expect("tracker lock").revoked = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_order_settles_never_pass_an_unsettled_offset() {
        let tracker: PartitionTracker = PartitionTracker::default();
        for offset in 10..15 {
            assert!(tracker.received(offset, None));
        }
        assert_eq!(tracker.committable(), Some(10));
        assert!(!tracker.settled(12));
        assert!(!tracker.settled(14));
        assert_eq!(tracker.committable(), Some(10), "10 is still unsettled");
        assert!(tracker.settled(10));
        assert_eq!(tracker.committable(), Some(11));
        assert!(tracker.settled(11));
        assert_eq!(tracker.committable(), Some(13), "12 was settled earlier");
        assert_eq!(tracker.oldest_unsettled(), Some(13));
        assert!(tracker.settled(13));
        assert_eq!(tracker.committable(), Some(15));
        assert_eq!(tracker.oldest_unsettled(), None);
    }

    #[test]
    fn gaps_in_offsets_are_fine() {
        let tracker = PartitionTracker::default();
        tracker.received(3, Some("three"));
        tracker.received(7, Some("seven"));
        assert_eq!(tracker.take_attachment(7), Some("seven"));
        assert_eq!(tracker.take_attachment(7), None);
        tracker.settled(7);
        assert_eq!(tracker.take_commit(), Some(3));
        tracker.settled(3);
        assert_eq!(tracker.take_commit(), Some(8));
        assert_eq!(tracker.take_commit(), None, "nothing new to commit");
        tracker.commit_failed(8);
        assert_eq!(tracker.take_commit(), Some(8), "a failed commit is retried");
    }

    #[test]
    fn revoked_tracker_ignores_late_settles() {
        let tracker: PartitionTracker = PartitionTracker::default();
        tracker.received(0, None);
        tracker.revoke();
        assert!(!tracker.settled(0));
        assert!(!tracker.received(1, None));
        assert_eq!(tracker.take_commit(), None);
    }
}
