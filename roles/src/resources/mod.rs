//! The cluster-scope resources the coordinator keeps in Kafka — topics,
//! SCRAM credentials, ACLs and quotas — planned as a pure diff of git
//! against what Kafka reports.
//!
//! [`plan`] takes the model, the [`PasswordDigests`] of the passwords git
//! holds and an [`Observed`] snapshot, and returns a [`ResourcePlan`]: the
//! actions that make Kafka match git in the order to carry them out, what
//! it refuses to do (each at the `file:line:col` to change), and the drift it
//! found. No IO: the caller reads Kafka, plans, carries the actions out and
//! records the digests of the credentials it set.
//!
//! The rules, the safest of Strimzi's, JulieOps' and kafka-gitops':
//!
//! - Only what git declares is managed. A topic or user in Kafka that git
//!   does not list is left alone unless it matches a `resources.prune`
//!   pattern; a topic or user leaves through `delete: true` in git.
//! - Kafka's internal topics (`__*`, or flagged internal by Kafka) and
//!   Connect's storage topics are never created, changed or deleted, even if
//!   a model declares them (validation refuses that already).
//! - The inter-broker and admin users, and the nodes' certificate
//!   principals (`User:<node name>`), are never deleted nor pruned.
//! - Partitions only grow. A decrease or a replication-factor change is
//!   refused at the line that asks for it; the rest of the topic (its
//!   configs) is still reconciled.
//! - Topic configs are git's: a value changed in Kafka is set back, a config
//!   set on the topic in Kafka but not in git is deleted (the topic follows
//!   the broker default again, as `min.insync.replicas` does from
//!   `topic_defaults` when a topic does not set it).
//! - ACLs and quotas of every user in git are reconciled both ways;
//!   bindings of principals git does not list are left alone.
//! - Kafka never returns a password, so a credential is set again when it
//!   is missing, has other iterations than `security.scram_iterations`, or
//!   the caller's recorded [`PasswordDigest`] differs from git's (or there is
//!   no record). Other SCRAM mechanisms of a user in git are deleted: only
//!   SCRAM-SHA-512 logins are kraftops'.
//! - The inter-broker user's password is never changed in place: a changed
//!   password in git is a refusal at its `password_secret`, since brokers
//!   read theirs only at start (the agents refuse such a commit first, see
//!   [`crate::transition`]).
//!
//! Order: topic creations, partition increases and config changes; users'
//! credentials, quotas, added ACLs, then removed ACLs (so a changed rule is
//! never missing in between); deleted users (credentials first, so they
//! cannot log in, then ACLs and quotas); deleted topics last. Within each
//! step, sorted by name: the same inputs give the same plan.

mod kafka;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use desired_state::types::{NamePattern, UserName};
use desired_state::{InFile, Located, Model, Pos, Topic, User, is_internal_topic};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use kafka::*;

use crate::scram::ScramCredential;
use crate::{RenderError, Secrets};

/// The mechanism every kraftops user logs in with.
pub const MECHANISM: ScramMechanism = ScramMechanism::ScramSha512;

const CLUSTER_FILE: &str = "cluster.yaml";

// ------------------------------------------------------------------ passwords

/// A one-way fingerprint of the SCRAM-SHA-512 credential a password makes:
/// SHA-256 over the mechanism, iterations, salt and salted password (the
/// salt is derived from the cluster id and the user, so a digest is bound
/// to both). It reveals no more than the credential Kafka stores, and no
/// password: recovering one means a PBKDF2 search per guess.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PasswordDigest(String);

