//! `/metrics` on the health port: what a channel's records do shows up in Prometheus text, per
//! channel (and per partition for lag and commits), and each application keeps its own numbers.

mod common;

use common::*;

#[derive(Debug, thiserror::Error)]
#[error("rejected {0}")]
struct Rejected(String);

fn with_metrics(builder: messaging::AppBuilder) -> messaging::AppBuilder {
    builder
        .set("messaging.health.enabled", true)
        .set("messaging.health.port", 0)
}

/// A processor with `dead-letter-queue`: the good record goes out, the bad one to the
/// dead-letter topic, and every number about it is exported.
#[tokio::test(flavor = "multi_thread")]
async fn a_channels_records_lag_commits_and_health_are_exported() {
    let topic = topic_with("metrics-in", &["good", "bad"]);
    let out = unique("metrics-out");
    let channel = topic.clone();
    let app = start(
        with_metrics(builder())
            .set(
                &format!("messaging.incoming.{channel}.failure-strategy"),
                "dead-letter-queue",
            )
            .set(&format!("messaging.outgoing.{out}.topic"), &out)
            .set("messaging.connector.kafka.statistics.interval.ms", 100)
            .processor(&channel, &out, |value: String| async move {
                if value == "bad" {
                    Err(Rejected(value))
                } else {
                    Ok(value)
                }
            }),
    )
    .await;
    let address = app.health_address().expect("health server");
    let expected = [
        format!("messaging_records_received_total{{channel=\"{channel}\"}} 2\n"),
        format!("messaging_records_acked_total{{channel=\"{channel}\"}} 1\n"),
        format!("messaging_records_nacked_total{{channel=\"{channel}\"}} 1\n"),
        format!(
            "messaging_records_dead_lettered_by_error_type_total{{channel=\"{channel}\",error_type=\"metrics::Rejected\"}} 1\n"
        ),
        format!("messaging_records_dead_lettered_total{{channel=\"{channel}\"}} 1\n"),
        format!("messaging_records_ignored_total{{channel=\"{channel}\"}} 0\n"),
        format!("messaging_records_in_flight{{channel=\"{channel}\"}} 0\n"),
        format!("messaging_record_processing_duration_seconds_count{{channel=\"{channel}\"}} "),
        format!(
            "messaging_committed_offset{{channel=\"{channel}\",topic=\"{topic}\",partition=\"0\"}} 2\n"
        ),
        format!(
            "messaging_consumer_lag{{channel=\"{channel}\",topic=\"{topic}\",partition=\"0\"}} 0\n"
        ),
        format!("messaging_commit_failures_total{{channel=\"{channel}\"}} 0\n"),
        format!("messaging_channel_failed{{channel=\"{channel}\"}} 0\n"),
        format!("messaging_records_sent_total{{channel=\"{out}\"}} 1\n"),
        format!("messaging_records_send_failed_total{{channel=\"{out}\"}} 0\n"),
        format!("messaging_send_duration_seconds_count{{channel=\"{out}\"}} 1\n"),
        format!("messaging_sink_paused{{channel=\"{out}\"}} 0\n"),
        format!("messaging_channel_live{{channel=\"{channel}\"}} 1\n"),
        format!("messaging_channel_ready{{channel=\"{channel}\"}} 1\n"),
        format!("messaging_channel_started{{channel=\"{out}\"}} 1\n"),
    ];
    let text = scrape_until(address, "every number of the two records", |text| {
        expected.iter().all(|line| text.contains(line.as_str()))
    })
    .await;
    assert!(
        text.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );
    assert!(text.contains("# TYPE messaging_record_processing_duration_seconds histogram\n"));
    app.shutdown().await;
}

/// Two applications in one process: each `/metrics` shows its own channels only.
#[tokio::test(flavor = "multi_thread")]
async fn two_applications_in_one_process_keep_their_numbers_apart() {
    let memory_app = |channel: &str| {
        with_metrics(messaging::App::builder())
            .set(&format!("messaging.incoming.{channel}.connector"), "memory")
            .incoming(channel, |_: String| async {})
    };
    let first = start(memory_app("first")).await;
    let second = start(memory_app("second")).await;
    first
        .in_memory_source("first")
        .unwrap()
        .send("one")
        .await
        .unwrap();
    let first_text = scrape_until(
        first.health_address().unwrap(),
        "the first app's ack",
        |text| text.contains("messaging_records_acked_total{channel=\"first\"} 1\n"),
    )
    .await;
    assert!(!first_text.contains("channel=\"second\""), "{first_text}");
    let (_, second_text) = http_get(second.health_address().unwrap(), "/metrics").await;
    assert!(
        second_text.contains("messaging_records_acked_total{channel=\"second\"} 0\n")
            && second_text.contains("messaging_records_received_total{channel=\"second\"} 0\n")
            && !second_text.contains("channel=\"first\""),
        "{second_text}"
    );
    first.shutdown().await;
    second.shutdown().await;
}

