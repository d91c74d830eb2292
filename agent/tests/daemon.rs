//! The agent and the coordinator as real processes: a git repository
//! pushed to, a coordinator that signs certificates and nudges, and agents
//! with temporary roots (files only; real systemd is proven by the local
//! cluster). Covers: a push converges every agent, a bad commit is refused
//! and the last good revision stays, drift is put back, certificates are
//! issued by the cluster CA and renewed at two thirds of their lifetime.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kraftops_agent::protocol::{Phase, StatusReport};

const NODES: [&str; 2] = ["broker-1", "controller-1"];

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../desired-state/examples/seed")
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=ops",
            "-c",
            "user.email=ops@example",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("git is needed (Debian package git): {e}"));
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Kills the processes when the test ends, however it ends.
struct Processes(Vec<(String, Child)>);

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Cluster {
    _tmp: tempfile::TempDir,
    work: PathBuf,
    roots: Vec<(String, PathBuf, u16)>,
    coordinator: String,
    coordinator_args: Vec<String>,
    processes: Processes,
}

fn spawn(args: &[&str], log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_kraftops-agent"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("the agent binary starts")
}

fn agent_config(node: &str, root: &Path, remote: &Path, port: u16, coordinator: &str) -> String {
    format!(
        "node: {node}\nrepository:\n  url: file://{}\n  branch: main\npoll_interval: 2s\ncoordinator: {coordinator}\njoin_token_file: /etc/kraftops/join-token\nidentity_file: /etc/kraftops/age-identity\nlisten: 127.0.0.1:{port}\napi_token_file: /etc/kraftops/api-token\nroot: {}\nservice_manager: none\n",
        remote.display(),
        root.display()
    )
}

/// Writes what cloud-init would: the identity, the join token, the API
/// token, and the accounts the plan's files belong to.
fn provision(root: &Path, node: &str) {
    let etc = root.join("etc/kraftops");
    std::fs::create_dir_all(&etc).expect("mkdir");
    std::fs::copy(
        example().with_file_name("seed.example-only.age-identity"),
        etc.join("age-identity"),
    )
    .expect("identity");
    let model = desired_state::load_dir(&example()).expect("example loads");
    let identity = desired_state::Identity::parse(
        &std::fs::read_to_string(example().with_file_name("seed.example-only.age-identity"))
            .expect("identity"),
    )
    .expect("parses");
    let name = desired_state::types::Name::try_from(format!("join-token-{node}")).expect("name");
    let token = model
        .decrypt(&name, &identity)
        .expect("join token decrypts");
    std::fs::write(etc.join("join-token"), token.expose()).expect("token");
    std::fs::write(etc.join("api-token"), "test-api-token").expect("api token");
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nkafka:x:0:0:kafka:/var/lib/kafka:/usr/sbin/nologin\n",
    )
    .expect("passwd");
    std::fs::write(root.join("etc/group"), "root:x:0:\nkafka:x:0:\n").expect("group");
}

/// The example repository pushed to a bare remote below `tmp`, with
/// quick polling and Kafka from a local tarball. Returns (remote, work tree).
fn repository(tmp: &Path) -> (PathBuf, PathBuf) {
    let remote = tmp.join("remote.git");
    let work = tmp.join("work");
    std::fs::create_dir_all(&remote).expect("mkdir");
    git(&remote, &["init", "--bare", "-q"]);
    copy_dir(&example(), &work);
    // Poll quickly in the test.
    let cluster = std::fs::read_to_string(work.join("cluster.yaml")).expect("cluster.yaml");
    std::fs::write(
        work.join("cluster.yaml"),
        cluster
            .replace("poll_interval: 60s", "poll_interval: 2s")
            .replace("poll_jitter: 10s", "poll_jitter: 1s"),
    )
    .expect("write");
    // Kafka comes from a tarball on the machine, checked by its digest.
    let dist = tmp.join("dist/kafka_2.13-4.1.1/bin");
    std::fs::create_dir_all(&dist).expect("mkdir");
    std::fs::write(dist.join("kafka-server-start.sh"), "#!/bin/sh\nexit 0\n").expect("script");
    let tarball = tmp.join("kafka.tgz");
    let tar = Command::new("tar")
        .args([
            "-czf",
            tarball.to_str().expect("utf8"),
            "-C",
            tmp.join("dist").to_str().expect("utf8"),
            "kafka_2.13-4.1.1",
        ])
        .status()
        .expect("tar runs");
    assert!(tar.success());
    let digest = kraftops_agent::apply::sha512_digest(&std::fs::read(&tarball).expect("tarball"));
    let text = std::fs::read_to_string(work.join("cluster.yaml")).expect("cluster.yaml");
    let start = text
        .find("      url: https://archive")
        .expect("distribution url");
    let end = text[start..].find("  install_dir").expect("install_dir") + start;
    let replaced = format!(
        "{}      url: file://{}\n      sha512: {digest}\n{}",
        &text[..start],
        tarball.display(),
        &text[end..]
    );
    std::fs::write(work.join("cluster.yaml"), replaced).expect("write");
    git(&work, &["init", "-q"]);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "example cluster"]);
    git(
        &work,
        &["push", "-q", remote.to_str().expect("utf8"), "HEAD:main"],
    );

    (remote, work)
}

fn start() -> Cluster {
    start_with(&NODES, |_| {})
}

