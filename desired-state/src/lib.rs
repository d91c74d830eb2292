//! The typed model of a kraftops desired-state repository.
//!
//! A repository is a directory (or git tree) of YAML files: `cluster.yaml`,
//! `nodes.yaml`, `topics/`, `users/`, `connectors/`, `observability/` and
//! age-encrypted `secrets/`. [`load_dir`] / [`load_files`] parse and
//! cross-check it into a [`Model`], or return every problem at once as
//! [`Diagnostics`], each naming file, line and column.
//!
//! This crate does no IO except reading the repository's files in
//! [`load_dir`]: no clock, no network, no writes.

mod diagnostic;
pub mod features;
mod load;
mod located;
pub mod model;
pub mod schema;
pub mod secrets;
pub mod types;
mod validate;
pub mod window;

use std::collections::BTreeMap;

pub use diagnostic::{Diagnostic, Diagnostics};
pub use load::{FileSet, load_dir, load_files, read_repository};
pub use located::{Located, Pos};
pub use model::*;
pub use secrets::{EncryptedSecret, Identity, SecretError, SecretValue};
pub use validate::{
    CONNECT_MANAGED, DATASOURCE_NAME, DATASOURCE_UID, DERIVED_JOBS, SERVER_MANAGED,
    managed_key_reason, ports_of,
};
pub use window::{WindowState, format_utc, window_state};

use types::{Name, TopicName, UserName};

/// An item together with the repository file it came from.
#[derive(Clone, Debug)]
pub struct InFile<T> {
    pub file: String,
    pub item: Located<T>,
}

impl<T> std::ops::Deref for InFile<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.item.value
    }
}

/// A Grafana dashboard from `observability/dashboards/*.json`.
#[derive(Clone, Debug)]
pub struct Dashboard {
    pub file: String,
    pub uid: String,
    pub title: String,
    /// The dashboard exactly as written, re-serialized with sorted keys.
    pub json: serde_json::Value,
    /// The original text, for locating problems found after parsing.
    pub text: String,
}

impl Dashboard {
    fn parse(file: &str, text: &str) -> Result<Self, Diagnostic> {
        let json: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            Diagnostic::at(
                file,
                Pos {
                    line: e.line() as u64,
                    column: e.column() as u64,
                },
                format!("invalid JSON: {}", strip_json_position(&e.to_string())),
            )
        })?;
        let field = |key: &str| -> Result<String, Diagnostic> {
            match json.get(key) {
                Some(serde_json::Value::String(s))
                    if !s.is_empty() && !s.chars().any(char::is_control) =>
                {
                    Ok(s.clone())
                }
                _ => Err(Diagnostic::at(
                    file,
                    Pos { line: 1, column: 1 },
                    format!("a dashboard needs a non-empty single-line string `{key}`"),
                )),
            }
        };
        let uid = field("uid")?;
        let title = field("title")?;
        Ok(Self {
            file: file.to_owned(),
            uid,
            title,
            json,
            text: text.to_owned(),
        })
    }

    /// The position of the first occurrence of `needle` in the dashboard text.
    pub fn position_of(&self, needle: &str) -> Pos {
        let offset = self.text.find(needle).unwrap_or(0);
        let before = &self.text[..offset];
        let line = before.matches('\n').count() as u64 + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u64 + 1;
        Pos { line, column }
    }
}

fn strip_json_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// A loaded and validated desired-state repository.
#[derive(Clone, Debug)]
pub struct Model {
    pub cluster: ClusterFile,
    pub nodes: Vec<Located<Node>>,
    pub topics: Vec<InFile<Topic>>,
    pub users: Vec<InFile<User>>,
    pub connectors: Vec<InFile<Connector>>,
    pub rules: Vec<InFile<RulesFile>>,
    pub dashboards: Vec<Dashboard>,
    pub secrets: BTreeMap<Name, EncryptedSecret>,
    /// The cluster CA certificate, PEM.
    pub ca_certificate: String,
}

impl Model {
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes
            .iter()
            .map(|n| &n.value)
            .find(|n| n.name.as_str() == name)
    }

    /// Nodes of one role, in the order of `nodes.yaml`.
    pub fn nodes_with_role(&self, role: Role) -> impl Iterator<Item = &Node> {
        self.nodes
            .iter()
            .map(|n| &n.value)
            .filter(move |n| *n.role == role)
    }

    pub fn brokers(&self) -> impl Iterator<Item = &Node> {
        self.nodes_with_role(Role::Broker)
    }

    pub fn controllers(&self) -> impl Iterator<Item = &Node> {
        self.nodes_with_role(Role::Controller)
    }

    /// The node's host name: `<name>.<domain>`.
    pub fn fqdn(&self, node: &Node) -> String {
        format!(
            "{}.{}",
            node.name.as_str(),
            self.cluster.network.domain.as_str()
        )
    }

    /// Connect's own storage topics, with the cluster.yaml key naming each.
    /// Kafka Connect creates and owns them; kraftops never declares,
    /// changes, prunes or deletes them.
    pub fn connect_storage_topics(&self) -> [(&'static str, &Located<TopicName>); 3] {
        let connect = &self.cluster.connect;
        [
            ("connect.config_topic", &connect.config_topic),
            ("connect.offset_topic", &connect.offset_topic),
            ("connect.status_topic", &connect.status_topic),
        ]
    }

    /// Users the cluster cannot run without, with the cluster.yaml key naming
    /// each: never marked for deletion, never pruned.
    pub fn protected_users(&self) -> [(&'static str, &Located<UserName>); 2] {
        let security = &self.cluster.security;
        [
            ("security.inter_broker_user", &security.inter_broker_user),
            ("security.admin_user", &security.admin_user),
        ]
    }

    pub fn user(&self, name: &UserName) -> Option<&User> {
        self.users
            .iter()
            .map(|u| &u.item.value)
            .find(|u| *u.name == *name)
    }

    /// The secret a user's password is stored in.
    pub fn password_secret(&self, user: &UserName) -> Option<&EncryptedSecret> {
        self.user(user)
            .and_then(|u| self.secrets.get(&*u.password_secret))
    }

    /// Decrypts the named secret.
    pub fn decrypt(&self, name: &Name, identity: &Identity) -> Result<SecretValue, SecretError> {
        self.secrets
            .get(name)
            .ok_or_else(|| SecretError::Unknown {
                name: name.to_string(),
            })?
            .decrypt(identity)
    }

    /// Decrypts every secret. The renderer takes the result, so rendering
    /// itself stays a pure function of the model and these values.
    pub fn decrypt_all(
        &self,
        identity: &Identity,
    ) -> Result<BTreeMap<Name, SecretValue>, SecretError> {
        self.secrets
            .iter()
            .map(|(name, s)| Ok((name.clone(), s.decrypt(identity)?)))
            .collect()
    }
}
