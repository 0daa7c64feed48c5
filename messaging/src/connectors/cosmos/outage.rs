//! Whether Cosmos DB can take writes at all. A run of failed writes (`outage.threshold` in a row,
//! of any documents), or a record whose retries ran out on Cosmos DB being unavailable (429, 503,
//! 410, 449, 404/1002: even if only the record's partition is) or while no write succeeded, is
//! an outage, not bad records: with `on-outage = pause` the sink closes its intake gate (the
//! feeding channels stop taking records and pause their partitions), turns its readiness DOWN
//! with the reason, and lets one write at a time probe with backoff until Cosmos DB answers
//! again.
//!
//! A record whose retries ran out on an unavailable partition holds the pause until its own
//! write is answered: while only its partition fails, the answers other documents get must not
//! end the pause (readiness would turn UP and DOWN again with each of its backoffs). And when
//! the last write leaves a pause without an answer (its partition revoked, say), the gate lets
//! the next record in to probe, and the sink probes on its own every backoff meanwhile:
//! otherwise nothing would end the pause while no record comes.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use azure_data_cosmos::models::PartitionKey;
use tokio::sync::{Mutex, MutexGuard, Notify};

use crate::health::{Aspect, HealthRegistry};
use crate::intake_gate::IntakeGate;
use crate::metrics::SinkMetrics;

pub(crate) struct Outage {
    channel: String,
    health: HealthRegistry,
    metrics: SinkMetrics,
    pub(crate) gate: IntakeGate,
    threshold: u32,
    /// Failed writes since the last answer that was not a failure of Cosmos DB.
    consecutive_failures: AtomicU32,
    /// Failed writes so far: a write that failed again with no other write failing since, and
    /// others answered, failed on its own (see `Shared::deliver`).
    failures: AtomicU64,
    /// Answers so far: a record whose retries ran out while this stood still saw nothing but
    /// failures, which says more about Cosmos DB than about the record.
    answers: AtomicU64,
    /// Read without a lock on every write; changed only under `transition`.
    paused: AtomicBool,
    /// Held while pausing or resuming: the flag, the gate, readiness and the gauge change
    /// together, so a resume racing a pause cannot leave the gate closed with the flag down.
    /// It keeps what readiness says of the outage: the latest failure, which may not be the
    /// first (Cosmos DB back, but its database not yet).
    transition: std::sync::Mutex<String>,
    /// Set by `close_for_good`: nothing reopens the gate then.
    closed_for_good: AtomicBool,
    /// Probes made in this outage, for their backoff.
    probes: AtomicU32,
    /// Taken by the one write that probes while paused.
    probe: Mutex<()>,
    /// Writes whose retries ran out and that still try (see `hold`).
    holding: AtomicUsize,
    /// Writes being made now (see `started_writing`).
    writing: AtomicUsize,
    /// Told when the last write left a pause without an answer (see `nobody_probes`).
    left_without_probe: Notify,
    /// Where the sink probes while no write does (see `probe_key`).
    probe_keys: std::sync::Mutex<ProbeKeys>,
    /// Counts the failures that paused or kept paused: a probe answered after a newer failure
    /// does not end the pause (see `resume_if_nobody_writes`).
    epoch: AtomicU64,
    /// Counts the pauses begun: the sink's own probe backs off anew in each.
    pauses: AtomicU64,
}

impl Outage {
    pub(crate) fn new(
        channel: &str,
        health: HealthRegistry,
        metrics: SinkMetrics,
        threshold: u32,
    ) -> Self {
        Self {
            channel: channel.to_owned(),
            health,
            metrics,
            gate: IntakeGate::default(),
            threshold,
            consecutive_failures: AtomicU32::new(0),
            failures: AtomicU64::new(0),
            answers: AtomicU64::new(0),
            paused: AtomicBool::new(false),
            transition: std::sync::Mutex::new(String::new()),
            closed_for_good: AtomicBool::new(false),
            probes: AtomicU32::new(0),
            probe: Mutex::new(()),
            holding: AtomicUsize::new(0),
            writing: AtomicUsize::new(0),
            left_without_probe: Notify::new(),
            probe_keys: std::sync::Mutex::new(ProbeKeys::default()),
            epoch: AtomicU64::new(0),
            pauses: AtomicU64::new(0),
        }
    }

