use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;

use super::env::env_name;

/// Where a configuration value came from, named in every configuration error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// An environment variable, by name.
    Environment(String),
    /// A key of the config file at this path.
    File(PathBuf),
    /// `AppBuilder::set` in code.
    Code,
    /// An `#[incoming]`/`#[outgoing]` attribute argument (or `AppBuilder::attribute`).
    Attribute,
    /// The library's default.
    BuiltIn,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Environment(name) => write!(f, "environment variable {name}"),
            Self::File(path) => write!(f, "config file {}", path.display()),
            Self::Code => f.write_str("AppBuilder::set"),
            Self::Attribute => f.write_str("handler attribute"),
            Self::BuiltIn => f.write_str("built-in default"),
        }
    }
}

/// A value and where it came from. Its `Debug` hides the value of a secret (a Cosmos DB key, a
/// SASL password): settings are printed whole when a channel's settings are.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Setting {
    pub(crate) value: String,
    pub(crate) source: Source,
    /// The key as the user wrote it: the full key (a connector-wide one stays connector-wide),
    /// or the environment variable's name. Errors about a value passed through to a client name
    /// this, so the user finds what to fix.
    pub(crate) key: String,
}

impl fmt::Debug for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = if super::is_secret(&self.key) {
            "<redacted>"
        } else {
            &self.value
        };
        f.debug_struct("Setting")
            .field("value", &value)
            .field("source", &self.source)
            .field("key", &self.key)
            .finish()
    }
}

/// Environment variables accepted as aliases of a key, below the key's own variable.
pub(super) const ALIASES: &[(&str, &str)] = &[(
    "messaging.connector.kafka.bootstrap.servers",
    "KAFKA_BOOTSTRAP_SERVERS",
)];

/// The sources, highest precedence first.
#[derive(Clone, Debug, Default)]
pub(crate) struct Layers {
    pub(crate) environment: HashMap<String, String>,
    pub(crate) file: Option<(PathBuf, BTreeMap<String, String>)>,
    pub(crate) code: BTreeMap<String, String>,
    pub(crate) attributes: BTreeMap<String, String>,
}

impl Layers {
    /// The first hit for a full key, in precedence order.
    pub(crate) fn get(&self, key: &str) -> Option<Setting> {
        let variable = env_name(key);
        if let Some(value) = self.environment.get(&variable) {
            return Some(Setting {
                value: value.clone(),
                key: variable.clone(),
                source: Source::Environment(variable),
            });
        }
        for (aliased, alias) in ALIASES {
            if *aliased == key {
                if let Some(value) = self.environment.get(*alias) {
                    return Some(Setting {
                        value: value.clone(),
                        source: Source::Environment((*alias).to_owned()),
                        key: (*alias).to_owned(),
                    });
                }
            }
        }
        if let Some((path, entries)) = &self.file {
            if let Some(value) = entries.get(key) {
                return Some(Setting {
                    value: value.clone(),
                    source: Source::File(path.clone()),
                    key: key.to_owned(),
                });
            }
        }
        if let Some(value) = self.code.get(key) {
            return Some(Setting {
                value: value.clone(),
                source: Source::Code,
                key: key.to_owned(),
            });
        }
        self.attributes.get(key).map(|value| Setting {
            value: value.clone(),
            source: Source::Attribute,
            key: key.to_owned(),
        })
    }

    /// Keys below `prefix` that an alias variable sets (e.g. `KAFKA_BOOTSTRAP_SERVERS`), as
    /// suffixes; `Layers::get` ranks them after our own variables and over the file and code.
    pub(crate) fn aliased_below(&self, prefix: &str) -> Vec<(String, Setting)> {
        ALIASES
            .iter()
            .filter_map(|(key, alias)| {
                let suffix = key.strip_prefix(prefix)?;
                let value = self.environment.get(*alias)?;
                Some((
                    suffix.to_owned(),
                    Setting {
                        value: value.clone(),
                        source: Source::Environment((*alias).to_owned()),
                        key: (*alias).to_owned(),
                    },
                ))
            })
            .collect()
    }

    /// Every key below `prefix` (ending in `.`) from the file, code and attribute layers, as
    /// suffixes, skipping keys that belong to a longer prefix in `longer` (another channel whose
    /// name starts with this one's).
    pub(crate) fn suffixes_below(&self, prefix: &str, longer: &[String]) -> Vec<(String, Setting)> {
        let mut found: Vec<(String, Setting)> = Vec::new();
        let file = self.file.iter().flat_map(|(path, entries)| {
            entries
                .iter()
                .map(move |(k, v)| (k, v, Source::File(path.clone())))
        });
        let code = self.code.iter().map(|(k, v)| (k, v, Source::Code));
        let attributes = self
            .attributes
            .iter()
            .map(|(k, v)| (k, v, Source::Attribute));
        for (key, value, source) in file.chain(code).chain(attributes) {
            let Some(suffix) = key.strip_prefix(prefix) else {
                continue;
            };
            if longer.iter().any(|other| key.starts_with(other.as_str()))
                || found.iter().any(|(seen, _)| seen == suffix)
            {
                continue;
            }
            found.push((
                suffix.to_owned(),
                Setting {
                    value: value.clone(),
                    source,
                    key: key.clone(),
                },
            ));
        }
        found
    }
}
