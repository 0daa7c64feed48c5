//! The application: declare channels and handlers, validate the configuration, start the
//! connectors and the health server, and shut down gracefully.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::concurrency::HeldRecords;
use crate::config::{
    env_name, ConfigError, ConnectorKind, GlobalSettings, IncomingSettings, Layers,
    OutgoingSettings, Source, CONFIG_FILE_VARIABLE,
};
#[cfg(feature = "cosmos")]
use crate::connectors::cosmos::CosmosAccess;
use crate::connectors::kafka::{self, KafkaSource};
use crate::connectors::memory::{InMemorySink, InMemorySource, MemorySourceTask};
use crate::emitter::Emitter;
use crate::error::{Error, Result};
use crate::handler::{shape, BoxedHandler, IntoProcessor, IntoSubscriber};
use crate::health::{HealthPort, HealthRegistry, HealthServer};
use crate::metrics::Metrics;
use crate::outgoing::Sink;
use crate::retry::{Classifiers, Classify};

/// The default config file, read from the working directory when present.
const DEFAULT_CONFIG_FILE: &str = "messaging.toml";

/// A configured application, ready to [`start`](App::start) or [`run`](App::run).
pub struct App {
    global: GlobalSettings,
    incoming: Vec<(IncomingSettings, BoxedHandler, Option<String>)>,
    outgoing: Vec<OutgoingSettings>,
    classifiers: Arc<Classifiers>,
    #[cfg(feature = "cosmos")]
    cosmos: CosmosAccess,
}

/// Declares channels and where configuration comes from; see [`App::builder`].
#[derive(Default)]
pub struct AppBuilder {
    layers: Layers,
    incoming: Vec<(String, BoxedHandler, Option<String>)>,
    outgoing: Vec<String>,
    config_file: Option<PathBuf>,
    read_environment: bool,
    classifiers: Classifiers,
    #[cfg(feature = "cosmos")]
    cosmos: CosmosAccess,
    /// Keys two attributes set to different values (the first kept), each with the other
    /// value: handlers sharing an outgoing channel that disagree on its topic or connector.
    conflicting_attributes: Vec<(String, String)>,
}

impl App {
    /// An empty builder: no handlers, no environment, no config file until you add them.
    pub fn builder() -> AppBuilder {
        AppBuilder::default()
    }

    /// Every `#[incoming]` handler of the program, configured from the environment and the
    /// config file (`messaging.toml`, or the path in `MESSAGING_CONFIG_FILE`).
    pub fn from_env() -> Result<App> {
        App::builder().discover().environment().build()
    }

    /// Starts every channel and the health server, then serves until Ctrl-C or SIGTERM, and
    /// shuts down gracefully.
    pub async fn run(self) -> Result<()> {
        // Listening before the start: a SIGTERM while the channels start is a graceful
        // shutdown too, not the default action (killing the process).
        let signal = shutdown_signal();
        let running = self.start().await?;
        signal.await;
        running.shutdown().await;
        Ok(())
    }

    /// Starts every channel and the health server and returns at once.
    ///
    /// The health port is bound first: when it is taken, no consumer has joined a group yet.
    pub async fn start(self) -> Result<RunningApp> {
        let health_port = match &self.global.health_port {
            Some((port, setting)) => Some(
                HealthPort::bind(*port)
                    .await
                    .map_err(|error| GlobalSettings::unusable_health_port(setting, &error))?,
            ),
            None => None,
        };
        let health = HealthRegistry::default();
        let metrics = Metrics::new(&health);
        let mut running = RunningApp {
            health: health.clone(),
            metrics: metrics.clone(),
            health_server: None,
            kafka_sources: Vec::new(),
            memory_sources: Vec::new(),
            sinks: HashMap::new(),
            in_memory_sources: HashMap::new(),
            in_memory_sinks: HashMap::new(),
            global: self.global.clone(),
        };
        if let Err(error) = running.start_channels(self).await {
            running.shutdown().await;
            return Err(error);
        }
        running.health_server = health_port.map(|port| HealthServer::serve(port, health, metrics));
        Ok(running)
    }
}