    /// Cosmos DB answered (a success, or a rejection of this record): it is up.
    pub(crate) fn answered(&self) {
        self.consecutive_failures.store(0, Ordering::SeqCst);
        self.answers.fetch_add(1, Ordering::SeqCst);
        if !self.paused.load(Ordering::SeqCst) || self.holding.load(Ordering::SeqCst) > 0 {
            return;
        }
        let _transition = self.transition.lock().expect("outage transition");
        // Again under the lock: a hold taken just before this write's answer is kept.
        if self.closed_for_good.load(Ordering::SeqCst) || self.holding.load(Ordering::SeqCst) > 0 {
            return;
        }
        self.resume();
    }

    /// The sink's own probe, sent at `epoch`, was answered while no write probes: the pause
    /// ends, unless a write started meanwhile (its answer decides) or a write failed since
    /// (newer news than this answer). Unlike a write's answer it answers for no record, so it
    /// does not count in `answers`, by which a record's retries are judged.
    pub(crate) fn resume_if_nobody_writes(&self, epoch: u64) {
        let _transition = self.transition.lock().expect("outage transition");
        if self.paused_without_writes()
            && self.holding.load(Ordering::SeqCst) == 0
            && self.epoch.load(Ordering::SeqCst) == epoch
        {
            // The failures in a row were before this answer: the next one starts a new run.
            self.consecutive_failures.store(0, Ordering::SeqCst);
            self.resume();
        }
    }

    /// The pauses begun so far.
    pub(crate) fn pauses(&self) -> u64 {
        self.pauses.load(Ordering::SeqCst)
    }

    /// The failures that paused so far (see `resume_if_nobody_writes`).
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Where to probe while no write does: the partition key of the latest write that held
    /// the pause (its partition unavailable while others may answer), else of the latest write
    /// whose failure paused or kept paused.
    pub(crate) fn probe_key(&self) -> Option<PartitionKey> {
        let keys = self.probe_keys.lock().expect("probe keys");
        keys.held.clone().or_else(|| keys.latest.clone())
    }

    /// Called under the transition lock.
    fn resume(&self) {
        if self.paused.swap(false, Ordering::SeqCst) {
            self.probes.store(0, Ordering::SeqCst);
            *self.probe_keys.lock().expect("probe keys") = ProbeKeys::default();
            self.health.ready_for(&self.channel, Aspect::Sink);
            self.metrics.paused(false);
            self.gate.open();
            tracing::info!(channel = %self.channel, "Cosmos DB answers again; the incoming side resumes");
        }
    }

    /// A write failed for a reason that is not the record's: returns whether the failures in
    /// a row now make an outage, and the failure's number among all writes' failures (one after
    /// a write's previous failure: no other write failed in between).
    pub(crate) fn failed(&self) -> Failed {
        let number = self.failures.fetch_add(1, Ordering::SeqCst) + 1;
        let in_a_row =
            self.consecutive_failures.fetch_add(1, Ordering::SeqCst) + 1 >= self.threshold;
        Failed { in_a_row, number }
    }

