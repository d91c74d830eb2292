//! The agent's side of the coordinator protocol (`crate::protocol`).
//!
//! Blocking calls (certificates, leases) are made from the reconcile
//! thread; status reports and the nudge long-poll are async.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::protocol::{
    CertificateRequestBody, CertificateResponse, EnrolmentResponse, HaltRequest, Lease,
    LeaseRequest, Nudge, ResumeRequest, RolloutView, StatusReport,
};

/// Why a coordinator call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("coordinator {url} unreachable")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("coordinator {url}: {message}")]
    Setup { url: String, message: String },
    #[error("coordinator refused {what}: HTTP {status}: {message}")]
    Refused {
        what: String,
        status: u16,
        message: String,
    },
}

/// What a lease request came back with.
#[derive(Debug)]
pub enum LeaseAnswer {
    Granted(Lease),
    /// Held by another node, or the coordinator is in its restart grace.
    Busy(String),
}

/// How this node proves who it is.
#[derive(Clone)]
enum Auth {
    /// Plain HTTP, the node's join token as a bearer token on every call.
    Token(String),
    /// Mutual TLS: the coordinator's certificate must chain to `ca_pem`
    /// (pinned in `agent.yaml`); the node presents the certificate in
    /// `credential` (key and chain, PEM), obtained by enrolling once with
    /// `token` and renewed at two thirds of its lifetime.
    Tls {
        ca_pem: String,
        credential: PathBuf,
        token: Option<String>,
    },
}

/// A coordinator at `base`, called as this node.
/// The async client and the credential it was built with.
type AsyncCache = std::sync::Arc<std::sync::Mutex<Option<(Option<String>, reqwest::Client)>>>;

#[derive(Clone)]
pub struct CoordinatorClient {
    base: String,
    node: String,
    auth: Auth,
    async_cache: AsyncCache,
}

impl std::fmt::Debug for CoordinatorClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auth = match &self.auth {
            Auth::Token(_) => "join token",
            Auth::Tls { .. } => "mutual TLS",
        };
        f.debug_struct("CoordinatorClient")
            .field("base", &self.base)
            .field("node", &self.node)
            .field("auth", &auth)
            .finish()
    }
}

/// The message of an error body: the coordinator protocol's `ApiError`,
/// or the cluster API's `{"error": {"code", "message"}}`.
fn message(body: &str) -> String {
    if let Ok(e) = serde_json::from_str::<crate::protocol::ApiError>(body) {
        return e.error;
    }
    if let Ok(e) = serde_json::from_str::<crate::coordinator::cluster_api::ErrorBody>(body) {
        return format!("{} ({})", e.error.message, e.error.code);
    }
    body.chars().take(200).collect()
}

