//! An outgoing channel's metrics: records delivered and failed, how long a delivery took, and
//! whether the sink is paused or failed.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::duration_histogram::DurationHistogram;
use super::labels::ChannelLabels;

pub(super) struct OutgoingFamilies {
    sent: Family<ChannelLabels, Counter>,
    send_failed: Family<ChannelLabels, Counter>,
    send_duration: Family<ChannelLabels, DurationHistogram>,
    paused: Family<ChannelLabels, Gauge>,
}

impl OutgoingFamilies {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let families = Self {
            sent: Family::default(),
            send_failed: Family::default(),
            send_duration: Family::default(),
            paused: Family::default(),
        };
        registry.register(
            "messaging_records_sent",
            "Records an outgoing channel delivered (acknowledged by the broker or sink)",
            families.sent.clone(),
        );
        registry.register(
            "messaging_records_send_failed",
            "Records an outgoing channel finally failed to deliver",
            families.send_failed.clone(),
        );
        registry.register_with_unit(
            "messaging_send_duration",
            "Time from handing a record to the sink until its delivery succeeded or failed",
            Unit::Seconds,
            families.send_duration.clone(),
        );
        registry.register(
            "messaging_sink_paused",
            "1 while the sink holds its incoming side back because of an outage, else 0",
            families.paused.clone(),
        );
        families
    }
}

/// The handles of one outgoing channel, looked up once when it starts. Cheap to clone: a
/// delivery in flight holds one.
#[derive(Clone)]
pub(crate) struct SinkMetrics {
    handles: Arc<Handles>,
}

struct Handles {
    sent: Counter,
    send_failed: Counter,
    send_duration: DurationHistogram,
    #[cfg_attr(not(feature = "cosmos"), allow(dead_code))]
    paused: Gauge,
    #[cfg_attr(not(feature = "cosmos"), allow(dead_code))]
    failed: Gauge,
}

impl SinkMetrics {
    pub(super) fn new(families: &OutgoingFamilies, failed: Gauge, channel: &str) -> Self {
        let labels = ChannelLabels {
            channel: channel.to_owned(),
        };
        // Every sink reports whether it is paused; one that never pauses (Kafka's) reports 0.
        Self {
            handles: Arc::new(Handles {
                sent: families.sent.get_or_create_owned(&labels),
                send_failed: families.send_failed.get_or_create_owned(&labels),
                send_duration: families.send_duration.get_or_create_owned(&labels),
                paused: families.paused.get_or_create_owned(&labels),
                failed,
            }),
        }
    }

    /// A record's delivery ended, well or not, this long after it was handed over.
    pub(crate) fn delivered(&self, succeeded: bool, took: Duration) {
        let handles = &self.handles;
        if succeeded {
            handles.sent.inc();
        } else {
            handles.send_failed.inc();
        }
        handles.send_duration.observe(took);
    }

    /// The sink holds its incoming side back (an outage), or no longer does.
    #[cfg_attr(not(feature = "cosmos"), allow(dead_code))]
    pub(crate) fn paused(&self, paused: bool) {
        self.handles.paused.set(i64::from(paused));
    }

    /// The sink failed for good (Cosmos DB's `on-outage = fail`): it is no longer paused, it
    /// is down, and liveness says so.
    #[cfg_attr(not(feature = "cosmos"), allow(dead_code))]
    pub(crate) fn failed(&self) {
        self.handles.paused.set(0);
        self.handles.failed.set(1);
    }
}
