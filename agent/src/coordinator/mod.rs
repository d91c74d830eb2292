//! The coordinator (`kraftops-agent coordinator`): the service agents report
//! to — node status, restart leases, CSR signing with per-node join tokens,
//! nudges after a push, and the alerts Alertmanager sends.
//!
//! It holds no cluster truth of its own: git is the truth ([`ClusterView`] is
//! built from the desired-state repository), agents re-report after a
//! coordinator restart, and after a restart it grants no lease until one
//! `lease_ttl_max` has passed. `docs/coordinator-protocol.md` describes the
//! HTTP API; `crate::protocol` holds its types.
//!
//! **Invariant:** at most `rollout.max_unavailable` live leases per role
//! (and `max_unavailable_per_az` per role and AZ), none while the role is
//! halted (a halt outlives a coordinator restart; an unreadable record of
//! halts counts as every role halted), rollouts are paused or no
//! maintenance window is open; every grant's fencing id is larger than
//! every earlier one, across coordinator restarts too.

mod alerts;
mod auth;
mod clock;
pub mod cluster;
pub mod cluster_api;
mod halt_record;
mod http;
mod leases;
mod refusal;
pub mod resources;
mod rollout;
pub mod service;
mod state_file;
pub mod status_view;
pub mod tls;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

pub use alerts::{
    AlertmanagerAlert, AlertmanagerWebhook, AlertsAccepted, MAX_ALERTS, ReceivedAlert,
};
pub use auth::SIGNATURE_HEADER;
pub use clock::{Clock, ManualClock, SystemClock};
pub use halt_record::{HALT_FILE, HaltRecordError};
pub use http::{DEFAULT_POLL_SECONDS, MAX_BODY_BYTES, MAX_POLL_SECONDS, router, serve};
pub use refusal::Refusal;
pub use rollout::{FRESH_REPORT_SECONDS, RolloutRules};

use crate::protocol::{
    CertificateRequestBody, CertificateResponse, EnrolmentResponse, HaltRequest, Lease,
    LeaseRequest, MetadataVersionView, NodeView, ResumeRequest, RolloutView, StatusReport,
};
use alerts::AlertLog;
use auth::{TokenDigest, digests_equal, token_digest};
use leases::LeaseTable;
pub use tls::{PeerNode, ServerCertificate, serve_tls, server_config};

/// What the coordinator knows from the desired-state repository.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterView {
    pub cluster: String,
    pub nodes: BTreeMap<String, NodeEntry>,
    /// Join tokens by node name; a token authenticates that one node.
    pub join_tokens: BTreeMap<String, String>,
    /// The longest restart lease granted; also the grace period after a
    /// coordinator start during which no lease is granted.
    pub lease_ttl_max: Duration,
    /// How long a signed node certificate is valid.
    pub cert_validity: Duration,
    /// `rollout:` of cluster.yaml: budgets, windows, pause.
    pub rollout: RolloutRules,
    /// The commit the view was built from (`None` in tests). A view of
    /// another commit clears halted rollouts.
    pub revision: Option<String>,
}

impl fmt::Debug for ClusterView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The join tokens are secrets: name whose they are, never the tokens.
        f.debug_struct("ClusterView")
            .field("cluster", &self.cluster)
            .field("nodes", &self.nodes)
            .field(
                "join_tokens_for",
                &self.join_tokens.keys().collect::<Vec<_>>(),
            )
            .field("lease_ttl_max", &self.lease_ttl_max)
            .field("cert_validity", &self.cert_validity)
            .field("rollout", &self.rollout)
            .field("revision", &self.revision)
            .finish()
    }
}

/// One node of the desired state, as the coordinator needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeEntry {
    pub role: String,
    /// Its availability zone (`az` in nodes.yaml), for the per-AZ budget.
    pub az: String,
    /// Subject alternative names its certificate may carry.
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
}

/// Signs node CSRs; the real one wraps the cluster CA.
pub trait CsrSigner: Send + Sync {
    /// Signs `csr_pem` for `node`, valid `validity` from `now` (Unix
    /// seconds). Returns the certificate PEM and its `not_after`, or a
    /// reason the node may read (the CSR's names are not the node's, its key
    /// is too weak, …).
    fn sign(
        &self,
        csr_pem: &str,
        node: &str,
        entry: &NodeEntry,
        validity: Duration,
        now: u64,
    ) -> Result<(String, u64), String>;

