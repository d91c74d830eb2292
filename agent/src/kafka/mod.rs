//! Talking to Kafka itself: the admin calls the rollout needs (metadata,
//! configs, quorum, leader election), and those a coordinator needs for
//! cluster-scope resources ([`ClusterAdmin`]: features, topics, SCRAM users,
//! ACLs, quotas, consumer groups), over Kafka's own wire protocol.
//!
//! [`KafkaAdmin`] is the seam: the rollout gates and the dynamic-config
//! applier are written against it and unit-tested with scripted fakes;
//! [`client::AdminClient`] is the real implementation (pure Rust on the
//! `kafka-protocol` crate's message types: TLS with rustls, SASL/SCRAM-SHA-512
//! or mutual TLS, one connection per node), tested against a real Kafka.
//!
//! librdkafka (rust-rdkafka) lacks incremental alter-configs, describe-cluster,
//! describe-quorum and preferred elections, and wrapping its C API would need
//! `unsafe` code, which this workspace forbids; every call here is a plain
//! request/response on the protocol Kafka documents.

mod assignment;
pub mod client;
pub mod cluster;
mod cluster_client;
mod connection;
mod scram;

use std::collections::BTreeMap;
use std::fmt;

pub use client::{AdminClient, AdminConfig, Auth};
pub use cluster::{
    AclBinding, AclFilter, AclOperation, AclPatternType, AclPermission, AclResourceType,
    ClusterAdmin, FeatureDescription, FeatureRange, FeatureUpdateKind, GroupDescription,
    GroupMember, GroupType, ItemResults, ListedGroup, NewPartitions, NewTopic, QuotaEntity,
    QuotaFilter, QuotaKey, QuotaOp, ScramCredentialInfo, ScramDeletion, ScramMechanism,
    ScramUpsert, TopicConfigChange,
};

/// A partition, by topic and index.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// A live (registered and unfenced) broker as `Metadata` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerNode {
    pub id: i32,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
}

/// One partition's replicas as the cluster's metadata has them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionMetadata {
    pub partition: i32,
    /// `-1` when the partition has no leader (offline).
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline_replicas: Vec<i32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicMetadata {
    pub name: String,
    pub internal: bool,
    pub partitions: Vec<PartitionMetadata>,
}

/// `Metadata` for every topic, internal ones included.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterMetadata {
    pub cluster_id: Option<String>,
    pub controller_id: i32,
    /// Live brokers only: a fenced or stopped broker is not listed.
    pub brokers: Vec<BrokerNode>,
    pub topics: Vec<TopicMetadata>,
}

/// A node as `DescribeCluster` lists it (fenced brokers included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterNode {
    pub id: i32,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
    pub fenced: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterDescription {
    pub cluster_id: String,
    /// The active controller when asked of controllers, else the controller
    /// brokers know (`-1`: none).
    pub controller_id: i32,
    pub nodes: Vec<ClusterNode>,
}

/// Where a config value comes from (DescribeConfigs' `ConfigSource`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    /// Set for this broker through the Admin API (highest precedence).
    DynamicBroker,
    /// Set as the cluster-wide default through the Admin API.
    DynamicDefaultBroker,
    /// `server.properties`, as the broker read it when it started.
    StaticBroker,
    /// Kafka's built-in default.
    Default,
    DynamicTopic,
    DynamicBrokerLogger,
    Other(i8),
}

impl ConfigSource {
    /// From the protocol's numeric code.
    pub fn from_code(code: i8) -> Self {
        match code {
            1 => ConfigSource::DynamicTopic,
            2 => ConfigSource::DynamicBroker,
            3 => ConfigSource::DynamicDefaultBroker,
            4 => ConfigSource::StaticBroker,
            5 => ConfigSource::Default,
            6 => ConfigSource::DynamicBrokerLogger,
            other => ConfigSource::Other(other),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigSynonym {
    pub name: String,
    pub value: Option<String>,
    pub source: ConfigSource,
}

/// One config of a broker, as `DescribeConfigs` (with synonyms) reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    /// `None` for sensitive values (Kafka never returns them).
    pub value: Option<String>,
    /// Kafka cannot change it without a restart.
    pub read_only: bool,
    pub sensitive: bool,
    pub source: ConfigSource,
    /// Every source that sets this key, in precedence order (the one in
    /// effect first), down to the default.
    pub synonyms: Vec<ConfigSynonym>,
}

/// One operation of `IncrementalAlterConfigs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigOp {
    Set { name: String, value: String },
    Delete { name: String },
}

/// A voter's or observer's replication state in the metadata quorum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumReplica {
    pub replica_id: i32,
    pub log_end_offset: i64,
    /// Unix milliseconds, as the leader saw it; `None` when unknown (-1).
    pub last_fetch_timestamp: Option<i64>,
    pub last_caught_up_timestamp: Option<i64>,
}

