//! `throttled.unprocessed-record-max-age.ms`: fails the channel when the oldest unsettled
//! record of a partition stays unsettled too long.
//!
//! Watched per assignment, not per partition number: a partition revoked and assigned back
//! between two looks starts a new assignment whose records are delivered again, and must not
//! inherit the old assignment's clock (that would be a spurious failure, liveness DOWN for good).

use std::sync::Arc;
use std::time::Duration;

// tokio's clock, which its ticks follow too: the system's in a service, and one a test can
// pause, so that a backoff or a stuck handler is judged on the clock that timed it.
use tokio::time::Instant;

use super::acknowledger::PartitionAcknowledger;
use super::channel_state::ChannelState;
use crate::intake_gate::IntakeGate;

pub(crate) struct AgeWatch {
    max_age: Duration,
    ticks: tokio::time::Interval,
    /// Per assignment, its oldest unsettled record as last seen. The `Arc` identifies the
    /// assignment (and keeps its address from being reused meanwhile).
    oldest: Vec<Oldest>,
    /// Revoked assignments whose handler calls were still under way at the last look, and
    /// since when this watch has seen them so.
    leaving: Vec<(Arc<PartitionAcknowledger>, Instant)>,
    /// The channel reads one of its retry topics, whose records wait out the topic's delay on
    /// purpose: that wait does not count towards the age the metric reports either.
    reads_retry_topic: bool,
}

/// The oldest unsettled record of one assignment.
struct Oldest {
    assigned: Arc<PartitionAcknowledger>,
    offset: i64,
    /// When this watch first saw it: its age, as the metric reports it.
    first_seen: Instant,
    /// When its current attempt began, as far as this watch knows: what the limit is held
    /// against (a wait for a retry is not counted).
    attempt_since: Instant,
    /// Whether the record was being handled at that look. A record that was not (it waited for
    /// its turn, a retry or the sink) gets its clock from the first look that finds it handled,
    /// never from before: its attempt gets the whole limit, give or take one look later.
    handled: bool,
}

impl AgeWatch {
    pub(crate) fn new(max_age: Duration) -> Self {
        let ticks = tokio::time::interval((max_age / 4).max(Duration::from_millis(10)));
        Self {
            max_age,
            ticks,
            oldest: Vec::new(),
            leaving: Vec::new(),
            reads_retry_topic: false,
        }
    }

    pub(crate) fn reading_a_retry_topic(mut self, reads_retry_topic: bool) -> Self {
        self.reads_retry_topic = reads_retry_topic;
        self
    }

    /// The next look, or never when there is no watch.
    pub(crate) async fn tick(watch: &mut Option<Self>) {
        match watch {
            Some(watch) => {
                watch.ticks.tick().await;
            }
            None => std::future::pending().await,
        }
    }

    /// Fails the channel when a record has stayed unsettled longer than the limit. Returns
    /// whether it did.
    pub(crate) fn check(&mut self, state: &ChannelState) -> bool {
        let now = Instant::now();
        let stuck = self
            .look(
                &state.topic,
                &state.partitions(),
                state.sink_gate.as_ref(),
                now,
            )
            .or_else(|| {
                self.look_at_leaving(
                    &state.topic,
                    &state.leaving(),
                    state.sink_gate.as_ref(),
                    now,
                )
            });
        state.metrics.oldest_unsettled_age(self.longest_wait(now));
        let Some(reason) = stuck else {
            return false;
        };
        state.fail(&reason);
        true
    }

    /// How long the oldest unsettled record of all partitions has waited (retries included), as
    /// of the last look.
    fn longest_wait(&self, now: Instant) -> Duration {
        self.oldest
            .iter()
            .map(|oldest| now - oldest.first_seen)
            .max()
            .unwrap_or_default()
    }

