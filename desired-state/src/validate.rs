//! Cross-checks over a parsed repository: everything serde cannot see from
//! one value alone. Each check adds diagnostics and goes on, so the operator
//! gets every problem in one run.

use std::collections::{BTreeMap, BTreeSet};

use crate::Model;
use crate::diagnostic::Diagnostic;
use crate::located::{Located, Pos};
use crate::model::*;
use crate::types::{Name, PropertyKey};

/// `server.properties` keys kraftops derives itself; setting them by hand
/// would fight the renderer. Entries ending in `.` are prefixes.
pub const SERVER_MANAGED: &[&str] = &[
    "node.id",
    "broker.id",
    "process.roles",
    "listeners",
    "advertised.listeners",
    "listener.security.protocol.map",
    "inter.broker.listener.name",
    "controller.listener.names",
    "controller.quorum.voters",
    "controller.quorum.bootstrap.servers",
    "log.dir",
    "log.dirs",
    "metadata.log.dir",
    "broker.rack",
    "authorizer.class.name",
    "super.users",
    "allow.everyone.if.no.acl.found",
    "default.replication.factor",
    "min.insync.replicas",
    "num.partitions",
    "unclean.leader.election.enable",
    "auto.create.topics.enable",
    "offsets.topic.replication.factor",
    "transaction.state.log.replication.factor",
    "transaction.state.log.min.isr",
    "sasl.",
    "ssl.",
    "security.",
    "listener.name.",
    "config.providers",
    "principal.builder.class",
];

/// Connect worker keys kraftops derives itself.
pub const CONNECT_MANAGED: &[&str] = &[
    "bootstrap.servers",
    "group.id",
    "config.storage.topic",
    "offset.storage.topic",
    "status.storage.topic",
    "config.storage.replication.factor",
    "offset.storage.replication.factor",
    "status.storage.replication.factor",
    "plugin.path",
    "listeners",
    "rest.advertised.host.name",
    "rest.advertised.port",
    "security.",
    "sasl.",
    "ssl.",
    "producer.security.",
    "producer.sasl.",
    "producer.ssl.",
    "consumer.security.",
    "consumer.sasl.",
    "consumer.ssl.",
    "admin.security.",
    "admin.sasl.",
    "admin.ssl.",
    "config.providers",
];

/// Why `key` may not be set by hand, if it is in `managed`.
pub fn managed_key_reason(key: &str, managed: &[&str]) -> Option<String> {
    let hit = managed.iter().find(|m| {
        if m.ends_with('.') {
            key.starts_with(*m)
        } else {
            key == **m || key.starts_with(&format!("{m}."))
        }
    })?;
    let what = if hit.ends_with('.') {
        format!("keys starting with `{hit}`")
    } else {
        format!("`{hit}`")
    };
    Some(format!(
        "setting `{key}` is managed by kraftops ({what} are derived from nodes.yaml, security and topic_defaults); remove it"
    ))
}

/// What the loader knows that the model does not hold.
#[derive(Debug, Default)]
pub(crate) struct LoadNotes {
    /// A file in `users/` did not parse, so a user missing from the model
    /// may well be defined there: reporting it would repeat that parse error.
    pub users_incomplete: bool,
    /// Secrets whose file exists but is not a readable age file (already
    /// reported); a reference to one is not a dangling reference.
    pub broken_secrets: BTreeSet<Name>,
    /// Where each key under `ports:` is in cluster.yaml.
    pub port_positions: BTreeMap<String, Pos>,
}

struct Checker<'a> {
    model: &'a Model,
    notes: &'a LoadNotes,
    out: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn err(&mut self, file: &str, pos: Pos, message: impl Into<String>) {
        self.out.push(Diagnostic::at(file, pos, message));
    }

    /// Reports a reference to a secret that has no file in `secrets/`.
    fn secret_ref(&mut self, file: &str, secret: &Located<Name>) {
        if !self.model.secrets.contains_key(&**secret)
            && !self.notes.broken_secrets.contains(&**secret)
        {
            self.err(
                file,
                secret.pos,
                format!(
                    "secret {} does not exist (expected secrets/{}.age)",
                    **secret, **secret
                ),
            );
        }
    }
}

pub(crate) fn validate(model: &Model, notes: &LoadNotes) -> Vec<Diagnostic> {
    let mut c = Checker {
        model,
        notes,
        out: Vec::new(),
    };
    check_network(&mut c);
    check_nodes(&mut c);
    check_topic_defaults(&mut c);
    check_settings(&mut c);
    check_topics(&mut c);
    check_users(&mut c);
    check_connectors(&mut c);
    check_observability(&mut c);
    check_security(&mut c);
    check_metadata_version(&mut c);
    check_aws(&mut c);
    check_rollout(&mut c);
    check_resources(&mut c);
    c.out
}

const CLUSTER: &str = "cluster.yaml";
const NODES: &str = "nodes.yaml";

