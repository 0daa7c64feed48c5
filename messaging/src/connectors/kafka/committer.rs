//! Commits each partition's contiguous watermark: every `auto.commit.interval.ms`
//! (`throttled`) or whenever an acknowledgement moves it (`latest`); and watches the age of
//! the oldest unsettled record (`throttled.unprocessed-record-max-age.ms`).
//!
//! With `enable.auto.commit=true` librdkafka commits, on its own timer, on revoke and at close,
//! whatever offsets were stored. So the same watermarks are stored instead of committed
//! (`rd_kafka_offsets_store`, a local call), and librdkafka's own store on delivery stays off:
//! it would store records no handler has finished, and a crash would lose them.
//!
//! A periodic commit is synchronous, on a thread of the channel's own (`commit_thread.rs` says
//! why), so its result is known: a failure is counted and the offsets are sent again at the
//! next commit. One commit at a time: under `latest`, a catch-up acks thousands of records a
//! second, and a commit per ack would queue requests at the coordinator until the member's
//! heartbeats time out behind them; acks during a commit are taken by the next one. The last
//! commit at shutdown is synchronous too, on the close's thread.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::oneshot;

use super::acknowledger::PartitionAcknowledger;
use super::age_watch::AgeWatch;
use super::channel_state::ChannelState;
use super::commit_thread::CommitThread;
use super::off_worker::OffWorker;
use super::rebalance::{forget_failed_commits, ChannelContext};
use crate::commit::CommitStrategy;

pub(crate) type ChannelConsumer = StreamConsumer<ChannelContext>;

/// Which offsets of a partition to send.
#[derive(Clone, Copy)]
pub(crate) enum Round {
    /// What moved since the last commit.
    Periodic,
    /// The last commit of an assignment (revoke, shutdown): the watermark, even if a commit of
    /// it is still in flight.
    Final,
}

/// Commits (or, under auto-commit, stores) the watermarks of `partitions`. After a failure the
/// offsets are marked to be sent again; the caller counts it and says what happens next.
pub(crate) fn commit_watermarks<'a>(
    consumer: &impl Consumer<ChannelContext>,
    state: &ChannelState,
    partitions: impl IntoIterator<Item = &'a Arc<PartitionAcknowledger>>,
    round: Round,
    mode: CommitMode,
) -> KafkaResult<()> {
    let mut offsets = TopicPartitionList::new();
    for assigned in partitions {
        // A partition revoked since the committer looked is the next owner's to commit (a
        // revoke's own last commit is the one `Final` round of an assignment that is over).
        if matches!(round, Round::Periodic) && !state.is_current(assigned) {
            continue;
        }
        let offset = match round {
            Round::Periodic => assigned.tracker.take_commit(),
            Round::Final => assigned.tracker.take_final_commit(),
        };
        if let Some(offset) = offset {
            let _ = offsets.add_partition_offset(
                &state.topic,
                assigned.partition,
                Offset::Offset(offset),
            );
        }
    }
    if offsets.count() == 0 {
        return Ok(());
    }
    let sent = if state.auto_commit {
        consumer.store_offsets(&offsets)
    } else {
        consumer.commit(&offsets, mode)
    };
    sent.inspect_err(|_| forget_failed_commits(state, &offsets))
}

/// How long the last commit waits before it is sent again, after the coordinator refused it
/// for a rebalance.
const REFUSED_FINAL_COMMIT_PAUSE: Duration = Duration::from_millis(200);
/// What the sending again leaves of the shutdown's time for the consumer's close, which leaves
/// the group: without it, the group would wait out the member's `session.timeout.ms`.
const CLOSE_RESERVE: Duration = Duration::from_secs(1);

/// Whether a commit was refused only because the group rebalances: the coordinator answered
/// `RebalanceInProgress`, or `IllegalGeneration` while the new generation is on its way. Not
/// once librdkafka counts the assignment lost (a generation the group left behind for good):
/// no commit of this member goes through any more.
pub(crate) fn refused_while_rebalancing<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    error: &KafkaError,
) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::RebalanceInProgress | RDKafkaErrorCode::IllegalGeneration)
    ) && !consumer.assignment_lost()
}

