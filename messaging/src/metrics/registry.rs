//! One application's metrics: its registry, the families channels take their handles from,
//! and the exposition.

use std::sync::Arc;

use prometheus_client::registry::Registry;

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
}

impl Metrics {
    pub(crate) fn new(health: &HealthRegistry) -> Arc<Self> {
        let mut registry = Registry::default();
        let incoming = IncomingFamilies::register(&mut registry);
        let outgoing = OutgoingFamilies::register(&mut registry);
        registry.register_collector(Box::new(HealthGauges(health.clone())));
        Arc::new(Self {
            registry,
            incoming,
            outgoing,
        })
    }

    pub(crate) fn incoming_channel(&self, channel: &str, topic: &str) -> ChannelMetrics {
        ChannelMetrics::new(&self.incoming, channel, topic)
    }

    pub(crate) fn outgoing_channel(&self, channel: &str) -> SinkMetrics {
        SinkMetrics::new(&self.outgoing, channel)
    }

    /// Every metric, as OpenMetrics text.
    pub(crate) fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}
