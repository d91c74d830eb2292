//! [`ClusterAdmin`] for [`AdminClient`]: each call turns the typed request
//! into the protocol's, sends it where Kafka wants it (any broker, the
//! group coordinator, each partition's leader), and turns every error code
//! into a [`KafkaError`] that names the item.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};

use kafka_protocol::messages::alter_client_quotas_request::{
    EntityData as AlterEntityData, EntryData as AlterEntryData, OpData,
};
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::consumer_group_describe_response::Assignment as ConsumerGroupAssignment;
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::update_features_request::FeatureUpdateKey;
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterUserScramCredentialsRequest, ApiVersionsRequest, BrokerId,
    ConsumerGroupDescribeRequest, CreateAclsRequest, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteAclsRequest, DeleteTopicsRequest, DescribeAclsRequest, DescribeClientQuotasRequest,
    DescribeGroupsRequest, DescribeUserScramCredentialsRequest, FindCoordinatorRequest, GroupId,
    IncrementalAlterConfigsRequest, ListGroupsRequest, ListOffsetsRequest, OffsetFetchRequest,
    UpdateFeaturesRequest,
};
use kafka_protocol::protocol::StrBytes;

use super::assignment::decode_assignment;
use super::client::{
    OP_DELETE, OP_SET, RESOURCE_TOPIC, Target, kafka_error, port, str_bytes, text, topic_name,
};
use super::cluster::{
    AclBinding, AclFilter, AclOperation, AclPatternType, AclPermission, AclResourceType,
    ClusterAdmin, FeatureDescription, FeatureRange, FeatureUpdateKind, GroupDescription,
    GroupMember, GroupType, ItemResults, ListedGroup, NewPartitions, NewTopic, QuotaEntity,
    QuotaFilter, QuotaKey, QuotaOp, ScramCredentialInfo, ScramDeletion, ScramMechanism,
    ScramUpsert, TopicConfigChange,
};
use super::scram::{CREDENTIAL_ITERATIONS, new_credential};
use super::{AdminClient, ConfigOp, KafkaAdmin as _, KafkaError, TopicPartition};

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
/// FindCoordinator's key type of a consumer group.
const COORDINATOR_GROUP: i8 = 0;
/// DescribeClientQuotas' match types.
const MATCH_ANY: i8 = 2;
const ENTITY_USER: &str = "user";
/// ListOffsets' timestamp asking for the latest offset.
const LATEST_TIMESTAMP: i64 = -1;
/// The consumer's replica id in ListOffsets.
const CONSUMER_REPLICA: i32 = -1;
const READ_UNCOMMITTED: i8 = 0;
/// The first version whose FindCoordinator takes many keys at once.
const FIND_COORDINATOR_BATCHED: i16 = 4;
/// The first version whose OffsetFetch takes groups as a list.
const OFFSET_FETCH_BATCHED: i16 = 8;

/// Every item's result, in the order of `keys`, from the answers Kafka
/// gave by name; a name Kafka did not answer is a protocol error.
fn by_name<T>(
    api: &'static str,
    address: &str,
    keys: impl IntoIterator<Item = String>,
    mut answers: HashMap<String, Result<T, KafkaError>>,
) -> ItemResults<String, T> {
    let items = keys
        .into_iter()
        .map(|key| {
            let result = answers.remove(&key).unwrap_or_else(|| {
                Err(KafkaError::Protocol {
                    api,
                    address: address.to_owned(),
                    message: format!("the response has no result for {key}"),
                })
            });
            (key, result)
        })
        .collect();
    ItemResults { items }
}

fn check(
    api: &'static str,
    what: impl FnOnce() -> String,
    code: i16,
    message: Option<&StrBytes>,
) -> Result<(), KafkaError> {
    if code == 0 {
        Ok(())
    } else {
        Err(kafka_error(api, what(), code, message))
    }
}

fn alterable_configs(ops: &[ConfigOp]) -> Vec<AlterableConfig> {
    ops.iter()
        .map(|op| match op {
            ConfigOp::Set { name, value } => AlterableConfig::default()
                .with_name(str_bytes(name))
                .with_config_operation(OP_SET)
                .with_value(Some(str_bytes(value))),
            ConfigOp::Delete { name } => AlterableConfig::default()
                .with_name(str_bytes(name))
                .with_config_operation(OP_DELETE)
                .with_value(None),
        })
        .collect()
}

fn optional(s: &Option<String>) -> Option<StrBytes> {
    s.as_deref().map(str_bytes)
}

fn acl_binding(
    resource_type: i8,
    resource_name: &StrBytes,
    pattern_type: i8,
    principal: &StrBytes,
    host: &StrBytes,
    operation: i8,
    permission: i8,
) -> AclBinding {
    AclBinding {
        resource_type: AclResourceType::from_code(resource_type),
        resource_name: text(resource_name),
        pattern_type: AclPatternType::from_code(pattern_type),
        principal: text(principal),
        host: text(host),
        operation: AclOperation::from_code(operation),
        permission: AclPermission::from_code(permission),
    }
}

/// Groups to describe, sorted by the broker coordinating them.
struct GroupsByCoordinator<'a> {
    /// The groups whose coordinator could not be found, with why.
    failed: HashMap<String, Result<GroupDescription, KafkaError>>,
    /// Coordinator → its groups.
    by_node: BTreeMap<i32, Vec<&'a String>>,
}

impl AdminClient {
    fn answered_by(&self) -> String {
        self.config.bootstrap.join(",")
    }

