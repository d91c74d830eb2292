//! The agent's HTTP API (`kraftops_agent::daemon::api`): every endpoint and
//! refusal through `oneshot`, the metrics text against the names the
//! example's alerts and dashboards query (and `promtool`), the OpenAPI
//! document against the router and the protocol types, and the real server
//! with graceful shutdown.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt as _;
use kraftops_agent::daemon::api::{self, MAX_BODY_BYTES};
use kraftops_agent::daemon::state::{AgentState, Metrics, Trigger};
use kraftops_agent::protocol::{
    CertificateStatus, DriftEvent, Phase, ReportedError, RestartRecord, StatusReport, UnitStatus,
    Waiting,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

const TOKEN: &str = "s3cret-api-token";

/// Every route the router serves. The OpenAPI test checks each is
/// documented (and nothing else is); add a route here when adding one.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/v1/status"),
    ("get", "/metrics"),
    ("post", "/v1/reconcile"),
];

/// A status with something in every field.
fn full_report() -> StatusReport {
    StatusReport {
        node: "broker-1".into(),
        role: "broker".into(),
        revision_seen: Some("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb".into()),
        revision_applied: Some("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into()),
        signer: Some("ops@example.com".into()),
        phase: Phase::Converged,
        units: vec![UnitStatus {
            name: "kafka.service".into(),
            active_state: "active".into(),
            sub_state: "running".into(),
        }],
        certificates: vec![
            CertificateStatus {
                name: "node".into(),
                not_after: 1_800_000_000,
            },
            CertificateStatus {
                name: "kafka-client".into(),
                not_after: 1_750_000_000,
            },
        ],
        last_error: Some(ReportedError {
            message: "the repository at bbbbbbb is invalid".into(),
            commit: Some("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb".into()),
            problems: vec![
                "topics/orders.yaml:3:15: partitions must be at least 1".into(),
                "nodes.yaml:12:9: unknown role \"brokr\"".into(),
            ],
            at: 1_700_000_100,
        }),
        drift: vec![DriftEvent {
            path: "/etc/kafka/server.properties".into(),
            at: 1_700_000_050,
        }],
        reported_at: 1_700_000_200,
        waiting: Some(Waiting {
            reason: "gate: under-replicated partitions: orders-1".into(),
            since: 1_700_000_030,
        }),
        restarts: vec![RestartRecord {
            unit: "kafka.service".into(),
            revision: Some("9f2c".into()),
            started_at: 1_700_000_000,
            healthy_at: Some(1_700_000_020),
            outcome: "healthy".into(),
            detail: Some("back in every ISR".into()),
        }],
    }
}

/// A status with every optional field absent and every list empty.
fn bare_report() -> StatusReport {
    StatusReport {
        node: "controller-1".into(),
        role: "controller".into(),
        revision_seen: None,
        revision_applied: None,
        signer: None,
        phase: Phase::Starting,
        units: vec![],
        certificates: vec![],
        last_error: None,
        drift: vec![],
        reported_at: 0,
        waiting: None,
        restarts: vec![],
    }
}

fn state_with(
    report: StatusReport,
    token: Option<&str>,
    capacity: usize,
) -> (Arc<AgentState>, mpsc::Receiver<Trigger>) {
    let (tx, rx) = mpsc::channel(capacity);
    let state = AgentState::new(report, tx, token.map(str::to_owned));
    (Arc::new(state), rx)
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("UTF-8 body")
    }

    fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().expect("ASCII content type"))
            .unwrap_or("")
    }

    /// The answer is an `ApiError` with this status.
    fn assert_api_error(&self, status: StatusCode) -> String {
        assert_eq!(
            self.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.content_type(), "application/json");
        let body = self.json();
        let object = body.as_object().expect("an object");
        assert_eq!(
            object.keys().collect::<Vec<_>>(),
            ["error", "status"],
            "ApiError fields: {body}"
        );
        assert_eq!(body["status"], "failed");
        body["error"]
            .as_str()
            .expect("error is a string")
            .to_owned()
    }
}

