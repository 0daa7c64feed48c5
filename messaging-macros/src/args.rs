//! The arguments inside `#[incoming(..)]` / `#[outgoing(..)]`: a channel name
//! followed by `name = "value"` pairs, checked against what the runtime
//! understands so a typo fails the build instead of being silently ignored
//! at startup.

use messaging_names::{channel, commit_strategy, connector, failure_strategy, ordering};
use proc_macro2::{Span, TokenStream};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, ExprAssign, Ident, Lit, LitStr, Token};

use crate::errors::Errors;

/// Which attribute the arguments belong to; it selects the accepted names and
/// the configuration key prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    Incoming,
    Outgoing,
}

impl Direction {
    pub(crate) fn attribute_name(self) -> &'static str {
        match self {
            Direction::Incoming => "incoming",
            Direction::Outgoing => "outgoing",
        }
    }

    fn accepted(self) -> &'static [Accepted] {
        match self {
            Direction::Incoming => INCOMING,
            Direction::Outgoing => OUTGOING,
        }
    }
}

/// One attribute name and, when the runtime only understands a fixed set of
/// values, that set: the runtime's own table (`messaging-names`), so the two
/// cannot drift apart.
struct Accepted {
    name: &'static str,
    values: Option<&'static [&'static str]>,
    /// Shown in the "must be a string literal" hint.
    example: &'static str,
}

const TOPIC: Accepted = Accepted {
    name: "topic",
    values: None,
    example: "movies",
};

const CONNECTOR: Accepted = Accepted {
    name: "connector",
    values: Some(connector::ACCEPTED),
    example: connector::KAFKA,
};

const INCOMING: &[Accepted] = &[
    TOPIC,
    Accepted {
        values: Some(connector::INCOMING_ACCEPTED),
        ..CONNECTOR
    },
    Accepted {
        name: "failure_strategy",
        values: Some(failure_strategy::ACCEPTED),
        example: failure_strategy::FAIL,
    },
    Accepted {
        name: "commit_strategy",
        values: Some(commit_strategy::ACCEPTED),
        example: commit_strategy::THROTTLED,
    },
    Accepted {
        name: "group_id",
        values: None,
        example: "my-service",
    },
    Accepted {
        name: "max_concurrency",
        values: None,
        example: "16",
    },
    Accepted {
        name: "ordering",
        values: Some(ordering::ACCEPTED),
        example: ordering::PARTITION,
    },
];

const OUTGOING: &[Accepted] = &[TOPIC, CONNECTOR];

/// Validated arguments of one `#[incoming]` or `#[outgoing]`.
pub(crate) struct ChannelArgs {
    pub(crate) direction: Direction,
    pub(crate) channel: LitStr,
    /// In source order, without duplicates.
    pub(crate) attributes: Vec<ChannelAttribute>,
}

pub(crate) struct ChannelAttribute {
    pub(crate) name: Ident,
    pub(crate) value: LitStr,
}

impl ChannelArgs {
    /// `(configuration key, value)` for every attribute, in source order.
    pub(crate) fn config_entries(&self) -> impl Iterator<Item = (String, &LitStr)> + '_ {
        let channel = self.channel.value();
        self.attributes.iter().map(move |attribute| {
            let key = config_key(self.direction, &channel, &attribute.name.to_string());
            (key, &attribute.value)
        })
    }
}

/// `messaging.<incoming|outgoing>.<channel>.<property>`, the same key a user
/// would write in the configuration file, so the attribute and the file are
/// two spellings of one setting.
pub(crate) fn config_key(direction: Direction, channel: &str, attribute: &str) -> String {
    format!(
        "messaging.{}.{}.{}",
        direction.attribute_name(),
        channel,
        property_name(attribute)
    )
}

/// Rust idents cannot contain `-` or `.`, configuration keys use them.
fn property_name(attribute: &str) -> String {
    match attribute {
        // Kafka's own property name, so it reads the same as in Kafka docs.
        "group_id" => "group.id".to_owned(),
        other => other.replace('_', "-"),
    }
}

