//! The pieces every Kafka JVM node (controller, broker, Connect worker)
//! shares: `server.properties` keys common to brokers and controllers, the
//! JVM environment, the JMX exporter's rules, the systemd units, the
//! one-shot storage format, the downloads and the node certificate.

use std::collections::BTreeMap;

use desired_state::types::HeapSize;
use desired_state::{Distribution, Properties};
use serde::Serialize;

use crate::layout::{self, MANAGED_HEADER};
use crate::systemd::{UnitFile, quote_arg};
use crate::{
    AptPackage, Artifact, CertificateRequest, Ctx, OnChange, PlannedDir, PlannedFile, PlannedUnit,
    RenderError, properties,
};

pub(crate) const SCRAM_MECHANISM: &str = "SCRAM-SHA-512";
const SCRAM_LOGIN_MODULE: &str = "org.apache.kafka.common.security.scram.ScramLoginModule";
const FILE_CONFIG_PROVIDER: &str = "org.apache.kafka.common.config.provider.FileConfigProvider";
const STANDARD_AUTHORIZER: &str = "org.apache.kafka.metadata.authorizer.StandardAuthorizer";
/// Certificates carry the node name as CN, so a node's mTLS principal is
/// `User:<node name>`, the name `super.users` lists.
const PRINCIPAL_MAPPING_RULES: &str = "RULE:^CN=([^,]+).*$/$1/,DEFAULT";
/// The controller listener's name on every node.
pub(crate) const CONTROLLER_LISTENER: &str = "CONTROLLER";
/// Files Kafka's `FileConfigProvider` may read: a connector config cannot
/// point it anywhere else (KIP-993).
const CONFIG_PROVIDER_ALLOWED_PATHS: &str = layout::KAFKA_ETC;

/// Open files: Kafka keeps every segment and index of every partition open.
const LIMIT_NOFILE: &str = "1048576";

/// A property map: `BTreeMap` so the rendered file is sorted and stable.
pub(crate) type Props = BTreeMap<String, String>;

pub(crate) fn set(props: &mut Props, key: impl Into<String>, value: impl Into<String>) {
    props.insert(key.into(), value.into());
}

/// A problem found while rendering `file` that validation should already
/// have refused; reported rather than panicking.
pub(crate) fn invalid(file: &str, message: impl Into<String>) -> RenderError {
    RenderError::Serialize {
        file: file.to_owned(),
        message: message.into(),
    }
}

/// The node's KRaft `node.id`.
pub(crate) fn node_id(ctx: &Ctx<'_>) -> Result<u32, RenderError> {
    ctx.node.node_id.as_ref().map(|id| id.value).ok_or_else(|| {
        invalid(
            layout::SERVER_PROPERTIES,
            format!(
                "node {} runs Kafka but has no node_id",
                ctx.node.name.as_str()
            ),
        )
    })
}

/// The PEM keystore and truststore under `prefix` (`listener.name.<l>.`,
/// `producer.`, or empty). Listener-prefixed keys are what Kafka can reload
/// without a restart; the base `ssl.*` keys are not dynamic.
pub(crate) fn pem_keystore(props: &mut Props, prefix: &str) {
    set(props, format!("{prefix}ssl.keystore.type"), "PEM");
    set(
        props,
        format!("{prefix}ssl.keystore.location"),
        layout::KEYSTORE,
    );
}

pub(crate) fn pem_truststore(props: &mut Props, prefix: &str) {
    set(props, format!("{prefix}ssl.truststore.type"), "PEM");
    set(
        props,
        format!("{prefix}ssl.truststore.location"),
        layout::TRUSTSTORE,
    );
}

/// `listener.name.<listener>.` as Kafka spells listener-prefixed keys.
pub(crate) fn listener_prefix(listener: &str) -> String {
    format!("listener.name.{}.", listener.to_ascii_lowercase())
}

