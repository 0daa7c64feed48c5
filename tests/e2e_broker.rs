//! End-to-end tests against an independent Kafka-protocol broker (Apache Kafka, or tansu where
//! it cannot be installed, started by `../shared/tools/kafka-broker start`; `.ci/run` does it and
//! sets `MESSAGING_E2E_BOOTSTRAP`; a test that needs Apache Kafka's fetch sizes asks the tool's
//! record of which it started, see `shared_broker_is_tansu`).
//!
//! Without `MESSAGING_E2E_BOOTSTRAP` these tests say so and return, except under CI (`CI` set),
//! where a missing broker is a failure.

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

/// The movies example, unchanged, with the dead-letter-queue strategy on a real broker: both
/// rejected titles land in the dead-letter topic with their reasons, the second handler logs
/// them, health is UP, and SIGTERM shuts it down cleanly.
#[tokio::test(flavor = "multi_thread")]
async fn movies_example_dead_letters_rejected_titles() {
    let Some(bootstrap) = broker() else { return };
    let movies = unique("movies");
    let dead_letters = unique("dead-letter-topic-movies");
    create_topics(&bootstrap, &[(&movies, 1), (&dead_letters, 1)]).await;
    let port = free_port();
    let example = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/movies");
    let mut child = Command::new(&example)
        // Ours, not the example's: a MESSAGING_* variable that names nothing fails its start.
        .env_remove("MESSAGING_E2E_BOOTSTRAP")
        .env_remove("MESSAGING_E2E_COSMOS_ENDPOINT")
        .env("MESSAGING_CONNECTOR_KAFKA_BOOTSTRAP_SERVERS", &bootstrap)
        .env(
            "MESSAGING_INCOMING_MOVIES_FAILURE_STRATEGY",
            "dead-letter-queue",
        )
        .env("MESSAGING_OUTGOING_MOVIES_OUT_TOPIC", &movies)
        .env("MESSAGING_INCOMING_MOVIES_TOPIC", &movies)
        .env(
            "MESSAGING_INCOMING_MOVIES_DEAD_LETTER_QUEUE_TOPIC",
            &dead_letters,
        )
        .env(
            "MESSAGING_INCOMING_DEAD_LETTER_TOPIC_MOVIES_TOPIC",
            &dead_letters,
        )
        .env("MESSAGING_APPLICATION_NAME", unique("movies-e2e"))
        .env("MESSAGING_HEALTH_PORT", port.to_string())
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("start {}: {error}", example.display()));
    // The example's log, line by line as it is written.
    let (lines, mut log_lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    let stdout = child.stdout.take().expect("piped stdout");
    let log_reader = std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });

    let reader = bootstrap.clone();
    let rejected = tokio::task::spawn_blocking(move || read_at(&reader, &dead_letters, 2))
        .await
        .unwrap();
    let titles: Vec<&str> = rejected.iter().map(ReadRecord::value_str).collect();
    assert_eq!(
        titles,
        ["Schindler's List", "The Good, the Bad and the Ugly"]
    );
    assert_eq!(
        rejected[0].header("dead-letter-reason"),
        Some("I don't like movies with ' in their title: Schindler's List")
    );
    assert_eq!(
        rejected[1].header("dead-letter-reason"),
        Some("I don't like movies with , in their title: The Good, the Bad and the Ugly")
    );
    assert_eq!(
        rejected[0].header("dead-letter-topic"),
        Some(movies.as_str())
    );
    assert_eq!(
        rejected[0].header("dead-letter-exception-class-name"),
        Some("movies::BadMovie")
    );

    let address: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut health = (0, String::new());
    for _ in 0..3000 {
        health = http_get(address, "/health").await;
        if health.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(health.0, 200, "{}", health.1);

    // The second handler logs each dead-lettered title once it has read it back.
    let mut log = Vec::new();
    // SIGTERM only once the example waits for it (it has sent every title), and the second
    // handler has logged both dead-lettered titles.
    while log
        .iter()
        .filter(|line: &&String| line.contains("dead-lettered"))
        .count()
        < 2
        || !log
            .iter()
            .any(|line| line.contains("serving /health until Ctrl-C"))
    {
        let line = tokio::time::timeout(PATIENCE, log_lines.recv()).await;
        match line {
            Ok(Some(line)) => log.push(line),
            _ => panic!(
                "the example did not log both dead-lettered titles:\n{}",
                log.join("\n")
            ),
        }
    }
    let logged: Vec<&String> = log
        .iter()
        .filter(|line| line.contains("dead-lettered"))
        .collect();
    assert!(
        logged[0].contains("Schindler's List") && logged[0].contains("in their title"),
        "{}",
        log.join("\n")
    );
    assert!(
        logged[1].contains("The Good, the Bad and the Ugly"),
        "{}",
        log.join("\n")
    );

    let pid = child.id().to_string();
    let terminated = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(terminated.success());
    let waited =
        tokio::time::timeout(PATIENCE, tokio::task::spawn_blocking(move || child.wait())).await;
    if waited.is_err() {
        // Killed, its output ends: the log below is whole, and says why it did not exit.
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
    }
    log_reader.join().expect("log reader");
    while let Ok(line) = log_lines.try_recv() {
        log.push(line);
    }
    let log = log.join("\n");
    let Ok(exited) = waited else {
        panic!("the example did not exit within {PATIENCE:?} of SIGTERM:\n{log}");
    };
    let status = exited.unwrap().unwrap();
    assert!(status.success(), "exit {status:?}\n{log}");
    assert!(log.contains("shut down"), "{log}");
}

