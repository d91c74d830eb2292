//! The Kafka admin client against a real Apache Kafka (assembled by
//! `scripts/kafka-dist`): one KRaft node in combined mode with a SASL_SSL
//! SCRAM-SHA-512 broker listener and a mutual-TLS controller listener, both
//! with PEM keystores signed by a CA made here. Every `KafkaAdmin` call is
//! checked against it, so are a keystore reloaded by re-setting its path,
//! and the refusals (wrong password, wrong CA, closed port).
//!
//! Needs Java (`scripts/install-deps`); a missing piece fails the test.

use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kraftops_agent::kafka::{
    AdminClient, AdminConfig, Auth, ConfigEntry, ConfigOp, ConfigSource, KafkaAdmin, KafkaError,
    TopicPartition,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};

/// What the test saw goes to stderr, which `cargo test -- --nocapture` shows.
macro_rules! report {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

const TIMEOUT: Duration = Duration::from_secs(10);
const ADMIN_PASSWORD: &str = "admin-secret";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_owned()
}

fn kafka_tarball() -> String {
    let out = Command::new(repo_root().join("scripts/kafka-dist"))
        .stdin(Stdio::null())
        .output()
        .expect("running scripts/kafka-dist");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "scripts/kafka-dist failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find_map(|l| l.strip_prefix("KAFKA_TARBALL="))
        .unwrap_or_else(|| panic!("scripts/kafka-dist printed no KAFKA_TARBALL=: {text}"))
        .to_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port()
}

/// A test CA signing certificates for `kafka-1`.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        TestCa {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    fn pem(&self) -> String {
        self.issuer.as_ref().pem()
    }

    /// A keystore PEM (PKCS#8 key, certificate, CA) for CN `kafka-1`, valid
    /// for localhost and 127.0.0.1, usable as server and as client.
    fn keystore(&self, serial: u64) -> String {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params
            .distinguished_name
            .push(DnType::CommonName, "kafka-1");
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(SerialNumber::from(serial));
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        format!("{}{}{}", key.serialize_pem(), cert.pem(), self.pem())
    }
}

/// A running Kafka, killed when dropped.
struct Kafka {
    child: Child,
    dir: tempfile::TempDir,
    internal: String,
    controller: String,
    ca: TestCa,
    /// The INTERNAL listener's own keystore file (reloaded by the test).
    internal_keystore: PathBuf,
    client_keystore: String,
}

impl Drop for Kafka {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Kafka {
    fn start() -> Kafka {
        let tarball = kafka_tarball();
        let dir = tempfile::tempdir().expect("tempdir");
        let status = Command::new("tar")
            .args(["-xzf", &tarball, "-C"])
            .arg(dir.path())
            .status()
            .expect("tar");
        assert!(status.success(), "unpacking {tarball}");
        let home = std::fs::read_dir(dir.path())
            .expect("read tempdir")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.join("bin/kafka-server-start.sh").exists())
            .expect("the unpacked distribution");

