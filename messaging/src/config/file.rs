//! The config file: TOML whose tables are flattened to dotted keys, so
//! `[messaging.incoming.movies]` + `failure-strategy = "ignore"` and
//! `"bootstrap.servers" = "..."` (quoted) or `bootstrap.servers = "..."` (dotted) all work.

use std::collections::BTreeMap;
use std::path::Path;

use super::error::ConfigError;

pub(crate) fn read(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| ConfigError::file(path, format!("cannot read it: {error}")))?;
    parse(&text).map_err(|problem| ConfigError::file(path, problem))
}

pub(crate) fn parse(text: &str) -> Result<BTreeMap<String, String>, String> {
    let table: toml::Table = text
        .parse()
        .map_err(|error: toml::de::Error| not_valid_toml(text, &error))?;
    let mut flat = BTreeMap::new();
    flatten("", &toml::Value::Table(table), &mut flat)?;
    Ok(flat)
}

/// The parser's own `Display` quotes the offending line, which may hold a secret (a Cosmos DB
/// key, a SASL password with a missing quote): only the position and the message are shown.
fn not_valid_toml(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim().replace('\n', "; ");
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            format!("not valid TOML at line {line}, column {column}: {message}")
        }
        None => format!("not valid TOML: {message}"),
    }
}

fn flatten(
    prefix: &str,
    value: &toml::Value,
    out: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    let scalar = match value {
        toml::Value::Table(table) => {
            for (key, inner) in table {
                let key = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&key, inner, out)?;
            }
            return Ok(());
        }
        toml::Value::String(text) => text.clone(),
        toml::Value::Integer(number) => number.to_string(),
        toml::Value::Float(number) => number.to_string(),
        toml::Value::Boolean(flag) => flag.to_string(),
        toml::Value::Datetime(datetime) => datetime.to_string(),
        toml::Value::Array(items) => {
            let mut parts = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    toml::Value::String(text) => parts.push(text.clone()),
                    toml::Value::Integer(number) => parts.push(number.to_string()),
                    _ => {
                        return Err(format!(
                            "`{prefix}`: arrays may hold only strings and integers"
                        ))
                    }
                }
            }
            parts.join(",")
        }
    };
    out.insert(prefix.to_owned(), scalar);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_and_dotted_keys_flatten_alike() {
        let flat = parse(
            r#"
            [messaging.incoming.movies]
            failure-strategy = "dead-letter-queue"
            "auto.offset.reset" = "earliest"
            session.timeout.ms = 6000

            [messaging.health]
            port = 9090
            "#,
        )
        .unwrap();
        assert_eq!(
            flat["messaging.incoming.movies.failure-strategy"],
            "dead-letter-queue"
        );
        assert_eq!(
            flat["messaging.incoming.movies.auto.offset.reset"],
            "earliest"
        );
        assert_eq!(flat["messaging.incoming.movies.session.timeout.ms"], "6000");
        assert_eq!(flat["messaging.health.port"], "9090");
    }

    #[test]
    fn bad_toml_is_reported() {
        assert!(parse("[messaging").unwrap_err().contains("not valid TOML"));
    }

    #[test]
    fn bad_toml_is_reported_by_position_without_quoting_the_line() {
        for text in [
            "[messaging.connector.kafka]\n\"sasl.password\" = \"supersecret123\n",
            "[messaging.connector.kafka]\n\"sasl.password\" = supersecret123\n",
            "[messaging.connector.cosmos]\nkey = \"supersecret123\" \"x\"\n",
        ] {
            let problem = parse(text).unwrap_err();
            assert!(
                problem.starts_with("not valid TOML at line 2, column "),
                "{problem}"
            );
            assert!(!problem.contains("supersecret123"), "{problem}");
        }
    }
}
