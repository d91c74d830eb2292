//! The cluster CA as the coordinator uses it: load it from the repository
//! (certificate in `pki/`, key decrypted from `secrets/`), sign node CSRs,
//! and make a new one for `kraftops-agent init`.
//!
//! **What a CSR may ask for.** The certificate carries exactly the node's
//! identity from the desired state — CN = node name, SANs = its DNS names
//! and IP addresses — whatever the CSR says. The CSR is still checked, so a
//! mistake or an attack is refused loudly rather than quietly trimmed:
//!
//! - every CN must be the node's name or one of its DNS names;
//! - every DNS SAN must be one of its DNS names, every IP SAN one of its
//!   addresses (DNS names compare without regard to ASCII case);
//! - no name may contain `*`; no other kind of SAN (e-mail, URI, …);
//! - it must not ask to be a CA, and its key must be ECDSA P-256 or P-384;
//! - its signature must verify, and it may carry no extension but SANs,
//!   key usage, extended key usage and basic constraints (rcgen's rule).
//!
//! Asking for fewer names than the node has is fine; the certificate gets
//! all of them. Subject attributes other than CN are ignored (they never
//! reach the certificate). So a join token for `broker-1` can only ever
//! produce a certificate for `broker-1`.

use std::fmt;
use std::net::IpAddr;

use desired_state::Model;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer as _;

use super::node::{first_certificate, info_of, ip_from_bytes, parse_certificate};
use super::{CLOCK_SKEW_ALLOWANCE_SECONDS, CertError, random_serial, set_validity};

/// Seconds in a day, for CA validity given in days.
const DAY: u64 = 86_400;

/// The cluster CA: its certificate and signing key.
pub struct Ca {
    cert_pem: String,
    subject: String,
    not_after: u64,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("subject", &self.subject)
            .field("not_after", &self.not_after)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Who a certificate is for, as the desired state says (never as the CSR
/// says).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeIdentity {
    /// The node's name; the certificate's CN.
    pub name: String,
    /// DNS subject alternative names, e.g. `broker-1.kafka.internal`.
    pub dns_names: Vec<String>,
    /// IP subject alternative names.
    pub ips: Vec<IpAddr>,
}

impl NodeIdentity {
    /// The identity of `node` in `model`, the same names the node's
    /// `roles::CertificateRequest` asks for: CN = name, DNS = `<name>.<domain>`,
    /// IP = its address. `None` for a node not in `nodes.yaml`.
    pub fn from_model(model: &Model, node: &str) -> Option<NodeIdentity> {
        let n = model.node(node)?;
        Some(NodeIdentity {
            name: n.name.to_string(),
            dns_names: vec![model.fqdn(n)],
            ips: vec![IpAddr::V4(n.address.value)],
        })
    }

    /// The identity a rendered certificate request names.
    pub fn from_request(req: &roles::CertificateRequest) -> NodeIdentity {
        NodeIdentity {
            name: req.common_name.clone(),
            dns_names: req.dns_names.clone(),
            ips: req.ip_addresses.iter().map(|ip| IpAddr::V4(*ip)).collect(),
        }
    }
}

/// A node certificate the CA issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCertificate {
    /// The leaf certificate alone, PEM.
    pub pem: String,
    /// Unix seconds.
    pub not_after: u64,
}

