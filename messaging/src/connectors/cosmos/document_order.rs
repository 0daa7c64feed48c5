//! Writes of one document in record order, one at a time: the last record of an id wins, as it
//! would with a single writer, while writes of different documents run side by side.
//!
//! Each write takes its turn when it is enqueued (in the order the processors hand outputs
//! over), and waits for the turn before it, if the same document has one still running.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rustc_hash::FxBuildHasher;
use tokio::sync::oneshot;

#[derive(Default)]
pub(crate) struct DocumentOrder {
    lines: Mutex<Lines>,
    next: AtomicU64,
}

/// The writes in flight, by document. A signal is made only when a document has two writes in
/// flight: most writes meet no earlier one and cost a map entry, not an allocation.
#[derive(Default)]
struct Lines {
    /// The newest turn of each document with a write in flight. The keys are hashes already.
    newest: HashMap<u64, u64, FxBuildHasher>,
    /// The signal a turn sends its successor when it ends, by the turn's document and number.
    successors: HashMap<(u64, u64), oneshot::Sender<()>, FxBuildHasher>,
}

/// A write's place in its document's line. Dropping it (the write ended, however) lets the
/// next write of the document go.
pub(crate) struct Turn {
    order: Arc<DocumentOrder>,
    identity: u64,
    number: u64,
    /// The end of the turn before this one, if it was still running when this one was taken.
    before: Option<oneshot::Receiver<()>>,
}

impl DocumentOrder {
    /// `identity`: a hash of the document's partition key and id (see `Write::identity`).
    pub(crate) fn take_turn(self: &Arc<Self>, identity: u64) -> Turn {
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        let mut lines = self.lines.lock().expect("document order");
        let before = lines.newest.insert(identity, number).map(|previous| {
            let (ended, before) = oneshot::channel();
            lines.successors.insert((identity, previous), ended);
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
        // Dropping the signal wakes the successor just as sending would.
        lines.successors.remove(&(self.identity, self.number));
        if lines.newest.get(&self.identity) == Some(&self.number) {
            lines.newest.remove(&self.identity);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_document_waits_for_its_previous_write_and_others_do_not() {
        let order = Arc::new(DocumentOrder::default());
        let first = order.take_turn(1);
        let mut second = order.take_turn(1);
        let mut other = order.take_turn(2);
        other.wait().await;
        let waiting = tokio::spawn(async move {
            second.wait().await;
            second
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(first);
        let second = waiting.await.unwrap();
        drop(second);
        drop(other);
        let lines = order.lines.lock().unwrap();
        assert!(lines.newest.is_empty() && lines.successors.is_empty());
    }

    #[tokio::test]
    async fn three_writes_of_a_document_go_one_after_another_in_turn_order() {
        let order = Arc::new(DocumentOrder::default());
        let first = order.take_turn(7);
        let second = order.take_turn(7);
        let third = order.take_turn(7);
        let waiting = |mut turn: Turn| {
            tokio::spawn(async move {
                turn.wait().await;
                turn
            })
        };
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
        let lines = order.lines.lock().unwrap();
        assert!(lines.newest.is_empty() && lines.successors.is_empty());
    }
}
