//! Gives a client that lost every broker its `bootstrap.servers` again.
//!
//! librdkafka 2.12 can forget every broker for good: a broker that has just been fenced by its
//! controller (a broker frozen for longer than `broker.session.timeout.ms`, then resumed) answers
//! a metadata request with no brokers in it, and the client decommissions every broker it knows.
//! Its own re-bootstrap then never comes: the same answer cancels the re-bootstrap that the
//! brokers going down had scheduled, and leaves it marked as under way (librdkafka issue 5301).
//! The client sends nothing again: a producer holds its records until `message.timeout.ms`, a
//! consumer fetches nothing, and both stay that way after the broker is back. Seen here in 5
//! of 12 runs where Apache Kafka was frozen (SIGSTOP) for 60 s, and in none of 10 later ones
//! (the broker stayed fenced for under 35 ms); a proxy answering metadata requests with no
//! brokers for a few seconds after an outage stalled a client in 9 of 11 runs.
//!
//! The broker probe watches for that state: at every probe that reaches no broker, a client
//! that has reached one before and now knows no broker at all is given its bootstrap servers
//! again, as the lost re-bootstrap would have done. A client that still knows its brokers is
//! left alone: librdkafka reconnects to them on its own, and the re-bootstrap it schedules when
//! they all go down works (for a client it lost once, only from its next
//! `metadata.recovery.rebootstrap.trigger.ms` re-bootstrap on: the lost one stays marked as
//! under way). Also left alone: a client that never reached a broker (a broker that is not up
//! yet or a wrong address: it still has its bootstrap servers), a client set to
//! `metadata.recovery.strategy=none` (it asked never to re-bootstrap), and one set to
//! `client.dns.lookup=resolve_canonical_bootstrap_servers_only` (`rd_kafka_brokers_add` would
//! add the names as written, not the canonical ones librdkafka's own bootstrap uses).
//!
//! To revisit when rdkafka-sys brings a librdkafka with issue 5301 fixed (pull request 5303).

use std::ffi::{c_char, CStr, CString};
use std::time::Duration;

use rdkafka::bindings as native;
use rdkafka::client::Client;
use rdkafka::ClientContext;
use tokio::time::Instant;

/// The wait after a client's first re-bootstrap before the next, while it reaches no broker.
/// Short: a broker still fenced when the servers are added answers them with no brokers again
/// (a proxy giving such answers for 10 s after an outage made a first wait of 60 s one of 57 s
/// after the answers ended).
const FIRST_INTERVAL: Duration = Duration::from_secs(10);
/// The longest wait between two re-bootstraps of a client that keeps reaching no broker. Each
/// one is remembered by librdkafka for the client's life (`rd_kafka_brokers_add`), so they
/// are spaced out: 10 s, 20 s, 40 s and so on, then every 5 minutes.
const LONGEST_INTERVAL: Duration = Duration::from_secs(300);

/// When a client that reaches no broker may be given its bootstrap servers again: at once, if
/// it has reached a broker before (so it knew brokers that it may have lost), then after ever
/// longer waits while it reaches none. Reaching a broker starts it all again.
#[derive(Debug)]
pub(crate) struct RebootstrapSchedule {
    reached_before: bool,
    /// Not before this, after a re-bootstrap.
    next: Option<Instant>,
    /// The wait after the next re-bootstrap.
    interval: Duration,
}

impl Default for RebootstrapSchedule {
    fn default() -> Self {
        Self {
            reached_before: false,
            next: None,
            interval: FIRST_INTERVAL,
        }
    }
}

impl RebootstrapSchedule {
    /// The client reached its broker (whatever the broker said).
    pub(crate) fn reached(&mut self) {
        *self = Self {
            reached_before: true,
            ..Self::default()
        };
    }

    /// The client reached no broker at `now`; whether a re-bootstrap may be made.
    pub(crate) fn unreachable(&self, now: Instant) -> bool {
        self.reached_before && self.next.is_none_or(|next| now >= next)
    }