async fn call(app: Router, request: Request<Body>) -> Answer {
    let response = app.oneshot(request).await.expect("infallible router");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

async fn get(state: &Arc<AgentState>, path: &str) -> Answer {
    let request = Request::get(path).body(Body::empty()).expect("request");
    call(api::router(state.clone()), request).await
}

async fn post_reconcile(
    state: &Arc<AgentState>,
    authorization: Option<&str>,
    body: Vec<u8>,
) -> Answer {
    let mut request = Request::post("/v1/reconcile");
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    let request = request.body(Body::from(body)).expect("request");
    call(api::router(state.clone()), request).await
}

// ---------------------------------------------------------------- health

#[tokio::test]
async fn healthz_is_up_whatever_the_phase() {
    for phase in [Phase::Converged, Phase::Failed, Phase::Starting] {
        let mut report = full_report();
        report.phase = phase;
        let (state, _rx) = state_with(report, Some(TOKEN), 1);
        let answer = get(&state, "/healthz").await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.json(), json!({ "status": "UP" }));
    }
}

#[tokio::test]
async fn readyz_is_200_when_converged() {
    let (state, _rx) = state_with(full_report(), Some(TOKEN), 1);
    let answer = get(&state, "/readyz").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.json(),
        json!({ "status": "READY", "phase": "converged" })
    );
}

#[tokio::test]
async fn readyz_is_503_with_phase_and_error_when_not_converged() {
    let mut report = full_report();
    report.phase = Phase::Failed;
    let (state, _rx) = state_with(report, Some(TOKEN), 1);
    let answer = get(&state, "/readyz").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        answer.json(),
        json!({
            "status": "NOT_READY",
            "phase": "failed",
            "error": "the repository at bbbbbbb is invalid",
        })
    );

    let (state, _rx) = state_with(bare_report(), Some(TOKEN), 1);
    let answer = get(&state, "/readyz").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        answer.json(),
        json!({ "status": "NOT_READY", "phase": "starting", "error": null })
    );

    // Readiness follows the state as the loop changes it.
    state.update(|s| s.phase = Phase::Converged);
    assert_eq!(get(&state, "/readyz").await.status, StatusCode::OK);
    state.update(|s| s.phase = Phase::WaitingForLease);
    assert_eq!(
        get(&state, "/readyz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

// ---------------------------------------------------------------- status

#[tokio::test]
async fn status_is_the_report_as_json() {
    let (state, _rx) = state_with(full_report(), Some(TOKEN), 1);
    let answer = get(&state, "/v1/status").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.content_type(), "application/json");
    let body = answer.json();
    assert_eq!(
        body,
        serde_json::to_value(full_report()).expect("serializable")
    );
    assert_eq!(
        body["revision_applied"],
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    );
    assert_eq!(body["signer"], "ops@example.com");
    assert_eq!(
        body["last_error"]["problems"][0],
        "topics/orders.yaml:3:15: partitions must be at least 1"
    );
    assert_eq!(body["drift"][0]["path"], "/etc/kafka/server.properties");
    let parsed: StatusReport = serde_json::from_slice(&answer.body).expect("a StatusReport");
    assert_eq!(parsed, full_report());

    // It is the live state, not a copy taken when the router was built.
    state.update(|s| s.phase = Phase::Restarting);
    assert_eq!(
        get(&state, "/v1/status").await.json()["phase"],
        "restarting"
    );
}

// ---------------------------------------------------------------- metrics

/// One sample line: metric name, labels (unescaped), value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the sample lines of a text exposition, undoing label escapes, and
/// fails on anything malformed.
fn parse_samples(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        assert!(!line.is_empty(), "empty line in exposition:\n{text}");
        let name_end = line.find(['{', ' ']).expect("name then labels or value");
        let name = line[..name_end].to_owned();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad metric name {name:?}"
        );
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(after_brace) = rest.strip_prefix('{') {
            let mut chars = after_brace.char_indices();
            loop {
                let mut label = String::new();
                for (_, c) in chars.by_ref() {
                    if c == '=' {
                        break;
                    }
                    label.push(c);
                }
                assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "line {line:?}");
                let mut value = String::new();
                loop {
                    match chars.next().map(|(_, c)| c) {
                        Some('\\') => match chars.next().map(|(_, c)| c) {
                            Some('\\') => value.push('\\'),
                            Some('"') => value.push('"'),
                            Some('n') => value.push('\n'),
                            other => panic!("bad escape {other:?} in {line:?}"),
                        },
                        Some('"') => break,
                        Some('\n') | None => panic!("unterminated label value in {line:?}"),
                        Some(c) => value.push(c),
                    }
                }
                assert!(
                    labels.insert(label, value).is_none(),
                    "label repeated in {line:?}"
                );
                match chars.next() {
                    Some((_, ',')) => continue,
                    Some((i, '}')) => {
                        rest = &after_brace[i + 1..];
                        break;
                    }
                    other => panic!("expected , or }} in {line:?}, got {other:?}"),
                }
            }
        }
        let value = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|e| panic!("bad value {value:?} in {line:?}: {e}"));
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    samples
}

