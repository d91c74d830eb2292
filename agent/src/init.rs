//! `kraftops-agent init`: creates a new desired-state repository from a
//! template (the seed example), with fresh identities and secrets.
//!
//! What is new in every repository: the KRaft cluster id and the
//! controllers' directory ids, the cluster CA (certificate in the repository,
//! key age-encrypted), every user's SCRAM password, the Grafana admin
//! password and one join token per node (`secrets/join-token-<node>.age`).
//! Every secret is encrypted to a new age identity, written outside the
//! repository with mode 0600, and to the extra recipients given (e.g. the
//! coordinator's). What is copied from the template: `cluster.yaml` (with
//! the new name and cluster id), `nodes.yaml` (with new directory ids),
//! `topics/`, `users/`, `connectors/` and `observability/`. Nothing of the
//! template's `pki/` or `secrets/` is copied.
//!
//! The whole repository is built and validated in memory first
//! (`desired_state::load_files`); only then is anything written, and
//! nothing that exists is ever overwritten.
//!
//! **Invariant:** no secret value reaches the [`InitReport`], an error
//! message or a log line.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr as _;

use age::secrecy::ExposeSecret as _;
use base64::Engine as _;
use desired_state::types::Name;
use desired_state::{
    ClusterFile, Diagnostics, EncryptedSecret, FileSet, NodesFile, SecretError, UsersFile,
};
use rand::RngCore as _;
use sha2::Digest as _;

use crate::certs::{Ca, CertError};

/// How long a CA made by `init` is valid, unless the options say otherwise.
pub const DEFAULT_CA_VALIDITY_DAYS: u32 = 3650;

/// The directories copied from the template, recursively.
const TEMPLATE_DIRS: &[&str] = &["topics", "users", "connectors", "observability"];

/// The secret holding `node`'s join token: `join-token-<node>`. The
/// coordinator decrypts these to authenticate nodes; each node gets its own.
pub fn join_token_secret(node: &str) -> String {
    format!("join-token-{node}")
}

/// What `init` needs.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// The new cluster's name (a DNS label).
    pub cluster_name: String,
    /// The template repository, e.g. `desired-state/examples/seed`.
    pub template_dir: PathBuf,
    /// Where to write the new age identity; must not exist, and must be
    /// outside the new repository.
    pub identity_path: PathBuf,
    /// Further age recipients (`age1…`) every secret is encrypted to.
    pub recipients: Vec<String>,
    pub ca_validity_days: u32,
    /// Unix seconds; the CA's validity starts here.
    pub now: u64,
}

impl InitOptions {
    /// Options with no extra recipients, the default CA validity and the
    /// current time.
    pub fn new(
        cluster_name: impl Into<String>,
        template_dir: impl Into<PathBuf>,
        identity_path: impl Into<PathBuf>,
    ) -> InitOptions {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        InitOptions {
            cluster_name: cluster_name.into(),
            template_dir: template_dir.into(),
            identity_path: identity_path.into(),
            recipients: Vec::new(),
            ca_validity_days: DEFAULT_CA_VALIDITY_DAYS,
            now,
        }
    }
}

/// What `init` created. Holds no secret values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitReport {
    pub dir: PathBuf,
    pub cluster_name: String,
    pub kraft_cluster_id: String,
    /// The CA certificate, relative to `dir`.
    pub ca_certificate: String,
    /// SHA-256 of the CA certificate's DER, colon-separated hex (as
    /// `openssl x509 -fingerprint -sha256` prints it).
    pub ca_fingerprint_sha256: String,
    pub identity_path: PathBuf,
    /// The new identity's public key.
    pub identity_recipient: String,
    /// Every recipient the secrets are encrypted to, the new identity first.
    pub recipients: Vec<String>,
    /// The secrets created, by name (`secrets/<name>.age`).
    pub secrets: Vec<String>,
    /// Every file created, relative to `dir`, sorted.
    pub files: Vec<String>,
}

