//! What every node gets whatever its role: the cluster CA, `/etc/hosts`
//! naming every node, node_exporter,
//! the agent's own unit, and on Kafka JVM nodes the `kafka` user with the
//! directories Kafka runs in.

use desired_state::{Distribution, Role};

use crate::kafka;
use crate::layout::{self, MANAGED_HEADER};
use crate::systemd::{UnitFile, quote_arg};
use crate::{Ctx, OnChange, Plan, PlannedDir, PlannedFile, PlannedUnit, RenderError, SystemUser};

pub(crate) fn render(ctx: &Ctx<'_>, plan: &mut Plan) -> Result<(), RenderError> {
    let role = ctx.role();
    // Debian's packaged node_exporter would bind the same port as ours.
    plan.masked_units
        .push("prometheus-node-exporter.service".to_owned());
    plan.directories.push(root_dir(layout::KAFKA_ETC));
    // World-readable: it holds only the public CA; node keys are 0600 files.
    plan.directories.push(root_dir(layout::TLS_DIR));
    plan.files.push(PlannedFile::config(
        layout::TRUSTSTORE,
        ctx.model.ca_certificate.clone(),
        ca_on_change(role),
    ));
    if runs_kafka_jvm(role) {
        plan.users.push(SystemUser {
            name: layout::KAFKA_USER.to_owned(),
            home: layout::KAFKA_HOME.to_owned(),
        });
        plan.directories.push(kafka::kafka_dir(layout::KAFKA_HOME));
        plan.directories
            .push(kafka::kafka_dir(layout::KAFKA_LOG_DIR));
    }
    plan.files.push(PlannedFile::config(
        layout::HOSTS,
        hosts(ctx.model),
        OnChange::Nothing,
    ));
    plan.units.push(node_exporter_unit(ctx)?);
    plan.units.push(agent_unit(ctx)?);
    Ok(())
}

/// `/etc/hosts`: loopback, then every node as `<address> <fqdn> <name>`, in
/// `nodes.yaml` order. The user-data writes the same bytes, so a new
/// machine's first reconcile leaves it alone; a node added later reaches
/// every machine's file with the next commit.
pub(crate) fn hosts(model: &desired_state::Model) -> String {
    let mut text = format!(
        "# {MANAGED_HEADER}\n# Every node of nodes.yaml: there is no DNS for the cluster's names.\n\
         127.0.0.1 localhost\n\
         ::1 localhost ip6-localhost ip6-loopback\n"
    );
    for node in model.nodes.iter().map(|n| &n.value) {
        text.push_str(&format!(
            "{} {} {}\n",
            node.address.value,
            model.fqdn(node),
            node.name.as_str()
        ));
    }
    text
}

/// Whether the node runs a Kafka JVM (and so the `kafka` user).
fn runs_kafka_jvm(role: Role) -> bool {
    matches!(role, Role::Controller | Role::Broker | Role::Connect)
}

/// Who reads the CA and what a new one needs. Brokers reload listener
/// truststores through the Admin API; a controller's own listener does not
/// reload reliably (Kafka lists it as a missing KRaft feature), so it restarts.
fn ca_on_change(role: Role) -> OnChange {
    match role {
        Role::Broker => OnChange::KafkaDynamicReload(layout::KAFKA_UNIT.to_owned()),
        Role::Controller => OnChange::Restart(layout::KAFKA_UNIT.to_owned()),
        Role::Connect => OnChange::Restart(layout::CONNECT_UNIT.to_owned()),
        Role::Observability => OnChange::Restart(layout::COORDINATOR_UNIT.to_owned()),
    }
}

fn root_dir(path: &str) -> PlannedDir {
    PlannedDir {
        path: path.to_owned(),
        mode: 0o755,
        owner: "root".to_owned(),
        group: "root".to_owned(),
    }
}

