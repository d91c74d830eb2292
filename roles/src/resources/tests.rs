//! The planner against the example repository (edited in memory where a
//! case needs it) and small hand-built Kafka states.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use desired_state::types::{NamePattern, TopicName};
use desired_state::{FileSet, InFile, Located, Model, SecretValue, Topic};

use super::*;
use crate::Secrets;

// ---------------------------------------------------------------- fixtures

fn seed_files() -> FileSet {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../desired-state/examples/seed");
    desired_state::read_repository(&root).unwrap_or_else(|d| panic!("{d}"))
}

/// The example repository, edited: each `(file, from, to)` replaces the one
/// occurrence of `from`.
fn model_with(edits: &[(&str, &str, &str)]) -> Model {
    let mut files = seed_files();
    for (file, from, to) in edits {
        let text = String::from_utf8(files[*file].clone()).expect("UTF-8");
        assert_eq!(text.matches(from).count(), 1, "{from:?} in {file}");
        files.insert((*file).to_owned(), text.replacen(from, to, 1).into_bytes());
    }
    desired_state::load_files(&files).unwrap_or_else(|d| panic!("{d}"))
}

fn seed() -> Model {
    model_with(&[])
}

/// A password per secret, made up: the planner only sees digests.
fn secrets(model: &Model, changed: &[&str]) -> Secrets {
    model
        .users
        .iter()
        .map(|u| {
            let name = (*u.password_secret).clone();
            let value = if changed.contains(&u.name.as_str()) {
                format!("rotated-{name}")
            } else {
                format!("password-{name}")
            };
            (name, SecretValue::new(value))
        })
        .collect()
}

fn digests(model: &Model) -> PasswordDigests {
    password_digests(model, &secrets(model, &[])).expect("every user's secret is there")
}

fn iterations(model: &Model) -> u32 {
    model.cluster.security.scram_iterations.value
}

/// A cluster just formatted from the example: Kafka's own topic, and the
/// inter-broker and admin users `kafka-storage format --add-scram` made,
/// with nothing recorded about their passwords.
fn fresh_cluster(model: &Model) -> Observed {
    let mut observed = Observed::default();
    observed.topics.insert(
        "__consumer_offsets".to_owned(),
        ObservedTopic {
            partitions: 50,
            replication_factor: 3,
            configs: BTreeMap::from([("cleanup.policy".to_owned(), "compact".to_owned())]),
            internal: true,
        },
    );
    for (_, user) in model.protected_users() {
        observed.scram_users.insert(
            user.to_string(),
            vec![ScramCredentialInfo {
                mechanism: ScramMechanism::ScramSha512,
                iterations: iterations(model),
            }],
        );
    }
    observed
}

/// What Kafka holds after `plan` was carried out on `observed`, and the
/// caller recorded the digests as `Observed::password_digests` says.
fn apply_to(observed: &Observed, plan: &ResourcePlan) -> Observed {
    let mut next = observed.clone();
    for planned in &plan.actions {
        match &planned.action {
            Action::CreateTopic {
                topic,
                partitions,
                replication_factor,
                configs,
            } => {
                assert!(!next.topics.contains_key(topic), "{topic} exists");
                next.topics.insert(
                    topic.clone(),
                    ObservedTopic {
                        partitions: *partitions,
                        replication_factor: *replication_factor,
                        configs: configs.clone(),
                        internal: false,
                    },
                );
            }
            Action::CreatePartitions { topic, from, to } => {
                let t = next.topics.get_mut(topic).expect("topic exists");
                assert_eq!(t.partitions, *from);
                t.partitions = *to;
            }
            Action::AlterTopicConfigs { topic, set, delete } => {
                let t = next.topics.get_mut(topic).expect("topic exists");
                t.configs.extend(set.clone());
                t.configs.retain(|k, _| !delete.contains(k));
            }
            Action::DeleteTopic { topic, .. } => {
                assert!(next.topics.remove(topic).is_some(), "{topic} exists");
            }
            Action::UpsertScramCredential {
                user,
                mechanism,
                iterations,
                password_digest,
                ..
            } => {
                let credentials = next.scram_users.entry(user.clone()).or_default();
                credentials.retain(|c| c.mechanism != *mechanism);
                credentials.push(ScramCredentialInfo {
                    mechanism: *mechanism,
                    iterations: *iterations,
                });
                if let Some(digest) = password_digest {
                    next.password_digests.insert(user.clone(), digest.clone());
                }
            }
            Action::DeleteScramCredential { user, mechanism } => {
                let credentials = next.scram_users.get_mut(user).expect("user exists");
                credentials.retain(|c| c.mechanism != *mechanism);
                if credentials.is_empty() {
                    next.scram_users.remove(user);
                }
                if *mechanism == MECHANISM {
                    next.password_digests.remove(user);
                }
            }
            Action::CreateAcl { binding } => {
                assert!(next.acls.insert(binding.clone()), "{binding} is new");
            }
            Action::DeleteAcl { binding } => {
                assert!(next.acls.remove(binding), "{binding} existed");
            }
            Action::AlterQuotas { user, set, remove } => {
                let quotas = next.quotas.entry(user.clone()).or_default();
                quotas.extend(set.clone());
                quotas.retain(|k, _| !remove.contains(k));
                if quotas.is_empty() {
                    next.quotas.remove(user);
                }
            }
        }
    }
    next
}