/// Reports every value after its first occurrence as a duplicate.
/// The third element says where the first one is, as `file:line:col`.
fn duplicates<'a, K: Ord + 'a>(
    items: impl IntoIterator<Item = (K, &'a str, Pos)>,
) -> Vec<(&'a str, Pos, String)> {
    let mut seen: BTreeMap<K, (&str, Pos)> = BTreeMap::new();
    let mut dups = Vec::new();
    for (key, file, pos) in items {
        match seen.get(&key) {
            Some((first_file, first)) => dups.push((file, pos, format!("{first_file}:{first}"))),
            None => {
                seen.insert(key, (file, pos));
            }
        }
    }
    dups
}

fn check_network(c: &mut Checker<'_>) {
    let azs = &c.model.cluster.network.azs;
    if azs.is_empty() {
        c.err(
            CLUSTER,
            c.model.cluster.network.domain.pos,
            "network.azs must list at least one availability zone",
        );
    }
    for (_, pos, first) in duplicates(
        azs.iter()
            .map(|az| (az.name.as_str().to_owned(), CLUSTER, az.name.pos)),
    ) {
        c.err(
            CLUSTER,
            pos,
            format!("duplicate availability zone; first defined at {first}"),
        );
    }
    for (i, a) in azs.iter().enumerate() {
        for b in &azs[..i] {
            if a.subnet.overlaps(&b.subnet) {
                c.err(
                    CLUSTER,
                    a.subnet.pos,
                    format!(
                        "subnet {} of {} overlaps subnet {} of {}",
                        *a.subnet, *a.name, *b.subnet, *b.name
                    ),
                );
            }
        }
    }
}

/// Checks of the node list that need nothing else from the repository, so
/// they still run when cluster.yaml does not parse.
pub(crate) fn check_node_list(nodes: &[Located<Node>], out: &mut Vec<Diagnostic>) {
    let mut err =
        |file: &str, pos: Pos, message: String| out.push(Diagnostic::at(file, pos, message));
    if nodes.is_empty() {
        err(
            NODES,
            Pos { line: 1, column: 1 },
            "nodes must list at least one node".to_owned(),
        );
        return;
    }
    for (_, pos, first) in duplicates(
        nodes
            .iter()
            .map(|n| (n.name.as_str().to_owned(), NODES, n.name.pos)),
    ) {
        err(
            NODES,
            pos,
            format!("duplicate node name; first defined at {first}"),
        );
    }
    for (_, pos, first) in duplicates(
        nodes
            .iter()
            .map(|n| (n.address.value, NODES, n.address.pos)),
    ) {
        err(
            NODES,
            pos,
            format!("duplicate address; already used by the node at {first}"),
        );
    }
    for (_, pos, first) in duplicates(
        nodes
            .iter()
            .filter_map(|n| n.node_id.as_ref())
            .map(|id| (id.value, NODES, id.pos)),
    ) {
        err(
            NODES,
            pos,
            format!("duplicate node_id; already used by the node at {first}"),
        );
    }
    for (_, pos, first) in duplicates(
        nodes
            .iter()
            .filter_map(|n| n.directory_id.as_ref())
            .map(|id| (id.as_str().to_owned(), NODES, id.pos)),
    ) {
        err(
            NODES,
            pos,
            format!("duplicate directory_id; already used by the node at {first}"),
        );
    }
    for node in nodes {
        let role = *node.role;
        match (&node.node_id, role.is_kafka_server()) {
            (None, true) => err(
                NODES,
                node.pos,
                format!("node {} is a {role} and needs a node_id", *node.name),
            ),
            (Some(id), false) => err(
                NODES,
                id.pos,
                format!(
                    "node_id is only for brokers and controllers; {} is a {role} node",
                    *node.name
                ),
            ),
            _ => {}
        }
        if let Some(id) = &node.node_id
            && id.value > i32::MAX as u32
        {
            err(
                NODES,
                id.pos,
                format!(
                    "node_id {} is larger than Kafka allows ({})",
                    id.value,
                    i32::MAX
                ),
            );
        }
        match (&node.directory_id, role == Role::Controller) {
            (None, true) => err(
                NODES,
                node.pos,
                format!(
                    "controller {} needs a directory_id (generate one with `kafka-storage.sh random-uuid`)",
                    *node.name
                ),
            ),
            (Some(d), false) => err(
                NODES,
                d.pos,
                format!(
                    "directory_id is only for controllers; {} is a {role} node",
                    *node.name
                ),
            ),
            _ => {}
        }
        if !node.settings.is_empty() && role == Role::Observability {
            let first = node.settings.values().next().map_or(node.pos, |v| v.pos);
            err(
                NODES,
                first,
                format!("settings are not used on {role} nodes"),
            );
        }
    }
    let count = |role| nodes.iter().filter(|n| *n.role == role).count();
    let controllers = count(Role::Controller);
    if !matches!(controllers, 1 | 3 | 5) {
        let pos = nodes
            .iter()
            .find(|n| *n.role == Role::Controller)
            .map_or(nodes[0].pos, |n| n.role.pos);
        err(
            NODES,
            pos,
            format!("there are {controllers} controllers; a KRaft quorum needs 1, 3 or 5"),
        );
    }
    if count(Role::Broker) == 0 {
        err(
            NODES,
            nodes[0].pos,
            "there must be at least one broker".to_owned(),
        );
    }
    let observability = count(Role::Observability);
    if observability != 1 {
        let pos = nodes
            .iter()
            .filter(|n| *n.role == Role::Observability)
            .nth(1)
            .map_or(nodes[0].pos, |n| n.role.pos);
        err(
            NODES,
            pos,
            format!(
                "there are {observability} observability nodes; exactly one runs the coordinator, Prometheus and Grafana"
            ),
        );
    }
}

fn check_nodes(c: &mut Checker<'_>) {
    let model = c.model;
    let nodes = &model.nodes;
    check_node_list(nodes, &mut c.out);
    let azs: BTreeMap<&str, &Located<Az>> = model
        .cluster
        .network
        .azs
        .iter()
        .map(|az| (az.name.as_str(), az))
        .collect();
    for node in nodes {
        match azs.get(node.az.as_str()) {
            None => {
                let known: Vec<&str> = azs.keys().copied().collect();
                c.err(NODES, node.az.pos, format!("availability zone {} is not defined in cluster.yaml network.azs (known: {})", *node.az, known.join(", ")));
            }
            Some(az) => {
                if !az.subnet.contains(node.address.value) {
                    c.err(
                        NODES,
                        node.address.pos,
                        format!(
                            "address {} is outside subnet {} of {}",
                            node.address.value, *az.subnet, *az.name
                        ),
                    );
                }
            }
        }
    }
    check_ports(c);
}

/// Every port in cluster.yaml `ports`: the key, its value, what listens on
/// it, and on which roles.
fn port_table(p: &Ports) -> [(&'static str, u16, &'static str, &'static [Role]); 15] {
    const ALL: &[Role] = &[
        Role::Controller,
        Role::Broker,
        Role::Connect,
        Role::Observability,
    ];
    [
        ("node_exporter", p.node_exporter, "node_exporter", ALL),
        ("agent", p.agent, "agent", ALL),
        (
            "controller",
            p.controller,
            "controller listener",
            &[Role::Controller],
        ),
        (
            "controller_jmx",
            p.controller_jmx,
            "controller JMX exporter",
            &[Role::Controller],
        ),
        ("client", p.client, "client listener", &[Role::Broker]),
        (
            "internal",
            p.internal,
            "inter-broker listener",
            &[Role::Broker],
        ),
        (
            "broker_jmx",
            p.broker_jmx,
            "broker JMX exporter",
            &[Role::Broker],
        ),
        (
            "connect_rest",
            p.connect_rest,
            "Connect REST API",
            &[Role::Connect],
        ),
        (
            "connect_jmx",
            p.connect_jmx,
            "Connect JMX exporter",
            &[Role::Connect],
        ),
        (
            "coordinator",
            p.coordinator,
            "coordinator",
            &[Role::Observability],
        ),
        (
            "coordinator_tls",
            p.coordinator_tls,
            "coordinator's agent API (mutual TLS)",
            &[Role::Observability],
        ),
        (
            "prometheus",
            p.prometheus,
            "Prometheus",
            &[Role::Observability],
        ),
        (
            "alertmanager",
            p.alertmanager,
            "Alertmanager",
            &[Role::Observability],
        ),
        (
            "alertmanager_cluster",
            p.alertmanager_cluster,
            "Alertmanager cluster",
            &[Role::Observability],
        ),
        ("grafana", p.grafana, "Grafana", &[Role::Observability]),
    ]
}

/// The TCP ports a node of `role` listens on, with what each is for.
pub fn ports_of(role: Role, p: &Ports) -> Vec<(u16, &'static str)> {
    port_table(p)
        .into_iter()
        .filter(|(_, _, _, roles)| roles.contains(&role))
        .map(|(_, port, what, _)| (port, what))
        .collect()
}

/// Two ports of one node must differ. The ports are set in cluster.yaml, so
/// that is where a collision is reported: once, at the port that was set,
/// naming the roles it breaks.
fn check_ports(c: &mut Checker<'_>) {
    let table = port_table(&c.model.cluster.ports);
    let present: BTreeSet<Role> = c.model.nodes.iter().map(|n| *n.role).collect();
    let positions = &c.notes.port_positions;
    let pos_of = |key: &str| positions.get(key).copied();
    let fallback = Pos { line: 1, column: 1 };
    let mut problems = Vec::new();
    for (i, (key, port, what, roles)) in table.iter().enumerate() {
        let used_on: Vec<Role> = roles
            .iter()
            .copied()
            .filter(|r| present.contains(r))
            .collect();
        if used_on.is_empty() {
            continue;
        }
        if *port == 0 {
            problems.push((
                pos_of(key).unwrap_or(fallback),
                format!("ports.{key} ({what}) must not be 0"),
            ));
            continue;
        }
        for (other_key, other_port, other_what, other_roles) in &table[..i] {
            let shared: Vec<&str> = used_on
                .iter()
                .filter(|r| other_roles.contains(r))
                .map(|r| r.as_str())
                .collect();
            if other_port == port && !shared.is_empty() {
                // Point at the key that was written; of two, the later one.
                let pos = match (pos_of(other_key), pos_of(key)) {
                    (Some(a), Some(b)) => a.max(b),
                    (a, b) => b.or(a).unwrap_or(fallback),
                };
                let roles = match shared.split_last() {
                    Some((last, [])) => (*last).to_owned(),
                    Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
                    None => String::new(),
                };
                problems.push((pos, format!("ports.{other_key} and ports.{key} are both {port}; the {other_what} and the {what} both run on {roles} nodes")));
            }
        }
    }
    for (pos, message) in problems {
        c.err(CLUSTER, pos, message);
    }
}

fn check_topic_defaults(c: &mut Checker<'_>) {
    let d = &c.model.cluster.topic_defaults;
    let brokers = c.model.brokers().count();
    if *d.replication_factor == 0 {
        c.err(
            CLUSTER,
            d.replication_factor.pos,
            "topic_defaults.replication_factor must be at least 1",
        );
    } else if usize::from(*d.replication_factor) > brokers {
        c.err(CLUSTER, d.replication_factor.pos, format!("topic_defaults.replication_factor {} is larger than the number of brokers ({brokers})", *d.replication_factor));
    }
    if *d.min_insync_replicas == 0 {
        c.err(
            CLUSTER,
            d.min_insync_replicas.pos,
            "topic_defaults.min_insync_replicas must be at least 1",
        );
    } else if *d.replication_factor > 1 && *d.min_insync_replicas >= *d.replication_factor {
        c.err(
            CLUSTER,
            d.min_insync_replicas.pos,
            format!(
                "topic_defaults.min_insync_replicas {} must be less than the replication factor {}, or no broker can ever be restarted without blocking producers",
                *d.min_insync_replicas, *d.replication_factor
            ),
        );
    }
    if *d.partitions == 0 {
        c.err(
            CLUSTER,
            d.partitions.pos,
            "topic_defaults.partitions must be at least 1",
        );
    }
}

fn check_settings(c: &mut Checker<'_>) {
    let cluster = &c.model.cluster;
    let report = |c: &mut Checker<'_>, file: &str, settings: &Properties, managed: &[&str]| {
        for (key, value) in settings {
            if let Some(reason) = managed_key_reason(key.as_str(), managed) {
                c.err(file, value.pos, reason);
            }
        }
    };
    report(c, CLUSTER, &cluster.broker.settings, SERVER_MANAGED);
    report(c, CLUSTER, &cluster.controller.settings, SERVER_MANAGED);
    report(c, CLUSTER, &cluster.connect.settings, CONNECT_MANAGED);
    for node in &c.model.nodes {
        let managed = if *node.role == Role::Connect {
            CONNECT_MANAGED
        } else {
            SERVER_MANAGED
        };
        report(c, NODES, &node.settings, managed);
    }
    if cluster.broker.log_dirs.is_empty() {
        c.err(
            CLUSTER,
            cluster.name.pos,
            "broker.log_dirs must list at least one directory",
        );
    }
}

fn u16_config(
    c: &mut Checker<'_>,
    file: &str,
    config: &Properties,
    key: &str,
) -> Option<(u16, Pos)> {
    let value = config.iter().find(|(k, _)| k.as_str() == key)?.1;
    match value.as_str().parse::<u16>() {
        Ok(n) => Some((n, value.pos)),
        Err(_) => {
            c.err(
                file,
                value.pos,
                format!("{key} must be a whole number, got {:?}", value.as_str()),
            );
            None
        }
    }
}

fn check_topics(c: &mut Checker<'_>) {
    let model = c.model;
    let brokers = model.brokers().count();
    // A topic declared twice is reported at every place it is declared:
    // which one is meant is the operator's call, not the order of files.
    let mut places: BTreeMap<&str, Vec<(&str, Pos)>> = BTreeMap::new();
    for t in &model.topics {
        places
            .entry(t.name.as_str())
            .or_default()
            .push((t.file.as_str(), t.name.pos));
    }
    for (name, at) in places.iter().filter(|(_, at)| at.len() > 1) {
        for (i, (file, pos)) in at.iter().enumerate() {
            let others: Vec<String> = at
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, (f, p))| format!("{f}:{p}"))
                .collect();
            c.err(
                file,
                *pos,
                format!(
                    "topic {name} is declared more than once; also at {}",
                    others.join(", ")
                ),
            );
        }
    }
    let defaults = &model.cluster.topic_defaults;
    let connect_topics = model.connect_storage_topics();
    for t in &model.topics {
        let file = t.file.as_str();
        if is_internal_topic(t.name.as_str()) {
            c.err(
                file,
                t.name.pos,
                format!(
                    "topic {} is internal to Kafka (names starting with __ are reserved)",
                    *t.name
                ),
            );
        }
        if let Some((key, _)) = connect_topics.iter().find(|(_, n)| ***n == *t.name) {
            c.err(
                file,
                t.name.pos,
                format!(
                    "topic {} is Kafka Connect's storage topic ({key} in cluster.yaml); Connect creates and owns it, so kraftops does not manage it here",
                    *t.name
                ),
            );
        }
        if *t.partitions == 0 {
            c.err(file, t.partitions.pos, "partitions must be at least 1");
        }
        // A value inherited from topic_defaults is checked (and reported)
        // there, once, not again for every topic that inherits it.
        let explicit_rf = t.replication_factor.as_ref().map(|r| (r.value, r.pos));
        let rf = explicit_rf.map_or(*defaults.replication_factor, |(rf, _)| rf);
        if let Some((rf, rf_pos)) = explicit_rf {
            if rf == 0 {
                c.err(file, rf_pos, "replication_factor must be at least 1");
            } else if usize::from(rf) > brokers {
                c.err(
                    file,
                    rf_pos,
                    format!(
                        "replication_factor {rf} is larger than the number of brokers ({brokers})"
                    ),
                );
            }
        }
        if let Some(key) = t
            .config
            .keys()
            .find(|k| matches!(k.as_str(), "replication.factor" | "num.partitions"))
        {
            c.err(file, t.config[key].pos, format!("`{key}` is not a topic config; use the topic's replication_factor / partitions fields"));
        }
        let explicit_isr = u16_config(c, file, &t.config, "min.insync.replicas");
        let isr = explicit_isr.map_or(*defaults.min_insync_replicas, |(isr, _)| isr);
        match (explicit_rf, explicit_isr) {
            (_, Some((0, isr_pos))) => c.err(file, isr_pos, "min.insync.replicas must be at least 1"),
            _ if rf <= 1 || isr < rf => {}
            (None, None) => {}
            (Some(_), Some((_, isr_pos))) => c.err(file, isr_pos, format!("min.insync.replicas {isr} must be less than the replication factor {rf}")),
            (None, Some((_, isr_pos))) => c.err(
                file,
                isr_pos,
                format!("min.insync.replicas {isr} must be less than the replication factor {rf} (from topic_defaults.replication_factor)"),
            ),
            (Some((_, rf_pos)), None) => c.err(
                file,
                rf_pos,
                format!("replication_factor {rf} must be larger than min.insync.replicas {isr} (from topic_defaults.min_insync_replicas)"),
            ),
        }
    }
}