impl fmt::Display for InitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "created desired-state repository {} for cluster {}",
            self.dir.display(),
            self.cluster_name
        )?;
        writeln!(f, "  KRaft cluster id: {}", self.kraft_cluster_id)?;
        writeln!(
            f,
            "  CA certificate:   {} (SHA-256 {})",
            self.ca_certificate, self.ca_fingerprint_sha256
        )?;
        writeln!(
            f,
            "  age identity:     {} (public key {}); keep it safe and out of git",
            self.identity_path.display(),
            self.identity_recipient
        )?;
        writeln!(f, "  encrypted to:     {}", self.recipients.join(", "))?;
        writeln!(f, "  secrets:          {}", self.secrets.join(", "))?;
        writeln!(f, "  files:")?;
        for file in &self.files {
            writeln!(f, "    {file}")?;
        }
        Ok(())
    }
}

/// Why `init` refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{}: is not empty; init only creates a new repository", dir.display())]
    NotEmpty { dir: PathBuf },
    #[error("{}: exists and is not a directory", dir.display())]
    NotADirectory { dir: PathBuf },
    #[error("{}: the identity file already exists; init never overwrites one", path.display())]
    IdentityExists { path: PathBuf },
    #[error(
        "{}: the identity must live outside the repository {}, or it would end up in git",
        path.display(),
        dir.display()
    )]
    IdentityInsideRepository { path: PathBuf, dir: PathBuf },
    #[error("cluster name {name:?}: {reason}")]
    ClusterName { name: String, reason: String },
    #[error("recipient {value:?} is not an age X25519 recipient (age1…)")]
    Recipient { value: String },
    #[error("template {}: {reason}", path.display())]
    Template { path: PathBuf, reason: String },
    #[error("{action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("making the cluster CA")]
    Ca(#[source] CertError),
    #[error("encrypting secrets/{name}.age")]
    Encrypt {
        name: String,
        #[source]
        source: SecretError,
    },
    #[error("the new repository would not validate:\n{0}")]
    Invalid(Diagnostics),
}

/// Creates a new desired-state repository in `dir`, which must be empty or
/// not exist, and a new age identity at `opts.identity_path`.
pub fn init(dir: &Path, opts: &InitOptions) -> Result<InitReport, InitError> {
    let cluster =
        Name::try_from(opts.cluster_name.as_str()).map_err(|e| InitError::ClusterName {
            name: opts.cluster_name.clone(),
            reason: e.0,
        })?;
    let extra_recipients = opts
        .recipients
        .iter()
        .map(|r| {
            age::x25519::Recipient::from_str(r.trim())
                .map_err(|_| InitError::Recipient { value: r.clone() })
        })
        .collect::<Result<Vec<_>, _>>()?;
    check_target(dir)?;
    check_identity_path(&opts.identity_path, dir)?;

    // Everything in memory first.
    let template = read_template(&opts.template_dir)?;
    let identity = age::x25519::Identity::generate();
    let mut recipients = vec![identity.to_public()];
    recipients.extend(extra_recipients);
    let built = build(&template, &cluster, &recipients, opts)?;
    desired_state::load_files(&built.files).map_err(InitError::Invalid)?;

    // Then write: the identity first, so a repository never exists whose
    // secrets nobody can read.
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let recipient = identity.to_public().to_string();
    let identity_text = format!(
        "# kraftops-agent init: the age identity of cluster {}. Keep it out of git.\n# public key: {recipient}\n{}\n",
        cluster.as_str(),
        identity.to_string().expose_secret()
    );
    write_new(&opts.identity_path, identity_text.as_bytes(), 0o600, true)?;
    for (rel, bytes) in &built.files {
        write_new(&dir.join(rel), bytes, 0o644, false)?;
    }

    Ok(InitReport {
        dir: dir.to_path_buf(),
        cluster_name: cluster.as_str().to_owned(),
        kraft_cluster_id: built.cluster_id,
        ca_certificate: built.ca_path,
        ca_fingerprint_sha256: built.ca_fingerprint,
        identity_path: opts.identity_path.clone(),
        identity_recipient: recipient,
        recipients: recipients.iter().map(ToString::to_string).collect(),
        secrets: built.secrets,
        files: built.files.keys().cloned().collect(),
    })
}

/// The repository to write, and what the report says about it.
struct Built {
    files: FileSet,
    cluster_id: String,
    ca_path: String,
    ca_fingerprint: String,
    secrets: Vec<String>,
}

