use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// A handed-out record's place in its partition: its offset, and the watermark at which every
/// record handed out before it is settled (the offset after the previous record).
///
/// Chaining records by `follows` rather than assuming `offset - 1` is what lets gaps in
/// offsets (compaction, transaction markers) need no care.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TrackedOffset {
    pub(crate) offset: i64,
    pub(crate) follows: i64,
}

/// No record yet. Kafka offsets are never negative.
const NOTHING: i64 = -1;

/// The received-but-unsettled records of one assigned partition, and so the offset that may
/// be committed: the watermark, below which every handed-out record is settled.
///
/// Built for the common case, records settled in the order they were handed out: then a
/// settle is one compare-and-swap of the watermark from the record's `follows` to the offset
/// after it, and handing a record out is a plain load and store by the consumer loop (its only
/// writer). A record settled before an earlier one is parked under a lock until the
/// watermark reaches its `follows`; whoever moves the watermark there moves it on through
/// the parked records. Parked records that follow each other make one run, so the records
/// settled in order behind a slow one (a dead letter being written) cost a compare each, not
/// an entry each. That hand-over is safe under races: the parker counts its record
/// before it reads the watermark, and the fast path reads the count after its
/// compare-and-swap, all sequentially consistent, so at least one of them sees the other.
///
/// A tracker lives for one assignment of its partition: after a revoke it is `revoked`, and a
/// late settle of a record it handed out changes nothing that will be committed.
///
/// A tracker made [`with_attachments`](Self::with_attachments) keeps a value `A` per pending
/// record until it is settled (the Kafka connector keeps the original record there when a
/// dead-letter topic may need it); that costs a lock per record, paid only by such channels.
pub(crate) struct PartitionTracker<A = ()> {
    /// The offset to commit; `NOTHING` before the first record.
    watermark: AtomicI64,
    /// The offset after the last handed-out record; `NOTHING` before the first.
    received_next: AtomicI64,
    /// The offset after the highest record whose handling started; `NOTHING` before the first.
    started_next: AtomicI64,
    /// Settled records the watermark has not reached.
    parked: Mutex<Parked>,
    /// How many records `parked` holds.
    parked_count: AtomicUsize,
    /// Whether a record came at a lower offset than the one before it in this assignment (a
    /// reset to an earlier offset): parked records are no longer joined into runs then (see
    /// `Parked::park`).
    rewound: AtomicBool,
    committed: Mutex<Committed>,
    /// Records handed out and neither settled nor given up: what a stopping channel waits for.
    outstanding: AtomicI64,
    /// Records waiting for a retry, by their `follows`: the age watch does not count that wait
    /// against them (each attempt gets the whole limit).
    waiting_for_retry: Mutex<Vec<i64>>,
    revoked: AtomicBool,
    attachments: Option<Mutex<Attachments<A>>>,
}

/// Settled records that follow each other, waiting for the watermark to reach `follows`: it
/// then moves to `after` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    follows: i64,
    after: i64,
    records: usize,
}

/// Parked runs. After a reset to an earlier offset, two pending records can follow the same
/// offset, even with the same `after`, and neither may be lost: so runs are kept by
/// (`follows`, `after`, a serial number). Of two runs that follow the same offset, the one
/// with the lower `after` (after a rewind, the rewound one) goes first: its records lead the
/// watermark back to that offset, where the other one is still waiting.
#[derive(Default)]
struct Parked {
    runs: BTreeMap<(i64, i64, u64), usize>,
    /// The run the last park made or extended, kept out of `runs`: the next record of a
    /// partition settled in order extends it without touching the map.
    last: Option<Run>,
    serial: u64,
}

impl Parked {
    /// Parks a settled record. It joins the last run when it follows it, unless the partition
    /// was rewound: then a record following the end of a run may have to wait there for the
    /// rewound records (which lead the watermark back to that offset) rather than be passed.
    fn park(&mut self, follows: i64, after: i64, rewound: bool) {
        match &mut self.last {
            Some(last) if last.after == follows && !rewound => {
                last.after = after;
                last.records += 1;
                return;
            }
            _ => {}
        }
        let new = Run {
            follows,
            after,
            records: 1,
        };
        if let Some(previous) = self.last.replace(new) {
            self.insert(previous);
        }
    }

    fn insert(&mut self, run: Run) {
        self.serial += 1;
        self.runs
            .insert((run.follows, run.after, self.serial), run.records);
    }

