//! The observation mapping, and passes against a scripted, stateful fake
//! Kafka: plan order, a failing action reported while the others go on,
//! digests recorded only for credentials set, the record's file.

use std::sync::{Mutex, PoisonError};

use crate::kafka::{
    FeatureDescription, FeatureUpdateKind, GroupDescription, ListedGroup, PartitionMetadata,
    TopicPartition,
};

use super::*;

// ---------------------------------------------------------------- fixtures

fn seed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../desired-state/examples/seed")
}

fn seed() -> Model {
    desired_state::load_dir(&seed_dir()).expect("the example loads")
}

/// The example, edited: each `(file, from, to)` replaces the one
/// occurrence of `from`.
fn seed_with(edits: &[(&str, &str, &str)]) -> Model {
    let mut files = desired_state::read_repository(&seed_dir()).expect("the example reads");
    for (file, from, to) in edits {
        let text = String::from_utf8(files[*file].clone()).expect("UTF-8");
        assert_eq!(text.matches(from).count(), 1, "{from:?} in {file}");
        files.insert((*file).to_owned(), text.replacen(from, to, 1).into_bytes());
    }
    desired_state::load_files(&files).unwrap_or_else(|d| panic!("{d}"))
}

fn identity() -> Identity {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../desired-state/examples/seed.example-only.age-identity");
    Identity::parse(&std::fs::read_to_string(path).expect("identity")).expect("parses")
}

fn topic_metadata(name: &str, partitions: usize, rf: usize, internal: bool) -> TopicMetadata {
    TopicMetadata {
        name: name.to_owned(),
        internal,
        partitions: (0..partitions)
            .map(|p| PartitionMetadata {
                partition: i32::try_from(p).expect("small"),
                leader: 1,
                replicas: (1..=i32::try_from(rf).expect("small")).collect(),
                isr: (1..=i32::try_from(rf).expect("small")).collect(),
                offline_replicas: Vec::new(),
            })
            .collect(),
    }
}

fn entry(name: &str, value: Option<&str>, source: ConfigSource) -> ConfigEntry {
    ConfigEntry {
        name: name.to_owned(),
        value: value.map(str::to_owned),
        read_only: false,
        sensitive: false,
        source,
        synonyms: Vec::new(),
    }
}

fn acl(user: &str, resource: &str, operation: AclOperation) -> AclBinding {
    AclBinding {
        resource_type: AclResourceType::Topic,
        resource_name: resource.to_owned(),
        pattern_type: AclPatternType::Literal,
        principal: format!("User:{user}"),
        host: "*".to_owned(),
        operation,
        permission: AclPermission::Allow,
    }
}

// ---------------------------------------------------------------- the fake

#[derive(Clone, Debug, Default)]
struct FakeTopic {
    partitions: usize,
    rf: usize,
    internal: bool,
    configs: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
struct FakeState {
    topics: BTreeMap<String, FakeTopic>,
    /// (user, mechanism) → iterations.
    scram: BTreeMap<(String, ScramMechanism), i32>,
    acls: BTreeSet<AclBinding>,
    quotas: BTreeMap<String, BTreeMap<QuotaKey, f64>>,
}

/// Kafka as a few maps: every call is recorded, and a call whose record is
/// in `fail` fails with POLICY_VIOLATION (changing nothing).
#[derive(Default)]
struct FakeKafka {
    state: Mutex<FakeState>,
    calls: Mutex<Vec<String>>,
    fail: BTreeSet<String>,
    unreachable: bool,
}

fn refused(api: &'static str, what: &str) -> KafkaError {
    KafkaError::Kafka {
        api,
        what: what.to_owned(),
        code: "POLICY_VIOLATION".to_owned(),
        message: None,
    }
}

impl FakeKafka {
    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn calls(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records `call`; `Err` when it is scripted to fail.
    fn call(&self, api: &'static str, call: String) -> Result<(), KafkaError> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(call.clone());
        if self.fail.contains(&call) {
            Err(refused(api, &call))
        } else {
            Ok(())
        }
    }

    fn one<K>(key: K, result: Result<(), KafkaError>) -> ItemResults<K> {
        ItemResults {
            items: vec![(key, result)],
        }
    }

    fn down(&self) -> Result<(), KafkaError> {
        if self.unreachable {
            Err(KafkaError::NoBootstrap(
                "broker-1.kafka.internal:9091: connection refused".to_owned(),
            ))
        } else {
            Ok(())
        }
    }
}

fn not_scripted(api: &str) -> KafkaError {
    KafkaError::Config(format!("{api} is not scripted in this test"))
}

/// Only `metadata` is scripted (the resource writer reads topics through
/// [`ResourceAdmin::cluster_metadata`]); the rest is not used here.
impl crate::kafka::KafkaAdmin for FakeKafka {
    fn metadata(&self) -> Result<ClusterMetadata, KafkaError> {
        self.cluster_metadata()
    }
    fn describe_cluster(&self) -> Result<crate::kafka::ClusterDescription, KafkaError> {
        Err(not_scripted("DescribeCluster"))
    }
    fn broker_configs(&self, _node_id: i32) -> Result<Vec<ConfigEntry>, KafkaError> {
        Err(not_scripted("DescribeConfigs"))
    }
    fn topic_configs(
        &self,
        _topics: &[String],
        _keys: &[&str],
    ) -> Result<
        std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
        KafkaError,
    > {
        Err(not_scripted("DescribeConfigs"))
    }
    fn alter_broker_configs(
        &self,
        _node_id: i32,
        _ops: &[crate::kafka::ConfigOp],
    ) -> Result<(), KafkaError> {
        Err(not_scripted("IncrementalAlterConfigs"))
    }
    fn describe_quorum(&self) -> Result<crate::kafka::QuorumInfo, KafkaError> {
        Err(not_scripted("DescribeQuorum"))
    }
    fn elect_preferred_leaders(
        &self,
        _partitions: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, String)>, KafkaError> {
        Err(not_scripted("ElectLeaders"))
    }
    fn reassignments(&self) -> Result<Vec<TopicPartition>, KafkaError> {
        Err(not_scripted("ListPartitionReassignments"))
    }
}

impl ResourceAdmin for FakeKafka {
    fn cluster_metadata(&self) -> Result<ClusterMetadata, KafkaError> {
        self.down()?;
        Ok(ClusterMetadata {
            topics: self
                .state()
                .topics
                .iter()
                .map(|(name, t)| topic_metadata(name, t.partitions, t.rf, t.internal))
                .collect(),
            ..ClusterMetadata::default()
        })
    }

