//! The public face of the handler shapes: what a function may return, the traits that make an
//! `async fn` a subscriber or a processor, and the markers that tell the shapes apart.

use std::error::Error as StdError;
use std::future::Future;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::message::MessageHandler;
use super::panics::{encode, encode_returned, failure_from_error};
use super::payload::{processor, subscriber, Reads};
use super::{BoxedHandler, Handled};
use crate::failure::Failure;
use crate::message::Message;
use crate::metadata::Metadata;
use crate::outgoing::{encoded_message, OutgoingMessage};
use crate::settle::dropped_unsettled;

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
        self.map_err(failure_from_error)
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
        encode_returned(self).map(|encoded| encoded_message::<U>(encoded, Metadata::new(), None))
    }
}

impl<U, E> ProcessorResult<shape::Fallible> for Result<U, E>
where
    U: Serialize + Send + 'static,
    E: Into<Box<dyn StdError + Send + Sync>> + Send + 'static,
{
    fn into_output(self) -> Result<OutgoingMessage, Failure> {
        let output = self.map_err(failure_from_error)?;
        encode(output).map(|encoded| encoded_message::<U>(encoded, Metadata::new(), None))
    }
}

impl<U: Serialize + Send + 'static> ProcessorResult<shape::PlainMessage> for Message<U> {
    fn into_output(self) -> Result<OutgoingMessage, Failure> {
        let (payload, metadata, settle) = self.into_parts();
        Ok(encoded_message::<U>(encode(payload)?, metadata, settle))
    }
}

impl<U, E> ProcessorResult<shape::FallibleMessage> for Result<Message<U>, E>
where
    U: Serialize + Send + 'static,
    E: Into<Box<dyn StdError + Send + Sync>> + Send + 'static,
{
    fn into_output(self) -> Result<OutgoingMessage, Failure> {
        self.map_err(failure_from_error)?.into_output()
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
    note = "a processor is an `async fn` taking `T` or `(T, Metadata)` and returning `U`, `Result<U, E>`, `Message<U>` or `Result<Message<U>, E>` (U: Serialize; E: std::error::Error, String, &str, anyhow::Error or Box<dyn Error>), or taking `Message<T>` and returning `Message<U>`"
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
        MessageHandler::boxed(self, |result: Fut::Output, dropped| {
            match (result.into_outcome(), dropped) {
                // Dropped unsettled (`?` returns early with the message still in scope): the
                // returned error is the reason, not the drop.
                (Err(failure), Some(dropped)) => Handled::Nack(Box::new((dropped, failure))),
                (Ok(()), Some(dropped)) => Handled::Nack(Box::new((dropped, dropped_unsettled()))),
                (Err(failure), None) => {
                    tracing::warn!(reason = %failure, "a message handler returned an error; the message it took settles on its own");
                    Handled::Done
                }
                (Ok(()), None) => Handled::Done,
            }
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
        MessageHandler::boxed(self, |output: Message<U>, dropped| {
            // An input dropped for an output of its own is nacked as any dropped message is
            // (the handle's own drop does that); the output is still sent.
            drop(dropped);
            let (payload, metadata, settle) = output.into_parts();
            match (encode(payload), settle) {
                (Ok(bytes), settle) => {
                    Handled::Output(Box::new(encoded_message::<U>(bytes, metadata, settle)))
                }
                (Err(failure), Some(settle)) => Handled::Nack(Box::new((settle, failure))),
                (Err(failure), None) => {
                    tracing::warn!(reason = %failure, "a message processor's output cannot be encoded and is not sent; it carries no incoming message to nack (it was made with Message::new, not derived with Message::map)");
                    Handled::Done
                }
            }
        })
    }
}
