//! The channel's fetch queue and the assigned partitions' queues joined to it: joined at each
//! assignment, released at each revoke, read by the consumer loop.

use std::ffi::CString;
use std::sync::{Arc, Mutex};

use futures_util::task::AtomicWaker;
use rdkafka::bindings as native;
use rdkafka::TopicPartitionList;

use super::fetch_queue::FetchQueue;
use super::partition_queue::PartitionQueue;

/// The fetch queue, the partition queues joined to it, and whether the channel has closed them
/// for good.
#[derive(Default)]
struct Queues {
    /// Made at the first assignment, which is the first time the client is at hand.
    fetch: Option<Arc<FetchQueue>>,
    joined: Vec<PartitionQueue>,
    /// Set by [`JoinedQueues::release_all`]: a rebalance while the consumer closes joins
    /// nothing more, since every queue must be released before the client is destroyed.
    closed: bool,
}

pub(crate) struct JoinedQueues {
    /// `None` for a name librdkafka cannot take (a NUL byte): subscribing reports that.
    topic: Option<CString>,
    queues: Mutex<Queues>,
    /// Woken by librdkafka when the fetch queue turns non-empty. Lives in the consumer's
    /// context, which outlives every queue: they are released before the consumer closes.
    pub(crate) waker: AtomicWaker,
}

impl JoinedQueues {
    pub(crate) fn new(topic: &str) -> Self {
        Self {
            topic: CString::new(topic).ok(),
            queues: Mutex::new(Queues::default()),
            waker: AtomicWaker::new(),
        }
    }

    /// Joins the queues of partitions about to be assigned to the fetch queue. Called before
    /// the assignment starts fetching, so none of their records go to the main queue. A
    /// partition that cannot be joined (librdkafka does not know the topic yet) keeps using the
    /// main queue.
    pub(crate) fn join(&self, client: *mut native::rd_kafka_t, assigned: &TopicPartitionList) {
        let Some(topic) = &self.topic else { return };
        let mut queues = self.queues.lock().expect("joined queues lock");
        if queues.closed {
            return;
        }
        if queues.fetch.is_none() {
            // SAFETY: `client` is the live consumer calling our rebalance callback; the waker is
            // ours, and the queue is released (`release_all`) before the consumer is dropped.
            queues.fetch = unsafe { FetchQueue::new(client, &self.waker) }.map(Arc::new);
        }
        let Some(fetch) = queues.fetch.clone() else {
            tracing::debug!("no fetch queue; records come through the main queue");
            return;
        };
        for element in assigned.elements() {
            let partition = element.partition();
            queues.joined.retain(|queue| queue.partition != partition);
            // SAFETY: `client` is the live consumer calling our rebalance callback, and every
            // queue is released (`release_all`) before the consumer is dropped.
            match unsafe { PartitionQueue::join(client, topic, partition, &fetch) } {
                Some(queue) => queues.joined.push(queue),
                None => tracing::debug!(
                    partition,
                    "partition queue not joined; its records come through the main queue"
                ),
            }
        }
    }

    /// Releases the queues of revoked partitions, handing them back to the main queue.
    pub(crate) fn release(&self, client: *mut native::rd_kafka_t, revoked: &TopicPartitionList) {
        let revoked: Vec<i32> = revoked
            .elements()
            .iter()
            .map(|element| element.partition())
            .collect();
        let mut queues = self.queues.lock().expect("joined queues lock");
        queues.joined.retain(|queue| {
            let keep = !revoked.contains(&queue.partition);
            if !keep {
                // SAFETY: `client` is the live consumer calling our rebalance callback.
                unsafe { queue.unjoin(client) };
            }
            keep
        });
    }

    /// Releases every queue for good: before the consumer is destroyed, on every path. The
    /// consumer loop, which holds the fetch queue too, has ended by then.
    pub(crate) fn release_all(&self, client: *mut native::rd_kafka_t) {
        let mut queues = self.queues.lock().expect("joined queues lock");
        queues.closed = true;
        for queue in queues.joined.drain(..) {
            // SAFETY: the caller holds the consumer, so `client` is live.
            unsafe { queue.unjoin(client) };
        }
        queues.fetch = None;
    }

    /// The fetch queue, once there is one.
    pub(crate) fn fetch_queue(&self) -> Option<Arc<FetchQueue>> {
        self.queues
            .lock()
            .expect("joined queues lock")
            .fetch
            .clone()
    }
}
