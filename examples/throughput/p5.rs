//! p5: memory while a slow handler works through a large backlog.
//!
//! Two topics, 100,000 records then 1,000,000, on 4 partitions each (2 against Apache Kafka:
//! see `EMBEDDED_PARTITIONS` and `BROKER_PARTITIONS`), each read by a channel on the library's
//! defaults whose handler yields and then spins 50 us: about 20,000 records/s, so the backlog
//! stays far larger than what is in flight. Each run stops after 50,000 records, long after
//! librdkafka's prefetch has filled up, and reports the consumer process's peak
//! resident size (VmHWM). Each run is a process of its own (this example started again as
//! `p5-backlog`), as a service reading that backlog would be: run one after the other in one
//! process, the second started with what the first left behind (4 to 5 MB of it) and was
//! always the 1M run. Each backlog is filled and worked through three times, alternating,
//! each time as a new topic; the figures are the medians of the three peaks. The embedded
//! cluster runs in another child process (`p5-cluster`), which also produces the topics, so
//! the peak is the consumer's, as it would be against a real broker: neither the cluster's
//! copy of the topics nor what a producer leaves behind counts. MB are 10^6 bytes.
//!
//! With `KAFKA_BOOTSTRAP_SERVERS` set, the backlogs go to that broker instead (new topics each
//! round, named as P1's, left there afterwards), filled by this process. That matters: the
//! embedded cluster answers a fetch with one record batch of a partition, Apache Kafka with up
//! to `max.partition.fetch.bytes` of it, and the prefetch holds all of the last fetch.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use messaging::EmbeddedKafka;

use crate::common::{
    application, by_thousand_keys, check_watermarks, filled_topic_on_any_broker, median,
    peak_rss_mib, produce, record, reset_peak_rss, start_rss_mib, started, watermark_client,
    watermarks, Reading, CHANNEL,
};

/// Partitions of each backlog on the embedded cluster: few enough that the small one (25,000
/// records a partition, give or take how the keys hash) is more than the consumer may hold of a
/// partition. librdkafka fetches a partition while fewer than `queued.min.messages` (10,000) of
/// its records are queued, and keeps each fetched record batch whole (this cluster answers a
/// fetch with one batch, up to about 8,700 of these records), and the loop holds its share of
/// `max-buffered-records` (1,024 over 4): about 19,000. On 8 partitions (12,500 records each)
/// the small backlog could sit in that whole, its peak measured the backlog rather than the
/// bound, and the ratio measured how the producer cut its batches (1.05 to 1.34 by round,
/// BENCHMARKS.md). Not fewer: the cluster keeps 5 MiB of a partition, which 250,000 of these
/// records fit in (the watermarks are checked) and 500,000 would not.
const EMBEDDED_PARTITIONS: i32 = 4;
/// About how many records the consumer may hold of a partition on the embedded cluster.
const EMBEDDED_BOUND: i64 = 19_000;
/// The same against Apache Kafka (at `KAFKA_BOOTSTRAP_SERVERS`), which answers a fetch with up
/// to `max.partition.fetch.bytes` (256 KiB) of a partition: 17,000 to 19,000 of these
/// lz4-compressed records, so a consumer may hold 27,500 to 29,500 of a partition (its
/// `queued.min.messages`, a fetch, the loop's share of `max-buffered-records`), more than
/// 25,000. On 2, each small backlog's 50,000 are more. (tansu, which answers with up to a
/// request's `fetch.max.bytes` whatever a partition's limit says, was not measured.)
const BROKER_PARTITIONS: i32 = 2;
const BROKER_BOUND: i64 = 30_000;
const CONSUMED: usize = 50_000;
const HANDLER_SPIN: Duration = Duration::from_micros(50);

/// Each backlog is filled and worked through this many times, alternating, by a fresh process
/// each time: the peak of one topic's run moves by up to 10 MB from one filling of it to the
/// next (the runs of one filling agree within 2), so the figures are the medians.
const ROUNDS: usize = 3;

