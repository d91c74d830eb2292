//! A dedicated KRaft controller: the mutual-TLS controller listener, the
//! dynamic quorum, and the one-time storage format that seeds the quorum's
//! voters and the first SCRAM credentials.

use crate::kafka::{self, CONTROLLER_LISTENER, JmxRules, literal, set};
use crate::layout;
use crate::{Ctx, OnChange, Plan, RenderError};

pub(crate) fn render(ctx: &Ctx<'_>, plan: &mut Plan) -> Result<(), RenderError> {
    let cluster = &ctx.model.cluster;
    let spec = &cluster.controller;
    let port = ctx.ports().controller;
    let metadata_dir = spec.metadata_dir.as_str();
    let restart = OnChange::Restart(layout::KAFKA_UNIT.to_owned());

    let mut props = kafka::server_common(ctx)?;
    set(&mut props, "process.roles", "controller");
    set(
        &mut props,
        "listeners",
        format!("{CONTROLLER_LISTENER}://{}:{port}", ctx.node.address.value),
    );
    set(
        &mut props,
        "advertised.listeners",
        format!("{CONTROLLER_LISTENER}://{}:{port}", ctx.host()),
    );
    set(
        &mut props,
        "listener.security.protocol.map",
        format!("{CONTROLLER_LISTENER}:SSL"),
    );
    // Controllers cannot authenticate each other with SCRAM; every peer on
    // this listener (controller or broker) proves itself with its certificate.
    set(
        &mut props,
        format!(
            "{}ssl.client.auth",
            kafka::listener_prefix(CONTROLLER_LISTENER)
        ),
        "required",
    );
    set(&mut props, "metadata.log.dir", metadata_dir);
    set(&mut props, "log.dirs", metadata_dir);
    kafka::merge_settings(&mut props, &spec.settings, &ctx.node.settings);

    let (format_env, scram_args) = kafka::format_env(ctx)?;
    let mut format_args = vec![
        literal("--initial-controllers"),
        literal(initial_controllers(ctx)?),
    ];
    format_args.extend(scram_args);

    plan.directories.push(kafka::kafka_dir(metadata_dir));
    plan.files.extend([
        // Controllers restart for any change: their dynamic configs are not
        // applied live (a gated restart keeps the quorum's majority).
        kafka::server_properties(&props, restart.clone()),
        format_env,
        kafka::kafka_env(
            ctx,
            &spec.heap,
            ctx.ports().controller_jmx,
            layout::KAFKA_UNIT,
        )?,
        kafka::jmx_exporter_config(JmxRules::KafkaServer, layout::KAFKA_UNIT)?,
        kafka::controller_client_properties(),
    ]);
    plan.units
        .push(kafka::kafka_server_unit(ctx, "controller")?);
    plan.units
        .push(kafka::format_unit(ctx, metadata_dir, &format_args)?);
    plan.artifacts
        .extend(kafka::artifacts(ctx, layout::KAFKA_UNIT));
    // A controller's own listener does not reload certificates reliably, so
    // a new one means a (gated) restart.
    plan.certificates.push(kafka::certificate(ctx, restart));
    Ok(())
}

/// `--initial-controllers`, the same string on every controller: all
/// voters at once, each with the directory id from `nodes.yaml`.
fn initial_controllers(ctx: &Ctx<'_>) -> Result<String, RenderError> {
    let voters = ctx.initial_controllers();
    let expected = ctx.model.controllers().count();
    let found = if voters.is_empty() {
        0
    } else {
        voters.split(',').count()
    };
    if found != expected {
        return Err(kafka::invalid(
            layout::FORMAT_UNIT,
            format!("{found} of {expected} controllers have both node_id and directory_id"),
        ));
    }
    Ok(voters)
}