impl PasswordDigest {
    /// The digest of a credential, 64 hex digits.
    pub fn of(credential: &ScramCredential) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"kraftops-password-digest\0");
        hasher.update(MECHANISM.kafka_name().as_bytes());
        hasher.update(b"\0");
        hasher.update(credential.user.as_bytes());
        hasher.update(b"\0");
        hasher.update(credential.iterations.to_be_bytes());
        hasher.update(&credential.salt);
        hasher.update(&credential.salted_password);
        Self(
            hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        )
    }

    /// A digest as the caller stored it (`as_str`).
    pub fn from_stored(hex: impl Into<String>) -> Self {
        Self(hex.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The digest of every password git holds, by user.
pub type PasswordDigests = BTreeMap<UserName, PasswordDigest>;

/// The digests of the credentials of every user in git not marked for
/// deletion, derived from the decrypted secrets as `--add-scram` and the
/// coordinator derive them (same salt, same iterations). Costs one PBKDF2
/// per user.
pub fn password_digests(model: &Model, secrets: &Secrets) -> Result<PasswordDigests, RenderError> {
    let cluster = &model.cluster;
    model
        .users
        .iter()
        .filter(|u| !*u.delete)
        .map(|u| {
            let name = &*u.password_secret;
            let password = secrets
                .get(name)
                .ok_or_else(|| RenderError::MissingSecret {
                    name: name.to_string(),
                    needed_by: format!("the SCRAM credential of user {}", *u.name),
                })?
                .single_line(name.as_str())?;
            let credential = ScramCredential::derive(
                cluster.kraft_cluster_id.as_str(),
                u.name.as_str(),
                password,
                cluster.security.scram_iterations.value,
            );
            Ok(((*u.name).clone(), PasswordDigest::of(&credential)))
        })
        .collect()
}

// ------------------------------------------------------------------ the plan

/// Where in the repository an action or refusal comes from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SourceLocation {
    /// Relative to the repository root, e.g. `topics/app.yaml`.
    pub file: String,
    pub line: u64,
    pub column: u64,
}

impl SourceLocation {
    /// `None` for a value that was not read from a file (a default).
    fn at(file: &str, pos: Pos) -> Option<Self> {
        (pos.line > 0).then(|| Self {
            file: file.to_owned(),
            line: pos.line,
            column: pos.column,
        })
    }
}

impl fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Why a SCRAM credential is set (again).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CredentialReason {
    /// The user has no SCRAM-SHA-512 credential in Kafka.
    Missing,
    /// Kafka's credential has other iterations than `security.scram_iterations`.
    Iterations { observed: u32, desired: u32 },
    /// The recorded digest differs from git's: the password changed in git.
    PasswordChanged,
    /// There is no record of which password Kafka's credential holds.
    Unrecorded,
}

impl fmt::Display for CredentialReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialReason::Missing => f.write_str("it has none"),
            CredentialReason::Iterations { observed, desired } => {
                write!(f, "{observed} iterations in Kafka, {desired} in git")
            }
            CredentialReason::PasswordChanged => f.write_str("the password changed in git"),
            CredentialReason::Unrecorded => {
                f.write_str("no record of which password Kafka's credential holds")
            }
        }
    }
}

/// Why a topic or user is deleted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeleteReason {
    /// git marks it `delete: true`.
    Marked,
    /// git does not list it and it matches this `resources.prune` pattern.
    Pruned { pattern: String },
}

impl fmt::Display for DeleteReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeleteReason::Marked => f.write_str("marked delete: true in git"),
            DeleteReason::Pruned { pattern } => {
                write!(f, "not in git, matches prune pattern {pattern}")
            }
        }
    }
}

/// One change to Kafka.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Action {
    CreateTopic {
        topic: String,
        partitions: u32,
        replication_factor: u16,
        /// Only the configs git sets on the topic; the rest follow the brokers.
        configs: BTreeMap<String, String>,
    },
    CreatePartitions {
        topic: String,
        from: u32,
        to: u32,
    },
    /// An incremental alter: `set` these, `delete` these (back to the default).
    AlterTopicConfigs {
        topic: String,
        set: BTreeMap<String, String>,
        delete: BTreeSet<String>,
    },
    DeleteTopic {
        topic: String,
        reason: DeleteReason,
    },
    /// Set the user's credential from its password in git.
    UpsertScramCredential {
        user: String,
        mechanism: ScramMechanism,
        iterations: u32,
        reason: CredentialReason,
        /// What to record once the credential is set; `None` when git's
        /// password was not available to the planner.
        password_digest: Option<PasswordDigest>,
    },
    DeleteScramCredential {
        user: String,
        mechanism: ScramMechanism,
    },
    CreateAcl {
        binding: AclBinding,
    },
    DeleteAcl {
        binding: AclBinding,
    },
    /// Set these user quotas and remove those (no limit).
    AlterQuotas {
        user: String,
        set: BTreeMap<String, f64>,
        remove: BTreeSet<String>,
    },
}