    /// The CA certificate, PEM.
    fn ca_pem(&self) -> String;
}

/// The view as the coordinator serves it: tokens kept as digests.
struct Roster {
    nodes: BTreeMap<String, NodeEntry>,
    tokens: Vec<(String, TokenDigest)>,
    lease_ttl_max: u64,
    cert_validity: Duration,
    rollout: RolloutRules,
    revision: Option<String>,
}

impl fmt::Debug for Roster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Even the tokens' digests stay out of logs: a guessable token could
        // be found from its digest.
        f.debug_struct("Roster")
            .field("nodes", &self.nodes)
            .field("tokens", &self.tokens.len())
            .field("lease_ttl_max", &self.lease_ttl_max)
            .field("cert_validity", &self.cert_validity)
            .field("rollout", &self.rollout)
            .field("revision", &self.revision)
            .finish()
    }
}

impl Roster {
    fn new(view: ClusterView) -> Self {
        let tokens = view
            .join_tokens
            .iter()
            .filter(|(node, token)| {
                let usable = view.nodes.contains_key(*node) && !token.is_empty();
                if !usable {
                    tracing::warn!(%node, "ignoring the join token of an unknown node, or an empty one");
                }
                usable
            })
            .map(|(node, token)| (node.clone(), token_digest(token)))
            .collect();
        Self {
            nodes: view.nodes,
            tokens,
            lease_ttl_max: view.lease_ttl_max.as_secs(),
            cert_validity: view.cert_validity,
            rollout: view.rollout,
            revision: view.revision,
        }
    }

    /// The node whose join token `token` is. Every token is compared, so
    /// the time taken does not say which one matched; a token two nodes
    /// share authenticates neither.
    fn node_of(&self, token: &str) -> Option<String> {
        let presented = token_digest(token);
        let mut matched = None;
        let mut matches = 0usize;
        for (node, digest) in &self.tokens {
            if digests_equal(&presented, digest) {
                matches += 1;
                matched = Some(node);
            }
        }
        if matches > 1 {
            tracing::warn!("a join token is shared by several nodes; refusing it");
            return None;
        }
        matched.cloned()
    }

    fn entry(&self, node: &str) -> Result<&NodeEntry, Refusal> {
        self.nodes
            .get(node)
            .ok_or_else(|| Refusal::UnknownNode(node.to_owned()))
    }
}

#[derive(Debug)]
struct ReceivedReport {
    report: StatusReport,
    received_at: u64,
}

/// What enrolment hands out, and where spent join tokens are recorded.
struct Enrolment {
    identity: String,
    record: Option<PathBuf>,
}

impl fmt::Debug for Enrolment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Enrolment")
            .field("identity", &"<redacted>")
            .field("record", &self.record)
            .finish()
    }
}

#[derive(Debug)]
struct State {
    cluster: String,
    roster: Roster,
    /// Join tokens already used for an enrolment: they authenticate nothing.
    spent: Vec<TokenDigest>,
    enrolment: Option<Enrolment>,
    reports: BTreeMap<String, ReceivedReport>,
    leases: LeaseTable,
    /// Where halts and the lease history are kept ([`HALT_FILE`]); `None`:
    /// in memory only.
    halt_record: Option<PathBuf>,
    alerts: AlertLog,
    /// What the cluster loop last found about `metadata.version`.
    metadata_version: Option<MetadataVersionView>,
}

/// The coordinator's state, shared by every request. Reports, live leases,
/// alerts and nudges are in memory only and rebuilt after a restart; the
/// expiry of the last lease, spent join tokens, halts and the lease history
/// are kept in the state directory when one is given.
pub struct Coordinator {
    signer: Arc<dyn CsrSigner>,
    clock: Arc<dyn Clock>,
    webhook_secret: Option<Vec<u8>>,
    started_at: u64,
    /// `lease_ttl_max` when the coordinator started: the longest lease the
    /// previous run may have granted, as far as this run can know.
    lease_ttl_max_at_start: u64,
    /// Where the latest expiry of any lease granted is recorded, so the
    /// next run knows how long leases of this one may still be in use.
    lease_record: Option<PathBuf>,
    /// The recorded expiry read at start: `Some` when a record was kept.
    recorded_until: Option<u64>,
    state: Mutex<State>,
    nudges: watch::Sender<u64>,
    /// Shared by the cluster thread and the cluster REST API; a lock of its
    /// own, never held across a Kafka call.
    scope: Mutex<ClusterScope>,
}

