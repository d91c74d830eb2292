//! Push → applied on 10 agents (figures, not assertions): the coordinator
//! and 10 agents as real processes with temporary roots (files only,
//! `service_manager: none`), a bare repository served over file://, and N
//! pushes that change a setting every node renders (node_exporter's port,
//! in every node's unit and in Prometheus' scrape targets). For each push,
//! the time from the push until every agent's `/v1/status` shows the commit
//! applied, in three modes:
//!
//! - **webhook**: the git host calls the coordinator's `POST /v1/hooks/git`
//!   (HMAC-signed, as GitHub/Gitea send it) right after the push; the
//!   coordinator nudges every agent through its long-poll;
//! - **no webhook**: nobody announces the push; the coordinator's own poll
//!   of the repository (every `max(poll_interval, 5 s)`) notices it and
//!   nudges every agent, or an agent's own poll gets there first;
//! - **agents' polls only**: the coordinator is stopped; each agent finds
//!   the push on its own poll (5 s + up to 2 s jitter).
//!
//! Before each push the bench waits a random 0–7 s, so pushes land at any
//! point of the agents' poll cycles.
//!
//! `cargo bench -p kraftops-agent --bench push_latency` (`PUSHES=n` to change
//! the 10 pushes per mode). Every process it starts is killed when it ends,
//! however it ends (a drop guard; they share its process group, so Ctrl-C
//! reaches them too).

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hmac::Mac as _;
use kraftops_agent::protocol::{Phase, StatusReport};
use rand::Rng as _;

/// The example's nine nodes and a fifth broker: ten agents.
const NODES: [&str; 10] = [
    "broker-1",
    "broker-2",
    "broker-3",
    "broker-4",
    "broker-5",
    "controller-1",
    "controller-2",
    "controller-3",
    "connect-1",
    "observability-1",
];
const POLL: &str = "5s";
const JITTER: &str = "2s";
/// The random pause before each push: up to one poll interval plus jitter.
const MAX_PAUSE: Duration = Duration::from_secs(7);
const WEBHOOK_SECRET: &str = "bench-webhook-secret";
const FIRST_PORT: u16 = 9100;

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../desired-state/examples/seed")
}

fn identity_file() -> PathBuf {
    example().with_file_name("seed.example-only.age-identity")
}