impl Action {
    /// Sorts the actions of one step: by the topic or user they are about,
    /// then by kind, then by what they change.
    fn sort_key(&self) -> (&str, u8, String) {
        match self {
            Action::CreateTopic { topic, .. }
            | Action::CreatePartitions { topic, .. }
            | Action::AlterTopicConfigs { topic, .. }
            | Action::DeleteTopic { topic, .. } => (topic, 0, String::new()),
            Action::UpsertScramCredential {
                user, mechanism, ..
            }
            | Action::DeleteScramCredential { user, mechanism } => {
                (user, 0, mechanism.kafka_name().to_owned())
            }
            Action::CreateAcl { binding } | Action::DeleteAcl { binding } => (
                binding.user().unwrap_or(&binding.principal),
                1,
                binding.to_string(),
            ),
            Action::AlterQuotas { user, .. } => (user, 2, String::new()),
        }
    }
}

/// An action with what an operator reads about it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlannedAction {
    pub action: Action,
    /// E.g. `create topic topic-1 (6 partitions, RF 3)`. Never a secret.
    pub description: String,
    /// The declaration that asks for it, when there is one.
    pub source: Option<SourceLocation>,
}

/// Something git asks for that kraftops will not do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// E.g. `topic orders`.
    pub resource: String,
    /// The value to change back.
    pub location: Option<SourceLocation>,
    pub message: String,
}

/// A difference between Kafka and git found on something both have, or
/// something the planner deliberately left alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftNote {
    pub resource: String,
    pub message: String,
}

/// What to do to make Kafka's cluster-scope resources match git.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourcePlan {
    /// In the order to carry them out.
    pub actions: Vec<PlannedAction>,
    pub refusals: Vec<Refusal>,
    pub drift: Vec<DriftNote>,
}

impl ResourcePlan {
    /// Whether Kafka already matches git as far as kraftops will take it.
    pub fn is_converged(&self) -> bool {
        self.actions.is_empty()
    }
}

/// The steps of a plan, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    CreateTopics,
    GrowPartitions,
    TopicConfigs,
    Credentials,
    Quotas,
    AddAcls,
    RemoveAcls,
    DeleteUsers,
    DeleteTopics,
}

/// Plans the changes that make Kafka's topics, SCRAM users, ACLs and quotas
/// match the model. `passwords` are the digests of git's passwords
/// ([`password_digests`]); a user missing from it gets a credential only
/// when Kafka's is missing or has other iterations, and a drift note says
/// its password could not be compared.
pub fn plan(model: &Model, passwords: &PasswordDigests, observed: &Observed) -> ResourcePlan {
    let mut planner = Planner {
        model,
        observed,
        steps: BTreeMap::new(),
        refusals: Vec::new(),
        drift: Vec::new(),
    };
    planner.topics();
    planner.users(passwords);
    planner.finish()
}

struct Planner<'a> {
    model: &'a Model,
    observed: &'a Observed,
    steps: BTreeMap<Step, Vec<PlannedAction>>,
    refusals: Vec<Refusal>,
    drift: Vec<DriftNote>,
}

impl<'a> Planner<'a> {
    fn push(
        &mut self,
        step: Step,
        action: Action,
        description: String,
        source: Option<SourceLocation>,
    ) {
        self.steps.entry(step).or_default().push(PlannedAction {
            action,
            description,
            source,
        });
    }

    fn note(&mut self, resource: String, message: String) {
        self.drift.push(DriftNote { resource, message });
    }

    fn finish(self) -> ResourcePlan {
        let mut actions = Vec::new();
        for (_, mut step) in self.steps {
            step.sort_by(|a, b| a.action.sort_key().cmp(&b.action.sort_key()));
            actions.extend(step);
        }
        let mut refusals = self.refusals;
        refusals.sort_by(|a, b| (&a.resource, &a.location).cmp(&(&b.resource, &b.location)));
        let mut drift = self.drift;
        drift.sort_by(|a, b| a.resource.cmp(&b.resource));
        ResourcePlan {
            actions,
            refusals,
            drift,
        }
    }

    /// Why kraftops never touches this topic, if it does not.
    fn untouchable_topic(&self, name: &str) -> Option<String> {
        if is_internal_topic(name) {
            return Some("internal to Kafka (names starting with __ are reserved)".to_owned());
        }
        if self.observed.topics.get(name).is_some_and(|t| t.internal) {
            return Some("internal to Kafka (Kafka flags it so)".to_owned());
        }
        self.model
            .connect_storage_topics()
            .into_iter()
            .find(|(_, t)| t.as_str() == name)
            .map(|(key, _)| format!("Kafka Connect's storage topic ({key})"))
    }

