//! Records as producers compress them: a topic written with any codec a Kafka producer offers
//! (`compression.type`) is read. librdkafka decompresses only the codecs it was built with, and
//! a record batch in one it lacks is a consumer error on every fetch of that partition.

mod common;

use common::*;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

const VALUES: [&str; 3] = ["Heat", "Ronin", "Thief"];

/// `VALUES` in one batch compressed with `codec`.
fn produce_compressed(topic: &str, codec: &str) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("compression.type", codec)
        .set("linger.ms", "50")
        .create()
        .unwrap_or_else(|error| panic!("a producer compressing with {codec}: {error}"));
    for value in VALUES {
        producer
            .send(BaseRecord::<(), str>::to(topic).payload(value))
            .map_err(|(error, _)| error)
            .expect("enqueue");
    }
    producer.flush(PATIENCE).expect("all records delivered");
}

#[tokio::test]
async fn records_compressed_with_each_codec_are_read() {
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let topic = unique(&format!("compressed-{codec}"));
        create_topic(&topic, 1);
        produce_compressed(&topic, codec);
        let (seen, mut values) = tokio::sync::mpsc::unbounded_channel();
        let app = start(reading("compressed", &topic).incoming(
            "compressed",
            move |value: String| {
                let seen = seen.clone();
                async move {
                    let _ = seen.send(value);
                }
            },
        ))
        .await;
        let mut read = Vec::new();
        while read.len() < VALUES.len() {
            let value = tokio::time::timeout(PATIENCE, values.recv())
                .await
                .unwrap_or_else(|_| panic!("{codec}: only {read:?} read"))
                .expect("the handler is alive");
            read.push(value);
        }
        assert_eq!(read, VALUES, "{codec}");
        app.shutdown().await;
    }
}
