//! One reconcile: fetch, verify, validate, render, obtain certificates,
//! apply, restart under a lease. Synchronous; the daemon runs it on a
//! blocking thread. Level-triggered: every run converges the node to the
//! newest acceptable commit, whatever woke it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use desired_state::{Identity, Model, Role};
use roles::{OnChange, Plan, PlannedFile, Secrets};
use serde::{Deserialize, Serialize};

use crate::apply::{Applier, NoServiceManager, ServiceManager, Systemctl};
use crate::certs;
use crate::config::{AgentConfig, ServiceManagerKind};
use crate::daemon::client::{CoordinatorClient, LeaseAnswer};
use crate::daemon::state::Trigger;
use crate::error_chain as chain;
use crate::protocol::{
    CertificateStatus, Lease, Phase, ReportedError, RestartRecord, UnitStatus, Waiting,
};
use crate::rollout::{Health, KafkaNode};
use crate::sync::{Repo, SyncError, TrustedSigners};

/// How long one reconcile waits for a lease or a gate before it gives the
/// loop back (to see new commits); the restart stays pending and the next
/// reconcile, [`BLOCKED_RETRY`] later, tries again.
const BLOCKED_BUDGET: Duration = Duration::from_secs(90);
/// When a reconcile that was blocked runs again.
pub const BLOCKED_RETRY: Duration = Duration::from_secs(10);
/// How many restarts the status keeps.
const RESTART_HISTORY: usize = 10;

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Why the reconciler could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("identity {path}")]
    Identity {
        path: PathBuf,
        #[source]
        source: desired_state::SecretError,
    },
    #[error("trusted_signers")]
    Signers(#[source] SyncError),
    #[error("the state directory")]
    Apply(#[source] crate::apply::ApplyError),
    #[error("enrolling with the coordinator")]
    Enrol(#[source] crate::daemon::client::ClientError),
}

/// Where an agent on mutual TLS keeps its coordinator client certificate.
pub fn client_credential_path(config: &AgentConfig) -> PathBuf {
    config.state_path().join("coordinator-client.pem")
}

/// The coordinator client `config` asks for: mutual TLS with `ca_file`
/// (the join token, if still there, is used once to enrol), else the join
/// token as a bearer token; none without a coordinator.
pub fn coordinator_client(config: &AgentConfig) -> Result<Option<CoordinatorClient>, SetupError> {
    let read = |file: &PathBuf| {
        let path = config.rooted(file);
        std::fs::read_to_string(&path).map_err(|source| SetupError::Read { path, source })
    };
    Ok(
        match (
            &config.coordinator,
            &config.ca_file,
            &config.join_token_file,
        ) {
            (Some(url), Some(ca_file), token_file) => {
                let ca_pem = read(ca_file)?;
                // A spent token's file is gone: the node has its certificate.
                let token = token_file
                    .as_ref()
                    .and_then(|f| std::fs::read_to_string(config.rooted(f)).ok())
                    .map(|t| t.trim().to_owned())
                    .filter(|t| !t.is_empty());
                Some(CoordinatorClient::tls(
                    url,
                    &config.node,
                    &ca_pem,
                    client_credential_path(config),
                    token,
                ))
            }
            (Some(url), None, Some(token_file)) => {
                let token = read(token_file)?;
                Some(CoordinatorClient::new(url, &config.node, token.trim()))
            }
            _ => None,
        },
    )
}

/// On mutual TLS, when this node has no identity yet: enrols with the join
/// token, writes the identity the coordinator hands over (mode 0600) and
/// then the client certificate, and deletes the spent join token. Returns
/// whether it enrolled. Call it until it succeeds before
/// [`Reconciler::new`]; nothing is written when it fails.
pub fn enrol_if_needed(config: &AgentConfig) -> Result<bool, SetupError> {
    let identity_path = config.rooted(&config.identity_file);
    if config.ca_file.is_none() || identity_path.exists() {
        return Ok(false);
    }
    let Some(client) = coordinator_client(config)? else {
        return Ok(false);
    };
    client
        .enrol_with(|identity| {
            crate::apply::atomic::write_own(&identity_path, identity.as_bytes(), 0o600)
                .map_err(|e| format!("writing {}: {e}", identity_path.display()))
        })
        .map_err(SetupError::Enrol)?;
    forget_spent_token(config);
    Ok(true)
}

/// Deletes the join token file once this node holds a client certificate
/// (the token was spent by the enrolment).
pub fn forget_spent_token(config: &AgentConfig) {
    if config.ca_file.is_none() || !client_credential_path(config).exists() {
        return;
    }
    if let Some(token_file) = &config.join_token_file {
        let path = config.rooted(token_file);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot delete the spent join token");
        }
    }
}

/// What one reconcile found and did.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub phase: Phase,
    pub role: Option<String>,
    pub revision_seen: Option<String>,
    pub revision_applied: Option<String>,
    pub signer: Option<String>,
    pub error: Option<ReportedError>,
    pub drift: Vec<String>,
    pub units: Vec<UnitStatus>,
    pub certificates: Vec<CertificateStatus>,
    pub files_written: u64,
    pub restarts: u64,
    /// What a restart is waiting for, when it is.
    pub waiting: Option<Waiting>,
    /// The node's last restarts, newest last.
    pub restart_log: Vec<RestartRecord>,
}