    /// Takes the run that follows `watermark` with the lowest `after`, if any.
    fn take_following(&mut self, watermark: i64) -> Option<Run> {
        let in_map = self
            .runs
            .range((watermark, i64::MIN, 0)..=(watermark, i64::MAX, u64::MAX))
            .next()
            .map(|(&key, _)| key);
        let last = self.last.filter(|last| last.follows == watermark);
        match (in_map, last) {
            (Some(key), last) if last.is_none_or(|last| key.1 <= last.after) => {
                let records = self.runs.remove(&key).expect("just found");
                Some(Run {
                    follows: key.0,
                    after: key.1,
                    records,
                })
            }
            (_, Some(_)) => self.last.take(),
            (_, None) => None,
        }
    }

    /// Runs held (the last one too).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.runs.len() + usize::from(self.last.is_some())
    }

    /// Records held in all runs.
    #[cfg(test)]
    fn records(&self) -> usize {
        self.runs.values().sum::<usize>() + self.last.map_or(0, |last| last.records)
    }
}

/// The highest offset handed to a commit, and whether that commit failed and must be sent again.
///
/// Commits never move backwards: after a rewind the watermark can fall below what was already
/// committed, and a failed commit must not forget the offset it carried (the next commit would
/// then go back to the lower watermark).
#[derive(Default)]
struct Committed {
    sent: Option<i64>,
    failed: bool,
}

/// Pending records' attachments in the order they were handed out; `None` once taken or settled.
type Attachments<A> = VecDeque<(i64, Option<A>)>;

/// Where the still-kept attachment of `offset` is. Handed-out offsets ascend, so a binary search
/// finds it; after a rewind they don't, and the same offset can be pending twice: then a scan
/// finds the first one still kept. Each record uses up one entry (by a take or by its settle),
/// so two records at one offset use up both.
fn kept_attachment<A>(attachments: &Attachments<A>, offset: i64) -> Option<usize> {
    let kept = |index: usize| attachments[index].0 == offset && attachments[index].1.is_some();
    attachments
        .binary_search_by_key(&offset, |(pending, _)| *pending)
        .ok()
        .filter(|&index| kept(index))
        .or_else(|| (0..attachments.len()).find(|&index| kept(index)))
}

fn drop_settled_front<A>(attachments: &mut Attachments<A>) {
    while attachments
        .front()
        .is_some_and(|(_, attachment)| attachment.is_none())
    {
        attachments.pop_front();
    }
}

impl<A> PartitionTracker<A> {
    pub(crate) fn new() -> Self {
        Self {
            watermark: AtomicI64::new(NOTHING),
            received_next: AtomicI64::new(NOTHING),
            started_next: AtomicI64::new(NOTHING),
            parked: Mutex::new(Parked::default()),
            parked_count: AtomicUsize::new(0),
            rewound: AtomicBool::new(false),
            committed: Mutex::new(Committed::default()),
            outstanding: AtomicI64::new(0),
            waiting_for_retry: Mutex::new(Vec::new()),
            revoked: AtomicBool::new(false),
            attachments: None,
        }
    }

    pub(crate) fn with_attachments() -> Self {
        Self {
            attachments: Some(Mutex::new(VecDeque::new())),
            ..Self::new()
        }
    }

    /// Records a record handed out, in the order the partition delivers them. Only the
    /// partition's consumer loop calls this.
    #[inline]
    pub(crate) fn received(&self, offset: i64) -> TrackedOffset {
        let previous = self.received_next.load(Ordering::Relaxed);
        let follows = if previous == NOTHING {
            self.watermark.store(offset, Ordering::SeqCst);
            offset
        } else {
            if offset < previous {
                // A rewind: offsets no longer say which records started (see `oldest_started`).
                self.started_next.store(i64::MAX, Ordering::Release);
                // Stored before the rewound record can be settled and parked.
                self.rewound.store(true, Ordering::Release);
            } else if self.started_next.load(Ordering::Relaxed) == i64::MAX
                && self.watermark.load(Ordering::SeqCst) == previous
            {
                // Every record handed out before this one is settled, the rewound ones too:
                // offsets say again which records started.
                self.started_next.store(NOTHING, Ordering::Release);
            }
            previous
        };
        self.received_next.store(offset + 1, Ordering::Release);
        self.outstanding.fetch_add(1, Ordering::SeqCst);
        TrackedOffset { offset, follows }
    }

    /// A handed-out record's handling starts (its first attempt). Only the partition's consumer
    /// loop calls this.
    #[inline]
    pub(crate) fn started(&self, record: TrackedOffset) {
        if self.started_next.load(Ordering::Relaxed) <= record.offset {
            self.started_next
                .store(record.offset + 1, Ordering::Release);
        }
    }

