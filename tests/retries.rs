//! In-process retries: the backoff schedule (on a paused tokio clock, so every delay is exact),
//! retry-after, permanent errors, the attempt number, the dead-letter attempts header, and what
//! a revoke, a shutdown and the age watch do to a record waiting for its next attempt.

mod common;

use std::sync::{Arc, Mutex};

use std::time::Duration;
use tokio::sync::mpsc;

use common::*;
use messaging::health::Check;
use messaging::{
    Attempt, Classify, ErrorClass, KafkaMetadata, Message, Metadata, Permanent, Transient,
};

/// One handler call: the attempt number it saw and when (on the runtime's clock).
type Call = (u32, tokio::time::Instant);

/// Waits for the handler's next call. No timer: on a paused clock, time moves on only while
/// the runtime has nothing else to do, which is what a backoff needs.
async fn next_call(calls: &mut mpsc::UnboundedReceiver<Call>) -> Call {
    calls.recv().await.expect("the handler is called again")
}

type HandlerError = Box<dyn std::error::Error + Send + Sync>;
type Outcome = std::future::Ready<Result<(), HandlerError>>;

/// Calls `fail(attempt)` for the handler's error, noting each call.
fn failing_handler(
    fail: fn(u32) -> HandlerError,
) -> (
    impl Fn(String, Metadata) -> Outcome + Clone,
    mpsc::UnboundedReceiver<Call>,
) {
    let (sender, calls) = mpsc::unbounded_channel();
    let handler = move |_: String, metadata: Metadata| {
        let Attempt(attempt) = *metadata.get::<Attempt>().expect("the attempt number");
        let _ = sender.send((attempt, tokio::time::Instant::now()));
        std::future::ready(Err(fail(attempt)))
    };
    (handler, calls)
}

/// A builder whose channel `orders` reads `topic` in a group of that name.
fn orders_on(topic: &str) -> messaging::AppBuilder {
    builder()
        .set("messaging.incoming.orders.topic", topic)
        .set("messaging.incoming.orders.group.id", topic)
}

fn retrying_builder(
    topic: &str,
    dead_letters: &str,
    retry: &[(&str, &str)],
) -> messaging::AppBuilder {
    let mut builder = orders_on(topic)
        .set(
            "messaging.incoming.orders.failure-strategy",
            "dead-letter-queue",
        )
        // On a paused clock, time races ahead while the runtime waits for the broker: the
        // dead-letter write must not time out in the meantime.
        .set(
            "messaging.incoming.orders.dead-letter-queue.timeout.ms",
            86_400_000,
        )
        .set(
            "messaging.incoming.orders.dead-letter-queue.topic",
            dead_letters,
        )
        .set("messaging.incoming.orders.retry.jitter", 0);
    for (key, value) in retry {
        builder = builder.set(&format!("messaging.incoming.orders.{key}"), value);
    }
    builder
}

/// Waits until partition 0 of `topic` is committed up to `offset` (in the group of the same
/// name), letting the paused clock run the committer meanwhile, and checks the channel stays
/// alive throughout.
async fn committed_and_alive(app: &messaging::RunningApp, topic: &str, offset: i64) {
    let health = app.health().clone();
    let topic = topic.to_owned();
    on_a_paused_clock_until(move || {
        if let Err(reason) = &health.check(Check::Liveness).data["orders"] {
            panic!("liveness DOWN before offset {offset} was committed: {reason}");
        }
        committed(&topic, &topic, 0) == Some(offset)
    })
    .await;
    assert_eq!(app.health().check(Check::Liveness).data["orders"], Ok(()));
}

/// Reads the one dead letter on a blocking thread (the runtime's clock is paused).
async fn the_dead_letter(dead_letters: &str) -> ReadRecord {
    let dead_letters = dead_letters.to_owned();
    tokio::task::spawn_blocking(move || read(&dead_letters, 1).remove(0))
        .await
        .expect("reading thread")
}

