//! Every way an operator can get a repository wrong, and the exact
//! `file:line:col: message` they are told.
//!
//! Each case copies the example repository into memory, makes one edit and
//! checks the complete list of diagnostics, so a case also fails when an edit
//! sets off unrelated follow-up errors.

use std::path::Path;

use desired_state::{FileSet, load_files};

/// The example repository, read into memory.
fn seed() -> Repo {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/seed");
    Repo(desired_state::read_repository(&root).unwrap_or_else(|d| panic!("{d}")))
}

/// An in-memory repository being edited into a broken one.
struct Repo(FileSet);

impl Repo {
    fn text(&self, file: &str) -> String {
        let bytes = self
            .0
            .get(file)
            .unwrap_or_else(|| panic!("{file} is in the repository"));
        String::from_utf8(bytes.clone()).expect("UTF-8")
    }

    /// Replaces the one occurrence of `from` in `file` with `to`. Panics if
    /// `from` is not there exactly once, so an edit never silently misses.
    fn replace(mut self, file: &str, from: &str, to: &str) -> Self {
        let text = self.text(file);
        let found = text.matches(from).count();
        assert_eq!(
            found, 1,
            "{from:?} occurs {found} times in {file}; make the edit unambiguous"
        );
        self.0
            .insert(file.to_owned(), text.replacen(from, to, 1).into_bytes());
        self
    }

    fn add(mut self, file: &str, contents: impl Into<Vec<u8>>) -> Self {
        let previous = self.0.insert(file.to_owned(), contents.into());
        assert!(previous.is_none(), "{file} already exists");
        self
    }

    fn remove(mut self, file: &str) -> Self {
        assert!(self.0.remove(file).is_some(), "{file} is in the repository");
        self
    }

    fn problems(&self) -> Vec<String> {
        match load_files(&self.0) {
            Ok(_) => Vec::new(),
            Err(d) => d.iter().map(ToString::to_string).collect(),
        }
    }

