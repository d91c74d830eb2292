//! One authenticated connection to one Kafka node: TCP, TLS (rustls, the
//! cluster CA), SASL/SCRAM-SHA-512 when the listener asks for it, the
//! node's API versions, and framed request/response exchanges.

use std::collections::HashMap;
use std::io::{self, Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::{
    ApiVersionsRequest, RequestHeader, ResponseHeader, SaslAuthenticateRequest,
    SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Decodable as _, Encodable as _, HeaderVersion, Request, StrBytes};
use rustls::pki_types::ServerName;

use super::KafkaError;
use super::scram::{self, ScramClient};

/// Sent in every request header (brokers log it with each request).
const CLIENT_ID: &str = "kraftops-agent";

/// Larger than any admin response (Metadata of 100 000 partitions is a few
/// MiB); a longer length prefix means the stream is not Kafka's protocol.
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// The ApiVersions version sent first (Kafka 2.4 and later answer it).
const API_VERSIONS_VERSION: i16 = 3;

/// What every connection of one client shares.
pub(super) struct Settings {
    pub(super) tls: Arc<rustls::ClientConfig>,
    /// `(user, password)` for SASL/SCRAM-SHA-512; `None` for mutual TLS.
    pub(super) scram: Option<(String, String)>,
    pub(super) timeout: Duration,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("scram_user", &self.scram.as_ref().map(|(user, _)| user))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// An open, authenticated connection and the versions its node speaks.
pub(super) struct Connection {
    address: String,
    stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    /// API key → the node's (min, max) version.
    versions: HashMap<i16, (i16, i16)>,
    next_correlation_id: i32,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// `host` and `port` of a `host:port` address (`[v6]:port` too).
pub(super) fn split_address(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = port.parse().ok()?;
    (!host.is_empty()).then_some((host, port))
}

/// Whether `error` says the peer closed the connection (an idle connection
/// the node dropped), as opposed to a timeout or a refusal.
pub(super) fn is_closed_connection(error: &KafkaError) -> bool {
    matches!(error, KafkaError::Io { source, .. } if matches!(
        source.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    ))
}

/// A TLS failure shows up as an `io::Error` wrapping a `rustls::Error`.
fn is_tls_error(error: &io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
}

impl Connection {
    /// Connects to `address`, completes the TLS handshake, asks the node's
    /// API versions and authenticates.
    pub(super) fn open(address: &str, settings: &Settings) -> Result<Connection, KafkaError> {
        let connect_error = |source: io::Error| KafkaError::Connect {
            address: address.to_owned(),
            source,
        };
        let tls_error = |source: io::Error| KafkaError::Tls {
            address: address.to_owned(),
            source,
        };
        let (host, port) = split_address(address).ok_or_else(|| {
            connect_error(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a host:port address",
            ))
        })?;
        let mut last = None;
        let mut tcp = None;
        for socket_address in (host, port).to_socket_addrs().map_err(connect_error)? {
            match TcpStream::connect_timeout(&socket_address, settings.timeout) {
                Ok(stream) => {
                    tcp = Some(stream);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let mut tcp = tcp.ok_or_else(|| {
            connect_error(last.unwrap_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, "the host name has no address")
            }))
        })?;
        tcp.set_read_timeout(Some(settings.timeout))
            .and_then(|()| tcp.set_write_timeout(Some(settings.timeout)))
            .and_then(|()| tcp.set_nodelay(true))
            .map_err(connect_error)?;

        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| tls_error(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        let mut tls = rustls::ClientConnection::new(Arc::clone(&settings.tls), name)
            .map_err(|e| tls_error(io::Error::other(e)))?;
        while tls.is_handshaking() {
            tls.complete_io(&mut tcp).map_err(tls_error)?;
        }

        let mut connection = Connection {
            address: address.to_owned(),
            stream: rustls::StreamOwned::new(tls, tcp),
            versions: HashMap::new(),
            next_correlation_id: 1,
        };
        connection.ask_versions()?;
        if let Some((user, password)) = &settings.scram {
            connection.authenticate(user, password)?;
        }
        Ok(connection)
    }

    /// Sends the request `build` makes for the highest version both this
    /// node and `kafka-protocol` know, and reads its response.
    pub(super) fn call<R: Request>(
        &mut self,
        api: &'static str,
        build: impl FnOnce(i16) -> R,
    ) -> Result<R::Response, KafkaError> {
        let version = self.version_for::<R>(api)?;
        self.exchange(api, version, &build(version))
    }

    /// The version to use for `R`: the highest in both ranges.
    pub(super) fn version_for<R: Request>(&self, api: &'static str) -> Result<i16, KafkaError> {
        let offered = self.versions.get(&R::KEY).copied();
        match offered {
            Some((min, max)) if min.max(R::VERSIONS.min) <= max.min(R::VERSIONS.max) => {
                Ok(max.min(R::VERSIONS.max))
            }
            _ => Err(KafkaError::Unsupported {
                api,
                address: self.address.clone(),
                offered: offered.map_or_else(
                    || "none".to_owned(),
                    |(min, max)| format!("{min}..={max}; this client knows {}", R::VERSIONS),
                ),
            }),
        }
    }

    fn ask_versions(&mut self) -> Result<(), KafkaError> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let response = self.exchange("ApiVersions", API_VERSIONS_VERSION, &request)?;
        if response.error_code != 0 {
            return Err(KafkaError::Protocol {
                api: "ApiVersions",
                address: self.address.clone(),
                message: format!(
                    "the node answered {}",
                    super::client::error_name(response.error_code)
                ),
            });
        }
        self.versions = response
            .api_keys
            .iter()
            .map(|v| (v.api_key, (v.min_version, v.max_version)))
            .collect();
        Ok(())
    }

    /// SASL/SCRAM-SHA-512 through `SaslHandshake` (v1) and
    /// `SaslAuthenticate`; the server's signature is checked.
    fn authenticate(&mut self, user: &str, password: &str) -> Result<(), KafkaError> {
        let address = self.address.clone();
        let failed = |message: String| KafkaError::Authentication {
            address: address.clone(),
            user: user.to_owned(),
            message,
        };
        // An IO error mid-exchange is the broker hanging up on us, which is
        // what it does after refusing credentials on old versions.
        let lost = |e: KafkaError| match e {
            KafkaError::Io { source, .. } => failed(format!(
                "authentication failed: the connection broke during the exchange: {source}"
            )),
            other => other,
        };

        // Version 0 carries the SASL tokens unframed; only 1 is spoken here.
        let version = self.version_for::<SaslHandshakeRequest>("SaslHandshake")?;
        if version < 1 {
            return Err(KafkaError::Unsupported {
                api: "SaslHandshake",
                address: self.address.clone(),
                offered: "0 only".to_owned(),
            });
        }
        let handshake = self
            .exchange(
                "SaslHandshake",
                1,
                &SaslHandshakeRequest::default()
                    .with_mechanism(StrBytes::from_static_str(scram::MECHANISM)),
            )
            .map_err(lost)?;
        if handshake.error_code != 0 {
            let offered: Vec<&str> = handshake.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(failed(format!(
                "the listener does not offer {} (it offers {})",
                scram::MECHANISM,
                offered.join(", ")
            )));
        }

        let client = ScramClient::new(user, password, scram::new_nonce());
        let server_first = self.sasl_round(client.client_first()).map_err(lost)?;
        let server_first = match server_first {
            Ok(bytes) => bytes,
            Err(message) => return Err(failed(format!("authentication failed: {message}"))),
        };
        let server_first = String::from_utf8(server_first)
            .map_err(|_| failed("the server's first message is not UTF-8".to_owned()))?;
        let (client_final, expected) = client
            .client_final(&server_first)
            .map_err(|e| failed(format!("authentication failed: {e}")))?;
        let server_final = match self.sasl_round(client_final).map_err(lost)? {
            Ok(bytes) => bytes,
            Err(message) => return Err(failed(format!("authentication failed: {message}"))),
        };
        let server_final = String::from_utf8(server_final)
            .map_err(|_| failed("the server's final message is not UTF-8".to_owned()))?;
        expected
            .verify(&server_final)
            .map_err(|e| failed(format!("authentication failed: {e}")))
    }

    /// One `SaslAuthenticate`: the server's bytes, or Kafka's refusal.
    fn sasl_round(&mut self, message: String) -> Result<Result<Vec<u8>, String>, KafkaError> {
        let response = self.call("SaslAuthenticate", |_| {
            SaslAuthenticateRequest::default().with_auth_bytes(bytes::Bytes::from(message))
        })?;
        if response.error_code != 0 {
            return Ok(Err(format!(
                "{}{}",
                super::client::error_name(response.error_code),
                response
                    .error_message
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            )));
        }
        Ok(Ok(response.auth_bytes.to_vec()))
    }

    /// Writes one framed request and reads its response.
    fn exchange<R: Request>(
        &mut self,
        api: &'static str,
        version: i16,
        request: &R,
    ) -> Result<R::Response, KafkaError> {
        let address = self.address.clone();
        let protocol = |message: String| KafkaError::Protocol {
            api,
            address: address.clone(),
            message,
        };
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let mut frame = vec![0u8; 4];
        header
            .encode(&mut frame, R::header_version(version))
            .map_err(|e| protocol(format!("request header: {e}")))?;
        request
            .encode(&mut frame, version)
            .map_err(|e| protocol(format!("version {version}: {e}")))?;
        let length = u32::try_from(frame.len() - 4)
            .map_err(|_| protocol("the request is larger than 4 GiB".to_owned()))?;
        frame[..4].copy_from_slice(&length.to_be_bytes());
        self.write_and_read(api, &frame).and_then(|body| {
            let mut buf: &[u8] = &body;
            let header = ResponseHeader::decode(
                &mut buf,
                <R::Response as HeaderVersion>::header_version(version),
            )
            .map_err(|e| protocol(format!("response header: {e}")))?;
            if header.correlation_id != correlation_id {
                return Err(protocol(format!(
                    "the response is for request {}, not {correlation_id}",
                    header.correlation_id
                )));
            }
            <R::Response>::decode(&mut buf, version)
                .map_err(|e| protocol(format!("response version {version}: {e}")))
        })
    }

    fn write_and_read(&mut self, api: &'static str, frame: &[u8]) -> Result<Vec<u8>, KafkaError> {
        let address = &self.address;
        let io_error = |source: io::Error| {
            if is_tls_error(&source) {
                KafkaError::Tls {
                    address: address.clone(),
                    source,
                }
            } else {
                KafkaError::Io {
                    api,
                    address: address.clone(),
                    source,
                }
            }
        };
        self.stream.write_all(frame).map_err(io_error)?;
        self.stream.flush().map_err(io_error)?;
        let mut length = [0u8; 4];
        self.stream.read_exact(&mut length).map_err(io_error)?;
        let length = usize::try_from(u32::from_be_bytes(length)).unwrap_or(usize::MAX);
        if length > MAX_RESPONSE_BYTES {
            return Err(KafkaError::Protocol {
                api,
                address: address.clone(),
                message: format!("a response of {length} bytes: not Kafka's protocol"),
            });
        }
        let mut body = vec![0u8; length];
        self.stream.read_exact(&mut body).map_err(io_error)?;
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_into_host_and_port() {
        assert_eq!(split_address("kafka-1:9093"), Some(("kafka-1", 9093)));
        assert_eq!(split_address("[::1]:9093"), Some(("::1", 9093)));
        assert_eq!(split_address("kafka-1"), None);
        assert_eq!(split_address(":9093"), None);
        assert_eq!(split_address("kafka-1:port"), None);
    }
}
