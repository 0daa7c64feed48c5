//! Writes of one document in record order, one at a time: the last record of an id wins, as it
//! would with a single writer, while writes of different documents run side by side.
//!
//! Each write takes its turn when it is enqueued (in the order the processors hand outputs
//! over), and waits for the turn before it, if the same document has one still running.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustc_hash::FxBuildHasher;
use tokio::sync::oneshot;

#[derive(Default)]
pub(crate) struct DocumentOrder {
    lines: Mutex<Lines>,
}

/// The writes in flight, by document. A signal is made only when a document has two writes in
/// flight: most writes meet no earlier one and cost a map entry, not an allocation.
#[derive(Default)]
struct Lines {
    /// The newest turn of each document with a write in flight. The keys are hashes already.
    newest: HashMap<u64, u64, FxBuildHasher>,
    /// The signal a turn sends its successor when it ends, by the turn's number (unique across
    /// documents), with the successor's number.
    successors: HashMap<u64, (u64, oneshot::Sender<()>), FxBuildHasher>,
    /// The turn each waiting turn follows, by the waiting turn's number: the one it was taken
    /// behind, or, once that one was dropped before its turn came, the one before that.
    predecessors: HashMap<u64, u64, FxBuildHasher>,
    /// The next turn's number.
    next: u64,
}

/// A write's place in its document's line. Dropping it (the write ended, however) lets the
/// next write of the document go.
pub(crate) struct Turn {
    order: Arc<DocumentOrder>,
    identity: u64,
    number: u64,
    /// The predecessor's end, until this turn has waited for it.
    before: Option<oneshot::Receiver<()>>,
}

impl DocumentOrder {
    /// `identity`: a hash of the document's partition key and id (see `Write::identity`).
    pub(crate) fn take_turn(self: &Arc<Self>, identity: u64) -> Turn {
        let mut lines = self.lines.lock().expect("document order");
        let number = lines.next;
        lines.next += 1;
        let predecessor = lines.newest.insert(identity, number);
        let before = predecessor.map(|predecessor| {
            let (ended, before) = oneshot::channel();
            lines.successors.insert(predecessor, (number, ended));
            lines.predecessors.insert(number, predecessor);
            before
        });
        Turn {
            order: self.clone(),
            identity,
            number,
            before,
        }
    }
}

