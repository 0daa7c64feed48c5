//! P1, today's scenario: the framework against raw rdkafka, three alternating rounds.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;

use rdkafka::consumer::Consumer;
use rdkafka::Message;

use crate::common::{
    application, by_thousand_keys, filled_topic, peak_rss_rise_mib, raw_consumer, reset_peak_rss,
    started, Reading, Throughput, Window,
};

const RECORDS: usize = 500_000;
const PARTITIONS: i32 = 4;
const ROUNDS: usize = 3;
const TOPIC: &str = "throughput";

async fn raw_round(bootstrap: String, group: String) -> Measured {
    let consumer = raw_consumer(&bootstrap, &group, TOPIC);
    let mut first = None;
    let mut stream = consumer.stream();
    for _ in 0..RECORDS {
        let message = stream
            .next()
            .await
            .expect("streams never end")
            .expect("record");
        first.get_or_insert_with(Window::start);
        let reading: Reading =
            serde_json::from_slice(message.payload().expect("value")).expect("decode");
        std::hint::black_box(reading);
        consumer
            .store_offset_from_message(&message)
            .expect("store offset");
    }
    measured(first.expect("records"))
}

async fn framework_round(group: &str) -> Measured {
    let handled = Arc::new(AtomicUsize::new(0));
    let first = Arc::new(Mutex::new(None::<Window>));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Measured>();
    let done_tx = Arc::new(Mutex::new(Some(done_tx)));
    let handler = {
        let (handled, first) = (handled.clone(), first.clone());
        move |reading: Reading| {
            // A channel calls its handler for one record at a time, so a plain load and store
            // count exactly, without the locked add the raw loop's counter does not pay either.
            let count = handled.load(Ordering::Relaxed) + 1;
            handled.store(count, Ordering::Relaxed);
            if count == 1 {
                *first.lock().unwrap() = Some(Window::start());
            }
            if count == RECORDS {
                if let Some(done) = done_tx.lock().unwrap().take() {
                    let window = first
                        .lock()
                        .unwrap()
                        .take()
                        .expect("the first record was seen");
                    let _ = done.send(measured(window));
                }
            }
            std::hint::black_box(reading);
            std::future::ready(())
        }
    };
    let app = started(application(TOPIC, group), handler).await;
    let measured = done_rx.await.expect("all records handled");
    app.shutdown().await;
    measured
}

/// What a round measured: records per second, process CPU microseconds per record, and the
/// process's peak resident memory.
#[derive(Clone, Copy)]
struct Measured {
    rate: f64,
    cpu_per_record_us: f64,
    peak_rss_mib: f64,
}

/// A round's window ends with its last record.
fn measured(window: Window) -> Measured {
    let Throughput { rate, cpu_us } = window.end(RECORDS);
    Measured {
        rate,
        cpu_per_record_us: cpu_us,
        peak_rss_mib: peak_rss_rise_mib(),
    }
}

fn report(round: usize, side: &str, measured: Measured) {
    println!(
        "round {round}: {side:<9} {:>12.0} records/s  {:.2} us CPU/record  peak RSS +{:.0} MiB",
        measured.rate, measured.cpu_per_record_us, measured.peak_rss_mib
    );
}

pub async fn run() {
    let bootstrap = filled_topic(TOPIC, PARTITIONS, RECORDS, by_thousand_keys).await;

    let (mut best_raw, mut best_framework) = (0f64, 0f64);
    let (mut least_cpu_raw, mut least_cpu_framework) = (f64::MAX, f64::MAX);
    let (mut peak_raw, mut peak_framework) = (0f64, 0f64);
    for round in 1..=ROUNDS {
        reset_peak_rss();
        // Spawned, as the framework's consumer loop is: both run on a runtime worker thread.
        let raw = tokio::spawn(raw_round(bootstrap.clone(), format!("raw-{round}")))
            .await
            .expect("raw round");
        report(round, "raw", raw);
        reset_peak_rss();
        let framework = framework_round(&format!("framework-{round}")).await;
        report(round, "framework", framework);
        best_raw = best_raw.max(raw.rate);
        best_framework = best_framework.max(framework.rate);
        least_cpu_raw = least_cpu_raw.min(raw.cpu_per_record_us);
        least_cpu_framework = least_cpu_framework.min(framework.cpu_per_record_us);
        peak_raw = peak_raw.max(raw.peak_rss_mib);
        peak_framework = peak_framework.max(framework.peak_rss_mib);
    }
    println!(
        "peak RSS rise: raw {peak_raw:.0} MiB, framework {peak_framework:.0} MiB (framework/raw {:.2})",
        peak_framework / peak_raw
    );
    println!(
        "least CPU per record: raw {least_cpu_raw:.2} us, framework {least_cpu_framework:.2} us (framework/raw {:.2})",
        least_cpu_framework / least_cpu_raw
    );
    println!("best: raw {best_raw:.0} records/s, framework {best_framework:.0} records/s");
    println!("framework/raw ratio: {:.2}", best_framework / best_raw);
}
