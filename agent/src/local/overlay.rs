//! The local override: how `kraftops-agent local` fits a desired-state
//! repository onto one machine without editing it (pure; no IO).
//!
//! The override file names the age identity that decrypts the repository's
//! secrets, moves every address of `network.from` onto `network.to` (the
//! local bridge's range), shrinks the heaps, and turns Grafana off (it is not
//! in Debian). The harness adds the Kafka distribution and the JMX exporter
//! it assembled (file URLs and their sha512), the agent binary the nodes'
//! cloud-init installs (file URL and sha256) and the local git server's URL. [`LocalOverride::apply`] returns the files of
//! the repository the local git server serves; the caller validates them
//! with the same loader the agents use.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use desired_state::FileSet;
use desired_state::types::{Cidr, HeapSize};
use serde::Deserialize;
use serde_json::Value;

/// `<example>.local.yaml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalOverride {
    /// The age identity that decrypts the repository's secrets, relative to
    /// the override file.
    pub identity: PathBuf,
    /// Where the repository's addresses move.
    pub network: AddressMove,
    /// Heap sizes per role, so the whole cluster fits on one machine.
    #[serde(default)]
    pub heap: Heaps,
    /// Whether the observability node runs Grafana (default false: Debian
    /// has no Grafana package).
    #[serde(default)]
    pub grafana: bool,
    /// The agents' poll interval in the local cluster (pushes also nudge).
    #[serde(default)]
    pub poll_interval: Option<desired_state::types::Duration>,
}

/// Every address inside `from` becomes the same host offset inside `to`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressMove {
    pub from: Cidr,
    pub to: Cidr,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heaps {
    pub broker: Option<HeapSize>,
    pub controller: Option<HeapSize>,
    pub connect: Option<HeapSize>,
}

/// What the harness assembled, pointed to by file URLs, and where the
/// local git server serves the repository.
#[derive(Clone, Debug)]
pub struct LocalArtifacts {
    pub kafka_url: String,
    pub kafka_sha512: String,
    pub jmx_exporter_url: String,
    pub jmx_exporter_sha512: String,
    /// The agent binary the nodes' cloud-init installs.
    pub agent_url: String,
    pub agent_sha256: String,
    /// The repository the nodes follow (the local git server).
    pub repository_url: String,
}

#[derive(Debug, thiserror::Error)]
pub enum OverrideError {
    #[error("{file}: {message}")]
    File { file: String, message: String },
    #[error("override: {0}")]
    Invalid(String),
}

impl LocalOverride {
    /// Parses the override file's text; `name` is used in messages.
    pub fn parse(name: &str, text: &str) -> Result<Self, OverrideError> {
        let parsed: Self = serde_saphyr::from_str(text).map_err(|e| OverrideError::File {
            file: name.to_owned(),
            message: e.without_snippet().to_string(),
        })?;
        if parsed.network.from.prefix() != parsed.network.to.prefix() {
            return Err(OverrideError::File {
                file: name.to_owned(),
                message: format!(
                    "network.from ({}) and network.to ({}) must have the same prefix length",
                    parsed.network.from, parsed.network.to
                ),
            });
        }
        Ok(parsed)
    }

    /// `addr` moved from `network.from` to `network.to`; other addresses
    /// unchanged.
    pub fn move_address(&self, addr: Ipv4Addr) -> Ipv4Addr {
        let AddressMove { from, to } = &self.network;
        if !from.contains(addr) {
            return addr;
        }
        let host_mask = u32::MAX.checked_shr(u32::from(from.prefix())).unwrap_or(0);
        Ipv4Addr::from(u32::from(to.network()) | (u32::from(addr) & host_mask))
    }

