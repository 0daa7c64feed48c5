//! Liveness, readiness and startup of each channel as gauges (1 UP, 0 DOWN), read from the
//! health registry at each scrape, so they always say what `/health` says.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;

use super::labels::ChannelLabels;
use crate::health::{Check, HealthRegistry};

const GAUGES: [(Check, &str, &str); 3] = [
    (
        Check::Liveness,
        "messaging_channel_live",
        "1 while the channel is live (no fail nack, stuck record or dead dead-letter writer)",
    ),
    (
        Check::Readiness,
        "messaging_channel_ready",
        "1 while the channel is ready (assigned and its brokers answer)",
    ),
    (
        Check::Startup,
        "messaging_channel_started",
        "1 once the channel has started",
    ),
];

pub(super) struct HealthGauges(pub(super) HealthRegistry);

impl std::fmt::Debug for HealthGauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HealthGauges")
    }
}

impl Collector for HealthGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (check, name, help) in GAUGES {
            let report = self.0.check(check);
            if report.data.is_empty() {
                continue;
            }
            let mut family =
                encoder.encode_descriptor(name, help, None, ConstGauge::new(0i64).metric_type())?;
            for (channel, state) in report.data {
                let labels = ChannelLabels { channel };
                ConstGauge::new(i64::from(state.is_ok())).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
