//! One assigned partition's fetch queue, forwarded into the channel's fetch queue
//! (`fetch_queue.rs`) for as long as the partition is assigned.

use std::ffi::CStr;
use std::ptr::NonNull;

use rdkafka::bindings as native;

use super::fetch_queue::FetchQueue;

/// A partition's fetch queue, joined to the channel's fetch queue.
pub(crate) struct PartitionQueue {
    pub(crate) partition: i32,
    queue: NonNull<native::rd_kafka_queue_t>,
}

// SAFETY: librdkafka queues are internally locked and may be used from any thread; the handle is
// only a reference-counted pointer to one.
unsafe impl Send for PartitionQueue {}

impl PartitionQueue {
    /// Forwards the partition's queue into `into`, before the partition is assigned so that
    /// none of its records reach the main queue.
    ///
    /// # Safety
    /// `client` must be a live consumer handle that outlives the returned queue.
    pub(crate) unsafe fn join(
        client: *mut native::rd_kafka_t,
        topic: &CStr,
        partition: i32,
        into: &FetchQueue,
    ) -> Option<Self> {
        // SAFETY: the caller guarantees `client` is live; `topic` is a valid C string.
        let queue = NonNull::new(unsafe {
            native::rd_kafka_queue_get_partition(client, topic.as_ptr(), partition)
        })?;
        // SAFETY: both handles are live. A forward made by the application is one librdkafka
        // keeps: it does not forward the queue to the main queue when fetching starts.
        unsafe { native::rd_kafka_queue_forward(queue.as_ptr(), into.as_ptr()) };
        Some(Self { partition, queue })
    }

    /// Hands the partition's queue back to the consumer's main queue, so that records of a
    /// later assignment that is not joined again are still read.
    ///
    /// # Safety
    /// `client` must be the live consumer handle the queue was taken from.
    pub(crate) unsafe fn unjoin(&self, client: *mut native::rd_kafka_t) {
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
        // SAFETY: the handle is live; destroying it releases our reference to the queue.
        unsafe { native::rd_kafka_queue_destroy(self.queue.as_ptr()) }
    }
}