fn build(
    template: &Template,
    cluster: &Name,
    recipients: &[age::x25519::Recipient],
    opts: &InitOptions,
) -> Result<Built, InitError> {
    let template_err = |file: &str, reason: String| InitError::Template {
        path: opts.template_dir.join(file),
        reason,
    };
    let cluster_text = template.text("cluster.yaml", &opts.template_dir)?;
    let nodes_text = template.text("nodes.yaml", &opts.template_dir)?;
    let cluster_file: ClusterFile = serde_saphyr::from_str(cluster_text)
        .map_err(|e| template_err("cluster.yaml", e.to_string()))?;
    let nodes_file: NodesFile = serde_saphyr::from_str(nodes_text)
        .map_err(|e| template_err("nodes.yaml", e.to_string()))?;

    let mut ids = UuidSource::default();
    let cluster_id = ids.next();
    let mut files = FileSet::new();
    for (rel, bytes) in &template.files {
        if rel.ends_with(".yaml") {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| template_err(rel, "is not UTF-8".to_owned()))?;
            files.insert(rel.clone(), strip_modeline(text).into_bytes());
        } else {
            files.insert(rel.clone(), bytes.clone());
        }
    }
    let cluster_yaml = rewrite_cluster(&strip_modeline(cluster_text), cluster, &cluster_id)
        .map_err(|reason| template_err("cluster.yaml", reason))?;
    files.insert("cluster.yaml".to_owned(), cluster_yaml.into_bytes());
    let want_dir_ids = nodes_file
        .nodes
        .iter()
        .filter(|n| n.directory_id.is_some())
        .count();
    let nodes_yaml = rewrite_directory_ids(&strip_modeline(nodes_text), want_dir_ids, &mut ids)
        .map_err(|reason| template_err("nodes.yaml", reason))?;
    files.insert("nodes.yaml".to_owned(), nodes_yaml.into_bytes());

    // The CA.
    let (ca_cert, ca_key) =
        Ca::generate(cluster.as_str(), opts.ca_validity_days, opts.now).map_err(InitError::Ca)?;
    let ca_path = cluster_file.security.ca.certificate.as_str().to_owned();
    let ca_fingerprint = fingerprint(&ca_cert);
    files.insert(ca_path.clone(), ca_cert.into_bytes());

    // The secrets: name → value, each name for one purpose only.
    let mut secrets: BTreeMap<String, (String, &'static str)> = BTreeMap::new();
    let mut add = |name: &str, value: String, purpose: &'static str| -> Result<(), InitError> {
        match secrets.insert(name.to_owned(), (value, purpose)) {
            Some((_, earlier)) if earlier != purpose => Err(template_err(
                "cluster.yaml",
                format!("secret {name} would be both the {earlier} and the {purpose}"),
            )),
            _ => Ok(()),
        }
    };
    add(
        cluster_file.security.ca.key_secret.as_str(),
        ca_key,
        "CA key",
    )?;
    for rel in template.files.keys().filter(|f| f.starts_with("users/")) {
        let users: UsersFile = serde_saphyr::from_str(template.text(rel, &opts.template_dir)?)
            .map_err(|e| template_err(rel, e.to_string()))?;
        for user in &users.users {
            add(
                user.password_secret.as_str(),
                random_b64(24),
                "SCRAM password",
            )?;
        }
    }
    if let Some(grafana) = &cluster_file.observability.grafana.admin_password_secret {
        add(grafana.as_str(), random_b64(24), "Grafana admin password")?;
    }
    for node in &nodes_file.nodes {
        let name = join_token_secret(node.name.as_str());
        if Name::try_from(name.as_str()).is_err() {
            return Err(template_err(
                "nodes.yaml",
                format!(
                    "node {}: its join token secret name {name:?} would be longer than 63 characters",
                    node.name.as_str()
                ),
            ));
        }
        add(&name, random_b64(32), "join token")?;
    }
    for (name, (value, _)) in &secrets {
        let rel = format!("secrets/{name}.age");
        let encrypted =
            EncryptedSecret::encrypt(rel.clone(), value, recipients).map_err(|source| {
                InitError::Encrypt {
                    name: name.clone(),
                    source,
                }
            })?;
        files.insert(rel, encrypted.ciphertext().to_vec());
    }

    Ok(Built {
        files,
        cluster_id,
        ca_path,
        ca_fingerprint,
        secrets: secrets.into_keys().collect(),
    })
}