fn identity() -> desired_state::Identity {
    desired_state::Identity::parse(&std::fs::read_to_string(identity_file()).expect("identity"))
        .expect("the example identity parses")
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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Kills the processes when the bench ends, however it ends.
struct Processes(Vec<(String, Child)>);

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Processes {
    fn spawn(&mut self, name: &str, args: &[&str], log: &Path) {
        let log = std::fs::File::create(log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_kraftops-agent"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the agent binary starts");
        self.0.push((name.to_owned(), child));
    }

    fn kill(&mut self, name: &str) {
        if let Some(i) = self.0.iter().position(|(n, _)| n == name) {
            let (_, mut child) = self.0.remove(i);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Panics if a process has exited: the figures would mean nothing.
    fn check_alive(&mut self, logs: &Path) {
        for (name, child) in &mut self.0 {
            if let Ok(Some(status)) = child.try_wait() {
                let log =
                    std::fs::read_to_string(logs.join(format!("{name}.log"))).unwrap_or_default();
                panic!("{name} exited ({status}):\n{log}");
            }
        }
    }
}

/// The example with quick polls, a fifth broker (and its join token), our
/// own webhook secret, node_exporter's port spelled out, and Kafka from a
/// local tarball, pushed to a bare remote. Returns (remote, work tree).
fn repository(tmp: &Path) -> (PathBuf, PathBuf) {
    let remote = tmp.join("remote.git");
    let work = tmp.join("work");
    std::fs::create_dir_all(&remote).expect("mkdir");
    git(&remote, &["init", "--bare", "-q"]);
    let copied = Command::new("cp")
        .args([
            "-r",
            example().to_str().expect("utf8"),
            work.to_str().expect("utf8"),
        ])
        .status()
        .expect("cp");
    assert!(copied.success());

    let recipients = identity().recipients();
    let encrypt = |name: &str, value: &str| {
        let file = format!("secrets/{name}.age");
        let secret = desired_state::EncryptedSecret::encrypt(file.clone(), value, &recipients)
            .expect("encrypts");
        std::fs::write(work.join(&file), secret.ciphertext()).expect("write secret");
    };
    encrypt("git-webhook-secret", WEBHOOK_SECRET);
    let token: String = (0..32)
        .map(|_| {
            char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rand::thread_rng().gen_range(0..36)])
        })
        .collect();
    encrypt("join-token-broker-5", &token);
    let mut nodes = std::fs::read_to_string(work.join("nodes.yaml")).expect("nodes.yaml");
    let at = nodes.find("  - name: controller-1").expect("controller-1");
    nodes.insert_str(
        at,
        "  - name: broker-5\n    role: broker\n    node_id: 5\n    az: eu-central-1a\n    address: 10.0.1.13\n    instance_type: t3.small\n",
    );
    std::fs::write(work.join("nodes.yaml"), nodes).expect("write nodes.yaml");

    let cluster = std::fs::read_to_string(work.join("cluster.yaml")).expect("cluster.yaml");
    assert!(
        !cluster.contains("\nports:"),
        "the example sets ports; update the bench"
    );
    let mut cluster = cluster
        .replace("poll_interval: 60s", &format!("poll_interval: {POLL}"))
        .replace("poll_jitter: 10s", &format!("poll_jitter: {JITTER}"));
    cluster.push_str(&format!("\nports:\n  node_exporter: {FIRST_PORT}\n"));

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
    let start = cluster
        .find("      url: https://archive")
        .expect("distribution url");
    let end = cluster[start..].find("  install_dir").expect("install_dir") + start;
    let cluster = format!(
        "{}      url: file://{}\n      sha512: {digest}\n{}",
        &cluster[..start],
        tarball.display(),
        &cluster[end..]
    );
    std::fs::write(work.join("cluster.yaml"), cluster).expect("write cluster.yaml");
    if let Err(problems) = desired_state::load_dir(&work) {
        panic!("the bench's repository is invalid:\n{problems}");
    }

    git(&work, &["init", "-q"]);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "ten nodes"]);
    git(
        &work,
        &["push", "-q", remote.to_str().expect("utf8"), "HEAD:main"],
    );
    (remote, work)
}

/// What cloud-init would write: identity, join token, API token, accounts.
fn provision(root: &Path, node: &str, model: &desired_state::Model) {
    let etc = root.join("etc/kraftops");
    std::fs::create_dir_all(&etc).expect("mkdir");
    std::fs::copy(identity_file(), etc.join("age-identity")).expect("identity");
    let name = desired_state::types::Name::try_from(format!("join-token-{node}")).expect("name");
    let token = model.decrypt(&name, &identity()).expect("join token");
    std::fs::write(etc.join("join-token"), token.expose()).expect("token");
    std::fs::write(etc.join("api-token"), "bench-api-token").expect("api token");
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nkafka:x:0:0::/var/lib/kafka:/bin/false\nprometheus:x:0:0::/:/bin/false\ngrafana:x:0:0::/:/bin/false\n",
    )
    .expect("passwd");
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\nkafka:x:0:\nprometheus:x:0:\ngrafana:x:0:\n",
    )
    .expect("group");
}

fn agent_config(node: &str, root: &Path, remote: &Path, port: u16, coordinator: &str) -> String {
    format!(
        "node: {node}\nrepository:\n  url: file://{}\n  branch: main\npoll_interval: {POLL}\ncoordinator: {coordinator}\njoin_token_file: /etc/kraftops/join-token\nidentity_file: /etc/kraftops/age-identity\nlisten: 127.0.0.1:{port}\napi_token_file: /etc/kraftops/api-token\nroot: {}\nservice_manager: none\n",
        remote.display(),
        root.display()
    )
}

