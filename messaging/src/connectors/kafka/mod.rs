//! The Kafka connector (rdkafka): a consumer per incoming channel, a producer per outgoing
//! channel, a dead-letter producer per `dead-letter-queue` channel.
//!
//! Defaults the library adds (each can be overridden by setting the property):
//! - consumers: `group.id` = `<application-name>-<channel>`, `enable.auto.commit=false`
//!   (offsets are committed by the channel's `commit-strategy`) and then
//!   `enable.auto.offset.store=false` (the committed offsets are ours, not librdkafka's);
//! - producers (outgoing and dead-letter): `acks=all`, `enable.idempotence=true`.
//!
//! `bootstrap.servers = "embedded"` uses the process-wide [`EmbeddedKafka`].

mod acknowledger;
mod channel_state;
mod client_config;
mod committer;
mod dead_letter;
mod embedded;
mod group_id;
mod metadata;
mod partition_queue;
mod queued_record;
mod rebalance;
mod record;
mod sink;
mod source;
mod split_queues;

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::producer::{FutureProducer, Producer};

pub use embedded::EmbeddedKafka;
pub use metadata::{Header, KafkaMetadata, KafkaOutgoingMetadata};
pub(crate) use sink::KafkaSink;
pub(crate) use source::{consume, KafkaSource, SourceParts};

use self::channel_state::ChannelState;
use self::client_config::ClientSettings;
use self::dead_letter::DeadLetterWriter;
use self::rebalance::ChannelContext;
use crate::config::{ConfigError, GlobalSettings, IncomingSettings, OutgoingSettings};
use crate::connectors::Sink;
use crate::error::Error;
use crate::failure::FailureStrategy;
use crate::handler::BoxedHandler;
use crate::health::HealthRegistry;

fn producer_settings(settings: ClientSettings) -> ClientSettings {
    let mut settings = settings;
    settings.default("acks", "all");
    settings.default("enable.idempotence", "true");
    settings
}

fn create_producer(settings: &ClientSettings) -> Result<FutureProducer, ConfigError> {
    settings
        .to_client_config()?
        .create()
        .map_err(|error| settings.rejected(&error))
}

/// Creates the embedded cluster's topics up front: it has no admin API for clients.
fn create_embedded_topics(settings: &ClientSettings, topics: &[&str]) -> Result<(), Error> {
    if settings.is_embedded() {
        for topic in topics {
            EmbeddedKafka::get()
                .create_topic(topic, 1)
                .map_err(|error| {
                    Error::Kafka(format!("creating embedded topic {topic}: {error}"))
                })?;
        }
    }
    Ok(())
}

pub(crate) fn create_sink(
    settings: &OutgoingSettings,
    health: &HealthRegistry,
) -> Result<KafkaSink, Error> {
    let scope = format!("messaging.outgoing.{}.", settings.channel);
    let client = producer_settings(
        ClientSettings::new(&scope, &settings.client).without_consumer_properties(),
    );
    let producer = create_producer(&client)?;
    create_embedded_topics(&client, &[&settings.topic])?;
    if settings.health_enabled {
        spawn_readiness_probe(
            producer.clone(),
            settings.channel.clone(),
            settings.topic.clone(),
            health.clone(),
        );
    }
    Ok(KafkaSink::new(producer, settings.topic.clone()))
}

/// An outgoing channel is ready once its broker answers a metadata request for its topic.
fn spawn_readiness_probe(
    producer: FutureProducer,
    channel: String,
    topic: String,
    health: HealthRegistry,
) {
    tokio::spawn(async move {
        loop {
            let probe = producer.clone();
            let probe_topic = topic.clone();
            let answer = tokio::task::spawn_blocking(move || {
                probe
                    .client()
                    .fetch_metadata(Some(&probe_topic), Duration::from_secs(5))
            })
            .await;
            match answer {
                Ok(Ok(_)) => {
                    health.ready(&channel);
                    return;
                }
                Ok(Err(error)) => {
                    health.not_ready(&channel, &format!("cannot reach the broker: {error}"))
                }
                Err(_) => return,
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

pub(crate) fn create_source(
    settings: &IncomingSettings,
    global: &GlobalSettings,
    handler: BoxedHandler,
    sink: Option<Arc<dyn Sink>>,
    health: &HealthRegistry,
) -> Result<KafkaSource, Error> {
    let scope = format!("messaging.incoming.{}.", settings.channel);
    let mut client = ClientSettings::new(&scope, &settings.client);
    group_id::resolve(&mut client, &settings.channel, global);
    client.default("enable.auto.commit", "false");
    // We commit explicit offsets from our trackers; librdkafka storing every delivered
    // offset too would only cost a partition lock per record. With auto-commit switched on,
    // its stored offsets are what gets committed, so leave them alone then.
    if client.get("enable.auto.commit") == Some("false") {
        client.default("enable.auto.offset.store", "false");
    }

    let dead_letter = if settings.failure_strategy == FailureStrategy::DeadLetterQueue {
        let dead_letter_scope = format!("{scope}dead-letter-queue.");
        let producer_client = producer_settings(
            ClientSettings::new(&scope, &settings.client)
                .without_consumer_properties()
                .overridden_by(&dead_letter_scope, &settings.dead_letter_client),
        );
        create_embedded_topics(&producer_client, &[&settings.dead_letter_topic])?;
        Some(DeadLetterWriter::new(
            create_producer(&producer_client)?,
            settings.dead_letter_topic.clone(),
        ))
    } else {
        None
    };

    let state = ChannelState::new(settings, dead_letter, health);
    let consumer: committer::ChannelConsumer = client
        .to_client_config()?
        .create_with_context(ChannelContext::new(state.clone()))
        .map_err(|error| client.rejected(&error))?;
    create_embedded_topics(&client, &[&settings.topic])?;
    consumer
        .subscribe(&[&settings.topic])
        .map_err(|error| Error::Kafka(format!("subscribing to {}: {error}", settings.topic)))?;
    let parts = SourceParts {
        consumer,
        state,
        sink,
        commit_interval: settings.commit_interval,
        max_age: settings.max_age,
        drain_timeout: global.shutdown_timeout,
    };
    Ok(KafkaSource::spawn(parts, handler))
}