/// The lag keeps growing while the channel is stuck: a handler that never returns stops the
/// channel's fetching once its prefetch is full, and the lag is measured against the broker,
/// not against what the consumer last fetched.
#[tokio::test(flavor = "multi_thread")]
async fn the_lag_grows_while_a_handler_is_stuck() {
    let topic = topic_with("stuck-lag", &["1"]);
    let app = start(
        with_metrics(builder())
            .set("messaging.incoming.stuck.topic", &topic)
            .set("messaging.incoming.stuck.group.id", &topic)
            // The stuck record must not fail the channel (which stops the lag watch) first.
            .set(
                "messaging.incoming.stuck.throttled.unprocessed-record-max-age.ms",
                0,
            )
            .incoming("stuck", |_: u32| std::future::pending::<()>()),
    )
    .await;
    let address = app.health_address().expect("health server");
    let lag = |records: usize| {
        format!("messaging_consumer_lag{{channel=\"stuck\",topic=\"{topic}\",partition=\"0\"}} {records}\n")
    };
    scrape_until(address, "the lag of the stuck record", |text| {
        text.contains(&lag(1))
    })
    .await;
    let more: Vec<String> = (0..50).map(|number| number.to_string()).collect();
    produce_values(&topic, &more.iter().map(String::as_str).collect::<Vec<_>>());
    scrape_until(address, "the lag of every record produced since", |text| {
        text.contains(&lag(51))
    })
    .await;
    tokio::time::timeout(PATIENCE, app.shutdown())
        .await
        .expect("shutdown abandons the stuck record");
}

/// What librdkafka fetches ahead of a channel is bounded per partition: behind a stuck record,
/// each partition's prefetch fills up to `queued.min.messages` (the library's default, 10,000)
/// and stops there, plus the one fetch that crossed it, not at librdkafka's own 100,000; and
/// `/metrics` shows each partition's.
#[tokio::test(flavor = "multi_thread")]
async fn a_stuck_channel_prefetches_queued_min_messages_a_partition_and_one_fetch_more() {
    const PREFETCH: i64 = 10_000;
    const PARTITIONS: i32 = 2;
    const RECORDS_A_PARTITION: usize = 30_000;
    // The embedded cluster answers a fetch with one record batch per partition, and the
    // producer below puts no more than this in one.
    const LARGEST_BATCH: i64 = 2_000;
    let topic = unique("prefetch");
    create_topic(&topic, PARTITIONS);
    let largest_batch = LARGEST_BATCH.to_string();
    for partition in 0..PARTITIONS {
        produce_numbered(
            &bootstrap(),
            &topic,
            partition,
            RECORDS_A_PARTITION,
            |number| number.to_string().into_bytes(),
            &[("batch.num.messages", &largest_batch)],
        )
        .await;
    }
    let app = start(stuck_channel(builder(), &topic)).await;
    let address = app.health_address().expect("health server");
    // All partitions filled at once: a limit for the whole consumer, as a plain librdkafka
    // consumer has, would not let them. With librdkafka's own default the fetcher would go on
    // to the end of each partition, batch by batch.
    let text = metrics_after_the_prefetch_filled(address, &topic, PARTITIONS, PREFETCH).await;
    for partition in 0..PARTITIONS {
        let records =
            prefetched_records(&text, &topic, partition).expect("the partition's prefetch");
        assert!(
            records < PREFETCH + LARGEST_BATCH,
            "partition {partition}: {records} records prefetched"
        );
    }
    assert!(
        text.contains(&format!(
            "messaging_prefetched_bytes{{channel=\"stuck\",topic=\"{topic}\",partition=\"0\"}} "
        )),
        "{text}"
    );
    tokio::time::timeout(PATIENCE, app.shutdown())
        .await
        .expect("shutdown abandons the stuck record");
}

