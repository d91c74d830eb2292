//! [`AdminClient`]: the real [`KafkaAdmin`], a blocking client speaking
//! Kafka's protocol over TLS (SASL/SCRAM-SHA-512 to brokers' listeners,
//! mutual TLS to controllers'), one connection per node, reused.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::describe_quorum_response::ReplicaState;
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, DescribeClusterRequest, DescribeConfigsRequest,
    DescribeQuorumRequest, ElectLeadersRequest, IncrementalAlterConfigsRequest,
    ListPartitionReassignmentsRequest, MetadataRequest, TopicName,
};
use kafka_protocol::protocol::{Request, StrBytes};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::connection::{Connection, Settings, is_closed_connection, split_address};
use super::{
    ClusterDescription, ClusterMetadata, ClusterNode, ConfigEntry, ConfigOp, ConfigSource,
    ConfigSynonym, KafkaAdmin, KafkaError, PartitionMetadata, QuorumInfo, QuorumReplica,
    TopicMetadata, TopicPartition,
};
use crate::kafka::BrokerNode;

/// How the client proves who it is.
#[derive(Clone)]
pub enum Auth {
    /// SASL_SSL with SCRAM-SHA-512 (brokers' listeners).
    Scram { user: String, password: String },
    /// SSL with a client certificate (controllers' listener, KIP-919 admin
    /// clients): PEM with a PKCS#8 private key followed by the certificate
    /// chain (the node keystore format, see `crate::certs::keystore_pem`).
    MutualTls { keystore_pem: String },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Scram { user, .. } => f
                .debug_struct("Scram")
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
            Auth::MutualTls { .. } => f
                .debug_struct("MutualTls")
                .field("keystore_pem", &"<redacted>")
                .finish(),
        }
    }
}

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct AdminConfig {
    /// "host:port" addresses to bootstrap from; tried in order.
    pub bootstrap: Vec<String>,
    /// PEM of the CA that signed the servers' certificates; server
    /// certificates are verified against it and the host name (SNI = host
    /// of the address).
    pub ca_pem: String,
    pub auth: Auth,
    /// Bound on connect, TLS, each request (read/write timeouts).
    pub timeout: Duration,
    /// The bootstrap addresses are KRaft controllers (KIP-919
    /// `bootstrap.controllers`): Metadata is not available; DescribeQuorum
    /// must be sent to the active controller (found with DescribeCluster's
    /// controller_id, whose nodes are the controllers there).
    pub controllers: bool,
}

/// The real [`KafkaAdmin`]. Calls block (the reconcile is synchronous) for
/// at most about `timeout` per connection attempt and per request.
///
/// Connections are kept per address and reused; one that fails is dropped
/// (the next call connects afresh), and a reused one the node has closed
/// meanwhile is replaced once, at once.
pub struct AdminClient {
    pub(super) config: AdminConfig,
    settings: Settings,
    /// Address → idle connection. A call takes its connection out while it
    /// runs, so calls to different nodes do not wait for each other.
    connections: Mutex<HashMap<String, Connection>>,
    /// Node id → address, from Metadata or DescribeCluster; refreshed when
    /// an id is missing or its address stopped answering.
    nodes: Mutex<HashMap<i32, String>>,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Where a request goes.
#[derive(Clone, Copy)]
pub(super) enum Target {
    /// Any node: the bootstrap addresses in order, open connections first.
    Any,
    /// That node (its address from the cluster's metadata).
    Node(i32),
}

/// A call's failure, split by whether a connection was ever had: only then
/// is the next bootstrap address worth trying.
enum CallError {
    Connecting(KafkaError),
    Request(KafkaError),
}

impl CallError {
    fn into_inner(self) -> KafkaError {
        match self {
            CallError::Connecting(e) | CallError::Request(e) => e,
        }
    }
}

pub(super) const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
pub(super) const OP_SET: i8 = 0;
pub(super) const OP_DELETE: i8 = 1;
const ELECTION_PREFERRED: i8 = 0;
/// DescribeCluster's `endpoint_type` (KIP-919).
const ENDPOINT_BROKERS: i8 = 1;
const ENDPOINT_CONTROLLERS: i8 = 2;
const LEADER_NOT_AVAILABLE: i16 = 5;
const ELECTION_NOT_NEEDED: i16 = 84;
const METADATA_TOPIC: &str = "__cluster_metadata";

/// Kafka's name of error `code`, e.g. `INVALID_CONFIG` for 40.
pub(super) fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE".to_owned(),
        Some(ResponseError::Unknown(code)) => format!("error code {code}"),
        // The variant's name, e.g. `InvalidConfig`, in Kafka's spelling.
        Some(known) => {
            let camel = known.to_string();
            let mut out = String::with_capacity(camel.len() + 8);
            for (i, c) in camel.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    out.push('_');
                }
                out.push(c.to_ascii_uppercase());
            }
            out
        }
    }
}

