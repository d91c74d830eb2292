//! The cloud-init user-data of every example node: golden files (regenerate
//! with `INSTA_UPDATE=always cargo test -p roles --test cloud_init` and review
//! the diff), the real `cloud-init schema` validator, PyYAML reading what
//! serde-saphyr wrote, EC2's size limit, and the contents read back.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use desired_state::Model;
use desired_state::types::Duration;
use roles::cloud_init::{self, UserDataSecrets};
use roles::{RenderError, Role, SecretValue};
use serde::Deserialize;
use serde_json::Value;

mod support;

/// EC2 refuses user-data of 16 KiB or more (before base64).
const EC2_USER_DATA_LIMIT: usize = 16384;

const CLOUD_INIT: &str = "cloud-init";
const PYTHON: &str = "python3";

/// Obviously fake: the user-data does not parse the identity, it carries it.
const TEST_IDENTITY: &str = "# test-only age identity, not a key\nAGE-SECRET-KEY-1TESTONLYNOTAREALKEYTESTONLYNOTAREALKEYTESTONLY0\n";

fn join_token(node: &str) -> SecretValue {
    SecretValue::new(format!("test-join-token-{node}"))
}

fn identity() -> SecretValue {
    SecretValue::new(TEST_IDENTITY)
}

/// Renders `node`'s user-data with fake secrets, the identity only where it belongs.
fn render(model: &Model, node: &str) -> String {
    let token = join_token(node);
    let identity = identity();
    let is_observability = model
        .node(node)
        .is_some_and(|n| *n.role == Role::Observability);
    let secrets = UserDataSecrets {
        join_token: &token,
        identity: is_observability.then_some(&identity),
    };
    cloud_init::user_data(model, node, &secrets)
        .unwrap_or_else(|e| panic!("user-data of {node}: {e}"))
}

/// Every example node's name and user-data, in `nodes.yaml` order.
fn render_example() -> (Model, Vec<(String, String)>) {
    let (model, _) = support::load_example();
    let docs = model
        .nodes
        .iter()
        .map(|n| {
            let name = n.name.to_string();
            let doc = render(&model, &name);
            (name, doc)
        })
        .collect::<Vec<_>>();
    assert_eq!(docs.len(), 9);
    (model, docs)
}

fn parse(doc: &str) -> Value {
    serde_saphyr::from_str(doc).unwrap_or_else(|e| panic!("user-data parses back: {e}\n{doc}"))
}

/// The `write_files` entry for `path`.
fn file<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    doc["write_files"]
        .as_array()
        .expect("write_files is a list")
        .iter()
        .find(|f| f["path"] == path)
}

fn content<'a>(doc: &'a Value, path: &str) -> &'a str {
    file(doc, path).unwrap_or_else(|| panic!("no {path}"))["content"]
        .as_str()
        .unwrap_or_else(|| panic!("{path} has no content"))
}

#[test]
fn golden_user_data_of_every_example_node() {
    let (_, docs) = render_example();
    for (node, doc) in &docs {
        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_path(format!("snapshots/{node}"));
        settings.set_prepend_module_to_snapshot(false);
        settings.set_omit_expression(true);
        settings.bind(|| insta::assert_snapshot!("user-data", doc));
    }
}

#[test]
fn user_data_fits_ec2s_limit() {
    let (_, docs) = render_example();
    let (largest, size) = docs
        .iter()
        .map(|(node, doc)| (node, doc.len()))
        .max_by_key(|(_, size)| *size)
        .expect("nodes");
    // The test's own report (shown with --nocapture): how close to the limit.
    #[allow(clippy::print_stderr)]
    {
        eprintln!("largest user-data: {largest}, {size} bytes (limit {EC2_USER_DATA_LIMIT})");
    }
    for (node, doc) in &docs {
        assert!(
            doc.len() < EC2_USER_DATA_LIMIT,
            "user-data of {node} is {} bytes; EC2 takes less than {EC2_USER_DATA_LIMIT}",
            doc.len()
        );
    }
}

