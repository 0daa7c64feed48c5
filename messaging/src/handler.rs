//! The handler shapes a channel accepts, as small traits with blanket impls (as in axum).
//!
//! A subscriber is any `async fn` taking the payload `T`, the payload and its [`Metadata`], or a
//! whole [`Message<T>`], and returning `()` or `Result<(), E>`. A processor takes the same inputs
//! and returns `U`, `Result<U, E>`, `Message<U>` or `Result<Message<U>, E>`; `U` is sent to the
//! outgoing channel. The shape markers only steer trait selection; users never name them.
//!
//! Every shape becomes one [`Handler`]: decode (a failure never reaches user code), call with
//! panics caught, then report a verdict (payload subscribers: the consumer loop settles it) or
//! pass the encoded output on (processors).

use std::error::Error as StdError;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::future::{ready, BoxFuture, CatchUnwind, Either};
use futures_util::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{self, DECODE_FAILURE};
use crate::connectors::{forward, ChannelHandler, Sink};
use crate::failure::Failure;
use crate::message::Message;
use crate::metadata::Metadata;
use crate::settle::{Acknowledger, SettleHandle, Token};

/// A record as a connector hands it over. The value is borrowed from the connector's buffer:
/// it is decoded in place, so a JSON payload is never copied first.
pub(crate) struct Incoming<'a> {
    /// The value bytes (`None` for a null value).
    pub(crate) value: Option<&'a [u8]>,
    pub(crate) metadata: Metadata,
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

/// A processor's encoded output, carrying the input's settle handle.
pub(crate) type OutgoingMessage = Message<Vec<u8>>;

/// The runtime's view of a handler, whatever its shape.
///
/// Statically typed on purpose: a consumer loop is compiled for its channel's handler and
/// awaits each record's future in place, with no allocation or dynamic call per record. The
/// one dynamic call per channel is [`ChannelHandler`], which starts the loop.
pub(crate) trait Handler: Send + Sync + 'static {
    /// Whether the handler reads metadata; a connector need not build it otherwise.
    fn reads_metadata(&self) -> bool;

    /// Decodes and starts processing one record (the borrows of its value and settle source end
    /// on return). The future yields what is left for the loop to do.
    fn handle(&self, incoming: Incoming<'_>) -> impl Future<Output = Handled> + Send + use<Self>;
}

/// A handler ready for a channel; made by [`IntoSubscriber`] or [`IntoProcessor`].
#[doc(hidden)]
#[derive(Clone)]
pub struct BoxedHandler(pub(crate) Arc<dyn ChannelHandler>);

/// Marker types that tell the handler shapes apart.
#[doc(hidden)]
pub mod shape {
    pub struct Payload<T>(std::marker::PhantomData<T>);
    pub struct PayloadAndMetadata<T>(std::marker::PhantomData<T>);
    pub struct WholeMessage<T>(std::marker::PhantomData<T>);
    pub struct Plain;
    pub struct Fallible;
    pub struct PlainMessage;
    pub struct FallibleMessage;
}

/// What a subscriber returns: `()` or `Result<(), E>` for any error type.
pub trait SubscriberResult: Send + 'static {
    #[doc(hidden)]
    fn into_outcome(self) -> Result<(), Failure>;
}

impl SubscriberResult for () {
    fn into_outcome(self) -> Result<(), Failure> {
        Ok(())
    }
}

impl<E> SubscriberResult for Result<(), E>
where
    E: Into<Box<dyn StdError + Send + Sync>> + Send + 'static,
{
    fn into_outcome(self) -> Result<(), Failure> {
        self.map_err(Failure::from_error)
    }
}

/// What a processor returns: `U`, `Result<U, E>`, `Message<U>` or `Result<Message<U>, E>`.
/// Return a `Message<U>` to set the outgoing record's key or headers through its metadata.
pub trait ProcessorResult<Shape>: Send + 'static {
    #[doc(hidden)]
    fn into_output(self) -> Result<OutgoingMessage, Failure>;
}

impl<U: Serialize + Send + 'static> ProcessorResult<shape::Plain> for U {
    fn into_output(self) -> Result<OutgoingMessage, Failure> {
        codec::encode_owned(self).map(Message::new)
    }
}