    pub(crate) fn answers(&self) -> u64 {
        self.answers.load(Ordering::SeqCst)
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Pauses for an outage, or, paused already, says the latest failure's reason: the write
    /// of a document with `partition_key` failed so.
    pub(crate) fn pause(&self, reason: &str, partition_key: &PartitionKey) {
        let mut told = self.transition.lock().expect("outage transition");
        if self.closed_for_good.load(Ordering::SeqCst) {
            return;
        }
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.probe_keys.lock().expect("probe keys").latest = Some(partition_key.clone());
        let reason = format!("{PAUSED}{reason}");
        // Closed again if it let a record in to probe (see `started_writing`).
        self.gate.close();
        if !self.paused.swap(true, Ordering::SeqCst) {
            self.pauses.fetch_add(1, Ordering::SeqCst);
            self.metrics.paused(true);
            tracing::warn!(channel = %self.channel, "{reason}; probing with one write until it answers");
        } else if without_activity_id(&told) == without_activity_id(&reason) {
            // The same failure again: Cosmos DB gives every request an activity id of its
            // own, and a new one is no news.
            return;
        } else {
            tracing::warn!(channel = %self.channel, "{reason}; still probing");
        }
        self.health
            .not_ready_for(&self.channel, Aspect::Sink, &reason);
        *told = reason;
    }

    /// The channel failed (`on-outage = fail`): the gate stays closed for good.
    pub(crate) fn close_for_good(&self) {
        let _transition = self.transition.lock().expect("outage transition");
        self.closed_for_good.store(true, Ordering::SeqCst);
        self.paused.store(true, Ordering::SeqCst);
        self.gate.close();
        self.metrics.failed();
    }

    /// Waits for the turn to probe (one write at a time while paused).
    pub(crate) async fn probe_turn(&self) -> MutexGuard<'_, ()> {
        self.probe.lock().await
    }

    /// How many probes this outage has made, counting the one starting now.
    pub(crate) fn next_probe(&self) -> u32 {
        self.probes.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Taken by a write whose retries ran out and that paused: until it is dropped (the write
    /// answered, or given up), answers to other writes do not end the pause. Its partition may
    /// be the only one failing, and its record must not be dead-lettered for that, nor the
    /// pause end and begin again with each of its probes.
    ///
    /// The write's `partition_key` is where the sink probes if the write leaves without an
    /// answer.
    pub(crate) fn hold(&self, partition_key: &PartitionKey) -> Hold<'_> {
        self.holding.fetch_add(1, Ordering::SeqCst);
        self.probe_keys.lock().expect("probe keys").held = Some(partition_key.clone());
        Hold(self)
    }

    /// Counts a write as being made until the returned guard drops (the sink's deliveries own
    /// theirs: `sink::BeingMade`).
    #[cfg(test)]
    pub(crate) fn writing(&self) -> Writing<'_> {
        self.started_writing();
        Writing(self)
    }

    /// Counts a write as being made until the matching `stopped_writing` (for a guard that
    /// owns the sink rather than borrowing the outage).
    pub(crate) fn started_writing(&self) {
        self.writing.fetch_add(1, Ordering::SeqCst);
    }

