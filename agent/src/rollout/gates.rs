//! The Kafka-aware checks before and after a restart, as pure functions of
//! what Kafka reported (metadata, cluster, quorum). No IO: the caller asks
//! Kafka afresh and hands the answers in, so every check is unit-tested
//! with plain data.
//!
//! Semantics follow Strimzi's `KafkaAvailability` and `KafkaQuorumCheck`
//! (see `shared/reference/kafka-operations.md` §1.4), made stricter where
//! the issue asks: nothing offline or under-replicated anywhere, no
//! reassignment in flight, and the nodes of the role that hold a restart
//! lease counted as down already.

use std::collections::{BTreeMap, BTreeSet};

use crate::kafka::{ClusterDescription, ClusterMetadata, QuorumInfo, TopicPartition};

/// How many partitions a reason names before it says "and N more".
const NAMED: usize = 3;

/// Names up to [`NAMED`] items, then how many more there are.
fn some_of<T: std::fmt::Display>(items: &[T]) -> String {
    let mut text = items
        .iter()
        .take(NAMED)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > NAMED {
        text.push_str(&format!(" and {} more", items.len() - NAMED));
    }
    text
}

/// Whether broker `node` may be restarted now. `down`: other brokers that
/// hold a restart lease (they may be stopping right now). `min_isr`: the
/// effective `min.insync.replicas` of every topic `node` hosts.
/// `Err` is the reason to wait, as an operator reads it.
pub fn broker_may_restart(
    node: i32,
    down: &[i32],
    metadata: &ClusterMetadata,
    cluster: &ClusterDescription,
    min_isr: &BTreeMap<String, u16>,
    reassigning: &[TopicPartition],
) -> Result<(), String> {
    match cluster.nodes.iter().find(|n| n.id == node) {
        None => {
            return Err(format!(
                "broker {node} is not registered with the controllers"
            ));
        }
        Some(n) if n.fenced => {
            return Err(format!(
                "broker {node} is fenced (starting, or in log recovery): not restarting it now"
            ));
        }
        Some(_) => {}
    }
    let fenced: Vec<i32> = cluster
        .nodes
        .iter()
        .filter(|n| n.fenced && n.id != node)
        .map(|n| n.id)
        .collect();
    if !fenced.is_empty() {
        return Err(format!(
            "broker(s) {} fenced (down, starting or recovering)",
            some_of(&fenced)
        ));
    }
    if !reassigning.is_empty() {
        return Err(format!(
            "partition reassignment in progress: {}",
            some_of(reassigning)
        ));
    }
    let mut offline = Vec::new();
    let mut under_replicated = Vec::new();
    let mut would_fall = Vec::new();
    for topic in &metadata.topics {
        for p in &topic.partitions {
            let tp = TopicPartition {
                topic: topic.name.clone(),
                partition: p.partition,
            };
            if p.leader < 0 {
                offline.push(tp);
                continue;
            }
            if p.isr.len() < p.replicas.len() {
                under_replicated.push(tp.clone());
            }
            if !p.replicas.contains(&node) {
                continue;
            }
            let min = usize::from(min_isr.get(&topic.name).copied().unwrap_or(1));
            // RF ≤ min.insync.replicas can never be made safe: such a
            // partition must not block every roll forever (Strimzi #2964).
            if p.replicas.len() <= min {
                continue;
            }
            if !p.isr.contains(&node) {
                continue;
            }
            let remaining = p
                .isr
                .iter()
                .filter(|r| **r != node && !down.contains(r))
                .count();
            if remaining < min {
                would_fall.push(format!("{tp} (ISR {:?}, min.insync.replicas {min})", p.isr));
            }
        }
    }
    if !offline.is_empty() {
        return Err(format!("offline partitions: {}", some_of(&offline)));
    }
    if !under_replicated.is_empty() {
        return Err(format!(
            "under-replicated partitions: {}",
            some_of(&under_replicated)
        ));
    }
    if !would_fall.is_empty() {
        return Err(format!(
            "restarting broker {node} would leave partitions below min.insync.replicas: {}",
            some_of(&would_fall)
        ));
    }
    Ok(())
}