impl<U, E> ProcessorResult<shape::Fallible> for Result<U, E>
where
    U: Serialize + Send + 'static,
    E: Into<Box<dyn StdError + Send + Sync>> + Send + 'static,
{
    fn into_output(self) -> Result<OutgoingMessage, Failure> {
        self.map_err(Failure::from_error)?.into_output()
    }
}

impl<U: Serialize + Send + 'static> ProcessorResult<shape::PlainMessage> for Message<U> {
    fn into_output(self) -> Result<OutgoingMessage, Failure> {
        let (payload, metadata, settle) = self.into_parts();
        Ok(Message::from_parts(
            codec::encode_owned(payload)?,
            metadata,
            settle,
        ))
    }
}

impl<U, E> ProcessorResult<shape::FallibleMessage> for Result<Message<U>, E>
where
    U: Serialize + Send + 'static,
    E: Into<Box<dyn StdError + Send + Sync>> + Send + 'static,
{
    fn into_output(self) -> Result<OutgoingMessage, Failure> {
        self.map_err(Failure::from_error)?.into_output()
    }
}

/// An async function usable as an `#[incoming]` subscriber.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a subscriber handler",
    note = "a subscriber is an `async fn` taking `T`, `(T, Metadata)` or `Message<T>` (T: Deserialize) and returning `()` or `Result<(), E>`"
)]
pub trait IntoSubscriber<Shape>: Send + Sync + 'static {
    #[doc(hidden)]
    fn into_handler(self) -> BoxedHandler;
}

/// An async function usable as a processor (`#[incoming]` + `#[outgoing]`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a processor handler",
    note = "a processor is an `async fn` taking `T` or `(T, Metadata)` and returning `U`, `Result<U, E>`, `Message<U>` or `Result<Message<U>, E>` (U: Serialize), or taking `Message<T>` and returning `Message<U>`"
)]
pub trait IntoProcessor<Shape>: Send + Sync + 'static {
    #[doc(hidden)]
    fn into_handler(self) -> BoxedHandler;
}

impl<F, T, Fut> IntoSubscriber<shape::Payload<T>> for F
where
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: SubscriberResult,
    T: DeserializeOwned + Send + 'static,
{
    fn into_handler(self) -> BoxedHandler {
        subscriber(move |payload, _| self(payload), Reads::Payload)
    }
}

impl<F, T, Fut> IntoSubscriber<shape::PayloadAndMetadata<T>> for F
where
    F: Fn(T, Metadata) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: SubscriberResult,
    T: DeserializeOwned + Send + 'static,
{
    fn into_handler(self) -> BoxedHandler {
        subscriber(self, Reads::PayloadAndMetadata)
    }
}

impl<F, T, Fut> IntoSubscriber<shape::WholeMessage<T>> for F
where
    F: Fn(Message<T>) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: SubscriberResult,
    T: DeserializeOwned + Send + 'static,
{
    fn into_handler(self) -> BoxedHandler {
        MessageHandler::boxed(self, |result: Fut::Output| {
            // The message is the handler's to settle; an error returned after that can only be logged.
            if let Err(failure) = result.into_outcome() {
                tracing::warn!(reason = %failure, "a message handler returned an error; the message it took settles on its own");
            }
            Handled::Done
        })
    }
}

impl<F, T, Fut, R, S> IntoProcessor<(shape::Payload<T>, S)> for F
where
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: ProcessorResult<S>,
    T: DeserializeOwned + Send + 'static,
    S: 'static,
{
    fn into_handler(self) -> BoxedHandler {
        processor(move |payload, _| self(payload), Reads::Payload)
    }
}

impl<F, T, Fut, R, S> IntoProcessor<(shape::PayloadAndMetadata<T>, S)> for F
where
    F: Fn(T, Metadata) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: ProcessorResult<S>,
    T: DeserializeOwned + Send + 'static,
    S: 'static,
{
    fn into_handler(self) -> BoxedHandler {
        processor(self, Reads::PayloadAndMetadata)
    }
}

