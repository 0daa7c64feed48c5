//! Seed scenario "Kafka - how to fail gracefully".
//!
//! Emits movie titles to the `movies` topic and consumes them with a handler that rejects
//! titles containing `'` or `,`. What happens to a rejected title is the channel's failure
//! strategy, chosen at run time:
//!
//! ```text
//! cargo run --example movies                                                      # fail (default)
//! MESSAGING_INCOMING_MOVIES_FAILURE_STRATEGY=ignore cargo run --example movies
//! MESSAGING_INCOMING_MOVIES_FAILURE_STRATEGY=dead-letter-queue cargo run --example movies
//! MESSAGING_INCOMING_MOVIES_FAILURE_STRATEGY=delayed-retry-topic \
//!   MESSAGING_INCOMING_MOVIES_DELAYED_RETRY_TOPIC_TOPICS=movies_retry_2000,movies_retry_5000 \
//!   cargo run --example movies
//! curl -i localhost:8080/health/live
//! curl localhost:8080/metrics
//! ```
//!
//! With no configuration it runs on the embedded in-process cluster; set
//! `MESSAGING_CONNECTOR_KAFKA_BOOTSTRAP_SERVERS=host:9092` to use a real broker.

use messaging::prelude::*;

const TITLES: &[&str] = &[
    "The Shawshank Redemption",
    "The Godfather",
    "Schindler's List",
    "Pulp Fiction",
    "The Good, the Bad and the Ugly",
    "12 Angry Men",
    "Spirited Away",
];

#[derive(Debug, thiserror::Error)]
enum BadMovie {
    #[error("I don't like movies with ' in their title: {0}")]
    Apostrophe(String),
    #[error("I don't like movies with , in their title: {0}")]
    Comma(String),
}

#[incoming("movies")]
async fn consume(title: String) -> Result<(), BadMovie> {
    if title.contains('\'') {
        return Err(BadMovie::Apostrophe(title));
    }
    if title.contains(',') {
        return Err(BadMovie::Comma(title));
    }
    tracing::info!(%title, "accepted");
    Ok(())
}

/// Reads what the `dead-letter-queue` strategy rejected, with the reason it was rejected.
#[incoming("dead-letter-topic-movies")]
async fn inspect(rejected: Message<String>) -> messaging::Result<()> {
    let reason = rejected
        .kafka()
        .and_then(|record| record.header_str("dead-letter-reason"))
        .unwrap_or("unknown");
    tracing::warn!(title = %rejected.payload(), %reason, "dead-lettered");
    rejected.ack().await
}

#[tokio::main]
async fn main() -> messaging::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    // Defaults for a fresh machine; every one of them yields to the environment or messaging.toml.
    let app = App::builder()
        .discover()
        .outgoing("movies-out")
        .set("messaging.outgoing.movies-out.topic", "movies")
        .set("messaging.connector.kafka.bootstrap.servers", "embedded")
        .set("messaging.connector.kafka.auto.offset.reset", "earliest")
        .set("messaging.connector.kafka.session.timeout.ms", 6000)
        .environment()
        .build()?
        .start()
        .await?;

    // Listening from the start: /health already says the service is up, so an orchestrator
    // (or the end-to-end test, once it reads the log line below) may send SIGTERM at any time.
    let shutdown_requested = app.wait_for_shutdown_signal();

    let movies = app.emitter::<String>("movies-out")?;
    for title in TITLES {
        movies.send(title.to_string()).await?;
    }
    tracing::info!(
        count = TITLES.len(),
        "titles sent; serving /health until Ctrl-C"
    );

    shutdown_requested.await;
    app.shutdown().await;
    Ok(())
}
