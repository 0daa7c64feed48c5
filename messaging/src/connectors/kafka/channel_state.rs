//! What an incoming Kafka channel's consumer loop, rebalance callbacks, committer and
//! acknowledgers share.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{watch, Notify};

use super::dead_letter::DeadLetterWriter;
use crate::commit::{CommitStrategy, PartitionTracker};
use crate::config::IncomingSettings;
use crate::failure::FailureStrategy;
use crate::health::HealthRegistry;

pub(crate) struct ChannelState {
    pub(crate) channel: String,
    pub(crate) topic: Arc<str>,
    pub(crate) failure_strategy: FailureStrategy,
    pub(crate) commit_strategy: CommitStrategy,
    pub(crate) dead_letter: Option<DeadLetterWriter>,
    health: Option<HealthRegistry>,
    /// Trackers of the partitions assigned now, by partition number (one topic per channel).
    partitions: Mutex<HashMap<i32, Arc<PartitionTracker>>>,
    /// Wakes the committer when an acknowledgement advanced a partition (`latest`).
    pub(crate) commit_wanted: Notify,
    /// Tells the consumer loop to stop fetching: shutdown, or a `fail` failure.
    stop: watch::Sender<bool>,
    failed: Mutex<Option<String>>,
}

impl ChannelState {
    pub(crate) fn new(settings: &IncomingSettings, dead_letter: Option<DeadLetterWriter>, health: &HealthRegistry) -> Arc<Self> {
        Arc::new(Self {
            channel: settings.channel.clone(),
            topic: Arc::from(settings.topic.as_str()),
            failure_strategy: settings.failure_strategy,
            commit_strategy: settings.commit_strategy,
            dead_letter,
            health: settings.health_enabled.then(|| health.clone()),
            partitions: Mutex::new(HashMap::new()),
            commit_wanted: Notify::new(),
            stop: watch::channel(false).0,
            failed: Mutex::new(None),
        })
    }

    /// The tracker of a partition's current assignment, created on first sight.
    pub(crate) fn tracker(&self, partition: i32) -> Arc<PartitionTracker> {
        self.partitions.lock().expect("partitions lock").entry(partition).or_default().clone()
    }

    pub(crate) fn assigned(&self, partition: i32) {
        self.partitions.lock().expect("partitions lock").entry(partition).or_default();
    }

    /// Ends a partition's assignment; returns its tracker for a last commit.
    pub(crate) fn revoked(&self, partition: i32) -> Option<Arc<PartitionTracker>> {
        self.partitions.lock().expect("partitions lock").remove(&partition)
    }

    /// Forgets a failed commit so the next round commits that offset again.
    pub(crate) fn commit_failed(&self, partition: i32, offset: i64) {
        if let Some(tracker) = self.partitions.lock().expect("partitions lock").get(&partition) {
            tracker.commit_failed(offset);
        }
    }

    pub(crate) fn trackers(&self) -> Vec<(i32, Arc<PartitionTracker>)> {
        self.partitions.lock().expect("partitions lock").iter().map(|(partition, tracker)| (*partition, tracker.clone())).collect()
    }

    pub(crate) fn subscribe_stop(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    pub(crate) fn request_stop(&self) {
        self.stop.send_replace(true);
    }

    /// Records a fatal failure: liveness DOWN with the reason, and the channel stops consuming.
    pub(crate) fn fail(&self, reason: &str) {
        tracing::error!(channel = %self.channel, %reason, "channel failed; it stops consuming and its offsets stay uncommitted past the failed record");
        self.failed.lock().expect("failed lock").get_or_insert_with(|| reason.to_owned());
        if let Some(health) = &self.health {
            health.fail(&self.channel, reason);
        }
        self.request_stop();
    }

    pub(crate) fn has_failed(&self) -> bool {
        self.failed.lock().expect("failed lock").is_some()
    }

    pub(crate) fn ready(&self) {
        if let Some(health) = &self.health {
            health.ready(&self.channel);
        }
    }

    pub(crate) fn not_ready(&self, reason: &str) {
        if let Some(health) = &self.health {
            health.not_ready(&self.channel, reason);
        }
    }
}
