//! Connecting a sink at startup: the client for the endpoint, the container checked (and its
//! partition key paths read from its definition), every problem named by its key.

use azure_core::credentials::Secret;
use azure_data_cosmos::clients::ContainerClient;
use azure_data_cosmos::models::ContainerProperties;
use azure_data_cosmos::options::{
    BinaryEncodingOptions, ConnectionPoolOptions, OperationOptions, PartitionFailoverOptions,
    PartitionTopologyCacheMode, Region, ServerCertificateValidation, ThrottlingRetryOptions,
};
use azure_data_cosmos::{
    AccountEndpoint, AccountReference, CosmosClient, CosmosClientBuilder, CosmosError,
    CosmosRuntime, RoutingStrategy,
};

use crate::config::{CosmosEndpoint, CosmosSettings};
use crate::error::Error;

use super::CosmosAccess;
#[cfg(feature = "cosmos-embedded")]
use super::EmbeddedCosmos;

/// The SDK's options for a sink's requests. Its own retries are off: throttling (by default
/// 9 retries, up to 30 s, per request) and the immediate retries of a 408, 500 or 503 (3 more
/// requests, measured on SDK 1.0.0). The sink's `retry.*` policy retries instead, after Cosmos
/// DB's `x-ms-retry-after-ms` or its backoff, so the two layers do not multiply and an outage
/// shows after `outage.threshold` requests, not four times as many. The same for a 404/1002
/// (a replica behind the session), which the SDK would retry in another region. Only a 449
/// the SDK still retries itself, in the same region for up to 30 s of waits a request: no
/// option turns that off in 1.0.0 (see the README on what it means for the age watch).
pub(crate) fn sink_operation_options() -> OperationOptions {
    let mut throttling = ThrottlingRetryOptions::default();
    throttling.max_retry_count = Some(0);
    let mut options = OperationOptions::default();
    options.throttling_retry_options = Some(throttling);
    options.max_failover_retry_count = Some(0);
    options.max_session_retry_count = Some(0);
    options
}

/// The container to write to and its partition key paths.
pub(crate) async fn connect(
    channel: &str,
    settings: &CosmosSettings,
    access: &CosmosAccess,
) -> Result<(ContainerClient, Vec<String>), Error> {
    let problem = |problem: String| Error::Channel {
        channel: channel.to_owned(),
        problem,
    };
    let keys = &settings.keys;
    let client = match &settings.endpoint {
        CosmosEndpoint::Embedded => {
            #[cfg(feature = "cosmos-embedded")]
            {
                embedded_client(channel, settings, access.embedded.as_ref())
                    .await
                    .map_err(|error| {
                        problem(format!(
                            "the embedded Cosmos DB emulator did not start: {error}"
                        ))
                    })?
            }
            #[cfg(not(feature = "cosmos-embedded"))]
            {
                return Err(problem(format!(
                    "{} = \"embedded\" needs the messaging crate's `cosmos-embedded` feature",
                    keys.endpoint
                )));
            }
        }
        CosmosEndpoint::Url(url) => account_client(channel, settings, access, url).await?,
    };
    let database = client.database_client(&settings.database);
    let container = match database.container_client(&settings.container, None).await {
        Ok(container) => container,
        Err(error) if error.status().is_not_found() && settings.create_if_missing => {
            create_missing(&client, settings).await.map_err(|error| {
                problem(format!(
                    "create-if-missing could not create the database or container: {}",
                    error
                ))
            })?;
            client
                .database_client(&settings.database)
                .container_client(&settings.container, None)
                .await
                .map_err(|error| problem(error.to_string()))?
        }
        Err(error) if error.status().is_not_found() => {
            // Which one is missing: the database, or only the container.
            let database_missing = database
                .read(None)
                .await
                .is_err_and(|error| error.status().is_not_found());
            return Err(problem(if database_missing {
                format!(
                    "the database {} ({}) does not exist; create it and the container {} ({}), or set create-if-missing = true (for development)",
                    settings.database, keys.database, settings.container, keys.container
                )
            } else {
                format!(
                    "the container {} ({}) of database {} ({}) does not exist; create it, or set create-if-missing = true (for development)",
                    settings.container, keys.container, settings.database, keys.database
                )
            }));
        }
        Err(error) => {
            return Err(problem(format!(
                "cannot read the container {} ({}): {}",
                settings.container,
                keys.container,
                describe_connect(&error, settings)
            )))
        }
    };
    let properties: ContainerProperties = container
        .read(None)
        .await
        .and_then(|response| response.into_model())
        .map_err(|error| {
            problem(format!(
                "cannot read the container's definition: {}",
                describe_connect(&error, settings)
            ))
        })?;
    let paths = properties
        .partition_key
        .paths()
        .iter()
        .map(|path| path.to_string())
        .collect();
    Ok((container, paths))
}

