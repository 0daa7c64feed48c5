//! The Kafka connector (rdkafka): a consumer per incoming channel (and per retry topic of a
//! `delayed-retry-topic` channel), a producer per outgoing channel, a dead-letter producer per
//! consumer of a `dead-letter-queue` or `delayed-retry-topic` channel.
//!
//! Defaults the library adds (each can be overridden by setting the property):
//! - consumers: `group.id` = `<application-name>-<channel>`, `enable.auto.commit=false`
//!   (offsets are committed by the channel's `commit-strategy`) and always
//!   `enable.auto.offset.store=false` (stored offsets are settled watermarks, stored by us);
//! - producers (outgoing and dead-letter): `acks=all`, `enable.idempotence=true`.
//!
//! `bootstrap.servers = "embedded"` uses the process-wide [`EmbeddedKafka`].

mod acknowledger;
mod age_watch;
mod broker_probe;
mod channel_state;
mod client_config;
mod client_errors;
mod client_properties;
mod commit_thread;
mod committer;
mod dead_letter;
mod embedded;
mod group_id;
mod intake;
mod lag_watch;
mod metadata;
mod native_headers;
mod off_worker;
mod partition_queue;
mod partition_statistics;
mod queued_record;
mod rebalance;
mod rebootstrap;
mod record;
mod record_task;
mod retry_topic;
mod sink;
mod source;
mod split_queues;
mod trace_context;

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;

pub(crate) use channel_state::RECORDS_SHARE;
pub use embedded::EmbeddedKafka;
pub use metadata::{Header, KafkaMetadata, KafkaOutgoingMetadata};
pub(crate) use sink::KafkaSink;
pub(crate) use source::{consume, KafkaSource, SourceParts};

use self::broker_probe::Target;
use self::channel_state::{ChannelState, FailureWriters};
use self::client_config::ClientSettings;
use self::client_errors::{ClientErrors, KafkaProducer, ProducerContext};
use self::dead_letter::DeadLetterWriter;
use self::rebalance::ChannelContext;
use self::retry_topic::RetryTopicWriter;
use crate::config::{
    property_name, ConfigError, GlobalSettings, IncomingSettings, OutgoingSettings, GROUP_ID,
};
use crate::error::Error;
use crate::handler::BoxedHandler;
use crate::health::{Aspect, HealthRegistry};
use crate::metrics::{ChannelMetrics, Metrics, SinkMetrics};
use crate::outgoing::Sink;
use crate::retry::Classifiers;

/// librdkafka's default `receive.message.max.bytes`: the largest response a consumer takes.
const RECEIVE_MESSAGE_MAX_BYTES: u64 = 100_000_000;
/// The most librdkafka takes for `message.max.bytes`.
const MESSAGE_MAX_BYTES_LIMIT: u64 = 1_000_000_000;

fn producer_settings(settings: ClientSettings) -> ClientSettings {
    let mut settings = settings;
    settings.default("acks", "all");
    settings.default("enable.idempotence", "true");
    settings
}

/// `client`: what the producer does for `channel`, as its errors are logged.
fn create_producer(
    settings: &ClientSettings,
    channel: &str,
    client: &'static str,
) -> Result<KafkaProducer, ConfigError> {
    let errors = ClientErrors::new(channel, client, settings.secret_values());
    settings
        .to_client_config()?
        .create_with_context(ProducerContext { errors })
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
    metrics: SinkMetrics,
) -> Result<KafkaSink, Error> {
    let scope = format!("messaging.outgoing.{}.", settings.channel);
    let client = producer_settings(
        ClientSettings::new(&scope, &settings.client).without_consumer_properties(),
    );
    let producer = create_producer(&client, &settings.channel, "producer")?;
    create_embedded_topics(&client, &[&settings.topic])?;
    if settings.health_enabled {
        // Ready as long as its broker answers: it has nothing else to wait for, so the reason
        // it is not ready yet is the broker.
        health.ready_for(&settings.channel, Aspect::Channel);
        health.not_ready_for(
            &settings.channel,
            Aspect::Broker,
            "waiting for the broker's first answer",
        );
    }
    let target = Target {
        channel: settings.channel.clone(),
        client: "producer",
        topic: settings.topic.clone(),
        aspect: Aspect::Broker,
        health: health.clone(),
        reports: settings.health_enabled,
        starts_channel: true,
    };
    let probed = Arc::new(producer.clone());
    broker_probe::spawn(target, move || Some(probed.clone()));
    Ok(KafkaSink::new(
        producer,
        settings.topic.clone(),
        settings.propagate_record_key,
        metrics,
        client.queue_kbytes(),
    ))
}

