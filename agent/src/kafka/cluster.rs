//! [`ClusterAdmin`]: the admin calls a coordinator needs to reconcile
//! cluster-scope resources (features, topics, SCRAM users, ACLs, quotas) and
//! to serve the cluster REST API (consumer groups and their lag), with the
//! typed requests and answers they take. No protocol type appears here;
//! the numeric codes of the protocol live in one place each (`code`,
//! `from_code`).
//!
//! Batch calls answer per item ([`ItemResults`]): Kafka applies each item
//! of a batch on its own, so one bad topic must not hide that the others
//! were created, and a reconciler reports each resource's own status.

use std::collections::BTreeMap;
use std::fmt;

use super::{ConfigOp, KafkaError, TopicPartition};

/// Kafka's answer for each item of a batch call, in the order asked.
#[derive(Debug)]
pub struct ItemResults<K, T = ()> {
    pub items: Vec<(K, Result<T, KafkaError>)>,
}

impl<K, T> ItemResults<K, T> {
    /// The items Kafka refused, with why.
    pub fn failures(&self) -> impl Iterator<Item = (&K, &KafkaError)> {
        self.items
            .iter()
            .filter_map(|(k, r)| r.as_ref().err().map(|e| (k, e)))
    }

    /// Every item's value when all succeeded; else the one failure, or all
    /// of them as [`KafkaError::Several`].
    pub fn into_result(self, api: &'static str) -> Result<Vec<(K, T)>, KafkaError> {
        let mut values = Vec::with_capacity(self.items.len());
        let mut errors = Vec::new();
        for (k, r) in self.items {
            match r {
                Ok(v) => values.push((k, v)),
                Err(e) => errors.push(e),
            }
        }
        match errors.len() {
            0 => Ok(values),
            1 => Err(errors.remove(0)),
            _ => Err(KafkaError::Several { api, errors }),
        }
    }
}

/// A feature's version range: supported by a node, or finalized for the
/// cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeatureRange {
    pub min: i16,
    pub max: i16,
}

/// What a node reports in `ApiVersions`: the features it supports and the
/// cluster's finalized levels (`metadata.version`, `kraft.version`,
/// `transaction.version`, `group.version`, …).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeatureDescription {
    /// Feature → the versions this node can run.
    pub supported: BTreeMap<String, FeatureRange>,
    /// Feature → the cluster's finalized level (`max` is the level in force).
    pub finalized: BTreeMap<String, FeatureRange>,
    /// The epoch of the finalized levels; `None` when the node does not know
    /// them yet.
    pub finalized_epoch: Option<i64>,
}

impl FeatureDescription {
    /// The finalized level of `feature`, if the cluster has one.
    pub fn finalized_level(&self, feature: &str) -> Option<i16> {
        self.finalized.get(feature).map(|r| r.max)
    }
}

/// How `UpdateFeatures` may move a level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureUpdateKind {
    /// Raise only.
    Upgrade,
    /// Lower without losing metadata.
    SafeDowngrade,
    /// Lower even if metadata is lost.
    UnsafeDowngrade,
}

impl FeatureUpdateKind {
    /// The protocol's `UpgradeType`.
    pub(super) fn code(self) -> i8 {
        match self {
            FeatureUpdateKind::Upgrade => 1,
            FeatureUpdateKind::SafeDowngrade => 2,
            FeatureUpdateKind::UnsafeDowngrade => 3,
        }
    }
}

/// A topic to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

/// Grow `topic` to `total` partitions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPartitions {
    pub topic: String,
    pub total: i32,
}

/// Incremental config changes of one topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicConfigChange {
    pub topic: String,
    pub ops: Vec<ConfigOp>,
}

/// A SCRAM mechanism as `DescribeUserScramCredentials` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
    Unknown(i8),
}

impl ScramMechanism {
    pub(super) fn code(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
            ScramMechanism::Unknown(code) => code,
        }
    }

    pub(super) fn from_code(code: i8) -> Self {
        match code {
            1 => ScramMechanism::Sha256,
            2 => ScramMechanism::Sha512,
            other => ScramMechanism::Unknown(other),
        }
    }
}

