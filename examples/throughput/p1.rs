//! P1, today's scenario: the framework against raw rdkafka, eight alternating rounds.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;

use rdkafka::consumer::Consumer;
use rdkafka::Message;

use crate::common::{
    application, by_thousand_keys, filled_topic_on_any_broker, peak_rss_mib, peak_rss_rise_mib,
    raw_consumer, report_paired_ratios, reset_peak_rss, started, PairedRatio, Reading, Throughput,
    Window,
};

const RECORDS: usize = 500_000;
const PARTITIONS: i32 = 4;
/// Rounds of each side. Wall-clock rates on a small virtual machine swing by a third from one
/// round to the next, for either side: the median of the paired rounds' ratios says more than
/// the best of three did (BENCHMARKS.md, "P1's method"). Even, so that each side goes first
/// as often as the other.
const ROUNDS: usize = 8;
const TOPIC: &str = "throughput";

async fn raw_round(bootstrap: String, topic: String, group: String) -> Measured {
    let consumer = raw_consumer(&bootstrap, &group, &topic);
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

async fn framework_round(bootstrap: &str, topic: &str, group: &str) -> Measured {
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
    let application =
        application(topic, group).set("messaging.connector.kafka.bootstrap.servers", bootstrap);
    let app = started(application, handler).await;
    let measured = done_rx.await.expect("all records handled");
    app.shutdown().await;
    measured
}

/// What a round measured: records per second, process CPU microseconds per record, and the
/// process's peak resident memory: how far it rose during the round, and where it stood.
#[derive(Clone, Copy)]
struct Measured {
    rate: f64,
    cpu_per_record_us: f64,
    peak_rss_rise_mib: f64,
    peak_rss_mib: f64,
}

/// A round's window ends with its last record.
fn measured(window: Window) -> Measured {
    let Throughput { rate, cpu_us } = window.end(RECORDS);
    Measured {
        rate,
        cpu_per_record_us: cpu_us,
        peak_rss_rise_mib: peak_rss_rise_mib(),
        peak_rss_mib: peak_rss_mib(),
    }
}

fn report(round: usize, side: &str, measured: Measured) {
    println!(
        "round {round}: {side:<9} {:>12.0} records/s  {:.2} us CPU/record  peak RSS {:.0} MiB (+{:.0})",
        measured.rate, measured.cpu_per_record_us, measured.peak_rss_mib, measured.peak_rss_rise_mib
    );
}

pub async fn run() {
    let (bootstrap, topic) =
        filled_topic_on_any_broker(TOPIC, PARTITIONS, RECORDS, by_thousand_keys).await;

    let mut best = Best::default();
    // Each round's framework rate over its raw rate: the two sides of a round run back to back,
    // on the machine as it was then.
    let mut ratios: Vec<PairedRatio> = Vec::with_capacity(ROUNDS);
    for round in 1..=ROUNDS {
        let raw = || {
            let (bootstrap, topic) = (bootstrap.clone(), topic.clone());
            async move {
                reset_peak_rss();
                // Spawned, as the framework's consumer loop is: both run on a runtime worker.
                let raw = tokio::spawn(raw_round(bootstrap, topic, format!("raw-{round}")))
                    .await
                    .expect("raw round");
                report(round, "raw", raw);
                raw
            }
        };
        let framework = || async {
            reset_peak_rss();
            let framework =
                framework_round(&bootstrap, &topic, &format!("framework-{round}")).await;
            report(round, "framework", framework);
            framework
        };
        // Each side goes first in every other round, so neither always finds the broker's
        // caches, or the CPU's clock, as the other left them.
        let (raw, framework) = if round % 2 == 1 {
            let raw = raw().await;
            (raw, framework().await)
        } else {
            let framework = framework().await;
            (raw().await, framework)
        };
        best.add(raw, framework);
        ratios.push((round % 2 == 1, framework.rate / raw.rate));
    }
    best.report();
    let median = report_paired_ratios(&ratios, "raw", "framework");
    println!("framework/raw ratio: {median:.2}");
}

/// The best of each side over the rounds: highest rate, least CPU per record, and the highest
/// memory peaks.
#[derive(Default)]
struct Best {
    raw: Option<Measured>,
    framework: Option<Measured>,
}

impl Best {
    fn add(&mut self, raw: Measured, framework: Measured) {
        for (best, round) in [(&mut self.raw, raw), (&mut self.framework, framework)] {
            *best = Some(match *best {
                None => round,
                Some(best) => Measured {
                    rate: best.rate.max(round.rate),
                    cpu_per_record_us: best.cpu_per_record_us.min(round.cpu_per_record_us),
                    peak_rss_rise_mib: best.peak_rss_rise_mib.max(round.peak_rss_rise_mib),
                    peak_rss_mib: best.peak_rss_mib.max(round.peak_rss_mib),
                },
            });
        }
    }

    fn report(&self) {
        let (raw, framework) = (
            self.raw.expect("a round ran"),
            self.framework.expect("a round ran"),
        );
        println!(
            "peak RSS: raw {:.0} MiB, framework {:.0} MiB (framework/raw {:.2})",
            raw.peak_rss_mib,
            framework.peak_rss_mib,
            framework.peak_rss_mib / raw.peak_rss_mib
        );
        println!(
            "peak RSS rise: raw {:.0} MiB, framework {:.0} MiB (framework/raw {:.2})",
            raw.peak_rss_rise_mib,
            framework.peak_rss_rise_mib,
            framework.peak_rss_rise_mib / raw.peak_rss_rise_mib
        );
        println!(
            "least CPU per record: raw {:.2} us, framework {:.2} us (framework/raw {:.2})",
            raw.cpu_per_record_us,
            framework.cpu_per_record_us,
            framework.cpu_per_record_us / raw.cpu_per_record_us
        );
        println!(
            "best: raw {:.0} records/s, framework {:.0} records/s",
            raw.rate, framework.rate
        );
        println!("best/best ratio: {:.2}", framework.rate / raw.rate);
    }
}