/// The value of the one sample with this name and exactly these labels.
fn value_of(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let wanted: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name && s.labels == wanted)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {name}{wanted:?}, found {found:?}; all samples with that name: {:?}",
        samples
            .iter()
            .filter(|s| s.name == name)
            .collect::<Vec<_>>()
    );
    found[0].value
}

fn count_of(samples: &[Sample], name: &str) -> usize {
    samples.iter().filter(|s| s.name == name).count()
}

/// Every metric family the contract names, with its type.
const FAMILIES: &[(&str, &str)] = &[
    ("kraftops_agent_converged", "gauge"),
    ("kraftops_agent_reconcile_total", "counter"),
    ("kraftops_agent_reconcile_duration_seconds", "summary"),
    ("kraftops_agent_last_reconcile_timestamp_seconds", "gauge"),
    ("kraftops_agent_info", "gauge"),
    ("kraftops_certificate_expiry_timestamp_seconds", "gauge"),
    ("kraftops_agent_drift_total", "counter"),
    ("kraftops_agent_files_written_total", "counter"),
    ("kraftops_agent_restarts_total", "counter"),
    ("kraftops_agent_phase", "gauge"),
];

/// The family a sample belongs to (a summary's `_sum`/`_count` belong to it).
fn family_of(sample: &str) -> &str {
    for (family, kind) in FAMILIES {
        if *kind == "summary" {
            if sample == format!("{family}_sum") || sample == format!("{family}_count") {
                return family;
            }
        } else if sample == *family {
            return family;
        }
    }
    panic!("sample {sample} belongs to no contract family")
}

/// Each family has one HELP and one TYPE line, before its samples, and every
/// sample belongs to a family of the contract.
fn assert_well_formed(text: &str) {
    let mut declared: BTreeMap<String, String> = BTreeMap::new();
    let mut helped = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(!help.trim().is_empty(), "empty HELP for {name}");
            assert!(helped.insert(name.to_owned()), "HELP twice for {name}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(
                declared.insert(name.to_owned(), kind.to_owned()).is_none(),
                "TYPE twice for {name}"
            );
        } else if !line.starts_with('#') {
            let name = &line[..line.find(['{', ' ']).expect("sample line")];
            let family = family_of(name);
            assert!(
                declared.contains_key(family) && helped.contains(family),
                "sample {name} before the HELP/TYPE of {family}"
            );
        }
    }
    let expected: BTreeMap<String, String> = FAMILIES
        .iter()
        .map(|(n, k)| ((*n).to_owned(), (*k).to_owned()))
        .collect();
    assert_eq!(declared, expected, "TYPE lines");
    assert_eq!(
        helped,
        expected.keys().cloned().collect::<BTreeSet<_>>(),
        "HELP lines"
    );
}

fn bump(counter: &std::sync::atomic::AtomicU64, n: u64) {
    Metrics::add(counter, n);
}

/// A state after some reconciling: two certificates, an applied revision,
/// every counter at a distinct value.
fn busy_state() -> Arc<AgentState> {
    let (state, _rx) = state_with(full_report(), Some(TOKEN), 1);
    let m = &state.metrics;
    bump(&m.reconciles_ok, 7);
    bump(&m.reconciles_failed, 2);
    bump(&m.reconciles_refused, 1);
    bump(&m.reconcile_micros_sum, 12_500_000);
    bump(&m.reconcile_count, 10);
    bump(&m.last_reconcile_unix, 1_700_000_123);
    bump(&m.drift_events, 3);
    bump(&m.files_written, 42);
    bump(&m.restarts, 5);
    state
}