impl Turn {
    /// Waits until the previous write of the same document has ended.
    pub(crate) async fn wait(&mut self) {
        if let Some(before) = self.before.take() {
            // Either its signal or its drop: both mean it ended.
            let _ = before.await;
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut lines = self.order.lines.lock().expect("document order");
        let successor = lines.successors.remove(&self.number);
        // The predecessor's signal to this turn stays in the map until the predecessor ends.
        let predecessor_in_flight = lines
            .predecessors
            .remove(&self.number)
            .filter(|predecessor| lines.successors.contains_key(predecessor));
        let newest = lines.newest.get(&self.identity) == Some(&self.number);
        let wake = match predecessor_in_flight {
            // Dropped before its turn came (its task dropped at a runtime's end): the line
            // closes over it, so the next write still waits for the one still running, and
            // follows that one from now on (should it be dropped early too).
            Some(predecessor) => {
                match successor {
                    Some((next, signal)) => {
                        lines.successors.insert(predecessor, (next, signal));
                        lines.predecessors.insert(next, predecessor);
                    }
                    // Nobody behind it: the predecessor's signal to it goes too.
                    None => {
                        lines.successors.remove(&predecessor);
                    }
                }
                if newest {
                    lines.newest.insert(self.identity, predecessor);
                }
                None
            }
            None => {
                if newest {
                    lines.newest.remove(&self.identity);
                }
                successor.map(|(_, signal)| signal)
            }
        };
        drop(lines);
        // Dropping the signal wakes the successor as sending would; outside the lock, so the
        // wake never lengthens it.
        drop(wake);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The turn waiting for its predecessor in a task of its own; yields it back once its
    /// predecessor ended.
    fn waiting(mut turn: Turn) -> tokio::task::JoinHandle<Turn> {
        tokio::spawn(async move {
            turn.wait().await;
            turn
        })
    }

    /// Once every turn ended, nothing is left behind.
    fn assert_empty(order: &DocumentOrder) {
        let lines = order.lines.lock().unwrap();
        assert!(
            lines.newest.is_empty() && lines.successors.is_empty() && lines.predecessors.is_empty()
        );
    }

    #[tokio::test]
    async fn a_document_waits_for_its_previous_write_and_others_do_not() {
        let order = Arc::new(DocumentOrder::default());
        let first = order.take_turn(1);
        let second = order.take_turn(1);
        let mut other = order.take_turn(2);
        other.wait().await;
        let second_waits = waiting(second);
        tokio::task::yield_now().await;
        assert!(!second_waits.is_finished());
        drop(first);
        let second = second_waits.await.unwrap();
        drop(second);
        drop(other);
        assert_empty(&order);
    }

    #[tokio::test]
    async fn three_writes_of_a_document_go_one_after_another_in_turn_order() {
        let order = Arc::new(DocumentOrder::default());
        let first = order.take_turn(7);
        let second = order.take_turn(7);
        let third = order.take_turn(7);
        let (second, third) = (waiting(second), waiting(third));
        tokio::task::yield_now().await;
        assert!(!second.is_finished() && !third.is_finished());
        drop(first);
        let second = second.await.unwrap();
        tokio::task::yield_now().await;
        assert!(
            !third.is_finished(),
            "the third waits for the second, not the first"
        );
        drop(second);
        drop(third.await.unwrap());
        assert_empty(&order);
    }

    #[tokio::test]
    async fn a_turn_dropped_before_its_turn_came_leaves_the_line_whole() {
        let order = Arc::new(DocumentOrder::default());
        let running = order.take_turn(7);
        let dropped_early = order.take_turn(7);
        let next = order.take_turn(7);
        drop(dropped_early);
        let next_waits = waiting(next);
        tokio::task::yield_now().await;
        assert!(
            !next_waits.is_finished(),
            "the next waits for the one still running"
        );
        // The newest turn dropped early: a turn taken after it still waits for the running one.
        let running_too = order.take_turn(8);
        drop(order.take_turn(8));
        let later_waits = waiting(order.take_turn(8));
        tokio::task::yield_now().await;
        assert!(!later_waits.is_finished());
        drop(running);
        drop(running_too);
        drop(next_waits.await.unwrap());
        drop(later_waits.await.unwrap());
        assert_empty(&order);
    }

    #[tokio::test]
    async fn turns_dropped_one_after_another_before_their_turn_leave_the_line_whole() {
        for second_first in [true, false] {
            let order = Arc::new(DocumentOrder::default());
            let running = order.take_turn(7);
            let second = order.take_turn(7);
            let third = order.take_turn(7);
            let fourth = order.take_turn(7);
            // Once the second is gone the third follows the running one: its own drop must
            // not let the fourth go. Nor may the second's, after the third's.
            if second_first {
                drop(second);
                drop(third);
            } else {
                drop(third);
                drop(second);
            }
            let fourth_waits = waiting(fourth);
            tokio::task::yield_now().await;
            assert!(
                !fourth_waits.is_finished(),
                "the fourth waits for the one still running ({second_first})"
            );
            drop(running);
            drop(fourth_waits.await.unwrap());
            assert_empty(&order);
            // And with nobody behind them.
            let running = order.take_turn(7);
            let second = order.take_turn(7);
            let third = order.take_turn(7);
            drop(third);
            drop(second);
            drop(running);
            assert_empty(&order);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn writes_of_one_document_never_overlap_and_keep_their_order() {
        use std::sync::atomic::{AtomicBool, Ordering};
        const DOCUMENTS: u64 = 5;
        let order = Arc::new(DocumentOrder::default());
        let running: Arc<Vec<AtomicBool>> =
            Arc::new((0..DOCUMENTS).map(|_| AtomicBool::new(false)).collect());
        let applied: Arc<Mutex<Vec<Vec<usize>>>> =
            Arc::new(Mutex::new(vec![Vec::new(); DOCUMENTS as usize]));
        let mut writes = Vec::new();
        // Turns are taken in this order, as the sink takes them in enqueue order.
        for write in 0..2_000 {
            let document = (write * 7 % DOCUMENTS as usize) as u64;
            let mut turn = order.take_turn(document);
            let (running, applied) = (running.clone(), applied.clone());
            writes.push(tokio::spawn(async move {
                turn.wait().await;
                let slot = &running[document as usize];
                assert!(
                    !slot.swap(true, Ordering::SeqCst),
                    "two writes of one document at once"
                );
                tokio::task::yield_now().await;
                applied.lock().unwrap()[document as usize].push(write);
                slot.store(false, Ordering::SeqCst);
                drop(turn);
            }));
        }
        for write in writes {
            write.await.unwrap();
        }
        for line in applied.lock().unwrap().iter() {
            assert!(
                line.windows(2).all(|pair| pair[0] < pair[1]),
                "out of order"
            );
        }
        assert_empty(&order);
    }
}
