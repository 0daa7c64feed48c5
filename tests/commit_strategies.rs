//! Commit strategies and at-least-once delivery on the embedded cluster, with offsets read
//! back from the broker.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use messaging::health::{Check, Status};
use messaging::Message;
use tokio::sync::mpsc;

/// A subscriber that records what it saw and acks it.
fn recorder(seen: &Arc<Mutex<Vec<String>>>) -> impl Fn(String) -> std::future::Ready<()> + Clone {
    let seen = seen.clone();
    move |value: String| {
        seen.lock().unwrap().push(value);
        std::future::ready(())
    }
}

fn channel_on(topic: &str, strategy: &str) -> messaging::AppBuilder {
    builder()
        .set("messaging.incoming.values.topic", topic)
        .set("messaging.incoming.values.group.id", topic)
        .set("messaging.incoming.values.commit-strategy", strategy)
}

const FIVE: &[&str] = &["v0", "v1", "v2", "v3", "v4"];

#[tokio::test(flavor = "multi_thread")]
async fn throttled_commits_the_watermark_periodically() {
    let topic = topic_with("throttled", FIVE);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = start(channel_on(&topic, "throttled").incoming("values", recorder(&seen))).await;
    eventually("all five committed by the periodic commit", || {
        committed(&topic, &topic, 0) == Some(5)
    })
    .await;
    app.shutdown().await;
    assert_eq!(*seen.lock().unwrap(), FIVE);
}

#[tokio::test(flavor = "multi_thread")]
async fn latest_commits_on_acknowledgement() {
    let topic = topic_with("latest", FIVE);
    let seen = Arc::new(Mutex::new(Vec::new()));
    // An hour-long interval: only the acknowledgements can cause these commits.
    let app = start(
        channel_on(&topic, "latest")
            .set(
                "messaging.incoming.values.auto.commit.interval.ms",
                3_600_000,
            )
            .incoming("values", recorder(&seen)),
    )
    .await;
    eventually("all five committed on ack", || {
        committed(&topic, &topic, 0) == Some(5)
    })
    .await;
    app.shutdown().await;
}

