//! The independent broker of the end-to-end tests (`../shared/tools/kafka-broker`; `.ci/run`
//! starts one and sets `MESSAGING_E2E_BOOTSTRAP`), private ones a test starts and stops, and the
//! Cosmos DB emulator served over HTTPS (`../shared/tools/cosmos-emulator`; `.ci/run` starts one
//! and sets `MESSAGING_E2E_COSMOS_ENDPOINT`).

use std::process::Command;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;

/// The shared broker's address. Without `MESSAGING_E2E_BOOTSTRAP` the end-to-end tests say so
/// and return, except under CI (`CI` set), where a missing broker is a failure.
pub fn broker() -> Option<String> {
    match std::env::var("MESSAGING_E2E_BOOTSTRAP") {
        Ok(bootstrap) => Some(bootstrap),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("CI must start the broker and set MESSAGING_E2E_BOOTSTRAP")
        }
        Err(_) => {
            eprintln!("skipped: set MESSAGING_E2E_BOOTSTRAP (see ../shared/tools/kafka-broker) to run the end-to-end tests");
            None
        }
    }
}

/// The Cosmos DB emulator's endpoint, e.g. `https://127.0.0.1:18081/`. Like [`broker`]: without
/// `MESSAGING_E2E_COSMOS_ENDPOINT` the tests that need it say so and return, except under CI.
pub fn cosmos_endpoint() -> Option<String> {
    match std::env::var("MESSAGING_E2E_COSMOS_ENDPOINT") {
        Ok(endpoint) => Some(endpoint),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("CI must start the Cosmos DB emulator and set MESSAGING_E2E_COSMOS_ENDPOINT")
        }
        Err(_) => {
            eprintln!("skipped: set MESSAGING_E2E_COSMOS_ENDPOINT (see ../shared/tools/cosmos-emulator) to run the Cosmos DB end-to-end tests");
            None
        }
    }
}

/// Whether the shared broker is tansu: `E2E_BROKER_IMPL` if set, else what the broker tool
/// recorded when it started the broker on `MESSAGING_E2E_BOOTSTRAP`'s port
/// (`${TMPDIR:-/tmp}/kafka-broker-<port>.impl`, as `.ci/run` starts it). Another broker counts
/// as not tansu.
pub fn shared_broker_is_tansu() -> bool {
    if let Ok(implementation) = std::env::var("E2E_BROKER_IMPL") {
        return implementation == "tansu";
    }
    let Some(port) = std::env::var("MESSAGING_E2E_BOOTSTRAP")
        .ok()
        .and_then(|bootstrap| bootstrap.rsplit(':').next().map(str::to_owned))
    else {
        return false;
    };
    let state = std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".to_owned());
    std::fs::read_to_string(format!("{state}/kafka-broker-{port}.impl"))
        .is_ok_and(|implementation| implementation.trim() == "tansu")
}

pub async fn create_topics(bootstrap: &str, topics: &[(&str, i32)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1)))
        .collect();
    for result in admin
        .create_topics(&new_topics, &AdminOptions::new())
        .await
        .expect("create topics")
    {
        result.expect("topic created");
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A broker of the test's own on a free port, for tests that stop and start it. Wiped when
/// dropped.
pub struct PrivateBroker {
    pub port: u16,
    pub bootstrap: String,
    apache_kafka: bool,
}

const BROKER_TOOL: &str = "../shared/tools/kafka-broker";

fn broker_tool(command: &str, port: u16) -> String {
    try_broker_tool(command, port, &[]).unwrap_or_else(|error| panic!("{error}"))
}

fn try_broker_tool(
    command: &str,
    port: u16,
    environment: &[(&str, &str)],
) -> Result<String, String> {
    let output = Command::new(BROKER_TOOL)
        .args([command, &port.to_string()])
        .envs(environment.iter().copied())
        .output()
        .unwrap_or_else(|error| panic!("{BROKER_TOOL} {command}: {error}"));
    if !output.status.success() {
        return Err(format!(
            "{BROKER_TOOL} {command} {port} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// How many times a private Apache Kafka broker is started before the test gives up.
const BROKER_STARTS: usize = 3;

/// The tool's environment: for Apache Kafka, start it or fail, rather than fall back to tansu.
fn implementation(apache_kafka: bool) -> &'static [(&'static str, &'static str)] {
    if apache_kafka {
        &[("KAFKA_BROKER_IMPL", "apache-kafka")]
    } else {
        &[]
    }
}

impl PrivateBroker {
    /// Starts a broker of the implementation the shared one has. The tool formats a new Apache
    /// Kafka broker's storage with a random cluster id, which the storage tool refuses when it
    /// begins with `-` (one start in 64); the tool would then fall back to tansu, which takes
    /// 15 minutes to compile and does not rejoin after a freeze. So an Apache Kafka start that
    /// fails is wiped and tried again, with a new id and a new port (in case the port was
    /// taken meanwhile).
    pub fn start() -> Self {
        let apache_kafka = Command::new(BROKER_TOOL)
            .arg("which")
            .output()
            .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "apache-kafka");
        let starts = if apache_kafka { BROKER_STARTS } else { 1 };
        let mut failures = Vec::new();
        for _ in 0..starts {
            let port = free_port();
            match try_broker_tool("start", port, implementation(apache_kafka)) {
                Ok(bootstrap) => {
                    return Self {
                        port,
                        bootstrap,
                        apache_kafka,
                    }
                }
                Err(error) => {
                    failures.push(error);
                    let _ = try_broker_tool("wipe", port, &[]);
                }
            }
        }
        panic!("no broker after {starts} starts: {failures:#?}")
    }

    pub fn stop(&self) {
        broker_tool("stop", self.port);
    }

    /// Starts the stopped broker again, with its data: the same implementation, never a
    /// fallback to another.
    pub fn restart(&self) {
        try_broker_tool("start", self.port, implementation(self.apache_kafka))
            .unwrap_or_else(|error| panic!("{error}"));
    }

    /// Freezes the broker's process (SIGSTOP): connections stay open, nothing answers.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    /// The tool keeps the broker's process id beside its state, in `$TMPDIR/kafka-broker-<port>.pid`.
    fn signal(&self, signal: libc::c_int) {
        let directory = std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".into());
        let file = format!("{directory}/kafka-broker-{}.pid", self.port);
        let pid: libc::pid_t = std::fs::read_to_string(&file)
            .unwrap_or_else(|error| panic!("{file}: {error}"))
            .trim()
            .parse()
            .expect("a process id");
        // SAFETY: signalling a process of ours (the broker this test started).
        assert_eq!(
            unsafe { libc::kill(pid, signal) },
            0,
            "signal {signal} to the broker"
        );
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = Command::new(BROKER_TOOL)
            .args(["wipe", &self.port.to_string()])
            .output();
    }
}

/// Aborts the test process unless dropped within `limit`. A test whose runtime's one worker is
/// blocked cannot fail on its own (its timers never fire): it would hang. The watchdog, on a
/// thread of its own, runs `before_abort` (to thaw a frozen broker, say) and aborts instead.
pub struct Watchdog {
    _done: std::sync::mpsc::Sender<()>,
}

impl Watchdog {
    pub fn start(
        limit: std::time::Duration,
        what: &'static str,
        before_abort: impl FnOnce() + Send + 'static,
    ) -> Self {
        let (done, finished) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            // Dropping the watchdog drops the sender: the wait ends as disconnected.
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(limit) {
                eprintln!("watchdog: {what} did not finish within {limit:?}; aborting the tests");
                before_abort();
                std::process::abort();
            }
        });
        Self { _done: done }
    }
}
