//! `bootstrap.servers = "embedded"`: one in-process Kafka-protocol cluster for the whole process.
//!
//! It is librdkafka's mock cluster. It keeps nothing on disk, holds at most 5 MiB of batches
//! per partition (silently dropping the oldest beyond that), and delays a group's first join by
//! about 3 s. For development, examples and tests, never production. The cluster object is
//! `!Send`, so a dedicated thread owns it for the life of the process and takes requests.

use std::sync::mpsc;
use std::sync::OnceLock;

use rdkafka::mocking::MockCluster;

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
                let cluster =
                    MockCluster::new(1).expect("librdkafka could not start its mock cluster");
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