#[test]
fn metrics_show_every_contract_metric_with_its_labels_and_value() {
    let state = busy_state();
    let text = api::render_metrics(&state, 1_700_000_500);
    assert_well_formed(&text);
    let samples = parse_samples(&text);

    assert_eq!(value_of(&samples, "kraftops_agent_converged", &[]), 1.0);
    for (result, n) in [("ok", 7.0), ("failed", 2.0), ("refused", 1.0)] {
        assert_eq!(
            value_of(
                &samples,
                "kraftops_agent_reconcile_total",
                &[("result", result)]
            ),
            n
        );
    }
    assert_eq!(count_of(&samples, "kraftops_agent_reconcile_total"), 3);
    assert_eq!(
        value_of(
            &samples,
            "kraftops_agent_reconcile_duration_seconds_sum",
            &[]
        ),
        12.5
    );
    assert_eq!(
        value_of(
            &samples,
            "kraftops_agent_reconcile_duration_seconds_count",
            &[]
        ),
        10.0
    );
    assert_eq!(
        value_of(
            &samples,
            "kraftops_agent_last_reconcile_timestamp_seconds",
            &[]
        ),
        1_700_000_123.0
    );
    assert_eq!(
        value_of(
            &samples,
            "kraftops_agent_info",
            &[
                ("node", "broker-1"),
                ("role", "broker"),
                ("revision", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            ]
        ),
        1.0
    );
    assert_eq!(
        value_of(
            &samples,
            "kraftops_certificate_expiry_timestamp_seconds",
            &[("certificate", "node")]
        ),
        1_800_000_000.0
    );
    assert_eq!(
        value_of(
            &samples,
            "kraftops_certificate_expiry_timestamp_seconds",
            &[("certificate", "kafka-client")]
        ),
        1_750_000_000.0
    );
    assert_eq!(
        count_of(&samples, "kraftops_certificate_expiry_timestamp_seconds"),
        2
    );
    assert_eq!(value_of(&samples, "kraftops_agent_drift_total", &[]), 3.0);
    assert_eq!(
        value_of(&samples, "kraftops_agent_files_written_total", &[]),
        42.0
    );
    assert_eq!(
        value_of(&samples, "kraftops_agent_restarts_total", &[]),
        5.0
    );
    for phase in Phase::ALL {
        let label = serde_json::to_value(phase).expect("phase");
        let label = label.as_str().expect("a string");
        let expected = if phase == Phase::Converged { 1.0 } else { 0.0 };
        assert_eq!(
            value_of(&samples, "kraftops_agent_phase", &[("phase", label)]),
            expected,
            "phase {label}"
        );
    }
    assert_eq!(count_of(&samples, "kraftops_agent_phase"), Phase::ALL.len());
}

#[test]
fn metrics_follow_the_phase_and_the_counters() {
    let state = busy_state();
    state.update(|s| s.phase = Phase::Refused);
    Metrics::add(&state.metrics.reconciles_refused, 1);
    let samples = parse_samples(&api::render_metrics(&state, 0));
    assert_eq!(value_of(&samples, "kraftops_agent_converged", &[]), 0.0);
    assert_eq!(
        value_of(&samples, "kraftops_agent_phase", &[("phase", "refused")]),
        1.0
    );
    assert_eq!(
        value_of(&samples, "kraftops_agent_phase", &[("phase", "converged")]),
        0.0
    );
    assert_eq!(
        value_of(
            &samples,
            "kraftops_agent_reconcile_total",
            &[("result", "refused")]
        ),
        2.0
    );
    let ones: Vec<_> = samples
        .iter()
        .filter(|s| s.name == "kraftops_agent_phase" && s.value == 1.0)
        .collect();
    assert_eq!(ones.len(), 1, "exactly one current phase: {ones:?}");
}

#[test]
fn metrics_of_a_fresh_agent() {
    let (state, _rx) = state_with(bare_report(), None, 1);
    let text = api::render_metrics(&state, 0);
    assert_well_formed(&text);
    let samples = parse_samples(&text);
    assert_eq!(value_of(&samples, "kraftops_agent_converged", &[]), 0.0);
    assert_eq!(
        value_of(
            &samples,
            "kraftops_agent_info",
            &[
                ("node", "controller-1"),
                ("role", "controller"),
                ("revision", "")
            ]
        ),
        1.0
    );
    assert_eq!(
        count_of(&samples, "kraftops_certificate_expiry_timestamp_seconds"),
        0
    );
    assert_eq!(
        value_of(
            &samples,
            "kraftops_agent_last_reconcile_timestamp_seconds",
            &[]
        ),
        0.0
    );
    assert_eq!(
        value_of(
            &samples,
            "kraftops_agent_reconcile_duration_seconds_sum",
            &[]
        ),
        0.0
    );
    assert_eq!(
        value_of(&samples, "kraftops_agent_phase", &[("phase", "starting")]),
        1.0
    );
}

#[test]
fn a_certificate_listed_twice_is_one_series_with_the_earlier_expiry() {
    let mut report = full_report();
    report.certificates.push(CertificateStatus {
        name: "node".into(),
        not_after: 1_600_000_000,
    });
    let (state, _rx) = state_with(report, None, 1);
    let samples = parse_samples(&api::render_metrics(&state, 0));
    assert_eq!(
        value_of(
            &samples,
            "kraftops_certificate_expiry_timestamp_seconds",
            &[("certificate", "node")]
        ),
        1_600_000_000.0
    );
    assert_eq!(
        count_of(&samples, "kraftops_certificate_expiry_timestamp_seconds"),
        2
    );
}

/// A report whose labels need every escape.
fn awkward_report() -> StatusReport {
    let mut report = full_report();
    report.node = "we\"ird\\node\nnext".into();
    report.role = "role with \"quotes\"".into();
    report.revision_applied = Some("back\\slash".into());
    report.certificates = vec![CertificateStatus {
        name: "line\nbreak".into(),
        not_after: 1,
    }];
    report
}

#[test]
fn label_values_are_escaped() {
    let (state, _rx) = state_with(awkward_report(), None, 1);
    let text = api::render_metrics(&state, 0);
    assert!(
        text.contains(
            r#"kraftops_agent_info{node="we\"ird\\node\nnext",role="role with \"quotes\"",revision="back\\slash"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"kraftops_certificate_expiry_timestamp_seconds{certificate="line\nbreak"} 1"#
        ),
        "{text}"
    );
    // Parsing undoes the escapes exactly, and no value broke its line.
    let samples = parse_samples(&text);
    assert_eq!(
        value_of(
            &samples,
            "kraftops_agent_info",
            &[
                ("node", "we\"ird\\node\nnext"),
                ("role", "role with \"quotes\""),
                ("revision", "back\\slash"),
            ]
        ),
        1.0
    );
    assert_well_formed(&text);
}

/// `promtool check metrics` over the exposition; fails when promtool is
/// missing rather than skipping.
fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}); install it (Debian: apt-get install prometheus) \
                 — scripts/install-deps does"
            )
        });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let output = child.wait_with_output().expect("promtool runs");
    assert!(
        output.status.success(),
        "promtool check metrics failed ({}):\n{}{}\n--- metrics ---\n{text}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn promtool_accepts_the_metrics() {
    promtool_check(&api::render_metrics(&busy_state(), 0));
    let (fresh, _rx) = state_with(bare_report(), None, 1);
    promtool_check(&api::render_metrics(&fresh, 0));
    let (awkward, _rx) = state_with(awkward_report(), None, 1);
    promtool_check(&api::render_metrics(&awkward, 0));
}