/// The JAAS line logging in as a SCRAM user whose password Kafka reads from
/// [`layout::KAFKA_SECRETS`] through the file config provider, so the
/// password itself is in no world-readable file.
pub(crate) fn scram_login(user: &str) -> String {
    format!(
        "{SCRAM_LOGIN_MODULE} required username=\"{user}\" password=\"${{file:{}:{}}}\";",
        layout::KAFKA_SECRETS,
        secret_key(user)
    )
}

/// The JAAS line of a listener that authenticates others but logs in as no one.
pub(crate) fn scram_server_only() -> String {
    format!("{SCRAM_LOGIN_MODULE} required;")
}

fn secret_key(user: &str) -> String {
    format!("{user}.password")
}

/// `config.providers=file`, limited to `/etc/kafka`.
pub(crate) fn file_config_provider(props: &mut Props) {
    set(props, "config.providers", "file");
    set(props, "config.providers.file.class", FILE_CONFIG_PROVIDER);
    set(
        props,
        "config.providers.file.param.allowed.paths",
        CONFIG_PROVIDER_ALLOWED_PATHS,
    );
}

/// The `server.properties` keys brokers and controllers share: identity,
/// the quorum, the controller listener's TLS (server side on controllers,
/// client side on brokers), authorization and the topic defaults, which
/// KRaft controllers apply when they create topics.
pub(crate) fn server_common(ctx: &Ctx<'_>) -> Result<Props, RenderError> {
    let cluster = &ctx.model.cluster;
    let defaults = &cluster.topic_defaults;
    let mut props = Props::new();
    set(&mut props, "node.id", node_id(ctx)?.to_string());
    set(&mut props, "controller.listener.names", CONTROLLER_LISTENER);
    // Dynamic quorum (KIP-853): voters live in the metadata log, so
    // controllers can be replaced without rewriting every node's config.
    set(
        &mut props,
        "controller.quorum.bootstrap.servers",
        ctx.quorum_bootstrap_servers(),
    );
    let controller = listener_prefix(CONTROLLER_LISTENER);
    pem_keystore(&mut props, &controller);
    pem_truststore(&mut props, &controller);
    set(
        &mut props,
        "ssl.principal.mapping.rules",
        PRINCIPAL_MAPPING_RULES,
    );
    set(&mut props, "authorizer.class.name", STANDARD_AUTHORIZER);
    set(&mut props, "super.users", ctx.super_users());
    set(&mut props, "allow.everyone.if.no.acl.found", "false");
    set(
        &mut props,
        "default.replication.factor",
        defaults.replication_factor.value.to_string(),
    );
    set(
        &mut props,
        "min.insync.replicas",
        defaults.min_insync_replicas.value.to_string(),
    );
    set(
        &mut props,
        "num.partitions",
        defaults.partitions.value.to_string(),
    );
    set(
        &mut props,
        "unclean.leader.election.enable",
        defaults.unclean_leader_election.to_string(),
    );
    set(
        &mut props,
        "auto.create.topics.enable",
        defaults.auto_create_topics.to_string(),
    );
    Ok(props)
}

/// Applies the role's `settings`, then the node's own (the node wins).
/// Validation has refused every key kraftops derives itself, so settings
/// only add keys.
pub(crate) fn merge_settings(props: &mut Props, role: &Properties, node: &Properties) {
    for settings in [role, node] {
        for (key, value) in settings {
            set(props, key.as_str(), value.as_str());
        }
    }
}

/// A file holding secrets: only the `kafka` user reads it, and the agent
/// never logs or reports its contents.
pub(crate) fn secret_file(path: &str, contents: String, on_change: OnChange) -> PlannedFile {
    PlannedFile {
        path: path.to_owned(),
        mode: 0o600,
        owner: layout::KAFKA_USER.to_owned(),
        group: layout::KAFKA_USER.to_owned(),
        contents: contents.into_bytes(),
        sensitive: true,
        on_change,
    }
}

