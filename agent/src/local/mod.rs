//! `kraftops-agent local`: the whole cluster of a desired-state repository
//! on one Linux machine, with the cloud replaced by namespaces.
//!
//! Each node is a `systemd-nspawn` machine booted with real systemd as PID 1
//! over a copy-on-write overlay of the host's root, in a network namespace
//! of its own joined by a veth pair to one bridge this module creates. No
//! default route and no NAT: a node reaches only the bridge. A bare git
//! repository, seeded from the source directory with the local override
//! applied ([`overlay`]), is served by `git daemon` on the bridge; its
//! `post-receive` hook calls the coordinator's webhook. Each node boots the
//! same cloud-init user-data `kraftops-bootstrap` gives an EC2 machine
//! ([`roles::cloud_init::user_data`]), through cloud-init's NoCloud
//! datasource: real cloud-init writes the agent's config, the pinned CA and
//! the single-use join token (and, on the observability node only, the
//! identity), installs the agent binary from its (file) URL after checking
//! its sha256, and starts it. The agent then does everything else exactly
//! as on a VM: it enrols with the coordinator over mutual TLS (receiving
//! its identity), pulls the repository, installs Kafka from the (file) URL,
//! writes the files, obtains its certificates and starts units.
//!
//! Everything made lives under the state directory (default
//! `/var/lib/kraftops-local`) and under names starting with `kraftops`
//! (`kraftops0` bridge, `kraftops-<node>` namespaces, `kr<n>` veths);
//! [`down`] removes it all, also after a crash, and is idempotent.

pub mod checks;
pub mod cli;
mod host;
pub mod overlay;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read as _, Write as _};
use std::net::Ipv4Addr;
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use desired_state::{FileSet, Identity, Model, Role};
use serde::{Deserialize, Serialize};
use sha2::Sha512;

use crate::protocol::NodeView;
pub use overlay::{LocalArtifacts, LocalOverride};

/// The bridge every node's veth joins.
pub const BRIDGE: &str = "kraftops0";
/// Network namespaces are `kraftops-<node>`.
pub const NETNS_PREFIX: &str = "kraftops-";
/// The default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/kraftops-local";
const STATE_FILE: &str = "cluster.json";
const GIT_PORT: u16 = 9418;

/// Paths below the state directory.
#[derive(Clone, Debug)]
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    fn state_file(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }
    fn node_dir(&self, node: &str) -> PathBuf {
        self.dir.join("nodes").join(node)
    }
    /// The node's root filesystem as the host sees it (the overlay mount).
    pub fn node_root(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("root")
    }
    /// The node's console log (systemd's boot messages).
    pub fn console_log(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("console.log")
    }
    fn git_dir(&self) -> PathBuf {
        self.dir.join("git")
    }
    /// The bare repository the nodes pull from; `git push` to it changes
    /// the local cluster.
    /// What the nodes may read of the state directory (read-only).
    pub fn artifacts_dir(&self) -> PathBuf {
        self.dir.join("artifacts")
    }

    pub fn bare_repo(&self) -> PathBuf {
        self.git_dir().join("cluster.git")
    }
    fn nspawn_marker(&self) -> String {
        format!("{}/nodes/", self.dir.display())
    }
}

/// What `local up` made, for `status`, `push` and `down`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterState {
    pub source: PathBuf,
    pub override_file: PathBuf,
    pub identity_file: PathBuf,
    pub artifacts_kafka_url: String,
    pub artifacts_kafka_sha512: String,
    pub artifacts_jmx_url: String,
    pub artifacts_jmx_sha512: String,
    /// The agent binary the nodes' cloud-init installs (file URL, sha256).
    #[serde(default)]
    pub artifacts_agent_url: String,
    #[serde(default)]
    pub artifacts_agent_sha256: String,
    pub bridge_address: Ipv4Addr,
    pub prefix: u8,
    pub git_url: String,
    pub coordinator_url: String,
    pub prometheus_url: Option<String>,
    pub alertmanager_url: Option<String>,
    pub nodes: Vec<NodeState>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeState {
    pub name: String,
    pub role: String,
    pub address: Ipv4Addr,
    pub fqdn: String,
    pub netns: String,
    pub api_url: String,
    pub nspawn_pid: Option<u32>,
}

impl ClusterState {
    pub fn load(layout: &Layout) -> anyhow::Result<Self> {
        let path = layout.state_file();
        let text = fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {} (is a local cluster up? `kraftops-agent local up` makes one)",
                path.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
    fn save(&self, layout: &Layout) -> anyhow::Result<()> {
        let path = layout.state_file();
        let text = serde_json::to_string_pretty(self).context("serialising the local state")?;
        write_file(&path, text.as_bytes(), 0o644)
            .with_context(|| format!("writing {}", path.display()))
    }
    pub fn node(&self, name: &str) -> anyhow::Result<&NodeState> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .with_context(|| format!("the local cluster has no node {name}"))
    }
    /// The PID 1 (systemd) of `node`'s container, if it runs.
    pub fn leader(&self, name: &str) -> Option<u32> {
        let pid = self.node(name).ok()?.nspawn_pid?;
        host::alive(pid).then(|| host::first_child(pid)).flatten()
    }
}

