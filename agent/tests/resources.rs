//! The coordinator's resource writer (`coordinator::resources`) against a
//! real Apache Kafka (the node of `common::Kafka`), with the example
//! repository as git (its replication factors set to 1 for the one
//! broker): topics created with their configs, users' SCRAM credentials
//! that log in (a wrong password refused), their ACLs (taking effect) and
//! quotas; a second pass plans nothing; drift made by hand is put back; a
//! topic marked `delete: true` is deleted, a hand-made `scratch-*` topic
//! pruned, an unmanaged one left alone; a partition decrease is refused at
//! its `file:line:col` and changes nothing.
//!
//! Needs Java (`scripts/install-deps`); a missing piece fails the test.

#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{ADMIN_PASSWORD, Kafka, wait_for};
use desired_state::{FileSet, Identity, Model};
use kraftops_agent::coordinator::resources::{
    DIGEST_FILE, DigestRecord, ResourceWriter, kafka_acl,
};
use kraftops_agent::kafka::{
    AclBinding, AclFilter, AclOperation, AclPatternType, AclPermission, AclResourceType,
    AdminClient, ClusterAdmin, ConfigOp, KafkaAdmin, KafkaError, QuotaEntity, QuotaFilter,
    QuotaKey, ScramMechanism, ScramUpsert, TopicConfigChange,
};
use kraftops_agent::protocol::ResourcesReport;

const WAIT: Duration = Duration::from_secs(30);

fn seed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../desired-state/examples/seed")
}

fn identity() -> Identity {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../desired-state/examples/seed.example-only.age-identity");
    Identity::parse(&std::fs::read_to_string(path).expect("identity")).expect("parses")
}

/// The example for one broker (replication factor 1), edited further:
/// each `(file, from, to)` replaces the one occurrence of `from`.
fn model(edits: &[(&str, &str, &str)]) -> Model {
    let mut files: FileSet =
        desired_state::read_repository(&seed_dir()).expect("the example reads");
    let one_broker = [
        (
            "topics/app.yaml",
            "    replication_factor: 3\n",
            "    replication_factor: 1\n",
        ),
        (
            "cluster.yaml",
            "  replication_factor: 3\n  min_insync_replicas: 2\n",
            "  replication_factor: 1\n  min_insync_replicas: 1\n",
        ),
    ];
    for (file, from, to) in one_broker.iter().chain(edits) {
        let text = String::from_utf8(files[*file].clone()).expect("UTF-8");
        assert_eq!(text.matches(from).count(), 1, "{from:?} in {file}");
        files.insert((*file).to_owned(), text.replacen(from, to, 1).into_bytes());
    }
    desired_state::load_files(&files).unwrap_or_else(|d| panic!("{d}"))
}

fn password(model: &Model, user: &str) -> String {
    let declared = model
        .users
        .iter()
        .find(|u| u.name.as_str() == user)
        .unwrap_or_else(|| panic!("user {user} is in the example"));
    model
        .decrypt(&declared.password_secret, &identity())
        .expect("decrypts")
        .expose()
        .to_owned()
}

fn now() -> u64 {
    kraftops_agent::certs::unix_now()
}

fn show(label: &str, report: &ResourcesReport) {
    report!(
        "{label}: {}",
        serde_json::to_string_pretty(report).expect("serializes")
    );
}

fn partitions(admin: &AdminClient) -> BTreeMap<String, usize> {
    admin
        .metadata()
        .expect("metadata")
        .topics
        .into_iter()
        .filter(|t| !t.internal)
        .map(|t| (t.name, t.partitions.len()))
        .collect()
}

/// Waits until Metadata lists exactly these topics (internal ones aside)
/// with these partition counts.
fn wait_topics(kafka: &Kafka, admin: &AdminClient, want: &[(&str, usize)]) {
    let want: BTreeMap<String, usize> = want.iter().map(|(t, p)| ((*t).to_owned(), *p)).collect();
    wait_for(&format!("topics {want:?}"), WAIT, kafka, || {
        (partitions(admin) == want).then_some(())
    });
}