impl Ca {
    /// Loads the CA from its certificate (the first `CERTIFICATE` block of
    /// `cert_pem`) and its private key (PKCS#8, SEC1 or PKCS#1 PEM). The
    /// certificate must be a CA and the key must be its key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, CertError> {
        let what = "CA certificate";
        let der = first_certificate(cert_pem, what)?;
        let cert = parse_certificate(&der, what)?;
        if !cert.is_ca() {
            return Err(CertError::NotACa);
        }
        let key = KeyPair::from_pem(key_pem).map_err(|source| CertError::ParseKey {
            what: "CA key",
            source,
        })?;
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(CertError::CaKeyMismatch);
        }
        let subject = cert.subject().to_string();
        let not_after = info_of(&cert).not_after;
        let issuer = Issuer::from_ca_cert_der(&der.as_slice().into(), key).map_err(|e| {
            CertError::ParseCertificate {
                what,
                reason: e.to_string(),
            }
        })?;
        Ok(Ca {
            cert_pem: cert_pem.to_owned(),
            subject,
            not_after,
            issuer,
        })
    }

    /// A new self-signed CA for `cluster` (CN = `<cluster> CA`, O =
    /// kraftops), ECDSA P-256, valid `validity_days` from `now` and able to
    /// sign node certificates only (path length 0). Returns the certificate
    /// and the unencrypted PKCS#8 key, both PEM; encrypt the key before it
    /// goes anywhere.
    pub fn generate(
        cluster: &str,
        validity_days: u32,
        now: u64,
    ) -> Result<(String, String), CertError> {
        if validity_days == 0 {
            return Err(CertError::ZeroValidity);
        }
        if cluster.is_empty() || cluster.chars().any(char::is_control) {
            return Err(CertError::Identity {
                node: cluster.to_owned(),
                field: "cluster name",
                value: cluster.to_owned(),
            });
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|source| CertError::GenerateKey { source })?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{cluster} CA"));
        dn.push(DnType::OrganizationName, "kraftops");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial());
        let not_after =
            now.checked_add(u64::from(validity_days) * DAY)
                .ok_or(CertError::TimeOutOfRange {
                    what: "CA not_after",
                    seconds: u64::MAX,
                })?;
        set_validity(
            &mut params,
            now.saturating_sub(CLOCK_SKEW_ALLOWANCE_SECONDS),
            not_after,
        )?;
        let cert = params.self_signed(&key).map_err(|source| CertError::Sign {
            subject: format!("{cluster} CA"),
            source,
        })?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// The CA certificate as it was loaded, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's subject, e.g. `CN=kafka-prod CA, O=kraftops`.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// When the CA certificate expires, Unix seconds.
    pub fn not_after(&self) -> u64 {
        self.not_after
    }

    /// Signs `csr_pem` for `node` after checking it asks for nothing but
    /// `node`'s names (see the module docs). The certificate has CN = node
    /// name, SANs = the node's DNS names and IPs, server and client auth,
    /// `CA:FALSE`, and is valid from a little before `now` (see
    /// [`backdate_seconds`]) to `now + validity_seconds`, but never past the
    /// CA's own expiry.
    pub fn sign(
        &self,
        csr_pem: &str,
        node: &NodeIdentity,
        validity_seconds: u64,
        now: u64,
    ) -> Result<SignedCertificate, CertError> {
        if validity_seconds == 0 {
            return Err(CertError::ZeroValidity);
        }
        if now >= self.not_after {
            return Err(CertError::CaExpired {
                not_after: self.not_after,
                now,
            });
        }
        // Exactly one CSR: the one whose names are checked is the one signed.
        let mut blocks = super::pem_blocks(csr_pem, "CERTIFICATE REQUEST", "CSR")?;
        if blocks.len() > 1 {
            return Err(CertError::Pem {
                what: "CSR",
                reason: format!("{} CERTIFICATE REQUEST blocks; expected one", blocks.len()),
            });
        }
        let der = blocks.pop().ok_or(CertError::MissingPemBlock {
            what: "CSR",
            label: "CERTIFICATE REQUEST",
        })?;
        let csr = CertificateSigningRequestParams::from_der(&der.as_slice().into()).map_err(
            |e| match e {
                rcgen::Error::UnsupportedExtension => CertError::CsrUnsupportedExtension,
                source => CertError::ParseCsr { source },
            },
        )?;
        let algorithm = csr.public_key.algorithm();
        if algorithm != &rcgen::PKCS_ECDSA_P256_SHA256
            && algorithm != &rcgen::PKCS_ECDSA_P384_SHA384
        {
            return Err(CertError::KeyAlgorithm {
                node: node.name.clone(),
                algorithm: format!("{algorithm:?}"),
            });
        }
        if matches!(csr.params.is_ca, IsCa::Ca(_)) {
            return Err(CertError::CaRequested {
                node: node.name.clone(),
            });
        }
        check_requested_names(&der, node)?;

        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node.name.as_str());
        params.distinguished_name = dn;
        params.subject_alt_names = identity_sans(node)?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        let not_after = now
            .checked_add(validity_seconds)
            .ok_or(CertError::TimeOutOfRange {
                what: "not_after",
                seconds: u64::MAX,
            })?
            .min(self.not_after);
        set_validity(
            &mut params,
            now.saturating_sub(backdate_seconds(validity_seconds)),
            not_after,
        )?;
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|source| CertError::Sign {
                subject: node.name.clone(),
                source,
            })?;
        Ok(SignedCertificate {
            pem: cert.pem(),
            not_after,
        })
    }
}