    /// Each group's coordinator (a broker id, its address remembered).
    fn find_coordinators(
        &self,
        groups: &[String],
    ) -> Result<HashMap<String, Result<i32, KafkaError>>, KafkaError> {
        let api = "FindCoordinator";
        let what = |group: &str| format!("the coordinator of group {group}");
        let mut out = HashMap::new();
        let mut found = Vec::new();
        // One batched request when the broker takes it, else one per group.
        let batched = self.call(Target::Any, api, |version| {
            let request = FindCoordinatorRequest::default().with_key_type(COORDINATOR_GROUP);
            if version >= FIND_COORDINATOR_BATCHED {
                request.with_coordinator_keys(groups.iter().map(|g| str_bytes(g)).collect())
            } else {
                request.with_key(str_bytes(groups.first().map_or("", String::as_str)))
            }
        })?;
        if batched.coordinators.is_empty() && !groups.is_empty() {
            // An old broker: it answered for the first group only.
            let mut answers = vec![batched];
            for group in groups.iter().skip(1) {
                answers.push(self.call(Target::Any, api, |_| {
                    FindCoordinatorRequest::default()
                        .with_key_type(COORDINATOR_GROUP)
                        .with_key(str_bytes(group))
                })?);
            }
            for (group, r) in groups.iter().zip(answers) {
                found.push((
                    group.clone(),
                    r.error_code,
                    r.error_message,
                    r.node_id.0,
                    r.host,
                    r.port,
                ));
            }
        } else {
            for c in batched.coordinators {
                found.push((
                    text(&c.key),
                    c.error_code,
                    c.error_message,
                    c.node_id.0,
                    c.host,
                    c.port,
                ));
            }
        }
        for (group, code, message, node, host, port_number) in found {
            let result = check(api, || what(&group), code, message.as_ref()).and_then(|()| {
                let host = text(&host);
                let port = port(api, &host, port_number)?;
                self.remember_nodes([(node, format!("{host}:{port}"))]);
                Ok(node)
            });
            out.insert(group, result);
        }
        Ok(out)
    }

    /// The groups of each coordinator, and the failure of each group
    /// whose coordinator could not be found.
    fn groups_by_coordinator<'a>(
        &self,
        group_ids: &'a [String],
    ) -> Result<GroupsByCoordinator<'a>, KafkaError> {
        let mut sorted = GroupsByCoordinator {
            failed: HashMap::new(),
            by_node: BTreeMap::new(),
        };
        if group_ids.is_empty() {
            return Ok(sorted);
        }
        for (group, found) in self.find_coordinators(group_ids)? {
            match found {
                Ok(node) => {
                    if let Some(id) = group_ids.iter().find(|g| **g == group) {
                        sorted.by_node.entry(node).or_default().push(id);
                    }
                }
                Err(e) => {
                    sorted.failed.insert(group, Err(e));
                }
            }
        }
        Ok(sorted)
    }

    fn coordinator(&self, group: &str) -> Result<i32, KafkaError> {
        let group = group.to_owned();
        let mut found = self.find_coordinators(std::slice::from_ref(&group))?;
        found.remove(&group).unwrap_or_else(|| {
            Err(KafkaError::Protocol {
                api: "FindCoordinator",
                address: self.answered_by(),
                message: format!("the response has no coordinator for group {group}"),
            })
        })
    }
}

/// A KIP-848 assignment as partitions, in order. Kafka names every topic
/// it still knows and leaves out those it does not.
fn consumer_assignment(assignment: &ConsumerGroupAssignment) -> Vec<TopicPartition> {
    let mut partitions: Vec<TopicPartition> = assignment
        .topic_partitions
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| TopicPartition {
                topic: text(&t.topic_name.0),
                partition: *p,
            })
        })
        .collect();
    partitions.sort();
    partitions
}

impl ClusterAdmin for AdminClient {
    fn describe_features(&self) -> Result<FeatureDescription, KafkaError> {
        let api = "ApiVersions";
        let version_used = Cell::new(0);
        let response = self.call(Target::Any, api, |version| {
            version_used.set(version);
            let request = ApiVersionsRequest::default();
            if version >= 3 {
                request
                    .with_client_software_name(StrBytes::from_static_str("kraftops-agent"))
                    .with_client_software_version(StrBytes::from_static_str(env!(
                        "CARGO_PKG_VERSION"
                    )))
            } else {
                request
            }
        });
        let response = response?;
        let version_used = version_used.get();
        check(api, || "features".to_owned(), response.error_code, None)?;
        if version_used < 3 {
            return Err(KafkaError::Unsupported {
                api: "ApiVersions with features (version 3)",
                address: self.answered_by(),
                offered: format!("up to {version_used}"),
            });
        }
        let range = |min, max| FeatureRange { min, max };
        let known = response.finalized_features_epoch >= 0;
        Ok(FeatureDescription {
            supported: response
                .supported_features
                .iter()
                .map(|f| (text(&f.name), range(f.min_version, f.max_version)))
                .collect(),
            finalized: if known {
                response
                    .finalized_features
                    .iter()
                    .map(|f| {
                        (
                            text(&f.name),
                            range(f.min_version_level, f.max_version_level),
                        )
                    })
                    .collect()
            } else {
                BTreeMap::new()
            },
            finalized_epoch: known.then_some(response.finalized_features_epoch),
        })
    }

