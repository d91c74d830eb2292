//! What the controller, broker, Connect and common renderers put into each
//! file, asserted key by key on the example repository (and on variations
//! of it), plus the JMX exporter's metric-name contract.

use std::collections::BTreeMap;

use desired_state::types::{DownloadUrl, Name, PropertyKey, PropertyValue, SingleLine};
use desired_state::{Distribution, Located, Model};
use roles::scram::ScramCredential;
use roles::{OnChange, Plan, RenderError, Secrets, layout, properties};

mod support;

use support::load_example as load;

fn render(model: &Model, secrets: &Secrets, node: &str) -> Plan {
    roles::render(model, node, secrets).unwrap_or_else(|e| panic!("rendering {node}: {e}"))
}

fn example_plan(node: &str) -> Plan {
    let (model, secrets) = load();
    render(&model, &secrets, node)
}

fn text<'a>(plan: &'a Plan, path: &str) -> &'a str {
    let file = plan
        .file(path)
        .unwrap_or_else(|| panic!("{} has no {path}", plan.node));
    std::str::from_utf8(&file.contents).expect("UTF-8")
}

fn props(plan: &Plan, path: &str) -> BTreeMap<String, String> {
    properties::parse(text(plan, path)).unwrap_or_else(|e| panic!("{path} of {}: {e}", plan.node))
}

fn unit<'a>(plan: &'a Plan, name: &str) -> &'a str {
    &plan
        .unit(name)
        .unwrap_or_else(|| panic!("{} has no unit {name}", plan.node))
        .contents
}

/// Every value of `key=` in a unit file, in order.
fn directive<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

fn one<'a>(unit: &'a str, key: &str) -> &'a str {
    match directive(unit, key).as_slice() {
        [value] => value,
        other => panic!("expected exactly one {key}= in\n{unit}\nfound {other:?}"),
    }
}

fn password(model: &Model, secrets: &Secrets, user: &str) -> String {
    let user = model
        .users
        .iter()
        .find(|u| u.name.as_str() == user)
        .expect("user defined");
    secrets[&*user.password_secret].expose().to_owned()
}

fn restart(unit: &str) -> OnChange {
    OnChange::Restart(unit.to_owned())
}

fn setting(key: &str, value: &str) -> (PropertyKey, Located<PropertyValue>) {
    (
        PropertyKey::try_from(key).expect("key"),
        Located::unplaced(PropertyValue::try_from(value).expect("value")),
    )
}

fn assert_keys(map: &BTreeMap<String, String>, expected: &[(&str, &str)]) {
    for (key, value) in expected {
        assert_eq!(map.get(*key).map(String::as_str), Some(*value), "key {key}");
    }
}

const SUPER_USERS: &str = "User:broker;User:admin;User:broker-1;User:broker-2;User:broker-3;User:broker-4;User:controller-1;User:controller-2;User:controller-3";
const QUORUM: &str = "controller-1.kafka.internal:9093,controller-2.kafka.internal:9093,controller-3.kafka.internal:9093";
const INITIAL_CONTROLLERS: &str = "3001@controller-1.kafka.internal:9093:lHj4i5lmJll-L0hQplnIXg,\
3002@controller-2.kafka.internal:9093:NxO682vtHTLt6GeTCBtbDA,3003@controller-3.kafka.internal:9093:cEhSheak9bo3D5HiP5mqDg";

// ------------------------------------------------------------- controller