/// A client of the account at `url`, with the emulator's settings when it is on this machine.
async fn account_client(
    channel: &str,
    settings: &CosmosSettings,
    access: &CosmosAccess,
    url: &str,
) -> Result<CosmosClient, Error> {
    let problem = |problem: String| Error::Channel {
        channel: channel.to_owned(),
        problem,
    };
    let keys = &settings.keys;
    let endpoint: AccountEndpoint = url.parse().map_err(|_| {
        problem(format!(
            "{} is not a Cosmos DB account URL (e.g. https://myaccount.documents.azure.com:443/), nor \"embedded\"",
            keys.endpoint
        ))
    })?;
    let local = is_local(&endpoint);
    // A configured key wins; `App::build` made sure there is one or the other.
    let account = match (&settings.key, &access.credential) {
        (Some(key), _) => AccountReference::with_authentication_key(
            endpoint,
            Secret::new(key.expose().to_owned()),
        ),
        (None, Some(credential)) => {
            tracing::info!(channel, "Cosmos DB requests signed with the application's token credential (Microsoft Entra ID)");
            AccountReference::with_credential(endpoint, credential.clone())
        }
        // `App::build` refuses this; said again rather than assumed.
        (None, None) => {
            return Err(problem(format!(
                "{} is not set and the application has no token credential (AppBuilder::cosmos_credential)",
                keys.key
            )))
        }
    };
    let mut builder =
        CosmosClient::builder().with_default_operation_options(sink_operation_options());
    if local {
        tracing::info!(
            channel,
            endpoint = %url,
            "Cosmos DB endpoint on this machine: emulator settings (its self-signed certificate accepted, HTTP/1.1, text JSON, partition topology read lazily)"
        );
        builder = with_emulator_settings(builder).await.map_err(|error| {
            problem(format!(
                "cannot set up the Cosmos DB client for the emulator at {} ({url}): {error}",
                keys.endpoint
            ))
        })?;
    }
    builder
        .build(account, RoutingStrategy::ProximityTo(Region::EAST_US))
        .await
        .map_err(|error| {
            problem(format!(
                "cannot connect to the Cosmos DB account at {} ({url}): {}",
                keys.endpoint,
                describe_connect(&error, settings)
            ))
        })
}

