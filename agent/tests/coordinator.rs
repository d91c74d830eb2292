//! The coordinator's HTTP API: every endpoint and every refusal through the
//! router (`oneshot`), and one round trip through the real server.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use hmac::{Hmac, Mac};
use http_body_util::BodyExt as _;
use kraftops_agent::coordinator::{
    ClusterView, Coordinator, CsrSigner, HALT_FILE, MAX_ALERTS, MAX_BODY_BYTES, ManualClock,
    NodeEntry, RolloutRules, router, serve,
};
use kraftops_agent::protocol::{
    ApiError, CertificateResponse, Lease, LeaseEvent, LeaseEventKind, NodeView, Nudge, Phase,
    RolloutView, StatusReport,
};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

const START: u64 = 1_700_000_000;
const TTL_MAX: u64 = 900;
const VALIDITY: u64 = 90 * 86_400;
const SECRET: &str = "webhook-secret";

/// Signs anything but a CSR containing "weak"; panics on "panic".
#[derive(Debug)]
struct FakeSigner;

impl CsrSigner for FakeSigner {
    fn sign(
        &self,
        csr_pem: &str,
        node: &str,
        entry: &NodeEntry,
        validity: Duration,
        now: u64,
    ) -> Result<(String, u64), String> {
        assert!(
            !csr_pem.contains("panic"),
            "the fake signer was told to panic"
        );
        if csr_pem.contains("weak") {
            return Err("the key is too weak".to_owned());
        }
        let names = entry.dns_names.join(",");
        Ok((
            format!("CERT node={node} role={} names={names}", entry.role),
            now + validity.as_secs(),
        ))
    }

    fn ca_pem(&self) -> String {
        "-----BEGIN CERTIFICATE-----\nFAKECA\n-----END CERTIFICATE-----\n".to_owned()
    }
}

fn entry(role: &str, name: &str, ip: &str) -> NodeEntry {
    // 10.0.1.x is eu-central-1a, 10.0.2.x eu-central-1b.
    let az = if ip.starts_with("10.0.2.") {
        "eu-central-1b"
    } else {
        "eu-central-1a"
    };
    NodeEntry {
        role: role.to_owned(),
        az: az.to_owned(),
        dns_names: vec![format!("{name}.kafka.internal")],
        ips: vec![ip.parse::<IpAddr>().expect("a valid test IP")],
    }
}

fn token(node: &str) -> String {
    format!("join-token-of-{node}")
}

fn view() -> ClusterView {
    let nodes: BTreeMap<String, NodeEntry> = [
        ("observability-1", "observability", "10.0.1.50"),
        ("broker-2", "broker", "10.0.2.10"),
        ("broker-1", "broker", "10.0.1.10"),
        ("controller-1", "controller", "10.0.1.20"),
    ]
    .into_iter()
    .map(|(name, role, ip)| (name.to_owned(), entry(role, name, ip)))
    .collect();
    let join_tokens = nodes.keys().map(|n| (n.clone(), token(n))).collect();
    ClusterView {
        cluster: "kafka-test".to_owned(),
        nodes,
        join_tokens,
        lease_ttl_max: Duration::from_secs(TTL_MAX),
        cert_validity: Duration::from_secs(VALIDITY),
        rollout: RolloutRules::default(),
        revision: None,
    }
}

struct Harness {
    coordinator: Arc<Coordinator>,
    clock: Arc<ManualClock>,
    app: Router,
}

impl Harness {
    /// A coordinator started at `START`, still inside its restart grace.
    fn fresh() -> Self {
        let clock = Arc::new(ManualClock::new(START));
        let coordinator = Coordinator::new(
            view(),
            Arc::new(FakeSigner),
            clock.clone(),
            Some(SECRET.to_owned()),
        );
        let app = router(coordinator.clone());
        Self {
            coordinator,
            clock,
            app,
        }
    }

    /// A coordinator whose restart grace has passed.
    fn ready() -> Self {
        let harness = Self::fresh();
        harness.clock.advance(TTL_MAX);
        harness
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, header::HeaderMap, Vec<u8>) {
        let response = self
            .app
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("the body can be read")
            .to_bytes()
            .to_vec();
        (status, headers, body)
    }

    async fn call(
        &self,
        method: Method,
        uri: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(bearer) = bearer {
            request = request.header(header::AUTHORIZATION, format!("Bearer {bearer}"));
        }
        let request = match body {
            Some(body) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        }
        .expect("a valid request");
        let (status, _, body) = self.send(request).await;
        let value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).expect("every response body is JSON")
        };
        (status, value)
    }
}

/// Asserts an `ApiError` body and returns its message.
fn api_error(body: &Value) -> String {
    let error: ApiError =
        serde_json::from_value(body.clone()).expect("the error body is an ApiError");
    assert_eq!(error.status, "failed");
    assert!(!error.error.is_empty());
    error.error
}

fn report(node: &str, role: &str) -> Value {
    serde_json::to_value(StatusReport {
        node: node.to_owned(),
        role: role.to_owned(),
        revision_seen: Some("abc123".to_owned()),
        revision_applied: Some("abc123".to_owned()),
        signer: None,
        phase: Phase::Converged,
        units: vec![],
        certificates: vec![],
        last_error: None,
        drift: vec![],
        reported_at: START,
        waiting: None,
        restarts: vec![],
    })
    .expect("a report serializes")
}

fn lease_request(node: &str, ttl: u64, fencing: Option<u64>) -> Value {
    let mut body = json!({ "node": node, "ttl_seconds": ttl });
    if let Some(fencing) = fencing {
        body["fencing"] = json!(fencing);
    }
    body
}

fn lease(body: Value) -> Lease {
    serde_json::from_value(body).expect("the body is a Lease")
}

fn signature(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

// --- health, nodes, status ---------------------------------------------------

#[tokio::test]
async fn healthz_is_up() {
    let h = Harness::fresh();
    let (status, body) = h.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "status": "UP" }));
}

