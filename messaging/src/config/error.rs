use std::fmt;
use std::path::Path;

use super::layers::{Setting, Source};

/// A configuration problem, found at startup: the key, the offending value (secrets redacted),
/// where the value came from, and what would have been accepted.
///
/// Boxed, so a `Result` carrying it stays small on the paths that succeed.
#[derive(Clone, PartialEq, Eq)]
pub struct ConfigError(Box<Details>);

#[derive(Clone, PartialEq, Eq)]
struct Details {
    key: String,
    value: Option<String>,
    source: Option<Source>,
    problem: String,
    accepted: Option<String>,
}

const REDACTED: &str = "<redacted>";

/// Keys whose values are credentials: never printed. Also recognises a key spelled as an
/// environment variable (`MESSAGING_..._SASL_PASSWORD`): `_` and `-` count as `.`.
pub(crate) fn is_secret(key: &str) -> bool {
    let key: String = key
        .chars()
        .map(|c| {
            if c == '_' || c == '-' {
                '.'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    [
        "password",
        "passwd",
        "passphrase",
        "secret",
        "sasl.jaas",
        "sasl.oauthbearer.config",
        "token",
        "credential",
        "account.key",
        "key.pem",
    ]
    .iter()
    .any(|marker| key.contains(marker))
        // `ssl.key`, `cosmos.key`: a key, unlike `propagate-record-key`, which says whether to
        // keep the record key.
        || (key.ends_with(".key") && !key.ends_with(".record.key"))
}

impl ConfigError {
    /// A value that was set but is not acceptable.
    pub(crate) fn invalid(
        key: &str,
        setting: &Setting,
        problem: impl Into<String>,
        accepted: Option<String>,
    ) -> Self {
        let value = if is_secret(key) {
            REDACTED.to_owned()
        } else {
            setting.value.clone()
        };
        Self::new(Details {
            key: key.to_owned(),
            value: Some(value),
            source: Some(setting.source.clone()),
            problem: problem.into(),
            accepted,
        })
    }

    /// A key that names nothing, or that the client does not know: its value is never shown,
    /// since a misspelled secret's name (`..._SASL_PASWORD`) no longer marks it as secret.
    pub(crate) fn unrecognised(
        key: &str,
        setting: &Setting,
        problem: impl Into<String>,
        accepted: Option<String>,
    ) -> Self {
        Self::new(Details {
            key: key.to_owned(),
            value: Some(REDACTED.to_owned()),
            source: Some(setting.source.clone()),
            problem: problem.into(),
            accepted,
        })
    }

    /// Two handler attributes giving `key` different values.
    pub(crate) fn conflicting_attributes(key: &str, first: &str, second: &str) -> Self {
        let (first, second) = if is_secret(key) {
            (REDACTED, REDACTED)
        } else {
            (first, second)
        };
        Self::new(Details {
            key: key.to_owned(),
            value: Some(second.to_owned()),
            source: Some(Source::Attribute),
            problem: format!(
                "two handler attributes set it, to `{first}` and to `{second}`; handlers sharing a \
                 channel must agree on it: give it on one of them, or in the config file or the \
                 environment"
            ),
            accepted: None,
        })
    }

    /// A value that is required but set nowhere.
    pub(crate) fn missing(key: &str, problem: impl Into<String>) -> Self {
        Self::new(Details {
            key: key.to_owned(),
            value: None,
            source: None,
            problem: problem.into(),
            accepted: None,
        })
    }

    /// An environment variable that cannot be read (its name or value is not UTF-8). The value
    /// is never shown: it may be a credential, and it is not text anyway.
    pub(crate) fn unreadable_variable(variable: &str, problem: impl Into<String>) -> Self {
        Self::new(Details {
            key: variable.to_owned(),
            value: None,
            source: Some(Source::Environment(variable.to_owned())),
            problem: problem.into(),
            accepted: None,
        })
    }

    pub(crate) fn file(path: &Path, problem: impl Into<String>) -> Self {
        Self::new(Details {
            key: "messaging.config-file".to_owned(),
            value: Some(path.display().to_string()),
            source: None,
            problem: problem.into(),
            accepted: None,
        })
    }

    fn new(details: Details) -> Self {
        Self(Box::new(details))
    }

    /// The configuration key at fault.
    pub fn key(&self) -> &str {
        &self.0.key
    }

    /// The offending value (`<redacted>` for secrets), if one was set.
    pub fn value(&self) -> Option<&str> {
        self.0.value.as_deref()
    }

    /// Where the offending value came from.
    pub fn source(&self) -> Option<&Source> {
        self.0.source.as_ref()
    }

    /// What is wrong, without the key and value.
    pub(crate) fn problem(&self) -> &str {
        &self.0.problem
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Details {
            key,
            value,
            source,
            problem,
            accepted,
        } = &*self.0;
        write!(f, "configuration key `{key}`")?;
        if let Some(value) = value {
            write!(f, " = `{value}`")?;
        }
        if let Some(source) = source {
            write!(f, " (from {source})")?;
        }
        write!(f, ": {problem}")?;
        if let Some(accepted) = accepted {
            write!(f, "; accepted values: {accepted}")?;
        }
        Ok(())
    }
}

/// Reads like `Display` (with secrets redacted the same way): `main` prints errors with `Debug`.
impl fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::error::report(self, f)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_key_value_source_and_accepted_values() {
        let variable = "MESSAGING_INCOMING_MOVIES_FAILURE_STRATEGY".to_owned();
        let setting = Setting {
            value: "retry".into(),
            source: Source::Environment(variable.clone()),
            key: variable,
        };
        let error = ConfigError::invalid(
            "messaging.incoming.movies.failure-strategy",
            &setting,
            "unknown failure strategy",
            Some("fail, ignore, dead-letter-queue".into()),
        );
        assert_eq!(
            error.to_string(),
            "configuration key `messaging.incoming.movies.failure-strategy` = `retry` (from environment variable \
             MESSAGING_INCOMING_MOVIES_FAILURE_STRATEGY): unknown failure strategy; accepted values: fail, ignore, dead-letter-queue"
        );
    }

    #[test]
    fn secrets_are_redacted() {
        let key = "messaging.connector.kafka.sasl.password";
        let setting = Setting {
            value: "hunter2".into(),
            source: Source::Code,
            key: key.to_owned(),
        };
        let error = ConfigError::invalid(key, &setting, "rejected", None);
        assert!(!error.to_string().contains("hunter2"));
        assert!(!format!("{error:?}").contains("hunter2"));
        assert!(is_secret("MESSAGING_CONNECTOR_KAFKA_SASL_PASSWORD"));
        assert!(is_secret("MESSAGING_INCOMING_MOVIES_SSL_KEY"));
        assert!(is_secret("MESSAGING_CONNECTOR_KAFKA_SASL_JAAS_CONFIG"));
        assert!(is_secret("messaging.incoming.movies.ssl.key.password"));
        assert!(!is_secret("messaging.incoming.movies.key.deserializer"));
        assert!(!is_secret("messaging.outgoing.movies.propagate-record-key"));
        assert!(!is_secret("MESSAGING_OUTGOING_MOVIES_PROPAGATE_RECORD_KEY"));
        assert!(is_secret(
            "messaging.connector.kafka.sasl.oauthbearer.assertion.private.key.passphrase"
        ));
    }
}
