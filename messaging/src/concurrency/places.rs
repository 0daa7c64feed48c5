//! The places among an incoming channel's `max-concurrency`: a record holds one while its
//! handler runs, and gives it back while it waits for its next attempt.
//!
//! Only the channel's consumer loop task takes and gives back places: the loop itself and the
//! record futures it polls, none of which runs on a task of its own (the places belong to the
//! loop's record job, which it lends to those futures only). The counts are therefore plain
//! loads and stores, without a locked instruction. tokio's semaphore, used before, took a lock
//! to give back every permit and an owned permit a reference count: 34 ns a record on the
//! development machine (BENCHMARKS.md, "The consumer loop's locked instructions").

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// The places of one channel: owned by its consumer loop's record job, never behind an `Arc`
/// or in state other tasks share (its counts would lose updates there).
#[derive(Debug)]
pub(crate) struct Places {
    max_concurrency: usize,
    free: AtomicUsize,
    /// Retries waiting for a place: a place given back goes to one of them before any new
    /// record, so records waiting to retry are never starved by a backlog. (Among retries,
    /// one whose backoff just ended may take a free place before one already woken for it:
    /// each keeps its ordering slot, so that reorders nothing that must stay in order.)
    retries_waiting: AtomicUsize,
    given_back: Notify,
}

/// A place held; given back when dropped.
#[derive(Debug)]
#[must_use = "a place is given back when dropped"]
pub(crate) struct Place<'a> {
    places: &'a Places,
}

impl Places {
    pub(crate) fn new(max_concurrency: usize) -> Self {
        Self {
            max_concurrency,
            free: AtomicUsize::new(max_concurrency),
            retries_waiting: AtomicUsize::new(0),
            given_back: Notify::new(),
        }
    }

    /// A place for a new record, if one is free and no retry waits for it.
    #[inline]
    pub(crate) fn try_take(&self) -> Option<Place<'_>> {
        if !self.has_room_for_new() {
            return None;
        }
        self.take_free();
        Some(Place { places: self })
    }

    /// Whether a new record could take a place now.
    #[inline]
    pub(crate) fn has_room_for_new(&self) -> bool {
        self.free.load(Ordering::Relaxed) > 0 && self.retries_waiting.load(Ordering::Relaxed) == 0
    }

    /// A place for a record's next attempt: waits until one is free, ahead of new records.
    pub(crate) async fn take_for_retry(&self) -> Place<'_> {
        let _queued = RetryQueued::new(self);
        loop {
            // Made before the look at the count: a place given back in between leaves a
            // permit in `given_back`, so the wait below ends at once.
            let given_back = self.given_back.notified();
            if self.free.load(Ordering::Relaxed) > 0 {
                self.take_free();
                return Place { places: self };
            }
            given_back.await;
        }
    }

    /// Whether every place is free and no retry waits, as it must be once the loop and its
    /// records' futures are gone.
    pub(crate) fn all_given_back(&self) -> bool {
        self.free.load(Ordering::Relaxed) == self.max_concurrency
            && self.retries_waiting.load(Ordering::Relaxed) == 0
    }

    fn take_free(&self) {
        let free = self.free.load(Ordering::Relaxed);
        debug_assert!(free > 0, "a place taken that was not free");
        self.free.store(free - 1, Ordering::Relaxed);
    }

    fn give_back(&self) {
        self.free
            .store(self.free.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        if self.retries_waiting.load(Ordering::Relaxed) > 0 {
            // One wake-up per place; a waiter dropped before it took the place hands it on to
            // the next (tokio's `Notified` does so when dropped). With no waiter registered
            // yet (the woken one not polled again), `Notify` keeps it for the next wait, which
            // then only looks at the count once more.
            self.given_back.notify_one();
        }
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.places.give_back();
    }
}