fn delays(calls: &[Call]) -> Vec<u64> {
    calls
        .windows(2)
        .map(|pair| (pair[1].1 - pair[0].1).as_millis() as u64)
        .collect()
}

/// initial 1 s, x2, capped at 3 s, within 9 s from the first attempt: attempts at 0, 1, 3, 6 and
/// 9 s; a sixth would start at 12 s, past the limit, although max-retries allows it.
#[tokio::test(start_paused = true)]
async fn a_transient_failure_is_retried_on_the_exact_schedule_then_dead_lettered_with_the_attempts()
{
    let topic = topic_with("retry-schedule", &["order-1"]);
    let dead_letters = unique("retry-schedule-dlq");
    let _watchdog = paused_clock_watchdog("retry schedule");
    let (handler, mut calls) = failing_handler(|_| "the stock service timed out".into());
    let app = start(
        retrying_builder(
            &topic,
            &dead_letters,
            &[
                ("retry.max-retries", "5"),
                ("retry.initial-delay.ms", "1000"),
                ("retry.multiplier", "2"),
                ("retry.max-delay.ms", "3000"),
                ("retry.max-duration.ms", "9000"),
            ],
        )
        .incoming("orders", handler),
    )
    .await;
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(next_call(&mut calls).await);
    }
    let dead_letter = the_dead_letter(&dead_letters).await;
    let attempts: Vec<u32> = seen.iter().map(|(attempt, _)| *attempt).collect();
    assert_eq!(
        attempts,
        [1, 2, 3, 4, 5],
        "the attempt numbers the handler saw"
    );
    assert_eq!(delays(&seen), [1000, 2000, 3000, 3000]);
    assert_eq!(dead_letter.header("dead-letter-attempts"), Some("5"));
    assert_eq!(
        dead_letter.header("dead-letter-reason"),
        Some("the stock service timed out")
    );
    committed_and_alive(&app, &topic, 1).await;
    assert!(
        calls.try_recv().is_err(),
        "no attempt after the dead letter"
    );
    app.shutdown().await;
}

/// A retry-after replaces the computed delay (and is capped by max-delay); a permanent error is
/// not retried at all, whatever retries are left.
#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_up_to_max_delay_and_a_permanent_error_stops_the_retries() {
    let topic = topic_with("retry-after", &["order-1"]);
    let dead_letters = unique("retry-after-dlq");
    let _watchdog = paused_clock_watchdog("retry-after");
    let (handler, mut calls) = failing_handler(|attempt| match attempt {
        1 => Box::new(Transient::after(
            std::io::Error::other("throttled"),
            Duration::from_millis(1500),
        )),
        2 => Box::new(Transient::after(
            std::io::Error::other("throttled"),
            Duration::from_secs(60),
        )),
        _ => Box::new(Permanent::new(std::io::Error::other("no such product"))),
    });
    let app = start(
        retrying_builder(
            &topic,
            &dead_letters,
            &[
                ("retry.max-retries", "10"),
                ("retry.initial-delay.ms", "100"),
                ("retry.max-delay.ms", "4000"),
            ],
        )
        .incoming("orders", handler),
    )
    .await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next_call(&mut calls).await);
    }
    let dead_letter = the_dead_letter(&dead_letters).await;
    assert_eq!(delays(&seen), [1500, 4000]);
    assert_eq!(dead_letter.header("dead-letter-attempts"), Some("3"));
    assert_eq!(
        dead_letter.header("dead-letter-reason"),
        Some("no such product")
    );
    committed_and_alive(&app, &topic, 1).await;
    assert!(calls.try_recv().is_err(), "not retried");
    app.shutdown().await;
}

/// The errors of the stock service, registered with `classify`: one is permanent, one is
/// transient, and one hits a bug in the classifier.
#[derive(Debug)]
enum StockError {
    SoldOut,
    Busy,
    Unforeseen,
}

