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
    /// What the node's rollout is waiting for (a gate, the lease, a
    /// maintenance window), and since when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<Waiting>,
    /// The node's last few restarts, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restarts: Vec<RestartRecord>,
}

/// What a node's rollout is waiting for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    /// For operators, e.g. the coordinator's refusal or a Kafka gate's reason.
    pub reason: String,
    /// Since when (Unix seconds).
    pub since: u64,
}

/// One restart of a unit under a lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartRecord {
    pub unit: String,
    /// The commit the restart was for.
    pub revision: Option<String>,
    pub started_at: u64,
    /// When the unit passed its health gate, if it did.
    pub healthy_at: Option<u64>,
    /// `healthy`, `rolled_back` or `failed`.
    pub outcome: String,
    pub detail: Option<String>,
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

/// `POST /v1/leases/{role}` (acquire), `PUT` (renew) and `DELETE` (release).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRequest {
    pub node: String,
    pub ttl_seconds: u64,
    /// Required to renew or release: the id the grant returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fencing: Option<u64>,
    /// The commit the node wants to restart for. With it, the coordinator
    /// also waits for every node of an earlier role to have applied it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// A granted restart lease: one of its role's `max_unavailable` slots.
/// `fencing` grows with every grant, so a holder whose lease expired cannot
/// act on a stale one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub role: String,
    pub holder: String,
    pub fencing: u64,
    pub expires_in_seconds: u64,
    /// Other nodes of the role holding a live lease right now: the holder
    /// counts them as down in its Kafka gates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub others: Vec<String>,
    /// The commit the lease was requested for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Set when the holder halted the role's rollout with this grant: it no
    /// longer expires, and the role grants nothing until it is cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted: Option<Halt>,
}

/// Why and when a rollout was halted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Halt {
    pub reason: String,
    /// The commit whose restart failed.
    pub revision: Option<String>,
    pub at: u64,
}

/// `POST /v1/leases/{role}/halt`: the holder of grant `fencing` reports a
/// failed restart; the role's rollout stops until a new commit or a resume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaltRequest {
    pub node: String,
    pub fencing: u64,
    #[serde(default)]
    pub revision: Option<String>,
    pub reason: String,
}

/// `POST /v1/rollout/resume`: clears the halt of `role`, or of every role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeRequest {
    /// The node asking (authenticated like every node call).
    pub node: String,
    #[serde(default)]
    pub role: Option<String>,
}

/// `GET /v1/rollout`: where the cluster's rollout stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutView {
    /// The commit the coordinator's view of the repository was built from.
    pub revision: Option<String>,
    /// `rollout.paused`: no lease is granted while true.
    pub paused: bool,
    pub window: WindowView,
    /// Every role of the cluster, in rollout order (controller, broker,
    /// connect, then the rest).
    pub roles: Vec<RoleRollout>,
    /// Every node, by name.
    pub nodes: Vec<NodeRollout>,
    /// The newest lease events (at most 200), newest first. Kept in memory:
    /// empty after a coordinator restart.
    pub history: Vec<LeaseEvent>,
    /// `kafka.metadata_version`: where raising Kafka's `metadata.version`
    /// stands; `null` when git does not ask for a level.
    #[serde(default)]
    pub metadata_version: Option<MetadataVersionView>,
}

/// Raising `metadata.version` to the level git asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataVersionView {
    /// The release git asks for, e.g. `4.2`.
    pub desired: String,
    /// Its `metadata.version` level.
    pub desired_level: Option<u16>,
    /// The level Kafka has finalized, when it was asked (it is asked only
    /// once every broker and controller runs the commit).
    pub finalized_level: Option<u16>,
    /// `waiting` (for nodes still on an older commit), `at_level`, `above`
    /// (Kafka is above the desired level; never lowered), `error`.
    pub state: String,
    pub detail: Option<String>,
    pub checked_at: u64,
}

/// The maintenance windows, now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowView {
    /// How many windows `rollout.maintenance_windows` lists (0: restarts
    /// may start at any time).
    pub windows: usize,
    /// Restarts may start now.
    pub open: bool,
    /// When open: when the open stretch ends; `null` when it never does.
    pub closes_at: Option<u64>,
    /// When closed: when the next window opens.
    pub next_open: Option<u64>,
}

