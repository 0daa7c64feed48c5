//! The backoff schedule: how long to wait before each retry, and when to stop retrying.

use std::time::Duration;

use fastrand::Rng;

/// Exponential backoff with jitter, bounded by a number of retries and a total duration.
///
/// Built from a channel's `retry.*` keys (`config/retry.rs` reads them, with these defaults):
///
/// | key | default | meaning |
/// |---|---|---|
/// | `retry.max-retries` | 0 (off) | retries after the first attempt |
/// | `retry.initial-delay.ms` | 1000 | the wait before the first retry |
/// | `retry.max-delay.ms` | 30000 | no wait is longer, a retry-after included |
/// | `retry.multiplier` | 2.0 | each wait is the previous one times this |
/// | `retry.jitter` | 0.2 | each computed wait is scaled by a random factor in [1 - jitter, 1 + jitter] (then capped), so records that failed together do not retry together |
/// | `retry.max-duration.ms` | 180000 | counted from the start of the first attempt, no retry starts later; 0 or negative: no limit |
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RetryPolicy {
    max_retries: u32,
    initial_delay: Duration,
    max_delay: Duration,
    multiplier: f64,
    jitter: f64,
    max_duration: Option<Duration>,
}

impl RetryPolicy {
    /// The configuration has checked the values: `multiplier` is finite and >= 1, `jitter`
    /// lies in [0, 1], and `max_delay >= initial_delay`.
    pub(crate) fn new(
        max_retries: u32,
        initial_delay: Duration,
        max_delay: Duration,
        multiplier: f64,
        jitter: f64,
        max_duration: Option<Duration>,
    ) -> Self {
        Self {
            max_retries,
            initial_delay,
            max_delay,
            multiplier,
            jitter,
            max_duration,
        }
    }

    pub(crate) fn is_enabled(&self) -> bool {
        self.max_retries > 0
    }

    /// The first attempt and every retry.
    pub(crate) fn max_attempts(&self) -> u32 {
        self.max_retries.saturating_add(1)
    }

    /// How long to wait before attempt `attempts_made + 1`, or `None` when no retry is left:
    /// the retries are used up, or the wait would end more than `retry.max-duration.ms` after
    /// the first attempt started. A `retry_after` the error asked for replaces the computed
    /// backoff (without jitter: the server said when); both are capped by `retry.max-delay.ms`.
    pub(crate) fn delay_before_retry(
        &self,
        attempts_made: u32,
        since_first_attempt: Duration,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        self.delay_drawn_from(
            &mut Rng::new(),
            attempts_made,
            since_first_attempt,
            retry_after,
        )
    }

    /// The wait before probe number `probes_made + 1` during an outage: the same backoff,
    /// without a limit on the number or the total time (an outage lasts as long as it lasts).
    #[cfg_attr(not(feature = "cosmos"), allow(dead_code))]
    pub(crate) fn delay_before_probe(
        &self,
        probes_made: u32,
        retry_after: Option<Duration>,
    ) -> Duration {
        match retry_after {
            Some(asked) => asked.min(self.max_delay),
            None => self.backoff(probes_made.max(1), Rng::new().f64()),
        }
    }

    fn delay_drawn_from(
        &self,
        rng: &mut Rng,
        attempts_made: u32,
        since_first_attempt: Duration,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        if attempts_made > self.max_retries {
            return None;
        }
        let delay = match retry_after {
            Some(asked) => asked.min(self.max_delay),
            None => self.backoff(attempts_made, rng.f64()),
        };
        let ends = since_first_attempt.saturating_add(delay);
        match self.max_duration {
            Some(limit) if ends > limit => None,
            _ => Some(delay),
        }
    }

    /// The computed wait after `attempts_made` attempts, `draw` in [0, 1] picking where in the
    /// jitter's range it falls.
    fn backoff(&self, attempts_made: u32, draw: f64) -> Duration {
        let factor = 1.0 - self.jitter + 2.0 * self.jitter * draw;
        let nanos = self.unjittered_nanos(attempts_made) * factor;
        if nanos >= self.max_delay.as_nanos() as f64 {
            self.max_delay
        } else {
            Duration::from_nanos(nanos.round() as u64)
        }
    }