/// How long before the signing time a node certificate valid
/// `validity_seconds` starts: the clock-skew allowance
/// ([`CLOCK_SKEW_ALLOWANCE_SECONDS`]), but at most a tenth of the lifetime.
/// Renewal is due two thirds into `not_before..not_after`, so a fixed
/// 300 s backdate would make a certificate of a few minutes (as tests use)
/// due for renewal the moment it is issued; with at most a tenth, renewal
/// comes between 0.63 and two thirds of the requested lifetime after
/// signing, whatever its length.
pub fn backdate_seconds(validity_seconds: u64) -> u64 {
    CLOCK_SKEW_ALLOWANCE_SECONDS.min(validity_seconds / 10)
}

/// The node's SANs as rcgen wants them; refuses an identity that could not
/// be a certificate's (empty, wildcard, non-ASCII names).
fn identity_sans(node: &NodeIdentity) -> Result<Vec<SanType>, CertError> {
    let bad = |field: &'static str, value: &str| CertError::Identity {
        node: node.name.clone(),
        field,
        value: value.to_owned(),
    };
    if node.name.is_empty() || node.name.contains('*') || node.name.chars().any(char::is_control) {
        return Err(bad("name", &node.name));
    }
    let mut sans = Vec::new();
    for name in &node.dns_names {
        if name.is_empty() || name.contains('*') {
            return Err(bad("DNS name", name));
        }
        let ia5 =
            rcgen::string::Ia5String::try_from(name.as_str()).map_err(|_| bad("DNS name", name))?;
        sans.push(SanType::DnsName(ia5));
    }
    sans.extend(node.ips.iter().map(|ip| SanType::IpAddress(*ip)));
    Ok(sans)
}

