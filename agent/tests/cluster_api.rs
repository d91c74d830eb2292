//! The coordinator's cluster REST API and status page
//! (`docs/cluster-api.openapi.yaml`).
//!
//! Without Kafka, through the router: reads before the cluster thread has
//! published an admin client, writes answered with the git edit to make,
//! bodies refused, and the document listing exactly the routes served.
//!
//! Against a real Apache Kafka (`common::Kafka`, one KRaft node): a
//! coordinator with an admin client to it in its `ClusterScope`, served on
//! 127.0.0.1; a topic made, records produced and offsets committed with
//! Kafka's own console tools by a classic group and by a group of the
//! KIP-848 consumer protocol; both groups' lag checked exactly and against
//! `kafka-consumer-groups.sh`, then with a live member each (members,
//! hosts, assignments, epochs, the member owning each partition's lag, as
//! the tool shows them too); topics, brokers and
//! health checked, every response checked against the document's schemas;
//! `kraftops-agent status` run against it; the status page loaded in
//! headless Chromium; and schemathesis run over the whole document.
//!
//! Needs Java, Chromium and schemathesis: `scripts/install-deps` installs
//! them. A missing one fails the test, naming that script.

#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{ADMIN_PASSWORD, Kafka, wait_for};
use desired_state::{Identity, Model};
use http_body_util::BodyExt as _;
use kraftops_agent::coordinator::cluster_api::{ErrorBody, GroupDetail, TopicDetail, TopicList};
use kraftops_agent::coordinator::service::signer_and_view;
use kraftops_agent::coordinator::{Coordinator, SystemClock, router, serve};
use kraftops_agent::kafka::{ClusterAdmin, KafkaAdmin, NewTopic};
use kraftops_agent::protocol::{CertificateStatus, Phase, StatusReport, UnitStatus};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const INSTALL: &str = "run scripts/install-deps (as root) to install it";
const HEAD: &str = "1111111111111111111111111111111111111111";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn example() -> Model {
    desired_state::load_dir(&root().join("desired-state/examples/seed")).expect("the example")
}

fn identity() -> Identity {
    let text = std::fs::read_to_string(
        root().join("desired-state/examples/seed.example-only.age-identity"),
    )
    .expect("the example identity");
    Identity::parse(&text).expect("identity")
}

fn coordinator_for(model: &Model) -> Arc<Coordinator> {
    let (view, signer) = signer_and_view(model, &identity()).expect("view");
    Coordinator::new(view, signer, Arc::new(SystemClock), None)
}

// ---------------------------------------------------------------- OpenAPI

fn openapi() -> Value {
    let path = root().join("docs/cluster-api.openapi.yaml");
    let text = std::fs::read_to_string(&path).expect("docs/cluster-api.openapi.yaml");
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every route of the cluster API and the status page, as the document
/// must list them.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/"),
    ("get", "/health"),
    ("get", "/brokers"),
    ("get", "/topics"),
    ("post", "/topics"),
    ("get", "/topics/{name}"),
    ("put", "/topics/{name}"),
    ("delete", "/topics/{name}"),
    ("get", "/consumer-groups"),
    ("get", "/consumer-groups/{id}"),
    ("get", "/connectors"),
];

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(target) => {
            let pointer = target.strip_prefix('#').expect("a local $ref");
            resolve(
                doc,
                doc.pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling $ref {target}")),
            )
        }
        None => schema,
    }
}

/// Checks `value` against an OpenAPI 3.0 schema (the subset the document
/// uses: `$ref`, `type`, `nullable`, `enum`, `required`, `properties`,
/// `additionalProperties`, `items`, `allOf`, `oneOf`, `minimum`); returns
/// every mismatch with its JSON path.
fn check_schema(doc: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    if value.is_null() {
        let allowed = schema["nullable"] == true
            || schema["enum"]
                .as_array()
                .is_some_and(|e| e.contains(&Value::Null));
        if !allowed {
            errors.push(format!("{at}: null where the schema does not allow it"));
        }
        return;
    }
    if let Some(all) = schema["allOf"].as_array() {
        for s in all {
            check_schema(doc, s, value, at, errors);
        }
    }
    if let Some(one) = schema["oneOf"].as_array() {
        let matching = one
            .iter()
            .filter(|s| {
                let mut e = Vec::new();
                check_schema(doc, s, value, at, &mut e);
                e.is_empty()
            })
            .count();
        if matching != 1 {
            errors.push(format!("{at}: matches {matching} of oneOf"));
        }
    }
    if let Some(options) = schema["enum"].as_array()
        && !options.contains(value)
    {
        errors.push(format!("{at}: {value} is not one of {options:?}"));
    }
    let type_ok = match schema["type"].as_str() {
        None => true,
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        Some(other) => panic!("{at}: unknown type {other}"),
    };
    if !type_ok {
        errors.push(format!("{at}: {value} is not of type {}", schema["type"]));
        return;
    }
    if let (Some(min), Some(n)) = (schema["minimum"].as_f64(), value.as_f64())
        && n < min
    {
        errors.push(format!("{at}: {n} is below {min}"));
    }
    if let Some(object) = value.as_object() {
        let properties = schema["properties"].as_object();
        for name in schema["required"].as_array().into_iter().flatten() {
            let name = name.as_str().expect("a required name");
            if !object.contains_key(name) {
                errors.push(format!("{at}: required {name} is missing"));
            }
        }
        for (key, v) in object {
            let path = format!("{at}.{key}");
            match properties.and_then(|p| p.get(key)) {
                Some(s) => check_schema(doc, s, v, &path, errors),
                None => match &schema["additionalProperties"] {
                    Value::Bool(false) => errors.push(format!("{path}: not in the schema")),
                    Value::Object(_) => {
                        check_schema(doc, &schema["additionalProperties"], v, &path, errors);
                    }
                    _ => {}
                },
            }
        }
    }
    if let Some(items) = value.as_array() {
        for (i, item) in items.iter().enumerate() {
            check_schema(doc, &schema["items"], item, &format!("{at}[{i}]"), errors);
        }
    }
}

