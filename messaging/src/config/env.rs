//! Environment variable names for configuration keys.
//!
//! A key's variable is the key upper-cased with every non-alphanumeric character replaced by
//! `_`: `messaging.incoming.movies.failure-strategy` is `MESSAGING_INCOMING_MOVIES_FAILURE_STRATEGY`.
//! Known attributes are matched first; any other variable below a channel's or connector's
//! prefix is a client property whose `_` become `.` (`..._AUTO_OFFSET_RESET` is
//! `auto.offset.reset`), and `..._DEAD_LETTER_QUEUE_<PROP>` is `dead-letter-queue.<prop>`.

use std::collections::HashMap;
use std::ffi::OsString;

use super::error::ConfigError;
use super::keys::VARIABLE_PREFIX;
use super::layers::{Setting, Source, ALIASES};

/// The variables the configuration reads: `MESSAGING_*` and the aliases (`KAFKA_BOOTSTRAP_SERVERS`).
///
/// Other variables are none of our business: one that is not UTF-8 is skipped (where
/// `std::env::vars()` would panic). One of ours that is not UTF-8 cannot mean what its author
/// meant, so it is an error naming it.
pub(crate) fn read_variables(
    variables: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<HashMap<String, String>, ConfigError> {
    let ours = |name: &str| {
        name.starts_with(VARIABLE_PREFIX) || ALIASES.iter().any(|(_, alias)| *alias == name)
    };
    let mut read = HashMap::new();
    for (name, value) in variables {
        let name = match name.into_string() {
            Ok(name) => name,
            Err(name) if ours(&name.to_string_lossy()) => {
                return Err(ConfigError::unreadable_variable(
                    &name.to_string_lossy(),
                    "the variable's name is not valid UTF-8",
                ));
            }
            Err(_) => continue,
        };
        if !ours(&name) {
            continue;
        }
        match value.into_string() {
            Ok(value) => read.insert(name, value),
            Err(_) => {
                return Err(ConfigError::unreadable_variable(
                    &name,
                    "the value is not valid UTF-8",
                ))
            }
        };
    }
    Ok(read)
}

pub(crate) fn env_name(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Whether a property as written (`delete.on.tombstone` from a variable, whose name cannot
/// tell a dash from a dot) is the key `name`.
pub(super) fn same_key(name: &str, written: &str) -> bool {
    name.len() == written.len()
        && name
            .bytes()
            .zip(written.bytes())
            .all(|(a, b)| a == b || (a == b'-' && b == b'.'))
}

/// Client properties set through variables below `prefix` (a key prefix ending in `.`).
/// `known` are the attributes the library consumes itself; `longer` are other scopes' prefixes
/// that start with this one, whose variables must not be taken as ours.
pub(crate) fn properties_below(
    environment: &HashMap<String, String>,
    prefix: &str,
    known: &[&str],
    longer: &[String],
) -> Vec<(String, Setting)> {
    let variable_prefix = env_name(prefix);
    let longer: Vec<String> = longer.iter().map(|other| env_name(other)).collect();
    let mut found: Vec<(String, Setting)> = environment
        .iter()
        .filter(|(name, _)| !longer.iter().any(|other| name.starts_with(other.as_str())))
        .filter_map(|(name, value)| {
            let rest = name.strip_prefix(&variable_prefix)?;
            if rest.is_empty() || known.iter().any(|attribute| env_name(attribute) == rest) {
                return None;
            }
            let property = match rest.strip_prefix("DEAD_LETTER_QUEUE_") {
                Some(producer_property) => {
                    format!("dead-letter-queue.{}", dotted(producer_property))
                }
                None => dotted(rest),
            };
            Some((
                property,
                Setting {
                    value: value.clone(),
                    source: Source::Environment(name.clone()),
                    key: name.clone(),
                },
            ))
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

fn dotted(variable_part: &str) -> String {
    variable_part.to_ascii_lowercase().replace('_', ".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_to_variable() {
        assert_eq!(
            env_name("messaging.incoming.movies.failure-strategy"),
            "MESSAGING_INCOMING_MOVIES_FAILURE_STRATEGY"
        );
        assert_eq!(
            env_name("messaging.connector.kafka.bootstrap.servers"),
            "MESSAGING_CONNECTOR_KAFKA_BOOTSTRAP_SERVERS"
        );
    }

    #[test]
    fn variables_below_a_channel_become_properties() {
        let environment: HashMap<String, String> = [
            ("MESSAGING_INCOMING_MOVIES_AUTO_OFFSET_RESET", "earliest"),
            ("MESSAGING_INCOMING_MOVIES_FAILURE_STRATEGY", "ignore"),
            ("MESSAGING_INCOMING_MOVIES_DEAD_LETTER_QUEUE_ACKS", "1"),
            ("MESSAGING_INCOMING_MOVIES_DLQ_SESSION_TIMEOUT_MS", "6000"),
            ("PATH", "/bin"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let found = properties_below(
            &environment,
            "messaging.incoming.movies.",
            &["failure-strategy"],
            &["messaging.incoming.movies-dlq.".to_owned()],
        );
        let names: Vec<&str> = found.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["auto.offset.reset", "dead-letter-queue.acks"]);
        assert_eq!(
            found[0].1.source,
            Source::Environment("MESSAGING_INCOMING_MOVIES_AUTO_OFFSET_RESET".into())
        );
    }
}
