//! Kafka-aware restarts and live configuration on one node: the agent asks
//! its own Kafka (and the cluster's) before and after every restart, and
//! applies what Kafka can take without one.
//!
//! - [`gates`]: the checks themselves, pure (min.insync.replicas, offline
//!   and under-replicated partitions, reassignments, fencing; the
//!   controllers' caught-up majority), and the health of a restarted node.
//! - [`live_config`]: which `server.properties` changes a broker takes
//!   live (Kafka's own read-only flags) and the operations that apply them.
//! - [`KafkaNode`]: this node's view of Kafka through a [`KafkaAdmin`]: a
//!   broker talks to the brokers' internal listener as the admin user
//!   (SASL_SSL, SCRAM-SHA-512); a controller talks to the controllers'
//!   listener with its own certificate (mutual TLS, KIP-919).

pub mod gates;
pub mod live_config;

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use desired_state::{Model, Role};
use roles::Secrets;

use crate::apply::PendingKafka;
use crate::error_chain as chain;
use crate::kafka::{AdminClient, AdminConfig, Auth, ConfigOp, KafkaAdmin, KafkaError};
pub use gates::Health;

/// How long one Kafka call may take.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a broker may take to present a reloaded certificate.
const TLS_RELOAD_WAIT: Duration = Duration::from_secs(30);
/// KRaft's default `controller.quorum.fetch.timeout.ms`: a voter is caught
/// up if it fetched within this long of the leader.
const DEFAULT_FETCH_TIMEOUT_MS: i64 = 2_000;

/// This node's Kafka, as the rollout needs it.
pub struct KafkaNode {
    admin: Arc<dyn KafkaAdmin>,
    role: Role,
    node_id: i32,
    /// Node ids of the nodes of this role, by name (lease holders are names).
    ids: BTreeMap<String, i32>,
    fetch_timeout_ms: i64,
    preferred_election: bool,
    /// Where the TLS listener this node serves clients on is, to check the
    /// certificate it presents after a reload (brokers).
    tls_check: Option<(String, u16)>,
    ca_pem: String,
}

