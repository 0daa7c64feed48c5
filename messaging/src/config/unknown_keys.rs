//! Keys and variables that name nothing, found at startup: typos.
//!
//! `MESSAGING_INCOMING_ORDER_FAILURE_STRATEGY` for a channel named `orders`, or
//! `MESSAGING_HEALTH_PROT`, would otherwise leave the defaults in force without a word. A key
//! under `messaging.` is known when it is a global key, or lies below a declared channel's
//! prefix (`messaging.incoming.<channel>.`, `messaging.outgoing.<channel>.`) or a connector's
//! (`messaging.connector.kafka.`, `messaging.connector.memory.`). Below those prefixes any
//! attribute the library does not read is a client property for librdkafka, which judges it
//! itself, so only the prefix can be checked here. `messaging.config.unknown-keys = warn` turns
//! the error into a warning, e.g. for variables of another tool that shares the prefix.

use super::edit_distance::distance;
use super::env::env_name;
use super::error::ConfigError;
use super::keys::{
    ConnectorKind, CONFIG_FILE_VARIABLE, GLOBAL_KEYS, INCOMING_ATTRIBUTES, OUTGOING_ATTRIBUTES,
    UNKNOWN_KEYS, VARIABLE_PREFIX,
};
use super::layers::{Layers, Setting, Source};

const KEY_PREFIX: &str = "messaging.";
const FAIL: &str = "fail";
const WARN: &str = "warn";

/// Fails (or, with `messaging.config.unknown-keys = warn`, warns) on the first key or variable
/// that names no declared channel and no known key, suggesting the closest known one.
pub(crate) fn check_unknown_keys(
    layers: &Layers,
    incoming: &[String],
    outgoing: &[String],
) -> Result<(), ConfigError> {
    let policy = layers.get(UNKNOWN_KEYS).unwrap_or_else(|| Setting {
        value: FAIL.into(),
        source: Source::BuiltIn,
        key: UNKNOWN_KEYS.into(),
    });
    let fail = match policy.value.trim() {
        FAIL => true,
        WARN => false,
        _ => {
            return Err(ConfigError::invalid(
                UNKNOWN_KEYS,
                &policy,
                "unknown policy for unknown keys",
                Some([FAIL, WARN].join(", ")),
            ))
        }
    };
    let known = Known::new(incoming, outgoing);
    for setting in written_keys(layers) {
        let spelling = Spelling::of(&setting);
        if known.contains(&setting.key, spelling) {
            continue;
        }
        let problem = format!(
            "names no declared channel and no known key; did you mean `{}`? (messaging.config.unknown-keys=warn only warns)",
            known.closest(&setting.key, spelling)
        );
        let error = ConfigError::unrecognised(
            &setting.key,
            &setting,
            problem,
            Some(known.describe(spelling)),
        );
        if fail {
            return Err(error);
        }
        tracing::warn!("{error}");
    }
    Ok(())
}

/// Every key of ours as the user wrote it: `MESSAGING_*` variables, then `messaging.*` keys of
/// the file, the code and the attributes, each layer in a stable order.
fn written_keys(layers: &Layers) -> Vec<Setting> {
    let mut variables: Vec<Setting> = layers
        .environment
        .iter()
        .filter(|(name, _)| name.starts_with(VARIABLE_PREFIX) && !is_kubernetes_service(name))
        .map(|(name, value)| Setting {
            value: value.clone(),
            source: Source::Environment(name.clone()),
            key: name.clone(),
        })
        .collect();
    variables.sort_by(|a, b| a.key.cmp(&b.key));
    let file = layers.file.iter().flat_map(|(path, entries)| {
        entries
            .iter()
            .map(move |(key, value)| (key, value, Source::File(path.clone())))
    });
    let code = layers
        .code
        .iter()
        .map(|(key, value)| (key, value, Source::Code));
    let attributes = layers
        .attributes
        .iter()
        .map(|(key, value)| (key, value, Source::Attribute));
    let keys = file
        .chain(code)
        .chain(attributes)
        .filter(|(key, _, _)| key.starts_with(KEY_PREFIX))
        .map(|(key, value, source)| Setting {
            value: value.clone(),
            source,
            key: key.clone(),
        });
    variables.into_iter().chain(keys).collect()
}

/// A key is written as a dotted key (file, code, attribute) or as a variable name.
#[derive(Clone, Copy)]
enum Spelling {
    Key,
    Variable,
}

impl Spelling {
    fn of(setting: &Setting) -> Self {
        match setting.source {
            Source::Environment(_) => Self::Variable,
            _ => Self::Key,
        }
    }

    fn spell(self, key: &str) -> String {
        match self {
            Self::Key => key.to_owned(),
            Self::Variable => env_name(key),
        }
    }
}

