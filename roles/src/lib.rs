//! Pure rendering of one node's role into a [`Plan`].
//!
//! `render(model, node, secrets)` is a pure function: the same model and
//! secret values give the same bytes, with no clock, randomness, network or
//! filesystem. Every role gets the common parts (node_exporter, the agent's
//! own unit, the cluster CA); then its own:
//!
//! - [`controller`]: KRaft controller, mTLS controller listener, dynamic quorum.
//! - [`broker`]: SASL_SSL/SCRAM-SHA-512 broker with rack awareness.
//! - [`connect`]: a distributed Kafka Connect worker.
//! - [`observability`]: Prometheus, Alertmanager, Grafana and the coordinator.
//!
//! [`cloud_init::user_data`] renders what a new machine boots with: the
//! cloud-init user-data that installs and starts the agent.
//!
//! [`resources::plan`] is the coordinator's pure planner for the cluster's
//! topics, SCRAM users, ACLs and quotas: git against what Kafka reports.
//!
//! [`transition::check_transition`] is what a new commit may not change
//! relative to the applied one (the cluster's own SCRAM passwords in place).

pub mod broker;
pub mod cloud_init;
mod common;
pub mod connect;
mod context;
pub mod controller;
mod kafka;
pub mod layout;
pub mod observability;
mod plan;
pub mod properties;
pub mod resources;
pub mod scram;
pub mod systemd;
pub mod transition;

use std::collections::BTreeMap;

pub use cloud_init::{UserDataSecrets, user_data};
pub use context::Ctx;
pub use desired_state::{Model, Role, SecretValue, types::Name};
pub use plan::*;

/// Decrypted secret values by name, as `Model::decrypt_all` returns them.
pub type Secrets = BTreeMap<Name, SecretValue>;

/// Why a node's plan could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("node {0:?} is not defined in nodes.yaml")]
    UnknownNode(String),
    #[error(
        "secret {name} is needed by {needed_by} but was not provided (is the identity able to decrypt secrets/{name}.age?)"
    )]
    MissingSecret { name: String, needed_by: String },
    #[error(transparent)]
    Secret(#[from] desired_state::SecretError),
    #[error(transparent)]
    Unit(#[from] systemd::UnitValueError),
    #[error("rendering {file}")]
    Template {
        file: String,
        #[source]
        source: minijinja::Error,
    },
    #[error("serializing {file}: {message}")]
    Serialize { file: String, message: String },
    #[error("{setting} is required by {needed_by}")]
    MissingSetting {
        setting: &'static str,
        needed_by: String,
    },
    #[error(
        "the age identity belongs on the observability node only (it runs the coordinator); refusing to put it into the user-data of {node} (role {role})"
    )]
    IdentityRefused { node: String, role: Role },
}

/// Renders the plan of the node called `node`.
pub fn render(model: &Model, node: &str, secrets: &Secrets) -> Result<Plan, RenderError> {
    let node = model
        .node(node)
        .ok_or_else(|| RenderError::UnknownNode(node.to_owned()))?;
    let ctx = Ctx::new(model, node, secrets);
    let mut plan = Plan::empty(node.name.as_str(), *node.role);
    common::render(&ctx, &mut plan)?;
    match *node.role {
        Role::Controller => controller::render(&ctx, &mut plan)?,
        Role::Broker => broker::render(&ctx, &mut plan)?,
        Role::Connect => connect::render(&ctx, &mut plan)?,
        Role::Observability => observability::render(&ctx, &mut plan)?,
    }
    plan.users.sort_by(|a, b| a.name.cmp(&b.name));
    plan.users.dedup();
    plan.directories.sort_by(|a, b| a.path.cmp(&b.path));
    plan.directories.dedup();
    plan.files.sort_by(|a, b| a.path.cmp(&b.path));
    plan.units.sort_by(|a, b| a.name.cmp(&b.name));
    plan.artifacts.sort_by(|a, b| a.name.cmp(&b.name));
    plan.masked_units.sort();
    plan.masked_units.dedup();
    Ok(plan)
}

/// Renders the plan of every node, in the order of `nodes.yaml`.
pub fn render_all(model: &Model, secrets: &Secrets) -> Result<Vec<Plan>, RenderError> {
    model
        .nodes
        .iter()
        .map(|n| render(model, n.name.as_str(), secrets))
        .collect()
}
