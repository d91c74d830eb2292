//! Node certificates end to end: key → CSR → CA signature → keystore, checked
//! with openssl; what the CA refuses; when renewal is due.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;

use desired_state::{EncryptedSecret, Identity};
use kraftops_agent::certs::{
    CLOCK_SKEW_ALLOWANCE_SECONDS, Ca, CertError, CertInfo, NodeIdentity, NodeKey,
    SignedCertificate, csr_pem, inspect, issued_by, keystore_pem, needs_renewal, read_keystore,
    renewal_due_at,
};
use roles::{CertificateRequest, OnChange};
use x509_parser::prelude::{FromDer as _, X509Certificate};

/// 2026-11-25T00:00:00Z; any fixed instant works for the pure tests.
const NOW: u64 = 1_795_564_800;
const DAY: u64 = 86_400;
const VALIDITY: u64 = 90 * DAY;

fn seed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../desired-state/examples/seed")
}

fn request(name: &str, dns: &[&str], ips: &[[u8; 4]]) -> CertificateRequest {
    CertificateRequest {
        name: "kafka".to_owned(),
        common_name: name.to_owned(),
        dns_names: dns.iter().map(|d| (*d).to_owned()).collect(),
        ip_addresses: ips.iter().map(|ip| Ipv4Addr::from(*ip)).collect(),
        keystore_path: "/etc/kafka/tls/keystore.pem".to_owned(),
        owner: "kafka".to_owned(),
        group: "kafka".to_owned(),
        validity_seconds: VALIDITY,
        renew_before_seconds: 30 * DAY,
        on_change: vec![OnChange::KafkaDynamicReload("kafka.service".to_owned())],
    }
}

fn broker1() -> CertificateRequest {
    request("broker-1", &["broker-1.kafka.internal"], &[[10, 0, 1, 11]])
}

fn broker1_identity() -> NodeIdentity {
    NodeIdentity::from_request(&broker1())
}

fn test_ca(now: u64) -> Ca {
    let (cert, key) = Ca::generate("test-cluster", 365, now).expect("CA generates");
    Ca::from_pem(&cert, &key).expect("the generated CA loads")
}

fn sign(
    ca: &Ca,
    req: &CertificateRequest,
    node: &NodeIdentity,
    now: u64,
) -> (NodeKey, SignedCertificate) {
    let key = NodeKey::generate().expect("key generates");
    let csr = csr_pem(req, &key).expect("CSR builds");
    let signed = ca.sign(&csr, node, VALIDITY, now).expect("CA signs");
    (key, signed)
}

/// A CSR built directly with rcgen, for requests our own `csr_pem` would
/// never make.
fn raw_csr(
    cn: &str,
    sans: Vec<rcgen::SanType>,
    ca: bool,
    alg: &'static rcgen::SignatureAlgorithm,
) -> String {
    let key = rcgen::KeyPair::generate_for(alg).expect("key generates");
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    if ca {
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    }
    params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .expect("CSR serializes")
}

fn dns(name: &str) -> rcgen::SanType {
    rcgen::SanType::DnsName(name.try_into().expect("IA5 name"))
}