/// `local up`'s inputs.
#[derive(Clone, Debug)]
pub struct UpOptions {
    pub source: PathBuf,
    pub override_file: PathBuf,
    pub kafka_tarball: PathBuf,
    pub jmx_jar: PathBuf,
    pub agent_binary: PathBuf,
    /// How long to wait for the cluster to become healthy.
    pub timeout: Duration,
}

/// The repository `source` with the override and artifacts applied,
/// validated with the agents' own loader; plus the override and identity.
pub fn local_repository(
    source: &Path,
    override_file: &Path,
    artifacts: &LocalArtifacts,
) -> anyhow::Result<(FileSet, Model, LocalOverride, PathBuf)> {
    let text = fs::read_to_string(override_file)
        .with_context(|| format!("reading {}", override_file.display()))?;
    let over = LocalOverride::parse(&override_file.display().to_string(), &text)?;
    let identity_file = override_file
        .parent()
        .unwrap_or(Path::new("."))
        .join(&over.identity);
    let files = desired_state::read_repository(source)
        .map_err(|d| anyhow::anyhow!("{}:\n{d}", source.display()))?;
    let artifacts = &kafka_for_version(&files, artifacts)?;
    let files = over.apply(&files, artifacts)?;
    let model = desired_state::load_files(&files).map_err(|d| {
        anyhow::anyhow!(
            "{} with the override {} is not a valid repository:\n{d}",
            source.display(),
            override_file.display()
        )
    })?;
    Ok((files, model, over, identity_file))
}

/// The Kafka version `cluster.yaml` asks for, if it can be read.
fn kafka_version(files: &FileSet) -> Option<String> {
    let text = std::str::from_utf8(files.get("cluster.yaml")?).ok()?;
    let value: serde_json::Value = serde_saphyr::from_str(text).ok()?;
    value["kafka"]["version"].as_str().map(str::to_owned)
}

/// `artifacts` with the Kafka distribution of the version the repository
/// asks for: the tarball given to `local up` (`kafka_2.13-<v>.tgz`) when
/// its version matches, else `kafka_2.13-<version>.tgz` beside it (what
/// `scripts/kafka-dist --version <version>` writes). So a pushed version
/// upgrade installs that version on every node, as a download would.
fn kafka_for_version(
    files: &FileSet,
    artifacts: &LocalArtifacts,
) -> anyhow::Result<LocalArtifacts> {
    let Some(version) = kafka_version(files) else {
        // The loader reports a missing or malformed version.
        return Ok(artifacts.clone());
    };
    let given = Path::new(
        artifacts
            .kafka_url
            .strip_prefix("file://")
            .unwrap_or(&artifacts.kafka_url),
    );
    let name = |v: &str| format!("kafka_2.13-{v}.tgz");
    if given.file_name().is_some_and(|n| *n == *name(&version)) {
        return Ok(artifacts.clone());
    }
    let wanted = given.with_file_name(name(&version));
    if !wanted.is_file() {
        bail!(
            "cluster.yaml asks for Kafka {version}, and there is no {} for it; assemble it with `scripts/kafka-dist --version {version}`",
            wanted.display()
        );
    }
    Ok(LocalArtifacts {
        kafka_url: file_url(&wanted),
        kafka_sha512: sha512_file(&wanted)?,
        ..artifacts.clone()
    })
}

fn read_identity(path: &Path) -> anyhow::Result<Identity> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Identity::parse(&text).with_context(|| format!("parsing {}", path.display()))
}

/// sha512 (hex) of the file at `path`.
pub fn sha512_file(path: &Path) -> anyhow::Result<String> {
    digest_file::<Sha512>(path)
}

/// sha256 (hex) of the file at `path`.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    digest_file::<sha2::Sha256>(path)
}

fn digest_file<D: sha2::Digest>(path: &Path) -> anyhow::Result<String> {
    let mut f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = D::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The local range (`network.to`) of the override file at `path`.
fn override_network(path: &Path) -> anyhow::Result<desired_state::types::Cidr> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(LocalOverride::parse(&path.display().to_string(), &text)?
        .network
        .to)
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))
}

fn file_url(p: &Path) -> String {
    format!("file://{}", p.display())
}

fn require_tools() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("local mode makes namespaces, mounts and a bridge: run it as root");
    }
    for tool in [
        "systemd-nspawn",
        "ip",
        "git",
        "mount",
        "nsenter",
        "curl",
        "openssl",
        "cloud-init",
        "sha256sum",
    ] {
        let found = std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        if !found {
            bail!(
                "{tool} is not installed (Debian: systemd-container, iproute2, git, mount, util-linux, curl, openssl, cloud-init, coreutils; `scripts/install-deps` installs them)"
            );
        }
    }
    Ok(())
}

/// Prints one line of progress to stderr, with the time since `start`.
fn progress(start: Instant, message: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "[{:>6.1}s] {message}",
        start.elapsed().as_secs_f64()
    );
}

