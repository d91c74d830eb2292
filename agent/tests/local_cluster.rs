//! End to end, real everything: `kraftops-agent local up` brings the example
//! cluster up as nine systemd-nspawn nodes (real systemd, real Apache Kafka
//! assembled from Maven Central by `scripts/kafka-dist`, Debian's
//! Prometheus, Alertmanager and node_exporter), then the test looks at it as
//! a user would: Kafka's own quorum tool, Kafka's Java clients and kcat over
//! SASL_SSL, the controller listener's mTLS, Prometheus' targets, rules and
//! every dashboard query, pushes that roll, upgrade and change topics, users,
//! ACLs and connectors, a refused invalid push, and `local down` leaving
//! nothing behind. It prints the phase timings and the memory the cluster took.
//!
//! Needs root, systemd-nspawn, Java and Maven (`scripts/install-deps`);
//! a missing piece fails the test, it never skips.

use std::io::Write as _;

/// The test's report (phase timings, what each check saw) goes to stderr,
/// which `cargo test -- --nocapture` shows.
macro_rules! report {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use desired_state::{Identity, Model, secrets::EncryptedSecret, types::Name};
use kraftops_agent::local::{ClusterState, Layout, checks};
use serde_json::{Value, json};

const STATE_DIR: &str = "/var/lib/kraftops-local-e2e";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_owned()
}

fn example() -> PathBuf {
    repo_root().join("desired-state/examples/seed")
}

fn agent(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_kraftops-agent"))
        .arg("local")
        .arg("--state-dir")
        .arg(STATE_DIR)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running kraftops-agent local");
    report!(
        "$ kraftops-agent local {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Removes the cluster however the test ends.
struct Teardown;

impl Drop for Teardown {
    fn drop(&mut self) {
        let out = agent(&["down", "--purge"]);
        assert!(
            out.status.success() || std::thread::panicking(),
            "local down failed"
        );
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `args` inside `node`, feeding `input` to stdin.
fn exec(state: &ClusterState, node: &str, args: &[&str], input: Option<&str>) -> Output {
    let mut cmd = checks::in_node(state, node, args).expect("node is running");
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if input.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("nsenter starts");
    if let Some(text) = input {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("writing stdin");
    }
    child.wait_with_output().expect("waiting for the command")
}

/// Where `scripts/install-deps` links the librdkafka that Debian's kcat
/// runs on: the 2.16 of PyPI's confluent-kafka wheel, since Debian's 2.0.2
/// fails SCRAM-SHA-512 against Kafka 4.x.
fn librdkafka_dir() -> PathBuf {
    let venv = std::env::var_os("KRAFTOPS_VENV")
        .map_or_else(|| PathBuf::from("/var/cache/kraftops/venv"), PathBuf::from);
    let dir = venv.join("librdkafka");
    assert!(
        dir.join("librdkafka.so.1").exists(),
        "{} is missing: run scripts/install-deps",
        dir.display()
    );
    dir
}

/// kcat inside broker-1 (which resolves the cluster's names) as `user`
/// over SASL_SSL/SCRAM-SHA-512, trusting the cluster CA; `root` is
/// broker-1's root directory as the host sees it. Returns stdout, stderr.
fn kcat(
    state: &ClusterState,
    root: &Path,
    (user, password): (&str, &str),
    args: &[&str],
    input: Option<&str>,
) -> (String, String) {
    let config = format!("e2e-kcat-{user}.conf");
    std::fs::write(
        root.join(&config),
        format!(
            "security.protocol=SASL_SSL\nsasl.mechanisms=SCRAM-SHA-512\nsasl.username={user}\nsasl.password={password}\nssl.ca.location=/etc/kafka/tls/ca.pem\n"
        ),
    )
    .expect("writing kcat's config");
    let library = format!("LD_LIBRARY_PATH={}", librdkafka_dir().display());
    let config = format!("/root/{config}");
    let mut all = vec![
        "env",
        library.as_str(),
        "timeout",
        "60",
        "kcat",
        "-b",
        "broker-1.kafka.internal:9092",
        "-F",
        config.as_str(),
    ];
    all.extend_from_slice(args);
    let out = exec(state, "broker-1", &all, input);
    (stdout(&out), stderr(&out))
}

/// Runs a kcat check until its output satisfies `ok`, for up to a minute
/// (30 tries two seconds apart): a change the coordinator has applied
/// reaches broker-1 through the metadata log a moment later. Fails with the
/// last output.
fn kcat_until(
    what: &str,
    mut run: impl FnMut() -> (String, String),
    ok: impl Fn(&(String, String)) -> bool,
) -> (String, String) {
    let mut last = (String::new(), String::new());
    for attempt in 0..30 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_secs(2));
        }
        last = run();
        if ok(&last) {
            return last;
        }
    }
    panic!("{what}: kcat printed\n{}{}", last.0, last.1);
}

fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn http_json(url: &str) -> Value {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
        .get(url)
        .send()
        .and_then(reqwest::blocking::Response::error_for_status)
        .and_then(reqwest::blocking::Response::json::<Value>)
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// The resident memory (MiB) of every process running inside a node of
/// the local cluster: the descendants of its `systemd-nspawn` processes.
fn cluster_rss_mib() -> u64 {
    let mut parent = std::collections::HashMap::new();
    let mut rss = std::collections::HashMap::new();
    let mut roots = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        };
        if let Some(ppid) = field("PPid:") {
            parent.insert(pid, u32::try_from(ppid).unwrap_or(0));
        }
        rss.insert(pid, field("VmRSS:").unwrap_or(0));
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.starts_with("systemd-nspawn") && cmdline.contains(STATE_DIR) {
            roots.push(pid);
        }
    }
    let in_cluster = |mut pid: u32| {
        for _ in 0..64 {
            if roots.contains(&pid) {
                return true;
            }
            match parent.get(&pid) {
                Some(&p) if p > 1 || roots.contains(&p) => pid = p,
                _ => return false,
            }
        }
        false
    };
    rss.iter()
        .filter(|(pid, _)| in_cluster(**pid))
        .map(|(_, kib)| kib)
        .sum::<u64>()
        / 1024
}

fn kafka_dist() -> (String, String) {
    kafka_dist_version(None)
}

/// `scripts/kafka-dist [--version v]`: the tarball and the JMX jar.
fn kafka_dist_version(version: Option<&str>) -> (String, String) {
    let mut command = Command::new(repo_root().join("scripts/kafka-dist"));
    if let Some(v) = version {
        command.args(["--version", v]);
    }
    let out = command
        .stdin(Stdio::null())
        .output()
        .expect("running scripts/kafka-dist");
    assert!(
        out.status.success(),
        "scripts/kafka-dist failed: {}",
        stderr(&out)
    );
    let text = stdout(&out);
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("scripts/kafka-dist printed no {key}: {text}"))
            .to_owned()
    };
    (field("KAFKA_TARBALL="), field("JMX_JAR="))
}

fn example_secret(model: &Model, name: &str) -> String {
    let identity = Identity::parse(
        &std::fs::read_to_string(
            repo_root().join("desired-state/examples/seed.example-only.age-identity"),
        )
        .expect("the example identity"),
    )
    .expect("parses");
    model
        .decrypt(&Name::try_from(name).expect("name"), &identity)
        .expect("decrypts")
        .expose()
        .to_owned()
}

/// Every `expr` of a Grafana dashboard with its variables filled in.
fn dashboard_queries(path: &Path) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("expr", Value::String(e)) => out.push(e.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let dashboard: Value =
        serde_json::from_slice(&std::fs::read(path).expect("dashboard")).expect("JSON");
    let mut raw = Vec::new();
    walk(&dashboard, &mut raw);
    raw.iter()
        .map(|q| {
            let mut q = q
                .replace("$__rate_interval", "1m")
                .replace("$__interval", "15s")
                .replace("$__range", "5m");
            // Template variables (`$node`, `$az`, …): every value.
            while let Some(i) = q.find('$') {
                let end = q[i + 1..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .map_or(q.len(), |e| i + 1 + e);
                q.replace_range(i..end, ".*");
            }
            q
        })
        .collect()
}

/// A copy of the example repository in `dir`.
fn copy_example(dir: &Path) {
    let copy = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", example().display()))
        .arg(dir)
        .status()
        .expect("cp");
    assert!(copy.success(), "copying the example");
}

/// `local push <dir>`, then waits until every agent has applied the new
/// head and converged; returns the head and the seconds it took.
fn push_and_wait(state: &ClusterState, dir: &Path, message: &str) -> (String, f64) {
    let started = Instant::now();
    let head = push(dir, message);
    wait_converged(state, &head, message);
    (head, started.elapsed().as_secs_f64())
}

/// `unit`'s last ActiveExit and ActiveEnter inside `node`: systemd's
/// CLOCK_MONOTONIC µs, one clock for every node (they share the kernel).
fn unit_times(state: &ClusterState, node: &str, unit: &str) -> (u64, u64) {
    let out = exec(
        state,
        node,
        &[
            "systemctl",
            "show",
            unit,
            "--property=ActiveExitTimestampMonotonic",
            "--property=ActiveEnterTimestampMonotonic",
        ],
        None,
    );
    let text = stdout(&out);
    let field = |key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{node}: no {key} in {text}"))
    };
    (
        field("ActiveExitTimestampMonotonic"),
        field("ActiveEnterTimestampMonotonic"),
    )
}

/// Replaces `from` by `to` in `dir/file` (which must contain it).
fn edit(dir: &Path, file: &str, from: &str, to: &str) {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).expect("reading a repository file");
    assert!(text.contains(from), "{file} has no {from:?}");
    std::fs::write(&path, text.replacen(from, to, 1)).expect("writing a repository file");
}

/// When `unit` last became active on each of `nodes` (monotonic µs).
fn started_at(
    state: &ClusterState,
    nodes: &[String],
    unit: &str,
) -> std::collections::BTreeMap<String, u64> {
    nodes
        .iter()
        .map(|n| (n.clone(), unit_times(state, n, unit).1))
        .collect()
}

/// The coordinator's rollout view.
fn rollout_view(state: &ClusterState) -> Value {
    http_json(&format!("{}/v1/rollout", state.coordinator_url))
}