impl std::fmt::Debug for KafkaNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaNode")
            .field("role", &self.role)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl KafkaNode {
    /// The Kafka view of `node` (a broker or controller of `model`);
    /// `None` for other roles. `keystore_pem`: the node's own keystore
    /// (controllers authenticate with it). Connects lazily.
    pub fn new(
        model: &Model,
        node: &str,
        secrets: &Secrets,
        keystore_pem: Option<String>,
    ) -> Result<Option<Self>, String> {
        let Some(me) = model.nodes.iter().find(|n| n.name.as_str() == node) else {
            return Ok(None);
        };
        let role = *me.role;
        if !role.is_kafka_server() {
            return Ok(None);
        }
        let node_id = me
            .node_id
            .as_ref()
            .and_then(|id| i32::try_from(id.value).ok())
            .ok_or_else(|| format!("{node} has no node_id"))?;
        let cluster = &model.cluster;
        let domain = cluster.network.domain.as_str();
        let host = |n: &desired_state::Node| format!("{}.{domain}", n.name.as_str());
        let ids = model
            .nodes
            .iter()
            .filter(|n| *n.role == role)
            .filter_map(|n| {
                let id = i32::try_from(n.node_id.as_ref()?.value).ok()?;
                Some((n.name.to_string(), id))
            })
            .collect();
        let ports = &cluster.ports;
        let (bootstrap, auth, controllers) = match role {
            Role::Broker => {
                let admin = &cluster.security.admin_user.value;
                let user = model
                    .user(admin)
                    .ok_or_else(|| format!("the admin user {admin} is not defined in users/"))?;
                let password = secrets.get(&user.password_secret.value).ok_or_else(|| {
                    format!("the password secret of the admin user {admin} is missing")
                })?;
                // Our own broker first: it is up when we ask about a restart.
                let mut bootstrap = vec![format!("{}:{}", host(me), ports.internal)];
                bootstrap.extend(
                    model
                        .brokers()
                        .filter(|n| n.name.as_str() != node)
                        .map(|n| format!("{}:{}", host(n), ports.internal)),
                );
                (
                    bootstrap,
                    Auth::Scram {
                        user: admin.to_string(),
                        password: password.expose().to_owned(),
                    },
                    false,
                )
            }
            _ => {
                let keystore_pem = keystore_pem.ok_or_else(|| {
                    format!("{node} has no keystore yet to reach the controllers")
                })?;
                (
                    model
                        .controllers()
                        .map(|n| format!("{}:{}", host(n), ports.controller))
                        .collect(),
                    Auth::MutualTls { keystore_pem },
                    true,
                )
            }
        };
        let fetch_timeout_ms = cluster
            .controller
            .settings
            .iter()
            .find(|(k, _)| k.as_str() == "controller.quorum.fetch.timeout.ms")
            .and_then(|(_, v)| v.as_str().parse().ok())
            .unwrap_or(DEFAULT_FETCH_TIMEOUT_MS);
        let admin = AdminClient::new(AdminConfig {
            bootstrap,
            ca_pem: model.ca_certificate.clone(),
            auth,
            timeout: KAFKA_TIMEOUT,
            controllers,
        })
        .map_err(|e| chain(&e))?;
        Ok(Some(Self {
            admin: Arc::new(admin),
            role,
            node_id,
            ids,
            fetch_timeout_ms,
            preferred_election: cluster.rollout.preferred_leader_election,
            tls_check: (role == Role::Broker).then(|| (host(me), ports.internal)),
            ca_pem: model.ca_certificate.clone(),
        }))
    }

    /// The same node with another admin client (tests script one).
    pub fn with_admin(mut self, admin: Arc<dyn KafkaAdmin>) -> Self {
        self.admin = admin;
        self
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    fn ids_of(&self, names: &[String]) -> Vec<i32> {
        names
            .iter()
            .filter_map(|n| self.ids.get(n).copied())
            .collect()
    }

    /// Whether this node may be restarted now, counting `others` (nodes of
    /// its role holding a restart lease) as down. `Err`: why to wait.
    pub fn may_restart(&self, others: &[String]) -> Result<(), String> {
        let down = self.ids_of(others);
        let ask = |e: KafkaError| format!("cannot check Kafka: {}", chain(&e));
        match self.role {
            Role::Broker => {
                let cluster = self.admin.describe_cluster().map_err(ask)?;
                let metadata = self.admin.metadata().map_err(ask)?;
                let reassigning = self.admin.reassignments().map_err(ask)?;
                let hosted: Vec<String> = metadata
                    .topics
                    .iter()
                    .filter(|t| {
                        t.partitions
                            .iter()
                            .any(|p| p.replicas.contains(&self.node_id))
                    })
                    .map(|t| t.name.clone())
                    .collect();
                let min_isr = if hosted.is_empty() {
                    BTreeMap::new()
                } else {
                    self.admin
                        .topic_configs(&hosted, &["min.insync.replicas"])
                        .map_err(ask)?
                        .into_iter()
                        .filter_map(|(topic, configs)| {
                            let min = configs.get("min.insync.replicas")?.parse().ok()?;
                            Some((topic, min))
                        })
                        .collect()
                };
                gates::broker_may_restart(
                    self.node_id,
                    &down,
                    &metadata,
                    &cluster,
                    &min_isr,
                    &reassigning,
                )
            }
            _ => {
                let quorum = self.admin.describe_quorum().map_err(ask)?;
                gates::controller_may_restart(self.node_id, &down, &quorum, self.fetch_timeout_ms)
            }
        }
    }

    /// Whether this controller leads the metadata quorum (it restarts last).
    pub fn is_quorum_leader(&self) -> bool {
        self.role == Role::Controller
            && self
                .admin
                .describe_quorum()
                .is_ok_and(|q| q.leader_id == self.node_id)
    }

    /// What [`KafkaNode::health`] compares against after a restart: the
    /// metadata quorum's high watermark just before it (controllers).
    pub fn restart_marker(&self) -> i64 {
        if self.role != Role::Controller {
            return 0;
        }
        self.admin.describe_quorum().map_or(0, |q| q.high_watermark)
    }

    /// How far this node is from healthy after its restart; `marker` is what
    /// [`KafkaNode::restart_marker`] returned before it.
    pub fn health(&self, marker: i64) -> Health {
        let not_yet = |e: KafkaError| Health::NotYet {
            reason: format!("Kafka does not answer yet: {}", chain(&e)),
            distance: u64::MAX,
        };
        match self.role {
            Role::Broker => {
                let cluster = match self.admin.describe_cluster() {
                    Ok(c) => c,
                    Err(e) => return not_yet(e),
                };
                let metadata = match self.admin.metadata() {
                    Ok(m) => m,
                    Err(e) => return not_yet(e),
                };
                gates::broker_health(self.node_id, &metadata, &cluster)
            }
            _ => match self.admin.describe_quorum() {
                Ok(q) => gates::controller_health(self.node_id, &q, self.fetch_timeout_ms, marker),
                Err(e) => not_yet(e),
            },
        }
    }

    /// After a broker is healthy: moves leadership back to it where it is
    /// the preferred replica (when the policy asks for it). Failures are
    /// logged, never fatal: Kafka's own auto leader rebalance catches up.
    pub fn restore_leadership(&self) {
        if self.role != Role::Broker || !self.preferred_election {
            return;
        }
        let partitions = match self.admin.metadata() {
            Ok(m) => gates::leadership_to_restore(self.node_id, &m),
            Err(e) => {
                tracing::warn!(error = %chain(&e), "no preferred leader election: metadata failed");
                return;
            }
        };
        if partitions.is_empty() {
            return;
        }
        match self.admin.elect_preferred_leaders(&partitions) {
            Ok(failed) if failed.is_empty() => {
                tracing::info!(
                    partitions = partitions.len(),
                    "leadership moved back to this broker"
                );
            }
            Ok(failed) => {
                tracing::warn!(partitions = partitions.len(), failed = failed.len(), first = ?failed.first(), "preferred leader election partly failed");
            }
            Err(e) => tracing::warn!(error = %chain(&e), "preferred leader election failed"),
        }
    }

    /// Applies what Kafka can take live of `pending` (the config change from
    /// `pending.config_before` to `current`, a keystore reload). Returns
    /// whether a restart is still needed, and what was done.
    pub fn apply_live(&self, pending: &PendingKafka, current: &str) -> Result<LiveOutcome, String> {
        let mut outcome = LiveOutcome::default();
        if self.role != Role::Broker {
            outcome
                .restart_for
                .push("controllers restart for every change".to_owned());
            return Ok(outcome);
        }
        let parse = |text: &str, what: &str| {
            roles::properties::parse(text).map_err(|e| format!("reading {what}: {e}"))
        };
        let after = parse(current, "server.properties")?;
        let ask = |e: KafkaError| chain(&e);
        if let Some(before) = &pending.config_before {
            let before = parse(before, "the previous server.properties")?;
            let actual = self.admin.broker_configs(self.node_id).map_err(ask)?;
            let change = live_config::classify(&before, &after, &actual);
            if !change.ops.is_empty() {
                self.admin
                    .alter_broker_configs(self.node_id, &change.ops)
                    .map_err(ask)?;
                outcome.applied.extend(change.ops.iter().map(describe_op));
            }
            outcome.restart_for.extend(change.restart_for);
        }
        if pending.reload_tls {
            let ops = live_config::tls_reload_ops(&after);
            let reloaded = self
                .admin
                .alter_broker_configs(self.node_id, &ops)
                .map_err(ask)
                .and_then(|()| self.check_served_certificate());
            match reloaded {
                Ok(()) => outcome
                    .applied
                    .push("listener keystores reloaded".to_owned()),
                Err(why) => outcome.restart_for.push(format!(
                    "the listeners did not reload their certificate: {why}"
                )),
            }
        }
        Ok(outcome)
    }

    /// Checks that this broker's TLS listener presents the certificate now in
    /// the keystore (after a reload).
    fn check_served_certificate(&self) -> Result<(), String> {
        let Some((host, port)) = &self.tls_check else {
            return Ok(());
        };
        let keystore = std::fs::read_to_string(roles::layout::KEYSTORE)
            .map_err(|e| format!("reading {}: {e}", roles::layout::KEYSTORE))?;
        let (_, certs) = crate::certs::read_keystore(&keystore).map_err(|e| chain(&e))?;
        let want = crate::certs::leaf_der(&certs).map_err(|e| chain(&e))?;
        // In KRaft the alteration is forwarded to the controllers and the
        // broker reloads when it replays the metadata record, a moment
        // after the answer: ask again for a while before giving up.
        let deadline = std::time::Instant::now() + TLS_RELOAD_WAIT;
        loop {
            let served = served_certificate(host, *port, &self.ca_pem)?;
            if served == want {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(format!(
                    "{host}:{port} still presents its previous certificate {}s after the reload",
                    TLS_RELOAD_WAIT.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

fn describe_op(op: &ConfigOp) -> String {
    match op {
        ConfigOp::Set { name, value } => format!("set {name}={value}"),
        ConfigOp::Delete { name } => format!("deleted {name}"),
    }
}

/// What [`KafkaNode::apply_live`] did and left.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveOutcome {
    pub applied: Vec<String>,
    pub restart_for: Vec<String>,
}

/// The leaf certificate (DER) a TLS server at `host:port` presents,
/// verified against `ca_pem`.
pub fn served_certificate(host: &str, port: u16, ca_pem: &str) -> Result<Vec<u8>, String> {
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject as _};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("the cluster CA: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("the cluster CA: {e}"))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from(host.to_owned()).map_err(|e| format!("{host}: {e}"))?;
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let address = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("resolving {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))?;
    let mut tcp = TcpStream::connect_timeout(&address, KAFKA_TIMEOUT)
        .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
    tcp.set_read_timeout(Some(KAFKA_TIMEOUT))
        .map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(KAFKA_TIMEOUT))
        .map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)
            .map_err(|e| format!("TLS with {host}:{port}: {e}"))?;
    }
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .ok_or_else(|| format!("{host}:{port} presented no certificate"))?;
    // Close politely; the listener expects SASL next and will just see EOF.
    conn.send_close_notify();
    let _ = conn.complete_io(&mut tcp);
    let _ = tcp.flush();
    let _ = tcp.read(&mut [0u8; 1]);
    Ok(leaf)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::kafka::{
        ClusterDescription, ClusterMetadata, ClusterNode, ConfigEntry, ConfigSource, ConfigSynonym,
        PartitionMetadata, QuorumInfo, TopicMetadata, TopicPartition,
    };

    /// A scripted Kafka: fixed answers, every alteration and election recorded.
    #[derive(Default)]
    struct FakeKafka {
        metadata: ClusterMetadata,
        cluster: ClusterDescription,
        configs: Vec<ConfigEntry>,
        min_isr: u16,
        altered: Mutex<Vec<(i32, Vec<ConfigOp>)>>,
        elected: Mutex<Vec<TopicPartition>>,
        refuse_alter: bool,
    }

    impl KafkaAdmin for FakeKafka {
        fn metadata(&self) -> Result<ClusterMetadata, KafkaError> {
            Ok(self.metadata.clone())
        }
        fn describe_cluster(&self) -> Result<ClusterDescription, KafkaError> {
            Ok(self.cluster.clone())
        }
        fn broker_configs(&self, _node_id: i32) -> Result<Vec<ConfigEntry>, KafkaError> {
            Ok(self.configs.clone())
        }
        fn topic_configs(
            &self,
            topics: &[String],
            keys: &[&str],
        ) -> Result<BTreeMap<String, BTreeMap<String, String>>, KafkaError> {
            Ok(topics
                .iter()
                .map(|t| {
                    let configs = keys
                        .iter()
                        .map(|k| ((*k).to_owned(), self.min_isr.to_string()))
                        .collect();
                    (t.clone(), configs)
                })
                .collect())
        }
        fn alter_broker_configs(&self, node_id: i32, ops: &[ConfigOp]) -> Result<(), KafkaError> {
            if self.refuse_alter {
                return Err(KafkaError::Kafka {
                    api: "IncrementalAlterConfigs",
                    what: format!("broker {node_id}"),
                    code: "INVALID_CONFIG".to_owned(),
                    message: Some("Invalid value 0".to_owned()),
                });
            }
            self.altered
                .lock()
                .map_err(|_| KafkaError::Config("poisoned".to_owned()))?
                .push((node_id, ops.to_vec()));
            Ok(())
        }
        fn describe_quorum(&self) -> Result<QuorumInfo, KafkaError> {
            Ok(QuorumInfo::default())
        }
        fn elect_preferred_leaders(
            &self,
            partitions: &[TopicPartition],
        ) -> Result<Vec<(TopicPartition, String)>, KafkaError> {
            self.elected
                .lock()
                .map_err(|_| KafkaError::Config("poisoned".to_owned()))?
                .extend_from_slice(partitions);
            Ok(Vec::new())
        }
        fn reassignments(&self) -> Result<Vec<TopicPartition>, KafkaError> {
            Ok(Vec::new())
        }
    }

    fn example() -> (Model, Secrets) {
        let root =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../desired-state/examples");
        let model = desired_state::load_dir(&root.join("seed")).expect("the example loads");
        let identity = desired_state::Identity::parse(
            &std::fs::read_to_string(root.join("seed.example-only.age-identity"))
                .expect("identity"),
        )
        .expect("identity parses");
        let secrets = model.decrypt_all(&identity).expect("secrets decrypt");
        (model, secrets)
    }

    fn broker_1(fake: FakeKafka) -> (KafkaNode, Arc<FakeKafka>) {
        let (model, secrets) = example();
        let fake = Arc::new(fake);
        let node = KafkaNode::new(&model, "broker-1", &secrets, None)
            .expect("a Kafka view")
            .expect("a broker")
            .with_admin(fake.clone());
        (node, fake)
    }

    fn up(ids: &[i32]) -> ClusterDescription {
        ClusterDescription {
            cluster_id: "c".to_owned(),
            controller_id: 3001,
            nodes: ids
                .iter()
                .map(|id| ClusterNode {
                    id: *id,
                    host: format!("broker-{id}.kafka.internal"),
                    port: 9091,
                    rack: None,
                    fenced: false,
                })
                .collect(),
        }
    }

    fn topic(partitions: Vec<(i32, Vec<i32>, Vec<i32>)>) -> ClusterMetadata {
        ClusterMetadata {
            cluster_id: None,
            controller_id: 3001,
            brokers: Vec::new(),
            topics: vec![TopicMetadata {
                name: "orders".to_owned(),
                internal: false,
                partitions: partitions
                    .into_iter()
                    .map(|(leader, replicas, isr)| PartitionMetadata {
                        partition: 0,
                        leader,
                        replicas,
                        isr,
                        offline_replicas: Vec::new(),
                    })
                    .collect(),
            }],
        }
    }

    #[test]
    fn a_lease_holder_of_the_role_counts_as_down_for_the_gate() {
        let (node, _) = broker_1(FakeKafka {
            metadata: topic(vec![(1, vec![1, 2, 3], vec![1, 2, 3])]),
            cluster: up(&[1, 2, 3, 4]),
            min_isr: 2,
            ..FakeKafka::default()
        });
        assert_eq!(node.may_restart(&[]), Ok(()));
        let why = node
            .may_restart(&["broker-2".to_owned()])
            .expect_err("refused");
        assert!(why.contains("below min.insync.replicas: orders-0"), "{why}");
        // Not a broker of this cluster: nothing to count.
        assert_eq!(node.may_restart(&["controller-1".to_owned()]), Ok(()));
    }

    #[test]
    fn a_dynamic_change_is_applied_to_this_broker_only_and_needs_no_restart() {
        let entry = |name: &str, value: &str, read_only: bool| ConfigEntry {
            name: name.to_owned(),
            value: Some(value.to_owned()),
            read_only,
            sensitive: false,
            source: ConfigSource::StaticBroker,
            synonyms: vec![ConfigSynonym {
                name: name.to_owned(),
                value: Some(value.to_owned()),
                source: ConfigSource::StaticBroker,
            }],
        };
        let (node, fake) = broker_1(FakeKafka {
            configs: vec![
                entry("num.io.threads", "16", false),
                entry("queued.max.requests", "500", true),
            ],
            ..FakeKafka::default()
        });
        let pending = PendingKafka {
            config_before: Some("num.io.threads=16\nqueued.max.requests=500\n".to_owned()),
            reload_tls: false,
        };
        let live = node
            .apply_live(&pending, "num.io.threads=12\nqueued.max.requests=500\n")
            .expect("applied");
        assert_eq!(live.applied, vec!["set num.io.threads=12".to_owned()]);
        assert!(live.restart_for.is_empty(), "{live:?}");
        let altered = fake.altered.lock().expect("lock").clone();
        assert_eq!(
            altered,
            vec![(
                1,
                vec![ConfigOp::Set {
                    name: "num.io.threads".to_owned(),
                    value: "12".to_owned()
                }]
            )]
        );
        // A read-only key: a restart, and nothing altered.
        let live = node
            .apply_live(&pending, "num.io.threads=16\nqueued.max.requests=0\n")
            .expect("classified");
        assert_eq!(
            live.restart_for,
            vec!["queued.max.requests: read-only, Kafka reads it at start".to_owned()]
        );
        assert_eq!(fake.altered.lock().expect("lock").len(), 1);
    }

    #[test]
    fn kafka_refusing_a_live_value_is_an_error_that_names_it() {
        let (node, _) = broker_1(FakeKafka {
            configs: vec![ConfigEntry {
                name: "num.io.threads".to_owned(),
                value: Some("16".to_owned()),
                read_only: false,
                sensitive: false,
                source: ConfigSource::StaticBroker,
                synonyms: Vec::new(),
            }],
            refuse_alter: true,
            ..FakeKafka::default()
        });
        let pending = PendingKafka {
            config_before: Some("num.io.threads=16\n".to_owned()),
            reload_tls: false,
        };
        let why = node
            .apply_live(&pending, "num.io.threads=0\n")
            .expect_err("refused");
        assert!(
            why.contains("INVALID_CONFIG") && why.contains("Invalid value 0"),
            "{why}"
        );
    }

    #[test]
    fn leadership_moves_back_after_a_restart_when_the_policy_says_so() {
        let (node, fake) = broker_1(FakeKafka {
            metadata: topic(vec![(2, vec![1, 2, 3], vec![2, 3, 1])]),
            cluster: up(&[1, 2, 3, 4]),
            ..FakeKafka::default()
        });
        node.restore_leadership();
        assert_eq!(
            fake.elected.lock().expect("lock").clone(),
            vec![TopicPartition {
                topic: "orders".to_owned(),
                partition: 0
            }]
        );
    }
}