impl AppBuilder {
    /// Adds a subscriber on an incoming channel.
    pub fn incoming<S>(mut self, channel: &str, handler: impl IntoSubscriber<S>) -> Self {
        self.incoming
            .push((channel.to_owned(), handler.into_handler(), None));
        self
    }

    /// Adds a processor: reads `incoming`, sends what it returns to `outgoing`.
    pub fn processor<S>(
        mut self,
        incoming: &str,
        outgoing: &str,
        handler: impl IntoProcessor<S>,
    ) -> Self {
        self.incoming.push((
            incoming.to_owned(),
            handler.into_handler(),
            Some(outgoing.to_owned()),
        ));
        self.outgoing(outgoing)
    }

    /// `processor` for a function written to return `Result<U, E>`, which the attributes call:
    /// with an `E` that is also `Serialize` (`String`) the plain shape fits as well, and the
    /// compiler could not choose (see `messaging-macros`' `Returns`).
    #[doc(hidden)]
    pub fn __processor_returning_result<P>(
        self,
        incoming: &str,
        outgoing: &str,
        handler: impl IntoProcessor<(P, shape::Fallible)>,
    ) -> Self {
        self.processor(incoming, outgoing, handler)
    }

    /// As [`Self::__processor_returning_result`], for `Result<Message<U>, E>`.
    #[doc(hidden)]
    pub fn __processor_returning_result_of_message<P>(
        self,
        incoming: &str,
        outgoing: &str,
        handler: impl IntoProcessor<(P, shape::FallibleMessage)>,
    ) -> Self {
        self.processor(incoming, outgoing, handler)
    }

    /// Declares an outgoing channel, e.g. for an [`Emitter`].
    pub fn outgoing(mut self, channel: &str) -> Self {
        if !self.outgoing.iter().any(|known| known == channel) {
            self.outgoing.push(channel.to_owned());
        }
        self
    }

    /// Sets a configuration key in code. The environment and the config file override it.
    pub fn set(mut self, key: &str, value: impl ToString) -> Self {
        self.layers.code.insert(key.to_owned(), value.to_string());
        self
    }

    /// Sets a key as a handler attribute would: below `set`, the environment and the file.
    /// Two attributes giving one key different values (processors sharing an outgoing channel,
    /// each naming its topic) are an error at `build`: which one won would depend on the order
    /// the linker put the handlers in.
    pub fn attribute(mut self, key: &str, value: &str) -> Self {
        match self.layers.attributes.get(key) {
            Some(first) if first != value => {
                self.conflicting_attributes
                    .push((key.to_owned(), value.to_owned()));
            }
            Some(_) => {}
            None => {
                self.layers
                    .attributes
                    .insert(key.to_owned(), value.to_owned());
            }
        }
        self
    }