/// Grants and releases of `role`'s lease from the coordinator's history
/// (oldest first), as (node, granted at, released at) in Unix seconds;
/// asserts that no two grants of the role overlapped.
fn lease_log(state: &ClusterState, role: &str, since: u64) -> Vec<(String, u64, u64)> {
    let view = rollout_view(state);
    let mut events: Vec<&Value> = view["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter(|e| e["role"] == role && e["at"].as_u64().unwrap_or(0) >= since)
        .collect();
    events.reverse();
    let mut open: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    let mut held = Vec::new();
    for e in events {
        let node = e["node"].as_str().unwrap_or_default().to_owned();
        let at = e["at"].as_u64().unwrap_or(0);
        match e["event"].as_str() {
            Some("granted") => {
                assert!(
                    open.keys().all(|n| *n == node),
                    "{node} was granted the {role} lease while {open:?} held it: {view}"
                );
                open.entry(node).or_insert(at);
            }
            Some("released" | "expired" | "cleared_by_new_commit" | "resumed") => {
                if let Some(from) = open.remove(&node) {
                    held.push((node, from, at));
                }
            }
            _ => {}
        }
    }
    held
}

/// Waits until every agent has applied `head` and converged.
/// Waits up to 20 minutes for every agent to report `head` applied and
/// converged; on timeout fails with each node's last report (phase,
/// revision, what it waits for, its error) and the coordinator's rollout.
fn wait_converged(state: &ClusterState, head: &str, what: &str) {
    let timeout = Duration::from_secs(1200);
    let deadline = Instant::now() + timeout;
    let mut last = String::from("the coordinator never answered");
    loop {
        if let Ok(views) = kraftops_agent::local::node_views(state) {
            let done = views.iter().all(|v| {
                v.report.as_ref().is_some_and(|r| {
                    r.revision_applied.as_deref() == Some(head)
                        && r.phase == kraftops_agent::protocol::Phase::Converged
                })
            });
            if done {
                return;
            }
            last = views
                .iter()
                .map(|v| match &v.report {
                    None => format!("{}: no report", v.node),
                    Some(r) => format!(
                        "{}: {:?} applied {} seen {} waiting {:?} error {:?}",
                        v.node,
                        r.phase,
                        r.revision_applied.as_deref().unwrap_or("-"),
                        r.revision_seen.as_deref().unwrap_or("-"),
                        r.waiting.as_ref().map(|w| &w.reason),
                        r.last_error.as_ref().map(|e| &e.message),
                    ),
                })
                .collect::<Vec<_>>()
                .join("\n");
        }
        if Instant::now() >= deadline {
            let rollout = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .ok()
                .and_then(|c| {
                    c.get(format!("{}/v1/rollout", state.coordinator_url))
                        .send()
                        .ok()
                })
                .and_then(|r| r.text().ok())
                .unwrap_or_default();
            panic!(
                "timed out after {timeout:?} waiting for every agent converged on {what} ({head}):\n{last}\nrollout: {rollout}"
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// `local push <dir>` without waiting; returns the new head.
fn push(dir: &Path, message: &str) -> String {
    let pushed = agent(&["push", dir.to_str().expect("UTF-8"), "-m", message]);
    assert!(pushed.status.success(), "{}", stderr(&pushed));
    stdout(&pushed).trim().to_owned()
}

/// The metadata quorum's leader, by Kafka's own tool.
fn quorum_leader(state: &ClusterState, model: &Model) -> u32 {
    let status = checks::quorum_status(state, model).expect("kafka-metadata-quorum");
    status
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("LeaderId:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no LeaderId in {status}"))
}

/// Creates `topic` (6 partitions, RF 3, min ISR 2) from connect-1.
fn create_topic(state: &ClusterState, topic: &str) {
    let create = exec(
        state,
        "connect-1",
        &[
            "/opt/kafka/bin/kafka-topics.sh",
            "--bootstrap-server",
            BOOTSTRAP_ALL,
            "--command-config",
            "/root/e2e-admin.properties",
            "--create",
            "--if-not-exists",
            "--topic",
            topic,
            "--partitions",
            "6",
            "--replication-factor",
            "3",
            "--config",
            "min.insync.replicas=2",
        ],
        None,
    );
    assert!(
        create.status.success(),
        "creating {topic}: {}",
        stderr(&create)
    );
}

/// Kafka's own ProducerPerformance on connect-1 (idempotent, acks=all):
/// `records` records of 100 bytes at 20 a second to `topic`. Returns the
/// running tool; [`latency`] reads its summary.
fn latency_probe(state: &ClusterState, topic: &str, records: u32) -> std::process::Child {
    create_topic(state, topic);
    checks::in_node(
        state,
        "connect-1",
        &[
            "/opt/kafka/bin/kafka-run-class.sh",
            "org.apache.kafka.tools.ProducerPerformance",
            "--topic",
            topic,
            "--num-records",
            &records.to_string(),
            "--record-size",
            "100",
            "--throughput",
            "20",
            "--producer.config",
            "/root/e2e-producer.properties",
            "--producer-props",
            &format!("bootstrap.servers={BOOTSTRAP_ALL}"),
        ],
    )
    .expect("connect-1 runs")
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .expect("starting ProducerPerformance")
}

/// The summary line of a finished [`latency_probe`]: `(p50, p99, max)` in ms.
fn latency(probe: std::process::Child) -> (f64, f64, f64) {
    let out = probe.wait_with_output().expect("ProducerPerformance ends");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // "600 records sent, 19.9 records/sec (0.00 MB/sec), 7.6 ms avg latency,
    //  402.0 ms max latency, 5 ms 50th, 12 ms 95th, 61 ms 99th, 402 ms 99.9th."
    let summary = text
        .lines()
        .rfind(|l| l.contains("99th"))
        .unwrap_or_else(|| panic!("no ProducerPerformance summary in:\n{text}"));
    let number_before = |label: &str| -> f64 {
        summary
            .split(',')
            .find(|part| part.trim_end_matches('.').trim().ends_with(label))
            .and_then(|part| part.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {label} in {summary}"))
    };
    (
        number_before("50th"),
        number_before("99th"),
        number_before("max latency"),
    )
}

/// Asserts that each of `nodes` restarted its `kafka.service` after
/// `before` (its ActiveEnter then) and that no two were down at once
/// (systemd's own timestamps: stop began → active again; one clock).
/// Returns `(node, down, up)` in the order they went down.
fn rolled_one_at_a_time(
    state: &ClusterState,
    nodes: &[String],
    before: &std::collections::BTreeMap<String, u64>,
    what: &str,
) -> Vec<(String, u64, u64)> {
    let mut downs: Vec<(String, u64, u64)> = nodes
        .iter()
        .map(|n| {
            let (exit, enter) = unit_times(state, n, "kafka.service");
            let started = before[n];
            assert!(
                exit > started && enter > exit,
                "{n} restarted for {what} (started {started}, stop began {exit}, active again {enter})"
            );
            (n.clone(), exit, enter)
        })
        .collect();
    downs.sort_by_key(|d| d.1);
    for pair in downs.windows(2) {
        assert!(
            pair[0].2 <= pair[1].1,
            "{what}: {} was still down when {} went down: {downs:?}",
            pair[0].0,
            pair[1].0
        );
    }
    downs
}

/// The running `kafka.service` JVM's command line inside `node`.
fn kafka_cmdline(state: &ClusterState, node: &str) -> String {
    let out = exec(
        state,
        node,
        &[
            "sh",
            "-c",
            "tr '\\0' '\\n' < /proc/$(systemctl show -p MainPID --value kafka.service)/cmdline",
        ],
        None,
    );
    assert!(out.status.success(), "{node}: {}", stderr(&out));
    stdout(&out)
}

/// The certificate a broker's client listener serves, verified against the
/// cluster CA by a TLS handshake from the host (the agent's own check):
/// its SHA-256 fingerprint (12 hex digits) and notAfter (Unix s).
fn served_certificate(address: std::net::Ipv4Addr, ca_pem: &str) -> Result<(String, u64), String> {
    use base64::Engine as _;
    use sha2::Digest as _;
    let der = kraftops_agent::rollout::served_certificate(&address.to_string(), 9092, ca_pem)
        .map_err(|e| format!("{address}:9092: {e}"))?;
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64::engine::general_purpose::STANDARD.encode(&der)
    );
    let info = kraftops_agent::certs::inspect(&pem).expect("a certificate Kafka served");
    Ok((
        hex::encode(sha2::Sha256::digest(&der))[..12].to_owned(),
        info.not_after,
    ))
}

/// An idempotent producer (acks=all) on connect-1 writing numbered records
/// to an RF 3, min ISR 2 topic, and what it was told.
struct Load {
    topic: String,
    producer: std::process::Child,
    reader: std::thread::JoinHandle<()>,
    acked: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    errors: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// What a [`Load`] proved once stopped and read back.
struct LoadResult {
    acked: usize,
    failed: usize,
}

impl std::fmt::Display for LoadResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} records acknowledged and read back, none written twice, {} sends failed",
            self.acked, self.failed
        )
    }
}

const BOOTSTRAP_ALL: &str = "broker-1.kafka.internal:9092,broker-2.kafka.internal:9092,broker-3.kafka.internal:9092,broker-4.kafka.internal:9092";

impl Load {
    /// Creates `topic` (6 partitions, RF 3, min ISR 2) and starts writing
    /// 20 records a second; returns once the first is acknowledged.
    fn start(state: &ClusterState, topic: &str) -> Self {
        create_topic(state, topic);
        let mut producer = checks::in_node(
            state,
            "connect-1",
            &[
                "/opt/kafka/bin/kafka-run-class.sh",
                "org.apache.kafka.tools.VerifiableProducer",
                "--bootstrap-server",
                BOOTSTRAP_ALL,
                "--producer.config",
                "/root/e2e-producer.properties",
                "--topic",
                topic,
                "--acks",
                "-1",
                "--throughput",
                "20",
                "--max-messages",
                "-1",
            ],
        )
        .expect("connect-1 runs")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the producer");
        let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let errors = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let reader = {
            let out = producer.stdout.take().expect("producer stdout");
            let (acked, errors) = (acked.clone(), errors.clone());
            std::thread::spawn(move || {
                use std::io::BufRead as _;
                for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                    let Ok(event) = serde_json::from_str::<Value>(&line) else {
                        continue;
                    };
                    match event["name"].as_str() {
                        Some("producer_send_success") => acked
                            .lock()
                            .expect("lock")
                            .push(event["value"].as_str().unwrap_or_default().to_owned()),
                        Some("producer_send_error") => {
                            errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        _ => {}
                    }
                }
            })
        };
        wait_until(
            "the producer's first acknowledgements",
            Duration::from_secs(120),
            || (!acked.lock().expect("lock").is_empty()).then_some(()),
        );
        Self {
            topic: topic.to_owned(),
            producer,
            reader,
            acked,
            errors,
        }
    }

    /// Stops the producer, reads the topic back and asserts that every
    /// acknowledged record is there exactly once and no send failed for
    /// good (retriable errors, a moved leader, are retried inside the
    /// producer; a send that fails for good is a refused write).
    fn finish(mut self, state: &ClusterState) -> LoadResult {
        // nsenter forks: the producer's JVM runs under the node's init, so
        // it is stopped inside the node (SIGTERM: it flushes and reports).
        let pattern = format!("VerifiableProducer.*--topic {}", self.topic);
        let stop = exec(
            state,
            "connect-1",
            &["pkill", "-TERM", "-f", &pattern],
            None,
        );
        assert!(
            stop.status.success(),
            "stopping the producer: {}",
            stderr(&stop)
        );
        let _ = self.producer.wait();
        let _ = self.reader.join();
        let acked = self.acked.lock().expect("lock").clone();
        let consumed = exec(
            state,
            "connect-1",
            &[
                "/opt/kafka/bin/kafka-console-consumer.sh",
                "--bootstrap-server",
                BOOTSTRAP_ALL,
                "--consumer.config",
                "/root/e2e-admin.properties",
                "--topic",
                &self.topic,
                "--from-beginning",
                "--timeout-ms",
                "30000",
            ],
            None,
        );
        let consumed_text = stdout(&consumed);
        let mut copies: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
        for line in consumed_text.lines() {
            *copies.entry(line).or_default() += 1;
        }
        let lost: Vec<&String> = acked
            .iter()
            .filter(|v| !copies.contains_key(v.as_str()))
            .collect();
        assert!(
            lost.is_empty(),
            "{}: {} of {} acknowledged records were not read back: {:?}",
            self.topic,
            lost.len(),
            acked.len(),
            lost.iter().take(10).collect::<Vec<_>>()
        );
        // The producer is idempotent: a retried send is never written twice.
        let duplicated: Vec<(&&str, &usize)> = copies.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            duplicated.is_empty(),
            "{}: records written more than once: {:?}",
            self.topic,
            duplicated.iter().take(10).collect::<Vec<_>>()
        );
        let failed = self.errors.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(failed, 0, "{}: sends failed", self.topic);
        LoadResult {
            acked: acked.len(),
            failed,
        }
    }
}