#[tokio::test]
async fn nodes_lists_every_node_by_name_reported_or_not() {
    let h = Harness::fresh();
    let (status, body) = h.call(Method::GET, "/v1/nodes", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let nodes: Vec<NodeView> = serde_json::from_value(body).expect("a list of NodeView");
    let names: Vec<&str> = nodes.iter().map(|n| n.node.as_str()).collect();
    assert_eq!(
        names,
        ["broker-1", "broker-2", "controller-1", "observability-1"]
    );
    assert!(
        nodes
            .iter()
            .all(|n| n.report.is_none() && n.age_seconds.is_none())
    );
    assert_eq!(nodes[2].role, "controller");
}

#[tokio::test]
async fn unknown_node_is_404() {
    let h = Harness::fresh();
    let (status, body) = h.call(Method::GET, "/v1/nodes/broker-9", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(api_error(&body).contains("broker-9"));
}

#[tokio::test]
async fn a_status_report_is_stored_and_ages() {
    let h = Harness::fresh();
    let (status, body) = h
        .call(
            Method::POST,
            "/v1/nodes/broker-1/status",
            Some(&token("broker-1")),
            Some(report("broker-1", "broker")),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let stored: NodeView = serde_json::from_value(body).expect("a NodeView");
    assert_eq!(stored.age_seconds, Some(0));

    h.clock.advance(42);
    let (status, body) = h.call(Method::GET, "/v1/nodes/broker-1", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let view: NodeView = serde_json::from_value(body).expect("a NodeView");
    assert_eq!(view.age_seconds, Some(42));
    let report = view.report.expect("the stored report");
    assert_eq!(report.phase, Phase::Converged);
    assert_eq!(report.revision_applied.as_deref(), Some("abc123"));

    let (_, body) = h.call(Method::GET, "/v1/nodes", None, None).await;
    let nodes: Vec<NodeView> = serde_json::from_value(body).expect("a list of NodeView");
    let reported: Vec<&str> = nodes
        .iter()
        .filter(|n| n.report.is_some())
        .map(|n| n.node.as_str())
        .collect();
    assert_eq!(reported, ["broker-1"]);
}

#[tokio::test]
async fn a_status_report_without_a_valid_token_is_401() {
    let h = Harness::fresh();
    for bearer in [None, Some("not-a-token"), Some("")] {
        let mut request = Request::post("/v1/nodes/broker-1/status")
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(bearer) = bearer {
            request = request.header(header::AUTHORIZATION, format!("Bearer {bearer}"));
        }
        let request = request
            .body(Body::from(report("broker-1", "broker").to_string()))
            .expect("a valid request");
        let (status, headers, body) = h.send(request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "bearer {bearer:?}");
        assert_eq!(
            headers.get(header::WWW_AUTHENTICATE).map(|v| v.as_bytes()),
            Some(&b"Bearer"[..])
        );
        let body: Value = serde_json::from_slice(&body).expect("JSON");
        api_error(&body);
    }
    // Basic auth with the right token is not a bearer token.
    let request = Request::post("/v1/nodes/broker-1/status")
        .header(
            header::AUTHORIZATION,
            format!("Basic {}", token("broker-1")),
        )
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(report("broker-1", "broker").to_string()))
        .expect("a valid request");
    assert_eq!(h.send(request).await.0, StatusCode::UNAUTHORIZED);
    assert!(h.coordinator.nodes()[0].report.is_none());
}

#[tokio::test]
async fn a_node_cannot_report_with_another_nodes_token() {
    let h = Harness::fresh();
    let (status, body) = h
        .call(
            Method::POST,
            "/v1/nodes/broker-1/status",
            Some(&token("broker-2")),
            Some(report("broker-1", "broker")),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let message = api_error(&body);
    assert!(message.contains("broker-2"), "{message}");
    assert!(h.coordinator.nodes()[0].report.is_none());
}

#[tokio::test]
async fn a_node_cannot_report_as_another_in_the_body() {
    let h = Harness::fresh();
    let (status, body) = h
        .call(
            Method::POST,
            "/v1/nodes/broker-1/status",
            Some(&token("broker-1")),
            Some(report("broker-2", "broker")),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    api_error(&body);
    assert!(h.coordinator.nodes().iter().all(|n| n.report.is_none()));
}

#[tokio::test]
async fn a_status_report_for_an_unknown_node_is_404() {
    let h = Harness::fresh();
    let (status, body) = h
        .call(
            Method::POST,
            "/v1/nodes/broker-9/status",
            Some(&token("broker-1")),
            Some(report("broker-9", "broker")),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    api_error(&body);
}

#[tokio::test]
async fn a_malformed_report_is_refused_as_json() {
    let h = Harness::fresh();
    let (status, body) = h
        .call(
            Method::POST,
            "/v1/nodes/broker-1/status",
            Some(&token("broker-1")),
            Some(json!({ "node": "broker-1" })),
        )
        .await;
    assert!(status.is_client_error(), "{status}");
    assert!(api_error(&body).contains("missing field"));
}

#[tokio::test]
async fn a_replaced_view_drops_old_tokens_and_reports() {
    let h = Harness::fresh();
    let (status, _) = h
        .call(
            Method::POST,
            "/v1/nodes/broker-2/status",
            Some(&token("broker-2")),
            Some(report("broker-2", "broker")),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let mut next = view();
    next.nodes.remove("broker-2");
    next.join_tokens.remove("broker-2");
    next.join_tokens
        .insert("broker-1".to_owned(), "rotated".to_owned());
    h.coordinator.set_view(next);

    let (status, _) = h.call(Method::GET, "/v1/nodes/broker-2", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = h
        .call(
            Method::POST,
            "/v1/nodes/broker-1/status",
            Some(&token("broker-1")),
            Some(report("broker-1", "broker")),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = h
        .call(
            Method::POST,
            "/v1/nodes/broker-1/status",
            Some("rotated"),
            Some(report("broker-1", "broker")),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_token_two_nodes_share_authenticates_neither() {
    let h = Harness::fresh();
    let mut shared = view();
    shared
        .join_tokens
        .insert("broker-2".to_owned(), token("broker-1"));
    h.coordinator.set_view(shared);
    let (status, _) = h
        .call(
            Method::POST,
            "/v1/nodes/broker-1/status",
            Some(&token("broker-1")),
            Some(report("broker-1", "broker")),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

// --- certificates ------------------------------------------------------------

fn csr(node: &str, pem: &str) -> Value {
    json!({ "node": node, "csr_pem": pem })
}

#[tokio::test]
async fn a_csr_is_signed_for_its_own_node() {
    let h = Harness::fresh();
    let (status, body) = h
        .call(
            Method::POST,
            "/v1/certificates",
            Some(&token("broker-1")),
            Some(csr("broker-1", "CSR")),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let signed: CertificateResponse = serde_json::from_value(body).expect("a CertificateResponse");
    assert_eq!(
        signed.certificate_pem,
        "CERT node=broker-1 role=broker names=broker-1.kafka.internal"
    );
    assert_eq!(signed.not_after, START + VALIDITY);
    assert!(signed.ca_pem.contains("FAKECA"));
}

#[tokio::test]
async fn csr_refusals() {
    let h = Harness::fresh();
    let cases = [
        (
            Some("nope".to_owned()),
            csr("broker-1", "CSR"),
            StatusCode::UNAUTHORIZED,
        ),
        (None, csr("broker-1", "CSR"), StatusCode::UNAUTHORIZED),
        (
            Some(token("broker-2")),
            csr("broker-1", "CSR"),
            StatusCode::FORBIDDEN,
        ),
        (
            Some(token("broker-1")),
            csr("broker-9", "CSR"),
            StatusCode::NOT_FOUND,
        ),
        (
            Some(token("broker-1")),
            csr("broker-1", "weak CSR"),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (bearer, body, expected) in cases {
        let (status, response) = h
            .call(
                Method::POST,
                "/v1/certificates",
                bearer.as_deref(),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, expected, "{body} -> {response}");
        api_error(&response);
    }
    let (_, response) = h
        .call(
            Method::POST,
            "/v1/certificates",
            Some(&token("broker-1")),
            Some(csr("broker-1", "weak CSR")),
        )
        .await;
    assert_eq!(
        api_error(&response),
        "certificate request refused: the key is too weak"
    );
}

#[tokio::test]
async fn a_signer_failure_is_500_without_details() {
    let h = Harness::fresh();
    let (status, body) = h
        .call(
            Method::POST,
            "/v1/certificates",
            Some(&token("broker-1")),
            Some(csr("broker-1", "panic")),
        )
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(api_error(&body), "internal error");
}

#[tokio::test]
async fn the_ca_is_served_as_pem_text() {
    let h = Harness::fresh();
    let request = Request::get("/v1/ca.pem")
        .body(Body::empty())
        .expect("a valid request");
    let (status, headers, body) = h.send(request).await;
    assert_eq!(status, StatusCode::OK);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .expect("a content type");
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert!(
        String::from_utf8(body)
            .expect("UTF-8")
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
}

// --- leases ------------------------------------------------------------------

async fn acquire(h: &Harness, role: &str, node: &str, ttl: u64) -> (StatusCode, Value) {
    h.call(
        Method::POST,
        &format!("/v1/leases/{role}"),
        Some(&token(node)),
        Some(lease_request(node, ttl, None)),
    )
    .await
}

#[tokio::test]
async fn a_lease_is_granted_once_per_role() {
    let h = Harness::ready();
    let (status, body) = acquire(&h, "broker", "broker-1", 300).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let first = lease(body);
    assert_eq!(first.holder, "broker-1");
    assert_eq!(first.role, "broker");
    assert_eq!(first.expires_in_seconds, 300);

    // Held by another broker: 409 naming the holder.
    let (status, body) = acquire(&h, "broker", "broker-2", 300).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(api_error(&body).contains("broker-1"));

    // The holder re-acquiring gets its current lease back, unchanged.
    h.clock.advance(10);
    let (status, body) = acquire(&h, "broker", "broker-1", 300).await;
    assert_eq!(status, StatusCode::OK);
    let again = lease(body);
    assert_eq!(again.fencing, first.fencing);
    assert_eq!(again.expires_in_seconds, 290);

    // Another role's lease is independent, and its fencing is newer.
    let (status, body) = acquire(&h, "controller", "controller-1", 300).await;
    assert_eq!(status, StatusCode::OK);
    let controller = lease(body);
    assert!(controller.fencing > first.fencing);

    let (status, body) = h.call(Method::GET, "/v1/leases", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let leases: Vec<Lease> = serde_json::from_value(body).expect("a list of Lease");
    assert_eq!(leases, vec![again, controller]);
}

#[tokio::test]
async fn a_lease_ttl_is_capped_and_must_be_positive() {
    let h = Harness::ready();
    let (status, body) = acquire(&h, "broker", "broker-1", 10 * TTL_MAX).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(lease(body).expires_in_seconds, TTL_MAX);

    let (status, body) = acquire(&h, "controller", "controller-1", 0).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    api_error(&body);
}

#[tokio::test]
async fn lease_refusals_for_the_wrong_node() {
    let h = Harness::ready();
    // A node of another role.
    let (status, body) = acquire(&h, "broker", "controller-1", 300).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(api_error(&body).contains("controller"));
    // A token of another node.
    let (status, _) = h
        .call(
            Method::POST,
            "/v1/leases/broker",
            Some(&token("broker-2")),
            Some(lease_request("broker-1", 300, None)),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // No token.
    let (status, _) = h
        .call(
            Method::POST,
            "/v1/leases/broker",
            None,
            Some(lease_request("broker-1", 300, None)),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // An unknown node.
    let (status, _) = h
        .call(
            Method::POST,
            "/v1/leases/broker",
            Some(&token("broker-1")),
            Some(lease_request("broker-9", 300, None)),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(h.coordinator.leases().is_empty());
}

#[tokio::test]
async fn renewing_needs_the_current_fencing() {
    let h = Harness::ready();
    let (_, body) = acquire(&h, "broker", "broker-1", 300).await;
    let granted = lease(body);
    h.clock.advance(100);

    let broker_1 = token("broker-1");
    let renew = |fencing: Option<u64>| {
        h.call(
            Method::PUT,
            "/v1/leases/broker",
            Some(&broker_1),
            Some(lease_request("broker-1", 300, fencing)),
        )
    };
    let (status, body) = renew(Some(granted.fencing + 1)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    api_error(&body);
    let (status, body) = renew(None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(api_error(&body).contains("fencing"));

    let (status, body) = renew(Some(granted.fencing)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let renewed = lease(body);
    assert_eq!(renewed.fencing, granted.fencing);
    assert_eq!(renewed.expires_in_seconds, 300);
}

#[tokio::test]
async fn releasing_needs_the_current_fencing_and_frees_the_role() {
    let h = Harness::ready();
    let (_, body) = acquire(&h, "broker", "broker-1", 300).await;
    let granted = lease(body);

    let broker_1 = token("broker-1");
    let release = |fencing: u64| {
        h.call(
            Method::DELETE,
            "/v1/leases/broker",
            Some(&broker_1),
            Some(lease_request("broker-1", 300, Some(fencing))),
        )
    };
    let (status, body) = release(granted.fencing - 1).await;
    assert_eq!(status, StatusCode::CONFLICT);
    api_error(&body);
    assert_eq!(h.coordinator.leases().len(), 1);

    let (status, _) = release(granted.fencing).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(h.coordinator.leases().is_empty());
    // A retried release is harmless.
    let (status, _) = release(granted.fencing).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let (status, body) = acquire(&h, "broker", "broker-2", 300).await;
    assert_eq!(status, StatusCode::OK);
    assert!(lease(body).fencing > granted.fencing);
}

#[tokio::test]
async fn an_expired_lease_can_be_taken_by_another_node() {
    let h = Harness::ready();
    let (_, body) = acquire(&h, "broker", "broker-1", 60).await;
    let old = lease(body);

    h.clock.advance(59);
    let (status, _) = acquire(&h, "broker", "broker-2", 60).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "still held one second before expiry"
    );

    h.clock.advance(1);
    assert!(
        h.coordinator.leases().is_empty(),
        "expired leases are not listed"
    );
    let (status, body) = acquire(&h, "broker", "broker-2", 60).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let new = lease(body);
    assert_eq!(new.holder, "broker-2");
    assert!(new.fencing > old.fencing);

    // The old holder cannot renew its grant, and releasing it (gone) is a
    // harmless no-op that leaves the new grant alone.
    let broker_1 = token("broker-1");
    let call = |method: Method| {
        h.call(
            method,
            "/v1/leases/broker",
            Some(&broker_1),
            Some(lease_request("broker-1", 60, Some(old.fencing))),
        )
    };
    let (status, _) = call(Method::PUT).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = call(Method::DELETE).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(h.coordinator.leases(), vec![new]);
}

#[tokio::test]
async fn an_expired_lease_is_not_renewed() {
    let h = Harness::ready();
    let (_, body) = acquire(&h, "broker", "broker-1", 60).await;
    let old = lease(body);
    h.clock.advance(61);
    let (status, body) = h
        .call(
            Method::PUT,
            "/v1/leases/broker",
            Some(&token("broker-1")),
            Some(lease_request("broker-1", 60, Some(old.fencing))),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(api_error(&body).contains("expired"));
}

#[tokio::test]
async fn no_lease_is_granted_until_one_ttl_after_start() {
    let h = Harness::fresh();
    let request = Request::post("/v1/leases/broker")
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", token("broker-1")),
        )
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(lease_request("broker-1", 60, None).to_string()))
        .expect("a valid request");
    let (status, headers, body) = h.send(request).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        headers.get(header::RETRY_AFTER).map(|v| v.as_bytes()),
        Some(TTL_MAX.to_string().as_bytes())
    );
    let body: Value = serde_json::from_slice(&body).expect("JSON");
    let message = api_error(&body);
    assert!(
        message.contains(&(START + TTL_MAX).to_string()),
        "the message says when: {message}"
    );

    h.clock.advance(TTL_MAX - 1);
    let (status, _) = acquire(&h, "broker", "broker-1", 60).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    h.clock.advance(1);
    let (status, body) = acquire(&h, "broker", "broker-1", 60).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn fencing_ids_keep_growing_across_coordinator_restarts() {
    let first = Harness::ready();
    for _ in 0..3 {
        let (_, body) = acquire(&first, "broker", "broker-1", 60).await;
        let granted = lease(body);
        let (status, _) = first
            .call(
                Method::DELETE,
                "/v1/leases/broker",
                Some(&token("broker-1")),
                Some(lease_request("broker-1", 60, Some(granted.fencing))),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    let (_, body) = acquire(&first, "broker", "broker-1", 60).await;
    let before = lease(body);

    // The restarted coordinator starts a second later and waits its grace.
    let clock = Arc::new(ManualClock::new(START + TTL_MAX + 1));
    let restarted = Coordinator::new(view(), Arc::new(FakeSigner), clock.clone(), None);
    clock.advance(TTL_MAX);
    let second = Harness {
        app: router(restarted.clone()),
        coordinator: restarted,
        clock,
    };
    let (status, body) = acquire(&second, "broker", "broker-1", 60).await;
    assert_eq!(status, StatusCode::OK);
    assert!(lease(body).fencing > before.fencing);
}

// --- nudges ------------------------------------------------------------------

#[tokio::test]
async fn the_git_webhook_nudges_with_a_valid_signature_only() {
    let h = Harness::fresh();
    let payload = br#"{"ref":"refs/heads/main","after":"abc123"}"#;
    let post = |signature: Option<String>| {
        let mut request = Request::post("/v1/hooks/git")
            .header(header::CONTENT_TYPE, "application/json")
            .header("X-GitHub-Event", "push");
        if let Some(signature) = signature {
            request = request.header("X-Hub-Signature-256", signature);
        }
        h.send(
            request
                .body(Body::from(&payload[..]))
                .expect("a valid request"),
        )
    };

    let (status, _, _) = post(None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = post(Some(signature(b"another body"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = post(Some("sha256=zz".to_owned())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = post(Some(signature(payload).replace("sha256=", "sha1="))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(h.coordinator.generation(), 0);

    let (status, _, body) = post(Some(signature(payload))).await;
    assert_eq!(status, StatusCode::OK);
    let nudge: Nudge = serde_json::from_slice(&body).expect("a Nudge");
    assert_eq!(nudge.generation, 1);
    assert_eq!(h.coordinator.generation(), 1);
}

#[tokio::test]
async fn the_git_webhook_is_404_without_a_secret() {
    let clock = Arc::new(ManualClock::new(START));
    for secret in [None, Some(String::new())] {
        let coordinator = Coordinator::new(view(), Arc::new(FakeSigner), clock.clone(), secret);
        let h = Harness {
            app: router(coordinator.clone()),
            coordinator,
            clock: clock.clone(),
        };
        let request = Request::post("/v1/hooks/git")
            .header("X-Hub-Signature-256", signature(b"{}"))
            .body(Body::from("{}"))
            .expect("a valid request");
        let (status, _, body) = h.send(request).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let body: Value = serde_json::from_slice(&body).expect("JSON");
        assert!(api_error(&body).contains("disabled"));
        assert_eq!(h.coordinator.generation(), 0);
    }
}

#[tokio::test]
async fn a_node_token_can_nudge() {
    let h = Harness::fresh();
    let (status, _) = h.call(Method::POST, "/v1/nudge", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = h
        .call(
            Method::POST,
            "/v1/nudge",
            Some(&token("controller-1")),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "generation": 1 }));
}

#[tokio::test]
async fn a_long_poll_returns_as_soon_as_a_nudge_comes() {
    let h = Harness::fresh();
    let app = h.app.clone();
    let started = Instant::now();
    let waiter = tokio::spawn(async move {
        let request = Request::get("/v1/nudges?after=0&timeout=30")
            .body(Body::empty())
            .expect("a valid request");
        let response = app.oneshot(request).await.expect("infallible");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        (status, body)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiter.is_finished(),
        "the poll waits while nothing changes"
    );
    h.coordinator.nudge();
    let (status, body) = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the poll returns well before its timeout")
        .expect("the waiter did not panic");
    assert_eq!(status, StatusCode::OK);
    let nudge: Nudge = serde_json::from_slice(&body).expect("a Nudge");
    assert_eq!(nudge.generation, 1);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_long_poll_times_out_with_the_current_generation() {
    let h = Harness::fresh();
    h.coordinator.nudge();
    let started = Instant::now();
    let (status, body) = h
        .call(Method::GET, "/v1/nudges?after=1&timeout=1", None, None)
        .await;
    let elapsed = started.elapsed();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "generation": 1 }));
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[tokio::test]
async fn a_long_poll_behind_or_without_after_returns_at_once() {
    let h = Harness::fresh();
    h.coordinator.nudge();
    h.coordinator.nudge();
    for uri in ["/v1/nudges?after=0&timeout=30", "/v1/nudges"] {
        let started = Instant::now();
        let (status, body) = h.call(Method::GET, uri, None, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, json!({ "generation": 2 }));
        assert!(started.elapsed() < Duration::from_secs(2), "{uri}");
    }
    let (status, body) = h
        .call(Method::GET, "/v1/nudges?after=minus-one", None, None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    api_error(&body);
}

// --- alerts ------------------------------------------------------------------

fn alertmanager_payload(alerts: &[(&str, &str)]) -> Value {
    json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"KafkaBrokerDown\"}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "coordinator",
        "groupLabels": { "alertname": "KafkaBrokerDown" },
        "commonLabels": { "alertname": "KafkaBrokerDown" },
        "commonAnnotations": {},
        "externalURL": "http://observability-1.kafka.internal:9093",
        "alerts": alerts.iter().map(|(fingerprint, status)| json!({
            "status": status,
            "labels": { "alertname": "KafkaBrokerDown", "instance": fingerprint },
            "annotations": { "summary": "a broker is down" },
            "startsAt": "2025-01-01T00:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://observability-1.kafka.internal:9090/graph",
            "fingerprint": fingerprint,
        })).collect::<Vec<_>>(),
    })
}

#[tokio::test]
async fn alerts_are_kept_newest_first_and_deduplicated() {
    let h = Harness::fresh();
    let (status, body) = h
        .call(
            Method::POST,
            "/v1/alerts",
            None,
            Some(alertmanager_payload(&[("a1", "firing"), ("b2", "firing")])),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "accepted": 2 }));

    h.clock.advance(300);
    let (status, _) = h
        .call(
            Method::POST,
            "/v1/alerts",
            None,
            Some(alertmanager_payload(&[("a1", "resolved")])),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = h.call(Method::GET, "/v1/alerts", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let alerts = body.as_array().expect("a list");
    assert_eq!(alerts.len(), 2);
    assert_eq!(alerts[0]["fingerprint"], "a1");
    assert_eq!(alerts[0]["status"], "resolved");
    assert_eq!(alerts[0]["received_at"], START + 300);
    assert_eq!(alerts[0]["receiver"], "coordinator");
    assert_eq!(alerts[0]["labels"]["instance"], "a1");
    assert_eq!(alerts[1]["fingerprint"], "b2");
}

#[tokio::test]
async fn only_the_newest_alerts_are_kept() {
    let h = Harness::fresh();
    let fingerprints: Vec<String> = (0..MAX_ALERTS + 50).map(|i| format!("f{i}")).collect();
    let alerts: Vec<(&str, &str)> = fingerprints
        .iter()
        .map(|f| (f.as_str(), "firing"))
        .collect();
    let (status, _) = h
        .call(
            Method::POST,
            "/v1/alerts",
            None,
            Some(alertmanager_payload(&alerts)),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let kept = h.coordinator.alerts();
    assert_eq!(kept.len(), MAX_ALERTS);
    assert_eq!(
        kept[0].alert.fingerprint.as_deref(),
        Some(format!("f{}", MAX_ALERTS + 49).as_str())
    );
    assert_eq!(
        kept[MAX_ALERTS - 1].alert.fingerprint.as_deref(),
        Some("f50")
    );
}

#[tokio::test]
async fn an_oversized_body_is_413_as_json() {
    let h = Harness::fresh();
    let huge = json!({ "receiver": "x".repeat(MAX_BODY_BYTES), "alerts": [] });
    let (status, body) = h.call(Method::POST, "/v1/alerts", None, Some(huge)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    api_error(&body);
    assert!(h.coordinator.alerts().is_empty());
}

// --- routing -----------------------------------------------------------------

#[tokio::test]
async fn unknown_routes_and_methods_are_json_errors() {
    let h = Harness::fresh();
    let (status, body) = h.call(Method::GET, "/v1/nothing-here", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    api_error(&body);
    let request = Request::delete("/v1/nodes")
        .body(Body::empty())
        .expect("a valid request");
    let (status, headers, body) = h.send(request).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let allow = headers
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(allow.contains("GET"), "Allow: {allow:?}");
    api_error(&serde_json::from_slice(&body).expect("JSON"));
}

// --- the real server -----------------------------------------------------------

#[tokio::test]
async fn the_real_server_serves_and_shuts_down_gracefully() {
    let clock = Arc::new(ManualClock::new(START));
    let coordinator = Coordinator::new(
        view(),
        Arc::new(FakeSigner),
        clock.clone(),
        Some(SECRET.to_owned()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let base = format!("http://{}", listener.local_addr().expect("a bound address"));
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve(listener, coordinator.clone(), shutdown.clone()));
    let client = reqwest::Client::new();

    let health: Value = client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("the server answers")
        .json()
        .await
        .expect("JSON");
    assert_eq!(health, json!({ "status": "UP" }));

    let response = client
        .post(format!("{base}/v1/nodes/broker-1/status"))
        .bearer_auth(token("broker-1"))
        .json(&report("broker-1", "broker"))
        .send()
        .await
        .expect("the server answers");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let view: NodeView = client
        .get(format!("{base}/v1/nodes/broker-1"))
        .send()
        .await
        .expect("the server answers")
        .json()
        .await
        .expect("a NodeView");
    assert!(view.report.is_some());

    // A push to git wakes a waiting agent over the network.
    let poll = tokio::spawn({
        let client = client.clone();
        let url = format!("{base}/v1/nudges?after=0&timeout=30");
        async move { client.get(url).send().await?.json::<Nudge>().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let payload = br#"{"ref":"refs/heads/main"}"#.to_vec();
    let response = client
        .post(format!("{base}/v1/hooks/git"))
        .header("X-Hub-Signature-256", signature(&payload))
        .body(payload)
        .send()
        .await
        .expect("the server answers");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let nudge = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("the poll returns on the nudge")
        .expect("the poll task did not panic")
        .expect("the poll succeeded");
    assert_eq!(nudge.generation, 1);

    // Shutting down does not wait out a pending long-poll.
    let pending = tokio::spawn({
        let client = client.clone();
        let url = format!("{base}/v1/nudges?after=1&timeout=60");
        async move { client.get(url).send().await?.json::<Nudge>().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = Instant::now();
    shutdown.cancel();
    let served = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server stops promptly")
        .expect("the server task did not panic");
    served.expect("the server stopped cleanly");
    assert!(stopping.elapsed() < Duration::from_secs(10));
    let answered = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("the pending poll was answered")
        .expect("the poll task did not panic")
        .expect("the pending poll got its answer before the server stopped");
    assert_eq!(answered.generation, 1);

    assert!(
        client.get(format!("{base}/healthz")).send().await.is_err(),
        "nothing listens after shutdown"
    );
}

#[tokio::test]
async fn metrics_show_nodes_phases_and_report_ages_for_prometheus() {
    let h = Harness::fresh();
    let (status, _) = h
        .call(
            Method::POST,
            "/v1/nodes/broker-1/status",
            Some(&token("broker-1")),
            Some(report("broker-1", "broker")),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    h.clock.advance(7);
    let request = Request::builder()
        .uri("/metrics")
        .body(Body::empty())
        .expect("a valid request");
    let (status, headers, body) = h.send(request).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .expect("ASCII")
            .starts_with("text/plain; version=0.0.4")
    );
    let text = String::from_utf8(body).expect("UTF-8");
    assert!(text.contains("kraftops_coordinator_nodes 4\n"), "{text}");
    assert!(
        text.contains(
            "kraftops_coordinator_node_phase{node=\"broker-1\",role=\"broker\",phase=\"converged\"} 1\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "kraftops_coordinator_node_phase{node=\"broker-2\",role=\"broker\",phase=\"none\"} 1\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("kraftops_coordinator_report_age_seconds{node=\"broker-1\"} 7\n"),
        "{text}"
    );
    assert!(
        !text.contains("report_age_seconds{node=\"broker-2\"}"),
        "{text}"
    );
    // Every sample line is `name{labels} value` with a numeric value.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().expect("a value");
        assert!(value.parse::<f64>().is_ok(), "not a sample: {line}");
    }
}

#[tokio::test]
async fn a_lease_record_lets_a_first_start_grant_at_once_and_a_restart_wait_for_the_last_lease() {
    let dir = tempfile::tempdir().expect("tempdir");
    let record = dir.path().join("leases-until");
    let start = |clock: Arc<ManualClock>| {
        let coordinator = Coordinator::with_lease_record(
            view(),
            Arc::new(FakeSigner),
            clock.clone(),
            None,
            record.clone(),
        );
        Harness {
            app: router(coordinator.clone()),
            coordinator,
            clock,
        }
    };
    // First start ever: no record, no grace.
    let first = start(Arc::new(ManualClock::new(START)));
    let (status, body) = acquire(&first, "broker", "broker-1", 60).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let granted = lease(body);
    let recorded: u64 = std::fs::read_to_string(&record)
        .expect("the record is written before the grant")
        .trim()
        .parse()
        .expect("a Unix time");
    assert_eq!(recorded, START + 60);

    // A restart 10 s later waits until that lease would have expired, not
    // a whole TTL_MAX.
    let second = start(Arc::new(ManualClock::new(START + 10)));
    let (status, body) = acquire(&second, "broker", "broker-2", 60).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        api_error(&body).contains(&format!("until {}", START + 60)),
        "{body}"
    );
    second.clock.advance(50);
    let (status, body) = acquire(&second, "broker", "broker-2", 60).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(lease(body).fencing > granted.fencing);

    // An unreadable record: the full grace of one TTL.
    std::fs::write(&record, "garbage").expect("write");
    let third = start(Arc::new(ManualClock::new(START + 200)));
    assert_eq!(third.coordinator.lease_grace_until(), START + 200 + TTL_MAX);
}

// --- rollout policy: slots, AZs, pause, windows, order, halt -----------------

/// The test view plus broker-3 (eu-central-1a), controller-2 and connect-1,
/// with `rules`.
fn rollout_view(rules: RolloutRules) -> ClusterView {
    let mut view = view();
    for (name, role, ip) in [
        ("broker-3", "broker", "10.0.1.11"),
        ("controller-2", "controller", "10.0.2.20"),
        ("connect-1", "connect", "10.0.1.30"),
    ] {
        view.nodes.insert(name.to_owned(), entry(role, name, ip));
        view.join_tokens.insert(name.to_owned(), token(name));
    }
    view.rollout = rules;
    view.revision = Some("1111111111111111111111111111111111111111".to_owned());
    view
}

impl Harness {
    /// A coordinator of `view` whose restart grace has passed (at
    /// START + TTL_MAX: Tuesday 2023-11-14 22:28:20 UTC).
    fn ready_with(view: ClusterView) -> Self {
        let clock = Arc::new(ManualClock::new(START));
        let coordinator = Coordinator::new(view, Arc::new(FakeSigner), clock.clone(), None);
        clock.advance(TTL_MAX);
        Self {
            app: router(coordinator.clone()),
            coordinator,
            clock,
        }
    }

    async fn report(&self, node: &str, role: &str, phase: Phase, applied: &str) {
        let mut body = report(node, role);
        body["phase"] = serde_json::to_value(phase).expect("a phase");
        body["revision_applied"] = json!(applied);
        let (status, body) = self
            .call(
                Method::POST,
                &format!("/v1/nodes/{node}/status"),
                Some(&token(node)),
                Some(body),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    async fn rollout(&self) -> RolloutView {
        let (status, body) = self.call(Method::GET, "/v1/rollout", None, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_value(body).expect("a RolloutView")
    }

    async fn halt(&self, role: &str, granted: &Lease, reason: &str) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            &format!("/v1/leases/{role}/halt"),
            Some(&token(&granted.holder)),
            Some(json!({
                "node": granted.holder,
                "fencing": granted.fencing,
                "revision": "2222222222222222222222222222222222222222",
                "reason": reason,
            })),
        )
        .await
    }

    async fn resume(&self, node: &str, role: Option<&str>) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            "/v1/rollout/resume",
            Some(&token(node)),
            Some(json!({ "node": node, "role": role })),
        )
        .await
    }
}

async fn acquire_for(
    h: &Harness,
    role: &str,
    node: &str,
    revision: Option<&str>,
) -> (StatusCode, Value) {
    let mut body = lease_request(node, 300, None);
    if let Some(revision) = revision {
        body["revision"] = json!(revision);
    }
    h.call(
        Method::POST,
        &format!("/v1/leases/{role}"),
        Some(&token(node)),
        Some(body),
    )
    .await
}

fn rules(max_unavailable: u16) -> RolloutRules {
    RolloutRules {
        max_unavailable,
        ..RolloutRules::default()
    }
}

#[tokio::test]
async fn max_unavailable_2_grants_two_slots_and_names_the_others() {
    let h = Harness::ready_with(rollout_view(rules(2)));
    let (status, body) = acquire_for(&h, "broker", "broker-1", Some("abcdef1234")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let first = lease(body);
    assert!(first.others.is_empty());
    assert_eq!(first.revision.as_deref(), Some("abcdef1234"));

    h.clock.advance(10);
    let (status, body) = acquire(&h, "broker", "broker-2", 300).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second = lease(body);
    assert_eq!(second.others, vec!["broker-1".to_owned()]);
    assert!(second.fencing > first.fencing);
    assert_eq!(second.revision, None);

    // The first holder re-acquiring gets its grant unchanged, now with the
    // other holder listed.
    let (status, body) = acquire(&h, "broker", "broker-1", 300).await;
    assert_eq!(status, StatusCode::OK);
    let again = lease(body);
    assert_eq!(again.fencing, first.fencing);
    assert_eq!(again.expires_in_seconds, 290);
    assert_eq!(again.others, vec!["broker-2".to_owned()]);

    // A third broker finds both slots taken: both holders are named.
    let (status, body) = acquire(&h, "broker", "broker-3", 300).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        api_error(&body),
        "the broker lease is held by broker-1 for 290 more seconds and broker-2 for 300 more seconds"
    );
    assert_eq!(h.coordinator.leases().len(), 2);

    // A released slot is free again.
    let (status, _) = h
        .call(
            Method::DELETE,
            "/v1/leases/broker",
            Some(&token("broker-1")),
            Some(lease_request("broker-1", 0, Some(first.fencing))),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = acquire(&h, "broker", "broker-3", 300).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(lease(body).others, vec!["broker-2".to_owned()]);
}

#[tokio::test]
async fn the_per_az_budget_limits_one_zone_only() {
    let h = Harness::ready_with(rollout_view(RolloutRules {
        max_unavailable: 3,
        max_unavailable_per_az: Some(1),
        ..RolloutRules::default()
    }));
    // broker-1 and broker-3 are in eu-central-1a, broker-2 in 1b.
    let (status, _) = acquire(&h, "broker", "broker-1", 300).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = acquire(&h, "broker", "broker-3", 300).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        api_error(&body),
        "the broker budget of eu-central-1a is used by broker-1"
    );
    let (status, body) = acquire(&h, "broker", "broker-2", 300).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn no_lease_is_granted_while_paused() {
    let h = Harness::ready_with(rollout_view(RolloutRules {
        paused: true,
        ..RolloutRules::default()
    }));
    let (status, body) = acquire(&h, "broker", "broker-1", 300).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        api_error(&body),
        "rollouts are paused (rollout.paused in cluster.yaml)"
    );
    assert!(h.coordinator.leases().is_empty());
    assert!(h.rollout().await.paused);

    // Unpaused by a new commit: granted.
    h.coordinator.set_view(rollout_view(rules(1)));
    let (status, body) = acquire(&h, "broker", "broker-1", 300).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn leases_wait_for_a_maintenance_window() {
    use desired_state::types::{Duration as Span, TimeOfDay};
    use desired_state::{MaintenanceWindow, Weekday};
    // Tuesdays 23:00 to 24:00 UTC; the harness is ready at Tuesday 22:28:20.
    let window = MaintenanceWindow {
        days: vec![Weekday::Tue],
        start: TimeOfDay::try_from("23:00").expect("a time"),
        duration: Span::try_from("1h").expect("a duration").into(),
    };
    let h = Harness::ready_with(rollout_view(RolloutRules {
        windows: vec![window],
        ..RolloutRules::default()
    }));
    let opens = START + 2800;
    let (status, body) = acquire(&h, "broker", "broker-1", 300).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        api_error(&body),
        "outside the maintenance windows; the next opens at 2023-11-14 23:00 UTC (in 1900 s)"
    );
    let view = h.rollout().await;
    assert_eq!(
        (view.window.windows, view.window.open, view.window.next_open),
        (1, false, Some(opens))
    );

    h.clock.set(opens);
    let (status, body) = acquire(&h, "broker", "broker-1", 300).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let view = h.rollout().await;
    assert!(view.window.open);
    assert_eq!(view.window.closes_at, Some(opens + 3600));

    // At 24:00 it is closed again until next Tuesday.
    h.clock.set(opens + 3600);
    let (status, body) = acquire(&h, "broker", "broker-2", 300).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        api_error(&body).contains("the next opens at 2023-11-21 23:00 UTC"),
        "{body}"
    );
}

#[tokio::test]
async fn controllers_go_before_brokers() {
    let h = Harness::ready_with(rollout_view(rules(1)));
    let new = "9999999999999999999999999999999999999999";
    let old = "1111111111111111111111111111111111111111";
    h.report("controller-1", "controller", Phase::Converged, old)
        .await;
    h.report("controller-2", "controller", Phase::WaitingForLease, old)
        .await;

    let (status, body) = acquire(&h, "broker", "broker-1", 300).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        api_error(&body),
        "controllers first: controller-2 is waiting_for_lease"
    );
    // Connect waits for controllers too; observability takes no part.
    let (status, body) = acquire(&h, "connect", "connect-1", 300).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(api_error(&body).starts_with("controllers first: "));
    let (status, _) = acquire(&h, "observability", "observability-1", 300).await;
    assert_eq!(status, StatusCode::OK);

    // A stale report does not block: the node may be dead.
    h.clock.advance(120);
    let (status, body) = acquire(&h, "broker", "broker-1", 300).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let broker = lease(body);
    h.call(
        Method::DELETE,
        "/v1/leases/broker",
        Some(&token("broker-1")),
        Some(lease_request("broker-1", 0, Some(broker.fencing))),
    )
    .await;

    // A request for a revision waits for every fresh controller to run it.
    h.report("controller-1", "controller", Phase::Converged, new)
        .await;
    h.report("controller-2", "controller", Phase::Converged, old)
        .await;
    let (status, body) = acquire_for(&h, "broker", "broker-1", Some(new)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        api_error(&body),
        "controllers first: controller-2 has not applied 9999999 yet"
    );
    // Without a revision the request does not wait for it.
    let (status, _) = acquire(&h, "broker", "broker-2", 300).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = h
        .call(
            Method::DELETE,
            "/v1/leases/broker",
            Some(&token("broker-2")),
            Some(lease_request(
                "broker-2",
                0,
                Some(h.coordinator.leases()[0].fencing),
            )),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // A controller holding its lease blocks brokers.
    h.report("controller-2", "controller", Phase::Converged, new)
        .await;
    let (status, _) = acquire(&h, "controller", "controller-1", 300).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = acquire_for(&h, "broker", "broker-1", Some(new)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        api_error(&body),
        "controllers first: controller-1 holds the controller lease"
    );
}

#[tokio::test]
async fn a_halted_rollout_refuses_everyone_and_does_not_expire() {
    let h = Harness::ready_with(rollout_view(rules(2)));
    let (_, body) = acquire(&h, "broker", "broker-2", 60).await;
    let granted = lease(body);

    // Only the holder, with its fencing id, can halt.
    let mut stale = granted.clone();
    stale.fencing += 1;
    let (status, _) = h.halt("broker", &stale, "nope").await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, body) = h
        .call(
            Method::POST,
            "/v1/leases/broker/halt",
            Some(&token("broker-1")),
            Some(json!({"node": "broker-2", "fencing": granted.fencing, "reason": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    let (status, body) = h
        .halt("broker", &granted, "kafka.service not healthy within 10m")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let halted = lease(body);
    assert_eq!(
        halted.halted.as_ref().map(|h| h.reason.as_str()),
        Some("kafka.service not healthy within 10m")
    );

    let message = "the broker rollout is halted: broker-2 failed at 2222222: kafka.service not healthy within 10m; push a new commit, or POST /v1/rollout/resume";
    for node in ["broker-1", "broker-3"] {
        let (status, body) = acquire(&h, "broker", node, 60).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(api_error(&body), message);
    }
    // Other roles go on.
    let (status, _) = acquire(&h, "controller", "controller-1", 60).await;
    assert_eq!(status, StatusCode::OK);

    // Long after its TTL the halted grant is still listed, and renewable.
    h.clock.advance(10 * TTL_MAX);
    let leases = h.coordinator.leases();
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert_eq!(leases[0].holder, "broker-2");
    assert!(leases[0].halted.is_some());
    let (status, body) = h
        .call(
            Method::PUT,
            "/v1/leases/broker",
            Some(&token("broker-2")),
            Some(lease_request("broker-2", 60, Some(granted.fencing))),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = acquire(&h, "broker", "broker-1", 60).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(api_error(&body), message);

    let metrics = h
        .send(
            Request::builder()
                .uri("/metrics")
                .body(Body::empty())
                .expect("a request"),
        )
        .await
        .2;
    let text = String::from_utf8(metrics).expect("UTF-8");
    assert!(
        text.contains("kraftops_coordinator_rollout_halted{role=\"broker\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("kraftops_coordinator_rollout_halted{role=\"controller\"} 0\n"),
        "{text}"
    );
    assert!(
        text.contains("kraftops_coordinator_rollout_paused 0\n"),
        "{text}"
    );
}

#[tokio::test]
async fn a_new_commit_clears_a_halt() {
    let h = Harness::ready_with(rollout_view(rules(1)));
    let (_, body) = acquire(&h, "broker", "broker-1", 60).await;
    let granted = lease(body);
    let (status, _) = h.halt("broker", &granted, "broken").await;
    assert_eq!(status, StatusCode::OK);

    // The same commit again clears nothing.
    h.coordinator.set_view(rollout_view(rules(1)));
    let (status, _) = acquire(&h, "broker", "broker-2", 60).await;
    assert_eq!(status, StatusCode::CONFLICT);

    let mut next = rollout_view(rules(1));
    next.revision = Some("3333333333333333333333333333333333333333".to_owned());
    h.coordinator.set_view(next);
    assert!(h.coordinator.leases().is_empty());
    let (status, body) = acquire(&h, "broker", "broker-2", 60).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let view = h.rollout().await;
    let events: Vec<(String, LeaseEventKind)> = view
        .history
        .iter()
        .map(|e| (e.node.clone(), e.event))
        .collect();
    assert_eq!(
        events,
        vec![
            ("broker-2".to_owned(), LeaseEventKind::Granted),
            ("broker-1".to_owned(), LeaseEventKind::ClearedByNewCommit),
            ("broker-1".to_owned(), LeaseEventKind::Halted),
            ("broker-1".to_owned(), LeaseEventKind::Granted),
        ]
    );
    assert_eq!(
        view.history[1].reason.as_deref(),
        Some("new commit 3333333")
    );
}

#[tokio::test]
async fn resume_clears_a_halt_and_release_does_too() {
    let h = Harness::ready_with(rollout_view(rules(1)));
    // Nothing halted: 404.
    let (status, body) = h.resume("broker-3", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(api_error(&body), "no rollout is halted");
    // Unauthenticated: 401; as another node: 403.
    let (status, _) = h
        .call(
            Method::POST,
            "/v1/rollout/resume",
            None,
            Some(json!({"node": "broker-3"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = h
        .call(
            Method::POST,
            "/v1/rollout/resume",
            Some(&token("broker-1")),
            Some(json!({"node": "broker-3"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (_, body) = acquire(&h, "broker", "broker-1", 60).await;
    let granted = lease(body);
    h.halt("broker", &granted, "broken").await;
    let (status, body) = h.resume("controller-1", Some("controller")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(api_error(&body), "the controller rollout is not halted");

    // Any node may resume.
    let (status, body) = h.resume("controller-1", Some("broker")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let view: RolloutView = serde_json::from_value(body).expect("a RolloutView");
    assert!(view.roles.iter().all(|r| r.halted.is_empty()));
    assert_eq!(view.history[0].event, LeaseEventKind::Resumed);
    assert_eq!(
        view.history[0].reason.as_deref(),
        Some("resumed by controller-1")
    );
    let (status, _) = acquire(&h, "broker", "broker-2", 60).await;
    assert_eq!(status, StatusCode::OK);

    // The holder releasing its halted grant clears the halt too.
    let (_, body) = acquire(&h, "controller", "controller-1", 60).await;
    let controller = lease(body);
    h.halt("controller", &controller, "broken").await;
    let (status, _) = h
        .call(
            Method::DELETE,
            "/v1/leases/controller",
            Some(&token("controller-1")),
            Some(lease_request("controller-1", 0, Some(controller.fencing))),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = acquire(&h, "controller", "controller-2", 60).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_history_records_every_lease_event_newest_first() {
    let h = Harness::ready_with(rollout_view(rules(1)));
    let t0 = START + TTL_MAX;
    let (_, body) = acquire(&h, "broker", "broker-1", 60).await;
    let first = lease(body);
    h.clock.advance(5);
    h.call(
        Method::DELETE,
        "/v1/leases/broker",
        Some(&token("broker-1")),
        Some(lease_request("broker-1", 0, Some(first.fencing))),
    )
    .await;
    h.clock.advance(5);
    let (_, body) = acquire(&h, "broker", "broker-2", 60).await;
    let second = lease(body);
    // It expires at t0 + 70, noticed later.
    h.clock.advance(100);
    let (_, body) = acquire_for(&h, "broker", "broker-3", Some("abc")).await;
    let third = lease(body);
    h.clock.advance(1);
    h.halt("broker", &third, "unhealthy").await;
    h.clock.advance(1);
    h.resume("broker-1", None).await;

    let history = h.rollout().await.history;
    let got: Vec<(u64, &str, LeaseEventKind, u64)> = history
        .iter()
        .map(|e| (e.at, e.node.as_str(), e.event, e.fencing))
        .collect();
    assert_eq!(
        got,
        vec![
            (t0 + 112, "broker-3", LeaseEventKind::Resumed, third.fencing),
            (t0 + 111, "broker-3", LeaseEventKind::Halted, third.fencing),
            (t0 + 110, "broker-3", LeaseEventKind::Granted, third.fencing),
            (t0 + 70, "broker-2", LeaseEventKind::Expired, second.fencing),
            (t0 + 10, "broker-2", LeaseEventKind::Granted, second.fencing),
            (t0 + 5, "broker-1", LeaseEventKind::Released, first.fencing),
            (t0, "broker-1", LeaseEventKind::Granted, first.fencing),
        ]
    );
    assert!(history.iter().all(|e| e.role == "broker"));
    assert_eq!(history[2].revision.as_deref(), Some("abc"));
    assert_eq!(history[1].reason.as_deref(), Some("unhealthy"));
}

#[tokio::test]
async fn the_history_keeps_the_newest_200_events() {
    let h = Harness::ready_with(rollout_view(rules(1)));
    for _ in 0..150 {
        let (_, body) = acquire(&h, "broker", "broker-1", 60).await;
        let granted = lease(body);
        h.clock.advance(1);
        h.call(
            Method::DELETE,
            "/v1/leases/broker",
            Some(&token("broker-1")),
            Some(lease_request("broker-1", 0, Some(granted.fencing))),
        )
        .await;
    }
    let history = h.rollout().await.history;
    assert_eq!(history.len(), 200);
    assert_eq!(history[0].event, LeaseEventKind::Released);
    assert!(history.windows(2).all(|w| w[0].at >= w[1].at));
}

#[tokio::test]
async fn the_rollout_view_shows_policy_holders_halts_and_waiting_nodes() {
    let h = Harness::ready_with(rollout_view(RolloutRules {
        max_unavailable: 2,
        max_unavailable_per_az: Some(1),
        ..RolloutRules::default()
    }));
    let mut waiting = report("broker-3", "broker");
    waiting["phase"] = json!("waiting_for_lease");
    waiting["waiting"] =
        json!({"reason": "the broker lease is held by broker-1", "since": START + 900});
    let (status, _) = h
        .call(
            Method::POST,
            "/v1/nodes/broker-3/status",
            Some(&token("broker-3")),
            Some(waiting),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = acquire_for(&h, "broker", "broker-1", Some("abc")).await;
    let granted = lease(body);
    let (_, body) = acquire(&h, "broker", "broker-2", 60).await;
    h.halt("broker", &lease(body), "unhealthy").await;
    h.clock.advance(3);

    let (status, body) = h.call(Method::GET, "/v1/rollout", None, None).await;
    assert_eq!(status, StatusCode::OK);
    // The JSON shape operators and tools read.
    for key in ["revision", "paused", "window", "roles", "nodes", "history"] {
        assert!(body.get(key).is_some(), "{key} missing: {body}");
    }
    let view: RolloutView = serde_json::from_value(body).expect("a RolloutView");
    assert_eq!(
        view.revision.as_deref(),
        Some("1111111111111111111111111111111111111111")
    );
    assert!(!view.paused);
    assert!(view.window.open && view.window.windows == 0);
    let roles: Vec<&str> = view.roles.iter().map(|r| r.role.as_str()).collect();
    assert_eq!(roles, ["controller", "broker", "connect", "observability"]);
    let broker = &view.roles[1];
    assert_eq!(
        (broker.max_unavailable, broker.max_unavailable_per_az),
        (2, Some(1))
    );
    let holders: Vec<(&str, &str, u64, Option<&str>, u64)> = broker
        .holders
        .iter()
        .map(|l| {
            (
                l.node.as_str(),
                l.az.as_str(),
                l.granted_at,
                l.revision.as_deref(),
                l.expires_in_seconds,
            )
        })
        .collect();
    assert_eq!(
        holders,
        [
            (
                "broker-1",
                "eu-central-1a",
                START + TTL_MAX,
                Some("abc"),
                297
            ),
            ("broker-2", "eu-central-1b", START + TTL_MAX, None, 57),
        ]
    );
    assert_eq!(broker.holders[0].fencing, granted.fencing);
    assert_eq!(broker.halted.len(), 1);
    assert_eq!(broker.halted[0].node, "broker-2");
    assert_eq!(broker.halted[0].reason, "unhealthy");
    assert_eq!(broker.waiting.len(), 1);
    let w = &broker.waiting[0];
    assert_eq!(
        (w.node.as_str(), w.phase, w.since, w.age_seconds),
        ("broker-3", Phase::WaitingForLease, Some(START + 900), 3)
    );
    assert_eq!(
        w.reason.as_deref(),
        Some("the broker lease is held by broker-1")
    );
    let node = view
        .nodes
        .iter()
        .find(|n| n.node == "broker-3")
        .expect("broker-3 is listed");
    assert_eq!(node.phase, Some(Phase::WaitingForLease));
    assert_eq!(node.revision_applied.as_deref(), Some("abc123"));
    assert!(node.waiting.is_some());
    let silent = view
        .nodes
        .iter()
        .find(|n| n.node == "connect-1")
        .expect("connect-1 is listed");
    assert_eq!((silent.phase, silent.age_seconds), (None, None));
    assert_eq!(view.nodes.len(), 7);
}

// --- halts and history across coordinator restarts ---------------------------

/// A coordinator started at `at` on the state directory `dir`, as
/// `kraftops-agent coordinator` starts one: lease record and halt record.
fn started_on(dir: &std::path::Path, at: u64, view: ClusterView) -> Harness {
    let clock = Arc::new(ManualClock::new(at));
    let coordinator = Coordinator::with_lease_record(
        view,
        Arc::new(FakeSigner),
        clock.clone(),
        None,
        dir.join("leases-until"),
    );
    coordinator.keep_halts(dir.join(HALT_FILE));
    Harness {
        app: router(coordinator.clone()),
        coordinator,
        clock,
    }
}

fn events(history: &[LeaseEvent]) -> Vec<(String, String, LeaseEventKind)> {
    history
        .iter()
        .map(|e| (e.role.clone(), e.node.clone(), e.event))
        .collect()
}

const HALTED_BROKERS: &str = "the broker rollout is halted: broker-1 failed at 2222222: kafka.service not healthy within 10m; push a new commit, or POST /v1/rollout/resume";

/// broker-1 acquires and halts in a first run on `dir`; returns its lease.
async fn halt_in_a_first_run(dir: &std::path::Path) -> Lease {
    let first = started_on(dir, START, rollout_view(rules(1)));
    // The first start ever: no records, leases at once.
    let (status, body) = acquire(&first, "broker", "broker-1", 60).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let granted = lease(body);
    first.clock.advance(1);
    let (status, body) = first
        .halt("broker", &granted, "kafka.service not healthy within 10m")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    granted
}

#[tokio::test]
async fn a_halt_and_the_history_survive_a_coordinator_restart_until_resumed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let granted = halt_in_a_first_run(dir.path()).await;

    // Restarted on the same commit, after the last lease's expiry.
    let second = started_on(dir.path(), START + 120, rollout_view(rules(1)));
    for node in ["broker-1", "broker-2"] {
        let (status, body) = acquire(&second, "broker", node, 60).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(api_error(&body), HALTED_BROKERS);
    }
    let leases = second.coordinator.leases();
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert_eq!(
        (leases[0].holder.as_str(), leases[0].fencing),
        ("broker-1", granted.fencing)
    );
    let view = second.rollout().await;
    let broker = view
        .roles
        .iter()
        .find(|r| r.role == "broker")
        .expect("the broker role");
    assert_eq!(broker.halted.len(), 1);
    assert_eq!(broker.halted[0].node, "broker-1");
    assert_eq!(
        broker.halted[0].revision.as_deref(),
        Some("2222222222222222222222222222222222222222")
    );
    assert_eq!(broker.halted[0].at, START + 1);
    assert_eq!(
        events(&view.history),
        vec![
            ("broker".into(), "broker-1".into(), LeaseEventKind::Halted),
            ("broker".into(), "broker-1".into(), LeaseEventKind::Granted),
        ]
    );
    assert_eq!(
        view.history[0].reason.as_deref(),
        Some("kafka.service not healthy within 10m")
    );

    // Other roles go on, with fencing ids above the kept ones.
    let (status, body) = acquire(&second, "controller", "controller-1", 60).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(lease(body).fencing > granted.fencing);

    // A resume clears it, and a third run does not bring it back.
    let (status, body) = second.resume("controller-1", Some("broker")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let third = started_on(dir.path(), START + 240, rollout_view(rules(1)));
    let view = third.rollout().await;
    assert!(view.roles.iter().all(|r| r.halted.is_empty()), "{view:?}");
    assert_eq!(
        events(&view.history),
        vec![
            ("broker".into(), "broker-1".into(), LeaseEventKind::Resumed),
            (
                "controller".into(),
                "controller-1".into(),
                LeaseEventKind::Granted
            ),
            ("broker".into(), "broker-1".into(), LeaseEventKind::Halted),
            ("broker".into(), "broker-1".into(), LeaseEventKind::Granted),
        ]
    );
    let (status, body) = acquire(&third, "broker", "broker-2", 60).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_kept_halt_is_cleared_by_a_new_commit_during_or_before_the_restart() {
    // The same commit at start keeps the halt; a new one then clears it.
    let dir = tempfile::tempdir().expect("tempdir");
    halt_in_a_first_run(dir.path()).await;
    let second = started_on(dir.path(), START + 120, rollout_view(rules(1)));
    let (status, body) = acquire(&second, "broker", "broker-2", 60).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let mut next = rollout_view(rules(1));
    next.revision = Some("3333333333333333333333333333333333333333".to_owned());
    second.coordinator.set_view(next.clone());
    let (status, body) = acquire(&second, "broker", "broker-2", 60).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A commit pushed while the coordinator was down clears it at start.
    let dir = tempfile::tempdir().expect("tempdir");
    halt_in_a_first_run(dir.path()).await;
    let second = started_on(dir.path(), START + 120, next);
    let view = second.rollout().await;
    assert!(view.roles.iter().all(|r| r.halted.is_empty()), "{view:?}");
    assert_eq!(view.history[0].event, LeaseEventKind::ClearedByNewCommit);
    assert_eq!(
        view.history[0].reason.as_deref(),
        Some("new commit 3333333")
    );
    let (status, body) = acquire(&second, "broker", "broker-2", 60).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn an_unreadable_halt_record_halts_every_role_until_resumed_or_a_new_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    halt_in_a_first_run(dir.path()).await;
    std::fs::write(dir.path().join(HALT_FILE), "{\"version\": 1, \"halts\": [").expect("write");

    let second = started_on(dir.path(), START + 120, rollout_view(rules(1)));
    for (role, node) in [
        ("controller", "controller-1"),
        ("broker", "broker-2"),
        ("connect", "connect-1"),
    ] {
        let (status, body) = acquire(&second, role, node, 60).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(
            api_error(&body),
            format!(
                "the {role} rollout may be halted: the coordinator could not read its record of halted rollouts ({HALT_FILE}) when it started; push a new commit, or POST /v1/rollout/resume"
            )
        );
    }
    let view = second.rollout().await;
    assert!(view.roles.iter().all(|r| r.halted.len() == 1), "{view:?}");

    // A mistyped role is still noticed.
    let (status, body) = second.resume("broker-2", Some("brokers")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(api_error(&body), "the brokers rollout is not halted");

    // Resuming the controllers frees them alone, and a restart keeps the
    // rest halted.
    let (status, body) = second.resume("broker-2", Some("controller")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let third = started_on(dir.path(), START + 240, rollout_view(rules(1)));
    let (status, body) = acquire(&third, "controller", "controller-1", 60).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = acquire(&third, "broker", "broker-2", 60).await;
    assert_eq!(status, StatusCode::CONFLICT);

    // A new commit clears the rest (once controller-1's lease is over,
    // Connect's turn has come).
    third.clock.advance(61);
    let mut next = rollout_view(rules(1));
    next.revision = Some("3333333333333333333333333333333333333333".to_owned());
    third.coordinator.set_view(next);
    let (status, body) = acquire(&third, "connect", "connect-1", 60).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