    /// The write counted by `started_writing` is no longer being made.
    pub(crate) fn stopped_writing(&self) {
        if self.writing.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.nobody_probes();
        }
    }

    /// Resolves once the last write left a pause without an answer (see `nobody_probes`); a
    /// time that came before the call counts.
    pub(crate) async fn until_left_without_probe(&self) {
        self.left_without_probe.notified().await;
    }

    /// Whether the channel is paused with no write to probe with: the sink's own probe is then
    /// the only thing that can end the pause.
    pub(crate) fn paused_without_writes(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
            && self.writing.load(Ordering::SeqCst) == 0
            && !self.closed_for_good.load(Ordering::SeqCst)
    }

    /// The sink's own probe failed while no write probes: readiness gives the latest failure.
    pub(crate) fn probe_failed(&self, reason: &str) {
        let mut told = self.transition.lock().expect("outage transition");
        if !self.paused_without_writes() {
            return;
        }
        let reason = format!("{WITHOUT_PROBE}{reason}");
        if without_activity_id(&told) == without_activity_id(&reason) {
            return;
        }
        tracing::warn!(channel = %self.channel, "{reason}");
        self.health
            .not_ready_for(&self.channel, Aspect::Sink, &reason);
        *told = reason;
    }

    /// The last write left while paused, without an answer that ended the pause (its record
    /// rejected by the SDK, its partition revoked): the gate lets records in again, readiness
    /// staying DOWN, so that the next write probes, and the sink probes on its own until
    /// Cosmos DB answers. With the gate closed and no write left, nothing would ever end the
    /// pause; with the gate open, nothing would on an idle topic (or with no partition left).
    fn nobody_probes(&self) {
        if !self.paused.load(Ordering::SeqCst) {
            return;
        }
        let mut told = self.transition.lock().expect("outage transition");
        // Again under the lock: a write that started since, and paused, probes itself.
        if self.paused_without_writes() {
            self.gate.open();
            // Readiness says so: the incoming side takes records again. The next probe's
            // failure reads as news to `pause`, which says "paused" again.
            let latest = told
                .strip_prefix(PAUSED)
                .or_else(|| told.strip_prefix(WITHOUT_PROBE))
                .unwrap_or(&told);
            let reason = format!("{WITHOUT_PROBE}{latest}");
            tracing::info!(channel = %self.channel, "{reason}");
            self.health
                .not_ready_for(&self.channel, Aspect::Sink, &reason);
            *told = reason;
            self.left_without_probe.notify_one();
        }
    }
}

/// A failed write, as [`Outage::failed`] counts it.
pub(crate) struct Failed {
    /// Whether the failures in a row now make an outage.
    pub(crate) in_a_row: bool,
    pub(crate) number: u64,
}

/// A write whose retries ran out holds the pause (see [`Outage::hold`]).
pub(crate) struct Hold<'a>(&'a Outage);

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        self.0.holding.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A write being made (see [`Outage::writing`]).
#[cfg(test)]
pub(crate) struct Writing<'a>(&'a Outage);

#[cfg(test)]
impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.0.stopped_writing();
    }
}

/// Where the sink's own probe goes (see `Outage::probe_key`); both cleared when a pause ends.
#[derive(Default)]
struct ProbeKeys {
    held: Option<PartitionKey>,
    latest: Option<PartitionKey>,
}

/// How readiness begins while the incoming side is paused.
const PAUSED: &str = "Cosmos DB outage, incoming side paused: ";
/// How readiness begins while paused with no write to probe with (see `nobody_probes`).
const WITHOUT_PROBE: &str = "Cosmos DB outage, no write left to probe with: the incoming side takes records again and the sink probes on its own every backoff until Cosmos DB answers; latest failure: ";

/// A failure's reason without its request's activity id (see `answer.rs`), which differs on
/// every request.
fn without_activity_id(reason: &str) -> &str {
    reason
        .rfind("; activity id ")
        .map_or(reason, |end| &reason[..end])
}

#[cfg(test)]
mod tests {
    use super::{without_activity_id, Outage, PartitionKey};
    use crate::health::{Check, HealthRegistry, Status};
    use crate::metrics::Metrics;

    fn outage() -> (Outage, HealthRegistry) {
        let health = HealthRegistry::default();
        health.register("db");
        health.ready("db");
        let metrics = Metrics::new(&health).outgoing_channel("db");
        (Outage::new("db", health.clone(), metrics, 3), health)
    }

    fn key() -> PartitionKey {
        PartitionKey::from("tenant-1")
    }

    fn ready(health: &HealthRegistry) -> bool {
        health.check(Check::Readiness).status == Status::Up
    }

    #[test]
    fn a_record_whose_retries_ran_out_holds_the_pause_until_it_is_answered() {
        let (outage, health) = outage();
        let held = outage.hold(&key());
        outage.pause("503 for one partition", &key());
        // Other documents' partitions answer: the pause goes on, readiness stays DOWN.
        outage.answered();
        outage.answered();
        assert!(outage.is_paused());
        assert!(outage.gate.is_closed());
        assert!(!ready(&health));
        // The held record's own write is answered: everything resumes.
        drop(held);
        outage.answered();
        assert!(!outage.is_paused());
        assert!(!outage.gate.is_closed());
        assert!(ready(&health));
    }

