//! Token generation: the user's function, unchanged, followed by a
//! registration that `inventory` collects before `main`, so every
//! `messaging::App` finds the handler without a hand-written list.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::{ItemFn, LitStr, Path};

use crate::args::Direction;
use crate::handler_fn::{self, Handler, Returns};

/// Shared body of `#[incoming]` and `#[outgoing]`.
pub(crate) fn handler_attribute(
    direction: Direction,
    args: TokenStream,
    item: TokenStream,
) -> TokenStream {
    let Ok(mut func) = syn::parse2::<ItemFn>(item.clone()) else {
        let error = syn::Error::new(
            Span::call_site(),
            format!(
                "#[{}] can only be applied to an async fn",
                direction.attribute_name()
            ),
        );
        return with_error(error, item);
    };
    let consumed = keep_imports_used(&handler_fn::messaging_attribute_paths(&func.attrs));
    match handler_fn::analyze(direction, args, &mut func) {
        Ok(handler) => {
            let registration = registration(&handler);
            quote!(#func #consumed #registration)
        }
        Err(error) => with_error(error, quote!(#func #consumed)),
    }
}

/// A sibling attribute removed before the compiler resolved it leaves its
/// import (`use messaging::{incoming, outgoing}`) unused, which warns and
/// breaks `#![deny(warnings)]` builds; naming the path again marks it used.
/// It also makes an unimported sibling an error, as it is in the other
/// attribute order.
fn keep_imports_used(paths: &[Path]) -> TokenStream {
    if paths.is_empty() {
        return TokenStream::new();
    }
    quote! {
        const _: () = {
            #(use #paths as _;)*
        };
    }
}

/// Keeping the item next to the errors stops every use of the function from
/// adding a "cannot find function" error to the real one.
fn with_error(error: syn::Error, item: TokenStream) -> TokenStream {
    let error = error.to_compile_error();
    quote!(#item #error)
}

/// The `const _` block scopes the helper name, so any number of handlers can
/// live in one module; it sits next to the function, so the bare ident
/// resolves to it.
fn registration(handler: &Handler) -> TokenStream {
    let attributes = handler.config_entries().map(|(key, value)| {
        // Re-created from the value so raw strings or escapes in the source
        // reach the runtime as the plain string they denote.
        let key = LitStr::new(&key, value.span());
        let value = LitStr::new(&value.value(), value.span());
        quote!(.attribute(#key, #value))
    });
    let ident = &handler.ident;
    let incoming = plain(&handler.incoming.channel);
    let wiring = match &handler.outgoing {
        None => quote!(.incoming(#incoming, #ident)),
        Some(outgoing) => {
            let outgoing = plain(&outgoing.channel);
            match handler.returns {
                Returns::Inferred => quote!(.processor(#incoming, #outgoing, #ident)),
                Returns::Result => {
                    quote!(.__processor_returning_result(#incoming, #outgoing, #ident))
                }
                Returns::ResultOfMessage => {
                    quote!(.__processor_returning_result_of_message(#incoming, #outgoing, #ident))
                }
            }
        }
    };
    quote! {
        const _: () = {
            fn __messaging_register(app: ::messaging::AppBuilder) -> ::messaging::AppBuilder {
                app #(#attributes)* #wiring
            }
            ::messaging::__private::inventory::submit! {
                ::messaging::__private::Registration { register: __messaging_register }
            }
        };
    }
}

fn plain(lit: &LitStr) -> LitStr {
    LitStr::new(&lit.value(), lit.span())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incoming(args: TokenStream, item: TokenStream) -> String {
        handler_attribute(Direction::Incoming, args, item).to_string()
    }

    fn outgoing(args: TokenStream, item: TokenStream) -> String {
        handler_attribute(Direction::Outgoing, args, item).to_string()
    }

    #[test]
    fn subscriber() {
        let actual = incoming(
            quote!("movies", failure_strategy = "dead-letter-queue"),
            quote! {
                async fn consume(movie: Movie) -> Result<(), BadMovie> { Ok(()) }
            },
        );
        let expected = quote! {
            async fn consume(movie: Movie) -> Result<(), BadMovie> { Ok(()) }
            const _: () = {
                fn __messaging_register(app: ::messaging::AppBuilder) -> ::messaging::AppBuilder {
                    app
                        .attribute("messaging.incoming.movies.failure-strategy", "dead-letter-queue")
                        .incoming("movies", consume)
                }
                ::messaging::__private::inventory::submit! {
                    ::messaging::__private::Registration { register: __messaging_register }
                }
            };
        };
        assert_eq!(actual, expected.to_string());
    }

    /// `consumed` is the sibling attribute's path as written by the user.
    fn processor_expansion(consumed: TokenStream) -> String {
        quote! {
            #[doc = " Converts."]
            async fn convert(usd: f64) -> Result<f64, Infallible> { Ok(usd * 0.92) }
            const _: () = {
                use #consumed as _;
            };
            const _: () = {
                fn __messaging_register(app: ::messaging::AppBuilder) -> ::messaging::AppBuilder {
                    app
                        .attribute("messaging.incoming.prices.group.id", "fx")
                        .attribute("messaging.outgoing.prices-eur.topic", "eur")
                        .attribute("messaging.outgoing.prices-eur.connector", "memory")
                        .__processor_returning_result("prices", "prices-eur", convert)
                }
                ::messaging::__private::inventory::submit! {
                    ::messaging::__private::Registration { register: __messaging_register }
                }
            };
        }
        .to_string()
    }

    #[test]
    fn processor_with_incoming_on_top() {
        let actual = incoming(
            quote!("prices", group_id = "fx"),
            quote! {
                #[doc = " Converts."]
                #[outgoing("prices-eur", topic = "eur", connector = "memory")]
                async fn convert(usd: f64) -> Result<f64, Infallible> { Ok(usd * 0.92) }
            },
        );
        assert_eq!(actual, processor_expansion(quote!(outgoing)));
    }

    #[test]
    fn processor_with_outgoing_on_top() {
        let actual = outgoing(
            quote!("prices-eur", topic = "eur", connector = "memory"),
            quote! {
                #[doc = " Converts."]
                #[messaging::incoming("prices", group_id = "fx")]
                async fn convert(usd: f64) -> Result<f64, Infallible> { Ok(usd * 0.92) }
            },
        );
        assert_eq!(actual, processor_expansion(quote!(messaging::incoming)));
    }

    #[test]
    fn raw_string_literals_are_normalized() {
        let actual = incoming(
            quote!(r"movies", topic = r#"movie"s"#),
            quote!(
                async fn c(m: M) {}
            ),
        );
        assert!(
            actual.contains(r#". attribute ("messaging.incoming.movies.topic" , "movie\"s")"#),
            "{actual}"
        );
        assert!(actual.contains(r#". incoming ("movies" , c)"#), "{actual}");
    }

    #[test]
    fn errors_come_with_the_function_and_without_a_registration() {
        let actual = incoming(
            quote!("movies", foo = "x"),
            quote!(
                #[outgoing("out")]
                fn consume(movie: Movie) {}
            ),
        );
        let expected_start = quote! {
            fn consume(movie: Movie) {}
            const _: () = { use outgoing as _; };
        };
        assert!(actual.starts_with(&expected_start.to_string()), "{actual}");
        assert_eq!(actual.matches("compile_error").count(), 2, "{actual}");
        assert!(!actual.contains("messaging"), "{actual}");
    }

    #[test]
    fn non_function_item_is_returned_with_an_error() {
        let actual = incoming(
            quote!("movies"),
            quote!(
                struct Movie;
            ),
        );
        assert!(actual.starts_with("struct Movie ;"), "{actual}");
        assert!(
            actual.contains("#[incoming] can only be applied to an async fn"),
            "{actual}"
        );
    }
}