/// librdkafka's `queued.max.messages.kbytes` default for our consumers: per partition.
const PREFETCH_KIB_PER_PARTITION: &str = "16384";

/// librdkafka's `queued.min.messages` default for our consumers: per partition, where a plain
/// consumer's 100,000 counts all its partitions together. librdkafka fetches a partition while
/// fewer are queued, so the queue may hold one fetch more (a real broker's is up to
/// `max.partition.fetch.bytes` a partition, compressed). For small records it binds before the
/// KB cap, at about 450 bytes of memory a record (librdkafka's per-message overhead).
const PREFETCH_RECORDS_PER_PARTITION: &str = "10000";

/// librdkafka's `max.partition.fetch.bytes` default for our consumers (librdkafka's: 1 MiB): the
/// most a fetch brings of one partition, compressed as the broker stores it. librdkafka fetches
/// a partition while fewer than `queued.min.messages` of its records are queued, and a queue
/// holds all of the last fetch beyond that: against Apache Kafka, 1 MiB of lz4-compressed
/// 100-byte records was about 70,000 records a partition, and a slow consumer of 8 partitions
/// peaked at 270 MB behind a backlog (BENCHMARKS.md, p5 on a real broker); 256 KiB held it to
/// 72 to 94 MB at the same rate. Smaller limits cut more producer batches: a broker sends a
/// batch larger than the limit whole only as the first of its answer, cuts the others, and
/// librdkafka then doubles that partition's limit for good, a round trip more each time.
/// librdkafka keeps one fetch per broker in flight, so a partition gets at most this per round
/// trip: about 260 MB/s at 1 ms, 8.7 MB/s at 30 ms, which the README tells users of far-away
/// brokers to raise. (The embedded cluster answers a fetch with one record batch, whatever
/// this says.)
const MAX_PARTITION_FETCH_BYTES: &str = "262144";

/// librdkafka's `fetch.wait.max.ms` default for our consumers. librdkafka keeps one fetch per
/// broker in flight, and one for partitions with nothing new waits on the broker this long. A
/// partition whose prefetch was full is left out of that fetch, so when its queue runs dry it
/// waits for the long poll to end: under a backlog it gets about `queued.min.messages` records
/// per wait. librdkafka's 500 ms made that 20,000 records/s a partition with the prefetch
/// above; 20 ms makes it 500,000, more than one partition's records reached a handler at on
/// the 2-core machine of BENCHMARKS.md (about 400,000 a second). There 50 ms held a channel to
/// 0.89 to 0.98 of a plain consumer's rate, 25 ms to 0.94 to 0.97, and 20 ms to 0.96 to 0.99
/// ("The long poll, shortened again"). The cost: an idle consumer fetches 50 times a second
/// per broker instead of twice.
const FETCH_WAIT_MAX_MS: &str = "20";

/// librdkafka's `fetch.queue.backoff.ms` default for our consumers. librdkafka's own, 1000 ms,
/// stops fetching a partition for a whole second each time its queue is found full, even if a
/// fast handler empties it within milliseconds: a consumer catching up on a backlog then idles
/// most of the time (a sixth of its rate in BENCHMARKS.md, "One fetch queue per channel").
/// Looking again every 10 ms costs the fetch thread a wake-up, nothing more.
const FETCH_QUEUE_BACKOFF_MS: &str = "10";

/// librdkafka's `statistics.interval.ms` default for our consumers: how often the consumer lag
/// and committed offsets of `/metrics` are brought up to date. Parsing the statistics costs a little per partition, so
/// not more often than a scraper looks.
const STATISTICS_INTERVAL_MS: &str = "5000";

