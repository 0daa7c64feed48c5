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
        .map_err(|error: toml::de::Error| format!("not valid TOML: {error}"))?;
    let mut flat = BTreeMap::new();
    flatten("", &toml::Value::Table(table), &mut flat)?;
    Ok(flat)
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
}
