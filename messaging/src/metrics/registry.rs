//! One application's metrics: its registry, the families channels take their handles from,
//! and the exposition.

use std::sync::Arc;

use std::sync::atomic::AtomicU64;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

#[cfg(feature = "cosmos")]
use super::cosmos::{CosmosFamilies, CosmosMetrics};
use super::health_gauges::HealthGauges;
use super::incoming::{ChannelMetrics, IncomingFamilies};
use super::labels::ChannelLabels;
use super::outgoing::{OutgoingFamilies, SinkMetrics};
use crate::health::HealthRegistry;

/// What `/metrics` answers with: `prometheus-client` writes OpenMetrics text.
pub(crate) const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub(crate) struct Metrics {
    registry: Registry,
    incoming: IncomingFamilies,
    outgoing: OutgoingFamilies,
    /// Incoming and outgoing channels alike.
    failed: Family<ChannelLabels, Gauge>,
    #[cfg(feature = "cosmos")]
    cosmos: CosmosFamilies,
}

impl Metrics {
    pub(crate) fn new(health: &HealthRegistry) -> Arc<Self> {
        let mut registry = Registry::default();
        let incoming = IncomingFamilies::register(&mut registry);
        let outgoing = OutgoingFamilies::register(&mut registry);
        let failed = Family::<ChannelLabels, Gauge>::default();
        registry.register(
            "messaging_channel_failed",
            "1 once the channel failed for good (incoming: a `fail` nack, a stuck record, a failed dead-letter write, and it stopped consuming; outgoing: its sink failed on an outage), also for channels left out of the health checks",
            failed.clone(),
        );
        #[cfg(feature = "cosmos")]
        let cosmos = CosmosFamilies::register(&mut registry);
        registry.register_collector(Box::new(HealthGauges(health.clone())));
        // When the application started, in seconds since the Unix epoch: lets an alert tell a
        // series a new process was born with from one an old series lost to a missed scrape.
        let started: Gauge<f64, AtomicU64> = Gauge::default();
        started.set(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |since| since.as_secs_f64()),
        );
        registry.register_with_unit(
            "messaging_start_time",
            "When the application started, since the Unix epoch",
            Unit::Seconds,
            started,
        );
        Arc::new(Self {
            registry,
            incoming,
            outgoing,
            failed,
            #[cfg(feature = "cosmos")]
            cosmos,
        })
    }

    pub(crate) fn incoming_channel(&self, channel: &str, topic: &str) -> ChannelMetrics {
        ChannelMetrics::new(&self.incoming, self.failed_gauge(channel), channel, topic)
    }

    pub(crate) fn outgoing_channel(&self, channel: &str) -> SinkMetrics {
        SinkMetrics::new(&self.outgoing, self.failed_gauge(channel), channel)
    }

    fn failed_gauge(&self, channel: &str) -> Gauge {
        self.failed.get_or_create_owned(&ChannelLabels {
            channel: channel.to_owned(),
        })
    }

    #[cfg(feature = "cosmos")]
    pub(crate) fn cosmos_channel(&self, channel: &str) -> CosmosMetrics {
        CosmosMetrics::new(&self.cosmos, channel)
    }

    /// Every metric, as OpenMetrics text.
    pub(crate) fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}
