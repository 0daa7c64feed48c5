//! The Azure Cosmos DB sink (`connector = cosmos`, outgoing only), on the official SDK
//! (`azure_data_cosmos`): see `sink.rs` for the write path, `answer.rs` for what each answer
//! means, `outage.rs` for pausing the incoming side, `document.rs` for ids and partition keys,
//! `document_body.rs` for what a write sends.

mod access;
mod answer;
mod connect;
mod document;
mod document_body;
mod document_order;
#[cfg(feature = "cosmos-embedded")]
mod embedded;
mod idle_probe;
mod outage;
mod sink;
#[cfg(all(test, feature = "cosmos-embedded"))]
mod sink_on_emulator;
mod top_level_fields;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio::sync::Semaphore;

pub(crate) use access::CosmosAccess;
#[cfg(feature = "cosmos-embedded")]
pub use embedded::EmbeddedCosmos;

use crate::config::{CosmosSettings, OutgoingSettings, WriteStrategy};
use crate::error::Error;
use crate::health::HealthRegistry;
use crate::metrics::Metrics;
use document::DocumentShape;
use document_order::DocumentOrder;
use outage::Outage;
pub(crate) use sink::CosmosSink;

/// Connects an outgoing channel's sink: fails, naming the key, when the account, the key, the
/// database or the container is not what the configuration says.
pub(crate) async fn create_sink(
    settings: &OutgoingSettings,
    cosmos: &CosmosSettings,
    health: &HealthRegistry,
    metrics: &Metrics,
    access: &CosmosAccess,
) -> Result<CosmosSink, Error> {
    let channel = &settings.channel;
    let (container, partition_key_paths) = connect::connect(channel, cosmos, access).await?;
    if cosmos.delete_on_tombstone && partition_key_paths != ["/id"] {
        // Refused here rather than dead-lettering every tombstone the channel will see.
        return Err(Error::Channel {
            channel: channel.clone(),
            problem: format!(
                "{} = true needs a container partitioned by /id: a tombstone carries no document to read the partition key from, and container {} is partitioned by {}",
                cosmos.keys.delete_on_tombstone,
                cosmos.container,
                partition_key_paths.join(",")
            ),
        });
    }
    tracing::info!(
        channel,
        database = %cosmos.database,
        container = %cosmos.container,
        partition_key = %partition_key_paths.join(","),
        "Cosmos DB sink connected"
    );
    let sink_metrics = metrics.outgoing_channel(channel);
    Ok(CosmosSink::new(sink::Shared {
        channel: channel.clone(),
        container,
        shape: DocumentShape::new(
            cosmos.id.clone(),
            cosmos.write == WriteStrategy::Create,
            cosmos.delete_on_tombstone,
            partition_key_paths,
        ),
        retry: settings.retry.clone(),
        on_outage: cosmos.on_outage,
        outage: Outage::new(
            channel,
            health.clone(),
            sink_metrics.clone(),
            cosmos.outage_threshold,
        ),
        health: health.clone(),
        metrics: sink_metrics,
        cosmos_metrics: metrics.cosmos_channel(channel),
        room: Arc::new(Semaphore::new(sink::room_for(cosmos.max_concurrency))),
        requests: Semaphore::new(cosmos.max_concurrency),
        max_concurrency: cosmos.max_concurrency,
        order: Arc::new(DocumentOrder::default()),
        failed: AtomicBool::new(false),
    }))
}