/// A directory Kafka writes to.
pub(crate) fn kafka_dir(path: &str) -> PlannedDir {
    PlannedDir {
        path: path.to_owned(),
        mode: 0o750,
        owner: layout::KAFKA_USER.to_owned(),
        group: layout::KAFKA_USER.to_owned(),
    }
}

/// `server.properties`. Kafka reads it at start; on a broker, keys that can
/// change at runtime are applied by the agent through the Admin API instead
/// (`on_change` is then [`OnChange::KafkaConfig`]).
pub(crate) fn server_properties(props: &Props, on_change: OnChange) -> PlannedFile {
    PlannedFile::config(
        layout::SERVER_PROPERTIES,
        properties::render(MANAGED_HEADER, props),
        on_change,
    )
}

/// [`layout::KAFKA_SECRETS`]: `<user>.password=<password>` for the SCRAM
/// user this node logs in as. Changing a password needs a restart, since
/// Kafka resolves config providers only when it reads its config.
pub(crate) fn secrets_file(
    ctx: &Ctx<'_>,
    user: &desired_state::types::UserName,
    unit: &str,
) -> Result<PlannedFile, RenderError> {
    let password = ctx.password(user, layout::KAFKA_SECRETS)?;
    let props = Props::from([(secret_key(user.as_str()), password.to_owned())]);
    Ok(secret_file(
        layout::KAFKA_SECRETS,
        properties::render(MANAGED_HEADER, &props),
        OnChange::Restart(unit.to_owned()),
    ))
}

/// [`layout::CONTROLLER_CLIENT_PROPERTIES`]: lets Kafka's CLI tools reach
/// the controllers with this node's own certificate
/// (`kafka-metadata-quorum.sh --bootstrap-controller … --command-config`).
/// Read on every use, so a change needs nothing.
pub(crate) fn controller_client_properties() -> PlannedFile {
    let mut props = Props::new();
    set(&mut props, "security.protocol", "SSL");
    pem_keystore(&mut props, "");
    pem_truststore(&mut props, "");
    PlannedFile::config(
        layout::CONTROLLER_CLIENT_PROPERTIES,
        properties::render(MANAGED_HEADER, &props),
        OnChange::Nothing,
    )
}

// ------------------------------------------------------------ environment

/// One `KEY=value` line of a systemd environment file. Values that are not
/// plain are double-quoted; characters that would need escaping there are
/// refused, since no value kraftops writes should contain them.
fn env_line(file: &str, key: &str, value: &str) -> Result<String, RenderError> {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+".contains(c));
    if plain {
        return Ok(format!("{key}={value}\n"));
    }
    if value
        .chars()
        .any(|c| c.is_control() || matches!(c, '"' | '\\' | '$' | '`'))
    {
        return Err(invalid(
            file,
            format!("value of {key} contains a quote, backslash, `$` or control character"),
        ));
    }
    Ok(format!("{key}=\"{value}\"\n"))
}

/// [`layout::KAFKA_ENV`]: heap, the JMX exporter agent bound to the node's
/// private address, and the log directory. Read only at start.
pub(crate) fn kafka_env(
    ctx: &Ctx<'_>,
    heap: &HeapSize,
    jmx_port: u16,
    unit: &str,
) -> Result<PlannedFile, RenderError> {
    let file = layout::KAFKA_ENV;
    let jar = ctx.model.cluster.kafka.jmx_exporter.jar.as_str();
    let address = ctx.node.address.value;
    let mut text = format!("# {MANAGED_HEADER}\n");
    text.push_str(&env_line(
        file,
        "KAFKA_HEAP_OPTS",
        &format!("-Xms{heap} -Xmx{heap}"),
    )?);
    text.push_str(&env_line(
        file,
        "KAFKA_OPTS",
        &format!(
            "-javaagent:{jar}={address}:{jmx_port}:{}",
            layout::JMX_EXPORTER_CONFIG
        ),
    )?);
    text.push_str(&env_line(file, "LOG_DIR", layout::KAFKA_LOG_DIR)?);
    Ok(PlannedFile::config(
        file,
        text,
        OnChange::Restart(unit.to_owned()),
    ))
}

