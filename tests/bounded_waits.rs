//! Nothing the library waits for can hold a channel or the process forever: a handler that
//! never returns, a dead-letter write that is never acknowledged, an application dropped
//! without a shutdown, a shutdown right after the start.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use common::*;
use messaging::health::{Check, Status};

/// Past `messaging.shutdown.timeout.ms` the shutdown abandons the record in hand: what was
/// settled is committed, the abandoned record is not (it is delivered again after a restart).
#[tokio::test(flavor = "multi_thread")]
async fn shutdown_is_bounded_when_a_handler_never_returns() {
    let topic = topic_with("never-returns", &["1", "2", "3", "4"]);
    let group = unique("never-returns-group");
    let stuck = Arc::new(AtomicBool::new(false));
    let app = {
        let stuck = stuck.clone();
        start(
            builder()
                .set("messaging.incoming.numbers.topic", &topic)
                .set("messaging.incoming.numbers.group.id", &group)
                .set("messaging.shutdown.timeout.ms", 300)
                .incoming("numbers", move |number: u32| {
                    let stuck = stuck.clone();
                    async move {
                        if number == 3 {
                            stuck.store(true, Ordering::SeqCst);
                            std::future::pending::<()>().await;
                        }
                    }
                }),
        )
        .await
    };
    eventually("the handler is stuck on 3", || stuck.load(Ordering::SeqCst)).await;
    tokio::time::timeout(PATIENCE, app.shutdown())
        .await
        .expect("the shutdown returns although a handler never does");
    // The last commit may go on in the background past the shutdown's bound (on a slow
    // machine the 60 ms left for it may not be enough), and a periodic commit may have
    // committed only the first record before it: wait until the commit reaches 2 or passes it.
    eventually("the settled records committed", || {
        committed(&group, &topic, 0).is_some_and(|offset| offset >= 2)
    })
    .await;
    assert_eq!(
        committed(&group, &topic, 0),
        Some(2),
        "the two settled records are committed, the abandoned one is not"
    );
}

/// A dead-letter write that no broker acknowledges fails the channel after
/// `dead-letter-queue.timeout.ms`, instead of holding the partition for librdkafka's 300 s
/// (longer than `max.poll.interval.ms`, so the member would be evicted).
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_write_never_acknowledged_fails_the_channel_after_its_timeout() {
    let topic = topic_with("unacknowledged-dead-letter", &["rejected"]);
    let app = start(
        builder()
            .set("messaging.incoming.values.topic", &topic)
            .set(
                "messaging.incoming.values.failure-strategy",
                "dead-letter-queue",
            )
            // Nothing listens there: the write is never acknowledged.
            .set(
                "messaging.incoming.values.dead-letter-queue.bootstrap.servers",
                "127.0.0.1:9",
            )
            .set(
                "messaging.incoming.values.dead-letter-queue.timeout.ms",
                300,
            )
            .incoming("values", |value: String| async move {
                Err::<(), _>(format!("no thanks: {value}"))
            }),
    )
    .await;
    eventually("liveness DOWN", || {
        app.health().check(Check::Liveness).status == Status::Down
    })
    .await;
    let report = app.health().check(Check::Liveness);
    let reason = report.data["values"]
        .as_ref()
        .expect_err("the channel failed");
    assert!(
        reason.contains("dead-letter topic") && reason.contains("no thanks: rejected"),
        "{reason}"
    );
    app.shutdown().await;
}

/// An application dropped without a shutdown (its runtime goes away) still closes its
/// consumers: the split partition queues are released first, or librdkafka would wait for
/// them forever while being destroyed.
#[test]
fn an_application_dropped_without_shutdown_still_closes_its_consumers() {
    let topic = topic_with("dropped", &["1", "2"]);
    let (dropped_sender, dropped) = mpsc::channel();
    let handled = Arc::new(AtomicBool::new(false));
    let app_thread = {
        let handled = handled.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let app = runtime.block_on(async {
                let seen = handled.clone();
                let app = start(
                    builder()
                        .set("messaging.incoming.numbers.topic", &topic)
                        .incoming("numbers", move |_: u32| {
                            seen.store(true, Ordering::SeqCst);
                            async {}
                        }),
                )
                .await;
                eventually("records are read through the split partition queue", || {
                    handled.load(Ordering::SeqCst)
                })
                .await;
                app
            });
            drop(app);
            drop(runtime);
            dropped_sender.send(()).expect("test waits");
        })
    };
    dropped
        .recv_timeout(PATIENCE)
        .expect("dropping the application and its runtime finishes");
    app_thread.join().expect("app thread");
}

/// A shutdown asked for as soon as the application started (an orchestrator stopping a pod
/// that has just come up) returns: it does not wait for consumers that have not yet joined
/// their group or run their loop.
#[tokio::test(flavor = "multi_thread")]
async fn a_shutdown_right_after_start_returns() {
    for _ in 0..5 {
        let topic = unique("stopped-at-once");
        create_topic(&topic, 2);
        let app = start(
            builder()
                .set("messaging.incoming.first.topic", &topic)
                .set("messaging.incoming.second.topic", &topic)
                .set(
                    "messaging.incoming.second.group.id",
                    unique("stopped-at-once"),
                )
                .incoming("first", |_: String| async {})
                .incoming("second", |_: String| async {}),
        )
        .await;
        tokio::time::timeout(PATIENCE, app.shutdown())
            .await
            .expect("the shutdown returned");
    }
}