/// What the cluster thread ([`cluster::run`]) shares with the HTTP API:
/// the desired state at the head commit, the one long-lived Kafka admin
/// client (TLS verified, as the admin user) and the last reconcile reports.
#[derive(Clone, Default)]
pub struct ClusterScope {
    /// The head commit and its model.
    pub head: Option<(String, Arc<desired_state::Model>)>,
    /// `None` until the cluster thread could build it.
    pub admin: Option<Arc<dyn crate::kafka::ClusterAdmin>>,
    /// The last connectors reconcile; `None` before the first, or when the
    /// cluster has no Connect worker.
    pub connectors: Option<crate::connect::ConnectorsReport>,
    /// The last reconcile of topics, SCRAM users, ACLs and quotas; `None`
    /// before the first.
    pub resources: Option<crate::protocol::ResourcesReport>,
}

impl fmt::Debug for ClusterScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterScope")
            .field("head", &self.head.as_ref().map(|(c, _)| c))
            .field("admin", &self.admin.is_some())
            .field("connectors", &self.connectors)
            .field("resources", &self.resources)
            .finish()
    }
}

impl fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coordinator")
            .field("started_at", &self.started_at)
            .field("webhook_enabled", &self.webhook_secret.is_some())
            .field("generation", &*self.nudges.borrow())
            .finish_non_exhaustive()
    }
}

/// Fencing ids start at the start time times this, so they keep growing
/// across restarts as long as a run grants fewer leases than this per
/// second of its life, and stay below 2^53 (exact in JSON) until 2255.
const FENCING_PER_SECOND: u64 = 1_000_000;

impl Coordinator {
    /// `webhook_secret`: the git host's webhook secret; `None` (or empty)
    /// disables `POST /v1/hooks/git`.
    pub fn new(
        view: ClusterView,
        signer: Arc<dyn CsrSigner>,
        clock: Arc<dyn Clock>,
        webhook_secret: Option<String>,
    ) -> Arc<Coordinator> {
        Self::build(view, signer, clock, webhook_secret, None)
    }

    /// Like [`Coordinator::new`], keeping a lease record at `record` (in
    /// the coordinator's state directory): the latest expiry of any lease
    /// it grants. After a restart no lease is granted until that recorded
    /// time; with no record (the first start) leases are granted at once.
    /// An unreadable record is treated as absent only if it does not exist;
    /// otherwise the full grace of one TTL applies.
    pub fn with_lease_record(
        view: ClusterView,
        signer: Arc<dyn CsrSigner>,
        clock: Arc<dyn Clock>,
        webhook_secret: Option<String>,
        record: PathBuf,
    ) -> Arc<Coordinator> {
        Self::build(view, signer, clock, webhook_secret, Some(record))
    }