impl fmt::Display for ScramMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScramMechanism::Sha256 => f.write_str("SCRAM-SHA-256"),
            ScramMechanism::Sha512 => f.write_str("SCRAM-SHA-512"),
            ScramMechanism::Unknown(code) => write!(f, "SCRAM mechanism {code}"),
        }
    }
}

/// One credential of one user (never the secret: Kafka does not return it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScramCredentialInfo {
    pub user: String,
    pub mechanism: ScramMechanism,
    pub iterations: i32,
}

/// Sets (creates or replaces) `user`'s SCRAM-SHA-512 credential. The
/// password never leaves the client: a random salt and the salted password
/// (PBKDF2-HMAC-SHA512) are computed here and sent.
#[derive(Clone)]
pub struct ScramUpsert {
    pub user: String,
    pub password: String,
    /// Kafka accepts 4096..=16384.
    pub iterations: u32,
}

impl fmt::Debug for ScramUpsert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramUpsert")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("iterations", &self.iterations)
            .finish()
    }
}

/// Removes `user`'s credential for `mechanism`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScramDeletion {
    pub user: String,
    pub mechanism: ScramMechanism,
}

/// Generates an ACL enum with its protocol codes; `Unknown` keeps a code
/// a newer Kafka may send, so a listing never fails on it.
macro_rules! acl_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $code:literal, $text:literal;)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($variant,)*
            Unknown(i8),
        }

        impl $name {
            /// The protocol's numeric code.
            pub fn code(self) -> i8 {
                match self {
                    $($name::$variant => $code,)*
                    $name::Unknown(code) => code,
                }
            }

            /// From the protocol's numeric code.
            pub fn from_code(code: i8) -> Self {
                match code {
                    $($code => $name::$variant,)*
                    other => $name::Unknown(other),
                }
            }

            /// Kafka's name, e.g. `TOPIC`, `PREFIXED`, `DESCRIBE_CONFIGS`.
            pub fn kafka_name(self) -> String {
                match self {
                    $($name::$variant => $text.to_owned(),)*
                    $name::Unknown(code) => format!("UNKNOWN({code})"),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.kafka_name())
            }
        }
    };
}

acl_enum! {
    /// What kind of resource an ACL is on. `Any` only in filters.
    AclResourceType {
        Any = 1, "ANY";
        Topic = 2, "TOPIC";
        Group = 3, "GROUP";
        Cluster = 4, "CLUSTER";
        TransactionalId = 5, "TRANSACTIONAL_ID";
        DelegationToken = 6, "DELEGATION_TOKEN";
        User = 7, "USER";
    }
}

acl_enum! {
    /// How an ACL's resource name matches. `Any` and `Match` (literal,
    /// wildcard or a prefix matching the name) only in filters.
    AclPatternType {
        Any = 1, "ANY";
        Match = 2, "MATCH";
        Literal = 3, "LITERAL";
        Prefixed = 4, "PREFIXED";
    }
}

acl_enum! {
    /// What an ACL allows or denies. `Any` only in filters.
    AclOperation {
        Any = 1, "ANY";
        All = 2, "ALL";
        Read = 3, "READ";
        Write = 4, "WRITE";
        Create = 5, "CREATE";
        Delete = 6, "DELETE";
        Alter = 7, "ALTER";
        Describe = 8, "DESCRIBE";
        ClusterAction = 9, "CLUSTER_ACTION";
        DescribeConfigs = 10, "DESCRIBE_CONFIGS";
        AlterConfigs = 11, "ALTER_CONFIGS";
        IdempotentWrite = 12, "IDEMPOTENT_WRITE";
        CreateTokens = 13, "CREATE_TOKENS";
        DescribeTokens = 14, "DESCRIBE_TOKENS";
        TwoPhaseCommit = 15, "TWO_PHASE_COMMIT";
    }
}

acl_enum! {
    /// Whether an ACL allows or denies. `Any` only in filters.
    AclPermission {
        Any = 1, "ANY";
        Deny = 2, "DENY";
        Allow = 3, "ALLOW";
    }
}

/// One ACL: `permission` for `principal` from `host` to do `operation` on
/// the resources `resource_type`/`resource_name`/`pattern_type` name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AclBinding {
    pub resource_type: AclResourceType,
    pub resource_name: String,
    pub pattern_type: AclPatternType,
    /// `User:alice`.
    pub principal: String,
    /// `*` for any host.
    pub host: String,
    pub operation: AclOperation,
    pub permission: AclPermission,
}