/// The environment variable of the format unit holding a user's salted
/// `--add-scram` argument.
const SCRAM_ENV_INTER_BROKER: &str = "KRAFTOPS_SCRAM_INTER_BROKER";
const SCRAM_ENV_ADMIN: &str = "KRAFTOPS_SCRAM_ADMIN";

/// [`layout::FORMAT_ENV`] and the `--add-scram` arguments that refer to it:
/// the inter-broker and admin users must exist before any broker starts,
/// and format time is the only moment a fresh cluster can get them. The
/// values are salted, so no plaintext password reaches a command line.
/// Single quotes keep their embedded double quotes through systemd's parser.
pub(crate) fn format_env(ctx: &Ctx<'_>) -> Result<(PlannedFile, Vec<ExecArg>), RenderError> {
    let file = layout::FORMAT_ENV;
    let security = &ctx.model.cluster.security;
    let mut users = vec![(SCRAM_ENV_INTER_BROKER, &security.inter_broker_user.value)];
    if security.admin_user.value != security.inter_broker_user.value {
        users.push((SCRAM_ENV_ADMIN, &security.admin_user.value));
    }
    let mut text = format!("# {MANAGED_HEADER}\n");
    let mut args = Vec::new();
    for (var, user) in users {
        let value = ctx.scram(user, file)?.add_scram_arg();
        if value.chars().any(|c| c.is_control() || c == '\'') {
            return Err(invalid(
                file,
                format!(
                    "the SCRAM credential of {user} contains a single quote or control character"
                ),
            ));
        }
        text.push_str(&format!("{var}='{value}'\n"));
        args.push(ExecArg::Literal("--add-scram".to_owned()));
        args.push(ExecArg::Env(var));
    }
    Ok((secret_file(file, text, OnChange::Nothing), args))
}

// ------------------------------------------------------------ JMX exporter

/// Which JVM the JMX exporter runs in: the rules differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JmxRules {
    /// A broker or controller.
    KafkaServer,
    ConnectWorker,
}

/// The JMX exporter's configuration (jmx_exporter 1.x). Its rules produce
/// the metric names the alert rules and dashboards are written against, so
/// they are part of kraftops' interface.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct JmxExporterConfig {
    lowercase_output_name: bool,
    lowercase_output_label_names: bool,
    rules: Vec<JmxRule>,
}

/// One rule. The exporter matches `pattern` (unanchored) against
/// `domain<key=value, ...><>attribute: value` and the first matching rule
/// wins, so specific rules come before generic ones.
#[derive(Debug, Serialize)]
struct JmxRule {
    pattern: &'static str,
    name: &'static str,
    #[serde(rename = "type")]
    kind: MetricType,
    /// A fixed value, for string attributes turned into labels.
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<u8>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<&'static str, &'static str>,
}

#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "UPPERCASE")]
enum MetricType {
    Gauge,
    Counter,
}

fn rule(
    pattern: &'static str,
    name: &'static str,
    kind: MetricType,
    labels: &[(&'static str, &'static str)],
) -> JmxRule {
    JmxRule {
        pattern,
        name,
        kind,
        value: None,
        labels: labels.iter().copied().collect(),
    }
}

/// A string attribute (a state) as a gauge of 1 labelled with the state.
fn state_rule(
    pattern: &'static str,
    name: &'static str,
    labels: &[(&'static str, &'static str)],
) -> JmxRule {
    JmxRule {
        value: Some(1),
        ..rule(pattern, name, MetricType::Gauge, labels)
    }
}