fn openssl(args: &[&str], dir: &Path) -> std::process::Output {
    match Command::new("openssl").args(args).current_dir(dir).output() {
        Ok(out) => out,
        Err(e) => {
            panic!("cannot run the openssl CLI ({e}); these tests need it: apt-get install openssl")
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

#[test]
fn key_csr_sign_inspect_round_trip() {
    let ca = test_ca(NOW);
    let req = broker1();
    let (_key, signed) = sign(&ca, &req, &broker1_identity(), NOW);

    let info = inspect(&signed.pem).expect("certificate parses");
    assert_eq!(
        info,
        CertInfo {
            not_before: NOW - CLOCK_SKEW_ALLOWANCE_SECONDS,
            not_after: NOW + VALIDITY,
            common_name: "broker-1".to_owned(),
            dns_names: vec!["broker-1.kafka.internal".to_owned()],
            ips: vec![IpAddr::from([10, 0, 1, 11])],
        }
    );
    assert_eq!(signed.not_after, NOW + VALIDITY);
    assert!(issued_by(&signed.pem, ca.cert_pem()).expect("parses"));
    assert!(!issued_by(&signed.pem, test_ca(NOW).cert_pem()).expect("parses"));

    // Usages: a TLS server and client leaf, never a CA.
    let der = x509_parser::pem::parse_x509_pem(signed.pem.as_bytes())
        .expect("PEM")
        .1
        .contents;
    let (_, cert) = X509Certificate::from_der(&der).expect("DER");
    assert!(!cert.is_ca());
    let eku = cert
        .extended_key_usage()
        .expect("EKU parses")
        .expect("EKU present")
        .value;
    assert!(eku.server_auth && eku.client_auth && !eku.any);
    let bc = cert
        .basic_constraints()
        .expect("parses")
        .expect("basic constraints present");
    assert!(!bc.value.ca);
    assert_eq!(cert.issuer().to_string(), "CN=test-cluster CA, O=kraftops");
}

#[test]
fn keystore_is_accepted_by_openssl() {
    let now = unix_now();
    let ca = test_ca(now);
    let (key, signed) = sign(&ca, &broker1(), &broker1_identity(), now);
    let keystore = keystore_pem(&key, &signed.pem, ca.cert_pem());

    // Key first, then the leaf, then the CA.
    let labels: Vec<&str> = keystore
        .lines()
        .filter_map(|l| l.strip_prefix("-----BEGIN "))
        .collect();
    assert_eq!(
        labels,
        ["PRIVATE KEY-----", "CERTIFICATE-----", "CERTIFICATE-----"]
    );
    assert!(keystore.starts_with("-----BEGIN PRIVATE KEY-----\n"));

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).expect("write");
    std::fs::write(dir.path().join("leaf.pem"), &signed.pem).expect("write");
    std::fs::write(dir.path().join("keystore.pem"), &keystore).expect("write");

    for purpose in ["sslserver", "sslclient"] {
        let out = openssl(
            &[
                "verify", "-purpose", purpose, "-CAfile", "ca.pem", "leaf.pem",
            ],
            dir.path(),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.trim() == "leaf.pem: OK",
            "openssl verify ({purpose}): {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = openssl(&["pkey", "-in", "keystore.pem", "-noout"], dir.path());
    assert!(
        out.status.success(),
        "openssl pkey: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The key in the keystore is the leaf's key.
    let pubkey = |args: &[&str]| {
        let out = openssl(args, dir.path());
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    assert_eq!(
        pubkey(&["pkey", "-in", "keystore.pem", "-pubout"]),
        pubkey(&["x509", "-in", "leaf.pem", "-noout", "-pubkey"])
    );
    // The key is unencrypted PKCS#8, which Kafka reads without a password.
    let out = openssl(
        &[
            "pkey",
            "-in",
            "keystore.pem",
            "-passin",
            "pass:",
            "-noout",
            "-text",
        ],
        dir.path(),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ASN1 OID: prime256v1"));

    // Reading it back gives the same key and the chain, leaf first.
    let (read_key, chain) = read_keystore(&keystore).expect("keystore reads");
    assert_eq!(read_key.to_pem(), key.to_pem());
    assert_eq!(chain.matches("-----BEGIN CERTIFICATE-----").count(), 2);
    assert_eq!(
        inspect(&chain).expect("chain parses").common_name,
        "broker-1"
    );
    assert_eq!(
        inspect(&keystore).expect("keystore parses").common_name,
        "broker-1"
    );

    // A keystore whose key is not the certificate's is refused.
    let other = NodeKey::generate().expect("key");
    let mixed = keystore_pem(&other, &signed.pem, ca.cert_pem());
    assert!(matches!(
        read_keystore(&mixed),
        Err(CertError::KeystoreKeyMismatch)
    ));
    assert!(matches!(
        read_keystore(ca.cert_pem()),
        Err(CertError::MissingPemBlock {
            label: "PRIVATE KEY",
            ..
        })
    ));
}

#[test]
fn node_key_pem_round_trip_and_redaction() {
    let key = NodeKey::generate().expect("key");
    let pem = key.to_pem();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let again = NodeKey::from_pem(&pem).expect("reads back");
    assert_eq!(again.to_pem(), pem);

    let debug = format!("{key:?}");
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(debug.contains("redacted"), "{debug}");
    assert!(
        !debug.contains(&body[..20]) && !debug.contains("PRIVATE"),
        "{debug}"
    );

    let (cert, ca_key) = Ca::generate("c", 1, NOW).expect("CA");
    let ca = Ca::from_pem(&cert, &ca_key).expect("CA loads");
    let debug = format!("{ca:?}");
    let ca_body: String = ca_key.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(
        !debug.contains(&ca_body[..20]) && debug.contains("redacted"),
        "{debug}"
    );

    assert!(matches!(
        NodeKey::from_pem("nothing here"),
        Err(CertError::MissingPemBlock { .. })
    ));
}

#[test]
fn csr_for_another_node_is_refused() {
    let ca = test_ca(NOW);
    let key = NodeKey::generate().expect("key");
    let broker2 = request("broker-2", &["broker-2.kafka.internal"], &[[10, 0, 2, 11]]);
    let csr = csr_pem(&broker2, &key).expect("CSR");
    let err = ca
        .sign(&csr, &broker1_identity(), VALIDITY, NOW)
        .expect_err("refused");
    assert!(
        matches!(&err, CertError::NameNotAllowed { node, name } if node == "broker-1" && name == "broker-2"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "the CSR for broker-1 asks for \"broker-2\", which is not one of broker-1's names"
    );

    // Right CN, but another node's DNS name or address.
    let sneaky = request(
        "broker-1",
        &["broker-1.kafka.internal", "broker-2.kafka.internal"],
        &[[10, 0, 1, 11]],
    );
    let err = ca
        .sign(
            &csr_pem(&sneaky, &key).expect("CSR"),
            &broker1_identity(),
            VALIDITY,
            NOW,
        )
        .expect_err("refused");
    assert!(
        matches!(&err, CertError::NameNotAllowed { name, .. } if name == "broker-2.kafka.internal"),
        "{err:?}"
    );

    let extra_ip = request(
        "broker-1",
        &["broker-1.kafka.internal"],
        &[[10, 0, 1, 11], [10, 0, 2, 11]],
    );
    let err = ca
        .sign(
            &csr_pem(&extra_ip, &key).expect("CSR"),
            &broker1_identity(),
            VALIDITY,
            NOW,
        )
        .expect_err("refused");
    assert!(
        matches!(&err, CertError::IpNotAllowed { ip, .. } if *ip == IpAddr::from([10, 0, 2, 11])),
        "{err:?}"
    );
}

#[test]
fn wildcards_and_extra_names_are_refused() {
    let ca = test_ca(NOW);
    let node = broker1_identity();
    let p256 = &rcgen::PKCS_ECDSA_P256_SHA256;

    let csr = raw_csr(
        "broker-1",
        vec![dns("broker-1.kafka.internal"), dns("*.kafka.internal")],
        false,
        p256,
    );
    let err = ca
        .sign(&csr, &node, VALIDITY, NOW)
        .expect_err("wildcard SAN");
    assert!(
        matches!(&err, CertError::Wildcard { name, .. } if name == "*.kafka.internal"),
        "{err:?}"
    );

    let csr = raw_csr("*", vec![], false, p256);
    let err = ca
        .sign(&csr, &node, VALIDITY, NOW)
        .expect_err("wildcard CN");
    assert!(
        matches!(&err, CertError::Wildcard { name, .. } if name == "*"),
        "{err:?}"
    );

    let csr = raw_csr(
        "broker-1",
        vec![dns("broker-1.kafka.internal"), dns("evil.example.com")],
        false,
        p256,
    );
    let err = ca.sign(&csr, &node, VALIDITY, NOW).expect_err("extra SAN");
    assert!(
        matches!(&err, CertError::NameNotAllowed { name, .. } if name == "evil.example.com"),
        "{err:?}"
    );

    let csr = raw_csr(
        "broker-1",
        vec![rcgen::SanType::Rfc822Name(
            "ops@example.com".try_into().expect("IA5"),
        )],
        false,
        p256,
    );
    let err = ca.sign(&csr, &node, VALIDITY, NOW).expect_err("e-mail SAN");
    assert!(
        matches!(err, CertError::UnsupportedSan { kind: "e-mail", .. }),
        "{err:?}"
    );

    let csr = raw_csr("broker-1", vec![], true, p256);
    let err = ca
        .sign(&csr, &node, VALIDITY, NOW)
        .expect_err("CA requested");
    assert!(matches!(err, CertError::CaRequested { .. }), "{err:?}");

    let csr = raw_csr("broker-1", vec![], false, &rcgen::PKCS_ED25519);
    let err = ca.sign(&csr, &node, VALIDITY, NOW).expect_err("Ed25519");
    assert!(matches!(err, CertError::KeyAlgorithm { .. }), "{err:?}");

    let err = ca
        .sign(
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            &node,
            VALIDITY,
            NOW,
        )
        .expect_err("garbage");
    assert!(matches!(err, CertError::ParseCsr { .. }), "{err:?}");

    // Two CSRs in one PEM: which one would be checked and which signed?
    let two = format!(
        "{}{}",
        raw_csr("broker-1", vec![], false, p256),
        raw_csr("broker-2", vec![], false, p256)
    );
    let err = ca.sign(&two, &node, VALIDITY, NOW).expect_err("two CSRs");
    assert!(matches!(err, CertError::Pem { what: "CSR", .. }), "{err:?}");

    // A CSR whose signature does not match its contents.
    let good = raw_csr("broker-1", vec![], false, p256);
    let der = x509_parser::pem::parse_x509_pem(good.as_bytes())
        .expect("PEM")
        .1
        .contents;
    let mut tampered = der.clone();
    let at = tampered.len() / 3;
    tampered[at] ^= 0x01;
    let tampered_pem = pem_block("CERTIFICATE REQUEST", &tampered);
    assert!(ca.sign(&tampered_pem, &node, VALIDITY, NOW).is_err());
}

fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("ASCII"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

#[test]
fn certificate_names_come_from_the_identity_not_the_csr() {
    let ca = test_ca(NOW);
    // A CSR asking for less (CN only, in another letter case for the SAN)
    // gets everything the node is.
    let csr = raw_csr(
        "broker-1",
        vec![dns("BROKER-1.kafka.internal")],
        false,
        &rcgen::PKCS_ECDSA_P384_SHA384,
    );
    let signed = ca
        .sign(&csr, &broker1_identity(), VALIDITY, NOW)
        .expect("signed");
    let info = inspect(&signed.pem).expect("parses");
    assert_eq!(info.common_name, "broker-1");
    assert_eq!(info.dns_names, ["broker-1.kafka.internal"]);
    assert_eq!(info.ips, [IpAddr::from([10, 0, 1, 11])]);

    // The CA never signs past its own expiry.
    let (cert, key) = Ca::generate("short", 10, NOW).expect("CA");
    let short = Ca::from_pem(&cert, &key).expect("loads");
    let signed = short
        .sign(&csr, &broker1_identity(), VALIDITY, NOW)
        .expect("signed");
    assert_eq!(signed.not_after, NOW + 10 * DAY);
    assert_eq!(
        inspect(&signed.pem).expect("parses").not_after,
        NOW + 10 * DAY
    );
    let err = short
        .sign(&csr, &broker1_identity(), VALIDITY, NOW + 10 * DAY)
        .expect_err("expired CA");
    assert!(matches!(err, CertError::CaExpired { .. }), "{err:?}");
}

#[test]
fn renewal_at_two_thirds_of_the_lifetime() {
    let ca = test_ca(NOW);
    let mut req = broker1();
    let (_, signed) = sign(&ca, &req, &broker1_identity(), NOW);
    let info = inspect(&signed.pem).expect("parses");

    // Lifetime: 90 days + the 300 s skew allowance; two thirds of it after
    // not_before is NOW + 60 days - 100 s. renew_before 30 days would be NOW + 60 days: later.
    let two_thirds = NOW + 60 * DAY - 100;
    assert_eq!(renewal_due_at(&info, req.renew_before_seconds), two_thirds);
    assert!(!needs_renewal(&info, &req, NOW));
    assert!(!needs_renewal(&info, &req, two_thirds - 1));
    assert!(needs_renewal(&info, &req, two_thirds));
    assert!(needs_renewal(&info, &req, two_thirds + 1));
    assert!(needs_renewal(&info, &req, info.not_after + 1));

    // A longer renew_before brings it forward: renew once less than 50 days remain.
    req.renew_before_seconds = 50 * DAY;
    let early = NOW + 40 * DAY;
    assert!(!needs_renewal(&info, &req, early - 1));
    assert!(needs_renewal(&info, &req, early));
}

#[test]
fn renewal_when_names_change() {
    let ca = test_ca(NOW);
    let req = broker1();
    let (_, signed) = sign(&ca, &req, &broker1_identity(), NOW);
    let info = inspect(&signed.pem).expect("parses");
    assert!(!needs_renewal(&info, &req, NOW));

    let mut moved = req.clone();
    moved.ip_addresses = vec![Ipv4Addr::new(10, 0, 1, 99)];
    assert!(needs_renewal(&info, &moved, NOW), "address changed");

    let mut renamed = req.clone();
    renamed.dns_names.push("kafka.example.com".to_owned());
    assert!(needs_renewal(&info, &renamed, NOW), "DNS name added");

    let mut cn = req.clone();
    cn.common_name = "broker-9".to_owned();
    assert!(needs_renewal(&info, &cn, NOW), "CN changed");

    let mut same = req.clone();
    same.dns_names = vec!["Broker-1.Kafka.Internal".to_owned()];
    assert!(
        !needs_renewal(&info, &same, NOW),
        "DNS names compare without case"
    );
}

#[test]
fn sign_with_the_example_ca() {
    let seed = seed_dir();
    let identity_text =
        std::fs::read_to_string(seed.join("../seed.example-only.age-identity")).expect("identity");
    let identity = Identity::parse(&identity_text).expect("identity parses");
    let ciphertext = std::fs::read(seed.join("secrets/ca-key.age")).expect("CA key file");
    let ca_key = EncryptedSecret::parse("secrets/ca-key.age", ciphertext)
        .and_then(|s| s.decrypt(&identity))
        .expect("CA key decrypts");
    let ca_cert = std::fs::read_to_string(seed.join("pki/ca.pem")).expect("CA cert");
    let ca = Ca::from_pem(&ca_cert, ca_key.expose()).expect("example CA loads");
    assert_eq!(ca.subject(), "CN=kafka-prod CA, O=kraftops example");

    // The request the renderer makes for broker-1, and the identity the
    // coordinator derives from the model, agree.
    let model = desired_state::load_dir(&seed).expect("seed loads");
    let secrets = model.decrypt_all(&identity).expect("secrets decrypt");
    let plan = roles::render(&model, "broker-1", &secrets).expect("renders");
    let req = plan
        .certificates
        .first()
        .expect("a broker has a certificate");
    let node = NodeIdentity::from_model(&model, "broker-1").expect("broker-1 exists");
    assert_eq!(node, NodeIdentity::from_request(req));

    let now = unix_now();
    let key = NodeKey::generate().expect("key");
    let signed = ca
        .sign(
            &csr_pem(req, &key).expect("CSR"),
            &node,
            req.validity_seconds,
            now,
        )
        .expect("signed");
    let der = x509_parser::pem::parse_x509_pem(signed.pem.as_bytes())
        .expect("PEM")
        .1
        .contents;
    let (_, cert) = X509Certificate::from_der(&der).expect("DER");
    assert_eq!(
        cert.issuer().to_string(),
        "CN=kafka-prod CA, O=kraftops example"
    );
    assert!(issued_by(&signed.pem, &model.ca_certificate).expect("parses"));
    assert!(!needs_renewal(
        &inspect(&signed.pem).expect("parses"),
        req,
        now
    ));

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("ca.pem"), &model.ca_certificate).expect("write");
    std::fs::write(dir.path().join("leaf.pem"), &signed.pem).expect("write");
    let out = openssl(&["verify", "-CAfile", "ca.pem", "leaf.pem"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // broker-1's token cannot get controller-1's certificate.
    let controller = NodeIdentity::from_model(&model, "controller-1").expect("exists");
    assert!(matches!(
        ca.sign(
            &csr_pem(req, &key).expect("CSR"),
            &controller,
            req.validity_seconds,
            now
        ),
        Err(CertError::NameNotAllowed { .. })
    ));

    // The wrong key, or a leaf as the CA, is refused when loading.
    let (_, other_key) = Ca::generate("other", 1, now).expect("CA");
    assert!(matches!(
        Ca::from_pem(&ca_cert, &other_key),
        Err(CertError::CaKeyMismatch)
    ));
    assert!(matches!(
        Ca::from_pem(&signed.pem, &key.to_pem()),
        Err(CertError::NotACa)
    ));
}
