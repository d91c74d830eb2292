//! The agent's own HTTP API: liveness, readiness, the status report,
//! Prometheus metrics, and an authenticated "reconcile now" for operators.
//! `docs/agent-api.openapi.yaml` describes it; a test keeps the two in step.
//!
//! Every refusal is a JSON [`ApiError`] that names the caller's mistake and
//! never an internal detail. The API token is compared in constant time and
//! never logged.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

use super::state::{AgentState, Metrics, Trigger};
use crate::http_auth::{bearer_token, tokens_equal};
use crate::protocol::{ApiError, Phase};

/// The largest request body accepted. No endpoint needs a body; the limit
/// only bounds what a caller can make the agent buffer.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The content type of `GET /metrics`: Prometheus text exposition 0.0.4.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

type Shared = State<Arc<AgentState>>;

/// The agent's routes, with JSON 404 and 405 answers and bodies limited to
/// [`MAX_BODY_BYTES`].
pub fn router(state: Arc<AgentState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics))
        .route("/v1/reconcile", post(reconcile))
        .fallback(|| async { Refusal::NoSuchEndpoint })
        .method_not_allowed_fallback(|| async { Refusal::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` is cancelled, then finishes
/// the requests in flight and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AgentState>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let address = listener.local_addr()?;
    tracing::info!(%address, "agent API listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    tracing::info!(%address, "agent API stopped");
    Ok(())
}

/// Why a request was refused; the message is what the caller reads in
/// `ApiError.error`.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("no API token is configured on this node, so remote reconcile is disabled")]
    NoTokenConfigured,
    #[error("missing or wrong bearer token")]
    Unauthenticated,
    #[error("the reconcile loop is not running")]
    LoopStopped,
    #[error("request body larger than {MAX_BODY_BYTES} bytes")]
    BodyTooLarge,
    #[error("unreadable request body")]
    UnreadableBody,
    #[error("no such endpoint")]
    NoSuchEndpoint,
    #[error("method not allowed")]
    MethodNotAllowed,
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Self::NoTokenConfigured => StatusCode::FORBIDDEN,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::LoopStopped => StatusCode::SERVICE_UNAVAILABLE,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnreadableBody => StatusCode::BAD_REQUEST,
            Self::NoSuchEndpoint => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(ApiError::new(self.to_string()))).into_response();
        if matches!(self, Self::Unauthenticated) {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "UP" }))
}

async fn readyz(State(state): Shared) -> Response {
    let report = state.status();
    if report.phase == Phase::Converged {
        let body = serde_json::json!({ "status": "READY", "phase": report.phase });
        return (StatusCode::OK, Json(body)).into_response();
    }
    // The same message `/v1/status` shows; nothing more.
    let error = report.last_error.map(|e| e.message);
    let body = serde_json::json!({ "status": "NOT_READY", "phase": report.phase, "error": error });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

async fn status(State(state): Shared) -> Response {
    Json(state.status()).into_response()
}

async fn metrics(State(state): Shared) -> Response {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0);
    (
        [(CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        render_metrics(&state, now),
    )
        .into_response()
}

/// `POST /v1/reconcile`: queue a reconcile. A wrong token is refused before
/// a bad body is; the body itself is ignored.
async fn reconcile(
    State(state): Shared,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Refusal> {
    authorize(state.api_token.as_deref(), &headers)?;
    if let Err(rejection) = body {
        return Err(if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Refusal::BodyTooLarge
        } else {
            Refusal::UnreadableBody
        });
    }
    let answer = match state.triggers.try_send(Trigger::Api) {
        Ok(()) => "QUEUED",
        // A queued trigger has not been taken yet, so the reconcile it
        // starts will see everything this caller wanted it to see.
        Err(TrySendError::Full(_)) => "ALREADY_QUEUED",
        Err(TrySendError::Closed(_)) => {
            tracing::warn!("reconcile requested over the API, but the loop has stopped");
            return Err(Refusal::LoopStopped);
        }
    };
    tracing::info!(answer, "reconcile requested over the API");
    let body = serde_json::json!({ "status": answer });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// Allows the call when `Authorization: Bearer <token>` carries the
/// configured token. No (or an empty) configured token refuses every call:
/// a node without a token must not be driven by whoever reaches its port.
fn authorize(configured: Option<&str>, headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(configured) = configured.filter(|token| !token.is_empty()) else {
        tracing::warn!("reconcile requested over the API, but no API token is configured");
        return Err(Refusal::NoTokenConfigured);
    };
    match bearer_token(headers) {
        Some(presented) if tokens_equal(presented, configured) => Ok(()),
        _ => {
            tracing::warn!("reconcile requested over the API with a missing or wrong token");
            Err(Refusal::Unauthenticated)
        }
    }
}

/// A phase's name as the status JSON spells it. The match is exhaustive, so
/// a new phase does not compile until it is named here (add it to
/// [`Phase::ALL`] too).
fn phase_label(phase: Phase) -> &'static str {
    match phase {
        Phase::Starting => "starting",
        Phase::Syncing => "syncing",
        Phase::Applying => "applying",
        Phase::WaitingForLease => "waiting_for_lease",
        Phase::Restarting => "restarting",
        Phase::Converged => "converged",
        Phase::Refused => "refused",
        Phase::RepoUnreachable => "repo_unreachable",
        Phase::Failed => "failed",
    }
}

/// `/metrics` in the Prometheus text exposition format 0.0.4.
///
/// The metric names are a contract: the example cluster's alert rules and
/// Grafana dashboards query them. Times are absolute Unix timestamps (rules
/// subtract `time()`), so no metric depends on `_now`; it is part of the
/// signature so a caller passes the clock explicitly and may later export
/// clock-relative values without changing callers.
pub fn render_metrics(state: &AgentState, _now: u64) -> String {
    let report = state.status();
    let m = &state.metrics;
    let mut out = Exposition::default();

    out.family(
        "kraftops_agent_converged",
        "gauge",
        "1 when the last reconcile left the node matching its applied revision, else 0.",
    );
    out.sample(
        "kraftops_agent_converged",
        &[],
        u64::from(report.phase == Phase::Converged),
    );

    out.family(
        "kraftops_agent_reconcile_total",
        "counter",
        "Reconciles finished, by result: ok, failed, or refused (the newest commit was not accepted).",
    );
    for (result, counter) in [
        ("ok", &m.reconciles_ok),
        ("failed", &m.reconciles_failed),
        ("refused", &m.reconciles_refused),
    ] {
        out.sample(
            "kraftops_agent_reconcile_total",
            &[("result", result)],
            Metrics::get(counter),
        );
    }

    out.family(
        "kraftops_agent_reconcile_duration_seconds",
        "summary",
        "How long reconciles take, from start to the final phase.",
    );
    out.sample(
        "kraftops_agent_reconcile_duration_seconds_sum",
        &[],
        micros_as_seconds(Metrics::get(&m.reconcile_micros_sum)),
    );
    out.sample(
        "kraftops_agent_reconcile_duration_seconds_count",
        &[],
        Metrics::get(&m.reconcile_count),
    );

    out.family(
        "kraftops_agent_last_reconcile_timestamp_seconds",
        "gauge",
        "When the last reconcile finished, in Unix seconds; 0 before the first.",
    );
    out.sample(
        "kraftops_agent_last_reconcile_timestamp_seconds",
        &[],
        Metrics::get(&m.last_reconcile_unix),
    );

    out.family(
        "kraftops_agent_info",
        "gauge",
        "Always 1; the labels name the node, its role and the applied commit (empty before the first).",
    );
    let revision = report.revision_applied.as_deref().unwrap_or("");
    out.sample(
        "kraftops_agent_info",
        &[
            ("node", &report.node),
            ("role", &report.role),
            ("revision", revision),
        ],
        1u64,
    );

    out.family(
        "kraftops_certificate_expiry_timestamp_seconds",
        "gauge",
        "When each certificate the agent manages expires (notAfter), in Unix seconds.",
    );
    // One series per name: a name listed twice would make the exposition
    // invalid, and the earliest expiry is the one worth alerting on.
    let mut expiries: BTreeMap<&str, u64> = BTreeMap::new();
    for cert in &report.certificates {
        expiries
            .entry(cert.name.as_str())
            .and_modify(|t| *t = (*t).min(cert.not_after))
            .or_insert(cert.not_after);
    }
    for (name, not_after) in expiries {
        out.sample(
            "kraftops_certificate_expiry_timestamp_seconds",
            &[("certificate", name)],
            not_after,
        );
    }

    for (name, help, counter) in [
        (
            "kraftops_agent_drift_total",
            "Managed files found changed by hand and put back.",
            &m.drift_events,
        ),
        (
            "kraftops_agent_files_written_total",
            "Managed files written because their content, owner or mode differed.",
            &m.files_written,
        ),
        (
            "kraftops_agent_restarts_total",
            "Service restarts the agent performed.",
            &m.restarts,
        ),
    ] {
        out.family(name, "counter", help);
        out.sample(name, &[], Metrics::get(counter));
    }

    out.family(
        "kraftops_agent_phase",
        "gauge",
        "1 for the phase the agent is in, 0 for every other phase.",
    );
    for phase in Phase::ALL {
        out.sample(
            "kraftops_agent_phase",
            &[("phase", phase_label(phase))],
            u64::from(phase == report.phase),
        );
    }

    out.text
}

/// Microseconds as seconds; `Display` for `f64` never uses an exponent, so
/// the text stays in the format's plain float syntax.
fn micros_as_seconds(micros: u64) -> f64 {
    // Exact up to 2^53 µs (285 years of reconciling).
    micros as f64 / 1_000_000.0
}

/// A text exposition being written.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    /// `# HELP` and `# TYPE` of a metric family. `help` is a fixed string
    /// without backslashes or newlines, so it needs no escaping.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                self.text.push_str(label);
                self.text.push_str("=\"");
                push_escaped_label_value(&mut self.text, value);
                self.text.push('"');
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }
}

/// A label value as the exposition format requires: backslash, double quote
/// and line feed escaped. Node and role names come from the repository and a
/// revision from git, so none can break out of its label.
fn push_escaped_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_labels_are_the_json_names() {
        for phase in Phase::ALL {
            let json = serde_json::to_value(phase).unwrap_or_default();
            assert_eq!(json, serde_json::Value::from(phase_label(phase)));
        }
        let distinct: std::collections::BTreeSet<_> =
            Phase::ALL.iter().map(|p| phase_label(*p)).collect();
        assert_eq!(distinct.len(), Phase::ALL.len(), "a phase is listed twice");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        push_escaped_label_value(&mut out, "a\\b\"c\nd");
        assert_eq!(out, r#"a\\b\"c\nd"#);
    }
}
