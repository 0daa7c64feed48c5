//! An incoming channel's consumer loop.
//!
//! One task polls the consumer, hands each record to the handler and awaits it before taking
//! the next (records of the channel are processed one at a time, in partition order). Polling
//! the main queue also runs the rebalance callbacks. Offsets are committed by the committer
//! task from the trackers that acknowledgements update.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::CommitMode;
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::Message as _;
use tokio::task::JoinHandle;

use super::acknowledger::KafkaAcknowledger;
use super::channel_state::ChannelState;
use super::committer::{self, commit_watermarks, ChannelConsumer};
use super::dead_letter::OriginalRecord;
use super::metadata::{Header, KafkaMetadata};
use crate::commit::CommitStrategy;
use crate::connectors::{dispatch, Sink};
use crate::handler::{Handler, RawMessage};
use crate::message::Message;
use crate::metadata::Metadata;
use crate::settle::SettleHandle;

/// A running incoming channel.
pub(crate) struct KafkaSource {
    state: Arc<ChannelState>,
    task: JoinHandle<()>,
}

pub(crate) struct SourceParts {
    pub(crate) consumer: ChannelConsumer,
    pub(crate) state: Arc<ChannelState>,
    pub(crate) handler: Arc<dyn Handler>,
    pub(crate) sink: Option<Arc<dyn Sink>>,
    pub(crate) commit_interval: Duration,
    pub(crate) max_age: Option<Duration>,
}

impl KafkaSource {
    pub(crate) fn spawn(parts: SourceParts, drain_timeout: Duration) -> Self {
        let state = parts.state.clone();
        let task = tokio::spawn(run(parts, drain_timeout));
        Self { state, task }
    }

    /// Stops fetching, waits (bounded) for in-flight records, commits, closes the consumer.
    pub(crate) async fn shutdown(self) {
        self.state.request_stop();
        if let Err(error) = self.task.await {
            tracing::error!(channel = %self.state.channel, %error, "consumer task ended abnormally");
        }
    }
}

async fn run(parts: SourceParts, drain_timeout: Duration) {
    let SourceParts { consumer, state, handler, sink, commit_interval, max_age } = parts;
    let consumer = Arc::new(consumer);
    let committer = (state.commit_strategy != CommitStrategy::Ignore)
        .then(|| tokio::spawn(committer::run(consumer.clone(), state.clone(), commit_interval, max_age)));
    let keep_originals = state.dead_letter.is_some();
    let mut stop = state.subscribe_stop();
    while !*stop.borrow_and_update() {
        let record = tokio::select! {
            biased;
            _ = stop.changed() => break,
            record = consumer.recv() => record,
        };
        match record {
            Ok(record) => {
                let message = to_message(&state, &record, keep_originals);
                drop(record);
                dispatch(&*handler, sink.as_ref(), message).await;
            }
            Err(error) => {
                tracing::warn!(channel = %state.channel, %error, "consumer error");
                // Before the first assignment an error (e.g. a missing topic) is why we are not ready.
                if state.trackers().is_empty() {
                    state.not_ready(&error.to_string());
                }
            }
        }
    }
    state.not_ready("stopped");
    if !state.has_failed() {
        drain(&state, drain_timeout).await;
    }
    if let Some(committer) = committer {
        let _ = committer.await;
    }
    // The last commit and the close talk to the broker synchronously: off the async workers.
    let closing_state = state.clone();
    let closed = tokio::task::spawn_blocking(move || {
        if closing_state.commit_strategy != CommitStrategy::Ignore {
            commit_watermarks(&consumer, &closing_state, CommitMode::Sync);
        }
        drop(consumer);
    })
    .await;
    if let Err(error) = closed {
        tracing::error!(channel = %state.channel, %error, "closing the consumer failed");
    }
    tracing::info!(channel = %state.channel, "consumer closed");
}

/// Waits until every handed-out record is settled, or the timeout passes.
async fn drain(state: &ChannelState, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while state.trackers().iter().any(|(_, tracker)| tracker.has_pending()) {
        if Instant::now() >= deadline {
            tracing::warn!(channel = %state.channel, timeout_ms = timeout.as_millis() as u64,
                "shutdown drain timed out; unsettled records stay uncommitted and will be redelivered");
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn to_message(state: &Arc<ChannelState>, record: &BorrowedMessage<'_>, keep_original: bool) -> RawMessage {
    let partition = record.partition();
    let offset = record.offset();
    let tracker = state.tracker(partition);
    tracker.received(offset);
    let value = record.payload().map(<[u8]>::to_vec);
    let key = record.key().map(<[u8]>::to_vec);
    let headers: Vec<Header> = record
        .headers()
        .map(|headers| headers.iter().map(|header| Header { key: header.key.to_owned(), value: header.value.map(<[u8]>::to_vec) }).collect())
        .unwrap_or_default();
    let original = keep_original.then(|| OriginalRecord { key: key.clone(), value: value.clone(), headers: headers.clone() });
    let metadata = Metadata::new().with(KafkaMetadata {
        topic: state.topic.clone(),
        partition,
        offset,
        timestamp: record.timestamp().to_millis(),
        key,
        headers,
    });
    let acknowledger = KafkaAcknowledger { state: state.clone(), tracker, partition, offset, original };
    Message::with_settle(value, metadata, SettleHandle::new(acknowledger))
}
