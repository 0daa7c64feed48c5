//! Settle-once acknowledgement: the first of ack / nack wins, and a message dropped unsettled
//! is nacked rather than forgotten.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::failure::Failure;
use crate::retry::ErrorClass;

/// What a connector does when one of its messages is settled.
///
/// One acknowledger serves many messages (for Kafka, one per assigned partition); the token
/// says which, so handing a record out allocates nothing. Acknowledgers of a single message
/// ignore it. `ack` is synchronous because it is on the hot path (an offset-tracker update);
/// `nack` returns a future because a failure strategy may first have to write a dead-letter
/// record.
pub(crate) trait Acknowledger: Send + Sync + 'static {
    fn ack(&self, token: Token);

    /// Whether settling the message no longer counts: its Kafka partition was revoked (the
    /// new owner reads it again). A sink then need not write it, and must not write it late:
    /// a write held back by an outage could otherwise land after the new owner's newer one.
    fn is_stale(&self, _token: Token) -> bool {
        false
    }
    fn nack(self: Arc<Self>, token: Token, failure: Failure) -> BoxFuture<'static, ()>;

    /// A nack after the handler ran `attempts` times (retries): a connector that reports the
    /// count (Kafka's dead-letter header) overrides this.
    fn nack_after(
        self: Arc<Self>,
        token: Token,
        failure: Failure,
        _attempts: u32,
    ) -> BoxFuture<'static, ()> {
        self.nack(token, failure)
    }

    /// A message was dropped unsettled, after the handler ran `attempts` times: by default a
    /// nack ([`nack_dropped`]).
    fn dropped(self: Arc<Self>, token: Token, attempts: u32) {
        nack_dropped(self, token, attempts);
    }
}

/// Nacks a message dropped unsettled, on the runtime since a drop cannot wait for it.
pub(crate) fn nack_dropped<A: Acknowledger + ?Sized>(
    acknowledger: Arc<A>,
    token: Token,
    attempts: u32,
) {
    let nack = acknowledger.nack_after(token, dropped_unsettled(), attempts);
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(nack);
        }
        // Outside a runtime the nack cannot run; the record stays uncommitted, so a Kafka
        // source redelivers it after a restart rather than losing it.
        Err(_) => {
            tracing::error!("{DROPPED_UNSETTLED} outside a tokio runtime; it stays uncommitted")
        }
    }
}

/// Which message an acknowledger settles, in the connector's own terms (for Kafka, the
/// record's place in its partition), packed into two words the core never reads: the core
/// knows no transport, and a token costs no allocation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Token([i64; 2]);

impl Token {
    #[inline]
    pub(crate) const fn new(words: [i64; 2]) -> Self {
        Self(words)
    }

    #[inline]
    pub(crate) const fn words(self) -> [i64; 2] {
        self.0
    }
}

/// The settle handle a message carries. Settling consumes it, so a message settles once.
pub(crate) struct SettleHandle {
    acknowledger: Option<Arc<dyn Acknowledger>>,
    token: Token,
    /// Which attempt of the handler made it (1 unless retried): a nack reports it.
    attempt: u32,
}

const DROPPED_UNSETTLED: &str = "message dropped without being settled";
/// The kind of the failure a message dropped unsettled is nacked with.
pub(crate) const DROPPED_KIND: &str = "messaging::Dropped";

/// The failure a message dropped unsettled is nacked with; the drop is logged, since it is
/// most likely a bug in the handler.
pub(crate) fn dropped_unsettled() -> Failure {
    tracing::warn!("{DROPPED_UNSETTLED}; nacking it");
    // A bug in the handler, which another attempt would repeat: not retried.
    Failure::of_kind(DROPPED_KIND, DROPPED_UNSETTLED).marked(ErrorClass::Permanent)
}

impl SettleHandle {
    pub(crate) fn new(acknowledger: Arc<dyn Acknowledger>, token: Token) -> Self {
        Self::for_attempt(acknowledger, token, 1)
    }

    /// The handle of a record on the handler's `attempt`-th call.
    pub(crate) fn for_attempt(
        acknowledger: Arc<dyn Acknowledger>,
        token: Token,
        attempt: u32,
    ) -> Self {
        Self {
            acknowledger: Some(acknowledger),
            token,
            attempt,
        }
    }

    #[inline]
    pub(crate) fn ack(mut self) {
        if let Some(acknowledger) = self.acknowledger.take() {
            acknowledger.ack(self.token);
        }
    }

    pub(crate) fn nack(mut self, failure: Failure) -> BoxFuture<'static, ()> {
        match self.acknowledger.take() {
            Some(acknowledger) => acknowledger.nack_after(self.token, failure, self.attempt),
            None => Box::pin(async {}),
        }
    }

    /// [`Self::nack`] for user code, which may stop waiting (a timeout, a `select!`): the
    /// failure strategy runs on a task of its own, to its end. A dead-letter write cancelled
    /// halfway would leave the record neither settled nor given up, its partition's commits held
    /// behind it until the age watch fails the channel.
    pub(crate) async fn nack_to_the_end(self, failure: Failure) {
        let nacking = self.nack(failure);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                if let Err(ended) = runtime.spawn(nacking).await {
                    if ended.is_panic() {
                        std::panic::resume_unwind(ended.into_panic());
                    }
                    tracing::warn!("a nack's failure strategy was cancelled before it ran (the runtime is shutting down): the record stays unsettled, and a Kafka record is delivered again");
                }
            }
            Err(_) => nacking.await,
        }
    }

    /// See [`Acknowledger::is_stale`].
    #[cfg_attr(not(feature = "cosmos"), allow(dead_code))]
    pub(crate) fn is_stale(&self) -> bool {
        self.acknowledger
            .as_ref()
            .is_some_and(|acknowledger| acknowledger.is_stale(self.token))
    }

    /// Lets the handle go without settling: the handler will be called again for the same
    /// record (a retry), and that call settles it.
    pub(crate) fn disarm(mut self) {
        self.acknowledger = None;
    }
}

impl Drop for SettleHandle {
    fn drop(&mut self) {
        if let Some(acknowledger) = self.acknowledger.take() {
            acknowledger.dropped(self.token, self.attempt);
        }
    }
}

/// A record whose partition a test revokes (see [`Acknowledger::is_stale`]); settling it does
/// nothing.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct RevocableRecord(std::sync::atomic::AtomicBool);

#[cfg(test)]
impl RevocableRecord {
    pub(crate) fn revoke(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(test)]
impl Acknowledger for RevocableRecord {
    fn ack(&self, _token: Token) {}

    fn is_stale(&self, _token: Token) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn nack(self: Arc<Self>, _token: Token, _failure: Failure) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}