/// The coordinator and an agent for each of `nodes`, after `tweak` has
/// edited the repository's work tree (committed and pushed when it changed
/// anything).
fn start_with(nodes: &[&str], tweak: impl FnOnce(&Path)) -> Cluster {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (remote, work) = repository(tmp.path());
    tweak(&work);
    if !git(&work, &["status", "--porcelain"]).is_empty() {
        git(&work, &["commit", "-q", "-am", "tweaked for the test"]);
        git(
            &work,
            &["push", "-q", remote.to_str().expect("utf8"), "HEAD:main"],
        );
    }
    let mut processes = Processes(Vec::new());
    let coord_port = free_port();
    let coordinator = format!("http://127.0.0.1:{coord_port}");
    let coord_root = tmp.path().join("observability-1");
    provision(&coord_root, "observability-1");
    std::fs::write(
        coord_root.join("coordinator.yaml"),
        format!("listen: 127.0.0.1:{coord_port}\ncluster: kafka-prod\nkafka:\n  bootstrap_servers: broker-1.kafka.internal:9092\n  client_properties: /etc/kafka/admin-client.properties\nconnect_urls: []\nprometheus_url: http://127.0.0.1:9090\nalertmanager_url: http://127.0.0.1:9093\nrollout:\n  health_timeout: 1m\n  lease_ttl: 1m\n  cooldown: 1s\n  auto_rollback: true\n  preferred_leader_election: true\n"),
    )
    .expect("coordinator config");
    std::fs::write(
        coord_root.join("agent.yaml"),
        agent_config(
            "observability-1",
            &coord_root,
            &remote,
            free_port(),
            &coordinator,
        ),
    )
    .expect("agent config");
    let coordinator_args: Vec<String> = vec![
        "coordinator".to_owned(),
        "--config".to_owned(),
        coord_root.join("coordinator.yaml").display().to_string(),
        "--agent-config".to_owned(),
        coord_root.join("agent.yaml").display().to_string(),
    ];
    let args: Vec<&str> = coordinator_args.iter().map(String::as_str).collect();
    let child = spawn(&args, &tmp.path().join("coordinator.log"));
    processes.0.push(("coordinator".to_owned(), child));

    let mut roots = Vec::new();
    for &node in nodes {
        let root = tmp.path().join(node);
        provision(&root, node);
        let port = free_port();
        std::fs::write(
            root.join("agent.yaml"),
            agent_config(node, &root, &remote, port, &coordinator),
        )
        .expect("config");
        let child = spawn(
            &[
                "run",
                "--config",
                root.join("agent.yaml").to_str().expect("utf8"),
            ],
            &tmp.path().join(format!("{node}.log")),
        );
        processes.0.push((node.to_owned(), child));
        roots.push((node.to_owned(), root, port));
    }
    Cluster {
        _tmp: tmp,
        work,
        roots,
        coordinator,
        coordinator_args,
        processes,
    }
}

impl Cluster {
    fn status(&self, port: u16) -> Option<StatusReport> {
        reqwest::blocking::get(format!("http://127.0.0.1:{port}/v1/status"))
            .ok()?
            .json()
            .ok()
    }

