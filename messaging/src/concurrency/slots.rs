//! The records a consumer loop holds but has not started, and the ordering slots of the ones
//! it has: a record starts only once it holds its slot (its partition, or its key), so two
//! records of one slot never run at once and each slot's records start in the order they came.

use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};

use super::Ordering;

/// What a record holds while it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Slot {
    Partition(i32),
    /// A hash of the key: two keys that collide are only ordered together, never run at once.
    Key(u64),
}

impl Ordering {
    /// The slot a record of `partition` with `key` holds; `None` when it need hold none
    /// (unordered, or one record at a time anyway). `retries`: whether a record can wait for
    /// its next attempt, giving its place in flight to the next record meanwhile.
    pub(crate) fn slot(
        self,
        concurrency: usize,
        retries: bool,
        partition: i32,
        key: Option<&[u8]>,
    ) -> Option<Slot> {
        if concurrency <= 1 && !retries {
            // One record at a time, taken in offset order: every order holds already.
            return None;
        }
        match (self, key) {
            (Ordering::Unordered, _) => None,
            (Ordering::Key, Some(key)) => {
                let mut hasher = DefaultHasher::new();
                key.hash(&mut hasher);
                Some(Slot::Key(hasher.finish()))
            }
            (Ordering::Key | Ordering::Partition, _) => Some(Slot::Partition(partition)),
        }
    }
}

/// Records waiting to start: `ready` ones hold their slot and wait only for a free place among
/// the records in flight; `blocked` ones wait, in order, behind their slot's holder.
pub(crate) struct Slots<T> {
    ready: VecDeque<(Option<Slot>, T)>,
    blocked: HashMap<Slot, VecDeque<T>>,
    /// Blocked records, all slots together.
    blocked_count: usize,
    /// Slots held by a record in flight or a ready one.
    held: HashSet<Slot>,
}

impl<T> Slots<T> {
    pub(crate) fn new() -> Self {
        Self {
            ready: VecDeque::new(),
            blocked: HashMap::new(),
            blocked_count: 0,
            held: HashSet::new(),
        }
    }

    /// Takes in a record, after every record taken in before it.
    pub(crate) fn admit(&mut self, slot: Option<Slot>, record: T) {
        let Some(slot) = slot else {
            self.ready.push_back((None, record));
            return;
        };
        if self.held.insert(slot) {
            self.ready.push_back((Some(slot), record));
        } else {
            self.blocked.entry(slot).or_default().push_back(record);
            self.blocked_count += 1;
        }
    }

    /// The next record that may start, holding its slot until [`release`](Self::release).
    pub(crate) fn next_ready(&mut self) -> Option<(Option<Slot>, T)> {
        self.ready.pop_front()
    }

    pub(crate) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// A record holding `slot` finished (or will not run): the slot's next record, if any,
    /// becomes ready; otherwise the slot is free.
    pub(crate) fn release(&mut self, slot: Option<Slot>) {
        let Some(slot) = slot else {
            return;
        };
        if let Entry::Occupied(mut waiting) = self.blocked.entry(slot) {
            let next = waiting
                .get_mut()
                .pop_front()
                .expect("no empty queue is kept");
            if waiting.get().is_empty() {
                waiting.remove();
            }
            self.blocked_count -= 1;
            self.ready.push_back((Some(slot), next));
            return;
        }
        self.held.remove(&slot);
    }

    /// Empties everything and returns the records (they will not run); slots held by records
    /// in flight are forgotten too, since nothing waits behind them any more.
    pub(crate) fn clear(&mut self) -> Vec<T> {
        let mut dropped: Vec<T> = self.ready.drain(..).map(|(_, record)| record).collect();
        dropped.extend(self.blocked.drain().flat_map(|(_, records)| records));
        self.blocked_count = 0;
        self.held.clear();
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Option<Slot> {
        Ordering::Key.slot(8, false, 0, Some(name.as_bytes()))
    }

    #[test]
    fn one_record_at_a_time_needs_no_slot_unless_a_retry_can_let_another_run() {
        assert_eq!(
            Ordering::Partition.slot(1, true, 3, Some(b"k")),
            Some(Slot::Partition(3))
        );
        for ordering in [Ordering::Partition, Ordering::Key, Ordering::Unordered] {
            assert_eq!(ordering.slot(1, false, 3, Some(b"k")), None);
        }
    }

    #[test]
    fn records_without_a_key_are_ordered_by_partition() {
        assert_eq!(
            Ordering::Key.slot(8, false, 3, None),
            Some(Slot::Partition(3))
        );
        assert_eq!(
            Ordering::Partition.slot(8, false, 3, Some(b"k")),
            Some(Slot::Partition(3))
        );
        assert_eq!(Ordering::Unordered.slot(8, false, 3, Some(b"k")), None);
    }

    #[test]
    fn a_slot_runs_one_record_at_a_time_in_the_order_they_came() {
        let mut slots = Slots::new();
        slots.admit(key("a"), 1);
        slots.admit(key("b"), 2);
        slots.admit(key("a"), 3);
        slots.admit(key("a"), 4);
        assert_eq!(slots.next_ready(), Some((key("a"), 1)));
        assert_eq!(slots.next_ready(), Some((key("b"), 2)));
        assert_eq!(slots.next_ready(), None, "3 and 4 wait behind 1");
        slots.release(key("b"));
        assert_eq!(slots.next_ready(), None);
        slots.release(key("a"));
        assert_eq!(slots.next_ready(), Some((key("a"), 3)));
        slots.admit(key("b"), 5);
        assert_eq!(slots.next_ready(), Some((key("b"), 5)), "b was free again");
        slots.release(key("a"));
        assert_eq!(slots.next_ready(), Some((key("a"), 4)));
        slots.release(key("a"));
        slots.admit(key("a"), 6);
        assert_eq!(slots.next_ready(), Some((key("a"), 6)), "a was free again");
    }

    #[test]
    fn unordered_records_are_ready_at_once() {
        let mut slots = Slots::new();
        slots.admit(None, 1);
        slots.admit(None, 2);
        assert_eq!(slots.next_ready(), Some((None, 1)));
        assert_eq!(slots.next_ready(), Some((None, 2)));
    }

    #[test]
    fn clearing_frees_every_slot() {
        let mut slots = Slots::new();
        slots.admit(key("a"), 1);
        slots.admit(key("a"), 2);
        assert_eq!(slots.next_ready(), Some((key("a"), 1)));
        assert_eq!(slots.clear(), [2]);
        slots.admit(key("a"), 3);
        assert_eq!(slots.next_ready(), Some((key("a"), 3)));
    }
}