    /// Whether the oldest unsettled record's handling has started, rather than the record
    /// waiting for a place among `max-concurrency` or its key's turn. Records of a partition
    /// start in offset order, except under key ordering, where a later one may start first,
    /// and after a rewind to earlier offsets (until every record handed out before the next
    /// one is settled): then the oldest counts as started (the age watch
    /// counts its wait, as for a started record: a wait may be taken for a stuck record, never
    /// a stuck record for a wait).
    pub(crate) fn oldest_started(&self) -> bool {
        // The watermark first: read the other way round, a record that started and settled in
        // between would leave a watermark past the start just read, and its successor, started
        // or not, would count as waiting.
        let watermark = self.watermark.load(Ordering::SeqCst);
        self.started_next.load(Ordering::Acquire) > watermark
    }

    /// Keeps a value with a received record until it is settled (see
    /// [`with_attachments`](Self::with_attachments); otherwise the value is dropped).
    pub(crate) fn attach(&self, offset: i64, attachment: A) {
        if let Some(attachments) = &self.attachments {
            attachments
                .lock()
                .expect("attachments lock")
                .push_back((offset, Some(attachment)));
        }
    }

    /// Records a settled record. Returns `true` when the watermark moved.
    pub(crate) fn settled(&self, record: TrackedOffset) -> bool {
        // Counted out last: a stopping channel that sees nothing outstanding commits the
        // watermark, which must include this record by then.
        let advanced = !self.revoked.load(Ordering::Acquire) && {
            self.forget_attachment(record.offset);
            self.advance(record)
        };
        self.counted_out();
        advanced
    }

    /// Records a settled record whose attachment was [taken](Self::take_attachment).
    pub(crate) fn settled_after_taking_attachment(&self, record: TrackedOffset) -> bool {
        let advanced = !self.revoked.load(Ordering::Acquire) && self.advance(record);
        self.counted_out();
        advanced
    }

    /// A settled record is no longer outstanding. When it was the last and the watermark is
    /// at the end, whatever is still parked can never be reached: after a rewind, the
    /// watermark may have passed an offset before a rewound record following it settled
    /// (its first delivery was settled, so nothing is lost by passing it). Dropped, so that
    /// it does not count against the partition's room for good.
    fn counted_out(&self) {
        let was = self.outstanding.fetch_sub(1, Ordering::SeqCst);
        if was == 1 && self.parked_count.load(Ordering::SeqCst) > 0 {
            let mut parked = self.parked.lock().expect("parked lock");
            // Under the lock: a record handed out since is not parked yet (it must settle
            // first, and park under this lock), and it moved `received_next` on before it was
            // counted as outstanding.
            if self.outstanding.load(Ordering::SeqCst) == 0
                && self.watermark.load(Ordering::SeqCst)
                    == self.received_next.load(Ordering::SeqCst)
            {
                *parked = Parked::default();
                self.parked_count.store(0, Ordering::SeqCst);
            }
        }
    }

    /// Records taken in and not yet committable: unsettled ones, and settled ones waiting
    /// behind an unsettled one. The consumer loop takes no more from the partition at eight
    /// times `max-buffered-records` (`source::partition_room`).
    pub(crate) fn open(&self) -> usize {
        self.unsettled() + self.parked_count.load(Ordering::SeqCst)
    }

    /// Records taken in and neither settled nor given up: the ones that may still hold memory
    /// (a processor's output being delivered, a message the application keeps).
    pub(crate) fn unsettled(&self) -> usize {
        self.outstanding.load(Ordering::SeqCst).max(0) as usize
    }

    /// A record starts (`true`) or ends (`false`) waiting for its next attempt.
    pub(crate) fn waiting_for_retry(&self, record: TrackedOffset, waiting: bool) {
        let mut records = self.waiting_for_retry.lock().expect("retry lock");
        if waiting {
            records.push(record.follows);
        } else if let Some(index) = records
            .iter()
            .position(|&follows| follows == record.follows)
        {
            records.swap_remove(index);
        }
    }

    /// Whether the oldest unsettled record (the one the watermark waits for) is waiting for a
    /// retry rather than being handled.
    pub(crate) fn oldest_waits_for_retry(&self) -> bool {
        let watermark = self.watermark.load(Ordering::SeqCst);
        self.waiting_for_retry
            .lock()
            .expect("retry lock")
            .contains(&watermark)
    }

    /// A handed-out record that will not be settled (shutdown or a revoke ended its wait): it
    /// stays uncommitted, and nobody waits for it any more.
    pub(crate) fn given_up(&self, offset: i64) {
        self.outstanding.fetch_sub(1, Ordering::SeqCst);
        self.forget_attachment(offset);
    }

