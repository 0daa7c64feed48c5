//! At-least-once where it is easiest to get wrong: librdkafka's auto-commit switched on, and
//! records settled after their partition moved to another member.

mod common;

use std::collections::BTreeSet;
use std::sync::{mpsc, Arc, Mutex};

use common::*;
use messaging::Message;

/// With `enable.auto.commit=true` librdkafka commits on its own timer. What it commits must be
/// only what handlers finished: a record whose handler never returns, and everything after it,
/// are delivered again after the process goes away without a shutdown.
#[test]
fn auto_commit_never_commits_past_a_record_no_handler_finished() {
    let values: Vec<String> = (0..10).map(|number| number.to_string()).collect();
    let topic = topic_with(
        "auto-commit",
        &values.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let group = unique("auto-commit-group");
    const STUCK: u32 = 5;
    let member = |handler_sees: mpsc::Sender<u32>, stuck_on: Option<u32>| {
        builder()
            .set("messaging.incoming.numbers.topic", &topic)
            .set("messaging.incoming.numbers.group.id", &group)
            .set("messaging.incoming.numbers.enable.auto.commit", true)
            .set("messaging.incoming.numbers.commit-strategy", "ignore")
            .set("messaging.incoming.numbers.auto.commit.interval.ms", 50)
            .incoming("numbers", move |number: u32| {
                let handler_sees = handler_sees.clone();
                async move {
                    let _ = handler_sees.send(number);
                    if stuck_on == Some(number) {
                        std::future::pending::<()>().await;
                    }
                }
            })
    };

    let first_runtime = runtime();
    let (seen_sender, seen) = mpsc::channel();
    let first = first_runtime.block_on(start(member(seen_sender, Some(STUCK))));
    while seen
        .recv_timeout(PATIENCE)
        .expect("the first member reads up to the stuck record")
        != STUCK
    {}
    let deadline = std::time::Instant::now() + PATIENCE;
    let committed_offset = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "auto-commit never committed the settled records"
        );
        match committed(&group, &topic, 0) {
            Some(offset) if offset >= i64::from(STUCK) => break offset,
            _ => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    };
    assert_eq!(
        committed_offset,
        i64::from(STUCK),
        "auto-commit committed records no handler finished"
    );

    // Gone without a shutdown: no drain, no last commit of ours.
    drop(first);
    first_runtime.shutdown_background();

    let second_runtime = runtime();
    let (seen_sender, seen) = mpsc::channel();
    let second = second_runtime.block_on(start(member(seen_sender, None)));
    let mut redelivered = BTreeSet::new();
    while redelivered.len() < 5 {
        redelivered.insert(
            seen.recv_timeout(PATIENCE)
                .expect("the stuck record and the ones after it come again"),
        );
    }
    assert_eq!(
        redelivered,
        (STUCK..10).collect(),
        "exactly the unfinished records are delivered again"
    );
    second_runtime.block_on(second.shutdown());
}

/// A `Message<T>` handler still holds records when its partitions are revoked (a second member
/// joins). Nacking them afterwards writes no dead letter: the partitions' next owner reads them
/// again and applies the strategy itself, so a dead letter here would be a duplicate.
#[tokio::test(flavor = "multi_thread")]
async fn a_nack_after_its_partition_was_revoked_writes_no_dead_letter() {
    let topic = unique("revoked-nack");
    create_topic(&topic, 2);
    let dead_letters = unique("revoked-nack-dlq");
    let records = [
        Record {
            partition: Some(0),
            ..Record::value(b"held-0")
        },
        Record {
            partition: Some(1),
            ..Record::value(b"held-1")
        },
    ];
    produce(&topic, &records);

    let held: Arc<Mutex<Vec<Message<String>>>> = Arc::default();
    let first = {
        let held = held.clone();
        start(
            builder()
                .set("messaging.incoming.values.topic", &topic)
                .set("messaging.incoming.values.group.id", &topic)
                .set(
                    "messaging.incoming.values.failure-strategy",
                    "dead-letter-queue",
                )
                .set(
                    "messaging.incoming.values.dead-letter-queue.topic",
                    &dead_letters,
                )
                .incoming("values", move |message: Message<String>| {
                    held.lock().unwrap().push(message);
                    async {}
                }),
        )
        .await
    };
    eventually("the first member holds both records", || {
        held.lock().unwrap().len() == 2
    })
    .await;
    let before_rebalance: Vec<Message<String>> = held.lock().unwrap().drain(..).collect();

    let second_seen = Arc::new(Mutex::new(Vec::new()));
    let second = {
        let second_seen = second_seen.clone();
        start(
            builder()
                .set("messaging.incoming.values.topic", &topic)
                .set("messaging.incoming.values.group.id", &topic)
                .incoming("values", move |value: String| {
                    second_seen.lock().unwrap().push(value);
                    async {}
                }),
        )
        .await
    };
    eventually("the second member took a partition over", || {
        !second_seen.lock().unwrap().is_empty()
    })
    .await;

    for message in before_rebalance {
        message
            .nack("rejected after the partition moved")
            .await
            .expect("nack");
    }
    assert_eq!(
        end_offset(&dead_letters, 0),
        0,
        "a revoked record was dead-lettered"
    );

    // (On the code before this check, those nacks wrote two dead letters. A nack of a
    // current delivery is not checked here: the group may rebalance again before it settles,
    // and failure_strategies.rs covers dead-lettering itself.)
    second.shutdown().await;
    first.shutdown().await;
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}
