//! The files of a desired-state repository, as serde types.
//!
//! Every struct denies unknown keys. Defaults live here, in one place, so
//! that the JSON Schema, the loader and the renderer agree on them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::located::Located;
use crate::types::*;

/// Free-form Kafka settings: `key: value`, rendered into a properties file.
pub type Properties = BTreeMap<PropertyKey, Located<PropertyValue>>;

fn yes() -> bool {
    true
}

fn located_false() -> Located<bool> {
    false.into()
}

fn is_false(value: &Located<bool>) -> bool {
    !value.value
}

fn default_version(v: &str) -> Version {
    Version::try_from(v).unwrap_or_else(|_| unreachable!("built-in default {v} is a valid version"))
}

macro_rules! defaults {
    ($($fn_name:ident: $ty:ty = $text:expr;)*) => {
        $(
            fn $fn_name() -> $ty {
                <$ty>::try_from($text).unwrap_or_else(|_| unreachable!("built-in default {} is valid", $text))
            }
        )*
    };
}

defaults! {
    default_install_dir: AbsPath = "/opt/kafka";
    default_jmx_jar: AbsPath = "/opt/jmx_exporter/jmx_prometheus_javaagent.jar";
    default_broker_heap: HeapSize = "1g";
    default_controller_heap: HeapSize = "512m";
    default_connect_heap: HeapSize = "1g";
    default_data_dir: AbsPath = "/var/lib/kafka/data";
    default_metadata_dir: AbsPath = "/var/lib/kafka/metadata";
    default_connect_group: Name = "connect-cluster";
    default_connect_configs: TopicName = "connect-configs";
    default_connect_offsets: TopicName = "connect-offsets";
    default_connect_status: TopicName = "connect-status";
    default_plugin_dir: AbsPath = "/opt/kafka-connect/plugins";
    default_scrape_interval: Duration = "15s";
    default_retention: Duration = "15d";
    default_group_wait: Duration = "30s";
    default_group_interval: Duration = "5m";
    default_repeat_interval: Duration = "1h";
    default_health_timeout: Duration = "10m";
    default_lease_ttl: Duration = "15m";
    default_cooldown: Duration = "30s";
    default_poll_interval: Duration = "60s";
    default_poll_jitter: Duration = "10s";
    default_cert_validity: Duration = "90d";
    default_cert_renew_before: Duration = "30d";
    default_inter_broker_user: UserName = "broker";
    default_admin_user: UserName = "admin";
    default_grafana_admin: UserName = "admin";
}

fn located_default_scram_iterations() -> Located<u32> {
    8192.into()
}

fn located_default_inter_broker_user() -> Located<UserName> {
    default_inter_broker_user().into()
}

fn located_default_admin_user() -> Located<UserName> {
    default_admin_user().into()
}

fn located_default_cert_validity() -> Located<Duration> {
    default_cert_validity().into()
}

fn located_default_cert_renew_before() -> Located<Duration> {
    default_cert_renew_before().into()
}

fn default_jmx_version() -> Version {
    default_version("1.1.0")
}

// ---------------------------------------------------------------- cluster.yaml

/// `cluster.yaml`: the cluster's identity and everything that is the same on
/// every node.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// The cluster's name; used in tags, the CA's subject and dashboards.
    pub name: Located<Name>,
    /// The KRaft cluster id (`kafka-storage.sh random-uuid`). Never change it
    /// for a running cluster.
    pub kraft_cluster_id: Located<KafkaUuid>,
    pub kafka: KafkaSpec,
    pub network: NetworkSpec,
    pub security: SecuritySpec,
    #[serde(default)]
    pub ports: Ports,
    /// Cluster-wide topic defaults. Rendered into both brokers and
    /// controllers (KRaft controllers apply them when topics are created).
    #[serde(default)]
    pub topic_defaults: TopicDefaults,
    #[serde(default)]
    pub broker: BrokerSpec,
    #[serde(default)]
    pub controller: ControllerSpec,
    #[serde(default)]
    pub connect: ConnectSpec,
    #[serde(default)]
    pub observability: ObservabilitySpec,
    #[serde(default)]
    pub rollout: RolloutPolicy,
    #[serde(default)]
    pub agent: AgentSpec,
    /// Topics, users, ACLs and quotas: how the coordinator keeps them in Kafka.
    #[serde(default)]
    pub resources: ResourcesSpec,
    /// Where `kraftops-bootstrap` provisions the cluster on AWS. Not needed
    /// to run a cluster (local mode and machines made by other means ignore it).
    #[serde(default)]
    pub aws: Option<Located<AwsSpec>>,
}