    fn topic_config_entries(
        &self,
        topics: &[String],
    ) -> Result<ItemResults<String, Vec<ConfigEntry>>, KafkaError> {
        let state = self.state();
        Ok(ItemResults {
            items: topics
                .iter()
                .map(|name| {
                    let answer = state
                        .topics
                        .get(name)
                        .map(|t| {
                            let mut entries: Vec<ConfigEntry> = t
                                .configs
                                .iter()
                                .map(|(k, v)| entry(k, Some(v), ConfigSource::DynamicTopic))
                                .collect();
                            // What Kafka also lists: defaults, not the topic's.
                            entries.push(entry(
                                "segment.bytes",
                                Some("1073741824"),
                                ConfigSource::Default,
                            ));
                            entries
                        })
                        .ok_or_else(|| refused("DescribeConfigs", name));
                    (name.clone(), answer)
                })
                .collect(),
        })
    }
}

impl ClusterAdmin for FakeKafka {
    fn describe_features(&self) -> Result<FeatureDescription, KafkaError> {
        Err(not_scripted("DescribeFeatures"))
    }
    fn update_features(
        &self,
        _: &str,
        _: i16,
        _: FeatureUpdateKind,
        _: bool,
    ) -> Result<(), KafkaError> {
        Err(not_scripted("UpdateFeatures"))
    }

    fn create_topics(
        &self,
        topics: &[NewTopic],
        validate_only: bool,
    ) -> Result<ItemResults<String>, KafkaError> {
        assert!(!validate_only);
        let mut items = Vec::new();
        for t in topics {
            let result = self.call("CreateTopics", format!("create topic {}", t.name));
            if result.is_ok() {
                self.state().topics.insert(
                    t.name.clone(),
                    FakeTopic {
                        partitions: usize::try_from(t.partitions).expect("positive"),
                        rf: usize::try_from(t.replication_factor).expect("positive"),
                        internal: false,
                        configs: t.configs.clone(),
                    },
                );
            }
            items.push((t.name.clone(), result));
        }
        Ok(ItemResults { items })
    }

    fn delete_topics(&self, topics: &[String]) -> Result<ItemResults<String>, KafkaError> {
        let mut items = Vec::new();
        for t in topics {
            let result = self.call("DeleteTopics", format!("delete topic {t}"));
            if result.is_ok() {
                self.state().topics.remove(t);
            }
            items.push((t.clone(), result));
        }
        Ok(ItemResults { items })
    }

    fn create_partitions(
        &self,
        increases: &[NewPartitions],
        _: bool,
    ) -> Result<ItemResults<String>, KafkaError> {
        let [increase] = increases else {
            return Err(not_scripted("CreatePartitions of several topics"));
        };
        let result = self.call(
            "CreatePartitions",
            format!("grow topic {} to {}", increase.topic, increase.total),
        );
        if result.is_ok()
            && let Some(t) = self.state().topics.get_mut(&increase.topic)
        {
            t.partitions = usize::try_from(increase.total).expect("positive");
        }
        Ok(Self::one(increase.topic.clone(), result))
    }