/// The commit the node runs, kept across agent restarts.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Applied {
    commit: Option<String>,
    signer: Option<String>,
    /// The last commit this node converged on: what a failed restart rolls
    /// back to.
    #[serde(default)]
    last_good: Option<String>,
    /// A commit this node failed with (and rolled back from): not applied
    /// again; a newer commit is.
    #[serde(default)]
    failed: Option<FailedCommit>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct FailedCommit {
    commit: String,
    reason: String,
    at: u64,
}

/// The seam for restart safety: asked before and after each restart.
/// Today it checks systemd; the Kafka-aware gates (ISR, quorum) plug in
/// here.
pub trait RestartGate: Send {
    /// Whether `unit` may be restarted now; `Err` says why not.
    fn before_restart(&self, unit: &str) -> Result<(), String>;
    /// Whether `unit` is healthy again after its restart.
    fn healthy(&self, unit: &str) -> bool;
}

/// The gate every node has: a restarted unit must be running again.
#[derive(Debug)]
pub struct SystemdGate(pub Arc<dyn ServiceManager>);

impl RestartGate for SystemdGate {
    fn before_restart(&self, _unit: &str) -> Result<(), String> {
        Ok(())
    }
    fn healthy(&self, unit: &str) -> bool {
        // `activating` is not healthy: a unit that keeps failing to start
        // sits there between its automatic restarts.
        self.0
            .status(unit)
            .is_ok_and(|s| s.active_state == "active")
    }
}

pub struct Reconciler {
    config: AgentConfig,
    repo: Option<Repo>,
    trusted: TrustedSigners,
    identity: Identity,
    services: Arc<dyn ServiceManager>,
    applier: Applier,
    client: Option<CoordinatorClient>,
    gate: Box<dyn RestartGate>,
    applied: Applied,
    /// The plan of the applied commit, and its model.
    current: Option<(Plan, Model)>,
    /// The applied commit's decrypted secrets (the Kafka admin password).
    secrets: Secrets,
    /// Told what a restart waits for as it changes (the daemon's status).
    waiting_sink: Option<Arc<dyn Fn(Option<Waiting>) + Send + Sync>>,
    restart_log: Vec<RestartRecord>,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler")
            .field("node", &self.config.node)
            .field("applied", &self.applied.commit)
            .finish_non_exhaustive()
    }
}

fn error(message: impl Into<String>, commit: Option<&str>, problems: Vec<String>) -> ReportedError {
    ReportedError {
        message: message.into(),
        commit: commit.map(str::to_owned),
        problems,
        at: now(),
    }
}

impl Reconciler {
    /// A reconciler managing services as `config.service_manager` says.
    pub fn new(config: AgentConfig) -> Result<Self, SetupError> {
        let services: Arc<dyn ServiceManager> = match config.service_manager {
            ServiceManagerKind::Systemctl => Arc::new(Systemctl::new()),
            ServiceManagerKind::None => Arc::new(NoServiceManager),
        };
        Self::with_services(config, services)
    }

    /// A reconciler managing services through `services` (tests script it).
    pub fn with_services(
        config: AgentConfig,
        services: Arc<dyn ServiceManager>,
    ) -> Result<Self, SetupError> {
        let client = coordinator_client(&config)?;
        let identity_path = config.rooted(&config.identity_file);
        let identity_text =
            std::fs::read_to_string(&identity_path).map_err(|source| SetupError::Read {
                path: identity_path.clone(),
                source,
            })?;
        let identity = Identity::parse(&identity_text).map_err(|source| SetupError::Identity {
            path: identity_path,
            source,
        })?;
        let trusted =
            TrustedSigners::parse(&config.trusted_signers).map_err(SetupError::Signers)?;
        let state_dir = config.state_path();
        let applier = Applier::new(config.root.clone(), state_dir.clone(), services.clone())
            .map_err(SetupError::Apply)?;
        let applied = std::fs::read(state_dir.join("applied.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Ok(Self {
            gate: Box::new(SystemdGate(services.clone())),
            config,
            repo: None,
            trusted,
            identity,
            services,
            applier,
            client,
            applied,
            current: None,
            secrets: Secrets::new(),
            waiting_sink: None,
            restart_log: Vec::new(),
        })
    }

    /// Where to report, as it changes, what a pending restart waits for.
    pub fn on_waiting(&mut self, sink: Arc<dyn Fn(Option<Waiting>) + Send + Sync>) {
        self.waiting_sink = Some(sink);
    }

    fn set_waiting(&self, reason: Option<String>) {
        if let Some(sink) = &self.waiting_sink {
            sink(reason.map(|reason| Waiting {
                reason,
                since: now(),
            }));
        }
    }

