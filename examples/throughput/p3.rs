//! p3: I/O-bound and key-ordered.
//!
//! 10,000 records on one partition, keys `k0` to `k99`; the handler awaits a wait drawn for
//! each sequence from a seeded xorshift, 0 to 5 ms, with `max-concurrency=64` and
//! `ordering=key`. The handler measures each wait as it happened (the timer rounds up), and the
//! floor comes from those measured waits: no schedule can beat the longest chain of one key's
//! waits, nor the sum of all waits spread over 64 at a time. The wall time runs from the first
//! handler call to the return of the last, which settles the record.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::common::{application, filled_topic, started, Reading, CHANNEL};

const RECORDS: usize = 10_000;
const KEYS: u64 = 100;
const MAX_CONCURRENCY: usize = 64;
const LONGEST_WAIT_US: u64 = 5_000;
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;
const TOPIC: &str = "p3";

/// Each sequence's wait, 0 to 5 ms, the same in every run.
fn waits() -> Vec<Duration> {
    let mut state = SEED;
    (0..RECORDS)
        .map(|_| {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            Duration::from_micros(state % (LONGEST_WAIT_US + 1))
        })
        .collect()
}

fn key(sequence: u64) -> u64 {
    sequence % KEYS
}

/// The larger of the longest per-key chain of `waits` and their sum over `MAX_CONCURRENCY`.
struct Floor {
    longest_chain: Duration,
    spread: Duration,
}

impl Floor {
    fn of(waits: &[Duration]) -> Self {
        let mut chains = vec![Duration::ZERO; KEYS as usize];
        for (sequence, wait) in waits.iter().enumerate() {
            chains[key(sequence as u64) as usize] += *wait;
        }
        Self {
            longest_chain: chains.into_iter().max().expect("keys"),
            spread: waits.iter().sum::<Duration>() / MAX_CONCURRENCY as u32,
        }
    }

    fn floor(&self) -> Duration {
        self.longest_chain.max(self.spread)
    }
}

/// What the handler calls record while the channel runs.
struct Progress {
    first: OnceLock<Instant>,
    /// Each sequence's wait as measured, in nanoseconds.
    measured: Vec<AtomicU64>,
    handled: AtomicUsize,
    last: Mutex<Option<oneshot::Sender<Instant>>>,
}

pub async fn run() {
    filled_topic(TOPIC, 1, RECORDS, |sequence| format!("k{}", key(sequence))).await;

    let waits = Arc::new(waits());
    let (last_tx, last_rx) = oneshot::channel();
    let progress = Arc::new(Progress {
        first: OnceLock::new(),
        measured: (0..RECORDS).map(|_| AtomicU64::new(0)).collect(),
        handled: AtomicUsize::new(0),
        last: Mutex::new(Some(last_tx)),
    });
    let handler = {
        let (waits, progress) = (waits.clone(), progress.clone());
        move |reading: Reading| {
            let (waits, progress) = (waits.clone(), progress.clone());
            async move {
                progress.first.get_or_init(Instant::now);
                let sequence = reading.sequence as usize;
                let started = Instant::now();
                tokio::time::sleep(waits[sequence]).await;
                let waited = started.elapsed().as_nanos() as u64;
                progress.measured[sequence].store(waited, Ordering::Relaxed);
                if progress.handled.fetch_add(1, Ordering::AcqRel) + 1 == RECORDS {
                    if let Some(last) = progress.last.lock().unwrap().take() {
                        let _ = last.send(Instant::now());
                    }
                }
            }
        }
    };
    let app = started(
        application(TOPIC, "p3")
            .set(
                "messaging.incoming.readings.max-concurrency",
                MAX_CONCURRENCY,
            )
            .set("messaging.incoming.readings.ordering", "key"),
        handler,
    )
    .await;
    let last = last_rx.await.expect("all records handled");
    let wall = last - *progress.first.get().expect("the first record was seen");
    let held = app.held_records(CHANNEL).expect("a Kafka channel");
    app.shutdown().await;

    let measured: Vec<Duration> = progress
        .measured
        .iter()
        .map(|nanos| Duration::from_nanos(nanos.load(Ordering::Relaxed)))
        .collect();
    let drawn = Floor::of(&waits);
    let floor = Floor::of(&measured);
    println!(
        "{RECORDS} records, {KEYS} keys, 1 partition, waits of 0-5 ms, max-concurrency {MAX_CONCURRENCY}, ordering=key"
    );
    println!(
        "drawn waits:    longest key chain {:.0} ms, sum/{MAX_CONCURRENCY} {:.0} ms",
        millis(drawn.longest_chain),
        millis(drawn.spread)
    );
    println!(
        "measured waits: longest key chain {:.0} ms, sum/{MAX_CONCURRENCY} {:.0} ms",
        millis(floor.longest_chain),
        millis(floor.spread)
    );
    println!(
        "wall (first record to last settle) {:.0} ms, floor {:.0} ms; the loop held at most {} records",
        millis(wall),
        millis(floor.floor()),
        held.peak
    );
    println!(
        "p3 wall/floor ratio: {:.2}",
        wall.as_secs_f64() / floor.floor().as_secs_f64()
    );
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}
