//! Configuration errors surface at startup, naming the key, the value, its source and the
//! accepted values; the file overrides code; secrets stay out of errors.

mod common;

use common::*;
use messaging::{App, Error, Failure, Source};

fn config_error(result: Result<impl Sized, Error>) -> messaging::ConfigError {
    match result {
        Err(Error::Config(error)) => error,
        Err(other) => panic!("expected a configuration error, got {other}"),
        Ok(_) => panic!("expected a configuration error"),
    }
}

#[test]
fn an_unknown_failure_strategy_names_key_value_source_and_choices() {
    let error = config_error(
        App::builder()
            .set("messaging.incoming.movies.failure-strategy", "retry")
            .incoming("movies", |_: String| async {})
            .build(),
    );
    assert_eq!(error.key(), "messaging.incoming.movies.failure-strategy");
    assert_eq!(error.value(), Some("retry"));
    assert_eq!(error.source(), Some(&Source::Code));
    assert!(
        error
            .to_string()
            .ends_with("accepted values: fail, ignore, dead-letter-queue, delayed-retry-topic"),
        "{error}"
    );
}

#[test]
fn a_malformed_duration_is_an_error() {
    let error = config_error(
        App::builder()
            .set(
                "messaging.incoming.movies.throttled.unprocessed-record-max-age.ms",
                "1 minute",
            )
            .incoming("movies", |_: String| async {})
            .build(),
    );
    assert_eq!(
        error.key(),
        "messaging.incoming.movies.throttled.unprocessed-record-max-age.ms"
    );
    assert!(
        error
            .to_string()
            .contains("not a whole number of milliseconds"),
        "{error}"
    );
}

/// librdkafka takes a `message.timeout.ms` up to i32::MAX: a larger dead-letter write timeout
/// is refused under its own key, not under the producer property the library sets from it.
#[test]
fn a_dead_letter_timeout_beyond_librdkafkas_range_is_refused_under_its_own_key() {
    let key = "messaging.incoming.movies.dead-letter-queue.timeout.ms";
    let error = config_error(
        App::builder()
            .set(key, "3000000000")
            .incoming("movies", |_: String| async {})
            .build(),
    );
    assert_eq!(error.key(), key);
    assert!(
        error.to_string().contains("from 1 to 2147483647"),
        "{error}"
    );
}

#[test]
fn the_config_file_overrides_code() {
    let path = std::env::temp_dir().join(format!("{}.toml", unique("messaging")));
    std::fs::write(
        &path,
        "[messaging.incoming.movies]\ncommit-strategy = \"sometimes\"\n",
    )
    .unwrap();
    let error = config_error(
        App::builder()
            .config_file(&path)
            .set("messaging.incoming.movies.commit-strategy", "latest")
            .incoming("movies", |_: String| async {})
            .build(),
    );
    assert_eq!(error.value(), Some("sometimes"));
    assert_eq!(error.source(), Some(&Source::File(path.clone())));
    assert!(
        error.to_string().contains("throttled, latest, ignore"),
        "{error}"
    );

    std::fs::write(&path, "[messaging.incoming").unwrap();
    let error = config_error(App::builder().config_file(&path).build());
    assert!(error.to_string().contains("not valid TOML"), "{error}");
    std::fs::remove_file(&path).unwrap();

    let error = config_error(App::builder().config_file(&path).build());
    assert!(error.to_string().contains("cannot read it"), "{error}");
}

#[test]
fn an_unknown_connector_and_a_duplicate_handler_are_errors() {
    let error = config_error(
        App::builder()
            .set("messaging.outgoing.out.connector", "rabbit")
            .outgoing("out")
            .build(),
    );
    assert!(
        error
            .to_string()
            .contains("accepted values: kafka, memory, cosmos"),
        "{error}"
    );
    let result = App::builder()
        .incoming("movies", |_: String| async {})
        .incoming("movies", |_: String| async {})
        .build();
    assert!(matches!(result, Err(Error::Channel { channel, .. }) if channel == "movies"));
}

