//! The health endpoints over HTTP, in each state: starting, UP, a failed channel, an
//! unreachable outgoing broker, a missing outgoing or dead-letter topic, a channel switched out with `health-enabled=false`; and a
//! health port that is taken; and how an unreachable broker is logged.

mod common;

use common::*;
use serde_json::Value;

fn with_health_server(builder: messaging::AppBuilder) -> messaging::AppBuilder {
    builder
        .set("messaging.health.enabled", true)
        .set("messaging.health.port", 0)
}

async fn get_json(app: &messaging::RunningApp, path: &str) -> (u16, Value) {
    let (status, body) = http_get(app.health_address().expect("health server on"), path).await;
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|error| panic!("{path}: {error}: {body}")),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn up_then_down_with_the_failed_channel_and_its_reason() {
    let topic = unique("health");
    create_topic(&topic, 1);
    let app = start(with_health_server(
        builder()
            .set("messaging.incoming.movies.topic", &topic)
            .set("messaging.incoming.quiet.topic", &topic)
            .set("messaging.incoming.quiet.health-enabled", false)
            .incoming("movies", |title: String| async move {
                if title.contains('\'') {
                    return Err(format!(
                        "I don't like movies with ' in their title: {title}"
                    ));
                }
                Ok(())
            })
            .incoming("quiet", |_: String| async {}),
    ))
    .await;

    eventually("ready", || {
        app.health()
            .report(&[messaging::health::Check::Readiness])
            .status
            == messaging::health::Status::Up
    })
    .await;
    for path in [
        "/health",
        "/health/live",
        "/health/ready",
        "/health/started",
    ] {
        // Readiness is re-checked all the time (a broker probe every 2 s): on a loaded machine
        // one slow probe may turn it DOWN for a moment, so each path gets its own patience.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let (status, json) = loop {
            let (status, json) = get_json(&app, path).await;
            if status == 200 || tokio::time::Instant::now() > deadline {
                break (status, json);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert_eq!(status, 200, "{path}: {json}");
        assert_eq!(json["status"], "UP");
        for check in json["checks"].as_array().unwrap() {
            assert_eq!(check["data"]["movies"], "[OK]", "{path}: {json}");
            assert!(
                check["data"].get("quiet").is_none(),
                "health-enabled=false leaves the channel out: {json}"
            );
        }
    }
    let (_, json) = get_json(&app, "/health").await;
    let names: Vec<&str> = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|check| check["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "messaging liveness",
            "messaging readiness",
            "messaging startup"
        ]
    );

    produce_values(&topic, &["Schindler's List"]);
    eventually("liveness DOWN", || {
        app.health()
            .report(&[messaging::health::Check::Liveness])
            .status
            == messaging::health::Status::Down
    })
    .await;
    let (status, json) = get_json(&app, "/health/live").await;
    assert_eq!(status, 503);
    assert_eq!(json["status"], "DOWN");
    assert_eq!(json["checks"][0]["name"], "messaging liveness");
    assert_eq!(
        json["checks"][0]["data"]["movies"],
        "[KO] - I don't like movies with ' in their title: Schindler's List"
    );
    let (status, _) = get_json(&app, "/health").await;
    assert_eq!(status, 503);
    let (status, body) = http_get(app.health_address().unwrap(), "/nope").await;
    assert_eq!(status, 404, "{body}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outgoing_channel_that_cannot_reach_its_broker_is_not_ready() {
    let app = start(with_health_server(
        builder()
            .outgoing("alerts")
            .set("messaging.outgoing.alerts.bootstrap.servers", "127.0.0.1:1"),
    ))
    .await;
    eventually(
        "the probe reported",
        || matches!(&app.health().check(messaging::health::Check::Readiness).data["alerts"], Err(reason) if reason.contains("cannot reach the broker")),
    )
    .await;
    let (status, json) = get_json(&app, "/health/ready").await;
    assert_eq!(status, 503);
    assert!(
        json["checks"][0]["data"]["alerts"]
            .as_str()
            .unwrap()
            .starts_with("[KO] - cannot reach the broker"),
        "{json}"
    );
    let (status, _) = get_json(&app, "/health/live").await;
    assert_eq!(status, 200, "unreachable is not dead");
    let (status, json) = get_json(&app, "/health/started").await;
    assert_eq!(status, 503, "{json}");
    app.shutdown().await;
}

/// An outgoing channel whose producer failed for good (here: the cluster refuses the
/// idempotent producer its producer id, which librdkafka takes as fatal) is not live, with the
/// reason: its broker still answers, but the producer sends nothing any more.
#[tokio::test(flavor = "multi_thread")]
async fn an_outgoing_channel_whose_producer_failed_for_good_is_not_live() {
    let (cluster, bootstrap, topic) = cluster_of_its_own("fatal-producer", &[]);
    cluster.request_errors(
        rdkafka::types::RDKafkaApiKey::InitProducerId,
        &[rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED],
    );
    let app = start(
        builder()
            .outgoing("alerts")
            .set("messaging.outgoing.alerts.bootstrap.servers", &bootstrap)
            .set("messaging.outgoing.alerts.topic", &topic),
    )
    .await;
    let liveness = || app.health().check(messaging::health::Check::Liveness).data["alerts"].clone();
    eventually("liveness DOWN", || liveness().is_err()).await;
    let reason = liveness().unwrap_err();
    assert!(
        reason.contains("the producer cannot send any more (librdkafka's fatal error: Failed to acquire idempotence PID")
            && reason.contains("Cluster authorization failed"),
        "{reason}"
    );
    app.shutdown().await;
}

/// A channel whose dead-letter producer cannot reach its broker is not ready, and says which
/// client: its records could be read but not dead-lettered.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_producer_that_cannot_reach_its_broker_makes_its_channel_not_ready() {
    let topic = unique("unreachable-dead-letters");
    create_topic(&topic, 1);
    let app = start(with_health_server(
        builder()
            .set("messaging.incoming.orders.topic", &topic)
            .set(
                "messaging.incoming.orders.failure-strategy",
                "dead-letter-queue",
            )
            .set(
                "messaging.incoming.orders.dead-letter-queue.bootstrap.servers",
                "127.0.0.1:1",
            )
            .incoming("orders", |_: String| async {}),
    ))
    .await;
    eventually(
        "the dead-letter producer's probe reported",
        || matches!(&app.health().check(messaging::health::Check::Readiness).data["orders"], Err(reason) if reason.contains("the dead-letter producer cannot reach its broker")),
    )
    .await;
    let (status, json) = get_json(&app, "/health/ready").await;
    assert_eq!(status, 503, "{json}");
    let (status, json) = get_json(&app, "/health/live").await;
    assert_eq!(status, 200, "unreachable is not dead: {json}");
    app.shutdown().await;
}

