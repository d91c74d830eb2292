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

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{ADMIN_PASSWORD, Kafka, wait_for};
use kraftops_agent::kafka::{
    AclBinding, AclFilter, AclOperation, AclPatternType, AclPermission, AclResourceType,
    AdminClient, ClusterAdmin, ConfigOp, FeatureUpdateKind, GroupType, KafkaAdmin, KafkaError,
    NewPartitions, NewTopic, QuotaEntity, QuotaFilter, QuotaKey, QuotaOp, ScramDeletion,
    ScramMechanism, ScramUpsert, TopicConfigChange, TopicPartition,
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

const ALICE: &str = "alice";
const ALICE_PASSWORD: &str = "alice-secret";

fn sees_topic(client: &AdminClient, topic: &str) -> bool {
    client
        .metadata()
        .expect("metadata")
        .topics
        .iter()
        .any(|t| t.name == topic)
}

fn scram_user_created(kafka: &Kafka, admin: &AdminClient) {
    let alice = ScramUpsert {
        user: ALICE.to_owned(),
        password: ALICE_PASSWORD.to_owned(),
        iterations: 8192,
    };
    let weak = ScramUpsert {
        user: "bob".to_owned(),
        password: "bob-secret".to_owned(),
        iterations: 100,
    };
    assert!(!format!("{alice:?}").contains(ALICE_PASSWORD));
    let results = admin
        .alter_user_scram_credentials(&[alice, weak], &[])
        .expect("alter SCRAM credentials");
    report!("alter_user_scram_credentials: {results:?}");
    assert_eq!(results.items.len(), 2);
    assert!(results.items[0].1.is_ok(), "{results:?}");
    let refused = results.items[1].1.as_ref().expect_err("100 iterations");
    assert!(refused.to_string().contains("user \"bob\""), "{refused}");

    let credentials = wait_for("alice's credential", WAIT, kafka, || {
        let all = admin
            .describe_user_scram_credentials()
            .expect("describe SCRAM credentials");
        all.iter().any(|c| c.user == ALICE).then_some(all)
    });
    report!("describe_user_scram_credentials: {credentials:?}");
    let alice = credentials.iter().find(|c| c.user == ALICE).expect("alice");
    assert_eq!(
        (alice.mechanism, alice.iterations),
        (ScramMechanism::Sha512, 8192)
    );
    assert!(
        credentials
            .iter()
            .any(|c| c.user == "admin" && c.mechanism == ScramMechanism::Sha512),
        "{credentials:?}"
    );
    assert!(!credentials.iter().any(|c| c.user == "bob"));

    // Alice logs in with our own SCRAM client (which checks the server's
    // signature, so the broker holds the credential derived from our salt).
    let metadata = wait_for("alice to log in", WAIT, kafka, || {
        kafka.scram_client_as(ALICE, ALICE_PASSWORD).metadata().ok()
    });
    assert_eq!(metadata.brokers.len(), 1);
    let wrong = kafka
        .scram_client_as(ALICE, "not-her-password")
        .metadata()
        .expect_err("wrong password");
    assert!(
        matches!(wrong, KafkaError::Authentication { .. }),
        "{wrong:?}"
    );
}

fn scram_user_deleted(kafka: &Kafka, admin: &AdminClient) {
    let deletion = ScramDeletion {
        user: ALICE.to_owned(),
        mechanism: ScramMechanism::Sha512,
    };
    admin
        .alter_user_scram_credentials(&[], std::slice::from_ref(&deletion))
        .expect("delete alice")
        .into_result("AlterUserScramCredentials")
        .expect("alice deleted");
    let refused = wait_for("alice's login refused", WAIT, kafka, || {
        kafka
            .scram_client_as(ALICE, ALICE_PASSWORD)
            .metadata()
            .err()
    });
    report!("alice after deletion: {refused}");
    assert!(
        matches!(refused, KafkaError::Authentication { .. }),
        "{refused:?}"
    );
    assert!(
        !admin
            .describe_user_scram_credentials()
            .expect("describe")
            .iter()
            .any(|c| c.user == ALICE)
    );
    let again = admin
        .alter_user_scram_credentials(&[], &[deletion])
        .expect("delete alice again")
        .into_result("AlterUserScramCredentials")
        .expect_err("no credential left");
    report!("deleting alice again: {again}");
    let text = again.to_string();
    assert!(text.contains("user alice: RESOURCE_NOT_FOUND"), "{text}");
}

fn acls(kafka: &Kafka, admin: &AdminClient) {
    let principal = format!("User:{ALICE}");
    let describe_orders = AclBinding {
        resource_type: AclResourceType::Topic,
        resource_name: "orders".to_owned(),
        pattern_type: AclPatternType::Literal,
        principal: principal.clone(),
        host: "*".to_owned(),
        operation: AclOperation::Describe,
        permission: AclPermission::Allow,
    };
    let read_groups = AclBinding {
        resource_type: AclResourceType::Group,
        resource_name: "app-".to_owned(),
        pattern_type: AclPatternType::Prefixed,
        operation: AclOperation::Read,
        ..describe_orders.clone()
    };
    let filter_only = AclBinding {
        resource_type: AclResourceType::Any,
        ..describe_orders.clone()
    };
    let alice = kafka.scram_client_as(ALICE, ALICE_PASSWORD);
    assert!(!sees_topic(&alice, "orders"), "no ACL yet");

    let created = admin
        .create_acls(&[
            describe_orders.clone(),
            read_groups.clone(),
            filter_only.clone(),
        ])
        .expect("create ACLs");
    report!("create_acls: {created:?}");
    assert!(
        created.items[0].1.is_ok() && created.items[1].1.is_ok(),
        "{created:?}"
    );
    let refused = created.items[2].1.as_ref().expect_err("ANY is for filters");
    assert!(matches!(refused, KafkaError::Invalid { .. }), "{refused:?}");

    let mut expected = vec![describe_orders.clone(), read_groups.clone()];
    expected.sort();
    let described = wait_for("alice's ACLs", WAIT, kafka, || {
        let acls = admin
            .describe_acls(&AclFilter::principal(&principal))
            .expect("describe ACLs");
        (acls == expected).then_some(acls)
    });
    report!("describe_acls(alice): {described:?}");
    let all = admin.describe_acls(&AclFilter::any()).expect("all ACLs");
    assert!(expected.iter().all(|b| all.contains(b)), "{all:?}");
    let topics_only = admin
        .describe_acls(&AclFilter {
            resource_type: AclResourceType::Topic,
            ..AclFilter::any()
        })
        .expect("topic ACLs");
    assert_eq!(topics_only, vec![describe_orders.clone()]);

    // It takes effect: alice now sees the topic.
    wait_for("alice to see orders", WAIT, kafka, || {
        sees_topic(&alice, "orders").then_some(())
    });

    let deleted = admin
        .delete_acls(&[
            AclFilter::exact(&describe_orders),
            AclFilter::principal(&principal),
        ])
        .expect("delete ACLs");
    report!("delete_acls: {deleted:?}");
    let deleted = deleted.into_result("DeleteAcls").expect("deleted");
    assert_eq!(deleted[0].1, vec![describe_orders.clone()]);
    let all_deleted: BTreeSet<&AclBinding> = deleted.iter().flat_map(|(_, d)| d).collect();
    assert_eq!(all_deleted, expected.iter().collect());
    wait_for("alice's ACLs gone", WAIT, kafka, || {
        admin
            .describe_acls(&AclFilter::principal(&principal))
            .expect("describe ACLs")
            .is_empty()
            .then_some(())
    });
    wait_for("alice to lose orders", WAIT, kafka, || {
        (!sees_topic(&alice, "orders")).then_some(())
    });
}

fn quotas(kafka: &Kafka, admin: &AdminClient) {
    let alice = QuotaEntity::User(ALICE.to_owned());
    admin
        .alter_client_quotas(
            &alice,
            &[
                QuotaOp::Set {
                    key: QuotaKey::ProducerByteRate,
                    value: 1_048_576.0,
                },
                QuotaOp::Set {
                    key: QuotaKey::ConsumerByteRate,
                    value: 2_097_152.0,
                },
                QuotaOp::Set {
                    key: QuotaKey::RequestPercentage,
                    value: 50.0,
                },
            ],
            false,
        )
        .expect("set alice's quotas");
    admin
        .alter_client_quotas(
            &QuotaEntity::DefaultUser,
            &[QuotaOp::Set {
                key: QuotaKey::ControllerMutationRate,
                value: 10.0,
            }],
            false,
        )
        .expect("set the default user's quota");
    let expected = BTreeMap::from([
        (QuotaKey::ProducerByteRate, 1_048_576.0),
        (QuotaKey::ConsumerByteRate, 2_097_152.0),
        (QuotaKey::RequestPercentage, 50.0),
    ]);
    let all = wait_for("the quotas", WAIT, kafka, || {
        let q = admin
            .describe_client_quotas(&QuotaFilter::AllUsers)
            .expect("describe quotas");
        (q.get(&alice) == Some(&expected) && q.contains_key(&QuotaEntity::DefaultUser)).then_some(q)
    });
    report!("describe_client_quotas(all users): {all:?}");
    assert_eq!(
        all[&QuotaEntity::DefaultUser],
        BTreeMap::from([(QuotaKey::ControllerMutationRate, 10.0)])
    );
    let only_alice = admin
        .describe_client_quotas(&QuotaFilter::Users(vec![ALICE.to_owned()]))
        .expect("alice's quotas");
    assert_eq!(only_alice, BTreeMap::from([(alice.clone(), expected)]));

    // Kafka's own tool agrees.
    let out = kafka
        .tool("kafka-configs.sh")
        .args(["--bootstrap-server", &kafka.internal, "--command-config"])
        .arg(&kafka.tool_config)
        .args([
            "--describe",
            "--entity-type",
            "users",
            "--entity-name",
            ALICE,
        ])
        .output()
        .expect("kafka-configs.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    report!("kafka-configs.sh --describe alice: {text}");
    assert!(text.contains("producer_byte_rate=1048576.0"), "{text}");

    // Refused: a key Kafka does not know, named with the entity.
    let refused = admin
        .alter_client_quotas(
            &alice,
            &[QuotaOp::Set {
                key: QuotaKey::Other("bogus_rate".to_owned()),
                value: 1.0,
            }],
            true,
        )
        .expect_err("unknown key");
    report!("an unknown quota key: {refused}");
    assert!(
        refused
            .to_string()
            .contains("quotas bogus_rate of user alice"),
        "{refused}"
    );

    admin
        .alter_client_quotas(
            &alice,
            &[QuotaOp::Remove {
                key: QuotaKey::ProducerByteRate,
            }],
            false,
        )
        .expect("remove one");
    wait_for("producer_byte_rate removed", WAIT, kafka, || {
        let q = admin
            .describe_client_quotas(&QuotaFilter::Users(vec![ALICE.to_owned()]))
            .expect("describe quotas");
        (q.get(&alice)
            == Some(&BTreeMap::from([
                (QuotaKey::ConsumerByteRate, 2_097_152.0),
                (QuotaKey::RequestPercentage, 50.0),
            ])))
        .then_some(())
    });
    for (entity, keys) in [
        (
            alice.clone(),
            vec![QuotaKey::ConsumerByteRate, QuotaKey::RequestPercentage],
        ),
        (
            QuotaEntity::DefaultUser,
            vec![QuotaKey::ControllerMutationRate],
        ),
    ] {
        let ops: Vec<QuotaOp> = keys
            .into_iter()
            .map(|key| QuotaOp::Remove { key })
            .collect();
        admin
            .alter_client_quotas(&entity, &ops, false)
            .expect("remove the rest");
    }
    wait_for("no quotas left", WAIT, kafka, || {
        admin
            .describe_client_quotas(&QuotaFilter::AllUsers)
            .expect("describe quotas")
            .is_empty()
            .then_some(())
    });
}

/// Runs one of Kafka's tools to completion, failing with its output.
fn run_tool(kafka: &Kafka, name: &str, args: &[&str], stdin: Option<String>) -> String {
    let mut cmd = kafka.tool(name);
    cmd.args(["--bootstrap-server", &kafka.internal])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{name}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(input.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} {args:?}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn consumer_groups(kafka: &Kafka, admin: &AdminClient) {
    let config = kafka.tool_config.display().to_string();
    // 100 keyed records over both partitions of `orders`.
    let records: String = (0..100).map(|i| format!("key-{i}:value-{i}\n")).collect();
    run_tool(
        kafka,
        "kafka-console-producer.sh",
        &[
            "--topic",
            "orders",
            "--producer.config",
            &config,
            "--property",
            "parse.key=true",
            "--property",
            "key.separator=:",
        ],
        Some(records),
    );
    let orders = [0, 1].map(|partition| TopicPartition {
        topic: "orders".to_owned(),
        partition,
    });
    let latest = admin
        .latest_offsets(&orders)
        .expect("latest offsets")
        .into_result("ListOffsets")
        .expect("offsets");
    report!("latest_offsets: {latest:?}");
    assert_eq!(latest.iter().map(|(_, o)| o).sum::<i64>(), 100);
    assert!(
        latest.iter().all(|(_, o)| *o > 0),
        "both partitions have records"
    );

    // 60 consumed, one record per poll, so the offsets committed on close
    // are those of the records printed.
    let printed = run_tool(
        kafka,
        "kafka-console-consumer.sh",
        &[
            "--topic",
            "orders",
            "--group",
            "app-batch",
            "--from-beginning",
            "--max-messages",
            "60",
            "--consumer.config",
            &config,
            "--consumer-property",
            "max.poll.records=1",
        ],
        None,
    );
    assert_eq!(printed.lines().count(), 60);

    let groups = admin.list_groups().expect("list groups");
    report!("list_groups: {groups:?}");
    let batch = groups
        .iter()
        .find(|g| g.group_id == "app-batch")
        .expect("app-batch listed");
    assert_eq!(batch.protocol_type, "consumer");
    assert_eq!(batch.state.as_deref(), Some("Empty"));
    assert_eq!(batch.coordinator, 1);

    let committed = admin
        .committed_offsets("app-batch")
        .expect("committed offsets");
    report!("committed_offsets(app-batch): {committed:?}");
    assert_eq!(committed.values().sum::<i64>(), 60);
    let lag: BTreeMap<&TopicPartition, i64> = latest
        .iter()
        .map(|(tp, end)| (tp, end - committed.get(tp).copied().unwrap_or(0)))
        .collect();
    report!("lag: {lag:?}");
    assert_eq!(lag.values().sum::<i64>(), 40);

    // Kafka's own tool reports the same offsets and lag per partition.
    let described = run_tool(
        kafka,
        "kafka-consumer-groups.sh",
        &[
            "--command-config",
            &config,
            "--describe",
            "--group",
            "app-batch",
        ],
        None,
    );
    report!("kafka-consumer-groups.sh --describe:\n{described}");
    let mut rows = 0;
    for line in described.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.first() != Some(&"app-batch") {
            continue;
        }
        let tp = TopicPartition {
            topic: cols[1].to_owned(),
            partition: cols[2].parse().expect("partition"),
        };
        let theirs: Vec<i64> = cols[3..6].iter().map(|c| c.parse().unwrap_or(0)).collect();
        let end = latest.iter().find(|(p, _)| *p == tp).map(|(_, o)| *o);
        assert_eq!(
            theirs,
            vec![
                committed.get(&tp).copied().unwrap_or(0),
                end.expect("our end offset"),
                lag[&tp]
            ],
            "{line}"
        );
        rows += 1;
    }
    assert_eq!(rows, 2, "{described}");

    assert_eq!(
        admin
            .committed_offsets("no-such-group")
            .expect("unknown group"),
        BTreeMap::new()
    );

    // A member that stays: its client, host and decoded assignment.
    let live = kafka.live_consumer("orders", "app-live", &["client.id=kraftops-live"]);
    let group = wait_for(
        "app-live to be stable",
        Duration::from_secs(60),
        kafka,
        || {
            // GROUP_ID_NOT_FOUND until the consumer has joined.
            let described = admin
                .describe_groups(&["app-live".to_owned()])
                .expect("describe groups");
            let (_, result) = described.items.into_iter().next()?;
            result.ok().filter(|g| {
                g.state == "Stable" && g.members.iter().any(|m| !m.assignment.is_empty())
            })
        },
    );
    report!("describe_groups(app-live): {group:?}");
    drop(live);
    assert_eq!(group.protocol_type, "consumer");
    assert!(!group.protocol.is_empty(), "{group:?}");
    let [member] = group.members.as_slice() else {
        panic!("one member: {group:?}");
    };
    assert_eq!(member.client_id, "kraftops-live");
    assert!(member.client_host.contains("127.0.0.1"), "{member:?}");
    assert_eq!(member.assignment, orders.to_vec());

    let both = admin
        .describe_groups(&["app-batch".to_owned(), "no-such-group".to_owned()])
        .expect("describe groups");
    report!("describe_groups(app-batch, no-such-group): {both:?}");
    let batch = both.items[0].1.as_ref().expect("app-batch");
    assert_eq!((batch.state.as_str(), batch.members.len()), ("Empty", 0));
    match &both.items[1].1 {
        Ok(g) => assert_eq!(g.state, "Dead", "{g:?}"),
        Err(e) => assert!(e.to_string().contains("group no-such-group"), "{e}"),
    }
    assert!(
        group.group_epoch.is_none() && member.member_epoch.is_none(),
        "{group:?}"
    );

    // A member of the KIP-848 protocol: ConsumerGroupDescribe gives its
    // client, host, epochs and assignment (the broker's assignor).
    let live = kafka.live_consumer(
        "orders",
        "app-848",
        &["group.protocol=consumer", "client.id=kraftops-848"],
    );
    let group = wait_for(
        "app-848 to be stable",
        Duration::from_secs(60),
        kafka,
        || {
            let described = admin
                .describe_consumer_groups(&["app-848".to_owned()])
                .expect("describe consumer groups");
            let (_, result) = described.items.into_iter().next()?;
            result.ok().filter(|g| {
                g.state == "Stable" && g.members.iter().any(|m| m.assignment.len() == 2)
            })
        },
    );
    report!("describe_consumer_groups(app-848): {group:?}");
    let classic = admin
        .describe_groups(&["app-848".to_owned()])
        .expect("describe groups");
    drop(live);
    assert_eq!(group.group_type, GroupType::Consumer);
    assert_eq!(group.protocol_type, "consumer");
    assert_eq!(group.protocol, "uniform", "Kafka's default assignor");
    let epoch = group.group_epoch.expect("a group epoch");
    assert!(epoch >= 1, "{group:?}");
    assert_eq!(group.assignment_epoch, Some(epoch));
    let [member] = group.members.as_slice() else {
        panic!("one member: {group:?}");
    };
    assert_eq!(member.client_id, "kraftops-848");
    assert!(member.client_host.contains("127.0.0.1"), "{member:?}");
    assert_eq!(member.assignment, orders.to_vec());
    assert_eq!(member.target_assignment.as_deref(), Some(&orders[..]));
    assert_eq!(member.member_epoch, Some(epoch));
    // Each describe call knows only its own type of group.
    match &classic.items[0].1 {
        Err(KafkaError::Kafka { code, .. }) => assert_eq!(code, "GROUP_ID_NOT_FOUND"),
        other => panic!("DescribeGroups of a consumer group: {other:?}"),
    }
    let not_consumer = admin
        .describe_consumer_groups(&["app-batch".to_owned()])
        .expect("describe consumer groups");
    match &not_consumer.items[0].1 {
        Err(KafkaError::Kafka { code, .. }) => assert_eq!(code, "GROUP_ID_NOT_FOUND"),
        other => panic!("ConsumerGroupDescribe of a classic group: {other:?}"),
    }
    let listed = admin.list_groups().expect("list groups");
    let types: BTreeMap<&str, Option<&str>> = listed
        .iter()
        .map(|g| (g.group_id.as_str(), g.group_type.as_deref()))
        .collect();
    assert_eq!(types.get("app-848"), Some(&Some("consumer")), "{listed:?}");
    assert_eq!(types.get("app-batch"), Some(&Some("classic")), "{listed:?}");
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

    admin
        .create_topics(
            &[NewTopic {
                name: "orders".to_owned(),
                partitions: 2,
                replication_factor: 1,
                configs: BTreeMap::new(),
            }],
            false,
        )
        .expect("create orders")
        .into_result("CreateTopics")
        .expect("orders");
    scram_user_created(&kafka, &admin);
    report!("SCRAM user created after {:?}", started.elapsed());
    acls(&kafka, &admin);
    report!("ACLs checked after {:?}", started.elapsed());
    quotas(&kafka, &admin);
    report!("quotas checked after {:?}", started.elapsed());
    scram_user_deleted(&kafka, &admin);
    report!("SCRAM user deleted after {:?}", started.elapsed());
    consumer_groups(&kafka, &admin);
    report!("consumer groups checked after {:?}", started.elapsed());
    report!("all checks done after {:?}", started.elapsed());
}
