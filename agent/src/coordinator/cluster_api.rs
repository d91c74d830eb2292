//! The cluster REST API on the coordinator (`docs/cluster-api.openapi.yaml`):
//! health, brokers, topics, consumer groups with their lag, and connectors,
//! read with the coordinator's one long-lived admin client (published by the
//! cluster thread in [`ClusterScope`]), and the head commit's model for what
//! git declares.
//!
//! Writes go through git. The coordinator has no push access to the
//! desired-state repository, so `POST`/`PUT`/`DELETE /topics…` validate the
//! body and answer 409 `edit_git` with the file to edit and the YAML to
//! write; the cluster thread applies it once the commit lands.
//!
//! Kafka calls block, so they run on the blocking pool. Every error is
//! `{"error": {"code": "<stable_snake_code>", "message": "..."}}`; a Kafka
//! failure's cause goes to the log, not to the caller.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use desired_state::model::Topic;
use desired_state::types::{PropertyKey, PropertyValue, TopicName};
use desired_state::{Model, Role};
use serde::{Deserialize, Serialize};

use super::{ClusterScope, Coordinator};
use crate::connect::ConnectorsReport;
use crate::kafka::{
    ClusterAdmin, GroupDescription, ItemResults, KafkaError, TopicMetadata, TopicPartition,
};

type Shared = State<Arc<Coordinator>>;

/// The routes of the cluster API, merged into the coordinator's router.
pub(crate) fn routes() -> Router<Arc<Coordinator>> {
    Router::new()
        .route("/health", get(health))
        .route("/brokers", get(brokers))
        .route("/topics", get(list_topics).post(post_topic))
        .route(
            "/topics/{name}",
            get(get_topic).put(put_topic).delete(delete_topic),
        )
        .route("/consumer-groups", get(list_groups))
        .route("/consumer-groups/{id}", get(get_group))
        .route("/connectors", get(connectors))
}

// ------------------------------------------------------------------ errors

/// Every error body: `{"error": {"code", "message"}}`, plus `edit` for
/// `edit_git`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edit: Option<GitEdit>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable: `not_ready`, `kafka_unavailable`, `not_found`,
    /// `invalid_body`, `invalid_path`, `internal_topic`, `edit_git`,
    /// `internal`.
    pub code: String,
    pub message: String,
}

/// What to change in the desired-state repository instead of a write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitEdit {
    /// `topics/<file>.yaml` where the topic is declared, or `topics/` for a
    /// new declaration (any file under it).
    pub file: String,
    /// `add`, `change` or `mark_for_deletion`.
    pub action: String,
    /// The topic's entry to write into that file, as YAML.
    pub yaml: String,
}

/// A refused or failed cluster API call.
#[derive(Debug)]
pub struct ApiFailure {
    status: StatusCode,
    /// Boxed: every handler returns `Result<_, ApiFailure>`.
    body: Box<ErrorBody>,
}

impl ApiFailure {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: Box::new(ErrorBody {
                error: ErrorDetail {
                    code: code.to_owned(),
                    message: message.into(),
                },
                edit: None,
            }),
        }
    }

    fn not_ready() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the coordinator has no Kafka admin client yet (the cluster thread has not loaded a commit, or cannot build the client)",
        )
    }

    fn no_head() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the coordinator has not loaded a commit of the desired-state repository yet",
        )
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    fn invalid_body(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_body", message)
    }

    fn kafka(api: &str, error: &KafkaError) -> Self {
        tracing::warn!(api, error = %crate::error_chain(error), "cluster API: Kafka call failed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "kafka_unavailable",
            format!("Kafka did not answer {api}; the coordinator's log has the cause"),
        )
    }

    fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }

    fn edit_git(message: String, edit: GitEdit) -> Self {
        let mut failure = Self::new(StatusCode::CONFLICT, "edit_git", message);
        failure.body.edit = Some(edit);
        failure
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn body(&self) -> &ErrorBody {
        &self.body
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        (self.status, Json(*self.body)).into_response()
    }
}

fn path_value(path: Result<Path<String>, PathRejection>) -> Result<String, ApiFailure> {
    path.map(|Path(v)| v).map_err(|rejection| {
        ApiFailure::new(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            rejection.body_text(),
        )
    })
}

/// The admin client and the head's model, as the cluster thread last
/// published them.
fn admin_of(scope: &ClusterScope) -> Result<Arc<dyn ClusterAdmin>, ApiFailure> {
    scope.admin.clone().ok_or_else(ApiFailure::not_ready)
}

/// Runs `call` with the admin client on the blocking pool.
async fn kafka<T: Send + 'static>(
    admin: Arc<dyn ClusterAdmin>,
    call: impl FnOnce(&dyn ClusterAdmin) -> Result<T, ApiFailure> + Send + 'static,
) -> Result<T, ApiFailure> {
    tokio::task::spawn_blocking(move || call(admin.as_ref()))
        .await
        .map_err(|error| {
            tracing::error!(%error, "cluster API: a Kafka call panicked");
            ApiFailure::internal()
        })?
}

// ------------------------------------------------------------------ what git declares

/// What the head commit declares, as the API needs it.
#[derive(Clone, Debug, Default)]
struct Declared {
    commit: Option<String>,
    /// Broker node id → node name.
    brokers: BTreeMap<i32, String>,
    controllers: BTreeMap<i32, String>,
    /// Topic name → file.
    topics: BTreeMap<String, String>,
    has_connect: bool,
}

impl Declared {
    fn of(head: Option<&(String, Arc<Model>)>) -> Self {
        let Some((commit, model)) = head else {
            return Self::default();
        };
        let ids = |role: Role| {
            model
                .nodes_with_role(role)
                .filter_map(|n| {
                    let id = i32::try_from(n.node_id.as_ref()?.value).ok()?;
                    Some((id, n.name.to_string()))
                })
                .collect::<BTreeMap<_, _>>()
        };
        Self {
            commit: Some(commit.clone()),
            brokers: ids(Role::Broker),
            controllers: ids(Role::Controller),
            topics: model
                .topics
                .iter()
                .map(|t| (t.name.to_string(), t.file.clone()))
                .collect(),
            has_connect: model.nodes_with_role(Role::Connect).next().is_some(),
        }
    }
}

