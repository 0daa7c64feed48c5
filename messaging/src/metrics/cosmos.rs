//! A Cosmos DB sink's own numbers: its writes by how Cosmos DB answered, the request units they
//! cost and the throttled answers. Whether it is paused is the outgoing `messaging_sink_paused`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::labels::ChannelLabels;

/// A write's channel and the class of Cosmos DB's answer (`2xx`, `4xx`, `5xx`, `transport`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    channel: String,
    status_class: String,
}

pub(super) struct CosmosFamilies {
    writes: Family<WriteLabels, Counter>,
    request_units: Family<ChannelLabels, Counter<f64, AtomicU64>>,
    throttled: Family<ChannelLabels, Counter>,
}

impl CosmosFamilies {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let families = Self {
            writes: Family::default(),
            request_units: Family::default(),
            throttled: Family::default(),
        };
        registry.register(
            "messaging_cosmos_writes",
            "Write requests a Cosmos DB sink made, by the class of Cosmos DB's answer (2xx, 4xx, 5xx, or transport when none came)",
            families.writes.clone(),
        );
        registry.register(
            "messaging_cosmos_request_units",
            "Request units Cosmos DB charged a sink's writes",
            families.request_units.clone(),
        );
        registry.register(
            "messaging_cosmos_throttled",
            "Writes Cosmos DB answered with 429 (request rate too large)",
            families.throttled.clone(),
        );
        families
    }
}

/// What a write request's answer was, as counted.
#[derive(Clone, Copy)]
pub(crate) enum AnswerClass {
    Success,
    ClientError,
    ServerError,
    /// No answer: the request did not reach Cosmos DB or timed out.
    Transport,
}

/// One Cosmos DB channel's handles, looked up when it starts.
#[derive(Clone)]
pub(crate) struct CosmosMetrics {
    writes: [Counter; 4],
    request_units: Counter<f64, AtomicU64>,
    throttled: Counter,
}

impl CosmosMetrics {
    pub(super) fn new(families: &CosmosFamilies, channel: &str) -> Self {
        let write = |class: &str| {
            families.writes.get_or_create_owned(&WriteLabels {
                channel: channel.to_owned(),
                status_class: class.to_owned(),
            })
        };
        let labels = ChannelLabels {
            channel: channel.to_owned(),
        };
        Self {
            writes: [write("2xx"), write("4xx"), write("5xx"), write("transport")],
            request_units: families.request_units.get_or_create_owned(&labels),
            throttled: families.throttled.get_or_create_owned(&labels),
        }
    }

    /// A write request was answered (or not), costing `request_units` (0 when unknown).
    pub(crate) fn answered(&self, class: AnswerClass, throttled: bool, request_units: f64) {
        self.writes[class as usize].inc();
        if throttled {
            self.throttled.inc();
        }
        if request_units > 0.0 {
            self.request_units.inc_by(request_units);
        }
    }
}
