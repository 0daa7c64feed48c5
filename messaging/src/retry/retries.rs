//! The decision a retrying caller needs after a failed attempt: whether to try again, and after
//! how long. The consumer loop asks it for a handler's failure; a sink, for a failed write.

use std::sync::Arc;
use std::time::Duration;

use super::{Classifiers, ErrorClass, RetryPolicy};
use crate::failure::Failure;

/// A channel's `retry.*` policy together with the application's error classifiers.
pub(crate) struct Retries {
    policy: RetryPolicy,
    classifiers: Arc<Classifiers>,
}

impl Retries {
    pub(crate) fn new(policy: RetryPolicy, classifiers: Arc<Classifiers>) -> Self {
        Self {
            policy,
            classifiers,
        }
    }

    pub(crate) fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Whether the failure is permanent (a decode failure, a panic, or marked so): retrying
    /// it, in process or through retry topics, would fail the same way.
    pub(crate) fn is_permanent(&self, failure: &Failure) -> bool {
        matches!(self.classifiers.class_of(failure), ErrorClass::Permanent)
    }

    /// How long to wait before the next attempt after `failure` ended attempt `attempts_made`,
    /// `since_first_attempt` after the first began; `None` when the failure is permanent or the
    /// policy allows no further attempt (the failure strategy applies then).
    pub(crate) fn delay_after(
        &self,
        failure: &Failure,
        attempts_made: u32,
        since_first_attempt: Duration,
    ) -> Option<Duration> {
        if !self.policy.is_enabled() {
            return None;
        }
        match self.classifiers.class_of(failure) {
            ErrorClass::Permanent => None,
            ErrorClass::Transient { retry_after } => {
                self.policy
                    .delay_before_retry(attempts_made, since_first_attempt, retry_after)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::Permanent;

    fn retries(max_retries: u32) -> Retries {
        let policy = RetryPolicy::new(
            max_retries,
            Duration::from_millis(100),
            Duration::from_millis(1000),
            2.0,
            0.0,
            None,
        );
        Retries::new(policy, Arc::default())
    }

    #[test]
    fn a_transient_failure_waits_by_the_schedule_until_no_retry_is_left() {
        let failure = Failure::from_error(std::io::Error::other("timed out"));
        let retries = retries(2);
        assert_eq!(
            retries.delay_after(&failure, 1, Duration::ZERO),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            retries.delay_after(&failure, 2, Duration::ZERO),
            Some(Duration::from_millis(200))
        );
        assert_eq!(retries.delay_after(&failure, 3, Duration::ZERO), None);
    }

    #[test]
    fn a_permanent_failure_or_a_policy_without_retries_is_never_retried() {
        let permanent = Failure::from_error(Permanent::new(std::io::Error::other("bad")));
        assert_eq!(retries(5).delay_after(&permanent, 1, Duration::ZERO), None);
        let transient = Failure::from_error(std::io::Error::other("timed out"));
        assert_eq!(retries(0).delay_after(&transient, 1, Duration::ZERO), None);
    }
}