        let ca = TestCa::new("kafka-admin test CA");
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            path
        };
        let keystore = write("keystore.pem", &ca.keystore(1001));
        let internal_keystore = write("internal-keystore.pem", &ca.keystore(1002));
        let truststore = write("truststore.pem", &ca.pem());
        let (internal_port, controller_port) = (free_port(), free_port());
        let logs = dir.path().join("logs");
        let data = dir.path().join("data");
        let properties = format!(
            "process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=INTERNAL://127.0.0.1:{internal_port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=INTERNAL://127.0.0.1:{internal_port}
listener.security.protocol.map=INTERNAL:SASL_SSL,CONTROLLER:SSL
inter.broker.listener.name=INTERNAL
controller.listener.names=CONTROLLER
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.internal.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"{ADMIN_PASSWORD}\";
ssl.keystore.type=PEM
ssl.keystore.location={keystore}
ssl.truststore.type=PEM
ssl.truststore.location={truststore}
listener.name.internal.ssl.keystore.type=PEM
listener.name.internal.ssl.keystore.location={internal_keystore}
listener.name.controller.ssl.client.auth=required
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin;User:kafka-1
ssl.principal.mapping.rules=RULE:^CN=([^,]+).*$/$1/,DEFAULT
log.dirs={data}
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
",
            keystore = keystore.display(),
            truststore = truststore.display(),
            internal_keystore = internal_keystore.display(),
            data = data.display(),
        );
        let config = write("server.properties", &properties);
        let script = |name: &str| {
            let mut cmd = Command::new(home.join("bin").join(name));
            cmd.env("KAFKA_HEAP_OPTS", "-Xmx256m -Xms256m")
                .env("LOG_DIR", &logs)
                .stdin(Stdio::null());
            cmd
        };
        let out = script("kafka-storage.sh")
            .arg("random-uuid")
            .output()
            .expect("kafka-storage.sh random-uuid");
        assert!(out.status.success(), "random-uuid: {out:?}");
        let cluster_id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let out = script("kafka-storage.sh")
            .args(["format", "-t", &cluster_id, "-c"])
            .arg(&config)
            .args([
                "--add-scram",
                &format!("SCRAM-SHA-512=[name=admin,password={ADMIN_PASSWORD}]"),
            ])
            .output()
            .expect("kafka-storage.sh format");
        assert!(
            out.status.success(),
            "format: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let console = std::fs::File::create(dir.path().join("console.log")).expect("console log");
        let child = script("kafka-server-start.sh")
            .arg(&config)
            .stdout(console.try_clone().expect("clone"))
            .stderr(console)
            .spawn()
            .expect("kafka-server-start.sh");
        let client_keystore = ca.keystore(2001);
        Kafka {
            child,
            dir,
            internal: format!("127.0.0.1:{internal_port}"),
            controller: format!("127.0.0.1:{controller_port}"),
            ca,
            internal_keystore,
            client_keystore,
        }
    }

    fn log_tail(&self) -> String {
        let mut out = String::new();
        for name in ["console.log", "logs/server.log"] {
            let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(40);
            out.push_str(&format!(
                "--- {name} (last 40 lines)\n{}\n",
                lines[from..].join("\n")
            ));
        }
        out
    }

    fn scram_client(&self, password: &str) -> AdminClient {
        AdminClient::new(AdminConfig {
            bootstrap: vec![self.internal.clone()],
            ca_pem: self.ca.pem(),
            auth: Auth::Scram {
                user: "admin".to_owned(),
                password: password.to_owned(),
            },
            timeout: TIMEOUT,
            controllers: false,
        })
        .expect("client")
    }

    fn controller_client(&self) -> AdminClient {
        AdminClient::new(AdminConfig {
            bootstrap: vec![self.controller.clone()],
            ca_pem: self.ca.pem(),
            auth: Auth::MutualTls {
                keystore_pem: self.client_keystore.clone(),
            },
            timeout: TIMEOUT,
            controllers: true,
        })
        .expect("controller client")
    }
}

/// Polls `f` until it returns `Some`, for at most `limit`.
fn wait_for<T>(what: &str, limit: Duration, kafka: &Kafka, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            kafka.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn entry<'a>(entries: &'a [ConfigEntry], name: &str) -> &'a ConfigEntry {
    entries
        .iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no config {name}"))
}

/// The serial number of the certificate `address` presents, by a fresh
/// TLS handshake trusting `ca_pem`.
fn presented_serial(address: &str, ca_pem: &str) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("root");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let mut tls = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut tcp = TcpStream::connect(address).expect("connect");
    tcp.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    while tls.is_handshaking() {
        tls.complete_io(&mut tcp).expect("handshake");
    }
    let leaf = tls.peer_certificates().expect("certificates")[0].clone();
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).expect("X.509");
    cert.raw_serial().to_vec()
}