    /// The repository `files` with this override and `artifacts` applied.
    pub fn apply(
        &self,
        files: &FileSet,
        artifacts: &LocalArtifacts,
    ) -> Result<FileSet, OverrideError> {
        let mut out = files.clone();
        let mut cluster = yaml(files, "cluster.yaml")?;
        let mut nodes = yaml(files, "nodes.yaml")?;
        self.move_addresses(&mut cluster);
        self.move_addresses(&mut nodes);

        let root = object(&mut cluster, "cluster.yaml", "")?;
        let kafka = object_at(root, "cluster.yaml", "kafka")?;
        kafka.insert(
            "distribution".to_owned(),
            serde_json::json!({ "tarball": {
                "url": artifacts.kafka_url,
                "sha512": artifacts.kafka_sha512,
            }}),
        );
        let jmx = object_at(kafka, "cluster.yaml", "kafka.jmx_exporter")?;
        jmx.insert(
            "url".to_owned(),
            Value::from(artifacts.jmx_exporter_url.clone()),
        );
        jmx.insert(
            "sha512".to_owned(),
            Value::from(artifacts.jmx_exporter_sha512.clone()),
        );
        for (role, heap) in [
            ("broker", &self.heap.broker),
            ("controller", &self.heap.controller),
            ("connect", &self.heap.connect),
        ] {
            if let Some(heap) = heap {
                object_at(root, "cluster.yaml", role)?
                    .insert("heap".to_owned(), Value::from(heap.to_string()));
            }
        }
        let observability = object_at(root, "cluster.yaml", "observability")?;
        object_at(observability, "cluster.yaml", "observability.grafana")?
            .insert("enabled".to_owned(), Value::from(self.grafana));
        let agent = object_at(root, "cluster.yaml", "agent")?;
        if let Some(poll) = &self.poll_interval {
            agent.insert("poll_interval".to_owned(), Value::from(poll.to_string()));
        }
        agent.insert(
            "binary".to_owned(),
            serde_json::json!({ "url": artifacts.agent_url, "sha256": artifacts.agent_sha256 }),
        );
        agent.insert(
            "repository".to_owned(),
            serde_json::json!({ "url": artifacts.repository_url, "branch": "main" }),
        );

        out.insert(
            "cluster.yaml".to_owned(),
            to_yaml("cluster.yaml", &cluster)?,
        );
        out.insert("nodes.yaml".to_owned(), to_yaml("nodes.yaml", &nodes)?);
        Ok(out)
    }

    /// Rewrites every string of `value` that is an address or a CIDR inside
    /// `network.from` (node addresses, subnets, scrape targets).
    fn move_addresses(&self, value: &mut Value) {
        match value {
            Value::String(s) => {
                if let Some(moved) = self.move_text(s) {
                    *s = moved;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.move_addresses(v)),
            Value::Object(map) => map.values_mut().for_each(|v| self.move_addresses(v)),
            _ => {}
        }
    }

    fn move_text(&self, s: &str) -> Option<String> {
        let (addr, suffix) = match s.split_once('/') {
            Some((a, p)) if p.parse::<u8>().is_ok() => (a, format!("/{p}")),
            Some(_) => return None,
            None => (s, String::new()),
        };
        let addr: Ipv4Addr = addr.parse().ok()?;
        self.network
            .from
            .contains(addr)
            .then(|| format!("{}{suffix}", self.move_address(addr)))
    }
}

fn yaml(files: &FileSet, name: &str) -> Result<Value, OverrideError> {
    let bytes = files.get(name).ok_or_else(|| OverrideError::File {
        file: name.to_owned(),
        message: "missing from the repository".to_owned(),
    })?;
    let text = std::str::from_utf8(bytes).map_err(|e| OverrideError::File {
        file: name.to_owned(),
        message: format!("not UTF-8: {e}"),
    })?;
    serde_saphyr::from_str(text).map_err(|e| OverrideError::File {
        file: name.to_owned(),
        message: e.without_snippet().to_string(),
    })
}

fn to_yaml(name: &str, value: &Value) -> Result<Vec<u8>, OverrideError> {
    let body = serde_saphyr::to_string(value).map_err(|e| OverrideError::File {
        file: name.to_owned(),
        message: format!("cannot write it back: {e}"),
    })?;
    Ok(format!("# Written by `kraftops-agent local` from the source repository and its local override.\n{body}")
        .into_bytes())
}

fn object<'a>(
    value: &'a mut Value,
    file: &str,
    at: &str,
) -> Result<&'a mut serde_json::Map<String, Value>, OverrideError> {
    value.as_object_mut().ok_or_else(|| OverrideError::File {
        file: file.to_owned(),
        message: format!(
            "{} is not a mapping",
            if at.is_empty() { "the document" } else { at }
        ),
    })
}

