//! The agent's own configuration (`/etc/kraftops/agent.yaml`), written by
//! cloud-init at boot. It holds what must not come from the repository the
//! agent verifies: where that repository is, whom to trust, and the node's
//! own secrets.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use desired_state::types::Duration;
use serde::Deserialize;

/// `agent.yaml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// This node's name in `nodes.yaml`.
    pub node: String,
    pub repository: RepositoryConfig,
    /// How often to poll the repository until it says otherwise
    /// (`cluster.yaml` `agent.poll_interval` wins once loaded).
    #[serde(default = "default_poll")]
    pub poll_interval: Duration,
    /// The coordinator's base URL, e.g. `http://observability-1.kafka.internal:9171`.
    #[serde(default)]
    pub coordinator: Option<String>,
    /// File holding this node's join token. With `ca_file` it is single
    /// use: the agent enrols with it once over mutual TLS (and receives its
    /// certificate and, when `identity_file` is missing, its identity), then
    /// deletes it. Without `ca_file` it is sent as a bearer token on every
    /// call over plain HTTP.
    #[serde(default)]
    pub join_token_file: Option<PathBuf>,
    /// The cluster CA certificate (PEM). Set, the coordinator is reached
    /// over mutual TLS (`coordinator` is its `https://` agent port) and its
    /// certificate must chain to this CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// SSH public keys (`ssh-ed25519 AAAA… comment` lines) allowed to sign
    /// commits. Empty: signatures are not checked.
    #[serde(default)]
    pub trusted_signers: Vec<String>,
    /// The age identity that decrypts this node's secrets.
    pub identity_file: PathBuf,
    /// Where the agent's HTTP API listens.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// File holding the bearer token `POST /v1/reconcile` requires.
    #[serde(default)]
    pub api_token_file: Option<PathBuf>,
    /// Prefix for every path the agent writes (`/` on a node; a temporary
    /// directory in tests).
    #[serde(default = "default_root")]
    pub root: PathBuf,
    /// The agent's own state (checkout, applied revision, written files),
    /// below `root`.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// How services are managed: `systemctl` on a node; `none` writes files
    /// only (for trying a repository against a temporary root).
    #[serde(default)]
    pub service_manager: ServiceManagerKind,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    /// `file://`, `https://` or `ssh://` URL (or a local path).
    pub url: String,
    #[serde(default = "default_branch")]
    pub branch: String,
    /// Accept a fetched head that is not a descendant of the applied commit
    /// (a force-push). Off by default: no silent rollback.
    #[serde(default)]
    pub allow_non_fast_forward: bool,
    /// The longest one fetch may take, from connecting to the last byte
    /// (e.g. `60s`, `5m`; at least 1s, at most 1d). A remote that has not
    /// answered by then counts as unreachable: the node keeps its last good
    /// revision and retries.
    #[serde(default = "default_fetch_timeout")]
    pub fetch_timeout: Duration,
}

impl RepositoryConfig {
    /// [`RepositoryConfig::fetch_timeout`] for [`crate::sync::Repo::with_fetch_timeout`].
    pub fn fetch_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.fetch_timeout.as_secs())
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceManagerKind {
    #[default]
    Systemctl,
    None,
}

fn default_poll() -> Duration {
    Duration::try_from("60s").unwrap_or_else(|_| unreachable!("60s is a duration"))
}

fn default_fetch_timeout() -> Duration {
    Duration::try_from("60s").unwrap_or_else(|_| unreachable!("60s is a duration"))
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9170))
}

fn default_root() -> PathBuf {
    PathBuf::from("/")
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/kraftops")
}

fn default_branch() -> String {
    "main".to_owned()
}

/// Why the agent's configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: u64,
        column: u64,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let config: Self = serde_saphyr::from_str(text).map_err(|e| {
            let e = e.without_snippet();
            let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
            let message = e.to_string();
            let suffix = format!(" at line {line}, column {column}");
            ConfigError::Parse {
                path: path.to_owned(),
                line,
                column,
                message: message.strip_suffix(&suffix).unwrap_or(&message).to_owned(),
            }
        })?;
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        if config.node.is_empty() {
            return Err(invalid("node must not be empty".to_owned()));
        }
        if !config.root.is_absolute() || !config.state_dir.is_absolute() {
            return Err(invalid(
                "root and state_dir must be absolute paths".to_owned(),
            ));
        }
        if config.ca_file.is_some()
            && !config
                .coordinator
                .as_deref()
                .is_some_and(|url| url.starts_with("https://"))
        {
            return Err(invalid(
                "ca_file is set, so coordinator must be the coordinator's https:// (mutual TLS) URL"
                    .to_owned(),
            ));
        }
        let fetch_timeout = config.repository.fetch_timeout();
        if fetch_timeout.is_zero() || fetch_timeout > crate::sync::MAX_FETCH_TIMEOUT {
            return Err(invalid(format!(
                "repository.fetch_timeout {} must be from 1s to 1d",
                config.repository.fetch_timeout.as_str()
            )));
        }
        Ok(config)
    }

    /// `path` (absolute, as on the node) below the configured root.
    pub fn rooted(&self, path: impl AsRef<Path>) -> PathBuf {
        rooted(&self.root, path.as_ref())
    }

    /// The agent's state directory below the root.
    pub fn state_path(&self) -> PathBuf {
        self.rooted(&self.state_dir)
    }
}