/// Which Kafka to run and where it comes from.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSpec {
    /// Apache Kafka version, e.g. 4.1.1.
    pub version: Located<Version>,
    pub distribution: Located<Distribution>,
    /// Where the distribution is unpacked; `bin/kafka-server-start.sh` lives below it.
    #[serde(default = "default_install_dir")]
    pub install_dir: AbsPath,
    #[serde(default)]
    pub jmx_exporter: JmxExporterSpec,
    /// The release whose `metadata.version` the cluster should run, e.g.
    /// `4.2`. The coordinator raises the finalized level to it (only
    /// `metadata.version`, never the other features) once every broker and
    /// controller runs the commit that asks for it, and never lowers it.
    /// Unset: the level stays where `kafka-storage format` put it.
    #[serde(default)]
    pub metadata_version: Option<Located<MetadataRelease>>,
}

/// Where the Kafka distribution comes from.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Distribution {
    /// A tarball, checked against its SHA-512 before it is unpacked. Give
    /// the digest itself (`sha512`, pinned in git: strongest) or where the
    /// publisher's digest file is (`sha512_url`, e.g. Apache's `.sha512`).
    Tarball {
        url: DownloadUrl,
        #[serde(default)]
        sha512: Option<Sha512Hex>,
        #[serde(default)]
        sha512_url: Option<DownloadUrl>,
    },
    /// A Debian package from an apt source.
    Apt {
        /// The `deb` line of the source, e.g. `deb [signed-by=...] https://... stable main`.
        source: SingleLine,
        package: Name,
        #[serde(default)]
        version: Option<SingleLine>,
    },
}

/// The Prometheus JMX exporter java agent run inside every Kafka JVM.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JmxExporterSpec {
    #[serde(default = "default_jmx_version")]
    pub version: Version,
    /// Where the agent jar is on the node.
    #[serde(default = "default_jmx_jar")]
    pub jar: AbsPath,
    /// Where to download it from, when the node does not have it yet.
    #[serde(default)]
    pub url: Option<DownloadUrl>,
    #[serde(default)]
    pub sha512: Option<Sha512Hex>,
}

impl Default for JmxExporterSpec {
    fn default() -> Self {
        Self {
            version: default_jmx_version(),
            jar: default_jmx_jar(),
            url: None,
            sha512: None,
        }
    }
}

/// The network the nodes live in.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// Every node is reachable as `<name>.<domain>`; certificates carry that name.
    pub domain: Located<DnsDomain>,
    /// The availability zones and their subnets. A broker's rack is its AZ.
    pub azs: Vec<Located<Az>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Az {
    pub name: Located<Name>,
    pub subnet: Located<Cidr>,
}

/// Authentication and TLS. Listeners are always SASL_SSL with SCRAM-SHA-512
/// for clients and brokers, and mutual TLS between controllers.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecuritySpec {
    pub ca: CaSpec,
    /// The SCRAM user brokers authenticate as to each other. Must be defined in `users/`.
    #[serde(default = "located_default_inter_broker_user")]
    pub inter_broker_user: Located<UserName>,
    /// The SCRAM super user the coordinator manages the cluster as. Must be defined in `users/`.
    #[serde(default = "located_default_admin_user")]
    pub admin_user: Located<UserName>,
    /// PBKDF2 iterations for SCRAM credentials (Kafka accepts 4096 to 16384).
    #[serde(default = "located_default_scram_iterations")]
    pub scram_iterations: Located<u32>,
}

/// The cluster CA that signs every node certificate.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaSpec {
    /// The CA certificate (PEM), a path in this repository.
    pub certificate: Located<RepoPath>,
    /// The CA private key, as an age-encrypted secret; only the coordinator decrypts it.
    pub key_secret: Located<Name>,
    /// How long a node certificate is valid.
    #[serde(default = "located_default_cert_validity")]
    pub cert_validity: Located<Duration>,
    /// Renew a node certificate this long before it expires.
    #[serde(default = "located_default_cert_renew_before")]
    pub renew_before: Located<Duration>,
}