/// Under `latest` one commit runs at a time: an ack that comes while a commit is in flight
/// goes into the next commit, as soon as that one is answered, not at the next interval (an
/// hour here). The broker answers every request 400 ms late, and the second ack comes 100 ms
/// after the first one's commit started.
#[tokio::test(flavor = "multi_thread")]
async fn latest_commits_an_ack_made_during_a_commit_right_after_it() {
    let (cluster, bootstrap, topic) = cluster_of_its_own("latest-during-a-commit", &[b"v0", b"v1"]);
    cluster
        .broker_round_trip_time(1, std::time::Duration::from_millis(400))
        .expect("slow broker");
    let (sender, mut received) = mpsc::unbounded_channel();
    let app = start(
        channel_on(&topic, "latest")
            .set("messaging.connector.kafka.bootstrap.servers", &bootstrap)
            .set(
                "messaging.incoming.values.auto.commit.interval.ms",
                3_600_000,
            )
            .incoming("values", hand_over(sender)),
    )
    .await;
    let first = received.recv().await.unwrap();
    let second = received.recv().await.unwrap();
    first.ack().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    second.ack().await.unwrap();
    eventually("both committed without waiting for the interval", || {
        committed_at(&bootstrap, &topic, &topic, 0) == Some(2)
    })
    .await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ignore_never_commits() {
    let topic = topic_with("ignore-commit", FIVE);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = start(channel_on(&topic, "ignore").incoming("values", recorder(&seen))).await;
    eventually("all five handled", || seen.lock().unwrap().len() == 5).await;
    app.shutdown().await;
    assert_eq!(committed(&topic, &topic, 0), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_commits_what_was_settled() {
    let topic = topic_with("shutdown-commit", FIVE);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = start(
        channel_on(&topic, "throttled")
            .set(
                "messaging.incoming.values.auto.commit.interval.ms",
                3_600_000,
            )
            .incoming("values", recorder(&seen)),
    )
    .await;
    eventually("all five handled", || seen.lock().unwrap().len() == 5).await;
    app.shutdown().await;
    assert_eq!(committed(&topic, &topic, 0), Some(5));
}

/// A member that shuts down while its group rebalances (another instance joining during a
/// rolling deploy) can have its last commit refused; it is sent again within
/// `messaging.shutdown.timeout.ms`, so the next owner does not redo what was settled. The
/// refusals are the coordinator's, on a cluster of the test's own.
#[tokio::test(flavor = "multi_thread")]
async fn a_last_commit_refused_during_a_rebalance_is_sent_again() {
    let rebalancing = rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS;
    let (committed, _) = last_commit_refused(
        "refused-last-commit",
        &[b"v0", b"v1", b"v2"],
        &[rebalancing, rebalancing],
        10_000,
    )
    .await;
    assert_eq!(committed, Some(3));
}

/// [`reading`] on the cluster at `bootstrap` (one of a test's own).
fn reading_on(bootstrap: &str, channel: &str, topic: &str) -> messaging::AppBuilder {
    reading(channel, topic).set("messaging.connector.kafka.bootstrap.servers", bootstrap)
}

/// On a cluster of its own, a channel named `channel` (the log lines name it) that commits
/// only at shutdown, once it has handled `values`: the coordinator then answers the last
/// commit's first tries with `refusals`. Returns the offset committed in the end and what the
/// shutdown logged about the channel's last commit.
async fn last_commit_refused(
    channel: &str,
    values: &[&[u8]],
    refusals: &[rdkafka::types::RDKafkaRespErr],
    shutdown_timeout_ms: u64,
) -> (Option<i64>, String) {
    let logs = captured_logs();
    let (cluster, bootstrap, topic) = cluster_of_its_own(channel, values);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = start(
        reading_on(&bootstrap, channel, &topic)
            .set(
                &format!("messaging.incoming.{channel}.auto.commit.interval.ms"),
                3_600_000,
            )
            .set("messaging.shutdown.timeout.ms", shutdown_timeout_ms)
            .incoming(channel, recorder(&seen)),
    )
    .await;
    eventually("every record handled", || {
        seen.lock().unwrap().len() == values.len()
    })
    .await;
    cluster.request_errors(rdkafka::types::RDKafkaApiKey::OffsetCommit, refusals);
    app.shutdown().await;
    let logged = logs
        .text()
        .lines()
        .filter(|line| {
            line.contains(channel)
                && (line.contains("last offset commit") || line.contains("consumer closed"))
        })
        .collect::<Vec<_>>()
        .join("\n");
    (committed_at(&bootstrap, &topic, &topic, 0), logged)
}

/// A periodic commit refused while the group rebalances is routine (another member joining
/// or leaving): said at INFO, not as a warning, and the next commit carries the offsets.
#[tokio::test(flavor = "multi_thread")]
async fn a_periodic_commit_refused_while_the_group_rebalances_is_not_a_warning() {
    let logs = captured_logs();
    let channel = "periodic-refused";
    let (cluster, bootstrap, topic) = cluster_of_its_own(channel, &[b"v0", b"v1"]);
    let rebalancing = rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS;
    cluster.request_errors(rdkafka::types::RDKafkaApiKey::OffsetCommit, &[rebalancing]);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app =
        start(reading_on(&bootstrap, channel, &topic).incoming(channel, recorder(&seen))).await;
    eventually("both records committed", || {
        committed_at(&bootstrap, &topic, &topic, 0) == Some(2)
    })
    .await;
    app.shutdown().await;
    let logged = logs
        .text()
        .lines()
        .filter(|line| line.contains(channel) && line.contains("offset commit"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        logged.contains("offset commit refused while the group rebalances"),
        "{logged}"
    );
    assert!(!logged.contains("WARN"), "{logged}");
}

/// A rebalance that outlasts the shutdown: the last commit is refused until the shutdown
/// gives up on it, which says so, and the consumer still closes.
#[tokio::test(flavor = "multi_thread")]
async fn a_last_commit_refused_until_the_shutdown_timeout_gives_up_and_the_consumer_closes() {
    let rebalancing = rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS;
    // More refusals than 200 ms pauses fit in the shutdown's two seconds.
    let (committed, logged) =
        last_commit_refused("refused-to-the-end", &[b"v0"], &[rebalancing; 20], 2_000).await;
    assert_eq!(committed, None);
    assert!(
        logged.contains("the last offset commit failed")
            && logged.contains("messaging.shutdown.timeout.ms runs out"),
        "{logged}"
    );
    assert!(logged.contains("consumer closed"), "{logged}");
}

/// An `IllegalGeneration` outside a rebalance: librdkafka counts the assignment lost, no
/// commit of the member can go through, and the last one is not sent again (each try would
/// burn the shutdown's time).
#[tokio::test(flavor = "multi_thread")]
async fn a_last_commit_refused_for_a_lost_assignment_is_not_sent_again() {
    let stale = rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION;
    let (_, logged) = last_commit_refused("lost-assignment", &[b"v0"], &[stale], 10_000).await;
    assert!(
        logged.contains("the last offset commit failed")
            && logged.contains("the refusal is final")
            && logged.contains("refused=1"),
        "{logged}"
    );
}

/// Hands every message to the test, which settles them in the order it chooses.
fn hand_over(
    sender: mpsc::UnboundedSender<Message<String>>,
) -> impl Fn(Message<String>) -> std::future::Ready<()> {
    move |message| {
        sender.send(message).expect("test is listening");
        std::future::ready(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn out_of_order_acks_never_commit_past_an_unsettled_offset() {
    let topic = topic_with("out-of-order", &["v0", "v1", "v2"]);
    let (sender, mut received) = mpsc::unbounded_channel();
    let app = start(
        channel_on(&topic, "latest")
            .set("messaging.shutdown.timeout.ms", 200)
            .incoming("values", hand_over(sender)),
    )
    .await;
    let first = received.recv().await.unwrap();
    let second = received.recv().await.unwrap();
    let third = received.recv().await.unwrap();
    third.ack().await.unwrap();
    second.ack().await.unwrap();
    // `first` (offset 0) stays unsettled through shutdown, whose last commit is synchronous.
    app.shutdown().await;
    let committed_offset = committed(&topic, &topic, 0);
    assert!(
        committed_offset.is_none() || committed_offset == Some(0),
        "committed {committed_offset:?} past unsettled offset 0"
    );
    drop(first);
}

#[tokio::test(flavor = "multi_thread")]
async fn out_of_order_acks_commit_once_the_gap_closes() {
    let topic = topic_with("gap-closes", &["v0", "v1", "v2"]);
    let (sender, mut received) = mpsc::unbounded_channel();
    let app = start(channel_on(&topic, "latest").incoming("values", hand_over(sender))).await;
    let mut messages = Vec::new();
    for _ in 0..3 {
        messages.push(received.recv().await.unwrap());
    }
    let first = messages.remove(0);
    for later in messages {
        later.ack().await.unwrap();
    }
    first.ack().await.unwrap();
    eventually("all three committed", || {
        committed(&topic, &topic, 0) == Some(3)
    })
    .await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_unsettled_beyond_the_max_age_turns_liveness_down() {
    let topic = topic_with("max-age", &["stuck"]);
    let (sender, mut received) = mpsc::unbounded_channel();
    let app = start(
        channel_on(&topic, "throttled")
            .set(
                "messaging.incoming.values.throttled.unprocessed-record-max-age.ms",
                300,
            )
            .incoming("values", hand_over(sender)),
    )
    .await;
    let stuck = received.recv().await.unwrap();
    eventually("liveness DOWN", || {
        app.health().check(Check::Liveness).status == Status::Down
    })
    .await;
    let reason = app.health().check(Check::Liveness).data["values"]
        .clone()
        .unwrap_err();
    assert!(
        reason.contains("offset 0") && reason.contains("throttled.unprocessed-record-max-age.ms"),
        "{reason}"
    );
    drop(stuck);
    app.shutdown().await;
}

/// A slow handler working through two partitions one record at a time: each record's own
/// attempt is far under the limit, while the first record of the partition whose turn comes
/// second waits more than twice the limit for its place. Waiting for a place is not being
/// stuck: liveness stays UP and every record is handled. (Before, the watch counted the wait
/// and failed a healthy channel, which a restart would meet again.) On a paused clock, so the
/// handler's time and the limit are the watch's own, whatever else the machine runs.
#[tokio::test(start_paused = true)]
async fn a_record_waiting_for_its_place_is_not_stuck() {
    let _watchdog = paused_clock_watchdog("a_record_waiting_for_its_place_is_not_stuck");
    const PER_PARTITION: usize = 16;
    let topic = unique("waiting-its-turn");
    create_topic(&topic, 2);
    let records: Vec<Record<'_>> = (0..2)
        .flat_map(|partition| {
            (0..PER_PARTITION).map(move |_| Record {
                partition: Some(partition),
                ..Record::value(b"slow")
            })
        })
        .collect();
    produce(&topic, &records);
    let (turns, next_turn) = mpsc::unbounded_channel::<()>();
    let next_turn = Arc::new(tokio::sync::Mutex::new(next_turn));
    let (started, mut handled) = mpsc::unbounded_channel::<()>();
    let app = start(
        channel_on(&topic, "throttled")
            .set("messaging.incoming.values.max-concurrency", 1)
            .set(
                "messaging.incoming.values.throttled.unprocessed-record-max-age.ms",
                1_000,
            )
            .incoming("values", move |_: String| {
                let (next_turn, started) = (next_turn.clone(), started.clone());
                async move {
                    started.send(()).unwrap();
                    next_turn.lock().await.recv().await;
                }
            }),
    )
    .await;
    // Each record runs about a sixth of the limit (and the watch looks every quarter of it);
    // the partition that goes second waits for the first one's 16 records, 2.4 s, more than
    // twice the limit and a look.
    for _ in 0..2 * PER_PARTITION {
        if handled.recv().await.is_none() {
            panic!(
                "the channel stopped: {:?}",
                app.health().check(Check::Liveness).data
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        assert_eq!(
            app.health().check(Check::Liveness).status,
            Status::Up,
            "{:?}",
            app.health().check(Check::Liveness).data
        );
        turns.send(()).unwrap();
    }
    let all_committed = {
        let topic = topic.clone();
        move || {
            committed(&topic, &topic, 0) == Some(PER_PARTITION as i64)
                && committed(&topic, &topic, 1) == Some(PER_PARTITION as i64)
        }
    };
    on_a_paused_clock_until(all_committed).await;
    assert_eq!(app.health().check(Check::Liveness).status, Status::Up);
    app.shutdown().await;
}

const CRASH_CHILD: &str = "MESSAGING_TEST_CRASH_CHILD";

/// The crashing half of `unacknowledged_records_are_redelivered_after_a_crash`, run by it in a
/// child process: acks three records, keeps three unsettled, waits for the commit of the first
/// three, then aborts without any shutdown.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "run by unacknowledged_records_are_redelivered_after_a_crash as its child process"]
async fn crash_child() {
    let spec = std::env::var(CRASH_CHILD).expect("started by the parent test");
    let [bootstrap, topic]: [&str; 2] = spec.split('|').collect::<Vec<_>>().try_into().unwrap();
    let (sender, mut received) = mpsc::unbounded_channel();
    let _app = start(
        channel_on(topic, "latest")
            .set("messaging.connector.kafka.bootstrap.servers", bootstrap)
            .incoming("values", hand_over(sender)),
    )
    .await;
    let mut _held = Vec::new();
    for index in 0..6 {
        let message = received.recv().await.unwrap();
        if index < 3 {
            message.ack().await.unwrap();
        } else {
            _held.push(message);
        }
    }
    eventually("the first three committed", || {
        committed_at(bootstrap, topic, topic, 0) == Some(3)
    })
    .await;
    std::process::abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn unacknowledged_records_are_redelivered_after_a_crash() {
    let topic = topic_with("crash", &["v0", "v1", "v2", "v3", "v4", "v5"]);
    let mut child = std::process::Command::new(std::env::current_exe().unwrap());
    child
        .args(["crash_child", "--exact", "--ignored", "--nocapture"])
        .env(CRASH_CHILD, format!("{}|{topic}", bootstrap()));
    let status = tokio::task::spawn_blocking(move || child.status())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success(), "the child process must crash");
    assert_eq!(committed(&topic, &topic, 0), Some(3));

    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = start(channel_on(&topic, "latest").incoming("values", recorder(&seen))).await;
    eventually("the three unacknowledged records came back", || {
        seen.lock().unwrap().len() >= 3
    })
    .await;
    assert_eq!(*seen.lock().unwrap(), ["v3", "v4", "v5"]);
    eventually("and are committed now", || {
        committed(&topic, &topic, 0) == Some(6)
    })
    .await;
    app.shutdown().await;
}
