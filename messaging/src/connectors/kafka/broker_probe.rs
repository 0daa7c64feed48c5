//! Readiness that follows the broker: every client of a channel (its consumer, its producer,
//! its dead-letter producer) asks for its topic's metadata every [`PROBE_INTERVAL`], for as
//! long as the channel runs. A broker that stops answering turns the channel not ready with
//! the client's error as the reason; one that answers again turns it back. A producer's topic
//! must also be there: a missing outgoing or dead-letter topic fails every write, so the
//! channel is not ready while the broker says so.
//!
//! A probe rather than librdkafka's error events: an idle client reconnects only when it needs
//! to, so its events would say "down" long after the broker came back. A metadata request is
//! small, and it runs on a blocking thread: no tokio worker waits on the broker.
//!
//! A client that reaches no broker and knows none any more is given its bootstrap servers again
//! ([`rebootstrap`](super::rebootstrap)): librdkafka can lose them all for good.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::metadata::Metadata;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::ClientContext;
use tokio::time::Instant;

use super::off_worker::OffWorker;
use super::rebootstrap::{rebootstrap_if_lost, RebootstrapSchedule, Rebootstrapped};
use crate::health::{Aspect, HealthRegistry};

/// How often each client asks its broker.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// How long a probe waits for an answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a probe did not come back clean.
#[derive(Debug)]
pub(crate) enum ProbeFailure {
    /// No answer from the broker.
    Unreachable(KafkaError),
    /// The broker answered that the topic cannot be written (it does not exist, or this client
    /// may not see it).
    Topic(RDKafkaErrorCode),
}

/// A client that can ask its broker for a topic's metadata.
pub(crate) trait Probe: Send + Sync + 'static {
    fn probe(&self, topic: &str) -> Result<(), ProbeFailure>;

    /// Gives the client its bootstrap servers again if it knows no broker.
    fn rebootstrap_if_lost(&self) -> Rebootstrapped;

    /// librdkafka's fatal error of the client, if it raised one: the client does nothing any
    /// more, while its broker may still answer the probe.
    fn fatal_error(&self) -> Option<String> {
        None
    }
}

impl<C: ClientContext + 'static> Probe for FutureProducer<C> {
    fn probe(&self, topic: &str) -> Result<(), ProbeFailure> {
        let metadata = self
            .client()
            .fetch_metadata(Some(topic), PROBE_TIMEOUT)
            .map_err(ProbeFailure::Unreachable)?;
        topic_problem(&metadata, topic).map_or(Ok(()), |code| Err(ProbeFailure::Topic(code)))
    }

    fn rebootstrap_if_lost(&self) -> Rebootstrapped {
        rebootstrap_if_lost(self.client())
    }

    // An idempotent producer refused its producer id, or fenced, sends nothing any more; its
    // error callback hands on the underlying code only, so the client is asked.
    fn fatal_error(&self) -> Option<String> {
        self.client().fatal_error().map(|(_, reason)| reason)
    }
}

/// What the broker said about `topic`, if it was a problem. A topic missing from the answer
/// counts as unknown.
fn topic_problem(metadata: &Metadata, topic: &str) -> Option<RDKafkaErrorCode> {
    match metadata
        .topics()
        .iter()
        .find(|listed| listed.name() == topic)
    {
        Some(listed) => listed.error().map(RDKafkaErrorCode::from),
        None => Some(RDKafkaErrorCode::UnknownTopicOrPartition),
    }
}

/// A consumer is probed through an [`OffWorker`]: if the probe ends up holding its last
/// reference, the close still runs on a thread of its own. Only the broker's answer counts: a
/// missing incoming topic is reported by the consumer itself (`Aspect::Consuming`).
impl Probe for OffWorker {
    fn probe(&self, topic: &str) -> Result<(), ProbeFailure> {
        self.fetch_metadata(Some(topic), PROBE_TIMEOUT)
            .map(drop)
            .map_err(ProbeFailure::Unreachable)
    }

    fn rebootstrap_if_lost(&self) -> Rebootstrapped {
        rebootstrap_if_lost(self.client())
    }
}