/// Whether an account URL points at this machine (`localhost` or a loopback address): there is
/// no Cosmos DB account there, only an emulator.
fn is_local(endpoint: &AccountEndpoint) -> bool {
    let Some(host) = endpoint.url().host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

/// What a Cosmos DB emulator on this machine needs of the SDK, which otherwise speaks to it as
/// to an account in Azure. Each was needed by `@vercel/cosmosdb-server` (the emulator of the
/// end-to-end tests, `tests/e2e_cosmos.rs`): without any one of them the sink cannot start or
/// cannot write.
///
/// - Its self-signed certificate is accepted (`RequiredUnlessEmulator`: only for the hosts the
///   SDK knows for an emulator, `localhost`, `127.0.0.1` and `::1`, or the one named by
///   `AZURE_COSMOS_EMULATOR_HOST`; any other address keeps validating the certificate).
/// - HTTP/1.1: the connection fails with HTTP/2 allowed.
/// - The partition topology read when an operation first needs it, not when a container is
///   resolved: the emulator's partition key ranges do not parse (numeric ids), so resolving a
///   container fails. Set here, so `AZURE_COSMOS_PARTITION_TOPOLOGY_CACHE_MODE` is not needed.
/// - Documents sent as text JSON: the emulator cannot read Cosmos DB's binary encoding (it
///   answers 500, and the sink would retry and pause).
///
/// Its own runtime, so the rest of the process keeps the SDK's defaults.
async fn with_emulator_settings(
    builder: CosmosClientBuilder,
) -> azure_data_cosmos::Result<CosmosClientBuilder> {
    let pool = ConnectionPoolOptions::builder()
        .with_server_certificate_validation(ServerCertificateValidation::RequiredUnlessEmulator)
        .with_is_http2_allowed(false)
        .build()?;
    let runtime = CosmosRuntime::builder()
        .with_connection_pool(pool)
        .build()
        .await?;
    let topology = PartitionFailoverOptions::builder()
        .with_partition_topology_cache_mode(PartitionTopologyCacheMode::Lazy)
        .build()?;
    Ok(builder
        .with_runtime(runtime)
        .with_partition_failover_options(topology)
        .with_binary_encoding_options(BinaryEncodingOptions::new().with_enabled(false)))
}

#[cfg(feature = "cosmos-embedded")]
async fn embedded_client(
    channel: &str,
    settings: &CosmosSettings,
    embedded: Option<&EmbeddedCosmos>,
) -> azure_data_cosmos::Result<CosmosClient> {
    let account = embedded.cloned().unwrap_or_else(EmbeddedCosmos::shared);
    tracing::warn!(
        channel,
        "Cosmos DB channel on the EMBEDDED in-memory emulator: documents live in this process only and are lost when it ends; for development and tests, never production"
    );
    let key = settings.key.as_ref().map(|key| key.expose());
    let client = account.sink_client(key).await?;
    create_missing(&client, settings).await?;
    Ok(client)
}

async fn create_missing(
    client: &CosmosClient,
    settings: &CosmosSettings,
) -> azure_data_cosmos::Result<()> {
    if let Err(error) = client.create_database(&settings.database, None).await {
        if !error.status().is_conflict() {
            return Err(error);
        }
    }
    let paths = settings
        .partition_key_paths
        .iter()
        .map(|path| std::borrow::Cow::Owned(path.clone()))
        .collect();
    let properties = ContainerProperties::new(
        settings.container.clone(),
        azure_data_cosmos::models::PartitionKeyDefinition::new(paths),
    );
    match client
        .database_client(&settings.database)
        .create_container(properties, None)
        .await
    {
        Err(error) if !error.status().is_conflict() => Err(error),
        _ => Ok(()),
    }
}

/// An SDK error as a startup problem (the SDK's messages carry no key), saying which key to
/// look at when the account refused the key.
fn describe_connect(error: &CosmosError, settings: &CosmosSettings) -> String {
    if !(error.status().is_unauthorized() || error.status().is_forbidden()) {
        return error.to_string();
    }
    match (&settings.endpoint, &settings.key) {
        (CosmosEndpoint::Url(_), None) => format!(
            "the account rejected the application's token credential (AppBuilder::cosmos_credential; its identity needs a Cosmos DB data-plane role on the account): {error}"
        ),
        _ => format!("the account rejected the key ({}): {error}", settings.keys.key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(url: &str) -> bool {
        is_local(&url.parse().expect("a URL"))
    }

    #[test]
    fn only_this_machine_gets_the_emulator_settings() {
        for url in [
            "https://localhost:8081/",
            "https://LocalHost:8081/",
            "https://127.0.0.1:18081/",
            "https://127.0.0.2:8081/",
            "https://[::1]:8081/",
        ] {
            assert!(local(url), "{url}");
        }
        for url in [
            "https://myaccount.documents.azure.com:443/",
            "https://localhost.example.com/",
            "https://10.0.0.1:8081/",
            "https://[2001:db8::1]:8081/",
        ] {
            assert!(!local(url), "{url}");
        }
    }
}