fn kafka_server_rules() -> Vec<JmxRule> {
    use MetricType::{Counter, Gauge};
    vec![
        // Keeps `version` as a label: without it, the per-version meters of
        // one request type would collide as one series and fail the scrape.
        rule(
            r"kafka.network<type=RequestMetrics, name=RequestsPerSec, request=(.+), version=(.+)><>Count",
            "kafka_network_requestmetrics_requests_total",
            Counter,
            &[("request", "$1"), ("version", "$2")],
        ),
        // Meters (`…PerSec`) become counters named without the suffix:
        // BytesInPerSec -> kafka_server_brokertopicmetrics_bytesin_total.
        rule(
            r"kafka.(\w+)<type=(.+), name=(.+)PerSec\w*, (.+)=(.+), (.+)=(.+)><>Count",
            "kafka_$1_$2_$3_total",
            Counter,
            &[("$4", "$5"), ("$6", "$7")],
        ),
        rule(
            r"kafka.(\w+)<type=(.+), name=(.+)PerSec\w*, topic=(.+)><>Count",
            "kafka_$1_$2_$3_total",
            Counter,
            &[("topic", "$4")],
        ),
        rule(
            r"kafka.(\w+)<type=(.+), name=(.+)PerSec\w*, (.+)=(.+)><>Count",
            "kafka_$1_$2_$3_total",
            Counter,
            &[("$4", "$5")],
        ),
        rule(
            r"kafka.(\w+)<type=(.+), name=(.+)PerSec\w*><>Count",
            "kafka_$1_$2_$3_total",
            Counter,
            &[],
        ),
        // Gauges, most tags first: `(.+)` also matches across `, `, so the
        // tag-less rule would swallow tagged beans if it came earlier.
        rule(
            r"kafka.(\w+)<type=(.+), name=(.+), (.+)=(.+), (.+)=(.+)><>Value",
            "kafka_$1_$2_$3",
            Gauge,
            &[("$4", "$5"), ("$6", "$7")],
        ),
        rule(
            r"kafka.(\w+)<type=(.+), name=(.+), (.+)=(.+)><>Value",
            "kafka_$1_$2_$3",
            Gauge,
            &[("$4", "$5")],
        ),
        rule(
            r"kafka.(\w+)<type=(.+), name=(.+)><>Value",
            "kafka_$1_$2_$3",
            Gauge,
            &[],
        ),
        // KRaft. The exporter turns `-` into `_`: high-watermark -> high_watermark.
        state_rule(
            r"kafka.server<type=raft-metrics><>current-state: ([a-z-]+)",
            "kafka_server_raftmetrics_current_state",
            &[("state", "$1")],
        ),
        rule(
            r"kafka.server<type=raft-metrics><>([a-z-]+)",
            "kafka_server_raftmetrics_$1",
            Gauge,
            &[],
        ),
        rule(
            r"kafka.server<type=broker-metadata-metrics><>([a-z-]+)",
            "kafka_server_brokermetadatametrics_$1",
            Gauge,
            &[],
        ),
    ]
}

fn connect_worker_rules() -> Vec<JmxRule> {
    use MetricType::Gauge;
    vec![
        state_rule(
            r"kafka.connect<type=connector-metrics, connector=(.+)><>status: ([a-z-]+)",
            "kafka_connect_connector_status",
            &[("connector", "$1"), ("status", "$2")],
        ),
        state_rule(
            r"kafka.connect<type=connector-task-metrics, connector=(.+), task=(.+)><>status: ([a-z-]+)",
            "kafka_connect_connector_task_status",
            &[("connector", "$1"), ("task", "$2"), ("status", "$3")],
        ),
        rule(
            r"kafka.connect<type=connect-worker-metrics, connector=(.+)><>([a-z-]+)",
            "kafka_connect_connect_worker_metrics_$2",
            Gauge,
            &[("connector", "$1")],
        ),
        rule(
            r"kafka.connect<type=connect-worker-metrics><>([a-z-]+)",
            "kafka_connect_connect_worker_metrics_$1",
            Gauge,
            &[],
        ),
        rule(
            r"kafka.connect<type=connect-worker-rebalance-metrics><>([a-z-]+)",
            "kafka_connect_connect_worker_rebalance_metrics_$1",
            Gauge,
            &[],
        ),
        rule(
            r"kafka.connect<type=(sink-task-metrics|source-task-metrics|task-error-metrics), connector=(.+), task=(.+)><>([a-z-]+)",
            "kafka_connect_$1_$4",
            Gauge,
            &[("connector", "$2"), ("task", "$3")],
        ),
    ]
}