/// While a broker cannot be reached, each client reports the same error on every failed
/// reconnection (several a second): each kind is logged once, then at most once a minute,
/// and the repeats in between go to DEBUG, for the consumer, the producer and the
/// dead-letter producer alike.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_broker_is_logged_once_per_minute_not_once_per_reconnection() {
    let logs = captured_logs();
    let started = std::time::Instant::now();
    let app = start(
        builder()
            .set("messaging.incoming.logs-in.topic", unique("logs-in"))
            .set(
                "messaging.incoming.logs-in.bootstrap.servers",
                "127.0.0.1:1",
            )
            .set(
                "messaging.incoming.logs-in.failure-strategy",
                "dead-letter-queue",
            )
            .set(
                "messaging.outgoing.logs-out.bootstrap.servers",
                "127.0.0.1:1",
            )
            .incoming("logs-in", |_: String| async {})
            .outgoing("logs-out"),
    )
    .await;
    let clients = [
        ("logs-in", "consumer"),
        ("logs-in", "dead-letter producer"),
        ("logs-out", "producer"),
    ];
    let lines_of = |level: &str, channel: &str, client: &str| -> Vec<String> {
        let tag = format!("channel={channel} client={client} ");
        logs.text()
            .lines()
            .filter(|line| line.contains(level) && line.contains(&tag))
            .map(str::to_owned)
            .collect()
    };
    eventually("every client's error repeated three times", || {
        clients
            .iter()
            .all(|(channel, client)| lines_of("DEBUG", channel, client).len() >= 3)
    })
    .await;
    app.shutdown().await;
    let minutes = started.elapsed().as_secs() / 60;
    for (channel, client) in clients {
        let logged = lines_of("WARN", channel, client);
        assert!(!logged.is_empty(), "{channel} {client}: nothing at WARN");
        // A kind is the error's code (the word after "Global error: " or "Message consumption
        // error: ") and the place its reason names first, if any (a broker: "127.0.0.1:1/1: ").
        let mut kinds = std::collections::HashMap::<(String, String), u64>::new();
        for line in &logged {
            let (_, error) = line
                .split_once(" error=")
                .unwrap_or_else(|| panic!("no error in {line}"));
            let (error, reason) = error.split_once("): ").unwrap_or((error, ""));
            let code = error.split("error: ").nth(1).unwrap_or(error);
            let code = code.split_whitespace().next().unwrap_or_default();
            let place = match reason.split_once(": ") {
                Some((place, _)) if !place.contains(' ') => place,
                _ => "",
            };
            *kinds
                .entry((code.to_owned(), place.to_owned()))
                .or_default() += 1;
        }
        for ((code, place), lines) in kinds {
            assert!(
                lines <= 1 + minutes,
                "{channel} {client}: {code} at {place:?} logged {lines} times in {minutes} full minutes: {logged:#?}"
            );
        }
        let old_warning = format!("consumer error channel={channel} ");
        assert!(
            !logs.text().contains(&old_warning),
            "{channel}: a line per error"
        );
    }
}

