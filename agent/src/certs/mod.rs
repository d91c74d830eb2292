//! Node TLS certificates: the key a node makes for itself, its CSR, the PEM
//! keystore Kafka reads, when to renew ([`node`]), and the cluster CA that
//! the coordinator signs CSRs with ([`ca`]).
//!
//! Everything here is a pure function of its inputs: time comes in as Unix
//! seconds, nothing reads the clock or touches the filesystem. The only
//! randomness is key generation and certificate serial numbers.
//!
//! **Invariant:** a private key (node or CA) never appears in a `Debug` or
//! `Display` output, nor in an error message.
//!
//! **Invariant:** a signed certificate names exactly the node the caller
//! authenticated (CN = node name, SANs = its DNS names and IPs from the
//! desired state), whatever the CSR asked for; a CSR asking for anything
//! else is refused rather than trimmed.

pub mod ca;
pub mod node;

pub use ca::{Ca, NodeIdentity, SignedCertificate};
pub use node::{
    CertInfo, NodeKey, csr_for_names, csr_pem, inspect, issued_by, keystore_pem, leaf_der,
    needs_renewal, read_keystore, renewal_due_at,
};

use x509_parser::pem::Pem;

/// Why a key, CSR or certificate could not be made, read or signed. The
/// messages are safe to show to the node that sent a CSR: they name what
/// was refused, never key material.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("generating a key pair")]
    GenerateKey {
        #[source]
        source: rcgen::Error,
    },
    #[error("the {what} is not a usable unencrypted PKCS#8 private key")]
    ParseKey {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("the {what} has no {label} PEM block")]
    MissingPemBlock {
        what: &'static str,
        label: &'static str,
    },
    #[error("the {what} is not valid PEM: {reason}")]
    Pem { what: &'static str, reason: String },
    #[error("the {what} is not a valid X.509 certificate: {reason}")]
    ParseCertificate { what: &'static str, reason: String },
    #[error("certificate request {name}: {field} {value:?} cannot go into a certificate")]
    RequestValue {
        name: String,
        field: &'static str,
        value: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("building the CSR for {name}")]
    BuildCsr {
        name: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("the CSR cannot be parsed or its signature does not verify")]
    ParseCsr {
        #[source]
        source: rcgen::Error,
    },
    #[error(
        "the CSR carries an extension other than subject alternative names, key usage, extended key usage and basic constraints"
    )]
    CsrUnsupportedExtension,
    #[error("the CSR for {node} has no common name")]
    CsrWithoutCommonName { node: String },
    #[error("the CSR for {node} asks for {name:?}, which is not one of {node}'s names")]
    NameNotAllowed { node: String, name: String },
    #[error("the CSR for {node} asks for IP address {ip}, which is not {node}'s")]
    IpNotAllowed { node: String, ip: std::net::IpAddr },
    #[error("the CSR for {node} asks for the wildcard name {name:?}; wildcards are never signed")]
    Wildcard { node: String, name: String },
    #[error(
        "the CSR for {node} asks for a {kind} subject alternative name; only DNS names and IP addresses are signed"
    )]
    UnsupportedSan { node: String, kind: &'static str },
    #[error("the CSR for {node} asks for a CA certificate; node certificates are never CAs")]
    CaRequested { node: String },
    #[error(
        "the CSR for {node} uses a {algorithm} key; only ECDSA P-256 and P-384 keys are signed"
    )]
    KeyAlgorithm { node: String, algorithm: String },
    #[error("the CA certificate is not a CA (no basic constraints with CA:TRUE)")]
    NotACa,
    #[error("the CA key does not belong to the CA certificate")]
    CaKeyMismatch,
    #[error("the keystore's private key does not belong to its certificate")]
    KeystoreKeyMismatch,
    #[error("the CA certificate expired at {not_after} (now {now}, Unix seconds)")]
    CaExpired { not_after: u64, now: u64 },
    #[error("{what} {seconds} (Unix seconds) is outside what a certificate can hold")]
    TimeOutOfRange { what: &'static str, seconds: u64 },
    #[error("a certificate cannot be valid for 0 seconds")]
    ZeroValidity,
    #[error("the node identity {node:?} has an unusable {field} {value:?}")]
    Identity {
        node: String,
        field: &'static str,
        value: String,
    },
    #[error("signing the certificate for {subject}")]
    Sign {
        subject: String,
        #[source]
        source: rcgen::Error,
    },
}

/// The DER of every PEM block labelled `label`, in order.
fn pem_blocks(text: &str, label: &str, what: &'static str) -> Result<Vec<Vec<u8>>, CertError> {
    let mut out = Vec::new();
    for block in Pem::iter_from_buffer(text.as_bytes()) {
        match block {
            Ok(pem) if pem.label == label => out.push(pem.contents),
            Ok(_) => {}
            Err(e) => {
                return Err(CertError::Pem {
                    what,
                    reason: e.to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// Unix seconds as a signed timestamp the `time` crate accepts, via
/// x509-parser's `ASN1Time` (rcgen takes `time::OffsetDateTime`, which this
/// crate does not name: no direct dependency on `time`).
fn asn1_time(what: &'static str, seconds: u64) -> Result<x509_parser::time::ASN1Time, CertError> {
    i64::try_from(seconds)
        .ok()
        .and_then(|s| x509_parser::time::ASN1Time::from_timestamp(s).ok())
        .filter(|t| t.to_datetime().year() <= 9999)
        .ok_or(CertError::TimeOutOfRange { what, seconds })
}

/// Sets `params`' validity, `not_before..=not_after` in Unix seconds.
fn set_validity(
    params: &mut rcgen::CertificateParams,
    not_before: u64,
    not_after: u64,
) -> Result<(), CertError> {
    params.not_before = asn1_time("not_before", not_before)?.to_datetime();
    params.not_after = asn1_time("not_after", not_after)?.to_datetime();
    Ok(())
}

/// A random positive serial number of 16 bytes (RFC 5280 allows up to 20).
fn random_serial() -> rcgen::SerialNumber {
    use rand::RngCore as _;
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    // Positive and never zero, whatever the encoder does with the sign bit.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    rcgen::SerialNumber::from_slice(&bytes)
}

/// How long before `now` a new certificate's validity starts at most, so
/// that a node whose clock is a little behind the coordinator's accepts it
/// (node certificates: at most a tenth of their lifetime, see
/// [`ca::backdate_seconds`]; the CA's own certificate: all of it).
pub const CLOCK_SKEW_ALLOWANCE_SECONDS: u64 = 300;

/// `der` as a PEM block with 64-character lines.
fn encode_pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    let mut rest = b64.as_str();
    while !rest.is_empty() {
        // Base64 is ASCII, so any byte index is a character boundary.
        let (line, tail) = rest.split_at(rest.len().min(64));
        out.push_str(line);
        out.push('\n');
        rest = tail;
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Now, in Unix seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