pub async fn run() {
    let mut broker = Broker::from_environment();
    let mut small = Vec::new();
    let mut large = Vec::new();
    for round in 1..=ROUNDS {
        let (bootstrap, small_topic) = fill(&mut broker, 100_000, round).await;
        small.push(work_through(&bootstrap, &small_topic));
        let (bootstrap, large_topic) = fill(&mut broker, 1_000_000, round).await;
        large.push(work_through(&bootstrap, &large_topic));
        println!(
            "round {round}: 1M={:.0} 100k={:.0} MB, ratio {:.2}",
            large[round - 1],
            small[round - 1],
            large[round - 1] / small[round - 1]
        );
    }
    let (small, large) = (median(small), median(large));
    println!(
        "1M/100k peak ratio (medians of {ROUNDS} rounds): {:.2}",
        large / small
    );
    println!("p5 rss peak MB: 1M={large:.0} 100k={small:.0}");
}

/// Where the backlogs are: the embedded cluster in a child process, or the broker at
/// `KAFKA_BOOTSTRAP_SERVERS` when that is set. Apache Kafka answers a fetch with up to
/// `max.partition.fetch.bytes` of a partition, many record batches; the embedded cluster with
/// one record batch, whatever that setting says.
enum Broker {
    Embedded(ClusterProcess),
    External,
}

impl Broker {
    fn from_environment() -> Self {
        // As `filled_topic_on_any_broker` decides.
        match std::env::var("KAFKA_BOOTSTRAP_SERVERS") {
            Ok(_) => Broker::External,
            Err(_) => Broker::Embedded(ClusterProcess::start()),
        }
    }

    fn partitions(&self) -> i32 {
        match self {
            Broker::Embedded(_) => EMBEDDED_PARTITIONS,
            Broker::External => BROKER_PARTITIONS,
        }
    }

    /// About how many records a consumer may hold of a partition here.
    fn bound(&self) -> i64 {
        match self {
            Broker::Embedded(_) => EMBEDDED_BOUND,
            Broker::External => BROKER_BOUND,
        }
    }
}

/// The last line of a `p5-backlog` process: its peak resident size in MB.
const PEAK_LINE: &str = "consumer peak MB: ";

/// Fills a new topic with a backlog of `records`; the bootstrap address and the topic's name.
async fn fill(broker: &mut Broker, records: usize, round: usize) -> (String, String) {
    let topic = format!("p5-{records}-round-{round}");
    let partitions = broker.partitions();
    let (bootstrap, topic) = match broker {
        Broker::External => {
            filled_topic_on_any_broker(&topic, partitions, records, by_thousand_keys).await
        }
        Broker::Embedded(cluster) => {
            cluster.fill_topic(&topic, partitions, records);
            check_watermarks(&cluster.bootstrap, &topic, partitions, records);
            println!("topic {topic}: {records} records of 100 bytes on {partitions} partitions, watermarks checked");
            (cluster.bootstrap.clone(), topic)
        }
    };
    let fewest = fewest_in_a_partition(&bootstrap, &topic, partitions);
    let bound = broker.bound();
    if fewest > bound {
        println!("topic {topic}: the fewest records in a partition: {fewest}, more than the about {bound} a consumer may hold of one");
    } else {
        println!("WARNING: topic {topic}: the fewest records in a partition: {fewest}, not more than the about {bound} a consumer may hold of one: this run's peak measures its backlog, not the consumer's bound, and the ratio means little");
    }
    (bootstrap, topic)
}

/// The fewest records any partition of `topic` holds: for the run to reach the consumer's
/// bound, each partition's backlog must be more than it may hold of one.
fn fewest_in_a_partition(bootstrap: &str, topic: &str, partitions: i32) -> i64 {
    let client = watermark_client(bootstrap);
    (0..partitions)
        .map(|partition| {
            let (low, high) = watermarks(&client, topic, partition);
            high - low
        })
        .min()
        .expect("a partition")
}

