//! The coordinator as the one writer of cluster-scope resources: each pass
//! reads Kafka into a [`roles::resources::Observed`] snapshot, plans with
//! the pure planner against the head commit's model, carries the actions
//! out in the plan's order through [`ClusterAdmin`], and reports.
//!
//! Kafka never returns a password, so the coordinator keeps its own record
//! of which password each credential it set holds: the
//! [`PasswordDigest`] of every successful upsert, in a small JSON file in
//! its state directory ([`DigestRecord`], written atomically). Without the
//! record (first start, or a corrupt file) every credential counts as
//! unrecorded and is set again from git — the same passwords, so clients
//! keep logging in.
//!
//! Failure policy: Kafka unreachable or unreadable means no pass (the
//! report says why); a failing action is reported and the others go on,
//! except that a user's ACL is not removed while an ACL added for that user
//! in the same pass failed (the planner adds before it removes, so a
//! changed rule is never missing in between).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use desired_state::{Identity, Model};
use roles::Secrets;
use roles::resources::{
    self as planner, Action, Observed, ObservedTopic, PasswordDigest, PasswordDigests, ResourcePlan,
};
use serde::{Deserialize, Serialize};

use crate::error_chain as chain;
use crate::kafka::{
    AclBinding, AclFilter, AclOperation, AclPatternType, AclPermission, AclResourceType,
    AdminClient, ClusterAdmin, ClusterMetadata, ConfigEntry, ConfigOp, ConfigSource, ItemResults,
    KafkaAdmin, KafkaError, NewPartitions, NewTopic, QuotaEntity, QuotaFilter, QuotaKey, QuotaOp,
    ScramCredentialInfo, ScramDeletion, ScramMechanism, ScramUpsert, TopicConfigChange,
    TopicMetadata,
};
use crate::protocol::{ResourceActionReport, ResourceDrift, ResourceRefusal, ResourcesReport};

/// The record's file name in the coordinator's state directory.
pub const DIGEST_FILE: &str = "resource-password-digests.json";
/// Topics described per `DescribeConfigs` request.
const DESCRIBE_CHUNK: usize = 200;

/// What a pass needs of Kafka besides [`ClusterAdmin`]: the topics and
/// their configs with where each value comes from. [`AdminClient`] is the
/// real one; unit tests script a fake.
pub trait ResourceAdmin: ClusterAdmin {
    /// `Metadata` of every topic, internal ones included.
    fn cluster_metadata(&self) -> Result<ClusterMetadata, KafkaError>;
    /// `DescribeConfigs` of every config of each topic, with sources.
    fn topic_config_entries(
        &self,
        topics: &[String],
    ) -> Result<ItemResults<String, Vec<ConfigEntry>>, KafkaError>;
}

impl ResourceAdmin for AdminClient {
    fn cluster_metadata(&self) -> Result<ClusterMetadata, KafkaError> {
        KafkaAdmin::metadata(self)
    }

    fn topic_config_entries(
        &self,
        topics: &[String],
    ) -> Result<ItemResults<String, Vec<ConfigEntry>>, KafkaError> {
        AdminClient::describe_topic_configs(self, topics)
    }
}

// ------------------------------------------------------------ the record

/// What went wrong with the password-digest record.
#[derive(Debug, thiserror::Error)]
pub enum DigestRecordError {
    #[error("reading the password-digest record {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the password-digest record {} is corrupt: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("writing the password-digest record {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: Box<crate::apply::ApplyError>,
    },
}

/// The file's format.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DigestFile {
    version: u32,
    /// User → the digest of the password its SCRAM-SHA-512 credential holds.
    digests: BTreeMap<String, PasswordDigest>,
}

const DIGEST_FILE_VERSION: u32 = 1;

/// The coordinator's record of the password each SCRAM credential it set
/// holds, kept at `path` (a digest reveals no password; see
/// [`PasswordDigest`]).
#[derive(Debug)]
pub struct DigestRecord {
    path: PathBuf,
    digests: BTreeMap<String, PasswordDigest>,
}