#[test]
fn the_example_cluster_comes_up_healthy_and_secure() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the local-cluster test makes namespaces and mounts: run it as root (CI does)"
    );
    let (tarball, jmx) = kafka_dist();
    let layout = Layout::new(STATE_DIR);
    let _ = agent(&["down", "--purge"]);
    let _teardown = Teardown;

    // From nothing to healthy.
    let started = Instant::now();
    let up = agent(&[
        "up",
        example().to_str().expect("UTF-8"),
        "--override",
        repo_root()
            .join("desired-state/examples/seed.local.yaml")
            .to_str()
            .expect("UTF-8"),
        "--kafka-tarball",
        &tarball,
        "--jmx-jar",
        &jmx,
        "--timeout",
        "900",
    ]);
    assert!(up.status.success(), "local up failed: {}", stderr(&up));
    let up_seconds = started.elapsed().as_secs_f64();
    let mut peak_rss = cluster_rss_mib();
    let state = ClusterState::load(&layout).expect("the local state");
    let model = desired_state::load_dir(&example()).expect("the example loads");
    for phase in [
        "boot",
        "agents",
        "install",
        "format",
        "quorum",
        "brokers",
        "converged",
    ] {
        assert!(
            stdout(&up).contains(&format!("  {phase} ")),
            "phase {phase} missing:\n{}",
            stdout(&up)
        );
    }

    // Every agent reports the same revision, converged.
    let views = kraftops_agent::local::node_views(&state).expect("the coordinator answers");
    assert_eq!(views.len(), 9);
    let revisions: std::collections::BTreeSet<_> = views
        .iter()
        .map(|v| {
            v.report
                .as_ref()
                .and_then(|r| r.revision_applied.clone())
                .unwrap_or_else(|| panic!("{} has applied nothing", v.node))
        })
        .collect();
    assert_eq!(revisions.len(), 1, "agents disagree: {revisions:?}");
    let head = revisions.into_iter().next().expect("one revision");

    // Every node came up the way an EC2 machine does: real cloud-init ran
    // its user-data to the end, the agent enrolled over mutual TLS and
    // deleted its spent join token, and holds the identity it was handed
    // (mode 0600).
    for node in &state.nodes {
        let out = exec(
            &state,
            &node.name,
            &[
                "sh",
                "-c",
                "cloud-init status; test ! -e /etc/kraftops/join-token && echo token-gone; stat -c %a /etc/kraftops/age-identity",
            ],
            None,
        );
        let text = stdout(&out);
        assert!(
            text.contains("status: done") && text.contains("token-gone") && text.contains("600"),
            "{}: {text}{}",
            node.name,
            stderr(&out)
        );
    }
    // A spent join token enrols nothing and authenticates nothing.
    let spent = example_secret(&model, "join-token-broker-2");
    let replay = exec(
        &state,
        "broker-1",
        &[
            "sh",
            "-c",
            "curl -sS --cacert /etc/kraftops/ca.pem -w ' %{http_code}' -H \"Authorization: Bearer $(cat)\" -H 'Content-Type: application/json' -d '{\"node\":\"broker-2\",\"csr_pem\":\"x\"}' https://observability-1.kafka.internal:9172/v1/enrol",
        ],
        Some(&spent),
    );
    let replay = stdout(&replay);
    assert!(
        replay.ends_with(" 401") && replay.contains("already used"),
        "a replayed join token: {replay}"
    );

    // Kafka's own tool: one quorum of the three controllers, four brokers.
    let quorum = checks::quorum_status(&state, &model).expect("kafka-metadata-quorum");
    let mut voters = checks::current_voters(&quorum);
    voters.sort_unstable();
    assert_eq!(voters, vec![3001, 3002, 3003], "{quorum}");
    let replication = checks::quorum_replication(&state, &model).expect("--replication");
    let mut observers = checks::replicas_with_status(&replication, "Observer");
    observers.sort_unstable();
    assert_eq!(observers, vec![1, 2, 3, 4], "{replication}");

    // Security as a client meets it, with Kafka's own Java clients inside
    // broker-1 (which resolves the cluster's names); kcat checks the users
    // git manages below, once the coordinator has created them.
    // The admin user exists from format time.
    let admin_password = example_secret(&model, "admin-password");
    let bootstrap = "broker-1.kafka.internal:9092";
    let client_props = |user: &str, password: &str| {
        format!(
            "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\nsasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"{user}\" password=\"{password}\";\nssl.truststore.type=PEM\nssl.truststore.location=/etc/kafka/tls/ca.pem\ndefault.api.timeout.ms=20000\nrequest.timeout.ms=10000\n"
        )
    };
    let root = layout.node_root("broker-1").join("root");
    std::fs::write(
        root.join("e2e-admin.properties"),
        client_props("admin", &admin_password),
    )
    .expect("writing the admin client config");
    std::fs::write(
        root.join("e2e-wrong.properties"),
        client_props("admin", "not-the-password"),
    )
    .expect("writing a client config with a wrong password");
    std::fs::write(
        root.join("e2e-plaintext.properties"),
        "security.protocol=PLAINTEXT\ndefault.api.timeout.ms=15000\nrequest.timeout.ms=5000\n",
    )
    .expect("writing a plaintext client config");
    let topics = |config: &str, extra: &[&str]| {
        let mut args = vec![
            "timeout",
            "90",
            "/opt/kafka/bin/kafka-topics.sh",
            "--bootstrap-server",
            bootstrap,
            "--command-config",
            config,
        ];
        args.extend_from_slice(extra);
        exec(&state, "broker-1", &args, None)
    };
    let create = topics(
        "/root/e2e-admin.properties",
        &[
            "--create",
            "--if-not-exists",
            "--topic",
            "e2e-smoke",
            "--partitions",
            "3",
            "--replication-factor",
            "3",
        ],
    );
    assert!(
        create.status.success(),
        "creating a topic as admin: {}",
        stderr(&create)
    );
    // The brokers registered with their racks (their AZs: brokers 1 and 3
    // in eu-central-1a, 2 and 4 in eu-central-1b): Kafka's rack-aware
    // placement puts the two replicas of every partition in different AZs.
    // Without racks, 8 partitions of 2 replicas on 4 brokers would almost
    // surely (1 - (2/3)^8 = 96 %) put some partition in one AZ.
    let create = topics(
        "/root/e2e-admin.properties",
        &[
            "--create",
            "--if-not-exists",
            "--topic",
            "e2e-racks",
            "--partitions",
            "8",
            "--replication-factor",
            "2",
        ],
    );
    assert!(
        create.status.success(),
        "creating e2e-racks: {}",
        stderr(&create)
    );
    let described = topics(
        "/root/e2e-admin.properties",
        &["--describe", "--topic", "e2e-racks"],
    );
    let described = stdout(&described);
    let rack_of = |id: &str| match id {
        "1" | "3" => 'a',
        "2" | "4" => 'b',
        other => panic!("unexpected broker {other} in\n{described}"),
    };
    let placements: Vec<Vec<char>> = described
        .lines()
        .filter_map(|l| l.split("Replicas: ").nth(1))
        .map(|r| {
            r.split_whitespace()
                .next()
                .unwrap_or_default()
                .split(',')
                .map(rack_of)
                .collect()
        })
        .collect();
    assert_eq!(placements.len(), 8, "{described}");
    for p in &placements {
        assert!(
            p.contains(&'a') && p.contains(&'b'),
            "a partition in one AZ:\n{described}"
        );
    }

    let records: Vec<String> = (0..20).map(|i| format!("k{i}:record-{i}")).collect();
    let produce = exec(
        &state,
        "broker-1",
        &[
            "/opt/kafka/bin/kafka-console-producer.sh",
            "--bootstrap-server",
            bootstrap,
            "--producer.config",
            "/root/e2e-admin.properties",
            "--topic",
            "e2e-smoke",
            "--property",
            "parse.key=true",
            "--property",
            "key.separator=:",
        ],
        Some(&(records.join("\n") + "\n")),
    );
    assert!(
        produce.status.success(),
        "producing over SASL_SSL: {}",
        stderr(&produce)
    );
    let consume = exec(
        &state,
        "broker-1",
        &[
            "/opt/kafka/bin/kafka-console-consumer.sh",
            "--bootstrap-server",
            bootstrap,
            "--consumer.config",
            "/root/e2e-admin.properties",
            "--topic",
            "e2e-smoke",
            "--from-beginning",
            "--max-messages",
            "20",
            "--timeout-ms",
            "60000",
            "--property",
            "print.key=true",
            "--property",
            "key.separator=:",
        ],
        None,
    );
    let mut got: Vec<String> = stdout(&consume).lines().map(str::to_owned).collect();
    got.sort();
    let mut want = records.clone();
    want.sort();
    assert_eq!(
        got,
        want,
        "every produced record is read back: {}",
        stderr(&consume)
    );

    let wrong = topics("/root/e2e-wrong.properties", &["--list"]);
    assert!(
        !wrong.status.success(),
        "a wrong password must be refused: {}",
        stdout(&wrong)
    );
    assert!(
        format!("{}{}", stdout(&wrong), stderr(&wrong)).contains("Authentication failed"),
        "refused for the password: {}",
        stderr(&wrong)
    );
    let plaintext = topics("/root/e2e-plaintext.properties", &["--list"]);
    assert!(
        !plaintext.status.success() && !stdout(&plaintext).contains("e2e-smoke"),
        "a plaintext client must be refused: {}",
        stdout(&plaintext)
    );

    // The controller listener takes only certificates of the cluster CA.
    let foreign = layout.node_root("broker-1").join("root");
    let keygen = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=broker-1",
        ])
        .arg("-keyout")
        .arg(foreign.join("foreign.key"))
        .arg("-out")
        .arg(foreign.join("foreign.crt"))
        .output()
        .expect("openssl");
    assert!(keygen.status.success(), "{}", stderr(&keygen));
    let mut pem = std::fs::read_to_string(foreign.join("foreign.key")).expect("key");
    pem.push_str(&std::fs::read_to_string(foreign.join("foreign.crt")).expect("cert"));
    std::fs::write(foreign.join("foreign.pem"), pem).expect("foreign keystore");
    std::fs::write(
        foreign.join("foreign.properties"),
        "security.protocol=SSL\nssl.keystore.type=PEM\nssl.keystore.location=/root/foreign.pem\nssl.truststore.type=PEM\nssl.truststore.location=/etc/kafka/tls/ca.pem\n",
    )
    .expect("foreign client config");
    let out = exec(
        &state,
        "broker-1",
        &[
            "timeout",
            "60",
            "/opt/kafka/bin/kafka-metadata-quorum.sh",
            "--bootstrap-controller",
            "controller-1.kafka.internal:9093",
            "--command-config",
            "/root/foreign.properties",
            "describe",
            "--status",
        ],
        None,
    );
    assert!(
        !out.status.success() && !stdout(&out).contains("LeaderId"),
        "a certificate from another CA must not reach the quorum: {}",
        stdout(&out)
    );

    // Prometheus: every target of the Kafka, host and kraftops jobs is up
    // (Connect waits for its user and ACLs: issue 7), rules are loaded, and
    // every dashboard query is accepted; most return data.
    let prometheus = state.prometheus_url.clone().expect("a Prometheus URL");
    let targets = wait_until(
        "every Prometheus target up",
        Duration::from_secs(180),
        || {
            let t = http_json(&format!("{prometheus}/api/v1/targets"));
            let active = t["data"]["activeTargets"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let down: Vec<String> = active
                .iter()
                .filter(|t| t["labels"]["job"] != "kafka-connect" && t["health"] != "up")
                .map(|t| format!("{} {}", t["labels"]["job"], t["labels"]["instance"]))
                .collect();
            (active.len() >= 9 && down.is_empty()).then_some(active)
        },
    );
    for job in [
        "node",
        "kafka-broker",
        "kafka-controller",
        "kraftops-agent",
        "kraftops-coordinator",
        "prometheus",
        "alertmanager",
    ] {
        assert!(
            targets.iter().any(|t| t["labels"]["job"] == job),
            "no {job} target"
        );
    }
    assert_eq!(
        targets
            .iter()
            .filter(|t| t["labels"]["job"] == "node")
            .count(),
        9,
        "node_exporter on every node"
    );
    let rules = http_json(&format!("{prometheus}/api/v1/rules"));
    let loaded: usize = rules["data"]["groups"]
        .as_array()
        .expect("rule groups")
        .iter()
        .map(|g| g["rules"].as_array().map_or(0, Vec::len))
        .sum();
    assert!(loaded >= 10, "alert rules loaded: {loaded}");
    let client = reqwest::blocking::Client::new();
    let dashboards =
        std::fs::read_dir(example().join("observability/dashboards")).expect("dashboards");
    for d in dashboards {
        let path = d.expect("entry").path();
        let name = path
            .file_stem()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let mut with_data = 0;
        let queries = dashboard_queries(&path);
        for q in &queries {
            let answer: Value = client
                .get(format!("{prometheus}/api/v1/query"))
                .query(&[("query", q.as_str())])
                .send()
                .and_then(reqwest::blocking::Response::json)
                .unwrap_or_else(|e| panic!("query {q}: {e}"));
            assert_eq!(
                answer["status"], "success",
                "{name}: Prometheus refused {q}: {answer}"
            );
            if answer["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
            {
                with_data += 1;
            }
        }
        report!(
            "dashboard {name}: {with_data} of {} queries return data",
            queries.len()
        );
        if name != "kafka-connect" {
            assert!(with_data > 0, "dashboard {name}: no query returns data");
        }
    }

    // An invalid push changes nothing and every agent names the problem.
    let broken = tempfile::tempdir().expect("tempdir");
    copy_example(broken.path());
    let cluster_yaml = broken.path().join("cluster.yaml");
    let text = std::fs::read_to_string(&cluster_yaml).expect("cluster.yaml");
    std::fs::write(
        &cluster_yaml,
        text.replace("\nnetwork:\n", "\ncolour: red\nnetwork:\n"),
    )
    .expect("breaking cluster.yaml");
    let pushed = agent(&[
        "push",
        broken.path().to_str().expect("UTF-8"),
        "--allow-invalid",
        "-m",
        "e2e: an invalid repository",
    ]);
    assert!(pushed.status.success(), "{}", stderr(&pushed));
    let bad = stdout(&pushed).trim().to_owned();
    wait_until(
        "every agent refusing the invalid commit",
        Duration::from_secs(180),
        || {
            let views = kraftops_agent::local::node_views(&state).ok()?;
            views
                .iter()
                .all(|v| {
                    v.report.as_ref().is_some_and(|r| {
                        r.revision_seen.as_deref() == Some(bad.as_str())
                            && r.revision_applied.as_deref() == Some(head.as_str())
                            && r.last_error.as_ref().is_some_and(|e| {
                                e.problems
                                    .iter()
                                    .any(|p| p.starts_with("cluster.yaml:") && p.contains("colour"))
                            })
                    })
                })
                .then_some(())
        },
    );
    for n in &state.nodes {
        let active =
            checks::unit_state(&state, &n.name, "kraftops-agent.service").expect("systemctl");
        assert_eq!(active, "active", "{}", n.name);
    }

    // A change no node needs to restart for (a new topic file: the nodes'
    // plans do not change): how long until every agent has applied it.
    let valid = tempfile::tempdir().expect("tempdir");
    copy_example(valid.path());
    std::fs::write(
        valid.path().join("topics/e2e.yaml"),
        "topics:\n  - name: e2e-declared\n    partitions: 3\n",
    )
    .expect("a topic file");
    let (quiet_head, quiet_seconds) = push_and_wait(&state, valid.path(), "e2e: a topic");
    assert_ne!(quiet_head, head);

    // From here on one working copy collects every change. A shorter bake
    // time and health timeout keep the test's rolls short; and a broker
    // setting Kafka takes live (num.io.threads is dynamic: DescribeConfigs
    // says it is not read-only) is applied through the Admin API on every
    // broker, none restarts.
    let work = valid;
    let connect_root = layout.node_root("connect-1").join("root");
    std::fs::write(
        connect_root.join("e2e-admin.properties"),
        client_props("admin", &admin_password),
    )
    .expect("writing the admin client config on connect-1");
    // VerifiableProducer sets retries=0 before it reads this file: an
    // idempotent producer retries (a roll moves leaders), and never writes
    // a retried record twice.
    std::fs::write(
        connect_root.join("e2e-producer.properties"),
        format!(
            "{}enable.idempotence=true\nretries=2147483647\ndelivery.timeout.ms=300000\n",
            client_props("admin", &admin_password)
        ),
    )
    .expect("writing the producer config on connect-1");
    edit(work.path(), "cluster.yaml", "cooldown: 30s", "cooldown: 5s");
    edit(
        work.path(),
        "cluster.yaml",
        "health_timeout: 10m",
        "health_timeout: 90s",
    );
    edit(
        work.path(),
        "cluster.yaml",
        "num.io.threads: 16",
        "num.io.threads: 12",
    );
    let brokers: Vec<String> = state
        .nodes
        .iter()
        .filter(|n| n.role == "broker")
        .map(|n| n.name.clone())
        .collect();
    let controllers: Vec<String> = state
        .nodes
        .iter()
        .filter(|n| n.role == "controller")
        .map(|n| n.name.clone())
        .collect();
    let before_live = started_at(&state, &brokers, "kafka.service");
    let (_, live_seconds) = push_and_wait(&state, work.path(), "e2e: a dynamic broker setting");
    assert_eq!(
        started_at(&state, &brokers, "kafka.service"),
        before_live,
        "a dynamic setting restarted a broker"
    );
    for b in &brokers {
        // The example's brokers are broker-<node id>.
        let id = b.trim_start_matches("broker-");
        let described = exec(
            &state,
            "connect-1",
            &[
                "/opt/kafka/bin/kafka-configs.sh",
                "--bootstrap-server",
                bootstrap,
                "--command-config",
                "/root/e2e-admin.properties",
                "--entity-type",
                "brokers",
                "--entity-name",
                id,
                "--describe",
                "--all",
            ],
            None,
        );
        let text = stdout(&described);
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with("num.io.threads=12 ")),
            "{b} (node {id}) does not run num.io.threads=12 live:\n{text}{}",
            stderr(&described)
        );
    }
    report!(
        "dynamic broker setting: applied live on every broker, none restarted, push to converged {live_seconds:.0} s"
    );

    // A broker setting that needs a restart rolls through the brokers one
    // at a time while a producer (acks=all) runs; every acknowledged record
    // is read back afterwards.
    let roll_since = kraftops_agent::daemon::reconcile::now();
    let started_before: std::collections::BTreeMap<String, u64> = brokers
        .iter()
        .map(|b| (b.clone(), unit_times(&state, b, "kafka.service").1))
        .collect();
    // Produce latency in steady state first (30 s), then through the roll.
    let steady = latency(latency_probe(&state, "e2e-latency-steady", 600));
    let load = Load::start(&state, "e2e-roll");
    let probe = latency_probe(&state, "e2e-latency-roll", 2600);
    edit(
        work.path(),
        "cluster.yaml",
        "group.initial.rebalance.delay.ms: 3000",
        "group.initial.rebalance.delay.ms: 2000",
    );
    let (roll_head, roll_seconds) =
        push_and_wait(&state, work.path(), "e2e: a static broker setting");
    std::thread::sleep(Duration::from_secs(5));
    let load = load.finish(&state);
    let rolling = latency(probe);
    report!(
        "produce latency (idempotent, acks=all, 20/s), p50 / p99 / max ms: steady state {} / {} / {}, during the roll {} / {} / {}",
        steady.0,
        steady.1,
        steady.2,
        rolling.0,
        rolling.1,
        rolling.2
    );
    for n in state.nodes.iter().filter(|n| n.role == "broker") {
        let props = std::fs::read_to_string(
            layout
                .node_root(&n.name)
                .join("etc/kafka/server.properties"),
        )
        .expect("server.properties");
        assert!(
            props.contains("group.initial.rebalance.delay.ms=2000"),
            "{} has the new setting",
            n.name
        );
    }
    let downs = rolled_one_at_a_time(&state, &brokers, &started_before, "the static setting");
    peak_rss = peak_rss.max(cluster_rss_mib());
    // The coordinator's lease log agrees: one broker at a time.
    let held = lease_log(&state, "broker", roll_since);
    assert_eq!(
        held.iter()
            .map(|h| h.0.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        brokers.len(),
        "every broker took the lease once: {held:?}"
    );
    report!(
        "broker lease log (node, granted, released, Unix s): {held:?}; per broker {:?} s",
        held.iter().map(|h| h.2 - h.1).collect::<Vec<_>>()
    );
    report!(
        "rolling change {}: {load}, brokers down (monotonic µs): {downs:?}",
        &roll_head[..12],
    );
    report!(
        "push to converged: no-restart change {quiet_seconds:.0} s, rolling change {roll_seconds:.0} s"
    );

    // The bare minimum of a broker restart, for comparison: a plain
    // `systemctl restart` with no gate and no lease, until the broker is
    // registered, unfenced and back in the ISR of every partition it hosts
    // (the agent's own health check, asked from the host every 250 ms).
    let host_admin = kraftops_agent::kafka::AdminClient::new(kraftops_agent::kafka::AdminConfig {
        bootstrap: state
            .nodes
            .iter()
            .filter(|n| n.role == "broker")
            .map(|n| format!("{}:9091", n.address))
            .collect(),
        ca_pem: model.ca_certificate.clone(),
        auth: kraftops_agent::kafka::Auth::Scram {
            user: "admin".to_owned(),
            password: admin_password.clone(),
        },
        timeout: Duration::from_secs(5),
        controllers: false,
    })
    .expect("an admin client from the host");
    let broker_4_id = model
        .nodes
        .iter()
        .find(|n| n.name.as_str() == "broker-4")
        .and_then(|n| n.node_id.as_ref())
        .map(|id| i32::try_from(id.value).expect("a node id"))
        .expect("broker-4 has a node id");
    let plain_started = Instant::now();
    let plain = exec(
        &state,
        "broker-4",
        &["systemctl", "restart", "kafka.service"],
        None,
    );
    assert!(
        plain.status.success(),
        "systemctl restart: {}",
        stderr(&plain)
    );
    let stopped_and_started = plain_started.elapsed().as_secs_f64();
    let plain_seconds = loop {
        use kraftops_agent::kafka::KafkaAdmin as _;
        let health = host_admin
            .metadata()
            .and_then(|m| Ok((m, host_admin.describe_cluster()?)))
            .map(|(m, c)| kraftops_agent::rollout::gates::broker_health(broker_4_id, &m, &c));
        if matches!(health, Ok(kraftops_agent::rollout::Health::Healthy)) {
            break plain_started.elapsed().as_secs_f64();
        }
        assert!(
            plain_started.elapsed() < Duration::from_secs(300),
            "broker-4 not back in every ISR 300 s after a plain restart: {health:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    report!(
        "a broker restart: plain systemctl restart {stopped_and_started:.0} s, back in every ISR after {plain_seconds:.0} s (the bare minimum); kraftops per broker (lease held: gate, controlled shutdown, start, ISR, leader election, {}s bake) {:?} s",
        5,
        held.iter().map(|h| h.2 - h.1).collect::<Vec<_>>()
    );

    // A controller setting: the controllers restart one at a time, each
    // only while the other two are caught up, the active one last.
    let leader_before = quorum_leader(&state, &model);
    let controllers_before = started_at(&state, &controllers, "kafka.service");
    let controller_since = kraftops_agent::daemon::reconcile::now();
    edit(
        work.path(),
        "cluster.yaml",
        "  metadata_dir: /var/lib/kafka/metadata\n",
        "  metadata_dir: /var/lib/kafka/metadata\n  settings:\n    controller.quorum.append.linger.ms: 20\n",
    );
    let (_, controller_seconds) = push_and_wait(&state, work.path(), "e2e: a controller setting");
    let controller_downs = rolled_one_at_a_time(
        &state,
        &controllers,
        &controllers_before,
        "the controller setting",
    );
    let last = &controller_downs.last().expect("three controllers").0;
    let leader_name = format!("controller-{}", leader_before - 3000);
    assert_eq!(
        last, &leader_name,
        "the active controller (node {leader_before}) restarts last: {controller_downs:?}"
    );
    let controller_held = lease_log(&state, "controller", controller_since);
    report!(
        "controller setting: 3 controllers rolled one at a time, the active one ({leader_name}) last, in {controller_seconds:.0} s; lease log {controller_held:?}"
    );

    // A broker stopped by hand (its agent stopped too, or it would start
    // Kafka again at its next poll, well inside the alert's 1 m `for`):
    // Prometheus sees the JMX target down, InstanceDown fires in
    // Alertmanager within its `for` window plus one scrape and one
    // evaluation interval, reaches the coordinator through Alertmanager's
    // webhook, and once the agent runs again it starts Kafka by itself.
    let victim = state
        .nodes
        .iter()
        .find(|n| n.name == "broker-4")
        .expect("broker-4")
        .clone();
    let stopped = exec(
        &state,
        &victim.name,
        &[
            "systemctl",
            "stop",
            "kraftops-agent.service",
            "kafka.service",
        ],
        None,
    );
    assert!(
        stopped.status.success(),
        "stopping broker-4: {}",
        stderr(&stopped)
    );
    let stopped_at = Instant::now();
    let alertmanager = state.alertmanager_url.clone().expect("an Alertmanager URL");
    let is_victim = |labels: &Value| {
        let instance = labels["instance"].as_str().unwrap_or_default();
        instance.contains(&victim.fqdn) || instance.contains(&victim.address.to_string())
    };
    wait_until(
        "InstanceDown of broker-4 in Alertmanager",
        Duration::from_secs(180),
        || {
            http_json(&format!("{alertmanager}/api/v2/alerts"))
                .as_array()?
                .iter()
                .any(|a| {
                    a["labels"]["alertname"] == "InstanceDown"
                        && is_victim(&a["labels"])
                        && a["status"]["state"] == "active"
                })
                .then_some(())
        },
    );
    let fired_after = stopped_at.elapsed().as_secs_f64();
    assert!(
        fired_after <= 60.0 + 15.0 + 15.0 + 15.0,
        "InstanceDown took {fired_after:.0} s (for 1m, scrape and evaluation every 15 s)"
    );
    wait_until(
        "the alert at the coordinator",
        Duration::from_secs(120),
        || {
            http_json(&format!("{}/v1/alerts", state.coordinator_url))
                .as_array()?
                .iter()
                .any(|a| {
                    a.to_string().contains("InstanceDown") && a.to_string().contains(&victim.name)
                })
                .then_some(())
        },
    );
    let still_down = exec(
        &state,
        &victim.name,
        &["systemctl", "is-active", "kafka.service"],
        None,
    );
    assert_eq!(
        stdout(&still_down).trim(),
        "inactive",
        "nothing but the agent may start Kafka again"
    );
    // A broker already down blocks every other broker's restart: a static
    // setting pushed now waits at the other brokers' gates (broker-4 fenced,
    // its partitions under-replicated) until broker-4 is back.
    let others: Vec<String> = brokers
        .iter()
        .filter(|b| **b != victim.name)
        .cloned()
        .collect();
    let blocked_before = started_at(&state, &others, "kafka.service");
    edit(
        work.path(),
        "cluster.yaml",
        "group.initial.rebalance.delay.ms: 2000",
        "group.initial.rebalance.delay.ms: 1000",
    );
    let blocked_head = push(work.path(), "e2e: a static setting while broker-4 is down");
    let gate_reason = wait_until(
        "another broker waiting at its gate",
        Duration::from_secs(240),
        || {
            let views = kraftops_agent::local::node_views(&state).ok()?;
            views.iter().find_map(|v| {
                let r = v.report.as_ref()?;
                let w = r.waiting.as_ref()?;
                (others.contains(&v.node)
                    && r.revision_applied.as_deref() == Some(blocked_head.as_str())
                    && w.reason.starts_with("gate:"))
                .then(|| format!("{}: {}", v.node, w.reason))
            })
        },
    );
    std::thread::sleep(Duration::from_secs(20));
    assert_eq!(
        started_at(&state, &others, "kafka.service"),
        blocked_before,
        "a broker restarted while broker-4 was down"
    );
    report!("while broker-4 was down, the other brokers waited: {gate_reason}");
    let started = exec(
        &state,
        &victim.name,
        &["systemctl", "start", "kraftops-agent.service"],
        None,
    );
    assert!(
        started.status.success(),
        "starting broker-4's agent: {}",
        stderr(&started)
    );
    let agent_back = Instant::now();
    wait_until(
        "the agent to start Kafka on broker-4",
        Duration::from_secs(180),
        || {
            let out = exec(
                &state,
                &victim.name,
                &["systemctl", "is-active", "kafka.service"],
                None,
            );
            (stdout(&out).trim() == "active").then_some(())
        },
    );
    report!(
        "broker-4 stopped by hand: InstanceDown active in Alertmanager after {fired_after:.0} s (for: 1m), at the coordinator too; Kafka started by the agent {:.0} s after the agent was back",
        agent_back.elapsed().as_secs_f64()
    );

    wait_converged(
        &state,
        &blocked_head,
        "the static setting once broker-4 was back",
    );
    let after_blocked = started_at(&state, &others, "kafka.service");
    for b in &others {
        assert!(
            after_blocked[b] > blocked_before[b],
            "{b} restarted once broker-4 was back"
        );
    }

    // A setting Kafka cannot start with: the first broker to take the lease
    // fails its health gate, is rolled back to the last good commit and
    // serves again; the rollout halts there (the lease stays held), so no
    // other broker restarts; the next commit (the fix) continues.
    let before_fail = started_at(&state, &brokers, "kafka.service");
    edit(
        work.path(),
        "cluster.yaml",
        "    group.initial.rebalance.delay.ms: 1000\n",
        "    group.initial.rebalance.delay.ms: 1000\n    queued.max.requests: 0\n",
    );
    let bad_head = push(work.path(), "e2e: a setting Kafka cannot start with");
    let failed_at = Instant::now();
    let (failed_node, failure) = wait_until(
        "a broker to fail and be rolled back",
        Duration::from_secs(600),
        || {
            let views = kraftops_agent::local::node_views(&state).ok()?;
            views.iter().find_map(|v| {
                let r = v.report.as_ref()?;
                let e = r.last_error.as_ref()?;
                (r.phase == kraftops_agent::protocol::Phase::Failed
                    && e.message.contains("rolled back to"))
                .then(|| (v.node.clone(), e.message.clone()))
            })
        },
    );
    let rollout = rollout_view(&state);
    let halted = rollout["roles"]
        .as_array()
        .expect("roles")
        .iter()
        .find(|r| r["role"] == "broker")
        .map(|r| r["halted"][0].clone())
        .unwrap_or(Value::Null);
    assert!(
        halted["reason"]
            .as_str()
            .is_some_and(|r| r.contains("rolled back")),
        "the broker rollout is halted with the reason: {rollout}"
    );
    std::thread::sleep(Duration::from_secs(20));
    let after_fail = started_at(&state, &brokers, "kafka.service");
    let restarted: Vec<&String> = brokers
        .iter()
        .filter(|b| after_fail[*b] != before_fail[*b])
        .collect();
    assert_eq!(
        restarted,
        vec![&failed_node],
        "only the failed broker restarted (twice: the bad commit, the rollback)"
    );
    let failed_view = kraftops_agent::local::node_views(&state)
        .expect("the coordinator answers")
        .into_iter()
        .find(|v| v.node == failed_node)
        .and_then(|v| v.report)
        .expect("the failed node reports");
    assert_eq!(
        failed_view.revision_applied.as_deref(),
        Some(blocked_head.as_str()),
        "{failed_node} runs the last good commit again"
    );
    assert_eq!(
        checks::unit_state(&state, &failed_node, "kafka.service").expect("systemctl"),
        "active"
    );
    report!(
        "a setting Kafka cannot start with ({}): {failed_node} failed and was rolled back after {:.0} s, the rollout halted: {failure}",
        &bad_head[..12],
        failed_at.elapsed().as_secs_f64()
    );
    edit(
        work.path(),
        "cluster.yaml",
        "    queued.max.requests: 0\n",
        "",
    );
    let (_, fix_seconds) = push_and_wait(&state, work.path(), "e2e: the fix");
    report!("the fix converged every node in {fix_seconds:.0} s");

    // A Kafka version upgrade from git, under load: 4.1.1 → 4.2.0 installed
    // beside the old version on every node and rolled through the same
    // gates (controllers, then brokers, one at a time, then Connect);
    // metadata.version is raised to 4.2 only once every broker and
    // controller runs the new commit, and only because git asks for it.
    kafka_dist_version(Some("4.2.0"));
    let kafka_nodes: Vec<String> = controllers.iter().chain(&brokers).cloned().collect();
    let before_upgrade = started_at(&state, &kafka_nodes, "kafka.service");
    let features = |node: &str| {
        let out = exec(
            &state,
            node,
            &[
                "/opt/kafka/bin/kafka-features.sh",
                "--bootstrap-server",
                BOOTSTRAP_ALL,
                "--command-config",
                "/root/e2e-admin.properties",
                "describe",
            ],
            None,
        );
        let text = stdout(&out);
        text.lines()
            .find(|l| l.contains("Feature: metadata.version"))
            .unwrap_or_else(|| {
                panic!(
                    "no metadata.version in kafka-features describe: {text}{}",
                    stderr(&out)
                )
            })
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let metadata_before = features("connect-1");
    assert!(
        metadata_before.contains("FinalizedVersionLevel: 4.1-IV1"),
        "{metadata_before}"
    );
    let load = Load::start(&state, "e2e-upgrade");
    edit(
        work.path(),
        "cluster.yaml",
        "  version: 4.1.1\n",
        "  version: 4.2.0\n  metadata_version: \"4.2\"\n",
    );
    let upgrade_head = push(work.path(), "e2e: Kafka 4.2.0, metadata.version 4.2");
    let upgrade_started = Instant::now();
    // Watch the coordinator while the nodes roll: no raise while any Kafka
    // node is not on the new commit.
    let (raised_after, converged_after) = {
        let mut converged_at = None;
        let mut raised_at = None;
        wait_until(
            "the upgrade to converge and metadata.version to be raised",
            Duration::from_secs(1500),
            || {
                let views = kraftops_agent::local::node_views(&state).ok()?;
                let on_head = |v: &kraftops_agent::protocol::NodeView| {
                    v.report.as_ref().is_some_and(|r| {
                        r.revision_applied.as_deref() == Some(upgrade_head.as_str())
                            && r.phase == kraftops_agent::protocol::Phase::Converged
                    })
                };
                let kafka_on_head = views
                    .iter()
                    .filter(|v| kafka_nodes.contains(&v.node))
                    .all(on_head);
                let view = rollout_view(&state);
                let metadata = &view["metadata_version"];
                if metadata["finalized_level"] == 29 && metadata["state"] == "at_level" {
                    assert!(
                        kafka_on_head || converged_at.is_some(),
                        "metadata.version was raised before every Kafka node ran the new commit: {metadata}"
                    );
                    raised_at.get_or_insert(upgrade_started.elapsed().as_secs_f64());
                }
                if views.iter().all(on_head) {
                    converged_at.get_or_insert(upgrade_started.elapsed().as_secs_f64());
                }
                raised_at.zip(converged_at)
            },
        )
    };
    std::thread::sleep(Duration::from_secs(5));
    let load = load.finish(&state);
    let upgrade_downs = rolled_one_at_a_time(&state, &kafka_nodes, &before_upgrade, "the upgrade");
    // Controllers first, then brokers: the last controller was up again
    // before the first broker went down.
    let last_controller_up = upgrade_downs
        .iter()
        .filter(|d| controllers.contains(&d.0))
        .map(|d| d.2)
        .max()
        .expect("controllers");
    let first_broker_down = upgrade_downs
        .iter()
        .filter(|d| brokers.contains(&d.0))
        .map(|d| d.1)
        .min()
        .expect("brokers");
    assert!(
        last_controller_up <= first_broker_down,
        "a broker went down before every controller was upgraded: {upgrade_downs:?}"
    );
    for node in &kafka_nodes {
        let cmdline = kafka_cmdline(&state, node);
        assert!(
            cmdline.contains("kafka_2.13-4.2.0.jar") && !cmdline.contains("4.1.1.jar"),
            "{node} does not run Kafka 4.2.0 alone: {}",
            cmdline
                .lines()
                .filter(|l| l.contains("kafka_2.13"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        assert!(
            !cmdline.contains("/opt/kafka/libs/"),
            "{node}'s JVM reads its jars through the install_dir symlink"
        );
    }
    let metadata_after = features("connect-1");
    assert!(
        metadata_after.contains("FinalizedVersionLevel: 4.2-IV1"),
        "{metadata_after}"
    );
    let rollout = rollout_view(&state);
    report!(
        "Kafka 4.1.1 → 4.2.0 ({}): every node converged in {converged_after:.0} s (controllers first, one node at a time: {:?}); {load}; metadata.version raised after {raised_after:.0} s: {} → {} ({})",
        &upgrade_head[..12],
        upgrade_downs
            .iter()
            .map(|d| d.0.as_str())
            .collect::<Vec<_>>(),
        metadata_before,
        metadata_after,
        rollout["metadata_version"]["detail"]
    );

    // Certificates rotate without a restart: with a 4-minute lifetime, a
    // broker whose keystore is gone (by hand) gets a new certificate, and
    // renews it by itself at two thirds of its life; each time the broker
    // reloads it live, serves it, and keeps serving clients.
    let broker_addresses: Vec<(String, std::net::Ipv4Addr)> = state
        .nodes
        .iter()
        .filter(|n| n.role == "broker")
        .map(|n| (n.name.clone(), n.address))
        .collect();
    edit(
        work.path(),
        "cluster.yaml",
        "cert_validity: 90d",
        "cert_validity: 4m",
    );
    edit(
        work.path(),
        "cluster.yaml",
        "renew_before: 30d",
        "renew_before: 1m",
    );
    push_and_wait(&state, work.path(), "e2e: 4-minute certificates");
    let before_rotation = started_at(&state, &brokers, "kafka.service");
    let first: std::collections::BTreeMap<String, (String, u64)> = broker_addresses
        .iter()
        .map(|(b, a)| {
            let served = served_certificate(*a, &model.ca_certificate);
            (b.clone(), served.unwrap_or_else(|e| panic!("{e}")))
        })
        .collect();
    let load = Load::start(&state, "e2e-rotation");
    let rotation_started = Instant::now();
    for b in &brokers {
        std::fs::remove_file(
            layout
                .node_root(b)
                .join(roles::layout::KEYSTORE.trim_start_matches('/')),
        )
        .expect("removing a broker's keystore");
    }
    let mut unreachable: Vec<String> = Vec::new();
    let mut seen: std::collections::BTreeMap<String, Vec<(String, u64)>> = first
        .iter()
        .map(|(b, c)| (b.clone(), vec![c.clone()]))
        .collect();
    // Three certificates each: the old one, the one issued for the missing
    // keystore, and the one it renewed by itself.
    wait_until(
        "every broker to serve a reissued and then a renewed certificate",
        Duration::from_secs(600),
        || {
            for (b, a) in &broker_addresses {
                // A broker that does not answer is noted; that it restarted
                // is asserted below.
                let now = match served_certificate(*a, &model.ca_certificate) {
                    Ok(now) => now,
                    Err(e) => {
                        unreachable.push(e);
                        continue;
                    }
                };
                let list = seen.get_mut(b).expect("a broker");
                if list.last() != Some(&now) {
                    list.push(now);
                }
            }
            seen.values().all(|l| l.len() >= 3).then_some(())
        },
    );
    let rotation_seconds = rotation_started.elapsed().as_secs_f64();
    // The new certificates are the short-lived ones git asked for.
    let unix_now = kraftops_agent::daemon::reconcile::now();
    for (b, list) in &seen {
        assert!(
            list[1..]
                .iter()
                .all(|(_, not_after)| *not_after <= unix_now + 240),
            "{b} served a certificate longer-lived than 4 minutes: {list:?}"
        );
    }
    let load = load.finish(&state);
    let after_rotation = started_at(&state, &brokers, "kafka.service");
    if after_rotation != before_rotation {
        let why = exec(
            &state,
            "broker-1",
            &[
                "sh",
                "-c",
                "journalctl -u kraftops-agent --no-pager | grep -i -E 'reload|restart|keystore|certificate' | tail -20",
            ],
            None,
        );
        panic!(
            "a broker restarted for its certificates ({before_rotation:?} → {after_rotation:?}; unreachable meanwhile: {unreachable:?}); broker-1's agent:\n{}",
            stdout(&why)
        );
    }
    report!(
        "certificate rotation (4-minute lifetime): every broker served a reissued and then a self-renewed certificate within {rotation_seconds:.0} s, none restarted; {load}; broker-1: {:?}",
        seen["broker-1"]
    );
    edit(
        work.path(),
        "cluster.yaml",
        "cert_validity: 4m",
        "cert_validity: 90d",
    );
    edit(
        work.path(),
        "cluster.yaml",
        "renew_before: 1m",
        "renew_before: 30d",
    );
    let (certs_head, _) = push_and_wait(&state, work.path(), "e2e: 90-day certificates again");

    // Topics, users, ACLs, quotas and connectors from git: the coordinator
    // is their one writer. Checked with Kafka's own tools as a user meets
    // them, and through the coordinator's cluster API.
    let coordinator = state.coordinator_url.clone();
    let resources_settled = |head: &str, what: &str| -> Value {
        wait_until(
            &format!("a resources pass with nothing left to do on {what}"),
            Duration::from_secs(300),
            || {
                let r = http_json(&format!("{coordinator}/v1/resources"));
                let empty = |key: &str| r[key].as_array().is_some_and(Vec::is_empty);
                (r["commit"].as_str() == Some(head)
                    && r["error"].is_null()
                    && empty("refusals")
                    && empty("actions"))
                .then_some(r)
            },
        )
    };
    let kafka = |args: &[&str], input: Option<&str>| {
        let mut all = vec!["timeout", "90"];
        all.extend_from_slice(args);
        let out = exec(&state, "broker-1", &all, input);
        format!("{}{}", stdout(&out), stderr(&out))
    };
    let topic_configs = |topic: &str| {
        kafka(
            &[
                "/opt/kafka/bin/kafka-configs.sh",
                "--bootstrap-server",
                bootstrap,
                "--command-config",
                "/root/e2e-admin.properties",
                "--describe",
                "--entity-type",
                "topics",
                "--entity-name",
                topic,
            ],
            None,
        )
    };
    let topic_list = || {
        kafka(
            &[
                "/opt/kafka/bin/kafka-topics.sh",
                "--bootstrap-server",
                bootstrap,
                "--command-config",
                "/root/e2e-admin.properties",
                "--list",
            ],
            None,
        )
        .lines()
        .map(str::to_owned)
        .collect::<std::collections::BTreeSet<String>>()
    };
    resources_settled(&certs_head, "the example");
    // topic-1 as Kafka describes it: git says 6 partitions throughout.
    let assert_six_partitions = || {
        let described = kafka(
            &[
                "/opt/kafka/bin/kafka-topics.sh",
                "--bootstrap-server",
                bootstrap,
                "--command-config",
                "/root/e2e-admin.properties",
                "--describe",
                "--topic",
                "topic-1",
            ],
            None,
        );
        assert!(described.contains("PartitionCount: 6"), "{described}");
    };
    assert_six_partitions();
    let configs = topic_configs("topic-1");
    assert!(configs.contains("retention.ms=604800000"), "{configs}");
    // The client user exists with its password from git, and its ACLs.
    let client_password = example_secret(&model, "client-password");
    std::fs::write(
        root.join("e2e-client.properties"),
        client_props("client", &client_password),
    )
    .expect("writing the client's config");
    // kcat (librdkafka) as client: 30 records produced (acks=all) and read
    // back by a plain consumer, then 10 of them by a Java group consumer.
    // All 30 go to partition 0: the group then has a committed offset on the
    // partition that holds the records, whichever partitions its consumer
    // happened to fetch from first. Spread over three partitions, a consumer
    // that took its 10 from partitions 0 and 2 commits nothing on 1, and
    // the lag reported (like kafka-consumer-groups.sh) covers only the
    // partitions the group committed on.
    let client = ("client", client_password.as_str());
    let records: String = (0..30).map(|i| format!("lag-{i}\n")).collect();
    let (_, produced) = kcat(
        &state,
        &root,
        client,
        &["-P", "-t", "test-topic", "-p", "0", "-X", "acks=all"],
        Some(&records),
    );
    assert!(
        !produced.contains("ERROR"),
        "kcat producing to test-topic as client: {produced}"
    );
    let (read_back, errors) = kcat(
        &state,
        &root,
        client,
        &[
            "-C",
            "-t",
            "test-topic",
            "-o",
            "beginning",
            "-e",
            "-f",
            "%s\n",
        ],
        None,
    );
    assert_eq!(
        read_back.lines().filter(|l| l.starts_with("lag-")).count(),
        30,
        "kcat reading test-topic back as client: {read_back}{errors}"
    );
    let consumed = kafka(
        &[
            "/opt/kafka/bin/kafka-console-consumer.sh",
            "--bootstrap-server",
            bootstrap,
            "--consumer.config",
            "/root/e2e-client.properties",
            "--topic",
            "test-topic",
            "--group",
            "client-e2e",
            "--from-beginning",
            "--max-messages",
            "10",
            "--consumer-property",
            "max.poll.records=1",
            "--timeout-ms",
            "60000",
        ],
        None,
    );
    assert_eq!(
        consumed.lines().filter(|l| l.starts_with("lag-")).count(),
        10,
        "client consuming 10 records of test-topic: {consumed}"
    );
    let group = http_json(&format!("{coordinator}/consumer-groups/client-e2e"));
    assert_eq!(group["total_lag"], 20, "30 produced, 10 consumed: {group}");
    let partition_0 = group["offsets"]
        .as_array()
        .and_then(|offsets| {
            offsets
                .iter()
                .find(|o| o["topic"] == "test-topic" && o["partition"] == 0)
        })
        .unwrap_or_else(|| panic!("no offsets of test-topic partition 0: {group}"));
    assert_eq!(
        (
            &partition_0["committed"],
            &partition_0["latest"],
            &partition_0["lag"]
        ),
        (&json!(10), &json!(30), &json!(20)),
        "test-topic partition 0 of client-e2e: {group}"
    );
    let (_, wrong) = kcat(
        &state,
        &root,
        ("client", "not-the-password"),
        &["-L", "-m", "10"],
        None,
    );
    assert!(
        wrong.contains("Authentication failed"),
        "kcat with a wrong client password: {wrong}"
    );
    let (_, denied) = kcat(
        &state,
        &root,
        client,
        &["-C", "-t", "e2e-smoke", "-o", "beginning", "-e"],
        None,
    );
    assert!(
        denied.contains("authorization failed"),
        "kcat as client reading a topic its ACLs do not name: {denied}"
    );
    // The connector declared in git runs, and its topic fills.
    let connectors = wait_until(
        "the connector cluster-hosts RUNNING",
        Duration::from_secs(300),
        || {
            let c = http_json(&format!("{coordinator}/connectors"));
            let running = c["connectors"].as_array()?.iter().any(|c| {
                c["name"] == "cluster-hosts"
                    && c["state"] == "RUNNING"
                    && c["tasks"]
                        .as_array()
                        .is_some_and(|t| !t.is_empty() && t.iter().all(|t| t["state"] == "RUNNING"))
            });
            running.then_some(c)
        },
    );
    let hosts = kafka(
        &[
            "/opt/kafka/bin/kafka-console-consumer.sh",
            "--bootstrap-server",
            bootstrap,
            "--consumer.config",
            "/root/e2e-client.properties",
            "--topic",
            "topic-1",
            "--group",
            "client-hosts",
            "--from-beginning",
            "--max-messages",
            "3",
            "--timeout-ms",
            "60000",
        ],
        None,
    );
    // The worker's JSON converter writes each line as a JSON string.
    let etc_hosts = stdout(&exec(
        &state,
        "connect-1",
        &["head", "-n", "3", "/etc/hosts"],
        None,
    ));
    for line in etc_hosts.lines() {
        assert!(
            hosts.contains(&serde_json::to_string(line).expect("JSON")),
            "topic-1 holds connect-1's /etc/hosts, line by line ({line:?}): {hosts}"
        );
    }
    report!(
        "resources from git: topics created with their configs; client produces and reads back 30 records with kcat, a wrong password is refused and client is held to its ACLs (kcat); consumer group client-e2e lag {} (30 produced, 10 consumed); connector cluster-hosts RUNNING: {}",
        group["total_lag"],
        connectors["count"]
    );

    // Hand-made drift, then a push: a config set by hand is removed, a
    // topic under a prune pattern is deleted, git's changes are made (a
    // config, a new topic, a topic marked for deletion, an ACL taken away).
    let drift = kafka(
        &[
            "/opt/kafka/bin/kafka-configs.sh",
            "--bootstrap-server",
            bootstrap,
            "--command-config",
            "/root/e2e-admin.properties",
            "--alter",
            "--entity-type",
            "topics",
            "--entity-name",
            "topic-1",
            "--add-config",
            "segment.ms=3600000",
        ],
        None,
    );
    assert!(
        topic_configs("topic-1").contains("segment.ms=3600000"),
        "{drift}"
    );
    let scratch = topics(
        "/root/e2e-admin.properties",
        &[
            "--create",
            "--topic",
            "scratch-e2e",
            "--partitions",
            "1",
            "--replication-factor",
            "3",
        ],
    );
    assert!(scratch.status.success(), "{}", stderr(&scratch));
    edit(
        work.path(),
        "topics/app.yaml",
        "retention.ms: 604800000",
        "retention.ms: 86400000",
    );
    edit(
        work.path(),
        "topics/app.yaml",
        "  - name: test-topic\n    partitions: 3\n",
        "  - name: test-topic\n    partitions: 3\n    delete: true\n",
    );
    let mut topics_file =
        std::fs::read_to_string(work.path().join("topics/app.yaml")).expect("topics/app.yaml");
    topics_file.push_str(
        "  - name: e2e-from-git\n    partitions: 2\n    config:\n      retention.ms: 3600000\n",
    );
    std::fs::write(work.path().join("topics/app.yaml"), topics_file).expect("topics/app.yaml");
    edit(
        work.path(),
        "users/platform.yaml",
        "        name: topic-1\n        operations: [read, write, describe]",
        "        name: topic-1\n        operations: [read, describe]",
    );
    // A new user with its own age-encrypted password, allowed to read
    // e2e-from-git; and the connector paused.
    let reader_password = "e2e-reader-secret-42";
    let identity = Identity::parse(
        &std::fs::read_to_string(
            repo_root().join("desired-state/examples/seed.example-only.age-identity"),
        )
        .expect("the example identity"),
    )
    .expect("parses");
    let secret = EncryptedSecret::encrypt(
        "secrets/e2e-reader-password.age",
        reader_password,
        &identity.recipients(),
    )
    .expect("encrypting the new user's password");
    std::fs::write(
        work.path().join("secrets/e2e-reader-password.age"),
        secret.ciphertext(),
    )
    .expect("writing the new user's secret");
    let mut users_file =
        std::fs::read_to_string(work.path().join("users/platform.yaml")).expect("users");
    users_file.push_str(
        "  - name: e2e-reader\n    password_secret: e2e-reader-password\n    acls:\n      - resource: topic\n        name: e2e-from-git\n        operations: [read, describe]\n",
    );
    std::fs::write(work.path().join("users/platform.yaml"), users_file).expect("users");
    edit(
        work.path(),
        "connectors/file-source.yaml",
        "    state: running\n",
        "    state: paused\n",
    );
    let (resources_head, _) = push_and_wait(&state, work.path(), "e2e: topics and ACLs");
    resources_settled(&resources_head, "the topics and ACLs commit");
    let connector_state = |wanted: &'static str| {
        wait_until(
            &format!("the connector cluster-hosts {wanted}"),
            Duration::from_secs(180),
            || {
                let c = http_json(&format!("{coordinator}/connectors"));
                c["connectors"]
                    .as_array()?
                    .iter()
                    .any(|c| c["name"] == "cluster-hosts" && c["state"] == wanted)
                    .then_some(())
            },
        );
    };
    connector_state("PAUSED");
    // The coordinator has applied the credential and the ACLs; broker-1
    // learns of them from the metadata log a moment later, so each kcat
    // check below is retried for up to a minute before it fails.
    let reader = ("e2e-reader", reader_password);
    kcat_until(
        "the new user e2e-reader to log in and see e2e-from-git",
        || kcat(&state, &root, reader, &["-L", "-t", "e2e-from-git"], None),
        |(metadata, _)| metadata.contains("topic \"e2e-from-git\" with 2 partitions"),
    );
    let configs = topic_configs("topic-1");
    assert!(
        configs.contains("retention.ms=86400000") && !configs.contains("segment.ms"),
        "topic-1's configs are git's: {configs}"
    );
    let listed = topic_list();
    for (topic, present) in [
        ("e2e-from-git", true),
        ("test-topic", false),
        ("scratch-e2e", false),
        ("e2e-smoke", true),
    ] {
        assert_eq!(listed.contains(topic), present, "{topic} in {listed:?}");
    }
    let refused_write = kcat_until(
        "client may no longer write to topic-1",
        || {
            kcat(
                &state,
                &root,
                client,
                &["-P", "-t", "topic-1", "-X", "acks=all"],
                Some("after-the-acl-change\n"),
            )
        },
        |(_, errors)| errors.contains("authorization failed"),
    );
    report!(
        "client's write to topic-1 refused: {}",
        refused_write.1.lines().last().unwrap_or_default()
    );

    // A partition decrease is refused with its place in git; Kafka keeps 6.
    edit(
        work.path(),
        "topics/app.yaml",
        "    partitions: 6\n",
        "    partitions: 3\n",
    );
    let (bad_head, _) = push_and_wait(&state, work.path(), "e2e: fewer partitions");
    let refusal = wait_until(
        "the partition decrease to be refused",
        Duration::from_secs(300),
        || {
            let r = http_json(&format!("{coordinator}/v1/resources"));
            (r["commit"].as_str() == Some(bad_head.as_str()))
                .then(|| r["refusals"].clone())
                .filter(|f| f.as_array().is_some_and(|a| !a.is_empty()))
        },
    );
    assert!(
        refusal.to_string().contains("topics/app.yaml:5:17"),
        "the refusal names topics/app.yaml:5:17: {refusal}"
    );
    assert_six_partitions();
    report!(
        "drift put back, scratch-e2e pruned, test-topic deleted, e2e-from-git created, client's write ACL on topic-1 removed, new user e2e-reader logs in (kcat), connector paused; a partition decrease refused: {refusal}"
    );
    edit(
        work.path(),
        "topics/app.yaml",
        "    partitions: 3\n    replication_factor: 3\n",
        "    partitions: 6\n    replication_factor: 3\n",
    );
    // With the partitions put back: e2e-reader marked for deletion, the
    // connector running again.
    edit(
        work.path(),
        "users/platform.yaml",
        "  - name: e2e-reader\n    password_secret: e2e-reader-password\n    acls:\n      - resource: topic\n        name: e2e-from-git\n        operations: [read, describe]\n",
        "  - name: e2e-reader\n    password_secret: e2e-reader-password\n    delete: true\n",
    );
    edit(
        work.path(),
        "connectors/file-source.yaml",
        "    state: paused\n",
        "    state: running\n",
    );
    let (fixed_head, _) = push_and_wait(&state, work.path(), "e2e: partitions back");
    resources_settled(&fixed_head, "the partitions put back");
    kcat_until(
        "the deleted user e2e-reader can no longer log in",
        || kcat(&state, &root, reader, &["-L", "-m", "10"], None),
        |(_, errors)| errors.contains("Authentication failed"),
    );
    connector_state("RUNNING");
    report!("e2e-reader deleted (kcat refused), connector cluster-hosts running again");

    // Measures (printed, not asserted).
    report!(
        "local up: {up_seconds:.0} s to healthy; resident memory of every process in the nodes: {} MiB now, {} MiB at the highest sample",
        cluster_rss_mib(),
        peak_rss.max(cluster_rss_mib())
    );
    report!("{}", stdout(&up));

    // `local down` leaves no mount, namespace or bridge behind.
    let down = agent(&["down", "--purge"]);
    assert!(down.status.success(), "{}", stderr(&down));
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounts.contains(STATE_DIR), "mounts left behind:\n{mounts}");
    let netns = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    assert!(
        netns.iter().all(|n| !n.starts_with("kraftops-")),
        "namespaces left: {netns:?}"
    );
    assert!(
        !Path::new("/sys/class/net/kraftops0").exists(),
        "bridge left behind"
    );
    assert!(
        !Path::new(STATE_DIR).exists(),
        "state directory left behind"
    );
}