fn check_users(c: &mut Checker<'_>) {
    let model = c.model;
    for (file, pos, first) in duplicates(
        model
            .users
            .iter()
            .map(|u| (u.name.as_str().to_owned(), u.file.as_str(), u.name.pos)),
    ) {
        c.err(
            file,
            pos,
            format!("duplicate user; first defined at {first}"),
        );
    }
    for u in &model.users {
        let file = u.file.as_str();
        if *u.delete {
            // Its password is no longer needed: the secret may be gone.
            if let Some(first) = u.acls.first() {
                c.err(
                    file,
                    first.pos,
                    format!(
                        "user {} is marked for deletion, which deletes its ACLs too; remove its acls",
                        *u.name
                    ),
                );
            }
            if let Some(quotas) = &u.quotas {
                c.err(
                    file,
                    quotas.pos,
                    format!(
                        "user {} is marked for deletion, which deletes its quotas too; remove its quotas",
                        *u.name
                    ),
                );
            }
        } else {
            c.secret_ref(file, &u.password_secret);
        }
        if let Some(quotas) = &u.quotas {
            check_quotas(c, file, quotas);
        }
        for acl in &u.acls {
            for op in &acl.operations {
                if !op.applies_to(acl.resource) {
                    c.err(
                        file,
                        op.pos,
                        format!(
                            "operation {} does not apply to a {} resource",
                            yaml_name(&op.value),
                            yaml_name(&acl.resource)
                        ),
                    );
                }
            }
            if acl.operations.is_empty() {
                c.err(file, acl.pos, "an ACL needs at least one operation");
            }
            if acl.resource == AclResource::Cluster && acl.name.as_str() != "*" {
                c.err(
                    file,
                    acl.name.pos,
                    "a cluster ACL has no name (leave it out, or use \"*\")",
                );
            }
            if acl.resource == AclResource::Cluster && acl.pattern == AclPattern::Prefixed {
                c.err(
                    file,
                    acl.pos,
                    "a cluster ACL is always literal (Kafka's cluster resource is `kafka-cluster`); leave out pattern",
                );
            }
        }
    }
    let security = &model.cluster.security;
    let must_exist = |c: &mut Checker<'_>, user: &Located<crate::types::UserName>, what: &str| {
        if model.user(user).is_none() && !c.notes.users_incomplete {
            c.err(
                CLUSTER,
                user.pos,
                format!("{what} {} is not defined in users/", **user),
            );
        }
    };
    must_exist(c, &security.inter_broker_user, "security.inter_broker_user");
    must_exist(c, &security.admin_user, "security.admin_user");
    let has_connect = model.nodes_with_role(Role::Connect).next().is_some();
    if has_connect {
        must_exist(c, &model.cluster.connect.user, "connect.user");
    }
    let mut needed: Vec<(&str, &Located<crate::types::UserName>)> =
        model.protected_users().to_vec();
    if has_connect {
        needed.push(("connect.user", &model.cluster.connect.user));
    }
    for u in model.users.iter().filter(|u| *u.delete) {
        if let Some((key, _)) = needed.iter().find(|(_, n)| ***n == *u.name) {
            c.err(
                u.file.as_str(),
                u.delete.pos,
                format!(
                    "user {} is {key} in cluster.yaml; the cluster cannot run without it, so it cannot be deleted",
                    *u.name
                ),
            );
        }
    }
    let iterations = &security.scram_iterations;
    if !(4096..=16384).contains(&iterations.value) {
        c.err(
            CLUSTER,
            iterations.pos,
            format!(
                "scram_iterations {} is outside what Kafka accepts (4096 to 16384)",
                iterations.value
            ),
        );
    }
}