impl DigestRecord {
    /// Reads the record at `path`; a missing file is an empty record.
    pub fn load(path: &Path) -> Result<Self, DigestRecordError> {
        let corrupt = |reason: String| DigestRecordError::Corrupt {
            path: path.to_owned(),
            reason,
        };
        let loaded = super::state_file::load(path, DIGEST_FILE_VERSION, |f: &DigestFile| f.version)
            .map_err(|e| match e {
                super::state_file::LoadError::Read(source) => DigestRecordError::Read {
                    path: path.to_owned(),
                    source,
                },
                super::state_file::LoadError::Corrupt(reason) => corrupt(reason),
            })?;
        let Some(file) = loaded else {
            return Ok(Self::empty(path.to_owned()));
        };
        if let Some((user, _)) = file.digests.iter().find(|(_, d)| {
            d.as_str().len() != 64 || !d.as_str().bytes().all(|b| b.is_ascii_hexdigit())
        }) {
            return Err(corrupt(format!(
                "the digest of user {user} is not 64 hex digits"
            )));
        }
        Ok(Self {
            path: path.to_owned(),
            digests: file.digests,
        })
    }

    /// An empty record, written at `path` once something is recorded.
    pub fn empty(path: PathBuf) -> Self {
        Self {
            path,
            digests: BTreeMap::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn digests(&self) -> &BTreeMap<String, PasswordDigest> {
        &self.digests
    }

    /// Records `digest` for `user` and writes the record.
    pub fn record(&mut self, user: &str, digest: PasswordDigest) -> Result<(), DigestRecordError> {
        if self.digests.get(user) == Some(&digest) {
            return Ok(());
        }
        self.digests.insert(user.to_owned(), digest);
        self.save()
    }

    /// Forgets `user` (its SCRAM-SHA-512 credential is gone) and writes the
    /// record.
    pub fn forget(&mut self, user: &str) -> Result<(), DigestRecordError> {
        if self.digests.remove(user).is_none() {
            return Ok(());
        }
        self.save()
    }

    /// Writes the record atomically (temporary file in the same directory,
    /// fsync, rename, fsync the directory), mode 0600.
    pub fn save(&self) -> Result<(), DigestRecordError> {
        let file = DigestFile {
            version: DIGEST_FILE_VERSION,
            digests: self.digests.clone(),
        };
        let mut bytes = serde_json::to_vec_pretty(&file).unwrap_or_default();
        bytes.push(b'\n');
        crate::apply::atomic::write_own(&self.path, &bytes, 0o600).map_err(|source| {
            DigestRecordError::Write {
                path: self.path.clone(),
                source: Box::new(source),
            }
        })
    }
}

// ------------------------------------------------------------ observation

/// A topic as the planner sees it: partition count, the replica count of
/// its first partition, the configs set on the topic itself
/// (`DYNAMIC_TOPIC_CONFIG`; defaults and broker-level values are not the
/// topic's), and Kafka's internal flag.
pub fn observed_topic(metadata: &TopicMetadata, entries: &[ConfigEntry]) -> ObservedTopic {
    let replication_factor = metadata
        .partitions
        .iter()
        .min_by_key(|p| p.partition)
        .map_or(0, |p| u16::try_from(p.replicas.len()).unwrap_or(u16::MAX));
    ObservedTopic {
        partitions: u32::try_from(metadata.partitions.len()).unwrap_or(u32::MAX),
        replication_factor,
        configs: entries
            .iter()
            .filter(|e| e.source == ConfigSource::DynamicTopic)
            .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
            .collect(),
        internal: metadata.internal,
    }
}

/// The planner's mechanism for Kafka's; `None` for one kraftops does not know.
pub fn planner_mechanism(mechanism: ScramMechanism) -> Option<planner::ScramMechanism> {
    match mechanism {
        ScramMechanism::Sha256 => Some(planner::ScramMechanism::ScramSha256),
        ScramMechanism::Sha512 => Some(planner::ScramMechanism::ScramSha512),
        ScramMechanism::Unknown(_) => None,
    }
}

fn kafka_mechanism(mechanism: planner::ScramMechanism) -> ScramMechanism {
    match mechanism {
        planner::ScramMechanism::ScramSha256 => ScramMechanism::Sha256,
        planner::ScramMechanism::ScramSha512 => ScramMechanism::Sha512,
    }
}

/// Every user's SCRAM credentials, by user; with a note for each credential
/// the planner cannot represent (it is left alone).
pub fn observed_scram(
    infos: &[ScramCredentialInfo],
) -> (
    BTreeMap<String, Vec<planner::ScramCredentialInfo>>,
    Vec<String>,
) {
    let mut users: BTreeMap<String, Vec<planner::ScramCredentialInfo>> = BTreeMap::new();
    let mut notes = Vec::new();
    for info in infos {
        let mapped = planner_mechanism(info.mechanism)
            .zip(u32::try_from(info.iterations).ok())
            .map(|(mechanism, iterations)| planner::ScramCredentialInfo {
                mechanism,
                iterations,
            });
        match mapped {
            Some(credential) => users.entry(info.user.clone()).or_default().push(credential),
            None => notes.push(format!(
                "user {} has a {} credential with {} iterations that kraftops cannot manage; left alone",
                info.user, info.mechanism, info.iterations
            )),
        }
    }
    for credentials in users.values_mut() {
        credentials.sort();
    }
    (users, notes)
}

/// An ACL as the planner sees it; `None` for one with a code only a newer
/// Kafka knows (or a filter-only value).
pub fn observed_acl(binding: &AclBinding) -> Option<planner::AclBinding> {
    Some(planner::AclBinding {
        principal: binding.principal.clone(),
        resource_type: planner::ResourceType::from_kafka_code(binding.resource_type.code())?,
        resource_name: binding.resource_name.clone(),
        pattern_type: planner::PatternType::from_kafka_code(binding.pattern_type.code())?,
        operation: planner::Operation::from_kafka_code(binding.operation.code())?,
        permission: planner::Permission::from_kafka_code(binding.permission.code())?,
        host: binding.host.clone(),
    })
}

/// A planner's ACL as Kafka's.
pub fn kafka_acl(binding: &planner::AclBinding) -> AclBinding {
    AclBinding {
        resource_type: AclResourceType::from_code(binding.resource_type.kafka_code()),
        resource_name: binding.resource_name.clone(),
        pattern_type: AclPatternType::from_code(binding.pattern_type.kafka_code()),
        principal: binding.principal.clone(),
        host: binding.host.clone(),
        operation: AclOperation::from_code(binding.operation.kafka_code()),
        permission: AclPermission::from_code(binding.permission.kafka_code()),
    }
}

/// Every ACL the planner can represent, with a note for each of a user
/// that it cannot (kraftops then cannot remove it).
pub fn observed_acls(bindings: &[AclBinding]) -> (BTreeSet<planner::AclBinding>, Vec<String>) {
    let mut out = BTreeSet::new();
    let mut notes = Vec::new();
    for binding in bindings {
        match observed_acl(binding) {
            Some(b) => {
                out.insert(b);
            }
            None => notes.push(format!(
                "{binding} has a value kraftops does not know; left alone"
            )),
        }
    }
    (out, notes)
}

/// User quotas by user name and Kafka's key; the default user's and empty
/// entries are left out (git declares quotas per user).
pub fn observed_quotas(
    quotas: &BTreeMap<QuotaEntity, BTreeMap<QuotaKey, f64>>,
) -> BTreeMap<String, BTreeMap<String, f64>> {
    quotas
        .iter()
        .filter_map(|(entity, values)| match entity {
            QuotaEntity::User(name) if !values.is_empty() => Some((
                name.clone(),
                values
                    .iter()
                    .map(|(k, v)| (k.kafka_name().to_owned(), *v))
                    .collect(),
            )),
            _ => None,
        })
        .collect()
}

fn quota_key(name: &str) -> QuotaKey {
    match name {
        "producer_byte_rate" => QuotaKey::ProducerByteRate,
        "consumer_byte_rate" => QuotaKey::ConsumerByteRate,
        "request_percentage" => QuotaKey::RequestPercentage,
        "controller_mutation_rate" => QuotaKey::ControllerMutationRate,
        other => QuotaKey::Other(other.to_owned()),
    }
}

/// Kafka could not be read: nothing is planned.
#[derive(Debug, thiserror::Error)]
#[error("reading {what} from Kafka")]
pub struct ObserveError {
    pub what: &'static str,
    #[source]
    pub source: KafkaError,
}

fn reading(what: &'static str) -> impl FnOnce(KafkaError) -> ObserveError {
    move |source| ObserveError { what, source }
}

/// Reads what Kafka holds into a snapshot (with `recorded` as the record of
/// passwords), and notes on what the planner cannot represent.
pub fn observe(
    admin: &dyn ResourceAdmin,
    recorded: &BTreeMap<String, PasswordDigest>,
) -> Result<(Observed, Vec<String>), ObserveError> {
    let metadata = admin
        .cluster_metadata()
        .map_err(reading("the topics (Metadata)"))?;
    let names: Vec<String> = metadata
        .topics
        .iter()
        .filter(|t| !t.internal)
        .map(|t| t.name.clone())
        .collect();
    let mut entries: BTreeMap<String, Vec<ConfigEntry>> = BTreeMap::new();
    for chunk in names.chunks(DESCRIBE_CHUNK) {
        let answered = admin
            .topic_config_entries(chunk)
            .and_then(|r| r.into_result("DescribeConfigs"))
            .map_err(reading("the topics' configs"))?;
        entries.extend(answered);
    }
    let mut observed = Observed {
        password_digests: recorded.clone(),
        ..Observed::default()
    };
    for topic in &metadata.topics {
        let configs = entries.get(&topic.name).map_or(&[][..], Vec::as_slice);
        observed
            .topics
            .insert(topic.name.clone(), observed_topic(topic, configs));
    }
    let (scram_users, mut notes) = observed_scram(
        &admin
            .describe_user_scram_credentials()
            .map_err(reading("the SCRAM credentials"))?,
    );
    observed.scram_users = scram_users;
    let (acls, acl_notes) = observed_acls(
        &admin
            .describe_acls(&AclFilter::any())
            .map_err(reading("the ACLs"))?,
    );
    observed.acls = acls;
    notes.extend(acl_notes);
    observed.quotas = observed_quotas(
        &admin
            .describe_client_quotas(&QuotaFilter::AllUsers)
            .map_err(reading("the user quotas"))?,
    );
    Ok((observed, notes))
}

// ------------------------------------------------------------ passwords

/// The decrypted passwords of every user in git not marked for deletion,
/// by user, and the digests the planner compares; with a note for each
/// password that could not be had (that user's credential is then neither
/// compared nor set).
pub fn passwords(model: &Model, identity: &Identity) -> (Secrets, PasswordDigests, Vec<String>) {
    let mut secrets = Secrets::new();
    let mut notes = Vec::new();
    let mut usable = BTreeSet::new();
    for user in model.users.iter().filter(|u| !*u.delete) {
        let name = &*user.password_secret;
        let value = model
            .decrypt(name, identity)
            .map_err(|e| chain(&e))
            .and_then(|v| {
                v.single_line(name.as_str())
                    .map(|_| ())
                    .map_err(|e| chain(&e))?;
                Ok(v)
            });
        match value {
            Ok(v) => {
                usable.insert(user.name.as_str().to_owned());
                secrets.insert(name.clone(), v);
            }
            Err(e) => notes.push(format!(
                "the password of user {} (secrets/{}.age) is not usable: {e}; its credential is neither compared nor set",
                *user.name, name
            )),
        }
    }
    let digests = if notes.is_empty() {
        planner::password_digests(model, &secrets)
    } else {
        let mut usable_model = model.clone();
        usable_model
            .users
            .retain(|u| *u.delete || usable.contains(u.name.as_str()));
        planner::password_digests(&usable_model, &secrets)
    };
    let digests = digests.unwrap_or_else(|e| {
        notes.push(format!(
            "the passwords' digests: {}; no password is compared",
            chain(&e)
        ));
        PasswordDigests::new()
    });
    (secrets, digests, notes)
}

/// The password git holds for `user`, single-line.
fn password_of<'a>(model: &Model, secrets: &'a Secrets, user: &str) -> Result<&'a str, String> {
    let declared = model
        .users
        .iter()
        .find(|u| u.name.as_str() == user)
        .ok_or_else(|| format!("user {user} is not in git"))?;
    let name = &*declared.password_secret;
    secrets
        .get(name)
        .and_then(|v| v.single_line(name.as_str()).ok())
        .ok_or_else(|| format!("the password of user {user} (secrets/{name}.age) is not usable"))
}