/// A retry counted as waiting for a place, for as long as this lives (its wait may end by
/// its future being dropped: a revoke, a shutdown).
struct RetryQueued<'a> {
    places: &'a Places,
}

impl<'a> RetryQueued<'a> {
    fn new(places: &'a Places) -> Self {
        let waiting = &places.retries_waiting;
        waiting.store(waiting.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        Self { places }
    }
}

impl Drop for RetryQueued<'_> {
    fn drop(&mut self) {
        let waiting = &self.places.retries_waiting;
        waiting.store(waiting.load(Ordering::Relaxed) - 1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::{pin, Pin};
    use std::task::{Context, Poll};

    use futures_util::task::noop_waker;

    use super::*;

    /// Polls once, as the loop polls a record's future; nothing needs waking here.
    fn poll<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
        future.poll(&mut Context::from_waker(&noop_waker()))
    }

    #[test]
    fn new_records_take_places_up_to_the_limit_and_get_them_back_when_dropped() {
        let places = Places::new(2);
        let first = places.try_take().expect("a first place");
        let second = places.try_take().expect("a second place");
        assert!(places.try_take().is_none(), "two places only");
        drop(first);
        let third = places.try_take().expect("the place given back");
        drop((second, third));
        assert!(places.has_room_for_new());
    }

    #[test]
    fn a_waiting_retry_gets_the_place_given_back_before_any_new_record() {
        let places = Places::new(1);
        let running = places.try_take().expect("the one place");
        let mut retry = pin!(places.take_for_retry());
        assert!(poll(retry.as_mut()).is_pending());
        drop(running);
        assert!(
            places.try_take().is_none(),
            "the place given back is the waiting retry's"
        );
        let Poll::Ready(retry_place) = poll(retry.as_mut()) else {
            panic!("the retry did not get the place given back");
        };
        assert!(places.try_take().is_none(), "the retry holds the place");
        drop(retry_place);
        assert!(places.try_take().is_some(), "free again for new records");
    }

    #[test]
    fn a_retry_woken_for_a_place_and_then_dropped_hands_it_to_the_next_waiting_retry() {
        let places = Places::new(1);
        let running = places.try_take().expect("the one place");
        let mut second = Box::pin(places.take_for_retry());
        {
            let mut first = pin!(places.take_for_retry());
            assert!(poll(first.as_mut()).is_pending());
            assert!(poll(second.as_mut()).is_pending());
            // Given back while both wait: the wake-up goes to the first, which is then
            // dropped (its partition revoked) without taking the place.
            drop(running);
        }
        assert!(
            places.try_take().is_none(),
            "the second retry still waits for the place"
        );
        let Poll::Ready(place) = poll(second.as_mut()) else {
            panic!("the second retry did not get the place");
        };
        drop(place);
        drop(second);
        assert!(places.all_given_back());
    }

    #[test]
    fn two_places_given_back_go_to_two_waiting_retries() {
        let places = Places::new(2);
        let running = [places.try_take(), places.try_take()].map(|place| place.expect("a place"));
        let mut first = Box::pin(places.take_for_retry());
        let mut second = Box::pin(places.take_for_retry());
        assert!(poll(first.as_mut()).is_pending());
        assert!(poll(second.as_mut()).is_pending());
        drop(running);
        let (Poll::Ready(first_place), Poll::Ready(second_place)) =
            (poll(first.as_mut()), poll(second.as_mut()))
        else {
            panic!("each waiting retry gets one of the two places");
        };
        assert!(places.try_take().is_none());
        drop((first_place, second_place, first, second));
        assert!(places.all_given_back());
    }

    #[test]
    fn a_retry_that_stops_waiting_leaves_the_place_to_new_records() {
        let places = Places::new(1);
        let running = places.try_take().expect("the one place");
        {
            let mut retry = pin!(places.take_for_retry());
            assert!(poll(retry.as_mut()).is_pending());
        }
        drop(running);
        assert!(places.try_take().is_some());
    }
}