/// The mapping at `key` of `map` (the last segment of `path`), created
/// empty when absent.
fn object_at<'a>(
    map: &'a mut serde_json::Map<String, Value>,
    file: &str,
    path: &str,
) -> Result<&'a mut serde_json::Map<String, Value>, OverrideError> {
    let key = path.rsplit('.').next().unwrap_or(path);
    let entry = map
        .entry(key.to_owned())
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    object(entry, file, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn over() -> LocalOverride {
        LocalOverride::parse(
            "seed.local.yaml",
            "identity: x.age-identity\nnetwork: {from: 10.0.0.0/16, to: 10.213.0.0/16}\nheap: {broker: 256m}\n",
        )
        .expect("parses")
    }

    #[test]
    fn moves_addresses_and_subnets_inside_the_range_only() {
        let o = over();
        assert_eq!(o.move_text("10.0.1.11").as_deref(), Some("10.213.1.11"));
        assert_eq!(o.move_text("10.0.3.0/24").as_deref(), Some("10.213.3.0/24"));
        assert_eq!(o.move_text("10.1.1.11"), None);
        assert_eq!(o.move_text("broker-1"), None);
        assert_eq!(o.move_text("10.0.1.11:9092"), None);
    }

    #[test]
    fn unknown_keys_and_mismatched_ranges_are_refused() {
        let e = LocalOverride::parse(
            "o.yaml",
            "identity: x\nnetwork: {from: 10.0.0.0/16, to: 10.9.0.0/16}\ncolour: red\n",
        )
        .expect_err("unknown key");
        assert!(e.to_string().starts_with("o.yaml: "), "{e}");
        assert!(e.to_string().contains("colour"), "{e}");
        let e = LocalOverride::parse(
            "o.yaml",
            "identity: x\nnetwork: {from: 10.0.0.0/16, to: 10.9.0.0/24}\n",
        )
        .expect_err("prefix mismatch");
        assert!(e.to_string().contains("same prefix length"), "{e}");
    }

    #[test]
    fn applies_to_a_repository() {
        let mut files = FileSet::new();
        files.insert(
            "cluster.yaml".to_owned(),
            b"name: c\nkafka:\n  version: 4.1.1\n  jmx_exporter: {version: 1.1.0}\nnetwork:\n  azs:\n    - {name: a, subnet: 10.0.1.0/24}\nbroker: {heap: 1g}\nobservability: {}\n".to_vec(),
        );
        files.insert(
            "nodes.yaml".to_owned(),
            b"nodes:\n  - {name: b1, address: 10.0.1.11}\n".to_vec(),
        );
        let artifacts = LocalArtifacts {
            kafka_url: "file:///k.tgz".to_owned(),
            kafka_sha512: "ab".repeat(64),
            jmx_exporter_url: "file:///j.jar".to_owned(),
            jmx_exporter_sha512: "cd".repeat(64),
            agent_url: "file:///a/kraftops-agent".to_owned(),
            agent_sha256: "ef".repeat(32),
            repository_url: "git://10.213.0.1:9418/cluster.git".to_owned(),
        };
        let out = over().apply(&files, &artifacts).expect("applies");
        let cluster: Value =
            serde_saphyr::from_slice(&out["cluster.yaml"]).expect("cluster.yaml is YAML");
        assert_eq!(cluster["network"]["azs"][0]["subnet"], "10.213.1.0/24");
        assert_eq!(
            cluster["kafka"]["distribution"]["tarball"]["url"],
            "file:///k.tgz"
        );
        assert_eq!(cluster["kafka"]["jmx_exporter"]["url"], "file:///j.jar");
        assert_eq!(cluster["kafka"]["version"], "4.1.1");
        assert_eq!(cluster["broker"]["heap"], "256m");
        assert_eq!(cluster["observability"]["grafana"]["enabled"], false);
        assert_eq!(
            cluster["agent"]["binary"]["url"],
            "file:///a/kraftops-agent"
        );
        assert_eq!(cluster["agent"]["binary"]["sha256"], "ef".repeat(32));
        assert_eq!(
            cluster["agent"]["repository"]["url"],
            "git://10.213.0.1:9418/cluster.git"
        );
        let nodes: Value =
            serde_saphyr::from_slice(&out["nodes.yaml"]).expect("nodes.yaml is YAML");
        assert_eq!(nodes["nodes"][0]["address"], "10.213.1.11");
    }
}