/// Brings the cluster of `opts.source` up; returns the state and the
/// phase timings (name, seconds since start).
pub fn up(layout: &Layout, opts: &UpOptions) -> anyhow::Result<(ClusterState, Vec<(String, f64)>)> {
    let start = Instant::now();
    require_tools()?;
    if let Ok(state) = ClusterState::load(layout)
        && state
            .nodes
            .iter()
            .any(|n| n.nspawn_pid.is_some_and(host::alive))
    {
        bail!(
            "a local cluster is already up ({}); `kraftops-agent local down` first",
            layout.dir.display()
        );
    }
    if let Some(other) = other_clusters(layout).first() {
        bail!(
            "another local cluster is running ({}); `kraftops-agent local down --state-dir {}` first",
            other.display(),
            other.display()
        );
    }
    down(layout, false)?;
    fs::create_dir_all(&layout.dir)
        .with_context(|| format!("creating {}", layout.dir.display()))?;

    let kafka_tarball = absolute(&opts.kafka_tarball)?;
    let jmx_jar = absolute(&opts.jmx_jar)?;
    // The nodes cannot see the state directory (a tmpfs hides it) except
    // its artifacts/ directory, bound read-only: the agent binary is staged
    // there, so cloud-init fetches the very bytes whose sha256 is in git.
    let agent_binary = layout.artifacts_dir().join("kraftops-agent");
    fs::create_dir_all(layout.artifacts_dir())
        .with_context(|| format!("creating {}", layout.artifacts_dir().display()))?;
    fs::copy(&opts.agent_binary, &agent_binary).with_context(|| {
        format!(
            "copying the agent binary {} to {}",
            opts.agent_binary.display(),
            agent_binary.display()
        )
    })?;
    let bridge_address =
        Ipv4Addr::from(u32::from(override_network(&opts.override_file)?.network()) | 1);
    let git_url = format!("git://{bridge_address}:{GIT_PORT}/cluster.git");
    let artifacts = LocalArtifacts {
        kafka_url: file_url(&kafka_tarball),
        kafka_sha512: sha512_file(&kafka_tarball)?,
        jmx_exporter_url: file_url(&jmx_jar),
        jmx_exporter_sha512: sha512_file(&jmx_jar)?,
        agent_url: file_url(&agent_binary),
        agent_sha256: sha256_file(&agent_binary)?,
        repository_url: git_url.clone(),
    };
    let source = absolute(&opts.source)?;
    let override_file = absolute(&opts.override_file)?;
    let (files, model, over, identity_file) =
        local_repository(&source, &override_file, &artifacts)?;
    let identity = read_identity(&identity_file)?;
    // Every secret must decrypt: the nodes will need them.
    model
        .decrypt_all(&identity)
        .with_context(|| format!("decrypting the secrets with {}", identity_file.display()))?;

    let to = &over.network.to;
    if let Some(n) = model
        .nodes
        .iter()
        .find(|n| n.address.value == bridge_address)
    {
        bail!(
            "node {} has the address {bridge_address} the local bridge needs; move it in the override",
            n.name.value
        );
    }
    let ports = &model.cluster.ports;
    let observability = model
        .nodes
        .iter()
        .map(|n| &n.value)
        .find(|n| n.role.value == Role::Observability);
    let coordinator_url = observability
        .map(|n| format!("http://{}:{}", n.address.value, ports.coordinator))
        .context("the repository has no observability node to run the coordinator")?;
    let nodes: Vec<NodeState> = model
        .nodes
        .iter()
        .map(|n| NodeState {
            name: n.name.to_string(),
            role: n.role.to_string(),
            address: n.address.value,
            fqdn: model.fqdn(n),
            netns: format!("{NETNS_PREFIX}{}", n.name.as_str()),
            api_url: format!("http://{}:{}", n.address.value, ports.agent),
            nspawn_pid: None,
        })
        .collect();
    let mut state = ClusterState {
        source,
        override_file,
        identity_file: absolute(&identity_file)?,
        artifacts_kafka_url: artifacts.kafka_url.clone(),
        artifacts_kafka_sha512: artifacts.kafka_sha512.clone(),
        artifacts_jmx_url: artifacts.jmx_exporter_url.clone(),
        artifacts_jmx_sha512: artifacts.jmx_exporter_sha512.clone(),
        artifacts_agent_url: artifacts.agent_url.clone(),
        artifacts_agent_sha256: artifacts.agent_sha256.clone(),
        bridge_address,
        prefix: to.prefix(),
        git_url,
        coordinator_url: coordinator_url.clone(),
        prometheus_url: observability
            .map(|n| format!("http://{}:{}", n.address.value, ports.prometheus)),
        alertmanager_url: observability
            .map(|n| format!("http://{}:{}", n.address.value, ports.alertmanager)),
        nodes,
    };
    state.save(layout)?;

    // The git server.
    let webhook_secret = desired_state::types::Name::try_from("git-webhook-secret")
        .ok()
        .filter(|n| model.secrets.contains_key(n))
        .map(|n| model.decrypt(&n, &identity))
        .transpose()
        .context("decrypting secrets/git-webhook-secret.age")?;
    // The bridge first: git daemon listens on its address.
    host::ensure_bridge(BRIDGE, &format!("{bridge_address}/{}", to.prefix()))?;
    git_server(layout, &state, webhook_secret.as_ref().map(|s| s.expose()))?;
    let head = publish(
        layout,
        &files,
        "kraftops local up: the source repository with its local override",
    )?;
    progress(
        start,
        &format!("git server on {} at {}", state.git_url, &head[..12]),
    );

    // The nodes: each boots the user-data kraftops-bootstrap gives an EC2
    // machine, through cloud-init's NoCloud datasource.
    ensure_nspawn_runtime()?;
    let identity_text = fs::read_to_string(&identity_file)
        .with_context(|| format!("reading {}", identity_file.display()))?;
    let identity_secret = desired_state::SecretValue::new(identity_text.trim().to_owned());
    for (i, node) in state.nodes.clone().iter().enumerate() {
        let token_name =
            desired_state::types::Name::try_from(crate::init::join_token_secret(&node.name))
                .map_err(|e| anyhow::anyhow!("join token name of {}: {e}", node.name))?;
        let token = model
            .decrypt(&token_name, &identity)
            .with_context(|| format!("decrypting the join token of {}", node.name))?;
        let user_data = roles::cloud_init::user_data(
            &model,
            &node.name,
            &roles::UserDataSecrets {
                join_token: &token,
                identity: (node.role == Role::Observability.as_str()).then_some(&identity_secret),
            },
        )
        .with_context(|| format!("rendering the user-data of {}", node.name))?;
        host::node_network(
            &node.netns,
            BRIDGE,
            &format!("kr{i}"),
            &format!("{}/{}", node.address, to.prefix()),
        )
        .with_context(|| format!("the network of {}", node.name))?;
        let root = layout.node_root(&node.name);
        let dir = layout.node_dir(&node.name);
        host::mount_overlay(&dir.join("upper"), &dir.join("work"), &root)
            .with_context(|| format!("the root filesystem of {}", node.name))?;
        prepare_root(&root, node, &user_data)
            .with_context(|| format!("preparing the root of {}", node.name))?;
        let pid = boot(layout, node)?;
        if let Some(n) = state.nodes.iter_mut().find(|n| n.name == node.name) {
            n.nspawn_pid = Some(pid);
        }
        state.save(layout)?;
    }
    progress(start, &format!("{} nodes started", state.nodes.len()));
    let phases = checks::wait_healthy(layout, &state, &model, &head, start, opts.timeout)?;
    Ok((state, phases))
}

