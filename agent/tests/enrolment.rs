//! Enrolment over the coordinator's mutual-TLS port, with the example's
//! real cluster CA and join tokens: a join token is good for one
//! enrolment, the identity only crosses TLS, and afterwards the node is
//! whoever its certificate says.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use desired_state::{Identity, Model};
use kraftops_agent::certs::{self, Ca};
use kraftops_agent::coordinator::service::{CaSigner, coordinator_keystore, view_of};
use kraftops_agent::coordinator::{
    ClusterView, Coordinator, ServerCertificate, SystemClock, serve, serve_tls, server_config,
};
use kraftops_agent::daemon::client::{ClientError, CoordinatorClient, LeaseAnswer};
use tokio_util::sync::CancellationToken;

fn example() -> (Model, Identity, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../desired-state/examples");
    let model = desired_state::load_dir(&root.join("seed")).expect("the example loads");
    let text = std::fs::read_to_string(root.join("seed.example-only.age-identity"))
        .expect("the example identity");
    let identity = Identity::parse(&text).expect("the example identity parses");
    (model, identity, text)
}

fn join_token(model: &Model, identity: &Identity, node: &str) -> String {
    let name = desired_state::types::Name::try_from(format!("join-token-{node}")).expect("a name");
    model
        .decrypt(&name, identity)
        .expect("the example has join tokens")
        .expose()
        .to_owned()
}