    #[test]
    fn without_a_hold_the_first_answer_ends_the_pause() {
        let (outage, health) = outage();
        outage.pause("503", &key());
        assert!(!ready(&health));
        outage.answered();
        assert!(!outage.is_paused());
        assert!(ready(&health));
    }

    #[test]
    fn the_last_write_leaving_a_pause_unanswered_lets_the_next_record_probe() {
        let (outage, health) = outage();
        let first = outage.writing();
        let second = outage.writing();
        outage.pause("503", &key());
        drop(first);
        assert!(outage.gate.is_closed(), "a write is left to probe");
        drop(second);
        assert!(!outage.gate.is_closed(), "the next record probes");
        assert!(outage.is_paused());
        assert!(!ready(&health), "still DOWN: Cosmos DB has not answered");
        let readiness = format!("{:?}", health.check(Check::Readiness));
        assert!(
            readiness.contains("takes records again") && readiness.contains("latest failure: 503"),
            "{readiness}"
        );
        // The next record's probe fails the same way: the gate closes again, and readiness
        // says so.
        let next = outage.writing();
        outage.pause("503", &key());
        assert!(outage.gate.is_closed());
        let readiness = format!("{:?}", health.check(Check::Readiness));
        assert!(
            readiness.contains("incoming side paused: 503"),
            "{readiness}"
        );
        outage.answered();
        drop(next);
        assert!(!outage.gate.is_closed());
        assert!(ready(&health));
    }

    #[test]
    fn the_sink_probes_where_the_held_write_failed_and_only_on_fresh_news() {
        let (outage, health) = outage();
        let unavailable = PartitionKey::from("tenant-unavailable");
        let other = PartitionKey::from("tenant-other");
        let write = outage.writing();
        // Two failures in a row of the three that make an outage.
        assert!(!outage.failed().in_a_row && !outage.failed().in_a_row);
        let held = outage.hold(&unavailable);
        outage.pause("503", &unavailable);
        // A write of another partition that was under way fails as well, and says so last.
        outage.pause("408", &other);
        assert_eq!(outage.probe_key(), Some(unavailable.clone()));
        // The held write leaves without an answer (revoked): the probe still goes to its
        // partition.
        drop(held);
        drop(write);
        assert!(outage.paused_without_writes());
        assert_eq!(outage.probe_key(), Some(unavailable));
        // An answer to a probe sent before the latest failure is old news.
        let sent = outage.epoch();
        outage.pause("503 again", &other);
        outage.resume_if_nobody_writes(sent);
        assert!(outage.is_paused());
        // A write under way decides with its own answer.
        let sent = outage.epoch();
        let write = outage.writing();
        outage.resume_if_nobody_writes(sent);
        assert!(outage.is_paused());
        drop(write);
        // An answer with nothing newer and no write: resumed, and the next pause starts over.
        outage.resume_if_nobody_writes(sent);
        assert!(!outage.is_paused());
        assert!(ready(&health));
        assert_eq!(outage.probe_key(), None);
        assert!(
            !outage.failed().in_a_row,
            "the failures in a row start again"
        );
    }

    #[test]
    fn the_same_failure_of_another_request_reads_the_same() {
        let first = "Cosmos DB outage, incoming side paused: the upsert got 503 (sub-status 0); activity id 1f0c";
        let second = "Cosmos DB outage, incoming side paused: the upsert got 503 (sub-status 0); activity id 9ab2";
        assert_eq!(without_activity_id(first), without_activity_id(second));
        let other = "Cosmos DB outage, incoming side paused: the upsert got 401 (sub-status 0); activity id 9ab2";
        assert_ne!(without_activity_id(first), without_activity_id(other));
        assert_eq!(without_activity_id("no answer"), "no answer");
    }
}
