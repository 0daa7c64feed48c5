//! The channel's assigned partitions' own queues: split off at each assignment, released at
//! each revoke, read by the consumer loop.

use std::ffi::CString;
use std::sync::{Arc, Mutex};

use futures_util::task::AtomicWaker;
use rdkafka::bindings as native;
use rdkafka::TopicPartitionList;

use super::partition_queue::PartitionQueue;

/// The split queues, and whether the channel has closed them for good.
#[derive(Default)]
struct Queues {
    split: Vec<Arc<PartitionQueue>>,
    /// Set by [`SplitQueues::release_all`]: a rebalance while the consumer closes splits
    /// nothing more, since every split queue must be released before the client is destroyed.
    closed: bool,
}

pub(crate) struct SplitQueues {
    /// `None` for a name librdkafka cannot take (a NUL byte): subscribing reports that.
    topic: Option<CString>,
    queues: Mutex<Queues>,
    /// Woken by librdkafka when any of the queues turns non-empty. Lives in the consumer's
    /// context, which outlives every queue: they are released before the consumer closes.
    pub(crate) waker: AtomicWaker,
}

impl SplitQueues {
    pub(crate) fn new(topic: &str) -> Self {
        Self {
            topic: CString::new(topic).ok(),
            queues: Mutex::new(Queues::default()),
            waker: AtomicWaker::new(),
        }
    }

    /// Splits the queues of partitions about to be assigned. Called before the assignment
    /// starts fetching, so none of their records go to the main queue. A partition that cannot
    /// be split (librdkafka does not know the topic yet) keeps using the main queue.
    pub(crate) fn split(&self, client: *mut native::rd_kafka_t, assigned: &TopicPartitionList) {
        let Some(topic) = &self.topic else { return };
        let mut queues = self.queues.lock().expect("split queues lock");
        if queues.closed {
            return;
        }
        for element in assigned.elements() {
            let partition = element.partition();
            queues.split.retain(|queue| queue.partition != partition);
            // SAFETY: `client` is the live consumer calling our rebalance callback; the waker is
            // ours, and every queue is released (`release_all`) before the consumer is dropped.
            match unsafe { PartitionQueue::split(client, topic, partition, &self.waker) } {
                Some(queue) => queues.split.push(Arc::new(queue)),
                None => tracing::debug!(
                    partition,
                    "partition queue not split; its records come through the main queue"
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
        let mut queues = self.queues.lock().expect("split queues lock");
        queues.split.retain(|queue| {
            let keep = !revoked.contains(&queue.partition);
            if !keep {
                // SAFETY: `client` is the live consumer calling our rebalance callback.
                unsafe { queue.unsplit(client) };
            }
            keep
        });
    }

    /// Releases every queue for good: before the consumer is destroyed, on every path.
    pub(crate) fn release_all(&self, client: *mut native::rd_kafka_t) {
        let mut queues = self.queues.lock().expect("split queues lock");
        queues.closed = true;
        for queue in queues.split.drain(..) {
            // SAFETY: the caller holds the consumer, so `client` is live.
            unsafe { queue.unsplit(client) };
        }
    }

    pub(crate) fn current(&self) -> Vec<Arc<PartitionQueue>> {
        self.queues.lock().expect("split queues lock").split.clone()
    }

    /// The partitions whose queues are split off now.
    pub(crate) fn split_partitions(&self) -> Vec<i32> {
        let queues = self.queues.lock().expect("split queues lock");
        queues.split.iter().map(|queue| queue.partition).collect()
    }
}