    /// This node's Kafka, for the gates and live configuration: only on a
    /// broker or controller whose services systemd runs.
    fn kafka_node(&self, model: &Model) -> Option<KafkaNode> {
        if self.config.service_manager != ServiceManagerKind::Systemctl {
            return None;
        }
        let keystore = std::fs::read_to_string(self.config.rooted(roles::layout::KEYSTORE)).ok();
        match KafkaNode::new(model, &self.config.node, &self.secrets, keystore) {
            Ok(node) => node,
            Err(why) => {
                tracing::warn!(reason = %why, "cannot talk to Kafka: restarts wait for systemd only");
                None
            }
        }
    }

    /// The coordinator client, if one is configured.
    pub fn client(&self) -> Option<&CoordinatorClient> {
        self.client.as_ref()
    }

    /// How long to wait between polls: the repository's setting once one is applied.
    pub fn poll_interval(&self) -> (Duration, Duration) {
        match &self.current {
            Some((_, model)) => (
                Duration::from_secs(model.cluster.agent.poll_interval.as_secs()),
                Duration::from_secs(model.cluster.agent.poll_jitter.as_secs()),
            ),
            None => (
                Duration::from_secs(self.config.poll_interval.as_secs()),
                Duration::from_secs(0),
            ),
        }
    }

    /// Every file the current plan manages, rooted: what to watch for drift.
    pub fn managed_paths(&self) -> Vec<PathBuf> {
        self.current
            .as_ref()
            .map(|(plan, _)| self.applier.managed_paths(plan))
            .unwrap_or_default()
    }