fn descriptions(plan: &ResourcePlan) -> Vec<&str> {
    plan.actions
        .iter()
        .map(|a| a.description.as_str())
        .collect()
}

fn topic<'a>(model: &'a Model, name: &str) -> &'a InFile<Topic> {
    model
        .topics
        .iter()
        .find(|t| t.name.as_str() == name)
        .unwrap_or_else(|| panic!("topic {name} is in the example"))
}

/// Kafka as git wants it: the plan for an empty cluster, carried out.
fn converged(model: &Model) -> Observed {
    let observed = fresh_cluster(model);
    apply_to(&observed, &plan(model, &digests(model), &observed))
}

fn binding(user: &str, resource_name: &str, operation: Operation) -> AclBinding {
    AclBinding {
        principal: format!("User:{user}"),
        resource_type: ResourceType::Topic,
        resource_name: resource_name.to_owned(),
        pattern_type: PatternType::Literal,
        operation,
        permission: Permission::Allow,
        host: "*".to_owned(),
    }
}

fn at(location: &Option<SourceLocation>) -> String {
    location
        .as_ref()
        .map_or_else(|| "(nowhere)".to_owned(), ToString::to_string)
}

// ------------------------------------------------------------ the mapping

#[test]
fn model_acl_names_map_one_to_one_onto_kafkas() {
    let yaml = |v: &dyn erased::Yaml| v.yaml().to_uppercase();
    use desired_state::{AclOperation as O, AclPattern as P, AclPermission as A, AclResource as R};
    let resources = [R::Topic, R::Group, R::Cluster, R::TransactionalId];
    let kafka: BTreeSet<&str> = resources
        .iter()
        .map(|r| ResourceType::from(*r).kafka_name())
        .collect();
    assert_eq!(kafka.len(), resources.len());
    for r in resources {
        assert_eq!(yaml(&r), ResourceType::from(r).kafka_name());
    }
    for p in [P::Literal, P::Prefixed] {
        assert_eq!(yaml(&p), PatternType::from(p).kafka_name());
    }
    let operations = [
        O::All,
        O::Read,
        O::Write,
        O::Create,
        O::Delete,
        O::Alter,
        O::Describe,
        O::ClusterAction,
        O::DescribeConfigs,
        O::AlterConfigs,
        O::IdempotentWrite,
    ];
    for o in operations {
        assert_eq!(yaml(&o), Operation::from(o).kafka_name());
    }
    for a in [A::Allow, A::Deny] {
        assert_eq!(yaml(&a), Permission::from(a).kafka_name());
    }
}

/// How a model enum is spelled in YAML, through serde.
mod erased {
    pub trait Yaml {
        fn yaml(&self) -> String;
    }
    impl<T: serde::Serialize> Yaml for T {
        fn yaml(&self) -> String {
            match serde_json::to_value(self) {
                Ok(serde_json::Value::String(s)) => s,
                other => panic!("not a unit variant: {other:?}"),
            }
        }
    }
}

#[test]
fn kafka_codes_round_trip_and_follow_kafka() {
    fn check<T: Copy + PartialEq + std::fmt::Debug>(
        all: &[T],
        code: fn(T) -> i8,
        from: fn(i8) -> Option<T>,
    ) {
        for v in all {
            assert_eq!(from(code(*v)), Some(*v));
        }
        // UNKNOWN (0) and ANY (1) are filters, never a binding's value.
        assert_eq!(from(0), None);
        assert_eq!(from(1), None);
    }
    check(
        ResourceType::ALL,
        ResourceType::kafka_code,
        ResourceType::from_kafka_code,
    );
    check(
        PatternType::ALL,
        PatternType::kafka_code,
        PatternType::from_kafka_code,
    );
    check(
        Operation::ALL,
        Operation::kafka_code,
        Operation::from_kafka_code,
    );
    check(
        Permission::ALL,
        Permission::kafka_code,
        Permission::from_kafka_code,
    );
    // A few codes as Kafka defines them.
    assert_eq!(Operation::Read.kafka_code(), 3);
    assert_eq!(Operation::IdempotentWrite.kafka_code(), 12);
    assert_eq!(ResourceType::TransactionalId.kafka_code(), 5);
    assert_eq!(PatternType::Prefixed.kafka_code(), 4);
    assert_eq!(Permission::Allow.kafka_code(), 3);
    assert_eq!(ScramMechanism::ScramSha512.kafka_code(), 2);
}

#[test]
fn cluster_acls_name_kafka_cluster_and_are_literal() {
    let model = seed();
    let connect = model
        .users
        .iter()
        .find(|u| u.name.as_str() == "kafka_connect")
        .expect("kafka_connect");
    let cluster: Vec<AclBinding> = desired_bindings(connect)
        .into_keys()
        .filter(|b| b.resource_type == ResourceType::Cluster)
        .collect();
    assert_eq!(cluster.len(), 2, "{cluster:?}");
    for b in &cluster {
        assert_eq!(b.resource_name, "kafka-cluster");
        assert_eq!(b.pattern_type, PatternType::Literal);
        assert_eq!(b.principal, "User:kafka_connect");
    }
    let prefixed = desired_bindings(connect)
        .into_keys()
        .filter(|b| b.pattern_type == PatternType::Prefixed)
        .count();
    assert_eq!(
        prefixed, 5,
        "connect- prefixed: read, write, describe, create, describe_configs"
    );
}

// ----------------------------------------------------------- an empty cluster