fn topic_configs(admin: &AdminClient, topic: &str, keys: &[&str]) -> BTreeMap<String, String> {
    admin
        .topic_configs(&[topic.to_owned()], keys)
        .expect("topic configs")
        .remove(topic)
        .unwrap_or_default()
}

/// The user's ACLs in Kafka.
fn acls_of(admin: &AdminClient, user: &str) -> BTreeSet<AclBinding> {
    admin
        .describe_acls(&AclFilter::principal(&format!("User:{user}")))
        .expect("describe ACLs")
        .into_iter()
        .collect()
}

/// The user's ACLs in git, as Kafka's bindings.
fn acls_in_git(model: &Model, user: &str) -> BTreeSet<AclBinding> {
    let declared = model
        .users
        .iter()
        .find(|u| u.name.as_str() == user)
        .expect("declared");
    roles::resources::desired_bindings(declared)
        .keys()
        .map(kafka_acl)
        .collect()
}

fn topic_acl(user: &str, topic: &str, operation: AclOperation) -> AclBinding {
    AclBinding {
        resource_type: AclResourceType::Topic,
        resource_name: topic.to_owned(),
        pattern_type: AclPatternType::Literal,
        principal: format!("User:{user}"),
        host: "*".to_owned(),
        operation,
        permission: AclPermission::Allow,
    }
}

fn descriptions(report: &ResourcesReport) -> Vec<&str> {
    report
        .actions
        .iter()
        .map(|a| a.description.as_str())
        .collect()
}