    fn alter_topic_configs(
        &self,
        changes: &[TopicConfigChange],
        _: bool,
    ) -> Result<ItemResults<String>, KafkaError> {
        let [change] = changes else {
            return Err(not_scripted("IncrementalAlterConfigs of several topics"));
        };
        let result = self.call(
            "IncrementalAlterConfigs",
            format!("alter configs of topic {}", change.topic),
        );
        if result.is_ok()
            && let Some(t) = self.state().topics.get_mut(&change.topic)
        {
            for op in &change.ops {
                match op {
                    ConfigOp::Set { name, value } => {
                        t.configs.insert(name.clone(), value.clone());
                    }
                    ConfigOp::Delete { name } => {
                        t.configs.remove(name);
                    }
                }
            }
        }
        Ok(Self::one(change.topic.clone(), result))
    }

    fn describe_user_scram_credentials(&self) -> Result<Vec<ScramCredentialInfo>, KafkaError> {
        Ok(self
            .state()
            .scram
            .iter()
            .map(|((user, mechanism), iterations)| ScramCredentialInfo {
                user: user.clone(),
                mechanism: *mechanism,
                iterations: *iterations,
            })
            .collect())
    }

    fn alter_user_scram_credentials(
        &self,
        upserts: &[ScramUpsert],
        deletions: &[ScramDeletion],
    ) -> Result<ItemResults<String>, KafkaError> {
        let api = "AlterUserScramCredentials";
        match (upserts, deletions) {
            ([upsert], []) => {
                assert!(!upsert.password.is_empty(), "a password is sent");
                let result = self.call(api, format!("set credential of {}", upsert.user));
                if result.is_ok() {
                    self.state().scram.insert(
                        (upsert.user.clone(), ScramMechanism::Sha512),
                        i32::try_from(upsert.iterations).expect("small"),
                    );
                }
                Ok(Self::one(upsert.user.clone(), result))
            }
            ([], [deletion]) => {
                let result = self.call(
                    api,
                    format!(
                        "delete {} credential of {}",
                        deletion.mechanism, deletion.user
                    ),
                );
                if result.is_ok() {
                    self.state()
                        .scram
                        .remove(&(deletion.user.clone(), deletion.mechanism));
                }
                Ok(Self::one(deletion.user.clone(), result))
            }
            _ => Err(not_scripted("AlterUserScramCredentials of several users")),
        }
    }

    fn describe_acls(&self, filter: &AclFilter) -> Result<Vec<AclBinding>, KafkaError> {
        assert_eq!(*filter, AclFilter::any());
        Ok(self.state().acls.iter().cloned().collect())
    }

    fn create_acls(&self, bindings: &[AclBinding]) -> Result<ItemResults<AclBinding>, KafkaError> {
        let mut items = Vec::new();
        for b in bindings {
            let result = self.call("CreateAcls", format!("create {b}"));
            if result.is_ok() {
                self.state().acls.insert(b.clone());
            }
            items.push((b.clone(), result));
        }
        Ok(ItemResults { items })
    }

    fn delete_acls(
        &self,
        filters: &[AclFilter],
    ) -> Result<ItemResults<AclFilter, Vec<AclBinding>>, KafkaError> {
        let mut items = Vec::new();
        for f in filters {
            let result = self.call("DeleteAcls", format!("delete {f}")).map(|()| {
                let mut state = self.state();
                let matching: Vec<AclBinding> = state
                    .acls
                    .iter()
                    .filter(|b| AclFilter::exact(b) == *f)
                    .cloned()
                    .collect();
                for b in &matching {
                    state.acls.remove(b);
                }
                matching
            });
            items.push((f.clone(), result));
        }
        Ok(ItemResults { items })
    }

    fn describe_client_quotas(
        &self,
        filter: &QuotaFilter,
    ) -> Result<BTreeMap<QuotaEntity, BTreeMap<QuotaKey, f64>>, KafkaError> {
        assert_eq!(*filter, QuotaFilter::AllUsers);
        Ok(self
            .state()
            .quotas
            .iter()
            .map(|(user, q)| (QuotaEntity::User(user.clone()), q.clone()))
            .collect())
    }

    fn alter_client_quotas(
        &self,
        entity: &QuotaEntity,
        ops: &[QuotaOp],
        _: bool,
    ) -> Result<(), KafkaError> {
        let QuotaEntity::User(user) = entity else {
            return Err(not_scripted("quotas of the default user"));
        };
        self.call("AlterClientQuotas", format!("alter quotas of {user}"))?;
        let mut state = self.state();
        let quotas = state.quotas.entry(user.clone()).or_default();
        for op in ops {
            match op {
                QuotaOp::Set { key, value } => {
                    quotas.insert(key.clone(), *value);
                }
                QuotaOp::Remove { key } => {
                    quotas.remove(key);
                }
            }
        }
        if quotas.is_empty() {
            state.quotas.remove(user);
        }
        Ok(())
    }