/// Works through the first `CONSUMED` records of `topic` in a process of its own; that
/// process's peak resident size in MB.
fn work_through(bootstrap: &str, topic: &str) -> f64 {
    let output = Command::new(std::env::current_exe().expect("this example's path"))
        .args(["p5-backlog", bootstrap, topic])
        .stderr(Stdio::inherit())
        .output()
        .expect("the consumer's process");
    assert!(output.status.success(), "the consumer's process failed");
    let output = String::from_utf8(output.stdout).expect("UTF-8 output");
    let mut peak = None;
    for line in output.lines() {
        match line.strip_prefix(PEAK_LINE) {
            Some(value) => peak = Some(value.parse().expect("a peak in MB")),
            None => println!("{line}"),
        }
    }
    peak.expect("the consumer's process reports its peak")
}

/// The consumer's side (`throughput p5-backlog <bootstrap> <topic>`): works through the first
/// `CONSUMED` records of `topic` and prints what it held, ending with its peak resident size.
pub async fn serve_backlog(bootstrap: &str, topic: &str) {
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
    let application =
        application(topic, topic).set("messaging.connector.kafka.bootstrap.servers", bootstrap);
    let app = started(application, handler).await;
    let started = Instant::now();
    done_rx.await.expect("records handled");
    let elapsed = started.elapsed();
    let peak = megabytes(peak_rss_mib());
    let start = megabytes(start_rss_mib());
    let held = app.held_records(CHANNEL).expect("a Kafka channel");
    app.shutdown().await;
    println!(
        "{topic}: {CONSUMED} records handled in {:.1} s (from the start, with the group's join); \
         peak RSS {peak:.0} MB, {:.0} MB above the {start:.0} MB at the start; the loop held at most {} records",
        elapsed.as_secs_f64(),
        peak - start,
        held.peak
    );
    println!("{PEAK_LINE}{peak}");
}

fn megabytes(mib: f64) -> f64 {
    mib * 1.048_576
}

/// The embedded cluster in a child process: this example started again as `p5-cluster`,
/// told over its standard input which topics to create and fill. It exits when its input
/// closes.
struct ClusterProcess {
    child: Child,
    input: Option<ChildStdin>,
    output: BufReader<ChildStdout>,
    bootstrap: String,
}

impl ClusterProcess {
    fn start() -> Self {
        let mut child = Command::new(std::env::current_exe().expect("this example's path"))
            .arg("p5-cluster")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the cluster's process");
        let input = child.stdin.take();
        let mut output = BufReader::new(child.stdout.take().expect("piped output"));
        let bootstrap = read_line(&mut output);
        Self {
            child,
            input,
            output,
            bootstrap,
        }
    }

    /// Creates `topic` and fills it with `records` readings, keyed as P1's.
    fn fill_topic(&mut self, topic: &str, partitions: i32, records: usize) {
        let input = self.input.as_mut().expect("the cluster's input");
        writeln!(input, "{topic} {partitions} {records}").expect("ask for a topic");
        assert_eq!(read_line(&mut self.output), "filled", "topic {topic}");
    }
}

impl Drop for ClusterProcess {
    fn drop(&mut self) {
        // Its input closed, the cluster's process ends.
        drop(self.input.take());
        let _ = self.child.wait();
    }
}

fn read_line(output: &mut impl BufRead) -> String {
    let mut line = String::new();
    output.read_line(&mut line).expect("the cluster's answer");
    line.trim_end().to_owned()
}

/// The child's side (`throughput p5-cluster`): prints the cluster's bootstrap address, then
/// creates and fills each topic asked for on its input (`<topic> <partitions> <records>`)
/// and answers `filled`.
pub fn serve_cluster() {
    let cluster = EmbeddedKafka::get();
    let mut output = std::io::stdout().lock();
    writeln!(output, "{}", cluster.bootstrap_servers()).expect("stdout");
    output.flush().expect("stdout");
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("stdin");
        let asked: Vec<&str> = line.split(' ').collect();
        let [topic, partitions, records] = asked[..] else {
            panic!("expected <topic> <partitions> <records>, got {line}");
        };
        cluster
            .create_topic(topic, partitions.parse().expect("a partition count"))
            .expect("topic");
        let records = records.parse().expect("a record count");
        produce(
            cluster.bootstrap_servers(),
            topic,
            records,
            by_thousand_keys,
            record,
        );
        writeln!(output, "filled").expect("stdout");
        output.flush().expect("stdout");
    }
}
