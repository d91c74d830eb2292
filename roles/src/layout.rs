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
/// Every node by name: there is no DNS on a plain VPC, so the agents keep
/// this file (cloud-init writes the first one).
pub const HOSTS: &str = "/etc/hosts";
pub const AGENT_STATE_DIR: &str = "/var/lib/kraftops";

/// Binaries from Debian packages.
pub const NODE_EXPORTER_BIN: &str = "/usr/bin/prometheus-node-exporter";
pub const PROMETHEUS_BIN: &str = "/usr/bin/prometheus";
pub const ALERTMANAGER_BIN: &str = "/usr/bin/prometheus-alertmanager";
/// Grafana as its own Debian package installs it.
pub const GRAFANA_BIN: &str = "/usr/share/grafana/bin/grafana";
pub const GRAFANA_HOME: &str = "/usr/share/grafana";

/// Header of every rendered text file that allows comments.
pub const MANAGED_HEADER: &str =
    "Managed by kraftops from the desired-state repository. Local edits are reverted.";

/// The observability node: Prometheus and Alertmanager (Debian packages) run
/// as `prometheus`, Grafana as `grafana`.
pub const PROMETHEUS_USER: &str = "prometheus";
pub const PROMETHEUS_ETC: &str = "/etc/prometheus";
pub const PROMETHEUS_CONFIG: &str = "/etc/prometheus/prometheus.yml";
/// `<stem>.yaml` for every `observability/rules/<stem>.yaml`. The config's
/// `rule_files` glob is relative (`rules/*.yaml`), resolved next to the config.
pub const PROMETHEUS_RULES_DIR: &str = "/etc/prometheus/rules";
pub const PROMETHEUS_HOME: &str = "/var/lib/prometheus";
pub const PROMETHEUS_TSDB: &str = "/var/lib/prometheus/metrics2";
pub const ALERTMANAGER_ETC: &str = "/etc/alertmanager";
pub const ALERTMANAGER_CONFIG: &str = "/etc/alertmanager/alertmanager.yml";
pub const ALERTMANAGER_DATA: &str = "/var/lib/prometheus/alertmanager";
pub const GRAFANA_USER: &str = "grafana";
pub const GRAFANA_ETC: &str = "/etc/grafana";
pub const GRAFANA_INI: &str = "/etc/grafana/grafana.ini";
/// Read by Grafana through `$__file{…}` (mode 0640, group grafana).
pub const GRAFANA_ADMIN_PASSWORD: &str = "/etc/grafana/admin-password";
pub const GRAFANA_PROVISIONING: &str = "/etc/grafana/provisioning";
pub const GRAFANA_DATASOURCES: &str = "/etc/grafana/provisioning/datasources/kraftops.yaml";
pub const GRAFANA_DASHBOARD_PROVIDERS: &str = "/etc/grafana/provisioning/dashboards/kraftops.yaml";
pub const GRAFANA_DATA: &str = "/var/lib/grafana";
/// `<uid>.json` for every dashboard; Grafana's file provider rescans it.
pub const GRAFANA_DASHBOARDS_DIR: &str = "/var/lib/grafana/dashboards";
pub const GRAFANA_LOGS: &str = "/var/log/grafana";
/// The coordinator's configuration, rendered by the observability role.
pub const COORDINATOR_CONFIG: &str = "/etc/kraftops/coordinator.yaml";

/// mTLS client properties for Kafka's CLI tools against the controller
/// listener (`kafka-metadata-quorum.sh --bootstrap-controller … --command-config`);
/// no secrets, the key is the node's own keystore.
pub const CONTROLLER_CLIENT_PROPERTIES: &str = "/etc/kafka/controller-client.properties";
/// Where Kafka and Kafka Connect write their logs (`LOG_DIR`).
pub const KAFKA_LOG_DIR: &str = "/var/log/kafka";
