//! Settling a consumed record: an ack marks its offset committable; a nack runs the channel's
//! failure strategy first.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::channel_state::ChannelState;
use super::dead_letter::{OriginalRecord, RecordPosition};
use crate::commit::{CommitStrategy, PartitionTracker};
use crate::failure::{Failure, FailureStrategy};
use crate::settle::Acknowledger;

pub(crate) struct KafkaAcknowledger {
    pub(crate) state: Arc<ChannelState>,
    pub(crate) tracker: Arc<PartitionTracker>,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    /// Kept only for the `dead-letter-queue` strategy.
    pub(crate) original: Option<OriginalRecord>,
}

impl KafkaAcknowledger {
    fn settle(&self) {
        if self.tracker.settled(self.offset) && self.state.commit_strategy == CommitStrategy::Latest {
            self.state.commit_wanted.notify_one();
        }
    }

    async fn apply_failure_strategy(self, failure: Failure) {
        let state = &self.state;
        match state.failure_strategy {
            FailureStrategy::Fail => state.fail(failure.reason()),
            FailureStrategy::Ignore => {
                tracing::warn!(channel = %state.channel, partition = self.partition, offset = self.offset, reason = %failure,
                    "message nacked; ignored per failure-strategy=ignore");
                self.settle();
            }
            FailureStrategy::DeadLetterQueue => {
                let (Some(writer), Some(original)) = (&state.dead_letter, &self.original) else {
                    unreachable!("a dead-letter-queue channel has a writer and keeps originals");
                };
                let position = RecordPosition { topic: &state.topic, partition: self.partition, offset: self.offset };
                match writer.write(original, position, &failure).await {
                    Ok(()) => {
                        tracing::info!(channel = %state.channel, partition = self.partition, offset = self.offset,
                            dead_letter_topic = writer.topic(), reason = %failure, "message sent to the dead-letter topic");
                        self.settle();
                    }
                    // Without the dead-letter record the original must not be committed: fail.
                    Err(error) => state.fail(&format!("{error}; the record was nacked because: {failure}")),
                }
            }
        }
    }
}

impl Acknowledger for KafkaAcknowledger {
    fn ack(self: Box<Self>) {
        self.settle();
    }

    fn nack(self: Box<Self>, failure: Failure) -> BoxFuture<'static, ()> {
        Box::pin(self.apply_failure_strategy(failure))
    }
}
