//! Why the coordinator refused a request, and the HTTP status and JSON body
//! each refusal becomes.

use axum::Json;
use axum::http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::protocol::ApiError;

/// A refused request. The message is what the caller reads in
/// `ApiError.error`, so it names the caller's mistake and never an internal
/// detail.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("missing or unknown bearer token")]
    Unauthenticated,
    #[error("this token belongs to node {authenticated}, not to {claimed}")]
    WrongNode {
        authenticated: String,
        claimed: String,
    },
    #[error("the body is about node {body}, the path about node {path}")]
    NodeMismatch { path: String, body: String },
    #[error("unknown node {0}")]
    UnknownNode(String),
    #[error("node {node} has role {actual}, not {requested}")]
    WrongRole {
        node: String,
        actual: String,
        requested: String,
    },
    #[error("certificate request refused: {0}")]
    SignerRefused(String),
    #[error("{0}")]
    BadRequest(String),
    /// The request could not be read (bad JSON, too large, bad query); the
    /// status is the extractor's.
    #[error("{message}")]
    Unreadable { status: StatusCode, message: String },
    /// Every slot of the role is taken: `(holder, seconds left)` of each.
    #[error("the {role} lease is held by {}", holders_text(holders))]
    LeaseHeld {
        role: String,
        holders: Vec<(String, u64)>,
    },
    #[error("the {role} budget of {az} is used by {}", and_list(holders))]
    AzBudgetUsed {
        role: String,
        az: String,
        holders: Vec<String>,
    },
    #[error("rollouts are paused (rollout.paused in cluster.yaml)")]
    RolloutPaused,
    #[error("outside the maintenance windows{}", next_window_text(*next_open, *now))]
    OutsideWindows { next_open: Option<u64>, now: u64 },
    #[error(
        "the {role} rollout is halted: {node} failed{}: {reason}; push a new commit, or POST /v1/rollout/resume",
        revision.as_deref().map(|r| format!(" at {}", super::rollout::short(r))).unwrap_or_default()
    )]
    RolloutHalted {
        role: String,
        node: String,
        revision: Option<String>,
        reason: String,
    },
    /// The coordinator started from a record of halts it could not read,
    /// and the role was not resumed since.
    #[error(
        "the {role} rollout may be halted: {reason}; push a new commit, or POST /v1/rollout/resume"
    )]
    HaltsUnread { role: String, reason: String },
    /// A node of an earlier role (controllers before brokers before
    /// Connect) is not done: `detail` says what it is doing.
    #[error("{earlier_role}s first: {node} {detail}")]
    EarlierRoleBusy {
        earlier_role: String,
        node: String,
        detail: String,
    },
    #[error("{}", match role { Some(role) => format!("the {role} rollout is not halted"), None => "no rollout is halted".to_owned() })]
    NotHalted { role: Option<String> },
    #[error("no {role} lease is held")]
    LeaseNotHeld { role: String },
    #[error("fencing {presented} does not match the current {role} lease")]
    FencingMismatch { role: String, presented: u64 },
    #[error("the {role} lease has expired; acquire it again")]
    LeaseExpired { role: String },
    #[error(
        "the coordinator restarted recently and grants no lease until {until} \
         (in {wait_seconds} s): a lease granted before the restart may still be in use"
    )]
    RestartGrace { until: u64, wait_seconds: u64 },
    #[error("the git webhook is disabled: no secret is configured")]
    WebhookDisabled,
    #[error("missing or wrong X-Hub-Signature-256")]
    BadSignature,
    #[error(
        "this join token was already used to enrol {node}; a join token is good for one enrolment (rotate secrets/join-token-{node}.age to enrol the node again)"
    )]
    TokenSpent { node: String },
    #[error("enrolment is only offered on the coordinator's mutual-TLS port")]
    EnrolOverTls,
    #[error("this coordinator does not enrol nodes")]
    EnrolmentDisabled,
    #[error("no such endpoint")]
    NoSuchEndpoint,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("internal error")]
    Internal,
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated | Self::BadSignature | Self::TokenSpent { .. } => {
                StatusCode::UNAUTHORIZED
            }
            Self::EnrolOverTls => StatusCode::FORBIDDEN,
            Self::EnrolmentDisabled => StatusCode::NOT_FOUND,
            Self::WrongNode { .. } | Self::NodeMismatch { .. } | Self::WrongRole { .. } => {
                StatusCode::FORBIDDEN
            }
            Self::UnknownNode(_)
            | Self::WebhookDisabled
            | Self::NoSuchEndpoint
            | Self::NotHalted { .. } => StatusCode::NOT_FOUND,
            Self::SignerRefused(_) | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unreadable { status, .. } => *status,
            Self::LeaseHeld { .. }
            | Self::AzBudgetUsed { .. }
            | Self::RolloutPaused
            | Self::OutsideWindows { .. }
            | Self::RolloutHalted { .. }
            | Self::HaltsUnread { .. }
            | Self::EarlierRoleBusy { .. }
            | Self::LeaseNotHeld { .. }
            | Self::FencingMismatch { .. }
            | Self::LeaseExpired { .. } => StatusCode::CONFLICT,
            Self::RestartGrace { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, Json(ApiError::new(self.to_string()))).into_response();
        let headers = response.headers_mut();
        match &self {
            Self::Unauthenticated => {
                headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::RestartGrace { wait_seconds, .. } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(*wait_seconds));
            }
            _ => {}
        }
        response
    }
}

/// `a`, `a and b`, `a, b and c`.
fn and_list(items: &[String]) -> String {
    match items.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

/// `broker-1 for 412 more seconds and broker-3 for 20 more seconds`.
fn holders_text(holders: &[(String, u64)]) -> String {
    let each: Vec<String> = holders
        .iter()
        .map(|(holder, seconds)| format!("{holder} for {seconds} more seconds"))
        .collect();
    and_list(&each)
}

fn next_window_text(next_open: Option<u64>, now: u64) -> String {
    match next_open {
        Some(at) => format!(
            "; the next opens at {} (in {} s)",
            desired_state::format_utc(at),
            at.saturating_sub(now)
        ),
        None => String::new(),
    }
}