#[test]
fn admin_client_against_a_real_kafka() {
    let started = Instant::now();
    let kafka = Kafka::start();
    let admin = kafka.scram_client(ADMIN_PASSWORD);

    // Ready when our own client sees broker 1.
    let metadata = wait_for(
        "Kafka to answer Metadata",
        Duration::from_secs(60),
        &kafka,
        || {
            admin
                .metadata()
                .ok()
                .filter(|m| m.brokers.iter().any(|b| b.id == 1))
        },
    );
    report!("Kafka ready after {:?}", started.elapsed());
    assert_eq!(metadata.brokers.len(), 1);
    assert_eq!(metadata.brokers[0].host, "127.0.0.1");
    assert!(metadata.cluster_id.is_some());

    // 1. Topics and the cluster, over SASL_SSL/SCRAM-SHA-512.
    admin
        .create_topic("orders", 3, 1, &[("min.insync.replicas", "1")])
        .expect("create topic");
    let orders = wait_for(
        "orders in Metadata",
        Duration::from_secs(15),
        &kafka,
        || {
            admin
                .metadata()
                .expect("metadata")
                .topics
                .into_iter()
                .find(|t| t.name == "orders" && t.partitions.iter().all(|p| p.leader == 1))
        },
    );
    assert!(!orders.internal);
    assert_eq!(orders.partitions.len(), 3);
    for p in &orders.partitions {
        assert_eq!(
            (p.leader, &p.replicas, &p.isr),
            (1, &vec![1], &vec![1]),
            "{p:?}"
        );
        assert!(p.offline_replicas.is_empty());
    }
    let again = admin.create_topic("orders", 3, 1, &[]).expect_err("exists");
    report!("creating orders again: {again}");
    assert!(
        again.to_string().contains("TOPIC_ALREADY_EXISTS"),
        "{again}"
    );

    let cluster = admin.describe_cluster().expect("describe cluster");
    report!("describe_cluster: {cluster:?}");
    assert_eq!(cluster.nodes.len(), 1);
    assert_eq!((cluster.nodes[0].id, cluster.nodes[0].fenced), (1, false));
    assert_eq!(Some(&cluster.cluster_id), metadata.cluster_id.as_ref());

    let configs = admin
        .topic_configs(&["orders".to_owned()], &["min.insync.replicas"])
        .expect("topic configs");
    assert_eq!(configs["orders"]["min.insync.replicas"], "1");
    let missing = admin
        .topic_configs(&["no-such-topic".to_owned()], &["min.insync.replicas"])
        .expect_err("unknown topic");
    report!("configs of an unknown topic: {missing}");
    assert!(
        missing.to_string().contains("topic no-such-topic"),
        "{missing}"
    );

    // 2. Broker configs: read, set, delete, refuse.
    let configs = admin.broker_configs(1).expect("broker configs");
    let log_dirs = entry(&configs, "log.dirs");
    assert!(log_dirs.read_only, "{log_dirs:?}");
    assert_eq!(log_dirs.source, ConfigSource::StaticBroker);
    let threads = entry(&configs, "log.cleaner.threads");
    assert!(!threads.read_only, "{threads:?}");
    assert_eq!(threads.source, ConfigSource::Default);

    let set = |value: &str| ConfigOp::Set {
        name: "log.cleaner.threads".to_owned(),
        value: value.to_owned(),
    };
    admin
        .alter_broker_configs(1, &[set("2")])
        .expect("set log.cleaner.threads");
    let threads = wait_for(
        "log.cleaner.threads=2",
        Duration::from_secs(15),
        &kafka,
        || {
            let configs = admin.broker_configs(1).expect("broker configs");
            Some(entry(&configs, "log.cleaner.threads").clone())
                .filter(|e| e.value.as_deref() == Some("2"))
        },
    );
    report!("after set: {threads:?}");
    assert_eq!(threads.source, ConfigSource::DynamicBroker);
    assert_eq!(threads.synonyms[0].source, ConfigSource::DynamicBroker);
    assert!(
        threads
            .synonyms
            .iter()
            .any(|s| s.source == ConfigSource::Default && s.value.as_deref() == Some("1")),
        "{threads:?}"
    );
    admin
        .alter_broker_configs(
            1,
            &[ConfigOp::Delete {
                name: "log.cleaner.threads".to_owned(),
            }],
        )
        .expect("delete log.cleaner.threads");
    let threads = wait_for(
        "log.cleaner.threads deleted",
        Duration::from_secs(15),
        &kafka,
        || {
            let configs = admin.broker_configs(1).expect("broker configs");
            Some(entry(&configs, "log.cleaner.threads").clone())
                .filter(|e| e.source != ConfigSource::DynamicBroker)
        },
    );
    assert_eq!(
        (threads.source, threads.value.as_deref()),
        (ConfigSource::Default, Some("1"))
    );
    let invalid = admin
        .alter_broker_configs(1, &[set("abc")])
        .expect_err("abc is not a number");
    report!("invalid value: {invalid}");
    assert!(matches!(invalid, KafkaError::Kafka { .. }), "{invalid:?}");
    let text = invalid.to_string();
    assert!(
        text.contains("INVALID_CONFIG") || text.contains("INVALID_REQUEST"),
        "{text}"
    );
    assert!(
        text.contains("broker 1 config log.cleaner.threads"),
        "{text}"
    );

    // The listener's keystore: re-setting its path reloads the file.
    let before = presented_serial(&kafka.internal, &kafka.ca.pem());
    std::fs::write(&kafka.internal_keystore, kafka.ca.keystore(1003)).expect("new keystore");
    let location = kafka.internal_keystore.display().to_string();
    admin
        .alter_broker_configs(
            1,
            &[ConfigOp::Set {
                name: "listener.name.internal.ssl.keystore.location".to_owned(),
                value: location.clone(),
            }],
        )
        .expect("re-set the keystore location");
    let reload = Instant::now();
    let after = wait_for(
        "the new certificate",
        Duration::from_secs(15),
        &kafka,
        || Some(presented_serial(&kafka.internal, &kafka.ca.pem())).filter(|s| *s != before),
    );
    report!(
        "keystore reload: serial {before:02x?} -> {after:02x?} after {:?}",
        reload.elapsed()
    );
    assert_eq!(
        after,
        vec![0x03, 0xeb],
        "1003, the new certificate's serial"
    );
    let configs = admin.broker_configs(1).expect("broker configs");
    let keystore = entry(&configs, "listener.name.internal.ssl.keystore.location");
    assert_eq!(keystore.value.as_deref(), Some(location.as_str()));
    assert_eq!(keystore.source, ConfigSource::DynamicBroker);
    // The client's pooled connection was made before: a new one works too.
    assert!(kafka.scram_client(ADMIN_PASSWORD).metadata().is_ok());

    // 3. The metadata quorum, through the broker.
    let quorum = admin.describe_quorum().expect("describe quorum");
    report!("describe_quorum via the broker: {quorum:?}");
    assert_eq!(quorum.leader_id, 1);
    assert_eq!(
        quorum
            .voters
            .iter()
            .map(|v| v.replica_id)
            .collect::<Vec<_>>(),
        vec![1]
    );
    assert!(quorum.high_watermark > 0);

    // 4. Elections and reassignments.
    let orders_0 = TopicPartition {
        topic: "orders".to_owned(),
        partition: 0,
    };
    assert_eq!(
        admin
            .elect_preferred_leaders(std::slice::from_ref(&orders_0))
            .expect("elect"),
        vec![]
    );
    assert_eq!(admin.elect_preferred_leaders(&[]).expect("nothing"), vec![]);
    let unknown = TopicPartition {
        topic: "no-such-topic".to_owned(),
        partition: 0,
    };
    let failed = admin
        .elect_preferred_leaders(std::slice::from_ref(&unknown))
        .expect("elect");
    report!("election of an unknown partition: {failed:?}");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, unknown);
    assert!(
        failed[0].1.starts_with("UNKNOWN_TOPIC_OR_PARTITION"),
        "{failed:?}"
    );
    assert_eq!(admin.reassignments().expect("reassignments"), vec![]);

    // 5. The controllers, over mutual TLS (KIP-919).
    let controllers = kafka.controller_client();
    let cluster = controllers
        .describe_cluster()
        .expect("describe cluster (controllers)");
    report!("describe_cluster via the controllers: {cluster:?}");
    assert_eq!(cluster.controller_id, 1);
    assert_eq!(
        cluster
            .nodes
            .iter()
            .map(|n| (n.id, format!("{}:{}", n.host, n.port)))
            .collect::<Vec<_>>(),
        vec![(1, kafka.controller.clone())]
    );
    let quorum = controllers
        .describe_quorum()
        .expect("describe quorum (controllers)");
    assert_eq!(quorum.leader_id, 1);
    assert_eq!(quorum.voters.len(), 1);
    let controller_configs = controllers.broker_configs(1).expect("controller configs");
    assert_eq!(
        entry(&controller_configs, "process.roles").value.as_deref(),
        Some("broker,controller")
    );
    let refused = controllers
        .metadata()
        .expect_err("no Metadata on controllers");
    report!("Metadata to a controller: {refused}");
    assert!(
        matches!(refused, KafkaError::Unsupported { .. }),
        "{refused:?}"
    );

    // 6. Refusals: clear errors, no panic.
    let wrong = kafka
        .scram_client("wrong-password")
        .metadata()
        .expect_err("wrong password");
    report!("wrong password: {wrong}");
    let text = wrong.to_string();
    assert!(
        matches!(wrong, KafkaError::Authentication { .. }),
        "{wrong:?}"
    );
    assert!(
        text.contains(&kafka.internal) && text.contains("admin"),
        "{text}"
    );
    assert!(text.contains("authentication failed"), "{text}");

    let stranger = TestCa::new("some other CA");
    let wrong_ca = AdminClient::new(AdminConfig {
        bootstrap: vec![kafka.internal.clone()],
        ca_pem: stranger.pem(),
        auth: Auth::Scram {
            user: "admin".to_owned(),
            password: ADMIN_PASSWORD.to_owned(),
        },
        timeout: TIMEOUT,
        controllers: false,
    })
    .expect("client")
    .metadata()
    .expect_err("untrusted server certificate");
    report!(
        "wrong CA: {wrong_ca} ({:?})",
        std::error::Error::source(&wrong_ca).map(ToString::to_string)
    );
    assert!(matches!(wrong_ca, KafkaError::Tls { .. }), "{wrong_ca:?}");
    assert!(wrong_ca.to_string().contains(&kafka.internal));

    let no_certificate = AdminClient::new(AdminConfig {
        bootstrap: vec![kafka.controller.clone()],
        ca_pem: kafka.ca.pem(),
        auth: Auth::Scram {
            user: "admin".to_owned(),
            password: ADMIN_PASSWORD.to_owned(),
        },
        timeout: TIMEOUT,
        controllers: true,
    })
    .expect("client")
    .describe_cluster()
    .expect_err("the controller listener requires a client certificate");
    report!(
        "no client certificate: {no_certificate} ({:?})",
        std::error::Error::source(&no_certificate).map(ToString::to_string)
    );

    let closed = format!("127.0.0.1:{}", free_port());
    let asked = Instant::now();
    let refused = AdminClient::new(AdminConfig {
        bootstrap: vec![closed.clone()],
        ca_pem: kafka.ca.pem(),
        auth: Auth::Scram {
            user: "admin".to_owned(),
            password: ADMIN_PASSWORD.to_owned(),
        },
        timeout: TIMEOUT,
        controllers: false,
    })
    .expect("client")
    .metadata()
    .expect_err("closed port");
    report!("closed port: {refused} after {:?}", asked.elapsed());
    assert!(matches!(refused, KafkaError::Connect { .. }), "{refused:?}");
    assert!(refused.to_string().contains(&closed));
    assert!(asked.elapsed() < TIMEOUT);

    report!("all checks done after {:?}", started.elapsed());
}
