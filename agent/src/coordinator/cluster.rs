//! The coordinator's cluster-scope work, done with one long-lived Kafka
//! admin client as the admin user: raising `metadata.version` once every
//! broker and controller runs the commit that asks for it; reconciling
//! topics, SCRAM users, ACLs and quotas from the head commit
//! ([`super::resources`]); and the connectors, through the Connect REST API
//! of the cluster's Connect node.
//!
//! It runs on a thread of its own (the Kafka and Connect clients block),
//! woken by a new head commit and every [`TICK`]; what it found is
//! published into the coordinator's state for `GET /v1/rollout` and
//! `GET /v1/resources`, and in [`super::ClusterScope`].
//!
//! Topics and users do not wait for rolling restarts: they are reconciled
//! from the head commit the coordinator loaded (it loads valid commits
//! only), never while Kafka cannot be read.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use desired_state::features::{level_name, metadata_level};
use desired_state::{Identity, Model, Role};

use super::resources::{ResourceWriter, unreachable_report};
use super::{Coordinator, FRESH_REPORT_SECONDS};
use crate::connect::{ConnectClient, ConnectConfig, ConnectorsReport, RestartMemory};
use crate::error_chain as chain;
use crate::kafka::{AdminClient, AdminConfig, Auth, ClusterAdmin, FeatureUpdateKind};
use crate::protocol::{MetadataVersionView, NodeView, Phase, ResourcesReport};

/// How often the cluster is looked at without a new commit.
pub const TICK: Duration = Duration::from_secs(15);
const KAFKA_TIMEOUT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const METADATA_VERSION: &str = "metadata.version";
/// The connectors' restart memory, in the coordinator's state directory.
pub const RESTARTS_FILE: &str = "connector-restarts.json";
const RESTARTS_FILE_VERSION: u32 = 1;

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RestartsFile {
    version: u32,
    memory: RestartMemory,
}

/// The connectors' restart memory kept at `path`: empty when the file is
/// missing. A file that cannot be read is reported in the error and the
/// memory starts empty (the backoff starts over: at most one restart too
/// many); it is overwritten at the next restart.
pub fn load_restarts(path: &Path) -> (RestartMemory, Option<String>) {
    match super::state_file::load(path, RESTARTS_FILE_VERSION, |f: &RestartsFile| f.version) {
        Ok(file) => (file.map(|f| f.memory).unwrap_or_default(), None),
        Err(super::state_file::LoadError::Read(e)) => (
            RestartMemory::default(),
            Some(format!("reading {}: {e}", path.display())),
        ),
        Err(super::state_file::LoadError::Corrupt(reason)) => (
            RestartMemory::default(),
            Some(format!("{}: {reason}", path.display())),
        ),
    }
}

/// Writes the restart memory to `path` atomically, mode 0600.
pub fn save_restarts(path: &Path, memory: &RestartMemory) -> Result<(), String> {
    let file = RestartsFile {
        version: RESTARTS_FILE_VERSION,
        memory: memory.clone(),
    };
    let mut bytes = serde_json::to_vec_pretty(&file).map_err(|e| e.to_string())?;
    bytes.push(b'\n');
    crate::apply::atomic::write_own(path, &bytes, 0o600)
        .map_err(|e| format!("writing {}: {}", path.display(), chain(&e)))
}

/// What the loop is told: a new head commit and its model.
#[derive(Debug)]
pub struct Head {
    pub commit: String,
    pub model: Arc<Model>,
}

/// Whether every broker and controller runs `head`: reported recently,
/// converged, on that commit. `Err` names the ones that do not.
pub fn kafka_nodes_on(head: &str, model: &Model, nodes: &[NodeView]) -> Result<(), String> {
    let mut behind = Vec::new();
    for node in model.nodes.iter().filter(|n| n.role.is_kafka_server()) {
        let name = node.name.as_str();
        let view = nodes.iter().find(|v| v.node == name);
        let why = match view.and_then(|v| v.report.as_ref().zip(v.age_seconds)) {
            None => Some("has not reported".to_owned()),
            Some((_, age)) if age >= FRESH_REPORT_SECONDS => {
                Some(format!("last reported {age}s ago"))
            }
            Some((r, _)) if r.revision_applied.as_deref() != Some(head) => Some(format!(
                "runs {}",
                r.revision_applied
                    .as_deref()
                    .map_or("nothing yet", |c| &c[..c.len().min(12)])
            )),
            Some((r, _)) if r.phase != Phase::Converged => {
                Some(format!("is {}", phase_word(r.phase)))
            }
            Some(_) => None,
        };
        if let Some(why) = why {
            behind.push(format!("{name} {why}"));
        }
    }
    if behind.is_empty() {
        Ok(())
    } else {
        Err(behind.join(", "))
    }
}