    /// Whether a handed-out record is still to be settled.
    pub(crate) fn has_outstanding(&self) -> bool {
        self.outstanding.load(Ordering::Acquire) > 0
    }

    fn advance(&self, record: TrackedOffset) -> bool {
        let after = record.offset + 1;
        if self
            .watermark
            .compare_exchange(record.follows, after, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            if self.parked_count.load(Ordering::SeqCst) > 0 {
                self.advance_through_parked(&mut self.parked.lock().expect("parked lock"));
            }
            return true;
        }
        // An earlier record is unsettled: park this one for whoever settles that.
        let mut parked = self.parked.lock().expect("parked lock");
        parked.park(record.follows, after, self.rewound.load(Ordering::Acquire));
        self.parked_count.fetch_add(1, Ordering::SeqCst);
        // The earlier record may have settled since the compare-and-swap, without seeing us.
        self.advance_through_parked(&mut parked)
    }

    /// Moves the watermark on through parked runs while one follows it.
    fn advance_through_parked(&self, parked: &mut Parked) -> bool {
        let mut advanced = false;
        loop {
            let watermark = self.watermark.load(Ordering::SeqCst);
            let Some(next) = parked.take_following(watermark) else {
                return advanced;
            };
            // Only the parked run follows `watermark`, unless a rewind made two: then the
            // other may have moved it first, and this one goes back to wait.
            if self
                .watermark
                .compare_exchange(watermark, next.after, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                parked.insert(next);
                continue;
            }
            self.parked_count.fetch_sub(next.records, Ordering::SeqCst);
            advanced = true;
        }
    }

    /// Takes the attachment of a pending record; settle it with
    /// [`settled_after_taking_attachment`](Self::settled_after_taking_attachment).
    pub(crate) fn take_attachment(&self, offset: i64) -> Option<A> {
        let mut attachments = self.attachments.as_ref()?.lock().expect("attachments lock");
        let index = kept_attachment(&attachments, offset)?;
        let taken = attachments[index].1.take();
        drop_settled_front(&mut attachments);
        taken
    }

    fn forget_attachment(&self, offset: i64) {
        let Some(attachments) = &self.attachments else {
            return;
        };
        let mut attachments = attachments.lock().expect("attachments lock");
        if let Some(index) = kept_attachment(&attachments, offset) {
            attachments[index].1 = None;
        }
        drop_settled_front(&mut attachments);
    }

    /// The offset to commit (the next one to consume), if anything was received: where the
    /// channel stands in the partition.
    pub(crate) fn committable(&self) -> Option<i64> {
        Some(self.watermark.load(Ordering::SeqCst)).filter(|&watermark| watermark != NOTHING)
    }

    /// Where the oldest unsettled record is: the watermark, while any record is unsettled.
    /// (The record itself is at this offset or, after a gap, a little above it.)
    pub(crate) fn oldest_unsettled(&self) -> Option<i64> {
        let received_next = self.received_next.load(Ordering::Acquire);
        let watermark = self.watermark.load(Ordering::SeqCst);
        (received_next != NOTHING && watermark != received_next).then_some(watermark)
    }

    /// The offset to commit now, if it is ahead of what was already committed or the last
    /// commit failed; marks it sent. Never lower than an offset sent before.
    pub(crate) fn take_commit(&self) -> Option<i64> {
        if self.revoked.load(Ordering::Acquire) {
            return None;
        }
        let committable = self.committable()?;
        let mut committed = self.committed.lock().expect("committed lock");
        let next = match committed.sent {
            Some(sent) if committed.failed => committable.max(sent),
            Some(sent) if sent >= committable => return None,
            _ => committable,
        };
        *committed = Committed {
            sent: Some(next),
            failed: false,
        };
        Some(next)
    }

    /// The offset for a last commit (on revoke or shutdown): the watermark, or what was sent
    /// before if that is higher, even when that commit is still in flight (it may yet fail).
    pub(crate) fn take_final_commit(&self) -> Option<i64> {
        if self.revoked.load(Ordering::Acquire) {
            return None;
        }
        let mut committed = self.committed.lock().expect("committed lock");
        let next = match (self.committable(), committed.sent) {
            (Some(committable), Some(sent)) => committable.max(sent),
            (committable, sent) => committable.or(sent)?,
        };
        *committed = Committed {
            sent: Some(next),
            failed: false,
        };
        Some(next)
    }

    /// Notes that the commit of `offset` failed, so the next round sends it (or more) again.
    pub(crate) fn commit_failed(&self, offset: i64) {
        let mut committed = self.committed.lock().expect("committed lock");
        if committed.sent == Some(offset) {
            committed.failed = true;
        }
    }