/// Consumer properties that would lose records if turned on, each with the reason.
const MUST_STAY_OFF: &[(&str, &str)] = &[
    // Only the library stores offsets, and only settled watermarks.
    (
        "enable.auto.offset.store",
        "librdkafka would store, and auto-commit, offsets of records no handler has finished; \
         the library stores the settled offsets itself",
    ),
    // librdkafka moves a partition's position one past the offset it reports as the end, so
    // a pause (a sink's outage, a partition read through the main queue at its cap) would
    // resume after the next record.
    (
        "enable.partition.eof",
        "librdkafka's end-of-partition report moves the partition's position past the next \
         record, which a pause would then skip; the library has no use for the report",
    ),
];

/// One consumer of an incoming channel: of the channel's topic, or of one of its retry topics
/// (`failure-strategy = delayed-retry-topic`). Each reports its own health and metrics, as
/// `channel` names it.
struct Reader {
    channel: String,
    topic: String,
    /// Its place in the ladder: 0 for the channel's own topic, n for the n-th retry topic (whose
    /// records have had n retries, or more on the last topic).
    hop: u32,
    /// For a retry topic: how long after it was written a record is handled.
    retry_delay: Option<Duration>,
}

/// The consumers of an incoming channel: its own, then one per retry topic, named
/// `<channel>[<retry topic>]`.
fn readers(settings: &IncomingSettings) -> Vec<Reader> {
    let own = Reader {
        channel: settings.channel.clone(),
        topic: settings.topic.clone(),
        hop: 0,
        retry_delay: None,
    };
    let retry_topics = settings.retry_topics.iter().flat_map(|retry_topics| {
        (1..).zip(&retry_topics.topics).map(|(hop, topic)| Reader {
            channel: format!("{}[{}]", settings.channel, topic.name),
            topic: topic.name.clone(),
            hop,
            retry_delay: Some(topic.delay),
        })
    });
    std::iter::once(own).chain(retry_topics).collect()
}

/// Starts an incoming channel's consumers (see [`readers`]), all with `handler`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn create_sources(
    settings: &IncomingSettings,
    global: &GlobalSettings,
    handler: BoxedHandler,
    sink: Option<Arc<dyn Sink>>,
    classifiers: Arc<Classifiers>,
    health: &HealthRegistry,
    metrics: &Metrics,
    started: &mut Vec<KafkaSource>,
) -> Result<(), Error> {
    let scope = format!("messaging.incoming.{}.", settings.channel);
    let mut client = ClientSettings::new(&scope, &settings.client);
    group_id::resolve(&mut client, &settings.channel, global);
    let client = consumer_settings(client, &scope, settings)?;
    let producer_client = dead_letter_producer_settings(settings, &scope)?;
    for reader in readers(settings) {
        if reader.retry_delay.is_some() && settings.health_enabled {
            health.register(&reader.channel);
        }
        let channel_metrics = metrics.incoming_channel(&reader.channel, &reader.topic);
        started.push(create_source(
            settings,
            &client,
            producer_client.as_ref(),
            &reader,
            global,
            handler.clone(),
            sink.clone(),
            classifiers.clone(),
            health,
            channel_metrics,
        )?);
    }
    Ok(())
}

