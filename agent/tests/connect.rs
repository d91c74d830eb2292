//! The connector reconciler against a real Apache Kafka and a real Kafka
//! Connect worker (distributed mode), both from the distribution
//! `scripts/kafka-dist` assembles: one KRaft node over PLAINTEXT on
//! 127.0.0.1, Connect's internal topics at RF 1. The FileStream connectors
//! are, as in Apache's tarball, kept off the classpath, so the worker's
//! `plugin.path` names `libs/connect-file-*.jar`.
//!
//! One test walks the whole life of connectors: created in their declared
//! state (records checked with `kafka-console-consumer.sh`), updated,
//! paused, an unknown class refused with its location and nothing created,
//! deleted when git drops them, and a failing task restarted on the backoff
//! schedule with the clock injected, then forgotten once healthy.
//!
//! Needs Java (`scripts/install-deps`); a missing piece fails the test.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use desired_state::InFile;
use desired_state::model::{Connector, ConnectorsFile};
use kraftops_agent::connect::{
    ConnectApi, ConnectClient, ConnectConfig, ConnectorStatus, ConnectorsReport, HEALTHY_RESET,
    RestartMemory, WorkerState, reconcile,
};

/// What the test saw goes to stderr, which `cargo test -- --nocapture` shows.
macro_rules! report {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

const SOURCE: &str = "org.apache.kafka.connect.file.FileStreamSourceConnector";
const SINK: &str = "org.apache.kafka.connect.file.FileStreamSinkConnector";
/// The injected clock's start (Unix seconds).
const T0: u64 = 1_000_000;

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

/// Kafka and a Connect worker, killed (Connect first) when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    home: PathBuf,
    kafka: Child,
    connect: Option<Child>,
    bootstrap: String,
    connect_url: String,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut connect) = self.connect.take() {
            let _ = connect.kill();
            let _ = connect.wait();
        }
        let _ = self.kafka.kill();
        let _ = self.kafka.wait();
    }
}

