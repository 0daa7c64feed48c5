//! One application's metrics: its registry, the families channels take their handles from,
//! and the exposition.

use std::sync::Arc;

use std::sync::atomic::AtomicU64;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

#[cfg(feature = "cosmos")]
use super::cosmos::{CosmosFamilies, CosmosMetrics};
use super::health_gauges::HealthGauges;
use super::incoming::{ChannelMetrics, IncomingFamilies};
use super::outgoing::{OutgoingFamilies, SinkMetrics};
use crate::health::HealthRegistry;

/// What `/metrics` answers with: `prometheus-client` writes OpenMetrics text.
pub(crate) const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub(crate) struct Metrics {
    registry: Registry,
    incoming: IncomingFamilies,
    outgoing: OutgoingFamilies,
    #[cfg(feature = "cosmos")]
    cosmos: CosmosFamilies,
}

impl Metrics {
    pub(crate) fn new(health: &HealthRegistry) -> Arc<Self> {
        let mut registry = Registry::default();
        let incoming = IncomingFamilies::register(&mut registry);
        let outgoing = OutgoingFamilies::register(&mut registry);
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
            #[cfg(feature = "cosmos")]
            cosmos,
        })
    }

    pub(crate) fn incoming_channel(&self, channel: &str, topic: &str) -> ChannelMetrics {
        ChannelMetrics::new(&self.incoming, channel, topic)
    }

    pub(crate) fn outgoing_channel(&self, channel: &str) -> SinkMetrics {
        SinkMetrics::new(&self.outgoing, channel)
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