/// `/run/systemd/nspawn` must be a tmpfs (nspawn refuses to clean a
/// directory on disk); on a host whose PID 1 is not systemd it is not.
fn ensure_nspawn_runtime() -> anyhow::Result<()> {
    let dir = Path::new("/run/systemd/nspawn");
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if !host::is_tmpfs(dir) {
        host::run(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", "mode=0755", "kraftops-nspawn"])
                .arg(dir),
        )?;
    }
    Ok(())
}

/// Unit name prefixes a node keeps from the host: systemd's own, D-Bus,
/// consoles and cloud-init. Every other service, timer, socket or path unit
/// the host enables is masked in the node's overlay.
const KEEP_UNITS: &[&str] = &[
    "systemd-",
    "dbus",
    "getty",
    "console-getty",
    "serial-getty",
    "container-getty",
    "cloud-",
    "kraftops-",
];

/// Host state a node must not inherit through the overlay.
const HOST_PATHS_HIDDEN: &[&str] = &[
    "etc/kraftops",
    "var/lib/kraftops",
    "etc/kafka",
    "opt/kafka",
    "var/lib/kafka",
    "var/log/kafka",
    "opt/jmx_exporter",
    "etc/prometheus",
    "etc/alertmanager",
    "var/lib/prometheus",
    "var/lib/cloud",
    "etc/cloud/cloud.cfg.d/90-kraftops-local.cfg",
    "etc/cloud/cloud-init.disabled",
    "usr/local/bin/kraftops-agent",
];

/// cloud-init's settings in a local node: only the NoCloud seed, and no
/// network configuration (the harness has set the node's address).
const CLOUD_CFG: &str = "# Written by kraftops-agent local up: boot from the NoCloud seed only;\n\
# the node's network is set up by the harness.\n\
datasource_list: [NoCloud]\n\
network: {config: disabled}\n\
# The host's locales are the node's; do not regenerate them.\n\
locale: false\n";