impl CoordinatorClient {
    /// Plain HTTP (`http://host:port`), authenticated by the node's join token.
    pub fn new(base: &str, node: &str, token: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            node: node.to_owned(),
            auth: Auth::Token(token.to_owned()),
            async_cache: AsyncCache::default(),
        }
    }

    /// Mutual TLS (`https://host:port`): the coordinator must present a
    /// certificate of the CA `ca_pem`; this node presents the one kept in
    /// `credential`, enrolling with `token` first if there is none.
    pub fn tls(
        base: &str,
        node: &str,
        ca_pem: &str,
        credential: PathBuf,
        token: Option<String>,
    ) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            node: node.to_owned(),
            auth: Auth::Tls {
                ca_pem: ca_pem.to_owned(),
                credential,
                token,
            },
            async_cache: AsyncCache::default(),
        }
    }

    /// Over mutual TLS: the pinned CA, where the client certificate is kept
    /// and the join token (if the node still has it); `None` in join-token
    /// mode.
    fn tls_parts(&self) -> Option<(&str, &Path, Option<&str>)> {
        match &self.auth {
            Auth::Token(_) => None,
            Auth::Tls {
                ca_pem,
                credential,
                token,
            } => Some((ca_pem, credential, token.as_deref())),
        }
    }

    fn setup_error(&self, message: String) -> ClientError {
        ClientError::Setup {
            url: self.base.clone(),
            message,
        }
    }

    /// Over mutual TLS: the pinned CA, and `identity` (a credential PEM)
    /// if given, as reqwest takes them. `None` in join-token mode.
    fn tls_material(
        &self,
        identity: Option<&str>,
    ) -> Result<Option<(reqwest::Certificate, Option<reqwest::Identity>)>, ClientError> {
        let Some((ca_pem, _, _)) = self.tls_parts() else {
            return Ok(None);
        };
        let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes())
            .map_err(|e| self.setup_error(format!("the pinned CA: {e}")))?;
        let identity = identity
            .map(|pem| {
                reqwest::Identity::from_pem(pem.as_bytes())
                    .map_err(|e| self.setup_error(format!("this node's certificate: {e}")))
            })
            .transpose()?;
        Ok(Some((ca, identity)))
    }

    /// A blocking client; over mutual TLS it presents `identity` if given.
    fn blocking_with(
        &self,
        identity: Option<&str>,
    ) -> Result<reqwest::blocking::Client, ClientError> {
        let mut builder = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30));
        if let Some((ca, identity)) = self.tls_material(identity)? {
            builder = builder.tls_certs_only([ca]);
            if let Some(identity) = identity {
                builder = builder.identity(identity);
            }
        }
        builder.build().map_err(|source| ClientError::Unreachable {
            url: self.base.clone(),
            source,
        })
    }

    fn blocking(&self) -> Result<reqwest::blocking::Client, ClientError> {
        let credential = self.credential()?;
        self.blocking_with(credential.as_deref())
    }

    /// The async client (status reports, nudge polls): built once, and
    /// again only when the client certificate was renewed.
    fn async_client(&self) -> Result<reqwest::Client, ClientError> {
        let credential = match self.tls_parts() {
            None => None,
            Some(_) => Some(self.read_credential().ok_or_else(|| {
                self.setup_error(
                    "not enrolled yet: no client certificate (the reconcile loop enrols)"
                        .to_owned(),
                )
            })?),
        };
        let mut cached = self
            .async_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((built_for, client)) = &*cached
            && *built_for == credential
        {
            return Ok(client.clone());
        }
        let mut builder = reqwest::Client::builder();
        if let Some((ca, identity)) = self.tls_material(credential.as_deref())? {
            builder = builder.tls_certs_only([ca]);
            if let Some(identity) = identity {
                builder = builder.identity(identity);
            }
        }
        let client = builder.build().map_err(|source| ClientError::Unreachable {
            url: self.base.clone(),
            source,
        })?;
        *cached = Some((credential, client.clone()));
        Ok(client)
    }

    fn read_credential(&self) -> Option<String> {
        let (_, credential, _) = self.tls_parts()?;
        std::fs::read_to_string(credential).ok()
    }

    /// Over mutual TLS: this node's current credential (key and chain,
    /// PEM), enrolling first when there is none and renewing it when two
    /// thirds of its lifetime have passed. `None` in join-token mode.
    fn credential(&self) -> Result<Option<String>, ClientError> {
        let Some((_, credential, _)) = self.tls_parts() else {
            return Ok(None);
        };
        match self.read_credential() {
            None => {
                self.enrol_with(|_| Ok(()))?;
            }
            Some(pem) => {
                let due = crate::certs::read_keystore(&pem)
                    .and_then(|(_, chain)| crate::certs::inspect(&chain))
                    .map(|info| crate::certs::unix_now() >= crate::certs::renewal_due_at(&info, 0));
                match due {
                    Ok(false) => return Ok(Some(pem)),
                    Ok(true) => {
                        if let Err(e) = self.renew_credential(&pem) {
                            tracing::warn!(error = %e, "renewing the coordinator client certificate; using the current one");
                            return Ok(Some(pem));
                        }
                    }
                    Err(e) => {
                        return Err(self.setup_error(format!(
                            "{} is unreadable ({e}); remove it and give the node a new join token to enrol again",
                            credential.display()
                        )));
                    }
                }
            }
        }
        self.read_credential()
            .map(Some)
            .ok_or_else(|| self.setup_error(format!("{} vanished", credential.display())))
    }

    /// Over mutual TLS, makes sure this node has a client certificate
    /// (enrolling or renewing as needed). Returns whether it has one.
    pub fn ensure_enrolled(&self) -> Result<bool, ClientError> {
        Ok(self.credential()?.is_some())
    }

    /// `POST /v1/enrol` with the join token (blocking). The age identity
    /// the coordinator hands over goes to `on_identity` first; only if that
    /// succeeds is the node's first client certificate written. The token
    /// is spent by it.
    pub fn enrol_with(
        &self,
        on_identity: impl FnOnce(&str) -> Result<(), String>,
    ) -> Result<(), ClientError> {
        let Some((_, credential, token)) = self.tls_parts() else {
            return Err(self.setup_error(
                "enrolment needs the coordinator's mutual-TLS port (ca_file)".to_owned(),
            ));
        };
        let token = token.ok_or_else(|| {
            self.setup_error(format!(
                "not enrolled ({} is missing) and no join token to enrol with",
                credential.display()
            ))
        })?;
        let key = crate::certs::NodeKey::generate()
            .map_err(|e| self.setup_error(format!("generating a key: {e}")))?;
        let csr = self.csr(&key)?;
        let body = CertificateRequestBody {
            node: self.node.clone(),
            csr_pem: csr,
        };
        let resp = self
            .blocking_with(None)?
            .post(format!("{}/v1/enrol", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .map_err(|e| self.unreachable(e))?;
        let resp = Self::check_blocking(resp, || "the enrolment".to_owned())?;
        let enrolled: EnrolmentResponse = resp.json().map_err(|e| self.unreachable(e))?;
        on_identity(&enrolled.identity).map_err(|e| self.setup_error(e))?;
        self.store_credential(&key, &enrolled.certificate_pem, &enrolled.ca_pem)?;
        tracing::info!(node = %self.node, not_after = enrolled.not_after, "enrolled with the coordinator");
        Ok(())
    }

    fn renew_credential(&self, current: &str) -> Result<(), ClientError> {
        let key = crate::certs::NodeKey::generate()
            .map_err(|e| self.setup_error(format!("generating a key: {e}")))?;
        let body = CertificateRequestBody {
            node: self.node.clone(),
            csr_pem: self.csr(&key)?,
        };
        let resp = self
            .blocking_with(Some(current))?
            .post(format!("{}/v1/certificates", self.base))
            .json(&body)
            .send()
            .map_err(|e| self.unreachable(e))?;
        let signed: CertificateResponse =
            Self::check_blocking(resp, || "renewing the client certificate".to_owned())?
                .json()
                .map_err(|e| self.unreachable(e))?;
        self.store_credential(&key, &signed.certificate_pem, &signed.ca_pem)?;
        tracing::info!(node = %self.node, not_after = signed.not_after, "renewed the coordinator client certificate");
        Ok(())
    }

    /// A CSR naming only this node (the coordinator adds the node's own
    /// names from the desired state).
    fn csr(&self, key: &crate::certs::NodeKey) -> Result<String, ClientError> {
        crate::certs::csr_for_names("coordinator-client", &self.node, &[], &[], key)
            .map_err(|e| self.setup_error(format!("making a CSR: {e}")))
    }

    fn store_credential(
        &self,
        key: &crate::certs::NodeKey,
        cert_pem: &str,
        ca_pem: &str,
    ) -> Result<(), ClientError> {
        let Some((_, credential, _)) = self.tls_parts() else {
            return Ok(());
        };
        let pem = crate::certs::keystore_pem(key, cert_pem, ca_pem);
        crate::apply::atomic::write_own(credential, pem.as_bytes(), 0o600)
            .map_err(|e| self.setup_error(format!("writing {}: {e}", credential.display())))
    }

    fn check_blocking(
        resp: reqwest::blocking::Response,
        what: impl FnOnce() -> String,
    ) -> Result<reqwest::blocking::Response, ClientError> {
        let status = resp.status();
        if status.is_success() {
            Ok(resp)
        } else {
            Err(ClientError::Refused {
                what: what(),
                status: status.as_u16(),
                message: message(&resp.text().unwrap_or_default()),
            })
        }
    }

    fn unreachable(&self, source: reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            url: self.base.clone(),
            source,
        }
    }

    fn with_token(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Auth::Token(token) => request.bearer_auth(token),
            Auth::Tls { .. } => request,
        }
    }

    /// Sends `body` as this node (blocking); a non-2xx answer is
    /// `Refused` naming `what`.
    fn send_blocking(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &impl serde::Serialize,
        what: impl FnOnce() -> String,
    ) -> Result<reqwest::blocking::Response, ClientError> {
        let mut request = self
            .blocking()?
            .request(method, format!("{}{path}", self.base))
            .json(body);
        if let Auth::Token(token) = &self.auth {
            request = request.bearer_auth(token);
        }
        let resp = request.send().map_err(|e| self.unreachable(e))?;
        Self::check_blocking(resp, what)
    }

    /// `POST /v1/certificates` (blocking).
    pub fn sign(&self, csr_pem: &str) -> Result<CertificateResponse, ClientError> {
        let body = CertificateRequestBody {
            node: self.node.clone(),
            csr_pem: csr_pem.to_owned(),
        };
        self.send_blocking(reqwest::Method::POST, "/v1/certificates", &body, || {
            "the certificate request".to_owned()
        })?
        .json()
        .map_err(|e| self.unreachable(e))
    }

    /// `POST /v1/leases/{role}` (blocking), for a restart to `revision`
    /// when given. Refused by the rollout policy (every slot taken, paused,
    /// outside the maintenance windows, halted, an earlier role not done:
    /// 409) or in the coordinator's restart grace (503) is `Busy` with the
    /// coordinator's message, not an error.
    pub fn acquire(
        &self,
        role: &str,
        ttl_seconds: u64,
        revision: Option<&str>,
    ) -> Result<LeaseAnswer, ClientError> {
        let body = LeaseRequest {
            node: self.node.clone(),
            ttl_seconds,
            fencing: None,
            revision: revision.map(str::to_owned),
        };
        let path = format!("/v1/leases/{role}");
        self.lease_answer(self.send_blocking(reqwest::Method::POST, &path, &body, || {
            format!("a lease for {role}")
        }))
    }

    /// `PUT /v1/leases/{role}` (blocking): extends `lease` to `ttl_seconds`
    /// from now. A lease that is no longer this node's (expired, another
    /// fencing id: 409) is `Busy`.
    pub fn renew(&self, lease: &Lease, ttl_seconds: u64) -> Result<LeaseAnswer, ClientError> {
        let body = LeaseRequest {
            node: self.node.clone(),
            ttl_seconds,
            fencing: Some(lease.fencing),
            revision: lease.revision.clone(),
        };
        let path = format!("/v1/leases/{}", lease.role);
        self.lease_answer(self.send_blocking(reqwest::Method::PUT, &path, &body, || {
            format!("renewing the {} lease", lease.role)
        }))
    }

    fn lease_answer(
        &self,
        sent: Result<reqwest::blocking::Response, ClientError>,
    ) -> Result<LeaseAnswer, ClientError> {
        match sent {
            Ok(resp) => resp
                .json()
                .map(LeaseAnswer::Granted)
                .map_err(|e| self.unreachable(e)),
            Err(ClientError::Refused {
                status: 409 | 503,
                message,
                ..
            }) => Ok(LeaseAnswer::Busy(message)),
            Err(e) => Err(e),
        }
    }

    /// `DELETE /v1/leases/{role}` (blocking).
    pub fn release(&self, lease: &Lease) -> Result<(), ClientError> {
        let body = LeaseRequest {
            node: self.node.clone(),
            ttl_seconds: 0,
            fencing: Some(lease.fencing),
            revision: None,
        };
        let path = format!("/v1/leases/{}", lease.role);
        self.send_blocking(reqwest::Method::DELETE, &path, &body, || {
            format!("releasing the {} lease", lease.role)
        })
        .map(drop)
    }

    /// `POST /v1/leases/{role}/halt` (blocking): the restart under `lease`
    /// failed at `revision`; the role's rollout stops until a new commit
    /// or a resume. The lease stays held and stops expiring.
    pub fn halt(
        &self,
        lease: &Lease,
        revision: Option<&str>,
        reason: &str,
    ) -> Result<(), ClientError> {
        let body = HaltRequest {
            node: self.node.clone(),
            fencing: lease.fencing,
            revision: revision.map(str::to_owned),
            reason: reason.to_owned(),
        };
        let path = format!("/v1/leases/{}/halt", lease.role);
        self.send_blocking(reqwest::Method::POST, &path, &body, || {
            format!("halting the {} rollout", lease.role)
        })
        .map(drop)
    }

    /// `POST /v1/rollout/resume` (blocking): clears the halt of `role`, or
    /// of every role. Nothing halted is `Refused` with status 404.
    pub fn resume(&self, role: Option<&str>) -> Result<RolloutView, ClientError> {
        let body = ResumeRequest {
            node: self.node.clone(),
            role: role.map(str::to_owned),
        };
        self.send_blocking(reqwest::Method::POST, "/v1/rollout/resume", &body, || {
            "resuming the rollout".to_owned()
        })?
        .json()
        .map_err(|e| self.unreachable(e))
    }

    /// `GET /v1/nodes` (blocking): every node with its latest report.
    pub fn nodes(&self) -> Result<Vec<crate::protocol::NodeView>, ClientError> {
        self.get_blocking("/v1/nodes", || "the node list".to_owned())
    }

    /// `GET {path}` (blocking); reads need no authentication, but the
    /// token goes along in join-token mode like on every call.
    fn get_blocking<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        what: impl FnOnce() -> String,
    ) -> Result<T, ClientError> {
        let mut request = self.blocking()?.get(format!("{}{path}", self.base));
        if let Auth::Token(token) = &self.auth {
            request = request.bearer_auth(token);
        }
        let resp = request.send().map_err(|e| self.unreachable(e))?;
        Self::check_blocking(resp, what)?
            .json()
            .map_err(|e| self.unreachable(e))
    }

    /// `GET /v1/rollout` (blocking).
    pub fn rollout(&self) -> Result<RolloutView, ClientError> {
        self.get_blocking("/v1/rollout", || "the rollout view".to_owned())
    }

    /// `GET /topics` of the cluster API (blocking).
    pub fn topics(&self) -> Result<crate::coordinator::cluster_api::TopicList, ClientError> {
        self.get_blocking("/topics", || "the topic list".to_owned())
    }

    /// `GET /connectors` of the cluster API (blocking).
    pub fn connectors(
        &self,
    ) -> Result<crate::coordinator::cluster_api::ConnectorList, ClientError> {
        self.get_blocking("/connectors", || "the connector list".to_owned())
    }

    /// `POST /v1/nodes/{node}/status`.
    pub async fn report(&self, status: &StatusReport) -> Result<(), ClientError> {
        let client = self.async_client()?;
        let resp = self
            .with_token(client.post(format!("{}/v1/nodes/{}/status", self.base, self.node)))
            .json(status)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            let code = resp.status().as_u16();
            Err(ClientError::Refused {
                what: "the status report".to_owned(),
                status: code,
                message: message(&resp.text().await.unwrap_or_default()),
            })
        }
    }

    /// `GET /v1/nudges?after=N`: waits until the coordinator's generation
    /// passes `after` (or its poll timeout) and returns the generation.
    pub async fn wait_for_nudge(&self, after: u64) -> Result<u64, ClientError> {
        let client = self.async_client()?;
        let resp = self
            .with_token(client.get(format!("{}/v1/nudges", self.base)))
            .query(&[("after", after)])
            .timeout(Duration::from_secs(90))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if !resp.status().is_success() {
            let code = resp.status().as_u16();
            return Err(ClientError::Refused {
                what: "the nudge poll".to_owned(),
                status: code,
                message: message(&resp.text().await.unwrap_or_default()),
            });
        }
        let nudge: Nudge = resp.json().await.map_err(|e| self.unreachable(e))?;
        Ok(nudge.generation)
    }
}