#[test]
fn a_fresh_cluster_gets_everything_git_declares() {
    let model = seed();
    let observed = fresh_cluster(&model);
    let plan = plan(&model, &digests(&model), &observed);
    assert!(plan.refusals.is_empty(), "{:?}", plan.refusals);

    let creates: Vec<&Action> = plan
        .actions
        .iter()
        .map(|a| &a.action)
        .filter(|a| matches!(a, Action::CreateTopic { .. }))
        .collect();
    let topic_1 = topic(&model, "topic-1");
    assert_eq!(
        creates,
        [
            &Action::CreateTopic {
                topic: "test-topic".to_owned(),
                partitions: 3,
                replication_factor: *model.cluster.topic_defaults.replication_factor,
                configs: BTreeMap::from([("cleanup.policy".to_owned(), "delete".to_owned())]),
            },
            &Action::CreateTopic {
                topic: "topic-1".to_owned(),
                partitions: *topic_1.partitions,
                replication_factor: 3,
                configs: BTreeMap::from([
                    ("min.insync.replicas".to_owned(), "2".to_owned()),
                    ("retention.ms".to_owned(), "604800000".to_owned()),
                ]),
            },
        ]
    );
    let described = descriptions(&plan);
    assert!(
        described.contains(
            &"create topic topic-1 (6 partitions, RF 3; min.insync.replicas=2, retention.ms=604800000)"
        ),
        "{described:#?}"
    );
    let source = plan
        .actions
        .iter()
        .find(|a| matches!(&a.action, Action::CreateTopic { topic, .. } if topic == "topic-1"));
    assert_eq!(
        at(&source.expect("topic-1 is created").source),
        "topics/app.yaml:4:11"
    );

    // Every user gets its credential; broker and admin, made at format
    // time, because nobody recorded which password they hold.
    let credentials: Vec<(&str, &CredentialReason)> = plan
        .actions
        .iter()
        .filter_map(|a| match &a.action {
            Action::UpsertScramCredential { user, reason, .. } => Some((user.as_str(), reason)),
            _ => None,
        })
        .collect();
    assert_eq!(
        credentials,
        [
            ("admin", &CredentialReason::Unrecorded),
            ("broker", &CredentialReason::Unrecorded),
            ("client", &CredentialReason::Missing),
            ("kafka_connect", &CredentialReason::Missing),
        ]
    );

    // One binding per declared operation.
    let declared_operations: usize = model
        .users
        .iter()
        .flat_map(|u| u.acls.iter())
        .map(|acl| acl.operations.len())
        .sum();
    let acls = plan
        .actions
        .iter()
        .filter(|a| matches!(a.action, Action::CreateAcl { .. }))
        .count();
    assert_eq!(acls, declared_operations);
    assert!(
        described
            .contains(&"add ACL User:client ALLOW READ on GROUP client- (PREFIXED) from host *"),
        "{described:#?}"
    );
    assert!(described.contains(
        &"quotas of user client: set consumer_byte_rate=20971520, producer_byte_rate=10485760"
    ));

    // Kafka's own topic is not touched, and nothing is deleted.
    assert!(!described.iter().any(|d| d.contains("__consumer_offsets")));
    assert!(!plan.actions.iter().any(|a| matches!(
        a.action,
        Action::DeleteTopic { .. }
            | Action::DeleteAcl { .. }
            | Action::DeleteScramCredential { .. }
    )));
}

#[test]
fn planning_what_the_plan_made_plans_nothing() {
    let model = seed();
    let passwords = digests(&model);
    let mut observed = fresh_cluster(&model);
    // Things kraftops must leave alone, and one it must prune.
    observed.topics.insert(
        "unmanaged".to_owned(),
        ObservedTopic {
            partitions: 1,
            replication_factor: 1,
            ..ObservedTopic::default()
        },
    );
    observed.topics.insert(
        "scratch-1".to_owned(),
        ObservedTopic {
            partitions: 1,
            replication_factor: 1,
            ..ObservedTopic::default()
        },
    );
    observed
        .acls
        .insert(binding("someone-else", "unmanaged", Operation::Read));
    let first = plan(&model, &passwords, &observed);
    assert!(!first.is_converged());
    let after = apply_to(&observed, &first);
    let second = plan(&model, &passwords, &after);
    assert!(
        second.is_converged(),
        "the second plan should be empty: {:#?}",
        descriptions(&second)
    );
    assert!(second.refusals.is_empty());
    assert!(second.drift.is_empty(), "{:?}", second.drift);
    assert!(after.topics.contains_key("unmanaged"));
    assert!(!after.topics.contains_key("scratch-1"));
    assert!(after.topics.contains_key("__consumer_offsets"));
    assert!(
        after
            .acls
            .contains(&binding("someone-else", "unmanaged", Operation::Read))
    );
}

#[test]
fn the_same_inputs_give_the_same_plan() {
    let model = seed();
    let observed = fresh_cluster(&model);
    let passwords = digests(&model);
    assert_eq!(
        plan(&model, &passwords, &observed),
        plan(&model, &passwords, &observed)
    );
}

// ------------------------------------------------------------------ topics

