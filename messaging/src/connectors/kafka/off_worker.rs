//! A handle to a channel's consumer whose drop never runs on a tokio worker.
//!
//! The last drop of a consumer closes it: it leaves the group and waits for the broker, polling
//! for as long as that takes. On a worker that would stall every task scheduled there (on a
//! current-thread runtime, the whole process); on a blocking-pool thread it would hold the
//! runtime's shutdown, and so the process's exit. A thread of its own does neither.

use std::ops::Deref;

use rdkafka::consumer::Consumer;
use std::sync::Arc;

use super::committer::ChannelConsumer;

pub(crate) struct OffWorker(Option<Arc<ChannelConsumer>>);

impl OffWorker {
    pub(crate) fn new(consumer: Arc<ChannelConsumer>) -> Self {
        Self(Some(consumer))
    }

    /// The consumer itself, for a caller that drops it where it may block.
    pub(crate) fn into_inner(mut self) -> Arc<ChannelConsumer> {
        self.0.take().expect("held until taken")
    }
}

impl Deref for OffWorker {
    type Target = Arc<ChannelConsumer>;

    fn deref(&self) -> &Self::Target {
        self.0.as_ref().expect("held until taken")
    }
}

impl Drop for OffWorker {
    fn drop(&mut self) {
        let Some(consumer) = self.0.take() else {
            return;
        };
        // Only the last reference's drop closes the consumer; exactly one of any handles
        // dropped at once gets it (the others only count down, here, at no cost).
        let Some(last) = Arc::into_inner(consumer) else {
            return;
        };
        let closing = std::thread::Builder::new()
            .name("messaging-consumer-close".into())
            .spawn(move || {
                let state = last.context().state.clone();
                state.closing();
                drop(last);
                state.metrics.consumer_closed();
            });
        if let Err(error) = closing {
            // No thread to be had (the process is going down): it was closed here after all.
            tracing::warn!(%error, "closing a consumer on the current thread");
        }
    }
}