/// Refuses a CSR whose CN or SANs name anything that is not `node`'s.
fn check_requested_names(der: &[u8], node: &NodeIdentity) -> Result<(), CertError> {
    let (_, csr) = X509CertificationRequest::from_der(der).map_err(|_| CertError::ParseCsr {
        source: rcgen::Error::CouldNotParseCertificationRequest,
    })?;
    let is_dns_name = |name: &str| node.dns_names.iter().any(|d| d.eq_ignore_ascii_case(name));
    let refuse_name = |name: &str| {
        if name.contains('*') {
            CertError::Wildcard {
                node: node.name.clone(),
                name: name.to_owned(),
            }
        } else {
            CertError::NameNotAllowed {
                node: node.name.clone(),
                name: name.to_owned(),
            }
        }
    };

    let mut common_names = 0usize;
    for cn in csr.certification_request_info.subject.iter_common_name() {
        common_names += 1;
        let name = cn.as_str().map_err(|_| refuse_name("<not text>"))?;
        if name.contains('*') || !(name == node.name || is_dns_name(name)) {
            return Err(refuse_name(name));
        }
    }
    if common_names == 0 {
        return Err(CertError::CsrWithoutCommonName {
            node: node.name.clone(),
        });
    }

    let Some(extensions) = csr.requested_extensions() else {
        return Ok(());
    };
    for ext in extensions {
        let ParsedExtension::SubjectAlternativeName(san) = ext else {
            continue;
        };
        for general in &san.general_names {
            let kind = match general {
                GeneralName::DNSName(name) => {
                    if name.contains('*') || !is_dns_name(name) {
                        return Err(refuse_name(name));
                    }
                    continue;
                }
                GeneralName::IPAddress(bytes) => match ip_from_bytes(bytes) {
                    Some(ip) if node.ips.contains(&ip) => continue,
                    Some(ip) => {
                        return Err(CertError::IpNotAllowed {
                            node: node.name.clone(),
                            ip,
                        });
                    }
                    None => "malformed IP address",
                },
                GeneralName::RFC822Name(_) => "e-mail",
                GeneralName::URI(_) => "URI",
                GeneralName::OtherName(..) => "other-name",
                GeneralName::DirectoryName(_) => "directory-name",
                GeneralName::RegisteredID(_) => "registered-ID",
                GeneralName::X400Address(_) => "X.400 address",
                GeneralName::EDIPartyName(_) => "EDI party name",
                GeneralName::Invalid(..) => "invalid",
            };
            return Err(CertError::UnsupportedSan {
                node: node.name.clone(),
                kind,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{NodeKey, csr_pem, inspect, renewal_due_at};

    /// 2026-11-25T00:00:00Z.
    const NOW: u64 = 1_795_564_800;

    fn broker1() -> roles::CertificateRequest {
        roles::CertificateRequest {
            name: "kafka".to_owned(),
            common_name: "broker-1".to_owned(),
            dns_names: vec!["broker-1.kafka.internal".to_owned()],
            ip_addresses: vec![std::net::Ipv4Addr::new(10, 0, 1, 11)],
            keystore_path: "/etc/kafka/tls/keystore.pem".to_owned(),
            owner: "kafka".to_owned(),
            group: "kafka".to_owned(),
            validity_seconds: 30,
            renew_before_seconds: 5,
            on_change: Vec::new(),
        }
    }

    #[test]
    fn backdate_is_the_skew_allowance_but_at_most_a_tenth_of_the_lifetime() {
        assert_eq!(backdate_seconds(90 * DAY), CLOCK_SKEW_ALLOWANCE_SECONDS);
        assert_eq!(backdate_seconds(3000), 300);
        assert_eq!(backdate_seconds(2999), 299);
        assert_eq!(backdate_seconds(30), 3);
        assert_eq!(backdate_seconds(9), 0);
        assert_eq!(backdate_seconds(u64::MAX), CLOCK_SKEW_ALLOWANCE_SECONDS);
    }

    #[test]
    fn a_short_lived_certificate_is_backdated_a_tenth_and_renewed_near_two_thirds() {
        let (cert, key) = Ca::generate("test-cluster", 365, NOW).expect("CA");
        let ca = Ca::from_pem(&cert, &key).expect("CA loads");
        let req = broker1();
        let node_key = NodeKey::generate().expect("key");
        let csr = csr_pem(&req, &node_key).expect("CSR");
        let signed = ca
            .sign(&csr, &NodeIdentity::from_request(&req), 30, NOW)
            .expect("signs");
        let info = inspect(&signed.pem).expect("parses");
        assert_eq!((info.not_before, info.not_after), (NOW - 3, NOW + 30));
        // Two thirds of 33 s from NOW - 3: 19 s after signing, not at once.
        assert_eq!(renewal_due_at(&info, req.renew_before_seconds), NOW + 19);

        // A long-lived one keeps the full allowance.
        let signed = ca
            .sign(&csr, &NodeIdentity::from_request(&req), 90 * DAY, NOW)
            .expect("signs");
        let info = inspect(&signed.pem).expect("parses");
        assert_eq!(info.not_before, NOW - CLOCK_SKEW_ALLOWANCE_SECONDS);
    }
}