/// Checks a response against the document's schema for its operation and
/// status; panics listing every mismatch.
fn conforms(doc: &Value, method: &str, route: &str, status: u16, body: &Value) {
    let operation = &doc["paths"][route][method];
    assert!(operation.is_object(), "{method} {route} is not documented");
    let response = resolve(doc, &operation["responses"][status.to_string()]);
    assert!(
        response.is_object(),
        "{method} {route} answered {status}, which is not documented: {body}"
    );
    let schema = &response["content"]["application/json"]["schema"];
    let mut errors = Vec::new();
    check_schema(doc, schema, body, "$", &mut errors);
    assert!(
        errors.is_empty(),
        "{method} {route} {status} does not match the document:\n{}\n{body:#}",
        errors.join("\n")
    );
}

#[test]
fn the_schema_check_finds_mismatches() {
    let doc = openapi();
    let good = json!({"error": {"code": "not_found", "message": "m"}});
    conforms(&doc, "get", "/topics/{name}", 404, &good);
    let schema = json!({"$ref": "#/components/schemas/Error"});
    for (bad, why) in [
        (json!({"error": {"code": "not_found"}}), "required message"),
        (
            json!({"error": {"code": "nope", "message": "m"}}),
            "is not one of",
        ),
        (
            json!({"error": {"code": "not_found", "message": "m"}, "extra": 1}),
            "not in the schema",
        ),
        (
            json!({"error": {"code": "not_found", "message": 3}}),
            "type",
        ),
        (json!({"error": null}), "null"),
    ] {
        let mut errors = Vec::new();
        check_schema(&doc, &schema, &bad, "$", &mut errors);
        assert!(
            errors.iter().any(|e| e.contains(why)),
            "{bad} gave {errors:?}, expected {why}"
        );
    }
}