// ------------------------------------------------------------ applying

/// Carries out one action. Kafka's error for the item, or why it was not
/// sent.
fn apply_action(
    admin: &dyn ClusterAdmin,
    model: &Model,
    secrets: &Secrets,
    action: &Action,
) -> Result<(), String> {
    let kafka = |e: KafkaError| chain(&e);
    match action {
        Action::CreateTopic {
            topic,
            partitions,
            replication_factor,
            configs,
        } => {
            let new = NewTopic {
                name: topic.clone(),
                partitions: i32::try_from(*partitions)
                    .map_err(|_| format!("{partitions} partitions is too many for Kafka"))?,
                replication_factor: i16::try_from(*replication_factor).map_err(|_| {
                    format!("replication factor {replication_factor} is too large for Kafka")
                })?,
                configs: configs.clone(),
            };
            admin
                .create_topics(&[new], false)
                .and_then(|r| r.into_result("CreateTopics"))
                .map(drop)
                .map_err(kafka)
        }
        Action::CreatePartitions { topic, to, .. } => {
            let total =
                i32::try_from(*to).map_err(|_| format!("{to} partitions is too many for Kafka"))?;
            admin
                .create_partitions(
                    &[NewPartitions {
                        topic: topic.clone(),
                        total,
                    }],
                    false,
                )
                .and_then(|r| r.into_result("CreatePartitions"))
                .map(drop)
                .map_err(kafka)
        }
        Action::AlterTopicConfigs { topic, set, delete } => {
            let ops = set
                .iter()
                .map(|(name, value)| ConfigOp::Set {
                    name: name.clone(),
                    value: value.clone(),
                })
                .chain(
                    delete
                        .iter()
                        .map(|name| ConfigOp::Delete { name: name.clone() }),
                )
                .collect();
            admin
                .alter_topic_configs(
                    &[TopicConfigChange {
                        topic: topic.clone(),
                        ops,
                    }],
                    false,
                )
                .and_then(|r| r.into_result("IncrementalAlterConfigs"))
                .map(drop)
                .map_err(kafka)
        }
        Action::DeleteTopic { topic, .. } => admin
            .delete_topics(std::slice::from_ref(topic))
            .and_then(|r| r.into_result("DeleteTopics"))
            .map(drop)
            .map_err(kafka),
        Action::UpsertScramCredential {
            user,
            mechanism,
            iterations,
            ..
        } => {
            if *mechanism != planner::MECHANISM {
                return Err(format!(
                    "kraftops sets {} credentials only, not {mechanism}",
                    planner::MECHANISM
                ));
            }
            let password = password_of(model, secrets, user)?;
            let upsert = ScramUpsert {
                user: user.clone(),
                password: password.to_owned(),
                iterations: *iterations,
            };
            admin
                .alter_user_scram_credentials(&[upsert], &[])
                .and_then(|r| r.into_result("AlterUserScramCredentials"))
                .map(drop)
                .map_err(kafka)
        }
        Action::DeleteScramCredential { user, mechanism } => admin
            .alter_user_scram_credentials(
                &[],
                &[ScramDeletion {
                    user: user.clone(),
                    mechanism: kafka_mechanism(*mechanism),
                }],
            )
            .and_then(|r| r.into_result("AlterUserScramCredentials"))
            .map(drop)
            .map_err(kafka),
        Action::CreateAcl { binding } => admin
            .create_acls(&[kafka_acl(binding)])
            .and_then(|r| r.into_result("CreateAcls"))
            .map(drop)
            .map_err(kafka),
        Action::DeleteAcl { binding } => admin
            .delete_acls(&[AclFilter::exact(&kafka_acl(binding))])
            .and_then(|r| r.into_result("DeleteAcls"))
            .map(drop)
            .map_err(kafka),
        Action::AlterQuotas { user, set, remove } => {
            let ops: Vec<QuotaOp> = set
                .iter()
                .map(|(key, value)| QuotaOp::Set {
                    key: quota_key(key),
                    value: *value,
                })
                .chain(remove.iter().map(|key| QuotaOp::Remove {
                    key: quota_key(key),
                }))
                .collect();
            admin
                .alter_client_quotas(&QuotaEntity::User(user.clone()), &ops, false)
                .map_err(kafka)
        }
    }
}

