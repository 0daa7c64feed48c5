//! The annotated function: whether the runtime can drive its signature, and
//! the sibling `#[incoming]`/`#[outgoing]` that makes it a processor.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::{
    Attribute, FnArg, GenericArgument, Ident, ItemFn, LitStr, Meta, Path, PathArguments,
    ReturnType, Signature, Type,
};

use crate::args::{self, ChannelArgs, Direction};
use crate::errors::Errors;

const PARAMETERS: &str = "handlers take the payload (or Message<T>) and optionally Metadata";

/// Everything the expansion needs, validated.
pub(crate) struct Handler {
    pub(crate) ident: Ident,
    pub(crate) incoming: ChannelArgs,
    /// `Some` makes the handler a processor whose results go to this channel.
    pub(crate) outgoing: Option<ChannelArgs>,
    /// What the function is written to return, as far as its processor shape goes.
    pub(crate) returns: Returns,
}

/// A processor written to return `Result<U, E>` (or `Result<Message<U>, E>`) must have its
/// `Err` nack the input. The runtime's plain shape also takes any `U: Serialize`, and serde
/// serializes a `Result` whose two sides are `Serialize`, so with `E = String` both shapes
/// fit and the compiler cannot choose. Naming the shape here settles it, and an `E` that is
/// not an error type is then a compile error rather than an `Err` sent as data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Returns {
    /// Left to the compiler: anything but a `Result` written as such.
    Inferred,
    /// `Result<U, E>`, or an alias whose last segment is `Result` (`anyhow::Result<U>`).
    Result,
    /// `Result<Message<U>, E>`.
    ResultOfMessage,
}

impl Returns {
    fn of(output: &ReturnType) -> Self {
        let ReturnType::Type(_, ty) = output else {
            return Self::Inferred;
        };
        let Some(result) = last_segment(ty).filter(|segment| segment.ident == "Result") else {
            return Self::Inferred;
        };
        let PathArguments::AngleBracketed(arguments) = &result.arguments else {
            return Self::Inferred;
        };
        match arguments.args.first() {
            Some(GenericArgument::Type(ok))
                if last_segment(ok).is_some_and(|segment| segment.ident == "Message") =>
            {
                Self::ResultOfMessage
            }
            Some(GenericArgument::Type(_)) => Self::Result,
            _ => Self::Inferred,
        }
    }
}

fn last_segment(ty: &Type) -> Option<&syn::PathSegment> {
    match ty {
        Type::Path(path) if path.qself.is_none() => path.path.segments.last(),
        _ => None,
    }
}

impl Handler {
    /// Incoming attributes first, then outgoing ones, so the output does not
    /// depend on which of the two attributes was written on top.
    pub(crate) fn config_entries(&self) -> impl Iterator<Item = (String, &LitStr)> + '_ {
        self.incoming
            .config_entries()
            .chain(self.outgoing.iter().flat_map(ChannelArgs::config_entries))
    }
}