/// What one probe reports on.
pub(crate) struct Target {
    pub(crate) channel: String,
    /// Which of the channel's clients: `consumer`, `producer` or `dead-letter producer`.
    pub(crate) client: &'static str,
    pub(crate) topic: String,
    pub(crate) aspect: Aspect,
    /// The application's registry: the probe ends when it closes.
    pub(crate) health: HealthRegistry,
    /// Whether the channel reports its health (`health-enabled`). A channel that does not is
    /// probed all the same: the probe also gives back a client's lost brokers.
    pub(crate) reports: bool,
    /// Whether the first answer also means the channel has started (an outgoing channel has
    /// nothing else to wait for).
    pub(crate) starts_channel: bool,
}

/// Probes while `client` gives a client and the application runs. A consumer is given weakly
/// (`Weak::upgrade`), so the probe never keeps it from closing.
pub(crate) fn spawn<P: Probe>(
    target: Target,
    client: impl Fn() -> Option<Arc<P>> + Send + 'static,
) {
    tokio::spawn(async move {
        let mut topic_answers = TopicAnswers::default();
        let mut rebootstraps = RebootstrapSchedule::default();
        while !target.health.is_closed() {
            let Some(client) = client() else { return };
            if let Some(fatal) = client.fatal_error() {
                // Only a new client helps: liveness asks for the restart that makes one.
                if target.reports {
                    target.health.fail(
                        &target.channel,
                        &format!(
                            "the {} cannot send any more (librdkafka's fatal error: {fatal}); \
                             a restart makes a new one",
                            target.client
                        ),
                    );
                }
                return;
            }
            let (probing, probed) = (Arc::clone(&client), target.topic.clone());
            let answer = match tokio::task::spawn_blocking(move || probing.probe(&probed)).await {
                Ok(answer) => Some(answer),
                // A probe that panicked answered nothing; the next round asks again.
                Err(error) if error.is_panic() => None,
                // The runtime is shutting down.
                Err(_) => return,
            };
            let rebootstrap_due = match &answer {
                // A retry topic's probe shares the dead-letter probe's client: that one gives
                // it its brokers back.
                _ if target.aspect == Aspect::RetryTopic => false,
                Some(Err(ProbeFailure::Unreachable(_))) => rebootstraps.unreachable(Instant::now()),
                Some(_) => {
                    rebootstraps.reached();
                    false
                }
                None => false,
            };
            // The client is let go before the sleep: a consumer closes only once nothing holds it.
            let rebootstrapped = if rebootstrap_due {
                target.rebootstrap(client).await
            } else {
                drop(client);
                false
            };
            if rebootstrapped {
                rebootstraps.rebootstrapped(Instant::now());
            }
            if target.reports {
                target.report(&mut topic_answers, answer);
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    });
}

impl Target {
    /// Gives a client that reaches no broker its bootstrap servers again if it knows no broker
    /// (on a blocking thread: librdkafka may resolve their names). Whether it did.
    async fn rebootstrap<P: Probe>(&self, client: Arc<P>) -> bool {
        let done = tokio::task::spawn_blocking(move || client.rebootstrap_if_lost()).await;
        let added = matches!(done, Ok(Rebootstrapped::Added));
        if added {
            tracing::warn!(
                channel = %self.channel,
                client = self.client,
                topic = %self.topic,
                "the client reaches no broker and knows none any more: it is given its \
                 bootstrap.servers again (librdkafka can lose every broker when a broker that \
                 has just been fenced answers; librdkafka issue 5301)"
            );
        }
        added
    }

    /// Publishes a probe's answer (`None`: the probe panicked).
    fn report(&self, topic_answers: &mut TopicAnswers, answer: Option<Result<(), ProbeFailure>>) {
        let (channel, aspect, health) = (&self.channel, self.aspect, &self.health);
        // The broker answered: the channel has started, whatever its topic.
        if self.starts_channel && matches!(answer, Some(Ok(()) | Err(ProbeFailure::Topic(_)))) {
            health.ready(channel);
        }
        match answer {
            Some(Ok(())) => {
                topic_answers.clean();
                health.ready_for(channel, aspect);
            }
            Some(Err(failure @ ProbeFailure::Topic(code))) => {
                if topic_answers.problem_counts(code) {
                    health.not_ready_for(channel, aspect, &describe(aspect, &self.topic, &failure));
                }
            }
            // The dead-letter probe of the same client says so already.
            Some(Err(ProbeFailure::Unreachable(_))) if aspect == Aspect::RetryTopic => {}
            Some(Err(failure)) => {
                health.not_ready_for(channel, aspect, &describe(aspect, &self.topic, &failure))
            }
            // Not ready, rather than the last answer for good. (The panic's text is not
            // published.)
            None => health.not_ready_for(channel, aspect, "the broker probe panicked"),
        }
    }
}

/// When the broker's answers about a producer's topic turn its channel not ready. After a
/// clean answer, a single answer about the topic may be stale (it was just created, or is
/// being deleted), so it takes two in a row. A topic without a leader is being created (by a
/// broker that creates topics on first use, which the probe's own request is) or elects one:
/// a problem once it lasts three answers. (Answers that alternate, as metadata caches catch up
/// with a deletion, keep the channel ready: that lasts seconds.)
#[derive(Default)]
struct TopicAnswers {
    answered_clean: bool,
    problems_in_a_row: u32,
}

impl TopicAnswers {
    fn clean(&mut self) {
        (self.answered_clean, self.problems_in_a_row) = (true, 0);
    }

    /// Takes in a problem with the topic; whether the channel is not ready for it now.
    fn problem_counts(&mut self, code: RDKafkaErrorCode) -> bool {
        self.problems_in_a_row += 1;
        let needed = match (code, self.answered_clean) {
            (RDKafkaErrorCode::LeaderNotAvailable, _) => 3,
            (_, true) => 2,
            (_, false) => 1,
        };
        self.problems_in_a_row >= needed
    }
}

fn describe(aspect: Aspect, topic: &str, failure: &ProbeFailure) -> String {
    match (aspect, failure) {
        (Aspect::DeadLetterBroker, ProbeFailure::Unreachable(error)) => {
            format!("the dead-letter producer cannot reach its broker: {error}")
        }
        (Aspect::RetryTopic, ProbeFailure::Topic(code)) => {
            format!("the retry topic {topic} cannot be written: {code}")
        }
        (Aspect::DeadLetterBroker, ProbeFailure::Topic(code)) => {
            format!("the dead-letter topic {topic} cannot be written: {code}")
        }
        (_, ProbeFailure::Unreachable(error)) => format!("cannot reach the broker: {error}"),
        (_, ProbeFailure::Topic(code)) => format!("the topic {topic} cannot be written: {code}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    const UNKNOWN: RDKafkaErrorCode = RDKafkaErrorCode::UnknownTopicOrPartition;
    const LEADERLESS: RDKafkaErrorCode = RDKafkaErrorCode::LeaderNotAvailable;

    #[test]
    fn a_missing_topic_counts_at_once_before_any_clean_answer_and_at_the_second_after_one() {
        let mut answers = TopicAnswers::default();
        assert!(answers.problem_counts(UNKNOWN), "never seen: missing");
        answers.clean();
        assert!(!answers.problem_counts(UNKNOWN), "one answer may be stale");
        assert!(answers.problem_counts(UNKNOWN));
        answers.clean();
        assert!(
            !answers.problem_counts(UNKNOWN),
            "a clean answer starts the count again"
        );
    }

    #[test]
    fn a_topic_without_a_leader_counts_once_it_lasts_three_answers() {
        let mut answers = TopicAnswers::default();
        assert!(!answers.problem_counts(LEADERLESS), "being created");
        assert!(!answers.problem_counts(LEADERLESS));
        assert!(answers.problem_counts(LEADERLESS), "it lasts");
    }

    /// A client whose answers are scripted (`true`: the broker answered), and which says what
    /// happened to it when.
    struct ScriptedClient {
        answers: Mutex<VecDeque<bool>>,
        events: Mutex<Vec<(Instant, &'static str)>>,
    }

    impl ScriptedClient {
        fn new(answers: impl IntoIterator<Item = bool>) -> Arc<Self> {
            Arc::new(Self {
                answers: Mutex::new(answers.into_iter().collect()),
                events: Mutex::default(),
            })
        }

        fn record(&self, event: &'static str) {
            self.events.lock().unwrap().push((Instant::now(), event));
        }

        /// Probes it until its script ends; what happened, when.
        async fn probed(self: Arc<Self>) -> Vec<(Instant, &'static str)> {
            self.probed_as(Aspect::Broker).await
        }

        /// Probes it for `aspect` until its script ends; what happened, when.
        async fn probed_as(self: Arc<Self>, aspect: Aspect) -> Vec<(Instant, &'static str)> {
            let health = HealthRegistry::default();
            let target = Target {
                channel: "scripted".into(),
                client: "producer",
                topic: "scripted".into(),
                aspect,
                health: health.clone(),
                reports: false,
                starts_channel: true,
            };
            let probed = Arc::clone(&self);
            spawn(target, move || {
                let scripted = !probed.answers.lock().unwrap().is_empty();
                scripted.then(|| Arc::clone(&probed))
            });
            while !self.answers.lock().unwrap().is_empty() {
                tokio::time::sleep(PROBE_INTERVAL).await;
            }
            tokio::time::sleep(PROBE_INTERVAL * 2).await;
            health.close();
            let events = self.events.lock().unwrap().clone();
            events
        }
    }

    impl Probe for ScriptedClient {
        fn probe(&self, _topic: &str) -> Result<(), ProbeFailure> {
            let answered = self.answers.lock().unwrap().pop_front().unwrap_or(true);
            self.record(if answered { "answered" } else { "unreachable" });
            answered
                .then_some(())
                .ok_or(ProbeFailure::Unreachable(KafkaError::MetadataFetch(
                    RDKafkaErrorCode::BrokerTransportFailure,
                )))
        }

        fn rebootstrap_if_lost(&self) -> Rebootstrapped {
            self.record("rebootstrapped");
            Rebootstrapped::Added
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_reached_its_broker_is_rebootstrapped_at_its_first_failed_probe_then_spaced(
    ) {
        let events = ScriptedClient::new([true].into_iter().chain([false; 40]))
            .probed()
            .await;
        let rebootstraps: Vec<usize> = (0..events.len())
            .filter(|&index| events[index].1 == "rebootstrapped")
            .collect();
        assert!(rebootstraps.len() >= 3, "{events:?}");
        let first = rebootstraps[0];
        assert_eq!(
            events[first - 1].1,
            "unreachable",
            "right after the first failed probe"
        );
        assert_eq!(events[first - 2].1, "answered");
        // Each next one at the first failed probe once the wait (10 s, then doubling) is over;
        // `next - 1` is that probe, `next - 2` the one before it.
        let mut interval = Duration::from_secs(10);
        for pair in rebootstraps.windows(2) {
            let (previous, next) = (events[pair[0]].0, pair[1]);
            assert!(events[next].0 - previous >= interval, "{events:?}");
            assert!(events[next - 2].0 - previous < interval, "{events:?}");
            interval *= 2;
        }
    }

    /// A retry topic's probe shares its client with the dead-letter probe, which gives the
    /// client its brokers back: two schedules would add them twice.
    #[tokio::test(start_paused = true)]
    async fn a_retry_topics_probe_leaves_rebootstrapping_to_the_dead_letter_probe() {
        let events = ScriptedClient::new([true].into_iter().chain([false; 40]))
            .probed_as(Aspect::RetryTopic)
            .await;
        assert!(
            events.iter().all(|(_, event)| *event != "rebootstrapped"),
            "{events:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_reached_a_broker_is_never_rebootstrapped() {
        let events = ScriptedClient::new([false; 40]).probed().await;
        assert!(
            events.iter().all(|(_, event)| *event == "unreachable"),
            "{events:?}"
        );
        assert_eq!(events.len(), 40);
    }

    #[test]
    fn a_producers_probe_reports_a_missing_topic_until_it_exists() {
        let producer: FutureProducer = rdkafka::ClientConfig::new()
            .set(
                "bootstrap.servers",
                crate::EmbeddedKafka::get().bootstrap_servers(),
            )
            .set("allow.auto.create.topics", "false")
            .create()
            .expect("producer");
        let topic = "never-created-by-the-probe-test";
        assert!(matches!(
            producer.probe(topic),
            Err(ProbeFailure::Topic(
                RDKafkaErrorCode::UnknownTopicOrPartition
            ))
        ));
        crate::EmbeddedKafka::get()
            .create_topic(topic, 1)
            .expect("topic");
        assert!(producer.probe(topic).is_ok());
    }
}