/// `DescribeQuorum` of the metadata log (`__cluster_metadata-0`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuorumInfo {
    /// `-1` when there is no leader.
    pub leader_id: i32,
    pub leader_epoch: i32,
    pub high_watermark: i64,
    pub voters: Vec<QuorumReplica>,
    pub observers: Vec<QuorumReplica>,
}

/// What can go wrong talking to Kafka. Every variant names what was being
/// done and where.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("connecting to {address}")]
    Connect {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS with {address}")]
    Tls {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("authenticating to {address} as {user}: {message}")]
    Authentication {
        address: String,
        user: String,
        message: String,
    },
    #[error("{api} to {address}")]
    Io {
        api: &'static str,
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{api} to {address}: cannot encode or decode: {message}")]
    Protocol {
        api: &'static str,
        address: String,
        message: String,
    },
    #[error("{api} is not supported by {address} (it offers versions {offered})")]
    Unsupported {
        api: &'static str,
        address: String,
        offered: String,
    },
    /// Kafka answered with an error code.
    #[error("{api}: {what}: {code}{}", message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Kafka {
        api: &'static str,
        what: String,
        /// Kafka's error name, e.g. `INVALID_CONFIG`.
        code: String,
        message: Option<String>,
    },
    /// Several items of one batch call failed (each names its item).
    #[error("{api}: {} items failed: {}", errors.len(), errors.iter().map(|e| crate::error_chain(e)).collect::<Vec<_>>().join("; "))]
    Several {
        api: &'static str,
        errors: Vec<KafkaError>,
    },
    /// A request this client refuses to send, e.g. a filter-only value in
    /// an ACL to create.
    #[error("{api}: {what}: {reason}")]
    Invalid {
        api: &'static str,
        what: String,
        reason: String,
    },
    #[error("node {id} is not known to the cluster")]
    UnknownNode { id: i32 },
    #[error("no bootstrap address could be reached: {0}")]
    NoBootstrap(String),
    #[error("bad client configuration: {0}")]
    Config(String),
}

/// The admin calls the rollout makes. Every call asks Kafka afresh; nothing
/// is cached between calls (gates need fresh metadata).
pub trait KafkaAdmin: Send + Sync {
    /// `Metadata` of every topic, internal ones included.
    fn metadata(&self) -> Result<ClusterMetadata, KafkaError>;
    /// `DescribeCluster`, fenced brokers included.
    fn describe_cluster(&self) -> Result<ClusterDescription, KafkaError>;
    /// `DescribeConfigs` of node `node_id`'s own configs (sent to that node),
    /// with synonyms.
    fn broker_configs(&self, node_id: i32) -> Result<Vec<ConfigEntry>, KafkaError>;
    /// `DescribeConfigs` of `topics`, only `keys`: topic → key → value.
    fn topic_configs(
        &self,
        topics: &[String],
        keys: &[&str],
    ) -> Result<BTreeMap<String, BTreeMap<String, String>>, KafkaError>;
    /// `IncrementalAlterConfigs` of node `node_id`'s own configs (sent to
    /// that node, which validates and, for keystores, reloads the files).
    fn alter_broker_configs(&self, node_id: i32, ops: &[ConfigOp]) -> Result<(), KafkaError>;
    /// `DescribeQuorum` of the metadata log, answered by the active controller.
    fn describe_quorum(&self) -> Result<QuorumInfo, KafkaError>;
    /// `ElectLeaders` (preferred) for `partitions`; partitions already led by
    /// their preferred replica are not errors. Returns the partitions whose
    /// election failed, with Kafka's reason.
    fn elect_preferred_leaders(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, String)>, KafkaError>;
    /// `ListPartitionReassignments`: partitions being moved right now.
    fn reassignments(&self) -> Result<Vec<TopicPartition>, KafkaError>;
}