/// Validates the attribute being expanded (`direction` with its `args`)
/// together with `func`.
///
/// Every `#[incoming]`/`#[outgoing]` still on `func` is removed, on error as
/// well: a left-over one would expand after us and register the handler a
/// second time or stack follow-up errors onto the real one.
pub(crate) fn analyze(
    direction: Direction,
    args: TokenStream,
    func: &mut ItemFn,
) -> syn::Result<Handler> {
    let mut errors = Errors::default();
    let own = errors.collect(args::parse(direction, args.clone(), Span::call_site()));
    let sibling = take_sibling(direction, &mut func.attrs, &mut errors);

    let (incoming, outgoing) = match (direction, sibling) {
        (Direction::Incoming, Sibling::Present(outgoing)) => (own, Some(outgoing)),
        (Direction::Incoming, Sibling::Absent | Sibling::Invalid) => (own, None),
        (Direction::Outgoing, Sibling::Present(incoming)) => (Some(incoming), own),
        (Direction::Outgoing, Sibling::Invalid) => (None, own),
        (Direction::Outgoing, Sibling::Absent) => {
            let message = "#[outgoing] needs #[incoming] on the same function (a processor); \
                           to send from ordinary code use messaging::Emitter";
            let missing = match &own {
                Some(own) => syn::Error::new_spanned(&own.channel, message),
                None => syn::Error::new_spanned(&args, message),
            };
            // Not a handler without #[incoming], so its signature is not
            // judged yet: adding #[incoming] is the one fix to point at.
            return Err(errors.ending_with(missing));
        }
    };

    if let (Some(incoming), Some(outgoing)) = (&incoming, &outgoing) {
        let name = incoming.channel.value();
        if outgoing.channel.value() == name {
            // As `build()` refuses it, but where the attributes are written.
            errors.push(syn::Error::new_spanned(
                &outgoing.channel,
                format!(
                    "#[incoming] and #[outgoing] both name the channel `{name}`, and health and \
                     metrics know a channel by its name alone; give the outgoing channel another \
                     name (with topic = \"{name}\" to keep its topic)"
                ),
            ));
        }
    }
    errors.collect(check_signature(&func.sig));
    errors.finish()?;
    Ok(Handler {
        ident: func.sig.ident.clone(),
        incoming: incoming.expect("a missing #[incoming] is reported as an error"),
        outgoing,
        returns: Returns::of(&func.sig.output),
    })
}

enum Sibling {
    Absent,
    /// Found, removed and its errors recorded.
    Invalid,
    Present(ChannelArgs),
}

/// Attribute macros expand outermost first, so the first of
/// `#[incoming]`/`#[outgoing]` to run sees the other one as a plain
/// attribute below it and consumes it; that makes both orders mean the same
/// processor.
fn take_sibling(current: Direction, attrs: &mut Vec<Attribute>, errors: &mut Errors) -> Sibling {
    let mut sibling = Sibling::Absent;
    let mut found = false;
    attrs.retain(|attr| {
        let Some(direction) = messaging_direction(attr) else {
            return true;
        };
        if direction == current || found {
            errors.spanned(attr, duplicate_message(direction));
        } else {
            found = true;
            sibling = match errors.collect(sibling_args(direction, attr)) {
                Some(args) => Sibling::Present(args),
                None => Sibling::Invalid,
            };
        }
        false
    });
    sibling
}

/// Paths of the `#[incoming]`/`#[outgoing]` attributes still on a function,
/// i.e. the ones [`analyze`] will remove.
pub(crate) fn messaging_attribute_paths(attrs: &[Attribute]) -> Vec<Path> {
    attrs
        .iter()
        .filter(|attr| messaging_direction(attr).is_some())
        .map(|attr| attr.path().clone())
        .collect()
}

/// Matches on the last path segment only, since users may write
/// `#[messaging::outgoing]`, `#[messaging::prelude::outgoing]` or the bare
/// imported name.
fn messaging_direction(attr: &Attribute) -> Option<Direction> {
    let last = &attr.path().segments.last()?.ident;
    if last == "incoming" {
        Some(Direction::Incoming)
    } else if last == "outgoing" {
        Some(Direction::Outgoing)
    } else {
        None
    }
}

fn duplicate_message(direction: Direction) -> &'static str {
    match direction {
        Direction::Incoming => "#[incoming] is given twice; a handler consumes exactly one channel",
        Direction::Outgoing => {
            "#[outgoing] is given twice; a processor sends to exactly one channel"
        }
    }
}

fn sibling_args(direction: Direction, attr: &Attribute) -> syn::Result<ChannelArgs> {
    match &attr.meta {
        Meta::List(list) => {
            args::parse(direction, list.tokens.clone(), list.delimiter.span().join())
        }
        Meta::Path(path) => {
            let span = path
                .segments
                .last()
                .map_or_else(Span::call_site, |s| s.ident.span());
            args::parse(direction, TokenStream::new(), span)
        }
        Meta::NameValue(_) => Err(syn::Error::new_spanned(
            attr,
            format!(
                "expected #[{}(\"channel-name\", ..)]",
                direction.attribute_name()
            ),
        )),
    }
}

