//! A new machine's first boot: the cloud-init user-data that turns a fresh
//! Debian/Ubuntu machine (EC2, or a local container through NoCloud) into a
//! kraftops node.
//!
//! The document is built from serde structs and written by serde-saphyr, never
//! pasted into a template: cloud-init reads it with PyYAML (YAML 1.1), and
//! serde-saphyr quotes every scalar a YAML 1.1 reader would take for
//! something else (`0644`, `yes`, `on`, …). The shell cloud-init runs gets
//! argv lists; where a shell is needed, every value in the script is
//! single-quoted by [`shell_quote`].
//!
//! What the machine gets: its host name, `/etc/hosts` naming every node (no
//! DNS is made for the cluster), the agent's own `agent.yaml`, the cluster CA
//! the agent pins the coordinator to, a single-use join token, the agent's
//! unit (byte-identical to the one in the node's plan, so the first reconcile
//! leaves it alone), and commands that install Java where a JVM runs, the
//! agent binary (checked against its SHA-256) and start the agent. The
//! observability node also gets the age identity: it runs the coordinator,
//! which decrypts the CA key.

use desired_state::{Model, Node, Role, SecretValue};
use serde::Serialize;

use crate::layout;
use crate::{Ctx, Plan, RenderError, Secrets};

/// The cluster CA the agent pins the coordinator's TLS to.
pub const CA_FILE: &str = "/etc/kraftops/ca.pem";
/// The node's single-use join token.
pub const JOIN_TOKEN_FILE: &str = "/etc/kraftops/join-token";
/// The age identity; written on the observability node only.
pub const IDENTITY_FILE: &str = "/etc/kraftops/age-identity";
/// Where the agent binary is downloaded to before its digest is checked.
pub const AGENT_DOWNLOAD: &str = "/usr/local/bin/.kraftops-agent.download";
/// Java for Kafka, installed at first boot unless the image has one.
pub const JAVA_PACKAGE: &str = "openjdk-17-jre-headless";

const HOSTS_FILE: &str = crate::layout::HOSTS;
const WRITTEN_BY: &str = "Written by cloud-init from kraftops user-data.";

/// The secrets a node's user-data carries.
#[derive(Clone, Copy, Debug)]
pub struct UserDataSecrets<'a> {
    /// The node's join token: the coordinator accepts it for one enrolment,
    /// after which the node authenticates with its own certificate.
    pub join_token: &'a SecretValue,
    /// The age identity (its text), for the observability node only (the
    /// coordinator it runs decrypts the CA key), refused for any other. `None`
    /// there keeps it out of the user-data: the operator places
    /// `/etc/kraftops/age-identity` on the machine by other means and its
    /// agent waits for it.
    pub identity: Option<&'a SecretValue>,
}