/// node_exporter from Debian, on the private address only. A dynamic user
/// is enough for a process that only reads `/proc` and `/sys`.
fn node_exporter_unit(ctx: &Ctx<'_>) -> Result<PlannedUnit, RenderError> {
    let listen = format!(
        "--web.listen-address={}:{}",
        ctx.node.address.value,
        ctx.ports().node_exporter
    );
    let contents = UnitFile::new()
        .comment(MANAGED_HEADER)
        .section("Unit")
        .set("Description", "Prometheus node_exporter")
        .set(
            "Documentation",
            "https://github.com/prometheus/node_exporter",
        )
        .set("Wants", "network-online.target")
        .set("After", "network-online.target")
        .section("Service")
        .set("Type", "simple")
        .set("DynamicUser", "yes")
        .set(
            "ExecStart",
            format!(
                "{} {}",
                quote_arg(layout::NODE_EXPORTER_BIN),
                quote_arg(&listen)
            ),
        )
        .set("Restart", "always")
        .set("RestartSec", "5s")
        .set("ProtectSystem", "strict")
        // Read-only, not hidden: filesystem metrics cover /home too.
        .set("ProtectHome", "read-only")
        .set(
            "RestrictAddressFamilies",
            "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        )
        .set("MemoryDenyWriteExecute", "yes")
        .set("CapabilityBoundingSet", "")
        .sandbox()
        .section("Install")
        .set("WantedBy", "multi-user.target")
        .render(layout::NODE_EXPORTER_UNIT)?;
    Ok(PlannedUnit {
        name: layout::NODE_EXPORTER_UNIT.to_owned(),
        contents,
        enable: true,
        start: true,
        kafka: false,
    })
}

/// Capabilities a root agent never needs: it writes files, manages users
/// and talks to systemd, nothing lower-level.
const AGENT_DROPPED_CAPABILITIES: &str = "~CAP_SYS_ADMIN CAP_SYS_MODULE CAP_SYS_RAWIO CAP_SYS_PTRACE \
CAP_SYS_BOOT CAP_SYS_TIME CAP_SYS_PACCT CAP_SYS_TTY_CONFIG CAP_NET_ADMIN CAP_NET_RAW CAP_MKNOD \
CAP_MAC_ADMIN CAP_MAC_OVERRIDE CAP_LINUX_IMMUTABLE CAP_AUDIT_CONTROL CAP_SYSLOG CAP_WAKE_ALARM \
CAP_BLOCK_SUSPEND CAP_BPF CAP_PERFMON";

/// `kraftops-agent.service`. The agent runs as root because it writes
/// `/etc` (configs, units), `/opt` (Kafka), `/var/lib` and `/var/log`,
/// creates users and calls `systemctl`; everything else is read-only or
/// hidden. `Type=notify` with a watchdog: a hung reconcile loop is
/// restarted, and the agent never gives up (`Restart=always`, no start limit).
fn agent_unit(ctx: &Ctx<'_>) -> Result<PlannedUnit, RenderError> {
    // Installing Kafka from apt writes /usr and /var/cache and may install
    // setuid helpers; only then does the agent get those.
    let installs_from_apt = runs_kafka_jvm(ctx.role())
        && matches!(
            ctx.model.cluster.kafka.distribution.value,
            Distribution::Apt { .. }
        );
    let mut writable = vec!["/etc", "/var/lib", "/var/log", "-/opt"];
    if installs_from_apt {
        writable.extend(["/usr", "/var/cache"]);
    }
    let exec = [layout::AGENT_BIN, "run", "--config", layout::AGENT_CONFIG]
        .map(quote_arg)
        .join(" ");
    let unit = UnitFile::new()
        .comment(MANAGED_HEADER)
        .comment("No MemoryDenyWriteExecute: the agent runs Kafka's (Java) CLI tools.")
        .section("Unit")
        .set(
            "Description",
            "kraftops agent: keeps this node in line with the desired-state repository",
        )
        .set("Wants", "network-online.target")
        .set("After", "network-online.target")
        .set("StartLimitIntervalSec", "0")
        .section("Service")
        .set("Type", "notify")
        .set("NotifyAccess", "main")
        .set("ExecStart", exec)
        .set("WatchdogSec", "60s")
        .set("Restart", "always")
        .set("RestartSec", "5s")
        .set("TimeoutStartSec", "120s")
        .set("ProtectSystem", "strict")
        .set("ReadWritePaths", writable.join(" "))
        .set("ProtectHome", "yes")
        .set(
            "RestrictAddressFamilies",
            "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        )
        .set("SystemCallFilter", "@system-service")
        .set("SystemCallErrorNumber", "EPERM")
        .set("CapabilityBoundingSet", AGENT_DROPPED_CAPABILITIES);
    let unit = if installs_from_apt {
        unit.sandbox_for_package_installs()
    } else {
        unit.sandbox()
    };
    let contents = unit
        .section("Install")
        .set("WantedBy", "multi-user.target")
        .render(layout::AGENT_UNIT)?;
    Ok(PlannedUnit {
        name: layout::AGENT_UNIT.to_owned(),
        contents,
        enable: true,
        start: true,
        kafka: false,
    })
}