/// Makes `root` (the node's overlay) boot like a new EC2 machine: a fresh
/// machine id, the host's services masked, and `user_data` (what
/// `kraftops-bootstrap` gives the machine on EC2) as cloud-init's NoCloud
/// seed. cloud-init then writes the agent's files, installs the agent
/// binary and starts it, exactly as on EC2.
fn prepare_root(root: &Path, node: &NodeState, user_data: &str) -> anyhow::Result<()> {
    for p in HOST_PATHS_HIDDEN {
        let path = root.join(p);
        if path.symlink_metadata().is_ok() {
            let removed = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.with_context(|| format!("hiding the host's /{p}"))?;
        }
    }
    let write = |rel: &str, contents: &[u8], mode: u32| write_file(&root.join(rel), contents, mode);
    let machine_id = hex::encode(rand::random::<[u8; 16]>());
    write(
        "etc/machine-id",
        format!("{machine_id}\n").as_bytes(),
        0o444,
    )?;
    write("etc/hostname", format!("{}\n", node.name).as_bytes(), 0o644)?;
    write(
        "etc/cloud/cloud.cfg.d/90-kraftops-local.cfg",
        CLOUD_CFG.as_bytes(),
        0o644,
    )?;
    write(
        "var/lib/cloud/seed/nocloud/meta-data",
        format!(
            "instance-id: kraftops-local-{}-{machine_id}\nlocal-hostname: {}\n",
            node.name, node.name
        )
        .as_bytes(),
        0o644,
    )?;
    write(
        "var/lib/cloud/seed/nocloud/user-data",
        user_data.as_bytes(),
        0o600,
    )?;
    let unit_dir = root.join("etc/systemd/system");
    mask_host_units(root, &unit_dir)
}

fn mask_host_units(root: &Path, unit_dir: &Path) -> anyhow::Result<()> {
    let mut units = std::collections::BTreeSet::new();
    if let Ok(entries) = fs::read_dir(unit_dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if (name.ends_with(".wants") || name.ends_with(".requires")) && e.path().is_dir() {
                for unit in fs::read_dir(e.path()).into_iter().flatten().flatten() {
                    units.insert(unit.file_name().to_string_lossy().into_owned());
                }
            }
        }
    }
    for script in fs::read_dir(root.join("etc/init.d"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = script.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && name != "README" {
            units.insert(format!("{name}.service"));
        }
    }
    for unit in units {
        let maskable = [".service", ".timer", ".socket", ".path"]
            .iter()
            .any(|s| unit.ends_with(s));
        if !maskable || KEEP_UNITS.iter().any(|k| unit.starts_with(k)) {
            continue;
        }
        let path = unit_dir.join(&unit);
        if path.symlink_metadata().is_ok() {
            fs::remove_file(&path).with_context(|| format!("masking {}", path.display()))?;
        }
        symlink("/dev/null", &path).with_context(|| format!("masking {}", path.display()))?;
    }
    Ok(())
}

/// Starts the node's container; returns the nspawn PID.
fn boot(layout: &Layout, node: &NodeState) -> anyhow::Result<u32> {
    let log_path = layout.console_log(&node.name);
    let log =
        fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let err = log
        .try_clone()
        .with_context(|| format!("opening {}", log_path.display()))?;
    let child = Command::new("systemd-nspawn")
        .arg("--quiet")
        .arg("--boot")
        .arg("--directory")
        .arg(layout.node_root(&node.name))
        .arg(format!("--machine={}", node.name))
        .args(["--register=no", "--keep-unit", "--console=read-only"])
        .arg(format!(
            "--network-namespace-path=/run/netns/{}",
            node.netns
        ))
        // The node must not see the other nodes' layers or the git server.
        .arg(format!("--tmpfs={}:mode=0755", layout.dir.display()))
        // …but for the artifacts cloud-init installs from.
        .arg(format!("--bind-ro={}", layout.artifacts_dir().display()))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting systemd-nspawn for {}", node.name))?;
    Ok(child.id())
}