/// The `#cloud-config` user-data of the node called `node`: deterministic,
/// built from the model and `secrets` alone.
pub fn user_data(
    model: &Model,
    node: &str,
    secrets: &UserDataSecrets<'_>,
) -> Result<String, RenderError> {
    let node = model
        .node(node)
        .ok_or_else(|| RenderError::UnknownNode(node.to_owned()))?;
    let name = node.name.as_str();
    let role = *node.role;
    let identity = match (role, secrets.identity) {
        // Without it the operator places the identity on the machine by
        // other means; its agent waits for the file.
        (Role::Observability, identity) => identity,
        (_, Some(_)) => {
            return Err(RenderError::IdentityRefused {
                node: name.to_owned(),
                role,
            });
        }
        (_, None) => None,
    };
    let needed_by = format!("the cloud-init user-data of {name}");
    let agent = &model.cluster.agent;
    let binary = agent
        .binary
        .as_ref()
        .ok_or_else(|| RenderError::MissingSetting {
            setting: "cluster.yaml agent.binary",
            needed_by: needed_by.clone(),
        })?;
    let repository = agent
        .repository
        .as_ref()
        .ok_or_else(|| RenderError::MissingSetting {
            setting: "cluster.yaml agent.repository",
            needed_by: needed_by.clone(),
        })?;
    let coordinator = model
        .nodes_with_role(Role::Observability)
        .next()
        .ok_or_else(|| RenderError::MissingSetting {
            setting: "nodes.yaml: a node with role observability (it runs the coordinator)",
            needed_by,
        })?;
    let ports = &model.cluster.ports;

    let agent_config = AgentConfig {
        node: name,
        repository: RepositoryConfig {
            url: repository.url.as_str(),
            branch: repository.branch.as_str(),
        },
        poll_interval: agent.poll_interval.as_str(),
        coordinator: format!(
            "https://{}:{}",
            model.fqdn(coordinator),
            ports.coordinator_tls
        ),
        ca_file: CA_FILE,
        join_token_file: JOIN_TOKEN_FILE,
        identity_file: IDENTITY_FILE,
        listen: format!("{}:{}", node.address.value, ports.agent),
        trusted_signers: agent.trusted_signers.iter().map(|s| s.as_str()).collect(),
    };
    let agent_yaml = format!(
        "# {WRITTEN_BY}\n{}",
        yaml(layout::AGENT_CONFIG, &agent_config)?
    );

    let join_token = secrets
        .join_token
        .single_line(&format!("join token of {name}"))?;

    let mut write_files = vec![
        WriteFile::new(HOSTS_FILE, Mode::Public, crate::common::hosts(model)),
        WriteFile::new(layout::AGENT_CONFIG, Mode::Public, agent_yaml),
        WriteFile::new(CA_FILE, Mode::Public, model.ca_certificate.clone()),
        WriteFile::new(JOIN_TOKEN_FILE, Mode::Private, format!("{join_token}\n")),
    ];
    if let Some(identity) = identity {
        write_files.push(WriteFile::new(
            IDENTITY_FILE,
            Mode::Private,
            identity.expose().to_owned(),
        ));
    }
    write_files.push(WriteFile::new(
        format!("/etc/systemd/system/{}", layout::AGENT_UNIT),
        Mode::Public,
        agent_unit(model, node)?,
    ));

    let mut runcmd = Vec::new();
    // Images for local nodes already have Java (and no network); EC2 images do not.
    if matches!(role, Role::Controller | Role::Broker | Role::Connect) {
        runcmd.push(sh(format!(
            "command -v java >/dev/null 2>&1 || {{ apt-get update && \
             DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {}; }}\n",
            shell_quote(JAVA_PACKAGE)
        )));
    }
    runcmd.push(sh(install_agent_script(
        binary.url.as_str(),
        binary.sha256.as_str(),
    )));
    runcmd.push(argv(&["systemctl", "daemon-reload"]));
    runcmd.push(argv(&[
        "systemctl",
        "enable",
        "--now",
        "--no-block",
        layout::AGENT_UNIT,
    ]));

    let config = CloudConfig {
        hostname: name,
        fqdn: model.fqdn(node),
        prefer_fqdn_over_hostname: false,
        manage_etc_hosts: false,
        write_files,
        runcmd,
    };
    let secrets_note = if role == Role::Observability {
        "It carries no long-lived secret except the age identity of the coordinator this node runs (it decrypts the CA key);\n# the join token is good for one enrolment."
    } else {
        "It carries no long-lived secret: the join token is good for one enrolment."
    };
    Ok(format!(
        "#cloud-config\n\
         # kraftops user-data of node {name} (role {role}) in cluster {cluster}.\n\
         # {secrets_note}\n\
         {body}",
        cluster = model.cluster.name.as_str(),
        body = yaml("user-data", &config)?,
    ))
}

/// Quotes `value` for a POSIX shell: always single-quoted, each `'` written
/// as `'\''`.
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// Downloads the agent, checks its SHA-256 and installs it. `set -e`: a
/// failed download or a digest mismatch stops before `install`, so no
/// `kraftops-agent` appears; the download is removed either way.
fn install_agent_script(url: &str, sha256: &str) -> String {
    install_script(url, sha256, AGENT_DOWNLOAD, layout::AGENT_BIN)
}

/// [`install_agent_script`] with its paths as parameters, for tests.
fn install_script(url: &str, sha256: &str, download: &str, bin: &str) -> String {
    format!(
        "set -eu\n\
         download={download}\n\
         trap 'rm -f \"$download\"' EXIT\n\
         curl -fsSL --retry 5 --retry-connrefused -o \"$download\" {url}\n\
         printf '%s  %s\\n' {sha256} \"$download\" | sha256sum -c -\n\
         install -m 0755 \"$download\" {bin}\n",
        download = shell_quote(download),
        url = shell_quote(url),
        sha256 = shell_quote(sha256),
        bin = shell_quote(bin),
    )
}

/// The agent's unit exactly as the node's plan has it. The common part of
/// every plan reads no secret, so it renders with none.
fn agent_unit(model: &Model, node: &Node) -> Result<String, RenderError> {
    let no_secrets = Secrets::new();
    let ctx = Ctx::new(model, node, &no_secrets);
    let mut plan = Plan::empty(node.name.as_str(), *node.role);
    crate::common::render(&ctx, &mut plan)?;
    plan.units
        .into_iter()
        .find(|u| u.name == layout::AGENT_UNIT)
        .map(|u| u.contents)
        .ok_or_else(|| RenderError::Serialize {
            file: layout::AGENT_UNIT.to_owned(),
            message: "the common part of the plan has no agent unit".to_owned(),
        })
}