impl AclBinding {
    /// Why Kafka could not store this binding, if it has a filter-only or
    /// unknown value or an empty field; checked before sending so the
    /// error names the field.
    pub(super) fn invalid_because(&self) -> Option<String> {
        let concrete_type = !matches!(
            self.resource_type,
            AclResourceType::Any | AclResourceType::Unknown(_)
        );
        let concrete_pattern = matches!(
            self.pattern_type,
            AclPatternType::Literal | AclPatternType::Prefixed
        );
        let concrete_operation =
            !matches!(self.operation, AclOperation::Any | AclOperation::Unknown(_));
        let concrete_permission =
            matches!(self.permission, AclPermission::Allow | AclPermission::Deny);
        if !concrete_type {
            Some(format!(
                "resource type {} is for filters",
                self.resource_type
            ))
        } else if !concrete_pattern {
            Some(format!("pattern type {} is for filters", self.pattern_type))
        } else if !concrete_operation {
            Some(format!("operation {} is for filters", self.operation))
        } else if !concrete_permission {
            Some(format!("permission {} is for filters", self.permission))
        } else if self.resource_name.is_empty() {
            Some("the resource name is empty".to_owned())
        } else if self.principal.is_empty() {
            Some("the principal is empty".to_owned())
        } else if self.host.is_empty() {
            Some("the host is empty (`*` is any host)".to_owned())
        } else {
            None
        }
    }
}

impl fmt::Display for AclBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ACL {} {} {} from {} on {} {} {}",
            self.permission,
            self.principal,
            self.operation,
            self.host,
            self.resource_type,
            self.pattern_type,
            self.resource_name
        )
    }
}

/// Which ACLs to describe or delete. `None` and the `Any` variants match
/// everything; [`AclFilter::any`] matches every ACL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclFilter {
    pub resource_type: AclResourceType,
    pub resource_name: Option<String>,
    pub pattern_type: AclPatternType,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: AclOperation,
    pub permission: AclPermission,
}

impl AclFilter {
    /// Every ACL.
    pub fn any() -> Self {
        AclFilter {
            resource_type: AclResourceType::Any,
            resource_name: None,
            pattern_type: AclPatternType::Any,
            principal: None,
            host: None,
            operation: AclOperation::Any,
            permission: AclPermission::Any,
        }
    }

    /// Exactly `binding`.
    pub fn exact(binding: &AclBinding) -> Self {
        AclFilter {
            resource_type: binding.resource_type,
            resource_name: Some(binding.resource_name.clone()),
            pattern_type: binding.pattern_type,
            principal: Some(binding.principal.clone()),
            host: Some(binding.host.clone()),
            operation: binding.operation,
            permission: binding.permission,
        }
    }

    /// Every ACL of `principal`.
    pub fn principal(principal: &str) -> Self {
        AclFilter {
            principal: Some(principal.to_owned()),
            ..AclFilter::any()
        }
    }
}

impl fmt::Display for AclFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let or_any = |v: &Option<String>| v.clone().unwrap_or_else(|| "ANY".to_owned());
        write!(
            f,
            "ACL filter {} {} {} from {} on {} {} {}",
            self.permission,
            or_any(&self.principal),
            self.operation,
            or_any(&self.host),
            self.resource_type,
            self.pattern_type,
            or_any(&self.resource_name)
        )
    }
}

/// Whose quotas: a user, or the default for users without their own.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QuotaEntity {
    User(String),
    DefaultUser,
}

impl fmt::Display for QuotaEntity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuotaEntity::User(name) => write!(f, "user {name}"),
            QuotaEntity::DefaultUser => f.write_str("the default user"),
        }
    }
}

/// Which users' quotas `describe_client_quotas` returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QuotaFilter {
    /// Every user with quotas of their own, and the default user.
    AllUsers,
    /// These users (those without quotas are absent from the answer).
    Users(Vec<String>),
}

/// A client quota key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QuotaKey {
    ProducerByteRate,
    ConsumerByteRate,
    RequestPercentage,
    ControllerMutationRate,
    /// A key this client does not name (a newer Kafka's).
    Other(String),
}