#[test]
fn promtool_check_can_fail() {
    // The check above would pass vacuously if promtool accepted anything.
    let result = std::panic::catch_unwind(|| {
        promtool_check("# TYPE x counter\nx{a=\"unterminated} 1\n");
    });
    assert!(result.is_err(), "promtool accepted a broken exposition");
}

#[tokio::test]
async fn metrics_endpoint_serves_the_text_format() {
    let state = busy_state();
    let answer = get(&state, "/metrics").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer
            .content_type()
            .starts_with("text/plain; version=0.0.4"),
        "content type {:?}",
        answer.content_type()
    );
    let text = answer.text();
    assert_well_formed(&text);
    let samples = parse_samples(&text);
    assert_eq!(value_of(&samples, "kraftops_agent_converged", &[]), 1.0);
    assert_eq!(
        value_of(&samples, "kraftops_agent_files_written_total", &[]),
        42.0
    );
}

// ---------------------------------------------------------------- reconcile

#[tokio::test]
async fn reconcile_with_the_token_queues_an_api_trigger() {
    let (state, mut rx) = state_with(full_report(), Some(TOKEN), 1);
    let answer = post_reconcile(&state, Some(&format!("Bearer {TOKEN}")), vec![]).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(answer.json(), json!({ "status": "QUEUED" }));
    assert_eq!(rx.try_recv().ok(), Some(Trigger::Api));
    assert!(rx.try_recv().is_err(), "one trigger per call");

    // The scheme is case-insensitive, as RFC 9110 says.
    let answer = post_reconcile(&state, Some(&format!("bearer {TOKEN}")), vec![]).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(rx.try_recv().ok(), Some(Trigger::Api));
}