/// Carries out `plan`'s actions in order and reports each. Records the
/// digest of every credential set (and forgets that of every SCRAM-SHA-512
/// credential deleted) in `record`; a record that cannot be written is
/// returned as a note (the next pass then sets those credentials again).
pub fn apply_plan(
    admin: &dyn ClusterAdmin,
    model: &Model,
    secrets: &Secrets,
    plan: &ResourcePlan,
    record: &mut DigestRecord,
) -> (Vec<ResourceActionReport>, Vec<String>) {
    let mut reports = Vec::with_capacity(plan.actions.len());
    let mut notes = Vec::new();
    // Users an ACL could not be added for: their old ACLs stay this pass.
    let mut acl_add_failed: BTreeSet<String> = BTreeSet::new();
    for planned in &plan.actions {
        let action = &planned.action;
        let skip = match action {
            Action::DeleteAcl { binding } => binding
                .user()
                .filter(|u| acl_add_failed.contains(*u))
                .map(|u| format!("skipped: adding an ACL of user {u} failed this pass, so its old ACLs stay until it succeeds")),
            _ => None,
        };
        let result = match skip {
            Some(why) => Err(why),
            None => apply_action(admin, model, secrets, action),
        };
        let location = planned.source.as_ref().map(ToString::to_string);
        match &result {
            Ok(()) => {
                tracing::info!(action = %planned.description, location = ?location, "resource action applied");
                let recorded = match action {
                    Action::UpsertScramCredential {
                        user,
                        password_digest: Some(digest),
                        ..
                    } => record.record(user, digest.clone()),
                    Action::DeleteScramCredential { user, mechanism }
                        if *mechanism == planner::MECHANISM =>
                    {
                        record.forget(user)
                    }
                    _ => Ok(()),
                };
                if let Err(e) = recorded {
                    let e = chain(&e);
                    tracing::error!(error = %e, "cannot record a password digest; the credential will be set again next pass");
                    notes.push(e);
                }
            }
            Err(e) => {
                tracing::warn!(action = %planned.description, location = ?location, error = %e, "resource action failed");
                if let Action::CreateAcl { binding } = action
                    && let Some(user) = binding.user()
                {
                    acl_add_failed.insert(user.to_owned());
                }
            }
        }
        reports.push(ResourceActionReport {
            description: planned.description.clone(),
            location,
            ok: result.is_ok(),
            error: result.err(),
        });
    }
    (reports, notes)
}