impl QuotaKey {
    /// Kafka's name of the key.
    pub fn kafka_name(&self) -> &str {
        match self {
            QuotaKey::ProducerByteRate => "producer_byte_rate",
            QuotaKey::ConsumerByteRate => "consumer_byte_rate",
            QuotaKey::RequestPercentage => "request_percentage",
            QuotaKey::ControllerMutationRate => "controller_mutation_rate",
            QuotaKey::Other(name) => name,
        }
    }

    pub(super) fn from_kafka_name(name: &str) -> Self {
        match name {
            "producer_byte_rate" => QuotaKey::ProducerByteRate,
            "consumer_byte_rate" => QuotaKey::ConsumerByteRate,
            "request_percentage" => QuotaKey::RequestPercentage,
            "controller_mutation_rate" => QuotaKey::ControllerMutationRate,
            other => QuotaKey::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for QuotaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kafka_name())
    }
}

/// One change to an entity's quotas.
#[derive(Clone, Debug, PartialEq)]
pub enum QuotaOp {
    Set { key: QuotaKey, value: f64 },
    Remove { key: QuotaKey },
}

/// A group as `ListGroups` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedGroup {
    pub group_id: String,
    /// `consumer` for consumer groups, `connect` for Connect's workers, empty
    /// for groups that only commit offsets.
    pub protocol_type: String,
    /// `Stable`, `Empty`, … (`None` from brokers older than ListGroups v4).
    pub state: Option<String>,
    /// `classic`, `consumer`, `share`, … (`None` before ListGroups v5).
    pub group_type: Option<String>,
    /// The broker coordinating it.
    pub coordinator: i32,
}

/// Which rebalance protocol a group runs, and so which call describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupType {
    /// The classic protocol (JoinGroup/SyncGroup, the client assigns):
    /// `DescribeGroups`.
    Classic,
    /// The consumer protocol of KIP-848 (`group.protocol=consumer`, the
    /// broker assigns): `ConsumerGroupDescribe`.
    Consumer,
}

impl GroupType {
    /// Kafka's name, as `ListGroups` reports it: `classic`, `consumer`.
    pub fn kafka_name(self) -> &'static str {
        match self {
            GroupType::Classic => "classic",
            GroupType::Consumer => "consumer",
        }
    }
}

impl fmt::Display for GroupType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kafka_name())
    }
}

/// A group as `DescribeGroups` (classic) or `ConsumerGroupDescribe`
/// (KIP-848) reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub group_type: GroupType,
    /// Classic: `Stable`, `PreparingRebalance`, `CompletingRebalance`,
    /// `Empty`, `Dead`; consumer: `Stable`, `Assigning`, `Reconciling`,
    /// `Empty`, `Dead`.
    pub state: String,
    /// `consumer` for consumer groups of either type.
    pub protocol_type: String,
    /// The assignor, e.g. `range`, `cooperative-sticky` (classic, chosen by
    /// the members), `uniform` (consumer, run by the broker).
    pub protocol: String,
    /// Consumer groups: the epoch of the group's membership and
    /// subscriptions, and of the target assignment computed for it (behind
    /// the group epoch while the assignor runs, and in an empty group).
    /// `None` for classic groups.
    pub group_epoch: Option<i32>,
    pub assignment_epoch: Option<i32>,
    pub members: Vec<GroupMember>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// The partitions the member owns. Classic: decoded from the consumer
    /// protocol's assignment, empty for members of groups of other
    /// protocol types or while a rebalance runs. Consumer: its current
    /// assignment.
    pub assignment: Vec<TopicPartition>,
    /// Consumer groups: the member's epoch (behind the assignment epoch
    /// while it reconciles) and the partitions the assignor gave it, which
    /// it owns once reconciled. `None` for classic groups.
    pub member_epoch: Option<i32>,
    pub target_assignment: Option<Vec<TopicPartition>>,
}

/// The calls a coordinator makes to reconcile cluster-scope resources and
/// answer the cluster API. Every call asks Kafka afresh. It includes
/// [`super::KafkaAdmin`] (metadata, describe-cluster, topic configs,
/// quorum), so the coordinator's one client answers the cluster API too.
pub trait ClusterAdmin: super::KafkaAdmin + Send + Sync {
    /// Features from `ApiVersions` of one node: what it supports and the
    /// finalized levels (`metadata.version` among them).
    fn describe_features(&self) -> Result<FeatureDescription, KafkaError>;
    /// `UpdateFeatures` of one feature to `level` (with `validate_only`,
    /// Kafka only checks it).
    fn update_features(
        &self,
        feature: &str,
        level: i16,
        kind: FeatureUpdateKind,
        validate_only: bool,
    ) -> Result<(), KafkaError>;