    fn save_applied(&self) {
        let path = self.config.state_path().join("applied.json");
        let tmp = path.with_extension("json.tmp");
        if let Ok(bytes) = serde_json::to_vec(&self.applied) {
            let written = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &path));
            if let Err(e) = written {
                tracing::warn!(path = %path.display(), error = %e, "cannot record the applied commit");
            }
        }
    }

    fn repo(&mut self) -> Result<&mut Repo, SyncError> {
        if self.repo.is_none() {
            let dir = self.config.state_path().join("repository");
            self.repo = Some(
                Repo::open_or_clone(
                    &self.config.repository.url,
                    &self.config.repository.branch,
                    &dir,
                )?
                .with_fetch_timeout(self.config.repository.fetch_timeout()),
            );
        }
        match self.repo.as_mut() {
            Some(r) => Ok(r),
            None => unreachable!("set just above"),
        }
    }

    /// Loads, validates and renders `commit`; `checks` also verifies its
    /// signature and ancestry (skipped for the already applied commit).
    fn evaluate(
        &mut self,
        commit: &str,
        checks: bool,
    ) -> Result<(Plan, Model, Option<String>, Secrets), ReportedError> {
        let trusted_empty = self.trusted.is_empty();
        let allow_nff = self.config.repository.allow_non_fast_forward;
        let applied = self.applied.commit.clone();
        self.repo()
            .map_err(|e| error(chain(&e), Some(commit), vec![]))?;
        let Some(repo) = self.repo.as_ref() else {
            return Err(error("no repository", Some(commit), vec![]));
        };
        let mut signer = None;
        if checks {
            if !trusted_empty {
                signer =
                    Some(repo.verify_signature(commit, &self.trusted).map_err(|e| {
                        error(format!("refused: {}", chain(&e)), Some(commit), vec![])
                    })?);
            }
            if let (Some(old), false) = (&applied, allow_nff) {
                let ok = repo
                    .is_descendant(commit, old)
                    .map_err(|e| error(chain(&e), Some(commit), vec![]))?;
                if !ok {
                    return Err(error(
                        format!(
                            "refused: {commit} is not a descendant of the applied commit {old} (a force-push?); set repository.allow_non_fast_forward to accept it"
                        ),
                        Some(commit),
                        vec![],
                    ));
                }
            }
        }
        let files = repo
            .files_at(commit)
            .map_err(|e| error(chain(&e), Some(commit), vec![]))?;
        let model = desired_state::load_files(&files).map_err(|d| {
            error(
                format!("refused: {} problem(s) in the repository", d.len()),
                Some(commit),
                d.iter().map(ToString::to_string).collect(),
            )
        })?;
        let secrets = model
            .decrypt_all(&self.identity)
            .map_err(|e| error(format!("refused: {}", chain(&e)), Some(commit), vec![]))?;
        let plan = roles::render(&model, &self.config.node, &secrets)
            .map_err(|e| error(format!("refused: {}", chain(&e)), Some(commit), vec![]))?;
        if checks && let Some((_, applied_model)) = &self.current {
            let problems = roles::transition::check_transition(
                roles::transition::Commit {
                    model: applied_model,
                    secrets: &self.secrets,
                },
                roles::transition::Commit {
                    model: &model,
                    secrets: &secrets,
                },
            );
            if !problems.is_empty() {
                let from = applied.as_deref().unwrap_or("the applied commit");
                return Err(error(
                    format!(
                        "refused: {} change(s) that cannot be made in place from {from}",
                        problems.len()
                    ),
                    Some(commit),
                    problems.iter().map(ToString::to_string).collect(),
                ));
            }
        }
        Ok((plan, model, signer, secrets))
    }

    /// Loads the applied commit's plan, model and secrets when they are not
    /// in memory yet (after the agent started): a new commit is checked
    /// against them. Failing is left to the caller's own fallback.
    fn load_current(&mut self) -> Result<(), ReportedError> {
        if self.current.is_some() {
            return Ok(());
        }
        let Some(commit) = self.applied.commit.clone() else {
            return Ok(());
        };
        let (plan, model, _, secrets) = self.evaluate(&commit, false)?;
        self.current = Some((plan, model));
        self.secrets = secrets;
        Ok(())
    }

    /// Adds each certificate's keystore to `plan` as a file: the existing one
    /// while it is valid, else a new key and a certificate from the
    /// coordinator.
    fn certificates(
        &self,
        plan: &mut Plan,
        model: &Model,
        now: u64,
    ) -> (Vec<CertificateStatus>, Vec<String>) {
        let mut statuses = Vec::new();
        let mut problems = Vec::new();
        for req in plan.certificates.clone() {
            let path = self.config.rooted(&req.keystore_path);
            let existing = std::fs::read_to_string(&path).ok().and_then(|pem| {
                let (_, chain) = certs::read_keystore(&pem).ok()?;
                let info = certs::inspect(&chain).ok()?;
                let same_ca = certs::issued_by(&chain, &model.ca_certificate).unwrap_or(false);
                (same_ca && !certs::needs_renewal(&info, &req, now))
                    .then_some((pem, info.not_after))
            });
            let obtained = match existing {
                Some(found) => Ok(found),
                None => self.obtain(&req),
            };
            match obtained {
                Ok((pem, not_after)) => {
                    statuses.push(CertificateStatus {
                        name: req.name.clone(),
                        not_after,
                    });
                    plan.files.push(PlannedFile {
                        path: req.keystore_path.clone(),
                        mode: 0o600,
                        owner: req.owner.clone(),
                        group: req.group.clone(),
                        contents: pem.into_bytes(),
                        sensitive: true,
                        on_change: req.on_change.first().cloned().unwrap_or(OnChange::Nothing),
                    });
                }
                Err(why) => {
                    problems.push(format!("certificate {}: {why}", req.name));
                    let keystore = |contents| PlannedFile {
                        path: req.keystore_path.clone(),
                        mode: 0o600,
                        owner: req.owner.clone(),
                        group: req.group.clone(),
                        contents,
                        sensitive: true,
                        on_change: OnChange::Nothing,
                    };
                    match std::fs::read(&path) {
                        // A renewal that failed keeps the keystore in place
                        // (a file left out of the plan would be removed).
                        Ok(current) => plan.files.push(keystore(current)),
                        // No keystore yet: the units that need it wait for
                        // it instead of crash-looping; they start (no lease
                        // needed: nothing runs) once it arrives.
                        Err(_) => hold_back(plan, &req.on_change),
                    }
                }
            }
        }
        plan.files.sort_by(|a, b| a.path.cmp(&b.path));
        (statuses, problems)
    }

    fn obtain(&self, req: &roles::CertificateRequest) -> Result<(String, u64), String> {
        let client = self
            .client
            .as_ref()
            .ok_or("no coordinator is configured to sign it")?;
        let key = certs::NodeKey::generate().map_err(|e| chain(&e))?;
        let csr = certs::csr_pem(req, &key).map_err(|e| chain(&e))?;
        let signed = client.sign(&csr).map_err(|e| chain(&e))?;
        tracing::info!(certificate = %req.name, not_after = signed.not_after, "certificate signed");
        Ok((
            certs::keystore_pem(&key, &signed.certificate_pem, &signed.ca_pem),
            signed.not_after,
        ))
    }

    /// Applies, through Kafka's Admin API, what the apply left as Kafka work
    /// (a broker's live configs, keystore reloads); what Kafka cannot take
    /// live becomes a pending restart. Without a Kafka view (tests, a node
    /// without systemd) every such change is a restart, as before.
    fn kafka_live(&mut self, plan: &Plan, kafka: Option<&KafkaNode>) -> Result<(), String> {
        let current = plan
            .file(roles::layout::SERVER_PROPERTIES)
            .map(|f| String::from_utf8_lossy(&f.contents).into_owned());
        for (unit, pending) in self.applier.pending_kafka() {
            let live = match (kafka, &current) {
                (Some(k), Some(current)) if unit == roles::layout::KAFKA_UNIT => {
                    k.apply_live(&pending, current)
                }
                _ => Ok(crate::rollout::LiveOutcome {
                    applied: Vec::new(),
                    restart_for: vec!["no Kafka admin connection on this node".to_owned()],
                }),
            };
            // Kafka unreachable: the work stays pending, the next reconcile retries.
            let live = live.map_err(|why| format!("applying the change to {unit} live: {why}"))?;
            if !live.applied.is_empty() {
                tracing::info!(unit = %unit, applied = ?live.applied, "applied live, no restart");
            }
            if !live.restart_for.is_empty() {
                tracing::info!(unit = %unit, why = ?live.restart_for, "a restart is needed");
            }
            self.applier
                .kafka_done(&unit, !live.restart_for.is_empty())
                .map_err(|e| chain(&e))?;
        }
        Ok(())
    }

    /// Takes the role's lease and waits for this node's Kafka gate, holding
    /// the lease (renewed) while the gate says wait. Gives up after
    /// [`BLOCKED_BUDGET`] with `Ok(None)` and the reason left in the status:
    /// the restart stays pending for the next reconcile.
    fn lease_and_gate(
        &self,
        role: &str,
        model: &Model,
        kafka: Option<&KafkaNode>,
        gated: bool,
        on_phase: &dyn Fn(Phase),
    ) -> Result<Option<Option<Lease>>, String> {
        let ttl = model.cluster.rollout.lease_ttl.as_secs();
        let revision = self.applied.commit.as_deref();
        let give_up = Instant::now() + BLOCKED_BUDGET;
        let mut wait = Duration::from_secs(1);
        let pause = |wait: &mut Duration| {
            std::thread::sleep(*wait);
            *wait = (*wait * 2).min(Duration::from_secs(10));
        };
        loop {
            if Instant::now() >= give_up {
                return Ok(None);
            }
            let lease = match &self.client {
                None => None,
                Some(client) => {
                    on_phase(Phase::WaitingForLease);
                    match client.acquire(role, ttl, revision).map_err(|e| chain(&e))? {
                        LeaseAnswer::Granted(lease) => Some(lease),
                        LeaseAnswer::Busy(why) => {
                            tracing::info!(role = %role, reason = %why, "waiting for the restart lease");
                            self.set_waiting(Some(format!("lease: {why}")));
                            pause(&mut wait);
                            continue;
                        }
                    }
                }
            };
            let Some(k) = kafka.filter(|_| gated) else {
                return Ok(Some(lease));
            };
            let others = lease.as_ref().map(|l| l.others.clone()).unwrap_or_default();
            match k.may_restart(&others) {
                Ok(()) => {}
                Err(why) => {
                    tracing::info!(reason = %why, "restart gate: waiting");
                    self.set_waiting(Some(format!("gate: {why}")));
                    // Hold the lease while the gate waits: the same gate
                    // blocks the role's other nodes anyway, and the holder
                    // shows who is waiting for what.
                    if let (Some(client), Some(l)) = (&self.client, &lease)
                        && !matches!(client.renew(l, ttl), Ok(LeaseAnswer::Granted(_)))
                    {
                        tracing::info!("the lease was lost while the gate waited");
                    }
                    pause(&mut wait);
                    if Instant::now() >= give_up {
                        self.release(lease.as_ref());
                        return Ok(None);
                    }
                    // Ask again with a fresh lease answer (others may change).
                    continue;
                }
            }
            // The active controller goes last: while another controller
            // waits for its restart, it steps aside.
            if k.role() == Role::Controller
                && k.is_quorum_leader()
                && let Some(other) = self.other_waiting(role)
            {
                tracing::info!(other = %other, "the active controller restarts last");
                self.set_waiting(Some(format!(
                    "the active controller restarts last: {other}"
                )));
                self.release(lease.as_ref());
                pause(&mut wait);
                continue;
            }
            return Ok(Some(lease));
        }
    }

    /// Another node of `role` whose fresh report says it waits for a
    /// restart, or has not applied this node's revision yet (it may need
    /// one), with what it is doing.
    fn other_waiting(&self, role: &str) -> Option<String> {
        let client = self.client.as_ref()?;
        let nodes = client.nodes().ok()?;
        let mine = self.applied.commit.as_deref();
        nodes
            .into_iter()
            .filter(|n| n.role == role && n.node != self.config.node)
            .filter(|n| n.age_seconds.is_some_and(|age| age < 120))
            .find_map(|n| {
                let r = n.report.as_ref()?;
                if matches!(r.phase, Phase::WaitingForLease | Phase::Restarting) {
                    Some(format!("{} is waiting for its restart", n.node))
                } else if r.revision_applied.as_deref() != mine {
                    Some(format!("{} has not applied this revision yet", n.node))
                } else {
                    None
                }
            })
    }

    fn release(&self, lease: Option<&Lease>) {
        if let (Some(client), Some(lease)) = (&self.client, lease)
            && let Err(e) = client.release(lease)
        {
            tracing::warn!(error = %chain(&e), "releasing the lease failed; it expires by its TTL");
        }
    }

    /// Waits until the restarted `units` are healthy: systemd says active,
    /// and Kafka says the node is back (broker: registered, unfenced, in the
    /// ISR of every partition it hosts; controller: a caught-up voter). The
    /// node gets `health_timeout` from its last sign of progress, at most
    /// three times that in all. Renews the lease as it goes.
    fn wait_healthy(
        &self,
        units: &[String],
        model: &Model,
        kafka: Option<&KafkaNode>,
        marker: i64,
        lease: Option<&Lease>,
    ) -> Result<(), String> {
        let timeout = Duration::from_secs(model.cluster.rollout.health_timeout.as_secs());
        let ttl = model.cluster.rollout.lease_ttl.as_secs();
        let started = Instant::now();
        let mut deadline = started + timeout;
        let hard_stop = started + timeout * 3;
        let mut best = u64::MAX;
        let mut renewed = Instant::now();
        loop {
            let mut reason = None;
            for unit in units {
                if !self.gate.healthy(unit) {
                    reason = Some(format!("{unit} is not active"));
                    break;
                }
            }
            if reason.is_none()
                && let Some(k) =
                    kafka.filter(|_| units.iter().any(|u| u == roles::layout::KAFKA_UNIT))
            {
                match k.health(marker) {
                    Health::Healthy => {}
                    Health::NotYet {
                        reason: why,
                        distance,
                    } => {
                        if distance < best {
                            best = distance;
                            deadline = (Instant::now() + timeout).min(hard_stop);
                        }
                        reason = Some(why);
                    }
                }
            }
            let Some(reason) = reason else {
                return Ok(());
            };
            self.set_waiting(Some(format!("health: {reason}")));
            if Instant::now() >= deadline {
                return Err(format!(
                    "not healthy {}s after its restart: {reason}",
                    started.elapsed().as_secs()
                ));
            }
            if renewed.elapsed() >= Duration::from_secs((ttl / 3).max(1))
                && let (Some(client), Some(l)) = (&self.client, lease)
            {
                if let Err(e) = client.renew(l, ttl) {
                    tracing::warn!(error = %chain(&e), "renewing the lease failed");
                }
                renewed = Instant::now();
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    fn log_restart(&mut self, record: RestartRecord) {
        self.restart_log.push(record);
        let excess = self.restart_log.len().saturating_sub(RESTART_HISTORY);
        self.restart_log.drain(..excess);
    }

    /// Restarts the pending units under the coordinator's lease for this
    /// role, through the Kafka gates; waits until the node is healthy
    /// again; on failure rolls this node back and halts the role's rollout.
    /// `Ok(None)`: blocked (lease or gate), nothing restarted.
    fn restart_under_lease(
        &mut self,
        plan: &Plan,
        model: &Model,
        kafka: Option<&KafkaNode>,
        on_phase: &dyn Fn(Phase),
    ) -> Result<Option<u64>, String> {
        // The coordinator grants the leases: it restarts without one (it
        // would otherwise wait on itself, and after its restart grants no
        // lease for one TTL). It runs on one node only.
        let (free, pending): (Vec<String>, Vec<String>) = self
            .applier
            .pending_restarts()
            .into_iter()
            .partition(|u| u == roles::layout::COORDINATOR_UNIT);
        if !free.is_empty() {
            self.applier.restart(&free).map_err(|e| chain(&e))?;
            tracing::info!(units = ?free, "restarted without a lease (the coordinator itself)");
        }
        if pending.is_empty() {
            return Ok(Some(free.len() as u64));
        }
        let role = plan.role.to_string();
        let gated = pending.iter().any(|u| u == roles::layout::KAFKA_UNIT);
        let Some(lease) = self.lease_and_gate(&role, model, kafka, gated, on_phase)? else {
            return Ok(None);
        };
        on_phase(Phase::Restarting);
        self.set_waiting(None);
        let revision = self.applied.commit.clone();
        let started_at = now();
        let marker = kafka.filter(|_| gated).map_or(0, KafkaNode::restart_marker);
        // Nothing restarted yet: a failure here frees the lease.
        if let Err(e) = self.applier.restart(&pending) {
            self.release(lease.as_ref());
            return Err(chain(&e));
        }
        let unit = pending.join(" ");
        match self.wait_healthy(&pending, model, kafka, marker, lease.as_ref()) {
            Ok(()) => {
                if let Some(k) = kafka.filter(|_| gated) {
                    k.restore_leadership();
                }
                self.log_restart(RestartRecord {
                    unit,
                    revision,
                    started_at,
                    healthy_at: Some(now()),
                    outcome: "healthy".to_owned(),
                    detail: None,
                });
            }
            Err(why) => {
                let why = format!("{unit} {why}");
                let detail = self.roll_back(model, kafka, lease.as_ref(), &why, on_phase);
                self.log_restart(RestartRecord {
                    unit,
                    revision: revision.clone(),
                    started_at,
                    healthy_at: None,
                    outcome: if detail.is_ok() {
                        "rolled_back"
                    } else {
                        "failed"
                    }
                    .to_owned(),
                    detail: Some(match &detail {
                        Ok(d) | Err(d) => d.clone(),
                    }),
                });
                let reason = match detail {
                    Ok(d) | Err(d) => d,
                };
                // The failure as reported from now on, rollback included.
                if let Some(failed) = &mut self.applied.failed {
                    failed.reason.clone_from(&reason);
                    self.save_applied();
                }
                // Halt the role's rollout: the lease stays held (and shown)
                // until a new commit or an explicit resume.
                if let (Some(client), Some(l)) = (&self.client, &lease)
                    && let Err(e) = client.halt(l, revision.as_deref(), &reason)
                {
                    tracing::warn!(error = %chain(&e), "could not halt the rollout at the coordinator");
                }
                self.set_waiting(None);
                return Err(reason);
            }
        }
        // Bake time (rollout.cooldown): the next node of the role restarts
        // only this long after this one is healthy again, the lease held.
        let cooldown = Duration::from_secs(model.cluster.rollout.cooldown.as_secs());
        if lease.is_some() && !cooldown.is_zero() {
            tracing::info!(
                seconds = cooldown.as_secs(),
                "cooling down before releasing the lease"
            );
            self.set_waiting(Some(format!(
                "bake time: {}s before the next node",
                cooldown.as_secs()
            )));
            std::thread::sleep(cooldown);
        }
        self.set_waiting(None);
        self.release(lease.as_ref());
        Ok(Some((pending.len() + free.len()) as u64))
    }

    /// After a failed restart: puts this node back on the last good commit
    /// and restarts it (no gate: the node is not serving), marks the failed
    /// commit so it is not applied again. Returns the reason to report.
    fn roll_back(
        &mut self,
        model: &Model,
        kafka: Option<&KafkaNode>,
        lease: Option<&Lease>,
        why: &str,
        on_phase: &dyn Fn(Phase),
    ) -> Result<String, String> {
        let failed = self.applied.commit.clone();
        if let Some(commit) = &failed {
            self.applied.failed = Some(FailedCommit {
                commit: commit.clone(),
                reason: why.to_owned(),
                at: now(),
            });
            self.save_applied();
        }
        let good = match (&self.applied.last_good, model.cluster.rollout.auto_rollback) {
            (Some(good), true) if Some(good) != failed.as_ref() => good.clone(),
            (_, false) => return Err(format!("{why}; rollback is off (rollout.auto_rollback)")),
            _ => return Err(format!("{why}; no earlier good commit to roll back to")),
        };
        tracing::warn!(failed = ?failed, to = %good, reason = %why, "rolling this node back");
        on_phase(Phase::Applying);
        let (rendered, good_model, signer, secrets) = self
            .evaluate(&good, false)
            .map_err(|e| format!("{why}; rollback to {good} failed: {}", e.message))?;
        // The keystores join a copy: the kept plan gets them afresh at
        // every reconcile.
        let mut plan = rendered.clone();
        let _ = self.certificates(&mut plan, &good_model, now());
        self.applier
            .apply(&plan)
            .map_err(|e| format!("{why}; rollback to {good} failed: {}", chain(&e)))?;
        // The rollback's own config changes take effect by the restart below.
        for unit in self.applier.pending_kafka().into_keys() {
            let _ = self.applier.kafka_done(&unit, true);
        }
        let pending = self.applier.pending_restarts();
        let marker = kafka.map_or(0, KafkaNode::restart_marker);
        on_phase(Phase::Restarting);
        self.applier
            .restart(&pending)
            .map_err(|e| format!("{why}; rollback restart failed: {}", chain(&e)))?;
        self.current = Some((rendered, good_model.clone()));
        self.secrets = secrets;
        self.applied.commit = Some(good.clone());
        self.applied.signer = signer;
        self.save_applied();
        self.wait_healthy(&pending, &good_model, kafka, marker, lease)
            .map_err(|e| {
                format!("{why}; rolled back to {good}, but the node is still unhealthy: {e}")
            })?;
        Ok(format!("{why}; rolled back to {good}"))
    }

    /// One reconcile. `on_phase` is told about phase changes as they happen.
    pub fn reconcile(&mut self, trigger: &Trigger, on_phase: &dyn Fn(Phase)) -> Outcome {
        let now = now();
        let mut outcome = Outcome {
            phase: Phase::Converged,
            role: None,
            revision_seen: None,
            revision_applied: self.applied.commit.clone(),
            signer: self.applied.signer.clone(),
            error: None,
            drift: Vec::new(),
            units: Vec::new(),
            certificates: Vec::new(),
            files_written: 0,
            restarts: 0,
            waiting: None,
            restart_log: self.restart_log.clone(),
        };
        // On mutual TLS: enrol (a node that already had its identity, such
        // as the coordinator's own) or renew the client certificate.
        if let Some(client) = &self.client
            && self.config.ca_file.is_some()
        {
            match client.ensure_enrolled() {
                Ok(_) => forget_spent_token(&self.config),
                Err(e) => tracing::debug!(error = %e, "not enrolled with the coordinator yet"),
            }
        }
        // A drift repair needs no fetch: put the applied plan back.
        let fetch = !(matches!(trigger, Trigger::Drift(_)) && self.current.is_some());
        let mut head = None;
        if fetch {
            on_phase(Phase::Syncing);
            match self.repo().and_then(Repo::fetch) {
                Ok(h) => head = Some(h),
                Err(e) => {
                    outcome.phase = if e.is_unreachable() {
                        Phase::RepoUnreachable
                    } else {
                        Phase::Failed
                    };
                    outcome.error = Some(error(chain(&e), None, vec![]));
                    tracing::warn!(error = %chain(&e), "fetch failed; keeping the last good revision");
                }
            }
        }
        outcome.revision_seen = head.clone().or_else(|| self.applied.commit.clone());

        let applied_before = self.current.is_some();
        let mut new_revision = false;
        // A commit this node failed with and rolled back from is not tried
        // again; the failure stays reported until a newer commit arrives.
        let failed_before = self
            .applied
            .failed
            .clone()
            .filter(|f| head.as_ref().is_none_or(|h| *h == f.commit));
        if let Some(failed) = &failed_before {
            outcome.phase = Phase::Failed;
            outcome.error = Some(error(failed.reason.clone(), Some(&failed.commit), vec![]));
        }
        if let Some(h) = head
            .clone()
            .filter(|h| Some(h) != self.applied.commit.as_ref())
            .filter(|_| failed_before.is_none())
        {
            // A new commit is checked against the one the node runs
            // (`roles::transition`); without it (its tree unreadable) the
            // check cannot run, and the coordinator's planner is the
            // remaining guard.
            if let Err(e) = self.load_current() {
                tracing::warn!(error = %e.message, "the applied commit does not load; a new commit is not checked against it");
            }
            match self.evaluate(&h, true) {
                Ok((plan, model, signer, secrets)) => {
                    new_revision = true;
                    tracing::info!(commit = %h, "new revision accepted");
                    self.current = Some((plan, model));
                    self.secrets = secrets;
                    self.applied = Applied {
                        commit: Some(h),
                        signer,
                        last_good: self.applied.last_good.take(),
                        failed: None,
                    };
                }
                Err(refusal) => {
                    tracing::warn!(commit = %h, error = %refusal.message, "revision refused; keeping the last good one");
                    outcome.phase = Phase::Refused;
                    outcome.error = Some(refusal);
                }
            }
        }
        if self.current.is_none()
            && let Some(commit) = self.applied.commit.clone()
        {
            match self.evaluate(&commit, false) {
                Ok((plan, model, _, secrets)) => {
                    self.current = Some((plan, model));
                    self.secrets = secrets;
                }
                Err(e) => {
                    outcome.phase = Phase::Failed;
                    outcome.error = Some(e);
                }
            }
        }
        let Some((mut plan, model)) = self.current.clone() else {
            if outcome.error.is_none() {
                outcome.phase = Phase::Failed;
                outcome.error = Some(error("nothing to apply yet", None, vec![]));
            }
            return outcome;
        };
        outcome.role = Some(plan.role.to_string());
        outcome.revision_applied = self.applied.commit.clone();
        outcome.signer = self.applied.signer.clone();

        on_phase(Phase::Applying);
        let (certificates, cert_problems) = self.certificates(&mut plan, &model, now);
        outcome.certificates = certificates;
        if !new_revision && applied_before {
            // Files of an already applied revision that differ now were
            // changed behind our back: drift. A new revision's first write is not.
            outcome.drift = self.applier.drift(&plan);
        }
        match self.applier.apply(&plan) {
            Ok(report) => {
                outcome.files_written = report.changed.len() as u64;
                if !report.changed.is_empty() {
                    tracing::info!(
                        changed = report.changed.len(),
                        unchanged = report.unchanged,
                        "applied"
                    );
                }
                self.save_applied();
            }
            Err(e) => {
                outcome.phase = Phase::Failed;
                outcome.error = Some(error(chain(&e), self.applied.commit.as_deref(), vec![]));
                return outcome;
            }
        }
        let kafka = self.kafka_node(&model);
        let commit = self.applied.commit.clone();
        let restarted = self
            .kafka_live(&plan, kafka.as_ref())
            .and_then(|()| self.restart_under_lease(&plan, &model, kafka.as_ref(), on_phase));
        match restarted {
            Ok(Some(n)) => outcome.restarts = n,
            Ok(None) => {
                // Blocked by the lease or a gate: the restart stays pending.
                outcome.phase = Phase::WaitingForLease;
            }
            Err(why) => {
                outcome.phase = Phase::Failed;
                outcome.error = Some(error(why, commit.as_deref(), vec![]));
                // A rollback changed what the node runs.
                outcome.revision_applied = self.applied.commit.clone();
            }
        }
        if outcome.phase == Phase::Converged && failed_before.is_none() {
            self.applied.last_good = self.applied.commit.clone();
            self.save_applied();
        }
        outcome.restart_log = self.restart_log.clone();
        if !cert_problems.is_empty() && outcome.error.is_none() {
            outcome.phase = Phase::Failed;
            outcome.error = Some(error(
                "certificates could not be obtained",
                None,
                cert_problems,
            ));
        }
        outcome.units = plan
            .units
            .iter()
            .map(|u| {
                self.services.status(&u.name).unwrap_or(UnitStatus {
                    name: u.name.clone(),
                    active_state: "unknown".to_owned(),
                    sub_state: "unknown".to_owned(),
                })
            })
            .collect();
        outcome
    }
}

/// Units of `on_change` are not started by this apply (see
/// [`Reconciler::certificates`]).
fn hold_back(plan: &mut Plan, on_change: &[OnChange]) {
    for change in on_change {
        let unit = match change {
            OnChange::Restart(u)
            | OnChange::KafkaDynamicReload(u)
            | OnChange::KafkaConfig(u)
            | OnChange::Reload(u) => u,
            OnChange::Nothing => continue,
        };
        if let Some(planned) = plan.units.iter_mut().find(|p| &p.name == unit)
            && planned.start
        {
            tracing::info!(unit = %unit, "not starting the unit until its certificate is issued");
            planned.start = false;
        }
    }
}
