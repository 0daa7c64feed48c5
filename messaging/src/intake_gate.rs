//! A sink's hold on the channels that feed it: while Cosmos DB is down, the records its
//! processors would take in can only pile up, so the sink closes the gate and the consumer
//! loops stop taking records (and pause their partitions) until it opens again.
//!
//! The gate also says when the sink waits on purpose (a write backing off, or paused by an
//! outage): the feeding channels' age watch then does not take the wait for a stuck record.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;

/// Open unless the sink closed it. Cheap to clone: the sink and every feeding loop hold one.
#[derive(Clone, Default)]
pub(crate) struct IntakeGate {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    closed: AtomicBool,
    /// Writes the sink holds back on purpose now: backing off, or waiting out an outage.
    waiting_writes: AtomicUsize,
    /// Loops waiting for the gate to close or open.
    waiting: Mutex<Vec<Waker>>,
}

impl IntakeGate {
    /// Closes the gate, and wakes the feeding loops if it was open: one waiting for records
    /// pauses its assignment now, rather than when its next record comes (librdkafka would fetch
    /// meanwhile).
    #[cfg_attr(not(feature = "cosmos"), allow(dead_code))]
    pub(crate) fn close(&self) {
        self.set_closed(true);
    }

    #[cfg_attr(not(feature = "cosmos"), allow(dead_code))]
    pub(crate) fn open(&self) {
        self.set_closed(false);
    }

    /// Wakes the loops on a change only: the sink closes the gate again with every failed
    /// probe of an outage, which the loops need not hear of.
    fn set_closed(&self, closed: bool) {
        if self.inner.closed.swap(closed, Ordering::SeqCst) != closed {
            let waiting = std::mem::take(&mut *self.inner.waiting.lock().expect("gate wakers"));
            waiting.into_iter().for_each(Waker::wake);
        }
    }

    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }

    /// Whether the sink holds writes back on purpose: closed, or a write backs off.
    pub(crate) fn sink_waits(&self) -> bool {
        self.is_closed() || self.inner.waiting_writes.load(Ordering::SeqCst) > 0
    }

    /// Counts a write as waiting on purpose until the returned guard drops.
    #[cfg_attr(not(feature = "cosmos"), allow(dead_code))]
    pub(crate) fn write_waits(&self) -> WaitingWrite {
        self.inner.waiting_writes.fetch_add(1, Ordering::SeqCst);
        WaitingWrite(self.inner.clone())
    }

    /// Wakes `waker` when the gate closes or opens. Registered before the caller looks at the
    /// gate again, so a change in between is not missed.
    pub(crate) fn wake_on_change(&self, waker: &Waker) {
        let mut waiting = self.inner.waiting.lock().expect("gate wakers");
        if !waiting.iter().any(|known| known.will_wake(waker)) {
            waiting.push(waker.clone());
        }
    }
}

/// A write the sink holds back on purpose, while it lives.
pub(crate) struct WaitingWrite(Arc<Inner>);

impl Drop for WaitingWrite {
    fn drop(&mut self) {
        self.0.waiting_writes.fetch_sub(1, Ordering::SeqCst);
    }
}
