//! The coordinator protocol: every request and response the agents and the
//! coordinator exchange, in one place. `docs/coordinator-protocol.md`
//! describes the endpoints; these types are the contract.
//!
//! Times are Unix seconds (UTC). Authentication: on the mutual-TLS port a
//! node enrols once with `Authorization: Bearer <join token>` (the token is
//! then spent) and afterwards presents its certificate; on the plain port
//! a node request carries its unspent join token as a bearer token.

use serde::{Deserialize, Serialize};

/// What a node is doing, as its API, its reports and its metrics show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Started, nothing reconciled yet.
    Starting,
    /// Fetching and verifying the repository.
    Syncing,
    /// Writing files and units.
    Applying,
    /// A restart is due; waiting for the coordinator's lease for this role.
    WaitingForLease,
    /// Restarting services under a lease.
    Restarting,
    /// The node matches the applied revision.
    Converged,
    /// The newest commit was refused (bad signature, invalid, not a
    /// descendant); the last good revision stays applied.
    Refused,
    /// The repository cannot be reached; the last good revision stays applied.
    RepoUnreachable,
    /// Applying failed; see `last_error`.
    Failed,
}

impl Phase {
    /// Every phase, in the order the agent's metrics list them.
    pub const ALL: [Phase; 9] = [
        Phase::Starting,
        Phase::Syncing,
        Phase::Applying,
        Phase::WaitingForLease,
        Phase::Restarting,
        Phase::Converged,
        Phase::Refused,
        Phase::RepoUnreachable,
        Phase::Failed,
    ];
}

/// One systemd unit's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitStatus {
    pub name: String,
    pub active_state: String,
    pub sub_state: String,
}

/// A certificate the agent manages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateStatus {
    pub name: String,
    pub not_after: u64,
}

/// The last error, with where in the repository it is when it is one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedError {
    pub message: String,
    /// The commit the error is about, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// `file:line:col: message` lines when the repository itself is wrong.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    pub at: u64,
}

/// A managed file that was changed by hand and put back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftEvent {
    pub path: String,
    pub at: u64,
}

/// A node's report: `POST /v1/nodes/{name}/status`, and the agent's own
/// `GET /v1/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub node: String,
    pub role: String,
    /// The newest commit fetched.
    pub revision_seen: Option<String>,
    /// The commit the node runs.
    pub revision_applied: Option<String>,
    /// Who signed the applied commit, when signatures are checked.
    pub signer: Option<String>,
    pub phase: Phase,
    pub units: Vec<UnitStatus>,
    pub certificates: Vec<CertificateStatus>,
    pub last_error: Option<ReportedError>,
    pub drift: Vec<DriftEvent>,
    pub reported_at: u64,
}

/// `GET /v1/nodes/{name}`: the latest report and how old it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub node: String,
    pub role: String,
    /// `None` until the node has reported since the coordinator started.
    pub report: Option<StatusReport>,
    pub age_seconds: Option<u64>,
}

/// `POST /v1/certificates`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRequestBody {
    pub node: String,
    pub csr_pem: String,
}

/// The signed certificate and the CA that signed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateResponse {
    pub certificate_pem: String,
    pub ca_pem: String,
    pub not_after: u64,
}

/// `POST /v1/enrol` (mutual-TLS port only, with the node's join token):
/// the node's first certificate, and the age identity that decrypts its
/// secrets. The join token is spent by it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolmentResponse {
    pub certificate_pem: String,
    pub ca_pem: String,
    pub not_after: u64,
    /// The age identity (`AGE-SECRET-KEY-1…`).
    pub identity: String,
}

impl std::fmt::Debug for EnrolmentResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrolmentResponse")
            .field("not_after", &self.not_after)
            .field("identity", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// `POST /v1/leases/{role}` (acquire) and `PUT` (renew).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRequest {
    pub node: String,
    pub ttl_seconds: u64,
    /// Required to renew or release: the id the grant returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fencing: Option<u64>,
}

/// A granted restart lease. `fencing` grows with every grant, so a holder
/// whose lease expired cannot act on a stale one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub role: String,
    pub holder: String,
    pub fencing: u64,
    pub expires_in_seconds: u64,
}

/// `GET /v1/nudges?after=N` (long-poll): returns when the generation passes
/// `after`, or after the poll timeout with the current generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nudge {
    pub generation: u64,
}

/// Every error response of the agent's and the coordinator's APIs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
    pub status: String,
}

impl ApiError {
    pub fn new(error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            status: "failed".to_owned(),
        }
    }
}