/// TCP ports. Defaults follow the seed platform.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Ports {
    /// Client listener (SASL_SSL) on brokers.
    pub client: u16,
    /// Inter-broker listener (SASL_SSL) on brokers.
    pub internal: u16,
    /// Controller listener (mutual TLS) on controllers.
    pub controller: u16,
    pub broker_jmx: u16,
    pub controller_jmx: u16,
    pub connect_rest: u16,
    pub connect_jmx: u16,
    pub node_exporter: u16,
    /// The agent's HTTP API and metrics, on every node.
    pub agent: u16,
    /// The coordinator's HTTP API, on the observability node: status,
    /// metrics, webhooks (git, Alertmanager).
    pub coordinator: u16,
    /// The coordinator's mutual-TLS API for agents, on the observability
    /// node: enrolment with a join token, then status, leases, nudges and
    /// certificate renewal authenticated by the node's certificate.
    pub coordinator_tls: u16,
    pub prometheus: u16,
    pub alertmanager: u16,
    pub alertmanager_cluster: u16,
    pub grafana: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Self {
            client: 9092,
            internal: 9091,
            controller: 9093,
            broker_jmx: 8080,
            controller_jmx: 8079,
            connect_rest: 8083,
            connect_jmx: 8079,
            node_exporter: 9100,
            agent: 9170,
            coordinator: 9171,
            coordinator_tls: 9172,
            prometheus: 9090,
            alertmanager: 9093,
            alertmanager_cluster: 9094,
            grafana: 3000,
        }
    }
}

/// Cluster-wide topic defaults, typed because they are cross-checked.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TopicDefaults {
    pub replication_factor: Located<u16>,
    pub min_insync_replicas: Located<u16>,
    pub partitions: Located<u32>,
    pub unclean_leader_election: bool,
    pub auto_create_topics: bool,
}