/// A restarted node's way back, as far as it has come.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// Not yet: why, and how far from healthy (lower is closer; a falling
    /// value is progress, which extends the time the node is given).
    NotYet {
        reason: String,
        distance: u64,
    },
}

/// Whether restarted broker `node` is back: registered, unfenced, and in the
/// ISR of every partition it hosts.
pub fn broker_health(
    node: i32,
    metadata: &ClusterMetadata,
    cluster: &ClusterDescription,
) -> Health {
    // Registration, unfencing and ISR catch-up, in that order: each stage
    // is closer than the one before.
    let hosted: usize = metadata
        .topics
        .iter()
        .flat_map(|t| &t.partitions)
        .filter(|p| p.replicas.contains(&node))
        .count();
    let stage_base = hosted as u64 + 1;
    match cluster.nodes.iter().find(|n| n.id == node) {
        None => {
            return Health::NotYet {
                reason: format!("broker {node} is not registered yet"),
                distance: stage_base + 2,
            };
        }
        Some(n) if n.fenced => {
            return Health::NotYet {
                reason: format!(
                    "broker {node} is registered but fenced (catching up or in log recovery)"
                ),
                distance: stage_base + 1,
            };
        }
        Some(_) => {}
    }
    let behind: Vec<TopicPartition> = metadata
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .filter(|p| p.replicas.contains(&node) && !p.isr.contains(&node))
                .map(|p| TopicPartition {
                    topic: t.name.clone(),
                    partition: p.partition,
                })
        })
        .collect();
    if behind.is_empty() {
        Health::Healthy
    } else {
        Health::NotYet {
            reason: format!(
                "broker {node} is not back in the ISR of {} partition(s): {}",
                behind.len(),
                some_of(&behind)
            ),
            distance: behind.len() as u64,
        }
    }
}

/// Partitions whose preferred replica (the first) is `node` but whose
/// leader is another: what a preferred election moves back.
pub fn leadership_to_restore(node: i32, metadata: &ClusterMetadata) -> Vec<TopicPartition> {
    metadata
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .filter(|p| {
                    p.replicas.first() == Some(&node) && p.leader != node && p.isr.contains(&node)
                })
                .map(|p| TopicPartition {
                    topic: t.name.clone(),
                    partition: p.partition,
                })
        })
        .collect()
}

/// Voters caught up with the leader: the leader itself, and every voter
/// whose last caught-up time is within `fetch_timeout_ms` of the leader's.
fn caught_up_voters(quorum: &QuorumInfo, fetch_timeout_ms: i64) -> BTreeSet<i32> {
    let leader_caught_up = quorum
        .voters
        .iter()
        .find(|v| v.replica_id == quorum.leader_id)
        .and_then(|v| v.last_caught_up_timestamp);
    quorum
        .voters
        .iter()
        .filter(|v| {
            v.replica_id == quorum.leader_id
                || matches!(
                    (leader_caught_up, v.last_caught_up_timestamp),
                    (Some(l), Some(t)) if l - t < fetch_timeout_ms
                )
        })
        .map(|v| v.replica_id)
        .collect()
}

/// Whether controller `node` may be restarted: the quorum has a leader, and
/// without `node` and the `down` ones a majority of all voters is caught up.
pub fn controller_may_restart(
    node: i32,
    down: &[i32],
    quorum: &QuorumInfo,
    fetch_timeout_ms: i64,
) -> Result<(), String> {
    if quorum.leader_id < 0 {
        return Err("the metadata quorum has no leader".to_owned());
    }
    if !quorum.voters.iter().any(|v| v.replica_id == node) {
        return Err(format!(
            "controller {node} is not a voter of the metadata quorum"
        ));
    }
    let voters = quorum.voters.len();
    let majority = voters / 2 + 1;
    let caught_up = caught_up_voters(quorum, fetch_timeout_ms);
    let remaining: Vec<i32> = caught_up
        .iter()
        .copied()
        .filter(|id| *id != node && !down.contains(id))
        .collect();
    if remaining.len() < majority {
        let lagging: Vec<i32> = quorum
            .voters
            .iter()
            .map(|v| v.replica_id)
            .filter(|id| *id != node && !caught_up.contains(id))
            .collect();
        return Err(format!(
            "without controller {node}, only {} of {voters} voters would be caught up (a majority is {majority}); lagging: {}",
            remaining.len(),
            if lagging.is_empty() {
                "none (others are restarting)".to_owned()
            } else {
                some_of(&lagging)
            }
        ));
    }
    Ok(())
}

