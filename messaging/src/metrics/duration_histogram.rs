//! A histogram of durations that records with two atomic additions.
//!
//! `prometheus-client`'s own histogram takes a lock per observation; a channel observes every
//! record's processing time, so this one keeps a counter per bucket and the sum in whole
//! nanoseconds instead, and builds the cumulative buckets only when scraped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds of the buckets, in seconds: from half a millisecond (a cheap handler) to a
/// minute (a handler retrying against a slow downstream).
const BOUNDS_SECONDS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

#[derive(Clone, Debug, Default)]
pub(super) struct DurationHistogram {
    inner: Arc<Buckets>,
}

#[derive(Debug)]
struct Buckets {
    bounds_nanos: [u64; BOUNDS_SECONDS.len()],
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    counts: [AtomicU64; BOUNDS_SECONDS.len() + 1],
    /// Wraps after 2^64 ns, about 585 years of summed durations: months for a service
    /// handling a million one-millisecond records a second without a restart. Prometheus
    /// reads the wrap as a counter reset, so `rate()` of the sum stays right but for the one
    /// interval that holds the wrap.
    sum_nanos: AtomicU64,
}

impl Default for Buckets {
    fn default() -> Self {
        Self {
            bounds_nanos: BOUNDS_SECONDS.map(|bound| (bound * 1e9) as u64),
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

impl DurationHistogram {
    #[inline]
    pub(super) fn observe(&self, duration: Duration) {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        let bucket = self
            .inner
            .bounds_nanos
            .iter()
            .position(|bound| nanos <= *bound)
            .unwrap_or(BOUNDS_SECONDS.len());
        self.inner.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.inner.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl TypedMetric for DurationHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for DurationHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = BOUNDS_SECONDS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.inner.counts)
            .map(|(bound, count)| (bound, count.load(Ordering::Relaxed)))
            .collect();
        // The count is the buckets' total, so the two agree even while records are observed.
        let count = buckets.iter().map(|(_, count)| count).sum();
        let sum = self.inner.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram(
            sum,
            count,
            &buckets,
            None::<&HashMap<usize, Exemplar<NoLabelSet, f64>>>,
        )
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::{Registry, Unit};

    use super::*;

    #[test]
    fn durations_land_in_cumulative_buckets_with_their_sum_in_seconds() {
        let histogram = DurationHistogram::default();
        histogram.observe(Duration::from_micros(300));
        histogram.observe(Duration::from_millis(7));
        histogram.observe(Duration::from_secs(120));
        let mut registry = Registry::default();
        registry.register_with_unit("work", "w", Unit::Seconds, histogram);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(text.contains("work_seconds_count 3\n"), "{text}");
        assert!(text.contains("work_seconds_sum 120.0073\n"), "{text}");
        assert!(
            text.contains("work_seconds_bucket{le=\"0.0005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("work_seconds_bucket{le=\"0.01\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("work_seconds_bucket{le=\"60.0\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("work_seconds_bucket{le=\"+Inf\"} 3\n"),
            "{text}"
        );
    }
}