/// A record waiting in its handler shows in the age of the oldest unsettled record and in the
/// lag. When the channel then fails, it leaves its group: its partitions' series go (the
/// members that take them over report them) and its failed gauge says why they went.
#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_record_ages_and_a_failed_channel_drops_its_partitions() {
    let topic = topic_with("aging", &["1"]);
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let released = release.clone();
    let app = start(
        with_metrics(builder())
            .set("messaging.incoming.aging.topic", &topic)
            .set("messaging.incoming.aging.group.id", &topic)
            .set("messaging.incoming.aging.failure-strategy", "fail")
            // Looked at every 5 s; the record waits for the release, never that long.
            .set(
                "messaging.incoming.aging.throttled.unprocessed-record-max-age.ms",
                20_000,
            )
            .incoming("aging", move |value: String| {
                let released = released.clone();
                async move {
                    released.notified().await;
                    Err::<(), _>(Rejected(value))
                }
            }),
    )
    .await;
    let address = app.health_address().expect("health server");
    let lag = format!(
        "messaging_consumer_lag{{channel=\"aging\",topic=\"{topic}\",partition=\"0\"}} 1\n"
    );
    let age = |text: &str| -> f64 {
        text.lines()
            .find_map(|line| {
                line.strip_prefix(
                    "messaging_oldest_unsettled_record_age_seconds{channel=\"aging\"} ",
                )
            })
            .and_then(|value| value.parse().ok())
            .unwrap_or(0.0)
    };
    scrape_until(address, "the waiting record's lag and age", |text| {
        text.contains(&lag) && age(text) > 0.0
    })
    .await;
    release.notify_one();
    let text = scrape_until(
        address,
        "the failed channel without partition series",
        |text| {
            text.contains("messaging_channel_failed{channel=\"aging\"} 1\n")
                && !text.contains("messaging_consumer_lag{channel=\"aging\"")
                && !text.contains("messaging_committed_offset{channel=\"aging\"")
        },
    )
    .await;
    assert!(
        text.contains("messaging_channel_live{channel=\"aging\"} 0\n"),
        "{text}"
    );
    app.shutdown().await;
}

/// A channel failed by a handler that never returns still holds its partition while it waits
/// for that record (up to `messaging.shutdown.timeout.ms`), and reports its lag meanwhile;
/// then it gives the record up, closes its consumer and leaves the group: another member
/// takes the partition over and gets the record, and the failed channel's series go.
#[tokio::test(flavor = "multi_thread")]
async fn a_channel_failed_by_a_stuck_record_hands_its_partition_over() {
    let topic = topic_with("handed-over", &["stuck"]);
    let member = |handler: fn(String) -> futures_util::future::BoxFuture<'static, ()>| {
        with_metrics(builder())
            .set("messaging.incoming.orders.topic", &topic)
            .set("messaging.incoming.orders.group.id", &topic)
            .set(
                "messaging.incoming.orders.throttled.unprocessed-record-max-age.ms",
                2000,
            )
            .set("messaging.shutdown.timeout.ms", 8000)
            .incoming("orders", handler)
    };
    let stuck = start(member(|_| Box::pin(std::future::pending()))).await;
    let address = stuck.health_address().expect("health server");
    let lag = format!(
        "messaging_consumer_lag{{channel=\"orders\",topic=\"{topic}\",partition=\"0\"}} 1\n"
    );
    scrape_until(
        address,
        "the failed channel's lag, while it holds the partition",
        |text| {
            text.contains("messaging_channel_failed{channel=\"orders\"} 1\n") && text.contains(&lag)
        },
    )
    .await;

    static RECEIVED: tokio::sync::Notify = tokio::sync::Notify::const_new();
    let taker = start(member(|value| {
        Box::pin(async move {
            assert_eq!(value, "stuck");
            RECEIVED.notify_one();
        })
    }))
    .await;
    tokio::time::timeout(PATIENCE, RECEIVED.notified())
        .await
        .expect("the other member gets the record");
    // One scrape may read the in-flight gauge before the close and the series after it: wait
    // for a scrape taken wholly after the close.
    let text = scrape_until(address, "the closed consumer's series gone", |text| {
        !text.contains("messaging_consumer_lag{channel=\"orders\"")
            && !text.contains("messaging_committed_offset{channel=\"orders\"")
            && text.contains("messaging_records_in_flight{channel=\"orders\"} 0\n")
    })
    .await;
    let age: f64 = text
        .lines()
        .find_map(|line| {
            line.strip_prefix("messaging_oldest_unsettled_record_age_seconds{channel=\"orders\"} ")
        })
        .and_then(|value| value.parse().ok())
        .expect("the age exported");
    assert_eq!(age, 0.0, "the closed consumer holds no record: {text}");
    assert!(
        text.contains("messaging_records_in_flight{channel=\"orders\"} 0\n"),
        "{text}"
    );
    taker.shutdown().await;
    stuck.shutdown().await;
}

