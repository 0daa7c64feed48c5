//! The channel's assigned partitions' own queues: split off at each assignment, released at
//! each revoke, read by the consumer loop.

use std::ffi::CString;
use std::sync::{Arc, Mutex};

use futures_util::task::AtomicWaker;
use rdkafka::bindings as native;
use rdkafka::TopicPartitionList;

use super::partition_queue::PartitionQueue;

pub(crate) struct SplitQueues {
    /// `None` for a name librdkafka cannot take (a NUL byte): subscribing reports that.
    topic: Option<CString>,
    queues: Mutex<Vec<Arc<PartitionQueue>>>,
    /// Woken by librdkafka when any of the queues turns non-empty. Lives in the consumer's
    /// context, which outlives every queue: they are released before the consumer closes.
    pub(crate) waker: AtomicWaker,
}

impl SplitQueues {
    pub(crate) fn new(topic: &str) -> Self {
        Self {
            topic: CString::new(topic).ok(),
            queues: Mutex::new(Vec::new()),
            waker: AtomicWaker::new(),
        }
    }

    /// Splits the queues of partitions about to be assigned. Called before the assignment
    /// starts fetching, so none of their records go to the main queue. A partition that cannot
    /// be split (librdkafka does not know the topic yet) keeps using the main queue.
    pub(crate) fn split(&self, client: *mut native::rd_kafka_t, assigned: &TopicPartitionList) {
        let Some(topic) = &self.topic else { return };
        let mut queues = self.queues.lock().expect("split queues lock");
        for element in assigned.elements() {
            let partition = element.partition();
            queues.retain(|queue| queue.partition != partition);
            // SAFETY: `client` is the live consumer calling our rebalance callback; the waker is
            // ours, and every queue is released (`release_all`) before the consumer is dropped.
            match unsafe { PartitionQueue::split(client, topic, partition, &self.waker) } {
                Some(queue) => queues.push(Arc::new(queue)),
                None => tracing::debug!(
                    partition,
                    "partition queue not split; its records come through the main queue"
                ),
            }
        }
    }

    /// Releases the queues of revoked partitions.
    pub(crate) fn release(&self, revoked: &TopicPartitionList) {
        let revoked: Vec<i32> = revoked
            .elements()
            .iter()
            .map(|element| element.partition())
            .collect();
        self.queues
            .lock()
            .expect("split queues lock")
            .retain(|queue| !revoked.contains(&queue.partition));
    }

    pub(crate) fn release_all(&self) {
        self.queues.lock().expect("split queues lock").clear();
    }

    pub(crate) fn current(&self) -> Vec<Arc<PartitionQueue>> {
        self.queues.lock().expect("split queues lock").clone()
    }
}
