//! One assigned partition's own fetch queue, read in batches.
//!
//! By default librdkafka forwards every partition's fetched records into the consumer's main
//! queue, and rdkafka hands them out one poll at a time. Each such poll reads the clock three
//! times, takes the partition lock to move the application position, and allocates a shared
//! event handle: about a quarter of the instructions a small record costs. Split off from the
//! main queue, a partition's queue can be drained with `rd_kafka_consume_batch_queue`, which
//! pays those costs once per batch. The main queue then carries only rebalances, errors and
//! commit results, and the consumer loop keeps polling it (DESIGN.md section 12).
//!
//! rdkafka has no safe API for batch reads, so this file, `queued_record.rs` and the one call in
//! `split_queues.rs` are the library's only `unsafe` code, each block with the reason it is
//! sound.

use std::ffi::{c_void, CStr};
use std::ptr::{self, NonNull};

use futures_util::task::AtomicWaker;
use rdkafka::bindings as native;

use super::queued_record::QueuedRecord;

/// The most records one batch read takes. Larger batches save nothing more (the per-call costs
/// are already small next to a record's), and a handler that never waits answers a rebalance
/// only between batches.
pub(crate) const MAX_BATCH: usize = 64;

/// A partition's fetch queue, split off the consumer's main queue for as long as it is held.
pub(crate) struct PartitionQueue {
    pub(crate) partition: i32,
    queue: NonNull<native::rd_kafka_queue_t>,
}

// SAFETY: librdkafka queues are internally locked and may be used from any thread; the handle is
// only a reference-counted pointer to one.
unsafe impl Send for PartitionQueue {}
// SAFETY: as above; every call made through `&self` is thread-safe in librdkafka.
unsafe impl Sync for PartitionQueue {}

impl PartitionQueue {
    /// Splits the partition's queue off the main queue, before the partition is assigned so
    /// that none of its records reach the main queue. `waker` is woken whenever the queue turns
    /// non-empty.
    ///
    /// # Safety
    /// `client` must be a live consumer handle that outlives the returned queue, and `waker` must
    /// stay at its address until the client is destroyed: the callback stays registered with
    /// librdkafka's queue after the returned handle is dropped (see `unsplit`).
    pub(crate) unsafe fn split(
        client: *mut native::rd_kafka_t,
        topic: &CStr,
        partition: i32,
        waker: &AtomicWaker,
    ) -> Option<Self> {
        // SAFETY: the caller guarantees `client` is live; `topic` is a valid C string.
        let queue = NonNull::new(unsafe {
            native::rd_kafka_queue_get_partition(client, topic.as_ptr(), partition)
        })?;
        // SAFETY: `queue` is the handle just obtained. Forwarding to nothing marks the queue as
        // the application's, so librdkafka does not re-forward it when fetching starts.
        unsafe {
            native::rd_kafka_queue_forward(queue.as_ptr(), ptr::null_mut());
            native::rd_kafka_queue_cb_event_enable(
                queue.as_ptr(),
                Some(wake),
                waker as *const AtomicWaker as *mut c_void,
            );
        }
        Some(Self { partition, queue })
    }

    /// Moves up to `limit` (at most [`MAX_BATCH`]) ready records into `batch`, without waiting.
    /// Returns how many.
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

    /// Hands the partition's queue back to the consumer's main queue: what it holds now moves
    /// there at once. The forward does not outlast the partition's assignment: librdkafka
    /// clears a partition's forwarding when the revoke stops its fetch, and leaves a queue the
    /// application once forwarded alone at the next assignment, so every assignment of a
    /// partition splits its queue again (`SplitQueues::split`; only a closing consumer, which
    /// reads nothing more, skips that). The wake-up callback stays: disabling it would act on
    /// the shared queue, switching off a newer split of the same partition.
    ///
    /// # Safety
    /// `client` must be the live consumer handle the queue was split from.
    pub(crate) unsafe fn unsplit(&self, client: *mut native::rd_kafka_t) {
        // SAFETY: the caller guarantees `client` is live; the handle it returns is released
        // right after forwarding (the forward keeps its own reference).
        unsafe {
            let main_queue = native::rd_kafka_queue_get_consumer(client);
            if !main_queue.is_null() {
                native::rd_kafka_queue_forward(self.queue.as_ptr(), main_queue);
                native::rd_kafka_queue_destroy(main_queue);
            }
        }
    }
}

impl Drop for PartitionQueue {
    fn drop(&mut self) {
        // SAFETY: the handle is live; destroying it releases our reference to the queue. The
        // wake-up callback's waker lives in the consumer's context, which outlives the client.
        unsafe { native::rd_kafka_queue_destroy(self.queue.as_ptr()) }
    }
}

/// Called by a librdkafka thread when a split queue turns non-empty.
unsafe extern "C" fn wake(_client: *mut native::rd_kafka_t, waker: *mut c_void) {
    // SAFETY: `split` registered a pointer to an `AtomicWaker` that outlives the queue.
    unsafe { (*(waker as *const AtomicWaker)).wake() }
}