/// Rejects signatures the runtime cannot call, with a message naming the fix
/// instead of an opaque trait-bound error from deep inside the runtime.
pub(crate) fn check_signature(sig: &Signature) -> syn::Result<()> {
    let mut errors = Errors::default();

    if sig.asyncness.is_none() {
        errors.spanned(sig.fn_token, "#[incoming] handlers must be async fn");
    }

    // One concrete payload type is needed to pick the deserializer.
    if !sig.generics.params.is_empty() {
        errors.spanned(
            &sig.generics,
            "#[incoming] handlers cannot have generic parameters; use concrete types",
        );
    }

    let mut typed = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(receiver) => errors.spanned(
                receiver,
                "methods are not supported: make the #[incoming] handler a free function",
            ),
            FnArg::Typed(pat_type) => {
                if let Type::ImplTrait(_) = &*pat_type.ty {
                    errors.spanned(
                        &pat_type.ty,
                        "#[incoming] handlers cannot have generic parameters; \
                         use a concrete type instead of `impl Trait`",
                    );
                }
                typed.push(input);
            }
        }
    }

    match typed.len() {
        0 => errors.spanned(
            &sig.ident,
            format!("`{}` has no parameters; {PARAMETERS}", sig.ident),
        ),
        1 | 2 => {}
        _ => {
            let extra = &typed[2..];
            errors.spanned(
                quote!(#(#extra),*),
                format!("too many parameters; {PARAMETERS}"),
            );
        }
    }

    errors.finish()
}

#[cfg(test)]
mod tests {
    use syn::parse_quote;

    use super::*;

    fn messages<T>(result: syn::Result<T>) -> Vec<String> {
        let Err(error) = result else {
            panic!("should be rejected");
        };
        error.into_iter().map(|e| e.to_string()).collect()
    }

    fn signature(func: ItemFn) -> syn::Result<()> {
        check_signature(&func.sig)
    }

    #[test]
    fn accepts_payload_and_optional_metadata() {
        signature(parse_quote!(
            async fn a(m: Movie) {}
        ))
        .unwrap();
        signature(parse_quote!(
            async fn a(m: Message<Movie>, meta: Metadata) -> Result<(), E> {}
        ))
        .unwrap();
        signature(parse_quote!(
            pub async fn a((x, y): (i32, i32)) {}
        ))
        .unwrap();
    }

    #[test]
    fn rejects_non_async() {
        assert_eq!(
            messages(signature(parse_quote!(
                fn a(m: Movie) {}
            ))),
            ["#[incoming] handlers must be async fn"]
        );
    }

    #[test]
    fn rejects_receiver_without_miscounting_it() {
        assert_eq!(
            messages(signature(parse_quote!(
                async fn a(&self, m: Movie, meta: Metadata) {}
            ))),
            ["methods are not supported: make the #[incoming] handler a free function"]
        );
    }

