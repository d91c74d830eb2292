//! A distributed Kafka Connect worker: `connect-distributed.properties`
//! (SASL_SSL/SCRAM-SHA-512 for the worker and every client it creates), its
//! password file and `kafka-connect.service` with the JMX exporter.

use crate::kafka::{self, JmxRules, JvmService, Props, SCRAM_MECHANISM, set};
use crate::layout::{self, MANAGED_HEADER};
use crate::{Ctx, OnChange, Plan, PlannedFile, RenderError, properties};

/// The worker itself (no prefix) and the clients it creates for connectors.
const CLIENT_PREFIXES: [&str; 4] = ["", "producer.", "consumer.", "admin."];

pub(crate) fn render(ctx: &Ctx<'_>, plan: &mut Plan) -> Result<(), RenderError> {
    let cluster = &ctx.model.cluster;
    let spec = &cluster.connect;
    let ports = ctx.ports();
    let user = &spec.user.value;
    let rf = cluster.topic_defaults.replication_factor.value.to_string();
    let unit = layout::CONNECT_UNIT;

    let mut props = Props::new();
    set(&mut props, "bootstrap.servers", ctx.bootstrap_servers());
    set(&mut props, "group.id", spec.group_id.as_str());
    for (kind, topic) in [
        ("config", &spec.config_topic),
        ("offset", &spec.offset_topic),
        ("status", &spec.status_topic),
    ] {
        set(&mut props, format!("{kind}.storage.topic"), topic.as_str());
        set(
            &mut props,
            format!("{kind}.storage.replication.factor"),
            rf.as_str(),
        );
    }
    // Defaults that connector authors expect; `connect.settings` may override them.
    for side in ["key", "value"] {
        set(
            &mut props,
            format!("{side}.converter"),
            "org.apache.kafka.connect.json.JsonConverter",
        );
        set(
            &mut props,
            format!("{side}.converter.schemas.enable"),
            "false",
        );
    }
    let jaas = kafka::scram_login(user.as_str());
    for prefix in CLIENT_PREFIXES {
        set(&mut props, format!("{prefix}security.protocol"), "SASL_SSL");
        set(
            &mut props,
            format!("{prefix}sasl.mechanism"),
            SCRAM_MECHANISM,
        );
        set(
            &mut props,
            format!("{prefix}sasl.jaas.config"),
            jaas.as_str(),
        );
        kafka::pem_truststore(&mut props, prefix);
    }
    set(
        &mut props,
        "listeners",
        format!("http://{}:{}", ctx.node.address.value, ports.connect_rest),
    );
    set(&mut props, "rest.advertised.host.name", ctx.host());
    set(
        &mut props,
        "rest.advertised.port",
        ports.connect_rest.to_string(),
    );
    // The FileStream connectors ship in Apache's tarball but, as in
    // Apache's own scripts, off the worker's classpath: Connect finds them
    // through plugin.path (the jar's name carries the version, so an
    // upgrade renders the new one).
    let mut plugin_path: Vec<String> = spec.plugin_path.iter().map(ToString::to_string).collect();
    if let desired_state::Distribution::Tarball { .. } = &cluster.kafka.distribution.value {
        plugin_path.push(format!(
            "{}/libs/connect-file-{}.jar",
            cluster.kafka.install_dir.as_str(),
            cluster.kafka.version.as_str()
        ));
    }
    set(&mut props, "plugin.path", plugin_path.join(","));
    // Sink connectors fetch from a replica in the worker's own AZ.
    set(&mut props, "consumer.client.rack", ctx.node.az.as_str());
    kafka::file_config_provider(&mut props);
    kafka::merge_settings(&mut props, &spec.settings, &ctx.node.settings);

    plan.directories
        .extend(spec.plugin_path.iter().map(|p| crate::PlannedDir {
            path: p.to_string(),
            mode: 0o755,
            owner: "root".to_owned(),
            group: "root".to_owned(),
        }));
    plan.files.extend([
        PlannedFile::config(
            layout::CONNECT_PROPERTIES,
            properties::render(MANAGED_HEADER, &props),
            OnChange::Restart(unit.to_owned()),
        ),
        kafka::secrets_file(ctx, user, unit)?,
        kafka::kafka_env(ctx, &spec.heap, ports.connect_jmx, unit)?,
        kafka::jmx_exporter_config(JmxRules::ConnectWorker, unit)?,
    ]);
    plan.units.push(kafka::jvm_unit(&JvmService {
        unit,
        description: format!("Kafka Connect worker {}", ctx.node.name.as_str()),
        exec_start: kafka::jvm_exec(ctx, "connect-distributed.sh", &[layout::CONNECT_PROPERTIES]),
        // Stopping tasks and leaving the group takes seconds, not minutes.
        timeout_stop_secs: 180,
        requires_format: false,
        comments: &[],
    })?);
    plan.artifacts.extend(kafka::artifacts(ctx, unit));
    plan.certificates
        .push(kafka::certificate(ctx, OnChange::Restart(unit.to_owned())));
    Ok(())
}