impl Cluster {
    fn start() -> Cluster {
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
            .find(|p| p.join("bin/connect-distributed.sh").exists())
            .expect("the unpacked distribution");
        let connect_file = std::fs::read_dir(home.join("libs"))
            .expect("libs")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("connect-file-") && n.ends_with(".jar"))
            })
            .expect("libs/connect-file-*.jar in the distribution");

        let (broker_port, controller_port, rest_port) = (free_port(), free_port(), free_port());
        let bootstrap = format!("127.0.0.1:{broker_port}");
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            path
        };
        let server = write(
            "server.properties",
            &format!(
                "process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://{bootstrap},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://{bootstrap}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs={data}
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
",
                data = dir.path().join("data").display()
            ),
        );
        let worker = write(
            "connect.properties",
            &format!(
                "bootstrap.servers={bootstrap}
group.id=kraftops-connect-test
key.converter=org.apache.kafka.connect.storage.StringConverter
value.converter=org.apache.kafka.connect.storage.StringConverter
config.storage.topic=connect-configs
offset.storage.topic=connect-offsets
status.storage.topic=connect-status
config.storage.replication.factor=1
offset.storage.replication.factor=1
status.storage.replication.factor=1
listeners=http://127.0.0.1:{rest_port}
rest.advertised.host.name=127.0.0.1
rest.advertised.port={rest_port}
plugin.path={connect_file}
plugin.discovery=service_load
offset.flush.interval.ms=1000
scheduled.rebalance.max.delay.ms=0
",
                connect_file = connect_file.display()
            ),
        );
        let script = |name: &str, logs: &str| {
            let mut cmd = Command::new(home.join("bin").join(name));
            cmd.env("KAFKA_HEAP_OPTS", "-Xmx256m -Xms256m")
                .env("LOG_DIR", dir.path().join(logs))
                .stdin(Stdio::null());
            cmd
        };
        let out = script("kafka-storage.sh", "logs")
            .arg("random-uuid")
            .output()
            .expect("kafka-storage.sh random-uuid (is Java installed? scripts/install-deps)");
        assert!(out.status.success(), "random-uuid: {out:?}");
        let cluster_id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let out = script("kafka-storage.sh", "logs")
            .args(["format", "-t", &cluster_id, "-c"])
            .arg(&server)
            .output()
            .expect("kafka-storage.sh format");
        assert!(out.status.success(), "format: {out:?}");
        let console = |name: &str| {
            let file = std::fs::File::create(dir.path().join(name)).expect("console log");
            (file.try_clone().expect("clone"), file)
        };
        let (out, err) = console("kafka.console.log");
        let kafka = script("kafka-server-start.sh", "logs")
            .arg(&server)
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("kafka-server-start.sh");
        let (out, err) = console("connect.console.log");
        let connect = script("connect-distributed.sh", "connect-logs")
            .arg(&worker)
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("connect-distributed.sh");
        Cluster {
            dir,
            home,
            kafka,
            connect: Some(connect),
            bootstrap,
            connect_url: format!("http://127.0.0.1:{rest_port}"),
        }
    }

    fn client(&self) -> ConnectClient {
        ConnectClient::new(ConnectConfig {
            url: self.connect_url.clone(),
            ca_pem: None,
            auth: None,
            timeout: Duration::from_secs(30),
        })
        .expect("Connect client")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log_tail(&self) -> String {
        let mut out = String::new();
        for name in [
            "kafka.console.log",
            "connect.console.log",
            "connect-logs/connect.log",
        ] {
            let text = std::fs::read_to_string(self.path(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(30);
            out.push_str(&format!(
                "--- {name} (last 30 lines)\n{}\n",
                lines[from..].join("\n")
            ));
        }
        out
    }

    /// Polls `f` until it returns `Some`, for at most `limit`.
    fn wait_for<T>(&self, what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// How often the worker logged the sink's task failing.
    fn sink_failures(&self) -> usize {
        std::fs::read_to_string(self.path("connect-logs/connect.log"))
            .unwrap_or_default()
            .matches("WorkerSinkTask{id=sink-0} Task threw an uncaught and unrecoverable exception")
            .count()
    }

    /// `n` records of `topic` from the beginning, with Kafka's own consumer.
    fn consume(&self, topic: &str, n: usize) -> Vec<String> {
        let out = Command::new(self.home.join("bin/kafka-console-consumer.sh"))
            .env("KAFKA_HEAP_OPTS", "-Xmx128m")
            .env("LOG_DIR", self.path("tool-logs"))
            .args(["--bootstrap-server", &self.bootstrap, "--topic", topic])
            .args(["--from-beginning", "--timeout-ms", "30000"])
            .args(["--max-messages", &n.to_string()])
            .stdin(Stdio::null())
            .output()
            .expect("kafka-console-consumer.sh");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn status_where(
        &self,
        client: &ConnectClient,
        name: &str,
        what: &str,
        pred: impl Fn(&ConnectorStatus) -> bool,
    ) -> ConnectorStatus {
        self.wait_for(&format!("{name}: {what}"), Duration::from_secs(60), || {
            client.status(name).ok().filter(|s| pred(s))
        })
    }
}

/// A `connectors/*.yaml` file parsed as the loader parses it.
fn declare(yaml: &str) -> Vec<InFile<Connector>> {
    let file: ConnectorsFile = serde_saphyr::from_str(yaml).expect("connectors yaml");
    file.connectors
        .into_iter()
        .map(|item| InFile {
            file: "connectors/test.yaml".to_owned(),
            item,
        })
        .collect()
}

fn source_yaml(name: &str, state: &str, file: &Path, topic: &str) -> String {
    format!(
        "  - name: {name}
    state: {state}
    config:
      connector.class: {SOURCE}
      tasks.max: 1
      file: {file}
      topic: {topic}
",
        file = file.display()
    )
}

fn actions(report: &ConnectorsReport) -> BTreeMap<String, String> {
    report
        .connectors
        .iter()
        .filter_map(|c| Some((c.name.clone(), c.last_action.clone()?)))
        .collect()
}

fn no_errors(report: &ConnectorsReport) {
    assert_eq!(report.error, None, "{report:#?}");
    for c in &report.connectors {
        assert_eq!(c.error, None, "{}: {report:#?}", c.name);
    }
}

fn running_with_tasks(s: &ConnectorStatus) -> bool {
    s.connector.state == WorkerState::Running
        && !s.tasks.is_empty()
        && s.tasks.iter().all(|t| t.state == WorkerState::Running)
}

#[test]
fn connectors_follow_their_declarations_in_a_real_connect_cluster() {
    let started = Instant::now();
    let cluster = Cluster::start();
    let client = cluster.client();
    let plugins = cluster.wait_for("Connect's REST API", Duration::from_secs(90), || {
        client.plugins().ok()
    });
    let classes: Vec<&str> = plugins.iter().map(|p| p.class.as_str()).collect();
    report!("connector plugins: {classes:?}");
    assert!(
        classes.contains(&SOURCE) && classes.contains(&SINK),
        "{classes:?}"
    );
    cluster.wait_for(
        "Connect to list connectors",
        Duration::from_secs(60),
        || client.list().ok(),
    );
    report!("Kafka and Connect up after {:?}", started.elapsed());
    let mut memory = RestartMemory::default();

    // 1. Declared running and stopped: created so (KIP-980 initial state),
    //    and the source's records reach its topic.
    let input = cluster.path("input.txt");
    std::fs::write(&input, "alpha\nbeta\ngamma\n").expect("input");
    let idle_input = cluster.path("idle.txt");
    std::fs::write(&idle_input, "never read\n").expect("idle input");
    let yaml = format!(
        "connectors:\n{}{}",
        source_yaml("src", "running", &input, "src-one"),
        source_yaml("idle", "stopped", &idle_input, "idle-topic"),
    );
    let r = reconcile(&client, &declare(&yaml), &mut memory, T0);
    no_errors(&r);
    assert_eq!(
        actions(&r),
        BTreeMap::from([
            ("idle".to_owned(), "created STOPPED".to_owned()),
            ("src".to_owned(), "created RUNNING".to_owned()),
        ])
    );
    assert_eq!(
        r.connector("src").and_then(|c| c.location.clone()),
        Some("connectors/test.yaml:2:11".to_owned())
    );
    cluster.status_where(&client, "src", "RUNNING with tasks", running_with_tasks);
    cluster.status_where(&client, "idle", "STOPPED", |s| {
        s.connector.state == WorkerState::Stopped && s.tasks.is_empty()
    });
    let records = cluster.consume("src-one", 3);
    report!("src-one: {records:?}");
    assert_eq!(records, ["alpha", "beta", "gamma"]);

    // Converged: the next round does nothing.
    let r = reconcile(&client, &declare(&yaml), &mut memory, T0 + 10);
    no_errors(&r);
    assert_eq!(actions(&r), BTreeMap::new());
    let src = r.connector("src").expect("src reported");
    assert_eq!(src.state.as_deref(), Some("RUNNING"));
    assert_eq!(src.tasks.len(), 1);
    assert!(src.worker.as_deref().is_some_and(|w| !w.is_empty()));

    // 2. A changed config is applied: new lines go to the new topic.
    let yaml = format!(
        "connectors:\n{}",
        source_yaml("src", "running", &input, "src-two")
    );
    let r = reconcile(&client, &declare(&yaml), &mut memory, T0 + 20);
    no_errors(&r);
    assert_eq!(
        actions(&r),
        BTreeMap::from([
            (
                "idle".to_owned(),
                "deleted (not declared in git)".to_owned()
            ),
            ("src".to_owned(), "config updated (topic)".to_owned()),
        ])
    );
    assert_eq!(
        client
            .config("src")
            .expect("src config")
            .get("topic")
            .map(String::as_str),
        Some("src-two")
    );
    cluster.status_where(
        &client,
        "src",
        "RUNNING with tasks after the update",
        running_with_tasks,
    );
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .expect("input");
    writeln!(file, "delta").expect("append");
    drop(file);
    let records = cluster.consume("src-two", 1);
    report!("src-two: {records:?}");
    assert_eq!(records, ["delta"]);
    let listed = client.list().expect("list");
    assert!(!listed.contains_key("idle"), "{listed:?}");

    // 3. Declared paused: paused, and left so.
    let paused = format!(
        "connectors:\n{}",
        source_yaml("src", "paused", &input, "src-two")
    );
    let r = reconcile(&client, &declare(&paused), &mut memory, T0 + 30);
    no_errors(&r);
    assert_eq!(
        actions(&r),
        BTreeMap::from([("src".to_owned(), "RUNNING -> PAUSED".to_owned())])
    );
    cluster.status_where(&client, "src", "PAUSED", |s| {
        s.connector.state == WorkerState::Paused
    });
    let r = reconcile(&client, &declare(&paused), &mut memory, T0 + 40);
    no_errors(&r);
    assert_eq!(actions(&r), BTreeMap::new());
    assert_eq!(
        r.connector("src").and_then(|c| c.state.clone()).as_deref(),
        Some("PAUSED")
    );

    // 4. A class Connect does not have: refused with the declaration's
    //    location and Connect's word, nothing created, the rest applied.
    let with_ghost = format!(
        "{paused}  - name: ghost
    config:
      connector.class: com.example.NoSuchConnector
      topic: ghost
"
    );
    let r = reconcile(&client, &declare(&with_ghost), &mut memory, T0 + 50);
    assert_eq!(r.error, None);
    let ghost = r.connector("ghost").expect("ghost reported");
    report!("ghost: {ghost:#?}");
    assert_eq!(ghost.location.as_deref(), Some("connectors/test.yaml:9:11"));
    let refusal = ghost.refusal.clone().expect("ghost refused");
    assert!(
        refusal[0].contains("\"com.example.NoSuchConnector\" is not installed")
            && refusal[0].contains(SOURCE),
        "{refusal:?}"
    );
    assert!(
        refusal
            .iter()
            .any(|p| p.starts_with("Connect: ") && p.contains("com.example.NoSuchConnector")),
        "{refusal:?}"
    );
    assert_eq!(ghost.state, None);
    assert_eq!(actions(&r), BTreeMap::new());
    let listed = client.list().expect("list");
    assert_eq!(listed.keys().collect::<Vec<_>>(), ["src"]);

    // 5. Dropped from git: deleted.
    let r = reconcile(&client, &[], &mut memory, T0 + 60);
    no_errors(&r);
    assert_eq!(
        actions(&r),
        BTreeMap::from([("src".to_owned(), "deleted (not declared in git)".to_owned())])
    );
    cluster.wait_for("src to be gone", Duration::from_secs(30), || {
        client.list().ok().filter(|l| l.is_empty())
    });

    // 6. A sink whose task fails (its file's directory is missing) is
    //    restarted at once, then not before its backoff (2 minutes), then
    //    again; with the directory made, the restart brings it back.
    let out_dir = cluster.path("sink-out");
    let sink_yaml = format!(
        "connectors:
  - name: sink
    config:
      connector.class: {SINK}
      tasks.max: 1
      topics: src-one
      file: {file}
",
        file = out_dir.join("out.txt").display()
    );
    let t = T0 + 1000;
    let r = reconcile(&client, &declare(&sink_yaml), &mut memory, t);
    no_errors(&r);
    assert_eq!(
        actions(&r),
        BTreeMap::from([("sink".to_owned(), "created RUNNING".to_owned())])
    );
    let failed = |s: &ConnectorStatus| s.tasks.iter().any(|task| task.state == WorkerState::Failed);
    cluster.status_where(&client, "sink", "a FAILED task", failed);
    assert_eq!(cluster.sink_failures(), 1);

    let r = reconcile(&client, &declare(&sink_yaml), &mut memory, t + 1);
    no_errors(&r);
    assert_eq!(
        actions(&r),
        BTreeMap::from([("sink".to_owned(), "restart 1 of failed task 0".to_owned())])
    );
    let sink = r.connector("sink").expect("sink reported");
    assert_eq!(
        (sink.restarts, sink.next_restart_at),
        (1, Some(t + 1 + 120))
    );
    // Connect really restarted it: the worker logs a second failure.
    cluster.wait_for(
        "the restarted task to fail again",
        Duration::from_secs(60),
        || (cluster.sink_failures() == 2).then_some(()),
    );
    // Still failing (the directory is still missing) and not due yet: the
    // rounds until the status shows that restart nothing.
    let r = cluster.wait_for("sink's task FAILED again", Duration::from_secs(60), || {
        let r = reconcile(&client, &declare(&sink_yaml), &mut memory, t + 1 + 119);
        no_errors(&r);
        assert_eq!(actions(&r), BTreeMap::new());
        let sink = r.connector("sink")?;
        (sink.tasks.first()?.state == "FAILED").then_some(r)
    });
    let sink = r.connector("sink").expect("sink reported");
    assert_eq!(sink.state.as_deref(), Some("RUNNING"));
    assert_eq!(sink.tasks[0].state, "FAILED");
    // The report shows why: the first line of the task's trace.
    report!("sink task trace: {:?}", sink.tasks[0].trace);
    assert!(
        sink.tasks[0]
            .trace
            .as_deref()
            .is_some_and(|l| l.contains("Couldn't find or create file")),
        "{sink:#?}"
    );
    assert_eq!(sink.restarts, 1);

    std::fs::create_dir(&out_dir).expect("the sink's directory");
    let r = reconcile(&client, &declare(&sink_yaml), &mut memory, t + 1 + 120);
    no_errors(&r);
    assert_eq!(
        actions(&r),
        BTreeMap::from([("sink".to_owned(), "restart 2 of failed task 0".to_owned())])
    );
    cluster.status_where(&client, "sink", "RUNNING after the fix", running_with_tasks);
    assert_eq!(
        cluster.sink_failures(),
        2,
        "no restart beyond the two planned"
    );
    let written = cluster.wait_for("the sink to write src-one", Duration::from_secs(60), || {
        let text = std::fs::read_to_string(out_dir.join("out.txt")).ok()?;
        (text.lines().count() >= 3).then_some(text)
    });
    assert_eq!(
        written.lines().collect::<Vec<_>>(),
        ["alpha", "beta", "gamma"]
    );

    // Healthy for HEALTHY_RESET: the restarts are forgotten.
    let healthy_from = t + 200;
    let r = reconcile(&client, &declare(&sink_yaml), &mut memory, healthy_from);
    no_errors(&r);
    assert_eq!(r.connector("sink").map(|c| c.restarts), Some(2));
    let r = reconcile(
        &client,
        &declare(&sink_yaml),
        &mut memory,
        healthy_from + HEALTHY_RESET,
    );
    no_errors(&r);
    assert_eq!(actions(&r), BTreeMap::new());
    assert_eq!(r.connector("sink").map(|c| c.restarts), Some(0));
    assert_eq!(memory.record("sink"), None);

    report!("connector test done in {:?}", started.elapsed());
}
