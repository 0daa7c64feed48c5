//! Gives a client that lost every broker its `bootstrap.servers` again.
//!
//! librdkafka 2.12 can forget every broker for good: a broker that has just been fenced by its
//! controller (a broker frozen for longer than `broker.session.timeout.ms`, then resumed) answers
//! a metadata request with no brokers in it, and the client decommissions every broker it knows.
//! Its own re-bootstrap then never comes: the same answer cancels the re-bootstrap that the
//! brokers going down had scheduled, and leaves it marked as under way (librdkafka issue 5301).
//! The client sends nothing again: a producer holds its records until `message.timeout.ms`, a
//! consumer fetches nothing, and both stay that way after the broker is back. Seen here in 5
//! of 12 runs where Apache Kafka was frozen (SIGSTOP) for 60 s.
//!
//! The broker probe notices a client that has reached no broker for a while; when that client
//! also knows no broker at all, it adds the bootstrap servers itself, as the lost re-bootstrap
//! would have. A client that still knows its brokers is left alone: librdkafka reconnects to them
//! on its own, and the re-bootstrap it schedules when they all go down works. A client set to
//! `metadata.recovery.strategy=none` is left alone too: it asked never to re-bootstrap.

use std::ffi::{c_char, CStr, CString};
use std::time::Duration;

use rdkafka::bindings as native;
use rdkafka::client::Client;
use rdkafka::ClientContext;
use tokio::time::Instant;

/// How long a client reaches no broker before it may be given its bootstrap servers again:
/// longer than librdkafka's longest reconnect backoff (`reconnect.backoff.max.ms`, 10 s), so a
/// client that can recover on its own has.
const FIRST_AFTER: Duration = Duration::from_secs(30);
/// The longest wait between two re-bootstraps of a client that keeps reaching no broker. Each
/// one is remembered by librdkafka for the client's life (`rd_kafka_brokers_add`), so they
/// are spaced out: 30 s, 60 s, 120 s, 240 s, then every 5 minutes.
const LONGEST_INTERVAL: Duration = Duration::from_secs(300);

/// When a client that reaches no broker is due a re-bootstrap: from 30 s into the outage, at
/// every failed probe until one is made (a client that still knows its brokers does not need
/// one, and may lose them at any probe), then after ever longer waits.
#[derive(Debug, Default)]
pub(crate) struct RebootstrapSchedule {
    /// While the client reaches no broker: from when a re-bootstrap is due, and the wait after
    /// the next one.
    due: Option<(Instant, Duration)>,
}

impl RebootstrapSchedule {
    /// The client reached its broker (whatever the broker said).
    pub(crate) fn reached(&mut self) {
        self.due = None;
    }

    /// The client reached no broker at `now`; whether a re-bootstrap is due.
    pub(crate) fn unreachable(&mut self, now: Instant) -> bool {
        match self.due {
            None => {
                self.due = Some((now + FIRST_AFTER, FIRST_AFTER * 2));
                false
            }
            Some((due, _)) => now >= due,
        }
    }

    /// The client was given its bootstrap servers at `now`: the next re-bootstrap waits.
    pub(crate) fn rebootstrapped(&mut self, now: Instant) {
        let interval = self.due.map_or(FIRST_AFTER * 2, |(_, interval)| interval);
        self.due = Some((now + interval, (interval * 2).min(LONGEST_INTERVAL)));
    }
}

/// What a re-bootstrap that was due did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Rebootstrapped {
    /// The client knew no broker: it has its bootstrap servers again.
    Added,
    /// The client still knows brokers (it reconnects to them itself).
    StillKnowsBrokers,
    /// `metadata.recovery.strategy=none`: the client never re-bootstraps.
    NotWanted,
}

/// Gives `client` its bootstrap servers again if it knows no broker.
pub(crate) fn rebootstrap_if_lost<C: ClientContext>(client: &Client<C>) -> Rebootstrapped {
    if setting(client, "metadata.recovery.strategy").as_deref() == Some("none") {
        return Rebootstrapped::NotWanted;
    }
    if known_brokers(client) > 0 {
        return Rebootstrapped::StillKnowsBrokers;
    }
    add_bootstrap_servers(client);
    Rebootstrapped::Added
}

/// How many brokers `client` knows by id (from metadata). The bootstrap servers are not
/// counted: a client drops them once it has learned the brokers.
fn known_brokers<C: ClientContext>(client: &Client<C>) -> usize {
    let mut count = 0;
    // SAFETY: the client is alive for the call; librdkafka returns a malloc'ed array of `count`
    // ids (NULL-safe to free), which librdkafka's allocator frees.
    unsafe {
        let ids = native::rd_kafka_brokers_learned_ids(client.native_ptr(), &mut count);
        native::rd_kafka_mem_free(client.native_ptr(), ids.cast());
    }
    count
}

/// Adds `client`'s own `bootstrap.servers` to its brokers, as librdkafka's re-bootstrap does.
fn add_bootstrap_servers<C: ClientContext>(client: &Client<C>) {
    let Some(servers) = setting(client, "bootstrap.servers").and_then(|s| CString::new(s).ok())
    else {
        return;
    };
    // SAFETY: the client is alive for the call, and librdkafka copies the list.
    unsafe {
        native::rd_kafka_brokers_add(client.native_ptr(), servers.as_ptr());
    }
}