/// The template's files that are copied, by path relative to its root.
struct Template {
    files: BTreeMap<String, Vec<u8>>,
}

impl Template {
    fn text(&self, rel: &str, root: &Path) -> Result<&str, InitError> {
        let bytes = self.files.get(rel).ok_or_else(|| InitError::Template {
            path: root.join(rel),
            reason: "is missing".to_owned(),
        })?;
        std::str::from_utf8(bytes).map_err(|_| InitError::Template {
            path: root.join(rel),
            reason: "is not UTF-8".to_owned(),
        })
    }
}

fn read_template(root: &Path) -> Result<Template, InitError> {
    let mut files = BTreeMap::new();
    for top in ["cluster.yaml", "nodes.yaml"] {
        let path = root.join(top);
        let bytes = std::fs::read(&path).map_err(io("reading the template file", &path))?;
        files.insert(top.to_owned(), bytes);
    }
    for dir in TEMPLATE_DIRS {
        if root.join(dir).is_dir() {
            copy_tree(root, Path::new(dir), &mut files)?;
        }
    }
    Ok(Template { files })
}

/// Reads every regular file below `root/rel` into `files`; hidden files are
/// skipped, anything that is neither a file nor a directory is refused.
fn copy_tree(
    root: &Path,
    rel: &Path,
    files: &mut BTreeMap<String, Vec<u8>>,
) -> Result<(), InitError> {
    let dir = root.join(rel);
    let entries = std::fs::read_dir(&dir).map_err(io("reading the template directory", &dir))?;
    for entry in entries {
        let entry = entry.map_err(io("reading the template directory", &dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(InitError::Template {
                path: entry.path(),
                reason: "file name is not UTF-8".to_owned(),
            });
        };
        if name.starts_with('.') {
            continue;
        }
        let child = rel.join(name);
        let kind = entry
            .file_type()
            .map_err(io("reading the template directory", &dir))?;
        if kind.is_dir() {
            copy_tree(root, &child, files)?;
        } else if kind.is_file() {
            let path = root.join(&child);
            let bytes = std::fs::read(&path).map_err(io("reading the template file", &path))?;
            files.insert(child.to_string_lossy().into_owned(), bytes);
        } else {
            return Err(InitError::Template {
                path: root.join(&child),
                reason: "is neither a file nor a directory (symlinks are not copied)".to_owned(),
            });
        }
    }
    Ok(())
}

/// Drops `# yaml-language-server: $schema=…` lines: their relative paths
/// point into the kraftops source tree, not into the new repository.
fn strip_modeline(text: &str) -> String {
    text.split_inclusive('\n')
        .filter(|line| !line.starts_with("# yaml-language-server:"))
        .collect()
}

/// Sets the top-level `name` and `kraft_cluster_id` of cluster.yaml and
/// replaces its leading comment (which describes the template).
fn rewrite_cluster(text: &str, cluster: &Name, cluster_id: &str) -> Result<String, String> {
    let mut out = format!(
        "# The {} cluster, created by `kraftops-agent init` from a template.\n# Adjust nodes.yaml to your machines before the first bootstrap.\n",
        cluster.as_str()
    );
    let (mut names, mut ids) = (0, 0);
    let mut in_header = true;
    for line in text.split_inclusive('\n') {
        if in_header && line.starts_with('#') {
            continue;
        }
        in_header = false;
        if line.starts_with("name:") {
            names += 1;
            out.push_str(&format!("name: {}\n", cluster.as_str()));
        } else if line.starts_with("kraft_cluster_id:") {
            ids += 1;
            out.push_str(&format!("kraft_cluster_id: {cluster_id}\n"));
        } else {
            out.push_str(line);
        }
    }
    if names != 1 || ids != 1 {
        return Err(format!(
            "expected exactly one top-level `name:` and one `kraft_cluster_id:` line, found {names} and {ids}"
        ));
    }
    Ok(out)
}

/// Gives every `directory_id:` line of nodes.yaml a fresh id; `expected` is
/// how many nodes have one, so a form the line edit misses is noticed.
fn rewrite_directory_ids(
    text: &str,
    expected: usize,
    ids: &mut UuidSource,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut replaced = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("directory_id:")
            && !rest.trim().is_empty()
        {
            let indent = &line[..line.len() - trimmed.len()];
            out.push_str(&format!("{indent}directory_id: {}\n", ids.next()));
            replaced += 1;
        } else {
            out.push_str(line);
        }
    }
    if replaced != expected {
        return Err(format!(
            "{expected} node(s) have a directory_id, but {replaced} `directory_id: <id>` line(s) were found to replace"
        ));
    }
    Ok(out)
}

