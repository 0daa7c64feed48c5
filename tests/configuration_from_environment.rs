//! Environment variables: channel keys, connector-wide keys and `KAFKA_BOOTSTRAP_SERVERS`.
//! One test in its own binary, because it changes the process environment.

mod common;

use common::*;
use messaging::{App, Error, Source};

#[tokio::test(flavor = "multi_thread")]
async fn environment_variables_configure_channels_and_beat_code() {
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
    assert_eq!(received.recv().await.as_deref(), Some("from the start"));
    app.shutdown().await;
}
