//! `bootstrap.servers = "embedded"`: one in-process Kafka-protocol cluster for the whole process.
//!
//! It is librdkafka's mock cluster. It keeps nothing on disk and holds at most 5 MiB of batches
//! per partition (silently dropping the oldest beyond that). For development, examples and
//! tests, never production. The cluster object is `!Send`, so a dedicated thread owns it for the
//! life of the process and takes requests.
//!
//! A group's first join is answered at once. The mock's default, like a broker's
//! `group.initial.rebalance.delay.ms`, waits 3 s for more members before the first assignment:
//! every service, example and test on this cluster waited that long for its first record. A
//! member that joins later triggers an ordinary rebalance, which the consumer handles.

use std::sync::mpsc;
use std::sync::OnceLock;

use rdkafka::client::Client;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::ClientConfig;

/// The value of `bootstrap.servers` that selects the embedded cluster.
pub(crate) const EMBEDDED: &str = "embedded";

/// Handle to the process-wide embedded cluster.
pub struct EmbeddedKafka {
    bootstrap_servers: String,
    requests: mpsc::Sender<CreateTopic>,
}

struct CreateTopic {
    name: String,
    partitions: i32,
    done: mpsc::Sender<Result<(), String>>,
}

static CLUSTER: OnceLock<EmbeddedKafka> = OnceLock::new();

/// Sets the mock's initial rebalance delay to 0 (see the module's comment).
fn answer_first_joins_at_once<C: rdkafka::ClientContext>(owner: &Client<C>) {
    // SAFETY: `owner` is a live client, so its native handle is valid; the mock cluster it
    // returns lives as long as that client, which outlives this call. The setter only stores
    // the value, under the cluster's lock.
    unsafe {
        let cluster = rdkafka::bindings::rd_kafka_handle_mock_cluster(owner.native_ptr());
        assert!(!cluster.is_null(), "the client owns a mock cluster");
        rdkafka::bindings::rd_kafka_mock_group_initial_rebalance_delay_ms(cluster, 0);
    }
}

impl EmbeddedKafka {
    /// The cluster, started on first use.
    pub fn get() -> &'static EmbeddedKafka {
        CLUSTER.get_or_init(Self::start)
    }

    fn start() -> Self {
        let (requests, inbox) = mpsc::channel::<CreateTopic>();
        let (address_tx, address_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("embedded-kafka".into())
            .spawn(move || {
                // A client configured with `test.mock.num.brokers` owns a mock cluster, and lets
                // us reach its native handle for the one setting rdkafka's `MockCluster` lacks.
                let owner: BaseProducer = ClientConfig::new()
                    .set("test.mock.num.brokers", "1")
                    .create()
                    .expect("librdkafka could not start its mock cluster");
                answer_first_joins_at_once(owner.client());
                let cluster = owner
                    .client()
                    .mock_cluster()
                    .expect("a client with test.mock.num.brokers has a mock cluster");
                address_tx
                    .send(cluster.bootstrap_servers())
                    .expect("starter waits for the address");
                // Serves until the process exits: the sender lives in a static.
                for request in inbox {
                    let result = cluster
                        .create_topic(&request.name, request.partitions, 1)
                        .map_err(|error| error.to_string());
                    let _ = request.done.send(result);
                }
            })
            .expect("spawn the embedded Kafka thread");
        let bootstrap_servers = address_rx
            .recv()
            .expect("the embedded Kafka thread reports its address");
        tracing::warn!(
            %bootstrap_servers,
            "EMBEDDED KAFKA: an in-process mock cluster that keeps NOTHING on disk and drops the oldest \
             data beyond 5 MiB per partition; for development and tests only, never production"
        );
        Self {
            bootstrap_servers,
            requests,
        }
    }

    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    /// Creates a topic; creating one that exists is not an error.
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), String> {
        let (done, result) = mpsc::channel();
        self.requests
            .send(CreateTopic {
                name: name.to_owned(),
                partitions,
                done,
            })
            .map_err(|_| "the embedded Kafka thread has stopped".to_owned())?;
        match result
            .recv()
            .map_err(|_| "the embedded Kafka thread has stopped".to_owned())?
        {
            Err(error)
                if error.contains("TopicAlreadyExists") || error.contains("already exists") =>
            {
                Ok(())
            }
            other => other,
        }
    }
}
