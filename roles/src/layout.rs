//! Where things live on a node. One place, so the renderer, the agent and
//! the tests agree on every path, user and unit name.

/// The system user Kafka, Kafka Connect and their format step run as.
pub const KAFKA_USER: &str = "kafka";
pub const KAFKA_HOME: &str = "/var/lib/kafka";

pub const KAFKA_ETC: &str = "/etc/kafka";
/// Broker or controller `server.properties`.
pub const SERVER_PROPERTIES: &str = "/etc/kafka/server.properties";
/// Environment for the Kafka JVM (`KAFKA_HEAP_OPTS`, `KAFKA_OPTS`, …).
pub const KAFKA_ENV: &str = "/etc/kafka/kafka.env";
/// The JMX exporter's rules.
pub const JMX_EXPORTER_CONFIG: &str = "/etc/kafka/jmx-exporter.yaml";
/// Secrets read through Kafka's `FileConfigProvider` (mode 0600).
pub const KAFKA_SECRETS: &str = "/etc/kafka/secrets.properties";
/// Environment of the one-shot storage format (salted SCRAM credentials; 0600).
pub const FORMAT_ENV: &str = "/etc/kafka/format.env";
/// The Kafka Connect worker's properties.
pub const CONNECT_PROPERTIES: &str = "/etc/kafka/connect-distributed.properties";
/// Client properties for running Kafka's CLI tools on the node as the admin
/// user (the seed's `/etc/kafka/client.properties`); only where the admin password is needed.
pub const ADMIN_CLIENT_PROPERTIES: &str = "/etc/kafka/admin-client.properties";

pub const TLS_DIR: &str = "/etc/kafka/tls";
/// Private key and certificate chain, PEM (`ssl.keystore.type=PEM`). Made by the agent.
pub const KEYSTORE: &str = "/etc/kafka/tls/node.pem";
/// The cluster CA, PEM (`ssl.truststore.type=PEM`).
pub const TRUSTSTORE: &str = "/etc/kafka/tls/ca.pem";

pub const KAFKA_UNIT: &str = "kafka.service";
pub const FORMAT_UNIT: &str = "kafka-storage-format.service";
pub const CONNECT_UNIT: &str = "kafka-connect.service";
pub const NODE_EXPORTER_UNIT: &str = "node-exporter.service";
pub const AGENT_UNIT: &str = "kraftops-agent.service";
pub const COORDINATOR_UNIT: &str = "kraftops-coordinator.service";
pub const PROMETHEUS_UNIT: &str = "prometheus.service";
pub const ALERTMANAGER_UNIT: &str = "alertmanager.service";
pub const GRAFANA_UNIT: &str = "grafana.service";

/// The agent's binary and its own configuration (written by cloud-init, not by a Plan).
pub const AGENT_BIN: &str = "/usr/local/bin/kraftops-agent";
pub const AGENT_CONFIG: &str = "/etc/kraftops/agent.yaml";
pub const AGENT_STATE_DIR: &str = "/var/lib/kraftops";

/// Binaries from Debian packages.
pub const NODE_EXPORTER_BIN: &str = "/usr/bin/prometheus-node-exporter";
pub const PROMETHEUS_BIN: &str = "/usr/bin/prometheus";
pub const ALERTMANAGER_BIN: &str = "/usr/bin/prometheus-alertmanager";
/// Grafana as its own Debian package installs it.
pub const GRAFANA_BIN: &str = "/usr/share/grafana/bin/grafana";
pub const GRAFANA_HOME: &str = "/usr/share/grafana";

/// Header of every rendered text file that allows comments.
pub const MANAGED_HEADER: &str = "Managed by kraftops from the desired-state repository. Local edits are reverted.";