/// Three records to each of partitions 0 and 1.
async fn produce_six_to_two_partitions(bootstrap: &str, topic: &str) {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let records: Vec<Record<'_>> = (0..6)
            .map(|i| Record {
                key: None,
                value: b"v",
                headers: &[],
                partition: Some(i % 2),
            })
            .collect();
        produce_at(&bootstrap, &topic, &records)
    })
    .await
    .unwrap();
}

/// On a real broker a revoke commits before the partitions move, so the new owner starts
/// after the records the old one settled. (librdkafka's mock cluster refuses
/// commits during a rebalance, so this runs here.)
#[tokio::test(flavor = "multi_thread")]
async fn a_revoke_commits_before_the_partitions_move() {
    let Some(bootstrap) = broker() else { return };
    let topic = unique("revoke");
    create_topics(&bootstrap, &[(&topic, 2)]).await;
    produce_six_to_two_partitions(&bootstrap, &topic).await;

    let seen = Arc::new(Mutex::new(0usize));
    let member = || {
        let seen = seen.clone();
        builder()
            .set("messaging.connector.kafka.bootstrap.servers", &bootstrap)
            .set("messaging.incoming.values.topic", &topic)
            .set("messaging.incoming.values.group.id", &topic)
            // No periodic commit: only the revoke can commit while both members run.
            .set(
                "messaging.incoming.values.auto.commit.interval.ms",
                3_600_000,
            )
            .incoming("values", move |_: Vec<u8>| {
                *seen.lock().unwrap() += 1;
                std::future::ready(())
            })
    };
    let first = start(member()).await;
    eventually("the first member handled all six", || {
        *seen.lock().unwrap() == 6
    })
    .await;
    let second = start(member()).await;
    let committed_both = || {
        committed_at(&bootstrap, &topic, &topic, 0) == Some(3)
            && committed_at(&bootstrap, &topic, &topic, 1) == Some(3)
    };
    eventually("the revoke committed both partitions", committed_both).await;
    assert_eq!(*seen.lock().unwrap(), 6, "no record was handled twice");
    // Both partitions were reassigned (one to each member): both keep being read.
    produce_six_to_two_partitions(&bootstrap, &topic).await;
    eventually(
        "the members handled the six records sent after the rebalance",
        || *seen.lock().unwrap() == 12,
    )
    .await;
    second.shutdown().await;
    first.shutdown().await;
}