    // ---------------------------------------------------------------- topics

    fn topics(&mut self) {
        let model = self.model;
        let mut declared: BTreeMap<&str, &InFile<Topic>> = BTreeMap::new();
        for t in &model.topics {
            // Validation refuses a topic declared twice; keep the first.
            declared.entry(t.name.as_str()).or_insert(t);
        }
        for (&name, &t) in &declared {
            if let Some(why) = self.untouchable_topic(name) {
                self.note(
                    format!("topic {name}"),
                    format!(
                        "declared at {}:{} but {why}; kraftops leaves it alone",
                        t.file, t.name.pos
                    ),
                );
                continue;
            }
            match self.observed.topics.get(name) {
                None if *t.delete => {}
                None => self.create_topic(t),
                Some(_) if *t.delete => {
                    let source = SourceLocation::at(&t.file, t.delete.pos);
                    self.push(
                        Step::DeleteTopics,
                        Action::DeleteTopic {
                            topic: name.to_owned(),
                            reason: DeleteReason::Marked,
                        },
                        format!("delete topic {name} ({})", DeleteReason::Marked),
                        source,
                    );
                }
                Some(observed) => self.update_topic(t, observed),
            }
        }
        let prune = &model.cluster.resources.prune.topics;
        for name in self.observed.topics.keys() {
            if declared.contains_key(name.as_str()) || self.untouchable_topic(name).is_some() {
                continue;
            }
            if let Some(pattern) = prune.iter().find(|p| p.matches(name)) {
                let reason = DeleteReason::Pruned {
                    pattern: pattern.to_string(),
                };
                let description = format!("delete topic {name} ({reason})");
                self.push(
                    Step::DeleteTopics,
                    Action::DeleteTopic {
                        topic: name.clone(),
                        reason,
                    },
                    description,
                    SourceLocation::at(CLUSTER_FILE, pattern.pos),
                );
            }
        }
    }

    fn replication_factor(&self, t: &Topic) -> u16 {
        t.replication_factor.as_ref().map_or(
            *self.model.cluster.topic_defaults.replication_factor,
            |rf| rf.value,
        )
    }

    fn create_topic(&mut self, t: &InFile<Topic>) {
        let name = t.name.as_str();
        let rf = self.replication_factor(t);
        let configs = desired_configs(t);
        let mut description = format!(
            "create topic {name} ({} partition{}, RF {rf}",
            *t.partitions,
            if *t.partitions == 1 { "" } else { "s" }
        );
        if !configs.is_empty() {
            description.push_str("; ");
            description.push_str(&join_settings(&configs));
        }
        description.push(')');
        self.push(
            Step::CreateTopics,
            Action::CreateTopic {
                topic: name.to_owned(),
                partitions: *t.partitions,
                replication_factor: rf,
                configs,
            },
            description,
            SourceLocation::at(&t.file, t.name.pos),
        );
    }