struct Running {
    coordinator: Arc<Coordinator>,
    tls_url: String,
    plain_url: String,
    stop: CancellationToken,
    ca_pem: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start(view: ClusterView, ca: Arc<Ca>, identity: &str, record: PathBuf) -> Running {
    let (pem, _) = coordinator_keystore(&ca, &view, "observability-1", certs::unix_now())
        .expect("the coordinator's certificate");
    let certificate = ServerCertificate::from_keystore(&pem).expect("loads");
    let config = server_config(ca.cert_pem(), certificate).expect("TLS config");
    let leases = record.with_extension("leases-until");
    let coordinator = Coordinator::with_lease_record(
        view,
        Arc::new(CaSigner(Arc::clone(&ca))),
        Arc::new(SystemClock),
        None,
        leases,
    );
    coordinator
        .enable_enrolment(identity.to_owned(), Some(record))
        .expect("enrolment enabled");
    let stop = CancellationToken::new();
    let tls = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let tls_url = format!(
        "https://127.0.0.1:{}",
        tls.local_addr().expect("addr").port()
    );
    let plain_url = format!(
        "http://127.0.0.1:{}",
        plain.local_addr().expect("addr").port()
    );
    tokio::spawn(serve_tls(tls, coordinator.clone(), config, stop.clone()));
    tokio::spawn(serve(plain, coordinator.clone(), stop.clone()));
    Running {
        coordinator,
        tls_url,
        plain_url,
        stop,
        ca_pem: ca.cert_pem().to_owned(),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("no panic")
}

fn refused_status(e: &ClientError) -> Option<u16> {
    match e {
        ClientError::Refused { status, .. } => Some(*status),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_token_enrols_once_over_tls_and_the_certificate_authenticates_afterwards() {
    let (model, identity, identity_text) = example();
    let (view, ca) = view_of(&model, &identity).expect("the example's view");
    let dir = tempfile::tempdir().expect("tempdir");
    let record = dir.path().join("spent-join-tokens");
    let running = start(view.clone(), Arc::new(ca), &identity_text, record.clone()).await;
    let token = join_token(&model, &identity, "broker-1");
    let credential = dir.path().join("broker-1/coordinator-client.pem");

    // The join token over the plain port still authenticates (not spent).
    let plain = CoordinatorClient::new(&running.plain_url, "broker-1", &token);
    let answer = blocking({
        let plain = plain.clone();
        move || plain.acquire("broker", 30, None)
    })
    .await
    .expect("the unspent token authenticates on the plain port");
    let LeaseAnswer::Granted(lease) = answer else {
        panic!("lease not granted: {answer:?}")
    };
    blocking({
        let plain = plain.clone();
        move || plain.release(&lease)
    })
    .await
    .expect("released");

    // Enrolment on the plain port is refused: the identity never crosses
    // the network in the clear.
    let over_plain = blocking({
        let url = running.plain_url.clone();
        let token = token.clone();
        move || {
            reqwest::blocking::Client::new()
                .post(format!("{url}/v1/enrol"))
                .bearer_auth(token)
                .json(&serde_json::json!({"node": "broker-1", "csr_pem": "x"}))
                .send()
                .map(|r| r.status().as_u16())
        }
    })
    .await
    .expect("answered");
    assert_eq!(over_plain, 403);

    // Enrol over TLS.
    let client = CoordinatorClient::tls(
        &running.tls_url,
        "broker-1",
        &running.ca_pem,
        credential.clone(),
        Some(token.clone()),
    );
    let handed_over = Arc::new(std::sync::Mutex::new(String::new()));
    blocking({
        let client = client.clone();
        let handed_over = handed_over.clone();
        move || {
            client.enrol_with(|id| {
                *handed_over.lock().expect("lock") = id.to_owned();
                Ok(())
            })
        }
    })
    .await
    .expect("enrolled");
    assert_eq!(*handed_over.lock().expect("lock"), identity_text);
    let pem = std::fs::read_to_string(&credential).expect("the credential was written");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&credential).expect("meta").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let (_, chain) = certs::read_keystore(&pem).expect("a keystore");
    let info = certs::inspect(&chain).expect("a certificate");
    assert_eq!(info.common_name, "broker-1");
    assert!(
        info.dns_names
            .contains(&"broker-1.kafka.internal".to_owned())
    );
    assert!(certs::issued_by(&chain, &running.ca_pem).expect("checked"));
    let recorded = std::fs::read_to_string(&record).expect("the spent token was recorded");
    assert_eq!(recorded.lines().count(), 1);
    assert!(
        !recorded.contains(&token),
        "the record keeps digests, not tokens"
    );

    // The token is spent: a second enrolment and the plain port refuse it.
    let again = blocking({
        let client = CoordinatorClient::tls(
            &running.tls_url,
            "broker-1",
            &running.ca_pem,
            dir.path().join("thief.pem"),
            Some(token.clone()),
        );
        move || client.enrol_with(|_| Ok(()))
    })
    .await
    .expect_err("a spent token does not enrol again");
    assert_eq!(refused_status(&again), Some(401), "{again}");
    assert!(again.to_string().contains("already used"), "{again}");
    assert!(!dir.path().join("thief.pem").exists());
    let spent_plain = blocking({
        let plain = plain.clone();
        move || plain.acquire("broker", 30, None)
    })
    .await
    .expect_err("a spent token authenticates nothing");
    assert_eq!(refused_status(&spent_plain), Some(401), "{spent_plain}");

    // The certificate is the node's credential from now on: a lease, a
    // nudge poll.
    let answer = blocking({
        let client = client.clone();
        move || client.acquire("broker", 30, None)
    })
    .await
    .expect("the certificate authenticates");
    assert!(
        matches!(answer, LeaseAnswer::Granted(ref l) if l.holder == "broker-1"),
        "{answer:?}"
    );
    running.coordinator.nudge();
    let generation = client
        .wait_for_nudge(0)
        .await
        .expect("nudge poll over mTLS");
    assert!(generation >= 1);

    // Another node's token cannot enrol as broker-1.
    let other = join_token(&model, &identity, "broker-2");
    let wrong = blocking({
        let client = CoordinatorClient::tls(
            &running.tls_url,
            "broker-1",
            &running.ca_pem,
            dir.path().join("wrong.pem"),
            Some(other),
        );
        move || client.enrol_with(|_| Ok(()))
    })
    .await
    .expect_err("broker-2's token is not broker-1's");
    assert_eq!(refused_status(&wrong), Some(403), "{wrong}");

    // A restarted coordinator reads the record: the token stays spent.
    drop(running);
    let (_, ca) = view_of(&model, &identity).expect("the example's view");
    let restarted = start(view, Arc::new(ca), &identity_text, record).await;
    let after_restart = blocking({
        let client = CoordinatorClient::tls(
            &restarted.tls_url,
            "broker-1",
            &restarted.ca_pem,
            dir.path().join("after-restart.pem"),
            Some(token),
        );
        move || client.enrol_with(|_| Ok(()))
    })
    .await
    .expect_err("still spent after a restart");
    assert_eq!(refused_status(&after_restart), Some(401), "{after_restart}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_never_sent_to_a_coordinator_of_another_ca_and_foreign_client_certificates_are_refused()
 {
    let (model, identity, identity_text) = example();
    let (view, ca) = view_of(&model, &identity).expect("the example's view");
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(view, Arc::new(ca), &identity_text, dir.path().join("spent")).await;
    let token = join_token(&model, &identity, "broker-3");

    // The agent pins another CA: the handshake fails before any request.
    let (foreign_cert, foreign_key) =
        Ca::generate("not-the-cluster", 1, certs::unix_now()).expect("a CA");
    let foreign = Ca::from_pem(&foreign_cert, &foreign_key).expect("loads");
    let pinned_wrong = blocking({
        let client = CoordinatorClient::tls(
            &running.tls_url,
            "broker-3",
            foreign.cert_pem(),
            dir.path().join("b3.pem"),
            Some(token.clone()),
        );
        move || client.enrol_with(|_| Ok(()))
    })
    .await
    .expect_err("the coordinator's certificate is not of the pinned CA");
    assert!(
        matches!(pinned_wrong, ClientError::Unreachable { .. }),
        "{pinned_wrong}"
    );
    assert!(
        !std::fs::read_to_string(dir.path().join("spent"))
            .unwrap_or_default()
            .contains(|c: char| c.is_ascii_hexdigit()),
        "nothing was spent"
    );

    // A client certificate of another CA is refused at the handshake.
    let key = certs::NodeKey::generate().expect("key");
    let csr = certs::csr_for_names(
        "x",
        "broker-3",
        &["broker-3.kafka.internal".to_owned()],
        &[],
        &key,
    )
    .expect("csr");
    let forged = foreign
        .sign(
            &csr,
            &certs::NodeIdentity {
                name: "broker-3".to_owned(),
                dns_names: vec!["broker-3.kafka.internal".to_owned()],
                ips: Vec::new(),
            },
            3600,
            certs::unix_now(),
        )
        .expect("signed by the foreign CA");
    let forged_path = dir.path().join("forged.pem");
    std::fs::write(
        &forged_path,
        certs::keystore_pem(&key, &forged.pem, foreign.cert_pem()),
    )
    .expect("write");
    let impostor = CoordinatorClient::tls(
        &running.tls_url,
        "broker-3",
        &running.ca_pem,
        forged_path,
        None,
    );
    let refused = blocking(move || impostor.acquire("broker", 30, None))
        .await
        .expect_err("a foreign client certificate is refused");
    assert!(
        matches!(refused, ClientError::Unreachable { .. }),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stalls_mid_request_is_dropped() {
    use rustls::pki_types::pem::PemObject as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let (model, identity, identity_text) = example();
    let (view, ca) = view_of(&model, &identity).expect("the example's view");
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(view, Arc::new(ca), &identity_text, dir.path().join("spent")).await;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(running.ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("a root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let address = running.tls_url.trim_start_matches("https://").to_owned();
    let tcp = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connects");
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").expect("a name"),
            tcp,
        )
        .await
        .expect("the handshake succeeds");
    // Half a request, then nothing.
    tls.write_all(b"POST /v1/enrol HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .expect("writes");
    let started = std::time::Instant::now();
    let mut buf = [0u8; 512];
    let read = tokio::time::timeout(std::time::Duration::from_secs(45), tls.read(&mut buf)).await;
    let waited = started.elapsed().as_secs();
    assert!(
        read.is_ok(),
        "the connection was still open after {waited} s"
    );
    assert!(
        waited >= 25,
        "dropped after {waited} s, before the 30 s header timeout"
    );
}