    /// Ends this assignment: later settles are ignored, and the originals kept for the
    /// dead-letter topic are dropped (the partition's next owner reads the records again).
    pub(crate) fn revoke(&self) {
        self.revoked.store(true, Ordering::Release);
        if let Some(attachments) = &self.attachments {
            attachments.lock().expect("attachments lock").clear();
        }
    }

    pub(crate) fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use super::*;

    fn hand_out(
        tracker: &PartitionTracker<&'static str>,
        offset: i64,
        original: &'static str,
    ) -> TrackedOffset {
        let record = tracker.received(offset);
        tracker.attach(offset, original);
        record
    }

    /// The count the consumer loop's intake reads is the number of records parked.
    fn assert_parked_count_exact(tracker: &PartitionTracker) {
        let parked = tracker.parked.lock().expect("parked lock");
        assert_eq!(
            tracker.parked_count.load(Ordering::SeqCst),
            parked.records()
        );
    }

    fn receive_all(
        tracker: &PartitionTracker,
        offsets: impl IntoIterator<Item = i64>,
    ) -> Vec<TrackedOffset> {
        offsets
            .into_iter()
            .map(|offset| tracker.received(offset))
            .collect()
    }

    /// Property: whatever order records are settled in, the committable offset is always the
    /// first unsettled record's (never past one), and the end once all are settled. Offsets have
    /// gaps, as compaction and transaction markers leave them. Many seeded random orders, and
    /// every order of a small partition.
    #[test]
    fn any_settle_order_commits_only_contiguous_settled_offsets() {
        fn check(offsets: &[i64], order: &[usize]) {
            let tracker: PartitionTracker = PartitionTracker::new();
            let records = receive_all(&tracker, offsets.iter().copied());
            let mut settled = vec![false; offsets.len()];
            for &index in order {
                tracker.settled(records[index]);
                settled[index] = true;
                let first_unsettled = settled.iter().position(|done| !done);
                let expected = first_unsettled.map_or(offsets[offsets.len() - 1] + 1, |first| {
                    records[first].follows
                });
                assert_eq!(tracker.committable(), Some(expected), "order {order:?}");
                // Every record from the first unsettled on is open, settled or not: the
                // parked count is exact, whatever runs the settles made.
                let open = first_unsettled.map_or(0, |first| offsets.len() - first);
                assert_eq!(tracker.open(), open, "order {order:?}");
                assert_parked_count_exact(&tracker);
            }
            assert!(tracker.oldest_unsettled().is_none());
        }
        fn permutations(items: &mut Vec<usize>, k: usize, each: &mut impl FnMut(&[usize])) {
            if k == items.len() {
                return each(items);
            }
            for i in k..items.len() {
                items.swap(k, i);
                permutations(items, k + 1, each);
                items.swap(k, i);
            }
        }
        let small = [3, 4, 6, 7, 10, 11];
        permutations(&mut (0..small.len()).collect(), 0, &mut |order| {
            check(&small, order)
        });
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..500 {
            let mut offset = 0;
            let offsets: Vec<i64> = (0..64)
                .map(|_| {
                    offset += 1 + (next() % 3) as i64;
                    offset
                })
                .collect();
            let mut order: Vec<usize> = (0..offsets.len()).collect();
            for i in (1..order.len()).rev() {
                order.swap(i, (next() % (i as u64 + 1)) as usize);
            }
            check(&offsets, &order);
        }
    }

    #[test]
    fn out_of_order_settles_never_pass_an_unsettled_offset() {
        let tracker: PartitionTracker = PartitionTracker::new();
        let records = receive_all(&tracker, 10..15);
        assert_eq!(tracker.committable(), Some(10));
        assert!(!tracker.settled(records[2]));
        assert!(!tracker.settled(records[4]));
        assert_eq!(tracker.committable(), Some(10), "10 is still unsettled");
        assert!(tracker.settled(records[0]));
        assert_eq!(tracker.committable(), Some(11));
        assert!(tracker.settled(records[1]));
        assert_eq!(tracker.committable(), Some(13), "12 was settled earlier");
        assert_eq!(tracker.oldest_unsettled(), Some(13));
        assert!(tracker.settled(records[3]));
        assert_eq!(tracker.committable(), Some(15), "14 was settled earlier");
        assert_eq!(tracker.oldest_unsettled(), None);
    }