    fn build(
        view: ClusterView,
        signer: Arc<dyn CsrSigner>,
        clock: Arc<dyn Clock>,
        webhook_secret: Option<String>,
        lease_record: Option<PathBuf>,
    ) -> Arc<Coordinator> {
        let started_at = clock.now();
        let recorded_until = lease_record.as_deref().and_then(|path| {
            match std::fs::read_to_string(path) {
                Ok(text) => match text.trim().parse::<u64>() {
                    Ok(until) => Some(until),
                    Err(_) => {
                        tracing::warn!(path = %path.display(), "unreadable lease record; waiting one lease TTL before granting leases");
                        None
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(0),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read the lease record; waiting one lease TTL before granting leases");
                    None
                }
            }
        });
        let webhook_secret = webhook_secret
            .filter(|secret| !secret.is_empty())
            .map(String::into_bytes);
        Arc::new(Coordinator {
            signer,
            clock,
            webhook_secret,
            started_at,
            lease_ttl_max_at_start: view.lease_ttl_max.as_secs(),
            lease_record,
            recorded_until,
            state: Mutex::new(State {
                cluster: view.cluster.clone(),
                roster: Roster::new(view),
                spent: Vec::new(),
                enrolment: None,
                reports: BTreeMap::new(),
                leases: LeaseTable::new(started_at.saturating_mul(FENCING_PER_SECOND)),
                halt_record: None,
                alerts: AlertLog::default(),
                metadata_version: None,
            }),
            nudges: watch::Sender::new(0),
            scope: Mutex::new(ClusterScope::default()),
        })
    }

    /// Replaces the view (a new commit was applied). Reports of nodes no
    /// longer in it are dropped; leases run out on their own; a rollout
    /// halted under another revision is cleared (the new commit is the fix,
    /// or the operator's decision to go on).
    pub fn set_view(&self, view: ClusterView) {
        let now = self.clock.now();
        let mut state = self.lock();
        state.cluster = view.cluster.clone();
        let revision = view.revision.clone();
        state.roster = Roster::new(view);
        let State {
            roster,
            reports,
            leases,
            ..
        } = &mut *state;
        reports.retain(|node, _| roster.nodes.contains_key(node));
        let cleared = leases.new_revision(revision.as_deref(), now);
        if cleared > 0 {
            tracing::info!(revision = ?revision, cleared, "a new commit cleared halted rollouts");
        }
        Self::save_halts(&mut state);
        tracing::info!(cluster = %state.cluster, nodes = state.roster.nodes.len(), revision = ?revision, "cluster view replaced");
    }

    /// Keeps halts, the lease history and the last fencing id in `path` (in
    /// the coordinator's state directory), and continues from what it
    /// holds. Call it before serving. A missing file is the first start. A
    /// file that cannot be read or parsed is logged, and every role counts
    /// as halted until it is resumed or a new commit arrives: the record
    /// may have held a halt, and resuming a rollout that failed on a node
    /// is worse than waiting for an operator. Halts made under another
    /// commit than the view's are cleared, as a new commit would have.
    pub fn keep_halts(&self, path: PathBuf) {
        let now = self.clock.now();
        let mut state = self.lock();
        let first_fencing = self.started_at.saturating_mul(FENCING_PER_SECOND);
        let revision = state.roster.revision.clone();
        match halt_record::load(&path) {
            Ok(kept) => {
                let halts = kept.halts.len();
                let unread = kept.unread.is_some();
                state.leases = LeaseTable::restore(kept, first_fencing);
                if halts > 0 || unread {
                    tracing::warn!(path = %path.display(), halts, unread, "halted rollouts read back from the record");
                }
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = %crate::error_chain(&e), "cannot read the record of halted rollouts; every role's rollout counts as halted until it is resumed or a new commit arrives");
                let mut leases = LeaseTable::new(first_fencing);
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                leases.halt_all_unread(
                    format!("the coordinator could not read its record of halted rollouts ({name}) when it started"),
                    revision.clone(),
                    now,
                );
                state.leases = leases;
            }
        }
        let cleared = state.leases.new_revision(revision.as_deref(), now);
        if cleared > 0 {
            tracing::info!(revision = ?revision, cleared, "halts made under another commit were cleared");
        }
        state.halt_record = Some(path);
        // An unread record's halt is written at once, so it survives the
        // next restart too.
        Self::save_halts(&mut state);
    }

    /// Writes the halts and history if they changed. A failure is logged
    /// and retried at the next change: the halts still hold in memory.
    fn save_halts(state: &mut State) {
        if let Err(e) = Self::write_halts(state.halt_record.as_deref(), &mut state.leases) {
            tracing::error!(error = %crate::error_chain(&e), "cannot record halted rollouts; a coordinator restart would lose what changed since the last write");
        }
    }

    /// Writes `leases`' halts and history to `record` if they changed.
    fn write_halts(
        record: Option<&std::path::Path>,
        leases: &mut LeaseTable,
    ) -> Result<(), HaltRecordError> {
        let Some(path) = record else {
            return Ok(());
        };
        if !leases.unsaved() {
            return Ok(());
        }
        halt_record::save(path, &leases.kept())?;
        leases.mark_saved();
        Ok(())
    }

    /// Wakes every agent's nudge long-poll: the generation grows by one.
    pub fn nudge(&self) {
        self.nudges.send_modify(|generation| *generation += 1);
        tracing::info!(generation = *self.nudges.borrow(), "nudged every agent");
    }

    /// The current nudge generation.
    pub fn generation(&self) -> u64 {
        *self.nudges.borrow()
    }

