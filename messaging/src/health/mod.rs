//! Per-channel liveness, readiness and startup, and the HTTP endpoints that report them.
//!
//! Liveness goes DOWN for good once a channel records a failure (a `fail` nack, a stuck
//! commit, a dead dead-letter writer): the orchestrator should restart the process.
//! Readiness is DOWN while an inbound channel has not joined its group (or was stopped) and
//! while an outbound channel cannot reach its broker. Startup is UP once every channel started.

mod registry;
mod report;
mod server;

pub(crate) use registry::Aspect;
pub use registry::{Check, HealthRegistry};
pub use report::{CheckReport, HealthReport, Status};
pub(crate) use server::{HealthPort, HealthServer};