pub(super) fn kafka_error(
    api: &'static str,
    what: String,
    code: i16,
    message: Option<&StrBytes>,
) -> KafkaError {
    KafkaError::Kafka {
        api,
        what,
        code: error_name(code),
        message: message
            .map(|m| m.as_str().to_owned())
            .filter(|m| !m.is_empty()),
    }
}

pub(super) fn text(s: &StrBytes) -> String {
    s.as_str().to_owned()
}

pub(super) fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

pub(super) fn topic_name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}

fn ids(ids: &[BrokerId]) -> Vec<i32> {
    ids.iter().map(|id| id.0).collect()
}

pub(super) fn port(api: &'static str, address: &str, port: i32) -> Result<u16, KafkaError> {
    u16::try_from(port).map_err(|_| KafkaError::Protocol {
        api,
        address: address.to_owned(),
        message: format!("port {port} is out of range"),
    })
}

fn timestamp(millis: i64) -> Option<i64> {
    (millis >= 0).then_some(millis)
}

fn replica(state: &ReplicaState) -> QuorumReplica {
    QuorumReplica {
        replica_id: state.replica_id.0,
        log_end_offset: state.log_end_offset,
        last_fetch_timestamp: timestamp(state.last_fetch_timestamp),
        last_caught_up_timestamp: timestamp(state.last_caught_up_timestamp),
    }
}

/// The rustls client configuration: the cluster CA as the only root, and
/// the client certificate for mutual TLS.
fn tls_config(ca_pem: &str, auth: &Auth) -> Result<Arc<rustls::ClientConfig>, KafkaError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| KafkaError::Config(format!("{what}: {e}"));
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| bad("the CA PEM", &e))?;
        roots.add(cert).map_err(|e| bad("the CA certificate", &e))?;
    }
    if roots.is_empty() {
        return Err(KafkaError::Config(
            "the CA PEM holds no CERTIFICATE block".to_owned(),
        ));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("TLS versions", &e))?
        .with_root_certificates(roots);
    let config = match auth {
        Auth::Scram { .. } => builder.with_no_client_auth(),
        Auth::MutualTls { keystore_pem } => {
            let chain = CertificateDer::pem_slice_iter(keystore_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad("the client keystore's certificates", &e))?;
            if chain.is_empty() {
                return Err(KafkaError::Config(
                    "the client keystore holds no CERTIFICATE block".to_owned(),
                ));
            }
            let key = PrivateKeyDer::from_pem_slice(keystore_pem.as_bytes())
                .map_err(|e| bad("the client keystore's private key", &e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| bad("the client certificate", &e))?
        }
    };
    Ok(Arc::new(config))
}

impl AdminClient {
    /// Checks `config` (addresses, PEM, credentials); connects only when
    /// the first call needs it.
    pub fn new(config: AdminConfig) -> Result<Self, KafkaError> {
        if config.bootstrap.is_empty() {
            return Err(KafkaError::Config("no bootstrap address".to_owned()));
        }
        if let Some(bad) = config.bootstrap.iter().find(|a| split_address(a).is_none()) {
            return Err(KafkaError::Config(format!(
                "bootstrap address {bad:?} is not host:port"
            )));
        }
        if config.timeout.is_zero() {
            return Err(KafkaError::Config("the timeout is zero".to_owned()));
        }
        let scram = match &config.auth {
            Auth::Scram { user, password } => {
                if user.is_empty() {
                    return Err(KafkaError::Config(
                        "the SCRAM user name is empty".to_owned(),
                    ));
                }
                Some((user.clone(), password.clone()))
            }
            Auth::MutualTls { .. } => None,
        };
        let settings = Settings {
            tls: tls_config(&config.ca_pem, &config.auth)?,
            scram,
            timeout: config.timeout,
        };
        Ok(AdminClient {
            config,
            settings,
            connections: Mutex::new(HashMap::new()),
            nodes: Mutex::new(HashMap::new()),
        })
    }

