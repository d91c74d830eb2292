//! What every role renderer needs to know about the cluster, derived once.

use desired_state::types::UserName;
use desired_state::{Model, Node, Role};

use crate::scram::ScramCredential;
use crate::{RenderError, Secrets};

/// The model, the node being rendered and the decrypted secrets.
#[derive(Debug)]
pub struct Ctx<'a> {
    pub model: &'a Model,
    pub node: &'a Node,
    pub secrets: &'a Secrets,
}

impl<'a> Ctx<'a> {
    pub fn new(model: &'a Model, node: &'a Node, secrets: &'a Secrets) -> Self {
        Self {
            model,
            node,
            secrets,
        }
    }

    pub fn fqdn(&self, node: &Node) -> String {
        self.model.fqdn(node)
    }

    /// This node's host name.
    pub fn host(&self) -> String {
        self.model.fqdn(self.node)
    }

    pub fn ports(&self) -> &desired_state::Ports {
        &self.model.cluster.ports
    }

    /// `host:port` of every controller listener, in `nodes.yaml` order
    /// (`controller.quorum.bootstrap.servers`).
    pub fn quorum_bootstrap_servers(&self) -> String {
        let port = self.ports().controller;
        self.model
            .controllers()
            .map(|c| format!("{}:{port}", self.fqdn(c)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `id@host:port:directory-id` of every controller (`--initial-controllers`),
    /// identical on every controller.
    pub fn initial_controllers(&self) -> String {
        let port = self.ports().controller;
        self.model
            .controllers()
            .filter_map(|c| {
                let id = c.node_id.as_ref()?;
                let dir = c.directory_id.as_ref()?;
                Some(format!(
                    "{}@{}:{port}:{}",
                    id.value,
                    self.fqdn(c),
                    dir.as_str()
                ))
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `host:port` of every broker's client listener (`bootstrap.servers`).
    pub fn bootstrap_servers(&self) -> String {
        let port = self.ports().client;
        self.model
            .brokers()
            .map(|b| format!("{}:{port}", self.fqdn(b)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The password of a SCRAM user, checked to be one line.
    pub fn password(&self, user: &UserName, needed_by: &str) -> Result<&'a str, RenderError> {
        let u = self
            .model
            .user(user)
            .ok_or_else(|| RenderError::MissingSecret {
                name: format!("password of user {user}"),
                needed_by: needed_by.to_owned(),
            })?;
        self.secret(&u.password_secret, needed_by)
    }

    /// A secret's value, checked to be one line.
    pub fn secret(
        &self,
        name: &desired_state::types::Name,
        needed_by: &str,
    ) -> Result<&'a str, RenderError> {
        let value = self
            .secrets
            .get(name)
            .ok_or_else(|| RenderError::MissingSecret {
                name: name.to_string(),
                needed_by: needed_by.to_owned(),
            })?;
        Ok(value.single_line(name.as_str())?)
    }

    /// The salted SCRAM-SHA-512 credential of a user.
    pub fn scram(&self, user: &UserName, needed_by: &str) -> Result<ScramCredential, RenderError> {
        let password = self.password(user, needed_by)?;
        Ok(ScramCredential::derive(
            self.model.cluster.kraft_cluster_id.as_str(),
            user.as_str(),
            password,
            self.model.cluster.security.scram_iterations.value,
        ))
    }

    /// Kafka principals allowed everything: the inter-broker and admin SCRAM
    /// users, and every broker's and controller's certificate identity (they
    /// talk to the controllers over mutual TLS).
    pub fn super_users(&self) -> String {
        let security = &self.model.cluster.security;
        let mut users = vec![
            format!("User:{}", security.inter_broker_user.as_str()),
            format!("User:{}", security.admin_user.as_str()),
        ];
        for n in self.model.nodes.iter().filter(|n| n.role.is_kafka_server()) {
            users.push(format!("User:{}", n.name.as_str()));
        }
        users.join(";")
    }

    pub fn role(&self) -> Role {
        *self.node.role
    }
}