    #[test]
    fn gaps_in_offsets_are_fine() {
        let tracker = PartitionTracker::with_attachments();
        let three = hand_out(&tracker, 3, "three");
        let seven = hand_out(&tracker, 7, "seven");
        assert_eq!(tracker.take_attachment(7), Some("seven"));
        assert_eq!(tracker.take_attachment(7), None);
        tracker.settled_after_taking_attachment(seven);
        assert_eq!(tracker.take_commit(), Some(3));
        assert_eq!(tracker.oldest_unsettled(), Some(3));
        tracker.settled(three);
        assert_eq!(tracker.take_commit(), Some(8));
        assert_eq!(tracker.take_commit(), None, "nothing new to commit");
        tracker.commit_failed(8);
        assert_eq!(tracker.take_commit(), Some(8), "a failed commit is retried");
        assert_eq!(
            tracker.take_attachment(3),
            None,
            "settling drops the attachment"
        );
    }

    #[test]
    fn the_oldest_record_counts_as_started_once_it_starts_and_after_a_rewind_until_all_settle() {
        let tracker: PartitionTracker = PartitionTracker::new();
        let records = receive_all(&tracker, 10..=12);
        assert!(!tracker.oldest_started(), "handed out, not started");
        tracker.started(records[0]);
        assert!(tracker.oldest_started());
        tracker.settled(records[0]);
        assert!(!tracker.oldest_started(), "11 waits for its turn");
        tracker.started(records[1]);
        tracker.settled(records[1]);
        tracker.started(records[2]);
        tracker.settled(records[2]);
        let rewound = tracker.received(5);
        assert!(
            tracker.oldest_started(),
            "after a rewind offsets no longer tell: watched as if it ran"
        );
        tracker.started(rewound);
        assert!(tracker.oldest_started());
        let after = tracker.received(6);
        tracker.settled(rewound);
        assert!(
            tracker.oldest_started(),
            "6 was handed out while 5 was unsettled"
        );
        tracker.started(after);
        tracker.settled(after);
        let waiting = receive_all(&tracker, 7..=8);
        assert!(
            !tracker.oldest_started(),
            "all settled when 7 came: offsets tell again, and 7 has not started"
        );
        tracker.started(waiting[0]);
        assert!(tracker.oldest_started());
    }

    /// After a reset to an earlier offset (e.g. the log was truncated), the partition hands out
    /// lower offsets again, so two pending records can follow the same offset. Settled in the
    /// worst order, the watermark still reaches the end, and nothing stays parked.
    #[test]
    fn a_rewind_to_earlier_offsets_never_stalls_the_watermark() {
        let tracker: PartitionTracker = PartitionTracker::new();
        let before_rewind = tracker.received(20);
        let rewound = receive_all(&tracker, 5..=22);
        let (five, twenty_one) = (rewound[0], rewound[16]);
        assert_eq!(
            (five.follows, twenty_one.follows),
            (21, 21),
            "both follow offset 21"
        );
        tracker.settled(twenty_one);
        tracker.settled(five);
        for record in &rewound[1..16] {
            tracker.settled(*record);
        }
        tracker.settled(before_rewind);
        assert_eq!(
            tracker.committable(),
            Some(22),
            "22 is the only record left unsettled"
        );
        tracker.settled(rewound[17]);
        assert_eq!(tracker.committable(), Some(23));
        assert_eq!(tracker.oldest_unsettled(), None);
        assert_eq!(
            tracker.parked.lock().unwrap().len(),
            0,
            "nothing left parked"
        );
        assert_eq!(tracker.take_commit(), Some(23));
    }

    /// After a rewind, a record can be pending twice with the same `follows` and the same
    /// offset (its first delivery and the rewound one): each is a step of the watermark's path,
    /// and neither may be lost.
    #[test]
    fn a_record_pending_twice_after_a_rewind_is_waited_for_twice() {
        let tracker: PartitionTracker = PartitionTracker::new();
        let first = receive_all(&tracker, 10..=11);
        let again = receive_all(&tracker, 10..=11);
        assert_eq!(
            (first[1], again[1]),
            (
                TrackedOffset {
                    offset: 11,
                    follows: 11
                },
                TrackedOffset {
                    offset: 11,
                    follows: 11
                }
            )
        );
        tracker.settled(first[1]);
        tracker.settled(again[1]);
        tracker.settled(first[0]);
        tracker.settled(again[0]);
        assert_eq!(tracker.committable(), Some(12), "every record settled");
        let twelve = tracker.received(12);
        tracker.settled(twelve);
        assert_eq!(tracker.committable(), Some(13));
        assert_eq!(tracker.open(), 0);
    }