    /// Creates a topic (CreateTopics, sent to any broker; brokers forward
    /// it). An existing topic is an error (`TOPIC_ALREADY_EXISTS`).
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(&str, &str)],
    ) -> Result<(), KafkaError> {
        let response = self.call(Target::Any, "CreateTopics", |_| {
            let topic = CreatableTopic::default()
                .with_name(topic_name(name))
                .with_num_partitions(partitions)
                .with_replication_factor(replication_factor)
                .with_configs(
                    configs
                        .iter()
                        .map(|(k, v)| {
                            CreatableTopicConfig::default()
                                .with_name(str_bytes(k))
                                .with_value(Some(str_bytes(v)))
                        })
                        .collect(),
                );
            CreateTopicsRequest::default()
                .with_topics(vec![topic])
                .with_timeout_ms(self.timeout_ms())
        })?;
        for result in &response.topics {
            if result.error_code != 0 {
                return Err(kafka_error(
                    "CreateTopics",
                    format!("topic {}", result.name.0.as_str()),
                    result.error_code,
                    result.error_message.as_ref(),
                ));
            }
        }
        Ok(())
    }

    /// `DescribeConfigs` of every config of each of `topics`, with where
    /// each value comes from (a reconciler keeps only what is set on the
    /// topic itself, `ConfigSource::DynamicTopic`). One result per topic:
    /// a missing topic is `UNKNOWN_TOPIC_OR_PARTITION`, naming it.
    pub fn describe_topic_configs(
        &self,
        topics: &[String],
    ) -> Result<super::ItemResults<String, Vec<ConfigEntry>>, KafkaError> {
        let api = "DescribeConfigs";
        if topics.is_empty() {
            return Ok(super::ItemResults { items: Vec::new() });
        }
        let response = self.call(Target::Any, api, |_| {
            DescribeConfigsRequest::default()
                .with_resources(
                    topics
                        .iter()
                        .map(|t| {
                            DescribeConfigsResource::default()
                                .with_resource_type(RESOURCE_TOPIC)
                                .with_resource_name(str_bytes(t))
                                .with_configuration_keys(None)
                        })
                        .collect(),
                )
                .with_include_synonyms(false)
                .with_include_documentation(false)
        })?;
        let mut answers: HashMap<String, Result<Vec<ConfigEntry>, KafkaError>> = HashMap::new();
        for result in &response.results {
            let topic = text(&result.resource_name);
            let answer = if result.error_code != 0 {
                Err(kafka_error(
                    api,
                    format!("topic {topic}"),
                    result.error_code,
                    result.error_message.as_ref(),
                ))
            } else {
                Ok(result
                    .configs
                    .iter()
                    .map(|c| ConfigEntry {
                        name: text(&c.name),
                        value: c.value.as_ref().map(text),
                        read_only: c.read_only,
                        sensitive: c.is_sensitive,
                        source: ConfigSource::from_code(c.config_source),
                        synonyms: Vec::new(),
                    })
                    .collect())
            };
            answers.insert(topic, answer);
        }
        let items = topics
            .iter()
            .map(|t| {
                let answer = answers.remove(t).unwrap_or_else(|| {
                    Err(KafkaError::Protocol {
                        api,
                        address: "the cluster".to_owned(),
                        message: format!("the response has no result for topic {t}"),
                    })
                });
                (t.clone(), answer)
            })
            .collect();
        Ok(super::ItemResults { items })
    }

    pub(super) fn timeout_ms(&self) -> i32 {
        i32::try_from(self.config.timeout.as_millis()).unwrap_or(i32::MAX)
    }

    fn take_connection(&self, address: &str) -> Option<Connection> {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(address)
    }

    fn keep_connection(&self, address: &str, connection: Connection) {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(address.to_owned(), connection);
    }

    /// One request to `address`, on its open connection or a new one.
    fn call_at<R: Request>(
        &self,
        address: &str,
        api: &'static str,
        build: &impl Fn(i16) -> R,
    ) -> Result<R::Response, CallError> {
        let (mut connection, reused) = match self.take_connection(address) {
            Some(c) => (c, true),
            None => (
                Connection::open(address, &self.settings).map_err(CallError::Connecting)?,
                false,
            ),
        };
        match connection.call(api, build) {
            Ok(response) => {
                self.keep_connection(address, connection);
                Ok(response)
            }
            // Nothing was sent: the connection is as good as before.
            Err(e @ KafkaError::Unsupported { .. }) => {
                self.keep_connection(address, connection);
                Err(CallError::Request(e))
            }
            // The node closed an idle connection: once more on a new one.
            Err(e) if reused && is_closed_connection(&e) => {
                drop(connection);
                tracing::debug!(address, api, error = %e, "connection closed by the node; reconnecting");
                let mut connection =
                    Connection::open(address, &self.settings).map_err(CallError::Connecting)?;
                let response = connection.call(api, build).map_err(CallError::Request)?;
                self.keep_connection(address, connection);
                Ok(response)
            }
            // Anything else may leave the stream mid-frame: drop it.
            Err(e) => Err(CallError::Request(e)),
        }
    }

    pub(super) fn call<R: Request>(
        &self,
        target: Target,
        api: &'static str,
        build: impl Fn(i16) -> R,
    ) -> Result<R::Response, KafkaError> {
        match target {
            Target::Node(id) => {
                let address = self.node_address(id)?;
                self.call_at(&address, api, &build).map_err(|e| {
                    if let CallError::Connecting(_) = e {
                        // It may have moved: look it up afresh next time.
                        self.nodes
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .remove(&id);
                    }
                    e.into_inner()
                })
            }
            Target::Any => {
                let mut order: Vec<&String> = self.config.bootstrap.iter().collect();
                {
                    let open = self
                        .connections
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    // Stable: addresses with an open connection first.
                    order.sort_by_key(|a| !open.contains_key(a.as_str()));
                }
                let mut failures = Vec::new();
                for address in order {
                    match self.call_at(address, api, &build) {
                        Ok(response) => return Ok(response),
                        Err(CallError::Request(e)) => return Err(e),
                        Err(CallError::Connecting(e)) => failures.push(e),
                    }
                }
                if failures.len() == 1
                    && let Some(only) = failures.pop()
                {
                    return Err(only);
                }
                Err(KafkaError::NoBootstrap(
                    failures
                        .iter()
                        .map(|e| crate::error_chain(e))
                        .collect::<Vec<_>>()
                        .join("; "),
                ))
            }
        }
    }

    /// Node `id`'s address, looked up in the cluster's metadata when not
    /// known yet.
    fn node_address(&self, id: i32) -> Result<String, KafkaError> {
        let known = self
            .nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned();
        if let Some(address) = known {
            return Ok(address);
        }
        // Both record every node's address.
        if self.config.controllers {
            self.describe_cluster()?;
        } else {
            self.metadata()?;
        }
        self.nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
            .ok_or(KafkaError::UnknownNode { id })
    }

    pub(super) fn remember_nodes(&self, nodes: impl IntoIterator<Item = (i32, String)>) {
        self.nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(nodes);
    }
}