    /// `CreateTopics`; an existing topic fails with `TOPIC_ALREADY_EXISTS`.
    fn create_topics(
        &self,
        topics: &[NewTopic],
        validate_only: bool,
    ) -> Result<ItemResults<String>, KafkaError>;
    /// `DeleteTopics` by name; a topic that does not exist counts as deleted.
    fn delete_topics(&self, topics: &[String]) -> Result<ItemResults<String>, KafkaError>;
    /// `CreatePartitions`: grows each topic to its total; a total below the
    /// current count fails with `INVALID_PARTITIONS`.
    fn create_partitions(
        &self,
        increases: &[NewPartitions],
        validate_only: bool,
    ) -> Result<ItemResults<String>, KafkaError>;
    /// `IncrementalAlterConfigs` of topics: only the named keys change.
    fn alter_topic_configs(
        &self,
        changes: &[TopicConfigChange],
        validate_only: bool,
    ) -> Result<ItemResults<String>, KafkaError>;

    /// `DescribeUserScramCredentials` of every user.
    fn describe_user_scram_credentials(&self) -> Result<Vec<ScramCredentialInfo>, KafkaError>;
    /// `AlterUserScramCredentials`: one result per user named.
    fn alter_user_scram_credentials(
        &self,
        upserts: &[ScramUpsert],
        deletions: &[ScramDeletion],
    ) -> Result<ItemResults<String>, KafkaError>;

    /// `DescribeAcls` of the ACLs `filter` matches.
    fn describe_acls(&self, filter: &AclFilter) -> Result<Vec<AclBinding>, KafkaError>;
    /// `CreateAcls`; creating an ACL that exists is not an error.
    fn create_acls(&self, bindings: &[AclBinding]) -> Result<ItemResults<AclBinding>, KafkaError>;
    /// `DeleteAcls`: for each filter, the ACLs it deleted.
    fn delete_acls(
        &self,
        filters: &[AclFilter],
    ) -> Result<ItemResults<AclFilter, Vec<AclBinding>>, KafkaError>;

    /// `DescribeClientQuotas` of user entities.
    fn describe_client_quotas(
        &self,
        filter: &QuotaFilter,
    ) -> Result<BTreeMap<QuotaEntity, BTreeMap<QuotaKey, f64>>, KafkaError>;
    /// `AlterClientQuotas` of one entity.
    fn alter_client_quotas(
        &self,
        entity: &QuotaEntity,
        ops: &[QuotaOp],
        validate_only: bool,
    ) -> Result<(), KafkaError>;

    /// `ListGroups` of every live broker, merged.
    fn list_groups(&self) -> Result<Vec<ListedGroup>, KafkaError>;
    /// `DescribeGroups` of classic groups, each sent to its coordinator.
    /// Since Kafka 4.0 (version 6) a group of another type, or none, is
    /// `GROUP_ID_NOT_FOUND`; older versions describe it as `Dead` with no
    /// members.
    fn describe_groups(
        &self,
        group_ids: &[String],
    ) -> Result<ItemResults<String, GroupDescription>, KafkaError>;
    /// `ConsumerGroupDescribe` of KIP-848 consumer groups, each sent to its
    /// coordinator. A group of another type, or none, is
    /// `GROUP_ID_NOT_FOUND`; a broker without the API (before Kafka 3.7)
    /// fails the call with [`KafkaError::Unsupported`].
    fn describe_consumer_groups(
        &self,
        group_ids: &[String],
    ) -> Result<ItemResults<String, GroupDescription>, KafkaError>;
    /// `OffsetFetch` of every partition `group` committed, from its
    /// coordinator.
    fn committed_offsets(&self, group: &str) -> Result<BTreeMap<TopicPartition, i64>, KafkaError>;
    /// `ListOffsets` (latest, read-uncommitted: the high watermark) of each
    /// partition, sent to its leader.
    fn latest_offsets(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<ItemResults<TopicPartition, i64>, KafkaError>;
}