fn phase_word(phase: Phase) -> String {
    serde_json::to_value(phase)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{phase:?}"))
}

/// What to do about `metadata.version`, given the level git asks for and
/// the finalized level Kafka reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataStep {
    /// Already there.
    AtLevel,
    /// Raise to the desired level.
    Raise,
    /// Kafka's level is above the desired one: kraftops never lowers it
    /// (a downgrade can lose metadata; it is an operator's decision).
    Above,
}

pub fn metadata_step(desired: u16, finalized: u16) -> MetadataStep {
    match finalized.cmp(&desired) {
        std::cmp::Ordering::Equal => MetadataStep::AtLevel,
        std::cmp::Ordering::Less => MetadataStep::Raise,
        std::cmp::Ordering::Greater => MetadataStep::Above,
    }
}

/// Where the admin client connects and as whom: every broker's internal
/// listener, the admin user's SCRAM credentials. Used to build the client
/// and to notice when a new commit changes it.
fn admin_config(model: &Model, identity: &Identity) -> Result<AdminConfig, String> {
    let cluster = &model.cluster;
    let admin = &cluster.security.admin_user.value;
    let user = model
        .user(admin)
        .ok_or_else(|| format!("the admin user {admin} is not defined in users/"))?;
    let password = model
        .decrypt(&user.password_secret.value, identity)
        .map_err(|e| {
            format!(
                "decrypting secrets/{}.age: {e}",
                user.password_secret.value.as_str()
            )
        })?;
    let domain = cluster.network.domain.as_str();
    let bootstrap: Vec<String> = model
        .nodes
        .iter()
        .filter(|n| *n.role == Role::Broker)
        .map(|n| format!("{}.{domain}:{}", n.name.as_str(), cluster.ports.internal))
        .collect();
    if bootstrap.is_empty() {
        return Err("the cluster has no brokers".to_owned());
    }
    Ok(AdminConfig {
        bootstrap,
        ca_pem: model.ca_certificate.clone(),
        auth: Auth::Scram {
            user: admin.to_string(),
            password: password.expose().to_owned(),
        },
        timeout: KAFKA_TIMEOUT,
        controllers: false,
    })
}

/// Where the Connect REST API of `model`'s cluster answers: its first
/// Connect node by host name (`listeners=http://<address>:<connect_rest>`);
/// `None` when the cluster has no Connect node.
pub fn connect_url(model: &Model) -> Option<String> {
    let node = model.nodes.iter().find(|n| *n.role == Role::Connect)?;
    Some(format!(
        "http://{}:{}/",
        model.fqdn(node),
        model.cluster.ports.connect_rest
    ))
}

/// The loop's memory: the clients and what they were built from, the
/// resource writer's digest record, the connectors' restart memory.
struct Work {
    identity: Identity,
    head: Option<Head>,
    client: Option<(String, Arc<AdminClient>)>,
    resources: ResourceWriter,
    connect: Option<(String, ConnectClient)>,
    restarts: RestartMemory,
    /// Where `restarts` is kept ([`RESTARTS_FILE`]).
    restarts_file: PathBuf,
    /// The last raise this run made (`raised from … to … at <unix s>`),
    /// shown while Kafka stays at that level.
    last_raise: Option<(u16, String)>,
}

impl Work {
    fn admin(&mut self, model: &Model) -> Result<Arc<AdminClient>, String> {
        let config = admin_config(model, &self.identity)?;
        // Built again only when where or as whom it connects changes. The
        // password is part of the key (the admin password rotated in git);
        // the key is never shown.
        let secret = match &config.auth {
            Auth::Scram { password, .. } => password.as_str(),
            Auth::MutualTls { keystore_pem } => keystore_pem.as_str(),
        };
        let key = format!("{config:?}|{secret}|{}", config.ca_pem);
        if let Some((k, client)) = &self.client
            && *k == key
        {
            return Ok(Arc::clone(client));
        }
        let client = Arc::new(AdminClient::new(config).map_err(|e| chain(&e))?);
        self.client = Some((key, Arc::clone(&client)));
        Ok(client)
    }