    /// Records settled in order behind an unsettled one (a dead letter being written) make one
    /// parked run, whatever their number; they still count one each.
    #[test]
    fn records_settled_in_order_behind_a_slow_one_park_as_one_run() {
        let tracker: PartitionTracker = PartitionTracker::new();
        let records = receive_all(&tracker, 0..100);
        for record in &records[1..] {
            assert!(!tracker.settled(*record));
        }
        assert_eq!(tracker.parked.lock().unwrap().len(), 1, "one run");
        assert_eq!(tracker.open(), 100, "the slow one and the 99 behind it");
        assert_eq!(tracker.committable(), Some(0));
        assert!(tracker.settled(records[0]));
        assert_eq!(tracker.committable(), Some(100));
        assert_eq!(tracker.open(), 0);
        assert_eq!(tracker.parked.lock().unwrap().len(), 0);
    }

    /// Property: with rewinds to earlier offsets while records are pending, in any settle
    /// order, the watermark ends at the offset after the last record handed out, with nothing
    /// left parked or counted. Seeded random deliveries and orders.
    #[test]
    fn any_settle_order_after_rewinds_ends_with_everything_committable() {
        let mut random = XorShift(0x2545_F491_4F6C_DD1D);
        for round in 0..2_000 {
            let tracker: PartitionTracker = PartitionTracker::new();
            let mut records = Vec::new();
            let mut next = random.below(5) as i64;
            for _ in 0..1 + random.below(3) {
                let end = next + 1 + random.below(12) as i64;
                records.extend(receive_all(&tracker, next..end));
                // Back to an earlier offset, or on (a gap now and then).
                next = if random.below(3) == 0 {
                    end + random.below(3) as i64
                } else {
                    end - 1 - random.below((end - next) as u64) as i64
                };
            }
            let last = records.last().expect("records").offset;
            let mut order: Vec<usize> = (0..records.len()).collect();
            for i in (1..order.len()).rev() {
                order.swap(i, random.below(i as u64 + 1) as usize);
            }
            if round % 2 == 0 {
                // Mostly in order instead, so that runs form.
                let mut keyed: Vec<(usize, usize)> = (0..records.len())
                    .map(|index| (index + random.below(4) as usize, index))
                    .collect();
                keyed.sort_unstable();
                order = keyed.into_iter().map(|(_, index)| index).collect();
            }
            for index in order {
                tracker.settled(records[index]);
                assert_parked_count_exact(&tracker);
            }
            assert_eq!(
                tracker.committable(),
                Some(last + 1),
                "round {round}: {records:?}"
            );
            assert_eq!(tracker.open(), 0, "round {round}: {records:?}");
            assert_eq!(tracker.parked.lock().unwrap().len(), 0, "round {round}");
        }
    }

    /// After a rewind the same offset can be pending twice, each with its original: two
    /// dead-lettered records take one each, and an acked one drops its own.
    #[test]
    fn a_rewind_keeps_one_attachment_per_pending_record() {
        let tracker = PartitionTracker::with_attachments();
        let first = hand_out(&tracker, 20, "first delivery of 20");
        let nineteen = hand_out(&tracker, 19, "19");
        let again = hand_out(&tracker, 20, "second delivery of 20");
        assert!(tracker.take_attachment(20).is_some());
        tracker.settled_after_taking_attachment(again);
        assert!(
            tracker.take_attachment(20).is_some(),
            "the other delivery of 20 still has its original"
        );
        tracker.settled_after_taking_attachment(first);
        assert_eq!(tracker.take_attachment(20), None);
        tracker.settled(nineteen);
        assert_eq!(tracker.take_attachment(19), None, "settling dropped it");
        assert_eq!(tracker.committable(), Some(21));
        assert_eq!(tracker.oldest_unsettled(), None);
        assert!(
            tracker
                .attachments
                .as_ref()
                .unwrap()
                .lock()
                .unwrap()
                .is_empty(),
            "nothing kept"
        );
    }

    /// A failed commit is sent again, but never lower than an offset already sent: after a
    /// rewind the watermark falls back, and committing it would move the group backwards.
    #[test]
    fn commits_never_move_backwards_after_a_failed_commit_and_a_rewind() {
        let tracker: PartitionTracker = PartitionTracker::new();
        for record in receive_all(&tracker, 100..150) {
            tracker.settled(record);
        }
        assert_eq!(tracker.take_commit(), Some(150));
        tracker.commit_failed(150);
        let rewound = tracker.received(50);
        tracker.settled(rewound);
        assert_eq!(
            tracker.committable(),
            Some(51),
            "the rewind moved the watermark back"
        );
        assert_eq!(
            tracker.take_commit(),
            Some(150),
            "the failed commit is sent again, not 51"
        );
        assert_eq!(tracker.take_commit(), None, "nothing ahead of 150 yet");
        for record in receive_all(&tracker, 51..160) {
            tracker.settled(record);
        }
        assert_eq!(tracker.take_commit(), Some(160));
    }