#[tokio::test]
async fn the_document_lists_exactly_the_routes_served() {
    let doc = openapi();
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.0.")),
        "an OpenAPI 3.0 document"
    );
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("a path item")
                .keys()
                .filter(|m| ["get", "put", "post", "delete", "patch"].contains(&m.as_str()))
                .map(|m| (m.clone(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let listed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(documented, listed);
    let coordinator = coordinator_for(&example());
    for (method, path) in ROUTES {
        let uri = path
            .replace("{name}", "some-topic")
            .replace("{id}", "some-group");
        let (status, _) = call(&coordinator, method, &uri, Some("{}")).await;
        assert!(
            status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path} is documented but not served: {status}"
        );
    }
}

// ---------------------------------------------------------------- through the router

async fn call(
    coordinator: &Arc<Coordinator>,
    method: &str,
    uri: &str,
    body: Option<&str>,
) -> (StatusCode, String) {
    let request = Request::builder()
        .method(Method::from_bytes(method.to_uppercase().as_bytes()).expect("method"))
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
        .expect("request");
    let response = router(Arc::clone(coordinator))
        .oneshot(request)
        .await
        .expect("infallible");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn call_json(
    coordinator: &Arc<Coordinator>,
    method: &str,
    uri: &str,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let (status, text) = call(coordinator, method, uri, body).await;
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{uri}: {e}: {text}"));
    (status, value)
}

fn error_of(value: &Value) -> ErrorBody {
    serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("an error body: {e}: {value}"))
}

#[tokio::test]
async fn before_the_cluster_thread_published_reads_are_not_ready() {
    let doc = openapi();
    let coordinator = coordinator_for(&example());
    for (route, uri) in [
        ("/brokers", "/brokers"),
        ("/topics", "/topics"),
        ("/topics/{name}", "/topics/orders"),
        ("/consumer-groups", "/consumer-groups"),
        ("/consumer-groups/{id}", "/consumer-groups/g"),
        ("/connectors", "/connectors"),
    ] {
        let (status, body) = call_json(&coordinator, "get", uri, None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{uri}: {body}");
        assert_eq!(error_of(&body).error.code, "not_ready", "{uri}");
        conforms(&doc, "get", route, 503, &body);
    }
    let (status, body) = call_json(&coordinator, "get", "/health", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["coordinator"]["up"], true);
    assert_eq!(body["kafka"]["reachable"], false);
    conforms(&doc, "get", "/health", 503, &body);

    // The page still shows the nodes, and says why topics are missing.
    let (status, html) = call(&coordinator, "get", "/", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("<tr id=\"node-broker-1\">"), "{html}");
    assert!(html.contains("no Kafka admin client yet"), "{html}");
}

/// A coordinator whose scope holds the example's model at [`HEAD`], and
/// no admin client.
fn with_head(model: Model) -> Arc<Coordinator> {
    let coordinator = coordinator_for(&model);
    let model = Arc::new(model);
    coordinator.update_cluster_scope(|scope| scope.head = Some((HEAD.to_owned(), model)));
    coordinator
}

fn topics_yaml(edit: &Value) -> desired_state::model::TopicsFile {
    let yaml = edit["yaml"].as_str().expect("yaml");
    serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

fn config_of(topic: &desired_state::model::Topic) -> BTreeMap<String, String> {
    topic
        .config
        .iter()
        .map(|(k, v)| (k.to_string(), v.value.as_str().to_owned()))
        .collect()
}

#[tokio::test]
async fn writes_answer_with_the_git_edit_to_make() {
    let doc = openapi();
    let coordinator = with_head(example());

    // A change of a declared topic: its file, its whole entry, only the
    // named key changed (the seed's PUT reset the others).
    let (status, body) = call_json(
        &coordinator,
        "put",
        "/topics/topic-1",
        Some(r#"{"config": {"retention.ms": 1209600000, "min.insync.replicas": null}, "partitions": 12}"#),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    conforms(&doc, "put", "/topics/{name}", 409, &body);
    assert_eq!(body["error"]["code"], "edit_git");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not write to the desired-state repository")),
        "{body}"
    );
    assert_eq!(body["edit"]["file"], "topics/app.yaml");
    assert_eq!(body["edit"]["action"], "change");
    let file = topics_yaml(&body["edit"]);
    let topic = &file.topics[0].value;
    assert_eq!(topic.name.as_str(), "topic-1");
    assert_eq!(topic.partitions.value, 12);
    assert_eq!(topic.replication_factor.as_ref().map(|r| r.value), Some(3));
    assert_eq!(
        config_of(topic),
        BTreeMap::from([("retention.ms".to_owned(), "1209600000".to_owned())])
    );

    // A new topic: any file under topics/, with the seed API's names too.
    let (status, body) = call_json(
        &coordinator,
        "post",
        "/topics",
        Some(r#"{"topic_name": "analytics-events", "partitions": 6, "replication_factor": 3, "configs": {"compression.type": "gzip"}}"#),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    conforms(&doc, "post", "/topics", 409, &body);
    assert_eq!(body["edit"]["file"], "topics/");
    assert_eq!(body["edit"]["action"], "add");
    let file = topics_yaml(&body["edit"]);
    assert_eq!(file.topics[0].value.name.as_str(), "analytics-events");
    assert_eq!(config_of(&file.topics[0].value)["compression.type"], "gzip");

    // A declared topic posted again: where it is declared.
    let (status, body) = call_json(
        &coordinator,
        "post",
        "/topics",
        Some(r#"{"name": "test-topic", "partitions": 3}"#),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["edit"]["file"], "topics/app.yaml");
    assert_eq!(body["edit"]["action"], "change");

    // Naming the replication factor it already has (the cluster's
    // default, for a declaration without one) is no change.
    let (status, body) = call_json(
        &coordinator,
        "put",
        "/topics/test-topic",
        Some(r#"{"replication_factor": 3}"#),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["edit"]["action"], "change");

    // A deletion is a mark in git.
    let (status, body) = call_json(&coordinator, "delete", "/topics/test-topic", None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    conforms(&doc, "delete", "/topics/{name}", 409, &body);
    assert_eq!(body["edit"]["file"], "topics/app.yaml");
    assert_eq!(body["edit"]["action"], "mark_for_deletion");
    let file = topics_yaml(&body["edit"]);
    let topic = &file.topics[0].value;
    assert_eq!(topic.name.as_str(), "test-topic");
    assert!(topic.delete.value, "marked for deletion");
    assert_eq!(topic.partitions.value, 3, "the rest of the entry kept");
}

#[tokio::test]
async fn bad_writes_are_refused_with_their_reason() {
    let doc = openapi();
    let coordinator = with_head(example());
    for (method, uri, body, status, code, says) in [
        (
            "put",
            "/topics/topic-1",
            r#"{"configs": {"retention.ms": "1"}, "retention": 5}"#,
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "unknown field `retention`",
        ),
        (
            "put",
            "/topics/topic-1",
            r#"{"partitions": 2}"#,
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "partitions can only grow",
        ),
        (
            "put",
            "/topics/topic-1",
            r#"{"replication_factor": 1}"#,
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "replication factor",
        ),
        (
            "put",
            "/topics/test-topic",
            r#"{"replication_factor": 1}"#,
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "test-topic has 3",
        ),
        (
            "put",
            "/topics/topic-1",
            r#"{"config": {"bad key!": "1"}}"#,
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "bad key!",
        ),
        (
            "put",
            "/topics/topic-1",
            r#"{"config": {"retention.ms": {"nested": 1}}}"#,
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "string, number or boolean",
        ),
        (
            "post",
            "/topics",
            "not json",
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "expected",
        ),
        (
            "post",
            "/topics",
            r#"{"name": "x"}"#,
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "missing field `partitions`",
        ),
        (
            "post",
            "/topics",
            r#"{"name": "a/b", "partitions": 1}"#,
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "a/b",
        ),
        (
            "post",
            "/topics",
            r#"{"name": "x", "partitions": 0}"#,
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "at least 1",
        ),
        (
            "post",
            "/topics",
            r#"{"name": "__consumer_offsets", "partitions": 1}"#,
            StatusCode::FORBIDDEN,
            "internal_topic",
            "never touches",
        ),
        (
            "delete",
            "/topics/__consumer_offsets",
            "",
            StatusCode::FORBIDDEN,
            "internal_topic",
            "never touches",
        ),
    ] {
        let body = (!body.is_empty()).then_some(body);
        let (got, answer) = call_json(&coordinator, method, uri, body).await;
        assert_eq!(got, status, "{method} {uri} {body:?}: {answer}");
        let error = error_of(&answer);
        assert_eq!(error.error.code, code, "{method} {uri}: {answer}");
        assert!(
            error.error.message.contains(says),
            "{method} {uri}: {:?} should say {says:?}",
            error.error.message
        );
        let route = if uri == "/topics" {
            "/topics"
        } else {
            "/topics/{name}"
        };
        conforms(&doc, method, route, status.as_u16(), &answer);
    }

    // An undeclared topic needs Kafka to be written about: not ready yet.
    let (status, body) = call_json(&coordinator, "delete", "/topics/elsewhere", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_of(&body).error.code, "not_ready");
}

#[tokio::test]
async fn connectors_without_connect_are_an_empty_list_with_a_note() {
    let doc = openapi();
    let mut model = example();
    model.nodes.retain(|n| n.value.name.as_str() != "connect-1");
    let coordinator = with_head(model);
    let (status, body) = call_json(&coordinator, "get", "/connectors", None).await;
    assert_eq!(status, StatusCode::OK);
    conforms(&doc, "get", "/connectors", 200, &body);
    assert_eq!(body["connect"], false);
    assert_eq!(body["connectors"], json!([]));
    assert!(
        body["note"]
            .as_str()
            .is_some_and(|n| n.contains("no Kafka Connect"))
    );

    // With Connect but before its first reconcile: the note says so.
    let coordinator = with_head(example());
    let (status, body) = call_json(&coordinator, "get", "/connectors", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["connect"], true);
    assert!(
        body["note"]
            .as_str()
            .is_some_and(|n| n.contains("reconcile"))
    );
}

// ---------------------------------------------------------------- against Kafka

/// The example reduced to what the test Kafka is: `broker-1` (node 1, a
/// combined broker and controller) and the nodes that are not Kafka.
fn one_broker_model() -> Model {
    let mut model = example();
    model.nodes.retain(|n| {
        let name = n.value.name.as_str();
        !name.starts_with("controller-") && !["broker-2", "broker-3", "broker-4"].contains(&name)
    });
    model
}

struct Served {
    runtime: tokio::runtime::Runtime,
    base: String,
    shutdown: tokio_util::sync::CancellationToken,
}

fn serve_on_loopback(coordinator: &Arc<Coordinator>) -> Served {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let shutdown = tokio_util::sync::CancellationToken::new();
    runtime.spawn(serve(listener, Arc::clone(coordinator), shutdown.clone()));
    Served {
        runtime,
        base: format!("http://127.0.0.1:{port}"),
        shutdown,
    }
}

struct Http {
    client: reqwest::blocking::Client,
    base: String,
    doc: Value,
}

impl Http {
    /// `method route` (with `uri` filling its parameters); the answer is
    /// checked against the document before it is returned.
    fn json(&self, method: &str, route: &str, uri: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.client.request(
            reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method"),
            format!("{}{uri}", self.base),
        );
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().unwrap_or_else(|e| panic!("{uri}: {e}"));
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert_eq!(content_type, "application/json", "{uri}");
        let text = response.text().expect("body");
        let value: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{uri}: {e}: {text}"));
        conforms(&self.doc, method, route, status, &value);
        report!("{method} {uri} -> {status}");
        (status, value)
    }

    fn get(&self, route: &str, uri: &str) -> (u16, Value) {
        self.json("get", route, uri, None)
    }
}

fn run_tool(kafka: &Kafka, name: &str, args: &[&str], stdin: Option<String>) -> String {
    let mut cmd = kafka.tool(name);
    cmd.args(["--bootstrap-server", &kafka.internal])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{name}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(input.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} {args:?}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `broker-1` reports itself converged, so the page and the table have a
/// report to show.
fn report_broker_1(http: &Http, coordinator: &Arc<Coordinator>, model: &Model) {
    let (view, _) = signer_and_view(model, &identity()).expect("view");
    let token = view.join_tokens.get("broker-1").expect("broker-1's token");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let report = StatusReport {
        node: "broker-1".to_owned(),
        role: "broker".to_owned(),
        revision_seen: Some(HEAD.to_owned()),
        revision_applied: Some(HEAD.to_owned()),
        signer: None,
        phase: Phase::Converged,
        units: vec![UnitStatus {
            name: "kafka-broker.service".to_owned(),
            active_state: "active".to_owned(),
            sub_state: "running".to_owned(),
        }],
        certificates: vec![CertificateStatus {
            name: "broker".to_owned(),
            not_after: now + 45 * 86_400 + 3_600,
        }],
        last_error: None,
        drift: Vec::new(),
        reported_at: now,
        waiting: None,
        restarts: Vec::new(),
    };
    let response = http
        .client
        .post(format!("{}/v1/nodes/broker-1/status", http.base))
        .bearer_auth(token)
        .json(&report)
        .send()
        .expect("report");
    assert!(response.status().is_success(), "{:?}", response.text());
    assert!(coordinator.node("broker-1").expect("node").report.is_some());
}

fn consumer_group(kafka: &Kafka, http: &Http) {
    let config = kafka.tool_config.display().to_string();
    let records: String = (0..100).map(|i| format!("key-{i}:value-{i}\n")).collect();
    run_tool(
        kafka,
        "kafka-console-producer.sh",
        &[
            "--topic",
            "test-topic",
            "--producer.config",
            &config,
            "--property",
            "parse.key=true",
            "--property",
            "key.separator=:",
        ],
        Some(records),
    );
    // One record per poll, so the offsets committed on close are those of
    // the 60 records printed.
    let printed = run_tool(
        kafka,
        "kafka-console-consumer.sh",
        &[
            "--topic",
            "test-topic",
            "--group",
            "g",
            "--from-beginning",
            "--max-messages",
            "60",
            "--consumer.config",
            &config,
            "--consumer-property",
            "max.poll.records=1",
        ],
        None,
    );
    assert_eq!(printed.lines().count(), 60);

    let (status, body) = http.get("/consumer-groups/{id}", "/consumer-groups/g");
    assert_eq!(status, 200, "{body}");
    let group: GroupDetail = serde_json::from_value(body).expect("a group");
    report!("group g: {group:?}");
    assert_eq!(group.group_id, "g");
    assert_eq!(group.state, "Empty");
    assert_eq!(group.protocol_type, "consumer");
    assert_eq!(group.group_type.as_deref(), Some("classic"));
    assert_eq!((group.group_epoch, group.assignment_epoch), (None, None));
    assert_eq!(group.member_count, 0);
    assert_eq!(group.total_lag, 40, "100 produced, 60 consumed");
    assert_eq!(
        group
            .offsets
            .iter()
            .map(|o| o.committed.expect("committed"))
            .sum::<i64>(),
        60
    );
    assert_eq!(
        group
            .offsets
            .iter()
            .map(|o| o.latest.expect("latest"))
            .sum::<i64>(),
        100
    );
    assert!(group.offsets.iter().all(|o| o.topic == "test-topic"));

    // Kafka's own tool gives the same offsets and lag per partition.
    same_as_kafka_consumer_groups(kafka, "g", &group);

    // A group of the new consumer protocol (KIP-848), which DescribeGroups
    // does not describe: ConsumerGroupDescribe does, offsets and lag
    // as for a classic group.
    let printed = run_tool(
        kafka,
        "kafka-console-consumer.sh",
        &[
            "--topic",
            "test-topic",
            "--group",
            "g-new",
            "--from-beginning",
            "--max-messages",
            "30",
            "--consumer.config",
            &config,
            "--consumer-property",
            "group.protocol=consumer",
            "--consumer-property",
            "max.poll.records=1",
        ],
        None,
    );
    assert_eq!(printed.lines().count(), 30);
    let (status, body) = http.get("/consumer-groups/{id}", "/consumer-groups/g-new");
    assert_eq!(status, 200, "{body}");
    let group: GroupDetail = serde_json::from_value(body).expect("a group");
    report!("group g-new: {group:?}");
    assert_eq!(group.group_type.as_deref(), Some("consumer"));
    assert_eq!(group.protocol_type, "consumer");
    assert_eq!(group.state, "Empty");
    assert_eq!(group.member_count, 0);
    assert!(group.group_epoch.is_some_and(|e| e >= 1), "{group:?}");
    assert_eq!(group.total_lag, 70, "100 produced, 30 consumed");
    same_as_kafka_consumer_groups(kafka, "g-new", &group);

    let (status, body) = http.get("/consumer-groups", "/consumer-groups");
    assert_eq!(status, 200);
    let listed: BTreeMap<String, (Value, Value)> = body["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| {
            (
                g["group_id"].as_str().expect("id").to_owned(),
                (g["protocol_type"].clone(), g["group_type"].clone()),
            )
        })
        .collect();
    assert_eq!(
        listed.get("g"),
        Some(&(json!("consumer"), json!("classic"))),
        "{body}"
    );
    assert_eq!(
        listed.get("g-new"),
        Some(&(json!("consumer"), json!("consumer"))),
        "{body}"
    );

    // Live members that never commit (so the lag stays what the groups
    // committed above), one group of each protocol: members, hosts,
    // assignments, and which member each partition's lag belongs to.
    let classic = kafka.live_consumer(
        "test-topic",
        "g",
        &["client.id=kraftops-classic", "enable.auto.commit=false"],
    );
    let group = stable_with_one_member(kafka, http, "g");
    same_as_kafka_consumer_groups(kafka, "g", &group);
    drop(classic);
    assert_eq!(group.group_type.as_deref(), Some("classic"));
    assert!(!group.protocol.is_empty(), "the assignor: {group:?}");
    let member = &group.members[0];
    assert_eq!(member.client_id, "kraftops-classic");
    assert_eq!(
        (member.member_epoch, &member.target_assignment),
        (None, &None)
    );
    assert_eq!(group.total_lag, 40, "still 60 of 100 committed");

    let consumer = kafka.live_consumer(
        "test-topic",
        "g-new",
        &[
            "group.protocol=consumer",
            "client.id=kraftops-kip848",
            "enable.auto.commit=false",
        ],
    );
    let group = stable_with_one_member(kafka, http, "g-new");
    // Kafka's tool while the member is still there.
    same_as_kafka_consumer_groups(kafka, "g-new", &group);
    drop(consumer);
    assert_eq!(group.group_type.as_deref(), Some("consumer"));
    assert_eq!(group.protocol, "uniform", "Kafka's default assignor");
    let epoch = group.group_epoch.expect("a group epoch");
    assert_eq!(group.assignment_epoch, Some(epoch), "{group:?}");
    let member = &group.members[0];
    assert_eq!(member.client_id, "kraftops-kip848");
    assert_eq!(member.member_epoch, Some(epoch), "reconciled: {group:?}");
    assert_eq!(
        member.target_assignment.as_ref(),
        Some(&member.assignment),
        "reconciled: {group:?}"
    );
    assert_eq!(group.total_lag, 70, "still 30 of 100 committed");

    let (status, body) = http.get("/consumer-groups/{id}", "/consumer-groups/no-such-group");
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
}

/// Waits until `GET /consumer-groups/{group}` shows the group `Stable`
/// with one member assigned every partition of `test-topic`, and checks
/// that member's view: its host, and each partition's lag assigned to it.
fn stable_with_one_member(kafka: &Kafka, http: &Http, group: &str) -> GroupDetail {
    let uri = format!("/consumer-groups/{group}");
    let detail = wait_for(
        &format!("group {group} to be stable with one member"),
        Duration::from_secs(90),
        kafka,
        || {
            let (status, body) = http.get("/consumer-groups/{id}", &uri);
            assert_eq!(status, 200, "{body}");
            let detail: GroupDetail = serde_json::from_value(body).expect("a group");
            (detail.state == "Stable"
                && detail.member_count == 1
                && detail.members.iter().all(|m| m.assignment.len() == 3))
            .then_some(detail)
        },
    );
    report!("group {group} with a live member: {detail:?}");
    let [member] = detail.members.as_slice() else {
        panic!("one member: {detail:?}");
    };
    assert!(member.host.contains("127.0.0.1"), "{member:?}");
    let assigned: Vec<(&str, i32)> = member
        .assignment
        .iter()
        .map(|p| (p.topic.as_str(), p.partition))
        .collect();
    assert_eq!(
        assigned,
        [("test-topic", 0), ("test-topic", 1), ("test-topic", 2)]
    );
    assert_eq!(detail.offsets.len(), 3, "every assigned partition");
    for o in &detail.offsets {
        assert_eq!(o.member_id.as_ref(), Some(&member.member_id), "{o:?}");
        assert_eq!(o.latest.map(|l| l > 0), Some(true), "{o:?}");
    }
    assert_eq!(
        detail.offsets.iter().filter_map(|o| o.latest).sum::<i64>(),
        100
    );
    detail
}

/// `kafka-consumer-groups.sh --describe` shows the same committed offset,
/// end offset and lag of each partition as `group`, and, for a partition
/// assigned to a live member, the same member id, host and client id.
fn same_as_kafka_consumer_groups(kafka: &Kafka, id: &str, group: &GroupDetail) {
    let config = kafka.tool_config.display().to_string();
    let described = run_tool(
        kafka,
        "kafka-consumer-groups.sh",
        &["--command-config", &config, "--describe", "--group", id],
        None,
    );
    report!("kafka-consumer-groups.sh --describe --group {id}:\n{described}");
    let mut rows = 0;
    for line in described.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.first() != Some(&id) {
            continue;
        }
        let partition: i32 = cols[2].parse().expect("partition");
        let theirs: Vec<i64> = cols[3..6].iter().map(|c| c.parse().unwrap_or(0)).collect();
        let ours = group
            .offsets
            .iter()
            .find(|o| o.topic == cols[1] && o.partition == partition)
            .unwrap_or_else(|| panic!("no offsets of {}-{partition}", cols[1]));
        assert_eq!(
            theirs,
            vec![
                ours.committed.unwrap_or(0),
                ours.latest.expect("latest"),
                // The tool shows `-` (0 here) where nothing is committed.
                if ours.committed.is_some() {
                    ours.lag.expect("lag")
                } else {
                    0
                },
            ],
            "{line}"
        );
        let owner = group
            .members
            .iter()
            .find(|m| Some(&m.member_id) == ours.member_id.as_ref());
        let their_member = cols.get(6..9).filter(|c| c[0] != "-");
        match (owner, their_member) {
            (Some(m), Some(c)) => assert_eq!(
                [c[0], c[1], c[2]],
                [m.member_id.as_str(), m.host.as_str(), m.client_id.as_str()],
                "{line}"
            ),
            (None, None) => {}
            (ours, theirs) => panic!("{line}: our member {ours:?}, theirs {theirs:?}"),
        }
        rows += 1;
    }
    assert_eq!(rows, group.offsets.len(), "{described}");
}

fn topics(http: &Http) {
    let (status, body) = http.get("/topics", "/topics");
    assert_eq!(status, 200);
    let list: TopicList = serde_json::from_value(body).expect("a topic list");
    let topic = |name: &str| {
        list.topics
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("{name} in {list:?}"))
    };
    let managed = topic("test-topic");
    assert!(managed.managed && !managed.internal);
    assert_eq!(managed.declared_in.as_deref(), Some("topics/app.yaml"));
    assert_eq!(
        (
            managed.partitions,
            managed.replication_factor,
            managed.under_replicated
        ),
        (3, 1, 0)
    );
    let unmanaged = topic("unmanaged-topic");
    assert!(!unmanaged.managed && unmanaged.declared_in.is_none());
    assert!(topic("__consumer_offsets").internal);
    assert!(
        list.declared_not_in_kafka
            .iter()
            .any(|d| d.name == "topic-1" && d.file == "topics/app.yaml"),
        "{list:?}"
    );

    let (status, body) = http.get("/topics/{name}", "/topics/test-topic");
    assert_eq!(status, 200);
    let detail: TopicDetail = serde_json::from_value(body).expect("a topic");
    assert_eq!(detail.partition_count, 3);
    for p in &detail.partitions {
        assert_eq!(
            (p.leader, &p.replicas, &p.isr, p.under_replicated),
            (Some(1), &vec![1], &vec![1], false),
            "{p:?}"
        );
    }
    assert_eq!(
        detail.configs.get("retention.ms").map(String::as_str),
        Some("3600000"),
        "set at creation"
    );
    assert_eq!(
        detail.configs.get("cleanup.policy").map(String::as_str),
        Some("delete"),
        "every config, defaults too"
    );
    let declared = detail.declared.expect("declared");
    assert_eq!(declared.partitions, 3);
    assert_eq!(
        declared.config.get("cleanup.policy").map(String::as_str),
        Some("delete")
    );

    let (status, body) = http.get("/topics/{name}", "/topics/no-such-topic");
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");

    // A write about an undeclared topic takes its shape from Kafka.
    let (status, body) = http.json("delete", "/topics/{name}", "/topics/unmanaged-topic", None);
    assert_eq!(status, 409);
    assert_eq!(body["edit"]["file"], "topics/");
    let yaml = body["edit"]["yaml"].as_str().expect("yaml");
    assert!(
        yaml.contains("partitions: 1") && yaml.contains("delete: true"),
        "{yaml}"
    );
    let (status, body) = http.json(
        "put",
        "/topics/{name}",
        "/topics/unmanaged-topic",
        Some(json!({"config": {"retention.ms": "1000"}})),
    );
    assert_eq!(status, 409);
    assert_eq!(body["edit"]["action"], "add");
    let (status, _) = http.json("delete", "/topics/{name}", "/topics/nowhere", None);
    assert_eq!(status, 404);
}

fn brokers_and_health(kafka: &Kafka, http: &Http, coordinator: &Arc<Coordinator>) {
    let (status, body) = http.get("/brokers", "/brokers");
    assert_eq!(status, 200);
    assert_eq!(body["count"], 1, "{body}");
    assert_eq!(body["active_controller_id"], 1);
    let broker = &body["brokers"][0];
    assert_eq!(broker["id"], 1);
    assert_eq!(broker["node"], "broker-1");
    assert_eq!(broker["address"], kafka.internal.as_str());
    assert_eq!(broker["online"], true);
    assert_eq!(broker["declared"], true);
    assert_eq!(broker["is_active_controller"], true, "combined mode");

    let (status, body) = http.get("/health", "/health");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["coordinator"]["head"], HEAD);
    assert_eq!(body["kafka"]["reachable"], true);
    assert_eq!(body["brokers"]["declared"], 1);
    assert_eq!(body["brokers"]["online"], 1);
    assert_eq!(body["controllers"]["leader_id"], 1);
    assert_eq!(body["controllers"]["voters"], json!([1]));

    // Against the whole example (four brokers, three controllers), the same
    // Kafka is degraded, and the missing brokers are listed offline.
    let full = Arc::new(example());
    let reduced = coordinator.cluster_scope().head.expect("a head");
    coordinator.update_cluster_scope(|scope| scope.head = Some((HEAD.to_owned(), full)));
    let (status, body) = http.get("/health", "/health");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["brokers"]["missing"], json!([2, 3, 4]));
    assert_eq!(body["controllers"]["missing"], json!([3001, 3002, 3003]));
    let problems = body["problems"].as_array().expect("problems");
    assert!(
        problems
            .iter()
            .any(|p| p == "broker 2 (broker-2) is not online"),
        "{body}"
    );
    assert!(
        !problems
            .iter()
            .any(|p| p == "broker 1 is registered but not declared in nodes.yaml"),
        "broker 1 is declared in the whole example too"
    );
    let (_, body) = http.get("/brokers", "/brokers");
    let offline: Vec<i64> = body["brokers"]
        .as_array()
        .expect("brokers")
        .iter()
        .filter(|b| b["online"] == false)
        .map(|b| b["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(offline, vec![2, 3, 4]);
    coordinator.update_cluster_scope(|scope| scope.head = Some(reduced));
}

fn status_command(served: &Served, model: &Model) {
    let out = Command::new(env!("CARGO_BIN_EXE_kraftops-agent"))
        .args(["status", "--coordinator", &served.base])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("kraftops-agent status");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    report!("kraftops-agent status:\n{text}");
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains('\x1b'), "no colour when not a terminal");
    for node in &model.nodes {
        let name = node.value.name.as_str();
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{name} "))),
            "{name} has a row"
        );
    }
    let broker = text
        .lines()
        .find(|l| l.starts_with("broker-1 "))
        .expect("broker-1's row");
    for value in ["broker", &HEAD[..12], "converged", "1/1", "45d"] {
        assert!(broker.contains(value), "{value} in {broker:?}");
    }
    let topic = text
        .lines()
        .find(|l| l.starts_with("test-topic "))
        .expect("test-topic's row");
    assert_eq!(
        topic.split_whitespace().collect::<Vec<_>>(),
        ["test-topic", "yes", "3", "1", "0", "0"]
    );
}

fn chromium(served: &Served, model: &Model) {
    let Some(browser) = ["chromium", "chromium-browser"].into_iter().find(|b| {
        Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }) else {
        panic!("headless Chromium is not installed; {INSTALL}");
    };
    let profile = tempfile::tempdir().expect("profile dir");
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", &format!("{}/", served.base)])
        .stdin(Stdio::null())
        .output()
        .expect("chromium");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && !dom.is_empty(),
        "chromium: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    report!("chromium dumped {} bytes of DOM", dom.len());
    for node in &model.nodes {
        let name = node.value.name.as_str();
        assert!(
            dom.contains(&format!("<tr id=\"node-{name}\"><td>{name}</td>")),
            "{name}'s row in the DOM:\n{dom}"
        );
    }
    assert!(
        dom.contains("<tr id=\"topic-test-topic\"><td>test-topic</td>"),
        "{dom}"
    );
    assert!(dom.contains("<td class=\"good\">converged</td>"), "{dom}");
    assert!(
        dom.contains("http-equiv=\"refresh\" content=\"10\""),
        "{dom}"
    );
    assert!(!dom.contains("<script"), "no script");
}

fn schemathesis(served: &Served) {
    let venv = std::env::var_os("KRAFTOPS_VENV")
        .map_or_else(|| PathBuf::from("/var/cache/kraftops/venv"), PathBuf::from);
    let bin = venv.join("bin/schemathesis");
    assert!(
        bin.exists(),
        "schemathesis is not installed at {}; {INSTALL}",
        bin.display()
    );
    let work = tempfile::tempdir().expect("work dir");
    let started = Instant::now();
    let out = Command::new(&bin)
        .current_dir(work.path())
        .arg("run")
        .arg(root().join("docs/cluster-api.openapi.yaml"))
        .args(["--url", &served.base])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,negative_data_rejection",
            "--max-examples",
            "25",
            "--seed",
            "7",
            // One worker: CPython 3.11's parser is not safe for the
            // concurrent lambda descriptions Hypothesis makes from workers
            // (a "recursion depth mismatch" runtime error).
            "--workers",
            "1",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-time",
            "40",
            "--no-color",
            "--generation-database",
            "none",
        ])
        .env("SCHEMATHESIS_HOOKS", "")
        .stdin(Stdio::null())
        .output()
        .expect("schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    report!(
        "schemathesis ({:?}):\n{stdout}\n{}",
        started.elapsed(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis found problems");
}

#[test]
fn against_a_real_kafka() {
    let started = Instant::now();
    let kafka = Kafka::start();
    let admin = kafka.scram_client(ADMIN_PASSWORD);
    wait_for(
        "Kafka to answer Metadata",
        Duration::from_secs(60),
        &kafka,
        || {
            admin
                .metadata()
                .ok()
                .filter(|m| m.brokers.iter().any(|b| b.id == 1))
        },
    );
    report!("Kafka ready after {:?}", started.elapsed());
    admin
        .create_topics(
            &[NewTopic {
                name: "test-topic".to_owned(),
                partitions: 3,
                replication_factor: 1,
                configs: BTreeMap::from([("retention.ms".to_owned(), "3600000".to_owned())]),
            }],
            false,
        )
        .expect("create topics")
        .into_result("CreateTopics")
        .expect("created");
    run_tool(
        &kafka,
        "kafka-topics.sh",
        &[
            "--command-config",
            &kafka.tool_config.display().to_string(),
            "--create",
            "--topic",
            "unmanaged-topic",
            "--partitions",
            "1",
            "--replication-factor",
            "1",
        ],
        None,
    );

    let model = one_broker_model();
    let coordinator = coordinator_for(&model);
    let served = serve_on_loopback(&coordinator);
    let http = Http {
        client: reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client"),
        base: served.base.clone(),
        doc: openapi(),
    };
    // Before the scope has an admin client.
    let (status, body) = http.get("/topics", "/topics");
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (503, json!("not_ready"))
    );

    let shared: Arc<dyn ClusterAdmin> = Arc::new(kafka.scram_client(ADMIN_PASSWORD));
    let head = Arc::new(model.clone());
    coordinator.update_cluster_scope(|scope| {
        scope.head = Some((HEAD.to_owned(), head));
        scope.admin = Some(shared);
    });
    report_broker_1(&http, &coordinator, &model);

    consumer_group(&kafka, &http);
    report!("consumer group checked after {:?}", started.elapsed());
    topics(&http);
    brokers_and_health(&kafka, &http, &coordinator);
    report!(
        "topics, brokers and health checked after {:?}",
        started.elapsed()
    );
    status_command(&served, &model);
    chromium(&served, &model);
    report!("status and page checked after {:?}", started.elapsed());
    schemathesis(&served);
    report!("schemathesis done after {:?}", started.elapsed());

    served.shutdown.cancel();
    served.runtime.shutdown_timeout(Duration::from_secs(5));
}