impl std::fmt::Display for StockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StockError::SoldOut => "sold out",
            StockError::Busy => "the stock service is busy",
            StockError::Unforeseen => "something nobody foresaw",
        })
    }
}

impl std::error::Error for StockError {}

impl Classify for StockError {
    fn class(&self) -> ErrorClass {
        match self {
            StockError::SoldOut => ErrorClass::Permanent,
            StockError::Busy => ErrorClass::Transient {
                retry_after: Some(Duration::from_millis(250)),
            },
            StockError::Unforeseen => unreachable!("the classifier does not know this error"),
        }
    }
}

/// A registered error type decides whether its failures are retried; a classifier that panics makes the failure permanent (dead-lettered at once)
/// instead of ending the channel, which the same record would end again after each restart.
#[tokio::test(start_paused = true)]
async fn a_registered_error_type_decides_its_class_and_a_panic_in_it_counts_as_permanent() {
    let topic = topic_with("classified", &["sold-out", "unforeseen", "busy"]);
    let dead_letters = unique("classified-dlq");
    // One partition, so the dead letters are read in the order they were written.
    create_topic(&dead_letters, 1);
    let _watchdog = paused_clock_watchdog("classified");
    let (sender, mut calls) = mpsc::unbounded_channel();
    let handler = move |order: String, metadata: Metadata| {
        let Attempt(attempt) = *metadata.get::<Attempt>().expect("the attempt number");
        let _ = sender.send((order.clone(), attempt, tokio::time::Instant::now()));
        let failed: Option<HandlerError> = match (order.as_str(), attempt) {
            ("sold-out", _) => Some(Box::new(StockError::SoldOut)),
            ("unforeseen", _) => Some(Box::new(StockError::Unforeseen)),
            ("busy", 1) => Some(Box::new(StockError::Busy)),
            _ => None,
        };
        std::future::ready(failed.map_or(Ok(()), Err))
    };
    let app = start(
        retrying_builder(
            &topic,
            &dead_letters,
            &[
                ("retry.max-retries", "5"),
                ("retry.initial-delay.ms", "10000"),
            ],
        )
        .classify::<StockError>()
        .incoming("orders", handler),
    )
    .await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(calls.recv().await.expect("the handler is called"));
    }
    let dead_letters = {
        let dead_letters = dead_letters.clone();
        tokio::task::spawn_blocking(move || read(&dead_letters, 2))
            .await
            .expect("reading thread")
    };
    committed_and_alive(&app, &topic, 3).await;
    let attempts: Vec<(&str, u32)> = seen
        .iter()
        .map(|(order, attempt, _)| (order.as_str(), *attempt))
        .collect();
    assert_eq!(
        attempts,
        [("sold-out", 1), ("unforeseen", 1), ("busy", 1), ("busy", 2)]
    );
    assert_eq!(
        (seen[3].2 - seen[2].2).as_millis(),
        250,
        "the busy error's retry-after, not the 10 s backoff"
    );
    let reasons: Vec<(&str, Option<&str>, Option<&str>)> = dead_letters
        .iter()
        .map(|dead_letter| {
            (
                dead_letter.value_str(),
                dead_letter.header("dead-letter-reason"),
                dead_letter.header("dead-letter-attempts"),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [
            ("sold-out", Some("sold out"), Some("1")),
            ("unforeseen", Some("something nobody foresaw"), Some("1")),
        ]
    );
    assert!(calls.try_recv().is_err(), "no other attempt");
    app.shutdown().await;
}

/// A message handler's retry that lets its message go unsettled (dropped in a task of its own,
/// after the handler returned) is dead-lettered with the attempts the handler made, not 1.
#[tokio::test(start_paused = true)]
async fn a_message_dropped_unsettled_on_a_retry_is_dead_lettered_with_its_attempts() {
    let topic = topic_with("dropped-on-retry", &["order-1"]);
    let dead_letters = unique("dropped-on-retry-dlq");
    let _watchdog = paused_clock_watchdog("dropped on retry");
    let (sender, mut calls) = mpsc::unbounded_channel();
    let handler = move |message: Message<String>| {
        let Attempt(attempt) = *message.metadata().get::<Attempt>().expect("the attempt");
        let _ = sender.send(attempt);
        async move {
            if attempt == 1 {
                return Err(std::io::Error::other("the stock service timed out"));
            }
            tokio::spawn(async move { drop(message) });
            Ok(())
        }
    };
    let app = start(
        retrying_builder(&topic, &dead_letters, &[("retry.max-retries", "3")])
            .incoming("orders", handler),
    )
    .await;
    // The calls first: the clock stands still while the dead letter is read on a blocking
    // thread.
    assert_eq!(calls.recv().await, Some(1));
    assert_eq!(calls.recv().await, Some(2));
    let dead_letter = the_dead_letter(&dead_letters).await;
    committed_and_alive(&app, &topic, 1).await;
    assert_eq!(
        dead_letter.header("dead-letter-reason"),
        Some("message dropped without being settled")
    );
    assert_eq!(dead_letter.header("dead-letter-attempts"), Some("2"));
    assert!(calls.try_recv().is_err(), "not retried once dropped");
    app.shutdown().await;
}

/// Retries an hour apart, and as long a shutdown timeout: a test that ends must not have
/// waited for either.
fn hour_long_backoffs(topic: &str, dead_letters: &str) -> messaging::AppBuilder {
    retrying_builder(
        topic,
        dead_letters,
        &[
            ("retry.max-retries", "3"),
            ("retry.initial-delay.ms", "3600000"),
            ("retry.max-delay.ms", "3600000"),
            ("retry.max-duration.ms", "0"),
        ],
    )
    .set("messaging.shutdown.timeout.ms", 3_600_000)
}

/// A shutdown does not wait out a backoff: the wait ends, the record stays uncommitted, and the
/// next start handles it again. (The shutdown timeout is an hour: had shutdown waited for the
/// backoff, or for the record, the safety net would fail the test.)
#[tokio::test(flavor = "multi_thread")]
async fn a_shutdown_during_a_backoff_ends_the_wait_and_the_record_is_delivered_again() {
    let topic = topic_with("retry-shutdown", &["order-1"]);
    let dead_letters = unique("retry-shutdown-dlq");
    let (handler, mut calls) = failing_handler(|_| "down".into());
    let app = start(hour_long_backoffs(&topic, &dead_letters).incoming("orders", handler)).await;
    assert_eq!(next_call(&mut calls).await.0, 1);
    tokio::time::timeout(PATIENCE, app.shutdown())
        .await
        .expect("shutdown ends the backoff instead of waiting it out");
    assert_eq!(
        committed(&topic, &topic, 0).unwrap_or(0),
        0,
        "the record stays uncommitted"
    );

    let handled = Arc::new(Mutex::new(Vec::new()));
    let again = {
        let handled = handled.clone();
        start(orders_on(&topic).incoming("orders", move |order: String| {
            handled.lock().unwrap().push(order);
            async {}
        }))
        .await
    };
    eventually("the record is delivered again and committed", || {
        committed(&topic, &topic, 0) == Some(1)
    })
    .await;
    assert_eq!(*handled.lock().unwrap(), ["order-1"]);
    again.shutdown().await;
}

/// Several records waiting out their backoffs at once: the stop ends every wait together, and
/// the last of them to finish must still end the consumer loop. (It did not when the loop took
/// in the last finished record between its look at what was left and its wait: it then waited
/// for a record that had already finished, until the shutdown timeout, an hour here.)
#[tokio::test(flavor = "multi_thread")]
async fn a_shutdown_during_many_backoffs_ends_them_all_at_once() {
    let orders = ["order-1", "order-2", "order-3", "order-4"];
    let topic = topic_with("retry-shutdown-many", &orders);
    let dead_letters = unique("retry-shutdown-many-dlq");
    let (handler, mut calls) = failing_handler(|_| "down".into());
    let app = start(
        hour_long_backoffs(&topic, &dead_letters)
            .set("messaging.incoming.orders.max-concurrency", 8)
            .set("messaging.incoming.orders.ordering", "unordered")
            .incoming("orders", handler),
    )
    .await;
    for _ in orders {
        assert_eq!(next_call(&mut calls).await.0, 1);
    }
    tokio::time::timeout(PATIENCE, app.shutdown())
        .await
        .expect("shutdown ends the backoffs instead of waiting for the timeout");
    assert_eq!(
        committed(&topic, &topic, 0).unwrap_or(0),
        0,
        "the records stay uncommitted"
    );
}

/// A revoke ends the backoff of its partition's records: they stay uncommitted, the partition's
/// next owner reads them again. Here the first member keeps one partition and handles its
/// record again from attempt 1 (had the old wait held the partition's slot, it could not); the
/// second member handles the other.
#[tokio::test(flavor = "multi_thread")]
async fn a_revoke_during_a_backoff_ends_the_wait_and_the_record_is_read_again() {
    let topic = unique("retry-revoke");
    create_topic(&topic, 2);
    produce(
        &topic,
        &[
            Record {
                partition: Some(0),
                ..Record::value(b"order-0")
            },
            Record {
                partition: Some(1),
                ..Record::value(b"order-1")
            },
        ],
    );
    let first_seen: Arc<Mutex<Vec<(i32, u32)>>> = Arc::default();
    let first = {
        let first_seen = first_seen.clone();
        start(
            orders_on(&topic)
                .set("messaging.incoming.orders.retry.max-retries", 3)
                .set(
                    "messaging.incoming.orders.retry.initial-delay.ms",
                    3_600_000,
                )
                .set("messaging.incoming.orders.retry.max-delay.ms", 3_600_000)
                .set("messaging.incoming.orders.retry.max-duration.ms", 0)
                .incoming("orders", move |_: String, metadata: Metadata| {
                    let kafka = metadata.get::<KafkaMetadata>().expect("kafka metadata");
                    let Attempt(attempt) = *metadata.get::<Attempt>().expect("attempt");
                    first_seen
                        .lock()
                        .unwrap()
                        .push((kafka.partition(), attempt));
                    std::future::ready(Err::<(), _>(std::io::Error::other("down")))
                }),
        )
        .await
    };
    eventually("both records wait for a retry", || {
        first_seen.lock().unwrap().len() == 2
    })
    .await;

    let second_seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let second = {
        let second_seen = second_seen.clone();
        start(orders_on(&topic).incoming("orders", move |order: String| {
            second_seen.lock().unwrap().push(order);
            async {}
        }))
        .await
    };
    eventually(
        "the second member handles one partition, the first the other again",
        || {
            // A rebalance may take more than one round as the second member joins: any
            // re-read from attempt 1 counts, and the last one names the partition kept.
            let first_seen = first_seen.lock().unwrap();
            let read_again = first_seen[2..].iter().any(|(_, attempt)| *attempt == 1);
            read_again && !second_seen.lock().unwrap().is_empty()
        },
    )
    .await;
    let kept = first_seen.lock().unwrap().last().expect("a re-read").0;
    let moved = 1 - kept;
    eventually("the moved partition is committed", || {
        committed(&topic, &topic, moved) == Some(1)
    })
    .await;
    tokio::time::timeout(PATIENCE, second.shutdown())
        .await
        .expect("second member stops");
    tokio::time::timeout(PATIENCE, first.shutdown())
        .await
        .expect("shutdown ends the backoff");
    assert_eq!(
        committed(&topic, &topic, kept).unwrap_or(0),
        0,
        "the record that never succeeded stays uncommitted"
    );
}

/// A record waiting for its next attempt holds its partition, not a place among
/// `max-concurrency`: with the default of one record at a time, another partition goes on,
/// while its own partition's next record waits behind it.
#[tokio::test(flavor = "multi_thread")]
async fn a_record_waiting_for_a_retry_holds_its_partition_but_not_the_others() {
    let topic = unique("retry-other-partition");
    create_topic(&topic, 2);
    let waiting = Record {
        partition: Some(0),
        ..Record::value(b"fails")
    };
    let behind = Record {
        partition: Some(0),
        ..Record::value(b"behind")
    };
    let others: Vec<Record<'_>> = ["a", "b", "c"]
        .iter()
        .map(|value| Record {
            partition: Some(1),
            ..Record::value(value.as_bytes())
        })
        .collect();
    produce(&topic, &[waiting, behind]);
    produce(&topic, &others);
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let handler_seen = seen.clone();
    let app = start(
        orders_on(&topic)
            .set("messaging.incoming.orders.retry.max-retries", 3)
            .set(
                "messaging.incoming.orders.retry.initial-delay.ms",
                3_600_000,
            )
            .set("messaging.incoming.orders.retry.max-delay.ms", 3_600_000)
            .set("messaging.incoming.orders.retry.max-duration.ms", 0)
            .incoming("orders", move |value: String| {
                handler_seen.lock().unwrap().push(value.clone());
                std::future::ready(if value == "fails" {
                    Err(std::io::Error::other("down"))
                } else {
                    Ok(())
                })
            }),
    )
    .await;
    eventually("the other partition is handled and committed", || {
        committed(&topic, &topic, 1) == Some(3)
    })
    .await;
    assert_eq!(committed(&topic, &topic, 0).unwrap_or(0), 0);
    assert!(
        !seen.lock().unwrap().contains(&"behind".to_owned()),
        "the record behind the one waiting for a retry ran before it: {:?}",
        seen.lock().unwrap()
    );
    tokio::time::timeout(PATIENCE, app.shutdown())
        .await
        .expect("shutdown ends the backoff");
}

/// With one place (`max-concurrency` 1, unordered), a record whose backoff ends while another
/// record runs waits for the place, is woken when that one gives it back, and runs before the
/// newer record; every record is committed. (On a paused clock, so the 1 ms backoff ends while
/// the other record's 200 ms wait runs, as long as the three records come in one fetch, as
/// records produced together before the channel starts do. That a waiting retry goes before
/// new records even when the loop could start one first is pinned by `places.rs`'s tests.)
#[tokio::test(start_paused = true)]
async fn a_retry_waiting_for_a_place_is_woken_when_one_is_given_back() {
    let _watchdog =
        paused_clock_watchdog("a_retry_waiting_for_a_place_is_woken_when_one_is_given_back");
    let topic = unique("retry-place");
    create_topic(&topic, 1);
    produce(
        &topic,
        &[
            Record::value(b"fails once"),
            Record::value(b"slow"),
            Record::value(b"newer"),
        ],
    );
    let (sender, mut calls) = mpsc::unbounded_channel::<(String, u32)>();
    let app = start(
        orders_on(&topic)
            .set("messaging.incoming.orders.max-concurrency", 1)
            .set("messaging.incoming.orders.ordering", "unordered")
            .set("messaging.incoming.orders.retry.max-retries", 1)
            .set("messaging.incoming.orders.retry.initial-delay.ms", 1)
            .set("messaging.incoming.orders.retry.jitter", 0)
            .incoming("orders", move |value: String, metadata: Metadata| {
                let Attempt(attempt) = *metadata.get::<Attempt>().expect("the attempt number");
                let _ = sender.send((value.clone(), attempt));
                async move {
                    match (value.as_str(), attempt) {
                        ("fails once", 1) => Err(std::io::Error::other("down")),
                        ("slow", _) => {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            Ok(())
                        }
                        _ => Ok(()),
                    }
                }
            }),
    )
    .await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(calls.recv().await.expect("a handler call"));
    }
    let expected = [
        ("fails once", 1),
        ("slow", 1),
        ("fails once", 2),
        ("newer", 1),
    ];
    assert_eq!(
        seen,
        expected.map(|(value, attempt)| (value.to_owned(), attempt)),
        "the handler calls in order"
    );
    committed_and_alive(&app, &topic, 3).await;
    app.shutdown().await;
}

