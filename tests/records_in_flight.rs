//! Records in flight: `max-concurrency` with each `ordering`, dead letters that do not stop
//! their partition, and `max-buffered-records`.
//!
//! Concurrency is proven without timing: the first records of distinct slots meet at a
//! barrier that only opens once all of them run at the same time (one at a time, the test
//! would wait forever and fail on its safety net).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use common::*;
use messaging::{AppBuilder, KafkaMetadata, Message, Metadata};
use tokio::sync::{Barrier, Semaphore};

/// What the handler saw: slots running now, each slot's offsets in the order they started,
/// and every overlap of one slot.
#[derive(Default)]
struct Observed {
    running: HashSet<String>,
    started: BTreeMap<String, Vec<i64>>,
    overlaps: Vec<String>,
    handled: usize,
}

/// A handler that notes entry and exit per slot (`slot_of` names a record's slot), and makes
/// the first record of each of `meet` slots wait at a barrier for the others.
fn observing(
    observed: &Arc<Mutex<Observed>>,
    meet: usize,
    slot_of: fn(&KafkaMetadata) -> String,
) -> impl Fn(String, Metadata) -> Pin<Box<dyn Future<Output = ()> + Send>> + Clone {
    let observed = observed.clone();
    let barrier = Arc::new(Barrier::new(meet));
    move |_value: String, metadata: Metadata| {
        let (observed, barrier) = (observed.clone(), barrier.clone());
        Box::pin(async move {
            let kafka = metadata.get::<KafkaMetadata>().expect("kafka metadata");
            let slot = slot_of(kafka);
            let first_of_its_slot = {
                let mut seen = observed.lock().unwrap();
                if !seen.running.insert(slot.clone()) {
                    seen.overlaps
                        .push(format!("{slot} at offset {}", kafka.offset()));
                }
                let offsets = seen.started.entry(slot.clone()).or_default();
                offsets.push(kafka.offset());
                offsets.len() == 1
            };
            if first_of_its_slot {
                barrier.wait().await;
            }
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            let mut seen = observed.lock().unwrap();
            seen.running.remove(&slot);
            seen.handled += 1;
        })
    }
}

fn by_key(kafka: &KafkaMetadata) -> String {
    kafka.key_str().expect("a text key").to_owned()
}

fn by_partition(kafka: &KafkaMetadata) -> String {
    format!("partition {}", kafka.partition())
}

/// Waits for `records` handler calls, then checks no slot ran two at once or out of order.
async fn every_record_handled_in_slot_order(observed: &Arc<Mutex<Observed>>, records: usize) {
    eventually("every record is handled", || {
        observed.lock().unwrap().handled == records
    })
    .await;
    assert_each_slot_in_order(&observed.lock().unwrap());
}