/// Parses and validates the tokens between the attribute's parentheses.
///
/// `empty_span` is where "missing channel name" points when there are no
/// tokens to point at.
pub(crate) fn parse(
    direction: Direction,
    tokens: TokenStream,
    empty_span: Span,
) -> syn::Result<ChannelArgs> {
    // `name = "value"` parses as an assignment expression, which gives every
    // argument, right or wrong, a token to hang an error on.
    let raw = Punctuated::<Expr, Token![,]>::parse_terminated.parse2(tokens)?;
    let attr = direction.attribute_name();
    let mut errors = Errors::default();
    let mut args = raw.into_iter().peekable();

    let channel = match args.peek() {
        None => {
            errors.push(syn::Error::new(
                empty_span,
                format!("missing channel name; expected #[{attr}(\"channel-name\")]"),
            ));
            None
        }
        // Leave it in `args` so it is still validated below.
        Some(named @ Expr::Assign(_)) => {
            errors.spanned(
                named,
                format!(
                    "missing channel name: the first argument must be the channel name, \
                     e.g. #[{attr}(\"movies\", ..)]"
                ),
            );
            None
        }
        Some(_) => {
            let first = args.next().expect("peeked");
            errors.collect(channel_name(direction, &first))
        }
    };

    let mut attributes: Vec<ChannelAttribute> = Vec::new();
    let mut seen: Vec<Ident> = Vec::new();
    for arg in args {
        match arg {
            Expr::Assign(assign) => {
                if let Some(attribute) = named_argument(direction, &assign, &mut seen, &mut errors) {
                    attributes.push(attribute);
                }
            }
            other => errors.spanned(other, "unexpected argument; after the channel name only `name = \"value\"` pairs are accepted"),
        }
    }

    errors.finish()?;
    Ok(ChannelArgs {
        direction,
        channel: channel.expect("a missing channel is reported as an error"),
        attributes,
    })
}

fn channel_name(direction: Direction, expr: &Expr) -> syn::Result<LitStr> {
    let Some(lit) = string_literal(expr) else {
        return Err(syn::Error::new_spanned(
            expr,
            format!(
                "the channel name must be a string literal, e.g. #[{}(\"movies\")]",
                direction.attribute_name()
            ),
        ));
    };
    let value = lit.value();
    if value.is_empty() {
        return Err(syn::Error::new_spanned(
            lit,
            "the channel name must not be empty",
        ));
    }
    if let Some(bad) = channel::first_refused(&value) {
        return Err(syn::Error::new_spanned(
            lit,
            format!(
                "invalid channel name {value:?}: {bad:?} is not allowed; use only {}",
                channel::ACCEPTED
            ),
        ));
    }
    Ok(lit.clone())
}

/// Validates one `name = value`; records errors and returns `None` unless the
/// pair is entirely valid and not a repeat.
fn named_argument(
    direction: Direction,
    assign: &ExprAssign,
    seen: &mut Vec<Ident>,
    errors: &mut Errors,
) -> Option<ChannelAttribute> {
    let attr = direction.attribute_name();
    let accepted = direction.accepted();
    let names = || {
        accepted
            .iter()
            .map(|a| a.name)
            .collect::<Vec<_>>()
            .join(", ")
    };

    let name = match &*assign.left {
        Expr::Path(path) if path.qself.is_none() && path.attrs.is_empty() => path.path.get_ident(),
        _ => None,
    };
    let Some(name) = name else {
        errors.spanned(
            &assign.left,
            format!("expected an attribute name; #[{attr}] accepts: {}", names()),
        );
        return None;
    };

    let Some(spec) = accepted.iter().find(|a| name == a.name) else {
        errors.spanned(
            name,
            format!(
                "unknown attribute `{name}` for #[{attr}]; accepted: {}",
                names()
            ),
        );
        return None;
    };

    // Reported on the second occurrence, but its value is still checked so
    // every mistake shows up in one build.
    let duplicate = seen.iter().any(|s| s == name);
    if duplicate {
        errors.spanned(name, format!("duplicate attribute `{name}`"));
    } else {
        seen.push(name.clone());
    }

    let Some(value) = string_literal(&assign.right) else {
        errors.spanned(
            &assign.right,
            format!(
                "`{name}` takes a string literal, e.g. {name} = \"{}\"",
                spec.example
            ),
        );
        return None;
    };

    let text = value.value();
    match spec.values {
        Some(values) if !values.contains(&text.as_str()) => {
            let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
            errors.spanned(
                value,
                format!("unknown {name} {text:?}; accepted: {}", quoted.join(", ")),
            );
            return None;
        }
        None if text.is_empty() => {
            errors.spanned(value, format!("`{name}` must not be empty"));
            return None;
        }
        _ => {}
    }

    if duplicate {
        return None;
    }
    Some(ChannelAttribute {
        name: name.clone(),
        value: value.clone(),
    })
}

