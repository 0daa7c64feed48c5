//! Rebalance and commit callbacks of a channel's consumer.
//!
//! They run inside the consumer loop's polls of the main queue, so a revoke commits before the
//! partitions go to another member: the new owner starts at our contiguous watermark. An
//! assignment splits each partition's queue off the main queue before fetching starts; a
//! revoke releases them.

use std::sync::Arc;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::channel_state::ChannelState;
use super::client_errors::ClientErrors;
use super::committer::{commit_watermarks, Round};
use super::partition_statistics;
use super::split_queues::SplitQueues;

pub(crate) struct ChannelContext {
    pub(crate) state: Arc<ChannelState>,
    pub(crate) queues: SplitQueues,
    pub(crate) errors: ClientErrors,
}

impl ChannelContext {
    /// `secrets`: the values of the consumer's secret properties, kept out of its logged errors.
    pub(crate) fn new(state: Arc<ChannelState>, secrets: Vec<String>) -> Self {
        let queues = SplitQueues::new(&state.topic);
        let errors = ClientErrors::new(&state.channel, "consumer", secrets);
        Self {
            state,
            queues,
            errors,
        }
    }
}

impl ClientContext for ChannelContext {
    fn stats(&self, statistics: Statistics) {
        partition_statistics::record(&self.state, &statistics, &self.queues.split_partitions());
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.report_from_callback(&error, reason);
    }
}

impl ConsumerContext for ChannelContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // After a rebalance error rdkafka unassigns everything: that is a revoke of all we hold.
        let everything;
        let revoked = match rebalance {
            Rebalance::Assign(assigned) => {
                return self.queues.split(consumer.client().native_ptr(), assigned)
            }
            Rebalance::Revoke(revoked) => *revoked,
            Rebalance::Error(_) => {
                everything = self.state.assignment_list();
                &everything
            }
        };
        self.queues.release(consumer.client().native_ptr(), revoked);
        let state = &self.state;
        let revoked_partitions: Vec<_> = revoked
            .elements()
            .iter()
            .filter_map(|element| state.revoked(element.partition()))
            .collect();
        // During the close the last commit was made already, synchronously, before it; a
        // commit from here would still be in flight when librdkafka terminates the group,
        // which it does not allow (an assertion aborts the process). Under auto-commit this
        // only stores offsets, which the close then commits.
        if state.commits() && (state.auto_commit || !state.is_closing()) {
            // Asynchronous: this runs inside the consumer loop's poll, on a tokio worker, and a
            // stalled broker must not block it. The commit request goes to the coordinator
            // ahead of the rejoin, so the next owner starts at our watermark.
            let sent = commit_watermarks(
                consumer,
                state,
                &revoked_partitions,
                Round::Final,
                CommitMode::Async,
            );
            // An asynchronous commit fails here only if it cannot be sent; librdkafka logs a
            // refusal later (`COMMITFAIL`). Either way the next owner starts at the last commit
            // that went through.
            if let Err(error) = sent {
                state.metrics.commit_failed();
                tracing::warn!(channel = %state.channel, %error, "the revoked partitions' offset commit could not be sent");
            }
        }
        for assigned in &revoked_partitions {
            // Late acks of this assignment's records must not commit for the next owner.
            assigned.revoke();
        }
        state.not_ready("partitions revoked; waiting for the group's next assignment");
        tracing::info!(channel = %state.channel, partitions = ?partitions(revoked), "partitions revoked");
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(assigned) => {
                for element in assigned.elements() {
                    self.state.assigned(element.partition());
                }
                // rdkafka does not report a failed assign: ask librdkafka what it holds now.
                let holds = |held: &TopicPartitionList| {
                    assigned.elements().iter().all(|element| {
                        held.find_partition(element.topic(), element.partition())
                            .is_some()
                    })
                };
                match consumer.assignment() {
                    Ok(held) if holds(&held) => {
                        tracing::info!(channel = %self.state.channel, partitions = ?partitions(assigned), "partitions assigned");
                        self.state.ready();
                        self.state.consuming();
                    }
                    outcome => {
                        let why = outcome
                            .err()
                            .map_or_else(|| "not taken".to_owned(), |error| error.to_string());
                        tracing::warn!(channel = %self.state.channel, partitions = ?partitions(assigned), %why, "the assignment failed");
                        self.state.not_ready(&format!(
                            "the assignment of partitions {:?} failed: {why}",
                            partitions(assigned)
                        ));
                    }
                }
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => {
                tracing::warn!(channel = %self.state.channel, %error, "rebalance error");
                self.state.not_ready(&format!("rebalance error: {error}"));
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        let Err(error) = result else { return };
        tracing::warn!(channel = %self.state.channel, %error, "offset commit failed; it is retried at the next commit");
        self.state.metrics.commit_failed();
        forget_failed_commits(&self.state, offsets);
    }
}