    /// Shares the head and the admin client with the HTTP API.
    fn publish(&mut self, coordinator: &Coordinator) {
        let Some(head) = &self.head else {
            return;
        };
        let model = Arc::clone(&head.model);
        let commit = head.commit.clone();
        let admin = match self.admin(&model) {
            Ok(a) => Some(a as Arc<dyn ClusterAdmin>),
            Err(e) => {
                tracing::warn!(error = %e, "no Kafka admin client");
                None
            }
        };
        coordinator.update_cluster_scope(|scope| {
            scope.head = Some((commit, model));
            scope.admin = admin;
        });
    }

    /// One pass: the `metadata.version` step.
    fn metadata_version(
        &mut self,
        coordinator: &Coordinator,
        now: u64,
    ) -> Option<MetadataVersionView> {
        let head = self.head.as_ref()?;
        let (commit, model) = (head.commit.clone(), Arc::clone(&head.model));
        let wanted = model.cluster.kafka.metadata_version.as_ref()?;
        let release = wanted.as_str().to_owned();
        let mut view = MetadataVersionView {
            desired: release.clone(),
            desired_level: metadata_level(&release),
            finalized_level: None,
            state: "waiting".to_owned(),
            detail: None,
            checked_at: now,
        };
        let Some(desired) = view.desired_level else {
            view.state = "error".to_owned();
            view.detail = Some(format!("kraftops knows no metadata.version for {release}"));
            return Some(view);
        };
        if let Err(behind) = kafka_nodes_on(&commit, &model, &coordinator.nodes()) {
            view.detail = Some(format!(
                "not every Kafka node runs this commit yet: {behind}"
            ));
            return Some(view);
        }
        let admin = match self.admin(&model) {
            Ok(a) => a,
            Err(e) => {
                view.state = "error".to_owned();
                view.detail = Some(e);
                return Some(view);
            }
        };
        let finalized = match admin.describe_features() {
            Ok(f) => f
                .finalized
                .get(METADATA_VERSION)
                .and_then(|r| u16::try_from(r.max).ok()),
            Err(e) => {
                view.state = "error".to_owned();
                view.detail = Some(format!("describing Kafka's features: {}", chain(&e)));
                return Some(view);
            }
        };
        let Some(finalized) = finalized else {
            view.state = "error".to_owned();
            view.detail = Some("Kafka reports no finalized metadata.version".to_owned());
            return Some(view);
        };
        view.finalized_level = Some(finalized);
        match metadata_step(desired, finalized) {
            MetadataStep::AtLevel => {
                view.state = "at_level".to_owned();
                view.detail = self
                    .last_raise
                    .as_ref()
                    .filter(|(level, _)| *level == finalized)
                    .map(|(_, text)| text.clone());
            }
            MetadataStep::Above => {
                view.state = "above".to_owned();
                view.detail = Some(format!(
                    "Kafka runs {}, above {} ({release}); kraftops never lowers metadata.version",
                    level_name(finalized),
                    level_name(desired)
                ));
            }
            MetadataStep::Raise => {
                let level = i16::try_from(desired).unwrap_or(i16::MAX);
                match admin.update_features(
                    METADATA_VERSION,
                    level,
                    FeatureUpdateKind::Upgrade,
                    false,
                ) {
                    Ok(()) => {
                        tracing::info!(
                            from = %level_name(finalized),
                            to = %level_name(desired),
                            commit = %commit,
                            "raised metadata.version"
                        );
                        view.state = "at_level".to_owned();
                        let text = format!(
                            "raised from {} to {} at {now}",
                            level_name(finalized),
                            level_name(desired)
                        );
                        self.last_raise = Some((desired, text.clone()));
                        view.detail = Some(text);
                        view.finalized_level = Some(desired);
                    }
                    Err(e) => {
                        view.state = "error".to_owned();
                        view.detail = Some(format!(
                            "raising metadata.version to {}: {}",
                            level_name(desired),
                            chain(&e)
                        ));
                    }
                }
            }
        }
        Some(view)
    }
}

impl Work {
    /// One pass of topics, users, ACLs and quotas from the head commit.
    fn resources(&mut self, now: u64) -> Option<ResourcesReport> {
        let head = self.head.as_ref()?;
        let (commit, model) = (head.commit.clone(), Arc::clone(&head.model));
        let admin = match self.admin(&model) {
            Ok(a) => a,
            Err(e) => {
                let error = format!("no Kafka admin client: {e}");
                tracing::warn!(commit = %commit, error = %error, "resources not reconciled");
                return Some(unreachable_report(&commit, now, error));
            }
        };
        Some(
            self.resources
                .pass(&*admin, &model, &self.identity, &commit, now),
        )
    }

