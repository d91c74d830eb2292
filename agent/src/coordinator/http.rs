//! The coordinator's HTTP API: routes, request reading, and graceful serving.
//! Handlers only read the request and call [`Coordinator`]; every refusal
//! is a [`Refusal`] and becomes a JSON `ApiError`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::alerts::{AlertmanagerWebhook, AlertsAccepted, ReceivedAlert};
use super::auth::{SIGNATURE_HEADER, bearer_token, webhook_signature_valid};
use super::tls::PeerNode;
use super::{Coordinator, Refusal};
use crate::protocol::{
    CertificateRequestBody, CertificateResponse, EnrolmentResponse, HaltRequest, Lease,
    LeaseRequest, NodeView, Nudge, ResumeRequest, RolloutView, StatusReport,
};

/// The largest request body accepted, on every endpoint.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// How long a nudge long-poll waits without a `timeout` parameter.
pub const DEFAULT_POLL_SECONDS: u64 = 25;
/// The longest `timeout` a nudge long-poll honours.
pub const MAX_POLL_SECONDS: u64 = 60;

type Shared = State<Arc<Coordinator>>;

/// The coordinator's routes. Requests are traced; bodies are limited to
/// [`MAX_BODY_BYTES`].
pub fn router(state: Arc<Coordinator>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/nodes", get(list_nodes))
        .route("/v1/nodes/{name}", get(get_node))
        .route("/v1/nodes/{name}/status", post(post_status))
        .route("/v1/certificates", post(post_certificate))
        .route("/v1/enrol", post(post_enrol))
        .route("/v1/ca.pem", get(get_ca))
        .route("/v1/leases", get(list_leases))
        .route(
            "/v1/leases/{role}",
            post(acquire_lease).put(renew_lease).delete(release_lease),
        )
        .route("/v1/leases/{role}/halt", post(halt_rollout))
        .route("/v1/rollout", get(get_rollout))
        .route("/v1/rollout/resume", post(resume_rollout))
        .route("/v1/resources", get(super::resources::get_resources))
        .route("/v1/nudges", get(poll_nudges))
        .route("/v1/nudge", post(post_nudge))
        .route("/v1/hooks/git", post(git_webhook))
        .route("/v1/alerts", get(list_alerts).post(post_alerts))
        .route("/", get(super::status_view::page))
        .merge(super::cluster_api::routes())
        .fallback(|| async { Refusal::NoSuchEndpoint })
        .method_not_allowed_fallback(|| async { Refusal::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(trace_request))
        .with_state(state)
}

/// Ends long-polls when the server shuts down, so graceful shutdown does not
/// wait out every agent's poll.
#[derive(Clone, Debug)]
pub(crate) struct ShuttingDown(pub(crate) CancellationToken);

/// The verified client certificate's node, when the request came over the
/// mutual-TLS port.
type Peer = Option<Extension<PeerNode>>;

fn peer_of(peer: &Peer) -> Option<&PeerNode> {
    peer.as_ref().map(|Extension(p)| p)
}

/// Serves the coordinator on `listener` until `shutdown` is cancelled, then
/// finishes the requests in flight (nudge long-polls return at once) and
/// returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<Coordinator>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let address = listener.local_addr()?;
    tracing::info!(%address, cluster = %state.cluster(), "coordinator listening");
    let app = router(state).layer(Extension(ShuttingDown(shutdown.clone())));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    tracing::info!(%address, "coordinator stopped");
    Ok(())
}

/// One event per request: method, path (never headers: they carry tokens),
/// status and duration. Successful reads are debug-level, since agents poll.
async fn trace_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let span = tracing::info_span!("coordinator_request", %method, %path);
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let elapsed_ms = started.elapsed().as_millis();
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!(status, elapsed_ms, "request failed");
        } else if status >= 400 || method != axum::http::Method::GET {
            tracing::info!(status, elapsed_ms, "request");
        } else {
            tracing::debug!(status, elapsed_ms, "request");
        }
    });
    response
}

fn unreadable(status: StatusCode, message: String) -> Refusal {
    Refusal::Unreadable { status, message }
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, Refusal> {
    body.map(|Json(value)| value)
        .map_err(|rejection| unreadable(rejection.status(), rejection.body_text()))
}

fn path_param(path: Result<Path<String>, PathRejection>) -> Result<String, Refusal> {
    path.map(|Path(value)| value)
        .map_err(|rejection| unreadable(rejection.status(), rejection.body_text()))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "UP" }))
}

/// Prometheus text: the nodes the coordinator knows, by reported phase and
/// report age, the live leases, the nudge generation and received alerts.
async fn metrics(State(coordinator): Shared) -> Response {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        render_metrics(&coordinator),
    )
        .into_response()
}

