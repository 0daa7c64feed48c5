//! Readiness is continuous: against a broker of the test's own, stopped and started again,
//! both an incoming and an outgoing channel go not-ready with the reason while it is away and
//! ready again once it answers. Runs only where the end-to-end tests run (see `e2e_broker.rs`).

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use messaging::health::{Check, Status};

/// Sends one record and waits until the channel's handler has it: ready means consuming.
async fn reads_a_new_record(
    broker: &PrivateBroker,
    topic: &str,
    received: &Mutex<Vec<String>>,
    value: &'static str,
) {
    let (bootstrap, topic_name) = (broker.bootstrap.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        produce_at(&bootstrap, &topic_name, &[Record::value(value.as_bytes())])
    })
    .await
    .expect("produced");
    eventually(&format!("the channel reads {value:?}"), || {
        received.lock().unwrap().iter().any(|seen| seen == value)
    })
    .await;
}

fn readiness(app: &messaging::RunningApp) -> messaging::health::CheckReport {
    app.health().check(Check::Readiness)
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_follows_the_broker_going_away_and_coming_back() {
    if broker().is_none() {
        return;
    }
    let broker = Arc::new(
        tokio::task::spawn_blocking(PrivateBroker::start)
            .await
            .expect("broker starts"),
    );
    create_topics(&broker.bootstrap, &[("orders", 1), ("orders-out", 1)]).await;
    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let app = start(
        builder()
            .set(
                "messaging.connector.kafka.bootstrap.servers",
                &broker.bootstrap,
            )
            .incoming("orders", {
                let received = received.clone();
                move |order: String| {
                    received.lock().unwrap().push(order);
                    async {}
                }
            })
            .outgoing("orders-out"),
    )
    .await;
    eventually("both channels ready", || {
        readiness(&app).status == Status::Up
    })
    .await;

    let stopping = broker.clone();
    tokio::task::spawn_blocking(move || stopping.stop())
        .await
        .expect("broker stops");
    eventually("both channels not ready while the broker is away", || {
        let report = readiness(&app);
        ["orders", "orders-out"].iter().all(|channel| {
            report.data[*channel]
                .as_ref()
                .is_err_and(|reason| reason.contains("cannot reach the broker"))
        })
    })
    .await;

    let restarting = broker.clone();
    tokio::task::spawn_blocking(move || restarting.restart())
        .await
        .expect("broker starts again");
    eventually("both channels ready again", || {
        readiness(&app).status == Status::Up
    })
    .await;
    // Ready means consuming: a record sent now is read.
    reads_a_new_record(&broker, "orders", &received, "after the restart").await;
    app.shutdown().await;
    drop(broker);
}

/// A broker that freezes (SIGSTOP) rather than going away: no broker call may block a tokio
/// worker, so `/health` keeps answering, also after the consumer gave its partitions up during
/// the freeze (a revoke, with its commit); readiness goes DOWN with the reason while the broker
/// is frozen and comes back once it thaws and the channel consumes again; and a shutdown
/// during a freeze keeps to its timeout.
// One worker: a broker call that blocked it would stall `/health` and this test's own waits,
// which the watchdog then turns into a failure (with the revoke's commit made synchronous
// again, the test hung for 10 minutes before the watchdog; as it is, it passes in about 20 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_frozen_broker_stalls_neither_health_nor_shutdown() {
    if broker().is_none() {
        return;
    }
    let broker = Arc::new(
        tokio::task::spawn_blocking(PrivateBroker::start)
            .await
            .expect("broker starts"),
    );
    create_topics(&broker.bootstrap, &[("payments", 1)]).await;
    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let app = start(
        builder()
            .set(
                "messaging.connector.kafka.bootstrap.servers",
                &broker.bootstrap,
            )
            .set("messaging.health.enabled", true)
            .set("messaging.health.port", 0)
            .set("messaging.shutdown.timeout.ms", 2000)
            .incoming("payments", {
                let received = received.clone();
                move |payment: String| {
                    received.lock().unwrap().push(payment);
                    async {}
                }
            }),
    )
    .await;
    let health = app.health_address().expect("health server");
    eventually("ready", || readiness(&app).status == Status::Up).await;
    // Settled right before the freeze: the revoke during the freeze sends its final commit.
    reads_a_new_record(&broker, "payments", &received, "before the freeze").await;

    broker.freeze();
    // Each wait below gives up after PATIENCE, unless the worker they need is blocked.
    let watchdog = Watchdog::start(PATIENCE * 4, "the frozen-broker checks", {
        let broker = broker.clone();
        move || broker.thaw()
    });
    eventually("not ready while the broker is frozen", || {
        readiness(&app).data["payments"]
            .as_ref()
            .is_err_and(|reason| reason.contains("cannot reach the broker"))
    })
    .await;
    // Past session.timeout.ms without its coordinator, librdkafka gives the partitions up: a
    // revoke during the freeze, whose commit must not block a worker either.
    eventually("the partitions given up while the broker is frozen", || {
        readiness(&app).data["payments"]
            .as_ref()
            .is_err_and(|reason| reason.contains("partitions revoked"))
    })
    .await;
    let (status, body) = tokio::time::timeout(PATIENCE, http_get(health, "/health/ready"))
        .await
        .expect("/health answers while the broker is frozen");
    assert_eq!(status, 503, "{body}");

    broker.thaw();
    drop(watchdog);
    eventually("ready again once the broker thaws", || {
        readiness(&app).status == Status::Up
    })
    .await;
    reads_a_new_record(&broker, "payments", &received, "after the thaw").await;

    broker.freeze();
    let shutdown = tokio::time::timeout(PATIENCE, app.shutdown()).await;
    broker.thaw();
    shutdown.expect("the shutdown keeps to its timeout while the broker is frozen");
    drop(broker);
}