fn yaml<T: Serialize>(file: &str, value: &T) -> Result<String, RenderError> {
    serde_saphyr::to_string(value).map_err(|e| RenderError::Serialize {
        file: file.to_owned(),
        message: e.to_string(),
    })
}

fn sh(script: String) -> Vec<String> {
    vec!["sh".to_owned(), "-c".to_owned(), script]
}

fn argv(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

/// The cloud-config keys kraftops sets.
#[derive(Serialize)]
struct CloudConfig<'a> {
    hostname: &'a str,
    fqdn: String,
    prefer_fqdn_over_hostname: bool,
    /// `/etc/hosts` comes from `write_files`, naming every node.
    manage_etc_hosts: bool,
    write_files: Vec<WriteFile>,
    runcmd: Vec<Vec<String>>,
}

#[derive(Clone, Copy)]
enum Mode {
    Public,
    Private,
}

/// One `write_files` entry. `defer: false`: written in cloud-init's first
/// stage, before `runcmd` starts the agent.
#[derive(Serialize)]
struct WriteFile {
    path: String,
    owner: &'static str,
    /// A string, as cloud-init's schema wants (`'0644'`).
    permissions: &'static str,
    defer: bool,
    content: String,
}

impl WriteFile {
    fn new(path: impl Into<String>, mode: Mode, content: String) -> Self {
        Self {
            path: path.into(),
            owner: "root:root",
            permissions: match mode {
                Mode::Public => "0644",
                Mode::Private => "0600",
            },
            defer: false,
            content,
        }
    }
}

/// `/etc/kraftops/agent.yaml`: the keys the agent's `AgentConfig` reads.
#[derive(Serialize)]
struct AgentConfig<'a> {
    node: &'a str,
    repository: RepositoryConfig<'a>,
    poll_interval: &'a str,
    coordinator: String,
    ca_file: &'static str,
    join_token_file: &'static str,
    identity_file: &'static str,
    listen: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    trusted_signers: Vec<&'a str>,
}

#[derive(Serialize)]
struct RepositoryConfig<'a> {
    url: &'a str,
    branch: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_single_quotes_everything() {
        assert_eq!(shell_quote("plain"), "'plain'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("''"), r"''\'''\'''");
        assert_eq!(
            shell_quote("$(rm -rf /) `x` \"y\""),
            "'$(rm -rf /) `x` \"y\"'"
        );
    }

    #[test]
    fn shell_quote_survives_a_real_shell() {
        for value in ["it's", "a'b'c", "$HOME `id` \"q\" \\n", "x;y&z|w", "'", ""] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf '%s' {}", shell_quote(value)))
                .output()
                .expect("sh runs");
            assert!(out.status.success(), "{value:?}");
            assert_eq!(String::from_utf8_lossy(&out.stdout), value);
        }
    }

    #[test]
    fn install_script_quotes_its_values() {
        let script = install_agent_script("https://x.example/a'b", &"0".repeat(64));
        assert!(script.contains(r"'https://x.example/a'\''b'"), "{script}");
        assert!(script.starts_with("set -eu\n"), "{script}");
    }

    fn sha256_hex(bytes: &[u8]) -> String {
        use sha2::Digest as _;
        sha2::Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Runs the install script against a `file://` URL in a temp dir.
    fn run_install(sha256: &str) -> (tempfile::TempDir, std::process::Output) {
        let dir = tempfile::tempdir().expect("temp dir");
        let source = dir.path().join("source's-binary");
        std::fs::write(&source, b"#!/bin/sh\necho agent\n").expect("write source");
        let script = install_script(
            &format!("file://{}", source.display()),
            sha256,
            &dir.path().join(".download").display().to_string(),
            &dir.path().join("bin").display().to_string(),
        );
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .expect("sh runs");
        (dir, out)
    }

    #[test]
    fn install_script_installs_a_matching_download() {
        use std::os::unix::fs::PermissionsExt as _;
        let (dir, out) = run_install(&sha256_hex(b"#!/bin/sh\necho agent\n"));
        assert!(out.status.success(), "{out:?}");
        let bin = dir.path().join("bin");
        let mode = std::fs::metadata(&bin)
            .expect("installed")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(
            !dir.path().join(".download").exists(),
            "download left behind"
        );
    }

    #[test]
    fn install_script_refuses_a_digest_mismatch() {
        let (dir, out) = run_install(&"0".repeat(64));
        assert!(!out.status.success(), "a wrong digest installed: {out:?}");
        assert!(!dir.path().join("bin").exists(), "binary installed anyway");
        assert!(
            !dir.path().join(".download").exists(),
            "download left behind"
        );
    }
}