/// `path` below `root`: `/etc/kafka` under `/tmp/x` is `/tmp/x/etc/kafka`.
pub fn rooted(root: &Path, path: &Path) -> PathBuf {
    let relative = path.strip_prefix("/").unwrap_or(path);
    root.join(relative)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_file_needs_an_https_coordinator() {
        let base = "node: broker-1\nrepository:\n  url: file:///srv/git/cluster.git\nidentity_file: /etc/kraftops/age-identity\nca_file: /etc/kraftops/ca.pem\n";
        let plain = format!("{base}coordinator: http://observability-1.kafka.internal:9171\n");
        let err =
            AgentConfig::parse(Path::new("agent.yaml"), &plain).expect_err("plain http refused");
        assert!(
            err.to_string().contains("agent.yaml") || matches!(err, ConfigError::Invalid { .. })
        );
        assert!(format!("{err:?}").contains("https://"), "{err:?}");
        let tls = format!("{base}coordinator: https://observability-1.kafka.internal:9172\n");
        let c = AgentConfig::parse(Path::new("agent.yaml"), &tls).expect("https accepted");
        assert_eq!(
            c.ca_file.as_deref(),
            Some(Path::new("/etc/kraftops/ca.pem"))
        );
    }

    #[test]
    fn parses_a_full_config() {
        let text = "node: broker-1\nrepository:\n  url: file:///srv/git/cluster.git\n  branch: main\nidentity_file: /etc/kraftops/age-identity\ncoordinator: http://observability-1.kafka.internal:9171\nroot: /tmp/x\n";
        let c = AgentConfig::parse(Path::new("agent.yaml"), text).expect("parses");
        assert_eq!(c.node, "broker-1");
        assert_eq!(c.poll_interval.as_secs(), 60);
        assert_eq!(c.rooted("/etc/kafka"), PathBuf::from("/tmp/x/etc/kafka"));
        assert_eq!(c.state_path(), PathBuf::from("/tmp/x/var/lib/kraftops"));
        assert_eq!(c.service_manager, ServiceManagerKind::Systemctl);
        assert_eq!(
            c.repository.fetch_timeout(),
            crate::sync::DEFAULT_FETCH_TIMEOUT
        );
    }

    #[test]
    fn fetch_timeout_is_a_bounded_duration() {
        let config = |timeout: &str| {
            format!(
                "node: b\nrepository:\n  url: x\n  fetch_timeout: {timeout}\nidentity_file: /k\n"
            )
        };
        let c = AgentConfig::parse(Path::new("agent.yaml"), &config("90s")).expect("parses");
        assert_eq!(
            c.repository.fetch_timeout(),
            std::time::Duration::from_secs(90)
        );
        let c = AgentConfig::parse(Path::new("agent.yaml"), &config("1d")).expect("parses");
        assert_eq!(c.repository.fetch_timeout(), crate::sync::MAX_FETCH_TIMEOUT);
        for (bad, message) in [
            (
                "0s",
                "agent.yaml: repository.fetch_timeout 0s must be from 1s to 1d",
            ),
            (
                "2d",
                "agent.yaml: repository.fetch_timeout 2d must be from 1s to 1d",
            ),
        ] {
            let err = AgentConfig::parse(Path::new("agent.yaml"), &config(bad))
                .expect_err("out of range");
            assert_eq!(err.to_string(), message);
        }
        let err = AgentConfig::parse(Path::new("agent.yaml"), &config("soon"))
            .expect_err("not a duration");
        assert!(err.to_string().starts_with("agent.yaml:4:18: "), "{err}");
    }

    #[test]
    fn unknown_keys_name_the_place() {
        let text = "node: b\nrepository:\n  url: x\n  brnach: main\nidentity_file: /k\n";
        let err = AgentConfig::parse(Path::new("agent.yaml"), text).expect_err("unknown key");
        assert!(
            err.to_string()
                .starts_with("agent.yaml:4:3: unknown field `brnach`"),
            "{err}"
        );
    }
}
