//! The shipped monitoring (`monitoring/`): the alert rules pass `promtool check rules` and
//! their unit tests (`promtool test rules`), the scrape config is valid, and every metric the
//! rules and the Grafana dashboard use is exported by a running application, with every label
//! they select, group or print by, so they cannot drift apart from the code.

mod common;

use std::collections::{BTreeMap, BTreeSet};
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

/// The PromQL (and label templates) of the rules and the dashboard: the rules without their
/// comments, the dashboard's queries and legends.
fn queries() -> Vec<String> {
    let mut queries = Vec::new();
    for file in rule_files() {
        let text = std::fs::read_to_string(&file).expect("readable");
        queries.extend(
            text.lines()
                .filter(|line| !line.trim_start().starts_with('#'))
                .map(str::to_owned),
        );
    }
    for file in monitoring_files(|name| name.ends_with(".json")) {
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).expect("readable"))
                .expect("the dashboard is JSON");
        collect_queries(&dashboard, &mut queries);
    }
    queries
}

fn collect_queries(value: &serde_json::Value, queries: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(fields) => {
            for (key, value) in fields {
                match (key.as_str(), value) {
                    ("expr" | "legendFormat" | "definition", serde_json::Value::String(query)) => {
                        queries.push(query.clone())
                    }
                    _ => collect_queries(value, queries),
                }
            }
        }
        serde_json::Value::Array(values) => values
            .iter()
            .for_each(|value| collect_queries(value, queries)),
        _ => {}
    }
}

fn label_name(text: &str) -> String {
    text.trim()
        .trim_start_matches('$')
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// Labels Prometheus adds to every series, or a histogram has by itself.
const NOT_EXPORTED_BY_US: [&str; 3] = ["job", "instance", "le"];

/// The labels the queries use: per metric, those its selectors match on; and the labels they
/// group by, join on and print in legends and annotations, which some metric must have.
fn labels_used(queries: &[String]) -> (BTreeMap<String, BTreeSet<String>>, BTreeSet<String>) {
    let mut per_metric: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut anywhere = BTreeSet::new();
    for query in queries {
        for (start, _) in query.match_indices("messaging_") {
            let rest = &query[start..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if let Some(selector) = rest[name.len()..].strip_prefix('{') {
                let selector = &selector[..selector.find('}').expect("a closed selector")];
                per_metric
                    .entry(name)
                    .or_default()
                    .extend(selector.split(',').map(label_name));
            }
        }
        for keyword in ["by (", "on (", "by(", "on("] {
            for (start, _) in query.match_indices(keyword) {
                let list = &query[start + keyword.len()..];
                let list = &list[..list.find(')').expect("a closed label list")];
                anywhere.extend(list.split(',').map(label_name));
            }
        }
        for (start, _) in query.match_indices("{{") {
            let inside = &query[start + 2..];
            let inside = &inside[..inside.find("}}").expect("a closed template")];
            if let Some(label) = inside.trim().strip_prefix("$labels.") {
                anywhere.insert(label_name(label));
            } else if !inside.contains('$') && !inside.contains('|') {
                anywhere.insert(label_name(inside));
            }
        }
        for (start, _) in query.match_indices("label_values(") {
            let arguments = &query[start + "label_values(".len()..];
            let arguments = &arguments[..arguments.find(')').expect("closed")];
            if let Some((_, label)) = arguments.rsplit_once(',') {
                anywhere.insert(label_name(label));
            }
        }
    }
    for labels in per_metric.values_mut() {
        labels.retain(|label| !NOT_EXPORTED_BY_US.contains(&label.as_str()));
    }
    anywhere.retain(|label| !label.is_empty() && !NOT_EXPORTED_BY_US.contains(&label.as_str()));
    (per_metric, anywhere)
}

/// Each sample name with the label names it is exported with.
fn exported_labels(exposition: &str) -> BTreeMap<&str, BTreeSet<&str>> {
    let mut exported: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for line in exposition.lines().filter(|line| !line.starts_with('#')) {
        let Some((name, rest)) = line.split_once('{') else {
            continue;
        };
        let labels = &rest[..rest.find('}').unwrap_or(rest.len())];
        exported.entry(name).or_default().extend(
            labels
                .split("\",")
                .filter_map(|pair| pair.split_once('=').map(|(label, _)| label)),
        );
    }
    exported
}

/// What the queries use that `exposition` lacks: metric names, labels of a metric, labels.
fn missing_from(exposition: &str, used: &BTreeSet<String>, queries: &[String]) -> Vec<String> {
    let exported = sample_names(exposition);
    let mut missing: Vec<String> = used
        .iter()
        .filter(|name| !exported.contains(name.as_str()))
        .cloned()
        .collect();
    let labels = exported_labels(exposition);
    let (per_metric, anywhere) = labels_used(queries);
    for (metric, wanted) in &per_metric {
        let have = labels.get(metric.as_str());
        for label in wanted {
            if !have.is_some_and(|have| have.contains(label.as_str())) {
                missing.push(format!("{metric}{{{label}}}"));
            }
        }
    }
    for label in &anywhere {
        if !labels.values().any(|have| have.contains(label.as_str())) {
            missing.push(format!("label {label}"));
        }
    }
    missing
}

/// The check itself can fail: a label the code does not export is caught.
#[test]
fn a_label_the_code_does_not_export_is_caught() {
    let exposition = "messaging_consumer_lag{channel=\"c\",topic=\"t\",partition=\"0\"} 1\n";
    let used = BTreeSet::from(["messaging_consumer_lag".to_owned()]);
    let queries = |query: &str| vec![query.to_owned()];
    assert!(missing_from(
        exposition,
        &used,
        &queries("sum by (job, channel) (messaging_consumer_lag{partition=\"0\"})")
    )
    .is_empty());
    assert_eq!(
        missing_from(
            exposition,
            &used,
            &queries("messaging_consumer_lag{reason=\"x\"}")
        ),
        ["messaging_consumer_lag{reason}"]
    );
    assert_eq!(
        missing_from(
            exposition,
            &used,
            &queries("sum by (reason) (messaging_consumer_lag)")
        ),
        ["label reason"]
    );
    assert_eq!(
        missing_from(exposition, &used, &queries("{{ $labels.reason }}")),
        ["label reason"]
    );
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
    let queries = queries();
    scrape_until(
        address,
        &format!("every metric and label that monitoring/ uses exported: {used:?}"),
        |exposition| missing_from(exposition, &used, &queries).is_empty(),
    )
    .await;
    app.shutdown().await;
}
