//! The node's side of its certificate: the key it makes and keeps, the CSR
//! it sends the coordinator, the PEM keystore Kafka reads, and when to renew.
//!
//! **Key per certificate.** A renewal makes a new key ([`NodeKey::generate`])
//! rather than reusing the one in the keystore: it is no more work (the CSR
//! has to be signed anyway), a key never outlives the certificate it was
//! made for, and Kafka's reload checks (KIP-978) compare the DN and SANs,
//! not the key. [`read_keystore`] exists to inspect what is on disk and to
//! check that its key and certificate belong together, not to carry a key
//! over.
//!
//! **Renewal** is due at two thirds of the lifetime (`not_before` to
//! `not_after`), or earlier when less than `renew_before_seconds` remain,
//! or at once when the certificate's names no longer match the request.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use roles::CertificateRequest;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer as _;

use super::{CertError, pem_blocks};

/// The node's private key (ECDSA P-256). It is made on the node and never
/// leaves it except into the keystore file.
pub struct NodeKey {
    key: KeyPair,
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeKey({:?}, <redacted>)", self.key.algorithm())
    }
}

impl NodeKey {
    /// A new random ECDSA P-256 key.
    pub fn generate() -> Result<NodeKey, CertError> {
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map(|key| NodeKey { key })
            .map_err(|source| CertError::GenerateKey { source })
    }

    /// Reads the first `PRIVATE KEY` (unencrypted PKCS#8) block of `pem`;
    /// other blocks (certificates) are skipped, so a keystore works too.
    pub fn from_pem(pem: &str) -> Result<NodeKey, CertError> {
        let what = "node key";
        let der = pem_blocks(pem, "PRIVATE KEY", what)?
            .into_iter()
            .next()
            .ok_or(CertError::MissingPemBlock {
                what,
                label: "PRIVATE KEY",
            })?;
        KeyPair::try_from(der.as_slice())
            .map(|key| NodeKey { key })
            .map_err(|source| CertError::ParseKey { what, source })
    }

    /// The key as unencrypted PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`),
    /// what Kafka's PEM keystore reads without `ssl.key.password`.
    pub fn to_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The raw public key, to compare with a certificate's.
    fn public_key_raw(&self) -> &[u8] {
        self.key.public_key_raw()
    }
}

/// A CSR for `req`, signed with `key`: CN = `common_name`, SANs =
/// `dns_names` then `ip_addresses`. No other extension is requested; the CA
/// decides usages and validity.
pub fn csr_pem(req: &CertificateRequest, key: &NodeKey) -> Result<String, CertError> {
    csr_for_names(
        &req.name,
        &req.common_name,
        &req.dns_names,
        &req.ip_addresses,
        key,
    )
}

/// A CSR with these names, signed with `key` (see [`csr_pem`]); `what`
/// names it in errors.
pub fn csr_for_names(
    what: &str,
    common_name: &str,
    dns_names: &[String],
    ip_addresses: &[Ipv4Addr],
    key: &NodeKey,
) -> Result<String, CertError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    for name in dns_names {
        let ia5 = rcgen::string::Ia5String::try_from(name.as_str()).map_err(|source| {
            CertError::RequestValue {
                name: what.to_owned(),
                field: "DNS name",
                value: name.clone(),
                source,
            }
        })?;
        params.subject_alt_names.push(SanType::DnsName(ia5));
    }
    params.subject_alt_names.extend(
        ip_addresses
            .iter()
            .map(|ip| SanType::IpAddress(IpAddr::V4(*ip))),
    );
    let build = |source| CertError::BuildCsr {
        name: what.to_owned(),
        source,
    };
    params
        .serialize_request(&key.key)
        .map_err(build)?
        .pem()
        .map_err(build)
}

/// What the agent needs to know about a certificate it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// Unix seconds.
    pub not_before: u64,
    /// Unix seconds.
    pub not_after: u64,
    /// Empty when the certificate has no common name.
    pub common_name: String,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
}

/// Reads the first certificate of a PEM bundle (a keystore's key block and
/// any CA certificates after the leaf are skipped).
pub fn inspect(cert_pem: &str) -> Result<CertInfo, CertError> {
    let what = "certificate";
    let der = first_certificate(cert_pem, what)?;
    let cert = parse_certificate(&der, what)?;
    Ok(info_of(&cert))
}

/// The Unix time from which `info`'s certificate should be renewed: two
/// thirds into its lifetime, or `renew_before_seconds` before it ends,
/// whichever comes first.
pub fn renewal_due_at(info: &CertInfo, renew_before_seconds: u64) -> u64 {
    let lifetime = u128::from(info.not_after.saturating_sub(info.not_before));
    // Two thirds of a u64 fits in a u64.
    let two_thirds = u64::try_from(lifetime * 2 / 3).unwrap_or(u64::MAX);
    let at_two_thirds = info.not_before.saturating_add(two_thirds);
    let before_end = info.not_after.saturating_sub(renew_before_seconds);
    at_two_thirds.min(before_end)
}

