//! What the tests against a real Apache Kafka share: a CA made here, one
//! KRaft node in combined mode (assembled by `scripts/kafka-dist`) with a
//! SASL_SSL SCRAM-SHA-512 broker listener and a mutual-TLS controller
//! listener, clients of both, and Kafka's own command-line tools.
//!
//! Each test binary uses part of it.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kraftops_agent::kafka::{AdminClient, AdminConfig, Auth};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};

/// What the test saw goes to stderr, which `cargo test -- --nocapture` shows.
macro_rules! report {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub const TIMEOUT: Duration = Duration::from_secs(10);
pub const ADMIN_PASSWORD: &str = "admin-secret";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_owned()
}

pub fn kafka_tarball() -> String {
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

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port()
}

/// A test CA signing certificates for `kafka-1`.
pub struct TestCa {
    pub issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
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

    pub fn pem(&self) -> String {
        self.issuer.as_ref().pem()
    }

    /// A keystore PEM (PKCS#8 key, certificate, CA) for CN `kafka-1`, valid
    /// for localhost and 127.0.0.1, usable as server and as client.
    pub fn keystore(&self, serial: u64) -> String {
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
pub struct Kafka {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub internal: String,
    pub controller: String,
    pub ca: TestCa,
    /// The INTERNAL listener's own keystore file (reloaded by the test).
    pub internal_keystore: PathBuf,
    pub client_keystore: String,
    /// The unpacked distribution (its `bin/` tools).
    pub home: PathBuf,
    /// Properties for Kafka's own tools: SASL_SSL as admin, trusting the CA.
    pub tool_config: PathBuf,
}

impl Drop for Kafka {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Kafka {
    pub fn start() -> Kafka {
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
        let tool_config = write(
            "tool.properties",
            &format!(
                "security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"{ADMIN_PASSWORD}\";
ssl.truststore.type=PEM
ssl.truststore.location={}
",
                truststore.display()
            ),
        );
        Kafka {
            home,
            tool_config,
            child,
            dir,
            internal: format!("127.0.0.1:{internal_port}"),
            controller: format!("127.0.0.1:{controller_port}"),
            ca,
            internal_keystore,
            client_keystore,
        }
    }

    pub fn log_tail(&self) -> String {
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

    pub fn scram_client(&self, password: &str) -> AdminClient {
        self.scram_client_as("admin", password)
    }

    pub fn scram_client_as(&self, user: &str, password: &str) -> AdminClient {
        AdminClient::new(AdminConfig {
            bootstrap: vec![self.internal.clone()],
            ca_pem: self.ca.pem(),
            auth: Auth::Scram {
                user: user.to_owned(),
                password: password.to_owned(),
            },
            timeout: TIMEOUT,
            controllers: false,
        })
        .expect("client")
    }

    /// One of Kafka's own tools in `bin/`, logging under the test's
    /// directory, with a small heap.
    pub fn tool(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.home.join("bin").join(name));
        cmd.env("KAFKA_HEAP_OPTS", "-Xmx256m")
            .env("LOG_DIR", self.dir.path().join("tool-logs"))
            .stdin(Stdio::null());
        cmd
    }

    /// `kafka-console-consumer.sh` of `topic` in `group` as the admin user,
    /// running until dropped; `properties` are `--consumer-property` pairs.
    pub fn live_consumer(&self, topic: &str, group: &str, properties: &[&str]) -> LiveConsumer {
        let mut cmd = self.tool("kafka-console-consumer.sh");
        cmd.args(["--bootstrap-server", &self.internal])
            .args(["--topic", topic, "--group", group, "--consumer.config"])
            .arg(&self.tool_config);
        for property in properties {
            cmd.args(["--consumer-property", property]);
        }
        LiveConsumer(
            cmd.stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("kafka-console-consumer.sh"),
        )
    }

    pub fn controller_client(&self) -> AdminClient {
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

/// A console consumer that stays in its group until dropped (killed, so it
/// neither commits nor leaves: its member stays until the session times
/// out).
pub struct LiveConsumer(pub Child);

impl Drop for LiveConsumer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `f` until it returns `Some`, for at most `limit`.
pub fn wait_for<T>(
    what: &str,
    limit: Duration,
    kafka: &Kafka,
    mut f: impl FnMut() -> Option<T>,
) -> T {
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