    #[test]
    fn rejects_generics_and_impl_trait() {
        assert_eq!(
            messages(signature(parse_quote!(
                async fn a<T: Clone>(m: T) {}
            ))),
            ["#[incoming] handlers cannot have generic parameters; use concrete types"]
        );
        assert_eq!(
            messages(signature(parse_quote!(
                async fn a<'x>(m: &'x str) {}
            )))
            .len(),
            1
        );
        assert_eq!(
            messages(signature(parse_quote!(
                async fn a(m: impl Clone) {}
            ))),
            ["#[incoming] handlers cannot have generic parameters; \
              use a concrete type instead of `impl Trait`"]
        );
    }

    #[test]
    fn parameter_count() {
        assert_eq!(
            messages(signature(parse_quote!(
                async fn a() {}
            ))),
            ["`a` has no parameters; handlers take the payload (or Message<T>) and optionally Metadata"]
        );
        assert_eq!(
            messages(signature(parse_quote!(
                async fn a(x: u8, y: u8, z: u8, w: u8) {}
            ))),
            ["too many parameters; handlers take the payload (or Message<T>) and optionally Metadata"]
        );
    }

    #[test]
    fn a_result_written_as_such_names_the_error_aware_shape() {
        let returns = |func: ItemFn| Returns::of(&func.sig.output);
        assert_eq!(
            returns(parse_quote!(
                async fn a(x: f64) -> Result<f64, String> {}
            )),
            Returns::Result
        );
        assert_eq!(
            returns(parse_quote!(
                async fn a(x: f64) -> anyhow::Result<f64> {}
            )),
            Returns::Result
        );
        assert_eq!(
            returns(parse_quote!(
                async fn a(x: f64) -> std::result::Result<Message<f64>, E> {}
            )),
            Returns::ResultOfMessage
        );
        assert_eq!(
            returns(parse_quote!(
                async fn a(x: f64) -> f64 {}
            )),
            Returns::Inferred
        );
        assert_eq!(
            returns(parse_quote!(
                async fn a(x: Message<f64>) -> Message<f64> {}
            )),
            Returns::Inferred
        );
        assert_eq!(
            returns(parse_quote!(
                async fn a(x: f64) {}
            )),
            Returns::Inferred
        );
    }

    #[test]
    fn collects_every_signature_error() {
        assert_eq!(
            messages(signature(parse_quote!(
                fn a<T>(&self) {}
            )))
            .len(),
            4
        );
    }

    fn analyze_fn(
        direction: Direction,
        args: TokenStream,
        mut func: ItemFn,
    ) -> (syn::Result<Handler>, ItemFn) {
        let result = analyze(direction, args, &mut func);
        (result, func)
    }

    #[test]
    fn subscriber() {
        let (handler, func) = analyze_fn(
            Direction::Incoming,
            quote!("movies"),
            parse_quote!(
                #[doc = "kept"]
                async fn consume(m: Movie) {}
            ),
        );
        let handler = handler.unwrap();
        assert_eq!(handler.ident, "consume");
        assert_eq!(handler.incoming.channel.value(), "movies");
        assert!(handler.outgoing.is_none());
        assert_eq!(func.attrs.len(), 1, "unrelated attributes are kept");
    }

    #[test]
    fn processor_from_either_attribute_removes_the_sibling() {
        let cases = [
            (
                Direction::Incoming,
                quote!("prices"),
                quote!(#[outgoing("prices-eur", topic = "eur")]),
            ),
            (
                Direction::Incoming,
                quote!("prices"),
                quote!(#[messaging::outgoing("prices-eur", topic = "eur")]),
            ),
            (
                Direction::Outgoing,
                quote!("prices-eur", topic = "eur"),
                quote!(#[incoming("prices")]),
            ),
            (
                Direction::Outgoing,
                quote!("prices-eur", topic = "eur"),
                quote!(#[::messaging::prelude::incoming("prices")]),
            ),
        ];
        for (direction, args, sibling) in cases {
            let (handler, func) = analyze_fn(
                direction,
                args,
                parse_quote!(#sibling #[inline] async fn convert(usd: f64) -> f64 { usd }),
            );
            let handler = handler.unwrap();
            assert_eq!(handler.incoming.channel.value(), "prices");
            let outgoing = handler.outgoing.as_ref().expect("a processor");
            assert_eq!(outgoing.channel.value(), "prices-eur");
            assert_eq!(
                handler.config_entries().map(|(k, _)| k).collect::<Vec<_>>(),
                ["messaging.outgoing.prices-eur.topic"]
            );
            assert_eq!(func.attrs.len(), 1, "only the sibling is removed");
            assert!(func.attrs[0].path().is_ident("inline"));
        }
    }

    #[test]
    fn incoming_entries_come_before_outgoing_entries() {
        let (handler, _) = analyze_fn(
            Direction::Outgoing,
            quote!("out", topic = "o"),
            parse_quote!(
                #[incoming("in", topic = "i")]
                async fn p(x: u8) {}
            ),
        );
        assert_eq!(
            handler
                .unwrap()
                .config_entries()
                .map(|(k, _)| k)
                .collect::<Vec<_>>(),
            [
                "messaging.incoming.in.topic",
                "messaging.outgoing.out.topic"
            ]
        );
    }

    #[test]
    fn outgoing_alone_is_rejected_without_judging_the_signature() {
        let (handler, _) = analyze_fn(
            Direction::Outgoing,
            quote!("prices-eur"),
            parse_quote!(
                fn not_a_handler_yet() {}
            ),
        );
        assert_eq!(
            messages(handler),
            [
                "#[outgoing] needs #[incoming] on the same function (a processor); \
              to send from ordinary code use messaging::Emitter"
            ]
        );
    }

    #[test]
    fn duplicates_are_rejected_and_all_our_attributes_removed() {
        let cases = [
            (
                Direction::Incoming,
                quote!(#[incoming("b")]),
                "#[incoming] is given twice; a handler consumes exactly one channel",
            ),
            (
                Direction::Incoming,
                quote!(#[outgoing("b")] #[outgoing("c")]),
                "#[outgoing] is given twice; a processor sends to exactly one channel",
            ),
            (
                Direction::Outgoing,
                quote!(#[incoming("b")] #[outgoing("c")]),
                "#[outgoing] is given twice; a processor sends to exactly one channel",
            ),
        ];
        for (direction, attrs, expected) in cases {
            let (handler, func) = analyze_fn(
                direction,
                quote!("a"),
                parse_quote!(#attrs #[inline] async fn h(x: u8) {}),
            );
            assert_eq!(messages(handler), [expected]);
            assert_eq!(func.attrs.len(), 1);
        }
    }

    #[test]
    fn a_processor_may_not_send_to_the_channel_it_consumes() {
        let expected = "#[incoming] and #[outgoing] both name the channel `prices`, and health \
                        and metrics know a channel by its name alone; give the outgoing channel \
                        another name (with topic = \"prices\" to keep its topic)";
        for (direction, sibling) in [
            (Direction::Incoming, quote!(#[outgoing("prices")])),
            (Direction::Outgoing, quote!(#[incoming("prices")])),
        ] {
            let (handler, _) = analyze_fn(
                direction,
                quote!("prices"),
                parse_quote!(#sibling async fn h(x: u8) -> u8 { x }),
            );
            assert_eq!(messages(handler), [expected]);
        }
    }

    #[test]
    fn sibling_errors_are_combined_with_own_and_signature_errors() {
        let (handler, func) = analyze_fn(
            Direction::Incoming,
            quote!("in", foo = "x"),
            parse_quote!(
                #[outgoing]
                fn h(x: u8) {}
            ),
        );
        assert_eq!(
            messages(handler),
            [
                "unknown attribute `foo` for #[incoming]; accepted: topic, connector, \
                 failure_strategy, commit_strategy, group_id, max_concurrency, ordering",
                "missing channel name; expected #[outgoing(\"channel-name\")]",
                "#[incoming] handlers must be async fn",
            ]
        );
        assert!(func.attrs.is_empty());
    }

    #[test]
    fn attribute_paths_are_those_analyze_removes() {
        let func: ItemFn = parse_quote! {
            #[doc = "x"]
            #[messaging::outgoing("a")]
            #[inline]
            #[incoming("b")]
            async fn h(x: u8) {}
        };
        let paths = messaging_attribute_paths(&func.attrs);
        let paths: Vec<String> = paths.iter().map(|p| quote!(#p).to_string()).collect();
        assert_eq!(paths, ["messaging :: outgoing", "incoming"]);
    }

    #[test]
    fn name_value_sibling_is_rejected() {
        let (handler, _) = analyze_fn(
            Direction::Incoming,
            quote!("in"),
            parse_quote!(
                #[outgoing = "out"]
                async fn h(x: u8) {}
            ),
        );
        assert_eq!(
            messages(handler),
            ["expected #[outgoing(\"channel-name\", ..)]"]
        );
    }
}