#[test]
fn a_channel_added_in_code_takes_the_names_the_attributes_take() {
    let refused = |build: Result<App, Error>| match build {
        Err(Error::Channel { channel, problem }) => (channel, problem),
        Err(other) => panic!("expected a channel error, got {other}"),
        Ok(_) => panic!("expected a channel error"),
    };
    // Brackets name a retry topic's reader in health and metrics (`<channel>[<retry topic>]`).
    let (channel, problem) = refused(
        App::builder()
            .incoming("orders[orders-retry-5000]", |_: String| async {})
            .build(),
    );
    assert_eq!(channel, "orders[orders-retry-5000]");
    assert_eq!(
        problem,
        "'[' is not allowed in a channel name; use only ASCII letters, digits, '.', '_' and '-'"
    );
    let (channel, _) = refused(
        App::builder()
            .processor("orders", "orders db", |order: String| async move { order })
            .build(),
    );
    assert_eq!(channel, "orders db");
    let (channel, problem) = refused(App::builder().outgoing("").build());
    assert_eq!(
        (channel.as_str(), problem.as_str()),
        ("", "the channel name must not be empty")
    );
    // Both would read MESSAGING_OUTGOING_ORDERS_DB_*, each taking the other's settings.
    let (channel, problem) = refused(
        App::builder()
            .outgoing("orders-db")
            .outgoing("Orders_DB")
            .build(),
    );
    assert_eq!(channel, "Orders_DB");
    assert_eq!(
        problem,
        "it and the outgoing channel `orders-db` would both read the variables MESSAGING_OUTGOING_ORDERS_DB_*; rename one of them"
    );
    // An incoming and an outgoing channel read variables of their own.
    for (incoming, outgoing) in [("orders-db", "orders_db"), ("orders.v2", "orders_db-1")] {
        let built = App::builder()
            .processor(incoming, outgoing, |order: String| async move { order })
            .build();
        assert!(built.is_ok(), "{incoming} to {outgoing}");
    }
}

