//! p5: memory while a slow handler works through a large backlog.
//!
//! Two topics of 8 partitions each, 100,000 records then 1,000,000 (125,000 a partition, as
//! dense as P1's so the embedded cluster keeps them all), each read by a channel on the
//! library's defaults whose handler yields and then spins 50 us: about 20,000 records/s, so
//! the backlog stays far larger than what is in flight. Each run stops after 50,000 records,
//! long after librdkafka's prefetch has filled up, and reports the process's peak resident
//! size over the run (VmHWM, reset when the run starts, after freed memory is given back to
//! the system so what the producer left behind does not count). The embedded cluster lives in
//! the process, so its copy of the topics is part of the resident size. MB are 10^6 bytes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{
    application, by_thousand_keys, filled_topic, peak_rss_mib, reset_peak_rss, start_rss_mib,
    started, Reading, CHANNEL,
};

const PARTITIONS: i32 = 8;
const CONSUMED: usize = 50_000;
const HANDLER_SPIN: Duration = Duration::from_micros(50);

pub async fn run() {
    let small = backlog(100_000).await;
    let large = backlog(1_000_000).await;
    println!("1M/100k peak ratio: {:.2}", large / small);
    println!("p5 rss peak MB: 1M={large:.0} 100k={small:.0}");
}

/// Works through the first `CONSUMED` records of a backlog of `records`; the peak resident
/// size in MB.
async fn backlog(records: usize) -> f64 {
    let topic = format!("p5-{records}");
    filled_topic(&topic, PARTITIONS, records, by_thousand_keys).await;

    // SAFETY: glibc's malloc_trim only returns free memory to the system.
    unsafe { libc::malloc_trim(0) };
    reset_peak_rss();
    let handled = Arc::new(AtomicUsize::new(0));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let done_tx = Arc::new(Mutex::new(Some(done_tx)));
    let handler = move |reading: Reading| {
        let (handled, done_tx) = (handled.clone(), done_tx.clone());
        async move {
            tokio::task::yield_now().await;
            let started = Instant::now();
            while started.elapsed() < HANDLER_SPIN {
                std::hint::spin_loop();
            }
            std::hint::black_box(reading);
            if handled.fetch_add(1, Ordering::Relaxed) + 1 == CONSUMED {
                if let Some(done) = done_tx.lock().unwrap().take() {
                    let _ = done.send(());
                }
            }
        }
    };
    let app = started(application(&topic, &format!("p5-{records}")), handler).await;
    let started = Instant::now();
    done_rx.await.expect("records handled");
    let elapsed = started.elapsed();
    let peak = megabytes(peak_rss_mib());
    let start = megabytes(start_rss_mib());
    let held = app.held_records(CHANNEL).expect("a Kafka channel");
    app.shutdown().await;
    println!(
        "backlog {records}: {CONSUMED} records handled in {:.1} s (from the start, with the group's join); \
         peak RSS {peak:.0} MB, {:.0} MB above the {start:.0} MB at the start; the loop held at most {} records",
        elapsed.as_secs_f64(),
        peak - start,
        held.peak
    );
    peak
}

fn megabytes(mib: f64) -> f64 {
    mib * 1.048_576
}