/// The bare repository, its hook, and `git daemon` on the bridge address.
fn git_server(
    layout: &Layout,
    state: &ClusterState,
    webhook_secret: Option<&str>,
) -> anyhow::Result<()> {
    let bare = layout.bare_repo();
    if !bare.join("HEAD").exists() {
        fs::create_dir_all(&bare).with_context(|| format!("creating {}", bare.display()))?;
        host::run(
            Command::new("git")
                .args(["init", "--quiet", "--bare", "--initial-branch=main"])
                .arg(&bare),
        )?;
    }
    let hook = bare.join("hooks/post-receive");
    let script = match webhook_secret {
        Some(secret) => {
            let secret_file = layout.git_dir().join("webhook-secret");
            write_file(&secret_file, secret.as_bytes(), 0o600)
                .with_context(|| format!("writing {}", secret_file.display()))?;
            format!(
                "#!/bin/sh\n\
                 # Written by kraftops-agent local up: a push nudges every agent through the\n\
                 # coordinator's webhook, signed like a git host signs it.\n\
                 body='{{\"ref\":\"refs/heads/main\",\"source\":\"kraftops-local\"}}'\n\
                 sig=$(printf '%s' \"$body\" | openssl dgst -sha256 -hmac \"$(cat '{secret}')\" -r | cut -d' ' -f1)\n\
                 curl -fsS -m 5 -o /dev/null -X POST -H \"X-Hub-Signature-256: sha256=$sig\" \\\n\
                 \x20 -H 'Content-Type: application/json' --data \"$body\" '{url}/v1/hooks/git' \\\n\
                 \x20 || echo 'kraftops: the coordinator was not reached; agents will see the push when they poll' >&2\n",
                secret = secret_file.display(),
                url = state.coordinator_url,
            )
        }
        None => "#!/bin/sh\necho 'kraftops: the repository has no secrets/git-webhook-secret.age; agents will see the push when they poll' >&2\n".to_owned(),
    };
    write_file(&hook, script.as_bytes(), 0o755)
        .with_context(|| format!("writing {}", hook.display()))?;
    host::run(
        Command::new("git")
            .arg("daemon")
            .arg("--reuseaddr")
            .arg("--export-all")
            .arg(format!("--base-path={}", layout.git_dir().display()))
            .arg(format!("--listen={}", state.bridge_address))
            .arg(format!("--port={GIT_PORT}"))
            .arg(format!(
                "--pid-file={}",
                layout.git_dir().join("daemon.pid").display()
            ))
            .arg("--detach")
            .arg(layout.git_dir()),
    )
    .context("starting git daemon")?;
    let address = std::net::SocketAddr::from((state.bridge_address, GIT_PORT));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            bail!("git daemon does not answer on {address}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Commits `files` as the whole tree of `main` in the bare repository and
/// pushes it (so the hook nudges the coordinator). Returns the new head;
/// an unchanged tree makes no commit and returns the current head.
pub fn publish(layout: &Layout, files: &FileSet, message: &str) -> anyhow::Result<String> {
    let work = layout.dir.join(format!("push-{}", std::process::id()));
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    let result = publish_in(layout, &work, files, message);
    let _ = fs::remove_dir_all(&work);
    result
}

fn publish_in(layout: &Layout, w: &Path, files: &FileSet, message: &str) -> anyhow::Result<String> {
    let git = |args: &[&str]| -> anyhow::Result<String> {
        host::run(
            Command::new("git")
                .arg("-C")
                .arg(w)
                .args([
                    "-c",
                    "user.name=kraftops local",
                    "-c",
                    "user.email=local@kraftops.invalid",
                ])
                .args(args),
        )
    };
    host::run(
        Command::new("git")
            .args(["clone", "--quiet"])
            .arg(layout.bare_repo())
            .arg(w),
    )?;
    git(&["symbolic-ref", "HEAD", "refs/heads/main"])?;
    git(&["rm", "-rq", "--ignore-unmatch", "--", "."])?;
    for (path, contents) in files {
        let p = w.join(path);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        fs::write(&p, contents).with_context(|| format!("writing {}", p.display()))?;
    }
    git(&["add", "-A"])?;
    let staged = !host::run_quietly(
        Command::new("git")
            .arg("-C")
            .arg(w)
            .args(["diff", "--cached", "--quiet"]),
    );
    let has_head = host::run_quietly(Command::new("git").arg("-C").arg(w).args([
        "rev-parse",
        "--verify",
        "-q",
        "HEAD",
    ]));
    if staged || !has_head {
        git(&["commit", "--quiet", "-m", message])?;
        git(&["push", "--quiet", "origin", "HEAD:refs/heads/main"])?;
    }
    Ok(git(&["rev-parse", "HEAD"])?.trim().to_owned())
}

/// `local push <dir>`: the directory (with the cluster's override) as the
/// next commit of the local repository. A repository the override cannot
/// be applied to is refused here; one that is otherwise broken can be
/// pushed on purpose with `allow_invalid` (to watch the agents refuse it).
pub fn push(
    layout: &Layout,
    source: &Path,
    message: &str,
    allow_invalid: bool,
) -> anyhow::Result<String> {
    let state = ClusterState::load(layout)?;
    let artifacts = LocalArtifacts {
        kafka_url: state.artifacts_kafka_url.clone(),
        kafka_sha512: state.artifacts_kafka_sha512.clone(),
        jmx_exporter_url: state.artifacts_jmx_url.clone(),
        jmx_exporter_sha512: state.artifacts_jmx_sha512.clone(),
        agent_url: state.artifacts_agent_url.clone(),
        agent_sha256: state.artifacts_agent_sha256.clone(),
        repository_url: state.git_url.clone(),
    };
    let files = match local_repository(source, &state.override_file, &artifacts) {
        Ok((files, ..)) => files,
        Err(e) if allow_invalid => {
            let _ = writeln!(
                std::io::stderr(),
                "pushing an invalid repository on purpose: {e:#}"
            );
            let text = fs::read_to_string(&state.override_file)
                .with_context(|| format!("reading {}", state.override_file.display()))?;
            let over = LocalOverride::parse(&state.override_file.display().to_string(), &text)?;
            let raw = read_raw(source)?;
            over.apply(&raw, &artifacts).unwrap_or(raw)
        }
        Err(e) => return Err(e),
    };
    publish(layout, &files, message)
}

/// Every file below `dir` (no filtering, no validation), for pushing a
/// broken repository on purpose.
fn read_raw(dir: &Path) -> anyhow::Result<FileSet> {
    fn walk(base: &Path, dir: &Path, out: &mut FileSet) -> anyhow::Result<()> {
        for e in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let e = e.with_context(|| format!("reading {}", dir.display()))?;
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(base, &p, out)?;
            } else if let Ok(rel) = p.strip_prefix(base) {
                let bytes = fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
                out.insert(rel.to_string_lossy().into_owned(), bytes);
            }
        }
        Ok(())
    }
    let mut out = FileSet::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}