#[tokio::test]
async fn reconcile_while_one_is_queued_says_so() {
    let (state, mut rx) = state_with(full_report(), Some(TOKEN), 1);
    let auth = format!("Bearer {TOKEN}");
    let first = post_reconcile(&state, Some(&auth), vec![]).await;
    assert_eq!(first.json(), json!({ "status": "QUEUED" }));
    let second = post_reconcile(&state, Some(&auth), vec![]).await;
    assert_eq!(second.status, StatusCode::ACCEPTED);
    assert_eq!(second.json(), json!({ "status": "ALREADY_QUEUED" }));
    assert_eq!(rx.try_recv().ok(), Some(Trigger::Api));
    assert!(rx.try_recv().is_err());
    // Once the loop took it, the next call queues again.
    let third = post_reconcile(&state, Some(&auth), vec![]).await;
    assert_eq!(third.json(), json!({ "status": "QUEUED" }));
}

#[tokio::test]
async fn reconcile_refuses_a_missing_or_wrong_token() {
    let (state, mut rx) = state_with(full_report(), Some(TOKEN), 4);
    let wrong_prefix = format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]);
    let longer = format!("Bearer {TOKEN}x");
    let basic = format!("Basic {TOKEN}");
    let bare = TOKEN.to_owned();
    for authorization in [
        None,
        Some("Bearer wrong"),
        Some(wrong_prefix.as_str()),
        Some(longer.as_str()),
        Some(basic.as_str()),
        Some(bare.as_str()),
        Some("Bearer "),
        Some("Bearer"),
    ] {
        let answer = post_reconcile(&state, authorization, vec![]).await;
        let message = answer.assert_api_error(StatusCode::UNAUTHORIZED);
        assert_eq!(
            message, "missing or wrong bearer token",
            "{authorization:?}"
        );
        assert_eq!(
            answer
                .headers
                .get(header::WWW_AUTHENTICATE)
                .map(|v| v.as_bytes()),
            Some(&b"Bearer"[..]),
            "{authorization:?}"
        );
        assert!(
            !answer.text().contains(TOKEN),
            "the answer must not show the token"
        );
    }
    assert!(rx.try_recv().is_err(), "a refused call queued a reconcile");
}

#[tokio::test]
async fn reconcile_without_a_configured_token_is_refused() {
    for configured in [None, Some("")] {
        let (state, mut rx) = state_with(full_report(), configured, 1);
        for authorization in [None, Some("Bearer "), Some("Bearer anything")] {
            let answer = post_reconcile(&state, authorization, vec![]).await;
            let message = answer.assert_api_error(StatusCode::FORBIDDEN);
            assert!(message.contains("no API token is configured"), "{message}");
        }
        assert!(rx.try_recv().is_err(), "refused, yet queued");
    }
}

#[tokio::test]
async fn reconcile_when_the_loop_has_stopped_is_503() {
    let (state, rx) = state_with(full_report(), Some(TOKEN), 1);
    drop(rx);
    let answer = post_reconcile(&state, Some(&format!("Bearer {TOKEN}")), vec![]).await;
    let message = answer.assert_api_error(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(message, "the reconcile loop is not running");
}

#[tokio::test]
async fn reconcile_bodies_are_limited() {
    let (state, mut rx) = state_with(full_report(), Some(TOKEN), 1);
    let auth = format!("Bearer {TOKEN}");
    let answer = post_reconcile(&state, Some(&auth), vec![b'x'; MAX_BODY_BYTES + 1]).await;
    let message = answer.assert_api_error(StatusCode::PAYLOAD_TOO_LARGE);
    assert!(message.contains("65536"), "{message}");
    assert!(
        rx.try_recv().is_err(),
        "an oversized call queued a reconcile"
    );

    let answer = post_reconcile(&state, Some(&auth), vec![b'x'; MAX_BODY_BYTES]).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "at the limit is fine");
    assert_eq!(rx.try_recv().ok(), Some(Trigger::Api));

    // Unauthenticated callers are refused before their body matters.
    let answer = post_reconcile(&state, None, vec![b'x'; MAX_BODY_BYTES + 1]).await;
    answer.assert_api_error(StatusCode::UNAUTHORIZED);
}

// ---------------------------------------------------------------- 404 / 405

