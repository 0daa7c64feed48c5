//! Prometheus metrics: one registry per application, handles looked up once per channel, and
//! the OpenMetrics text served at `/metrics` on the health port.
//!
//! Built on `prometheus-client` (the Prometheus project's own crate): there is no global
//! registry, so two applications in one process (tests) keep their numbers apart. A channel
//! takes its handles (counters, gauges, histograms) from the families when it starts; recording
//! a record then touches atomics only, never a family's lock.

#[cfg(feature = "cosmos")]
mod cosmos;
mod duration_histogram;
mod health_gauges;
mod incoming;
mod labels;
mod outgoing;
mod registry;

#[cfg(feature = "cosmos")]
pub(crate) use cosmos::{AnswerClass, CosmosMetrics};
pub(crate) use incoming::ChannelMetrics;
pub(crate) use outgoing::SinkMetrics;
pub(crate) use registry::{Metrics, OPENMETRICS_CONTENT_TYPE};