    /// The client was given its bootstrap servers at `now`: the next re-bootstrap waits.
    pub(crate) fn rebootstrapped(&mut self, now: Instant) {
        self.next = Some(now + self.interval);
        self.interval = (self.interval * 2).min(LONGEST_INTERVAL);
    }
}

/// What a re-bootstrap that was due did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Rebootstrapped {
    /// The client knew no broker: it has its bootstrap servers again.
    Added,
    /// The client still knows brokers (it reconnects to them itself).
    StillKnowsBrokers,
    /// `metadata.recovery.strategy=none` (the client never re-bootstraps), or
    /// `client.dns.lookup=resolve_canonical_bootstrap_servers_only`.
    NotWanted,
    /// Its `bootstrap.servers` could not be read back or were refused.
    Failed,
}

/// Gives `client` its bootstrap servers again if it knows no broker.
pub(crate) fn rebootstrap_if_lost<C: ClientContext>(client: &Client<C>) -> Rebootstrapped {
    if setting(client, "metadata.recovery.strategy").as_deref() == Some("none")
        || setting(client, "client.dns.lookup").as_deref()
            == Some("resolve_canonical_bootstrap_servers_only")
    {
        return Rebootstrapped::NotWanted;
    }
    if known_brokers(client) > 0 {
        return Rebootstrapped::StillKnowsBrokers;
    }
    if add_bootstrap_servers(client) {
        Rebootstrapped::Added
    } else {
        Rebootstrapped::Failed
    }
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

/// Adds `client`'s own `bootstrap.servers` to its brokers, as librdkafka's re-bootstrap does;
/// whether librdkafka took at least one.
fn add_bootstrap_servers<C: ClientContext>(client: &Client<C>) -> bool {
    let Some(servers) = setting(client, "bootstrap.servers").and_then(|s| CString::new(s).ok())
    else {
        return false;
    };
    // SAFETY: the client is alive for the call, and librdkafka copies the list.
    let added = unsafe { native::rd_kafka_brokers_add(client.native_ptr(), servers.as_ptr()) };
    added > 0
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
    fn a_client_that_reached_a_broker_may_rebootstrap_at_once_then_ever_less_often() {
        let start = Instant::now();
        let at = |seconds| start + Duration::from_secs(seconds);
        let mut schedule = RebootstrapSchedule::default();
        assert!(
            !schedule.unreachable(at(0)),
            "never reached a broker: it still has its bootstrap servers"
        );
        schedule.reached();
        assert!(schedule.unreachable(at(10)));
        schedule.rebootstrapped(at(10));
        let mut last = 10;
        for interval in [10, 20, 40, 80, 160, 300, 300] {
            assert!(!schedule.unreachable(at(last + interval - 1)), "{interval}");
            assert!(schedule.unreachable(at(last + interval)), "{interval}");
            last += interval;
            schedule.rebootstrapped(at(last));
        }
        schedule.reached();
        assert!(
            schedule.unreachable(at(last + 1)),
            "a broker that answered starts it all again"
        );
    }

    #[test]
    fn a_client_that_knows_no_broker_gets_its_bootstrap_servers_and_one_that_knows_one_does_not() {
        let never_answered: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .create()
            .expect("producer");
        assert_eq!(
            rebootstrap_if_lost(never_answered.client()),
            Rebootstrapped::Added
        );
        let canonical: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .set(
                "client.dns.lookup",
                "resolve_canonical_bootstrap_servers_only",
            )
            .create()
            .expect("producer");
        assert_eq!(
            rebootstrap_if_lost(canonical.client()),
            Rebootstrapped::NotWanted
        );

        let cluster = MockCluster::new(1).expect("mock cluster");
        let answered: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .create()
            .expect("producer");
        let client = answered.client();
        client
            .fetch_metadata(None, Duration::from_secs(5))
            .expect("the broker answers");
        cluster.broker_down(1).expect("broker down");
        assert!(client
            .fetch_metadata(None, Duration::from_millis(500))
            .is_err());
        assert_eq!(known_brokers(client), 1, "a broker down is still known");
        assert_eq!(
            rebootstrap_if_lost(client),
            Rebootstrapped::StillKnowsBrokers
        );
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

        assert!(add_bootstrap_servers(client));
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