/// Values serde accepts but Kafka refuses or that would stop a client cold.
fn check_quotas(c: &mut Checker<'_>, file: &str, quotas: &Quotas) {
    for (key, value) in [
        ("producer_byte_rate", &quotas.producer_byte_rate),
        ("consumer_byte_rate", &quotas.consumer_byte_rate),
    ] {
        if let Some(v) = value {
            if v.value == 0 {
                c.err(
                    file,
                    v.pos,
                    format!("quota {key} must be at least 1 (bytes per second)"),
                );
            } else if v.value > i64::MAX as u64 {
                c.err(
                    file,
                    v.pos,
                    format!(
                        "quota {key} {} is larger than Kafka allows ({})",
                        v.value,
                        i64::MAX
                    ),
                );
            }
        }
    }
    for (key, value) in [
        ("request_percentage", &quotas.request_percentage),
        ("controller_mutation_rate", &quotas.controller_mutation_rate),
    ] {
        if let Some(v) = value
            && !(v.value.is_finite() && v.value > 0.0)
        {
            c.err(
                file,
                v.pos,
                format!("quota {key} must be a number above 0, got {}", v.value),
            );
        }
    }
}

/// `resources.prune`: patterns that could delete what the cluster needs
/// are refused, whatever git lists today.
fn check_resources(c: &mut Checker<'_>) {
    let model = c.model;
    let prune = &model.cluster.resources.prune;
    let internal = format!("{INTERNAL_TOPIC_PREFIX}*");
    for pattern in &prune.topics {
        if pattern.overlaps(&internal) {
            c.err(
                CLUSTER,
                pattern.pos,
                format!(
                    "prune pattern {} could match Kafka's internal topics ({internal}); make it narrower",
                    **pattern
                ),
            );
        }
        let connect: Vec<String> = model
            .connect_storage_topics()
            .into_iter()
            .filter(|(_, topic)| pattern.matches(topic.as_str()))
            .map(|(key, topic)| format!("{} ({key})", **topic))
            .collect();
        if !connect.is_empty() {
            c.err(
                CLUSTER,
                pattern.pos,
                format!(
                    "prune pattern {} matches {}: Kafka Connect's own storage; make it narrower",
                    **pattern,
                    connect.join(", ")
                ),
            );
        }
    }
    for pattern in &prune.users {
        for (key, user) in model.protected_users() {
            if pattern.matches(user.as_str()) {
                c.err(
                    CLUSTER,
                    pattern.pos,
                    format!(
                        "prune pattern {} matches {}, the {key}; the cluster cannot run without it",
                        **pattern, **user
                    ),
                );
            }
        }
    }
}