/// Random Kafka UUIDs, never repeating, following Kafka's
/// `Uuid.randomUuid`: not the zero or metadata-topic UUID, and not starting
/// with '-' (which a command line would take for an option).
#[derive(Default)]
struct UuidSource {
    issued: BTreeSet<String>,
}

impl UuidSource {
    fn next(&mut self) -> String {
        loop {
            let mut bytes = [0u8; 16];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            let reserved = bytes[..15].iter().all(|b| *b == 0) && bytes[15] <= 1;
            let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
            if !reserved && !id.starts_with('-') && self.issued.insert(id.clone()) {
                return id;
            }
        }
    }
}

/// `n` random bytes, URL-safe base64 without padding: safe in properties
/// files, JAAS strings and URLs.
fn random_b64(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// SHA-256 of the first certificate's DER, `AB:CD:…`.
fn fingerprint(cert_pem: &str) -> String {
    let der = x509_parser::pem::Pem::iter_from_buffer(cert_pem.as_bytes())
        .flatten()
        .find(|p| p.label == "CERTIFICATE")
        .map(|p| p.contents)
        .unwrap_or_default();
    sha2::Sha256::digest(&der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn check_target(dir: &Path) -> Result<(), InitError> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("inspecting", dir)(e)),
        Ok(meta) if !meta.is_dir() => Err(InitError::NotADirectory {
            dir: dir.to_path_buf(),
        }),
        Ok(_) => {
            let mut entries = std::fs::read_dir(dir).map_err(io("reading", dir))?;
            if entries.next().is_some() {
                Err(InitError::NotEmpty {
                    dir: dir.to_path_buf(),
                })
            } else {
                Ok(())
            }
        }
    }
}

fn check_identity_path(path: &Path, dir: &Path) -> Result<(), InitError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => {
            return Err(InitError::IdentityExists {
                path: path.to_path_buf(),
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("inspecting", path)(e)),
    }
    let identity = resolve(path).map_err(io("resolving", path))?;
    let repo = resolve(dir).map_err(io("resolving", dir))?;
    if identity.starts_with(&repo) {
        return Err(InitError::IdentityInsideRepository {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
        });
    }
    Ok(())
}

/// `path` made absolute, with symlinks resolved as far as it exists and
/// `.` and `..` applied to the rest (which does not exist yet).
fn resolve(path: &Path) -> std::io::Result<PathBuf> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    let mut out = PathBuf::from("/");
    for component in absolute.components() {
        match component {
            Component::Prefix(_) | Component::RootDir => out = PathBuf::from("/"),
            Component::CurDir => {}
            // `out` is canonical wherever it exists, so its parent is the real one.
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => {
                out.push(name);
                if let Ok(real) = out.canonicalize() {
                    out = real;
                }
            }
        }
    }
    Ok(out)
}

/// Writes a new file (never replacing one), creating parent directories,
/// and syncs it.
fn write_new(path: &Path, bytes: &[u8], mode: u32, identity: bool) -> Result<(), InitError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| {
            if identity && source.kind() == std::io::ErrorKind::AlreadyExists {
                InitError::IdentityExists {
                    path: path.to_path_buf(),
                }
            } else {
                io("creating", path)(source)
            }
        })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io("writing", path))
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl Fn(std::io::Error) -> InitError + 'a {
    move |source| InitError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}
