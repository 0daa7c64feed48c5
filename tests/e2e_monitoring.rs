//! The shipped monitoring against a real Prometheus: it scrapes the movies example, run with
//! `dead-letter-queue` on the independent broker, with `monitoring/messaging.rules.yml`, and the
//! dead-letter alert fires. Runs only where the end-to-end tests run (see `e2e_broker.rs`).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;
use serde_json::Value;

/// A process of the test's, killed when the test ends, passed or not.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(command: &mut Command, log: &Path) -> Running {
    let log = std::fs::File::create(log).expect("log file");
    let child = command
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {command:?}: {error}"));
    Running(child)
}

/// `cargo test` builds the examples beside the test binaries.
fn movies_example() -> PathBuf {
    let test = std::env::current_exe().expect("the test binary");
    let examples = test
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .join("examples");
    let movies = examples.join("movies");
    assert!(
        movies.exists(),
        "{} is missing: `cargo test` builds the examples; with a test selected, build it \
         first with `cargo build --example movies`",
        movies.display()
    );
    movies
}

/// Polls one of Prometheus's HTTP API paths until its `data` satisfies `condition`.
async fn prometheus_until(
    prometheus: SocketAddr,
    path: &str,
    what: &str,
    condition: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut last = None;
    loop {
        if let Some((200, body)) = try_http_get(prometheus, path).await {
            let answer: Value = serde_json::from_str(&body).expect("Prometheus answers JSON");
            if condition(&answer["data"]) {
                return answer["data"].clone();
            }
            last = Some(body);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting: {what}; Prometheus last answered {path} with {last:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scraping_the_movies_example_fires_the_dead_letter_alert() {
    let Some(bootstrap) = broker() else { return };
    let movies_topic = unique("movies");
    let dead_letter_topic = unique("dead-letter-topic-movies");
    create_topics(&bootstrap, &[(&movies_topic, 1), (&dead_letter_topic, 1)]).await;
    let work = std::env::temp_dir().join(unique("e2e-monitoring"));
    std::fs::create_dir_all(&work).expect("work directory");

    let health_port = free_port();
    let mut movies = Command::new(movies_example());
    // Its configuration is this test's alone (the example rejects MESSAGING_* variables it
    // does not know, such as MESSAGING_E2E_BOOTSTRAP).
    for (variable, _) in std::env::vars_os() {
        if variable.to_string_lossy().starts_with("MESSAGING_") {
            movies.env_remove(variable);
        }
    }
    let _movies = spawn(
        movies
            .env("MESSAGING_CONNECTOR_KAFKA_BOOTSTRAP_SERVERS", &bootstrap)
            .env(
                "MESSAGING_INCOMING_MOVIES_FAILURE_STRATEGY",
                "dead-letter-queue",
            )
            .env("MESSAGING_INCOMING_MOVIES_TOPIC", &movies_topic)
            .env("MESSAGING_OUTGOING_MOVIES_OUT_TOPIC", &movies_topic)
            .env(
                "MESSAGING_INCOMING_MOVIES_DEAD_LETTER_QUEUE_TOPIC",
                &dead_letter_topic,
            )
            .env(
                "MESSAGING_INCOMING_DEAD_LETTER_TOPIC_MOVIES_TOPIC",
                &dead_letter_topic,
            )
            .env("MESSAGING_APPLICATION_NAME", unique("movies"))
            .env("MESSAGING_HEALTH_PORT", health_port.to_string()),
        &work.join("movies.log"),
    );

    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("monitoring/messaging.rules.yml");
    let config = work.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: movies\n    static_configs:\n      - targets: [\"127.0.0.1:{health_port}\"]\n",
            rules = rules.display()
        ),
    )
    .expect("prometheus.yml");
    let prometheus = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let _prometheus = spawn(
        Command::new("prometheus").args([
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", work.join("data").display()),
            format!("--web.listen-address={prometheus}"),
        ]),
        &work.join("prometheus.log"),
    );

    // The two titles with ' and , are rejected: Prometheus has scraped both dead letters.
    prometheus_until(
        prometheus,
        "/api/v1/query?query=sum(messaging_records_dead_lettered_total%7Bchannel%3D%22movies%22%7D)",
        "Prometheus scraped the movies channel's two dead letters",
        |data| data["result"][0]["value"][1] == "2",
    )
    .await;
    let alerts = prometheus_until(
        prometheus,
        "/api/v1/alerts",
        "the dead-letter alert of the movies channel firing",
        |data| {
            data["alerts"].as_array().is_some_and(|alerts| {
                alerts.iter().any(|alert| {
                    // The rule has no `for:`: it fires at its first evaluation.
                    alert["labels"]["alertname"] == "MessagingRecordsDeadLettered"
                        && alert["labels"]["channel"] == "movies"
                        && alert["state"] == "firing"
                })
            })
        },
    )
    .await;
    let alert = alerts["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|alert| alert["labels"]["alertname"] == "MessagingRecordsDeadLettered")
        .expect("the alert");
    assert_eq!(alert["labels"]["channel"], "movies");
    prometheus_until(
        prometheus,
        "/api/v1/query?query=messaging_records_dead_lettered_by_error_type_total%7Bchannel%3D%22movies%22%7D",
        "the dead letters are counted by their error type",
        |data| data["result"][0]["metric"]["error_type"] == "movies::BadMovie",
    )
    .await;
    let _ = std::fs::remove_dir_all(&work);
}