/// Whether the certificate described by `info` should be replaced at
/// `now` (Unix seconds): renewal is due (see [`renewal_due_at`]), or its CN
/// or SANs are no longer what `req` asks for (a node renamed, an address
/// changed). Order and letter case of DNS names do not matter.
pub fn needs_renewal(info: &CertInfo, req: &CertificateRequest, now: u64) -> bool {
    now >= renewal_due_at(info, req.renew_before_seconds) || !names_match(info, req)
}

fn names_match(info: &CertInfo, req: &CertificateRequest) -> bool {
    fn dns_set<'a>(names: impl Iterator<Item = &'a String>) -> Vec<String> {
        let mut v: Vec<String> = names.map(|n| n.to_ascii_lowercase()).collect();
        v.sort();
        v.dedup();
        v
    }
    let mut want_ips: Vec<IpAddr> = req.ip_addresses.iter().map(|ip| IpAddr::V4(*ip)).collect();
    want_ips.sort();
    want_ips.dedup();
    let mut have_ips = info.ips.clone();
    have_ips.sort();
    have_ips.dedup();
    info.common_name == req.common_name
        && dns_set(info.dns_names.iter()) == dns_set(req.dns_names.iter())
        && have_ips == want_ips
}

/// The PEM keystore Kafka reads with `ssl.keystore.type=PEM` and no
/// passwords: the unencrypted PKCS#8 key, then the leaf certificate
/// (`cert_pem`, as [`super::SignedCertificate::pem`] returns it), then the
/// CA chain (`ca_pem`). Write it with mode 0600, owned by the Kafka user.
pub fn keystore_pem(key: &NodeKey, cert_pem: &str, ca_pem: &str) -> String {
    let mut out = key.to_pem();
    for part in [cert_pem, ca_pem] {
        let part = part.trim();
        if !part.is_empty() {
            if !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(part);
            out.push('\n');
        }
    }
    out
}

/// Splits a keystore written by [`keystore_pem`] into its key and its
/// certificate chain (every `CERTIFICATE` block, leaf first, as PEM). The
/// key must belong to the leaf certificate.
pub fn read_keystore(pem: &str) -> Result<(NodeKey, String), CertError> {
    let what = "keystore";
    let key = NodeKey::from_pem(pem).map_err(|e| match e {
        CertError::ParseKey { source, .. } => CertError::ParseKey { what, source },
        CertError::MissingPemBlock { label, .. } => CertError::MissingPemBlock { what, label },
        other => other,
    })?;
    let certs = pem_blocks(pem, "CERTIFICATE", what)?;
    let leaf = certs.first().ok_or(CertError::MissingPemBlock {
        what,
        label: "CERTIFICATE",
    })?;
    let cert = parse_certificate(leaf, what)?;
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(CertError::KeystoreKeyMismatch);
    }
    let chain = certs
        .iter()
        .map(|der| super::encode_pem("CERTIFICATE", der))
        .collect();
    Ok((key, chain))
}

/// Whether the first certificate of `cert_pem` was signed by the first
/// certificate of `ca_pem` (its issuer is the CA's subject and the
/// signature verifies with the CA's key). A node checks this to notice a
/// new cluster CA, after which its certificate must be re-issued.
pub fn issued_by(cert_pem: &str, ca_pem: &str) -> Result<bool, CertError> {
    let cert_der = first_certificate(cert_pem, "certificate")?;
    let ca_der = first_certificate(ca_pem, "CA certificate")?;
    let cert = parse_certificate(&cert_der, "certificate")?;
    let ca = parse_certificate(&ca_der, "CA certificate")?;
    Ok(cert.issuer().as_raw() == ca.subject().as_raw()
        && cert.verify_signature(Some(ca.public_key())).is_ok())
}

/// The first certificate of a PEM chain (the leaf), as DER.
pub fn leaf_der(chain_pem: &str) -> Result<Vec<u8>, CertError> {
    first_certificate(chain_pem, "certificate")
}

pub(super) fn first_certificate(pem: &str, what: &'static str) -> Result<Vec<u8>, CertError> {
    pem_blocks(pem, "CERTIFICATE", what)?
        .into_iter()
        .next()
        .ok_or(CertError::MissingPemBlock {
            what,
            label: "CERTIFICATE",
        })
}

pub(super) fn parse_certificate<'a>(
    der: &'a [u8],
    what: &'static str,
) -> Result<X509Certificate<'a>, CertError> {
    X509Certificate::from_der(der)
        .map(|(_, cert)| cert)
        .map_err(|e| CertError::ParseCertificate {
            what,
            reason: e.to_string(),
        })
}

pub(super) fn info_of(cert: &X509Certificate<'_>) -> CertInfo {
    let validity = cert.validity();
    // A time before 1970 is "long ago": 0 serves every comparison here.
    let seconds = |t: &x509_parser::time::ASN1Time| u64::try_from(t.timestamp()).unwrap_or(0);
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut dns_names = Vec::new();
    let mut ips = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns_names.push((*d).to_owned()),
                GeneralName::IPAddress(bytes) => {
                    if let Some(ip) = ip_from_bytes(bytes) {
                        ips.push(ip);
                    }
                }
                _ => {}
            }
        }
    }
    CertInfo {
        not_before: seconds(&validity.not_before),
        not_after: seconds(&validity.not_after),
        common_name,
        dns_names,
        ips,
    }
}

pub(super) fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}