impl KafkaAdmin for AdminClient {
    fn metadata(&self) -> Result<ClusterMetadata, KafkaError> {
        let response = self.call(Target::Any, "Metadata", |_| {
            MetadataRequest::default()
                .with_topics(None)
                .with_allow_auto_topic_creation(false)
        })?;
        if response.error_code != 0 {
            return Err(kafka_error(
                "Metadata",
                "the cluster".to_owned(),
                response.error_code,
                None,
            ));
        }
        let mut brokers = Vec::with_capacity(response.brokers.len());
        for b in &response.brokers {
            let host = text(&b.host);
            brokers.push(BrokerNode {
                id: b.node_id.0,
                port: port("Metadata", &host, b.port)?,
                host,
                rack: b.rack.as_ref().map(text),
            });
        }
        self.remember_nodes(
            brokers
                .iter()
                .map(|b| (b.id, format!("{}:{}", b.host, b.port))),
        );
        let topics = response
            .topics
            .iter()
            .filter(|t| t.error_code == 0 || t.error_code == LEADER_NOT_AVAILABLE)
            .filter_map(|t| {
                Some(TopicMetadata {
                    name: text(&t.name.as_ref()?.0),
                    internal: t.is_internal,
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| PartitionMetadata {
                            partition: p.partition_index,
                            leader: p.leader_id.0,
                            replicas: ids(&p.replica_nodes),
                            isr: ids(&p.isr_nodes),
                            offline_replicas: ids(&p.offline_replicas),
                        })
                        .collect(),
                })
            })
            .collect();
        Ok(ClusterMetadata {
            cluster_id: response.cluster_id.as_ref().map(text),
            controller_id: response.controller_id.0,
            brokers,
            topics,
        })
    }

    fn describe_cluster(&self) -> Result<ClusterDescription, KafkaError> {
        let controllers = self.config.controllers;
        let response = self.call(Target::Any, "DescribeCluster", |version| {
            let mut request =
                DescribeClusterRequest::default().with_include_cluster_authorized_operations(false);
            if version >= 1 {
                request.endpoint_type = if controllers {
                    ENDPOINT_CONTROLLERS
                } else {
                    ENDPOINT_BROKERS
                };
            }
            if version >= 2 {
                request.include_fenced_brokers = true;
            }
            request
        })?;
        if response.error_code != 0 {
            return Err(kafka_error(
                "DescribeCluster",
                "the cluster".to_owned(),
                response.error_code,
                response.error_message.as_ref(),
            ));
        }
        if controllers && response.endpoint_type != ENDPOINT_CONTROLLERS {
            return Err(KafkaError::Protocol {
                api: "DescribeCluster",
                address: self.config.bootstrap.join(","),
                message: "the node cannot list controllers (DescribeCluster version 0)".to_owned(),
            });
        }
        let mut nodes = Vec::with_capacity(response.brokers.len());
        for b in &response.brokers {
            let host = text(&b.host);
            nodes.push(ClusterNode {
                id: b.broker_id.0,
                port: port("DescribeCluster", &host, b.port)?,
                host,
                rack: b.rack.as_ref().map(text),
                fenced: b.is_fenced,
            });
        }
        self.remember_nodes(
            nodes
                .iter()
                .map(|n| (n.id, format!("{}:{}", n.host, n.port))),
        );
        Ok(ClusterDescription {
            cluster_id: text(&response.cluster_id),
            controller_id: response.controller_id.0,
            nodes,
        })
    }

    fn broker_configs(&self, node_id: i32) -> Result<Vec<ConfigEntry>, KafkaError> {
        let response = self.call(Target::Node(node_id), "DescribeConfigs", |_| {
            DescribeConfigsRequest::default()
                .with_resources(vec![
                    DescribeConfigsResource::default()
                        .with_resource_type(RESOURCE_BROKER)
                        .with_resource_name(str_bytes(&node_id.to_string()))
                        .with_configuration_keys(None),
                ])
                .with_include_synonyms(true)
                .with_include_documentation(false)
        })?;
        let mut entries = Vec::new();
        for result in &response.results {
            if result.error_code != 0 {
                return Err(kafka_error(
                    "DescribeConfigs",
                    format!("broker {node_id} configs"),
                    result.error_code,
                    result.error_message.as_ref(),
                ));
            }
            entries.extend(result.configs.iter().map(|c| {
                ConfigEntry {
                    name: text(&c.name),
                    value: c.value.as_ref().map(text),
                    read_only: c.read_only,
                    sensitive: c.is_sensitive,
                    source: ConfigSource::from_code(c.config_source),
                    synonyms: c
                        .synonyms
                        .iter()
                        .map(|s| ConfigSynonym {
                            name: text(&s.name),
                            value: s.value.as_ref().map(text),
                            source: ConfigSource::from_code(s.source),
                        })
                        .collect(),
                }
            }));
        }
        Ok(entries)
    }

    fn topic_configs(
        &self,
        topics: &[String],
        keys: &[&str],
    ) -> Result<BTreeMap<String, BTreeMap<String, String>>, KafkaError> {
        if topics.is_empty() {
            return Ok(BTreeMap::new());
        }
        let response = self.call(Target::Any, "DescribeConfigs", |_| {
            DescribeConfigsRequest::default()
                .with_resources(
                    topics
                        .iter()
                        .map(|t| {
                            DescribeConfigsResource::default()
                                .with_resource_type(RESOURCE_TOPIC)
                                .with_resource_name(str_bytes(t))
                                .with_configuration_keys(Some(
                                    keys.iter().map(|k| str_bytes(k)).collect(),
                                ))
                        })
                        .collect(),
                )
                .with_include_synonyms(false)
                .with_include_documentation(false)
        })?;
        let mut out = BTreeMap::new();
        for result in &response.results {
            let topic = text(&result.resource_name);
            if result.error_code != 0 {
                return Err(kafka_error(
                    "DescribeConfigs",
                    format!("topic {topic}"),
                    result.error_code,
                    result.error_message.as_ref(),
                ));
            }
            let values: BTreeMap<String, String> = result
                .configs
                .iter()
                .filter_map(|c| Some((text(&c.name), text(c.value.as_ref()?))))
                .collect();
            out.insert(topic, values);
        }
        Ok(out)
    }

    fn alter_broker_configs(&self, node_id: i32, ops: &[ConfigOp]) -> Result<(), KafkaError> {
        if ops.is_empty() {
            return Ok(());
        }
        let configs = || {
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
        };
        let response = self.call(Target::Node(node_id), "IncrementalAlterConfigs", |_| {
            IncrementalAlterConfigsRequest::default()
                .with_resources(vec![
                    AlterConfigsResource::default()
                        .with_resource_type(RESOURCE_BROKER)
                        .with_resource_name(str_bytes(&node_id.to_string()))
                        .with_configs(configs()),
                ])
                .with_validate_only(false)
        })?;
        let names: Vec<&str> = ops
            .iter()
            .map(|op| match op {
                ConfigOp::Set { name, .. } | ConfigOp::Delete { name } => name.as_str(),
            })
            .collect();
        for result in &response.responses {
            if result.error_code != 0 {
                let what = match names.as_slice() {
                    [one] => format!("broker {node_id} config {one}"),
                    many => format!("broker {node_id} configs {}", many.join(", ")),
                };
                return Err(kafka_error(
                    "IncrementalAlterConfigs",
                    what,
                    result.error_code,
                    result.error_message.as_ref(),
                ));
            }
        }
        Ok(())
    }

    fn describe_quorum(&self) -> Result<QuorumInfo, KafkaError> {
        // Brokers forward it to the active controller; among controllers,
        // only the active one answers.
        let target = if self.config.controllers {
            match self.describe_cluster()?.controller_id {
                id if id >= 0 => Target::Node(id),
                _ => Target::Any,
            }
        } else {
            Target::Any
        };
        let response = self.call(target, "DescribeQuorum", |_| {
            DescribeQuorumRequest::default().with_topics(vec![
                TopicData::default()
                    .with_topic_name(topic_name(METADATA_TOPIC))
                    .with_partitions(vec![PartitionData::default().with_partition_index(0)]),
            ])
        })?;
        let what = || format!("{METADATA_TOPIC}-0");
        if response.error_code != 0 {
            return Err(kafka_error(
                "DescribeQuorum",
                what(),
                response.error_code,
                response.error_message.as_ref(),
            ));
        }
        let partition = response
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .find(|p| p.partition_index == 0)
            .ok_or_else(|| KafkaError::Protocol {
                api: "DescribeQuorum",
                address: self.config.bootstrap.join(","),
                message: format!("the response has no {}", what()),
            })?;
        if partition.error_code != 0 {
            return Err(kafka_error(
                "DescribeQuorum",
                what(),
                partition.error_code,
                partition.error_message.as_ref(),
            ));
        }
        Ok(QuorumInfo {
            leader_id: partition.leader_id.0,
            leader_epoch: partition.leader_epoch,
            high_watermark: partition.high_watermark,
            voters: partition.current_voters.iter().map(replica).collect(),
            observers: partition.observers.iter().map(replica).collect(),
        })
    }

    fn elect_preferred_leaders(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, String)>, KafkaError> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for tp in partitions {
            by_topic.entry(&tp.topic).or_default().push(tp.partition);
        }
        let response = self.call(Target::Any, "ElectLeaders", |_| {
            ElectLeadersRequest::default()
                .with_election_type(ELECTION_PREFERRED)
                .with_topic_partitions(Some(
                    by_topic
                        .iter()
                        .map(|(topic, partitions)| {
                            TopicPartitions::default()
                                .with_topic(topic_name(topic))
                                .with_partitions(partitions.clone())
                        })
                        .collect(),
                ))
                .with_timeout_ms(self.timeout_ms())
        })?;
        if response.error_code != 0 {
            return Err(kafka_error(
                "ElectLeaders",
                "the election".to_owned(),
                response.error_code,
                None,
            ));
        }
        let mut failures = Vec::new();
        for topic in &response.replica_election_results {
            for p in &topic.partition_result {
                if p.error_code == 0 || p.error_code == ELECTION_NOT_NEEDED {
                    continue;
                }
                let reason = match p.error_message.as_ref().filter(|m| !m.is_empty()) {
                    Some(m) => format!("{}: {m}", error_name(p.error_code)),
                    None => error_name(p.error_code),
                };
                failures.push((
                    TopicPartition {
                        topic: text(&topic.topic.0),
                        partition: p.partition_id,
                    },
                    reason,
                ));
            }
        }
        Ok(failures)
    }

    fn reassignments(&self) -> Result<Vec<TopicPartition>, KafkaError> {
        let response = self.call(Target::Any, "ListPartitionReassignments", |_| {
            ListPartitionReassignmentsRequest::default()
                .with_topics(None)
                .with_timeout_ms(self.timeout_ms())
        })?;
        if response.error_code != 0 {
            return Err(kafka_error(
                "ListPartitionReassignments",
                "the cluster".to_owned(),
                response.error_code,
                response.error_message.as_ref(),
            ));
        }
        Ok(response
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| TopicPartition {
                    topic: text(&t.name.0),
                    partition: p.partition_index,
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_get_kafkas_names() {
        assert_eq!(error_name(40), "INVALID_CONFIG");
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(error_name(58), "SASL_AUTHENTICATION_FAILED");
        assert_eq!(error_name(84), "ELECTION_NOT_NEEDED");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(error_name(0), "NONE");
        assert_eq!(error_name(30000), "error code 30000");
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let auth = Auth::Scram {
            user: "admin".to_owned(),
            password: "hunter2".to_owned(),
        };
        let shown = format!("{auth:?}");
        assert!(
            shown.contains("admin") && !shown.contains("hunter2"),
            "{shown}"
        );
        let auth = Auth::MutualTls {
            keystore_pem: "-----BEGIN PRIVATE KEY-----secret".to_owned(),
        };
        assert!(!format!("{auth:?}").contains("secret"));
    }

    #[test]
    fn bad_configurations_are_refused_before_connecting() {
        let config = |bootstrap: &[&str], ca_pem: &str| AdminConfig {
            bootstrap: bootstrap.iter().map(|s| (*s).to_owned()).collect(),
            ca_pem: ca_pem.to_owned(),
            auth: Auth::Scram {
                user: "admin".to_owned(),
                password: "pw".to_owned(),
            },
            timeout: Duration::from_secs(1),
            controllers: false,
        };
        let err = |c| match AdminClient::new(c) {
            Err(KafkaError::Config(message)) => message,
            other => panic!("expected a configuration error, got {other:?}"),
        };
        assert!(err(config(&[], "")).contains("no bootstrap"));
        assert!(err(config(&["kafka-1"], "")).contains("host:port"));
        assert!(err(config(&["kafka-1:9093"], "not a pem")).contains("no CERTIFICATE"));
    }
}