    fn update_topic(&mut self, t: &InFile<Topic>, observed: &ObservedTopic) {
        let name = t.name.as_str();
        let file = t.file.as_str();
        let resource = format!("topic {name}");
        let partitions = *t.partitions;
        if partitions > observed.partitions {
            self.push(
                Step::GrowPartitions,
                Action::CreatePartitions {
                    topic: name.to_owned(),
                    from: observed.partitions,
                    to: partitions,
                },
                format!(
                    "add partitions to topic {name}: {} → {partitions}",
                    observed.partitions
                ),
                SourceLocation::at(file, t.partitions.pos),
            );
        } else if partitions < observed.partitions {
            self.refusals.push(Refusal {
                resource: resource.clone(),
                location: SourceLocation::at(file, t.partitions.pos),
                message: format!(
                    "partitions {partitions} is fewer than the {} topic {name} has in Kafka; Kafka cannot remove partitions. Set partitions back to {}, or create a new topic",
                    observed.partitions, observed.partitions
                ),
            });
        }
        let rf = self.replication_factor(t);
        if rf != observed.replication_factor {
            let (location, from) = match &t.replication_factor {
                Some(explicit) => (SourceLocation::at(file, explicit.pos), ""),
                None => (
                    SourceLocation::at(file, t.name.pos),
                    " (from topic_defaults.replication_factor)",
                ),
            };
            self.refusals.push(Refusal {
                resource: resource.clone(),
                location,
                message: format!(
                    "replication factor {rf}{from} differs from the {} topic {name} has in Kafka; changing it needs a partition reassignment, which kraftops does not do. Set replication_factor: {}",
                    observed.replication_factor, observed.replication_factor
                ),
            });
        }
        let desired = desired_configs(t);
        let set: BTreeMap<String, String> = desired
            .iter()
            .filter(|(k, v)| observed.configs.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let delete: BTreeSet<String> = observed
            .configs
            .keys()
            .filter(|k| !desired.contains_key(*k))
            .cloned()
            .collect();
        if set.is_empty() && delete.is_empty() {
            return;
        }
        let mut differences = Vec::new();
        for (key, value) in &set {
            match observed.configs.get(key) {
                Some(was) => differences.push(format!("{key} is {was} in Kafka, {value} in git")),
                None => differences.push(format!("{key} is not set in Kafka, {value} in git")),
            }
        }
        for key in &delete {
            differences.push(format!(
                "{key} is set in Kafka ({}), not in git",
                observed.configs[key]
            ));
        }
        self.note(resource, differences.join("; "));
        let mut parts = Vec::new();
        if !set.is_empty() {
            parts.push(format!("set {}", join_settings(&set)));
        }
        if !delete.is_empty() {
            parts.push(format!(
                "remove {} (back to the broker default)",
                delete.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        self.push(
            Step::TopicConfigs,
            Action::AlterTopicConfigs {
                topic: name.to_owned(),
                set,
                delete,
            },
            format!("configs of topic {name}: {}", parts.join("; ")),
            SourceLocation::at(file, t.name.pos),
        );
    }

    // ----------------------------------------------------------------- users

    /// Principals kraftops never deletes, with why.
    fn protected_principals(&self) -> BTreeMap<&'a str, String> {
        let mut out = BTreeMap::new();
        for (key, user) in self.model.protected_users() {
            out.insert(user.as_str(), format!("the {key}"));
        }
        for node in self.model.nodes.iter().filter(|n| n.role.is_kafka_server()) {
            out.entry(node.name.as_str())
                .or_insert_with(|| format!("the certificate principal of node {}", *node.name));
        }
        out
    }

    fn users(&mut self, passwords: &PasswordDigests) {
        let model = self.model;
        let mut in_git: BTreeMap<&str, &InFile<User>> = BTreeMap::new();
        for u in &model.users {
            in_git.entry(u.name.as_str()).or_insert(u);
        }
        let protected = self.protected_principals();
        let mut deleted: BTreeMap<&str, (DeleteReason, Option<SourceLocation>)> = BTreeMap::new();
        for (&name, &u) in &in_git {
            if !*u.delete {
                self.managed_user(u, passwords.get(&*u.name));
            } else if let Some(why) = protected.get(name) {
                self.note(
                    format!("user {name}"),
                    format!("marked for deletion but it is {why}; kraftops never deletes it"),
                );
            } else {
                deleted.insert(
                    name,
                    (
                        DeleteReason::Marked,
                        SourceLocation::at(&u.file, u.delete.pos),
                    ),
                );
            }
        }
        let observed = self.observed;
        let prune = &model.cluster.resources.prune.users;
        for name in observed.known_users() {
            if in_git.contains_key(name) {
                continue;
            }
            let Some(pattern) = prune.iter().find(|p| p.matches(name)) else {
                continue;
            };
            if let Some(why) = protected.get(name) {
                self.note(
                    format!("user {name}"),
                    format!(
                        "matches prune pattern {} but it is {why}; kraftops never deletes it",
                        **pattern
                    ),
                );
                continue;
            }
            deleted.insert(name, pruned(pattern));
        }
        for (name, (reason, source)) in deleted {
            self.delete_user(name, &reason, source);
        }
    }

    fn managed_user(&mut self, u: &InFile<User>, digest: Option<&PasswordDigest>) {
        let name = u.name.as_str();
        let file = u.file.as_str();
        let source = SourceLocation::at(file, u.name.pos);
        let observed = self.observed;
        let credentials = observed
            .scram_users
            .get(name)
            .map_or(&[][..], Vec::as_slice);
        let desired_iterations = self.model.cluster.security.scram_iterations.value;
        let current = credentials.iter().find(|c| c.mechanism == MECHANISM);
        let reason = match current {
            None => Some(CredentialReason::Missing),
            Some(c) if c.iterations != desired_iterations => Some(CredentialReason::Iterations {
                observed: c.iterations,
                desired: desired_iterations,
            }),
            Some(_) => match (digest, observed.password_digests.get(name)) {
                (Some(git), Some(recorded)) if git == recorded => None,
                (Some(_), Some(_)) => Some(CredentialReason::PasswordChanged),
                (Some(_), None) => Some(CredentialReason::Unrecorded),
                (None, _) => {
                    self.note(
                        format!("user {name}"),
                        "its password in git was not available to compare; a rotation would go unnoticed".to_owned(),
                    );
                    None
                }
            },
        };
        // Brokers read the inter-broker password only at start, so a new
        // credential set now locks out every broker not yet restarted with
        // it (the agents refuse such a commit; this is the second line).
        // The admin user needs no such rule: the coordinator is logged in
        // with git's password, so Kafka already holds it.
        let inter_broker = &self.model.cluster.security.inter_broker_user;
        if reason == Some(CredentialReason::PasswordChanged) && **inter_broker == *u.name {
            let secret = u.password_secret.as_str();
            self.refusals.push(Refusal {
                resource: format!("user {name}"),
                location: SourceLocation::at(file, u.password_secret.pos),
                message: format!(
                    "the password of user {name}, the security.inter_broker_user, changed in git (secrets/{secret}.age): kraftops does not change it in place, since brokers that still hold the other password could no longer open inter-broker connections; put the previous password back, or switch security.inter_broker_user to a new user defined in an earlier commit"
                ),
            });
        } else if let Some(reason) = reason {
            let description = format!(
                "set the {MECHANISM} credential of user {name} ({desired_iterations} iterations; {reason})"
            );
            self.push(
                Step::Credentials,
                Action::UpsertScramCredential {
                    user: name.to_owned(),
                    mechanism: MECHANISM,
                    iterations: desired_iterations,
                    reason,
                    password_digest: digest.cloned(),
                },
                description,
                source.clone(),
            );
        }
        for extra in credentials.iter().filter(|c| c.mechanism != MECHANISM) {
            self.note(
                format!("user {name}"),
                format!(
                    "has a {} credential in Kafka; kraftops users log in with {MECHANISM} only",
                    extra.mechanism
                ),
            );
            self.push(
                Step::Credentials,
                Action::DeleteScramCredential {
                    user: name.to_owned(),
                    mechanism: extra.mechanism,
                },
                format!("delete the {} credential of user {name}", extra.mechanism),
                source.clone(),
            );
        }
        self.user_acls(u, &source);
        self.user_quotas(u, &source);
    }

    fn user_acls(&mut self, u: &InFile<User>, user_source: &Option<SourceLocation>) {
        let name = u.name.as_str();
        let desired = desired_bindings(u);
        let present: BTreeSet<&AclBinding> = self
            .observed
            .acls
            .iter()
            .filter(|b| b.user() == Some(name))
            .collect();
        for (binding, pos) in &desired {
            if !present.contains(binding) {
                self.push(
                    Step::AddAcls,
                    Action::CreateAcl {
                        binding: binding.clone(),
                    },
                    format!("add ACL {binding}"),
                    SourceLocation::at(&u.file, *pos),
                );
            }
        }
        for binding in present {
            if !desired.contains_key(binding) {
                self.note(
                    format!("user {name}"),
                    format!("ACL {binding} is in Kafka, not in git"),
                );
                self.push(
                    Step::RemoveAcls,
                    Action::DeleteAcl {
                        binding: binding.clone(),
                    },
                    format!("remove ACL {binding} (not in git)"),
                    user_source.clone(),
                );
            }
        }
    }

    fn user_quotas(&mut self, u: &InFile<User>, user_source: &Option<SourceLocation>) {
        let name = u.name.as_str();
        let desired: BTreeMap<String, f64> = u
            .quotas
            .as_ref()
            .map(|q| {
                q.entries()
                    .into_iter()
                    .map(|(key, value, _)| (key.to_owned(), value))
                    .collect()
            })
            .unwrap_or_default();
        let empty = BTreeMap::new();
        let present = self.observed.quotas.get(name).unwrap_or(&empty);
        let set: BTreeMap<String, f64> = desired
            .iter()
            .filter(|(k, v)| present.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let remove: BTreeSet<String> = present
            .keys()
            .filter(|k| !desired.contains_key(*k))
            .cloned()
            .collect();
        if set.is_empty() && remove.is_empty() {
            return;
        }
        let mut differences = Vec::new();
        for (key, value) in &set {
            if let Some(was) = present.get(key) {
                differences.push(format!("{key} is {was} in Kafka, {value} in git"));
            }
        }
        for key in &remove {
            differences.push(format!("{key} is {} in Kafka, not in git", present[key]));
        }
        if !differences.is_empty() {
            self.note(format!("user {name}"), differences.join("; "));
        }
        let source = u
            .quotas
            .as_ref()
            .and_then(|q| SourceLocation::at(&u.file, q.pos))
            .or_else(|| user_source.clone());
        let description = quota_description(name, &set, &remove);
        self.push(
            Step::Quotas,
            Action::AlterQuotas {
                user: name.to_owned(),
                set,
                remove,
            },
            description,
            source,
        );
    }

    fn delete_user(&mut self, name: &str, reason: &DeleteReason, source: Option<SourceLocation>) {
        let observed = self.observed;
        let why = format!("user {reason}");
        for c in observed.scram_users.get(name).into_iter().flatten() {
            self.push(
                Step::DeleteUsers,
                Action::DeleteScramCredential {
                    user: name.to_owned(),
                    mechanism: c.mechanism,
                },
                format!(
                    "delete the {} credential of user {name} ({why})",
                    c.mechanism
                ),
                source.clone(),
            );
        }
        for binding in observed.acls.iter().filter(|b| b.user() == Some(name)) {
            self.push(
                Step::DeleteUsers,
                Action::DeleteAcl {
                    binding: binding.clone(),
                },
                format!("remove ACL {binding} ({why})"),
                source.clone(),
            );
        }
        if let Some(quotas) = observed.quotas.get(name).filter(|q| !q.is_empty()) {
            let remove: BTreeSet<String> = quotas.keys().cloned().collect();
            let description = format!(
                "{} ({why})",
                quota_description(name, &BTreeMap::new(), &remove)
            );
            self.push(
                Step::DeleteUsers,
                Action::AlterQuotas {
                    user: name.to_owned(),
                    set: BTreeMap::new(),
                    remove,
                },
                description,
                source.clone(),
            );
        }
    }
}

fn pruned(pattern: &Located<NamePattern>) -> (DeleteReason, Option<SourceLocation>) {
    (
        DeleteReason::Pruned {
            pattern: pattern.to_string(),
        },
        SourceLocation::at(CLUSTER_FILE, pattern.pos),
    )
}

/// The configs git sets on a topic, as Kafka takes them.
fn desired_configs(t: &Topic) -> BTreeMap<String, String> {
    t.config
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.as_str().to_owned()))
        .collect()
}

/// A user's ACLs in git as Kafka bindings, each with the position of the
/// ACL it comes from (the first, if two ACLs grant the same).
pub fn desired_bindings(u: &User) -> BTreeMap<AclBinding, Pos> {
    let principal = format!("{USER_PRINCIPAL_PREFIX}{}", *u.name);
    let mut out = BTreeMap::new();
    for acl in &u.acls {
        let resource_type = ResourceType::from(acl.resource);
        let (resource_name, pattern_type) = if resource_type == ResourceType::Cluster {
            (CLUSTER_RESOURCE_NAME.to_owned(), PatternType::Literal)
        } else {
            (acl.name.as_str().to_owned(), PatternType::from(acl.pattern))
        };
        for operation in &acl.operations {
            out.entry(AclBinding {
                principal: principal.clone(),
                resource_type,
                resource_name: resource_name.clone(),
                pattern_type,
                operation: Operation::from(operation.value),
                permission: Permission::from(acl.permission),
                host: acl.host.as_str().to_owned(),
            })
            .or_insert(acl.pos);
        }
    }
    out
}

fn join_settings<V: fmt::Display>(settings: &BTreeMap<String, V>) -> String {
    settings
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn quota_description(user: &str, set: &BTreeMap<String, f64>, remove: &BTreeSet<String>) -> String {
    let mut parts = Vec::new();
    if !set.is_empty() {
        parts.push(format!("set {}", join_settings(set)));
    }
    if !remove.is_empty() {
        parts.push(format!(
            "remove {}",
            remove.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    format!("quotas of user {user}: {}", parts.join("; "))
}

#[cfg(test)]
mod tests;