    /// Reads this config file (TOML); it must exist.
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config_file = Some(path.into());
        self
    }

    /// Reads configuration from environment variables (`MESSAGING_*`, `KAFKA_BOOTSTRAP_SERVERS`)
    /// and the config file (`MESSAGING_CONFIG_FILE`, else `messaging.toml` when present).
    pub fn environment(mut self) -> Self {
        self.read_environment = true;
        self
    }

    /// Lets errors of type `E` say whether retrying them can help ([`Classify`]), wherever
    /// they appear in a failed handler's error and its `source()` chain. Errors of types not
    /// registered, and not wrapped in [`Permanent`](crate::Permanent), are retried.
    pub fn classify<E>(mut self) -> Self
    where
        E: Classify + StdError + Send + Sync + 'static,
    {
        self.classifiers.register::<E>();
        self
    }

    /// The in-memory Cosmos DB account that channels with `endpoint = "embedded"` write to,
    /// instead of the process-wide [`EmbeddedCosmos::shared`](crate::EmbeddedCosmos::shared):
    /// a test's own, to read its documents back or to inject faults.
    #[cfg(feature = "cosmos-embedded")]
    pub fn embedded_cosmos(mut self, account: crate::EmbeddedCosmos) -> Self {
        self.cosmos.embedded = Some(account);
        self
    }

    /// The Microsoft Entra ID credential that signs the requests of every Cosmos DB channel with
    /// an account `endpoint` and no `key`; a channel with a `key` keeps using its key. Any
    /// `azure_core` token credential will do, e.g. `azure_identity`'s
    /// `ManagedIdentityCredential::new(None)?` in Azure or `DeveloperToolsCredential::new(None)?`
    /// on a developer's machine. The identity needs a Cosmos DB data-plane role on the account
    /// (e.g. "Cosmos DB Built-in Data Contributor").
    #[cfg(feature = "cosmos")]
    pub fn cosmos_credential(
        mut self,
        credential: Arc<dyn azure_core::credentials::TokenCredential>,
    ) -> Self {
        self.cosmos.credential = Some(credential);
        self
    }

    /// Adds every handler annotated with `#[incoming]` in the program.
    pub fn discover(mut self) -> Self {
        for registration in inventory::iter::<crate::__private::Registration> {
            self = (registration.register)(self);
        }
        self
    }

    /// Validates the configuration of every channel, and rejects keys and `MESSAGING_*` variables
    /// that name nothing (see `messaging.config.unknown-keys`); no connection is made yet.
    /// Channel names take ASCII letters, digits, `.`, `_` and `-`, as in the attributes, and two
    /// channels of one direction may not differ only where their variable names cannot
    /// (`orders-db`, `orders_db`); an incoming and an outgoing channel may not share a name
    /// (health and metrics know a channel by its name).
    pub fn build(mut self) -> Result<App> {
        if self.read_environment {
            self.layers.environment = crate::config::read_variables(std::env::vars_os())?;
        }
        let explicit_file = self.config_file.clone().or_else(|| {
            self.layers
                .environment
                .get(CONFIG_FILE_VARIABLE)
                .map(PathBuf::from)
        });
        let file = match explicit_file {
            Some(path) => Some(path),
            None => Some(PathBuf::from(DEFAULT_CONFIG_FILE))
                .filter(|path| self.read_environment && path.exists()),
        };
        if let Some(path) = file {
            let entries = crate::config::read_file(&path)?;
            self.layers.file = Some((path, entries));
        }

        if let Some((key, second)) = self.conflicting_attributes.iter().find(|(key, _)| {
            // The code, the file or the environment setting it decides, whatever the attributes say.
            self.layers
                .get(key)
                .is_some_and(|setting| setting.source == Source::Attribute)
        }) {
            return Err(Error::Config(ConfigError::conflicting_attributes(
                key,
                &self.layers.attributes[key],
                second,
            )));
        }
        let incoming_names: Vec<String> = self
            .incoming
            .iter()
            .map(|(channel, _, _)| channel.clone())
            .collect();
        check_channel_names("incoming", &incoming_names)?;
        check_channel_names("outgoing", &self.outgoing)?;
        for (index, name) in incoming_names.iter().enumerate() {
            if incoming_names[..index].contains(name) {
                return Err(Error::Channel {
                    channel: name.clone(),
                    problem:
                        "two handlers consume this incoming channel; give each its own channel"
                            .into(),
                });
            }
        }
        if let Some(name) = incoming_names
            .iter()
            .find(|name| self.outgoing.contains(name))
        {
            // One entry of /health and one `channel` label for two channels: the outgoing
            // side's start would make a consumer without its partitions look ready, and each
            // side's failure would be the other's too.
            return Err(Error::Channel {
                channel: name.clone(),
                problem: "an incoming and an outgoing channel both take this name, and health and metrics know a channel by its name alone; rename one of them (to keep its topic, set `messaging.<incoming|outgoing>.<new name>.topic`)"
                    .into(),
            });
        }
        crate::config::check_unknown_keys(&self.layers, &incoming_names, &self.outgoing)?;

        let global = GlobalSettings::resolve(&self.layers)?;
        let outgoing = self
            .outgoing
            .iter()
            .map(|channel| OutgoingSettings::resolve(&self.layers, channel, &self.outgoing))
            .collect::<Result<Vec<_>, ConfigError>>()?;
        #[cfg(feature = "cosmos")]
        let has_token_credential = self.cosmos.credential.is_some();
        #[cfg(not(feature = "cosmos"))]
        let has_token_credential = false;
        for cosmos in outgoing
            .iter()
            .filter_map(|settings| settings.cosmos.as_ref())
        {
            cosmos.require_authentication(has_token_credential)?;
        }
        let incoming = self
            .incoming
            .into_iter()
            .map(|(channel, handler, out)| {
                Ok((
                    IncomingSettings::resolve(&self.layers, &channel, &incoming_names)?,
                    handler,
                    out,
                ))
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let incoming_settings: Vec<&IncomingSettings> =
            incoming.iter().map(|(settings, _, _)| settings).collect();
        crate::config::check_retry_topics_are_their_own(&incoming_settings, &outgoing)?;
        Ok(App {
            global,
            incoming,
            outgoing,
            classifiers: Arc::new(self.classifiers),
            #[cfg(feature = "cosmos")]
            cosmos: self.cosmos,
        })
    }
}

/// Channel names added in code take what the attribute macros take. And no two channels of
/// one direction may share their environment variables (`orders-db` and `orders_db` both read
/// `MESSAGING_OUTGOING_ORDERS_DB_*`): each would take the other's settings.
fn check_channel_names(direction: &str, names: &[String]) -> Result<()> {
    let mut variables: HashMap<String, &str> = HashMap::new();
    for name in names {
        let refused = |problem: String| Error::Channel {
            channel: name.clone(),
            problem,
        };
        if name.is_empty() {
            return Err(refused("the channel name must not be empty".into()));
        }
        if let Some(character) = messaging_names::channel::first_refused(name) {
            return Err(refused(format!(
                "{character:?} is not allowed in a channel name; use only {}",
                messaging_names::channel::ACCEPTED
            )));
        }
        let prefix = env_name(&format!("messaging.{direction}.{name}."));
        match variables.get(prefix.as_str()) {
            Some(other) if other != name => {
                return Err(refused(format!(
                    "it and the {direction} channel `{other}` would both read the variables {prefix}*; rename one of them"
                )))
            }
            _ => {
                variables.insert(prefix, name);
            }
        }
    }
    Ok(())
}

/// A started application: channels consuming, health served.
pub struct RunningApp {
    health: HealthRegistry,
    /// This application's own: two applications in one process keep their numbers apart.
    metrics: Arc<Metrics>,
    health_server: Option<HealthServer>,
    kafka_sources: Vec<KafkaSource>,
    memory_sources: Vec<MemorySourceTask>,
    sinks: HashMap<String, Arc<dyn Sink>>,
    in_memory_sources: HashMap<String, InMemorySource>,
    in_memory_sinks: HashMap<String, InMemorySink>,
    global: GlobalSettings,
}

impl RunningApp {
    async fn start_channels(&mut self, app: App) -> Result<()> {
        for settings in &app.outgoing {
            if settings.health_enabled {
                self.health.register(&settings.channel);
            }
            let sink: Arc<dyn Sink> = match settings.connector {
                ConnectorKind::Kafka => Arc::new(kafka::create_sink(
                    settings,
                    &self.health,
                    self.metrics.outgoing_channel(&settings.channel),
                )?),
                ConnectorKind::Cosmos => self.cosmos_sink(settings, &app).await?,
                ConnectorKind::Memory => {
                    let sink = InMemorySink::default();
                    self.in_memory_sinks
                        .insert(settings.channel.clone(), sink.clone());
                    self.health.ready(&settings.channel);
                    Arc::new(sink)
                }
            };
            self.sinks.insert(settings.channel.clone(), sink);
        }
        for (settings, handler, outgoing) in app.incoming {
            if settings.health_enabled {
                self.health.register(&settings.channel);
            }
            let sink = outgoing.map(|channel| self.sinks[&channel].clone());
            match settings.connector {
                ConnectorKind::Kafka => {
                    kafka::create_sources(
                        &settings,
                        &app.global,
                        handler,
                        sink,
                        app.classifiers.clone(),
                        &self.health,
                        &self.metrics,
                        &mut self.kafka_sources,
                    )?;
                }
                ConnectorKind::Cosmos => {
                    unreachable!("the configuration rejects an incoming cosmos channel")
                }
                ConnectorKind::Memory => {
                    let metrics = self
                        .metrics
                        .incoming_channel(&settings.channel, &settings.topic);
                    let (task, source) =
                        MemorySourceTask::spawn(&settings, handler, sink, &self.health, metrics);
                    self.memory_sources.push(task);
                    self.in_memory_sources
                        .insert(settings.channel.clone(), source);
                }
            }
        }
        Ok(())
    }

    #[cfg(feature = "cosmos")]
    async fn cosmos_sink(&self, settings: &OutgoingSettings, app: &App) -> Result<Arc<dyn Sink>> {
        let cosmos = settings
            .cosmos
            .as_ref()
            .expect("a cosmos channel's settings are resolved with it");
        let sink = crate::connectors::cosmos::create_sink(
            settings,
            cosmos,
            &self.health,
            &self.metrics,
            &app.cosmos,
        )
        .await?;
        self.health.ready(&settings.channel);
        Ok(Arc::new(sink))
    }

    #[cfg(not(feature = "cosmos"))]
    async fn cosmos_sink(&self, settings: &OutgoingSettings, _app: &App) -> Result<Arc<dyn Sink>> {
        Err(Error::Channel {
            channel: settings.channel.clone(),
            problem: "connector = cosmos needs the messaging crate's `cosmos` feature (messaging = { features = [\"cosmos\"] })".into(),
        })
    }

    /// An emitter for a declared outgoing channel.
    pub fn emitter<T: Serialize + 'static>(&self, channel: &str) -> Result<Emitter<T>> {
        let sink = self.sinks.get(channel).ok_or_else(|| Error::Channel {
            channel: channel.to_owned(),
            problem: "no such outgoing channel; declare it with AppBuilder::outgoing".into(),
        })?;
        Ok(Emitter::new(channel, sink.clone()))
    }

    /// How many records a Kafka incoming channel's consumer loop holds now and at most (see
    /// `max-buffered-records`); `None` for a channel that is not a running Kafka one.
    pub fn held_records(&self, channel: &str) -> Option<HeldRecords> {
        self.kafka_sources
            .iter()
            .find_map(|source| source.held_records(channel))
    }

    /// The sending end of an incoming channel served by the memory connector.
    pub fn in_memory_source(&self, channel: &str) -> Result<InMemorySource> {
        self.in_memory_sources
            .get(channel)
            .cloned()
            .ok_or_else(|| not_in_memory(channel))
    }

    /// The receiving end of an outgoing channel served by the memory connector.
    pub fn in_memory_sink(&self, channel: &str) -> Result<InMemorySink> {
        self.in_memory_sinks
            .get(channel)
            .cloned()
            .ok_or_else(|| not_in_memory(channel))
    }

    /// The health of every channel, as the HTTP endpoints report it.
    pub fn health(&self) -> &HealthRegistry {
        &self.health
    }

    /// Where the health server listens, if it is enabled.
    pub fn health_address(&self) -> Option<SocketAddr> {
        self.health_server.as_ref().map(HealthServer::address)
    }

    /// Resolves on Ctrl-C or SIGTERM, listening from this call on, not from the first poll: a
    /// signal that comes between the call and the `.await` is not missed. Call it right after
    /// [`App::start`], before anything tells the outside world the application is ready (a
    /// SIGTERM before the call still has its default action, ending the process without a last
    /// commit). [`App::run`] listens before it starts the channels.
    ///
    /// A signal that cannot be listened for is logged, never a panic: without SIGTERM, Ctrl-C
    /// still shuts down gracefully (and an orchestrator's SIGKILL still stops the process).
    /// Like every tokio signal, it must be called inside the Tokio runtime (with its I/O
    /// driver, as `#[tokio::main]` has). The future does not borrow the application: it can be
    /// taken first and awaited after other work with it.
    pub fn wait_for_shutdown_signal(
        &self,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        shutdown_signal()
    }

    /// Stops fetching, lets in-flight messages finish (up to `messaging.shutdown.timeout.ms`),
    /// commits, flushes producers and stops the health server.
    pub async fn shutdown(mut self) {
        let deadline = std::time::Instant::now() + self.global.shutdown_timeout;
        // In-memory channels give their message in hand the share Kafka channels give theirs,
        // leaving the rest for the producers' flush.
        let records_deadline =
            std::time::Instant::now() + self.global.shutdown_timeout.mul_f64(kafka::RECORDS_SHARE);
        let sources = std::mem::take(&mut self.kafka_sources);
        let memory = std::mem::take(&mut self.memory_sources);
        // Side by side: each keeps to the one timeout.
        futures_util::future::join(
            futures_util::future::join_all(sources.into_iter().map(KafkaSource::shutdown)),
            futures_util::future::join_all(
                memory
                    .into_iter()
                    .map(|source| source.shutdown(records_deadline)),
            ),
        )
        .await;
        // The producers get what is left of the one timeout the whole shutdown keeps to.
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let flushes: Vec<_> = self.sinks.values().map(|sink| sink.flush(left)).collect();
        futures_util::future::join_all(flushes).await;
        if let Some(server) = self.health_server.take() {
            server.stop().await;
        }
        self.health.close();
        tracing::info!("shut down");
    }
}