    fn update_features(
        &self,
        feature: &str,
        level: i16,
        kind: FeatureUpdateKind,
        validate_only: bool,
    ) -> Result<(), KafkaError> {
        let api = "UpdateFeatures";
        let what = || format!("feature {feature} to level {level} ({kind:?})");
        // Version 0 has no validate_only: the encoder refuses it there, so
        // a check is never sent as a real update.
        let response = self.call(Target::Any, api, |version| {
            let mut update = FeatureUpdateKey::default()
                .with_feature(str_bytes(feature))
                .with_max_version_level(level);
            if version == 0 {
                update.allow_downgrade = kind != FeatureUpdateKind::Upgrade;
            } else {
                update.upgrade_type = kind.code();
            }
            UpdateFeaturesRequest::default()
                .with_timeout_ms(self.timeout_ms())
                .with_feature_updates(vec![update])
                .with_validate_only(validate_only)
        })?;
        check(
            api,
            what,
            response.error_code,
            response.error_message.as_ref(),
        )?;
        for result in &response.results {
            check(api, what, result.error_code, result.error_message.as_ref())?;
        }
        Ok(())
    }

    fn create_topics(
        &self,
        topics: &[NewTopic],
        validate_only: bool,
    ) -> Result<ItemResults<String>, KafkaError> {
        let api = "CreateTopics";
        if topics.is_empty() {
            return Ok(ItemResults { items: Vec::new() });
        }
        let response = self.call(Target::Any, api, |_| {
            CreateTopicsRequest::default()
                .with_topics(
                    topics
                        .iter()
                        .map(|t| {
                            CreatableTopic::default()
                                .with_name(topic_name(&t.name))
                                .with_num_partitions(t.partitions)
                                .with_replication_factor(t.replication_factor)
                                .with_configs(
                                    t.configs
                                        .iter()
                                        .map(|(k, v)| {
                                            CreatableTopicConfig::default()
                                                .with_name(str_bytes(k))
                                                .with_value(Some(str_bytes(v)))
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                )
                .with_timeout_ms(self.timeout_ms())
                .with_validate_only(validate_only)
        })?;
        let answers = response
            .topics
            .iter()
            .map(|r| {
                let name = text(&r.name.0);
                let result = check(
                    api,
                    || format!("topic {name}"),
                    r.error_code,
                    r.error_message.as_ref(),
                );
                (name, result)
            })
            .collect();
        Ok(by_name(
            api,
            &self.answered_by(),
            topics.iter().map(|t| t.name.clone()),
            answers,
        ))
    }

    fn delete_topics(&self, topics: &[String]) -> Result<ItemResults<String>, KafkaError> {
        let api = "DeleteTopics";
        if topics.is_empty() {
            return Ok(ItemResults { items: Vec::new() });
        }
        let response = self.call(Target::Any, api, |version| {
            let request = DeleteTopicsRequest::default().with_timeout_ms(self.timeout_ms());
            if version >= 6 {
                request.with_topics(
                    topics
                        .iter()
                        .map(|t| DeleteTopicState::default().with_name(Some(topic_name(t))))
                        .collect(),
                )
            } else {
                request.with_topic_names(topics.iter().map(|t| topic_name(t)).collect())
            }
        })?;
        let answers = response
            .responses
            .iter()
            .filter_map(|r| {
                let name = text(&r.name.as_ref()?.0);
                let result = if r.error_code == UNKNOWN_TOPIC_OR_PARTITION {
                    Ok(())
                } else {
                    check(
                        api,
                        || format!("topic {name}"),
                        r.error_code,
                        r.error_message.as_ref(),
                    )
                };
                Some((name, result))
            })
            .collect();
        Ok(by_name(
            api,
            &self.answered_by(),
            topics.iter().cloned(),
            answers,
        ))
    }

    fn create_partitions(
        &self,
        increases: &[NewPartitions],
        validate_only: bool,
    ) -> Result<ItemResults<String>, KafkaError> {
        let api = "CreatePartitions";
        if increases.is_empty() {
            return Ok(ItemResults { items: Vec::new() });
        }
        let response = self.call(Target::Any, api, |_| {
            CreatePartitionsRequest::default()
                .with_topics(
                    increases
                        .iter()
                        .map(|i| {
                            CreatePartitionsTopic::default()
                                .with_name(topic_name(&i.topic))
                                .with_count(i.total)
                                .with_assignments(None)
                        })
                        .collect(),
                )
                .with_timeout_ms(self.timeout_ms())
                .with_validate_only(validate_only)
        })?;
        let answers = response
            .results
            .iter()
            .map(|r| {
                let name = text(&r.name.0);
                let result = check(
                    api,
                    || format!("topic {name}"),
                    r.error_code,
                    r.error_message.as_ref(),
                );
                (name, result)
            })
            .collect();
        Ok(by_name(
            api,
            &self.answered_by(),
            increases.iter().map(|i| i.topic.clone()),
            answers,
        ))
    }

    fn alter_topic_configs(
        &self,
        changes: &[TopicConfigChange],
        validate_only: bool,
    ) -> Result<ItemResults<String>, KafkaError> {
        let api = "IncrementalAlterConfigs";
        if changes.is_empty() {
            return Ok(ItemResults { items: Vec::new() });
        }
        let response = self.call(Target::Any, api, |_| {
            IncrementalAlterConfigsRequest::default()
                .with_resources(
                    changes
                        .iter()
                        .map(|c| {
                            AlterConfigsResource::default()
                                .with_resource_type(RESOURCE_TOPIC)
                                .with_resource_name(str_bytes(&c.topic))
                                .with_configs(alterable_configs(&c.ops))
                        })
                        .collect(),
                )
                .with_validate_only(validate_only)
        })?;
        let answers = response
            .responses
            .iter()
            .map(|r| {
                let name = text(&r.resource_name);
                let result = check(
                    api,
                    || {
                        let keys: Vec<&str> = changes
                            .iter()
                            .filter(|c| c.topic == name)
                            .flat_map(|c| &c.ops)
                            .map(|op| match op {
                                ConfigOp::Set { name, .. } | ConfigOp::Delete { name } => {
                                    name.as_str()
                                }
                            })
                            .collect();
                        format!("topic {name} configs {}", keys.join(", "))
                    },
                    r.error_code,
                    r.error_message.as_ref(),
                );
                (name, result)
            })
            .collect();
        Ok(by_name(
            api,
            &self.answered_by(),
            changes.iter().map(|c| c.topic.clone()),
            answers,
        ))
    }

    fn describe_user_scram_credentials(&self) -> Result<Vec<ScramCredentialInfo>, KafkaError> {
        let api = "DescribeUserScramCredentials";
        let response = self.call(Target::Any, api, |_| {
            DescribeUserScramCredentialsRequest::default().with_users(None)
        })?;
        check(
            api,
            || "every user".to_owned(),
            response.error_code,
            response.error_message.as_ref(),
        )?;
        let mut out = Vec::new();
        for result in &response.results {
            let user = text(&result.user);
            check(
                api,
                || format!("user {user}"),
                result.error_code,
                result.error_message.as_ref(),
            )?;
            out.extend(result.credential_infos.iter().map(|c| ScramCredentialInfo {
                user: user.clone(),
                mechanism: ScramMechanism::from_code(c.mechanism),
                iterations: c.iterations,
            }));
        }
        out.sort_by(|a, b| (&a.user, a.mechanism).cmp(&(&b.user, b.mechanism)));
        Ok(out)
    }

    fn alter_user_scram_credentials(
        &self,
        upserts: &[ScramUpsert],
        deletions: &[ScramDeletion],
    ) -> Result<ItemResults<String>, KafkaError> {
        let api = "AlterUserScramCredentials";
        let invalid = |user: &str, reason: String| KafkaError::Invalid {
            api,
            what: format!("user {user:?}"),
            reason,
        };
        // Users in the order named, once each (Kafka answers once per user).
        let mut users: Vec<String> = Vec::new();
        for user in upserts
            .iter()
            .map(|u| &u.user)
            .chain(deletions.iter().map(|d| &d.user))
        {
            if !users.contains(user) {
                users.push(user.clone());
            }
        }
        let mut answers: HashMap<String, Result<(), KafkaError>> = HashMap::new();
        let mut upsertions = Vec::new();
        for upsert in upserts {
            if upsert.user.is_empty() {
                answers.insert(
                    String::new(),
                    Err(invalid("", "the name is empty".to_owned())),
                );
            } else if !CREDENTIAL_ITERATIONS.contains(&upsert.iterations) {
                answers.insert(
                    upsert.user.clone(),
                    Err(invalid(
                        &upsert.user,
                        format!(
                            "{} iterations: Kafka takes {}..={}",
                            upsert.iterations,
                            CREDENTIAL_ITERATIONS.start(),
                            CREDENTIAL_ITERATIONS.end()
                        ),
                    )),
                );
            } else {
                let credential = new_credential(&upsert.password, upsert.iterations);
                upsertions.push(
                    ScramCredentialUpsertion::default()
                        .with_name(str_bytes(&upsert.user))
                        .with_mechanism(ScramMechanism::Sha512.code())
                        .with_iterations(i32::try_from(upsert.iterations).unwrap_or(i32::MAX))
                        .with_salt(bytes::Bytes::from(credential.salt))
                        .with_salted_password(bytes::Bytes::copy_from_slice(
                            &credential.salted_password,
                        )),
                );
            }
        }
        let mut removals = Vec::new();
        for deletion in deletions {
            if deletion.user.is_empty() {
                answers.insert(
                    String::new(),
                    Err(invalid("", "the name is empty".to_owned())),
                );
            } else if let ScramMechanism::Unknown(code) = deletion.mechanism {
                answers.insert(
                    deletion.user.clone(),
                    Err(invalid(
                        &deletion.user,
                        format!("mechanism {code} is not a SCRAM mechanism"),
                    )),
                );
            } else {
                removals.push(
                    ScramCredentialDeletion::default()
                        .with_name(str_bytes(&deletion.user))
                        .with_mechanism(deletion.mechanism.code()),
                );
            }
        }
        // A user refused here is not sent at all.
        upsertions.retain(|u| !answers.contains_key(u.name.as_str()));
        removals.retain(|d| !answers.contains_key(d.name.as_str()));
        if !upsertions.is_empty() || !removals.is_empty() {
            let response = self.call(Target::Any, api, |_| {
                AlterUserScramCredentialsRequest::default()
                    .with_upsertions(upsertions.clone())
                    .with_deletions(removals.clone())
            })?;
            for r in &response.results {
                let user = text(&r.user);
                let result = check(
                    api,
                    || format!("user {user}"),
                    r.error_code,
                    r.error_message.as_ref(),
                );
                answers.insert(user, result);
            }
        }
        Ok(by_name(api, &self.answered_by(), users, answers))
    }

    fn describe_acls(&self, filter: &AclFilter) -> Result<Vec<AclBinding>, KafkaError> {
        let api = "DescribeAcls";
        let response = self.call(Target::Any, api, |_| {
            DescribeAclsRequest::default()
                .with_resource_type_filter(filter.resource_type.code())
                .with_resource_name_filter(optional(&filter.resource_name))
                .with_pattern_type_filter(filter.pattern_type.code())
                .with_principal_filter(optional(&filter.principal))
                .with_host_filter(optional(&filter.host))
                .with_operation(filter.operation.code())
                .with_permission_type(filter.permission.code())
        })?;
        check(
            api,
            || filter.to_string(),
            response.error_code,
            response.error_message.as_ref(),
        )?;
        let mut out: Vec<AclBinding> = response
            .resources
            .iter()
            .flat_map(|r| {
                r.acls.iter().map(|a| {
                    acl_binding(
                        r.resource_type,
                        &r.resource_name,
                        r.pattern_type,
                        &a.principal,
                        &a.host,
                        a.operation,
                        a.permission_type,
                    )
                })
            })
            .collect();
        out.sort();
        Ok(out)
    }

    fn create_acls(&self, bindings: &[AclBinding]) -> Result<ItemResults<AclBinding>, KafkaError> {
        let api = "CreateAcls";
        let mut results: Vec<Option<Result<(), KafkaError>>> = bindings
            .iter()
            .map(|b| {
                b.invalid_because().map(|reason| {
                    Err(KafkaError::Invalid {
                        api,
                        what: b.to_string(),
                        reason,
                    })
                })
            })
            .collect();
        let to_send: Vec<(usize, &AclBinding)> = bindings
            .iter()
            .enumerate()
            .filter(|(i, _)| results[*i].is_none())
            .collect();
        if !to_send.is_empty() {
            let response = self.call(Target::Any, api, |_| {
                CreateAclsRequest::default().with_creations(
                    to_send
                        .iter()
                        .map(|(_, b)| {
                            AclCreation::default()
                                .with_resource_type(b.resource_type.code())
                                .with_resource_name(str_bytes(&b.resource_name))
                                .with_resource_pattern_type(b.pattern_type.code())
                                .with_principal(str_bytes(&b.principal))
                                .with_host(str_bytes(&b.host))
                                .with_operation(b.operation.code())
                                .with_permission_type(b.permission.code())
                        })
                        .collect(),
                )
            })?;
            if response.results.len() != to_send.len() {
                return Err(KafkaError::Protocol {
                    api,
                    address: self.answered_by(),
                    message: format!(
                        "{} results for {} ACLs",
                        response.results.len(),
                        to_send.len()
                    ),
                });
            }
            for ((i, binding), r) in to_send.iter().zip(&response.results) {
                results[*i] = Some(check(
                    api,
                    || binding.to_string(),
                    r.error_code,
                    r.error_message.as_ref(),
                ));
            }
        }
        Ok(ItemResults {
            items: bindings
                .iter()
                .cloned()
                .zip(results)
                .map(|(b, r)| (b, r.unwrap_or(Ok(()))))
                .collect(),
        })
    }

    fn delete_acls(
        &self,
        filters: &[AclFilter],
    ) -> Result<ItemResults<AclFilter, Vec<AclBinding>>, KafkaError> {
        let api = "DeleteAcls";
        if filters.is_empty() {
            return Ok(ItemResults { items: Vec::new() });
        }
        let response = self.call(Target::Any, api, |_| {
            DeleteAclsRequest::default().with_filters(
                filters
                    .iter()
                    .map(|f| {
                        DeleteAclsFilter::default()
                            .with_resource_type_filter(f.resource_type.code())
                            .with_resource_name_filter(optional(&f.resource_name))
                            .with_pattern_type_filter(f.pattern_type.code())
                            .with_principal_filter(optional(&f.principal))
                            .with_host_filter(optional(&f.host))
                            .with_operation(f.operation.code())
                            .with_permission_type(f.permission.code())
                    })
                    .collect(),
            )
        })?;
        if response.filter_results.len() != filters.len() {
            return Err(KafkaError::Protocol {
                api,
                address: self.answered_by(),
                message: format!(
                    "{} results for {} filters",
                    response.filter_results.len(),
                    filters.len()
                ),
            });
        }
        let items = filters
            .iter()
            .zip(&response.filter_results)
            .map(|(filter, r)| {
                let result = check(
                    api,
                    || filter.to_string(),
                    r.error_code,
                    r.error_message.as_ref(),
                )
                .and_then(|()| {
                    let mut deleted = Vec::with_capacity(r.matching_acls.len());
                    for m in &r.matching_acls {
                        let binding = acl_binding(
                            m.resource_type,
                            &m.resource_name,
                            m.pattern_type,
                            &m.principal,
                            &m.host,
                            m.operation,
                            m.permission_type,
                        );
                        check(
                            api,
                            || format!("{binding} (matched by the {filter})"),
                            m.error_code,
                            m.error_message.as_ref(),
                        )?;
                        deleted.push(binding);
                    }
                    deleted.sort();
                    Ok(deleted)
                });
                (filter.clone(), result)
            })
            .collect();
        Ok(ItemResults { items })
    }

    fn describe_client_quotas(
        &self,
        filter: &QuotaFilter,
    ) -> Result<BTreeMap<QuotaEntity, BTreeMap<QuotaKey, f64>>, KafkaError> {
        let api = "DescribeClientQuotas";
        // Every user entity (named and default) in one request; strict, so
        // user+client-id entities are not included.
        let response = self.call(Target::Any, api, |_| {
            DescribeClientQuotasRequest::default()
                .with_components(vec![
                    ComponentData::default()
                        .with_entity_type(StrBytes::from_static_str(ENTITY_USER))
                        .with_match_type(MATCH_ANY)
                        .with_match(None),
                ])
                .with_strict(true)
        })?;
        check(
            api,
            || "user quotas".to_owned(),
            response.error_code,
            response.error_message.as_ref(),
        )?;
        let mut out = BTreeMap::new();
        for entry in response.entries.iter().flatten() {
            let entity = match entry.entity.as_slice() {
                [one] if one.entity_type.as_str() == ENTITY_USER => match &one.entity_name {
                    Some(name) => QuotaEntity::User(text(name)),
                    None => QuotaEntity::DefaultUser,
                },
                _ => continue,
            };
            let wanted = match (filter, &entity) {
                (QuotaFilter::AllUsers, _) => true,
                (QuotaFilter::Users(names), QuotaEntity::User(name)) => names.contains(name),
                (QuotaFilter::Users(_), QuotaEntity::DefaultUser) => false,
            };
            if wanted {
                let values = entry
                    .values
                    .iter()
                    .map(|v| (QuotaKey::from_kafka_name(v.key.as_str()), v.value))
                    .collect();
                out.insert(entity, values);
            }
        }
        Ok(out)
    }

    fn alter_client_quotas(
        &self,
        entity: &QuotaEntity,
        ops: &[QuotaOp],
        validate_only: bool,
    ) -> Result<(), KafkaError> {
        let api = "AlterClientQuotas";
        if ops.is_empty() {
            return Ok(());
        }
        let entity_name = match entity {
            QuotaEntity::User(name) => Some(str_bytes(name)),
            QuotaEntity::DefaultUser => None,
        };
        let response = self.call(Target::Any, api, |_| {
            AlterClientQuotasRequest::default()
                .with_entries(vec![
                    AlterEntryData::default()
                        .with_entity(vec![
                            AlterEntityData::default()
                                .with_entity_type(StrBytes::from_static_str(ENTITY_USER))
                                .with_entity_name(entity_name.clone()),
                        ])
                        .with_ops(
                            ops.iter()
                                .map(|op| match op {
                                    QuotaOp::Set { key, value } => OpData::default()
                                        .with_key(str_bytes(key.kafka_name()))
                                        .with_value(*value)
                                        .with_remove(false),
                                    QuotaOp::Remove { key } => OpData::default()
                                        .with_key(str_bytes(key.kafka_name()))
                                        .with_remove(true),
                                })
                                .collect(),
                        ),
                ])
                .with_validate_only(validate_only)
        })?;
        let keys: Vec<&str> = ops
            .iter()
            .map(|op| match op {
                QuotaOp::Set { key, .. } | QuotaOp::Remove { key } => key.kafka_name(),
            })
            .collect();
        for entry in &response.entries {
            check(
                api,
                || format!("quotas {} of {entity}", keys.join(", ")),
                entry.error_code,
                entry.error_message.as_ref(),
            )?;
        }
        Ok(())
    }

    fn list_groups(&self) -> Result<Vec<ListedGroup>, KafkaError> {
        let api = "ListGroups";
        let brokers = self.metadata()?.brokers;
        let mut out = Vec::new();
        for broker in brokers {
            let response = self.call(Target::Node(broker.id), api, |_| {
                ListGroupsRequest::default()
            })?;
            check(
                api,
                || format!("the groups broker {} coordinates", broker.id),
                response.error_code,
                None,
            )?;
            out.extend(response.groups.iter().map(|g| ListedGroup {
                group_id: text(&g.group_id.0),
                protocol_type: text(&g.protocol_type),
                state: Some(text(&g.group_state)).filter(|s| !s.is_empty()),
                group_type: Some(text(&g.group_type)).filter(|s| !s.is_empty()),
                coordinator: broker.id,
            }));
        }
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(out)
    }

    fn describe_groups(
        &self,
        group_ids: &[String],
    ) -> Result<ItemResults<String, GroupDescription>, KafkaError> {
        let api = "DescribeGroups";
        let GroupsByCoordinator {
            failed: mut answers,
            by_node,
        } = self.groups_by_coordinator(group_ids)?;
        for (node, groups) in by_node {
            let response = self.call(Target::Node(node), api, |_| {
                DescribeGroupsRequest::default()
                    .with_groups(groups.iter().map(|g| GroupId(str_bytes(g))).collect())
                    .with_include_authorized_operations(false)
            })?;
            for g in &response.groups {
                let group_id = text(&g.group_id.0);
                let result = check(
                    api,
                    || format!("group {group_id}"),
                    g.error_code,
                    g.error_message.as_ref(),
                )
                .and_then(|()| {
                    let consumer = g.protocol_type.as_str() == "consumer";
                    let mut members = Vec::with_capacity(g.members.len());
                    for m in &g.members {
                        let member_id = text(&m.member_id);
                        let assignment = if consumer {
                            decode_assignment(&m.member_assignment).map_err(|message| {
                                KafkaError::Protocol {
                                    api,
                                    address: format!("broker {node}"),
                                    message: format!(
                                        "group {group_id} member {member_id}: \
                                         the assignment: {message}"
                                    ),
                                }
                            })?
                        } else {
                            Vec::new()
                        };
                        members.push(GroupMember {
                            member_id,
                            group_instance_id: m.group_instance_id.as_ref().map(text),
                            client_id: text(&m.client_id),
                            client_host: text(&m.client_host),
                            assignment,
                            member_epoch: None,
                            target_assignment: None,
                        });
                    }
                    Ok(GroupDescription {
                        group_id: group_id.clone(),
                        group_type: GroupType::Classic,
                        state: text(&g.group_state),
                        protocol_type: text(&g.protocol_type),
                        protocol: text(&g.protocol_data),
                        group_epoch: None,
                        assignment_epoch: None,
                        members,
                    })
                });
                answers.insert(group_id, result);
            }
        }
        Ok(by_name(
            api,
            &self.answered_by(),
            group_ids.iter().cloned(),
            answers,
        ))
    }

    fn describe_consumer_groups(
        &self,
        group_ids: &[String],
    ) -> Result<ItemResults<String, GroupDescription>, KafkaError> {
        let api = "ConsumerGroupDescribe";
        let GroupsByCoordinator {
            failed: mut answers,
            by_node,
        } = self.groups_by_coordinator(group_ids)?;
        for (node, groups) in by_node {
            let response = self.call(Target::Node(node), api, |_| {
                ConsumerGroupDescribeRequest::default()
                    .with_group_ids(groups.iter().map(|g| GroupId(str_bytes(g))).collect())
                    .with_include_authorized_operations(false)
            })?;
            for g in &response.groups {
                let group_id = text(&g.group_id.0);
                let result = check(
                    api,
                    || format!("group {group_id}"),
                    g.error_code,
                    g.error_message.as_ref(),
                )
                .map(|()| GroupDescription {
                    group_id: group_id.clone(),
                    group_type: GroupType::Consumer,
                    state: text(&g.group_state),
                    // What ListGroups reports for these groups.
                    protocol_type: "consumer".to_owned(),
                    protocol: text(&g.assignor_name),
                    group_epoch: Some(g.group_epoch),
                    assignment_epoch: Some(g.assignment_epoch),
                    members: g
                        .members
                        .iter()
                        .map(|m| GroupMember {
                            member_id: text(&m.member_id),
                            group_instance_id: m.instance_id.as_ref().map(text),
                            client_id: text(&m.client_id),
                            client_host: text(&m.client_host),
                            assignment: consumer_assignment(&m.assignment),
                            member_epoch: Some(m.member_epoch),
                            target_assignment: Some(consumer_assignment(&m.target_assignment)),
                        })
                        .collect(),
                });
                answers.insert(group_id, result);
            }
        }
        Ok(by_name(
            api,
            &self.answered_by(),
            group_ids.iter().cloned(),
            answers,
        ))
    }

    fn committed_offsets(&self, group: &str) -> Result<BTreeMap<TopicPartition, i64>, KafkaError> {
        let api = "OffsetFetch";
        let node = self.coordinator(group)?;
        let version_used = Cell::new(0);
        let response = self.call(Target::Node(node), api, |version| {
            version_used.set(version);
            if version >= OFFSET_FETCH_BATCHED {
                OffsetFetchRequest::default().with_groups(vec![
                    OffsetFetchRequestGroup::default()
                        .with_group_id(GroupId(str_bytes(group)))
                        .with_topics(None),
                ])
            } else {
                OffsetFetchRequest::default()
                    .with_group_id(GroupId(str_bytes(group)))
                    .with_topics(None)
            }
        })?;
        let mut out = BTreeMap::new();
        let mut add = |topic: String, partition: i32, offset: i64, code: i16| {
            let tp = TopicPartition { topic, partition };
            check(api, || format!("group {group} partition {tp}"), code, None)?;
            // -1: nothing committed for it.
            if offset >= 0 {
                out.insert(tp, offset);
            }
            Ok::<(), KafkaError>(())
        };
        if version_used.get() >= OFFSET_FETCH_BATCHED {
            for g in &response.groups {
                check(api, || format!("group {group}"), g.error_code, None)?;
                for t in &g.topics {
                    for p in &t.partitions {
                        add(
                            text(&t.name.0),
                            p.partition_index,
                            p.committed_offset,
                            p.error_code,
                        )?;
                    }
                }
            }
        } else {
            check(api, || format!("group {group}"), response.error_code, None)?;
            for t in &response.topics {
                for p in &t.partitions {
                    add(
                        text(&t.name.0),
                        p.partition_index,
                        p.committed_offset,
                        p.error_code,
                    )?;
                }
            }
        }
        Ok(out)
    }

    fn latest_offsets(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<ItemResults<TopicPartition, i64>, KafkaError> {
        let api = "ListOffsets";
        if partitions.is_empty() {
            return Ok(ItemResults { items: Vec::new() });
        }
        let metadata = self.metadata()?;
        let leaders: HashMap<(&str, i32), i32> = metadata
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| ((t.name.as_str(), p.partition), p.leader))
            })
            .collect();
        let mut answers: HashMap<TopicPartition, Result<i64, KafkaError>> = HashMap::new();
        let mut by_leader: BTreeMap<i32, BTreeMap<&str, Vec<i32>>> = BTreeMap::new();
        for tp in partitions {
            match leaders.get(&(tp.topic.as_str(), tp.partition)) {
                Some(leader) if *leader >= 0 => {
                    by_leader
                        .entry(*leader)
                        .or_default()
                        .entry(&tp.topic)
                        .or_default()
                        .push(tp.partition);
                }
                found => {
                    let (code, message) = match found {
                        Some(_) => ("LEADER_NOT_AVAILABLE", "it has no leader"),
                        None => (
                            "UNKNOWN_TOPIC_OR_PARTITION",
                            "the cluster's metadata does not list it",
                        ),
                    };
                    answers.insert(
                        tp.clone(),
                        Err(KafkaError::Kafka {
                            api,
                            what: format!("partition {tp}"),
                            code: code.to_owned(),
                            message: Some(message.to_owned()),
                        }),
                    );
                }
            }
        }
        for (leader, topics) in by_leader {
            let response = self.call(Target::Node(leader), api, |version| {
                let request = ListOffsetsRequest::default()
                    .with_replica_id(BrokerId(CONSUMER_REPLICA))
                    .with_isolation_level(READ_UNCOMMITTED)
                    .with_topics(
                        topics
                            .iter()
                            .map(|(topic, partitions)| {
                                ListOffsetsTopic::default()
                                    .with_name(topic_name(topic))
                                    .with_partitions(
                                        partitions
                                            .iter()
                                            .map(|p| {
                                                ListOffsetsPartition::default()
                                                    .with_partition_index(*p)
                                                    .with_timestamp(LATEST_TIMESTAMP)
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    );
                if version >= 10 {
                    request.with_timeout_ms(self.timeout_ms())
                } else {
                    request
                }
            })?;
            for t in &response.topics {
                for p in &t.partitions {
                    let tp = TopicPartition {
                        topic: text(&t.name.0),
                        partition: p.partition_index,
                    };
                    let result = check(api, || format!("partition {tp}"), p.error_code, None)
                        .map(|()| p.offset);
                    answers.insert(tp, result);
                }
            }
        }
        let items = partitions
            .iter()
            .map(|tp| {
                let result = answers.remove(tp).unwrap_or_else(|| {
                    Err(KafkaError::Protocol {
                        api,
                        address: self.answered_by(),
                        message: format!("the response has no offset for {tp}"),
                    })
                });
                (tp.clone(), result)
            })
            .collect();
        Ok(ItemResults { items })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::client::error_name;

    #[test]
    fn acl_codes_round_trip_and_unknown_codes_are_kept() {
        for code in 1..=7 {
            assert_eq!(AclResourceType::from_code(code).code(), code);
        }
        for code in 1..=15 {
            assert_eq!(AclOperation::from_code(code).code(), code);
        }
        assert_eq!(AclResourceType::from_code(2), AclResourceType::Topic);
        assert_eq!(AclPatternType::from_code(4), AclPatternType::Prefixed);
        assert_eq!(AclOperation::from_code(10), AclOperation::DescribeConfigs);
        assert_eq!(AclPermission::from_code(3), AclPermission::Allow);
        assert_eq!(AclOperation::from_code(42), AclOperation::Unknown(42));
        assert_eq!(AclOperation::Unknown(42).kafka_name(), "UNKNOWN(42)");
        assert_eq!(ScramMechanism::from_code(2), ScramMechanism::Sha512);
        assert_eq!(ScramMechanism::Sha256.code(), 1);
    }

    #[test]
    fn a_binding_with_filter_values_is_refused_with_the_field_named() {
        let good = AclBinding {
            resource_type: AclResourceType::Topic,
            resource_name: "orders".to_owned(),
            pattern_type: AclPatternType::Literal,
            principal: "User:alice".to_owned(),
            host: "*".to_owned(),
            operation: AclOperation::Read,
            permission: AclPermission::Allow,
        };
        assert_eq!(good.invalid_because(), None);
        assert_eq!(
            good.to_string(),
            "ACL ALLOW User:alice READ from * on TOPIC LITERAL orders"
        );
        let any_type = AclBinding {
            resource_type: AclResourceType::Any,
            ..good.clone()
        };
        assert_eq!(
            any_type.invalid_because().as_deref(),
            Some("resource type ANY is for filters")
        );
        let matching = AclBinding {
            pattern_type: AclPatternType::Match,
            ..good.clone()
        };
        assert!(
            matching
                .invalid_because()
                .is_some_and(|r| r.contains("MATCH"))
        );
        let no_host = AclBinding {
            host: String::new(),
            ..good
        };
        assert!(
            no_host
                .invalid_because()
                .is_some_and(|r| r.contains("host"))
        );
    }

    #[test]
    fn item_results_keep_every_failure() {
        let err = |what: &str| KafkaError::Kafka {
            api: "CreateTopics",
            what: what.to_owned(),
            code: "INVALID_CONFIG".to_owned(),
            message: None,
        };
        let all_ok: ItemResults<String> = ItemResults {
            items: vec![("a".to_owned(), Ok(()))],
        };
        assert_eq!(all_ok.into_result("CreateTopics").expect("ok").len(), 1);
        let two: ItemResults<String> = ItemResults {
            items: vec![
                ("a".to_owned(), Err(err("topic a"))),
                ("b".to_owned(), Ok(())),
                ("c".to_owned(), Err(err("topic c"))),
            ],
        };
        assert_eq!(
            two.failures().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["a", "c"]
        );
        let text = two
            .into_result("CreateTopics")
            .expect_err("two")
            .to_string();
        assert_eq!(
            text,
            "CreateTopics: 2 items failed: CreateTopics: topic a: INVALID_CONFIG; \
             CreateTopics: topic c: INVALID_CONFIG"
        );
    }

    #[test]
    fn a_kip_848_assignment_becomes_sorted_partitions() {
        use kafka_protocol::messages::TopicName;
        use kafka_protocol::messages::consumer_group_describe_response::TopicPartitions;
        let topic = |name: &str, partitions: Vec<i32>| {
            TopicPartitions::default()
                .with_topic_name(TopicName(str_bytes(name)))
                .with_partitions(partitions)
        };
        let assignment = ConsumerGroupAssignment::default().with_topic_partitions(vec![
            topic("orders", vec![2, 0]),
            topic("audit", vec![1]),
            topic("empty", Vec::new()),
        ]);
        let tp = |topic: &str, partition| TopicPartition {
            topic: topic.to_owned(),
            partition,
        };
        assert_eq!(
            consumer_assignment(&assignment),
            [tp("audit", 1), tp("orders", 0), tp("orders", 2)]
        );
        assert_eq!(consumer_assignment(&ConsumerGroupAssignment::default()), []);
        assert_eq!(GroupType::Consumer.to_string(), "consumer");
        assert_eq!(GroupType::Classic.kafka_name(), "classic");
    }

    #[test]
    fn quota_keys_have_kafkas_names() {
        for key in [
            QuotaKey::ProducerByteRate,
            QuotaKey::ConsumerByteRate,
            QuotaKey::RequestPercentage,
            QuotaKey::ControllerMutationRate,
        ] {
            assert_eq!(QuotaKey::from_kafka_name(key.kafka_name()), key);
        }
        assert_eq!(
            QuotaKey::from_kafka_name("connection_creation_rate"),
            QuotaKey::Other("connection_creation_rate".to_owned())
        );
        assert_eq!(error_name(37), "INVALID_PARTITIONS");
    }
}