/// The shutdown's last commit, on the close's thread. A member that shuts down while its group
/// rebalances (another instance joining during a rolling deploy) can have it refused: the
/// coordinator answers `RebalanceInProgress`, or `IllegalGeneration` while the new generation
/// is on its way (librdkafka keeps the assignment then: a new generation id comes soon). It is
/// sent again until it goes through, or until a second before `deadline` (the end of
/// `messaging.shutdown.timeout.ms`, the close's second): given up, the next owner would redo
/// everything since the last periodic commit.
pub(crate) fn commit_at_close(
    consumer: &impl Consumer<ChannelContext>,
    state: &ChannelState,
    deadline: Instant,
) {
    let last_try = deadline.checked_sub(CLOSE_RESERVE).unwrap_or(deadline);
    let mut refused = 0u32;
    loop {
        // librdkafka bounds a commit's wait by nothing but its answer: the next try starts
        // only if one as long as this one still ends before `last_try`.
        let started = Instant::now();
        let committed = commit_watermarks(
            consumer,
            state,
            &state.partitions(),
            Round::Final,
            CommitMode::Sync,
        );
        let error = match committed {
            Ok(()) if refused > 0 => {
                tracing::info!(channel = %state.channel, refused, "the last offset commit went through after the rebalance");
                return;
            }
            Ok(()) => return,
            Err(error) => error,
        };
        refused += 1;
        let rebalancing = refused_while_rebalancing(consumer, &error);
        let next_try_ends = Instant::now() + REFUSED_FINAL_COMMIT_PAUSE + started.elapsed();
        let why = match (rebalancing, next_try_ends <= last_try) {
            (true, true) => {
                if refused == 1 {
                    tracing::info!(channel = %state.channel, %error,
                        "the last offset commit was refused while the group rebalances; it is sent again until it goes through or messaging.shutdown.timeout.ms runs out");
                }
                std::thread::sleep(REFUSED_FINAL_COMMIT_PAUSE);
                continue;
            }
            (true, false) => "messaging.shutdown.timeout.ms runs out",
            (false, _) => "the refusal is final",
        };
        state.metrics.commit_failed();
        tracing::warn!(channel = %state.channel, %error, refused, why,
            "the last offset commit failed: the partitions' next owner starts at their last commit that went through");
        return;
    }
}

/// Runs until the channel stops.
pub(crate) async fn run(
    consumer: OffWorker,
    state: Arc<ChannelState>,
    interval: Duration,
    max_age: Option<Duration>,
) {
    let stopped = state.stopped();
    tokio::pin!(stopped);
    let mut commit_ticks = tokio::time::interval(interval);
    commit_ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Only `throttled` watches stuck records; it looks often enough to notice one in time.
    let mut age_watch = max_age
        .filter(|_| state.commit_strategy == CommitStrategy::Throttled)
        .map(|max_age| AgeWatch::new(max_age).reading_a_retry_topic(state.retry_delay.is_some()));
    let commits = match CommitThread::start(state.clone()) {
        Ok(commits) => commits,
        Err(error) => {
            state.fail(&format!(
                "cannot start the thread for the channel's commits: {error}"
            ));
            return;
        }
    };
    let mut in_flight: Option<oneshot::Receiver<Result<(), String>>> = None;
    let mut wanted = false;
    loop {
        tokio::select! {
            // A commit in flight finishes on its own; the close's last commit goes after it or
            // beside it. Each is sent with an offset no lower than any sent before, but a
            // request librdkafka retries can reach the coordinator after a later one: records
            // are then delivered again, never lost.
            _ = &mut stopped => return,
            _ = commit_ticks.tick() => wanted = true,
            _ = state.commit_wanted.notified(), if state.commit_strategy == CommitStrategy::Latest => wanted = true,
            answer = async { in_flight.as_mut().expect("a commit in flight").await }, if in_flight.is_some() => {
                in_flight = None;
                let failure = match answer {
                    Ok(Ok(())) => None,
                    Ok(Err(panic)) => Some(panic),
                    Err(_) => Some("its thread is gone".to_owned()),
                };
                if let Some(failure) = failure {
                    // Commits would stop for good: liveness DOWN rather than UP over them.
                    state.fail(&format!("a periodic commit ended abnormally: {failure}"));
                    return;
                }
                // On to the next commit if one was wanted meanwhile.
            }
            _ = AgeWatch::tick(&mut age_watch) => {
                if age_watch.as_mut().is_some_and(|watch| watch.check(&state)) {
                    return;
                }
            }
        }
        if wanted && in_flight.is_none() {
            wanted = false;
            in_flight = Some(commits.commit(OffWorker::new(Arc::clone(&consumer))));
        }
    }
}