/// Kafka's own topics: flagged internal by Kafka, or named `__*`.
fn is_internal(name: &str, flagged: bool) -> bool {
    flagged || name.starts_with("__")
}

// ------------------------------------------------------------------ GET /health

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok` (200), `degraded` or `unavailable` (503).
    pub status: String,
    /// What makes it not `ok`, one sentence each.
    pub problems: Vec<String>,
    pub coordinator: CoordinatorHealth,
    pub kafka: KafkaHealth,
    pub brokers: BrokersHealth,
    pub controllers: ControllersHealth,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinatorHealth {
    pub up: bool,
    /// The head commit the coordinator follows.
    pub head: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaHealth {
    pub reachable: bool,
    pub cluster_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokersHealth {
    /// Brokers in `nodes.yaml` at the head commit (`null` before a commit).
    pub declared: Option<usize>,
    /// Registered and unfenced.
    pub online: usize,
    pub fenced: usize,
    /// Declared brokers that are not online, by node id.
    pub missing: Vec<i32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllersHealth {
    pub declared: Option<usize>,
    /// The active controller (the metadata quorum's leader); `null` when
    /// the quorum could not be described or has no leader.
    pub leader_id: Option<i32>,
    /// The quorum's voters, by node id (empty when not described).
    pub voters: Vec<i32>,
    /// Declared controllers that are not voters.
    pub missing: Vec<i32>,
    /// Why the quorum could not be described, if it could not.
    pub error: Option<String>,
}

async fn health(State(coordinator): Shared) -> Response {
    let scope = coordinator.cluster_scope();
    let declared = Declared::of(scope.head.as_ref());
    let mut health = Health {
        status: "unavailable".to_owned(),
        problems: Vec::new(),
        coordinator: CoordinatorHealth {
            up: true,
            head: declared.commit.clone(),
        },
        kafka: KafkaHealth {
            reachable: false,
            cluster_id: None,
        },
        brokers: BrokersHealth {
            declared: declared.commit.as_ref().map(|_| declared.brokers.len()),
            online: 0,
            fenced: 0,
            missing: declared.brokers.keys().copied().collect(),
        },
        controllers: ControllersHealth {
            declared: declared.commit.as_ref().map(|_| declared.controllers.len()),
            leader_id: None,
            voters: Vec::new(),
            missing: Vec::new(),
            error: None,
        },
    };
    let Some(admin) = scope.admin.clone() else {
        health
            .problems
            .push(ApiFailure::not_ready().body.error.message);
        return (StatusCode::SERVICE_UNAVAILABLE, Json(health)).into_response();
    };
    let answers = kafka(admin, |admin| {
        let cluster = admin.describe_cluster();
        let quorum = cluster.as_ref().ok().map(|_| admin.describe_quorum());
        Ok((cluster, quorum))
    })
    .await;
    let (cluster, quorum) = match answers {
        Ok(answers) => answers,
        Err(failure) => return failure.into_response(),
    };
    let cluster = match cluster {
        Ok(c) => c,
        Err(e) => {
            let failure = ApiFailure::kafka("DescribeCluster", &e);
            health.problems.push(failure.body.error.message);
            return (StatusCode::SERVICE_UNAVAILABLE, Json(health)).into_response();
        }
    };
    health.kafka = KafkaHealth {
        reachable: true,
        cluster_id: Some(cluster.cluster_id.clone()),
    };
    let online: BTreeSet<i32> = cluster
        .nodes
        .iter()
        .filter(|n| !n.fenced)
        .map(|n| n.id)
        .collect();
    health.brokers.online = online.len();
    health.brokers.fenced = cluster.nodes.iter().filter(|n| n.fenced).count();
    health.brokers.missing = declared
        .brokers
        .keys()
        .filter(|id| !online.contains(id))
        .copied()
        .collect();
    for id in &health.brokers.missing {
        let name = declared.brokers.get(id).map_or("", String::as_str);
        health
            .problems
            .push(format!("broker {id} ({name}) is not online"));
    }
    if declared.commit.is_some() {
        for node in cluster
            .nodes
            .iter()
            .filter(|n| !declared.brokers.contains_key(&n.id))
        {
            health.problems.push(format!(
                "broker {} is registered but not declared in nodes.yaml",
                node.id
            ));
        }
    }
    match quorum {
        Some(Ok(q)) => {
            health.controllers.voters = q.voters.iter().map(|v| v.replica_id).collect();
            if q.leader_id >= 0 {
                health.controllers.leader_id = Some(q.leader_id);
            } else {
                health
                    .problems
                    .push("the metadata quorum has no leader".to_owned());
            }
            health.controllers.missing = declared
                .controllers
                .keys()
                .filter(|id| !health.controllers.voters.contains(id))
                .copied()
                .collect();
            for id in &health.controllers.missing {
                health
                    .problems
                    .push(format!("controller {id} is not a voter of the quorum"));
            }
        }
        Some(Err(e)) => {
            tracing::warn!(error = %crate::error_chain(&e), "cluster API: DescribeQuorum failed");
            health.controllers.error =
                Some("the metadata quorum could not be described".to_owned());
        }
        None => {}
    }
    let status = if health.problems.is_empty() {
        health.status = "ok".to_owned();
        StatusCode::OK
    } else {
        health.status = "degraded".to_owned();
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(health)).into_response()
}

// ------------------------------------------------------------------ GET /brokers

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerList {
    pub cluster_id: String,
    /// The metadata quorum's leader: the active controller. In KRaft mode
    /// a broker is never the controller unless it also runs as one
    /// (combined mode); `null` when the quorum could not be described.
    pub active_controller_id: Option<i32>,
    pub brokers: Vec<BrokerView>,
    pub count: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerView {
    pub id: i32,
    /// The node's name in `nodes.yaml`, when declared.
    pub node: Option<String>,
    /// `null` for a declared broker Kafka does not know.
    pub host: Option<String>,
    pub port: Option<u16>,
    /// `host:port`.
    pub address: Option<String>,
    pub rack: Option<String>,
    /// Registered and unfenced.
    pub online: bool,
    pub fenced: bool,
    pub declared: bool,
    /// This node id leads the metadata quorum (combined mode only).
    pub is_active_controller: bool,
}

async fn brokers(State(coordinator): Shared) -> Result<Json<BrokerList>, ApiFailure> {
    let scope = coordinator.cluster_scope();
    let declared = Declared::of(scope.head.as_ref());
    let admin = admin_of(&scope)?;
    let (cluster, leader) = kafka(admin, |admin| {
        let cluster = admin
            .describe_cluster()
            .map_err(|e| ApiFailure::kafka("DescribeCluster", &e))?;
        let leader = match admin.describe_quorum() {
            Ok(q) if q.leader_id >= 0 => Some(q.leader_id),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "cluster API: DescribeQuorum failed");
                None
            }
        };
        Ok((cluster, leader))
    })
    .await?;
    let mut brokers: Vec<BrokerView> = cluster
        .nodes
        .iter()
        .map(|n| BrokerView {
            id: n.id,
            node: declared.brokers.get(&n.id).cloned(),
            host: Some(n.host.clone()),
            port: Some(n.port),
            address: Some(format!("{}:{}", n.host, n.port)),
            rack: n.rack.clone(),
            online: !n.fenced,
            fenced: n.fenced,
            declared: declared.brokers.contains_key(&n.id),
            is_active_controller: leader == Some(n.id),
        })
        .collect();
    for (id, name) in &declared.brokers {
        if !brokers.iter().any(|b| b.id == *id) {
            brokers.push(BrokerView {
                id: *id,
                node: Some(name.clone()),
                host: None,
                port: None,
                address: None,
                rack: None,
                online: false,
                fenced: false,
                declared: true,
                is_active_controller: false,
            });
        }
    }
    brokers.sort_by_key(|b| b.id);
    Ok(Json(BrokerList {
        cluster_id: cluster.cluster_id,
        active_controller_id: leader,
        count: brokers.len(),
        brokers,
    }))
}

// ------------------------------------------------------------------ GET /topics

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicList {
    pub topics: Vec<TopicSummary>,
    pub count: usize,
    /// Declared in git at the head commit, not (yet) in Kafka.
    pub declared_not_in_kafka: Vec<DeclaredTopicRef>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclaredTopicRef {
    pub name: String,
    pub file: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSummary {
    pub name: String,
    /// Kafka's own (`__consumer_offsets`, `__*`): never managed.
    pub internal: bool,
    /// Declared in git at the head commit.
    pub managed: bool,
    /// The file declaring it, e.g. `topics/app.yaml`.
    pub declared_in: Option<String>,
    pub partitions: usize,
    /// The most replicas any partition has.
    pub replication_factor: usize,
    /// Partitions with fewer in-sync replicas than replicas.
    pub under_replicated: usize,
    /// Partitions without a leader.
    pub offline: usize,
}

fn summary(topic: &TopicMetadata, declared: &Declared) -> TopicSummary {
    let declared_in = declared.topics.get(&topic.name).cloned();
    TopicSummary {
        name: topic.name.clone(),
        internal: is_internal(&topic.name, topic.internal),
        managed: declared_in.is_some(),
        declared_in,
        partitions: topic.partitions.len(),
        replication_factor: topic
            .partitions
            .iter()
            .map(|p| p.replicas.len())
            .max()
            .unwrap_or(0),
        under_replicated: topic
            .partitions
            .iter()
            .filter(|p| p.isr.len() < p.replicas.len())
            .count(),
        offline: topic.partitions.iter().filter(|p| p.leader < 0).count(),
    }
}

/// `GET /topics`, also for the status page.
pub async fn topic_list(coordinator: &Coordinator) -> Result<TopicList, ApiFailure> {
    let scope = coordinator.cluster_scope();
    let declared = Declared::of(scope.head.as_ref());
    let admin = admin_of(&scope)?;
    let metadata = kafka(admin, |admin| {
        admin
            .metadata()
            .map_err(|e| ApiFailure::kafka("Metadata", &e))
    })
    .await?;
    let mut topics: Vec<TopicSummary> = metadata
        .topics
        .iter()
        .map(|t| summary(t, &declared))
        .collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    let declared_not_in_kafka = declared
        .topics
        .iter()
        .filter(|(name, _)| !topics.iter().any(|t| t.name == **name))
        .map(|(name, file)| DeclaredTopicRef {
            name: name.clone(),
            file: file.clone(),
        })
        .collect();
    Ok(TopicList {
        count: topics.len(),
        topics,
        declared_not_in_kafka,
    })
}

async fn list_topics(State(coordinator): Shared) -> Result<Json<TopicList>, ApiFailure> {
    topic_list(&coordinator).await.map(Json)
}

// ------------------------------------------------------------------ GET /topics/{name}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicDetail {
    pub name: String,
    pub internal: bool,
    pub managed: bool,
    pub declared_in: Option<String>,
    pub partition_count: usize,
    pub replication_factor: usize,
    pub under_replicated: usize,
    pub offline: usize,
    pub partitions: Vec<PartitionView>,
    /// The topic's configs as Kafka reports them (sensitive ones left
    /// out: Kafka does not return their values).
    pub configs: BTreeMap<String, String>,
    /// The declaration at the head commit, when managed.
    pub declared: Option<DeclaredTopic>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionView {
    pub partition: i32,
    /// `null` when the partition has no leader.
    pub leader: Option<i32>,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline_replicas: Vec<i32>,
    pub under_replicated: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclaredTopic {
    pub partitions: u32,
    /// `null`: the cluster's `topic_defaults.replication_factor`.
    pub replication_factor: Option<u16>,
    pub config: BTreeMap<String, String>,
}

fn declared_topic<'m>(model: Option<&'m Model>, name: &str) -> Option<(&'m str, &'m Topic)> {
    model?
        .topics
        .iter()
        .find(|t| t.name.as_str() == name)
        .map(|t| (t.file.as_str(), &**t))
}

fn declared_view(topic: &Topic) -> DeclaredTopic {
    DeclaredTopic {
        partitions: topic.partitions.value,
        replication_factor: topic.replication_factor.as_ref().map(|r| r.value),
        config: topic
            .config
            .iter()
            .map(|(k, v)| (k.to_string(), v.value.as_str().to_owned()))
            .collect(),
    }
}

async fn get_topic(
    State(coordinator): Shared,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<TopicDetail>, ApiFailure> {
    let name = path_value(name)?;
    let scope = coordinator.cluster_scope();
    let declared = Declared::of(scope.head.as_ref());
    let model = scope.head.as_ref().map(|(_, m)| Arc::clone(m));
    let admin = admin_of(&scope)?;
    let wanted = name.clone();
    let (topic, configs) = kafka(admin, move |admin| {
        let metadata = admin
            .metadata()
            .map_err(|e| ApiFailure::kafka("Metadata", &e))?;
        let Some(topic) = metadata.topics.into_iter().find(|t| t.name == wanted) else {
            return Err(ApiFailure::not_found(format!(
                "Kafka has no topic {wanted:?}"
            )));
        };
        // No keys: every config of the topic.
        let configs = admin
            .topic_configs(std::slice::from_ref(&wanted), &[])
            .map_err(|e| ApiFailure::kafka("DescribeConfigs", &e))?
            .remove(&wanted)
            .unwrap_or_default();
        Ok((topic, configs))
    })
    .await?;
    let head = summary(&topic, &declared);
    let partitions = topic
        .partitions
        .iter()
        .map(|p| PartitionView {
            partition: p.partition,
            leader: (p.leader >= 0).then_some(p.leader),
            replicas: p.replicas.clone(),
            isr: p.isr.clone(),
            offline_replicas: p.offline_replicas.clone(),
            under_replicated: p.isr.len() < p.replicas.len(),
        })
        .collect();
    Ok(Json(TopicDetail {
        declared: declared_topic(model.as_deref(), &name).map(|(_, t)| declared_view(t)),
        name: head.name,
        internal: head.internal,
        managed: head.managed,
        declared_in: head.declared_in,
        partition_count: head.partitions,
        replication_factor: head.replication_factor,
        under_replicated: head.under_replicated,
        offline: head.offline,
        partitions,
        configs,
    }))
}

// ------------------------------------------------------------------ writes: through git

/// `POST /topics`: a new topic. `topic_name` and `configs` (the seed
/// API's names) are accepted too.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTopicBody {
    #[serde(alias = "topic_name")]
    name: String,
    partitions: u32,
    #[serde(default)]
    replication_factor: Option<u16>,
    #[serde(default, alias = "configs")]
    config: BTreeMap<String, serde_json::Value>,
}

/// `PUT /topics/{name}`: only what is named changes; a config set to
/// `null` is removed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicChangeBody {
    #[serde(default)]
    partitions: Option<u32>,
    #[serde(default)]
    replication_factor: Option<u16>,
    #[serde(default, alias = "configs")]
    config: BTreeMap<String, serde_json::Value>,
}

/// One entry of a `topics/*.yaml` file, as the answer's YAML shows it.
#[derive(Debug, Serialize)]
struct TopicEntry {
    name: String,
    partitions: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    replication_factor: Option<u16>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    config: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    delete: bool,
}

#[derive(Debug, Serialize)]
struct TopicsFileYaml {
    topics: Vec<TopicEntry>,
}

impl TopicEntry {
    fn of(name: &str, topic: &Topic) -> Self {
        let declared = declared_view(topic);
        Self {
            name: name.to_owned(),
            partitions: declared.partitions,
            replication_factor: declared.replication_factor,
            config: declared.config,
            delete: topic.delete.value,
        }
    }

    fn yaml(self) -> Result<String, ApiFailure> {
        serde_saphyr::to_string(&TopicsFileYaml { topics: vec![self] }).map_err(|e| {
            tracing::error!(error = %e, "cluster API: serializing a topic entry");
            ApiFailure::internal()
        })
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiFailure> {
    let bytes = body.map_err(|rejection| {
        ApiFailure::new(rejection.status(), "invalid_body", rejection.body_text())
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ApiFailure::invalid_body(e.to_string()))
}

/// A topic name kraftops may write about: valid for Kafka (`code` names
/// where it came from: `invalid_body` or `invalid_path`), and not `__*`.
fn valid_topic_name(name: &str, code: &str) -> Result<(), ApiFailure> {
    TopicName::try_from(name.to_owned())
        .map(drop)
        .map_err(|e| ApiFailure::new(StatusCode::BAD_REQUEST, code, e.to_string()))?;
    if is_internal(name, false) {
        return Err(ApiFailure::new(
            StatusCode::FORBIDDEN,
            "internal_topic",
            format!("{name} is one of Kafka's internal topics; kraftops never touches those"),
        ));
    }
    Ok(())
}

/// A config value as a string: JSON strings, numbers and booleans (the
/// seed API's clients sent numbers); `None` for `null` (remove).
fn config_value(key: &str, value: &serde_json::Value) -> Result<Option<String>, ApiFailure> {
    let text = match value {
        serde_json::Value::Null => return Ok(None),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::Bool(b) => b.to_string(),
        _ => {
            return Err(ApiFailure::invalid_body(format!(
                "config {key}: a value is a string, number or boolean"
            )));
        }
    };
    PropertyValue::try_from(text.clone())
        .map_err(|e| ApiFailure::invalid_body(format!("config {key}: {e}")))?;
    Ok(Some(text))
}

fn config_key(key: &str) -> Result<(), ApiFailure> {
    PropertyKey::try_from(key.to_owned())
        .map(drop)
        .map_err(|e| ApiFailure::invalid_body(e.to_string()))
}

fn positive(what: &str, value: u64) -> Result<(), ApiFailure> {
    if value == 0 {
        return Err(ApiFailure::invalid_body(format!(
            "{what} must be at least 1"
        )));
    }
    Ok(())
}

const NO_PUSH: &str = "the coordinator does not write to the desired-state repository: commit this change and push it";

async fn post_topic(
    State(coordinator): Shared,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiFailure> {
    let body: NewTopicBody = parse_json(body)?;
    valid_topic_name(&body.name, "invalid_body")?;
    positive("partitions", u64::from(body.partitions))?;
    if let Some(rf) = body.replication_factor {
        positive("replication_factor", u64::from(rf))?;
    }
    let mut config = BTreeMap::new();
    for (key, value) in &body.config {
        config_key(key)?;
        if let Some(v) = config_value(key, value)? {
            config.insert(key.clone(), v);
        }
    }
    let scope = coordinator.cluster_scope();
    let (_, model) = scope.head.as_ref().ok_or_else(ApiFailure::no_head)?;
    if let Some((file, _)) = declared_topic(Some(model), &body.name) {
        let yaml = TopicEntry {
            name: body.name.clone(),
            partitions: body.partitions,
            replication_factor: body.replication_factor,
            config,
            delete: false,
        }
        .yaml()?;
        return Err(ApiFailure::edit_git(
            format!(
                "{NO_PUSH}: topic {} is already declared in {file}; replace its entry there",
                body.name
            ),
            GitEdit {
                file: file.to_owned(),
                action: "change".to_owned(),
                yaml,
            },
        ));
    }
    let yaml = TopicEntry {
        name: body.name.clone(),
        partitions: body.partitions,
        replication_factor: body.replication_factor,
        config,
        delete: false,
    }
    .yaml()?;
    Err(ApiFailure::edit_git(
        format!("{NO_PUSH}: add topic {} to a file under topics/", body.name),
        GitEdit {
            file: "topics/".to_owned(),
            action: "add".to_owned(),
            yaml,
        },
    ))
}

/// The topic's current shape in Kafka, for one git does not declare yet.
async fn kafka_topic(scope: &ClusterScope, name: &str) -> Result<TopicMetadata, ApiFailure> {
    let admin = admin_of(scope)?;
    let wanted = name.to_owned();
    kafka(admin, move |admin| {
        admin
            .metadata()
            .map_err(|e| ApiFailure::kafka("Metadata", &e))?
            .topics
            .into_iter()
            .find(|t| t.name == wanted)
            .ok_or_else(|| {
                ApiFailure::not_found(format!(
                    "topic {wanted:?} is neither declared in git nor in Kafka"
                ))
            })
    })
    .await
}

async fn put_topic(
    State(coordinator): Shared,
    name: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiFailure> {
    let name = path_value(name)?;
    valid_topic_name(&name, "invalid_path")?;
    let body: TopicChangeBody = parse_json(body)?;
    let mut changes = BTreeMap::new();
    for (key, value) in &body.config {
        config_key(key)?;
        changes.insert(key.clone(), config_value(key, value)?);
    }
    if let Some(p) = body.partitions {
        positive("partitions", u64::from(p))?;
    }
    if let Some(rf) = body.replication_factor {
        positive("replication_factor", u64::from(rf))?;
    }
    let scope = coordinator.cluster_scope();
    let (_, model) = scope.head.as_ref().ok_or_else(ApiFailure::no_head)?;
    let (file, action, mut entry) = match declared_topic(Some(model), &name) {
        Some((file, topic)) => (file.to_owned(), "change", TopicEntry::of(&name, topic)),
        None => {
            let topic = kafka_topic(&scope, &name).await?;
            let current = summary(&topic, &Declared::default());
            let rf = u16::try_from(current.replication_factor).ok();
            let entry = TopicEntry {
                name: name.clone(),
                partitions: u32::try_from(current.partitions).unwrap_or(u32::MAX),
                replication_factor: rf,
                config: BTreeMap::new(),
                delete: false,
            };
            ("topics/".to_owned(), "add", entry)
        }
    };
    if let Some(p) = body.partitions {
        if p < entry.partitions {
            return Err(ApiFailure::invalid_body(format!(
                "partitions can only grow: {name} has {}, asked for {p}",
                entry.partitions
            )));
        }
        entry.partitions = p;
    }
    if let Some(rf) = body.replication_factor {
        // A declaration without one has the cluster's default.
        let current = entry
            .replication_factor
            .unwrap_or(model.cluster.topic_defaults.replication_factor.value);
        if current != rf {
            return Err(ApiFailure::invalid_body(format!(
                "kraftops does not change a topic's replication factor ({name} has {current}); create a new topic instead"
            )));
        }
    }
    for (key, value) in changes {
        match value {
            Some(v) => entry.config.insert(key, v),
            None => entry.config.remove(&key),
        };
    }
    let yaml = entry.yaml()?;
    let message = if action == "change" {
        format!("{NO_PUSH}: replace topic {name}'s entry in {file} with this one")
    } else {
        format!(
            "{NO_PUSH}: topic {name} is not declared in git; add this entry to a file under topics/ \
             (list every config it should keep: once declared, configs set in Kafka and not listed are removed)"
        )
    };
    Err(ApiFailure::edit_git(
        message,
        GitEdit {
            file,
            action: action.to_owned(),
            yaml,
        },
    ))
}

async fn delete_topic(
    State(coordinator): Shared,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiFailure> {
    let name = path_value(name)?;
    valid_topic_name(&name, "invalid_path")?;
    let scope = coordinator.cluster_scope();
    let (_, model) = scope.head.as_ref().ok_or_else(ApiFailure::no_head)?;
    let (file, mut entry) = match declared_topic(Some(model), &name) {
        Some((file, topic)) => (file.to_owned(), TopicEntry::of(&name, topic)),
        None => {
            let topic = kafka_topic(&scope, &name).await?;
            let current = summary(&topic, &Declared::default());
            (
                "topics/".to_owned(),
                TopicEntry {
                    name: name.clone(),
                    partitions: u32::try_from(current.partitions).unwrap_or(u32::MAX),
                    replication_factor: u16::try_from(current.replication_factor).ok(),
                    config: BTreeMap::new(),
                    delete: false,
                },
            )
        }
    };
    entry.delete = true;
    let yaml = entry.yaml()?;
    Err(ApiFailure::edit_git(
        format!(
            "{NO_PUSH}: kraftops deletes a topic only when git marks it `delete: true` (or a resources.prune pattern in cluster.yaml covers it); mark {name} in {file}"
        ),
        GitEdit {
            file,
            action: "mark_for_deletion".to_owned(),
            yaml,
        },
    ))
}

// ------------------------------------------------------------------ consumer groups

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupList {
    pub groups: Vec<GroupSummary>,
    pub count: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSummary {
    pub group_id: String,
    /// `consumer`, `connect`, or empty for groups that only commit offsets.
    pub protocol_type: String,
    /// `Stable`, `Empty`, … (`null` when the broker does not say).
    pub state: Option<String>,
    /// `classic`, `consumer`, … (`null` when the broker does not say).
    pub group_type: Option<String>,
    /// The broker coordinating it.
    pub coordinator: i32,
}

async fn list_groups(State(coordinator): Shared) -> Result<Json<GroupList>, ApiFailure> {
    let admin = admin_of(&coordinator.cluster_scope())?;
    let mut groups: Vec<GroupSummary> = kafka(admin, |admin| {
        admin
            .list_groups()
            .map_err(|e| ApiFailure::kafka("ListGroups", &e))
    })
    .await?
    .into_iter()
    .map(|g| GroupSummary {
        group_id: g.group_id,
        protocol_type: g.protocol_type,
        state: g.state,
        group_type: g.group_type,
        coordinator: g.coordinator,
    })
    .collect();
    groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    Ok(Json(GroupList {
        count: groups.len(),
        groups,
    }))
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDetail {
    pub group_id: String,
    pub state: String,
    pub protocol_type: String,
    /// The assignor, e.g. `range` (classic), `uniform` (consumer).
    pub protocol: String,
    /// The rebalance protocol: `classic` (described by DescribeGroups) or
    /// `consumer` (KIP-848, described by ConsumerGroupDescribe); for a
    /// group neither describes, what ListGroups says (`share`, `streams`),
    /// or `null`.
    pub group_type: Option<String>,
    /// Consumer groups: the group's epoch and the epoch of its target
    /// assignment; `null` for other groups.
    pub group_epoch: Option<i32>,
    pub assignment_epoch: Option<i32>,
    pub members: Vec<MemberView>,
    pub member_count: usize,
    /// Every partition the group committed an offset for or is assigned.
    pub offsets: Vec<PartitionLag>,
    /// The sum of every partition's known lag.
    pub total_lag: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    /// The partitions it owns.
    pub assignment: Vec<PartitionRef>,
    /// Consumer groups: the member's epoch, behind the group's assignment
    /// epoch while it reconciles, and the partitions the broker's assignor
    /// gave it, which it owns once reconciled; `null` in classic groups.
    pub member_epoch: Option<i32>,
    pub target_assignment: Option<Vec<PartitionRef>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRef {
    pub topic: String,
    pub partition: i32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// The committed offset (`null`: none committed).
    pub committed: Option<i64>,
    /// The high watermark (`null` when Kafka could not say).
    pub latest: Option<i64>,
    /// `latest - committed`, never below 0; `null` when either is unknown.
    pub lag: Option<i64>,
    /// The member it is assigned to.
    pub member_id: Option<String>,
    /// Why `latest` is unknown.
    pub error: Option<String>,
}

/// Lag of one partition: never negative (a commit can be ahead of a
/// high watermark read a moment earlier).
pub fn lag_of(committed: Option<i64>, latest: Option<i64>) -> Option<i64> {
    Some(latest?.saturating_sub(committed?).max(0))
}

type Describe<'a> =
    &'a dyn Fn(&[String]) -> Result<ItemResults<String, GroupDescription>, KafkaError>;

/// `group` as Kafka describes it: as a classic group (`describe_classic`,
/// DescribeGroups), else as a KIP-848 consumer group (`describe_consumer`,
/// ConsumerGroupDescribe); `None` when neither describes it (it does not
/// exist, or is of another type, such as a share group).
fn describe_group(
    group: &str,
    describe_classic: Describe<'_>,
    describe_consumer: Describe<'_>,
) -> Result<Option<GroupDescription>, ApiFailure> {
    let ids = [group.to_owned()];
    let classic = only_description("DescribeGroups", describe_classic(&ids))?
        // Before version 6, DescribeGroups answers a group of another type,
        // or none, as `Dead` with no members.
        .filter(|d| !(d.state == "Dead" && d.members.is_empty()));
    if classic.is_some() {
        return Ok(classic);
    }
    match describe_consumer(&ids) {
        // A broker before Kafka 3.7 has no consumer groups to describe.
        Err(KafkaError::Unsupported { .. }) => Ok(None),
        answer => only_description("ConsumerGroupDescribe", answer),
    }
}

/// The one group `answer` describes; `None` for `GROUP_ID_NOT_FOUND`.
fn only_description(
    api: &'static str,
    answer: Result<ItemResults<String, GroupDescription>, KafkaError>,
) -> Result<Option<GroupDescription>, ApiFailure> {
    let described = answer
        .map_err(|e| ApiFailure::kafka(api, &e))?
        .items
        .into_iter()
        .next()
        .map(|(_, r)| r);
    match described {
        Some(Ok(d)) => Ok(Some(d)),
        Some(Err(KafkaError::Kafka { code, .. })) if code == "GROUP_ID_NOT_FOUND" => Ok(None),
        Some(Err(e)) => Err(ApiFailure::kafka(api, &e)),
        None => Ok(None),
    }
}

async fn get_group(
    State(coordinator): Shared,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<GroupDetail>, ApiFailure> {
    let id = path_value(id)?;
    let admin = admin_of(&coordinator.cluster_scope())?;
    let group = id.clone();
    let (description, listed, committed, latest) = kafka(admin, move |admin| {
        let description = describe_group(&group, &|ids| admin.describe_groups(ids), &|ids| {
            admin.describe_consumer_groups(ids)
        })?;
        let committed = admin
            .committed_offsets(&group)
            .map_err(|e| ApiFailure::kafka("OffsetFetch", &e))?;
        // A group neither call describes (a share or streams group) is
        // still listed with its type and state.
        let listed = if description.is_none() && !committed.is_empty() {
            admin
                .list_groups()
                .map_err(|e| ApiFailure::kafka("ListGroups", &e))?
                .into_iter()
                .find(|g| g.group_id == group)
        } else {
            None
        };
        let mut partitions: BTreeSet<TopicPartition> = committed.keys().cloned().collect();
        for member in description.iter().flat_map(|d| &d.members) {
            partitions.extend(member.assignment.iter().cloned());
        }
        let partitions: Vec<TopicPartition> = partitions.into_iter().collect();
        let latest = if partitions.is_empty() {
            Vec::new()
        } else {
            admin
                .latest_offsets(&partitions)
                .map_err(|e| ApiFailure::kafka("ListOffsets", &e))?
                .items
        };
        Ok((description, listed, committed, latest))
    })
    .await?;
    if description.is_none() && committed.is_empty() {
        return Err(ApiFailure::not_found(format!(
            "Kafka has no consumer group {id:?}"
        )));
    }
    let refs = |partitions: &[TopicPartition]| {
        partitions
            .iter()
            .map(|tp| PartitionRef {
                topic: tp.topic.clone(),
                partition: tp.partition,
            })
            .collect::<Vec<_>>()
    };
    let members: Vec<MemberView> = description
        .iter()
        .flat_map(|d| &d.members)
        .map(|m| MemberView {
            member_id: m.member_id.clone(),
            group_instance_id: m.group_instance_id.clone(),
            client_id: m.client_id.clone(),
            host: m.client_host.clone(),
            assignment: refs(&m.assignment),
            member_epoch: m.member_epoch,
            target_assignment: m.target_assignment.as_deref().map(refs),
        })
        .collect();
    let owner = |tp: &TopicPartition| {
        members
            .iter()
            .find(|m| {
                m.assignment
                    .iter()
                    .any(|a| a.topic == tp.topic && a.partition == tp.partition)
            })
            .map(|m| m.member_id.clone())
    };
    let mut offsets = Vec::with_capacity(latest.len());
    for (tp, end) in latest {
        let committed = committed.get(&tp).copied();
        let (latest, error) = match end {
            Ok(offset) => (Some(offset), None),
            Err(e) => {
                tracing::warn!(partition = %tp, error = %crate::error_chain(&e), "cluster API: ListOffsets of a partition failed");
                (
                    None,
                    Some("Kafka did not give this partition's end offset".to_owned()),
                )
            }
        };
        offsets.push(PartitionLag {
            member_id: owner(&tp),
            topic: tp.topic,
            partition: tp.partition,
            committed,
            latest,
            lag: lag_of(committed, latest),
            error,
        });
    }
    offsets.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    let total_lag = offsets.iter().filter_map(|o| o.lag).sum();
    let mut detail = GroupDetail {
        group_id: id,
        state: "Dead".to_owned(),
        protocol_type: String::new(),
        protocol: String::new(),
        group_type: None,
        group_epoch: None,
        assignment_epoch: None,
        member_count: members.len(),
        members,
        offsets,
        total_lag,
    };
    match (description, listed) {
        (Some(d), _) => {
            detail.state = d.state;
            detail.protocol_type = d.protocol_type;
            detail.protocol = d.protocol;
            detail.group_type = Some(d.group_type.kafka_name().to_owned());
            detail.group_epoch = d.group_epoch;
            detail.assignment_epoch = d.assignment_epoch;
        }
        (None, Some(l)) => {
            detail.state = l.state.unwrap_or_else(|| "Unknown".to_owned());
            detail.protocol_type = l.protocol_type;
            detail.group_type = l.group_type;
        }
        // Only committed offsets are left of it.
        (None, None) => {}
    }
    Ok(Json(detail))
}

// ------------------------------------------------------------------ GET /connectors

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorList {
    /// The cluster has a Kafka Connect worker in `nodes.yaml`.
    pub connect: bool,
    /// Why the list is empty, when it is for a reason other than no
    /// connector being declared.
    pub note: Option<String>,
    /// The last reconcile could not list Connect's connectors.
    pub error: Option<String>,
    pub connectors: Vec<ConnectorView>,
    pub count: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorView {
    pub name: String,
    /// `file:line:col` of its declaration; `null` when git does not
    /// declare it.
    pub declared_in: Option<String>,
    /// `running`, `paused` or `stopped` as declared.
    pub declared_state: Option<String>,
    /// As Connect reports it (`RUNNING`, `FAILED`, …).
    pub state: Option<String>,
    pub worker: Option<String>,
    pub trace: Option<String>,
    pub tasks: Vec<TaskView>,
    pub restarts: u32,
    pub last_action: Option<String>,
    pub error: Option<String>,
    /// Connect refused the declaration, one line per problem.
    pub refusal: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskView {
    pub id: i64,
    pub state: String,
    pub worker: String,
    pub trace: Option<String>,
}

fn connector_views(report: &ConnectorsReport) -> Vec<ConnectorView> {
    report
        .connectors
        .iter()
        .map(|c| ConnectorView {
            name: c.name.clone(),
            declared_in: c.location.clone(),
            declared_state: c.declared.and_then(|s| {
                serde_json::to_value(s)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
            }),
            state: c.state.clone(),
            worker: c.worker.clone(),
            trace: c.trace.clone(),
            tasks: c
                .tasks
                .iter()
                .map(|t| TaskView {
                    id: t.id,
                    state: t.state.clone(),
                    worker: t.worker.clone(),
                    trace: t.trace.clone(),
                })
                .collect(),
            restarts: c.restarts,
            last_action: c.last_action.clone(),
            error: c.error.clone(),
            refusal: c.refusal.clone().unwrap_or_default(),
        })
        .collect()
}

/// `GET /connectors`, also for the status page.
pub fn connector_list(coordinator: &Coordinator) -> Result<ConnectorList, ApiFailure> {
    let scope = coordinator.cluster_scope();
    if scope.head.is_none() {
        return Err(ApiFailure::no_head());
    }
    let declared = Declared::of(scope.head.as_ref());
    let (note, error, connectors) = match (&scope.connectors, declared.has_connect) {
        (_, false) => (
            Some("the cluster has no Kafka Connect worker in nodes.yaml".to_owned()),
            None,
            Vec::new(),
        ),
        (None, true) => (
            Some("no connectors reconcile has finished yet".to_owned()),
            None,
            Vec::new(),
        ),
        (Some(report), true) => (None, report.error.clone(), connector_views(report)),
    };
    Ok(ConnectorList {
        connect: declared.has_connect,
        note,
        error,
        count: connectors.len(),
        connectors,
    })
}

async fn connectors(State(coordinator): Shared) -> Result<Json<ConnectorList>, ApiFailure> {
    connector_list(&coordinator).map(Json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::{GroupMember, GroupType};

    fn described(group_type: GroupType, state: &str, members: usize) -> GroupDescription {
        GroupDescription {
            group_id: "g".to_owned(),
            group_type,
            state: state.to_owned(),
            protocol_type: "consumer".to_owned(),
            protocol: String::new(),
            group_epoch: None,
            assignment_epoch: None,
            members: (0..members)
                .map(|i| GroupMember {
                    member_id: format!("m{i}"),
                    group_instance_id: None,
                    client_id: "c".to_owned(),
                    client_host: "/127.0.0.1".to_owned(),
                    assignment: Vec::new(),
                    member_epoch: None,
                    target_assignment: None,
                })
                .collect(),
        }
    }

    fn answer(
        api: &'static str,
        result: Result<GroupDescription, &str>,
    ) -> Result<ItemResults<String, GroupDescription>, KafkaError> {
        let result = result.map_err(|code| KafkaError::Kafka {
            api,
            what: "group g".to_owned(),
            code: code.to_owned(),
            message: None,
        });
        Ok(ItemResults {
            items: vec![("g".to_owned(), result)],
        })
    }

    fn unsupported() -> Result<ItemResults<String, GroupDescription>, KafkaError> {
        Err(KafkaError::Unsupported {
            api: "ConsumerGroupDescribe",
            address: "broker 1".to_owned(),
            offered: "none".to_owned(),
        })
    }

    #[test]
    fn a_group_is_described_as_classic_else_as_a_kip_848_consumer_group() {
        let never = |_: &[String]| -> Result<ItemResults<String, GroupDescription>, KafkaError> {
            panic!("a classic group is not asked for as a consumer group")
        };
        let classic = |_: &[String]| {
            answer(
                "DescribeGroups",
                Ok(described(GroupType::Classic, "Stable", 1)),
            )
        };
        let found = describe_group("g", &classic, &never).expect("described");
        assert_eq!(found.map(|d| d.group_type), Some(GroupType::Classic));

        // Kafka 4: GROUP_ID_NOT_FOUND; before: Dead with no members.
        let consumer = |_: &[String]| {
            answer(
                "ConsumerGroupDescribe",
                Ok(described(GroupType::Consumer, "Stable", 2)),
            )
        };
        for not_classic in [
            answer("DescribeGroups", Err("GROUP_ID_NOT_FOUND")),
            answer(
                "DescribeGroups",
                Ok(described(GroupType::Classic, "Dead", 0)),
            ),
        ] {
            let not_classic = std::cell::RefCell::new(Some(not_classic));
            let take = |_: &[String]| not_classic.borrow_mut().take().expect("asked once");
            let found = describe_group("g", &take, &consumer)
                .expect("described")
                .expect("a group");
            assert_eq!(
                (found.group_type, found.members.len()),
                (GroupType::Consumer, 2)
            );
        }

        // Neither knows it, or the broker has no ConsumerGroupDescribe.
        let not_found = |_: &[String]| answer("DescribeGroups", Err("GROUP_ID_NOT_FOUND"));
        let not_consumer =
            |_: &[String]| answer("ConsumerGroupDescribe", Err("GROUP_ID_NOT_FOUND"));
        assert_eq!(
            describe_group("g", &not_found, &not_consumer).expect("ok"),
            None
        );
        assert_eq!(
            describe_group("g", &not_found, &|_| unsupported()).expect("ok"),
            None
        );

        // Any other failure is Kafka being unavailable, not an absent group.
        let denied = |_: &[String]| answer("DescribeGroups", Err("GROUP_AUTHORIZATION_FAILED"));
        let failure = describe_group("g", &denied, &never).expect_err("refused");
        assert_eq!(failure.status(), StatusCode::SERVICE_UNAVAILABLE);
        let failure = describe_group("g", &not_found, &|_| {
            answer("ConsumerGroupDescribe", Err("COORDINATOR_NOT_AVAILABLE"))
        })
        .expect_err("unavailable");
        assert_eq!(failure.body().error.code, "kafka_unavailable");
    }

    #[test]
    fn lag_is_never_negative_and_unknown_without_both_offsets() {
        assert_eq!(lag_of(Some(60), Some(100)), Some(40));
        assert_eq!(lag_of(Some(100), Some(100)), Some(0));
        assert_eq!(lag_of(Some(101), Some(100)), Some(0));
        assert_eq!(lag_of(None, Some(100)), None);
        assert_eq!(lag_of(Some(1), None), None);
    }

    fn example() -> Model {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../desired-state/examples/seed");
        desired_state::load_dir(&dir).expect("the example loads")
    }

    #[test]
    fn an_entry_written_for_git_loads_as_a_topics_file() {
        let model = example();
        let (_, topic) = declared_topic(Some(&model), "topic-1").expect("declared");
        let mut entry = TopicEntry::of("topic-1", topic);
        entry.config.insert(
            "cleanup.policy".to_owned(),
            "compact,delete # not a comment".to_owned(),
        );
        entry
            .config
            .insert("retention.ms".to_owned(), "1000".to_owned());
        let yaml = entry.yaml().expect("yaml");
        let parsed: desired_state::model::TopicsFile =
            serde_saphyr::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let back = &parsed.topics[0].value;
        assert_eq!(back.name.as_str(), "topic-1");
        assert_eq!(back.partitions.value, 6);
        let config: BTreeMap<String, String> = back
            .config
            .iter()
            .map(|(k, v)| (k.to_string(), v.value.as_str().to_owned()))
            .collect();
        assert_eq!(config["cleanup.policy"], "compact,delete # not a comment");
        assert_eq!(config["retention.ms"], "1000");
        assert_eq!(config["min.insync.replicas"], "2");
    }

    #[test]
    fn internal_topics_are_refused_and_bad_names_are_invalid() {
        assert_eq!(
            valid_topic_name("__consumer_offsets", "invalid_body")
                .expect_err("internal")
                .body
                .error
                .code,
            "internal_topic"
        );
        for bad in ["", "a/b", "..", "é"] {
            assert_eq!(
                valid_topic_name(bad, "invalid_body")
                    .expect_err(bad)
                    .body
                    .error
                    .code,
                "invalid_body"
            );
        }
        assert!(valid_topic_name("orders.v1", "invalid_body").is_ok());
    }
}