/// One role's rollout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleRollout {
    pub role: String,
    pub max_unavailable: u16,
    pub max_unavailable_per_az: Option<u16>,
    /// The live grants (halted ones included), oldest first.
    pub holders: Vec<LeaseHolder>,
    /// Halted grants: while any is listed, the role grants no lease.
    pub halted: Vec<HaltedGrant>,
    /// Nodes whose latest report says they wait (for the lease, a gate, a
    /// window), by name.
    pub waiting: Vec<WaitingNode>,
}

/// A live grant, as the rollout view shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseHolder {
    pub node: String,
    pub az: String,
    pub fencing: u64,
    pub revision: Option<String>,
    pub granted_at: u64,
    /// Seconds left; a halted grant does not expire.
    pub expires_in_seconds: u64,
}

/// A grant whose holder halted the rollout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaltedGrant {
    pub node: String,
    pub fencing: u64,
    pub revision: Option<String>,
    pub reason: String,
    pub at: u64,
}

/// A node waiting, from its latest report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitingNode {
    pub node: String,
    pub phase: Phase,
    pub reason: Option<String>,
    pub since: Option<u64>,
    /// How old the report is (by the coordinator's clock).
    pub age_seconds: u64,
}

/// One node's part in the rollout, from its latest report (`null`s until
/// it reports).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRollout {
    pub node: String,
    pub role: String,
    pub az: String,
    pub phase: Option<Phase>,
    pub revision_applied: Option<String>,
    pub waiting: Option<Waiting>,
    pub age_seconds: Option<u64>,
}

/// What happened to a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseEventKind {
    Granted,
    Released,
    Expired,
    Halted,
    Resumed,
    ClearedByNewCommit,
}

/// One entry of the rollout history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseEvent {
    pub at: u64,
    pub role: String,
    /// The grant's holder.
    pub node: String,
    pub event: LeaseEventKind,
    pub fencing: u64,
    pub revision: Option<String>,
    pub reason: Option<String>,
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

/// `GET /v1/resources`: the coordinator's last reconcile of cluster-scope
/// resources (topics, SCRAM users, ACLs, quotas) against Kafka; `null`
/// before the first pass. Never holds a secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResourcesReport {
    /// The commit reconciled from (the head the coordinator loaded).
    pub commit: String,
    /// When the pass ran (Unix seconds).
    pub at: u64,
    /// Set when nothing was reconciled this pass (Kafka unreachable, its
    /// answers unreadable): what went wrong and where.
    pub error: Option<String>,
    /// Caveats of a pass that did run, e.g. a corrupt password-digest
    /// record (every password is then set again) or a password that could
    /// not be decrypted.
    pub notes: Vec<String>,
    /// The actions carried out, in the order they ran.
    pub actions: Vec<ResourceActionReport>,
    /// What git asks for that kraftops will not do.
    pub refusals: Vec<ResourceRefusal>,
    /// Differences found between Kafka and git (put back by the actions
    /// where kraftops manages them).
    pub drift: Vec<ResourceDrift>,
}

impl ResourcesReport {
    /// Whether the pass ran, every action succeeded and nothing was refused.
    pub fn is_clean(&self) -> bool {
        self.error.is_none() && self.refusals.is_empty() && self.actions.iter().all(|a| a.ok)
    }
}

/// One action of a reconcile pass and how it went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceActionReport {
    /// E.g. `create topic orders (6 partitions, RF 3)`.
    pub description: String,
    /// `file:line:col` of the declaration that asks for it, when there is one.
    pub location: Option<String>,
    pub ok: bool,
    /// Why it failed, or why it was skipped (retried next pass).
    pub error: Option<String>,
}

/// Something git asks for that kraftops refuses to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceRefusal {
    /// E.g. `topic orders`.
    pub resource: String,
    /// `file:line:col` of the value to change.
    pub location: Option<String>,
    pub message: String,
}

/// A difference between Kafka and git.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceDrift {
    pub resource: String,
    pub message: String,
}
