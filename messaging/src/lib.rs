//! Reactive messaging for Rust.
//!
//! Annotate async functions with [`#[incoming]`](incoming) and [`#[outgoing]`](outgoing); the
//! library wires them to Kafka, propagates acknowledgements from sink to source, commits offsets
//! at least once, retries a failed record with backoff unless its error says that cannot help
//! ([`Permanent`], [`Classify`]), then applies the channel's failure strategy (`fail`, `ignore`,
//! `dead-letter-queue`), and reports liveness and readiness at `/health` and Prometheus metrics
//! at `/metrics`.
//!
//! ```no_run
//! use messaging::prelude::*;
//!
//! #[derive(Debug, Deserialize)]
//! struct Movie { title: String }
//!
//! #[derive(Debug, thiserror::Error)]
//! #[error("I don't like movies with ' in their title: {0}")]
//! struct BadMovie(String);
//!
//! #[incoming("movies", failure_strategy = "dead-letter-queue")]
//! async fn consume(movie: Movie) -> Result<(), BadMovie> {
//!     if movie.title.contains('\'') { return Err(BadMovie(movie.title)); } // nack -> DLQ
//!     Ok(())                                                                // ack -> commit
//! }
//!
//! #[tokio::main]
//! async fn main() -> messaging::Result<()> {
//!     messaging::App::from_env()?.run().await
//! }
//! ```
//!
//! Everything the attributes do is available by hand through [`App::builder`].

mod app;
mod codec;
mod commit;
mod concurrency;
mod config;
mod connectors;
mod emitter;
mod error;
mod failure;
mod handler;
pub mod health;
mod intake_gate;
mod message;
mod metadata;
mod metrics;
mod outgoing;
mod retry;
mod settle;

pub use app::{App, AppBuilder, RunningApp};
pub use codec::DECODE_FAILURE;
pub use commit::CommitStrategy;
pub use concurrency::HeldRecords;
pub use config::{ConfigError, Source};
#[cfg(feature = "cosmos-embedded")]
pub use connectors::cosmos::EmbeddedCosmos;
pub use connectors::kafka::{EmbeddedKafka, Header, KafkaMetadata, KafkaOutgoingMetadata};
pub use connectors::memory::{InMemorySink, InMemorySource};
pub use emitter::Emitter;
pub use error::{Error, Result};
pub use failure::{Failure, FailureStrategy};
pub use handler::{IntoProcessor, IntoSubscriber, ProcessorResult, SubscriberResult};
pub use message::Message;
pub use messaging_macros::{incoming, outgoing};
pub use metadata::Metadata;
pub use retry::{Attempt, Classify, ErrorClass, Permanent, Transient};

/// The Azure Cosmos DB SDK the `cosmos` connector is built on, for reading what a sink wrote
/// (and, with `cosmos-embedded`, for the fault-injection rules of [`EmbeddedCosmos`]).
#[cfg(feature = "cosmos")]
pub use azure_data_cosmos as cosmos_sdk;

/// What a handler module needs: the attributes, the message types and serde's derives.
pub mod prelude {
    pub use crate::{
        incoming, outgoing, App, Emitter, Failure, KafkaMetadata, KafkaOutgoingMetadata, Message,
        Metadata,
    };
    pub use serde::{Deserialize, Serialize};
}

/// Used by the code `#[incoming]` generates; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use inventory;

    /// A handler found by `#[incoming]`: a function that adds it to the builder.
    pub struct Registration {
        pub register: fn(crate::AppBuilder) -> crate::AppBuilder,
    }

    inventory::collect!(Registration);
}