    fn logs(&self) -> String {
        let dir = self._tmp.path();
        let mut out = String::new();
        let names = std::iter::once("coordinator").chain(self.roots.iter().map(|r| r.0.as_str()));
        for name in names {
            let text = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!(
                "--- {name}\n{}\n",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        out
    }

    /// Waits until every agent satisfies `ok`, or fails with their status and logs.
    fn wait_all(&self, what: &str, ok: impl Fn(&StatusReport) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let statuses: Vec<Option<StatusReport>> = self
                .roots
                .iter()
                .map(|(_, _, port)| self.status(*port))
                .collect();
            if statuses.iter().all(|s| s.as_ref().is_some_and(&ok)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {statuses:#?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn push(&self, message: &str) -> String {
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", message]);
        let remote = self._tmp.path().join("remote.git");
        git(
            &self.work,
            &[
                "push",
                "-q",
                "-f",
                remote.to_str().expect("utf8"),
                "HEAD:main",
            ],
        );
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

#[test]
fn push_converges_bad_commit_is_refused_and_drift_is_reverted() {
    let cluster = start();
    let head = git(&cluster.work, &["rev-parse", "HEAD"]);
    cluster.wait_all("the first revision", |s| {
        s.phase == Phase::Converged && s.revision_applied.as_deref() == Some(&head)
    });

    // Every agent wrote its role and got a certificate from the coordinator.
    let ca = std::fs::read_to_string(example().join("pki/ca.pem")).expect("ca");
    for (node, root, port) in &cluster.roots {
        let props = std::fs::read_to_string(root.join("etc/kafka/server.properties"))
            .expect("server.properties");
        assert!(props.contains("advertised.listeners="), "{node}: {props}");
        let keystore =
            std::fs::read_to_string(root.join("etc/kafka/tls/node.pem")).expect("keystore");
        let (_, chain) = kraftops_agent::certs::read_keystore(&keystore).expect("keystore parses");
        assert!(
            kraftops_agent::certs::issued_by(&chain, &ca).expect("checks"),
            "{node}: not issued by the cluster CA"
        );
        let info = kraftops_agent::certs::inspect(&chain).expect("inspect");
        assert_eq!(info.common_name, *node);
        let status = cluster.status(*port).expect("status");
        assert_eq!(status.certificates.len(), 1, "{node}: {status:?}");
        // Kafka was unpacked into a versioned directory behind the link.
        let kafka = root.join("opt/kafka");
        assert!(
            kafka.join("bin/kafka-server-start.sh").is_file(),
            "{node}: Kafka not installed"
        );
        assert!(
            std::fs::symlink_metadata(&kafka)
                .expect("link")
                .file_type()
                .is_symlink(),
            "{node}: /opt/kafka is not a link"
        );
    }
    // The coordinator has their reports.
    let nodes: serde_json::Value =
        reqwest::blocking::get(format!("{}/v1/nodes/broker-1", cluster.coordinator))
            .expect("coordinator")
            .json()
            .expect("json");
    assert_eq!(
        nodes["report"]["revision_applied"],
        serde_json::Value::String(head.clone()),
        "{nodes}"
    );

    // A push converges every agent.
    let cluster_yaml = cluster.work.join("cluster.yaml");
    let text = std::fs::read_to_string(&cluster_yaml).expect("read");
    std::fs::write(
        &cluster_yaml,
        text.replace("num.io.threads: 16", "num.io.threads: 12"),
    )
    .expect("write");
    let second = cluster.push("fewer io threads");
    cluster.wait_all("the second revision", |s| {
        s.revision_applied.as_deref() == Some(&second) && s.phase == Phase::Converged
    });
    let (_, broker_root, _) = &cluster.roots[0];
    let props =
        std::fs::read_to_string(broker_root.join("etc/kafka/server.properties")).expect("read");
    assert!(props.contains("num.io.threads=12"), "{props}");

    // A bad commit is refused; the last good revision stays applied.
    let nodes_yaml = cluster.work.join("nodes.yaml");
    let text = std::fs::read_to_string(&nodes_yaml).expect("read");
    std::fs::write(
        &nodes_yaml,
        text.replacen("node_id: 2\n", "node_id: 1\n", 1),
    )
    .expect("write");
    let bad = cluster.push("duplicate node id");
    cluster.wait_all("the refusal", |s| {
        s.phase == Phase::Refused && s.revision_seen.as_deref() == Some(&bad)
    });
    for (node, _, port) in &cluster.roots {
        let s = cluster.status(*port).expect("status");
        assert_eq!(
            s.revision_applied.as_deref(),
            Some(second.as_str()),
            "{node}"
        );
        let error = s.last_error.expect("an error");
        assert!(
            error
                .problems
                .iter()
                .any(|p| p.starts_with("nodes.yaml:") && p.contains("duplicate node_id")),
            "{node}: {error:?}"
        );
    }

    // A hand edit of a managed file is put back and reported as drift.
    let server_props = broker_root.join("etc/kafka/server.properties");
    let good = std::fs::read(&server_props).expect("read");
    std::fs::write(&server_props, b"num.io.threads=1\n").expect("hand edit");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read(&server_props).expect("read") != good {
        assert!(
            Instant::now() < deadline,
            "drift not reverted\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let port = cluster.roots[0].2;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = cluster.status(port).expect("status");
        if s.drift
            .iter()
            .any(|d| d.path.ends_with("etc/kafka/server.properties"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "drift not reported: {s:?}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The coordinator goes away: agents keep converging on their own, and
    // their reports catch up when it is back.
    let mut cluster = cluster;
    let (_, mut coordinator) = cluster.processes.0.remove(0);
    coordinator.kill().expect("kill the coordinator");
    coordinator.wait().expect("reap");
    std::fs::copy(
        example().join("nodes.yaml"),
        cluster.work.join("nodes.yaml"),
    )
    .expect("restore nodes.yaml");
    let fixed = cluster.push("fix the duplicate node id");
    cluster.wait_all("converging without the coordinator", |s| {
        s.phase == Phase::Converged && s.revision_applied.as_deref() == Some(&fixed)
    });
    let args: Vec<&str> = cluster
        .coordinator_args
        .iter()
        .map(String::as_str)
        .collect();
    let log = cluster._tmp.path().join("coordinator-restarted.log");
    cluster
        .processes
        .0
        .push(("coordinator".to_owned(), spawn(&args, &log)));
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let view = reqwest::blocking::get(format!("{}/v1/nodes/broker-1", cluster.coordinator))
            .ok()
            .and_then(|r| r.json::<serde_json::Value>().ok());
        if view.as_ref().is_some_and(|v| {
            v["report"]["revision_applied"] == serde_json::Value::String(fixed.clone())
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reports did not catch up: {view:?}\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(cluster.processes);
}

/// The certificate a keystore file holds, as the renewal test follows it.
#[derive(Clone, Debug)]
struct Held {
    serial: String,
    /// The certificate's SubjectPublicKeyInfo: the keystore's key belongs
    /// to it (`read_keystore` checks), so a new one means a new key.
    public_key: Vec<u8>,
    key_pem: String,
    chain: String,
    not_before: u64,
    not_after: u64,
}

/// What `keystore` holds now; `None` before the agent first writes it. A
/// keystore that does not parse, or whose key is not its certificate's,
/// fails the test: the agent replaces it atomically.
fn held(keystore: &Path) -> Option<Held> {
    let pem = std::fs::read_to_string(keystore).ok()?;
    let (key, chain) = kraftops_agent::certs::read_keystore(&pem)
        .unwrap_or_else(|e| panic!("{}: {e}", keystore.display()));
    let (_, block) = x509_parser::pem::parse_x509_pem(chain.as_bytes()).expect("PEM");
    let cert = block.parse_x509().expect("X.509");
    let seconds =
        |t: x509_parser::time::ASN1Time| u64::try_from(t.timestamp()).expect("after 1970");
    Some(Held {
        serial: cert.raw_serial_as_string(),
        public_key: cert.public_key().raw.to_vec(),
        key_pem: key.to_pem(),
        not_before: seconds(cert.validity().not_before),
        not_after: seconds(cert.validity().not_after),
        chain,
    })
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

#[test]
fn a_certificate_is_renewed_at_two_thirds_of_its_lifetime_without_operator_action() {
    // 30 s certificates. The CA backdates them by a tenth of that (3 s), so
    // renewal is due 22 s into their 33 s, 19 s after signing; renew_before
    // (5 s) would come later. Nothing is pushed after the start.
    let cluster = start_with(&["broker-1"], |work| {
        let path = work.join("cluster.yaml");
        let text = std::fs::read_to_string(&path).expect("read");
        std::fs::write(
            &path,
            text.replace("cert_validity: 90d", "cert_validity: 30s")
                .replace("renew_before: 30d", "renew_before: 5s"),
        )
        .expect("write");
    });
    let (node, root, port) = cluster.roots[0].clone();
    let keystore = root.join("etc/kafka/tls/node.pem");
    let ca = std::fs::read_to_string(example().join("pki/ca.pem")).expect("ca");

    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        if let Some(h) = held(&keystore) {
            break h;
        }
        assert!(
            Instant::now() < deadline,
            "{node}: no certificate issued\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        first.not_after - first.not_before,
        33,
        "30 s and a 3 s backdate: {first:?}"
    );
    let due = first.not_before + (first.not_after - first.not_before) * 2 / 3;

    // Follow the keystore until it changes; whatever it holds must never
    // be expired (the agent renews well before: 11 s of the 33 are left).
    let (renewed_at, renewed) = loop {
        let h = held(&keystore).expect("the keystore stays in place");
        let now = unix_now();
        assert!(
            now < h.not_after as f64,
            "{node}: the certificate on disk expired at {} (now {now:.1}): {h:?}\n{}",
            h.not_after,
            cluster.logs()
        );
        if h.serial != first.serial {
            break (now, h);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Not early: the agent renews once its (whole-second) clock reaches
    // `due`. Not late: its poll (2 s + up to 1 s jitter) and one reconcile,
    // with room for a loaded machine.
    let lag = renewed_at - due as f64;
    assert!(
        (0.0..=8.0).contains(&lag),
        "{node}: renewed {lag:.1} s after two thirds of the lifetime ({due})\n{}",
        cluster.logs()
    );
    assert_ne!(renewed.key_pem, first.key_pem, "{node}: the key was reused");
    assert_ne!(
        renewed.public_key, first.public_key,
        "{node}: same public key"
    );
    assert!(
        renewed.not_after > first.not_after,
        "{renewed:?} vs {first:?}"
    );
    assert_eq!(renewed.not_after - renewed.not_before, 33, "{renewed:?}");
    assert!(
        kraftops_agent::certs::issued_by(&renewed.chain, &ca).expect("checks"),
        "{node}: the renewed certificate is not the cluster CA's"
    );

    // The agent reports the new expiry, converged and without an error.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = cluster.status(port);
        if let Some(s) = &status
            && s.phase == Phase::Converged
            && s.certificates.len() == 1
            && s.certificates[0].not_after == renewed.not_after
        {
            assert!(s.last_error.is_none(), "{s:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{node}: the status does not show the new expiry {}: {status:?}",
            renewed.not_after
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Delegates to a `RecordingServiceManager`, but a restart takes a while
/// and is logged with its start and end, so overlaps show.
#[derive(Debug)]
struct SlowRestarts {
    inner: kraftops_agent::apply::RecordingServiceManager,
    node: String,
    log: std::sync::Arc<std::sync::Mutex<Vec<(String, Instant, Instant)>>>,
}

impl kraftops_agent::apply::ServiceManager for SlowRestarts {
    fn daemon_reload(&self) -> Result<(), kraftops_agent::apply::ApplyError> {
        self.inner.daemon_reload()
    }
    fn enable(&self, unit: &str) -> Result<(), kraftops_agent::apply::ApplyError> {
        self.inner.enable(unit)
    }
    fn start(&self, unit: &str) -> Result<(), kraftops_agent::apply::ApplyError> {
        self.inner.start(unit)
    }
    fn stop(&self, unit: &str) -> Result<(), kraftops_agent::apply::ApplyError> {
        self.inner.stop(unit)
    }
    fn restart(&self, unit: &str) -> Result<(), kraftops_agent::apply::ApplyError> {
        let begun = Instant::now();
        std::thread::sleep(Duration::from_millis(700));
        let result = self.inner.restart(unit);
        self.log.lock().expect("log").push((
            format!("{}:{unit}", self.node),
            begun,
            Instant::now(),
        ));
        result
    }
    fn reload(&self, unit: &str) -> Result<(), kraftops_agent::apply::ApplyError> {
        self.inner.reload(unit)
    }
    fn mask(&self, unit: &str) -> Result<(), kraftops_agent::apply::ApplyError> {
        self.inner.mask(unit)
    }
    fn disable(&self, unit: &str) -> Result<(), kraftops_agent::apply::ApplyError> {
        self.inner.disable(unit)
    }
    fn status(
        &self,
        unit: &str,
    ) -> Result<kraftops_agent::protocol::UnitStatus, kraftops_agent::apply::ApplyError> {
        self.inner.status(unit)
    }
}

#[test]
fn restarts_take_the_role_lease_one_node_at_a_time() {
    use kraftops_agent::coordinator::{Coordinator, SystemClock};
    use kraftops_agent::daemon::reconcile::Reconciler;
    use kraftops_agent::daemon::state::Trigger;

    let tmp = tempfile::tempdir().expect("tempdir");
    let (remote, work) = repository(tmp.path());
    // Short leases: the coordinator grants none for one TTL after it starts.
    let text = std::fs::read_to_string(work.join("cluster.yaml")).expect("read");
    std::fs::write(
        work.join("cluster.yaml"),
        text.replace("lease_ttl: 15m", "lease_ttl: 2s"),
    )
    .expect("write");
    git(&work, &["commit", "-q", "-am", "short leases"]);
    git(
        &work,
        &["push", "-q", remote.to_str().expect("utf8"), "HEAD:main"],
    );

    // The coordinator, in process, on a real port.
    let model = desired_state::load_dir(&work).unwrap_or_else(|d| panic!("{d}"));
    let identity = desired_state::Identity::parse(
        &std::fs::read_to_string(example().with_file_name("seed.example-only.age-identity"))
            .expect("identity"),
    )
    .expect("parses");
    let (view, signer) =
        kraftops_agent::coordinator::service::signer_and_view(&model, &identity).expect("view");
    let coordinator = Coordinator::new(view, signer, std::sync::Arc::new(SystemClock), None);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let stop = tokio_util::sync::CancellationToken::new();
    runtime.spawn(kraftops_agent::coordinator::serve(
        listener,
        coordinator.clone(),
        stop.clone(),
    ));

    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut reconcilers = Vec::new();
    for node in ["broker-1", "broker-2", "broker-3"] {
        let root = tmp.path().join(node);
        provision(&root, node);
        let config = kraftops_agent::config::AgentConfig::parse(
            Path::new("agent.yaml"),
            &agent_config(node, &root, &remote, free_port(), &url),
        )
        .expect("config");
        let services = std::sync::Arc::new(SlowRestarts {
            inner: kraftops_agent::apply::RecordingServiceManager::new(),
            node: node.to_owned(),
            log: log.clone(),
        });
        let mut r = Reconciler::with_services(config, services).expect("reconciler");
        let first = r.reconcile(&Trigger::Timer, &|_| {});
        assert_eq!(first.phase, Phase::Converged, "{node}: {first:?}");
        reconcilers.push(r);
    }
    assert!(
        log.lock().expect("log").is_empty(),
        "a first apply starts services; it restarts nothing"
    );

    // A setting that needs a broker restart.
    let text = std::fs::read_to_string(work.join("cluster.yaml")).expect("read");
    std::fs::write(
        work.join("cluster.yaml"),
        text.replace("num.io.threads: 16", "num.io.threads: 8"),
    )
    .expect("write");
    git(&work, &["commit", "-q", "-am", "fewer io threads"]);
    git(
        &work,
        &["push", "-q", remote.to_str().expect("utf8"), "HEAD:main"],
    );

    let outcomes: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = reconcilers
            .iter_mut()
            .map(|r| scope.spawn(move || r.reconcile(&Trigger::Nudge, &|_| {})))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("no panic"))
            .collect()
    });
    for o in &outcomes {
        assert_eq!(o.phase, Phase::Converged, "{o:?}");
        assert_eq!(o.restarts, 1, "{o:?}");
    }
    let mut restarts = log.lock().expect("log").clone();
    assert_eq!(restarts.len(), 3, "{restarts:?}");
    restarts.sort_by_key(|(_, begun, _)| *begun);
    for pair in restarts.windows(2) {
        assert!(
            pair[1].1 >= pair[0].2,
            "{} restarted while {} was still restarting",
            pair[1].0,
            pair[0].0
        );
    }
    assert!(
        coordinator.leases().is_empty(),
        "every lease was released: {:?}",
        coordinator.leases()
    );
    stop.cancel();
}

#[test]
fn unsigned_commits_are_refused_and_an_unreachable_remote_keeps_the_last_good_revision() {
    use kraftops_agent::daemon::reconcile::Reconciler;
    use kraftops_agent::daemon::state::Trigger;

    let tmp = tempfile::tempdir().expect("tempdir");
    let (remote, work) = repository(tmp.path());
    let key = tmp.path().join("signing-key");
    let keygen = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "ops@example",
            "-f",
            key.to_str().expect("utf8"),
        ])
        .status()
        .unwrap_or_else(|e| panic!("ssh-keygen is needed (Debian package openssh-client): {e}"));
    assert!(keygen.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("public key");
    let signed_commit = |message: &str| {
        git(
            &work,
            &[
                "-c",
                "gpg.format=ssh",
                "-c",
                &format!("user.signingkey={}", key.display()),
                "commit",
                "-q",
                "-S",
                "--allow-empty",
                "-m",
                message,
            ],
        );
        git(
            &work,
            &["push", "-q", remote.to_str().expect("utf8"), "HEAD:main"],
        );
        git(&work, &["rev-parse", "HEAD"])
    };

    // observability-1 needs no certificate, so no coordinator is involved.
    let node = "observability-1";
    let root = tmp.path().join(node);
    provision(&root, node);
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nprometheus:x:0:0::/:/bin/false\ngrafana:x:0:0::/:/bin/false\n",
    )
    .expect("passwd");
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\nprometheus:x:0:\ngrafana:x:0:\n",
    )
    .expect("group");
    let text = format!(
        "node: {node}\nrepository:\n  url: file://{}\n  branch: main\nidentity_file: /etc/kraftops/age-identity\nlisten: 127.0.0.1:{}\nroot: {}\nservice_manager: none\ntrusted_signers:\n  - {}\n",
        remote.display(),
        free_port(),
        root.display(),
        public.trim()
    );
    let config =
        kraftops_agent::config::AgentConfig::parse(Path::new("agent.yaml"), &text).expect("config");
    let mut r = Reconciler::new(config).expect("reconciler");
    let prometheus_yml = root.join("etc/prometheus/prometheus.yml");

    // The repository's first commit is unsigned: refused, nothing applied.
    let o = r.reconcile(&Trigger::Timer, &|_| {});
    assert_eq!(o.phase, Phase::Refused, "{o:?}");
    assert!(
        o.error
            .as_ref()
            .is_some_and(|e| e.message.contains("not signed") || e.message.contains("unsigned")),
        "{o:?}"
    );
    assert!(o.revision_applied.is_none(), "{o:?}");
    assert!(
        !prometheus_yml.exists(),
        "an unsigned commit must change nothing"
    );

    // A signed commit is applied, and its signer reported.
    let good = signed_commit("signed by ops");
    let o = r.reconcile(&Trigger::Timer, &|_| {});
    assert_eq!(o.phase, Phase::Converged, "{o:?}");
    assert_eq!(o.revision_applied.as_deref(), Some(good.as_str()));
    assert!(
        o.signer
            .as_deref()
            .is_some_and(|s| s.starts_with("ssh-ed25519 SHA256:") && s.ends_with("ops@example")),
        "{o:?}"
    );
    assert!(prometheus_yml.is_file());

    // An unsigned commit on top is refused; the signed one stays.
    git(&work, &["commit", "-q", "--allow-empty", "-m", "unsigned"]);
    git(
        &work,
        &["push", "-q", remote.to_str().expect("utf8"), "HEAD:main"],
    );
    let o = r.reconcile(&Trigger::Timer, &|_| {});
    assert_eq!(o.phase, Phase::Refused, "{o:?}");
    assert_eq!(o.revision_applied.as_deref(), Some(good.as_str()));

    // The remote disappears: the node keeps its revision and repairs drift offline.
    let moved = tmp.path().join("remote.git.away");
    std::fs::rename(&remote, &moved).expect("move the remote away");
    std::fs::write(&prometheus_yml, "hand edit\n").expect("edit");
    let o = r.reconcile(&Trigger::Timer, &|_| {});
    assert_eq!(o.phase, Phase::RepoUnreachable, "{o:?}");
    assert_eq!(o.revision_applied.as_deref(), Some(good.as_str()));
    assert_ne!(
        std::fs::read_to_string(&prometheus_yml).expect("read"),
        "hand edit\n",
        "drift repaired while the remote is gone"
    );

    // It returns: a new signed commit is applied.
    std::fs::rename(&moved, &remote).expect("move it back");
    let newer = signed_commit("signed again");
    let o = r.reconcile(&Trigger::Timer, &|_| {});
    assert_eq!(o.phase, Phase::Converged, "{o:?}");
    assert_eq!(o.revision_applied.as_deref(), Some(newer.as_str()));
}

/// Systemd as a node sees it when a setting keeps Kafka from starting:
/// after a restart, `kafka.service` is active only if the node's
/// `server.properties` does not hold `bad`.
#[derive(Debug)]
struct BreaksOn {
    inner: kraftops_agent::apply::RecordingServiceManager,
    root: PathBuf,
    bad: &'static str,
}

impl kraftops_agent::apply::ServiceManager for BreaksOn {
    fn daemon_reload(&self) -> Result<(), kraftops_agent::apply::ApplyError> {
        self.inner.daemon_reload()
    }
    fn enable(&self, unit: &str) -> Result<(), kraftops_agent::apply::ApplyError> {
        self.inner.enable(unit)
    }
    fn start(&self, unit: &str) -> Result<(), kraftops_agent::apply::ApplyError> {
        self.inner.start(unit)
    }
    fn stop(&self, unit: &str) -> Result<(), kraftops_agent::apply::ApplyError> {
        self.inner.stop(unit)
    }
    fn restart(&self, unit: &str) -> Result<(), kraftops_agent::apply::ApplyError> {
        self.inner.restart(unit)?;
        if unit == "kafka.service" {
            let props = std::fs::read_to_string(self.root.join("etc/kafka/server.properties"))
                .unwrap_or_default();
            let state = if props.contains(self.bad) {
                "activating"
            } else {
                "active"
            };
            self.inner.set_active_state(unit, state);
        }
        Ok(())
    }
    fn reload(&self, unit: &str) -> Result<(), kraftops_agent::apply::ApplyError> {
        self.inner.reload(unit)
    }
    fn mask(&self, unit: &str) -> Result<(), kraftops_agent::apply::ApplyError> {
        self.inner.mask(unit)
    }
    fn disable(&self, unit: &str) -> Result<(), kraftops_agent::apply::ApplyError> {
        self.inner.disable(unit)
    }
    fn status(
        &self,
        unit: &str,
    ) -> Result<kraftops_agent::protocol::UnitStatus, kraftops_agent::apply::ApplyError> {
        self.inner.status(unit)
    }
}

#[test]
fn a_node_that_does_not_come_back_is_rolled_back_and_the_rollout_halts() {
    use kraftops_agent::coordinator::{Coordinator, SystemClock};
    use kraftops_agent::daemon::client::LeaseAnswer;
    use kraftops_agent::daemon::reconcile::Reconciler;
    use kraftops_agent::daemon::state::Trigger;

    let tmp = tempfile::tempdir().expect("tempdir");
    let (remote, work) = repository(tmp.path());
    let publish = |message: &str, edit: &dyn Fn(String) -> String| {
        let path = work.join("cluster.yaml");
        let text = std::fs::read_to_string(&path).expect("read");
        std::fs::write(&path, edit(text)).expect("write");
        git(&work, &["commit", "-q", "-am", message]);
        git(
            &work,
            &["push", "-q", remote.to_str().expect("utf8"), "HEAD:main"],
        );
        git(&work, &["rev-parse", "HEAD"]).trim().to_owned()
    };
    // A health timeout of 2 s, no bake time; short leases (a coordinator
    // grants none for one TTL after it starts).
    let good = publish("quick rollout", &|t| {
        t.replace("health_timeout: 10m", "health_timeout: 2s")
            .replace("cooldown: 30s", "cooldown: 0s")
            .replace("lease_ttl: 15m", "lease_ttl: 2s")
    });

    let model = desired_state::load_dir(&work).unwrap_or_else(|d| panic!("{d}"));
    let identity = desired_state::Identity::parse(
        &std::fs::read_to_string(example().with_file_name("seed.example-only.age-identity"))
            .expect("identity"),
    )
    .expect("parses");
    let (view, signer) =
        kraftops_agent::coordinator::service::signer_and_view(&model, &identity).expect("view");
    let coordinator = Coordinator::new(view, signer, std::sync::Arc::new(SystemClock), None);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let stop = tokio_util::sync::CancellationToken::new();
    runtime.spawn(kraftops_agent::coordinator::serve(
        listener,
        coordinator.clone(),
        stop.clone(),
    ));

    let root = tmp.path().join("broker-1");
    provision(&root, "broker-1");
    let config = kraftops_agent::config::AgentConfig::parse(
        Path::new("agent.yaml"),
        &agent_config("broker-1", &root, &remote, free_port(), &url),
    )
    .expect("config");
    let services = std::sync::Arc::new(BreaksOn {
        inner: kraftops_agent::apply::RecordingServiceManager::new(),
        root: root.clone(),
        bad: "num.io.threads=1\n",
    });
    let mut r = Reconciler::with_services(config, services.clone()).expect("reconciler");
    let first = r.reconcile(&Trigger::Timer, &|_| {});
    assert_eq!(first.phase, Phase::Converged, "{first:?}");
    assert_eq!(first.revision_applied.as_deref(), Some(good.as_str()));

    // A setting the broker cannot come back with.
    let bad = publish("one io thread", &|t| {
        t.replace("num.io.threads: 16", "num.io.threads: 1")
    });
    services.inner.take_calls();
    let failed = r.reconcile(&Trigger::Nudge, &|_| {});
    assert_eq!(failed.phase, Phase::Failed, "{failed:?}");
    let message = failed.error.as_ref().expect("an error").message.clone();
    assert!(
        message.starts_with("kafka.service not healthy")
            && message.contains("kafka.service is not active")
            && message.ends_with(&format!("; rolled back to {good}")),
        "{message}"
    );
    assert_eq!(
        failed.revision_applied.as_deref(),
        Some(good.as_str()),
        "the node runs the last good commit again"
    );
    let props =
        std::fs::read_to_string(root.join("etc/kafka/server.properties")).expect("properties");
    assert!(props.contains("num.io.threads=16\n"), "{props}");
    let restarts: Vec<_> = services
        .inner
        .take_calls()
        .into_iter()
        .filter(
            |c| matches!(c, kraftops_agent::apply::ServiceCall::Restart(u) if u == "kafka.service"),
        )
        .collect();
    assert_eq!(
        restarts.len(),
        2,
        "the bad commit's restart, then the rollback's"
    );
    let record = failed.restart_log.last().expect("a restart record");
    assert_eq!(record.outcome, "rolled_back");
    assert_eq!(record.revision.as_deref(), Some(bad.as_str()));

    // The rollout halts with the lease held: no other broker may restart.
    let leases = coordinator.leases();
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert_eq!(leases[0].holder, "broker-1");
    let halt = leases[0].halted.as_ref().expect("halted");
    assert_eq!(halt.reason, message);
    let other = kraftops_agent::daemon::client::CoordinatorClient::new(&url, "broker-2", &{
        let name = desired_state::types::Name::try_from("join-token-broker-2").expect("name");
        model
            .decrypt(&name, &identity)
            .expect("token")
            .expose()
            .to_owned()
    });
    match other.acquire("broker", 60, Some(&bad)).expect("answered") {
        LeaseAnswer::Busy(why) => {
            assert!(why.contains("halted") && why.contains("broker-1"), "{why}")
        }
        LeaseAnswer::Granted(l) => panic!("granted during a halt: {l:?}"),
    }

    // The failed commit is not tried again; the failure stays reported.
    let again = r.reconcile(&Trigger::Timer, &|_| {});
    assert_eq!(again.phase, Phase::Failed, "{again:?}");
    assert_eq!(
        again.error.as_ref().map(|e| e.message.clone()),
        Some(message.clone())
    );
    assert_eq!(again.revision_applied.as_deref(), Some(good.as_str()));
    assert!(
        !services
            .inner
            .take_calls()
            .iter()
            .any(|c| matches!(c, kraftops_agent::apply::ServiceCall::Restart(_))),
        "nothing restarts for a commit that failed"
    );

    // An operator resumes the rollout from any node (`kraftops-agent
    // resume`, with that node's credentials): the halt and its lease are
    // gone, the next broker may restart.
    let agent_yaml = tmp.path().join("broker-1.agent.yaml");
    std::fs::write(
        &agent_yaml,
        agent_config("broker-1", &root, &remote, free_port(), &url),
    )
    .expect("agent.yaml");
    let resumed = kraftops_agent::cli::run(
        [
            "kraftops-agent",
            "resume",
            "--config",
            agent_yaml.to_str().expect("utf8"),
        ]
        .map(std::ffi::OsString::from),
    )
    .expect("resume runs");
    assert_eq!(resumed, std::process::ExitCode::SUCCESS);
    assert!(
        coordinator.leases().is_empty(),
        "{:?}",
        coordinator.leases()
    );
    match other.acquire("broker", 60, Some(&bad)).expect("answered") {
        LeaseAnswer::Granted(l) => other.release(&l).expect("released"),
        LeaseAnswer::Busy(why) => panic!("still refused after the resume: {why}"),
    }

    // A new commit (the fix) is applied: nothing to restart, converged.
    let fix = publish("back to 16 io threads", &|t| {
        t.replace("num.io.threads: 1\n", "num.io.threads: 16\n")
    });
    let fixed = r.reconcile(&Trigger::Nudge, &|_| {});
    assert_eq!(fixed.phase, Phase::Converged, "{fixed:?}");
    assert_eq!(fixed.revision_applied.as_deref(), Some(fix.as_str()));
    stop.cancel();
}

#[test]
fn a_commit_changing_the_inter_broker_password_in_place_is_refused_and_restarts_nothing() {
    use kraftops_agent::apply::ServiceCall;
    use kraftops_agent::coordinator::{Coordinator, SystemClock};
    use kraftops_agent::daemon::reconcile::Reconciler;
    use kraftops_agent::daemon::state::Trigger;

    let tmp = tempfile::tempdir().expect("tempdir");
    let (remote, work) = repository(tmp.path());
    let good = git(&work, &["rev-parse", "HEAD"]);
    let identity = desired_state::Identity::parse(
        &std::fs::read_to_string(example().with_file_name("seed.example-only.age-identity"))
            .expect("identity"),
    )
    .expect("parses");
    // A secret of the repository, encrypted anew as an operator would.
    let publish_secret = |changes: &[(&str, &str)], message: &str| {
        for (name, value) in changes {
            let file = format!("secrets/{name}.age");
            let secret =
                desired_state::EncryptedSecret::encrypt(&file, value, &identity.recipients())
                    .expect("encrypts");
            std::fs::write(work.join(&file), secret.ciphertext()).expect("write");
        }
        git(&work, &["commit", "-q", "-am", message]);
        git(
            &work,
            &["push", "-q", remote.to_str().expect("utf8"), "HEAD:main"],
        );
        git(&work, &["rev-parse", "HEAD"])
    };

    // The coordinator, in process, for the broker's certificate.
    let model = desired_state::load_dir(&work).unwrap_or_else(|d| panic!("{d}"));
    let broker_password = {
        let user = model
            .users
            .iter()
            .find(|u| u.name.as_str() == "broker")
            .expect("the inter-broker user");
        model
            .decrypt(&user.password_secret, &identity)
            .expect("decrypts")
            .expose()
            .to_owned()
    };
    let (view, signer) =
        kraftops_agent::coordinator::service::signer_and_view(&model, &identity).expect("view");
    let coordinator = Coordinator::new(view, signer, std::sync::Arc::new(SystemClock), None);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let stop = tokio_util::sync::CancellationToken::new();
    runtime.spawn(kraftops_agent::coordinator::serve(
        listener,
        coordinator.clone(),
        stop.clone(),
    ));

    let root = tmp.path().join("broker-1");
    provision(&root, "broker-1");
    let config = || {
        kraftops_agent::config::AgentConfig::parse(
            Path::new("agent.yaml"),
            &agent_config("broker-1", &root, &remote, free_port(), &url),
        )
        .expect("config")
    };
    let services = std::sync::Arc::new(kraftops_agent::apply::RecordingServiceManager::new());
    let mut r = Reconciler::with_services(config(), services.clone()).expect("reconciler");
    let first = r.reconcile(&Trigger::Timer, &|_| {});
    assert_eq!(first.phase, Phase::Converged, "{first:?}");
    let secrets_file = root.join("etc/kafka/secrets.properties");
    let before = std::fs::read(&secrets_file).expect("secrets.properties");
    services.take_calls();

    // The inter-broker user's password changed in place: refused with the
    // users/ file's position and the procedure; nothing written or restarted.
    let users = std::fs::read_to_string(work.join("users/platform.yaml")).expect("users");
    let offset = users.find("broker-password").expect("the secret");
    let line = users[..offset].matches('\n').count() + 1;
    let column = offset - users[..offset].rfind('\n').map_or(0, |i| i + 1) + 1;
    let bad = publish_secret(
        &[("broker-password", "a-new-inter-broker-password")],
        "rotate the inter-broker password",
    );
    let assert_refused = |o: &kraftops_agent::daemon::reconcile::Outcome, who: &str| {
        assert_eq!(o.phase, Phase::Refused, "{who}: {o:?}");
        assert_eq!(o.revision_seen.as_deref(), Some(bad.as_str()), "{who}");
        assert_eq!(o.revision_applied.as_deref(), Some(good.as_str()), "{who}");
        let error = o.error.as_ref().expect("an error");
        assert_eq!(error.commit.as_deref(), Some(bad.as_str()), "{who}");
        assert!(
            error.message.starts_with("refused: 1 change(s)"),
            "{who}: {error:?}"
        );
        assert_eq!(error.problems.len(), 1, "{who}: {error:?}");
        let p = &error.problems[0];
        assert!(
            p.starts_with(&format!("users/platform.yaml:{line}:{column}: the password of user broker, the security.inter_broker_user, changes in place (secrets/broker-password.age)")),
            "{who}: {p}"
        );
        assert!(
            p.contains("point security.inter_broker_user at the new user"),
            "{who}: {p}"
        );
        assert!(
            !p.contains("a-new-inter-broker-password"),
            "{who}: a secret in {p}"
        );
        assert_eq!(
            std::fs::read(&secrets_file).expect("secrets.properties"),
            before,
            "{who}: the broker's password file is untouched"
        );
        let restarts: Vec<_> = services
            .take_calls()
            .into_iter()
            .filter(|c| matches!(c, ServiceCall::Restart(_) | ServiceCall::Stop(_)))
            .collect();
        assert!(restarts.is_empty(), "{who}: {restarts:?}");
    };
    let o = r.reconcile(&Trigger::Nudge, &|_| {});
    assert_refused(&o, "the running agent");
    // An agent started afresh loads the applied commit to compare with.
    drop(r);
    let mut r = Reconciler::with_services(config(), services.clone()).expect("reconciler");
    let o = r.reconcile(&Trigger::Timer, &|_| {});
    assert_refused(&o, "a restarted agent");
    assert!(
        !String::from_utf8_lossy(&before).contains("a-new-inter-broker-password"),
        "the new password never reached the node"
    );

    // The password put back, and a client's password rotated: applied, and
    // still nothing to restart (no broker file holds the client's).
    let fixed = publish_secret(
        &[
            ("broker-password", &broker_password),
            ("client-password", "a-new-client-password"),
        ],
        "put the inter-broker password back; rotate the client's",
    );
    let o = r.reconcile(&Trigger::Nudge, &|_| {});
    assert_eq!(o.phase, Phase::Converged, "{o:?}");
    assert_eq!(o.revision_applied.as_deref(), Some(fixed.as_str()));
    assert_eq!(
        std::fs::read(&secrets_file).expect("secrets.properties"),
        before
    );
    assert!(
        !services
            .take_calls()
            .iter()
            .any(|c| matches!(c, ServiceCall::Restart(_))),
        "nothing restarts"
    );
    stop.cancel();
}