    /// `initial * multiplier^(attempts_made - 1)`, in nanoseconds; finite, so that a jitter
    /// factor of 0 yields 0 rather than NaN.
    fn unjittered_nanos(&self, attempts_made: u32) -> f64 {
        let exponent = i32::try_from(attempts_made.saturating_sub(1)).unwrap_or(i32::MAX);
        let nanos = self.initial_delay.as_nanos() as f64 * self.multiplier.powi(exponent);
        nanos.min(f64::MAX)
    }

    /// The longest the backoff can hold a record before the failure strategy applies: every
    /// retry's computed wait with the jitter at its top, capped by `retry.max-delay.ms`, in
    /// total at most `retry.max-duration.ms`. The attempts' own time is not in it, nor a
    /// retry-after longer than the computed wait (a server can stretch a wait to the cap).
    pub(crate) fn worst_case_to_failure_strategy(&self) -> Duration {
        let grows = self.multiplier > 1.0 && !self.initial_delay.is_zero();
        let within_limit = |total: Duration| self.max_duration.map_or(total, |l| total.min(l));
        let mut total = Duration::ZERO;
        for attempts_made in 1..=self.max_retries {
            let delay = self.backoff(attempts_made, 1.0);
            // Past a few hundred retries the sum is a bound, not a figure: take the cap for
            // the rest rather than add up billions of slowly growing waits.
            if delay == self.max_delay || !grows || attempts_made > 256 {
                let delay = if attempts_made > 256 {
                    self.max_delay
                } else {
                    delay
                };
                // Every later wait is this one again.
                let left = self.max_retries - attempts_made + 1;
                return within_limit(total.saturating_add(delay.saturating_mul(left)));
            }
            total = total.saturating_add(delay);
            if self.max_duration.is_some_and(|limit| total >= limit) {
                break;
            }
        }
        within_limit(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    /// 1 s doubling up to 5 s.
    fn doubling(max_retries: u32, jitter: f64, max_duration: Option<Duration>) -> RetryPolicy {
        RetryPolicy::new(max_retries, ms(1000), ms(5000), 2.0, jitter, max_duration)
    }

    #[test]
    fn without_jitter_the_schedule_is_exact_and_capped() {
        let policy = doubling(6, 0.0, None);
        let schedule: Vec<Option<Duration>> = (1..=7)
            .map(|attempts_made| policy.delay_before_retry(attempts_made, Duration::ZERO, None))
            .collect();
        assert_eq!(
            schedule,
            [
                Some(ms(1000)),
                Some(ms(2000)),
                Some(ms(4000)),
                Some(ms(5000)),
                Some(ms(5000)),
                Some(ms(5000)),
                None
            ]
        );
        assert_eq!(policy.max_attempts(), 7);
    }

    #[test]
    fn a_non_round_schedule_is_exact_to_the_millisecond() {
        let policy = RetryPolicy::new(3, ms(100), ms(1000), 1.5, 0.0, None);
        let schedule: Vec<Option<Duration>> = (1..=3)
            .map(|attempts_made| policy.delay_before_retry(attempts_made, Duration::ZERO, None))
            .collect();
        assert_eq!(schedule, [Some(ms(100)), Some(ms(150)), Some(ms(225))]);
    }

    #[test]
    fn no_retry_starts_after_the_max_duration() {
        let policy = doubling(10, 0.0, Some(ms(7000)));
        // Attempts take 100 ms each: the third wait (4 s) would end at 7.2 s.
        assert_eq!(policy.delay_before_retry(1, ms(100), None), Some(ms(1000)));
        assert_eq!(policy.delay_before_retry(2, ms(1200), None), Some(ms(2000)));
        assert_eq!(policy.delay_before_retry(3, ms(3200), None), None);
        assert_eq!(
            policy.delay_before_retry(3, ms(3000), None),
            Some(ms(4000)),
            "a wait that ends exactly at the limit is made"
        );
    }

    #[test]
    fn a_retry_after_replaces_the_backoff_capped_by_the_max_delay() {
        let policy = doubling(3, 0.5, Some(ms(10_000)));
        let mut rng = Rng::with_seed(7);
        assert_eq!(
            policy.delay_drawn_from(&mut rng, 1, Duration::ZERO, Some(ms(3000))),
            Some(ms(3000)),
            "neither the computed 1 s nor jittered"
        );
        assert_eq!(
            policy.delay_before_retry(2, Duration::ZERO, Some(ms(60_000))),
            Some(ms(5000))
        );
        assert_eq!(
            policy.delay_before_retry(4, Duration::ZERO, Some(ms(10))),
            None,
            "the retries are still counted"
        );
        assert_eq!(
            policy.delay_before_retry(1, ms(6000), Some(ms(5000))),
            None,
            "and the max duration still holds"
        );
    }

    #[test]
    fn jitter_stays_within_its_fraction_of_the_delay() {
        let policy = doubling(4, 0.2, None);
        let mut rng = Rng::with_seed(42);
        for (attempts_made, computed_ms) in [(1, 1000), (2, 2000), (3, 4000)] {
            let nanos: Vec<u128> = (0..1000)
                .map(|_| {
                    policy
                        .delay_drawn_from(&mut rng, attempts_made, Duration::ZERO, None)
                        .unwrap()
                        .as_nanos()
                })
                .collect();
            let (lowest, highest) = (nanos.iter().min().unwrap(), nanos.iter().max().unwrap());
            assert!(
                *lowest >= computed_ms * 800_000,
                "{lowest} ns for {computed_ms} ms"
            );
            assert!(
                *highest <= computed_ms * 1_200_000,
                "{highest} ns for {computed_ms} ms"
            );
            assert!(
                highest - lowest > computed_ms * 300_000,
                "the draws spread over the range: {lowest}..{highest} ns"
            );
        }
        for _ in 0..1000 {
            let capped = policy.delay_drawn_from(&mut rng, 4, Duration::ZERO, None);
            assert!(capped.unwrap() <= ms(5000), "{capped:?}");
        }
    }

    #[test]
    fn zero_retries_means_no_retry() {
        let policy = doubling(0, 0.0, None);
        assert!(!policy.is_enabled());
        assert_eq!(policy.max_attempts(), 1);
        assert_eq!(policy.delay_before_retry(1, Duration::ZERO, None), None);
        assert_eq!(policy.worst_case_to_failure_strategy(), Duration::ZERO);
    }

    #[test]
    fn a_huge_attempt_number_is_capped_not_overflowed() {
        let policy = RetryPolicy::new(u32::MAX, ms(1000), ms(5000), 2.0, 1.0, None);
        let mut rng = Rng::with_seed(1);
        let delay = policy.delay_drawn_from(&mut rng, u32::MAX, Duration::ZERO, None);
        assert!(delay.unwrap() <= ms(5000));
        assert_eq!(policy.backoff(u32::MAX, 0.0), Duration::ZERO);
    }

    #[test]
    fn worst_case_sums_the_top_of_each_jittered_wait() {
        let defaults = |max_retries, max_duration| {
            RetryPolicy::new(max_retries, ms(1000), ms(30_000), 2.0, 0.2, max_duration)
        };
        // 1.2 s + 2.4 s + 4.8 s
        assert_eq!(
            defaults(3, Some(ms(180_000))).worst_case_to_failure_strategy(),
            ms(8400)
        );
        assert_eq!(
            defaults(100, Some(ms(180_000))).worst_case_to_failure_strategy(),
            ms(180_000)
        );
        // 1.2 + 2.4 + 4.8 + 9.6 + 19.2 s, then 95 waits at the 30 s cap.
        assert_eq!(
            defaults(100, None).worst_case_to_failure_strategy(),
            ms(37_200 + 95 * 30_000)
        );
        let constant = RetryPolicy::new(u32::MAX, ms(500), ms(500), 1.0, 0.0, None);
        assert_eq!(
            constant.worst_case_to_failure_strategy(),
            ms(500).saturating_mul(u32::MAX)
        );
    }
}