    /// The problems with the source line each one points at, for a readable
    /// failure message.
    fn explain(&self, problems: &[String]) -> String {
        let mut out = String::new();
        for p in problems {
            out.push_str(&format!("  {p}\n"));
            let mut parts = p.splitn(4, ':');
            let (Some(file), Some(line), Some(col)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let (Ok(line), Ok(col)) = (line.parse::<usize>(), col.parse::<usize>()) else {
                continue;
            };
            let Some(text) = self.0.get(file).and_then(|b| std::str::from_utf8(b).ok()) else {
                continue;
            };
            if let Some(src) = text.lines().nth(line.saturating_sub(1)) {
                out.push_str(&format!(
                    "      | {src}\n      | {}^\n",
                    " ".repeat(col.saturating_sub(1))
                ));
            }
        }
        out
    }
}

/// Asserts that loading `repo` reports exactly `expected`, in order.
#[track_caller]
fn assert_problems(repo: &Repo, expected: &[&str]) {
    let actual = repo.problems();
    assert!(
        !expected.is_empty(),
        "a bad-input case expects at least one problem"
    );
    assert_eq!(
        actual,
        expected,
        "\nactual problems:\n{}",
        repo.explain(&actual)
    );
}

#[test]
fn the_unedited_example_has_no_problems() {
    let repo = seed();
    assert!(repo.0.contains_key("cluster.yaml") && repo.0.contains_key("secrets/ca-key.age"));
    assert_eq!(repo.problems(), Vec::<String>::new());
}

// ------------------------------------------------------------------ YAML syntax

#[test]
fn unclosed_bracket() {
    let repo = seed().replace(
        "cluster.yaml",
        "log_dirs: [/var/lib/kafka/data]",
        "log_dirs: [/var/lib/kafka/data",
    );
    assert_problems(
        &repo,
        &[
            "cluster.yaml:50:11: illegal placement of ':' indicator; the `[` at 49:13 is still open here",
        ],
    );
}

#[test]
fn bad_indentation() {
    let repo = seed().replace("nodes.yaml", "    node_id: 2\n", "   node_id: 2\n");
    assert_problems(
        &repo,
        &["nodes.yaml:12:4: while parsing a block collection, did not find expected '-' indicator"],
    );
}

#[test]
fn bad_indentation_of_a_list_item() {
    let repo = seed().replace("nodes.yaml", "  - name: broker-2\n", " - name: broker-2\n");
    assert_problems(
        &repo,
        &["nodes.yaml:10:2: while parsing a block mapping, did not find expected key"],
    );
}

#[test]
fn unclosed_bracket_in_users_is_not_followed_by_undefined_users() {
    // The users file does not parse, so "user broker is not defined" would
    // only repeat that problem.
    let repo = seed().replace(
        "users/platform.yaml",
        "operations: [read, describe]\n  - name: kafka_connect",
        "operations: [read, describe\n  - name: kafka_connect",
    );
    assert_problems(
        &repo,
        &[
            "users/platform.yaml:28:9: illegal placement of ':' indicator; the `[` at 27:21 is still open here",
        ],
    );
}

// ------------------------------------------------------------------ unknown keys

#[test]
fn unknown_key_in_cluster_yaml() {
    let repo = seed().replace(
        "cluster.yaml",
        "  install_dir: /opt/kafka\n",
        "  install_directory: /opt/kafka\n",
    );
    assert_problems(
        &repo,
        &[
            "cluster.yaml:15:3: unknown field `install_directory`, expected one of version, distribution, install_dir, jmx_exporter, metadata_version",
        ],
    );
}

#[test]
fn unknown_key_in_nodes_yaml() {
    let repo = seed().replace(
        "nodes.yaml",
        "    instance_type: t3.medium\n",
        "    instance_size: t3.medium\n",
    );
    assert_problems(
        &repo,
        &[
            "nodes.yaml:58:5: unknown field `instance_size`, expected one of name, role, node_id, directory_id, az, address, instance_type, settings",
        ],
    );
}

#[test]
fn unknown_key_in_a_topic() {
    let repo = seed().replace(
        "topics/app.yaml",
        "    partitions: 3\n",
        "    partitons: 3\n",
    );
    assert_problems(
        &repo,
        &[
            "topics/app.yaml:11:5: unknown field `partitons`, expected one of name, partitions, replication_factor, config, delete",
        ],
    );
}

#[test]
fn unknown_key_in_an_acl() {
    let repo = seed().replace(
        "users/platform.yaml",
        "        pattern: prefixed\n        operations: [read, describe]",
        "        patern: prefixed\n        operations: [read, describe]",
    );
    assert_problems(
        &repo,
        &[
            "users/platform.yaml:26:9: unknown field `patern`, expected one of resource, name, pattern, operations, permission, host",
        ],
    );
}

#[test]
fn unknown_key_in_a_connector() {
    let repo = seed().replace(
        "connectors/file-source.yaml",
        "    state: running\n",
        "    status: running\n",
    );
    assert_problems(
        &repo,
        &[
            "connectors/file-source.yaml:8:5: unknown field `status`, expected one of name, state, config",
        ],
    );
}

// ------------------------------------------------------------ types and enums

#[test]
fn string_for_partitions() {
    let repo = seed().replace(
        "topics/app.yaml",
        "    partitions: 6\n",
        "    partitions: six\n",
    );
    assert_problems(
        &repo,
        &["topics/app.yaml:5:17: expected a whole number from 0 to 4294967295, found `six`"],
    );
}

#[test]
fn unknown_role() {
    let repo = seed().replace(
        "nodes.yaml",
        "broker-2\n    role: broker\n",
        "broker-2\n    role: brokr\n",
    );
    assert_problems(
        &repo,
        &[
            "nodes.yaml:11:11: unknown variant `brokr`, expected one of controller, broker, connect, observability",
        ],
    );
}

#[test]
fn unknown_acl_operation() {
    let repo = seed().replace(
        "users/platform.yaml",
        "name: test-topic\n        operations: [read, write, describe]",
        "name: test-topic\n        operations: [read, wirte, describe]",
    );
    assert_problems(
        &repo,
        &[
            "users/platform.yaml:23:28: unknown variant `wirte`, expected one of all, read, write, create, delete, alter, describe, cluster_action, describe_configs, alter_configs, idempotent_write",
        ],
    );
}

// ------------------------------------------------------------------ nodes

#[test]
fn duplicate_node_name() {
    let repo = seed().replace("nodes.yaml", "  - name: broker-3\n", "  - name: broker-1\n");
    assert_problems(
        &repo,
        &["nodes.yaml:16:11: duplicate node name; first defined at nodes.yaml:4:11"],
    );
}

#[test]
fn duplicate_node_id() {
    let repo = seed().replace("nodes.yaml", "    node_id: 3\n", "    node_id: 1\n");
    assert_problems(
        &repo,
        &["nodes.yaml:18:14: duplicate node_id; already used by the node at nodes.yaml:6:14"],
    );
}

#[test]
fn duplicate_address() {
    let repo = seed().replace(
        "nodes.yaml",
        "    address: 10.0.1.12\n",
        "    address: 10.0.1.11\n",
    );
    assert_problems(
        &repo,
        &["nodes.yaml:20:14: duplicate address; already used by the node at nodes.yaml:8:14"],
    );
}

#[test]
fn duplicate_directory_id() {
    let repo = seed().replace(
        "nodes.yaml",
        "    directory_id: NxO682vtHTLt6GeTCBtbDA\n",
        "    directory_id: lHj4i5lmJll-L0hQplnIXg\n",
    );
    assert_problems(
        &repo,
        &["nodes.yaml:38:19: duplicate directory_id; already used by the node at nodes.yaml:31:19"],
    );
}

const CONTROLLER_3: &str = "  - name: controller-3
    role: controller
    node_id: 3003
    directory_id: cEhSheak9bo3D5HiP5mqDg
    az: eu-central-1c
    address: 10.0.3.21
    instance_type: t3.small
";

#[test]
fn two_controllers() {
    let repo = seed().replace("nodes.yaml", CONTROLLER_3, "");
    assert_problems(
        &repo,
        &["nodes.yaml:29:11: there are 2 controllers; a KRaft quorum needs 1, 3 or 5"],
    );
}

#[test]
fn four_controllers() {
    let fourth = "  - name: controller-4
    role: controller
    node_id: 3004
    directory_id: 7Nq3Hk2VQW-8dHhbnZ2ZlA
    az: eu-central-1c
    address: 10.0.3.22
    instance_type: t3.small
";
    let repo = seed().replace(
        "nodes.yaml",
        CONTROLLER_3,
        &format!("{CONTROLLER_3}{fourth}"),
    );
    assert_problems(
        &repo,
        &["nodes.yaml:29:11: there are 4 controllers; a KRaft quorum needs 1, 3 or 5"],
    );
}

#[test]
fn broker_without_node_id() {
    let repo = seed().replace("nodes.yaml", "    node_id: 4\n", "");
    assert_problems(
        &repo,
        &["nodes.yaml:22:5: node broker-4 is a broker and needs a node_id"],
    );
}

#[test]
fn connect_node_with_node_id() {
    let repo = seed().replace(
        "nodes.yaml",
        "    role: connect\n",
        "    role: connect\n    node_id: 5\n",
    );
    assert_problems(
        &repo,
        &[
            "nodes.yaml:51:14: node_id is only for brokers and controllers; connect-1 is a connect node",
        ],
    );
}

#[test]
fn controller_without_directory_id() {
    let repo = seed().replace(
        "nodes.yaml",
        "    directory_id: NxO682vtHTLt6GeTCBtbDA\n",
        "",
    );
    assert_problems(
        &repo,
        &[
            "nodes.yaml:35:5: controller controller-2 needs a directory_id (generate one with `kafka-storage.sh random-uuid`)",
        ],
    );
}

#[test]
fn bad_directory_id() {
    let repo = seed().replace(
        "nodes.yaml",
        "directory_id: NxO682vtHTLt6GeTCBtbDA",
        "directory_id: 1234-not-a-uuid",
    );
    assert_problems(
        &repo,
        &[
            r#"nodes.yaml:38:19: "1234-not-a-uuid" is not a Kafka UUID (22 characters of URL-safe base64, as `kafka-storage.sh random-uuid` prints)"#,
        ],
    );
}

#[test]
fn az_not_defined() {
    let repo = seed().replace(
        "nodes.yaml",
        "    az: eu-central-1c\n    address: 10.0.3.21\n",
        "    az: eu-central-1d\n    address: 10.0.3.21\n",
    );
    assert_problems(
        &repo,
        &[
            "nodes.yaml:46:9: availability zone eu-central-1d is not defined in cluster.yaml network.azs (known: eu-central-1a, eu-central-1b, eu-central-1c)",
        ],
    );
}

#[test]
fn address_outside_subnet() {
    let repo = seed().replace(
        "nodes.yaml",
        "    address: 10.0.2.12\n",
        "    address: 10.0.3.12\n",
    );
    assert_problems(
        &repo,
        &["nodes.yaml:26:14: address 10.0.3.12 is outside subnet 10.0.2.0/24 of eu-central-1b"],
    );
}

#[test]
fn node_name_with_a_space() {
    let repo = seed().replace(
        "nodes.yaml",
        "  - name: connect-1\n",
        "  - name: connect 1\n",
    );
    assert_problems(
        &repo,
        &[
            r#"nodes.yaml:49:11: name "connect 1" may contain only lowercase letters, digits and '-', and must not start or end with '-'"#,
        ],
    );
}

// ------------------------------------------------------------------ network

#[test]
fn overlapping_subnets() {
    let repo = seed().replace(
        "cluster.yaml",
        "      subnet: 10.0.3.0/24\n",
        "      subnet: 10.0.0.0/16\n",
    );
    assert_problems(
        &repo,
        &[
            "cluster.yaml:28:15: subnet 10.0.0.0/16 of eu-central-1c overlaps subnet 10.0.1.0/24 of eu-central-1a",
            "cluster.yaml:28:15: subnet 10.0.0.0/16 of eu-central-1c overlaps subnet 10.0.2.0/24 of eu-central-1b",
        ],
    );
}

#[test]
fn cidr_with_host_bits() {
    let repo = seed().replace(
        "cluster.yaml",
        "      subnet: 10.0.2.0/24\n",
        "      subnet: 10.0.2.1/24\n",
    );
    assert_problems(
        &repo,
        &[r#"cluster.yaml:26:15: "10.0.2.1/24" has host bits set; did you mean 10.0.2.0/24?"#],
    );
}

#[test]
fn port_collision() {
    let repo = seed().add_ports("  agent: 9100\n");
    assert_problems(
        &repo,
        &[
            "cluster.yaml:41:10: ports.node_exporter and ports.agent are both 9100; the node_exporter and the agent both run on controller, broker, connect and observability nodes",
        ],
    );
}

#[test]
fn port_collision_on_one_role() {
    let repo = seed().add_ports("  client: 9091\n");
    assert_problems(
        &repo,
        &[
            "cluster.yaml:41:11: ports.client and ports.internal are both 9091; the client listener and the inter-broker listener both run on broker nodes",
        ],
    );
}

#[test]
fn port_zero() {
    let repo = seed().add_ports("  grafana: 0\n");
    assert_problems(
        &repo,
        &["cluster.yaml:41:12: ports.grafana (Grafana) must not be 0"],
    );
}

impl Repo {
    /// Adds a `ports:` section to cluster.yaml (the example has none).
    fn add_ports(self, body: &str) -> Self {
        self.replace(
            "cluster.yaml",
            "\ntopic_defaults:\n",
            &format!("\nports:\n{body}\ntopic_defaults:\n"),
        )
    }
}

// ------------------------------------------------------------------ topics

#[test]
fn topic_replication_factor_above_broker_count() {
    let repo = seed().replace(
        "topics/app.yaml",
        "    replication_factor: 3\n",
        "    replication_factor: 5\n",
    );
    assert_problems(
        &repo,
        &["topics/app.yaml:6:25: replication_factor 5 is larger than the number of brokers (4)"],
    );
}

#[test]
fn default_replication_factor_above_broker_count() {
    let repo = seed().replace(
        "cluster.yaml",
        "  replication_factor: 3\n",
        "  replication_factor: 5\n",
    );
    assert_problems(
        &repo,
        &[
            "cluster.yaml:41:23: topic_defaults.replication_factor 5 is larger than the number of brokers (4)",
        ],
    );
}

#[test]
fn topic_min_insync_replicas_not_below_replication_factor() {
    let repo = seed().replace(
        "topics/app.yaml",
        "      min.insync.replicas: 2\n",
        "      min.insync.replicas: 3\n",
    );
    assert_problems(
        &repo,
        &["topics/app.yaml:9:28: min.insync.replicas 3 must be less than the replication factor 3"],
    );
}

#[test]
fn default_min_insync_replicas_not_below_replication_factor() {
    let repo = seed().replace(
        "cluster.yaml",
        "  min_insync_replicas: 2\n",
        "  min_insync_replicas: 3\n",
    );
    assert_problems(
        &repo,
        &[
            "cluster.yaml:42:24: topic_defaults.min_insync_replicas 3 must be less than the replication factor 3, or no broker can ever be restarted without blocking producers",
        ],
    );
}

#[test]
fn topic_replication_factor_not_above_default_min_insync_replicas() {
    let repo = seed().replace(
        "topics/app.yaml",
        "    partitions: 3\n",
        "    partitions: 3\n    replication_factor: 2\n",
    );
    assert_problems(
        &repo,
        &[
            "topics/app.yaml:12:25: replication_factor 2 must be larger than min.insync.replicas 2 (from topic_defaults.min_insync_replicas)",
        ],
    );
}

#[test]
fn topic_min_insync_replicas_not_below_default_replication_factor() {
    let repo = seed().replace(
        "topics/app.yaml",
        "      cleanup.policy: delete\n",
        "      cleanup.policy: delete\n      min.insync.replicas: 3\n",
    );
    assert_problems(
        &repo,
        &[
            "topics/app.yaml:14:28: min.insync.replicas 3 must be less than the replication factor 3 (from topic_defaults.replication_factor)",
        ],
    );
}

#[test]
fn topic_name_with_a_slash() {
    let repo = seed().replace(
        "topics/app.yaml",
        "  - name: test-topic\n",
        "  - name: bad/name\n",
    );
    assert_problems(
        &repo,
        &[
            r#"topics/app.yaml:10:11: topic name "bad/name" contains '/'; only [a-zA-Z0-9._-] are allowed"#,
        ],
    );
}

#[test]
fn topic_name_of_250_characters() {
    let long = "t".repeat(250);
    let repo = seed().replace(
        "topics/app.yaml",
        "  - name: test-topic\n",
        &format!("  - name: {long}\n"),
    );
    assert_problems(
        &repo,
        &[&format!(
            "topics/app.yaml:10:11: topic name \"{long}\" must be 1 to 249 characters long"
        )],
    );
}

#[test]
fn topic_name_dot_dot() {
    let repo = seed().replace(
        "topics/app.yaml",
        "  - name: test-topic\n",
        "  - name: \"..\"\n",
    );
    assert_problems(
        &repo,
        &[r#"topics/app.yaml:10:11: topic name ".." is not allowed"#],
    );
}

#[test]
fn topic_name_reserved_for_kafka() {
    let repo = seed().replace(
        "topics/app.yaml",
        "  - name: test-topic\n",
        "  - name: __consumer_offsets\n",
    );
    assert_problems(
        &repo,
        &[
            "topics/app.yaml:10:11: topic __consumer_offsets is internal to Kafka (names starting with __ are reserved)",
        ],
    );
}

#[test]
fn duplicate_topic_across_files() {
    let repo = seed().add(
        "topics/more.yaml",
        "topics:\n  - name: orders\n    partitions: 3\n  - name: topic-1\n    partitions: 3\n",
    );
    assert_problems(
        &repo,
        &[
            "topics/app.yaml:4:11: topic topic-1 is declared more than once; also at topics/more.yaml:4:11",
            "topics/more.yaml:4:11: topic topic-1 is declared more than once; also at topics/app.yaml:4:11",
        ],
    );
}

#[test]
fn unexpected_file_in_topics() {
    let repo = seed().add("topics/readme.txt", "topics live in *.yaml files\n");
    assert_problems(
        &repo,
        &["topics/readme.txt: unexpected file in topics/: only *.yaml files belong here"],
    );
}

// ---------------------------------------------------------- injection and settings

#[test]
fn newline_in_a_setting_value() {
    let repo = seed().replace(
        "cluster.yaml",
        "    num.io.threads: 16\n",
        "    num.io.threads: \"16\\nlisteners=PLAINTEXT://:9092\"\n",
    );
    assert_problems(
        &repo,
        &[
            r#"cluster.yaml:52:21: value "16\nlisteners=PLAINTEXT://:9092" must be a single line without control characters"#,
        ],
    );
}

#[test]
fn path_with_dot_dot() {
    let repo = seed().replace(
        "cluster.yaml",
        "  metadata_dir: /var/lib/kafka/metadata\n",
        "  metadata_dir: /var/lib/kafka/../../../etc\n",
    );
    assert_problems(
        &repo,
        &[r#"cluster.yaml:60:17: path "/var/lib/kafka/../../../etc" must not contain '..'"#],
    );
}

#[test]
fn managed_setting_listeners() {
    let repo = seed().replace(
        "cluster.yaml",
        "    num.network.threads: 8\n",
        "    num.network.threads: 8\n    listeners: PLAINTEXT://:9092\n",
    );
    assert_problems(
        &repo,
        &[
            "cluster.yaml:54:16: setting `listeners` is managed by kraftops (`listeners` are derived from nodes.yaml, security and topic_defaults); remove it",
        ],
    );
}

#[test]
fn managed_setting_ssl_prefix_on_a_node() {
    let repo = seed().replace("nodes.yaml", "    address: 10.0.1.12\n    instance_type: t3.small\n", "    address: 10.0.1.12\n    instance_type: t3.small\n    settings:\n      ssl.keystore.location: /tmp/evil.jks\n");
    assert_problems(
        &repo,
        &[
            "nodes.yaml:23:30: setting `ssl.keystore.location` is managed by kraftops (keys starting with `ssl.` are derived from nodes.yaml, security and topic_defaults); remove it",
        ],
    );
}

// ------------------------------------------------------------------ secrets

#[test]
fn dangling_user_password_secret() {
    let repo = seed().replace(
        "users/platform.yaml",
        "    password_secret: client-password\n",
        "    password_secret: client-pasword\n",
    );
    assert_problems(
        &repo,
        &[
            "users/platform.yaml:12:22: secret client-pasword does not exist (expected secrets/client-pasword.age)",
        ],
    );
}

#[test]
fn dangling_ca_key_secret() {
    let repo = seed().remove("secrets/ca-key.age");
    assert_problems(
        &repo,
        &["cluster.yaml:33:17: secret ca-key does not exist (expected secrets/ca-key.age)"],
    );
}

#[test]
fn dangling_grafana_admin_secret() {
    let repo = seed().replace(
        "cluster.yaml",
        "    admin_password_secret: grafana-admin-password\n",
        "    admin_password_secret: grafana-password\n",
    );
    assert_problems(
        &repo,
        &[
            "cluster.yaml:89:28: secret grafana-password does not exist (expected secrets/grafana-password.age)",
        ],
    );
}

#[test]
fn secret_that_is_not_age() {
    let repo = seed().add("secrets/extra.age", "hunter2\n");
    assert_problems(&repo, &["secrets/extra.age: not an age-encrypted file"]);
}

#[test]
fn referenced_secret_that_is_not_age() {
    // The file exists; "secret ca-key does not exist" would be wrong.
    let repo = seed()
        .remove("secrets/ca-key.age")
        .add("secrets/ca-key.age", "-----BEGIN PRIVATE KEY-----\n");
    assert_problems(&repo, &["secrets/ca-key.age: not an age-encrypted file"]);
}

#[test]
fn secret_with_a_bad_file_name() {
    let age = seed().text("secrets/admin-password.age");
    let repo = seed().add("secrets/Admin_Password.age", age);
    assert_problems(
        &repo,
        &[
            r#"secrets/Admin_Password.age: secret file name: name "Admin_Password" may contain only lowercase letters, digits and '-', and must not start or end with '-'"#,
        ],
    );
}

// ------------------------------------------------------------------ files

#[test]
fn missing_cluster_yaml() {
    let repo = seed().remove("cluster.yaml");
    assert_problems(
        &repo,
        &["cluster.yaml: is missing; every desired-state repository has one"],
    );
}

#[test]
fn missing_ca_certificate() {
    let repo = seed().remove("pki/ca.pem");
    assert_problems(
        &repo,
        &["cluster.yaml:32:18: CA certificate pki/ca.pem does not exist in the repository"],
    );
}

// ------------------------------------------------------------------ connectors

#[test]
fn connector_without_class() {
    let repo = seed().replace(
        "connectors/file-source.yaml",
        "      connector.class: org.apache.kafka.connect.file.FileStreamSourceConnector\n",
        "",
    );
    assert_problems(
        &repo,
        &["connectors/file-source.yaml:7:5: connector cluster-hosts needs config.connector.class"],
    );
}

#[test]
fn connector_without_a_connect_node() {
    let connect = "  - name: connect-1
    role: connect
    az: eu-central-1a
    address: 10.0.1.31
    instance_type: t3.small
";
    let repo = seed().replace("nodes.yaml", connect, "");
    assert_problems(
        &repo,
        &[
            "connectors/file-source.yaml:7:11: connector cluster-hosts is defined but nodes.yaml has no connect node to run it",
        ],
    );
}

// ------------------------------------------------------------------ users and security

#[test]
fn acl_operation_that_does_not_apply() {
    let repo = seed().replace(
        "users/platform.yaml",
        "name: topic-1\n        operations: [write, describe]",
        "name: topic-1\n        operations: [write, idempotent_write]",
    );
    assert_problems(
        &repo,
        &[
            "users/platform.yaml:42:29: operation idempotent_write does not apply to a topic resource",
        ],
    );
}

#[test]
fn inter_broker_user_not_defined() {
    let repo = seed().replace(
        "cluster.yaml",
        "  inter_broker_user: broker\n",
        "  inter_broker_user: kafka-broker\n",
    );
    assert_problems(
        &repo,
        &["cluster.yaml:36:22: security.inter_broker_user kafka-broker is not defined in users/"],
    );
}

#[test]
fn scram_iterations_out_of_range() {
    let repo = seed().replace(
        "cluster.yaml",
        "  scram_iterations: 8192\n",
        "  scram_iterations: 100000\n",
    );
    assert_problems(
        &repo,
        &[
            "cluster.yaml:38:21: scram_iterations 100000 is outside what Kafka accepts (4096 to 16384)",
        ],
    );
}

#[test]
fn tarball_with_sha512_and_sha512_url() {
    let digest = "ab".repeat(64);
    let repo = seed().replace(
        "cluster.yaml",
        "      sha512_url:",
        &format!("      sha512: {digest}\n      sha512_url:"),
    );
    assert_problems(
        &repo,
        &[
            "cluster.yaml:12:5: a tarball distribution needs exactly one of sha512 (the digest) or sha512_url (where the publisher's digest is)",
        ],
    );
}

// ------------------------------------------------------------------ dashboards

const DASHBOARD: &str = r#"{
  "uid": "kafka-overview",
  "title": "Kafka overview",
  "panels": [
    {
      "title": "Messages in",
      "datasource": { "type": "prometheus", "uid": "prometheus" },
      "targets": [{ "expr": "sum(rate(kafka_server_brokertopicmetrics_messagesin_total[5m]))" }]
    }
  ]
}
"#;

#[test]
fn the_dashboard_fixture_is_valid() {
    // The two dashboard cases below break this one; it must be fine as is.
    let repo = seed().add("observability/dashboards/kafka.json", DASHBOARD);
    assert_eq!(repo.problems(), Vec::<String>::new());
}

#[test]
fn dashboard_with_a_foreign_datasource() {
    let repo = seed().add(
        "observability/dashboards/kafka.json",
        DASHBOARD.replace(r#""uid": "prometheus""#, r#""uid": "P1809F7CD0C75ACF3""#),
    );
    assert_problems(
        &repo,
        &[
            r#"observability/dashboards/kafka.json:7:52: datasource "P1809F7CD0C75ACF3" is not provisioned; refer to the Prometheus datasource by uid "prometheus" or name "Prometheus""#,
        ],
    );
}

#[test]
fn dashboard_that_is_not_json() {
    let repo = seed().add(
        "observability/dashboards/kafka.json",
        DASHBOARD.replace(r#""title": "Messages in","#, r#""title": "Messages in""#),
    );
    assert_problems(
        &repo,
        &["observability/dashboards/kafka.json:7:7: invalid JSON: expected `,` or `}`"],
    );
}

// ------------------------------------------------------------------ all at once

#[test]
fn problems_in_different_files_are_reported_together() {
    let repo = seed()
        .replace(
            "cluster.yaml",
            "  scram_iterations: 8192\n",
            "  scram_iterations: 100\n",
        )
        .replace("nodes.yaml", "    node_id: 3\n", "    node_id: 1\n")
        .replace(
            "topics/app.yaml",
            "    partitions: 6\n",
            "    partitions: six\n",
        )
        .replace(
            "users/platform.yaml",
            "    password_secret: client-password\n",
            "    password_secret: client-pasword\n",
        )
        .replace(
            "connectors/file-source.yaml",
            "    state: running\n",
            "    state: sleeping\n",
        )
        .add("topics/notes.md", "# notes\n");
    // Parse errors (topics/app.yaml, connectors/) do not hide the
    // cross-checks of the files that did parse.
    let problems = repo.problems();
    assert_eq!(problems.len(), 6, "{problems:#?}");
    let files: std::collections::BTreeSet<&str> = problems
        .iter()
        .filter_map(|p| p.split(':').next())
        .collect();
    assert_eq!(files.len(), 6, "six different files: {files:?}");
    assert_problems(
        &repo,
        &[
            "cluster.yaml:38:21: scram_iterations 100 is outside what Kafka accepts (4096 to 16384)",
            "connectors/file-source.yaml:8:12: unknown variant `sleeping`, expected one of running, paused, stopped",
            "nodes.yaml:18:14: duplicate node_id; already used by the node at nodes.yaml:6:14",
            "topics/app.yaml:5:17: expected a whole number from 0 to 4294967295, found `six`",
            "topics/notes.md: unexpected file in topics/: only *.yaml files belong here",
            "users/platform.yaml:12:22: secret client-pasword does not exist (expected secrets/client-pasword.age)",
        ],
    );
}

#[test]
fn a_broken_cluster_file_does_not_hide_node_list_problems() {
    let repo = seed()
        .replace(
            "cluster.yaml",
            "    cert_validity: 90d\n",
            "    cert_validity: 90d\n    colour: blue\n",
        )
        .replace("nodes.yaml", "    node_id: 3\n", "    node_id: 1\n");
    assert_problems(
        &repo,
        &[
            "cluster.yaml:35:5: unknown field `colour`, expected one of certificate, key_secret, cert_validity, renew_before",
            "nodes.yaml:18:14: duplicate node_id; already used by the node at nodes.yaml:6:14",
        ],
    );
}

// ------------------------------------------------------------------ aws

#[test]
fn zone_of_another_region() {
    let repo = seed().replace(
        "cluster.yaml",
        "    - name: eu-central-1c\n",
        "    - name: eu-west-1c\n",
    );
    let problems = repo.problems();
    assert!(
        problems.contains(
            &"cluster.yaml:27:13: availability zone eu-west-1c is not a zone of region eu-central-1 (aws.region); zones are named eu-central-1a, eu-central-1b, …"
                .to_owned()
        ),
        "{}",
        repo.explain(&problems)
    );
}

#[test]
fn subnet_outside_the_vpc() {
    let repo = seed().replace(
        "cluster.yaml",
        "  vpc_cidr: 10.0.0.0/16\n",
        "  vpc_cidr: 10.0.0.0/23\n",
    );
    assert_problems(
        &repo,
        &[
            "cluster.yaml:26:15: subnet 10.0.2.0/24 of eu-central-1b is outside the VPC 10.0.0.0/23 (aws.vpc_cidr)",
            "cluster.yaml:28:15: subnet 10.0.3.0/24 of eu-central-1c is outside the VPC 10.0.0.0/23 (aws.vpc_cidr)",
        ],
    );
}

#[test]
fn ssh_port_that_a_role_listens_on() {
    let repo = seed().replace(
        "cluster.yaml",
        "  root_volume_gib: 30\n",
        "  root_volume_gib: 30\n  ssh_port: 9092\n",
    );
    assert_problems(
        &repo,
        &[
            "cluster.yaml:126:13: aws.ssh_port 9092 is also ports.client, the client listener: the admin-only SSH rule would block it for the cluster's own nodes",
        ],
    );
}

#[test]
fn ami_with_both_an_id_and_a_name() {
    let repo = seed().replace(
        "cluster.yaml",
        "    name: debian-12-amd64-*\n",
        "    id: ami-0123456789abcdef0\n    name: debian-12-amd64-*\n",
    );
    assert_problems(
        &repo,
        &[
            "cluster.yaml:118:5: aws.ami needs either id (ami-…) or both name (a pattern) and owner, not both",
        ],
    );
}

#[test]
fn ssh_from_anywhere() {
    let repo = seed().replace(
        "cluster.yaml",
        "  admin_cidrs: [203.0.113.0/24]\n",
        "  admin_cidrs: [0.0.0.0/0]\n",
    );
    assert_problems(
        &repo,
        &[
            "cluster.yaml:123:17: admin_cidrs 0.0.0.0/0 opens SSH and the operators' endpoints to the whole internet; name the admin network",
        ],
    );
}

#[test]
fn aws_without_the_agent_binary() {
    let repo = seed().replace(
        "cluster.yaml",
        "  binary:\n    url: https://releases.kafka.internal/kraftops/0.1.0/kraftops-agent-x86_64-linux\n    sha256: 5d1a8c8e8f1bd4e2a7cbb0e2e5c8b3f2a0b9c4d6e7f8091a2b3c4d5e6f708192\n",
        "",
    );
    assert_problems(
        &repo,
        &[
            "cluster.yaml:111:3: aws needs agent.binary (url and sha256 of kraftops-agent) for the machines' user-data",
        ],
    );
}

// ------------------------------------------------------------------ rollout

impl Repo {
    /// Replaces the example's `max_unavailable: 1` / `paused: false` lines
    /// of `rollout:` (line 97) with `body`.
    fn rollout(self, body: &str) -> Self {
        self.replace(
            "cluster.yaml",
            "  max_unavailable: 1\n  paused: false\n",
            body,
        )
    }
}

#[test]
fn max_unavailable_zero() {
    let repo = seed().rollout("  max_unavailable: 0\n  paused: false\n");
    assert_problems(
        &repo,
        &[
            "cluster.yaml:97:20: rollout.max_unavailable must be at least 1: with 0 no node could ever restart",
        ],
    );
}

#[test]
fn max_unavailable_per_az_zero() {
    let repo = seed().rollout("  max_unavailable: 2\n  max_unavailable_per_az: 0\n");
    assert_problems(
        &repo,
        &[
            "cluster.yaml:98:27: rollout.max_unavailable_per_az must be at least 1: with 0 no node could ever restart; remove it to let only max_unavailable apply",
        ],
    );
}

#[test]
fn negative_max_unavailable() {
    let repo = seed().rollout("  max_unavailable: -1\n");
    let problems = repo.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("cluster.yaml:97:20: "),
        "{problems:?}"
    );
}

#[test]
fn maintenance_window_start_24_00() {
    let repo = seed().rollout(
        "  maintenance_windows:\n    - days: [sat]\n      start: \"24:00\"\n      duration: 4h\n",
    );
    assert_problems(
        &repo,
        &[
            r#"cluster.yaml:99:14: time "24:00" must be HH:MM in UTC, from 00:00 to 23:59, e.g. 02:30"#,
        ],
    );
}

#[test]
fn maintenance_window_start_without_leading_zeros() {
    let repo = seed().rollout("  maintenance_windows:\n    - start: \"7:5\"\n      duration: 4h\n");
    assert_problems(
        &repo,
        &[
            r#"cluster.yaml:98:14: time "7:5" must be HH:MM in UTC, from 00:00 to 23:59, e.g. 02:30"#,
        ],
    );
}

#[test]
fn maintenance_window_unknown_day() {
    let repo = seed().rollout(
        "  maintenance_windows:\n    - days: [saturday]\n      start: \"02:00\"\n      duration: 4h\n",
    );
    assert_problems(
        &repo,
        &[
            "cluster.yaml:98:14: unknown variant `saturday`, expected one of mon, tue, wed, thu, fri, sat, sun",
        ],
    );
}

#[test]
fn maintenance_window_of_zero_length() {
    let repo =
        seed().rollout("  maintenance_windows:\n    - start: \"02:00\"\n      duration: 0s\n");
    assert_problems(
        &repo,
        &["cluster.yaml:99:17: maintenance window duration 0s must be more than 0"],
    );
}

#[test]
fn maintenance_window_longer_than_a_week() {
    let repo = seed().rollout(
        "  maintenance_windows:\n    - days: [mon]\n      start: \"02:00\"\n      duration: 8d\n",
    );
    assert_problems(
        &repo,
        &[
            "cluster.yaml:100:17: maintenance window duration 8d is longer than a week; at most 7d (a window repeats every week)",
        ],
    );
}

#[test]
fn unknown_key_in_a_maintenance_window() {
    let repo = seed().rollout(
        "  maintenance_windows:\n    - start: \"02:00\"\n      duration: 1h\n      timezone: CET\n",
    );
    let problems = repo.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("cluster.yaml:100:7: ") && problems[0].contains("timezone"),
        "{problems:?}"
    );
}

#[test]
fn a_valid_rollout_policy_loads() {
    let repo = seed().rollout(
        "  max_unavailable: 2\n  max_unavailable_per_az: 1\n  paused: true\n  maintenance_windows:\n    - days: [sat, sun]\n      start: \"22:00\"\n      duration: 7d\n    - start: \"02:30\"\n      duration: 30m\n",
    );
    assert_eq!(repo.problems(), Vec::<String>::new());
    let model = load_files(&repo.0).expect("loads");
    let rollout = &model.cluster.rollout;
    assert_eq!(*rollout.max_unavailable, 2);
    assert_eq!(rollout.max_unavailable_per_az.as_deref(), Some(&1));
    assert!(rollout.paused);
    assert_eq!(rollout.maintenance_windows.len(), 2);
    assert_eq!(rollout.maintenance_windows[1].start.minutes(), 150);
    assert!(rollout.maintenance_windows[1].days.is_empty());
}

// ------------------------------------------------------------ cluster-scope resources

#[test]
fn the_example_prunes_and_limits() {
    let model = load_files(&seed().0).unwrap_or_else(|d| panic!("{d}"));
    let prune = &model.cluster.resources.prune;
    assert_eq!(
        prune.topics.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
        ["scratch-*"]
    );
    let client = model
        .users
        .iter()
        .find(|u| u.name.as_str() == "client")
        .expect("client");
    let quotas = client.quotas.as_ref().expect("client has quotas");
    assert_eq!(
        quotas
            .entries()
            .iter()
            .map(|(k, v, _)| (*k, *v))
            .collect::<Vec<_>>(),
        [
            ("producer_byte_rate", 10_485_760.0),
            ("consumer_byte_rate", 20_971_520.0)
        ]
    );
    assert!(!*client.delete);
}

#[test]
fn topic_with_zero_partitions() {
    let repo = seed().replace(
        "topics/app.yaml",
        "    partitions: 6\n",
        "    partitions: 0\n",
    );
    assert_problems(
        &repo,
        &["topics/app.yaml:5:17: partitions must be at least 1"],
    );
}

#[test]
fn topic_marked_for_deletion_loads() {
    let repo = seed().replace(
        "topics/app.yaml",
        "    partitions: 3\n",
        "    partitions: 3\n    delete: true\n",
    );
    let model = load_files(&repo.0).unwrap_or_else(|d| panic!("{d}"));
    let deleted: Vec<&str> = model
        .topics
        .iter()
        .filter(|t| *t.delete)
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(deleted, ["test-topic"]);
}

#[test]
fn topic_delete_is_a_boolean() {
    let repo = seed().replace(
        "topics/app.yaml",
        "    partitions: 3\n",
        "    partitions: 3\n    delete: yes please\n",
    );
    assert_problems(
        &repo,
        &["topics/app.yaml:12:13: expected true or false, found `yes please`"],
    );
}

#[test]
fn connect_storage_topic_declared() {
    let repo = seed().replace(
        "topics/app.yaml",
        "  - name: test-topic\n",
        "  - name: connect-offsets\n",
    );
    assert_problems(
        &repo,
        &[
            "topics/app.yaml:10:11: topic connect-offsets is Kafka Connect's storage topic (connect.offset_topic in cluster.yaml); Connect creates and owns it, so kraftops does not manage it here",
        ],
    );
}

#[test]
fn prune_pattern_that_could_match_internal_topics() {
    let repo = seed().replace(
        "cluster.yaml",
        "    topics: [\"scratch-*\"]\n",
        "    topics: [\"scratch-*\", \"*-old\", \"_*\", \"a_*\"]\n",
    );
    assert_problems(
        &repo,
        &[
            "cluster.yaml:135:27: prune pattern *-old could match Kafka's internal topics (__*); make it narrower",
            "cluster.yaml:135:36: prune pattern _* could match Kafka's internal topics (__*); make it narrower",
        ],
    );
}

#[test]
fn prune_pattern_that_matches_connect_storage() {
    let repo = seed().replace(
        "cluster.yaml",
        "    topics: [\"scratch-*\"]\n",
        "    topics: [connect-*]\n",
    );
    assert_problems(
        &repo,
        &[
            "cluster.yaml:135:14: prune pattern connect-* matches connect-configs (connect.config_topic), connect-offsets (connect.offset_topic), connect-status (connect.status_topic): Kafka Connect's own storage; make it narrower",
        ],
    );
}

#[test]
fn prune_pattern_that_matches_a_protected_user() {
    let repo = seed().replace(
        "cluster.yaml",
        "    users: []\n",
        "    users: [temp-*, adm*]\n",
    );
    assert_problems(
        &repo,
        &[
            "cluster.yaml:136:21: prune pattern adm* matches admin, the security.admin_user; the cluster cannot run without it",
        ],
    );
}

#[test]
fn bad_prune_pattern() {
    let repo = seed().replace(
        "cluster.yaml",
        "    users: []\n",
        "    users: [\"temp/*\"]\n",
    );
    assert_problems(
        &repo,
        &[
            "cluster.yaml:136:13: name pattern \"temp/*\" contains '/'; only [a-zA-Z0-9._-] and '*' are allowed",
        ],
    );
}

#[test]
fn protected_users_marked_for_deletion() {
    let repo = seed()
        .replace(
            "users/platform.yaml",
            "    password_secret: admin-password\n",
            "    password_secret: admin-password\n    delete: true\n",
        )
        .replace(
            "users/platform.yaml",
            "    password_secret: kafka-connect-password\n    acls:\n",
            "    password_secret: kafka-connect-password\n    delete: true\n    acls:\n",
        );
    assert_problems(
        &repo,
        &[
            "users/platform.yaml:11:13: user admin is security.admin_user in cluster.yaml; the cluster cannot run without it, so it cannot be deleted",
            "users/platform.yaml:31:13: user kafka_connect is connect.user in cluster.yaml; the cluster cannot run without it, so it cannot be deleted",
            "users/platform.yaml:34:9: user kafka_connect is marked for deletion, which deletes its ACLs too; remove its acls",
        ],
    );
}

#[test]
fn acls_and_quotas_of_a_user_marked_for_deletion() {
    let repo = seed().replace(
        "users/platform.yaml",
        "    password_secret: client-password\n",
        "    password_secret: client-password\n    delete: true\n",
    );
    assert_problems(
        &repo,
        &[
            "users/platform.yaml:16:7: user client is marked for deletion, which deletes its quotas too; remove its quotas",
            "users/platform.yaml:19:9: user client is marked for deletion, which deletes its ACLs too; remove its acls",
        ],
    );
}

#[test]
fn a_user_marked_for_deletion_needs_no_secret() {
    let text = seed().text("users/platform.yaml");
    let client_start = text.find("  - name: client\n").expect("client");
    let connect_start = text
        .find("  - name: kafka_connect\n")
        .expect("kafka_connect");
    let repo = seed().replace(
        "users/platform.yaml",
        &text[client_start..connect_start],
        "  - name: client\n    password_secret: gone-password\n    delete: true\n",
    );
    let problems = repo.problems();
    assert!(problems.is_empty(), "{}", repo.explain(&problems));
    let model = load_files(&repo.0).unwrap_or_else(|d| panic!("{d}"));
    assert!(
        model
            .users
            .iter()
            .any(|u| u.name.as_str() == "client" && *u.delete)
    );
}

#[test]
fn quotas_out_of_range() {
    let repo = seed().replace(
        "users/platform.yaml",
        "      consumer_byte_rate: 20971520\n",
        "      consumer_byte_rate: 0\n      request_percentage: -5\n      controller_mutation_rate: .inf\n",
    );
    assert_problems(
        &repo,
        &[
            "users/platform.yaml:16:27: quota consumer_byte_rate must be at least 1 (bytes per second)",
            "users/platform.yaml:17:27: quota request_percentage must be a number above 0, got -5",
            "users/platform.yaml:18:33: quota controller_mutation_rate must be a number above 0, got inf",
        ],
    );
}

#[test]
fn unknown_quota() {
    let repo = seed().replace(
        "users/platform.yaml",
        "      consumer_byte_rate: 20971520\n",
        "      consumer_rate: 20971520\n",
    );
    assert_problems(
        &repo,
        &[
            "users/platform.yaml:16:7: unknown field `consumer_rate`, expected one of producer_byte_rate, consumer_byte_rate, request_percentage, controller_mutation_rate",
        ],
    );
}

#[test]
fn prefixed_cluster_acl() {
    let repo = seed().replace(
        "users/platform.yaml",
        "      - resource: cluster\n",
        "      - resource: cluster\n        pattern: prefixed\n",
    );
    assert_problems(
        &repo,
        &[
            "users/platform.yaml:43:9: a cluster ACL is always literal (Kafka's cluster resource is `kafka-cluster`); leave out pattern",
        ],
    );
}

// ---------------------------------------------------------- metadata.version

#[test]
fn a_metadata_version_kafka_has_no_level_for() {
    let repo = seed().replace(
        "cluster.yaml",
        "  version: 4.1.1\n",
        "  version: 4.1.1\n  metadata_version: \"4.7\"\n",
    );
    let problems = repo.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with(
            "cluster.yaml:11:21: metadata_version \"4.7\" is not a Kafka release kraftops knows"
        ) && problems[0].contains("4.1, 4.2"),
        "{problems:?}"
    );
}

#[test]
fn a_metadata_version_newer_than_the_kafka_version() {
    let repo = seed().replace(
        "cluster.yaml",
        "  version: 4.1.1\n",
        "  version: 4.1.1\n  metadata_version: \"4.2\"\n",
    );
    assert_problems(
        &repo,
        &[
            "cluster.yaml:11:21: metadata_version 4.2 is newer than Kafka 4.1.1 supports; raise kafka.version first (metadata.version can only reach the release every node runs)",
        ],
    );
    let fine = seed().replace(
        "cluster.yaml",
        "  version: 4.1.1\n",
        "  version: 4.1.1\n  metadata_version: \"4.1\"\n",
    );
    assert_eq!(fine.problems(), Vec::<String>::new());
}
