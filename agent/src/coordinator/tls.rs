//! The coordinator's mutual-TLS listener for agents.
//!
//! The coordinator serves its agent API a second time over TLS, with a
//! server certificate it issues itself from the cluster CA (it holds the CA
//! key) for its node's names, `localhost` and `127.0.0.1`. Agents pin the
//! cluster CA (`ca_file` in `agent.yaml`), so a node's join token is only
//! ever sent to the real coordinator. A client certificate is optional at
//! the handshake: without one a caller can only enrol (`POST /v1/enrol`,
//! with its single-use join token); with one issued by the cluster CA the
//! caller is the node its CN names, and every node endpoint accepts it.

use std::sync::{Arc, PoisonError, RwLock};

use axum::Extension;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use super::Coordinator;
use super::http::{ShuttingDown, router};

/// The node a verified client certificate names, or `None` for a caller
/// without one. Set per connection by [`serve_tls`]; read by the handlers.
#[derive(Clone, Debug, Default)]
pub struct PeerNode(pub Option<String>);

/// Why the TLS listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("reading the {what} PEM: {reason}")]
    Pem { what: &'static str, reason: String },
    #[error("the cluster CA certificate cannot be a trust anchor")]
    Anchor(#[source] rustls::Error),
    #[error("building the client certificate verifier")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    #[error("loading the coordinator's private key")]
    Key(#[source] rustls::Error),
    #[error("building the TLS configuration")]
    Config(#[source] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The server certificate the listener presents; replaced in place when the
/// coordinator renews it, so connections made later get the new one.
#[derive(Debug)]
pub struct ServerCertificate {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ServerCertificate {
    /// From a keystore PEM (private key, then the certificate chain).
    pub fn from_keystore(pem: &str) -> Result<Arc<Self>, TlsSetupError> {
        Ok(Arc::new(Self {
            current: RwLock::new(Arc::new(certified_key(pem)?)),
        }))
    }

    /// Presents `pem` (a keystore PEM) from the next handshake on.
    pub fn replace(&self, pem: &str) -> Result<(), TlsSetupError> {
        let key = Arc::new(certified_key(pem)?);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = key;
        Ok(())
    }
}

impl ResolvesServerCert for ServerCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

fn certified_key(pem: &str) -> Result<CertifiedKey, TlsSetupError> {
    let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsSetupError::Pem {
            what: "coordinator certificate",
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsSetupError::Pem {
            what: "coordinator certificate",
            reason: "no CERTIFICATE block".to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| TlsSetupError::Pem {
        what: "coordinator key",
        reason: e.to_string(),
    })?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(TlsSetupError::Key)?;
    Ok(CertifiedKey::new(chain, signing))
}

/// The listener's TLS configuration: `certificate` as the server's, client
/// certificates optional but, when sent, verified against `ca_pem`.
pub fn server_config(
    ca_pem: &str,
    certificate: Arc<ServerCertificate>,
) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| TlsSetupError::Pem {
            what: "cluster CA",
            reason: e.to_string(),
        })?;
        roots.add(cert).map_err(TlsSetupError::Anchor)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .map_err(TlsSetupError::Verifier)?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsSetupError::Config)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certificate);
    Ok(Arc::new(config))
}

/// The CN of a verified client certificate: the node's name (the cluster CA
/// signs nothing else into it).
fn peer_node(certificates: Option<&[CertificateDer<'_>]>) -> Option<String> {
    let first = certificates?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(first.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// Serves the coordinator's routes over TLS on `listener` until `shutdown`
/// is cancelled. A failed handshake ends that connection only.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    state: Arc<Coordinator>,
    config: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let address = listener.local_addr()?;
    tracing::info!(%address, "coordinator listening for agents (mutual TLS)");
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let app = router(state).layer(Extension(ShuttingDown(shutdown.clone())));
    loop {
        let (tcp, remote) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a TLS connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let handshake =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp));
            let tls = match handshake.await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::info!(%remote, error = %e, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::info!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            let peer = PeerNode(peer_node(tls.get_ref().1.peer_certificates()));
            let app = app.layer(Extension(peer));
            let service = hyper_util::service::TowerToHyperService::new(app);
            // The timer makes hyper's 30 s limit on reading a request's
            // headers apply: a client that stalls mid-request is dropped.
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%remote, error = %e, "TLS connection ended");
                    }
                }
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    tracing::info!(%address, "coordinator TLS listener stopped");
    Ok(())
}