/// How a unit enum variant is spelled in the YAML files.
fn yaml_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

fn check_connectors(c: &mut Checker<'_>) {
    let model = c.model;
    for (file, pos, first) in duplicates(
        model
            .connectors
            .iter()
            .map(|k| (k.name.as_str().to_owned(), k.file.as_str(), k.name.pos)),
    ) {
        c.err(
            file,
            pos,
            format!("duplicate connector; first defined at {first}"),
        );
    }
    let has_connect = model.nodes_with_role(Role::Connect).next().is_some();
    let class =
        PropertyKey::try_from("connector.class").unwrap_or_else(|_| unreachable!("valid key"));
    let name_key = PropertyKey::try_from("name").unwrap_or_else(|_| unreachable!("valid key"));
    for k in &model.connectors {
        let file = k.file.as_str();
        if !k.config.contains_key(&class) {
            c.err(
                file,
                k.item.pos,
                format!("connector {} needs config.connector.class", *k.name),
            );
        }
        if let Some(name) = k.config.get(&name_key)
            && name.as_str() != k.name.as_str()
        {
            c.err(
                file,
                name.pos,
                format!(
                    "config.name {:?} differs from the connector's name {}",
                    name.as_str(),
                    *k.name
                ),
            );
        }
        if !has_connect {
            c.err(
                file,
                k.name.pos,
                format!(
                    "connector {} is defined but nodes.yaml has no connect node to run it",
                    *k.name
                ),
            );
        }
    }
}

