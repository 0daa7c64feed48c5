//! The outgoing side as the core sees it: the [`Sink`] a connector implements, the hand-over
//! of a processor's output to it, and settling by delivery.
//!
//! It lives in the core, not under `connectors/`, so that handlers and emitters depend on this
//! contract only and connectors depend on the core, never the other way round.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::failure::Failure;
use crate::intake_gate::IntakeGate;
use crate::message::Message;
use crate::metadata::Metadata;
use crate::settle::SettleHandle;

/// An encoded outgoing message. A processor's output carries the input's settle handle, and
/// its metadata carries the input record's (key, coordinates, headers), so a sink can keep the
/// key or derive deterministic ids from where the input came from.
pub(crate) type OutgoingMessage = Message<Vec<u8>>;

/// Marks an outgoing message whose payload stands for no value (a processor's or an emitter's
/// `None`, a JSON `null`): a Kafka sink writes it as a tombstone, a record without a value, as
/// compacted topics expect for a delete.
pub(crate) struct NoValue;

/// The outgoing message of `encoded`, a `U` encoded, marked [`NoValue`] when it is none.
pub(crate) fn encoded_message<U: 'static>(
    encoded: Vec<u8>,
    mut metadata: Metadata,
    settle: Option<SettleHandle>,
) -> OutgoingMessage {
    if crate::codec::is_no_value::<U>(&encoded) {
        metadata.insert(NoValue);
    }
    Message::from_parts(encoded, metadata, settle)
}

/// Resolves once an outgoing message was delivered or finally failed, after settling it. The
/// core always runs a delivery it is handed ([`Enqueued::Delivering`]) to its end in a task of
/// its own (processors in [`forward`], emitters too), so a sink may count on it never being
/// dropped halfway.
pub(crate) type Delivery = BoxFuture<'static, Result<(), Failure>>;

/// What handing a message to a sink left to do.
pub(crate) enum Enqueued {
    /// The rest of the delivery: the core runs it to its end in a task of its own.
    Delivering(Delivery),
    /// The delivery ended while the message was handed over (the sink's first step of it took
    /// it to the end), and the message is settled. Nothing is spawned: a task spawned by a
    /// processor that goes on with its next record wakes another worker to run it, a cost per
    /// record that a delivery done at once need not pay.
    #[cfg_attr(not(feature = "cosmos"), allow(dead_code))]
    Delivered(Result<(), Failure>),
}

/// An outgoing channel's connector.
pub(crate) trait Sink: Send + Sync + 'static {
    /// Hands the message to the connector, in call order. Resolves once it is enqueued (this is
    /// where backpressure waits) to what is left of its delivery. A sink that runs part of the
    /// delivery here does it in one poll of the delivery's future, so that no await point can
    /// drop a write halfway (see [`Delivery`]).
    fn enqueue(&self, message: OutgoingMessage) -> BoxFuture<'_, Enqueued>;

    /// Waits, up to `timeout`, for enqueued messages to be delivered. Called once, at the
    /// application's shutdown: a sink may stop its background work here.
    fn flush(&self, timeout: std::time::Duration) -> BoxFuture<'static, ()>;

    /// The gate a sink closes to hold its feeding channels back during an outage; `None` for a
    /// sink that never does (Kafka's producer buffers and retries on its own).
    fn intake_gate(&self) -> Option<IntakeGate> {
        None
    }
}

/// Settles an outgoing message by its delivery outcome and passes the outcome on.
pub(crate) async fn settle_by_delivery(
    settle: Option<SettleHandle>,
    outcome: Result<(), Failure>,
) -> Result<(), Failure> {
    if let Some(settle) = settle {
        match &outcome {
            Ok(()) => settle.ack(),
            Err(failure) => settle.nack(failure.clone()).await,
        }
    }
    outcome
}

/// Sends a processor's output to the sink, whose delivery settles the input: the input is acked
/// only once the output is durable.
///
/// The consumer loops await a handler's future and then, if it yielded an output, this (through
/// [`Handled::finish`](crate::handler::Handled::finish)): in place, with no per-record wrapper
/// future (which would only be one more copy of the handler's future).
pub(crate) async fn forward(sink: Option<&Arc<dyn Sink>>, output: OutgoingMessage) {
    match sink {
        Some(sink) => {
            if let Enqueued::Delivering(delivery) = sink.enqueue(output).await {
                tokio::spawn(delivery);
            }
        }
        None => {
            let (_, _, settle) = output.into_parts();
            let failure = Failure::new(
                "a subscriber produced an output but its channel has no outgoing channel",
            );
            settle_by_delivery(settle, Err(failure)).await.ok();
        }
    }
}
