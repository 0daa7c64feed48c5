//! Benchmarks of the consumer, each on the embedded cluster and against a baseline measured in
//! the same run.
//!
//! ```text
//! cargo run --release --example throughput          # P1
//! cargo run --release --example throughput -- p3    # or p2, p5, cosmos, cosmos-batch
//! ```
//!
//! Each scenario prints its figures and ends with one line to compare runs over time:
//! - P1 (no argument): the framework against raw rdkafka, `framework/raw ratio: X` (a median);
//! - `p2`: 1 % of the records dead-lettered, `p2 framework/p1 rate ratio: X` (a median);
//! - `p3`: I/O-bound handlers, key-ordered, `p3 wall/floor ratio: X`;
//! - `p5`: memory while a slow handler works through a backlog of 1,000,000 records and of
//!   100,000, `p5 rss peak MB: 1M=X 100k=Y`;
//! - `cosmos`: Kafka records through a processor into the Cosmos DB sink on the in-memory
//!   emulator, at `max-concurrency` 1, 16 and 64, against the bare SDK's upserts at the same
//!   concurrency, `cosmos sink/sdk ratio: c1=X c16=Y c64=Z`;
//! - `cosmos-batch`: at the SDK level, transactional batches per partition key against point
//!   upserts on the emulator, `cosmos batch/point ratio: 20k b100=X; 2k b10=Y b100=Z`.
//!
//! Every topic of P1 to p5 holds 100-byte JSON records, lz4-compressed, and its partition
//! watermarks are checked before anything is timed (as the `cosmos` topic's are): the embedded
//! cluster silently drops the oldest batches beyond 5 MiB per partition.
//!
//! P1 produces 500,000 records on 4 partitions, then runs eight rounds of each of:
//! - raw: an rdkafka `StreamConsumer` read through one message stream, decoding each record and
//!   storing its offset, in a spawned task like the framework's consumer loop;
//! - framework: an `#[incoming]`-style handler decoding the same struct, throttled commits.
//!
//! The raw side goes first in odd rounds, the framework in even ones. Each round reads the whole
//! topic with a fresh group and is timed from its first record to its last. Each side runs on
//! its defaults, but for `fetch.queue.backoff.ms`: the raw consumer sets the library's 10 ms,
//! since librdkafka's default of 1000 ms pauses a partition whenever its local queue is full,
//! which would time the pauses, not the work.
//! Each round also reports the process CPU time spent per record in that window (consumer,
//! librdkafka's fetch thread and the embedded broker together): on a busy or virtualised
//! machine wall-clock rates vary from round to round far more than the CPU cost does.
//! Each round also reports the process's peak resident memory (VmHWM, reset before the round
//! after freed memory is given back to the system) and how far it rose above where it stood
//! when the round started: prefetched records are most of that rise, so it shows what each
//! consumer buffers. The peak itself also counts the embedded cluster's copy of the topic.
//! With `KAFKA_BOOTSTRAP_SERVERS` set, P1 runs against that broker instead of the embedded
//! cluster, on a topic of its own (`throughput-<pid>-<time>`, left there afterwards); so does p5.
//! `THROUGHPUT_KAFKA_<PROPERTY>` variables set librdkafka properties of the framework's Kafka
//! clients, for example `THROUGHPUT_KAFKA_MAX_PARTITION_FETCH_BYTES=1048576` (a scenario's own
//! channel settings win; the raw baselines read none); the run prints each one it applies.
//! The last line is `framework/raw ratio: <median over the rounds of the round's framework rate
//! over its raw rate>` (of eight: the mean of the middle two). The lines before it list every
//! round's ratio, the medians of the rounds each side went first in, and `best/best ratio`:
//! the best framework rate over the best raw rate, of eight rounds each (until 2026-12-01
//! P1's headline was that figure of three rounds each, which is not comparable).
//!
//! The other scenarios say how they measure in their own modules.

mod common;
mod cosmos;
mod p1;
mod p2;
mod p3;
mod p5;

fn main() {
    let scenario = std::env::args().nth(1);
    if scenario.as_deref() == Some("p5-cluster") {
        return p5::serve_cluster();
    }
    if matches!(scenario.as_deref(), Some("cosmos" | "cosmos-batch")) {
        // Before any thread starts: the environment is changed with no one reading it.
        cosmos::without_library_backtraces();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if scenario.as_deref() == Some("p5-backlog") {
        let arguments: Vec<String> = std::env::args().skip(2).collect();
        let [bootstrap, topic] = &arguments[..] else {
            panic!("p5-backlog <bootstrap> <topic>");
        };
        return runtime.block_on(p5::serve_backlog(bootstrap, topic));
    }
    runtime.block_on(run(scenario.as_deref()));
}

async fn run(scenario: Option<&str>) {
    for (key, value) in common::consumer_overrides() {
        println!("override: {key} = {value}");
    }
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        match name.strip_prefix("MESSAGING_CONNECTOR_KAFKA_") {
            Some("BOOTSTRAP_SERVERS" | "METADATA_BROKER_LIST") => {
                println!("ignored: {name} (P1 and p5 follow KAFKA_BOOTSTRAP_SERVERS)")
            }
            Some(property) => {
                println!("ignored: {name} (the example reads THROUGHPUT_KAFKA_{property})")
            }
            None => {}
        }
    }
    match scenario {
        None | Some("p1") => p1::run().await,
        Some("p2") => p2::run().await,
        Some("p3") => p3::run().await,
        Some("p5") => p5::run().await,
        Some("cosmos") => cosmos::run().await,
        Some("cosmos-batch") => cosmos::run_batches().await,
        Some(other) => {
            eprintln!(
                "unknown scenario {other}: p2, p3, p5, cosmos or cosmos-batch (no argument runs P1)"
            );
            std::process::exit(2);
        }
    }
}