/// Looks through the invisible group a `macro_rules!` `$x:literal` or
/// `$x:expr` fragment is wrapped in, so attributes generated by user macros
/// work too.
fn string_literal(expr: &Expr) -> Option<&LitStr> {
    match expr {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(lit), ..
        }) => Some(lit),
        Expr::Group(group) => string_literal(&group.expr),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::*;

    fn incoming(tokens: TokenStream) -> syn::Result<ChannelArgs> {
        parse(Direction::Incoming, tokens, Span::call_site())
    }

    fn outgoing(tokens: TokenStream) -> syn::Result<ChannelArgs> {
        parse(Direction::Outgoing, tokens, Span::call_site())
    }

    fn messages(result: syn::Result<ChannelArgs>) -> Vec<String> {
        let Err(error) = result else {
            panic!("arguments should be rejected");
        };
        error.into_iter().map(|e| e.to_string()).collect()
    }

    fn entries(args: &ChannelArgs) -> Vec<(String, String)> {
        args.config_entries()
            .map(|(key, value)| (key, value.value()))
            .collect()
    }

    #[test]
    fn channel_only() {
        let args = incoming(quote!("movies")).unwrap();
        assert_eq!(args.direction, Direction::Incoming);
        assert_eq!(args.channel.value(), "movies");
        assert!(args.attributes.is_empty());
    }

    #[test]
    fn trailing_comma_is_accepted() {
        let args = incoming(quote!("movies",)).unwrap();
        assert_eq!(args.channel.value(), "movies");
    }

    #[test]
    fn every_incoming_attribute_maps_to_its_key_in_source_order() {
        let args = incoming(quote!(
            "movies.in",
            group_id = "recommender",
            topic = "movies",
            connector = "kafka",
            failure_strategy = "dead-letter-queue",
            commit_strategy = "latest",
        ))
        .unwrap();
        assert_eq!(
            entries(&args),
            [
                ("messaging.incoming.movies.in.group.id", "recommender"),
                ("messaging.incoming.movies.in.topic", "movies"),
                ("messaging.incoming.movies.in.connector", "kafka"),
                (
                    "messaging.incoming.movies.in.failure-strategy",
                    "dead-letter-queue"
                ),
                ("messaging.incoming.movies.in.commit-strategy", "latest"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn outgoing_attributes_use_the_outgoing_prefix() {
        let args = outgoing(quote!("prices-eur", topic = "x", connector = "memory")).unwrap();
        assert_eq!(
            entries(&args),
            [
                ("messaging.outgoing.prices-eur.topic", "x"),
                ("messaging.outgoing.prices-eur.connector", "memory"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn key_mapping() {
        let key = |direction, name| config_key(direction, "ch", name);
        assert_eq!(
            key(Direction::Incoming, "group_id"),
            "messaging.incoming.ch.group.id"
        );
        assert_eq!(
            key(Direction::Incoming, "failure_strategy"),
            "messaging.incoming.ch.failure-strategy"
        );
        assert_eq!(
            key(Direction::Incoming, "commit_strategy"),
            "messaging.incoming.ch.commit-strategy"
        );
        assert_eq!(
            key(Direction::Outgoing, "topic"),
            "messaging.outgoing.ch.topic"
        );
    }

    #[test]
    fn every_enumerated_value_is_accepted() {
        for value in failure_strategy::ACCEPTED {
            assert!(
                incoming(quote!("c", failure_strategy = #value)).is_ok(),
                "{value}"
            );
        }
        for value in commit_strategy::ACCEPTED {
            assert!(
                incoming(quote!("c", commit_strategy = #value)).is_ok(),
                "{value}"
            );
        }
        for value in connector::INCOMING_ACCEPTED {
            assert!(incoming(quote!("c", connector = #value)).is_ok(), "{value}");
        }
        for value in connector::ACCEPTED {
            assert!(outgoing(quote!("c", connector = #value)).is_ok(), "{value}");
        }
    }

    #[test]
    fn literal_from_a_macro_fragment_is_accepted() {
        let channel = Expr::Group(syn::ExprGroup {
            attrs: Vec::new(),
            group_token: Default::default(),
            expr: Box::new(syn::parse_quote!("movies")),
        });
        let args = incoming(quote!(#channel)).unwrap();
        assert_eq!(args.channel.value(), "movies");
    }

    #[test]
    fn missing_channel() {
        assert_eq!(
            messages(incoming(TokenStream::new())),
            ["missing channel name; expected #[incoming(\"channel-name\")]"]
        );
    }

    #[test]
    fn named_first_argument_is_a_missing_channel_and_still_validated() {
        assert_eq!(
            messages(incoming(quote!(topic = "movies", colour = "red"))),
            [
                "missing channel name: the first argument must be the channel name, \
                 e.g. #[incoming(\"movies\", ..)]",
                "unknown attribute `colour` for #[incoming]; accepted: topic, connector, \
                 failure_strategy, commit_strategy, group_id, max_concurrency, ordering",
            ]
        );
    }

    #[test]
    fn channel_must_be_a_string_literal() {
        assert_eq!(
            messages(outgoing(quote!(movies))),
            ["the channel name must be a string literal, e.g. #[outgoing(\"movies\")]"]
        );
    }

    #[test]
    fn channel_characters() {
        assert_eq!(
            messages(incoming(quote!("my movies"))),
            ["invalid channel name \"my movies\": ' ' is not allowed; \
              use only ASCII letters, digits, '.', '_' and '-'"]
        );
        assert_eq!(
            messages(incoming(quote!(""))),
            ["the channel name must not be empty"]
        );
        assert!(incoming(quote!("Az09._-")).is_ok());
    }

    #[test]
    fn unknown_attribute_lists_what_the_direction_accepts() {
        assert_eq!(
            messages(outgoing(quote!("c", group_id = "g"))),
            ["unknown attribute `group_id` for #[outgoing]; accepted: topic, connector"]
        );
    }

    #[test]
    fn bad_enumerated_value() {
        assert_eq!(
            messages(incoming(quote!("c", failure_strategy = "retry"))),
            [
                "unknown failure_strategy \"retry\"; accepted: \"fail\", \"ignore\", \"dead-letter-queue\", \"delayed-retry-topic\""
            ]
        );
        assert_eq!(
            messages(outgoing(quote!("c", connector = "rabbit"))),
            ["unknown connector \"rabbit\"; accepted: \"kafka\", \"memory\", \"cosmos\""]
        );
    }

    #[test]
    fn value_must_be_a_string_literal() {
        assert_eq!(
            messages(incoming(quote!("c", commit_strategy = latest, topic = 5))),
            [
                "`commit_strategy` takes a string literal, e.g. commit_strategy = \"throttled\"",
                "`topic` takes a string literal, e.g. topic = \"movies\"",
            ]
        );
    }

    #[test]
    fn free_form_values_must_not_be_empty() {
        assert_eq!(
            messages(incoming(quote!("c", group_id = ""))),
            ["`group_id` must not be empty"]
        );
    }

    #[test]
    fn duplicate_attribute_is_reported_once_with_its_value_errors() {
        assert_eq!(
            messages(incoming(quote!(
                "c",
                topic = "a",
                topic = "b",
                connector = "kafka",
                connector = "nope"
            ))),
            [
                "duplicate attribute `topic`",
                "duplicate attribute `connector`",
                "unknown connector \"nope\"; accepted: \"kafka\", \"memory\"",
            ]
        );
    }

    #[test]
    fn second_positional_argument_is_rejected() {
        assert_eq!(messages(incoming(quote!("a", "b"))), ["unexpected argument; after the channel name only `name = \"value\"` pairs are accepted"]);
    }

    #[test]
    fn attribute_name_must_be_a_plain_ident() {
        assert_eq!(
            messages(outgoing(quote!("a", kafka::topic = "b"))),
            ["expected an attribute name; #[outgoing] accepts: topic, connector"]
        );
    }

    #[test]
    fn syntax_errors_are_reported() {
        assert!(incoming(quote!("a", topic = )).is_err());
    }

    #[test]
    fn all_errors_are_collected() {
        assert_eq!(
            messages(incoming(quote!(
                "bad channel!",
                foo = "x",
                failure_strategy = "retry"
            )))
            .len(),
            3
        );
    }
}
