//! The agent's side of the coordinator protocol (`crate::protocol`).
//!
//! Blocking calls (certificates, leases) are made from the reconcile
//! thread; status reports and the nudge long-poll are async.

use std::time::Duration;

use crate::protocol::{
    CertificateRequestBody, CertificateResponse, Lease, LeaseRequest, Nudge, StatusReport,
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

/// A coordinator at `base` (`http://host:port`), authenticated by this
/// node's join token.
#[derive(Clone, Debug)]
pub struct CoordinatorClient {
    base: String,
    node: String,
    token: String,
}

fn message(body: &str) -> String {
    serde_json::from_str::<crate::protocol::ApiError>(body)
        .map(|e| e.error)
        .unwrap_or_else(|_| body.chars().take(200).collect())
}

impl CoordinatorClient {
    pub fn new(base: &str, node: &str, token: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            node: node.to_owned(),
            token: token.to_owned(),
        }
    }

    fn blocking(&self) -> Result<reqwest::blocking::Client, ClientError> {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|source| ClientError::Unreachable {
                url: self.base.clone(),
                source,
            })
    }

    fn unreachable(&self, source: reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            url: self.base.clone(),
            source,
        }
    }

    /// Sends `body` with this node's token (blocking); a non-2xx answer is
    /// `Refused` naming `what`.
    fn send_blocking(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &impl serde::Serialize,
        what: impl FnOnce() -> String,
    ) -> Result<reqwest::blocking::Response, ClientError> {
        let resp = self
            .blocking()?
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .map_err(|e| self.unreachable(e))?;
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

    /// `POST /v1/leases/{role}` (blocking). Held by another node or in the
    /// coordinator's restart grace (409/503) is `Busy`, not an error.
    pub fn acquire(&self, role: &str, ttl_seconds: u64) -> Result<LeaseAnswer, ClientError> {
        let body = LeaseRequest {
            node: self.node.clone(),
            ttl_seconds,
            fencing: None,
        };
        let path = format!("/v1/leases/{role}");
        match self.send_blocking(reqwest::Method::POST, &path, &body, || {
            format!("a lease for {role}")
        }) {
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
        };
        let path = format!("/v1/leases/{}", lease.role);
        self.send_blocking(reqwest::Method::DELETE, &path, &body, || {
            format!("releasing the {} lease", lease.role)
        })
        .map(drop)
    }

    /// `POST /v1/nodes/{node}/status`.
    pub async fn report(
        &self,
        client: &reqwest::Client,
        status: &StatusReport,
    ) -> Result<(), ClientError> {
        let resp = client
            .post(format!("{}/v1/nodes/{}/status", self.base, self.node))
            .bearer_auth(&self.token)
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
    pub async fn wait_for_nudge(
        &self,
        client: &reqwest::Client,
        after: u64,
    ) -> Result<u64, ClientError> {
        let resp = client
            .get(format!("{}/v1/nudges", self.base))
            .query(&[("after", after)])
            .bearer_auth(&self.token)
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
