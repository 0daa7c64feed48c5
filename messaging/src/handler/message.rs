//! The whole-message shapes: the user function takes a [`Message<T>`] and settles it itself.
//!
//! The message settles through a [`Custody`] handle rather than the record's own, so that a
//! message dropped unsettled while its handler runs (by `?` returning early, or by a panic)
//! is nacked with what the handler came to (its error, the panic text) rather than with
//! "dropped".

use std::future::{ready, Future};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::future::{BoxFuture, Either};
use serde::de::DeserializeOwned;

use super::panics::{decode, start_caught};
use super::{BoxedHandler, Handled, Handler, Incoming};
use crate::failure::Failure;
use crate::message::Message;
use crate::settle::{Acknowledger, SettleHandle, Token};

/// Adapter for the whole-message shapes. `finish` gets the user function's output and, if the
/// message was dropped unsettled while the function ran, its settle handle to nack.
pub(super) struct MessageHandler<C, Fin, T, Fut> {
    call: C,
    finish: Fin,
    _types: PhantomData<fn(T) -> Fut>,
}

impl<C, Fin, T, Fut> MessageHandler<C, Fin, T, Fut>
where
    C: Fn(Message<T>) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: Send,
    Fin: Fn(Fut::Output, Option<SettleHandle>) -> Handled + Copy + Send + Sync + 'static,
    T: DeserializeOwned + Send + 'static,
{
    pub(super) fn boxed(call: C, finish: Fin) -> BoxedHandler {
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
    Fin: Fn(Fut::Output, Option<SettleHandle>) -> Handled + Copy + Send + Sync + 'static,
    T: DeserializeOwned + Send + 'static,
{
    fn reads_metadata(&self) -> bool {
        true
    }

    /// The user's message carries the metadata; an output derived with [`Message::map`] keeps it.
    fn passes_metadata_on(&self) -> bool {
        false
    }

    fn hands_out_settle(&self) -> bool {
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
            ..
        } = incoming;
        let payload = match decode::<T>(value) {
            Ok(payload) => payload,
            Err(failure) => return Either::Left(ready(Handled::Verdict(Err(failure)))),
        };
        let custody = Arc::new(Custody(Mutex::new(Held {
            handle: Some(settle.into_handle()),
            handler_running: true,
            dropped: false,
        })));
        let user_settle = SettleHandle::new(custody.clone(), Token::default());
        let started =
            start_caught(|| (self.call)(Message::from_parts(payload, metadata, Some(user_settle))));
        let finish = self.finish;
        Either::Right(async move {
            let outcome = match started {
                Ok(running) => running.await.map_err(Failure::from_panic),
                Err(failure) => Err(failure),
            };
            let dropped = custody.handler_returned();
            match outcome {
                Ok(output) => finish(output, dropped),
                Err(panic) => {
                    tracing::warn!(reason = %panic, "a message handler panicked");
                    match dropped {
                        Some(dropped) => Handled::Nack(Box::new((dropped, panic))),
                        None => Handled::Done,
                    }
                }
            }
        })
    }
}

/// Holds a message's real settle handle for its handler. Settling passes straight through.
/// A drop while the handler runs leaves the handle here for the adapter to nack with the
/// handler's outcome; a drop after the handler returned (the message was kept, say moved into
/// a task) nacks at once, as any dropped message does.
struct Custody(Mutex<Held>);

struct Held {
    handle: Option<SettleHandle>,
    handler_running: bool,
    /// The user's message was dropped unsettled while the handler ran.
    dropped: bool,
}

impl Custody {
    fn lock(&self) -> MutexGuard<'_, Held> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn take(&self) -> Option<SettleHandle> {
        self.lock().handle.take()
    }

    /// The handler's future completed (or panicked): from now on a drop nacks at once.
    /// Returns the handle of a message dropped unsettled meanwhile, for the adapter to nack.
    fn handler_returned(&self) -> Option<SettleHandle> {
        let mut held = self.lock();
        held.handler_running = false;
        if held.dropped {
            held.handle.take()
        } else {
            None
        }
    }
}

impl Acknowledger for Custody {
    fn ack(&self, _: Token) {
        if let Some(held) = self.take() {
            held.ack();
        }
    }

    // The record's own answer: a sink writing the handler's output must see a revoked
    // partition, or its write could land after the new owner's newer one.
    fn is_stale(&self, _: Token) -> bool {
        self.lock()
            .handle
            .as_ref()
            .is_some_and(SettleHandle::is_stale)
    }

    fn nack(self: Arc<Self>, _: Token, failure: Failure) -> BoxFuture<'static, ()> {
        match self.take() {
            Some(held) => held.nack(failure),
            None => Box::pin(async {}),
        }
    }

    // The held handle carries the attempt: its own drop tells it.
    fn dropped(self: Arc<Self>, _: Token, _: u32) {
        let mut held = self.lock();
        if held.handler_running {
            held.dropped = true;
            return;
        }
        let handle = held.handle.take();
        drop(held);
        // The real handle's own drop nacks it as dropped.
        drop(handle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settle::RevocableRecord;

    /// A message handler's message says its record's partition was revoked, as the record's
    /// own handle does: a sink writing the handler's output then gives the write up.
    #[test]
    fn a_message_is_stale_once_its_records_partition_is_revoked() {
        let record = Arc::new(RevocableRecord::default());
        let custody = Arc::new(Custody(Mutex::new(Held {
            handle: Some(SettleHandle::new(record.clone(), Token::default())),
            handler_running: false,
            dropped: false,
        })));
        let message = SettleHandle::new(custody, Token::default());
        assert!(!message.is_stale());
        record.revoke();
        assert!(message.is_stale());
        message.ack();
    }
}