/// State directories of other local clusters whose nodes run now (one
/// machine has one bridge and one set of namespace names: one cluster).
fn other_clusters(layout: &Layout) -> Vec<PathBuf> {
    let mut found = std::collections::BTreeSet::new();
    for pid in host::processes_matching("/nodes/") {
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if !cmdline.starts_with(b"systemd-nspawn") {
            continue;
        }
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let dir = args
            .windows(2)
            .find(|w| w[0] == "--directory")
            .and_then(|w| w[1].split_once("/nodes/").map(|(d, _)| PathBuf::from(d)));
        if let Some(dir) = dir
            && dir != layout.dir
        {
            found.insert(dir);
        }
    }
    found.into_iter().collect()
}

/// Removes everything `up` made: containers (SIGTERM, then SIGKILL), git
/// daemon, mounts, namespaces, veths, the bridge; with `purge`, also the
/// state directory. Safe to run any number of times, also after a crash.
pub fn down(layout: &Layout, purge: bool) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    let containers = host::processes_matching(&layout.nspawn_marker())
        .into_iter()
        .filter(|p| {
            fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c.starts_with(b"systemd-nspawn"))
        })
        .collect::<Vec<_>>();
    if !containers.is_empty() {
        host::terminate(&containers, Duration::from_secs(30));
        done.push(format!("stopped {} node containers", containers.len()));
    }
    let daemons: Vec<u32> =
        host::processes_matching(&format!("--base-path={}", layout.git_dir().display()));
    if !daemons.is_empty() {
        host::terminate(&daemons, Duration::from_secs(5));
        done.push("stopped git daemon".to_owned());
    }
    let unmounted = host::unmount_below(&layout.dir);
    if !unmounted.is_empty() {
        done.push(format!("unmounted {} node roots", unmounted.len()));
    }
    // Namespaces, veths and the bridge are shared names: leave them to a
    // cluster of another state directory that still runs.
    let others = other_clusters(layout);
    if !others.is_empty() {
        done.push(format!(
            "left the network to the local cluster of {}",
            others[0].display()
        ));
        return finish_down(layout, purge, done);
    }
    let namespaces = host::remove_namespaces(NETNS_PREFIX);
    if !namespaces.is_empty() {
        done.push(format!("removed {} network namespaces", namespaces.len()));
    }
    for i in 0..64 {
        let veth = format!("kr{i}");
        if host::link_exists(&veth) {
            let _ = host::ip(&["link", "del", &veth]);
        }
    }
    if host::link_exists(BRIDGE) {
        host::ip(&["link", "del", BRIDGE])?;
        done.push(format!("removed bridge {BRIDGE}"));
    }
    let nspawn_runtime = Path::new("/run/systemd/nspawn");
    if host::is_mounted(nspawn_runtime)
        && host::mount_points()
            .iter()
            .filter(|m| m.starts_with(nspawn_runtime))
            .count()
            == 1
        && fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains(" /run/systemd/nspawn ") && l.contains("kraftops-nspawn"))
    {
        let _ = host::run_quietly(Command::new("umount").arg(nspawn_runtime));
    }
    finish_down(layout, purge, done)
}

fn finish_down(layout: &Layout, purge: bool, mut done: Vec<String>) -> anyhow::Result<Vec<String>> {
    if purge && layout.dir.exists() {
        if !host::unmount_below(&layout.dir).is_empty()
            || host::mount_points()
                .iter()
                .any(|m| m.starts_with(&layout.dir))
        {
            bail!("{} still has mounts; not deleting it", layout.dir.display());
        }
        fs::remove_dir_all(&layout.dir)
            .with_context(|| format!("removing {}", layout.dir.display()))?;
        done.push(format!("removed {}", layout.dir.display()));
    } else if let Ok(mut state) = ClusterState::load(layout) {
        state.nodes.iter_mut().for_each(|n| n.nspawn_pid = None);
        state.save(layout)?;
    }
    Ok(done)
}

/// The coordinator's view of every node.
pub fn node_views(state: &ClusterState) -> anyhow::Result<Vec<NodeView>> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .context("building an HTTP client")?;
    let url = format!("{}/v1/nodes", state.coordinator_url);
    client
        .get(&url)
        .send()
        .and_then(reqwest::blocking::Response::error_for_status)
        .and_then(reqwest::blocking::Response::json::<Vec<NodeView>>)
        .with_context(|| format!("asking the coordinator ({url})"))
}

/// Writes `contents` to `path` with the applier's atomic write (temporary
/// file, fsync, rename, fsync the directory), owned by this process.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    crate::apply::atomic::write_own(path, contents, mode)
        .with_context(|| format!("writing {}", path.display()))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `local status`: one row per node from the coordinator, and the URLs.
