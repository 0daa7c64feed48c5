//! Writes of one document in record order, one at a time: the last record of an id wins, as it
//! would with a single writer, while writes of different documents run side by side.
//!
//! Each write takes its turn when it is enqueued (in the order the processors hand outputs
//! over), and waits for the turn before it, if the same document has one still running.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

#[derive(Default)]
pub(crate) struct DocumentOrder {
    /// The newest turn of each document with a write in flight: its number and the signal its
    /// end sends.
    latest: Mutex<HashMap<u64, (u64, oneshot::Receiver<()>)>>,
    next: std::sync::atomic::AtomicU64,
}

/// A write's place in its document's line. Dropping it (the write ended, however) lets the
/// next write of the document go.
pub(crate) struct Turn {
    order: Arc<DocumentOrder>,
    identity: u64,
    number: u64,
    /// The turn before this one, if it was still running when this one was taken.
    before: Option<oneshot::Receiver<()>>,
    _done: oneshot::Sender<()>,
}

impl DocumentOrder {
    /// `identity`: a hash of the document's partition key and id (see `Write::identity`).
    pub(crate) fn take_turn(self: &Arc<Self>, identity: u64) -> Turn {
        let number = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (done, ended) = oneshot::channel();
        let before = self
            .latest
            .lock()
            .expect("document order")
            .insert(identity, (number, ended))
            .map(|(_, before)| before);
        Turn {
            order: self.clone(),
            identity,
            number,
            before,
            _done: done,
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
        let mut latest = self.order.latest.lock().expect("document order");
        if latest
            .get(&self.identity)
            .is_some_and(|(number, _)| *number == self.number)
        {
            latest.remove(&self.identity);
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
        assert!(order.latest.lock().unwrap().is_empty());
    }
}