/// [`layout::JMX_EXPORTER_CONFIG`], serialized from typed rules so a
/// pattern can never break the YAML. Read only at JVM start.
pub(crate) fn jmx_exporter_config(rules: JmxRules, unit: &str) -> Result<PlannedFile, RenderError> {
    let file = layout::JMX_EXPORTER_CONFIG;
    let config = JmxExporterConfig {
        lowercase_output_name: true,
        lowercase_output_label_names: true,
        rules: match rules {
            JmxRules::KafkaServer => kafka_server_rules(),
            JmxRules::ConnectWorker => connect_worker_rules(),
        },
    };
    // One line per pattern, never a folded block: a regex should read (and
    // grep) exactly as the exporter sees it.
    let options = serde_saphyr::ser_options! { prefer_block_scalars: false };
    let body = serde_saphyr::to_string_with_options(&config, options)
        .map_err(|e| invalid(file, e.to_string()))?;
    Ok(PlannedFile::config(
        file,
        format!("# {MANAGED_HEADER}\n{body}"),
        OnChange::Restart(unit.to_owned()),
    ))
}

// ------------------------------------------------------------------ units

/// One word of an `ExecStart=` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ExecArg {
    /// Passed as is (quoted for systemd when needed).
    Literal(String),
    /// `${NAME}`: systemd substitutes the variable's value as exactly one argument.
    Env(&'static str),
}