#[test]
fn topic_defaults_give_the_replication_factor_of_topics_without_one() {
    let model = model_with(&[(
        "cluster.yaml",
        "  replication_factor: 3\n",
        "  replication_factor: 4\n",
    )]);
    let plan = plan(&model, &digests(&model), &Observed::default());
    let rf_of = |name: &str| {
        plan.actions.iter().find_map(|a| match &a.action {
            Action::CreateTopic {
                topic,
                replication_factor,
                ..
            } if topic == name => Some(*replication_factor),
            _ => None,
        })
    };
    assert_eq!(rf_of("test-topic"), Some(4));
    assert_eq!(rf_of("topic-1"), Some(3), "its own replication_factor wins");
}

#[test]
fn configs_changed_or_added_by_hand_are_put_back() {
    let model = seed();
    let mut observed = converged(&model);
    let t = observed.topics.get_mut("topic-1").expect("topic-1");
    t.configs
        .insert("retention.ms".to_owned(), "1000".to_owned());
    t.configs
        .insert("segment.ms".to_owned(), "60000".to_owned());
    t.configs.remove("min.insync.replicas");
    let plan = plan(&model, &digests(&model), &observed);
    assert_eq!(plan.actions.len(), 1, "{:#?}", descriptions(&plan));
    assert_eq!(
        plan.actions[0].action,
        Action::AlterTopicConfigs {
            topic: "topic-1".to_owned(),
            set: BTreeMap::from([
                ("min.insync.replicas".to_owned(), "2".to_owned()),
                ("retention.ms".to_owned(), "604800000".to_owned()),
            ]),
            delete: BTreeSet::from(["segment.ms".to_owned()]),
        }
    );
    assert_eq!(
        plan.actions[0].description,
        "configs of topic topic-1: set min.insync.replicas=2, retention.ms=604800000; remove segment.ms (back to the broker default)"
    );
    assert_eq!(plan.drift.len(), 1);
    assert_eq!(plan.drift[0].resource, "topic topic-1");
    assert!(
        plan.drift[0]
            .message
            .contains("retention.ms is 1000 in Kafka, 604800000 in git"),
        "{:?}",
        plan.drift
    );
    assert!(
        plan.drift[0]
            .message
            .contains("segment.ms is set in Kafka (60000), not in git")
    );
}

#[test]
fn partitions_grow() {
    let model = seed();
    let mut observed = converged(&model);
    observed
        .topics
        .get_mut("topic-1")
        .expect("topic-1")
        .partitions = 2;
    let plan = plan(&model, &digests(&model), &observed);
    assert_eq!(
        plan.actions
            .iter()
            .map(|a| (&a.action, at(&a.source)))
            .collect::<Vec<_>>(),
        [(
            &Action::CreatePartitions {
                topic: "topic-1".to_owned(),
                from: 2,
                to: 6
            },
            "topics/app.yaml:5:17".to_owned()
        )]
    );
}

#[test]
fn partitions_never_shrink() {
    let model = seed();
    let mut observed = converged(&model);
    let t = observed.topics.get_mut("topic-1").expect("topic-1");
    t.partitions = 12;
    t.configs.insert("retention.ms".to_owned(), "1".to_owned());
    let plan = plan(&model, &digests(&model), &observed);
    assert_eq!(plan.refusals.len(), 1, "{:?}", plan.refusals);
    let refusal = &plan.refusals[0];
    assert_eq!(refusal.resource, "topic topic-1");
    assert_eq!(at(&refusal.location), "topics/app.yaml:5:17");
    assert!(
        refusal.message.contains("Set partitions back to 12"),
        "{}",
        refusal.message
    );
    assert!(
        !plan.actions.iter().any(|a| matches!(
            a.action,
            Action::CreatePartitions { .. } | Action::DeleteTopic { .. }
        )),
        "{:#?}",
        descriptions(&plan)
    );
    // The rest of the topic is still reconciled.
    assert!(matches!(
        &plan.actions[..],
        [PlannedAction { action: Action::AlterTopicConfigs { topic, .. }, .. }] if topic == "topic-1"
    ));
}

#[test]
fn replication_factor_changes_are_refused_where_they_are_asked_for() {
    let model = seed();
    let mut observed = converged(&model);
    observed
        .topics
        .get_mut("topic-1")
        .expect("topic-1")
        .replication_factor = 2;
    observed
        .topics
        .get_mut("test-topic")
        .expect("test-topic")
        .replication_factor = 4;
    let plan = plan(&model, &digests(&model), &observed);
    assert!(plan.is_converged(), "{:#?}", descriptions(&plan));
    let refusals: Vec<(String, &str)> = plan
        .refusals
        .iter()
        .map(|r| (at(&r.location), r.resource.as_str()))
        .collect();
    assert_eq!(
        refusals,
        [
            ("topics/app.yaml:10:11".to_owned(), "topic test-topic"),
            ("topics/app.yaml:6:25".to_owned(), "topic topic-1"),
        ]
    );
    assert!(
        plan.refusals[0]
            .message
            .contains("from topic_defaults.replication_factor")
    );
    assert!(
        plan.refusals[1]
            .message
            .contains("Set replication_factor: 2")
    );
}

