//! The handler shapes a channel accepts, as small traits with blanket impls (as in axum).
//!
//! A subscriber is any `async fn` taking the payload `T`, the payload and its [`Metadata`], or a
//! whole [`Message<T>`], and returning `()` or `Result<(), E>`. A processor takes the same inputs
//! and returns `U`, `Result<U, E>`, `Message<U>` or `Result<Message<U>, E>`; `U` is sent to the
//! outgoing channel. The shape markers only steer trait selection; users never name them.
//!
//! Every shape becomes one [`Handler`]: decode (a failure never reaches user code), call with
//! panics caught, then report a verdict (payload subscribers: the consumer loop settles it) or
//! pass the encoded output on (processors). The handler knows no transport: connectors hand it
//! an [`Incoming`] and finish what it yields.

mod message;
mod panics;
mod payload;
mod shapes;

use std::future::Future;
use std::sync::Arc;

pub(crate) use shapes::shape;
pub use shapes::{IntoProcessor, IntoSubscriber, ProcessorResult, SubscriberResult};

use crate::connectors::ChannelHandler;
use crate::failure::Failure;
use crate::metadata::Metadata;
use crate::outgoing::{forward, OutgoingMessage, Sink};
use crate::settle::{Acknowledger, SettleHandle, Token};

/// A record as a connector hands it over. The value is borrowed from the connector's buffer:
/// it is decoded in place, so a JSON payload is never copied first.
pub(crate) struct Incoming<'a> {
    /// The value bytes (`None` for a null value).
    pub(crate) value: Option<&'a [u8]>,
    /// What the user function sees; empty unless [`Handler::reads_metadata`].
    pub(crate) metadata: Metadata,
    /// The record's metadata for a processor's output, so the sink can keep the key or derive
    /// ids from the input's coordinates; empty unless [`Handler::passes_metadata_on`].
    pub(crate) for_output: Metadata,
    pub(crate) settle: SettleSource<'a>,
}

/// Makes the record's settle handle, for the handler shapes that need one: a handler that
/// gives its message to user code, and a processor, whose output carries it to the sink.
/// A payload subscriber never makes one; it reports a [`Handled::Verdict`] instead, which the
/// consumer loop settles straight on its acknowledger (no reference count, no dynamic call).
pub(crate) struct SettleSource<'a>(pub(crate) &'a (dyn Fn() -> SettleHandle + Sync));

impl SettleSource<'_> {
    /// Consumes the source: a record gets at most one handle.
    fn into_handle(self) -> SettleHandle {
        (self.0)()
    }
}

/// What handling a record came to, for the consumer loop to finish.
///
/// Two words, so a handler's future hands it back in registers: the larger cases are boxed
/// (they cost an allocation anyway), the common one, a subscriber's ack, is not.
pub(crate) enum Handled {
    /// Nothing is left for the loop: the user's code holds the message and settles it.
    Done,
    /// A payload subscriber's verdict, for the loop to settle.
    Verdict(Result<(), Failure>),
    /// A processor's output, carrying the input's settle handle: its delivery settles the input.
    Output(Box<OutgoingMessage>),
    /// A failure of a record whose settle handle was made: the loop nacks it.
    Nack(Box<(SettleHandle, Failure)>),
}

// Keeps the "two words" above true.
const _: () = assert!(std::mem::size_of::<Handled>() <= 2 * std::mem::size_of::<usize>());

impl Handled {
    /// Settles a verdict through the record's acknowledger (the loop's own, so `token` says
    /// which record), nacks, or sends an output on to the sink.
    pub(crate) async fn finish<A: Acknowledger>(
        self,
        acknowledger: &Arc<A>,
        token: Token,
        sink: Option<&Arc<dyn Sink>>,
    ) {
        match self {
            Handled::Done => {}
            Handled::Verdict(Ok(())) => acknowledger.ack(token),
            Handled::Verdict(Err(failure)) => acknowledger.clone().nack(token, failure).await,
            Handled::Output(output) => forward(sink, *output).await,
            Handled::Nack(rejected) => {
                let (settle, failure) = *rejected;
                settle.nack(failure).await
            }
        }
    }
}

/// The runtime's view of a handler, whatever its shape.
///
/// Statically typed on purpose: a consumer loop is compiled for its channel's handler and
/// awaits each record's future in place, with no allocation or dynamic call per record. The
/// one dynamic call per channel is [`ChannelHandler`], which starts the loop.
pub(crate) trait Handler: Send + Sync + 'static {
    /// Whether the user function reads metadata; a connector need not build it otherwise.
    fn reads_metadata(&self) -> bool;

    /// Whether the record's metadata travels on with an output (processors): a connector
    /// builds [`Incoming::for_output`] only then, so subscribers never pay for it.
    fn passes_metadata_on(&self) -> bool;

    /// Whether a record's settle handle leaves the consumer loop (to user code, or with an
    /// output to the sink): a connector must then keep what a later nack needs (for Kafka, the
    /// original for the dead-letter topic). A payload subscriber reports a verdict instead.
    fn hands_out_settle(&self) -> bool;

    /// Decodes and starts processing one record (the borrows of its value and settle source end
    /// on return). The future yields what is left for the loop to do.
    fn handle(&self, incoming: Incoming<'_>) -> impl Future<Output = Handled> + Send + use<Self>;
}

/// A handler ready for a channel; made by [`IntoSubscriber`] or [`IntoProcessor`].
#[doc(hidden)]
#[derive(Clone)]
pub struct BoxedHandler(pub(crate) Arc<dyn ChannelHandler>);