/// A rebalance that gives one of a member's two partitions to a new member takes that
/// partition's lag and committed-offset series from the first member's `/metrics`: each
/// partition is reported by the member that holds it.
#[tokio::test(flavor = "multi_thread")]
async fn a_partition_given_to_another_member_leaves_the_first_members_metrics() {
    let topic = unique("rebalanced-lag");
    create_topic(&topic, 2);
    produce(
        &topic,
        &[
            Record {
                partition: Some(0),
                ..Record::value(b"zero")
            },
            Record {
                partition: Some(1),
                ..Record::value(b"one")
            },
        ],
    );
    let member = || {
        with_metrics(builder())
            .set("messaging.incoming.orders.topic", &topic)
            .set("messaging.incoming.orders.group.id", &topic)
            .set("messaging.connector.kafka.statistics.interval.ms", 100)
            .incoming("orders", |_: String| async {})
    };
    let series = |text: &str, partition: i32| {
        ["messaging_consumer_lag", "messaging_committed_offset"]
            .iter()
            .filter(|name| {
                text.contains(&format!(
                    "{name}{{channel=\"orders\",topic=\"{topic}\",partition=\"{partition}\"}}"
                ))
            })
            .count()
    };
    let first = start(member()).await;
    let address = first.health_address().expect("health server");
    scrape_until(address, "both partitions' series", |text| {
        series(text, 0) == 2 && series(text, 1) == 2
    })
    .await;
    let second = start(member()).await;
    scrape_until(address, "one partition's series left", |text| {
        (series(text, 0) == 2) != (series(text, 1) == 2) && series(text, 0) + series(text, 1) == 2
    })
    .await;
    let other = scrape_until(
        second.health_address().expect("health server"),
        "the other partition's series at the new member",
        |text| series(text, 0) + series(text, 1) == 2,
    )
    .await;
    let text = http_get(address, "/metrics").await.1;
    for partition in [0, 1] {
        assert_eq!(
            series(&text, partition) + series(&other, partition),
            2,
            "{text}\n{other}"
        );
    }
    second.shutdown().await;
    first.shutdown().await;
}

/// A channel left out of the health checks still says when it failed.
#[tokio::test(flavor = "multi_thread")]
async fn a_channel_without_health_checks_still_reports_its_failure() {
    let topic = topic_with("failed-unchecked", &["bad"]);
    let app = start(
        with_metrics(builder())
            .set("messaging.incoming.audit.topic", &topic)
            .set("messaging.incoming.audit.group.id", &topic)
            .set("messaging.incoming.audit.health-enabled", false)
            .incoming("audit", |value: String| {
                std::future::ready(Err::<(), _>(Rejected(value)))
            }),
    )
    .await;
    let text = scrape_until(
        app.health_address().expect("health server"),
        "the failed channel",
        |text| text.contains("messaging_channel_failed{channel=\"audit\"} 1\n"),
    )
    .await;
    assert!(
        !text.contains("messaging_channel_live{channel=\"audit\"}"),
        "{text}"
    );
    app.shutdown().await;
}

/// A retried attempt is counted; the record, acked on its second attempt, once.
#[tokio::test(flavor = "multi_thread")]
async fn retries_are_counted() {
    let topic = topic_with("retried", &["flaky"]);
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let app = start(
        with_metrics(builder())
            .set("messaging.incoming.flaky.topic", &topic)
            .set("messaging.incoming.flaky.group.id", &topic)
            .set("messaging.incoming.flaky.retry.max-retries", 3)
            .set("messaging.incoming.flaky.retry.initial-delay.ms", 10)
            .incoming("flaky", move |value: String| {
                let first = calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0;
                std::future::ready(if first { Err(Rejected(value)) } else { Ok(()) })
            }),
    )
    .await;
    scrape_until(
        app.health_address().expect("health server"),
        "one retry, one ack, no nack",
        |text| {
            text.contains("messaging_records_retried_total{channel=\"flaky\"} 1\n")
                && text.contains("messaging_records_acked_total{channel=\"flaky\"} 1\n")
                && text.contains("messaging_records_nacked_total{channel=\"flaky\"} 0\n")
        },
    )
    .await;
    app.shutdown().await;
}

/// A commit the coordinator refuses is counted and its offset is sent again at the next commit,
/// until it goes through. (librdkafka reports an asynchronous commit's result only to a
/// callback rdkafka does not install: periodic commits were asynchronous, and a refused one
/// was counted nowhere.) On a cluster of its own, so the refusals go to this channel's commits.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_commit_is_counted_and_sent_again() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    let (cluster, bootstrap, topic) = cluster_of_its_own("refused-commits", &[b"one"]);
    let refusal = RDKafkaRespErr::RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE;
    cluster.request_errors(RDKafkaApiKey::OffsetCommit, &[refusal, refusal]);
    let channel = topic.clone();
    let app = start(
        with_metrics(builder())
            .set("messaging.connector.kafka.bootstrap.servers", &bootstrap)
            .set(&format!("messaging.incoming.{channel}.group.id"), &topic)
            .set(
                &format!("messaging.incoming.{channel}.commit-strategy"),
                "latest",
            )
            .incoming(&channel, |_: String| async {}),
    )
    .await;
    let address = app.health_address().expect("health server");
    scrape_until(address, "both refusals counted", |text| {
        text.contains(&format!(
            "messaging_commit_failures_total{{channel=\"{channel}\"}} 2\n"
        ))
    })
    .await;
    eventually("the offset committed after the refusals", || {
        committed_at(&bootstrap, &topic, &topic, 0) == Some(1)
    })
    .await;
    app.shutdown().await;
}