/// The unprocessed-record age watch does not count a record's wait for its next attempt: each
/// attempt gets the whole `throttled.unprocessed-record-max-age.ms`. Here a record waits 5 s
/// in backoff against a 1 s limit (on a paused clock), then succeeds, and liveness stays UP.
#[tokio::test(start_paused = true)]
async fn a_record_waiting_out_its_backoff_is_not_a_stuck_record() {
    let _watchdog = paused_clock_watchdog("a_record_waiting_out_its_backoff_is_not_a_stuck_record");
    let topic = topic_with("retry-age", &["order-1"]);
    let calls = Arc::new(Mutex::new(0));
    let app = {
        let calls = calls.clone();
        start(
            orders_on(&topic)
                .set(
                    "messaging.incoming.orders.throttled.unprocessed-record-max-age.ms",
                    1000,
                )
                .set("messaging.incoming.orders.retry.max-retries", 2)
                .set("messaging.incoming.orders.retry.initial-delay.ms", 2500)
                .set("messaging.incoming.orders.retry.multiplier", 1)
                .set("messaging.incoming.orders.retry.jitter", 0)
                .incoming("orders", move |_: String| {
                    let mut calls = calls.lock().unwrap();
                    *calls += 1;
                    std::future::ready(if *calls < 3 {
                        Err(std::io::Error::other("not yet"))
                    } else {
                        Ok(())
                    })
                }),
        )
        .await
    };
    // Committed, and alive: 5 s of configured backoff is not a stuck record.
    committed_and_alive(&app, &topic, 1).await;
    assert_eq!(*calls.lock().unwrap(), 3);
    app.shutdown().await;
}

