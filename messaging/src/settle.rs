//! Settle-once acknowledgement: the first of ack / nack wins, and a message dropped unsettled
//! is nacked rather than forgotten.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::failure::Failure;

/// What a connector does when one of its messages is settled.
///
/// One acknowledger serves many messages (for Kafka, one per assigned partition); the token
/// says which (the offset), so handing a record out allocates nothing. `ack` is synchronous
/// because it is on the hot path (an offset-tracker update); `nack` returns a future because a
/// failure strategy may first have to write a dead-letter record.
pub(crate) trait Acknowledger: Send + Sync + 'static {
    fn ack(&self, token: i64);
    fn nack(self: Arc<Self>, token: i64, failure: Failure) -> BoxFuture<'static, ()>;
}

/// The settle handle a message carries. Settling consumes it, so a message settles once.
pub(crate) struct SettleHandle {
    acknowledger: Option<Arc<dyn Acknowledger>>,
    token: i64,
}

pub(crate) const DROPPED_UNSETTLED: &str = "message dropped without being settled";

impl SettleHandle {
    pub(crate) fn new(acknowledger: Arc<dyn Acknowledger>, token: i64) -> Self {
        Self { acknowledger: Some(acknowledger), token }
    }

    pub(crate) fn ack(mut self) {
        if let Some(acknowledger) = self.acknowledger.take() {
            acknowledger.ack(self.token);
        }
    }

    pub(crate) fn nack(mut self, failure: Failure) -> BoxFuture<'static, ()> {
        match self.acknowledger.take() {
            Some(acknowledger) => acknowledger.nack(self.token, failure),
            None => Box::pin(async {}),
        }
    }
}

impl Drop for SettleHandle {
    fn drop(&mut self) {
        let Some(acknowledger) = self.acknowledger.take() else { return };
        tracing::warn!("{DROPPED_UNSETTLED}; nacking it");
        let nack = acknowledger.nack(self.token, Failure::of_kind("messaging::Dropped", DROPPED_UNSETTLED));
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(nack);
            }
            // Outside a runtime the nack cannot run; the record stays uncommitted, so a Kafka
            // source redelivers it after a restart rather than losing it.
            Err(_) => tracing::error!("{DROPPED_UNSETTLED} outside a tokio runtime; it stays uncommitted"),
        }
    }
}
