//! The shipped monitoring (`monitoring/`): the alert rules pass `promtool check rules` and
//! their unit tests (`promtool test rules`), the scrape config is valid, and every metric the
//! rules and the Grafana dashboard use is exported by a running application, so they cannot
//! drift apart from the code.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn monitoring_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("monitoring")
}

/// The files of `monitoring/` whose names satisfy `select`, sorted.
fn monitoring_files(select: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(monitoring_dir())
        .expect("monitoring/")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(&select)
        })
        .collect();
    files.sort();
    files
}

fn rule_files() -> Vec<PathBuf> {
    monitoring_files(|name| name.ends_with(".rules.yml"))
}

fn promtool(arguments: &[&str], files: &[PathBuf]) {
    assert!(!files.is_empty(), "no files for promtool {arguments:?}");
    let output = Command::new("promtool")
        .args(arguments)
        .args(files)
        .current_dir(monitoring_dir())
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run promtool ({error}); it comes with Prometheus: \
                 `apt-get install prometheus` (.ci/run installs it)"
            )
        });
    assert!(
        output.status.success(),
        "promtool {arguments:?} {files:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn promtool_checks_the_rules_and_passes_their_unit_tests() {
    promtool(&["check", "rules"], &rule_files());
    promtool(
        &["test", "rules"],
        &monitoring_files(|name| name.contains("test") && name.ends_with(".yml")),
    );
    promtool(
        &["check", "config"],
        &[monitoring_dir().join("prometheus.yml")],
    );
}

/// Every `messaging_*` name in the rules and the dashboard, as the sample names of `/metrics`
/// spell them (a histogram's `_bucket`, `_sum` and `_count` included).
fn metric_names_used() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut files = rule_files();
    files.extend(monitoring_files(|name| name.ends_with(".json")));
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable");
        for (start, _) in text.match_indices("messaging_") {
            let name: String = text[start..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            names.insert(name);
        }
    }
    names
}

fn sample_names(exposition: &str) -> BTreeSet<&str> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .collect()
}

#[derive(Debug, thiserror::Error)]
#[error("rejected")]
struct Rejected;

/// A processor with `dead-letter-queue` that dead-letters one record and forwards another
/// exercises every metric; the rules and the dashboard may use no other.
#[tokio::test(flavor = "multi_thread")]
async fn every_metric_the_rules_and_the_dashboard_use_is_exported() {
    let used = metric_names_used();
    assert!(used.len() > 10, "too few names found: {used:?}");
    let topic = topic_with("monitored", &["good", "bad"]);
    let out = unique("monitored-out");
    // And a Cosmos DB sink, for the dashboard's Cosmos DB panels.
    let documents_in = topic_with("monitored-documents", &[r#"{"id":"a"}"#]);
    let app =
        start(
            builder()
                .set("messaging.outgoing.documents.connector", "cosmos")
                .set("messaging.outgoing.documents.endpoint", "embedded")
                .set("messaging.outgoing.documents.database", "monitoring")
                .set("messaging.outgoing.documents.container", "documents")
                .embedded_cosmos(messaging::EmbeddedCosmos::new())
                .processor(
                    &documents_in,
                    "documents",
                    |document: serde_json::Value| async move {
                        Ok::<_, std::convert::Infallible>(document)
                    },
                )
                .set("messaging.health.enabled", true)
                .set("messaging.health.port", 0)
                .set("messaging.connector.kafka.statistics.interval.ms", 100)
                .set(
                    &format!("messaging.incoming.{topic}.failure-strategy"),
                    "dead-letter-queue",
                )
                .set(&format!("messaging.outgoing.{out}.topic"), &out)
                .processor(&topic, &out, |value: String| async move {
                    if value == "bad" {
                        Err(Rejected)
                    } else {
                        Ok(value)
                    }
                }),
        )
        .await;
    let address = app.health_address().expect("health server");
    let missing = |exposition: &str| -> Vec<String> {
        let exported = sample_names(exposition);
        used.iter()
            .filter(|name| !exported.contains(name.as_str()))
            .cloned()
            .collect()
    };
    scrape_until(
        address,
        &format!("every metric that monitoring/ uses exported: {used:?}"),
        |exposition| missing(exposition).is_empty(),
    )
    .await;
    app.shutdown().await;
}
