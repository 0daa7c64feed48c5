//! `endpoint = "embedded"`: the Cosmos DB SDK's in-memory emulator, in this process, so the
//! examples and tests run on a fresh machine with no account. It keeps nothing on disk and is
//! for development only, like the embedded Kafka cluster.
//!
//! The emulator is the SDK driver's own (`azure_data_cosmos_driver`'s in-memory emulator, a
//! feature its authors mark internal and unstable: this crate pins the driver's version
//! exactly). Requests go through the SDK's whole pipeline; only the HTTP exchange is replaced.

use std::sync::{Arc, OnceLock};

use azure_core::credentials::Secret;
use azure_data_cosmos::fault_injection::FaultInjectionRule;
use azure_data_cosmos::options::Region;
use azure_data_cosmos::{AccountReference, CosmosClient, CosmosRuntimeBuilder, RoutingStrategy};
use azure_data_cosmos_driver::in_memory_emulator::{
    InMemoryEmulatorHttpClient, VirtualAccountConfig, VirtualRegion,
};

use super::connect::sink_operation_options;

/// The emulated account's gateway address; nothing listens there, no request leaves the process.
const ENDPOINT: &str = "https://embedded.emulator.local";
/// Any key is accepted; the SDK wants valid base64.
const KEY: &str = "ZW1iZWRkZWQtY29zbW9zLWRi";

/// An in-memory Cosmos DB account. Clones share the same documents.
///
/// Channels with `endpoint = "embedded"` write to the process-wide one ([`EmbeddedCosmos::shared`])
/// unless the application was given its own with
/// [`AppBuilder::embedded_cosmos`](crate::AppBuilder::embedded_cosmos), as tests do to keep
/// their documents apart and to inject faults.
#[derive(Clone)]
pub struct EmbeddedCosmos {
    emulator: Arc<InMemoryEmulatorHttpClient>,
    fault_rules: Vec<Arc<FaultInjectionRule>>,
}

impl Default for EmbeddedCosmos {
    fn default() -> Self {
        Self::new()
    }
}

impl EmbeddedCosmos {
    /// A new, empty account.
    pub fn new() -> Self {
        let region = VirtualRegion::new("East US", ENDPOINT.parse().expect("a valid URL"));
        let config =
            VirtualAccountConfig::new(vec![region]).expect("one region is a valid account");
        Self {
            emulator: Arc::new(InMemoryEmulatorHttpClient::new(config)),
            fault_rules: Vec::new(),
        }
    }

    /// The process-wide account that `endpoint = "embedded"` means by default.
    pub fn shared() -> Self {
        static SHARED: OnceLock<EmbeddedCosmos> = OnceLock::new();
        SHARED.get_or_init(EmbeddedCosmos::new).clone()
    }

    /// The same account, with the SDK's fault-injection rules applied to the sinks' requests
    /// (enable and disable a rule while the application runs to start and end a fault). The
    /// clients of [`client`](Self::client) see no faults.
    pub fn with_fault_rules(&self, rules: Vec<Arc<FaultInjectionRule>>) -> Self {
        Self {
            emulator: self.emulator.clone(),
            fault_rules: rules,
        }
    }

    /// An SDK client of this account, to read what the sinks wrote.
    pub async fn client(&self) -> azure_data_cosmos::Result<CosmosClient> {
        self.build_client(Vec::new(), KEY).await
    }

    /// The client a sink writes with: the fault rules applied, the SDK's own retries off (the
    /// sink retries), signing with the channel's key when one is set (the emulator accepts any
    /// key), so that the key takes the same path through the SDK as with a real account.
    pub(crate) async fn sink_client(
        &self,
        key: Option<&str>,
    ) -> azure_data_cosmos::Result<CosmosClient> {
        self.build_client(self.fault_rules.clone(), key.unwrap_or(KEY))
            .await
    }

    async fn build_client(
        &self,
        fault_rules: Vec<Arc<FaultInjectionRule>>,
        key: &str,
    ) -> azure_data_cosmos::Result<CosmosClient> {
        let runtime =
            CosmosRuntimeBuilder::from(self.emulator.runtime_builder_with_fault_rules(fault_rules))
                .with_default_operation_options(sink_operation_options())
                .build()
                .await?;
        CosmosClient::builder()
            .with_runtime(runtime)
            .build(
                AccountReference::with_authentication_key(
                    ENDPOINT.parse().expect("a valid URL"),
                    Secret::new(key.to_owned()),
                ),
                RoutingStrategy::ProximityTo(Region::EAST_US),
            )
            .await
    }
}