#[test]
fn a_topic_marked_for_deletion_is_deleted_last_and_only_if_present() {
    let model = model_with(&[(
        "topics/app.yaml",
        "    partitions: 3\n",
        "    partitions: 3\n    delete: true\n",
    )]);
    let observed = converged(&seed());
    let plan = plan(&model, &digests(&model), &observed);
    assert_eq!(plan.actions.len(), 1, "{:#?}", descriptions(&plan));
    let last = plan.actions.last().expect("actions");
    assert_eq!(
        last.action,
        Action::DeleteTopic {
            topic: "test-topic".to_owned(),
            reason: DeleteReason::Marked
        }
    );
    assert_eq!(at(&last.source), "topics/app.yaml:12:13");
    assert_eq!(
        last.description,
        "delete topic test-topic (marked delete: true in git)"
    );

    let gone = apply_to(&observed, &plan);
    let again = super::plan(&model, &digests(&model), &gone);
    assert!(again.is_converged(), "{:#?}", descriptions(&again));
}

#[test]
fn unlisted_topics_are_deleted_only_under_a_prune_pattern() {
    let model = seed();
    let mut observed = converged(&model);
    for name in ["scratch-a", "scratch-b", "scratchy", "orders"] {
        observed.topics.insert(
            name.to_owned(),
            ObservedTopic {
                partitions: 1,
                replication_factor: 1,
                ..ObservedTopic::default()
            },
        );
    }
    let plan = plan(&model, &digests(&model), &observed);
    let deleted: Vec<(&str, String)> = plan
        .actions
        .iter()
        .map(|a| match &a.action {
            Action::DeleteTopic { topic, reason } => (topic.as_str(), reason.to_string()),
            other => panic!("only deletions expected, got {other:?}"),
        })
        .collect();
    assert_eq!(
        deleted,
        [
            (
                "scratch-a",
                "not in git, matches prune pattern scratch-*".to_owned()
            ),
            (
                "scratch-b",
                "not in git, matches prune pattern scratch-*".to_owned()
            ),
        ]
    );
    assert_eq!(at(&plan.actions[0].source), "cluster.yaml:135:14");
}