    /// Looks at the current assignment at `now`; says what is stuck, if anything.
    fn look(
        &mut self,
        topic: &str,
        assignment: &[Arc<PartitionAcknowledger>],
        sink_gate: Option<&IntakeGate>,
        now: Instant,
    ) -> Option<String> {
        let previous = std::mem::take(&mut self.oldest);
        for assigned in assignment {
            let Some(offset) = assigned.tracker.oldest_unsettled() else {
                continue;
            };
            // The same assignment still waiting at the same offset keeps its clock; anything
            // else (a new oldest offset, a new assignment) starts one.
            // A record waiting for its next attempt is not stuck: its clock starts again with
            // each attempt, so every attempt gets the whole limit and a handler that never
            // returns is still caught.
            let seen = previous
                .iter()
                .find(|seen| Arc::ptr_eq(&seen.assigned, assigned) && seen.offset == offset);
            // While the outgoing sink holds the channel back for an outage (or for good, as it
            // failed), its records wait on purpose and the sink's own gauges say why: the age
            // starts again, so the stuck-record alert does not fire for the outage too.
            let sink_paused = sink_gate.is_some_and(IntakeGate::is_closed);
            // So does a record of a retry topic waiting out the topic's delay: the wait is the
            // point of the topic, not a stuck record (`MessagingRecordStuck` would fire for
            // every retry of a topic whose delay is over 30 s).
            let waits_its_delay =
                self.reads_retry_topic && assigned.tracker.oldest_waits_for_retry();
            let first_seen = seen
                .filter(|_| !sink_paused && !waits_its_delay)
                .map_or(now, |seen| seen.first_seen);
            // Likewise while the outgoing sink holds writes back on purpose (a backoff, an
            // outage it paused for): its readiness tells that, and the record is not stuck. And
            // a record not started yet waits behind others (a slow handler, `max-concurrency`,
            // its key's turn): those others are watched, it is not stuck itself. (A slow
            // handler behind a deep prefetch would otherwise fail a healthy channel.)
            let sink_waits = sink_gate.is_some_and(IntakeGate::sink_waits);
            let handled = assigned.tracker.oldest_started()
                && !assigned.tracker.oldest_waits_for_retry()
                && !sink_waits;
            let since = seen
                .filter(|seen| handled && seen.handled)
                .map_or(now, |seen| seen.attempt_since);
            self.oldest.push(Oldest {
                assigned: assigned.clone(),
                offset,
                first_seen,
                attempt_since: since,
                handled,
            });
            let waited = now - since;
            if waited > self.max_age {
                return Some(format!(
                    "the oldest unsettled record of {}-{} (at offset {offset}, or the next one after a gap) has waited \
                     more than {} ms to be settled, longer than throttled.unprocessed-record-max-age.ms ({} ms); offsets of \
                     this partition cannot be committed past it",
                    topic,
                    assigned.partition,
                    waited.as_millis(),
                    self.max_age.as_millis()
                ));
            }
        }
        None
    }