struct Bench {
    /// First field: dropped (killed) before the directories go.
    processes: Processes,
    tmp: tempfile::TempDir,
    work: PathBuf,
    remote: PathBuf,
    /// (node, API port)
    agents: Vec<(String, u16)>,
    coordinator: String,
    http: reqwest::blocking::Client,
    /// node_exporter's port in the last commit.
    port: u16,
}

impl Bench {
    fn status(&self, port: u16) -> Option<StatusReport> {
        self.http
            .get(format!("http://127.0.0.1:{port}/v1/status"))
            .send()
            .ok()?
            .json()
            .ok()
    }

    /// Waits until every agent has applied `commit` (and reports no error);
    /// returns how long each took from `since` (in the order of `self.agents`).
    fn wait_applied(&mut self, commit: &str, since: Instant, limit: Duration) -> Vec<Duration> {
        let mut done: Vec<Option<Duration>> = vec![None; self.agents.len()];
        while done.iter().any(Option::is_none) {
            for (i, (_, port)) in self.agents.iter().enumerate() {
                if done[i].is_none()
                    && self.status(*port).is_some_and(|s| {
                        s.revision_applied.as_deref() == Some(commit) && s.last_error.is_none()
                    })
                {
                    done[i] = Some(since.elapsed());
                }
            }
            if since.elapsed() > limit {
                let late: Vec<_> = self
                    .agents
                    .iter()
                    .zip(&done)
                    .filter(|(_, d)| d.is_none())
                    .map(|((n, port), _)| (n.clone(), self.status(*port)))
                    .collect();
                panic!("not applied within {limit:?}: {late:#?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.processes.check_alive(self.tmp.path());
        done.into_iter().flatten().collect()
    }

    /// Commits and pushes node_exporter's other port (9100 and 9101 take
    /// turns, so any number of pushes stays clear of the other ports);
    /// returns the commit.
    fn push(&mut self) -> String {
        let path = self.work.join("cluster.yaml");
        let text = std::fs::read_to_string(&path).expect("read");
        let next = if self.port == FIRST_PORT {
            FIRST_PORT + 1
        } else {
            FIRST_PORT
        };
        std::fs::write(
            &path,
            text.replace(
                &format!("node_exporter: {}", self.port),
                &format!("node_exporter: {next}"),
            ),
        )
        .expect("write");
        self.port = next;
        git(
            &self.work,
            &["commit", "-q", "-am", &format!("node_exporter on {next}")],
        );
        git(
            &self.work,
            &[
                "push",
                "-q",
                self.remote.to_str().expect("utf8"),
                "HEAD:main",
            ],
        );
        git(&self.work, &["rev-parse", "HEAD"])
    }

    /// What a git host does after a push: the signed webhook.
    fn webhook(&self, commit: &str) {
        let body = format!(r#"{{"ref":"refs/heads/main","after":"{commit}"}}"#);
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).expect("key");
        mac.update(body.as_bytes());
        let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let response = self
            .http
            .post(format!("{}/v1/hooks/git", self.coordinator))
            .header("X-Hub-Signature-256", signature)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .expect("the coordinator answers");
        assert!(
            response.status().is_success(),
            "webhook refused: {}",
            response.status()
        );
    }

    /// `pushes` pushes, each after a random pause; per push, every agent's
    /// time to apply it.
    fn run(&mut self, pushes: usize, webhook: bool) -> Vec<Vec<Duration>> {
        let mut rounds = Vec::new();
        for _ in 0..pushes {
            std::thread::sleep(MAX_PAUSE.mul_f64(rand::thread_rng().r#gen::<f64>()));
            let commit = self.push();
            let pushed = Instant::now();
            if webhook {
                self.webhook(&commit);
            }
            rounds.push(self.wait_applied(&commit, pushed, Duration::from_secs(60)));
        }
        rounds
    }
}

fn start() -> Bench {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (remote, work) = repository(tmp.path());
    let model = desired_state::load_dir(&work).expect("loads");
    let mut processes = Processes(Vec::new());

    let coord_port = free_port();
    let coordinator = format!("http://127.0.0.1:{coord_port}");
    let coord_root = tmp.path().join("coordinator");
    provision(&coord_root, "observability-1", &model);
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
    processes.spawn(
        "coordinator",
        &[
            "coordinator",
            "--config",
            coord_root.join("coordinator.yaml").to_str().expect("utf8"),
            "--agent-config",
            coord_root.join("agent.yaml").to_str().expect("utf8"),
        ],
        &tmp.path().join("coordinator.log"),
    );

    let mut agents = Vec::new();
    for node in NODES {
        let root = tmp.path().join(node);
        provision(&root, node, &model);
        let port = free_port();
        let config = root.join("agent.yaml");
        std::fs::write(
            &config,
            agent_config(node, &root, &remote, port, &coordinator),
        )
        .expect("config");
        processes.spawn(
            node,
            &["run", "--config", config.to_str().expect("utf8")],
            &tmp.path().join(format!("{node}.log")),
        );
        agents.push((node.to_owned(), port));
    }
    Bench {
        processes,
        tmp,
        work,
        remote,
        agents,
        coordinator,
        http: reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("HTTP client"),
        port: FIRST_PORT,
    }
}

/// Nearest-rank percentile of `v` (sorted here).
fn percentile(v: &mut [Duration], p: usize) -> Duration {
    v.sort();
    let rank = (v.len() * p).div_ceil(100).max(1);
    v[rank - 1]
}

fn main() {
    let pushes: usize = std::env::var("PUSHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(10);
    let mut bench = start();

    // Every agent converged on the first commit, with its certificate.
    let head = git(&bench.work, &["rev-parse", "HEAD"]);
    let began = Instant::now();
    loop {
        let statuses: Vec<_> = bench.agents.iter().map(|(_, p)| bench.status(*p)).collect();
        if statuses.iter().all(|s| {
            s.as_ref().is_some_and(|s| {
                s.phase == Phase::Converged && s.revision_applied.as_deref() == Some(&head)
            })
        }) {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(180),
            "the agents did not converge: {statuses:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let startup = began.elapsed();
    // An agent whose nudge long-poll found the coordinator not yet up
    // retries after 5 s, and takes the first answer it gets as where it
    // stands: a nudge before that answer is not seen (its poll finds the
    // push instead). Let every long-poll connect before measuring.
    std::thread::sleep(Duration::from_secs(6));

    let mut results = Vec::new();
    let webhook = bench.run(pushes, true);
    results.push(("webhook nudge", webhook));
    let no_webhook = bench.run(pushes, false);
    results.push(("no webhook (coordinator polls, nudges)", no_webhook));
    bench.processes.kill("coordinator");
    let polls_only = bench.run(pushes, false);
    results.push(("agents' polls only (coordinator down)", polls_only));

    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "push -> applied on {} agents, {pushes} pushes per mode (poll {POLL} + up to {JITTER} jitter; started and converged in {:.1} s)",
        bench.agents.len(),
        startup.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "{:<40} {:>12} {:>12} {:>14} {:>14}",
        "mode", "all p50 (s)", "all max (s)", "agent p50 (s)", "agent max (s)"
    );
    for (mode, rounds) in results {
        let mut all: Vec<Duration> = rounds
            .iter()
            .map(|r| r.iter().copied().max().unwrap_or_default())
            .collect();
        let mut each: Vec<Duration> = rounds.into_iter().flatten().collect();
        let _ = writeln!(
            out,
            "{:<40} {:>12.2} {:>12.2} {:>14.2} {:>14.2}",
            mode,
            percentile(&mut all, 50).as_secs_f64(),
            percentile(&mut all, 100).as_secs_f64(),
            percentile(&mut each, 50).as_secs_f64(),
            percentile(&mut each, 100).as_secs_f64(),
        );
    }
    drop(bench);
}