#[tokio::test]
async fn unknown_routes_are_404_json() {
    let (state, _rx) = state_with(full_report(), Some(TOKEN), 1);
    for path in ["/", "/nope", "/v1/status/extra", "/v2/status", "/metrics/"] {
        let message = get(&state, path)
            .await
            .assert_api_error(StatusCode::NOT_FOUND);
        assert_eq!(message, "no such endpoint", "{path}");
    }
    let request = Request::post("/v1/nope")
        .body(Body::empty())
        .expect("request");
    call(api::router(state), request)
        .await
        .assert_api_error(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn wrong_methods_are_405_json() {
    let (state, mut rx) = state_with(full_report(), Some(TOKEN), 1);
    for (method, path) in [
        (Method::GET, "/v1/reconcile"),
        (Method::PUT, "/v1/reconcile"),
        (Method::POST, "/healthz"),
        (Method::POST, "/readyz"),
        (Method::DELETE, "/v1/status"),
        (Method::POST, "/metrics"),
    ] {
        let request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .expect("request");
        let message = call(api::router(state.clone()), request)
            .await
            .assert_api_error(StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(message, "method not allowed", "{method} {path}");
    }
    assert!(rx.try_recv().is_err());
}

// ---------------------------------------------------------------- OpenAPI

fn openapi() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/agent-api.openapi.yaml"
    );
    let text = std::fs::read_to_string(path).expect("docs/agent-api.openapi.yaml");
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

const HTTP_METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

#[tokio::test]
async fn openapi_documents_exactly_the_routes_the_router_serves() {
    let doc = openapi();
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.0.")),
        "an OpenAPI 3.0 document"
    );
    let paths = doc["paths"].as_object().expect("paths");
    let mut documented = BTreeSet::new();
    for (path, item) in paths {
        for method in item.as_object().expect("path item").keys() {
            if HTTP_METHODS.contains(&method.as_str()) {
                documented.insert((method.clone(), path.clone()));
            }
        }
    }
    let listed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(documented, listed, "documented vs served routes");

    // The list is the router's: every listed route is served (neither 404
    // nor 405).
    let (state, _rx) = state_with(full_report(), Some(TOKEN), 1);
    for (method, path) in ROUTES {
        let request = Request::builder()
            .method(method.to_uppercase().as_str())
            .uri(*path)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .expect("request");
        let answer = call(api::router(state.clone()), request).await;
        assert!(
            answer.status != StatusCode::NOT_FOUND
                && answer.status != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path} is listed but not served: {}",
            answer.status
        );
        let operation = &paths[*path][*method];
        let documented_codes = operation["responses"]
            .as_object()
            .expect("responses")
            .keys()
            .cloned()
            .collect::<Vec<_>>();
        assert!(
            documented_codes.contains(&answer.status.as_u16().to_string()),
            "{method} {path} answered {}, documented {documented_codes:?}",
            answer.status
        );
    }
}

fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
    let schema = &doc["components"]["schemas"][name];
    assert!(schema.is_object(), "no schema {name}");
    schema
}

fn property_names(schema: &Value) -> BTreeSet<String> {
    schema["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .cloned()
        .collect()
}

fn required_names(schema: &Value) -> BTreeSet<String> {
    schema["required"]
        .as_array()
        .map(|names| {
            names
                .iter()
                .map(|n| n.as_str().expect("name").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect()
}

#[test]
fn openapi_schemas_match_the_protocol_types() {
    let doc = openapi();
    let full = serde_json::to_value(full_report()).expect("serializable");
    let bare = serde_json::to_value(bare_report()).expect("serializable");
    let bare_error = serde_json::to_value(ReportedError {
        message: "m".into(),
        commit: None,
        problems: vec![],
        at: 0,
    })
    .expect("serializable");

    // Properties are the keys of a fully populated value; required are the
    // keys that are there even when everything optional is empty.
    for (name, populated, minimal) in [
        ("StatusReport", &full, &bare),
        ("UnitStatus", &full["units"][0], &full["units"][0]),
        (
            "CertificateStatus",
            &full["certificates"][0],
            &full["certificates"][0],
        ),
        ("ReportedError", &full["last_error"], &bare_error),
        ("DriftEvent", &full["drift"][0], &full["drift"][0]),
        ("Waiting", &full["waiting"], &full["waiting"]),
        ("RestartRecord", &full["restarts"][0], &full["restarts"][0]),
    ] {
        let schema = schema(&doc, name);
        assert_eq!(property_names(schema), keys(populated), "{name} properties");
        assert_eq!(required_names(schema), keys(minimal), "{name} required");
    }

    // Fields serialized as null are marked nullable, and only those.
    let report_schema = schema(&doc, "StatusReport");
    for (field, value) in bare.as_object().expect("object") {
        let nullable = report_schema["properties"][field]["nullable"] == true;
        assert_eq!(nullable, value.is_null(), "StatusReport.{field} nullable");
    }

    let phases: Vec<Value> = Phase::ALL
        .iter()
        .map(|p| serde_json::to_value(p).expect("phase"))
        .collect();
    assert_eq!(
        schema(&doc, "Phase")["enum"],
        Value::Array(phases),
        "Phase enum"
    );

    let api_error =
        serde_json::to_value(kraftops_agent::protocol::ApiError::new("x")).expect("serializable");
    assert_eq!(property_names(schema(&doc, "ApiError")), keys(&api_error));
}

#[test]
fn openapi_refs_resolve() {
    fn walk(value: &Value, doc: &Value, refs: &mut usize) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("$ref") {
                    let name = target
                        .strip_prefix("#/components/schemas/")
                        .unwrap_or_else(|| panic!("unexpected $ref {target}"));
                    assert!(
                        doc["components"]["schemas"][name].is_object(),
                        "dangling $ref {target}"
                    );
                    *refs += 1;
                }
                map.values().for_each(|v| walk(v, doc, refs));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, doc, refs)),
            _ => {}
        }
    }
    let doc = openapi();
    let mut refs = 0;
    walk(&doc, &doc, &mut refs);
    assert!(
        refs >= 10,
        "only {refs} $refs; did the document change shape?"
    );
}