/// A property of `client` as librdkafka holds it; `None` if librdkafka does not know it.
fn setting<C: ClientContext>(client: &Client<C>, name: &str) -> Option<String> {
    let name = CString::new(name).ok()?;
    // SAFETY: `rd_kafka_conf` is the live client's own configuration, which librdkafka never
    // changes after the client is created. `rd_kafka_conf_get` writes at most `size` bytes,
    // the terminating NUL included, and sets `size` to the size it needs.
    unsafe {
        let conf = native::rd_kafka_conf(client.native_ptr());
        let mut size = 0;
        let sized = native::rd_kafka_conf_get(conf, name.as_ptr(), std::ptr::null_mut(), &mut size);
        if sized != native::rd_kafka_conf_res_t::RD_KAFKA_CONF_OK {
            return None;
        }
        let mut value = vec![0u8; size];
        let read = native::rd_kafka_conf_get(
            conf,
            name.as_ptr(),
            value.as_mut_ptr().cast::<c_char>(),
            &mut size,
        );
        if read != native::rd_kafka_conf_res_t::RD_KAFKA_CONF_OK {
            return None;
        }
        let value = CStr::from_bytes_until_nul(&value).ok()?;
        Some(value.to_string_lossy().into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, Producer};
    use rdkafka::ClientConfig;

    #[test]
    fn a_client_is_due_a_rebootstrap_from_30_s_without_a_broker_until_it_gets_one() {
        let start = Instant::now();
        let at = |seconds| start + Duration::from_secs(seconds);
        let mut schedule = RebootstrapSchedule::default();
        assert!(!schedule.unreachable(at(0)));
        assert!(!schedule.unreachable(at(29)));
        assert!(schedule.unreachable(at(30)));
        assert!(
            schedule.unreachable(at(34)),
            "still due: it still knew its brokers at 30 s"
        );
        schedule.rebootstrapped(at(34));
        assert!(!schedule.unreachable(at(35)));
        assert!(!schedule.unreachable(at(93)));
        assert!(schedule.unreachable(at(94)), "60 s after the first");
        schedule.rebootstrapped(at(94));
        assert!(!schedule.unreachable(at(213)));
        assert!(schedule.unreachable(at(214)), "then 120 s");
        schedule.rebootstrapped(at(214));
        assert!(schedule.unreachable(at(454)), "then 240 s");
        schedule.rebootstrapped(at(454));
        assert!(!schedule.unreachable(at(753)));
        assert!(schedule.unreachable(at(754)), "then every 300 s");
        schedule.rebootstrapped(at(754));
        assert!(schedule.unreachable(at(1054)));
        schedule.reached();
        assert!(
            !schedule.unreachable(at(1055)),
            "a broker that answered starts the count again"
        );
        assert!(schedule.unreachable(at(1085)));
    }

    /// A client on a two-broker cluster that knows only the broker that is down, and will not
    /// re-bootstrap on its own (`metadata.recovery.strategy=none`): its bootstrap servers bring
    /// it back. (The state librdkafka's bug leaves, no broker known at all, cannot be made on
    /// the mock cluster: each of its answers lists the broker that answers.)
    #[test]
    fn the_bootstrap_servers_bring_back_a_client_that_knows_only_a_broker_that_is_down() {
        let cluster = MockCluster::new(2).expect("mock cluster");
        let first = cluster
            .bootstrap_servers()
            .split(',')
            .next()
            .expect("an address")
            .to_owned();
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &first)
            .set("metadata.recovery.strategy", "none")
            .create()
            .expect("producer");
        let client = producer.client();
        let timeout = Duration::from_secs(5);
        let brokers_answered = |ids: &[i32]| {
            client.fetch_metadata(None, timeout).is_ok_and(|metadata| {
                let mut listed: Vec<i32> = metadata.brokers().iter().map(|b| b.id()).collect();
                listed.sort_unstable();
                listed == ids
            })
        };
        assert!(brokers_answered(&[1, 2]));
        assert_eq!(rebootstrap_if_lost(client), Rebootstrapped::NotWanted);

        // Broker 1 goes: broker 2's answer lists only itself, and the client forgets broker 1.
        cluster.broker_down(1).expect("broker 1 down");
        assert!(
            (0..20).any(|_| brokers_answered(&[2])),
            "broker 2 answers for the cluster"
        );
        // Broker 1 comes back, broker 2 goes: the client knows nobody who answers.
        cluster.broker_up(1).expect("broker 1 up");
        cluster.broker_down(2).expect("broker 2 down");
        let short = Duration::from_millis(500);
        assert!(
            client.fetch_metadata(None, short).is_err(),
            "no broker the client knows is up"
        );
        assert_eq!(known_brokers(client), 1);

        add_bootstrap_servers(client);
        assert!(
            (0..20).any(|_| brokers_answered(&[1])),
            "broker 1 answers again"
        );
        producer.flush(timeout).expect("nothing pending");
    }

    #[test]
    fn a_clients_settings_are_read_back_with_their_aliases() {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1,127.0.0.1:2")
            .create()
            .expect("producer");
        let client = producer.client();
        assert_eq!(
            setting(client, "bootstrap.servers").as_deref(),
            Some("127.0.0.1:1,127.0.0.1:2")
        );
        assert_eq!(
            setting(client, "metadata.recovery.strategy").as_deref(),
            Some("rebootstrap")
        );
        assert_eq!(setting(client, "no.such.property"), None);
    }
}
