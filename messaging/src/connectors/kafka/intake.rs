//! Waking the consumer loop's intake when a partition it stopped taking from can take more.
//!
//! The loop takes no more records of a partition while `max-buffered-records` of them are
//! unsettled, or eight times that are open (taken and not yet committable). What settles them
//! may happen outside the loop: a processor's output delivered, a message settled by user
//! code. Such a settle wakes the loop through here, so a partition is never left waiting with
//! records in its queue.

use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::task::AtomicWaker;

#[derive(Default)]
pub(crate) struct Intake {
    /// Set by the loop when it left a partition at its cap.
    blocked: AtomicBool,
    waker: AtomicWaker,
}

impl Intake {
    /// The loop is about to wait with a partition at its cap.
    pub(crate) fn blocked(&self, waker: &std::task::Waker) {
        self.waker.register(waker);
        // Sequentially consistent, with the tracker's counts: either the loop's look after
        // this sees a settle's effect, or that settle sees the flag.
        self.blocked.store(true, Ordering::SeqCst);
    }

    /// A record settled: wake the loop if it waits for room.
    #[inline]
    pub(crate) fn settled(&self) {
        if self.blocked.load(Ordering::SeqCst) && self.blocked.swap(false, Ordering::SeqCst) {
            self.waker.wake();
        }
    }
}