/// The text of `GET /metrics`.
pub fn render_metrics(coordinator: &Coordinator) -> String {
    use std::fmt::Write as _;
    let nodes = coordinator.nodes();
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, u64)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    family(
        "kraftops_coordinator_nodes",
        "gauge",
        "Nodes in the cluster view.",
        vec![(String::new(), nodes.len() as u64)],
    );
    family(
        "kraftops_coordinator_node_phase",
        "gauge",
        "1 for the phase each node last reported.",
        nodes
            .iter()
            .map(|n| {
                let phase = n.report.as_ref().map_or_else(
                    || "none".to_owned(),
                    |r| {
                        serde_json::to_value(r.phase)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default()
                    },
                );
                (
                    format!(
                        "{{node=\"{}\",role=\"{}\",phase=\"{phase}\"}}",
                        n.node, n.role
                    ),
                    1,
                )
            })
            .collect(),
    );
    family(
        "kraftops_coordinator_report_age_seconds",
        "gauge",
        "Seconds since each node's last report.",
        nodes
            .iter()
            .filter_map(|n| Some((format!("{{node=\"{}\"}}", n.node), n.age_seconds?)))
            .collect(),
    );
    family(
        "kraftops_coordinator_lease_held",
        "gauge",
        "1 per live restart lease, by role and holder.",
        coordinator
            .leases()
            .iter()
            .map(|l| {
                (
                    format!("{{role=\"{}\",holder=\"{}\"}}", l.role, l.holder),
                    1,
                )
            })
            .collect(),
    );
    let rollout = coordinator.rollout();
    family(
        "kraftops_coordinator_rollout_halted",
        "gauge",
        "1 while a role's rollout is halted (a restart failed), by role.",
        rollout
            .roles
            .iter()
            .map(|r| {
                (
                    format!("{{role=\"{}\"}}", r.role),
                    u64::from(!r.halted.is_empty()),
                )
            })
            .collect(),
    );
    family(
        "kraftops_coordinator_rollout_paused",
        "gauge",
        "1 while rollout.paused is set in cluster.yaml.",
        vec![(String::new(), u64::from(rollout.paused))],
    );
    family(
        "kraftops_coordinator_nudge_generation",
        "counter",
        "Nudges sent to agents since start.",
        vec![(String::new(), coordinator.generation())],
    );
    family(
        "kraftops_coordinator_alerts_received",
        "gauge",
        "Alerts kept from Alertmanager.",
        vec![(String::new(), coordinator.alerts().len() as u64)],
    );
    family(
        "kraftops_coordinator_started_time_seconds",
        "gauge",
        "When this coordinator started.",
        vec![(String::new(), coordinator.started_at())],
    );
    out
}

async fn list_nodes(State(coordinator): Shared) -> Json<Vec<NodeView>> {
    Json(coordinator.nodes())
}