    fn list_groups(&self) -> Result<Vec<ListedGroup>, KafkaError> {
        Err(not_scripted("ListGroups"))
    }
    fn describe_groups(
        &self,
        _: &[String],
    ) -> Result<ItemResults<String, GroupDescription>, KafkaError> {
        Err(not_scripted("DescribeGroups"))
    }
    fn describe_consumer_groups(
        &self,
        _: &[String],
    ) -> Result<ItemResults<String, GroupDescription>, KafkaError> {
        Err(not_scripted("ConsumerGroupDescribe"))
    }
    fn committed_offsets(&self, _: &str) -> Result<BTreeMap<TopicPartition, i64>, KafkaError> {
        Err(not_scripted("OffsetFetch"))
    }
    fn latest_offsets(
        &self,
        _: &[TopicPartition],
    ) -> Result<ItemResults<TopicPartition, i64>, KafkaError> {
        Err(not_scripted("ListOffsets"))
    }
}

/// A cluster just formatted from the example: Kafka's own topic and the
/// users `kafka-storage format --add-scram` made.
fn fresh_kafka(fail: &[&str]) -> FakeKafka {
    let fake = FakeKafka {
        fail: fail.iter().map(|s| (*s).to_owned()).collect(),
        ..FakeKafka::default()
    };
    {
        let mut state = fake.state();
        state.topics.insert(
            "__consumer_offsets".to_owned(),
            FakeTopic {
                partitions: 50,
                rf: 3,
                internal: true,
                configs: BTreeMap::from([("cleanup.policy".to_owned(), "compact".to_owned())]),
            },
        );
        for user in ["admin", "broker"] {
            state
                .scram
                .insert((user.to_owned(), ScramMechanism::Sha512), 8192);
        }
    }
    fake
}

fn writer(dir: &tempfile::TempDir) -> ResourceWriter {
    ResourceWriter::open(dir.path().join(DIGEST_FILE))
}

fn descriptions(report: &ResourcesReport) -> Vec<&str> {
    report
        .actions
        .iter()
        .map(|a| a.description.as_str())
        .collect()
}

// ---------------------------------------------------------------- observation

#[test]
fn a_topic_is_observed_with_its_own_configs_only() {
    let metadata = topic_metadata("orders", 6, 3, false);
    let entries = [
        entry("retention.ms", Some("3600000"), ConfigSource::DynamicTopic),
        entry(
            "min.insync.replicas",
            Some("2"),
            ConfigSource::DynamicBroker,
        ),
        entry("segment.bytes", Some("1073741824"), ConfigSource::Default),
        entry("cleanup.policy", Some("delete"), ConfigSource::StaticBroker),
        entry(
            "max.message.bytes",
            Some("1048588"),
            ConfigSource::DynamicDefaultBroker,
        ),
        // A topic value Kafka withholds cannot be compared: left out.
        entry("secret.thing", None, ConfigSource::DynamicTopic),
    ];
    let observed = observed_topic(&metadata, &entries);
    assert_eq!(
        observed,
        ObservedTopic {
            partitions: 6,
            replication_factor: 3,
            configs: BTreeMap::from([("retention.ms".to_owned(), "3600000".to_owned())]),
            internal: false,
        }
    );

    // The replica count is the first partition's, wherever it is listed.
    let mut metadata = topic_metadata("__consumer_offsets", 2, 1, true);
    metadata.partitions.reverse();
    metadata.partitions[0].replicas = vec![1, 2];
    let observed = observed_topic(&metadata, &[]);
    assert_eq!(observed.partitions, 2);
    assert_eq!(observed.replication_factor, 1);
    assert!(observed.internal);
}

#[test]
fn scram_credentials_acls_and_quotas_map_to_the_planners_types() {
    let (users, notes) = observed_scram(&[
        ScramCredentialInfo {
            user: "client".to_owned(),
            mechanism: ScramMechanism::Sha512,
            iterations: 8192,
        },
        ScramCredentialInfo {
            user: "client".to_owned(),
            mechanism: ScramMechanism::Sha256,
            iterations: 4096,
        },
        ScramCredentialInfo {
            user: "future".to_owned(),
            mechanism: ScramMechanism::Unknown(9),
            iterations: 4096,
        },
    ]);
    assert_eq!(
        users,
        BTreeMap::from([(
            "client".to_owned(),
            vec![
                planner::ScramCredentialInfo {
                    mechanism: planner::ScramMechanism::ScramSha256,
                    iterations: 4096
                },
                planner::ScramCredentialInfo {
                    mechanism: planner::ScramMechanism::ScramSha512,
                    iterations: 8192
                },
            ]
        )])
    );
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].contains("user future has a SCRAM mechanism 9 credential"),
        "{notes:?}"
    );