pub(crate) fn exec_line(args: &[ExecArg]) -> String {
    args.iter()
        .map(|a| match a {
            ExecArg::Literal(text) => quote_arg(text),
            ExecArg::Env(name) => format!("${{{name}}}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn literal(text: impl Into<String>) -> ExecArg {
    ExecArg::Literal(text.into())
}

pub(crate) fn install_bin(ctx: &Ctx<'_>, script: &str) -> String {
    format!(
        "{}/bin/{script}",
        ctx.model.cluster.kafka.install_dir.as_str()
    )
}

/// The `ExecStart=` of a long-running Kafka JVM: `script` of the installed
/// distribution with `args`, started from the version directory that
/// `install_dir` points to *at start*. The agent switches the `install_dir`
/// symlink when a new Kafka version is installed, which is before the
/// node's gated restart; a JVM whose classpath went through the symlink
/// would then load classes from the new version's jars. Resolved first,
/// the running JVM keeps reading the jars it started with (the agent keeps
/// the previous version's directory).
pub(crate) fn jvm_exec(ctx: &Ctx<'_>, script: &str, args: &[&str]) -> String {
    let install_dir = ctx.model.cluster.kafka.install_dir.as_str();
    let mut line = vec![
        literal("/bin/sh"),
        literal("-c"),
        literal(format!(
            "exec \"$(readlink -f -- {install_dir})/bin/{script}\" \"$@\""
        )),
        literal(script),
    ];
    line.extend(args.iter().map(|a| literal(*a)));
    exec_line(&line)
}

/// What a long-running Kafka JVM unit (broker, controller, Connect worker) runs.
pub(crate) struct JvmService<'a> {
    pub unit: &'static str,
    pub description: String,
    /// `ExecStart=`, already quoted.
    pub exec_start: String,
    pub timeout_stop_secs: u32,
    /// The one-shot format unit that must have run first, if any.
    pub requires_format: bool,
    pub comments: &'a [&'a str],
}

/// A long-running Kafka JVM as the `kafka` user. Light sandboxing only: no
/// `PrivateTmp` (it would hide the JVM from `jcmd`/`jstack`) and no
/// `MemoryDenyWriteExecute` (the JIT needs writable code pages).
pub(crate) fn jvm_unit(service: &JvmService<'_>) -> Result<PlannedUnit, RenderError> {
    let mut unit = UnitFile::new().comment(MANAGED_HEADER);
    for line in service.comments {
        unit = unit.comment(line);
    }
    let mut after = "network-online.target".to_owned();
    if service.requires_format {
        after.push(' ');
        after.push_str(layout::FORMAT_UNIT);
    }
    unit = unit
        .section("Unit")
        .set("Description", service.description.as_str())
        .set("Documentation", "https://kafka.apache.org/documentation/")
        .set("Wants", "network-online.target")
        .set("After", after);
    if service.requires_format {
        unit = unit.set("Requires", layout::FORMAT_UNIT);
    }
    let contents = unit
        .section("Service")
        .set("Type", "simple")
        .set("User", layout::KAFKA_USER)
        .set("Group", layout::KAFKA_USER)
        .set("WorkingDirectory", layout::KAFKA_HOME)
        .set("EnvironmentFile", layout::KAFKA_ENV)
        .set("ExecStart", service.exec_start.as_str())
        .set("Restart", "on-failure")
        .set("RestartSec", "10s")
        .set("TimeoutStopSec", service.timeout_stop_secs.to_string())
        // The JVM exits 143 (128 + SIGTERM) after a clean shutdown.
        .set("SuccessExitStatus", "143")
        .set("LimitNOFILE", LIMIT_NOFILE)
        .set("ProtectSystem", "full")
        .sandbox()
        .section("Install")
        .set("WantedBy", "multi-user.target")
        .render(service.unit)?;
    Ok(PlannedUnit {
        name: service.unit.to_owned(),
        contents,
        enable: true,
        start: true,
        kafka: true,
    })
}

/// `kafka.service` of a broker or controller.
pub(crate) fn kafka_server_unit(ctx: &Ctx<'_>, role: &str) -> Result<PlannedUnit, RenderError> {
    jvm_unit(&JvmService {
        unit: layout::KAFKA_UNIT,
        description: format!("Apache Kafka {role} {}", ctx.node.name.as_str()),
        exec_start: jvm_exec(ctx, "kafka-server-start.sh", &[layout::SERVER_PROPERTIES]),
        // A broker waits up to 5 minutes for the controller to approve its
        // controlled shutdown; SIGKILL inside that window means an unclean
        // shutdown and a long log recovery at the next start.
        timeout_stop_secs: 600,
        requires_format: true,
        comments: &[
            "TimeoutStopSec exceeds the 5 minutes Kafka waits for controlled shutdown approval.",
        ],
    })
}

/// `kafka-storage-format.service`: formats this node's storage exactly
/// once. It is skipped as soon as `meta.properties` exists in `data_dir`,
/// and never passes `--ignore-formatted`: formatting an existing node again
/// could let a controller majority start empty and lose committed metadata.
pub(crate) fn format_unit(
    ctx: &Ctx<'_>,
    data_dir: &str,
    extra_args: &[ExecArg],
) -> Result<PlannedUnit, RenderError> {
    // Credentials come from the 0600 environment file, never the unit itself.
    let environment_file = extra_args.iter().any(|a| matches!(a, ExecArg::Env(_)));
    let mut args = vec![
        literal(install_bin(ctx, "kafka-storage.sh")),
        literal("format"),
        literal("--config"),
        literal(layout::SERVER_PROPERTIES),
        literal("--cluster-id"),
        literal(ctx.model.cluster.kraft_cluster_id.as_str()),
    ];
    args.extend_from_slice(extra_args);
    let mut unit = UnitFile::new()
        .comment(MANAGED_HEADER)
        .comment("Runs once per node: skipped once meta.properties exists; never re-formats.")
        .section("Unit")
        .set(
            "Description",
            format!(
                "Format the Kafka storage of {} (once)",
                ctx.node.name.as_str()
            ),
        )
        .set(
            "Documentation",
            "https://kafka.apache.org/documentation/#kraft_storage",
        )
        .set(
            "ConditionPathExists",
            format!("!{data_dir}/meta.properties"),
        )
        .set("Before", layout::KAFKA_UNIT)
        .section("Service")
        .set("Type", "oneshot")
        .set("RemainAfterExit", "yes")
        .set("User", layout::KAFKA_USER)
        .set("Group", layout::KAFKA_USER)
        .set("WorkingDirectory", layout::KAFKA_HOME)
        .set("Environment", format!("LOG_DIR={}", layout::KAFKA_LOG_DIR));
    if environment_file {
        unit = unit.set("EnvironmentFile", layout::FORMAT_ENV);
    }
    let contents = unit
        .set("ExecStart", exec_line(&args))
        .set("TimeoutStartSec", "300")
        .set("ProtectProc", "invisible")
        .set("ProtectSystem", "full")
        .sandbox()
        .render(layout::FORMAT_UNIT)?;
    Ok(PlannedUnit {
        name: layout::FORMAT_UNIT.to_owned(),
        contents,
        // Started only through kafka.service's Requires=.
        enable: false,
        start: false,
        kafka: false,
    })
}

// ------------------------------------------------- artifacts, certificate

/// The Kafka distribution and, when a URL is given, the JMX exporter jar.
/// A new version of either needs a restart of `unit`.
pub(crate) fn artifacts(ctx: &Ctx<'_>, unit: &str) -> Vec<Artifact> {
    let kafka = &ctx.model.cluster.kafka;
    let on_change = OnChange::Restart(unit.to_owned());
    let mut out = Vec::new();
    out.push(match &kafka.distribution.value {
        Distribution::Tarball {
            url,
            sha512,
            sha512_url,
        } => Artifact {
            name: "kafka".to_owned(),
            url: url.to_string(),
            sha512: sha512.as_ref().map(ToString::to_string),
            sha512_url: sha512_url.as_ref().map(ToString::to_string),
            install_to: kafka.install_dir.to_string(),
            unpack: true,
            on_change: on_change.clone(),
            apt: None,
        },
        Distribution::Apt {
            source,
            package,
            version,
        } => Artifact {
            name: "kafka".to_owned(),
            url: String::new(),
            sha512: None,
            sha512_url: None,
            install_to: kafka.install_dir.to_string(),
            unpack: false,
            on_change: on_change.clone(),
            apt: Some(AptPackage {
                source: source.to_string(),
                package: package.to_string(),
                version: version.as_ref().map(ToString::to_string),
            }),
        },
    });
    if let Some(url) = &kafka.jmx_exporter.url {
        out.push(Artifact {
            name: "jmx-exporter".to_owned(),
            url: url.to_string(),
            sha512: kafka.jmx_exporter.sha512.as_ref().map(ToString::to_string),
            sha512_url: None,
            install_to: kafka.jmx_exporter.jar.to_string(),
            unpack: false,
            on_change,
            apt: None,
        });
    }
    out
}

/// The node's certificate: CN is the node name (its mTLS principal), SANs
/// its host name and private address, which clients and peers verify.
pub(crate) fn certificate(ctx: &Ctx<'_>, on_change: OnChange) -> CertificateRequest {
    let ca = &ctx.model.cluster.security.ca;
    CertificateRequest {
        name: "kafka".to_owned(),
        common_name: ctx.node.name.to_string(),
        dns_names: vec![ctx.host()],
        ip_addresses: vec![ctx.node.address.value],
        keystore_path: layout::KEYSTORE.to_owned(),
        owner: layout::KAFKA_USER.to_owned(),
        group: layout::KAFKA_USER.to_owned(),
        validity_seconds: ca.cert_validity.as_secs(),
        renew_before_seconds: ca.renew_before.as_secs(),
        on_change: vec![on_change],
    }
}