// ------------------------------------------------------------ a pass

/// The cluster thread's resource writer: the digest record and what went
/// wrong reading it, kept across passes.
#[derive(Debug)]
pub struct ResourceWriter {
    record: DigestRecord,
    /// Said in every report until the record is written again.
    record_problem: Option<String>,
    /// The passwords of the last commit passed, with their digests (one
    /// PBKDF2 per user: worth computing once per commit, not per pass).
    passwords: Option<CommitPasswords>,
    /// The last pass's refusals, so a standing one is logged once.
    last_refusals: Vec<planner::Refusal>,
}

struct CommitPasswords {
    commit: String,
    secrets: Secrets,
    digests: PasswordDigests,
    notes: Vec<String>,
}

impl std::fmt::Debug for CommitPasswords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitPasswords")
            .field("commit", &self.commit)
            .field("users", &self.digests.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl ResourceWriter {
    /// Reads the record at `path`. A record that cannot be read is logged
    /// and reported, and the digests count as unknown: every credential is
    /// then set again from git (the same passwords) and the record
    /// rewritten.
    pub fn open(path: PathBuf) -> Self {
        match DigestRecord::load(&path) {
            Ok(record) => Self {
                record,
                record_problem: None,
                passwords: None,
                last_refusals: Vec::new(),
            },
            Err(e) => {
                let problem = format!(
                    "{}; treating every password as unrecorded, so every SCRAM credential is set again from git",
                    chain(&e)
                );
                tracing::error!(error = %problem, "password-digest record");
                Self {
                    record: DigestRecord::empty(path),
                    record_problem: Some(problem),
                    passwords: None,
                    last_refusals: Vec::new(),
                }
            }
        }
    }

    pub fn record(&self) -> &DigestRecord {
        &self.record
    }

    /// One pass for `commit`: observe, plan, apply, report. Does nothing
    /// to Kafka when it cannot be read.
    pub fn pass(
        &mut self,
        admin: &dyn ResourceAdmin,
        model: &Model,
        identity: &Identity,
        commit: &str,
        now: u64,
    ) -> ResourcesReport {
        let span = tracing::info_span!("resources", commit = %commit);
        let _entered = span.enter();
        let mut report = ResourcesReport {
            commit: commit.to_owned(),
            at: now,
            error: None,
            notes: Vec::new(),
            actions: Vec::new(),
            refusals: Vec::new(),
            drift: Vec::new(),
        };
        let (observed, observe_notes) = match observe(admin, self.record.digests()) {
            Ok(o) => o,
            Err(e) => {
                let error = chain(&e);
                tracing::warn!(error = %error, "Kafka could not be read; nothing reconciled");
                report.error = Some(error);
                report.notes.extend(self.record_problem.clone());
                return report;
            }
        };
        if self.passwords.as_ref().is_none_or(|p| p.commit != commit) {
            let (secrets, digests, notes) = passwords(model, identity);
            for note in &notes {
                tracing::warn!(note = %note, "password");
            }
            self.passwords = Some(CommitPasswords {
                commit: commit.to_owned(),
                secrets,
                digests,
                notes,
            });
        }
        let Some(CommitPasswords {
            secrets,
            digests,
            notes: password_notes,
            ..
        }) = &self.passwords
        else {
            return report;
        };
        let plan = planner::plan(model, digests, &observed);
        // A refusal stands until git changes: warned about once.
        if plan.refusals != self.last_refusals {
            for refusal in &plan.refusals {
                tracing::warn!(resource = %refusal.resource, location = ?refusal.location.as_ref().map(ToString::to_string), message = %refusal.message, "refused");
            }
            self.last_refusals = plan.refusals.clone();
        }
        // Said in this report; cleared once the record is written afresh.
        report.notes.extend(self.record_problem.clone());
        let (actions, apply_notes) = apply_plan(admin, model, secrets, &plan, &mut self.record);
        if self.record_problem.is_some() && apply_notes.is_empty() {
            match self.record.save() {
                Ok(()) => self.record_problem = None,
                Err(e) => tracing::error!(error = %chain(&e), "password-digest record"),
            }
        }
        report.notes.extend(observe_notes);
        report.notes.extend(password_notes.iter().cloned());
        report.notes.extend(apply_notes);
        report.actions = actions;
        report.refusals = plan
            .refusals
            .iter()
            .map(|r| ResourceRefusal {
                resource: r.resource.clone(),
                location: r.location.as_ref().map(ToString::to_string),
                message: r.message.clone(),
            })
            .collect();
        report.drift = plan
            .drift
            .iter()
            .map(|d| ResourceDrift {
                resource: d.resource.clone(),
                message: d.message.clone(),
            })
            .collect();
        let failed = report.actions.iter().filter(|a| !a.ok).count();
        if report.actions.is_empty() {
            tracing::debug!(refusals = report.refusals.len(), "resources match git");
        } else {
            tracing::info!(
                actions = report.actions.len(),
                failed,
                refusals = report.refusals.len(),
                drift = report.drift.len(),
                "resources reconciled"
            );
        }
        report
    }
}

/// A pass that could not even start (no admin client): the report says why.
pub fn unreachable_report(commit: &str, now: u64, error: String) -> ResourcesReport {
    ResourcesReport {
        commit: commit.to_owned(),
        at: now,
        error: Some(error),
        notes: Vec::new(),
        actions: Vec::new(),
        refusals: Vec::new(),
        drift: Vec::new(),
    }
}

/// `GET /v1/resources`: the last pass's report, `null` before the first.
pub(super) async fn get_resources(
    axum::extract::State(coordinator): axum::extract::State<std::sync::Arc<super::Coordinator>>,
) -> axum::Json<Option<ResourcesReport>> {
    axum::Json(coordinator.cluster_scope().resources)
}

#[cfg(test)]
mod tests;