    let read = acl("client", "orders", AclOperation::Read);
    let mapped = observed_acl(&read).expect("a plain ACL maps");
    assert_eq!(
        mapped,
        planner::AclBinding {
            principal: "User:client".to_owned(),
            resource_type: planner::ResourceType::Topic,
            resource_name: "orders".to_owned(),
            pattern_type: planner::PatternType::Literal,
            operation: planner::Operation::Read,
            permission: planner::Permission::Allow,
            host: "*".to_owned(),
        }
    );
    assert_eq!(kafka_acl(&mapped), read, "and maps back");
    let cluster = AclBinding {
        resource_type: AclResourceType::Cluster,
        resource_name: "kafka-cluster".to_owned(),
        pattern_type: AclPatternType::Prefixed,
        operation: AclOperation::IdempotentWrite,
        permission: AclPermission::Deny,
        ..read.clone()
    };
    assert_eq!(
        kafka_acl(&observed_acl(&cluster).expect("maps")),
        cluster,
        "every field round-trips"
    );
    let newer = AclBinding {
        operation: AclOperation::Unknown(42),
        ..read.clone()
    };
    assert_eq!(observed_acl(&newer), None);
    let (acls, notes) = observed_acls(&[read, newer]);
    assert_eq!(acls.len(), 1);
    assert_eq!(notes.len(), 1);
    assert!(notes[0].contains("UNKNOWN(42)"), "{notes:?}");

    let quotas = observed_quotas(&BTreeMap::from([
        (
            QuotaEntity::User("client".to_owned()),
            BTreeMap::from([
                (QuotaKey::ProducerByteRate, 1024.0),
                (QuotaKey::Other("future_rate".to_owned()), 1.5),
            ]),
        ),
        (QuotaEntity::User("idle".to_owned()), BTreeMap::new()),
        (
            QuotaEntity::DefaultUser,
            BTreeMap::from([(QuotaKey::ConsumerByteRate, 1.0)]),
        ),
    ]));
    assert_eq!(
        quotas,
        BTreeMap::from([(
            "client".to_owned(),
            BTreeMap::from([
                ("future_rate".to_owned(), 1.5),
                ("producer_byte_rate".to_owned(), 1024.0),
            ])
        )])
    );
    for key in [
        QuotaKey::ProducerByteRate,
        QuotaKey::ConsumerByteRate,
        QuotaKey::RequestPercentage,
        QuotaKey::ControllerMutationRate,
        QuotaKey::Other("x".to_owned()),
    ] {
        assert_eq!(quota_key(key.kafka_name()), key);
    }
}

#[test]
fn observe_reads_every_kind_and_carries_the_record() {
    let fake = fresh_kafka(&[]);
    fake.state().topics.insert(
        "orders".to_owned(),
        FakeTopic {
            partitions: 4,
            rf: 3,
            internal: false,
            configs: BTreeMap::from([("retention.ms".to_owned(), "1000".to_owned())]),
        },
    );
    fake.state()
        .acls
        .insert(acl("client", "orders", AclOperation::Write));
    fake.state().quotas.insert(
        "client".to_owned(),
        BTreeMap::from([(QuotaKey::ConsumerByteRate, 10.0)]),
    );
    let recorded = BTreeMap::from([(
        "client".to_owned(),
        PasswordDigest::from_stored("ab".repeat(32)),
    )]);
    let (observed, notes) = observe(&fake, &recorded).expect("observed");
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(observed.topics["orders"].partitions, 4);
    assert_eq!(
        observed.topics["orders"].configs,
        BTreeMap::from([("retention.ms".to_owned(), "1000".to_owned())]),
        "the default segment.bytes is not the topic's"
    );
    assert!(observed.topics["__consumer_offsets"].internal);
    assert_eq!(
        observed.scram_users.keys().collect::<Vec<_>>(),
        ["admin", "broker"]
    );
    assert_eq!(observed.acls.len(), 1);
    assert_eq!(observed.quotas["client"]["consumer_byte_rate"], 10.0);
    assert_eq!(observed.password_digests, recorded);

    let down = FakeKafka {
        unreachable: true,
        ..FakeKafka::default()
    };
    let error = observe(&down, &recorded).expect_err("unreachable");
    let text = chain(&error);
    assert!(
        text.starts_with("reading the topics (Metadata) from Kafka: no bootstrap address could be reached: broker-1.kafka.internal:9091"),
        "{text}"
    );
}

// ---------------------------------------------------------------- passes