    /// Looks at the revoked assignments whose handler calls are still under way (`leaving`,
    /// pruned of those that ended). Such a call was started before its revoke and keeps its
    /// place among `max-concurrency` (and its ordering turn): records of the current
    /// assignments (the same record among them, delivered again) can wait for it without being
    /// started, so the current assignments' watch sees no record handled and never fails.
    /// Timed from the first look that finds it revoked (up to a quarter of the limit after the
    /// revoke), so a call that never returns is caught within one and a half limits of its
    /// revoke, and one that has not run longer than the limit never is. While the sink waits
    /// on purpose its clock starts again, as the current assignments' clocks do.
    fn look_at_leaving(
        &mut self,
        topic: &str,
        leaving: &[Arc<PartitionAcknowledger>],
        sink_gate: Option<&IntakeGate>,
        now: Instant,
    ) -> Option<String> {
        let previous = std::mem::take(&mut self.leaving);
        let sink_waits = sink_gate.is_some_and(IntakeGate::sink_waits);
        for assigned in leaving {
            let since = previous
                .iter()
                .find(|(seen, _)| Arc::ptr_eq(seen, assigned))
                .filter(|_| !sink_waits)
                .map_or(now, |(_, since)| *since);
            self.leaving.push((assigned.clone(), since));
            let waited = now - since;
            if waited > self.max_age {
                return Some(format!(
                    "a handler call on a record of {}-{} has not returned more than {} ms after the partition was \
                     revoked, longer than throttled.unprocessed-record-max-age.ms ({} ms); it still holds its place \
                     among max-concurrency (and its ordering turn)",
                    topic,
                    assigned.partition,
                    waited.as_millis(),
                    self.max_age.as_millis()
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Weak;

    use super::*;
    use crate::commit::{PartitionTracker, TrackedOffset};
    use crate::health::HealthRegistry;
    use crate::metrics::Metrics;

    /// An assignment of `partition` that handed out `offset`, not started yet.
    fn assignment_received(
        partition: i32,
        offset: i64,
    ) -> (Arc<PartitionAcknowledger>, TrackedOffset) {
        let assigned = Arc::new(PartitionAcknowledger::new(
            partition,
            PartitionTracker::new(),
            Weak::new(),
            None,
            Metrics::new(&HealthRegistry::default()).incoming_channel("c", "t"),
            Arc::default(),
        ));
        let tracked = assigned.tracker.received(offset);
        (assigned, tracked)
    }

    /// An assignment of `partition` whose record at `offset` is being handled.
    fn assignment_holding(partition: i32, offset: i64) -> Arc<PartitionAcknowledger> {
        let (assigned, tracked) = assignment_received(partition, offset);
        assigned.tracker.started(tracked);
        assigned
    }

    #[tokio::test]
    async fn a_record_unsettled_longer_than_the_limit_is_reported() {
        let mut watch = AgeWatch::new(Duration::from_secs(10));
        let start = Instant::now();
        let assignment = [assignment_holding(0, 7)];
        assert_eq!(watch.look("t", &assignment, None, start), None);
        assert_eq!(
            watch.look("t", &assignment, None, start + Duration::from_secs(10)),
            None,
            "not longer than the limit yet"
        );
        let reason = watch
            .look("t", &assignment, None, start + Duration::from_secs(11))
            .expect("stuck");
        assert!(
            reason.contains("t-0 (at offset 7") && reason.contains("10000 ms"),
            "{reason}"
        );
    }

    /// The partition is revoked and assigned back (two members joining and leaving) between
    /// two looks, and the new assignment's oldest record is the same offset, delivered again.
    #[tokio::test]
    async fn a_partition_assigned_again_does_not_inherit_the_old_assignments_clock() {
        let mut watch = AgeWatch::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(
            watch.look("t", &[assignment_holding(0, 7)], None, start),
            None
        );
        let again = [assignment_holding(0, 7)];
        assert_eq!(
            watch.look("t", &again, None, start + Duration::from_secs(9)),
            None
        );
        assert_eq!(
            watch.look("t", &again, None, start + Duration::from_secs(15)),
            None,
            "the new assignment has waited 6 s, not 15 s"
        );
        assert!(
            watch
                .look("t", &again, None, start + Duration::from_secs(20))
                .is_some(),
            "its own 11 s are too long"
        );
    }

    /// A record whose output the sink holds back on purpose (a backoff, an outage it paused
    /// for) is not stuck: its clock starts again while the sink waits.
    #[tokio::test]
    async fn a_sink_that_waits_on_purpose_is_not_a_stuck_record() {
        let mut watch = AgeWatch::new(Duration::from_secs(10));
        let start = Instant::now();
        let assignment = [assignment_holding(0, 7)];
        let gate = IntakeGate::default();
        assert_eq!(watch.look("t", &assignment, Some(&gate), start), None);
        let waiting = gate.write_waits();
        assert_eq!(
            watch.look(
                "t",
                &assignment,
                Some(&gate),
                start + Duration::from_secs(30)
            ),
            None
        );
        drop(waiting);
        let at = |seconds| start + Duration::from_secs(seconds);
        assert_eq!(
            watch.look("t", &assignment, Some(&gate), at(39)),
            None,
            "the first look since the sink stopped waiting starts the clock"
        );
        assert_eq!(watch.look("t", &assignment, Some(&gate), at(49)), None);
        assert!(watch.look("t", &assignment, Some(&gate), at(50)).is_some());
    }

    /// A slow handler works through a deep prefetch: the oldest record of a partition waits
    /// for a place among `max-concurrency` far longer than the limit. It is not stuck: the
    /// records ahead of it are watched. Once it starts, its attempt gets the whole limit.
    #[tokio::test]
    async fn a_record_waiting_for_its_turn_is_not_stuck_until_it_runs_too_long() {
        let mut watch = AgeWatch::new(Duration::from_secs(10));
        let start = Instant::now();
        let at = |seconds| start + Duration::from_secs(seconds);
        let (assigned, tracked) = assignment_received(0, 7);
        let assignment = [assigned];
        for seconds in [0, 30, 60] {
            assert_eq!(
                watch.look("t", &assignment, None, at(seconds)),
                None,
                "not started at {seconds} s"
            );
        }
        assert_eq!(
            watch.longest_wait(at(60)),
            Duration::from_secs(60),
            "its age still shows"
        );
        assignment[0].tracker.started(tracked);
        assert_eq!(watch.look("t", &assignment, None, at(61)), None);
        assert_eq!(watch.look("t", &assignment, None, at(71)), None);
        assert!(
            watch.look("t", &assignment, None, at(72)).is_some(),
            "11 s into its attempt"
        );
    }

    /// The age the metric reports grows while a record waits, counts a sink's backoff, and
    /// starts again while the sink holds the channel back for an outage (the sink's own
    /// gauge says that), so one outage does not also read as a stuck record.
    #[tokio::test]
    async fn the_reported_age_starts_again_while_the_sink_is_paused() {
        let mut watch = AgeWatch::new(Duration::from_secs(600));
        let start = Instant::now();
        let assignment = [assignment_holding(0, 7)];
        let gate = IntakeGate::default();
        let at = |seconds| start + Duration::from_secs(seconds);
        watch.look("t", &assignment, Some(&gate), start);
        let backing_off = gate.write_waits();
        watch.look("t", &assignment, Some(&gate), at(40));
        assert_eq!(watch.longest_wait(at(40)), Duration::from_secs(40));
        drop(backing_off);
        gate.close();
        watch.look("t", &assignment, Some(&gate), at(50));
        watch.look("t", &assignment, Some(&gate), at(200));
        assert_eq!(watch.longest_wait(at(200)), Duration::ZERO);
        gate.open();
        watch.look("t", &assignment, Some(&gate), at(210));
        assert_eq!(watch.longest_wait(at(245)), Duration::from_secs(45));
    }

    /// A record of a retry topic waiting out the topic's delay has no age: the wait is what
    /// the topic is for. A retry's backoff on the channel's own topic still counts.
    #[tokio::test]
    async fn a_retry_topics_delay_is_not_counted_as_age() {
        let start = Instant::now();
        let at = |seconds| start + Duration::from_secs(seconds);
        for (reads_retry_topic, age) in [(true, 0), (false, 100)] {
            let mut watch =
                AgeWatch::new(Duration::from_secs(600)).reading_a_retry_topic(reads_retry_topic);
            let (assigned, tracked) = assignment_received(0, 7);
            assigned.tracker.waiting_for_retry(tracked, true);
            let assignment = [assigned];
            watch.look("t", &assignment, None, start);
            watch.look("t", &assignment, None, at(100));
            assert_eq!(
                watch.longest_wait(at(100)),
                Duration::from_secs(age),
                "reads a retry topic: {reads_retry_topic}"
            );
        }
    }

    /// A channel of topic `t` reporting to `health`, with no consumer: the test plays the
    /// rebalances and the records.
    fn channel(health: &HealthRegistry) -> Arc<ChannelState> {
        use std::collections::{BTreeMap, HashMap};

        use crate::config::{IncomingSettings, Layers};
        use crate::connectors::kafka::channel_state::FailureWriters;

        let layers = Layers {
            environment: HashMap::new(),
            file: None,
            code: BTreeMap::from([("messaging.incoming.orders.topic".to_owned(), "t".to_owned())]),
            attributes: BTreeMap::new(),
        };
        let settings = IncomingSettings::resolve(&layers, "orders", &["orders".to_owned()])
            .expect("valid settings");
        health.register("orders");
        let metrics = Metrics::new(health).incoming_channel("orders", "t");
        ChannelState::new(
            &settings,
            false,
            FailureWriters::default(),
            None,
            Arc::default(),
            health,
            metrics,
            None,
        )
    }

    /// A handler call that never returns, its partition revoked and assigned again: the new
    /// assignment's record (the same one, delivered again) waits for the call's place without
    /// being started, so only the revoked assignment's running call can tell that the channel
    /// is stuck. A call that returned leaves nothing to watch.
    #[tokio::test(start_paused = true)]
    async fn a_handler_call_still_running_after_its_revoke_is_stuck() {
        for returns in [false, true] {
            let health = HealthRegistry::default();
            let state = channel(&health);
            let mut watch = AgeWatch::new(Duration::from_secs(10));
            state.assigned(0);
            let first = state.current_partition(0).expect("assigned");
            let tracked = first.tracker.received(7);
            first.tracker.started(tracked);
            let call = first.call_running();
            assert!(!watch.check(&state));

            state.revoked(0);
            first.revoke();
            state.assigned(0);
            let again = state.current_partition(0).expect("assigned again");
            again.tracker.received(7);
            if returns {
                drop(call);
            } else {
                std::mem::forget(call);
            }
            let mut failed_after = None;
            for second in 1..=60 {
                tokio::time::advance(Duration::from_secs(1)).await;
                if watch.check(&state) {
                    failed_after = Some(second);
                    break;
                }
            }
            if returns {
                assert_eq!(failed_after, None, "nothing left running");
                assert!(state.leaving().is_empty());
                continue;
            }
            // The first look after the revoke starts the clock: over 10 s after it.
            assert_eq!(failed_after, Some(12));
            let reason = health.check(crate::health::Check::Liveness).data["orders"]
                .clone()
                .expect_err("liveness DOWN");
            assert!(
                reason.contains("a handler call on a record of t-0 has not returned more than 11000 ms after the partition was revoked"),
                "{reason}"
            );
        }
    }

    /// While the sink holds writes back on purpose, a revoked assignment's running call is
    /// excused as the current assignments' records are: its clock starts again at each look.
    #[tokio::test]
    async fn a_revoked_call_is_not_timed_while_the_sink_waits_on_purpose() {
        let mut watch = AgeWatch::new(Duration::from_secs(10));
        let start = Instant::now();
        let at = |seconds| start + Duration::from_secs(seconds);
        let revoked = assignment_holding(0, 7);
        let _call = revoked.call_running();
        let leaving = [revoked.clone()];
        let gate = IntakeGate::default();
        let waiting = gate.write_waits();
        for second in [0, 5, 30, 60] {
            assert_eq!(
                watch.look_at_leaving("t", &leaving, Some(&gate), at(second)),
                None
            );
        }
        drop(waiting);
        assert_eq!(
            watch.look_at_leaving("t", &leaving, Some(&gate), at(70)),
            None,
            "its clock started again at the last look during the wait"
        );
        assert!(watch
            .look_at_leaving("t", &leaving, Some(&gate), at(71))
            .is_some());
    }
}