/// While records wait (here dead-letter writes that linger far longer than the test), the
/// channel still answers rebalances. A real broker holds a rebalance until every
/// member has answered (up to `max.poll.interval.ms`): a member that joins gets its partition
/// and reads it only because the waiting member answered.
#[tokio::test(flavor = "multi_thread")]
async fn rebalances_are_answered_while_a_dead_letter_write_waits() {
    let Some(bootstrap) = broker() else { return };
    let topic = unique("waiting-dead-letter");
    let dead_letters = unique("waiting-dead-letter-dlq");
    create_topics(&bootstrap, &[(&topic, 2), (&dead_letters, 1)]).await;
    produce_six_to_two_partitions(&bootstrap, &topic).await;
    let member = || {
        builder()
            .set("messaging.connector.kafka.bootstrap.servers", &bootstrap)
            .set("messaging.incoming.values.topic", &topic)
            .set("messaging.incoming.values.group.id", &topic)
            .set("messaging.incoming.values.max.poll.interval.ms", 300_000)
    };
    let rejected = Arc::new(Mutex::new(0usize));
    let first = {
        let rejected = rejected.clone();
        start(
            member()
                .set(
                    "messaging.incoming.values.failure-strategy",
                    "dead-letter-queue",
                )
                .set(
                    "messaging.incoming.values.dead-letter-queue.topic",
                    &dead_letters,
                )
                // The dead-letter record waits in the producer for 15 minutes.
                .set(
                    "messaging.incoming.values.dead-letter-queue.linger.ms",
                    900_000,
                )
                .set(
                    "messaging.incoming.values.dead-letter-queue.timeout.ms",
                    1_000_000,
                )
                .set("messaging.shutdown.timeout.ms", 200)
                .incoming("values", move |_: Vec<u8>| {
                    *rejected.lock().unwrap() += 1;
                    std::future::ready(Err::<(), _>("rejected"))
                }),
        )
        .await
    };
    // Dead-letter writes do not stop their partition: every record is rejected, and every
    // write waits in the producer.
    eventually("the first member waits on its dead-letter writes", || {
        *rejected.lock().unwrap() == 6
    })
    .await;

    let seen = Arc::new(Mutex::new(0usize));
    let second = {
        let seen = seen.clone();
        start(member().incoming("values", move |_: Vec<u8>| {
            *seen.lock().unwrap() += 1;
            std::future::ready(())
        }))
        .await
    };
    eventually("the second member got a partition and read it", || {
        *seen.lock().unwrap() > 0
    })
    .await;
    second.shutdown().await;
    tokio::time::timeout(PATIENCE, first.shutdown())
        .await
        .expect("the shutdown abandons the waiting write");
}

