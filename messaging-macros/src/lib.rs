//! The `#[incoming]` and `#[outgoing]` attributes of the
//! [`messaging`](https://docs.rs/messaging) crate.
//!
//! Use them through `messaging` (`messaging::incoming`, or the prelude): the
//! generated code refers to `::messaging` items, so this crate is not useful
//! on its own.
//!
//! Each attribute keeps the function as written and registers it at link
//! time, so `messaging::App` finds every handler in the binary without a
//! hand-maintained list.

mod args;
mod errors;
mod expand;
mod handler_fn;

use proc_macro::TokenStream;

use crate::args::Direction;

/// Subscribes an `async fn` to a channel.
///
/// ```ignore
/// use messaging::prelude::*;
///
/// #[incoming("movies", topic = "movies", failure_strategy = "dead-letter-queue")]
/// async fn consume(movie: Movie) -> Result<(), BadMovie> {
///     println!("{movie:?}");
///     Ok(())
/// }
/// ```
///
/// Together with [`#[outgoing]`](macro@outgoing) on the same function, in
/// either order, the function is a processor: every `Ok` value it returns is
/// sent to the outgoing channel.
///
/// # Arguments
///
/// The channel name comes first: a non-empty string literal of ASCII letters,
/// digits, `.`, `_` and `-`. It names the channel in configuration
/// (`messaging.incoming.<channel>.*`). Then, optionally, `name = "value"`
/// pairs; each sets the configuration key shown:
///
/// | name               | values                                  | configuration key                            |
/// |--------------------|-----------------------------------------|----------------------------------------------|
/// | `topic`            | any                                     | `messaging.incoming.<channel>.topic`            |
/// | `connector`        | `"kafka"`, `"memory"`                   | `messaging.incoming.<channel>.connector`        |
/// | `failure_strategy` | `"fail"`, `"ignore"`, `"dead-letter-queue"`, `"delayed-retry-topic"` | `messaging.incoming.<channel>.failure-strategy` |
/// | `commit_strategy`  | `"throttled"`, `"latest"`, `"ignore"`   | `messaging.incoming.<channel>.commit-strategy`  |
/// | `group_id`         | any                                     | `messaging.incoming.<channel>.group.id`         |
/// | `max_concurrency`  | a number >= 1                           | `messaging.incoming.<channel>.max-concurrency`  |
/// | `ordering`         | `"partition"`, `"key"`, `"unordered"`   | `messaging.incoming.<channel>.ordering`         |
///
/// # The function
///
/// A free `async fn` (not a method), not generic, taking the payload (or
/// `Message<T>`) and optionally `Metadata`. A subscriber returns
/// `Result<(), E>`; a processor returns `Result<T, E>` whose `Ok` value is
/// sent to the outgoing channel.
///
/// Mistakes in the arguments or the signature are compile errors pointing at
/// the offending token.
#[proc_macro_attribute]
pub fn incoming(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::handler_attribute(Direction::Incoming, args.into(), item.into()).into()
}

/// Sends the results of an [`#[incoming]`](macro@incoming) handler to a
/// channel, making it a processor.
///
/// ```ignore
/// use std::convert::Infallible;
/// use messaging::prelude::*;
///
/// #[incoming("prices")]
/// #[outgoing("prices-eur", topic = "prices.eur")]
/// async fn convert(usd: f64) -> Result<f64, Infallible> {
///     Ok(usd * 0.92)
/// }
/// ```
///
/// Only valid next to `#[incoming]` (the order of the two does not matter).
/// To send from ordinary code, use `messaging::Emitter` instead.
///
/// # Arguments
///
/// The channel name comes first, with the same rules as for `#[incoming]`.
/// Then, optionally:
///
/// | name        | values                  | configuration key                         |
/// |-------------|-------------------------|-------------------------------------------|
/// | `topic`     | any                     | `messaging.outgoing.<channel>.topic`     |
/// | `connector` | `"kafka"`, `"memory"`   | `messaging.outgoing.<channel>.connector` |
#[proc_macro_attribute]
pub fn outgoing(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::handler_attribute(Direction::Outgoing, args.into(), item.into()).into()
}