/// The library's consumer defaults on top of the user's properties, and the checks of what
/// must stay off.
fn consumer_settings(
    mut client: ClientSettings,
    scope: &str,
    settings: &IncomingSettings,
) -> Result<ClientSettings, Error> {
    // Each assigned partition's queue is split off (see `partition_queue.rs`), and librdkafka
    // then applies its prefetch limits per partition, not per consumer: its defaults (64 MiB,
    // 100,000 records) would let a consumer of 100 partitions buffer 6 GiB, and a slow one of 8
    // hold 800,000 records of a backlog. A lower prefetch needs the shorter long poll.
    client.default("queued.max.messages.kbytes", PREFETCH_KIB_PER_PARTITION);
    client.default("queued.min.messages", PREFETCH_RECORDS_PER_PARTITION);
    // A user's setting under either of librdkafka's names wins (see `client_config.rs`).
    client.default("max.partition.fetch.bytes", MAX_PARTITION_FETCH_BYTES);
    client.default("fetch.wait.max.ms", FETCH_WAIT_MAX_MS);
    client.default("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS);
    client.default("enable.auto.commit", "false");
    client.default("statistics.interval.ms", STATISTICS_INTERVAL_MS);
    for (property, problem) in MUST_STAY_OFF {
        if let Some(setting) = client.setting(property) {
            if client.is_true(property) {
                return Err(ConfigError::invalid(
                    &format!("{scope}{property}"),
                    setting,
                    *problem,
                    Some("false".to_owned()),
                )
                .into());
            }
        }
    }
    client.default("enable.auto.offset.store", "false");
    if client.is_true("enable.auto.commit") {
        // librdkafka's commit timer, which auto-commit leaves in charge.
        client.default(
            "auto.commit.interval.ms",
            &settings.commit_interval.as_millis().to_string(),
        );
    }
    Ok(client)
}

/// The settings of the dead-letter producer (which also writes retry records), for a channel
/// whose failure strategy writes dead letters; its topics are created on the embedded cluster.
fn dead_letter_producer_settings(
    settings: &IncomingSettings,
    scope: &str,
) -> Result<Option<ClientSettings>, Error> {
    if !settings.failure_strategy.writes_dead_letters() {
        return Ok(None);
    }
    let dead_letter_scope = format!("{scope}dead-letter-queue.");
    let mut producer_client = producer_settings(
        ClientSettings::new(scope, &settings.client)
            .without_consumer_properties()
            .overridden_by(&dead_letter_scope, &settings.dead_letter_client),
    );
    // librdkafka's default (300 s) is as long as max.poll.interval.ms: a dead-letter write
    // that waits that long gets the member evicted. Bounded, a write that cannot be
    // acknowledged fails the channel instead; and no longer than our own wait, or a dead
    // letter given up on could still land later and be written twice after a restart.
    // Only `dead-letter-queue.message.timeout.ms` (or its other name, `delivery.timeout.ms`)
    // overrides that.
    let set_for_dead_letters = |wanted: &str| {
        settings
            .dead_letter_client
            .iter()
            .any(|(property, _)| property_name(property) == wanted)
    };
    if !set_for_dead_letters("message.timeout.ms") {
        producer_client.force(
            "message.timeout.ms",
            &settings.dead_letter_timeout.as_millis().to_string(),
        );
    }
    // A rejected record must fit: librdkafka's own limit (1,000,000 bytes) is below the
    // broker's (1,048,588), so a record the consumer read could not be dead-lettered, and
    // would fail the channel on every start. The consumer takes responses of up to
    // `receive.message.max.bytes`; the broker (the topic's `max.message.bytes`) judges.
    // (librdkafka takes up to 1,000,000,000 for a message, more for a response.)
    let receivable = producer_client
        .number("receive.message.max.bytes")
        .unwrap_or(RECEIVE_MESSAGE_MAX_BYTES)
        .min(MESSAGE_MAX_BYTES_LIMIT);
    producer_client.default("message.max.bytes", &receivable.to_string());
    // Its queue must hold such a record: librdkafka refuses a value larger than
    // `queue.buffering.max.kbytes` as "queue full" even from an empty queue, so with a smaller
    // queue (inherited from connector-wide settings) a large record could never be
    // dead-lettered, and would fail the channel at every start. Only the dead-letter
    // producer's own key may set it lower.
    if !set_for_dead_letters("queue.buffering.max.kbytes") {
        let needed_kib = producer_client
            .number("message.max.bytes")
            .unwrap_or(receivable)
            .div_ceil(1024);
        if producer_client.queue_kbytes() < needed_kib {
            producer_client.force("queue.buffering.max.kbytes", &needed_kib.to_string());
        }
    }
    let mut topics = vec![settings.dead_letter_topic.as_str()];
    if let Some(retry_topics) = &settings.retry_topics {
        topics.extend(retry_topics.topics.iter().map(|topic| topic.name.as_str()));
    }
    create_embedded_topics(&producer_client, &topics)?;
    Ok(Some(producer_client))
}

/// The dead-letter producer of one of the channel's consumers (with `producer_client`, see
/// [`dead_letter_producer_settings`]): one per consumer, so that a consumer that gives up at
/// shutdown purges only its own writes.
fn failure_writers(
    settings: &IncomingSettings,
    producer_client: Option<&ClientSettings>,
    reader: &Reader,
    health: &HealthRegistry,
) -> Result<FailureWriters, Error> {
    let Some(producer_client) = producer_client else {
        return Ok(FailureWriters::default());
    };
    let producer = create_producer(producer_client, &reader.channel, "dead-letter producer")?;
    let probe = |topic: &str, aspect: Aspect| {
        let target = Target {
            channel: reader.channel.clone(),
            client: "dead-letter producer",
            topic: topic.to_owned(),
            aspect,
            health: health.clone(),
            reports: settings.health_enabled,
            starts_channel: false,
        };
        let probed = Arc::new(producer.clone());
        broker_probe::spawn(target, move || Some(probed.clone()));
    };
    probe(&settings.dead_letter_topic, Aspect::DeadLetterBroker);
    // The retry topic this consumer's failures go to next, if any is left: a missing one
    // (never created, or deleted) would fail the channel at the next failure.
    let next_retry = reader.hop + 1;
    if let Some(retry_topics) = settings
        .retry_topics
        .as_ref()
        .filter(|retry_topics| next_retry <= retry_topics.max_retries)
    {
        probe(&retry_topics.topic_of(next_retry).name, Aspect::RetryTopic);
    }
    let retry_topics = settings.retry_topics.as_ref().map(|retry_topics| {
        RetryTopicWriter::new(
            producer.clone(),
            retry_topics.clone(),
            settings.dead_letter_timeout,
        )
    });
    Ok(FailureWriters {
        dead_letter: Some(DeadLetterWriter::new(
            producer,
            settings.dead_letter_topic.clone(),
            settings.dead_letter_timeout,
        )),
        retry_topics,
    })
}

#[allow(clippy::too_many_arguments)]
fn create_source(
    settings: &IncomingSettings,
    client: &ClientSettings,
    producer_client: Option<&ClientSettings>,
    reader: &Reader,
    global: &GlobalSettings,
    handler: BoxedHandler,
    sink: Option<Arc<dyn Sink>>,
    classifiers: Arc<Classifiers>,
    health: &HealthRegistry,
    metrics: ChannelMetrics,
) -> Result<KafkaSource, Error> {
    let mut client = client.clone();
    if reader.retry_delay.is_some() {
        // A group of its own: in the channel's group, each consumer joining or leaving would
        // take the partitions of all the others away for a rebalance (and hand their records
        // in flight to be delivered again).
        let group = format!(
            "{}-{}",
            client.get(GROUP_ID).unwrap_or_default(),
            reader.topic
        );
        client.force(GROUP_ID, &group);
        tracing::info!(channel = %settings.channel, retry_topic = %reader.topic,
            delay_ms = reader.retry_delay.unwrap_or_default().as_millis() as u64,
            "the retry topic is read in consumer group `{group}`");
        // Only this channel writes its retry topics: a group that has not committed there yet
        // must read them from the start, or a retry written before the first assignment
        // would be skipped.
        client.force("auto.offset.reset", "earliest");
    }
    let auto_commit = client.is_true("enable.auto.commit");
    let mut own = settings.clone();
    own.channel = reader.channel.clone();
    own.topic = reader.topic.clone();
    let writers = failure_writers(settings, producer_client, reader, health)?;
    let state = ChannelState::new(
        &own,
        auto_commit,
        writers,
        reader.retry_delay,
        classifiers,
        health,
        metrics,
        sink.as_ref().and_then(|sink| sink.intake_gate()),
    );
    let policy = state.retries.policy();
    if policy.is_enabled() {
        tracing::info!(channel = %own.channel, max_attempts = policy.max_attempts(),
            worst_case_backoff_ms = policy.worst_case_to_failure_strategy().as_millis() as u64,
            "failed records are retried before the failure strategy (the backoff, without retry-after waits)");
    }
    let consumer: committer::ChannelConsumer = client
        .to_client_config()?
        .create_with_context(ChannelContext::new(state.clone(), client.secret_values()))
        .map_err(|error| client.rejected(&error))?;
    create_embedded_topics(&client, &[&own.topic])?;
    consumer
        .subscribe(&[&own.topic])
        .map_err(|error| Error::Kafka(format!("subscribing to {}: {error}", own.topic)))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Layers;

    /// A layer's keys and values, owned.
    fn owned<M: FromIterator<(String, String)>>(entries: &[(&str, &str)]) -> M {
        entries
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    /// The consumer properties of channel `readings`, given these code-level keys.
    fn consumer_properties(code: &[(&str, &str)]) -> ClientSettings {
        consumer_properties_of(Layers {
            code: owned(code),
            ..Layers::default()
        })
    }

    /// The dead-letter producer's settings of channel `readings`, given these code-level keys.
    fn dead_letter_properties(code: &[(&str, &str)]) -> ClientSettings {
        dead_letter_properties_of(Layers {
            code: owned(code),
            ..Layers::default()
        })
    }

    /// The dead-letter producer's settings of channel `readings`, given these layers.
    fn dead_letter_properties_of(layers: Layers) -> ClientSettings {
        let settings = IncomingSettings::resolve(&layers, "readings", &["readings".to_owned()])
            .expect("valid settings");
        dead_letter_producer_settings(&settings, "messaging.incoming.readings.")
            .expect("valid settings")
            .expect("a dead-letter producer")
    }

    /// The consumer properties of channel `readings`, given these configuration layers.
    fn consumer_properties_of(layers: Layers) -> ClientSettings {
        let settings = IncomingSettings::resolve(&layers, "readings", &["readings".to_owned()])
            .expect("valid settings");
        let scope = "messaging.incoming.readings.";
        consumer_settings(
            ClientSettings::new(scope, &settings.client),
            scope,
            &settings,
        )
        .expect("valid consumer settings")
    }

    #[test]
    fn consumer_defaults_apply_unless_the_user_sets_the_property() {
        let defaults = consumer_properties(&[]);
        for (property, value) in [
            ("fetch.wait.max.ms", FETCH_WAIT_MAX_MS),
            ("max.partition.fetch.bytes", MAX_PARTITION_FETCH_BYTES),
            ("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS),
            ("queued.min.messages", PREFETCH_RECORDS_PER_PARTITION),
            ("queued.max.messages.kbytes", PREFETCH_KIB_PER_PARTITION),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
        ] {
            assert_eq!(defaults.get(property), Some(value), "{property}");
        }
        assert_eq!(FETCH_WAIT_MAX_MS, "20");

        let chosen = consumer_properties(&[
            ("messaging.incoming.readings.fetch.wait.max.ms", "500"),
            ("messaging.connector.kafka.queued.min.messages", "100"),
        ]);
        assert_eq!(chosen.get("fetch.wait.max.ms"), Some("500"));
        assert_eq!(chosen.get("queued.min.messages"), Some("100"));

        let chosen_fetch = consumer_properties(&[(
            "messaging.connector.kafka.max.partition.fetch.bytes",
            "1048576",
        )]);
        assert_eq!(
            chosen_fetch.get("max.partition.fetch.bytes"),
            Some("1048576")
        );

        let other_name = consumer_properties(&[(
            "messaging.incoming.readings.fetch.message.max.bytes",
            "5000",
        )]);
        assert_eq!(other_name.get("max.partition.fetch.bytes"), Some("5000"));
        assert_eq!(other_name.get("fetch.message.max.bytes"), Some("5000"));

        let other_name_from_the_environment = consumer_properties_of(Layers {
            environment: owned(&[("MESSAGING_CONNECTOR_KAFKA_FETCH_MESSAGE_MAX_BYTES", "5000")]),
            ..Layers::default()
        });
        assert_eq!(
            other_name_from_the_environment.get("max.partition.fetch.bytes"),
            Some("5000")
        );
        assert_eq!(
            other_name_from_the_environment.get("fetch.message.max.bytes"),
            Some("5000")
        );
    }

    /// A property set under librdkafka's other name is the same property: the library's
    /// default under one name does not join it (librdkafka would apply either, at random), and
    /// what the library forces replaces it.
    #[test]
    fn a_property_under_its_other_name_is_one_property() {
        let dead_letters = dead_letter_properties(&[
            ("messaging.connector.kafka.bootstrap.servers", "broker:9092"),
            ("messaging.connector.kafka.request.required.acks", "1"),
            ("messaging.connector.kafka.enable.idempotence", "false"),
            ("messaging.connector.kafka.delivery.timeout.ms", "120000"),
            (
                "messaging.incoming.readings.failure-strategy",
                "dead-letter-queue",
            ),
            (
                "messaging.incoming.readings.dead-letter-queue.timeout.ms",
                "30000",
            ),
        ]);
        let config = dead_letters.to_client_config().expect("a configuration");
        assert_eq!(
            config.get("acks"),
            Some("1"),
            "the user's acks, not the default"
        );
        assert_eq!(config.get("request.required.acks"), None);
        assert_eq!(
            config.get("message.timeout.ms"),
            Some("30000"),
            "the dead-letter wait, not the inherited delivery.timeout.ms"
        );
        assert_eq!(config.get("delivery.timeout.ms"), None);
        assert_eq!(
            dead_letters
                .setting("acks")
                .map(|setting| setting.key.as_str()),
            Some("messaging.connector.kafka.request.required.acks"),
            "errors name the key as the user wrote it"
        );

        // Across layers, as for any property: the environment's over the code's, whichever
        // name each uses.
        let layered = consumer_properties_of(Layers {
            environment: owned(&[("MESSAGING_CONNECTOR_KAFKA_FETCH_MESSAGE_MAX_BYTES", "5000")]),
            code: owned(&[(
                "messaging.connector.kafka.max.partition.fetch.bytes",
                "9000",
            )]),
            ..Layers::default()
        });
        assert_eq!(layered.get("max.partition.fetch.bytes"), Some("5000"));
        let layered_dead_letters = dead_letter_properties_of(Layers {
            environment: owned(&[("MESSAGING_INCOMING_READINGS_DEAD_LETTER_QUEUE_ACKS", "1")]),
            code: owned(&[
                ("messaging.connector.kafka.bootstrap.servers", "broker:9092"),
                (
                    "messaging.incoming.readings.failure-strategy",
                    "dead-letter-queue",
                ),
                (
                    "messaging.incoming.readings.dead-letter-queue.request.required.acks",
                    "all",
                ),
            ]),
            ..Layers::default()
        });
        assert_eq!(layered_dead_letters.get("acks"), Some("1"));
    }

    /// A smaller producer queue set connector-wide would leave a record the consumer can read
    /// too large to dead-letter: the dead-letter producer's queue holds at least one record of
    /// its `message.max.bytes`, unless its own key says otherwise.
    #[test]
    fn the_dead_letter_producers_queue_holds_its_largest_record() {
        let queue_kib = |extra: &[(&str, &str)]| {
            let mut code = vec![
                ("messaging.connector.kafka.bootstrap.servers", "broker:9092"),
                (
                    "messaging.connector.kafka.queue.buffering.max.kbytes",
                    "512",
                ),
                (
                    "messaging.incoming.readings.failure-strategy",
                    "dead-letter-queue",
                ),
            ];
            code.extend_from_slice(extra);
            dead_letter_properties(&code)
                .get("queue.buffering.max.kbytes")
                .map(str::to_owned)
        };
        // receive.message.max.bytes, 100,000,000 bytes by default, in KiB rounded up.
        assert_eq!(queue_kib(&[]).as_deref(), Some("97657"));
        assert_eq!(
            queue_kib(&[(
                "messaging.incoming.readings.receive.message.max.bytes",
                "1048576"
            )])
            .as_deref(),
            Some("1024")
        );
        assert_eq!(
            queue_kib(&[(
                "messaging.incoming.readings.dead-letter-queue.queue.buffering.max.kbytes",
                "256"
            )])
            .as_deref(),
            Some("256"),
            "its own key decides"
        );
    }
}
