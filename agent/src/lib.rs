//! The kraftops node agent and coordinator, as a library the
//! `kraftops-agent` binary and the integration tests share.
//!
//! - [`sync`]: fetch the desired-state repository with git, verify commit
//!   signatures, refuse non-descendant heads.
//! - [`apply`]: make the node match a `roles::Plan`: atomic writes, owners,
//!   modes, systemd, downloads; crash-safe.
//! - [`certs`]: the node's key and certificate (CSR signed by the
//!   coordinator), and the CA side of signing.
//! - [`coordinator`]: the service agents report to: status, restart leases,
//!   CSR signing, nudges.
//! - [`daemon`]: the reconcile loop, the agent's HTTP API and metrics.
//! - [`protocol`]: the coordinator protocol's types.
//! - [`kafka`]: the Kafka admin client (metadata, configs, quorum,
//!   elections) over Kafka's wire protocol, behind the `KafkaAdmin` seam.
//! - [`rollout`]: Kafka-aware restart gates, health after a restart, and
//!   configuration changes applied live.
//! - [`local`]: local mode, the whole cluster on one machine.

pub mod apply;
pub mod certs;
pub mod cli;
pub mod config;
pub mod connect;
pub mod coordinator;
pub mod daemon;
mod http_auth;
pub mod init;
pub mod kafka;
pub mod local;
pub mod protocol;
pub mod rollout;
pub mod sync;

/// `err` and its sources, as `a: b: c` (what a status, a log line or a
/// refusal shows of an error).
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