    /// The last commit of an assignment covers the settled watermark even while a periodic
    /// commit of the same offset is still in flight: that one may yet fail.
    #[test]
    fn the_final_commit_is_sent_even_when_a_commit_of_it_is_in_flight() {
        let tracker: PartitionTracker = PartitionTracker::new();
        for record in receive_all(&tracker, 0..10) {
            tracker.settled(record);
        }
        assert_eq!(
            tracker.take_commit(),
            Some(10),
            "an asynchronous commit, in flight"
        );
        assert_eq!(tracker.take_commit(), None);
        assert_eq!(tracker.take_final_commit(), Some(10));
        let fresh: PartitionTracker = PartitionTracker::new();
        assert_eq!(
            fresh.take_final_commit(),
            None,
            "nothing received, nothing to commit"
        );
    }

    #[test]
    fn revoked_tracker_ignores_late_settles() {
        let tracker: PartitionTracker = PartitionTracker::new();
        let record = tracker.received(0);
        tracker.revoke();
        assert!(!tracker.settled(record));
        assert_eq!(tracker.take_commit(), None);
    }

    /// Many threads settle records in random order while an observer checks, at every read,
    /// that the watermark never passes a record that is not settled yet.
    #[test]
    fn concurrent_settles_never_pass_an_unsettled_offset() {
        const RECORDS: usize = 2_000;
        const SETTLERS: usize = 4;
        for round in 0..40u64 {
            let tracker: Arc<PartitionTracker> = Arc::new(PartitionTracker::new());
            let mut random = XorShift(round * 7919 + 1);
            // Offsets with random gaps, as compaction leaves them.
            let mut offset = random.below(5) as i64;
            let mut records = Vec::with_capacity(RECORDS);
            for _ in 0..RECORDS {
                records.push(tracker.received(offset));
                offset += 1 + (random.below(10) == 0) as i64 * random.below(4) as i64;
            }
            let settled: Arc<Vec<AtomicBool>> =
                Arc::new((0..RECORDS).map(|_| AtomicBool::new(false)).collect());
            let mut order: Vec<usize> = (0..RECORDS).collect();
            // Mostly in order, with local shuffles and some far jumps.
            for index in 0..RECORDS {
                let swap_with = if random.below(20) == 0 {
                    random.below(RECORDS as u64) as usize
                } else {
                    (index + random.below(4) as usize).min(RECORDS - 1)
                };
                order.swap(index, swap_with);
            }
            let done = Arc::new(AtomicBool::new(false));
            let observer = {
                let (tracker, settled, done, records) = (
                    tracker.clone(),
                    settled.clone(),
                    done.clone(),
                    records.clone(),
                );
                std::thread::spawn(move || {
                    let mut checks = 0u64;
                    loop {
                        let finished = done.load(Ordering::SeqCst);
                        let watermark = tracker.committable().expect("records were received");
                        for (index, record) in records
                            .iter()
                            .enumerate()
                            .take_while(|(_, record)| record.offset < watermark)
                        {
                            assert!(
                                settled[index].load(Ordering::SeqCst),
                                "watermark {watermark} passed unsettled offset {}",
                                record.offset
                            );
                        }
                        checks += 1;
                        if finished {
                            return checks;
                        }
                    }
                })
            };
            let chunks: Vec<Vec<usize>> = (0..SETTLERS)
                .map(|settler| {
                    order
                        .iter()
                        .copied()
                        .skip(settler)
                        .step_by(SETTLERS)
                        .collect()
                })
                .collect();
            let settlers: Vec<_> = chunks
                .into_iter()
                .map(|chunk| {
                    let (tracker, settled, records) =
                        (tracker.clone(), settled.clone(), records.clone());
                    std::thread::spawn(move || {
                        for index in chunk {
                            // Marked before the tracker hears of it, as a handler settles before the ack.
                            settled[index].store(true, Ordering::SeqCst);
                            tracker.settled(records[index]);
                        }
                    })
                })
                .collect();
            for settler in settlers {
                settler.join().expect("settler");
            }
            done.store(true, Ordering::SeqCst);
            assert!(observer.join().expect("observer") > 0);
            let last = records.last().expect("records");
            assert_eq!(
                tracker.committable(),
                Some(last.offset + 1),
                "round {round}: every record settled, so the watermark is past the last"
            );
            assert_eq!(tracker.oldest_unsettled(), None);
            assert_eq!(
                tracker.parked.lock().unwrap().len(),
                0,
                "nothing left parked"
            );
        }
    }

    struct XorShift(u64);

    impl XorShift {
        fn below(&mut self, bound: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % bound
        }
    }
}
