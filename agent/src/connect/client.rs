//! The Kafka Connect REST API: the calls the connector reconciler makes,
//! behind the `ConnectApi` seam, and `ConnectClient`, the real blocking
//! client (reqwest, rustls; the cluster CA pinned when given).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use desired_state::model::ConnectorState;
use reqwest::Method;
use reqwest::Url;
use serde::{Deserialize, Serialize};

/// Longest part of an answer's body an error keeps (Connect can answer
/// with whole stack traces or plugin inventories).
const MESSAGE_LIMIT: usize = 1000;

/// What went wrong talking to Connect. Every variant names the call and,
/// when the call was about one connector, that connector.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Connect answered with an error status; `message` is Connect's own
    /// `message` (or the start of the body when it sent no JSON).
    #[error("{}{call}: Connect answered {status}: {message}", about(connector))]
    Http {
        connector: Option<String>,
        call: String,
        status: u16,
        message: String,
    },
    #[error("{}{call}: Connect at {url} did not answer", about(connector))]
    Unreachable {
        connector: Option<String>,
        call: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// A 2xx answer that is not what the API documents.
    #[error("{}{call}: unexpected answer from Connect: {detail}", about(connector))]
    Decode {
        connector: Option<String>,
        call: String,
        detail: String,
    },
    #[error("Connect client for {url}: {detail}")]
    Setup { url: String, detail: String },
}

fn about(connector: &Option<String>) -> String {
    match connector {
        Some(name) => format!("connector {name}: "),
        None => String::new(),
    }
}

impl ConnectError {
    /// The HTTP status Connect answered with, if it answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ConnectError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether Connect looked at the request and refused it for what it
    /// says (a 4xx other than conflict, timeout or rate limit), as opposed
    /// to a failure worth retrying on the next reconcile.
    pub fn is_rejection(&self) -> bool {
        matches!(self.status(), Some(s) if (400..500).contains(&s) && !matches!(s, 408 | 409 | 429))
    }
}

/// Maps an error answer to `ConnectError::Http`: Connect's errors are
/// `{"error_code": …, "message": …}`; anything else keeps the body's start.
pub fn http_error(connector: Option<&str>, call: &str, status: u16, body: &[u8]) -> ConnectError {
    #[derive(Deserialize)]
    struct ErrorBody {
        message: Option<String>,
    }
    let message = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody { message: Some(m) }) => m,
        _ => String::from_utf8_lossy(body).trim().to_owned(),
    };
    let message = if message.is_empty() {
        "(no message)".to_owned()
    } else {
        shorten(&message, MESSAGE_LIMIT)
    };
    ConnectError::Http {
        connector: connector.map(str::to_owned),
        call: call.to_owned(),
        status,
        message,
    }
}

/// `text` cut to at most `limit` bytes at a character boundary, marked.
pub(crate) fn shorten(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} …", &text[..end])
}

/// A connector's or task's state as Connect reports it. States a newer
/// Connect may add are kept as `Other`, not refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum WorkerState {
    Running,
    Paused,
    Stopped,
    Failed,
    Unassigned,
    Restarting,
    Other(String),
}

impl From<String> for WorkerState {
    fn from(s: String) -> Self {
        match s.as_str() {
            "RUNNING" => WorkerState::Running,
            "PAUSED" => WorkerState::Paused,
            "STOPPED" => WorkerState::Stopped,
            "FAILED" => WorkerState::Failed,
            "UNASSIGNED" => WorkerState::Unassigned,
            "RESTARTING" => WorkerState::Restarting,
            _ => WorkerState::Other(s),
        }
    }
}

impl From<WorkerState> for String {
    fn from(s: WorkerState) -> String {
        s.to_string()
    }
}

impl fmt::Display for WorkerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WorkerState::Running => "RUNNING",
            WorkerState::Paused => "PAUSED",
            WorkerState::Stopped => "STOPPED",
            WorkerState::Failed => "FAILED",
            WorkerState::Unassigned => "UNASSIGNED",
            WorkerState::Restarting => "RESTARTING",
            WorkerState::Other(s) => s,
        })
    }
}

/// The connector itself in a status answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub state: WorkerState,
    #[serde(default)]
    pub worker_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub id: i64,
    pub state: WorkerState,
    #[serde(default)]
    pub worker_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

/// `GET /connectors/{name}/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorStatus {
    pub connector: InstanceStatus,
    #[serde(default)]
    pub tasks: Vec<TaskStatus>,
}

impl ConnectorStatus {
    /// The connector or one of its tasks is FAILED.
    pub fn has_failed(&self) -> bool {
        self.connector.state == WorkerState::Failed
            || self.tasks.iter().any(|t| t.state == WorkerState::Failed)
    }
}