#[test]
fn internal_and_connect_topics_are_never_touched() {
    // Patterns and declarations validation refuses, put into the model
    // directly: the planner holds the line on its own.
    let mut model = seed();
    let everything = NamePattern::try_from("*").expect("pattern");
    model
        .cluster
        .resources
        .prune
        .topics
        .push(Located::unplaced(everything));
    let declared = topic(&model, "test-topic").clone();
    for name in ["__transaction_state", "connect-configs"] {
        let mut t = declared.clone();
        t.item.value.name = Located::unplaced(TopicName::try_from(name).expect("topic name"));
        t.item.value.delete = Located::unplaced(true);
        model.topics.push(t);
    }
    let mut observed = converged(&seed());
    for (name, internal) in [
        ("__transaction_state", true),
        ("_confluent-metrics", true),
        ("connect-configs", false),
        ("connect-offsets", false),
        ("connect-status", false),
        ("leftover", false),
    ] {
        observed.topics.insert(
            name.to_owned(),
            ObservedTopic {
                partitions: 1,
                replication_factor: 1,
                configs: BTreeMap::from([("cleanup.policy".to_owned(), "compact".to_owned())]),
                internal,
            },
        );
    }
    let plan = plan(&model, &digests(&model), &observed);
    let touched: Vec<String> = plan
        .actions
        .iter()
        .filter_map(|a| match &a.action {
            Action::CreateTopic { topic, .. }
            | Action::CreatePartitions { topic, .. }
            | Action::AlterTopicConfigs { topic, .. }
            | Action::DeleteTopic { topic, .. } => Some(topic.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(touched, ["leftover"]);
    let noted: Vec<&str> = plan.drift.iter().map(|d| d.resource.as_str()).collect();
    assert!(noted.contains(&"topic __transaction_state"), "{noted:?}");
    assert!(noted.contains(&"topic connect-configs"), "{noted:?}");
}

// ------------------------------------------------------------------- users

fn credential_actions(plan: &ResourcePlan) -> Vec<&Action> {
    plan.actions
        .iter()
        .map(|a| &a.action)
        .filter(|a| {
            matches!(
                a,
                Action::UpsertScramCredential { .. } | Action::DeleteScramCredential { .. }
            )
        })
        .collect()
}

#[test]
fn credentials_are_set_again_only_when_something_differs() {
    let model = seed();
    let passwords = digests(&model);
    let converged = converged(&model);
    assert!(plan(&model, &passwords, &converged).is_converged());
    let want = iterations(&model);

    // Other iterations in Kafka.
    let mut observed = converged.clone();
    observed.scram_users.insert(
        "client".to_owned(),
        vec![ScramCredentialInfo {
            mechanism: ScramMechanism::ScramSha512,
            iterations: 4096,
        }],
    );
    let p = plan(&model, &passwords, &observed);
    assert_eq!(
        credential_actions(&p),
        [&Action::UpsertScramCredential {
            user: "client".to_owned(),
            mechanism: ScramMechanism::ScramSha512,
            iterations: want,
            reason: CredentialReason::Iterations {
                observed: 4096,
                desired: want
            },
            password_digest: passwords.get(user_name(&model, "client")).cloned(),
        }]
    );

    // The password changed in git.
    let rotated = password_digests(&model, &secrets(&model, &["client"])).expect("digests");
    assert_ne!(
        rotated.get(user_name(&model, "client")),
        passwords.get(user_name(&model, "client"))
    );
    assert_eq!(
        rotated.get(user_name(&model, "admin")),
        passwords.get(user_name(&model, "admin"))
    );
    let p = plan(&model, &rotated, &converged);
    let reasons: Vec<(&str, &CredentialReason)> = p
        .actions
        .iter()
        .filter_map(|a| match &a.action {
            Action::UpsertScramCredential { user, reason, .. } => Some((user.as_str(), reason)),
            _ => None,
        })
        .collect();
    assert_eq!(reasons, [("client", &CredentialReason::PasswordChanged)]);
    assert_eq!(p.actions.len(), 1, "{:#?}", descriptions(&p));
    assert!(
        !p.actions[0].description.contains("rotated-"),
        "no secret in a description"
    );

    // No record of the password (the coordinator lost its state).
    let mut forgotten = converged.clone();
    forgotten.password_digests.remove("kafka_connect");
    let p = plan(&model, &passwords, &forgotten);
    assert!(matches!(
        credential_actions(&p)[..],
        [Action::UpsertScramCredential { user, reason: CredentialReason::Unrecorded, .. }] if user == "kafka_connect"
    ));

    // Git's password not available: Kafka-visible facts only, and a note.
    let mut partial = passwords.clone();
    partial.remove(user_name(&model, "client"));
    let p = plan(&model, &partial, &converged);
    assert!(p.is_converged(), "{:#?}", descriptions(&p));
    assert_eq!(p.drift.len(), 1);
    assert_eq!(p.drift[0].resource, "user client");
}

#[test]
fn an_inter_broker_password_changed_in_git_is_refused_not_set() {
    let model = seed();
    let converged = converged(&model);
    let rotated = password_digests(&model, &secrets(&model, &["broker"])).expect("digests");
    let p = plan(&model, &rotated, &converged);
    assert!(credential_actions(&p).is_empty(), "{:#?}", descriptions(&p));
    assert_eq!(p.refusals.len(), 1, "{:#?}", p.refusals);
    let refusal = &p.refusals[0];
    assert_eq!(refusal.resource, "user broker");
    // At the user's password_secret, the value to put back.
    let text = String::from_utf8(seed_files()["users/platform.yaml"].clone()).expect("UTF-8");
    let offset = text.find("broker-password").expect("the secret");
    let line = text[..offset].matches('\n').count() + 1;
    let column = offset - text[..offset].rfind('\n').map_or(0, |i| i + 1) + 1;
    assert_eq!(
        at(&refusal.location),
        format!("users/platform.yaml:{line}:{column}")
    );
    assert!(
        refusal.message.contains(
            "the security.inter_broker_user, changed in git (secrets/broker-password.age)"
        ) && refusal.message.contains("put the previous password back"),
        "{}",
        refusal.message
    );
    assert!(
        !refusal.message.contains("rotated-"),
        "no secret in a refusal"
    );
    // Nothing else differs: the refusal is all there is.
    assert!(p.actions.is_empty(), "{:#?}", descriptions(&p));

    // A missing credential is still created, and other iterations set: the
    // password is the one the brokers hold.
    let mut observed = converged.clone();
    observed.scram_users.remove("broker");
    let p = plan(&model, &digests(&model), &observed);
    assert!(p.refusals.is_empty(), "{:#?}", p.refusals);
    assert!(matches!(
        credential_actions(&p)[..],
        [Action::UpsertScramCredential { user, reason: CredentialReason::Missing, .. }] if user == "broker"
    ));

    // The admin user's change is planned: the coordinator is logged in with
    // git's password, so Kafka holds it already.
    let rotated = password_digests(&model, &secrets(&model, &["admin"])).expect("digests");
    let p = plan(&model, &rotated, &converged);
    assert!(p.refusals.is_empty(), "{:#?}", p.refusals);
    assert!(matches!(
        credential_actions(&p)[..],
        [Action::UpsertScramCredential { user, reason: CredentialReason::PasswordChanged, .. }] if user == "admin"
    ));
}

/// The name of a user of the example, as the model holds it.
fn user_name<'a>(model: &'a Model, name: &str) -> &'a desired_state::types::UserName {
    &model
        .users
        .iter()
        .find(|u| u.name.as_str() == name)
        .unwrap_or_else(|| panic!("user {name}"))
        .name
        .value
}

#[test]
fn other_scram_mechanisms_of_a_managed_user_are_removed() {
    let model = seed();
    let mut observed = converged(&model);
    observed
        .scram_users
        .get_mut("client")
        .expect("client")
        .push(ScramCredentialInfo {
            mechanism: ScramMechanism::ScramSha256,
            iterations: 4096,
        });
    let p = plan(&model, &digests(&model), &observed);
    assert_eq!(
        credential_actions(&p),
        [&Action::DeleteScramCredential {
            user: "client".to_owned(),
            mechanism: ScramMechanism::ScramSha256,
        }]
    );
    assert_eq!(p.actions.len(), 1);
}

#[test]
fn password_digests_bind_user_password_and_iterations() {
    let model = seed();
    let base = digests(&model);
    assert_eq!(base.len(), model.users.len());
    let distinct: BTreeSet<&PasswordDigest> = base.values().collect();
    assert_eq!(distinct.len(), base.len(), "one digest per user");
    assert!(base.values().all(|d| d.as_str().len() == 64));
    let more = model_with(&[(
        "cluster.yaml",
        "  scram_iterations: 8192\n",
        "  scram_iterations: 4096\n",
    )]);
    let fewer_rounds = digests(&more);
    for (user, digest) in &base {
        assert_ne!(fewer_rounds.get(user), Some(digest), "{user}");
    }
    let mut missing = secrets(&model, &[]);
    missing.retain(|name, _| name.as_str() != "client-password");
    assert!(matches!(
        password_digests(&model, &missing),
        Err(RenderError::MissingSecret { name, .. }) if name == "client-password"
    ));
}

// ------------------------------------------------------------- ACLs, quotas

#[test]
fn acls_of_managed_users_are_reconciled_both_ways() {
    let model = seed();
    let mut observed = converged(&model);
    let granted = binding("client", "topic-1", Operation::Read);
    assert!(observed.acls.remove(&granted));
    let by_hand = binding("client", "payments", Operation::Write);
    observed.acls.insert(by_hand.clone());
    let other_host = AclBinding {
        host: "10.0.0.1".to_owned(),
        ..binding("client", "topic-1", Operation::Write)
    };
    observed.acls.insert(other_host.clone());
    let unmanaged = binding("legacy-app", "payments", Operation::Read);
    observed.acls.insert(unmanaged.clone());
    let everyone = AclBinding {
        principal: "User:*".to_owned(),
        ..binding("x", "public", Operation::Read)
    };
    observed.acls.insert(everyone);

    let p = plan(&model, &digests(&model), &observed);
    let actions: Vec<(&Action, String)> = p
        .actions
        .iter()
        .map(|a| (&a.action, at(&a.source)))
        .collect();
    assert_eq!(
        actions,
        [
            (
                &Action::CreateAcl {
                    binding: granted.clone()
                },
                "users/platform.yaml:18:9".to_owned()
            ),
            (
                &Action::DeleteAcl {
                    binding: by_hand.clone()
                },
                "users/platform.yaml:11:11".to_owned()
            ),
            (
                &Action::DeleteAcl {
                    binding: other_host.clone()
                },
                "users/platform.yaml:11:11".to_owned()
            ),
        ]
    );
    assert_eq!(
        p.actions[1].description,
        "remove ACL User:client ALLOW WRITE on TOPIC payments (LITERAL) from host * (not in git)"
    );
    assert_eq!(p.drift.len(), 2, "{:?}", p.drift);
}

#[test]
fn quotas_of_managed_users_are_reconciled_both_ways() {
    let model = seed();
    let mut observed = converged(&model);
    observed.quotas.insert(
        "client".to_owned(),
        BTreeMap::from([
            ("producer_byte_rate".to_owned(), 1.0),
            ("consumer_byte_rate".to_owned(), 20_971_520.0),
            ("request_percentage".to_owned(), 50.0),
        ]),
    );
    observed.quotas.insert(
        "kafka_connect".to_owned(),
        BTreeMap::from([("controller_mutation_rate".to_owned(), 5.0)]),
    );
    observed.quotas.insert(
        "legacy-app".to_owned(),
        BTreeMap::from([("producer_byte_rate".to_owned(), 5.0)]),
    );
    let p = plan(&model, &digests(&model), &observed);
    let actions: Vec<(&Action, String)> = p
        .actions
        .iter()
        .map(|a| (&a.action, at(&a.source)))
        .collect();
    assert_eq!(
        actions,
        [
            (
                &Action::AlterQuotas {
                    user: "client".to_owned(),
                    set: BTreeMap::from([("producer_byte_rate".to_owned(), 10_485_760.0)]),
                    remove: BTreeSet::from(["request_percentage".to_owned()]),
                },
                "users/platform.yaml:15:7".to_owned()
            ),
            (
                &Action::AlterQuotas {
                    user: "kafka_connect".to_owned(),
                    set: BTreeMap::new(),
                    remove: BTreeSet::from(["controller_mutation_rate".to_owned()]),
                },
                "users/platform.yaml:28:11".to_owned()
            ),
        ]
    );
}

// ------------------------------------------------------------ deleted users

/// The example with `client` marked for deletion (its ACLs and quotas gone
/// from git, as validation requires).
fn client_marked_for_deletion() -> Model {
    let text = String::from_utf8(seed_files()["users/platform.yaml"].clone()).expect("UTF-8");
    let start = text.find("  - name: client\n").expect("client");
    let end = text
        .find("  - name: kafka_connect\n")
        .expect("kafka_connect");
    model_with(&[(
        "users/platform.yaml",
        &text[start..end],
        "  - name: client\n    password_secret: client-password\n    delete: true\n",
    )])
}

#[test]
fn a_user_marked_for_deletion_loses_credentials_acls_and_quotas() {
    let model = client_marked_for_deletion();
    let mut observed = converged(&seed());
    observed
        .scram_users
        .get_mut("client")
        .expect("client")
        .push(ScramCredentialInfo {
            mechanism: ScramMechanism::ScramSha256,
            iterations: 4096,
        });
    let client_acls = observed
        .acls
        .iter()
        .filter(|b| b.principal == "User:client")
        .count();
    assert!(client_acls > 0);
    let p = plan(&model, &digests(&model), &observed);
    assert!(
        p.actions
            .iter()
            .all(|a| at(&a.source) == "users/platform.yaml:13:13")
    );
    let kinds: Vec<&str> = p
        .actions
        .iter()
        .map(|a| match &a.action {
            Action::DeleteScramCredential { user, .. } if user == "client" => "credential",
            Action::DeleteAcl { binding } if binding.principal == "User:client" => "acl",
            Action::AlterQuotas { user, set, .. } if user == "client" && set.is_empty() => "quotas",
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    let mut expected = vec!["credential", "credential"];
    expected.extend(std::iter::repeat_n("acl", client_acls));
    expected.push("quotas");
    assert_eq!(kinds, expected);
    assert!(
        p.actions[0]
            .description
            .ends_with("(user marked delete: true in git)"),
        "{}",
        p.actions[0].description
    );
    let after = apply_to(&observed, &p);
    assert!(!after.known_users().contains("client"));
    assert!(super::plan(&model, &digests(&model), &after).is_converged());
}

#[test]
fn unlisted_users_are_deleted_only_under_a_prune_pattern() {
    let model = model_with(&[("cluster.yaml", "    users: []\n", "    users: [temp-*]\n")]);
    let mut observed = converged(&model);
    for user in ["temp-1", "legacy-app"] {
        observed.scram_users.insert(
            user.to_owned(),
            vec![ScramCredentialInfo {
                mechanism: ScramMechanism::ScramSha512,
                iterations: 4096,
            }],
        );
        observed
            .acls
            .insert(binding(user, "topic-1", Operation::Read));
    }
    // Known to Kafka through a quota alone.
    observed.quotas.insert(
        "temp-2".to_owned(),
        BTreeMap::from([("request_percentage".to_owned(), 10.0)]),
    );
    let p = plan(&model, &digests(&model), &observed);
    let touched: BTreeSet<&str> = p
        .actions
        .iter()
        .map(|a| match &a.action {
            Action::DeleteScramCredential { user, .. } | Action::AlterQuotas { user, .. } => {
                user.as_str()
            }
            Action::DeleteAcl { binding } => binding.user().expect("a user"),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(touched, BTreeSet::from(["temp-1", "temp-2"]));
    assert_eq!(p.actions.len(), 3, "{:#?}", descriptions(&p));
    assert!(
        p.actions
            .iter()
            .all(|a| at(&a.source) == "cluster.yaml:136:13")
    );
    assert!(
        p.actions[0]
            .description
            .ends_with("(user not in git, matches prune pattern temp-*)")
    );
}

#[test]
fn protected_principals_are_never_deleted() {
    // What validation refuses, forced into the model.
    let mut model = seed();
    model.cluster.resources.prune.users.push(Located::unplaced(
        NamePattern::try_from("*").expect("pattern"),
    ));
    for u in &mut model.users {
        if u.name.as_str() == "admin" {
            u.item.value.delete = Located::unplaced(true);
        }
    }
    let mut observed = converged(&seed());
    // A node's certificate principal with an ACL, and a user git forgot.
    observed
        .acls
        .insert(binding("broker-1", "topic-1", Operation::Describe));
    observed.scram_users.insert(
        "forgotten".to_owned(),
        vec![ScramCredentialInfo {
            mechanism: ScramMechanism::ScramSha512,
            iterations: 8192,
        }],
    );
    let p = plan(&model, &digests(&model), &observed);
    assert_eq!(
        p.actions.iter().map(|a| &a.action).collect::<Vec<_>>(),
        [&Action::DeleteScramCredential {
            user: "forgotten".to_owned(),
            mechanism: ScramMechanism::ScramSha512,
        }]
    );
    let noted: Vec<&str> = p.drift.iter().map(|d| d.resource.as_str()).collect();
    assert_eq!(noted, ["user admin", "user broker-1"]);
}

// ------------------------------------------------------------------- order

#[test]
fn steps_run_in_order() {
    let model = client_marked_for_deletion();
    let model = {
        let mut m = model;
        for t in &mut m.topics {
            if t.name.as_str() == "test-topic" {
                t.item.value.delete = Located::unplaced(true);
            }
        }
        m
    };
    let mut observed = converged(&seed());
    let t = observed.topics.get_mut("topic-1").expect("topic-1");
    t.partitions = 1;
    t.configs.clear();
    observed.scram_users.remove("kafka_connect");
    observed.password_digests.remove("kafka_connect");
    observed.acls.retain(|b| {
        !(b.principal == "User:kafka_connect" && b.resource_type == ResourceType::Cluster)
    });
    observed
        .acls
        .insert(binding("kafka_connect", "extra", Operation::Read));
    observed.quotas.insert(
        "kafka_connect".to_owned(),
        BTreeMap::from([("request_percentage".to_owned(), 10.0)]),
    );
    let p = plan(&model, &digests(&model), &observed);
    let step = |a: &Action| match a {
        Action::CreateTopic { .. } => 0,
        Action::CreatePartitions { .. } => 1,
        Action::AlterTopicConfigs { .. } => 2,
        Action::UpsertScramCredential { .. } => 3,
        Action::AlterQuotas { user, .. } if user != "client" => 4,
        Action::CreateAcl { .. } => 5,
        Action::DeleteAcl { binding } if binding.principal != "User:client" => 6,
        Action::DeleteScramCredential { user, .. } | Action::AlterQuotas { user, .. }
            if user == "client" =>
        {
            7
        }
        Action::DeleteAcl { .. } => 7,
        Action::DeleteTopic { .. } => 8,
        other => panic!("unexpected {other:?}"),
    };
    let steps: Vec<u8> = p.actions.iter().map(|a| step(&a.action)).collect();
    let mut sorted = steps.clone();
    sorted.sort();
    assert_eq!(steps, sorted, "{:#?}", descriptions(&p));
    let present: BTreeSet<u8> = steps.into_iter().collect();
    assert_eq!(present, (1..=8).collect(), "{:#?}", descriptions(&p));
}