/// An application dropped without [`RunningApp::shutdown`] still stops its broker probes, which
/// would otherwise keep its producers (their threads and connections) for the runtime's life.
impl Drop for RunningApp {
    fn drop(&mut self) {
        self.health.close();
    }
}

/// Resolves on Ctrl-C or SIGTERM, listening from the moment it is called rather than from its
/// first poll, so a signal that comes meanwhile is not missed (and does not kill the process).
/// A signal that cannot be listened for is logged; with neither, this never resolves (rather
/// than at once, which would shut the application down as soon as it started).
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let mut listeners: Vec<tokio::signal::unix::Signal> = {
        use tokio::signal::unix::{signal, SignalKind};
        [
            (SignalKind::terminate(), "SIGTERM"),
            (SignalKind::interrupt(), "Ctrl-C"),
        ]
        .into_iter()
        .filter_map(|(kind, name)| match signal(kind) {
            Ok(listener) => Some(listener),
            Err(error) => {
                tracing::error!(%error, "cannot listen for {name}; it will not shut down gracefully");
                None
            }
        })
        .collect()
    };
    // Listening from here too (`tokio::signal::ctrl_c()` would only from its first poll).
    #[cfg(not(unix))]
    let mut ctrl_c = tokio::signal::windows::ctrl_c()
        .map_err(|error| {
            tracing::error!(%error, "cannot listen for Ctrl-C; it will not shut down gracefully")
        })
        .ok();
    async move {
        #[cfg(unix)]
        {
            if listeners.is_empty() {
                std::future::pending::<()>().await;
            }
            let signals = listeners
                .iter_mut()
                .map(|listener| Box::pin(listener.recv()));
            futures_util::future::select_all(signals).await;
        }
        #[cfg(not(unix))]
        match ctrl_c.as_mut() {
            Some(listener) => {
                listener.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
        tracing::info!("shutdown requested");
    }
}

fn not_in_memory(channel: &str) -> Error {
    Error::Channel {
        channel: channel.to_owned(),
        problem: "not a channel served by the memory connector (connector = \"memory\")".into(),
    }
}
