//! What reaches Cosmos DB besides the configuration: a Microsoft Entra ID token credential
//! given in code (a credential is an object, not a string a key could hold), and a test's own
//! embedded emulator.

use std::sync::Arc;

use azure_core::credentials::TokenCredential;

#[cfg(feature = "cosmos-embedded")]
use super::EmbeddedCosmos;

#[derive(Clone, Default)]
pub(crate) struct CosmosAccess {
    /// Signs the requests of every account channel that has no `key`.
    pub(crate) credential: Option<Arc<dyn TokenCredential>>,
    /// Where `endpoint = "embedded"` writes, instead of the process-wide emulator.
    #[cfg(feature = "cosmos-embedded")]
    pub(crate) embedded: Option<EmbeddedCosmos>,
}