#[test]
fn a_pass_on_a_fresh_cluster_applies_the_plan_in_order_and_a_second_plans_nothing() {
    let model = seed();
    let fake = fresh_kafka(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut writer = writer(&dir);
    let report = writer.pass(&fake, &model, &identity(), "c1", 100);
    assert_eq!(report.commit, "c1");
    assert_eq!(report.at, 100);
    assert_eq!(report.error, None);
    assert!(report.notes.is_empty(), "{:?}", report.notes);
    assert!(report.is_clean(), "{report:#?}");
    // The calls went out in the plan's order, one per action.
    assert_eq!(fake.calls().len(), report.actions.len());
    let calls = fake.calls();
    let position = |prefix: &str| {
        calls
            .iter()
            .position(|c| c.starts_with(prefix))
            .unwrap_or_else(|| panic!("no call {prefix}: {calls:#?}"))
    };
    assert!(position("create topic test-topic") < position("create topic topic-1"));
    assert!(position("create topic topic-1") < position("set credential of admin"));
    assert!(position("set credential of admin") < position("set credential of broker"));
    assert!(position("set credential of kafka_connect") < position("alter quotas of client"));
    assert!(position("alter quotas of client") < position("create ACL"));
    assert_eq!(
        &descriptions(&report)[..2],
        [
            "create topic test-topic (3 partitions, RF 3; cleanup.policy=delete)",
            "create topic topic-1 (6 partitions, RF 3; min.insync.replicas=2, retention.ms=604800000)",
        ]
    );
    assert_eq!(
        report.actions[0].location.as_deref(),
        Some("topics/app.yaml:10:11")
    );
    // Every user in git got a credential and its digest is recorded, on
    // disk too.
    let recorded: Vec<&str> = writer
        .record()
        .digests()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(recorded, ["admin", "broker", "client", "kafka_connect"]);
    let reread = DigestRecord::load(&dir.path().join(DIGEST_FILE)).expect("the record reads");
    assert_eq!(reread.digests(), writer.record().digests());

    let again = writer.pass(&fake, &model, &identity(), "c1", 115);
    assert!(again.actions.is_empty(), "{:#?}", again.actions);
    assert!(again.drift.is_empty(), "{:#?}", again.drift);

    // A fresh writer over the same record plans nothing either: the
    // passwords are known across coordinator restarts.
    let mut restarted = ResourceWriter::open(dir.path().join(DIGEST_FILE));
    let after_restart = restarted.pass(&fake, &model, &identity(), "c1", 130);
    assert!(
        after_restart.actions.is_empty(),
        "{:#?}",
        after_restart.actions
    );
}

#[test]
fn a_failing_action_is_reported_and_unrelated_ones_go_on() {
    let model = seed();
    let fake = fresh_kafka(&[
        "create topic test-topic",
        "set credential of client",
        "alter quotas of client",
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut writer = writer(&dir);
    let report = writer.pass(&fake, &model, &identity(), "c1", 100);
    assert_eq!(report.error, None);
    let failed: Vec<(&str, &str)> = report
        .actions
        .iter()
        .filter(|a| !a.ok)
        .map(|a| (a.description.as_str(), a.error.as_deref().unwrap_or("")))
        .collect();
    assert_eq!(failed.len(), 3, "{failed:#?}");
    assert_eq!(
        failed[0],
        (
            "create topic test-topic (3 partitions, RF 3; cleanup.policy=delete)",
            "CreateTopics: create topic test-topic: POLICY_VIOLATION"
        )
    );
    assert!(
        failed[1]
            .0
            .starts_with("set the SCRAM-SHA-512 credential of user client"),
        "{failed:#?}"
    );
    assert!(
        failed[2].0.starts_with("quotas of user client"),
        "{failed:#?}"
    );
    assert!(!report.is_clean());
    // Everything else happened.
    assert!(fake.state().topics.contains_key("topic-1"));
    assert!(!fake.state().topics.contains_key("test-topic"));
    assert!(
        fake.state()
            .acls
            .contains(&acl("client", "topic-1", AclOperation::Read)),
        "the client's ACLs were still added"
    );
    // Only the credentials set are recorded.
    let recorded: Vec<&str> = writer
        .record()
        .digests()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(recorded, ["admin", "broker", "kafka_connect"]);

    // The next pass (Kafka accepting now) does exactly what failed.
    let fake_ok = FakeKafka {
        state: Mutex::new(std::mem::take(&mut *fake.state())),
        ..FakeKafka::default()
    };
    let next = writer.pass(&fake_ok, &model, &identity(), "c1", 115);
    assert_eq!(
        descriptions(&next),
        [
            "create topic test-topic (3 partitions, RF 3; cleanup.policy=delete)",
            "set the SCRAM-SHA-512 credential of user client (8192 iterations; it has none)",
            "quotas of user client: set consumer_byte_rate=20971520, producer_byte_rate=10485760",
        ]
    );
    assert!(next.is_clean(), "{next:#?}");
    assert!(writer.record().digests().contains_key("client"));
}

#[test]
fn a_users_old_acls_stay_while_adding_its_new_one_fails() {
    // client's read of topic-1 becomes a read of orders: add, then remove.
    let before = seed();
    let after = seed_with(&[(
        "users/platform.yaml",
        "        name: topic-1\n        operations: [read, write, describe]",
        "        name: orders\n        operations: [read, write, describe]",
    )]);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut writer = writer(&dir);
    let fake = fresh_kafka(&[]);
    assert!(
        writer
            .pass(&fake, &before, &identity(), "c1", 100)
            .is_clean()
    );

    let adding = acl("client", "orders", AclOperation::Write);
    let failing = FakeKafka {
        state: Mutex::new(std::mem::take(&mut *fake.state())),
        fail: BTreeSet::from([format!("create {adding}")]),
        ..FakeKafka::default()
    };
    let report = writer.pass(&failing, &after, &identity(), "c2", 115);
    let outcome: Vec<(&str, bool)> = report
        .actions
        .iter()
        .map(|a| (a.description.as_str(), a.ok))
        .collect();
    assert_eq!(outcome.len(), 6, "{outcome:#?}");
    assert_eq!(outcome.iter().filter(|(_, ok)| *ok).count(), 2);
    let skipped: Vec<&ResourceActionReport> = report
        .actions
        .iter()
        .filter(|a| a.description.starts_with("remove ACL"))
        .collect();
    assert_eq!(skipped.len(), 3);
    for s in skipped {
        assert!(!s.ok);
        assert!(
            s.error
                .as_deref()
                .is_some_and(|e| e.starts_with("skipped: adding an ACL of user client failed")),
            "{s:?}"
        );
    }
    assert!(
        failing
            .state()
            .acls
            .contains(&acl("client", "topic-1", AclOperation::Write)),
        "the old rule stays"
    );
}

#[test]
fn kafka_unreachable_means_no_pass_and_the_report_says_why() {
    let model = seed();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut writer = writer(&dir);
    let down = FakeKafka {
        unreachable: true,
        ..FakeKafka::default()
    };
    let report = writer.pass(&down, &model, &identity(), "c1", 100);
    assert!(report.actions.is_empty());
    assert!(
        report
            .error
            .as_deref()
            .is_some_and(|e| e.contains("no bootstrap address could be reached")),
        "{report:?}"
    );
    assert!(down.calls().is_empty(), "nothing was written");
    assert!(!dir.path().join(DIGEST_FILE).exists());

    let no_client = unreachable_report("c1", 100, "no Kafka admin client: no brokers".to_owned());
    assert_eq!(
        no_client.error.as_deref(),
        Some("no Kafka admin client: no brokers")
    );
}

#[test]
fn a_password_changed_in_git_is_set_again_and_recorded() {
    let model = seed();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut writer = writer(&dir);
    let fake = fresh_kafka(&[]);
    writer.pass(&fake, &model, &identity(), "c1", 100);
    let before = writer.record().digests()["client"].clone();

    // Another password for client: its record is of the old one.
    let mut record = DigestRecord::load(&dir.path().join(DIGEST_FILE)).expect("reads");
    record
        .record("client", PasswordDigest::from_stored("0".repeat(64)))
        .expect("written");
    let mut writer = writer_at(&dir);
    let report = writer.pass(&fake, &model, &identity(), "c2", 115);
    assert_eq!(
        descriptions(&report),
        [
            "set the SCRAM-SHA-512 credential of user client (8192 iterations; the password changed in git)"
        ]
    );
    assert_eq!(writer.record().digests()["client"], before);
}

fn writer_at(dir: &tempfile::TempDir) -> ResourceWriter {
    ResourceWriter::open(dir.path().join(DIGEST_FILE))
}

// ---------------------------------------------------------------- the record

#[test]
fn the_digest_record_round_trips_and_is_written_atomically() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(DIGEST_FILE);
    let mut record = DigestRecord::load(&path).expect("a missing record is empty");
    assert!(record.digests().is_empty());
    assert!(
        !path.exists(),
        "nothing is written until something is recorded"
    );
    let a = PasswordDigest::from_stored("a".repeat(64));
    let b = PasswordDigest::from_stored("0123456789abcdef".repeat(4));
    record.record("alice", a.clone()).expect("recorded");
    record.record("bob", b.clone()).expect("recorded");
    let reread = DigestRecord::load(&path).expect("reads");
    assert_eq!(
        *reread.digests(),
        BTreeMap::from([("alice".to_owned(), a), ("bob".to_owned(), b.clone())])
    );
    record.forget("alice").expect("forgotten");
    assert_eq!(
        *DigestRecord::load(&path).expect("reads").digests(),
        BTreeMap::from([("bob".to_owned(), b)])
    );
    // No temporary file is left beside it; only the owner may read it.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("lists")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [DIGEST_FILE]);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = std::fs::read_to_string(&path).expect("reads");
    assert!(text.contains("\"version\": 1"), "{text}");
}

#[test]
fn a_corrupt_record_is_an_error_naming_it_and_every_password_is_set_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(DIGEST_FILE);
    for (bytes, reason) in [
        (
            &b"{\"version\": 1, \"digests\": {\"client\": "[..],
            "EOF while parsing",
        ),
        (
            &b"{\"version\": 2, \"digests\": {}}"[..],
            "version 2 (this coordinator writes 1)",
        ),
        (
            &b"{\"version\": 1, \"digests\": {\"client\": \"xyz\"}}"[..],
            "the digest of user client is not 64 hex digits",
        ),
    ] {
        std::fs::write(&path, bytes).expect("write");
        let error = DigestRecord::load(&path).expect_err("corrupt");
        let text = error.to_string();
        assert!(
            text.starts_with(&format!(
                "the password-digest record {} is corrupt: ",
                path.display()
            )),
            "{text}"
        );
        assert!(text.contains(reason), "{text}");
    }

    // The coordinator goes on with no digests: every credential is set
    // again (the same passwords) and the record is rewritten.
    let model = seed();
    let fake = fresh_kafka(&[]);
    let mut writer = writer(&dir);
    let first = writer.pass(&fake, &model, &identity(), "c1", 100);
    assert!(
        first.notes.iter().any(|n| n.contains("is corrupt")
            && n.contains("every SCRAM credential is set again from git")),
        "{:?}",
        first.notes
    );
    let second_fake = fresh_kafka(&[]);
    // Kafka already holds every credential; the corrupt record is all that
    // makes them unrecorded.
    std::fs::write(&path, b"not json").expect("write");
    for user in ["client", "kafka_connect"] {
        second_fake
            .state()
            .scram
            .insert((user.to_owned(), ScramMechanism::Sha512), 8192);
    }
    let mut writer = writer_at(&dir);
    let report = writer.pass(&second_fake, &model, &identity(), "c1", 115);
    let credentials: Vec<&str> = descriptions(&report)
        .into_iter()
        .filter(|d| d.contains("credential"))
        .collect();
    assert_eq!(credentials.len(), 4, "{credentials:#?}");
    assert!(
        credentials
            .iter()
            .all(|d| d.ends_with("no record of which password Kafka's credential holds)")),
        "{credentials:#?}"
    );
    assert_eq!(
        DigestRecord::load(&path)
            .expect("rewritten and readable")
            .digests()
            .len(),
        4
    );
    let third = writer.pass(&second_fake, &model, &identity(), "c1", 130);
    assert!(third.notes.is_empty(), "{:?}", third.notes);
}

#[test]
fn a_password_that_cannot_be_decrypted_is_noted_and_the_rest_goes_on() {
    let model = seed();
    use age::secrecy::ExposeSecret as _;
    let stranger = Identity::parse(
        age::x25519::Identity::generate()
            .to_string()
            .expose_secret(),
    )
    .expect("a fresh identity");
    let (secrets, digests, notes) = passwords(&model, &stranger);
    assert!(secrets.is_empty());
    assert!(digests.is_empty());
    assert_eq!(notes.len(), 4, "{notes:#?}");
    assert!(
        notes[0].starts_with(
            "the password of user broker (secrets/broker-password.age) is not usable: "
        ),
        "{notes:#?}"
    );

    let (secrets, digests, notes) = passwords(&model, &identity());
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(secrets.len(), 4);
    assert_eq!(digests.len(), 4);
}

// ---------------------------------------------------------------- HTTP

#[tokio::test]
async fn get_v1_resources_serves_the_last_report() {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    let model = seed();
    let (view, signer) =
        super::super::service::signer_and_view(&model, &identity()).expect("the example's view");
    let coordinator = super::super::Coordinator::new(
        view,
        signer,
        std::sync::Arc::new(super::super::SystemClock),
        None,
    );
    let get = || async {
        let response = super::super::router(coordinator.clone())
            .oneshot(
                axum::http::Request::get("/v1/resources")
                    .body(axum::body::Body::empty())
                    .expect("request"),
            )
            .await
            .expect("the router is infallible");
        assert_eq!(response.status(), axum::http::StatusCode::OK);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        serde_json::from_slice::<Option<ResourcesReport>>(&body).expect("a report or null")
    };
    assert_eq!(get().await, None, "null before the first pass");

    let dir = tempfile::tempdir().expect("tempdir");
    let fake = fresh_kafka(&["create topic test-topic"]);
    let report = writer(&dir).pass(&fake, &model, &identity(), "c1", 100);
    coordinator.update_cluster_scope(|scope| scope.resources = Some(report.clone()));
    let served = get().await.expect("the report");
    assert_eq!(served, report);
    assert!(
        served
            .actions
            .iter()
            .any(|a| !a.ok && a.description.starts_with("create topic test-topic")),
        "{served:#?}"
    );
}
