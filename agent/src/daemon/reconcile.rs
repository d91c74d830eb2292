//! One reconcile: fetch, verify, validate, render, obtain certificates,
//! apply, restart under a lease. Synchronous; the daemon runs it on a
//! blocking thread. Level-triggered: every run converges the node to the
//! newest acceptable commit, whatever woke it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use desired_state::{Identity, Model};
use roles::{OnChange, Plan, PlannedFile};
use serde::{Deserialize, Serialize};

use crate::apply::{Applier, NoServiceManager, ServiceManager, Systemctl, is_running};
use crate::certs;
use crate::config::{AgentConfig, ServiceManagerKind};
use crate::daemon::client::{CoordinatorClient, LeaseAnswer};
use crate::daemon::state::Trigger;
use crate::protocol::{CertificateStatus, Phase, ReportedError, UnitStatus};
use crate::sync::{Repo, SyncError, TrustedSigners};

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
}

/// The commit the node runs, kept across agent restarts.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Applied {
    commit: Option<String>,
    signer: Option<String>,
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
        self.0
            .status(unit)
            .is_ok_and(|s| is_running(&s.active_state))
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

/// `err` and its sources, as `a: b: c`.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
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
        })
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
    ) -> Result<(Plan, Model, Option<String>), ReportedError> {
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
        Ok((plan, model, signer))
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

    /// Restarts the pending units under the coordinator's lease for this role.
    fn restart_under_lease(
        &mut self,
        plan: &Plan,
        model: &Model,
        on_phase: &dyn Fn(Phase),
    ) -> Result<u64, String> {
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
            return Ok(free.len() as u64);
        }
        let role = plan.role.to_string();
        let ttl = model.cluster.rollout.lease_ttl.as_secs();
        let deadline =
            Instant::now() + Duration::from_secs(model.cluster.rollout.health_timeout.as_secs());
        let lease = match &self.client {
            None => None,
            Some(client) => {
                on_phase(Phase::WaitingForLease);
                let mut wait = Duration::from_secs(1);
                loop {
                    match client.acquire(&role, ttl, None).map_err(|e| chain(&e))? {
                        LeaseAnswer::Granted(lease) => break Some(lease),
                        LeaseAnswer::Busy(why) => {
                            tracing::info!(role = %role, reason = %why, "waiting for the restart lease");
                            std::thread::sleep(wait);
                            wait = (wait * 2).min(Duration::from_secs(30));
                        }
                    }
                }
            }
        };
        on_phase(Phase::Restarting);
        let release = |this: &Self| {
            if let (Some(client), Some(lease)) = (&this.client, &lease)
                && let Err(e) = client.release(lease)
            {
                tracing::warn!(error = %chain(&e), "releasing the lease failed; it expires by its TTL");
            }
        };
        // Nothing restarted yet: a refusal or failure here frees the lease.
        let before = pending
            .iter()
            .try_for_each(|unit| self.gate.before_restart(unit));
        let restarted = before.and_then(|()| self.applier.restart(&pending).map_err(|e| chain(&e)));
        if let Err(why) = restarted {
            release(self);
            return Err(why);
        }
        for unit in &pending {
            while !self.gate.healthy(unit) {
                if Instant::now() >= deadline {
                    // The lease stays held (it expires by its TTL), so the
                    // rollout stops at this node.
                    return Err(format!("{unit} is not healthy after its restart"));
                }
                std::thread::sleep(Duration::from_millis(500));
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
            std::thread::sleep(cooldown);
        }
        release(self);
        Ok((pending.len() + free.len()) as u64)
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
        if let Some(h) = head
            .clone()
            .filter(|h| Some(h) != self.applied.commit.as_ref())
        {
            match self.evaluate(&h, true) {
                Ok((plan, model, signer)) => {
                    new_revision = true;
                    tracing::info!(commit = %h, "new revision accepted");
                    self.current = Some((plan, model));
                    self.applied = Applied {
                        commit: Some(h),
                        signer,
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
                Ok((plan, model, _)) => self.current = Some((plan, model)),
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
        match self.restart_under_lease(&plan, &model, on_phase) {
            Ok(n) => outcome.restarts = n,
            Err(why) => {
                outcome.phase = Phase::Failed;
                outcome.error = Some(error(why, self.applied.commit.as_deref(), vec![]));
            }
        }
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
            OnChange::Restart(u) | OnChange::KafkaDynamicReload(u) | OnChange::Reload(u) => u,
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
