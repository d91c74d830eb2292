//! What rendering produces: the complete desired state of one node, as data.
//!
//! A [`Plan`] is everything the agent needs to make a node match git, and
//! nothing it has to work out for itself: each file and unit says what a
//! change to it requires (the service → files → restart map is data here, not
//! code in the agent).

use std::net::Ipv4Addr;

use desired_state::Role;
use serde::Serialize;

/// The desired state of one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub node: String,
    pub role: Role,
    /// System users the node's services run as, created if missing.
    pub users: Vec<SystemUser>,
    /// Directories created (never emptied) with owner and mode.
    pub directories: Vec<PlannedDir>,
    /// Downloads installed before anything starts (Kafka, the JMX exporter).
    pub artifacts: Vec<Artifact>,
    pub files: Vec<PlannedFile>,
    /// Certificates the agent keeps valid: key made on the node, CSR signed
    /// by the coordinator.
    pub certificates: Vec<CertificateRequest>,
    pub units: Vec<PlannedUnit>,
    /// Units shipped by Debian packages that would fight ours for the same
    /// ports (e.g. `prometheus-node-exporter.service`); the agent masks them.
    pub masked_units: Vec<String>,
}

impl Plan {
    /// A plan for `node` of `role` with nothing in it yet.
    pub fn empty(node: &str, role: Role) -> Self {
        Self {
            node: node.to_owned(),
            role,
            users: Vec::new(),
            directories: Vec::new(),
            artifacts: Vec::new(),
            files: Vec::new(),
            certificates: Vec::new(),
            units: Vec::new(),
            masked_units: Vec::new(),
        }
    }

    pub fn file(&self, path: &str) -> Option<&PlannedFile> {
        self.files.iter().find(|f| f.path == path)
    }
    pub fn unit(&self, name: &str) -> Option<&PlannedUnit> {
        self.units.iter().find(|u| u.name == name)
    }
}

/// What a change to a file or certificate requires.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case", tag = "action", content = "unit")]
pub enum OnChange {
    /// Nothing: the file is read on every use.
    Nothing,
    /// `systemctl reload <unit>` (or the service's own reload endpoint).
    Reload(String),
    /// A restart of the unit, through the Kafka-aware rollout gate when it is a Kafka unit.
    Restart(String),
    /// Kafka re-reads the file when told to through the Admin API
    /// (listener keystores/truststores), so no restart is needed.
    KafkaDynamicReload(String),
    /// A broker's `server.properties`: the keys Kafka can change at runtime
    /// (DescribeConfigs says they are not read-only) are applied through the
    /// Admin API without a restart; any other changed key needs a (gated)
    /// restart of the unit.
    KafkaConfig(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SystemUser {
    pub name: String,
    pub home: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedDir {
    pub path: String,
    pub mode: u32,
    pub owner: String,
    pub group: String,
}

/// A file and its metadata. `sensitive` files hold secrets: the agent writes
/// them but never logs or reports their contents, and snapshots redact them.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct PlannedFile {
    pub path: String,
    pub mode: u32,
    pub owner: String,
    pub group: String,
    #[serde(skip)]
    pub contents: Vec<u8>,
    pub sensitive: bool,
    pub on_change: OnChange,
}

impl PlannedFile {
    /// A configuration file readable by everyone, owned by root.
    pub fn config(path: &str, contents: String, on_change: OnChange) -> Self {
        Self {
            path: path.to_owned(),
            mode: 0o644,
            owner: "root".to_owned(),
            group: "root".to_owned(),
            contents: contents.into_bytes(),
            sensitive: false,
            on_change,
        }
    }
}

impl std::fmt::Debug for PlannedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlannedFile")
            .field("path", &self.path)
            .field("mode", &format_args!("{:o}", self.mode))
            .field("owner", &self.owner)
            .field("group", &self.group)
            .field("bytes", &self.contents.len())
            .field("sensitive", &self.sensitive)
            .field("on_change", &self.on_change)
            .finish()
    }
}

/// A systemd unit, written to `/etc/systemd/system/<name>`. A changed unit
/// file needs `daemon-reload` and then `on_change` of the unit itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedUnit {
    pub name: String,
    pub contents: String,
    /// `systemctl enable`.
    pub enable: bool,
    /// Started by the agent. Units started only as a dependency of another
    /// (the one-shot storage format) say false.
    pub start: bool,
    /// Changing this unit's definition needs a restart, gated like any other
    /// when it runs Kafka.
    pub kafka: bool,
}

/// A download the node needs, verified before use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Artifact {
    pub name: String,
    pub url: String,
    pub sha512: Option<String>,
    pub sha512_url: Option<String>,
    /// For tarballs, the directory the archive's top directory becomes; for
    /// single files, the file's path.
    pub install_to: String,
    pub unpack: bool,
    pub on_change: OnChange,
    /// Set when the artifact is a Debian package rather than a download:
    /// the agent adds the source and installs the package with apt, and
    /// `url`, `sha512` and `sha512_url` are empty (apt verifies the source's
    /// signature instead).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apt: Option<AptPackage>,
}

/// A Debian package from an apt source of its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AptPackage {
    /// The source's `deb` line, e.g. `deb [signed-by=...] https://... stable main`.
    pub source: String,
    pub package: String,
    /// The pinned version (`apt-get install <package>=<version>`); `None` installs the newest.
    pub version: Option<String>,
}

/// A TLS certificate the agent obtains and renews for this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertificateRequest {
    pub name: String,
    pub common_name: String,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<Ipv4Addr>,
    /// The PEM file holding the private key followed by the certificate chain
    /// (what Kafka's `ssl.keystore.type=PEM` reads).
    pub keystore_path: String,
    pub owner: String,
    pub group: String,
    pub validity_seconds: u64,
    pub renew_before_seconds: u64,
    pub on_change: Vec<OnChange>,
}
