//! The payload shapes: the user function sees `T` (and maybe its [`Metadata`]), never the
//! message. A subscriber reports a verdict for the consumer loop to settle; a processor's
//! output carries the input's settle handle and metadata to the sink.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::panics::{decode, start_caught};
use super::shapes::{ProcessorResult, SubscriberResult};
use super::{BoxedHandler, Handled, Handler, Incoming};
use crate::failure::Failure;
use crate::message::Message;
use crate::metadata::Metadata;
use crate::settle::SettleHandle;

/// Adapter for the payload shapes: the user function sees `T`; `finish` turns the outcome (a
/// decode failure is an outcome too) into what is left for the loop, given the settle handle
/// and the input's metadata if the shape passes them on.
pub(super) struct PayloadHandler<C, Fin, T, Fut> {
    call: C,
    finish: Fin,
    reads_metadata: bool,
    /// True for processors: their output carries the input's settle handle and metadata.
    is_processor: bool,
    _types: PhantomData<fn(T) -> Fut>,
}

/// What a payload shape's user function takes.
#[derive(PartialEq)]
pub(super) enum Reads {
    Payload,
    PayloadAndMetadata,
}

/// A payload subscriber: it reports a verdict, which the loop settles, so it takes no handle.
pub(super) fn subscriber<C, T, Fut>(call: C, reads: Reads) -> BoxedHandler
where
    C: Fn(T, Metadata) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: SubscriberResult,
    T: DeserializeOwned + Send + 'static,
{
    PayloadHandler::boxed(call, verdict::<Fut::Output>, reads, false)
}

/// A payload processor: its output carries the input's settle handle and metadata to the sink.
pub(super) fn processor<C, T, Fut, S>(call: C, reads: Reads) -> BoxedHandler
where
    C: Fn(T, Metadata) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: ProcessorResult<S>,
    T: DeserializeOwned + Send + 'static,
    S: 'static,
{
    PayloadHandler::boxed(call, forward_output::<Fut::Output, S>, reads, true)
}

/// A payload subscriber's verdict from its outcome (it has no settle handle: the loop settles).
#[inline]
fn verdict<R: SubscriberResult>(
    _: Option<SettleHandle>,
    _: Metadata,
    result: Result<R, Failure>,
) -> Handled {
    Handled::Verdict(result.and_then(SubscriberResult::into_outcome))
}

/// Hands a processor's output on with the input's settle handle and metadata (entries the
/// output sets itself win), or nacks the input.
fn forward_output<R: ProcessorResult<S>, S>(
    settle: Option<SettleHandle>,
    input_metadata: Metadata,
    result: Result<R, Failure>,
) -> Handled {
    match (result.and_then(ProcessorResult::into_output), settle) {
        (Ok(output), settle) => {
            let (payload, mut metadata, own_settle) = output.into_parts();
            metadata.inherit(input_metadata);
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

impl<C, Fin, T, Fut> PayloadHandler<C, Fin, T, Fut>
where
    C: Fn(T, Metadata) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fin: Fn(Option<SettleHandle>, Metadata, Result<Fut::Output, Failure>) -> Handled
        + Copy
        + Send
        + Sync
        + 'static,
    T: DeserializeOwned + Send + 'static,
{
    /// Made through [`subscriber`] or [`processor`], which pair `finish` with whether it needs
    /// the settle handle and the input's metadata.
    fn boxed(call: C, finish: Fin, reads: Reads, is_processor: bool) -> BoxedHandler {
        BoxedHandler(Arc::new(Self {
            call,
            finish,
            reads_metadata: reads == Reads::PayloadAndMetadata,
            is_processor,
            _types: PhantomData,
        }))
    }
}

impl<C, Fin, T, Fut> Handler for PayloadHandler<C, Fin, T, Fut>
where
    C: Fn(T, Metadata) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fin: Fn(Option<SettleHandle>, Metadata, Result<Fut::Output, Failure>) -> Handled
        + Copy
        + Send
        + Sync
        + 'static,
    T: DeserializeOwned + Send + 'static,
{
    fn reads_metadata(&self) -> bool {
        self.reads_metadata
    }

    fn passes_metadata_on(&self) -> bool {
        self.is_processor
    }

    fn hands_out_settle(&self) -> bool {
        self.is_processor
    }

    fn handle(
        &self,
        incoming: Incoming<'_>,
    ) -> impl Future<Output = Handled> + Send + use<C, Fin, T, Fut> {
        let Incoming {
            value,
            metadata,
            for_output,
            settle,
        } = incoming;
        let settle = self.is_processor.then(|| settle.into_handle());
        let started =
            decode::<T>(value).and_then(|payload| start_caught(|| (self.call)(payload, metadata)));
        let finish = self.finish;
        async move {
            let result = match started {
                Ok(running) => running.await.map_err(Failure::from_panic),
                Err(failure) => Err(failure),
            };
            finish(settle, for_output, result)
        }
    }
}