pub(crate) fn forget_failed_commits(state: &ChannelState, offsets: &TopicPartitionList) {
    for element in offsets.elements() {
        if let Offset::Offset(offset) = element.offset() {
            state.commit_failed(element.partition(), offset);
        }
    }
}

fn partitions(list: &TopicPartitionList) -> Vec<i32> {
    list.elements()
        .iter()
        .map(|element| element.partition())
        .collect()
}

#[cfg(test)]
mod tests {
    //! A failed assignment, on the embedded cluster with a consumer that is not subscribed, so
    //! the test decides what it holds: rdkafka does not report a failed assign, and the
    //! channel asks librdkafka what it holds instead.

    use std::collections::{BTreeMap, HashMap};
    use std::sync::Arc;

    use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
    use rdkafka::{ClientConfig, TopicPartitionList};

    use super::ChannelContext;
    use crate::config::{IncomingSettings, Layers};
    use crate::connectors::kafka::channel_state::{ChannelState, FailureWriters};
    use crate::health::{Check, HealthRegistry};
    use crate::metrics::Metrics;
    use crate::EmbeddedKafka;

    fn readiness(health: &HealthRegistry) -> Result<(), String> {
        health.check(Check::Readiness).data["orders"].clone()
    }

    #[test]
    fn an_assignment_librdkafka_did_not_take_leaves_the_channel_not_ready() {
        let topic = format!("failed-assign-{}", std::process::id());
        EmbeddedKafka::get()
            .create_topic(&topic, 1)
            .expect("topic created");
        let layers = Layers {
            environment: HashMap::new(),
            file: None,
            code: BTreeMap::from([("messaging.incoming.orders.topic".to_owned(), topic.clone())]),
            attributes: BTreeMap::new(),
        };
        let settings = IncomingSettings::resolve(&layers, "orders", &["orders".to_owned()])
            .expect("valid settings");
        let health = HealthRegistry::default();
        health.register("orders");
        let metrics = Metrics::new(&health).incoming_channel("orders", &topic);
        let state = ChannelState::new(
            &settings,
            false,
            FailureWriters::default(),
            None,
            Arc::default(),
            &health,
            metrics,
            None,
        );
        let consumer: BaseConsumer<ChannelContext> = ClientConfig::new()
            .set(
                "bootstrap.servers",
                EmbeddedKafka::get().bootstrap_servers(),
            )
            .set("group.id", &topic)
            .create_with_context(ChannelContext::new(state, Vec::new()))
            .expect("consumer");
        let mut partition = TopicPartitionList::new();
        partition.add_partition(&topic, 0);

        // The group assigned partition 0, but the consumer does not hold it.
        consumer
            .context()
            .post_rebalance(&consumer, &Rebalance::Assign(&partition));
        let reason = readiness(&health).expect_err("a failed assignment is not ready");
        assert!(
            reason.contains("the assignment of partitions [0] failed: not taken"),
            "{reason}"
        );

        consumer.assign(&partition).expect("assigned");
        consumer
            .context()
            .post_rebalance(&consumer, &Rebalance::Assign(&partition));
        assert_eq!(
            readiness(&health),
            Ok(()),
            "an assignment it holds is ready"
        );
    }
}
