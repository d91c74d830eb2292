//! A broker: SASL_SSL/SCRAM-SHA-512 listeners for clients (`CLIENT`) and
//! replication (`INTERNAL`), rack awareness from the node's AZ, and the
//! client side of the controllers' mutual TLS.

use crate::kafka::{self, CONTROLLER_LISTENER, JmxRules, SCRAM_MECHANISM, set};
use crate::layout;
use crate::{Ctx, OnChange, Plan, RenderError};

const INTERNAL: &str = "INTERNAL";
const CLIENT: &str = "CLIENT";

pub(crate) fn render(ctx: &Ctx<'_>, plan: &mut Plan) -> Result<(), RenderError> {
    let cluster = &ctx.model.cluster;
    let spec = &cluster.broker;
    let ports = ctx.ports();
    let defaults = &cluster.topic_defaults;
    let address = ctx.node.address.value;
    let host = ctx.host();
    let inter_broker_user = &cluster.security.inter_broker_user.value;
    let log_dirs: Vec<&str> = spec.log_dirs.iter().map(|d| d.as_str()).collect();
    let first_log_dir = *log_dirs.first().ok_or_else(|| {
        kafka::invalid(
            layout::SERVER_PROPERTIES,
            "broker.log_dirs lists no directory",
        )
    })?;

    let mut props = kafka::server_common(ctx)?;
    set(&mut props, "process.roles", "broker");
    set(&mut props, "broker.rack", ctx.node.az.as_str());
    set(
        &mut props,
        "listeners",
        format!(
            "{INTERNAL}://{address}:{},{CLIENT}://{address}:{}",
            ports.internal, ports.client
        ),
    );
    set(
        &mut props,
        "advertised.listeners",
        format!(
            "{INTERNAL}://{host}:{},{CLIENT}://{host}:{}",
            ports.internal, ports.client
        ),
    );
    set(
        &mut props,
        "listener.security.protocol.map",
        format!("{CONTROLLER_LISTENER}:SSL,{INTERNAL}:SASL_SSL,{CLIENT}:SASL_SSL"),
    );
    set(&mut props, "inter.broker.listener.name", INTERNAL);
    set(
        &mut props,
        "sasl.mechanism.inter.broker.protocol",
        SCRAM_MECHANISM,
    );
    let jaas_key = format!("{}.sasl.jaas.config", SCRAM_MECHANISM.to_ascii_lowercase());
    for (listener, jaas) in [
        // Brokers log in to each other as the inter-broker user.
        (INTERNAL, kafka::scram_login(inter_broker_user.as_str())),
        (CLIENT, kafka::scram_server_only()),
    ] {
        let prefix = kafka::listener_prefix(listener);
        set(
            &mut props,
            format!("{prefix}sasl.enabled.mechanisms"),
            SCRAM_MECHANISM,
        );
        set(&mut props, format!("{prefix}{jaas_key}"), jaas);
        kafka::pem_keystore(&mut props, &prefix);
        kafka::pem_truststore(&mut props, &prefix);
    }
    kafka::file_config_provider(&mut props);
    set(&mut props, "log.dirs", log_dirs.join(","));
    // Consumers that set client.rack fetch from a replica in their own AZ.
    set(
        &mut props,
        "replica.selector.class",
        "org.apache.kafka.common.replica.RackAwareReplicaSelector",
    );
    // Internal topics are created by the first broker that needs them; a
    // replication factor above the broker count would stall that forever.
    let brokers = u16::try_from(ctx.model.brokers().count()).unwrap_or(u16::MAX);
    let internal_rf = defaults.replication_factor.value.min(brokers).max(1);
    set(
        &mut props,
        "offsets.topic.replication.factor",
        internal_rf.to_string(),
    );
    set(
        &mut props,
        "transaction.state.log.replication.factor",
        internal_rf.to_string(),
    );
    set(
        &mut props,
        "transaction.state.log.min.isr",
        defaults
            .min_insync_replicas
            .value
            .min(internal_rf)
            .to_string(),
    );
    kafka::merge_settings(&mut props, &spec.settings, &ctx.node.settings);

    plan.directories
        .extend(log_dirs.iter().map(|d| kafka::kafka_dir(d)));
    plan.files.extend([
        kafka::server_properties(&props, OnChange::KafkaConfig(layout::KAFKA_UNIT.to_owned())),
        kafka::secrets_file(ctx, inter_broker_user, layout::KAFKA_UNIT)?,
        kafka::kafka_env(ctx, &spec.heap, ports.broker_jmx, layout::KAFKA_UNIT)?,
        kafka::jmx_exporter_config(JmxRules::KafkaServer, layout::KAFKA_UNIT)?,
        kafka::controller_client_properties(),
    ]);
    plan.units.push(kafka::kafka_server_unit(ctx, "broker")?);
    // No quorum flags and no credentials: brokers join the quorum the
    // controllers formed, and SCRAM users live in the controllers' metadata.
    plan.units
        .push(kafka::format_unit(ctx, first_log_dir, &[])?);
    plan.artifacts
        .extend(kafka::artifacts(ctx, layout::KAFKA_UNIT));
    // Listener keystores are per-broker dynamic configs: rotated in place.
    plan.certificates.push(kafka::certificate(
        ctx,
        OnChange::KafkaDynamicReload(layout::KAFKA_UNIT.to_owned()),
    ));
    Ok(())
}
