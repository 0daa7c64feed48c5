//! Environment variables: channel keys, connector-wide keys and `KAFKA_BOOTSTRAP_SERVERS`; typos
//! in variable names; client properties librdkafka rejects, reported under the variable. In
//! their own binary, because they change the process environment; they take turns on it.

mod common;

use common::*;
use messaging::{App, Error, Source};
use tokio::sync::{Mutex, MutexGuard};

/// The process environment is shared by the tests of this binary: one at a time. A test holds
/// its turn across awaits, and a failed test must not poison it for the others.
static ENVIRONMENT: Mutex<()> = Mutex::const_new(());

/// A test's turn on the environment: it starts and ends with no variable the library reads, so
/// what one test sets (or leaves behind when it fails) is never seen by the next, whichever
/// order they run in. (The end-to-end suite's own `MESSAGING_E2E_*` variables share the
/// prefix; this binary runs no e2e test.)
struct Turn {
    _turn: MutexGuard<'static, ()>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        clear_library_variables();
    }
}

fn clear_library_variables() {
    for (name, _) in std::env::vars_os() {
        let name_text = name.to_string_lossy();
        if name_text.starts_with("MESSAGING_") || name_text == "KAFKA_BOOTSTRAP_SERVERS" {
            std::env::remove_var(&name);
        }
    }
}

async fn own_environment() -> Turn {
    let turn = ENVIRONMENT.lock().await;
    clear_library_variables();
    Turn { _turn: turn }
}

fn config_error(result: Result<impl Sized, Error>) -> messaging::ConfigError {
    match result {
        Err(Error::Config(error)) => error,
        Err(other) => panic!("expected a configuration error, got {other}"),
        Ok(_) => panic!("expected a configuration error"),
    }
}

#[tokio::test]
async fn a_variable_that_names_nothing_is_an_error_suggesting_the_closest_variable() {
    let _turn = own_environment().await;
    std::env::set_var("MESSAGING_INCOMING_ORDER_FAILURE_STRATEGY", "ignore");
    let error = config_error(
        App::builder()
            .environment()
            .incoming("orders", |_: String| async {})
            .build(),
    );
    std::env::remove_var("MESSAGING_INCOMING_ORDER_FAILURE_STRATEGY");
    assert_eq!(error.key(), "MESSAGING_INCOMING_ORDER_FAILURE_STRATEGY");
    assert_eq!(
        error.source(),
        Some(&Source::Environment(
            "MESSAGING_INCOMING_ORDER_FAILURE_STRATEGY".into()
        ))
    );
    assert!(
        error
            .to_string()
            .contains("did you mean `MESSAGING_INCOMING_ORDERS_FAILURE_STRATEGY`?"),
        "{error}"
    );

    std::env::set_var("MESSAGING_HEALTH_PROT", "9090");
    let error = config_error(
        App::builder()
            .environment()
            .incoming("orders", |_: String| async {})
            .build(),
    );
    assert!(
        error
            .to_string()
            .contains("did you mean `MESSAGING_HEALTH_PORT`?"),
        "{error}"
    );
    // The documented switch: warn and start.
    std::env::set_var("MESSAGING_CONFIG_UNKNOWN_KEYS", "warn");
    let built = App::builder()
        .environment()
        .incoming("orders", |_: String| async {})
        .build();
    std::env::remove_var("MESSAGING_CONFIG_UNKNOWN_KEYS");
    std::env::remove_var("MESSAGING_HEALTH_PROT");
    assert!(
        built.is_ok(),
        "messaging.config.unknown-keys=warn only warns"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_property_librdkafka_rejects_is_reported_under_its_variable() {
    let _turn = own_environment().await;
    std::env::set_var("MESSAGING_OUTGOING_ORDERS_OUT_FETCH_MAX_BYTEZ", "1");
    let app = builder()
        .environment()
        .outgoing("orders-out")
        .build()
        .unwrap();
    let error = config_error(app.start().await);
    std::env::remove_var("MESSAGING_OUTGOING_ORDERS_OUT_FETCH_MAX_BYTEZ");
    assert_eq!(error.key(), "MESSAGING_OUTGOING_ORDERS_OUT_FETCH_MAX_BYTEZ");
    assert_eq!(
        error.source(),
        Some(&Source::Environment(
            "MESSAGING_OUTGOING_ORDERS_OUT_FETCH_MAX_BYTEZ".into()
        ))
    );
    assert!(
        error
            .to_string()
            .contains("did you mean `MESSAGING_OUTGOING_ORDERS_OUT_FETCH_MAX_BYTES`?"),
        "{error}"
    );

    // A misspelled attribute of the library's own reaches librdkafka as a property; its `-`
    // is a `_` in the variable, as a property's `.` is.
    std::env::set_var("MESSAGING_INCOMING_ORDERS_MAX_CONCURENCY", "4");
    let app = builder()
        .environment()
        .incoming("orders", |_: String| async {})
        .build()
        .unwrap();
    let error = config_error(app.start().await);
    std::env::remove_var("MESSAGING_INCOMING_ORDERS_MAX_CONCURENCY");
    assert_eq!(error.key(), "MESSAGING_INCOMING_ORDERS_MAX_CONCURENCY");
    assert!(
        error
            .to_string()
            .contains("did you mean `MESSAGING_INCOMING_ORDERS_MAX_CONCURRENCY`?"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn environment_variables_configure_channels_and_beat_code() {
    let _turn = own_environment().await;
    std::env::set_var("MESSAGING_INCOMING_MOVIES_FAILURE_STRATEGY", "bogus");
    let result = App::builder()
        .environment()
        .set("messaging.incoming.movies.failure-strategy", "ignore")
        .incoming("movies", |_: String| async {})
        .build();
    let Err(Error::Config(error)) = result else {
        panic!("expected a configuration error")
    };
    assert_eq!(
        error.source(),
        Some(&Source::Environment(
            "MESSAGING_INCOMING_MOVIES_FAILURE_STRATEGY".into()
        ))
    );
    std::env::remove_var("MESSAGING_INCOMING_MOVIES_FAILURE_STRATEGY");

    // KAFKA_BOOTSTRAP_SERVERS alone is enough to reach a broker; an env passthrough property
    // (`..._AUTO_OFFSET_RESET` is `auto.offset.reset`) reaches the consumer.
    let topic = topic_with("env", &["from the start"]);
    std::env::set_var("KAFKA_BOOTSTRAP_SERVERS", bootstrap());
    std::env::set_var("MESSAGING_INCOMING_MOVIES_AUTO_OFFSET_RESET", "earliest");
    std::env::set_var("MESSAGING_INCOMING_MOVIES_TOPIC", &topic);
    std::env::set_var("MESSAGING_HEALTH_ENABLED", "false");
    let (sender, mut received) = tokio::sync::mpsc::unbounded_channel();
    let app = App::builder()
        .environment()
        .set("messaging.connector.kafka.session.timeout.ms", 6000)
        .incoming("movies", move |title: String| {
            sender.send(title).unwrap();
            async {}
        })
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let first = tokio::time::timeout(PATIENCE, received.recv())
        .await
        .expect("the channel reads the topic from the start");
    assert_eq!(first.as_deref(), Some("from the start"));
    app.shutdown().await;
}