/// How many edits a written key's beginning may be from a declared scope for the scope to be
/// suggested with the rest of the key kept: a typo, not a different key whose letters happen to
/// line up (`MESSAGING_OUTGOING_PR|OCOUT_TOPIC` is not the incoming channel `WORK`).
const MAX_SCOPE_EDITS: usize = 2;

/// What this application's configuration can name.
struct Known {
    /// Prefixes (ending in `.`) below which any attribute is accepted, each with the library's
    /// attributes that belong there.
    scopes: Vec<(String, Vec<&'static str>)>,
    /// Whole keys: the global ones and the library's attributes in every scope, as suggestions.
    keys: Vec<String>,
}

impl Known {
    fn new(incoming: &[String], outgoing: &[String]) -> Self {
        let mut scopes_with_attributes: Vec<(String, Vec<&'static str>)> = Vec::new();
        for channel in incoming {
            scopes_with_attributes.push((
                format!("messaging.incoming.{channel}."),
                INCOMING_ATTRIBUTES.to_vec(),
            ));
        }
        for channel in outgoing {
            scopes_with_attributes.push((
                format!("messaging.outgoing.{channel}."),
                OUTGOING_ATTRIBUTES.to_vec(),
            ));
        }
        for connector in ConnectorKind::ACCEPTED {
            let attributes = INCOMING_ATTRIBUTES
                .iter()
                .chain(OUTGOING_ATTRIBUTES)
                .copied()
                .collect();
            scopes_with_attributes.push((format!("messaging.connector.{connector}."), attributes));
        }
        let mut keys: Vec<String> = GLOBAL_KEYS.iter().map(|key| (*key).to_owned()).collect();
        for (scope, attributes) in &scopes_with_attributes {
            keys.extend(
                attributes
                    .iter()
                    .map(|attribute| format!("{scope}{attribute}")),
            );
        }
        Self {
            scopes: scopes_with_attributes,
            keys,
        }
    }

    fn contains(&self, written: &str, spelling: Spelling) -> bool {
        let below = |scope: &String| {
            let scope = spelling.spell(scope);
            written.len() > scope.len() && written.starts_with(&scope)
        };
        let global = |key: &&str| spelling.spell(key) == written;
        matches!(spelling, Spelling::Variable if written == CONFIG_FILE_VARIABLE)
            || GLOBAL_KEYS.iter().any(global)
            || self.scopes.iter().map(|(scope, _)| scope).any(below)
    }

    /// The known key nearest to `written` by edit distance: a whole known key, or `written`
    /// with its beginning replaced by a declared scope it misspells (so a misspelled channel in
    /// a client property is suggested with the property kept). The rest is kept only where it
    /// belongs: not an incoming channel's attribute on an outgoing channel, say.
    fn closest(&self, written: &str, spelling: Spelling) -> String {
        let mut best: Option<(usize, String)> = None;
        let mut consider = |cost: usize, candidate: String| {
            if best.as_ref().is_none_or(|(best_cost, _)| cost < *best_cost) {
                best = Some((cost, candidate));
            }
        };
        let variable_only =
            matches!(spelling, Spelling::Variable).then_some(CONFIG_FILE_VARIABLE.to_owned());
        for key in self
            .keys
            .iter()
            .map(|key| spelling.spell(key))
            .chain(variable_only)
        {
            consider(distance(written, &key), key);
        }
        let library_attributes: Vec<String> = INCOMING_ATTRIBUTES
            .iter()
            .chain(OUTGOING_ATTRIBUTES)
            .map(|attribute| spelling.spell(attribute))
            .collect();
        for (scope, attributes) in &self.scopes {
            let scope = spelling.spell(scope);
            let belongs_elsewhere = |rest: &str| {
                library_attributes.iter().any(|attribute| attribute == rest)
                    && !attributes
                        .iter()
                        .any(|attribute| spelling.spell(attribute) == rest)
            };
            for (split, _) in written.char_indices().chain([(written.len(), ' ')]) {
                let (beginning, rest) = written.split_at(split);
                let cost = distance(beginning, &scope);
                if cost <= MAX_SCOPE_EDITS && !belongs_elsewhere(rest) {
                    consider(cost, format!("{scope}{rest}"));
                }
            }
        }
        best.map(|(_, candidate)| candidate).unwrap_or_default()
    }

    fn describe(&self, spelling: Spelling) -> String {
        let mut globals: Vec<String> = GLOBAL_KEYS.iter().map(|key| spelling.spell(key)).collect();
        if let Spelling::Variable = spelling {
            globals.insert(0, CONFIG_FILE_VARIABLE.to_owned());
        }
        let scopes: Vec<String> = self
            .scopes
            .iter()
            .map(|(scope, _)| spelling.spell(scope))
            .collect();
        format!(
            "{}, or any key starting with {}",
            globals.join(", "),
            scopes.join(", ")
        )
    }
}

/// Kubernetes gives every pod variables for each service of its namespace: a service named
/// `messaging` yields `MESSAGING_SERVICE_HOST`, `MESSAGING_SERVICE_PORT[_<NAME>]` and
/// `MESSAGING_PORT[_<PORT>_<PROTOCOL>[_PROTO|_PORT|_ADDR]]`. They are not ours, and failing on
/// them would stop every service of that namespace.
fn is_kubernetes_service(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(VARIABLE_PREFIX) else {
        return false;
    };
    rest == "SERVICE_HOST"
        || rest == "SERVICE_PORT"
        || rest.starts_with("SERVICE_PORT_")
        || rest == "PORT"
        || rest.starts_with("PORT_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelled_channel_is_suggested_with_the_property_kept() {
        let known = Known::new(&["orders".to_owned()], &[]);
        assert_eq!(
            known.closest("messaging.incoming.order.auto.offset.reset", Spelling::Key),
            "messaging.incoming.orders.auto.offset.reset"
        );
        assert_eq!(
            known.closest(
                "MESSAGING_INCOMING_ORDER_FAILURE_STRATEGY",
                Spelling::Variable
            ),
            "MESSAGING_INCOMING_ORDERS_FAILURE_STRATEGY"
        );
        assert_eq!(
            known.closest("MESSAGING_HEALTH_PROT", Spelling::Variable),
            "MESSAGING_HEALTH_PORT"
        );
        assert!(known.contains("MESSAGING_CONFIG_FILE", Spelling::Variable));
        assert!(known.contains("messaging.connector.kafka.bootstrap.servers", Spelling::Key));
        assert!(!known.contains("messaging.connector.rabbit.host", Spelling::Key));
        assert!(
            !known.contains("messaging.incoming.orders.", Spelling::Key),
            "a prefix alone names nothing"
        );
    }

    /// A suggestion is a key the application knows, never a scope glued to a fragment of the
    /// written key, nor a channel's scope with another direction's attribute.
    #[test]
    fn a_suggestion_is_a_key_that_would_be_accepted_where_it_belongs() {
        let known = Known::new(&["work".to_owned()], &["proc-out".to_owned()]);
        for (written, spelling, expected) in [
            (
                "MESSAGING_OUTGOING_PROCOUT_TOPIC",
                Spelling::Variable,
                "MESSAGING_OUTGOING_PROC_OUT_TOPIC",
            ),
            (
                "MESSAGING_INCOMING_WROK_MAX_CONCURRENCY",
                Spelling::Variable,
                "MESSAGING_INCOMING_WORK_MAX_CONCURRENCY",
            ),
            (
                "messaging.incoming.workauto.offset.reset",
                Spelling::Key,
                "messaging.incoming.work.auto.offset.reset",
            ),
            (
                "messaging.outgoing.procout.linger.ms",
                Spelling::Key,
                "messaging.outgoing.proc-out.linger.ms",
            ),
        ] {
            assert_eq!(known.closest(written, spelling), expected, "{written}");
        }
        let only_incoming = Known::new(&["work".to_owned()], &[]);
        for (known, written, spelling, not_expected) in [
            (
                &only_incoming,
                "MESSAGING_OUTGOING_PROCOUT_TOPIC",
                Spelling::Variable,
                "OCOUT",
            ),
            (
                &known,
                "MESSAGING_OUTGOING_PROCOUT_FAILURE_STRATEGY",
                Spelling::Variable,
                "MESSAGING_OUTGOING_PROC_OUT_FAILURE_STRATEGY",
            ),
        ] {
            let suggestion = known.closest(written, spelling);
            assert!(
                known.contains(&suggestion, spelling),
                "{written}: {suggestion}"
            );
            assert!(
                !suggestion.contains(not_expected),
                "{written}: {suggestion}"
            );
        }
    }

    #[test]
    fn variables_kubernetes_sets_for_a_service_named_messaging_are_not_ours() {
        for name in [
            "MESSAGING_SERVICE_HOST",
            "MESSAGING_SERVICE_PORT",
            "MESSAGING_SERVICE_PORT_HTTP",
            "MESSAGING_PORT",
            "MESSAGING_PORT_8080_TCP",
            "MESSAGING_PORT_8080_TCP_ADDR",
        ] {
            assert!(is_kubernetes_service(name), "{name}");
        }
        for name in [
            "MESSAGING_HEALTH_PORT",
            "MESSAGING_HEALTH_PROT",
            "MESSAGING_INCOMING_ORDERS_TOPIC",
        ] {
            assert!(!is_kubernetes_service(name), "{name}");
        }
    }
}