#[test]
fn the_coordinator_reconciles_topics_users_acls_and_quotas_in_a_real_kafka() {
    let kafka = Kafka::start();
    let harness = kafka.scram_client(ADMIN_PASSWORD);
    wait_for("Kafka to answer", Duration::from_secs(90), &kafka, || {
        harness.metadata().ok()
    });

    let seed = model(&[]);
    let identity = identity();

    // The coordinator logs in as the example's admin user, with the
    // example's password: give the test Kafka's admin that password.
    let admin_password = password(&seed, "admin");
    harness
        .alter_user_scram_credentials(
            &[ScramUpsert {
                user: "admin".to_owned(),
                password: admin_password.clone(),
                iterations: 8192,
            }],
            &[],
        )
        .expect("alter")
        .into_result("AlterUserScramCredentials")
        .expect("the admin takes the example's password");
    drop(harness);
    let admin = kafka.scram_client(&admin_password);
    wait_for("the admin's new password", WAIT, &kafka, || {
        admin.metadata().ok()
    });

    // Made by hand before kraftops runs: one topic under the example's
    // prune pattern (scratch-*), one no pattern matches.
    admin
        .create_topic("scratch-x", 1, 1, &[])
        .expect("scratch-x");
    admin
        .create_topic("other", 2, 1, &[("retention.ms", "3600000")])
        .expect("other");
    wait_topics(&kafka, &admin, &[("other", 2), ("scratch-x", 1)]);

    let state = tempfile::tempdir().expect("tempdir");
    let record = state.path().join(DIGEST_FILE);
    let mut writer = ResourceWriter::open(record.clone());

    // ------------------------------------------------------------ pass 1
    let first = writer.pass(&admin, &seed, &identity, "commit-1", now());
    show("first pass", &first);
    assert!(first.is_clean(), "{first:#?}");
    assert!(first.notes.is_empty(), "{:?}", first.notes);
    let done = descriptions(&first);
    for expected in [
        "create topic test-topic (3 partitions, RF 1; cleanup.policy=delete)",
        "create topic topic-1 (6 partitions, RF 1; min.insync.replicas=2, retention.ms=604800000)",
        "set the SCRAM-SHA-512 credential of user client (8192 iterations; it has none)",
        "set the SCRAM-SHA-512 credential of user kafka_connect (8192 iterations; it has none)",
        "set the SCRAM-SHA-512 credential of user admin (8192 iterations; no record of which password Kafka's credential holds)",
        "quotas of user client: set consumer_byte_rate=20971520, producer_byte_rate=10485760",
        "delete topic scratch-x (not in git, matches prune pattern scratch-*)",
    ] {
        assert!(done.contains(&expected), "{expected:?} not in {done:#?}");
    }
    assert!(
        !done.iter().any(|d| d.contains("other")),
        "the unmanaged topic is left alone: {done:#?}"
    );

    // Topics, with their configs.
    wait_topics(
        &kafka,
        &admin,
        &[("other", 2), ("test-topic", 3), ("topic-1", 6)],
    );
    let keys = ["retention.ms", "min.insync.replicas", "cleanup.policy"];
    let configs = topic_configs(&admin, "topic-1", &keys);
    assert_eq!(configs["retention.ms"], "604800000");
    assert_eq!(configs["min.insync.replicas"], "2");
    assert_eq!(
        topic_configs(&admin, "test-topic", &keys)["cleanup.policy"],
        "delete"
    );
    assert_eq!(
        topic_configs(&admin, "other", &keys)["retention.ms"],
        "3600000",
        "the unmanaged topic keeps its config"
    );

    // Users: SCRAM-SHA-512 credentials with the example's iterations.
    let credentials: BTreeMap<String, (ScramMechanism, i32)> = admin
        .describe_user_scram_credentials()
        .expect("credentials")
        .into_iter()
        .map(|c| (c.user, (c.mechanism, c.iterations)))
        .collect();
    report!("SCRAM credentials: {credentials:?}");
    for user in ["admin", "broker", "client", "kafka_connect"] {
        assert_eq!(
            credentials.get(user),
            Some(&(ScramMechanism::Sha512, 8192)),
            "{user}"
        );
    }
    let digests = DigestRecord::load(&record).expect("the record reads");
    assert_eq!(
        digests
            .digests()
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["admin", "broker", "client", "kafka_connect"]
    );

    // The client logs in with git's password and sees what its ACLs let
    // it describe; a wrong password is refused.
    let client_password = password(&seed, "client");
    let client = kafka.scram_client_as("client", &client_password);
    let seen = wait_for("the client to log in", WAIT, &kafka, || {
        client.metadata().ok()
    });
    let mut visible: Vec<String> = seen.topics.into_iter().map(|t| t.name).collect();
    visible.sort();
    report!("topics the client may describe: {visible:?}");
    assert_eq!(visible, ["test-topic", "topic-1"]);
    let refused = kafka
        .scram_client_as("client", "not-the-password")
        .metadata()
        .expect_err("a wrong password");
    report!("a wrong password: {refused}");
    assert!(
        matches!(refused, KafkaError::Authentication { .. })
            || refused.to_string().contains("authenticating"),
        "{refused:?}"
    );

    // ACLs: exactly git's, both users.
    for user in ["client", "kafka_connect"] {
        assert_eq!(acls_of(&admin, user), acls_in_git(&seed, user), "{user}");
    }
    // Quotas.
    let quotas = admin
        .describe_client_quotas(&QuotaFilter::Users(vec!["client".to_owned()]))
        .expect("quotas");
    assert_eq!(
        quotas.get(&QuotaEntity::User("client".to_owned())),
        Some(&BTreeMap::from([
            (QuotaKey::ProducerByteRate, 10_485_760.0),
            (QuotaKey::ConsumerByteRate, 20_971_520.0),
        ]))
    );

    // ------------------------------------------------------------ pass 2
    let second = writer.pass(&admin, &seed, &identity, "commit-1", now());
    show("second pass", &second);
    assert!(second.actions.is_empty(), "{:#?}", second.actions);
    assert!(second.drift.is_empty(), "{:#?}", second.drift);
    assert!(second.is_clean());

    // ------------------------------------------------------------ drift
    admin
        .alter_topic_configs(
            &[TopicConfigChange {
                topic: "topic-1".to_owned(),
                ops: vec![
                    ConfigOp::Set {
                        name: "retention.ms".to_owned(),
                        value: "1000".to_owned(),
                    },
                    ConfigOp::Set {
                        name: "segment.ms".to_owned(),
                        value: "600000".to_owned(),
                    },
                ],
            }],
            false,
        )
        .expect("alter")
        .into_result("IncrementalAlterConfigs")
        .expect("drift in configs");
    let extra = topic_acl("client", "other", AclOperation::Read);
    admin
        .create_acls(std::slice::from_ref(&extra))
        .expect("create")
        .into_result("CreateAcls")
        .expect("an extra ACL");
    let managed = topic_acl("client", "topic-1", AclOperation::Write);
    admin
        .delete_acls(&[AclFilter::exact(&managed)])
        .expect("delete")
        .into_result("DeleteAcls")
        .expect("a managed ACL deleted");
    wait_for("the drift to show", WAIT, &kafka, || {
        let acls = acls_of(&admin, "client");
        (acls.contains(&extra) && !acls.contains(&managed)).then_some(())
    });
    let third = writer.pass(&admin, &seed, &identity, "commit-1", now());
    show("after drift", &third);
    assert!(third.is_clean(), "{third:#?}");
    assert_eq!(
        descriptions(&third),
        [
            "configs of topic topic-1: set retention.ms=604800000; remove segment.ms (back to the broker default)",
            &format!("add ACL {}", roles_acl(&managed)),
            &format!("remove ACL {} (not in git)", roles_acl(&extra)),
        ]
    );
    let drift: Vec<String> = third
        .drift
        .iter()
        .map(|d| format!("{}: {}", d.resource, d.message))
        .collect();
    assert!(
        drift.iter().any(|d| d.starts_with("topic topic-1: ")
            && d.contains("retention.ms is 1000 in Kafka, 604800000 in git")),
        "{drift:#?}"
    );
    let configs = topic_configs(&admin, "topic-1", &["retention.ms", "segment.ms"]);
    assert_eq!(configs["retention.ms"], "604800000");
    assert_eq!(
        configs["segment.ms"], "604800000",
        "segment.ms is the default again"
    );
    assert_eq!(acls_of(&admin, "client"), acls_in_git(&seed, "client"));
    let fourth = writer.pass(&admin, &seed, &identity, "commit-1", now());
    assert!(fourth.actions.is_empty(), "{:#?}", fourth.actions);

    // ------------------------------------------------------------ deletion, refusal
    let edited = model(&[
        (
            "topics/app.yaml",
            "    partitions: 6\n",
            "    partitions: 2\n",
        ),
        (
            "topics/app.yaml",
            "  - name: test-topic\n",
            "  - name: test-topic\n    delete: true\n",
        ),
    ]);
    let fifth = writer.pass(&admin, &edited, &identity, "commit-2", now());
    show("deletion and a partition decrease", &fifth);
    assert_eq!(
        descriptions(&fifth),
        ["delete topic test-topic (marked delete: true in git)"]
    );
    assert!(fifth.actions.iter().all(|a| a.ok), "{fifth:#?}");
    assert_eq!(fifth.refusals.len(), 1, "{:#?}", fifth.refusals);
    let refusal = &fifth.refusals[0];
    assert_eq!(refusal.resource, "topic topic-1");
    assert_eq!(refusal.location.as_deref(), Some("topics/app.yaml:5:17"));
    assert!(
        refusal
            .message
            .starts_with("partitions 2 is fewer than the 6 topic topic-1 has in Kafka"),
        "{}",
        refusal.message
    );
    wait_topics(&kafka, &admin, &[("other", 2), ("topic-1", 6)]);

    let sixth = writer.pass(&admin, &edited, &identity, "commit-2", now());
    assert!(sixth.actions.is_empty(), "{:#?}", sixth.actions);
    assert_eq!(
        sixth.refusals, fifth.refusals,
        "still refused, still unchanged"
    );
    assert_eq!(partitions(&admin)["topic-1"], 6);
}

/// How the planner writes `binding` in a description.
fn roles_acl(binding: &AclBinding) -> String {
    kraftops_agent::coordinator::resources::observed_acl(binding)
        .expect("a plain ACL")
        .to_string()
}
