//! An outgoing channel's producer. Defaults `acks=all` and `enable.idempotence=true`; a
//! message is settled by its delivery report. A processor's output keeps its input record's key
//! (so ordering by key survives the hop) unless it sets its own or `propagate-record-key=false`,
//! and its trace context (see `trace_context.rs`).

use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

use super::client_errors::KafkaProducer;
use super::metadata::{Header, KafkaMetadata, KafkaOutgoingMetadata};
use super::trace_context;
use crate::failure::Failure;
use crate::metrics::SinkMetrics;
use crate::outgoing::{settle_by_delivery, Delivery, Enqueued, NoValue, OutgoingMessage, Sink};

pub(crate) const DELIVERY_FAILURE: &str = "messaging::DeliveryError";

pub(crate) struct KafkaSink {
    producer: KafkaProducer,
    topic: String,
    propagate_record_key: bool,
    metrics: SinkMetrics,
    /// The most value bytes the producer's queue holds (`queue.buffering.max.kbytes`): a
    /// record's value larger than that is refused as "queue full" even by an empty queue.
    queue_bytes: u64,
}

impl KafkaSink {
    pub(crate) fn new(
        producer: KafkaProducer,
        topic: String,
        propagate_record_key: bool,
        metrics: SinkMetrics,
        queue_kbytes: u64,
    ) -> Self {
        Self {
            producer,
            topic,
            propagate_record_key,
            metrics,
            queue_bytes: queue_kbytes.saturating_mul(1024),
        }
    }
}

impl Sink for KafkaSink {
    // Two steps by design: the returned future resolves once the record is in the producer's
    // queue, and what it yields resolves on the broker's delivery report.
    fn enqueue(&self, message: OutgoingMessage) -> BoxFuture<'_, Enqueued> {
        Box::pin(async move {
            let handed_over = Instant::now();
            let (payload, mut metadata, settle) = message.into_parts();
            let outgoing = metadata
                .remove::<KafkaOutgoingMetadata>()
                .unwrap_or_default();
            let topic = outgoing.topic.clone().unwrap_or_else(|| self.topic.clone());
            let input = metadata.get::<KafkaMetadata>();
            let inherited = trace_context::inherited(&outgoing.headers, input);
            let headers = Header::append_all(
                OwnedHeaders::new_with_capacity(outgoing.headers.len() + 2),
                outgoing.headers.iter().chain(inherited),
            );
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&topic).headers(headers);
            if metadata.get::<NoValue>().is_none() {
                record = record.payload(payload.as_slice());
            }
            let input_key = || input.and_then(KafkaMetadata::key);
            let key = outgoing
                .key
                .as_deref()
                .or_else(|| self.propagate_record_key.then(input_key).flatten());
            if let Some(key) = key {
                record = record.key(key);
            }
            if let Some(partition) = outgoing.partition {
                record = record.partition(partition);
            }
            let value_bytes = record.payload.map_or(0, <[u8]>::len) as u64;
            let enqueued = loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => break Ok(delivery),
                    // Never room for it: waiting would hold the record, and its partition, for
                    // ever (and the same record again after a restart).
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                        if value_bytes > self.queue_bytes =>
                    {
                        break Err(format!(
                            "the record's value ({value_bytes} bytes) is larger than the producer's whole queue \
                             (queue.buffering.max.kbytes = {} KiB): it can never be sent",
                            self.queue_bytes / 1024
                        ));
                    }
                    // librdkafka's queue is full: wait for deliveries to make room (backpressure).
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                        record = returned;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((error, _)) => break Err(error.to_string()),
                }
            };
            let delivery: Delivery = match enqueued {
                Ok(delivery) => {
                    let metrics = self.metrics.clone();
                    Box::pin(async move {
                        let outcome = match delivery.await {
                            Ok(Ok(_)) => Ok(()),
                            Ok(Err((error, _))) => {
                                Err(delivery_failure(&topic, &error.to_string()))
                            }
                            Err(_) => Err(delivery_failure(
                                &topic,
                                "the producer was closed before the delivery report",
                            )),
                        };
                        metrics.delivered(outcome.is_ok(), handed_over.elapsed());
                        settle_by_delivery(settle, outcome).await
                    })
                }
                Err(error) => {
                    self.metrics.delivered(false, handed_over.elapsed());
                    Box::pin(settle_by_delivery(
                        settle,
                        Err(delivery_failure(&topic, &error)),
                    ))
                }
            };
            Enqueued::Delivering(delivery)
        })
    }

    fn flush(&self, timeout: Duration) -> BoxFuture<'static, ()> {
        let producer = self.producer.clone();
        Box::pin(async move {
            let flushed = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
            if let Ok(Err(error)) = flushed {
                tracing::warn!(%error, "producer flush at shutdown did not complete; undelivered messages are nacked");
            }
        })
    }
}

fn delivery_failure(topic: &str, reason: &str) -> Failure {
    Failure::of_kind(
        DELIVERY_FAILURE,
        format!("delivery to topic {topic} failed: {reason}"),
    )
}