/// With retries on, a handler that never returns is still a stuck record: the age watch
/// counts each attempt from its start (on a paused clock, which moves on while the runtime
/// waits).
#[tokio::test(start_paused = true)]
async fn an_attempt_that_never_returns_is_still_a_stuck_record() {
    let _watchdog = paused_clock_watchdog("an_attempt_that_never_returns_is_still_a_stuck_record");
    let topic = topic_with("retry-stuck", &["order-1"]);
    let calls = Arc::new(Mutex::new(0));
    let app = {
        let calls = calls.clone();
        start(
            orders_on(&topic)
                .set(
                    "messaging.incoming.orders.throttled.unprocessed-record-max-age.ms",
                    500,
                )
                .set("messaging.incoming.orders.retry.max-retries", 3)
                .set("messaging.incoming.orders.retry.initial-delay.ms", 100)
                .incoming("orders", move |_: String| {
                    let first = {
                        let mut calls = calls.lock().unwrap();
                        *calls += 1;
                        *calls == 1
                    };
                    async move {
                        if first {
                            return Err(std::io::Error::other("not yet"));
                        }
                        std::future::pending::<()>().await;
                        Ok(())
                    }
                }),
        )
        .await
    };
    let health = app.health().clone();
    on_a_paused_clock_until(move || health.check(Check::Liveness).data["orders"].is_err()).await;
    let reason = app.health().check(Check::Liveness).data["orders"]
        .clone()
        .unwrap_err();
    assert!(
        reason.contains("the oldest unsettled record of"),
        "DOWN for the stuck record: {reason}"
    );
    assert_eq!(*calls.lock().unwrap(), 2);
    app.shutdown().await;
}