// ---------------------------------------------------------------- real server

/// Reads one HTTP/1.1 response whose body has a Content-Length.
async fn read_response(stream: &mut tokio::net::TcpStream) -> (u16, String, String) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buffer).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = text[..end].to_owned();
            let length = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .expect("content-length");
            if buffer.len() >= end + 4 + length {
                let status = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .expect("status code");
                let body = text[end + 4..end + 4 + length].to_owned();
                return (status, head, body);
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("response in time")
            .expect("read");
        assert!(n > 0, "connection closed mid-response: {text:?}");
        buffer.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn the_real_server_answers_and_shuts_down_gracefully() {
    let (state, mut rx) = state_with(full_report(), Some(TOKEN), 4);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(api::serve(listener, state.clone(), shutdown.clone()));

    // A raw request on a keep-alive connection that then stays open, idle.
    let mut idle = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: agent\r\n\r\n")
        .await
        .expect("write");
    let (status, _, body) = read_response(&mut idle).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json"),
        json!({ "status": "UP" })
    );

    // reqwest, as an operator's tooling would call it.
    let client = reqwest::Client::new();
    let base = format!("http://{address}");
    let response = client
        .post(format!("{base}/v1/reconcile"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("reconcile request");
    assert_eq!(response.status().as_u16(), 202);
    assert_eq!(
        response.json::<Value>().await.expect("json"),
        json!({ "status": "QUEUED" })
    );
    assert_eq!(rx.recv().await, Some(Trigger::Api));
    let response = client
        .post(format!("{base}/v1/reconcile"))
        .bearer_auth("wrong")
        .send()
        .await
        .expect("reconcile request");
    assert_eq!(response.status().as_u16(), 401);
    let response = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics request");
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response
            .text()
            .await
            .expect("text")
            .contains("kraftops_agent_converged 1")
    );
    drop(client);

    // A request in flight when shutdown starts: its head is sent, its body
    // only half.
    let mut in_flight = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    in_flight
        .write_all(
            format!(
                "POST /v1/reconcile HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer {TOKEN}\r\n\
                 Content-Length: 10\r\n\r\n01234"
            )
            .as_bytes(),
        )
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;

    shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !server.is_finished(),
        "the server stopped with a request in flight"
    );

    in_flight.write_all(b"56789").await.expect("write");
    let (status, head, body) = read_response(&mut in_flight).await;
    assert_eq!(status, 202, "{head}\n{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json"),
        json!({ "status": "QUEUED" })
    );
    assert_eq!(rx.recv().await, Some(Trigger::Api));

    let result = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("serve returns after the last request, idle connections notwithstanding")
        .expect("serve task");
    result.expect("serve ends cleanly");

    // Both connections are closed, and nothing listens any more.
    let mut rest = Vec::new();
    // A reset counts as closed too; what matters is that it ends, empty.
    let _ = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest))
        .await
        .expect("the idle connection is closed");
    assert!(rest.is_empty(), "unexpected bytes on the idle connection");
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "still accepting connections after shutdown"
    );
}