/// Job names kraftops derives from the node list.
pub const DERIVED_JOBS: &[&str] = &[
    "prometheus",
    "alertmanager",
    "node",
    "kafka-broker",
    "kafka-controller",
    "kafka-connect",
    "kraftops-agent",
    "kraftops-coordinator",
    "grafana",
];

fn check_observability(c: &mut Checker<'_>) {
    let model = c.model;
    let obs = &model.cluster.observability;
    for (_, pos, first) in duplicates(
        obs.scrape_extras
            .iter()
            .map(|j| (j.job_name.as_str().to_owned(), CLUSTER, j.job_name.pos)),
    ) {
        c.err(
            CLUSTER,
            pos,
            format!("duplicate scrape job; first defined at {first}"),
        );
    }
    for job in &obs.scrape_extras {
        if DERIVED_JOBS.contains(&job.job_name.as_str()) {
            c.err(
                CLUSTER,
                job.job_name.pos,
                format!(
                    "scrape job {} is derived from nodes.yaml by kraftops; pick another name",
                    *job.job_name
                ),
            );
        }
        if job.targets.is_empty() {
            c.err(
                CLUSTER,
                job.job_name.pos,
                "a scrape job needs at least one target",
            );
        }
        for t in &job.targets {
            let ok = t.as_str().rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && !host.contains(' ') && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !ok {
                c.err(
                    CLUSTER,
                    t.pos,
                    format!("scrape target {:?} must be host:port", t.as_str()),
                );
            }
        }
    }
    let am = &obs.alertmanager;
    if am.receivers.is_empty() {
        c.err(
            CLUSTER,
            model.cluster.name.pos,
            "observability.alertmanager.receivers must list at least one receiver",
        );
    }
    for (_, pos, first) in duplicates(
        am.receivers
            .iter()
            .map(|r| (r.name.as_str().to_owned(), CLUSTER, r.name.pos)),
    ) {
        c.err(
            CLUSTER,
            pos,
            format!("duplicate receiver; first defined at {first}"),
        );
    }
    for (i, r) in am.receivers.iter().enumerate() {
        if i > 0 && r.matchers.is_empty() {
            c.err(CLUSTER, r.name.pos, "every receiver after the first needs matchers (the first one is the default route)");
        }
    }
    if let Some(secret) = &obs.grafana.admin_password_secret {
        c.secret_ref(CLUSTER, secret);
    }
    check_rules(c);
    check_dashboards(c);
}