#[test]
fn controller_server_properties() {
    let plan = example_plan("controller-1");
    let p = props(&plan, layout::SERVER_PROPERTIES);
    assert_keys(
        &p,
        &[
            ("process.roles", "controller"),
            ("node.id", "3001"),
            ("controller.listener.names", "CONTROLLER"),
            ("listeners", "CONTROLLER://10.0.1.21:9093"),
            (
                "advertised.listeners",
                "CONTROLLER://controller-1.kafka.internal:9093",
            ),
            ("controller.quorum.bootstrap.servers", QUORUM),
            ("listener.security.protocol.map", "CONTROLLER:SSL"),
            ("listener.name.controller.ssl.client.auth", "required"),
            ("listener.name.controller.ssl.keystore.type", "PEM"),
            (
                "listener.name.controller.ssl.keystore.location",
                layout::KEYSTORE,
            ),
            ("listener.name.controller.ssl.truststore.type", "PEM"),
            (
                "listener.name.controller.ssl.truststore.location",
                layout::TRUSTSTORE,
            ),
            (
                "ssl.principal.mapping.rules",
                "RULE:^CN=([^,]+).*$/$1/,DEFAULT",
            ),
            ("metadata.log.dir", "/var/lib/kafka/metadata"),
            ("log.dirs", "/var/lib/kafka/metadata"),
            (
                "authorizer.class.name",
                "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            ),
            ("super.users", SUPER_USERS),
            ("allow.everyone.if.no.acl.found", "false"),
            ("default.replication.factor", "3"),
            ("min.insync.replicas", "2"),
            ("num.partitions", "3"),
            ("unclean.leader.election.enable", "false"),
            ("auto.create.topics.enable", "false"),
        ],
    );
    assert!(
        !p.contains_key("controller.quorum.voters"),
        "static quorum keys must not appear"
    );
    assert!(!p.contains_key("broker.rack"), "rack is a broker setting");
    assert!(
        !p.keys().any(|k| k.contains("sasl")),
        "the controller listener is mutual TLS only"
    );
    let file = plan
        .file(layout::SERVER_PROPERTIES)
        .expect("server.properties");
    assert_eq!(file.on_change, restart(layout::KAFKA_UNIT));
    assert!(!file.sensitive);
    assert!(
        text(&plan, layout::SERVER_PROPERTIES)
            .starts_with(&format!("# {}\n", layout::MANAGED_HEADER))
    );
}

#[test]
fn controller_formats_once_with_the_same_voters_and_salted_credentials() {
    let (model, secrets) = load();
    let mut exec_starts = Vec::new();
    for name in ["controller-1", "controller-2", "controller-3"] {
        let plan = render(&model, &secrets, name);
        let format = plan.unit(layout::FORMAT_UNIT).expect("format unit");
        assert!(
            !format.enable && !format.start && !format.kafka,
            "the format unit only runs through kafka.service"
        );
        let u = &format.contents;
        assert_eq!(
            one(u, "ConditionPathExists"),
            "!/var/lib/kafka/metadata/meta.properties"
        );
        assert_eq!(one(u, "Type"), "oneshot");
        assert_eq!(one(u, "RemainAfterExit"), "yes");
        assert_eq!(one(u, "User"), "kafka");
        assert_eq!(one(u, "ProtectProc"), "invisible");
        assert_eq!(one(u, "EnvironmentFile"), layout::FORMAT_ENV);
        let exec = one(u, "ExecStart");
        assert_eq!(
            exec,
            format!(
                "/opt/kafka/bin/kafka-storage.sh format --config /etc/kafka/server.properties \
                 --cluster-id BBO6LcW7aWKqrWwQnn1JRA --initial-controllers {INITIAL_CONTROLLERS} \
                 --add-scram ${{KRAFTOPS_SCRAM_INTER_BROKER}} --add-scram ${{KRAFTOPS_SCRAM_ADMIN}}"
            )
        );
        assert!(!exec.contains("--ignore-formatted") && !exec.contains("--standalone"));
        exec_starts.push(exec.to_owned());
    }
    // Only the node's own config differs; the format command is the same everywhere.
    assert!(exec_starts.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn format_env_holds_salted_credentials_single_quoted() {
    let (model, secrets) = load();
    let plan = render(&model, &secrets, "controller-2");
    let file = plan.file(layout::FORMAT_ENV).expect("format.env");
    assert_eq!(
        (file.mode, file.owner.as_str(), file.group.as_str()),
        (0o600, "kafka", "kafka")
    );
    assert!(file.sensitive);
    assert_eq!(file.on_change, OnChange::Nothing);
    let env: BTreeMap<&str, &str> = text(&plan, layout::FORMAT_ENV)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_once('=').expect("KEY=value"))
        .collect();
    assert_eq!(env.len(), 2);
    for (var, user) in [
        ("KRAFTOPS_SCRAM_INTER_BROKER", "broker"),
        ("KRAFTOPS_SCRAM_ADMIN", "admin"),
    ] {
        let quoted = env[var];
        let value = quoted
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .expect("single-quoted");
        let expected = ScramCredential::derive(
            "BBO6LcW7aWKqrWwQnn1JRA",
            user,
            &password(&model, &secrets, user),
            8192,
        );
        assert_eq!(value, expected.add_scram_arg());
        assert!(value.contains("salt=\"") && !value.contains(&password(&model, &secrets, user)));
    }
}

#[test]
fn kafka_service_waits_for_controlled_shutdown() {
    for node in ["controller-1", "broker-3"] {
        let plan = example_plan(node);
        let kafka = plan.unit(layout::KAFKA_UNIT).expect("kafka.service");
        assert!(kafka.enable && kafka.start && kafka.kafka);
        let u = &kafka.contents;
        assert_eq!(one(u, "Requires"), layout::FORMAT_UNIT);
        assert!(one(u, "After").split(' ').any(|a| a == layout::FORMAT_UNIT));
        assert_eq!(one(u, "User"), "kafka");
        assert_eq!(one(u, "EnvironmentFile"), layout::KAFKA_ENV);
        assert_eq!(
            started_script(one(u, "ExecStart")),
            "/opt/kafka-resolved/bin/kafka-server-start.sh /etc/kafka/server.properties"
        );
        assert_eq!(one(u, "TimeoutStopSec"), "600");
        assert_eq!(one(u, "SuccessExitStatus"), "143");
        assert_eq!(one(u, "Restart"), "on-failure");
        assert!(one(u, "LimitNOFILE").parse::<u64>().expect("number") >= 100_000);
        assert_eq!(one(u, "WantedBy"), "multi-user.target");
    }
}

// ----------------------------------------------------------------- broker

#[test]
fn broker_server_properties() {
    let (model, secrets) = load();
    let plan = render(&model, &secrets, "broker-2");
    let p = props(&plan, layout::SERVER_PROPERTIES);
    let scram = "org.apache.kafka.common.security.scram.ScramLoginModule";
    assert_keys(
        &p,
        &[
            ("process.roles", "broker"),
            ("node.id", "2"),
            ("broker.rack", "eu-central-1b"),
            (
                "listeners",
                "INTERNAL://10.0.2.11:9091,CLIENT://10.0.2.11:9092",
            ),
            (
                "advertised.listeners",
                "INTERNAL://broker-2.kafka.internal:9091,CLIENT://broker-2.kafka.internal:9092",
            ),
            (
                "listener.security.protocol.map",
                "CONTROLLER:SSL,INTERNAL:SASL_SSL,CLIENT:SASL_SSL",
            ),
            ("inter.broker.listener.name", "INTERNAL"),
            ("controller.listener.names", "CONTROLLER"),
            ("controller.quorum.bootstrap.servers", QUORUM),
            ("sasl.mechanism.inter.broker.protocol", "SCRAM-SHA-512"),
            (
                "listener.name.internal.sasl.enabled.mechanisms",
                "SCRAM-SHA-512",
            ),
            (
                "listener.name.client.sasl.enabled.mechanisms",
                "SCRAM-SHA-512",
            ),
            (
                "listener.name.internal.scram-sha-512.sasl.jaas.config",
                &format!(
                    "{scram} required username=\"broker\" password=\"${{file:/etc/kafka/secrets.properties:broker.password}}\";"
                ),
            ),
            (
                "listener.name.client.scram-sha-512.sasl.jaas.config",
                &format!("{scram} required;"),
            ),
            ("config.providers", "file"),
            (
                "config.providers.file.class",
                "org.apache.kafka.common.config.provider.FileConfigProvider",
            ),
            (
                "ssl.principal.mapping.rules",
                "RULE:^CN=([^,]+).*$/$1/,DEFAULT",
            ),
            ("log.dirs", "/var/lib/kafka/data"),
            (
                "authorizer.class.name",
                "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            ),
            ("super.users", SUPER_USERS),
            ("allow.everyone.if.no.acl.found", "false"),
            (
                "replica.selector.class",
                "org.apache.kafka.common.replica.RackAwareReplicaSelector",
            ),
            ("default.replication.factor", "3"),
            ("min.insync.replicas", "2"),
            ("num.partitions", "3"),
            ("unclean.leader.election.enable", "false"),
            ("auto.create.topics.enable", "false"),
            ("offsets.topic.replication.factor", "3"),
            ("transaction.state.log.replication.factor", "3"),
            ("transaction.state.log.min.isr", "2"),
            // broker.settings from cluster.yaml
            ("num.io.threads", "16"),
            ("log.retention.hours", "168"),
        ],
    );
    // TLS for every listener, listener-prefixed so certificates rotate without a restart.
    for listener in ["internal", "client", "controller"] {
        assert_keys(
            &p,
            &[
                (
                    &format!("listener.name.{listener}.ssl.keystore.type"),
                    "PEM",
                ),
                (
                    &format!("listener.name.{listener}.ssl.keystore.location"),
                    layout::KEYSTORE,
                ),
                (
                    &format!("listener.name.{listener}.ssl.truststore.type"),
                    "PEM",
                ),
                (
                    &format!("listener.name.{listener}.ssl.truststore.location"),
                    layout::TRUSTSTORE,
                ),
            ],
        );
    }
    assert!(!p.contains_key("controller.quorum.voters"));
    assert!(
        !p.keys().any(|k| k.starts_with("ssl.keystore")),
        "base ssl.* keys are not dynamic"
    );
    assert!(
        !p.values()
            .any(|v| v.contains(&password(&model, &secrets, "broker")))
    );
}

#[test]
fn node_settings_win_over_role_settings() {
    let (mut model, secrets) = load();
    model.cluster.broker.settings.extend([
        setting("num.io.threads", "24"),
        setting("num.replica.fetchers", "2"),
    ]);
    let node = model
        .nodes
        .iter_mut()
        .find(|n| n.name.as_str() == "broker-3")
        .expect("broker-3");
    node.value
        .settings
        .extend([setting("num.io.threads", "32")]);
    let p3 = props(
        &render(&model, &secrets, "broker-3"),
        layout::SERVER_PROPERTIES,
    );
    let p1 = props(
        &render(&model, &secrets, "broker-1"),
        layout::SERVER_PROPERTIES,
    );
    assert_eq!(p3["num.io.threads"], "32");
    assert_eq!(p1["num.io.threads"], "24");
    assert_eq!(p3["num.replica.fetchers"], "2");
    // Controllers do not get broker settings.
    let c = props(
        &render(&model, &secrets, "controller-1"),
        layout::SERVER_PROPERTIES,
    );
    assert!(!c.contains_key("num.io.threads"));
}

#[test]
fn internal_topic_replication_never_exceeds_the_brokers() {
    let (mut model, secrets) = load();
    // Only two brokers left: internal topics must still be creatable.
    model
        .nodes
        .retain(|n| !matches!(n.name.as_str(), "broker-3" | "broker-4"));
    let p = props(
        &render(&model, &secrets, "broker-1"),
        layout::SERVER_PROPERTIES,
    );
    assert_eq!(p["offsets.topic.replication.factor"], "2");
    assert_eq!(p["transaction.state.log.replication.factor"], "2");
    assert_eq!(p["transaction.state.log.min.isr"], "2");
}

#[test]
fn broker_secrets_file_is_private() {
    let (model, secrets) = load();
    let plan = render(&model, &secrets, "broker-1");
    let file = plan
        .file(layout::KAFKA_SECRETS)
        .expect("secrets.properties");
    assert_eq!(
        (file.mode, file.owner.as_str(), file.group.as_str()),
        (0o600, "kafka", "kafka")
    );
    assert!(file.sensitive);
    assert_eq!(file.on_change, restart(layout::KAFKA_UNIT));
    let p = props(&plan, layout::KAFKA_SECRETS);
    assert_eq!(p.len(), 1);
    assert_eq!(p["broker.password"], password(&model, &secrets, "broker"));
    let debug = format!("{plan:?}");
    assert!(!debug.contains(&password(&model, &secrets, "broker")));
}

#[test]
fn broker_formats_its_first_log_dir_without_quorum_flags() {
    let (mut model, secrets) = load();
    model.cluster.broker.log_dirs = vec![
        "/data/a".try_into().expect("path"),
        "/data/b".try_into().expect("path"),
    ];
    let plan = render(&model, &secrets, "broker-4");
    let u = unit(&plan, layout::FORMAT_UNIT);
    assert_eq!(one(u, "ConditionPathExists"), "!/data/a/meta.properties");
    assert_eq!(
        one(u, "ExecStart"),
        "/opt/kafka/bin/kafka-storage.sh format --config /etc/kafka/server.properties --cluster-id BBO6LcW7aWKqrWwQnn1JRA"
    );
    assert!(
        directive(u, "EnvironmentFile").is_empty(),
        "brokers need no credentials to format"
    );
    assert!(plan.file(layout::FORMAT_ENV).is_none());
    assert_eq!(
        props(&plan, layout::SERVER_PROPERTIES)["log.dirs"],
        "/data/a,/data/b"
    );
    for dir in ["/data/a", "/data/b"] {
        let d = plan
            .directories
            .iter()
            .find(|d| d.path == dir)
            .expect("log dir planned");
        assert_eq!((d.mode, d.owner.as_str()), (0o750, "kafka"));
    }
}

#[test]
fn controller_client_properties_on_kafka_servers_only() {
    for node in ["broker-1", "controller-3"] {
        let plan = example_plan(node);
        let p = props(&plan, layout::CONTROLLER_CLIENT_PROPERTIES);
        assert_keys(
            &p,
            &[
                ("security.protocol", "SSL"),
                ("ssl.keystore.type", "PEM"),
                ("ssl.keystore.location", layout::KEYSTORE),
                ("ssl.truststore.type", "PEM"),
                ("ssl.truststore.location", layout::TRUSTSTORE),
            ],
        );
        assert_eq!(p.len(), 5, "no secrets in the controller client properties");
        assert_eq!(
            plan.file(layout::CONTROLLER_CLIENT_PROPERTIES)
                .expect("file")
                .on_change,
            OnChange::Nothing
        );
    }
    assert!(
        example_plan("connect-1")
            .file(layout::CONTROLLER_CLIENT_PROPERTIES)
            .is_none()
    );
}

// ---------------------------------------------------------------- connect

#[test]
fn connect_worker_properties() {
    let (model, secrets) = load();
    let plan = render(&model, &secrets, "connect-1");
    let p = props(&plan, layout::CONNECT_PROPERTIES);
    let jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"kafka_connect\" \
                password=\"${file:/etc/kafka/secrets.properties:kafka_connect.password}\";";
    assert_keys(
        &p,
        &[
            (
                "bootstrap.servers",
                "broker-1.kafka.internal:9092,broker-2.kafka.internal:9092,broker-3.kafka.internal:9092,broker-4.kafka.internal:9092",
            ),
            ("group.id", "connect-cluster"),
            ("config.storage.topic", "connect-configs"),
            ("offset.storage.topic", "connect-offsets"),
            ("status.storage.topic", "connect-status"),
            ("config.storage.replication.factor", "3"),
            ("offset.storage.replication.factor", "3"),
            ("status.storage.replication.factor", "3"),
            // connect.settings override the converter defaults...
            (
                "key.converter",
                "org.apache.kafka.connect.storage.StringConverter",
            ),
            (
                "value.converter",
                "org.apache.kafka.connect.json.JsonConverter",
            ),
            ("value.converter.schemas.enable", "false"),
            // ...which stay where not overridden.
            ("key.converter.schemas.enable", "false"),
            ("listeners", "http://10.0.1.31:8083"),
            ("rest.advertised.host.name", "connect-1.kafka.internal"),
            (
                "plugin.path",
                "/opt/kafka-connect/plugins,/opt/kafka/libs/connect-file-4.1.1.jar",
            ),
            ("consumer.client.rack", "eu-central-1a"),
            ("config.providers", "file"),
            (
                "config.providers.file.class",
                "org.apache.kafka.common.config.provider.FileConfigProvider",
            ),
        ],
    );
    for prefix in ["", "producer.", "consumer.", "admin."] {
        assert_keys(
            &p,
            &[
                (&format!("{prefix}security.protocol"), "SASL_SSL"),
                (&format!("{prefix}sasl.mechanism"), "SCRAM-SHA-512"),
                (&format!("{prefix}sasl.jaas.config"), jaas),
                (&format!("{prefix}ssl.truststore.type"), "PEM"),
                (
                    &format!("{prefix}ssl.truststore.location"),
                    layout::TRUSTSTORE,
                ),
            ],
        );
    }
    assert_eq!(
        plan.file(layout::CONNECT_PROPERTIES)
            .expect("file")
            .on_change,
        restart(layout::CONNECT_UNIT)
    );

    let secrets_file = plan.file(layout::KAFKA_SECRETS).expect("connect secrets");
    assert!(secrets_file.sensitive && secrets_file.mode == 0o600 && secrets_file.owner == "kafka");
    assert_eq!(
        props(&plan, layout::KAFKA_SECRETS)["kafka_connect.password"],
        password(&model, &secrets, "kafka_connect")
    );

    let connect = plan
        .unit(layout::CONNECT_UNIT)
        .expect("kafka-connect.service");
    assert!(connect.enable && connect.start && connect.kafka);
    assert_eq!(
        started_script(one(&connect.contents, "ExecStart")),
        "/opt/kafka-resolved/bin/connect-distributed.sh /etc/kafka/connect-distributed.properties"
    );
    assert_eq!(one(&connect.contents, "User"), "kafka");
    assert!(plan.unit(layout::KAFKA_UNIT).is_none() && plan.unit(layout::FORMAT_UNIT).is_none());
}

// -------------------------------------------------- every Kafka JVM node

#[test]
fn kafka_env_sets_heap_jmx_agent_and_log_dir() {
    for (node, heap, address, port, unit) in [
        (
            "controller-1",
            "512m",
            "10.0.1.21",
            8079,
            layout::KAFKA_UNIT,
        ),
        ("broker-4", "1g", "10.0.2.12", 8080, layout::KAFKA_UNIT),
        ("connect-1", "1g", "10.0.1.31", 8079, layout::CONNECT_UNIT),
    ] {
        let plan = example_plan(node);
        let env = text(&plan, layout::KAFKA_ENV);
        assert!(
            env.contains(&format!("KAFKA_HEAP_OPTS=\"-Xms{heap} -Xmx{heap}\"\n")),
            "{node}: {env}"
        );
        assert!(
            env.contains(&format!(
                "KAFKA_OPTS=-javaagent:/opt/jmx_exporter/jmx_prometheus_javaagent.jar={address}:{port}:/etc/kafka/jmx-exporter.yaml\n"
            )),
            "{node}: {env}"
        );
        assert!(env.contains("LOG_DIR=/var/log/kafka\n"));
        assert_eq!(
            plan.file(layout::KAFKA_ENV).expect("env").on_change,
            restart(unit)
        );
        assert_eq!(
            plan.file(layout::JMX_EXPORTER_CONFIG)
                .expect("jmx")
                .on_change,
            restart(unit)
        );
        assert!(
            plan.users
                .iter()
                .any(|u| u.name == "kafka" && u.home == layout::KAFKA_HOME)
        );
        for dir in [layout::KAFKA_HOME, layout::KAFKA_LOG_DIR] {
            let d = plan
                .directories
                .iter()
                .find(|d| d.path == dir)
                .expect("kafka dir");
            assert_eq!((d.owner.as_str(), d.mode), ("kafka", 0o750));
        }
    }
}

#[test]
fn certificates_and_ca_change_classes_per_role() {
    for (node, address, on_change) in [
        (
            "broker-1",
            "10.0.1.11",
            OnChange::KafkaDynamicReload(layout::KAFKA_UNIT.to_owned()),
        ),
        ("controller-1", "10.0.1.21", restart(layout::KAFKA_UNIT)),
        ("connect-1", "10.0.1.31", restart(layout::CONNECT_UNIT)),
    ] {
        let plan = example_plan(node);
        let [cert] = plan.certificates.as_slice() else {
            panic!("{node}: one certificate expected")
        };
        assert_eq!(cert.common_name, node);
        assert_eq!(cert.dns_names, [format!("{node}.kafka.internal")]);
        assert_eq!(
            cert.ip_addresses,
            [address.parse::<std::net::Ipv4Addr>().expect("ip")]
        );
        assert_eq!(cert.keystore_path, layout::KEYSTORE);
        assert_eq!(cert.owner, "kafka");
        assert_eq!(
            (cert.validity_seconds, cert.renew_before_seconds),
            (90 * 86400, 30 * 86400)
        );
        assert_eq!(cert.on_change, std::slice::from_ref(&on_change));
        let ca = plan.file(layout::TRUSTSTORE).expect("CA");
        assert_eq!(ca.on_change, on_change);
    }
    let obs = example_plan("observability-1");
    let ca = obs.file(layout::TRUSTSTORE).expect("CA on every node");
    assert_eq!(ca.on_change, restart(layout::COORDINATOR_UNIT));
    let (model, _) = load();
    assert_eq!(ca.contents, model.ca_certificate.as_bytes());
    assert!(!obs.users.iter().any(|u| u.name == "kafka"));
}

#[test]
fn artifacts_follow_the_distribution() {
    let (mut model, secrets) = load();
    let plan = render(&model, &secrets, "broker-1");
    let [kafka] = plan.artifacts.as_slice() else {
        panic!("only Kafka without a JMX exporter URL")
    };
    assert_eq!(
        kafka.url,
        "https://archive.apache.org/dist/kafka/4.1.1/kafka_2.13-4.1.1.tgz"
    );
    assert_eq!(
        kafka.sha512_url.as_deref(),
        Some("https://archive.apache.org/dist/kafka/4.1.1/kafka_2.13-4.1.1.tgz.sha512")
    );
    assert_eq!(
        (kafka.install_to.as_str(), kafka.unpack),
        ("/opt/kafka", true)
    );
    assert_eq!(kafka.on_change, restart(layout::KAFKA_UNIT));

    model.cluster.kafka.jmx_exporter.url =
        Some(DownloadUrl::try_from("https://repo.example/jmx.jar").expect("url"));
    model.cluster.kafka.distribution.value = Distribution::Apt {
        source: SingleLine::try_from(
            "deb [signed-by=/usr/share/keyrings/kafka.gpg] https://apt.example stable main",
        )
        .expect("line"),
        package: Name::try_from("kafka").expect("name"),
        version: Some(SingleLine::try_from("4.1.1-1").expect("line")),
    };
    let plan = render(&model, &secrets, "connect-1");
    let kafka = plan
        .artifacts
        .iter()
        .find(|a| a.name == "kafka")
        .expect("kafka");
    let apt = kafka.apt.as_ref().expect("apt package");
    assert_eq!(
        (apt.package.as_str(), apt.version.as_deref()),
        ("kafka", Some("4.1.1-1"))
    );
    assert_eq!(kafka.on_change, restart(layout::CONNECT_UNIT));
    let jar = plan
        .artifacts
        .iter()
        .find(|a| a.name == "jmx-exporter")
        .expect("jmx exporter");
    assert_eq!(
        (jar.url.as_str(), jar.install_to.as_str(), jar.unpack),
        (
            "https://repo.example/jmx.jar",
            "/opt/jmx_exporter/jmx_prometheus_javaagent.jar",
            false
        )
    );
    // Installing packages needs /usr writable for the agent.
    let agent = unit(&plan, layout::AGENT_UNIT);
    assert!(one(agent, "ReadWritePaths").split(' ').any(|p| p == "/usr"));
    assert!(directive(agent, "RestrictSUIDSGID").is_empty());
}

// ----------------------------------------------------------------- common

#[test]
fn common_units_on_every_node() {
    let (model, secrets) = load();
    for node in &model.nodes {
        let plan = render(&model, &secrets, node.name.as_str());
        let exporter = unit(&plan, layout::NODE_EXPORTER_UNIT);
        assert_eq!(
            one(exporter, "ExecStart"),
            format!(
                "/usr/bin/prometheus-node-exporter --web.listen-address={}:9100",
                node.address.value
            )
        );
        let agent = plan.unit(layout::AGENT_UNIT).expect("agent unit");
        assert!(agent.enable && agent.start && !agent.kafka);
        let a = &agent.contents;
        assert_eq!(one(a, "Type"), "notify");
        assert!(!one(a, "WatchdogSec").is_empty());
        assert_eq!(one(a, "Restart"), "always");
        assert_eq!(
            one(a, "ExecStart"),
            "/usr/local/bin/kraftops-agent run --config /etc/kraftops/agent.yaml"
        );
        assert_eq!(one(a, "ProtectSystem"), "strict");
        let writable: Vec<&str> = one(a, "ReadWritePaths").split(' ').collect();
        for path in ["/etc", "/var/lib", "-/opt"] {
            assert!(writable.contains(&path), "{path} writable for the agent");
        }
        assert!(!writable.contains(&"/usr"), "no apt install in the example");
        assert!(
            !one(a, "CapabilityBoundingSet").contains("CAP_CHOWN"),
            "the agent chowns files"
        );
    }
}

#[test]
fn rendering_is_deterministic_and_needs_its_secrets() {
    let (model, secrets) = load();
    for node in ["controller-1", "broker-2", "connect-1"] {
        let a = render(&model, &secrets, node);
        let b = render(&model, &secrets, node);
        assert_eq!(a, b);
        assert!(
            a.files
                .iter()
                .zip(&b.files)
                .all(|(x, y)| x.contents == y.contents)
        );
    }
    let mut partial = secrets.clone();
    partial.retain(|name, _| name.as_str() != "broker-password");
    for node in ["controller-1", "broker-1"] {
        match roles::render(&model, node, &partial) {
            Err(RenderError::MissingSecret { name, .. }) => assert_eq!(name, "broker-password"),
            other => panic!("{node}: expected a missing secret, got {other:?}"),
        }
    }
}

// ------------------------------------------------- JMX exporter contract

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct JmxConfig {
    lowercase_output_name: bool,
    lowercase_output_label_names: bool,
    rules: Vec<JmxRule>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JmxRule {
    pattern: String,
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    value: Option<u32>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

fn jmx_config(node: &str) -> JmxConfig {
    let plan = example_plan(node);
    serde_saphyr::from_str(text(&plan, layout::JMX_EXPORTER_CONFIG))
        .expect("the JMX exporter config parses")
}

/// The metric (name, sorted labels, value) jmx_exporter 1.x makes of one
/// scraped attribute, given as `domain<key=value, ...><>attribute: value`.
fn export(
    config: &JmxConfig,
    input: &str,
) -> Option<(String, BTreeMap<String, String>, Option<u32>)> {
    for rule in &config.rules {
        let Some(groups) = jmx_regex::full_match(&format!(".*(?:{}).*", rule.pattern), input)
        else {
            continue;
        };
        let mut name = safe_name(&jmx_regex::substitute(&rule.name, &groups));
        if config.lowercase_output_name {
            name = name.to_lowercase();
        }
        let labels = rule
            .labels
            .iter()
            .map(|(k, v)| {
                let mut key = safe_name(&jmx_regex::substitute(k, &groups));
                if config.lowercase_output_label_names {
                    key = key.to_lowercase();
                }
                (key, jmx_regex::substitute(v, &groups))
            })
            .collect();
        return Some((name, labels, rule.value));
    }
    None
}

/// jmx_exporter's `safeName`: anything but `[a-zA-Z0-9:_]` becomes `_`, runs of `_` collapse.
fn safe_name(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        let c = if c.is_ascii_alphanumeric() || c == ':' {
            c
        } else {
            '_'
        };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    out
}

/// Expected labels of a metric.
type Labels = &'static [(&'static str, &'static str)];
/// A scraped attribute, the metric it must become and that metric's labels.
type MetricCase = (&'static str, &'static str, Labels);

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn jmx_exporter_produces_the_contracted_kafka_metric_names() {
    for node in ["broker-1", "controller-2"] {
        let config = jmx_config(node);
        assert!(config.lowercase_output_name);
        assert!(
            config
                .rules
                .iter()
                .all(|r| matches!(r.kind.as_str(), "GAUGE" | "COUNTER"))
        );
        let cases: &[MetricCase] = &[
            (
                "kafka.server<type=ReplicaManager, name=UnderReplicatedPartitions><>Value: 0",
                "kafka_server_replicamanager_underreplicatedpartitions",
                &[],
            ),
            (
                "kafka.server<type=ReplicaManager, name=UnderMinIsrPartitionCount><>Value: 0",
                "kafka_server_replicamanager_underminisrpartitioncount",
                &[],
            ),
            (
                "kafka.server<type=ReplicaManager, name=PartitionCount><>Value: 7",
                "kafka_server_replicamanager_partitioncount",
                &[],
            ),
            (
                "kafka.server<type=ReplicaManager, name=LeaderCount><>Value: 3",
                "kafka_server_replicamanager_leadercount",
                &[],
            ),
            (
                "kafka.controller<type=KafkaController, name=ActiveControllerCount><>Value: 1",
                "kafka_controller_kafkacontroller_activecontrollercount",
                &[],
            ),
            (
                "kafka.controller<type=KafkaController, name=OfflinePartitionsCount><>Value: 0",
                "kafka_controller_kafkacontroller_offlinepartitionscount",
                &[],
            ),
            (
                "kafka.controller<type=KafkaController, name=GlobalTopicCount><>Value: 4",
                "kafka_controller_kafkacontroller_globaltopiccount",
                &[],
            ),
            (
                "kafka.controller<type=KafkaController, name=GlobalPartitionCount><>Value: 12",
                "kafka_controller_kafkacontroller_globalpartitioncount",
                &[],
            ),
            (
                "kafka.server<type=BrokerTopicMetrics, name=BytesInPerSec, topic=orders.v1><>Count: 10",
                "kafka_server_brokertopicmetrics_bytesin_total",
                &[("topic", "orders.v1")],
            ),
            (
                "kafka.server<type=BrokerTopicMetrics, name=BytesInPerSec><>Count: 10",
                "kafka_server_brokertopicmetrics_bytesin_total",
                &[],
            ),
            (
                "kafka.server<type=BrokerTopicMetrics, name=BytesOutPerSec><>Count: 10",
                "kafka_server_brokertopicmetrics_bytesout_total",
                &[],
            ),
            (
                "kafka.server<type=BrokerTopicMetrics, name=MessagesInPerSec, topic=my-kafka.topic><>Count: 5",
                "kafka_server_brokertopicmetrics_messagesin_total",
                &[("topic", "my-kafka.topic")],
            ),
            (
                "kafka.server<type=BrokerTopicMetrics, name=MessagesInPerSec><>Count: 5",
                "kafka_server_brokertopicmetrics_messagesin_total",
                &[],
            ),
            (
                "kafka.network<type=RequestMetrics, name=RequestsPerSec, request=Produce, version=9><>Count: 3",
                "kafka_network_requestmetrics_requests_total",
                &[("request", "Produce"), ("version", "9")],
            ),
            (
                "kafka.log<type=Log, name=Size, topic=orders, partition=0><>Value: 5",
                "kafka_log_log_size",
                &[("topic", "orders"), ("partition", "0")],
            ),
            (
                "kafka.server<type=raft-metrics><>high-watermark: 100",
                "kafka_server_raftmetrics_high_watermark",
                &[],
            ),
            (
                "kafka.server<type=raft-metrics><>current-leader: 3001",
                "kafka_server_raftmetrics_current_leader",
                &[],
            ),
            (
                "kafka.server<type=raft-metrics><>commit-latency-avg: 1.5",
                "kafka_server_raftmetrics_commit_latency_avg",
                &[],
            ),
            (
                "kafka.server<type=raft-metrics><>current-state: leader",
                "kafka_server_raftmetrics_current_state",
                &[("state", "leader")],
            ),
        ];
        for (input, name, expected) in cases {
            let (got, got_labels, _) =
                export(&config, input).unwrap_or_else(|| panic!("{node}: no rule matches {input}"));
            assert_eq!(
                (got.as_str(), got_labels),
                (*name, labels(expected)),
                "{node}: {input}"
            );
        }
        // Rates are Prometheus' job: only the meters' counts are exported.
        assert!(
            export(
                &config,
                "kafka.server<type=BrokerTopicMetrics, name=BytesInPerSec><>OneMinuteRate: 1.5"
            )
            .is_none()
        );
    }
}

#[test]
fn jmx_exporter_produces_the_contracted_connect_metric_names() {
    let config = jmx_config("connect-1");
    assert!(config.lowercase_output_name);
    let cases: &[(&str, &str, Labels, Option<u32>)] = &[
        (
            "kafka.connect<type=connect-worker-metrics><>connector-count: 1",
            "kafka_connect_connect_worker_metrics_connector_count",
            &[],
            None,
        ),
        (
            "kafka.connect<type=connect-worker-metrics><>task-count: 2",
            "kafka_connect_connect_worker_metrics_task_count",
            &[],
            None,
        ),
        (
            "kafka.connect<type=connect-worker-metrics, connector=datagen><>connector-failed-task-count: 0",
            "kafka_connect_connect_worker_metrics_connector_failed_task_count",
            &[("connector", "datagen")],
            None,
        ),
        (
            "kafka.connect<type=connect-worker-metrics, connector=datagen><>connector-running-task-count: 1",
            "kafka_connect_connect_worker_metrics_connector_running_task_count",
            &[("connector", "datagen")],
            None,
        ),
        (
            "kafka.connect<type=connector-metrics, connector=datagen><>status: running",
            "kafka_connect_connector_status",
            &[("connector", "datagen"), ("status", "running")],
            Some(1),
        ),
        (
            "kafka.connect<type=connect-worker-rebalance-metrics><>rebalance-avg-time-ms: 5",
            "kafka_connect_connect_worker_rebalance_metrics_rebalance_avg_time_ms",
            &[],
            None,
        ),
    ];
    for (input, name, expected, value) in cases {
        let got = export(&config, input).unwrap_or_else(|| panic!("no rule matches {input}"));
        assert_eq!(
            got,
            ((*name).to_owned(), labels(expected), *value),
            "{input}"
        );
    }
}

#[test]
fn the_alert_rules_only_use_metrics_the_exporter_produces() {
    // Every kafka_* metric the example's alert rules query must be one the
    // contract tests above pin down.
    let contracted = [
        "kafka_server_replicamanager_underreplicatedpartitions",
        "kafka_server_replicamanager_underminisrpartitioncount",
        "kafka_controller_kafkacontroller_offlinepartitionscount",
        "kafka_controller_kafkacontroller_activecontrollercount",
        "kafka_connect_connector_status",
        "kafka_connect_connect_worker_metrics_connector_failed_task_count",
    ];
    let (model, _) = load();
    for file in &model.rules {
        for group in &file.groups {
            for rule in &group.rules {
                for word in rule
                    .expr
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                {
                    if word.starts_with("kafka_") {
                        assert!(
                            contracted.contains(&word),
                            "{}: {word} is not produced by the JMX exporter rules",
                            file.file
                        );
                    }
                }
            }
        }
    }
}

/// Just enough of `java.util.regex` for the exporter's patterns: literals,
/// `.`, `\w`, `\<c>`, `[a-z-]`, groups (capturing, `(?:`), `|`, and greedy
/// `*`, `+`, `?`, matched by backtracking in Java's order.
mod jmx_regex {
    #[derive(Debug)]
    enum Node {
        Char(char),
        Any,
        Word,
        Class(Vec<(char, char)>),
        Group(Vec<Vec<Node>>, Option<usize>),
        Repeat(Box<Node>, usize, Option<usize>),
    }

    struct Parser<'a> {
        chars: std::iter::Peekable<std::str::Chars<'a>>,
        groups: usize,
    }

    impl Parser<'_> {
        fn alternatives(&mut self) -> Vec<Vec<Node>> {
            let mut alts = vec![Vec::new()];
            while let Some(&c) = self.chars.peek() {
                match c {
                    ')' => break,
                    '|' => {
                        self.chars.next();
                        alts.push(Vec::new());
                    }
                    _ => {
                        let atom = self.atom();
                        let node = match self.chars.peek() {
                            Some('*') => Node::Repeat(Box::new(atom), 0, None),
                            Some('+') => Node::Repeat(Box::new(atom), 1, None),
                            Some('?') => Node::Repeat(Box::new(atom), 0, Some(1)),
                            _ => {
                                alts.last_mut().expect("one").push(atom);
                                continue;
                            }
                        };
                        self.chars.next();
                        alts.last_mut().expect("one").push(node);
                    }
                }
            }
            alts
        }

        fn atom(&mut self) -> Node {
            match self.chars.next().expect("atom") {
                '.' => Node::Any,
                '\\' => match self.chars.next().expect("escape") {
                    'w' => Node::Word,
                    c => Node::Char(c),
                },
                '[' => {
                    let mut ranges = Vec::new();
                    while let Some(c) = self.chars.next() {
                        match c {
                            ']' => break,
                            c if self.chars.peek() == Some(&'-') => {
                                self.chars.next();
                                match self.chars.next().expect("range end") {
                                    ']' => {
                                        ranges.extend([(c, c), ('-', '-')]);
                                        break;
                                    }
                                    end => ranges.push((c, end)),
                                }
                            }
                            c => ranges.push((c, c)),
                        }
                    }
                    Node::Class(ranges)
                }
                '(' => {
                    let capture = if self.chars.peek() == Some(&'?') {
                        self.chars.next();
                        assert_eq!(
                            self.chars.next(),
                            Some(':'),
                            "only (?: groups are supported"
                        );
                        None
                    } else {
                        self.groups += 1;
                        Some(self.groups)
                    };
                    let alts = self.alternatives();
                    assert_eq!(self.chars.next(), Some(')'), "unbalanced group");
                    Node::Group(alts, capture)
                }
                c => Node::Char(c),
            }
        }
    }

    type Caps = Vec<Option<(usize, usize)>>;
    type Cont<'a> = &'a mut dyn FnMut(usize, &mut Caps) -> bool;

    fn seq(nodes: &[Node], s: &[char], pos: usize, caps: &mut Caps, k: Cont<'_>) -> bool {
        match nodes.split_first() {
            None => k(pos, caps),
            Some((node, rest)) => one(node, s, pos, caps, &mut |p, caps: &mut Caps| {
                seq(rest, s, p, caps, &mut *k)
            }),
        }
    }

    fn one(node: &Node, s: &[char], pos: usize, caps: &mut Caps, k: Cont<'_>) -> bool {
        let here = s.get(pos).copied();
        match node {
            Node::Char(c) => here == Some(*c) && k(pos + 1, caps),
            Node::Any => here.is_some_and(|c| c != '\n') && k(pos + 1, caps),
            Node::Word => {
                here.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') && k(pos + 1, caps)
            }
            Node::Class(ranges) => {
                here.is_some_and(|c| ranges.iter().any(|(a, b)| (*a..=*b).contains(&c)))
                    && k(pos + 1, caps)
            }
            Node::Group(alts, capture) => alts.iter().any(|alt| {
                seq(
                    alt,
                    s,
                    pos,
                    &mut *caps,
                    &mut |end, caps: &mut Caps| match capture {
                        Some(i) => {
                            let saved = caps[*i];
                            caps[*i] = Some((pos, end));
                            k(end, caps) || {
                                caps[*i] = saved;
                                false
                            }
                        }
                        None => k(end, caps),
                    },
                )
            }),
            Node::Repeat(inner, min, max) => repeat(inner, *min, *max, 0, s, pos, caps, k),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn repeat(
        inner: &Node,
        min: usize,
        max: Option<usize>,
        count: usize,
        s: &[char],
        pos: usize,
        caps: &mut Caps,
        k: Cont<'_>,
    ) -> bool {
        // Greedy: one more first, then what follows.
        let more = max.is_none_or(|m| count < m)
            && one(inner, s, pos, caps, &mut |p, caps: &mut Caps| {
                p > pos && repeat(inner, min, max, count + 1, s, p, caps, &mut *k)
            });
        more || (count >= min && k(pos, caps))
    }

    /// The capture groups (0 = whole input) if `pattern` matches all of `input`.
    pub fn full_match(pattern: &str, input: &str) -> Option<Vec<String>> {
        let mut parser = Parser {
            chars: pattern.chars().peekable(),
            groups: 0,
        };
        let nodes = parser.alternatives();
        assert!(parser.chars.next().is_none(), "unbalanced ) in {pattern}");
        let s: Vec<char> = input.chars().collect();
        let mut caps: Caps = vec![None; parser.groups + 1];
        let mut result = None;
        let root = Node::Group(nodes, Some(0));
        one(&root, &s, 0, &mut caps, &mut |end, caps: &mut Caps| {
            if end != s.len() {
                return false;
            }
            result = Some(
                caps.iter()
                    .map(|c| c.map_or(String::new(), |(a, b)| s[a..b].iter().collect()))
                    .collect(),
            );
            true
        });
        result
    }

    /// Java's `Matcher.replaceAll` replacement syntax, for `$1`-style references.
    pub fn substitute(template: &str, groups: &[String]) -> String {
        let mut out = String::new();
        let mut chars = template.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, chars.peek().and_then(|d| d.to_digit(10))) {
                ('$', Some(d)) => {
                    chars.next();
                    out.push_str(&groups[d as usize]);
                }
                _ => out.push(c),
            }
        }
        out
    }

    #[test]
    fn matches_like_java() {
        let groups = full_match(".*(?:a(\\w+)<t=(.+)>).*", "xa_b1<t=q>, r>z").expect("matches");
        assert_eq!(groups[1], "_b1");
        // Greedy (.+) takes the last '>' it can.
        assert_eq!(groups[2], "q>, r");
        assert!(full_match("[a-z-]+", "ab-c").is_some());
        assert!(full_match("[a-z-]+", "ab:c").is_none());
        assert_eq!(full_match("(x|yz)+", "yzx").expect("alternation")[1], "x");
    }
}

#[test]
fn grafana_can_be_turned_off() {
    let (mut model, secrets) = load();
    let on = render(&model, &secrets, "observability-1");
    assert!(on.unit(layout::GRAFANA_UNIT).is_some());
    model.cluster.observability.grafana.enabled = false;
    let off = render(&model, &secrets, "observability-1");
    assert!(off.unit(layout::GRAFANA_UNIT).is_none(), "no Grafana unit");
    assert!(
        off.files.iter().all(|f| !f.path.contains("grafana")),
        "no Grafana file: {:?}",
        off.files.iter().map(|f| &f.path).collect::<Vec<_>>()
    );
    assert!(off.users.iter().all(|u| u.name != layout::GRAFANA_USER));
    // Debian's own grafana-server stays masked; Prometheus no longer scrapes Grafana.
    assert!(
        off.masked_units
            .iter()
            .any(|u| u == "grafana-server.service")
    );
    let prometheus = text(&off, "/etc/prometheus/prometheus.yml");
    assert!(!prometheus.contains("job_name: grafana"), "{prometheus}");
    assert!(text(&on, "/etc/prometheus/prometheus.yml").contains("job_name: grafana"));
    // The other nodes do not change.
    assert_eq!(
        render(&model, &secrets, "broker-1"),
        example_plan("broker-1")
    );
}

/// Splits an `ExecStart=` line into words the way systemd does for what
/// kraftops renders: double-quoted words with `\"` and `\\` escapes, `$$`
/// for a literal `$`.
fn systemd_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        let Some(&first) = chars.peek() else {
            return words;
        };
        let mut word = String::new();
        if first == '"' {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => word.extend(chars.next()),
                    c => word.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ' ' {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        words.push(word.replace("$$", "$"));
    }
}

/// Runs a rendered Kafka `ExecStart=` with a real `/bin/sh` against a
/// fake install: `/opt/kafka` replaced by a symlink in a temp directory
/// pointing at a version directory whose script prints how it was called.
/// Returns that, with the temp directory shown as `/opt`: the script must be
/// started through the resolved version directory, not the symlink.
fn started_script(exec_start: &str) -> String {
    let words = systemd_words(exec_start);
    let temp = tempfile::tempdir().expect("tempdir");
    let opt = temp.path();
    let version_dir = opt.join("kafka-resolved");
    std::fs::create_dir_all(version_dir.join("bin")).expect("bin");
    for script in ["kafka-server-start.sh", "connect-distributed.sh"] {
        let path = version_dir.join("bin").join(script);
        std::fs::write(&path, "#!/bin/sh\necho \"$0 $*\"\n").expect("script");
        let mut perms = std::fs::metadata(&path).expect("meta").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&path, perms).expect("chmod");
    }
    std::os::unix::fs::symlink(&version_dir, opt.join("kafka")).expect("symlink");
    let fake = opt.join("kafka").display().to_string();
    let words: Vec<String> = words
        .iter()
        .map(|w| w.replace("/opt/kafka", &fake))
        .collect();
    assert_eq!(words[0], "/bin/sh", "{exec_start}");
    let out = std::process::Command::new(&words[0])
        .args(&words[1..])
        .output()
        .expect("running /bin/sh");
    assert!(out.status.success(), "{exec_start}: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .replace(&opt.display().to_string(), "/opt")
}