async fn get_node(
    State(coordinator): Shared,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<NodeView>, Refusal> {
    coordinator.node(&path_param(name)?).map(Json)
}

async fn post_status(
    State(coordinator): Shared,
    peer: Peer,
    name: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Json<StatusReport>, JsonRejection>,
) -> Result<Json<NodeView>, Refusal> {
    let authenticated = coordinator.authenticate(peer_of(&peer), bearer_token(&headers))?;
    let name = path_param(name)?;
    let report = json_body(body)?;
    coordinator
        .record_report(&authenticated, &name, report)
        .map(Json)
}

async fn post_certificate(
    State(coordinator): Shared,
    peer: Peer,
    headers: HeaderMap,
    body: Result<Json<CertificateRequestBody>, JsonRejection>,
) -> Result<Json<CertificateResponse>, Refusal> {
    let authenticated = coordinator.authenticate(peer_of(&peer), bearer_token(&headers))?;
    let request = json_body(body)?;
    coordinator
        .sign_certificate(&authenticated, request)
        .await
        .map(Json)
}

async fn post_enrol(
    State(coordinator): Shared,
    peer: Peer,
    headers: HeaderMap,
    body: Result<Json<CertificateRequestBody>, JsonRejection>,
) -> Result<Json<EnrolmentResponse>, Refusal> {
    let request = json_body(body)?;
    coordinator
        .enrol(peer_of(&peer), bearer_token(&headers), request)
        .await
        .map(Json)
}

async fn get_ca(State(coordinator): Shared) -> Response {
    (
        [(CONTENT_TYPE, "text/plain; charset=utf-8")],
        coordinator.ca_pem(),
    )
        .into_response()
}

async fn list_leases(State(coordinator): Shared) -> Json<Vec<Lease>> {
    Json(coordinator.leases())
}

/// The caller, the role and the request of a lease endpoint.
fn lease_call(
    coordinator: &Coordinator,
    peer: &Peer,
    role: Result<Path<String>, PathRejection>,
    headers: &HeaderMap,
    body: Result<Json<LeaseRequest>, JsonRejection>,
) -> Result<(String, String, LeaseRequest), Refusal> {
    let authenticated = coordinator.authenticate(peer_of(peer), bearer_token(headers))?;
    Ok((authenticated, path_param(role)?, json_body(body)?))
}

async fn acquire_lease(
    State(coordinator): Shared,
    peer: Peer,
    role: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Json<LeaseRequest>, JsonRejection>,
) -> Result<Json<Lease>, Refusal> {
    let (authenticated, role, request) = lease_call(&coordinator, &peer, role, &headers, body)?;
    coordinator
        .acquire_lease(&authenticated, &role, &request)
        .map(Json)
}

async fn renew_lease(
    State(coordinator): Shared,
    peer: Peer,
    role: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Json<LeaseRequest>, JsonRejection>,
) -> Result<Json<Lease>, Refusal> {
    let (authenticated, role, request) = lease_call(&coordinator, &peer, role, &headers, body)?;
    coordinator
        .renew_lease(&authenticated, &role, &request)
        .map(Json)
}

async fn release_lease(
    State(coordinator): Shared,
    peer: Peer,
    role: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Json<LeaseRequest>, JsonRejection>,
) -> Result<StatusCode, Refusal> {
    let (authenticated, role, request) = lease_call(&coordinator, &peer, role, &headers, body)?;
    coordinator.release_lease(&authenticated, &role, &request)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn halt_rollout(
    State(coordinator): Shared,
    peer: Peer,
    role: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Json<HaltRequest>, JsonRejection>,
) -> Result<Json<Lease>, Refusal> {
    let authenticated = coordinator.authenticate(peer_of(&peer), bearer_token(&headers))?;
    let role = path_param(role)?;
    let request = json_body(body)?;
    coordinator
        .halt_rollout(&authenticated, &role, request)
        .map(Json)
}

async fn get_rollout(State(coordinator): Shared) -> Json<RolloutView> {
    Json(coordinator.rollout())
}

async fn resume_rollout(
    State(coordinator): Shared,
    peer: Peer,
    headers: HeaderMap,
    body: Result<Json<ResumeRequest>, JsonRejection>,
) -> Result<Json<RolloutView>, Refusal> {
    let authenticated = coordinator.authenticate(peer_of(&peer), bearer_token(&headers))?;
    let request = json_body(body)?;
    coordinator
        .resume_rollout(&authenticated, &request)
        .map(Json)
}

#[derive(Debug, Deserialize)]
struct PollQuery {
    after: Option<u64>,
    timeout: Option<u64>,
}

/// Returns as soon as the generation passes `after`, or after the timeout
/// (or at shutdown) with the current generation. Without `after` it returns
/// the current generation at once.
async fn poll_nudges(
    State(coordinator): Shared,
    query: Result<Query<PollQuery>, QueryRejection>,
    shutting_down: Option<Extension<ShuttingDown>>,
) -> Result<Json<Nudge>, Refusal> {
    let Query(query) =
        query.map_err(|rejection| unreadable(rejection.status(), rejection.body_text()))?;
    let mut nudges = coordinator.subscribe_nudges();
    let Some(after) = query.after else {
        return Ok(Json(Nudge {
            generation: coordinator.generation(),
        }));
    };
    let timeout = Duration::from_secs(
        query
            .timeout
            .unwrap_or(DEFAULT_POLL_SECONDS)
            .min(MAX_POLL_SECONDS),
    );
    let shutdown = shutting_down
        .map(|Extension(ShuttingDown(token))| token)
        .unwrap_or_default();
    tokio::select! {
        // A closed channel cannot happen while the coordinator lives; either
        // way the current generation is the answer.
        _ = tokio::time::timeout(timeout, nudges.wait_for(|generation| *generation > after)) => {}
        () = shutdown.cancelled() => {}
    }
    Ok(Json(Nudge {
        generation: coordinator.generation(),
    }))
}

async fn post_nudge(
    State(coordinator): Shared,
    peer: Peer,
    headers: HeaderMap,
) -> Result<Json<Nudge>, Refusal> {
    let node = coordinator.authenticate(peer_of(&peer), bearer_token(&headers))?;
    tracing::info!(%node, "nudge requested");
    coordinator.nudge();
    Ok(Json(Nudge {
        generation: coordinator.generation(),
    }))
}

async fn git_webhook(
    State(coordinator): Shared,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Nudge>, Refusal> {
    let secret = coordinator
        .webhook_secret()
        .ok_or(Refusal::WebhookDisabled)?;
    let body = body.map_err(|rejection| unreadable(rejection.status(), rejection.body_text()))?;
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|value| value.to_str().ok());
    if !webhook_signature_valid(secret, &body, signature) {
        return Err(Refusal::BadSignature);
    }
    coordinator.nudge();
    Ok(Json(Nudge {
        generation: coordinator.generation(),
    }))
}

async fn post_alerts(
    State(coordinator): Shared,
    body: Result<Json<AlertmanagerWebhook>, JsonRejection>,
) -> Result<Json<AlertsAccepted>, Refusal> {
    let accepted = coordinator.record_alerts(json_body(body)?);
    Ok(Json(AlertsAccepted { accepted }))
}

async fn list_alerts(State(coordinator): Shared) -> Json<Vec<ReceivedAlert>> {
    Json(coordinator.alerts())
}