/// A connector as it exists in Connect: its config exactly as stored
/// (with the keys Connect adds) and, when Connect had one, its status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedConnector {
    pub config: BTreeMap<String, String>,
    pub status: Option<ConnectorStatus>,
}

/// A connector class installed on the Connect cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorPlugin {
    pub class: String,
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub version: Option<String>,
}

/// The answer of `PUT /connector-plugins/{class}/config/validate`: every
/// field Connect found a problem with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Validation {
    /// `(field, message)`, in Connect's order.
    pub errors: Vec<(String, String)>,
}

/// The calls the reconciler makes; `ConnectClient` is the real one.
pub trait ConnectApi {
    /// Every connector with its config and status (`GET /connectors?expand=status&expand=info`).
    fn list(&self) -> Result<BTreeMap<String, ObservedConnector>, ConnectError>;
    fn config(&self, name: &str) -> Result<BTreeMap<String, String>, ConnectError>;
    fn status(&self, name: &str) -> Result<ConnectorStatus, ConnectError>;
    /// `POST /connectors` with `initial_state` (KIP-980).
    fn create(
        &self,
        name: &str,
        config: &BTreeMap<String, String>,
        state: ConnectorState,
    ) -> Result<(), ConnectError>;
    /// `PUT /connectors/{name}/config`: creates or replaces the whole config.
    fn put_config(&self, name: &str, config: &BTreeMap<String, String>)
    -> Result<(), ConnectError>;
    /// `PUT /connectors/{name}/pause|resume|stop`.
    fn set_state(&self, name: &str, state: ConnectorState) -> Result<(), ConnectError>;
    fn delete(&self, name: &str) -> Result<(), ConnectError>;
    /// `POST /connectors/{name}/restart?includeTasks=true&onlyFailed=true`.
    fn restart_failed(&self, name: &str) -> Result<(), ConnectError>;
    fn plugins(&self) -> Result<Vec<ConnectorPlugin>, ConnectError>;
    fn validate(
        &self,
        class: &str,
        config: &BTreeMap<String, String>,
    ) -> Result<Validation, ConnectError>;
}

/// Basic authentication for the REST API. `Debug` hides the password.
#[derive(Clone)]
pub struct BasicAuth {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Where and how to reach Connect.
#[derive(Clone, Debug)]
pub struct ConnectConfig {
    /// `http://host:8083` or `https://…`.
    pub url: String,
    /// For https: the only CA trusted (PEM). Without it, the system's roots.
    pub ca_pem: Option<String>,
    pub auth: Option<BasicAuth>,
    /// For each request, connect to answer.
    pub timeout: Duration,
}

/// The blocking Connect REST client. Its calls block: run it off async
/// threads (the reconciles run on the blocking pool).
#[derive(Debug)]
pub struct ConnectClient {
    base: Url,
    http: reqwest::blocking::Client,
    auth: Option<BasicAuth>,
}

#[derive(Deserialize)]
struct ExpandedEntry {
    #[serde(default)]
    status: Option<ConnectorStatus>,
    #[serde(default)]
    info: Option<InfoEntry>,
}

#[derive(Deserialize)]
struct InfoEntry {
    #[serde(default)]
    config: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct ValidateAnswer {
    #[serde(default)]
    configs: Vec<ValidateConfig>,
}

#[derive(Deserialize)]
struct ValidateConfig {
    value: ValidateValue,
}

#[derive(Deserialize)]
struct ValidateValue {
    name: String,
    #[serde(default)]
    errors: Vec<String>,
}

/// Config values are strings on the wire; anything else is kept as its
/// JSON text rather than refused.
fn config_strings(raw: BTreeMap<String, serde_json::Value>) -> BTreeMap<String, String> {
    raw.into_iter()
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (k, v)
        })
        .collect()
}

impl ConnectClient {
    pub fn new(config: ConnectConfig) -> Result<Self, ConnectError> {
        let setup = |detail: String| ConnectError::Setup {
            url: config.url.clone(),
            detail,
        };
        let mut base = Url::parse(&config.url).map_err(|e| setup(format!("not a URL: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(setup("the URL must be http or https".to_owned()));
        }
        if base.cannot_be_a_base() {
            return Err(setup("the URL cannot carry paths".to_owned()));
        }
        // Paths are appended segment by segment; a trailing slash would
        // leave an empty one.
        if let Ok(mut segments) = base.path_segments_mut() {
            segments.pop_if_empty();
        }
        let mut builder = reqwest::blocking::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout);
        if let Some(pem) = &config.ca_pem {
            let ca = reqwest::Certificate::from_pem(pem.as_bytes())
                .map_err(|e| setup(format!("the CA certificate: {e}")))?;
            builder = builder.tls_certs_only([ca]);
        }
        let http = builder
            .build()
            .map_err(|e| setup(format!("building the HTTP client: {e}")))?;
        Ok(Self {
            base,
            http,
            auth: config.auth,
        })
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.extend(segments);
        }
        url
    }

