//! The channel's own fetch queue: every assigned partition's fetched records, read in batches.
//!
//! By default librdkafka forwards every partition's fetched records into the consumer's main
//! queue, and rdkafka hands them out one poll at a time. Each such poll reads the clock three
//! times, takes the partition lock to move the application position, and allocates a shared
//! event handle: about a quarter of the instructions a small record costs. Forwarded into a
//! queue of the channel's own instead, the records can be drained with
//! `rd_kafka_consume_batch_queue`, which pays those costs once per batch. The main queue then
//! carries only rebalances, errors and commit results, and the consumer loop keeps polling it.
//!
//! One queue for all the partitions, not one per partition: librdkafka decides whether to fetch
//! more for a partition by the length and size of the queue its records end up in, so with one
//! shared queue `queued.min.messages` and `queued.max.messages.kbytes` bound the channel's whole
//! prefetch, as they bound a plain consumer's. Queues of their own would each get the whole
//! allowance: a consumer of 100 partitions could buffer 100 times as much.
//!
//! rdkafka has no safe API for batch reads, so this file, `partition_queue.rs`,
//! `queued_record.rs` and the two calls in `joined_queues.rs` are the library's only `unsafe`
//! code, each block with the reason it is sound.

use std::ffi::c_void;
use std::ptr::{self, NonNull};

use futures_util::task::AtomicWaker;
use rdkafka::bindings as native;

use super::queued_record::QueuedRecord;

/// The most records one batch read takes. Larger batches save nothing more (the per-call costs
/// are already small next to a record's), and a handler that never waits answers a rebalance
/// only between batches.
pub(crate) const MAX_BATCH: usize = 64;

/// A queue of the channel's own, into which its partitions' fetch queues are forwarded.
pub(crate) struct FetchQueue {
    queue: NonNull<native::rd_kafka_queue_t>,
}

// SAFETY: librdkafka queues are internally locked and may be used from any thread; the handle is
// only a reference-counted pointer to one.
unsafe impl Send for FetchQueue {}
// SAFETY: as above; every call made through `&self` is thread-safe in librdkafka.
unsafe impl Sync for FetchQueue {}

impl FetchQueue {
    /// A new, empty queue; `waker` is woken whenever it turns non-empty.
    ///
    /// # Safety
    /// `client` must be a live client handle that outlives the returned queue, and `waker` must
    /// stay at its address until the returned queue is dropped.
    pub(crate) unsafe fn new(client: *mut native::rd_kafka_t, waker: &AtomicWaker) -> Option<Self> {
        // SAFETY: the caller guarantees `client` is live.
        let queue = NonNull::new(unsafe { native::rd_kafka_queue_new(client) })?;
        // SAFETY: `queue` is the handle just made; the caller keeps `waker` in place.
        unsafe {
            native::rd_kafka_queue_cb_event_enable(
                queue.as_ptr(),
                Some(wake),
                waker as *const AtomicWaker as *mut c_void,
            );
        }
        Some(Self { queue })
    }

    pub(crate) fn as_ptr(&self) -> *mut native::rd_kafka_queue_t {
        self.queue.as_ptr()
    }

    /// Moves up to `limit` (at most [`MAX_BATCH`]) ready records into `batch`, without waiting.
    /// Returns how many. librdkafka leaves out what a pause or a revoke made outdated.
    pub(crate) fn take_batch(&self, batch: &mut Vec<QueuedRecord>, limit: usize) -> usize {
        let mut taken: [*mut native::rd_kafka_message_t; MAX_BATCH] = [ptr::null_mut(); MAX_BATCH];
        // SAFETY: the queue handle is live while `self` is; `taken` has room for MAX_BATCH pointers.
        let count = unsafe {
            native::rd_kafka_consume_batch_queue(
                self.queue.as_ptr(),
                0,
                taken.as_mut_ptr(),
                limit.min(MAX_BATCH),
            )
        };
        let count = usize::try_from(count).unwrap_or(0);
        // SAFETY: librdkafka handed over `count` messages, each owned by us until destroyed.
        batch.extend(
            taken[..count]
                .iter()
                .filter_map(|&message| unsafe { QueuedRecord::from_native(message) }),
        );
        count
    }

    pub(crate) fn is_empty(&self) -> bool {
        // SAFETY: the queue handle is live while `self` is.
        unsafe { native::rd_kafka_queue_length(self.queue.as_ptr()) == 0 }
    }
}

impl Drop for FetchQueue {
    fn drop(&mut self) {
        // SAFETY: the handle is live; destroying it releases our reference to the queue. The
        // wake-up callback's waker lives in the consumer's context, which outlives the client.
        unsafe { native::rd_kafka_queue_destroy(self.queue.as_ptr()) }
    }
}

/// Called by a librdkafka thread when the fetch queue turns non-empty.
unsafe extern "C" fn wake(_client: *mut native::rd_kafka_t, waker: *mut c_void) {
    // SAFETY: `new` registered a pointer to an `AtomicWaker` that outlives the queue.
    unsafe { (*(waker as *const AtomicWaker)).wake() }
}