    /// The cluster's name, as the view has it.
    pub fn cluster(&self) -> String {
        self.lock().cluster.clone()
    }

    /// When this run started, Unix seconds.
    pub fn started_at(&self) -> u64 {
        self.started_at
    }

    /// Until when (Unix seconds) no lease is granted after the start.
    pub fn lease_grace_until(&self) -> u64 {
        if let Some(until) = self.recorded_until {
            return until;
        }
        let ttl = self
            .lease_ttl_max_at_start
            .max(self.lock().roster.lease_ttl_max);
        self.started_at.saturating_add(ttl)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves maps that are still
        // consistent (every update is a single insert or remove).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Offers enrolment (`POST /v1/enrol` on the mutual-TLS port): a node
    /// presenting its unspent join token gets its first certificate and
    /// `identity` (the age identity that decrypts its secrets), and the token
    /// is spent. Spent tokens are appended to `record` (one SHA-256 per
    /// line) and read back from it here, so a restart does not revive them.
    pub fn enable_enrolment(
        &self,
        identity: String,
        record: Option<PathBuf>,
    ) -> std::io::Result<()> {
        let mut spent = Vec::new();
        if let Some(path) = &record {
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                        let mut digest = [0u8; 32];
                        hex::decode_to_slice(line, &mut digest).map_err(|e| {
                            std::io::Error::new(
                                std::io::ErrorKind::InvalidData,
                                format!("{}: bad line {line:?}: {e}", path.display()),
                            )
                        })?;
                        spent.push(digest);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let mut state = self.lock();
        state.spent = spent;
        state.enrolment = Some(Enrolment { identity, record });
        Ok(())
    }

    /// Who is calling: the node its verified client certificate names (on
    /// the mutual-TLS port), else the node whose unspent join token it
    /// presents.
    pub(crate) fn authenticate(
        &self,
        peer: Option<&PeerNode>,
        token: Option<&str>,
    ) -> Result<String, Refusal> {
        let state = self.lock();
        if let Some(PeerNode(Some(node))) = peer {
            state.roster.entry(node)?;
            return Ok(node.clone());
        }
        Self::token_holder(&state, token)
    }

    fn token_holder(state: &State, token: Option<&str>) -> Result<String, Refusal> {
        let token = token.ok_or(Refusal::Unauthenticated)?;
        let node = state
            .roster
            .node_of(token)
            .ok_or(Refusal::Unauthenticated)?;
        let presented = token_digest(token);
        if state.spent.iter().any(|d| digests_equal(d, &presented)) {
            return Err(Refusal::TokenSpent { node });
        }
        Ok(node)
    }

    /// Enrols the node whose join token `token` is: signs its CSR, spends
    /// the token, and returns the certificate with the identity. Only on the
    /// mutual-TLS port (`peer` is set there), so the token and the identity
    /// never cross the network in the clear.
    pub(crate) async fn enrol(
        &self,
        peer: Option<&PeerNode>,
        token: Option<&str>,
        request: CertificateRequestBody,
    ) -> Result<EnrolmentResponse, Refusal> {
        if peer.is_none() {
            return Err(Refusal::EnrolOverTls);
        }
        let node = {
            let state = self.lock();
            if state.enrolment.is_none() {
                return Err(Refusal::EnrolmentDisabled);
            }
            Self::token_holder(&state, token)?
        };
        let token = token.ok_or(Refusal::Unauthenticated)?;
        let signed = self.sign_certificate(&node, request).await?;
        let mut state = self.lock();
        // Another enrolment with the same token may have raced this one.
        let presented = token_digest(token);
        if state.spent.iter().any(|d| digests_equal(d, &presented)) {
            return Err(Refusal::TokenSpent { node });
        }
        let Some(enrolment) = &state.enrolment else {
            return Err(Refusal::EnrolmentDisabled);
        };
        if let Some(path) = &enrolment.record {
            append_line(path, &hex::encode(presented)).map_err(|e| {
                tracing::error!(path = %path.display(), error = %e, "cannot record a spent join token; refusing the enrolment");
                Refusal::Internal
            })?;
        }
        let identity = enrolment.identity.clone();
        state.spent.push(presented);
        tracing::info!(%node, not_after = signed.not_after, "node enrolled; its join token is spent");
        Ok(EnrolmentResponse {
            certificate_pem: signed.certificate_pem,
            ca_pem: signed.ca_pem,
            not_after: signed.not_after,
            identity,
        })
    }

    /// Checks that `claimed` is a known node and `authenticated` is it.
    fn authorize(state: &State, authenticated: &str, claimed: &str) -> Result<(), Refusal> {
        state.roster.entry(claimed)?;
        if authenticated != claimed {
            return Err(Refusal::WrongNode {
                authenticated: authenticated.to_owned(),
                claimed: claimed.to_owned(),
            });
        }
        Ok(())
    }

    fn view_of(state: &State, node: &str, entry: &NodeEntry, now: u64) -> NodeView {
        let received = state.reports.get(node);
        NodeView {
            node: node.to_owned(),
            role: entry.role.clone(),
            report: received.map(|r| r.report.clone()),
            age_seconds: received.map(|r| now.saturating_sub(r.received_at)),
        }
    }

    /// Every node of the view, by name, reported or not.
    pub fn nodes(&self) -> Vec<NodeView> {
        let now = self.clock.now();
        let state = self.lock();
        state
            .roster
            .nodes
            .iter()
            .map(|(node, entry)| Self::view_of(&state, node, entry, now))
            .collect()
    }

    pub fn node(&self, node: &str) -> Result<NodeView, Refusal> {
        let now = self.clock.now();
        let state = self.lock();
        let entry = state.roster.entry(node)?;
        Ok(Self::view_of(&state, node, entry, now))
    }

    /// Stores `report` of `node` (the path's), sent by `authenticated`.
    pub(crate) fn record_report(
        &self,
        authenticated: &str,
        node: &str,
        report: StatusReport,
    ) -> Result<NodeView, Refusal> {
        let now = self.clock.now();
        let mut state = self.lock();
        Self::authorize(&state, authenticated, node)?;
        if report.node != node {
            return Err(Refusal::NodeMismatch {
                path: node.to_owned(),
                body: report.node,
            });
        }
        let entry = state.roster.entry(node)?.clone();
        if report.role != entry.role {
            tracing::warn!(%node, reported = %report.role, desired = %entry.role, "node reports another role than the view's");
        }
        tracing::debug!(%node, phase = ?report.phase, "status report");
        state.reports.insert(
            node.to_owned(),
            ReceivedReport {
                report,
                received_at: now,
            },
        );
        Ok(Self::view_of(&state, node, &entry, now))
    }

    /// Signs a node's CSR. The signer runs on the blocking pool.
    pub(crate) async fn sign_certificate(
        &self,
        authenticated: &str,
        request: CertificateRequestBody,
    ) -> Result<CertificateResponse, Refusal> {
        let now = self.clock.now();
        let (entry, validity) = {
            let state = self.lock();
            Self::authorize(&state, authenticated, &request.node)?;
            (
                state.roster.entry(&request.node)?.clone(),
                state.roster.cert_validity,
            )
        };
        let signer = Arc::clone(&self.signer);
        let node = request.node;
        let signed = tokio::task::spawn_blocking(move || {
            let signed = signer.sign(&request.csr_pem, &node, &entry, validity, now);
            (node, signed, signer.ca_pem())
        })
        .await;
        let (node, signed, ca_pem) = signed.map_err(|error| {
            tracing::error!(%error, "the CSR signer panicked");
            Refusal::Internal
        })?;
        match signed {
            Ok((certificate_pem, not_after)) => {
                tracing::info!(%node, not_after, "signed a node certificate");
                Ok(CertificateResponse {
                    certificate_pem,
                    ca_pem,
                    not_after,
                })
            }
            Err(reason) => {
                tracing::warn!(%node, %reason, "refused a certificate request");
                Err(Refusal::SignerRefused(reason))
            }
        }
    }

    pub fn ca_pem(&self) -> String {
        self.signer.ca_pem()
    }

    /// Checks a lease request: the caller is `request.node`, of `role`.
    /// Returns the TTL to grant.
    fn check_lease_request(
        state: &State,
        authenticated: &str,
        role: &str,
        request: &LeaseRequest,
    ) -> Result<u64, Refusal> {
        Self::authorize(state, authenticated, &request.node)?;
        let entry = state.roster.entry(&request.node)?;
        if entry.role != role {
            return Err(Refusal::WrongRole {
                node: request.node.clone(),
                actual: entry.role.clone(),
                requested: role.to_owned(),
            });
        }
        if request.ttl_seconds == 0 {
            return Err(Refusal::BadRequest(
                "ttl_seconds must be positive".to_owned(),
            ));
        }
        Ok(request.ttl_seconds.min(state.roster.lease_ttl_max).max(1))
    }

    fn fencing_of(request: &LeaseRequest) -> Result<u64, Refusal> {
        request.fencing.ok_or_else(|| {
            Refusal::BadRequest("fencing is required: send the id the grant returned".to_owned())
        })
    }

    pub(crate) fn acquire_lease(
        &self,
        authenticated: &str,
        role: &str,
        request: &LeaseRequest,
    ) -> Result<Lease, Refusal> {
        let now = self.clock.now();
        let grace_until = self.lease_grace_until();
        let mut state = self.lock();
        let ttl = Self::check_lease_request(&state, authenticated, role, request)?;
        if now < grace_until {
            return Err(Refusal::RestartGrace {
                until: grace_until,
                wait_seconds: grace_until - now,
            });
        }
        state.leases.note_expiries(now);
        Self::save_halts(&mut state);
        let revision = request.revision.as_deref();
        match rollout::admit(&state, role, &request.node, revision, now)? {
            rollout::Admission::Holding(lease) => return Ok(lease),
            rollout::Admission::Grant => {}
        }
        self.record_lease_until(now.saturating_add(ttl))?;
        // Recorded before it is handed out: a grant whose halt could not
        // be kept would let a restart resume a failed rollout.
        let mut leases = state.leases.clone();
        let lease = leases.grant(role, &request.node, ttl, request.revision.clone(), now);
        Self::write_halts(state.halt_record.as_deref(), &mut leases).map_err(|e| {
            tracing::error!(error = %crate::error_chain(&e), "cannot record the lease history; refusing the lease");
            Refusal::Internal
        })?;
        state.leases = leases;
        tracing::info!(%role, holder = %lease.holder, fencing = lease.fencing, expires_in_seconds = lease.expires_in_seconds, others = ?lease.others, revision = ?lease.revision, "lease granted");
        Ok(lease)
    }

    /// Records `until` (if later than the record) before a lease that
    /// long is handed out; a record that cannot be written refuses the
    /// lease (a restart could otherwise grant a second one).
    fn record_lease_until(&self, until: u64) -> Result<(), Refusal> {
        let Some(path) = &self.lease_record else {
            return Ok(());
        };
        let current = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if until <= current {
            return Ok(());
        }
        let temp = path.with_extension("tmp");
        std::fs::write(&temp, format!("{until}\n"))
            .and_then(|()| std::fs::File::open(&temp).and_then(|f| f.sync_all()))
            .and_then(|()| std::fs::rename(&temp, path))
            .map_err(|e| {
                tracing::error!(path = %path.display(), error = %e, "cannot record the lease; refusing it");
                Refusal::Internal
            })
    }

    pub(crate) fn renew_lease(
        &self,
        authenticated: &str,
        role: &str,
        request: &LeaseRequest,
    ) -> Result<Lease, Refusal> {
        let now = self.clock.now();
        let mut state = self.lock();
        let ttl = Self::check_lease_request(&state, authenticated, role, request)?;
        let fencing = Self::fencing_of(request)?;
        self.record_lease_until(now.saturating_add(ttl))?;
        let renewed = state.leases.renew(role, &request.node, fencing, ttl, now);
        Self::save_halts(&mut state);
        let lease = renewed?;
        tracing::debug!(%role, holder = %lease.holder, fencing, "lease renewed");
        Ok(lease)
    }

    pub(crate) fn release_lease(
        &self,
        authenticated: &str,
        role: &str,
        request: &LeaseRequest,
    ) -> Result<(), Refusal> {
        let now = self.clock.now();
        let mut state = self.lock();
        Self::authorize(&state, authenticated, &request.node)?;
        let fencing = Self::fencing_of(request)?;
        let released = state.leases.release(role, &request.node, fencing, now);
        Self::save_halts(&mut state);
        released?;
        tracing::info!(%role, holder = %request.node, fencing, "lease released");
        Ok(())
    }

    /// The holder of grant `request.fencing` of `role` reports a failed
    /// restart: the grant stops expiring and the role grants nothing until
    /// a new commit or a resume clears it.
    pub(crate) fn halt_rollout(
        &self,
        authenticated: &str,
        role: &str,
        request: HaltRequest,
    ) -> Result<Lease, Refusal> {
        let now = self.clock.now();
        let mut state = self.lock();
        Self::authorize(&state, authenticated, &request.node)?;
        let entry = state.roster.entry(&request.node)?;
        if entry.role != role {
            return Err(Refusal::WrongRole {
                node: request.node.clone(),
                actual: entry.role.clone(),
                requested: role.to_owned(),
            });
        }
        let view_revision = state.roster.revision.clone();
        let halted = state.leases.halt(
            role,
            &request.node,
            request.fencing,
            request.revision,
            &request.reason,
            view_revision.as_deref(),
            now,
        );
        // A halt that cannot be recorded still holds in this run.
        Self::save_halts(&mut state);
        let lease = halted?;
        tracing::warn!(%role, node = %request.node, fencing = request.fencing, reason = %request.reason, "rollout halted");
        Ok(lease)
    }

    /// Clears the halt of `request.role` (every role when none), asked by
    /// any node. Nothing halted is a refusal, so a mistyped role is noticed.
    pub(crate) fn resume_rollout(
        &self,
        authenticated: &str,
        request: &ResumeRequest,
    ) -> Result<RolloutView, Refusal> {
        let now = self.clock.now();
        let mut state = self.lock();
        Self::authorize(&state, authenticated, &request.node)?;
        state.leases.note_expiries(now);
        // A role no node has is not halted by an unread record either, so a
        // mistyped role is still a 404.
        if let Some(role) = &request.role
            && !state.roster.nodes.values().any(|e| &e.role == role)
            && state.leases.halted(role).is_empty()
        {
            return Err(Refusal::NotHalted {
                role: request.role.clone(),
            });
        }
        let cleared = state
            .leases
            .resume(request.role.as_deref(), &request.node, now);
        Self::save_halts(&mut state);
        if cleared == 0 {
            return Err(Refusal::NotHalted {
                role: request.role.clone(),
            });
        }
        tracing::info!(role = ?request.role, by = %request.node, cleared, "rollout resumed");
        Ok(rollout::view(&state, now))
    }

    /// Where the rollout stands: policy, window, grants, halts, waiting
    /// nodes and the lease history.
    pub fn rollout(&self) -> RolloutView {
        let now = self.clock.now();
        let mut state = self.lock();
        state.leases.note_expiries(now);
        Self::save_halts(&mut state);
        rollout::view(&state, now)
    }

    /// A copy of what the cluster thread shares (cheap: `Arc`s).
    pub fn cluster_scope(&self) -> ClusterScope {
        self.scope
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Changes what the cluster thread shares.
    pub fn update_cluster_scope(&self, change: impl FnOnce(&mut ClusterScope)) {
        change(&mut self.scope.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Publishes what the cluster loop found about `metadata.version`.
    pub fn set_metadata_version(&self, view: Option<MetadataVersionView>) {
        self.lock().metadata_version = view;
    }

    /// The live leases (halted ones included), by role.
    pub fn leases(&self) -> Vec<Lease> {
        let now = self.clock.now();
        let mut state = self.lock();
        state.leases.note_expiries(now);
        Self::save_halts(&mut state);
        state.leases.live(now)
    }

    pub(crate) fn webhook_secret(&self) -> Option<&[u8]> {
        self.webhook_secret.as_deref()
    }

    pub(crate) fn subscribe_nudges(&self) -> watch::Receiver<u64> {
        self.nudges.subscribe()
    }

    pub(crate) fn record_alerts(&self, payload: AlertmanagerWebhook) -> usize {
        let now = self.clock.now();
        let count = self.lock().alerts.record(payload, now);
        tracing::info!(count, "alerts received");
        count
    }

    /// The kept alerts, newest first.
    pub fn alerts(&self) -> Vec<ReceivedAlert> {
        self.lock().alerts.newest_first()
    }
}

/// Appends `line` to `path` and syncs it, so an enrolment answered is an
/// enrolment recorded.
fn append_line(path: &std::path::Path, line: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    writeln!(file, "{line}")?;
    file.sync_all()
}
