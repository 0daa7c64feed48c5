//! Configuration errors surface at startup, naming the key, the value, its source and the
//! accepted values; the file overrides code; secrets stay out of errors.

mod common;

use common::*;
use messaging::{App, Error, Source};

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
            .ends_with("accepted values: fail, ignore, dead-letter-queue"),
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
        error.to_string().contains("accepted values: kafka, memory"),
        "{error}"
    );
    let result = App::builder()
        .incoming("movies", |_: String| async {})
        .incoming("movies", |_: String| async {})
        .build();
    assert!(matches!(result, Err(Error::Channel { channel, .. }) if channel == "movies"));
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