/// `delayed-retry-topic` on a real broker: the retry topics' consumers join groups of their
/// own and read from the start, every record ends handled or dead-lettered, and every group
/// commits to the end of its topic.
#[tokio::test(flavor = "multi_thread")]
async fn failed_records_climb_the_retry_topics_then_the_dead_letter_topic() {
    let Some(bootstrap) = broker() else { return };
    let topic = unique("retried");
    let retry_topics = [format!("{topic}_retry_500"), format!("{topic}_retry_1000")];
    let dead_letters = format!("{topic}-dead-letters");
    create_topics(
        &bootstrap,
        &[
            (&topic, 2),
            (&retry_topics[0], 2),
            (&retry_topics[1], 1),
            (&dead_letters, 1),
        ],
    )
    .await;
    {
        let (bootstrap, topic) = (bootstrap.clone(), topic.clone());
        tokio::task::spawn_blocking(move || {
            let values: Vec<String> = (0..20).map(|i| format!("v{i}")).collect();
            let records: Vec<Record<'_>> = values
                .iter()
                .map(|value| Record {
                    key: Some(value.as_bytes()),
                    value: value.as_bytes(),
                    headers: &[],
                    partition: None,
                })
                .collect();
            produce_at(&bootstrap, &topic, &records)
        })
        .await
        .unwrap();
    }
    // v0, v3, v6 ... fail on the channel's own topic only; v7 fails everywhere.
    let handled = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let app = {
        let handled = handled.clone();
        let (topic_name, group) = (topic.clone(), topic.clone());
        start(
            builder()
                .set("messaging.connector.kafka.bootstrap.servers", &bootstrap)
                .set("messaging.incoming.values.topic", &topic)
                .set("messaging.incoming.values.group.id", &group)
                .set(
                    "messaging.incoming.values.failure-strategy",
                    "delayed-retry-topic",
                )
                .set(
                    "messaging.incoming.values.delayed-retry-topic.topics",
                    retry_topics.join(","),
                )
                .set(
                    "messaging.incoming.values.dead-letter-queue.topic",
                    &dead_letters,
                )
                .incoming(
                    "values",
                    move |value: String, metadata: messaging::Metadata| {
                        let read_from = metadata
                            .get::<messaging::KafkaMetadata>()
                            .expect("kafka metadata")
                            .topic()
                            .to_owned();
                        let number: u32 = value[1..].parse().unwrap();
                        let fails =
                            number == 7 || (number.is_multiple_of(3) && read_from == topic_name);
                        if !fails {
                            handled.lock().unwrap().push((value, read_from));
                        }
                        std::future::ready(if fails { Err("not yet") } else { Ok(()) })
                    },
                ),
        )
        .await
    };

    let reader = (bootstrap.clone(), dead_letters.clone());
    let dead = tokio::task::spawn_blocking(move || read_at(&reader.0, &reader.1, 1))
        .await
        .unwrap();
    assert_eq!(dead[0].value_str(), "v7");
    assert_eq!(dead[0].header("delayed-retry-count"), Some("2"));
    // Distinct values: at least once, a rebalance may hand a record over twice.
    let distinct = |from: Option<&str>| -> std::collections::BTreeSet<String> {
        handled
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, read_from)| from.is_none_or(|from| read_from == from))
            .map(|(value, _)| value.clone())
            .collect()
    };
    eventually("the other 19 handled", || distinct(None).len() == 19).await;
    let retried = distinct(Some(&retry_topics[0]));
    assert_eq!(retried.len(), 7, "v0, v3 ... v18: {retried:?}");
    let ends = [
        (topic.clone(), topic.clone(), 0..2),
        (
            format!("{topic}-{}", retry_topics[0]),
            retry_topics[0].clone(),
            0..2,
        ),
        (
            format!("{topic}-{}", retry_topics[1]),
            retry_topics[1].clone(),
            0..1,
        ),
    ];
    for (group, read, partitions) in ends {
        for partition in partitions {
            let end = end_offset_at(&bootstrap, &read, partition);
            eventually(&format!("{group} committed {read}-{partition}"), || {
                committed_at(&bootstrap, &group, &read, partition) == Some(end)
            })
            .await;
        }
    }
    app.shutdown().await;
}