fn check_rules(c: &mut Checker<'_>) {
    let model = c.model;
    for rf in &model.rules {
        let file = rf.file.as_str();
        for (_, pos, first) in duplicates(
            rf.groups
                .iter()
                .map(|g| (g.name.as_str().to_owned(), file, g.name.pos)),
        ) {
            c.err(
                file,
                pos,
                format!("duplicate rule group; first defined at {first}"),
            );
        }
        for g in &rf.groups {
            if g.rules.is_empty() {
                c.err(file, g.name.pos, "a rule group needs at least one rule");
            }
            for r in &g.rules {
                match (&r.alert, &r.record) {
                    (Some(_), Some(rec)) => c.err(
                        file,
                        rec.pos,
                        "a rule is either an alert or a record, not both",
                    ),
                    (None, None) => c.err(file, r.pos, "a rule needs `alert:` or `record:`"),
                    (None, Some(rec)) if r.for_.is_some() || !r.annotations.is_empty() => {
                        c.err(
                            file,
                            rec.pos,
                            "a recording rule cannot have `for` or `annotations`",
                        );
                    }
                    _ => {}
                }
                if r.expr.trim().is_empty() {
                    c.err(file, r.pos, "expr must not be empty");
                }
            }
        }
    }
    let alerts = model.rules.iter().flat_map(|rf| {
        rf.groups.iter().flat_map(move |g| {
            g.rules.iter().filter_map(move |r| {
                r.alert
                    .as_ref()
                    .map(|a| (a.as_str().to_owned(), rf.file.as_str(), a.pos))
            })
        })
    });
    for (file, pos, first) in duplicates(alerts) {
        c.err(
            file,
            pos,
            format!("duplicate alert name; first defined at {first}"),
        );
    }
}

/// The uid and name of the Prometheus datasource the observability role provisions.
pub const DATASOURCE_UID: &str = "prometheus";
pub const DATASOURCE_NAME: &str = "Prometheus";

fn check_dashboards(c: &mut Checker<'_>) {
    let model = c.model;
    for (file, pos, first) in duplicates(
        model
            .dashboards
            .iter()
            .map(|d| (d.uid.clone(), d.file.as_str(), d.position_of("\"uid\""))),
    ) {
        c.err(
            file,
            pos,
            format!("duplicate dashboard uid; first defined at {first}"),
        );
    }
    for d in &model.dashboards {
        let mut bad = BTreeSet::new();
        collect_foreign_datasources(&d.json, &mut bad);
        for uid in bad {
            c.err(
                &d.file,
                d.position_of(&format!("\"{uid}\"")),
                format!("datasource {uid:?} is not provisioned; refer to the Prometheus datasource by uid {DATASOURCE_UID:?} or name {DATASOURCE_NAME:?}"),
            );
        }
    }
}

fn collect_foreign_datasources(v: &serde_json::Value, bad: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map {
                if k == "datasource" {
                    let reference = match child {
                        serde_json::Value::String(s) => Some(s.as_str()),
                        serde_json::Value::Object(o) => o.get("uid").and_then(|u| u.as_str()),
                        _ => None,
                    };
                    if let Some(r) = reference
                        && r != DATASOURCE_UID
                        && r != DATASOURCE_NAME
                        && !r.starts_with("${")
                        && r != "-- Grafana --"
                        && r != "grafana"
                    {
                        bad.insert(r.to_owned());
                    }
                }
                collect_foreign_datasources(child, bad);
            }
        }
        serde_json::Value::Array(items) => items
            .iter()
            .for_each(|i| collect_foreign_datasources(i, bad)),
        _ => {}
    }
}

/// A `metadata_version` newer than the Kafka version the cluster runs
/// could never be finalized: Kafka refuses a level its nodes do not support.
fn check_metadata_version(c: &mut Checker<'_>) {
    let kafka = &c.model.cluster.kafka;
    let Some(wanted) = &kafka.metadata_version else {
        return;
    };
    if let (Some(release), Some(running)) = (
        crate::features::release_of(&format!("{}.0", wanted.as_str())),
        crate::features::release_of(kafka.version.as_str()),
    ) && release > running
    {
        c.err(
            CLUSTER,
            wanted.pos,
            format!(
                "metadata_version {} is newer than Kafka {} supports; raise kafka.version first (metadata.version can only reach the release every node runs)",
                wanted.as_str(),
                kafka.version.as_str()
            ),
        );
    }
}