/// Health and metrics know a channel by its name alone: an incoming and an outgoing channel of
/// one name would share one /health entry (the outgoing side's start making the consumer look
/// ready before it has its partitions) and one `channel` label.
#[test]
fn an_incoming_and_an_outgoing_channel_may_not_share_a_name() {
    let problem = "an incoming and an outgoing channel both take this name, and health and metrics know a channel by its name alone; rename one of them (to keep its topic, set `messaging.<incoming|outgoing>.<new name>.topic`)";
    for built in [
        App::builder()
            .processor("orders", "orders", |order: String| async move { order })
            .build(),
        App::builder()
            .outgoing("orders")
            .incoming("orders", |_: String| async {})
            .build(),
    ] {
        match built {
            Err(Error::Channel {
                channel,
                problem: refused,
            }) => assert_eq!((channel.as_str(), refused.as_str()), ("orders", problem)),
            Err(other) => panic!("expected a channel error, got {other}"),
            Ok(_) => panic!("expected a channel error"),
        }
    }
    // Reading and writing one topic takes two names.
    let built = App::builder()
        .set("messaging.outgoing.orders-out.topic", "orders")
        .outgoing("orders-out")
        .incoming("orders", |_: String| async {})
        .build();
    assert!(built.is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_bootstrap_servers_fail_at_startup_naming_the_variables() {
    let app = App::builder()
        .set("messaging.health.enabled", false)
        .incoming("movies", |_: String| async {})
        .build()
        .unwrap();
    let error = config_error(app.start().await);
    assert_eq!(error.key(), "messaging.incoming.movies.bootstrap.servers");
    let text = error.to_string();
    assert!(
        text.contains("MESSAGING_CONNECTOR_KAFKA_BOOTSTRAP_SERVERS")
            && text.contains("KAFKA_BOOTSTRAP_SERVERS"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_property_librdkafka_rejects_fails_at_startup_and_secrets_stay_out() {
    let app = builder()
        .set("messaging.connector.kafka.sasl.password", "hunter2")
        .set("messaging.incoming.movies.no.such.property", "1")
        .incoming("movies", |_: String| async {})
        .build()
        .unwrap();
    let error = config_error(app.start().await);
    assert_eq!(error.key(), "messaging.incoming.movies.no.such.property");
    assert_eq!(error.source(), Some(&Source::Code));
    assert!(!format!("{error} {error:?}").contains("hunter2"), "{error}");
}

#[test]
fn errors_debug_print_like_display_with_their_causes() {
    // `fn main() -> messaging::Result<()>` prints a returned error with `Debug`.
    let result = App::builder()
        .set("messaging.incoming.movies.failure-strategy", "retry")
        .incoming("movies", |_: String| async {})
        .build();
    let Err(error) = result else {
        panic!("expected a configuration error")
    };
    assert_eq!(format!("{error:?}"), error.to_string());
    assert!(
        format!("{error:?}").starts_with(
            "configuration key `messaging.incoming.movies.failure-strategy` = `retry`"
        ),
        "{error:?}"
    );

    #[derive(Debug)]
    struct Unreachable(std::io::Error);
    impl std::fmt::Display for Unreachable {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("price service unreachable")
        }
    }
    impl std::error::Error for Unreachable {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    let nacked = Error::Nacked(Failure::from_error(Unreachable(std::io::Error::other(
        "connection refused",
    ))));
    assert_eq!(
        format!("{nacked:?}"),
        "message rejected: price service unreachable\n\nCaused by:\n    connection refused"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_stay_out_of_the_debug_output_of_errors() {
    let app = builder()
        .set("messaging.outgoing.alerts.sasl.password", "hunter2")
        .set("messaging.outgoing.alerts.acks", "sometimes")
        .outgoing("alerts")
        .build()
        .unwrap();
    let Err(error) = app.start().await else {
        panic!("librdkafka rejects acks=sometimes")
    };
    let debug = format!("{error:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(
        debug.starts_with("configuration key `messaging.outgoing.alerts."),
        "{debug}"
    );
}

/// A library attribute set on a channel that does not read it (a failure strategy on an
/// outgoing channel, an output's key propagation on an incoming one) is not passed to the
/// Kafka client either: the build warns of it, naming the key.
#[test]
fn an_attribute_of_the_other_direction_is_warned_of() {
    let logs = captured_logs();
    let built = builder()
        .set("messaging.incoming.orders.topic", unique("orders"))
        .set("messaging.incoming.orders.propagate-record-key", false)
        .set(
            "messaging.outgoing.alerts.failure-strategy",
            "dead-letter-queue",
        )
        .set("messaging.outgoing.alerts.retry.max-retries", 3)
        .incoming("orders", |_: String| async {})
        .outgoing("alerts")
        .build();
    assert!(built.is_ok(), "a warning, not an error");
    let text = logs.text();
    for (key, what) in [
        (
            "messaging.incoming.orders.propagate-record-key",
            "an incoming channel",
        ),
        (
            "messaging.outgoing.alerts.failure-strategy",
            "an outgoing channel of this connector",
        ),
        (
            "messaging.outgoing.alerts.retry.max-retries",
            "an outgoing channel of this connector",
        ),
    ] {
        assert!(
            text.lines().any(|line| line.contains(key)
                && line.contains(&format!("set, but {what}"))
                && line.contains("it has no effect")),
            "{key}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_consumer_logs_its_group_id_and_where_it_came_from() {
    let logs = captured_logs();
    let app = start(
        builder()
            .set("messaging.application-name", "billing")
            .set("messaging.incoming.orders.topic", unique("orders"))
            .set("messaging.incoming.audit.topic", unique("audit"))
            .set("messaging.incoming.audit.group.id", "auditors")
            .incoming("orders", |_: String| async {})
            .incoming("audit", |_: String| async {}),
    )
    .await;
    // Logged while each consumer is built, before `start` returns.
    app.shutdown().await;
    let text = logs.text();
    let defaulted =
        "consumer group `billing-orders` (from built-in default: <application-name>-<channel>, \
                     with messaging.application-name `billing` from AppBuilder::set)";
    assert_eq!(text.matches(defaulted).count(), 1, "{text}");
    assert_eq!(
        text.matches("consumer group `auditors` (from AppBuilder::set)")
            .count(),
        1,
        "{text}"
    );
}

#[test]
fn a_key_that_names_nothing_is_an_error_suggesting_the_closest_key() {
    let error = config_error(App::builder().set("messaging.health.prot", 9090).build());
    assert_eq!(error.key(), "messaging.health.prot");
    assert_eq!(error.source(), Some(&Source::Code));
    assert!(
        error
            .to_string()
            .contains("did you mean `messaging.health.port`?"),
        "{error}"
    );

    let error = config_error(
        App::builder()
            .set("messaging.incoming.order.auto.offset.reset", "earliest")
            .incoming("orders", |_: String| async {})
            .build(),
    );
    assert!(
        error
            .to_string()
            .contains("did you mean `messaging.incoming.orders.auto.offset.reset`?"),
        "{error}"
    );

    let path = std::env::temp_dir().join(format!("{}.toml", unique("unknown")));
    std::fs::write(
        &path,
        "[messaging.connector.kafak]\n\"bootstrap.servers\" = \"broker:9092\"\n",
    )
    .unwrap();
    let error = config_error(App::builder().config_file(&path).build());
    std::fs::remove_file(&path).unwrap();
    assert_eq!(error.key(), "messaging.connector.kafak.bootstrap.servers");
    assert_eq!(error.source(), Some(&Source::File(path.clone())));
    assert!(
        error
            .to_string()
            .contains("did you mean `messaging.connector.kafka.bootstrap.servers`?"),
        "{error}"
    );

    // Below a declared channel or a connector, unknown attributes are client properties.
    App::builder()
        .set("messaging.incoming.orders.auto.offset.reset", "earliest")
        .set("messaging.connector.kafka.session.timeout.ms", 6000)
        .incoming("orders", |_: String| async {})
        .build()
        .expect("client properties pass through");
}

#[test]
fn unknown_keys_can_be_made_a_warning() {
    App::builder()
        .set("messaging.config.unknown-keys", "warn")
        .set("messaging.health.prot", 9090)
        .build()
        .expect("only a warning");
    let error = config_error(
        App::builder()
            .set("messaging.config.unknown-keys", "ignore")
            .build(),
    );
    assert!(
        error.to_string().ends_with("accepted values: fail, warn"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_client_property_is_reported_under_the_key_as_written() {
    let app = builder()
        .set("messaging.connector.kafka.fetch.max.bytez", 1)
        .outgoing("orders-out")
        .build()
        .unwrap();
    let error = config_error(app.start().await);
    assert_eq!(error.key(), "messaging.connector.kafka.fetch.max.bytez");
    assert!(
        error
            .to_string()
            .contains("did you mean `messaging.connector.kafka.fetch.max.bytes`?"),
        "{error}"
    );

    // A misspelling that contains a property the library sets itself is still the culprit
    // (not the library's `fetch.wait.max.ms` default).
    let app = builder()
        .set("messaging.incoming.orders.fetch.wait.max.msx", 100)
        .incoming("orders", |_: String| async {})
        .build()
        .unwrap();
    let error = config_error(app.start().await);
    assert_eq!(error.key(), "messaging.incoming.orders.fetch.wait.max.msx");

    // A misspelled attribute of the library's own reaches librdkafka as a property.
    let app = builder()
        .set("messaging.incoming.orders.max-concurency", 4)
        .incoming("orders", |_: String| async {})
        .build()
        .unwrap();
    let error = config_error(app.start().await);
    assert_eq!(error.key(), "messaging.incoming.orders.max-concurency");
    assert!(
        error
            .to_string()
            .contains("did you mean `messaging.incoming.orders.max-concurrency`?"),
        "{error}"
    );

    // Nothing near enough: no suggestion rather than a misleading one.
    let app = builder()
        .set("messaging.outgoing.orders-out.colour.scheme", "dark")
        .outgoing("orders-out")
        .build()
        .unwrap();
    let error = config_error(app.start().await);
    assert_eq!(error.key(), "messaging.outgoing.orders-out.colour.scheme");
    assert!(!error.to_string().contains("did you mean"), "{error}");

    let app = builder()
        .set(
            "messaging.incoming.orders.failure-strategy",
            "dead-letter-queue",
        )
        .set(
            "messaging.incoming.orders.dead-letter-queue.failure.strategie",
            "ignore",
        )
        .incoming("orders", |_: String| async {})
        .build()
        .unwrap();
    let error = config_error(app.start().await);
    assert_eq!(
        error.key(),
        "messaging.incoming.orders.dead-letter-queue.failure.strategie"
    );

    let app = builder()
        .set(
            "messaging.connector.kafka.failure-strategy",
            "dead-letter-queue",
        )
        .set(
            "messaging.connector.kafka.dead-letter-queue.failure.strategie",
            "ignore",
        )
        .incoming("orders", |_: String| async {})
        .build()
        .unwrap();
    let error = config_error(app.start().await);
    assert_eq!(
        error.key(),
        "messaging.connector.kafka.dead-letter-queue.failure.strategie"
    );
}

#[test]
fn a_non_boolean_propagate_record_key_is_an_error() {
    let error = config_error(
        App::builder()
            .set(
                "messaging.outgoing.prices-eur.propagate-record-key",
                "sometimes",
            )
            .processor("prices", "prices-eur", |value: String| async move { value })
            .build(),
    );
    assert_eq!(
        error.key(),
        "messaging.outgoing.prices-eur.propagate-record-key"
    );
    assert_eq!(error.value(), Some("sometimes"));
    assert!(error.to_string().contains("true, false"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn consumer_properties_that_would_skip_records_are_refused() {
    for property in ["enable.auto.offset.store", "enable.partition.eof"] {
        let key = format!("messaging.incoming.orders.{property}");
        let app = builder()
            .set(&key, true)
            .incoming("orders", |_: String| async {})
            .build()
            .unwrap();
        let error = config_error(app.start().await);
        assert_eq!(error.key(), key);
        assert!(error.to_string().contains("false"), "{error}");
    }
}

/// Processors sharing an outgoing channel that disagree on one of its keys: which attribute
/// won would depend on the order the linker put the handlers in, so `build` refuses it, unless
/// a layer above the attributes decides.
#[test]
fn two_attributes_giving_a_key_different_values_are_refused() {
    let key = "messaging.outgoing.alerts.topic";
    let sharing = || {
        builder()
            .attribute(key, "alerts-a")
            .attribute(key, "alerts-a")
            .attribute(key, "alerts-b")
            .outgoing("alerts")
    };
    let error = sharing().build().err().expect("refused");
    let messaging::Error::Config(error) = error else {
        panic!("a configuration error: {error}")
    };
    assert_eq!(error.key(), key);
    assert!(
        error
            .to_string()
            .contains("to `alerts-a` and to `alerts-b`"),
        "{error}"
    );
    assert!(
        sharing().set(key, "alerts").build().is_ok(),
        "the code decides"
    );
    // Each conflict counts: one decided above leaves the other refused.
    let connector = "messaging.outgoing.alerts.connector";
    let error = sharing()
        .attribute(connector, "kafka")
        .attribute(connector, "memory")
        .set(key, "alerts")
        .build()
        .err()
        .expect("refused");
    let messaging::Error::Config(error) = error else {
        panic!("a configuration error: {error}")
    };
    assert_eq!(error.key(), connector);
    assert!(builder()
        .attribute(key, "alerts-a")
        .attribute(key, "alerts-a")
        .outgoing("alerts")
        .build()
        .is_ok());
}

/// An in-memory channel takes one message at a time, each settled before the next, with no
/// retries or commits: the keys that shape those are warned of, not silently dropped.
#[test]
fn a_key_an_in_memory_channel_does_not_read_is_warned_of() {
    let logs = captured_logs();
    let built = builder()
        .set("messaging.incoming.memo.connector", "memory")
        .set("messaging.incoming.memo.max-concurrency", 8)
        .set("messaging.incoming.memo.failure-strategy", "ignore")
        .incoming("memo", |_: String| async {})
        .build();
    assert!(built.is_ok(), "a warning, not an error");
    let text = logs.text();
    assert!(
        text.lines().any(
            |line| line.contains("messaging.incoming.memo.max-concurrency")
                && line.contains("set, but an in-memory incoming channel does not read it")
        ),
        "{text}"
    );
    assert!(
        !text.contains("messaging.incoming.memo.failure-strategy"),
        "{text}"
    );
}