impl Default for TopicDefaults {
    fn default() -> Self {
        Self {
            replication_factor: 3.into(),
            min_insync_replicas: 2.into(),
            partitions: 3.into(),
            unclean_leader_election: false,
            auto_create_topics: false,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerSpec {
    pub heap: HeapSize,
    pub log_dirs: Vec<AbsPath>,
    /// Extra `server.properties` keys. Keys that kraftops manages itself are refused.
    pub settings: Properties,
}

impl Default for BrokerSpec {
    fn default() -> Self {
        Self {
            heap: default_broker_heap(),
            log_dirs: vec![default_data_dir()],
            settings: Properties::new(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ControllerSpec {
    pub heap: HeapSize,
    pub metadata_dir: AbsPath,
    /// Extra `server.properties` keys. Keys that kraftops manages itself are refused.
    pub settings: Properties,
}

impl Default for ControllerSpec {
    fn default() -> Self {
        Self {
            heap: default_controller_heap(),
            metadata_dir: default_metadata_dir(),
            settings: Properties::new(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectSpec {
    pub heap: HeapSize,
    pub group_id: Name,
    /// The SCRAM user the workers run as. Must be defined in `users/`.
    pub user: Located<UserName>,
    pub config_topic: Located<TopicName>,
    pub offset_topic: Located<TopicName>,
    pub status_topic: Located<TopicName>,
    pub plugin_path: Vec<AbsPath>,
    /// Extra worker properties. Keys that kraftops manages itself are refused.
    pub settings: Properties,
}

impl Default for ConnectSpec {
    fn default() -> Self {
        Self {
            heap: default_connect_heap(),
            group_id: default_connect_group(),
            user: UserName::try_from("kafka_connect")
                .unwrap_or_else(|_| unreachable!("kafka_connect is a valid user name"))
                .into(),
            config_topic: default_connect_configs().into(),
            offset_topic: default_connect_offsets().into(),
            status_topic: default_connect_status().into(),
            plugin_path: vec![default_plugin_dir()],
            settings: Properties::new(),
        }
    }
}

/// Prometheus, Alertmanager and Grafana on the observability node.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ObservabilitySpec {
    pub scrape_interval: Duration,
    pub evaluation_interval: Duration,
    pub retention: Duration,
    /// Extra scrape jobs beyond the ones derived from the node list.
    pub scrape_extras: Vec<Located<ScrapeJob>>,
    pub alertmanager: AlertmanagerSpec,
    pub grafana: GrafanaSpec,
}

impl Default for ObservabilitySpec {
    fn default() -> Self {
        Self {
            scrape_interval: default_scrape_interval(),
            evaluation_interval: default_scrape_interval(),
            retention: default_retention(),
            scrape_extras: Vec::new(),
            alertmanager: AlertmanagerSpec::default(),
            grafana: GrafanaSpec::default(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScrapeJob {
    pub job_name: Located<Name>,
    /// `host:port` targets.
    pub targets: Vec<Located<SingleLine>>,
    #[serde(default)]
    pub metrics_path: Option<AbsPath>,
    #[serde(default)]
    pub labels: BTreeMap<LabelName, SingleLine>,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AlertmanagerSpec {
    pub group_by: Vec<Name>,
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub repeat_interval: Duration,
    /// Where alerts go. The first receiver is the default route.
    pub receivers: Vec<Located<Receiver>>,
}

impl Default for AlertmanagerSpec {
    fn default() -> Self {
        Self {
            group_by: vec![Name::try_from("alertname").unwrap_or_else(|_| unreachable!("valid"))],
            group_wait: default_group_wait(),
            group_interval: default_group_interval(),
            repeat_interval: default_repeat_interval(),
            receivers: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Receiver {
    pub name: Located<Name>,
    #[serde(default)]
    pub webhook_urls: Vec<Url>,
    /// Only alerts whose labels match all of these go to this receiver
    /// (the first receiver takes everything else).
    #[serde(default)]
    pub matchers: BTreeMap<LabelName, SingleLine>,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GrafanaSpec {
    /// Whether the observability node runs Grafana (default true). Off, the
    /// node renders no Grafana files or unit, and Prometheus does not scrape
    /// it; the dashboards are still validated. Local mode turns it off where
    /// Grafana is not installable.
    pub enabled: bool,
    pub admin_user: UserName,
    /// The Grafana admin password, as an age-encrypted secret.
    pub admin_password_secret: Option<Located<Name>>,
}

impl Default for GrafanaSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            admin_user: default_grafana_admin(),
            admin_password_secret: None,
        }
    }
}

/// How changes that need a restart roll through the cluster.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutPolicy {
    /// How long a restarted node may take to be healthy again before it is
    /// rolled back to the last good revision.
    pub health_timeout: Duration,
    /// How long a restart lease lives without renewal.
    pub lease_ttl: Duration,
    /// Bake time: the pause after a node is healthy before the next one may
    /// restart.
    pub cooldown: Duration,
    /// Roll a node back to the last good revision when it fails its health gate.
    #[serde(default = "yes")]
    pub auto_rollback: bool,
    /// Run a preferred leader election after a broker is back.
    #[serde(default = "yes")]
    pub preferred_leader_election: bool,
    /// How many nodes of one role may be restarting at once (default 1, at
    /// least 1). Controllers, brokers and Connect workers each have their own
    /// budget; the agents' Kafka gates still check every restart.
    #[schemars(range(min = 1))]
    pub max_unavailable: Located<u16>,
    /// At most this many nodes of one role in the same availability zone
    /// restarting at once (at least 1). Unset: only `max_unavailable` applies.
    #[schemars(range(min = 1))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_unavailable_per_az: Option<Located<u16>>,
    /// When restarts may start (UTC). Empty (the default): at any time.
    /// Outside every window, restarts wait; changes that need no restart are
    /// still applied.
    pub maintenance_windows: Vec<MaintenanceWindow>,
    /// While true, no restart lease is granted: changes that need a restart
    /// wait, everything else is still applied.
    pub paused: bool,
}

fn located_one() -> Located<u16> {
    1.into()
}

impl Default for RolloutPolicy {
    fn default() -> Self {
        Self {
            health_timeout: default_health_timeout(),
            lease_ttl: default_lease_ttl(),
            cooldown: default_cooldown(),
            auto_rollback: true,
            preferred_leader_election: true,
            max_unavailable: located_one(),
            max_unavailable_per_az: None,
            maintenance_windows: Vec::new(),
            paused: false,
        }
    }
}

/// A day of the week, in UTC.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    /// Monday first, as ISO 8601 counts.
    pub const ALL: [Weekday; 7] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];
}

/// A time when restarts may start: from `start` on each of `days`, for
/// `duration`. A window may run past midnight (and past Sunday into Monday);
/// it belongs to the day it opens on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceWindow {
    /// The days the window opens on (`mon` … `sun`, UTC). Empty: every day.
    #[serde(default)]
    pub days: Vec<Weekday>,
    /// When the window opens, `HH:MM` in UTC.
    pub start: TimeOfDay,
    /// How long it stays open: more than 0, at most 7d.
    pub duration: Located<Duration>,
}

/// How every agent behaves.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSpec {
    /// How often an agent polls git when no nudge arrives.
    pub poll_interval: Duration,
    /// Random delay added to each poll, so nodes do not poll in lockstep.
    pub poll_jitter: Duration,
    /// The agent binary a new machine installs at first boot (cloud-init
    /// user-data). Required by `kraftops-bootstrap`.
    pub binary: Option<Located<AgentBinary>>,
    /// The repository a new machine's agent follows: this repository, as the
    /// nodes reach it. Required by `kraftops-bootstrap`.
    pub repository: Option<Located<AgentRepository>>,
    /// SSH public keys (`ssh-ed25519 AAAA… comment`) a new machine's agent
    /// trusts to sign commits. Written into the machine's own configuration
    /// once, at first boot: a later commit cannot change whom a running
    /// agent trusts. Empty: commit signatures are not checked.
    pub trusted_signers: Vec<Located<SingleLine>>,
}

impl Default for AgentSpec {
    fn default() -> Self {
        Self {
            poll_interval: default_poll_interval(),
            poll_jitter: default_poll_jitter(),
            binary: None,
            repository: None,
            trusted_signers: Vec::new(),
        }
    }
}

/// Where a new machine downloads `kraftops-agent` from.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentBinary {
    /// `https://` or `file://` URL of the static `kraftops-agent` binary.
    pub url: DownloadUrl,
    /// Its SHA-256; the download is refused unless it matches.
    pub sha256: Sha256Hex,
}

/// The repository new machines follow.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentRepository {
    /// `https://`, `ssh://`, `git://` or `file://` URL.
    pub url: SingleLine,
    #[serde(default = "default_branch")]
    pub branch: SingleLine,
}

fn default_branch() -> SingleLine {
    SingleLine::try_from("main").unwrap_or_else(|_| unreachable!("main is one line"))
}

/// The AWS side of the cluster, read by `kraftops-bootstrap` only.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AwsSpec {
    /// The region; every `network.azs` name must be one of its zones.
    #[serde(default = "default_region")]
    pub region: Located<Name>,
    /// The VPC's network; every AZ's subnet must lie inside it.
    pub vpc_cidr: Located<Cidr>,
    /// The machine image: an `id`, or a `name` pattern and `owner` resolved
    /// (newest match) when `plan` runs. A Debian or Ubuntu image with
    /// cloud-init.
    pub ami: Located<AmiSpec>,
    /// The EC2 key pair for SSH, if any.
    #[serde(default)]
    pub key_pair: Option<Located<SingleLine>>,
    /// Networks that may reach SSH and the operators' endpoints (Prometheus,
    /// Alertmanager, Grafana, the coordinator, the agents' APIs). Everything
    /// else is open only inside the VPC, port by port.
    #[serde(default)]
    pub admin_cidrs: Vec<Located<Cidr>>,
    /// Networks outside the VPC whose clients may reach the brokers' client
    /// listener.
    #[serde(default)]
    pub client_cidrs: Vec<Located<Cidr>>,
    /// The SSH port the admin networks reach; no role may listen on it.
    #[serde(default = "default_ssh_port")]
    pub ssh_port: Located<u16>,
    /// `public`: subnets route to an internet gateway and machines get
    /// public addresses. `private`: no internet gateway; the image, the
    /// agent binary and Kafka must be reachable from inside the VPC.
    #[serde(default)]
    pub subnets: SubnetKind,
    /// Root volume size (encrypted gp3), GiB.
    #[serde(default = "default_root_volume")]
    pub root_volume_gib: Located<u32>,
    /// Extra tags on every resource.
    #[serde(default)]
    pub tags: BTreeMap<SingleLine, SingleLine>,
}

/// Which image the machines boot.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AmiSpec {
    #[serde(default)]
    pub id: Option<AmiId>,
    /// Image name pattern (`*` wildcards), e.g. `debian-12-amd64-*`.
    #[serde(default)]
    pub name: Option<SingleLine>,
    /// The image owner's account id or alias, e.g. `136693071363` (Debian).
    #[serde(default)]
    pub owner: Option<SingleLine>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SubnetKind {
    #[default]
    Public,
    Private,
}

fn default_region() -> Located<Name> {
    Name::try_from("eu-central-1")
        .unwrap_or_else(|_| unreachable!("eu-central-1 is a name"))
        .into()
}

fn default_ssh_port() -> Located<u16> {
    22.into()
}

fn default_root_volume() -> Located<u32> {
    30.into()
}

/// How the coordinator treats topics and users in Kafka that git does not
/// list. By default it never deletes them: a topic or user goes only when
/// git marks it `delete: true`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ResourcesSpec {
    pub prune: PruneSpec,
}

/// Name patterns (`*` matches any run of characters) under which the
/// coordinator deletes what git does not list. Only names matching a pattern
/// are ever pruned, never anything else. Refused: a topic pattern that could
/// match Kafka's internal topics (`__*`) or Connect's storage topics, a user
/// pattern that matches the inter-broker or admin user.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PruneSpec {
    /// Topics in Kafka matching one of these and not in `topics/` are deleted.
    pub topics: Vec<Located<NamePattern>>,
    /// SCRAM users (their credentials, ACLs and quotas) in Kafka matching one
    /// of these and not in `users/` are deleted.
    pub users: Vec<Located<NamePattern>>,
}

// ------------------------------------------------------------------ nodes.yaml

/// `nodes.yaml`: every machine of the cluster.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodesFile {
    pub nodes: Vec<Located<Node>>,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Controller,
    Broker,
    Connect,
    Observability,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Controller => "controller",
            Role::Broker => "broker",
            Role::Connect => "connect",
            Role::Observability => "observability",
        }
    }
    /// Whether this role runs a Kafka server process with a KRaft node id.
    pub fn is_kafka_server(self) -> bool {
        matches!(self, Role::Controller | Role::Broker)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// The node's name; its host name is `<name>.<domain>`.
    pub name: Located<Name>,
    pub role: Located<Role>,
    /// The KRaft `node.id`; required for brokers and controllers, refused for others.
    #[serde(default)]
    pub node_id: Option<Located<u32>>,
    /// Controllers only: the metadata directory id for `--initial-controllers`
    /// (`kafka-storage.sh random-uuid`).
    #[serde(default)]
    pub directory_id: Option<Located<KafkaUuid>>,
    /// The availability zone; for brokers also `broker.rack`.
    pub az: Located<Name>,
    /// The private IPv4 address; must lie in the AZ's subnet.
    pub address: Located<Ipv4Addr>,
    pub instance_type: Located<InstanceType>,
    /// Per-node settings, merged over the role's `settings`.
    #[serde(default)]
    pub settings: Properties,
}

// ----------------------------------------------------------------- topics/*.yaml

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TopicsFile {
    pub topics: Vec<Located<Topic>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Topic {
    pub name: Located<TopicName>,
    pub partitions: Located<u32>,
    /// Defaults to `topic_defaults.replication_factor`.
    #[serde(default)]
    pub replication_factor: Option<Located<u16>>,
    /// Topic-level configs, e.g. `retention.ms`, `min.insync.replicas`.
    /// Configs set on the topic in Kafka but not listed here are removed (the
    /// topic then follows the broker's default).
    #[serde(default)]
    pub config: Properties,
    /// Delete this topic from Kafka. The entry stays in git, so a deletion is
    /// deliberate and reviewed; remove it once the topic is gone.
    #[serde(default = "located_false", skip_serializing_if = "is_false")]
    pub delete: Located<bool>,
}

/// Kafka's own topics start with this (`__consumer_offsets`,
/// `__transaction_state`, …); kraftops never declares, changes or deletes them.
pub const INTERNAL_TOPIC_PREFIX: &str = "__";

/// Whether Kafka reserves a topic of this name for itself.
pub fn is_internal_topic(name: &str) -> bool {
    name.starts_with(INTERNAL_TOPIC_PREFIX)
}

// ------------------------------------------------------------------ users/*.yaml

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UsersFile {
    pub users: Vec<Located<User>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: Located<UserName>,
    /// The name of the age-encrypted secret `secrets/<name>.age` holding the
    /// password. Not checked for a user marked for deletion.
    pub password_secret: Located<Name>,
    #[serde(default)]
    pub acls: Vec<Located<Acl>>,
    /// Client quotas of this user (Kafka's user quotas, on every broker).
    /// Quotas set in Kafka but not listed here are removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quotas: Option<Located<Quotas>>,
    /// Delete this user from Kafka: its SCRAM credentials, ACLs and quotas.
    /// It may then have no `acls` or `quotas`. The inter-broker and admin
    /// users cannot be deleted.
    #[serde(default = "located_false", skip_serializing_if = "is_false")]
    pub delete: Located<bool>,
}

/// A user's client quotas, named as Kafka names them. A quota left out is
/// not limited.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    /// Bytes per second the user may produce to each broker (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub producer_byte_rate: Option<Located<u64>>,
    /// Bytes per second the user may fetch from each broker (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub consumer_byte_rate: Option<Located<u64>>,
    /// Percentage of one broker thread's time the user may take on each
    /// broker's request and network threads (more than 0; above 100 spans
    /// several threads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_percentage: Option<Located<f64>>,
    /// Partitions per second the user may create or delete (more than 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_mutation_rate: Option<Located<f64>>,
}

impl Quotas {
    /// `(Kafka's quota key, value)` of every quota set.
    pub fn entries(&self) -> Vec<(&'static str, f64, crate::located::Pos)> {
        let mut out = Vec::new();
        let mut whole = |key: &'static str, value: &Option<Located<u64>>| {
            if let Some(v) = value {
                out.push((key, v.value as f64, v.pos));
            }
        };
        whole("producer_byte_rate", &self.producer_byte_rate);
        whole("consumer_byte_rate", &self.consumer_byte_rate);
        for (key, value) in [
            ("request_percentage", &self.request_percentage),
            ("controller_mutation_rate", &self.controller_mutation_rate),
        ] {
            if let Some(v) = value {
                out.push((key, v.value, v.pos));
            }
        }
        out
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Acl {
    pub resource: AclResource,
    /// The resource name, or `*` for all. Ignored for `cluster` (always `kafka-cluster`).
    #[serde(default = "acl_wildcard")]
    pub name: Located<AclResourceName>,
    #[serde(default)]
    pub pattern: AclPattern,
    pub operations: Vec<Located<AclOperation>>,
    #[serde(default)]
    pub permission: AclPermission,
    /// The client host the rule applies to; `*` for any.
    #[serde(default = "acl_any_host")]
    pub host: SingleLine,
}

fn acl_wildcard() -> Located<AclResourceName> {
    AclResourceName::try_from("*")
        .unwrap_or_else(|_| unreachable!("* is valid"))
        .into()
}

fn acl_any_host() -> SingleLine {
    SingleLine::try_from("*").unwrap_or_else(|_| unreachable!("* is valid"))
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AclResource {
    Topic,
    Group,
    Cluster,
    TransactionalId,
}

#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AclPattern {
    #[default]
    Literal,
    Prefixed,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AclOperation {
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    ClusterAction,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
}

impl AclOperation {
    /// Whether Kafka accepts this operation on this resource type.
    pub fn applies_to(self, resource: AclResource) -> bool {
        use AclOperation::*;
        match resource {
            AclResource::Topic => matches!(
                self,
                All | Read
                    | Write
                    | Create
                    | Delete
                    | Alter
                    | Describe
                    | DescribeConfigs
                    | AlterConfigs
            ),
            AclResource::Group => matches!(self, All | Read | Delete | Describe),
            AclResource::Cluster => matches!(
                self,
                All | Create
                    | Alter
                    | Describe
                    | ClusterAction
                    | DescribeConfigs
                    | AlterConfigs
                    | IdempotentWrite
            ),
            AclResource::TransactionalId => matches!(self, All | Write | Describe),
        }
    }
}

#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AclPermission {
    #[default]
    Allow,
    Deny,
}

// ------------------------------------------------------------- connectors/*.yaml

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectorsFile {
    pub connectors: Vec<Located<Connector>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Connector {
    pub name: Located<Name>,
    #[serde(default)]
    pub state: ConnectorState,
    /// The connector's configuration; `connector.class` is required.
    pub config: Properties,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConnectorState {
    #[default]
    Running,
    Paused,
    Stopped,
}

// ------------------------------------------------------ observability/rules/*.yaml

/// A Prometheus rule file, in Prometheus' own format.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    pub groups: Vec<Located<RuleGroup>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleGroup {
    pub name: Located<SingleLine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    pub rules: Vec<Located<Rule>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<Located<SingleLine>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<Located<SingleLine>>,
    /// The PromQL expression. May span lines; `promtool check rules` validates it.
    pub expr: String,
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<Duration>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<LabelName, SingleLine>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<LabelName, String>,
}