#[test]
fn user_data_is_a_cloud_config_with_a_header() {
    let (_, docs) = render_example();
    for (node, doc) in &docs {
        let mut lines = doc.lines();
        assert_eq!(lines.next(), Some("#cloud-config"), "{node}");
        let comment = lines.next().expect("a comment");
        assert!(
            comment.starts_with("# kraftops user-data of node "),
            "{comment}"
        );
        assert!(comment.contains(node.as_str()), "{comment}");
        assert!(comment.contains("cluster "), "{comment}");
    }
}

// ----------------------------------------------------------- cloud-init schema

/// Fails the test, with what to do, when a tool is missing: these tests
/// must not pass by skipping.
fn require(tool: &str, args: &[&str], package: &str) {
    match Command::new(tool).args(args).output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`{tool} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "`{tool}` cannot be run ({e}). The rendered user-data is checked with it; \
             install the Debian package `{package}` (scripts/install-deps does) and rerun."
        ),
    }
}

/// Runs `cloud-init schema` on each of `docs`, all at once (each run takes
/// about a second). One result per document: `Err` holds its complaints.
fn cloud_init_schema(docs: &[&str]) -> Vec<Result<(), String>> {
    require(CLOUD_INIT, &["--version"], "cloud-init");
    let dir = tempfile::tempdir().expect("temp dir");
    let children: Vec<_> = docs
        .iter()
        .enumerate()
        .map(|(i, doc)| {
            let path = dir.path().join(format!("user-data-{i}"));
            std::fs::write(&path, doc).expect("write user-data");
            Command::new(CLOUD_INIT)
                .args(["schema", "--config-file"])
                .arg(&path)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("cloud-init runs")
        })
        .collect();
    children
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().expect("cloud-init finishes");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.success() && stdout.contains("Valid cloud-config") {
                Ok(())
            } else {
                Err(format!(
                    "cloud-init schema exited {}:\n{stdout}{stderr}",
                    out.status
                ))
            }
        })
        .collect()
}

#[test]
fn every_user_data_passes_cloud_init_schema() {
    let (_, docs) = render_example();
    let texts: Vec<&str> = docs.iter().map(|(_, doc)| doc.as_str()).collect();
    let failures: Vec<String> = docs
        .iter()
        .zip(cloud_init_schema(&texts))
        .filter_map(|((node, _), result)| result.err().map(|e| format!("{node}: {e}")))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn cloud_init_schema_rejects_broken_user_data() {
    let broken = [
        "#cloud-config\nwrite_files: 3\n",
        // An unquoted mode is an integer to PyYAML: what serde-saphyr's quoting prevents.
        "#cloud-config\nwrite_files:\n- path: /etc/x\n  permissions: 0644\n  content: x\n",
        "#cloud-config\nruncmd: run-me\n",
    ];
    for (doc, result) in broken.iter().zip(cloud_init_schema(&broken)) {
        assert!(result.is_err(), "cloud-init schema accepted:\n{doc}");
    }
}

// ----------------------------------------------------------------- PyYAML

/// What PyYAML (cloud-init's reader, YAML 1.1) makes of each of `docs`, as
/// JSON, in one Python process.
fn pyyaml(docs: &[&str]) -> Vec<Value> {
    require(PYTHON, &["-c", "import yaml"], "python3-yaml");
    let dir = tempfile::tempdir().expect("temp dir");
    let paths: Vec<_> = docs
        .iter()
        .enumerate()
        .map(|(i, doc)| {
            let path = dir.path().join(format!("doc-{i}.yaml"));
            std::fs::write(&path, doc).expect("write document");
            path
        })
        .collect();
    let out = Command::new(PYTHON)
        .args([
            "-c",
            "import json, sys, yaml\n\
             print(json.dumps([yaml.safe_load(open(p)) for p in sys.argv[1:]]))",
        ])
        .args(&paths)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "PyYAML cannot read them: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python printed JSON")
}

#[test]
fn pyyaml_reads_what_serde_saphyr_wrote() {
    let (_, docs) = render_example();
    let parsed: Vec<Value> = docs.iter().map(|(_, doc)| parse(doc)).collect();
    let agent_yamls: Vec<&str> = parsed
        .iter()
        .map(|doc| content(doc, "/etc/kraftops/agent.yaml"))
        .collect();
    let mut texts: Vec<&str> = docs.iter().map(|(_, doc)| doc.as_str()).collect();
    texts.extend(&agent_yamls);
    let theirs = pyyaml(&texts);
    let ours = parsed
        .iter()
        .cloned()
        .chain(agent_yamls.iter().map(|text| parse(text)));
    let names = docs
        .iter()
        .map(|(node, _)| format!("{node}'s user-data"))
        .chain(docs.iter().map(|(node, _)| format!("{node}'s agent.yaml")));
    assert_eq!(theirs.len(), 2 * docs.len());
    for ((theirs, ours), name) in theirs.iter().zip(ours).zip(names) {
        assert_eq!(*theirs, ours, "PyYAML reads {name} differently");
    }
}

// ------------------------------------------------------------- contents

/// `agent.yaml` as the agent's `AgentConfig` reads it, limited to the keys
/// user-data sets; `deny_unknown_fields` catches a key the agent would refuse.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentYaml {
    node: String,
    repository: RepositoryYaml,
    poll_interval: Duration,
    coordinator: String,
    ca_file: String,
    join_token_file: String,
    identity_file: String,
    listen: SocketAddr,
    #[serde(default)]
    trusted_signers: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RepositoryYaml {
    url: String,
    branch: String,
}

#[test]
fn agent_yaml_has_the_agents_keys() {
    let (model, docs) = render_example();
    let repository = model
        .cluster
        .agent
        .repository
        .as_ref()
        .expect("example sets it");
    for (node, doc) in &docs {
        let doc = parse(doc);
        let text = content(&doc, "/etc/kraftops/agent.yaml");
        assert!(
            text.starts_with("# Written by cloud-init from kraftops user-data."),
            "{text}"
        );
        let config: AgentYaml =
            serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{node}: {e}\n{text}"));
        let n = model.node(node).expect("node");
        assert_eq!(config.node, *node);
        assert_eq!(config.repository.url, repository.url.as_str());
        assert_eq!(config.repository.branch, repository.branch.as_str());
        assert_eq!(config.poll_interval.as_secs(), 60);
        assert_eq!(
            config.coordinator,
            "https://observability-1.kafka.internal:9172"
        );
        assert_eq!(config.ca_file, "/etc/kraftops/ca.pem");
        assert_eq!(config.join_token_file, "/etc/kraftops/join-token");
        assert_eq!(config.identity_file, "/etc/kraftops/age-identity");
        assert_eq!(config.listen, SocketAddr::from((n.address.value, 9170)));
        assert!(config.trusted_signers.is_empty());
        assert!(
            !text.contains("trusted_signers"),
            "empty signers are omitted: {text}"
        );
        assert!(!text.contains("api_token_file"), "{text}");
    }
}

#[test]
fn trusted_signers_are_written_when_set() {
    let (mut model, _) = support::load_example();
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOhQ1TESTONLY operator@example";
    model.cluster.agent.trusted_signers = vec![
        desired_state::types::SingleLine::try_from(key)
            .expect("one line")
            .into(),
    ];
    let doc = parse(&render(&model, "broker-1"));
    let config: AgentYaml =
        serde_saphyr::from_str(content(&doc, "/etc/kraftops/agent.yaml")).expect("parses");
    assert_eq!(config.trusted_signers, [key]);
}

#[test]
fn files_have_owner_mode_and_contents() {
    let (model, docs) = render_example();
    for (node, text) in &docs {
        let doc = parse(text);
        for f in doc["write_files"].as_array().expect("list") {
            assert_eq!(f["owner"], "root:root", "{node}: {f}");
            assert_eq!(f["defer"], false, "{node}: {f}");
            assert!(
                matches!(f["permissions"].as_str(), Some("0644" | "0600")),
                "{node}: {f}"
            );
        }
        let mode = |path: &str| file(&doc, path).map(|f| f["permissions"].clone());
        assert_eq!(
            mode("/etc/kraftops/join-token"),
            Some("0600".into()),
            "{node}"
        );
        assert_eq!(
            content(&doc, "/etc/kraftops/join-token"),
            format!("test-join-token-{node}\n")
        );
        assert_eq!(mode("/etc/kraftops/agent.yaml"), Some("0644".into()));
        assert_eq!(content(&doc, "/etc/kraftops/ca.pem"), model.ca_certificate);
        let is_observability = *model.node(node).expect("node").role == Role::Observability;
        match mode("/etc/kraftops/age-identity") {
            Some(m) => {
                assert!(is_observability, "{node} got the identity");
                assert_eq!(m, "0600");
                assert_eq!(content(&doc, "/etc/kraftops/age-identity"), TEST_IDENTITY);
            }
            None => assert!(!is_observability, "{node} lacks the identity"),
        }
        assert_eq!(doc["hostname"], node.as_str());
        assert_eq!(doc["fqdn"], format!("{node}.kafka.internal"));
        assert_eq!(doc["prefer_fqdn_over_hostname"], false);
        assert_eq!(doc["manage_etc_hosts"], false);
    }
}

#[test]
fn etc_hosts_names_every_node() {
    let (model, docs) = render_example();
    for (node, text) in &docs {
        let doc = parse(text);
        let hosts: Vec<&str> = content(&doc, "/etc/hosts")
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect();
        assert_eq!(hosts[0], "127.0.0.1 localhost", "{node}");
        assert_eq!(hosts[1], "::1 localhost ip6-localhost ip6-loopback");
        let expected: Vec<String> = model
            .nodes
            .iter()
            .map(|n| format!("{} {}.kafka.internal {}", n.address.value, n.name, n.name))
            .collect();
        assert_eq!(hosts[2..], expected, "{node}");
        assert_eq!(expected.len(), 9);
    }
}

#[test]
fn agent_unit_is_the_one_in_the_nodes_plan() {
    let (model, secrets) = support::load_example();
    let (_, docs) = render_example();
    for (node, text) in &docs {
        let plan = roles::render(&model, node, &secrets).expect("plan renders");
        let unit = plan.unit("kraftops-agent.service").expect("agent unit");
        let doc = parse(text);
        assert_eq!(
            content(&doc, "/etc/systemd/system/kraftops-agent.service"),
            unit.contents,
            "{node}: the first reconcile would rewrite the agent's unit"
        );
    }
}

#[test]
fn hosts_is_the_one_the_agents_keep() {
    let (model, secrets) = support::load_example();
    let (_, docs) = render_example();
    for (node, text) in &docs {
        let plan = roles::render(&model, node, &secrets).expect("plan renders");
        let hosts = plan.file("/etc/hosts").expect("the plan keeps /etc/hosts");
        assert_eq!(
            content(&parse(text), "/etc/hosts").as_bytes(),
            hosts.contents.as_slice(),
            "{node}: the first reconcile would rewrite /etc/hosts"
        );
    }
}

#[test]
fn runcmd_installs_java_where_a_jvm_runs_then_the_agent() {
    let (model, docs) = render_example();
    for (node, text) in &docs {
        let doc = parse(text);
        let runcmd: Vec<Vec<String>> =
            serde_json::from_value(doc["runcmd"].clone()).expect("runcmd is argv lists");
        let role = *model.node(node).expect("node").role;
        let jvm = matches!(role, Role::Controller | Role::Broker | Role::Connect);
        let mut steps = runcmd.iter();
        if jvm {
            let java = steps.next().expect("java step");
            assert_eq!(java[..2], ["sh", "-c"]);
            assert!(java[2].starts_with("command -v java >/dev/null 2>&1 || {"));
            assert!(java[2].contains("openjdk-17-jre-headless"));
        }
        let install = steps.next().expect("install step");
        assert_eq!(install[..2], ["sh", "-c"], "{node}");
        let binary = model
            .cluster
            .agent
            .binary
            .as_ref()
            .expect("example sets it");
        assert!(install[2].starts_with("set -eu\n"));
        assert!(install[2].contains(&format!("'{}'", binary.url.as_str())));
        assert!(install[2].contains(&format!("'{}'", binary.sha256.as_str())));
        assert!(install[2].contains("sha256sum -c -"));
        assert!(
            install[2].contains("install -m 0755 \"$download\" '/usr/local/bin/kraftops-agent'")
        );
        assert_eq!(
            steps.next().expect("daemon-reload"),
            &["systemctl", "daemon-reload"]
        );
        assert_eq!(
            steps.next().expect("enable"),
            &[
                "systemctl",
                "enable",
                "--now",
                "--no-block",
                "kraftops-agent.service"
            ]
        );
        assert!(steps.next().is_none(), "{node}: unexpected steps");
    }
}

#[test]
fn no_other_secret_reaches_user_data() {
    let (_, secrets) = support::load_example();
    let (_, docs) = render_example();
    for (node, doc) in &docs {
        for (name, value) in &secrets {
            let value = value.expose().trim();
            assert!(
                value.is_empty() || !doc.contains(value),
                "{node}'s user-data holds secret {name}"
            );
        }
    }
}

// ----------------------------------------------------------------- errors

#[test]
fn identity_is_refused_for_other_nodes() {
    let (model, _) = support::load_example();
    let token = join_token("broker-1");
    let identity = identity();
    let err = cloud_init::user_data(
        &model,
        "broker-1",
        &UserDataSecrets {
            join_token: &token,
            identity: Some(&identity),
        },
    )
    .expect_err("identity on a broker");
    assert!(
        matches!(&err, RenderError::IdentityRefused { node, role: Role::Broker } if node == "broker-1"),
        "{err:?}"
    );
    assert!(!err.to_string().contains("AGE-SECRET-KEY"), "{err}");
}

#[test]
fn the_observability_node_may_get_its_identity_by_other_means() {
    let (model, _) = support::load_example();
    let token = join_token("observability-1");
    let text = cloud_init::user_data(
        &model,
        "observability-1",
        &UserDataSecrets {
            join_token: &token,
            identity: None,
        },
    )
    .expect("renders without the identity");
    assert!(!text.contains("AGE-SECRET-KEY"), "{text}");
    assert!(!text.contains("path: /etc/kraftops/age-identity"), "{text}");
    // The agent still knows where to find it once the operator puts it there.
    assert!(
        text.contains("identity_file: /etc/kraftops/age-identity"),
        "{text}"
    );
}

#[test]
fn unknown_node_is_an_error() {
    let (model, _) = support::load_example();
    let token = join_token("broker-9");
    let err = cloud_init::user_data(
        &model,
        "broker-9",
        &UserDataSecrets {
            join_token: &token,
            identity: None,
        },
    )
    .expect_err("unknown node");
    assert!(
        matches!(&err, RenderError::UnknownNode(n) if n == "broker-9"),
        "{err:?}"
    );
}

#[test]
fn missing_agent_binary_or_repository_names_the_setting() {
    let (model, _) = support::load_example();
    let token = join_token("broker-1");
    let secrets = UserDataSecrets {
        join_token: &token,
        identity: None,
    };
    let mut no_binary = model.clone();
    no_binary.cluster.agent.binary = None;
    let err = cloud_init::user_data(&no_binary, "broker-1", &secrets).expect_err("no binary");
    assert!(
        err.to_string().contains("cluster.yaml agent.binary"),
        "{err}"
    );
    let mut no_repository = model;
    no_repository.cluster.agent.repository = None;
    let err =
        cloud_init::user_data(&no_repository, "broker-1", &secrets).expect_err("no repository");
    assert!(
        err.to_string().contains("cluster.yaml agent.repository"),
        "{err}"
    );
}

#[test]
fn a_multi_line_join_token_is_refused_without_showing_it() {
    let (model, _) = support::load_example();
    let token = SecretValue::new("test-join-token\nsecond-line");
    let err = cloud_init::user_data(
        &model,
        "broker-1",
        &UserDataSecrets {
            join_token: &token,
            identity: None,
        },
    )
    .expect_err("two lines");
    assert!(!err.to_string().contains("second-line"), "{err}");
}

// ------------------------------------------------------------ determinism

#[test]
fn rendering_is_deterministic() {
    let (_, first) = render_example();
    let (_, second) = render_example();
    assert_eq!(first, second);
    let distinct: BTreeSet<&String> = first.iter().map(|(_, doc)| doc).collect();
    assert_eq!(
        distinct.len(),
        first.len(),
        "every node gets its own user-data"
    );
}