/// Whether restarted controller `node` is back: the quorum has a leader and
/// `node` is a voter caught up with it, whose log reached `since_offset`
/// (the high watermark before the restart: a voter entry left over from
/// before the restart does not count).
pub fn controller_health(
    node: i32,
    quorum: &QuorumInfo,
    fetch_timeout_ms: i64,
    since_offset: i64,
) -> Health {
    if quorum.leader_id < 0 {
        return Health::NotYet {
            reason: "the metadata quorum has no leader".to_owned(),
            distance: 3,
        };
    }
    let Some(voter) = quorum.voters.iter().find(|v| v.replica_id == node) else {
        return Health::NotYet {
            reason: format!("controller {node} is not a voter yet"),
            distance: 2,
        };
    };
    if voter.log_end_offset >= since_offset
        && caught_up_voters(quorum, fetch_timeout_ms).contains(&node)
    {
        return Health::Healthy;
    }
    let leader_end = quorum
        .voters
        .iter()
        .find(|v| v.replica_id == quorum.leader_id)
        .map_or(quorum.high_watermark, |l| l.log_end_offset);
    Health::NotYet {
        reason: format!(
            "controller {node} is catching up with the quorum leader {} (log end {} of {leader_end})",
            quorum.leader_id, voter.log_end_offset
        ),
        // Offsets behind, plus one so "caught up by offset but not yet by
        // time" is still not healthy.
        distance: u64::try_from(leader_end.saturating_sub(voter.log_end_offset)).unwrap_or(0) + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::{ClusterNode, PartitionMetadata, QuorumReplica, TopicMetadata};

    fn part(partition: i32, leader: i32, replicas: &[i32], isr: &[i32]) -> PartitionMetadata {
        PartitionMetadata {
            partition,
            leader,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            offline_replicas: Vec::new(),
        }
    }

    fn metadata(topics: Vec<(&str, Vec<PartitionMetadata>)>) -> ClusterMetadata {
        ClusterMetadata {
            cluster_id: None,
            controller_id: 1,
            brokers: Vec::new(),
            topics: topics
                .into_iter()
                .map(|(name, partitions)| TopicMetadata {
                    name: name.to_owned(),
                    internal: name.starts_with("__"),
                    partitions,
                })
                .collect(),
        }
    }

    fn cluster(nodes: &[(i32, bool)]) -> ClusterDescription {
        ClusterDescription {
            cluster_id: "c".to_owned(),
            controller_id: 1,
            nodes: nodes
                .iter()
                .map(|(id, fenced)| ClusterNode {
                    id: *id,
                    host: format!("broker-{id}"),
                    port: 9091,
                    rack: None,
                    fenced: *fenced,
                })
                .collect(),
        }
    }

    fn all_up() -> ClusterDescription {
        cluster(&[(4, false), (5, false), (6, false), (7, false)])
    }

    fn min2(topics: &[&str]) -> BTreeMap<String, u16> {
        topics.iter().map(|t| ((*t).to_owned(), 2)).collect()
    }

    #[test]
    fn a_healthy_cluster_lets_a_broker_restart() {
        let m = metadata(vec![(
            "orders",
            vec![
                part(0, 4, &[4, 5, 6], &[4, 5, 6]),
                part(1, 5, &[5, 6, 7], &[5, 6, 7]),
            ],
        )]);
        assert_eq!(
            broker_may_restart(4, &[], &m, &all_up(), &min2(&["orders"]), &[]),
            Ok(())
        );
    }

    #[test]
    fn an_under_replicated_partition_anywhere_blocks() {
        let m = metadata(vec![(
            "orders",
            vec![
                part(0, 4, &[4, 5, 6], &[4, 5, 6]),
                part(1, 5, &[5, 6, 7], &[5, 6]),
            ],
        )]);
        let why = broker_may_restart(4, &[], &m, &all_up(), &min2(&["orders"]), &[])
            .expect_err("refused");
        assert_eq!(why, "under-replicated partitions: orders-1");
    }

    #[test]
    fn a_partition_at_min_isr_with_the_broker_in_it_blocks() {
        // URP-free is not enough when another lease holder is going down.
        let m = metadata(vec![("orders", vec![part(0, 4, &[4, 5, 6], &[4, 5, 6])])]);
        let why = broker_may_restart(4, &[5], &m, &all_up(), &min2(&["orders"]), &[])
            .expect_err("refused");
        assert!(
            why.starts_with("restarting broker 4 would leave partitions below min.insync.replicas: orders-0 (ISR [4, 5, 6], min.insync.replicas 2)"),
            "{why}"
        );
        // With min.insync.replicas 1 the same partition may lose two.
        let one: BTreeMap<String, u16> = [("orders".to_owned(), 1)].into();
        assert_eq!(
            broker_may_restart(4, &[5], &m, &all_up(), &one, &[]),
            Ok(())
        );
    }

    #[test]
    fn replication_factor_at_or_below_min_isr_never_blocks() {
        let m = metadata(vec![("tiny", vec![part(0, 4, &[4, 5], &[4, 5])])]);
        assert_eq!(
            broker_may_restart(4, &[5], &m, &all_up(), &min2(&["tiny"]), &[]),
            Ok(())
        );
    }

    #[test]
    fn offline_fenced_and_reassigning_block_with_their_reason() {
        let m = metadata(vec![("orders", vec![part(0, -1, &[5, 6, 7], &[])])]);
        assert_eq!(
            broker_may_restart(4, &[], &m, &all_up(), &min2(&["orders"]), &[])
                .expect_err("refused"),
            "offline partitions: orders-0"
        );
        let healthy = metadata(vec![("orders", vec![part(0, 4, &[4, 5, 6], &[4, 5, 6])])]);
        let one_fenced = cluster(&[(4, false), (5, true), (6, false)]);
        assert_eq!(
            broker_may_restart(4, &[], &healthy, &one_fenced, &min2(&["orders"]), &[])
                .expect_err("refused"),
            "broker(s) 5 fenced (down, starting or recovering)"
        );
        let self_fenced = cluster(&[(4, true), (5, false), (6, false)]);
        assert!(
            broker_may_restart(4, &[], &healthy, &self_fenced, &min2(&["orders"]), &[])
                .expect_err("refused")
                .contains("log recovery")
        );
        let missing = cluster(&[(5, false), (6, false)]);
        assert_eq!(
            broker_may_restart(4, &[], &healthy, &missing, &min2(&["orders"]), &[])
                .expect_err("refused"),
            "broker 4 is not registered with the controllers"
        );
        let moving = [TopicPartition {
            topic: "orders".to_owned(),
            partition: 0,
        }];
        assert_eq!(
            broker_may_restart(4, &[], &healthy, &all_up(), &min2(&["orders"]), &moving)
                .expect_err("refused"),
            "partition reassignment in progress: orders-0"
        );
    }

    #[test]
    fn many_partitions_are_named_a_few_at_a_time() {
        let parts = (0..5).map(|i| part(i, 5, &[5, 6, 7], &[5])).collect();
        let m = metadata(vec![("t", parts)]);
        assert_eq!(
            broker_may_restart(4, &[], &m, &all_up(), &min2(&["t"]), &[]).expect_err("refused"),
            "under-replicated partitions: t-0, t-1, t-2 and 2 more"
        );
    }

    #[test]
    fn a_restarted_broker_is_healthy_only_back_in_every_isr() {
        let behind = metadata(vec![(
            "orders",
            vec![
                part(0, 5, &[4, 5, 6], &[5, 6]),
                part(1, 5, &[5, 6, 7], &[5, 6, 7]),
            ],
        )]);
        let missing = cluster(&[(5, false), (6, false), (7, false)]);
        let fenced = cluster(&[(4, true), (5, false), (6, false), (7, false)]);
        let d = |h: Health| match h {
            Health::NotYet { distance, .. } => distance,
            Health::Healthy => 0,
        };
        let (a, b, c) = (
            d(broker_health(4, &behind, &missing)),
            d(broker_health(4, &behind, &fenced)),
            d(broker_health(4, &behind, &all_up())),
        );
        assert!(a > b && b > c && c > 0, "{a} {b} {c}");
        match broker_health(4, &behind, &all_up()) {
            Health::NotYet { reason, .. } => {
                assert_eq!(
                    reason,
                    "broker 4 is not back in the ISR of 1 partition(s): orders-0"
                );
            }
            Health::Healthy => panic!("not in the ISR yet"),
        }
        let back = metadata(vec![("orders", vec![part(0, 5, &[4, 5, 6], &[5, 6, 4])])]);
        assert_eq!(broker_health(4, &back, &all_up()), Health::Healthy);
        assert_eq!(
            leadership_to_restore(4, &back),
            vec![TopicPartition {
                topic: "orders".to_owned(),
                partition: 0
            }]
        );
        assert!(leadership_to_restore(5, &back).is_empty());
    }

    fn voter(id: i32, end: i64, caught_up: Option<i64>) -> QuorumReplica {
        QuorumReplica {
            replica_id: id,
            log_end_offset: end,
            last_fetch_timestamp: caught_up,
            last_caught_up_timestamp: caught_up,
        }
    }

    fn quorum(leader: i32, voters: Vec<QuorumReplica>) -> QuorumInfo {
        QuorumInfo {
            leader_id: leader,
            leader_epoch: 3,
            high_watermark: 100,
            voters,
            observers: Vec::new(),
        }
    }

    #[test]
    fn a_controller_restarts_only_with_a_caught_up_majority_left() {
        let q = quorum(
            1,
            vec![
                voter(1, 100, Some(10_000)),
                voter(2, 100, Some(9_500)),
                voter(3, 100, Some(9_900)),
            ],
        );
        assert_eq!(controller_may_restart(3, &[], &q, 2_000), Ok(()));
        // Voter 2 lags by more than the fetch timeout: 3 may not go.
        let lagging = quorum(
            1,
            vec![
                voter(1, 100, Some(10_000)),
                voter(2, 80, Some(7_000)),
                voter(3, 100, Some(9_900)),
            ],
        );
        let why = controller_may_restart(3, &[], &lagging, 2_000).expect_err("refused");
        assert_eq!(
            why,
            "without controller 3, only 1 of 3 voters would be caught up (a majority is 2); lagging: 2"
        );
        // Another controller restarting counts as down.
        assert!(controller_may_restart(3, &[2], &q, 2_000).is_err());
        let leaderless = quorum(-1, vec![voter(1, 100, None)]);
        assert_eq!(
            controller_may_restart(1, &[], &leaderless, 2_000).expect_err("refused"),
            "the metadata quorum has no leader"
        );
    }

    #[test]
    fn a_restarted_controller_is_healthy_once_caught_up() {
        let behind = quorum(
            1,
            vec![
                voter(1, 100, Some(10_000)),
                voter(2, 60, Some(5_000)),
                voter(3, 100, Some(9_900)),
            ],
        );
        match controller_health(2, &behind, 2_000, 0) {
            Health::NotYet { reason, distance } => {
                assert_eq!(distance, 41);
                assert!(reason.contains("log end 60 of 100"), "{reason}");
            }
            Health::Healthy => panic!("still behind"),
        }
        let caught = quorum(
            1,
            vec![
                voter(1, 100, Some(10_000)),
                voter(2, 100, Some(9_990)),
                voter(3, 100, Some(9_900)),
            ],
        );
        assert_eq!(controller_health(2, &caught, 2_000, 100), Health::Healthy);
        // Caught up by time, but its log has not reached the high watermark
        // seen before the restart: an entry from before the restart.
        assert!(matches!(
            controller_health(2, &caught, 2_000, 150),
            Health::NotYet { .. }
        ));
    }
}
