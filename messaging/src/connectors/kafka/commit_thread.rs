//! The thread a channel's periodic commits run on.
//!
//! A synchronous commit waits for the coordinator: up to `session.timeout.ms` while librdkafka
//! holds it back for a coordinator it does not know, and longer for one that does not answer.
//! A tokio worker must not wait that long, and neither may a blocking-pool thread: the
//! runtime's shutdown waits for those, and so the process's exit would. Nothing joins a thread
//! of the channel's own, so it holds neither. (An asynchronous commit would not wait, but
//! librdkafka reports its result only to a commit callback that rdkafka does not install: a
//! refused commit would go unseen.)

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::Arc;

use rdkafka::consumer::CommitMode;
use tokio::sync::oneshot;

use super::channel_state::ChannelState;
use super::committer::{commit_watermarks, refused_while_rebalancing, Round};
use super::off_worker::OffWorker;
use crate::failure::Failure;

pub(crate) struct CommitThread {
    requests: mpsc::Sender<Request>,
}

struct Request {
    /// Held for the commit only: the consumer's close waits for its last reference.
    consumer: OffWorker,
    done: oneshot::Sender<Result<(), String>>,
}

impl CommitThread {
    /// Starts the thread for `state`'s channel; it ends once this handle is dropped and its
    /// last commit is done.
    pub(crate) fn start(state: Arc<ChannelState>) -> std::io::Result<Self> {
        let (requests, incoming) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("messaging-commit".into())
            .spawn(move || {
                for Request { consumer, done } in incoming {
                    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        let committed = commit_watermarks(
                            &**consumer,
                            &state,
                            &state.partitions(),
                            Round::Periodic,
                            CommitMode::Sync,
                        );
                        if let Err(error) = committed {
                            state.metrics.commit_failed();
                            // Routine while another member joins or leaves: the next commit
                            // carries the same offsets (or later ones: they never go back).
                            if refused_while_rebalancing(&**consumer, &error) {
                                tracing::info!(channel = %state.channel, %error, "offset commit refused while the group rebalances; it is sent again at the next commit");
                            } else {
                                tracing::warn!(channel = %state.channel, %error, "offset commit failed; it is retried at the next commit");
                            }
                        }
                    }))
                    .map_err(|panic| Failure::from_panic(panic).reason().to_owned());
                    drop(consumer);
                    let _ = done.send(outcome);
                }
            })?;
        Ok(Self { requests })
    }

    /// Commits the channel's watermarks that moved; the answer comes once the commit is done:
    /// an error is a panic's text (a refused commit is counted and sent again by the commit
    /// itself), and a closed answer means the thread is gone.
    pub(crate) fn commit(&self, consumer: OffWorker) -> oneshot::Receiver<Result<(), String>> {
        let (done, answer) = oneshot::channel();
        // A send fails only if the thread is gone; the dropped `done` then closes the answer.
        let _ = self.requests.send(Request { consumer, done });
        answer
    }
}