/// A missing outgoing or dead-letter topic fails every write to it: the channel is not ready,
/// naming the topic, until the topic is there. (The topics' clients talk to the embedded
/// cluster by its address, so the library does not create them, and may not auto-create them.)
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_outgoing_or_dead_letter_topic_makes_its_channel_not_ready_until_it_exists() {
    let input = unique("missing-topics-in");
    create_topic(&input, 1);
    let (output, dead_letters) = (unique("missing-out"), unique("missing-dead-letters"));
    let app = start(with_health_server(
        builder()
            .set("messaging.incoming.orders.topic", &input)
            .set(
                "messaging.incoming.orders.failure-strategy",
                "dead-letter-queue",
            )
            .set(
                "messaging.incoming.orders.dead-letter-queue.topic",
                &dead_letters,
            )
            .set(
                "messaging.incoming.orders.dead-letter-queue.bootstrap.servers",
                bootstrap(),
            )
            .set(
                "messaging.incoming.orders.dead-letter-queue.allow.auto.create.topics",
                false,
            )
            .incoming("orders", |_: String| async {})
            .outgoing("alerts")
            .set("messaging.outgoing.alerts.topic", &output)
            .set("messaging.outgoing.alerts.bootstrap.servers", bootstrap())
            .set("messaging.outgoing.alerts.allow.auto.create.topics", false),
    ))
    .await;
    let reason = |channel: &str| {
        app.health()
            .check(messaging::health::Check::Readiness)
            .data
            .get(channel)
            .cloned()
    };
    eventually("both missing topics reported", || {
        matches!(reason("alerts"), Some(Err(text)) if text.contains(&format!("the topic {output} cannot be written")))
            && matches!(reason("orders"), Some(Err(text)) if text.contains(&format!("the dead-letter topic {dead_letters} cannot be written")))
    })
    .await;
    let (status, json) = get_json(&app, "/health/ready").await;
    assert_eq!(status, 503, "{json}");
    let (status, json) = get_json(&app, "/health/live").await;
    assert_eq!(status, 200, "a missing topic is not death: {json}");
    assert!(
        matches!(
            app.health().check(messaging::health::Check::Startup).data.get("alerts"),
            Some(Ok(_))
        ),
        "the broker answered, so the outgoing channel has started: a startup probe must not restart the service over a topic"
    );

    create_topic(&output, 1);
    create_topic(&dead_letters, 1);
    eventually("ready once both topics exist", || {
        matches!(reason("alerts"), Some(Ok(_))) && matches!(reason("orders"), Some(Ok(_)))
    })
    .await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_health_port_in_use_fails_the_start_naming_key_port_and_source_before_any_consumer_exists(
) {
    let occupant = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = occupant.local_addr().unwrap().port();
    let topic = unique("never-consumed");
    let app = builder()
        .set("messaging.health.enabled", true)
        .set("messaging.health.port", port)
        .set("messaging.incoming.movies.topic", &topic)
        .incoming("movies", |_: String| async {})
        .build()
        .unwrap();
    let error = match app.start().await {
        Err(messaging::Error::Config(error)) => error,
        Err(other) => panic!("expected a configuration error, got {other}"),
        Ok(_) => panic!("the health port is taken, the start must fail"),
    };
    assert_eq!(error.key(), "messaging.health.port");
    assert_eq!(error.value(), Some(port.to_string().as_str()));
    assert_eq!(error.source(), Some(&messaging::Source::Code));
    let text = error.to_string();
    assert!(
        text.contains(&format!(
            "messaging.health.port` = `{port}` (from AppBuilder::set): cannot listen"
        )),
        "{text}"
    );
    // The library creates a channel's topic on the embedded cluster just before its consumer:
    // no topic, no consumer, no group join.
    assert!(
        !topic_exists(&topic),
        "the consumer of {topic} was created before the health port was bound"
    );
    drop(occupant);
}
