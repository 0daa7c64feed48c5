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
    /// starts fetching, so none of their records go to the main queue. A partition whose queue
    /// librdkafka does not hand out keeps using the main queue (not expected: librdkafka
    /// creates a partition it does not know yet).
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

#[cfg(test)]
mod tests {
    //! On the embedded cluster, with a manually assigned consumer: what a revoke and an
    //! assignment of the same partition do to its split queue.

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use futures_util::task::ArcWake;

    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

    use super::SplitQueues;
    use crate::connectors::kafka::partition_queue::{PartitionQueue, MAX_BATCH};
    use crate::connectors::kafka::record::FetchedRecord;
    use crate::EmbeddedKafka;

    /// Counts its wake-ups.
    #[derive(Default)]
    struct CountingWake(AtomicUsize);

    impl CountingWake {
        fn count(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    impl ArcWake for CountingWake {
        fn wake_by_ref(this: &Arc<Self>) {
            this.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Longer than any fetch takes: reached only when a record is never read.
    const PATIENCE: Duration = Duration::from_secs(60);

    /// A one-partition topic of its own, a consumer that assigns it by hand, and the split
    /// queues under test. Fields drop in order: the consumer closes before the `SplitQueues`,
    /// whose waker stays registered with librdkafka until the client is destroyed (as the
    /// consumer's context keeps it in the library); every queue is released before either,
    /// on every path, a failed assertion too.
    struct Fixture {
        topic: &'static str,
        bootstrap: String,
        partition: TopicPartitionList,
        consumer: BaseConsumer,
        queues: SplitQueues,
    }

    impl Fixture {
        fn new(topic: &'static str) -> Self {
            let cluster = EmbeddedKafka::get();
            cluster.create_topic(topic, 1).expect("topic");
            let bootstrap = cluster.bootstrap_servers().to_owned();
            let mut partition = TopicPartitionList::new();
            partition
                .add_partition_offset(topic, 0, Offset::Beginning)
                .expect("offset");
            let consumer = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("group.id", topic)
                .set("enable.auto.commit", "false")
                .create()
                .expect("consumer");
            Self {
                topic,
                bootstrap,
                partition,
                consumer,
                queues: SplitQueues::new(topic),
            }
        }

        fn client(&self) -> *mut rdkafka::bindings::rd_kafka_t {
            self.consumer.client().native_ptr()
        }

        /// Splits the partition's queue, then assigns the partition, as a rebalance does.
        fn split_and_assign(&self) {
            self.queues.split(self.client(), &self.partition);
            self.consumer.assign(&self.partition).expect("assign");
        }

        /// `count` records in one batch (all queued, back to back, within the linger; the
        /// flush sends them): the embedded cluster answers a fetch with one batch, and
        /// librdkafka moves a fetched batch's records into the partition's queue together.
        fn produce(&self, count: usize) {
            let producer: BaseProducer = ClientConfig::new()
                .set("bootstrap.servers", &self.bootstrap)
                .set("linger.ms", "500")
                .create()
                .expect("producer");
            for _ in 0..count {
                producer
                    .send(BaseRecord::<(), str>::to(self.topic).payload("record"))
                    .expect("queued");
            }
            producer.flush(PATIENCE).expect("delivered");
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            self.queues.release_all(self.client());
        }
    }

    /// Reads the queue until it is empty; returns the records read (errors fail the test).
    fn drain(queue: &PartitionQueue) -> usize {
        let mut batch = Vec::new();
        while !queue.is_empty() {
            queue.take_batch(&mut batch, MAX_BATCH);
        }
        for record in &batch {
            assert!(record.error().is_none(), "a record, not an error");
        }
        batch.len()
    }

    /// Reads the queue until it has given at least one record; returns how many. Waits for
    /// records, not for a queue that is not empty: librdkafka's queue length counts its control
    /// events too, which give no record.
    async fn read_records(queue: &PartitionQueue) -> usize {
        let mut read = 0;
        until("a record read", || {
            read += drain(queue);
            read > 0
        })
        .await;
        read
    }

    /// Waits until `condition` holds, looking every 10 ms; fails after [`PATIENCE`].
    async fn until(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + PATIENCE;
        while !condition() {
            assert!(
                std::time::Instant::now() < deadline,
                "gave up waiting: {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A consumer loop keeps the `Arc` of a partition's queue from an earlier assignment until
    /// it next looks at the current ones. Dropping it after the partition was split again must
    /// not switch off the wake-up of the new split: librdkafka keeps one queue per partition,
    /// and disabling the callback through any handle disables it for all of them. Released and
    /// split again while the partition stays assigned (no fetch stop and start in between, as
    /// a rebalance would have): this pins what dropping a handle does to the shared queue.
    #[tokio::test]
    async fn a_stale_queue_dropped_after_a_new_split_leaves_the_wake_up_on() {
        let fixture = Fixture::new("split-queues-stale-handle");
        let queues = &fixture.queues;
        fixture.split_and_assign();
        let stale = queues.current().pop().expect("the partition's queue");
        queues.release(fixture.client(), &fixture.partition);
        queues.split(fixture.client(), &fixture.partition);
        let current = queues.current().pop().expect("the new split");
        // Both handles are of one librdkafka queue: what is fetched now is seen through both.
        fixture.produce(1);
        until("the first record fetched", || !current.is_empty()).await;
        assert!(!stale.is_empty(), "the stale handle is of the same queue");
        assert_eq!(read_records(&current).await, 1, "the first record");
        drop(stale);

        let wakes = Arc::new(CountingWake::default());
        queues
            .waker
            .register(&futures_util::task::waker(wakes.clone()));
        fixture.produce(1);
        until("the new split woke its reader", || wakes.count() > 0).await;
        assert_eq!(
            read_records(&current).await,
            1,
            "the second record, through the new split"
        );
    }

    /// Records a released queue still holds go to the main queue at once, where librdkafka
    /// drops them as outdated once the revoke has stopped the partition's fetch, or the loop
    /// reads them if not: none stays behind in a queue no one reads.
    #[tokio::test]
    async fn records_left_in_a_released_queue_go_to_the_main_queue() {
        let fixture = Fixture::new("split-queues-released");
        fixture.split_and_assign();
        fixture.produce(2);
        let split = fixture
            .queues
            .current()
            .pop()
            .expect("the partition's queue");
        // Read one record at a time: the first record read means its batch is queued, so the
        // second is in the split queue then (a queue that is merely not empty might hold only
        // librdkafka's control events).
        let mut first = Vec::new();
        until("the first record read", || {
            split.take_batch(&mut first, 1);
            !first.is_empty()
        })
        .await;
        assert_eq!(first[0].offset(), 0, "the first record");
        assert!(!split.is_empty(), "the second record is in the split queue");
        assert!(
            fixture.consumer.poll(Duration::ZERO).is_none(),
            "nothing in the main queue yet"
        );

        fixture.queues.release(fixture.client(), &fixture.partition);
        // A poll may serve another event (an offset or an error) and return nothing.
        let mut read = None;
        until("a record in the main queue", || {
            read = fixture
                .consumer
                .poll(Duration::ZERO)
                .map(|record| record.expect("a record").offset());
            read.is_some()
        })
        .await;
        assert_eq!(
            read,
            Some(1),
            "the record left in the released queue is in the main queue"
        );
    }
}