fn assert_each_slot_in_order(observed: &Observed) {
    assert!(
        observed.overlaps.is_empty(),
        "overlaps: {:?}",
        observed.overlaps
    );
    for (slot, offsets) in &observed.started {
        assert!(
            offsets.windows(2).all(|pair| pair[0] < pair[1]),
            "{slot} ran out of order: {offsets:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn key_order_runs_keys_at_once_but_never_one_key_twice() {
    const KEYS: usize = 20;
    const RECORDS: usize = 400;
    let topic = unique("key-order");
    create_topic(&topic, 1);
    let keys: Vec<String> = (0..KEYS).map(|key| format!("key-{key}")).collect();
    let records: Vec<Record<'_>> = (0..RECORDS)
        .map(|number| Record {
            key: Some(keys[number % KEYS].as_bytes()),
            value: b"\"v\"",
            headers: &[],
            partition: None,
        })
        .collect();
    produce(&topic, &records);
    let observed = Arc::new(Mutex::new(Observed::default()));
    let app = start(
        reading("orders", &topic)
            .set("messaging.incoming.orders.max-concurrency", 64)
            .set("messaging.incoming.orders.ordering", "key")
            .incoming("orders", observing(&observed, KEYS, by_key)),
    )
    .await;
    every_record_handled_in_slot_order(&observed, RECORDS).await;
    eventually("everything is committed", || {
        committed(&topic, &topic, 0) == Some(RECORDS as i64)
    })
    .await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn partition_order_runs_partitions_at_once_but_never_one_partition_twice() {
    const PARTITIONS: i32 = 4;
    const RECORDS: usize = 200;
    let topic = unique("partition-order");
    create_topic(&topic, PARTITIONS);
    let records: Vec<Record<'_>> = (0..RECORDS)
        .map(|number| Record {
            key: None,
            value: b"\"v\"",
            headers: &[],
            partition: Some(number as i32 % PARTITIONS),
        })
        .collect();
    produce(&topic, &records);
    let observed = Arc::new(Mutex::new(Observed::default()));
    let app = start(
        reading("orders", &topic)
            .set("messaging.incoming.orders.max-concurrency", 64)
            .incoming(
                "orders",
                observing(&observed, PARTITIONS as usize, by_partition),
            ),
    )
    .await;
    every_record_handled_in_slot_order(&observed, RECORDS).await;
    for partition in 0..PARTITIONS {
        eventually("everything is committed", || {
            committed(&topic, &topic, partition) == Some((RECORDS / PARTITIONS as usize) as i64)
        })
        .await;
    }
    app.shutdown().await;
}

/// Unordered, the records of one partition run at once; the commit still waits for the
/// slowest, and ends at the end of the partition.
#[tokio::test(flavor = "multi_thread")]
async fn unordered_runs_one_partitions_records_at_once() {
    const AT_ONCE: usize = 16;
    let values: Vec<String> = (0..AT_ONCE).map(|number| number.to_string()).collect();
    let topic = topic_with(
        "unordered",
        &values.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let observed = Arc::new(Mutex::new(Observed::default()));
    let app = start(
        reading("orders", &topic)
            .set("messaging.incoming.orders.max-concurrency", AT_ONCE)
            .set("messaging.incoming.orders.ordering", "unordered")
            .incoming(
                "orders",
                observing(&observed, AT_ONCE, |kafka| {
                    format!("offset {}", kafka.offset())
                }),
            ),
    )
    .await;
    eventually("every record is handled", || {
        observed.lock().unwrap().handled == AT_ONCE
    })
    .await;
    eventually("everything is committed", || {
        committed(&topic, &topic, 0) == Some(AT_ONCE as i64)
    })
    .await;
    app.shutdown().await;
}

/// Handler calls running now, the most that ever ran at once, and how many started.
#[derive(Default)]
struct Running {
    now: usize,
    most: usize,
    started: usize,
}

/// `max-concurrency` is a cap, with retries on or off (with retries a record gives its place
/// back while it waits for its next attempt): while the first records wait at a barrier that
/// opens only once `AT_ONCE` of them run, no further record starts, and never more than
/// `AT_ONCE` run at any time.
#[tokio::test(flavor = "multi_thread")]
async fn max_concurrency_caps_the_records_running_at_once_with_and_without_retries() {
    const AT_ONCE: usize = 4;
    const RECORDS: usize = 24;
    for max_retries in [0, 2] {
        let values: Vec<String> = (0..RECORDS).map(|number| number.to_string()).collect();
        let topic = topic_with(
            &format!("capped-{max_retries}"),
            &values.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let running = Arc::new(Mutex::new(Running::default()));
        let barrier = Arc::new(Barrier::new(AT_ONCE));
        let handler = {
            let running = running.clone();
            move |_value: String| {
                let (running, barrier) = (running.clone(), barrier.clone());
                async move {
                    let first = {
                        let mut running = running.lock().unwrap();
                        running.now += 1;
                        running.most = running.most.max(running.now);
                        running.started += 1;
                        running.started <= AT_ONCE
                    };
                    if first {
                        barrier.wait().await;
                    }
                    for _ in 0..3 {
                        tokio::task::yield_now().await;
                    }
                    running.lock().unwrap().now -= 1;
                }
            }
        };
        let app = start(
            reading("orders", &topic)
                .set("messaging.incoming.orders.max-concurrency", AT_ONCE)
                .set("messaging.incoming.orders.ordering", "unordered")
                .set("messaging.incoming.orders.retry.max-retries", max_retries)
                .incoming("orders", handler),
        )
        .await;
        eventually("every record is handled", || {
            running.lock().unwrap().started == RECORDS
        })
        .await;
        let most = running.lock().unwrap().most;
        assert_eq!(
            most, AT_ONCE,
            "with retry.max-retries={max_retries}, at most max-concurrency records run at once, and that many do"
        );
        app.shutdown().await;
    }
}

/// A dead-letter write that cannot finish yet (the dead-letter producer reaches the cluster
/// through a gate the test opens later) does not stop its partition: the records after it are
/// handled meanwhile. Nothing is committed past it until the write is acknowledged.
#[tokio::test(flavor = "multi_thread")]
async fn a_pending_dead_letter_does_not_stop_its_partition_nor_lets_a_commit_pass_it() {
    let topic = unique("pipelined-dlq");
    let dead_letters = unique("pipelined-dlq-out");
    create_topic(&topic, 2);
    create_topic(&dead_letters, 1);
    produce_on(&topic, 0, &["bad", "ok-1", "ok-2", "ok-3"]);
    let gate = Arc::new(Semaphore::new(0));
    let gated_bootstrap = gated_proxy(&bootstrap(), gate.clone()).await;
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let handler_seen = seen.clone();
    let app = start(
        reading("titles", &topic)
            .set(
                "messaging.incoming.titles.failure-strategy",
                "dead-letter-queue",
            )
            .set(
                "messaging.incoming.titles.dead-letter-queue.topic",
                &dead_letters,
            )
            .set(
                "messaging.incoming.titles.dead-letter-queue.bootstrap.servers",
                &gated_bootstrap,
            )
            .set(
                "messaging.incoming.titles.dead-letter-queue.timeout.ms",
                PATIENCE.as_millis() as u64 * 2,
            )
            .incoming("titles", move |title: String| {
                handler_seen.lock().unwrap().push(title.clone());
                std::future::ready(if title == "bad" {
                    Err(std::io::Error::other("rejected"))
                } else {
                    Ok(())
                })
            }),
    )
    .await;
    eventually("the records after the dead letter are handled", || {
        seen.lock().unwrap().len() == 4
    })
    .await;
    // A commit round that comes after those acks: the other partition's record is produced
    // only now, and its commit shows a round ran since.
    produce(
        &topic,
        &[Record {
            partition: Some(1),
            ..Record::value(b"ok-4")
        }],
    );
    eventually("the other partition is committed", || {
        committed(&topic, &topic, 1) == Some(1)
    })
    .await;
    assert!(
        committed(&topic, &topic, 0).unwrap_or(0) == 0,
        "committed past a record whose dead letter is not written: {:?}",
        committed(&topic, &topic, 0)
    );
    gate.add_permits(usize::MAX >> 4);
    eventually("committed once the dead letter is written", || {
        committed(&topic, &topic, 0) == Some(4)
    })
    .await;
    let written = read(&dead_letters, 1);
    assert_eq!(written[0].value_str(), "bad");
    app.shutdown().await;
}

/// A bootstrap address for `upstream` whose connections are held until `gate` has a permit per
/// connection: a client bootstrapping through it learns nothing of the cluster before then.
async fn gated_proxy(upstream: &str, gate: Arc<Semaphore>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let upstream = upstream
        .split(',')
        .next()
        .expect("a bootstrap server")
        .to_owned();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let (gate, upstream) = (gate.clone(), upstream.clone());
            tokio::spawn(async move {
                gate.acquire().await.expect("gate").forget();
                if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    address
}

/// With a handler that cannot finish, the loop takes records up to `max-buffered-records` and
/// no further, however large the backlog; once the handler goes on, everything is handled and
/// the most ever held is still the cap.
#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_never_makes_the_loop_hold_more_than_max_buffered_records() {
    const BACKLOG: usize = 3000;
    // Three partitions' shares of 13 records held each add up to it.
    const CAP: usize = 39;
    let topic = unique("bounded");
    create_topic(&topic, 3);
    let records: Vec<Record<'_>> = (0..BACKLOG)
        .map(|number| Record {
            partition: Some(number as i32 % 3),
            ..Record::value(b"1")
        })
        .collect();
    produce(&topic, &records);
    let gate = Arc::new(Semaphore::new(0));
    let handled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (handler_gate, handler_handled) = (gate.clone(), handled.clone());
    let app = start(
        reading("numbers", &topic)
            .set("messaging.incoming.numbers.max-concurrency", 8)
            .set("messaging.incoming.numbers.ordering", "unordered")
            .set("messaging.incoming.numbers.max-buffered-records", CAP)
            .incoming("numbers", move |_: u32| {
                let (gate, handled) = (handler_gate.clone(), handler_handled.clone());
                async move {
                    gate.acquire().await.expect("gate open").forget();
                    handled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }),
    )
    .await;
    let held = || app.held_records("numbers").expect("a kafka channel");
    eventually("the loop fills up to the cap", || held().now == CAP).await;
    gate.add_permits(BACKLOG);
    eventually("every record is handled", || {
        handled.load(std::sync::atomic::Ordering::Relaxed) == BACKLOG
    })
    .await;
    assert_eq!(held().peak, CAP, "the most the loop ever held");
    app.shutdown().await;
}

/// The partition whose records arrive first does not take every place in the loop: the
/// records of another partition arriving later are still taken (and handled in their turn),
/// not left behind all of the first one's backlog.
#[tokio::test(flavor = "multi_thread")]
async fn a_partition_with_a_backlog_leaves_the_others_their_share_of_the_loop() {
    const CAP: usize = 40;
    const SHARE: usize = CAP / 2;
    const BACKLOG: usize = 100;
    const LATE: usize = 5;
    let topic = unique("fair-share");
    create_topic(&topic, 2);
    let on = |partition: i32, count: usize| -> Vec<Record<'static>> {
        (0..count)
            .map(|_| Record {
                partition: Some(partition),
                ..Record::value(b"1")
            })
            .collect()
    };
    produce(&topic, &on(0, BACKLOG));
    let gate = Arc::new(Semaphore::new(0));
    let handled = Arc::new(Mutex::new(BTreeMap::<i32, usize>::new()));
    let (handler_gate, handler_handled) = (gate.clone(), handled.clone());
    let app = start(
        reading("numbers", &topic)
            .set("messaging.incoming.numbers.max-buffered-records", CAP)
            .incoming("numbers", move |_: u32, metadata: Metadata| {
                let partition = metadata
                    .get::<KafkaMetadata>()
                    .expect("kafka metadata")
                    .partition();
                let (gate, handled) = (handler_gate.clone(), handler_handled.clone());
                async move {
                    gate.acquire().await.expect("gate open").forget();
                    *handled.lock().unwrap().entry(partition).or_default() += 1;
                }
            }),
    )
    .await;
    let held = || app.held_records("numbers").expect("a kafka channel");
    eventually("partition 0 fills its share", || held().now == SHARE).await;
    produce(&topic, &on(1, LATE));
    eventually(
        "partition 1's records are taken beside partition 0's",
        || held().now == SHARE + LATE,
    )
    .await;
    gate.add_permits(BACKLOG + LATE);
    eventually("every record is handled", || {
        let handled = handled.lock().unwrap();
        handled.get(&0) == Some(&BACKLOG) && handled.get(&1) == Some(&LATE)
    })
    .await;
    assert_eq!(held().peak, SHARE + LATE, "the most the loop ever held");
    app.shutdown().await;
}

/// Records of value 1: the first keyed `stuck`, the others `other`; `partition_of` places
/// each by its number.
fn stuck_first(records: usize, partition_of: fn(usize) -> i32) -> Vec<Record<'static>> {
    (0..records)
        .map(|number| Record {
            key: Some(if number == 0 { b"stuck" } else { b"other" }),
            partition: Some(partition_of(number)),
            ..Record::value(b"1")
        })
        .collect()
}

/// Channel `numbers` on `topic`: four records at once, ordered by key, at most `cap` held.
fn by_key_with_cap(topic: &str, cap: usize) -> AppBuilder {
    reading("numbers", topic)
        .set("messaging.incoming.numbers.max-concurrency", 4)
        .set("messaging.incoming.numbers.ordering", "key")
        .set("messaging.incoming.numbers.max-buffered-records", cap)
}

/// One record that cannot finish stops the committed offset; the records after it, settled,
/// wait behind it for the commit. The loop takes no more than eight times
/// `max-buffered-records` of a partition's records so: the rest wait in the broker. Another
/// partition goes on meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn a_stuck_record_lets_no_more_than_eight_times_max_buffered_records_of_its_partition_pile_up(
) {
    const CAP: usize = 40;
    // The README's bound on records taken and not committable: eight times the cap.
    const NOT_COMMITTABLE: usize = 8 * CAP;
    let topic = unique("stuck-key");
    create_topic(&topic, 2);
    produce(&topic, &stuck_first(1000, |_| 0));
    let handled = Arc::new(Mutex::new(BTreeMap::<i32, usize>::new()));
    let handler_handled = handled.clone();
    let app = start(by_key_with_cap(&topic, CAP).incoming(
        "numbers",
        move |_: u32, metadata: Metadata| {
            let kafka = metadata.get::<KafkaMetadata>().expect("kafka metadata");
            let (partition, stuck) = (kafka.partition(), kafka.key() == Some(b"stuck"));
            *handler_handled
                .lock()
                .unwrap()
                .entry(partition)
                .or_default() += 1;
            async move {
                if stuck {
                    std::future::pending::<()>().await;
                }
            }
        },
    ))
    .await;
    let handled_of = |partition: i32| {
        handled
            .lock()
            .unwrap()
            .get(&partition)
            .copied()
            .unwrap_or(0)
    };
    eventually("the partition fills up to its cap", || {
        handled_of(0) == NOT_COMMITTABLE
    })
    .await;
    // A record of the other partition, handled after that: the loop has looked for more of the
    // first partition's records since, and taken none.
    produce(
        &topic,
        &[Record {
            partition: Some(1),
            ..Record::value(b"1")
        }],
    );
    eventually("the other partition goes on", || handled_of(1) == 1).await;
    assert_eq!(
        handled_of(0),
        NOT_COMMITTABLE,
        "records taken of the stuck partition"
    );
    assert!(app.held_records("numbers").expect("a kafka channel").peak <= CAP);
    assert_eq!(committed(&topic, &topic, 0).unwrap_or(0), 0);
    tokio::time::timeout(PATIENCE, app.shutdown())
        .await
        .expect("shutdown abandons the stuck record");
}

/// Messages the application keeps unsettled count against `max-buffered-records` of their
/// partition although they left the loop: the loop takes no more of the partition once that
/// many are kept. Settling one that is not the oldest (so the committed offset does not move)
/// makes room for exactly one more. Another partition goes on meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn kept_messages_stop_their_partition_at_max_buffered_records_and_any_settle_makes_room() {
    const CAP: usize = 10;
    const BACKLOG: u32 = 100;
    let topic = unique("kept-at-cap");
    create_topic(&topic, 2);
    let values: Vec<String> = (0..BACKLOG).map(|number| number.to_string()).collect();
    produce_on(&topic, 0, &values);
    let (kept, mut taken) = tokio::sync::mpsc::unbounded_channel();
    let app = start(
        reading("numbers", &topic)
            .set("messaging.incoming.numbers.max-buffered-records", CAP)
            .incoming("numbers", move |message: Message<u32>| {
                kept.send(message).expect("the test holds the receiver");
                async {}
            }),
    )
    .await;
    let mut first: Vec<Message<u32>> = Vec::new();
    while first.len() < CAP {
        first.push(next_kept(&mut taken, "a message").await);
    }
    // A record of the other partition, taken after that: the loop has looked for more of the
    // first partition's records since, and taken none.
    produce_on(&topic, 1, &["1000"]);
    let other = next_kept(&mut taken, "the other partition's record").await;
    assert_eq!(*other.payload(), 1000, "no more of the kept partition");
    other.ack().await.expect("ack");
    // Not the oldest: the watermark stays where it is, yet one more record may come in.
    first.remove(CAP / 2).ack().await.expect("ack");
    let next = next_kept(&mut taken, "one more of the kept partition").await;
    assert_eq!(
        *next.payload(),
        CAP as u32,
        "the next record of the kept partition"
    );
    first.push(next);
    produce_on(&topic, 1, &["1001"]);
    let other = next_kept(&mut taken, "the other partition's record").await;
    assert_eq!(
        *other.payload(),
        1001,
        "exactly one more of the kept partition"
    );
    other.ack().await.expect("ack");
    for message in first {
        message.ack().await.expect("ack");
    }
    let mut seen = CAP as u32 + 1;
    while seen < BACKLOG {
        let message = next_kept(&mut taken, "the rest of the backlog").await;
        assert_eq!(*message.payload(), seen, "in order, each once");
        message.ack().await.expect("ack");
        seen += 1;
    }
    eventually("the kept partition is committed to its end", || {
        committed(&topic, &topic, 0) == Some(i64::from(BACKLOG))
    })
    .await;
    app.shutdown().await;
}

/// Produces `values` to `partition` of `topic`, in order.
fn produce_on<V: AsRef<[u8]>>(topic: &str, partition: i32, values: &[V]) {
    let records: Vec<Record<'_>> = values
        .iter()
        .map(|value| Record {
            partition: Some(partition),
            ..Record::value(value.as_ref())
        })
        .collect();
    produce(topic, &records);
}

/// The next message the handler kept, or a failure naming `what` after `PATIENCE`.
async fn next_kept(
    taken: &mut tokio::sync::mpsc::UnboundedReceiver<Message<u32>>,
    what: &str,
) -> Message<u32> {
    tokio::time::timeout(PATIENCE, taken.recv())
        .await
        .unwrap_or_else(|_| panic!("gave up waiting for {what}"))
        .expect("the handler holds the sender")
}

/// A partition held at its cap is left unread while the other goes on, and read again once
/// it has room. Nothing may be lost or handled twice on the way: every record of both
/// partitions is handled once, each key's in offset order, and both partitions are committed
/// to their end.
#[tokio::test(flavor = "multi_thread")]
async fn a_partition_held_at_its_cap_goes_on_with_every_record_once_in_order() {
    const PER_PARTITION: i64 = 1500;
    const CAP: usize = 40;
    let topic = unique("paused-at-cap");
    create_topic(&topic, 2);
    produce(
        &topic,
        &stuck_first(2 * PER_PARTITION as usize, |number| (number % 2) as i32),
    );
    let gate = Arc::new(Semaphore::new(0));
    let handled = Arc::new(Mutex::new(BTreeMap::<i32, Vec<i64>>::new()));
    let (handler_gate, handler_handled) = (gate.clone(), handled.clone());
    let app = start(by_key_with_cap(&topic, CAP).incoming(
        "numbers",
        move |_: u32, metadata: Metadata| {
            let kafka = metadata.get::<KafkaMetadata>().expect("kafka metadata");
            let (partition, offset) = (kafka.partition(), kafka.offset());
            let stuck = kafka.key() == Some(b"stuck");
            let (gate, handled) = (handler_gate.clone(), handler_handled.clone());
            async move {
                if stuck {
                    // Partition 0's committed offset stands still here; its records
                    // behind this one, settled, fill its cap.
                    gate.acquire().await.expect("gate open").forget();
                }
                handled
                    .lock()
                    .unwrap()
                    .entry(partition)
                    .or_default()
                    .push(offset);
            }
        },
    ))
    .await;
    let handled_of = |partition: i32| handled.lock().unwrap().get(&partition).map_or(0, Vec::len);
    eventually(
        "partition 0 reaches its cap and partition 1 its end",
        // Eight times the cap taken and not committable (README, "The memory bound"), the
        // stuck record among them.
        || handled_of(0) == 8 * CAP - 1 && handled_of(1) == PER_PARTITION as usize,
    )
    .await;
    gate.add_permits(1);
    eventually("partition 0 is handled to its end", || {
        handled_of(0) == PER_PARTITION as usize
    })
    .await;
    for (partition, offsets) in handled.lock().unwrap().iter() {
        let mut each = offsets.clone();
        each.sort_unstable();
        let expected: Vec<i64> = (0..PER_PARTITION).collect();
        assert_eq!(each, expected, "partition {partition}: each offset once");
        // The stuck record aside, one key: offset order.
        let others: Vec<i64> = offsets
            .iter()
            .copied()
            .filter(|&offset| offset > 0)
            .collect();
        assert_eq!(
            others,
            expected[1..],
            "partition {partition}: in offset order"
        );
    }
    for partition in 0..2 {
        eventually("both partitions are committed to their end", || {
            committed(&topic, &topic, partition) == Some(PER_PARTITION)
        })
        .await;
    }
    app.shutdown().await;
}
