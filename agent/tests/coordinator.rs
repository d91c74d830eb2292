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
    ClusterView, Coordinator, CsrSigner, MAX_ALERTS, MAX_BODY_BYTES, ManualClock, NodeEntry,
    router, serve,
};
use kraftops_agent::protocol::{
    ApiError, CertificateResponse, Lease, NodeView, Nudge, Phase, StatusReport,
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
    NodeEntry {
        role: role.to_owned(),
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

    // The old holder can neither renew nor release the new grant.
    for method in [Method::PUT, Method::DELETE] {
        let (status, _) = h
            .call(
                method.clone(),
                "/v1/leases/broker",
                Some(&token("broker-1")),
                Some(lease_request("broker-1", 60, Some(old.fencing))),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{method}");
    }
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