/// A 100-byte value naming its record: `label` and its number.
fn hundred_bytes(label: &'static str) -> impl Fn(usize) -> Vec<u8> + Send + 'static {
    move |number| format!("{:0>100}", format!("{label}-{number}")).into_bytes()
}

/// Against a real broker, which answers a fetch with up to `max.partition.fetch.bytes` of a
/// partition (the embedded cluster with one record batch, whatever that says), a stuck
/// channel's prefetch stops within `queued.min.messages` (10,000) and one fetch of the
/// library's 256 KiB: about 2,400 records of 100 bytes, where librdkafka's 1 MiB would bring
/// about 9,500 more.
#[tokio::test(flavor = "multi_thread")]
async fn a_stuck_channel_prefetches_at_most_one_256_kib_fetch_past_queued_min_messages() {
    const PREFETCH: i64 = 10_000;
    // Every record takes more than its 100-byte value in a fetch.
    const ONE_FETCH: i64 = 262_144 / 100;
    let Some(bootstrap) = broker() else { return };
    if shared_broker_is_tansu() {
        // tansu answers with up to the request's `fetch.max.bytes`, whatever a partition's
        // limit says.
        eprintln!("skipped: tansu does not honour max.partition.fetch.bytes");
        return;
    }
    let topic = unique("prefetch-e2e");
    create_topics(&bootstrap, &[(&topic, 1)]).await;
    // Batches under the fetch size: a larger one would come whole, as the README says.
    produce_numbered(
        &bootstrap,
        &topic,
        0,
        60_000,
        hundred_bytes("stuck"),
        &[("batch.size", "65536")],
    )
    .await;
    let app = start(stuck_channel(
        builder().set("messaging.connector.kafka.bootstrap.servers", &bootstrap),
        &topic,
    ))
    .await;
    let address = app.health_address().expect("health server");
    // With a larger fetch the queue would have gone past the bound by the time it filled up.
    let text = metrics_after_the_prefetch_filled(address, &topic, 1, PREFETCH).await;
    let records = prefetched_records(&text, &topic, 0).expect("the partition's prefetch");
    assert!(
        records < PREFETCH + ONE_FETCH,
        "{records} records prefetched"
    );
    tokio::time::timeout(PATIENCE, app.shutdown())
        .await
        .expect("shutdown abandons the stuck record");
}

/// A record batch larger than the library's 256 KiB fetch, behind small records and next to a
/// busy partition, is still read: the broker sends it whole when it comes first in an answer,
/// and librdkafka otherwise raises that partition's fetch size until it fits. (A guard against
/// a stall; which of the two happens is up to librdkafka's order of partitions.)
#[tokio::test(flavor = "multi_thread")]
async fn a_record_larger_than_the_fetch_size_is_read_next_to_a_busy_partition() {
    let Some(bootstrap) = broker() else { return };
    let topic = unique("large-record-e2e");
    create_topics(&bootstrap, &[(&topic, 2)]).await;
    let small_batches = [("batch.size", "65536")];
    produce_numbered(
        &bootstrap,
        &topic,
        0,
        5_000,
        hundred_bytes("busy"),
        &small_batches,
    )
    .await;
    produce_numbered(
        &bootstrap,
        &topic,
        1,
        10,
        hundred_bytes("before"),
        &small_batches,
    )
    .await;
    let large_batch = [("batch.size", "1000000")];
    produce_numbered(
        &bootstrap,
        &topic,
        1,
        1,
        |_| vec![b'L'; 600_000],
        &large_batch,
    )
    .await;
    produce_numbered(
        &bootstrap,
        &topic,
        1,
        10,
        hundred_bytes("after"),
        &small_batches,
    )
    .await;
    // Distinct values: the channel is at-least-once, and a record read twice counts once.
    let small = Arc::new(Mutex::new(std::collections::HashSet::<Vec<u8>>::new()));
    let large = Arc::new(AtomicBool::new(false));
    let (small_seen, large_seen) = (small.clone(), large.clone());
    let app = start(
        builder()
            .set("messaging.connector.kafka.bootstrap.servers", &bootstrap)
            .set("messaging.incoming.values.topic", &topic)
            .set("messaging.incoming.values.group.id", &topic)
            .incoming("values", move |value: Vec<u8>| {
                if value.len() == 100 {
                    small_seen.lock().unwrap().insert(value);
                } else {
                    large_seen.store(true, Ordering::Relaxed);
                }
                std::future::ready(())
            }),
    )
    .await;
    eventually("every record handled, the large one too", || {
        small.lock().unwrap().len() == 5_020 && large.load(Ordering::Relaxed)
    })
    .await;
    app.shutdown().await;
}