    /// Sends one request; an error status becomes `ConnectError::Http`.
    fn send(
        &self,
        connector: Option<&str>,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&serde_json::Value>,
    ) -> Result<Vec<u8>, ConnectError> {
        let url = self.url(segments);
        let call = format!("{method} {}", url.path());
        let mut request = self.http.request(method, url.clone());
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(auth) = &self.auth {
            request = request.basic_auth(&auth.user, Some(&auth.password));
        }
        let unreachable = |source: reqwest::Error| ConnectError::Unreachable {
            connector: connector.map(str::to_owned),
            call: call.clone(),
            url: self.base.to_string(),
            source,
        };
        let response = request.send().map_err(unreachable)?;
        let status = response.status();
        let bytes = response.bytes().map_err(unreachable)?;
        if status.is_success() {
            Ok(bytes.to_vec())
        } else {
            Err(http_error(connector, &call, status.as_u16(), &bytes))
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(
        connector: Option<&str>,
        call: &str,
        bytes: &[u8],
    ) -> Result<T, ConnectError> {
        serde_json::from_slice(bytes).map_err(|e| ConnectError::Decode {
            connector: connector.map(str::to_owned),
            call: call.to_owned(),
            detail: e.to_string(),
        })
    }
}

impl ConnectApi for ConnectClient {
    fn list(&self) -> Result<BTreeMap<String, ObservedConnector>, ConnectError> {
        let bytes = self.send(
            None,
            Method::GET,
            &["connectors"],
            &[("expand", "status"), ("expand", "info")],
            None,
        )?;
        let raw: BTreeMap<String, ExpandedEntry> =
            Self::decode(None, "GET /connectors?expand=status&expand=info", &bytes)?;
        Ok(raw
            .into_iter()
            .map(|(name, entry)| {
                let observed = ObservedConnector {
                    config: entry
                        .info
                        .map(|i| config_strings(i.config))
                        .unwrap_or_default(),
                    status: entry.status,
                };
                (name, observed)
            })
            .collect())
    }

    fn config(&self, name: &str) -> Result<BTreeMap<String, String>, ConnectError> {
        let bytes = self.send(
            Some(name),
            Method::GET,
            &["connectors", name, "config"],
            &[],
            None,
        )?;
        let raw = Self::decode(Some(name), "GET /connectors/{name}/config", &bytes)?;
        Ok(config_strings(raw))
    }

    fn status(&self, name: &str) -> Result<ConnectorStatus, ConnectError> {
        let bytes = self.send(
            Some(name),
            Method::GET,
            &["connectors", name, "status"],
            &[],
            None,
        )?;
        Self::decode(Some(name), "GET /connectors/{name}/status", &bytes)
    }

    fn create(
        &self,
        name: &str,
        config: &BTreeMap<String, String>,
        state: ConnectorState,
    ) -> Result<(), ConnectError> {
        let initial_state = match state {
            ConnectorState::Running => "RUNNING",
            ConnectorState::Paused => "PAUSED",
            ConnectorState::Stopped => "STOPPED",
        };
        let body = serde_json::json!({
            "name": name,
            "config": config,
            "initial_state": initial_state,
        });
        self.send(Some(name), Method::POST, &["connectors"], &[], Some(&body))
            .map(drop)
    }

    fn put_config(
        &self,
        name: &str,
        config: &BTreeMap<String, String>,
    ) -> Result<(), ConnectError> {
        let body = serde_json::json!(config);
        self.send(
            Some(name),
            Method::PUT,
            &["connectors", name, "config"],
            &[],
            Some(&body),
        )
        .map(drop)
    }

    fn set_state(&self, name: &str, state: ConnectorState) -> Result<(), ConnectError> {
        let verb = match state {
            ConnectorState::Running => "resume",
            ConnectorState::Paused => "pause",
            ConnectorState::Stopped => "stop",
        };
        self.send(
            Some(name),
            Method::PUT,
            &["connectors", name, verb],
            &[],
            None,
        )
        .map(drop)
    }

    fn delete(&self, name: &str) -> Result<(), ConnectError> {
        self.send(Some(name), Method::DELETE, &["connectors", name], &[], None)
            .map(drop)
    }

    fn restart_failed(&self, name: &str) -> Result<(), ConnectError> {
        self.send(
            Some(name),
            Method::POST,
            &["connectors", name, "restart"],
            &[("includeTasks", "true"), ("onlyFailed", "true")],
            None,
        )
        .map(drop)
    }

    fn plugins(&self) -> Result<Vec<ConnectorPlugin>, ConnectError> {
        let bytes = self.send(None, Method::GET, &["connector-plugins"], &[], None)?;
        Self::decode(None, "GET /connector-plugins", &bytes)
    }

    fn validate(
        &self,
        class: &str,
        config: &BTreeMap<String, String>,
    ) -> Result<Validation, ConnectError> {
        let connector = config.get("name").map(String::as_str);
        let body = serde_json::json!(config);
        let bytes = self.send(
            connector,
            Method::PUT,
            &["connector-plugins", class, "config", "validate"],
            &[],
            Some(&body),
        )?;
        let answer: ValidateAnswer = Self::decode(
            connector,
            "PUT /connector-plugins/{class}/config/validate",
            &bytes,
        )?;
        let errors = answer
            .configs
            .into_iter()
            .flat_map(|c| {
                let field = c.value.name;
                c.value
                    .errors
                    .into_iter()
                    .map(move |e| (field.clone(), shorten(&e, MESSAGE_LIMIT)))
            })
            .collect();
        Ok(Validation { errors })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_error_bodies_become_their_message() {
        let err = http_error(
            Some("f1"),
            "PUT /connectors/f1/config",
            400,
            br#"{"error_code":400,"message":"Connector configuration is invalid"}"#,
        );
        assert_eq!(err.status(), Some(400));
        assert!(err.is_rejection());
        assert_eq!(
            err.to_string(),
            "connector f1: PUT /connectors/f1/config: Connect answered 400: Connector configuration is invalid"
        );
    }

    #[test]
    fn other_bodies_are_kept_trimmed_and_short() {
        let err = http_error(
            None,
            "GET /connectors",
            502,
            b"  <html>bad gateway</html>\n",
        );
        assert_eq!(
            err.to_string(),
            "GET /connectors: Connect answered 502: <html>bad gateway</html>"
        );
        assert!(!err.is_rejection());

        let err = http_error(None, "GET /connectors", 500, b"");
        assert!(err.to_string().ends_with("500: (no message)"), "{err}");

        // JSON without a message is shown as it came.
        let err = http_error(None, "GET /connectors", 500, br#"{"error_code":500}"#);
        assert!(
            err.to_string().ends_with(r#"500: {"error_code":500}"#),
            "{err}"
        );

        let long = "é".repeat(2000);
        let body = serde_json::json!({ "message": long }).to_string();
        let ConnectError::Http { message, .. } = http_error(None, "x", 500, body.as_bytes()) else {
            panic!("not an HTTP error");
        };
        assert!(message.len() <= MESSAGE_LIMIT + 4, "{}", message.len());
        assert!(message.ends_with(" …"));
    }

    #[test]
    fn conflicts_and_timeouts_are_not_rejections() {
        for status in [408, 409, 429, 500, 503] {
            assert!(
                !http_error(None, "x", status, b"").is_rejection(),
                "{status}"
            );
        }
        for status in [400, 404, 422] {
            assert!(
                http_error(None, "x", status, b"").is_rejection(),
                "{status}"
            );
        }
    }

    #[test]
    fn unknown_states_are_kept() {
        let status: ConnectorStatus = serde_json::from_str(
            r#"{"name":"a","connector":{"state":"DEGRADED","worker_id":"w:1"},
                "tasks":[{"id":0,"state":"FAILED","worker_id":"w:1","trace":"boom\n\tat x"}],"type":"source"}"#,
        )
        .expect("status");
        assert_eq!(
            status.connector.state,
            WorkerState::Other("DEGRADED".into())
        );
        assert!(status.has_failed());
        assert_eq!(status.connector.state.to_string(), "DEGRADED");
    }

    #[test]
    fn config_values_that_are_not_strings_are_kept_as_json() {
        let raw: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(r#"{"tasks.max":1,"topic":"t","flag":true}"#).expect("json");
        let config = config_strings(raw);
        assert_eq!(config["tasks.max"], "1");
        assert_eq!(config["topic"], "t");
        assert_eq!(config["flag"], "true");
    }

    #[test]
    fn paths_are_escaped_segment_by_segment() {
        let client = ConnectClient::new(ConnectConfig {
            url: "http://127.0.0.1:8083/".into(),
            ca_pem: None,
            auth: None,
            timeout: Duration::from_secs(1),
        })
        .expect("client");
        assert_eq!(
            client
                .url(&["connector-plugins", "a.B$C/x?y", "config", "validate"])
                .as_str(),
            "http://127.0.0.1:8083/connector-plugins/a.B$C%2Fx%3Fy/config/validate"
        );
        let err = ConnectClient::new(ConnectConfig {
            url: "ftp://x".into(),
            ca_pem: None,
            auth: None,
            timeout: Duration::from_secs(1),
        })
        .expect_err("ftp");
        assert!(err.to_string().contains("http or https"), "{err}");
    }

    #[test]
    fn basic_auth_debug_hides_the_password() {
        let auth = BasicAuth {
            user: "connect".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{auth:?}").contains("hunter2"));
    }
}