/// A processor that takes the whole message must return one (derive it with
/// [`Message::map`]), so the incoming message's settle handle travels with the output.
impl<F, T, U, Fut> IntoProcessor<shape::WholeMessage<T>> for F
where
    F: Fn(Message<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Message<U>> + Send + 'static,
    T: DeserializeOwned + Send + 'static,
    U: Serialize + Send + 'static,
{
    fn into_handler(self) -> BoxedHandler {
        MessageHandler::boxed(self, |output: Message<U>| {
            let (payload, metadata, settle) = output.into_parts();
            match (codec::encode_owned(payload), settle) {
                (Ok(bytes), settle) => {
                    Handled::Output(Box::new(Message::from_parts(bytes, metadata, settle)))
                }
                (Err(failure), Some(settle)) => Handled::Nack(Box::new((settle, failure))),
                (Err(_), None) => Handled::Done,
            }
        })
    }
}

/// A payload subscriber's verdict from its outcome (it has no settle handle: the loop settles).
#[inline]
fn verdict<R: SubscriberResult>(_: Option<SettleHandle>, result: Result<R, Failure>) -> Handled {
    Handled::Verdict(result.and_then(SubscriberResult::into_outcome))
}

/// Hands a processor's output on with the input's settle handle, or nacks the input.
fn forward_output<R: ProcessorResult<S>, S>(
    settle: Option<SettleHandle>,
    result: Result<R, Failure>,
) -> Handled {
    match (result.and_then(ProcessorResult::into_output), settle) {
        (Ok(output), settle) => {
            let (payload, metadata, own_settle) = output.into_parts();
            Handled::Output(Box::new(Message::from_parts(
                payload,
                metadata,
                own_settle.or(settle),
            )))
        }
        (Err(failure), Some(settle)) => Handled::Nack(Box::new((settle, failure))),
        (Err(failure), None) => Handled::Verdict(Err(failure)),
    }
}

#[cold]
fn decode_failure<T>(reason: String) -> Failure {
    Failure::of_kind(
        DECODE_FAILURE,
        format!(
            "cannot decode the record value as {}: {reason}",
            std::any::type_name::<T>()
        ),
    )
}

/// Starts a user call with panics caught, whether it panics before returning its future
/// (a closure) or while polled (an async fn).
/// The returned future yields the panic payload of a panic while polled.
fn start_caught<Fut: Future>(
    make: impl FnOnce() -> Fut,
) -> Result<CatchUnwind<AssertUnwindSafe<Fut>>, Failure> {
    let future = std::panic::catch_unwind(AssertUnwindSafe(make)).map_err(Failure::from_panic)?;
    Ok(AssertUnwindSafe(future).catch_unwind())
}

/// Adapter for the payload shapes: the user function sees `T`; `finish` turns the outcome (a
/// decode failure is an outcome too) into what is left for the loop, given the settle handle if
/// the shape needs one.
struct PayloadHandler<C, Fin, T, Fut> {
    call: C,
    finish: Fin,
    reads_metadata: bool,
    /// True for processors: their output carries the input's settle handle.
    takes_settle_handle: bool,
    _types: PhantomData<fn(T) -> Fut>,
}

/// What a payload shape's user function takes.
#[derive(PartialEq)]
enum Reads {
    Payload,
    PayloadAndMetadata,
}

/// A payload subscriber: it reports a verdict, which the loop settles, so it takes no handle.
fn subscriber<C, T, Fut>(call: C, reads: Reads) -> BoxedHandler
where
    C: Fn(T, Metadata) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: SubscriberResult,
    T: DeserializeOwned + Send + 'static,
{
    PayloadHandler::boxed(call, verdict::<Fut::Output>, reads, false)
}

/// A payload processor: its output carries the input's settle handle to the sink.
fn processor<C, T, Fut, S>(call: C, reads: Reads) -> BoxedHandler
where
    C: Fn(T, Metadata) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: ProcessorResult<S>,
    T: DeserializeOwned + Send + 'static,
    S: 'static,
{
    PayloadHandler::boxed(call, forward_output::<Fut::Output, S>, reads, true)
}

impl<C, Fin, T, Fut> PayloadHandler<C, Fin, T, Fut>
where
    C: Fn(T, Metadata) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fin: Fn(Option<SettleHandle>, Result<Fut::Output, Failure>) -> Handled
        + Copy
        + Send
        + Sync
        + 'static,
    T: DeserializeOwned + Send + 'static,
{
    /// Made through [`subscriber`] or [`processor`], which pair `finish` with whether it needs
    /// the settle handle.
    fn boxed(call: C, finish: Fin, reads: Reads, takes_settle_handle: bool) -> BoxedHandler {
        BoxedHandler(Arc::new(Self {
            call,
            finish,
            reads_metadata: reads == Reads::PayloadAndMetadata,
            takes_settle_handle,
            _types: PhantomData,
        }))
    }
}

impl<C, Fin, T, Fut> Handler for PayloadHandler<C, Fin, T, Fut>
where
    C: Fn(T, Metadata) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fin: Fn(Option<SettleHandle>, Result<Fut::Output, Failure>) -> Handled
        + Copy
        + Send
        + Sync
        + 'static,
    T: DeserializeOwned + Send + 'static,
{
    fn reads_metadata(&self) -> bool {
        self.reads_metadata
    }

    fn handle(
        &self,
        incoming: Incoming<'_>,
    ) -> impl Future<Output = Handled> + Send + use<C, Fin, T, Fut> {
        let Incoming {
            value,
            metadata,
            settle,
        } = incoming;
        let settle = self.takes_settle_handle.then(|| settle.into_handle());
        let started = codec::decode::<T>(value)
            .map_err(decode_failure::<T>)
            .and_then(|payload| start_caught(|| (self.call)(payload, metadata)));
        let finish = self.finish;
        async move {
            let result = match started {
                Ok(running) => running.await.map_err(Failure::from_panic),
                Err(failure) => Err(failure),
            };
            finish(settle, result)
        }
    }
}

/// Adapter for the whole-message shapes: the user function settles the message itself.
struct MessageHandler<C, Fin, T, Fut> {
    call: C,
    finish: Fin,
    _types: PhantomData<fn(T) -> Fut>,
}

impl<C, Fin, T, Fut> MessageHandler<C, Fin, T, Fut>
where
    C: Fn(Message<T>) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: Send,
    Fin: Fn(Fut::Output) -> Handled + Copy + Send + Sync + 'static,
    T: DeserializeOwned + Send + 'static,
{
    fn boxed(call: C, finish: Fin) -> BoxedHandler {
        BoxedHandler(Arc::new(Self {
            call,
            finish,
            _types: PhantomData,
        }))
    }
}

impl<C, Fin, T, Fut> Handler for MessageHandler<C, Fin, T, Fut>
where
    C: Fn(Message<T>) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: Send,
    Fin: Fn(Fut::Output) -> Handled + Copy + Send + Sync + 'static,
    T: DeserializeOwned + Send + 'static,
{
    fn reads_metadata(&self) -> bool {
        true
    }

    fn handle(
        &self,
        incoming: Incoming<'_>,
    ) -> impl Future<Output = Handled> + Send + use<C, Fin, T, Fut> {
        let Incoming {
            value,
            metadata,
            settle,
        } = incoming;
        let payload = match codec::decode::<T>(value) {
            Ok(payload) => payload,
            Err(reason) => {
                return Either::Left(ready(Handled::Verdict(Err(decode_failure::<T>(reason)))))
            }
        };
        // The user's message settles through a custody handle, so that if the handler panics
        // while holding it, the nack carries the panic text rather than "dropped".
        let custody = Arc::new(Custody(std::sync::Mutex::new(Some(settle.into_handle()))));
        let user_settle = SettleHandle::new(custody.clone(), Token::default());
        let started =
            start_caught(|| (self.call)(Message::from_parts(payload, metadata, Some(user_settle))));
        let finish = self.finish;
        Either::Right(async move {
            let outcome = match started {
                Ok(running) => running.await.map_err(Failure::from_panic),
                Err(failure) => Err(failure),
            };
            let panic = match outcome {
                Ok(output) => return finish(output),
                Err(panic) => panic,
            };
            tracing::warn!(reason = %panic, "a message handler panicked");
            match custody.take() {
                Some(held) => Handled::Nack(Box::new((held, panic))),
                None => Handled::Done,
            }
        })
    }
}

/// Holds a message's real settle handle for its handler. Settling passes straight through;
/// a drop during a panic leaves the handle here for the handler adapter to nack with the
/// panic text.
struct Custody(std::sync::Mutex<Option<SettleHandle>>);

impl Custody {
    fn take(&self) -> Option<SettleHandle> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }
}

impl Acknowledger for Custody {
    fn ack(&self, _: Token) {
        if let Some(held) = self.take() {
            held.ack();
        }
    }

    fn nack(self: Arc<Self>, _: Token, failure: Failure) -> BoxFuture<'static, ()> {
        if std::thread::panicking() {
            return Box::pin(async {});
        }
        match self.take() {
            Some(held) => held.nack(failure),
            None => Box::pin(async {}),
        }
    }
}