pub fn status(layout: &Layout) -> anyhow::Result<String> {
    let state = ClusterState::load(layout)?;
    let mut out = String::new();
    let views = node_views(&state);
    let _ = writeln!(
        out,
        "{:<16} {:<13} {:<9} {:<12} {:<8} {:<10} UNITS",
        "NODE", "ROLE", "CONTAINER", "PHASE", "APPLIED", "CERT"
    );
    let by_name: BTreeMap<String, NodeView> = match &views {
        Ok(v) => v.iter().map(|v| (v.node.clone(), v.clone())).collect(),
        Err(_) => BTreeMap::new(),
    };
    for n in &state.nodes {
        let container = if state.leader(&n.name).is_some() {
            "running"
        } else {
            "stopped"
        };
        let report = by_name.get(&n.name).and_then(|v| v.report.as_ref());
        let (phase, applied, cert, units) = match report {
            Some(r) => (
                format!("{:?}", r.phase),
                r.revision_applied
                    .as_deref()
                    .map_or("-".to_owned(), |c| c.chars().take(8).collect()),
                r.certificates
                    .iter()
                    .map(|c| c.not_after)
                    .min()
                    .map_or("-".to_owned(), |t| {
                        format!("{}d", t.saturating_sub(now()) / 86_400)
                    }),
                r.units
                    .iter()
                    .map(|u| format!("{}={}", u.name.trim_end_matches(".service"), u.active_state))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            None => (
                "no report".to_owned(),
                "-".to_owned(),
                "-".to_owned(),
                String::new(),
            ),
        };
        let _ = writeln!(
            out,
            "{:<16} {:<13} {:<9} {:<12} {:<8} {:<10} {}",
            n.name, n.role, container, phase, applied, cert, units
        );
        if let Some(e) = report.and_then(|r| r.last_error.as_ref()) {
            let _ = writeln!(out, "{:<16} error: {}", "", e.message);
            for p in &e.problems {
                let _ = writeln!(out, "{:<16}   {p}", "");
            }
        }
    }
    if let Err(e) = views {
        let _ = writeln!(out, "coordinator: not reachable ({e:#})");
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "coordinator   {}/v1/nodes", state.coordinator_url);
    if let Some(u) = &state.prometheus_url {
        let _ = writeln!(out, "prometheus    {u}");
    }
    if let Some(u) = &state.alertmanager_url {
        let _ = writeln!(out, "alertmanager  {u}");
    }
    let _ = writeln!(
        out,
        "grafana       not run locally (not in Debian); its dashboards' queries are checked against Prometheus"
    );
    let _ = writeln!(
        out,
        "git           {} (push: kraftops-agent local push <dir>, or git push {})",
        state.git_url,
        layout.bare_repo().display()
    );
    for n in &state.nodes {
        let _ = writeln!(out, "agent         {}/v1/status  ({})", n.api_url, n.name);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn write_file_creates_the_directory_and_replaces_with_the_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("git/hooks/post-receive");
        write_file(&path, b"#!/bin/sh\n", 0o755).expect("first write");
        write_file(&path, b"#!/bin/sh\necho hi\n", 0o700).expect("replacing");
        assert_eq!(fs::read(&path).expect("read"), b"#!/bin/sh\necho hi\n");
        let mode = fs::metadata(&path).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let names: Vec<_> = fs::read_dir(path.parent().expect("parent"))
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
    }

    #[test]
    fn a_pushed_kafka_version_takes_the_tarball_of_that_version_beside_the_given_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = dir.path().join("kafka_2.13-4.1.1.tgz");
        let new = dir.path().join("kafka_2.13-4.2.0.tgz");
        fs::write(&old, b"old").expect("write");
        fs::write(&new, b"new").expect("write");
        let artifacts = LocalArtifacts {
            kafka_url: file_url(&old),
            kafka_sha512: sha512_file(&old).expect("digest"),
            jmx_exporter_url: "file:///jmx.jar".to_owned(),
            jmx_exporter_sha512: "cd".repeat(64),
            agent_url: "file:///agent".to_owned(),
            agent_sha256: "ef".repeat(32),
            repository_url: "git://10.213.0.1/cluster.git".to_owned(),
        };
        let repo = |version: &str| {
            let mut files = FileSet::new();
            files.insert(
                "cluster.yaml".to_owned(),
                format!("name: x\nkafka:\n  version: {version}\n").into_bytes(),
            );
            files
        };
        let same = kafka_for_version(&repo("4.1.1"), &artifacts).expect("the given tarball");
        assert_eq!(same.kafka_url, artifacts.kafka_url);
        let upgraded = kafka_for_version(&repo("4.2.0"), &artifacts).expect("the 4.2.0 tarball");
        assert_eq!(upgraded.kafka_url, file_url(&new));
        assert_eq!(upgraded.kafka_sha512, sha512_file(&new).expect("digest"));
        assert_ne!(upgraded.kafka_sha512, artifacts.kafka_sha512);
        let missing = kafka_for_version(&repo("4.3.0"), &artifacts)
            .expect_err("no 4.3.0 tarball")
            .to_string();
        assert!(
            missing.contains("Kafka 4.3.0")
                && missing.contains("scripts/kafka-dist --version 4.3.0"),
            "{missing}"
        );
    }
}