    /// One pass of the connectors; `None` when the cluster has no Connect
    /// node.
    fn connectors(&mut self, now: u64) -> Option<ConnectorsReport> {
        let model = Arc::clone(&self.head.as_ref()?.model);
        let url = connect_url(&model)?;
        if self.connect.as_ref().is_none_or(|(u, _)| *u != url) {
            let config = ConnectConfig {
                url: url.clone(),
                ca_pem: None,
                auth: None,
                timeout: CONNECT_TIMEOUT,
            };
            match ConnectClient::new(config) {
                Ok(client) => self.connect = Some((url, client)),
                Err(e) => {
                    self.connect = None;
                    return Some(ConnectorsReport {
                        error: Some(chain(&e)),
                        connectors: Vec::new(),
                    });
                }
            }
        }
        let (_, client) = self.connect.as_ref()?;
        let before = self.restarts.clone();
        let report = crate::connect::reconcile(client, &model.connectors, &mut self.restarts, now);
        if self.restarts != before
            && let Err(e) = save_restarts(&self.restarts_file, &self.restarts)
        {
            tracing::warn!(error = %e, "the connectors' restart memory");
        }
        Some(report)
    }
}

/// Runs until `heads` is closed: each new head, and every [`TICK`].
/// `state_dir` is the coordinator's state directory, where the resource
/// writer keeps the digests of the passwords it set
/// ([`super::resources::DIGEST_FILE`]) and the connectors' restart memory
/// is kept ([`RESTARTS_FILE`]).
pub fn run(
    coordinator: Arc<Coordinator>,
    identity: Identity,
    heads: Receiver<Head>,
    state_dir: &Path,
) {
    let restarts_file = state_dir.join(RESTARTS_FILE);
    let (restarts, problem) = load_restarts(&restarts_file);
    if let Some(problem) = problem {
        tracing::warn!(%problem, "the connectors' restart memory starts empty");
    }
    let mut work = Work {
        identity,
        head: None,
        client: None,
        resources: ResourceWriter::open(state_dir.join(super::resources::DIGEST_FILE)),
        connect: None,
        restarts,
        restarts_file,
        last_raise: None,
    };
    loop {
        match heads.recv_timeout(TICK) {
            Ok(head) => work.head = Some(head),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        // Only the newest of several queued heads matters.
        while let Ok(head) = heads.try_recv() {
            work.head = Some(head);
        }
        work.publish(&coordinator);
        let now = crate::certs::unix_now();
        let view = work.metadata_version(&coordinator, now);
        if let Some(v) = &view
            && v.state == "error"
        {
            tracing::warn!(detail = ?v.detail, "metadata.version");
        }
        coordinator.set_metadata_version(view);
        let resources = work.resources(now);
        let connectors = work.connectors(crate::certs::unix_now());
        coordinator.update_cluster_scope(|scope| {
            scope.resources = resources;
            scope.connectors = connectors;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connectors_restart_memory_survives_a_restart_of_the_coordinator() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(RESTARTS_FILE);
        let (empty, problem) = load_restarts(&path);
        assert_eq!((empty, problem), (RestartMemory::default(), None));

        let mut memory = RestartMemory::default();
        memory.record_restart("cluster-hosts", 1_000);
        memory.record_restart("cluster-hosts", 1_120);
        save_restarts(&path, &memory).expect("saved");
        let (loaded, problem) = load_restarts(&path);
        assert_eq!(problem, None);
        assert_eq!(loaded, memory);
        // The backoff goes on from the second restart, not from zero.
        assert_eq!(
            loaded.next_restart_at("cluster-hosts"),
            memory.next_restart_at("cluster-hosts")
        );
        assert_eq!(loaded.record("cluster-hosts").map(|r| r.restarts), Some(2));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn an_unreadable_restart_memory_is_reported_and_starts_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(RESTARTS_FILE);
        std::fs::write(&path, b"{\"version\": 1, \"memory\": {\"records\": 3}}").expect("write");
        let (memory, problem) = load_restarts(&path);
        assert_eq!(memory, RestartMemory::default());
        let problem = problem.expect("reported");
        assert!(problem.contains(RESTARTS_FILE), "{problem}");

        std::fs::write(&path, b"{\"version\": 7, \"memory\": {\"records\": {}}}").expect("write");
        let (_, problem) = load_restarts(&path);
        assert!(problem.expect("reported").contains("version 7"));
    }
    use crate::protocol::StatusReport;

    fn example() -> Model {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../desired-state/examples/seed");
        desired_state::load_dir(&dir).expect("the example loads")
    }

    fn report(node: &str, revision: &str, phase: Phase) -> StatusReport {
        StatusReport {
            node: node.to_owned(),
            role: String::new(),
            revision_seen: Some(revision.to_owned()),
            revision_applied: Some(revision.to_owned()),
            signer: None,
            phase,
            units: Vec::new(),
            certificates: Vec::new(),
            last_error: None,
            drift: Vec::new(),
            reported_at: 0,
            waiting: None,
            restarts: Vec::new(),
        }
    }

    fn views(model: &Model, revision: &str) -> Vec<NodeView> {
        model
            .nodes
            .iter()
            .map(|n| NodeView {
                node: n.name.to_string(),
                role: String::new(),
                report: Some(report(n.name.as_str(), revision, Phase::Converged)),
                age_seconds: Some(3),
            })
            .collect()
    }

    #[test]
    fn every_broker_and_controller_must_run_the_head_converged_and_fresh() {
        let model = example();
        let head = "a".repeat(40);
        let mut nodes = views(&model, &head);
        assert_eq!(kafka_nodes_on(&head, &model, &nodes), Ok(()));

        // Connect and observability nodes do not count.
        for v in nodes
            .iter_mut()
            .filter(|v| v.node.starts_with("connect") || v.node.starts_with("observ"))
        {
            v.report = None;
        }
        assert_eq!(kafka_nodes_on(&head, &model, &nodes), Ok(()));

        let set = |nodes: &mut Vec<NodeView>, name: &str, f: &dyn Fn(&mut NodeView)| {
            f(nodes.iter_mut().find(|v| v.node == name).expect("node"));
        };
        set(&mut nodes, "broker-3", &|v| {
            if let Some(r) = v.report.as_mut() {
                r.revision_applied = Some("b".repeat(40));
            }
        });
        set(&mut nodes, "controller-2", &|v| {
            if let Some(r) = v.report.as_mut() {
                r.phase = Phase::WaitingForLease;
            }
        });
        set(&mut nodes, "broker-1", &|v| {
            v.age_seconds = Some(FRESH_REPORT_SECONDS)
        });
        set(&mut nodes, "broker-2", &|v| v.report = None);
        let behind = kafka_nodes_on(&head, &model, &nodes).expect_err("four nodes are behind");
        let mut parts: Vec<&str> = behind.split(", ").collect();
        parts.sort_unstable();
        assert_eq!(
            parts,
            [
                "broker-1 last reported 120s ago",
                "broker-2 has not reported",
                "broker-3 runs bbbbbbbbbbbb",
                "controller-2 is waiting_for_lease",
            ]
        );
    }

    #[test]
    fn connectors_are_reconciled_through_the_connect_nodes_rest_listener() {
        let model = example();
        assert_eq!(
            connect_url(&model).as_deref(),
            Some("http://connect-1.kafka.internal:8083/")
        );
        let mut without = model.clone();
        without.nodes.retain(|n| *n.role != Role::Connect);
        assert_eq!(connect_url(&without), None);
    }

    #[test]
    fn metadata_version_is_only_ever_raised() {
        assert_eq!(metadata_step(29, 27), MetadataStep::Raise);
        assert_eq!(metadata_step(27, 27), MetadataStep::AtLevel);
        assert_eq!(metadata_step(25, 27), MetadataStep::Above);
    }

    #[test]
    fn the_admin_client_connects_to_every_brokers_internal_listener_as_admin() {
        let model = example();
        let identity_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../desired-state/examples/seed.example-only.age-identity");
        let identity = Identity::parse(&std::fs::read_to_string(identity_path).expect("identity"))
            .expect("parses");
        let config = admin_config(&model, &identity).expect("config");
        assert_eq!(
            config.bootstrap,
            (1..=4)
                .map(|i| format!("broker-{i}.kafka.internal:9091"))
                .collect::<Vec<_>>()
        );
        assert!(
            matches!(&config.auth, Auth::Scram { user, password } if user == "admin" && !password.is_empty())
        );
        assert!(!config.controllers);
    }
}