fn check_security(c: &mut Checker<'_>) {
    let model = c.model;
    let dist = &model.cluster.kafka.distribution;
    if let Distribution::Tarball {
        sha512, sha512_url, ..
    } = &dist.value
        && sha512.is_some() == sha512_url.is_some()
    {
        c.err(CLUSTER, dist.pos, "a tarball distribution needs exactly one of sha512 (the digest) or sha512_url (where the publisher's digest is)");
    }
    let ca = &model.cluster.security.ca;
    c.secret_ref(CLUSTER, &ca.key_secret);
    if ca.renew_before.as_secs() >= ca.cert_validity.as_secs() {
        c.err(
            CLUSTER,
            ca.renew_before.pos,
            format!(
                "renew_before {} must be shorter than cert_validity {}",
                *ca.renew_before, *ca.cert_validity
            ),
        );
    }
}

/// The `aws` section, checked before `kraftops-bootstrap` makes any AWS
/// call: zones of the region, subnets inside the VPC, an image, no role
/// listening on the admin-only SSH port, and what a new machine's user-data
/// needs.
fn check_aws(c: &mut Checker<'_>) {
    let model = c.model;
    let Some(aws) = &model.cluster.aws else {
        return;
    };
    let region = aws.region.as_str();
    for az in &model.cluster.network.azs {
        let zone_of_region =
            az.name.as_str().strip_prefix(region).is_some_and(|rest| {
                rest.len() == 1 && rest.bytes().all(|b| b.is_ascii_lowercase())
            });
        if !zone_of_region {
            c.err(
                CLUSTER,
                az.name.pos,
                format!(
                    "availability zone {} is not a zone of region {region} (aws.region); zones are named {region}a, {region}b, …",
                    *az.name
                ),
            );
        }
        let vpc = *aws.vpc_cidr;
        if !(vpc.contains(az.subnet.network()) && az.subnet.prefix() >= vpc.prefix()) {
            c.err(
                CLUSTER,
                az.subnet.pos,
                format!(
                    "subnet {} of {} is outside the VPC {vpc} (aws.vpc_cidr)",
                    *az.subnet, *az.name
                ),
            );
        }
    }
    let ami = &aws.ami;
    match (&ami.id, &ami.name, &ami.owner) {
        (Some(_), None, None) | (None, Some(_), Some(_)) => {}
        _ => c.err(
            CLUSTER,
            ami.pos,
            "aws.ami needs either id (ami-…) or both name (a pattern) and owner, not both",
        ),
    }
    for cidr in &aws.admin_cidrs {
        if cidr.prefix() == 0 {
            c.err(
                CLUSTER,
                cidr.pos,
                format!(
                    "admin_cidrs {} opens SSH and the operators' endpoints to the whole internet; name the admin network",
                    **cidr
                ),
            );
        }
    }
    let ssh = *aws.ssh_port;
    let present: BTreeSet<Role> = model.nodes.iter().map(|n| *n.role).collect();
    for (key, port, what, roles) in port_table(&model.cluster.ports) {
        if port == ssh && roles.iter().any(|r| present.contains(r)) {
            c.err(
                CLUSTER,
                aws.ssh_port.pos,
                format!(
                    "aws.ssh_port {ssh} is also ports.{key}, the {what}: the admin-only SSH rule would block it for the cluster's own nodes"
                ),
            );
        }
    }
    if model.cluster.agent.binary.is_none() {
        c.err(
            CLUSTER,
            aws.pos,
            "aws needs agent.binary (url and sha256 of kraftops-agent) for the machines' user-data",
        );
    }
    if model.cluster.agent.repository.is_none() {
        c.err(
            CLUSTER,
            aws.pos,
            "aws needs agent.repository (the url of this repository as the nodes reach it) for the machines' user-data",
        );
    }
}

/// The longest maintenance window: a window repeats at least weekly.
const MAX_WINDOW_SECONDS: u64 = 7 * 86_400;

/// `rollout:` values serde accepts but a rollout cannot work with.
fn check_rollout(c: &mut Checker<'_>) {
    let rollout = &c.model.cluster.rollout;
    let mut problems = Vec::new();
    if *rollout.max_unavailable == 0 {
        problems.push((
            rollout.max_unavailable.pos,
            "rollout.max_unavailable must be at least 1: with 0 no node could ever restart"
                .to_owned(),
        ));
    }
    if let Some(per_az) = &rollout.max_unavailable_per_az
        && **per_az == 0
    {
        problems.push((
            per_az.pos,
            "rollout.max_unavailable_per_az must be at least 1: with 0 no node could ever restart; remove it to let only max_unavailable apply".to_owned(),
        ));
    }
    for window in &rollout.maintenance_windows {
        let duration = &window.duration;
        if duration.as_secs() == 0 {
            problems.push((
                duration.pos,
                format!(
                    "maintenance window duration {} must be more than 0",
                    **duration
                ),
            ));
        } else if duration.as_secs() > MAX_WINDOW_SECONDS {
            problems.push((
                duration.pos,
                format!(
                    "maintenance window duration {} is longer than a week; at most 7d (a window repeats every week)",
                    **duration
                ),
            ));
        }
    }
    for (pos, message) in problems {
        c.err(CLUSTER, pos, message);
    }
}
