//! Readiness that follows the broker: every client of a channel (its consumer, its producer,
//! its dead-letter producer) asks for its topic's metadata every [`PROBE_INTERVAL`], for as
//! long as the channel runs. A broker that stops answering turns the channel not ready with
//! the client's error as the reason; one that answers again turns it back.
//!
//! A probe rather than librdkafka's error events: an idle client reconnects only when it needs
//! to, so its events would say "down" long after the broker came back. A metadata request is
//! small, and it runs on a blocking thread: no tokio worker waits on the broker.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaResult;
use rdkafka::producer::{FutureProducer, Producer};

use super::off_worker::OffWorker;
use crate::health::{Aspect, HealthRegistry};

/// How often each client asks its broker.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// How long a probe waits for an answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A client that can ask its broker for a topic's metadata.
pub(crate) trait Probe: Send + Sync + 'static {
    fn probe(&self, topic: &str) -> KafkaResult<()>;
}

impl Probe for FutureProducer {
    fn probe(&self, topic: &str) -> KafkaResult<()> {
        self.client()
            .fetch_metadata(Some(topic), PROBE_TIMEOUT)
            .map(drop)
    }
}

/// A consumer is probed through an [`OffWorker`]: if the probe ends up holding its last
/// reference, the close still runs on a thread of its own.
impl Probe for OffWorker {
    fn probe(&self, topic: &str) -> KafkaResult<()> {
        self.fetch_metadata(Some(topic), PROBE_TIMEOUT).map(drop)
    }
}

/// What one probe reports on.
pub(crate) struct Target {
    pub(crate) channel: String,
    pub(crate) topic: String,
    pub(crate) aspect: Aspect,
    pub(crate) health: HealthRegistry,
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
        let Target {
            channel,
            topic,
            aspect,
            health,
            starts_channel,
        } = target;
        while !health.is_closed() {
            let Some(client) = client() else { return };
            let topic = topic.clone();
            let answer = tokio::task::spawn_blocking(move || client.probe(&topic)).await;
            match answer {
                Ok(Ok(())) => {
                    health.ready_for(&channel, aspect);
                    if starts_channel {
                        health.ready(&channel);
                    }
                }
                Ok(Err(error)) => health.not_ready_for(&channel, aspect, &describe(aspect, &error)),
                // A probe that panicked answered nothing: not ready, rather than the last answer
                // for good; the next round asks again. (The panic's text is not published.)
                Err(error) if error.is_panic() => {
                    health.not_ready_for(&channel, aspect, "the broker probe panicked")
                }
                // The runtime is shutting down.
                Err(_) => return,
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    });
}

fn describe(aspect: Aspect, error: &rdkafka::error::KafkaError) -> String {
    match aspect {
        Aspect::DeadLetterBroker => {
            format!("the dead-letter producer cannot reach its broker: {error}")
        }
        _ => format!("cannot reach the broker: {error}"),
    }
}
