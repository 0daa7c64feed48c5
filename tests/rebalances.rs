//! Partitions moving between the members of a group, on the embedded cluster. Each assigned
//! partition is read through its own queue, split off at each assignment: a partition whose
//! queue was not split again after a rebalance would never be read.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use messaging::health::{Check, Status};

type Seen = Arc<Mutex<Vec<String>>>;

/// A group member whose handler takes `pause` per record (a handler that waits for I/O).
fn member(topic: &str, seen: &Seen, pause: Duration) -> messaging::AppBuilder {
    let seen = seen.clone();
    builder()
        .set("messaging.incoming.values.topic", topic)
        .set("messaging.incoming.values.group.id", topic)
        .incoming("values", move |value: String| {
            let seen = seen.clone();
            async move {
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
                seen.lock().unwrap().push(value);
            }
        })
}

/// Produces `<label>-0` to partition 0 and `<label>-1` to partition 1 for each label, in one go.
fn produce_to_both(topic: &str, labels: &[String]) -> Vec<String> {
    let values: Vec<(String, i32)> = labels
        .iter()
        .flat_map(|label| [(format!("{label}-0"), 0), (format!("{label}-1"), 1)])
        .collect();
    let records: Vec<Record<'_>> = values
        .iter()
        .map(|(value, partition)| Record {
            key: None,
            value: value.as_bytes(),
            headers: &[],
            partition: Some(*partition),
        })
        .collect();
    produce(topic, &records);
    values.into_iter().map(|(value, _)| value).collect()
}

fn seen_by_either(first: &Seen, second: &Seen) -> BTreeSet<String> {
    first
        .lock()
        .unwrap()
        .iter()
        .chain(second.lock().unwrap().iter())
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn both_partitions_keep_flowing_after_a_second_member_joins() {
    let topic = unique("rebalance");
    create_topic(&topic, 2);
    let (first_seen, second_seen) = (Seen::default(), Seen::default());
    let mut produced = BTreeSet::new();
    produced.extend(produce_to_both(&topic, &["before".into()]));
    let first = start(member(&topic, &first_seen, Duration::ZERO)).await;
    eventually("the only member read both partitions", || {
        first_seen.lock().unwrap().len() == 2
    })
    .await;

    // The join revokes every partition of the first member and assigns one back to each.
    let second = start(member(&topic, &second_seen, Duration::ZERO)).await;
    let mut round = 0;
    eventually("the second member read a partition of its own", || {
        round += 1;
        produced.extend(produce_to_both(&topic, &[format!("joining-{round}")]));
        !second_seen.lock().unwrap().is_empty()
    })
    .await;

    produced.extend(produce_to_both(&topic, &["after".into()]));
    eventually(
        "every record was read by one member or the other (duplicates allowed)",
        || seen_by_either(&first_seen, &second_seen).is_superset(&produced),
    )
    .await;
    let first_partition_values = first_seen
        .lock()
        .unwrap()
        .iter()
        .filter(|value| value.starts_with("after"))
        .count();
    let second_partition_values = second_seen
        .lock()
        .unwrap()
        .iter()
        .filter(|value| value.starts_with("after"))
        .count();
    assert_eq!(
        (first_partition_values, second_partition_values),
        (1, 1),
        "one partition each after the rebalance"
    );
    second.shutdown().await;
    first.shutdown().await;
}

/// The first member is in the middle of its partitions' batches when the second joins: what it
/// took but had not handled yet is read again (by whichever member owns it), never skipped.
#[tokio::test(flavor = "multi_thread")]
async fn records_taken_but_not_handled_when_partitions_move_are_not_lost() {
    let topic = unique("rebalance-mid-batch");
    create_topic(&topic, 2);
    let labels: Vec<String> = (0..300).map(|number| format!("record-{number}")).collect();
    let produced: BTreeSet<String> = produce_to_both(&topic, &labels).into_iter().collect();
    let (first_seen, second_seen) = (Seen::default(), Seen::default());
    let first = start(member(&topic, &first_seen, Duration::from_millis(2))).await;
    eventually("the first member is under way", || {
        first_seen.lock().unwrap().len() >= 20
    })
    .await;
    let second = start(member(&topic, &second_seen, Duration::from_millis(2))).await;
    eventually(
        "every record was read by one member or the other (duplicates allowed)",
        || seen_by_either(&first_seen, &second_seen).is_superset(&produced),
    )
    .await;
    second.shutdown().await;
    first.shutdown().await;
}

/// A member left without a partition (more members than partitions) is ready, and after its
/// broker went away for a moment it is ready again once the broker answers: the errors its
/// consumer met meanwhile do not hold it DOWN until the group's next rebalance.
#[tokio::test(flavor = "multi_thread")]
async fn a_member_without_a_partition_is_ready_again_once_its_broker_is_back() {
    let (cluster, bootstrap, topic) = cluster_of_its_own("standby", &[]);
    let on_its_cluster = |seen: &Seen| {
        member(&topic, seen, Duration::ZERO)
            .set("messaging.connector.kafka.bootstrap.servers", &bootstrap)
    };
    let ready =
        |app: &messaging::RunningApp| app.health().check(Check::Readiness).status == Status::Up;
    let first = start(on_its_cluster(&Seen::default())).await;
    eventually("the first member is ready", || ready(&first)).await;
    let second = start(on_its_cluster(&Seen::default())).await;
    eventually("both members are ready, one without a partition", || {
        ready(&first) && ready(&second)
    })
    .await;

    cluster.broker_down(1).expect("broker down");
    eventually("neither member is ready while the broker is away", || {
        !ready(&first) && !ready(&second)
    })
    .await;
    cluster.broker_up(1).expect("broker up");
    eventually("both members are ready again", || {
        ready(&first) && ready(&second)
    })
    .await;
    second.shutdown().await;
    first.shutdown().await;
}
